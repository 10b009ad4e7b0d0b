//! Layers on every response: security headers (RFC 9700 §4.16, DESIGN.md
//! page rules), error pages, and one access-log line per request. The log
//! carries method, path, status and the request id, never a query string or
//! header values, because those hold codes, tokens and secrets. The same id
//! is in the `X-Request-Id` header of every response and on every error
//! page, so a person can quote what the operator finds in the log.

use std::time::Instant;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::config::Settings;
use crate::http::error::ErrorPageContent;
use crate::http::ip::AddressRule;
use crate::http::pages::{self, ErrorPage, Site};
use crate::metrics::Metrics;
use crate::state::AppState;

/// The `Content-Security-Policy` of every response. Pages load nothing
/// from anywhere but this server (RFC 9700 §4.2.4), and run no inline
/// script (the one script is `/static/healthgate.js`): app photos are served
/// here (`photos`), never from a partner's address. The one exception is
/// the operator's own logo when `[branding] logo_url` is an https URL: its
/// origin, and no other, may serve images. The passkey script
/// (`/static/passkeys.js`) asks this server, and no other, for a
/// ceremony's options (`connect-src 'self'`).
pub fn content_security_policy(settings: &Settings) -> HeaderValue {
    let logo = settings
        .branding
        .logo_url
        .as_ref()
        .and_then(|u| u.https_origin())
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:{logo}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    // An origin's ASCII serialisation is always a valid header value.
    HeaderValue::from_str(&csp).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'",
        )
    })
}

/// Security headers on every response; `csp` is [`content_security_policy`]
/// of the settings, made once.
pub async fn security_headers(
    State(csp): State<HeaderValue>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it browsers send `Origin: null` with a
    // same-site form POST, and the CSRF origin check would refuse every form.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// What an error page suggests next, by what went wrong: never "return to
/// the app" unless an app sent the person here (`from_app`).
pub fn next_step(status: StatusCode, from_app: bool) -> &'static str {
    match status.as_u16() {
        400 if from_app => {
            "The app that sent you here made a request this platform cannot complete. Go back to the app and try again; if this keeps happening, tell the app's developer."
        }
        400 | 422 => "Check what you entered and try again.",
        401 => "Sign in, then try again.",
        403 => "If you think you should be able to do this, ask the platform's operator.",
        404 | 410 => "Check the address for typing mistakes, or start again from the home page.",
        405 => "Start again from the home page and follow the links from there.",
        409 => "Someone may have changed this in the meantime. Reload the page and try again.",
        413 => "Send less at once and try again.",
        429 => "Too many attempts in a short time. Wait a moment, then try again.",
        500..=599 => {
            "This is a problem on our side, not something you did. Please try again in a moment."
        }
        _ => "Start again from the home page.",
    }
}

/// Whether `path` is one an app sends people to: the authorization
/// endpoint, under its standard path or a profile's.
fn sent_by_an_app(settings: &Settings, path: &str) -> bool {
    path == "/oauth/authorize"
        || settings
            .profile
            .authorize_paths
            .iter()
            .any(|p| p.as_str() == path)
}

/// Renders the page of a [`PageError`](crate::http::error::PageError) with
/// the platform's name, wording that fits its status, the request id and a
/// way home. Headers the handler set (`Retry-After`, cookies) are kept.
pub async fn error_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let request_id = request.extensions().get::<RequestId>().cloned();
    let from_app = sent_by_an_app(&state.settings, request.uri().path());
    let response = next.run(request).await;
    let Some(content) = response.extensions().get::<ErrorPageContent>() else {
        return response;
    };
    let status = response.status();
    let mut page = pages::render(
        status,
        &ErrorPage {
            site: Site::of(&state.settings),
            status: status.as_u16(),
            title: content.title,
            message: &content.message,
            next_step: next_step(status, from_app),
            request_id: request_id.as_ref().map_or("", |id| id.0.as_str()),
        },
    );
    for (name, value) in response.headers() {
        if !page.headers().contains_key(name) && name != header::CONTENT_LENGTH {
            page.headers_mut().append(name.clone(), value.clone());
        }
    }
    page
}

