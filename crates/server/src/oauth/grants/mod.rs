//! One module per grant type the token endpoint accepts. Each reads what
//! the grant needs, asks core for a decision (`healthgate_core::grant`),
//! builds the response, and hands the decision's write to the store.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use healthgate_core::error::OAuthError;
use healthgate_core::grant::{Claim, Decision, NewTokens};
use healthgate_store::Applied;

use crate::http::error::JsonError;
use crate::oauth::client_auth::Authenticated;
use crate::oauth::issue::{TokenResponse, respond};
use crate::state::AppState;

/// How many times a grant is read and decided again when its write went
/// stale. A second decision sees what won the race (a used code is a
/// replay), so two suffice; the third is for an account locked between.
const ATTEMPTS: usize = 3;

/// Settles one decision: builds the response while nothing is written yet,
/// then applies the write, which also claims that the client's record is
/// the one it was authenticated against. `None` when the write went stale
/// and the grant must be read and decided again.
async fn settle(
    state: &AppState,
    client: &Authenticated,
    decision: Decision,
    tokens: &NewTokens,
    now: i64,
    with_id_token: bool,
) -> Result<Option<TokenResponse>, JsonError> {
    let Decision { mut write, outcome } = decision;
    let answer = match outcome {
        Ok(issued) => Ok(respond(state, client, tokens, &issued, now, with_id_token).await?),
        Err(e) => Err(e),
    };
    // A write that changes nothing needs no claim: an error decided without
    // one is confirmed by the token endpoint.
    if !write.is_empty() {
        write.claims.push(Claim::Client {
            id: client.id.clone(),
            version: client.version,
        });
    }
    match state.store.apply_grant(write).await? {
        Applied::Stale => Ok(None),
        Applied::Done => Ok(Some(answer?)),
        // The token endpoint sees the stamp changed and, for a client it
        // authenticated from this node's copy, starts again.
        Applied::ClientChanged => Err(OAuthError::invalid_client(
            "the client's registration changed while the request was handled; try again",
        )
        .into()),
    }
}

/// Reads and decides with `decide`, settling until a write holds.
pub(crate) async fn run<F, Fut>(
    state: &AppState,
    client: &Authenticated,
    tokens: &NewTokens,
    now: i64,
    with_id_token: bool,
    mut decide: F,
) -> Result<TokenResponse, JsonError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Decision, JsonError>>,
{
    for _ in 0..ATTEMPTS {
        let decision = decide().await?;
        if let Some(response) = settle(state, client, decision, tokens, now, with_id_token).await? {
            return Ok(response);
        }
    }
    tracing::warn!(client_id = %client.id, "a grant stayed contended after {ATTEMPTS} attempts");
    Err(OAuthError::invalid_grant("the grant changed while it was being used; try again").into())
}
