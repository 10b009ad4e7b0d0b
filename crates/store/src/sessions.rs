//! Browser sessions. The cookie holds a random session secret; the table holds
//! its digest, the CSRF token bound to it and, once logged in, the user.

use sqlx::Row;

use crate::{Result, Store};

#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub id_digest: String,
    pub user_id: Option<String>,
    pub csrf_token: String,
    pub auth_time: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The browser's `User-Agent` and address when the session began, shown
    /// on the account's sessions page.
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The session with this digest, if it exists and has not expired.
    pub async fn session(&self, id_digest: &str, now: i64) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT id_digest, user_id, csrf_token, auth_time, created_at, expires_at, user_agent, ip
             FROM sessions WHERE id_digest = $1 AND expires_at > $2",
        )
        .bind(id_digest)
        .bind(now)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(Session {
                id_digest: r.try_get("id_digest")?,
                user_id: r.try_get("user_id")?,
                csrf_token: r.try_get("csrf_token")?,
                auth_time: r.try_get("auth_time")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
                user_agent: r.try_get("user_agent")?,
                ip: r.try_get("ip")?,
            })
        })
        .transpose()
    }

    /// Replaces one session by another in one transaction (a login rotates
    /// the session id, so a fixed pre-login id is worthless afterwards).
    pub async fn replace_session(&self, old_digest: Option<&str>, new: &Session) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        if let Some(old) = old_digest {
            sqlx::query("DELETE FROM sessions WHERE id_digest = $1")
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO sessions (id_digest, user_id, csrf_token, auth_time, created_at, expires_at, user_agent, ip)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.id_digest)
        .bind(&new.user_id)
        .bind(&new.csrf_token)
        .bind(new.auth_time)
        .bind(new.created_at)
        .bind(new.expires_at)
        .bind(&new.user_agent)
        .bind(&new.ip)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_session(&self, id_digest: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_digest = $1")
            .bind(id_digest)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
