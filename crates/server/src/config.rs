//! The settings a healthgate deployment runs with, parsed once into typed
//! values. The binary loads them from a TOML file, then `HEALTHGATE_*`
//! environment variables, then flags; every field has a default so an empty
//! configuration is a working one. Each field's type parses its own value,
//! so a bad one is refused with its key and where it came from, and what is
//! allowed; [`Settings::validate`] checks only what spans several fields.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use healthgate_core::forwarded::IpRange;
use healthgate_core::mfa::MfaPolicy;
use healthgate_core::scope::ScopeSet;
use healthgate_core::token::{RefreshRotation, TokenPolicy};
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, LevelFilter};

/// Every setting, with its default. `examples/config/healthgate.toml` lists
/// them all with comments; keep the two in step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address and port to listen on.
    #[serde(deserialize_with = "socket_address")]
    pub bind: SocketAddr,
    /// The public base URL partners use (`iss` of every authorization
    /// response, RFC 9207). Defaults to `http://{bind}`.
    pub issuer: Option<Issuer>,
    /// `sqlite://PATH` (default, created if missing) or `postgres://…`.
    #[serde(serialize_with = "url_masked")]
    pub database_url: String,
    /// PostgreSQL pool size, or SQLite reader connections.
    pub database_max_connections: NonZeroU32,
    /// SQLite: `normal` (a commit survives a crash of the process) or
    /// `full` (it survives a power cut too).
    pub database_synchronous: DatabaseSynchronous,
    /// Authorization code lifetime (Fullscript: 10 minutes).
    pub authorization_code_ttl: Seconds,
    /// Access token lifetime (Fullscript: 2 hours).
    pub access_token_ttl: Seconds,
    /// Refresh token lifetime; `None` (0 in the file) never expires.
    #[serde(
        deserialize_with = "seconds_or_zero",
        serialize_with = "zero_or_seconds"
    )]
    pub refresh_token_ttl: Option<Seconds>,
    /// `immediate` or `on_first_use`.
    #[serde(serialize_with = "as_text")]
    pub refresh_rotation: RefreshRotation,
    /// Browser session lifetime.
    pub session_ttl: Seconds,
    /// Time between expired-row cleanup passes on this node; `None` (0)
    /// disables them.
    #[serde(
        deserialize_with = "seconds_or_zero",
        serialize_with = "zero_or_seconds"
    )]
    pub cleanup_interval: Option<Seconds>,
    /// How long retired refresh tokens and revoked token families are kept,
    /// so that a late replay is still recognised as reuse.
    pub retired_token_retention: Seconds,
    /// Read the client address from `X-Forwarded-For` (behind a reverse
    /// proxy): the rightmost entry that is not one of `trusted_proxies`.
    pub trust_forwarded_for: bool,
    /// The proxies whose `X-Forwarded-For` entries are believed: addresses
    /// or CIDR ranges. A request from anywhere else is taken at its peer
    /// address, whatever its headers say.
    pub trusted_proxies: Vec<IpRange>,
    /// Lifetime of an InstantOn connect code.
    pub connect_code_ttl: Seconds,
    /// Lifetime of a connect code an admin copies by hand.
    pub manual_connect_code_ttl: Seconds,
    /// Allow `http://` webhook and photo URLs on loopback (development and
    /// demos only).
    pub allow_http_webhooks: bool,
    /// Anyone may create a developer account in the portal (`/developers`)
    /// and register apps; when false, only accounts the operator made can.
    pub developer_signup: bool,
    /// Time between looks for due webhook deliveries on this node; `None`
    /// (0) disables the delivery worker on this node.
    #[serde(
        deserialize_with = "seconds_or_zero",
        serialize_with = "zero_or_seconds"
    )]
    pub webhook_poll_interval: Option<Seconds>,
    /// Key that webhook signing secrets (and the sealing key of signing
    /// keys) are derived from. Without it, one is generated and kept in the
    /// database; set it on every node to keep it out of the database.
    pub secret_key: Option<SecretKey>,
    /// OpenID Connect ID token lifetime.
    pub id_token_ttl: Seconds,
    /// After `healthgate keys rotate`, the time before the new key signs (so
    /// relying parties have fetched it from the JWKS first); `None` (0): at
    /// once.
    #[serde(
        deserialize_with = "seconds_or_zero",
        serialize_with = "zero_or_seconds"
    )]
    pub key_rotation_overlap: Option<Seconds>,
    /// After an APP_SECRET is rotated, how long the old one keeps working
    /// beside the new one; `None` (0): it ends at once.
    #[serde(
        deserialize_with = "seconds_or_zero",
        serialize_with = "zero_or_seconds"
    )]
    pub client_secret_grace: Option<Seconds>,
    /// The name shown on every page.
    pub platform_name: String,
    /// `text` or `json` log lines on standard error.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `healthgate=debug,info`.
    pub log_level: LogLevel,
    /// Serve Prometheus metrics at `/metrics` on this address of their own
    /// (e.g. `127.0.0.1:9090`), and not on the main listener.
    #[serde(deserialize_with = "some_socket_address")]
    pub metrics_bind: Option<SocketAddr>,
    /// Without `metrics_bind`: serve `/metrics` on the main listener to a
    /// scraper presenting `Authorization: Bearer` with this token.
    pub metrics_token: Option<MetricsToken>,
    /// The scope vocabulary: each scope and the plain words the consent page
    /// shows for it. Setting this table replaces the default vocabulary.
    pub scopes: BTreeMap<String, String>,
    /// How every page looks: logo, accent colour, support link.
    pub branding: Branding,
    /// Guessing stopped: when failures slow down and then stop a sign-in or
    /// a client, and how many requests one address may make.
    pub throttle: ThrottleSettings,
    /// The mail server recovery by email sends through (`[smtp]`); without
    /// it, addresses are not verified and recovery goes through an operator.
    pub smtp: Option<SmtpSettings>,
    /// Seed-platform compatibility: extra route paths and request and
    /// response shapes (`examples/config/{hint,healthtap,healthkey,fullscript}.toml`).
    pub profile: ProfileSettings,
    /// The roles people hold in organizations: what each may grant, and the
    /// resource-owner type its grants carry. Setting this table replaces the
    /// default roles; `admin` must stay.
    pub roles: BTreeMap<String, RoleSettings>,
    /// Who must have a second factor: `optional` (the default: everyone
    /// may, the roles and operators settings say who must) or `required`
    /// (everyone). A person who must and has none is taken to enrol before
    /// anything else.
    #[serde(deserialize_with = "mfa_policy", serialize_with = "as_text")]
    pub mfa: MfaPolicy,
    /// The platform's operators must have a second factor.
    pub operators_require_mfa: bool,
    /// A passkey may sign a person in on its own, without their password
    /// (it is two factors in one: the device and its PIN or biometric).
    pub passkey_sign_in: bool,
    /// SMART App Launch (`[smart]`): the FHIR servers tokens are issued for.
    pub smart: SmartSettings,
    /// DPoP (`[dpop]`, RFC 9449).
    pub dpop: DpopSettings,
    /// Pushed authorization requests (`[par]`, RFC 9126).
    pub par: ParSettings,
    /// Dynamic client registration (`[registration]`, RFC 7591).
    pub registration: RegistrationSettings,
    /// The audit trail's retention (`[audit]`): archiving old events.
    pub audit: AuditSettings,
}

/// The audit trail's retention (`[audit]`). With both set, this node moves
/// sealed events older than `archive_after_days` to segments in
/// `archive_dir` once an hour (`healthgate audit archive` on a schedule).
/// Set it on one node only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Days an event stays in the database before it is archived.
    pub archive_after_days: Option<NonZeroU32>,
    /// The folder segments are written to (made if missing).
    pub archive_dir: Option<std::path::PathBuf>,
}

/// Dynamic client registration (`[registration]`, RFC 7591).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationSettings {
    /// Anyone may register an app at `/oauth/register`, without an initial
    /// access token (RFC 7591 §3: open registration). Off: an operator's
    /// `healthgate client registration-token create` token is needed.
    pub open: bool,
}

/// Pushed authorization requests (`[par]`, RFC 9126).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParSettings {
    /// Every app must push its authorization requests first
    /// (`require_pushed_authorization_requests`); apps can also be
    /// registered to, one by one.
    pub required: bool,
    /// How long a `request_uri` lives, 60 to 600 seconds.
    pub lifetime: Seconds,
}

impl Default for ParSettings {
    fn default() -> Self {
        Self {
            required: false,
            lifetime: Seconds::of(90),
        }
    }
}

/// DPoP (`[dpop]`, RFC 9449).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpopSettings {
    /// Every DPoP proof must carry a nonce this server gave (RFC 9449 §8,
    /// §9): a proof without a fresh one is answered `use_dpop_nonce` with
    /// the nonce in `DPoP-Nonce`, so proofs made in advance are of no use.
    pub nonce: bool,
}

