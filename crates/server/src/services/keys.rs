//! The signing keys every node shares (OpenID Connect ID tokens): created on
//! first use, kept in the database sealed with a key derived from
//! `secret_key` (or the generated instance key), published at `/oauth/jwks`,
//! and rotated with `healthgate keys rotate`: the new key starts signing after
//! `key_rotation_overlap` seconds, so relying parties fetch it first, and
//! retired keys stay published while tokens they signed can still be live.

use std::sync::Arc;

use healthgate_core::jose::{self, Alg, SigningKey};
use healthgate_core::secret::new_id;
use healthgate_store::{Store, StoredKey};
use serde_json::{Value, json};

use crate::config::{Seconds, Settings};
use crate::services::admin::AdminError;
use crate::services::secrets::instance_key;
use crate::state::OpenedKeys;

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
