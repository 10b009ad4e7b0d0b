//! Client authentication at the token endpoint (RFC 6749 §2.3): HTTP Basic
//! (`client_secret_basic`, as HealthTap requires), `client_id` and
//! `client_secret` in the body (`client_secret_post`), or, for public clients,
//! `client_id` alone (PKCE then carries the proof).

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use healthgate_core::client::Client;
use healthgate_core::error::OAuthError;

use crate::error::JsonError;
use crate::oauth::params::Params;
use crate::state::AppState;

/// What the client presented.
#[derive(Debug, PartialEq, Eq)]
struct Presented {
    client_id: String,
    secret: Option<String>,
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(OAuthError::invalid_client("malformed Authorization header"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "use HTTP Basic authentication for the client",
        ));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before encoding.
    let unescape = |s: &str| -> Result<String, OAuthError> {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))
    };
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

fn presented(headers: &HeaderMap, params: &Params) -> Result<Presented, OAuthError> {
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    match basic_credentials(headers)? {
        Some((id, secret)) => {
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "authenticate the client one way only: Basic or client_secret, not both",
                ));
            }
            if body_id.is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_client(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            Ok(Presented {
                client_id: id,
                secret: Some(secret),
            })
        }
        None => match body_id {
            Some(id) => Ok(Presented {
                client_id: id.to_owned(),
                secret: body_secret.map(str::to_owned),
            }),
            None => Err(OAuthError::invalid_client(
                "client authentication is required",
            )),
        },
    }
}

/// Every endpoint where an app acts authenticates it here, so this is where
/// a suspended app is stopped: it proved who it is, and is told why it may
/// do nothing (RFC 6749 §5.2 `invalid_client`).
fn unless_suspended(client: Client) -> Result<Client, JsonError> {
    match client.suspended_at {
        None => Ok(client),
        Some(_) => Err(JsonError(OAuthError::invalid_client(
            "the client is suspended by the platform's operators",
        ))),
    }
}

/// Authenticates a partner calling the integration APIs: HTTP Basic with its
/// client id and secret, or `Authorization: Bearer <client_secret>` (Hint's
/// partner-level key). Only confidential clients have a secret to present.
pub async fn authenticate_partner(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Client, JsonError> {
    let failed = || JsonError(OAuthError::invalid_client("partner authentication failed"));
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim().to_owned());
    if let Some(secret) = bearer {
        return state
            .store
            .client_by_secret_digest(&healthgate_core::secret::digest(&secret))
            .await?
            .ok_or_else(failed)
            .and_then(unless_suspended);
    }
    let Some((id, secret)) = basic_credentials(headers)? else {
        return Err(JsonError(OAuthError::invalid_client(
            "authenticate with HTTP Basic (client id and secret) or Authorization: Bearer <client secret>",
        )));
    };
    match state.store.client(&id).await? {
        Some(client) if client.secret_matches(&secret) => unless_suspended(client),
        _ => Err(failed()),
    }
}

/// Authenticates the client of a token request. Every failure is
/// `invalid_client` (401) without saying whether the client exists; a
/// suspended client that authenticates is told it is suspended.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Client, JsonError> {
    let p = presented(headers, params)?;
    let client = state.store.client(&p.client_id).await?;
    let failed = || JsonError(OAuthError::invalid_client("client authentication failed"));
    let Some(client) = client else {
        return Err(failed());
    };
    match (&p.secret, client.is_public()) {
        (Some(secret), false) if client.secret_matches(secret) => unless_suspended(client),
        (None, true) => unless_suspended(client),
        _ => Err(failed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(id: &str, secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        h
    }

    #[test]
    fn basic_with_matching_body_client_id_is_fine() {
        // HealthTap sends Basic and repeats client_id in the body.
        let params = Params::from_form(b"client_id=app-1").unwrap();
        let p = presented(&basic("app-1", "s3cret"), &params).unwrap();
        assert_eq!(
            p,
            Presented {
                client_id: "app-1".into(),
                secret: Some("s3cret".into())
            }
        );
    }

    #[test]
    fn two_methods_or_mismatched_ids_are_refused() {
        let both = Params::from_form(b"client_id=app-1&client_secret=x").unwrap();
        assert!(presented(&basic("app-1", "s"), &both).is_err());
        let other = Params::from_form(b"client_id=app-2").unwrap();
        assert!(presented(&basic("app-1", "s"), &other).is_err());
        assert!(presented(&HeaderMap::new(), &Params::default()).is_err());
    }

    #[test]
    fn basic_parts_are_form_decoded() {
        let p = presented(&basic("app%3A1", "a%2Bb+c"), &Params::default()).unwrap();
        assert_eq!(p.client_id, "app:1");
        assert_eq!(p.secret.as_deref(), Some("a+b c"));
    }

    #[test]
    fn post_credentials() {
        let params = Params::from_form(b"client_id=app-1&client_secret=s").unwrap();
        let p = presented(&HeaderMap::new(), &params).unwrap();
        assert_eq!(p.secret.as_deref(), Some("s"));
    }
}
