//! Client authentication with a signed JWT, `private_key_jwt` (RFC 7523
//! §2.2 and §3, RFC 7521 §4.2, OpenID Connect Core §9), as SMART Backend
//! Services uses it (`client-confidential-asymmetric`): the client signs a
//! short-lived assertion with a private key, and the server checks it
//! against the client's registered public keys (a JWK Set).
//!
//! What is checked, in order, each refusal `invalid_client`: the assertion
//! is a compact JWS with an asymmetric `alg` healthgate verifies (never
//! `none` or an HMAC); `jku`, if present, is the registered JWK Set URL;
//! the `kid` selects exactly one key; the signature holds; `iss` and `sub`
//! are the client id; `aud` is the token endpoint; `exp` is in the future
//! and at most five minutes away; `jti` is present. That the `jti` was
//! never seen before is the store's to say.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents};
use serde_json::Value;

use crate::error::OAuthError;

/// `client_assertion_type` for a JWT (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest an assertion may live from now (SMART Backend Services:
/// "exp … no more than five minutes in the future").
pub const MAX_LIFETIME: i64 = 300;

/// The signature algorithms an assertion may use.
pub const ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384",
];

/// An assertion, parsed but not yet trusted.
pub use crate::jws::Compact as Parsed;

/// The `jti` an accepted assertion carried and until when it must not be
/// seen again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub jti: String,
    pub expires_at: i64,
}

fn refused(why: &str) -> OAuthError {
    OAuthError::invalid_client(format!("client assertion: {why}"))
}

/// Parses a compact JWS (three base64url parts, a JSON header and claims).
pub fn parse(jwt: &str) -> Result<Parsed, OAuthError> {
    crate::jws::parse(jwt).ok_or_else(|| refused("not a compact JWS"))
}

impl Parsed {
    /// The client it claims to be from (`iss`), unverified: which client's
    /// keys to check it against.
    pub fn issuer(&self) -> Option<&str> {
        self.claims["iss"].as_str()
    }

    /// The `alg` of a client's signature (an assertion, a request
    /// object): an asymmetric one of [`ALGS`], or why not.
    pub fn signing_alg(&self) -> Result<&str, &'static str> {
        match self.header["alg"].as_str() {
            Some(alg) if ALGS.contains(&alg) => Ok(alg),
            Some("none") => Err("alg none is refused"),
            Some(alg) if alg.starts_with("HS") => {
                Err("an HMAC alg is refused: sign with a private key (RS384 or ES384)")
            }
            _ => Err("alg must be one of RS256, RS384, RS512, PS256, PS384, ES256, ES384"),
        }
    }
}

/// The key of `jwks` (a JWK Set) the assertion names: its `kid` selects
/// exactly one key; without a `kid`, the set must hold exactly one key
/// usable with the `alg`.
pub fn select_key<'a>(parsed: &Parsed, jwks: &'a Value) -> Result<&'a Value, OAuthError> {
    key_of(parsed, jwks).map_err(refused)
}

