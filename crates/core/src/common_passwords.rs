//! The common-password filter shipped in the binary: a password on a public
//! list of the most common ones (NIST SP 800-63B §5.1.1.2's "passwords
//! obtained from previous breach corpuses") is refused, with no network call.
//!
//! `data/common-passwords.bin` is built by `tools/common-passwords.py` from
//! the 20,000 most common passwords Django ships
//! (`django/contrib/auth/common-passwords.txt.gz`, compiled by Royce
//! Williams from breach data): for each entry of at least
//! [`MIN_PASSWORD_CHARS`](crate::user::MIN_PASSWORD_CHARS) characters, the
//! first four bytes of SHA-256 of the lowercased entry, sorted and without
//! repeats. A password is looked up the same way, by binary search, so every
//! listed entry is found in any case; one not on the list is mistaken for one
//! with a chance of about 1 in 500,000.

use sha2::{Digest, Sha256};

/// The sorted big-endian 32-bit fingerprints, four bytes each.
static FINGERPRINTS: &[u8] = include_bytes!("../data/common-passwords.bin");

/// How many fingerprints the filter holds (the entries of the list long
/// enough to be a password here; none collided).
pub fn listed() -> usize {
    FINGERPRINTS.len() / 4
}

fn fingerprint(password: &str) -> [u8; 4] {
    let digest = Sha256::digest(password.to_lowercase().as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

fn fingerprints() -> &'static [[u8; 4]] {
    let (prints, rest) = FINGERPRINTS.as_chunks::<4>();
    debug_assert!(rest.is_empty());
    prints
}

/// Whether `password`, compared without regard to case, is one of the most
/// common passwords. Big-endian bytes sort as the numbers they spell, so the
/// byte arrays are searched as they are stored.
pub fn is_common(password: &str) -> bool {
    fingerprints().binary_search(&fingerprint(password)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_is_sorted_fingerprints_of_the_list() {
        assert_eq!(FINGERPRINTS.len() % 4, 0);
        // 8,354 of the list's 19,640 entries are 8 characters or longer.
        assert_eq!(listed(), 8354);
        assert!(fingerprints().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn listed_passwords_are_found_in_any_case() {
        // Each of these is on the list (checked against the source when the
        // filter was built), the last two with a space and in Cyrillic.
        let listed = [
            "12345678",
            "password1",
            "qwertyuiop",
            "iloveyou1",
            "trustno1",
            "password123",
            "sunshine",
            "football",
            "abcdefgh",
            "friend of emily",
            "пїѕпїѕпїѕпїѕ",
        ];
        for p in listed {
            assert!(is_common(p), "{p:?}");
            assert!(is_common(&p.to_uppercase()), "{p:?} in capitals");
        }
        assert!(is_common("PassWord123"));
        assert!(is_common("QwertyUIOP"));
    }

    #[test]
    fn other_passwords_pass() {
        for p in [
            "correct horse battery",
            "password123!",
            " password123",
            "ilove you1",
            "tr0ub4dor&3 staple",
            "🦀🦀🦀🦀🦀🦀🦀🦀",
        ] {
            assert!(!is_common(p), "{p:?}");
        }
    }
}
