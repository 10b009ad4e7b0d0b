//! Dynamic client registration (RFC 7591, 7592): the initial access tokens
//! an operator issues, and the registration access token each app
//! registered at the endpoint holds.

use healthgate_core::event::EventKind;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::events::{Actor, Event, append};
use crate::{Result, Store};

/// An initial access token, as kept (its digest only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    pub id: String,
    pub digest: String,
    /// What the operator wrote to recognise it by.
    pub label: Option<String>,
    /// Who owns the apps registered with it (a developer account), if
    /// anyone.
    pub owner_id: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl RegistrationToken {
    /// Whether it may register apps at `now`.
    pub fn is_usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

const COLUMNS: &str = "id, digest, label, owner_id, created_at, expires_at, revoked_at";

fn from_row(r: &AnyRow) -> Result<RegistrationToken> {
    Ok(RegistrationToken {
        id: r.try_get("id")?,
        digest: r.try_get("digest")?,
        label: r.try_get("label")?,
        owner_id: r.try_get("owner_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Keeps a new initial access token, with its
    /// `registration_token.created` event.
    pub async fn insert_registration_token(
        &self,
        token: &RegistrationToken,
        actor: Actor<'_>,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO registration_tokens (id, digest, label, owner_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.digest)
        .bind(&token.label)
        .bind(&token.owner_id)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        let mut event = Event::new(EventKind::RegistrationTokenCreated)
            .by(actor)
            .data(serde_json::json!({
                "registration_token": token.id,
                "label": token.label,
                "expires_at": token.expires_at,
            }));
        if let Some(owner) = &token.owner_id {
            event = event.subject(owner);
        }
        append(&mut tx, token.created_at, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The initial access token with this digest, usable or not.
    pub async fn registration_token(&self, digest: &str) -> Result<Option<RegistrationToken>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM registration_tokens WHERE digest = $1"
        )))
        .bind(digest)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every initial access token, newest first.
    pub async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM registration_tokens ORDER BY created_at DESC, id"
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes an initial access token (the apps registered with it stay);
    /// false when there is no such token or it was revoked already.
    pub async fn revoke_registration_token(
        &self,
        id: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE registration_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let event = Event::new(EventKind::RegistrationTokenRevoked)
            .by(actor)
            .data(serde_json::json!({ "registration_token": id }));
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces an app's registration access token whose digest is `old`
    /// by `new` (RFC 7592 §2.2), with its event; false when `old` is not
    /// the app's current one (another update replaced it first).
    pub async fn replace_registration_access(
        &self,
        client_id: &str,
        old: &str,
        new: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE clients SET registration_access_digest = $3
             WHERE id = $1 AND registration_access_digest = $2",
        )
        .bind(client_id)
        .bind(old)
        .bind(new)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let event = Event::new(EventKind::RegistrationAccessRotated).client(client_id);
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(true)
    }
}
