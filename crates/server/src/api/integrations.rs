//! Practice integrations (Hint's InstantOn) as the APIs show them: one
//! integration's JSON, shared by the partner's code exchange (`exchange`),
//! the partner API over its integrations and keys (`partner`) and the
//! directory page (`web::directory`).

use healthgate_core::integration::Integration;
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::state::AppState;

/// A practice's integration with a partner's app.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Integration)]
#[allow(dead_code)] // Describes what `integration_json` builds.
pub struct IntegrationDoc {
    /// `int-…`.
    id: String,
    /// `pending`, `connected` or `disconnected`.
    status: String,
    practice: Option<PracticeRef>,
    /// Who clicked Connect.
    activated_by: Option<PersonRef>,
    created_at: i64,
    activated_at: Option<i64>,
    disconnected_at: Option<i64>,
}

/// `{id, name}` of a practice.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PracticeRef {
    id: String,
    name: String,
}

/// `{id, name, email}` of a person.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PersonRef {
    id: String,
    name: String,
    email: Option<String>,
}

/// The JSON partners see for an integration.
pub async fn integration_json(state: &AppState, i: &Integration) -> Result<Value, ApiError> {
    let practice = state.store.organization(&i.organization_id).await?;
    let activated_by = match &i.activated_by {
        Some(id) => state.store.user(id).await?,
        None => None,
    };
    Ok(json!({
        "id": i.id,
        "status": i.status.as_str(),
        "practice": practice.map(|p| json!({ "id": p.id, "name": p.name })),
        "activated_by": activated_by.map(|u| json!({
            "id": u.id,
            "name": u.name.unwrap_or(u.username),
            "email": u.email,
        })),
        "created_at": i.created_at,
        "activated_at": i.activated_at,
        "disconnected_at": i.disconnected_at,
    }))
}
