//! `POST /oauth/token` (RFC 6749 §3.2): authenticates the client, dispatches
//! on `grant_type`, and answers with the token response of §5.1 or the error
//! of §5.2.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use healthgate_core::error::{Description, ErrorCode, OAuthError};

use crate::http::error::{ApiError, JsonError};
use crate::http::ip::ClientIp;
use crate::oauth::client_auth::{self, Authenticated};
use crate::oauth::dpop;
use crate::oauth::grants;
use crate::oauth::issue::TokenResponse;
use crate::oauth::params::Params;
use crate::services::throttle;
use crate::state::AppState;

/// A token request (RFC 6749 §4.1.3, §4.4.2, §6), form-encoded or JSON.
/// The parameters a grant does not use are ignored; a parameter sent twice
/// is refused.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"grant_type": "client_credentials", "scope": "profile_read"}))]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct TokenRequest {
    grant_type: GrantType,
    /// The authorization code (authorization_code).
    code: Option<String>,
    /// The redirect URI the code was asked for with (authorization_code).
    redirect_uri: Option<String>,
    /// The PKCE verifier (RFC 7636 §4.5).
    code_verifier: Option<String>,
    /// The refresh token (refresh_token).
    refresh_token: Option<String>,
    /// Space-separated scopes: at most those granted (refresh_token), or
    /// those asked for (client_credentials).
    scope: Option<String>,
    #[serde(flatten)]
    client: client_auth::ClientAuthentication,
}

