//! The webhook outbox: deliveries queued with the event that caused them,
//! claimed by whichever node's worker gets there first (rows another node has
//! locked are skipped), and every attempt logged.

use healthgate_core::webhook::{MUTE_AFTER_FAILURES, RETRY_WINDOW, backoff};
use sqlx::Row;

use crate::events::{Actor, Event, append};
use crate::{Backend, Result, Store};
use healthgate_core::event::EventKind;

/// A delivery claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub client_id: String,
    pub url: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// One logged attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: i64,
    pub at: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// How one app's webhook is doing, for the operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHealth {
    pub client_id: String,
    pub client_name: String,
    pub url: String,
    /// Set while deliveries are held after too many failures in a row.
    pub muted_at: Option<i64>,
    /// Failed attempts since the last success.
    pub consecutive_failures: i64,
    /// Waiting for their next attempt.
    pub pending: i64,
    /// Held while the webhook is muted; sent again when it is unmuted.
    pub held: i64,
    pub delivered: i64,
    /// Given up on: still failing when the retry window (72 hours) ended.
    pub failed: i64,
    /// When a delivery last succeeded.
    pub last_success_at: Option<i64>,
    /// The last failed attempt: when, and what went wrong.
    pub last_failure: Option<(i64, String)>,
}

/// What happened when a delivery was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub succeeded: bool,
}

const DELIVERY_COLUMNS: &str = "id, event_id, client_id, url, payload, status, attempts, created_at, next_attempt_at, delivered_at, last_status, last_error";

fn delivery_from_row(r: &sqlx::any::AnyRow) -> Result<Delivery> {
    Ok(Delivery {
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        client_id: r.try_get("client_id")?,
        url: r.try_get("url")?,
        payload: r.try_get("payload")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        delivered_at: r.try_get("delivered_at")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
    })
}

