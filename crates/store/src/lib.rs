//! Persistence for healthgate: one `Store` over SQLite (the default, embedded)
//! or PostgreSQL (for several nodes), cut into modules by concern.
//!
//! Both backends run the same SQL text through sqlx's `Any` driver: ids are
//! TEXT, instants are BIGINT epoch seconds and parameters are `$n`, which both
//! databases accept. Where a backend needs its own statement (locking, for
//! instance) the module branches on [`Backend`]. Migrations are kept per
//! backend in `migrations/sqlite` and `migrations/postgres` and embedded in
//! the binary.
//!
//! Secrets never reach this crate in the clear except to be digested by the
//! caller first: every `*_digest` column holds a SHA-256 digest.

mod account;
mod archive;
mod backup;
mod clients;
mod events;
mod factors;
mod grants;
mod integrations;
mod keys;
mod launches;
mod patients;
mod purge;
mod pushed;
mod recovery;
mod registration;
mod replay;
mod revocation;
mod sessions;
mod throttles;
mod users;
mod webhooks;
mod writer;

pub use account::{OrgGrant, UserGrant};
pub use archive::{ArchiveReport, Archived, Checkpoint, verify_archive};
pub use clients::{CLIENT_SUSPENDED, ClientSaved, ListingOutcome, Suspension};
pub use events::{
    Actor, ChainReport, Event, EventFilter, StoredEvent, appended as events_appended,
};
pub use factors::Factor;
pub use grants::{Applied, TokenForCaller};
pub use integrations::PresentedKey;
pub use keys::StoredKey;
pub use purge::Purged;
pub use recovery::{
    LiveLink, MailOutcome, NewLink, NewMail, OutgoingMail, PasswordResetDone, ResetRequest,
    StoredMail,
};
pub use registration::RegistrationToken;
pub use revocation::Revoked;
pub use sessions::Session;
pub use throttles::ThrottleKind;
pub use users::Unlocked;
pub use webhooks::{Attempt, AttemptResult, Delivery, WebhookHealth};
pub use writer::GroupCommits;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

/// A pool's connections: open, and of those idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connections {
    pub open: u32,
    pub idle: u32,
}

/// [`Store::pool_use`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolUse {
    pub reader: Connections,
    /// SQLite's one writer connection; `None` on PostgreSQL.
    pub writer: Option<Connections>,
    pub group_commits: GroupCommits,
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The database a URL names: `sqlite:…`, or `postgres://…` /
    /// `postgresql://…`; `None` for any other.
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Everything that can go wrong in storage. Callers fail closed on any of
/// these: a storage error is never reported to a client as success.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The cause is part of each message and deliberately not a `source`, so
    // printing the error with its chain says it once.
    #[error("database unavailable: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("cannot create the database directory {path}: {cause}")]
    Directory { path: String, cause: std::io::Error },
    #[error("there is no SQLite database at {0}")]
    NoDatabase(String),
    /// `healthgate backup` was asked for a copy it does not make (to a
    /// file that exists, of a PostgreSQL database); says why.
    #[error("{0}")]
    BackupRefused(String),
    /// `healthgate backup` could not make its copy; says why.
    #[error("backup failed: {0}")]
    Backup(String),
    /// `healthgate audit archive` could not write or check a segment, or
    /// will not (a segment of that name exists); says why.
    #[error("audit archive: {0}")]
    Archive(String),
    /// Another archive (the retention job, the command, another node on a
    /// shared folder) is running in that folder: nothing was done.
    #[error("audit archive: another archive is running in {0}; nothing was done")]
    ArchiveBusy(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How hard SQLite works to keep a commit (`PRAGMA synchronous`). Both keep
/// the database uncorrupted; they differ on power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// In WAL mode a commit survives a crash of the process but may be lost
    /// to a power cut or an operating-system crash (the last transactions
    /// since the WAL was last synced).
    #[default]
    Normal,
    /// Every commit is synced to disk before it is answered: it survives a
    /// power cut. Group commit shares that sync among concurrent grants.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "PRAGMA synchronous = NORMAL",
            Self::Full => "PRAGMA synchronous = FULL",
        }
    }
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Connections for PostgreSQL, or reader connections for SQLite (which
    /// always has exactly one writer).
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// SQLite only: PostgreSQL's durability is the server's
    /// `synchronous_commit`.
    pub synchronous: Synchronous,
    /// SQLite only: create the file (and its directory) when missing, as a
    /// server does on first start; `false` for tools that read an existing
    /// database, which then say there is none.
    pub create_if_missing: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            synchronous: Synchronous::default(),
            create_if_missing: true,
        }
    }
}

