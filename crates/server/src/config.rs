//! The settings a healthgate deployment runs with. The binary loads them from
//! a TOML file, then `HEALTHGATE_*` environment variables, then flags; every
//! field has a default so an empty configuration is a working one.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use healthgate_core::forwarded::IpRange;
use healthgate_core::token::{RefreshRotation, TokenPolicy};
use serde::{Deserialize, Serialize};

/// Every setting, with its default. `examples/config/healthgate.toml` lists
/// them all with comments; keep the two in step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// The public base URL partners use (`iss` of every authorization
    /// response, RFC 9207). Defaults to `http://{bind}`.
    pub issuer: Option<String>,
    /// `sqlite://PATH` (default, created if missing) or `postgres://…`.
    pub database_url: String,
    /// PostgreSQL pool size, or SQLite reader connections.
    pub database_max_connections: u32,
    /// Authorization code lifetime, seconds (Fullscript: 10 minutes).
    pub authorization_code_ttl: i64,
    /// Access token lifetime, seconds (Fullscript: 2 hours).
    pub access_token_ttl: i64,
    /// Refresh token lifetime, seconds; 0 means refresh tokens never expire.
    pub refresh_token_ttl: i64,
    /// `immediate` or `on_first_use`.
    pub refresh_rotation: String,
    /// Browser session lifetime, seconds.
    pub session_ttl: i64,
    /// Seconds between expired-row cleanup passes on this node; 0 disables.
    pub cleanup_interval: u64,
    /// How long retired refresh tokens and revoked token families are kept,
    /// seconds, so that a late replay is still recognised as reuse.
    pub retired_token_retention: i64,
    /// Read the client address from `X-Forwarded-For` (behind a reverse
    /// proxy): the rightmost entry that is not one of `trusted_proxies`.
    pub trust_forwarded_for: bool,
    /// The proxies whose `X-Forwarded-For` entries are believed: addresses
    /// or CIDR ranges. A request from anywhere else is taken at its peer
    /// address, whatever its headers say.
    pub trusted_proxies: Vec<IpRange>,
    /// Lifetime of an InstantOn connect code, seconds.
    pub connect_code_ttl: i64,
    /// Lifetime of a connect code an admin copies by hand, seconds.
    pub manual_connect_code_ttl: i64,
    /// Allow `http://` webhook and photo URLs on loopback (development and
    /// demos only).
    pub allow_http_webhooks: bool,
    /// Anyone may create a developer account in the portal (`/developers`)
    /// and register apps; when false, only accounts the operator made can.
    pub developer_signup: bool,
    /// Seconds between looks for due webhook deliveries on this node; 0
    /// disables the delivery worker on this node.
    pub webhook_poll_interval: u64,
    /// Key that webhook signing secrets are derived from (64 hex digits).
    /// Without it, one is generated and kept in the database; set it on every
    /// node to keep it out of the database.
    pub secret_key: Option<SecretString>,
    /// OpenID Connect ID token lifetime, seconds.
    pub id_token_ttl: i64,
    /// After `healthgate keys rotate`, seconds before the new key signs (so
    /// relying parties have fetched it from the JWKS first).
    pub key_rotation_overlap: i64,
    /// The name shown on every page.
    pub platform_name: String,
    /// `text` or `json` log lines on standard error.
    pub log_format: String,
    /// A tracing filter, e.g. `info` or `healthgate=debug,info`.
    pub log_level: String,
    /// The scope vocabulary: each scope and the plain words the consent page
    /// shows for it. Setting this table replaces the default vocabulary.
    pub scopes: BTreeMap<String, String>,
    /// How every page looks: logo, accent colour, support link.
    pub branding: Branding,
    /// Seed-platform compatibility: extra route paths and request and
    /// response shapes (`examples/config/{hint,healthtap,healthkey,fullscript}.toml`).
    pub profile: ProfileSettings,
    /// The roles people hold in organizations: what each may grant, and the
    /// resource-owner type its grants carry. Setting this table replaces the
    /// default roles; `admin` must stay.
    pub roles: BTreeMap<String, RoleSettings>,
}

