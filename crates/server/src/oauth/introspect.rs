//! `POST /oauth/introspect` (RFC 7662): a confidential client asks whether a
//! token is active and what it carries. Access tokens, refresh tokens and
//! practice API keys are known; anything else, or anything no longer valid,
//! is `{"active": false}` and nothing more (§2.2).
//!
//! Who may ask about what (§2.1, §4): a client may introspect the tokens
//! issued to itself, and a client registered as a resource server any token.
//! Anyone else learns `{"active": false}`, exactly as for an unknown token,
//! so one partner cannot learn who uses another partner's app.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use healthgate_core::client::Client;
use healthgate_core::error::OAuthError;
use healthgate_core::secret::{self, SecretKind};
use serde_json::{Value, json};

use crate::http::error::{JsonError, no_store};
use crate::http::ip::ClientIp;
use crate::oauth::client_auth::{self, Authenticated};
use crate::oauth::params::Params;
use crate::state::AppState;

fn inactive() -> Value {
    json!({ "active": false })
}

/// An introspection request (RFC 7662 §2.1), with the caller's
/// authentication as at the token endpoint.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct IntrospectionRequest {
    /// An access token (opaque or JWT), a refresh token or a practice API
    /// key.
    token: String,
    /// Ignored: the token's prefix says what it is.
    token_type_hint: Option<String>,
    #[serde(flatten)]
    client: client_auth::ClientAuthentication,
}

/// What a token is (RFC 7662 §2.2). An inactive token, or one the caller
/// may not learn about, is `{"active": false}` and nothing more. SMART
/// tokens also carry their launch context (`patient`, `encounter`,
/// `fhirContext`, …).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the object `describe` builds.
pub struct Introspection {
    active: bool,
    scope: Option<String>,
    client_id: Option<String>,
    /// The person's username (access tokens of a person).
    username: Option<String>,
    /// The person, resource owner or app the token speaks for; for an API
    /// key, its practice.
    sub: Option<String>,
    /// Expiry, Unix seconds (none for a refresh token that never expires).
    exp: Option<i64>,
    iat: Option<i64>,
    /// `Bearer`, `DPoP`, `refresh_token` or `api_key`.
    token_type: Option<String>,
    iss: Option<String>,
    resource_owner: Option<crate::oauth::issue::OwnerJson>,
    organization_id: Option<String>,
    /// The practice integration of an API key.
    integration_id: Option<String>,
    /// The key a DPoP-bound token is bound to (RFC 9449 §6.2).
    cnf: Option<Confirmation>,
    /// How the person signed in (RFC 8176).
    amr: Option<Vec<String>>,
    acr: Option<String>,
    /// The FHIR server a SMART token is for.
    aud: Option<String>,
    #[schema(rename = "fhirUser")]
    fhir_user: Option<String>,
}

/// `{"jkt": …}`: the JWK thumbprint of a DPoP key (RFC 9449 §6.1).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Confirmation {
    jkt: String,
}

