//! `POST /oauth/token` (RFC 6749 §3.2): authenticates the client, dispatches
//! on `grant_type`, and answers with the token response of §5.1 or the error
//! of §5.2.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use healthgate_core::error::{ErrorCode, OAuthError};

use crate::http::error::JsonError;
use crate::http::ip::ClientIp;
use crate::oauth::client_auth::{self, Authenticated};
use crate::oauth::grants;
use crate::oauth::issue::TokenResponse;
use crate::oauth::params::Params;
use crate::services::throttle;
use crate::state::AppState;

pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, JsonError> {
    let mut params = Params::from_body(&headers, &body)?;
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        if !state.settings.profile.token_params_in_query {
            return Err(OAuthError::invalid_request(
                "send token request parameters in the request body, not the URL",
            )
            .into());
        }
        // HealthKey documents its token requests with every parameter,
        // client secret included, in the URL. Accepted only under that
        // profile, and every time said in the log.
        tracing::warn!(
            "token request parameters received in the query string (profile.token_params_in_query)"
        );
        params = params.merged_with(Params::from_form(q.as_bytes())?)?;
    }
    let grant_type = params.require("grant_type")?;
    let mut client = client_auth::authenticate_cached(&state, &headers, &params, &ip).await?;
    let mut response = grant(&state, &client, grant_type, &params, &ip).await;
    // Every success was confirmed by its write, which claims the client's
    // stamp. A refusal made with this node's copy of the client is
    // confirmed here; if the client changed meanwhile (suspended, a new
    // secret), the request starts again from its record as it is now.
    if response.is_err() && !client_auth::confirmed(&state, &client).await? {
        client = client_auth::again(&state, &client, &headers, &params, &ip).await?;
        response = grant(&state, &client, grant_type, &params, &ip).await;
    }
    // A guessed code or refresh token counts against the client: past the
    // limit it is refused for a while (RFC 6749 §10.10, RFC 9700 §4.4).
    if let Err(JsonError(e)) = &response
        && e.code == ErrorCode::InvalidGrant
    {
        throttle::client_failed(&state, &client.id, ip.as_deref()).await?;
    }
    Ok(response?.shaped(&state))
}

async fn grant(
    state: &AppState,
    client: &Authenticated,
    grant_type: &str,
    params: &Params,
    ip: &ClientIp,
) -> Result<TokenResponse, JsonError> {
    match grant_type {
        "authorization_code" => grants::authorization_code::exchange(state, client, params, ip).await,
        "refresh_token" => grants::refresh_token::exchange(state, client, params, ip).await,
        "client_credentials" => grants::client_credentials::exchange(state, client, params).await,
        other => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type '{other}' is not supported; use authorization_code, refresh_token or client_credentials"),
        )
        .into()),
    }
}
