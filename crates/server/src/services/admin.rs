//! Administrative operations: registering clients and users, rotating
//! secrets, suspending apps, reviewing directory listings, resetting,
//! locking and unlocking accounts. The CLI, the portal and the admin console
//! call these, so every rule about what may be registered or changed is
//! enforced in one place.

use std::collections::HashMap;

use healthgate_core::Clock;
use healthgate_core::client::{Client, ClientKind, Reason, ReasonError};
use healthgate_core::listing::ListingState;
use healthgate_core::org::{Organization, OrganizationKind, validate_role};
use healthgate_core::owner::AuthorizationLevel;
use healthgate_core::redirect::RedirectUri;
use healthgate_core::review::{self, Decision, ListingError};
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret::{SecretKind, mint, new_id};
use healthgate_core::user::{User, UserType, validate_email, validate_password, validate_username};
use healthgate_store::{
    Actor, ClientSaved, ListingOutcome, Store, StoreError, Suspension, ThrottleKind, Unlocked,
};

use crate::config::{Seconds, Settings};
use crate::services::passwords;
use crate::services::photos::{self, Photo};

/// Why an administrative request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong; say so to the operator.
    #[error("{0}")]
    Invalid(String),
    /// The request is wrong in one field (named as the portal's forms name
    /// it), so a page can show the message next to that field.
    #[error("{message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// The request is wrong in several fields, each named: every field is
    /// checked before any is refused, so a form shows every mistake in one
    /// submit (and the CLI names them all on one line, joined by "; ").
    #[error("{}", join_messages(.0))]
    Fields(Vec<FieldRefusal>),
    #[error("no client with id {0:?}")]
    NoSuchClient(String),
    /// The app's directory listing cannot move as asked (it is not waiting
    /// for review, not listed, or changed since it was reviewed).
    #[error(transparent)]
    Listing(ListingError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] passwords::HashError),
}

/// A client registration request, as the seeds' registration forms ask it.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scope: String,
    pub public: bool,
    /// Where the app's photo is: fetched from there once, at registration,
    /// and served by healthgate from then on.
    pub photo_url: Option<String>,
    pub user_types: Vec<UserType>,
    pub authorization_level: AuthorizationLevel,
    pub description: Option<String>,
    /// Where Connect sends a practice admin (Hint's InstantOn).
    pub connect_redirect_url: Option<String>,
    pub webhook_url: Option<String>,
    /// Asks to be listed in the integration directory: a request, listed
    /// once one of the platform's operators approves it.
    pub published: bool,
    /// The developer who registered it in the portal.
    pub owner_id: Option<String>,
    /// May introspect every token (the platform's own APIs); set by
    /// operators only.
    pub resource_server: bool,
    /// Every sign-in that authorizes it must have given a second factor.
    pub require_mfa: bool,
    /// Token requests must carry a DPoP proof (RFC 9449 §5.2).
    pub require_dpop: bool,
    /// Authorization requests must be pushed first (RFC 9126 §6).
    pub require_par: bool,
    /// May create SMART EHR launches of apps (the platform acting as the
    /// EHR); set by operators only.
    pub smart_launcher: bool,
    /// Where the app is opened for a SMART EHR launch.
    pub launch_url: Option<String>,
    /// `private_key_jwt`: the URL of the JWK Set whose keys sign the app's
    /// assertions; the app then gets no secret.
    pub jwks_uri: Option<String>,
    /// `private_key_jwt`: the JWK Set itself (JSON text).
    pub jwks: Option<String>,
    /// What its ID tokens are signed with, when not the default.
    pub id_token_alg: Option<healthgate_core::jose::Alg>,
    /// Registered at the registration endpoint (RFC 7591): the initial
    /// access token's id, or `open`.
    pub registered_with: Option<String>,
    /// The digest of its registration access token (RFC 7592).
    pub registration_access_digest: Option<String>,
}

/// Changes to a registration; `None` leaves a field as it is, and for the
/// optional fields `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ClientChanges {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub scope: Option<String>,
    pub user_types: Option<Vec<UserType>>,
    /// A new photo URL is fetched once, like at registration; the app's own
    /// `/apps/{id}/photo` address leaves the photo as it is; clearing it
    /// forgets the stored photo.
    pub photo_url: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub connect_redirect_url: Option<Option<String>>,
    pub webhook_url: Option<Option<String>>,
    /// Asks to be listed in the integration directory (`true`: a request
    /// an operator reviews; nothing if it is asked or listed already), or
    /// withdraws the request or the listing (`false`).
    pub published: Option<bool>,
    pub authorization_level: Option<AuthorizationLevel>,
    /// Scopes of tokens for users the partner provisions; `Some(None)`
    /// resets them to the allowed scopes.
    pub provisioning_scope: Option<Option<String>>,
    /// Signed JWT access tokens (RFC 9068) instead of opaque ones.
    pub jwt_access_tokens: Option<bool>,
    /// What the client's ID tokens are signed with.
    pub id_token_alg: Option<healthgate_core::jose::Alg>,
    /// May introspect every token (the platform's own APIs); operators
    /// only.
    pub resource_server: Option<bool>,
    /// Every sign-in that authorizes it must have given a second factor.
    pub require_mfa: Option<bool>,
    /// Token requests must carry a DPoP proof (RFC 9449 §5.2).
    pub require_dpop: Option<bool>,
    /// Authorization requests must be pushed first (RFC 9126 §6).
    pub require_par: Option<bool>,
    /// May create SMART EHR launches; operators only.
    pub smart_launcher: Option<bool>,
    /// Where the app is opened for a SMART EHR launch; `Some(None)` clears
    /// it.
    pub launch_url: Option<Option<String>>,
    /// `private_key_jwt` keys (a new set, to rotate them); `Some(None)`
    /// clears it.
    pub jwks_uri: Option<Option<String>>,
    pub jwks: Option<Option<String>>,
}

