//! `/login/second-factor`: the second step of signing in, and a step-up.
//!
//! - After the right password, a person with a second factor holds a
//!   pending session (nobody is signed in yet) for a few minutes; here they
//!   type a code from their authenticator app or a recovery code (or use a
//!   passkey, `web::passkeys`). Only then is the session signed in, with
//!   `amr` saying both methods; the username's run of failures is reset
//!   only then, so knowing the password does not buy endless code guesses.
//! - A signed-in person sent here by an app that wants a fresh or stronger
//!   sign-in (`acr_values`, `max_age`, or an app that requires a second
//!   factor) gives one again; their session records it (`mfa_at`).
//!
//! A wrong code counts on the username's run exactly like a wrong password
//! (`services::throttle`), and a code is accepted once: the same code
//! typed again in its window is refused.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::event::EventKind;
use healthgate_core::mfa::{FactorKind, Method, SECOND_STEP_TTL};
use healthgate_core::redirect::with_query_params;
use healthgate_core::throttle::Verdict;
use healthgate_core::user::User;
use healthgate_store::{Event, Session};
use serde::Deserialize;

use crate::http::error::PageError;
use crate::http::extract::{NEW_PASSWORD_PAGE, SECURITY_PAGE, Viewer};
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site};
use crate::http::session::{self, Browser, form_field};
use crate::services::mfa::{self, Checked};
use crate::services::throttle;
use crate::state::AppState;
use crate::web::login::safe_return_to;

#[derive(Template)]
#[template(path = "login_second_factor.html")]
pub struct SecondFactorPage<'a> {
    pub site: Site<'a>,
    /// Signed in already and asked again (a step-up), rather than signing in.
    pub step_up: bool,
    pub has_totp: bool,
    pub has_passkey: bool,
    pub error: Option<&'a str>,
    pub return_to: &'a str,
    pub csrf_token: &'a str,
}

#[derive(Deserialize)]
pub struct SecondFactorQuery {
    return_to: Option<String>,
}

/// Who is giving a second factor here.
pub(crate) enum Giver {
    /// Gave the right password a moment ago; nobody is signed in yet.
    SigningIn(User),
    /// Signed in, and asked for a second factor again.
    SteppingUp(User),
}

impl Giver {
    pub(crate) fn user(&self) -> &User {
        match self {
            Self::SigningIn(u) | Self::SteppingUp(u) => u,
        }
    }
}

/// The person this session is giving a second factor for, if any: a
/// pending sign-in still within its few minutes, or a signed-in person who
/// has a factor to give. A locked or deleted account has none.
pub(crate) async fn giver(state: &AppState, session: &Session) -> Result<Option<Giver>, PageError> {
    let (user_id, signing_in) = match (&session.user_id, &session.pending_user_id) {
        (Some(u), _) => (u, false),
        (None, Some(u)) if session.auth_time.unwrap_or(0) + SECOND_STEP_TTL > state.now() => {
            (u, true)
        }
        _ => return Ok(None),
    };
    let Some(user) = state.store.user(user_id).await?.filter(User::is_active) else {
        return Ok(None);
    };
    if !state.store.has_second_factor(&user.id).await? {
        return Ok(None);
    }
    Ok(Some(if signing_in {
        Giver::SigningIn(user)
    } else {
        Giver::SteppingUp(user)
    }))
}

/// Where a browser with nothing to give here goes: to sign in (and come
/// back), or, signed in without a second factor, to set one up.
pub(crate) fn elsewhere(session: Option<&Session>, return_to: &str) -> Response {
    let page = match session.and_then(|s| s.user_id.as_ref()) {
        Some(_) => SECURITY_PAGE,
        None => "/login",
    };
    Redirect::to(&with_query_params(page, &[("return_to", return_to)])).into_response()
}

pub(crate) async fn render(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    giver: &Giver,
    session: &Session,
    return_to: &str,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let factors = state.store.factors_of_user(&giver.user().id).await?;
    let confirmed = |kind| {
        factors
            .iter()
            .any(|f| f.kind == kind && f.confirmed_at.is_some())
    };
    Ok(pages::render(
        status,
        &SecondFactorPage {
            site: viewer.site(&state.settings),
            step_up: matches!(giver, Giver::SteppingUp(_)),
            has_totp: confirmed(FactorKind::Totp),
            has_passkey: confirmed(FactorKind::Passkey),
            error,
            return_to,
            csrf_token: &session.csrf_token,
        },
    ))
}

/// `GET /login/second-factor?return_to=…`.
pub async fn get(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(q): Query<SecondFactorQuery>,
) -> Result<Response, PageError> {
    let return_to = safe_return_to(q.return_to.as_deref());
    let session = session::current(&state, &headers).await?;
    let found = match &session {
        Some(s) => giver(&state, s).await?,
        None => None,
    };
    match (found, session) {
        (Some(g), Some(s)) => {
            render(&state, &viewer, StatusCode::OK, &g, &s, return_to, None).await
        }
        (_, s) => Ok(elsewhere(s.as_ref(), return_to)),
    }
}