impl Store {
    /// Deliveries waiting to be sent (due now or later), for metrics.
    pub async fn webhook_queue_depth(&self) -> Result<i64> {
        let depth: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&self.reader)
                .await?;
        Ok(depth)
    }

    /// Claims up to `limit` due deliveries for `lease` seconds. A delivery
    /// whose lease ran out (its node died mid-send) becomes due again.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        limit: i64,
        lease: i64,
    ) -> Result<Vec<Delivery>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_until = $1 + $3
             WHERE id IN (SELECT id FROM webhook_deliveries
                          WHERE status = 'pending' AND next_attempt_at <= $1
                            AND (locked_until IS NULL OR locked_until <= $1)
                          ORDER BY next_attempt_at LIMIT $2{lock})
             RETURNING {DELIVERY_COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .bind(lease)
            .fetch_all(&self.writer)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Logs an attempt and schedules what follows: done, a retry after the
    /// backoff, failed for good once the retry window has passed, and the
    /// partner's webhook muted after too many consecutive failures.
    pub async fn record_attempt(
        &self,
        delivery: &Delivery,
        at: i64,
        result: &AttemptResult,
    ) -> Result<()> {
        let attempt = delivery.attempts + 1;
        let mut tx = self.writer.begin().await?;
        if self.backend == Backend::Postgres {
            // The partner's row first: attempts of one partner's deliveries
            // are recorded one at a time. Otherwise the one that mutes the
            // webhook (it updates every pending delivery of the partner,
            // holding the partner's row) and one that holds its own delivery
            // row while waiting for the partner's deadlock.
            sqlx::query("SELECT id FROM clients WHERE id = $1 FOR UPDATE")
                .bind(&delivery.client_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&delivery.id)
        .bind(attempt)
        .bind(at)
        .bind(result.status_code)
        .bind(&result.error)
        .bind(result.duration_ms)
        .execute(&mut *tx)
        .await?;
        if result.succeeded {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = $1, delivered_at = $2,
                        locked_until = NULL, last_status = $3, last_error = NULL WHERE id = $4",
            )
            .bind(attempt)
            .bind(at)
            .bind(result.status_code)
            .bind(&delivery.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE clients SET webhook_failures = 0 WHERE id = $1")
                .bind(&delivery.client_id)
                .execute(&mut *tx)
                .await?;
        } else {
            let gave_up = at + backoff(attempt) > delivery.created_at + RETRY_WINDOW;
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3,
                        locked_until = NULL, last_status = $4, last_error = $5 WHERE id = $6",
            )
            .bind(if gave_up { "failed" } else { "pending" })
            .bind(attempt)
            .bind(at + backoff(attempt))
            .bind(result.status_code)
            .bind(&result.error)
            .bind(&delivery.id)
            .execute(&mut *tx)
            .await?;
            let failures: i64 = sqlx::query_scalar(
                "UPDATE clients SET webhook_failures = webhook_failures + 1 WHERE id = $1 RETURNING webhook_failures",
            )
            .bind(&delivery.client_id)
            .fetch_one(&mut *tx)
            .await?;
            if failures >= MUTE_AFTER_FAILURES {
                sqlx::query("UPDATE clients SET webhook_muted_at = $1 WHERE id = $2 AND webhook_muted_at IS NULL")
                    .bind(at)
                    .bind(&delivery.client_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE webhook_deliveries SET status = 'muted' WHERE client_id = $1 AND status = 'pending'")
                    .bind(&delivery.client_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Re-enables a muted webhook: held deliveries are due again at once.
    pub async fn unmute_webhook(&self, client_id: &str, now: i64) -> Result<u64> {
        self.unmute_webhook_by(client_id, Actor::system(), now)
            .await
    }

    /// Re-enables a muted webhook on behalf of `actor` and writes
    /// `webhook.unmuted` (when it was muted): held deliveries are due again
    /// at once. Returns how many were held.
    pub async fn unmute_webhook_by(
        &self,
        client_id: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let muted_at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT webhook_muted_at FROM clients WHERE id = $1")
                .bind(client_id)
                .fetch_optional(&mut *tx)
                .await?;
        let was_muted = matches!(muted_at, Some(Some(_)));
        sqlx::query(
            "UPDATE clients SET webhook_muted_at = NULL, webhook_failures = 0 WHERE id = $1",
        )
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1 WHERE client_id = $2 AND status = 'muted'",
        )
        .bind(now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        if was_muted {
            append(
                &mut tx,
                now,
                &Event::new(EventKind::WebhookUnmuted)
                    .by(actor)
                    .client(client_id)
                    .subject(client_id)
                    .data(serde_json::json!({ "resumed": done.rows_affected() })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// The health of every app's webhook (apps with a webhook URL), by app
    /// name: deliveries by status, the last success, the last failure with
    /// its error, and the failures in a row.
    pub async fn webhook_health(&self) -> Result<Vec<WebhookHealth>> {
        let rows = sqlx::query(
            "SELECT c.id, c.name, c.webhook_url, c.webhook_muted_at, c.webhook_failures,
                    (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.client_id = c.id AND d.status = 'pending') AS pending,
                    (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.client_id = c.id AND d.status = 'muted') AS held,
                    (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.client_id = c.id AND d.status = 'delivered') AS delivered,
                    (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.client_id = c.id AND d.status = 'failed') AS failed,
                    (SELECT MAX(d.delivered_at) FROM webhook_deliveries d WHERE d.client_id = c.id) AS last_success_at
             FROM clients c WHERE c.webhook_url IS NOT NULL ORDER BY c.name, c.id",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let client_id: String = r.try_get("id")?;
            let last_failure: Option<(i64, Option<i64>, Option<String>)> = sqlx::query_as(
                "SELECT a.at, a.status_code, a.error FROM webhook_attempts a
                 JOIN webhook_deliveries d ON d.id = a.delivery_id
                 WHERE d.client_id = $1 AND a.error IS NOT NULL
                 ORDER BY a.at DESC, a.attempt DESC LIMIT 1",
            )
            .bind(&client_id)
            .fetch_optional(&self.reader)
            .await?;
            out.push(WebhookHealth {
                client_name: r.try_get("name")?,
                url: r.try_get("webhook_url")?,
                muted_at: r.try_get("webhook_muted_at")?,
                consecutive_failures: r.try_get("webhook_failures")?,
                pending: r.try_get("pending")?,
                held: r.try_get("held")?,
                delivered: r.try_get("delivered")?,
                failed: r.try_get("failed")?,
                last_success_at: r.try_get("last_success_at")?,
                last_failure: last_failure.map(|(at, status, error)| {
                    let what = match (status, error) {
                        (_, Some(e)) => e,
                        (Some(code), None) => format!("HTTP {code}"),
                        (None, None) => "failed".to_owned(),
                    };
                    (at, what)
                }),
                client_id,
            });
        }
        Ok(out)
    }

    /// Deliveries, newest first, optionally for one client.
    pub async fn deliveries(&self, client_id: Option<&str>, limit: i64) -> Result<Vec<Delivery>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE ($1 IS NULL OR client_id = $1) ORDER BY created_at DESC, id DESC LIMIT $2"
        ));
        let rows = sqlx::query(sql)
            .bind(client_id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// The attempts of one delivery, in order.
    pub async fn delivery_attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Attempt {
                    attempt: r.try_get("attempt")?,
                    at: r.try_get("at")?,
                    status_code: r.try_get("status_code")?,
                    error: r.try_get("error")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    /// The instance secret webhook signing secrets derive from, created on
    /// first use when the operator configured none.
    pub async fn instance_key(&self) -> Result<String> {
        if let Some(k) =
            sqlx::query_scalar::<_, String>("SELECT key FROM instance_secrets WHERE id = 1")
                .fetch_optional(&self.reader)
                .await?
        {
            return Ok(k);
        }
        let mut bytes = [0u8; 32];
        healthgate_core::secret::random_bytes(&mut bytes);
        let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Two nodes may race here: the first insert wins and both read it back.
        sqlx::query(
            "INSERT INTO instance_secrets (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&fresh)
        .execute(&self.writer)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT key FROM instance_secrets WHERE id = 1")
                .fetch_one(&self.writer)
                .await?,
        )
    }
}