/// The handle to healthgate's database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// Every write goes here: for SQLite a single connection, which
    /// serialises writers without lock contention; for PostgreSQL the pool.
    writer: AnyPool,
    /// Plain reads; for SQLite a pool of readers beside the writer (WAL).
    reader: AnyPool,
    /// Grant writes, committed in groups on `writer`.
    grant_writer: writer::GrantWriter,
    /// DPoP proofs' jti, recorded in batches on `writer`.
    proofs: replay::ProofRecorder,
}

impl Store {
    /// Opens the database at `url` (`sqlite://path/to/file.db` or
    /// `postgres://…`). A SQLite file and its directory are created if
    /// missing. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, pool: PoolConfig) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url).ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
        match backend {
            Backend::Sqlite => {
                let url = prepare_sqlite_url(url, pool.create_if_missing)?;
                let options = quiet_options(&url)?;
                let synchronous = pool.synchronous.pragma();
                // A SQLite connection is a file handle in this process, not
                // a socket that can die: no ping before each use (a round
                // trip to its thread per acquire, on every request).
                let writer = AnyPoolOptions::new()
                    .max_connections(1)
                    .test_before_acquire(false)
                    .acquire_timeout(pool.acquire_timeout)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute(synchronous).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options.clone())
                    .await?;
                // WAL lets readers proceed beside the one writer; it is a
                // property of the file, so setting it once is enough.
                writer.execute("PRAGMA journal_mode = WAL").await?;
                let reader = AnyPoolOptions::new()
                    .max_connections(pool.max_connections.max(1))
                    .test_before_acquire(false)
                    .acquire_timeout(pool.acquire_timeout)
                    .connect_with(options)
                    .await?;
                Ok(Self {
                    backend,
                    grant_writer: writer::GrantWriter::start(writer.clone(), 1),
                    proofs: replay::ProofRecorder::start(writer.clone()),
                    writer,
                    reader,
                })
            }
            Backend::Postgres => {
                let pg = AnyPoolOptions::new()
                    .max_connections(pool.max_connections.max(1))
                    .acquire_timeout(pool.acquire_timeout)
                    .connect_with(quiet_options(url)?)
                    .await?;
                // A few writer tasks, each holding one connection while it
                // commits, leave the rest of the pool to reads.
                let tasks = (pool.max_connections / 4).clamp(1, 4) as usize;
                Ok(Self {
                    backend,
                    grant_writer: writer::GrantWriter::start(pg.clone(), tasks),
                    proofs: replay::ProofRecorder::start(pg.clone()),
                    writer: pg.clone(),
                    reader: pg,
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What the connection pools and the group commit are doing now, for
    /// metrics. On PostgreSQL reads and writes share one pool, reported as
    /// the reader.
    pub fn pool_use(&self) -> PoolUse {
        let pool = |p: &AnyPool| Connections {
            open: p.size(),
            idle: u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
        };
        PoolUse {
            reader: pool(&self.reader),
            writer: (self.backend == Backend::Sqlite).then(|| pool(&self.writer)),
            group_commits: self.grant_writer.stats(),
        }
    }

    /// Applies the embedded migrations for this backend. Safe to run on every
    /// start; on PostgreSQL sqlx takes an advisory lock so nodes starting at
    /// once do not race.
    ///
    /// Runs on a connection of its own with statement logging off: waiting
    /// for that lock while another node migrates is expected, not a slow
    /// statement worth a warning on a command's standard error.
    pub async fn migrate(&self) -> Result<()> {
        use sqlx::ConnectOptions;
        let migrator = migrator(self.backend);
        let options = (*self.writer.connect_options()).clone();
        let quiet = AnyPoolOptions::new()
            .max_connections(1)
            .connect_with(options.disable_statement_logging())
            .await?;
        let outcome = migrator.run(&quiet).await;
        quiet.close().await;
        outcome?;
        Ok(())
    }

    /// A cheap round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Runs one administrative statement (schema creation in tests and
    /// tooling). Not for anything a request can reach.
    pub async fn execute_admin(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Closes every connection, waiting for queries in flight.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// sqlx logs statement text (never bound values) at debug level and slow
/// statements as warnings, which is what healthgate wants.
fn quiet_options(url: &str) -> Result<AnyConnectOptions> {
    Ok(AnyConnectOptions::from_str(url)?)
}

/// Creates the directory of a SQLite file and asks for the file to be
/// created if missing (`create`), or refuses a file that is not there.
fn prepare_sqlite_url(url: &str, create: bool) -> Result<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    if !create && !Path::new(path).is_file() {
        return Err(StoreError::NoDatabase(path.to_owned()));
    }
    if let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|cause| StoreError::Directory {
            path: dir.display().to_string(),
            cause,
        })?;
    }
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_owned(),
        Some(q) => format!("{q}&mode=rwc"),
        None => "mode=rwc".to_owned(),
    };
    Ok(format!("sqlite://{path}?{query}"))
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "integrations and events",
        include_str!("../migrations/sqlite/0002_integrations_events.sql"),
    ),
    (
        3,
        "people and roles",
        include_str!("../migrations/sqlite/0003_people_and_roles.sql"),
    ),
    (
        4,
        "openid",
        include_str!("../migrations/sqlite/0004_openid.sql"),
    ),
    (
        5,
        "jwt access tokens",
        include_str!("../migrations/sqlite/0005_jwt_access_tokens.sql"),
    ),
    (
        6,
        "id token alg",
        include_str!("../migrations/sqlite/0006_id_token_alg.sql"),
    ),
    (7, "web", include_str!("../migrations/sqlite/0007_web.sql")),
    (
        8,
        "resource servers",
        include_str!("../migrations/sqlite/0008_resource_servers.sql"),
    ),
    (
        9,
        "temporary passwords",
        include_str!("../migrations/sqlite/0009_temporary_passwords.sql"),
    ),
    (
        10,
        "client secret grace",
        include_str!("../migrations/sqlite/0010_client_secret_grace.sql"),
    ),
    (
        11,
        "throttles",
        include_str!("../migrations/sqlite/0011_throttles.sql"),
    ),
    (
        12,
        "directory review",
        include_str!("../migrations/sqlite/0012_directory_review.sql"),
    ),
    (
        13,
        "second factors",
        include_str!("../migrations/sqlite/0013_second_factors.sql"),
    ),
    (
        14,
        "recovery by email",
        include_str!("../migrations/sqlite/0014_recovery_by_email.sql"),
    ),
    (
        15,
        "client versions",
        include_str!("../migrations/sqlite/0015_client_versions.sql"),
    ),
    (
        16,
        "partial token indexes",
        include_str!("../migrations/sqlite/0016_partial_token_indexes.sql"),
    ),
    (
        17,
        "SMART context",
        include_str!("../migrations/sqlite/0017_smart_context.sql"),
    ),
    (
        18,
        "SMART launches",
        include_str!("../migrations/sqlite/0018_smart_launches.sql"),
    ),
    (
        19,
        "SMART patients",
        include_str!("../migrations/sqlite/0019_smart_patients.sql"),
    ),
    (
        20,
        "client assertions",
        include_str!("../migrations/sqlite/0020_client_assertions.sql"),
    ),
    (
        21,
        "DPoP proofs",
        include_str!("../migrations/sqlite/0021_dpop_proofs.sql"),
    ),
    (
        22,
        "pushed requests",
        include_str!("../migrations/sqlite/0022_pushed_requests.sql"),
    ),
    (
        23,
        "client registration",
        include_str!("../migrations/sqlite/0023_client_registration.sql"),
    ),
    (
        24,
        "audit archive",
        include_str!("../migrations/sqlite/0024_audit_archive.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "integrations and events",
        include_str!("../migrations/postgres/0002_integrations_events.sql"),
    ),
    (
        3,
        "people and roles",
        include_str!("../migrations/postgres/0003_people_and_roles.sql"),
    ),
    (
        4,
        "openid",
        include_str!("../migrations/postgres/0004_openid.sql"),
    ),
    (
        5,
        "jwt access tokens",
        include_str!("../migrations/postgres/0005_jwt_access_tokens.sql"),
    ),
    (
        6,
        "id token alg",
        include_str!("../migrations/postgres/0006_id_token_alg.sql"),
    ),
    (
        7,
        "web",
        include_str!("../migrations/postgres/0007_web.sql"),
    ),
    (
        8,
        "resource servers",
        include_str!("../migrations/postgres/0008_resource_servers.sql"),
    ),
    (
        9,
        "temporary passwords",
        include_str!("../migrations/postgres/0009_temporary_passwords.sql"),
    ),
    (
        10,
        "client secret grace",
        include_str!("../migrations/postgres/0010_client_secret_grace.sql"),
    ),
    (
        11,
        "throttles",
        include_str!("../migrations/postgres/0011_throttles.sql"),
    ),
    (
        12,
        "directory review",
        include_str!("../migrations/postgres/0012_directory_review.sql"),
    ),
    (
        13,
        "second factors",
        include_str!("../migrations/postgres/0013_second_factors.sql"),
    ),
    (
        14,
        "recovery by email",
        include_str!("../migrations/postgres/0014_recovery_by_email.sql"),
    ),
    (
        15,
        "client versions",
        include_str!("../migrations/postgres/0015_client_versions.sql"),
    ),
    (
        16,
        "partial token indexes",
        include_str!("../migrations/postgres/0016_partial_token_indexes.sql"),
    ),
    (
        17,
        "SMART context",
        include_str!("../migrations/postgres/0017_smart_context.sql"),
    ),
    (
        18,
        "SMART launches",
        include_str!("../migrations/postgres/0018_smart_launches.sql"),
    ),
    (
        19,
        "SMART patients",
        include_str!("../migrations/postgres/0019_smart_patients.sql"),
    ),
    (
        20,
        "client assertions",
        include_str!("../migrations/postgres/0020_client_assertions.sql"),
    ),
    (
        21,
        "DPoP proofs",
        include_str!("../migrations/postgres/0021_dpop_proofs.sql"),
    ),
    (
        22,
        "pushed requests",
        include_str!("../migrations/postgres/0022_pushed_requests.sql"),
    ),
    (
        23,
        "client registration",
        include_str!("../migrations/postgres/0023_client_registration.sql"),
    ),
    (
        24,
        "audit archive",
        include_str!("../migrations/postgres/0024_audit_archive.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    Migrator::with_migrations(
        list.iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect(),
    )
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `database_synchronous` reaches the connection that commits.
    #[tokio::test]
    async fn the_writer_commits_as_synchronously_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sync.db", dir.path().display());
        for (asked, pragma) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
            let pool = PoolConfig {
                synchronous: asked,
                ..PoolConfig::default()
            };
            let store = Store::connect(&url, pool).await.unwrap();
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&store.writer)
                .await
                .unwrap();
            assert_eq!(level, pragma, "{asked:?}");
            store.close().await;
        }
    }

    /// Migration 0012 keeps the directory as it was: an app published
    /// before reviews existed is approved, any other is not listed.
    #[tokio::test]
    async fn an_upgrade_keeps_published_apps_listed() {
        use healthgate_core::listing::ListingState;
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![(
            format!("sqlite://{}/upgrade.db", dir.path().display()),
            None,
        )];
        if let Ok(base) = std::env::var("HEALTHGATE_TEST_POSTGRES_URL")
            && !base.is_empty()
        {
            let schema = healthgate_core::secret::new_id("up")
                .to_lowercase()
                .replace('-', "_");
            let admin = Store::connect(&base, PoolConfig::default()).await.unwrap();
            admin
                .execute_admin(&format!("CREATE SCHEMA \"{schema}\""))
                .await
                .unwrap();
            admin.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            urls.push((
                format!("{base}{sep}options=-csearch_path%3D{schema}"),
                Some((base, schema)),
            ));
        }
        for (url, schema) in urls {
            let store = Store::connect(&url, PoolConfig::default()).await.unwrap();
            migrator(store.backend)
                .run_to(11, &store.writer)
                .await
                .unwrap();
            for (id, published) in [("app-listed", 1), ("app-quiet", 0)] {
                store
                    .execute_admin(&format!(
                        "INSERT INTO clients (id, name, redirect_uris, allowed_scopes, user_types, kind, \
                         created_at, updated_at, published, connect_redirect_url) \
                         VALUES ('{id}', 'A', 'https://a.example/cb', 'profile_read', 'member', 'confidential', \
                         100, 200, {published}, 'https://a.example/connect')"
                    ))
                    .await
                    .unwrap();
            }
            store.migrate().await.unwrap();
            let listed = store.client("app-listed").await.unwrap().unwrap().listing;
            assert_eq!(
                (
                    listed.state,
                    listed.requested_at,
                    listed.reviewed_at,
                    listed.reviewed_by
                ),
                (ListingState::Approved, Some(200), Some(200), None),
                "{url}"
            );
            let quiet = store.client("app-quiet").await.unwrap().unwrap().listing;
            assert_eq!(quiet.state, ListingState::NotListed);
            let ids: Vec<String> = store
                .published_clients()
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect();
            assert_eq!(ids, ["app-listed"]);
            store.close().await;
            if let Some((base, schema)) = schema {
                let admin = Store::connect(&base, PoolConfig::default()).await.unwrap();
                admin
                    .execute_admin(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                    .await
                    .unwrap();
                admin.close().await;
            }
        }
    }

    #[test]
    fn sqlite_urls_are_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/hg.db");
        let url = prepare_sqlite_url(&format!("sqlite://{}", path.display()), true).unwrap();
        assert!(url.ends_with("?mode=rwc"));
        assert!(path.parent().unwrap().is_dir());
        assert!(prepare_sqlite_url("sqlite::memory:", true).is_err());
    }
}
