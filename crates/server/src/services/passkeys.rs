//! Passkeys (WebAuthn) as the pages use them: setting one up, giving one
//! as a second factor, and, where `passkey_sign_in` allows it, signing in
//! with one alone. `webauthn-rs` checks the ceremonies; this keeps their
//! state in the session row (`sessions.ceremony`, taken once, so any node
//! finishes what another began and a finish cannot be replayed) and the
//! credentials as `mfa_factors` rows of kind `passkey`.
//!
//! The relying party is the issuer: its host is the RP id, its origin the
//! only origin accepted, the platform's name the name people see.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use healthgate_core::mfa::{FactorKind, Method};
use healthgate_core::secret;
use healthgate_core::user::User;
use healthgate_store::{Actor, Factor, Session, StoreError};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn,
    WebauthnBuilder,
};

use crate::services::mfa::{self, Confirmed, MfaError};
use crate::state::AppState;

/// How long a ceremony may take, from the options to the finish (the
/// browser's own timeout is shorter).
pub const CEREMONY_TTL: i64 = 300;

/// The longest credential (JSON) a browser may send back.
pub const MAX_CREDENTIAL: usize = 16 * 1024;

/// Why a passkey could not be set up or used: each says so in words a
/// person reads.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No ceremony waits in this session: none began, it was finished
    /// already (a replay), it took too long, or another began since.
    #[error("no passkey ceremony waits in this session")]
    NoCeremony,
    /// The browser sent nothing usable (the person cancelled, or the
    /// script did not run).
    #[error("no credential was sent")]
    Nothing,
    /// `webauthn-rs` refused the credential or the assertion.
    #[error("the passkey did not verify: {0}")]
    Unverified(String),
    /// The assertion names a passkey that is not (or no longer) registered.
    #[error("unknown passkey")]
    Unknown,
    /// The passkey is registered already.
    #[error("passkey already registered")]
    Registered,
    /// This server cannot be a WebAuthn relying party: its issuer names
    /// no domain (an IP address), and browsers take passkeys for domains
    /// only.
    #[error("the issuer names no domain: {0}")]
    Unavailable(String),
}

impl Refused {
    /// The sentence a person reads.
    pub fn in_words(&self) -> &'static str {
        match self {
            Self::NoCeremony => {
                "That passkey request has ended (it was used already, took too long, or another began since). Try again."
            }
            Self::Nothing => {
                "No passkey was given: the request was cancelled or timed out, or this browser cannot use passkeys. Try again."
            }
            Self::Unverified(_) | Self::Unknown => {
                "That passkey could not be verified. Try again, or use another second factor."
            }
            Self::Registered => "That passkey is set up already.",
            Self::Unavailable(_) => {
                "Passkeys cannot be used on this server: it is not reached by a domain name. Ask an administrator of this platform."
            }
        }
    }
}

/// What could go wrong: a refusal to say to the person, or a fault.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Mfa(#[from] MfaError),
}

impl From<StoreError> for PasskeyError {
    fn from(e: StoreError) -> Self {
        Self::Mfa(MfaError::Store(e))
    }
}

/// A ceremony under way, as kept in the session row.
#[derive(Serialize, Deserialize)]
#[serde(tag = "ceremony", rename_all = "snake_case")]
enum Ceremony {
    /// Setting up a passkey named `label` for `user_id`.
    Register {
        user_id: String,
        label: String,
        at: i64,
        state: PasskeyRegistration,
    },
    /// Giving a passkey of `user_id` as a second factor.
    SecondFactor {
        user_id: String,
        at: i64,
        state: PasskeyAuthentication,
    },
    /// Signing in with a passkey alone: whose it is, the passkey says.
    SignIn {
        at: i64,
        state: DiscoverableAuthentication,
    },
}

/// Runs a WebAuthn verification (signature checks) on a blocking thread,
/// as password checks are, so a burst of sign-ins never stalls the async
/// runtime.
async fn verified<T: Send + 'static>(
    check: impl FnOnce() -> Result<T, webauthn_rs::prelude::WebauthnError> + Send + 'static,
) -> Result<T, Refused> {
    tokio::task::spawn_blocking(check)
        .await
        .map_err(|e| Refused::Unverified(format!("the check did not finish: {e}")))?
        .map_err(|e| Refused::Unverified(e.to_string()))
}

