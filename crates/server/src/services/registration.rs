//! Dynamic client registration (RFC 7591, 7592) for the endpoint and the
//! command line: initial access tokens, and a registration request's
//! metadata turned into the same registration `admin` makes from the
//! portal's form or the command line's flags, checked by the same rules.

use healthgate_core::client::Client;
use healthgate_core::error::OAuthError;
use healthgate_core::registration::{self, AuthMethod, Metadata};
use healthgate_core::secret::{SecretKind, mint, new_id};
use healthgate_core::{Clock, jose};
use healthgate_store::{Actor, RegistrationToken, Store};
use serde_json::{Value, json};

use crate::services::admin::{AdminError, ClientChanges, NewClient};

/// Issues an initial access token: the record kept, and the token, which
/// exists only in this return value. `owner` (a username) owns the apps
/// registered with it; `lifetime` seconds from now, or never expiring.
pub async fn issue_token(
    store: &Store,
    clock: &dyn Clock,
    label: Option<String>,
    owner: Option<&str>,
    lifetime: Option<i64>,
    actor: Actor<'_>,
) -> Result<(RegistrationToken, String), AdminError> {
    let owner_id = match owner {
        None => None,
        Some(username) => Some(
            store
                .user_by_username(username)
                .await?
                .ok_or_else(|| AdminError::Invalid(format!("no user named {username:?}")))?
                .id,
        ),
    };
    if lifetime.is_some_and(|l| l <= 0) {
        return Err(AdminError::Invalid(
            "--expires must be a positive number of seconds".into(),
        ));
    }
    let now = clock.now();
    let secret = mint(SecretKind::RegistrationToken);
    let token = RegistrationToken {
        id: new_id("rgt"),
        digest: secret.digest,
        label: label.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()),
        owner_id,
        created_at: now,
        expires_at: lifetime.map(|l| now + l),
        revoked_at: None,
    };
    store.insert_registration_token(&token, actor).await?;
    Ok((token, secret.value))
}

/// A registration request's metadata as a new registration, registered
/// with `registered_with` (the initial access token's id, or `open`) for
/// `owner`, holding the registration access token whose digest is given.
pub fn new_client(
    m: &Metadata,
    owner: Option<String>,
    registered_with: String,
    access_digest: String,
) -> Result<NewClient, OAuthError> {
    Ok(NewClient {
        name: client_name(m),
        redirect_uris: m.redirect_uris.clone(),
        scope: scope(m)?,
        public: m.auth_method == AuthMethod::None,
        owner_id: owner,
        require_dpop: m.dpop_bound_access_tokens,
        require_par: m.require_pushed_authorization_requests,
        jwks_uri: m.jwks_uri.clone(),
        jwks: m.jwks.clone(),
        id_token_alg: id_token_alg(m)?,
        registered_with: Some(registered_with),
        registration_access_digest: Some(access_digest),
        ..Default::default()
    })
}

/// A `PUT`'s metadata as the changes it makes (RFC 7592 §2.2: it replaces
/// the registration; what it leaves out is cleared or set back, but for
/// the ID token alg, which stays as it is).
pub fn changes(client: &Client, m: &Metadata, now: i64) -> Result<ClientChanges, OAuthError> {
    if m.client_id.as_deref() != Some(client.id.as_str()) {
        return Err(registration::invalid_metadata(
            "client_id must be the registration's client_id",
        ));
    }
    if let Some(secret) = &m.client_secret
        && !client.secret_matches(secret, now)
    {
        return Err(registration::invalid_metadata(
            "client_secret is not the client's secret",
        ));
    }
    let method = match client.token_endpoint_auth_method() {
        "none" => AuthMethod::None,
        "private_key_jwt" => AuthMethod::PrivateKeyJwt,
        _ => AuthMethod::ClientSecret,
    };
    if m.auth_method != method {
        return Err(registration::invalid_metadata(
            "token_endpoint_auth_method cannot change: register a new client",
        ));
    }
    Ok(ClientChanges {
        name: Some(client_name(m)),
        redirect_uris: Some(m.redirect_uris.clone()),
        scope: Some(scope(m)?),
        require_dpop: Some(m.dpop_bound_access_tokens),
        require_par: Some(m.require_pushed_authorization_requests),
        jwks_uri: Some(m.jwks_uri.clone()),
        jwks: Some(m.jwks.clone()),
        id_token_alg: id_token_alg(m)?,
        ..Default::default()
    })
}

fn client_name(m: &Metadata) -> String {
    m.client_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "Unnamed app".to_owned())
}

fn scope(m: &Metadata) -> Result<String, OAuthError> {
    m.scope
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            registration::invalid_metadata("scope is required: the scopes the client may ask for")
        })
}

fn id_token_alg(m: &Metadata) -> Result<Option<jose::Alg>, OAuthError> {
    m.id_token_signed_response_alg
        .as_deref()
        .map(|a| a.parse().map_err(registration::invalid_metadata))
        .transpose()
}

/// The RFC 7591 §3.2.2 error an admin refusal of registration metadata
/// is: a redirect URI's refusal is `invalid_redirect_uri`, any other
/// field's `invalid_client_metadata`, each saying what was wrong.
pub fn refusal(e: AdminError) -> Result<OAuthError, AdminError> {
    let refusals = e.into_field_refusals()?;
    let message = refusals
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Ok(if refusals.iter().any(|(f, _)| *f == "redirect_uris") {
        registration::invalid_redirect_uri(message)
    } else {
        registration::invalid_metadata(message)
    })
}

/// The client's registration as the endpoint answers it (RFC 7591
/// §3.2.1, RFC 7592 §3): what is registered now, and where to manage it.
pub fn metadata(issuer: &str, c: &Client) -> Value {
    let code_flow = !c.redirect_uris.is_empty();
    let mut grant_types = registration::grant_types_of(c.is_public());
    if !code_flow {
        grant_types.retain(|g| *g == "client_credentials");
    }
    let mut m = json!({
        "client_id": c.id,
        "client_id_issued_at": c.created_at,
        "client_name": c.name,
        "redirect_uris": c.redirect_uris.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "scope": c.allowed_scopes.to_string(),
        "token_endpoint_auth_method": c.token_endpoint_auth_method(),
        "grant_types": grant_types,
        "response_types": if code_flow { vec!["code"] } else { vec![] },
        "id_token_signed_response_alg": c.id_token_alg.as_str(),
        "dpop_bound_access_tokens": c.require_dpop,
        "require_pushed_authorization_requests": c.require_par,
        "registration_client_uri": format!("{issuer}/oauth/register/{}", c.id),
    });
    if let Some(uri) = &c.jwks_uri {
        m["jwks_uri"] = uri.as_str().into();
    }
    if let Some(set) = c
        .jwks
        .as_deref()
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
    {
        m["jwks"] = set;
    }
    m
}