/// `POST /login/second-factor` (`csrf_token`, `code`, `return_to`).
pub async fn post(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some(session) = session::verified_form(&state, &headers, &body).await? else {
        return Err(PageError::forbidden("Your session has expired."));
    };
    let return_to_field = form_field(&body, "return_to");
    let return_to = safe_return_to(return_to_field.as_deref());
    let Some(giver) = giver(&state, &session).await? else {
        return Ok(elsewhere(Some(&session), return_to));
    };
    let user = giver.user();
    // Throttled on the username's run, before the code is looked at.
    if let Some(page) = throttled(&state, &viewer, &giver, &session, return_to).await? {
        return Ok(page);
    }
    let typed = form_field(&body, "code").unwrap_or_default();
    match mfa::check_code(&state, user, &typed, ip.as_deref()).await? {
        Checked::Accepted(method) => {
            given(&state, &giver, &session, method, &headers, &ip, return_to).await
        }
        refused => {
            let replayed = refused == Checked::Replayed;
            let said = if replayed {
                "That code was used already. Wait for the app to show the next one, then type it."
            } else {
                "That code is not right. Type the code your authenticator app shows now, or one of your recovery codes."
            };
            let data = serde_json::json!({ "replayed": replayed });
            failed(
                &state, &viewer, &giver, &session, &ip, return_to, data, said,
            )
            .await
        }
    }
}

/// The page saying to wait, when the username's run of failures says so:
/// looked at before any code or passkey is.
pub(crate) async fn throttled(
    state: &AppState,
    viewer: &Viewer,
    giver: &Giver,
    session: &Session,
    return_to: &str,
) -> Result<Option<Response>, PageError> {
    let (said, wait) = match throttle::sign_in_verdict(state, &giver.user().username).await? {
        Verdict::Go => return Ok(None),
        Verdict::Wait { retry_after } => (
            format!(
                "Too many wrong codes or passwords for this account. Wait {retry_after} seconds, then try again."
            ),
            retry_after,
        ),
        Verdict::Blocked { until } => (
            format!(
                "Too many wrong codes or passwords for this account: it cannot sign in until {}.",
                pages::format_utc(until)
            ),
            until - state.now(),
        ),
    };
    let mut page = render(
        state,
        viewer,
        StatusCode::TOO_MANY_REQUESTS,
        giver,
        session,
        return_to,
        Some(&said),
    )
    .await?;
    crate::http::error::retry_after(&mut page, wait);
    Ok(Some(page))
}

/// A wrong second factor (a code, a passkey): recorded
/// (`login.second_factor_failed`, with `data`), counted on the username's
/// run like a wrong password, and the page again saying `said`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn failed(
    state: &AppState,
    viewer: &Viewer,
    giver: &Giver,
    session: &Session,
    ip: &ClientIp,
    return_to: &str,
    data: serde_json::Value,
    said: &str,
) -> Result<Response, PageError> {
    let user = giver.user();
    let event = Event::new(EventKind::SecondFactorFailed)
        .failed()
        .actor(Some(&user.id))
        .subject(&user.id)
        .ip(ip.as_deref())
        .data(data);
    state.store.record_event(state.now(), &event).await?;
    throttle::sign_in_failed(state, &user.username, Some(&user.id), ip.as_deref()).await?;
    render(
        state,
        viewer,
        StatusCode::UNAUTHORIZED,
        giver,
        session,
        return_to,
        Some(said),
    )
    .await
}

/// A second factor was given (`method`): a pending sign-in becomes a
/// signed-in session; a step-up is recorded on the session.
pub(crate) async fn given(
    state: &AppState,
    giver: &Giver,
    session: &Session,
    method: Method,
    headers: &HeaderMap,
    ip: &ClientIp,
    return_to: &str,
) -> Result<Response, PageError> {
    let now = state.now();
    match giver {
        Giver::SigningIn(user) => {
            let (mut fresh, cookie) =
                session::fresh(state, Some(user.id.clone()), Browser::of(headers, ip));
            fresh.amr = fresh.amr.with(method);
            fresh.mfa_at = Some(now);
            if !state
                .store
                .complete_second_step(&session.id_digest, &user.id, &fresh)
                .await?
            {
                return Ok(elsewhere(None, return_to));
            }
            throttle::sign_in_succeeded(state, &user.username).await?;
            let event = Event::new(EventKind::LoginSucceeded)
                .actor(Some(&user.id))
                .ip(ip.as_deref())
                .data(serde_json::json!({ "amr": fresh.amr.claim() }));
            state.store.record_event(now, &event).await?;
            let onwards = if user.password_is_temporary() {
                with_query_params(NEW_PASSWORD_PAGE, &[("return_to", return_to)])
            } else {
                return_to.to_owned()
            };
            let mut response = Redirect::to(&onwards).into_response();
            response.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(response)
        }
        Giver::SteppingUp(user) => {
            let amr = session.amr.with(method);
            state
                .store
                .step_up_session(&session.id_digest, &amr, now)
                .await?;
            throttle::sign_in_succeeded(state, &user.username).await?;
            let event = Event::new(EventKind::SteppedUp)
                .actor(Some(&user.id))
                .subject(&user.id)
                .ip(ip.as_deref())
                .data(serde_json::json!({ "amr": amr.claim() }));
            state.store.record_event(now, &event).await?;
            Ok(Redirect::to(return_to).into_response())
        }
    }
}
