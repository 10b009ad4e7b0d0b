//! DPoP, Demonstrating Proof of Possession (RFC 9449): a client proves, with
//! each request, that it holds the private key its tokens are bound to, so a
//! leaked token is of no use without the key. This module checks a proof
//! (RFC 9449 §4.3) and computes what binds a token to a key: the key's
//! JWK thumbprint (RFC 7638, `cnf.jkt`) and the access token hash (`ath`).
//! That a proof's `jti` was never seen before is the store's to say, so no
//! node accepts a replay.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, OAuthError};

/// The proof's JWS `typ` (RFC 9449 §4.2).
pub const TYP: &str = "dpop+jwt";

/// The signature algorithms a proof may use: asymmetric only (RFC 9449
/// §4.2), as discovery lists them (`dpop_signing_alg_values_supported`).
pub const ALGS: &[&str] = &["ES256", "ES384", "RS256", "PS256", "EdDSA"];

/// How old a proof's `iat` may be, and how far ahead of this server's clock
/// (RFC 9449 §11.1: proofs are fresh; the `jti` store keeps them this long).
pub const MAX_AGE: i64 = 300;
pub const MAX_SKEW: i64 = 60;

/// What the request a proof came with was, and what it must carry.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The HTTP method (`htm`).
    pub method: &'a str,
    /// The URL the request was made to, as this server names it (`htu`:
    /// its query and fragment are not compared).
    pub url: &'a str,
    pub now: i64,
    /// At a resource: the access token presented, whose hash `ath` must be.
    pub access_token: Option<&'a str>,
    /// When this server gives nonces (RFC 9449 §8, §9): the key they are
    /// made with; a proof must carry a fresh one ([`nonce_is_fresh`]).
    pub nonce_key: Option<&'a [u8]>,
}

/// How long a server nonce is given out; one stays accepted for a second
/// such window, so a client that just got one is not refused.
pub const NONCE_WINDOW: i64 = 300;

/// The nonce this server gives at `now` (RFC 9449 §8): the current window
/// and a MAC over it under `key`, so any node makes and checks the same
/// nonces without keeping them.
pub fn nonce(key: &[u8], now: i64) -> String {
    nonce_of(key, now.div_euclid(NONCE_WINDOW))
}

fn nonce_of(key: &[u8], window: i64) -> String {
    let mac = crate::secret::keyed_digest(key, "dpop nonce", &[&window.to_string()]);
    format!("{window}.{}", &mac[..22])
}

/// Whether `nonce` is one this server gave in the current window or the
/// one before.
pub fn nonce_is_fresh(key: &[u8], nonce: &str, now: i64) -> bool {
    let current = now.div_euclid(NONCE_WINDOW);
    let Some(window) = nonce.split('.').next().and_then(|w| w.parse::<i64>().ok()) else {
        return false;
    };
    (window == current || window == current - 1)
        && crate::secret::constant_time_eq(&nonce_of(key, window), nonce)
}

/// A proof that holds: the thumbprint of its key, and its `jti` with the
/// time until which it must not be seen again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
    pub replay_until: i64,
}

/// `invalid_dpop_proof` (RFC 9449 §5, §7.1), saying why.
pub fn invalid(why: impl Into<String>) -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidDpopProof,
        format!("DPoP proof: {}", why.into()),
    )
}

