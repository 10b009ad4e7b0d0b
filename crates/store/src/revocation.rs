//! Token revocation (RFC 7009) and the lookups introspection (RFC 7662)
//! needs: what a presented token is, whose it is, and whether it is live.

use healthgate_core::event::EventKind;
use healthgate_core::token::RefreshToken;

use crate::events::{Event, append};
use crate::grants::{REFRESH_SELECT, refresh_from_row, revoke_family};
use crate::{Result, Store};

/// What a revocation request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The token was the caller's and is now dead (or already was).
    Done,
    /// No such token: RFC 7009 §2.2 answers 200 all the same.
    Unknown,
    /// Another client's token (issued to `owner`): left alone, and the
    /// caller is told so (RFC 7009 §2.1).
    NotYours { owner: String },
}

impl Store {
    /// Revokes an access token of `client_id` (only that token: its refresh
    /// token lives on, as RFC 7009 §2.1 allows).
    pub async fn revoke_access_token(
        &self,
        digest: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Revoked> {
        let mut tx = self.writer.begin().await?;
        let row: Option<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT client_id, family_id, user_id FROM access_tokens WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((owner, family_id, user_id)) = row else {
            return Ok(Revoked::Unknown);
        };
        if owner != client_id {
            return Ok(Revoked::NotYours { owner });
        }
        let done = sqlx::query(
            "UPDATE access_tokens SET revoked_at = $1 WHERE digest = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let event = Event::new(EventKind::TokenRevoked)
                .actor(user_id.as_deref())
                .client(client_id)
                .subject(&family_id)
                .data(serde_json::json!({ "token_type": "access_token" }));
            append(&mut tx, now, &event).await?;
        }
        tx.commit().await?;
        Ok(Revoked::Done)
    }

    /// Revokes a refresh token of `client_id`, and with it its whole family
    /// (RFC 7009 §2.1: the access tokens of the same grant die too).
    pub async fn revoke_refresh_token(
        &self,
        digest: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Revoked> {
        let mut tx = self.writer.begin().await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT client_id, family_id FROM refresh_tokens WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((owner, family_id)) = row else {
            return Ok(Revoked::Unknown);
        };
        if owner != client_id {
            return Ok(Revoked::NotYours { owner });
        }
        revoke_family(&mut tx, &family_id, "revoked by the client", now).await?;
        tx.commit().await?;
        Ok(Revoked::Done)
    }

    /// Revokes a practice API key the partner `client_id` holds.
    pub async fn revoke_api_key_by_digest(
        &self,
        digest: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Revoked> {
        let mut tx = self.writer.begin().await?;
        let row: Option<(String, String, String, String)> = sqlx::query_as(
            "SELECT client_id, id, integration_id, organization_id FROM api_keys WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((owner, key_id, integration_id, organization_id)) = row else {
            return Ok(Revoked::Unknown);
        };
        if owner != client_id {
            return Ok(Revoked::NotYours { owner });
        }
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE digest = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let event = Event::new(EventKind::ApiKeyRevoked)
                .subject(&key_id)
                .client(client_id)
                .organization(&organization_id)
                .data(
                    serde_json::json!({ "integration_id": integration_id, "api_key_id": key_id }),
                );
            append(&mut tx, now, &event).await?;
        }
        tx.commit().await?;
        Ok(Revoked::Done)
    }

    /// A refresh token by digest, with its family's revocation folded in.
    pub async fn refresh_token_info(&self, digest: &str) -> Result<Option<RefreshToken>> {
        let row = sqlx::query(REFRESH_SELECT)
            .bind(digest)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(refresh_from_row).transpose()
    }
}
