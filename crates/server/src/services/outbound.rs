//! Requests healthgate itself sends out (webhook deliveries, app photos
//! given as a URL): one HTTP client that reaches only public addresses, so
//! nothing a partner registers can make healthgate call into the platform's
//! own network (SSRF), and the readable account of why a request failed.
//!
//! HTTPS uses rustls with the ring provider and Mozilla's root certificates
//! built in (reqwest's `rustls-tls`), so the binary needs neither OpenSSL nor
//! the system's certificate store.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use healthgate_core::webhook::may_receive;

/// A partner gets this long to answer, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest error text kept (in the delivery log, in a field error).
const MAX_ERROR_LEN: usize = 200;

/// Resolves hosts to the addresses an outbound request may reach
/// ([`may_receive`]): a name that resolves only to the platform's own
/// network is refused, and since the check is made on the addresses the
/// connection then uses, a name cannot pass it and be re-pointed after
/// (DNS rebinding).
struct PublicAddresses {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for PublicAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| may_receive(a.ip(), allow_loopback))
                .collect();
            if usable.is_empty() && !found.is_empty() {
                return Err(format!(
                    "{host} resolves only to private or reserved addresses; healthgate connects only to public ones"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(usable.into_iter());
            Ok(addrs)
        })
    }
}

/// Why a URL whose host is an IP address may not receive a webhook (or give
/// an app's photo), if it may not (names are checked when they are
/// resolved). Registration asks too, so such a URL is refused before it is
/// ever stored or fetched.
pub fn refused_literal(url: &str, allow_loopback: bool) -> Option<String> {
    let host = url::Url::parse(url).ok()?.host()?.to_owned();
    let ip: IpAddr = match host {
        url::Host::Ipv4(ip) => ip.into(),
        url::Host::Ipv6(ip) => ip.into(),
        url::Host::Domain(_) => return None,
    };
    (!may_receive(ip, allow_loopback)).then(|| {
        format!("{ip} is a private or reserved address; healthgate connects only to public ones")
    })
}

/// The HTTP client every outbound request is sent with (webhook deliveries,
/// and app photos given as a URL, `photos::fetch`): redirects are not followed
/// (a partner's endpoint answers where it was registered, or the attempt
/// fails), every request times out after [`TIMEOUT`], no cookies are kept,
/// and names resolve only to public addresses (loopback too when
/// `allow_loopback`, for development).
pub fn http_client(allow_loopback: bool) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(PublicAddresses { allow_loopback }))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent("healthgate")
        .build()
}

/// A short account of a transport failure for the delivery log (and a
/// photo that could not be fetched): what went wrong and why, without the
/// URL (its query may carry the partner's own credentials).
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let mut text = if causes.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {}", causes.join(": "))
    };
    if text.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
