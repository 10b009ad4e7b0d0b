//! `POST /api/v1/smart/launches`: the platform, acting as the EHR, makes a
//! SMART EHR launch of an app. Authenticated like the partner APIs (HTTP
//! Basic, or `Bearer <client_secret>`) as a client registered as a SMART
//! launcher. The body is JSON: `{client_id, user?, iss?, patient?,
//! encounter?, fhirContext?, need_patient_banner?, smart_style_url?,
//! intent?, tenant?}`; the answer (201) is `{launch, launch_url,
//! expires_in}`, where `launch_url` is the app's launch URL with `iss` and
//! `launch` appended.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use healthgate_core::error::OAuthError;
use healthgate_store::Actor;
use serde_json::json;

use crate::http::error::{ApiError, no_store};
use crate::http::ip::ClientIp;
use crate::oauth::client_auth::authenticate_partner;
use crate::services::admin::AdminError;
use crate::services::smart::{LaunchRequest, create_launch};
use crate::state::AppState;

/// A launch made (201).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `create` answers.
pub struct Launch {
    /// The opaque launch id, for the app's authorization request.
    launch: String,
    /// The app's launch URL with `iss` and `launch`.
    launch_url: String,
    /// Seconds the launch can be used for (once).
    expires_in: i64,
}

/// Make a SMART EHR launch of an app.
///
/// For a client registered as a SMART launcher.
#[utoipa::path(
    post,
    path = "/api/v1/smart/launches",
    operation_id = "createSmartLaunch",
    tag = "smart",
    request_body(content = crate::services::smart::LaunchRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The launch.", body = Launch),
        (status = 400, description = "`invalid_request`: not a JSON launch, or a launch the \
app cannot take.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not a SMART launcher.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let launcher = authenticate_partner(&state, &headers, &ip).await?;
    if !launcher.smart_launcher {
        return Err(ApiError::forbidden(
            "this client is not registered as a SMART launcher",
        ));
    }
    let req: LaunchRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::from(OAuthError::invalid_request(format!(
            "the body must be a JSON launch: {e}"
        )))
    })?;
    let now = state.now();
    let actor = Actor {
        user_id: None,
        ip: ip.as_deref(),
    };
    let made = create_launch(&state.store, &state.settings, now, &launcher.id, actor, req)
        .await
        .map_err(|e| match e {
            AdminError::Store(e) => ApiError::from(e),
            other => ApiError::from(OAuthError::invalid_request(other.to_string())),
        })?;
    let mut response = (
        StatusCode::CREATED,
        Json(json!({
            "launch": made.launch,
            "launch_url": made.launch_url,
            "expires_in": made.expires_at - now,
        })),
    )
        .into_response();
    no_store(&mut response);
    Ok(response)
}
