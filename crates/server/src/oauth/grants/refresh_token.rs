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
    dpop_jkt: Option<&str>,
) -> Result<TokenResponse, JsonError> {
    let refresh_token = params.require("refresh_token")?;
    let scope = params
        .get("scope")
        .map(ScopeSet::parse)
        .transpose()
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    let (tokens, now) = new_tokens(state, true, dpop_jkt);
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
        let mut read = state.store.refresh_for_use(&digest).await?;
        if let Some(read) = read.as_mut() {
            read.session_ended = online_session_ended(state, read, now).await?;
        }
        Ok(grant::refresh(read.as_ref(), request, by, &tokens))
    })
    .await
}

/// SMART's `online_access`: whether the browser session an online grant
/// was made in has ended (signed out, ended from the account's sessions
/// page, expired, or now someone else's). Only such grants pay the read.
async fn online_session_ended(
    state: &AppState,
    read: &grant::RefreshRead,
    now: i64,
) -> Result<bool, JsonError> {
    let Some(session) = read
        .grant
        .smart
        .as_ref()
        .and_then(|s| s.online_session.as_deref())
    else {
        return Ok(false);
    };
    let live = state.store.session(session, now).await?;
    Ok(!live.is_some_and(|s| s.user_id.is_some() && s.user_id == read.token.user_id))
}
