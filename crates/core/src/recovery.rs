//! Recovery by email, without IO: how long the links sent by email live,
//! who may be sent what, how often an address may ask for a reset link, and
//! how the mail worker retries (NIST SP 800-63B §6.1.2.3: a recovery secret
//! is sent to an address of record; RFC 9700's and DESIGN's rules on
//! secrets: 256 bits, single use, stored as digests).
//!
//! An address is used for recovery and security notices only once it is
//! verified: a person followed a link sent to it. A new or changed address
//! is unverified until then.

use crate::throttle::{FailureRun, Verdict};
use crate::user::{User, validate_email};

/// What a link sent by email lets its holder do, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Prove that the address is theirs.
    VerifyEmail,
    /// Choose a new password (and end every session and token).
    ResetPassword,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }

    /// The secret's kind (and so its readable prefix).
    pub fn secret_kind(self) -> crate::secret::SecretKind {
        match self {
            Self::VerifyEmail => crate::secret::SecretKind::EmailVerification,
            Self::ResetPassword => crate::secret::SecretKind::PasswordReset,
        }
    }
}

/// The lifetimes and limits of recovery by email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Seconds a verification link works (default 24 hours: people read
    /// mail late, and the link grants nothing but the verification).
    pub verification_ttl: i64,
    /// Seconds a reset link works (default 30 minutes: it takes over the
    /// account).
    pub reset_ttl: i64,
    /// Reset requests for one address (as typed, with or without an
    /// account) within `request_window`; the next one is refused (429).
    pub reset_requests: u32,
    /// Verification links one account may ask for within `request_window`.
    pub verification_requests: u32,
    pub request_window: i64,
    /// Seconds a security notice is retried before it is given up.
    pub notice_retry_for: i64,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            verification_ttl: 24 * 3600,
            reset_ttl: 30 * 60,
            reset_requests: 3,
            verification_requests: 5,
            request_window: 3600,
            notice_retry_for: 24 * 3600,
        }
    }
}

impl RecoveryPolicy {
    /// When a link of `purpose` minted at `now` stops working.
    pub fn link_expires_at(&self, purpose: LinkPurpose, now: i64) -> i64 {
        now + match purpose {
            LinkPurpose::VerifyEmail => self.verification_ttl,
            LinkPurpose::ResetPassword => self.reset_ttl,
        }
    }

    /// When the worker stops retrying a message of `kind` queued at `now`:
    /// a link is worth sending only while it works.
    pub fn give_up_at(&self, kind: MailKind, now: i64) -> i64 {
        match kind {
            MailKind::Verification => self.link_expires_at(LinkPurpose::VerifyEmail, now),
            MailKind::Reset => self.link_expires_at(LinkPurpose::ResetPassword, now),
            MailKind::Notice => now + self.notice_retry_for,
        }
    }

    /// The limit on reset requests per address.
    pub fn reset_limit(&self) -> RequestLimit {
        RequestLimit {
            limit: self.reset_requests,
            window: self.request_window,
        }
    }

    /// The limit on verification links per account.
    pub fn verification_limit(&self) -> RequestLimit {
        RequestLimit {
            limit: self.verification_requests,
            window: self.request_window,
        }
    }
}

/// At most `limit` requests for one subject within `window` seconds,
/// counted in the database (the `throttles` table) so the limit holds
/// across nodes. A run is forgotten once its last counted request is more
/// than `window` old; a refused request is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimit {
    pub limit: u32,
    pub window: i64,
}

impl RequestLimit {
    /// A run whose last request is before this is forgotten.
    pub fn forget_before(&self, now: i64) -> i64 {
        now - self.window
    }

    /// How a request is answered before it is counted: refused while the
    /// subject is blocked.
    pub fn verdict(&self, run: Option<&FailureRun>, now: i64) -> Verdict {
        match run.and_then(|r| r.blocked_until) {
            Some(until) if until > now => Verdict::Blocked { until },
            _ => Verdict::Go,
        }
    }

    /// After counting a request: `Some(until)` when the run has gone past
    /// the limit and the subject is refused until then (just past the
    /// moment the run is forgotten, so the next request starts afresh).
    pub fn block_after(&self, run: &FailureRun, now: i64) -> Option<i64> {
        (run.failures > self.limit).then_some(now + self.window + 1)
    }
}

/// What a queued message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Verification,
    Reset,
    Notice,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verification => "verification",
            Self::Reset => "reset",
            Self::Notice => "notice",
        }
    }
}

impl std::str::FromStr for MailKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "verification" => Ok(Self::Verification),
            "reset" => Ok(Self::Reset),
            "notice" => Ok(Self::Notice),
            other => Err(format!("unknown mail kind {other:?}")),
        }
    }
}