/// One field's refusal: the field as the portal's forms name it, and why.
pub type FieldRefusal = (&'static str, String);

fn join_messages(refusals: &[FieldRefusal]) -> String {
    refusals
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl AdminError {
    /// The field refusals this error is made of, in the order the fields
    /// were checked; any other error comes back as it is.
    pub fn into_field_refusals(self) -> Result<Vec<FieldRefusal>, AdminError> {
        match self {
            AdminError::Field { field, message } => Ok(vec![(field, message)]),
            AdminError::Fields(refusals) => Ok(refusals),
            other => Err(other),
        }
    }
}

/// The field refusals found while every field of a request is checked.
#[derive(Debug, Default)]
struct Refusals(Vec<FieldRefusal>);

impl Refusals {
    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    fn check(&mut self, checked: Result<(), FieldRefusal>) {
        if let Err(refusal) = checked {
            self.0.push(refusal);
        }
    }

    /// Nothing refused, one field (`Field`), or several (`Fields`).
    fn verdict(mut self) -> Result<(), AdminError> {
        match self.0.len() {
            0 => Ok(()),
            1 => {
                let (field, message) = self.0.remove(0);
                Err(AdminError::Field { field, message })
            }
            _ => Err(AdminError::Fields(self.0)),
        }
    }
}

/// A listing refusal as the portal and the command line show it: a missing
/// connect URL is the connect URL field's.
fn listing_refused(e: ListingError) -> AdminError {
    match e {
        ListingError::NoConnectUrl => invalid_field("connect_url", NEEDS_CONNECT_URL),
        other => AdminError::Listing(other),
    }
}

const NEEDS_CONNECT_URL: &str =
    "an app listed in the integration directory, or asking to be, needs a connect URL";

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Invalid(message.into())
}

fn invalid_field(field: &'static str, message: impl Into<String>) -> AdminError {
    AdminError::Field {
        field,
        message: message.into(),
    }
}

/// The redirect URIs that parse; each one that does not is refused.
fn parse_redirect_uris(uris: &[String], refusals: &mut Refusals) -> Vec<RedirectUri> {
    uris.iter()
        .filter_map(|u| match RedirectUri::parse(u) {
            Ok(uri) => Some(uri),
            Err(e) => {
                refusals.add("redirect_uris", format!("{u}: {e}"));
                None
            }
        })
        .collect()
}

/// The scopes asked for, all known to this server; else refused, on the
/// `scope` field, with an empty set.
fn parse_scopes(settings: &Settings, scope: &str, refusals: &mut Refusals) -> ScopeSet {
    let scopes = match ScopeSet::parse(scope) {
        Ok(scopes) => scopes,
        Err(e) => {
            refusals.add("scope", e.to_string());
            return ScopeSet::default();
        }
    };
    if scopes.is_empty() {
        refusals.add("scope", "at least one scope is required");
    }
    // With `[smart]` on, SMART's scopes are known too; one written in
    // SMART's form but not well formed is refused with its own reason.
    let mut unknown = Vec::new();
    for s in scopes.iter().filter(|s| !settings.knows_scope(s)) {
        match healthgate_core::smart::parse(s) {
            Err(e) if settings.smart.enabled() => {
                refusals.add("scope", e.to_string());
                return ScopeSet::default();
            }
            _ => unknown.push(s),
        }
    }
    if !unknown.is_empty() {
        let known: Vec<&str> = settings.scopes.keys().map(String::as_str).collect();
        refusals.add(
            "scope",
            format!(
                "unknown scope {}; this server knows: {}",
                unknown.join(" "),
                known.join(" ")
            ),
        );
        return ScopeSet::default();
    }
    scopes
}

/// Whether healthgate may send to, or fetch from, `url` (the `field` of a
/// registration, `what` in messages): https, or http on loopback when the
/// operator allows it (`allow_http_webhooks`: development and demos), and
/// never an address in the platform's own network.
fn check_outbound_url(
    settings: &Settings,
    field: &'static str,
    what: &str,
    url: &str,
) -> Result<(), FieldRefusal> {
    let parsed =
        url::Url::parse(url).map_err(|_| (field, format!("{url}: not an absolute URL")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if let Some(refused) =
        crate::services::outbound::refused_literal(url, settings.allow_http_webhooks)
    {
        return Err((field, format!("{url}: {refused}")));
    }
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(()),
        "http" if loopback && settings.allow_http_webhooks => Ok(()),
        "http" if loopback => Err((
            field,
            format!(
                "http {what} are only accepted on loopback when allow_http_webhooks is set (development); use https"
            ),
        )),
        _ => Err((field, format!("{url}: {what} must be https"))),
    }
}

/// Whether `url` may receive webhooks.
fn check_webhook_url(settings: &Settings, url: &str) -> Result<(), FieldRefusal> {
    check_outbound_url(settings, "webhook_url", "webhook URLs", url)
}

/// Fetches an app's photo from `url`, once, with the webhook delivery
/// client (public addresses only, no redirects), as [`photos::fetch`]
/// says. Every failure is a refusal of the `photo_url` field.
async fn fetch_photo(settings: &Settings, url: &str) -> Result<Photo, AdminError> {
    check_outbound_url(settings, "photo_url", "photo URLs", url)
        .map_err(|(field, message)| invalid_field(field, message))?;
    let http =
        crate::services::outbound::http_client(settings.allow_http_webhooks).map_err(|e| {
            tracing::error!(error = %e, "no HTTP client to fetch a photo with");
            invalid_field(
                "photo_url",
                "the photo could not be fetched; try again later",
            )
        })?;
    photos::fetch(&http, url)
        .await
        .map_err(|e| invalid_field("photo_url", format!("photo URL {url}: {e}")))
}

/// Keeps `photo` as app `client_id`'s photo and points its `photo_url` at
/// where healthgate serves it (`/apps/{id}/photo`), which is where every
/// page shows it from. Uploaded and fetched photos alike come here.
pub async fn store_photo(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
    client_id: &str,
    photo: &Photo,
) -> Result<String, AdminError> {
    let now = clock.now();
    let url = photos::served_url(&settings.issuer(), client_id, now);
    let stored = store
        .set_client_photo(client_id, photo.content_type, &photo.bytes, &url, now)
        .await?;
    if !stored {
        return Err(AdminError::NoSuchClient(client_id.to_owned()));
    }
    Ok(url)
}

/// An optional field left blank is absent.
fn blank_is_none(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Every rule a registration must satisfy, for new and changed clients
/// alike; every field is checked, and each one broken is refused.
/// `listed`: the app will be listed in the directory, or asking to be.
fn check_client(settings: &Settings, c: &Client, listed: bool, refusals: &mut Refusals) {
    if c.name.trim().is_empty() || c.name.len() > 200 || c.name.trim() != c.name {
        refusals.add(
            "name",
            "the name must be 1 to 200 characters, without surrounding spaces",
        );
    }
    if c.description.as_ref().is_some_and(|d| d.len() > 2000) {
        refusals.add(
            "description",
            "the description must be at most 2000 characters",
        );
    }
    if let Some(connect) = &c.connect_redirect_url {
        if let Err(e) = RedirectUri::parse(connect) {
            refusals.add("connect_url", format!("connect URL {connect}: {e}"));
        }
    } else if listed {
        refusals.add("connect_url", NEEDS_CONNECT_URL);
    }
    if let Some(hook) = &c.webhook_url {
        refusals.check(check_webhook_url(settings, hook));
    }
    // A backend service (keys, client credentials only) needs no redirect
    // URI; every other app signs people in through one.
    if c.redirect_uris.is_empty() && !c.uses_assertions() {
        refusals.add("redirect_uris", "at least one redirect URI is required");
    }
    check_assertion_keys(settings, c, refusals);
    // The person's browser is sent there, like to a redirect URI.
    if let Some(launch) = &c.launch_url
        && let Err(e) = RedirectUri::parse(launch)
    {
        refusals.add("launch_url", format!("launch URL {launch}: {e}"));
    }
    if c.user_types.is_empty() {
        refusals.add("user_types", "at least one user type is required");
    }
}

/// `private_key_jwt` keys: a JWK Set of public keys, or the https URL of
/// one (fetched like a webhook: public addresses only), not both, and not
/// for a public app.
fn check_assertion_keys(settings: &Settings, c: &Client, refusals: &mut Refusals) {
    if c.jwks.is_some() && c.jwks_uri.is_some() {
        refusals.add("jwks", "register the keys inline or by URL, not both");
    }
    if c.is_public() && c.uses_assertions() {
        refusals.add(
            "jwks",
            "a public app has no keys: private_key_jwt is for confidential apps",
        );
    }
    if let Some(text) = &c.jwks {
        let checked = serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| format!("the JWK Set is not JSON: {e}"))
            .and_then(|set| healthgate_core::client_assertion::check_jwks(&set));
        if let Err(e) = checked {
            refusals.add("jwks", e);
        }
    }
    if let Some(url) = &c.jwks_uri {
        refusals.check(check_outbound_url(
            settings,
            "jwks_uri",
            "JWK Set URLs",
            url,
        ));
    }
}

/// The cheap checks of a photo URL (a photo is fetched only once every
/// field has passed).
fn check_photo_url(settings: &Settings, url: Option<&str>, refusals: &mut Refusals) {
    if let Some(url) = url {
        refusals.check(check_outbound_url(settings, "photo_url", "photo URLs", url));
    }
}

/// The client a registration request describes (its secret aside), and
/// every field refusal it meets.
fn draft_client(settings: &Settings, req: &NewClient, now: i64, refusals: &mut Refusals) -> Client {
    let kind = if req.public {
        ClientKind::Public
    } else {
        ClientKind::Confidential
    };
    let mut client = Client {
        redirect_uris: parse_redirect_uris(&req.redirect_uris, refusals),
        allowed_scopes: parse_scopes(settings, &req.scope, refusals),
        user_types: if req.user_types.is_empty() {
            UserType::ALL.to_vec()
        } else {
            req.user_types.clone()
        },
        description: blank_is_none(req.description.clone()),
        connect_redirect_url: blank_is_none(req.connect_redirect_url.clone()),
        webhook_url: blank_is_none(req.webhook_url.clone()),
        authorization_level: req.authorization_level,
        owner_id: req.owner_id.clone(),
        resource_server: req.resource_server,
        require_mfa: req.require_mfa,
        require_dpop: req.require_dpop,
        require_par: req.require_par,
        smart_launcher: req.smart_launcher,
        launch_url: blank_is_none(req.launch_url.clone()),
        jwks_uri: blank_is_none(req.jwks_uri.clone()),
        jwks: blank_is_none(req.jwks.clone()),
        registered_with: req.registered_with.clone(),
        registration_access_digest: req.registration_access_digest.clone(),
        // The photo is set once it is stored, to where healthgate serves it.
        ..Client::new(new_id("app"), req.name.trim(), kind, now)
    };
    // SMART apps check RS256 ID tokens (App Launch 2.2: the server SHALL
    // support RS256; the SMART test kit asks for it): an app registered with
    // SMART scopes gets them, until `client update --id-token-alg` says
    // otherwise.
    if settings.smart.enabled()
        && client
            .allowed_scopes
            .iter()
            .any(|s| s == "fhirUser" || healthgate_core::smart::needs_fhir_server(s))
    {
        client.id_token_alg = healthgate_core::jose::Alg::Rs256;
    }
    if let Some(alg) = req.id_token_alg {
        client.id_token_alg = alg;
    }
    check_client(settings, &client, req.published, refusals);
    check_photo_url(
        settings,
        blank_is_none(req.photo_url.clone()).as_deref(),
        refusals,
    );
    // Registered asking to be listed: a request, written with the app.
    if req.published
        && let Ok(Some(requested)) = review::decide(&client, Decision::Request, None, now)
    {
        client.listing = requested.next;
    }
    client
}

/// Every field refusal `req` would meet at registration, found without
/// registering or fetching anything: a form that found mistakes of its own
/// shows these beside them.
pub fn new_client_refusals(settings: &Settings, req: &NewClient) -> Vec<FieldRefusal> {
    let mut refusals = Refusals::default();
    draft_client(settings, req, 0, &mut refusals);
    refusals.0
}

/// Validates and registers a client. Returns it with its secret, which exists
/// only in this return value: the store keeps its digest. `actor` is who
/// registers it (the developer in the portal, nobody for the CLI).
pub async fn create_client(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
    req: NewClient,
    actor: Actor<'_>,
) -> Result<(Client, Option<String>), AdminError> {
    let mut refusals = Refusals::default();
    let mut client = draft_client(settings, &req, clock.now(), &mut refusals);
    refusals.verdict()?;
    // An app that signs assertions with its keys has no secret.
    let secret = (!req.public && !client.uses_assertions()).then(|| mint(SecretKind::ClientSecret));
    client.secret_digest = secret.as_ref().map(|s| s.digest.clone());
    // Fetched last, after every cheap check, and before anything is stored:
    // a photo that cannot be fetched registers nothing.
    let photo = match blank_is_none(req.photo_url) {
        Some(url) => Some(fetch_photo(settings, &url).await?),
        None => None,
    };
    store.insert_client_by(&client, actor).await?;
    if let Some(photo) = photo {
        client.photo_url = Some(store_photo(store, settings, clock, &client.id, &photo).await?);
    }
    Ok((client, secret.map(|s| s.value)))
}

/// What a change does to an app's photo.
enum PhotoChange {
    Keep,
    Forget,
    FetchFrom(String),
}

/// Applies `changes` to `c`, noting every field refusal the result meets.
fn apply_changes(
    settings: &Settings,
    c: &mut Client,
    changes: ClientChanges,
    now: i64,
    refusals: &mut Refusals,
) -> PhotoChange {
    if let Some(name) = changes.name {
        c.name = name.trim().to_owned();
    }
    if let Some(uris) = changes.redirect_uris {
        c.redirect_uris = parse_redirect_uris(&uris, refusals);
    }
    if let Some(scope) = changes.scope {
        c.allowed_scopes = parse_scopes(settings, &scope, refusals);
    }
    if let Some(types) = changes.user_types {
        c.user_types = types;
    }
    // A photo URL other than the app's own is fetched, and the stored photo
    // replaced, once everything else has passed.
    let mut photo = PhotoChange::Keep;
    if let Some(v) = changes.photo_url {
        match blank_is_none(v) {
            None => {
                photo = PhotoChange::Forget;
                c.photo_url = None;
            }
            // Its own address here (any version): the photo stays.
            Some(url)
                if url.starts_with(&format!("{}/", settings.issuer()))
                    && photos::served_path(&c.id, Some(&url)).is_some() => {}
            Some(url) => photo = PhotoChange::FetchFrom(url),
        }
    }
    if let Some(v) = changes.description {
        c.description = blank_is_none(v);
    }
    if let Some(v) = changes.connect_redirect_url {
        c.connect_redirect_url = blank_is_none(v);
    }
    if let Some(v) = changes.webhook_url {
        c.webhook_url = blank_is_none(v);
    }
    let listed = changes.published.unwrap_or(c.listing.state.is_wanted());
    if let Some(alg) = changes.id_token_alg {
        c.id_token_alg = alg;
    }
    if let Some(jwt) = changes.jwt_access_tokens {
        c.jwt_access_tokens = jwt;
    }
    if let Some(rs) = changes.resource_server {
        c.resource_server = rs;
    }
    if let Some(on) = changes.require_dpop {
        c.require_dpop = on;
    }
    if let Some(on) = changes.require_par {
        c.require_par = on;
    }
    if let Some(on) = changes.require_mfa {
        c.require_mfa = on;
    }
    if let Some(on) = changes.smart_launcher {
        c.smart_launcher = on;
    }
    if let Some(v) = changes.launch_url {
        c.launch_url = blank_is_none(v);
    }
    if let Some(v) = changes.jwks_uri {
        c.jwks_uri = blank_is_none(v);
    }
    if let Some(v) = changes.jwks {
        c.jwks = blank_is_none(v);
    }
    if let Some(level) = changes.authorization_level {
        c.authorization_level = level;
    }
    if let Some(scope) = changes.provisioning_scope {
        c.provisioning_scopes = blank_is_none(scope).map(|s| parse_scopes(settings, &s, refusals));
    }
    c.updated_at = now;
    check_client(settings, c, listed, refusals);
    if let PhotoChange::FetchFrom(url) = &photo {
        check_photo_url(settings, Some(url), refusals);
    }
    photo
}

/// Every field refusal `changes` would meet on app `client_id`, found
/// without changing or fetching anything.
pub async fn client_changes_refusals(
    store: &Store,
    settings: &Settings,
    client_id: &str,
    changes: ClientChanges,
) -> Result<Vec<FieldRefusal>, AdminError> {
    let mut c = store
        .client(client_id)
        .await?
        .ok_or_else(|| AdminError::NoSuchClient(client_id.to_owned()))?;
    let mut refusals = Refusals::default();
    apply_changes(settings, &mut c, changes, 0, &mut refusals);
    Ok(refusals.0)
}

/// Applies `changes` to a registration after checking the result, every
/// field of it.
pub async fn update_client(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
    client_id: &str,
    changes: ClientChanges,
    actor: Actor<'_>,
) -> Result<Client, AdminError> {
    let mut c = store
        .client(client_id)
        .await?
        .ok_or_else(|| AdminError::NoSuchClient(client_id.to_owned()))?;
    let mut refusals = Refusals::default();
    let wanted = changes.published;
    let photo_change = apply_changes(settings, &mut c, changes, clock.now(), &mut refusals);
    refusals.verdict()?;
    let photo = match &photo_change {
        PhotoChange::FetchFrom(url) => Some(fetch_photo(settings, url).await?),
        PhotoChange::Keep | PhotoChange::Forget => None,
    };
    // The listing moves in the update's transaction, from the app as stored
    // then: a change of its name, scopes or connect URL sends an approved
    // app back for review.
    c.listing = match store.update_client(&c, wanted, actor).await? {
        ClientSaved::Saved(listing) => listing,
        ClientSaved::ListingRefused(e) => return Err(listing_refused(e)),
        ClientSaved::NoSuchClient => return Err(AdminError::NoSuchClient(client_id.to_owned())),
    };
    if let Some(photo) = photo {
        c.photo_url = Some(store_photo(store, settings, clock, &c.id, &photo).await?);
    } else if let PhotoChange::Forget = photo_change {
        store.delete_client_photo(&c.id).await?;
    }
    Ok(c)
}

/// Gives a client a new webhook signing secret; the old one stops signing at once.
pub async fn rotate_webhook_secret(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
    client_id: &str,
    actor: Actor<'_>,
) -> Result<String, AdminError> {
    let mut c = store
        .client(client_id)
        .await?
        .ok_or_else(|| AdminError::NoSuchClient(client_id.to_owned()))?;
    c.webhook_secret_version += 1;
    c.updated_at = clock.now();
    match store.update_client(&c, None, actor).await? {
        ClientSaved::Saved(listing) => c.listing = listing,
        ClientSaved::ListingRefused(e) => return Err(listing_refused(e)),
        ClientSaved::NoSuchClient => return Err(AdminError::NoSuchClient(client_id.to_owned())),
    }
    Ok(crate::services::secrets::webhook_secret(store, settings, &c).await?)
}

/// Gives a confidential client a new secret. The old one keeps working for
/// `grace` (`client_secret_grace`, or `None` for at once, the CLI's
/// `--now`), set in the rotation's transaction; any secret still in the
/// grace of an earlier rotation ends now.
pub async fn rotate_client_secret(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    grace: Option<Seconds>,
    actor: Actor<'_>,
) -> Result<String, AdminError> {
    let client = store
        .client(client_id)
        .await?
        .ok_or_else(|| AdminError::NoSuchClient(client_id.to_owned()))?;
    if client.is_public() {
        return Err(AdminError::Invalid(
            "a public client has no secret to rotate".into(),
        ));
    }
    let secret = mint(SecretKind::ClientSecret);
    let now = clock.now();
    store
        .set_client_secret(
            client_id,
            &secret.digest,
            grace.map(|g| now + g.secs()),
            actor,
            now,
        )
        .await?;
    Ok(secret.value)
}

/// Deletes a client with everything issued to it.
pub async fn delete_client(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    actor: Actor<'_>,
) -> Result<(), AdminError> {
    if !store.delete_client(client_id, actor, clock.now()).await? {
        return Err(AdminError::NoSuchClient(client_id.to_owned()));
    }
    Ok(())
}

/// A user registration request.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    /// Display name, e.g. "Dr. Jane Doe".
    pub name: Option<String>,
    pub password: Option<String>,
    pub email: Option<String>,
    pub user_type: UserType,
}

/// Who creates an account, for its `user.created` event.
#[derive(Debug, Clone, Copy)]
pub enum Creator<'a> {
    /// An operator (console) or the server itself (CLI, demo).
    By(Actor<'a>),
    /// The person, signing up for themselves from this address.
    Themselves { ip: Option<&'a str> },
}

/// Every field refusal an account request meets (a username taken aside,
/// which only the store knows), found without creating anything.
pub fn new_user_refusals(req: &NewUser) -> Vec<FieldRefusal> {
    let mut refusals = Refusals::default();
    if let Err(e) = validate_username(&req.username) {
        refusals.add("username", e);
    }
    if let Some(email) = &req.email
        && validate_email(email).is_err()
    {
        refusals.add("email", format!("{email:?} is not an email address"));
    }
    if let Some(p) = &req.password
        && let Err(e) = validate_password(p)
    {
        refusals.add("password", e);
    }
    refusals.0
}

/// Validates and creates a user account.
pub async fn create_user(
    store: &Store,
    clock: &dyn Clock,
    req: NewUser,
    creator: Creator<'_>,
) -> Result<User, AdminError> {
    Refusals(new_user_refusals(&req)).verdict()?;
    let password_hash = match req.password {
        Some(p) => Some(passwords::hash(p).await?),
        None => None,
    };
    let now = clock.now();
    let user = User {
        id: new_id("usr"),
        username: req.username,
        name: req.name,
        email: req.email,
        user_type: req.user_type,
        password_hash,
        created_at: now,
        locked_at: None,
        provisioned_by: None,
        operator: false,
        password_reset_at: None,
        email_verified_at: None,
        fhir_user: None,
    };
    let actor = match creator {
        Creator::By(actor) => actor,
        Creator::Themselves { ip } => Actor::user(&user.id, ip),
    };
    store
        .insert_user_by(&user, actor)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => invalid_field(
                "username",
                format!("the username {:?} is taken", user.username),
            ),
            other => other.into(),
        })?;
    Ok(user)
}