/// The deployment's look on every page (`[branding]`); the name is
/// `platform_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Branding {
    /// A logo shown beside the name: an https URL (whose origin alone the
    /// pages' CSP then lets images come from), or a path on this server.
    pub logo_url: Option<String>,
    /// The accent colour of the header and buttons, `#rrggbb`.
    pub accent_color: String,
    /// Where people find help, linked at the foot of every page.
    pub support_url: Option<String>,
}

impl Default for Branding {
    fn default() -> Self {
        Self {
            logo_url: None,
            accent_color: "#1b533f".into(),
            support_url: None,
        }
    }
}

/// How partners written for another platform reach healthgate unchanged
/// (`[profile]`). The standard paths always work; these add to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileSettings {
    /// Extra paths of the authorization endpoint (HealthKey: `/o/authorize/`).
    pub authorize_paths: Vec<String>,
    /// Extra paths of the token endpoint (HealthKey: `/o/token/`;
    /// Fullscript: `/api/oauth/token`).
    pub token_paths: Vec<String>,
    /// Extra paths of the revocation endpoint (Fullscript: `/api/oauth/revoke`).
    pub revoke_paths: Vec<String>,
    /// Extra paths of user provisioning (HealthTap: `/api/v2.1/users.json`).
    pub user_paths: Vec<String>,
    /// Accept token-request parameters in the query string (HealthKey's
    /// documented requests). Off by default: it puts secrets in URLs, so
    /// every such request is logged as a warning.
    pub token_params_in_query: bool,
    /// Wrap token responses in an object under this key (Fullscript: `oauth`).
    pub token_response_wrapper: Option<String>,
    /// The `token_type` of token responses (`Bearer`; HealthKey and
    /// HealthTap show `bearer`).
    pub token_type: String,
    /// An app's scopes are set at registration (Fullscript): a `scope` in
    /// the authorization request is ignored and the app's registered scopes
    /// are asked for.
    pub scopes_from_registration: bool,
    /// The scopes of tokens for partner-provisioned accounts when the app
    /// has none of its own (`--provisioning-scope`), space-separated
    /// (HealthTap: `member_public`); without it, the app's allowed scopes.
    pub provisioning_scope: Option<String>,
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
            token_type: "Bearer".into(),
            scopes_from_registration: false,
            provisioning_scope: None,
        }
    }
}

impl ProfileSettings {
    /// Every extra path, of every endpoint.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.authorize_paths
            .iter()
            .chain(&self.token_paths)
            .chain(&self.revoke_paths)
            .chain(&self.user_paths)
    }

    /// Refuses an extra path that clashes with one of `taken`, the paths
    /// healthgate's own routes serve (axum's syntax): the router could not
    /// hold both, or one would answer requests meant for the other.
    pub fn refuse_taken(&self, taken: &[&str]) -> Result<(), InvalidSetting> {
        for path in self.paths() {
            if let Some(route) = taken.iter().find(|route| overlaps(route, path)) {
                return Err(InvalidSetting {
                    key: "profile",
                    reason: format!(
                        "{path:?} clashes with healthgate's own path {route}; a profile may only add paths healthgate does not serve"
                    ),
                });
            }
        }
        Ok(())
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSettings {
    /// The scopes a person in this role may grant an app; `"*"` is every
    /// scope of the vocabulary.
    pub scopes: Vec<String>,
    /// Scopes taken out again (useful with `"*"`); names missing from the
    /// vocabulary are ignored here.
    #[serde(default)]
    pub except: Vec<String>,
    /// The `resource_owner.type` of tokens granted in this role.
    pub resource_owner_type: String,
}

fn default_roles() -> BTreeMap<String, RoleSettings> {
    let role = |except: &[&str], owner: &str| RoleSettings {
        scopes: vec!["*".to_owned()],
        except: except.iter().map(|s| (*s).to_owned()).collect(),
        resource_owner_type: owner.to_owned(),
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
            database_max_connections: 8,
            authorization_code_ttl: 600,
            access_token_ttl: 7200,
            refresh_token_ttl: 0,
            refresh_rotation: "immediate".into(),
            session_ttl: 12 * 3600,
            cleanup_interval: 300,
            retired_token_retention: 30 * 86_400,
            trust_forwarded_for: false,
            trusted_proxies: healthgate_core::forwarded::loopback_ranges(),
            connect_code_ttl: 600,
            manual_connect_code_ttl: 3600,
            allow_http_webhooks: false,
            developer_signup: true,
            webhook_poll_interval: 2,
            secret_key: None,
            id_token_ttl: 3600,
            key_rotation_overlap: 3600,
            platform_name: "healthgate".into(),
            log_format: "text".into(),
            log_level: "info".into(),
            scopes: healthgate_core::scope::DEFAULT_SCOPES
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            roles: default_roles(),
            profile: ProfileSettings::default(),
            branding: Branding::default(),
        }
    }
}

