//! The integration directory practice admins connect partners from
//! (`/integrations`): every app the platform's operators approved for it,
//! with its state for the practice (and any app the practice is still
//! connected to that left the directory), Connect (InstantOn: the browser
//! goes to the partner's connect URL with the code appended) or a code to
//! send by hand, each after a page that says in plain words what the
//! partner will be able to read and do for the practice, and Disconnect,
//! which asks first on a page of its own and says afterwards what it did.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::integration::{ConnectMode, IntegrationStatus, connect_url};
use healthgate_core::org::{ADMIN, Organization};
use healthgate_core::redirect::with_query_params;
use healthgate_core::secret::{SecretKind, mint};
use serde::Deserialize;

use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, SignedIn, Viewer};
use crate::http::ip::ClientIp;
use crate::http::pages::{
    self, ConnectCodePage, DirectoryApp, IntegrationsPage, ScopeLine, Site, scope_lines,
};
use crate::services::photos::served_path;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct DirectoryQuery {
    org: Option<String>,
    /// What an action just did (`disconnected`), for the status message.
    done: Option<String>,
    /// The app it concerned.
    app: Option<String>,
}

/// The organizations `person` administers; a person who administers none
/// is refused.
async fn administered(state: &AppState, person: &SignedIn) -> Result<Vec<Organization>, PageError> {
    let orgs = state
        .store
        .organizations_where(&person.user.id, ADMIN)
        .await?;
    if orgs.is_empty() {
        return Err(PageError::forbidden(
            "Only practice administrators can manage integrations. Ask an administrator of your practice.",
        ));
    }
    Ok(orgs)
}

/// What the directory's forms send.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DirectoryForm {
    org: Option<String>,
    client_id: Option<String>,
    mode: Option<String>,
    integration_id: Option<String>,
}

fn pick<'a>(orgs: &'a [Organization], wanted: Option<&str>) -> Result<&'a Organization, PageError> {
    match wanted {
        None => Ok(&orgs[0]),
        Some(id) => orgs
            .iter()
            .find(|o| o.id == id)
            .ok_or_else(|| PageError::forbidden("You are not an administrator of that practice.")),
    }
}

pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    Query(q): Query<DirectoryQuery>,
) -> Result<Response, PageError> {
    let orgs = administered(&state, &person).await?;
    let session = &person.session;
    let org = pick(&orgs, q.org.as_deref())?;
    let integrations = state.store.integrations_of_organization(&org.id).await?;
    let mut apps = state.store.published_clients().await?;
    // An app the practice is still connected to (or connecting) stays in
    // its view after it leaves the directory, so it can be disconnected.
    for i in &integrations {
        if i.status != IntegrationStatus::Disconnected
            && !apps.iter().any(|c| c.id == i.client_id)
            && let Some(c) = state.store.client(&i.client_id).await?
        {
            apps.push(c);
        }
    }
    let notice = match (q.done.as_deref(), q.app.as_deref()) {
        (Some("disconnected"), Some(app_id)) => {
            let name = state
                .store
                .client(app_id)
                .await?
                .map_or_else(|| "The app".to_owned(), |c| c.name);
            Some(format!(
                "{name} is disconnected from {}: its practice API keys have stopped working.",
                org.name
            ))
        }
        _ => None,
    };
    let cards: Vec<DirectoryApp> = apps
        .into_iter()
        .map(|c| {
            let live = integrations
                .iter()
                .find(|i| i.client_id == c.id && i.status != IntegrationStatus::Disconnected);
            let (state_name, label) = match live.map(|i| i.status) {
                Some(IntegrationStatus::Connected) => ("connected", "Connected"),
                Some(IntegrationStatus::Pending) => ("pending", "Pending: waiting for the partner"),
                _ => ("not-connected", "Not connected"),
            };
            DirectoryApp {
                listed: c.is_listed(),
                suspended: c.suspended_at.is_some(),
                photo_url: served_path(&c.id, c.photo_url.as_deref()),
                client_id: c.id,
                name: c.name,
                description: c.description,
                state: state_name,
                state_label: label,
                integration_id: live.map(|i| i.id.clone()),
            }
        })
        .collect();
    Ok(pages::render(
        StatusCode::OK,
        &IntegrationsPage {
            site: viewer.site(&state.settings),
            org_id: &org.id,
            org_name: &org.name,
            orgs: orgs
                .iter()
                .map(|o| (o.id.clone(), o.name.clone()))
                .collect(),
            apps: cards,
            csrf_token: &session.csrf_token,
            notice,
        },
    ))
}

