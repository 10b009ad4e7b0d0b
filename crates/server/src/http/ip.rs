//! The address a request came from, for the audit trail and everything else
//! that needs it (rate limits): one extractor applying the one rule of
//! `healthgate_core::forwarded`. Behind a reverse proxy the peer is the
//! proxy, so `X-Forwarded-For` is read, but only when the operator says so
//! (`trust_forwarded_for`) and only as far as proxies in `trusted_proxies`
//! wrote it: otherwise anyone could write any address into the audit log.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use std::sync::Arc;

use healthgate_core::forwarded::{IpRange, client_address};

use crate::config::Settings;
use crate::state::AppState;

/// The client's IP address, if known.
#[derive(Debug, Clone, Default)]
pub struct ClientIp(pub Option<String>);

impl ClientIp {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The address of a request from `peer` with `headers`, under the
    /// deployment's settings.
    pub fn of(state: &AppState, peer: Option<IpAddr>, headers: &HeaderMap) -> Self {
        Self(address(state, peer, headers).map(|ip| ip.to_string()))
    }
}

/// [`ClientIp`]'s address, unformatted (for the per-address rate, which
/// runs on every request).
pub fn address(state: &AppState, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    AddressRule::address_under(
        state.settings.trust_forwarded_for,
        &state.settings.trusted_proxies,
        peer,
        headers,
    )
}

/// The deployment's forwarded-address rule on its own, for the access log,
/// which runs outside the state's reach.
#[derive(Debug, Clone)]
pub struct AddressRule {
    trust_forwarded_for: bool,
    trusted_proxies: Arc<[IpRange]>,
}

impl AddressRule {
    pub fn of(settings: &Settings) -> Self {
        Self {
            trust_forwarded_for: settings.trust_forwarded_for,
            trusted_proxies: settings.trusted_proxies.as_slice().into(),
        }
    }

    /// The address of a request from `peer` with `headers`.
    pub fn address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        Self::address_under(
            self.trust_forwarded_for,
            &self.trusted_proxies,
            peer,
            headers,
        )
    }

    fn address_under(
        trust_forwarded_for: bool,
        trusted_proxies: &[IpRange],
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Option<IpAddr> {
        let peer = peer?;
        let forwarded: Vec<&str> = if trust_forwarded_for {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        } else {
            Vec::new()
        };
        Some(client_address(peer, &forwarded, trusted_proxies))
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self::of(state, peer, &parts.headers))
    }
}
