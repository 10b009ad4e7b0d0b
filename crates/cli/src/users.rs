//! `healthgate user …`: creating accounts, and everything the admin
//! console's users page does (search, lock, unlock, also from the lock
//! after failed sign-ins, password reset) plus showing and deleting one,
//! through the same `admin` and store functions and so with the same
//! events; the CLI is their actor (`Actor::system`).

use std::sync::Arc;

use clap::Subcommand;
use healthgate_core::Clock;
use healthgate_core::smart::PatientLink;
use healthgate_core::user::{User, UserType};
use healthgate_server::Settings;
use healthgate_server::services::admin::{self, AdminError, Creator, NewUser};
use healthgate_server::services::smart;
use healthgate_store::Actor;
use serde_json::json;

use crate::{Failure, open, print};

/// The longest search, as in the console.
const MAX_QUERY: usize = 200;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user account.
    Create {
        #[arg(long)]
        username: String,
        /// 8 to 1024 characters, any of them (spaces too), not one of the
        /// most common passwords.
        #[arg(long)]
        password: String,
        /// Display name, e.g. "Dr. Jane Doe".
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long = "type", default_value = "member", value_parser = parse_type)]
        user_type: UserType,
        /// Make the account one of the platform's operators (the admin
        /// console, `/admin`).
        #[arg(long)]
        operator: bool,
    },
    /// Make an account (id or username) one of the platform's operators,
    /// who may use the admin console; `--revoke` takes that away.
    Operator {
        user: String,
        #[arg(long)]
        revoke: bool,
    },
    /// List accounts by username; `--query` keeps those whose username,
    /// name or email contains it (any case).
    List {
        #[arg(long, short)]
        query: Option<String>,
        /// At most this many.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        limit: Option<i64>,
        /// Skip this many first.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        offset: i64,
    },
    /// Show an account (id or username) and the organizations it belongs to.
    Show { user: String },
    /// Lock an account (id or username): it cannot sign in, its sessions
    /// end, and its apps get no new tokens.
    Lock { user: String },
    /// Unlock an account (id or username): it can sign in again. Lifts an
    /// operator's lock and the lock its username is under after too many
    /// failed sign-ins.
    Unlock { user: String },
    /// Give an account (id or username) a random temporary password, shown
    /// once, and end every session of it.
    ResetPassword { user: String },
    /// Remove every second factor and recovery code of an account (id or
    /// username), for a person who lost their phone or key, and end every
    /// session of it. They sign in with their password alone next (and set
    /// up a factor again first where one is required).
    ResetMfa {
        user: String,
        /// Why (kept in the audit trail), e.g. how you checked it was them.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete an account (id or username) with its sessions, grants and
    /// tokens, memberships and consents.
    Delete { user: String },
    /// Change an account (id or username): who it is on the FHIR server.
    Update {
        user: String,
        /// SMART's `fhirUser`: the person's FHIR resource, such as
        /// `Practitioner/123`; empty clears it.
        #[arg(long, value_name = "REFERENCE")]
        fhir_user: Option<String>,
    },
    /// Link a patient record to an account (id or username): the person may
    /// pick it when a SMART app is launched on its own.
    LinkPatient {
        user: String,
        /// The patient's FHIR id.
        #[arg(long, value_name = "ID")]
        patient: String,
        /// How the picker names the patient.
        #[arg(long)]
        display: String,
    },
    /// Unlink a patient record from an account.
    UnlinkPatient {
        user: String,
        #[arg(long, value_name = "ID")]
        patient: String,
    },
}

fn parse_type(s: &str) -> Result<UserType, String> {
    s.parse()
        .map_err(|e: healthgate_core::user::UnknownUserType| e.to_string())
}

fn store_failure(e: healthgate_store::StoreError) -> Failure {
    anyhow::Error::from(e).into()
}

/// An account as `user list` and `user show` print it, with until when
/// its username is locked after failed sign-ins (if it is).
fn user_json(u: &User, sign_in_locked_until: Option<i64>) -> serde_json::Value {
    json!({
        "id": u.id,
        "username": u.username,
        "name": u.name,
        "email": u.email,
        "type": u.user_type.as_str(),
        "operator": u.operator,
        "locked": u.locked_at.is_some(),
        "locked_at": u.locked_at,
        "sign_in_locked_until": sign_in_locked_until,
        "password": password_state(u),
        "password_reset_at": u.password_reset_at,
        "provisioned_by": u.provisioned_by,
        "fhir_user": u.fhir_user,
        "created_at": u.created_at,
    })
}

