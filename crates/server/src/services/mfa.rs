//! Second factors as the pages and the CLI use them (the rules are in
//! `healthgate_core::mfa`, the one-time use in the store):
//!
//! - who must have one (the `mfa` policy, operators, roles);
//! - an authenticator app: its secret sealed with a key derived from the
//!   instance key (AES-256-GCM), confirmed by a first code before it counts;
//! - checking what a person typed at sign-in: a TOTP code (each step once)
//!   or a recovery code (each once).
//!
//! An operator's reset is `admin::reset_mfa`.

use healthgate_core::jose;
use healthgate_core::mfa::{
    self, FactorKind, Method, MfaRequirement, SecondFactorCode, TotpSecret,
};
use healthgate_core::recovery::Notice;
use healthgate_core::secret;
use healthgate_core::user::User;
use healthgate_store::{Actor, Factor, StoreError};

use crate::services::secrets::instance_key;
use crate::state::AppState;

/// Why a second factor could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sealed secret did not open: the instance key changed, or the row
    /// was tampered with.
    #[error("a stored second factor could not be read: {0}")]
    Sealed(String),
    /// The blocking thread checking a code did not finish (the runtime is
    /// shutting down).
    #[error("the second factor check did not finish: {0}")]
    Interrupted(String),
}

async fn sealing_key(state: &AppState) -> Result<[u8; 32], StoreError> {
    let instance = instance_key(&state.store, &state.settings).await?;
    Ok(jose::derive_key(&instance, "healthgate totp sealing"))
}

/// Whether `user` must have a second factor, and why.
pub async fn requirement(
    state: &AppState,
    user: &User,
) -> Result<Option<MfaRequirement>, StoreError> {
    let settings = &state.settings;
    let mut roles = Vec::new();
    if settings.roles.values().any(|r| r.require_mfa) {
        for (_, role) in state.store.memberships(&user.id).await? {
            if settings.roles.get(&role).is_some_and(|r| r.require_mfa) && !roles.contains(&role) {
                roles.push(role);
            }
        }
    }
    Ok(mfa::requirement(
        settings.mfa,
        settings.operators_require_mfa,
        user.operator,
        &roles,
    ))
}

/// Whether `user` must enrol before anything else: they must have a
/// second factor and have none.
pub async fn must_enrol(state: &AppState, user: &User) -> Result<bool, StoreError> {
    Ok(requirement(state, user).await?.is_some()
        && !state.store.has_second_factor(&user.id).await?)
}

/// An authenticator app being set up: its pending factor and secret.
pub struct TotpEnrolment {
    pub factor_id: String,
    pub secret: TotpSecret,
}

/// Starts setting up an authenticator app for `user`: a fresh secret,
/// kept sealed as a pending factor until a code from the app confirms it.
pub async fn begin_totp(
    state: &AppState,
    user: &User,
    label: &str,
) -> Result<TotpEnrolment, MfaError> {
    let secret = TotpSecret::generate();
    let sealed = jose::seal(&sealing_key(state).await?, secret.bytes())
        .map_err(|e| MfaError::Sealed(e.to_string()))?;
    let factor = Factor::pending(&user.id, FactorKind::Totp, label, sealed, None, state.now());
    state.store.add_pending_factor(&factor).await?;
    Ok(TotpEnrolment {
        factor_id: factor.id,
        secret,
    })
}

/// The secret of a stored TOTP factor.
async fn opened(state: &AppState, factor: &Factor) -> Result<TotpSecret, MfaError> {
    jose::open(&sealing_key(state).await?, &factor.secret)
        .map(TotpSecret::from_bytes)
        .map_err(|e| MfaError::Sealed(e.to_string()))
}

/// The pending authenticator app `factor_id` of `user`, with its secret
/// (to show again when a confirming code was wrong).
pub async fn pending_totp(
    state: &AppState,
    user: &User,
    factor_id: &str,
) -> Result<Option<(Factor, TotpSecret)>, MfaError> {
    let Some(factor) = state
        .store
        .factors_of_user(&user.id)
        .await?
        .into_iter()
        .find(|f| f.id == factor_id && f.kind == FactorKind::Totp && f.confirmed_at.is_none())
    else {
        return Ok(None);
    };
    let secret = opened(state, &factor).await?;
    Ok(Some((factor, secret)))
}

/// What confirming a factor gave.
pub enum Confirmed {
    /// The code was not right (or no such pending factor).
    No,
    /// Confirmed; with the recovery codes to show once when this was the
    /// person's first factor.
    Yes(Option<Vec<String>>),
}

