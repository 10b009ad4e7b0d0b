//! The partner's API for its integrations, authenticated like the exchange
//! (HTTP Basic, or `Bearer <client_secret>`): list and read integrations,
//! activate a pending one, deactivate, and manage its API keys. A partner
//! only ever sees its own integrations; anything else is 404.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use healthgate_core::client::Client;
use healthgate_core::integration::{Integration, IntegrationStatus};
use healthgate_core::secret::{SecretKind, mint};
use serde_json::{Value, json};

use crate::api::integrations::integration_json;
use crate::http::error::{ApiError, no_store};
use crate::http::ip::ClientIp;
use crate::oauth::client_auth::{self, authenticate_partner};
use crate::oauth::params::Params;
use crate::state::AppState;

/// The partner's own integration with this id. Another partner's is 404,
/// like one that does not exist, and the attempt is audited.
async fn own(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    ip: &ClientIp,
) -> Result<(Client, Integration), ApiError> {
    let partner = authenticate_partner(state, headers, ip).await?;
    match state.store.integration(id).await? {
        Some(i) if i.client_id == partner.id => Ok((partner, i)),
        Some(theirs) => {
            let owner = Some(theirs.client_id.as_str());
            client_auth::record_refused_access(
                state,
                ip,
                &partner.id,
                "integration",
                Some(id),
                owner,
            )
            .await?;
            Err(ApiError::not_found("integration"))
        }
        None => Err(ApiError::not_found("integration")),
    }
}

pub async fn list(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let partner = authenticate_partner(&state, &headers, &ip).await?;
    let mut out = Vec::new();
    for i in state.store.integrations_of_client(&partner.id).await? {
        out.push(integration_json(&state, &i).await?);
    }
    Ok(Json(json!({ "integrations": out })))
}

pub async fn show(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, i) = own(&state, &headers, &id, &ip).await?;
    Ok(Json(integration_json(&state, &i).await?))
}

/// `POST /api/v1/integrations/{id}/activate`: a pending integration (the
/// code was exchanged with `activate=false`) becomes connected.
pub async fn activate(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, i) = own(&state, &headers, &id, &ip).await?;
    match i.status {
        IntegrationStatus::Disconnected => {
            return Err(ApiError::conflict(
                "the integration was disconnected; the practice must connect again",
            ));
        }
        IntegrationStatus::Pending if state.store.api_keys(&i.id).await?.is_empty() => {
            return Err(ApiError::conflict(
                "exchange the connect code before activating",
            ));
        }
        _ => {}
    }
    let updated = state
        .store
        .activate_integration(&i.id, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    Ok(Json(integration_json(&state, &updated).await?))
}

/// `POST /api/v1/integrations/{id}/deactivate`: the partner disconnects;
/// every key of the integration stops working at once.
pub async fn deactivate(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, i) = own(&state, &headers, &id, &ip).await?;
    let updated = state
        .store
        .deactivate_integration(&i.id, None, None, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    Ok(Json(integration_json(&state, &updated).await?))
}

fn key_json(k: &healthgate_core::integration::ApiKey) -> Value {
    json!({
        "id": k.id,
        "description": k.description,
        "created_at": k.created_at,
        "last_used_at": k.last_used_at,
        "revoked_at": k.revoked_at,
    })
}

pub async fn list_keys(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, i) = own(&state, &headers, &id, &ip).await?;
    let keys: Vec<Value> = state
        .store
        .api_keys(&i.id)
        .await?
        .iter()
        .map(key_json)
        .collect();
    Ok(Json(json!({ "api_keys": keys })))
}

/// `POST /api/v1/integrations/{id}/api_keys` with an optional
/// `description`: a new key, shown once.
pub async fn create_key(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (_, i) = own(&state, &headers, &id, &ip).await?;
    let params = Params::from_body(&headers, &body)?;
    let description = params
        .get("description")
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if description.is_some_and(|d| d.len() > 200) {
        return Err(healthgate_core::error::OAuthError::invalid_request(
            "description must be at most 200 characters",
        )
        .into());
    }
    if i.status == IntegrationStatus::Disconnected {
        return Err(ApiError::conflict(
            "the integration was disconnected; the practice must connect again",
        ));
    }
    let key = mint(SecretKind::ApiKey);
    let record = state
        .store
        .create_api_key(&i, &key, description, state.now())
        .await?;
    let mut body = key_json(&record);
    body["access_token"] = key.value.into();
    body["token_type"] = "bearer".into();
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    no_store(&mut response);
    Ok(response)
}

pub async fn revoke_key(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, i) = own(&state, &headers, &id, &ip).await?;
    if state.store.revoke_api_key(&i, &key_id, state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("live API key"))
    }
}
