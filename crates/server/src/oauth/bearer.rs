//! Bearer tokens at a resource (RFC 6750): the token from the
//! `Authorization` header, live and carrying the scope asked for, and the
//! person it speaks for while their account is active. `/api/v1/me` and
//! OpenID Connect UserInfo use it.

use axum::http::{HeaderMap, header};
use healthgate_core::error::{ErrorCode, OAuthError};
use healthgate_core::secret;
use healthgate_core::token::AccessToken;
use healthgate_core::user::User;

use crate::http::error::JsonError;
use crate::state::AppState;

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

/// Authenticates a resource request by its bearer token (RFC 6750 §2.1) and
/// checks it carries `scope`. The account the token speaks for is read with
/// it, for [`active_user`].
pub async fn bearer(
    state: &AppState,
    headers: &HeaderMap,
    scope: &str,
) -> Result<(AccessToken, Option<User>), JsonError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid_token("a bearer access token is required"))?;
    let opaque = crate::services::keys::opaque_access_token(&state.store, presented)
        .await?
        .ok_or_else(|| invalid_token("the access token is not valid"))?;
    let (token, user) = state
        .store
        .access_token_with_user(&secret::digest(&opaque))
        .await?
        .ok_or_else(|| invalid_token("the access token is not valid"))?;
    let now = state.now();
    if !token.is_active(now) {
        return Err(invalid_token("the access token has expired or was revoked"));
    }
    if token.parent_refresh_digest.is_some()
        && token.first_used_at.is_none()
        && !state.store.first_use_of_access_token(&token, now).await?
    {
        return Err(invalid_token("the access token was revoked"));
    }
    if !token.scope.contains(scope) {
        return Err(JsonError(OAuthError::new(
            ErrorCode::InsufficientScope,
            format!("this request needs the {scope} scope"),
        )));
    }
    Ok((token, user))
}