/// The organization a directory form is about, among those the person
/// administers.
async fn form_organization(
    state: &AppState,
    person: &SignedIn,
    form: &DirectoryForm,
) -> Result<Organization, PageError> {
    let orgs = administered(state, person).await?;
    Ok(pick(&orgs, form.org.as_deref())?.clone())
}

/// `POST /integrations/connect`: `mode=redirect` (Connect) or `mode=manual`.
pub async fn connect(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    person: SignedIn,
    CsrfForm { fields: f, .. }: CsrfForm<DirectoryForm>,
) -> Result<Response, PageError> {
    let org = form_organization(&state, &person, &f).await?;
    let session = &person.session;
    let client = listed_app(&state, f.client_id.as_deref()).await?;
    let mode = connect_mode(&f);
    let ttl = code_ttl(&state, mode);
    let now = state.now();
    let code = mint(SecretKind::ConnectCode);
    let admin_id = session.user_id.clone().unwrap_or_default();
    state
        .store
        .start_integration(
            &org.id,
            &client.id,
            &admin_id,
            &code,
            mode,
            now + ttl,
            ip.as_deref(),
            now,
        )
        .await?;
    match (mode, &client.connect_redirect_url) {
        (ConnectMode::Redirect, Some(url)) => {
            Ok(Redirect::to(&connect_url(url, &code.value)).into_response())
        }
        _ => Ok(pages::render(
            StatusCode::OK,
            &ConnectCodePage {
                site: viewer.site(&state.settings),
                app_name: &client.name,
                code: &code.value,
                lifetime: &human_duration(ttl),
                exchange_url: &format!("{}/api/oauth/tokens", state.issuer),
                org_id: &org.id,
            },
        )),
    }
}

/// An app of the directory (listed, not suspended), or a bad request.
async fn listed_app(
    state: &AppState,
    client_id: Option<&str>,
) -> Result<healthgate_core::client::Client, PageError> {
    state
        .store
        .client(client_id.unwrap_or_default())
        .await?
        .filter(healthgate_core::client::Client::is_listed)
        .ok_or_else(|| PageError::bad_request("That app is not in the directory."))
}

/// Connect (`redirect`, the default) or "Get a code to send" (`manual`).
fn connect_mode(f: &DirectoryForm) -> ConnectMode {
    match f.mode.as_deref() {
        Some("manual") => ConnectMode::Manual,
        _ => ConnectMode::Redirect,
    }
}

/// How long a connect code of `mode` lives.
fn code_ttl(state: &AppState, mode: ConnectMode) -> i64 {
    match mode {
        ConnectMode::Redirect => state.settings.connect_code_ttl.secs(),
        ConnectMode::Manual => state.settings.manual_connect_code_ttl.secs(),
    }
}

/// `GET /integrations/connect?org=&client_id=&mode=`: what connecting
/// gives the partner, in plain words, before any code is issued.
#[derive(Template)]
#[template(path = "integrations_connect.html")]
pub struct ConnectPage<'a> {
    pub site: Site<'a>,
    pub csrf_token: &'a str,
    pub org_id: &'a str,
    pub org_name: &'a str,
    pub client_id: &'a str,
    pub app_name: &'a str,
    /// Where healthgate serves the app's photo.
    pub app_photo: Option<String>,
    /// `redirect` or `manual`, as the form sends it.
    pub mode: &'a str,
    /// Where Connect sends the admin: the connect URL's host.
    pub partner_host: Option<String>,
    /// How long the code works, as people read it.
    pub lifetime: String,
    /// The scopes the app may ask for, in the platform's words.
    pub scopes: Vec<ScopeLine>,
    /// An administrator authorizes it for the whole practice, rather than
    /// each person for themselves.
    pub organization_level: bool,
}

