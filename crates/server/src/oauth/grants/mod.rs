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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use healthgate_core::clock::{Clock, SystemClock};
    use healthgate_core::grant::Write;
    use healthgate_core::secret::{SecretKind, mint};
    use healthgate_store::Actor;

    use crate::config::Settings;
    use crate::services::admin::{NewClient, create_client};

    /// A grant whose write never holds (here: a code that does not exist,
    /// as if another request consumed it each time) is decided at most
    /// `ATTEMPTS` times, then refused as `invalid_grant`; nothing is
    /// issued.
    #[tokio::test]
    async fn a_grant_that_stays_contended_is_refused_after_three_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            database_url: format!("sqlite://{}/hg.db", dir.path().display()),
            ..Settings::default()
        };
        let state = crate::open(settings, Arc::new(SystemClock)).await.unwrap();
        let (client, _) = create_client(
            &state.store,
            &state.settings,
            &SystemClock,
            NewClient {
                name: "Contended".into(),
                redirect_uris: vec!["https://app.example/cb".into()],
                scope: "profile".into(),
                ..NewClient::default()
            },
            Actor::system(),
        )
        .await
        .unwrap();
        let (client, version) = state
            .store
            .client_with_version(&client.id)
            .await
            .unwrap()
            .unwrap();
        let client = Authenticated {
            client: Arc::new(client),
            version,
            cached: false,
        };
        let now = SystemClock.now();
        let tokens = NewTokens {
            access: mint(SecretKind::AccessToken),
            access_expires_at: now + 60,
            refresh: None,
            refresh_expires_at: None,
            dpop_jkt: None,
        };
        let decisions = AtomicUsize::new(0);
        let refused = run(&state, &client, &tokens, now, false, || async {
            decisions.fetch_add(1, Ordering::SeqCst);
            Ok(Decision {
                write: Write {
                    now,
                    claims: vec![Claim::Code("no-such-code".into())],
                    ..Write::default()
                },
                outcome: Err(OAuthError::invalid_grant("stale")),
            })
        })
        .await
        .expect_err("refused");
        assert_eq!(decisions.load(Ordering::SeqCst), ATTEMPTS);
        assert_eq!(
            &*refused.0.description,
            "the grant changed while it was being used; try again"
        );
        assert_eq!(
            refused.0.code,
            healthgate_core::error::ErrorCode::InvalidGrant
        );
    }
}
