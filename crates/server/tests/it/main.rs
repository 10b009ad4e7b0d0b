//! The server's integration tests: the real app on a real TCP port, driven
//! over HTTP. Time is moved with the injected clock, never by sleeping.
//!
//! Every test runs on SQLite (a temporary file), and again on PostgreSQL (a
//! schema of its own, dropped afterwards) when `HEALTHGATE_TEST_POSTGRES_URL`
//! is set at build time (see `build.rs`).

// The same test files are compiled once per backend, on purpose.
#![allow(clippy::duplicate_mod)]

/// The test modules, compiled once per backend.
macro_rules! backend_tests {
    ($name:ident, $backend:expr) => {
        #[path = "."]
        mod $name {
            pub use crate::*;

            pub async fn spawn_app() -> TestApp {
                spawn_on($backend, |_| {}).await
            }

            pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
                spawn_on($backend, configure).await
            }

            mod account;
            mod account_pages;
            mod api;
            mod authorize;
            mod backend_services;
            mod console;
            mod directory_review;
            mod dpop;
            mod e2e;
            mod integrations;
            mod metrics;
            mod oidc;
            mod openid_client;
            mod par;
            mod passkeys;
            mod photos;
            mod playground;
            mod portal;
            mod provisioning;
            mod recovery;
            mod refresh;
            mod registration;
            mod roles;
            mod second_factors;
            mod signing_in;
            mod smart;
            mod standards;
            mod step_up;
            mod throttling;
            mod token;
            mod webhooks;
        }
    };
}

backend_tests!(sqlite, Backend::Sqlite);

/// The pages in a real browser, once (on SQLite).
mod browser;
#[cfg(pg_tests)]
backend_tests!(postgres, Backend::Postgres);

#[cfg(not(pg_tests))]
#[test]
fn postgres_backend_not_configured() {
    eprintln!(
        "HEALTHGATE_TEST_POSTGRES_URL was not set when these tests were built: the server tests ran on SQLite only"
    );
}

use std::collections::HashMap;
use std::sync::Arc;

use healthgate_core::client::Client;
use healthgate_core::user::{User, UserType};
pub use healthgate_core::{Clock, ManualClock};
pub use healthgate_server::services::admin::{self, Creator, NewClient, NewUser};
use healthgate_server::services::photos::Photo;
use healthgate_server::{AppState, Settings};
pub use healthgate_store::Actor;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;

pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const REDIRECT: &str = "https://partner.example/callback";
pub const PASSWORD: &str = "correct horse battery";
/// A 1×1 PNG.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\0\0\x01\x01\0\x05\x18\xd8N\0\0\0\0IEND\xaeB`\x82";

/// A running server with its own database and clock.
pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    _pg_schema: Option<PgSchema>,
    _dir: tempfile::TempDir,
}

/// Options for registering a test client.
pub struct ClientSpec {
    pub public: bool,
    pub redirect_uris: Vec<&'static str>,
    pub scope: &'static str,
    pub user_types: Vec<UserType>,
    pub authorization_level: healthgate_core::owner::AuthorizationLevel,
    /// May introspect every token.
    pub resource_server: bool,
    /// Every sign-in that authorizes it must give a second factor.
    pub require_mfa: bool,
    /// May create SMART EHR launches.
    pub smart_launcher: bool,
    /// Where it is opened for a SMART EHR launch.
    pub launch_url: Option<&'static str>,
}

impl Default for ClientSpec {
    fn default() -> Self {
        Self {
            public: false,
            redirect_uris: vec![REDIRECT],
            scope: "profile_read profile_write",
            user_types: vec![],
            authorization_level: Default::default(),
            resource_server: false,
            require_mfa: false,
            smart_launcher: false,
            launch_url: None,
        }
    }
}

/// A registered client and its secret.
pub struct TestClient {
    pub client: Client,
    pub secret: Option<String>,
}

impl TestClient {
    pub fn id(&self) -> &str {
        &self.client.id
    }
}

/// Which database a test app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    #[allow(dead_code)] // only used when built with cfg(pg_tests)
    Postgres,
}

/// A PostgreSQL schema made for one test app, dropped with it.
pub struct PgSchema {
    base_url: String,
    name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.base_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(store) = healthgate_store::Store::connect(&url, Default::default()).await
                {
                    let drop = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                    let _ = store.execute_admin(&drop).await;
                    store.close().await;
                }
            });
        })
        .join();
    }
}

