//! Practice integrations (Hint's InstantOn) as the APIs show them: one
//! integration's JSON, shared by the partner's code exchange (`exchange`),
//! the partner API over its integrations and keys (`partner`) and the
//! directory page (`web::directory`).

use healthgate_core::integration::Integration;
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::state::AppState;

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
