//! Webhook rules: how a delivery is signed, when a failed one is retried, and
//! when a partner's endpoint is muted.
//!
//! The signature follows the common `t=…,v1=…` scheme: the receiver
//! recomputes `HMAC-SHA256(secret, "<t>.<raw body>")`, compares it in
//! constant time, and rejects a `t` too far from its own clock (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Healthgate-Signature";

/// Retries stop this long after the event (72 hours).
pub const RETRY_WINDOW: i64 = 72 * 3600;

/// After this many consecutive failed attempts a partner's webhook is muted
/// until someone re-enables it.
pub const MUTE_AFTER_FAILURES: i64 = 100;

/// Seconds to wait before attempt `failed_attempts + 1`: 30 s doubling to a
/// ceiling of one hour.
pub fn backoff(failed_attempts: i64) -> i64 {
    let exp = failed_attempts.clamp(1, 8) - 1;
    (30i64 << exp).min(3600)
}

fn hmac_hex(secret: &[u8], message: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail here.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Healthgate-Signature` value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("t={timestamp},v1={}", hmac_hex(secret.as_bytes(), &message))
}

/// Checks a signature header as a receiver would: the HMAC matches and the
/// timestamp is within `tolerance` seconds of `now`.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance {
        return false;
    }
    let expected = signature(secret, t, body);
    let expected_v1 = expected.rsplit_once("v1=").map(|(_, v)| v).unwrap_or("");
    crate::secret::constant_time_eq(expected_v1, v1)
}

/// Derives a partner's webhook signing secret from the instance secret, so
/// no signing secret is stored: `hg_whsec_` + HMAC(instance key, client id and
/// version). Rotating means bumping the version.
pub fn derive_secret(instance_key: &[u8], client_id: &str, version: i64) -> String {
    let mac = hmac_hex(
        instance_key,
        format!("webhook-signing:{client_id}:{version}").as_bytes(),
    );
    format!("hg_whsec_{mac}")
}

/// Whether a webhook may be sent to `ip`: a public unicast address. Refused
/// are the addresses of the platform's own network and machine — loopback,
/// private (RFC 1918, RFC 4193), link-local (RFC 3927, including the cloud
/// metadata service at 169.254.169.254; fe80::/10), shared address space
/// (RFC 6598), unspecified, broadcast, multicast, documentation and
/// benchmarking ranges, and IPv6 forms that wrap a refused IPv4 address — so
/// a registered URL cannot turn the delivery worker against them (SSRF,
/// RFC 9700 §4.15 in spirit). Loopback is allowed only when `allow_loopback`
/// (development, with `allow_http_webhooks`).
pub fn may_receive(ip: std::net::IpAddr, allow_loopback: bool) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                return allow_loopback;
            }
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                return allow_loopback;
            }
            if let Some(v4) = v6.to_ipv4_mapped() {
                return may_receive(IpAddr::V4(v4), allow_loopback);
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        let waits: Vec<i64> = (1..=10).map(backoff).collect();
        assert_eq!(
            waits,
            vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
        );
    }

    #[test]
    fn signature_round_trip_and_tampering() {
        let secret = "hg_whsec_test";
        let body = br#"{"id":"evt-1","type":"integration.connected"}"#;
        let header = signature(secret, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(secret, &header, body, 1_700_000_010, 300));
        assert!(
            !verify(secret, &header, b"{}", 1_700_000_010, 300),
            "other body"
        );
        assert!(
            !verify("hg_whsec_other", &header, body, 1_700_000_010, 300),
            "other secret"
        );
        assert!(
            !verify(secret, &header, body, 1_700_001_000, 300),
            "too old"
        );
        assert!(!verify(secret, "garbage", body, 1_700_000_000, 300));
    }

    /// RFC 4231 test case 2, to pin the HMAC itself.
    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn derived_secrets_differ_by_client_and_version() {
        let k = [7u8; 32];
        let a = derive_secret(&k, "app-1", 1);
        assert!(a.starts_with("hg_whsec_"));
        assert_eq!(a, derive_secret(&k, "app-1", 1));
        assert_ne!(a, derive_secret(&k, "app-1", 2));
        assert_ne!(a, derive_secret(&k, "app-2", 1));
    }

    #[test]
    fn webhooks_reach_public_addresses_only() {
        let cases: &[(&str, bool, bool)] = &[
            // address, allowed, allowed with loopback allowed
            ("93.184.216.34", true, true),
            ("2606:2800:220:1:248:1893:25c8:1946", true, true),
            ("127.0.0.1", false, true),
            ("127.8.9.10", false, true),
            ("::1", false, true),
            ("10.1.2.3", false, false),
            ("172.16.0.1", false, false),
            ("172.31.255.255", false, false),
            ("192.168.1.1", false, false),
            ("169.254.169.254", false, false),
            ("100.64.0.1", false, false),
            ("0.0.0.0", false, false),
            ("0.1.2.3", false, false),
            ("255.255.255.255", false, false),
            ("224.0.0.1", false, false),
            ("192.0.2.1", false, false),
            ("198.18.0.1", false, false),
            ("240.0.0.1", false, false),
            ("::", false, false),
            ("fd00::1", false, false),
            ("fe80::1", false, false),
            ("ff02::1", false, false),
            ("2001:db8::1", false, false),
            ("::ffff:10.0.0.1", false, false),
            ("::ffff:127.0.0.1", false, true),
            ("::ffff:93.184.216.34", true, true),
            ("64:ff9b::a00:1", false, false),
            ("::10.0.0.1", false, false),
            ("172.32.0.1", true, true),
            ("100.128.0.1", true, true),
        ];
        for (ip, allowed, with_loopback) in cases {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(may_receive(ip, false), *allowed, "{ip}");
            assert_eq!(may_receive(ip, true), *with_loopback, "{ip} with loopback");
        }
    }
}
