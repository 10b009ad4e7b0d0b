//! SMART: the patients a person may act for, and who they are on the FHIR
//! server (`users.fhir_user`).

use healthgate_core::event::EventKind;
use healthgate_core::smart::PatientLink;
use sqlx::Row;

use crate::events::{Actor, Event, append};
use crate::{Result, Store};

impl Store {
    /// The patients linked to a person, by name.
    pub async fn patient_links(&self, user_id: &str) -> Result<Vec<PatientLink>> {
        let rows = sqlx::query(
            "SELECT patient_id, display FROM patient_links WHERE user_id = $1
             ORDER BY display, patient_id",
        )
        .bind(user_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PatientLink {
                    patient_id: r.try_get("patient_id")?,
                    display: r.try_get("display")?,
                })
            })
            .collect()
    }

    /// The patients linked to each of `user_ids` (those with none are
    /// absent), by name: for a page of accounts.
    pub async fn patient_links_of(
        &self,
        user_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<PatientLink>>> {
        let mut found: std::collections::HashMap<String, Vec<PatientLink>> = Default::default();
        for chunk in user_ids.chunks(100) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT user_id, patient_id, display FROM patient_links WHERE user_id IN ({})
                 ORDER BY display, patient_id",
                marks.join(", ")
            ));
            let mut q = sqlx::query(sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.reader).await? {
                found
                    .entry(r.try_get("user_id")?)
                    .or_default()
                    .push(PatientLink {
                        patient_id: r.try_get("patient_id")?,
                        display: r.try_get("display")?,
                    });
            }
        }
        Ok(found)
    }

    /// Links a patient to a person, or renames the link; audited
    /// (`user.patient_linked`). False when the person does not exist.
    pub async fn link_patient(
        &self,
        user_id: &str,
        link: &PatientLink,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO patient_links (user_id, patient_id, display, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, patient_id) DO UPDATE SET display = excluded.display",
        )
        .bind(user_id)
        .bind(&link.patient_id)
        .bind(&link.display)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            now,
            &Event::new(EventKind::PatientLinked)
                .by(actor)
                .subject(user_id)
                .data(serde_json::json!({ "patient": link.patient_id })),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Unlinks a patient from a person; audited (`user.patient_unlinked`).
    /// False when there was no such link.
    pub async fn unlink_patient(
        &self,
        user_id: &str,
        patient_id: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("DELETE FROM patient_links WHERE user_id = $1 AND patient_id = $2")
            .bind(user_id)
            .bind(patient_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        append(
            &mut tx,
            now,
            &Event::new(EventKind::PatientUnlinked)
                .by(actor)
                .subject(user_id)
                .data(serde_json::json!({ "patient": patient_id })),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sets (or, with `None`, clears) who a person is on the FHIR server;
    /// audited (`user.updated` with `fhir_user`). False when the person
    /// does not exist.
    pub async fn set_fhir_user(
        &self,
        user_id: &str,
        fhir_user: Option<&str>,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("UPDATE users SET fhir_user = $1, updated_at = $2 WHERE id = $3")
            .bind(fhir_user)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        append(
            &mut tx,
            now,
            &Event::new(EventKind::UserUpdated)
                .by(actor)
                .subject(user_id)
                .data(serde_json::json!({ "fhir_user": fhir_user })),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