/// The per-address rate of the endpoints machines call (every
/// [`machine_path`](crate::http::error::machine_path) but the
/// authorization endpoint, which is a page): past it, 429 with
/// `Retry-After` before the handler runs. Sign-in has its own rate, in its
/// handler.
pub async fn address_rate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if state.throttles.limits.api_rate.is_some()
        && path != "/oauth/authorize"
        && crate::http::error::machine_path(&state.settings, path)
    {
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|axum::extract::ConnectInfo(addr)| addr.ip());
        let ip = crate::http::ip::address(&state, peer, request.headers());
        if let Err(wait) = state.throttles.take(
            healthgate_core::throttle::Purpose::Api,
            ip,
            state.clock.now_millis(),
        ) {
            return crate::http::error::JsonError(
                healthgate_core::error::OAuthError::too_many_requests(
                    wait,
                    "too many requests from this address; wait, then try again",
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id [`access_log`] gives a request: in its log lines, its
/// `X-Request-Id` response header and its error page (a request extension,
/// for the layers and handlers inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

tokio::task_local! {
    /// The client a request turned out to be from, for its access-log line
    /// ([`note_client`]).
    static CLIENT: std::cell::RefCell<Option<String>>;
}

/// Notes that the request being answered is from the app `client_id` (one
/// found in the database: never a name a caller merely wrote), for the
/// request's access-log line. Outside a request it does nothing.
pub fn note_client(client_id: &str) {
    let _ = CLIENT.try_with(|c| *c.borrow_mut() = Some(client_id.to_owned()));
}

/// What the access log needs, without the state: the forwarded-address
/// rule and the metrics it counts requests in.
#[derive(Debug, Clone)]
pub struct AccessLog {
    pub rule: AddressRule,
    pub metrics: Metrics,
}

impl AccessLog {
    pub fn of(state: &AppState) -> Self {
        Self {
            rule: AddressRule::of(&state.settings),
            metrics: state.metrics.clone(),
        }
    }
}

/// Gives each request an id (in a span, so every log line inside carries it,
/// in the `X-Request-Id` response header, and as a [`RequestId`] extension
/// for the error pages) and logs its outcome: method, route template, path,
/// status, latency in microseconds, the client's address (by the one
/// forwarded-address rule) and the app it is from when that is known. Never
/// the query string or a header's value.
pub async fn access_log(
    State(log): State<AccessLog>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut id = [0u8; 8];
    healthgate_core::secret::random_bytes(&mut id);
    let request_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let client_ip = log.rule.address(peer, request.headers());
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = Instant::now();
    let (mut response, client_id) = CLIENT
        .scope(
            std::cell::RefCell::new(None),
            async {
                let response = next.run(request).await;
                (response, CLIENT.with(|c| c.take()))
            }
            .instrument(span.clone()),
        )
        .await;
    let took = started.elapsed();
    let latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let status = response.status().as_u16();
    let route = route.as_ref().map(MatchedPath::as_str);
    log.metrics.request(&method, route, status, took);
    let _enter = span.enter();
    tracing::info!(
        %method,
        route,
        %path,
        status,
        latency_us,
        client_ip = client_ip.map(tracing::field::display),
        client_id = client_id.as_deref(),
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_request_id_is_in_the_log_line_the_header_and_the_handlers_reach() {
        use tower::ServiceExt;
        let captured = Captured::default();
        let writer = captured.clone();
        let metrics = Metrics::new(None);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = axum::Router::new()
            .route(
                "/missing",
                axum::routing::get(|id: axum::Extension<RequestId>| async move {
                    (StatusCode::NOT_FOUND, id.0.0)
                }),
            )
            .route(
                "/apps/{id}",
                axum::routing::get(|| async {
                    note_client("app-1");
                    StatusCode::NO_CONTENT
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                AccessLog {
                    rule: AddressRule::of(&Settings::default()),
                    metrics: metrics.clone(),
                },
                access_log,
            ));
        let request = |uri: &str| {
            let mut request = Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
            request
        };
        let response = app
            .clone()
            .oneshot(request("/missing?code=secret"))
            .await
            .unwrap();
        app.oneshot(request("/apps/app-1")).await.unwrap();
        let header = response.headers()[&REQUEST_ID].to_str().unwrap().to_owned();
        assert_eq!(header.len(), 16, "{header}");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), header);
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["fields"]["message"] == "request")
            .collect();
        let [line, other] = &lines[..] else {
            panic!("want two access log lines in {log}");
        };
        assert_eq!(line["span"]["request_id"], header.as_str(), "{line}");
        let fields = &line["fields"];
        assert_eq!(fields["status"], 404, "{line}");
        assert_eq!(fields["path"], "/missing", "{line}");
        assert_eq!(fields["route"], "/missing", "{line}");
        assert_eq!(fields["method"], "GET", "{line}");
        assert_eq!(fields["client_ip"], "192.0.2.7", "{line}");
        assert!(fields["latency_us"].is_u64(), "{line}");
        assert!(fields.get("client_id").is_none(), "{line}");
        assert!(!log.contains("secret"), "{log}");
        // The template, not the path, and the app the handler noted.
        assert_eq!(other["fields"]["route"], "/apps/{id}", "{other}");
        assert_eq!(other["fields"]["path"], "/apps/app-1", "{other}");
        assert_eq!(other["fields"]["client_id"], "app-1", "{other}");
        // Both counted, by template.
        let text = metrics.render(false);
        for line in [
            "healthgate_http_requests_total{method=\"GET\",route=\"/missing\",status=\"404\"} 1",
            "healthgate_http_requests_total{method=\"GET\",route=\"/apps/{id}\",status=\"204\"} 1",
            "healthgate_http_request_duration_seconds_count{method=\"GET\",route=\"/apps/{id}\"} 1",
        ] {
            assert!(text.contains(line), "want {line} in\n{text}");
        }
    }

    #[test]
    fn error_pages_word_their_next_step_by_status() {
        let step = |status: u16, from_app| {
            next_step(StatusCode::from_u16(status).unwrap(), from_app).to_lowercase()
        };
        for status in [400, 401, 403, 404, 405, 409, 413, 429, 500, 503] {
            assert!(!step(status, false).contains("app"), "{status}");
        }
        assert!(step(400, true).contains("go back to the app"));
        assert!(step(404, false).contains("home page"));
        assert!(step(404, true).contains("home page"));
        for status in [500, 503] {
            assert!(
                step(status, false).contains("try again in a moment"),
                "{status}"
            );
        }
        assert!(step(429, false).contains("wait a moment"));
    }

    #[test]
    fn pages_load_images_from_this_server_and_the_operators_logo_only() {
        let csp = |logo: Option<&str>| {
            let mut s = Settings::default();
            s.branding.logo_url = logo.map(|l| l.parse().unwrap());
            content_security_policy(&s).to_str().unwrap().to_owned()
        };
        for logo in [None, Some("/static/logo.svg")] {
            let policy = csp(logo);
            assert!(policy.contains("img-src 'self' data:;"), "{policy}");
            assert!(!policy.contains("https:"), "{policy}");
        }
        let policy = csp(Some("https://cdn.example.org:8443/brand/logo.png"));
        assert!(
            policy.contains("img-src 'self' data: https://cdn.example.org:8443;"),
            "{policy}"
        );
        assert!(!policy.contains("https: "), "{policy}");
        // Scripts from this server only, never inline.
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        // The passkey script fetches from this server only.
        assert!(policy.contains("connect-src 'self';"), "{policy}");
    }
}
