//! The OAuth 2.0 endpoints: authorization (with its login and consent pages)
//! and token.

pub mod authorize;
pub mod client_auth;
pub mod consent;
pub mod discovery;
pub mod introspect;
pub mod openid;
pub mod params;
pub mod revoke;
pub mod token;
