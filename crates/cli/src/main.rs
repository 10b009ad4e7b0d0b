//! The `healthgate` binary: `serve`, `migrate`, and the admin commands, all on
//! the same configuration and database.

mod config;
mod ops;
mod users;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use healthgate_core::client::Client;
use healthgate_core::listing::{Listing, ListingState, ReviewedField};
use healthgate_core::owner::AuthorizationLevel;
use healthgate_core::user::{UserType, parse_user_types};
use healthgate_core::{Clock, SystemClock};
use healthgate_server::config::Issuer;
use healthgate_server::services::admin::{self, AdminError, ClientChanges, NewClient};
use healthgate_server::{Settings, web::demo};
use healthgate_store::{Actor, Suspension};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "healthgate",
    version,
    about = "An OAuth 2.0 authorization server for health-data platforms"
)]
struct Cli {
    /// A TOML configuration file (every setting: examples/config/healthgate.toml).
    #[arg(long, global = true, env = "HEALTHGATE_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Database URL: sqlite://PATH or postgres://… (overrides the config file).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Register and manage partner apps (OAuth clients).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Manage practices and clinics and their members.
    #[command(subcommand)]
    Org(ops::OrgCommand),
    /// Read and verify the audit trail.
    #[command(subcommand)]
    Audit(ops::AuditCommand),
    /// Inspect webhook deliveries and re-enable muted webhooks.
    #[command(subcommand)]
    Webhooks(ops::WebhooksCommand),
    /// List and rotate the keys ID tokens are signed with.
    #[command(subcommand)]
    Keys(ops::KeysCommand),
    /// SMART App Launch: make EHR launches of apps.
    #[command(subcommand)]
    Smart(ops::SmartCommand),
    /// Check the configuration without starting anything.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Copy the SQLite database to PATH while the server runs (a consistent
    /// snapshot; PostgreSQL: use pg_dump). PATH must not exist.
    Backup {
        #[arg(value_name = "PATH")]
        path: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print every setting as the server would run with it (secrets
    /// masked) and where its value came from, then every problem; exit 1
    /// if there is one.
    Check {
        /// As `serve --bind`.
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// As `serve --issuer`.
        #[arg(long, value_name = "URL")]
        issuer: Option<String>,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// Public base URL, the `iss` of authorization responses.
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Seed a demo practice, people and partner app, and print how to try them.
    #[arg(long)]
    demo: bool,
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Register an app; prints its client_id and client_secret (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// A redirect URI; repeat for several. Only a backend service
        /// (`--jwks-uri` or `--jwks`) may have none.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Space-separated scopes the app may ask for.
        #[arg(long)]
        scope: String,
        /// A public client (no secret; PKCE required).
        #[arg(long)]
        public: bool,
        #[arg(long, value_name = "URL")]
        photo_url: Option<String>,
        /// Who may authorize the app: member, expert or both (default both).
        #[arg(long, value_name = "TYPES", value_parser = parse_types)]
        user_types: Option<UserTypes>,
        /// `user`: every person authorizes for themselves, within their role
        /// (default); `organization`: an organization admin authorizes for
        /// the whole organization.
        #[arg(long, default_value = "user", value_parser = parse_level)]
        authorization_level: AuthorizationLevel,
        /// A resource server (the platform's API, its FHIR server): may
        /// introspect every token, not only its own (RFC 7662 §4).
        #[arg(long)]
        resource_server: bool,
        /// Every sign-in that authorizes the app must have given a second
        /// factor: a person without one sets one up first, and the app
        /// never gets a password-only token (acr aal/2 in its ID tokens).
        #[arg(long)]
        require_mfa: bool,
        /// Every token request must carry a DPoP proof (RFC 9449), so every
        /// access token the app gets is bound to its key.
        #[arg(long)]
        require_dpop: bool,
        /// Every authorization request must be pushed first (RFC 9126):
        /// the app POSTs it to /oauth/par and sends only client_id and the
        /// request_uri to /oauth/authorize.
        #[arg(long)]
        require_par: bool,
        /// A SMART launcher (the platform acting as the EHR): may create
        /// EHR launches of apps (`POST /api/v1/smart/launches`).
        #[arg(long)]
        smart_launcher: bool,
        /// Where the app is opened for a SMART EHR launch (`iss` and
        /// `launch` are appended).
        #[arg(long, value_name = "URL")]
        launch_url: Option<String>,
        /// The app authenticates with assertions signed by its private keys
        /// (`private_key_jwt`), whose public JWK Set is at this https URL;
        /// it gets no secret.
        #[arg(long, value_name = "URL", conflicts_with = "jwks")]
        jwks_uri: Option<String>,
        /// As `--jwks-uri`, with the public JWK Set registered from this
        /// JSON file.
        #[arg(long, value_name = "FILE")]
        jwks: Option<std::path::PathBuf>,
    },
    /// List registered apps.
    List,
    /// Show one app.
    Show { id: String },
    /// Issue a new secret; the old one stops working at once.
    RotateSecret {
        id: String,
        /// End the old secret at once instead of after `client_secret_grace`.
        #[arg(long)]
        now: bool,
    },
    /// Delete an app and everything issued to it.
    Delete { id: String },
    /// Change an app's registration and its integration-directory listing.
    Update(Box<ClientUpdate>),
    /// Show the secret the app's webhook deliveries are signed with.
    WebhookSecret {
        id: String,
        /// Issue a new signing secret; the old one stops signing at once.
        #[arg(long)]
        rotate: bool,
    },
    /// Suspend an app: it may do nothing (no sign-ins, tokens, partner or
    /// practice API calls) until restored, and every token it holds stops
    /// working at once.
    Suspend {
        id: String,
        /// Why, kept in the audit trail with the `client.suspended` event.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift an app's suspension; tokens the suspension revoked stay revoked.
    Restore { id: String },
    /// List the apps waiting for review to be listed in the integration
    /// directory, the longest waiting first.
    ListRequests,
    /// Approve an app's request: it is listed in the integration directory.
    Approve { id: String },
    /// Reject an app's request to be listed; its developer reads the reason.
    Reject {
        id: String,
        /// Why (at most 200 characters), shown to the app's developer and
        /// kept in the audit trail.
        #[arg(long)]
        reason: String,
    },
    /// Take a listed app out of the integration directory; practices
    /// connected to it stay connected.
    Unlist {
        id: String,
        /// Why (at most 200 characters), shown to the app's developer and
        /// kept in the audit trail.
        #[arg(long)]
        reason: String,
    },
    /// Initial access tokens for dynamic client registration (RFC 7591) at
    /// /oauth/register.
    #[command(subcommand)]
    RegistrationToken(RegistrationTokenCommand),
}

#[derive(Subcommand, Debug)]
enum RegistrationTokenCommand {
    /// Issue a token; prints it (shown once). Whoever holds it may register
    /// apps until it expires or is revoked.
    Create {
        /// Seconds it lasts; without it, until revoked.
        #[arg(long, value_name = "SECONDS")]
        expires: Option<i64>,
        /// The developer account (username) that owns the apps registered
        /// with it, and sees them in the developer portal; without it they
        /// are the operators', like those `client create` registers.
        #[arg(long, value_name = "USERNAME")]
        owner: Option<String>,
        /// A note to recognise it by ("Acme's onboarding").
        #[arg(long)]
        label: Option<String>,
    },
    /// Every token issued: id, label, owner, expiry, and whether revoked.
    List,
    /// Revoke a token by its id; the apps registered with it stay.
    Revoke { id: String },
}

#[derive(Args, Debug)]
struct ClientUpdate {
    id: String,
    #[arg(long)]
    name: Option<String>,
    /// Replaces every redirect URI; repeat for several.
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    #[arg(long)]
    scope: Option<String>,
    #[arg(long, value_name = "TYPES", value_parser = parse_types)]
    user_types: Option<UserTypes>,
    /// An empty value clears it.
    #[arg(long, value_name = "URL")]
    photo_url: Option<String>,
    /// How the app presents itself in the integration directory; empty clears it.
    #[arg(long)]
    description: Option<String>,
    /// Where Connect sends a practice admin: the code is appended, or replaces `{code}`.
    #[arg(long = "connect-url", value_name = "URL")]
    connect_redirect_url: Option<String>,
    /// Where events that concern the app are delivered (https); empty clears it.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// `user` or `organization`.
    #[arg(long, value_parser = parse_level)]
    authorization_level: Option<AuthorizationLevel>,
    /// `opaque` (default) or `jwt`: signed RFC 9068 access tokens that
    /// resource servers can check against the JWKS.
    #[arg(long, value_parser = ["opaque", "jwt"])]
    access_token_format: Option<String>,
    /// What ID tokens are signed with: ES256 (default) or RS256.
    #[arg(long, value_parser = ["ES256", "RS256"])]
    id_token_alg: Option<String>,
    /// Scopes of the tokens returned for users the partner provisions
    /// (`POST /api/v1/users`); empty resets to the allowed scopes.
    #[arg(long)]
    provisioning_scope: Option<String>,
    /// Ask for the app to be listed in the integration directory (needs a
    /// connect URL); it is listed once approved (`client approve`).
    #[arg(long, conflicts_with = "unpublish")]
    publish: bool,
    /// Withdraw the request, or take the app out of the directory.
    #[arg(long)]
    unpublish: bool,
    /// Make the app a resource server: it may introspect every token.
    #[arg(long, conflicts_with = "no_resource_server")]
    resource_server: bool,
    /// The app may introspect only its own tokens again.
    #[arg(long)]
    no_resource_server: bool,
    /// Every sign-in that authorizes the app must give a second factor.
    #[arg(long, conflicts_with = "no_require_mfa")]
    require_mfa: bool,
    /// A password alone may authorize the app again.
    #[arg(long)]
    no_require_mfa: bool,
    /// Every token request must carry a DPoP proof (RFC 9449).
    #[arg(long, conflicts_with = "no_require_dpop")]
    require_dpop: bool,
    /// Token requests without a DPoP proof are taken again (bearer tokens).
    #[arg(long)]
    no_require_dpop: bool,
    /// Every authorization request must be pushed first (RFC 9126).
    #[arg(long, conflicts_with = "no_require_par")]
    require_par: bool,
    /// Authorization requests may be sent to /oauth/authorize directly again.
    #[arg(long)]
    no_require_par: bool,
    /// Make the app a SMART launcher: it may create EHR launches.
    #[arg(long, conflicts_with = "no_smart_launcher")]
    smart_launcher: bool,
    /// The app may no longer create EHR launches.
    #[arg(long)]
    no_smart_launcher: bool,
    /// Where the app is opened for a SMART EHR launch; empty clears it.
    #[arg(long, value_name = "URL")]
    launch_url: Option<String>,
    /// The URL of the app's public JWK Set (`private_key_jwt`); empty
    /// clears it.
    #[arg(long, value_name = "URL")]
    jwks_uri: Option<String>,
    /// The app's public JWK Set, from this JSON file (to rotate its keys).
    #[arg(long, value_name = "FILE")]
    jwks: Option<std::path::PathBuf>,
}

/// One `--user-types` value parses to a list. Named, because clap would take
/// a literal `Option<Vec<UserType>>` to mean a repeatable flag of single
/// types and then fail to downcast the parsed list (a panic at run time).
type UserTypes = Vec<UserType>;

fn parse_types(s: &str) -> Result<UserTypes, String> {
    parse_user_types(s).map_err(|e| e.to_string())
}

fn parse_level(s: &str) -> Result<AuthorizationLevel, String> {
    s.parse()
}

/// An error and the exit code it ends the process with.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self {
            code: 1,
            message: error_chain(&e),
        }
    }
}

/// The error and its causes on one line. A cause whose text its parent
/// already shows (error types that both print and expose their source) is
/// not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Makes a message one line: parsers (TOML) explain an error over several
/// lines with a source excerpt; keep the explanation, drop the excerpt.
fn one_line(message: &str) -> String {
    let is_excerpt = |line: &str| {
        line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
            .starts_with('|')
    };
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_excerpt(l))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        let code = match e {
            AdminError::Invalid(_)
            | AdminError::Field { .. }
            | AdminError::Fields(_)
            | AdminError::NoSuchClient(_)
            | AdminError::Listing(_) => 2,
            _ => 1,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// Makes glibc give large freed blocks back to the system at once.
///
/// Every password hash (argon2id) allocates 19 MiB for a moment, on a
/// blocking thread. By default glibc raises its mmap threshold to the size
/// of the first such block freed, so later ones are carved from that
/// thread's arena and kept there: a few sign-ins leave tens of MiB resident
/// for good. A fixed threshold turns that adjustment off, and blocks of
/// 128 KiB and more are mapped and unmapped as they come and go.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_blocks() {
    // SAFETY: mallopt only tunes the allocator; this runs first in main,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_blocks() {}

fn main() -> ExitCode {
    return_large_blocks();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("healthgate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("healthgate: {}", one_line(&f.message));
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Config(ConfigCommand::Check { bind, issuer }) = &cli.command {
        return config::check_command(
            cli.config.as_deref(),
            cli.database_url.as_deref(),
            bind.as_deref(),
            issuer.as_deref(),
            cli.json,
        );
    }
    let serve_args = match &cli.command {
        Command::Serve(a) => Some(a),
        _ => None,
    };
    let settings = config::load(
        cli.config.as_deref(),
        cli.database_url.as_deref(),
        serve_args.and_then(|a| a.bind.as_deref()),
        serve_args.and_then(|a| a.issuer.as_deref()),
    )?;
    config::init_logging(&settings)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cli.command {
        Command::Serve(args) => serve(settings, clock, args.demo, cli.json).await,
        Command::Migrate => {
            open(settings, &clock).await?.store.close().await;
            print(
                cli.json,
                &json!({"migrated": true}),
                "database is up to date",
            );
            Ok(())
        }
        Command::Client(c) => client_command(settings, clock, c, cli.json).await,
        Command::User(u) => users::user_command(settings, clock, u, cli.json).await,
        Command::Org(c) => ops::org_command(settings, clock, c, cli.json).await,
        Command::Audit(c) => ops::audit_command(settings, clock, c, cli.json).await,
        Command::Webhooks(c) => ops::webhooks_command(settings, clock, c, cli.json).await,
        Command::Keys(c) => ops::keys_command(settings, clock, c, cli.json).await,
        Command::Smart(c) => ops::smart_command(settings, clock, c, cli.json).await,
        Command::Backup { path } => ops::backup(settings, &path, cli.json).await,
        // Answered above, before the settings are loaded: it reports their
        // problems rather than stopping at them.
        Command::Config(_) => Ok(()),
    }
}

/// Opens (and migrates) the database a command works on.
pub(crate) async fn open(
    settings: Settings,
    clock: &Arc<dyn Clock>,
) -> Result<healthgate_server::AppState, Failure> {
    Ok(healthgate_server::open(settings, clock.clone())
        .await
        .map_err(anyhow::Error::from)?)
}

pub(crate) fn print(as_json: bool, value: &serde_json::Value, text: &str) {
    if as_json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

async fn serve(
    mut settings: Settings,
    clock: Arc<dyn Clock>,
    with_demo: bool,
    as_json: bool,
) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.bind))?;
    let local = listener.local_addr().map_err(anyhow::Error::from)?;
    if settings.issuer.is_none() {
        settings.issuer = Some(Issuer::http(local));
    }
    let state = open(settings, &clock).await?;
    if with_demo {
        let seed = demo::seed(&state.store, &state.settings, clock.as_ref()).await?;
        print_demo(&seed, as_json);
    }
    tracing::info!(address = %local, issuer = %state.issuer, "healthgate listening on http://{local}");
    healthgate_server::serve(listener, state, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("server error: {e}"))?;
    tracing::info!("healthgate stopped");
    Ok(())
}

fn print_demo(seed: &demo::DemoSeed, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(seed).unwrap_or_default());
        return;
    }
    println!(
        "Demo data ready ({} {}):",
        seed.practice_name, seed.practice_id
    );
    let base = seed.redirect_uri.trim_end_matches("/demo/callback");
    for a in &seed.accounts {
        println!(
            "  {:<13} username {:<12} password {}  ({}{})",
            a.role,
            a.username,
            a.password,
            a.user_type,
            if a.operator {
                ", operator: opens the admin console"
            } else {
                ""
            }
        );
    }
    println!("Demo partner app:");
    println!("  client_id      {}", seed.client_id);
    println!("  client_secret  {}", seed.client_secret);
    println!("  redirect_uri   {}", seed.redirect_uri);
    println!("Open this in a browser to run the flow:");
    println!("  {}", seed.authorize_url);
    if let Some(smart) = &seed.smart {
        println!("Demo SMART app (dr.demo is Practitioner/dr-demo, with two patients):");
        println!("  client_id      {}", smart.client_id);
        println!("  client_secret  {}", smart.client_secret);
        println!("  EHR launch, valid five minutes (sign in as dr.demo):");
        println!("    {}", smart.ehr_launch_url);
        println!(
            "    another: healthgate smart launch --client {} --user dr.demo --patient pat-1",
            smart.client_id
        );
        println!("  Standalone launch (dr.demo picks a patient):");
        println!("    {}", smart.standalone_url);
    }
    println!("Operators run the platform from the admin console at {base}/admin");
    println!("Partner developers register their own apps at {base}/developers");
    println!("  and walk them through the flow at {base}/playground.");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

