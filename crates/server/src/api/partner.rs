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

/// The partner's integrations.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `list` answers.
pub struct IntegrationList {
    integrations: Vec<crate::api::integrations::IntegrationDoc>,
}

/// A practice API key (its value is shown once, when made).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `key_json` builds.
pub struct ApiKeyDoc {
    id: String,
    description: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// The integration's API keys.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `list_keys` answers.
pub struct ApiKeyList {
    api_keys: Vec<ApiKeyDoc>,
}

/// A new API key, with its value.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `create_key` answers.
pub struct NewApiKey {
    #[serde(flatten)]
    key: ApiKeyDoc,
    /// The key, shown this once.
    access_token: String,
    /// `bearer`.
    token_type: String,
}

/// What a new key is for.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct NewApiKeyRequest {
    /// At most 200 characters.
    description: Option<String>,
}

/// List the partner's integrations.
#[utoipa::path(
    get,
    path = "/api/v1/integrations",
    operation_id = "listIntegrations",
    tag = "integrations",
    responses(
        (status = 200, description = "Every integration of the partner's app.", body = IntegrationList),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
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

/// Read one of the partner's integrations.
#[utoipa::path(
    get,
    path = "/api/v1/integrations/{id}",
    operation_id = "readIntegration",
    tag = "integrations",
    params(("id" = String, Path, description = "The integration, `int-…`.")),
    responses(
        (status = 200, description = "The integration.", body = crate::api::integrations::IntegrationDoc),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`: no such integration of this partner.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, i) = own(&state, &headers, &id, &ip).await?;
    Ok(Json(integration_json(&state, &i).await?))
}

/// Activate a pending integration.
///
/// A pending integration (the code was exchanged with `activate=false`)
/// becomes connected.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{id}/activate",
    operation_id = "activateIntegration",
    tag = "integrations",
    params(("id" = String, Path, description = "The integration, `int-…`.")),
    responses(
        (status = 200, description = "Connected.", body = crate::api::integrations::IntegrationDoc),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`.", body = crate::http::error::ErrorBody),
        (status = 409, description = "`conflict`: disconnected, or its code is not exchanged yet.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
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

/// Disconnect an integration.
///
/// Every key of the integration stops working at once.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{id}/deactivate",
    operation_id = "deactivateIntegration",
    tag = "integrations",
    params(("id" = String, Path, description = "The integration, `int-…`.")),
    responses(
        (status = 200, description = "Disconnected.", body = crate::api::integrations::IntegrationDoc),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
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

/// List an integration's API keys.
#[utoipa::path(
    get,
    path = "/api/v1/integrations/{id}/api_keys",
    operation_id = "listApiKeys",
    tag = "integrations",
    params(("id" = String, Path, description = "The integration, `int-…`.")),
    responses(
        (status = 200, description = "The keys, live and revoked (never their values).", body = ApiKeyList),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
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

/// Make another API key for an integration.
///
/// The key's value is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{id}/api_keys",
    operation_id = "createApiKey",
    tag = "integrations",
    params(("id" = String, Path, description = "The integration, `int-…`.")),
    request_body(content(
        (NewApiKeyRequest = "application/json"),
        (NewApiKeyRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "The key.", body = NewApiKey),
        (status = 400, description = "`invalid_request`.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`.", body = crate::http::error::ErrorBody),
        (status = 409, description = "`conflict`: the integration was disconnected.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
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

/// Revoke an API key.
#[utoipa::path(
    delete,
    path = "/api/v1/integrations/{id}/api_keys/{key_id}",
    operation_id = "revokeApiKey",
    tag = "integrations",
    params(
        ("id" = String, Path, description = "The integration, `int-…`."),
        ("key_id" = String, Path, description = "The key's id (not its value)."),
    ),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`: no such integration, or no such live key.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
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
