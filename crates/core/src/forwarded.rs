//! The client address behind reverse proxies (`X-Forwarded-For`): address
//! ranges in CIDR notation and the one rule that picks the client out of a
//! proxy chain. Each proxy appends the address it received the request from,
//! so the list is read from the right: the first address that is not a
//! trusted proxy is the client. Everything to its left was written by the
//! client itself and is ignored, so nobody can choose the address recorded
//! for them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A range of addresses in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare
/// address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is inside the range. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, as a dual-stack listener reports IPv4 peers) is
    /// compared as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    net[full] & mask == ip[full] & mask
}

impl FromStr for IpRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or a CIDR range such as 10.0.0.0/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self {
            network: network.to_canonical(),
            prefix: if network.is_ipv6() && network.to_canonical().is_ipv4() {
                // `::ffff:a.b.c.d/n` is the IPv4 range of prefix n - 96.
                prefix.checked_sub(96).ok_or_else(bad)?
            } else {
                prefix
            },
        })
    }
}

impl TryFrom<String> for IpRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl From<IpRange> for String {
    fn from(r: IpRange) -> Self {
        r.to_string()
    }
}

/// The default `trusted_proxies`: a proxy on the same machine.
pub fn loopback_ranges() -> Vec<IpRange> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|r| r.parse().expect("a valid range"))
        .collect()
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`) as some proxies write it.
fn forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The client's address by the one rule: the peer, unless the peer is a
/// trusted proxy and `forwarded` (every `X-Forwarded-For` value, in order)
/// says more; then the rightmost forwarded address that is not a trusted
/// proxy. An entry that is not an address ends the walk at the last hop that
/// could be vouched for.
pub fn client_address(peer: IpAddr, forwarded: &[&str], trusted_proxies: &[IpRange]) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|r| r.contains(ip));
    let mut client = peer.to_canonical();
    if !trusted(client) {
        return client;
    }
    let entries = forwarded.iter().flat_map(|v| v.split(',')).rev();
    for entry in entries {
        let Some(hop) = forwarded_entry(entry) else {
            break;
        };
        client = hop;
        if !trusted(hop) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    /// Proxy chains: who the client is, and what a client that writes its
    /// own `X-Forwarded-For` can and cannot make us believe.
    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let lo = loopback_ranges();
        let corp = ranges(&["127.0.0.0/8", "10.0.0.0/8", "2001:db8:1::/48"]);
        #[rustfmt::skip]
        let table: &[(&str, &[&str], &[IpRange], &str)] = &[
            // No proxy: the peer, whatever the header says.
            ("203.0.113.9", &["198.51.100.1"], &lo, "203.0.113.9"),
            // One trusted proxy: the address it appended.
            ("127.0.0.1", &["203.0.113.9"], &lo, "203.0.113.9"),
            // The client wrote an address first; the proxy appended the real one.
            ("127.0.0.1", &["1.2.3.4, 203.0.113.9"], &lo, "203.0.113.9"),
            ("127.0.0.1", &["127.0.0.1, 203.0.113.9"], &lo, "203.0.113.9"),
            // Two trusted hops (edge and ingress): the edge's client.
            ("10.0.0.2", &["1.2.3.4, 203.0.113.9, 10.0.0.7"], &corp, "203.0.113.9"),
            // The same chain split over two headers.
            ("10.0.0.2", &["1.2.3.4", "203.0.113.9, 10.0.0.7"], &corp, "203.0.113.9"),
            // An untrusted hop in the middle is as far as we can see.
            ("10.0.0.2", &["203.0.113.9, 198.51.100.4, 10.0.0.7"], &corp, "198.51.100.4"),
            // Every hop trusted: the leftmost.
            ("127.0.0.1", &["10.1.2.3, 10.0.0.7"], &corp, "10.1.2.3"),
            // No header: the proxy itself.
            ("127.0.0.1", &[], &lo, "127.0.0.1"),
            // Garbage stops the walk at the last hop we could vouch for.
            ("127.0.0.1", &["203.0.113.9, not-an-ip"], &lo, "127.0.0.1"),
            ("10.0.0.2", &["203.0.113.9, junk, 10.0.0.7"], &corp, "10.0.0.7"),
            // Ports and IPv6, and IPv4 peers seen through a dual-stack socket.
            ("127.0.0.1", &["203.0.113.9:4711"], &lo, "203.0.113.9"),
            ("::1", &["[2001:db8::5]:443"], &lo, "2001:db8::5"),
            ("::ffff:127.0.0.1", &["203.0.113.9"], &lo, "203.0.113.9"),
            ("2001:db8:1::2", &["2001:db8:2::9, 2001:db8:1::3"], &corp, "2001:db8:2::9"),
            // A proxy not in the list is treated as the client.
            ("192.168.1.1", &["203.0.113.9"], &lo, "192.168.1.1"),
        ];
        for (peer, forwarded, trusted, want) in table {
            let got = client_address(peer.parse().unwrap(), forwarded, trusted);
            assert_eq!(got.to_string(), *want, "{peer} {forwarded:?}");
        }
    }

    #[test]
    fn ranges_parse_and_match() {
        let r: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains("10.255.0.1".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        let r: IpRange = "192.168.4.0/22".parse().unwrap();
        assert!(r.contains("192.168.7.255".parse().unwrap()));
        assert!(!r.contains("192.168.8.0".parse().unwrap()));
        let one: IpRange = "203.0.113.9".parse().unwrap();
        assert_eq!(one.to_string(), "203.0.113.9/32");
        assert!(one.contains("::ffff:203.0.113.9".parse().unwrap()));
        let mapped: IpRange = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::2".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/-1",
            "example.com",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }
}
