//! Signatures made by clients (RFC 7515's compact form), parsed and checked
//! against a public JWK on ring: the one place a client's JWS is verified,
//! for client assertions (RFC 7523) and DPoP proofs (RFC 9449).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

/// A compact JWS, parsed but not yet trusted.
#[derive(Debug, Clone)]
pub struct Compact {
    pub header: Value,
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// Parses a compact JWS: three base64url parts, a JSON object header and
/// claims, and a signature.
pub fn parse(jwt: &str) -> Option<Compact> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(Compact {
        header: decode_json(h)?,
        claims: decode_json(c)?,
        signing_input: format!("{h}.{c}"),
        signature: URL_SAFE_NO_PAD.decode(s).ok()?,
    })
}

/// The asymmetric algorithms [`verify`] knows (RFC 7518 §3.1, RFC 8037 §3.1).
pub const ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the alg is not one this server verifies")]
    Alg,
    #[error("the key is malformed")]
    Key,
    #[error("the key does not fit the alg")]
    KeyType,
    #[error("the signature does not verify")]
    Signature,
}

/// The JWK type `alg` needs: `EC`, `RSA` or `OKP`.
pub fn key_type(alg: &str) -> Option<&'static str> {
    match alg {
        "ES256" | "ES384" => Some("EC"),
        "EdDSA" => Some("OKP"),
        a if ALGS.contains(&a) => Some("RSA"),
        _ => None,
    }
}

/// Whether the signature of `jws` holds under the public `jwk` with `alg`.
pub fn verify(jws: &Compact, alg: &str, jwk: &Value) -> Result<(), VerifyError> {
    let field = |name: &str| {
        jwk[name]
            .as_str()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or(VerifyError::Key)
    };
    if Some(jwk["kty"].as_str().unwrap_or_default()) != key_type(alg) {
        return Err(if key_type(alg).is_none() {
            VerifyError::Alg
        } else {
            VerifyError::KeyType
        });
    }
    let message = jws.signing_input.as_bytes();
    let signature = jws.signature.as_slice();
    let holds = match alg {
        "ES256" | "ES384" => {
            let (params, size, crv): (&'static dyn signature::VerificationAlgorithm, usize, &str) =
                if alg == "ES256" {
                    (&signature::ECDSA_P256_SHA256_FIXED, 32, "P-256")
                } else {
                    (&signature::ECDSA_P384_SHA384_FIXED, 48, "P-384")
                };
            let (x, y) = (field("x")?, field("y")?);
            if jwk["crv"] != crv || x.len() != size || y.len() != size {
                return Err(VerifyError::KeyType);
            }
            let mut point = vec![4u8];
            point.extend(x);
            point.extend(y);
            UnparsedPublicKey::new(params, point)
                .verify(message, signature)
                .is_ok()
        }
        "EdDSA" => {
            let x = field("x")?;
            if jwk["crv"] != "Ed25519" || x.len() != 32 {
                return Err(VerifyError::KeyType);
            }
            UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, signature)
                .is_ok()
        }
        _ => {
            let params: &'static signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                _ => &signature::RSA_PSS_2048_8192_SHA512,
            };
            let (n, e) = (field("n")?, field("e")?);
            RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok()
        }
    };
    if holds {
        Ok(())
    } else {
        Err(VerifyError::Signature)
    }
}

/// Whether `jwk` holds a private part (`d`, or RSA's primes and CRT
/// values): a client's JWS names public keys only.
pub fn is_private(jwk: &Value) -> bool {
    ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
        .iter()
        .any(|m| jwk.get(m).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    fn sign_ed25519(header: &Value, claims: &Value) -> (String, Value) {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = pair.sign(input.as_bytes());
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        (
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())),
            jwk,
        )
    }

    #[test]
    fn ed25519_signatures_verify_and_others_do_not() {
        let (jwt, jwk) = sign_ed25519(&json!({ "alg": "EdDSA" }), &json!({ "a": 1 }));
        let jws = parse(&jwt).unwrap();
        assert_eq!(verify(&jws, "EdDSA", &jwk), Ok(()));
        let (_, other) = sign_ed25519(&json!({ "alg": "EdDSA" }), &json!({ "a": 1 }));
        assert_eq!(verify(&jws, "EdDSA", &other), Err(VerifyError::Signature));
        assert_eq!(verify(&jws, "ES256", &jwk), Err(VerifyError::KeyType));
        assert_eq!(verify(&jws, "HS256", &jwk), Err(VerifyError::Alg));
        assert_eq!(
            verify(
                &jws,
                "EdDSA",
                &json!({ "kty": "OKP", "crv": "X25519", "x": jwk["x"] })
            ),
            Err(VerifyError::KeyType)
        );
        assert_eq!(
            verify(&jws, "EdDSA", &json!({ "kty": "OKP", "crv": "Ed25519" })),
            Err(VerifyError::Key)
        );
    }

    #[test]
    fn only_well_formed_compact_jws_parse() {
        let (jwt, _) = sign_ed25519(&json!({ "alg": "EdDSA" }), &json!({}));
        assert!(parse(&jwt).is_some());
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.AA", "e30.W10.AA"] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(is_private(&json!({ "kty": "EC", "d": "x" })));
        assert!(is_private(&json!({ "kty": "oct", "k": "x" })));
        assert!(!is_private(&json!({ "kty": "EC", "x": "x", "y": "y" })));
    }
}