/// Creates a practice or clinic.
pub async fn create_organization(
    store: &Store,
    clock: &dyn Clock,
    name: &str,
    kind: OrganizationKind,
) -> Result<Organization, AdminError> {
    create_organization_by(store, clock, name, kind, Actor::system()).await
}

/// Creates a practice or clinic on behalf of `actor`.
pub async fn create_organization_by(
    store: &Store,
    clock: &dyn Clock,
    name: &str,
    kind: OrganizationKind,
    actor: Actor<'_>,
) -> Result<Organization, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(invalid_field(
            "name",
            "the name must be 1 to 200 characters",
        ));
    }
    let org = Organization {
        id: new_id(kind.id_prefix()),
        name: name.to_owned(),
        kind,
        created_at: clock.now(),
    };
    store.insert_organization_by(&org, actor).await?;
    Ok(org)
}

/// Adds a person (by id or username) to an organization with a role, or
/// changes their role.
pub async fn add_member(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
    organization_id: &str,
    user: &str,
    role: &str,
) -> Result<(Organization, User), AdminError> {
    add_member_by(
        store,
        settings,
        clock,
        organization_id,
        user,
        role,
        Actor::system(),
    )
    .await
}

/// Adds a person (by id or username) to an organization with a role, or
/// changes their role, on behalf of `actor`. A role that is not configured
/// is refused on the `role` field, a person who does not exist on the
/// `username` field.
pub async fn add_member_by(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
    organization_id: &str,
    user: &str,
    role: &str,
    actor: Actor<'_>,
) -> Result<(Organization, User), AdminError> {
    check_role(settings, role)?;
    let org = store
        .organization(organization_id)
        .await?
        .ok_or_else(|| invalid(format!("no organization with id {organization_id:?}")))?;
    let person = find_user(store, user).await?;
    store
        .set_membership_by(&org.id, &person.id, role, actor, clock.now())
        .await?;
    Ok((org, person))
}

