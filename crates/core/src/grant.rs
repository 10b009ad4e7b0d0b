//! The grant engine's decisions: from what was read about a grant, what to
//! write and what to answer.
//!
//! Each grant the token endpoint serves (authorization code, refresh in both
//! rotation modes, client credentials, tokens for a partner-provisioned user)
//! is decided here, free of IO, into a [`Decision`]: a plain [`Write`] (what
//! to claim, revoke, insert and record) and the outcome to answer, the
//! issued grant or the RFC error. The server reads, asks for a decision,
//! builds everything that can still fail (ID token, JWT access token), and
//! hands the write to the store, which applies it in one transaction and
//! knows nothing of OAuth errors.
//!
//! A write's [`Claim`]s are what must still hold when it is applied: a
//! single-use code or refresh token not yet used, an account still active.
//! The store applies a write whole only if every claim holds; otherwise it
//! writes nothing and reports the write stale, and the grant is read and
//! decided again. That is how fifty concurrent redemptions of one code end
//! with one winner: the others' claims fail, and their second decision sees
//! a used code, which is a replay (RFC 6749 §4.1.2, RFC 9700 §4.14.2).

use crate::error::OAuthError;
use crate::event::{EventKind, Outcome};
use crate::mfa::Amr;
use crate::owner::ResourceOwner;
use crate::scope::ScopeSet;
use crate::secret::{Minted, new_ordered_id};
use crate::token::{AuthorizationCode, GrantContext, RefreshRotation, RefreshToken};

/// The secrets to issue, minted by the server (which alone sees their
/// values); only their digests are written.
#[derive(Debug)]
pub struct NewTokens {
    pub access: Minted,
    pub access_expires_at: i64,
    pub refresh: Option<Minted>,
    pub refresh_expires_at: Option<i64>,
    /// DPoP (RFC 9449): the thumbprint of the key the request proved it
    /// holds; the access token is bound to it (`token_type` DPoP,
    /// `cnf.jkt`).
    pub dpop_jkt: Option<String>,
}

/// What a successful grant issues, for the token response and an ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub family_id: String,
    /// The person the tokens speak for; none for a client acting for
    /// itself or for an organization-level grant.
    pub user_id: Option<String>,
    pub scope: ScopeSet,
    pub organization_id: Option<String>,
    pub owner: Option<ResourceOwner>,
    /// From the authorization request, for an ID token.
    pub nonce: Option<String>,
    pub auth_time: Option<i64>,
    /// How the person signed in, when one did (the code flow).
    pub amr: Amr,
    /// A SMART grant's FHIR server and launch context.
    pub smart: Option<crate::smart::SmartContext>,
    /// The DPoP key the access token is bound to.
    pub dpop_jkt: Option<String>,
}

/// What must still hold when a write is applied; if any does not, nothing
/// is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Consumes the authorization code with this digest, which must be
    /// unused.
    Code(String),
    /// Consumes (retires) the refresh token with this digest, which must be
    /// unused.
    Refresh(String),
    /// The account with this id exists and is not locked.
    ActiveUser(String),
    /// The client's registration is still the one the decision was made
    /// with: the record with this id still carries this version stamp (not
    /// suspended, deleted, given a new secret or otherwise changed since).
    Client { id: String, version: i64 },
}

impl Claim {
    /// Whether holding the claim consumes something (rather than only
    /// reading). A write consumes at most one thing, so that a write that
    /// goes stale has changed nothing.
    pub fn consumes(&self) -> bool {
        matches!(self, Self::Code(_) | Self::Refresh(_))
    }
}

/// A token family to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFamily {
    pub id: String,
    pub client_id: String,
    /// The person whose grant it is; for an organization-level grant none
    /// (the grant outlives the admin who made it, kept as `granted_by`).
    pub user_id: Option<String>,
    pub granted_by: Option<String>,
    pub grant: GrantContext,
    pub scope: ScopeSet,
    pub amr: Amr,
    /// A public client's DPoP key (RFC 9449 §5): its refresh tokens are
    /// bound to it.
    pub dpop_jkt: Option<String>,
}

/// The rows of one token issue: an access token and, if any, the refresh
/// token issued with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRows {
    pub family_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub access_digest: String,
    pub access_expires_at: i64,
    /// The access token may carry less than the grant, when a refresh
    /// narrowed it.
    pub access_scope: ScopeSet,
    pub refresh_digest: Option<String>,
    pub refresh_expires_at: Option<i64>,
    /// The refresh token always carries the grant's whole scope (RFC 6749
    /// §6: "identical to that of the refresh token included by the client").
    pub grant_scope: ScopeSet,
    pub redirect_uri: Option<String>,
    /// Under [`RefreshRotation::OnFirstUse`]: the refresh token this pair
    /// replaces, retired when the pair is first used.
    pub parent_refresh: Option<String>,
    /// The DPoP key the access token is bound to.
    pub access_jkt: Option<String>,
}