/// `GET /integrations/connect`: the confirmation step of Connect and of
/// "Get a code to send".
pub async fn confirm_connect(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    Query(f): Query<DirectoryForm>,
) -> Result<Response, PageError> {
    let org = form_organization(&state, &person, &f).await?;
    let client = listed_app(&state, f.client_id.as_deref()).await?;
    let mode = connect_mode(&f);
    let partner_host = client
        .connect_redirect_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned));
    Ok(pages::render(
        StatusCode::OK,
        &ConnectPage {
            site: viewer.site(&state.settings),
            csrf_token: &person.session.csrf_token,
            org_id: &org.id,
            org_name: &org.name,
            client_id: &client.id,
            app_name: &client.name,
            app_photo: served_path(&client.id, client.photo_url.as_deref()),
            mode: match mode {
                ConnectMode::Redirect => "redirect",
                ConnectMode::Manual => "manual",
            },
            partner_host,
            lifetime: human_duration(code_ttl(&state, mode)),
            scopes: scope_lines(&state.settings, client.allowed_scopes.iter()),
            organization_level: client.authorization_level
                == healthgate_core::owner::AuthorizationLevel::Organization,
        },
    ))
}

/// `GET /integrations/disconnect?org=&integration_id=`: what
/// disconnecting does, before anything happens.
#[derive(Template)]
#[template(path = "integrations_disconnect.html")]
pub struct DisconnectPage<'a> {
    pub site: Site<'a>,
    pub csrf_token: &'a str,
    pub org_id: &'a str,
    pub org_name: &'a str,
    pub integration_id: &'a str,
    pub app_name: &'a str,
}

/// The practice's integration a disconnect form or page is about, with its
/// app's name.
async fn practice_integration(
    state: &AppState,
    org: &Organization,
    integration_id: Option<&str>,
) -> Result<(healthgate_core::integration::Integration, String), PageError> {
    let integration = state
        .store
        .integration(integration_id.unwrap_or_default())
        .await?
        .filter(|i| i.organization_id == org.id)
        .ok_or_else(|| PageError::bad_request("That integration is not one of this practice's."))?;
    let name = state
        .store
        .client(&integration.client_id)
        .await?
        .map_or_else(|| "The app".to_owned(), |c| c.name);
    Ok((integration, name))
}

/// `GET /integrations/disconnect`: the confirmation step.
pub async fn confirm_disconnect(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    Query(f): Query<DirectoryForm>,
) -> Result<Response, PageError> {
    let org = form_organization(&state, &person, &f).await?;
    let (integration, app_name) =
        practice_integration(&state, &org, f.integration_id.as_deref()).await?;
    Ok(pages::render(
        StatusCode::OK,
        &DisconnectPage {
            site: viewer.site(&state.settings),
            csrf_token: &person.session.csrf_token,
            org_id: &org.id,
            org_name: &org.name,
            integration_id: &integration.id,
            app_name: &app_name,
        },
    ))
}

/// `POST /integrations/disconnect`: sent from the confirmation page; back
/// to the directory, which says what was done.
pub async fn disconnect(
    State(state): State<AppState>,
    ip: ClientIp,
    person: SignedIn,
    CsrfForm { fields: f, .. }: CsrfForm<DirectoryForm>,
) -> Result<Response, PageError> {
    let org = form_organization(&state, &person, &f).await?;
    let session = &person.session;
    let (integration, _) = practice_integration(&state, &org, f.integration_id.as_deref()).await?;
    state
        .store
        .deactivate_integration(
            &integration.id,
            session.user_id.as_deref(),
            ip.as_deref(),
            state.now(),
        )
        .await?;
    let back = with_query_params(
        "/integrations",
        &[
            ("org", &org.id),
            ("done", "disconnected"),
            ("app", &integration.client_id),
        ],
    );
    Ok(Redirect::to(&back).into_response())
}

fn human_duration(seconds: i64) -> String {
    match seconds {
        s if s % 3600 == 0 && s >= 3600 => {
            format!("{} hour{}", s / 3600, if s == 3600 { "" } else { "s" })
        }
        s if s % 60 == 0 && s >= 60 => {
            format!("{} minute{}", s / 60, if s == 60 { "" } else { "s" })
        }
        s => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(3600), "1 hour");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(90), "90 seconds");
    }
}
