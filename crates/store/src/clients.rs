//! Registered clients (partner apps).

use healthgate_core::client::{Client, ClientKind, PreviousSecret};
use healthgate_core::event::EventKind;
use healthgate_core::redirect::RedirectUri;
use healthgate_core::scope::ScopeSet;
use healthgate_core::user::{join_user_types, parse_user_types};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::events::{Actor, Event, append};
use crate::{Result, Store, StoreError, conflict};

const COLUMNS: &str = "id, name, photo_url, redirect_uris, allowed_scopes, user_types, kind, secret_digest, description, \
                       connect_redirect_url, published, webhook_url, webhook_secret_version, webhook_muted_at, \
                       authorization_level, provisioning_scopes, access_token_format, id_token_alg, owner_id, suspended_at, \
                       resource_server, previous_secret_digest, previous_secret_expires_at, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Client> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("client {what}"));
    let uris: String = row.try_get("redirect_uris")?;
    Ok(Client {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        photo_url: row.try_get("photo_url")?,
        redirect_uris: uris
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| RedirectUri::from_stored(l.to_owned()))
            .collect(),
        allowed_scopes: ScopeSet::parse(&row.try_get::<String, _>("allowed_scopes")?)
            .map_err(|_| corrupt("scopes"))?,
        user_types: parse_user_types(&row.try_get::<String, _>("user_types")?)
            .map_err(|_| corrupt("user types"))?,
        kind: row
            .try_get::<String, _>("kind")?
            .parse::<ClientKind>()
            .map_err(|_| corrupt("kind"))?,
        secret_digest: row.try_get("secret_digest")?,
        previous_secret: match (
            row.try_get::<Option<String>, _>("previous_secret_digest")?,
            row.try_get::<Option<i64>, _>("previous_secret_expires_at")?,
        ) {
            (Some(digest), Some(expires_at)) => Some(PreviousSecret { digest, expires_at }),
            _ => None,
        },
        description: row.try_get("description")?,
        connect_redirect_url: row.try_get("connect_redirect_url")?,
        published: row.try_get::<i64, _>("published")? != 0,
        webhook_url: row.try_get("webhook_url")?,
        webhook_secret_version: row.try_get("webhook_secret_version")?,
        webhook_muted_at: row.try_get("webhook_muted_at")?,
        authorization_level: row
            .try_get::<String, _>("authorization_level")?
            .parse()
            .map_err(|_| corrupt("authorization level"))?,
        provisioning_scopes: row
            .try_get::<Option<String>, _>("provisioning_scopes")?
            .map(|s| ScopeSet::parse(&s))
            .transpose()
            .map_err(|_| corrupt("provisioning scopes"))?,
        jwt_access_tokens: row.try_get::<String, _>("access_token_format")? == "jwt",
        id_token_alg: row
            .try_get::<String, _>("id_token_alg")?
            .parse()
            .map_err(|_| corrupt("id token alg"))?,
        owner_id: row.try_get("owner_id")?,
        suspended_at: row.try_get("suspended_at")?,
        resource_server: row.try_get::<i64, _>("resource_server")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn uris(c: &Client) -> String {
    c.redirect_uris
        .iter()
        .map(RedirectUri::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What suspending an app did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspension {
    /// The app is suspended now: its live token families were revoked and
    /// its pending authorization codes expired.
    Suspended {
        families_revoked: u64,
        codes_expired: u64,
    },
    /// It was suspended already, since this instant; nothing changed.
    AlreadySuspended(i64),
    NoSuchClient,
}

/// The reason written on the token families a suspension revokes.
pub const CLIENT_SUSPENDED: &str = "client_suspended";

impl Store {
    /// Every registered app with the username of the person who registered
    /// it in the developer portal (if one did), oldest first.
    pub async fn clients_with_owners(&self) -> Result<Vec<(Client, Option<String>)>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, (SELECT u.username FROM users u WHERE u.id = clients.owner_id) AS owner_username
             FROM clients ORDER BY created_at, id"
        ));
        let rows = sqlx::query(sql).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| Ok((from_row(r)?, r.try_get("owner_username")?)))
            .collect()
    }

    /// Suspends an app, in one transaction: marks it suspended, revokes
    /// every live token family it holds (reason `client_suspended`; every
    /// access and refresh token in them stops working at the next request),
    /// expires its authorization codes not yet redeemed (a code becomes a
    /// family only when redeemed), and writes `client.suspended` with what
    /// was revoked. One event for the whole suspension rather than one per
    /// family: an app can hold many grants, and the partner hears the one
    /// thing that happened.
    pub async fn suspend_client(
        &self,
        client_id: &str,
        reason: Option<&str>,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<Suspension> {
        let mut tx = self.writer.begin().await?;
        // A secret still in its grace after a rotation ends with the
        // suspension; restoring the app does not bring it back.
        let marked = sqlx::query(
            "UPDATE clients SET suspended_at = $1, updated_at = $1,
                                previous_secret_digest = NULL, previous_secret_expires_at = NULL
             WHERE id = $2 AND suspended_at IS NULL",
        )
        .bind(now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 0 {
            let since: Option<Option<i64>> =
                sqlx::query_scalar("SELECT suspended_at FROM clients WHERE id = $1")
                    .bind(client_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(match since {
                Some(Some(at)) => Suspension::AlreadySuspended(at),
                _ => Suspension::NoSuchClient,
            });
        }
        // Codes first: a redemption racing this transaction either finished
        // before (its family is revoked below) or finds its code expired.
        let codes_expired = sqlx::query(
            "UPDATE authorization_codes SET expires_at = $1
             WHERE client_id = $2 AND consumed_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let families_revoked = sqlx::query(
            "UPDATE token_families SET revoked_at = $1, revoked_reason = $2
             WHERE client_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(CLIENT_SUSPENDED)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        append(
            &mut tx,
            now,
            &Event::new(EventKind::ClientSuspended)
                .by(actor)
                .client(client_id)
                .subject(client_id)
                .data({
                    let mut data = serde_json::json!({
                        "families_revoked": families_revoked,
                        "codes_expired": codes_expired,
                    });
                    if let Some(reason) = reason {
                        data["reason"] = reason.into();
                    }
                    data
                }),
        )
        .await?;
        tx.commit().await?;
        Ok(Suspension::Suspended {
            families_revoked,
            codes_expired,
        })
    }

    /// Lifts an app's suspension: it may ask for codes and tokens again.
    /// What the suspension revoked stays revoked. Returns whether it was
    /// suspended (`client.restored` is written only then).
    pub async fn restore_client(
        &self,
        client_id: &str,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE clients SET suspended_at = NULL, updated_at = $1 WHERE id = $2 AND suspended_at IS NOT NULL",
        )
        .bind(now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            append(
                &mut tx,
                now,
                &Event::new(EventKind::ClientRestored)
                    .by(actor)
                    .client(client_id)
                    .subject(client_id),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Registers a client (made on the server itself: no actor).
    pub async fn insert_client(&self, c: &Client) -> Result<()> {
        self.insert_client_by(c, Actor::system()).await
    }

    /// Registers a client; `client.created` names who registered it.
    pub async fn insert_client_by(&self, c: &Client, actor: Actor<'_>) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO clients (id, name, photo_url, redirect_uris, allowed_scopes, user_types, kind, secret_digest,
                                  description, connect_redirect_url, published, webhook_url, webhook_secret_version,
                                  authorization_level, provisioning_scopes, created_at, updated_at, access_token_format, id_token_alg,
                                  owner_id, resource_server)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.photo_url)
        .bind(uris(c))
        .bind(c.allowed_scopes.to_string())
        .bind(join_user_types(&c.user_types))
        .bind(c.kind.as_str())
        .bind(&c.secret_digest)
        .bind(&c.description)
        .bind(&c.connect_redirect_url)
        .bind(i64::from(c.published))
        .bind(&c.webhook_url)
        .bind(c.webhook_secret_version)
        .bind(c.authorization_level.as_str())
        .bind(c.provisioning_scopes.as_ref().map(ScopeSet::to_string))
        .bind(c.created_at)
        .bind(c.updated_at)
        .bind(if c.jwt_access_tokens { "jwt" } else { "opaque" })
        .bind(c.id_token_alg.as_str())
        .bind(&c.owner_id)
        .bind(i64::from(c.resource_server))
        .execute(&mut *tx)
        .await
        .map_err(conflict("client"))?;
        append(
            &mut tx,
            c.created_at,
            &Event::new(EventKind::ClientCreated)
                .by(actor)
                .client(&c.id)
                .data(serde_json::json!({ "published": c.published })),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Saves a client's registration (everything but its secret and webhook
    /// delivery state); `false` if there is no such client. `client.updated`
    /// names who changed it and whether the app is now published.
    pub async fn update_client(&self, c: &Client, actor: Actor<'_>) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE clients SET name = $1, photo_url = $2, redirect_uris = $3, allowed_scopes = $4, user_types = $5,
                                description = $6, connect_redirect_url = $7, published = $8, webhook_url = $9,
                                webhook_secret_version = $10, updated_at = $11, authorization_level = $12,
                                provisioning_scopes = $13, access_token_format = $15, id_token_alg = $16,
                                resource_server = $17
             WHERE id = $14",
        )
        .bind(&c.name)
        .bind(&c.photo_url)
        .bind(uris(c))
        .bind(c.allowed_scopes.to_string())
        .bind(join_user_types(&c.user_types))
        .bind(&c.description)
        .bind(&c.connect_redirect_url)
        .bind(i64::from(c.published))
        .bind(&c.webhook_url)
        .bind(c.webhook_secret_version)
        .bind(c.updated_at)
        .bind(c.authorization_level.as_str())
        .bind(c.provisioning_scopes.as_ref().map(ScopeSet::to_string))
        .bind(&c.id)
        .bind(if c.jwt_access_tokens { "jwt" } else { "opaque" })
        .bind(c.id_token_alg.as_str())
        .bind(i64::from(c.resource_server))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            append(
                &mut tx,
                c.updated_at,
                &Event::new(EventKind::ClientUpdated)
                    .by(actor)
                    .client(&c.id)
                    .data(serde_json::json!({ "published": c.published })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn client(&self, id: &str) -> Result<Option<Client>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM clients WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The confidential client whose secret, or whose secret a rotation
    /// replaced, has this digest (Hint's partner-level `Authorization:
    /// Bearer <client_secret>`); whether a replaced one is still accepted
    /// is `Client::secret_matches`'s to say.
    pub async fn client_by_secret_digest(&self, digest: &str) -> Result<Option<Client>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM clients
             WHERE (secret_digest = $1 OR previous_secret_digest = $1) AND kind = 'confidential'"
        ));
        let row = sqlx::query(sql)
            .bind(digest)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn clients(&self) -> Result<Vec<Client>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM clients ORDER BY created_at, id"
        ));
        let rows = sqlx::query(sql).fetch_all(&self.reader).await?;
        rows.iter().map(from_row).collect()
    }

    /// The apps a person registered in the developer portal, newest first.
    pub async fn clients_of_owner(&self, owner_id: &str) -> Result<Vec<Client>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM clients WHERE owner_id = $1 ORDER BY created_at DESC, id"
        ));
        let rows = sqlx::query(sql)
            .bind(owner_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Apps listed in the integration directory, by name. A suspended app
    /// is not listed.
    pub async fn published_clients(&self) -> Result<Vec<Client>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM clients WHERE published = 1 AND suspended_at IS NULL ORDER BY name, id"
        ));
        let rows = sqlx::query(sql).fetch_all(&self.reader).await?;
        rows.iter().map(from_row).collect()
    }

    /// Replaces the client's secret digest, in one transaction with
    /// `client.secret_rotated`; `false` if there is no such confidential
    /// client. With `previous_until` (after `now`), the secret replaced stays
    /// accepted until then (the grace period) and replaces any earlier one
    /// still in its grace; without, every earlier secret ends at once.
    pub async fn set_client_secret(
        &self,
        id: &str,
        secret_digest: &str,
        previous_until: Option<i64>,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<bool> {
        let previous_until = previous_until.filter(|until| *until > now);
        let mut tx = self.writer.begin().await?;
        // The right-hand sides read the row as it was: the previous digest
        // is the secret being replaced.
        let sql = if previous_until.is_some() {
            "UPDATE clients SET previous_secret_digest = secret_digest, previous_secret_expires_at = $4,
                                secret_digest = $1, updated_at = $2
             WHERE id = $3 AND kind = 'confidential'"
        } else {
            "UPDATE clients SET previous_secret_digest = NULL, previous_secret_expires_at = NULL,
                                secret_digest = $1, updated_at = $2
             WHERE id = $3 AND kind = 'confidential'"
        };
        let mut query = sqlx::query(sql).bind(secret_digest).bind(now).bind(id);
        if let Some(until) = previous_until {
            query = query.bind(until);
        }
        let done = query.execute(&mut *tx).await?;
        if done.rows_affected() == 1 {
            append(
                &mut tx,
                now,
                &Event::new(EventKind::ClientSecretRotated)
                    .by(actor)
                    .client(id)
                    .data(serde_json::json!({ "previous_secret_expires_at": previous_until })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Keeps a photo uploaded for an app and points its `photo_url` at
    /// where it is served, in one transaction; `false` if there is no such
    /// client.
    pub async fn set_client_photo(
        &self,
        id: &str,
        content_type: &str,
        bytes: &[u8],
        photo_url: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("UPDATE clients SET photo_url = $1, updated_at = $2 WHERE id = $3")
            .bind(photo_url)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            sqlx::query("DELETE FROM client_photos WHERE client_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO client_photos (client_id, content_type, bytes, updated_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(content_type)
            .bind(bytes.to_vec())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The photo uploaded for an app: its content type and bytes.
    pub async fn client_photo(&self, id: &str) -> Result<Option<(String, Vec<u8>)>> {
        let row = sqlx::query("SELECT content_type, bytes FROM client_photos WHERE client_id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| Ok((r.try_get("content_type")?, r.try_get("bytes")?)))
            .transpose()
    }

    /// Forgets an app's uploaded photo (its `photo_url` is the caller's).
    pub async fn delete_client_photo(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM client_photos WHERE client_id = $1")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Deletes a client and, by cascade, its codes, consents, tokens and
    /// integrations.
    pub async fn delete_client(&self, id: &str, actor: Actor<'_>, now: i64) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("DELETE FROM clients WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            append(
                &mut tx,
                now,
                &Event::new(EventKind::ClientDeleted).by(actor).subject(id),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