/// Under [`RefreshRotation::OnFirstUse`], the first use of a child of
/// `parent` retires the parent refresh token, the access token issued with
/// it and every other child issued from it, keeping only the pair whose
/// refresh token is `keep_refresh` (or whose access token is `keep_access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    pub parent: String,
    pub keep_refresh: Option<String>,
    pub keep_access: Option<String>,
}

/// An entry for the audit trail; one that concerns a partner with a webhook
/// also queues its delivery in the same write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: EventKind,
    pub outcome: Outcome,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub organization_id: Option<String>,
    pub ip: Option<String>,
    /// Extra facts as a JSON object: never a secret.
    pub data: Option<serde_json::Value>,
}

impl Record {
    pub(crate) fn new(kind: EventKind, client_id: &str, subject: &str) -> Self {
        Self {
            kind,
            outcome: Outcome::Success,
            actor: None,
            subject: Some(subject.to_owned()),
            client_id: Some(client_id.to_owned()),
            organization_id: None,
            ip: None,
            data: None,
        }
    }
}

/// Everything one grant writes, applied by the store in one transaction in
/// the order of the fields: claims, revocations, retirements, the family,
/// the tokens, the records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Write {
    pub now: i64,
    pub claims: Vec<Claim>,
    /// Revokes a whole family, with the reason for the trail. Applying it
    /// records `token.family_revoked` when the family was still live.
    pub revoke_family: Option<(String, &'static str)>,
    /// Revokes the access tokens issued with this refresh token (immediate
    /// rotation retires both halves of the old pair).
    pub revoke_access_of: Option<String>,
    pub retire: Option<Retirement>,
    pub family: Option<NewFamily>,
    pub tokens: Option<TokenRows>,
    pub records: Vec<Record>,
}

impl Write {
    fn at(now: i64) -> Self {
        Self {
            now,
            ..Self::default()
        }
    }

    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
            && self.revoke_family.is_none()
            && self.revoke_access_of.is_none()
            && self.retire.is_none()
            && self.family.is_none()
            && self.tokens.is_none()
            && self.records.is_empty()
    }
}

/// A grant decided: what to write, and then what to answer.
#[derive(Debug)]
pub struct Decision {
    pub write: Write,
    pub outcome: Result<Issued, OAuthError>,
}

impl Decision {
    /// A refusal that leaves everything as it was.
    fn refuse(now: i64, error: OAuthError) -> Self {
        Self {
            write: Write::at(now),
            outcome: Err(error),
        }
    }
}

/// Whom a grant is presented by, and when.
#[derive(Debug, Clone, Copy)]
pub struct Presenter<'a> {
    pub client_id: &'a str,
    /// The caller's address, for the trail.
    pub ip: Option<&'a str>,
    pub now: i64,
}

/// An authorization code as read for redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRead {
    pub code: AuthorizationCode,
    pub consumed: bool,
    /// Whether the account that granted it exists and is not locked.
    pub user_active: bool,
}

/// The token request's half of a code redemption (RFC 6749 §4.1.3).
#[derive(Debug, Clone, Copy)]
pub struct CodeRequest<'a> {
    pub code_digest: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    /// The client did not authenticate (a public client): with DPoP, its
    /// refresh tokens are bound to the key (RFC 9449 §5).
    pub public: bool,
}

fn rows(
    family: &str,
    client: &str,
    user: Option<&str>,
    tokens: &NewTokens,
    scope: &ScopeSet,
) -> TokenRows {
    TokenRows {
        family_id: family.to_owned(),
        client_id: client.to_owned(),
        user_id: user.map(str::to_owned),
        access_digest: tokens.access.digest.clone(),
        access_expires_at: tokens.access_expires_at,
        access_scope: scope.clone(),
        refresh_digest: tokens.refresh.as_ref().map(|r| r.digest.clone()),
        refresh_expires_at: tokens.refresh.as_ref().and(tokens.refresh_expires_at),
        access_jkt: tokens.dpop_jkt.clone(),
        grant_scope: scope.clone(),
        redirect_uri: None,
        parent_refresh: None,
    }
}

fn issued_record(family: &str, client: &str, actor: Option<&str>, grant_type: &str) -> Record {
    Record {
        actor: actor.map(str::to_owned),
        data: Some(serde_json::json!({ "grant_type": grant_type })),
        ..Record::new(EventKind::TokenIssued, client, family)
    }
}

