//! `GET /metrics`: Prometheus metrics. On `metrics_bind`'s own listener to
//! whoever reaches it; on the main listener only with `metrics_token`, to a
//! scraper presenting it as a bearer token. The Prometheus text format, or
//! OpenMetrics when the scraper's `Accept` asks for it.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use healthgate_core::error::Description;

use crate::http::error::ApiError;
use crate::metrics::{OPENMETRICS, TEXT};
use crate::state::AppState;

/// `/metrics` on the main listener.
pub async fn on_main_listener(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let token = match (&state.settings.metrics_token, state.settings.metrics_bind) {
        (Some(token), None) => token,
        _ => {
            return ApiError::Status(
                StatusCode::NOT_FOUND,
                "not_found",
                Description::new("metrics are not served on this listener"),
            )
            .into_response();
        }
    };
    let presented = crate::http::extract::bearer_token(&headers);
    if !presented.is_some_and(|p| token.matches(p)) {
        let mut response = ApiError::Status(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Description::new("present the metrics token: Authorization: Bearer <metrics_token>"),
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"metrics\""),
        );
        return response;
    }
    scrape(&state, &headers).await
}

/// `/metrics` on `metrics_bind`.
pub async fn on_own_listener(State(state): State<AppState>, headers: HeaderMap) -> Response {
    scrape(&state, &headers).await
}

async fn scrape(state: &AppState, headers: &HeaderMap) -> Response {
    match state.store.webhook_queue_depth().await {
        Ok(depth) => state.metrics.set_webhook_queue_depth(depth),
        // The rest is still worth having; the gauge keeps its last value.
        Err(e) => tracing::warn!(error = %e, "reading the webhook queue for metrics failed"),
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics { OPENMETRICS } else { TEXT };
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(openmetrics),
    )
        .into_response()
}
