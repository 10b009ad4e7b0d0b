//! The client credentials grant (RFC 6749 §4.4): a confidential client acting
//! for itself, within its allowed scopes, with no refresh token (§4.4.3).

use healthgate_core::error::OAuthError;
use healthgate_core::grant;
use healthgate_core::scope::ScopeSet;
use healthgate_core::smart::{Holder, grantable_to};

/// The longest a Backend Services access token lives (SMART App Launch 2.2
/// §Backend Services: "the access token SHALL have a lifetime no greater
/// than five minutes").
const BACKEND_TOKEN_TTL: i64 = 300;

use crate::http::error::JsonError;
use crate::oauth::client_auth::Authenticated;
use crate::oauth::issue::{TokenResponse, new_tokens};
use crate::oauth::params::Params;
use crate::state::AppState;

pub async fn exchange(
    state: &AppState,
    client: &Authenticated,
    params: &Params,
    dpop_jkt: Option<&str>,
) -> Result<TokenResponse, JsonError> {
    if client.is_public() {
        return Err(OAuthError::unauthorized_client(
            "public clients cannot use the client_credentials grant",
        )
        .into());
    }
    // SMART: a client acting for itself gets `system/` scopes, never a
    // person's (`patient/`, `user/`, launch); without a `scope`, what it
    // was registered with that fits.
    let fits = |t: &str| grantable_to(t, Holder::Client);
    let scope = match params.get("scope") {
        Some(s) => ScopeSet::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?,
        None => ScopeSet::from_tokens(client.allowed_scopes.iter().filter(|t| fits(t)))
            .map_err(|e| OAuthError::invalid_scope(e.to_string()))?,
    };
    client.check_scope(&scope)?;
    if let Some(personal) = scope.iter().find(|t| !fits(t)) {
        return Err(OAuthError::invalid_scope(format!(
            "{personal} needs a person to authorize it: ask for system/ scopes with client credentials"
        ))
        .into());
    }
    let (mut tokens, now) = new_tokens(state, false, dpop_jkt);
    // Backend Services: an app that signs assertions gets tokens that live
    // five minutes at most.
    if client.uses_assertions() {
        tokens.access_expires_at = tokens.access_expires_at.min(now + BACKEND_TOKEN_TTL);
    }
    // Nothing to claim but the client: the write goes stale only when the
    // client's registration changed.
    super::run(state, client, &tokens, now, false, || async {
        Ok(grant::direct(
            &client.id,
            None,
            &scope,
            &tokens,
            "client_credentials",
            now,
        ))
    })
    .await
}
