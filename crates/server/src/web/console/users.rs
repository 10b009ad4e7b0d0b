//! `/admin/users`: every account, searched by username, name or email and
//! paged fifty at a time, with locking, unlocking and a password reset
//! whose temporary password is shown once, to the operator, on the result
//! page. An account whose username is locked after too many failed sign-ins
//! says until when, and Unlock lifts that lock too.

use std::collections::{HashMap, HashSet};

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use healthgate_core::redirect::with_query_params;
use healthgate_core::user::User;
use serde::Deserialize;

use super::{
    Answer, ConsoleForm, Operator, Refusal, admin_failure, back_to, need, person_named, who,
};
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, Viewer};
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site, Stamp};
use crate::services::admin;
use crate::state::AppState;

const PAGE: &str = "/admin/users";

/// Accounts on one page of the list.
pub const PAGE_SIZE: i64 = 50;

/// One account in the list.
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub user_type: &'static str,
    pub created: Stamp,
    pub locked: Option<Stamp>,
    /// Until when its username cannot sign in after too many failed
    /// sign-ins.
    pub sign_in_locked: Option<Stamp>,
    /// Since when the password is a temporary one an operator set.
    pub temporary_password: Option<Stamp>,
    pub operator: bool,
    /// Whether it has a second factor.
    pub second_factor: bool,
    /// The partner app that created the account, if one did.
    pub provisioned_by: Option<String>,
    /// The operator's own account: not locked or reset from here.
    pub is_self: bool,
    /// SMART (with `[smart]` on): who they are on the FHIR server.
    pub fhir_user: Option<String>,
    /// SMART: the patients they may pick in a standalone launch.
    pub patients: Vec<healthgate_core::smart::PatientLink>,
}

#[derive(Template)]
#[template(path = "console_users.html")]
pub struct UsersPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
    pub q: String,
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    pub users: Vec<UserRow>,
    pub previous: Option<String>,
    pub next: Option<String>,
    /// Whether SMART is on: each account then shows its `fhirUser` and
    /// linked patients, with forms to change them.
    pub smart: bool,
}

#[derive(Template)]
#[template(path = "console_password.html")]
pub struct PasswordPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub person: String,
    pub username: String,
    pub password: &'a str,
    pub back: String,
}

#[derive(Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    page: Option<String>,
    done: Option<String>,
    user: Option<String>,
}

/// The list's address for a search and page.
fn listing(q: &str, page: i64) -> String {
    let page = page.to_string();
    let mut params = Vec::new();
    if !q.is_empty() {
        params.push(("q", q));
    }
    if page != "1" {
        params.push(("page", page.as_str()));
    }
    if params.is_empty() {
        PAGE.to_owned()
    } else {
        with_query_params(PAGE, &params)
    }
}

fn row(
    u: User,
    me: &str,
    sign_in_locks: &HashMap<String, i64>,
    with_factor: &HashSet<String>,
    patients: &mut HashMap<String, Vec<healthgate_core::smart::PatientLink>>,
) -> UserRow {
    UserRow {
        patients: patients.remove(&u.id).unwrap_or_default(),
        fhir_user: u.fhir_user,
        second_factor: with_factor.contains(&u.id),
        is_self: u.id == me,
        created: Stamp::exact(u.created_at),
        locked: u.locked_at.map(Stamp::exact),
        sign_in_locked: sign_in_locks.get(&u.id).copied().map(Stamp::exact),
        temporary_password: u.password_reset_at.map(Stamp::exact),
        user_type: u.user_type.as_str(),
        operator: u.operator,
        provisioned_by: u.provisioned_by,
        id: u.id,
        username: u.username,
        name: u.name,
        email: u.email,
    }
}

