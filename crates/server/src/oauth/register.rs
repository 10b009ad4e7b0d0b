//! Dynamic client registration: `POST /oauth/register` (RFC 7591) with an
//! initial access token (or none, under open registration), and the client
//! configuration endpoint `GET`/`PUT`/`DELETE /oauth/register/{client_id}`
//! (RFC 7592) with the registration access token the app was given, which
//! a `PUT` replaces. Apps registered here are the same registrations the
//! portal and the command line make: same rules, same audit trail.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use healthgate_core::client::Client;
use healthgate_core::error::OAuthError;
use healthgate_core::registration::{self, Metadata};
use healthgate_core::secret::{self, SecretKind, mint};
use healthgate_store::Actor;
use serde_json::Value;

use crate::http::error::{ErrorBody, JsonError, no_store};
use crate::http::ip::ClientIp;
use crate::services::admin::{self, AdminError};
use crate::services::registration as service;
use crate::state::AppState;

/// The bearer token of `Authorization`, if any (an empty one is none).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    crate::http::extract::bearer_token(headers).filter(|t| !t.is_empty())
}

fn invalid_token(why: &'static str) -> JsonError {
    OAuthError::new(healthgate_core::error::ErrorCode::InvalidToken, why).into()
}

/// The JSON body of a registration request (RFC 7591 §3.1).
fn metadata(headers: &HeaderMap, body: &[u8]) -> Result<Metadata, JsonError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(
            registration::invalid_metadata("send the client metadata as application/json").into(),
        );
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| registration::invalid_metadata("the body is not JSON"))?;
    Ok(registration::parse(&value)?)
}

