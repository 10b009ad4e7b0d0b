//! The one mapping from errors to HTTP: RFC 6749 §5.2 JSON bodies for the
//! endpoints machines call, readable pages for the ones people see. Internal
//! detail goes to the log, tagged with the request id, never into a response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

use healthgate_core::error::{Description, ErrorCode, OAuthError};
use healthgate_store::{GrantError, StoreError};
use serde::Serialize;

/// An error answered as `{"error": …, "error_description": …}`.
#[derive(Debug)]
pub struct JsonError(pub OAuthError);

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
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

impl From<GrantError> for JsonError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::OAuth(e) => Self(e),
            GrantError::Store(e) => e.into(),
        }
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

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.0.code.as_str(),
            error_description: &self.0.description,
        };
        let mut response = (status_of(self.0.code), axum::Json(body)).into_response();
        no_store(&mut response);
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
/// as a sentence for a page.
pub fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with('.') {
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
            AdminError::NoSuchClient(_) => Self {
                status: StatusCode::NOT_FOUND,
                title: "No such app",
                message: "There is no app with this id. It may have been deleted.".into(),
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

#[cfg(test)]
mod descriptions_test;

#[cfg(test)]
mod tests {
    use super::sentence;

    #[test]
    fn rule_messages_read_as_sentences() {
        assert_eq!(
            sentence("password must be at least 8 characters"),
            "Password must be at least 8 characters."
        );
        assert_eq!(sentence("Done."), "Done.");
        assert_eq!(sentence(""), ".");
    }
}
