//! Practice integrations (Hint's InstantOn): a practice connects a partner
//! app from inside the platform; the partner exchanges a one-time connect
//! code for the practice's API key.

use std::fmt;
use std::str::FromStr;

use crate::error::OAuthError;
use crate::event::{EventKind, Outcome};
use crate::grant::Record;
use crate::secret::{Minted, new_id};

/// Where an integration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrationStatus {
    /// Connect was clicked (or a code issued); no key yet, or the partner
    /// asked to activate later.
    Pending,
    Connected,
    Disconnected,
}

impl IntegrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

impl fmt::Display for IntegrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IntegrationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "connected" => Ok(Self::Connected),
            "disconnected" => Ok(Self::Disconnected),
            other => Err(format!("unknown integration status {other:?}")),
        }
    }
}

/// An integration between one practice and one partner app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub id: String,
    pub organization_id: String,
    pub client_id: String,
    pub status: IntegrationStatus,
    pub created_by: Option<String>,
    pub activated_by: Option<String>,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub disconnected_at: Option<i64>,
}

/// How a connect code reaches the partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectMode {
    /// Appended to the partner's connect URL (InstantOn).
    Redirect,
    /// Shown once to the admin, who sends it to the partner.
    Manual,
}

impl ConnectMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redirect => "redirect",
            Self::Manual => "manual",
        }
    }
}

/// The URL the admin's browser is sent to after Connect. Hint: "we just put
/// the authorization code immediately after your url"; a `{code}` in the URL
/// is replaced instead, for partners who want the code elsewhere.
pub fn connect_url(template: &str, code: &str) -> String {
    if template.contains("{code}") {
        template.replace("{code}", code)
    } else {
        format!("{template}{code}")
    }
}

/// A practice API key as stored (the key itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub integration_id: String,
    pub organization_id: String,
    pub client_id: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key about to be stored: the record and the digest it is found by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub digest: String,
    pub key: ApiKey,
}

impl NewApiKey {
    /// A new key of `integration`, for the minted secret.
    pub fn of(
        integration: &Integration,
        secret: &Minted,
        description: Option<&str>,
        now: i64,
    ) -> Self {
        Self {
            digest: secret.digest.clone(),
            key: ApiKey {
                id: new_id("key"),
                integration_id: integration.id.clone(),
                organization_id: integration.organization_id.clone(),
                client_id: integration.client_id.clone(),
                description: description.map(str::to_owned),
                created_at: now,
                last_used_at: None,
                revoked_at: None,
            },
        }
    }
}

/// A connect code as read for exchange, with its integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectCodeRead {
    pub integration: Integration,
    pub expires_at: i64,
    /// The admin who issued it (who connected the practice).
    pub created_by: Option<String>,
    pub consumed: bool,
    /// The digest of the key the code was exchanged for, once it was.
    pub produced_key: Option<String>,
}

/// The partner's exchange request (Hint's `POST /api/oauth/tokens`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectExchange<'a> {
    pub code_digest: &'a str,
    /// The authenticated partner.
    pub client_id: &'a str,
    /// Whether the integration goes live now, or stays pending until the
    /// partner activates it.
    pub activate: bool,
    pub now: i64,
}

/// What an exchange writes, in one transaction, in the order of the
/// fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectWrite {
    pub now: i64,
    /// Consumes the code with this digest, which must still be unused (else
    /// nothing is written), recording the key below as what it produced.
    pub consume: Option<String>,
    /// Revokes the live key with this digest.
    pub revoke_key: Option<String>,
    pub key: Option<NewApiKey>,
    /// Makes this pending integration connected, by this admin.
    pub activate: Option<(String, Option<String>)>,
    pub records: Vec<Record>,
}

/// An exchange decided: what to write, then what to answer (the key's
/// integration goes live or stays pending; or the RFC error).
#[derive(Debug)]
pub struct ConnectDecision {
    pub write: ConnectWrite,
    pub outcome: Result<(), OAuthError>,
}

