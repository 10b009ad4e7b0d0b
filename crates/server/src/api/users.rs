//! Partner-provisioned accounts (HealthTap's "You manage users' identity"):
//! a partner that keeps its own user identity creates the platform account
//! on the fly and gets tokens for it.
//!
//! `POST /api/v1/users` (HTTP Basic with the app's id and secret, JSON or
//! form `{username, password?, email?, user_type?}`) answers HealthTap's
//! shape: `guid`, `access_token`, `token_type`, `expires_in`,
//! `refresh_token`, `scope`, `created_at`. The account belongs to the
//! partner: its username is unique per partner (stored as
//! `CLIENT_ID/USERNAME`, which is also what the person signs in with when the
//! account has a password). A partner reads only accounts it created or that
//! authorized it, and changes, deletes or mints tokens only for its own.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use healthgate_core::client::Client;
use healthgate_core::error::OAuthError;
use healthgate_core::grant;
use healthgate_core::owner::ResourceOwner;
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret::new_id;
use healthgate_core::smart::PatientLink;
use healthgate_core::user::{User, UserType, validate_email, validate_password, validate_username};
use healthgate_store::{Actor, StoreError};
use serde_json::{Value, json};

use crate::http::error::{ApiError, no_store};
use crate::http::ip::ClientIp;
use crate::oauth::client_auth::{self, authenticate_partner};
use crate::oauth::issue::new_tokens;
use crate::oauth::params::Params;
use crate::services::admin::AdminError;
use crate::services::{passwords, smart};
use crate::state::AppState;

/// How a partner's username is kept: unique per partner.
fn stored_username(client: &Client, username: &str) -> String {
    format!("{}/{username}", client.id)
}

/// A partner's view of an account.
#[derive(utoipa::ToSchema)]
#[schema(as = User)]
#[allow(dead_code)] // Describes what `user_json` builds.
pub struct UserDoc {
    guid: String,
    /// As the partner named it (without the partner's prefix).
    username: String,
    name: Option<String>,
    email: Option<String>,
    /// `member`, `practitioner`, …
    user_type: String,
    created_at: i64,
    /// Whether this partner created the account.
    provisioned: bool,
    /// SMART's fhirUser, e.g. `Practitioner/123`.
    fhir_user: Option<String>,
}

/// A new account (HealthTap's "You manage users' identity").
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct NewUser {
    /// Unique among this partner's accounts.
    username: String,
    /// If the person will also sign in here (8 to 1024 characters, not a
    /// common one).
    password: Option<String>,
    email: Option<String>,
    name: Option<String>,
    /// `member` by default.
    user_type: Option<String>,
}

/// Changes to an account; what is not sent stays.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct UserChange {
    email: Option<String>,
    /// Ends the person's sessions.
    password: Option<String>,
    /// SMART's fhirUser; empty clears it.
    fhir_user: Option<String>,
}

/// Tokens for a partner's account (HealthTap's shape, plus `guid`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `tokens_for` builds.
pub struct UserTokens {
    guid: String,
    access_token: String,
    /// `bearer`.
    token_type: String,
    expires_in: i64,
    refresh_token: Option<String>,
    scope: String,
    created_at: i64,
}

/// The patients linked to an account.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `patients_json` builds.
pub struct Patients {
    patients: Vec<Patient>,
}

/// A patient an account may choose at a SMART standalone launch.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Patient {
    /// The FHIR Patient id.
    id: String,
    display: String,
}

/// A link's name, as the picker shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct PatientLinkRequest {
    display: String,
}

fn user_json(client: &Client, u: &User) -> Value {
    let prefix = format!("{}/", client.id);
    json!({
        "guid": u.id,
        "username": u.username.strip_prefix(&prefix).unwrap_or(&u.username),
        "name": u.name,
        "email": u.email,
        "user_type": u.user_type.as_str(),
        "created_at": u.created_at,
        "provisioned": u.provisioned_by.as_deref() == Some(client.id.as_str()),
        "fhir_user": u.fhir_user,
    })
}

