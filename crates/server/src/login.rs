//! The login page, sign-out, and the home page. The login form's fields are
//! part of the automation contract (README): `username`, `password` and a
//! hidden `csrf_token`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::error::PageError;
use crate::pages::{self, HomePage, LoginPage};
use crate::passwords;
use crate::session;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    csrf_token: Option<String>,
    return_to: Option<String>,
}

/// Only a local path may be returned to after login: never another site.
fn safe_return_to(r: Option<&str>) -> &str {
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

fn login_page(
    state: &AppState,
    status: StatusCode,
    csrf: &str,
    return_to: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    pages::render(
        status,
        &LoginPage {
            platform: &state.settings.platform_name,
            app_name: None,
            error,
            csrf_token: csrf,
            return_to,
            username,
        },
    )
}

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let return_to = safe_return_to(q.return_to.as_deref());
    // A session (anonymous until login) is needed to bind the form's CSRF token.
    let (session, cookie) = match session::current(&state, &headers).await? {
        Some(s) => (s, None),
        None => {
            let (s, c) = session::start(&state, None, None).await?;
            (s, Some(c))
        }
    };
    Ok(with_cookie(
        login_page(
            &state,
            StatusCode::OK,
            &session.csrf_token,
            return_to,
            "",
            None,
        ),
        cookie,
    ))
}

pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, PageError> {
    let session = session::current(&state, &headers).await?;
    session::check_csrf(
        &state,
        &headers,
        session.as_ref(),
        form.csrf_token.as_deref(),
    )?;
    let Some(session) = session else {
        return Err(PageError::forbidden("Your session has expired."));
    };
    let return_to = safe_return_to(form.return_to.as_deref());
    let user = state.store.user_by_username(&form.username).await?;
    let stored = user
        .as_ref()
        .filter(|u| u.is_active())
        .and_then(|u| u.password_hash.clone());
    let ok = passwords::verify(stored, form.password).await;
    let now = state.now();
    match user.filter(|_| ok) {
        Some(user) => {
            state
                .store
                .audit(now, "login.succeeded", Some(&user.id), None, None)
                .await?;
            let (_, cookie) =
                session::start(&state, Some(&session.id_digest), Some(user.id)).await?;
            Ok(with_cookie(
                Redirect::to(return_to).into_response(),
                Some(cookie),
            ))
        }
        None => {
            // The same answer whether the username exists, the account is
            // locked or the password is wrong.
            state
                .store
                .audit(now, "login.failed", None, None, None)
                .await?;
            Ok(login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                &session.csrf_token,
                return_to,
                &form.username,
                Some("The username or password is incorrect."),
            ))
        }
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf_token: Option<String>,
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LogoutForm>,
) -> Result<Response, PageError> {
    let session = session::current(&state, &headers).await?;
    session::check_csrf(
        &state,
        &headers,
        session.as_ref(),
        form.csrf_token.as_deref(),
    )?;
    if let Some(s) = session {
        state.store.delete_session(&s.id_digest).await?;
        if let Some(user) = &s.user_id {
            state
                .store
                .audit(state.now(), "logout", Some(user), None, None)
                .await?;
        }
    }
    let clear = session::set_cookie(&state, "", 0);
    Ok(with_cookie(Redirect::to("/").into_response(), Some(clear)))
}

pub async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let session = session::logged_in(&state, &headers).await?;
    let user = match session.as_ref().and_then(|s| s.user_id.as_deref()) {
        Some(id) => state.store.user(id).await?,
        None => None,
    };
    Ok(pages::render(
        StatusCode::OK,
        &HomePage {
            platform: &state.settings.platform_name,
            username: user.as_ref().map(|u| u.username.as_str()),
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