/// A single-use thing presented again: its family is revoked, and the
/// trail says by whom.
fn replay(
    kind: EventKind,
    family: &str,
    owner_client: &str,
    actor: Option<&str>,
    by: Presenter<'_>,
    reason: &'static str,
    error: &'static str,
) -> Decision {
    let record = Record {
        outcome: Outcome::Failure,
        actor: actor.map(str::to_owned),
        ip: by.ip.map(str::to_owned),
        data: Some(serde_json::json!({ "family_id": family, "presented_by": by.client_id })),
        ..Record::new(kind, owner_client, family)
    };
    Decision {
        write: Write {
            revoke_family: Some((family.to_owned(), reason)),
            records: vec![record],
            ..Write::at(by.now)
        },
        outcome: Err(OAuthError::invalid_grant(error)),
    }
}

const INACTIVE: &str = "the account that granted access is no longer active";
const OTHER_KEY: &str = "this grant is bound to a DPoP key: send a DPoP proof signed by that key";
const SESSION_ENDED: &str = "this online_access grant lasted only while the person stayed signed in, and they have signed out";

/// Redeems an authorization code for tokens (RFC 6749 §4.1.3, RFC 7636
/// §4.6). A used code is a replay and revokes the family it produced; a
/// binding that does not hold (client, redirect URI, PKCE, expiry) is
/// refused and leaves the code unused.
pub fn redeem_code(
    read: Option<&CodeRead>,
    request: CodeRequest<'_>,
    by: Presenter<'_>,
    tokens: &NewTokens,
) -> Decision {
    let Some(read) = read else {
        return Decision::refuse(
            by.now,
            OAuthError::invalid_grant("unknown authorization code"),
        );
    };
    let code = &read.code;
    if read.consumed {
        return replay(
            EventKind::CodeReplayed,
            &code.family_id,
            &code.client_id,
            None,
            by,
            "authorization code replayed",
            "the authorization code has already been used",
        );
    }
    if let Err(e) = code.check_redemption(
        by.client_id,
        request.redirect_uri,
        request.code_verifier,
        by.now,
    ) {
        return Decision::refuse(by.now, e);
    }
    if !read.user_active {
        return Decision::refuse(by.now, OAuthError::invalid_grant(INACTIVE));
    }
    // RFC 9449 §10: a code issued for `dpop_jkt` is redeemed with a proof
    // by that key only.
    if let Some(bound) = &code.dpop_jkt
        && tokens.dpop_jkt.as_ref() != Some(bound)
    {
        return Decision::refuse(by.now, OAuthError::invalid_grant(OTHER_KEY));
    }
    let organization_level = code.grant.organization_level;
    // An organization-level grant's tokens speak for the organization.
    let token_user = (!organization_level).then_some(code.user_id.as_str());
    let mut pair = rows(
        &code.family_id,
        &code.client_id,
        token_user,
        tokens,
        &code.scope,
    );
    pair.redirect_uri = Some(code.redirect_uri.clone());
    if !crate::smart::issues_refresh(code.grant.smart.as_ref(), code.scope.iter()) {
        pair.refresh_digest = None;
        pair.refresh_expires_at = None;
    }
    let family = NewFamily {
        id: code.family_id.clone(),
        client_id: code.client_id.clone(),
        user_id: token_user.map(str::to_owned),
        granted_by: organization_level.then(|| code.user_id.clone()),
        grant: code.grant.clone(),
        scope: code.scope.clone(),
        amr: code.amr.clone(),
        dpop_jkt: tokens.dpop_jkt.clone().filter(|_| request.public),
    };
    Decision {
        write: Write {
            claims: vec![
                Claim::Code(request.code_digest.to_owned()),
                Claim::ActiveUser(code.user_id.clone()),
            ],
            family: Some(family),
            tokens: Some(pair),
            records: vec![issued_record(
                &code.family_id,
                &code.client_id,
                Some(&code.user_id),
                "authorization_code",
            )],
            ..Write::at(by.now)
        },
        outcome: Ok(Issued {
            family_id: code.family_id.clone(),
            user_id: token_user.map(str::to_owned),
            scope: code.scope.clone(),
            organization_id: code.grant.organization_id.clone(),
            owner: code.grant.owner.clone(),
            nonce: code.nonce.clone(),
            auth_time: code.auth_time,
            amr: code.amr.clone(),
            smart: code.grant.smart.clone(),
            dpop_jkt: tokens.dpop_jkt.clone(),
        }),
    }
}

