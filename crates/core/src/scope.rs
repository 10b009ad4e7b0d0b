//! Scopes (RFC 6749 §3.3): parsing the space-delimited `scope` parameter into a
//! set, and the subset rules used at authorization, refresh and client
//! credentials.

use std::collections::BTreeSet;
use std::fmt;

/// A set of scope tokens. The constructor rejects characters RFC 6749 §3.3
/// does not allow (`scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope token '{0}' contains a character RFC 6749 section 3.3 does not allow")]
pub struct InvalidScopeToken(pub String);

fn valid_token_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')
}

impl ScopeSet {
    /// Parses a space-delimited list. Repeated spaces are tolerated; empty
    /// input is the empty set.
    pub fn parse(s: &str) -> Result<Self, InvalidScopeToken> {
        let mut set = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            if !token.chars().all(valid_token_char) {
                return Err(InvalidScopeToken(token.to_owned()));
            }
            set.insert(token.to_owned());
        }
        Ok(Self(set))
    }

    pub fn from_tokens<I, S>(tokens: I) -> Result<Self, InvalidScopeToken>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined: Vec<String> = tokens.into_iter().map(|t| t.as_ref().to_owned()).collect();
        for t in &joined {
            if t.is_empty() || t.contains(' ') {
                return Err(InvalidScopeToken(t.clone()));
            }
        }
        Self::parse(&joined.join(" "))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The tokens of `self` that are not in `allowed`.
    pub fn outside<'a>(&'a self, allowed: &'a ScopeSet) -> impl Iterator<Item = &'a str> {
        self.0.difference(&allowed.0).map(String::as_str)
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for ScopeSet {
    /// The canonical space-delimited form, tokens in sorted order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(t)?;
            first = false;
        }
        Ok(())
    }
}

/// The default scope vocabulary: OpenID Connect's `openid`, `profile` and
/// `email`, and the seed platforms' scopes (HealthTap's registration form),
/// with the plain words shown on the consent page.
pub const DEFAULT_SCOPES: &[(&str, &str)] = &[
    ("openid", "Confirm who you are (sign in with your account)"),
    ("profile", "See your name and username"),
    ("email", "See your email address"),
    ("profile_read", "Read your profile"),
    ("profile_write", "Update your profile"),
    ("pay", "Make payments on your behalf"),
    ("send_communications", "Send you messages"),
    ("create_content", "Create content on your behalf"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("profile_read", Some("profile_read")),
            (
                "profile_write profile_read",
                Some("profile_read profile_write"),
            ),
            ("  pay   pay ", Some("pay")),
            ("a\"b", None),
            ("a\\b", None),
            ("tab\there", None),
            ("ünïcode", None),
            (
                "urn:x:read https://scope/a",
                Some("https://scope/a urn:x:read"),
            ),
        ];
        for (input, expected) in cases {
            let got = ScopeSet::parse(input).ok().map(|s| s.to_string());
            assert_eq!(got.as_deref(), *expected, "input {input:?}");
        }
    }

    #[test]
    fn subset_and_outside() {
        let allowed = ScopeSet::parse("profile_read profile_write").unwrap();
        let asked = ScopeSet::parse("profile_read pay").unwrap();
        assert!(!asked.is_subset(&allowed));
        assert_eq!(asked.outside(&allowed).collect::<Vec<_>>(), vec!["pay"]);
        assert!(ScopeSet::parse("profile_read").unwrap().is_subset(&allowed));
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,12}", 0..6)) {
            let set = ScopeSet::from_tokens(&tokens).unwrap();
            let again = ScopeSet::parse(&set.to_string()).unwrap();
            prop_assert_eq!(set, again);
        }
    }
}
