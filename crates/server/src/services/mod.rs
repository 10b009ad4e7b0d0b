//! What the pages, the APIs, the background jobs and the CLI share:
//! registering and changing clients and accounts (`admin`), the signing keys,
//! the instance's secrets, password hashing, app photos, the throttles in
//! front of sign-in and the endpoints, the one client for requests
//! healthgate sends out, recovery by email (`mail`), and SMART EHR launches
//! (`smart`), and archiving the audit trail (`audit`).

pub mod admin;
pub mod audit;
pub mod jwks;
pub mod keys;
pub mod mail;
pub mod mfa;
pub mod outbound;
pub mod passkeys;
pub mod passwords;
pub mod photos;
pub mod registration;
pub mod secrets;
pub mod smart;
pub mod throttle;
