//! Recovery by email: what is sent to whom (the rules are
//! `healthgate_core::recovery`), the words of each message, the queue
//! (`mail_outbox`), and the SMTP client the delivery worker
//! (`jobs::mail`) sends through.
//!
//! Nothing is sent inside a request: a message is queued in the database
//! with the change that causes it, and delivered by a background worker on
//! any node, so a page answers at once and in the same time whether or
//! not mail goes out. A "forgot password" request is queued as typed, and
//! the worker looks the address up ([`handle_reset_request`]).
//!
//! The client is lettre on rustls with ring (no OpenSSL): STARTTLS
//! required, implicit TLS, or (loopback only, checked at start-up)
//! plaintext; the public roots plus an optional private CA (`ca_file`).

use std::time::{Duration, UNIX_EPOCH};

use healthgate_core::event::EventKind;
use healthgate_core::recovery::{
    self, LinkPurpose, MailKind, Notice, RecoveryPolicy, VerificationRefused,
};
use healthgate_core::secret::mint;
use healthgate_core::throttle::Verdict;
use healthgate_core::user::User;
use healthgate_store::{
    Event, NewLink, NewMail, OutgoingMail, ResetRequest, Store, StoreError, ThrottleKind,
};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Settings, SmtpSettings, SmtpTls};
use crate::state::AppState;

/// Where a verification link leads (no sign-in needed).
pub const VERIFY_PATH: &str = "/email/verify";
/// Where a reset link leads.
pub const RESET_PATH: &str = "/password/reset";
/// The "Forgot password?" page.
pub const FORGOT_PATH: &str = "/password/forgot";

/// The rules of recovery by email this deployment runs with.
pub fn policy() -> RecoveryPolicy {
    RecoveryPolicy::default()
}

/// Whether recovery by email is on (`[smtp]` is set).
pub fn enabled(settings: &Settings) -> bool {
    settings.smtp.is_some()
}

/// How a person is greeted.
fn greeting(user: &User) -> String {
    format!("Hello {},", user.name.as_deref().unwrap_or(&user.username))
}

/// The platform's name, as mail is signed.
fn platform(settings: &Settings) -> &str {
    &settings.platform_name
}

fn link(state: &AppState, path: &str, secret: &str) -> String {
    format!("{}{path}?token={secret}", state.issuer.as_str())
}

/// What happened to a request for a verification link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerificationOutcome {
    /// Queued for this address.
    Queued(String),
    Refused(VerificationRefused),
    /// Too many asked for lately; again in this many seconds.
    Throttled(i64),
    /// No mail server is configured.
    Disabled,
}

/// Queues a verification link for the account's unverified address, with
/// `email.verification_sent`: at most a few an hour per account.
pub async fn send_verification(
    state: &AppState,
    user: &User,
    ip: Option<&str>,
) -> Result<VerificationOutcome, StoreError> {
    if !enabled(&state.settings) {
        return Ok(VerificationOutcome::Disabled);
    }
    let address = match recovery::verification_recipient(user) {
        Ok(a) => a.to_owned(),
        Err(e) => return Ok(VerificationOutcome::Refused(e)),
    };
    let now = state.now();
    let policy = policy();
    if let Some(wait) = over_limit(
        &state.store,
        ThrottleKind::EmailVerification,
        &user.id,
        policy.verification_limit(),
        now,
    )
    .await?
    {
        return Ok(VerificationOutcome::Throttled(wait));
    }
    let secret = mint(LinkPurpose::VerifyEmail.secret_kind());
    let url = link(state, VERIFY_PATH, &secret.value);
    let site = platform(&state.settings);
    let subject = format!("Verify your email address for {site}");
    let body = format!(
        "{greeting}\n\nSomeone, hopefully you, asked {site} to use this address for the account {username}. To confirm that it is yours, open this link within 24 hours:\n\n{url}\n\nUntil you do, {site} will not use this address to help you recover your account or to tell you about changes to it. If you did not ask for this, ignore this message: nothing changes.\n\n{site}\n",
        greeting = greeting(user),
        username = user.username,
    );
    let expires_at = policy.link_expires_at(LinkPurpose::VerifyEmail, now);
    state
        .store
        .queue_link(
            &NewLink {
                digest: &secret.digest,
                purpose: LinkPurpose::VerifyEmail,
                user_id: &user.id,
                email: &address,
                expires_at,
            },
            &NewMail {
                kind: MailKind::Verification,
                user_id: Some(&user.id),
                recipient: &address,
                subject: &subject,
                body: &body,
                give_up_at: policy.give_up_at(MailKind::Verification, now),
            },
            &Event::new(EventKind::EmailVerificationSent)
                .actor(Some(&user.id))
                .subject(&user.id)
                .ip(ip),
            now,
        )
        .await?;
    Ok(VerificationOutcome::Queued(address))
}

