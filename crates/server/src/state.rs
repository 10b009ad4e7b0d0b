//! The state every handler shares: the store, the settings, the clock, and
//! how to build the router (for the playground, which sends its requests
//! through healthgate's own routes in-process).

use std::sync::Arc;

use healthgate_core::Clock;
use healthgate_core::throttle::Throttles;
use healthgate_core::token::TokenPolicy;
use healthgate_store::Store;

use crate::config::{Issuer, Settings};

/// Cheap to clone; one per server.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub settings: Settings,
    pub policy: TokenPolicy,
    pub issuer: Issuer,
    pub clock: Arc<dyn Clock>,
    /// This node's throttle state (per-address buckets, its copy of the
    /// blocked client ids, bursts).
    pub throttles: Throttles,
    /// Signing keys unsealed and parsed once (which key signs is still
    /// read on every request).
    pub opened_keys: crate::services::keys::OpenedKeys,
    /// Builds every route over a state (`crate::router`), handed in by
    /// whoever opens the server, so no area imports the crate's root.
    pub router: fn(AppState) -> axum::Router,
}

impl AppState {
    /// `settings` must have passed [`Settings::validate`], which gave `policy`.
    pub fn new(
        store: Store,
        settings: Settings,
        policy: TokenPolicy,
        clock: Arc<dyn Clock>,
        router: fn(AppState) -> axum::Router,
    ) -> Self {
        let issuer = settings.issuer();
        let throttles = Throttles::new(settings.throttle.limits());
        Self(Arc::new(Inner {
            throttles,
            store,
            settings,
            policy,
            issuer,
            clock,
            opened_keys: Default::default(),
            router,
        }))
    }

    pub fn now(&self) -> i64 {
        self.0.clock.now()
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