/// [`select_key`] for any signature of a client's: the key, or why none.
pub fn key_of<'a>(parsed: &Parsed, jwks: &'a Value) -> Result<&'a Value, &'static str> {
    let alg = parsed.signing_alg()?;
    let kty = if alg.starts_with("ES") { "EC" } else { "RSA" };
    let keys = jwks["keys"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let usable = |k: &&Value| {
        k["kty"] == kty
            && k["alg"].as_str().is_none_or(|a| a == alg)
            && k["use"].as_str().is_none_or(|u| u == "sig")
    };
    let candidates: Vec<&Value> = match parsed.header["kid"].as_str() {
        Some(kid) => keys
            .iter()
            .filter(|k| k["kid"].as_str() == Some(kid))
            .collect(),
        None => keys.iter().filter(usable).collect(),
    };
    match candidates.as_slice() {
        [one] if usable(one) => Ok(one),
        [_] => Err("the key named by kid does not fit the alg"),
        [] => Err("no registered key matches its kid"),
        _ => Err("its kid matches more than one registered key"),
    }
}

/// Whether the signature holds under `jwk`.
pub fn verify_signature(parsed: &Parsed, jwk: &Value) -> Result<(), OAuthError> {
    signature_holds(parsed, jwk).map_err(refused)
}

/// [`verify_signature`] for any signature of a client's: why not, if not.
pub fn signature_holds(parsed: &Parsed, jwk: &Value) -> Result<(), &'static str> {
    use crate::jws::VerifyError;
    let alg = parsed.signing_alg()?;
    crate::jws::verify(parsed, alg, jwk).map_err(|e| match e {
        VerifyError::Signature => "the signature does not verify",
        VerifyError::KeyType => "the registered key is not on the alg's curve",
        VerifyError::Key | VerifyError::Alg => "the registered key is malformed",
    })
}

/// Checks the claims of a verified assertion from `client_id` at `now`;
/// `audiences` are what `aud` may name, the token endpoint's URL first
/// (RFC 7523 §3 also allows the issuer).
pub fn check_claims(
    parsed: &Parsed,
    client_id: &str,
    audiences: &[&str],
    now: i64,
) -> Result<Accepted, OAuthError> {
    let audience = audiences.first().copied().unwrap_or_default();
    let c = &parsed.claims;
    if c["iss"].as_str() != Some(client_id) || c["sub"].as_str() != Some(client_id) {
        return Err(refused("iss and sub must both be the client_id"));
    }
    let named = |a: &Value| a.as_str().is_some_and(|a| audiences.contains(&a));
    let aud_ok = match &c["aud"] {
        Value::Array(all) => all.iter().any(named),
        one => named(one),
    };
    if !aud_ok {
        return Err(refused(&format!(
            "aud must be the token endpoint, {audience}"
        )));
    }
    let Some(exp) = c["exp"].as_i64() else {
        return Err(refused("exp is required"));
    };
    if exp <= now {
        return Err(refused("it has expired"));
    }
    if exp > now + MAX_LIFETIME {
        return Err(refused("exp must be at most five minutes away"));
    }
    if c["nbf"].as_i64().is_some_and(|nbf| nbf > now + 60) {
        return Err(refused("it is not valid yet (nbf)"));
    }
    let jti = match c["jti"].as_str() {
        Some(j) if !j.is_empty() && j.len() <= 255 => j,
        _ => return Err(refused("jti is required (at most 255 characters)")),
    };
    Ok(Accepted {
        jti: jti.to_owned(),
        expires_at: exp,
    })
}

/// `jku` (RFC 7515 §4.1.2), when the header carries one, must be the JWK
/// Set URL the client registered: keys are never fetched from where an
/// assertion says.
pub fn check_jku(parsed: &Parsed, registered: Option<&str>) -> Result<(), OAuthError> {
    jku_allowed(parsed, registered).map_err(refused)
}

/// [`check_jku`] for any signature of a client's: why not, if not.
pub fn jku_allowed(parsed: &Parsed, registered: Option<&str>) -> Result<(), &'static str> {
    match parsed.header.get("jku") {
        None => Ok(()),
        Some(jku) if jku.as_str().is_some() && jku.as_str() == registered => Ok(()),
        Some(_) => Err("jku is not the registered JWK Set URL"),
    }
}

