//! `/account/profile`: a person's username and account type, the display
//! name and email they may edit (core's rules, checked here on the server,
//! each message beside its field), and the change of their password.
//!
//! A password change asks for the current password (a wrong one is refused
//! beside its field and audited as `user.password_change_failed`), hashes
//! the new one with argon2id on a blocking thread, and then, in one
//! transaction, ends every session of the person and starts a fresh one for
//! this browser: whoever knew the old password is signed out everywhere
//! else, and the person stays signed in here.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::user::{User, validate_display_name, validate_email, validate_password};
use serde::Deserialize;

use super::AccountForm;
use super::{Nav, sentence, user_type_label};
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, SignedIn, Viewer};
use crate::http::forms::FieldErrors;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site};
use crate::http::session::Browser;
use crate::services::mail::{self, VerificationOutcome};
use crate::state::AppState;
use healthgate_core::recovery::VerificationRefused;

const PAGE: &str = "/account/profile";

#[derive(Template)]
#[template(path = "account_profile.html")]
pub struct ProfilePage<'a> {
    pub site: Site<'a>,
    pub nav: Nav,
    pub username: &'a str,
    pub user_type: &'static str,
    /// The display name and email as the form shows them: stored, or as
    /// typed when the form comes back with messages.
    pub name: &'a str,
    pub email: &'a str,
    /// The address stored (not as typed), and whether it is verified;
    /// shown only when a mail server is configured (`by_email`).
    pub by_email: bool,
    pub stored_email: Option<&'a str>,
    pub email_verified: bool,
    /// Whether the account has a password this page can change.
    pub has_password: bool,
    /// The app that created a password-less account, if one did.
    pub provisioned_by: Option<String>,
    pub errors: FieldErrors,
    pub notice: Option<&'static str>,
    pub csrf_token: &'a str,
}

/// What the page says after a change (`?done=`).
#[derive(Deserialize)]
pub struct ProfileQuery {
    done: Option<String>,
}

fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "saved" => Some("Your profile was saved."),
        "unchanged" => Some("Nothing changed: your profile already said that."),
        "password" => Some(
            "Your password was changed. Every other browser signed in as you has been signed out; this one stays signed in.",
        ),
        "verification" => Some(
            "A verification link is on its way to your email address. Open it within 24 hours to verify the address.",
        ),
        "saved_verification" => Some(
            "Your profile was saved. A verification link is on its way to your new email address; open it within 24 hours to verify it.",
        ),
        "verification_wait" => {
            Some("Several verification links were sent lately. Wait an hour, then send another.")
        }
        "verified_already" => Some("Your email address is already verified."),
        "no_address" => Some("Add an email address first, then verify it."),
        _ => None,
    }
}

/// The app that created the account, by name, when it has no password.
async fn provisioner(state: &AppState, user: &User) -> Result<Option<String>, PageError> {
    match (&user.password_hash, &user.provisioned_by) {
        (None, Some(client_id)) => Ok(Some(
            state
                .store
                .client(client_id)
                .await?
                .map_or_else(|| "a partner app".to_owned(), |c| c.name),
        )),
        _ => Ok(None),
    }
}

/// Renders the page for `user` with `status`, the form fields and messages.
#[allow(clippy::too_many_arguments)]
async fn render(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    user: &User,
    csrf_token: &str,
    name: &str,
    email: &str,
    errors: FieldErrors,
    notice: Option<&'static str>,
) -> Result<Response, PageError> {
    let provisioned_by = provisioner(state, user).await?;
    Ok(pages::render(
        status,
        &ProfilePage {
            site: viewer.site(&state.settings),
            nav: Nav::on(PAGE),
            username: &user.username,
            user_type: user_type_label(user),
            name,
            email,
            by_email: crate::services::mail::enabled(&state.settings),
            stored_email: user.email.as_deref(),
            email_verified: user.email_verified_at.is_some(),
            has_password: user.password_hash.is_some(),
            provisioned_by,
            errors,
            notice,
            csrf_token,
        },
    ))
}

/// `GET /account/profile`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    Query(q): Query<ProfileQuery>,
) -> Result<Response, PageError> {
    render(
        &state,
        &viewer,
        StatusCode::OK,
        &user,
        &session.csrf_token,
        user.name.as_deref().unwrap_or(""),
        user.email.as_deref().unwrap_or(""),
        FieldErrors::default(),
        notice(q.done.as_deref()),
    )
    .await
}