/// Whether a token is active, and what it carries.
///
/// RFC 7662. A client learns about the tokens issued to itself; a client
/// registered as a resource server about any token.
#[utoipa::path(
    post,
    path = "/oauth/introspect",
    operation_id = "introspectToken",
    tag = "oauth",
    request_body(content(
        (IntrospectionRequest = "application/x-www-form-urlencoded"),
        (IntrospectionRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "What the token is.", body = Introspection),
        (status = 400, description = "`invalid_request`: no `token`, or a malformed body.",
body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`: the caller did not authenticate, or is \
a public client.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ()),
)]
pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, JsonError> {
    let params = Params::from_body(&headers, &body)?;
    let mut caller = client_auth::authenticate_cached(&state, &headers, &params, &ip).await?;
    let mut seen = answer(&state, &caller, &params).await;
    // A caller authenticated from this node's copy is confirmed before it
    // learns anything (by the token's own read when it found one); if its
    // record changed, the request starts again from the record as it is.
    let confirmed = match &seen {
        Ok((_, Some(confirmed))) => *confirmed,
        _ => client_auth::confirmed(&state, &caller).await?,
    };
    if !confirmed {
        caller = client_auth::again(&state, &caller, &headers, &params, &ip).await?;
        seen = answer(&state, &caller, &params).await;
    }
    let (answer, _) = seen?;
    let mut response = Json(answer).into_response();
    no_store(&mut response);
    Ok(response)
}

/// What `caller` learns about the token it sent, and, when the token's read
/// carried the stamp of `caller`'s record, whether that is the stamp it was
/// authenticated with.
async fn answer(
    state: &AppState,
    caller: &Authenticated,
    params: &Params,
) -> Result<(Value, Option<bool>), JsonError> {
    if caller.is_public() {
        return Err(OAuthError::invalid_client("introspection is for confidential clients").into());
    }
    let token = params.require("token")?;
    let (answer, caller_version) = describe(state, token, &caller.id).await?;
    let confirmed = caller_version.map(|version| version == Some(caller.version));
    if may_see(caller, &answer) {
        Ok((answer, confirmed))
    } else {
        Ok((inactive(), confirmed))
    }
}

/// Whether `caller` may learn what `answer` says: its own token, or any
/// token when it is a resource server.
fn may_see(caller: &Client, answer: &Value) -> bool {
    caller.resource_server || answer["client_id"].as_str() == Some(caller.id.as_str())
}

/// What the token is; for a live access token also the stamp the record of
/// the client `caller` carries now (`None` inside when it is gone), read
/// with the token.
async fn describe(
    state: &AppState,
    token: &str,
    caller: &str,
) -> Result<(Value, Option<Option<i64>>), JsonError> {
    // A JWT access token stands for the opaque token it carries.
    let Some(token) = crate::services::keys::opaque_access_token(&state.store, token).await? else {
        return Ok((inactive(), None));
    };
    let token = token.as_str();
    let digest = secret::digest(token);
    let now = state.now();
    if token.starts_with(SecretKind::AccessToken.prefix()) {
        let Some(read) = state.store.access_token_for_caller(&digest, caller).await? else {
            return Ok((inactive(), None));
        };
        let stamp = Some(read.caller_version);
        let t = read.token;
        if !t.is_active(now) {
            return Ok((inactive(), stamp));
        }
        let username = match (&t.user_id, read.active_username) {
            (Some(_), Some(name)) => Some(name),
            // A locked or deleted account's tokens are not active.
            (Some(_), None) => return Ok((inactive(), stamp)),
            (None, _) => None,
        };
        let owner = t.grant.owner.as_ref();
        let mut answer = json!({
            "active": true,
            "scope": t.scope.to_string(),
            "client_id": t.client_id,
            "username": username,
            "sub": t.user_id.clone().or_else(|| owner.map(|o| o.id.clone())).unwrap_or_else(|| t.client_id.clone()),
            "exp": t.expires_at,
            "iat": t.created_at,
            "token_type": "Bearer",
            "iss": state.issuer,
            "resource_owner": owner.map(|o| json!({ "id": o.id, "type": o.kind })),
            "organization_id": t.grant.organization_id,
        });
        // RFC 9449 §6.2: a DPoP-bound token, and the key it is bound to, so
        // a resource server can check the proof that comes with it.
        if let Some(jkt) = &t.dpop_jkt {
            answer["token_type"] = "DPoP".into();
            answer["cnf"] = json!({ "jkt": jkt });
        }
        // How the person signed in when the grant was made, for a resource
        // server that wants a second factor behind a request.
        if !t.amr.is_empty() {
            answer["amr"] = json!(t.amr.claim());
            answer["acr"] = t.amr.acr().as_str().into();
        }
        // A SMART token: the FHIR server it is for (RFC 7662 `aud`), and
        // its launch context, which a FHIR server needs to enforce
        // `patient/` scopes.
        if let Some(smart) = &t.grant.smart {
            answer["aud"] = smart.aud.clone().into();
            for (name, value) in smart.launch_parameters() {
                answer[name.as_str()] = value;
            }
            if let Some(fhir_user) = &smart.fhir_user {
                answer["fhirUser"] = fhir_user.clone().into();
            }
        }
        Ok((answer, stamp))
    } else if token.starts_with(SecretKind::RefreshToken.prefix()) {
        let Some(r) = state.store.refresh_token_info(&digest).await? else {
            return Ok((inactive(), None));
        };
        let live = r.revoked_at.is_none()
            && r.consumed_at.is_none()
            && r.expires_at.is_none_or(|e| now < e);
        if !live {
            return Ok((inactive(), None));
        }
        Ok((
            json!({
                "active": true,
                "scope": r.scope.to_string(),
                "client_id": r.client_id,
                "sub": r.user_id,
                "exp": r.expires_at,
                "iat": r.created_at,
                "token_type": "refresh_token",
                "iss": state.issuer,
            }),
            None,
        ))
    } else if token.starts_with(SecretKind::ApiKey.prefix()) {
        let Some(presented) = state.store.api_key_by_digest(&digest).await? else {
            return Ok((inactive(), None));
        };
        if !presented.is_usable() {
            return Ok((inactive(), None));
        }
        let key = presented.key;
        Ok((
            json!({
                "active": true,
                "client_id": key.client_id,
                "sub": key.organization_id,
                "organization_id": key.organization_id,
                "integration_id": key.integration_id,
                "iat": key.created_at,
                "token_type": "api_key",
                "iss": state.issuer,
            }),
            None,
        ))
    } else {
        Ok((inactive(), None))
    }
}
