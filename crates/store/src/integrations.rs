//! Organizations, practice integrations, connect codes and practice API keys.

use healthgate_core::event::EventKind;
use healthgate_core::integration::{
    ApiKey, ConnectCodeRead, ConnectMode, ConnectWrite, Integration, IntegrationStatus, NewApiKey,
};
use healthgate_core::org::Organization;
use healthgate_core::secret::{Minted, new_id};
use healthgate_core::user::User;
use sqlx::{Any, AnyConnection, Row, Transaction};

use crate::events::{Actor, Event, append};
use crate::grants::{Applied, event_of};
use crate::{Result, Store, StoreError, conflict};

const INTEGRATION_COLUMNS: &str = "id, organization_id, client_id, status, created_by, activated_by, created_at, activated_at, disconnected_at";
const INTEGRATION_COLUMNS_OF_I: &str = "i.id, i.organization_id, i.client_id, i.status, i.created_by, i.activated_by, i.created_at, i.activated_at, i.disconnected_at";
const KEY_COLUMNS: &str = "id, integration_id, organization_id, client_id, description, created_at, last_used_at, revoked_at";

fn integration_from_row(r: &sqlx::any::AnyRow) -> Result<Integration> {
    Ok(Integration {
        id: r.try_get("id")?,
        organization_id: r.try_get("organization_id")?,
        client_id: r.try_get("client_id")?,
        status: r
            .try_get::<String, _>("status")?
            .parse()
            .map_err(StoreError::Corrupt)?,
        created_by: r.try_get("created_by")?,
        activated_by: r.try_get("activated_by")?,
        created_at: r.try_get("created_at")?,
        activated_at: r.try_get("activated_at")?,
        disconnected_at: r.try_get("disconnected_at")?,
    })
}

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        integration_id: r.try_get("integration_id")?,
        organization_id: r.try_get("organization_id")?,
        client_id: r.try_get("client_id")?,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn organization_from_row(r: &sqlx::any::AnyRow) -> Result<Organization> {
    Ok(Organization {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: r
            .try_get::<String, _>("kind")?
            .parse()
            .map_err(StoreError::Corrupt)?,
        created_at: r.try_get("created_at")?,
    })
}

async fn integration_in(conn: &mut AnyConnection, id: &str) -> Result<Option<Integration>> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE id = $1"
    ));
    let row = sqlx::query(sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(integration_from_row).transpose()
}