/// Whether `jwks` is a JWK Set healthgate can verify assertions with: a
/// `keys` array of public RSA and EC (P-256, P-384) keys, none private.
pub fn check_jwks(jwks: &Value) -> Result<(), String> {
    let Some(keys) = jwks["keys"].as_array() else {
        return Err("a JWK Set is an object with a keys array".into());
    };
    if keys.is_empty() {
        return Err("the JWK Set has no keys".into());
    }
    for key in keys {
        if key.get("d").is_some() {
            return Err("the JWK Set holds a private key: register the public keys only".into());
        }
        let ok = match key["kty"].as_str() {
            Some("RSA") => key["n"].is_string() && key["e"].is_string(),
            Some("EC") => {
                matches!(key["crv"].as_str(), Some("P-256" | "P-384"))
                    && key["x"].is_string()
                    && key["y"].is_string()
            }
            _ => false,
        };
        if !ok {
            return Err("each key must be a public RSA key or an EC key on P-256 or P-384".into());
        }
    }
    Ok(())
}

/// The client's side of `private_key_jwt`, as a developer's backend service
/// holds it (the playground runs it for them): a private key, PKCS#8 in
/// PEM, that signs assertions. EC keys on P-384 sign with ES384 (what SMART
/// suggests, and what [`ClientKey::generate`] makes), on P-256 with ES256;
/// RSA keys with RS384.
pub struct ClientKey {
    pair: ClientPair,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

enum ClientPair {
    Ec(signature::EcdsaKeyPair, &'static str, &'static str),
    Rsa(signature::RsaKeyPair),
}

const PEM_LABEL: &str = "PRIVATE KEY";

impl ClientKey {
    /// A new P-384 key, with its PKCS#8 PEM text (the only copy).
    pub fn generate() -> Result<(Self, String), String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &rng,
        )
        .map_err(|_| "the key could not be made".to_owned())?;
        let pem = pem_of(pkcs8.as_ref());
        Ok((Self::from_pem(&pem)?, pem))
    }

    /// The key in `pem` (`-----BEGIN PRIVATE KEY-----`, PKCS#8).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        use base64::engine::general_purpose::STANDARD;
        let begin = format!("-----BEGIN {PEM_LABEL}-----");
        let end = format!("-----END {PEM_LABEL}-----");
        let body = pem
            .trim()
            .strip_prefix(&begin)
            .and_then(|rest| rest.trim_end().strip_suffix(&end))
            .ok_or_else(|| format!("paste a PKCS#8 private key in PEM: {begin} … {end}"))?;
        let der = STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .map_err(|_| "the PEM text is not valid base64".to_owned())?;
        let rng = ring::rand::SystemRandom::new();
        let ec = |alg: &'static signature::EcdsaSigningAlgorithm| {
            signature::EcdsaKeyPair::from_pkcs8(alg, &der, &rng).ok()
        };
        let pair = if let Some(p) = ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING) {
            ClientPair::Ec(p, "ES384", "P-384")
        } else if let Some(p) = ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING) {
            ClientPair::Ec(p, "ES256", "P-256")
        } else if let Ok(p) = signature::RsaKeyPair::from_pkcs8(&der) {
            ClientPair::Rsa(p)
        } else {
            return Err(
                "the key is not an EC key on P-384 or P-256, or an RSA key, in PKCS#8".into(),
            );
        };
        Ok(Self { pair })
    }

    pub fn alg(&self) -> &'static str {
        match &self.pair {
            ClientPair::Ec(_, alg, _) => alg,
            ClientPair::Rsa(_) => "RS384",
        }
    }

    /// The public half, as the JWK to register under `kid`.
    pub fn public_jwk(&self, kid: &str) -> Value {
        use signature::KeyPair;
        match &self.pair {
            ClientPair::Ec(pair, alg, crv) => {
                // An uncompressed point: 0x04 || X || Y.
                let point = pair.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                serde_json::json!({
                    "kty": "EC", "crv": crv, "alg": alg, "use": "sig", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..1 + half]),
                    "y": URL_SAFE_NO_PAD.encode(&point[1 + half..]),
                })
            }
            ClientPair::Rsa(pair) => {
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                serde_json::json!({
                    "kty": "RSA", "alg": "RS384", "use": "sig", "kid": kid,
                    "n": URL_SAFE_NO_PAD.encode(&public.n),
                    "e": URL_SAFE_NO_PAD.encode(&public.e),
                })
            }
        }
    }

    /// A compact JWS of `claims` with header `{alg, typ: JWT, kid}` (no
    /// `kid` when it is empty: the server then takes the one key that fits).
    pub fn sign(&self, kid: &str, claims: &Value) -> Result<String, String> {
        let mut header = serde_json::json!({ "typ": "JWT" });
        if !kid.is_empty() {
            header["kid"] = kid.into();
        }
        self.sign_jws(header, claims)
    }

    /// A DPoP proof (RFC 9449 §4.2) for `method` at `url`, made at `now`,
    /// with `ath` for `access_token` when one is presented with it.
    pub fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        now: i64,
        access_token: Option<&str>,
    ) -> Result<String, String> {
        let mut jti = [0u8; 16];
        crate::secret::random_bytes(&mut jti);
        let mut jwk = self.public_jwk("");
        if let Some(o) = jwk.as_object_mut() {
            o.remove("kid");
        }
        let mut claims = serde_json::json!({
            "jti": URL_SAFE_NO_PAD.encode(jti), "htm": method, "htu": url, "iat": now,
        });
        if let Some(token) = access_token {
            claims["ath"] = crate::dpop::ath(token).into();
        }
        self.sign_jws(
            serde_json::json!({ "typ": crate::dpop::TYP, "jwk": jwk }),
            &claims,
        )
    }

    /// A compact JWS of `claims` with `header` and this key's `alg`.
    pub fn sign_jws(&self, mut header: Value, claims: &Value) -> Result<String, String> {
        header["alg"] = self.alg().into();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let failed = |_| "signing failed".to_owned();
        let sig = match &self.pair {
            ClientPair::Ec(pair, ..) => pair
                .sign(&rng, input.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            ClientPair::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA384,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(failed)?;
                sig
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// PKCS#8 DER as PEM text, 64 characters a line.
fn pem_of(der: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD;
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    const CLIENT: &str = "app-backend";
    const AUD: &str = "https://auth.example.com/oauth/token";
    const NOW: i64 = 1_800_000_000;

    enum Signer {
        Ec(EcdsaKeyPair, &'static str),
        Rsa(
            RsaKeyPair,
            &'static dyn signature::RsaEncoding,
            &'static str,
        ),
    }

    impl Signer {
        fn ec384() -> (Self, Value) {
            let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let jwk = json!({
                "kty": "EC", "crv": "P-384", "kid": "ec-1",
                "x": URL_SAFE_NO_PAD.encode(&point[1..49]),
                "y": URL_SAFE_NO_PAD.encode(&point[49..97]),
            });
            (Self::Ec(pair, "ES384"), jwk)
        }

        fn rsa(
            encoding: &'static dyn signature::RsaEncoding,
            alg: &'static str,
            kid: &str,
        ) -> (Self, Value) {
            let (pkcs8, mut jwk) = crate::jose::generate(crate::jose::Alg::Rs256, kid).unwrap();
            jwk.as_object_mut().unwrap().remove("alg");
            let pair = RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
            (Self::Rsa(pair, encoding, alg), jwk)
        }

        fn sign(&self, header: Value, claims: &Value) -> String {
            let mut header = header;
            header["alg"] = match self {
                Self::Ec(_, alg) | Self::Rsa(_, _, alg) => (*alg).into(),
            };
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let rng = SystemRandom::new();
            let signature = match self {
                Self::Ec(pair, _) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
                Self::Rsa(pair, encoding, _) => {
                    let mut out = vec![0; pair.public().modulus_len()];
                    pair.sign(*encoding, &rng, input.as_bytes(), &mut out)
                        .unwrap();
                    out
                }
            };
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
        }
    }

    fn claims() -> Value {
        json!({ "iss": CLIENT, "sub": CLIENT, "aud": AUD, "exp": NOW + 240, "jti": "j-1" })
    }

    /// Parses, selects, verifies and checks, as the token endpoint does.
    fn accept(jwt: &str, jwks: &Value) -> Result<Accepted, OAuthError> {
        let parsed = parse(jwt)?;
        check_jku(&parsed, Some("https://backend.example/jwks.json"))?;
        let key = select_key(&parsed, jwks)?;
        verify_signature(&parsed, key)?;
        check_claims(&parsed, CLIENT, &[AUD, "https://auth.example.com"], NOW)
    }

    #[test]
    fn assertions_signed_with_each_algorithm_verify_against_the_registered_key() {
        let signers = [
            Signer::ec384(),
            Signer::rsa(&signature::RSA_PKCS1_SHA384, "RS384", "rsa-384"),
            Signer::rsa(&signature::RSA_PKCS1_SHA256, "RS256", "rsa-256"),
            Signer::rsa(&signature::RSA_PSS_SHA256, "PS256", "rsa-pss"),
        ];
        let jwks = json!({ "keys": signers.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>() });
        assert_eq!(check_jwks(&jwks), Ok(()));
        for (signer, key) in &signers {
            let jwt = signer.sign(json!({ "typ": "JWT", "kid": key["kid"] }), &claims());
            assert_eq!(
                accept(&jwt, &jwks),
                Ok(Accepted {
                    jti: "j-1".into(),
                    expires_at: NOW + 240
                }),
                "{}",
                key["kid"]
            );
        }
        // Another key's signature under this kid does not verify.
        let (other, _) = Signer::ec384();
        let forged = other.sign(json!({ "kid": "ec-1" }), &claims());
        assert_eq!(
            accept(&forged, &jwks).unwrap_err().description.to_string(),
            "client assertion: the signature does not verify"
        );
    }

    #[test]
    fn every_rule_of_the_profile_is_enforced() {
        let (signer, key) = Signer::ec384();
        let jwks = json!({ "keys": [key.clone()] });
        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = claims();
            change(&mut c);
            signer.sign(json!({ "kid": "ec-1" }), &c)
        };
        let says = |jwt: &str| {
            let e = accept(jwt, &jwks).unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidClient);
            e.description.to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            (with(&|c| c["iss"] = "app-other".into()), "iss and sub"),
            (with(&|c| c["sub"] = "app-other".into()), "iss and sub"),
            (
                with(&|c| c["aud"] = "https://evil.example/token".into()),
                "aud must be",
            ),
            (with(&|c| c["exp"] = (NOW - 1).into()), "expired"),
            (with(&|c| c["exp"] = (NOW + 301).into()), "five minutes"),
            (
                with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                "exp is required",
            ),
            (
                with(&|c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
                "jti is required",
            ),
            (with(&|c| c["nbf"] = (NOW + 600).into()), "not valid yet"),
            (
                signer.sign(json!({ "kid": "nope" }), &claims()),
                "no registered key",
            ),
            (
                signer.sign(
                    json!({ "kid": "ec-1", "jku": "https://evil.example/jwks" }),
                    &claims(),
                ),
                "jku",
            ),
            ("not.a.jwt".into(), "not a compact JWS"),
        ];
        for (jwt, wanted) in cases {
            let said = says(&jwt);
            assert!(said.contains(wanted), "{wanted}: {said}");
        }
        // An array aud naming the endpoint is accepted.
        let listed = with(&|c| c["aud"] = json!(["https://x.example", AUD]));
        assert!(accept(&listed, &jwks).is_ok());
        // A registered jku is accepted.
        let named = signer.sign(
            json!({ "kid": "ec-1", "jku": "https://backend.example/jwks.json" }),
            &claims(),
        );
        assert!(accept(&named, &jwks).is_ok());
    }

    #[test]
    fn none_and_hmac_are_refused_before_any_key_is_looked_at() {
        let (_, key) = Signer::ec384();
        let jwks = json!({ "keys": [key] });
        for alg in ["none", "HS256", "ES512", "EdDSA"] {
            let header = URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "kid": "ec-1" }).to_string());
            let body = URL_SAFE_NO_PAD.encode(claims().to_string());
            let jwt = format!("{header}.{body}.c2ln");
            let e = accept(&jwt, &jwks).unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidClient, "{alg}");
            assert!(e.description.contains("alg"), "{alg}: {}", e.description);
        }
    }

    #[test]
    fn a_kid_must_select_exactly_one_key_and_a_set_holds_public_keys_only() {
        let (signer, key) = Signer::ec384();
        let twice = json!({ "keys": [key.clone(), key.clone()] });
        let jwt = signer.sign(json!({ "kid": "ec-1" }), &claims());
        assert!(
            accept(&jwt, &twice)
                .unwrap_err()
                .description
                .contains("more than one")
        );
        // Without a kid, the only key that fits the alg.
        let rsa = Signer::rsa(&signature::RSA_PKCS1_SHA384, "RS384", "r").1;
        let mixed = json!({ "keys": [key.clone(), rsa] });
        let no_kid = signer.sign(json!({}), &claims());
        assert!(accept(&no_kid, &mixed).is_ok());
        let mut private = key;
        private["d"] = "secret".into();
        assert!(check_jwks(&json!({ "keys": [private] })).is_err());
        assert!(check_jwks(&json!({ "keys": [] })).is_err());
        assert!(check_jwks(&json!([])).is_err());
        assert!(check_jwks(&json!({ "keys": [{ "kty": "oct", "k": "abc" }] })).is_err());
    }

    #[test]
    fn a_client_key_made_or_pasted_signs_assertions_its_public_jwk_verifies() {
        let (made, pem) = ClientKey::generate().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(made.alg(), "ES384");
        let p256 = crate::jose::generate(crate::jose::Alg::Es256, "x")
            .unwrap()
            .0;
        let pasted = ClientKey::from_pem(&format!("  {}  ", pem_of(&p256))).unwrap();
        assert_eq!(pasted.alg(), "ES256");
        let rsa = crate::jose::generate(crate::jose::Alg::Rs256, "x")
            .unwrap()
            .0;
        let rsa_key = ClientKey::from_pem(&pem_of(&rsa)).unwrap();
        assert_eq!(rsa_key.alg(), "RS384");
        for (key, pem) in [
            (made, pem.clone()),
            (pasted, pem_of(&p256)),
            (rsa_key, pem_of(&rsa)),
        ] {
            let jwk = key.public_jwk("k1");
            let set = json!({ "keys": [jwk] });
            check_jwks(&set).unwrap();
            let again = ClientKey::from_pem(&pem).unwrap();
            let jwt = again.sign("k1", &json!({ "iss": CLIENT })).unwrap();
            let parsed = parse(&jwt).unwrap();
            assert_eq!(parsed.header["kid"], "k1");
            verify_signature(&parsed, select_key(&parsed, &set).unwrap()).unwrap();
        }
        for bad in [
            "",
            "hello",
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----",
        ] {
            assert!(ClientKey::from_pem(bad).is_err(), "{bad}");
        }
        // A DPoP proof made with it holds at the server.
        let (key, _) = ClientKey::generate().unwrap();
        let proof = key.dpop_proof("POST", AUD, NOW, Some("hg_at_x")).unwrap();
        let expected = crate::dpop::Expected {
            method: "POST",
            url: AUD,
            now: NOW,
            access_token: Some("hg_at_x"),
            nonce_key: None,
        };
        let proven = crate::dpop::verify(&proof, &expected).unwrap();
        assert_eq!(
            Some(proven.jkt),
            crate::dpop::thumbprint(&key.public_jwk("k"))
        );
        let not_a_key = pem_of(b"not a key");
        assert!(
            ClientKey::from_pem(&not_a_key)
                .unwrap_err()
                .contains("PKCS#8")
        );
    }
}
