//! One module per grant type the token endpoint accepts.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;
