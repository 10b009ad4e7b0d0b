//! `/admin/organizations`: every practice and clinic with how many people
//! belong to it, creating one, and an organization's page with its members
//! and their roles (add, change, remove), through the same administrative
//! operations the CLI uses.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use healthgate_core::org::{Organization, OrganizationKind};
use serde::Deserialize;

use super::{
    Answer, ConsoleForm, Operator, Refusal, admin_failure, back_to, need, person_named, who,
};
use crate::http::error::{PageError, sentence};
use crate::http::extract::{CsrfForm, Viewer};
use crate::http::forms::FieldErrors;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site};
use crate::services::admin::{self, AdminError};
use crate::state::AppState;

const LIST: &str = "/admin/organizations";

/// One organization in the list.
pub struct OrganizationRow {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub members: i64,
}

#[derive(Template)]
#[template(path = "console_organizations.html")]
pub struct OrganizationsPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
    pub organizations: Vec<OrganizationRow>,
    pub errors: FieldErrors,
    /// What the create form was sent with, shown again after a refusal.
    pub name: String,
    pub kind: String,
}

/// One member of an organization.
pub struct MemberRow {
    pub user_id: String,
    pub username: String,
    pub name: Option<String>,
    pub role: String,
    pub locked: bool,
}

#[derive(Template)]
#[template(path = "console_organization.html")]
pub struct OrganizationPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
    pub organization: Organization,
    pub members: Vec<MemberRow>,
    /// The configured roles, `admin` first.
    pub roles: Vec<String>,
    /// Messages of the add form, by field.
    pub errors: FieldErrors,
    pub username: String,
    pub role: String,
    /// A refused role change: the member's id and why.
    pub row_error: Option<(String, String)>,
}

impl OrganizationPage<'_> {
    /// The refusal of a role change, if it concerns this member.
    pub fn row_error_of(&self, user_id: &str) -> Option<&str> {
        self.row_error
            .as_ref()
            .filter(|(id, _)| id == user_id)
            .map(|(_, m)| m.as_str())
    }
}

/// What the page says after an action.
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
    user: Option<String>,
}

async fn rows(state: &AppState) -> Result<Vec<OrganizationRow>, Refusal> {
    Ok(state
        .store
        .organizations_with_member_counts()
        .await?
        .into_iter()
        .map(|(o, members)| OrganizationRow {
            id: o.id,
            name: o.name,
            kind: o.kind.as_str(),
            members,
        })
        .collect())
}

/// `GET /admin/organizations`.
pub async fn list(State(state): State<AppState>, viewer: Viewer, op: Operator) -> Answer {
    Ok(pages::render(
        StatusCode::OK,
        &OrganizationsPage {
            site: viewer.site(&state.settings),
            section: "organizations",
            notice: None,
            csrf_token: &op.session.csrf_token,
            organizations: rows(&state).await?,
            errors: FieldErrors::default(),
            name: String::new(),
            kind: "practice".into(),
        },
    ))
}

/// `POST /admin/organizations` (`name`, `kind`): creates an organization
/// and goes to its page; a refusal shows the form again with the message
/// next to its field (422).
pub async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    op: Operator,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let name = f.name.clone().unwrap_or_default();
    let kind_text = f.kind.clone().unwrap_or_default();
    let mut errors = FieldErrors::default();
    let kind = match kind_text.parse::<OrganizationKind>() {
        Ok(k) => Some(k),
        Err(_) => {
            errors.add("kind", "Choose practice or clinic.");
            None
        }
    };
    if name.trim().is_empty() {
        errors.add("name", "Enter the organization's name.");
    }
    if let (Some(kind), true) = (kind, errors.is_empty()) {
        match admin::create_organization_by(
            &state.store,
            state.clock.as_ref(),
            &name,
            kind,
            op.actor(&ip),
        )
        .await
        {
            Ok(org) => {
                return Ok(back_to(
                    &format!("{LIST}/{}", org.id),
                    &[("done", "created")],
                ));
            }
            Err(AdminError::Field { field, message }) => errors.add(field, sentence(&message)),
            Err(e) => return Err(admin_failure(e)),
        }
    }
    Ok(pages::render(
        StatusCode::UNPROCESSABLE_ENTITY,
        &OrganizationsPage {
            site: viewer.site(&state.settings),
            section: "organizations",
            notice: None,
            csrf_token: &op.session.csrf_token,
            organizations: rows(&state).await?,
            errors,
            name,
            kind: kind_text,
        },
    ))
}

async fn organization(state: &AppState, id: &str) -> Result<Organization, Refusal> {
    state.store.organization(id).await?.ok_or_else(|| {
        PageError {
            status: StatusCode::NOT_FOUND,
            title: "No such organization",
            message: "There is no organization with that id.".into(),
        }
        .into()
    })
}

/// The configured roles, `admin` first, then by name.
fn roles(state: &AppState) -> Vec<String> {
    let mut roles: Vec<String> = state.settings.roles.keys().cloned().collect();
    roles.sort_by_key(|r| (r != healthgate_core::org::ADMIN, r.clone()));
    roles
}