/// Counts a request of `subject` against `limit` in the database (so it
/// holds across nodes); `Some(seconds)` when it is refused.
async fn over_limit(
    store: &Store,
    kind: ThrottleKind,
    subject: &str,
    limit: recovery::RequestLimit,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let run = store.failure_run(kind, subject).await?;
    if let Some(wait) = limit.verdict(run.as_ref(), now).retry_after(now) {
        return Ok(Some(wait));
    }
    let run = store
        .record_failure(kind, subject, now, limit.forget_before(now))
        .await?;
    if let Some(until) = limit.block_after(&run, now) {
        store.block(kind, subject, until).await?;
        return Ok(Verdict::Blocked { until }.retry_after(now));
    }
    Ok(None)
}

/// A "forgot password" request for `address` (as
/// `core::recovery::normalize_email` gives it): counted per address in
/// the database, then queued for the mail worker. The same work whether or
/// not an account has the address; `Some(seconds)` when the address has
/// asked too often (counted as typed, so this says nothing about accounts
/// either).
pub async fn request_reset(
    state: &AppState,
    address: &str,
    ip: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let now = state.now();
    let key = address;
    if let Some(wait) = over_limit(
        &state.store,
        ThrottleKind::PasswordReset,
        key,
        policy().reset_limit(),
        now,
    )
    .await?
    {
        let event = Event::new(EventKind::PasswordResetRequested)
            .failed()
            .ip(ip)
            .data(serde_json::json!({ "throttled": true, "retry_after": wait }));
        state.store.record_event(now, &event).await?;
        return Ok(Some(wait));
    }
    state.store.queue_reset_request(key, ip, now).await?;
    Ok(None)
}

/// The mail worker's part of a reset request: a link for each account
/// whose verified address it is (`core::recovery::reset_recipient`), and
/// one `password.reset_requested` event saying how many, in one
/// transaction that also deletes the request.
pub async fn handle_reset_request(
    state: &AppState,
    request: &ResetRequest,
) -> Result<(), StoreError> {
    let now = state.now();
    let policy = policy();
    let accounts = state.store.users_with_email(&request.email).await?;
    let site = platform(&state.settings);
    let subject = format!("Reset your {site} password");
    struct Prepared {
        user: User,
        address: String,
        digest: String,
        body: String,
    }
    let prepared: Vec<Prepared> = accounts
        .into_iter()
        .filter_map(|user| {
            let address = recovery::reset_recipient(&user)?.to_owned();
            let secret = mint(LinkPurpose::ResetPassword.secret_kind());
            let url = link(state, RESET_PATH, &secret.value);
            let body = format!(
                "{greeting}\n\nSomeone asked to reset the password of the account {username} on {site}. To choose a new password, open this link within 30 minutes; it works once:\n\n{url}\n\nChoosing a new password signs the account out of every browser and device, and every app connected to it must be authorized again.\n\nIf you did not ask for this, ignore this message: your password stays as it is.\n\n{site}\n",
                greeting = greeting(&user),
                username = user.username,
            );
            Some(Prepared {
                address,
                digest: secret.digest,
                body,
                user,
            })
        })
        .collect();
    let expires_at = policy.link_expires_at(LinkPurpose::ResetPassword, now);
    let give_up_at = policy.give_up_at(MailKind::Reset, now);
    let links: Vec<(NewLink, NewMail)> = prepared
        .iter()
        .map(|p| {
            (
                NewLink {
                    digest: &p.digest,
                    purpose: LinkPurpose::ResetPassword,
                    user_id: &p.user.id,
                    email: &p.address,
                    expires_at,
                },
                NewMail {
                    kind: MailKind::Reset,
                    user_id: Some(&p.user.id),
                    recipient: &p.address,
                    subject: &subject,
                    body: &p.body,
                    give_up_at,
                },
            )
        })
        .collect();
    let mut events = Vec::new();
    if prepared.is_empty() {
        events.push(
            Event::new(EventKind::PasswordResetRequested)
                .ip(request.ip.as_deref())
                .data(serde_json::json!({ "links_sent": 0 })),
        );
    }
    for p in &prepared {
        events.push(
            Event::new(EventKind::PasswordResetRequested)
                .subject(&p.user.id)
                .ip(request.ip.as_deref())
                .data(serde_json::json!({ "links_sent": 1 })),
        );
    }
    state
        .store
        .finish_reset_request(&request.id, &links, &events, now)
        .await?;
    Ok(())
}