/// An admin refusal of the metadata as RFC 7591's error, anything else as
/// the failure it is.
fn refused(e: AdminError) -> JsonError {
    match service::refusal(e) {
        Ok(error) => error.into(),
        Err(AdminError::Store(e)) => e.into(),
        Err(AdminError::Invalid(why)) => registration::invalid_metadata(why).into(),
        Err(other) => registration::invalid_metadata(other.to_string()).into(),
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    no_store(&mut response);
    response
}

/// Client metadata (RFC 7591 §2) as healthgate reads it; other members are
/// ignored (§2), and a `software_statement` is refused.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `registration::parse` reads.
pub struct ClientMetadata {
    /// Needed for the authorization code flow; none for an app that only
    /// uses client credentials.
    redirect_uris: Option<Vec<String>>,
    client_name: Option<String>,
    /// Space-separated scopes the app may ask for.
    scope: Option<String>,
    /// `client_secret_basic` (the default), `client_secret_post`,
    /// `private_key_jwt` or `none` (a public app).
    token_endpoint_auth_method: Option<String>,
    /// Of `authorization_code`, `refresh_token`, `client_credentials`.
    grant_types: Option<Vec<String>>,
    /// Only `code`.
    response_types: Option<Vec<String>>,
    /// Where the app publishes its keys (private_key_jwt), or:
    jwks_uri: Option<String>,
    /// The app's keys, by value (a JWK Set).
    jwks: Option<serde_json::Value>,
    /// `ES256` or `RS256`.
    id_token_signed_response_alg: Option<String>,
    /// RFC 9449 §5.2.
    dpop_bound_access_tokens: Option<bool>,
    /// RFC 9126 §6.
    require_pushed_authorization_requests: Option<bool>,
    /// RFC 7592 §2.2: a `PUT` names the client it replaces.
    client_id: Option<String>,
    /// RFC 7592 §2.2: a `PUT` may repeat the client's secret.
    client_secret: Option<String>,
}

/// A registered client (RFC 7591 §3.2.1, RFC 7592 §3).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `services::registration::metadata` builds.
pub struct ClientInformation {
    client_id: String,
    /// Only when the registration made one (never again on a read).
    client_secret: Option<String>,
    /// 0: the secret does not expire.
    client_secret_expires_at: Option<i64>,
    client_id_issued_at: i64,
    client_name: String,
    redirect_uris: Vec<String>,
    scope: String,
    token_endpoint_auth_method: String,
    grant_types: Vec<String>,
    response_types: Vec<String>,
    id_token_signed_response_alg: String,
    dpop_bound_access_tokens: bool,
    require_pushed_authorization_requests: bool,
    jwks_uri: Option<String>,
    jwks: Option<serde_json::Value>,
    /// Where the registration is read, replaced and deleted (RFC 7592).
    registration_client_uri: String,
    /// The bearer token for `registration_client_uri`; a `PUT` replaces it.
    registration_access_token: String,
}

/// Register an app.
///
/// RFC 7591, with an initial access token from the platform's operators, or
/// none under open registration (`[registration] open`).
#[utoipa::path(
    post,
    path = "/oauth/register",
    operation_id = "registerClient",
    tag = "registration",
    request_body(content = ClientMetadata, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered.", body = ClientInformation),
        (status = 400, description = "`invalid_client_metadata`, `invalid_redirect_uri` or \
`unapproved_software_statement` (RFC 7591 §3.2.2).", body = ErrorBody),
        (status = 401, description = "`invalid_token`: no initial access token, or not a \
valid one.", body = ErrorBody),
    ),
    security(("initial_access_token" = []), ()),
)]
pub async fn create(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match register(&state, &ip, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn register(
    state: &AppState,
    ip: &ClientIp,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, JsonError> {
    let now = state.now();
    // RFC 7591 §3: the initial access token, as a bearer token (RFC 6750).
    let (registered_with, owner) = match bearer(headers) {
        Some(token) => match state
            .store
            .registration_token(&secret::digest(token))
            .await?
        {
            Some(t) if t.is_usable(now) => (t.id, t.owner_id),
            _ => {
                return Err(invalid_token(
                    "the initial access token is not valid: ask the platform's operators for one",
                ));
            }
        },
        None if state.settings.registration.open => ("open".to_owned(), None),
        None => {
            return Err(invalid_token(
                "registration needs an initial access token (Authorization: Bearer ...) from the platform's operators",
            ));
        }
    };
    let m = metadata(headers, body)?;
    let access = mint(SecretKind::RegistrationAccess);
    let req = service::new_client(&m, owner.clone(), registered_with, access.digest)?;
    let actor = Actor {
        user_id: owner.as_deref(),
        ip: ip.as_deref(),
    };
    let (client, secret) = admin::create_client(
        &state.store,
        &state.settings,
        state.clock.as_ref(),
        req,
        actor,
    )
    .await
    .map_err(refused)?;
    let mut body = service::metadata(&state.issuer.to_string(), &client);
    body["registration_access_token"] = access.value.into();
    if let Some(secret) = secret {
        body["client_secret"] = secret.into();
        body["client_secret_expires_at"] = 0.into();
    }
    Ok(answer(StatusCode::CREATED, body))
}

/// The client a configuration request is about, when its registration
/// access token is the one presented (RFC 7592 §2: else 401, also for a
/// client that does not exist).
async fn managed(
    state: &AppState,
    headers: &HeaderMap,
    client_id: &str,
) -> Result<(Client, String), JsonError> {
    let refused = || invalid_token("the registration access token is not valid for this client");
    let token = bearer(headers).ok_or_else(refused)?;
    let client = state.store.client(client_id).await?.ok_or_else(refused)?;
    match &client.registration_access_digest {
        Some(digest) if secret::matches_digest(token, digest) => Ok((client, token.to_owned())),
        _ => Err(refused()),
    }
}

/// Read a registration.
///
/// RFC 7592 §2.1. A wrong token, and a client that does not exist, are
/// both 401.
#[utoipa::path(
    get,
    path = "/oauth/register/{client_id}",
    operation_id = "readClientRegistration",
    tag = "registration",
    params(("client_id" = String, Path)),
    responses(
        (status = 200, description = "The registration.", body = ClientInformation),
        (status = 401, description = "`invalid_token`.", body = ErrorBody),
    ),
    security(("registration_access_token" = [])),
)]
pub async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Response {
    let (client, token) = match managed(&state, &headers, &client_id).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let mut body = service::metadata(&state.issuer.to_string(), &client);
    body["registration_access_token"] = token.into();
    answer(StatusCode::OK, body)
}

/// Replace a registration.
///
/// RFC 7592 §2.2: the registration replaced, and a new registration access
/// token.
#[utoipa::path(
    put,
    path = "/oauth/register/{client_id}",
    operation_id = "replaceClientRegistration",
    tag = "registration",
    params(("client_id" = String, Path)),
    request_body(content = ClientMetadata, content_type = "application/json"),
    responses(
        (status = 200, description = "The registration as it is now.", body = ClientInformation),
        (status = 400, description = "`invalid_client_metadata` or `invalid_redirect_uri`.",
body = ErrorBody),
        (status = 401, description = "`invalid_token`.", body = ErrorBody),
    ),
    security(("registration_access_token" = [])),
)]
pub async fn replace(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Response {
    match update(&state, &ip, &headers, &client_id, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn update(
    state: &AppState,
    ip: &ClientIp,
    headers: &HeaderMap,
    client_id: &str,
    body: &[u8],
) -> Result<Response, JsonError> {
    let (client, token) = managed(state, headers, client_id).await?;
    let m = metadata(headers, body)?;
    let changes = service::changes(&client, &m, state.now())?;
    let actor = Actor {
        user_id: client.owner_id.as_deref(),
        ip: ip.as_deref(),
    };
    let updated = admin::update_client(
        &state.store,
        &state.settings,
        state.clock.as_ref(),
        &client.id,
        changes,
        actor,
    )
    .await
    .map_err(refused)?;
    let access = mint(SecretKind::RegistrationAccess);
    if !state
        .store
        .replace_registration_access(
            &client.id,
            &secret::digest(&token),
            &access.digest,
            state.now(),
        )
        .await?
    {
        return Err(invalid_token(
            "the registration access token was replaced meanwhile",
        ));
    }
    let mut body = service::metadata(&state.issuer.to_string(), &updated);
    body["registration_access_token"] = access.value.into();
    Ok(answer(StatusCode::OK, body))
}

/// Delete a registration.
///
/// RFC 7592 §2.3: the client and everything issued to it are gone.
#[utoipa::path(
    delete,
    path = "/oauth/register/{client_id}",
    operation_id = "deleteClientRegistration",
    tag = "registration",
    params(("client_id" = String, Path)),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`invalid_token`.", body = ErrorBody),
    ),
    security(("registration_access_token" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Response {
    let (client, _) = match managed(&state, &headers, &client_id).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let actor = Actor {
        user_id: client.owner_id.as_deref(),
        ip: ip.as_deref(),
    };
    match admin::delete_client(&state.store, state.clock.as_ref(), &client.id, actor).await {
        Ok(()) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            no_store(&mut response);
            response
        }
        Err(AdminError::NoSuchClient(_)) => {
            invalid_token("the registration access token is not valid for this client")
                .into_response()
        }
        Err(other) => refused(other).into_response(),
    }
}
