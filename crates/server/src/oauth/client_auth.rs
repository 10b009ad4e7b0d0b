//! Client authentication at the token endpoint (RFC 6749 §2.3): HTTP Basic
//! (`client_secret_basic`, as HealthTap requires), `client_id` and
//! `client_secret` in the body (`client_secret_post`), a signed assertion
//! (`private_key_jwt`, RFC 7523, SMART Backend Services: see
//! `core::client_assertion`), or, for public clients, `client_id` alone
//! (PKCE then carries the proof).

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use healthgate_core::client::Client;
use healthgate_core::client_assertion;
use healthgate_core::error::{ErrorCode, OAuthError};
use healthgate_core::event::EventKind;
use healthgate_store::{Event, StoreError};

use crate::http::error::JsonError;
use crate::http::ip::ClientIp;
use crate::http::middleware::note_client;
use crate::oauth::params::Params;
use crate::services::throttle;
use crate::state::AppState;

/// What the client presented.
#[derive(Debug, PartialEq, Eq)]
struct Presented {
    client_id: String,
    secret: Option<String>,
    /// A `private_key_jwt` assertion, not yet verified.
    assertion: Option<String>,
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(OAuthError::invalid_client("malformed Authorization header"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "use HTTP Basic authentication for the client",
        ));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before encoding.
    let unescape = |s: &str| -> Result<String, OAuthError> {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))
    };
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

/// How a client authenticates in the body of a token, PAR, introspection or
/// revocation request, when it does not use HTTP Basic (RFC 6749 §2.3.1,
/// RFC 7523 §2.2): `client_id` with `client_secret` (client_secret_post),
/// with a `client_assertion` (private_key_jwt), or alone (a public client).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `authenticate` reads.
pub struct ClientAuthentication {
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<ClientAssertionType>,
    /// A JWT signed by one of the app's keys.
    client_assertion: Option<String>,
}

/// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, the one
/// assertion type.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub enum ClientAssertionType {
    #[serde(rename = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")]
    JwtBearer,
}

/// The client a request names (Basic credentials or `client_id`), whether
/// or not it proves to be that client.
pub fn named_client_id(headers: &HeaderMap, params: &Params) -> Option<String> {
    presented(headers, params).ok().map(|p| p.client_id)
}

fn presented(headers: &HeaderMap, params: &Params) -> Result<Presented, OAuthError> {
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    let assertion_type = params.get("client_assertion_type");
    let assertion = params.get("client_assertion");
    if assertion_type.is_some() || assertion.is_some() {
        return presented_assertion(headers, body_id, body_secret, assertion_type, assertion);
    }
    match basic_credentials(headers)? {
        Some((id, secret)) => {
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "authenticate the client one way only: Basic or client_secret, not both",
                ));
            }
            if body_id.is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_client(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            Ok(Presented {
                client_id: id,
                secret: Some(secret),
                assertion: None,
            })
        }
        None => match body_id {
            Some(id) => Ok(Presented {
                client_id: id.to_owned(),
                secret: body_secret.map(str::to_owned),
                assertion: None,
            }),
            None => Err(OAuthError::invalid_client(
                "client authentication is required",
            )),
        },
    }
}

