//! The signing keys every node shares (OpenID Connect ID tokens): created on
//! first use, kept in the database sealed with a key derived from
//! `secret_key` (or the generated instance key), published at `/oauth/jwks`,
//! and rotated with `healthgate keys rotate`: the new key starts signing after
//! `key_rotation_overlap` seconds, so relying parties fetch it first, and
//! retired keys stay published while tokens they signed can still be live.

use std::collections::HashMap;
use std::sync::Arc;

use healthgate_core::jose::{self, Alg, SigningKey};
use healthgate_core::secret::new_id;
use healthgate_store::{Store, StoredKey};
use serde_json::{Value, json};

use crate::config::{Seconds, Settings};
use crate::services::admin::AdminError;
use crate::services::secrets::instance_key;

fn key_error(e: jose::KeyError) -> AdminError {
    AdminError::Invalid(e.to_string())
}

async fn sealing_key(store: &Store, settings: &Settings) -> Result<[u8; 32], AdminError> {
    let instance = instance_key(store, settings).await?;
    Ok(jose::derive_key(
        &instance,
        "healthgate signing-key sealing",
    ))
}

/// Creates an `alg` key that signs from `active_from`.
pub async fn add_key(
    store: &Store,
    settings: &Settings,
    alg: Alg,
    now: i64,
    active_from: i64,
) -> Result<String, AdminError> {
    let kid = new_id("key");
    let (pkcs8, jwk) = jose::generate(alg, &kid).map_err(key_error)?;
    let sealed = jose::seal(&sealing_key(store, settings).await?, &pkcs8).map_err(key_error)?;
    store
        .add_signing_key(&StoredKey {
            kid: kid.clone(),
            alg: alg.as_str().into(),
            private_key: sealed,
            public_jwk: jwk.to_string(),
            created_at: now,
            active_from,
            retired_at: None,
        })
        .await?;
    Ok(kid)
}

/// Signing keys this process has unsealed and parsed, by `kid`, with the
/// sealed form they came from. A cache that never decides: which key signs
/// is read from the database on every request (so a rotation on any node
/// is honoured at the next one); only the unsealing and parsing of the same
/// sealed bytes is skipped (parsing an RSA key costs milliseconds).
#[derive(Default)]
pub struct OpenedKeys(std::sync::Mutex<HashMap<String, (String, Arc<SigningKey>)>>);

impl OpenedKeys {
    fn get(&self, key: &StoredKey) -> Option<Arc<SigningKey>> {
        let opened = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match opened.get(&key.kid) {
            Some((sealed, signer)) if *sealed == key.private_key => Some(signer.clone()),
            _ => None,
        }
    }

