//! The authorization request (RFC 6749 §4.1.1) and its validation, in the
//! order the RFC requires: first what decides whether redirecting is safe
//! (client and redirect URI, §4.1.2.1), then everything else, whose errors go
//! back to the client by redirect.

use crate::client::Client;
use crate::error::{ErrorCode, OAuthError};
use crate::mfa::Acr;
use crate::pkce::CodeChallenge;
use crate::scope::ScopeSet;

/// The raw parameters of an authorization request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    /// OpenID Connect Core §3.1.2.1: echoed in the ID token.
    pub nonce: Option<String>,
    /// OpenID Connect Core §3.1.2.1: `none`, `login`, `consent`.
    pub prompt: Option<String>,
    /// OpenID Connect Core §3.1.2.1: the longest age, in seconds, of the
    /// sign-in the request accepts.
    pub max_age: Option<String>,
    /// OpenID Connect Core §3.1.2.1: the authentication context classes
    /// wanted, in order of preference (space-separated).
    pub acr_values: Option<String>,
    /// SMART App Launch: the base URL of the FHIR server the app wants to
    /// reach.
    pub aud: Option<String>,
    /// RFC 8707's name for the same thing, accepted as a synonym of `aud`.
    pub resource: Option<String>,
    /// SMART's EHR launch: the opaque value the app was opened with.
    pub launch: Option<String>,
    /// RFC 9449 §10: the thumbprint of the DPoP key the code is for.
    pub dpop_jkt: Option<String>,
    /// RFC 9126 §4: the pushed request this one stands for (with
    /// `client_id`, and nothing else the server reads).
    pub request_uri: Option<String>,
    /// RFC 9101 §5: the request as a signed request object, by value.
    pub request: Option<String>,
    /// healthgate's own: the proof that this browser brought the pushed
    /// request first, carried by the sign-in and consent pages back to the
    /// authorization endpoint (`core::par::resume_token`).
    pub resume: Option<String>,
    /// Names of parameters that appeared more than once (RFC 6749 §3.1).
    pub duplicated: Vec<String>,
}

impl AuthorizeParams {
    /// Collects the recognised parameters from decoded name/value pairs,
    /// noting repeats. Unknown parameters are ignored (RFC 6749 §3.1).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut p = Self::default();
        for (k, v) in pairs {
            let key = k.as_ref();
            let slot = match key {
                "response_type" => &mut p.response_type,
                "client_id" => &mut p.client_id,
                "redirect_uri" => &mut p.redirect_uri,
                "scope" => &mut p.scope,
                "state" => &mut p.state,
                "code_challenge" => &mut p.code_challenge,
                "code_challenge_method" => &mut p.code_challenge_method,
                "nonce" => &mut p.nonce,
                "prompt" => &mut p.prompt,
                "max_age" => &mut p.max_age,
                "acr_values" => &mut p.acr_values,
                "aud" => &mut p.aud,
                "resource" => &mut p.resource,
                "launch" => &mut p.launch,
                "dpop_jkt" => &mut p.dpop_jkt,
                "request_uri" => &mut p.request_uri,
                "request" => &mut p.request,
                "resume" => &mut p.resume,
                _ => continue,
            };
            if slot.is_some() {
                if !p.duplicated.iter().any(|d| d == key) {
                    p.duplicated.push(key.to_owned());
                }
            } else {
                *slot = Some(v.into());
            }
        }
        p
    }

    /// Whether `name` is a parameter of the authorization request this
    /// server reads (others are ignored, RFC 6749 §3.1).
    pub fn reads(name: &str) -> bool {
        Self::from_pairs([(name, String::new())]) != Self::default()
    }

    /// The request as name/value pairs, to carry it through the login and
    /// consent pages unchanged: a pushed request by its reference alone
    /// (`client_id`, `request_uri`, `resume`), so that its parameters are
    /// read from where they were pushed every time.
    pub fn to_pairs(&self) -> Vec<(&'static str, &str)> {
        if let (Some(client_id), Some(uri), Some(resume)) =
            (&self.client_id, &self.request_uri, &self.resume)
        {
            return vec![
                ("client_id", client_id),
                ("request_uri", uri),
                ("resume", resume),
            ];
        }
        let fields: [(&'static str, &Option<String>); 15] = [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("nonce", &self.nonce),
            ("prompt", &self.prompt),
            ("max_age", &self.max_age),
            ("acr_values", &self.acr_values),
            ("aud", &self.aud),
            ("resource", &self.resource),
            ("launch", &self.launch),
            ("dpop_jkt", &self.dpop_jkt),
        ];
        fields
            .into_iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
            .collect()
    }
}