/// The organization's page; `form` carries a refused add or role change.
async fn render_organization(
    state: &AppState,
    viewer: &Viewer,
    op: &Operator,
    org: Organization,
    status: StatusCode,
    notice: Option<String>,
    form: Form,
) -> Answer {
    let members = state
        .store
        .members(&org.id)
        .await?
        .into_iter()
        .map(|(u, role)| MemberRow {
            locked: !u.is_active(),
            user_id: u.id,
            username: u.username,
            name: u.name,
            role,
        })
        .collect();
    let roles = roles(state);
    let role = form.role.unwrap_or_else(|| {
        roles
            .iter()
            .rfind(|r| *r != "admin")
            .cloned()
            .unwrap_or_default()
    });
    Ok(pages::render(
        status,
        &OrganizationPage {
            site: viewer.site(&state.settings),
            section: "organizations",
            notice,
            csrf_token: &op.session.csrf_token,
            organization: org,
            members,
            roles,
            errors: form.errors,
            username: form.username,
            role,
            row_error: form.row_error,
        },
    ))
}

/// What a refused form on the organization's page was sent with.
#[derive(Default)]
struct Form {
    errors: FieldErrors,
    username: String,
    role: Option<String>,
    row_error: Option<(String, String)>,
}

/// `GET /admin/organizations/{id}`.
pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    op: Operator,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Answer {
    let org = organization(&state, &id).await?;
    let person = person_named(&state, q.user.as_deref()).await?;
    let notice = match q.done.as_deref() {
        Some("created") => Some(format!(
            "{} was created. Add its first members below.",
            org.name
        )),
        Some("added") => Some(format!("{person} was added to {}.", org.name)),
        Some("role") => Some(format!("{person}'s role at {} was changed.", org.name)),
        Some("unchanged") => Some(format!("{person} already had that role.")),
        Some("removed") => Some(format!("{person} was removed from {}.", org.name)),
        Some("not-member") => Some(format!("{person} was not a member of {}.", org.name)),
        _ => None,
    };
    render_organization(
        &state,
        &viewer,
        &op,
        org,
        StatusCode::OK,
        notice,
        Form::default(),
    )
    .await
}

/// `POST /admin/organizations/{id}/members` (`username`, `role`): adds a
/// person; someone already there is pointed to the role change instead.
pub async fn add_member(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    op: Operator,
    Path(id): Path<String>,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let org = organization(&state, &id).await?;
    let username = f
        .username
        .clone()
        .map(|u| u.trim().to_owned())
        .unwrap_or_default();
    let role = f.role.clone().unwrap_or_default();
    let mut form = Form {
        username: username.clone(),
        role: Some(role.clone()),
        ..Form::default()
    };
    if username.is_empty() {
        form.errors
            .add("username", "Enter the username of the person to add.");
    }
    if let Err(AdminError::Field { message, .. }) = admin::check_role(&state.settings, &role) {
        form.errors.add("role", sentence(&message));
    }
    if form.errors.is_empty() {
        match admin::find_user(&state.store, &username).await {
            Ok(person) => {
                let members = state.store.members(&org.id).await?;
                if let Some((_, held)) = members.iter().find(|(u, _)| u.id == person.id) {
                    form.errors.add(
                        "username",
                        format!(
                            "{} is already a member, as {held}. Change their role in the list of members.",
                            who(&person)
                        ),
                    );
                } else {
                    admin::add_member_by(
                        &state.store,
                        &state.settings,
                        state.clock.as_ref(),
                        &org.id,
                        &person.id,
                        &role,
                        op.actor(&ip),
                    )
                    .await
                    .map_err(admin_failure)?;
                    return Ok(back_to(
                        &format!("{LIST}/{}", org.id),
                        &[("done", "added"), ("user", &person.id)],
                    ));
                }
            }
            Err(AdminError::Field { .. }) => form
                .errors
                .add("username", format!("No one has the username {username:?}.")),
            Err(e) => return Err(admin_failure(e)),
        }
    }
    render_organization(
        &state,
        &viewer,
        &op,
        org,
        StatusCode::UNPROCESSABLE_ENTITY,
        None,
        form,
    )
    .await
}

/// `POST /admin/organizations/{id}/members/role` (`user_id`, `role`).
pub async fn change_role(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    op: Operator,
    Path(id): Path<String>,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let org = organization(&state, &id).await?;
    let user_id = need(&f.user_id, "the member")?;
    let role = f.role.clone().unwrap_or_default();
    if let Err(AdminError::Field { message, .. }) = admin::check_role(&state.settings, &role) {
        let form = Form {
            row_error: Some((user_id, sentence(&message))),
            ..Form::default()
        };
        return render_organization(
            &state,
            &viewer,
            &op,
            org,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            form,
        )
        .await;
    }
    let before = state
        .store
        .change_member_role(&org.id, &user_id, &role, op.actor(&ip), state.now())
        .await?;
    let done = match before {
        None => "not-member",
        Some(before) if before == role => "unchanged",
        Some(_) => "role",
    };
    Ok(back_to(
        &format!("{LIST}/{}", org.id),
        &[("done", done), ("user", &user_id)],
    ))
}

/// `POST /admin/organizations/{id}/members/remove` (`user_id`).
pub async fn remove_member(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(id): Path<String>,
    CsrfForm { fields: f, .. }: CsrfForm<ConsoleForm>,
) -> Answer {
    let org = organization(&state, &id).await?;
    let user_id = need(&f.user_id, "the member")?;
    let removed = state
        .store
        .remove_membership_by(&org.id, &user_id, op.actor(&ip), state.now())
        .await?;
    Ok(back_to(
        &format!("{LIST}/{}", org.id),
        &[
            ("done", if removed { "removed" } else { "not-member" }),
            ("user", &user_id),
        ],
    ))
}
