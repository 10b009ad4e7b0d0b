//! Access tokens at a resource: bearer tokens (RFC 6750) and DPoP-bound
//! ones (RFC 9449 §7): the token from the `Authorization` header, live and
//! carrying the scope asked for, a bound token only with a proof by its key
//! (and never as a bearer token), and the person it speaks for while their
//! account is active. `/api/v1/me` and OpenID Connect UserInfo use it.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use healthgate_core::error::{ErrorCode, OAuthError};
use healthgate_core::secret;
use healthgate_core::token::AccessToken;
use healthgate_core::user::User;

use crate::http::error::{JsonError, no_store};
use crate::state::AppState;

/// A resource's refusal: as RFC 6750 says it, or, for what concerns DPoP,
/// as RFC 9449 §7.1 does (401 with `WWW-Authenticate: DPoP`).
#[derive(Debug)]
pub enum ResourceError {
    Bearer(JsonError),
    Dpop(OAuthError),
    /// `use_dpop_nonce` (RFC 9449 §9): the nonce to use, in `DPoP-Nonce`.
    DpopNonce(OAuthError, String),
}

impl<E: Into<JsonError>> From<E> for ResourceError {
    fn from(e: E) -> Self {
        Self::Bearer(e.into())
    }
}

impl IntoResponse for ResourceError {
    fn into_response(self) -> Response {
        match self {
            Self::Bearer(e) => e.into_response(),
            Self::DpopNonce(e, nonce) => {
                let mut response = Self::Dpop(e).into_response();
                crate::oauth::dpop::give_nonce(&mut response, &nonce);
                response
            }
            Self::Dpop(e) => {
                let body = serde_json::json!({
                    "error": e.code.as_str(),
                    "error_description": e.description.as_str(),
                });
                let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
                no_store(&mut response);
                let value = format!(
                    "DPoP algs=\"{}\", error=\"{}\", error_description=\"{}\"",
                    healthgate_core::dpop::ALGS.join(" "),
                    e.code.as_str(),
                    // Inside the RFC's alphabet, so safe in a quoted-string.
                    e.description
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                response
            }
        }
    }
}

/// How a request reached a resource, for a DPoP proof's `htm` and `htu`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub method: &'a Method,
    /// The path, as this server serves it under its issuer URL.
    pub path: &'a str,
}

fn invalid_token(description: &'static str) -> JsonError {
    JsonError(OAuthError::new(ErrorCode::InvalidToken, description))
}

/// The person a token speaks for (as [`bearer`] read them), if their
/// account is still active; a locked or deleted account's tokens are
/// invalid.
pub fn active_user(user: Option<User>) -> Result<User, JsonError> {
    user.filter(User::is_active)
        .ok_or_else(|| invalid_token("the account is no longer active"))
}

/// Authenticates a resource request by its access token (`Authorization:
/// Bearer`, RFC 6750 §2.1; `Authorization: DPoP` with a proof, RFC 9449
/// §7) and checks it carries `scope`. The account the token speaks for is
/// read with it, for [`active_user`].
pub async fn bearer(
    state: &AppState,
    target: Target<'_>,
    headers: &HeaderMap,
    scope: &str,
) -> Result<(AccessToken, Option<User>), ResourceError> {
    let (scheme, presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(scheme, token)| (scheme, token.trim()))
        .filter(|(scheme, token)| {
            !token.is_empty()
                && (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("dpop"))
        })
        .ok_or_else(|| invalid_token("a bearer access token is required"))?;
    let dpop = scheme.eq_ignore_ascii_case("dpop");
    // Said in the scheme the token came with.
    let unusable = |why: &'static str| {
        let e = OAuthError::new(ErrorCode::InvalidToken, why);
        if dpop {
            ResourceError::Dpop(e)
        } else {
            ResourceError::Bearer(JsonError(e))
        }
    };
    let opaque = crate::services::keys::opaque_access_token(&state.store, presented)
        .await?
        .ok_or_else(|| unusable("the access token is not valid"))?;
    let (token, user) = state
        .store
        .access_token_with_user(&secret::digest(&opaque))
        .await?
        .ok_or_else(|| unusable("the access token is not valid"))?;
    crate::http::middleware::note_client(&token.client_id);
    let now = state.now();
    if !token.is_active(now) {
        return Err(unusable("the access token has expired or was revoked"));
    }
    if token.parent_refresh_digest.is_some()
        && token.first_used_at.is_none()
        && !state.store.first_use_of_access_token(&token, now).await?
    {
        return Err(unusable("the access token was revoked"));
    }
    // RFC 9449 §7.1: a bound token needs a proof by its key, with `ath`;
    // sent as a bearer token it is refused, and an unbound one is not a
    // DPoP token.
    let refused =
        |why: &'static str| ResourceError::Dpop(OAuthError::new(ErrorCode::InvalidToken, why));
    match (&token.dpop_jkt, dpop) {
        (None, false) => {}
        (Some(_), false) => {
            return Err(refused(
                "this access token is bound to a DPoP key: send it as Authorization: DPoP with a proof",
            ));
        }
        (None, true) => {
            return Err(refused("this access token is not bound to a DPoP key"));
        }
        (Some(bound), true) => {
            let url = format!("{}{}", state.issuer, target.path);
            let proven = crate::oauth::dpop::proven_key(
                state,
                headers,
                target.method.as_str(),
                &url,
                Some(presented),
            )
            .await;
            let proven = match proven {
                Ok(p) => p,
                Err(JsonError(e)) if e.code == ErrorCode::UseDpopNonce => {
                    let nonce = crate::oauth::dpop::current_nonce(state).await?;
                    return Err(ResourceError::DpopNonce(e, nonce.unwrap_or_default()));
                }
                Err(JsonError(e)) if e.code == ErrorCode::InvalidDpopProof => {
                    return Err(ResourceError::Dpop(e));
                }
                // A storage failure stays what it is (503 or 500).
                Err(other) => return Err(other.into()),
            };
            match proven {
                Some(jkt) if &jkt == bound => {}
                Some(_) => {
                    return Err(ResourceError::Dpop(healthgate_core::dpop::invalid(
                        "signed by another key than the token is bound to",
                    )));
                }
                None => {
                    return Err(ResourceError::Dpop(healthgate_core::dpop::invalid(
                        "a DPoP header is required with this token",
                    )));
                }
            }
        }
    }
    if !token.scope.contains(scope) {
        return Err(JsonError(OAuthError::new(
            ErrorCode::InsufficientScope,
            format!("this request needs the {scope} scope"),
        ))
        .into());
    }
    Ok((token, user))
}
