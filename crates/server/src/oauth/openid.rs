//! OpenID Connect Core 1.0 on the code flow: the ID token issued beside the
//! access token when `openid` was granted, the UserInfo endpoint, the
//! provider metadata, and the JWK Set.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use healthgate_core::error::{ErrorCode, OAuthError};
use healthgate_core::grant::Issued;
use healthgate_core::jose;
use serde_json::{Value, json};

use crate::http::error::JsonError;
use crate::oauth::bearer::bearer;
use crate::services::keys;
use crate::state::AppState;

/// The ID token for an issue that granted `openid` (Core §3.1.3.3, §2).
pub async fn id_token(
    state: &AppState,
    client: &healthgate_core::client::Client,
    issued: &Issued,
    access_token: &str,
    now: i64,
) -> Result<Option<String>, JsonError> {
    let client_id = client.id.as_str();
    if !issued.scope.contains("openid") {
        return Ok(None);
    }
    let sub = issued
        .user_id
        .clone()
        .or_else(|| issued.owner.as_ref().map(|o| o.id.clone()))
        .ok_or_else(|| {
            OAuthError::invalid_scope("openid needs a person or an organization to speak for")
        })?;
    let mut claims = json!({
        "iss": state.issuer,
        "sub": sub,
        "aud": client_id,
        "exp": now + state.settings.id_token_ttl.secs(),
        "iat": now,
        "at_hash": jose::at_hash(access_token),
    });
    if let Some(t) = issued.auth_time {
        claims["auth_time"] = t.into();
    }
    if let Some(n) = &issued.nonce {
        claims["nonce"] = n.clone().into();
    }
    // How the person signed in (RFC 8176) and the assurance level it
    // reached (Core §2), when a person signed in for this grant.
    if !issued.amr.is_empty() {
        claims["amr"] = json!(issued.amr.claim());
        claims["acr"] = issued.amr.acr().as_str().into();
    }
    if let Some(owner) = &issued.owner {
        claims["resource_owner"] = json!({ "id": owner.id, "type": owner.kind });
    }
    // SMART's fhirUser: the person's FHIR resource, an absolute URL.
    if let Some(fhir_user) = issued.smart.as_ref().and_then(|s| s.fhir_user.as_deref()) {
        claims["fhirUser"] = fhir_user.into();
    }
    let key = keys::signer(
        &state.store,
        &state.settings,
        &state.opened_keys,
        client.id_token_alg,
        now,
    )
    .await
    .map_err(signing_failed)?;
    let token = key
        .sign("JWT", &claims)
        .map_err(|e| signing_failed(e.into()))?;
    Ok(Some(token))
}

fn signing_failed(e: crate::services::admin::AdminError) -> JsonError {
    match e {
        crate::services::admin::AdminError::Store(s) => s.into(),
        other => {
            tracing::error!(error = %other, "ID token signing failed");
            JsonError(OAuthError::server_error())
        }
    }
}

impl From<jose::KeyError> for crate::services::admin::AdminError {
    fn from(e: jose::KeyError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// The claims UserInfo answers with (OpenID Connect Core §5.1).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `userinfo` builds.
pub struct UserInfo {
    /// The person, or the resource owner an organization-level token
    /// speaks for.
    sub: String,
    /// With `profile`.
    preferred_username: Option<String>,
    /// With `profile`.
    name: Option<String>,
    /// With `email`.
    email: Option<String>,
    email_verified: Option<bool>,
}

/// Claims about the person the access token speaks for.
///
/// OpenID Connect Core §5.3: `sub` always, `preferred_username` and `name`
/// with `profile`, `email` with `email`. Needs a token with `openid`.
#[utoipa::path(
    method(get, post),
    path = "/oauth/userinfo",
    operation_id = "userInfo",
    tag = "openid",
    params(("DPoP" = Option<String>, Header, description = "The proof that goes with a DPoP-bound token.")),
    responses(
        (status = 200, description = "The claims.", body = UserInfo),
        (status = 401, description = "`invalid_token` (RFC 6750 §3.1), or a DPoP refusal \
(RFC 9449 §7.1).", body = crate::http::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token lacks `openid`, or \
speaks for no one.", body = crate::http::error::ErrorBody),
    ),
    security(("access_token" = [])),
)]
pub async fn userinfo(
    State(state): State<AppState>,
    method: axum::http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
) -> Result<Json<Value>, crate::oauth::bearer::ResourceError> {
    let target = crate::oauth::bearer::Target {
        method: &method,
        path: uri.path(),
    };
    let (token, user) = bearer(&state, target, &headers, "openid").await?;
    if token.user_id.is_none() {
        let owner = token.grant.owner.as_ref().ok_or_else(|| {
            JsonError(OAuthError::new(
                ErrorCode::InsufficientScope,
                "this token speaks for no one",
            ))
        })?;
        return Ok(Json(json!({ "sub": owner.id })));
    }
    let user = crate::oauth::bearer::active_user(user)?;
    let mut claims = json!({ "sub": user.id });
    if token.scope.contains("profile") {
        claims["preferred_username"] = user.username.clone().into();
        claims["name"] = user.name.clone().unwrap_or(user.username).into();
    }
    if token.scope.contains("email")
        && let Some(email) = user.email
    {
        claims["email"] = email.into();
        claims["email_verified"] = false.into();
    }
    Ok(Json(claims))
}

/// A JWK Set (RFC 7517 §5).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `keys::jwks` builds.
pub struct JwkSet {
    /// The public keys ID tokens and JWT access tokens are signed with,
    /// current and recently retired.
    keys: Vec<serde_json::Map<String, Value>>,
}

/// The server's public signing keys.
#[utoipa::path(
    get,
    path = "/oauth/jwks",
    operation_id = "signingKeys",
    tag = "openid",
    responses(
        (status = 200, description = "The key set.", body = JwkSet),
        (status = 500, description = "`server_error`: the signing keys could not be read.",
body = crate::http::error::ErrorBody),
    ),
)]
pub async fn jwks(State(state): State<AppState>) -> Result<Json<Value>, JsonError> {
    keys::jwks(&state.store, &state.settings, state.now())
        .await
        .map(Json)
        .map_err(signing_failed)
}

/// OpenID Connect Discovery 1.0 provider metadata.
///
/// The RFC 8414 metadata plus what OpenID Connect adds (`userinfo_endpoint`,
/// `subject_types_supported`, `acr_values_supported`,
/// `id_token_signing_alg_values_supported`, `claims_supported`).
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    operation_id = "openIdConfiguration",
    tag = "openid",
    responses((status = 200, description = "The metadata.", body = crate::oauth::discovery::ServerMetadata)),
)]
pub async fn configuration(state: State<AppState>) -> Json<Value> {
    let base = state.issuer.clone();
    let Json(mut m) = crate::oauth::discovery::metadata(state).await;
    m["userinfo_endpoint"] = format!("{base}/oauth/userinfo").into();
    m["subject_types_supported"] = json!(["public"]);
    m["acr_values_supported"] = json!(healthgate_core::mfa::Acr::ALL.map(|a| a.as_str()));
    m["id_token_signing_alg_values_supported"] = json!(["ES256", "RS256"]);
    m["claims_supported"] = json!([
        "sub",
        "iss",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "acr",
        "amr",
        "at_hash",
        "name",
        "preferred_username",
        "email",
        "email_verified"
    ]);
    Json(m)
}
