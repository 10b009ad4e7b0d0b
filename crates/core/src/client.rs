//! Partner apps (OAuth clients) as the seed platforms register them: a name,
//! a photo, one or more redirect URIs, the scopes and user types the app may
//! ask for, and whether it can keep a secret (RFC 6749 §2.1).

use std::fmt;
use std::str::FromStr;

use crate::error::OAuthError;
use crate::listing::Listing;
use crate::owner::AuthorizationLevel;
use crate::redirect::RedirectUri;
use crate::scope::ScopeSet;
use crate::secret::matches_digest;
use crate::smart;
use crate::user::UserType;

/// RFC 6749 §2.1 client types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Can keep a secret; authenticates at the token endpoint.
    Confidential,
    /// Cannot keep a secret (browser or native app); must use PKCE.
    Public,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confidential => "confidential",
            Self::Public => "public",
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "confidential" => Ok(Self::Confidential),
            "public" => Ok(Self::Public),
            other => Err(format!("unknown client kind {other:?}")),
        }
    }
}

/// The secret a rotation replaced: its digest, accepted until `expires_at`
/// (epoch seconds, exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub digest: String,
    pub expires_at: i64,
}

impl PreviousSecret {
    pub fn is_valid_at(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

/// A registered client.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub photo_url: Option<String>,
    pub redirect_uris: Vec<RedirectUri>,
    pub allowed_scopes: ScopeSet,
    pub user_types: Vec<UserType>,
    pub kind: ClientKind,
    /// SHA-256 digest of the client secret; `None` for public clients.
    pub secret_digest: Option<String>,
    /// The secret a rotation replaced, still accepted until it expires
    /// (`client_secret_grace`); `None` when there is none.
    pub previous_secret: Option<PreviousSecret>,
    /// How the app describes itself in the integration directory.
    pub description: Option<String>,
    /// Where Connect sends a practice admin, with the code appended (Hint).
    pub connect_redirect_url: Option<String>,
    /// Its place in the integration directory: asked for, approved or
    /// rejected by the platform's operators (see [`crate::listing`]).
    pub listing: Listing,
    /// Where events that concern the app are delivered.
    pub webhook_url: Option<String>,
    /// Bumped to rotate the derived webhook signing secret.
    pub webhook_secret_version: i64,
    /// Set when deliveries were muted after repeated failures.
    pub webhook_muted_at: Option<i64>,
    /// Whether each person authorizes for themselves or an admin for the
    /// whole organization.
    pub authorization_level: AuthorizationLevel,
    /// Scopes of tokens for users the partner provisions; `None` means the
    /// allowed scopes.
    pub provisioning_scopes: Option<ScopeSet>,
    /// Opaque access tokens (default) or signed JWTs (RFC 9068).
    pub jwt_access_tokens: bool,
    /// What its ID tokens are signed with (`id_token_signed_response_alg`).
    pub id_token_alg: crate::jose::Alg,
    /// The person who registered it in the developer portal (`None` for apps
    /// the operator registered).
    pub owner_id: Option<String>,
    /// Set while an operator has suspended the app: it gets no codes or
    /// tokens, and the tokens it held were revoked.
    pub suspended_at: Option<i64>,
    /// A resource server (the platform's own API, its FHIR server) may
    /// introspect any token; every other client only the tokens issued to
    /// it (RFC 7662 §2.1, §4).
    pub resource_server: bool,
    /// Every sign-in that authorizes this app must have given a second
    /// factor (a clinician app never gets a password-only token).
    pub require_mfa: bool,
    /// Its token requests must carry a DPoP proof, so every access token
    /// it gets is bound to its key (RFC 9449 §5.2,
    /// `dpop_bound_access_tokens`).
    pub require_dpop: bool,
    /// Its authorization requests must be pushed first (RFC 9126 §6,
    /// `require_pushed_authorization_requests`): a request at the
    /// authorization endpoint without a `request_uri` is refused.
    pub require_par: bool,
    /// Registered at the registration endpoint (RFC 7591): the id of the
    /// initial access token it was registered with, or `open`.
    pub registered_with: Option<String>,
    /// The digest of its registration access token (RFC 7592), for reading,
    /// changing and deleting the registration at the endpoint.
    pub registration_access_digest: Option<String>,
    /// A SMART launcher (the platform acting as the EHR) may create EHR
    /// launches of apps (`POST /api/v1/smart/launches`); set by operators
    /// only.
    pub smart_launcher: bool,
    /// Where the app is opened for a SMART EHR launch, with `iss` and
    /// `launch` appended.
    pub launch_url: Option<String>,
    /// `private_key_jwt`: the URL of the JWK Set whose keys sign the
    /// client's assertions (SMART Backend Services).
    pub jwks_uri: Option<String>,
    /// `private_key_jwt`: the JWK Set itself (JSON), registered inline.
    pub jwks: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The redirect URI an authorization request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRedirect {
    /// Where the response goes: the URI as the client sent it (which, for a
    /// loopback client, carries its own port), or the one registered URI.
    pub uri: String,
    /// Whether the request named it; if so, the token request must repeat it
    /// (RFC 6749 §4.1.3).
    pub provided: bool,
}

impl Client {
    /// A registration with its id, name and kind, made at `now`, and
    /// nothing else yet: no redirect URI, scope, secret or photo; every
    /// user type; not listed; everything else at its default. Callers set
    /// what they register over it (`Client { …, ..Client::new(…) }`).
    pub fn new(id: impl Into<String>, name: impl Into<String>, kind: ClientKind, now: i64) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            photo_url: None,
            redirect_uris: Vec::new(),
            allowed_scopes: ScopeSet::default(),
            user_types: UserType::ALL.to_vec(),
            kind,
            secret_digest: None,
            previous_secret: None,
            description: None,
            connect_redirect_url: None,
            listing: Listing::default(),
            webhook_url: None,
            webhook_secret_version: 1,
            webhook_muted_at: None,
            authorization_level: Default::default(),
            provisioning_scopes: None,
            jwt_access_tokens: false,
            id_token_alg: Default::default(),
            owner_id: None,
            suspended_at: None,
            resource_server: false,
            require_mfa: false,
            require_dpop: false,
            require_par: false,
            registered_with: None,
            registration_access_digest: None,
            smart_launcher: false,
            launch_url: None,
            jwks_uri: None,
            jwks: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Whether it authenticates with signed assertions (`private_key_jwt`)
    /// rather than a secret.
    pub fn uses_assertions(&self) -> bool {
        self.jwks_uri.is_some() || self.jwks.is_some()
    }

    /// How it authenticates at the token endpoint, by RFC 7591's names
    /// (a secret works in HTTP Basic or in the body alike).
    pub fn token_endpoint_auth_method(&self) -> &'static str {
        if self.is_public() {
            "none"
        } else if self.uses_assertions() {
            "private_key_jwt"
        } else {
            "client_secret_basic"
        }
    }

    pub fn is_public(&self) -> bool {
        self.kind == ClientKind::Public
    }

    /// Resolves the `redirect_uri` of an authorization request (RFC 6749
    /// §3.1.2.3): it must match a registered URI; it may be left out only
    /// when exactly one is registered. An error here must never redirect.
    pub fn resolve_redirect_uri(
        &self,
        requested: Option<&str>,
    ) -> Result<ResolvedRedirect, String> {
        match requested {
            Some(uri) => {
                if self.redirect_uris.iter().any(|r| r.matches(uri)) {
                    Ok(ResolvedRedirect {
                        uri: uri.to_owned(),
                        provided: true,
                    })
                } else {
                    Err("The redirect_uri is not registered for this application.".into())
                }
            }
            None => match self.redirect_uris.as_slice() {
                [only] => Ok(ResolvedRedirect {
                    uri: only.as_str().to_owned(),
                    provided: false,
                }),
                [] => Err("This application has no registered redirect URI.".into()),
                _ => Err(
                    "This application registers several redirect URIs, so the request must name one with redirect_uri."
                        .into(),
                ),
            },
        }
    }

    /// Checks a presented client secret against the stored digest in
    /// constant time: the current secret, or the one a rotation replaced
    /// while `now` is before its expiry (the grace period, so a partner can
    /// roll the new one out without an outage). Public clients have no
    /// secret and never pass.
    pub fn secret_matches(&self, presented: &str, now: i64) -> bool {
        if self.is_public() {
            return false;
        }
        let current = self
            .secret_digest
            .as_deref()
            .is_some_and(|d| matches_digest(presented, d));
        // Both are compared, so the time taken says nothing of which matched.
        let previous = self
            .previous_secret
            .as_ref()
            .is_some_and(|p| matches_digest(presented, &p.digest) & p.is_valid_at(now));
        current | previous
    }

    /// The replaced secret's expiry, while it is still accepted.
    pub fn previous_secret_expires_at(&self, now: i64) -> Option<i64> {
        self.previous_secret
            .as_ref()
            .filter(|p| p.is_valid_at(now))
            .map(|p| p.expires_at)
    }

    /// The scopes granted for a request: each requested scope must be one
    /// of the client's allowed scopes (RFC 6749 §3.3), or a SMART clinical
    /// scope within one of them (`patient/*.rs` allows
    /// `patient/Observation.rs`). A scope written in SMART's form but not
    /// well formed is refused with the reason.
    pub fn check_scope(&self, requested: &ScopeSet) -> Result<(), OAuthError> {
        for token in requested.iter() {
            smart::parse(token).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
        }
        let outside: Vec<&str> = requested
            .iter()
            .filter(|t| !smart::within(t, self.allowed_scopes.iter()))
            .collect();
        if outside.is_empty() {
            Ok(())
        } else {
            Err(OAuthError::invalid_scope(format!(
                "scope not allowed for this client: {}",
                outside.join(" ")
            )))
        }
    }

    /// Whether a page on `origin` is this app running in a browser: the
    /// origin of one of its redirect URIs (CORS at the token endpoint).
    pub fn serves_origin(&self, origin: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|r| r.web_origin().as_deref() == Some(origin))
    }

