//! Pushed authorization requests (RFC 9126) and signed request objects
//! (RFC 9101): `POST /oauth/par`, and what the authorization endpoint does
//! with a `request_uri` or a `request` (`resolve`). The rules are
//! `core::par`'s; here they meet the store, the client's keys and HTTP.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use healthgate_core::authorize::{AuthorizeError, AuthorizeParams, validate};
use healthgate_core::client::Client;
use healthgate_core::error::{ErrorCode, OAuthError};
use healthgate_core::par;
use healthgate_core::secret;

use crate::http::error::{JsonError, PageError};
use crate::http::ip::ClientIp;
use crate::oauth::client_auth;
use crate::oauth::dpop;
use crate::oauth::params::Params;
use crate::state::AppState;

/// A pushed authorization request: the authorization request's parameters
/// (RFC 6749 §4.1.1, RFC 7636, OpenID Connect, SMART), or a signed request
/// object in `request` (RFC 9101), and the app's authentication as at the
/// token endpoint.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct PushRequest {
    /// `code`, the one response type.
    #[schema(pattern = "^code$")]
    response_type: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    /// PKCE (RFC 7636): the S256 challenge.
    code_challenge: Option<String>,
    /// `S256`, the one method.
    #[schema(pattern = "^S256$")]
    code_challenge_method: Option<String>,
    nonce: Option<String>,
    /// A signed request object carrying the parameters (RFC 9101).
    request: Option<String>,
    #[serde(flatten)]
    client: client_auth::ClientAuthentication,
}

/// Where the authorization endpoint finds a pushed request (RFC 9126 §2.2).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Pushed {
    /// Pass as `request_uri`, with `client_id`, to the authorization
    /// endpoint.
    pub request_uri: String,
    /// Seconds it can be used for (once).
    pub expires_in: i64,
}

/// Push an authorization request.
///
/// The client, authenticated as at the token endpoint, pushes an
/// authorization request and gets a `request_uri` for the authorization
/// endpoint (201, RFC 9126 §2.2), or the token endpoint's kind of error
/// (§2.3). A DPoP proof binds the code to its key (RFC 9449 §10.1).
#[utoipa::path(
    post,
    path = "/oauth/par",
    operation_id = "pushAuthorizationRequest",
    tag = "oauth",
    request_body(content(
        (PushRequest = "application/x-www-form-urlencoded"),
        (PushRequest = "application/json"),
    )),
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof JWT (RFC 9449 §10).")),
    responses(
        (status = 201, description = "The request is kept.", body = Pushed),
        (status = 400, description = "The request would be refused at the authorization \
endpoint: `invalid_request`, `invalid_scope`, `invalid_request_object`, `unauthorized_client`, \
`invalid_dpop_proof`.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`.", body = crate::http::error::ErrorBody),
    ),
    security((), ("client_basic" = [])),
)]
pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = match push(&state, &ip, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if headers.contains_key(dpop::HEADER)
        && let Ok(Some(nonce)) = dpop::current_nonce(&state).await
    {
        dpop::give_nonce(&mut response, &nonce);
    }
    response
}

async fn push(
    state: &AppState,
    ip: &ClientIp,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, JsonError> {
    let params = Params::from_body(headers, body)?;
    let client = client_auth::authenticate(state, headers, &params, ip).await?;
    let mut request = AuthorizeParams::from_pairs(par::pushed_pairs(params.iter())?);
    if let Some(jwt) = request.request.take() {
        request = request_object(state, &client, &jwt).await?;
    }
    match request.client_id.as_deref() {
        Some(id) if id != client.id => {
            return Err(OAuthError::invalid_request(
                "client_id is not the client that authenticated",
            )
            .into());
        }
        Some(_) => {}
        None => request.client_id = Some(client.id.clone()),
    }
    // RFC 9449 §10.1: a proof at the PAR endpoint binds the code to its
    // key, as dpop_jkt would; both must then name the same key.
    let url = format!("{}/oauth/par", state.issuer);
    if let Some(jkt) = dpop::proven_key(state, headers, "POST", &url, None).await? {
        if request.dpop_jkt.as_deref().is_some_and(|j| j != jkt) {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "dpop_jkt is not the thumbprint of the DPoP proof's key",
            )
            .into());
        }
        request.dpop_jkt = Some(jkt);
    }
    // Checked now as the authorization endpoint will check it, so that
    // the client learns of a mistake here rather than in the browser.
    let bases = state.settings.fhir_bases();
    validate(&request, &client, &state.settings.authorize_rules(&bases)).map_err(|e| match e {
        AuthorizeError::Page(message) => OAuthError::invalid_request(message),
        AuthorizeError::Redirect { error, .. } => error,
    })?;
    let uri = keep(state, &client.id, &request, false).await?;
    let lifetime = state.settings.par.lifetime.secs();
    let body = Pushed {
        request_uri: uri.value,
        expires_in: lifetime,
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response())
}