/// Whether the account has a password, and whether it is a temporary one
/// an operator set: `set`, `temporary` or `none`.
fn password_state(u: &User) -> &'static str {
    match (&u.password_hash, u.password_is_temporary()) {
        (_, true) => "temporary",
        (Some(_), false) => "set",
        (None, false) => "none",
    }
}

/// An account on one line: id, username, type, then what stands out.
fn user_line(u: &User, sign_in_locked_until: Option<i64>) -> String {
    let mut line = format!("{}  {:<20} {:<6}", u.id, u.username, u.user_type.as_str());
    if let Some(name) = &u.name {
        line.push_str(&format!("  {name}"));
    }
    if let Some(email) = &u.email {
        line.push_str(&format!("  <{email}>"));
    }
    if u.locked_at.is_some() {
        line.push_str("  [locked]");
    }
    if let Some(until) = sign_in_locked_until {
        line.push_str(&format!("  [locked after failed sign-ins until {until}]"));
    }
    if u.password_is_temporary() {
        line.push_str("  [temporary password]");
    }
    if u.operator {
        line.push_str("  [operator]");
    }
    line
}

/// The account and who it is, for messages: `alice (usr-…)`.
fn named(u: &User) -> String {
    format!("{} ({})", u.username, u.id)
}

pub async fn user_command(
    settings: Settings,
    clock: Arc<dyn Clock>,
    cmd: UserCommand,
    as_json: bool,
) -> Result<(), Failure> {
    let state = open(settings, &clock).await?;
    let store = &state.store;
    let now = clock.now();
    match cmd {
        UserCommand::Create {
            username,
            password,
            name,
            email,
            user_type,
            operator,
        } => {
            let mut user = admin::create_user(
                store,
                clock.as_ref(),
                NewUser {
                    username,
                    name,
                    password: Some(password),
                    email,
                    user_type,
                },
                Creator::By(Actor::system()),
            )
            .await?;
            if operator {
                (user, _) =
                    admin::set_operator(store, clock.as_ref(), &user.id, true, Actor::system())
                        .await?;
            }
            print(
                as_json,
                &json!({"id": user.id, "username": user.username, "email": user.email, "type": user.user_type.as_str(), "operator": user.operator}),
                &format!(
                    "created user {} ({}, {}{})",
                    user.username,
                    user.id,
                    user.user_type,
                    if user.operator { ", operator" } else { "" }
                ),
            );
        }
        UserCommand::Operator { user, revoke } => {
            let (user, changed) =
                admin::set_operator(store, clock.as_ref(), &user, !revoke, Actor::system()).await?;
            let text = match (user.operator, changed) {
                (true, true) => format!("{} is now an operator", named(&user)),
                (true, false) => format!("{} was already an operator", named(&user)),
                (false, true) => format!("{} is no longer an operator", named(&user)),
                (false, false) => format!("{} was not an operator", named(&user)),
            };
            print(
                as_json,
                &json!({"id": user.id, "username": user.username, "operator": user.operator, "changed": changed}),
                &text,
            );
        }
        UserCommand::List {
            query,
            limit,
            offset,
        } => {
            let query = query.unwrap_or_default();
            if query.trim().chars().count() > MAX_QUERY {
                return Err(AdminError::Invalid(format!(
                    "search for at most {MAX_QUERY} characters"
                ))
                .into());
            }
            let (users, total) = store
                .search_users(&query, limit.unwrap_or(i64::MAX), offset)
                .await
                .map_err(store_failure)?;
            let locks = admin::sign_in_locks(store, clock.as_ref(), &users)
                .await
                .map_err(store_failure)?;
            let lock_of = |u: &User| locks.get(&u.id).copied();
            let mut text = users
                .iter()
                .map(|u| user_line(u, lock_of(u)))
                .collect::<Vec<_>>();
            if users.is_empty() {
                text.push(if total == 0 {
                    "no users".to_owned()
                } else {
                    format!("none here of {total} users")
                });
            } else if i64::try_from(users.len()).ok() != Some(total) {
                text.push(format!(
                    "({} to {} of {total})",
                    offset + 1,
                    offset + i64::try_from(users.len()).unwrap_or(0)
                ));
            }
            print(
                as_json,
                &json!(
                    users
                        .iter()
                        .map(|u| user_json(u, lock_of(u)))
                        .collect::<Vec<_>>()
                ),
                &text.join("\n"),
            );
        }
        UserCommand::Show { user } => {
            let user = admin::find_user(store, &user).await?;
            let memberships = store.memberships(&user.id).await.map_err(store_failure)?;
            let sign_in_lock =
                admin::sign_in_locks(store, clock.as_ref(), std::slice::from_ref(&user))
                    .await
                    .map_err(store_failure)?
                    .remove(&user.id);
            let mut value = user_json(&user, sign_in_lock);
            value["organizations"] = json!(
                memberships
                    .iter()
                    .map(|(o, role)| json!({"id": o.id, "name": o.name, "role": role}))
                    .collect::<Vec<_>>()
            );
            let mut text = format!(
                "id              {}\nusername        {}\nname            {}\nemail           {}\ntype            {}\nstatus          {}\npassword        {}\noperator        {}\nprovisioned_by  {}\ncreated_at      {}\norganizations:",
                user.id,
                user.username,
                user.name.as_deref().unwrap_or("-"),
                user.email.as_deref().unwrap_or("-"),
                user.user_type,
                match (user.locked_at, sign_in_lock) {
                    (Some(at), None) => format!("locked since {at}"),
                    (Some(at), Some(until)) =>
                        format!("locked since {at}, and after failed sign-ins until {until}"),
                    (None, Some(until)) => format!("locked after failed sign-ins until {until}"),
                    (None, None) => "active".to_owned(),
                },
                match (password_state(&user), user.password_reset_at) {
                    ("temporary", Some(at)) =>
                        format!("temporary since {at}: must be changed at the next sign-in"),
                    ("none", _) => "none (cannot sign in interactively)".to_owned(),
                    (state, _) => state.to_owned(),
                },
                user.operator,
                user.provisioned_by.as_deref().unwrap_or("-"),
                user.created_at,
            );
            for (o, role) in &memberships {
                text.push_str(&format!("\n  {role:<13} {} ({})", o.name, o.id));
            }
            // Second factors: what an operator asks about before a reset.
            let factors: Vec<_> = store
                .factors_of_user(&user.id)
                .await
                .map_err(store_failure)?
                .into_iter()
                .filter(|f| f.confirmed_at.is_some())
                .collect();
            let codes_left = if factors.is_empty() {
                0
            } else {
                store
                    .recovery_codes_left(&user.id)
                    .await
                    .map_err(store_failure)?
            };
            value["second_factors"] = json!(
                factors
                    .iter()
                    .map(|f| json!({
                        "id": f.id,
                        "kind": f.kind.as_str(),
                        "label": f.label,
                        "added_at": f.confirmed_at,
                        "last_used_at": f.last_used_at,
                    }))
                    .collect::<Vec<_>>()
            );
            value["recovery_codes_left"] = json!(codes_left);
            text.push_str("\nsecond factors:");
            if factors.is_empty() {
                text.push_str(" none");
            }
            for f in &factors {
                text.push_str(&format!(
                    "\n  {:<13} {} ({})",
                    f.kind.as_str(),
                    f.label,
                    f.id
                ));
            }
            if !factors.is_empty() {
                text.push_str(&format!("\nrecovery codes  {codes_left} left"));
            }
            // SMART: who they are on the FHIR server, and whom they may
            // pick in a standalone launch.
            let patients = store.patient_links(&user.id).await.map_err(store_failure)?;
            value["patients"] = json!(
                patients
                    .iter()
                    .map(|p| json!({"id": p.patient_id, "display": p.display}))
                    .collect::<Vec<_>>()
            );
            text.push_str(&format!(
                "\nfhir_user       {}\npatients:{}",
                user.fhir_user.as_deref().unwrap_or("-"),
                if patients.is_empty() { " none" } else { "" }
            ));
            for p in &patients {
                text.push_str(&format!("\n  {:<13} {}", p.patient_id, p.display));
            }
            print(as_json, &value, &text);
        }
        UserCommand::Lock { user } => {
            let user = admin::find_user(store, &user).await?;
            let changed = store
                .lock_user_by(&user.id, Actor::system(), now)
                .await
                .map_err(store_failure)?;
            let text = if changed {
                format!(
                    "locked {}: they cannot sign in, their sessions have ended and their apps get no new tokens",
                    named(&user)
                )
            } else {
                format!("{} was already locked", named(&user))
            };
            print(
                as_json,
                &json!({"id": user.id, "username": user.username, "locked": true, "changed": changed}),
                &text,
            );
        }
        UserCommand::Unlock { user } => {
            let (user, unlocked) =
                admin::unlock_user(store, clock.as_ref(), &user, Actor::system()).await?;
            let text = match (unlocked.operator_lock, unlocked.failed_sign_ins) {
                (true, false) => format!("unlocked {}: they can sign in again", named(&user)),
                (false, true) => format!(
                    "unlocked {}: cleared the lock after failed sign-ins, they can sign in again",
                    named(&user)
                ),
                (true, true) => format!(
                    "unlocked {} and cleared the lock after failed sign-ins: they can sign in again",
                    named(&user)
                ),
                (false, false) => format!("{} was not locked", named(&user)),
            };
            print(
                as_json,
                &json!({
                    "id": user.id,
                    "username": user.username,
                    "locked": false,
                    "changed": unlocked.any(),
                    "cleared_failed_sign_ins": unlocked.failed_sign_ins,
                }),
                &text,
            );
        }
        UserCommand::ResetMfa { user, reason } => {
            let reason = reason
                .as_deref()
                .map(healthgate_core::client::Reason::parse)
                .transpose()
                .map_err(|e| AdminError::Invalid(format!("--reason: {e}")))?;
            let (user, factors) = admin::reset_mfa(
                store,
                clock.as_ref(),
                &user,
                reason.as_ref(),
                Actor::system(),
            )
            .await?;
            healthgate_server::services::mail::security_notice(
                &state,
                &user,
                healthgate_core::recovery::Notice::FactorsReset,
            )
            .await
            .map_err(anyhow::Error::from)?;
            let text = match factors {
                0 => format!(
                    "{} had no second factor; their recovery codes (if any) are gone and every session of theirs has ended",
                    named(&user)
                ),
                1 => format!(
                    "removed the second factor of {} and their recovery codes; every session of theirs has ended. They sign in with their password next.",
                    named(&user)
                ),
                n => format!(
                    "removed {n} second factors of {} and their recovery codes; every session of theirs has ended. They sign in with their password next.",
                    named(&user)
                ),
            };
            print(
                as_json,
                &json!({"id": user.id, "username": user.username, "factors_removed": factors}),
                &text,
            );
        }
        UserCommand::ResetPassword { user } => {
            let (user, password) =
                admin::reset_password(store, clock.as_ref(), &user, Actor::system()).await?;
            // Told by email (with `[smtp]`, to a verified address); the
            // servers' mail workers deliver it.
            healthgate_server::services::mail::security_notice(
                &state,
                &user,
                healthgate_core::recovery::Notice::TemporaryPassword,
            )
            .await
            .map_err(anyhow::Error::from)?;
            print(
                as_json,
                &json!({"id": user.id, "username": user.username, "temporary_password": password}),
                &format!(
                    "temporary password of {}: {password}\n\nIt is shown only now: hand it over safely. Every session of theirs has ended; at their next sign-in they must choose a password of their own before anything else.",
                    named(&user)
                ),
            );
        }
        UserCommand::Update { user, fhir_user } => {
            let user =
                smart::set_fhir_user(store, now, &user, fhir_user.as_deref(), Actor::system())
                    .await?;
            print(
                as_json,
                &user_json(&user, None),
                &format!(
                    "{}: fhir_user {}",
                    named(&user),
                    user.fhir_user.as_deref().unwrap_or("-")
                ),
            );
        }
        UserCommand::LinkPatient {
            user,
            patient,
            display,
        } => {
            let link = PatientLink {
                patient_id: patient,
                display,
            };
            let user =
                smart::link_patient(store, now, &user, link.clone(), Actor::system()).await?;
            print(
                as_json,
                &json!({"id": user.id, "username": user.username, "patient": link.patient_id, "display": link.display}),
                &format!(
                    "linked patient {} ({}) to {}",
                    link.patient_id,
                    link.display,
                    named(&user)
                ),
            );
        }
        UserCommand::UnlinkPatient { user, patient } => {
            let user = smart::unlink_patient(store, now, &user, &patient, Actor::system()).await?;
            print(
                as_json,
                &json!({"id": user.id, "username": user.username, "patient": patient, "unlinked": true}),
                &format!("unlinked patient {patient} from {}", named(&user)),
            );
        }
        UserCommand::Delete { user } => {
            let user = admin::delete_user(store, clock.as_ref(), &user).await?;
            print(
                as_json,
                &json!({"id": user.id, "username": user.username, "deleted": true}),
                &format!("deleted {} and everything issued to them", named(&user)),
            );
        }
    }
    store.close().await;
    Ok(())
}
