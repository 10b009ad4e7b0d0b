//! Signing keys, kept in the database so every node signs with and publishes
//! the same keys. Private keys are stored sealed; the store never sees them
//! in the clear.

use sqlx::Row;

use crate::{Result, Store};

/// A signing key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    /// The sealed private key.
    pub private_key: String,
    pub public_jwk: String,
    pub created_at: i64,
    pub active_from: i64,
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("active_from", &self.active_from)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Every signing key, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, alg, private_key, public_jwk, created_at, active_from, retired_at
             FROM signing_keys ORDER BY active_from DESC, created_at DESC",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get("kid")?,
                    alg: r.try_get("alg")?,
                    private_key: r.try_get("private_key")?,
                    public_jwk: r.try_get("public_jwk")?,
                    created_at: r.try_get("created_at")?,
                    active_from: r.try_get("active_from")?,
                    retired_at: r.try_get("retired_at")?,
                })
            })
            .collect()
    }

    /// Adds a key; keys of the same algorithm still signing at
    /// `key.active_from` retire then, so exactly one key per algorithm signs
    /// at any time after the overlap.
    pub async fn add_signing_key(&self, key: &StoredKey) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND active_from < $1 AND alg = $2",
        )
        .bind(key.active_from)
        .bind(&key.alg)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at, active_from, retired_at)
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_key)
        .bind(&key.public_jwk)
        .bind(key.created_at)
        .bind(key.active_from)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
