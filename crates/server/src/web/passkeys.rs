//! Passkeys on the pages (WebAuthn, `services::passkeys`): set up on the
//! security page, given at the second step of signing in (or a step-up),
//! and, when `passkey_sign_in` is on, used alone on the sign-in page.
//!
//! Each ceremony is two requests. `passkeys.js` POSTs the form's CSRF
//! token to an `…/options` endpoint, which begins the ceremony (its state
//! kept in the session row) and answers the options as JSON; the browser
//! asks the authenticator; the script puts the credential it made into a
//! hidden `credential` field and submits the form as any other. The finish
//! takes the ceremony once: a replayed finish finds none. A refusal is
//! said on the page, never a 500.
//!
//! At the second step a passkey that does not verify counts on the
//! username's run exactly like a wrong code, and the run is looked at
//! first. Signing in with a passkey alone is throttled by address, then by
//! the run of the person the passkey names; a locked account is refused
//! as at a password sign-in.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use healthgate_core::event::EventKind;
use healthgate_core::mfa::Amr;
use healthgate_core::redirect::with_query_params;
use healthgate_core::throttle::{Purpose, Verdict};
use healthgate_store::Event;
use serde::Deserialize;

use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, Enrolling, NEW_PASSWORD_PAGE, Viewer};
use crate::http::forms::FieldErrors;
use crate::http::ip::ClientIp;
use crate::http::pages;
use crate::http::routes::Routes;
use crate::http::session::{self, Browser, form_field};
use crate::services::mfa::Confirmed;
use crate::services::passkeys::{self, PasskeyError, Refused};
use crate::services::throttle;
use crate::state::AppState;
use crate::web::account::security::{self, CodesPage};
use crate::web::login::{self, Attempt, safe_return_to};
use crate::web::second_factor;

/// The options endpoint of setting up a passkey.
pub const REGISTER_OPTIONS: &str = "/account/security/passkey/options";
/// Where the credential made is sent.
pub const REGISTER: &str = "/account/security/passkey";
pub const SECOND_FACTOR_OPTIONS: &str = "/login/second-factor/passkey/options";
pub const SECOND_FACTOR: &str = "/login/second-factor/passkey";
pub const SIGN_IN_OPTIONS: &str = "/login/passkey/options";
pub const SIGN_IN: &str = "/login/passkey";

pub fn routes() -> Routes {
    Routes::new()
        .route(REGISTER_OPTIONS, post(registration_options))
        .route(REGISTER, post(register))
        .route(SECOND_FACTOR_OPTIONS, post(second_factor_options))
        .route(SECOND_FACTOR, post(second_factor))
        .route(SIGN_IN_OPTIONS, post(sign_in_options))
        .route(SIGN_IN, post(sign_in))
        .route("/static/passkeys.js", get(pages::passkeys_script))
}

/// The fields the passkey forms send (besides `csrf_token`).
#[derive(Debug, Default, Deserialize)]
pub struct PasskeyForm {
    pub label: Option<String>,
    /// The credential the browser made or the assertion it signed, as JSON.
    pub credential: Option<String>,
    pub return_to: Option<String>,
}

