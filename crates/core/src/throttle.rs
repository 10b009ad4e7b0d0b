//! Guessing stopped: the rules that slow, then stop, repeated failures
//! (RFC 6749 §2.3.1 and §10.10, RFC 9700 §4.4, NIST SP 800-63B §5.2.2).
//!
//! Three defences, each a pure rule here; the store keeps the counts that
//! must hold across nodes, the server keeps the per-node buckets:
//!
//! - a **failure run** per username (as typed, known or not, so an unknown
//!   one is answered exactly like a known one) and per client id: failures
//!   in a row, each within `forget_after` of the last. Past the free ones a
//!   sign-in waits longer and longer, then the username is locked for a
//!   while; a client past its limit is refused for a while. Nothing locks
//!   for good: a run is forgotten once its last failure is old enough.
//! - a **token bucket** per client address: `burst` requests at once, then
//!   `per_minute` a minute.
//! - a **burst**: one address failing for many different usernames.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};

/// Failures in a row for one subject (a username, a client id), as the
/// store keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRun {
    pub failures: u32,
    pub first_failure_at: i64,
    pub last_failure_at: i64,
    /// Refused until then (epoch seconds), when the run went past a limit.
    pub blocked_until: Option<i64>,
}

/// How a request that may be throttled is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Go,
    /// Not yet: try again in `retry_after` seconds.
    Wait { retry_after: i64 },
    /// Refused until `until` (epoch seconds), whatever is presented.
    Blocked { until: i64 },
}

impl Verdict {
    /// Seconds until a request may be made again, for `Retry-After`.
    pub fn retry_after(self, now: i64) -> Option<i64> {
        match self {
            Self::Go => None,
            Self::Wait { retry_after } => Some(retry_after.max(1)),
            Self::Blocked { until } => Some((until - now).max(1)),
        }
    }
}

/// Sign-in failures for one username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInPolicy {
    /// Failures in a row answered at once; from the next one on, each
    /// attempt waits (default 5).
    pub free_failures: u32,
    /// The longest wait between attempts, in seconds (default 60).
    pub max_delay: i64,
    /// Failures in a row that lock the username (default 10).
    pub lock_after: u32,
    /// How long a lock lasts, and how long after its last failure a run is
    /// forgotten, in seconds (default 900).
    pub lock_for: i64,
}

impl Default for SignInPolicy {
    fn default() -> Self {
        Self {
            free_failures: 5,
            max_delay: 60,
            lock_after: 10,
            lock_for: 900,
        }
    }
}

impl SignInPolicy {
    /// A run whose last failure is before this is forgotten.
    pub fn forget_before(&self, now: i64) -> i64 {
        now - self.lock_for
    }

    /// The wait after `failures` in a row: none for the free ones, then 1,
    /// 2, 4 … seconds, at most `max_delay`.
    pub fn delay(&self, failures: u32) -> i64 {
        if failures < self.free_failures {
            return 0;
        }
        let doublings = (failures - self.free_failures).min(30);
        (1i64 << doublings).min(self.max_delay)
    }

    /// Whether a run of `failures` locks the username.
    pub fn locks(&self, failures: u32) -> bool {
        failures >= self.lock_after
    }

    /// Whether the run of `failures` just now began to be slowed (the one
    /// failure that is audited as a throttle, not every one after it).
    pub fn starts_waiting(&self, failures: u32) -> bool {
        failures == self.free_failures
    }

    /// How the next sign-in for a username with `run` is answered.
    pub fn verdict(&self, run: Option<&FailureRun>, now: i64) -> Verdict {
        let Some(run) = run else {
            return Verdict::Go;
        };
        if let Some(until) = run.blocked_until
            && until > now
        {
            return Verdict::Blocked { until };
        }
        if run.last_failure_at < self.forget_before(now) {
            return Verdict::Go;
        }
        let ready = run.last_failure_at + self.delay(run.failures);
        if now < ready {
            Verdict::Wait {
                retry_after: ready - now,
            }
        } else {
            Verdict::Go
        }
    }
}

/// Failed authentications and `invalid_grant` answers for one client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Failures in a row that block the client id (default 20).
    pub limit: u32,
    /// A run is forgotten this many seconds after its last failure
    /// (default 60).
    pub forget_after: i64,
    /// How long a block lasts, in seconds (default 300).
    pub block_for: i64,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            limit: 20,
            forget_after: 60,
            block_for: 300,
        }
    }
}

