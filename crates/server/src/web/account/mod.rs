//! The account area (`/account`): where a signed-in person sees who they
//! are, edits their profile and password, sets up second factors, and
//! reviews what can act for them: connected apps, the organizations they
//! belong to, and the browsers signed in as them.
//!
//! Every page sends an anonymous visitor to sign in first and comes back
//! after; every form is a CSRF-checked POST (`http::extract::CsrfForm`) that
//! acts only on the signed-in person and answers with a 303 back to its page
//! and a status message, or with the page again (400) and the validation
//! messages next to their fields.

mod apps;
mod organizations;
mod overview;
mod password;
mod profile;
pub(crate) mod security;
mod sessions;

use axum::routing::{get, post};
use healthgate_core::scope::ScopeSet;
use healthgate_core::user::User;

use crate::http::pages::ScopeLine;
use crate::http::routes::Routes;
use crate::state::AppState;

/// The account pages' routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/account", get(overview::page))
        .route("/account/profile", get(profile::page).post(profile::save))
        .route("/account/profile/password", post(profile::change_password))
        .route(
            "/account/profile/email/verify",
            post(profile::send_verification),
        )
        .route(
            crate::http::extract::NEW_PASSWORD_PAGE,
            get(password::page).post(password::choose),
        )
        .route(crate::http::extract::SECURITY_PAGE, get(security::page))
        .route("/account/security/totp", post(security::begin_totp))
        .route(
            "/account/security/totp/confirm",
            post(security::confirm_totp),
        )
        .route("/account/security/remove", post(security::remove))
        .route(
            "/account/security/recovery-codes",
            post(security::new_codes),
        )
        .route("/account/apps", get(apps::page))
        .route("/account/apps/revoke", post(apps::revoke))
        .route(
            "/account/apps/revoke-organization",
            post(apps::revoke_organization),
        )
        .route("/account/organizations", get(organizations::page))
        .route("/account/sessions", get(sessions::page))
        .route("/account/sessions/end", post(sessions::end_one))
        .route("/account/sessions/end-others", post(sessions::end_others))
        .route("/account/sessions/end-all", post(sessions::end_all))
}

/// One link of the account navigation.
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// The account navigation every account page shows, knowing which page it
/// is on (`aria-current="page"`).
pub struct Nav {
    current: &'static str,
}

impl Nav {
    const LINKS: [(&'static str, &'static str); 6] = [
        ("/account", "Overview"),
        ("/account/profile", "Profile"),
        ("/account/security", "Security"),
        ("/account/apps", "Connected apps"),
        ("/account/organizations", "Organizations"),
        ("/account/sessions", "Sessions"),
    ];

    pub fn on(current: &'static str) -> Self {
        Self { current }
    }

    pub fn links(&self) -> Vec<NavLink> {
        Self::LINKS
            .iter()
            .map(|&(href, label)| NavLink {
                href,
                label,
                current: href == self.current,
            })
            .collect()
    }
}

/// Every field an account form may send; each page reads the ones it needs.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AccountForm {
    pub client_id: Option<String>,
    pub organization_id: Option<String>,
    pub session: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub current_password: Option<String>,
    pub new_password: Option<String>,
    pub new_password_confirmation: Option<String>,
}

/// The scopes in the words of the configuration, each with its name.
pub(crate) fn scope_lines(state: &AppState, scope: &ScopeSet) -> Vec<ScopeLine> {
    scope
        .iter()
        .map(|name| ScopeLine {
            name: name.to_owned(),
            description: state
                .settings
                .scopes
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.to_owned()),
        })
        .collect()
}

pub(crate) use crate::http::error::sentence;

/// How a page names a kind of account.
pub(crate) fn user_type_label(user: &User) -> &'static str {
    match user.user_type {
        healthgate_core::user::UserType::Member => "Member",
        healthgate_core::user::UserType::Expert => "Expert",
    }
}

/// Whether the current password a person typed to change theirs holds.
/// It is a guess like any sign-in: throttled on the same run (their
/// username), a wrong one counted there and audited as
/// `user.password_change_failed`. `Err` is the message for the field when
/// the run must wait or is locked (the password is then not looked at).
pub(crate) async fn current_password_holds(
    state: &AppState,
    user: &User,
    stored: &str,
    typed: String,
    ip: Option<&str>,
) -> Result<Result<bool, String>, crate::http::error::PageError> {
    use crate::services::{passwords, throttle};
    use healthgate_core::throttle::Verdict;
    match throttle::sign_in_verdict(state, &user.username).await? {
        Verdict::Go => {}
        Verdict::Wait { retry_after } => {
            return Ok(Err(format!(
                "Too many wrong passwords: wait {retry_after} seconds, then try again."
            )));
        }
        Verdict::Blocked { until } => {
            return Ok(Err(format!(
                "Too many wrong passwords: this account cannot sign in or change its password until {}.",
                crate::http::pages::format_utc(until)
            )));
        }
    }
    if passwords::verify(Some(stored.to_owned()), typed).await {
        return Ok(Ok(true));
    }
    let event =
        healthgate_store::Event::new(healthgate_core::event::EventKind::PasswordChangeFailed)
            .failed()
            .actor(Some(&user.id))
            .subject(&user.id)
            .ip(ip);
    state.store.record_event(state.now(), &event).await?;
    throttle::sign_in_failed(state, &user.username, Some(&user.id), ip).await?;
    Ok(Ok(false))
}

/// Replaces `user`'s password (whose stored hash was `stored`) with `new`:
/// every other session ends and this browser gets a fresh one, in one store
/// transaction (the profile page and the page a temporary password leads
/// to both change a password this way). The fresh session keeps what the
/// old one proved (`session`'s second factor). Returns its cookie;
/// `on_conflict` is what the person reads if the password changed meanwhile.
pub(crate) async fn replace_password(
    state: &AppState,
    user: &User,
    session: &healthgate_store::Session,
    stored: &str,
    new: String,
    browser: crate::http::session::Browser,
    on_conflict: &'static str,
) -> Result<axum::http::HeaderValue, crate::http::error::PageError> {
    use crate::http::error::PageError;
    use axum::http::StatusCode;
    let not_changed = "Your password was not changed";
    let new_hash = crate::services::passwords::hash(new)
        .await
        .map_err(|_| PageError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: not_changed,
            message: "Something went wrong while saving it. Please try again.".into(),
        })?;
    let ip = browser.ip.clone();
    let (mut fresh, cookie) = crate::http::session::fresh(state, Some(user.id.clone()), browser);
    fresh.amr = session.amr.clone();
    fresh.mfa_at = session.mfa_at;
    let changed = state
        .store
        .change_password(
            &user.id,
            stored,
            &new_hash,
            &fresh,
            ip.as_deref(),
            state.now(),
        )
        .await?;
    if !changed {
        return Err(PageError {
            status: StatusCode::CONFLICT,
            title: not_changed,
            message: on_conflict.into(),
        });
    }
    crate::services::mail::security_notice_or_log(
        state,
        user,
        healthgate_core::recovery::Notice::PasswordChanged,
    )
    .await;
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_navigation_marks_the_page_it_is_on() {
        let links = Nav::on("/account/sessions").links();
        assert_eq!(links.len(), 6);
        let current: Vec<&str> = links
            .iter()
            .filter(|l| l.current)
            .map(|l| l.label)
            .collect();
        assert_eq!(current, ["Sessions"]);
    }
}