/// The grant types the token endpoint takes.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Describes what `grant` dispatches on.
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// Tokens for a code, a refresh token or the app itself.
///
/// RFC 6749 §3.2. The answer is the token response of §5.1 (`Cache-Control:
/// no-store`) or the error of §5.2. With a `DPoP` proof the access token is
/// bound to its key (`token_type` `DPoP`, RFC 9449 §5); with server nonces
/// on, every answer to a DPoP request carries `DPoP-Nonce`.
#[utoipa::path(
    post,
    path = "/oauth/token",
    operation_id = "requestToken",
    tag = "oauth",
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"),
    )),
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof JWT (RFC 9449 §4).")),
    responses(
        (status = 200, description = "Tokens (RFC 6749 §5.1).", body = TokenResponse),
        (status = 400, description = "`invalid_request`, `invalid_grant`, `unauthorized_client`, \
`unsupported_grant_type`, `invalid_scope`, `invalid_dpop_proof` or `use_dpop_nonce` (RFC 6749 §5.2, \
RFC 9449 §8).", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`: the app did not authenticate.",
body = crate::http::error::ErrorBody),
    ),
    security((), ("client_basic" = [])),
)]
pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut response = token(&state, &ip, &headers, query, &body)
        .await
        .into_response();
    if let Some(origin) = headers.get(header::ORIGIN) {
        allow_app_origin(&state, &headers, &body, origin, &mut response).await;
    }
    // RFC 9449 §8: with server nonces on, every answer to a DPoP request
    // gives the nonce to use next (and with use_dpop_nonce, the one to
    // retry with).
    if headers.contains_key(dpop::HEADER)
        && let Ok(Some(nonce)) = dpop::current_nonce(&state).await
    {
        dpop::give_nonce(&mut response, &nonce);
    }
    response
}

/// CORS for an app running in a browser (SMART's public apps, which
/// exchange and refresh their codes from the page): the answer may be read
/// by a page on the origin of one of the redirect URIs of the app the
/// request names, and by no other. Errors too, so that the app can read
/// them.
async fn allow_app_origin(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    origin: &HeaderValue,
    response: &mut Response,
) {
    let Ok(origin_text) = origin.to_str() else {
        return;
    };
    let Ok(params) = Params::from_body(headers, body) else {
        return;
    };
    let Ok(params) = implied_public_client(state, headers, params).await else {
        return;
    };
    let Some(client_id) = client_auth::named_client_id(headers, &params) else {
        return;
    };
    // A failed read only leaves the answer without CORS headers.
    let serves = match state.store.client(&client_id).await {
        Ok(Some(client)) => client.suspended_at.is_none() && client.serves_origin(origin_text),
        _ => false,
    };
    let h = response.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if serves {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        // A browser app using DPoP reads the server's nonce.
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("DPoP-Nonce"),
        );
    }
}

/// `OPTIONS` on the token endpoint: the CORS preflight of a browser app
/// that sends headers beyond a simple form post (`Authorization`). A
/// preflight names no app, so it is allowed for the origin of any app's
/// redirect URI; the request itself is then answered for its own app's
/// origins only.
pub async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return (
            StatusCode::NO_CONTENT,
            [(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"))],
        )
            .into_response();
    };
    let registered = match origin.to_str() {
        Ok(o) => match state.store.origin_registered(o).await {
            Ok(found) => found,
            Err(e) => return JsonError::from(e).into_response(),
        },
        Err(_) => false,
    };
    if !registered {
        let mut refused = ApiError::Status(
            StatusCode::FORBIDDEN,
            "forbidden",
            Description::new("this origin is not the origin of a registered app's redirect URI"),
        )
        .into_response();
        refused
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
        return refused;
    }
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, dpop"),
            ),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            ),
            (header::VARY, HeaderValue::from_static("Origin")),
        ],
    )
        .into_response()
}

async fn token(
    state: &AppState,
    ip: &ClientIp,
    headers: &HeaderMap,
    query: Option<String>,
    body: &Bytes,
) -> Result<Response, JsonError> {
    let mut params = Params::from_body(headers, body)?;
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
    let params = implied_public_client(state, headers, params).await?;
    let grant_type = params.require("grant_type")?;
    let mut client = client_auth::authenticate_cached(state, headers, &params, ip).await?;
    // RFC 9449: a DPoP proof binds what is issued to the key it proves.
    let dpop_jkt = if headers.contains_key(dpop::HEADER) {
        let token_url = format!("{}/oauth/token", state.issuer);
        dpop::proven_key(state, headers, "POST", &token_url, None).await?
    } else {
        None
    };
    let dpop_jkt = dpop_jkt.as_deref();
    let mut response = grant(state, &client, grant_type, &params, ip, dpop_jkt).await;
    // Every success was confirmed by its write, which claims the client's
    // stamp. A refusal made with this node's copy of the client is
    // confirmed here; if the client changed meanwhile (suspended, a new
    // secret), the request starts again from its record as it is now.
    if response.is_err() && !client_auth::confirmed(state, &client).await? {
        client = client_auth::again(state, &client, headers, &params, ip).await?;
        response = grant(state, &client, grant_type, &params, ip, dpop_jkt).await;
    }
    // A guessed code or refresh token counts against the client: past the
    // limit it is refused for a while (RFC 6749 §10.10, RFC 9700 §4.4).
    if let Err(JsonError(e)) = &response
        && e.code == ErrorCode::InvalidGrant
    {
        throttle::client_failed(state, &client.id, ip.as_deref()).await?;
    }
    let response = response?;
    state.metrics.token_issued(grant_type, &client.id);
    Ok(response.shaped(state))
}

/// RFC 6749 §6: a public client does not authenticate to refresh, and
/// browser apps (the SMART project's JavaScript client, by default) send
/// the refresh token alone. A refresh that names no client is taken as from
/// the app its token was issued to, when that app is public; a confidential
/// app still authenticates, and anything else is left as it was sent.
async fn implied_public_client(
    state: &AppState,
    headers: &HeaderMap,
    params: Params,
) -> Result<Params, JsonError> {
    if params.get("grant_type") != Some("refresh_token")
        || client_auth::named_client_id(headers, &params).is_some()
    {
        return Ok(params);
    }
    let Some(token) = params.get("refresh_token") else {
        return Ok(params);
    };
    let Some(issued) = state
        .store
        .refresh_token_info(&healthgate_core::secret::digest(token))
        .await?
    else {
        return Ok(params);
    };
    match state.store.client(&issued.client_id).await? {
        Some(client) if client.is_public() => Ok(params.with("client_id", client.id)),
        _ => Ok(params),
    }
}

async fn grant(
    state: &AppState,
    client: &Authenticated,
    grant_type: &str,
    params: &Params,
    ip: &ClientIp,
    dpop_jkt: Option<&str>,
) -> Result<TokenResponse, JsonError> {
    if dpop_jkt.is_none() && client.require_dpop {
        return Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            "this client is registered to require DPoP: send a DPoP proof",
        )
        .into());
    }
    match grant_type {
        "authorization_code" => {
            grants::authorization_code::exchange(state, client, params, ip, dpop_jkt).await
        }
        "refresh_token" => grants::refresh_token::exchange(state, client, params, ip, dpop_jkt).await,
        "client_credentials" => {
            grants::client_credentials::exchange(state, client, params, dpop_jkt).await
        }
        other => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type '{other}' is not supported; use authorization_code, refresh_token or client_credentials"),
        )
        .into()),
    }
}
