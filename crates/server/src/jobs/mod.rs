//! Background work every node runs: webhook delivery and the audit chain's
//! sealer, mail delivery (with `[smtp]`), the cleanup of expired rows, and keeping the node's throttle
//! state in step with the database. The store's claims keep nodes
//! from doing the same work twice. With `[audit]`, the audit trail's
//! retention (`archive`).

pub mod archive;
pub mod cleanup;
pub mod mail;
pub mod throttles;
pub mod webhooks;
