//! Recovery by email: the single-use links sent by email (verification and
//! password reset, stored as digests), the "forgot password" requests
//! waiting for the mail worker, and the mail outbox the worker delivers
//! from. The rules (lifetimes, who is sent what) are
//! `healthgate_core::recovery`.
//!
//! A link is consumed by one conditional `UPDATE … WHERE consumed_at IS
//! NULL … RETURNING` in the transaction that applies it; zero rows is a
//! replay, an expired link, or one whose address is no longer the
//! account's. The outbox is claimed with a lease (rows another node holds
//! are skipped), and a message's body, which holds a link's secret, is
//! blanked once it is sent or given up.

use healthgate_core::event::EventKind;
use healthgate_core::recovery::{LinkPurpose, MailKind};
use healthgate_core::secret::new_id;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::events::{Event, append};
use crate::grants::revoke_family;
use crate::users::{SELECT, user_from_row};
use crate::{Backend, Result, Store, StoreError};
use healthgate_core::user::User;

/// A link to store: the digest of its secret, never the secret.
#[derive(Debug, Clone, Copy)]
pub struct NewLink<'a> {
    pub digest: &'a str,
    pub purpose: LinkPurpose,
    pub user_id: &'a str,
    /// The address it is sent to: the link works only while the account
    /// has this address.
    pub email: &'a str,
    pub expires_at: i64,
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMail<'a> {
    pub kind: MailKind,
    pub user_id: Option<&'a str>,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    /// When the worker stops trying.
    pub give_up_at: i64,
}

/// A message claimed for sending.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub id: String,
    pub kind: MailKind,
    pub user_id: Option<String>,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
    pub created_at: i64,
    pub give_up_at: i64,
}

impl std::fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body holds a link's secret.
        f.debug_struct("OutgoingMail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A message as the outbox keeps it (for operators and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMail {
    pub id: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub recipient: String,
    pub subject: String,
    /// `None` once sent or given up.
    pub body: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
}

/// A "forgot password" request claimed by the mail worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRequest {
    pub id: String,
    /// As normalised (`core::recovery::normalize_email`).
    pub email: String,
    pub ip: Option<String>,
    pub requested_at: i64,
}

/// A link that still works: whose it is, and the address it was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLink {
    pub user_id: String,
    pub email: String,
    pub expires_at: i64,
}

/// What a password reset by link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordResetDone {
    pub user_id: String,
    pub sessions_ended: u64,
    pub families_revoked: u64,
}

/// What a message's last attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOutcome<'a> {
    Sent,
    /// Failed; tried again at `retry_at`, or given up when `None`.
    Failed {
        error: &'a str,
        retry_at: Option<i64>,
    },
}

/// A link is live if unconsumed, unexpired, and its account still has the
/// address it was sent to (verified, for a reset, and not locked).
const LIVE_LINK: &str = "consumed_at IS NULL AND expires_at > $1 AND purpose = $3
    AND EXISTS (SELECT 1 FROM users u WHERE u.id = email_links.user_id AND u.email = email_links.email
                AND (email_links.purpose <> 'reset_password'
                     OR (u.email_verified_at IS NOT NULL AND u.locked_at IS NULL)))";

const MAIL_COLUMNS: &str = "id, kind, user_id, recipient, subject, body, status, attempts, next_attempt_at, sent_at, last_error";

fn stored_mail(r: &AnyRow) -> Result<StoredMail> {
    Ok(StoredMail {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        user_id: r.try_get("user_id")?,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        sent_at: r.try_get("sent_at")?,
        last_error: r.try_get("last_error")?,
    })
}