/// The notice telling `user` about `what`, addressed to their verified
/// address; `None` when there is no mail server or no verified address.
/// For callers that queue it in their own transaction.
pub struct PreparedNotice {
    pub address: String,
    pub subject: String,
    pub body: String,
    pub give_up_at: i64,
}

impl PreparedNotice {
    pub fn mail<'a>(&'a self, user_id: &'a str) -> NewMail<'a> {
        NewMail {
            kind: MailKind::Notice,
            user_id: Some(user_id),
            recipient: &self.address,
            subject: &self.subject,
            body: &self.body,
            give_up_at: self.give_up_at,
        }
    }
}

/// Words a security notice for `user` about `what` at `now`.
pub fn prepare_notice(state: &AppState, user: &User, what: Notice) -> Option<PreparedNotice> {
    if !enabled(&state.settings) {
        return None;
    }
    let address = recovery::notice_recipient(user)?.to_owned();
    let now = state.now();
    let site = platform(&state.settings);
    let (title, sentence) = what.wording();
    let body = format!(
        "{greeting}\n\n{sentence}\n\nAccount: {username}\n\nIf this was you, there is nothing to do. If it was not, choose a new password now at {forgot} (a link is sent to this address), and tell {site}'s administrators.\n\n{site}\n",
        greeting = greeting(user),
        username = user.username,
        forgot = format_args!("{}{FORGOT_PATH}", state.issuer.as_str()),
    );
    Some(PreparedNotice {
        address,
        subject: format!("{title} ({site})"),
        body,
        give_up_at: policy().give_up_at(MailKind::Notice, now),
    })
}

/// Tells `user` by email that `what` happened to their account: queued for
/// their verified address, with `email.notice_queued`. Nothing when there
/// is no mail server or no verified address (returns false). The pages,
/// the CLI and the console call this after a password change; the
/// second-factor pages call it when factors change.
pub async fn security_notice(
    state: &AppState,
    user: &User,
    what: Notice,
) -> Result<bool, StoreError> {
    let Some(notice) = prepare_notice(state, user, what) else {
        return Ok(false);
    };
    let event = Event::new(EventKind::SecurityNoticeQueued)
        .subject(&user.id)
        .data(serde_json::json!({ "what": what.as_str() }));
    state
        .store
        .queue_mail(&notice.mail(&user.id), &event, state.now())
        .await?;
    Ok(true)
}

/// Like [`security_notice`], but never fails the caller: the change it
/// reports is made already, and a notice that could not be queued is
/// logged instead.
pub async fn security_notice_or_log(state: &AppState, user: &User, what: Notice) {
    if let Err(e) = security_notice(state, user, what).await {
        tracing::error!(error = %e, user = %user.id, what = what.as_str(), "a security notice could not be queued");
    }
}

