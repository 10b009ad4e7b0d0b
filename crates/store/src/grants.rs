//! Consents, authorization codes and the token families that descend from
//! them: issuing, redeeming, rotating and revoking.
//!
//! Every single-use thing is consumed by one conditional
//! `UPDATE … WHERE consumed_at IS NULL` inside the transaction that issues
//! what replaces it; zero rows means a replay, which revokes the family
//! (RFC 6749 §4.1.2 and §10.5, RFC 9700 §4.14.2).

use healthgate_core::error::OAuthError;
use healthgate_core::mfa::Amr;
use healthgate_core::owner::ResourceOwner;
use healthgate_core::pkce::CodeChallenge;
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret::{Minted, new_id};
use healthgate_core::token::{
    AccessToken, AuthorizationCode, GrantContext, RefreshRotation, RefreshToken,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};

use crate::events::{Actor, Event, append};
use crate::users::insert_user_in;
use crate::{Result, Store, StoreError};
use healthgate_core::event::EventKind;
use healthgate_core::user::User;

/// Why a grant could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The request is refused; tell the client.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// Storage failed; fail closed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for GrantError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

/// The secrets to issue, minted by the caller (who alone sees their values);
/// only their digests are stored.
#[derive(Debug)]
pub struct NewTokens {
    pub access: Minted,
    pub access_expires_at: i64,
    pub refresh: Option<Minted>,
    pub refresh_expires_at: Option<i64>,
}

/// What a successful grant issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub family_id: String,
    pub user_id: Option<String>,
    pub scope: ScopeSet,
    pub organization_id: Option<String>,
    pub owner: Option<ResourceOwner>,
    /// From the authorization request, for an ID token.
    pub nonce: Option<String>,
    pub auth_time: Option<i64>,
    /// How the person signed in, when one did (the code flow).
    pub amr: Amr,
}

/// The code presented at the token endpoint, with what the client sent
/// alongside it.
#[derive(Debug, Clone, Copy)]
pub struct CodeRedemption<'a> {
    pub code_digest: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    /// The caller's address, for the audit trail.
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
    /// The caller's address, for the audit trail.
    pub ip: Option<&'a str>,
    pub now: i64,
}

fn scope_of(row: &AnyRow, column: &str) -> Result<ScopeSet> {
    ScopeSet::parse(&row.try_get::<String, _>(column).map_err(StoreError::from)?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn code_from_row(row: &AnyRow) -> Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        family_id: row.try_get("family_id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        redirect_uri_provided: row.try_get::<i64, _>("redirect_uri_provided")? != 0,
        scope: scope_of(row, "scope")?,
        code_challenge: row
            .try_get::<Option<String>, _>("code_challenge")?
            .map(CodeChallenge::from_stored),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        grant: {
            let organization_id: Option<String> = row.try_get("organization_id")?;
            let owner = owner_of(row)?;
            // An organization-level grant's owner is the organization itself.
            let organization_level =
                owner.as_ref().map(|o| Some(&o.id)) == Some(organization_id.as_ref());
            GrantContext {
                organization_id,
                owner,
                organization_level,
            }
        },
        nonce: row.try_get("nonce")?,
        auth_time: row.try_get("auth_time")?,
        amr: amr_of(row)?,
    })
}

/// The methods in a row's `amr` column (none for grants made without a
/// person signing in).
fn amr_of(row: &AnyRow) -> Result<Amr> {
    Ok(Amr::parse(
        row.try_get::<Option<String>, _>("amr")?
            .as_deref()
            .unwrap_or(""),
    ))
}

/// The stored form of `amr`: `NULL` when empty.
fn amr_column(amr: &Amr) -> Option<String> {
    (!amr.is_empty()).then(|| amr.to_string())
}

