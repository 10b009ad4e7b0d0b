//! Grants and tokens: lifetimes, refresh rotation, and the checks made when an
//! authorization code (RFC 6749 §4.1.3, RFC 7636 §4.6) or a refresh token
//! (RFC 6749 §6, RFC 9700 §4.14) is redeemed.

use std::fmt;

use crate::error::OAuthError;
use crate::owner::ResourceOwner;
use crate::pkce::{CodeChallenge, CodeVerifier};
use crate::scope::ScopeSet;

/// How a refresh token is retired when it is used. Configured as
/// `refresh_rotation = "immediate"` or `"on_first_use"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshRotation {
    /// The old access and refresh tokens die at once (HealthKey: "This request
    /// invalidates the existing access_token and refresh_token").
    #[default]
    Immediate,
    /// The old refresh token stays good until the new access or refresh token
    /// is first used (Fullscript's rotation).
    OnFirstUse,
}

impl RefreshRotation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::OnFirstUse => "on_first_use",
        }
    }
}

impl fmt::Display for RefreshRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifetimes of what the server issues, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Authorization codes: 10 minutes (Fullscript; RFC 6749 §4.1.2).
    pub code_ttl: i64,
    /// Access tokens: 2 hours (Fullscript).
    pub access_ttl: i64,
    /// Refresh tokens; `None` never expires (Fullscript).
    pub refresh_ttl: Option<i64>,
    pub rotation: RefreshRotation,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            code_ttl: 600,
            access_ttl: 7200,
            refresh_ttl: None,
            rotation: RefreshRotation::Immediate,
        }
    }
}

/// A stored authorization code, as read back for redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    /// The token family every token issued from this code belongs to.
    pub family_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    /// Whether the authorization request named `redirect_uri`.
    pub redirect_uri_provided: bool,
    pub scope: ScopeSet,
    pub code_challenge: Option<CodeChallenge>,
    pub created_at: i64,
    pub expires_at: i64,
    /// What the grant stands for: the organization it was made in, the
    /// owner its tokens speak for, and whether it is organization-level.
    pub grant: GrantContext,
    /// OpenID Connect: the request's `nonce`, and when the person signed in.
    pub nonce: Option<String>,
    pub auth_time: Option<i64>,
    /// How the person signed in (RFC 8176), for the ID token and
    /// introspection.
    pub amr: crate::mfa::Amr,
    /// RFC 9449 §10: the authorization request's `dpop_jkt`; only a proof
    /// by that key redeems the code.
    pub dpop_jkt: Option<String>,
}

/// The organization and resource owner of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantContext {
    pub organization_id: Option<String>,
    pub owner: Option<ResourceOwner>,
    /// An organization-level grant stands for the organization, not for the
    /// admin who made it.
    pub organization_level: bool,
    /// A SMART grant's FHIR server and launch context.
    pub smart: Option<crate::smart::SmartContext>,
}

impl AuthorizationCode {
    /// The checks of RFC 6749 §4.1.3 and RFC 7636 §4.6 on a code presented by
    /// `client_id`. Every failure is `invalid_grant`, with no hint at which
    /// binding failed beyond what the client already knows.
    pub fn check_redemption(
        &self,
        client_id: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        now: i64,
    ) -> Result<(), OAuthError> {
        if now >= self.expires_at {
            return Err(OAuthError::invalid_grant(
                "the authorization code has expired",
            ));
        }
        if self.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the authorization code was issued to another client",
            ));
        }
        match redirect_uri {
            Some(uri) if uri != self.redirect_uri => {
                return Err(OAuthError::invalid_grant(
                    "redirect_uri does not match the authorization request",
                ));
            }
            None if self.redirect_uri_provided => {
                return Err(OAuthError::invalid_grant(
                    "redirect_uri is required because the authorization request included it",
                ));
            }
            _ => {}
        }
        match (&self.code_challenge, code_verifier) {
            (Some(challenge), Some(v)) => {
                let verifier = CodeVerifier::parse(v)?;
                if !challenge.is_satisfied_by(&verifier) {
                    return Err(OAuthError::invalid_grant("code_verifier does not match"));
                }
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier is required: the authorization request used PKCE",
                ));
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier sent, but the authorization request had no code_challenge",
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// A stored refresh token, as read back for redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub digest: String,
    pub family_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scope: ScopeSet,
    /// The redirect URI of the original authorization request.
    pub redirect_uri: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Set once a rotation has retired this token.
    pub consumed_at: Option<i64>,
    /// Set when this token, or its family, was revoked.
    pub revoked_at: Option<i64>,
    /// The refresh token this one replaced, while that one is still pending
    /// retirement under [`RefreshRotation::OnFirstUse`].
    pub parent_digest: Option<String>,
    pub first_used_at: Option<i64>,
}

impl RefreshToken {
    /// RFC 6749 §6 checks on a refresh request by `client_id`; returns the
    /// scope of the new access token. A narrower scope may be asked for, never
    /// a wider one, and narrows only that access token: the new refresh token
    /// keeps `self.scope`. A `redirect_uri`, if sent, must equal the original.
    pub fn check_refresh(
        &self,
        client_id: &str,
        requested_scope: Option<&ScopeSet>,
        redirect_uri: Option<&str>,
        now: i64,
    ) -> Result<ScopeSet, OAuthError> {
        if self.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if self.revoked_at.is_some() {
            return Err(OAuthError::invalid_grant(
                "the refresh token has been revoked",
            ));
        }
        if self.expires_at.is_some_and(|e| now >= e) {
            return Err(OAuthError::invalid_grant("the refresh token has expired"));
        }
        if let Some(uri) = redirect_uri
            && self.redirect_uri.as_deref() != Some(uri)
        {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the original authorization request",
            ));
        }
        match requested_scope {
            Some(s) if !s.is_empty() => {
                if !s.is_subset(&self.scope) {
                    return Err(OAuthError::invalid_scope(
                        "a refresh may narrow the scope, never widen it",
                    ));
                }
                Ok(s.clone())
            }
            _ => Ok(self.scope.clone()),
        }
    }
}