fn client_json(c: &Client) -> serde_json::Value {
    json!({
        "client_id": c.id,
        "name": c.name,
        "type": c.kind.as_str(),
        "redirect_uris": c.redirect_uris.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "scope": c.allowed_scopes.to_string(),
        "user_types": c.user_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "photo_url": c.photo_url,
        "description": c.description,
        "connect_url": c.connect_redirect_url,
        "published": c.is_listed(),
        "listing": listing_json(&c.listing),
        "webhook_url": c.webhook_url,
        "webhook_muted": c.webhook_muted_at.is_some(),
        "authorization_level": c.authorization_level.as_str(),
        "access_token_format": if c.jwt_access_tokens { "jwt" } else { "opaque" },
        "id_token_alg": c.id_token_alg.as_str(),
        "provisioning_scope": c.provisioning_scopes.as_ref().map(|s| s.to_string()),
        "suspended_at": c.suspended_at,
        "resource_server": c.resource_server,
        "require_mfa": c.require_mfa,
        "require_dpop": c.require_dpop,
        "require_par": c.require_par,
        "owner_id": c.owner_id,
        "registered_with": c.registered_with,
        "smart_launcher": c.smart_launcher,
        "launch_url": c.launch_url,
        "token_endpoint_auth_method": c.token_endpoint_auth_method(),
        "jwks_uri": c.jwks_uri,
        "jwks": c.jwks.as_deref().and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()),
        "created_at": c.created_at,
    })
}

