//! The OAuth playground (`/playground`): a developer picks one of their apps
//! and its scopes and walks through the authorization code flow step by
//! step — the authorize URL, the redirect with its code, the token request
//! and response, a refresh, an introspection and a call to `/api/v1/me` —
//! each step showing the exact HTTP exchanged. With `[smart]` on it runs
//! SMART App Launch too: a standalone launch (the person picks a patient on
//! the consent page) or an EHR launch (the playground creates the launch as
//! the platform would, for the developer and one of their own patients);
//! and for a confidential app, a Backend Services request: client
//! credentials with an assertion signed by a private key the developer
//! holds, which the playground can make for them (registering its public
//! half; the private key is shown once and never kept).
//!
//! The playground is a client of this server like any other: its requests
//! go through the same router, middleware and handlers a partner's would
//! (dispatched in-process, so no network path or proxy stands between), and
//! what is shown is the request as built and the response as returned.
//! Its redirect URI is `{issuer}/playground/callback`, which the app must
//! have registered (one click adds it).
//!
//! It keeps nothing: the `state` names the app and carries a MAC binding
//! it to the developer, and the PKCE verifier is derived from the state
//! under the instance key, so any node can finish a run another began.
//! Tokens and the APP_SECRET the developer types travel in the page's own
//! form, never stored.

use askama::Template;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use healthgate_core::client::Client;
use healthgate_core::client_assertion::{ASSERTION_TYPE, ClientKey};
use healthgate_core::pkce::CodeVerifier;
use healthgate_core::redirect::with_query_params;
use healthgate_core::secret::{constant_time_eq, keyed_digest, random_bytes};
use healthgate_core::smart::{PatientLink, needs_fhir_server};
use tower::ServiceExt;

use crate::http::error::PageError;
use crate::http::extract::{AnyFields, CsrfForm, SignedIn, Viewer};
use crate::http::forms::Form;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site};
use crate::http::routes::Routes;
use crate::services::admin::{self, ClientChanges};
use crate::services::smart::{LaunchRequest, create_launch};
use crate::state::AppState;
use crate::web::developers::owned_app;

const HOME: &str = "/playground";
const CALLBACK: &str = "/playground/callback";

pub fn routes() -> Routes {
    Routes::new()
        .route(HOME, get(index))
        .route("/playground/authorize", get(authorize))
        .route("/playground/redirect-uri", post(add_redirect_uri))
        .route(CALLBACK, get(callback))
        .route("/playground/token", post(token))
        .route("/playground/refresh", post(refresh))
        .route("/playground/introspect", post(introspect))
        .route("/playground/me", post(me))
        .route("/playground/keys", post(make_keys))
        .route("/playground/backend", post(backend))
}

/// One HTTP exchange, as text.
pub struct Exchange {
    pub title: &'static str,
    pub request: String,
    pub response: String,
}

/// An app the developer can pick.
pub struct AppChoice {
    pub id: String,
    pub name: String,
    pub selected: bool,
}

/// The tokens a run holds, carried from step to step in the page's form.
#[derive(Default)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
}

/// SMART's choices for the chosen app (step 1): `[smart]` is on and the
/// app may ask for SMART scopes.
pub struct SmartChoices {
    /// The FHIR servers a request may name (`aud`).
    pub servers: Vec<String>,
    /// It can be launched from the EHR: registered with the `launch` scope
    /// and a launch URL.
    pub ehr: bool,
    /// The patients the developer may act for: an EHR launch puts one of
    /// them, and no other, in context.
    pub patients: Vec<PatientLink>,
}

/// The Backend Services form (confidential apps).
#[derive(Default)]
pub struct BackendForm {
    /// The PKCS#8 PEM the developer pasted, or the one just made (shown
    /// this once).
    pub private_key: String,
    pub kid: String,
    pub scope: String,
    /// A key pair was just made.
    pub generated: bool,
    /// The app's keys are fetched from there: a made key must be added to
    /// that set before it works.
    pub jwks_uri: Option<String>,
    /// The app still has an APP_SECRET: registering a key ends it.
    pub has_secret: bool,
}

/// How the app authenticates in a run's later steps, carried in the form:
/// its APP_SECRET, or its private key and `kid`.
#[derive(Default)]
pub struct Credentials {
    pub client_secret: String,
    pub private_key: String,
    pub kid: String,
}