/// SMART App Launch 2.2 (`[smart]`). On when at least one FHIR base URL is
/// set: `/.well-known/smart-configuration` answers, and apps may be
/// registered with, and ask for, SMART's scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmartSettings {
    /// The base URLs of the FHIR servers healthgate authorizes access to,
    /// such as `https://fhir.example.com/r4`: the `aud` a SMART app names.
    pub fhir_base_urls: Vec<FhirBase>,
}

impl SmartSettings {
    pub fn enabled(&self) -> bool {
        !self.fhir_base_urls.is_empty()
    }
}

/// A FHIR server's base URL: absolute `https` (or `http` on a loopback
/// address, for development), without query or fragment, and without a
/// trailing slash (`https://fhir.example.com/r4/` is kept as
/// `https://fhir.example.com/r4`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FhirBase(String);

impl FhirBase {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FhirBase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
            return Err(format!(
                "{s:?} must be an https URL (http only on a loopback address)"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!(
                "{s:?} must not carry a query, a fragment or credentials"
            ));
        }
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }
}

impl fmt::Display for FhirBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for FhirBase {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// The deployment's look on every page (`[branding]`); the name is
/// `platform_name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Branding {
    /// A logo shown beside the name: an https URL (whose origin alone the
    /// pages' CSP then lets images come from), or a path on this server.
    pub logo_url: Option<PageLink>,
    /// The accent colour of the header and buttons.
    pub accent_color: HexColor,
    /// Where people find help, linked at the foot of every page.
    pub support_url: Option<PageLink>,
}

impl Default for Branding {
    fn default() -> Self {
        Self {
            logo_url: None,
            accent_color: HexColor([0x1b, 0x53, 0x3f]),
            support_url: None,
        }
    }
}

/// How partners written for another platform reach healthgate unchanged
/// (`[profile]`). The standard paths always work; these add to them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileSettings {
    /// Extra paths of the authorization endpoint (HealthKey: `/o/authorize/`).
    pub authorize_paths: Vec<ProfilePath>,
    /// Extra paths of the token endpoint (HealthKey: `/o/token/`;
    /// Fullscript: `/api/oauth/token`).
    pub token_paths: Vec<ProfilePath>,
    /// Extra paths of the revocation endpoint (Fullscript: `/api/oauth/revoke`).
    pub revoke_paths: Vec<ProfilePath>,
    /// Extra paths of user provisioning (HealthTap: `/api/v2.1/users.json`).
    pub user_paths: Vec<ProfilePath>,
    /// Accept token-request parameters in the query string (HealthKey's
    /// documented requests). Off by default: it puts secrets in URLs, so
    /// every such request is logged as a warning.
    pub token_params_in_query: bool,
    /// Wrap token responses in an object under this key (Fullscript: `oauth`).
    pub token_response_wrapper: Option<Word>,
    /// The `token_type` of token responses (`Bearer`; HealthKey and
    /// HealthTap show `bearer`).
    pub token_type: TokenType,
    /// An app's scopes are set at registration (Fullscript): a `scope` in
    /// the authorization request is ignored and the app's registered scopes
    /// are asked for.
    pub scopes_from_registration: bool,
    /// The scopes of tokens for partner-provisioned accounts when the app
    /// has none of its own (`--provisioning-scope`), space-separated in the
    /// file (HealthTap: `member_public`); without it, the app's allowed
    /// scopes.
    #[serde(deserialize_with = "some_scopes", serialize_with = "spaced_scopes")]
    pub provisioning_scope: Option<ScopeSet>,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        Self {
            authorize_paths: Vec::new(),
            token_paths: Vec::new(),
            revoke_paths: Vec::new(),
            user_paths: Vec::new(),
            token_params_in_query: false,
            token_response_wrapper: None,
            token_type: TokenType::Bearer,
            scopes_from_registration: false,
            provisioning_scope: None,
        }
    }
}

impl ProfileSettings {
    /// Every extra path, of every endpoint, with the key of its list
    /// (`profile.token_paths`).
    pub fn paths(&self) -> impl Iterator<Item = (&'static str, &ProfilePath)> {
        [
            ("profile.authorize_paths", &self.authorize_paths),
            ("profile.token_paths", &self.token_paths),
            ("profile.revoke_paths", &self.revoke_paths),
            ("profile.user_paths", &self.user_paths),
        ]
        .into_iter()
        .flat_map(|(key, paths)| paths.iter().map(move |p| (key, p)))
    }

    /// Every extra path that clashes with one of `taken`, the paths
    /// healthgate's own routes serve (axum's syntax): the router could not
    /// hold both, or one would answer requests meant for the other.
    pub fn clashes(&self, taken: &[&str]) -> Vec<InvalidSetting> {
        self.paths()
            .filter_map(|(key, path)| {
                let route = taken.iter().find(|route| overlaps(route, path.as_str()))?;
                Some(InvalidSetting::new(
                    key,
                    format!(
                        "{:?} clashes with healthgate's own path {route}; a profile may only add paths healthgate does not serve",
                        path.as_str()
                    ),
                ))
            })
            .collect()
    }
}

/// Whether a profile's plain `path` and a `route` of healthgate's own
/// overlap: compared segment by segment (a `{name}` segment of the route
/// matches any, a `{*name}` every rest), they are the same path, or one lies
/// beneath the other. The root `/` overlaps only itself.
fn overlaps(route: &str, path: &str) -> bool {
    if route == "/" {
        return path == "/";
    }
    let mut route = route.split('/').skip(1);
    let mut path = path.split('/').skip(1);
    loop {
        let (Some(r), Some(p)) = (route.next(), path.next()) else {
            return true;
        };
        if r.starts_with("{*") {
            return true;
        }
        let parameter = r.starts_with('{') && r.ends_with('}');
        if !parameter && r != p {
            return false;
        }
    }
}

/// One role's settings (`[roles.staff]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSettings {
    /// The scopes a person in this role may grant an app; `"*"` is every
    /// scope of the vocabulary.
    pub scopes: RoleScopes,
    /// Scopes taken out again (useful with `"*"`); names missing from the
    /// vocabulary are ignored here.
    #[serde(
        default,
        deserialize_with = "scope_list",
        serialize_with = "scope_names"
    )]
    pub except: ScopeSet,
    /// The `resource_owner.type` of tokens granted in this role.
    pub resource_owner_type: Word,
    /// Whoever holds this role in any organization must have a second
    /// factor.
    #[serde(default)]
    pub require_mfa: bool,
}

/// What a role may grant: `scopes = ["*"]`, every scope of the vocabulary,
/// or the scopes listed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub enum RoleScopes {
    Every,
    Listed(ScopeSet),
}

impl TryFrom<Vec<String>> for RoleScopes {
    type Error = String;
    fn try_from(names: Vec<String>) -> Result<Self, String> {
        if names.iter().any(|n| n == "*") {
            return Ok(Self::Every);
        }
        ScopeSet::from_tokens(&names)
            .map(Self::Listed)
            .map_err(|e| format!("{e}; list scope names, or \"*\" for every scope"))
    }
}

fn default_roles() -> BTreeMap<String, RoleSettings> {
    let role = |except: &[&str], owner: &str| RoleSettings {
        scopes: RoleScopes::Every,
        except: ScopeSet::from_tokens(except).unwrap_or_default(),
        resource_owner_type: Word(owner.to_owned()),
        require_mfa: false,
    };
    BTreeMap::from([
        ("admin".to_owned(), role(&[], "Staff")),
        ("practitioner".to_owned(), role(&[], "Practitioner")),
        ("staff".to_owned(), role(&["pay"], "Staff")),
    ])
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            issuer: None,
            database_url: "sqlite://healthgate-data/healthgate.db".into(),
            database_max_connections: NonZeroU32::new(8).expect("8 is not 0"),
            database_synchronous: DatabaseSynchronous::Normal,
            authorization_code_ttl: Seconds::of(600),
            access_token_ttl: Seconds::of(7200),
            refresh_token_ttl: None,
            refresh_rotation: RefreshRotation::Immediate,
            session_ttl: Seconds::of(12 * 3600),
            cleanup_interval: Some(Seconds::of(300)),
            retired_token_retention: Seconds::of(30 * 86_400),
            trust_forwarded_for: false,
            trusted_proxies: healthgate_core::forwarded::loopback_ranges(),
            connect_code_ttl: Seconds::of(600),
            manual_connect_code_ttl: Seconds::of(3600),
            allow_http_webhooks: false,
            developer_signup: true,
            webhook_poll_interval: Some(Seconds::of(2)),
            secret_key: None,
            id_token_ttl: Seconds::of(3600),
            key_rotation_overlap: Some(Seconds::of(3600)),
            client_secret_grace: Some(Seconds::of(86_400)),
            platform_name: "healthgate".into(),
            log_format: LogFormat::Text,
            log_level: LogLevel(vec![LevelFilter::INFO.into()]),
            metrics_bind: None,
            metrics_token: None,
            scopes: healthgate_core::scope::DEFAULT_SCOPES
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            roles: default_roles(),
            mfa: MfaPolicy::Optional,
            operators_require_mfa: false,
            passkey_sign_in: false,
            smart: SmartSettings::default(),
            dpop: DpopSettings::default(),
            par: ParSettings::default(),
            registration: RegistrationSettings::default(),
            audit: AuditSettings::default(),
            profile: ProfileSettings::default(),
            branding: Branding::default(),
            throttle: ThrottleSettings::default(),
            smtp: None,
        }
    }
}

