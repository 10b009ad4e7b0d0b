//! Recovery by email: "Forgot password?" (`/password/forgot`), the page a
//! reset link opens (`/password/reset`), and the page a verification link
//! opens (`/email/verify`). The rules are `healthgate_core::recovery`; the
//! queue and the words of each message `services::mail`.
//!
//! "Forgot password?" answers every address the same way, with the same
//! status, after the same work: the request is counted and queued, and the
//! mail worker looks the address up. A link opens a page first (a mail
//! scanner fetching it changes nothing); only that page's form consumes
//! it, in one store transaction. Without `[smtp]`, the forgot page says
//! recovery goes through an operator.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use healthgate_core::recovery::{self, LinkPurpose, Notice};
use healthgate_core::secret::digest;
use healthgate_core::throttle::Purpose;
use healthgate_core::user::validate_password;
use serde::Deserialize;

use crate::http::error::{PageError, retry_after, sentence};
use crate::http::extract::{CsrfForm, Viewer};
use crate::http::forms::FieldErrors;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site};
use crate::http::session;
use crate::services::{mail, passwords};
use crate::state::AppState;
use crate::web::login::who_unlocks;

#[derive(Template)]
#[template(path = "password_forgot.html")]
pub struct ForgotPage<'a> {
    pub site: Site<'a>,
    /// A mail server is configured: the form; otherwise whom to ask.
    pub by_email: bool,
    pub who_helps: String,
    pub csrf_token: &'a str,
    pub email: &'a str,
    /// The request was taken (the same words for every address).
    pub sent: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "password_reset.html")]
pub struct ResetPage<'a> {
    pub site: Site<'a>,
    pub step: LinkStep,
    pub token: &'a str,
    pub username: &'a str,
    pub csrf_token: &'a str,
    pub errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "email_verify.html")]
pub struct VerifyPage<'a> {
    pub site: Site<'a>,
    pub step: LinkStep,
    pub token: &'a str,
    pub address: &'a str,
    pub csrf_token: &'a str,
}

/// Where a person is with a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStep {
    /// The link works: its form.
    Form,
    /// It was used, has expired, or its address is no longer the
    /// account's.
    Gone,
    /// Done.
    Done,
}

