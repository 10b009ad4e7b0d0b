//! Operator commands beyond clients and users: organizations and their
//! members (adding and removing them as the admin console does, with the
//! same events), the audit trail, webhook deliveries, and backups.

use std::path::Path;
use std::sync::Arc;

use clap::Subcommand;
use healthgate_core::Clock;
use healthgate_core::org::OrganizationKind;
use healthgate_server::Settings;
use healthgate_server::services::admin::{self, AdminError};
use healthgate_server::services::smart::{self, LaunchRequest};
use healthgate_store::{Actor, PoolConfig, Store, StoreError};
use serde_json::json;

use crate::{Failure, open, print};

#[derive(Subcommand, Debug)]
pub enum OrgCommand {
    /// Create a practice or clinic; prints its id (`pra-…` or `cln-…`).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "practice", value_parser = parse_kind)]
        kind: OrganizationKind,
    },
    /// List organizations.
    List,
    /// Add a person (id or username) with a role, or change their role.
    AddMember {
        org: String,
        user: String,
        /// admin, practitioner or staff.
        #[arg(long)]
        role: String,
    },
    /// Take a person (id or username) out of an organization.
    RemoveMember { org: String, user: String },
    /// Show an organization with its members and integrations.
    Show { id: String },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Seal new events into the hash chain and check every link: an edited
    /// or deleted row is reported, and the command exits 1. With
    /// `--archive`, every archived segment and the links between them too.
    Verify {
        /// The folder `audit archive` wrote its segments to.
        #[arg(long, value_name = "DIR")]
        archive: Option<std::path::PathBuf>,
    },
    /// Move the sealed events appended before DATE to a compressed segment
    /// file in PATH (a folder), check it, then delete them from the
    /// database, leaving a checkpoint the chain continues from.
    Archive {
        /// YYYY-MM-DD (midnight UTC) or a Unix time.
        #[arg(long, value_name = "DATE", value_parser = parse_before)]
        before: i64,
        #[arg(value_name = "PATH")]
        path: std::path::PathBuf,
    },
    /// The latest events, newest first.
    Tail {
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only events at or after this Unix time.
        #[arg(long, value_name = "UNIX_TIME")]
        since: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Deliveries, newest first, with their attempts.
    Deliveries {
        /// Only this app's deliveries.
        #[arg(long = "client", value_name = "CLIENT_ID")]
        client_id: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Re-enable an app's muted webhook; held deliveries are sent again.
    Unmute { client_id: String },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// The signing keys, newest first, with when each signs.
    List,
    /// Add a key that starts signing after `key_rotation_overlap` seconds;
    /// the current key signs until then and stays published after.
    Rotate,
}

/// `YYYY-MM-DD` as midnight UTC, or whole Unix seconds.
fn parse_before(s: &str) -> Result<i64, String> {
    if let Ok(unix) = s.parse::<i64>() {
        return Ok(unix);
    }
    let refused = || format!("{s:?} is not a date written YYYY-MM-DD or a Unix time");
    let mut parts = s.splitn(3, '-');
    let mut next = || parts.next().and_then(|p| p.parse::<i64>().ok());
    let (Some(y), Some(m), Some(d)) = (next(), next(), next()) else {
        return Err(refused());
    };
    if s.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(refused());
    }
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

fn parse_kind(s: &str) -> Result<OrganizationKind, String> {
    s.parse()
}

fn store_failure(e: healthgate_store::StoreError) -> Failure {
    anyhow::Error::from(e).into()
}

/// `healthgate backup PATH`. Opens the database without migrating it: the
/// server using it may be of another version, and a backup changes nothing.
pub async fn backup(settings: Settings, to: &Path, as_json: bool) -> Result<(), Failure> {
    let store = Store::connect(
        &settings.database_url,
        PoolConfig {
            create_if_missing: false,
            ..PoolConfig::default()
        },
    )
    .await
    .map_err(store_failure)?;
    let copied = store.backup_sqlite(to).await;
    store.close().await;
    let bytes = copied.map_err(|e| match e {
        StoreError::BackupRefused(_) => Failure {
            code: 2,
            message: e.to_string(),
        },
        other => store_failure(other),
    })?;
    print(
        as_json,
        &json!({"backup": to, "bytes": bytes}),
        &format!("backed up to {} ({bytes} bytes)", to.display()),
    );
    Ok(())
}

pub async fn org_command(
    settings: Settings,
    clock: Arc<dyn Clock>,
    cmd: OrgCommand,
    as_json: bool,
) -> Result<(), Failure> {
    let state = open(settings, &clock).await?;
    let store = &state.store;
    match cmd {
        OrgCommand::Create { name, kind } => {
            let org = admin::create_organization(store, clock.as_ref(), &name, kind).await?;
            print(
                as_json,
                &json!({"id": org.id, "name": org.name, "kind": org.kind.as_str(), "created_at": org.created_at}),
                &format!("created {} {} ({})", org.kind, org.name, org.id),
            );
        }
        OrgCommand::List => {
            let orgs = store.organizations().await.map_err(store_failure)?;
            let value = json!(orgs
                .iter()
                .map(|o| json!({"id": o.id, "name": o.name, "kind": o.kind.as_str(), "created_at": o.created_at}))
                .collect::<Vec<_>>());
            let text = if orgs.is_empty() {
                "no organizations".to_owned()
            } else {
                orgs.iter()
                    .map(|o| format!("{}  {:<8}  {}", o.id, o.kind.as_str(), o.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(as_json, &value, &text);
        }
        OrgCommand::AddMember { org, user, role } => {
            let (org, person) =
                admin::add_member(store, &state.settings, clock.as_ref(), &org, &user, &role)
                    .await?;
            print(
                as_json,
                &json!({"organization_id": org.id, "user_id": person.id, "username": person.username, "role": role}),
                &format!(
                    "{} is now {} of {} ({})",
                    person.username, role, org.name, org.id
                ),
            );
        }
        OrgCommand::RemoveMember { org, user } => {
            let org = store
                .organization(&org)
                .await
                .map_err(store_failure)?
                .ok_or_else(|| AdminError::Invalid(format!("no organization with id {org:?}")))?;
            let person = admin::find_user(store, &user).await?;
            let removed = store
                .remove_membership_by(&org.id, &person.id, Actor::system(), clock.now())
                .await
                .map_err(store_failure)?;
            let text = if removed {
                format!(
                    "{} is no longer a member of {} ({})",
                    person.username, org.name, org.id
                )
            } else {
                format!(
                    "{} was not a member of {} ({})",
                    person.username, org.name, org.id
                )
            };
            print(
                as_json,
                &json!({"organization_id": org.id, "user_id": person.id, "username": person.username, "removed": removed}),
                &text,
            );
        }
        OrgCommand::Show { id } => {
            let org = store
                .organization(&id)
                .await
                .map_err(store_failure)?
                .ok_or_else(|| AdminError::Invalid(format!("no organization with id {id:?}")))?;
            let members = store.members(&org.id).await.map_err(store_failure)?;
            let integrations = store
                .integrations_of_organization(&org.id)
                .await
                .map_err(store_failure)?;
            let value = json!({
                "id": org.id,
                "name": org.name,
                "kind": org.kind.as_str(),
                "members": members.iter().map(|(u, role)| json!({"id": u.id, "username": u.username, "role": role})).collect::<Vec<_>>(),
                "integrations": integrations.iter().map(|i| json!({"id": i.id, "client_id": i.client_id, "status": i.status.as_str()})).collect::<Vec<_>>(),
            });
            let mut text = format!("{} {} ({})\nmembers:", org.kind, org.name, org.id);
            for (u, role) in &members {
                text.push_str(&format!("\n  {:<13} {} ({})", role, u.username, u.id));
            }
            text.push_str("\nintegrations:");
            for i in &integrations {
                text.push_str(&format!(
                    "\n  {}  {:<12} {}",
                    i.id,
                    i.status.as_str(),
                    i.client_id
                ));
            }
            print(as_json, &value, &text);
        }
    }
    store.close().await;
    Ok(())
}

pub async fn audit_command(
    settings: Settings,
    clock: Arc<dyn Clock>,
    cmd: AuditCommand,
    as_json: bool,
) -> Result<(), Failure> {
    let state = open(settings, &clock).await?;
    let store = &state.store;
    let result = match cmd {
        AuditCommand::Verify { archive } => {
            while store.seal_events(1000).await.map_err(store_failure)? > 0 {}
            let report = store.verify_chain().await.map_err(store_failure)?;
            let checkpoints = store.checkpoints().await.map_err(store_failure)?;
            let archived = match &archive {
                Some(dir) => {
                    let dir = dir.clone();
                    let checked = checkpoints.clone();
                    let report = tokio::task::spawn_blocking(move || {
                        healthgate_store::verify_archive(&dir, &checked)
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("the archive check stopped: {e}"))?
                    .map_err(store_failure)?;
                    Some(report)
                }
                None => None,
            };
            let archive_broken = archived.as_ref().and_then(|a| a.broken.clone());
            match (&report.broken, archive_broken) {
                (None, None) => {
                    let archived_events: i64 = checkpoints.iter().map(|c| c.events).sum();
                    let archive_text = match (&archived, checkpoints.len()) {
                        (_, 0) => String::new(),
                        (Some(a), _) => format!(
                            "; {} archived events in {} segments checked and linked",
                            a.events, a.segments
                        ),
                        (None, n) => format!(
                            "; {archived_events} events archived in {n} segments through position {} (not checked: pass --archive DIR)",
                            report.archived_through
                        ),
                    };
                    print(
                        as_json,
                        &json!({
                            "ok": true, "sealed": report.sealed, "unsealed": report.unsealed,
                            "archived_through": report.archived_through,
                            "archive_checked": archived.as_ref().map(|a| json!({"segments": a.segments, "events": a.events})),
                        }),
                        &format!(
                            "audit trail intact: {} events linked{archive_text}",
                            report.sealed
                        ),
                    );
                    Ok(())
                }
                (None, Some((segment, why))) => {
                    print(
                        as_json,
                        &json!({"ok": false, "sealed": report.sealed, "broken_segment": segment, "reason": why}),
                        &format!("audit archive BROKEN at segment {segment}: {why}"),
                    );
                    Err(Failure {
                        code: 1,
                        message: format!(
                            "the audit archive does not check at segment {segment}: {why}"
                        ),
                    })
                }
                (Some((pos, why)), _) => {
                    print(
                        as_json,
                        &json!({"ok": false, "sealed": report.sealed, "broken_at": pos, "reason": why}),
                        &format!("audit trail BROKEN at position {pos}: {why}"),
                    );
                    Err(Failure {
                        code: 1,
                        message: format!(
                            "the audit trail was tampered with at position {pos}: {why}"
                        ),
                    })
                }
            }
        }
        AuditCommand::Archive { before, path } => {
            let archived = healthgate_server::services::audit::archive(&state, before, &path)
                .await
                .map_err(|e| match e {
                    StoreError::Archive(_) => Failure {
                        code: 1,
                        message: e.to_string(),
                    },
                    other => store_failure(other),
                })?;
            match archived {
                None => print(
                    as_json,
                    &json!({"archived": null}),
                    "nothing to archive: no sealed event before that date is left in the database",
                ),
                Some(a) => {
                    let c = &a.checkpoint;
                    print(
                        as_json,
                        &json!({"archived": {
                            "segment": a.path, "first_pos": c.first_pos, "last_pos": c.through_pos,
                            "events": c.events, "deleted": a.deleted, "last_hash": c.hash,
                        }}),
                        &format!(
                            "archived {} events (positions {} to {}) to {}; {} rows deleted from the database",
                            c.events,
                            c.first_pos,
                            c.through_pos,
                            a.path.display(),
                            a.deleted
                        ),
                    );
                }
            }
            Ok(())
        }
        AuditCommand::Tail { limit, since } => {
            let events = store
                .events(since, limit.clamp(1, 10_000))
                .await
                .map_err(store_failure)?;
            if as_json {
                for e in &events {
                    println!(
                        "{}",
                        json!({
                            "id": e.id, "at": e.at, "type": e.kind, "outcome": e.outcome,
                            "actor": e.actor_user_id, "subject": e.subject, "client_id": e.client_id,
                            "organization_id": e.organization_id, "ip": e.ip,
                            "data": e.data.as_deref().and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()),
                            "chain_pos": e.chain_pos,
                        })
                    );
                }
            } else {
                for e in &events {
                    println!(
                        "{}  {:<28} {:<7} actor={} client={} subject={} ip={}",
                        e.at,
                        e.kind,
                        e.outcome,
                        e.actor_user_id.as_deref().unwrap_or("-"),
                        e.client_id.as_deref().unwrap_or("-"),
                        e.subject.as_deref().unwrap_or("-"),
                        e.ip.as_deref().unwrap_or("-"),
                    );
                }
            }
            Ok(())
        }
    };
    store.close().await;
    result
}

pub async fn webhooks_command(
    settings: Settings,
    clock: Arc<dyn Clock>,
    cmd: WebhooksCommand,
    as_json: bool,
) -> Result<(), Failure> {
    let state = open(settings, &clock).await?;
    let store = &state.store;
    match cmd {
        WebhooksCommand::Deliveries { client_id, limit } => {
            let deliveries = store
                .deliveries(client_id.as_deref(), limit.clamp(1, 10_000))
                .await
                .map_err(store_failure)?;
            let mut values = Vec::new();
            let mut text = Vec::new();
            for d in &deliveries {
                let attempts = store
                    .delivery_attempts(&d.id)
                    .await
                    .map_err(store_failure)?;
                let event_type = serde_json::from_str::<serde_json::Value>(&d.payload)
                    .ok()
                    .and_then(|p| p["type"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                values.push(json!({
                    "id": d.id, "event_id": d.event_id, "type": event_type, "client_id": d.client_id, "url": d.url,
                    "status": d.status, "attempts": d.attempts, "created_at": d.created_at,
                    "next_attempt_at": d.next_attempt_at, "delivered_at": d.delivered_at,
                    "last_status": d.last_status, "last_error": d.last_error,
                    "log": attempts.iter().map(|a| json!({
                        "attempt": a.attempt, "at": a.at, "status_code": a.status_code,
                        "error": a.error, "duration_ms": a.duration_ms,
                    })).collect::<Vec<_>>(),
                }));
                text.push(format!(
                    "{}  {:<9} {:<28} {} attempts={} last={}",
                    d.id,
                    d.status,
                    event_type,
                    d.client_id,
                    d.attempts,
                    d.last_status
                        .map(|s| s.to_string())
                        .or_else(|| d.last_error.clone())
                        .unwrap_or_else(|| "-".into()),
                ));
            }
            let text = if text.is_empty() {
                "no deliveries".to_owned()
            } else {
                text.join("\n")
            };
            print(as_json, &json!(values), &text);
        }
        WebhooksCommand::Unmute { client_id } => {
            store
                .client(&client_id)
                .await
                .map_err(store_failure)?
                .ok_or_else(|| AdminError::NoSuchClient(client_id.clone()))?;
            let resumed = store
                .unmute_webhook(&client_id, clock.now())
                .await
                .map_err(store_failure)?;
            print(
                as_json,
                &json!({"client_id": client_id, "resumed": resumed}),
                &format!(
                    "webhook of {client_id} re-enabled; {resumed} held deliveries will be sent"
                ),
            );
        }
    }
    store.close().await;
    Ok(())
}

pub async fn keys_command(
    settings: Settings,
    clock: Arc<dyn Clock>,
    cmd: KeysCommand,
    as_json: bool,
) -> Result<(), Failure> {
    let state = open(settings, &clock).await?;
    let store = &state.store;
    let now = clock.now();
    match cmd {
        KeysCommand::List => {
            let keys = store.signing_keys().await.map_err(store_failure)?;
            let value = json!(keys
                .iter()
                .map(|k| json!({"kid": k.kid, "alg": k.alg, "created_at": k.created_at, "active_from": k.active_from, "retired_at": k.retired_at}))
                .collect::<Vec<_>>());
            let text = if keys.is_empty() {
                "no signing keys yet (the first is created when the first ID token is signed)"
                    .to_owned()
            } else {
                keys.iter()
                    .map(|k| {
                        format!(
                            "{}  {}  signs from {}{}",
                            k.kid,
                            k.alg,
                            k.active_from,
                            k.retired_at
                                .map(|r| format!(" until {r}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(as_json, &value, &text);
        }
        KeysCommand::Rotate => {
            let added =
                healthgate_server::services::keys::rotate(store, &state.settings, now).await?;
            let value = json!(
                added
                    .iter()
                    .map(|(kid, from)| json!({"kid": kid, "active_from": from}))
                    .collect::<Vec<_>>()
            );
            let text = added
                .iter()
                .map(|(kid, from)| {
                    format!("new signing key {kid}: published now, signs from {from}")
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(as_json, &value, &text);
        }
    }
    store.close().await;
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum SmartCommand {
    /// Make a SMART EHR launch of an app, as the platform (the EHR) would:
    /// prints the launch value and the app's launch URL carrying it (valid
    /// for five minutes, once).
    Launch {
        /// The app to launch (its client_id).
        #[arg(long = "client", value_name = "ID")]
        client: String,
        /// The person it is for (username or id); anyone signed in when
        /// omitted.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// The patient in context (a FHIR id).
        #[arg(long, value_name = "ID")]
        patient: Option<String>,
        /// The encounter in context (a FHIR id).
        #[arg(long, value_name = "ID")]
        encounter: Option<String>,
        /// The FHIR server (one of `[smart] fhir_base_urls`; the first by
        /// default).
        #[arg(long, value_name = "URL")]
        iss: Option<String>,
        /// A resource in context (`fhirContext`), as a reference such as
        /// `Appointment/123`; repeat for several.
        #[arg(long = "context", value_name = "REFERENCE")]
        fhir_context: Vec<String>,
        /// Ask the app to show a patient banner (`need_patient_banner`).
        #[arg(long)]
        need_patient_banner: bool,
        /// What the app is opened to do (`intent`).
        #[arg(long)]
        intent: Option<String>,
    },
}

pub async fn smart_command(
    settings: Settings,
    clock: Arc<dyn Clock>,
    cmd: SmartCommand,
    as_json: bool,
) -> Result<(), Failure> {
    let state = open(settings, &clock).await?;
    let store = &state.store;
    match cmd {
        SmartCommand::Launch {
            client,
            user,
            patient,
            encounter,
            iss,
            fhir_context,
            need_patient_banner,
            intent,
        } => {
            let made = smart::create_launch(
                store,
                &state.settings,
                clock.now(),
                "cli",
                Actor::system(),
                LaunchRequest {
                    client_id: client,
                    user,
                    iss,
                    patient,
                    encounter,
                    fhir_context: fhir_context
                        .into_iter()
                        .map(|r| json!({ "reference": r }))
                        .collect(),
                    need_patient_banner: need_patient_banner.then_some(true),
                    intent,
                    ..LaunchRequest::default()
                },
            )
            .await?;
            print(
                as_json,
                &json!({
                    "launch": made.launch,
                    "launch_url": made.launch_url,
                    "expires_at": made.expires_at,
                }),
                &format!(
                    "launch      {}\nlaunch_url  {}\n\nOpen the URL within five minutes; it works once.",
                    made.launch, made.launch_url
                ),
            );
        }
    }
    store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_before;

    #[test]
    fn dates_are_midnight_utc_and_unix_times_pass_through() {
        assert_eq!(parse_before("1970-01-01"), Ok(0));
        assert_eq!(parse_before("2000-03-01"), Ok(951_868_800));
        assert_eq!(parse_before("2026-12-01"), Ok(1_796_083_200));
        assert_eq!(parse_before("1796083200"), Ok(1_796_083_200));
        for bad in ["2026-13-01", "2026-1-1", "yesterday", "2026-12-32"] {
            assert!(parse_before(bad).is_err(), "{bad}");
        }
    }
}