#[derive(Template)]
#[template(path = "playground.html")]
pub struct PlaygroundPage<'a> {
    pub site: Site<'a>,
    pub csrf_token: &'a str,
    pub apps: Vec<AppChoice>,
    pub app: Option<&'a Client>,
    /// The chosen app's allowed scopes, offered ticked.
    pub scopes: Vec<String>,
    /// 1 pick, 2 the authorize request, 3 the redirect back, 4 the token
    /// endpoint and what follows.
    pub step: u8,
    pub redirect_uri: String,
    pub redirect_registered: bool,
    pub authorize_url: String,
    pub exchanges: Vec<Exchange>,
    pub code: String,
    pub run: String,
    pub tokens: Tokens,
    pub credentials: Credentials,
    pub smart: Option<SmartChoices>,
    pub backend: Option<BackendForm>,
    /// The run is a Backend Services request: no person, so no `/me`.
    pub backend_run: bool,
    pub error: Option<String>,
}

impl<'a> PlaygroundPage<'a> {
    fn new(state: &'a AppState, viewer: &'a Viewer, csrf_token: &'a str, step: u8) -> Self {
        Self {
            site: viewer.site(&state.settings),
            csrf_token,
            apps: Vec::new(),
            app: None,
            scopes: Vec::new(),
            step,
            redirect_uri: redirect_uri(state),
            redirect_registered: false,
            authorize_url: String::new(),
            exchanges: Vec::new(),
            code: String::new(),
            run: String::new(),
            tokens: Tokens::default(),
            credentials: Credentials::default(),
            smart: None,
            backend: None,
            backend_run: false,
            error: None,
        }
    }
}

fn redirect_uri(state: &AppState) -> String {
    format!("{}{CALLBACK}", state.issuer)
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn first<'q>(pairs: &'q [(String, String)], name: &str) -> Option<&'q str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

// ------------------------------------------------------------ binding

/// A run's `state`: the app's id, a random nonce, and a MAC over both and
/// the developer, so a run cannot be replayed by, or for, anyone else.
struct Run {
    client_id: String,
    nonce: String,
}

async fn key(state: &AppState) -> Result<Vec<u8>, PageError> {
    crate::services::secrets::instance_key(&state.store, &state.settings)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "instance key unavailable");
            PageError::bad_request(
                "The playground is unavailable: the instance key cannot be read.",
            )
        })
}

impl Run {
    fn start(client_id: &str) -> Self {
        let mut bytes = [0u8; 12];
        random_bytes(&mut bytes);
        Self {
            client_id: client_id.to_owned(),
            nonce: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        }
    }

    fn state(&self, key: &[u8], user_id: &str) -> String {
        let mac = keyed_digest(
            key,
            "playground state",
            &[user_id, &self.client_id, &self.nonce],
        );
        format!("{}~{}~{mac}", self.client_id, self.nonce)
    }

    /// The run a `state` names, if it was made for this developer.
    fn verify(key: &[u8], user_id: &str, state: &str) -> Option<Self> {
        let mut parts = state.split('~');
        let (client_id, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let expected = keyed_digest(key, "playground state", &[user_id, client_id, nonce]);
        constant_time_eq(&expected, mac).then(|| Self {
            client_id: client_id.to_owned(),
            nonce: nonce.to_owned(),
        })
    }

    /// The PKCE verifier of the run whose `state` this is.
    fn verifier(key: &[u8], state: &str) -> String {
        keyed_digest(key, "playground verifier", &[state])
    }
}

fn bad_run() -> PageError {
    PageError::bad_request(
        "This playground run was not started by you (or its state was changed). Start again from the playground.",
    )
}

// ------------------------------------------------------------ HTTP, shown

/// A request as it goes on the wire, with the APP_SECRET hidden.
fn request_text(request: &axum::http::Request<Body>, body: &str, host: &str) -> String {
    let mut out = format!(
        "{} {} HTTP/1.1\nHost: {host}\n",
        request.method(),
        request.uri()
    );
    for (name, value) in request.headers() {
        if name == header::HOST {
            continue;
        }
        let shown = if name == header::AUTHORIZATION
            && value.to_str().is_ok_and(|v| v.starts_with("Basic "))
        {
            "Basic •••••••• (base64 of APP_ID:APP_SECRET, hidden here)".to_owned()
        } else {
            value.to_str().unwrap_or("(binary)").to_owned()
        };
        out.push_str(&format!("{name}: {shown}\n"));
    }
    if !body.is_empty() {
        out.push('\n');
        out.push_str(body);
        out.push('\n');
    }
    out
}

/// Sends a request through this server's own router and returns the
/// exchange as text, with the response's JSON body if it had one.
async fn send(
    state: &AppState,
    title: &'static str,
    method: Method,
    path: &str,
    headers: &[(header::HeaderName, String)],
    body: String,
) -> (Exchange, Option<serde_json::Value>) {
    let host = state.issuer.authority();
    let mut builder = axum::http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = match builder
        .header(header::HOST, &host)
        .body(Body::from(body.clone()))
    {
        Ok(r) => r,
        Err(e) => {
            return (
                Exchange {
                    title,
                    request: format!("(the request could not be built: {e})"),
                    response: String::new(),
                },
                None,
            );
        }
    };
    let shown = request_text(&request, &body, &host);
    let response = match (state.router)(state.clone()).oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let mut text = format!(
        "HTTP/1.1 {} {}\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or_default()
    );
    for (name, value) in &parts.headers {
        text.push_str(&format!(
            "{name}: {}\n",
            value.to_str().unwrap_or("(binary)")
        ));
    }
    text.push('\n');
    match &json {
        Some(v) => text.push_str(&serde_json::to_string_pretty(v).unwrap_or_default()),
        None => text.push_str(&String::from_utf8_lossy(&bytes)),
    }
    (
        Exchange {
            title,
            request: shown,
            response: text,
        },
        json,
    )
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()))
        .finish()
}

