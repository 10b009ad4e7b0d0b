//! The one OAuth error type, shaped like RFC 6749 §4.1.2.1 and §5.2 (and the
//! bearer-token errors of RFC 6750 §3.1). The server maps it to HTTP once.

use std::borrow::Cow;
use std::fmt;

/// The registered error codes healthgate returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// RFC 6749 §5.2 / §4.1.2.1
    InvalidRequest,
    /// RFC 6749 §5.2
    InvalidClient,
    /// RFC 6749 §5.2
    InvalidGrant,
    /// RFC 6749 §5.2 / §4.1.2.1
    UnauthorizedClient,
    /// RFC 6749 §5.2
    UnsupportedGrantType,
    /// RFC 6749 §5.2 / §4.1.2.1
    InvalidScope,
    /// RFC 6749 §4.1.2.1
    AccessDenied,
    /// RFC 6749 §4.1.2.1
    UnsupportedResponseType,
    /// RFC 6749 §4.1.2.1
    ServerError,
    /// RFC 6749 §4.1.2.1
    TemporarilyUnavailable,
    /// RFC 6750 §3.1
    InvalidToken,
    /// RFC 6750 §3.1
    InsufficientScope,
    /// OpenID Connect Core §3.1.2.6
    LoginRequired,
    /// OpenID Connect Core §3.1.2.6
    ConsentRequired,
    /// OpenID Connect Core §3.1.2.6: the person must do something first
    /// (set up a second factor) that `prompt=none` does not allow.
    InteractionRequired,
    /// healthgate's extension (RFC 6749 §8.5): throttled, 429 with
    /// `Retry-After` (RFC 6585 §4).
    TooManyRequests,
    /// RFC 9449 §5, §7.1: the DPoP proof is missing, malformed or does not
    /// fit the request.
    InvalidDpopProof,
    /// RFC 9449 §8, §9: the proof must carry the nonce the server gives.
    UseDpopNonce,
    /// RFC 9101 §6.2: the `request_uri` names no request this server
    /// holds (unknown, expired, used, or another client's).
    InvalidRequestUri,
    /// RFC 9101 §6.1: the request object does not verify or is not valid.
    InvalidRequestObject,
    /// RFC 9101 §6.2: `request_uri` other than one this server gave at its
    /// pushed authorization request endpoint.
    RequestUriNotSupported,
    /// RFC 7591 §3.2.2: a redirect URI that cannot be registered.
    InvalidRedirectUri,
    /// RFC 7591 §3.2.2: other client metadata that cannot be registered.
    InvalidClientMetadata,
    /// RFC 7591 §3.2.2: a software statement this server does not trust.
    UnapprovedSoftwareStatement,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InteractionRequired => "interaction_required",
            Self::TooManyRequests => "too_many_requests",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::InvalidRequestUri => "invalid_request_uri",
            Self::InvalidRequestObject => "invalid_request_object",
            Self::RequestUriNotSupported => "request_uri_not_supported",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::UnapprovedSoftwareStatement => "unapproved_software_statement",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text of an `error_description` (RFC 6749 §4.1.2.1, §5.2; RFC 6750
/// §3; RFC 7009 and RFC 7662 reuse them): only the characters
/// `%x20-21 / %x23-5B / %x5D-7E`, that is printable ASCII without `"` and
/// `\`. The only way to make one is [`Description::new`], which rewrites
/// anything else, so no answer can carry a character outside the RFC's
/// alphabet, however the text was built (a `{:?}` that quotes, a `§` in an
/// error message, a name someone typed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(Cow<'static, str>);

/// Whether `c` may appear in an `error_description`.
pub fn allowed_in_description(c: char) -> bool {
    matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e')
}

impl Description {
    /// `text` as a description, unchanged when it is already inside the
    /// alphabet (no copy), else with each other character replaced:
    /// quotes become `'`, `\` becomes `/`, `§` becomes `section `, dashes,
    /// ellipses and spaces become their ASCII spelling, and anything else
    /// `?`.
    pub fn new(text: impl Into<Cow<'static, str>>) -> Self {
        let text = text.into();
        if text.chars().all(allowed_in_description) {
            return Self(text);
        }
        let mut clean = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                c if allowed_in_description(c) => clean.push(c),
                '"' | '\u{201c}' | '\u{201d}' | '\u{2018}' | '\u{2019}' | '`' => clean.push('\''),
                '\\' => clean.push('/'),
                '\u{a7}' => clean.push_str("section "),
                '\u{2026}' => clean.push_str("..."),
                '\u{2013}' | '\u{2014}' | '\u{2212}' => clean.push('-'),
                '\u{2192}' => clean.push_str("->"),
                c if c.is_whitespace() => clean.push(' '),
                _ => clean.push('?'),
            }
        }
        Self(Cow::Owned(clean))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Description {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Description {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An RFC 6749 error: a code and a human-readable description. The
/// description is shown to client developers, so it never carries internal
/// detail (SQL, paths, secrets), and is always inside the RFC's alphabet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Description,
    /// Seconds until the request may be made again, for `Retry-After`
    /// ([`ErrorCode::TooManyRequests`] only).
    pub retry_after: Option<i64>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: Description::new(description),
            retry_after: None,
        }
    }

    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, d)
    }
    pub fn invalid_grant(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_scope(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidScope, d)
    }
    pub fn unauthorized_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::UnauthorizedClient, d)
    }
    /// Throttled: try again in `wait` seconds.
    pub fn too_many_requests(wait: i64, d: impl Into<Cow<'static, str>>) -> Self {
        Self {
            retry_after: Some(wait.max(1)),
            ..Self::new(ErrorCode::TooManyRequests, d)
        }
    }
    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "the server could not complete the request",
        )
    }
    pub fn temporarily_unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the service is temporarily unavailable, try again shortly",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn descriptions_keep_clean_text_and_rewrite_the_rest() {
        let clean = "the code has expired; ask for a new one (RFC 6749 section 4.1.2)";
        assert!(matches!(Description::new(clean).0, Cow::Borrowed(_)));
        let cases = [
            (
                "grant_type \"password\" is not supported",
                "grant_type 'password' is not supported",
            ),
            ("C:\\path", "C:/path"),
            ("RFC 6749 \u{a7}5.2", "RFC 6749 section 5.2"),
            (
                "wait\u{2026} \u{201c}quoted\u{201d} \u{2014} ok",
                "wait... 'quoted' - ok",
            ),
            ("tab\tnew\nline", "tab new line"),
            ("caf\u{e9} \u{1f600}", "caf? ?"),
        ];
        for (text, want) in cases {
            assert_eq!(Description::new(text.to_owned()).as_str(), want, "{text:?}");
        }
    }

    proptest! {
        /// Whatever text a description is made from, every character of it
        /// is in RFC 6749's alphabet.
        #[test]
        fn every_description_is_inside_the_alphabet(text in "\\PC*") {
            let d = OAuthError::invalid_request(text);
            prop_assert!(d.description.chars().all(allowed_in_description), "{:?}", d.description);
        }
    }
}
