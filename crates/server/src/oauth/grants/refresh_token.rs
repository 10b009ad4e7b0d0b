//! The refresh token grant (RFC 6749 §6) with rotation (RFC 9700 §4.14.2).

use healthgate_core::client::Client;
use healthgate_core::error::OAuthError;
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret;
use healthgate_store::Refresh;

use crate::http::error::JsonError;
use crate::http::ip::ClientIp;
use crate::oauth::issue::{TokenResponse, new_tokens, respond};
use crate::oauth::params::Params;
use crate::state::AppState;

pub async fn exchange(
    state: &AppState,
    client: &Client,
    params: &Params,
    ip: &ClientIp,
) -> Result<TokenResponse, JsonError> {
    let refresh_token = params.require("refresh_token")?;
    let scope = params
        .get("scope")
        .map(ScopeSet::parse)
        .transpose()
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    let (tokens, now) = new_tokens(state, true);
    let digest = secret::digest(refresh_token);
    let issued = state
        .store
        .refresh(
            Refresh {
                refresh_digest: &digest,
                client_id: &client.id,
                scope: scope.as_ref(),
                redirect_uri: params.get("redirect_uri"),
                rotation: state.policy.rotation,
                ip: ip.as_deref(),
                now,
            },
            &tokens,
        )
        .await?;
    respond(state, client, tokens, issued, now).await
}