/// The relying party: this server as its issuer names it.
fn relying_party(state: &AppState) -> Result<Webauthn, Refused> {
    let origin = Url::parse(&state.issuer.origin())
        .map_err(|e| Refused::Unavailable(format!("the issuer's origin is not a URL: {e}")))?;
    WebauthnBuilder::new(state.issuer.host(), &origin)
        .and_then(|b| b.rp_name(&state.settings.platform_name).build())
        .map_err(|e| Refused::Unavailable(format!("{}: {e}", state.issuer.host())))
}

/// The user handle a person's passkeys carry: derived from their id, so
/// nothing more is stored, and saying nothing of the id itself.
pub fn user_handle(user_id: &str) -> Uuid {
    let digest = secret::digest(&format!("healthgate passkey user handle {user_id}"));
    // The digest is SHA-256 in hex: its first 16 bytes.
    let mut bytes = [0u8; 16];
    for (b, pair) in bytes.iter_mut().zip(digest.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).unwrap_or("00");
        *b = u8::from_str_radix(text, 16).unwrap_or(0);
    }
    Uuid::from_bytes(bytes)
}

/// A credential id as stored (`mfa_factors.credential_id`).
fn credential_id(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn passkey_of(factor: &Factor) -> Result<Passkey, MfaError> {
    serde_json::from_str(&factor.secret)
        .map_err(|e| MfaError::Sealed(format!("a stored passkey is not readable: {e}")))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, MfaError> {
    serde_json::to_string(value).map_err(|e| MfaError::Sealed(e.to_string()))
}

/// The confirmed passkeys of `user_id`, with their factors.
async fn passkeys_of(state: &AppState, user_id: &str) -> Result<Vec<(Factor, Passkey)>, MfaError> {
    let mut found = Vec::new();
    for f in state.store.factors_of_user(user_id).await? {
        if f.kind == FactorKind::Passkey && f.confirmed_at.is_some() {
            let p = passkey_of(&f)?;
            found.push((f, p));
        }
    }
    Ok(found)
}

/// Keeps `ceremony` in the session and returns the options for the browser.
async fn keep<T: Serialize>(
    state: &AppState,
    session: &Session,
    ceremony: &Ceremony,
    options: &T,
) -> Result<serde_json::Value, MfaError> {
    state
        .store
        .set_ceremony(&session.id_digest, &to_json(ceremony)?)
        .await?;
    serde_json::to_value(options).map_err(|e| MfaError::Sealed(e.to_string()))
}

/// Takes the session's ceremony, once, if it is still young enough.
async fn take(state: &AppState, session: &Session) -> Result<Ceremony, PasskeyError> {
    let Some(text) = state.store.take_ceremony(&session.id_digest).await? else {
        return Err(Refused::NoCeremony.into());
    };
    let ceremony: Ceremony = serde_json::from_str(&text).map_err(|_| Refused::NoCeremony)?;
    let at = match &ceremony {
        Ceremony::Register { at, .. }
        | Ceremony::SecondFactor { at, .. }
        | Ceremony::SignIn { at, .. } => *at,
    };
    if at + CEREMONY_TTL < state.now() {
        return Err(Refused::NoCeremony.into());
    }
    Ok(ceremony)
}

/// Reads what the browser sent (the credential as JSON).
fn credential<T: for<'de> Deserialize<'de>>(sent: Option<&str>) -> Result<T, Refused> {
    let sent = sent.map(str::trim).filter(|s| !s.is_empty());
    let Some(sent) = sent else {
        return Err(Refused::Nothing);
    };
    if sent.len() > MAX_CREDENTIAL {
        return Err(Refused::Unverified("the credential is too long".into()));
    }
    serde_json::from_str(sent).map_err(|e| Refused::Unverified(e.to_string()))
}

/// Begins setting up a passkey named `label` for `user`: the options for
/// `navigator.credentials.create`. The person's passkeys are excluded (an
/// authenticator makes one per account); when passkeys may sign in alone,
/// the authenticator is asked to keep it (a discoverable credential).
pub async fn begin_registration(
    state: &AppState,
    user: &User,
    session: &Session,
    label: &str,
) -> Result<serde_json::Value, PasskeyError> {
    let rp = relying_party(state)?;
    let exclude: Vec<_> = passkeys_of(state, &user.id)
        .await?
        .iter()
        .map(|(_, p)| p.cred_id().clone())
        .collect();
    let shown = user.name.as_deref().unwrap_or(&user.username);
    let (options, registration) = rp
        .start_passkey_registration(
            user_handle(&user.id),
            &user.username,
            shown,
            (!exclude.is_empty()).then_some(exclude),
        )
        .map_err(|e| MfaError::Sealed(format!("a passkey registration could not begin: {e}")))?;
    let ceremony = Ceremony::Register {
        user_id: user.id.clone(),
        label: label.to_owned(),
        at: state.now(),
        state: registration,
    };
    let mut options = keep(state, session, &ceremony, &options).await?;
    if state.settings.passkey_sign_in
        && let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(serde_json::Value::as_object_mut)
    {
        selection.insert("residentKey".into(), "required".into());
        selection.insert("requireResidentKey".into(), true.into());
    }
    Ok(options)
}

/// Finishes setting up a passkey with the credential the browser made: it
/// is verified against the ceremony kept in the session (taken once),
/// stored, and confirmed at once (`mfa.enrolled`). A person's first factor
/// comes with recovery codes, as with an authenticator app.
pub async fn finish_registration(
    state: &AppState,
    user: &User,
    session: &Session,
    sent: Option<&str>,
    actor: Actor<'_>,
) -> Result<Confirmed, PasskeyError> {
    let ceremony = take(state, session).await?;
    let Ceremony::Register {
        user_id,
        label,
        state: registration,
        ..
    } = ceremony
    else {
        return Err(Refused::NoCeremony.into());
    };
    if user_id != user.id {
        return Err(Refused::NoCeremony.into());
    }
    let made: RegisterPublicKeyCredential = credential(sent)?;
    let rp = relying_party(state)?;
    let passkey = verified(move || rp.finish_passkey_registration(&made, &registration)).await?;
    let id = credential_id(passkey.cred_id());
    if state.store.passkey_by_credential(&id).await?.is_some() {
        return Err(Refused::Registered.into());
    }
    let factor = Factor::pending(
        &user.id,
        FactorKind::Passkey,
        &label,
        to_json(&passkey)?,
        Some(id),
        state.now(),
    );
    match state.store.add_pending_factor(&factor).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(Refused::Registered.into()),
        Err(e) => return Err(e.into()),
    }
    Ok(mfa::confirm(state, user, &factor.id, None, actor).await?)
}

/// The method a passkey proves (RFC 8176): `swk` for one that may be
/// copied to the person's other devices (backup eligible, a synced
/// passkey), `hwk` for one bound to its device.
fn method_of(result: &AuthenticationResult) -> Method {
    if result.backup_eligible() {
        Method::Swk
    } else {
        Method::Hwk
    }
}

/// Records a passkey's use: its counter and backup state move on.
async fn used(
    state: &AppState,
    factor: &Factor,
    mut passkey: Passkey,
    result: &AuthenticationResult,
) -> Result<(), PasskeyError> {
    passkey.update_credential(result);
    state
        .store
        .use_passkey(&factor.id, &to_json(&passkey)?, state.now())
        .await?;
    Ok(())
}

/// Begins a second step with a passkey of `user`: the options for
/// `navigator.credentials.get`, naming their passkeys. `None` when they
/// have none.
pub async fn begin_second_factor(
    state: &AppState,
    user: &User,
    session: &Session,
) -> Result<Option<serde_json::Value>, PasskeyError> {
    let keys: Vec<Passkey> = passkeys_of(state, &user.id)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if keys.is_empty() {
        return Ok(None);
    }
    let rp = relying_party(state)?;
    let (options, authentication) = rp
        .start_passkey_authentication(&keys)
        .map_err(|e| MfaError::Sealed(format!("a passkey request could not begin: {e}")))?;
    let ceremony = Ceremony::SecondFactor {
        user_id: user.id.clone(),
        at: state.now(),
        state: authentication,
    };
    Ok(Some(keep(state, session, &ceremony, &options).await?))
}

/// Finishes a second step with the assertion the browser sent: the method
/// it proves, once.
pub async fn finish_second_factor(
    state: &AppState,
    user: &User,
    session: &Session,
    sent: Option<&str>,
) -> Result<Method, PasskeyError> {
    let ceremony = take(state, session).await?;
    let Ceremony::SecondFactor {
        user_id,
        state: authentication,
        ..
    } = ceremony
    else {
        return Err(Refused::NoCeremony.into());
    };
    if user_id != user.id {
        return Err(Refused::NoCeremony.into());
    }
    let assertion: PublicKeyCredential = credential(sent)?;
    let rp = relying_party(state)?;
    let result =
        verified(move || rp.finish_passkey_authentication(&assertion, &authentication)).await?;
    let id = credential_id(result.cred_id());
    let Some((factor, passkey)) = passkeys_of(state, &user.id)
        .await?
        .into_iter()
        .find(|(f, _)| f.credential_id.as_deref() == Some(id.as_str()))
    else {
        return Err(Refused::Unknown.into());
    };
    used(state, &factor, passkey, &result).await?;
    Ok(method_of(&result))
}

/// Begins signing in with a passkey alone: options naming no credential
/// (the authenticator offers the ones it keeps for this site).
pub async fn begin_sign_in(
    state: &AppState,
    session: &Session,
) -> Result<serde_json::Value, PasskeyError> {
    let rp = relying_party(state)?;
    let (options, authentication) = rp
        .start_discoverable_authentication()
        .map_err(|e| MfaError::Sealed(format!("a passkey request could not begin: {e}")))?;
    let ceremony = Ceremony::SignIn {
        at: state.now(),
        state: authentication,
    };
    Ok(keep(state, session, &ceremony, &options).await?)
}

/// Whose passkey an assertion names, before it is verified: the passkey's
/// factor (`None` for one not registered here).
pub struct Claimed {
    pub factor: Factor,
    passkey: Passkey,
    assertion: PublicKeyCredential,
    authentication: DiscoverableAuthentication,
}

/// Reads a sign-in assertion and finds the passkey it names (and so the
/// person), taking the ceremony. It is not verified yet: the caller looks
/// at the person's throttle first, then calls [`verify_sign_in`].
pub async fn claimed_sign_in(
    state: &AppState,
    session: &Session,
    sent: Option<&str>,
) -> Result<Claimed, PasskeyError> {
    let Ceremony::SignIn {
        state: authentication,
        ..
    } = take(state, session).await?
    else {
        return Err(Refused::NoCeremony.into());
    };
    let assertion: PublicKeyCredential = credential(sent)?;
    let rp = relying_party(state)?;
    let (handle, raw_id) = rp
        .identify_discoverable_authentication(&assertion)
        .map_err(|e| Refused::Unverified(e.to_string()))?;
    let Some(factor) = state
        .store
        .passkey_by_credential(&credential_id(raw_id))
        .await?
    else {
        return Err(Refused::Unknown.into());
    };
    if user_handle(&factor.user_id) != handle {
        return Err(Refused::Unknown.into());
    }
    let passkey = passkey_of(&factor)?;
    Ok(Claimed {
        factor,
        passkey,
        assertion,
        authentication,
    })
}

/// Verifies a claimed sign-in: the method the passkey proves.
pub async fn verify_sign_in(state: &AppState, claimed: Claimed) -> Result<Method, PasskeyError> {
    let rp = relying_party(state)?;
    let Claimed {
        factor,
        passkey,
        assertion,
        authentication,
    } = claimed;
    let (result, passkey) = verified(move || {
        rp.finish_discoverable_authentication_v2(&assertion, authentication, &passkey)
            .map(|result| (result, passkey))
    })
    .await?;
    used(state, &factor, passkey, &result).await?;
    Ok(method_of(&result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_handle_is_stable_and_differs_between_people() {
        assert_eq!(user_handle("usr_a"), user_handle("usr_a"));
        assert_ne!(user_handle("usr_a"), user_handle("usr_b"));
    }

    #[test]
    fn nothing_sent_is_refused_readably() {
        assert!(matches!(
            credential::<PublicKeyCredential>(None),
            Err(Refused::Nothing)
        ));
        assert!(matches!(
            credential::<PublicKeyCredential>(Some("  ")),
            Err(Refused::Nothing)
        ));
        assert!(matches!(
            credential::<PublicKeyCredential>(Some("{\"id\":1}")),
            Err(Refused::Unverified(_))
        ));
    }
}
