//! Registered clients (partner apps).

use healthgate_core::client::{Client, ClientKind, PreviousSecret};
use healthgate_core::event::EventKind;
use healthgate_core::listing::{Listing, ListingState, ReviewedField};
use healthgate_core::redirect::RedirectUri;
use healthgate_core::review::{self, Decision, ListingError, Transition};
use healthgate_core::scope::ScopeSet;
use healthgate_core::user::{join_user_types, parse_user_types};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::events::{Actor, Event, append};
use crate::{Backend, Result, Store, StoreError, conflict};

const COLUMNS: &str = "id, name, photo_url, redirect_uris, allowed_scopes, user_types, kind, secret_digest, description, \
                       connect_redirect_url, published, webhook_url, webhook_secret_version, webhook_muted_at, \
                       authorization_level, provisioning_scopes, access_token_format, id_token_alg, owner_id, suspended_at, \
                       resource_server, require_mfa, require_dpop, require_par, registered_with, registration_access_digest, smart_launcher, launch_url, jwks_uri, jwks, previous_secret_digest, previous_secret_expires_at, created_at, updated_at, \
                       listing, listing_requested_at, listing_reviewed_at, listing_reviewed_by, listing_reason, listing_changes";

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
        listing: Listing {
            state: row
                .try_get::<String, _>("listing")?
                .parse::<ListingState>()
                .map_err(|_| corrupt("listing"))?,
            requested_at: row.try_get("listing_requested_at")?,
            reviewed_at: row.try_get("listing_reviewed_at")?,
            reviewed_by: row.try_get("listing_reviewed_by")?,
            reason: row.try_get("listing_reason")?,
            changed: ReviewedField::split(
                &row.try_get::<Option<String>, _>("listing_changes")?
                    .unwrap_or_default(),
            )
            .map_err(|_| corrupt("listing changes"))?,
        },
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
        require_mfa: row.try_get::<i64, _>("require_mfa")? != 0,
        require_dpop: row.try_get::<i64, _>("require_dpop")? != 0,
        require_par: row.try_get::<i64, _>("require_par")? != 0,
        registered_with: row.try_get("registered_with")?,
        registration_access_digest: row.try_get("registration_access_digest")?,
        smart_launcher: row.try_get::<i64, _>("smart_launcher")? != 0,
        launch_url: row.try_get("launch_url")?,
        jwks_uri: row.try_get("jwks_uri")?,
        jwks: row.try_get("jwks")?,
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

/// What a decision about an app's directory listing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingOutcome {
    /// The listing moved, and its event was written; it is now this.
    Moved(Listing),
    /// It already was as asked: nothing changed, nothing was written.
    Unchanged(Listing),
    /// The listing cannot move so (`review::decide`); nothing changed.
    Refused(ListingError),
    NoSuchClient,
}

/// What saving a changed registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSaved {
    /// Saved; the listing as it is now (sent back for review, asked for or
    /// withdrawn in the same transaction, if the change did that).
    Saved(Listing),
    /// The change would leave the listing where it may not be (a request
    /// without a connect URL); nothing was saved.
    ListingRefused(ListingError),
    NoSuchClient,
}

/// Writes `listing` as the app's, with `published` kept as "listed" for
/// nodes of the previous version during an upgrade (migration 0012).
async fn write_listing(
    conn: &mut sqlx::AnyConnection,
    client_id: &str,
    listing: &Listing,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE clients SET listing = $1, listing_requested_at = $2, listing_reviewed_at = $3,
                            listing_reviewed_by = $4, listing_reason = $5, listing_changes = $6,
                            published = $7, updated_at = $8
         WHERE id = $9",
    )
    .bind(listing.state.as_str())
    .bind(listing.requested_at)
    .bind(listing.reviewed_at)
    .bind(&listing.reviewed_by)
    .bind(&listing.reason)
    .bind(Some(ReviewedField::join(&listing.changed)).filter(|c| !c.is_empty()))
    .bind(i64::from(listing.is_approved()))
    .bind(now)
    .bind(client_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The event that records a listing's move of app `c` (as it is after the
/// move's change), with what the audit trail and the partner need: the
/// operator's reason, the changes that sent it back, what was approved.
fn listing_event<'a>(
    c: &'a Client,
    before: ListingState,
    t: &'a Transition,
    actor: Actor<'a>,
) -> Event<'a> {
    let event = Event::new(t.event).by(actor).client(&c.id).subject(&c.id);
    match t.event {
        EventKind::ListingRequested if !t.next.changed.is_empty() => {
            event.data(serde_json::json!({
                "changed": t.next.changed.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            }))
        }
        EventKind::ListingWithdrawn => event.data(serde_json::json!({ "was": before.as_str() })),
        EventKind::ListingApproved => event.data(serde_json::json!({
            "name": c.name,
            "scope": c.allowed_scopes.to_string(),
            "connect_url": c.connect_redirect_url,
        })),
        EventKind::ListingRejected | EventKind::ClientUnlisted => {
            event.data(serde_json::json!({ "reason": t.next.reason }))
        }
        _ => event,
    }
}