impl AuthorizeParams {
    /// The request to come back to after signing in: `prompt=login` is met
    /// by that sign-in, so it is dropped (or the login would repeat forever).
    /// A pushed request drops it when it comes back (`resumed`).
    pub fn without_login_prompt(&self) -> Vec<(&'static str, String)> {
        self.to_pairs()
            .into_iter()
            .filter_map(|(k, v)| match k {
                "prompt" => without_login(v).map(|rest| (k, rest)),
                _ => Some((k, v.to_owned())),
            })
            .collect()
    }

    /// These parameters, pushed and held by the server, as the request
    /// `request_uri` stands for; `resume` lets the pages bring it back.
    pub fn pushed(mut self, request_uri: String, resume: String) -> Self {
        self.request_uri = Some(request_uri);
        self.resume = Some(resume);
        self
    }

    /// A pushed request as it comes back from the sign-in or consent
    /// pages: its `prompt=login` was met when it first arrived, by the
    /// sign-in that brought it back.
    pub fn resumed(mut self, request_uri: String, resume: String) -> Self {
        self.prompt = self.prompt.as_deref().and_then(without_login);
        self.pushed(request_uri, resume)
    }
}

/// `prompt` without `login`, or nothing when nothing else was asked.
fn without_login(prompt: &str) -> Option<String> {
    let rest: Vec<&str> = prompt
        .split(' ')
        .filter(|p| !p.is_empty() && *p != "login")
        .collect();
    (!rest.is_empty()).then(|| rest.join(" "))
}

/// Why an authorization request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show the person an error
    /// page and never redirect (RFC 6749 §4.1.2.1, RFC 9700 §4.1).
    Page(String),
    /// Tell the client by redirecting to its redirect URI.
    Redirect {
        redirect_uri: String,
        error: OAuthError,
        state: Option<String>,
    },
}

/// An authorization request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAuthorization {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_provided: bool,
    pub scope: ScopeSet,
    pub state: Option<String>,
    pub code_challenge: Option<CodeChallenge>,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    /// The assurance level the sign-in must reach: what `acr_values` asks
    /// for, and two factors whatever it asks when the client requires them.
    pub acr: Option<Acr>,
    /// The FHIR server the tokens are for (SMART's `aud`), one of those
    /// configured.
    pub aud: Option<String>,
    /// SMART's EHR launch value, with the `launch` scope asked for; the
    /// caller looks the launch up.
    pub launch: Option<String>,
    /// RFC 9449 §10: only a DPoP proof by the key with this thumbprint
    /// redeems the code.
    pub dpop_jkt: Option<String>,
}

/// OpenID Connect's `prompt` (Core §3.1.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    /// Show no page: answer `login_required` or `consent_required` instead.
    pub none: bool,
    /// Ask the person to sign in again.
    pub login: bool,
    /// Ask for consent even if it was given before.
    pub consent: bool,
}

impl Prompt {
    pub fn parse(s: Option<&str>) -> Result<Self, OAuthError> {
        let mut p = Self::default();
        for value in s.unwrap_or("").split(' ').filter(|v| !v.is_empty()) {
            match value {
                "none" => p.none = true,
                "login" => p.login = true,
                "consent" => p.consent = true,
                // One account per session: nothing to select.
                "select_account" => {}
                other => {
                    return Err(OAuthError::invalid_request(format!(
                        "unsupported prompt value '{other}'"
                    )));
                }
            }
        }
        if p.none && (p.login || p.consent) {
            return Err(OAuthError::invalid_request(
                "prompt=none cannot be combined with other values",
            ));
        }
        Ok(p)
    }
}

