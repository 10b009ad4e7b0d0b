//! `POST /oauth/revoke` (RFC 7009): a client revokes one of its access
//! tokens, refresh tokens (which revokes the whole grant) or practice API
//! keys. Unknown tokens are answered 200 (§2.2). Another client's token is
//! left alone and the request refused, 400 `unauthorized_client` (§2.1: "the
//! request is refused and the client is informed of the error"), and
//! audited. A storage failure is 503, never 200.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use healthgate_core::error::OAuthError;
use healthgate_core::secret::{self, SecretKind};
use healthgate_store::Revoked;

use crate::http::error::{JsonError, no_store};
use crate::http::ip::ClientIp;
use crate::oauth::client_auth;
use crate::oauth::params::Params;
use crate::state::AppState;

/// A revocation request (RFC 7009 §2.1), with the app's authentication as
/// at the token endpoint.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct RevocationRequest {
    /// An access token, a refresh token (the whole grant goes) or a
    /// practice API key.
    token: String,
    /// Ignored: the token's prefix says what it is.
    token_type_hint: Option<String>,
    #[serde(flatten)]
    client: client_auth::ClientAuthentication,
}

/// Revoke a token.
///
/// RFC 7009. An unknown token is answered 200, as §2.2 says.
#[utoipa::path(
    post,
    path = "/oauth/revoke",
    operation_id = "revokeToken",
    tag = "oauth",
    request_body(content(
        (RevocationRequest = "application/x-www-form-urlencoded"),
        (RevocationRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "Revoked, or not a live token."),
        (status = 400, description = "`invalid_request`, or `unauthorized_client`: the token \
is another app's and was left alone.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`.", body = crate::http::error::ErrorBody),
    ),
    security((), ("client_basic" = [])),
)]
pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, JsonError> {
    let params = Params::from_body(&headers, &body)?;
    let client = client_auth::authenticate(&state, &headers, &params, &ip).await?;
    let presented = params.require("token")?;
    // A JWT access token stands for the opaque token it carries; one that
    // does not verify is unknown (200, nothing done).
    let token = crate::services::keys::opaque_access_token(&state.store, presented)
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
    if let Some(Revoked::NotYours { owner }) = outcome {
        let owner = Some(owner.as_str());
        client_auth::record_refused_access(&state, &ip, &client.id, "token", None, owner).await?;
        return Err(OAuthError::unauthorized_client(
            "the token was not issued to this client, and was left alone",
        )
        .into());
    }
    let mut response = StatusCode::OK.into_response();
    no_store(&mut response);
    Ok(response)
}