/// A database URL for `backend`, and what must be cleaned up after.
async fn database_for(backend: Backend, dir: &std::path::Path) -> (String, Option<PgSchema>) {
    match backend {
        Backend::Sqlite => (format!("sqlite://{}/healthgate.db", dir.display()), None),
        Backend::Postgres => {
            let base_url = std::env::var("HEALTHGATE_TEST_POSTGRES_URL")
                .expect("HEALTHGATE_TEST_POSTGRES_URL must be set at run time too");
            let name = healthgate_core::secret::new_id("it")
                .to_lowercase()
                .replace('-', "_");
            let admin = healthgate_store::Store::connect(&base_url, Default::default())
                .await
                .expect("postgres");
            admin
                .execute_admin(&format!("CREATE SCHEMA \"{name}\""))
                .await
                .expect("create schema");
            admin.close().await;
            let sep = if base_url.contains('?') { '&' } else { '?' };
            // A transaction a background job left open when the test ended
            // (its runtime is gone) must not hold the schema's locks forever:
            // PostgreSQL ends such a session after two seconds, and the
            // schema can be dropped.
            let url = format!(
                "{base_url}{sep}options=-csearch_path%3D{name}%20-cidle_in_transaction_session_timeout%3D2000"
            );
            (url, Some(PgSchema { base_url, name }))
        }
    }
}

