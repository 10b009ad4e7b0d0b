//! The one mapping from errors to HTTP: RFC 6749 §5.2 JSON bodies for the
//! endpoints machines call, readable pages for the ones people see. Internal
//! detail goes to the log, tagged with the request id, never into a response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

use healthgate_core::error::{Description, ErrorCode, OAuthError};
use healthgate_store::StoreError;
use serde::Serialize;

/// An error answered as `{"error": …, "error_description": …}`.
#[derive(Debug)]
pub struct JsonError(pub OAuthError);

/// The body of every JSON error (RFC 6749 §5.2, RFC 6750 §3, RFC 7591
/// §3.2.2): a code from the RFCs (or `not_found`, `conflict`, `forbidden`,
/// `method_not_allowed`, `too_many_requests`) and a sentence for the
/// developer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// The error code, e.g. `invalid_request`, `invalid_client`,
    /// `invalid_grant`, `invalid_token`, `not_found`.
    pub error: &'a str,
    /// What went wrong, in words for the developer (never a secret).
    pub error_description: &'a str,
}

impl From<OAuthError> for JsonError {
    fn from(e: OAuthError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for JsonError {
    fn from(e: StoreError) -> Self {
        Self(store_failure(&e))
    }
}

/// Logs a storage failure and says what the client is told instead.
pub fn store_failure(e: &StoreError) -> OAuthError {
    tracing::error!(error = %e, "storage failure");
    match e {
        StoreError::Database(_) => OAuthError::temporarily_unavailable(),
        _ => OAuthError::server_error(),
    }
}

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, required on every token
/// response (RFC 6749 §5.1) and used on every error beside them.
pub fn no_store(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `Retry-After: secs` (RFC 9110 §10.2.3), at least one second.
pub fn retry_after(response: &mut Response, secs: i64) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.0.code.as_str(),
            error_description: &self.0.description,
        };
        let mut response = (status_of(self.0.code), axum::Json(body)).into_response();
        no_store(&mut response);
        if let Some(wait) = self.0.retry_after {
            retry_after(&mut response, wait);
        }
        match self.0.code {
            ErrorCode::InvalidClient => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"healthgate\""),
                );
            }
            ErrorCode::InvalidToken | ErrorCode::InsufficientScope => {
                let value = format!(
                    "Bearer realm=\"healthgate\", error=\"{}\", error_description=\"{}\"",
                    self.0.code.as_str(),
                    // Inside the RFC's alphabet, so safe in a quoted-string.
                    self.0.description
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        response
    }
}

/// An error of the JSON APIs partners call: an RFC 6749/6750 error, or a
/// plain HTTP outcome (404, 409) with the same `{error, error_description}`
/// body.
#[derive(Debug)]
pub enum ApiError {
    OAuth(OAuthError),
    Status(StatusCode, &'static str, Description),
}

impl ApiError {
    pub fn not_found(what: &str) -> Self {
        Self::Status(
            StatusCode::NOT_FOUND,
            "not_found",
            Description::new(format!("no such {what}")),
        )
    }

    pub fn conflict(description: impl Into<Cow<'static, str>>) -> Self {
        Self::Status(
            StatusCode::CONFLICT,
            "conflict",
            Description::new(description),
        )
    }

    pub fn forbidden(description: impl Into<Cow<'static, str>>) -> Self {
        Self::Status(
            StatusCode::FORBIDDEN,
            "forbidden",
            Description::new(description),
        )
    }
}

impl<E: Into<JsonError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self::OAuth(e.into().0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::OAuth(e) => JsonError(e).into_response(),
            Self::Status(status, error, description) => {
                let body = ErrorBody {
                    error,
                    error_description: &description,
                };
                let mut response = (status, axum::Json(body)).into_response();
                no_store(&mut response);
                response
            }
        }
    }
}

/// A rule's message (`email must be …`, written for the command line too)
/// as a sentence for a page: a plain first word gets its capital and the
/// sentence its full stop. A message that starts with what someone typed or
/// a name from the protocol (`http://acme.example/cb: …`, `/cb`,
/// `client_id …`, `"x@y" is not …`, `APP_SECRET`, `iOS`) keeps its first
/// word exactly as it is.
pub fn sentence(message: &str) -> String {
    let message = message.trim();
    if message.is_empty() {
        return String::new();
    }
    let first_word = message
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches([',', ';', ':', '!', '?']);
    let mut chars = first_word.chars();
    let plain = chars.next().is_some_and(|c| c.is_lowercase())
        && chars.all(|c| c.is_lowercase() || c == '-' || c == '\'');
    let mut out = if plain {
        let mut chars = message.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    } else {
        message.to_owned()
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// An error shown to a person as a page.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PageError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "This request cannot be completed",
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            title: "Request refused",
            message: message.into(),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        let oauth = store_failure(&e);
        Self {
            status: status_of(oauth.code),
            title: "Temporarily unavailable",
            message: "The service could not complete your request. Please try again in a moment."
                .into(),
        }
    }
}