/// `GET /admin/users?q=&page=`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    op: Operator,
    Query(query): Query<UsersQuery>,
) -> Answer {
    let q = query.q.as_deref().unwrap_or("").trim().to_owned();
    if q.chars().count() > 200 {
        return Err(PageError::bad_request("Search for at most 200 characters.").into());
    }
    let page = match query.page.as_deref() {
        None | Some("") => 1,
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=1_000_000).contains(p))
            .ok_or_else(|| PageError::bad_request("The page must be a number from 1."))?,
    };
    let (users, total) = state
        .store
        .search_users(&q, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        .await?;
    let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let sign_in_locks = admin::sign_in_locks(&state.store, state.clock.as_ref(), &users).await?;
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let with_factor = state.store.with_second_factor(&ids).await?;
    let smart = state.settings.smart.enabled();
    let mut patients = if smart {
        state.store.patient_links_of(&ids).await?
    } else {
        HashMap::new()
    };
    let person = person_named(&state, query.user.as_deref()).await?;
    let notice = match query.done.as_deref() {
        Some("locked") => Some(format!(
            "{person} is locked: they cannot sign in, their sessions have ended and their apps get no new tokens."
        )),
        Some("already-locked") => Some(format!("{person} was already locked.")),
        Some("unlocked") => Some(format!("{person} is unlocked and can sign in again.")),
        Some("unlocked-sign-ins") => Some(format!(
            "{person} is unlocked: their failed sign-ins are cleared and they can sign in again."
        )),
        Some("unlocked-both") => Some(format!(
            "{person} is unlocked, and their failed sign-ins are cleared: they can sign in again."
        )),
        Some("not-locked") => Some(format!("{person} was not locked.")),
        Some("mfa-reset") => Some(format!(
            "{person}'s second factors and recovery codes are removed and every session of theirs has ended: they sign in with their password next."
        )),
        Some("fhir-user") => Some(format!("{person}'s fhirUser is saved.")),
        Some("patient-linked") => Some(format!("The patient is linked to {person}.")),
        Some("patient-unlinked") => Some(format!("The patient is unlinked from {person}.")),
        _ => None,
    };
    Ok(pages::render(
        StatusCode::OK,
        &UsersPage {
            site: viewer.site(&state.settings),
            section: "users",
            notice,
            csrf_token: &op.session.csrf_token,
            previous: (page > 1).then(|| listing(&q, page - 1)),
            next: (page < pages).then(|| listing(&q, page + 1)),
            users: users
                .into_iter()
                .map(|u| row(u, &op.user.id, &sign_in_locks, &with_factor, &mut patients))
                .collect(),
            smart,
            q,
            page,
            pages,
            total,
        },
    ))
}

/// The account a user form acts on, never the operator's own, and the
/// list to go back to (the search and page the form was sent from).
async fn target(
    state: &AppState,
    op: &Operator,
    f: &ConsoleForm,
    what: &str,
) -> Result<(User, String, i64), Refusal> {
    let user_id = need(&f.user_id, "the account")?;
    let user = state
        .store
        .user(&user_id)
        .await?
        .ok_or_else(|| PageError::bad_request("There is no such account."))?;
    if user.id == op.user.id {
        return Err(PageError::bad_request(format!(
            "You cannot {what} your own account from the console: ask another operator."
        ))
        .into());
    }
    let q = f.q.clone().unwrap_or_default();
    let page = f
        .page
        .clone()
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    Ok((user, q, page))
}

/// Back to the list the form was sent from, saying what was done.
fn back(q: &str, page: i64, done: &str, user_id: &str) -> axum::response::Response {
    let page = page.to_string();
    let mut params = vec![("done", done), ("user", user_id)];
    if !q.is_empty() {
        params.push(("q", q));
    }
    if page != "1" {
        params.push(("page", &page));
    }
    back_to(PAGE, &params)
}

/// `POST /admin/users/lock` (`user_id`): the account can no longer sign in,
/// its sessions end, and its grants issue no new tokens.
pub async fn lock(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let (user, q, page) = target(&state, &op, &f, "lock").await?;
    let locked = state
        .store
        .lock_user_by(&user.id, op.actor(&ip), state.now())
        .await?;
    let done = if locked { "locked" } else { "already-locked" };
    Ok(back(&q, page, done, &user.id))
}

/// `POST /admin/users/unlock` (`user_id`): lifts the operator's lock and
/// the lock after failed sign-ins, whichever hold.
pub async fn unlock(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let (user, q, page) = target(&state, &op, &f, "unlock").await?;
    let (_, unlocked) =
        admin::unlock_user(&state.store, state.clock.as_ref(), &user.id, op.actor(&ip))
            .await
            .map_err(admin_failure)?;
    let done = match (unlocked.operator_lock, unlocked.failed_sign_ins) {
        (true, true) => "unlocked-both",
        (true, false) => "unlocked",
        (false, true) => "unlocked-sign-ins",
        (false, false) => "not-locked",
    };
    Ok(back(&q, page, done, &user.id))
}