/// A ceremony's options for the script: JSON, never cached.
fn options(value: serde_json::Value) -> Response {
    let mut response = Json(value).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A refusal the script shows as it is (`{"error": …}`).
fn options_refused(status: StatusCode, said: &str) -> Response {
    let mut response = (status, Json(serde_json::json!({ "error": said }))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer of an options endpoint: the options, or the refusal in words.
fn began(begun: Result<serde_json::Value, PasskeyError>) -> Result<Response, PageError> {
    match begun {
        Ok(json) => Ok(options(json)),
        Err(PasskeyError::Refused(why)) => {
            tracing::warn!(reason = %why, "a passkey ceremony could not begin");
            Ok(options_refused(StatusCode::CONFLICT, why.in_words()))
        }
        Err(PasskeyError::Mfa(e)) => Err(e.into()),
    }
}

fn not_found() -> PageError {
    PageError {
        status: StatusCode::NOT_FOUND,
        title: "Page not found",
        message: "There is no page at this address.".into(),
    }
}

/// `POST /account/security/passkey/options` (`csrf_token`, `label`):
/// begins setting up a passkey.
pub async fn registration_options(
    State(state): State<AppState>,
    enrolling: Enrolling,
    CsrfForm { fields: f, .. }: CsrfForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let label = match security::label_of(f.label.as_deref(), "Passkey") {
        Ok(l) => l,
        Err(said) => return Ok(options_refused(StatusCode::BAD_REQUEST, said)),
    };
    began(
        passkeys::begin_registration(
            &state,
            &enrolling.person.user,
            &enrolling.person.session,
            &label,
        )
        .await,
    )
}

/// `POST /account/security/passkey` (`csrf_token`, `credential`,
/// `return_to`): finishes setting up a passkey. A first factor comes with
/// recovery codes, shown once.
pub async fn register(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    enrolling: Enrolling,
    CsrfForm { fields: f, .. }: CsrfForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let user = &enrolling.person.user;
    let return_to_field = f.return_to.as_deref().map(|r| safe_return_to(Some(r)));
    let finished = passkeys::finish_registration(
        &state,
        user,
        &enrolling.person.session,
        f.credential.as_deref(),
        enrolling.person.actor(&ip),
    )
    .await;
    let said = match finished {
        Ok(Confirmed::Yes(Some(codes))) => {
            return Ok(pages::render(
                StatusCode::OK,
                &CodesPage {
                    site: viewer.site(&state.settings),
                    codes,
                    first: true,
                    continue_to: security::onwards(return_to_field),
                },
            ));
        }
        Ok(Confirmed::Yes(None)) => {
            return Ok(
                Redirect::to(&security::done_url("passkey", return_to_field)).into_response(),
            );
        }
        // The pending passkey went between the two statements (set up
        // again from another tab): as a finished ceremony.
        Ok(Confirmed::No) => Refused::NoCeremony.in_words(),
        Err(PasskeyError::Refused(why)) => {
            tracing::info!(reason = %why, "a passkey was not set up");
            why.in_words()
        }
        Err(PasskeyError::Mfa(e)) => return Err(e.into()),
    };
    let mut errors = FieldErrors::default();
    errors.add("passkey", said);
    security::render_page(
        &state,
        &viewer,
        StatusCode::BAD_REQUEST,
        &enrolling,
        return_to_field.unwrap_or(""),
        None,
        errors,
    )
    .await
}

/// `POST /login/second-factor/passkey/options` (`csrf_token`): begins a
/// second step with one of the person's passkeys.
pub async fn second_factor_options(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some(session) = session::verified_form(&state, &headers, &body).await? else {
        return Err(PageError::forbidden("Your session has expired."));
    };
    let Some(giver) = second_factor::giver(&state, &session).await? else {
        return Ok(options_refused(
            StatusCode::FORBIDDEN,
            "Signing in has started again: give your password first.",
        ));
    };
    match passkeys::begin_second_factor(&state, giver.user(), &session).await {
        Ok(None) => Ok(options_refused(
            StatusCode::BAD_REQUEST,
            "You have no passkey set up: use a code instead.",
        )),
        Ok(Some(json)) => began(Ok(json)),
        Err(e) => began(Err(e)),
    }
}

/// `POST /login/second-factor/passkey` (`csrf_token`, `credential`,
/// `return_to`): the second step (or a step-up) with a passkey.
pub async fn second_factor(
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
    let Some(giver) = second_factor::giver(&state, &session).await? else {
        return Ok(second_factor::elsewhere(Some(&session), return_to));
    };
    if let Some(page) =
        second_factor::throttled(&state, &viewer, &giver, &session, return_to).await?
    {
        return Ok(page);
    }
    let sent = form_field(&body, "credential");
    match passkeys::finish_second_factor(&state, giver.user(), &session, sent.as_deref()).await {
        Ok(method) => {
            second_factor::given(&state, &giver, &session, method, &headers, &ip, return_to).await
        }
        Err(PasskeyError::Refused(why)) => {
            tracing::info!(reason = %why, "a passkey was refused at the second step");
            let data = serde_json::json!({
                "passkey": true,
                "replayed": matches!(why, Refused::NoCeremony),
            });
            second_factor::failed(
                &state,
                &viewer,
                &giver,
                &session,
                &ip,
                return_to,
                data,
                why.in_words(),
            )
            .await
        }
        Err(PasskeyError::Mfa(e)) => Err(e.into()),
    }
}

/// `POST /login/passkey/options` (`csrf_token`): begins signing in with a
/// passkey alone. 404 unless `passkey_sign_in` is on.
pub async fn sign_in_options(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    if !state.settings.passkey_sign_in {
        return Err(not_found());
    }
    let Some(session) = session::verified_form(&state, &headers, &body).await? else {
        return Err(PageError::forbidden("Your session has expired."));
    };
    began(passkeys::begin_sign_in(&state, &session).await)
}

/// A refused passkey sign-in: recorded (`login.failed`), and the sign-in
/// page saying why.
async fn sign_in_refused(
    state: &AppState,
    viewer: &Viewer,
    ip: &ClientIp,
    csrf: &str,
    return_to: &str,
    user_id: Option<&str>,
    why: &Refused,
) -> Result<Response, PageError> {
    tracing::info!(reason = %why, "a passkey sign-in was refused");
    let event = Event::new(EventKind::LoginFailed)
        .failed()
        .actor(user_id)
        .ip(ip.as_deref())
        .data(serde_json::json!({ "method": "passkey" }));
    state.store.record_event(state.now(), &event).await?;
    let said = match why {
        Refused::Unverified(_) | Refused::Unknown => {
            "That passkey could not be verified. Try again, or sign in with your password."
        }
        other => other.in_words(),
    };
    Ok(login::login_page(
        state,
        viewer,
        StatusCode::UNAUTHORIZED,
        csrf,
        return_to,
        Attempt::Passkey(said),
    )
    .await)
}

/// The sign-in page saying to wait (429 with `Retry-After`).
async fn wait_page(
    state: &AppState,
    viewer: &Viewer,
    csrf: &str,
    return_to: &str,
    wait: i64,
    said: &str,
) -> Response {
    let mut page = login::login_page(
        state,
        viewer,
        StatusCode::TOO_MANY_REQUESTS,
        csrf,
        return_to,
        Attempt::Passkey(said),
    )
    .await;
    crate::http::error::retry_after(&mut page, wait);
    page
}

/// `POST /login/passkey` (`csrf_token`, `credential`, `return_to`): signs
/// in with a passkey alone. The session's `amr` is the passkey's method
/// only (`hwk` or `swk`): the authenticator verified the person (a PIN or
/// a biometric), so it is two factors in one. 404 unless
/// `passkey_sign_in` is on.
pub async fn sign_in(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    if !state.settings.passkey_sign_in {
        return Err(not_found());
    }
    let Some(session) = session::verified_form(&state, &headers, &body).await? else {
        return Err(PageError::forbidden("Your session has expired."));
    };
    let return_to_field = form_field(&body, "return_to");
    let return_to = safe_return_to(return_to_field.as_deref());
    let csrf = session.csrf_token.as_str();
    let now = state.now();
    // The address's rate first, as for a password.
    if let Err(wait) = state.throttles.take(
        Purpose::SignIn,
        ip.as_deref().and_then(|ip| ip.parse().ok()),
        state.clock.now_millis(),
    ) {
        let said = format!(
            "Too many sign-in attempts from your network. Wait {}, then try again.",
            login::seconds_in_words(wait)
        );
        return Ok(wait_page(&state, &viewer, csrf, return_to, wait, &said).await);
    }
    let sent = form_field(&body, "credential");
    let claimed = match passkeys::claimed_sign_in(&state, &session, sent.as_deref()).await {
        Ok(c) => c,
        Err(PasskeyError::Refused(why)) => {
            return sign_in_refused(&state, &viewer, &ip, csrf, return_to, None, &why).await;
        }
        Err(PasskeyError::Mfa(e)) => return Err(e.into()),
    };
    let Some(user) = state.store.user(&claimed.factor.user_id).await? else {
        return sign_in_refused(
            &state,
            &viewer,
            &ip,
            csrf,
            return_to,
            None,
            &Refused::Unknown,
        )
        .await;
    };
    // The person's run of failures, before the passkey is verified.
    match throttle::sign_in_verdict(&state, &user.username).await? {
        Verdict::Go => {}
        Verdict::Wait { retry_after } => {
            let said = format!(
                "Too many failed sign-ins for this account. Wait {}, then try again.",
                login::seconds_in_words(retry_after)
            );
            return Ok(wait_page(&state, &viewer, csrf, return_to, retry_after, &said).await);
        }
        Verdict::Blocked { until } => {
            let said = format!(
                "Too many failed sign-ins for this account: it cannot sign in until {}. Try again then, or ask {} to unlock it sooner.",
                pages::format_utc(until),
                login::who_unlocks(&state),
            );
            return Ok(wait_page(&state, &viewer, csrf, return_to, until - now, &said).await);
        }
    }
    let method = match passkeys::verify_sign_in(&state, claimed).await {
        Ok(m) => m,
        Err(PasskeyError::Refused(why)) => {
            throttle::sign_in_failed(&state, &user.username, Some(&user.id), ip.as_deref()).await?;
            return sign_in_refused(&state, &viewer, &ip, csrf, return_to, Some(&user.id), &why)
                .await;
        }
        Err(PasskeyError::Mfa(e)) => return Err(e.into()),
    };
    if !user.is_active() {
        // The right passkey of a locked account: say so, and whom to ask.
        let event = Event::new(EventKind::LoginFailed)
            .failed()
            .actor(Some(&user.id))
            .ip(ip.as_deref())
            .data(serde_json::json!({ "reason": "locked", "method": "passkey" }));
        state.store.record_event(now, &event).await?;
        return Ok(login::login_page(
            &state,
            &viewer,
            StatusCode::FORBIDDEN,
            csrf,
            return_to,
            Attempt::Locked(&user.username),
        )
        .await);
    }
    throttle::sign_in_succeeded(&state, &user.username).await?;
    let (mut fresh, cookie) =
        session::fresh(&state, Some(user.id.clone()), Browser::of(&headers, &ip));
    fresh.amr = Amr::of(&[method]);
    fresh.mfa_at = Some(now);
    state
        .store
        .replace_session(Some(&session.id_digest), &fresh)
        .await?;
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
    Ok(login::with_cookie(
        Redirect::to(&onwards).into_response(),
        Some(cookie),
    ))
}