/// An access token as read back to authorize a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub digest: String,
    pub family_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scope: ScopeSet,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Under [`RefreshRotation::OnFirstUse`]: the refresh token this token's
    /// issue is retiring, still pending until this token is first used.
    pub parent_refresh_digest: Option<String>,
    pub first_used_at: Option<i64>,
    /// The organization and owner of the grant the token descends from.
    pub grant: GrantContext,
    /// How the person signed in when the grant was made (RFC 8176).
    pub amr: crate::mfa::Amr,
    /// The DPoP key the token is bound to (RFC 9449 §6: `cnf.jkt`).
    pub dpop_jkt: Option<String>,
}

impl AccessToken {
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const WRONG: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn code(pkce: bool) -> AuthorizationCode {
        AuthorizationCode {
            family_id: "fam-1".into(),
            client_id: "app-1".into(),
            user_id: "usr-1".into(),
            redirect_uri: "https://a.example/cb".into(),
            redirect_uri_provided: true,
            scope: ScopeSet::parse("profile_read").unwrap(),
            code_challenge: pkce.then(|| CodeChallenge::parse(CHALLENGE, Some("S256")).unwrap()),
            created_at: 1_000,
            expires_at: 1_600,
            grant: GrantContext::default(),
            nonce: None,
            auth_time: None,
            amr: Default::default(),
            dpop_jkt: None,
        }
    }

    #[test]
    fn code_redemption_table() {
        let cb = Some("https://a.example/cb");
        // (name, code, client, redirect_uri, code_verifier, now, accepted)
        type Case<'a> = (
            &'a str,
            AuthorizationCode,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            i64,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "valid with pkce",
                code(true),
                "app-1",
                cb,
                Some(VERIFIER),
                1_100,
                true,
            ),
            (
                "valid without pkce",
                code(false),
                "app-1",
                cb,
                None,
                1_100,
                true,
            ),
            (
                "expired at the instant",
                code(false),
                "app-1",
                cb,
                None,
                1_600,
                false,
            ),
            ("other client", code(false), "app-2", cb, None, 1_100, false),
            (
                "other redirect",
                code(false),
                "app-1",
                Some("https://a.example/cb2"),
                None,
                1_100,
                false,
            ),
            (
                "missing redirect",
                code(false),
                "app-1",
                None,
                None,
                1_100,
                false,
            ),
            (
                "missing verifier",
                code(true),
                "app-1",
                cb,
                None,
                1_100,
                false,
            ),
            (
                "wrong verifier",
                code(true),
                "app-1",
                cb,
                Some(WRONG),
                1_100,
                false,
            ),
            (
                "malformed verifier",
                code(true),
                "app-1",
                cb,
                Some("short"),
                1_100,
                false,
            ),
            (
                "verifier without challenge",
                code(false),
                "app-1",
                cb,
                Some(VERIFIER),
                1_100,
                false,
            ),
            (
                "challenge as verifier (downgrade)",
                code(true),
                "app-1",
                cb,
                Some(CHALLENGE),
                1_100,
                false,
            ),
        ];
        for (name, c, client, redirect, verifier, now, ok) in cases {
            let got = c.check_redemption(client, redirect, verifier, now);
            assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.code, ErrorCode::InvalidGrant, "{name}");
            }
        }
    }

    #[test]
    fn redirect_may_be_omitted_when_the_request_omitted_it() {
        let mut c = code(false);
        c.redirect_uri_provided = false;
        assert!(c.check_redemption("app-1", None, None, 1_100).is_ok());
    }

    fn refresh() -> RefreshToken {
        RefreshToken {
            digest: "d".into(),
            family_id: "fam-1".into(),
            client_id: "app-1".into(),
            user_id: Some("usr-1".into()),
            scope: ScopeSet::parse("profile_read profile_write").unwrap(),
            redirect_uri: Some("https://a.example/cb".into()),
            created_at: 0,
            expires_at: Some(100),
            consumed_at: None,
            revoked_at: None,
            parent_digest: None,
            first_used_at: None,
        }
    }

    #[test]
    fn refresh_may_narrow_never_widen() {
        let r = refresh();
        let narrow = ScopeSet::parse("profile_read").unwrap();
        assert_eq!(
            r.check_refresh("app-1", Some(&narrow), None, 1).unwrap(),
            narrow
        );
        let wide = ScopeSet::parse("profile_read pay").unwrap();
        assert_eq!(
            r.check_refresh("app-1", Some(&wide), None, 1)
                .unwrap_err()
                .code,
            ErrorCode::InvalidScope
        );
        assert_eq!(r.check_refresh("app-1", None, None, 1).unwrap(), r.scope);
    }

    #[test]
    fn refresh_bindings() {
        let r = refresh();
        assert!(r.check_refresh("app-2", None, None, 1).is_err());
        assert!(
            r.check_refresh("app-1", None, Some("https://a.example/other"), 1)
                .is_err()
        );
        assert!(
            r.check_refresh("app-1", None, Some("https://a.example/cb"), 1)
                .is_ok()
        );
        assert!(r.check_refresh("app-1", None, None, 100).is_err());
        let mut never = refresh();
        never.expires_at = None;
        assert!(
            never
                .check_refresh("app-1", None, None, i64::MAX - 1)
                .is_ok()
        );
    }
}
