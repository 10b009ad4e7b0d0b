//! Browser sessions and CSRF protection for the pages.
//!
//! The session cookie holds a random secret whose digest keys the `sessions`
//! table, so every node can read every session. Each session carries a CSRF
//! token that every form echoes in a hidden `csrf_token` field; a POST whose
//! token does not match, or whose `Origin` is foreign, is refused (403).

use axum::http::{HeaderMap, HeaderValue, header};
use healthgate_core::mfa::{Amr, Method};
use healthgate_core::secret::{self, SecretKind, constant_time_eq, mint};
use healthgate_store::Session;

use crate::config::Issuer;
use crate::http::error::PageError;
use crate::http::ip::ClientIp;
use crate::state::AppState;

/// The cookie's name: `__Host-` prefixed whenever it can be `Secure`.
pub fn cookie_name(state: &AppState) -> &'static str {
    if state.settings.secure_cookies() {
        "__Host-hg_session"
    } else {
        "hg_session"
    }
}

/// The value of cookie `name` the browser sent, if any.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The digest of the session secret the browser presented, if any.
pub fn presented_digest(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, cookie_name(state))
        .filter(|v| v.starts_with(SecretKind::Session.prefix()))
        .map(secret::digest)
}

/// The live session the browser presented, if any.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, PageError> {
    match presented_digest(state, headers) {
        Some(d) => Ok(state.store.session(&d, state.now()).await?),
        None => Ok(None),
    }
}

/// A session that has a user.
pub async fn logged_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Session>, PageError> {
    Ok(current(state, headers)
        .await?
        .filter(|s| s.user_id.is_some()))
}

/// The browser a session is started from, as the sessions page shows it.
pub struct Browser {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl Browser {
    pub fn of(headers: &HeaderMap, ip: &ClientIp) -> Self {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(300).collect());
        Self {
            user_agent,
            ip: ip.0.clone(),
        }
    }
}

/// Creates a session (anonymous when `user_id` is `None`), replacing the one
/// the browser had. Returns it with the `Set-Cookie` header that installs it.
pub async fn start(
    state: &AppState,
    replaces: Option<&str>,
    user_id: Option<String>,
    browser: Browser,
) -> Result<(Session, HeaderValue), PageError> {
    let (session, cookie) = fresh(state, user_id, browser);
    state.store.replace_session(replaces, &session).await?;
    Ok((session, cookie))
}

/// The browser's live session, or a new anonymous one (a form's CSRF token
/// needs a session to be bound to) with the `Set-Cookie` that installs it.
pub async fn current_or_anonymous(
    state: &AppState,
    headers: &HeaderMap,
    ip: &ClientIp,
) -> Result<(Session, Option<HeaderValue>), PageError> {
    Ok(match current(state, headers).await? {
        Some(s) => (s, None),
        None => {
            let (s, c) = start(state, None, None, Browser::of(headers, ip)).await?;
            (s, Some(c))
        }
    })
}

/// A new session, not stored yet, with the `Set-Cookie` header that installs
/// it once the caller has stored it (in the transaction of its choice).
pub fn fresh(
    state: &AppState,
    user_id: Option<String>,
    browser: Browser,
) -> (Session, HeaderValue) {
    let now = state.now();
    let id = mint(SecretKind::Session);
    let csrf = mint(SecretKind::Csrf);
    let signed_in = user_id.is_some();
    let session = Session {
        id_digest: id.digest.clone(),
        auth_time: user_id.as_ref().map(|_| now),
        user_id,
        csrf_token: csrf.value,
        created_at: now,
        expires_at: now + state.settings.session_ttl.secs(),
        user_agent: browser.user_agent,
        ip: browser.ip,
        // A person signs in with their password; the caller adds a second
        // factor when one was given.
        amr: if signed_in {
            Amr::of(&[Method::Pwd])
        } else {
            Amr::default()
        },
        ..Session::default()
    };
    let cookie = set_cookie(state, &id.value, state.settings.session_ttl.secs());
    (session, cookie)
}

/// A `Set-Cookie` value for the session cookie; `max_age` 0 clears it.
pub fn set_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    cookie(state, cookie_name(state), value, max_age, "Lax")
}

/// A `Set-Cookie` value for a cookie of this server: whole site, HttpOnly,
/// `Secure` whenever it can be; `max_age` 0 clears it.
pub fn cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: i64,
    same_site: &str,
) -> HeaderValue {
    let secure = if state.settings.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let v = format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A field of a form body. Malformed encodings decode leniently, so bad input
/// reaches validation instead of failing to parse; an empty field is absent.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// The session behind a form POST, once its `csrf_token` and origin have
/// been checked (see [`check_csrf`]).
pub async fn verified_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Session>, PageError> {
    let session = current(state, headers).await?;
    check_csrf(
        state,
        headers,
        session.as_ref(),
        form_field(body, "csrf_token").as_deref(),
    )?;
    Ok(session)
}

/// Refuses a state-changing request whose CSRF token does not match the
/// session's, or that comes from a foreign origin.
pub fn check_csrf(
    state: &AppState,
    headers: &HeaderMap,
    session: Option<&Session>,
    presented: Option<&str>,
) -> Result<(), PageError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin.to_str().is_ok_and(|o| same_origin(o, &state.issuer));
        if !same {
            tracing::warn!(origin = ?origin, expected = %state.issuer, "form refused: foreign Origin");
            return Err(PageError::forbidden(
                "This form was sent from another site, so it was not accepted.",
            ));
        }
    }
    match (session, presented) {
        (Some(s), Some(p)) if constant_time_eq(&s.csrf_token, p) => Ok(()),
        (None, _) => Err(PageError::forbidden(
            "Your session has expired. Go back, reload the page and try again.",
        )),
        _ => Err(PageError::forbidden(
            "The form's security token is missing or out of date. Go back, reload the page and try again.",
        )),
    }
}

/// Whether an `Origin` header names the issuer's origin.
fn same_origin(origin: &str, issuer: &Issuer) -> bool {
    origin == issuer.origin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_comparison() {
        let issuer = |s: &str| -> Issuer { s.parse().unwrap() };
        assert!(same_origin(
            "http://127.0.0.1:8080",
            &issuer("http://127.0.0.1:8080")
        ));
        assert!(same_origin(
            "https://id.example",
            &issuer("https://id.example/base")
        ));
        assert!(!same_origin(
            "https://evil.example",
            &issuer("https://id.example")
        ));
        assert!(!same_origin("null", &issuer("https://id.example")));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hg_session=hg_ss_x; b=2"),
        );
        assert_eq!(cookie_value(&h, "hg_session"), Some("hg_ss_x"));
        assert_eq!(cookie_value(&h, "c"), None);
    }
}
