//! The grant engine as the server drives it (read, decide in core, apply;
//! read and decide again on a stale write), so the contract tests exercise
//! the store's reads and writes through the real decisions.

use healthgate_core::error::OAuthError;
use healthgate_core::grant::{
    self, CodeRequest, Decision, Issued, NewTokens, Presenter, RefreshRequest,
};
use healthgate_core::integration::{self, ConnectExchange};
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret::Minted;
use healthgate_core::token::RefreshRotation;
use healthgate_store::{Applied, Store, StoreError};

/// Why a grant could not be completed: refused (tell the client), or the
/// store failed.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The code presented at the token endpoint, with what the client sent.
#[derive(Debug, Clone, Copy)]
pub struct CodeRedemption<'a> {
    pub code_digest: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub now: i64,
}

/// A refresh request.
#[derive(Debug, Clone, Copy)]
pub struct Refresh<'a> {
    pub refresh_digest: &'a str,
    pub client_id: &'a str,
    pub scope: Option<&'a ScopeSet>,
    pub redirect_uri: Option<&'a str>,
    pub rotation: RefreshRotation,
    pub ip: Option<&'a str>,
    pub now: i64,
}

async fn settle(store: &Store, d: Decision) -> Result<Option<Issued>, GrantError> {
    let Decision { write, outcome } = d;
    match store.apply_grant(write).await? {
        Applied::Stale => Ok(None),
        Applied::Done => Ok(Some(outcome?)),
        Applied::ClientChanged => {
            Err(OAuthError::invalid_client("the client's registration changed").into())
        }
    }
}

pub trait Grants {
    async fn redeem_authorization_code(
        &self,
        r: CodeRedemption<'_>,
        tokens: &NewTokens,
    ) -> Result<Issued, GrantError>;
    async fn refresh(&self, r: Refresh<'_>, tokens: &NewTokens) -> Result<Issued, GrantError>;
    async fn issue_client_token(
        &self,
        client_id: &str,
        scope: &ScopeSet,
        tokens: &NewTokens,
        now: i64,
    ) -> Result<Issued, GrantError>;
    /// Exchanges a connect code for a practice API key (`secret`).
    async fn exchange_connect_code(
        &self,
        r: ConnectExchange<'_>,
        secret: &Minted,
    ) -> Result<(), GrantError>;
}

impl Grants for Store {
    async fn redeem_authorization_code(
        &self,
        r: CodeRedemption<'_>,
        tokens: &NewTokens,
    ) -> Result<Issued, GrantError> {
        let request = CodeRequest {
            code_digest: r.code_digest,
            redirect_uri: r.redirect_uri,
            code_verifier: r.code_verifier,
            public: false,
        };
        let by = Presenter {
            client_id: r.client_id,
            ip: r.ip,
            now: r.now,
        };
        loop {
            let read = self.code_for_redemption(r.code_digest).await?;
            let d = grant::redeem_code(read.as_ref(), request, by, tokens);
            if let Some(issued) = settle(self, d).await? {
                return Ok(issued);
            }
        }
    }

    async fn refresh(&self, r: Refresh<'_>, tokens: &NewTokens) -> Result<Issued, GrantError> {
        let request = RefreshRequest {
            scope: r.scope,
            redirect_uri: r.redirect_uri,
            rotation: r.rotation,
        };
        let by = Presenter {
            client_id: r.client_id,
            ip: r.ip,
            now: r.now,
        };
        loop {
            let read = self.refresh_for_use(r.refresh_digest).await?;
            let d = grant::refresh(read.as_ref(), request, by, tokens);
            if let Some(issued) = settle(self, d).await? {
                return Ok(issued);
            }
        }
    }

    async fn issue_client_token(
        &self,
        client_id: &str,
        scope: &ScopeSet,
        tokens: &NewTokens,
        now: i64,
    ) -> Result<Issued, GrantError> {
        let d = grant::direct(client_id, None, scope, tokens, "client_credentials", now);
        let issued = settle(self, d).await?;
        Ok(issued.expect("a write without claims cannot go stale"))
    }

    async fn exchange_connect_code(
        &self,
        r: ConnectExchange<'_>,
        secret: &Minted,
    ) -> Result<(), GrantError> {
        loop {
            let read = self.connect_code_for_exchange(r.code_digest).await?;
            let d = integration::exchange_connect_code(read.as_ref(), r, secret);
            if self.apply_connect(&d.write).await? == Applied::Done {
                return Ok(d.outcome?);
            }
        }
    }
}
