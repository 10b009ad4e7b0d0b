//! Second factors: a person's authenticator apps and passkeys, their
//! recovery codes, and the one-time use of each. A TOTP step is accepted
//! once (a conditional `UPDATE` on the factor's last step) and a recovery
//! code is used once (a conditional `UPDATE` on the code): a replay finds
//! zero rows, on whichever node it arrives.

use healthgate_core::event::EventKind;
use healthgate_core::mfa::FactorKind;
use healthgate_core::secret::new_id;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::events::{Actor, Event, append};
use crate::{Result, Store, StoreError};

/// A second factor as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Factor {
    pub id: String,
    pub user_id: String,
    pub kind: FactorKind,
    /// What the person called it ("Phone", "YubiKey").
    pub label: String,
    /// A TOTP secret sealed by the caller, or a passkey's credential (JSON).
    pub secret: String,
    /// A passkey's credential id (base64url); `None` for TOTP.
    pub credential_id: Option<String>,
    pub created_at: i64,
    /// `None` while the person has not yet proven the factor works.
    pub confirmed_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl std::fmt::Debug for Factor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factor")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("label", &self.label)
            .field("confirmed_at", &self.confirmed_at)
            .finish_non_exhaustive()
    }
}

impl Factor {
    /// A new, unconfirmed factor of `user_id`.
    pub fn pending(
        user_id: &str,
        kind: FactorKind,
        label: &str,
        secret: String,
        credential_id: Option<String>,
        now: i64,
    ) -> Self {
        Self {
            id: new_id("mfa"),
            user_id: user_id.to_owned(),
            kind,
            label: label.to_owned(),
            secret,
            credential_id,
            created_at: now,
            confirmed_at: None,
            last_used_at: None,
        }
    }
}

const COLUMNS: &str =
    "id, user_id, kind, label, secret, credential_id, created_at, confirmed_at, last_used_at";

