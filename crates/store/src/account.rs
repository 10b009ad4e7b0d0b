//! What a person (and an organization's admins) can see and take back of
//! the access they gave apps: their grants, listed per app, and revocation
//! that ends every token of a grant at once and is audited.
//!
//! A person's grants are the live token families whose `user_id` is theirs
//! and the consents they let healthgate remember; an organization's grants
//! are its organization-level families (no `user_id`, `granted_by` the admin
//! who made them). Revoking one in the same transaction revokes the families
//! (each raising `token.family_revoked`), expires the codes not yet
//! redeemed, forgets the consent (so the next authorization asks again) and
//! appends `consent.revoked`, which the partner hears by webhook.

use std::collections::BTreeMap;

use healthgate_core::event::EventKind;
use healthgate_core::scope::ScopeSet;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::events::{Event, append};
use crate::grants::revoke_family;
use crate::{Result, Store, StoreError};

/// One app a person authorized for themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGrant {
    pub client_id: String,
    pub client_name: String,
    pub photo_url: Option<String>,
    /// Everything the app holds or may get again without asking: the union
    /// of the live families' scopes and the remembered consent.
    pub scope: ScopeSet,
    /// When access was first given (the earliest live family or the
    /// consent).
    pub granted_at: i64,
    /// The latest token issued under a live family (a refresh counts), if
    /// the app ever received one.
    pub last_used_at: Option<i64>,
    /// The organization the grant was made in, if any (the latest family's,
    /// else the consent's).
    pub organization_id: Option<String>,
    pub organization_name: Option<String>,
}

/// One organization-level grant (one token family) of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgGrant {
    pub family_id: String,
    pub client_id: String,
    pub client_name: String,
    pub photo_url: Option<String>,
    pub scope: ScopeSet,
    /// The admin who made the grant (kept after they leave).
    pub granted_by: Option<String>,
    /// Their display name, or username; `None` if the account is gone.
    pub granted_by_name: Option<String>,
    pub created_at: i64,
    pub live: bool,
}