/// Where the scopes an authorization request asks for come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScopeSource {
    /// The request's `scope` parameter (RFC 6749 §3.3), which is required
    /// and must be within the client's registered scopes.
    #[default]
    Request,
    /// The client's registered scopes: "an app's scopes are set at
    /// registration" (Fullscript). A `scope` parameter, even a repeated or
    /// malformed one, is ignored; RFC 6749 §3.3 lets the server use a
    /// pre-defined scope, and the token response says what was granted.
    Registration,
}

/// What a deployment decides about authorization requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules<'a> {
    pub scopes: ScopeSource,
    /// SMART App Launch's FHIR servers (`[smart] fhir_base_urls`); empty
    /// when SMART is off, and `aud` is then ignored.
    pub fhir_bases: &'a [&'a str],
}

impl Rules<'static> {
    pub fn new(scopes: ScopeSource) -> Self {
        Self {
            scopes,
            fhir_bases: &[],
        }
    }
}

/// SMART's `aud` (or RFC 8707's `resource`): required when the request asks
/// for a SMART clinical or launch scope, and, when given, one of the FHIR
/// servers configured (SMART App Launch 2.2 §App Launch: "the EHR SHALL
/// ... validate the aud").
fn audience(
    params: &AuthorizeParams,
    scope: &ScopeSet,
    bases: &[&str],
) -> Result<Option<String>, OAuthError> {
    if bases.is_empty() {
        return Ok(None);
    }
    let named = match (params.aud.as_deref(), params.resource.as_deref()) {
        (Some(a), Some(r)) if a.trim_end_matches('/') != r.trim_end_matches('/') => {
            return Err(OAuthError::invalid_request(
                "aud and resource name different servers",
            ));
        }
        (a, r) => a.or(r),
    };
    let Some(named) = named else {
        return if scope.iter().any(crate::smart::needs_fhir_server) {
            Err(OAuthError::invalid_request(
                "aud is required with SMART scopes: the base URL of the FHIR server",
            ))
        } else {
            Ok(None)
        };
    };
    let trimmed = named.trim_end_matches('/');
    match bases.iter().find(|b| **b == trimmed) {
        Some(base) => Ok(Some((*base).to_owned())),
        None => Err(OAuthError::invalid_request(
            "aud is not a FHIR server this authorization server issues tokens for",
        )),
    }
}

/// SMART's EHR launch: the `launch` parameter and the `launch` scope come
/// together (App Launch 2.2 §Scopes for requesting context data: `launch`
/// is "only valid with the launch parameter"). Ignored with SMART off.
fn ehr_launch(
    params: &AuthorizeParams,
    scope: &ScopeSet,
    bases: &[&str],
) -> Result<Option<String>, OAuthError> {
    if bases.is_empty() {
        return Ok(None);
    }
    match (params.launch.as_deref(), scope.contains("launch")) {
        (Some(launch), true) if !launch.is_empty() => Ok(Some(launch.to_owned())),
        (None, false) => Ok(None),
        (Some(_), false) => Err(OAuthError::invalid_scope(
            "an EHR launch asks for the launch scope",
        )),
        (_, true) => Err(OAuthError::invalid_request(
            "the launch scope needs the launch parameter the app was opened with",
        )),
    }
}

