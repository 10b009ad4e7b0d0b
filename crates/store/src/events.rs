//! The event log: every security-relevant thing that happens is appended here
//! (the audit trail), in the same transaction as the change it records; an
//! event that concerns a partner app with a webhook also queues a delivery in
//! that transaction (an outbox), so nothing is lost if the process dies.
//!
//! A sealer links the rows into a hash chain after the fact (`seal_events`):
//! each sealed row carries the SHA-256 of the previous one, so an edited or
//! deleted row breaks the chain (`verify_chain`). Sealing off the hot path
//! keeps token issue from queueing on one chain-head lock.

use std::sync::atomic::{AtomicU64, Ordering};

use healthgate_core::event::{EventKind, Outcome};
use healthgate_core::secret::{new_id, new_ordered_id};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::{Backend, Result, Store};

/// An event to append.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub kind: EventKind,
    pub outcome: Outcome,
    pub actor_user_id: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// Extra facts as a JSON object: never a secret.
    pub data: Option<serde_json::Value>,
}

impl<'a> Event<'a> {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            outcome: Outcome::Success,
            actor_user_id: None,
            subject: None,
            client_id: None,
            organization_id: None,
            ip: None,
            data: None,
        }
    }
    pub fn failed(mut self) -> Self {
        self.outcome = Outcome::Failure;
        self
    }
    pub fn actor(mut self, user_id: Option<&'a str>) -> Self {
        self.actor_user_id = user_id;
        self
    }
    pub fn subject(mut self, subject: &'a str) -> Self {
        self.subject = Some(subject);
        self
    }
    pub fn client(mut self, client_id: &'a str) -> Self {
        self.client_id = Some(client_id);
        self
    }
    pub fn organization(mut self, organization_id: &'a str) -> Self {
        self.organization_id = Some(organization_id);
        self
    }
    pub fn ip(mut self, ip: Option<&'a str>) -> Self {
        self.ip = ip;
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Who made an administrative change, and from where: the operator's
/// account and address for a change made in the admin console, nobody for
/// one made with the CLI on the server itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actor<'a> {
    pub user_id: Option<&'a str>,
    pub ip: Option<&'a str>,
}

impl<'a> Actor<'a> {
    /// A change made on the server itself (the CLI): no account, no address.
    pub fn system() -> Self {
        Self::default()
    }

    /// A change made by a signed-in person.
    pub fn user(user_id: &'a str, ip: Option<&'a str>) -> Self {
        Self {
            user_id: Some(user_id),
            ip,
        }
    }
}

impl<'a> Event<'a> {
    /// Names who made the change and from where.
    pub fn by(self, actor: Actor<'a>) -> Self {
        self.actor(actor.user_id).ip(actor.ip)
    }
}

/// What the audit log is narrowed to. Every field is optional; an absent
/// one does not narrow. Instants are epoch seconds, `to` exclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventFilter<'a> {
    pub kind: Option<&'a str>,
    /// A user id: events it acted in or that concern it (actor or subject).
    pub person: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Only events older than this `seq` (the next page).
    pub before: Option<i64>,
}

/// A parameter of a statement built from the filters given.
enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

/// Adds `b` to `binds`; gives its placeholder (`$3`).
fn param<'a>(binds: &mut Vec<Bind<'a>>, b: Bind<'a>) -> String {
    binds.push(b);
    format!("${}", binds.len())
}

/// What is wrong with a row at a chain position ([`StoredEvent::check_link`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkFault {
    /// Another position is there: the one expected is gone.
    Missing,
    /// It does not link to the row before it.
    Unlinked,
    /// Its hash is not what its content gives.
    Altered,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub kind: String,
    pub actor_user_id: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub organization_id: Option<String>,
    pub ip: Option<String>,
    pub outcome: String,
    pub data: Option<String>,
    pub chain_pos: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

impl StoredEvent {
    /// The bytes the chain hashes for this row, after the previous hash.
    fn canonical(&self, pos: i64) -> String {
        serde_json::json!([
            pos,
            self.id,
            self.at,
            self.kind,
            self.actor_user_id,
            self.subject,
            self.client_id,
            self.organization_id,
            self.ip,
            self.outcome,
            self.data,
        ])
        .to_string()
    }

    /// Checks that this row sits at `pos` after a row whose hash is `prev`:
    /// its position, its link and its own hash. Gives its hash.
    pub(crate) fn check_link(
        &self,
        pos: i64,
        prev: &str,
    ) -> std::result::Result<String, LinkFault> {
        if self.chain_pos != Some(pos) {
            return Err(LinkFault::Missing);
        }
        if self.prev_hash.as_deref() != Some(prev) {
            return Err(LinkFault::Unlinked);
        }
        let hash = self.chain_hash(pos, prev);
        if self.hash.as_deref() != Some(hash.as_str()) {
            return Err(LinkFault::Altered);
        }
        Ok(hash)
    }

