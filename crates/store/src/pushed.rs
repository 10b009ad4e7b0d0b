//! Pushed authorization requests (RFC 9126), and requests that arrived as
//! a signed request object: kept by the digest of their `request_uri`,
//! taken once when it arrives at the authorization endpoint, then read by
//! the sign-in and consent pages that bring the request back.

use sqlx::Row;

use crate::{Result, Store};

impl Store {
    /// Keeps the form-encoded authorization request `params` of
    /// `client_id` under `digest` until `expires_at`; `used_at` set (to
    /// `created_at`) keeps a request that arrived already, as one made from
    /// a request object at the authorization endpoint does.
    pub async fn insert_pushed_request(
        &self,
        digest: &str,
        client_id: &str,
        params: &str,
        created_at: i64,
        expires_at: i64,
        used: bool,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO pushed_requests (digest, client_id, params, created_at, expires_at, used_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(digest)
        .bind(client_id)
        .bind(params)
        .bind(created_at)
        .bind(expires_at)
        .bind(used.then_some(created_at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Takes the request kept under `digest` for `client_id` as its
    /// `request_uri` arrives at `now`: its parameters, or `None` when it is
    /// unknown, another client's, expired, or taken before (on any node).
    pub async fn take_pushed_request(
        &self,
        digest: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "UPDATE pushed_requests SET used_at = $3
             WHERE digest = $1 AND client_id = $2 AND used_at IS NULL AND expires_at > $3
             RETURNING params",
        )
        .bind(digest)
        .bind(client_id)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        row.map(|r| r.try_get("params").map_err(Into::into))
            .transpose()
    }

    /// The parameters of a request of `client_id` that arrived at or after
    /// `since`, brought back by the pages; `None` otherwise.
    pub async fn arrived_pushed_request(
        &self,
        digest: &str,
        client_id: &str,
        since: i64,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT params FROM pushed_requests
             WHERE digest = $1 AND client_id = $2 AND used_at IS NOT NULL AND used_at >= $3",
        )
        .bind(digest)
        .bind(client_id)
        .bind(since)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| r.try_get("params").map_err(Into::into))
            .transpose()
    }
}