/// The mail server (`[smtp]`): where verification links, reset links and
/// security notices are sent from. Plaintext (`tls = "none"`) only to a
/// loopback host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// The server's name (checked against its certificate) or address.
    pub host: MailHost,
    /// Default: 587 for `starttls`, 465 for `implicit`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `implicit` (TLS from the first byte), or
    /// `none` (loopback only).
    #[serde(default)]
    pub tls: SmtpTls,
    /// Credentials, when the server asks for them (both or neither).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SmtpPassword>,
    /// The sender's address.
    pub from: MailAddress,
    /// The sender's display name; default: `platform_name`.
    #[serde(default)]
    pub from_name: Option<String>,
    /// A PEM file of certificates to trust besides the public roots (a
    /// private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// How long one delivery may take, seconds (default 20).
    #[serde(default = "smtp_timeout")]
    pub timeout: Seconds,
}

fn smtp_timeout() -> Seconds {
    Seconds::of(20)
}

impl SmtpSettings {
    /// The port: the configured one, or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        })
    }
}

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// No TLS: allowed only to a loopback host.
    None,
}

/// A mail server's host name or IP address, without port or scheme.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MailHost(String);

impl MailHost {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it names this machine: `localhost` or a loopback address
    /// (never resolved: a name that merely resolves there does not count).
    pub fn is_loopback(&self) -> bool {
        let host = self.0.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for MailHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MailHost {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let fine = !s.is_empty()
            && s.len() <= 253
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_')
            });
        if !fine || s.contains("://") {
            return Err(format!(
                "{s:?} is not a host name or address such as mail.example.com (no scheme, no port: set smtp.port)"
            ));
        }
        Ok(Self(s))
    }
}

/// An email address, parsed once (`smtp.from`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MailAddress(lettre::Address);

impl MailAddress {
    pub fn address(&self) -> &lettre::Address {
        &self.0
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for MailAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse::<lettre::Address>()
            .map(Self)
            .map_err(|_| format!("{s:?} is not an email address such as no-reply@example.com"))
    }
}

/// The mail server password, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SmtpPassword(String);

impl SmtpPassword {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SmtpPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Guessing stopped (`[throttle]`). Failure runs (per username, per client
/// id) are kept in the database and hold across nodes; the per-address
/// rates are per node. A rate of 0 a minute turns that limit off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleSettings {
    /// Failed sign-ins in a row for a username answered at once; each
    /// further attempt waits 1, 2, 4 … seconds.
    pub sign_in_free_failures: u32,
    /// The longest wait between sign-in attempts.
    pub sign_in_max_delay: Seconds,
    /// Failed sign-ins in a row that lock the username for a while.
    pub sign_in_lock_after: NonZeroU32,
    /// How long such a lock lasts; a run of failures is forgotten this long
    /// after its last one.
    pub sign_in_lock_for: Seconds,
    /// Failed client authentications and `invalid_grant` answers in a row
    /// that block a client id for a while.
    pub client_failure_limit: NonZeroU32,
    /// A client's run of failures is forgotten this long after its last one.
    pub client_failure_window: Seconds,
    /// How long a blocked client id is refused (429).
    pub client_block_for: Seconds,
    /// Sign-in attempts one address may make a minute, after a burst.
    pub sign_in_per_minute: u32,
    pub sign_in_burst: NonZeroU32,
    /// Requests one address may make a minute to the token, introspection,
    /// revocation and userinfo endpoints and the APIs, after a burst.
    pub api_per_minute: u32,
    pub api_burst: NonZeroU32,
    /// Different usernames failing from one address within `burst_window`
    /// that make a burst (an audited event operators see in the console).
    pub burst_accounts: NonZeroU32,
    pub burst_window: Seconds,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        let limits = healthgate_core::throttle::Limits::default();
        let n = |v: u32| NonZeroU32::new(v).expect("a default is positive");
        let s = |v: i64| Seconds::of(u32::try_from(v).expect("a default fits"));
        let (sign_in_rate, api_rate) = (
            limits.sign_in_rate.expect("on by default"),
            limits.api_rate.expect("on by default"),
        );
        Self {
            sign_in_free_failures: limits.sign_in.free_failures,
            sign_in_max_delay: s(limits.sign_in.max_delay),
            sign_in_lock_after: n(limits.sign_in.lock_after),
            sign_in_lock_for: s(limits.sign_in.lock_for),
            client_failure_limit: n(limits.client.limit),
            client_failure_window: s(limits.client.forget_after),
            client_block_for: s(limits.client.block_for),
            sign_in_per_minute: sign_in_rate.per_minute,
            sign_in_burst: n(sign_in_rate.burst),
            api_per_minute: api_rate.per_minute,
            api_burst: n(api_rate.burst),
            burst_accounts: n(limits.burst_accounts),
            burst_window: s(limits.burst_window),
        }
    }
}

impl ThrottleSettings {
    /// The limits these settings set.
    pub fn limits(&self) -> healthgate_core::throttle::Limits {
        use healthgate_core::throttle::{ClientPolicy, Limits, Rate, SignInPolicy};
        let rate = |per_minute: u32, burst: NonZeroU32| {
            (per_minute > 0).then_some(Rate {
                per_minute,
                burst: burst.get(),
            })
        };
        Limits {
            sign_in: SignInPolicy {
                free_failures: self.sign_in_free_failures,
                max_delay: self.sign_in_max_delay.secs(),
                lock_after: self.sign_in_lock_after.get(),
                lock_for: self.sign_in_lock_for.secs(),
            },
            client: ClientPolicy {
                limit: self.client_failure_limit.get(),
                forget_after: self.client_failure_window.secs(),
                block_for: self.client_block_for.secs(),
            },
            sign_in_rate: rate(self.sign_in_per_minute, self.sign_in_burst),
            api_rate: rate(self.api_per_minute, self.api_burst),
            burst_accounts: self.burst_accounts.get(),
            burst_window: self.burst_window.secs(),
        }
    }
}

/// A positive whole number of seconds: a lifetime or an interval. A setting
/// where 0 means "never" or "off" is an `Option<Seconds>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(NonZeroU32);

impl Seconds {
    /// `secs` seconds; 0 is refused at compile time in a constant, and
    /// panics otherwise.
    pub const fn of(secs: u32) -> Self {
        match NonZeroU32::new(secs) {
            Some(n) => Self(n),
            None => panic!("Seconds::of(0): a lifetime is positive"),
        }
    }

    /// In the unit timestamps are kept in (epoch seconds).
    pub fn secs(self) -> i64 {
        i64::from(self.0.get())
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0.get()))
    }
}

/// Reads whole seconds from an integer; `zero` says whether 0 (`None`) is
/// allowed.
struct SecondsVisitor {
    zero: bool,
}

impl Visitor<'_> for SecondsVisitor {
    type Value = Option<Seconds>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.zero {
            f.write_str("0 or a positive whole number of seconds")
        } else {
            f.write_str("a positive whole number of seconds")
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match u32::try_from(v).map(NonZeroU32::new) {
            Ok(Some(n)) => Ok(Some(Seconds(n))),
            Ok(None) if self.zero => Ok(None),
            _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_u64(SecondsVisitor { zero: false })?
            .ok_or_else(|| de::Error::custom("expected a positive whole number of seconds"))
    }
}

/// `0` (`None`: never, or off) or a positive whole number of seconds.
fn seconds_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Seconds>, D::Error> {
    d.deserialize_u64(SecondsVisitor { zero: true })
}

/// `0` for `None`, as [`seconds_or_zero`] reads it.
fn zero_or_seconds<S: Serializer>(v: &Option<Seconds>, s: S) -> Result<S::Ok, S::Error> {
    v.map_or(0, |v| v.0.get()).serialize(s)
}