/// A configured secret: kept out of `Debug` output (and so out of logs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The top-level keys, for filtering `HEALTHGATE_*` variables that are not
/// settings (such as `HEALTHGATE_TEST_POSTGRES_URL`).
pub const KEYS: &[&str] = &[
    "bind",
    "issuer",
    "database_url",
    "database_max_connections",
    "authorization_code_ttl",
    "access_token_ttl",
    "refresh_token_ttl",
    "refresh_rotation",
    "session_ttl",
    "cleanup_interval",
    "retired_token_retention",
    "trust_forwarded_for",
    "connect_code_ttl",
    "manual_connect_code_ttl",
    "allow_http_webhooks",
    "developer_signup",
    "webhook_poll_interval",
    "secret_key",
    "id_token_ttl",
    "key_rotation_overlap",
    "platform_name",
    "log_format",
    "log_level",
    "scopes",
    "roles",
    "profile",
    "branding",
];

/// A setting that parses but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub reason: String,
}

impl Settings {
    /// The issuer URL without a trailing slash.
    pub fn issuer(&self) -> String {
        match &self.issuer {
            Some(i) => i.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.bind),
        }
    }

    /// Checks what serde cannot, and derives the token policy. Whether a
    /// profile's paths clash with healthgate's own routes is for
    /// `crate::validate`, which knows the routes and calls this first.
    pub fn validate(&self) -> Result<TokenPolicy, InvalidSetting> {
        let bad = |key: &'static str, reason: &str| InvalidSetting {
            key,
            reason: reason.to_owned(),
        };
        let issuer = self.issuer();
        let parsed = url::Url::parse(&issuer)
            .map_err(|_| bad("issuer", "must be an absolute http(s) URL"))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(bad(
                "issuer",
                "must be an http(s) URL without query or fragment (RFC 8414 §2)",
            ));
        }
        for (key, v) in [
            ("authorization_code_ttl", self.authorization_code_ttl),
            ("access_token_ttl", self.access_token_ttl),
            ("session_ttl", self.session_ttl),
            ("retired_token_retention", self.retired_token_retention),
            ("connect_code_ttl", self.connect_code_ttl),
            ("id_token_ttl", self.id_token_ttl),
            ("manual_connect_code_ttl", self.manual_connect_code_ttl),
        ] {
            if v <= 0 {
                return Err(bad(key, "must be a positive number of seconds"));
            }
        }
        if self.refresh_token_ttl < 0 {
            return Err(bad(
                "refresh_token_ttl",
                "must be 0 (never expires) or positive",
            ));
        }
        if self.database_max_connections == 0 {
            return Err(bad("database_max_connections", "must be at least 1"));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(bad("log_format", "must be text or json"));
        }
        if let Some(SecretString(k)) = &self.secret_key
            && (k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad(
                "secret_key",
                "must be 64 hexadecimal digits (32 bytes)",
            ));
        }
        if self.scopes.is_empty() {
            return Err(bad("scopes", "the scope vocabulary must not be empty"));
        }
        for name in self.scopes.keys() {
            let parsed = healthgate_core::scope::ScopeSet::parse(name)
                .map_err(|e| bad("scopes", &e.to_string()))?;
            if parsed.len() != 1 {
                return Err(bad(
                    "scopes",
                    &format!("{name:?} is not a single scope token"),
                ));
            }
        }
        if !self.roles.contains_key(healthgate_core::org::ADMIN) {
            return Err(bad("roles", "the admin role must be defined"));
        }
        for (name, role) in &self.roles {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                return Err(bad(
                    "roles",
                    &format!("role name {name:?} must be lowercase letters or _"),
                ));
            }
            if let Some(unknown) = role
                .scopes
                .iter()
                .find(|s| *s != "*" && !self.scopes.contains_key(*s))
            {
                return Err(bad(
                    "roles",
                    &format!(
                        "role {name} grants {unknown:?}, which is not in the scope vocabulary"
                    ),
                ));
            }
            if role.resource_owner_type.is_empty()
                || !role
                    .resource_owner_type
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric())
            {
                return Err(bad(
                    "roles",
                    &format!("role {name}: resource_owner_type must be a word such as Staff"),
                ));
            }
        }
        let b = &self.branding;
        let hex = b.accent_color.len() == 7
            && b.accent_color.starts_with('#')
            && b.accent_color[1..].chars().all(|c| c.is_ascii_hexdigit());
        if !hex {
            return Err(bad("branding", "accent_color must be #rrggbb"));
        }
        for (what, url) in [("logo_url", &b.logo_url), ("support_url", &b.support_url)] {
            let ok = url.as_deref().is_none_or(|u| {
                (u.starts_with('/') && !u.starts_with("//"))
                    || url::Url::parse(u).is_ok_and(|p| p.scheme() == "https")
            });
            if !ok {
                return Err(bad(
                    "branding",
                    &format!("{what} must be an https URL or a path on this server"),
                ));
            }
        }
        let p = &self.profile;
        for path in p.paths() {
            let ok = path.starts_with('/')
                && path.len() > 1
                && path
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !"{}*?#%".contains(c))
                && !path.contains("//")
                && !path.split('/').any(|s| s == "." || s == "..");
            if !ok {
                return Err(bad(
                    "profile",
                    &format!("{path:?} is not a plain absolute path"),
                ));
            }
        }
        let mut all: Vec<&String> = p.paths().collect();
        all.sort();
        if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad("profile", &format!("{:?} is listed twice", w[0])));
        }
        if !matches!(p.token_type.as_str(), "Bearer" | "bearer") {
            return Err(bad("profile", "token_type must be Bearer or bearer"));
        }
        if p.token_response_wrapper.as_deref().is_some_and(|w| {
            w.is_empty() || !w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) {
            return Err(bad(
                "profile",
                "token_response_wrapper must be a word such as oauth",
            ));
        }
        if let Some(scope) = &p.provisioning_scope {
            let scopes = healthgate_core::scope::ScopeSet::parse(scope)
                .map_err(|e| bad("profile", &format!("provisioning_scope: {e}")))?;
            if scopes.is_empty() {
                return Err(bad(
                    "profile",
                    "provisioning_scope must name at least one scope",
                ));
            }
            if let Some(unknown) = scopes.iter().find(|s| !self.scopes.contains_key(*s)) {
                return Err(bad(
                    "profile",
                    &format!("provisioning_scope {unknown:?} is not in the scope vocabulary"),
                ));
            }
        }
        let rotation: RefreshRotation = self
            .refresh_rotation
            .parse()
            .map_err(|e: String| bad("refresh_rotation", &e))?;
        Ok(TokenPolicy {
            code_ttl: self.authorization_code_ttl,
            access_ttl: self.access_token_ttl,
            refresh_ttl: (self.refresh_token_ttl > 0).then_some(self.refresh_token_ttl),
            rotation,
        })
    }

    /// What a person in `role` may grant; an unknown role grants nothing.
    pub fn role_policy(&self, role: &str) -> healthgate_core::owner::RolePolicy {
        match self.roles.get(role) {
            Some(r) => {
                let granted: Vec<&str> = if r.scopes.iter().any(|s| s == "*") {
                    self.scopes.keys().map(String::as_str).collect()
                } else {
                    r.scopes.iter().map(String::as_str).collect()
                };
                let kept: Vec<&str> = granted
                    .into_iter()
                    .filter(|s| !r.except.iter().any(|e| e == s))
                    .collect();
                healthgate_core::owner::RolePolicy {
                    scopes: healthgate_core::scope::ScopeSet::from_tokens(kept).unwrap_or_default(),
                    owner_type: r.resource_owner_type.clone(),
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
    /// provisioning_scope`, checked by [`Settings::validate`]).
    pub fn default_provisioning_scopes(&self) -> Option<healthgate_core::scope::ScopeSet> {
        let scopes =
            healthgate_core::scope::ScopeSet::parse(self.profile.provisioning_scope.as_deref()?)
                .ok()?;
        (!scopes.is_empty()).then_some(scopes)
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
        self.issuer().starts_with("https://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = Settings::default();
        let policy = s.validate().unwrap();
        assert_eq!(policy, TokenPolicy::default());
        assert_eq!(s.issuer(), "http://127.0.0.1:8080");
        assert!(!s.secure_cookies());
    }

    #[test]
    fn nonsense_is_refused() {
        type Change = Box<dyn Fn(&mut Settings)>;
        let cases: Vec<Change> = vec![
            Box::new(|s| s.access_token_ttl = 0),
            Box::new(|s| s.refresh_rotation = "sometimes".into()),
            Box::new(|s| s.issuer = Some("ftp://x".into())),
            Box::new(|s| s.issuer = Some("https://x/?q=1".into())),
            Box::new(|s| s.log_format = "xml".into()),
            Box::new(|s| {
                s.scopes.insert("two words".into(), "x".into());
            }),
            Box::new(|s| s.profile.token_paths = vec!["o/token/".into()]),
            Box::new(|s| s.profile.authorize_paths = vec!["/o/{x}".into()]),
            Box::new(|s| s.profile.token_paths = vec!["/o//token".into()]),
            Box::new(|s| s.profile.token_paths = vec!["/o/../oauth/token".into()]),
            Box::new(|s| s.profile.token_paths = vec!["/o/./token".into()]),
            Box::new(|s| s.profile.token_paths = vec!["/o/t%6Fken".into()]),
            Box::new(|s| s.profile.token_paths = vec!["/o/tök".into()]),
            Box::new(|s| s.profile.token_paths = vec!["/o/to\tken".into()]),
            Box::new(|s| {
                s.profile.token_paths = vec!["/o/token/".into()];
                s.profile.revoke_paths = vec!["/o/token/".into()];
            }),
            Box::new(|s| s.profile.token_type = "mac".into()),
            Box::new(|s| s.branding.accent_color = "red; }".into()),
            Box::new(|s| s.branding.logo_url = Some("javascript:alert(1)".into())),
            Box::new(|s| s.branding.support_url = Some("http://help.example".into())),
            Box::new(|s| s.profile.token_response_wrapper = Some("".into())),
            Box::new(|s| s.profile.provisioning_scope = Some("member_public".into())),
            Box::new(|s| s.profile.provisioning_scope = Some("  ".into())),
            Box::new(|s| s.profile.provisioning_scope = Some("profile_read a\"b".into())),
            Box::new(|s| {
                s.roles.remove("admin");
            }),
            Box::new(|s| {
                s.roles.get_mut("staff").unwrap().scopes = vec!["unknown_scope".into()];
            }),
        ];
        for change in cases {
            let mut s = Settings::default();
            change(&mut s);
            assert!(s.validate().is_err(), "{s:?}");
        }
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
            s.profile.revoke_paths = vec!["/o/revoke/".into()];
            s.profile.token_paths = vec![path.into()];
            s.validate().expect("a plain path");
            let e = s.profile.refuse_taken(ROUTES).unwrap_err();
            assert_eq!(e.key, "profile");
            assert!(e.reason.contains(&format!("{path:?}")), "{path}: {e}");
            assert!(e.reason.contains(&format!("path {route};")), "{path}: {e}");
        }
        // Beside them, not over or under them: the seeds' own paths.
        let mut s = Settings::default();
        s.profile.authorize_paths = vec!["/o/authorize/".into()];
        s.profile.token_paths = vec![
            "/o/token/".into(),
            "/api/oauth/token".into(),
            "/oauth2/token".into(),
        ];
        s.profile.revoke_paths = vec!["/api/oauth/revoke".into(), "/adminx".into()];
        s.profile.user_paths = vec!["/api/v2.1/users.json".into(), "/app/x".into()];
        s.validate().unwrap();
        s.profile.refuse_taken(ROUTES).unwrap();
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
                provisioning_scope: Some("catalog:read".into()),
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
    }
}