/// Refuses a role the configuration does not define, on the `role` field.
pub fn check_role(settings: &Settings, role: &str) -> Result<(), AdminError> {
    validate_role(role, settings.roles.keys().map(String::as_str))
        .map_err(|e| invalid_field("role", e))
}

/// The account with this id or, failing that, this username; refused on
/// the `username` field when there is none.
pub async fn find_user(store: &Store, id_or_username: &str) -> Result<User, AdminError> {
    if let Some(u) = store.user(id_or_username).await? {
        return Ok(u);
    }
    store
        .user_by_username(id_or_username)
        .await?
        .ok_or_else(|| {
            invalid_field(
                "username",
                format!("no user with id or username {id_or_username:?}"),
            )
        })
}

/// Suspends an app: it may do nothing until restored, and every token it
/// held stops working at once (see [`Store::suspend_client`]).
pub async fn suspend_client(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    reason: Option<&str>,
    actor: Actor<'_>,
) -> Result<Suspension, AdminError> {
    match store
        .suspend_client(client_id, reason, actor, clock.now())
        .await?
    {
        Suspension::NoSuchClient => Err(AdminError::NoSuchClient(client_id.to_owned())),
        done => Ok(done),
    }
}

/// Lifts an app's suspension; what the suspension revoked stays revoked.
/// Returns whether it was suspended.
pub async fn restore_client(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    actor: Actor<'_>,
) -> Result<bool, AdminError> {
    if store.restore_client(client_id, actor, clock.now()).await? {
        return Ok(true);
    }
    match store.client(client_id).await? {
        Some(_) => Ok(false),
        None => Err(AdminError::NoSuchClient(client_id.to_owned())),
    }
}