/// Inserts a new API key for an integration.
async fn insert_key(tx: &mut Transaction<'static, Any>, new: &NewApiKey) -> Result<()> {
    let k = &new.key;
    sqlx::query(
        "INSERT INTO api_keys (digest, id, integration_id, organization_id, client_id, description, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&new.digest)
    .bind(&k.id)
    .bind(&k.integration_id)
    .bind(&k.organization_id)
    .bind(&k.client_id)
    .bind(&k.description)
    .bind(k.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A practice API key as presented: the key, its integration's status, and
/// whether the partner app it belongs to is suspended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    pub key: ApiKey,
    pub status: IntegrationStatus,
    pub client_suspended: bool,
}

impl PresentedKey {
    /// Whether the key opens the practice API now: not revoked, its
    /// integration not disconnected, its app not suspended.
    pub fn is_usable(&self) -> bool {
        self.key.revoked_at.is_none()
            && self.status != IntegrationStatus::Disconnected
            && !self.client_suspended
    }
}

impl Store {
    pub async fn insert_organization(&self, org: &Organization) -> Result<()> {
        self.insert_organization_by(org, Actor::system()).await
    }

    /// Inserts an organization, naming who created it in its event.
    pub async fn insert_organization_by(&self, org: &Organization, actor: Actor<'_>) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, kind, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&org.id)
        .bind(&org.name)
        .bind(org.kind.as_str())
        .bind(org.created_at)
        .execute(&mut *tx)
        .await
        .map_err(conflict("organization"))?;
        append(
            &mut tx,
            org.created_at,
            &Event::new(EventKind::OrganizationCreated)
                .by(actor)
                .organization(&org.id)
                .data(serde_json::json!({ "name": org.name, "kind": org.kind.as_str() })),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every organization with how many members it has, by name.
    pub async fn organizations_with_member_counts(&self) -> Result<Vec<(Organization, i64)>> {
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.kind, o.created_at,
                    (SELECT COUNT(*) FROM memberships m WHERE m.organization_id = o.id) AS members
             FROM organizations o ORDER BY o.name, o.id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((organization_from_row(r)?, r.try_get("members")?)))
            .collect()
    }

    pub async fn organization(&self, id: &str) -> Result<Option<Organization>> {
        let row = sqlx::query("SELECT id, name, kind, created_at FROM organizations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(organization_from_row).transpose()
    }

    pub async fn organizations(&self) -> Result<Vec<Organization>> {
        let rows = sqlx::query(
            "SELECT id, name, kind, created_at FROM organizations ORDER BY created_at, id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(organization_from_row).collect()
    }

    /// The id of the organization with this exact name, if any.
    pub async fn organization_by_name(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM organizations WHERE name = $1 ORDER BY created_at LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// Adds `user_id` to an organization with `role`, or changes their role.
    pub async fn set_membership(
        &self,
        organization_id: &str,
        user_id: &str,
        role: &str,
        actor: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let actor = Actor {
            user_id: actor,
            ip: None,
        };
        self.set_membership_by(organization_id, user_id, role, actor, now)
            .await
    }

    /// Adds `user_id` to an organization with `role`, or changes their
    /// role, on behalf of `actor`.
    pub async fn set_membership_by(
        &self,
        organization_id: &str,
        user_id: &str,
        role: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO memberships (organization_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(organization_id)
        .bind(user_id)
        .bind(role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let event = Event::new(EventKind::MemberAdded)
            .by(actor)
            .subject(user_id)
            .organization(organization_id)
            .data(serde_json::json!({ "role": role }));
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The members of an organization with their roles, by username.
    pub async fn members(&self, organization_id: &str) -> Result<Vec<(User, String)>> {
        let rows = sqlx::query(
            "SELECT u.id, u.username, u.name, u.email, u.user_type, u.password_hash, u.created_at, u.locked_at, u.provisioned_by, u.operator, u.password_reset_at, u.email_verified_at, u.fhir_user, m.role
             FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.organization_id = $1 ORDER BY u.username",
        )
        .bind(organization_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((crate::users::user_from_row(r)?, r.try_get("role")?)))
            .collect()
    }

    /// Every organization `user_id` belongs to, with their role there.
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<(Organization, String)>> {
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.kind, o.created_at, m.role FROM memberships m JOIN organizations o ON o.id = m.organization_id
             WHERE m.user_id = $1 ORDER BY o.name, o.id",
        )
        .bind(user_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((organization_from_row(r)?, r.try_get("role")?)))
            .collect()
    }

    /// Removes a person from an organization; `false` if they were not in it.
    pub async fn remove_membership(
        &self,
        organization_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool> {
        self.remove_membership_by(organization_id, user_id, Actor::system(), now)
            .await
    }

    /// Removes a person from an organization on behalf of `actor`; `false`
    /// (and no event) if they were not in it.
    pub async fn remove_membership_by(
        &self,
        organization_id: &str,
        user_id: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let role: Option<String> = sqlx::query_scalar(
            "DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2 RETURNING role",
        )
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(role) = &role {
            let event = Event::new(EventKind::MemberRemoved)
                .by(actor)
                .subject(user_id)
                .organization(organization_id)
                .data(serde_json::json!({ "role": role }));
            append(&mut tx, now, &event).await?;
        }
        tx.commit().await?;
        Ok(role.is_some())
    }

    /// Changes the role of someone already in an organization, on behalf of
    /// `actor`. Returns their previous role, or `None` (and changes nothing)
    /// if they are not a member. Setting the role they have already writes
    /// no event.
    pub async fn change_member_role(
        &self,
        organization_id: &str,
        user_id: &str,
        role: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<Option<String>> {
        let mut tx = self.writer.begin().await?;
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2",
        )
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(previous) = previous else {
            return Ok(None);
        };
        if previous != role {
            sqlx::query(
                "UPDATE memberships SET role = $1 WHERE organization_id = $2 AND user_id = $3",
            )
            .bind(role)
            .bind(organization_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            let event = Event::new(EventKind::MemberRoleChanged)
                .by(actor)
                .subject(user_id)
                .organization(organization_id)
                .data(serde_json::json!({ "role": role, "previous_role": previous }));
            append(&mut tx, now, &event).await?;
        }
        tx.commit().await?;
        Ok(Some(previous))
    }

    /// The organizations in which `user_id` holds `role`.
    pub async fn organizations_where(
        &self,
        user_id: &str,
        role: &str,
    ) -> Result<Vec<Organization>> {
        let rows = sqlx::query(
            "SELECT o.id, o.name, o.kind, o.created_at FROM memberships m JOIN organizations o ON o.id = m.organization_id
             WHERE m.user_id = $1 AND m.role = $2 ORDER BY o.name",
        )
        .bind(user_id)
        .bind(role)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(organization_from_row).collect()
    }

    pub async fn integration(&self, id: &str) -> Result<Option<Integration>> {
        let mut conn = self.reader.acquire().await?;
        integration_in(&mut conn, id).await
    }

    /// The integrations of an organization, live ones first.
    pub async fn integrations_of_organization(
        &self,
        organization_id: &str,
    ) -> Result<Vec<Integration>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE organization_id = $1 ORDER BY created_at DESC"
        ));
        let rows = sqlx::query(sql)
            .bind(organization_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(integration_from_row).collect()
    }

    /// The integrations of a partner app, newest first.
    pub async fn integrations_of_client(&self, client_id: &str) -> Result<Vec<Integration>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE client_id = $1 ORDER BY created_at DESC"
        ));
        let rows = sqlx::query(sql)
            .bind(client_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(integration_from_row).collect()
    }

    /// Starts connecting a practice to a partner, or returns the live
    /// integration there already is. Then issues a connect code for it.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_integration(
        &self,
        organization_id: &str,
        client_id: &str,
        admin_id: &str,
        code: &Minted,
        mode: ConnectMode,
        expires_at: i64,
        ip: Option<&str>,
        now: i64,
    ) -> Result<Integration> {
        let mut tx = self.writer.begin().await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations
             WHERE organization_id = $1 AND client_id = $2 AND status <> 'disconnected'"
        ));
        let existing = sqlx::query(sql)
            .bind(organization_id)
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await?;
        let integration = match existing.as_ref().map(integration_from_row).transpose()? {
            Some(i) => i,
            None => {
                let i = Integration {
                    id: new_id("int"),
                    organization_id: organization_id.to_owned(),
                    client_id: client_id.to_owned(),
                    status: IntegrationStatus::Pending,
                    created_by: Some(admin_id.to_owned()),
                    activated_by: None,
                    created_at: now,
                    activated_at: None,
                    disconnected_at: None,
                };
                sqlx::query(
                    "INSERT INTO integrations (id, organization_id, client_id, status, created_by, created_at)
                     VALUES ($1, $2, $3, 'pending', $4, $5)",
                )
                .bind(&i.id)
                .bind(organization_id)
                .bind(client_id)
                .bind(admin_id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(conflict("integration"))?;
                i
            }
        };
        sqlx::query(
            "INSERT INTO connect_codes (digest, integration_id, mode, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&code.digest)
        .bind(&integration.id)
        .bind(mode.as_str())
        .bind(admin_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let event = Event::new(EventKind::ConnectCodeIssued)
            .actor(Some(admin_id))
            .subject(&integration.id)
            .client(client_id)
            .organization(organization_id)
            .ip(ip)
            .data(serde_json::json!({ "integration_id": integration.id, "mode": mode.as_str() }));
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(integration)
    }

    /// A connect code with its integration, as read for an exchange
    /// (decided by `healthgate_core::integration::exchange_connect_code`).
    pub async fn connect_code_for_exchange(&self, digest: &str) -> Result<Option<ConnectCodeRead>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT c.expires_at AS code_expires_at, c.created_by AS code_created_by,
                    c.consumed_at AS code_consumed_at, c.api_key_digest AS code_key,
                    {INTEGRATION_COLUMNS_OF_I}
             FROM connect_codes c JOIN integrations i ON i.id = c.integration_id
             WHERE c.digest = $1"
        ));
        let row = sqlx::query(sql)
            .bind(digest)
            .fetch_optional(&self.reader)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(ConnectCodeRead {
            integration: integration_from_row(&r)?,
            expires_at: r.try_get("code_expires_at")?,
            created_by: r.try_get("code_created_by")?,
            consumed: r.try_get::<Option<i64>, _>("code_consumed_at")?.is_some(),
            produced_key: r.try_get("code_key")?,
        }))
    }

    /// Applies an exchange's write in one transaction. [`Applied::Stale`]
    /// when the code it consumes was used (or killed by a disconnection)
    /// since it was read: then nothing is written; read and decide again.
    pub async fn apply_connect(&self, w: &ConnectWrite) -> Result<Applied> {
        let mut tx = self.writer.begin().await?;
        if let Some(code) = &w.consume {
            let claimed = sqlx::query(
                "UPDATE connect_codes SET consumed_at = $1, api_key_digest = $2
                 WHERE digest = $3 AND consumed_at IS NULL",
            )
            .bind(w.now)
            .bind(w.key.as_ref().map(|k| k.digest.as_str()))
            .bind(code)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                return Ok(Applied::Stale);
            }
        }
        if let Some(digest) = &w.revoke_key {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE digest = $2 AND revoked_at IS NULL",
            )
            .bind(w.now)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(key) = &w.key {
            insert_key(&mut tx, key).await?;
        }
        if let Some((id, by)) = &w.activate {
            sqlx::query(
                "UPDATE integrations SET status = 'connected', activated_by = $1, activated_at = $2
                 WHERE id = $3 AND status = 'pending'",
            )
            .bind(by)
            .bind(w.now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        for record in &w.records {
            append(&mut tx, w.now, &event_of(record)).await?;
        }
        tx.commit().await?;
        Ok(Applied::Done)
    }

    /// The partner activates a pending integration it holds a key for.
    pub async fn activate_integration(&self, id: &str, now: i64) -> Result<Option<Integration>> {
        let mut tx = self.writer.begin().await?;
        let Some(i) = integration_in(&mut tx, id).await? else {
            return Ok(None);
        };
        if i.status == IntegrationStatus::Pending {
            sqlx::query(
                "UPDATE integrations SET status = 'connected', activated_at = $1, activated_by = COALESCE(activated_by, created_by)
                 WHERE id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let event = Event::new(EventKind::IntegrationActivated)
                .subject(&i.id)
                .client(&i.client_id)
                .organization(&i.organization_id)
                .data(serde_json::json!({ "integration_id": i.id, "status": "connected" }));
            append(&mut tx, now, &event).await?;
        }
        let updated = integration_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Disconnects an integration: every key stops working at once and any
    /// unused code dies. `actor` is the admin, or `None` for the partner.
    pub async fn deactivate_integration(
        &self,
        id: &str,
        actor: Option<&str>,
        ip: Option<&str>,
        now: i64,
    ) -> Result<Option<Integration>> {
        let mut tx = self.writer.begin().await?;
        let Some(i) = integration_in(&mut tx, id).await? else {
            return Ok(None);
        };
        if i.status != IntegrationStatus::Disconnected {
            sqlx::query("UPDATE integrations SET status = 'disconnected', disconnected_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE integration_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE connect_codes SET consumed_at = $1 WHERE integration_id = $2 AND consumed_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let event = Event::new(EventKind::IntegrationDeactivated)
                .actor(actor)
                .subject(&i.id)
                .client(&i.client_id)
                .organization(&i.organization_id)
                .ip(ip)
                .data(serde_json::json!({
                    "integration_id": i.id,
                    "status": "disconnected",
                    "by": if actor.is_some() { "practice" } else { "partner" },
                }));
            append(&mut tx, now, &event).await?;
        }
        let updated = integration_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// A new key for a live integration.
    pub async fn create_api_key(
        &self,
        integration: &Integration,
        key: &Minted,
        description: Option<&str>,
        now: i64,
    ) -> Result<ApiKey> {
        let mut tx = self.writer.begin().await?;
        let new = NewApiKey::of(integration, key, description, now);
        insert_key(&mut tx, &new).await?;
        let record = new.key;
        let event = Event::new(EventKind::ApiKeyCreated)
            .subject(&record.id)
            .client(&integration.client_id)
            .organization(&integration.organization_id)
            .data(serde_json::json!({ "integration_id": integration.id, "api_key_id": record.id }));
        append(&mut tx, now, &event).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn api_keys(&self, integration_id: &str) -> Result<Vec<ApiKey>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE integration_id = $1 ORDER BY created_at, id"
        ));
        let rows = sqlx::query(sql)
            .bind(integration_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes one key of an integration; `false` if there is no such live key.
    pub async fn revoke_api_key(
        &self,
        integration: &Integration,
        key_id: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND integration_id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(key_id)
            .bind(&integration.id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            let event = Event::new(EventKind::ApiKeyRevoked)
                .subject(key_id)
                .client(&integration.client_id)
                .organization(&integration.organization_id)
                .data(
                    serde_json::json!({ "integration_id": integration.id, "api_key_id": key_id }),
                );
            append(&mut tx, now, &event).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Looks up a presented key by digest, with its integration's status
    /// and whether its partner app is suspended.
    pub async fn api_key_by_digest(&self, digest: &str) -> Result<Option<PresentedKey>> {
        let row = sqlx::query(
            "SELECT k.id, k.integration_id, k.organization_id, k.client_id, k.description, k.created_at, k.last_used_at,
                    k.revoked_at, i.status, c.suspended_at
             FROM api_keys k JOIN integrations i ON i.id = k.integration_id JOIN clients c ON c.id = k.client_id
             WHERE k.digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            let status = r
                .try_get::<String, _>("status")?
                .parse()
                .map_err(StoreError::Corrupt)?;
            Ok(PresentedKey {
                key: key_from_row(&r)?,
                status,
                client_suspended: r.try_get::<Option<i64>, _>("suspended_at")?.is_some(),
            })
        })
        .transpose()
    }

    /// Records that a key was used, at most once a minute per key so the hot
    /// path rarely writes.
    pub async fn touch_api_key(&self, key_id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1 - 60)")
            .bind(now)
            .bind(key_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