/// The scopes of tokens for provisioned users: the app's own provisioning
/// scopes, else the profile's (`[profile] provisioning_scope`; HealthTap's
/// `member_public`), else the app's allowed scopes.
fn provisioning_scope(state: &AppState, client: &Client) -> ScopeSet {
    client
        .provisioning_scopes
        .clone()
        .or_else(|| state.settings.default_provisioning_scopes())
        .unwrap_or_else(|| client.allowed_scopes.clone())
}

/// The partner's token response for a user (HealthTap's shape, plus `guid`).
async fn tokens_for(
    state: &AppState,
    client: &Client,
    user: &User,
    provision: bool,
) -> Result<Response, ApiError> {
    let scope = provisioning_scope(state, client);
    let (tokens, now) = new_tokens(state, true, None);
    let owner = ResourceOwner::person(&user.id, user.user_type);
    let grant::Decision { write, outcome } = grant::direct(
        &client.id,
        Some(&owner),
        &scope,
        &tokens,
        "provisioned",
        now,
    );
    let issued = outcome?;
    // Built before anything is written: a token that cannot be signed
    // leaves no account behind.
    let access_token = crate::oauth::issue::present_access_token(
        state,
        client,
        &issued,
        &tokens.access.value,
        now,
    )
    .await?;
    // Nothing is claimed (the account was read and checked, or is created
    // in the same write), so the write cannot go stale.
    let applied = if provision {
        state
            .store
            .provision_user(user, &client.id, &scope, &write)
            .await
    } else {
        state.store.apply_grant(write).await
    };
    applied.map_err(|e| match e {
        StoreError::Conflict(_) => {
            ApiError::conflict("a user with this username already exists for this app")
        }
        other => other.into(),
    })?;
    let body = json!({
        "guid": user.id,
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": state.policy.access_ttl,
        "refresh_token": tokens.refresh.map(|r| r.value),
        "scope": issued.scope.to_string(),
        "created_at": now,
    });
    let status = if provision {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(body)).into_response();
    no_store(&mut response);
    Ok(response)
}

