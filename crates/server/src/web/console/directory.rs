//! `/admin/directory`: the integration directory's review. The requests
//! waiting, each with what an operator needs to judge it (the app's name,
//! description and photo, who registered it, the scopes it may ask for in
//! the platform's words, its redirect and connect URLs, and what changed if
//! an approved app came back), Approve, and Reject after a page that asks
//! for the reason its developer reads; the listed apps, with Unlist (a
//! reason too); the rejected ones with their reasons. Decisions go through
//! `admin` to `Store::decide_listing`, so each event names the operator;
//! an approval carries the fingerprint of what the page showed, and an app
//! changed since is not approved.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use healthgate_core::listing::ListingState;
use healthgate_core::review::{ListingError, fingerprint};
use serde::Deserialize;

use super::reason::{self, ReasonFor};
use super::{Answer, ConsoleForm, Operator, admin_failure, back_to, need};
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, Viewer};
use crate::http::forms::FieldErrors;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, ScopeLine, Site, Stamp, scope_lines};
use crate::services::admin::{self, AdminError, ListingReview};
use crate::services::photos::served_path;
use crate::state::AppState;

const PAGE: &str = "/admin/directory";

/// One app under review, listed or rejected, as the page shows it.
pub struct ReviewCard {
    pub id: String,
    pub name: String,
    /// Where healthgate serves its photo.
    pub photo: Option<String>,
    pub description: Option<String>,
    /// Who registered it in the developer portal: their name and username,
    /// and their email; `None`: an operator registered it.
    pub owner: Option<(String, Option<String>)>,
    pub scopes: Vec<ScopeLine>,
    pub redirect_uris: Vec<String>,
    pub connect_url: Option<String>,
    /// When it asked (requests), or was reviewed (the others).
    pub since: Option<Stamp>,
    /// What changed, when an approved app came back for review.
    pub changed: Option<String>,
    /// What the page shows, digested; the Approve form carries it.
    pub fingerprint: String,
    pub suspended: bool,
    /// Who reviewed it last (listed and rejected apps).
    pub reviewer: Option<String>,
    pub reason: Option<String>,
}

#[derive(Template)]
#[template(path = "console_directory.html")]
pub struct DirectoryPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
    pub requests: Vec<ReviewCard>,
    pub listed: Vec<ReviewCard>,
    pub rejected: Vec<ReviewCard>,
}