    pub fn serves(&self, user_type: UserType) -> bool {
        self.user_types.contains(&user_type)
    }

    /// Shown in the integration directory, where practice admins connect
    /// it: its listing was approved and it is not suspended.
    pub fn is_listed(&self) -> bool {
        self.listing.is_approved() && self.suspended_at.is_none()
    }
}

/// The longest reason an operator may give, in characters.
pub const REASON_MAX: usize = 200;

/// An operator's reason for a decision about an app (suspending it,
/// rejecting or ending its directory listing): kept in the audit trail and
/// shown to the app's developer, so one line of 1 to [`REASON_MAX`]
/// characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

/// Why a reason is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    #[error("a reason is required")]
    Missing,
    #[error("the reason must be at most {REASON_MAX} characters")]
    TooLong,
    #[error("the reason must be one line of text")]
    NotOneLine,
}

impl Reason {
    pub fn parse(raw: &str) -> Result<Self, ReasonError> {
        let text = raw.trim();
        if text.is_empty() {
            Err(ReasonError::Missing)
        } else if text.chars().count() > REASON_MAX {
            Err(ReasonError::TooLong)
        } else if text.chars().any(char::is_control) {
            Err(ReasonError::NotOneLine)
        } else {
            Ok(Self(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered client for unit tests across the crate: `app-1`, one
/// redirect URI `https://a.example/cb`, `profile_read profile_write`, members.
#[cfg(test)]
pub(crate) fn example(kind: ClientKind) -> Client {
    Client {
        redirect_uris: vec![RedirectUri::parse("https://a.example/cb").unwrap()],
        allowed_scopes: ScopeSet::parse("profile_read profile_write").unwrap(),
        user_types: vec![UserType::Member],
        ..Client::new("app-1", "MyApp", kind, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{SecretKind, mint};

    fn client(uris: &[&str]) -> Client {
        let mut c = example(ClientKind::Confidential);
        c.redirect_uris = uris
            .iter()
            .map(|u| RedirectUri::parse(u).unwrap())
            .collect();
        c
    }

    #[test]
    fn redirect_may_be_omitted_only_with_exactly_one_registered() {
        let one = client(&["https://a.example/cb"]);
        assert_eq!(
            one.resolve_redirect_uri(None).unwrap(),
            ResolvedRedirect {
                uri: "https://a.example/cb".into(),
                provided: false
            }
        );
        let two = client(&["https://a.example/cb", "https://a.example/cb2"]);
        assert!(two.resolve_redirect_uri(None).is_err());
        assert!(
            two.resolve_redirect_uri(Some("https://a.example/cb2"))
                .unwrap()
                .provided
        );
        assert!(
            two.resolve_redirect_uri(Some("https://a.example/cb3"))
                .is_err()
        );
    }

    #[test]
    fn scope_outside_allowed_is_invalid_scope() {
        let c = client(&["https://a.example/cb"]);
        let err = c
            .check_scope(&ScopeSet::parse("profile_read pay").unwrap())
            .unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::InvalidScope);
        assert!(
            c.check_scope(&ScopeSet::parse("profile_read").unwrap())
                .is_ok()
        );
    }

    #[test]
    fn reasons_are_one_trimmed_line_of_at_most_200_characters() {
        let cases = [
            ("Phishing reported", Ok("Phishing reported")),
            ("  padded  ", Ok("padded")),
            ("", Err(ReasonError::Missing)),
            (" \t ", Err(ReasonError::Missing)),
            ("two\nlines", Err(ReasonError::NotOneLine)),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                Reason::parse(raw)
                    .as_ref()
                    .map(Reason::as_str)
                    .map_err(|e| *e),
                expected,
                "{raw:?}"
            );
        }
        // Characters, not bytes.
        assert!(Reason::parse(&"é".repeat(REASON_MAX)).is_ok());
        assert_eq!(
            Reason::parse(&"x".repeat(REASON_MAX + 1)),
            Err(ReasonError::TooLong)
        );
    }

    #[test]
    fn only_an_approved_app_that_is_not_suspended_is_listed() {
        use crate::listing::ListingState;
        let mut c = client(&["https://a.example/cb"]);
        for state in ListingState::ALL {
            c.listing.state = state;
            c.suspended_at = None;
            assert_eq!(c.is_listed(), state == ListingState::Approved, "{state:?}");
            c.suspended_at = Some(1);
            assert!(!c.is_listed(), "{state:?} suspended");
        }
    }

    #[test]
    fn secret_check_uses_digest() {
        let secret = mint(SecretKind::ClientSecret);
        let mut c = client(&["https://a.example/cb"]);
        assert!(!c.secret_matches(&secret.value, 0));
        c.secret_digest = Some(secret.digest.clone());
        assert!(c.secret_matches(&secret.value, 0));
        assert!(!c.secret_matches("hg_cs_wrong", 0));
    }

    #[test]
    fn a_rotated_secret_is_accepted_until_its_grace_ends() {
        let old = mint(SecretKind::ClientSecret);
        let new = mint(SecretKind::ClientSecret);
        let mut c = client(&["https://a.example/cb"]);
        c.secret_digest = Some(new.digest.clone());
        c.previous_secret = Some(PreviousSecret {
            digest: old.digest.clone(),
            expires_at: 1_000,
        });
        // (presented, now, accepted)
        let cases = [
            (&new.value, 0, true),
            (&new.value, 5_000, true),
            (&old.value, 0, true),
            (&old.value, 999, true),
            (&old.value, 1_000, false),
            (&old.value, 5_000, false),
        ];
        for (presented, now, accepted) in cases {
            assert_eq!(c.secret_matches(presented, now), accepted, "{now}");
        }
        assert!(!c.secret_matches("hg_cs_wrong", 0));
        assert_eq!(c.previous_secret_expires_at(999), Some(1_000));
        assert_eq!(c.previous_secret_expires_at(1_000), None);
        // A public client never passes, whatever it holds.
        c.kind = ClientKind::Public;
        c.secret_digest = None;
        assert!(!c.secret_matches(&old.value, 0));
    }
}
