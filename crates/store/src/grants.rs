//! Consents, authorization codes and the token families that descend from
//! them: issuing, redeeming, rotating and revoking.
//!
//! Every single-use thing is consumed by one conditional
//! `UPDATE … WHERE consumed_at IS NULL` inside the transaction that issues
//! what replaces it; zero rows means a replay, which revokes the family
//! (RFC 6749 §4.1.2 and §10.5, RFC 9700 §4.14.2).

use std::collections::{HashMap, HashSet};

use healthgate_core::grant::{
    Claim, CodeRead, NewFamily, Record, RefreshRead, Retirement, TokenRows, Write,
};
use healthgate_core::mfa::Amr;
use healthgate_core::owner::ResourceOwner;
use healthgate_core::pkce::CodeChallenge;
use healthgate_core::scope::ScopeSet;
use healthgate_core::smart::SmartContext;
use healthgate_core::token::{AccessToken, AuthorizationCode, GrantContext, RefreshToken};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Connection, Row, Transaction};

use crate::events::{Actor, Event, append, noted};
use crate::users::{insert_user_in, user_from_row};
use crate::{Result, Store, StoreError};
use healthgate_core::event::EventKind;
use healthgate_core::secret::new_ordered_id;
use healthgate_core::user::User;

/// Whether a grant's write was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Written and committed, whole.
    Done,
    /// A claim no longer held (another request used the code or refresh
    /// token first, or the account was locked since it was read): nothing
    /// was written; read and decide again.
    Stale,
    /// The client's registration changed since the decision read it
    /// ([`Claim::Client`]): nothing was written; authenticate the client
    /// again from the database before deciding anything.
    ClientChanged,
}

fn scope_of(row: &AnyRow, column: &str) -> Result<ScopeSet> {
    ScopeSet::parse(&row.try_get::<String, _>(column).map_err(StoreError::from)?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn code_from_row(row: &AnyRow) -> Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        family_id: row.try_get("family_id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        redirect_uri_provided: row.try_get::<i64, _>("redirect_uri_provided")? != 0,
        scope: scope_of(row, "scope")?,
        code_challenge: row
            .try_get::<Option<String>, _>("code_challenge")?
            .map(CodeChallenge::from_stored),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        grant: {
            let organization_id: Option<String> = row.try_get("organization_id")?;
            let owner = owner_of(row)?;
            // An organization-level grant's owner is the organization itself.
            let organization_level =
                owner.as_ref().map(|o| Some(&o.id)) == Some(organization_id.as_ref());
            GrantContext {
                organization_id,
                owner,
                organization_level,
                smart: smart_of(row)?,
            }
        },
        nonce: row.try_get("nonce")?,
        auth_time: row.try_get("auth_time")?,
        amr: amr_of(row)?,
        dpop_jkt: row.try_get("dpop_jkt")?,
    })
}

/// A row's `smart` column: the SMART context of a grant (`NULL` for any
/// other).
fn smart_of(row: &AnyRow) -> Result<Option<SmartContext>> {
    row.try_get::<Option<String>, _>("smart")?
        .map(|text| {
            SmartContext::from_stored(&text)
                .map_err(|e| StoreError::Corrupt(format!("SMART context: {e}")))
        })
        .transpose()
}

/// The methods in a row's `amr` column (none for grants made without a
/// person signing in).
fn amr_of(row: &AnyRow) -> Result<Amr> {
    Ok(Amr::parse(
        row.try_get::<Option<String>, _>("amr")?
            .as_deref()
            .unwrap_or(""),
    ))
}

/// The stored form of `amr`: `NULL` when empty.
fn amr_column(amr: &Amr) -> Option<String> {
    (!amr.is_empty()).then(|| amr.to_string())
}

/// The resource owner in a row's `owner_type` and `owner_id` columns.
fn owner_of(row: &AnyRow) -> Result<Option<ResourceOwner>> {
    Ok(
        match (
            row.try_get::<Option<String>, _>("owner_type")?,
            row.try_get::<Option<String>, _>("owner_id")?,
        ) {
            (Some(kind), Some(id)) => Some(ResourceOwner { id, kind }),
            _ => None,
        },
    )
}

/// A refresh token by digest. It reads as revoked when its family is, or
/// while its client is suspended (a suspension revokes the families; this
/// covers one issued in the instant the suspension was committing).
pub(crate) const REFRESH_SELECT: &str = "SELECT r.digest, r.family_id, r.client_id, r.user_id, r.scope, r.redirect_uri, r.parent_digest,
        r.created_at, r.expires_at, r.consumed_at, r.first_used_at,
        COALESCE(r.revoked_at, f.revoked_at, c.suspended_at) AS revoked_at
 FROM refresh_tokens r JOIN token_families f ON f.id = r.family_id JOIN clients c ON c.id = f.client_id
 WHERE r.digest = $1";

