//! `GET /api/v1/me`: who the access token speaks for. Needs `profile_read`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use healthgate_core::error::{ErrorCode, OAuthError};
use serde::Serialize;

use crate::api::bearer;
use crate::error::JsonError;
use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct Me {
    pub id: String,
    pub username: String,
    #[serde(rename = "type")]
    pub user_type: &'static str,
    pub email: Option<String>,
}

pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Me>, JsonError> {
    let token = bearer(&state, &headers, "profile_read").await?;
    let Some(user_id) = token.user_id else {
        return Err(JsonError(OAuthError::new(
            ErrorCode::InsufficientScope,
            "this token was issued to the application itself and speaks for no user",
        )));
    };
    let user = state
        .store
        .user(&user_id)
        .await?
        .filter(|u| u.is_active())
        .ok_or_else(|| {
            JsonError(OAuthError::new(
                ErrorCode::InvalidToken,
                "the account is no longer active",
            ))
        })?;
    Ok(Json(Me {
        id: user.id,
        username: user.username,
        user_type: user.user_type.as_str(),
        email: user.email,
    }))
}
