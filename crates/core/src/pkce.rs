//! Proof Key for Code Exchange (RFC 7636), S256 only.
//!
//! `plain` is refused outright (RFC 9700 §2.1.1: it protects nothing when the
//! authorization request is observed), so there is no downgrade to test for
//! beyond its rejection.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::OAuthError;
use crate::secret::constant_time_eq;

/// The only challenge method healthgate accepts.
pub const S256: &str = "S256";

/// A `code_challenge` as sent to the authorization endpoint with method S256:
/// the 43-character base64url encoding of a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// Parses `code_challenge` and `code_challenge_method` together (RFC 7636
    /// §4.3). A missing method means `plain` (§4.3), which is refused.
    pub fn parse(challenge: &str, method: Option<&str>) -> Result<Self, OAuthError> {
        match method {
            Some(S256) => {}
            Some("plain") | None => {
                return Err(OAuthError::invalid_request(
                    "code_challenge_method must be S256; plain is not supported",
                ));
            }
            Some(_) => {
                return Err(OAuthError::invalid_request(
                    "unsupported code_challenge_method; use S256",
                ));
            }
        }
        let well_formed = challenge.len() == 43
            && URL_SAFE_NO_PAD
                .decode(challenge)
                .is_ok_and(|bytes| bytes.len() == 32);
        if !well_formed {
            return Err(OAuthError::invalid_request(
                "code_challenge must be the base64url SHA-256 of the code_verifier (43 characters)",
            ));
        }
        Ok(Self(challenge.to_owned()))
    }

    /// Rebuilds a challenge read back from storage (already validated).
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 7636 §4.6: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) == code_challenge`.
    pub fn is_satisfied_by(&self, verifier: &CodeVerifier) -> bool {
        constant_time_eq(&verifier.s256(), &self.0)
    }
}

/// A `code_verifier` (RFC 7636 §4.1): 43 to 128 characters from the
/// unreserved set `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeVerifier(String);

impl std::fmt::Debug for CodeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeVerifier(<redacted>)")
    }
}

impl CodeVerifier {
    pub fn parse(s: &str) -> Result<Self, OAuthError> {
        let ok = (43..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(OAuthError::invalid_grant(
                "code_verifier must be 43 to 128 unreserved characters (RFC 7636 section 4.1)",
            ))
        }
    }

    /// The S256 transformation of this verifier.
    pub fn s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let verifier = CodeVerifier::parse("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        assert_eq!(
            verifier.s256(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let challenge =
            CodeChallenge::parse("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", Some("S256"))
                .unwrap();
        assert!(challenge.is_satisfied_by(&verifier));
    }

    #[test]
    fn plain_and_missing_method_are_refused() {
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(CodeChallenge::parse(c, Some("plain")).is_err());
        assert!(CodeChallenge::parse(c, None).is_err());
        assert!(CodeChallenge::parse(c, Some("s256")).is_err());
    }

    #[test]
    fn malformed_challenges_are_refused() {
        for c in [
            "",
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c=",
            &"a".repeat(44),
        ] {
            assert!(CodeChallenge::parse(c, Some("S256")).is_err(), "{c}");
        }
    }

    #[test]
    fn verifier_grammar() {
        let table: &[(&str, bool)] = &[
            (&"a".repeat(42), false),
            (&"a".repeat(43), true),
            (&"a".repeat(128), true),
            (&"a".repeat(129), false),
            ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk~.", true),
            ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk+/", false),
            ("dBjftJeZ4CVP mB92K27uhbUJU1p1r_wW1gFWFOEjXk", false),
        ];
        for (v, ok) in table {
            assert_eq!(CodeVerifier::parse(v).is_ok(), *ok, "{v}");
        }
    }

    #[test]
    fn wrong_verifier_does_not_satisfy() {
        let challenge =
            CodeChallenge::parse("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", Some("S256"))
                .unwrap();
        let other = CodeVerifier::parse(&"x".repeat(43)).unwrap();
        assert!(!challenge.is_satisfied_by(&other));
    }
}
