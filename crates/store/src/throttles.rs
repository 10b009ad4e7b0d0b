//! Failure runs that must hold across nodes: failed sign-ins per username
//! and failed client authentications (and `invalid_grant` answers) per
//! client id. The rules that read them are `healthgate_core::throttle`.
//! One row per subject, keyed by what was presented (a username that has no
//! account is counted like one that has), so a guesser learns nothing.

use std::collections::HashMap;

use healthgate_core::throttle::FailureRun;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store};

/// What a failure run counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleKind {
    /// Failed sign-ins for a username.
    SignIn,
    /// Failed client authentications and `invalid_grant` answers for a
    /// client id.
    Client,
    /// "Forgot password" requests for an address as typed (lowercased),
    /// whether or not an account has it.
    PasswordReset,
    /// Verification links asked for by an account (its id).
    EmailVerification,
}

impl ThrottleKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::Client => "client",
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }
}

/// Subjects bound in one statement (well under SQLite's and PostgreSQL's
/// limits on parameters).
const CHUNK: usize = 500;

fn run_from_row(row: &AnyRow) -> Result<FailureRun> {
    Ok(FailureRun {
        failures: u32::try_from(row.try_get::<i64, _>("failures")?).unwrap_or(u32::MAX),
        first_failure_at: row.try_get("first_failure_at")?,
        last_failure_at: row.try_get("last_failure_at")?,
        blocked_until: row.try_get("blocked_until")?,
    })
}

impl Store {
    /// The failure run of `subject`, if there is one: one primary-key read.
    pub async fn failure_run(
        &self,
        kind: ThrottleKind,
        subject: &str,
    ) -> Result<Option<FailureRun>> {
        let row = sqlx::query(
            "SELECT failures, first_failure_at, last_failure_at, blocked_until
             FROM throttles WHERE kind = $1 AND subject = $2",
        )
        .bind(kind.as_str())
        .bind(subject)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// Counts a failure of `subject` at `now`, in one statement so that
    /// nodes failing at once each count: a run whose last failure is before
    /// `forget_before` starts again at one (its block gone with it).
    /// Returns the run as it is now.
    pub async fn record_failure(
        &self,
        kind: ThrottleKind,
        subject: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<FailureRun> {
        let row = sqlx::query(
            "INSERT INTO throttles (kind, subject, failures, first_failure_at, last_failure_at, blocked_until)
             VALUES ($1, $2, 1, $3, $3, NULL)
             ON CONFLICT (kind, subject) DO UPDATE SET
               failures = CASE WHEN throttles.last_failure_at < $4 THEN 1 ELSE throttles.failures + 1 END,
               first_failure_at = CASE WHEN throttles.last_failure_at < $4 THEN $3 ELSE throttles.first_failure_at END,
               blocked_until = CASE WHEN throttles.last_failure_at < $4 THEN NULL ELSE throttles.blocked_until END,
               last_failure_at = $3
             RETURNING failures, first_failure_at, last_failure_at, blocked_until",
        )
        .bind(kind.as_str())
        .bind(subject)
        .bind(now)
        .bind(forget_before)
        .fetch_one(&self.writer)
        .await?;
        run_from_row(&row)
    }

    /// Refuses `subject` until `until` (epoch seconds).
    pub async fn block(&self, kind: ThrottleKind, subject: &str, until: i64) -> Result<()> {
        sqlx::query("UPDATE throttles SET blocked_until = $3 WHERE kind = $1 AND subject = $2")
            .bind(kind.as_str())
            .bind(subject)
            .bind(until)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Forgets `subject`'s run (a success, or an operator's unlock).
    /// Whether there was one.
    pub async fn clear_failures(&self, kind: ThrottleKind, subject: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM throttles WHERE kind = $1 AND subject = $2")
            .bind(kind.as_str())
            .bind(subject)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every subject of `kind` refused at `now`, with until when.
    pub async fn blocked(&self, kind: ThrottleKind, now: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT subject, blocked_until FROM throttles
             WHERE kind = $1 AND blocked_until > $2 ORDER BY subject",
        )
        .bind(kind.as_str())
        .bind(now)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("subject")?, r.try_get("blocked_until")?)))
            .collect()
    }

    /// Of `subjects`, those of `kind` refused at `now`, with until when: a
    /// page of usernames looked up by primary key, a few hundred per
    /// statement.
    pub async fn blocked_among(
        &self,
        kind: ThrottleKind,
        subjects: &[&str],
        now: i64,
    ) -> Result<HashMap<String, i64>> {
        let mut blocked = HashMap::new();
        for chunk in subjects.chunks(CHUNK) {
            let placeholders = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT subject, blocked_until FROM throttles
                 WHERE kind = $1 AND blocked_until > $2 AND subject IN ({placeholders})"
            ));
            let mut query = sqlx::query(sql).bind(kind.as_str()).bind(now);
            for subject in chunk {
                query = query.bind(*subject);
            }
            for row in query.fetch_all(&self.reader).await? {
                blocked.insert(row.try_get("subject")?, row.try_get("blocked_until")?);
            }
        }
        Ok(blocked)
    }
}