/// Checks a DPoP proof against the request it came with (RFC 9449 §4.3,
/// steps 2 to 12; step 1, a single `DPoP` header, is the caller's).
pub fn verify(proof: &str, expected: &Expected<'_>) -> Result<Proof, OAuthError> {
    let jws = crate::jws::parse(proof).ok_or_else(|| invalid("not a compact JWS"))?;
    let (h, c) = (&jws.header, &jws.claims);
    if h["typ"].as_str() != Some(TYP) {
        return Err(invalid("typ must be dpop+jwt"));
    }
    let alg = match h["alg"].as_str() {
        Some(a) if ALGS.contains(&a) => a,
        Some("none") => return Err(invalid("alg none is refused")),
        Some(a) if a.starts_with("HS") => {
            return Err(invalid(
                "a symmetric alg is refused: sign with a private key",
            ));
        }
        _ => {
            return Err(invalid(
                "alg must be one of ES256, ES384, RS256, PS256, EdDSA",
            ));
        }
    };
    let jwk = match h.get("jwk") {
        Some(jwk) if jwk.is_object() => jwk,
        _ => return Err(invalid("the header must carry the public key as jwk")),
    };
    if crate::jws::is_private(jwk) {
        return Err(invalid("jwk must be a public key"));
    }
    crate::jws::verify(&jws, alg, jwk).map_err(|e| invalid(e.to_string()))?;
    let jti = match c["jti"].as_str() {
        Some(j) if !j.is_empty() && j.len() <= 255 => j,
        _ => return Err(invalid("jti is required (at most 255 characters)")),
    };
    if c["htm"].as_str() != Some(expected.method) {
        return Err(invalid(format!("htm must be {}", expected.method)));
    }
    match c["htu"].as_str() {
        Some(htu) if same_target(htu, expected.url) => {}
        _ => {
            return Err(invalid(format!(
                "htu must be {}",
                without_query(expected.url)
            )));
        }
    }
    let Some(iat) = c["iat"].as_i64() else {
        return Err(invalid("iat is required"));
    };
    if iat > expected.now + MAX_SKEW || iat < expected.now - MAX_AGE {
        return Err(invalid("iat is too far from now: make a new proof"));
    }
    if let Some(key) = expected.nonce_key
        && !c["nonce"]
            .as_str()
            .is_some_and(|n| nonce_is_fresh(key, n, expected.now))
    {
        return Err(OAuthError::new(
            ErrorCode::UseDpopNonce,
            "DPoP proof: use the nonce in the DPoP-Nonce header",
        ));
    }
    if let Some(token) = expected.access_token
        && c["ath"].as_str() != Some(ath(token).as_str())
    {
        return Err(invalid(
            "ath must be the hash of the access token presented",
        ));
    }
    let jkt = thumbprint(jwk).ok_or_else(|| invalid("jwk is not a key this server knows"))?;
    Ok(Proof {
        jkt,
        jti: jti.to_owned(),
        replay_until: iat.max(expected.now) + MAX_AGE + MAX_SKEW,
    })
}

/// A JWK's SHA-256 thumbprint, base64url (RFC 7638 §3): the required
/// members, in lexicographic order, without whitespace.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let member = |name: &str| jwk[name].as_str().map(|v| serde_json::to_string(v).ok());
    let canonical = match jwk["kty"].as_str()? {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            member("crv")??,
            member("x")??,
            member("y")??
        ),
        "RSA" => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            member("e")??,
            member("n")??
        ),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            member("crv")??,
            member("x")??
        ),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// The access token hash a proof at a resource carries (RFC 9449 §4.2):