/// `POST /admin/users/reset-password` (`user_id`): a new temporary
/// password, every session of the account ended; the password is on this
/// response's page and nowhere else.
pub async fn reset_password(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let (user, q, page) = target(&state, &op, &f, "reset the password of").await?;
    let (user, password) =
        admin::reset_password(&state.store, state.clock.as_ref(), &user.id, op.actor(&ip))
            .await
            .map_err(admin_failure)?;
    crate::services::mail::security_notice_or_log(
        &state,
        &user,
        healthgate_core::recovery::Notice::TemporaryPassword,
    )
    .await;
    Ok(pages::render(
        StatusCode::OK,
        &PasswordPage {
            site: viewer.site(&state.settings),
            section: "users",
            notice: Some(format!(
                "{}'s password was reset and every session of theirs has ended.",
                user.username
            )),
            person: who(&user),
            username: user.username.clone(),
            password: &password,
            back: listing(&q, page),
        },
    ))
}

/// `POST /admin/users/reset-mfa` (`user_id`, `reason`): removes every
/// second factor and recovery code of the account and ends its sessions,
/// for a person who lost their phone or key; the reason (how the operator
/// made sure it was them) goes into the audit trail.
pub async fn reset_mfa(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let (user, q, page) = target(&state, &op, &f, "reset the second factors of").await?;
    let reason = healthgate_core::client::Reason::parse(f.reason.as_deref().unwrap_or_default())
        .map_err(|e| {
            PageError::bad_request(format!(
                "Say why you reset {}'s second factors: {e}. Go back and try again.",
                user.username
            ))
        })?;
    admin::reset_mfa(
        &state.store,
        state.clock.as_ref(),
        &user.id,
        Some(&reason),
        op.actor(&ip),
    )
    .await
    .map_err(admin_failure)?;
    crate::services::mail::security_notice_or_log(
        &state,
        &user,
        healthgate_core::recovery::Notice::FactorsReset,
    )
    .await;
    Ok(back(&q, page, "mfa-reset", &user.id))
}

/// The account a SMART form acts on (the operator's own too: who they are
/// on the FHIR server is not a lock), and the list to go back to.
async fn smart_target(state: &AppState, f: &ConsoleForm) -> Result<(User, String, i64), Refusal> {
    let user_id = need(&f.user_id, "the account")?;
    let user = state
        .store
        .user(&user_id)
        .await?
        .ok_or_else(|| PageError::bad_request("There is no such account."))?;
    let page = f
        .page
        .clone()
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    Ok((user, f.q.clone().unwrap_or_default(), page))
}

/// A SMART change refused on its value: say why, on a page.
fn smart_refusal(e: admin::AdminError) -> Refusal {
    match e {
        admin::AdminError::Store(e) => e.into(),
        other => PageError::bad_request(format!("{other}. Go back and try again.")).into(),
    }
}

/// `POST /admin/users/fhir-user` (`user_id`, `fhir_user`): who the person
/// is on the FHIR server (`Practitioner/123`); empty clears it.
pub async fn set_fhir_user(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let (user, q, page) = smart_target(&state, &f).await?;
    crate::services::smart::set_fhir_user(
        &state.store,
        state.now(),
        &user.id,
        f.fhir_user.as_deref().map(str::trim),
        op.actor(&ip),
    )
    .await
    .map_err(smart_refusal)?;
    Ok(back(&q, page, "fhir-user", &user.id))
}

/// `POST /admin/users/link-patient` (`user_id`, `patient`, `display`).
pub async fn link_patient(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let (user, q, page) = smart_target(&state, &f).await?;
    let link = healthgate_core::smart::PatientLink {
        patient_id: need(&f.patient, "the patient's FHIR id")?,
        display: need(&f.display, "how the patient is named")?,
    };
    crate::services::smart::link_patient(&state.store, state.now(), &user.id, link, op.actor(&ip))
        .await
        .map_err(smart_refusal)?;
    Ok(back(&q, page, "patient-linked", &user.id))
}

/// `POST /admin/users/unlink-patient` (`user_id`, `patient`).
pub async fn unlink_patient(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let (user, q, page) = smart_target(&state, &f).await?;
    let patient = need(&f.patient, "the patient")?;
    crate::services::smart::unlink_patient(
        &state.store,
        state.now(),
        &user.id,
        &patient,
        op.actor(&ip),
    )
    .await
    .map_err(smart_refusal)?;
    Ok(back(&q, page, "patient-unlinked", &user.id))
}