/// Unlocks an account (by id or username): lifts the lock an operator put
/// on it and the lock its username is under after too many failed
/// sign-ins, whichever hold, with one `user.unlocked` event saying which
/// (see [`Store::unlock_user`]). Returns the account as it was, and what
/// was lifted (nothing if it was not locked).
pub async fn unlock_user(
    store: &Store,
    clock: &dyn Clock,
    user: &str,
    actor: Actor<'_>,
) -> Result<(User, Unlocked), AdminError> {
    let person = find_user(store, user).await?;
    let unlocked = store.unlock_user(&person.id, actor, clock.now()).await?;
    Ok((person, unlocked))
}

/// Removes every second factor and recovery code of an account (id or
/// username) and ends its sessions: for a person who lost their phone or
/// key. They sign in with their password alone next (and enrol again first
/// where a second factor is required). Returns how many factors there were.
pub async fn reset_mfa(
    store: &Store,
    clock: &dyn Clock,
    user: &str,
    reason: Option<&healthgate_core::client::Reason>,
    actor: Actor<'_>,
) -> Result<(User, i64), AdminError> {
    let person = find_user(store, user).await?;
    let factors = store
        .reset_factors(&person.id, reason.map(|r| r.as_str()), actor, clock.now())
        .await?;
    Ok((person, factors))
}