/// The resource owner in a row's `owner_type` and `owner_id` columns.
fn owner_of(row: &AnyRow) -> Result<Option<ResourceOwner>> {
    Ok(
        match (
            row.try_get::<Option<String>, _>("owner_type")?,
            row.try_get::<Option<String>, _>("owner_id")?,
        ) {
            (Some(kind), Some(id)) => Some(ResourceOwner { id, kind }),
            _ => None,
        },
    )
}

/// A refresh token by digest. It reads as revoked when its family is, or
/// while its client is suspended (a suspension revokes the families; this
/// covers one issued in the instant the suspension was committing).
pub(crate) const REFRESH_SELECT: &str = "SELECT r.digest, r.family_id, r.client_id, r.user_id, r.scope, r.redirect_uri, r.parent_digest,
        r.created_at, r.expires_at, r.consumed_at, r.first_used_at,
        COALESCE(r.revoked_at, f.revoked_at, c.suspended_at) AS revoked_at
 FROM refresh_tokens r JOIN token_families f ON f.id = r.family_id JOIN clients c ON c.id = f.client_id
 WHERE r.digest = $1";

pub(crate) fn refresh_from_row(row: &AnyRow) -> Result<RefreshToken> {
    Ok(RefreshToken {
        digest: row.try_get("digest")?,
        family_id: row.try_get("family_id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        scope: scope_of(row, "scope")?,
        redirect_uri: row.try_get("redirect_uri")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        consumed_at: row.try_get("consumed_at")?,
        revoked_at: row.try_get("revoked_at")?,
        parent_digest: row.try_get("parent_digest")?,
        first_used_at: row.try_get("first_used_at")?,
    })
}

/// Revokes a whole token family: every access and refresh token in it stops
/// working on the next request.
/// Returns whether a live family was revoked; raises `token.family_revoked`
/// for the partner and the trail when it was.
pub(crate) async fn revoke_family(
    tx: &mut Transaction<'static, Any>,
    family_id: &str,
    reason: &str,
    now: i64,
) -> Result<bool> {
    let revoked: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE token_families SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL
         RETURNING client_id, user_id",
    )
    .bind(now)
    .bind(reason)
    .bind(family_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((client_id, user_id)) = revoked else {
        return Ok(false);
    };
    let event = Event::new(EventKind::TokenFamilyRevoked)
        .client(&client_id)
        .subject(family_id)
        .data(serde_json::json!({ "family_id": family_id, "user_id": user_id, "reason": reason }));
    append(tx, now, &event).await?;
    Ok(true)
}

/// A locked or deleted user's grants issue nothing.
async fn require_active_user(
    tx: &mut Transaction<'static, Any>,
    user_id: Option<&str>,
) -> Result<(), GrantError> {
    let Some(user_id) = user_id else {
        return Ok(());
    };
    let locked: Option<Option<i64>> =
        sqlx::query_scalar("SELECT locked_at FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
    match locked {
        Some(None) => Ok(()),
        _ => Err(
            OAuthError::invalid_grant("the account that granted access is no longer active").into(),
        ),
    }
}

/// The scopes of a new token pair: the refresh token always carries the
/// grant's whole scope (RFC 6749 §6: "identical to that of the refresh token
/// included by the client"); the access token may carry less, when a refresh
/// asked for a narrower scope.
#[derive(Clone, Copy)]
struct PairScopes<'a> {
    grant: &'a ScopeSet,
    access: &'a ScopeSet,
}

impl<'a> PairScopes<'a> {
    fn whole(scope: &'a ScopeSet) -> Self {
        Self {
            grant: scope,
            access: scope,
        }
    }
}

/// Inserts an access token and, if any, its refresh token into `family_id`.
#[allow(clippy::too_many_arguments)]
async fn insert_tokens(
    tx: &mut Transaction<'static, Any>,
    family_id: &str,
    client_id: &str,
    user_id: Option<&str>,
    scopes: PairScopes<'_>,
    redirect_uri: Option<&str>,
    parent_refresh: Option<&str>,
    tokens: &NewTokens,
    now: i64,
) -> Result<()> {
    if let Some(refresh) = &tokens.refresh {
        sqlx::query(
            "INSERT INTO refresh_tokens (digest, family_id, client_id, user_id, scope, redirect_uri, parent_digest, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&refresh.digest)
        .bind(family_id)
        .bind(client_id)
        .bind(user_id)
        .bind(scopes.grant.to_string())
        .bind(redirect_uri)
        .bind(parent_refresh)
        .bind(now)
        .bind(tokens.refresh_expires_at)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO access_tokens (digest, family_id, client_id, user_id, scope, refresh_digest, parent_refresh_digest, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&tokens.access.digest)
    .bind(family_id)
    .bind(client_id)
    .bind(user_id)
    .bind(scopes.access.to_string())
    .bind(tokens.refresh.as_ref().map(|r| r.digest.as_str()))
    .bind(parent_refresh)
    .bind(now)
    .bind(tokens.access_expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A token family to start: whose, for what, and how the person signed in.
struct NewFamily<'a> {
    id: &'a str,
    client_id: &'a str,
    user_id: Option<&'a str>,
    grant: &'a GrantContext,
    scope: &'a ScopeSet,
    amr: &'a Amr,
}

/// Creates a token family. An organization-level grant belongs to no user
/// (it outlives the admin who made it, who is kept as `granted_by`).
async fn insert_family(
    tx: &mut Transaction<'static, Any>,
    family: NewFamily<'_>,
    now: i64,
) -> Result<()> {
    let NewFamily {
        id: family_id,
        client_id,
        user_id,
        grant,
        scope,
        amr,
    } = family;
    let (user_id, granted_by) = if grant.organization_level {
        (None, user_id)
    } else {
        (user_id, None)
    };
    sqlx::query(
        "INSERT INTO token_families (id, client_id, user_id, created_at, organization_id, owner_type, owner_id, granted_by, scope, amr)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(family_id)
    .bind(client_id)
    .bind(user_id)
    .bind(now)
    .bind(&grant.organization_id)
    .bind(grant.owner.as_ref().map(|o| o.kind.as_str()))
    .bind(grant.owner.as_ref().map(|o| o.id.as_str()))
    .bind(granted_by)
    .bind(scope.to_string())
    .bind(amr_column(amr))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The organization and owner of a family, and who made an
/// organization-level grant.
async fn family_context(
    conn: &mut AnyConnection,
    family_id: &str,
) -> Result<(GrantContext, Option<String>)> {
    let row = sqlx::query("SELECT organization_id, owner_type, owner_id, granted_by FROM token_families WHERE id = $1")
        .bind(family_id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok((GrantContext::default(), None));
    };
    let granted_by: Option<String> = row.try_get("granted_by")?;
    Ok((
        GrantContext {
            organization_id: row.try_get("organization_id")?,
            owner: owner_of(&row)?,
            organization_level: granted_by.is_some(),
        },
        granted_by,
    ))
}

/// A new family issued directly (no code): client credentials, or tokens
/// for a partner-provisioned user.
#[allow(clippy::too_many_arguments)]
async fn issue_family(
    tx: &mut Transaction<'static, Any>,
    client_id: &str,
    user_id: Option<&str>,
    owner: Option<ResourceOwner>,
    scope: &ScopeSet,
    tokens: &NewTokens,
    grant_type: &str,
    now: i64,
) -> Result<Issued> {
    let family_id = new_id("fam");
    let grant = GrantContext {
        organization_id: None,
        owner,
        organization_level: false,
    };
    let family = NewFamily {
        id: &family_id,
        client_id,
        user_id,
        grant: &grant,
        scope,
        amr: &Amr::default(),
    };
    insert_family(tx, family, now).await?;
    insert_tokens(
        tx,
        &family_id,
        client_id,
        user_id,
        PairScopes::whole(scope),
        None,
        None,
        tokens,
        now,
    )
    .await?;
    let event = Event::new(EventKind::TokenIssued)
        .actor(user_id)
        .client(client_id)
        .subject(&family_id)
        .data(serde_json::json!({ "grant_type": grant_type }));
    append(tx, now, &event).await?;
    Ok(Issued {
        family_id,
        user_id: user_id.map(str::to_owned),
        scope: scope.clone(),
        organization_id: None,
        owner: grant.owner,
        nonce: None,
        auth_time: None,
        amr: Amr::default(),
    })
}

/// Under [`RefreshRotation::OnFirstUse`]: the first use of a child of
/// `parent` retires the parent refresh token, the access token issued with
/// it, and every other child issued from it, keeping only the pair whose
/// refresh token is `keep_refresh` (or whose access token is `keep_access`).
async fn retire_parent(
    tx: &mut Transaction<'static, Any>,
    parent: &str,
    keep_refresh: Option<&str>,
    keep_access: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET consumed_at = $1 WHERE digest = $2 AND consumed_at IS NULL",
    )
    .bind(now)
    .bind(parent)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1
         WHERE parent_digest = $2 AND revoked_at IS NULL AND digest <> COALESCE($3, '')",
    )
    .bind(now)
    .bind(parent)
    .bind(keep_refresh)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE access_tokens SET revoked_at = $1
         WHERE revoked_at IS NULL
           AND (refresh_digest = $2
                OR (parent_refresh_digest = $2
                    AND COALESCE(refresh_digest, '') <> COALESCE($3, '')
                    AND digest <> COALESCE($4, '')))",
    )
    .bind(now)
    .bind(parent)
    .bind(keep_refresh)
    .bind(keep_access)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The scopes `user_id` already granted `client_id`, and the
    /// organization the grant was made in, if any.
    pub async fn consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<(ScopeSet, Option<String>)>> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT scope, organization_id FROM consents WHERE user_id = $1 AND client_id = $2",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|(s, org)| {
            ScopeSet::parse(&s)
                .map(|scope| (scope, org))
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// Records that `user_id` granted `scope` to `client_id` (in
    /// `organization_id`), adding to what was granted before in the same
    /// organization.
    pub async fn remember_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &ScopeSet,
        organization_id: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let merged = match self.consent(user_id, client_id).await? {
            Some((old, old_org)) if old_org.as_deref() == organization_id => old.union(scope),
            _ => scope.clone(),
        };
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scope, granted_at, organization_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, client_id) DO UPDATE
             SET scope = excluded.scope, granted_at = excluded.granted_at, organization_id = excluded.organization_id",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(merged.to_string())
        .bind(now)
        .bind(organization_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Stores a new authorization code by digest, and audits its issue.
    pub async fn insert_authorization_code(
        &self,
        digest: &str,
        code: &AuthorizationCode,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO authorization_codes (digest, family_id, client_id, user_id, redirect_uri, redirect_uri_provided, scope,
                                              code_challenge, created_at, expires_at, organization_id, owner_type, owner_id,
                                              nonce, auth_time, amr)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(digest)
        .bind(&code.family_id)
        .bind(&code.client_id)
        .bind(&code.user_id)
        .bind(&code.redirect_uri)
        .bind(i64::from(code.redirect_uri_provided))
        .bind(code.scope.to_string())
        .bind(code.code_challenge.as_ref().map(CodeChallenge::as_str))
        .bind(code.created_at)
        .bind(code.expires_at)
        .bind(&code.grant.organization_id)
        .bind(code.grant.owner.as_ref().map(|o| o.kind.as_str()))
        .bind(code.grant.owner.as_ref().map(|o| o.id.as_str()))
        .bind(&code.nonce)
        .bind(code.auth_time)
        .bind(amr_column(&code.amr))
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            code.created_at,
            &Event::new(EventKind::CodeIssued)
                .actor(Some(&code.user_id))
                .client(&code.client_id)
                .data(serde_json::json!({ "scope": code.scope.to_string() })),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Redeems an authorization code for tokens in one transaction. A code
    /// already consumed is a replay: the family it produced is revoked and
    /// `invalid_grant` returned. A binding that does not hold (client,
    /// redirect URI, PKCE, expiry) rolls back, leaving the code unused.
    pub async fn redeem_authorization_code(
        &self,
        r: CodeRedemption<'_>,
        tokens: &NewTokens,
    ) -> Result<Issued, GrantError> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(
            "UPDATE authorization_codes SET consumed_at = $1
             WHERE digest = $2 AND consumed_at IS NULL
             RETURNING family_id, client_id, user_id, redirect_uri, redirect_uri_provided, scope, code_challenge, created_at,
                       expires_at, organization_id, owner_type, owner_id, nonce, auth_time, amr",
        )
        .bind(r.now)
        .bind(r.code_digest)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let replayed: Option<(String, String)> = sqlx::query_as(
                "SELECT family_id, client_id FROM authorization_codes WHERE digest = $1",
            )
            .bind(r.code_digest)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((family_id, client_id)) = replayed {
                revoke_family(&mut tx, &family_id, "authorization code replayed", r.now).await?;
                append(
                    &mut tx,
                    r.now,
                    &Event::new(EventKind::CodeReplayed)
                        .failed()
                        .client(&client_id)
                        .subject(&family_id)
                        .ip(r.ip)
                        .data(serde_json::json!({
                            "family_id": family_id,
                            "presented_by": r.client_id,
                        })),
                )
                .await?;
                tx.commit().await?;
                return Err(OAuthError::invalid_grant(
                    "the authorization code has already been used",
                )
                .into());
            }
            return Err(OAuthError::invalid_grant("unknown authorization code").into());
        };
        let code = code_from_row(&row)?;
        // On failure the transaction is dropped, which rolls the consumption back.
        code.check_redemption(r.client_id, r.redirect_uri, r.code_verifier, r.now)?;
        require_active_user(&mut tx, Some(&code.user_id)).await?;

        let family = NewFamily {
            id: &code.family_id,
            client_id: &code.client_id,
            user_id: Some(&code.user_id),
            grant: &code.grant,
            scope: &code.scope,
            amr: &code.amr,
        };
        insert_family(&mut tx, family, r.now).await?;
        // An organization-level grant's tokens speak for the organization.
        let token_user = (!code.grant.organization_level).then_some(code.user_id.as_str());
        insert_tokens(
            &mut tx,
            &code.family_id,
            &code.client_id,
            token_user,
            PairScopes::whole(&code.scope),
            Some(&code.redirect_uri),
            None,
            tokens,
            r.now,
        )
        .await?;
        append(
            &mut tx,
            r.now,
            &Event::new(EventKind::TokenIssued)
                .actor(Some(&code.user_id))
                .client(&code.client_id)
                .subject(&code.family_id)
                .data(serde_json::json!({ "grant_type": "authorization_code" })),
        )
        .await?;
        tx.commit().await?;
        Ok(Issued {
            family_id: code.family_id,
            user_id: token_user.map(str::to_owned),
            scope: code.scope,
            organization_id: code.grant.organization_id,
            owner: code.grant.owner,
            nonce: code.nonce,
            auth_time: code.auth_time,
            amr: code.amr,
        })
    }

    /// Exchanges a refresh token for a new pair (RFC 6749 §6) with rotation.
    /// A retired refresh token presented again revokes its whole family
    /// (RFC 9700 §4.14.2).
    pub async fn refresh(&self, r: Refresh<'_>, tokens: &NewTokens) -> Result<Issued, GrantError> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(REFRESH_SELECT)
            .bind(r.refresh_digest)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(OAuthError::invalid_grant("unknown refresh token").into());
        };
        let old = refresh_from_row(&row)?;
        if old.consumed_at.is_some() && old.revoked_at.is_none() {
            return Err(self.refresh_reuse(tx, &old, &r).await);
        }
        // The access token may be narrowed; the new refresh token keeps the
        // grant's whole scope.
        let scope = old.check_refresh(r.client_id, r.scope, r.redirect_uri, r.now)?;
        require_active_user(&mut tx, old.user_id.as_deref()).await?;

        let parent = match r.rotation {
            RefreshRotation::Immediate => {
                let consumed = sqlx::query(
                    "UPDATE refresh_tokens SET consumed_at = $1 WHERE digest = $2 AND consumed_at IS NULL",
                )
                .bind(r.now)
                .bind(&old.digest)
                .execute(&mut *tx)
                .await?;
                if consumed.rows_affected() == 0 {
                    return Err(self.refresh_reuse(tx, &old, &r).await);
                }
                sqlx::query("UPDATE access_tokens SET revoked_at = $1 WHERE refresh_digest = $2 AND revoked_at IS NULL")
                    .bind(r.now)
                    .bind(&old.digest)
                    .execute(&mut *tx)
                    .await?;
                None
            }
            RefreshRotation::OnFirstUse => Some(old.digest.as_str()),
        };
        // Using a refresh token is the first use of the pair that retired its
        // own parent.
        if let Some(grandparent) = &old.parent_digest {
            retire_parent(&mut tx, grandparent, Some(&old.digest), None, r.now).await?;
        }
        insert_tokens(
            &mut tx,
            &old.family_id,
            &old.client_id,
            old.user_id.as_deref(),
            PairScopes {
                grant: &old.scope,
                access: &scope,
            },
            old.redirect_uri.as_deref(),
            parent,
            tokens,
            r.now,
        )
        .await?;
        let (grant, granted_by) = family_context(&mut tx, &old.family_id).await?;
        let mut event = Event::new(EventKind::TokenRefreshed)
            .actor(old.user_id.as_deref())
            .client(&old.client_id)
            .subject(&old.family_id);
        if let (Some(org), Some(admin)) = (&grant.organization_id, &granted_by) {
            // An organization-level grant stands after the admin who made it
            // leaves; the trail says when it is used so.
            let still_admin: Option<String> = sqlx::query_scalar(
                "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2 AND role = 'admin'",
            )
            .bind(org)
            .bind(admin)
            .fetch_optional(&mut *tx)
            .await?;
            event = event.organization(org).data(serde_json::json!({
                "organization_level": true,
                "granted_by": admin,
                "granted_by_still_admin": still_admin.is_some(),
            }));
        }
        append(&mut tx, r.now, &event).await?;
        tx.commit().await?;
        Ok(Issued {
            family_id: old.family_id,
            user_id: old.user_id,
            scope,
            organization_id: grant.organization_id,
            owner: grant.owner,
            nonce: None,
            auth_time: None,
            amr: Amr::default(),
        })
    }

    async fn refresh_reuse(
        &self,
        mut tx: Transaction<'static, Any>,
        old: &RefreshToken,
        r: &Refresh<'_>,
    ) -> GrantError {
        let now = r.now;
        let result: Result<()> = async {
            revoke_family(&mut tx, &old.family_id, "refresh token reused", now).await?;
            append(
                &mut tx,
                now,
                &Event::new(EventKind::TokenReuseDetected)
                    .failed()
                    .actor(old.user_id.as_deref())
                    .client(&old.client_id)
                    .subject(&old.family_id)
                    .ip(r.ip)
                    .data(serde_json::json!({
                        "family_id": old.family_id,
                        "presented_by": r.client_id,
                    })),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => OAuthError::invalid_grant("the refresh token has already been used").into(),
            Err(e) => e.into(),
        }
    }

    /// Issues a client-credentials access token (no user, no refresh token).
    pub async fn issue_client_token(
        &self,
        client_id: &str,
        scope: &ScopeSet,
        tokens: &NewTokens,
        now: i64,
    ) -> Result<Issued> {
        let mut tx = self.writer.begin().await?;
        let issued = issue_family(
            &mut tx,
            client_id,
            None,
            None,
            scope,
            tokens,
            "client_credentials",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Creates an account for a partner (HealthTap's "you manage users'
    /// identity") and issues its first tokens, in one transaction. The
    /// partner counts as authorized by the account for `scope`.
    pub async fn provision_user(
        &self,
        user: &User,
        client_id: &str,
        scope: &ScopeSet,
        tokens: &NewTokens,
        now: i64,
    ) -> Result<Issued> {
        let mut tx = self.writer.begin().await?;
        insert_user_in(&mut tx, user, Actor::system()).await?;
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&user.id)
        .bind(client_id)
        .bind(scope.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let owner = ResourceOwner::person(&user.id, user.user_type);
        let issued = issue_family(
            &mut tx,
            client_id,
            Some(&user.id),
            Some(owner),
            scope,
            tokens,
            "provisioned",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Issues a new token family for a user the partner provisioned.
    pub async fn issue_user_tokens(
        &self,
        user: &User,
        client_id: &str,
        scope: &ScopeSet,
        tokens: &NewTokens,
        now: i64,
    ) -> Result<Issued> {
        let mut tx = self.writer.begin().await?;
        let owner = ResourceOwner::person(&user.id, user.user_type);
        let issued = issue_family(
            &mut tx,
            client_id,
            Some(&user.id),
            Some(owner),
            scope,
            tokens,
            "provisioned",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Looks an access token up by digest, for a resource request. A token of
    /// a revoked family, or of a client that is suspended, comes back with
    /// `revoked_at` set.
    pub async fn access_token(&self, digest: &str) -> Result<Option<AccessToken>> {
        let row = sqlx::query(
            "SELECT a.digest, a.family_id, a.client_id, a.user_id, a.scope, a.created_at, a.expires_at,
                    a.parent_refresh_digest, a.first_used_at,
                    COALESCE(a.revoked_at, f.revoked_at, c.suspended_at) AS revoked_at,
                    f.organization_id, f.owner_type, f.owner_id, f.granted_by, f.amr
             FROM access_tokens a JOIN token_families f ON f.id = a.family_id JOIN clients c ON c.id = f.client_id
             WHERE a.digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(AccessToken {
                digest: row.try_get("digest")?,
                family_id: row.try_get("family_id")?,
                client_id: row.try_get("client_id")?,
                user_id: row.try_get("user_id")?,
                scope: scope_of(&row, "scope")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                revoked_at: row.try_get("revoked_at")?,
                parent_refresh_digest: row.try_get("parent_refresh_digest")?,
                first_used_at: row.try_get("first_used_at")?,
                grant: GrantContext {
                    organization_id: row.try_get("organization_id")?,
                    owner: owner_of(&row)?,
                    organization_level: row.try_get::<Option<String>, _>("granted_by")?.is_some(),
                },
                amr: amr_of(&row)?,
            })
        })
        .transpose()
    }

    /// Marks the first use of an access token issued by an on-first-use
    /// rotation, which retires the refresh token it replaced. Returns whether
    /// the token is still live afterwards (a sibling may have won the race).
    pub async fn first_use_of_access_token(&self, token: &AccessToken, now: i64) -> Result<bool> {
        let Some(parent) = &token.parent_refresh_digest else {
            return Ok(true);
        };
        let mut tx = self.writer.begin().await?;
        let marked = sqlx::query(
            "UPDATE access_tokens SET first_used_at = $1 WHERE digest = $2 AND first_used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&token.digest)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 1 {
            retire_parent(&mut tx, parent, None, Some(&token.digest), now).await?;
        }
        let still_live: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM access_tokens WHERE digest = $1 AND revoked_at IS NULL",
        )
        .bind(&token.digest)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(still_live.is_some())
    }

    /// Revokes the family a token belongs to; used by admin actions and
    /// revocation. Returns whether a live family was revoked.
    pub async fn revoke_token_family(
        &self,
        family_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let revoked = revoke_family(&mut tx, family_id, reason, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}