pub async fn spawn_on(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (database_url, pg_schema) = database_for(backend, dir.path()).await;
    let mut settings = Settings {
        bind: addr,
        issuer: Some(healthgate_server::config::Issuer::http(addr)),
        database_url,
        database_max_connections: std::num::NonZeroU32::new(4).unwrap(),
        ..Settings::default()
    };
    configure(&mut settings);
    let clock = Arc::new(ManualClock::starting_now());
    let state = healthgate_server::open(settings, clock.clone())
        .await
        .expect("open");
    let serving = state.clone();
    tokio::spawn(async move {
        healthgate_server::serve(listener, serving, std::future::pending())
            .await
            .expect("serve");
    });
    TestApp {
        base: format!("http://{addr}"),
        state,
        clock,
        _pg_schema: pg_schema,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers a client; like a partner's, it has a photo, which
    /// healthgate keeps and serves itself.
    pub async fn register(&self, spec: ClientSpec) -> TestClient {
        let (mut client, secret) = admin::create_client(
            &self.state.store,
            &self.state.settings,
            self.clock.as_ref(),
            NewClient {
                name: "Partner App".into(),
                redirect_uris: spec.redirect_uris.iter().map(|s| s.to_string()).collect(),
                scope: spec.scope.into(),
                public: spec.public,
                user_types: spec.user_types,
                authorization_level: spec.authorization_level,
                resource_server: spec.resource_server,
                require_mfa: spec.require_mfa,
                smart_launcher: spec.smart_launcher,
                launch_url: spec.launch_url.map(str::to_owned),
                ..Default::default()
            },
            Actor::system(),
        )
        .await
        .expect("register client");
        let photo = Photo::recognise(PNG.to_vec()).expect("a PNG");
        let served = admin::store_photo(
            &self.state.store,
            &self.state.settings,
            self.clock.as_ref(),
            &client.id,
            &photo,
        )
        .await
        .expect("store photo");
        client.photo_url = Some(served);
        TestClient { client, secret }
    }

    /// Changes a client's registration as an operator would.
    pub async fn change_client(&self, id: &str, changes: admin::ClientChanges) {
        admin::update_client(
            &self.state.store,
            &self.state.settings,
            self.clock.as_ref(),
            id,
            changes,
            Actor::system(),
        )
        .await
        .unwrap();
    }

    pub async fn confidential(&self) -> TestClient {
        self.register(ClientSpec::default()).await
    }

    /// A confidential client registered as a resource server: it may
    /// introspect every token.
    pub async fn resource_server(&self) -> TestClient {
        self.register(ClientSpec {
            resource_server: true,
            ..ClientSpec::default()
        })
        .await
    }

    pub async fn user(&self, username: &str, user_type: UserType) -> User {
        admin::create_user(
            &self.state.store,
            self.clock.as_ref(),
            NewUser {
                username: username.into(),
                name: None,
                password: Some(PASSWORD.into()),
                email: Some(format!("{username}@example.org")),
                user_type,
            },
            Creator::By(Actor::system()),
        )
        .await
        .expect("create user")
    }

    /// An HTTP client that does not follow redirects and keeps no cookies.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .expect("client")
    }

    /// A browser: keeps cookies, does not follow redirects.
    pub fn browser(&self) -> Browser {
        Browser {
            base: self.base.clone(),
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .cookie_store(true)
                .build()
                .expect("client"),
        }
    }

    /// A browser already signed in as a new member `username`.
    pub async fn signed_in(&self, username: &str) -> (Browser, User) {
        let user = self.user(username, UserType::Member).await;
        let b = self.browser();
        b.login(username, PASSWORD).await;
        (b, user)
    }

    /// Runs login-free authorize + allow for `client` and returns the code.
    pub async fn code(
        &self,
        browser: &Browser,
        client: &TestClient,
        extra: &[(&str, &str)],
    ) -> String {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", client.id()),
            ("redirect_uri", REDIRECT),
            ("scope", "profile_read"),
            ("state", "s1"),
        ];
        for (k, v) in extra {
            params.retain(|(pk, _)| pk != k);
            params.push((k, v));
        }
        let response = browser.authorize(&params).await;
        let location = if response.status() == StatusCode::OK {
            let page = response.text().await.unwrap();
            let r = browser.consent(&page, "allow").await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            location(&r)
        } else {
            assert_eq!(
                response.status(),
                StatusCode::SEE_OTHER,
                "authorize did not redirect"
            );
            location(&response)
        };
        let q = query_of(&location);
        q.get("code")
            .cloned()
            .unwrap_or_else(|| panic!("no code in {location}"))
    }

    /// POSTs a form to the token endpoint, authenticating with Basic if given.
    pub async fn token(
        &self,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http().post(self.url("/oauth/token")).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let r = req.send().await.expect("token request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Exchanges a code as a confidential client with Basic auth.
    pub async fn exchange(
        &self,
        client: &TestClient,
        code: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ];
        form.extend_from_slice(extra);
        let basic = client.secret.as_deref().map(|s| (client.id(), s));
        if basic.is_none() {
            form.push(("client_id", client.id()));
        }
        self.token(basic, &form).await
    }

    pub async fn refresh(&self, client: &TestClient, refresh_token: &str) -> (StatusCode, Value) {
        let basic = client.secret.as_deref().map(|s| (client.id(), s));
        self.token(
            basic,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// Every event in the audit trail, newest first.
    pub async fn all_events(&self) -> Vec<healthgate_store::StoredEvent> {
        self.state.store.events(None, 100_000).await.unwrap()
    }

    /// The events of one kind, newest first.
    pub async fn events_of(&self, kind: &str) -> Vec<healthgate_store::StoredEvent> {
        let mut events = self.all_events().await;
        events.retain(|e| e.kind == kind);
        events
    }

    /// Introspects `token` as `caller` (RFC 7662, Basic auth); the answer
    /// must be 200.
    pub async fn introspect(&self, caller: &TestClient, token: &str) -> Value {
        let r = self
            .http()
            .post(self.url("/oauth/introspect"))
            .basic_auth(caller.id(), caller.secret.as_deref())
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspection request");
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("introspection answer")
    }

    /// GET /api/v1/me with a bearer token; returns the status.
    pub async fn me(&self, access_token: &str) -> StatusCode {
        self.http()
            .get(self.url("/api/v1/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("me")
            .status()
    }
}

/// A cookie-keeping client acting as a person's browser.
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
}

impl Browser {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
    }

    pub async fn post_form(&self, path: &str, form: &[(String, String)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .expect("POST")
    }

    /// The page a post/redirect/get action leads to: `r` must be its 303,
    /// and the page it names is opened.
    pub async fn follow(&self, r: reqwest::Response) -> reqwest::Response {
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.url());
        let to = location(&r);
        self.get(&to).await
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        let page = self.get("/login").await.text().await.unwrap();
        let csrf = hidden_inputs(&page)
            .remove("csrf_token")
            .expect("csrf_token on login page");
        let form = vec![
            ("username".to_owned(), username.to_owned()),
            ("password".to_owned(), password.to_owned()),
            ("csrf_token".to_owned(), csrf),
        ];
        self.post_form("/login", &form).await
    }

    pub async fn authorize(&self, params: &[(&str, &str)]) -> reqwest::Response {
        let query = serde_urlencoded(params);
        self.get(&format!("/oauth/authorize?{query}")).await
    }

    /// Submits the consent page's form with `decision`.
    pub async fn consent(&self, page: &str, decision: &str) -> reqwest::Response {
        let mut form: Vec<(String, String)> = hidden_input_list(page);
        form.push(("decision".into(), decision.into()));
        self.post_form("/oauth/authorize", &form).await
    }
}

pub fn serde_urlencoded(params: &[(&str, &str)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// Decodes the character references askama writes (named and numeric).
/// A page as a reader sees its text: without the `<wbr>` break
/// opportunities the pages put inside ids, URLs and scopes.
pub fn readable(html: String) -> String {
    html.replace("<wbr>", "")
}

pub fn unescape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find(';').unwrap_or(0);
        let entity = &tail[1..end.max(1)];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) if end > 0 => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            _ => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every `<input type="hidden" name=… value=…>` of a page, in order.
pub fn hidden_input_list(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chunk in page.split("<input type=\"hidden\"").skip(1) {
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            chunk.find(&key).map(|i| {
                let rest = &chunk[i + key.len()..];
                unescape_html(&rest[..rest.find('"').unwrap_or(0)])
            })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

pub fn hidden_inputs(page: &str) -> HashMap<String, String> {
    hidden_input_list(page).into_iter().collect()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(reqwest::header::LOCATION)
        .unwrap_or_else(|| panic!("no Location on {}", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The decoded query parameters of a URL (absolute or a path).
pub fn query_of(u: &str) -> HashMap<String, String> {
    let full = if u.starts_with('/') {
        format!("http://x{u}")
    } else {
        u.to_owned()
    };
    url::Url::parse(&full)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A full code-to-tokens run for a new user: returns (access, refresh).
pub async fn tokens_for(app: &TestApp, client: &TestClient, username: &str) -> (String, String) {
    let (browser, _) = app.signed_in(username).await;
    let code = app.code(&browser, client, &[]).await;
    let (status, body) = app.exchange(client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Polls every future together until all are done; outputs in input order.
pub async fn join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, f) in out.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future finished"))
        .collect()
}