/// Until when each of `users` cannot sign in because of failed sign-ins
/// for its username (the account's id to the end of the lock; an account
/// not locked so is absent). One read for a page of accounts.
pub async fn sign_in_locks(
    store: &Store,
    clock: &dyn Clock,
    users: &[User],
) -> Result<HashMap<String, i64>, StoreError> {
    let usernames: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
    let blocked = store
        .blocked_among(ThrottleKind::SignIn, &usernames, clock.now())
        .await?;
    Ok(users
        .iter()
        .filter_map(|u| blocked.get(&u.username).map(|until| (u.id.clone(), *until)))
        .collect())
}

/// Gives an account a new, random temporary password and ends every
/// session of it. The password exists only in this return value (the store
/// keeps its argon2id hash): show it once, to the operator.
pub async fn reset_password(
    store: &Store,
    clock: &dyn Clock,
    user_id: &str,
    actor: Actor<'_>,
) -> Result<(User, String), AdminError> {
    let user = find_user(store, user_id).await?;
    let password = healthgate_core::secret::temporary_password();
    let hash = passwords::hash(password.clone()).await?;
    if !store
        .reset_password(&user.id, &hash, actor, clock.now())
        .await?
    {
        return Err(invalid_field(
            "username",
            format!("no user with id {user_id:?}"),
        ));
    }
    Ok((user, password))
}

