//! Authorization server metadata (RFC 8414) at
//! `/.well-known/oauth-authorization-server`, and SMART App Launch's at
//! `/.well-known/smart-configuration`: exactly what healthgate supports, so
//! that standard client libraries configure themselves.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use healthgate_core::client_assertion;
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::state::AppState;

/// Authorization server metadata (RFC 8414 §2): the members every client
/// library reads; the document lists more (auth methods and algorithms per
/// endpoint, DPoP, PAR, request objects).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `metadata` builds.
pub struct ServerMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    jwks_uri: String,
    registration_endpoint: String,
    pushed_authorization_request_endpoint: String,
    /// OpenID Connect only.
    userinfo_endpoint: Option<String>,
    scopes_supported: Vec<String>,
    response_types_supported: Vec<String>,
    grant_types_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Vec<String>,
    code_challenge_methods_supported: Vec<String>,
    dpop_signing_alg_values_supported: Vec<String>,
    require_pushed_authorization_requests: bool,
    authorization_response_iss_parameter_supported: bool,
}

/// SMART App Launch 2.2 configuration (§Conformance).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `smart_configuration` builds.
pub struct SmartConfiguration {
    issuer: String,
    jwks_uri: String,
    authorization_endpoint: String,
    token_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    registration_endpoint: String,
    grant_types_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Vec<String>,
    scopes_supported: Vec<String>,
    response_types_supported: Vec<String>,
    code_challenge_methods_supported: Vec<String>,
    /// `launch-ehr`, `launch-standalone`, `client-public`, …
    capabilities: Vec<String>,
}

/// Authorization server metadata (RFC 8414).
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    operation_id = "authorizationServerMetadata",
    tag = "openid",
    responses((status = 200, description = "The metadata.", body = ServerMetadata)),
)]
pub async fn metadata(State(state): State<AppState>) -> Json<Value> {
    let base = &state.issuer;
    let scopes: Vec<&String> = state.settings.scopes.keys().collect();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "jwks_uri": format!("{base}/oauth/jwks"),
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": client_assertion::ALGS,
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "code_challenge_methods_supported": ["S256"],
        // RFC 9449 §5.1: proofs are verified at the token endpoint and at
        // every endpoint that takes an access token.
        "dpop_signing_alg_values_supported": healthgate_core::dpop::ALGS,
        "authorization_response_iss_parameter_supported": true,
        // RFC 7591 §3: with an initial access token, or open.
        "registration_endpoint": format!("{base}/oauth/register"),
        // RFC 9126 §5.
        "pushed_authorization_request_endpoint": format!("{base}/oauth/par"),
        "require_pushed_authorization_requests": state.settings.par.required,
        // RFC 9101 §10.5: request objects by value, or pushed; never
        // fetched from a client's URL.
        "request_parameter_supported": true,
        "request_uri_parameter_supported": false,
        "request_object_signing_alg_values_supported": client_assertion::ALGS,
    }))
}

/// The SMART App Launch capabilities healthgate has today, each switched on
/// by `[smart]`; a capability joins this list with the behaviour it names.
const SMART_CAPABILITIES: &[&str] = &[
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
];

/// SMART App Launch discovery.
///
/// SMART App Launch 2.2 §Conformance: JSON whatever the `Accept`, readable
/// from any origin (browser apps fetch it before anything else), absolute
/// URLs. Answers 404 while `[smart]` names no FHIR server.
#[utoipa::path(
    get,
    path = "/.well-known/smart-configuration",
    operation_id = "smartConfiguration",
    tag = "openid",
    responses(
        (status = 200, description = "The configuration.", body = SmartConfiguration),
        (status = 404, description = "`not_found`: SMART is off (`[smart] fhir_base_urls` is \
not set).", body = crate::http::error::ErrorBody),
    ),
)]
pub async fn smart_configuration(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.settings.smart.enabled() {
        return Err(ApiError::not_found(
            "SMART configuration: [smart] fhir_base_urls is not set",
        ));
    }
    let base = &state.issuer;
    let mut scopes: Vec<&str> = state.settings.scopes.keys().map(String::as_str).collect();
    scopes.extend([
        "openid",
        "fhirUser",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
        "patient/*.rs",
        "patient/*.cruds",
        "user/*.rs",
        "user/*.cruds",
        "system/*.rs",
        "system/*.cruds",
    ]);
    scopes.sort_unstable();
    scopes.dedup();
    let body = json!({
        "issuer": base,
        "jwks_uri": format!("{base}/oauth/jwks"),
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": client_assertion::ALGS,
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "registration_endpoint": format!("{base}/oauth/register"),
        "pushed_authorization_request_endpoint": format!("{base}/oauth/par"),
        "require_pushed_authorization_requests": state.settings.par.required,
        "dpop_signing_alg_values_supported": healthgate_core::dpop::ALGS,
        "capabilities": SMART_CAPABILITIES,
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}