impl ClientPolicy {
    pub fn forget_before(&self, now: i64) -> i64 {
        now - self.forget_after
    }

    /// Whether a run of `failures` blocks the client id: only the failure
    /// that reaches the limit, so a block is set (and audited) once.
    pub fn blocks(&self, failures: u32) -> bool {
        failures == self.limit
    }
}

/// A rate per client address: `burst` requests at once, refilled at
/// `per_minute` a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

/// A token bucket: full at first, one token per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    /// When it was last filled, in milliseconds.
    at_ms: i64,
}

impl Bucket {
    pub fn full(rate: Rate, now_ms: i64) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            at_ms: now_ms,
        }
    }

    /// Takes a token for a request at `now_ms`, or says how many seconds
    /// until one is there.
    pub fn take(&mut self, rate: Rate, now_ms: i64) -> Result<(), i64> {
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 60_000.0;
        self.tokens =
            (self.tokens + elapsed * f64::from(rate.per_minute)).min(f64::from(rate.burst));
        self.at_ms = self.at_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if rate.per_minute == 0 {
            return Err(60);
        }
        let missing = 1.0 - self.tokens;
        let secs = (missing * 60.0 / f64::from(rate.per_minute)).ceil() as i64;
        Err(secs.max(1))
    }

    /// Whether the bucket would be full at `now_ms`: nothing to remember.
    pub fn is_full(&self, rate: Rate, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 60_000.0;
        self.tokens + elapsed * f64::from(rate.per_minute) >= f64::from(rate.burst)
    }
}

/// What an address is rate-limited for: each has its own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Signing in.
    SignIn,
    /// The endpoints machines call: token, introspection, revocation,
    /// userinfo, the APIs.
    Api,
}

/// An address as it is counted: IPv4 whole, IPv6 by its /64 (what one
/// customer is usually given); none known is one "unknown" address.
fn address_key(ip: Option<IpAddr>) -> Option<IpAddr> {
    let ip = ip?.to_canonical();
    Some(match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
    })
}

/// Usernames failing from one address within a window.
#[derive(Debug)]
struct Burst {
    started_at: i64,
    usernames: HashSet<String>,
    reported: bool,
}

/// Most usernames remembered per address in a window: past the threshold
/// the count stops mattering.
const BURST_MEMORY: usize = 1_000;

/// Every limit, as the settings give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub sign_in: SignInPolicy,
    pub client: ClientPolicy,
    /// Sign-in attempts per address; `None`: no limit.
    pub sign_in_rate: Option<Rate>,
    /// Requests per address to the endpoints machines call; `None`: no
    /// limit.
    pub api_rate: Option<Rate>,
    /// Different usernames failing from one address within `burst_window`
    /// seconds that make a burst.
    pub burst_accounts: u32,
    pub burst_window: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sign_in: SignInPolicy::default(),
            client: ClientPolicy::default(),
            sign_in_rate: Some(Rate {
                per_minute: 30,
                burst: 20,
            }),
            api_rate: Some(Rate {
                per_minute: 6_000,
                burst: 600,
            }),
            burst_accounts: 10,
            burst_window: 600,
        }
    }
}

/// One node's throttle state: the per-address buckets, its copy of the
/// blocked client ids, the burst windows. Times are passed in.
#[derive(Debug, Default)]
pub struct Throttles {
    pub limits: Limits,
    buckets: Mutex<HashMap<(Purpose, Option<IpAddr>), Bucket>>,
    blocked_clients: RwLock<HashMap<String, i64>>,
    bursts: Mutex<HashMap<Option<IpAddr>, Burst>>,
}

impl Throttles {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    fn rate(&self, purpose: Purpose) -> Option<Rate> {
        match purpose {
            Purpose::SignIn => self.limits.sign_in_rate,
            Purpose::Api => self.limits.api_rate,
        }
    }

