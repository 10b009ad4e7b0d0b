//! Redirection URIs: what may be registered (RFC 6749 §3.1.2, RFC 8252 §7,
//! RFC 9700 §2.1) and how a requested URI is matched against the registered
//! ones.
//!
//! Matching is exact string equality with no normalisation (RFC 9700 §4.1.3),
//! with the one exception RFC 8252 §7.3 requires: for an `http` loopback IP
//! literal, any port matches, because native apps bind an ephemeral port.

use std::fmt;

/// A redirect URI that may be registered for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRedirectUri {
    #[error("redirect URI is not an absolute URI")]
    NotAbsolute,
    #[error("redirect URI must not contain a fragment (RFC 6749 section 3.1.2)")]
    Fragment,
    #[error("redirect URI must not contain user information")]
    UserInfo,
    #[error(
        "redirect URI must use https, http on a loopback address, or a private-use scheme such as com.example.app:/cb"
    )]
    Scheme,
    #[error("redirect URI is longer than 2000 characters")]
    TooLong,
    #[error("redirect URI contains whitespace or control characters")]
    Characters,
    /// RFC 9700 §2.1, §4.1.3: redirect URIs match exactly, so a `*` is never
    /// a pattern; refusing it says so to the developer who meant one.
    #[error("redirect URI must not contain a wildcard (*): register each URI exactly")]
    Wildcard,
}

const LOOPBACK_PREFIXES: &[&str] = &["http://127.0.0.1", "http://[::1]"];

impl RedirectUri {
    /// Validates a URI for registration. The string is kept exactly as given,
    /// since matching is by string equality.
    pub fn parse(s: &str) -> Result<Self, InvalidRedirectUri> {
        if s.len() > 2000 {
            return Err(InvalidRedirectUri::TooLong);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidRedirectUri::Characters);
        }
        if s.contains('#') {
            return Err(InvalidRedirectUri::Fragment);
        }
        if s.contains('*') {
            return Err(InvalidRedirectUri::Wildcard);
        }
        let url = url::Url::parse(s).map_err(|_| InvalidRedirectUri::NotAbsolute)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidRedirectUri::UserInfo);
        }
        let authority_empty = s
            .split_once("://")
            .is_some_and(|(_, rest)| rest.is_empty() || rest.starts_with('/'));
        match url.scheme() {
            "https" | "http" if authority_empty => return Err(InvalidRedirectUri::NotAbsolute),
            "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(InvalidRedirectUri::NotAbsolute);
                }
            }
            "http" => {
                let loopback = matches!(
                    url.host(),
                    Some(url::Host::Ipv4(ip)) if ip.is_loopback()
                ) || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
                    || url.host_str() == Some("localhost");
                if !loopback {
                    return Err(InvalidRedirectUri::Scheme);
                }
            }
            // RFC 8252 §7.1: private-use schemes are reverse domain names.
            scheme if scheme.contains('.') => {}
            _ => return Err(InvalidRedirectUri::Scheme),
        }
        Ok(Self(s.to_owned()))
    }

    /// Rebuilds a URI read back from storage (validated when registered).
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The web origin (RFC 6454, `https://app.example.org`) of a browser
    /// app redirected here: what a page of the app sends as `Origin`. `None`
    /// for a native app's own scheme.
    pub fn web_origin(&self) -> Option<String> {
        let url = url::Url::parse(&self.0).ok()?;
        matches!(url.scheme(), "https" | "http").then(|| url.origin().ascii_serialization())
    }

    /// Whether `requested` is this registered URI: string equality, or, for
    /// an http loopback IP literal, equality once the port is set aside.
    pub fn matches(&self, requested: &str) -> bool {
        if self.0 == requested {
            return true;
        }
        match (split_loopback_port(&self.0), split_loopback_port(requested)) {
            (Some((host_a, rest_a)), Some((host_b, rest_b))) => {
                host_a == host_b && rest_a == rest_b
            }
            _ => false,
        }
    }
}

