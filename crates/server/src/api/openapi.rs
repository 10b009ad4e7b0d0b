//! The OpenAPI 3.1 description of every JSON endpoint, generated from the
//! handlers' own `#[utoipa::path]` attributes and the types they answer
//! with, served at `/openapi.json` and rendered for people at
//! `/developers/api` (`web::developers`).
//!
//! What every machine endpoint may answer besides its own statuses is added
//! here once ([`everywhere`]): 429 (the per-address limit of `[throttle]
//! api_rate`) and 503 (the database is unavailable). The document names this
//! server (its issuer) and, under a seed-platform profile, the profile's
//! extra token, revocation and user paths beside the standard ones, and the
//! token response in the profile's wrapper.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::config::Settings;
use crate::state::AppState;

/// The standard document, issuer aside.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "healthgate",
        description = "The OAuth 2.0 / OpenID Connect endpoints and the partner, practice, \
provisioning and SMART APIs of a healthgate server. Every error is `{\"error\", \
\"error_description\"}` (RFC 6749 §5.2); a refusal to authenticate carries \
`WWW-Authenticate`. Human pages (`/oauth/authorize`, sign-in, consent, the portal and \
console) and `/metrics` (Prometheus's text format) are not described here.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::oauth::token::post,
        crate::oauth::par::post,
        crate::oauth::revoke::post,
        crate::oauth::introspect::post,
        crate::oauth::register::create,
        crate::oauth::register::read,
        crate::oauth::register::replace,
        crate::oauth::register::delete,
        crate::oauth::openid::userinfo,
        crate::oauth::openid::jwks,
        crate::oauth::openid::configuration,
        crate::oauth::discovery::metadata,
        crate::oauth::discovery::smart_configuration,
        crate::api::me::get,
        crate::api::users::create,
        crate::api::users::show,
        crate::api::users::update,
        crate::api::users::delete,
        crate::api::users::tokens,
        crate::api::users::patients,
        crate::api::users::link_patient,
        crate::api::users::unlink_patient,
        crate::api::exchange::post,
        crate::api::partner::list,
        crate::api::partner::show,
        crate::api::partner::activate,
        crate::api::partner::deactivate,
        crate::api::partner::list_keys,
        crate::api::partner::create_key,
        crate::api::partner::revoke_key,
        crate::api::practice::mine,
        crate::api::practice::by_id,
        crate::api::smart::create,
        crate::api::health::healthz,
        crate::api::health::readyz,
        openapi_json,
    ),
    tags(
        (name = "oauth", description = "OAuth 2.0: tokens (RFC 6749, 7636, 9449), pushed \
authorization requests (RFC 9126), revocation (RFC 7009), introspection (RFC 7662)."),
        (name = "registration", description = "Dynamic client registration (RFC 7591) and \
client configuration (RFC 7592)."),
        (name = "openid", description = "OpenID Connect: UserInfo, keys, discovery; RFC 8414 \
and SMART App Launch metadata."),
        (name = "resource", description = "The API an access token opens."),
        (name = "provisioning", description = "Accounts a partner manages (HealthTap's Tap-in)."),
        (name = "integrations", description = "Practice integrations (Hint's InstantOn): the \
connect-code exchange and the partner's API over its integrations and keys."),
        (name = "practice", description = "The API a practice API key opens."),
        (name = "smart", description = "SMART EHR launches made by the platform."),
        (name = "operations", description = "Probes and this description."),
    ),
)]
struct Standard;

/// The responses every operation may give besides its own.
fn everywhere() -> [(&'static str, Value); 2] {
    let error =
        json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } });
    [
        (
            "429",
            json!({
                "description": "Too many requests from this address (`[throttle] api_rate`), or \
            too many failures for this client: wait `Retry-After` seconds.",
                "headers": { "Retry-After": { "schema": { "type": "integer" }, "description": "Seconds to wait." } },
                "content": error,
            }),
        ),
        (
            "503",
            json!({
                "description": "The database is unavailable; try again shortly.",
                "content": error,
            }),
        ),
    ]
}

