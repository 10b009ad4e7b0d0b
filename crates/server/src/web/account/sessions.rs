//! `/account/sessions`: every browser signed in as the person, when it
//! signed in and until when, a short readable name for it ("Chrome on
//! Linux", the full `User-Agent` beside it), the address it came from, and
//! which one is this browser; and the buttons that sign out one of them,
//! every one but this, or every one.
//!
//! The forms name a session by a short handle derived from its digest (a
//! digest of the digest): never the cookie's secret, nor the key of the
//! sessions table. A handle is looked up among the signed-in person's own
//! live sessions only, and the store's `DELETE` names the person too, so a
//! forged or foreign handle ends nothing.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::secret;
use healthgate_store::Session;
use serde::Deserialize;

use super::AccountForm;
use super::Nav;
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, SignedIn, Viewer};
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site, Stamp};
use crate::http::session;
use crate::state::AppState;

const PAGE: &str = "/account/sessions";

/// The handle a form names a session by: 80 bits of a digest of its digest.
pub fn handle(session: &Session) -> String {
    let mut h = secret::digest(&format!("healthgate session handle\n{}", session.id_digest));
    h.truncate(20);
    h
}

/// A short, readable name for the browser behind a `User-Agent`: "Chrome on
/// Linux", "Safari on iOS", or the product named first ("curl") when it is
/// no browser this knows.
pub fn browser_summary(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.map(str::trim).filter(|u| !u.is_empty()) else {
        return "Unknown browser".to_owned();
    };
    let has = |needle: &str| ua.contains(needle);
    // Order matters: Edge and Opera also say Chrome, Chrome also says
    // Safari, iOS also says Mac OS X, and Android also says Linux.
    let browser = if has("Edg/") || has("EdgA/") || has("EdgiOS/") {
        Some("Edge")
    } else if has("OPR/") || has("Opera") {
        Some("Opera")
    } else if has("SamsungBrowser/") {
        Some("Samsung Internet")
    } else if has("Firefox/") || has("FxiOS/") {
        Some("Firefox")
    } else if has("HeadlessChrome/") {
        Some("Headless Chrome")
    } else if has("Chrome/") || has("CriOS/") || has("Chromium/") {
        Some("Chrome")
    } else if has("Safari/") && has("Version/") {
        Some("Safari")
    } else {
        None
    };
    let os = if has("Windows") {
        Some("Windows")
    } else if has("iPhone") || has("iPad") || has("iPod") {
        Some("iOS")
    } else if has("Android") {
        Some("Android")
    } else if has("CrOS") {
        Some("ChromeOS")
    } else if has("Macintosh") || has("Mac OS X") {
        Some("macOS")
    } else if has("Linux") || has("X11") {
        Some("Linux")
    } else {
        None
    };
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => format!("A browser on {o}"),
        (None, None) => {
            let product = ua.split(['/', ' ']).next().unwrap_or_default();
            let plain = !product.is_empty()
                && product.len() <= 40
                && product
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if plain {
                product.to_owned()
            } else {
                "Unknown browser".to_owned()
            }
        }
    }
}

/// One signed-in browser.
pub struct SessionLine {
    pub handle: String,
    pub browser: String,
    pub user_agent: Option<String>,
    pub started: Stamp,
    pub expires: Stamp,
    pub ip: Option<String>,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "account_sessions.html")]
pub struct SessionsPage<'a> {
    pub site: Site<'a>,
    pub nav: Nav,
    pub sessions: Vec<SessionLine>,
    /// Whether any session but this browser's is live.
    pub others: bool,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
}

/// What the page says after a sign-out (`?done=one`, `?done=gone`, or
/// `?done=others&ended=N`).
#[derive(Deserialize)]
pub struct SessionsQuery {
    done: Option<String>,
    ended: Option<u64>,
}

fn notice(q: &SessionsQuery) -> Option<String> {
    match (q.done.as_deref()?, q.ended) {
        ("one", _) => Some("That browser was signed out.".to_owned()),
        ("gone", _) => Some("That session had already ended.".to_owned()),
        ("others", Some(0) | None) => Some("There were no other sessions to sign out.".to_owned()),
        ("others", Some(1)) => {
            Some("Signed out of 1 other session. This browser stays signed in.".to_owned())
        }
        ("others", Some(n)) => Some(format!(
            "Signed out of {n} other sessions. This browser stays signed in."
        )),
        _ => None,
    }
}

