//! Second factors: TOTP codes (RFC 6238) checked so that none is accepted
//! twice, recovery codes, the policy that says who must have a second
//! factor, and what a sign-in proved: its authentication methods (`amr`,
//! RFC 8176) and the assurance level they reach (`acr`).

use std::fmt;
use std::str::FromStr;

use totp_rs::{Algorithm, TOTP};

use crate::secret::{self, Minted, SecretKind};

/// A TOTP step is 30 seconds (RFC 6238 §4, what every authenticator app
/// uses); codes are 6 digits, HMAC-SHA1.
pub const TOTP_STEP: i64 = 30;
const TOTP_DIGITS: usize = 6;
/// Bytes of a TOTP secret: 160 bits, as RFC 4226 §4 recommends.
pub const TOTP_SECRET_LEN: usize = 20;
/// How many recovery codes a person is given at a time.
pub const RECOVERY_CODES: usize = 10;
/// How long a person who gave their password has to give their second
/// factor before signing in starts again.
pub const SECOND_STEP_TTL: i64 = 300;

/// A TOTP secret: its raw bytes, shown to people in base32.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; TOTP_SECRET_LEN];
        secret::random_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn totp(&self) -> Option<TOTP> {
        TOTP::new(
            Algorithm::SHA1,
            TOTP_DIGITS,
            0,
            TOTP_STEP as u64,
            self.0.clone(),
        )
        .ok()
    }

    /// The secret as an authenticator app takes it typed in: base32, no
    /// padding, in groups of four for reading.
    pub fn base32(&self) -> String {
        self.totp()
            .map(|t| t.get_secret_base32())
            .unwrap_or_default()
    }

    /// The base32 secret in groups of four characters, for reading aloud.
    pub fn base32_grouped(&self) -> String {
        let plain = self.base32();
        let chars: Vec<char> = plain.chars().collect();
        chars
            .chunks(4)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `otpauth://` URI a QR code carries (the Key Uri Format every
    /// authenticator app reads): `issuer` names the platform, `account` the
    /// person.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        // Each part of the label is escaped on its own and joined by a
        // literal colon, which every app splits on (an escaped one, some
        // read as part of the account name). Labels are path text: a space
        // is %20 there, not '+'.
        let escape = |s: &str| -> String {
            url::form_urlencoded::byte_serialize(s.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        let label = format!("{}:{}", escape(issuer), escape(account));
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("secret", &self.base32())
            .append_pair("issuer", issuer)
            .append_pair("algorithm", "SHA1")
            .append_pair("digits", &TOTP_DIGITS.to_string())
            .append_pair("period", &TOTP_STEP.to_string());
        format!("otpauth://totp/{label}?{}", query.finish())
    }

    /// The code for the step holding `at` (epoch seconds).
    pub fn code_at(&self, at: i64) -> String {
        self.totp()
            .map(|t| t.generate(at.max(0) as u64))
            .unwrap_or_default()
    }

    /// The step `code` belongs to, if it is right for the step holding
    /// `now` or the one either side (clocks drift; a code typed as it
    /// changes must work). Whether that step was used already is the
    /// store's to say: a step is accepted only when it is later than the
    /// last one used.
    pub fn matching_step(&self, code: &str, now: i64) -> Option<i64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = now.div_euclid(TOTP_STEP);
        // Every candidate is compared, so the time taken says nothing of
        // which matched.
        let mut found = None;
        for step in [current - 1, current, current + 1] {
            if secret::constant_time_eq(&self.code_at(step * TOTP_STEP), &code) {
                found = Some(step);
            }
        }
        found
    }
}

/// What a person typed where a second factor is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactorCode {
    /// Six digits from an authenticator app.
    Totp(String),
    /// One of their recovery codes.
    Recovery(String),
}

impl SecondFactorCode {
    /// Reads what was typed: a recovery code by its prefix, otherwise a
    /// TOTP code (spaces and dashes people put in are dropped).
    pub fn parse(typed: &str) -> Option<Self> {
        let typed = typed.trim();
        if typed.starts_with(SecretKind::RecoveryCode.prefix()) {
            return Some(Self::Recovery(typed.to_owned()));
        }
        let digits: String = typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        (digits.len() == TOTP_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(Self::Totp(digits))
    }
}

/// A fresh set of recovery codes: the values shown once, and the digests
/// kept.
pub fn recovery_codes() -> Vec<Minted> {
    (0..RECOVERY_CODES)
        .map(|_| secret::mint(SecretKind::RecoveryCode))
        .collect()
}

/// A kind of second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactorKind {
    /// An authenticator app (RFC 6238).
    Totp,
    /// A WebAuthn credential: a security key or a passkey.
    Passkey,
}