/// A `private_key_jwt` client: `client_assertion_type` and
/// `client_assertion`, and no other credentials. The client is the one
/// `client_id` names, else the assertion's `iss` (read before it is
/// verified, to know whose keys verify it).
fn presented_assertion(
    headers: &HeaderMap,
    body_id: Option<&str>,
    body_secret: Option<&str>,
    assertion_type: Option<&str>,
    assertion: Option<&str>,
) -> Result<Presented, OAuthError> {
    if assertion_type != Some(client_assertion::ASSERTION_TYPE) {
        return Err(OAuthError::invalid_client(
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ));
    }
    let Some(assertion) = assertion else {
        return Err(OAuthError::invalid_request(
            "client_assertion is required with client_assertion_type",
        ));
    };
    if body_secret.is_some() || basic_credentials(headers)?.is_some() {
        return Err(OAuthError::invalid_request(
            "authenticate the client one way only: a client assertion, Basic or client_secret",
        ));
    }
    let issuer = client_assertion::parse(assertion)?
        .issuer()
        .map(str::to_owned);
    let client_id = match (body_id, issuer) {
        (Some(id), Some(iss)) if id != iss => {
            return Err(OAuthError::invalid_client(
                "client_id differs from the client assertion's iss",
            ));
        }
        (Some(id), _) => id.to_owned(),
        (None, Some(iss)) => iss,
        (None, None) => {
            return Err(OAuthError::invalid_client(
                "client assertion: iss and sub must both be the client_id",
            ));
        }
    };
    Ok(Presented {
        client_id,
        secret: None,
        assertion: Some(assertion.to_owned()),
    })
}

/// Whether `parsed`, a JWS from `client` (a client assertion, a request
/// object), is signed by one of the client's registered keys: inline, or
/// this node's copy of its JWK Set URL, fetched again once for a key the
/// copy lacks. `Err` says why not.
pub async fn signed_by_client(
    state: &AppState,
    client: &Client,
    parsed: &client_assertion::Parsed,
) -> Result<(), String> {
    use crate::services::jwks::{self, Want};
    client_assertion::jku_allowed(parsed, client.jwks_uri.as_deref())?;
    let key = match (&client.jwks, &client.jwks_uri) {
        (Some(inline), _) => {
            let set: serde_json::Value = serde_json::from_str(inline)
                .map_err(|_| "the registered JWK Set is not JSON".to_owned())?;
            client_assertion::key_of(parsed, &set)?.clone()
        }
        (None, Some(url)) => {
            let set = jwks::jwk_set(state, url, Want::Fresh).await?;
            match client_assertion::key_of(parsed, &set) {
                Ok(key) => key.clone(),
                // Keys rotate: a kid the copy lacks sends for the set again.
                Err(_) => {
                    let set = jwks::jwk_set(state, url, Want::Refetched).await?;
                    client_assertion::key_of(parsed, &set)?.clone()
                }
            }
        }
        (None, None) => return Err("the client registered no keys".to_owned()),
    };
    Ok(client_assertion::signature_holds(parsed, &key)?)
}

/// Whether the signed assertion `jwt` authenticates `client` at `now`, as
/// `core::client_assertion` checks it, with the client's registered keys
/// ([`signed_by_client`]); its `jti` is then recorded, so that no node
/// accepts it again.
async fn assertion_holds(
    state: &AppState,
    client: &Client,
    jwt: &str,
    now: i64,
) -> Result<Result<(), OAuthError>, StoreError> {
    let refused = |why: String| OAuthError::invalid_client(format!("client assertion: {why}"));
    let checked = async {
        let parsed = client_assertion::parse(jwt)?;
        if !client.uses_assertions() {
            return Err(OAuthError::invalid_client(
                "this client authenticates with its secret, not a client assertion",
            ));
        }
        signed_by_client(state, client, &parsed)
            .await
            .map_err(refused)?;
        let audiences = audiences(state);
        let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
        client_assertion::check_claims(&parsed, &client.id, &audiences, now)
    };
    let accepted = match checked.await {
        Ok(accepted) => accepted,
        Err(e) => return Ok(Err(e)),
    };
    if !state
        .store
        .use_client_assertion(&client.id, &accepted.jti, accepted.expires_at)
        .await?
    {
        return Ok(Err(refused("its jti was used before".into())));
    }
    Ok(Ok(()))
}

/// What a client assertion's `aud` may name: the token endpoint (first, the
/// one refusals cite), the issuer (RFC 7523 §3), and the pushed
/// authorization request endpoint, where assertions also authenticate
/// (RFC 9126 §2).
fn audiences(state: &AppState) -> [String; 3] {
    [
        format!("{}/oauth/token", state.issuer),
        state.issuer.to_string(),
        format!("{}/oauth/par", state.issuer),
    ]
}