/// For `http://127.0.0.1[:port]rest` or `http://[::1][:port]rest`, returns the
/// part before the port and the part after it; `None` for anything else or a
/// port that is not a valid number.
fn split_loopback_port(uri: &str) -> Option<(&str, &str)> {
    let prefix = LOOPBACK_PREFIXES.iter().find(|p| uri.starts_with(**p))?;
    let after_host = &uri[prefix.len()..];
    let rest = match after_host.strip_prefix(':') {
        Some(port_and_rest) => {
            let digits = port_and_rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(port_and_rest.len());
            let port: u16 = port_and_rest[..digits].parse().ok()?;
            if port == 0 {
                return None;
            }
            &port_and_rest[digits..]
        }
        None => after_host,
    };
    // The authority must end here: the rest is a path, query or nothing.
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return None;
    }
    Some((prefix, rest))
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds the URL the user agent is sent to with an authorization response
/// (RFC 6749 §4.1.2): the redirect URI, its own query kept, and the response
/// parameters appended form-encoded so each value round-trips byte for byte.
pub fn with_query_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let encoded = ser.finish();
    let sep = if redirect_uri.contains('?') {
        if redirect_uri.ends_with('?') || redirect_uri.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    format!("{redirect_uri}{sep}{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_apps_origin_is_its_redirect_uris() {
        let cases = [
            (
                "https://app.example.org/callback",
                Some("https://app.example.org"),
            ),
            (
                "https://app.example.org:443/cb?x=1",
                Some("https://app.example.org"),
            ),
            (
                "https://app.example.org:8443/cb",
                Some("https://app.example.org:8443"),
            ),
            ("http://127.0.0.1:3000/cb", Some("http://127.0.0.1:3000")),
            ("com.example.app:/oauth", None),
        ];
        for (uri, origin) in cases {
            assert_eq!(
                RedirectUri::from_stored(uri.into()).web_origin().as_deref(),
                origin,
                "{uri}"
            );
        }
    }
    use proptest::prelude::*;

    #[test]
    fn registration_table() {
        let table: &[(&str, bool)] = &[
            ("https://app.example.com/callback", true),
            ("https://app.example.com/callback?tenant=a", true),
            ("http://127.0.0.1/cb", true),
            ("http://[::1]:8080/cb", true),
            ("http://localhost:3000/cb", true),
            ("com.example.app:/oauth2redirect", true),
            ("http://app.example.com/callback", false),
            ("https://app.example.com/cb#frag", false),
            ("https://user:pw@app.example.com/cb", false),
            ("/relative/path", false),
            ("javascript:alert(1)", false),
            ("data:text/html,hi", false),
            ("https://app.example.com/ cb", false),
            ("https:///nohost", false),
        ];
        for (uri, ok) in table {
            assert_eq!(RedirectUri::parse(uri).is_ok(), *ok, "{uri}");
        }
    }

    #[test]
    fn wildcards_are_refused_wherever_they_stand() {
        for uri in [
            "https://*.example.com/cb",
            "https://app.example.com/*",
            "https://app.example.com/cb?next=*",
            "http://127.0.0.1:*/cb",
            "com.example.*:/cb",
            "*",
        ] {
            assert_eq!(
                RedirectUri::parse(uri),
                Err(InvalidRedirectUri::Wildcard),
                "{uri}"
            );
        }
    }

    /// Near misses of a registered URI that must never match (RFC 9700 §4.1.3).
    #[test]
    fn exact_matching_rejects_near_misses() {
        let registered = RedirectUri::parse("https://app.example.com/callback").unwrap();
        let near_misses = [
            "https://app.example.com/callback/",
            "https://app.example.com/callback?x=1",
            "https://app.example.com/Callback",
            "https://APP.example.com/callback",
            "HTTPS://app.example.com/callback",
            "https://app.example.com@evil.example/callback",
            "https://evil.example@app.example.com/callback",
            "https://app.example.com/callback#x",
            "https://app.example.com.evil.example/callback",
            "https://app-example.com/callback",
            "https://app.example.com/callback/../other",
            "https://app.example.com/callback/%2e%2e/other",
            "https://app.example.com/%63allback",
            "https://app.example.com:443/callback",
            "http://app.example.com/callback",
            "https://app.example.com/callback ",
            "",
        ];
        assert!(registered.matches("https://app.example.com/callback"));
        for m in near_misses {
            assert!(!registered.matches(m), "{m:?} must not match");
        }
    }

    #[test]
    fn loopback_ip_matches_any_port_only() {
        let registered = RedirectUri::parse("http://127.0.0.1/cb").unwrap();
        assert!(registered.matches("http://127.0.0.1:51234/cb"));
        assert!(registered.matches("http://127.0.0.1/cb"));
        for m in [
            "http://127.0.0.1:51234/cb/",
            "http://127.0.0.1:51234@evil.example/cb",
            "http://127.0.0.1.evil.example/cb",
            "http://127.0.0.1:0/cb",
            "http://127.0.0.1:99999/cb",
            "http://[::1]:51234/cb",
            "https://127.0.0.1:51234/cb",
        ] {
            assert!(!registered.matches(m), "{m:?} must not match");
        }
        // localhost is a name, not a literal: its port is matched exactly.
        let named = RedirectUri::parse("http://localhost:3000/cb").unwrap();
        assert!(!named.matches("http://localhost:3001/cb"));
    }

    #[test]
    fn response_params_keep_existing_query() {
        assert_eq!(
            with_query_params("https://a.example/cb?x=1", &[("code", "c"), ("state", "s")]),
            "https://a.example/cb?x=1&code=c&state=s"
        );
        assert_eq!(
            with_query_params("https://a.example/cb", &[("state", "a b&c=d")]),
            "https://a.example/cb?state=a+b%26c%3Dd"
        );
    }

    proptest! {
        /// Whatever a client puts in `state`, it gets the same bytes back.
        #[test]
        fn state_round_trips(state in "\\PC{0,64}") {
            let url = with_query_params("https://a.example/cb", &[("state", &state)]);
            let parsed = url::Url::parse(&url).unwrap();
            let got = parsed.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned());
            prop_assert_eq!(got, Some(state));
        }

        /// No other string equals a registered non-loopback URI.
        #[test]
        fn only_the_exact_string_matches(suffix in "[a-z/?=&%.]{1,8}") {
            let registered = RedirectUri::parse("https://app.example.com/cb").unwrap();
            let other = format!("https://app.example.com/cb{suffix}");
            prop_assert!(!registered.matches(&other));
        }
    }
}