/// Deletes an account (by id or username) with everything issued to it:
/// its sessions, grants and tokens, memberships and consents go with it, and
/// `user.deleted` is written. Returns the account as it was.
pub async fn delete_user(store: &Store, clock: &dyn Clock, user: &str) -> Result<User, AdminError> {
    let person = find_user(store, user).await?;
    if !store.delete_user(&person.id, None, clock.now()).await? {
        return Err(invalid_field(
            "username",
            format!("no user with id {:?}", person.id),
        ));
    }
    Ok(person)
}

/// Makes a person (by id or username) one of the platform's operators, or
/// (`operator` false) no longer one. Returns them as they are now, and
/// whether that changed.
pub async fn set_operator(
    store: &Store,
    clock: &dyn Clock,
    user: &str,
    operator: bool,
    actor: Actor<'_>,
) -> Result<(User, bool), AdminError> {
    let mut person = find_user(store, user).await?;
    let changed = store
        .set_operator(&person.id, operator, actor, clock.now())
        .await?;
    person.operator = operator;
    Ok((person, changed))
}

/// An app in the directory's review, with the account that registered it
/// in the developer portal (`None`: an operator registered it).
#[derive(Debug, Clone)]
pub struct ListingReview {
    pub client: Client,
    pub owner: Option<User>,
}