impl Store {
    /// App `id` read inside a transaction that is about to change it: on
    /// PostgreSQL its row stays locked until the transaction ends, so a
    /// decision taken on what was read holds when it is written (SQLite has
    /// one writer, which serialises these transactions already).
    async fn client_for_update(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<Option<Client>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM clients WHERE id = $1{lock}"));
        let row = sqlx::query(sql).bind(id).fetch_optional(&mut *conn).await?;
        row.as_ref().map(from_row).transpose()
    }

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
                                  owner_id, resource_server, listing, listing_requested_at, listing_reviewed_at,
                                  listing_reviewed_by, listing_reason, listing_changes, require_mfa,
                                  smart_launcher, launch_url, jwks_uri, jwks, require_dpop, require_par,
                                  registered_with, registration_access_digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                     $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36)",
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
        .bind(i64::from(c.listing.is_approved()))
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
        .bind(c.listing.state.as_str())
        .bind(c.listing.requested_at)
        .bind(c.listing.reviewed_at)
        .bind(&c.listing.reviewed_by)
        .bind(&c.listing.reason)
        .bind(Some(ReviewedField::join(&c.listing.changed)).filter(|j| !j.is_empty()))
        .bind(i64::from(c.require_mfa))
        .bind(i64::from(c.smart_launcher))
        .bind(&c.launch_url)
        .bind(&c.jwks_uri)
        .bind(&c.jwks)
        .bind(i64::from(c.require_dpop))
        .bind(i64::from(c.require_par))
        .bind(&c.registered_with)
        .bind(&c.registration_access_digest)
        .execute(&mut *tx)
        .await
        .map_err(conflict("client"))?;
        append(
            &mut tx,
            c.created_at,
            &Event::new(EventKind::ClientCreated)
                .by(actor)
                .client(&c.id)
                .data(serde_json::json!({
                    "listing": c.listing.state.as_str(),
                    "registered_with": c.registered_with,
                })),
        )
        .await?;
        // Registered asking to be listed (or, seeding a demo, listed): the
        // listing's own event, in the same transaction.
        let listed = match c.listing.state {
            ListingState::Requested => Some(EventKind::ListingRequested),
            ListingState::Approved => Some(EventKind::ListingApproved),
            ListingState::NotListed | ListingState::Rejected => None,
        };
        if let Some(event) = listed {
            let t = Transition {
                next: c.listing.clone(),
                event,
            };
            append(
                &mut tx,
                c.created_at,
                &listing_event(c, ListingState::NotListed, &t, actor),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Saves a client's registration (everything but its secret, its
    /// webhook delivery state and its listing). In the same transaction,
    /// the listing moves as `review::after_update` says, from the app as
    /// stored: `wanted` is what the developer's form or the command line
    /// said of listing (`None`: nothing), and a change of what practices
    /// rely on (name, scopes, connect URL) sends an approved app back for
    /// review. `client.updated` names who changed it and the listing after.
    pub async fn update_client(
        &self,
        c: &Client,
        wanted: Option<bool>,
        actor: Actor<'_>,
    ) -> Result<ClientSaved> {
        let mut tx = self.writer.begin().await?;
        let Some(before) = self.client_for_update(&mut tx, &c.id).await? else {
            return Ok(ClientSaved::NoSuchClient);
        };
        let moved = match review::after_update(&before, c, wanted, c.updated_at) {
            Ok(moved) => moved,
            Err(refused) => return Ok(ClientSaved::ListingRefused(refused)),
        };
        sqlx::query(
            "UPDATE clients SET name = $1, photo_url = $2, redirect_uris = $3, allowed_scopes = $4, user_types = $5,
                                description = $6, connect_redirect_url = $7, webhook_url = $8,
                                webhook_secret_version = $9, updated_at = $10, authorization_level = $11,
                                provisioning_scopes = $12, access_token_format = $14, id_token_alg = $15,
                                resource_server = $16, require_mfa = $17, smart_launcher = $18, launch_url = $19,
                                jwks_uri = $20, jwks = $21, require_dpop = $22, require_par = $23
             WHERE id = $13",
        )
        .bind(&c.name)
        .bind(&c.photo_url)
        .bind(uris(c))
        .bind(c.allowed_scopes.to_string())
        .bind(join_user_types(&c.user_types))
        .bind(&c.description)
        .bind(&c.connect_redirect_url)
        .bind(&c.webhook_url)
        .bind(c.webhook_secret_version)
        .bind(c.updated_at)
        .bind(c.authorization_level.as_str())
        .bind(c.provisioning_scopes.as_ref().map(ScopeSet::to_string))
        .bind(&c.id)
        .bind(if c.jwt_access_tokens { "jwt" } else { "opaque" })
        .bind(c.id_token_alg.as_str())
        .bind(i64::from(c.resource_server))
        .bind(i64::from(c.require_mfa))
        .bind(i64::from(c.smart_launcher))
        .bind(&c.launch_url)
        .bind(&c.jwks_uri)
        .bind(&c.jwks)
        .bind(i64::from(c.require_dpop))
        .bind(i64::from(c.require_par))
        .execute(&mut *tx)
        .await?;
        let listing = moved
            .as_ref()
            .map_or_else(|| before.listing.clone(), |t| t.next.clone());
        append(
            &mut tx,
            c.updated_at,
            &Event::new(EventKind::ClientUpdated)
                .by(actor)
                .client(&c.id)
                .data(serde_json::json!({ "listing": listing.state.as_str() })),
        )
        .await?;
        if let Some(t) = &moved {
            write_listing(&mut tx, &c.id, &t.next, c.updated_at).await?;
            append(
                &mut tx,
                c.updated_at,
                &listing_event(c, before.listing.state, t, actor),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ClientSaved::Saved(listing))
    }

    /// Decides `decision` about app `client_id`'s directory listing, made
    /// by `actor` (an operator reviewing, the developer asking or
    /// withdrawing, nobody for the command line), from the app as stored,
    /// and writes the move with its event in one transaction.
    pub async fn decide_listing(
        &self,
        client_id: &str,
        decision: Decision<'_>,
        actor: Actor<'_>,
        now: i64,
    ) -> Result<ListingOutcome> {
        let mut tx = self.writer.begin().await?;
        let Some(c) = self.client_for_update(&mut tx, client_id).await? else {
            return Ok(ListingOutcome::NoSuchClient);
        };
        // Only an operator's decision names a reviewer.
        let reviewer = match decision {
            Decision::Approve { .. } | Decision::Reject { .. } | Decision::Unlist { .. } => {
                actor.user_id
            }
            Decision::Request | Decision::Withdraw => None,
        };
        let t = match review::decide(&c, decision, reviewer, now) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(ListingOutcome::Unchanged(c.listing)),
            Err(refused) => return Ok(ListingOutcome::Refused(refused)),
        };
        write_listing(&mut tx, client_id, &t.next, now).await?;
        append(&mut tx, now, &listing_event(&c, c.listing.state, &t, actor)).await?;
        tx.commit().await?;
        Ok(ListingOutcome::Moved(t.next))
    }

    /// The apps whose listing is in `state`, the longest waiting (or
    /// reviewed) first.
    pub async fn clients_in_listing(&self, state: ListingState) -> Result<Vec<Client>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM clients WHERE listing = $1
             ORDER BY COALESCE(listing_reviewed_at, listing_requested_at, created_at), created_at, id"
        ));
        let rows = sqlx::query(sql)
            .bind(state.as_str())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Whether `origin` (`https://app.example.org`) is the web origin of a
    /// redirect URI of any app not suspended: a browser app's page asking the
    /// token endpoint's CORS preflight, which names no app.
    pub async fn origin_registered(&self, origin: &str) -> Result<bool> {
        let pattern = format!(
            "%{}%",
            origin
                .replace('!', "!!")
                .replace('%', "!%")
                .replace('_', "!_")
        );
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT redirect_uris FROM clients WHERE suspended_at IS NULL AND redirect_uris LIKE $1 ESCAPE '!'",
        )
        .bind(pattern)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().any(|uris| {
            uris.lines().any(|l| {
                RedirectUri::from_stored(l.to_owned())
                    .web_origin()
                    .as_deref()
                    == Some(origin)
            })
        }))
    }

    pub async fn client(&self, id: &str) -> Result<Option<Client>> {
        Ok(self
            .client_with_version(id)
            .await?
            .map(|(client, _)| client))
    }

    /// A client with the version stamp its record carries now: a copy kept
    /// in memory is the registration as long as the stamp is unchanged
    /// ([`Store::client_is`], `Claim::Client`).
    pub async fn client_with_version(&self, id: &str) -> Result<Option<(Client, i64)>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, version FROM clients WHERE id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|row| Ok((from_row(&row)?, row.try_get("version")?)))
            .transpose()
    }

    /// Whether the client `id` still carries the version stamp `version`:
    /// not changed, suspended or deleted since it was read with it.
    pub async fn client_is(&self, id: &str, version: i64) -> Result<bool> {
        let same: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM clients WHERE id = $1 AND version = $2")
                .bind(id)
                .bind(version)
                .fetch_optional(&self.reader)
                .await?;
        Ok(same.is_some())
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

    /// Apps listed in the integration directory, by name: those whose
    /// listing an operator approved. A suspended app is not listed.
    pub async fn published_clients(&self) -> Result<Vec<Client>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM clients WHERE listing = 'approved' AND suspended_at IS NULL ORDER BY name, id"
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

impl Store {
    /// Records the `jti` of a client assertion just accepted, until it
    /// expires: false when this client used it before (a replay, on this
    /// node or any other).
    pub async fn use_client_assertion(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (client_id, jti) DO NOTHING",
        )
        .bind(client_id)
        .bind(jti)
        .bind(expires_at)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the `jti` of a DPoP proof signed by the key with thumbprint
    /// `jkt` (RFC 9449 §11.1), kept until `expires_at`. `false`: that key
    /// used it before, on this node or another (a replay).
    pub async fn use_dpop_proof(&self, jkt: &str, jti: &str, expires_at: i64) -> Result<bool> {
        self.proofs.record(jkt, jti, expires_at).await
    }
}
