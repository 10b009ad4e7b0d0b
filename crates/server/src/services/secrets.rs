//! The instance's secrets and what derives from them: the instance key
//! (`secret_key`, or the one kept in the database) and each client's webhook
//! signing secret, derived afresh from it at every use so a rotation signs at
//! once.

use healthgate_core::client::Client;
use healthgate_store::{Store, StoreError};

use crate::config::{SecretKey, Settings};

/// The instance key webhook secrets and the sealing key derive from:
/// `secret_key` from the configuration, or the one kept in the database.
pub async fn instance_key(store: &Store, settings: &Settings) -> Result<Vec<u8>, StoreError> {
    let key = match &settings.secret_key {
        Some(key) => key.clone(),
        None => store
            .instance_key()
            .await?
            .parse::<SecretKey>()
            .map_err(|_| {
                StoreError::Corrupt(
                    "the instance secret key in the database is not 64 hexadecimal digits".into(),
                )
            })?,
    };
    Ok(key.bytes().to_vec())
}

/// [`instance_key`], read from the database once per process.
pub async fn instance_key_of(state: &crate::state::AppState) -> Result<&[u8], StoreError> {
    state
        .instance_key
        .get_or_try_init(|| instance_key(&state.store, &state.settings))
        .await
        .map(Vec::as_slice)
}

/// The secret a client's webhook deliveries are signed with.
pub async fn webhook_secret(
    store: &Store,
    settings: &Settings,
    client: &Client,
) -> Result<String, StoreError> {
    let key = instance_key(store, settings).await?;
    Ok(healthgate_core::webhook::derive_secret(
        &key,
        &client.id,
        client.webhook_secret_version,
    ))
}
