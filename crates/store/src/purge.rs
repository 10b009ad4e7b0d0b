//! Expired-row cleanup, in small batches so that the SQLite writer is never
//! held for long and PostgreSQL nodes never fight over the same rows (each
//! batch skips rows another node has locked).

use crate::{Backend, Result, Store};

/// How many rows one cleanup pass removed, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub authorization_codes: u64,
    pub access_tokens: u64,
    pub refresh_tokens: u64,
    pub token_families: u64,
    pub throttles: u64,
    pub email_links: u64,
    pub mail_outbox: u64,
    pub smart_launches: u64,
    pub client_assertions: u64,
    pub dpop_proofs: u64,
    pub pushed_requests: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.sessions
            + self.authorization_codes
            + self.access_tokens
            + self.refresh_tokens
            + self.token_families
            + self.throttles
            + self.email_links
            + self.mail_outbox
            + self.smart_launches
            + self.client_assertions
            + self.dpop_proofs
            + self.pushed_requests
    }
}

/// What may be deleted: a table, its key, and the condition on `$1` (the
/// cutoff for expired rows) and `$2` (the cutoff for retired rows).
struct Rule {
    table: &'static str,
    /// The key, as the left side of `IN` (a row value for a composite key).
    key: &'static str,
    /// The key's columns, as the inner `SELECT` lists them.
    columns: &'static str,
    condition: &'static str,
    count: fn(&mut Purged) -> &mut u64,
}

/// Codes and access tokens go a day after they expire; retired refresh
/// tokens and revoked families are kept for the retention period so that a
/// late replay is still recognised as reuse.
const RULES: &[Rule] = &[
    Rule {
        table: "sessions",
        key: "id_digest",
        columns: "id_digest",
        condition: "expires_at < $1",
        count: |p| &mut p.sessions,
    },
    Rule {
        table: "authorization_codes",
        key: "digest",
        columns: "digest",
        condition: "expires_at < $1 - 86400",
        count: |p| &mut p.authorization_codes,
    },
    Rule {
        table: "access_tokens",
        key: "digest",
        columns: "digest",
        condition: "expires_at < $1 - 86400",
        count: |p| &mut p.access_tokens,
    },
    Rule {
        table: "refresh_tokens",
        key: "digest",
        columns: "digest",
        condition: "expires_at < $1 OR consumed_at < $2 OR revoked_at < $2",
        count: |p| &mut p.refresh_tokens,
    },
    Rule {
        table: "token_families",
        key: "id",
        columns: "id",
        condition: "created_at < $2
            AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.family_id = token_families.id)
            AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = token_families.id)",
        count: |p| &mut p.token_families,
    },
    // A failure run a day past its last failure and not blocking anyone:
    // longer than any run is remembered by default.
    Rule {
        table: "throttles",
        key: "(kind, subject)",
        columns: "kind, subject",
        condition: "last_failure_at < $1 - 86400 AND (blocked_until IS NULL OR blocked_until < $1)",
        count: |p| &mut p.throttles,
    },
    // Links sent by email, a day after they expired.
    Rule {
        table: "email_links",
        key: "digest",
        columns: "digest",
        condition: "expires_at < $1 - 86400",
        count: |p| &mut p.email_links,
    },
    // Messages sent or given up (their bodies already blanked), after the
    // retention period.
    Rule {
        table: "mail_outbox",
        key: "id",
        columns: "id",
        condition: "status <> 'pending' AND created_at < $2",
        count: |p| &mut p.mail_outbox,
    },
    // SMART launches, a day after they expired (used or not).
    Rule {
        table: "smart_launches",
        key: "digest",
        columns: "digest",
        condition: "expires_at < $1 - 86400",
        count: |p| &mut p.smart_launches,
    },
    // The jti of an accepted client assertion, once the assertion expired:
    // it could not be accepted again anyway.
    Rule {
        table: "client_assertions",
        key: "(client_id, jti)",
        columns: "client_id, jti",
        condition: "expires_at < $1",
        count: |p| &mut p.client_assertions,
    },
    // The jti of a DPoP proof, once the proof is too old to be accepted.
    Rule {
        table: "dpop_proofs",
        key: "(jkt, jti)",
        columns: "jkt, jti",
        condition: "expires_at < $1",
        count: |p| &mut p.dpop_proofs,
    },
    // Pushed authorization requests, a day after their request_uri expired
    // (by then no page can bring them back either).
    Rule {
        table: "pushed_requests",
        key: "digest",
        columns: "digest",
        condition: "expires_at < $1 - 86400",
        count: |p| &mut p.pushed_requests,
    },
];

impl Store {
    /// Deletes rows that can no longer matter, at most `batch` rows per
    /// statement and `max_batches` statements per table. `retention` is how
    /// long retired refresh tokens and revoked families are kept.
    pub async fn purge_expired(
        &self,
        now: i64,
        retention: i64,
        batch: i64,
        max_batches: u32,
    ) -> Result<Purged> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut purged = Purged::default();
        for rule in RULES {
            let sql = format!(
                "DELETE FROM {t} WHERE {k} IN (SELECT {cols} FROM {t} WHERE {c} LIMIT $3{lock})",
                t = rule.table,
                k = rule.key,
                cols = rule.columns,
                c = rule.condition,
            );
            let removed = (rule.count)(&mut purged);
            for _ in 0..max_batches {
                let done = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(now)
                    .bind(now - retention)
                    .bind(batch)
                    .execute(&self.writer)
                    .await?;
                *removed += done.rows_affected();
                if done.rows_affected() < batch as u64 {
                    break;
                }
            }
        }
        Ok(purged)
    }
}
