//! The refresh token grant (RFC 6749 §6) with rotation (RFC 9700 §4.14.2).

use healthgate_core::error::OAuthError;
use healthgate_core::grant::{self, Presenter, RefreshRequest};
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret;

use crate::http::error::JsonError;
use crate::http::ip::ClientIp;
use crate::oauth::client_auth::Authenticated;
use crate::oauth::issue::{TokenResponse, new_tokens};
use crate::oauth::params::Params;
use crate::state::AppState;

pub async fn exchange(
    state: &AppState,
    client: &Authenticated,
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
    let request = RefreshRequest {
        scope: scope.as_ref(),
        redirect_uri: params.get("redirect_uri"),
        rotation: state.policy.rotation,
    };
    let by = Presenter {
        client_id: &client.id,
        ip: ip.as_deref(),
        now,
    };
    super::run(state, client, &tokens, now, false, || async {
        let read = state.store.refresh_for_use(&digest).await?;
        Ok(grant::refresh(read.as_ref(), request, by, &tokens))
    })
    .await
}