/// Create an account the partner manages, and tokens for it.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    operation_id = "createUser",
    tag = "provisioning",
    request_body(content(
        (NewUser = "application/json"),
        (NewUser = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "The account and its tokens.", body = UserTokens),
        (status = 400, description = "`invalid_request`: a missing or refused username, password, email or user type.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 409, description = "`conflict`: this partner already has an account of that username.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let client = authenticate_partner(&state, &headers, &ip).await?;
    let params = Params::from_body(&headers, &body)?;
    let invalid = |m: String| ApiError::from(OAuthError::invalid_request(m));
    let username = params.require("username")?;
    validate_username(username).map_err(|e| invalid(e.to_owned()))?;
    let user_type = match params.get("user_type") {
        Some(t) => t.parse::<UserType>().map_err(|e| invalid(e.to_string()))?,
        None => UserType::Member,
    };
    if !client.serves(user_type) {
        return Err(invalid(format!(
            "this app does not serve {user_type} accounts"
        )));
    }
    let email = params.get("email").map(str::to_owned);
    if email.as_deref().is_some_and(|e| validate_email(e).is_err()) {
        return Err(invalid("email is not an email address".into()));
    }
    let password_hash = match params.get("password") {
        Some(p) => {
            validate_password(p).map_err(|e| invalid(e.to_owned()))?;
            Some(
                passwords::hash(p.to_owned())
                    .await
                    .map_err(|_| ApiError::from(OAuthError::server_error()))?,
            )
        }
        None => None,
    };
    let user = User {
        id: new_id("usr"),
        username: stored_username(&client, username),
        name: params.get("name").map(str::to_owned),
        email,
        user_type,
        password_hash,
        created_at: state.now(),
        locked_at: None,
        provisioned_by: Some(client.id.clone()),
        operator: false,
        password_reset_at: None,
        email_verified_at: None,
        fhir_user: None,
    };
    tokens_for(&state, &client, &user, true).await
}

/// The user `guid` if the partner may see it (it created the account or
/// the person authorized it); 403 otherwise, unknown ids included, so the
/// answer says nothing about accounts the partner may not see. A refusal on
/// an account that exists is audited, naming the partner that created it.
async fn visible(
    state: &AppState,
    client: &Client,
    guid: &str,
    ip: &ClientIp,
) -> Result<User, ApiError> {
    let refused = || ApiError::forbidden("this app may not access that user");
    let user = state.store.user(guid).await?.ok_or_else(refused)?;
    if state.store.partner_knows_user(&client.id, &user.id).await? {
        Ok(user)
    } else {
        refuse(state, ip, client, &user).await?;
        Err(refused())
    }
}

/// Audits a partner's refused access to `user`.
async fn refuse(
    state: &AppState,
    ip: &ClientIp,
    client: &Client,
    user: &User,
) -> Result<(), ApiError> {
    let owner = user.provisioned_by.as_deref();
    client_auth::record_refused_access(state, ip, &client.id, "user", Some(&user.id), owner)
        .await?;
    Ok(())
}

/// The user `guid` if the partner created it.
async fn own(
    state: &AppState,
    client: &Client,
    guid: &str,
    ip: &ClientIp,
) -> Result<User, ApiError> {
    let user = visible(state, client, guid, ip).await?;
    if user.provisioned_by.as_deref() == Some(client.id.as_str()) {
        Ok(user)
    } else {
        refuse(state, ip, client, &user).await?;
        Err(ApiError::forbidden("this app did not create that user"))
    }
}

/// Read an account.
///
/// One the partner created, or whose person authorized it.
#[utoipa::path(
    get,
    path = "/api/v1/users/{guid}",
    operation_id = "readUser",
    tag = "provisioning",
    params(("guid" = String, Path, description = "The account, `usr-…`.")),
    responses(
        (status = 200, description = "The account.", body = UserDoc),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: the partner may not see (or did not create) that user; unknown ids too.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let client = authenticate_partner(&state, &headers, &ip).await?;
    let user = visible(&state, &client, &guid, &ip).await?;
    Ok(Json(user_json(&client, &user)))
}

/// Change an account the partner created.
///
/// `email`, `password` (which ends the person's sessions), `fhir_user`.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{guid}",
    operation_id = "updateUser",
    tag = "provisioning",
    params(("guid" = String, Path, description = "The account, `usr-…`.")),
    request_body(content(
        (UserChange = "application/json"),
        (UserChange = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The account as it is now.", body = UserDoc),
        (status = 400, description = "`invalid_request`: a refused email, password or fhirUser.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: the partner may not see (or did not create) that user; unknown ids too.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`: the account was deleted meanwhile.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(guid): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let client = authenticate_partner(&state, &headers, &ip).await?;
    let user = own(&state, &client, &guid, &ip).await?;
    let params = Params::from_body(&headers, &body)?;
    let now = state.now();
    if let Some(email) = params.get("email") {
        if validate_email(email).is_err() {
            return Err(OAuthError::invalid_request("email is not an email address").into());
        }
        state.store.set_email(&user.id, Some(email), now).await?;
    }
    if let Some(password) = params.get("password") {
        validate_password(password).map_err(OAuthError::invalid_request)?;
        let hash = passwords::hash(password.to_owned())
            .await
            .map_err(|_| ApiError::from(OAuthError::server_error()))?;
        state.store.set_password(&user.id, &hash, now).await?;
        crate::services::mail::security_notice_or_log(
            &state,
            &user,
            healthgate_core::recovery::Notice::PasswordChanged,
        )
        .await;
    }
    // SMART's fhirUser (`Practitioner/123`); empty clears it.
    if let Some(fhir_user) = params.get("fhir_user") {
        smart::set_fhir_user(&state.store, now, &user.id, Some(fhir_user), actor(&ip))
            .await
            .map_err(admin_refusal)?;
    }
    let user = state
        .store
        .user(&user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_json(&client, &user)))
}

/// Fresh tokens for an account the partner created.
#[utoipa::path(
    post,
    path = "/api/v1/users/{guid}/tokens",
    operation_id = "userTokens",
    tag = "provisioning",
    params(("guid" = String, Path, description = "The account, `usr-…`.")),
    responses(
        (status = 200, description = "The tokens.", body = UserTokens),
        (status = 400, description = "`invalid_scope`: the app's provisioning scopes cannot be granted.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not the partner's account, or it is locked.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn tokens(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    let client = authenticate_partner(&state, &headers, &ip).await?;
    let user = own(&state, &client, &guid, &ip).await?;
    if !user.is_active() {
        return Err(ApiError::forbidden("the account is locked"));
    }
    tokens_for(&state, &client, &user, false).await
}

/// What a partner did, for the audit trail: no account, its address.
fn actor(ip: &ClientIp) -> Actor<'_> {
    Actor {
        user_id: None,
        ip: ip.as_deref(),
    }
}

/// A refusal of `services` as the API answers it: the request's fault is
/// `invalid_request`.
fn admin_refusal(e: AdminError) -> ApiError {
    match e {
        AdminError::Store(e) => ApiError::from(e),
        other => ApiError::from(OAuthError::invalid_request(other.to_string())),
    }
}

fn patients_json(links: &[PatientLink]) -> Value {
    json!({
        "patients": links
            .iter()
            .map(|p| json!({ "id": p.patient_id, "display": p.display }))
            .collect::<Vec<_>>()
    })
}

/// The patients linked to an account the partner created.
///
/// What SMART's standalone launch offers the person to pick from.
#[utoipa::path(
    get,
    path = "/api/v1/users/{guid}/patients",
    operation_id = "listUserPatients",
    tag = "provisioning",
    params(("guid" = String, Path, description = "The account, `usr-…`.")),
    responses(
        (status = 200, description = "The linked patients.", body = Patients),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: the partner may not see (or did not create) that user; unknown ids too.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn patients(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let client = authenticate_partner(&state, &headers, &ip).await?;
    let user = own(&state, &client, &guid, &ip).await?;
    Ok(Json(patients_json(
        &state.store.patient_links(&user.id).await?,
    )))
}

/// Link a patient to an account the partner created, or rename the link.
#[utoipa::path(
    put,
    path = "/api/v1/users/{guid}/patients/{patient}",
    operation_id = "linkUserPatient",
    tag = "provisioning",
    params(("guid" = String, Path, description = "The account, `usr-…`."), ("patient" = String, Path, description = "The FHIR Patient id.")),
    request_body(content(
        (PatientLinkRequest = "application/json"),
        (PatientLinkRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The linked patients.", body = Patients),
        (status = 400, description = "`invalid_request`: no `display`, or a refused patient id or name.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: the partner may not see (or did not create) that user; unknown ids too.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn link_patient(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path((guid, patient)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let client = authenticate_partner(&state, &headers, &ip).await?;
    let user = own(&state, &client, &guid, &ip).await?;
    let params = Params::from_body(&headers, &body)?;
    let link = PatientLink {
        patient_id: patient,
        display: params.require("display")?.to_owned(),
    };
    smart::link_patient(&state.store, state.now(), &user.id, link, actor(&ip))
        .await
        .map_err(admin_refusal)?;
    Ok(Json(patients_json(
        &state.store.patient_links(&user.id).await?,
    )))
}

/// Unlink a patient from an account the partner created.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{guid}/patients/{patient}",
    operation_id = "unlinkUserPatient",
    tag = "provisioning",
    params(("guid" = String, Path, description = "The account, `usr-…`."), ("patient" = String, Path, description = "The FHIR Patient id.")),
    responses(
        (status = 204, description = "Unlinked."),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: the partner may not see (or did not create) that user; unknown ids too.", body = crate::http::error::ErrorBody),
        (status = 404, description = "`not_found`: that patient was not linked.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn unlink_patient(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path((guid, patient)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let client = authenticate_partner(&state, &headers, &ip).await?;
    let user = own(&state, &client, &guid, &ip).await?;
    if !state
        .store
        .unlink_patient(&user.id, &patient, actor(&ip), state.now())
        .await?
    {
        return Err(ApiError::not_found("linked patient"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Delete an account the partner created, and every token issued for it.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{guid}",
    operation_id = "deleteUser",
    tag = "provisioning",
    params(("guid" = String, Path, description = "The account, `usr-…`.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: the partner may not see (or did not create) that user; unknown ids too.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(guid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let client = authenticate_partner(&state, &headers, &ip).await?;
    let user = own(&state, &client, &guid, &ip).await?;
    state
        .store
        .delete_user(&user.id, Some(&client.id), state.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