fn scope_column(row: &AnyRow, column: &str) -> Result<ScopeSet> {
    let stored: Option<String> = row.try_get(column)?;
    ScopeSet::parse(stored.as_deref().unwrap_or("")).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A client whose grants stand for an organization, never for a person.
const ORGANIZATION_LEVEL: &str = "organization";

impl Store {
    /// The apps `user_id` authorized for themselves: one entry per client
    /// with a live token family of theirs or a remembered consent, by name.
    /// Organization-level grants are not the person's and are not listed.
    pub async fn grants_of_user(&self, user_id: &str) -> Result<Vec<UserGrant>> {
        let families = sqlx::query(
            "SELECT f.client_id, f.scope, f.created_at, f.organization_id,
                    (SELECT MAX(a.created_at) FROM access_tokens a WHERE a.family_id = f.id) AS last_token_at,
                    c.name AS client_name, c.photo_url, o.name AS organization_name
             FROM token_families f
             JOIN clients c ON c.id = f.client_id
             LEFT JOIN organizations o ON o.id = f.organization_id
             WHERE f.user_id = $1 AND f.revoked_at IS NULL
             ORDER BY f.created_at, f.id",
        )
        .bind(user_id)
        .fetch_all(&self.reader)
        .await?;
        let consents = sqlx::query(
            "SELECT s.client_id, s.scope, s.granted_at, s.organization_id,
                    c.name AS client_name, c.photo_url, o.name AS organization_name
             FROM consents s
             JOIN clients c ON c.id = s.client_id
             LEFT JOIN organizations o ON o.id = s.organization_id
             WHERE s.user_id = $1 AND c.authorization_level <> $2",
        )
        .bind(user_id)
        .bind(ORGANIZATION_LEVEL)
        .fetch_all(&self.reader)
        .await?;

        let mut grants: BTreeMap<String, UserGrant> = BTreeMap::new();
        // Families in creation order: the last one seen names the
        // organization.
        for row in &families {
            let client_id: String = row.try_get("client_id")?;
            let created_at: i64 = row.try_get("created_at")?;
            let last = row
                .try_get::<Option<i64>, _>("last_token_at")?
                .map_or(created_at, |t| t.max(created_at));
            let scope = scope_column(row, "scope")?;
            let organization_id: Option<String> = row.try_get("organization_id")?;
            let organization_name: Option<String> = row.try_get("organization_name")?;
            match grants.get_mut(&client_id) {
                Some(g) => {
                    g.scope = g.scope.union(&scope);
                    g.granted_at = g.granted_at.min(created_at);
                    g.last_used_at = Some(g.last_used_at.map_or(last, |l| l.max(last)));
                    g.organization_id = organization_id;
                    g.organization_name = organization_name;
                }
                None => {
                    grants.insert(
                        client_id.clone(),
                        UserGrant {
                            client_id,
                            client_name: row.try_get("client_name")?,
                            photo_url: row.try_get("photo_url")?,
                            scope,
                            granted_at: created_at,
                            last_used_at: Some(last),
                            organization_id,
                            organization_name,
                        },
                    );
                }
            }
        }
        for row in &consents {
            let client_id: String = row.try_get("client_id")?;
            let granted_at: i64 = row.try_get("granted_at")?;
            let scope = scope_column(row, "scope")?;
            match grants.get_mut(&client_id) {
                Some(g) => {
                    g.scope = g.scope.union(&scope);
                    g.granted_at = g.granted_at.min(granted_at);
                }
                None => {
                    grants.insert(
                        client_id.clone(),
                        UserGrant {
                            client_id,
                            client_name: row.try_get("client_name")?,
                            photo_url: row.try_get("photo_url")?,
                            scope,
                            granted_at,
                            last_used_at: None,
                            organization_id: row.try_get("organization_id")?,
                            organization_name: row.try_get("organization_name")?,
                        },
                    );
                }
            }
        }
        let mut out: Vec<UserGrant> = grants.into_values().collect();
        out.sort_by(|a, b| {
            a.client_name
                .to_lowercase()
                .cmp(&b.client_name.to_lowercase())
                .then_with(|| a.client_id.cmp(&b.client_id))
        });
        Ok(out)
    }

    /// Takes back everything `user_id` gave `client_id` for themselves, in
    /// one transaction: every live token family (so every access and
    /// refresh token stops working on the next request), every code not yet
    /// redeemed, and the remembered consent; then appends
    /// `consent.revoked`. Acts only on the person's own grants. Returns
    /// whether there was anything to revoke (no event is written if not).
    pub async fn revoke_user_grant(
        &self,
        user_id: &str,
        client_id: &str,
        ip: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        // Codes first: a redemption racing this transaction either finished
        // before (its family is found below) or finds its code expired.
        let codes = sqlx::query(
            "UPDATE authorization_codes SET expires_at = $1
             WHERE user_id = $2 AND client_id = $3 AND consumed_at IS NULL AND expires_at > $1
               AND (organization_id IS NULL OR owner_id IS NULL OR owner_id <> organization_id)",
        )
        .bind(now)
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let families: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM token_families WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL ORDER BY id",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut revoked = 0u64;
        for family in &families {
            if revoke_family(&mut tx, family, "revoked by the user", now).await? {
                revoked += 1;
            }
        }
        let consent: Option<String> = sqlx::query_scalar(
            "DELETE FROM consents
             WHERE user_id = $1 AND client_id = $2
               AND NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = consents.client_id AND c.authorization_level = $3)
             RETURNING scope",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(ORGANIZATION_LEVEL)
        .fetch_optional(&mut *tx)
        .await?;
        if revoked == 0 && codes == 0 && consent.is_none() {
            // Nothing was changed; the transaction ends without effect.
            return Ok(false);
        }
        append(
            &mut tx,
            now,
            &Event::new(EventKind::ConsentRevoked)
                .actor(Some(user_id))
                .client(client_id)
                .subject(user_id)
                .ip(ip)
                .data(serde_json::json!({
                    "families_revoked": revoked,
                    "codes_expired": codes,
                    "consent_scope": consent,
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The organization-level grants of `organization_id` (live and
    /// revoked ones still kept), newest first.
    pub async fn organization_grants(&self, organization_id: &str) -> Result<Vec<OrgGrant>> {
        let rows = sqlx::query(
            "SELECT f.id, f.client_id, f.scope, f.granted_by, f.created_at, f.revoked_at,
                    c.name AS client_name, c.photo_url,
                    COALESCE(u.name, u.username) AS granted_by_name
             FROM token_families f
             JOIN clients c ON c.id = f.client_id
             LEFT JOIN users u ON u.id = f.granted_by
             WHERE f.organization_id = $1 AND f.user_id IS NULL AND f.granted_by IS NOT NULL
             ORDER BY f.created_at DESC, f.id",
        )
        .bind(organization_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OrgGrant {
                    family_id: row.try_get("id")?,
                    client_id: row.try_get("client_id")?,
                    client_name: row.try_get("client_name")?,
                    photo_url: row.try_get("photo_url")?,
                    scope: scope_column(row, "scope")?,
                    granted_by: row.try_get("granted_by")?,
                    granted_by_name: row.try_get("granted_by_name")?,
                    created_at: row.try_get("created_at")?,
                    live: row.try_get::<Option<i64>, _>("revoked_at")?.is_none(),
                })
            })
            .collect()
    }

    /// Takes back what `client_id` holds for the organization
    /// `organization_id`, in one transaction: every live organization-level
    /// family, every such code not yet redeemed, and the consents admins
    /// gave it for the organization; then appends `consent.revoked` with the
    /// organization. The caller checks that `actor_admin_id` administers the
    /// organization. Returns whether there was anything to revoke.
    pub async fn revoke_organization_grant(
        &self,
        organization_id: &str,
        client_id: &str,
        actor_admin_id: &str,
        ip: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let codes = sqlx::query(
            "UPDATE authorization_codes SET expires_at = $1
             WHERE organization_id = $2 AND client_id = $3 AND owner_id = organization_id
               AND consumed_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(organization_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let families: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM token_families
             WHERE organization_id = $1 AND client_id = $2 AND user_id IS NULL AND granted_by IS NOT NULL
               AND revoked_at IS NULL
             ORDER BY id",
        )
        .bind(organization_id)
        .bind(client_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut revoked = 0u64;
        for family in &families {
            if revoke_family(
                &mut tx,
                family,
                "revoked by an organization administrator",
                now,
            )
            .await?
            {
                revoked += 1;
            }
        }
        let consents = sqlx::query(
            "DELETE FROM consents
             WHERE organization_id = $1 AND client_id = $2
               AND EXISTS (SELECT 1 FROM clients c WHERE c.id = consents.client_id AND c.authorization_level = $3)",
        )
        .bind(organization_id)
        .bind(client_id)
        .bind(ORGANIZATION_LEVEL)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if revoked == 0 && codes == 0 && consents == 0 {
            return Ok(false);
        }
        append(
            &mut tx,
            now,
            &Event::new(EventKind::ConsentRevoked)
                .actor(Some(actor_admin_id))
                .client(client_id)
                .organization(organization_id)
                .subject(organization_id)
                .ip(ip)
                .data(serde_json::json!({
                    "organization_level": true,
                    "families_revoked": revoked,
                    "codes_expired": codes,
                    "consents_forgotten": consents,
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
