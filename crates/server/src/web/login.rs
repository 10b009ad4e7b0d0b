//! The login page, sign-out, and the home page. The login form's fields are
//! part of the automation contract (README): `username`, `password` and a
//! hidden `csrf_token`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::http::error::PageError;
use crate::http::extract::{NEW_PASSWORD_PAGE, Viewer, choose_password_first};
use crate::http::ip::ClientIp;
use crate::http::pages::{self, HomePage, LoginPage};
use crate::http::session::{self, Browser, form_field};
use crate::services::passwords;
use crate::services::throttle;
use crate::state::AppState;
use healthgate_core::event::EventKind;
use healthgate_core::redirect::with_query_params;
use healthgate_core::throttle::{Purpose, Verdict};
use healthgate_store::Event;

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// Only a local path may be returned to after login: never another site.
pub(crate) fn safe_return_to(r: Option<&str>) -> &str {
    match r {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && !p.contains(['\r', '\n']) =>
        {
            p
        }
        _ => "/",
    }
}

fn with_cookie(mut response: Response, cookie: Option<axum::http::HeaderValue>) -> Response {
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// The name of the app a login is for, when the person is on their way to
/// an authorization request.
async fn app_name(state: &AppState, return_to: &str) -> Option<String> {
    let query = return_to.strip_prefix("/oauth/authorize?")?;
    let client_id = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "client_id")?
        .1;
    state
        .store
        .client(&client_id)
        .await
        .ok()
        .flatten()
        .map(|c| c.name)
}

