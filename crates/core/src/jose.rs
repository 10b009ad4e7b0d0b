//! JSON Web Signatures for healthgate's signed tokens (OpenID Connect ID
//! tokens, JWT access tokens): ES256 keys (ECDSA P-256 with SHA-256, RFC 7518
//! §3.4, the default) and RS256 keys (RSASSA-PKCS1-v1_5 with SHA-256, §3.3,
//! for relying parties that need it), their public JWKs (RFC 7517), compact
//! JWS signing, and the sealing of private keys at rest with AES-256-GCM.
//!
//! Built on ring, which the TLS stack already brings, rather than a JWT
//! library: signing a compact JWS is a few lines, and verifying is left to
//! relying parties and tests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key could not be generated")]
    Generate,
    #[error("the stored key is not a valid P-256 key")]
    Invalid,
    #[error("the stored key could not be decrypted (wrong secret_key?)")]
    Decrypt,
    #[error("signing failed")]
    Sign,
}

/// The signature algorithms healthgate signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256: the default.
    #[default]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, for relying parties that need it.
    Rs256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

impl std::str::FromStr for Alg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ES256" => Ok(Self::Es256),
            "RS256" => Ok(Self::Rs256),
            other => Err(format!(
                "unsupported signing algorithm {other:?}: ES256 or RS256"
            )),
        }
    }
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signing key with its key id.
pub struct SigningKey {
    pub kid: String,
    pair: Pair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The one random source, behind `rand_core` (for RSA key generation).
struct OsRandom;

impl rand_core::RngCore for OsRandom {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        crate::secret::random_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        crate::secret::random_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        crate::secret::random_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        crate::secret::random_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for OsRandom {}

/// A new private key for `alg` (PKCS#8 DER) and its public JWK
/// (RFC 7518 §6.2.1 for EC, §6.3.1 for RSA).
pub fn generate(alg: Alg, kid: &str) -> Result<(Vec<u8>, Value), KeyError> {
    match alg {
        Alg::Es256 => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .map_err(|_| KeyError::Generate)?
            .as_ref()
            .to_vec();
            let pair = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &pkcs8,
                &SystemRandom::new(),
            )
            .map_err(|_| KeyError::Generate)?;
            // An uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
            let point = pair.public_key().as_ref();
            let jwk = json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                "use": "sig",
                "alg": "ES256",
                "kid": kid,
            });
            Ok((pkcs8, jwk))
        }
        Alg::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey;
            use rsa::traits::PublicKeyParts;
            let key =
                rsa::RsaPrivateKey::new(&mut OsRandom, 2048).map_err(|_| KeyError::Generate)?;
            let pkcs8 = key
                .to_pkcs8_der()
                .map_err(|_| KeyError::Generate)?
                .as_bytes()
                .to_vec();
            let jwk = json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
                "use": "sig",
                "alg": "RS256",
                "kid": kid,
            });
            Ok((pkcs8, jwk))
        }
    }
}

impl SigningKey {
    pub fn from_pkcs8(alg: Alg, kid: &str, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = match alg {
            Alg::Es256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8,
                    &SystemRandom::new(),
                )
                .map_err(|_| KeyError::Invalid)?,
            ),
            Alg::Rs256 => Pair::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::Invalid)?),
        };
        Ok(Self {
            kid: kid.to_owned(),
            pair,
        })
    }

    pub fn alg(&self) -> Alg {
        match self.pair {
            Pair::Ec(_) => Alg::Es256,
            Pair::Rsa(_) => Alg::Rs256,
        }
    }

    /// A compact JWS of `claims` with header `{alg, typ, kid}`.
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, KeyError> {
        let header = json!({ "alg": self.alg().as_str(), "typ": typ, "kid": self.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Ec(pair) => pair
                .sign(&rng, signing_input.as_bytes())
                .map_err(|_| KeyError::Sign)?
                .as_ref()
                .to_vec(),
            Pair::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                sig
            }
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// Whether a presented token has the shape of a compact JWS.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

/// The `kid` of a compact JWS's header, unverified.
pub fn header_kid(jwt: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(jwt.split('.').next()?).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    header["kid"].as_str().map(str::to_owned)
}

/// Verifies an ES256 compact JWS against a public JWK and returns its claims.
pub fn verify_es256(jwt: &str, jwk: &Value) -> Result<Value, KeyError> {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::Invalid);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(KeyError::Invalid)?;
    if header["alg"] != "ES256" {
        return Err(KeyError::Invalid);
    }
    let coordinate = |name: &str| {
        jwk[name]
            .as_str()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .filter(|v| v.len() == 32)
            .ok_or(KeyError::Invalid)
    };
    let mut point = vec![4u8];
    point.extend(coordinate("x")?);
    point.extend(coordinate("y")?);
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| KeyError::Invalid)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| KeyError::Invalid)?;
    URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(KeyError::Invalid)
}