/// The apps whose listing is in `state` (waiting for review, listed,
/// rejected), the longest waiting first, with who registered each.
pub async fn listings(
    store: &Store,
    state: ListingState,
) -> Result<Vec<ListingReview>, AdminError> {
    let mut out = Vec::new();
    for client in store.clients_in_listing(state).await? {
        let owner = match &client.owner_id {
            Some(id) => store.user(id).await?,
            None => None,
        };
        out.push(ListingReview { client, owner });
    }
    Ok(out)
}

/// What a decision about a listing did: the app as it is now, and whether
/// the decision changed anything (asking for what already holds does not).
#[derive(Debug, Clone)]
pub struct ListingDone {
    pub client: Client,
    pub changed: bool,
}

/// An operator's reason as the command line gives it, refused on the
/// `reason` field when it is missing, too long or not one line.
pub fn reason(raw: &str) -> Result<Reason, AdminError> {
    Reason::parse(raw).map_err(|e| invalid_field("reason", reason_refusal(e)))
}

fn reason_refusal(e: ReasonError) -> String {
    match e {
        ReasonError::Missing => "a reason is required: the developer reads it".to_owned(),
        other => other.to_string(),
    }
}

/// Decides `decision` about app `client_id`'s listing for `actor`, in one
/// transaction with its event (see [`Store::decide_listing`]).
async fn decide_listing(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    decision: Decision<'_>,
    actor: Actor<'_>,
) -> Result<ListingDone, AdminError> {
    let changed = match store
        .decide_listing(client_id, decision, actor, clock.now())
        .await?
    {
        ListingOutcome::Moved(_) => true,
        ListingOutcome::Unchanged(_) => false,
        ListingOutcome::Refused(e) => return Err(listing_refused(e)),
        ListingOutcome::NoSuchClient => return Err(AdminError::NoSuchClient(client_id.to_owned())),
    };
    let client = store
        .client(client_id)
        .await?
        .ok_or_else(|| AdminError::NoSuchClient(client_id.to_owned()))?;
    Ok(ListingDone { client, changed })
}

/// Asks for app `client_id` to be listed in the integration directory (its
/// developer, or an operator for them): it waits for an operator's review.
pub async fn request_listing(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    actor: Actor<'_>,
) -> Result<ListingDone, AdminError> {
    decide_listing(store, clock, client_id, Decision::Request, actor).await
}

/// Withdraws app `client_id`'s request to be listed, or takes it out of the
/// directory; listing it again takes a new review.
pub async fn withdraw_listing(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    actor: Actor<'_>,
) -> Result<ListingDone, AdminError> {
    decide_listing(store, clock, client_id, Decision::Withdraw, actor).await
}

/// Approves app `client_id`'s request: it is listed. With `seen` (the
/// [`review::fingerprint`] of what the operator reviewed), an app that
/// changed since is not approved.
pub async fn approve_listing(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    seen: Option<&str>,
    actor: Actor<'_>,
) -> Result<ListingDone, AdminError> {
    decide_listing(store, clock, client_id, Decision::Approve { seen }, actor).await
}

/// Rejects app `client_id`'s request, with the reason its developer reads.
pub async fn reject_listing(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    reason: &Reason,
    actor: Actor<'_>,
) -> Result<ListingDone, AdminError> {
    decide_listing(store, clock, client_id, Decision::Reject { reason }, actor).await
}

/// Takes listed app `client_id` out of the directory, with the reason its
/// developer reads. Practices connected to it stay connected.
pub async fn unlist(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
    reason: &Reason,
    actor: Actor<'_>,
) -> Result<ListingDone, AdminError> {
    decide_listing(store, clock, client_id, Decision::Unlist { reason }, actor).await
}