/// A standalone launch (no `launch`) cannot put an encounter in context:
/// healthgate has no encounter picker. `launch/encounter` is then not
/// granted, and the consent page and the token response's `scope` say so
/// (RFC 6749 §3.3); asked alone, it is `invalid_scope`.
fn standalone_scope(
    scope: ScopeSet,
    launched: bool,
    bases: &[&str],
) -> Result<ScopeSet, OAuthError> {
    const ENCOUNTER: &str = "launch/encounter";
    if bases.is_empty() || launched || !scope.contains(ENCOUNTER) {
        return Ok(scope);
    }
    let rest = ScopeSet::from_tokens(scope.iter().filter(|t| *t != ENCOUNTER))
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    if rest.is_empty() {
        return Err(OAuthError::invalid_scope(
            "launch/encounter needs an EHR launch: a standalone launch has no encounter to pick",
        ));
    }
    Ok(rest)
}

/// Validates `params` for `client`, which the caller looked up by
/// `params.client_id` (an unknown client is a [`AuthorizeError::Page`] the
/// caller renders itself), under the deployment's `rules`.
pub fn validate(
    params: &AuthorizeParams,
    client: &Client,
    rules: &Rules<'_>,
) -> Result<ValidAuthorization, AuthorizeError> {
    let scopes = rules.scopes;
    if params
        .duplicated
        .iter()
        .any(|d| d == "client_id" || d == "redirect_uri")
    {
        return Err(AuthorizeError::Page(
            "The request repeats client_id or redirect_uri, so it cannot be trusted.".into(),
        ));
    }
    let redirect = client
        .resolve_redirect_uri(params.redirect_uri.as_deref())
        .map_err(AuthorizeError::Page)?;
    let state = params.state.clone();
    let fail = |error: OAuthError| AuthorizeError::Redirect {
        redirect_uri: redirect.uri.clone(),
        error,
        state: state.clone(),
    };

    let ignored = |d: &&String| scopes == ScopeSource::Registration && *d == "scope";
    if let Some(d) = params.duplicated.iter().find(|d| !ignored(d)) {
        return Err(fail(OAuthError::invalid_request(format!(
            "parameter {d} is repeated"
        ))));
    }
    match params.response_type.as_deref() {
        Some("code") => {}
        None => {
            return Err(fail(OAuthError::invalid_request(
                "response_type is required",
            )));
        }
        Some(_) => {
            return Err(fail(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            )));
        }
    }
    let scope = match (scopes, params.scope.as_deref().map(ScopeSet::parse)) {
        (ScopeSource::Registration, _) => client.allowed_scopes.clone(),
        (ScopeSource::Request, Some(Ok(s))) if !s.is_empty() => s,
        (ScopeSource::Request, Some(Err(e))) => {
            return Err(fail(OAuthError::invalid_scope(e.to_string())));
        }
        (ScopeSource::Request, _) => {
            return Err(fail(OAuthError::invalid_scope(
                "the scope parameter is required",
            )));
        }
    };
    client.check_scope(&scope).map_err(fail)?;
    if let Some(system) = scope
        .iter()
        .find(|t| !crate::smart::grantable_to(t, crate::smart::Holder::Person))
    {
        return Err(fail(OAuthError::invalid_scope(format!(
            "{system} is for backend services (client credentials), not an authorization request"
        ))));
    }
    let aud = audience(params, &scope, rules.fhir_bases).map_err(fail)?;
    let launch = ehr_launch(params, &scope, rules.fhir_bases).map_err(fail)?;
    let scope = standalone_scope(scope, launch.is_some(), rules.fhir_bases).map_err(fail)?;
    // A SHA-256 thumbprint, base64url: 43 characters (RFC 7638, RFC 9449 §10).
    let dpop_jkt = match params.dpop_jkt.as_deref() {
        None => None,
        Some(j)
            if j.len() == 43
                && j.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(j.to_owned())
        }
        Some(_) => {
            return Err(fail(OAuthError::invalid_request(
                "dpop_jkt must be the base64url SHA-256 thumbprint of the DPoP key (RFC 7638)",
            )));
        }
    };

    let code_challenge = match (&params.code_challenge, &params.code_challenge_method) {
        (Some(c), m) => Some(CodeChallenge::parse(c, m.as_deref()).map_err(fail)?),
        (None, Some(_)) => {
            return Err(fail(OAuthError::invalid_request(
                "code_challenge_method sent without code_challenge",
            )));
        }
        (None, None) => None,
    };
    let prompt = Prompt::parse(params.prompt.as_deref()).map_err(fail)?;
    let max_age = match params.max_age.as_deref() {
        None => None,
        Some(m) => Some(m.parse::<i64>().ok().filter(|m| *m >= 0).ok_or_else(|| {
            fail(OAuthError::invalid_request(
                "max_age must be a number of seconds",
            ))
        })?),
    };
    // acr_values names classes in order of preference, any of which will
    // do; classes this server does not know are passed over. An app that
    // requires a second factor gets one whatever it asks.
    let requested = params.acr_values.as_deref().and_then(Acr::requested);
    let acr = if client.require_mfa {
        Some(Acr::Aal2)
    } else {
        requested
    };
    if client.is_public() && code_challenge.is_none() {
        return Err(fail(OAuthError::invalid_request(
            "PKCE is required for public clients: send code_challenge with code_challenge_method=S256",
        )));
    }

    Ok(ValidAuthorization {
        client_id: client.id.clone(),
        redirect_uri: redirect.uri,
        redirect_uri_provided: redirect.provided,
        scope,
        state,
        code_challenge,
        nonce: params.nonce.clone(),
        prompt,
        max_age,
        acr,
        aud,
        launch,
        dpop_jkt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientKind;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client(kind: ClientKind) -> Client {
        crate::client::example(kind)
    }

    fn params(pairs: &[(&str, &str)]) -> AuthorizeParams {
        AuthorizeParams::from_pairs(pairs.iter().map(|(k, v)| (*k, v.to_string())))
    }

    fn error_code(r: Result<ValidAuthorization, AuthorizeError>) -> Option<ErrorCode> {
        match r {
            Err(AuthorizeError::Redirect { error, .. }) => Some(error.code),
            _ => None,
        }
    }

    #[test]
    fn valid_request() {
        let p = params(&[
            ("response_type", "code"),
            ("client_id", "app-1"),
            ("scope", "profile_read"),
            ("state", "xyz"),
        ]);
        let v = validate(
            &p,
            &client(ClientKind::Confidential),
            &Rules::new(ScopeSource::Request),
        )
        .unwrap();
        assert_eq!(v.redirect_uri, "https://a.example/cb");
        assert!(!v.redirect_uri_provided);
        assert_eq!(v.state.as_deref(), Some("xyz"));
    }

    #[test]
    fn failures_table() {
        use ErrorCode::*;
        let base = [("client_id", "app-1"), ("scope", "profile_read")];
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            ClientKind,
            Option<ErrorCode>,
        );
        let cases: Vec<Case> = vec![
            (
                "no response_type",
                vec![],
                ClientKind::Confidential,
                Some(InvalidRequest),
            ),
            (
                "token response_type",
                vec![("response_type", "token")],
                ClientKind::Confidential,
                Some(UnsupportedResponseType),
            ),
            (
                "scope outside",
                vec![("response_type", "code"), ("scope", "pay")],
                ClientKind::Confidential,
                Some(InvalidScope),
            ),
            (
                "public without pkce",
                vec![("response_type", "code")],
                ClientKind::Public,
                Some(InvalidRequest),
            ),
            (
                "plain pkce",
                vec![
                    ("response_type", "code"),
                    ("code_challenge", CHALLENGE),
                    ("code_challenge_method", "plain"),
                ],
                ClientKind::Public,
                Some(InvalidRequest),
            ),
            (
                "method without challenge",
                vec![("response_type", "code"), ("code_challenge_method", "S256")],
                ClientKind::Confidential,
                Some(InvalidRequest),
            ),
            (
                "repeated state",
                vec![("response_type", "code"), ("state", "a"), ("state", "b")],
                ClientKind::Confidential,
                Some(InvalidRequest),
            ),
        ];
        for (name, extra, kind, expected) in cases {
            let mut pairs: Vec<(&str, &str)> = extra.clone();
            for (k, v) in base {
                if !extra.iter().any(|(ek, _)| *ek == k) {
                    pairs.push((k, v));
                }
            }
            assert_eq!(
                error_code(validate(
                    &params(&pairs),
                    &client(kind),
                    &Rules::new(ScopeSource::Request)
                )),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn public_client_with_s256_passes() {
        let p = params(&[
            ("response_type", "code"),
            ("client_id", "app-1"),
            ("scope", "profile_read"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]);
        assert!(
            validate(
                &p,
                &client(ClientKind::Public),
                &Rules::new(ScopeSource::Request)
            )
            .unwrap()
            .code_challenge
            .is_some()
        );
    }

    /// Fullscript: the app's scopes are set at registration; whatever the
    /// request says about scope (nothing, less, other, repeated, malformed),
    /// the registered scopes are asked for.
    #[test]
    fn scopes_from_registration_ignore_the_scope_parameter() {
        let registered = "profile_read profile_write";
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("scope", "profile_read")],
            &[("scope", "pay")],
            &[("scope", "")],
            &[("scope", "a\"b")],
            &[("scope", "pay"), ("scope", "profile_read")],
        ];
        for extra in cases {
            let mut pairs = vec![("response_type", "code"), ("client_id", "app-1")];
            pairs.extend_from_slice(extra);
            let v = validate(
                &params(&pairs),
                &client(ClientKind::Confidential),
                &Rules::new(ScopeSource::Registration),
            )
            .unwrap_or_else(|e| panic!("{extra:?}: {e:?}"));
            assert_eq!(v.scope.to_string(), registered, "{extra:?}");
        }
        // Other repeats are still refused.
        let p = params(&[
            ("response_type", "code"),
            ("client_id", "app-1"),
            ("state", "a"),
            ("state", "b"),
        ]);
        assert_eq!(
            error_code(validate(
                &p,
                &client(ClientKind::Confidential),
                &Rules::new(ScopeSource::Registration)
            )),
            Some(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn bad_redirect_or_repeated_redirect_never_redirects() {
        let p = params(&[
            ("response_type", "code"),
            ("redirect_uri", "https://evil.example/cb"),
        ]);
        assert!(matches!(
            validate(
                &p,
                &client(ClientKind::Confidential),
                &Rules::new(ScopeSource::Request)
            ),
            Err(AuthorizeError::Page(_))
        ));
        let p = params(&[
            ("redirect_uri", "https://a.example/cb"),
            ("redirect_uri", "https://evil.example/cb"),
        ]);
        assert!(matches!(
            validate(
                &p,
                &client(ClientKind::Confidential),
                &Rules::new(ScopeSource::Request)
            ),
            Err(AuthorizeError::Page(_))
        ));
    }

    #[test]
    fn a_satisfied_login_prompt_is_dropped() {
        let p = params(&[("client_id", "app-1"), ("prompt", "login consent")]);
        assert_eq!(
            p.without_login_prompt(),
            vec![
                ("client_id", "app-1".to_owned()),
                ("prompt", "consent".to_owned())
            ]
        );
        let p = params(&[("prompt", "login")]);
        assert!(p.without_login_prompt().is_empty());
    }

    #[test]
    fn prompt_values() {
        assert!(Prompt::parse(Some("none login")).is_err());
        assert!(Prompt::parse(Some("bogus")).is_err());
        assert_eq!(
            Prompt::parse(Some("login consent")).unwrap(),
            Prompt {
                none: false,
                login: true,
                consent: true
            }
        );
        assert_eq!(Prompt::parse(None).unwrap(), Prompt::default());
    }

    #[test]
    fn pairs_round_trip() {
        let p = params(&[
            ("response_type", "code"),
            ("state", "a&b"),
            ("client_id", "app-1"),
        ]);
        let again =
            AuthorizeParams::from_pairs(p.to_pairs().into_iter().map(|(k, v)| (k, v.to_string())));
        assert_eq!(p, again);
    }

    /// SMART: `aud` (or `resource`) names one of the configured FHIR
    /// servers, and is required with SMART's clinical and launch scopes.
    #[test]
    fn smart_aud_is_required_with_smart_scopes_and_must_be_a_configured_server() {
        const FHIR: &str = "https://fhir.example.com/r4";
        let mut smart_client = client(ClientKind::Confidential);
        smart_client.allowed_scopes =
            ScopeSet::parse("openid fhirUser profile_read patient/*.rs launch/patient").unwrap();
        let on = Rules {
            scopes: ScopeSource::Request,
            fhir_bases: &[FHIR],
        };
        let off = Rules::new(ScopeSource::Request);
        let with = |extra: &[(&'static str, &'static str)], rules: &Rules<'static>| {
            let mut pairs = vec![("response_type", "code"), ("client_id", "app-1")];
            pairs.extend_from_slice(extra);
            validate(&params(&pairs), &smart_client, rules)
        };
        let clinical = ("scope", "patient/Observation.rs launch/patient");
        // (extra parameters, rules, Ok(aud) or the error)
        type Case<'a> = (
            Vec<(&'static str, &'static str)>,
            &'a Rules<'static>,
            Result<Option<&'static str>, ErrorCode>,
        );
        let cases: Vec<Case<'_>> = vec![
            (vec![clinical, ("aud", FHIR)], &on, Ok(Some(FHIR))),
            (
                vec![clinical, ("aud", "https://fhir.example.com/r4/")],
                &on,
                Ok(Some(FHIR)),
            ),
            (vec![clinical, ("resource", FHIR)], &on, Ok(Some(FHIR))),
            (
                vec![clinical, ("aud", FHIR), ("resource", FHIR)],
                &on,
                Ok(Some(FHIR)),
            ),
            (vec![clinical], &on, Err(ErrorCode::InvalidRequest)),
            (
                vec![clinical, ("aud", "https://evil.example/r4")],
                &on,
                Err(ErrorCode::InvalidRequest),
            ),
            (
                vec![
                    clinical,
                    ("aud", FHIR),
                    ("resource", "https://other.example"),
                ],
                &on,
                Err(ErrorCode::InvalidRequest),
            ),
            (
                vec![clinical, ("aud", FHIR), ("aud", FHIR)],
                &on,
                Err(ErrorCode::InvalidRequest),
            ),
            // Identity scopes alone need no FHIR server; a named one is still checked.
            (
                vec![("scope", "openid fhirUser profile_read")],
                &on,
                Ok(None),
            ),
            (
                vec![
                    ("scope", "openid profile_read"),
                    ("aud", "https://evil.example"),
                ],
                &on,
                Err(ErrorCode::InvalidRequest),
            ),
            // SMART off: aud is not a parameter healthgate reads.
            (
                vec![
                    ("scope", "profile_read"),
                    ("aud", "https://anything.example"),
                ],
                &off,
                Ok(None),
            ),
        ];
        for (extra, rules, expected) in cases {
            let got = with(&extra, rules);
            match expected {
                Ok(aud) => assert_eq!(
                    got.unwrap_or_else(|e| panic!("{extra:?}: {e:?}"))
                        .aud
                        .as_deref(),
                    aud,
                    "{extra:?}"
                ),
                Err(code) => assert_eq!(error_code(got), Some(code), "{extra:?}"),
            }
        }
    }

    /// A standalone launch has no encounter to pick: `launch/encounter` is
    /// left out of what is granted (alone, `invalid_scope`); an EHR launch
    /// keeps it, and with SMART off nothing is touched.
    #[test]
    fn a_standalone_launch_is_not_granted_launch_encounter() {
        const FHIR: &str = "https://fhir.example.com/r4";
        let mut smart_client = client(ClientKind::Confidential);
        smart_client.allowed_scopes =
            ScopeSet::parse("launch launch/patient launch/encounter patient/*.rs").unwrap();
        let on = Rules {
            scopes: ScopeSource::Request,
            fhir_bases: &[FHIR],
        };
        let run = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![
                ("response_type", "code"),
                ("client_id", "app-1"),
                ("aud", FHIR),
            ];
            pairs.extend_from_slice(extra);
            validate(&params(&pairs), &smart_client, &on)
        };
        // (extra, granted scope or the error)
        type Case = (
            Vec<(&'static str, &'static str)>,
            Result<&'static str, ErrorCode>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![("scope", "launch/patient launch/encounter patient/*.rs")],
                Ok("launch/patient patient/*.rs"),
            ),
            (
                vec![
                    ("scope", "launch launch/encounter patient/*.rs"),
                    ("launch", "hg_ln_x"),
                ],
                Ok("launch launch/encounter patient/*.rs"),
            ),
            (
                vec![("scope", "launch/encounter")],
                Err(ErrorCode::InvalidScope),
            ),
        ];
        for (extra, expected) in cases {
            match expected {
                Ok(scope) => assert_eq!(
                    run(&extra)
                        .unwrap_or_else(|e| panic!("{extra:?}: {e:?}"))
                        .scope,
                    ScopeSet::parse(scope).unwrap(),
                    "{extra:?}"
                ),
                Err(code) => assert_eq!(error_code(run(&extra)), Some(code), "{extra:?}"),
            }
        }
        let off = Rules::new(ScopeSource::Request);
        let mut plain = client(ClientKind::Confidential);
        plain.allowed_scopes = ScopeSet::parse("profile_read launch/encounter").unwrap();
        let pairs = params(&[
            ("response_type", "code"),
            ("client_id", "app-1"),
            ("scope", "profile_read launch/encounter"),
        ]);
        assert!(
            validate(&pairs, &plain, &off)
                .unwrap()
                .scope
                .contains("launch/encounter")
        );
    }

    /// SMART's EHR launch: the `launch` parameter and the `launch` scope
    /// come together; with SMART off, `launch` is not read.
    #[test]
    fn an_ehr_launch_needs_both_the_launch_parameter_and_the_launch_scope() {
        const FHIR: &str = "https://fhir.example.com/r4";
        let mut smart_client = client(ClientKind::Confidential);
        smart_client.allowed_scopes =
            ScopeSet::parse("openid fhirUser launch launch/patient patient/*.rs").unwrap();
        let on = Rules {
            scopes: ScopeSource::Request,
            fhir_bases: &[FHIR],
        };
        let off = Rules::new(ScopeSource::Request);
        // (scope, launch, rules, Ok(launch) or the error)
        type Case<'a> = (
            &'static str,
            Option<&'static str>,
            &'a Rules<'static>,
            Result<Option<&'static str>, ErrorCode>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("launch patient/*.rs", Some("xyz"), &on, Ok(Some("xyz"))),
            ("launch/patient patient/*.rs", None, &on, Ok(None)),
            (
                "launch patient/*.rs",
                None,
                &on,
                Err(ErrorCode::InvalidRequest),
            ),
            (
                "launch patient/*.rs",
                Some(""),
                &on,
                Err(ErrorCode::InvalidRequest),
            ),
            (
                "launch/patient patient/*.rs",
                Some("xyz"),
                &on,
                Err(ErrorCode::InvalidScope),
            ),
            ("openid", Some("xyz"), &off, Ok(None)),
        ];
        for (scope, launch, rules, expected) in cases {
            let mut pairs = vec![
                ("response_type", "code"),
                ("client_id", "app-1"),
                ("scope", scope),
                ("aud", FHIR),
            ];
            if let Some(l) = launch {
                pairs.push(("launch", l));
            }
            let got = validate(&params(&pairs), &smart_client, rules);
            match expected {
                Ok(l) => assert_eq!(
                    got.unwrap_or_else(|e| panic!("{scope} {launch:?}: {e:?}"))
                        .launch
                        .as_deref(),
                    l,
                    "{scope} {launch:?}"
                ),
                Err(code) => assert_eq!(error_code(got), Some(code), "{scope} {launch:?}"),
            }
        }
    }
}
