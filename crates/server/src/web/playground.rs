//! The OAuth playground (`/playground`): a developer picks one of their apps
//! and its scopes and walks through the authorization code flow step by
//! step — the authorize URL, the redirect with its code, the token request
//! and response, a refresh, an introspection and a call to `/api/v1/me` —
//! each step showing the exact HTTP exchanged.
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
use healthgate_core::pkce::CodeVerifier;
use healthgate_core::redirect::with_query_params;
use healthgate_core::secret::{constant_time_eq, keyed_digest, random_bytes};
use tower::ServiceExt;

use crate::http::error::PageError;
use crate::http::extract::{AnyFields, CsrfForm, SignedIn, Viewer};
use crate::http::forms::Form;
use crate::http::pages::{self, Site};
use crate::http::routes::Routes;
use crate::services::admin::{self, ClientChanges};
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
    pub client_secret: String,
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
            client_secret: String::new(),
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

/// How the app authenticates at the token, refresh and introspection
/// endpoints: HTTP Basic for a confidential app, `client_id` in the body
/// for a public one.
fn client_auth(app: &Client, secret: &str) -> (Vec<(header::HeaderName, String)>, Option<String>) {
    let mut headers = vec![
        (
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".to_owned(),
        ),
        (header::ACCEPT, "application/json".to_owned()),
    ];
    if app.is_public() {
        (headers, Some(app.id.clone()))
    } else {
        let basic = STANDARD.encode(format!("{}:{secret}", app.id));
        headers.push((header::AUTHORIZATION, format!("Basic {basic}")));
        (headers, None)
    }
}

// ------------------------------------------------------------ steps

/// `GET /playground`: pick an app and scopes.
pub async fn index(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let pairs = query_pairs(query.as_deref());
    let apps = state.store.clients_of_owner(&user.id).await?;
    let chosen = first(&pairs, "client_id")
        .and_then(|id| apps.iter().find(|a| a.id == id))
        .or(apps.first())
        .cloned();
    let mut page = PlaygroundPage::new(&state, &viewer, &session.csrf_token, 1);
    page.apps = apps
        .iter()
        .map(|a| AppChoice {
            id: a.id.clone(),
            name: a.name.clone(),
            selected: chosen.as_ref().is_some_and(|c| c.id == a.id),
        })
        .collect();
    if let Some(app) = &chosen {
        page.scopes = app.allowed_scopes.iter().map(str::to_owned).collect();
        page.redirect_registered = app
            .redirect_uris
            .iter()
            .any(|u| u.as_str() == page.redirect_uri);
    }
    page.app = chosen.as_ref();
    Ok(pages::render(StatusCode::OK, &page))
}

/// `GET /playground/authorize?client_id=…&scope=…`: the authorization
/// request, built and explained, with the link that makes it.
pub async fn authorize(
    State(state): State<AppState>,
    viewer: Viewer,
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
    let scopes: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .filter(|s| app.allowed_scopes.contains(s))
        .collect();
    let mut page = PlaygroundPage::new(&state, &viewer, &session.csrf_token, 2);
    if scopes.is_empty() {
        return Err(PageError::bad_request(
            "Tick at least one scope the app may ask for.",
        ));
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
    let host = state.issuer.host();
    page.exchanges.push(Exchange {
        title: "The browser asks for authorization",
        request: format!("GET {path} HTTP/1.1\nHost: {host}\nCookie: (the person's session)\n"),
        response: "The person signs in if needed, sees the consent page and chooses Allow or Deny; the answer comes back to the redirect URI.".to_owned(),
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

/// Renders the result of a step on `page` (step 4): its exchange and the
/// next steps.
fn result_page<'a>(
    mut page: PlaygroundPage<'a>,
    app: &'a Client,
    form: &Form,
    run_state: String,
    exchange: Exchange,
    tokens: Tokens,
) -> Response {
    page.exchanges.push(exchange);
    page.app = Some(app);
    page.run = run_state;
    page.tokens = tokens;
    page.client_secret = form.text("client_secret").unwrap_or_default();
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
    let secret = form.text("client_secret").unwrap_or_default();
    let (headers, client_id) = client_auth(&app, &secret);
    let mut fields = params(&form, &verifier);
    fields.push(("client_id", client_id.unwrap_or_default()));
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
    let answer = json.as_ref().filter(|_| path == "/oauth/token");
    let tokens = tokens_from(answer, &form);
    Ok(result_page(
        PlaygroundPage::new(state, viewer, &csrf, 4),
        &app,
        &form,
        run_state,
        exchange,
        tokens,
    ))
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
        exchange,
        tokens,
    ))
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
