//! The protocol and the domain of healthgate, free of IO: every rule an RFC or
//! a partner platform states lives here, next to its unit tests.
//!
//! Nothing in this crate knows about HTTP, SQL or an async runtime; the store
//! and the server call into it.

pub mod authorize;
pub mod client;
pub mod client_assertion;
pub mod clock;
pub mod common_passwords;
pub mod dpop;
pub mod error;
pub mod event;
pub mod forwarded;
pub mod grant;
pub mod integration;
pub mod jose;
pub mod jws;
pub mod listing;
pub mod mfa;
pub mod org;
pub mod owner;
pub mod par;
pub mod pkce;
pub mod recovery;
pub mod redirect;
pub mod registration;
pub mod review;
pub mod scope;
pub mod secret;
pub mod smart;
pub mod throttle;
pub mod token;
pub mod user;
pub mod webhook;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorCode, OAuthError};