/// A 256-bit key for `label` derived from the instance key (HMAC-SHA256), so
/// that one configured secret serves several purposes without reuse.
pub fn derive_key(instance_key: &[u8], label: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(instance_key).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// OpenID Connect Core §3.1.3.6 `at_hash`: the left half of the SHA-256 of
/// the access token, base64url-encoded.
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Encrypts `plaintext` with AES-256-GCM under `key`; the result carries its
/// random nonce: base64url(nonce || ciphertext || tag).
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Result<String, KeyError> {
    let sealing =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| KeyError::Generate)?);
    let mut nonce = [0u8; NONCE_LEN];
    crate::secret::random_bytes(&mut nonce);
    let mut data = plaintext.to_vec();
    sealing
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| KeyError::Generate)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(URL_SAFE_NO_PAD.encode(out))
}

/// Reverses [`seal`].
pub fn open(key: &[u8; 32], sealed: &str) -> Result<Vec<u8>, KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(sealed)
        .map_err(|_| KeyError::Decrypt)?;
    if bytes.len() < NONCE_LEN + 16 {
        return Err(KeyError::Decrypt);
    }
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let opening =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| KeyError::Decrypt)?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Decrypt)?;
    let mut data = rest.to_vec();
    let plain = opening
        .open_in_place(nonce, Aad::empty(), &mut data)
        .map_err(|_| KeyError::Decrypt)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn signed_tokens_verify_with_the_published_jwk() {
        let (pkcs8, jwk) = generate(Alg::Es256, "k1").unwrap();
        let key = SigningKey::from_pkcs8(Alg::Es256, "k1", &pkcs8).unwrap();
        let jws = key.sign("JWT", &json!({ "sub": "usr-1" })).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], "k1");
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point);
        let input = format!("{}.{}", parts[0], parts[1]);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert!(public.verify(input.as_bytes(), &sig).is_ok());
        assert!(public.verify(b"tampered", &sig).is_err());
    }

    #[test]
    fn our_own_verification_accepts_ours_and_nothing_else() {
        let (pkcs8, jwk) = generate(Alg::Es256, "k1").unwrap();
        let key = SigningKey::from_pkcs8(Alg::Es256, "k1", &pkcs8).unwrap();
        let (_, other_jwk) = generate(Alg::Es256, "k2").unwrap();
        let jwt = key.sign("at+jwt", &json!({ "jti": "x" })).unwrap();
        assert!(looks_like_jwt(&jwt));
        assert_eq!(header_kid(&jwt).as_deref(), Some("k1"));
        assert_eq!(verify_es256(&jwt, &jwk).unwrap()["jti"], "x");
        assert!(verify_es256(&jwt, &other_jwk).is_err());
        let mut forged = jwt.clone();
        forged.replace_range(jwt.find('.').unwrap() + 1..jwt.find('.').unwrap() + 3, "ey");
        assert!(verify_es256(&forged, &jwk).is_err() || forged == jwt);
        assert!(!looks_like_jwt("hg_at_abc"));
    }

    #[test]
    fn rs256_tokens_verify_with_the_published_modulus() {
        use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
        let (pkcs8, jwk) = generate(Alg::Rs256, "r1").unwrap();
        let key = SigningKey::from_pkcs8(Alg::Rs256, "r1", &pkcs8).unwrap();
        let jws = key.sign("JWT", &json!({ "sub": "usr-1" })).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        let public = RsaPublicKeyComponents {
            n: URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap(),
            e: URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap(),
        };
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(
            public
                .verify(&RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &sig)
                .is_ok()
        );
        assert!(
            public
                .verify(&RSA_PKCS1_2048_8192_SHA256, b"other", &sig)
                .is_err()
        );
        assert_eq!(jwk["kty"], "RSA");
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_key() {
        let k = [9u8; 32];
        let sealed = seal(&k, b"private").unwrap();
        assert_eq!(open(&k, &sealed).unwrap(), b"private");
        assert_eq!(open(&[8u8; 32], &sealed), Err(KeyError::Decrypt));
        assert_ne!(
            seal(&k, b"private").unwrap(),
            sealed,
            "a fresh nonce each time"
        );
    }

    /// OpenID Connect Core §3.1.3.6 example pair from the spec's Appendix A.3.
    #[test]
    fn at_hash_is_the_left_half() {
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