/// How callers prove who they are, by the names the operations use.
fn security_schemes() -> Value {
    json!({
        "client_basic": {
            "type": "http", "scheme": "basic",
            "description": "The app's client_id and client_secret, form-encoded then sent as HTTP \
    Basic (RFC 6749 §2.3.1). At the token, revocation, introspection and PAR endpoints an app may \
    instead send client_id and client_secret (client_secret_post) or a client assertion \
    (private_key_jwt) in the body, or, if public, its client_id alone."
        },
        "client_secret_bearer": {
            "type": "http", "scheme": "bearer",
            "description": "The partner APIs also take the app's client_secret as a bearer token \
    (Hint's documented form)."
        },
        "access_token": {
            "type": "http", "scheme": "bearer",
            "description": "An access token from the token endpoint. A DPoP-bound token is sent as \
    `Authorization: DPoP <token>` with a `DPoP` proof (RFC 9449 §7)."
        },
        "practice_api_key": {
            "type": "http", "scheme": "bearer",
            "description": "A practice API key, from the connect-code exchange or the partner's \
    key API."
        },
        "initial_access_token": {
            "type": "http", "scheme": "bearer",
            "description": "An initial access token from the platform's operators (RFC 7591 §3); \
    not needed under open registration."
        },
        "registration_access_token": {
            "type": "http", "scheme": "bearer",
            "description": "The registration access token the registration answered with (RFC \
    7592 §1)."
        }
    })
}

/// The standard document as JSON, made once.
fn standard() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(Standard::openapi()).unwrap_or_default();
        let mut ids = std::collections::BTreeSet::new();
        if let Some(paths) = doc["paths"].as_object_mut() {
            for item in paths.values_mut() {
                let Some(item) = item.as_object_mut() else {
                    continue;
                };
                for (method, operation) in item.iter_mut() {
                    // One handler serving two methods (UserInfo's GET and
                    // POST) gives both its id; ids must be unique.
                    if let Some(id) = operation["operationId"].as_str().map(str::to_owned)
                        && !ids.insert(id.clone())
                    {
                        let mut method = method.clone();
                        method[..1].make_ascii_uppercase();
                        operation["operationId"] = format!("{id}{method}").into();
                    }
                    if let Some(responses) = operation["responses"].as_object_mut() {
                        for (status, response) in everywhere() {
                            responses.entry(status).or_insert(response);
                        }
                    }
                }
            }
        }
        doc["components"]["securitySchemes"] = security_schemes();
        doc
    })
}

/// This server's document: the standard one under its issuer, with the
/// profile's extra paths described as the standard paths they serve.
pub fn document(settings: &Settings, issuer: &str) -> Value {
    let mut doc = standard().clone();
    doc["info"]["version"] = env!("CARGO_PKG_VERSION").into();
    doc["servers"] = json!([{ "url": issuer }]);
    let profile = &settings.profile;
    // A profile that wraps token responses (Fullscript's `{"oauth": {…}}`)
    // answers the token endpoint with that object.
    if let Some(key) = &profile.token_response_wrapper {
        let tokens = &mut doc["paths"]["/oauth/token"]["post"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        let inner = tokens.take();
        *tokens = json!({
            "type": "object",
            "description": format!(
                "The token response, as the value of `{}` (the profile's wrapper).",
                key.as_str()
            ),
            "properties": { key.as_str(): inner },
            "required": [key.as_str()],
        });
    }
    let aliases = [
        ("/oauth/token", &profile.token_paths),
        ("/oauth/revoke", &profile.revoke_paths),
        ("/api/v1/users", &profile.user_paths),
    ];
    for (standard_path, extra) in aliases {
        let Some(item) = doc["paths"].get(standard_path).cloned() else {
            continue;
        };
        for path in extra {
            let mut item = item.clone();
            if let Some(operations) = item.as_object_mut() {
                for operation in operations.values_mut() {
                    // Operation ids are unique in a document: an alias's
                    // carries its path.
                    if let Some(id) = operation["operationId"].as_str() {
                        operation["operationId"] = format!("{id} at {path}").into();
                    }
                    operation["description"] = format!(
                        "The profile's name for `{standard_path}`, served exactly as it is.\n\n{}",
                        operation["description"].as_str().unwrap_or_default()
                    )
                    .into();
                }
            }
            doc["paths"][path.as_str()] = item;
        }
    }
    doc
}

/// This description, in OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openApiDocument",
    tag = "operations",
    responses((status = 200, description = "This document.", content_type = "application/json", body = serde_json::Value)),
)]
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    Json(document(&state.settings, &state.issuer.to_string())).into_response()
}