    pub(crate) fn chain_hash(&self, pos: i64, prev_hash: &str) -> String {
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(b"\n");
        h.update(self.canonical(pos).as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub(crate) const EVENT_COLUMNS: &str = "seq, id, at, kind, actor_user_id, subject, client_id, organization_id, ip, outcome, data, chain_pos, prev_hash, hash";

pub(crate) fn event_from_row(r: &sqlx::any::AnyRow) -> Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        actor_user_id: r.try_get("actor_user_id")?,
        subject: r.try_get("subject")?,
        client_id: r.try_get("client_id")?,
        organization_id: r.try_get("organization_id")?,
        ip: r.try_get("ip")?,
        outcome: r.try_get("outcome")?,
        data: r.try_get("data")?,
        chain_pos: r.try_get("chain_pos")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Events appended by this process since it started, by kind (indexed by
/// `EventKind as usize`), for metrics. An event whose transaction then
/// rolled back is counted too: these say what happened, the trail what was
/// kept.
static APPENDED: [AtomicU64; EventKind::ALL.len()] =
    [const { AtomicU64::new(0) }; EventKind::ALL.len()];

/// How many events of each kind this process has appended.
pub fn appended() -> impl Iterator<Item = (EventKind, u64)> {
    EventKind::ALL
        .iter()
        .map(|&kind| (kind, APPENDED[kind as usize].load(Ordering::Relaxed)))
}

/// Counts an event written and, when an operator should hear of it at once
/// (`EventKind::is_warning`), logs it at `WARN`. Every path that writes an
/// event row calls it: [`append`] and the group commit's batched rows.
pub(crate) fn noted(id: &str, event: &Event<'_>) {
    APPENDED[event.kind as usize].fetch_add(1, Ordering::Relaxed);
    if event.kind.is_warning() {
        // Ids and the address only: the event's details stay in the trail.
        tracing::warn!(
            event = event.kind.as_str(),
            event_id = id,
            outcome = event.outcome.as_str(),
            client_id = event.client_id,
            actor = event.actor_user_id,
            subject = event.subject,
            ip = event.ip,
            "security event"
        );
    }
}

/// Appends `event` on `conn` (a transaction, normally) and queues its
/// webhook delivery if it concerns a partner with a live webhook. Returns the
/// event's id.
pub(crate) async fn append(conn: &mut AnyConnection, at: i64, event: &Event<'_>) -> Result<String> {
    let id = new_ordered_id("evt", at);
    let data = event.data.as_ref().map(|d| d.to_string());
    sqlx::query(
        "INSERT INTO events (id, at, kind, actor_user_id, subject, client_id, organization_id, ip, outcome, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(at)
    .bind(event.kind.as_str())
    .bind(event.actor_user_id)
    .bind(event.subject)
    .bind(event.client_id)
    .bind(event.organization_id)
    .bind(event.ip)
    .bind(event.outcome.as_str())
    .bind(&data)
    .execute(&mut *conn)
    .await?;
    if let (true, Some(client_id)) = (event.kind.notifies_partner(), event.client_id) {
        enqueue(conn, at, &id, client_id, event).await?;
    }
    noted(&id, event);
    Ok(id)
}

/// What `verify_chain` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked and found linked (in the database, after the last
    /// archive).
    pub sealed: i64,
    /// Rows not sealed yet (appended since the last sealing pass).
    pub unsealed: i64,
    /// The chain position the last archive moved events through (0: none);
    /// the database's chain starts after it.
    pub archived_through: i64,
    /// The first break: chain position and what is wrong.
    pub broken: Option<(i64, String)>,
}

// The outbox: a partner's delivery is queued with the event itself.

/// The JSON body partners receive: `{id, type, created_at, data}`.
fn payload(event_id: &str, at: i64, event: &Event<'_>) -> String {
    let mut data = match &event.data {
        Some(serde_json::Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(org) = event.organization_id {
        data.entry("organization_id").or_insert_with(|| org.into());
    }
    if let Some(subject) = event.subject {
        data.entry("subject").or_insert_with(|| subject.into());
    }
    serde_json::json!({
        "id": event_id,
        "type": event.kind.as_str(),
        "created_at": at,
        "data": data,
    })
    .to_string()
}

/// Queues the delivery of an event to its partner, if the partner has a
/// webhook. A muted webhook still gets the row, held as `muted`, so nothing
/// is lost when it is re-enabled.
async fn enqueue(
    conn: &mut AnyConnection,
    at: i64,
    event_id: &str,
    client_id: &str,
    event: &Event<'_>,
) -> Result<()> {
    let target: Option<(Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT webhook_url, webhook_muted_at FROM clients WHERE id = $1")
            .bind(client_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((Some(url), muted_at)) = target else {
        return Ok(());
    };
    let status = if muted_at.is_some() {
        "muted"
    } else {
        "pending"
    };
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, event_id, client_id, url, payload, status, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(new_id("whd"))
    .bind(event_id)
    .bind(client_id)
    .bind(url)
    .bind(payload(event_id, at, event))
    .bind(status)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Appends one event in its own transaction.
    pub async fn record_event(&self, at: i64, event: &Event<'_>) -> Result<String> {
        let mut tx = self.writer.begin().await?;
        let id = append(&mut tx, at, event).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Events, newest first; `since` keeps those at or after an instant.
    pub async fn events(&self, since: Option<i64>, limit: i64) -> Result<Vec<StoredEvent>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE at >= $1 ORDER BY seq DESC LIMIT $2"
        ));
        let rows = sqlx::query(sql)
            .bind(since.unwrap_or(i64::MIN))
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The events `filter` keeps, newest first (by `seq`), at most `limit`.
    /// Only the filters given are in the statement (each a bound
    /// parameter), so the planner can read a page from the filter's index
    /// (`kind`, `actor_user_id`, `subject`, `organization_id`, `client_id`,
    /// each with `seq`) instead of walking every event newest first.
    pub async fn audit_events(
        &self,
        filter: &EventFilter<'_>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let mut terms: Vec<String> = Vec::new();
        let mut binds: Vec<Bind<'_>> = Vec::new();
        let texts = [
            ("kind", filter.kind),
            ("client_id", filter.client_id),
            ("organization_id", filter.organization_id),
            ("outcome", filter.outcome),
        ];
        for (column, value) in texts {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                let p = param(&mut binds, Bind::Text(v));
                terms.push(format!("{column} = {p}"));
            }
        }
        if let Some(person) = filter.person.filter(|v| !v.is_empty()) {
            let p = param(&mut binds, Bind::Text(person));
            terms.push(format!("(actor_user_id = {p} OR subject = {p})"));
        }
        for (term, value) in [
            ("at >=", filter.from),
            ("at <", filter.to),
            ("seq <", filter.before),
        ] {
            if let Some(v) = value {
                let p = param(&mut binds, Bind::Int(v));
                terms.push(format!("{term} {p}"));
            }
        }
        let limit_param = param(&mut binds, Bind::Int(limit));
        let filters = if terms.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", terms.join(" AND "))
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events {filters} ORDER BY seq DESC LIMIT {limit_param}"
        ));
        let mut query = sqlx::query(sql);
        for b in binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.reader).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Links up to `max` unsealed events into the hash chain, in the order
    /// they were appended. One sealer at a time: the chain head row is locked
    /// (PostgreSQL) or the single writer serialises it (SQLite).
    pub async fn seal_events(&self, max: i64) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let head: (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT pos, hash FROM audit_chain_head WHERE id = 1{lock}"
        )))
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE chain_pos IS NULL ORDER BY seq LIMIT $1"
        )))
        .bind(max)
        .fetch_all(&mut *tx)
        .await?;
        let (mut pos, mut prev) = head;
        for row in &rows {
            let event = event_from_row(row)?;
            pos += 1;
            let hash = event.chain_hash(pos, &prev);
            sqlx::query(
                "UPDATE events SET chain_pos = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            )
            .bind(pos)
            .bind(&prev)
            .bind(&hash)
            .bind(event.seq)
            .execute(&mut *tx)
            .await?;
            prev = hash;
        }
        sqlx::query("UPDATE audit_chain_head SET pos = $1, hash = $2 WHERE id = 1")
            .bind(pos)
            .bind(&prev)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Walks the chain in the database, a page at a time, from the last
    /// archive's checkpoint (its first row must link to the checkpoint's
    /// hash): every link, that positions are contiguous, and that the head
    /// names the last row.
    pub async fn verify_chain(&self) -> Result<ChainReport> {
        let head: (i64, String) =
            sqlx::query_as("SELECT pos, hash FROM audit_chain_head WHERE id = 1")
                .fetch_one(&self.reader)
                .await?;
        let unsealed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE chain_pos IS NULL")
                .fetch_one(&self.reader)
                .await?;
        let (archived_through, mut prev) = self.chain_start().await?;
        let mut after = archived_through;
        let report = |after: i64, broken: Option<(i64, String)>| ChainReport {
            sealed: after - archived_through,
            unsealed,
            archived_through,
            broken,
        };
        loop {
            let page = self.sealed_page(after, i64::MAX).await?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                let pos = after + 1;
                match e.check_link(pos, &prev) {
                    Ok(hash) => prev = hash,
                    Err(fault) => {
                        let why = match fault {
                            LinkFault::Missing
                                if pos == archived_through + 1 && archived_through > 0 =>
                            {
                                "the first row after the last archive is missing"
                            }
                            LinkFault::Missing => "a row is missing from the chain",
                            LinkFault::Unlinked => "the row does not link to the one before it",
                            LinkFault::Altered => "the row was altered after it was sealed",
                        };
                        return Ok(report(after, Some((pos, why.to_owned()))));
                    }
                }
                after = pos;
            }
        }
        if head.0 != after || head.1 != prev {
            return Ok(report(
                after,
                Some((
                    after + 1,
                    "rows at the end of the chain were removed".to_owned(),
                )),
            ));
        }
        Ok(report(after, None))
    }
}