impl LinkStep {
    pub fn is_form(&self) -> bool {
        *self == Self::Form
    }
    pub fn is_gone(&self) -> bool {
        *self == Self::Gone
    }
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `email` of the forgot form.
#[derive(Debug, Default, Deserialize)]
pub struct ForgotForm {
    pub email: Option<String>,
}

/// The reset form: `token`, `new_password`, `new_password_confirmation`.
#[derive(Debug, Default, Deserialize)]
pub struct ResetForm {
    pub token: Option<String>,
    pub new_password: Option<String>,
    pub new_password_confirmation: Option<String>,
}

/// The verification form: `token`.
#[derive(Debug, Default, Deserialize)]
pub struct VerifyForm {
    pub token: Option<String>,
}

fn with_cookie(mut response: Response, cookie: Option<axum::http::HeaderValue>) -> Response {
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

fn who_helps(state: &AppState) -> String {
    who_unlocks(state)
}

/// `GET /password/forgot`.
pub async fn forgot(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (session, cookie) = session::current_or_anonymous(&state, &headers, &ip).await?;
    let page = pages::render(
        StatusCode::OK,
        &ForgotPage {
            site: viewer.site(&state.settings),
            by_email: mail::enabled(&state.settings),
            who_helps: who_helps(&state),
            csrf_token: &session.csrf_token,
            email: "",
            sent: false,
            error: None,
        },
    );
    Ok(with_cookie(page, cookie))
}

/// `POST /password/forgot` (`csrf_token`, `email`): the same page and
/// status for every address; 429 with `Retry-After` when this network or
/// this address asked too often.
pub async fn request(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    CsrfForm {
        fields, session, ..
    }: CsrfForm<ForgotForm>,
) -> Result<Response, PageError> {
    let typed = fields.email.unwrap_or_default();
    let page = |status: StatusCode, sent: bool, error: Option<String>| {
        pages::render(
            status,
            &ForgotPage {
                site: viewer.site(&state.settings),
                by_email: mail::enabled(&state.settings),
                who_helps: who_helps(&state),
                csrf_token: &session.csrf_token,
                email: if sent { "" } else { typed.trim() },
                sent,
                error,
            },
        )
    };
    if !mail::enabled(&state.settings) {
        return Ok(page(StatusCode::OK, false, None));
    }
    // Only the shape is checked here, which says nothing about accounts.
    let Some(address) = recovery::normalize_email(&typed) else {
        return Ok(page(
            StatusCode::BAD_REQUEST,
            false,
            Some("Enter the email address of your account, such as name@example.org.".into()),
        ));
    };
    let refused = match state.throttles.take(
        Purpose::SignIn,
        ip.as_deref().and_then(|ip| ip.parse().ok()),
        state.clock.now_millis(),
    ) {
        Err(wait) => Some(wait),
        Ok(()) => mail::request_reset(&state, &address, ip.as_deref()).await?,
    };
    if let Some(wait) = refused {
        let mut response = page(
            StatusCode::TOO_MANY_REQUESTS,
            false,
            Some(format!(
                "Too many requests for a reset link. Wait {}, then try again.",
                in_words(wait)
            )),
        );
        retry_after(&mut response, wait);
        return Ok(response);
    }
    Ok(page(StatusCode::OK, true, None))
}

/// A wait as people read it.
fn in_words(secs: i64) -> String {
    match secs.max(1) {
        1 => "1 second".to_owned(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", (s + 59) / 60),
    }
}

/// The reset page in `step`.
#[allow(clippy::too_many_arguments)]
fn reset_page(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    step: LinkStep,
    token: &str,
    username: &str,
    csrf_token: &str,
    errors: FieldErrors,
) -> Response {
    pages::render(
        status,
        &ResetPage {
            site: viewer.site(&state.settings),
            step,
            token,
            username,
            csrf_token,
            errors,
        },
    )
}

/// `GET /password/reset?token=`: the form, if the link works (nothing is
/// consumed yet).
pub async fn reset_form(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let token = q.token.unwrap_or_default();
    let live = state
        .store
        .live_link(&digest(&token), LinkPurpose::ResetPassword, state.now())
        .await?;
    let user = match &live {
        Some(link) => state.store.user(&link.user_id).await?,
        None => None,
    };
    let Some(user) = user else {
        return Ok(reset_page(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            LinkStep::Gone,
            "",
            "",
            "",
            FieldErrors::default(),
        ));
    };
    let (session, cookie) = session::current_or_anonymous(&state, &headers, &ip).await?;
    let page = reset_page(
        &state,
        &viewer,
        StatusCode::OK,
        LinkStep::Form,
        &token,
        &user.username,
        &session.csrf_token,
        FieldErrors::default(),
    );
    Ok(with_cookie(page, cookie))
}

/// `POST /password/reset` (`csrf_token`, `token`, `new_password`,
/// `new_password_confirmation`): the password rules of every other page;
/// then, in one transaction, the link consumed, the password set, every
/// session ended and every token family revoked, audited, and the person
/// told by email.
pub async fn reset(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    CsrfForm {
        fields: f, session, ..
    }: CsrfForm<ResetForm>,
) -> Result<Response, PageError> {
    let token = f.token.unwrap_or_default();
    let token_digest = digest(&token);
    let gone = || {
        reset_page(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            LinkStep::Gone,
            "",
            "",
            "",
            FieldErrors::default(),
        )
    };
    let live = state
        .store
        .live_link(&token_digest, LinkPurpose::ResetPassword, state.now())
        .await?;
    let user = match &live {
        Some(link) => state.store.user(&link.user_id).await?,
        None => None,
    };
    let Some(user) = user else {
        return Ok(gone());
    };
    let mut errors = FieldErrors::default();
    match &f.new_password {
        None => errors.add("new_password", "Choose a new password."),
        Some(p) => {
            if let Err(e) = validate_password(p) {
                errors.add("new_password", sentence(e));
            }
        }
    }
    if f.new_password.is_some() && f.new_password_confirmation != f.new_password {
        errors.add(
            "new_password_confirmation",
            "The two new passwords are not the same.",
        );
    }
    let Some(new) = f.new_password.filter(|_| errors.is_empty()) else {
        return Ok(reset_page(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            LinkStep::Form,
            &token,
            &user.username,
            &session.csrf_token,
            errors,
        ));
    };
    let hash = passwords::hash(new).await.map_err(|_| PageError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        title: "Your password was not changed",
        message: "Something went wrong while saving it. Please try again.".into(),
    })?;
    let notice = mail::prepare_notice(&state, &user, Notice::PasswordReset);
    let done = state
        .store
        .reset_password_by_link(
            &token_digest,
            &hash,
            notice.as_ref().map(|n| n.mail(&user.id)).as_ref(),
            ip.as_deref(),
            state.now(),
        )
        .await?;
    if done.is_none() {
        // Used by a request racing this one, or the address changed.
        return Ok(gone());
    }
    Ok(reset_page(
        &state,
        &viewer,
        StatusCode::OK,
        LinkStep::Done,
        "",
        &user.username,
        "",
        FieldErrors::default(),
    ))
}

fn verify_page(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    step: LinkStep,
    token: &str,
    address: &str,
    csrf_token: &str,
) -> Response {
    pages::render(
        status,
        &VerifyPage {
            site: viewer.site(&state.settings),
            step,
            token,
            address,
            csrf_token,
        },
    )
}

/// `GET /email/verify?token=`: a button that verifies the address, if the
/// link works (a mail scanner that fetches the link verifies nothing).
pub async fn verify_form(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let token = q.token.unwrap_or_default();
    let Some(link) = state
        .store
        .live_link(&digest(&token), LinkPurpose::VerifyEmail, state.now())
        .await?
    else {
        return Ok(verify_page(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            LinkStep::Gone,
            "",
            "",
            "",
        ));
    };
    let (session, cookie) = session::current_or_anonymous(&state, &headers, &ip).await?;
    let page = verify_page(
        &state,
        &viewer,
        StatusCode::OK,
        LinkStep::Form,
        &token,
        &link.email,
        &session.csrf_token,
    );
    Ok(with_cookie(page, cookie))
}

/// `POST /email/verify` (`csrf_token`, `token`): consumes the link and
/// verifies the address it was sent to.
pub async fn verify(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    CsrfForm { fields, .. }: CsrfForm<VerifyForm>,
) -> Result<Response, PageError> {
    let token = fields.token.unwrap_or_default();
    match state
        .store
        .verify_email(&digest(&token), ip.as_deref(), state.now())
        .await?
    {
        Some(link) => Ok(verify_page(
            &state,
            &viewer,
            StatusCode::OK,
            LinkStep::Done,
            "",
            &link.email,
            "",
        )),
        None => Ok(verify_page(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            LinkStep::Gone,
            "",
            "",
            "",
        )),
    }
}
