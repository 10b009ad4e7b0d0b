//! The state every handler shares: the store, the settings, the clock, and
//! how to build the router (for the playground, which sends its requests
//! through healthgate's own routes in-process).

use std::collections::HashMap;
use std::sync::Arc;

use healthgate_core::Clock;
use healthgate_core::client::Client;
use healthgate_core::jose::SigningKey;
use healthgate_core::throttle::Throttles;
use healthgate_core::token::TokenPolicy;
use healthgate_store::{Store, StoredKey};

use crate::config::{Issuer, Settings};
use crate::metrics::Metrics;

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
    pub opened_keys: OpenedKeys,
    /// Client records as last read, with their version stamps; see
    /// [`KnownClients`].
    pub known_clients: KnownClients,
    /// This node's copies of the JWK Sets of apps that registered a URL
    /// for their keys; see [`JwksCopies`].
    pub jwks: JwksCopies,
    /// Builds every route over a state (`crate::router`), handed in by
    /// whoever opens the server, so no area imports the crate's root.
    pub router: fn(AppState) -> axum::Router,
    /// The instance key, read once (`services::secrets::instance_key_of`):
    /// it never changes while the database lives.
    pub instance_key: tokio::sync::OnceCell<Vec<u8>>,
    /// This node's Prometheus metrics.
    pub metrics: Metrics,
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
        let metrics = Metrics::new(Some(store.clone()));
        Self(Arc::new(Inner {
            metrics,
            throttles,
            store,
            settings,
            policy,
            issuer,
            clock,
            opened_keys: Default::default(),
            known_clients: Default::default(),
            jwks: Default::default(),
            router,
            instance_key: Default::default(),
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

/// How soon a JWK Set's URL may be asked again for a key the copy lacks
/// (a rotation; more often, and made-up `kid`s would turn healthgate into a
/// fetcher).
const REFETCH_AFTER: i64 = 10;

/// How fresh a copy of a JWK Set must be for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Any copy still within its max-age.
    Fresh,
    /// A copy fetched again now, unless one was fetched within
    /// `REFETCH_AFTER` seconds (an assertion named a key the copy lacks).
    Refetched,
}

struct JwksCopy {
    set: serde_json::Value,
    fetched_at: i64,
    fresh_until: i64,
}

/// The JWK Sets of apps that registered a URL for their `private_key_jwt`
/// keys, as this node last fetched them (`services::jwks`), each until its
/// max-age. A cache that never decides: every assertion is verified, and a
/// key the copy lacks sends for the set again.
#[derive(Default)]
pub struct JwksCopies(std::sync::Mutex<HashMap<String, JwksCopy>>);

impl JwksCopies {
    pub fn copy(&self, url: &str, now: i64, want: Want) -> Option<serde_json::Value> {
        let copies = self.0.lock().ok()?;
        let copy = copies.get(url)?;
        let usable = match want {
            Want::Fresh => now < copy.fresh_until,
            Want::Refetched => now < copy.fetched_at + REFETCH_AFTER && now < copy.fresh_until,
        };
        usable.then(|| copy.set.clone())
    }

    pub fn keep(&self, url: &str, set: serde_json::Value, now: i64, max_age: i64) {
        if let Ok(mut copies) = self.0.lock() {
            copies.insert(
                url.to_owned(),
                JwksCopy {
                    set,
                    fetched_at: now,
                    fresh_until: now + max_age,
                },
            );
        }
    }
}

/// Signing keys this process has unsealed and parsed, by `kid`, with the
/// sealed form they came from. A cache that never decides: which key signs
/// is read from the database on every request (so a rotation on any node
/// is honoured at the next one); only the unsealing and parsing of the same
/// sealed bytes is skipped (parsing an RSA key costs milliseconds).
#[derive(Default)]
pub struct OpenedKeys(std::sync::Mutex<HashMap<String, (String, Arc<SigningKey>)>>);

impl OpenedKeys {
    pub(crate) fn get(&self, key: &StoredKey) -> Option<Arc<SigningKey>> {
        let opened = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match opened.get(&key.kid) {
            Some((sealed, signer)) if *sealed == key.private_key => Some(signer.clone()),
            _ => None,
        }
    }

    pub(crate) fn put(&self, key: &StoredKey, signer: Arc<SigningKey>) {
        let mut opened = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Keys are few (one or two per algorithm, plus retired ones while
        // their tokens live); forget them all rather than grow.
        if opened.len() >= 16 {
            opened.clear();
        }
        opened.insert(key.kid.clone(), (key.private_key.clone(), signer));
    }
}

/// Client records as this node last read them, each with the version stamp
/// its row carried. A copy never decides alone: a request authenticated
/// from it confirms, before it answers, that the stamp is still the one in
/// the database (`oauth::client_auth::Authenticated`), so a suspension, a
/// new secret or a deletion made on any node holds on every node at the
/// next request.
#[derive(Default)]
pub struct KnownClients(std::sync::RwLock<HashMap<String, (Arc<Client>, i64)>>);

impl KnownClients {
    /// Clients kept before the copy is emptied and read again.
    const MOST: usize = 4096;

    pub(crate) fn get(&self, id: &str) -> Option<(Arc<Client>, i64)> {
        let known = self.0.read().unwrap_or_else(|e| e.into_inner());
        known.get(id).cloned()
    }

    pub(crate) fn put(&self, client: Arc<Client>, version: i64) {
        let mut known = self.0.write().unwrap_or_else(|e| e.into_inner());
        if known.len() >= Self::MOST {
            known.clear();
        }
        known.insert(client.id.clone(), (client, version));
    }

    pub(crate) fn forget(&self, id: &str) {
        let mut known = self.0.write().unwrap_or_else(|e| e.into_inner());
        known.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_serves_while_fresh_and_a_refetch_waits_ten_seconds() {
        let cache = JwksCopies::default();
        let set = serde_json::json!({ "keys": [] });
        cache.keep("https://k.example/jwks", set.clone(), 100, 300);
        let at = |now, want| cache.copy("https://k.example/jwks", now, want);
        assert_eq!(at(399, Want::Fresh), Some(set.clone()));
        assert_eq!(at(400, Want::Fresh), None);
        assert_eq!(at(109, Want::Refetched), Some(set));
        assert_eq!(at(110, Want::Refetched), None);
        assert_eq!(cache.copy("https://other.example", 101, Want::Fresh), None);
    }

    fn stored(kid: &str, sealed: &str) -> StoredKey {
        StoredKey {
            kid: kid.into(),
            alg: "ES256".into(),
            private_key: sealed.into(),
            public_jwk: "{}".into(),
            created_at: 0,
            active_from: 0,
            retired_at: None,
        }
    }

    /// An opened key is reused only for the very sealed bytes it came from:
    /// a row that changed under the same `kid` is opened again.
    #[test]
    fn an_opened_key_is_reused_only_for_its_own_sealed_form() {
        use healthgate_core::jose::{self, Alg};
        let (pkcs8, _) = jose::generate(Alg::Es256, "k1").unwrap();
        let signer = Arc::new(SigningKey::from_pkcs8(Alg::Es256, "k1", &pkcs8).unwrap());
        let opened = OpenedKeys::default();
        assert!(opened.get(&stored("k1", "sealed-a")).is_none());
        opened.put(&stored("k1", "sealed-a"), signer.clone());
        assert!(Arc::ptr_eq(
            &opened.get(&stored("k1", "sealed-a")).unwrap(),
            &signer
        ));
        assert!(opened.get(&stored("k1", "sealed-b")).is_none());
        assert!(opened.get(&stored("k2", "sealed-a")).is_none());
    }
}