/// The cards of `reviews`, with each reviewer named.
async fn cards(
    state: &AppState,
    reviews: Vec<ListingReview>,
) -> Result<Vec<ReviewCard>, PageError> {
    let mut out = Vec::with_capacity(reviews.len());
    for ListingReview { client: c, owner } in reviews {
        let l = &c.listing;
        let reviewer = match (l.reviewed_at, &l.reviewed_by) {
            (None, _) => None,
            (Some(_), None) => Some("the command line".to_owned()),
            (Some(_), Some(id)) => Some(
                state
                    .store
                    .user(id)
                    .await?
                    .map_or_else(|| "a former operator".to_owned(), |u| super::who(&u)),
            ),
        };
        let since = match l.state {
            ListingState::Requested => l.requested_at,
            _ => l.reviewed_at.or(l.requested_at),
        };
        out.push(ReviewCard {
            fingerprint: fingerprint(&c),
            photo: served_path(&c.id, c.photo_url.as_deref()),
            owner: owner.map(|u| (super::who(&u), u.email.clone())),
            scopes: scope_lines(&state.settings, c.allowed_scopes.iter()),
            redirect_uris: c
                .redirect_uris
                .iter()
                .map(|u| u.as_str().to_owned())
                .collect(),
            since: since.map(Stamp::exact),
            changed: (!l.changed.is_empty()).then(|| {
                l.changed
                    .iter()
                    .map(|f| f.label())
                    .collect::<Vec<_>>()
                    .join(" and ")
            }),
            suspended: c.suspended_at.is_some(),
            reviewer,
            reason: l.reason.clone(),
            id: c.id,
            name: c.name,
            description: c.description,
            connect_url: c.connect_redirect_url,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
    app: Option<String>,
}

/// `GET /admin/directory`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    op: Operator,
    Query(q): Query<DoneQuery>,
) -> Answer {
    let store = &state.store;
    let name = match q.app.as_deref() {
        Some(id) => store.client(id).await?.map(|c| c.name),
        None => None,
    }
    .unwrap_or_else(|| "The app".to_owned());
    let notice = match q.done.as_deref() {
        Some("approved") => Some(format!(
            "{name} is listed in the integration directory: practice administrators can connect it now."
        )),
        Some("already-approved") => Some(format!("{name} was already listed.")),
        Some("rejected") => Some(format!(
            "{name}'s request is rejected: its developer reads your reason."
        )),
        Some("unlisted") => Some(format!(
            "{name} is out of the integration directory. Practices connected to it stay connected."
        )),
        Some("changed") => Some(format!(
            "{name} changed since you opened this page, so it was not approved: review it again."
        )),
        _ => None,
    };
    let requests = admin::listings(store, ListingState::Requested)
        .await
        .map_err(admin_failure)?;
    let listed = admin::listings(store, ListingState::Approved)
        .await
        .map_err(admin_failure)?;
    let rejected = admin::listings(store, ListingState::Rejected)
        .await
        .map_err(admin_failure)?;
    Ok(pages::render(
        StatusCode::OK,
        &DirectoryPage {
            site: viewer.site(&state.settings),
            section: "directory",
            notice,
            csrf_token: &op.session.csrf_token,
            requests: cards(&state, requests).await?,
            listed: cards(&state, listed).await?,
            rejected: cards(&state, rejected).await?,
        },
    ))
}

/// `POST /admin/directory/approve` (`client_id`, `reviewed`: the
/// fingerprint of what the page showed).
pub async fn approve(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let client_id = need(&f.client_id, "the app")?;
    let seen = need(&f.reviewed, "what was reviewed")?;
    let done = match admin::approve_listing(
        &state.store,
        state.clock.as_ref(),
        &client_id,
        Some(&seen),
        op.actor(&ip),
    )
    .await
    {
        Ok(d) if d.changed => "approved",
        Ok(_) => "already-approved",
        Err(AdminError::Listing(ListingError::ChangedSinceReview)) => "changed",
        Err(e) => return Err(admin_failure(e)),
    };
    Ok(back_to(PAGE, &[("done", done), ("app", &client_id)]))
}

#[derive(Deserialize)]
pub struct AppQuery {
    client_id: Option<String>,
}

/// The name of app `client_id`, or "no such app".
async fn app_name(state: &AppState, client_id: &str) -> Result<String, AdminError> {
    state
        .store
        .client(client_id)
        .await?
        .map(|c| c.name)
        .ok_or_else(|| AdminError::NoSuchClient(client_id.to_owned()))
}

/// `GET /admin/directory/reject?client_id=` and `…/unlist?client_id=`:
/// the page that asks for the reason.
async fn ask_reason(
    state: &AppState,
    viewer: &Viewer,
    op: &Operator,
    what: ReasonFor,
    q: AppQuery,
) -> Answer {
    let client_id = need(&q.client_id, "the app")?;
    let name = app_name(state, &client_id).await.map_err(admin_failure)?;
    Ok(reason::page(
        state,
        viewer,
        op,
        what,
        (&client_id, &name),
        "",
        FieldErrors::default(),
    ))
}

pub async fn confirm_reject(
    State(state): State<AppState>,
    viewer: Viewer,
    op: Operator,
    Query(q): Query<AppQuery>,
) -> Answer {
    ask_reason(&state, &viewer, &op, ReasonFor::Reject, q).await
}

pub async fn confirm_unlist(
    State(state): State<AppState>,
    viewer: Viewer,
    op: Operator,
    Query(q): Query<AppQuery>,
) -> Answer {
    ask_reason(&state, &viewer, &op, ReasonFor::Unlist, q).await
}

/// The decisions of this page that take a reason.
#[derive(Clone, Copy)]
enum WithReason {
    Reject,
    Unlist,
}

/// `POST /admin/directory/reject` and `…/unlist` (`client_id`, `reason`):
/// sent from the page that asked; without a good reason, that page again
/// with the field's message, and nothing changes.
async fn decide(
    state: &AppState,
    viewer: &Viewer,
    ip: &ClientIp,
    op: &Operator,
    decision: WithReason,
    f: ConsoleForm,
) -> Answer {
    let what = match decision {
        WithReason::Reject => ReasonFor::Reject,
        WithReason::Unlist => ReasonFor::Unlist,
    };
    let client_id = need(&f.client_id, "the app")?;
    let name = app_name(state, &client_id).await.map_err(admin_failure)?;
    let reason = match reason::checked(what, f.reason.as_deref()) {
        Ok(reason) => reason,
        Err(errors) => {
            let typed = f.reason.as_deref().map(str::trim).unwrap_or_default();
            return Ok(reason::page(
                state,
                viewer,
                op,
                what,
                (&client_id, &name),
                typed,
                errors,
            ));
        }
    };
    let (store, clock, actor) = (&state.store, state.clock.as_ref(), op.actor(ip));
    let done = match decision {
        WithReason::Reject => {
            admin::reject_listing(store, clock, &client_id, &reason, actor)
                .await
                .map_err(admin_failure)?;
            "rejected"
        }
        WithReason::Unlist => {
            admin::unlist(store, clock, &client_id, &reason, actor)
                .await
                .map_err(admin_failure)?;
            "unlisted"
        }
    };
    Ok(back_to(PAGE, &[("done", done), ("app", &client_id)]))
}

pub async fn reject(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    decide(&state, &viewer, &ip, &op, WithReason::Reject, fields).await
}

pub async fn unlist(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    decide(&state, &viewer, &ip, &op, WithReason::Unlist, fields).await
}
