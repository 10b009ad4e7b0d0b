//! DPoP (RFC 9449) as the endpoints meet it: the request's `DPoP` header
//! read (one at most, §4.3 step 1), the proof checked by `core::dpop`
//! against the request, and its `jti` recorded in the database so that no
//! node accepts it twice (§11.1). Gives the thumbprint of the key the
//! request proved it holds.

use axum::http::HeaderMap;
use healthgate_core::dpop::{Expected, invalid, verify};

use crate::http::error::JsonError;
use crate::state::AppState;

/// The header a proof travels in.
pub const HEADER: &str = "dpop";

/// The header a server nonce is given in (RFC 9449 §8).
pub const NONCE_HEADER: &str = "dpop-nonce";

/// The nonce to give now, when `[dpop] nonce` is on.
pub async fn current_nonce(state: &AppState) -> Result<Option<String>, JsonError> {
    if !state.settings.dpop.nonce {
        return Ok(None);
    }
    let key = crate::services::secrets::instance_key_of(state).await?;
    Ok(Some(healthgate_core::dpop::nonce(key, state.now())))
}

/// `DPoP-Nonce: nonce` on `response`.
pub fn give_nonce(response: &mut axum::response::Response, nonce: &str) {
    if let Ok(v) = axum::http::HeaderValue::from_str(nonce) {
        response.headers_mut().insert(NONCE_HEADER, v);
    }
}

/// The key thumbprint (`jkt`) of the request's DPoP proof, checked for
/// `method` at `url` (with `access_token` at a resource, for `ath`); `None`
/// when the request carries no proof.
pub async fn proven_key(
    state: &AppState,
    headers: &HeaderMap,
    method: &str,
    url: &str,
    access_token: Option<&str>,
) -> Result<Option<String>, JsonError> {
    let mut proofs = headers.get_all(HEADER).iter();
    let Some(proof) = proofs.next() else {
        return Ok(None);
    };
    if proofs.next().is_some() {
        return Err(invalid("send one DPoP header").into());
    }
    let proof = proof
        .to_str()
        .map_err(|_| invalid("the DPoP header is not a JWT"))?;
    let now = state.now();
    let nonce_key = if state.settings.dpop.nonce {
        Some(crate::services::secrets::instance_key_of(state).await?)
    } else {
        None
    };
    let proven = verify(
        proof,
        &Expected {
            method,
            url,
            now,
            access_token,
            nonce_key,
        },
    )?;
    if !state
        .store
        .use_dpop_proof(&proven.jkt, &proven.jti, proven.replay_until)
        .await?
    {
        return Err(invalid("this proof was used before: make a new one for each request").into());
    }
    Ok(Some(proven.jkt))
}
