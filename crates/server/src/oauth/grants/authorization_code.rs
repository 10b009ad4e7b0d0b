//! The authorization code grant (RFC 6749 §4.1.3, RFC 7636 §4.5).

use healthgate_core::grant::{self, CodeRequest, Presenter};
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
    let code = params.require("code")?;
    let (tokens, now) = new_tokens(state, true, dpop_jkt);
    let digest = secret::digest(code);
    let request = CodeRequest {
        code_digest: &digest,
        redirect_uri: params.get("redirect_uri"),
        code_verifier: params.get("code_verifier"),
        public: client.is_public(),
    };
    let by = Presenter {
        client_id: &client.id,
        ip: ip.as_deref(),
        now,
    };
    super::run(state, client, &tokens, now, true, || async {
        let read = state.store.code_for_redemption(&digest).await?;
        Ok(grant::redeem_code(read.as_ref(), request, by, &tokens))
    })
    .await
}