impl FactorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::Passkey => "passkey",
        }
    }
}

impl FromStr for FactorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "totp" => Ok(Self::Totp),
            "passkey" => Ok(Self::Passkey),
            other => Err(format!("unknown second factor kind '{other}'")),
        }
    }
}

/// Who must have a second factor: everyone, or only people the roles and
/// operator settings name (`optional`, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MfaPolicy {
    #[default]
    Optional,
    Required,
}

impl MfaPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

impl fmt::Display for MfaPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MfaPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!(
                "mfa must be \"optional\" or \"required\", not \"{other}\""
            )),
        }
    }
}

/// Why a person must have a second factor, if they must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaRequirement {
    /// Everyone on this platform (`mfa = "required"`).
    Everyone,
    /// The platform's operators (`operators_require_mfa`).
    Operator,
    /// A role they hold in an organization (`[roles.NAME] require_mfa`).
    Role(String),
}

/// Whether a person must have a second factor: by the platform's policy,
/// because they are an operator and operators must, or because they hold a
/// role that requires one (`roles_held` are the roles they hold that do).
pub fn requirement(
    policy: MfaPolicy,
    operators_require: bool,
    operator: bool,
    roles_requiring: &[String],
) -> Option<MfaRequirement> {
    if policy == MfaPolicy::Required {
        return Some(MfaRequirement::Everyone);
    }
    if operators_require && operator {
        return Some(MfaRequirement::Operator);
    }
    roles_requiring.first().cloned().map(MfaRequirement::Role)
}

/// An authentication method a sign-in used (RFC 8176 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// A password.
    Pwd,
    /// A one-time password: a TOTP code or a recovery code.
    Otp,
    /// A proof of possession of a hardware-secured key (a security key).
    Hwk,
    /// A proof of possession of a software-secured key (a synced passkey).
    Swk,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pwd => "pwd",
            Self::Otp => "otp",
            Self::Hwk => "hwk",
            Self::Swk => "swk",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pwd" => Some(Self::Pwd),
            "otp" => Some(Self::Otp),
            "hwk" => Some(Self::Hwk),
            "swk" => Some(Self::Swk),
            _ => None,
        }
    }

    /// Whether the method is a second factor (anything but a password).
    pub fn is_second_factor(self) -> bool {
        self != Self::Pwd
    }
}

/// The methods a sign-in used, in a stable order; stored space-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Amr(Vec<Method>);

impl Amr {
    pub fn of(methods: &[Method]) -> Self {
        let mut v = methods.to_vec();
        v.sort();
        v.dedup();
        Self(v)
    }

    /// Reads the stored form; unknown words are dropped.
    pub fn parse(s: &str) -> Self {
        Self::of(&s.split(' ').filter_map(Method::parse).collect::<Vec<_>>())
    }

    /// With `method` added.
    pub fn with(&self, method: Method) -> Self {
        let mut v = self.0.clone();
        v.push(method);
        Self::of(&v)
    }

    pub fn methods(&self) -> &[Method] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a second factor was used.
    pub fn multi_factor(&self) -> bool {
        self.0.iter().any(|m| m.is_second_factor())
    }

    /// The assurance level this sign-in reached.
    pub fn acr(&self) -> Acr {
        if self.multi_factor() {
            Acr::Aal2
        } else {
            Acr::Aal1
        }
    }

    /// The claim's values, e.g. `["otp", "pwd"]`.
    pub fn claim(&self) -> Vec<&'static str> {
        self.0.iter().map(|m| m.as_str()).collect()
    }
}

impl fmt::Display for Amr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.claim().join(" "))
    }
}

/// The authentication context classes this server speaks of: the
/// authenticator assurance levels of NIST SP 800-63B, by the URIs US
/// government identity providers publish for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Acr {
    /// A single factor: a password.
    Aal1,
    /// Two factors: a password and a second factor (or a passkey that is
    /// both).
    Aal2,
}

