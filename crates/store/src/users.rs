//! User accounts.

use healthgate_core::user::{User, UserType};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::events::{Actor, Event, append};
use crate::{Result, Session, Store, StoreError, conflict};
use healthgate_core::event::EventKind;

/// What an unlock lifted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unlocked {
    /// The lock an operator put on the account (`users.locked_at`).
    pub operator_lock: bool,
    /// The lock on its username after too many failed sign-ins.
    pub failed_sign_ins: bool,
}

impl Unlocked {
    /// Whether anything was lifted.
    pub fn any(self) -> bool {
        self.operator_lock || self.failed_sign_ins
    }
}

/// Inserts a user on `conn`, with its event naming who created it.
pub(crate) async fn insert_user_in(
    conn: &mut sqlx::AnyConnection,
    u: &User,
    actor: Actor<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, username, name, email, user_type, password_hash, created_at, updated_at, locked_at, provisioned_by,
                            operator, fhir_user)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11)",
    )
    .bind(&u.id)
    .bind(&u.username)
    .bind(&u.name)
    .bind(&u.email)
    .bind(u.user_type.as_str())
    .bind(&u.password_hash)
    .bind(u.created_at)
    .bind(u.locked_at)
    .bind(&u.provisioned_by)
    .bind(i64::from(u.operator))
    .bind(&u.fhir_user)
    .execute(&mut *conn)
    .await
    .map_err(conflict("username"))?;
    let mut event = Event::new(EventKind::UserCreated).by(actor).subject(&u.id);
    if let Some(c) = &u.provisioned_by {
        event = event.client(c);
    }
    append(conn, u.created_at, &event).await?;
    Ok(())
}

/// Ends every browser session of a user.
pub(crate) async fn end_sessions(conn: &mut sqlx::AnyConnection, user_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) fn user_from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        user_type: row
            .try_get::<String, _>("user_type")?
            .parse::<UserType>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
        locked_at: row.try_get("locked_at")?,
        provisioned_by: row.try_get("provisioned_by")?,
        operator: row.try_get::<i64, _>("operator")? != 0,
        password_reset_at: row.try_get("password_reset_at")?,
        email_verified_at: row.try_get("email_verified_at")?,
        fhir_user: row.try_get("fhir_user")?,
    })
}

pub(crate) const SELECT: &str = "SELECT id, username, name, email, user_type, password_hash, created_at, locked_at, provisioned_by, operator, password_reset_at, email_verified_at, fhir_user FROM users";

impl Store {
    /// Inserts a user; [`StoreError::Conflict`] if the username is taken.
    pub async fn insert_user(&self, u: &User) -> Result<()> {
        self.insert_user_by(u, Actor::system()).await
    }