/// What the sign-in page says about the last attempt.
#[derive(Clone, Copy)]
enum Attempt<'a> {
    /// None yet.
    First,
    /// `username` was refused (the generic message).
    Refused(&'a str),
    /// `username`'s password was right but the account is locked.
    Locked(&'a str),
    /// Not looked at: too many failures for `username`, or too many
    /// attempts from the address; the message says how long to wait.
    Throttled(&'a str, &'a str),
}

async fn login_page(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    csrf: &str,
    return_to: &str,
    attempt: Attempt<'_>,
) -> Response {
    let app = app_name(state, return_to).await;
    let (username, error, locked) = match attempt {
        Attempt::First => ("", None, false),
        Attempt::Refused(u) => (u, Some("The username or password is incorrect."), false),
        Attempt::Locked(u) => (u, None, true),
        Attempt::Throttled(u, said) => (u, Some(said), false),
    };
    pages::render(
        status,
        &LoginPage {
            site: viewer.site(&state.settings),
            app_name: app.as_deref(),
            error,
            csrf_token: csrf,
            return_to,
            username,
            locked,
        },
    )
}

pub async fn get(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let return_to = safe_return_to(q.return_to.as_deref());
    // A session (anonymous until login) is needed to bind the form's CSRF token.
    let (session, cookie) = session::current_or_anonymous(&state, &headers, &ip).await?;
    Ok(with_cookie(
        login_page(
            &state,
            &viewer,
            StatusCode::OK,
            &session.csrf_token,
            return_to,
            Attempt::First,
        )
        .await,
        cookie,
    ))
}

/// The login form: `username`, `password`, `csrf_token`, `return_to`.
pub async fn post(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let session = session::verified_form(&state, &headers, &body).await?;
    let Some(session) = session else {
        return Err(PageError::forbidden("Your session has expired."));
    };
    let return_to_field = form_field(&body, "return_to");
    let return_to = safe_return_to(return_to_field.as_deref());
    let username = form_field(&body, "username").unwrap_or_default();
    let password = form_field(&body, "password").unwrap_or_default();
    // Throttles first, before any password work: the address's rate, then
    // the username's failures (the same for one without an account).
    let now = state.now();
    let refusal = match state.throttles.take(
        Purpose::SignIn,
        ip.as_deref().and_then(|ip| ip.parse().ok()),
        state.clock.now_millis(),
    ) {
        Err(wait) => Some((
            wait,
            format!(
                "Too many sign-in attempts from your network. Wait {}, then try again.",
                seconds_in_words(wait)
            ),
        )),
        Ok(()) => match throttle::sign_in_verdict(&state, &username).await? {
            Verdict::Go => None,
            Verdict::Wait { retry_after } => Some((
                retry_after,
                format!(
                    "Too many failed sign-ins for this username. Wait {}, then try again.",
                    seconds_in_words(retry_after)
                ),
            )),
            Verdict::Blocked { until } => Some((
                until - now,
                format!(
                    "Too many failed sign-ins for this username: it cannot sign in until {}. Try again then, or ask {} to unlock it sooner.",
                    pages::format_utc(until),
                    who_unlocks(&state),
                ),
            )),
        },
    };
    if let Some((wait, said)) = refusal {
        let mut page = login_page(
            &state,
            &viewer,
            StatusCode::TOO_MANY_REQUESTS,
            &session.csrf_token,
            return_to,
            Attempt::Throttled(&username, &said),
        )
        .await;
        crate::http::error::retry_after(&mut page, wait);
        return Ok(page);
    }
    let user = state.store.user_by_username(&username).await?;
    // Every account's password is checked, a locked one's too (so that the
    // person who knows it can be told why they cannot sign in), and an
    // unknown username's against the dummy hash: the same work either way.
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let ok = passwords::verify(stored, password).await;
    let known_user = user.as_ref().map(|u| u.id.clone());
    match user.filter(|_| ok) {
        Some(user) if !user.is_active() => {
            // The right password for a locked account: say so, and whom to
            // ask; no session.
            let event = Event::new(EventKind::LoginFailed)
                .failed()
                .actor(Some(&user.id))
                .ip(ip.as_deref())
                .data(serde_json::json!({ "reason": "locked" }));
            state.store.record_event(now, &event).await?;
            Ok(login_page(
                &state,
                &viewer,
                StatusCode::FORBIDDEN,
                &session.csrf_token,
                return_to,
                Attempt::Locked(&username),
            )
            .await)
        }
        Some(user) => {
            throttle::sign_in_succeeded(&state, &username).await?;
            // A temporary password (an operator reset it) is changed before
            // anything else, then the person goes on.
            let onwards = if user.password_is_temporary() {
                with_query_params(NEW_PASSWORD_PAGE, &[("return_to", return_to)])
            } else {
                return_to.to_owned()
            };
            let event = Event::new(EventKind::LoginSucceeded)
                .actor(Some(&user.id))
                .ip(ip.as_deref());
            state.store.record_event(now, &event).await?;
            let (_, cookie) = session::start(
                &state,
                Some(&session.id_digest),
                Some(user.id),
                Browser::of(&headers, &ip),
            )
            .await?;
            Ok(with_cookie(
                Redirect::to(&onwards).into_response(),
                Some(cookie),
            ))
        }
        None => {
            // The same answer whether the username exists or the password
            // is wrong, for a locked account too.
            let event = Event::new(EventKind::LoginFailed)
                .failed()
                .actor(known_user.as_deref())
                .ip(ip.as_deref());
            state.store.record_event(now, &event).await?;
            throttle::sign_in_failed(&state, &username, known_user.as_deref(), ip.as_deref())
                .await?;
            Ok(login_page(
                &state,
                &viewer,
                StatusCode::UNAUTHORIZED,
                &session.csrf_token,
                return_to,
                Attempt::Refused(&username),
            )
            .await)
        }
    }
}

/// A wait as people read it: "1 second", "45 seconds", "3 minutes".
fn seconds_in_words(secs: i64) -> String {
    match secs.max(1) {
        1 => "1 second".to_owned(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", (s + 59) / 60),
    }
}

/// Whom a person asks to unlock an account: the platform's support when
/// the branding names it, otherwise an administrator.
pub(crate) fn who_unlocks(state: &AppState) -> String {
    match &state.settings.branding.support_url {
        Some(_) => format!("{}'s support", state.settings.platform_name),
        None => "an administrator of this platform".to_owned(),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let session = session::verified_form(&state, &headers, &body).await?;
    if let Some(s) = session {
        state.store.delete_session(&s.id_digest).await?;
        if let Some(user) = &s.user_id {
            let event = Event::new(EventKind::Logout)
                .actor(Some(user))
                .ip(ip.as_deref());
            state.store.record_event(state.now(), &event).await?;
        }
    }
    let clear = session::set_cookie(&state, "", 0);
    Ok(with_cookie(Redirect::to("/").into_response(), Some(clear)))
}

pub async fn home(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let session = session::logged_in(&state, &headers).await?;
    let user = match session.as_ref().and_then(|s| s.user_id.as_deref()) {
        Some(id) => state.store.user(id).await?,
        None => None,
    };
    if let Some(u) = &user
        && let Some(first) = choose_password_first(u, "/")
    {
        return Ok(first);
    }
    Ok(pages::render(
        StatusCode::OK,
        &HomePage {
            site: viewer.site(&state.settings),
            username: user.as_ref().map(|u| u.username.as_str()),
            operator: user.as_ref().is_some_and(|u| u.operator),
            csrf_token: session
                .as_ref()
                .map(|s| s.csrf_token.as_str())
                .unwrap_or(""),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::safe_return_to;

    #[test]
    fn return_to_stays_on_this_site() {
        assert_eq!(
            safe_return_to(Some("/oauth/authorize?x=1")),
            "/oauth/authorize?x=1"
        );
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "javascript:x",
            "/a\r\nSet-Cookie: x",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_return_to(None), "/");
    }
}
