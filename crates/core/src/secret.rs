//! Secrets and identifiers: the one random source, the type prefixes that make
//! a leaked secret recognisable, and the SHA-256 digests that are stored in
//! place of the secrets (DESIGN.md, security rules).
//!
//! Every secret carries 256 bits from the operating system's CSPRNG. Because
//! they are high-entropy, a fast hash is the right digest; user passwords are
//! a different matter and are hashed with argon2id by the server.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The kinds of bearer secret healthgate issues, each with its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ClientSecret,
    AuthorizationCode,
    AccessToken,
    RefreshToken,
    Session,
    Csrf,
    ConnectCode,
    ApiKey,
    /// A single-use code that stands in for a second factor.
    RecoveryCode,
    /// A link that verifies an email address.
    EmailVerification,
    /// A link that lets a person choose a new password.
    PasswordReset,
    /// A SMART EHR launch, handed to the app in its launch URL.
    SmartLaunch,
    /// A pushed authorization request (RFC 9126), in its `request_uri`.
    PushedRequest,
    /// An initial access token for dynamic client registration (RFC 7591).
    RegistrationToken,
    /// A client's registration access token (RFC 7592).
    RegistrationAccess,
}

impl SecretKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::ClientSecret => "hg_cs_",
            Self::AuthorizationCode => "hg_ac_",
            Self::AccessToken => "hg_at_",
            Self::RefreshToken => "hg_rt_",
            Self::Session => "hg_ss_",
            Self::Csrf => "hg_csrf_",
            Self::ConnectCode => "hg_cc_",
            Self::ApiKey => "hg_key_",
            Self::RecoveryCode => "hg_rc_",
            Self::EmailVerification => "hg_ev_",
            Self::PasswordReset => "hg_pr_",
            Self::SmartLaunch => "hg_ln_",
            Self::PushedRequest => "hg_par_",
            Self::RegistrationToken => "hg_iat_",
            Self::RegistrationAccess => "hg_rat_",
        }
    }
}

/// A freshly minted secret: the value handed out once, and the digest that is
/// stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    pub value: String,
    pub digest: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("value", &"<redacted>")
            .field("digest", &self.digest)
            .finish()
    }
}

/// Fills `buf` from the operating system's CSPRNG. The only randomness in
/// healthgate goes through here.
pub fn random_bytes(buf: &mut [u8]) {
    // A failing OS RNG leaves nothing safe to do: never continue with a weak secret.
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// Mints a 256-bit secret of the given kind.
pub fn mint(kind: SecretKind) -> Minted {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes);
    let value = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes));
    let digest = digest(&value);
    Minted { value, digest }
}

/// The stored form of a secret: lowercase hex SHA-256 of its exact bytes.
pub fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in hash {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0x0f), 16).unwrap_or('0'));
    }
    out
}

/// Whether `presented` hashes to `stored_digest`, compared in constant time.
pub fn matches_digest(presented: &str, stored_digest: &str) -> bool {
    constant_time_eq(&digest(presented), stored_digest)
}

