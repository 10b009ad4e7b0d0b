//! The JSON APIs: the resource API behind bearer tokens (`/api/v1/me`, checked
//! by `oauth::bearer`), partner-provisioned users,
//! the partner's integration APIs and connect-code exchange, the practice
//! API its keys open, SMART EHR launches, and the health probes.

pub mod exchange;
pub mod health;
pub mod integrations;
pub mod me;
pub mod metrics;
pub mod openapi;
pub mod partner;
pub mod practice;
pub mod smart;
pub mod users;

use axum::routing::{delete, get, post, put};

use crate::http::routes::Routes;

/// The JSON APIs partners, practices and probes call.
pub fn routes() -> Routes {
    Routes::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::on_main_listener))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/me", get(me::get))
        .route("/api/v1/users", post(users::create))
        .route(
            "/api/v1/users/{guid}",
            get(users::show).patch(users::update).delete(users::delete),
        )
        .route("/api/v1/users/{guid}/tokens", post(users::tokens))
        .route("/api/v1/users/{guid}/patients", get(users::patients))
        .route(
            "/api/v1/users/{guid}/patients/{patient}",
            put(users::link_patient).delete(users::unlink_patient),
        )
        .route("/api/oauth/tokens", post(exchange::post))
        .route("/api/v1/integrations", get(partner::list))
        .route("/api/v1/integrations/{id}", get(partner::show))
        .route(
            "/api/v1/integrations/{id}/activate",
            post(partner::activate),
        )
        .route(
            "/api/v1/integrations/{id}/deactivate",
            post(partner::deactivate),
        )
        .route(
            "/api/v1/integrations/{id}/api_keys",
            get(partner::list_keys).post(partner::create_key),
        )
        .route(
            "/api/v1/integrations/{id}/api_keys/{key_id}",
            delete(partner::revoke_key),
        )
        .route("/api/v1/smart/launches", post(smart::create))
        .route("/api/v1/practice", get(practice::mine))
        .route("/api/v1/practices/{id}", get(practice::by_id))
}