pub(crate) fn refresh_from_row(row: &AnyRow) -> Result<RefreshToken> {
    Ok(RefreshToken {
        digest: row.try_get("digest")?,
        family_id: row.try_get("family_id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        scope: scope_of(row, "scope")?,
        redirect_uri: row.try_get("redirect_uri")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        consumed_at: row.try_get("consumed_at")?,
        revoked_at: row.try_get("revoked_at")?,
        parent_digest: row.try_get("parent_digest")?,
        first_used_at: row.try_get("first_used_at")?,
    })
}

/// Revokes a whole token family: every access and refresh token in it stops
/// working on the next request.
/// Returns whether a live family was revoked; raises `token.family_revoked`
/// for the partner and the trail when it was.
pub(crate) async fn revoke_family(
    tx: &mut AnyConnection,
    family_id: &str,
    reason: &str,
    now: i64,
) -> Result<bool> {
    let revoked: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE token_families SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL
         RETURNING client_id, user_id",
    )
    .bind(now)
    .bind(reason)
    .bind(family_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((client_id, user_id)) = revoked else {
        return Ok(false);
    };
    let event = Event::new(EventKind::TokenFamilyRevoked)
        .client(&client_id)
        .subject(family_id)
        .data(serde_json::json!({ "family_id": family_id, "user_id": user_id, "reason": reason }));
    append(tx, now, &event).await?;
    Ok(true)
}

/// The rows the writes of one transaction insert, gathered so that each
/// table gets one statement however many writes share the commit (each
/// statement is a round trip to the database; on SQLite, to its thread).
/// Each row keeps its write's `now`. A write only names rows that were
/// committed before it was decided, never rows another write of the same
/// transaction inserts, so inserting them last changes nothing.
#[derive(Default)]
pub(crate) struct Inserts<'a> {
    /// Refresh tokens whose access tokens are revoked (immediate rotation
    /// retires both halves of the old pair); done first.
    access_revoked_with: Vec<(i64, &'a String)>,
    families: Vec<(i64, &'a NewFamily)>,
    tokens: Vec<(i64, &'a TokenRows)>,
    records: Vec<(i64, &'a Record)>,
}

/// `head VALUES ($1, …, $n), (…)`: `rows` rows of `columns` parameters.
fn values(head: &str, columns: usize, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + rows * columns * 5);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", row * columns + column + 1);
        }
        sql.push(')');
    }
    sql
}

impl<'a> Inserts<'a> {
    /// Revokes the access tokens of the refresh tokens gathered, then
    /// inserts every gathered row: families first (the tokens name them),
    /// then refresh tokens, access tokens and records.
    pub(crate) async fn flush(self, conn: &mut AnyConnection) -> Result<()> {
        let mut revoked = self.access_revoked_with.iter().peekable();
        while let Some(&&(now, _)) = revoked.peek() {
            let mut digests = Vec::new();
            while let Some((_, digest)) = revoked.next_if(|(n, _)| *n == now) {
                digests.push(digest.as_str());
            }
            let head = "UPDATE access_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND refresh_digest IN";
            let mut query =
                sqlx::query(sqlx::AssertSqlSafe(in_list(head, 2, digests.len()))).bind(now);
            for digest in digests {
                query = query.bind(digest);
            }
            query.execute(&mut *conn).await?;
        }
        if !self.families.is_empty() {
            let sql = values(
                "INSERT INTO token_families (id, client_id, user_id, created_at, organization_id, owner_type, owner_id, granted_by, scope, amr, smart, dpop_jkt)",
                12,
                self.families.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (now, f) in &self.families {
                q = q
                    .bind(&f.id)
                    .bind(&f.client_id)
                    .bind(&f.user_id)
                    .bind(*now)
                    .bind(&f.grant.organization_id)
                    .bind(f.grant.owner.as_ref().map(|o| o.kind.as_str()))
                    .bind(f.grant.owner.as_ref().map(|o| o.id.as_str()))
                    .bind(&f.granted_by)
                    .bind(f.scope.to_string())
                    .bind(amr_column(&f.amr))
                    .bind(f.grant.smart.as_ref().map(SmartContext::to_stored))
                    .bind(&f.dpop_jkt);
            }
            q.execute(&mut *conn).await?;
        }
        let refresh: Vec<_> = self
            .tokens
            .iter()
            .filter_map(|(now, t)| t.refresh_digest.as_ref().map(|d| (*now, *t, d)))
            .collect();
        if !refresh.is_empty() {
            let sql = values(
                "INSERT INTO refresh_tokens (digest, family_id, client_id, user_id, scope, redirect_uri, parent_digest, created_at, expires_at)",
                9,
                refresh.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (now, t, digest) in &refresh {
                q = q
                    .bind(*digest)
                    .bind(&t.family_id)
                    .bind(&t.client_id)
                    .bind(&t.user_id)
                    .bind(t.grant_scope.to_string())
                    .bind(&t.redirect_uri)
                    .bind(&t.parent_refresh)
                    .bind(*now)
                    .bind(t.refresh_expires_at);
            }
            q.execute(&mut *conn).await?;
        }
        if !self.tokens.is_empty() {
            let sql = values(
                "INSERT INTO access_tokens (digest, family_id, client_id, user_id, scope, refresh_digest, parent_refresh_digest, created_at, expires_at, dpop_jkt)",
                10,
                self.tokens.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (now, t) in &self.tokens {
                q = q
                    .bind(&t.access_digest)
                    .bind(&t.family_id)
                    .bind(&t.client_id)
                    .bind(&t.user_id)
                    .bind(t.access_scope.to_string())
                    .bind(&t.refresh_digest)
                    .bind(&t.parent_refresh)
                    .bind(*now)
                    .bind(t.access_expires_at)
                    .bind(&t.access_jkt);
            }
            q.execute(&mut *conn).await?;
        }
        // A record that notifies a partner queues its delivery with it.
        let (notifying, quiet): (Vec<_>, Vec<_>) = self
            .records
            .iter()
            .partition(|(_, r)| r.kind.notifies_partner() && r.client_id.is_some());
        for (now, record) in notifying {
            append(conn, now, &event_of(record)).await?;
        }
        if !quiet.is_empty() {
            let rows: Vec<_> = quiet
                .iter()
                .map(|(now, r)| {
                    (
                        new_ordered_id("evt", *now),
                        *now,
                        *r,
                        r.data.as_ref().map(|d| d.to_string()),
                    )
                })
                .collect();
            let sql = values(
                "INSERT INTO events (id, at, kind, actor_user_id, subject, client_id, organization_id, ip, outcome, data)",
                10,
                rows.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, now, r, data) in &rows {
                noted(id, &event_of(r));
                q = q
                    .bind(id)
                    .bind(*now)
                    .bind(r.kind.as_str())
                    .bind(&r.actor)
                    .bind(&r.subject)
                    .bind(&r.client_id)
                    .bind(&r.organization_id)
                    .bind(&r.ip)
                    .bind(r.outcome.as_str())
                    .bind(data);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// `head ($first, $first + 1, …)`: a list of `count` parameters.
fn in_list(head: &str, first: usize, count: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + count * 5 + 2);
    sql.push_str(head);
    sql.push_str(" (");
    for n in first..first + count {
        let _ = write!(sql, "{}${n}", if n == first { "" } else { ", " });
    }
    sql.push(')');
    sql
}

/// The rows of `head (…)` for these ids, each asked once; none asked when
/// there are none.
async fn select_in(tx: &mut AnyConnection, head: &str, mut ids: Vec<&str>) -> Result<Vec<AnyRow>> {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(in_list(head, 1, ids.len())));
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(&mut *tx).await?)
}

/// What a group commit reads, one statement per kind, before it applies
/// its writes: the version stamps of the clients their claims name, and
/// which of the accounts they name are active.
#[derive(Debug, Default)]
pub(crate) struct BatchReads {
    /// Whether these were read: then a client or an account missing here
    /// was deleted (or is locked).
    read: bool,
    clients: HashMap<String, i64>,
    active_users: HashSet<String>,
}

impl BatchReads {
    pub(crate) async fn read(tx: &mut AnyConnection, writes: &[&Write]) -> Result<Self> {
        let (mut clients, mut users) = (Vec::new(), Vec::new());
        for claim in writes.iter().flat_map(|w| &w.claims) {
            match claim {
                Claim::Client { id, .. } => clients.push(id.as_str()),
                Claim::ActiveUser(id) => users.push(id.as_str()),
                Claim::Code(_) | Claim::Refresh(_) => {}
            }
        }
        let mut reads = Self {
            read: true,
            ..Self::default()
        };
        for row in select_in(tx, "SELECT id, version FROM clients WHERE id IN", clients).await? {
            reads
                .clients
                .insert(row.try_get("id")?, row.try_get("version")?);
        }
        let active = "SELECT id FROM users WHERE locked_at IS NULL AND id IN";
        for row in select_in(tx, active, users).await? {
            reads.active_users.insert(row.try_get("id")?);
        }
        Ok(reads)
    }

    /// Whether a claim that only reads holds, as read.
    fn holds(&self, claim: &Claim) -> bool {
        match claim {
            Claim::Client { id, version } => self.clients.get(id) == Some(version),
            Claim::ActiveUser(id) => self.active_users.contains(id),
            Claim::Code(_) | Claim::Refresh(_) => true,
        }
    }

    /// How `w` fails on its claims that only read, if it does.
    fn refuses(&self, w: &Write) -> Option<Applied> {
        w.claims
            .iter()
            .find(|claim| !self.holds(claim))
            .map(stale_by)
    }
}

/// What a write whose `claim` no longer holds comes to.
fn stale_by(claim: &Claim) -> Applied {
    match claim {
        Claim::Client { .. } => Applied::ClientChanged,
        Claim::Code(_) | Claim::Refresh(_) | Claim::ActiveUser(_) => Applied::Stale,
    }
}

/// Consumes what each claim consumes (a code or a refresh token, unused
/// until now), with one `UPDATE … RETURNING` per table and instant however
/// many there are, and says which held. Of claims on the same thing, the
/// first holds.
async fn consume(tx: &mut AnyConnection, claims: &[(i64, &Claim)]) -> Result<Vec<bool>> {
    let mut held = vec![false; claims.len()];
    // (table, instant, [(claim's index, digest)])
    type Group<'c> = (&'static str, i64, Vec<(usize, &'c str)>);
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, (now, claim)) in claims.iter().enumerate() {
        let (table, digest) = match claim {
            Claim::Code(digest) => ("authorization_codes", digest),
            Claim::Refresh(digest) => ("refresh_tokens", digest),
            Claim::ActiveUser(_) | Claim::Client { .. } => continue,
        };
        match groups.iter_mut().find(|(t, n, _)| *t == table && n == now) {
            Some((_, _, members)) => members.push((i, digest)),
            None => groups.push((table, *now, vec![(i, digest)])),
        }
    }
    for (table, now, members) in groups {
        let head =
            format!("UPDATE {table} SET consumed_at = $1 WHERE consumed_at IS NULL AND digest IN");
        let sql = in_list(&head, 2, members.len()) + " RETURNING digest";
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for (_, digest) in &members {
            query = query.bind(*digest);
        }
        let mut consumed: HashSet<String> = query
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("digest"))
            .collect::<std::result::Result<_, sqlx::Error>>()?;
        for (i, digest) in members {
            held[i] = consumed.remove(digest);
        }
    }
    Ok(held)
}

/// Whether one claim of a write holds, consuming what it consumes. Claims
/// that only read are answered from `reads` when it was read.
async fn hold(tx: &mut AnyConnection, claim: &Claim, reads: &BatchReads, now: i64) -> Result<bool> {
    if reads.read && !claim.consumes() {
        return Ok(reads.holds(claim));
    }
    let found: Option<i64> = match claim {
        Claim::Code(_) | Claim::Refresh(_) => return Ok(consume(tx, &[(now, claim)]).await?[0]),
        Claim::Client { id, version } => {
            sqlx::query_scalar("SELECT 1 FROM clients WHERE id = $1 AND version = $2")
                .bind(id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?
        }
        Claim::ActiveUser(id) => {
            sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 AND locked_at IS NULL")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }
    };
    Ok(found.is_some())
}

/// Applies one write in `tx` and commits it whole; a stale write is
/// rolled back (with whatever `tx` did before it).
pub(crate) async fn apply_whole(
    mut tx: Transaction<'static, Any>,
    write: &Write,
) -> Result<Applied> {
    let mut inserts = Inserts::default();
    let applied = apply_in(&mut tx, write, &BatchReads::default(), &mut inserts).await?;
    if applied == Applied::Done {
        inserts.flush(&mut tx).await?;
        tx.commit().await?;
    }
    Ok(applied)
}

/// Applies a grant's write inside `tx`, in the order [`Write`] documents:
/// claims, revocations and retirements now, its new rows gathered into
/// `inserts` for [`Inserts::flush`]. On [`Applied::Stale`] it has written
/// and gathered nothing.
pub(crate) async fn apply_in<'a>(
    tx: &mut AnyConnection,
    w: &'a Write,
    reads: &BatchReads,
    inserts: &mut Inserts<'a>,
) -> Result<Applied> {
    // The claims that only read come first, so that a write that consumes
    // one thing (every grant's) has written nothing when it goes stale.
    let (consuming, reading): (Vec<&Claim>, Vec<&Claim>) =
        w.claims.iter().partition(|c| c.consumes());
    for claim in reading.into_iter().chain(consuming) {
        if !hold(tx, claim, reads, w.now).await? {
            return Ok(stale_by(claim));
        }
    }
    apply_rest(tx, w, inserts).await?;
    Ok(Applied::Done)
}

/// Applies the writes of one group commit inside `tx`, each as
/// [`apply_in`] would, but with one statement per kind of claim: the claims
/// that only read are answered from `reads`, and the one thing each write
/// consumes is consumed together with the others' ([`consume`]). A write
/// that consumes more than one thing is applied on its own, in a savepoint,
/// so that it still writes nothing when it goes stale.
pub(crate) async fn apply_together<'a>(
    tx: &mut AnyConnection,
    writes: &[&'a Write],
    reads: &BatchReads,
    inserts: &mut Inserts<'a>,
) -> Result<Vec<Applied>> {
    let mut outcomes: Vec<Option<Applied>> = writes.iter().map(|w| reads.refuses(w)).collect();
    let mut consumers = Vec::new();
    let mut claims = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        let mut consumed = w.claims.iter().filter(|c| c.consumes());
        match (consumed.next(), consumed.next()) {
            (Some(claim), None) => {
                consumers.push(i);
                claims.push((w.now, claim));
            }
            (None, _) => {}
            (Some(_), Some(_)) => {
                let mut savepoint = tx.begin().await?;
                let applied = apply_in(&mut savepoint, w, reads, inserts).await?;
                if applied == Applied::Done {
                    savepoint.commit().await?;
                }
                outcomes[i] = Some(applied);
            }
        }
    }
    for (i, held) in consumers.into_iter().zip(consume(tx, &claims).await?) {
        if !held {
            outcomes[i] = Some(Applied::Stale);
        }
    }
    let mut applied = Vec::with_capacity(writes.len());
    for (w, outcome) in writes.iter().zip(outcomes) {
        applied.push(match outcome {
            Some(outcome) => outcome,
            None => {
                apply_rest(tx, w, inserts).await?;
                Applied::Done
            }
        });
    }
    Ok(applied)
}

/// What a write does once its claims held: revocations and retirements
/// now, its new rows gathered into `inserts`.
async fn apply_rest<'a>(
    tx: &mut AnyConnection,
    w: &'a Write,
    inserts: &mut Inserts<'a>,
) -> Result<()> {
    if let Some((family, reason)) = &w.revoke_family {
        revoke_family(tx, family, reason, w.now).await?;
    }
    if let Some(refresh) = &w.revoke_access_of {
        inserts.access_revoked_with.push((w.now, refresh));
    }
    if let Some(r) = &w.retire {
        retire_parent(tx, r, w.now).await?;
    }
    if let Some(family) = &w.family {
        inserts.families.push((w.now, family));
    }
    if let Some(tokens) = &w.tokens {
        inserts.tokens.push((w.now, tokens));
    }
    inserts
        .records
        .extend(w.records.iter().map(|record| (w.now, record)));
    Ok(())
}

pub(crate) fn event_of(r: &Record) -> Event<'_> {
    Event {
        kind: r.kind,
        outcome: r.outcome,
        actor_user_id: r.actor.as_deref(),
        subject: r.subject.as_deref(),
        client_id: r.client_id.as_deref(),
        organization_id: r.organization_id.as_deref(),
        ip: r.ip.as_deref(),
        data: r.data.clone(),
    }
}

/// The statement that reads an access token by digest (`$1`) with its
/// family, what a client's suspension does to it folded into `revoked_at`;
/// the first argument adds columns, the second joins. The token's
/// `created_at` is read as `issued_at`, so that a joined row may bring its
/// own.
macro_rules! access_token_query {
    ($columns:literal, $joins:literal) => {
        concat!(
            "SELECT a.digest, a.family_id, a.client_id, a.user_id, a.scope, a.created_at AS issued_at, a.expires_at,
                    a.parent_refresh_digest, a.first_used_at,
                    COALESCE(a.revoked_at, f.revoked_at, c.suspended_at) AS revoked_at,
                    f.organization_id, f.owner_type, f.owner_id, f.granted_by, f.amr, f.smart, a.dpop_jkt",
            $columns,
            " FROM access_tokens a JOIN token_families f ON f.id = a.family_id JOIN clients c ON c.id = f.client_id",
            $joins,
            " WHERE a.digest = $1"
        )
    };
}

fn access_token_from_row(row: &AnyRow) -> Result<AccessToken> {
    Ok(AccessToken {
        digest: row.try_get("digest")?,
        family_id: row.try_get("family_id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        scope: scope_of(row, "scope")?,
        created_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        parent_refresh_digest: row.try_get("parent_refresh_digest")?,
        first_used_at: row.try_get("first_used_at")?,
        grant: GrantContext {
            organization_id: row.try_get("organization_id")?,
            owner: owner_of(row)?,
            organization_level: row.try_get::<Option<String>, _>("granted_by")?.is_some(),
            smart: smart_of(row)?,
        },
        amr: amr_of(row)?,
        dpop_jkt: row.try_get("dpop_jkt")?,
    })
}

/// An access token as an introspection request reads it
/// ([`Store::access_token_for_caller`]).
#[derive(Debug, Clone)]
pub struct TokenForCaller {
    pub token: AccessToken,
    /// The username of the account the token speaks for, while that account
    /// exists and is not locked.
    pub active_username: Option<String>,
    /// The version stamp the calling client's record carries now; `None`
    /// when it was deleted.
    pub caller_version: Option<i64>,
}

/// Whether a row's `live_user_id` and `user_locked_at` (a left join on the
/// account) name an account that exists and is not locked.
fn user_active(row: &AnyRow) -> Result<bool> {
    Ok(row.try_get::<Option<String>, _>("live_user_id")?.is_some()
        && row.try_get::<Option<i64>, _>("user_locked_at")?.is_none())
}

/// Applies a [`Retirement`] (refresh rotation on first use).
async fn retire_parent(tx: &mut AnyConnection, r: &Retirement, now: i64) -> Result<()> {
    let (parent, keep_refresh, keep_access) = (
        r.parent.as_str(),
        r.keep_refresh.as_deref(),
        r.keep_access.as_deref(),
    );
    sqlx::query(
        "UPDATE refresh_tokens SET consumed_at = $1 WHERE digest = $2 AND consumed_at IS NULL",
    )
    .bind(now)
    .bind(parent)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1
         WHERE parent_digest = $2 AND revoked_at IS NULL AND digest <> COALESCE($3, '')",
    )
    .bind(now)
    .bind(parent)
    .bind(keep_refresh)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE access_tokens SET revoked_at = $1
         WHERE revoked_at IS NULL
           AND (refresh_digest = $2
                OR (parent_refresh_digest = $2
                    AND COALESCE(refresh_digest, '') <> COALESCE($3, '')
                    AND digest <> COALESCE($4, '')))",
    )
    .bind(now)
    .bind(parent)
    .bind(keep_refresh)
    .bind(keep_access)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl Store {
    /// The scopes `user_id` already granted `client_id`, and the
    /// organization the grant was made in, if any.
    pub async fn consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<(ScopeSet, Option<String>)>> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT scope, organization_id FROM consents WHERE user_id = $1 AND client_id = $2",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|(s, org)| {
            ScopeSet::parse(&s)
                .map(|scope| (scope, org))
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// Records that `user_id` granted `scope` to `client_id` (in
    /// `organization_id`), adding to what was granted before in the same
    /// organization.
    pub async fn remember_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &ScopeSet,
        organization_id: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let merged = match self.consent(user_id, client_id).await? {
            Some((old, old_org)) if old_org.as_deref() == organization_id => old.union(scope),
            _ => scope.clone(),
        };
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scope, granted_at, organization_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, client_id) DO UPDATE
             SET scope = excluded.scope, granted_at = excluded.granted_at, organization_id = excluded.organization_id",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(merged.to_string())
        .bind(now)
        .bind(organization_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Stores a new authorization code by digest, and audits its issue.
    pub async fn insert_authorization_code(
        &self,
        digest: &str,
        code: &AuthorizationCode,
    ) -> Result<()> {
        self.insert_code(digest, code, None).await.map(|_| ())
    }

    /// Stores a code an EHR launch gave, using the launch (by the digest of
    /// its value) in the same transaction: false, and nothing stored, when
    /// the launch was used already, expired or is another app's.
    pub async fn insert_launched_authorization_code(
        &self,
        digest: &str,
        code: &AuthorizationCode,
        launch_digest: &str,
    ) -> Result<bool> {
        self.insert_code(digest, code, Some(launch_digest)).await
    }

    async fn insert_code(
        &self,
        digest: &str,
        code: &AuthorizationCode,
        launch_digest: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        if let Some(launch) = launch_digest
            && !crate::launches::use_launch(&mut tx, launch, &code.client_id, code.created_at)
                .await?
        {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO authorization_codes (digest, family_id, client_id, user_id, redirect_uri, redirect_uri_provided, scope,
                                              code_challenge, created_at, expires_at, organization_id, owner_type, owner_id,
                                              nonce, auth_time, amr, smart, dpop_jkt)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(digest)
        .bind(&code.family_id)
        .bind(&code.client_id)
        .bind(&code.user_id)
        .bind(&code.redirect_uri)
        .bind(i64::from(code.redirect_uri_provided))
        .bind(code.scope.to_string())
        .bind(code.code_challenge.as_ref().map(CodeChallenge::as_str))
        .bind(code.created_at)
        .bind(code.expires_at)
        .bind(&code.grant.organization_id)
        .bind(code.grant.owner.as_ref().map(|o| o.kind.as_str()))
        .bind(code.grant.owner.as_ref().map(|o| o.id.as_str()))
        .bind(&code.nonce)
        .bind(code.auth_time)
        .bind(amr_column(&code.amr))
        .bind(code.grant.smart.as_ref().map(SmartContext::to_stored))
        .bind(&code.dpop_jkt)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            code.created_at,
            &Event::new(EventKind::CodeIssued)
                .actor(Some(&code.user_id))
                .client(&code.client_id)
                .data(serde_json::json!({ "scope": code.scope.to_string() })),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// An authorization code by digest, as read for redemption: whether it
    /// was used, and whether the account that granted it is still active.
    pub async fn code_for_redemption(&self, digest: &str) -> Result<Option<CodeRead>> {
        let row = sqlx::query(
            "SELECT c.family_id, c.client_id, c.user_id, c.redirect_uri, c.redirect_uri_provided, c.scope, c.code_challenge,
                    c.created_at, c.expires_at, c.organization_id, c.owner_type, c.owner_id, c.nonce, c.auth_time, c.amr,
                    c.smart, c.dpop_jkt, c.consumed_at, u.id AS live_user_id, u.locked_at AS user_locked_at
             FROM authorization_codes c LEFT JOIN users u ON u.id = c.user_id
             WHERE c.digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(CodeRead {
                code: code_from_row(&row)?,
                consumed: row.try_get::<Option<i64>, _>("consumed_at")?.is_some(),
                user_active: user_active(&row)?,
            })
        })
        .transpose()
    }

    /// A refresh token by digest, as read for use, with what its family
    /// stands for and whether its account is still active.
    pub async fn refresh_for_use(&self, digest: &str) -> Result<Option<RefreshRead>> {
        let row = sqlx::query(
            "SELECT r.digest, r.family_id, r.client_id, r.user_id, r.scope, r.redirect_uri, r.parent_digest,
                    r.created_at, r.expires_at, r.consumed_at, r.first_used_at,
                    COALESCE(r.revoked_at, f.revoked_at, c.suspended_at) AS revoked_at,
                    f.organization_id, f.owner_type, f.owner_id, f.granted_by, f.smart, f.dpop_jkt AS family_jkt,
                    u.id AS live_user_id, u.locked_at AS user_locked_at, m.role AS granted_by_role
             FROM refresh_tokens r JOIN token_families f ON f.id = r.family_id JOIN clients c ON c.id = f.client_id
                  LEFT JOIN users u ON u.id = r.user_id
                  LEFT JOIN memberships m
                         ON m.organization_id = f.organization_id AND m.user_id = f.granted_by AND m.role = 'admin'
             WHERE r.digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            let token = refresh_from_row(&row)?;
            let granted_by: Option<String> = row.try_get("granted_by")?;
            Ok(RefreshRead {
                user_active: token.user_id.is_none() || user_active(&row)?,
                grant: GrantContext {
                    organization_id: row.try_get("organization_id")?,
                    owner: owner_of(&row)?,
                    organization_level: granted_by.is_some(),
                    smart: smart_of(&row)?,
                },
                granted_by_still_admin: row
                    .try_get::<Option<String>, _>("granted_by_role")?
                    .is_some(),
                granted_by,
                // The server's to say: it reads the session when the grant
                // is bound to one.
                session_ended: false,
                family_jkt: row.try_get("family_jkt")?,
                token,
            })
        })
        .transpose()
    }

    /// Applies a grant's write, all of it or nothing when a claim no longer
    /// holds ([`Applied::Stale`]), and answers once it is committed. Writes
    /// that arrive together share a transaction (see `writer.rs`).
    pub async fn apply_grant(&self, write: Write) -> Result<Applied> {
        if write.is_empty() {
            return Ok(Applied::Done);
        }
        self.grant_writer.apply(write).await
    }

    /// Creates an account for a partner (HealthTap's "you manage users'
    /// identity") and applies the write that issues its first tokens, in one
    /// transaction. The partner counts as authorized by the account for
    /// `scope`.
    pub async fn provision_user(
        &self,
        user: &User,
        client_id: &str,
        scope: &ScopeSet,
        write: &Write,
    ) -> Result<Applied> {
        let mut tx = self.writer.begin().await?;
        insert_user_in(&mut tx, user, Actor::system()).await?;
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&user.id)
        .bind(client_id)
        .bind(scope.to_string())
        .bind(write.now)
        .execute(&mut *tx)
        .await?;
        apply_whole(tx, write).await
    }

    /// Looks an access token up by digest, for a resource request. A token of
    /// a revoked family, or of a client that is suspended, comes back with
    /// `revoked_at` set.
    pub async fn access_token(&self, digest: &str) -> Result<Option<AccessToken>> {
        let row = sqlx::query(access_token_query!("", ""))
            .bind(digest)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(access_token_from_row).transpose()
    }

    /// Looks an access token up by digest with the account it speaks for,
    /// in one query, for a resource request that answers with the person
    /// (`/api/v1/me`, UserInfo). The account is `None` when the token speaks
    /// for none, or when it was deleted.
    pub async fn access_token_with_user(
        &self,
        digest: &str,
    ) -> Result<Option<(AccessToken, Option<User>)>> {
        let row = sqlx::query(access_token_query!(
            ", u.id, u.username, u.name, u.email, u.user_type, u.password_hash, u.created_at, u.locked_at,
               u.provisioned_by, u.operator, u.password_reset_at, u.email_verified_at, u.fhir_user",
            " LEFT JOIN users u ON u.id = a.user_id"
        ))
        .bind(digest)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            let user = match row.try_get::<Option<String>, _>("id")? {
                Some(_) => Some(user_from_row(&row)?),
                None => None,
            };
            Ok((access_token_from_row(&row)?, user))
        })
        .transpose()
    }

    /// Looks an access token up by digest for an introspection request by
    /// the client `caller`, in one query: the token as [`Store::access_token`]
    /// reads it, the username of its account when that is active, and the
    /// version stamp `caller`'s record carries now.
    pub async fn access_token_for_caller(
        &self,
        digest: &str,
        caller: &str,
    ) -> Result<Option<TokenForCaller>> {
        let row = sqlx::query(access_token_query!(
            ", u.id AS live_user_id, u.username AS live_username, u.locked_at AS user_locked_at,
               (SELECT k.version FROM clients k WHERE k.id = $2) AS caller_version",
            " LEFT JOIN users u ON u.id = a.user_id"
        ))
        .bind(digest)
        .bind(caller)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(TokenForCaller {
                token: access_token_from_row(&row)?,
                active_username: if user_active(&row)? {
                    row.try_get("live_username")?
                } else {
                    None
                },
                caller_version: row.try_get("caller_version")?,
            })
        })
        .transpose()
    }

    /// Marks the first use of an access token issued by an on-first-use
    /// rotation, which retires the refresh token it replaced. Returns whether
    /// the token is still live afterwards (a sibling may have won the race).
    pub async fn first_use_of_access_token(&self, token: &AccessToken, now: i64) -> Result<bool> {
        let Some(parent) = &token.parent_refresh_digest else {
            return Ok(true);
        };
        let mut tx = self.writer.begin().await?;
        let marked = sqlx::query(
            "UPDATE access_tokens SET first_used_at = $1 WHERE digest = $2 AND first_used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&token.digest)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 1 {
            let retirement = Retirement {
                parent: parent.clone(),
                keep_refresh: None,
                keep_access: Some(token.digest.clone()),
            };
            retire_parent(&mut tx, &retirement, now).await?;
        }
        let still_live: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM access_tokens WHERE digest = $1 AND revoked_at IS NULL",
        )
        .bind(&token.digest)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(still_live.is_some())
    }

    /// Revokes the family a token belongs to; used by admin actions and
    /// revocation. Returns whether a live family was revoked.
    pub async fn revoke_token_family(
        &self,
        family_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let revoked = revoke_family(&mut tx, family_id, reason, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}