fn listing_json(l: &Listing) -> serde_json::Value {
    json!({
        "state": l.state.as_str(),
        "requested_at": l.requested_at,
        "reviewed_at": l.reviewed_at,
        "reviewed_by": l.reviewed_by,
        "reason": l.reason,
        "changed": l.changed.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
    })
}

/// An app's listing in words: `waiting for review since …`.
fn listing_text(l: &Listing) -> String {
    let at = |t: Option<i64>| {
        t.map(healthgate_server::http::pages::format_utc)
            .unwrap_or_else(|| "-".to_owned())
    };
    match l.state {
        ListingState::NotListed if l.was_unlisted() => format!(
            "not listed (taken out {}: {})",
            at(l.reviewed_at),
            l.reason.as_deref().unwrap_or_default()
        ),
        ListingState::NotListed => "not listed".to_owned(),
        ListingState::Requested if !l.changed.is_empty() => format!(
            "waiting for review since {}, after a change of {}",
            at(l.requested_at),
            ReviewedField::join(&l.changed)
        ),
        ListingState::Requested => format!("waiting for review since {}", at(l.requested_at)),
        ListingState::Approved => format!("listed since {}", at(l.reviewed_at)),
        ListingState::Rejected => format!(
            "rejected {}: {}",
            at(l.reviewed_at),
            l.reason.as_deref().unwrap_or_default()
        ),
    }
}