/// How the app authenticates at the token and introspection endpoints:
/// its `client_id` alone for a public app, an assertion signed with its
/// private key for an app with keys (`private_key_jwt`, RFC 7523), HTTP
/// Basic otherwise. Returns the headers and the form fields it adds.
#[allow(clippy::type_complexity)]
fn client_auth(
    state: &AppState,
    app: &Client,
    credentials: &Credentials,
) -> Result<
    (
        Vec<(header::HeaderName, String)>,
        Vec<(&'static str, String)>,
    ),
    String,
> {
    let mut headers = vec![
        (
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".to_owned(),
        ),
        (header::ACCEPT, "application/json".to_owned()),
    ];
    if app.is_public() {
        return Ok((headers, vec![("client_id", app.id.clone())]));
    }
    if app.uses_assertions() {
        let jwt = assertion(state, app, credentials)?;
        return Ok((
            headers,
            vec![
                ("client_assertion_type", ASSERTION_TYPE.to_owned()),
                ("client_assertion", jwt),
            ],
        ));
    }
    let basic = STANDARD.encode(format!("{}:{}", app.id, credentials.client_secret));
    headers.push((header::AUTHORIZATION, format!("Basic {basic}")));
    Ok((headers, Vec::new()))
}

/// The app's assertion for this server's token endpoint (RFC 7523 §3, as
/// SMART Backend Services lists its claims), signed with the developer's
/// private key; it lives four minutes and is used once.
fn assertion(state: &AppState, app: &Client, credentials: &Credentials) -> Result<String, String> {
    let key = ClientKey::from_pem(&credentials.private_key)?;
    let now = state.clock.now();
    let mut jti = [0u8; 16];
    random_bytes(&mut jti);
    key.sign(
        credentials.kid.trim(),
        &serde_json::json!({
            "iss": app.id,
            "sub": app.id,
            "aud": format!("{}/oauth/token", state.issuer),
            "iat": now,
            "exp": now + 240,
            "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
        }),
    )
}

/// An assertion shown decoded: its header and claims, then as sent.
fn assertion_exchange(jwt: &str) -> Exchange {
    let decoded = healthgate_core::client_assertion::parse(jwt)
        .map(|p| {
            format!(
                "Header:\n{}\n\nClaims:\n{}\n",
                serde_json::to_string_pretty(&p.header).unwrap_or_default(),
                serde_json::to_string_pretty(&p.claims).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    Exchange {
        title: "The app signs an assertion with its private key",
        request: format!("{decoded}\nCompact, as sent (client_assertion):\n{jwt}\n"),
        response: "healthgate checks it with the public key registered under its kid: the signature, iss = sub = the APP_ID, aud = the token endpoint, exp at most five minutes ahead, and a jti it has never seen (on any node).".to_owned(),
    }
}

impl Credentials {
    /// What a step's form carries.
    fn of(form: &Form) -> Self {
        Self {
            client_secret: form.text("client_secret").unwrap_or_default(),
            private_key: form.text("private_key").unwrap_or_default(),
            kid: form.text("kid").unwrap_or_default(),
        }
    }
}

// ------------------------------------------------------------ steps

/// What the first step shows for the developer's chosen app.
struct StepOne {
    apps: Vec<AppChoice>,
    app: Option<Client>,
    smart: Option<SmartChoices>,
    backend: Option<BackendForm>,
}

/// The developer's apps, the chosen one (`chosen`, else the first), and
/// its SMART and Backend Services choices.
async fn step_one(
    state: &AppState,
    user_id: &str,
    chosen: Option<&str>,
) -> Result<StepOne, PageError> {
    let apps = state.store.clients_of_owner(user_id).await?;
    let app = chosen
        .and_then(|id| apps.iter().find(|a| a.id == id))
        .or(apps.first())
        .cloned();
    let mut smart = None;
    let mut backend = None;
    if let Some(app) = &app {
        let bases = &state.settings.smart.fhir_base_urls;
        if !bases.is_empty() && app.allowed_scopes.iter().any(needs_fhir_server) {
            smart = Some(SmartChoices {
                servers: bases.iter().map(|b| b.as_str().to_owned()).collect(),
                ehr: app.launch_url.is_some() && app.allowed_scopes.contains("launch"),
                patients: state.store.patient_links(user_id).await?,
            });
        }
        if !app.is_public() {
            backend = Some(BackendForm {
                scope: app
                    .allowed_scopes
                    .iter()
                    .filter(|s| s.starts_with("system/"))
                    .collect::<Vec<_>>()
                    .join(" "),
                jwks_uri: app.jwks_uri.clone(),
                has_secret: !app.uses_assertions(),
                ..BackendForm::default()
            });
        }
    }
    let apps = apps
        .iter()
        .map(|a| AppChoice {
            id: a.id.clone(),
            name: a.name.clone(),
            selected: app.as_ref().is_some_and(|c| c.id == a.id),
        })
        .collect();
    Ok(StepOne {
        apps,
        app,
        smart,
        backend,
    })
}

impl<'a> PlaygroundPage<'a> {
    /// The first step, for `one`.
    fn step_one(mut self, one: &'a mut StepOne) -> Self {
        self.apps = std::mem::take(&mut one.apps);
        if let Some(app) = &one.app {
            // `system/` scopes are for client credentials (below), never
            // an authorization request.
            self.scopes = app
                .allowed_scopes
                .iter()
                .filter(|s| !s.starts_with("system/"))
                .map(str::to_owned)
                .collect();
            self.redirect_registered = app
                .redirect_uris
                .iter()
                .any(|u| u.as_str() == self.redirect_uri);
        }
        self.smart = one.smart.take();
        self.backend = one.backend.take();
        let one: &'a StepOne = one;
        self.app = one.app.as_ref();
        self
    }
}

/// `GET /playground`: pick an app and scopes.
pub async fn index(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let pairs = query_pairs(query.as_deref());
    let mut one = step_one(&state, &user.id, first(&pairs, "client_id")).await?;
    let page = PlaygroundPage::new(&state, &viewer, &session.csrf_token, 1).step_one(&mut one);
    Ok(pages::render(StatusCode::OK, &page))
}

/// `GET /playground/authorize?client_id=…&scope=…`: the authorization
/// request, built and explained, with the link that makes it. SMART: the
/// FHIR server (`aud`) when a scope concerns one, and for an EHR launch
/// (`launch_mode=ehr`) the launch the playground makes first, as the
/// platform would, for the developer and one of their own patients.
pub async fn authorize(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    SignedIn { session, user }: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let pairs = query_pairs(query.as_deref());
    let app = owned_app(
        &state,
        &user.id,
        first(&pairs, "client_id").unwrap_or_default(),
    )
    .await?;
    // The ticked scopes the app may ask for, and any typed (a narrower
    // SMART scope, say): the server judges those.
    let mut scopes: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .filter(|s| app.allowed_scopes.contains(s))
        .collect();
    for typed in first(&pairs, "extra_scope")
        .unwrap_or_default()
        .split_whitespace()
    {
        if !scopes.contains(&typed) {
            scopes.push(typed);
        }
    }
    let ehr = state.settings.smart.enabled() && first(&pairs, "launch_mode") == Some("ehr");
    if ehr && !scopes.contains(&"launch") {
        scopes.push("launch");
    }
    let mut page = PlaygroundPage::new(&state, &viewer, &session.csrf_token, 2);
    if scopes.is_empty() {
        return Err(PageError::bad_request(
            "Tick at least one scope the app may ask for.",
        ));
    }
    let bases = &state.settings.smart.fhir_base_urls;
    let aud = (ehr || scopes.iter().any(|s| needs_fhir_server(s))).then(|| {
        let named = first(&pairs, "aud").unwrap_or_default();
        bases
            .iter()
            .map(|b| b.as_str())
            .find(|b| *b == named)
            .or(bases.first().map(|b| b.as_str()))
            .unwrap_or_default()
            .to_owned()
    });
    let host = state.issuer.host();
    let mut launch = None;
    if ehr {
        let patient = first(&pairs, "patient").map(str::to_owned);
        if let Some(p) = &patient {
            let own = state.store.patient_links(&user.id).await?;
            if !own.iter().any(|l| &l.patient_id == p) {
                return Err(PageError::bad_request(
                    "An EHR launch from the playground can put only a patient linked to your own account in context.",
                ));
            }
        }
        let made = create_launch(
            &state.store,
            &state.settings,
            state.clock.now(),
            "playground",
            healthgate_store::Actor::user(&user.id, ip.as_deref()),
            LaunchRequest {
                client_id: app.id.clone(),
                user: Some(user.id.clone()),
                iss: aud.clone(),
                patient: patient.clone(),
                ..LaunchRequest::default()
            },
        )
        .await?;
        let opened = url::Url::parse(&made.launch_url).ok();
        page.exchanges.push(Exchange {
            title: "The EHR opens the app's launch URL",
            request: format!(
                "GET {} HTTP/1.1\nHost: {}\n",
                opened
                    .as_ref()
                    .map(|u| format!("{}?{}", u.path(), u.query().unwrap_or_default()))
                    .unwrap_or_else(|| made.launch_url.clone()),
                opened
                    .as_ref()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            response: format!(
                "The playground made this launch as the platform would (POST /api/v1/smart/launches): for you{}, for {} only, used once, within {} minutes. The app keeps launch and asks iss how to authorize.",
                patient
                    .as_deref()
                    .map(|p| format!(" with Patient/{p} in context"))
                    .unwrap_or_default(),
                app.name,
                healthgate_core::smart::LAUNCH_TTL / 60
            ),
        });
        launch = Some(made.launch);
    }
    if aud.is_some() {
        let (mut exchange, _) = send(
            &state,
            "The app reads the FHIR server's SMART configuration",
            Method::GET,
            "/.well-known/smart-configuration",
            &[(header::ACCEPT, "application/json".to_owned())],
            String::new(),
        )
        .await;
        exchange.request = format!(
            "(the app asks {{iss}}/.well-known/smart-configuration; the FHIR server serves or redirects to healthgate's)\n{}",
            exchange.request
        );
        page.exchanges.push(exchange);
    }
    let key = key(&state).await?;
    let run = Run::start(&app.id);
    let run_state = run.state(&key, &user.id);
    let verifier = CodeVerifier::parse(&Run::verifier(&key, &run_state))
        .map_err(|_| PageError::bad_request("The PKCE verifier could not be made."))?;
    let scope = scopes.join(" ");
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", app.id.as_str()),
        ("redirect_uri", page.redirect_uri.as_str()),
        ("scope", scope.as_str()),
        ("state", run_state.as_str()),
    ];
    if let Some(aud) = &aud {
        params.push(("aud", aud));
    }
    if let Some(launch) = &launch {
        params.push(("launch", launch));
    }
    let challenge = verifier.s256();
    params.push(("code_challenge", &challenge));
    params.push(("code_challenge_method", "S256"));
    if scopes.contains(&"openid") {
        params.push(("nonce", &run.nonce));
    }
    let url = with_query_params(&format!("{}/oauth/authorize", state.issuer), &params);
    page.redirect_registered = app
        .redirect_uris
        .iter()
        .any(|u| u.as_str() == page.redirect_uri);
    let path = url
        .strip_prefix(state.issuer.as_str())
        .unwrap_or(&url)
        .to_owned();
    page.exchanges.push(Exchange {
        title: "The browser asks for authorization",
        request: format!("GET {path} HTTP/1.1\nHost: {host}\nCookie: (the person's session)\n"),
        response: "The person signs in if needed, sees the consent page (a standalone SMART launch asks there which patient) and chooses Allow or Deny; the answer comes back to the redirect URI.".to_owned(),
    });
    page.authorize_url = url;
    page.run = run_state;
    page.app = Some(&app);
    Ok(pages::render(StatusCode::OK, &page))
}

/// `POST /playground/redirect-uri` (`client_id`): registers the
/// playground's redirect URI on the developer's app.
pub async fn add_redirect_uri(
    State(state): State<AppState>,
    ip: crate::http::ip::ClientIp,
    person: SignedIn,
    CsrfForm { form, .. }: CsrfForm<AnyFields>,
) -> Result<Response, PageError> {
    let user_id = person.user.id.clone();
    let app = owned_app(
        &state,
        &user_id,
        &form.text("client_id").unwrap_or_default(),
    )
    .await?;
    let mut uris: Vec<String> = app
        .redirect_uris
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    let ours = redirect_uri(&state);
    if !uris.contains(&ours) {
        uris.push(ours);
    }
    admin::update_client(
        &state.store,
        &state.settings,
        state.clock.as_ref(),
        &app.id,
        ClientChanges {
            redirect_uris: Some(uris),
            ..ClientChanges::default()
        },
        healthgate_store::Actor::user(&user_id, ip.as_deref()),
    )
    .await?;
    let back = with_query_params(HOME, &[("client_id", &app.id)]);
    Ok(Redirect::to(&back).into_response())
}

/// `GET /playground/callback?code=…&state=…&iss=…`: the redirect back, as
/// the browser made it, and the form for the token request.
pub async fn callback(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let pairs = query_pairs(query.as_deref());
    let run_state = first(&pairs, "state").unwrap_or_default().to_owned();
    let key = key(&state).await?;
    let run = Run::verify(&key, &user.id, &run_state).ok_or_else(bad_run)?;
    let app = owned_app(&state, &user.id, &run.client_id).await?;
    let mut page = PlaygroundPage::new(&state, &viewer, &session.csrf_token, 3);
    let host = state.issuer.host();
    let explained = match (first(&pairs, "code"), first(&pairs, "error")) {
        (Some(code), _) => {
            page.code = code.to_owned();
            let iss_ok = first(&pairs, "iss") == Some(state.issuer.as_str());
            format!(
                "The authorization server answered with a code (single use, valid {} minutes).\n\
                 state matches the one this run sent: yes.\n\
                 iss (RFC 9207) is this server: {}.",
                state.settings.authorization_code_ttl.secs() / 60,
                if iss_ok { "yes" } else { "no" }
            )
        }
        (None, Some(error)) => {
            page.error = Some(match first(&pairs, "error_description") {
                Some(d) => format!("{error}: {d}"),
                None => error.to_owned(),
            });
            "The authorization server answered with an error instead of a code.".to_owned()
        }
        (None, None) => "The redirect carries neither a code nor an error.".to_owned(),
    };
    page.exchanges.push(Exchange {
        title: "The browser comes back to the redirect URI",
        request: format!(
            "GET {CALLBACK}?{} HTTP/1.1\nHost: {host}\n",
            query.as_deref().unwrap_or_default()
        ),
        response: explained,
    });
    page.run = run_state;
    page.app = Some(&app);
    Ok(pages::render(StatusCode::OK, &page))
}

/// The run, its app and the APP_SECRET behind a step's form.
async fn step_form(
    state: &AppState,
    person: SignedIn,
    form: Form,
) -> Result<(String, Client, Form, String), PageError> {
    let (session, user_id) = (person.session, person.user.id);
    let run_state = form.text("run").unwrap_or_default();
    let key = key(state).await?;
    let run = Run::verify(&key, &user_id, &run_state).ok_or_else(bad_run)?;
    let app = owned_app(state, &user_id, &run.client_id).await?;
    Ok((session.csrf_token, app, form, run_state))
}

/// Renders the result of a step on `page` (step 4): its exchanges and the
/// next steps, with the run's tokens and credentials carried on.
fn result_page<'a>(
    mut page: PlaygroundPage<'a>,
    app: &'a Client,
    form: &Form,
    run_state: String,
    exchanges: Vec<Exchange>,
    tokens: Tokens,
) -> Response {
    page.exchanges.extend(exchanges);
    page.app = Some(app);
    page.run = run_state;
    page.tokens = tokens;
    page.credentials = Credentials::of(form);
    page.backend_run = page.backend_run || form.text("flow").as_deref() == Some("backend");
    pages::render(StatusCode::OK, &page)
}

/// The tokens a token-endpoint answer carries, else those the run had.
fn tokens_from(json: Option<&serde_json::Value>, form: &Form) -> Tokens {
    let field = |name: &str| {
        json.and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| form.text(name))
            .unwrap_or_default()
    };
    Tokens {
        access_token: field("access_token"),
        refresh_token: field("refresh_token"),
    }
}

/// Sends the app's authenticated POST of `fields` to `path`: the exchanges
/// (the assertion first, when the app signs one) and the JSON answer; or
/// why the app could not authenticate.
async fn client_post(
    state: &AppState,
    app: &Client,
    credentials: &Credentials,
    title: &'static str,
    path: &str,
    mut fields: Vec<(&'static str, String)>,
) -> Result<(Vec<Exchange>, Option<serde_json::Value>), String> {
    let (headers, auth) = client_auth(state, app, credentials)?;
    let mut exchanges = Vec::new();
    if let Some((_, jwt)) = auth.iter().find(|(k, _)| *k == "client_assertion") {
        exchanges.push(assertion_exchange(jwt));
    }
    fields.extend(auth);
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (exchange, json) = send(
        state,
        title,
        Method::POST,
        path,
        &headers,
        form_body(&pairs),
    )
    .await;
    exchanges.push(exchange);
    Ok((exchanges, json))
}

/// A step where the app authenticates and POSTs a form to `path`: the
/// form is `params` (given the step's form and the run's PKCE verifier)
/// plus the app's authentication; a token-endpoint answer's tokens are
/// carried on.
async fn client_step(
    state: &AppState,
    viewer: &Viewer,
    (person, form): (SignedIn, Form),
    title: &'static str,
    path: &str,
    params: impl FnOnce(&Form, &str) -> Vec<(&'static str, String)>,
) -> Result<Response, PageError> {
    let (csrf, app, form, run_state) = step_form(state, person, form).await?;
    let verifier = Run::verifier(&key(state).await?, &run_state);
    let fields = params(&form, &verifier);
    let mut page = PlaygroundPage::new(state, viewer, &csrf, 4);
    let (exchanges, json) =
        match client_post(state, &app, &Credentials::of(&form), title, path, fields).await {
            Ok(sent) => sent,
            Err(why) => {
                page.error = Some(format!("The app could not sign its assertion: {why}"));
                (Vec::new(), None)
            }
        };
    let answer = json.as_ref().filter(|_| path == "/oauth/token");
    let tokens = tokens_from(answer, &form);
    Ok(result_page(page, &app, &form, run_state, exchanges, tokens))
}

/// `POST /playground/token` (`run`, `code`, `client_secret`): exchanges the
/// code at the token endpoint.
pub async fn token(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    CsrfForm { form, .. }: CsrfForm<AnyFields>,
) -> Result<Response, PageError> {
    let redirect = redirect_uri(&state);
    client_step(
        &state,
        &viewer,
        (person, form),
        "The app exchanges the code at the token endpoint",
        "/oauth/token",
        |form, verifier| {
            vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", form.text("code").unwrap_or_default()),
                ("redirect_uri", redirect),
                ("code_verifier", verifier.to_owned()),
            ]
        },
    )
    .await
}

/// `POST /playground/refresh`: a refresh token grant.
pub async fn refresh(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    CsrfForm { form, .. }: CsrfForm<AnyFields>,
) -> Result<Response, PageError> {
    client_step(
        &state,
        &viewer,
        (person, form),
        "The app refreshes its access token",
        "/oauth/token",
        |form, _| {
            vec![
                ("grant_type", "refresh_token".to_owned()),
                (
                    "refresh_token",
                    form.text("refresh_token").unwrap_or_default(),
                ),
            ]
        },
    )
    .await
}

/// `POST /playground/introspect`: RFC 7662 introspection of the access
/// token.
pub async fn introspect(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    CsrfForm { form, .. }: CsrfForm<AnyFields>,
) -> Result<Response, PageError> {
    client_step(
        &state,
        &viewer,
        (person, form),
        "The app asks whether its access token is active",
        "/oauth/introspect",
        |form, _| {
            vec![
                ("token", form.text("access_token").unwrap_or_default()),
                ("token_type_hint", "access_token".to_owned()),
            ]
        },
    )
    .await
}

/// `POST /playground/me`: the access token used at `/api/v1/me`.
pub async fn me(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    CsrfForm { form, .. }: CsrfForm<AnyFields>,
) -> Result<Response, PageError> {
    let (csrf, app, form, run_state) = step_form(&state, person, form).await?;
    let access_token = form.text("access_token").unwrap_or_default();
    let (exchange, _) = send(
        &state,
        "The app calls the API with its access token",
        Method::GET,
        "/api/v1/me",
        &[
            (header::AUTHORIZATION, format!("Bearer {access_token}")),
            (header::ACCEPT, "application/json".to_owned()),
        ],
        String::new(),
    )
    .await;
    let tokens = tokens_from(None, &form);
    Ok(result_page(
        PlaygroundPage::new(&state, &viewer, &csrf, 4),
        &app,
        &form,
        run_state,
        vec![exchange],
        tokens,
    ))
}

/// `POST /playground/keys` (`client_id`): makes a key pair for a
/// confidential app. Its public key joins the app's registered JWK Set
/// (audited like any change of the app; an app that had an APP_SECRET
/// authenticates with its keys from then on); for an app whose keys are
/// fetched from a URL it is only shown, to be added there. The private key
/// is on this page once: healthgate does not keep it.
pub async fn make_keys(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    SignedIn { session, user }: SignedIn,
    CsrfForm { form, .. }: CsrfForm<AnyFields>,
) -> Result<Response, PageError> {
    let app = owned_app(
        &state,
        &user.id,
        &form.text("client_id").unwrap_or_default(),
    )
    .await?;
    if app.is_public() {
        return Err(PageError::bad_request(
            "A public app has no keys: it runs where a private key cannot be kept.",
        ));
    }
    let (key, pem) = ClientKey::generate().map_err(PageError::bad_request)?;
    let mut id = [0u8; 9];
    random_bytes(&mut id);
    let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
    if app.jwks_uri.is_none() {
        let mut set = app
            .jwks
            .as_deref()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
            .filter(|set| set["keys"].is_array())
            .unwrap_or_else(|| serde_json::json!({ "keys": [] }));
        if let Some(keys) = set["keys"].as_array_mut() {
            keys.push(key.public_jwk(&kid));
        }
        admin::update_client(
            &state.store,
            &state.settings,
            state.clock.as_ref(),
            &app.id,
            ClientChanges {
                jwks: Some(Some(set.to_string())),
                ..ClientChanges::default()
            },
            healthgate_store::Actor::user(&user.id, ip.as_deref()),
        )
        .await?;
    }
    let mut one = step_one(&state, &user.id, Some(&app.id)).await?;
    if let Some(backend) = one.backend.as_mut() {
        backend.private_key = pem;
        backend.kid = kid.clone();
        backend.generated = true;
    }
    let mut page = PlaygroundPage::new(&state, &viewer, &session.csrf_token, 1).step_one(&mut one);
    if app.jwks_uri.is_some() {
        page.exchanges.push(Exchange {
            title: "The public key to add to the app's JWK Set",
            request: serde_json::to_string_pretty(&key.public_jwk(&kid)).unwrap_or_default(),
            response: String::new(),
        });
    }
    Ok(pages::render(StatusCode::OK, &page))
}

/// `POST /playground/backend` (`client_id`, `private_key`, `kid`,
/// `scope`): a SMART Backend Services request, client credentials with an
/// assertion signed by the developer's private key.
pub async fn backend(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    CsrfForm { form, .. }: CsrfForm<AnyFields>,
) -> Result<Response, PageError> {
    let app = owned_app(
        &state,
        &user.id,
        &form.text("client_id").unwrap_or_default(),
    )
    .await?;
    let run_state = Run::start(&app.id).state(&key(&state).await?, &user.id);
    let mut page = PlaygroundPage::new(&state, &viewer, &session.csrf_token, 4);
    page.backend_run = true;
    let credentials = Credentials::of(&form);
    let (exchanges, json) = if !app.uses_assertions() {
        page.error = Some(format!(
            "{} has no keys: make a key pair here, or register its public keys in the portal.",
            app.name
        ));
        (Vec::new(), None)
    } else {
        let fields = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("scope", form.text("scope").unwrap_or_default()),
        ];
        match client_post(
            &state,
            &app,
            &credentials,
            "The app asks the token endpoint for a token (client credentials)",
            "/oauth/token",
            fields,
        )
        .await
        {
            Ok(sent) => sent,
            Err(why) => {
                page.error = Some(format!("The app could not sign its assertion: {why}"));
                (Vec::new(), None)
            }
        }
    };
    let tokens = tokens_from(json.as_ref(), &Form::default());
    Ok(result_page(page, &app, &form, run_state, exchanges, tokens))
}

#[cfg(test)]
mod tests {
    use super::Run;

    #[test]
    fn a_run_is_bound_to_its_developer_and_app() {
        let key = b"0123456789abcdef0123456789abcdef";
        let run = Run::start("app-1");
        let state = run.state(key, "usr-a");
        let back = Run::verify(key, "usr-a", &state).expect("verifies");
        assert_eq!(back.client_id, "app-1");
        assert!(
            Run::verify(key, "usr-b", &state).is_none(),
            "another developer"
        );
        assert!(Run::verify(b"another key", "usr-a", &state).is_none());
        let swapped = state.replacen("app-1", "app-2", 1);
        assert!(Run::verify(key, "usr-a", &swapped).is_none(), "another app");
        assert!(Run::verify(key, "usr-a", &format!("{state}~x")).is_none());
        assert!(Run::verify(key, "usr-a", "").is_none());
        let verifier = Run::verifier(key, &state);
        assert_eq!(verifier.len(), 43, "a valid PKCE verifier");
        assert_ne!(
            verifier,
            Run::verifier(key, &Run::start("app-1").state(key, "usr-a"))
        );
    }
}