/// Seconds before the next attempt after `attempts` failed ones: 15, 30,
/// 60 … seconds, at most 10 minutes.
pub fn retry_delay(attempts: i64) -> i64 {
    let doublings = attempts.clamp(1, 16) - 1;
    (15i64 << doublings).min(600)
}

/// When a message that failed its `attempts`-th attempt at `now` is tried
/// next; `None` when it is given up (the next try would be past
/// `give_up_at`, or the server refused it for good).
pub fn next_attempt(attempts: i64, now: i64, give_up_at: i64, permanent: bool) -> Option<i64> {
    let next = now + retry_delay(attempts);
    (!permanent && next <= give_up_at).then_some(next)
}

/// An address as typed into "Forgot password", as it is looked up and
/// counted: trimmed and lowercased (addresses are matched without regard
/// to case); `None` if it is not shaped like an address.
pub fn normalize_email(typed: &str) -> Option<String> {
    let address = typed.trim().to_lowercase();
    validate_email(&address).ok().map(|()| address)
}

/// Why a verification link is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerificationRefused {
    #[error("there is no email address on the account to verify")]
    NoAddress,
    #[error("the email address is already verified")]
    AlreadyVerified,
}

/// Where a verification link for `user` goes: the address the account has
/// now, while it is unverified.
pub fn verification_recipient(user: &User) -> Result<&str, VerificationRefused> {
    let address = user
        .email
        .as_deref()
        .ok_or(VerificationRefused::NoAddress)?;
    if user.email_verified_at.is_some() {
        return Err(VerificationRefused::AlreadyVerified);
    }
    Ok(address)
}

/// Where a reset link for `user` goes, if anywhere: only to a verified
/// address, of an account that is not locked and signs in with a password
/// here (an account a partner created without one signs in through it; a
/// reset would give it a password it never had).
pub fn reset_recipient(user: &User) -> Option<&str> {
    if !user.is_active() || user.password_hash.is_none() {
        return None;
    }
    user.verified_email()
}

/// Where a security notice for `user` goes, if anywhere: only to a
/// verified address (an unverified one may be anyone's).
pub fn notice_recipient(user: &User) -> Option<&str> {
    user.verified_email()
}

