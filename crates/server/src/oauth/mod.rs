//! The OAuth 2.0 endpoints: authorization (with its login and consent pages)
//! and token.

pub mod authorize;
pub mod bearer;
pub mod client_auth;
pub mod consent;
pub mod discovery;
pub mod dpop;
pub mod grants;
pub mod introspect;
pub mod issue;
pub mod openid;
pub mod par;
pub mod params;
pub mod register;
pub mod revoke;
pub mod token;

use axum::routing::{get, post};

use crate::http::routes::Routes;

/// The OAuth 2.0 and OpenID Connect endpoints and their metadata.
pub fn routes() -> Routes {
    Routes::new()
        .route(
            "/oauth/authorize",
            get(authorize::get).post(authorize::post),
        )
        .route("/oauth/token", post(token::post).options(token::preflight))
        .route("/oauth/par", post(par::post))
        .route("/oauth/register", post(register::create))
        .route(
            "/oauth/register/{client_id}",
            get(register::read)
                .put(register::replace)
                .delete(register::delete),
        )
        .route("/oauth/revoke", post(revoke::post))
        .route("/oauth/introspect", post(introspect::post))
        .route(
            "/oauth/userinfo",
            get(openid::userinfo).post(openid::userinfo),
        )
        .route("/oauth/jwks", get(openid::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid::configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .route(
            "/.well-known/smart-configuration",
            get(discovery::smart_configuration),
        )
}
