//! `GET /api/v1/me`: who the access token speaks for. Needs `profile_read`.
//!
//! A person's token answers with the person (`id`, `username`, `type`,
//! `email`, `name`), and for every grant the `resource_owner` and the
//! organization it was made in; an organization-level token answers with the
//! organization alone.

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method};
use healthgate_core::error::{ErrorCode, OAuthError};
use serde_json::{Value, json};

use crate::http::error::JsonError;
use crate::oauth::bearer::{ResourceError, Target, bearer};
use crate::state::AppState;

pub async fn get(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Json<Value>, ResourceError> {
    let target = Target {
        method: &method,
        path: uri.path(),
    };
    let (token, user) = bearer(&state, target, &headers, "profile_read").await?;
    let organization = match &token.grant.organization_id {
        Some(id) => state
            .store
            .organization(id)
            .await?
            .map(|o| json!({ "id": o.id, "name": o.name, "kind": o.kind.as_str() })),
        None => None,
    };
    let owner = token
        .grant
        .owner
        .as_ref()
        .map(|o| json!({ "id": o.id, "type": o.kind }));
    if token.user_id.is_none() {
        if token.grant.organization_level {
            return Ok(Json(
                json!({ "resource_owner": owner, "organization": organization }),
            ));
        }
        return Err(JsonError(OAuthError::new(
            ErrorCode::InsufficientScope,
            "this token was issued to the application itself and speaks for no user",
        ))
        .into());
    }
    let user = crate::oauth::bearer::active_user(user)?;
    Ok(Json(json!({
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "type": user.user_type.as_str(),
        "email": user.email,
        "resource_owner": owner,
        "organization": organization,
    })))
}