pub(crate) async fn insert_link_in(
    conn: &mut sqlx::AnyConnection,
    link: &NewLink<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO email_links (digest, purpose, user_id, email, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(link.digest)
    .bind(link.purpose.as_str())
    .bind(link.user_id)
    .bind(link.email)
    .bind(now)
    .bind(link.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues `mail` on `conn`; returns its id.
pub(crate) async fn insert_mail_in(
    conn: &mut sqlx::AnyConnection,
    mail: &NewMail<'_>,
    now: i64,
) -> Result<String> {
    let id = new_id("mail");
    sqlx::query(
        "INSERT INTO mail_outbox (id, kind, user_id, recipient, subject, body, status, attempts,
                                  created_at, next_attempt_at, give_up_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $8)",
    )
    .bind(&id)
    .bind(mail.kind.as_str())
    .bind(mail.user_id)
    .bind(mail.recipient)
    .bind(mail.subject)
    .bind(mail.body)
    .bind(now)
    .bind(mail.give_up_at)
    .execute(conn)
    .await?;
    Ok(id)
}

impl Store {
    /// Queues a message, with the event that records why, in one
    /// transaction.
    pub async fn queue_mail(
        &self,
        mail: &NewMail<'_>,
        event: &Event<'_>,
        now: i64,
    ) -> Result<String> {
        let mut tx = self.writer.begin().await?;
        let id = insert_mail_in(&mut tx, mail, now).await?;
        append(&mut tx, now, event).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Stores a link and queues the message that carries it, with its
    /// event, in one transaction.
    pub async fn queue_link(
        &self,
        link: &NewLink<'_>,
        mail: &NewMail<'_>,
        event: &Event<'_>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        insert_link_in(&mut tx, link, now).await?;
        insert_mail_in(&mut tx, mail, now).await?;
        append(&mut tx, now, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The link with `digest`, if it still works for `purpose` at `now`
    /// (nothing is consumed: a page shows its form first).
    pub async fn live_link(
        &self,
        digest: &str,
        purpose: LinkPurpose,
        now: i64,
    ) -> Result<Option<LiveLink>> {
        let sql = format!(
            "SELECT user_id, email, expires_at FROM email_links WHERE digest = $2 AND {LIVE_LINK}"
        );
        let row: Option<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(digest)
            .bind(purpose.as_str())
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|(user_id, email, expires_at)| LiveLink {
            user_id,
            email,
            expires_at,
        }))
    }

    /// Consumes a verification link and marks the address it was sent to
    /// verified, in one transaction with `email.verified`; every other
    /// verification link of the account dies with it. `None` (nothing
    /// changed) if the link is unknown, used, expired, or the account's
    /// address changed since.
    pub async fn verify_email(
        &self,
        digest: &str,
        ip: Option<&str>,
        now: i64,
    ) -> Result<Option<LiveLink>> {
        let mut tx = self.writer.begin().await?;
        let sql = format!(
            "UPDATE email_links SET consumed_at = $1 WHERE digest = $2 AND {LIVE_LINK}
             RETURNING user_id, email, expires_at"
        );
        let row: Option<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(digest)
            .bind(LinkPurpose::VerifyEmail.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((user_id, email, expires_at)) = row else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE users SET email_verified_at = $1, updated_at = $1 WHERE id = $2 AND email = $3",
        )
        .bind(now)
        .bind(&user_id)
        .bind(&email)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE email_links SET consumed_at = $1
             WHERE user_id = $2 AND purpose = $3 AND consumed_at IS NULL",
        )
        .bind(now)
        .bind(&user_id)
        .bind(LinkPurpose::VerifyEmail.as_str())
        .execute(&mut *tx)
        .await?;
        let event = Event::new(EventKind::EmailVerified)
            .actor(Some(&user_id))
            .subject(&user_id)
            .ip(ip);
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(Some(LiveLink {
            user_id,
            email,
            expires_at,
        }))
    }

    /// A new password by a reset link, in one transaction: the link is
    /// consumed (with every other reset link of the account), the password
    /// set (no longer temporary), every session of the person ended, every
    /// live token family of theirs revoked and their unredeemed codes
    /// expired, the lock on their username after failed sign-ins lifted
    /// (they proved they hold the address), `password.reset` appended, and
    /// `notice` queued. `None` (nothing changed) if the link does not work.
    pub async fn reset_password_by_link(
        &self,
        digest: &str,
        new_hash: &str,
        notice: Option<&NewMail<'_>>,
        ip: Option<&str>,
        now: i64,
    ) -> Result<Option<PasswordResetDone>> {
        let mut tx = self.writer.begin().await?;
        let sql = format!(
            "UPDATE email_links SET consumed_at = $1 WHERE digest = $2 AND {LIVE_LINK}
             RETURNING user_id"
        );
        let user_id: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(digest)
            .bind(LinkPurpose::ResetPassword.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE users SET password_hash = $1, password_reset_at = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(new_hash)
        .bind(now)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE email_links SET consumed_at = $1
             WHERE user_id = $2 AND purpose = $3 AND consumed_at IS NULL",
        )
        .bind(now)
        .bind(&user_id)
        .bind(LinkPurpose::ResetPassword.as_str())
        .execute(&mut *tx)
        .await?;
        let sessions_ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(&user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Codes first: a redemption racing this transaction either finished
        // before (its family is found below) or finds its code expired.
        sqlx::query(
            "UPDATE authorization_codes SET expires_at = $1
             WHERE user_id = $2 AND consumed_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
        let families: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM token_families WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
        )
        .bind(&user_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut families_revoked = 0;
        for family in &families {
            if revoke_family(&mut tx, family, "password reset by email link", now).await? {
                families_revoked += 1;
            }
        }
        sqlx::query(
            "DELETE FROM throttles WHERE kind = 'sign_in'
               AND subject = (SELECT username FROM users WHERE id = $1)",
        )
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
        let event = Event::new(EventKind::PasswordResetByLink)
            .actor(Some(&user_id))
            .subject(&user_id)
            .ip(ip)
            .data(serde_json::json!({
                "sessions_ended": sessions_ended,
                "families_revoked": families_revoked,
            }));
        append(&mut tx, now, &event).await?;
        if let Some(mail) = notice {
            insert_mail_in(&mut tx, mail, now).await?;
        }
        tx.commit().await?;
        Ok(Some(PasswordResetDone {
            user_id,
            sessions_ended,
            families_revoked,
        }))
    }

    /// Queues a "forgot password" request as typed (normalised), for the
    /// mail worker: the same one insert whether or not an account has the
    /// address.
    pub async fn queue_reset_request(&self, email: &str, ip: Option<&str>, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO password_reset_requests (id, email, ip, requested_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(new_id("rst"))
        .bind(email)
        .bind(ip)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Claims up to `limit` reset requests for `lease` seconds (rows
    /// another node holds are skipped; a request whose node died is
    /// claimed again once its lease runs out).
    pub async fn claim_reset_requests(
        &self,
        now: i64,
        limit: i64,
        lease: i64,
    ) -> Result<Vec<ResetRequest>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE password_reset_requests SET locked_until = $1 + $3
             WHERE id IN (SELECT id FROM password_reset_requests
                          WHERE locked_until IS NULL OR locked_until <= $1
                          ORDER BY requested_at LIMIT $2{lock})
             RETURNING id, email, ip, requested_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .bind(lease)
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ResetRequest {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    ip: r.try_get("ip")?,
                    requested_at: r.try_get("requested_at")?,
                })
            })
            .collect()
    }

    /// Every account whose address is `email` (compared without regard to
    /// case; `email` lowercased), verified or not: the caller decides who
    /// may be sent what. At most 20.
    pub async fn users_with_email(&self, email: &str) -> Result<Vec<User>> {
        let sql = format!("{SELECT} WHERE LOWER(email) = $1 ORDER BY created_at, id LIMIT 20");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Finishes a claimed reset request in one transaction: deletes it,
    /// stores each link with its message, and appends `events`. Returns
    /// false (and changes nothing) if the request is gone: another node
    /// finished it after this one's lease ran out.
    pub async fn finish_reset_request(
        &self,
        request_id: &str,
        links: &[(NewLink<'_>, NewMail<'_>)],
        events: &[Event<'_>],
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("DELETE FROM password_reset_requests WHERE id = $1")
            .bind(request_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        for (link, mail) in links {
            insert_link_in(&mut tx, link, now).await?;
            insert_mail_in(&mut tx, mail, now).await?;
        }
        for event in events {
            append(&mut tx, now, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Claims up to `limit` due messages for `lease` seconds.
    pub async fn claim_mail(&self, now: i64, limit: i64, lease: i64) -> Result<Vec<OutgoingMail>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE mail_outbox SET locked_until = $1 + $3
             WHERE id IN (SELECT id FROM mail_outbox
                          WHERE status = 'pending' AND next_attempt_at <= $1
                            AND (locked_until IS NULL OR locked_until <= $1)
                          ORDER BY next_attempt_at LIMIT $2{lock})
             RETURNING id, kind, user_id, recipient, subject, body, attempts, created_at, give_up_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .bind(lease)
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OutgoingMail {
                    id: r.try_get("id")?,
                    kind: r
                        .try_get::<String, _>("kind")?
                        .parse()
                        .map_err(StoreError::Corrupt)?,
                    user_id: r.try_get("user_id")?,
                    recipient: r.try_get("recipient")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get::<Option<String>, _>("body")?.unwrap_or_default(),
                    attempts: r.try_get("attempts")?,
                    created_at: r.try_get("created_at")?,
                    give_up_at: r.try_get("give_up_at")?,
                })
            })
            .collect()
    }

    /// Records an attempt at `mail`: sent (the body blanked,
    /// `email.delivered`), retried later, or given up (the body blanked,
    /// `email.delivery_failed` with the error). Returns false if the
    /// message was no longer pending (nothing recorded).
    pub async fn record_mail_attempt(
        &self,
        mail: &OutgoingMail,
        outcome: MailOutcome<'_>,
        now: i64,
    ) -> Result<bool> {
        let attempts = mail.attempts + 1;
        let mut tx = self.writer.begin().await?;
        let (done, event) = match outcome {
            MailOutcome::Sent => (
                sqlx::query(
                    "UPDATE mail_outbox SET status = 'sent', body = NULL, attempts = $1, sent_at = $2,
                            locked_until = NULL, last_error = NULL
                     WHERE id = $3 AND status = 'pending'",
                )
                .bind(attempts)
                .bind(now)
                .bind(&mail.id)
                .execute(&mut *tx)
                .await?,
                Some(
                    Event::new(EventKind::EmailDelivered)
                        .data(serde_json::json!({ "mail": mail.id, "kind": mail.kind.as_str(), "attempts": attempts })),
                ),
            ),
            MailOutcome::Failed {
                error,
                retry_at: Some(at),
            } => (
                sqlx::query(
                    "UPDATE mail_outbox SET attempts = $1, next_attempt_at = $2, locked_until = NULL,
                            last_error = $3
                     WHERE id = $4 AND status = 'pending'",
                )
                .bind(attempts)
                .bind(at)
                .bind(error)
                .bind(&mail.id)
                .execute(&mut *tx)
                .await?,
                None,
            ),
            MailOutcome::Failed {
                error,
                retry_at: None,
            } => (
                sqlx::query(
                    "UPDATE mail_outbox SET status = 'failed', body = NULL, attempts = $1,
                            locked_until = NULL, last_error = $2
                     WHERE id = $3 AND status = 'pending'",
                )
                .bind(attempts)
                .bind(error)
                .bind(&mail.id)
                .execute(&mut *tx)
                .await?,
                Some(
                    Event::new(EventKind::EmailDeliveryFailed).failed().data(serde_json::json!({
                        "mail": mail.id, "kind": mail.kind.as_str(), "attempts": attempts, "error": error,
                    })),
                ),
            ),
        };
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(mut event) = event {
            if let Some(user) = &mail.user_id {
                event = event.subject(user);
            }
            append(&mut tx, now, &event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The outbox, newest first (at most `limit`), for operators and tests.
    pub async fn outbox(&self, limit: i64) -> Result<Vec<StoredMail>> {
        let sql =
            format!("SELECT {MAIL_COLUMNS} FROM mail_outbox ORDER BY created_at DESC, id LIMIT $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(stored_mail).collect()
    }
}