/// base64url of its SHA-256.
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// Whether `htu` names the same target as `url`, query and fragment aside,
/// after RFC 3986 §6.2.2–6.2.3 normalisation (scheme and host case, the
/// default port, an empty path).
pub fn same_target(htu: &str, url: &str) -> bool {
    match (
        url::Url::parse(without_query(htu)),
        url::Url::parse(without_query(url)),
    ) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path() == b.path()
                && a.username().is_empty()
                && a.password().is_none()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const URL: &str = "https://auth.example.com/oauth/token";

    struct Key(EcdsaKeyPair);

    impl Key {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Self(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap(),
            )
        }

        fn jwk(&self) -> Value {
            let p = self.0.public_key().as_ref();
            json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&p[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&p[33..]),
            })
        }

        fn sign(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }

        fn proof(&self, change: impl Fn(&mut Value, &mut Value)) -> String {
            let mut header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() });
            let mut claims = json!({ "jti": "j-1", "htm": "POST", "htu": URL, "iat": NOW });
            change(&mut header, &mut claims);
            self.sign(&header, &claims)
        }
    }

    fn expected() -> Expected<'static> {
        Expected {
            method: "POST",
            url: URL,
            now: NOW,
            access_token: None,
            nonce_key: None,
        }
    }

    #[test]
    fn a_fresh_proof_for_this_request_holds_and_names_its_key() {
        let key = Key::new();
        let proof = verify(&key.proof(|_, _| {}), &expected()).unwrap();
        assert_eq!(proof.jkt, thumbprint(&key.jwk()).unwrap());
        assert_eq!(proof.jti, "j-1");
        assert!(proof.replay_until >= NOW + MAX_AGE);
        // htu is compared without query or fragment, normalised.
        for htu in [
            "https://AUTH.example.com/oauth/token",
            "https://auth.example.com:443/oauth/token",
            "https://auth.example.com/oauth/token?x=1#f",
        ] {
            let p = key.proof(|_, c| c["htu"] = htu.into());
            assert!(verify(&p, &expected()).is_ok(), "{htu}");
        }
        // At a resource: ath binds the proof to the token; a nonce when given.
        let at = Expected {
            method: "GET",
            url: "https://auth.example.com/api/v1/me",
            access_token: Some("hg_at_x"),
            nonce_key: Some(b"server key"),
            ..expected()
        };
        let p = key.proof(|_, c| {
            c["htm"] = "GET".into();
            c["htu"] = "https://auth.example.com/api/v1/me".into();
            c["ath"] = ath("hg_at_x").into();
            c["nonce"] = nonce(b"server key", NOW).into();
        });
        assert!(verify(&p, &at).is_ok());
    }

    #[test]
    fn every_rule_of_rfc_9449_section_4_3_refuses_its_proof() {
        let key = Key::new();
        let other = Key::new();
        let mut private = key.jwk();
        private["d"] = "AAAA".into();
        let forged = {
            let good = key.proof(|_, _| {});
            let mut parts: Vec<&str> = good.split('.').collect();
            let sig = other.proof(|_, _| {});
            parts[2] = sig.rsplit('.').next().unwrap();
            parts.join(".")
        };
        // (what is wrong, the proof, the error code)
        let cases: Vec<(&str, String, ErrorCode)> = vec![
            ("not a JWS", "x.y".into(), ErrorCode::InvalidDpopProof),
            (
                "typ",
                key.proof(|h, _| h["typ"] = "JWT".into()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "no typ",
                key.proof(|h, _| h["typ"] = Value::Null),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "alg none",
                key.proof(|h, _| h["alg"] = "none".into()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "HMAC",
                key.proof(|h, _| h["alg"] = "HS256".into()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "no jwk",
                key.proof(|h, _| h["jwk"] = Value::Null),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "private jwk",
                key.proof(|h, _| h["jwk"] = private.clone()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "another key",
                key.proof(|h, _| h["jwk"] = other.jwk()),
                ErrorCode::InvalidDpopProof,
            ),
            ("forged signature", forged, ErrorCode::InvalidDpopProof),
            (
                "no jti",
                key.proof(|_, c| c["jti"] = Value::Null),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "htm",
                key.proof(|_, c| c["htm"] = "GET".into()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "htu",
                key.proof(|_, c| c["htu"] = "https://auth.example.com/oauth/revoke".into()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "htu on another host",
                key.proof(|_, c| c["htu"] = "https://evil.example/oauth/token".into()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "htu over http",
                key.proof(|_, c| c["htu"] = "http://auth.example.com/oauth/token".into()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "no iat",
                key.proof(|_, c| c["iat"] = Value::Null),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "old",
                key.proof(|_, c| c["iat"] = (NOW - MAX_AGE - 1).into()),
                ErrorCode::InvalidDpopProof,
            ),
            (
                "from the future",
                key.proof(|_, c| c["iat"] = (NOW + MAX_SKEW + 1).into()),
                ErrorCode::InvalidDpopProof,
            ),
        ];
        for (what, proof, code) in cases {
            let got = verify(&proof, &expected()).map(|_| ()).unwrap_err();
            assert_eq!(got.code, code, "{what}: {got:?}");
        }
        // Where a nonce is required, another or none is use_dpop_nonce.
        let with_nonce = Expected {
            nonce_key: Some(b"server key"),
            ..expected()
        };
        let stale =
            key.proof(|_, c| c["nonce"] = nonce(b"server key", NOW - 2 * NONCE_WINDOW).into());
        assert_eq!(
            verify(&stale, &with_nonce).unwrap_err().code,
            ErrorCode::UseDpopNonce
        );
        assert_eq!(
            verify(&key.proof(|_, _| {}), &with_nonce).unwrap_err().code,
            ErrorCode::UseDpopNonce
        );
        // At a resource, a proof for another token (or none) is refused.
        let at = Expected {
            access_token: Some("hg_at_x"),
            ..expected()
        };
        let p = key.proof(|_, c| c["ath"] = ath("hg_at_other").into());
        assert_eq!(
            verify(&p, &at).unwrap_err().code,
            ErrorCode::InvalidDpopProof
        );
        let p = key.proof(|_, _| {});
        assert_eq!(
            verify(&p, &at).unwrap_err().code,
            ErrorCode::InvalidDpopProof
        );
    }

    /// Nonces of this window and the one before are fresh; older ones, made
    /// under another key, or made up, are not.
    #[test]
    fn server_nonces_last_two_windows_and_are_this_servers() {
        let key = b"server key";
        let given = nonce(key, NOW);
        assert!(nonce_is_fresh(key, &given, NOW));
        assert!(nonce_is_fresh(key, &given, NOW + NONCE_WINDOW));
        assert!(!nonce_is_fresh(key, &given, NOW + 2 * NONCE_WINDOW));
        assert!(!nonce_is_fresh(b"other key", &given, NOW));
        let window = NOW.div_euclid(NONCE_WINDOW);
        for forged in [
            "",
            "x",
            &format!("{window}."),
            &format!("{window}.AAAAAAAAAAAAAAAAAAAAAA"),
        ] {
            assert!(!nonce_is_fresh(key, forged, NOW), "{forged}");
        }
    }

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn thumbprints_are_rfc_7638s() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(thumbprint(&json!({ "kty": "oct", "k": "x" })), None);
        assert_eq!(thumbprint(&json!({ "kty": "EC", "crv": "P-256" })), None);
        // RFC 9449 §4.2's ath example: the hash of its access token.
        assert_eq!(
            ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }
}
