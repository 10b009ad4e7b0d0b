//! Administrative operations: registering clients and users, rotating
//! secrets. The CLI calls these, and later the portal and admin console will,
//! so every rule about what may be registered is enforced in one place.

use healthgate_core::Clock;
use healthgate_core::client::{Client, ClientKind};
use healthgate_core::redirect::RedirectUri;
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret::{SecretKind, mint, new_id};
use healthgate_core::user::{User, UserType, validate_password, validate_username};
use healthgate_store::{Store, StoreError};

use crate::config::Settings;
use crate::passwords;

/// Why an administrative request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong; say so to the operator.
    #[error("{0}")]
    Invalid(String),
    #[error("no client with id {0:?}")]
    NoSuchClient(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] passwords::HashError),
}

/// A client registration request, as the seeds' registration forms ask it.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scope: String,
    pub public: bool,
    pub photo_url: Option<String>,
    pub user_types: Vec<UserType>,
}

/// Validates and registers a client. Returns it with its secret, which exists
/// only in this return value: the store keeps its digest.
pub async fn create_client(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
    req: NewClient,
) -> Result<(Client, Option<String>), AdminError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AdminError::Invalid(
            "the name must be 1 to 200 characters".into(),
        ));
    }
    if req.redirect_uris.is_empty() {
        return Err(AdminError::Invalid(
            "at least one redirect URI is required".into(),
        ));
    }
    let redirect_uris = req
        .redirect_uris
        .iter()
        .map(|u| RedirectUri::parse(u).map_err(|e| AdminError::Invalid(format!("{u}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let scopes = ScopeSet::parse(&req.scope).map_err(|e| AdminError::Invalid(e.to_string()))?;
    if scopes.is_empty() {
        return Err(AdminError::Invalid("at least one scope is required".into()));
    }
    let unknown: Vec<&str> = scopes
        .iter()
        .filter(|s| !settings.scopes.contains_key(*s))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = settings.scopes.keys().map(String::as_str).collect();
        return Err(AdminError::Invalid(format!(
            "unknown scope {}; this server knows: {}",
            unknown.join(" "),
            known.join(" ")
        )));
    }
    if let Some(photo) = &req.photo_url {
        let ok = url::Url::parse(photo).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
        if !ok {
            return Err(AdminError::Invalid(
                "the photo URL must be an http(s) URL".into(),
            ));
        }
    }
    let user_types = if req.user_types.is_empty() {
        UserType::ALL.to_vec()
    } else {
        req.user_types
    };
    let secret = (!req.public).then(|| mint(SecretKind::ClientSecret));
    let now = clock.now();
    let client = Client {
        id: new_id("app"),
        name: name.to_owned(),
        photo_url: req.photo_url,
        redirect_uris,
        allowed_scopes: scopes,
        user_types,
        kind: if req.public {
            ClientKind::Public
        } else {
            ClientKind::Confidential
        },
        secret_digest: secret.as_ref().map(|s| s.digest.clone()),
        description: None,
        connect_redirect_url: None,
        published: false,
        webhook_url: None,
        webhook_secret_version: 1,
        webhook_muted_at: None,
        created_at: now,
        updated_at: now,
    };
    store.insert_client(&client).await?;
    Ok((client, secret.map(|s| s.value)))
}

/// Gives a confidential client a new secret; the old one stops working at once.
pub async fn rotate_client_secret(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
) -> Result<String, AdminError> {
    let client = store
        .client(client_id)
        .await?
        .ok_or_else(|| AdminError::NoSuchClient(client_id.to_owned()))?;
    if client.is_public() {
        return Err(AdminError::Invalid(
            "a public client has no secret to rotate".into(),
        ));
    }
    let secret = mint(SecretKind::ClientSecret);
    let now = clock.now();
    store
        .set_client_secret(client_id, &secret.digest, now)
        .await?;
    Ok(secret.value)
}

/// Deletes a client with everything issued to it.
pub async fn delete_client(
    store: &Store,
    clock: &dyn Clock,
    client_id: &str,
) -> Result<(), AdminError> {
    if !store.delete_client(client_id, clock.now()).await? {
        return Err(AdminError::NoSuchClient(client_id.to_owned()));
    }
    Ok(())
}

/// A user registration request.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    /// Display name, e.g. "Dr. Jane Doe".
    pub name: Option<String>,
    pub password: Option<String>,
    pub email: Option<String>,
    pub user_type: UserType,
}

/// Validates and creates a user account.
pub async fn create_user(
    store: &Store,
    clock: &dyn Clock,
    req: NewUser,
) -> Result<User, AdminError> {
    validate_username(&req.username).map_err(|e| AdminError::Invalid(e.into()))?;
    if let Some(email) = &req.email
        && (email.len() > 254 || !email.contains('@') || email.chars().any(char::is_whitespace))
    {
        return Err(AdminError::Invalid(format!(
            "{email:?} is not an email address"
        )));
    }
    let password_hash = match req.password {
        Some(p) => {
            validate_password(&p).map_err(|e| AdminError::Invalid(e.into()))?;
            Some(passwords::hash(p).await?)
        }
        None => None,
    };
    let now = clock.now();
    let user = User {
        id: new_id("usr"),
        username: req.username,
        name: req.name,
        email: req.email,
        user_type: req.user_type,
        password_hash,
        created_at: now,
        locked_at: None,
    };
    store.insert_user(&user).await.map_err(|e| match e {
        StoreError::Conflict(_) => {
            AdminError::Invalid(format!("the username {:?} is taken", user.username))
        }
        other => other.into(),
    })?;
    Ok(user)
}