/// A change a person is told about by email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// They changed their password (profile page, or the page a temporary
    /// password leads to), or a partner app set it.
    PasswordChanged,
    /// They chose a new password by a reset link.
    PasswordReset,
    /// An operator gave the account a temporary password.
    TemporaryPassword,
    /// A second factor was added (`what`: e.g. "an authenticator app").
    FactorAdded,
    /// A second factor was removed.
    FactorRemoved,
    /// An operator reset every second factor of the account.
    FactorsReset,
    /// New recovery codes were made (the old ones no longer work).
    RecoveryCodesRenewed,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::TemporaryPassword => "temporary_password",
            Self::FactorAdded => "factor_added",
            Self::FactorRemoved => "factor_removed",
            Self::FactorsReset => "factors_reset",
            Self::RecoveryCodesRenewed => "recovery_codes_renewed",
        }
    }

    /// The subject line, and the sentence saying what happened.
    pub fn wording(self) -> (&'static str, &'static str) {
        match self {
            Self::PasswordChanged => (
                "Your password was changed",
                "The password of your account was changed.",
            ),
            Self::PasswordReset => (
                "Your password was reset",
                "A new password was chosen for your account with a reset link sent to this address. Every browser signed in as you was signed out, and every app you connected must be authorized again.",
            ),
            Self::TemporaryPassword => (
                "Your password was reset by an administrator",
                "An administrator gave your account a temporary password. You will choose your own when you next sign in with it.",
            ),
            Self::FactorAdded => (
                "A second factor was added to your account",
                "A second factor was added to your account.",
            ),
            Self::FactorRemoved => (
                "A second factor was removed from your account",
                "A second factor was removed from your account.",
            ),
            Self::FactorsReset => (
                "Your second factors were reset",
                "An administrator removed every second factor of your account.",
            ),
            Self::RecoveryCodesRenewed => (
                "New recovery codes were made for your account",
                "New recovery codes were made for your account; the old ones no longer work.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::UserType;

    fn person(email: Option<&str>, verified: bool) -> User {
        User {
            id: "usr-1".into(),
            username: "alice".into(),
            name: None,
            email: email.map(str::to_owned),
            user_type: UserType::Member,
            password_hash: Some("$argon2id$…".into()),
            created_at: 0,
            locked_at: None,
            provisioned_by: None,
            operator: false,
            password_reset_at: None,
            email_verified_at: verified.then_some(10),
            fhir_user: None,
        }
    }

    #[test]
    fn links_are_short_lived_and_a_reset_shorter_than_a_verification() {
        let p = RecoveryPolicy::default();
        assert_eq!(p.link_expires_at(LinkPurpose::ResetPassword, 100), 1900);
        assert_eq!(
            p.link_expires_at(LinkPurpose::VerifyEmail, 100),
            100 + 86_400
        );
        assert_eq!(p.give_up_at(MailKind::Reset, 100), 1900);
        assert_eq!(p.give_up_at(MailKind::Notice, 100), 100 + 86_400);
        assert_eq!(LinkPurpose::ResetPassword.secret_kind().prefix(), "hg_pr_");
        assert_eq!(LinkPurpose::VerifyEmail.secret_kind().prefix(), "hg_ev_");
    }

    #[test]
    fn only_a_verified_address_of_an_active_password_account_gets_a_reset_link() {
        assert_eq!(
            reset_recipient(&person(Some("a@x.org"), true)),
            Some("a@x.org")
        );
        assert_eq!(reset_recipient(&person(Some("a@x.org"), false)), None);
        assert_eq!(reset_recipient(&person(None, true)), None);
        let mut locked = person(Some("a@x.org"), true);
        locked.locked_at = Some(5);
        assert_eq!(reset_recipient(&locked), None);
        let mut provisioned = person(Some("a@x.org"), true);
        provisioned.password_hash = None;
        assert_eq!(reset_recipient(&provisioned), None);
        // Notices go to a verified address, whatever the account's state.
        assert_eq!(notice_recipient(&locked), Some("a@x.org"));
        assert_eq!(notice_recipient(&person(Some("a@x.org"), false)), None);
    }

    #[test]
    fn a_verification_link_goes_to_the_unverified_address_only() {
        assert_eq!(
            verification_recipient(&person(Some("a@x.org"), false)),
            Ok("a@x.org")
        );
        assert_eq!(
            verification_recipient(&person(Some("a@x.org"), true)),
            Err(VerificationRefused::AlreadyVerified)
        );
        assert_eq!(
            verification_recipient(&person(None, false)),
            Err(VerificationRefused::NoAddress)
        );
    }

    #[test]
    fn addresses_are_looked_up_trimmed_and_lowercased() {
        assert_eq!(
            normalize_email("  Alice@Example.ORG "),
            Some("alice@example.org".into())
        );
        for bad in ["", "alice", "@x.org", "a b@x.org", "a@"] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn reset_requests_are_limited_per_window_and_never_for_good() {
        let limit = RecoveryPolicy::default().reset_limit();
        let run = |failures: u32, blocked_until: Option<i64>| FailureRun {
            failures,
            first_failure_at: 0,
            last_failure_at: 100,
            blocked_until,
        };
        assert_eq!(limit.verdict(None, 100), Verdict::Go);
        assert_eq!(limit.block_after(&run(3, None), 100), None);
        let until = limit.block_after(&run(4, None), 100).expect("blocked");
        assert_eq!(until, 100 + 3600 + 1);
        assert_eq!(
            limit.verdict(Some(&run(4, Some(until))), 200),
            Verdict::Blocked { until }
        );
        assert_eq!(
            Verdict::Blocked { until }.retry_after(200),
            Some(until - 200)
        );
        // Once the block ends the run is older than the window: forgotten.
        assert_eq!(
            limit.verdict(Some(&run(4, Some(until))), until),
            Verdict::Go
        );
        assert!(100 < limit.forget_before(until));
    }

    #[test]
    fn mail_is_retried_with_backoff_until_it_is_worth_nothing() {
        assert_eq!(
            (1..=8).map(retry_delay).collect::<Vec<_>>(),
            [15, 30, 60, 120, 240, 480, 600, 600]
        );
        assert_eq!(next_attempt(1, 100, 1000, false), Some(115));
        assert_eq!(next_attempt(1, 100, 110, false), None);
        assert_eq!(next_attempt(1, 100, 1000, true), None);
        assert_eq!(retry_delay(i64::MAX), 600);
    }

    #[test]
    fn notices_and_kinds_have_words() {
        for n in [
            Notice::PasswordChanged,
            Notice::PasswordReset,
            Notice::TemporaryPassword,
            Notice::FactorAdded,
            Notice::FactorRemoved,
            Notice::FactorsReset,
            Notice::RecoveryCodesRenewed,
        ] {
            let (subject, sentence) = n.wording();
            assert!(!subject.is_empty() && sentence.ends_with('.'), "{n:?}");
        }
        for k in [MailKind::Verification, MailKind::Reset, MailKind::Notice] {
            assert_eq!(k.as_str().parse::<MailKind>(), Ok(k));
        }
    }
}
