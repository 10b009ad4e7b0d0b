//! SMART EHR launches: made by a launcher for an app, read by the
//! authorization request that names them, and used once, in the same
//! transaction as the code they gave.

use healthgate_core::event::EventKind;
use healthgate_core::smart::{Launch, SmartContext};
use sqlx::{Any, Row, Transaction};

use crate::events::{Actor, Event, append};
use crate::{Result, Store, StoreError};

impl Store {
    /// Keeps a launch by the digest of its value, and audits it
    /// (`smart.launch_created`, by the launcher, about the app and the
    /// person).
    pub async fn insert_smart_launch(
        &self,
        digest: &str,
        launch: &Launch,
        actor: Actor<'_>,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO smart_launches (digest, client_id, user_id, context, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(digest)
        .bind(&launch.client_id)
        .bind(&launch.user_id)
        .bind(launch.context.to_stored())
        .bind(&launch.created_by)
        .bind(launch.created_at)
        .bind(launch.expires_at)
        .execute(&mut *tx)
        .await?;
        let mut event = Event::new(EventKind::SmartLaunchCreated)
            .by(actor)
            .client(&launch.client_id)
            .data(serde_json::json!({
                "launcher": launch.created_by,
                "iss": launch.context.aud,
                "patient": launch.context.patient,
                "encounter": launch.context.encounter,
            }));
        if let Some(user) = &launch.user_id {
            event = event.subject(user);
        }
        append(&mut tx, launch.created_at, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The launch with this digest, used or not.
    pub async fn smart_launch(&self, digest: &str) -> Result<Option<Launch>> {
        let row = sqlx::query(
            "SELECT client_id, user_id, context, created_by, created_at, expires_at, consumed_at
             FROM smart_launches WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(Launch {
                client_id: r.try_get("client_id")?,
                user_id: r.try_get("user_id")?,
                context: SmartContext::from_stored(&r.try_get::<String, _>("context")?)
                    .map_err(|e| StoreError::Corrupt(format!("SMART launch context: {e}")))?,
                created_by: r.try_get("created_by")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
                consumed_at: r.try_get("consumed_at")?,
            })
        })
        .transpose()
    }
}

/// Uses the launch with this digest for `client_id` at `now`: false when
/// it is used already, expired, or another app's.
pub(crate) async fn use_launch(
    tx: &mut Transaction<'_, Any>,
    digest: &str,
    client_id: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE smart_launches SET consumed_at = $1
         WHERE digest = $2 AND client_id = $3 AND consumed_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(digest)
    .bind(client_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