/// Every endpoint where an app acts authenticates it here, so this is where
/// a suspended app is stopped: it proved who it is, and is told why it may
/// do nothing (RFC 6749 §5.2 `invalid_client`).
fn not_suspended(client: &Client) -> Result<(), Refusal> {
    match client.suspended_at {
        None => Ok(()),
        Some(_) => Err(Refusal::of(
            Some(client.id.clone()),
            true,
            OAuthError::invalid_client("the client is suspended by the platform's operators"),
        )),
    }
}

fn unless_suspended(client: Client) -> Result<Client, Refusal> {
    not_suspended(&client).map(|()| client)
}

/// Why a client was not authenticated, and who it claimed to be.
struct Refusal {
    client_id: Option<String>,
    /// Whether `client_id` names a registered client.
    registered: bool,
    error: OAuthError,
}

impl Refusal {
    fn of(client_id: Option<String>, registered: bool, error: OAuthError) -> Self {
        Self {
            client_id,
            registered,
            error,
        }
    }
}

impl From<OAuthError> for Refusal {
    fn from(error: OAuthError) -> Self {
        Self::of(None, false, error)
    }
}

/// The longest presented client id the audit trail keeps of an unknown
/// client: enough to recognise it, too little to fill the log.
const PRESENTED_ID_KEPT: usize = 64;

/// Writes the failed authentication to the audit trail (the client id
/// presented and the address, never the secret) and answers the refusal.
/// A malformed request (`invalid_request`) is answered, not audited: it
/// authenticated nobody. If the event cannot be written the request fails
/// closed (503), as every storage failure does.
async fn refuse(state: &AppState, ip: &ClientIp, refusal: Refusal) -> JsonError {
    if let (true, Some(id)) = (refusal.registered, &refusal.client_id) {
        note_client(id);
    }
    if refusal.error.code != ErrorCode::InvalidClient {
        return JsonError(refusal.error);
    }
    // Counted against the client id presented, registered or not (a
    // guesser learns nothing from being stopped); at the limit it is
    // refused for a while on every node.
    if let Some(id) = &refusal.client_id
        && let Err(e) = throttle::client_failed(state, id, ip.as_deref()).await
    {
        return e.into();
    }
    let presented = refusal
        .client_id
        .as_deref()
        .map(|id| id.chars().take(PRESENTED_ID_KEPT).collect::<String>());
    let mut event = Event::new(EventKind::ClientAuthFailed)
        .failed()
        .ip(ip.as_deref())
        .data(serde_json::json!({
            "reason": refusal.error.description,
            "registered": refusal.registered,
            "presented_client_id": presented,
        }));
    if refusal.registered
        && let Some(id) = &refusal.client_id
    {
        event = event.client(id);
    }
    match state.store.record_event(state.now(), &event).await {
        Ok(_) => JsonError(refusal.error),
        Err(e) => e.into(),
    }
}

/// A client id refused for a while after too many failures: 429, before
/// anything presented is looked at (no database read: this node's copy).
fn unless_blocked(state: &AppState, client_id: &str) -> Result<(), Refusal> {
    match throttle::client_blocked(state, client_id) {
        None => Ok(()),
        Some(until) => Err(OAuthError::too_many_requests(
            until - state.now(),
            "too many failed requests for this client; wait, then try again",
        )
        .into()),
    }
}

/// Writes to the audit trail that the authenticated client `client_id`
/// asked for `resource` (`user`, `integration`, `practice`, `token`)
/// `subject`, which belongs to `owner` (another partner, or none), and was
/// refused.
pub async fn record_refused_access(
    state: &AppState,
    ip: &ClientIp,
    client_id: &str,
    resource: &str,
    subject: Option<&str>,
    owner: Option<&str>,
) -> Result<(), StoreError> {
    let mut event = Event::new(EventKind::AccessRefused)
        .failed()
        .client(client_id)
        .ip(ip.as_deref())
        .data(serde_json::json!({ "resource": resource, "owner_client_id": owner }));
    if let Some(subject) = subject {
        event = event.subject(subject);
    }
    state.store.record_event(state.now(), &event).await?;
    Ok(())
}

