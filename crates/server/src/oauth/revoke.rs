//! `POST /oauth/revoke` (RFC 7009): a client revokes one of its access
//! tokens, refresh tokens (which revokes the whole grant) or practice API
//! keys. Unknown tokens and other clients' tokens are answered 200 and left
//! alone (§2.2); a storage failure is 503, never 200.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use healthgate_core::secret::{self, SecretKind};

use crate::error::{JsonError, no_store};
use crate::oauth::client_auth;
use crate::oauth::params::Params;
use crate::state::AppState;

pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, JsonError> {
    let params = Params::from_body(&headers, &body)?;
    let client = client_auth::authenticate(&state, &headers, &params).await?;
    let presented = params.require("token")?;
    // A JWT access token stands for the opaque token it carries; one that
    // does not verify is unknown (200, nothing done).
    let token = crate::keys::opaque_access_token(&state.store, presented)
        .await?
        .unwrap_or_default();
    let token = token.as_str();
    let digest = secret::digest(token);
    let now = state.now();
    // The typed prefix says what the token is, so `token_type_hint` is not
    // needed (§2.1 lets the server ignore it).
    let outcome = if token.starts_with(SecretKind::AccessToken.prefix()) {
        Some(
            state
                .store
                .revoke_access_token(&digest, &client.id, now)
                .await?,
        )
    } else if token.starts_with(SecretKind::RefreshToken.prefix()) {
        Some(
            state
                .store
                .revoke_refresh_token(&digest, &client.id, now)
                .await?,
        )
    } else if token.starts_with(SecretKind::ApiKey.prefix()) {
        Some(
            state
                .store
                .revoke_api_key_by_digest(&digest, &client.id, now)
                .await?,
        )
    } else {
        None
    };
    if let Some(healthgate_store::Revoked::NotYours) = outcome {
        tracing::info!(client = %client.id, "revocation of another client's token ignored");
    }
    let mut response = StatusCode::OK.into_response();
    no_store(&mut response);
    Ok(response)
}
