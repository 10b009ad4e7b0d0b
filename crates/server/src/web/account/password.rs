//! `/account/password/new`: where a person signed in with a temporary
//! password (an operator reset it, in the console or with the CLI) chooses
//! their own before anything else. Every other page sends them here
//! (`http::extract::SignedIn`), and so does an authorization request; after
//! the change they go on to where they were going (`return_to`).
//!
//! The change is the profile page's: the temporary password typed again, the
//! new one twice under the usual rules, argon2id on a blocking thread, and
//! one store transaction that sets the hash, clears the temporary mark, ends
//! every session of the person and starts a fresh one for this browser.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::user::validate_password;
use serde::Deserialize;

use super::sentence;
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, NEW_PASSWORD_PAGE, PasswordChange, Viewer};
use crate::http::forms::FieldErrors;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site};
use crate::http::session::Browser;
use crate::state::AppState;
use crate::web::login::safe_return_to;

#[derive(Template)]
#[template(path = "account_password_new.html")]
pub struct NewPasswordPage<'a> {
    pub site: Site<'a>,
    pub action: &'static str,
    pub username: &'a str,
    pub return_to: &'a str,
    pub errors: FieldErrors,
    pub csrf_token: &'a str,
}

#[derive(Deserialize)]
pub struct NewPasswordQuery {
    return_to: Option<String>,
}

/// The form: `csrf_token`, `current_password` (the temporary one),
/// `new_password`, `new_password_confirmation`, `return_to`.
#[derive(Debug, Default, Deserialize)]
pub struct NewPasswordForm {
    pub current_password: Option<String>,
    pub new_password: Option<String>,
    pub new_password_confirmation: Option<String>,
    pub return_to: Option<String>,
}

/// Where a person goes when there is nothing (left) to choose: where they
/// were going, or their profile.
fn onwards(return_to: Option<&str>) -> Response {
    let target = match return_to {
        Some(_) => safe_return_to(return_to),
        None => "/account/profile",
    };
    Redirect::to(target).into_response()
}

fn render(
    site: Site<'_>,
    status: StatusCode,
    username: &str,
    return_to: &str,
    csrf_token: &str,
    errors: FieldErrors,
) -> Response {
    pages::render(
        status,
        &NewPasswordPage {
            site,
            action: NEW_PASSWORD_PAGE,
            username,
            return_to,
            errors,
            csrf_token,
        },
    )
}

/// `GET /account/password/new?return_to=…`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    PasswordChange { person, temporary }: PasswordChange,
    Query(q): Query<NewPasswordQuery>,
) -> Response {
    if !temporary {
        return onwards(q.return_to.as_deref());
    }
    render(
        viewer.site(&state.settings),
        StatusCode::OK,
        &person.user.username,
        safe_return_to(q.return_to.as_deref()),
        &person.session.csrf_token,
        FieldErrors::default(),
    )
}

/// `POST /account/password/new`.
pub async fn choose(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
    PasswordChange { person, temporary }: PasswordChange,
    CsrfForm { fields: f, .. }: CsrfForm<NewPasswordForm>,
) -> Result<Response, PageError> {
    if !temporary {
        return Ok(onwards(f.return_to.as_deref()));
    }
    let user = &person.user;
    let return_to = safe_return_to(f.return_to.as_deref());
    let again = |errors: FieldErrors| {
        render(
            viewer.site(&state.settings),
            StatusCode::BAD_REQUEST,
            &user.username,
            return_to,
            &person.session.csrf_token,
            errors,
        )
    };
    let mut errors = FieldErrors::default();
    let Some(stored) = user.password_hash.clone() else {
        errors.add(
            "password",
            "Your account has no password here, so there is none to change.",
        );
        return Ok(again(errors));
    };
    // Passwords are taken as typed: spaces are part of them.
    let new = f.new_password;
    match &new {
        None => errors.add("new_password", "Choose a new password."),
        Some(p) => {
            if let Err(e) = validate_password(p) {
                errors.add("new_password", sentence(e));
            }
        }
    }
    if new.is_some() && f.new_password_confirmation != new {
        errors.add(
            "new_password_confirmation",
            "The two new passwords are not the same.",
        );
    }
    match f.current_password {
        None => errors.add(
            "current_password",
            "Enter the temporary password you signed in with.",
        ),
        Some(current) => {
            match super::current_password_holds(
                &state,
                user,
                &stored,
                current.clone(),
                ip.as_deref(),
            )
            .await?
            {
                Ok(true) if new.as_deref() == Some(current.as_str()) => errors.add(
                    "new_password",
                    "Choose a password of your own, not the temporary one.",
                ),
                Ok(true) => {}
                Ok(false) => errors.add(
                    "current_password",
                    "That is not the temporary password you signed in with.",
                ),
                Err(wait) => errors.add("current_password", wait),
            }
        }
    }
    let Some(new) = new.filter(|_| errors.is_empty()) else {
        return Ok(again(errors));
    };
    let cookie = super::replace_password(
        &state,
        user,
        &person.session,
        &stored,
        new,
        Browser::of(&headers, &ip),
        "Your password was changed from somewhere else a moment ago. Sign in again with the new one.",
    )
    .await?;
    let mut response = Redirect::to(return_to).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}