/// Authenticates a partner calling the integration APIs: HTTP Basic with its
/// client id and secret, or `Authorization: Bearer <client_secret>` (Hint's
/// partner-level key). Only confidential clients have a secret to present.
/// A failure is audited.
pub async fn authenticate_partner(
    state: &AppState,
    headers: &HeaderMap,
    ip: &ClientIp,
) -> Result<Client, JsonError> {
    match partner(state, headers).await? {
        Ok(client) => {
            note_client(&client.id);
            Ok(client)
        }
        Err(refusal) => Err(refuse(state, ip, refusal).await),
    }
}

async fn partner(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Result<Client, Refusal>, StoreError> {
    let failed = || OAuthError::invalid_client("partner authentication failed");
    let bearer = crate::http::extract::bearer_token(headers).map(str::to_owned);
    if let Some(secret) = bearer {
        let found = state
            .store
            .client_by_secret_digest(&healthgate_core::secret::digest(&secret))
            .await?;
        return Ok(match found {
            Some(client) if client.secret_matches(&secret, state.now()) => unless_suspended(client),
            _ => Err(failed().into()),
        });
    }
    let (id, secret) = match basic_credentials(headers) {
        Ok(Some(credentials)) => credentials,
        Ok(None) => {
            return Ok(Err(OAuthError::invalid_client(
                "authenticate with HTTP Basic (client id and secret) or Authorization: Bearer <client secret>",
            )
            .into()));
        }
        Err(e) => return Ok(Err(e.into())),
    };
    if let Err(blocked) = unless_blocked(state, &id) {
        return Ok(Err(blocked));
    }
    Ok(match state.store.client(&id).await? {
        Some(client) if client.secret_matches(&secret, state.now()) => unless_suspended(client),
        found => Err(Refusal::of(Some(id), found.is_some(), failed())),
    })
}

/// A client authenticated for a request: the record it was authenticated
/// against and that record's version stamp.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub client: Arc<Client>,
    pub version: i64,
    /// Whether the record was this node's copy ([`authenticate_cached`]):
    /// then the request confirms the stamp before it answers.
    pub cached: bool,
}

impl std::ops::Deref for Authenticated {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Authenticates the client of a token, introspection or revocation
/// request against its record as the database has it now. Every failure is
/// `invalid_client` (401) without saying whether the client exists, and is
/// audited; a suspended client that authenticates is told it is suspended.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<Authenticated, JsonError> {
    authenticate_from(state, headers, params, ip, false).await
}