/// Confirms a pending authenticator app (`factor`, as [`pending_totp`]
/// found it with its `secret`) with a code from it. A person's first
/// factor comes with their recovery codes.
pub async fn confirm_totp(
    state: &AppState,
    user: &User,
    (factor, secret): (&Factor, &TotpSecret),
    code: &str,
    actor: Actor<'_>,
) -> Result<Confirmed, MfaError> {
    let factor_id = factor.id.as_str();
    let now = state.now();
    let Some(step) = secret.matching_step(code, now) else {
        return Ok(Confirmed::No);
    };
    confirm(state, user, factor_id, Some(step), actor).await
}

/// Confirms a pending factor of `user`, giving them recovery codes if they
/// had no factor before.
pub async fn confirm(
    state: &AppState,
    user: &User,
    factor_id: &str,
    step: Option<i64>,
    actor: Actor<'_>,
) -> Result<Confirmed, MfaError> {
    let first = !state.store.has_second_factor(&user.id).await?;
    let codes = first.then(mfa::recovery_codes);
    let digests: Option<Vec<String>> = codes
        .as_ref()
        .map(|c| c.iter().map(|m| m.digest.clone()).collect());
    let done = state
        .store
        .confirm_factor(
            &user.id,
            factor_id,
            step,
            digests.as_deref(),
            actor,
            state.now(),
        )
        .await?;
    if !done {
        return Ok(Confirmed::No);
    }
    // Told by email (to a verified address, with `[smtp]`): a factor the
    // person did not add is a sign someone else holds their password.
    crate::services::mail::security_notice_or_log(state, user, Notice::FactorAdded).await;
    Ok(Confirmed::Yes(
        codes.map(|c| c.into_iter().map(|m| m.value).collect()),
    ))
}

/// A fresh set of recovery codes for `user`, shown once.
pub async fn new_recovery_codes(
    state: &AppState,
    user: &User,
    actor: Actor<'_>,
) -> Result<Vec<String>, StoreError> {
    let codes = mfa::recovery_codes();
    let digests: Vec<String> = codes.iter().map(|m| m.digest.clone()).collect();
    state
        .store
        .replace_recovery_codes(&user.id, &digests, actor, state.now())
        .await?;
    crate::services::mail::security_notice_or_log(state, user, Notice::RecoveryCodesRenewed).await;
    Ok(codes.into_iter().map(|m| m.value).collect())
}

/// How a typed second factor was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Right: the method it proves.
    Accepted(Method),
    /// A right TOTP code whose step was used already (a replay, or typed
    /// twice): nothing signs in with it again.
    Replayed,
    /// Wrong.
    Refused,
}

/// Checks what `user` typed as a second factor: a TOTP code of one of
/// their confirmed authenticator apps (each step once), or one of their
/// recovery codes (each once).
pub async fn check_code(
    state: &AppState,
    user: &User,
    typed: &str,
    ip: Option<&str>,
) -> Result<Checked, MfaError> {
    let now = state.now();
    match SecondFactorCode::parse(typed) {
        None => Ok(Checked::Refused),
        Some(SecondFactorCode::Recovery(code)) => Ok(
            match state
                .store
                .use_recovery_code(&user.id, &secret::digest(&code), ip, now)
                .await?
            {
                Some(_) => Checked::Accepted(Method::Otp),
                None => Checked::Refused,
            },
        ),
        Some(SecondFactorCode::Totp(code)) => {
            let mut apps = Vec::new();
            for factor in state.store.factors_of_user(&user.id).await? {
                if factor.kind == FactorKind::Totp && factor.confirmed_at.is_some() {
                    let secret = opened(state, &factor).await?;
                    apps.push((factor.id, secret));
                }
            }
            // The codes are computed on a blocking thread, as password
            // checks are: each step of each app whatever matches, so the
            // time says nothing of which did.
            let matched: Vec<(String, i64)> = tokio::task::spawn_blocking(move || {
                apps.into_iter()
                    .filter_map(|(id, secret)| secret.matching_step(&code, now).map(|s| (id, s)))
                    .collect()
            })
            .await
            .map_err(|e| MfaError::Interrupted(e.to_string()))?;
            let mut replayed = false;
            for (factor_id, step) in matched {
                if state.store.use_totp_step(&factor_id, step, now).await? {
                    return Ok(Checked::Accepted(Method::Otp));
                }
                replayed = true;
            }
            Ok(if replayed {
                Checked::Replayed
            } else {
                Checked::Refused
            })
        }
    }
}