fn client_text(c: &Client) -> String {
    let uris: Vec<&str> = c.redirect_uris.iter().map(|u| u.as_str()).collect();
    let types: Vec<&str> = c.user_types.iter().map(|t| t.as_str()).collect();
    format!(
        "client_id      {}\nname           {}\nstatus         {}\ntype           {}\nredirect_uris  {}\nscope          {}\nuser_types     {}\nphoto_url      {}\nlisting        {}\nconnect_url    {}\nwebhook_url    {}{}\nresource_server {}\nrequire_mfa    {}\nrequire_dpop   {}\nrequire_par    {}\nsmart_launcher {}\nlaunch_url     {}\nauth_method    {}",
        c.id,
        c.name,
        if c.suspended_at.is_some() {
            "suspended"
        } else {
            "active"
        },
        c.kind,
        uris.join(" "),
        c.allowed_scopes,
        types.join(","),
        c.photo_url.as_deref().unwrap_or("-"),
        listing_text(&c.listing),
        c.connect_redirect_url.as_deref().unwrap_or("-"),
        c.webhook_url.as_deref().unwrap_or("-"),
        if c.webhook_muted_at.is_some() {
            " (muted)"
        } else {
            ""
        },
        c.resource_server,
        c.require_mfa,
        c.require_dpop,
        c.require_par,
        c.smart_launcher,
        c.launch_url.as_deref().unwrap_or("-"),
        c.token_endpoint_auth_method(),
    )
}

