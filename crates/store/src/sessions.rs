//! Browser sessions. The cookie holds a random session secret; the table holds
//! its digest, the CSRF token bound to it and, once logged in, the user.
//! A person lists and ends their own sessions from their account page; every
//! statement that does so names the person in its `WHERE`, so no one can end
//! another person's session.

use healthgate_core::event::EventKind;
use healthgate_core::mfa::Amr;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::events::{Event, append};
use crate::{Result, Store};

const COLUMNS: &str =
    "id_digest, user_id, csrf_token, auth_time, created_at, expires_at, user_agent, ip,
     pending_user_id, amr, mfa_at";

fn session_from_row(r: &AnyRow) -> Result<Session> {
    Ok(Session {
        id_digest: r.try_get("id_digest")?,
        user_id: r.try_get("user_id")?,
        csrf_token: r.try_get("csrf_token")?,
        auth_time: r.try_get("auth_time")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        user_agent: r.try_get("user_agent")?,
        ip: r.try_get("ip")?,
        pending_user_id: r.try_get("pending_user_id")?,
        amr: Amr::parse(
            r.try_get::<Option<String>, _>("amr")?
                .as_deref()
                .unwrap_or(""),
        ),
        mfa_at: r.try_get("mfa_at")?,
    })
}

/// Inserts a session on `conn` (a transaction, normally).
pub(crate) async fn insert_session_in(conn: &mut sqlx::AnyConnection, s: &Session) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id_digest, user_id, csrf_token, auth_time, created_at, expires_at, user_agent, ip,
                               pending_user_id, amr, mfa_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&s.id_digest)
    .bind(&s.user_id)
    .bind(&s.csrf_token)
    .bind(s.auth_time)
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(&s.user_agent)
    .bind(&s.ip)
    .bind(&s.pending_user_id)
    .bind((!s.amr.is_empty()).then(|| s.amr.to_string()))
    .bind(s.mfa_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which of a person's sessions a sign-out ended, as its event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignOut {
    /// One session, named by its digest.
    One,
    /// Every session but the one kept.
    EverywhereElse,
    /// Every session, the browser that asked included.
    Everywhere,
}

impl SignOut {
    fn as_str(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::EverywhereElse => "everywhere_else",
            Self::Everywhere => "everywhere",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Default)]
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
    /// Between the password and the second factor: the person who gave the
    /// right password (`user_id` is still `None`: nobody is signed in, and
    /// `auth_time` is when the password was given).
    pub pending_user_id: Option<String>,
    /// What the sign-in used (RFC 8176), and when a second factor was last
    /// given (a step-up renews it).
    pub amr: Amr,
    pub mfa_at: Option<i64>,
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
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sessions WHERE id_digest = $1 AND expires_at > $2"
        ));
        let row = sqlx::query(sql)
            .bind(id_digest)
            .bind(now)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Every live session of a person, the newest first.
    pub async fn sessions_of_user(&self, user_id: &str, now: i64) -> Result<Vec<Session>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sessions WHERE user_id = $1 AND expires_at > $2
             ORDER BY created_at DESC, id_digest"
        ));
        let rows = sqlx::query(sql)
            .bind(user_id)
            .bind(now)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Ends one session of `user_id`, with its `session.ended` event. A
    /// digest that is not one of that person's sessions ends nothing:
    /// `false`.
    pub async fn end_session_of_user(
        &self,
        user_id: &str,
        id_digest: &str,
        ip: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("DELETE FROM sessions WHERE id_digest = $1 AND user_id = $2")
            .bind(id_digest)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let ended = done.rows_affected() == 1;
        if ended {
            append(&mut tx, now, &sign_out_event(user_id, SignOut::One, 1, ip)).await?;
        }
        tx.commit().await?;
        Ok(ended)
    }

    /// Ends every live session of `user_id` except `keep` (every one when
    /// `keep` is `None`), with one `session.ended` event saying how many.
    /// Returns how many ended.
    pub async fn end_sessions_of_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
        ip: Option<&str>,
        now: i64,
    ) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        // No digest is empty: with nothing kept, every session goes. Expired
        // ones are left to the purge, so the count is of live sessions.
        let done = sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND id_digest <> $2 AND expires_at > $3",
        )
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let which = match keep {
            Some(_) => SignOut::EverywhereElse,
            None => SignOut::Everywhere,
        };
        let ended = done.rows_affected();
        append(&mut tx, now, &sign_out_event(user_id, which, ended, ip)).await?;
        tx.commit().await?;
        Ok(ended)
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
        insert_session_in(&mut tx, new).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Finishes a sign-in that waited for a second factor: the pending
    /// session of `user_id` is replaced by `new`, once. `false` when it is
    /// gone (finished by another request, or expired and purged).
    pub async fn complete_second_step(
        &self,
        pending_digest: &str,
        user_id: &str,
        new: &Session,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "DELETE FROM sessions WHERE id_digest = $1 AND pending_user_id = $2 AND user_id IS NULL",
        )
        .bind(pending_digest)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_session_in(&mut tx, new).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a second factor given again in a signed-in session (a
    /// step-up): what the sign-in has now used, and when.
    pub async fn step_up_session(&self, id_digest: &str, amr: &Amr, now: i64) -> Result<()> {
        sqlx::query("UPDATE sessions SET amr = $1, mfa_at = $2 WHERE id_digest = $3")
            .bind(amr.to_string())
            .bind(now)
            .bind(id_digest)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Keeps the state of a WebAuthn ceremony begun in this session (one at
    /// a time: a new one replaces the last).
    pub async fn set_ceremony(&self, id_digest: &str, state: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET ceremony = $1 WHERE id_digest = $2")
            .bind(state)
            .bind(id_digest)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Takes the session's WebAuthn ceremony state, once: a second finish
    /// of the same ceremony finds nothing.
    pub async fn take_ceremony(&self, id_digest: &str) -> Result<Option<String>> {
        let state: Option<Option<String>> =
            sqlx::query_scalar("SELECT ceremony FROM sessions WHERE id_digest = $1")
                .bind(id_digest)
                .fetch_optional(&self.writer)
                .await?;
        let Some(state) = state.flatten() else {
            return Ok(None);
        };
        let done = sqlx::query(
            "UPDATE sessions SET ceremony = NULL WHERE id_digest = $1 AND ceremony = $2",
        )
        .bind(id_digest)
        .bind(&state)
        .execute(&self.writer)
        .await?;
        Ok((done.rows_affected() == 1).then_some(state))
    }

    pub async fn delete_session(&self, id_digest: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_digest = $1")
            .bind(id_digest)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

fn sign_out_event<'a>(
    user_id: &'a str,
    which: SignOut,
    ended: u64,
    ip: Option<&'a str>,
) -> Event<'a> {
    Event::new(EventKind::SessionEnded)
        .actor(Some(user_id))
        .subject(user_id)
        .ip(ip)
        .data(serde_json::json!({ "which": which.as_str(), "ended": ended }))
}