/// A refresh token as read for use, with what its family stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRead {
    pub token: RefreshToken,
    /// Whether the token's account exists and is not locked (true when the
    /// token speaks for no person).
    pub user_active: bool,
    pub grant: GrantContext,
    /// Who made an organization-level grant, and whether they are still an
    /// admin of the organization.
    pub granted_by: Option<String>,
    pub granted_by_still_admin: bool,
    /// An `online_access` grant whose browser session has ended (the person
    /// signed out there, or it expired): its refresh tokens are done.
    pub session_ended: bool,
    /// The DPoP key a public client's family is bound to (RFC 9449 §5).
    pub family_jkt: Option<String>,
}

/// The token request's half of a refresh (RFC 6749 §6).
#[derive(Debug, Clone, Copy)]
pub struct RefreshRequest<'a> {
    pub scope: Option<&'a ScopeSet>,
    pub redirect_uri: Option<&'a str>,
    pub rotation: RefreshRotation,
}

/// Exchanges a refresh token for a new pair, rotating it (RFC 6749 §6,
/// RFC 9700 §4.14.2). A retired refresh token presented again revokes its
/// whole family.
pub fn refresh(
    read: Option<&RefreshRead>,
    request: RefreshRequest<'_>,
    by: Presenter<'_>,
    tokens: &NewTokens,
) -> Decision {
    let Some(read) = read else {
        return Decision::refuse(by.now, OAuthError::invalid_grant("unknown refresh token"));
    };
    let old = &read.token;
    if old.consumed_at.is_some() && old.revoked_at.is_none() {
        return replay(
            EventKind::TokenReuseDetected,
            &old.family_id,
            &old.client_id,
            old.user_id.as_deref(),
            by,
            "refresh token reused",
            "the refresh token has already been used",
        );
    }
    // The access token may be narrowed; the new refresh token keeps the
    // grant's whole scope.
    let scope = match old.check_refresh(by.client_id, request.scope, request.redirect_uri, by.now) {
        Ok(scope) => scope,
        Err(e) => return Decision::refuse(by.now, e),
    };
    if !read.user_active {
        return Decision::refuse(by.now, OAuthError::invalid_grant(INACTIVE));
    }
    if read.session_ended {
        return Decision::refuse(by.now, OAuthError::invalid_grant(SESSION_ENDED));
    }
    // RFC 9449 §5: a public client's refresh tokens bound to a DPoP key
    // are used with a proof by that key only.
    if let Some(bound) = &read.family_jkt
        && tokens.dpop_jkt.as_ref() != Some(bound)
    {
        return Decision::refuse(by.now, OAuthError::invalid_grant(OTHER_KEY));
    }
    let mut write = Write::at(by.now);
    if let Some(user) = &old.user_id {
        write.claims.push(Claim::ActiveUser(user.clone()));
    }
    let parent = match request.rotation {
        RefreshRotation::Immediate => {
            write.claims.push(Claim::Refresh(old.digest.clone()));
            write.revoke_access_of = Some(old.digest.clone());
            None
        }
        RefreshRotation::OnFirstUse => Some(old.digest.clone()),
    };
    // Using a refresh token is the first use of the pair that retires its
    // own parent.
    write.retire = old.parent_digest.as_ref().map(|grandparent| Retirement {
        parent: grandparent.clone(),
        keep_refresh: Some(old.digest.clone()),
        keep_access: None,
    });
    let mut pair = rows(
        &old.family_id,
        &old.client_id,
        old.user_id.as_deref(),
        tokens,
        &old.scope,
    );
    pair.access_scope = scope.clone();
    pair.redirect_uri = old.redirect_uri.clone();
    pair.parent_refresh = parent;
    write.tokens = Some(pair);
    let mut record = Record {
        actor: old.user_id.clone(),
        ..Record::new(EventKind::TokenRefreshed, &old.client_id, &old.family_id)
    };
    if let (Some(org), Some(admin)) = (&read.grant.organization_id, &read.granted_by) {
        // An organization-level grant stands after the admin who made it
        // leaves; the trail says when it is used so.
        record.organization_id = Some(org.clone());
        record.data = Some(serde_json::json!({
            "organization_level": true,
            "granted_by": admin,
            "granted_by_still_admin": read.granted_by_still_admin,
        }));
    }
    write.records.push(record);
    Decision {
        write,
        outcome: Ok(Issued {
            family_id: old.family_id.clone(),
            user_id: old.user_id.clone(),
            scope,
            organization_id: read.grant.organization_id.clone(),
            owner: read.grant.owner.clone(),
            nonce: None,
            auth_time: None,
            amr: Amr::default(),
            smart: read.grant.smart.clone(),
            dpop_jkt: tokens.dpop_jkt.clone(),
        }),
    }
}