impl ConnectDecision {
    fn refuse(now: i64, error: &'static str) -> Self {
        Self {
            write: ConnectWrite {
                now,
                ..ConnectWrite::default()
            },
            outcome: Err(OAuthError::invalid_grant(error)),
        }
    }
}

fn integration_record(kind: EventKind, i: &Integration, data: serde_json::Value) -> Record {
    Record {
        organization_id: Some(i.organization_id.clone()),
        data: Some(data),
        ..Record::new(kind, &i.client_id, &i.id)
    }
}

/// Exchanges a connect code for the practice's API key. Single use: a code
/// presented again revokes the key it produced. A code of another partner,
/// expired, or of a disconnected integration is refused and stays unused.
pub fn exchange_connect_code(
    read: Option<&ConnectCodeRead>,
    request: ConnectExchange<'_>,
    secret: &Minted,
) -> ConnectDecision {
    let now = request.now;
    let Some(read) = read else {
        return ConnectDecision::refuse(now, "unknown code");
    };
    let i = &read.integration;
    if read.consumed {
        let mut decision = ConnectDecision::refuse(now, "the code has already been used");
        if let Some(produced) = &read.produced_key {
            decision.write.revoke_key = Some(produced.clone());
            decision.write.records.push(Record {
                outcome: Outcome::Failure,
                ..integration_record(
                    EventKind::ConnectCodeReplayed,
                    i,
                    serde_json::json!({ "integration_id": i.id }),
                )
            });
        }
        return decision;
    }
    if i.client_id != request.client_id {
        return ConnectDecision::refuse(now, "the code was issued to another partner");
    }
    if now >= read.expires_at {
        return ConnectDecision::refuse(now, "the code has expired");
    }
    if i.status == IntegrationStatus::Disconnected {
        return ConnectDecision::refuse(now, "the practice has disconnected this integration");
    }
    let goes_live = request.activate && i.status == IntegrationStatus::Pending;
    let (status, kind) = if request.activate {
        (
            IntegrationStatus::Connected,
            EventKind::IntegrationConnected,
        )
    } else {
        (i.status, EventKind::IntegrationPending)
    };
    let record = Record {
        actor: read.created_by.clone(),
        ..integration_record(
            kind,
            i,
            serde_json::json!({ "integration_id": i.id, "status": status.as_str() }),
        )
    };
    ConnectDecision {
        write: ConnectWrite {
            now,
            consume: Some(request.code_digest.to_owned()),
            key: Some(NewApiKey::of(i, secret, Some("Connected via code"), now)),
            activate: goes_live.then(|| (i.id.clone(), read.created_by.clone())),
            records: vec![record],
            ..ConnectWrite::default()
        },
        outcome: Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_goes_right_after_the_url_or_into_the_placeholder() {
        assert_eq!(
            connect_url("https://partner.example/hint/connect?code=", "hg_cc_x"),
            "https://partner.example/hint/connect?code=hg_cc_x"
        );
        assert_eq!(
            connect_url("https://partner.example/connect/", "abc"),
            "https://partner.example/connect/abc"
        );
        assert_eq!(
            connect_url("https://partner.example/c/{code}/start", "abc"),
            "https://partner.example/c/abc/start"
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            IntegrationStatus::Pending,
            IntegrationStatus::Connected,
            IntegrationStatus::Disconnected,
        ] {
            assert_eq!(s.as_str().parse::<IntegrationStatus>().unwrap(), s);
        }
    }

    fn read(status: IntegrationStatus, consumed: bool, produced: Option<&str>) -> ConnectCodeRead {
        ConnectCodeRead {
            integration: Integration {
                id: "int_1".into(),
                organization_id: "org_1".into(),
                client_id: "partner".into(),
                status,
                created_by: Some("usr_admin".into()),
                activated_by: None,
                created_at: 0,
                activated_at: None,
                disconnected_at: None,
            },
            expires_at: 600,
            created_by: Some("usr_admin".into()),
            consumed,
            produced_key: produced.map(str::to_owned),
        }
    }

    fn exchange(client_id: &str, activate: bool, now: i64) -> ConnectExchange<'_> {
        ConnectExchange {
            code_digest: "code-digest",
            client_id,
            activate,
            now,
        }
    }

    fn secret() -> Minted {
        crate::secret::mint(crate::secret::SecretKind::ApiKey)
    }

    #[test]
    fn refusals_write_nothing_and_leave_the_code_unused() {
        use IntegrationStatus::*;
        let pending = read(Pending, false, None);
        let disconnected = read(Disconnected, false, None);
        let cases: [(Option<&ConnectCodeRead>, ConnectExchange<'_>, &str); 4] = [
            (None, exchange("partner", true, 1), "unknown code"),
            (
                Some(&pending),
                exchange("other", true, 1),
                "the code was issued to another partner",
            ),
            (
                Some(&pending),
                exchange("partner", true, 600),
                "the code has expired",
            ),
            (
                Some(&disconnected),
                exchange("partner", true, 1),
                "the practice has disconnected this integration",
            ),
        ];
        for (read, request, why) in cases {
            let d = exchange_connect_code(read, request, &secret());
            let e = d.outcome.unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidGrant, "{why}");
            assert_eq!(&*e.description, why);
            assert_eq!(
                d.write,
                ConnectWrite {
                    now: request.now,
                    ..ConnectWrite::default()
                },
                "{why}"
            );
        }
    }

    #[test]
    fn a_replay_revokes_the_key_the_code_produced() {
        let used = read(IntegrationStatus::Connected, true, Some("key-digest"));
        let d = exchange_connect_code(Some(&used), exchange("partner", true, 5), &secret());
        assert_eq!(
            &*d.outcome.unwrap_err().description,
            "the code has already been used"
        );
        assert_eq!(d.write.consume, None);
        assert_eq!(d.write.key, None);
        assert_eq!(d.write.revoke_key.as_deref(), Some("key-digest"));
        assert_eq!(d.write.records.len(), 1);
        assert_eq!(d.write.records[0].kind, EventKind::ConnectCodeReplayed);
        assert_eq!(d.write.records[0].outcome, Outcome::Failure);
        // A code a disconnection killed produced no key: nothing to revoke.
        let killed = read(IntegrationStatus::Disconnected, true, None);
        let d = exchange_connect_code(Some(&killed), exchange("partner", true, 5), &secret());
        assert!(d.outcome.is_err());
        assert_eq!(d.write.revoke_key, None);
        assert!(d.write.records.is_empty());
    }

    #[test]
    fn an_exchange_consumes_the_code_and_issues_a_key() {
        use IntegrationStatus::*;
        // (status before, activate) -> (goes live, event, status reported)
        let cases = [
            (
                Pending,
                true,
                true,
                EventKind::IntegrationConnected,
                "connected",
            ),
            (
                Pending,
                false,
                false,
                EventKind::IntegrationPending,
                "pending",
            ),
            (
                Connected,
                true,
                false,
                EventKind::IntegrationConnected,
                "connected",
            ),
            (
                Connected,
                false,
                false,
                EventKind::IntegrationPending,
                "connected",
            ),
        ];
        for (status, activate, live, kind, reported) in cases {
            let r = read(status, false, None);
            let s = secret();
            let d = exchange_connect_code(Some(&r), exchange("partner", activate, 5), &s);
            assert!(d.outcome.is_ok());
            let w = d.write;
            assert_eq!(w.consume.as_deref(), Some("code-digest"));
            let key = w.key.expect("a key");
            assert_eq!(key.digest, s.digest);
            assert_eq!(key.key.integration_id, "int_1");
            assert_eq!(key.key.organization_id, "org_1");
            assert_eq!(key.key.created_at, 5);
            assert_eq!(
                w.activate,
                live.then(|| ("int_1".to_owned(), Some("usr_admin".to_owned())))
            );
            assert_eq!(w.records.len(), 1);
            assert_eq!(w.records[0].kind, kind);
            assert_eq!(w.records[0].actor.as_deref(), Some("usr_admin"));
            assert_eq!(w.records[0].data.as_ref().unwrap()["status"], reported);
        }
    }
}