    /// Takes a token from `ip`'s bucket for `purpose`, or says in how many
    /// seconds to come back. Unlimited when the rate is off.
    pub fn take(&self, purpose: Purpose, ip: Option<IpAddr>, now_ms: i64) -> Result<(), i64> {
        let Some(rate) = self.rate(purpose) else {
            return Ok(());
        };
        let key = (purpose, address_key(ip));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, now_ms))
            .take(rate, now_ms)
    }

    /// Until when `client_id` is refused, as this node knows it.
    pub fn client_blocked(&self, client_id: &str, now: i64) -> Option<i64> {
        let blocked = self
            .blocked_clients
            .read()
            .unwrap_or_else(|e| e.into_inner());
        blocked.get(client_id).copied().filter(|until| *until > now)
    }

    pub fn note_client_blocked(&self, client_id: &str, until: i64) {
        let mut blocked = self
            .blocked_clients
            .write()
            .unwrap_or_else(|e| e.into_inner());
        blocked.insert(client_id.to_owned(), until);
    }

    /// Replaces this node's copy of the blocked client ids with the
    /// database's.
    pub fn set_blocked_clients(&self, now_blocked: Vec<(String, i64)>) {
        let mut blocked = self
            .blocked_clients
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *blocked = now_blocked.into_iter().collect();
    }

    /// Counts a failed sign-in for `username` from `ip`; returns how many
    /// usernames have failed from there in this window when that just
    /// reached the burst threshold (once per window).
    pub fn sign_in_failed_from(&self, ip: Option<&str>, username: &str, now: i64) -> Option<usize> {
        let window = self.limits.burst_window;
        let threshold = self.limits.burst_accounts as usize;
        let mut bursts = self.bursts.lock().unwrap_or_else(|e| e.into_inner());
        let address = address_key(ip.and_then(|ip| ip.parse().ok()));
        let burst = bursts.entry(address).or_insert_with(|| Burst {
            started_at: now,
            usernames: HashSet::new(),
            reported: false,
        });
        if now - burst.started_at >= window {
            *burst = Burst {
                started_at: now,
                usernames: HashSet::new(),
                reported: false,
            };
        }
        if burst.usernames.len() < BURST_MEMORY {
            burst.usernames.insert(username.to_owned());
        }
        let seen = burst.usernames.len();
        if seen >= threshold && !burst.reported {
            burst.reported = true;
            return Some(seen);
        }
        None
    }

    /// Forgets what no longer limits anyone: full buckets, blocks that
    /// ended, burst windows that closed.
    pub fn prune(&self, now_ms: i64) {
        let now = now_ms / 1000;
        {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            buckets.retain(|(purpose, _), bucket| match self.rate(*purpose) {
                Some(rate) => !bucket.is_full(rate, now_ms),
                None => false,
            });
        }
        {
            let mut blocked = self
                .blocked_clients
                .write()
                .unwrap_or_else(|e| e.into_inner());
            blocked.retain(|_, until| *until > now);
        }
        let window = self.limits.burst_window;
        let mut bursts = self.bursts.lock().unwrap_or_else(|e| e.into_inner());
        bursts.retain(|_, b| now - b.started_at < window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(failures: u32, last: i64) -> FailureRun {
        FailureRun {
            failures,
            first_failure_at: last - 10,
            last_failure_at: last,
            blocked_until: None,
        }
    }

    #[test]
    fn sign_ins_wait_longer_after_the_free_failures_up_to_the_cap() {
        let p = SignInPolicy::default();
        let delays: Vec<i64> = (0..14).map(|f| p.delay(f)).collect();
        assert_eq!(delays, [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.delay(u32::MAX), 60, "no overflow");
        let now = 1_000_000;
        assert_eq!(p.verdict(None, now), Verdict::Go);
        assert_eq!(p.verdict(Some(&run(4, now)), now), Verdict::Go);
        assert_eq!(
            p.verdict(Some(&run(7, now - 1)), now),
            Verdict::Wait { retry_after: 3 }
        );
        assert_eq!(p.verdict(Some(&run(7, now - 4)), now), Verdict::Go);
        assert!(p.starts_waiting(5) && !p.starts_waiting(6));
    }

    #[test]
    fn a_lock_holds_until_it_ends_and_a_run_is_then_forgotten() {
        let p = SignInPolicy::default();
        let now = 1_000_000;
        assert!(!p.locks(9) && p.locks(10));
        let locked = FailureRun {
            blocked_until: Some(now + 900),
            ..run(10, now)
        };
        assert_eq!(
            p.verdict(Some(&locked), now + 899),
            Verdict::Blocked { until: now + 900 }
        );
        assert_eq!(
            p.verdict(Some(&locked), now + 899).retry_after(now + 899),
            Some(1)
        );
        // Past the lock and the forgetting window: a fresh start.
        assert_eq!(p.verdict(Some(&locked), now + 901), Verdict::Go);
        assert!(locked.last_failure_at < p.forget_before(now + 901));
    }

    #[test]
    fn a_client_is_blocked_once_at_its_limit() {
        let p = ClientPolicy::default();
        assert!(!p.blocks(19) && p.blocks(20) && !p.blocks(21));
        assert_eq!(p.forget_before(100), 40);
    }

    #[test]
    fn a_bucket_allows_a_burst_then_its_rate() {
        let rate = Rate {
            per_minute: 60,
            burst: 3,
        };
        let mut b = Bucket::full(rate, 0);
        assert_eq!(b.take(rate, 0), Ok(()));
        assert_eq!(b.take(rate, 0), Ok(()));
        assert_eq!(b.take(rate, 0), Ok(()));
        assert_eq!(b.take(rate, 0), Err(1));
        assert!(!b.is_full(rate, 0));
        // One a second comes back.
        assert_eq!(b.take(rate, 1_000), Ok(()));
        assert_eq!(b.take(rate, 1_000), Err(1));
        assert!(b.is_full(rate, 10_000));
        // A clock that goes back takes nothing back.
        assert_eq!(b.take(rate, 500), Err(1));
        let slow = Rate {
            per_minute: 2,
            burst: 1,
        };
        let mut s = Bucket::full(slow, 0);
        assert_eq!(s.take(slow, 0), Ok(()));
        assert_eq!(s.take(slow, 0), Err(30));
    }

    #[test]
    fn an_ipv6_customer_is_one_address_and_an_ipv4_one_each() {
        let limits = Limits {
            api_rate: Some(Rate {
                per_minute: 60,
                burst: 1,
            }),
            ..Limits::default()
        };
        let t = Throttles::new(limits);
        let take = |ip: &str| t.take(Purpose::Api, ip.parse().ok(), 0);
        assert_eq!(take("2001:db8:1:2::1"), Ok(()));
        assert_eq!(take("2001:db8:1:2:ffff::9"), Err(1), "the same /64");
        assert_eq!(take("2001:db8:1:3::1"), Ok(()), "another /64");
        assert_eq!(take("192.0.2.1"), Ok(()));
        assert_eq!(take("192.0.2.2"), Ok(()));
        // Sign-in has its own bucket.
        assert_eq!(t.take(Purpose::SignIn, "192.0.2.1".parse().ok(), 0), Ok(()));
        // Full buckets are forgotten; a spent one is kept until it refills.
        t.prune(0);
        assert_eq!(take("192.0.2.1"), Err(1));
        t.prune(60_000);
        assert_eq!(take("192.0.2.1"), Ok(()));
    }

    #[test]
    fn a_burst_is_reported_once_per_window() {
        let t = Throttles::new(Limits {
            burst_accounts: 3,
            burst_window: 600,
            ..Limits::default()
        });
        let ip = Some("198.51.100.7");
        assert_eq!(t.sign_in_failed_from(ip, "a", 0), None);
        assert_eq!(t.sign_in_failed_from(ip, "a", 1), None, "the same name");
        assert_eq!(t.sign_in_failed_from(ip, "b", 2), None);
        assert_eq!(t.sign_in_failed_from(ip, "c", 3), Some(3));
        assert_eq!(t.sign_in_failed_from(ip, "d", 4), None, "once");
        assert_eq!(t.sign_in_failed_from(Some("198.51.100.8"), "e", 5), None);
        // A new window starts the count again.
        for (n, name) in ["a", "b"].iter().enumerate() {
            assert_eq!(t.sign_in_failed_from(ip, name, 600 + n as i64), None);
        }
        assert_eq!(t.sign_in_failed_from(ip, "c", 602), Some(3));
    }

    #[test]
    fn this_nodes_copy_of_the_blocked_clients_expires_and_is_replaced() {
        let t = Throttles::default();
        t.note_client_blocked("app-1", 100);
        assert_eq!(t.client_blocked("app-1", 99), Some(100));
        assert_eq!(t.client_blocked("app-1", 100), None);
        t.set_blocked_clients(vec![("app-2".into(), 200)]);
        assert_eq!(t.client_blocked("app-1", 50), None);
        assert_eq!(t.client_blocked("app-2", 50), Some(200));
    }
}