    fn put(&self, key: &StoredKey, signer: Arc<SigningKey>) {
        let mut opened = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Keys are few (one or two per algorithm, plus retired ones while
        // their tokens live); forget them all rather than grow.
        if opened.len() >= 16 {
            opened.clear();
        }
        opened.insert(key.kid.clone(), (key.private_key.clone(), signer));
    }
}

/// The `alg` key that signs now, creating the first one if there is none.
pub async fn signer(
    store: &Store,
    settings: &Settings,
    opened: &OpenedKeys,
    alg: Alg,
    now: i64,
) -> Result<Arc<SigningKey>, AdminError> {
    let of_alg = |keys: Vec<StoredKey>| -> Vec<StoredKey> {
        keys.into_iter().filter(|k| k.alg == alg.as_str()).collect()
    };
    let mut keys = of_alg(store.signing_keys().await?);
    if keys.is_empty() {
        add_key(store, settings, alg, now, now).await?;
        keys = of_alg(store.signing_keys().await?);
    }
    let current = keys
        .iter()
        .find(|k| k.active_from <= now && k.retired_at.is_none_or(|r| r > now))
        .or_else(|| keys.iter().find(|k| k.active_from <= now))
        .ok_or_else(|| AdminError::Invalid("no signing key is active yet".into()))?;
    if let Some(signer) = opened.get(current) {
        return Ok(signer);
    }
    let pkcs8 = jose::open(&sealing_key(store, settings).await?, &current.private_key)
        .map_err(key_error)?;
    let signer = Arc::new(SigningKey::from_pkcs8(alg, &current.kid, &pkcs8).map_err(key_error)?);
    opened.put(current, signer.clone());
    Ok(signer)
}

/// The JWK Set: every key that signs now or soon, and retired keys while
/// tokens they signed may still be presented.
pub async fn jwks(store: &Store, settings: &Settings, now: i64) -> Result<Value, AdminError> {
    let keep_after = now - settings.id_token_ttl.max(settings.access_token_ttl).secs();
    let keys: Vec<Value> = store
        .signing_keys()
        .await?
        .iter()
        .filter(|k| k.retired_at.is_none_or(|r| r > keep_after))
        .filter_map(|k| serde_json::from_str(&k.public_jwk).ok())
        .collect();
    Ok(json!({ "keys": keys }))
}

/// Starts a rotation of every algorithm in use (ES256 at least): a new key
/// each, signing after the overlap. Returns the new keys' ids and when they
/// sign.
pub async fn rotate(
    store: &Store,
    settings: &Settings,
    now: i64,
) -> Result<Vec<(String, i64)>, AdminError> {
    let existing = store.signing_keys().await?;
    let mut algs: Vec<Alg> = existing.iter().filter_map(|k| k.alg.parse().ok()).collect();
    algs.sort_by_key(|a| a.as_str());
    algs.dedup();
    if algs.is_empty() {
        // Nothing to overlap with: the first key signs at once.
        return Ok(vec![(
            add_key(store, settings, Alg::Es256, now, now).await?,
            now,
        )]);
    }
    let from = now + settings.key_rotation_overlap.map_or(0, Seconds::secs);
    let mut added = Vec::new();
    for alg in algs {
        added.push((add_key(store, settings, alg, now, from).await?, from));
    }
    Ok(added)
}

/// The claims of a JWS this server signed, if the signature holds under one
/// of its keys.
pub async fn verify(
    store: &Store,
    jwt: &str,
) -> Result<Option<Value>, healthgate_store::StoreError> {
    let Some(kid) = jose::header_kid(jwt) else {
        return Ok(None);
    };
    let keys = store.signing_keys().await?;
    let Some(key) = keys.iter().find(|k| k.kid == kid) else {
        return Ok(None);
    };
    let jwk: Value = serde_json::from_str(&key.public_jwk).unwrap_or_default();
    Ok(jose::verify_es256(jwt, &jwk).ok())
}

/// The opaque access token a presented token stands for: itself, or, for a
/// JWT access token this server signed, the one it carries as `jti`. `None`
/// for a JWT that does not verify.
pub async fn opaque_access_token(
    store: &Store,
    presented: &str,
) -> Result<Option<String>, healthgate_store::StoreError> {
    if !jose::looks_like_jwt(presented) {
        return Ok(Some(presented.to_owned()));
    }
    Ok(verify(store, presented)
        .await?
        .and_then(|claims| claims["jti"].as_str().map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(kid: &str, sealed: &str) -> StoredKey {
        StoredKey {
            kid: kid.into(),
            alg: "ES256".into(),
            private_key: sealed.into(),
            public_jwk: "{}".into(),
            created_at: 0,
            active_from: 0,
            retired_at: None,
        }
    }

    /// An opened key is reused only for the very sealed bytes it came from:
    /// a row that changed under the same `kid` is opened again.
    #[test]
    fn an_opened_key_is_reused_only_for_its_own_sealed_form() {
        let (pkcs8, _) = jose::generate(Alg::Es256, "k1").unwrap();
        let signer = Arc::new(SigningKey::from_pkcs8(Alg::Es256, "k1", &pkcs8).unwrap());
        let opened = OpenedKeys::default();
        assert!(opened.get(&stored("k1", "sealed-a")).is_none());
        opened.put(&stored("k1", "sealed-a"), signer.clone());
        assert!(Arc::ptr_eq(
            &opened.get(&stored("k1", "sealed-a")).unwrap(),
            &signer
        ));
        assert!(opened.get(&stored("k1", "sealed-b")).is_none());
        assert!(opened.get(&stored("k2", "sealed-a")).is_none());
    }
}