fn factor_from_row(r: &AnyRow) -> Result<Factor> {
    Ok(Factor {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        kind: r
            .try_get::<String, _>("kind")?
            .parse()
            .map_err(StoreError::Corrupt)?,
        label: r.try_get("label")?,
        secret: r.try_get("secret")?,
        credential_id: r.try_get("credential_id")?,
        created_at: r.try_get("created_at")?,
        confirmed_at: r.try_get("confirmed_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

fn factor_event<'a>(kind: EventKind, f: &'a Factor, actor: Actor<'a>) -> Event<'a> {
    Event::new(kind)
        .by(actor)
        .subject(&f.user_id)
        .data(serde_json::json!({ "kind": f.kind.as_str(), "label": f.label, "factor": f.id }))
}

/// Replaces every recovery code of `user_id` with `digests` on `conn`.
async fn replace_codes_in(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    digests: &[String],
    now: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for d in digests {
        sqlx::query("INSERT INTO recovery_codes (digest, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(d)
            .bind(user_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Every factor of a person, confirmed or not, the oldest first.
    pub async fn factors_of_user(&self, user_id: &str) -> Result<Vec<Factor>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM mfa_factors WHERE user_id = $1 ORDER BY created_at, id"
        ));
        let rows = sqlx::query(sql)
            .bind(user_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(factor_from_row).collect()
    }

    /// The confirmed passkey with this credential id, whoever's it is.
    pub async fn passkey_by_credential(&self, credential_id: &str) -> Result<Option<Factor>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM mfa_factors WHERE credential_id = $1 AND confirmed_at IS NOT NULL"
        ));
        let row = sqlx::query(sql)
            .bind(credential_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    /// Which of `user_ids` have a confirmed second factor (one read for a
    /// page of accounts).
    pub async fn with_second_factor(
        &self,
        user_ids: &[&str],
    ) -> Result<std::collections::HashSet<String>> {
        let mut found = std::collections::HashSet::new();
        for chunk in user_ids.chunks(100) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT DISTINCT user_id FROM mfa_factors WHERE confirmed_at IS NOT NULL AND user_id IN ({})",
                marks.join(", ")
            ));
            let mut q = sqlx::query_scalar::<_, String>(sql);
            for id in chunk {
                q = q.bind(*id);
            }
            found.extend(q.fetch_all(&self.reader).await?);
        }
        Ok(found)
    }

    /// Whether a person has a confirmed second factor.
    pub async fn has_second_factor(&self, user_id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL",
        )
        .bind(user_id)
        .fetch_one(&self.reader)
        .await?;
        Ok(n > 0)
    }

    /// Stores a factor still to be confirmed, replacing any other
    /// unconfirmed one of the same kind (an enrolment started again).
    pub async fn add_pending_factor(&self, f: &Factor) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "DELETE FROM mfa_factors WHERE user_id = $1 AND kind = $2 AND confirmed_at IS NULL",
        )
        .bind(&f.user_id)
        .bind(f.kind.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO mfa_factors (id, user_id, kind, label, secret, credential_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&f.id)
        .bind(&f.user_id)
        .bind(f.kind.as_str())
        .bind(&f.label)
        .bind(&f.secret)
        .bind(&f.credential_id)
        .bind(f.created_at)
        .execute(&mut *tx)
        .await
        .map_err(crate::conflict("credential"))?;
        tx.commit().await?;
        Ok(())
    }

    /// Confirms a pending factor of `user_id` (the person proved it works;
    /// for TOTP, `step` is the step of the code they typed, used up here),
    /// and, when given, installs a first set of recovery codes. Audited as
    /// `mfa.enrolled`. `false` when there was no such pending factor.
    pub async fn confirm_factor(
        &self,
        user_id: &str,
        factor_id: &str,
        step: Option<i64>,
        recovery_digests: Option<&[String]>,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE mfa_factors SET confirmed_at = $1, last_step = $2, last_used_at = $1
             WHERE id = $3 AND user_id = $4 AND confirmed_at IS NULL RETURNING {COLUMNS}"
        ));
        let row = sqlx::query(sql)
            .bind(now)
            .bind(step)
            .bind(factor_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let factor = factor_from_row(&row)?;
        if let Some(digests) = recovery_digests {
            replace_codes_in(&mut tx, user_id, digests, now).await?;
        }
        append(
            &mut tx,
            now,
            &factor_event(EventKind::MfaEnrolled, &factor, actor),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Uses TOTP `step` of a confirmed factor: `true` once, and never again
    /// for that step or an earlier one (a code cannot be replayed, not even
    /// within its window).
    pub async fn use_totp_step(&self, factor_id: &str, step: i64, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE mfa_factors SET last_step = $1, last_used_at = $2
             WHERE id = $3 AND kind = 'totp' AND confirmed_at IS NOT NULL
               AND (last_step IS NULL OR last_step < $1)",
        )
        .bind(step)
        .bind(now)
        .bind(factor_id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Updates a passkey's stored credential after a sign-in (its counter
    /// and backup state move on).
    pub async fn use_passkey(&self, factor_id: &str, credential: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE mfa_factors SET secret = $1, last_used_at = $2
             WHERE id = $3 AND kind = 'passkey' AND confirmed_at IS NOT NULL",
        )
        .bind(credential)
        .bind(now)
        .bind(factor_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Uses one recovery code of `user_id` by its digest: `Some(left)` once
    /// (with `mfa.recovery_code_used`), `None` for an unknown or used code.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        digest: &str,
        ip: Option<&str>,
        now: i64,
    ) -> Result<Option<i64>> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE digest = $2 AND user_id = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(digest)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        let event = Event::new(EventKind::RecoveryCodeUsed)
            .actor(Some(user_id))
            .subject(user_id)
            .ip(ip)
            .data(serde_json::json!({ "left": left }));
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(Some(left))
    }

    /// How many unused recovery codes a person has.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(&self.reader)
        .await?)
    }

    /// Gives a person a fresh set of recovery codes; the old ones stop
    /// working. Audited as `mfa.recovery_codes_replaced`.
    pub async fn replace_recovery_codes(
        &self,
        user_id: &str,
        digests: &[String],
        actor: Actor<'_>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        replace_codes_in(&mut tx, user_id, digests, now).await?;
        let event = Event::new(EventKind::RecoveryCodesReplaced)
            .by(actor)
            .subject(user_id);
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes one confirmed factor of `user_id` (`mfa.removed`); with the
    /// last one gone, the recovery codes go too (they stand in for a factor
    /// there no longer is). `false` when there was no such factor.
    pub async fn remove_factor(
        &self,
        user_id: &str,
        factor_id: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "DELETE FROM mfa_factors WHERE id = $1 AND user_id = $2 AND confirmed_at IS NOT NULL
             RETURNING {COLUMNS}"
        ));
        let row = sqlx::query(sql)
            .bind(factor_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let factor = factor_from_row(&row)?;
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        if left == 0 {
            replace_codes_in(&mut tx, user_id, &[], now).await?;
        }
        append(
            &mut tx,
            now,
            &factor_event(EventKind::MfaRemoved, &factor, actor),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// An operator's reset: every factor and recovery code of a person
    /// goes, and every session of theirs ends (so a stolen session made
    /// with a lost factor does not outlive it). Audited as `mfa.reset`.
    /// Returns how many confirmed factors there were. `reason` (why the
    /// operator did it) goes into the event.
    pub async fn reset_factors(
        &self,
        user_id: &str,
        reason: Option<&str>,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<i64> {
        let mut tx = self.writer.begin().await?;
        let confirmed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        replace_codes_in(&mut tx, user_id, &[], now).await?;
        crate::users::end_sessions(&mut tx, user_id).await?;
        let event = Event::new(EventKind::MfaReset)
            .by(actor)
            .subject(user_id)
            .data(serde_json::json!({ "factors": confirmed, "reason": reason }));
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(confirmed)
    }
}
