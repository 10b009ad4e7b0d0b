//! The authorization code grant (RFC 6749 §4.1.3, RFC 7636 §4.5).

use healthgate_core::client::Client;
use healthgate_core::secret;
use healthgate_store::CodeRedemption;

use crate::http::error::JsonError;
use crate::http::ip::ClientIp;
use crate::oauth::issue::{TokenResponse, new_tokens, respond};
use crate::oauth::openid;
use crate::oauth::params::Params;
use crate::state::AppState;

pub async fn exchange(
    state: &AppState,
    client: &Client,
    params: &Params,
    ip: &ClientIp,
) -> Result<TokenResponse, JsonError> {
    let code = params.require("code")?;
    let (tokens, now) = new_tokens(state, true);
    let digest = secret::digest(code);
    let issued = state
        .store
        .redeem_authorization_code(
            CodeRedemption {
                code_digest: &digest,
                client_id: &client.id,
                redirect_uri: params.get("redirect_uri"),
                code_verifier: params.get("code_verifier"),
                ip: ip.as_deref(),
                now,
            },
            &tokens,
        )
        .await?;
    let for_id_token = issued.clone();
    let mut response = respond(state, client, tokens, issued, now).await?;
    // at_hash is over the access token as the client receives it.
    response.id_token =
        openid::id_token(state, client, &for_id_token, &response.access_token, now).await?;
    Ok(response)
}
