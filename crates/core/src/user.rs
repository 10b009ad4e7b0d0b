//! People who authorize apps: their kind (HealthTap's members and experts) and
//! the account fields the protocol needs.

use std::fmt;
use std::str::FromStr;

/// HealthTap's user types: an app is open to members, experts, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserType {
    Member,
    Expert,
}

impl UserType {
    pub const ALL: [UserType; 2] = [UserType::Member, UserType::Expert];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Expert => "expert",
        }
    }
}

impl fmt::Display for UserType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown user type '{0}': expected member or expert")]
pub struct UnknownUserType(pub String);

impl FromStr for UserType {
    type Err = UnknownUserType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "member" => Ok(Self::Member),
            "expert" => Ok(Self::Expert),
            other => Err(UnknownUserType(other.to_owned())),
        }
    }
}

/// Parses a comma- or space-separated list such as `member,expert`.
pub fn parse_user_types(s: &str) -> Result<Vec<UserType>, UnknownUserType> {
    let mut out: Vec<UserType> = s
        .split([',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Joins user types in their canonical stored form (`member,expert`).
pub fn join_user_types(types: &[UserType]) -> String {
    types
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A user account as the protocol sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    /// The display name, e.g. "Dr. Jane Doe".
    pub name: Option<String>,
    pub email: Option<String>,
    pub user_type: UserType,
    /// argon2id PHC string; `None` for accounts that cannot log in interactively.
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub locked_at: Option<i64>,
    /// The partner app that created the account, if one did.
    pub provisioned_by: Option<String>,
    /// One of the platform's operators, who may use the admin console.
    pub operator: bool,
    /// When an operator reset the password to a temporary one, which the
    /// person must replace at their next sign-in before anything else.
    pub password_reset_at: Option<i64>,
    /// When the person followed a verification link sent to `email` as it
    /// is now; `None` while the address is unverified (new or changed).
    pub email_verified_at: Option<i64>,
    /// Who the person is on the FHIR server, as a resource reference
    /// (`Practitioner/123`): SMART's `fhirUser` claim, made absolute with
    /// the FHIR base the grant is for.
    pub fhir_user: Option<String>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("user_type", &self.user_type)
            .field("locked_at", &self.locked_at)
            .field("password_reset_at", &self.password_reset_at)
            .field("email_verified_at", &self.email_verified_at)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn is_active(&self) -> bool {
        self.locked_at.is_none()
    }

    /// Whether the password is a temporary one an operator set, which the
    /// person must replace before anything else.
    pub fn password_is_temporary(&self) -> bool {
        self.password_reset_at.is_some()
    }

    /// The account's email address once it has been verified; `None` when
    /// it has none or it is unverified.
    pub fn verified_email(&self) -> Option<&str> {
        self.email
            .as_deref()
            .filter(|_| self.email_verified_at.is_some())
    }
}

/// Usernames: 1 to 128 printable characters without surrounding spaces.
pub fn validate_username(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 128 {
        return Err("username must be 1 to 128 characters");
    }
    if s.trim() != s || s.chars().any(char::is_control) {
        return Err("username must not have surrounding spaces or control characters");
    }
    if s.contains('/') {
        // CLIENT_ID/USERNAME is how partner-provisioned accounts are named.
        return Err("username must not contain /");
    }
    Ok(())
}

/// The fewest characters a password may have (NIST SP 800-63B §5.1.1.2).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The most characters a password may have: far beyond the 64 NIST asks to
/// allow, and a bound on what argon2 is given (at most 4 KiB of UTF-8).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// A password a person chooses (NIST SP 800-63B §5.1.1.2): 8 to 1024
/// characters, counted as Unicode characters, any of them (spaces and emoji
/// too, taken as typed), and not one of the most common passwords
/// ([`common_passwords`](crate::common_passwords), compared without regard
/// to case). No composition rules: no required digits, capitals or symbols.
/// A password the server generates (a temporary one) is not held to it.
pub fn validate_password(s: &str) -> Result<(), &'static str> {
    let chars = s.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err("password must be at least 8 characters");
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err("password must be at most 1024 characters");
    }
    if crate::common_passwords::is_common(s) {
        return Err(
            "password is one of the most common passwords and easy to guess, so choose another one",
        );
    }
    Ok(())
}

/// Email addresses: something on each side of one `@`, no spaces or control
/// characters, at most 254 bytes (RFC 5321 §4.5.3.1.3's path limit less
/// the angle brackets). Deliverability is the mail server's question.
pub fn validate_email(s: &str) -> Result<(), &'static str> {
    let shaped = s
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if s.len() > 254 || !shaped || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("email must be an address such as name@example.org, without spaces");
    }
    Ok(())
}