/// Keeps `request` of `client_id` for `[par] lifetime` under a new
/// `request_uri`; `arrived`: as a request that arrived at the authorization
/// endpoint already (a request object by value), which the pages bring back
/// but which cannot be taken.
async fn keep(
    state: &AppState,
    client_id: &str,
    request: &AuthorizeParams,
    arrived: bool,
) -> Result<secret::Minted, healthgate_store::StoreError> {
    let now = state.now();
    let uri = par::new_request_uri();
    let params = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(request.to_pairs())
        .finish();
    let expires_at = now + state.settings.par.lifetime.secs();
    state
        .store
        .insert_pushed_request(&uri.digest, client_id, &params, now, expires_at, arrived)
        .await?;
    Ok(uri)
}

/// The authorization request a signed request object from `client`
/// carries (RFC 9101): signed by one of the client's registered keys
/// (`private_key_jwt`'s), its claims as `core::par` checks them.
async fn request_object(
    state: &AppState,
    client: &Client,
    jwt: &str,
) -> Result<AuthorizeParams, OAuthError> {
    let refused = |why: &str| {
        OAuthError::new(
            ErrorCode::InvalidRequestObject,
            format!("request object: {why}"),
        )
    };
    let parsed = healthgate_core::jws::parse(jwt).ok_or_else(|| refused("not a signed JWT"))?;
    if !client.uses_assertions() {
        return Err(refused(
            "the client registered no keys to verify it with (jwks or jwks_uri)",
        ));
    }
    client_auth::signed_by_client(state, client, &parsed)
        .await
        .map_err(|why| refused(&why))?;
    let issuer = state.issuer.to_string();
    let pairs = par::request_object_params(
        &parsed.header,
        &parsed.claims,
        &client.id,
        &issuer,
        state.now(),
    )?;
    let mut request = AuthorizeParams::from_pairs(pairs);
    request.client_id.get_or_insert_with(|| client.id.clone());
    Ok(request)
}

/// An authorization request as the authorization endpoint uses it.
pub struct Resolved {
    pub params: AuthorizeParams,
    /// It came through `/oauth/par` (what `require_par` asks for).
    pub pushed: bool,
}

/// The request `params` stand for, from `client` (the one `client_id`
/// names): a pushed request by its `request_uri` (taken once, or brought
/// back by the pages with its resume token), a request object verified and
/// kept as a request that arrived (so the pages bring it back the same
/// way), or `params` themselves. `Err` is the page to show: without the
/// request, no redirect URI can be trusted.
pub async fn resolve(
    state: &AppState,
    client: &Client,
    params: AuthorizeParams,
) -> Result<Resolved, PageError> {
    let repeated = |name: &str| params.duplicated.iter().any(|d| d == name);
    if repeated("request_uri") || repeated("request") || repeated("resume") {
        return Err(PageError::bad_request(
            "The request repeats request_uri or request, so it cannot be trusted.",
        ));
    }
    let key = crate::services::secrets::instance_key_of(state).await?;
    let now = state.now();
    let mut params = params;
    match (params.request_uri.take(), params.request.take()) {
        (None, None) => Ok(Resolved {
            params: AuthorizeParams {
                resume: None,
                ..params
            },
            pushed: false,
        }),
        (Some(_), Some(_)) => Err(PageError::bad_request(
            "The request carries both request and request_uri; an app sends one or the other.",
        )),
        (Some(uri), None) => {
            if !par::is_pushed(&uri) {
                return Err(PageError::bad_request(format!(
                    "{} sent a request_uri this server did not give it (request_uri_not_supported): requests are pushed to {}/oauth/par first.",
                    client.name, state.issuer
                )));
            }
            let digest = secret::digest(&uri);
            let (stored, resume) = match params.resume {
                Some(token) if par::resume_holds(key, &digest, &token) => {
                    let since = now - par::RESUME_TTL;
                    let stored = state
                        .store
                        .arrived_pushed_request(&digest, &client.id, since)
                        .await?;
                    (stored, Some(token))
                }
                Some(_) => (None, None),
                None => {
                    let stored = state
                        .store
                        .take_pushed_request(&digest, &client.id, now)
                        .await?;
                    (stored, None)
                }
            };
            let Some(stored) = stored else {
                return Err(PageError::bad_request(format!(
                    "This sign-in link has expired or was used already (invalid_request_uri). Go back to {} and start again.",
                    client.name
                )));
            };
            let pushed = AuthorizeParams::from_pairs(
                url::form_urlencoded::parse(stored.as_bytes()).map(|(k, v)| (k, v.into_owned())),
            );
            let params = match resume {
                Some(token) => pushed.resumed(uri, token),
                None => pushed.pushed(uri, par::resume_token(key, &digest)),
            };
            Ok(Resolved {
                params,
                pushed: true,
            })
        }
        (None, Some(jwt)) => {
            let request = request_object(state, client, &jwt).await.map_err(|e| {
                PageError::bad_request(format!(
                    "{} sent a request that could not be verified ({}: {}).",
                    client.name,
                    e.code.as_str(),
                    e.description
                ))
            })?;
            if request.client_id.as_deref() != Some(client.id.as_str()) {
                return Err(PageError::bad_request(
                    "The request object is for another application.",
                ));
            }
            let uri = keep(state, &client.id, &request, true).await?;
            let resume = par::resume_token(key, &uri.digest);
            Ok(Resolved {
                params: request.pushed(uri.value, resume),
                pushed: false,
            })
        }
    }
}