/// A new family issued directly, with no code: a client acting for itself
/// (`user` none, RFC 6749 §4.4) or tokens for a person a partner
/// provisioned, whose owner they speak for.
pub fn direct(
    client_id: &str,
    user: Option<&ResourceOwner>,
    scope: &ScopeSet,
    tokens: &NewTokens,
    grant_type: &str,
    now: i64,
) -> Decision {
    let family_id = new_ordered_id("fam", now);
    let user_id = user.map(|u| u.id.as_str());
    let grant = GrantContext {
        organization_id: None,
        owner: user.cloned(),
        organization_level: false,
        smart: None,
    };
    // The server read the person (a provisioned account it checked, or
    // one it is creating in the same write): nothing to claim.
    let mut write = Write::at(now);
    write.family = Some(NewFamily {
        id: family_id.clone(),
        client_id: client_id.to_owned(),
        user_id: user_id.map(str::to_owned),
        granted_by: None,
        grant: grant.clone(),
        scope: scope.clone(),
        amr: Amr::default(),
        dpop_jkt: None,
    });
    write.tokens = Some(rows(&family_id, client_id, user_id, tokens, scope));
    write
        .records
        .push(issued_record(&family_id, client_id, user_id, grant_type));
    Decision {
        write,
        outcome: Ok(Issued {
            family_id,
            user_id: user_id.map(str::to_owned),
            scope: scope.clone(),
            organization_id: None,
            owner: grant.owner,
            nonce: None,
            auth_time: None,
            amr: Amr::default(),
            smart: None,
            dpop_jkt: tokens.dpop_jkt.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use crate::secret::{SecretKind, mint};

    const NOW: i64 = 1_000;

    fn tokens(refresh: bool) -> NewTokens {
        NewTokens {
            access: mint(SecretKind::AccessToken),
            access_expires_at: NOW + 7200,
            refresh: refresh.then(|| mint(SecretKind::RefreshToken)),
            refresh_expires_at: Some(NOW + 86_400),
            dpop_jkt: None,
        }
    }

    fn by(client_id: &str) -> Presenter<'_> {
        Presenter {
            client_id,
            ip: Some("192.0.2.1"),
            now: NOW,
        }
    }

    fn scope(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    fn code_read(consumed: bool, user_active: bool, organization_level: bool) -> CodeRead {
        CodeRead {
            code: AuthorizationCode {
                family_id: "fam-1".into(),
                client_id: "app-1".into(),
                user_id: "usr-1".into(),
                redirect_uri: "https://a.example/cb".into(),
                redirect_uri_provided: false,
                scope: scope("openid profile_read"),
                code_challenge: None,
                created_at: NOW - 10,
                expires_at: NOW + 590,
                grant: GrantContext {
                    organization_id: organization_level.then(|| "org-1".into()),
                    owner: organization_level.then(|| ResourceOwner {
                        id: "org-1".into(),
                        kind: "organization".into(),
                    }),
                    organization_level,
                    smart: None,
                },
                nonce: Some("n-1".into()),
                auth_time: Some(NOW - 20),
                amr: Amr::parse("pwd otp"),
                dpop_jkt: None,
            },
            consumed,
            user_active,
        }
    }

    const CODE: CodeRequest<'static> = CodeRequest {
        code_digest: "code-digest",
        redirect_uri: None,
        code_verifier: None,
        public: false,
    };

    /// DPoP (RFC 9449 §5, §10): a code issued for `dpop_jkt` and a public
    /// client's refresh tokens are used with a proof by their key only;
    /// the access token is bound to the key the request proved.
    #[test]
    fn dpop_bindings_hold_from_code_to_refresh() {
        let with_key = |jkt: Option<&str>| NewTokens {
            dpop_jkt: jkt.map(str::to_owned),
            ..tokens(true)
        };
        let mut bound = code_read(false, true, false);
        bound.code.dpop_jkt = Some("k1".into());
        for presented in [None, Some("k2")] {
            let d = redeem_code(Some(&bound), CODE, by("app-1"), &with_key(presented));
            assert_eq!(
                d.outcome.unwrap_err().code,
                ErrorCode::InvalidGrant,
                "{presented:?}"
            );
            assert!(d.write.is_empty(), "{presented:?}");
        }
        let d = redeem_code(Some(&bound), CODE, by("app-1"), &with_key(Some("k1")));
        assert_eq!(
            d.write.tokens.as_ref().unwrap().access_jkt.as_deref(),
            Some("k1")
        );
        assert_eq!(d.outcome.unwrap().dpop_jkt.as_deref(), Some("k1"));
        // The family is bound for a public client only (a confidential
        // one's refresh tokens are held by its authentication).
        let free = code_read(false, true, false);
        let confidential = redeem_code(Some(&free), CODE, by("app-1"), &with_key(Some("k1")));
        assert_eq!(confidential.write.family.unwrap().dpop_jkt, None);
        let public = CodeRequest {
            public: true,
            ..CODE
        };
        let d = redeem_code(Some(&free), public, by("app-1"), &with_key(Some("k1")));
        assert_eq!(d.write.family.unwrap().dpop_jkt.as_deref(), Some("k1"));
        let d = redeem_code(Some(&free), public, by("app-1"), &with_key(None));
        assert_eq!(
            d.write.family.unwrap().dpop_jkt,
            None,
            "no proof, nothing bound"
        );

        let mut family = refresh_read(false, None);
        family.family_jkt = Some("k1".into());
        let request = refresh_request(RefreshRotation::Immediate, None);
        for presented in [None, Some("k2")] {
            let d = refresh(Some(&family), request, by("app-1"), &with_key(presented));
            assert_eq!(
                d.outcome.unwrap_err().code,
                ErrorCode::InvalidGrant,
                "{presented:?}"
            );
            assert!(d.write.is_empty());
        }
        let d = refresh(Some(&family), request, by("app-1"), &with_key(Some("k1")));
        assert_eq!(
            d.write.tokens.as_ref().unwrap().access_jkt.as_deref(),
            Some("k1")
        );
        // An unbound family may be refreshed with or without a proof.
        let free = refresh_read(false, None);
        let d = refresh(Some(&free), request, by("app-1"), &with_key(Some("k9")));
        assert_eq!(d.outcome.unwrap().dpop_jkt.as_deref(), Some("k9"));
    }

    /// Every way a code redemption ends: what it claims, writes and answers.
    #[test]
    fn code_redemption_decisions() {
        let t = tokens(true);
        // (name, read, presenter, error expected, write expected to be empty)
        type Case<'a> = (&'a str, Option<CodeRead>, &'a str, Option<&'a str>, bool);
        let cases: Vec<Case> = vec![
            ("unknown", None, "app-1", Some("unknown"), true),
            (
                "another client's",
                Some(code_read(false, true, false)),
                "app-2",
                Some("another client"),
                true,
            ),
            (
                "locked account",
                Some(code_read(false, false, false)),
                "app-1",
                Some("no longer active"),
                true,
            ),
            (
                "replayed, even by another client",
                Some(code_read(true, true, false)),
                "app-2",
                Some("already been used"),
                false,
            ),
            (
                "redeemed",
                Some(code_read(false, true, false)),
                "app-1",
                None,
                false,
            ),
        ];
        for (name, read, client, error, empty) in cases {
            let d = redeem_code(read.as_ref(), CODE, by(client), &t);
            match (&d.outcome, error) {
                (Err(e), Some(text)) => {
                    assert_eq!(e.code, ErrorCode::InvalidGrant, "{name}");
                    assert!(e.description.contains(text), "{name}: {e:?}");
                }
                (Ok(_), None) => {}
                (other, _) => panic!("{name}: {other:?}"),
            }
            assert_eq!(d.write.is_empty(), empty, "{name}");
            assert_eq!(d.write.now, NOW, "{name}");
        }
    }

    #[test]
    fn a_redeemed_code_claims_the_code_and_the_account_and_starts_its_family() {
        let t = tokens(true);
        let d = redeem_code(Some(&code_read(false, true, false)), CODE, by("app-1"), &t);
        let w = &d.write;
        assert_eq!(
            w.claims,
            vec![
                Claim::Code("code-digest".into()),
                Claim::ActiveUser("usr-1".into())
            ]
        );
        let family = w.family.as_ref().unwrap();
        assert_eq!(
            (family.id.as_str(), family.user_id.as_deref()),
            ("fam-1", Some("usr-1"))
        );
        assert_eq!(family.granted_by, None);
        let rows = w.tokens.as_ref().unwrap();
        assert_eq!(rows.access_digest, t.access.digest);
        assert_eq!(
            rows.refresh_digest.as_deref(),
            Some(t.refresh.as_ref().unwrap().digest.as_str())
        );
        assert_eq!(rows.redirect_uri.as_deref(), Some("https://a.example/cb"));
        assert_eq!(rows.access_scope, rows.grant_scope);
        assert_eq!(w.records.len(), 1);
        assert_eq!(w.records[0].kind, EventKind::TokenIssued);
        assert!(w.revoke_family.is_none() && w.retire.is_none());
        let issued = d.outcome.unwrap();
        assert_eq!(issued.nonce.as_deref(), Some("n-1"));
        assert_eq!(issued.amr, Amr::parse("pwd otp"));
        assert_eq!(issued.user_id.as_deref(), Some("usr-1"));
    }

    #[test]
    fn an_organization_level_code_speaks_for_the_organization() {
        let d = redeem_code(
            Some(&code_read(false, true, true)),
            CODE,
            by("app-1"),
            &tokens(true),
        );
        let family = d.write.family.as_ref().unwrap();
        assert_eq!(family.user_id, None);
        assert_eq!(family.granted_by.as_deref(), Some("usr-1"));
        assert_eq!(d.write.tokens.as_ref().unwrap().user_id, None);
        // The admin who made it must still be active to redeem it.
        assert!(d.write.claims.contains(&Claim::ActiveUser("usr-1".into())));
        let issued = d.outcome.unwrap();
        assert_eq!(issued.user_id, None);
        assert_eq!(issued.organization_id.as_deref(), Some("org-1"));
    }

    #[test]
    fn a_replayed_code_revokes_its_family_and_names_who_presented_it() {
        let d = redeem_code(
            Some(&code_read(true, true, false)),
            CODE,
            by("app-2"),
            &tokens(true),
        );
        assert_eq!(
            d.write.revoke_family,
            Some(("fam-1".into(), "authorization code replayed"))
        );
        assert!(d.write.claims.is_empty() && d.write.tokens.is_none());
        let record = &d.write.records[0];
        assert_eq!(
            (record.kind, record.outcome),
            (EventKind::CodeReplayed, Outcome::Failure)
        );
        assert_eq!(record.client_id.as_deref(), Some("app-1"));
        assert_eq!(record.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(record.data.as_ref().unwrap()["presented_by"], "app-2");
    }

    fn refresh_read(consumed: bool, parent: Option<&str>) -> RefreshRead {
        RefreshRead {
            token: RefreshToken {
                digest: "r-1".into(),
                family_id: "fam-1".into(),
                client_id: "app-1".into(),
                user_id: Some("usr-1".into()),
                scope: scope("profile_read profile_write"),
                redirect_uri: Some("https://a.example/cb".into()),
                created_at: NOW - 100,
                expires_at: None,
                consumed_at: consumed.then_some(NOW - 5),
                revoked_at: None,
                parent_digest: parent.map(str::to_owned),
                first_used_at: None,
            },
            user_active: true,
            grant: GrantContext::default(),
            granted_by: None,
            granted_by_still_admin: false,
            session_ended: false,
            family_jkt: None,
        }
    }

    fn refresh_request(rotation: RefreshRotation, narrow: Option<&ScopeSet>) -> RefreshRequest<'_> {
        RefreshRequest {
            scope: narrow,
            redirect_uri: None,
            rotation,
        }
    }

    /// Immediate rotation claims the old refresh token and revokes its
    /// access token; on first use it only names the parent, which the
    /// pair's first use retires.
    #[test]
    fn refresh_decisions_by_rotation() {
        let t = tokens(true);
        let read = refresh_read(false, None);
        let immediate = refresh(
            Some(&read),
            refresh_request(RefreshRotation::Immediate, None),
            by("app-1"),
            &t,
        );
        let w = &immediate.write;
        assert_eq!(
            w.claims,
            vec![
                Claim::ActiveUser("usr-1".into()),
                Claim::Refresh("r-1".into())
            ]
        );
        assert_eq!(w.revoke_access_of.as_deref(), Some("r-1"));
        assert_eq!(w.tokens.as_ref().unwrap().parent_refresh, None);
        assert!(w.family.is_none(), "the family goes on");

        let first_use = refresh(
            Some(&read),
            refresh_request(RefreshRotation::OnFirstUse, None),
            by("app-1"),
            &t,
        );
        let w = &first_use.write;
        assert_eq!(w.claims, vec![Claim::ActiveUser("usr-1".into())]);
        assert_eq!(w.revoke_access_of, None);
        assert_eq!(
            w.tokens.as_ref().unwrap().parent_refresh.as_deref(),
            Some("r-1")
        );

        // A child used for the first time retires its own parent, keeping
        // itself.
        let child = refresh_read(false, Some("r-0"));
        let d = refresh(
            Some(&child),
            refresh_request(RefreshRotation::OnFirstUse, None),
            by("app-1"),
            &t,
        );
        assert_eq!(
            d.write.retire,
            Some(Retirement {
                parent: "r-0".into(),
                keep_refresh: Some("r-1".into()),
                keep_access: None,
            })
        );
    }

    #[test]
    fn a_narrowed_refresh_narrows_only_the_access_token() {
        let narrow = scope("profile_read");
        let d = refresh(
            Some(&refresh_read(false, None)),
            refresh_request(RefreshRotation::Immediate, Some(&narrow)),
            by("app-1"),
            &tokens(true),
        );
        let rows = d.write.tokens.as_ref().unwrap();
        assert_eq!(rows.access_scope, narrow);
        assert_eq!(rows.grant_scope, scope("profile_read profile_write"));
        assert_eq!(d.outcome.unwrap().scope, narrow);
    }

    #[test]
    fn refresh_refusals() {
        let t = tokens(true);
        let wide = scope("profile_read admin");
        let mut locked = refresh_read(false, None);
        locked.user_active = false;
        let mut signed_out = refresh_read(false, None);
        signed_out.session_ended = true;
        let mut revoked = refresh_read(true, None);
        revoked.token.revoked_at = Some(NOW - 1);
        // (name, read, client, requested scope, code, write empty)
        type Case<'a> = (
            &'a str,
            Option<RefreshRead>,
            &'a str,
            Option<&'a ScopeSet>,
            ErrorCode,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "unknown",
                None,
                "app-1",
                None,
                ErrorCode::InvalidGrant,
                true,
            ),
            (
                "another client's",
                Some(refresh_read(false, None)),
                "app-2",
                None,
                ErrorCode::InvalidGrant,
                true,
            ),
            (
                "wider scope",
                Some(refresh_read(false, None)),
                "app-1",
                Some(&wide),
                ErrorCode::InvalidScope,
                true,
            ),
            (
                "locked account",
                Some(locked),
                "app-1",
                None,
                ErrorCode::InvalidGrant,
                true,
            ),
            (
                "online_access, signed out",
                Some(signed_out),
                "app-1",
                None,
                ErrorCode::InvalidGrant,
                true,
            ),
            (
                "revoked, not a reuse",
                Some(revoked),
                "app-1",
                None,
                ErrorCode::InvalidGrant,
                true,
            ),
            (
                "reused",
                Some(refresh_read(true, None)),
                "app-1",
                None,
                ErrorCode::InvalidGrant,
                false,
            ),
        ];
        for (name, read, client, narrow, code, empty) in cases {
            let d = refresh(
                read.as_ref(),
                refresh_request(RefreshRotation::Immediate, narrow),
                by(client),
                &t,
            );
            assert_eq!(d.outcome.unwrap_err().code, code, "{name}");
            assert_eq!(d.write.is_empty(), empty, "{name}");
        }
        let reused = refresh(
            Some(&refresh_read(true, None)),
            refresh_request(RefreshRotation::Immediate, None),
            by("app-1"),
            &t,
        );
        assert_eq!(
            reused.write.revoke_family,
            Some(("fam-1".into(), "refresh token reused"))
        );
        assert_eq!(reused.write.records[0].kind, EventKind::TokenReuseDetected);
        assert_eq!(reused.write.records[0].actor.as_deref(), Some("usr-1"));
    }

    #[test]
    fn an_organization_level_refresh_says_whether_its_admin_still_is_one() {
        let mut read = refresh_read(false, None);
        read.token.user_id = None;
        read.grant.organization_id = Some("org-1".into());
        read.granted_by = Some("usr-9".into());
        let d = refresh(
            Some(&read),
            refresh_request(RefreshRotation::Immediate, None),
            by("app-1"),
            &tokens(true),
        );
        assert_eq!(d.write.claims, vec![Claim::Refresh("r-1".into())]);
        let record = &d.write.records[0];
        assert_eq!(record.organization_id.as_deref(), Some("org-1"));
        let data = record.data.as_ref().unwrap();
        assert_eq!(data["granted_by"], "usr-9");
        assert_eq!(data["granted_by_still_admin"], false);
    }

    #[test]
    fn direct_grants_start_a_family_of_their_own() {
        let t = tokens(false);
        let d = direct(
            "app-1",
            None,
            &scope("profile_read"),
            &t,
            "client_credentials",
            NOW,
        );
        let w = &d.write;
        assert!(w.claims.is_empty(), "nothing to claim: it cannot go stale");
        let family = w.family.as_ref().unwrap();
        assert!(family.id.starts_with("fam"));
        assert_eq!(family.user_id, None);
        let rows = w.tokens.as_ref().unwrap();
        assert_eq!(rows.family_id, family.id);
        assert_eq!(rows.refresh_digest, None);
        assert_eq!(rows.refresh_expires_at, None, "no refresh token, no expiry");
        assert_eq!(
            w.records[0].data.as_ref().unwrap()["grant_type"],
            "client_credentials"
        );

        let person = ResourceOwner {
            id: "usr-1".into(),
            kind: "patient".into(),
        };
        let d = direct(
            "app-1",
            Some(&person),
            &scope("profile_read"),
            &tokens(true),
            "provisioned",
            NOW,
        );
        let issued = d.outcome.unwrap();
        assert_eq!(issued.user_id.as_deref(), Some("usr-1"));
        assert_eq!(issued.owner, Some(person));
        assert_eq!(
            d.write.tokens.as_ref().unwrap().user_id.as_deref(),
            Some("usr-1")
        );
    }
}
