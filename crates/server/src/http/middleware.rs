//! Layers on every response: security headers (RFC 9700 §4.16, DESIGN.md
//! page rules) and one access-log line per request. The log carries method,
//! path and status, never a query string or header values, because those
//! hold codes, tokens and secrets.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::config::Settings;
use crate::http::error::ErrorPageContent;
use crate::http::pages::{self, ErrorPage, Site};
use crate::state::AppState;

/// The `Content-Security-Policy` of every response. Pages load nothing
/// from anywhere but this server (RFC 9700 §4.2.4), and run no inline
/// script (the one script is `/static/healthgate.js`): app photos are served
/// here (`photos`), never from a partner's address. The one exception is
/// the operator's own logo when `[branding] logo_url` is an https URL: its
/// origin, and no other, may serve images.
pub fn content_security_policy(settings: &Settings) -> HeaderValue {
    let logo = settings
        .branding
        .logo_url
        .as_ref()
        .and_then(|u| u.https_origin())
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:{logo}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    // An origin's ASCII serialisation is always a valid header value.
    HeaderValue::from_str(&csp).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
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

/// Renders the page of a [`PageError`](crate::http::error::PageError) with the
/// platform's name.
pub async fn error_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    match response.extensions().get::<ErrorPageContent>() {
        Some(content) => pages::render(
            response.status(),
            &ErrorPage {
                site: Site::of(&state.settings),
                title: content.title,
                message: &content.message,
            },
        ),
        None => response,
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives each request an id (in a span, so every log line inside carries it,
/// and in the `X-Request-Id` response header) and logs its outcome.
pub async fn access_log(request: Request, next: Next) -> Response {
    let mut id = [0u8; 8];
    healthgate_core::secret::random_bytes(&mut id);
    let request_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", id = %request_id);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let _enter = span.enter();
    tracing::info!(
        %method,
        path = %path,
        status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
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
    }
}