impl From<crate::services::admin::AdminError> for PageError {
    fn from(e: crate::services::admin::AdminError) -> Self {
        use crate::services::admin::AdminError;
        match e {
            AdminError::Store(e) => e.into(),
            AdminError::Invalid(message) | AdminError::Field { message, .. } => {
                Self::bad_request(sentence(&message))
            }
            AdminError::Fields(refusals) => Self::bad_request(
                refusals
                    .iter()
                    .map(|(_, message)| sentence(message))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            AdminError::NoSuchClient(_) => Self {
                status: StatusCode::NOT_FOUND,
                title: "No such app",
                message: "There is no app with this id. It may have been deleted.".into(),
            },
            AdminError::Listing(e) => Self {
                status: StatusCode::CONFLICT,
                title: "Not possible now",
                message: sentence(&e.to_string()),
            },
            AdminError::Hash(e) => {
                tracing::error!(error = %e, "password hashing failed");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    title: "Temporarily unavailable",
                    message:
                        "The service could not complete your request. Please try again in a moment."
                            .into(),
                }
            }
        }
    }
}

/// What an error page says; the `error_pages` middleware renders it with
/// the deployment's branding, which a bare `IntoResponse` cannot reach.
#[derive(Debug, Clone)]
pub struct ErrorPageContent {
    pub title: &'static str,
    pub message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(ErrorPageContent {
            title: self.title,
            message: self.message,
        });
        response
    }
}

/// Whether `path` is one machines call (the OAuth endpoints, the APIs, the
/// discovery documents, and a profile's extra token, revocation and user
/// paths): what goes wrong there is answered in JSON, never with a page.
pub fn machine_path(settings: &crate::config::Settings, path: &str) -> bool {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if settings
        .profile
        .authorize_paths
        .iter()
        .any(|p| p.as_str() == path)
    {
        return false;
    }
    under("/api")
        || under("/oauth")
        || under("/.well-known")
        || [
            &settings.profile.token_paths,
            &settings.profile.revoke_paths,
            &settings.profile.user_paths,
        ]
        .into_iter()
        .flatten()
        .any(|p| p.as_str() == path)
}

/// The answer to a path no route serves: `404 {"error": "not_found", …}`
/// where machines call, the "Page not found" page elsewhere.
pub async fn no_route(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    uri: axum::http::Uri,
) -> Response {
    if machine_path(&state.settings, uri.path()) {
        return ApiError::Status(
            StatusCode::NOT_FOUND,
            "not_found",
            Description::new(
                "there is no endpoint at this address; the endpoints are listed at /.well-known/openid-configuration",
            ),
        )
        .into_response();
    }
    PageError {
        status: StatusCode::NOT_FOUND,
        title: "Page not found",
        message: "There is nothing at this address.".into(),
    }
    .into_response()
}

/// The answer to a method a served path does not take (the router adds the
/// `Allow` header): `405 {"error": "method_not_allowed", …}` where machines
/// call, a page elsewhere.
pub async fn wrong_method(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    if machine_path(&state.settings, uri.path()) {
        return ApiError::Status(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Description::new(format!(
                "this endpoint does not accept {method} requests; the Allow header lists the methods it does"
            )),
        )
        .into_response();
    }
    PageError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        title: "Request not accepted",
        message: format!("This address does not accept a {method} request."),
    }
    .into_response()
}

#[cfg(test)]
mod descriptions_test;

#[cfg(test)]
mod tests {
    use super::sentence;

    #[test]
    fn rule_messages_read_as_sentences() {
        let cases = [
            // A plain first word gets its capital, the sentence its stop.
            (
                "password must be at least 8 characters",
                "Password must be at least 8 characters.",
            ),
            (
                "the name must be 1 to 200 characters",
                "The name must be 1 to 200 characters.",
            ),
            ("note: the app is suspended", "Note: the app is suspended."),
            ("sign-up is closed", "Sign-up is closed."),
            ("Done.", "Done."),
            ("Are you sure?", "Are you sure?"),
            ("  trimmed  ", "Trimmed."),
            ("", ""),
            // What someone typed, or a name from the protocol, stays as it is.
            (
                "http://acme.example/cb: redirect URIs must use https",
                "http://acme.example/cb: redirect URIs must use https.",
            ),
            (
                "https://acme.example/cb#x: no fragments",
                "https://acme.example/cb#x: no fragments.",
            ),
            (
                "com.example.app:/cb is taken",
                "com.example.app:/cb is taken.",
            ),
            ("/callback is not absolute", "/callback is not absolute."),
            ("client_id is required", "client_id is required."),
            ("example.org is not allowed", "example.org is not allowed."),
            (
                "\"x@\" is not an email address",
                "\"x@\" is not an email address.",
            ),
            ("2fa is required", "2fa is required."),
            ("v1 signatures only", "v1 signatures only."),
            (
                "iOS apps need a private-use scheme",
                "iOS apps need a private-use scheme.",
            ),
            ("APP_SECRET was rotated", "APP_SECRET was rotated."),
            ("URLs must be absolute", "URLs must be absolute."),
            ("élan is kept", "Élan is kept."),
        ];
        for (message, shown) in cases {
            assert_eq!(sentence(message), shown, "{message:?}");
        }
    }
}