/// Display names ("Dr. Jane Doe"): at most 200 characters, without control
/// characters or surrounding spaces. Blank means no display name.
pub fn validate_display_name(s: &str) -> Result<(), &'static str> {
    if s.chars().count() > 200 {
        return Err("name must be at most 200 characters");
    }
    if s.trim() != s || s.chars().any(char::is_control) {
        return Err("name must not have surrounding spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_type_lists() {
        assert_eq!(
            parse_user_types("expert,member, member").unwrap(),
            vec![UserType::Member, UserType::Expert]
        );
        assert!(parse_user_types("member,admin").is_err());
        assert_eq!(join_user_types(&UserType::ALL), "member,expert");
    }

    #[test]
    fn username_rule() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username(" alice").is_err());
        assert!(validate_username("").is_err());
    }

    #[test]
    fn password_length_counts_characters() {
        let cases = [
            ("", false),
            ("short", false),
            ("seven c", false),
            ("eight ch", true),
            // Multi-byte characters count once each, whatever their bytes.
            ("ééééééé", false),        // 7 characters, 14 bytes
            ("éééééééé", true),        // 8 characters
            ("🦀🦀🦀🦀🦀🦀🦀", false), // 7 characters, 28 bytes
            ("🦀🦀🦀🦀🦀🦀🦀🦀", true),
            ("日本語のパスワ", false),
            ("日本語のパスワード", true),
        ];
        for (password, ok) in cases {
            assert_eq!(validate_password(password).is_ok(), ok, "{password:?}");
        }
        let at_most = "ü".repeat(MAX_PASSWORD_CHARS);
        assert!(
            validate_password(&at_most).is_ok(),
            "2048 bytes, 1024 characters"
        );
        let too_long = "ü".repeat(MAX_PASSWORD_CHARS + 1);
        assert_eq!(
            validate_password(&too_long),
            Err("password must be at most 1024 characters")
        );
        assert!(validate_password(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn passwords_have_no_composition_rules() {
        for password in [
            "correct horse battery staple",
            "  spaces   around and inside  ",
            "alllowercaseletters",
            "1029384756102938",
            "Tr0ub4dor&3!",
            "mot de passe très long avec des espaces",
            "🦀 crabs 🦀 all 🦀 the 🦀 way",
        ] {
            assert_eq!(validate_password(password), Ok(()), "{password:?}");
        }
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        let refusal = Err(
            "password is one of the most common passwords and easy to guess, so choose another one",
        );
        for password in [
            "password123",
            "PASSWORD123",
            "Password123",
            "qWeRtYuIoP",
            "iloveyou1",
        ] {
            assert_eq!(validate_password(password), refusal, "{password:?}");
        }
        // Too short is said before common.
        assert_eq!(
            validate_password("passwor"),
            Err("password must be at least 8 characters")
        );
        assert_eq!(validate_password("password123!"), Ok(()));
    }

    #[test]
    fn email_rule() {
        let cases = [
            ("alice@example.org", true),
            ("a.b+tag@sub.example.org", true),
            ("not-an-email", false),
            ("@example.org", false),
            ("alice@", false),
            ("alice @example.org", false),
            ("alice@example.org\n", false),
            ("", false),
        ];
        for (email, ok) in cases {
            assert_eq!(validate_email(email).is_ok(), ok, "{email:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(validate_email(&long).is_err());
    }

    #[test]
    fn display_name_rule() {
        assert!(validate_display_name("Dr. Jane Doe").is_ok());
        assert!(validate_display_name(" Jane").is_err());
        assert!(validate_display_name("Jane\u{7}").is_err());
        assert!(validate_display_name(&"é".repeat(200)).is_ok());
        assert!(validate_display_name(&"é".repeat(201)).is_err());
    }
}
