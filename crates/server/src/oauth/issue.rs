//! Token issuing, shared by every grant: the secrets minted for one issue
//! under the server's policy, the access token as the client receives it
//! (opaque, or an RFC 9068 JWT), and the token response of RFC 6749 §5.1 in
//! the configured shape. The grants (`oauth::grants`) decide and store; this
//! builds what they answer, before their write is committed.

use axum::response::{IntoResponse, Response};
use healthgate_core::error::OAuthError;
use healthgate_core::grant::{Issued, NewTokens};
use healthgate_core::secret::{SecretKind, mint};
use healthgate_core::smart::issues_refresh;
use serde::Serialize;

use crate::http::error::{JsonError, no_store};
use crate::state::AppState;

/// The successful token response (RFC 6749 §5.1), with `created_at` as the
/// seed platforms send it. A SMART launch adds its context (`patient`,
/// `encounter`, `fhirContext`, `need_patient_banner`, `smart_style_url`,
/// `intent`, `tenant`) beside the token. Under a profile that wraps token
/// responses (Fullscript's), this object is the value of its one member.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// Opaque, or an RFC 9068 JWT for an app registered for them.
    pub access_token: String,
    /// `Bearer` as the profile spells it, or `DPoP` for a token bound to a
    /// key (RFC 9449 §5).
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The scopes granted, space-separated.
    pub scope: String,
    /// When the token was issued, in Unix seconds.
    pub created_at: i64,
    /// Who the token speaks for (Fullscript's `resource_owner`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_owner: Option<OwnerJson>,
    /// The organization the grant was made in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// OpenID Connect: the ID token, when `openid` was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// SMART's launch context parameters (`patient`, `encounter`,
    /// `fhirContext`, …), beside the access token.
    #[serde(flatten)]
    #[schema(ignore)]
    pub launch_context: serde_json::Map<String, serde_json::Value>,
}

/// Who a grant speaks for: `{"id": …, "type": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ResourceOwner)]
pub struct OwnerJson {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl From<healthgate_core::owner::ResourceOwner> for OwnerJson {
    fn from(o: healthgate_core::owner::ResourceOwner) -> Self {
        Self {
            id: o.id,
            kind: o.kind,
        }
    }
}

impl TokenResponse {
    /// The response in the configured shape: `token_type` as the profile
    /// spells it, and wrapped (Fullscript's `{"oauth": {…}}`) if asked.
    pub fn shaped(mut self, state: &AppState) -> Response {
        let profile = &state.settings.profile;
        if self.token_type != DPOP {
            self.token_type = profile.token_type.as_str();
        }
        let body = match &profile.token_response_wrapper {
            Some(key) => serde_json::json!({ key.as_str(): self }),
            None => serde_json::to_value(&self).unwrap_or_default(),
        };
        let mut r = axum::Json(body).into_response();
        no_store(&mut r);
        r
    }
}

/// The `token_type` of a DPoP-bound access token (RFC 9449 §5).
pub const DPOP: &str = "DPoP";

/// Mints the secrets for one issue under the server's policy; `dpop_jkt`:
/// the key the request proved it holds, which the access token is bound
/// to.
pub fn new_tokens(
    state: &AppState,
    with_refresh: bool,
    dpop_jkt: Option<&str>,
) -> (NewTokens, i64) {
    let now = state.now();
    let tokens = NewTokens {
        access: mint(SecretKind::AccessToken),
        access_expires_at: now + state.policy.access_ttl,
        refresh: with_refresh.then(|| mint(SecretKind::RefreshToken)),
        refresh_expires_at: state.policy.refresh_ttl.map(|ttl| now + ttl),
        dpop_jkt: dpop_jkt.map(str::to_owned),
    };
    (tokens, now)
}

/// The access token as the client receives it: the opaque value, or for a
/// client that asked for JWTs an RFC 9068 `at+jwt` carrying it as `jti`
/// (so revocation and introspection work the same either way).
pub async fn present_access_token(
    state: &AppState,
    client: &healthgate_core::client::Client,
    issued: &Issued,
    opaque: &str,
    now: i64,
) -> Result<String, JsonError> {
    if !client.jwt_access_tokens {
        return Ok(opaque.to_owned());
    }
    let mut claims = serde_json::json!({
        "iss": state.issuer,
        "aud": state.issuer,
        "sub": issued
            .user_id
            .clone()
            .or_else(|| issued.owner.as_ref().map(|o| o.id.clone()))
            .unwrap_or_else(|| client.id.clone()),
        "client_id": client.id,
        "scope": issued.scope.to_string(),
        "iat": now,
        "exp": now + state.policy.access_ttl,
        "jti": opaque,
    });
    if let Some(owner) = &issued.owner {
        claims["resource_owner"] = serde_json::json!({ "id": owner.id, "type": owner.kind });
    }
    if let Some(org) = &issued.organization_id {
        claims["organization_id"] = org.clone().into();
    }
    // RFC 9449 §6.1: the key a DPoP-bound token is bound to.
    if let Some(jkt) = &issued.dpop_jkt {
        claims["cnf"] = serde_json::json!({ "jkt": jkt });
    }
    // A SMART token is for its FHIR server (RFC 9068 §3: `aud` is the
    // resource the token is meant for), and carries the launch context.
    if let Some(smart) = &issued.smart {
        claims["aud"] = smart.aud.clone().into();
        for (name, value) in smart.launch_parameters() {
            claims[name.as_str()] = value;
        }
    }
    let key = crate::services::keys::signer(
        &state.store,
        &state.settings,
        &state.opened_keys,
        healthgate_core::jose::Alg::Es256,
        now,
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "access token signing failed");
        JsonError(OAuthError::server_error())
    })?;
    key.sign("at+jwt", &claims).map_err(|e| {
        tracing::error!(error = %e, "access token signing failed");
        JsonError(OAuthError::server_error())
    })
}

/// Builds the response for tokens about to be stored: the access token as
/// the client receives it and, when asked for, the ID token (at_hash is
/// over that access token). Everything here that can fail does so before
/// the grant's write is committed.
pub async fn respond(
    state: &AppState,
    client: &healthgate_core::client::Client,
    tokens: &NewTokens,
    issued: &Issued,
    now: i64,
    with_id_token: bool,
) -> Result<TokenResponse, JsonError> {
    let access_token =
        present_access_token(state, client, issued, &tokens.access.value, now).await?;
    let id_token = if with_id_token {
        crate::oauth::openid::id_token(state, client, issued, &access_token, now).await?
    } else {
        None
    };
    Ok(TokenResponse {
        access_token,
        token_type: if issued.dpop_jkt.is_some() {
            DPOP
        } else {
            "Bearer"
        },
        expires_in: tokens.access_expires_at - now,
        refresh_token: tokens
            .refresh
            .as_ref()
            .filter(|_| issues_refresh(issued.smart.as_ref(), issued.scope.iter()))
            .map(|r| r.value.clone()),
        scope: issued.scope.to_string(),
        created_at: now,
        resource_owner: issued.owner.clone().map(OwnerJson::from),
        organization_id: issued.organization_id.clone(),
        id_token,
        launch_context: issued
            .smart
            .as_ref()
            .map(|c| c.launch_parameters())
            .unwrap_or_default(),
    })
}