/// A value in the words it is configured with.
fn as_text<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Space-separated, as [`some_scopes`] reads them.
fn spaced_scopes<S: Serializer>(v: &Option<ScopeSet>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(scopes) => s.collect_str(scopes),
        None => s.serialize_none(),
    }
}

/// A list of names, as [`scope_list`] reads it.
fn scope_names<S: Serializer>(v: &ScopeSet, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter())
}

/// A database URL without its password (`postgres://app:(masked)@db/hg`).
fn url_masked<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    match url::Url::parse(v) {
        Ok(mut url) if url.password().is_some() => {
            // Only a URL that cannot have credentials refuses one.
            let _ = url.set_password(Some(MASKED));
            s.serialize_str(url.as_str())
        }
        _ => s.serialize_str(v),
    }
}

/// What a secret setting shows wherever settings are written out (`healthgate
/// config check`): that it is set, never what it is.
pub const MASKED: &str = "(masked)";

/// Serializes each type in the form its `FromStr` reads.
macro_rules! serialize_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}

serialize_as_text!(
    FhirBase,
    MailHost,
    MailAddress,
    Issuer,
    LogLevel,
    HexColor,
    PageLink,
    ProfilePath,
    Word
);

/// Secrets serialize as [`MASKED`].
macro_rules! serialize_masked {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(MASKED)
            }
        }
    )*};
}

serialize_masked!(SecretKey, SmtpPassword, MetricsToken);

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Serialize for RoleScopes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Every => s.collect_seq(["*"]),
            Self::Listed(scopes) => s.collect_seq(scopes.iter()),
        }
    }
}

/// `"optional"` or `"required"`.
fn mfa_policy<'de, D: Deserializer<'de>>(d: D) -> Result<MfaPolicy, D::Error> {
    String::deserialize(d)?.parse().map_err(de::Error::custom)
}

/// An address and port, said so when it is not one.
fn socket_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "{text:?} is not an address and port such as 127.0.0.1:8080 or [::]:8080"
        ))
    })
}

/// An address and port, as [`socket_address`] reads it.
fn some_socket_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            de::Error::custom(format!(
                "{text:?} is not an address and port such as 127.0.0.1:9090 or [::1]:9090"
            ))
        }),
    }
}

/// A space-separated list of at least one scope.
fn some_scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ScopeSet>, D::Error> {
    let text = String::deserialize(d)?;
    let scopes = ScopeSet::parse(&text).map_err(de::Error::custom)?;
    if scopes.is_empty() {
        return Err(de::Error::custom(
            "expected at least one scope, space-separated",
        ));
    }
    Ok(Some(scopes))
}

/// A list of scope names.
fn scope_list<'de, D: Deserializer<'de>>(d: D) -> Result<ScopeSet, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    ScopeSet::from_tokens(&names).map_err(de::Error::custom)
}

/// The issuer identifier (RFC 8414 §2): an http(s) URL without query or
/// fragment, kept as written but without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Issuer {
    text: String,
    url: url::Url,
}

impl Issuer {
    /// `http://{address}`, the issuer of a server that was given none. A
    /// server listening on every address (`0.0.0.0`, `[::]`: in a
    /// container, say) is no address a browser can open: it is named
    /// `localhost` instead, which a published port reaches.
    pub fn http(address: SocketAddr) -> Self {
        let mut url = url::Url::parse("http://localhost").expect("a literal URL");
        // Neither fails on an http URL, which has a host and may have a port.
        if !address.ip().is_unspecified() {
            let _ = url.set_ip_host(address.ip());
        }
        let _ = url.set_port(Some(address.port()));
        let text = url.as_str().trim_end_matches('/').to_owned();
        Self { text, url }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether browsers reach it over https (cookies can be `Secure`).
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// Its origin, as a browser sends it in `Origin`.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// Its host, without the port.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// Its host with the port if one is written (an HTTP `Host` header).
    pub fn authority(&self) -> String {
        match self.url.port() {
            Some(port) => format!("{}:{port}", self.host()),
            None => self.host().to_owned(),
        }
    }
}

impl FromStr for Issuer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim_end_matches('/');
        let refused = || {
            format!(
                "{s:?} is not an http(s) URL without query or fragment (RFC 8414 §2), such as https://auth.example.com"
            )
        };
        let url = url::Url::parse(text).map_err(|_| refused())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(refused());
        }
        Ok(Self {
            text: text.to_owned(),
            url,
        })
    }
}

impl TryFrom<String> for Issuer {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::ops::Deref for Issuer {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The instance secret, 32 bytes, written as 64 hexadecimal digits. Kept
/// out of `Debug` output (and so out of logs), and never echoed in an error.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for SecretKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let refused = || {
            "must be 64 hexadecimal digits (32 bytes, such as `openssl rand -hex 32` prints)"
                .to_owned()
        };
        // `from_str_radix` alone would take a sign ("+f").
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused());
        }
        let mut key = [0u8; 32];
        for (byte, i) in key.iter_mut().zip((0..64).step_by(2)) {
            *byte = u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| refused())?;
        }
        Ok(Self(key))
    }
}

impl TryFrom<String> for SecretKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The bearer token a Prometheus scraper presents for `/metrics` on the
/// main listener: at least 32 visible ASCII characters. Kept out of `Debug`
/// and masked wherever settings are written out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MetricsToken {
    /// Its SHA-256: the token itself is never needed again.
    digest: String,
}

impl MetricsToken {
    /// Whether `presented` is the token, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        healthgate_core::secret::matches_digest(presented, &self.digest)
    }
}

impl TryFrom<String> for MetricsToken {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() >= 32 && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self {
                digest: healthgate_core::secret::digest(&s),
            })
        } else {
            Err("must be at least 32 visible ASCII characters (such as `openssl rand -hex 32` prints)".to_owned())
        }
    }
}