/// A text field as typed, trimmed; blank is absent.
fn trimmed(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `POST /account/profile` (`csrf_token`, `name`, `email`): a blank field
/// clears it.
pub async fn save(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    SignedIn { session, user }: SignedIn,
    CsrfForm { fields: f, .. }: CsrfForm<AccountForm>,
) -> Result<Response, PageError> {
    let name = trimmed(&f.name);
    let email = trimmed(&f.email);
    let mut errors = FieldErrors::default();
    if let Some(Err(e)) = name.as_deref().map(validate_display_name) {
        errors.add("name", sentence(e));
    }
    if let Some(Err(e)) = email.as_deref().map(validate_email) {
        errors.add("email", sentence(e));
    }
    if !errors.is_empty() {
        return render(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            &user,
            &session.csrf_token,
            name.as_deref().unwrap_or(""),
            email.as_deref().unwrap_or(""),
            errors,
            None,
        )
        .await;
    }
    let changed = state
        .store
        .update_profile(
            &user.id,
            name.as_deref(),
            email.as_deref(),
            ip.as_deref(),
            state.now(),
        )
        .await?;
    let mut done = if changed.is_empty() {
        "unchanged"
    } else {
        "saved"
    };
    // A new address is verified by a link sent to it at once.
    if changed.contains(&"email")
        && email.is_some()
        && let Some(saved) = state.store.user(&user.id).await?
        && let VerificationOutcome::Queued(_) =
            mail::send_verification(&state, &saved, ip.as_deref()).await?
    {
        done = "saved_verification";
    }
    Ok(Redirect::to(&format!("{PAGE}?done={done}")).into_response())
}

/// `POST /account/profile/email/verify` (`csrf_token`): sends a
/// verification link to the account's unverified address (at most a few
/// an hour).
pub async fn send_verification(
    State(state): State<AppState>,
    ip: ClientIp,
    SignedIn { user, .. }: SignedIn,
    _form: CsrfForm<AccountForm>,
) -> Result<Response, PageError> {
    let done = match mail::send_verification(&state, &user, ip.as_deref()).await? {
        VerificationOutcome::Queued(_) => "verification",
        VerificationOutcome::Throttled(_) => "verification_wait",
        VerificationOutcome::Refused(VerificationRefused::AlreadyVerified) => "verified_already",
        VerificationOutcome::Refused(VerificationRefused::NoAddress) => "no_address",
        VerificationOutcome::Disabled => {
            return Err(PageError::bad_request(
                "This platform does not send email, so addresses are not verified.",
            ));
        }
    };
    Ok(Redirect::to(&format!("{PAGE}?done={done}")).into_response())
}

/// `POST /account/profile/password` (`csrf_token`, `current_password`,
/// `new_password`, `new_password_confirmation`).
pub async fn change_password(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
    SignedIn { session, user }: SignedIn,
    CsrfForm { fields: f, .. }: CsrfForm<AccountForm>,
) -> Result<Response, PageError> {
    let mut errors = FieldErrors::default();
    // Passwords are taken as typed: spaces are part of them.
    let current = f.current_password;
    let new = f.new_password;
    let confirmation = f.new_password_confirmation;
    let again = |errors: FieldErrors| {
        render(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            &user,
            &session.csrf_token,
            user.name.as_deref().unwrap_or(""),
            user.email.as_deref().unwrap_or(""),
            errors,
            None,
        )
    };
    let Some(stored) = user.password_hash.clone() else {
        errors.add(
            "password",
            "Your account has no password here, so there is none to change.",
        );
        return again(errors).await;
    };
    match &new {
        None => errors.add("new_password", "Choose a new password."),
        Some(p) => {
            if let Err(e) = validate_password(p) {
                errors.add("new_password", sentence(e));
            }
        }
    }
    if new.is_some() && confirmation != new {
        errors.add(
            "new_password_confirmation",
            "The two new passwords are not the same.",
        );
    }
    match current {
        None => errors.add("current_password", "Enter your current password."),
        Some(current) => {
            match super::current_password_holds(&state, &user, &stored, current, ip.as_deref())
                .await?
            {
                Ok(true) => {}
                Ok(false) => errors.add(
                    "current_password",
                    "That is not your current password, so it was not changed.",
                ),
                Err(wait) => errors.add("current_password", wait),
            }
        }
    }
    let Some(new) = new.filter(|_| errors.is_empty()) else {
        return again(errors).await;
    };
    let cookie = super::replace_password(
        &state,
        &user,
        &session,
        &stored,
        new,
        Browser::of(&headers, &ip),
        "Your password was changed from somewhere else a moment ago. Reload the page and try again.",
    )
    .await?;
    let mut response = Redirect::to(&format!("{PAGE}?done=password")).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}