fn registration_token_json(t: &healthgate_store::RegistrationToken) -> serde_json::Value {
    json!({
        "id": t.id,
        "label": t.label,
        "owner_id": t.owner_id,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "revoked_at": t.revoked_at,
    })
}

async fn registration_token_command(
    state: &healthgate_server::AppState,
    clock: &dyn Clock,
    cmd: RegistrationTokenCommand,
    as_json: bool,
) -> Result<(), Failure> {
    use healthgate_server::services::registration;
    let store = &state.store;
    match cmd {
        RegistrationTokenCommand::Create {
            expires,
            owner,
            label,
        } => {
            let (token, value) = registration::issue_token(
                store,
                clock,
                label,
                owner.as_deref(),
                expires,
                Actor::system(),
            )
            .await?;
            let mut body = registration_token_json(&token);
            body["token"] = json!(value);
            let text = format!(
                "id     {}\ntoken  {value}\n\nThe token is shown only now. Register an app with\n  curl -H 'Authorization: Bearer {value}' -H 'Content-Type: application/json' \\\n    -d '{{\"client_name\": \"My app\", \"redirect_uris\": [\"https://app.example/cb\"], \"scope\": \"…\"}}' {}/oauth/register",
                token.id, state.issuer
            );
            print(as_json, &body, &text);
        }
        RegistrationTokenCommand::List => {
            let tokens = store
                .registration_tokens()
                .await
                .map_err(anyhow::Error::from)?;
            let now = clock.now();
            let text = if tokens.is_empty() {
                "no registration tokens issued".to_owned()
            } else {
                tokens
                    .iter()
                    .map(|t| {
                        let state = match (t.revoked_at, t.is_usable(now)) {
                            (Some(_), _) => "revoked",
                            (None, true) => "usable",
                            (None, false) => "expired",
                        };
                        format!("{}  {state}  {}", t.id, t.label.as_deref().unwrap_or("-"))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let value = json!(
                tokens
                    .iter()
                    .map(registration_token_json)
                    .collect::<Vec<_>>()
            );
            print(as_json, &value, &text);
        }
        RegistrationTokenCommand::Revoke { id } => {
            let revoked = store
                .revoke_registration_token(&id, Actor::system(), clock.now())
                .await
                .map_err(anyhow::Error::from)?;
            if !revoked {
                return Err(Failure {
                    code: 1,
                    message: format!("no usable registration token with id {id:?}"),
                });
            }
            print(
                as_json,
                &json!({"id": id, "revoked": true}),
                &format!("revoked {id}: apps registered with it stay registered"),
            );
        }
    }
    Ok(())
}

/// A JWK Set file's text, for `--jwks`.
fn read_jwks(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure {
        code: 2,
        message: format!("cannot read the JWK Set {}: {e}", path.display()),
    })
}

async fn client_command(
    settings: Settings,
    clock: Arc<dyn Clock>,
    cmd: ClientCommand,
    as_json: bool,
) -> Result<(), Failure> {
    let state = open(settings, &clock).await?;
    let store = &state.store;
    match cmd {
        ClientCommand::Create {
            name,
            redirect_uris,
            scope,
            public,
            photo_url,
            user_types,
            authorization_level,
            resource_server,
            require_mfa,
            require_dpop,
            require_par,
            smart_launcher,
            launch_url,
            jwks_uri,
            jwks,
        } => {
            let jwks = jwks.map(|f| read_jwks(&f)).transpose()?;
            let (client, secret) = admin::create_client(
                store,
                &state.settings,
                clock.as_ref(),
                NewClient {
                    name,
                    redirect_uris,
                    scope,
                    public,
                    photo_url,
                    user_types: user_types.unwrap_or_default(),
                    authorization_level,
                    resource_server,
                    require_mfa,
                    require_dpop,
                    require_par,
                    smart_launcher,
                    launch_url,
                    jwks_uri,
                    jwks,
                    ..Default::default()
                },
                Actor::system(),
            )
            .await?;
            let mut value = client_json(&client);
            value["client_secret"] = json!(secret);
            let mut text = client_text(&client);
            if let Some(s) = &secret {
                text.push_str(&format!(
                    "\nclient_secret  {s}\n\nThe secret is shown only now: store it safely."
                ));
            }
            print(as_json, &value, &text);
        }
        ClientCommand::List => {
            let clients = store.clients().await.map_err(anyhow::Error::from)?;
            let value = json!(clients.iter().map(client_json).collect::<Vec<_>>());
            let text = if clients.is_empty() {
                "no clients registered".to_owned()
            } else {
                clients
                    .iter()
                    .map(|c| format!("{}  {}  {}", c.id, c.kind, c.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(as_json, &value, &text);
        }
        ClientCommand::Show { id } => {
            let client = store
                .client(&id)
                .await
                .map_err(anyhow::Error::from)?
                .ok_or(AdminError::NoSuchClient(id))?;
            print(as_json, &client_json(&client), &client_text(&client));
        }
        ClientCommand::RotateSecret { id, now } => {
            let grace = if now {
                None
            } else {
                state.settings.client_secret_grace
            };
            let secret =
                admin::rotate_client_secret(store, clock.as_ref(), &id, grace, Actor::system())
                    .await?;
            let until = grace.map(|g| clock.now() + g.secs());
            let said = match until {
                Some(until) => format!(
                    "The old secret keeps working until {} (client_secret_grace); rotate with --now to end it at once.",
                    healthgate_server::http::pages::format_utc(until)
                ),
                None => "The old secret no longer works.".to_owned(),
            };
            print(
                as_json,
                &json!({"client_id": id, "client_secret": secret, "previous_secret_expires_at": until}),
                &format!("client_id      {id}\nclient_secret  {secret}\n\n{said}"),
            );
        }
        ClientCommand::Update(u) => {
            let u = *u;
            let changes = ClientChanges {
                name: u.name,
                redirect_uris: (!u.redirect_uris.is_empty()).then_some(u.redirect_uris),
                scope: u.scope,
                user_types: u.user_types,
                photo_url: u.photo_url.map(Some),
                description: u.description.map(Some),
                connect_redirect_url: u.connect_redirect_url.map(Some),
                webhook_url: u.webhook_url.map(Some),
                authorization_level: u.authorization_level,
                jwt_access_tokens: u.access_token_format.map(|f| f == "jwt"),
                id_token_alg: u.id_token_alg.and_then(|a| a.parse().ok()),
                provisioning_scope: u.provisioning_scope.map(Some),
                published: match (u.publish, u.unpublish) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                resource_server: match (u.resource_server, u.no_resource_server) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                require_mfa: match (u.require_mfa, u.no_require_mfa) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                require_dpop: match (u.require_dpop, u.no_require_dpop) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                require_par: match (u.require_par, u.no_require_par) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                smart_launcher: match (u.smart_launcher, u.no_smart_launcher) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                launch_url: u.launch_url.map(Some),
                jwks_uri: u.jwks_uri.map(Some),
                jwks: u.jwks.map(|f| read_jwks(&f)).transpose()?.map(Some),
            };
            let client = admin::update_client(
                store,
                &state.settings,
                clock.as_ref(),
                &u.id,
                changes,
                Actor::system(),
            )
            .await?;
            print(as_json, &client_json(&client), &client_text(&client));
        }
        ClientCommand::WebhookSecret { id, rotate } => {
            let secret = if rotate {
                admin::rotate_webhook_secret(
                    store,
                    &state.settings,
                    clock.as_ref(),
                    &id,
                    Actor::system(),
                )
                .await?
            } else {
                let client = store
                    .client(&id)
                    .await
                    .map_err(anyhow::Error::from)?
                    .ok_or(AdminError::NoSuchClient(id.clone()))?;
                healthgate_server::services::secrets::webhook_secret(
                    store,
                    &state.settings,
                    &client,
                )
                .await
                .map_err(AdminError::from)?
            };
            print(
                as_json,
                &json!({"client_id": id, "webhook_secret": secret}),
                &format!(
                    "client_id       {id}\nwebhook_secret  {secret}\n\nVerify Healthgate-Signature with it (README: Webhooks)."
                ),
            );
        }
        ClientCommand::Suspend { id, reason } => {
            let reason = reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
            let done =
                admin::suspend_client(store, clock.as_ref(), &id, reason, Actor::system()).await?;
            let (value, text) = match done {
                Suspension::Suspended {
                    families_revoked,
                    codes_expired,
                } => (
                    json!({"client_id": id, "suspended": true, "changed": true,
                           "families_revoked": families_revoked, "codes_expired": codes_expired}),
                    format!(
                        "suspended {id}: {families_revoked} token families revoked, {codes_expired} pending codes expired"
                    ),
                ),
                _ => (
                    json!({"client_id": id, "suspended": true, "changed": false}),
                    format!("{id} was already suspended"),
                ),
            };
            print(as_json, &value, &text);
        }
        ClientCommand::Restore { id } => {
            let changed =
                admin::restore_client(store, clock.as_ref(), &id, Actor::system()).await?;
            let text = if changed {
                format!("restored {id}: it may ask for new tokens; revoked tokens stay revoked")
            } else {
                format!("{id} was not suspended")
            };
            print(
                as_json,
                &json!({"client_id": id, "suspended": false, "changed": changed}),
                &text,
            );
        }
        ClientCommand::ListRequests => {
            let waiting = admin::listings(store, ListingState::Requested).await?;
            let value = json!(
                waiting
                    .iter()
                    .map(|r| {
                        let mut v = client_json(&r.client);
                        v["owner"] = r.owner.as_ref().map_or(serde_json::Value::Null, |u| {
                            json!({"id": u.id, "username": u.username, "name": u.name, "email": u.email})
                        });
                        v["scopes"] = json!(
                            r.client
                                .allowed_scopes
                                .iter()
                                .map(|s| json!({
                                    "scope": s,
                                    "description": healthgate_server::http::pages::describe_scope(&state.settings, s),
                                }))
                                .collect::<Vec<_>>()
                        );
                        v
                    })
                    .collect::<Vec<_>>()
            );
            let text = if waiting.is_empty() {
                "no app is waiting for review".to_owned()
            } else {
                waiting
                    .iter()
                    .map(|r| {
                        let c = &r.client;
                        let owner = r.owner.as_ref().map_or_else(
                            || "an operator".to_owned(),
                            |u| match &u.email {
                                Some(e) => format!("{} <{e}>", u.username),
                                None => u.username.clone(),
                            },
                        );
                        format!(
                            "{}  {}\n  {}\n  registered by {owner}\n  scope {}\n  connect_url {}\n  redirect_uris {}",
                            c.id,
                            c.name,
                            listing_text(&c.listing),
                            c.allowed_scopes,
                            c.connect_redirect_url.as_deref().unwrap_or("-"),
                            c.redirect_uris
                                .iter()
                                .map(|u| u.as_str())
                                .collect::<Vec<_>>()
                                .join(" "),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(as_json, &value, &text);
        }
        ClientCommand::Approve { id } => {
            let done =
                admin::approve_listing(store, clock.as_ref(), &id, None, Actor::system()).await?;
            listing_done(
                as_json,
                &done,
                "approved: it is listed in the integration directory",
            );
        }
        ClientCommand::Reject { id, reason } => {
            let reason = admin::reason(&reason)?;
            let done =
                admin::reject_listing(store, clock.as_ref(), &id, &reason, Actor::system()).await?;
            listing_done(as_json, &done, "rejected: its developer reads the reason");
        }
        ClientCommand::Unlist { id, reason } => {
            let reason = admin::reason(&reason)?;
            let done = admin::unlist(store, clock.as_ref(), &id, &reason, Actor::system()).await?;
            listing_done(
                as_json,
                &done,
                "taken out of the integration directory; connected practices stay connected",
            );
        }
        ClientCommand::Delete { id } => {
            admin::delete_client(store, clock.as_ref(), &id, Actor::system()).await?;
            print(
                as_json,
                &json!({"client_id": id, "deleted": true}),
                &format!("deleted {id}"),
            );
        }
        ClientCommand::RegistrationToken(cmd) => {
            registration_token_command(&state, clock.as_ref(), cmd, as_json).await?;
        }
    }
    store.close().await;
    Ok(())
}

/// Prints what a listing decision did: `did` when it changed the listing;
/// else where the listing stands.
fn listing_done(as_json: bool, done: &admin::ListingDone, did: &str) {
    let c = &done.client;
    let text = if done.changed {
        format!("{} {did}", c.id)
    } else {
        format!(
            "{}: nothing to do, it is {}",
            c.id,
            listing_text(&c.listing)
        )
    };
    print(
        as_json,
        &json!({"client_id": c.id, "listing": listing_json(&c.listing), "changed": done.changed}),
        &text,
    );
}

#[cfg(test)]
mod tests {
    use super::{Cli, ClientCommand, Command, error_chain, one_line};
    use clap::{CommandFactory, Parser};
    use healthgate_core::user::UserType;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn user_types_is_one_list_valued_flag() {
        let cli = Cli::try_parse_from([
            "healthgate",
            "client",
            "create",
            "--name",
            "A",
            "--redirect-uri",
            "https://a.example/cb",
            "--scope",
            "profile_read",
            "--user-types",
            "expert,member",
        ])
        .unwrap();
        let Command::Client(ClientCommand::Create { user_types, .. }) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(user_types, Some(vec![UserType::Member, UserType::Expert]));
    }

    /// An error that prints its source and also returns it, as
    /// `#[error("…: {0}")]` with `#[from]` does.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot open the database: {}", self.0)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn repeated_causes_are_shown_once() {
        let e = anyhow::Error::from(Outer(std::io::Error::other("disk full")));
        assert_eq!(error_chain(&e), "cannot open the database: disk full");
        let e = anyhow::Error::from(std::io::Error::other("no such file"))
            .context("cannot read config file x.toml");
        assert_eq!(
            error_chain(&e),
            "cannot read config file x.toml: no such file"
        );
    }

    #[test]
    fn toml_excerpts_are_dropped() {
        let m = "bad.toml: TOML parse error at line 1, column 10\n  |\n1 | bind = [\n  |          ^\ninvalid array\nexpected `]`\n";
        assert_eq!(
            one_line(m),
            "bad.toml: TOML parse error at line 1, column 10; invalid array; expected `]`"
        );
        assert_eq!(one_line("plain"), "plain");
    }
}