/// As [`authenticate`], but a client this node has read before is
/// authenticated against its copy, with no read. Only a success comes from
/// the copy (a refusal is always decided on the record read again), and the
/// caller must confirm the stamp within the request, before it answers or
/// commits: a grant's write claims it (`Claim::Client`), introspection
/// reads it with the token, anything else asks `Store::client_is`; when it
/// changed, the request starts again with [`authenticate`].
pub async fn authenticate_cached(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<Authenticated, JsonError> {
    authenticate_from(state, headers, params, ip, true).await
}

/// Whether `client` was authenticated against its record as it is now:
/// read for the request, or a copy whose stamp is still the database's.
pub async fn confirmed(state: &AppState, client: &Authenticated) -> Result<bool, StoreError> {
    Ok(!client.cached || state.store.client_is(&client.id, client.version).await?)
}

/// Authenticates the client again from its record as it is now, after the
/// copy `stale` was found out of date.
pub async fn again(
    state: &AppState,
    stale: &Authenticated,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
) -> Result<Authenticated, JsonError> {
    state.known_clients.forget(&stale.id);
    authenticate(state, headers, params, ip).await
}

async fn authenticate_from(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: &ClientIp,
    cached: bool,
) -> Result<Authenticated, JsonError> {
    match client(state, headers, params, cached).await? {
        Ok(client) => {
            note_client(&client.id);
            Ok(client)
        }
        Err(refusal) => Err(refuse(state, ip, refusal).await),
    }
}

/// Whether `client` accepts what was presented: the secret of a
/// confidential client, nothing for a public one; and it is not suspended.
fn accepts(client: &Client, p: &Presented, now: i64) -> Result<(), Refusal> {
    let matches = match (&p.secret, client.is_public()) {
        // An app that registered keys proves itself with them only.
        (Some(secret), false) => !client.uses_assertions() && client.secret_matches(secret, now),
        (None, true) => true,
        _ => false,
    };
    if !matches {
        return Err(Refusal::of(
            Some(client.id.clone()),
            true,
            OAuthError::invalid_client("client authentication failed"),
        ));
    }
    not_suspended(client)
}

async fn client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    cached: bool,
) -> Result<Result<Authenticated, Refusal>, StoreError> {
    let p = match presented(headers, params) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.into())),
    };
    if let Err(blocked) = unless_blocked(state, &p.client_id) {
        return Ok(Err(blocked));
    }
    let now = state.now();
    if cached
        && p.assertion.is_none()
        && let Some((client, version)) = state.known_clients.get(&p.client_id)
        && accepts(&client, &p, now).is_ok()
    {
        return Ok(Ok(Authenticated {
            client,
            version,
            cached: true,
        }));
    }
    let Some((client, version)) = state.store.client_with_version(&p.client_id).await? else {
        state.known_clients.forget(&p.client_id);
        return Ok(Err(Refusal::of(
            Some(p.client_id),
            false,
            OAuthError::invalid_client("client authentication failed"),
        )));
    };
    let client = Arc::new(client);
    state.known_clients.put(client.clone(), version);
    if let Some(jwt) = &p.assertion {
        let authenticated = match assertion_holds(state, &client, jwt, now).await? {
            Ok(()) => not_suspended(&client),
            Err(e) => Err(Refusal::of(Some(client.id.clone()), true, e)),
        };
        return Ok(authenticated.map(|()| Authenticated {
            client,
            version,
            cached: false,
        }));
    }
    Ok(accepts(&client, &p, now).map(|()| Authenticated {
        client,
        version,
        cached: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(id: &str, secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        h
    }

    #[test]
    fn basic_with_matching_body_client_id_is_fine() {
        // HealthTap sends Basic and repeats client_id in the body.
        let params = Params::from_form(b"client_id=app-1").unwrap();
        let p = presented(&basic("app-1", "s3cret"), &params).unwrap();
        assert_eq!(
            p,
            Presented {
                client_id: "app-1".into(),
                secret: Some("s3cret".into()),
                assertion: None,
            }
        );
    }

    #[test]
    fn two_methods_or_mismatched_ids_are_refused() {
        let both = Params::from_form(b"client_id=app-1&client_secret=x").unwrap();
        assert!(presented(&basic("app-1", "s"), &both).is_err());
        let other = Params::from_form(b"client_id=app-2").unwrap();
        assert!(presented(&basic("app-1", "s"), &other).is_err());
        assert!(presented(&HeaderMap::new(), &Params::default()).is_err());
    }

    #[test]
    fn basic_parts_are_form_decoded() {
        let p = presented(&basic("app%3A1", "a%2Bb+c"), &Params::default()).unwrap();
        assert_eq!(p.client_id, "app:1");
        assert_eq!(p.secret.as_deref(), Some("a+b c"));
    }

    #[test]
    fn post_credentials() {
        let params = Params::from_form(b"client_id=app-1&client_secret=s").unwrap();
        let p = presented(&HeaderMap::new(), &params).unwrap();
        assert_eq!(p.secret.as_deref(), Some("s"));
    }
}