/// `GET /account/sessions`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn {
        session: current,
        user,
    }: SignedIn,
    Query(q): Query<SessionsQuery>,
) -> Result<Response, PageError> {
    let mut sessions: Vec<SessionLine> = state
        .store
        .sessions_of_user(&user.id, state.now())
        .await?
        .into_iter()
        .map(|s| SessionLine {
            handle: handle(&s),
            browser: browser_summary(s.user_agent.as_deref()),
            current: s.id_digest == current.id_digest,
            started: Stamp::at(s.created_at),
            expires: Stamp::at(s.expires_at),
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    // This browser first; the others newest first, as the store lists them.
    sessions.sort_by_key(|s| !s.current);
    let others = sessions.iter().any(|s| !s.current);
    Ok(pages::render(
        StatusCode::OK,
        &SessionsPage {
            site: viewer.site(&state.settings),
            nav: Nav::on(PAGE),
            sessions,
            others,
            notice: notice(&q),
            csrf_token: &current.csrf_token,
        },
    ))
}

/// This browser, signed out: its cookie cleared, on its way to sign in.
fn signed_out_here(state: &AppState) -> Response {
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session::set_cookie(state, "", 0));
    response
}

/// `POST /account/sessions/end` (`csrf_token`, `session`: a handle from the
/// page): signs out one of the person's sessions. A handle that names none
/// of their live sessions is 404 and ends nothing.
pub async fn end_one(
    State(state): State<AppState>,
    ip: ClientIp,
    SignedIn {
        session: current,
        user,
    }: SignedIn,
    CsrfForm { fields: f, .. }: CsrfForm<AccountForm>,
) -> Result<Response, PageError> {
    let user_id = user.id.clone();
    let wanted = f
        .session
        .clone()
        .ok_or_else(|| PageError::bad_request("Choose the session to sign out."))?;
    let mine = state.store.sessions_of_user(&user_id, state.now()).await?;
    let Some(target) = mine.iter().find(|s| handle(s) == wanted) else {
        return Err(PageError {
            status: StatusCode::NOT_FOUND,
            title: "Session not found",
            message: "That is not one of your sessions, or it has already ended.".into(),
        });
    };
    let ended = state
        .store
        .end_session_of_user(&user_id, &target.id_digest, ip.as_deref(), state.now())
        .await?;
    if target.id_digest == current.id_digest {
        return Ok(signed_out_here(&state));
    }
    let back = if ended {
        format!("{PAGE}?done=one")
    } else {
        // It ended on its own between the lookup and the delete.
        format!("{PAGE}?done=gone")
    };
    Ok(Redirect::to(&back).into_response())
}

/// `POST /account/sessions/end-others` (`csrf_token`): signs out every
/// session of the person but this browser's.
pub async fn end_others(
    State(state): State<AppState>,
    ip: ClientIp,
    SignedIn {
        session: current,
        user,
    }: SignedIn,
    _checked: CsrfForm<AccountForm>,
) -> Result<Response, PageError> {
    let user_id = user.id.clone();
    let ended = state
        .store
        .end_sessions_of_user(
            &user_id,
            Some(&current.id_digest),
            ip.as_deref(),
            state.now(),
        )
        .await?;
    Ok(Redirect::to(&format!("{PAGE}?done=others&ended={ended}")).into_response())
}

/// `POST /account/sessions/end-all` (`csrf_token`): signs out every session
/// of the person, this browser's too, which lands on the sign-in page.
pub async fn end_all(
    State(state): State<AppState>,
    ip: ClientIp,
    SignedIn { session: _, user }: SignedIn,
    _checked: CsrfForm<AccountForm>,
) -> Result<Response, PageError> {
    let user_id = user.id.clone();
    state
        .store
        .end_sessions_of_user(&user_id, None, ip.as_deref(), state.now())
        .await?;
    Ok(signed_out_here(&state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_read_as_browser_and_system() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome on Linux",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
                "Headless Chrome on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
                "Edge on Windows",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:133.0) Gecko/20100101 Firefox/133.0",
                "Firefox on macOS",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                "Safari on iOS",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
                "Safari on macOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
                "Chrome on Android",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
                "Samsung Internet on Android",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
                "Opera on Windows",
            ),
            (
                "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome on ChromeOS",
            ),
            ("curl/8.5.0", "curl"),
            ("Mozilla/5.0 (Windows NT 10.0)", "A browser on Windows"),
            ("<script>alert(1)</script>", "Unknown browser"),
            ("", "Unknown browser"),
        ];
        for (ua, summary) in cases {
            assert_eq!(browser_summary(Some(ua)), summary, "{ua}");
        }
        assert_eq!(browser_summary(None), "Unknown browser");
    }

    #[test]
    fn a_handle_is_short_stable_and_not_the_digest() {
        let s = Session {
            id_digest: secret::digest("hg_ss_example"),
            user_id: Some("usr-1".into()),
            csrf_token: "c".into(),
            auth_time: None,
            created_at: 0,
            expires_at: 1,
            user_agent: None,
            ip: None,
            ..Default::default()
        };
        let h = handle(&s);
        assert_eq!(h.len(), 20);
        assert_eq!(h, handle(&s));
        assert!(!s.id_digest.contains(&h));
        assert!(!h.contains("hg_ss_"));
    }
}