/// A value bound to `parts` under `key`: base64url (no padding) of
/// HMAC-SHA256 over `label` and the parts, each ended by a NUL so that no
/// two different lists give the same input. Anyone holding the key can
/// recompute it from the parts; no one else can forge it.
pub fn keyed_digest(key: &[u8], label: &str, parts: &[&str]) -> String {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length; new_from_slice cannot fail here.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.update(b"\0");
    for part in parts {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Constant-time equality of two strings (length is not hidden).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

const ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A readable, typed identifier such as `usr-j21vwWTG0EiPq3Xz`: a prefix, a
/// dash and 16 random alphanumerics (about 95 bits). Identifiers are not
/// secrets; they only need to be unique and unguessable enough not to be
/// enumerated.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + 17);
    id.push_str(prefix);
    id.push('-');
    for b in bytes {
        // 256 % 62 bias is irrelevant for identifiers.
        id.push(ID_ALPHABET[(b as usize) % ID_ALPHABET.len()] as char);
    }
    id
}

/// Like [`new_id`], but the first six of the sixteen characters count the
/// seconds since 1970 at `now`, so identifiers made later sort after those
/// made earlier; the other ten (about 59 bits) are random. Rows keyed by
/// them (a token family and an event for every token issued) are added at
/// the end of their indexes instead of anywhere in them, which keeps a
/// commit's writes to a few pages.
pub fn new_ordered_id(prefix: &str, now: i64) -> String {
    let base = ID_ALPHABET.len() as u64;
    let mut seconds = now.max(0) as u64;
    let mut head = [b'0'; 6];
    for slot in head.iter_mut().rev() {
        *slot = ID_ALPHABET[(seconds % base) as usize];
        seconds /= base;
    }
    let mut bytes = [0u8; 10];
    random_bytes(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + 17);
    id.push_str(prefix);
    id.push('-');
    id.extend(head.iter().map(|&b| b as char));
    for b in bytes {
        id.push(ID_ALPHABET[(b as usize) % ID_ALPHABET.len()] as char);
    }
    id
}

/// Characters of temporary passwords: letters and digits people can read
/// back without confusing them (no `0`/`O`, `1`/`l`/`I`).
const PASSWORD_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Length of a temporary password: 22 characters of a 57-letter alphabet,
/// about 128 bits.
pub const TEMPORARY_PASSWORD_LEN: usize = 22;

/// A temporary password an operator hands to a person once (an account
/// reset): [`TEMPORARY_PASSWORD_LEN`] characters drawn without bias
/// (rejection sampling) from [`random_bytes`].
pub fn temporary_password() -> String {
    // The largest multiple of the alphabet's size that fits in a byte:
    // bytes at or above it are drawn again, so every character is equally
    // likely.
    let limit = 256 - 256 % PASSWORD_ALPHABET.len();
    let mut out = String::with_capacity(TEMPORARY_PASSWORD_LEN);
    let mut buf = [0u8; 32];
    while out.len() < TEMPORARY_PASSWORD_LEN {
        random_bytes(&mut buf);
        for &b in &buf {
            if (b as usize) < limit && out.len() < TEMPORARY_PASSWORD_LEN {
                out.push(PASSWORD_ALPHABET[b as usize % PASSWORD_ALPHABET.len()] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_carry_prefix_and_256_bits() {
        let m = mint(SecretKind::AccessToken);
        let body = m.value.strip_prefix("hg_at_").expect("prefix");
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_eq!(m.digest, digest(&m.value));
        assert_ne!(mint(SecretKind::AccessToken).value, m.value);
    }

    #[test]
    fn digest_is_sha256_hex() {
        // FIPS 180-2 test vector.
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn matches_digest_rejects_other_secrets() {
        let m = mint(SecretKind::RefreshToken);
        assert!(matches_digest(&m.value, &m.digest));
        assert!(!matches_digest("hg_rt_other", &m.digest));
    }

    #[test]
    fn ids_are_typed_and_distinct() {
        let a = new_id("usr");
        assert!(a.starts_with("usr-"));
        assert_eq!(a.len(), 4 + 16);
        assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, new_id("usr"));
    }

    #[test]
    fn ordered_ids_sort_by_the_second_they_were_made() {
        let a = new_ordered_id("fam", 1_796_000_000);
        assert!(a.starts_with("fam-"));
        assert_eq!(a.len(), "fam-".len() + 16);
        assert!(a[4..].bytes().all(|b| ID_ALPHABET.contains(&b)));
        assert_ne!(a, new_ordered_id("fam", 1_796_000_000));
        for (earlier, later) in [(0, 1), (61, 62), (1_796_000_000, 1_796_000_001), (-5, 0)] {
            let (x, y) = (new_ordered_id("evt", earlier), new_ordered_id("evt", later));
            assert!(x[..10] <= y[..10], "{x} {y}");
            if earlier >= 0 {
                assert!(x < y, "{x} {y}");
            }
        }
    }

    #[test]
    fn minted_debug_hides_the_value() {
        let m = mint(SecretKind::ClientSecret);
        assert!(!format!("{m:?}").contains(&m.value));
    }

    #[test]
    fn keyed_digests_bind_every_part() {
        let d = keyed_digest(b"key", "label", &["a", "b"]);
        assert_eq!(d.len(), 43);
        assert_eq!(d, keyed_digest(b"key", "label", &["a", "b"]));
        assert_ne!(d, keyed_digest(b"other", "label", &["a", "b"]));
        assert_ne!(d, keyed_digest(b"key", "other", &["a", "b"]));
        assert_ne!(d, keyed_digest(b"key", "label", &["ab"]));
        assert_ne!(d, keyed_digest(b"key", "label", &["a", "b", ""]));
    }

    #[test]
    fn temporary_passwords_are_long_readable_and_distinct() {
        let a = temporary_password();
        assert_eq!(a.len(), TEMPORARY_PASSWORD_LEN);
        assert!(a.bytes().all(|b| PASSWORD_ALPHABET.contains(&b)), "{a}");
        assert!(!a.contains(['0', 'O', '1', 'l', 'I']), "{a}");
        assert_ne!(a, temporary_password());
        // At least 128 bits.
        let bits = (PASSWORD_ALPHABET.len() as f64).log2() * TEMPORARY_PASSWORD_LEN as f64;
        assert!(bits >= 128.0, "{bits}");
    }
}