impl fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How hard SQLite works to keep a commit (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseSynchronous {
    Normal,
    Full,
}

impl DatabaseSynchronous {
    pub fn store(self) -> healthgate_store::Synchronous {
        match self {
            Self::Normal => healthgate_store::Synchronous::Normal,
            Self::Full => healthgate_store::Synchronous::Full,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// What is logged: tracing filter directives (`info`,
/// `healthgate=debug,info`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct LogLevel(Vec<Directive>);

impl LogLevel {
    /// The filter these directives make (errors only, if there are none).
    pub fn filter(&self) -> EnvFilter {
        if self.0.is_empty() {
            return EnvFilter::default().add_directive(LevelFilter::ERROR.into());
        }
        self.0
            .iter()
            .cloned()
            .fold(EnvFilter::default(), EnvFilter::add_directive)
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .filter(|d| !d.is_empty())
            .map(|d| {
                d.parse().map_err(|e| {
                    format!(
                        "{d:?} is not a level (error, warn, info, debug, trace, off) or a filter such as healthgate=debug: {e}"
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for LogLevel {
    /// The directives, comma-separated, as they are read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A colour as `#rrggbb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HexColor([u8; 3]);

impl FromStr for HexColor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let refused = || format!("{s:?} is not a colour written #rrggbb, such as #1b533f");
        let digits = s.strip_prefix('#').ok_or_else(refused)?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused());
        }
        let mut rgb = [0u8; 3];
        for (i, c) in rgb.iter_mut().enumerate() {
            *c = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| refused())?;
        }
        Ok(Self(rgb))
    }
}

impl TryFrom<String> for HexColor {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for HexColor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [r, g, b] = self.0;
        write!(f, "#{r:02x}{g:02x}{b:02x}")
    }
}

/// A link a page shows (`[branding]`): an https URL, or a path on this
/// server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PageLink {
    text: String,
    /// The origin of an https URL; `None` for a path on this server.
    origin: Option<String>,
}

impl PageLink {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The origin an https link's resources come from; `None` for a path
    /// on this server.
    pub fn https_origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

impl FromStr for PageLink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with('/') && !s.starts_with("//") {
            return Ok(Self {
                text: s.to_owned(),
                origin: None,
            });
        }
        match url::Url::parse(s) {
            Ok(url) if url.scheme() == "https" => Ok(Self {
                text: s.to_owned(),
                origin: Some(url.origin().ascii_serialization()),
            }),
            _ => Err(format!(
                "{s:?} is neither an https URL nor a path on this server (such as /static/logo.svg)"
            )),
        }
    }
}

impl TryFrom<String> for PageLink {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for PageLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A path a profile adds beside healthgate's own: absolute and plain (no
/// parameters, wildcards, `//`, dot segments, `%` or non-ASCII), so the
/// router takes it literally.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProfilePath(String);

impl ProfilePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProfilePath {
    type Err = String;
    fn from_str(path: &str) -> Result<Self, String> {
        let plain = path.starts_with('/')
            && path.len() > 1
            && path
                .chars()
                .all(|c| c.is_ascii_graphic() && !"{}*?#%".contains(c))
            && !path.contains("//")
            && !path.split('/').any(|s| s == "." || s == "..");
        if plain {
            Ok(Self(path.to_owned()))
        } else {
            Err(format!(
                "{path:?} is not a plain absolute path: it starts with / and has no //, . or .. segments, spaces, non-ASCII or any of {{}}*?#%"
            ))
        }
    }
}

impl TryFrom<String> for ProfilePath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for ProfilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One word of ASCII letters, digits and `_` (a response wrapper key such
/// as `oauth`, a resource-owner type such as `Staff`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Word(String);

impl Word {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Word {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not one word of ASCII letters, digits and _"
            ))
        }
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Word {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// How token responses spell their `token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TokenType {
    /// `Bearer`, as RFC 6750 writes it.
    #[serde(rename = "Bearer")]
    Bearer,
    /// `bearer`, as HealthKey and HealthTap show it (RFC 6749 §5.1: the
    /// value is case-insensitive).
    #[serde(rename = "bearer")]
    LowercaseBearer,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::LowercaseBearer => "bearer",
        }
    }
}

/// The top-level keys, for filtering `HEALTHGATE_*` variables that are not
/// settings (such as `HEALTHGATE_TEST_POSTGRES_URL`).
pub const KEYS: &[&str] = &[
    "bind",
    "issuer",
    "database_url",
    "database_max_connections",
    "database_synchronous",
    "authorization_code_ttl",
    "access_token_ttl",
    "refresh_token_ttl",
    "refresh_rotation",
    "session_ttl",
    "cleanup_interval",
    "retired_token_retention",
    "trust_forwarded_for",
    "trusted_proxies",
    "connect_code_ttl",
    "manual_connect_code_ttl",
    "allow_http_webhooks",
    "developer_signup",
    "webhook_poll_interval",
    "secret_key",
    "id_token_ttl",
    "key_rotation_overlap",
    "client_secret_grace",
    "platform_name",
    "log_format",
    "log_level",
    "metrics_bind",
    "metrics_token",
    "scopes",
    "roles",
    "profile",
    "branding",
    "throttle",
    "mfa",
    "operators_require_mfa",
    "passkey_sign_in",
    "smtp",
    "smart",
    "dpop",
    "par",
    "registration",
    "audit",
];

/// Settings that each parse but do not fit together. `key` is the dotted
/// path of the one to change (`roles.staff.scopes`), so the binary can say
/// where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct InvalidSetting {
    pub key: String,
    pub reason: String,
}

impl InvalidSetting {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Settings {
    /// The issuer: the configured one, or `http://{bind}`.
    pub fn issuer(&self) -> Issuer {
        self.issuer
            .clone()
            .unwrap_or_else(|| Issuer::http(self.bind))
    }

    /// Checks what no single field's type can (see [`Settings::problems`])
    /// and derives the token policy; refuses the settings with their first
    /// problem.
    pub fn validate(&self) -> Result<TokenPolicy, InvalidSetting> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(self.token_policy()),
        }
    }

    /// The lifetimes and rotation of what the grants issue.
    pub fn token_policy(&self) -> TokenPolicy {
        TokenPolicy {
            code_ttl: self.authorization_code_ttl.secs(),
            access_ttl: self.access_token_ttl.secs(),
            refresh_ttl: self.refresh_token_ttl.map(Seconds::secs),
            rotation: self.refresh_rotation,
        }
    }

    /// Every way these settings do not fit together: the scope vocabulary
    /// and what the roles and the profile name in it, the mail server, the
    /// database URL's kind. Whether a profile's paths clash with
    /// healthgate's own routes is for `crate::problems`, which knows the
    /// routes.
    pub fn problems(&self) -> Vec<InvalidSetting> {
        let mut problems = Vec::new();
        let mut refuse =
            |key: &str, reason: String| problems.push(InvalidSetting::new(key, reason));
        if healthgate_store::Backend::of(&self.database_url).is_none() {
            // Only the scheme: the rest may hold a password.
            let scheme = self.database_url.split(':').next().unwrap_or_default();
            refuse(
                "database_url",
                format!("expected sqlite://PATH or postgres://…, found a {scheme:?} URL"),
            );
        }
        if self.scopes.is_empty() {
            refuse(
                "scopes",
                "the scope vocabulary must not be empty".to_owned(),
            );
        }
        for name in self.scopes.keys() {
            match ScopeSet::parse(name) {
                Err(e) => refuse("scopes", e.to_string()),
                Ok(parsed) if parsed.len() != 1 => {
                    refuse("scopes", format!("{name:?} is not a single scope token"));
                }
                Ok(_) => {}
            }
        }
        if !self.roles.contains_key(healthgate_core::org::ADMIN) {
            refuse("roles", "the admin role must be defined".to_owned());
        }
        for (name, role) in &self.roles {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                refuse(
                    "roles",
                    format!("role name {name:?} must be lowercase letters or _"),
                );
            }
            if let RoleScopes::Listed(scopes) = &role.scopes {
                for unknown in scopes.iter().filter(|s| !self.knows_scope(s)) {
                    refuse(
                        &format!("roles.{name}.scopes"),
                        format!(
                            "role {name} grants {unknown:?}, which is not in the scope vocabulary"
                        ),
                    );
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (key, path) in self.profile.paths() {
            if !seen.insert(path.as_str()) {
                refuse(key, format!("{:?} is listed twice", path.as_str()));
            }
        }
        if let Some(scopes) = &self.profile.provisioning_scope {
            for unknown in scopes.iter().filter(|s| !self.scopes.contains_key(*s)) {
                refuse(
                    "profile.provisioning_scope",
                    format!("{unknown:?} is not in the scope vocabulary"),
                );
            }
        }
        if let Some(smtp) = &self.smtp {
            if smtp.tls == SmtpTls::None && !smtp.host.is_loopback() {
                refuse(
                    "smtp.tls",
                    format!(
                        "tls = \"none\" sends mail (and its reset links) in plaintext, which is allowed only to a loopback host (localhost, 127.0.0.1, ::1), and smtp.host is {:?}: use \"starttls\" or \"implicit\"",
                        smtp.host.as_str()
                    ),
                );
            }
            if smtp.username.is_some() != smtp.password.is_some() {
                refuse(
                    "smtp.password",
                    "set smtp.username and smtp.password together, or neither".to_owned(),
                );
            }
        }
        if self.audit.archive_after_days.is_some() != self.audit.archive_dir.is_some() {
            refuse(
                "audit.archive_dir",
                "set audit.archive_after_days and audit.archive_dir together, or neither"
                    .to_owned(),
            );
        }
        if self.metrics_bind.is_some_and(|m| m == self.bind) {
            refuse(
                "metrics_bind",
                "metrics need an address of their own, not the main listener's (bind)".to_owned(),
            );
        }
        if !healthgate_core::par::LIFETIME_RANGE.contains(&self.par.lifetime.secs()) {
            refuse(
                "par.lifetime",
                "a request_uri lives 60 to 600 seconds".to_owned(),
            );
        }
        problems
    }

    /// What a person in `role` may grant; an unknown role grants nothing.
    /// Whether `scope` is one apps may be registered with: in the
    /// vocabulary, or, with `[smart]` on, a well-formed SMART scope.
    pub fn knows_scope(&self, scope: &str) -> bool {
        self.scopes.contains_key(scope)
            || (self.smart.enabled() && matches!(healthgate_core::smart::parse(scope), Ok(Some(_))))
    }

    pub fn role_policy(&self, role: &str) -> healthgate_core::owner::RolePolicy {
        match self.roles.get(role) {
            Some(r) => {
                let granted: Vec<&str> = match &r.scopes {
                    RoleScopes::Every if self.smart.enabled() => self
                        .scopes
                        .keys()
                        .map(String::as_str)
                        .chain(healthgate_core::smart::EVERY.iter().copied())
                        .collect(),
                    RoleScopes::Every => self.scopes.keys().map(String::as_str).collect(),
                    RoleScopes::Listed(scopes) => scopes.iter().collect(),
                };
                let kept = granted.into_iter().filter(|s| !r.except.contains(s));
                healthgate_core::owner::RolePolicy {
                    scopes: ScopeSet::from_tokens(kept).unwrap_or_default(),
                    owner_type: r.resource_owner_type.as_str().to_owned(),
                }
            }
            None => healthgate_core::owner::RolePolicy {
                scopes: Default::default(),
                owner_type: "Staff".to_owned(),
            },
        }
    }

    /// The scopes of tokens for accounts a partner provisions, when the app
    /// has no provisioning scopes of its own (`[profile]
    /// provisioning_scope`, checked against the vocabulary by
    /// [`Settings::validate`]).
    pub fn default_provisioning_scopes(&self) -> Option<ScopeSet> {
        self.profile.provisioning_scope.clone()
    }

    /// The FHIR servers SMART requests may name (`[smart]`).
    pub fn fhir_bases(&self) -> Vec<&str> {
        self.smart
            .fhir_base_urls
            .iter()
            .map(|b| b.as_str())
            .collect()
    }

    /// The deployment's rules for authorization requests, with
    /// `fhir_bases` from [`Settings::fhir_bases`].
    pub fn authorize_rules<'a>(
        &self,
        fhir_bases: &'a [&'a str],
    ) -> healthgate_core::authorize::Rules<'a> {
        healthgate_core::authorize::Rules {
            scopes: self.scope_source(),
            fhir_bases,
        }
    }

    /// Where the scopes an authorization request asks for come from.
    pub fn scope_source(&self) -> healthgate_core::authorize::ScopeSource {
        if self.profile.scopes_from_registration {
            healthgate_core::authorize::ScopeSource::Registration
        } else {
            healthgate_core::authorize::ScopeSource::Request
        }
    }

    /// Whether cookies can be marked `Secure` (and take the `__Host-`
    /// prefix): true unless the issuer is plain http.
    pub fn secure_cookies(&self) -> bool {
        self.issuer.as_ref().is_some_and(Issuer::is_https)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `KEYS` is every field of `Settings` (a variable for one left out
    /// would be dropped without a word), read off this file's source.
    #[test]
    fn keys_name_every_setting() {
        let source = include_str!("config.rs");
        let start = source.find("pub struct Settings {").unwrap();
        let body = &source[start..start + source[start..].find("\n}\n").unwrap()];
        let fields: Vec<&str> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split_once(':').map(|(name, _)| name))
            .collect();
        assert_eq!(fields.len(), KEYS.len(), "{fields:?}");
        for field in fields {
            assert!(KEYS.contains(&field), "{field} is not in KEYS");
        }
    }

    /// Settings from JSON, the shape figment hands serde too; or serde's
    /// refusal.
    fn settings(value: serde_json::Value) -> Result<Settings, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    fn setting(key: &str, value: serde_json::Value) -> Result<Settings, String> {
        settings(json!({ key: value }))
    }

    fn paths(list: &[&str]) -> Vec<ProfilePath> {
        list.iter().map(|p| p.parse().expect(p)).collect()
    }

    /// Settings written out (`healthgate config check`) read back as the
    /// same settings, every type in the form it parses, except secrets,
    /// which are masked wherever they are written.
    #[test]
    fn settings_written_out_read_back_the_same_and_secrets_do_not() {
        let mut s = settings(json!({
            "bind": "[::]:9000",
            "issuer": "https://auth.example.com",
            "refresh_token_ttl": 3600,
            "cleanup_interval": 0,
            "refresh_rotation": "on_first_use",
            "trusted_proxies": ["10.0.0.0/8", "::1"],
            "log_level": "healthgate=debug,info",
            "log_format": "json",
            "mfa": "required",
            "scopes": {"openid": "Sign in", "patient/*.read": "Read", "pay": "Pay"},
            "roles": {
                "admin": {"scopes": ["*"], "resource_owner_type": "Staff"},
                "staff": {"scopes": ["openid", "pay"], "except": ["pay"], "resource_owner_type": "Staff", "require_mfa": true},
            },
            "branding": {"accent_color": "#00aaff", "logo_url": "/static/logo.svg", "support_url": "https://help.example.com/x"},
            "profile": {"token_paths": ["/o/token/"], "token_type": "bearer", "token_response_wrapper": "oauth", "provisioning_scope": "openid pay"},
            "smart": {"fhir_base_urls": ["https://fhir.example.com/r4"]},
            "smtp": {"host": "mail.example.com", "from": "no-reply@example.com", "tls": "implicit", "timeout": 5},
            "par": {"required": true, "lifetime": 120},
            "throttle": {"api_per_minute": 0},
            "metrics_bind": "127.0.0.1:9090",
        }))
        .unwrap();
        let written = serde_json::to_value(&s).unwrap();
        assert_eq!(settings(written.clone()).unwrap(), s, "{written:#}");
        assert_eq!(written["trusted_proxies"], json!(["10.0.0.0/8", "::1/128"]));
        assert_eq!(written["profile"]["provisioning_scope"], "openid pay");
        assert_eq!(written["roles"]["admin"]["scopes"], json!(["*"]));
        assert_eq!(written["cleanup_interval"], 0);

        s.secret_key = Some("ab".repeat(32).parse().unwrap());
        s.smtp.as_mut().unwrap().username = Some("mailer".into());
        s.smtp.as_mut().unwrap().password = Some(SmtpPassword("hunter2-mail".into()));
        s.database_url = "postgres://app:hunter2-db@db.example.com:5432/hg".into();
        s.metrics_token = Some(MetricsToken::try_from("hunter2-metrics-".repeat(2)).unwrap());
        let written = serde_json::to_value(&s).unwrap();
        let text = written.to_string();
        for secret in ["abab", "hunter2"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(written["secret_key"], MASKED);
        assert_eq!(written["smtp"]["password"], MASKED);
        assert_eq!(written["metrics_token"], MASKED);
        let token = s.metrics_token.as_ref().unwrap();
        assert!(token.matches(&"hunter2-metrics-".repeat(2)));
        assert!(!token.matches("hunter2-metrics-"));
        assert!(MetricsToken::try_from("short".to_owned()).is_err());
        assert_eq!(
            written["database_url"],
            "postgres://app:(masked)@db.example.com:5432/hg"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::default();
        let policy = s.validate().unwrap();
        assert_eq!(policy, TokenPolicy::default());
        assert_eq!(s.issuer().as_str(), "http://127.0.0.1:8080");
        assert!(!s.secure_cookies());
        assert_eq!(settings(json!({})).unwrap(), s);
    }

    #[test]
    fn lifetimes_are_positive_whole_seconds() {
        for (value, secs) in [
            (json!(1), 1),
            (json!(600), 600),
            (json!(u32::MAX), u32::MAX),
        ] {
            let s = setting("access_token_ttl", value).unwrap();
            assert_eq!(s.access_token_ttl, Seconds::of(secs));
            assert_eq!(s.access_token_ttl.secs(), i64::from(secs));
        }
        for value in [
            json!(0),
            json!(-1),
            json!("600"),
            json!("2h"),
            json!(1.5),
            json!(u64::from(u32::MAX) + 1),
        ] {
            let e = setting("access_token_ttl", value.clone()).unwrap_err();
            assert!(
                e.contains("a positive whole number of seconds"),
                "{value}: {e}"
            );
        }
        assert_eq!(Seconds::of(90).duration(), Duration::from_secs(90));
    }

    #[test]
    fn zero_means_never_or_off_where_it_may() {
        let s = settings(json!({
            "refresh_token_ttl": 0,
            "cleanup_interval": 0,
            "webhook_poll_interval": 0,
            "key_rotation_overlap": 0,
        }))
        .unwrap();
        assert_eq!(s.refresh_token_ttl, None);
        assert_eq!(s.cleanup_interval, None);
        assert_eq!(s.webhook_poll_interval, None);
        assert_eq!(s.key_rotation_overlap, None);
        assert_eq!(s.validate().unwrap().refresh_ttl, None);
        let s = setting("refresh_token_ttl", json!(3600)).unwrap();
        assert_eq!(s.refresh_token_ttl, Some(Seconds::of(3600)));
        assert_eq!(s.validate().unwrap().refresh_ttl, Some(3600));
        for key in [
            "refresh_token_ttl",
            "cleanup_interval",
            "key_rotation_overlap",
        ] {
            let e = setting(key, json!(-1)).unwrap_err();
            assert!(
                e.contains("0 or a positive whole number of seconds"),
                "{key}: {e}"
            );
        }
    }

    #[test]
    fn refresh_rotation_is_one_of_two() {
        for (value, rotation) in [
            ("immediate", RefreshRotation::Immediate),
            ("on_first_use", RefreshRotation::OnFirstUse),
        ] {
            let s = setting("refresh_rotation", json!(value)).unwrap();
            assert_eq!(s.validate().unwrap().rotation, rotation);
        }
        for value in ["sometimes", "Immediate", "on-first-use", ""] {
            let e = setting("refresh_rotation", json!(value)).unwrap_err();
            assert!(e.contains("immediate") && e.contains("on_first_use"), "{e}");
        }
    }

    #[test]
    fn database_synchronous_is_normal_or_full() {
        assert_eq!(
            Settings::default().database_synchronous,
            DatabaseSynchronous::Normal
        );
        let s = setting("database_synchronous", json!("full")).unwrap();
        assert_eq!(
            s.database_synchronous.store(),
            healthgate_store::Synchronous::Full
        );
        let e = setting("database_synchronous", json!("off")).unwrap_err();
        assert!(e.contains("normal") && e.contains("full"), "{e}");
    }

    #[test]
    fn log_format_and_level_are_parsed() {
        assert_eq!(
            setting("log_format", json!("json")).unwrap().log_format,
            LogFormat::Json
        );
        assert_eq!(
            setting("log_format", json!("text")).unwrap().log_format,
            LogFormat::Text
        );
        let e = setting("log_format", json!("xml")).unwrap_err();
        assert!(e.contains("text") && e.contains("json"), "{e}");

        for (value, filter) in [
            ("info", "info"),
            ("warn", "warn"),
            ("healthgate=debug,info", "healthgate=debug,info"),
            ("off", "off"),
            ("", "error"),
        ] {
            let level: LogLevel = value.parse().unwrap();
            assert_eq!(level.filter().to_string(), filter, "{value}");
        }
        assert_eq!(Settings::default().log_level, "info".parse().unwrap());
        // A bare word is a target ("loud" logs everything of target loud).
        for value in ["healthgate=loud", "info,[x", "healthgate=info=debug"] {
            let e = setting("log_level", json!(value)).unwrap_err();
            assert!(e.contains("is not a level"), "{value}: {e}");
        }
    }

    #[test]
    fn secret_key_is_decoded_once_from_64_hex_digits() {
        let hex = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
        let s = setting("secret_key", json!(hex)).unwrap();
        let key = s.secret_key.unwrap();
        assert_eq!(key.bytes()[..3], [0x00, 0x11, 0x22]);
        assert_eq!(key.bytes()[16..18], [0xff, 0xee]);
        assert_eq!(format!("{key:?}"), "<redacted>");
        let short = &hex[..62];
        let wide = format!("{hex}00");
        let nonhex = format!("{}zz", &hex[..62]);
        let multibyte = format!("é{}", &hex[..62]);
        for bad in [
            short,
            &wide,
            &nonhex,
            &multibyte,
            "+0112233445566778899aabbccddeeffffeeddccbbaa99887766554433221100",
        ] {
            let e = setting("secret_key", json!(bad)).unwrap_err();
            assert!(e.contains("64 hexadecimal digits"), "{e}");
            assert!(!e.contains(&bad[2..20]), "the value is not echoed: {e}");
        }
    }

    #[test]
    fn issuer_is_an_http_url_without_query_or_fragment() {
        let s = setting("issuer", json!("https://auth.example.com/")).unwrap();
        let issuer = s.issuer();
        assert_eq!(issuer.as_str(), "https://auth.example.com");
        assert!(issuer.is_https() && s.secure_cookies());
        assert_eq!(issuer.origin(), "https://auth.example.com");
        assert_eq!(issuer.host(), "auth.example.com");
        assert_eq!(issuer.authority(), "auth.example.com");
        assert_eq!(
            serde_json::to_value(&issuer).unwrap(),
            json!("https://auth.example.com")
        );

        let issuer: Issuer = "http://127.0.0.1:8080/auth".parse().unwrap();
        assert_eq!(&*issuer, "http://127.0.0.1:8080/auth");
        assert_eq!(issuer.origin(), "http://127.0.0.1:8080");
        assert_eq!(issuer.authority(), "127.0.0.1:8080");
        assert!(!issuer.is_https());

        let from_bind = Issuer::http(SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(from_bind, "http://127.0.0.1:9000".parse().unwrap());
        let v6 = Issuer::http("[::1]:9000".parse().unwrap());
        assert_eq!(v6.as_str(), "http://[::1]:9000");
        assert_eq!(v6.origin(), "http://[::1]:9000");
        for every in ["0.0.0.0:8080", "[::]:8080"] {
            let named = Issuer::http(every.parse().unwrap());
            assert_eq!(named, "http://localhost:8080".parse().unwrap(), "{every}");
            assert_eq!(named.as_str(), "http://localhost:8080");
        }

        for bad in [
            "ftp://x",
            "https://x/?q=1",
            "https://x/#top",
            "auth.example.com",
            "https://",
            "",
        ] {
            let e = setting("issuer", json!(bad)).unwrap_err();
            assert!(e.contains("http(s) URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn accent_color_is_rrggbb() {
        for (value, shown) in [("#1b533f", "#1b533f"), ("#AA3300", "#aa3300")] {
            let color: HexColor = value.parse().unwrap();
            assert_eq!(color.to_string(), shown);
        }
        for bad in [
            "red; }", "#12345", "1b533f", "#12345g", "#1234567", "#é2345",
        ] {
            let e = settings(json!({"branding": {"accent_color": bad}})).unwrap_err();
            assert!(e.contains("#rrggbb"), "{bad}: {e}");
        }
    }

    #[test]
    fn page_links_are_https_urls_or_paths_here() {
        let local: PageLink = "/static/logo.svg".parse().unwrap();
        assert_eq!(local.https_origin(), None);
        assert_eq!(local.to_string(), "/static/logo.svg");
        let remote: PageLink = "https://cdn.example.org:8443/logo.svg".parse().unwrap();
        assert_eq!(remote.https_origin(), Some("https://cdn.example.org:8443"));
        assert_eq!(remote.as_str(), "https://cdn.example.org:8443/logo.svg");
        for bad in [
            "javascript:alert(1)",
            "http://help.example",
            "//evil.example/x",
            "logo.svg",
        ] {
            for key in ["logo_url", "support_url"] {
                let e = settings(json!({"branding": {key: bad}})).unwrap_err();
                assert!(e.contains("https URL"), "{bad}: {e}");
            }
        }
    }

    #[test]
    fn profile_paths_are_plain_absolute_paths() {
        for good in ["/o/token/", "/api/v2.1/users.json", "/a_b-c~d"] {
            assert_eq!(good.parse::<ProfilePath>().unwrap().as_str(), good);
        }
        for bad in [
            "o/token/",
            "/",
            "/o/{x}",
            "/o/*",
            "/o//token",
            "/o/../oauth/token",
            "/o/./token",
            "/o/t%6Fken",
            "/o/tök",
            "/o/to\tken",
            "/o/to ken",
            "/o/token?x",
        ] {
            let e = settings(json!({"profile": {"token_paths": [bad]}})).unwrap_err();
            assert!(e.contains("not a plain absolute path"), "{bad}: {e}");
        }
    }

    #[test]
    fn token_type_and_wrapper_are_parsed() {
        for (value, token_type) in [
            ("Bearer", TokenType::Bearer),
            ("bearer", TokenType::LowercaseBearer),
        ] {
            let s = settings(json!({"profile": {"token_type": value}})).unwrap();
            assert_eq!(s.profile.token_type, token_type);
            assert_eq!(token_type.as_str(), value);
        }
        for bad in ["mac", "BEARER", ""] {
            let e = settings(json!({"profile": {"token_type": bad}})).unwrap_err();
            assert!(e.contains("Bearer") && e.contains("bearer"), "{e}");
        }
        let s = settings(json!({"profile": {"token_response_wrapper": "oauth"}})).unwrap();
        assert_eq!(s.profile.token_response_wrapper.unwrap().as_str(), "oauth");
        for bad in ["", "o auth", "a-b", "x\""] {
            let e = settings(json!({"profile": {"token_response_wrapper": bad}})).unwrap_err();
            assert!(e.contains("one word"), "{bad}: {e}");
        }
    }

    #[test]
    fn scopes_of_roles_and_provisioning_are_parsed() {
        let role = |scopes: serde_json::Value| {
            settings(json!({"roles": {"admin": {
                "scopes": scopes, "except": ["pay"], "resource_owner_type": "Staff"
            }}}))
        };
        let s = role(json!(["*"])).unwrap();
        assert_eq!(s.roles["admin"].scopes, RoleScopes::Every);
        assert!(s.roles["admin"].except.contains("pay"));
        assert_eq!(
            role(json!(["profile", "*"])).unwrap().roles["admin"].scopes,
            RoleScopes::Every
        );
        assert_eq!(
            role(json!(["profile", "email"])).unwrap().roles["admin"].scopes,
            RoleScopes::Listed(ScopeSet::parse("email profile").unwrap())
        );
        for bad in [json!(["two words"]), json!([""]), json!(["a\"b"])] {
            let e = role(bad.clone()).unwrap_err();
            assert!(e.contains("every scope"), "{bad}: {e}");
        }
        let e = settings(json!({"roles": {"admin": {
            "scopes": ["*"], "resource_owner_type": "Front desk"
        }}}))
        .unwrap_err();
        assert!(e.contains("one word"), "{e}");

        let s = settings(json!({"profile": {"provisioning_scope": " profile  email "}})).unwrap();
        assert_eq!(
            s.default_provisioning_scopes().unwrap().to_string(),
            "email profile"
        );
        for bad in ["  ", "", "profile_read a\"b"] {
            assert!(
                settings(json!({"profile": {"provisioning_scope": bad}})).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_refused() {
        assert!(setting("bindd", json!("127.0.0.1:1")).is_err());
        assert!(settings(json!({"profile": {"token_path": []}})).is_err());
        let e = setting("bind", json!("not an address")).unwrap_err();
        assert!(e.contains("address and port such as 127.0.0.1:8080"), "{e}");
        let e = setting("database_max_connections", json!(0)).unwrap_err();
        assert!(e.contains("nonzero"), "{e}");
    }

    #[test]
    fn settings_that_do_not_fit_together_are_refused_naming_the_key() {
        type Change = Box<dyn Fn(&mut Settings)>;
        let cases: Vec<(&str, Change)> = vec![
            ("scopes", Box::new(|s| s.scopes.clear())),
            (
                "scopes",
                Box::new(|s| {
                    s.scopes.insert("two words".into(), "x".into());
                }),
            ),
            (
                "scopes",
                Box::new(|s| {
                    s.scopes.insert("a\"b".into(), "x".into());
                }),
            ),
            (
                "roles",
                Box::new(|s| {
                    s.roles.remove("admin");
                }),
            ),
            (
                "roles",
                Box::new(|s| {
                    let admin = s.roles["admin"].clone();
                    s.roles.insert("Front".into(), admin);
                }),
            ),
            (
                "roles.staff.scopes",
                Box::new(|s| {
                    s.roles.get_mut("staff").unwrap().scopes =
                        RoleScopes::Listed(ScopeSet::parse("profile unknown_scope").unwrap());
                }),
            ),
            (
                "profile.revoke_paths",
                Box::new(|s| {
                    s.profile.token_paths = paths(&["/o/token/"]);
                    s.profile.revoke_paths = paths(&["/o/token/"]);
                }),
            ),
            (
                "profile.provisioning_scope",
                Box::new(|s| {
                    s.profile.provisioning_scope = Some(ScopeSet::parse("member_public").unwrap());
                }),
            ),
        ];
        for (key, change) in cases {
            let mut s = Settings::default();
            change(&mut s);
            let e = s.validate().unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn smtp_is_parsed_and_plaintext_goes_to_loopback_only() {
        let smtp = |extra: serde_json::Value| {
            let mut table = json!({"host": "mail.example.com", "from": "no-reply@example.com"});
            table
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            settings(json!({ "smtp": table }))
        };
        let s = smtp(json!({})).unwrap();
        let m = s.smtp.as_ref().unwrap();
        assert_eq!((m.tls, m.port()), (SmtpTls::Starttls, 587));
        assert_eq!(m.timeout, Seconds::of(20));
        s.validate().unwrap();
        let m = smtp(json!({"tls": "implicit"})).unwrap().smtp.unwrap();
        assert_eq!(m.port(), 465);
        let s = smtp(json!({"username": "hg", "password": "hunter2", "port": 2525})).unwrap();
        s.validate().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.smtp.unwrap().port(), 2525);

        // Plaintext to another host: refused at start-up, naming the key.
        let e = smtp(json!({"tls": "none"}))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "smtp.tls");
        assert!(
            e.reason.contains("loopback") && e.reason.contains("mail.example.com"),
            "{e}"
        );
        for host in ["localhost", "127.0.0.1", "::1", "[::1]", "127.0.0.2"] {
            let s = smtp(json!({"tls": "none", "host": host})).unwrap();
            s.validate().expect(host);
        }
        for host in ["10.0.0.1", "localhost.example.com", "0.0.0.0"] {
            let s = smtp(json!({"tls": "none", "host": host})).unwrap();
            assert_eq!(s.validate().unwrap_err().key, "smtp.tls", "{host}");
        }
        let e = smtp(json!({"username": "hg"}))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "smtp.password");

        let e = smtp(json!({"tls": "ssl"})).unwrap_err();
        assert!(e.contains("starttls") && e.contains("implicit"), "{e}");
        let e = smtp(json!({"from": "not an address"})).unwrap_err();
        assert!(e.contains("not an email address"), "{e}");
        let e = smtp(json!({"host": "smtp://mail.example.com:25"})).unwrap_err();
        assert!(e.contains("not a host name"), "{e}");
        assert!(settings(json!({"smtp": {"host": "mail.example.com"}})).is_err());
        assert!(smtp(json!({"hots": "x"})).is_err());
    }

    /// Paths shaped like healthgate's own routes, in axum's syntax.
    const ROUTES: &[&str] = &[
        "/",
        "/oauth/token",
        "/api/oauth/tokens",
        "/api/v1/users/{guid}",
        "/admin",
        "/admin/organizations/{id}/members",
        "/developers/apps/{id}",
        "/apps/{id}/photo",
        "/playground",
        "/static/{*file}",
    ];

    #[test]
    fn profile_paths_may_not_overlap_healthgates_own() {
        let clashes = [
            ("/oauth/token", "/oauth/token"),
            ("/oauth/token/", "/oauth/token"),
            ("/oauth/token/x", "/oauth/token"),
            ("/oauth", "/oauth/token"),
            ("/api/oauth/tokens", "/api/oauth/tokens"),
            ("/api/v1/users/u-1", "/api/v1/users/{guid}"),
            ("/api/v1/users/x/tokens.json", "/api/v1/users/{guid}"),
            ("/api/v1", "/api/v1/users/{guid}"),
            ("/admin", "/admin"),
            ("/admin/", "/admin"),
            ("/admin/token", "/admin"),
            ("/developers", "/developers/apps/{id}"),
            ("/developers/apps/x/token", "/developers/apps/{id}"),
            ("/apps", "/apps/{id}/photo"),
            ("/apps/", "/apps/{id}/photo"),
            ("/apps/x", "/apps/{id}/photo"),
            ("/apps/x/photo", "/apps/{id}/photo"),
            ("/playground", "/playground"),
            ("/playground/token", "/playground"),
            ("/static/x/y.css", "/static/{*file}"),
        ];
        for (path, route) in clashes {
            let mut s = Settings::default();
            s.profile.revoke_paths = paths(&["/o/revoke/"]);
            s.profile.token_paths = paths(&[path]);
            s.validate().expect("a plain path");
            let e = s.profile.clashes(ROUTES).remove(0);
            assert_eq!(e.key, "profile.token_paths");
            assert!(e.reason.contains(&format!("{path:?}")), "{path}: {e}");
            assert!(e.reason.contains(&format!("path {route};")), "{path}: {e}");
        }
        // Beside them, not over or under them: the seeds' own paths.
        let mut s = Settings::default();
        s.profile.authorize_paths = paths(&["/o/authorize/"]);
        s.profile.token_paths = paths(&["/o/token/", "/api/oauth/token", "/oauth2/token"]);
        s.profile.revoke_paths = paths(&["/api/oauth/revoke", "/adminx"]);
        s.profile.user_paths = paths(&["/api/v2.1/users.json", "/app/x"]);
        s.validate().unwrap();
        assert_eq!(s.profile.clashes(ROUTES), []);
    }

    #[test]
    fn scopes_with_colons_are_a_vocabulary_and_a_provisioning_default() {
        let s = Settings {
            scopes: BTreeMap::from([
                ("catalog:read".to_owned(), "See the catalog".to_owned()),
                (
                    "patients:treatment_plan_history".to_owned(),
                    "See treatment plans".to_owned(),
                ),
            ]),
            profile: ProfileSettings {
                provisioning_scope: Some(ScopeSet::parse("catalog:read").unwrap()),
                ..ProfileSettings::default()
            },
            ..Settings::default()
        };
        s.validate().unwrap();
        assert_eq!(
            s.default_provisioning_scopes().unwrap().to_string(),
            "catalog:read"
        );
        assert_eq!(Settings::default().default_provisioning_scopes(), None);
        assert_eq!(
            s.role_policy("staff").scopes.to_string(),
            "catalog:read patients:treatment_plan_history"
        );
        assert_eq!(s.role_policy("staff").owner_type, "Staff");
    }

    #[test]
    fn a_role_grants_its_listed_scopes_less_its_exceptions() {
        let mut s = Settings::default();
        let staff = s.roles.get_mut("staff").unwrap();
        staff.scopes = RoleScopes::Listed(ScopeSet::parse("profile email pay").unwrap());
        s.validate().unwrap();
        assert_eq!(s.role_policy("staff").scopes.to_string(), "email profile");
        assert!(s.role_policy("admin").scopes.contains("pay"));
        assert!(s.role_policy("nobody").scopes.is_empty());
    }
}
