//! The practice-scoped API that a practice API key opens: `GET
//! /api/v1/practice` (the key's practice) and `GET /api/v1/practices/{id}`
//! (refused, 403, for any practice but the key's).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use healthgate_core::error::{ErrorCode, OAuthError};
use healthgate_core::integration::{ApiKey, IntegrationStatus};
use healthgate_core::secret;
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::http::ip::ClientIp;
use crate::oauth::client_auth;
use crate::state::AppState;

fn invalid_key(description: &'static str) -> ApiError {
    ApiError::OAuth(OAuthError::new(ErrorCode::InvalidToken, description))
}

/// Authenticates a request by its practice API key (bearer). A revoked key,
/// one of a disconnected integration, or one of an app an operator
/// suspended (for as long as it is suspended) is refused at once.
pub async fn api_key(state: &AppState, headers: &HeaderMap) -> Result<ApiKey, ApiError> {
    let presented = crate::http::extract::bearer_token(headers)
        .ok_or_else(|| invalid_key("a practice API key is required as a bearer token"))?;
    let presented = state
        .store
        .api_key_by_digest(&secret::digest(presented))
        .await?
        .ok_or_else(|| invalid_key("the API key is not valid"))?;
    if presented.key.revoked_at.is_some() || presented.status == IntegrationStatus::Disconnected {
        return Err(invalid_key("the API key was revoked"));
    }
    if presented.client_suspended {
        return Err(invalid_key(
            "the app this API key belongs to is suspended by the platform's operators",
        ));
    }
    state
        .store
        .touch_api_key(&presented.key.id, state.now())
        .await?;
    Ok(presented.key)
}

async fn practice_json(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let practice = state
        .store
        .organization(id)
        .await?
        .ok_or_else(|| ApiError::not_found("practice"))?;
    let members: Vec<Value> = state
        .store
        .members(id)
        .await?
        .into_iter()
        .map(|(u, role)| {
            json!({
                "id": u.id,
                "name": u.name.unwrap_or(u.username),
                "email": u.email,
                "role": role,
            })
        })
        .collect();
    Ok(json!({
        "id": practice.id,
        "name": practice.name,
        "kind": practice.kind.as_str(),
        "members": members,
    }))
}

/// A practice and its members.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `practice_json` builds.
pub struct Practice {
    id: String,
    name: String,
    /// `practice`, …
    kind: String,
    members: Vec<Member>,
}

/// A member of a practice.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Member {
    id: String,
    name: String,
    email: Option<String>,
    /// `admin`, `member`, or a role of `[roles]`.
    role: String,
}

/// The practice of this API key.
#[utoipa::path(
    get,
    path = "/api/v1/practice",
    operation_id = "myPractice",
    tag = "practice",
    responses(
        (status = 200, description = "The practice.", body = Practice),
        (status = 401, description = "`invalid_token`: no key, or a revoked, unknown or suspended app's key.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`: the practice is gone.", body = crate::http::error::ErrorBody),
    ),
    security(("practice_api_key" = [])),
)]
pub async fn mine(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = api_key(&state, &headers).await?;
    Ok(Json(practice_json(&state, &key.organization_id).await?))
}

/// A practice by id: only the key's own.
#[utoipa::path(
    get,
    path = "/api/v1/practices/{id}",
    operation_id = "readPractice",
    tag = "practice",
    params(("id" = String, Path, description = "The practice (organization) id.")),
    responses(
        (status = 200, description = "The practice.", body = Practice),
        (status = 401, description = "`invalid_token`.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: the key belongs to another practice.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`: the practice is gone.", body = crate::http::error::ErrorBody),
    ),
    security(("practice_api_key" = [])),
)]
pub async fn by_id(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = api_key(&state, &headers).await?;
    if key.organization_id != id {
        client_auth::record_refused_access(
            &state,
            &ip,
            &key.client_id,
            "practice",
            Some(&id),
            None,
        )
        .await?;
        return Err(ApiError::forbidden(
            "this API key belongs to another practice",
        ));
    }
    Ok(Json(practice_json(&state, &id).await?))
}