    /// Inserts a user; `user.created` names who created the account (the
    /// person signing up for themselves, or an operator).
    pub async fn insert_user_by(&self, u: &User, actor: Actor<'_>) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        insert_user_in(&mut tx, u, actor).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an account with everything issued to it (by cascade).
    pub async fn delete_user(
        &self,
        user_id: &str,
        actor_client: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            let mut event = Event::new(EventKind::UserDeleted).subject(user_id);
            if let Some(c) = actor_client {
                event = event.client(c);
            }
            append(&mut tx, now, &event).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Changes a user's email (`None` clears it). A different address is
    /// unverified until a link sent to it is followed.
    pub async fn set_email(&self, user_id: &str, email: Option<&str>, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET email_verified_at = CASE WHEN email = $1 THEN email_verified_at ELSE NULL END,
                    email = $1, updated_at = $2
             WHERE id = $3",
        )
            .bind(email)
            .bind(now)
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `client_id` may see `user_id`: it created the account, or the
    /// person authorized it.
    pub async fn partner_knows_user(&self, client_id: &str, user_id: &str) -> Result<bool> {
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM users WHERE id = $1 AND provisioned_by = $2
             UNION SELECT 1 FROM consents WHERE user_id = $1 AND client_id = $2
             UNION SELECT 1 FROM token_families WHERE user_id = $1 AND client_id = $2
             LIMIT 1",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(known.is_some())
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        let sql = sqlx::AssertSqlSafe(format!("{SELECT} WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let sql = sqlx::AssertSqlSafe(format!("{SELECT} WHERE username = $1"));
        let row = sqlx::query(sql)
            .bind(username)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Sets a new password hash and ends every session of the user, since a
    /// password change must log out whoever knew the old one.
    pub async fn set_password(&self, user_id: &str, password_hash: &str, now: i64) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done =
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(password_hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        end_sessions(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets a person's display name and email (`None` clears either; a
    /// different address is unverified until its link is followed), with
    /// a `user.updated` event naming the fields that changed (never their
    /// values). Returns those fields; none when nothing changed or there is
    /// no such person.
    pub async fn update_profile(
        &self,
        user_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        ip: Option<&str>,
        now: i64,
    ) -> Result<Vec<&'static str>> {
        let mut tx = self.writer.begin().await?;
        let current: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT name, email FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((old_name, old_email)) = current else {
            return Ok(Vec::new());
        };
        let mut changed = Vec::new();
        if old_name.as_deref() != name {
            changed.push("name");
        }
        if old_email.as_deref() != email {
            changed.push("email");
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        // A different address is unverified until a link sent to it is
        // followed.
        sqlx::query(
            "UPDATE users SET email_verified_at = CASE WHEN email = $2 THEN email_verified_at ELSE NULL END,
                    name = $1, email = $2, updated_at = $3
             WHERE id = $4",
        )
        .bind(name)
        .bind(email)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        let event = Event::new(EventKind::UserUpdated)
            .actor(Some(user_id))
            .subject(user_id)
            .ip(ip)
            .data(serde_json::json!({ "changed": changed }));
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// A person changes their own password: the new hash is set only if the
    /// stored one is still `old_hash` (two changes racing cannot both win),
    /// a temporary password stops being one (`password_reset_at` cleared),
    /// every session of theirs ends, `fresh` starts in its place for the
    /// browser that asked, and `user.password_changed` is appended, all in
    /// one transaction. `false` (and nothing changed) if the stored hash
    /// moved on meanwhile.
    pub async fn change_password(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
        fresh: &Session,
        ip: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, password_reset_at = NULL, updated_at = $2
             WHERE id = $3 AND password_hash = $4",
        )
        .bind(new_hash)
        .bind(now)
        .bind(user_id)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        crate::sessions::insert_session_in(&mut tx, fresh).await?;
        let event = Event::new(EventKind::PasswordChanged)
            .actor(Some(user_id))
            .subject(user_id)
            .ip(ip)
            // The browser that asked keeps a (fresh) session.
            .data(serde_json::json!({ "other_sessions_ended": ended.saturating_sub(1) }));
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Locks an account: it can no longer log in, its sessions end, and its
    /// grants issue no new tokens.
    pub async fn lock_user(&self, user_id: &str, now: i64) -> Result<bool> {
        self.lock_user_by(user_id, Actor::system(), now).await
    }

    /// Locks an account (see [`Store::lock_user`]) on behalf of `actor`.
    /// Returns whether it was unlocked before; the sessions end either way,
    /// and `user.locked` is written only when the account changed.
    pub async fn lock_user_by(&self, user_id: &str, actor: Actor<'_>, now: i64) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET locked_at = $1, updated_at = $1 WHERE id = $2 AND locked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        end_sessions(&mut tx, user_id).await?;
        if done.rows_affected() == 1 {
            append(
                &mut tx,
                now,
                &Event::new(EventKind::UserLocked).by(actor).subject(user_id),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Unlocks an account: it can log in again and its grants issue tokens
    /// again. Lifts both locks there are, in one transaction with one
    /// `user.unlocked` event saying which (`{"cleared": [...]}`): the
    /// operator's (`users.locked_at`), and the one a run of failed sign-ins
    /// for its username put on it (the `throttles` run refusing it at `now`,
    /// which is forgotten). No event if neither held.
    pub async fn unlock_user(&self, user_id: &str, actor: Actor<'_>, now: i64) -> Result<Unlocked> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET locked_at = NULL, updated_at = $1 WHERE id = $2 AND locked_at IS NOT NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        let cleared = sqlx::query(
            "DELETE FROM throttles
             WHERE kind = 'sign_in' AND blocked_until > $1
               AND subject = (SELECT username FROM users WHERE id = $2)
             RETURNING failures",
        )
        .bind(now)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let unlocked = Unlocked {
            operator_lock: done.rows_affected() == 1,
            failed_sign_ins: cleared.is_some(),
        };
        if unlocked.any() {
            let what: Vec<&str> = [
                (unlocked.operator_lock, "operator_lock"),
                (unlocked.failed_sign_ins, "failed_sign_ins"),
            ]
            .into_iter()
            .filter_map(|(lifted, name)| lifted.then_some(name))
            .collect();
            append(
                &mut tx,
                now,
                &Event::new(EventKind::UserUnlocked)
                    .by(actor)
                    .subject(user_id)
                    .data(serde_json::json!({ "cleared": what })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(unlocked)
    }

    /// Replaces a person's password with one an operator set for them (a
    /// reset), marks it temporary (`password_reset_at`: they must choose
    /// their own at their next sign-in), ends every session of theirs and
    /// writes `user.password_reset`, in one transaction. `false` if there is
    /// no such account.
    pub async fn reset_password(
        &self,
        user_id: &str,
        password_hash: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done =
            sqlx::query("UPDATE users SET password_hash = $1, password_reset_at = $2, updated_at = $2 WHERE id = $3")
                .bind(password_hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 1 {
            end_sessions(&mut tx, user_id).await?;
            append(
                &mut tx,
                now,
                &Event::new(EventKind::UserPasswordReset)
                    .by(actor)
                    .subject(user_id),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Makes a person one of the platform's operators, or no longer one.
    /// Returns whether that changed anything (the event is written only
    /// then).
    pub async fn set_operator(
        &self,
        user_id: &str,
        operator: bool,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET operator = $1, updated_at = $2 WHERE id = $3 AND operator <> $1",
        )
        .bind(i64::from(operator))
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let kind = if operator {
                EventKind::OperatorGranted
            } else {
                EventKind::OperatorRevoked
            };
            append(&mut tx, now, &Event::new(kind).by(actor).subject(user_id)).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Accounts whose username, name or email contains `search` (any case),
    /// by username: at most `limit`, skipping `offset`; and how many match
    /// in all. The same statement on both backends: the search is lowered
    /// here and compared with `LOWER(…) LIKE`, with `%`, `_` and `\` in it
    /// taken literally. (SQLite's `LOWER` folds ASCII letters only.)
    pub async fn search_users(
        &self,
        search: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<User>, i64)> {
        let pattern = like_pattern(search);
        const MATCHES: &str = "LOWER(username) LIKE $1 ESCAPE '\\'
             OR LOWER(COALESCE(name, '')) LIKE $1 ESCAPE '\\'
             OR LOWER(COALESCE(email, '')) LIKE $1 ESCAPE '\\'";
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM users WHERE ({MATCHES})"
        )))
        .bind(&pattern)
        .fetch_one(&self.reader)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE ({MATCHES}) ORDER BY username, id LIMIT $2 OFFSET $3"
        )))
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.reader)
        .await?;
        let users = rows.iter().map(user_from_row).collect::<Result<_>>()?;
        Ok((users, total))
    }
}

/// A `LIKE` pattern matching values that contain `search` (lowered), with
/// the pattern's own special characters escaped by `\\`.
fn like_pattern(search: &str) -> String {
    let mut p = String::with_capacity(search.len() + 2);
    p.push('%');
    for c in search.trim().to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn search_patterns_take_wildcards_literally() {
        assert_eq!(like_pattern(""), "%%");
        assert_eq!(like_pattern(" Alice "), "%alice%");
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
