//! The audit trail of security-relevant events. Entries name people and apps
//! by id and never carry a token, code, secret or password.

use sqlx::Row;

use crate::{Result, Store};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: String,
    pub at: i64,
    pub kind: String,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub detail: Option<String>,
}

pub(crate) async fn record<'e, E>(
    executor: E,
    at: i64,
    kind: &str,
    user_id: Option<&str>,
    client_id: Option<&str>,
    detail: Option<&str>,
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO audit_events (id, at, kind, user_id, client_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(healthgate_core::secret::new_id("evt"))
    .bind(at)
    .bind(kind)
    .bind(user_id)
    .bind(client_id)
    .bind(detail)
    .execute(executor)
    .await?;
    Ok(())
}

impl Store {
    /// Writes one audit entry.
    pub async fn audit(
        &self,
        at: i64,
        kind: &str,
        user_id: Option<&str>,
        client_id: Option<&str>,
        detail: Option<&str>,
    ) -> Result<()> {
        record(&self.writer, at, kind, user_id, client_id, detail).await
    }

    /// The most recent entries, newest first.
    pub async fn audit_events(&self, limit: i64) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, user_id, client_id, detail FROM audit_events ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    user_id: r.try_get("user_id")?,
                    client_id: r.try_get("client_id")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}