/// Why the mail client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("cannot read smtp.ca_file {path}: {cause}")]
    CaFile { path: String, cause: std::io::Error },
    #[error("smtp.ca_file {path} holds no usable PEM certificate: {cause}")]
    Certificate { path: String, cause: String },
}

/// Why one delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// What went wrong, for the outbox, the log and the audit trail (never
    /// the message).
    pub error: String,
    /// The server refused it for good (5xx), or it cannot be built: no
    /// point retrying.
    pub permanent: bool,
}

/// The SMTP client, built once from `[smtp]`.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of `Message-ID`s: the issuer's host.
    domain: String,
    /// The longest one delivery may take, seconds.
    timeout: i64,
}

impl Mailer {
    /// The client for `settings`' mail server; `None` without `[smtp]`.
    pub fn new(settings: &Settings) -> Result<Option<Self>, MailSetupError> {
        let Some(smtp) = &settings.smtp else {
            return Ok(None);
        };
        let host = smtp
            .host
            .as_str()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(smtp.port());
        if smtp.tls != SmtpTls::None {
            let parameters = tls_parameters(smtp, host)?;
            builder = builder.tls(match smtp.tls {
                SmtpTls::Implicit => Tls::Wrapper(parameters),
                _ => Tls::Required(parameters),
            });
        }
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let issuer = settings.issuer();
        let domain = issuer
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let hello = match domain.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => ClientId::Ipv4(v4),
            Ok(std::net::IpAddr::V6(v6)) => ClientId::Ipv6(v6),
            Err(_) => ClientId::Domain(domain.clone()),
        };
        let transport = builder
            .hello_name(hello)
            .timeout(Some(smtp.timeout.duration()))
            .build();
        let name = smtp
            .from_name
            .clone()
            .unwrap_or_else(|| settings.platform_name.clone());
        Ok(Some(Self {
            transport,
            from: Mailbox::new(Some(name), smtp.from.address().clone()),
            domain,
            timeout: smtp.timeout.secs(),
        }))
    }

    /// The longest one delivery may take, seconds (`smtp.timeout`).
    pub fn timeout_secs(&self) -> i64 {
        self.timeout
    }

    /// Sends one message, dated `now` (epoch seconds).
    pub async fn send(&self, mail: &OutgoingMail, now: i64) -> Result<(), SendFailure> {
        let to = mail
            .recipient
            .parse::<lettre::Address>()
            .map_err(|_| SendFailure {
                error: "the recipient is not an address the mail server can take".into(),
                permanent: true,
            })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}@{}>", mail.id, self.domain)))
            .date(UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0)))
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| SendFailure {
                error: format!("the message could not be built: {e}"),
                permanent: true,
            })?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SendFailure {
                permanent: e.is_permanent(),
                error: describe(&e),
            }),
        }
    }
}

/// A lettre error in one line, with its cause (a TLS or connection error
/// says what it is), without the message.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn tls_parameters(smtp: &SmtpSettings, host: &str) -> Result<TlsParameters, MailSetupError> {
    let mut parameters = TlsParameters::builder(host.to_owned());
    if let Some(path) = &smtp.ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|cause| MailSetupError::CaFile {
            path: shown.clone(),
            cause,
        })?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(MailSetupError::Certificate {
                path: shown,
                cause: "no -----BEGIN CERTIFICATE----- block".into(),
            });
        }
        let certificate = Certificate::from_pem(&pem).map_err(|e| MailSetupError::Certificate {
            path: shown.clone(),
            cause: e.to_string(),
        })?;
        parameters = parameters.add_root_certificate(certificate);
    }
    parameters
        .build_rustls()
        .map_err(|e| MailSetupError::Certificate {
            path: smtp
                .ca_file
                .as_ref()
                .map_or_else(|| "(none)".into(), |p| p.display().to_string()),
            cause: e.to_string(),
        })
}
