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

/// Who a token speaks for. A person's token carries the person's members
/// (`id`, `username`, `name`, `type`, `email`); an organization-level
/// token only `resource_owner` and `organization`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `get` builds.
pub struct Me {
    id: Option<String>,
    username: Option<String>,
    name: Option<String>,
    /// `member`, `practitioner`, …
    #[schema(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    resource_owner: Option<crate::oauth::issue::OwnerJson>,
    organization: Option<Organization>,
}

/// The organization a grant was made in.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Organization {
    id: String,
    name: String,
    /// `practice`, …
    kind: String,
}

/// Who the access token speaks for.
///
/// Needs `profile_read`.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    operation_id = "me",
    tag = "resource",
    params(("DPoP" = Option<String>, Header, description = "The proof that goes with a DPoP-bound token.")),
    responses(
        (status = 200, description = "The person, or the organization.", body = Me),
        (status = 401, description = "`invalid_token` (RFC 6750 §3.1), or a DPoP refusal \
(RFC 9449 §7.1).", body = crate::http::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: no `profile_read`, or a token of \
the app itself.", body = crate::http::error::ErrorBody),
    ),
    security(("access_token" = [])),
)]
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