impl Acr {
    pub const ALL: [Acr; 2] = [Acr::Aal1, Acr::Aal2];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aal1 => "http://idmanagement.gov/ns/assurance/aal/1",
            Self::Aal2 => "http://idmanagement.gov/ns/assurance/aal/2",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The level an `acr_values` request asks for: the lowest of the values
    /// it names that this server knows (they are in order of preference,
    /// OpenID Connect Core §3.1.2.1, and any one satisfies it), or `None`
    /// when it names none of them.
    pub fn requested(acr_values: &str) -> Option<Self> {
        acr_values.split(' ').filter_map(Self::parse).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 test vectors (the 8-digit codes' last
    /// six digits: a 6-digit code is the same value mod 10^6).
    #[test]
    fn totp_codes_match_rfc_6238_test_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        for (t, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(secret.code_at(t), &eight[2..], "t={t}");
        }
        assert_eq!(secret.base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            secret.base32_grouped(),
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"
        );
    }

    #[test]
    fn a_code_matches_its_step_and_the_steps_either_side_only() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_015;
        let step = now / TOTP_STEP;
        for offset in [-1, 0, 1] {
            let at = now + offset * TOTP_STEP;
            assert_eq!(
                secret.matching_step(&secret.code_at(at), now),
                Some(step + offset)
            );
        }
        for offset in [-3, -2, 2, 3] {
            let code = secret.code_at(now + offset * TOTP_STEP);
            // A far step's code can coincide with a near one's by chance.
            if (-1..=1).all(|o| secret.code_at(now + o * TOTP_STEP) != code) {
                assert_eq!(secret.matching_step(&code, now), None, "{offset}");
            }
        }
        for bad in ["", "12345", "1234567", "abcdef", "12 34 5x"] {
            assert_eq!(secret.matching_step(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn the_otpauth_uri_is_what_authenticator_apps_read() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(
            secret.otpauth_uri("Harbor Health", "jane@example.com"),
            "otpauth://totp/Harbor%20Health:jane%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Harbor+Health&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn what_people_type_is_read_as_a_totp_or_a_recovery_code() {
        assert_eq!(
            SecondFactorCode::parse(" 123 456 "),
            Some(SecondFactorCode::Totp("123456".into()))
        );
        assert_eq!(
            SecondFactorCode::parse("123-456"),
            Some(SecondFactorCode::Totp("123456".into()))
        );
        let code = &recovery_codes()[0].value;
        assert_eq!(
            SecondFactorCode::parse(&format!(" {code} ")),
            Some(SecondFactorCode::Recovery(code.clone()))
        );
        for bad in ["", "12345", "hello!", "1234567"] {
            assert_eq!(SecondFactorCode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn recovery_codes_are_ten_distinct_secrets() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut digests: Vec<&str> = codes.iter().map(|c| c.digest.as_str()).collect();
        digests.sort();
        digests.dedup();
        assert_eq!(digests.len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| c.value.starts_with("hg_rc_")));
    }

    #[test]
    fn who_must_have_a_second_factor() {
        let roles = vec!["clinician".to_owned()];
        let none: Vec<String> = vec![];
        for (policy, ops, operator, roles, want) in [
            (
                MfaPolicy::Required,
                false,
                false,
                &none,
                Some(MfaRequirement::Everyone),
            ),
            (MfaPolicy::Optional, false, false, &none, None),
            (MfaPolicy::Optional, false, true, &none, None),
            (
                MfaPolicy::Optional,
                true,
                true,
                &none,
                Some(MfaRequirement::Operator),
            ),
            (MfaPolicy::Optional, true, false, &none, None),
            (
                MfaPolicy::Optional,
                false,
                false,
                &roles,
                Some(MfaRequirement::Role("clinician".into())),
            ),
        ] {
            assert_eq!(requirement(policy, ops, operator, roles), want);
        }
        assert_eq!("required".parse(), Ok(MfaPolicy::Required));
        assert!("sometimes".parse::<MfaPolicy>().is_err());
    }

    #[test]
    fn amr_and_acr() {
        let pwd = Amr::of(&[Method::Pwd]);
        assert_eq!(pwd.acr(), Acr::Aal1);
        assert!(!pwd.multi_factor());
        let both = pwd.with(Method::Otp);
        assert_eq!(both.claim(), ["pwd", "otp"]);
        assert_eq!(both.acr(), Acr::Aal2);
        assert_eq!(Amr::parse(&both.to_string()), both);
        assert_eq!(
            Amr::parse("pwd nonsense hwk"),
            Amr::of(&[Method::Hwk, Method::Pwd])
        );
        assert_eq!(Amr::parse(""), Amr::default());
        assert_eq!(
            Acr::requested(
                "urn:other http://idmanagement.gov/ns/assurance/aal/2 http://idmanagement.gov/ns/assurance/aal/1"
            ),
            Some(Acr::Aal1)
        );
        assert_eq!(
            Acr::requested("http://idmanagement.gov/ns/assurance/aal/2"),
            Some(Acr::Aal2)
        );
        assert_eq!(Acr::requested("urn:other"), None);
    }
}
