//! Background work every node runs: webhook delivery and the audit chain's
//! sealer, and the cleanup of expired rows. The store's claims keep nodes
//! from doing the same work twice.

pub mod cleanup;
pub mod webhooks;
