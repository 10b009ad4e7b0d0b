//! The client credentials grant (RFC 6749 §4.4): a confidential client acting
//! for itself, within its allowed scopes, with no refresh token (§4.4.3).

use healthgate_core::error::OAuthError;
use healthgate_core::grant;
use healthgate_core::scope::ScopeSet;

use crate::http::error::JsonError;
use crate::oauth::client_auth::Authenticated;
use crate::oauth::issue::{TokenResponse, new_tokens};
use crate::oauth::params::Params;
use crate::state::AppState;

pub async fn exchange(
    state: &AppState,
    client: &Authenticated,
    params: &Params,
) -> Result<TokenResponse, JsonError> {
    if client.is_public() {
        return Err(OAuthError::unauthorized_client(
            "public clients cannot use the client_credentials grant",
        )
        .into());
    }
    let scope = match params.get("scope") {
        Some(s) => ScopeSet::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?,
        None => client.allowed_scopes.clone(),
    };
    client.check_scope(&scope)?;
    let (tokens, now) = new_tokens(state, false);
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
