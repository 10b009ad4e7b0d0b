//! Recovery by email through a real SMTP server: Debian's `python3-aiosmtpd`
//! on loopback, started by the test (`.ci/run` installs it), its messages
//! read back from the maildir it writes. Verification links, "Forgot
//! password?" answering every address alike, a reset ending every session
//! and refresh token, links used once and expiring (the clock is moved,
//! never slept on), throttling, notices, and what the pages say without a
//! mail server. Without aiosmtpd the tests that need it say they are
//! skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use healthgate_core::recovery::LinkPurpose;
use healthgate_core::secret::mint;
use healthgate_core::user::{User, UserType};
use healthgate_server::config::SmtpSettings;
use healthgate_server::jobs;
use healthgate_server::services::mail::Mailer;
use healthgate_store::{Event, NewLink, NewMail};
use reqwest::StatusCode;

use super::*;

/// A Python that has aiosmtpd: Debian's, then whatever `python3` is.
fn python_with_aiosmtpd() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// aiosmtpd on a free loopback port, saving what it receives in a maildir;
/// killed when dropped.
struct MailServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One received message.
#[derive(Debug, Clone)]
struct Received {
    to: String,
    subject: String,
    body: String,
}

impl Received {
    /// The first link in the body that starts with `base`.
    fn link(&self, base: &str) -> String {
        let start = self
            .body
            .find(base)
            .unwrap_or_else(|| panic!("no link to {base} in {:?}", self.body));
        self.body[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }
}

impl MailServer {
    /// Starts aiosmtpd, or says why the test is skipped.
    fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[])
    }

    /// Starts aiosmtpd with `extra` arguments (TLS certificates).
    fn start_with(test: &str, extra: &[&std::ffi::OsStr]) -> Option<Self> {
        let Some(python) = python_with_aiosmtpd() else {
            eprintln!(
                "recovery::{test} skipped: python3-aiosmtpd is missing (apt-get install python3-aiosmtpd)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("maildir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let server = Self { child, port, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "aiosmtpd did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// `[smtp]` for this server: plaintext, allowed on loopback.
    fn settings(&self) -> SmtpSettings {
        serde_json::from_value(serde_json::json!({
            "host": "127.0.0.1",
            "port": self.port,
            "tls": "none",
            "from": "no-reply@healthgate.test",
        }))
        .expect("smtp settings")
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail").join("new")
    }

    /// Every message received so far.
    fn received(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.maildir()) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        files.iter().map(|f| parse(f)).collect()
    }
}

fn parse(file: &Path) -> Received {
    let raw = std::fs::read_to_string(file).expect("a message").replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").expect("headers and body");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let body = if header("Content-Transfer-Encoding").eq_ignore_ascii_case("quoted-printable") {
        quoted_printable(body)
    } else {
        body.to_owned()
    };
    Received {
        to: header("To"),
        subject: header("Subject"),
        body,
    }
}

/// Decodes a quoted-printable body (RFC 2045 §6.7): soft line breaks
/// joined, `=XX` turned back into its byte.
fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(b) = joined
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 text")
}

/// Runs the mail worker's pass and waits (for aiosmtpd, a real process)
/// until `n` messages to `to` have arrived; returns them, oldest first.
async fn mail_to(app: &TestApp, server: &MailServer, to: &str, n: usize) -> Vec<Received> {
    let mailer = Mailer::new(&app.state.settings).unwrap().expect("[smtp] is set");
    let started = Instant::now();
    loop {
        jobs::mail::run_once(&app.state, &mailer).await.expect("mail pass");
        let got: Vec<Received> = server.received().into_iter().filter(|m| m.to == to).collect();
        if got.len() >= n {
            assert_eq!(got.len(), n, "more mail to {to} than expected: {got:?}");
            return got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{n} message(s) to {to} did not arrive; got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The messages to `to` after the worker has run (none expected to be
/// on their way).
async fn delivered_to(app: &TestApp, server: &MailServer, to: &str) -> Vec<Received> {
    let mailer = Mailer::new(&app.state.settings).unwrap().expect("[smtp] is set");
    jobs::mail::run_once(&app.state, &mailer).await.expect("mail pass");
    jobs::mail::run_once(&app.state, &mailer).await.expect("mail pass");
    server.received().into_iter().filter(|m| m.to == to).collect()
}

/// An app whose `[smtp]` is `server`.
async fn app_mailing(server: &MailServer) -> TestApp {
    let smtp = server.settings();
    spawn_app_with(move |s| s.smtp = Some(smtp)).await
}

/// A member `username` whose address `username@example.org` is verified.
async fn verified(app: &TestApp, username: &str) -> User {
    let user = app.user(username, UserType::Member).await;
    let email = user.email.clone().unwrap();
    let secret = mint(LinkPurpose::VerifyEmail.secret_kind());
    let now = app.clock.now();
    app.state
        .store
        .queue_link(
            &NewLink {
                digest: &secret.digest,
                purpose: LinkPurpose::VerifyEmail,
                user_id: &user.id,
                email: &email,
                expires_at: now + 60,
            },
            &NewMail {
                kind: healthgate_core::recovery::MailKind::Verification,
                user_id: Some(&user.id),
                recipient: SET_UP,
                subject: "set-up",
                body: "set-up",
                give_up_at: now + 60,
            },
            &Event::new(healthgate_core::event::EventKind::EmailVerificationSent),
            now,
        )
        .await
        .unwrap();
    app.state
        .store
        .verify_email(&secret.digest, None, now)
        .await
        .unwrap()
        .expect("verified");
    app.state.store.user(&user.id).await.unwrap().unwrap()
}

/// A link as a path on the app.
fn path_of(app: &TestApp, link: &str) -> String {
    link.strip_prefix(&app.base).expect("a link to this app").to_owned()
}

/// Asks for a reset link for `email` in a fresh browser (without `[smtp]`
/// the page has no form: the sign-in page's token is sent).
async fn forgot(app: &TestApp, email: &str) -> reqwest::Response {
    let b = app.browser();
    let mut page = b.get("/password/forgot").await.text().await.unwrap();
    if !page.contains("csrf_token") {
        page = b.get("/login").await.text().await.unwrap();
    }
    let mut form: Vec<(String, String)> = hidden_input_list(&page)
        .into_iter()
        .filter(|(k, _)| k == "csrf_token")
        .collect();
    form.push(("email".into(), email.into()));
    b.post_form("/password/forgot", &form).await
}

/// The text a reader sees of the forgot page's answer.
fn answer_of(page: &str) -> String {
    let start = page.find("<section").expect("a card");
    let end = page.find("</section>").expect("a card");
    page[start..end].to_owned()
}

/// Opens a reset link and chooses `password` in `browser`.
async fn reset_with(browser: &Browser, path: &str, password: &str) -> reqwest::Response {
    let page = browser.get(path).await;
    assert_eq!(page.status(), StatusCode::OK, "the reset page opens");
    let page = page.text().await.unwrap();
    assert!(page.contains("Choose a new password"), "{page}");
    let mut form = hidden_input_list(&page);
    form.push(("new_password".into(), password.into()));
    form.push(("new_password_confirmation".into(), password.into()));
    browser.post_form("/password/reset", &form).await
}

const NEW_PASSWORD: &str = "a much better passphrase";
/// Where the message of a link `verified` makes goes (aiosmtpd takes it).
const SET_UP: &str = "set-up@healthgate.test";

/// The one message of `mail` whose subject starts with `subject`.
fn titled<'m>(mail: &'m [Received], subject: &str) -> &'m Received {
    let found: Vec<&Received> = mail.iter().filter(|m| m.subject.starts_with(subject)).collect();
    assert_eq!(found.len(), 1, "{subject}: {mail:?}");
    found[0]
}

#[tokio::test]
async fn an_address_is_verified_once_by_its_link_which_expires() {
    let Some(server) = MailServer::start("an_address_is_verified_once_by_its_link_which_expires")
    else {
        return;
    };
    let app = app_mailing(&server).await;
    let (browser, alice) = app.signed_in("alice").await;
    let profile = browser.get("/account/profile").await.text().await.unwrap();
    assert!(profile.contains("Unverified:"), "{profile}");
    assert!(profile.contains("Send verification link"), "{profile}");
    let csrf = hidden_inputs(&profile).remove("csrf_token").unwrap();
    let form = vec![("csrf_token".to_owned(), csrf.clone())];
    let r = browser.post_form("/account/profile/email/verify", &form).await;
    let page = browser.follow(r).await.text().await.unwrap();
    assert!(page.contains("A verification link is on its way"), "{page}");

    let mail = mail_to(&app, &server, "alice@example.org", 1).await;
    assert!(mail[0].subject.starts_with("Verify your email address"), "{:?}", mail[0]);
    let link = mail[0].link(&app.base);
    assert!(link.contains("/email/verify?token=hg_ev_"), "{link}");
    // The body is blanked once sent: the secret is not kept.
    let outbox = app.state.store.outbox(10).await.unwrap();
    assert!(outbox.iter().all(|m| m.status == "sent" && m.body.is_none()), "{outbox:?}");

    // Opened in another browser (no sign-in needed): a page, then a button.
    let elsewhere = app.browser();
    let page = elsewhere.get(&path_of(&app, &link)).await.text().await.unwrap();
    assert!(page.contains("Verify alice@example.org"), "{page}");
    let form = hidden_input_list(&page);
    let r = elsewhere.post_form("/email/verify", &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("is verified"));
    let profile = browser.get("/account/profile").await.text().await.unwrap();
    assert!(profile.contains("Verified:"), "{profile}");
    assert!(!profile.contains("Send verification link"), "{profile}");
    // Replayed: a clear page, nothing changes.
    let r = elsewhere.post_form("/email/verify", &form).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("This link no longer works"));
    assert_eq!(app.events_of("email.verified").await.len(), 1);
    assert_eq!(app.events_of("email.verification_sent").await.len(), 1);

    // A new address is unverified and gets its own link, which expires.
    let csrf = hidden_inputs(&browser.get("/account/profile").await.text().await.unwrap())
        .remove("csrf_token")
        .unwrap();
    let form = vec![
        ("csrf_token".to_owned(), csrf),
        ("email".to_owned(), "alice@example.net".to_owned()),
    ];
    let r = browser.post_form("/account/profile", &form).await;
    let page = browser.follow(r).await.text().await.unwrap();
    assert!(page.contains("A verification link is on its way to your new email address"), "{page}");
    assert!(page.contains("Unverified:"), "{page}");
    let user = app.state.store.user(&alice.id).await.unwrap().unwrap();
    assert_eq!(user.email_verified_at, None);
    let mail = mail_to(&app, &server, "alice@example.net", 1).await;
    let link = path_of(&app, &mail[0].link(&app.base));
    app.clock.advance(24 * 3600 + 1);
    let r = app.browser().get(&link).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("This link no longer works"));
}

#[tokio::test]
async fn forgot_password_answers_every_address_alike_and_mails_only_a_verified_one() {
    let Some(server) = MailServer::start(
        "forgot_password_answers_every_address_alike_and_mails_only_a_verified_one",
    ) else {
        return;
    };
    let app = app_mailing(&server).await;
    let login = app.browser().get("/login").await.text().await.unwrap();
    assert!(login.contains("href=\"/password/forgot\""), "{login}");
    verified(&app, "alice").await;
    app.user("bob", UserType::Member).await; // bob@example.org, unverified

    let mut answers = Vec::new();
    for email in ["Alice@Example.org", "bob@example.org", "nobody@example.org"] {
        let r = forgot(&app, email).await;
        assert_eq!(r.status(), StatusCode::OK, "{email}");
        let page = r.text().await.unwrap();
        assert!(page.contains("a link to choose a new password is on its way"), "{page}");
        answers.push(answer_of(&page));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
    // Something that is not an address is said to be one to fix.
    let r = forgot(&app, "alice").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("such as name@example.org"));

    let mail = mail_to(&app, &server, "alice@example.org", 1).await;
    assert!(mail[0].subject.starts_with("Reset your healthgate password"), "{:?}", mail[0]);
    assert!(mail[0].link(&app.base).contains("/password/reset?token=hg_pr_"));
    assert!(mail[0].body.contains("alice"));
    assert!(delivered_to(&app, &server, "bob@example.org").await.is_empty());
    assert!(delivered_to(&app, &server, "nobody@example.org").await.is_empty());
    let sent: Vec<Received> = server.received().into_iter().filter(|m| m.to != SET_UP).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    // Each request is audited, saying only to the trail whether it matched.
    let requested = app.events_of("password.reset_requested").await;
    assert_eq!(requested.len(), 3);
    assert_eq!(requested.iter().filter(|e| e.subject.is_some()).count(), 1);
}

#[tokio::test]
async fn a_reset_ends_every_session_revokes_refresh_tokens_and_tells_the_person() {
    let Some(server) = MailServer::start(
        "a_reset_ends_every_session_revokes_refresh_tokens_and_tells_the_person",
    ) else {
        return;
    };
    let app = app_mailing(&server).await;
    let alice = verified(&app, "alice").await;
    let client = app.confidential().await;
    let signed_in = app.browser();
    assert_eq!(signed_in.login("alice", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let code = app.code(&signed_in, &client, &[]).await;
    let (status, tokens) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me(&access_token).await, StatusCode::OK);

    assert_eq!(forgot(&app, "alice@example.org").await.status(), StatusCode::OK);
    let mail = mail_to(&app, &server, "alice@example.org", 1).await;
    let link = path_of(&app, &mail[0].link(&app.base));
    let other = app.browser();
    // A password the rules refuse is refused here too, beside its field.
    let page = other.get(&link).await.text().await.unwrap();
    let mut form = hidden_input_list(&page);
    form.push(("new_password".into(), "password".into()));
    form.push(("new_password_confirmation".into(), "password".into()));
    let r = other.post_form("/password/reset", &form).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("field-error"));

    let r = reset_with(&other, &link, NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Your password was changed"));

    // Every session ended: the signed-in browser is sent to sign in.
    let r = signed_in.get("/account").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login"), "{}", location(&r));
    // The refresh token stops working, and the access token with it.
    let (status, body) = app.refresh(&client, &refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(app.me(&access_token).await, StatusCode::UNAUTHORIZED);
    // The old password no longer signs in; the new one does.
    assert_eq!(app.browser().login("alice", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.browser().login("alice", NEW_PASSWORD).await.status(), StatusCode::SEE_OTHER);

    let reset = app.events_of("password.reset").await;
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0].subject.as_deref(), Some(alice.id.as_str()));
    let data: serde_json::Value = serde_json::from_str(reset[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(data["families_revoked"], 1);
    assert!(!app.events_of("token.family_revoked").await.is_empty());
    // Told by email.
    let mail = mail_to(&app, &server, "alice@example.org", 2).await;
    let notice = titled(&mail, "Your password was reset");
    assert!(!notice.body.contains("token="), "{notice:?}");
}

#[tokio::test]
async fn a_reset_link_works_once_and_not_after_thirty_minutes() {
    let Some(server) =
        MailServer::start("a_reset_link_works_once_and_not_after_thirty_minutes")
    else {
        return;
    };
    let app = app_mailing(&server).await;
    verified(&app, "alice").await;
    forgot(&app, "alice@example.org").await;
    let mail = mail_to(&app, &server, "alice@example.org", 1).await;
    let link = path_of(&app, &mail[0].link(&app.base));
    let b = app.browser();
    let page = b.get(&link).await.text().await.unwrap();
    let mut form = hidden_input_list(&page);
    form.push(("new_password".into(), NEW_PASSWORD.into()));
    form.push(("new_password_confirmation".into(), NEW_PASSWORD.into()));
    assert_eq!(b.post_form("/password/reset", &form).await.status(), StatusCode::OK);
    // Replayed: a clear page, and the password stays.
    let r = b.post_form("/password/reset", &form).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("This link no longer works"));
    assert_eq!(b.get(&link).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.events_of("password.reset").await.len(), 1);

    // A new link, 31 minutes later: expired, both when opened and sent.
    forgot(&app, "alice@example.org").await;
    let mail = mail_to(&app, &server, "alice@example.org", 3).await;
    titled(&mail, "Your password was reset");
    let links: Vec<String> = mail
        .iter()
        .filter(|m| m.subject.starts_with("Reset your"))
        .map(|m| path_of(&app, &m.link(&app.base)))
        .filter(|l| *l != link)
        .collect();
    assert_eq!(links.len(), 1, "{mail:?}");
    let link = links[0].clone();
    let b = app.browser();
    let page = b.get(&link).await.text().await.unwrap();
    let mut form = hidden_input_list(&page);
    form.push(("new_password".into(), "yet another passphrase".into()));
    form.push(("new_password_confirmation".into(), "yet another passphrase".into()));
    app.clock.advance(31 * 60);
    let r = b.get(&link).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("This link no longer works"));
    let r = b.post_form("/password/reset", &form).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.events_of("password.reset").await.len(), 1);
    assert_eq!(app.browser().login("alice", NEW_PASSWORD).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn forgot_password_is_throttled_per_address_with_retry_after() {
    let Some(server) = MailServer::start("forgot_password_is_throttled_per_address_with_retry_after")
    else {
        return;
    };
    let app = app_mailing(&server).await;
    verified(&app, "alice").await;
    for _ in 0..3 {
        assert_eq!(forgot(&app, "alice@example.org").await.status(), StatusCode::OK);
    }
    // Counted as typed, so an address no account has is throttled alike.
    for email in ["ALICE@example.org", "nobody@example.org"] {
        if email == "nobody@example.org" {
            for _ in 0..3 {
                assert_eq!(forgot(&app, email).await.status(), StatusCode::OK);
            }
        }
        let r = forgot(&app, email).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{email}");
        let wait: i64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(wait > 3000 && wait <= 3601, "{wait}");
        assert!(r.text().await.unwrap().contains("Too many requests for a reset link"));
    }
    // Three links, no more.
    assert_eq!(mail_to(&app, &server, "alice@example.org", 3).await.len(), 3);
    // Never for good: an hour later it is answered again.
    app.clock.advance(3602);
    assert_eq!(forgot(&app, "alice@example.org").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_password_change_is_told_to_a_verified_address_only() {
    let Some(server) = MailServer::start("a_password_change_is_told_to_a_verified_address_only")
    else {
        return;
    };
    let app = app_mailing(&server).await;
    verified(&app, "alice").await;
    app.user("bob", UserType::Member).await;
    for who in ["alice", "bob"] {
        let b = app.browser();
        b.login(who, PASSWORD).await;
        let page = b.get("/account/profile").await.text().await.unwrap();
        let csrf = hidden_inputs(&page).remove("csrf_token").unwrap();
        let form = vec![
            ("csrf_token".to_owned(), csrf),
            ("current_password".to_owned(), PASSWORD.to_owned()),
            ("new_password".to_owned(), NEW_PASSWORD.to_owned()),
            ("new_password_confirmation".to_owned(), NEW_PASSWORD.to_owned()),
        ];
        let r = b.post_form("/account/profile/password", &form).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{who}");
    }
    let mail = mail_to(&app, &server, "alice@example.org", 1).await;
    assert!(mail[0].subject.starts_with("Your password was changed"), "{:?}", mail[0]);
    assert!(mail[0].body.contains("Account: alice"), "{:?}", mail[0]);
    assert!(delivered_to(&app, &server, "bob@example.org").await.is_empty());
    assert_eq!(app.events_of("email.notice_queued").await.len(), 1);
    let delivered = app.events_of("email.delivered").await;
    let notices = delivered
        .iter()
        .filter(|e| e.data.as_deref().unwrap_or("").contains("\"notice\""))
        .count();
    assert_eq!(notices, 1, "{delivered:?}");
}

#[tokio::test]
async fn mail_that_cannot_be_delivered_is_retried_then_given_up_and_audited() {
    // A mail server that is not there: nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let smtp: SmtpSettings = serde_json::from_value(serde_json::json!({
        "host": "localhost", "port": port, "tls": "none", "from": "no-reply@healthgate.test",
    }))
    .unwrap();
    let app = spawn_app_with(move |s| s.smtp = Some(smtp)).await;
    verified(&app, "alice").await;
    // The person's answer does not depend on the mail server.
    assert_eq!(forgot(&app, "alice@example.org").await.status(), StatusCode::OK);
    let mailer = Mailer::new(&app.state.settings).unwrap().unwrap();
    let pass = jobs::mail::run_once(&app.state, &mailer).await.unwrap();
    assert_eq!((pass.requests, pass.sent), (1, 0));
    assert!(pass.failed >= 1, "{pass:?}");
    let outbox = app.state.store.outbox(10).await.unwrap();
    let reset = outbox.iter().find(|m| m.kind == "reset").unwrap();
    assert_eq!((reset.status.as_str(), reset.attempts), ("pending", 1));
    assert!(reset.last_error.is_some() && reset.body.is_some());
    // Retried after its backoff, until the link it carries has expired.
    app.clock.advance(31 * 60);
    let pass = jobs::mail::run_once(&app.state, &mailer).await.unwrap();
    assert!(pass.failed >= 1, "{pass:?}");
    let outbox = app.state.store.outbox(10).await.unwrap();
    let reset = outbox.iter().find(|m| m.kind == "reset").unwrap();
    assert_eq!(reset.status, "failed");
    assert_eq!(reset.body, None, "the link's secret is not kept");
    let failed: Vec<_> = app
        .events_of("email.delivery_failed")
        .await
        .into_iter()
        .filter(|e| e.data.as_deref().unwrap_or("").contains("\"reset\""))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].outcome, "failure");
    assert!(!failed[0].data.as_deref().unwrap().contains("token"));
}

/// A private CA and a certificate it issued for `localhost` and
/// 127.0.0.1, made with `openssl` in `dir`: (CA, certificate, key).
fn private_ca(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .ok()?;
    let made = run(&[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=healthgate test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    ]) && run(&[
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
    ]) && run(&[
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    ]);
    made.then(|| (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key")))
}

/// `[smtp]` for a TLS server on `port` at `localhost`.
fn tls_settings(port: u16, tls: &str, ca_file: Option<&Path>) -> SmtpSettings {
    let mut table = serde_json::json!({
        "host": "localhost", "port": port, "tls": tls, "from": "no-reply@healthgate.test",
    });
    if let Some(ca) = ca_file {
        table["ca_file"] = serde_json::json!(ca);
    }
    serde_json::from_value(table).expect("smtp settings")
}

#[tokio::test]
async fn mail_goes_over_starttls_and_implicit_tls_to_a_server_the_ca_file_vouches_for() {
    let test = "mail_goes_over_starttls_and_implicit_tls_to_a_server_the_ca_file_vouches_for";
    let certs = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = private_ca(certs.path()) else {
        eprintln!("recovery::{test} skipped: openssl could not make a test CA");
        return;
    };
    for (tls, cert_flag, key_flag) in [
        ("starttls", "--tlscert", "--tlskey"),
        ("implicit", "--smtpscert", "--smtpskey"),
    ] {
        let Some(server) = MailServer::start_with(
            test,
            &[
                cert_flag.as_ref(),
                cert.as_os_str(),
                key_flag.as_ref(),
                key.as_os_str(),
            ],
        ) else {
            return;
        };
        // Trusting the private CA: delivered.
        let smtp = tls_settings(server.port, tls, Some(&ca));
        let app = spawn_app_with(move |s| s.smtp = Some(smtp)).await;
        verified(&app, "alice").await;
        forgot(&app, "alice@example.org").await;
        let mail = mail_to(&app, &server, "alice@example.org", 1).await;
        assert!(mail[0].subject.starts_with("Reset your"), "{tls}: {mail:?}");

        // Without it the certificate is refused: nothing is sent.
        let smtp = tls_settings(server.port, tls, None);
        let app = spawn_app_with(move |s| s.smtp = Some(smtp)).await;
        verified(&app, "bob").await;
        forgot(&app, "bob@example.org").await;
        let mailer = Mailer::new(&app.state.settings).unwrap().unwrap();
        let pass = jobs::mail::run_once(&app.state, &mailer).await.unwrap();
        assert_eq!(pass.sent, 0, "{tls}");
        let outbox = app.state.store.outbox(10).await.unwrap();
        let reset = outbox.iter().find(|m| m.kind == "reset").unwrap();
        let error = reset.last_error.as_deref().unwrap_or("");
        assert!(error.to_lowercase().contains("certificate"), "{tls}: {error}");
        assert!(server.received().iter().all(|m| m.to != "bob@example.org"));
    }
}

#[tokio::test]
async fn a_ca_file_that_is_no_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let settings = Settings {
        smtp: Some(tls_settings(2525, "starttls", Some(&bad))),
        ..Settings::default()
    };
    let Err(e) = healthgate_server::open(settings, std::sync::Arc::new(ManualClock::starting_now())).await
    else {
        panic!("a ca_file without a certificate was accepted");
    };
    assert!(e.to_string().contains("smtp.ca_file"), "{e}");
}

#[tokio::test]
async fn without_smtp_recovery_goes_through_an_operator() {
    let app = spawn_app().await;
    let login = app.browser().get("/login").await.text().await.unwrap();
    assert!(login.contains("Forgot password?"), "{login}");
    let r = app.browser().get("/password/forgot").await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("does not send password reset links by email"), "{page}");
    assert!(page.contains("ask an administrator of this platform"), "{page}");
    assert!(!page.contains("name=\"email\""), "{page}");
    // A request changes nothing and queues nothing.
    let r = forgot(&app, "alice@example.org").await;
    let status = r.status();
    assert_eq!(status, StatusCode::OK, "{}", r.text().await.unwrap());
    assert!(app.state.store.outbox(10).await.unwrap().is_empty());
    // No verification on the profile.
    let (browser, _) = app.signed_in("alice").await;
    let profile = browser.get("/account/profile").await.text().await.unwrap();
    assert!(!profile.contains("Send verification link"), "{profile}");
    assert!(!profile.contains("Unverified"), "{profile}");
    // With a support link, it names the platform's support.
    let app = spawn_app_with(|s| {
        s.branding.support_url = Some("https://help.example.org/".parse().unwrap());
    })
    .await;
    let page = app.browser().get("/password/forgot").await.text().await.unwrap();
    assert!(page.contains("s support</a>"), "{page}");
}

#[tokio::test]
async fn plaintext_smtp_to_another_host_is_refused_at_start() {
    let settings = Settings {
        smtp: Some(
            serde_json::from_value(serde_json::json!({
                "host": "mail.example.com", "tls": "none", "from": "no-reply@example.com",
            }))
            .unwrap(),
        ),
        ..Settings::default()
    };
    let clock = std::sync::Arc::new(ManualClock::starting_now());
    let Err(e) = healthgate_server::open(settings, clock).await else {
        panic!("plaintext SMTP to mail.example.com was accepted");
    };
    let said = e.to_string();
    assert!(said.contains("smtp.tls"), "{said}");
    assert!(said.contains("loopback") && said.contains("mail.example.com"), "{said}");
}

#[tokio::test]
async fn second_factor_changes_are_told_to_a_verified_address() {
    let Some(server) = MailServer::start("second_factor_changes_are_told_to_a_verified_address")
    else {
        return;
    };
    let app = app_mailing(&server).await;
    verified(&app, "alice").await;
    let b = app.browser();
    b.login("alice", PASSWORD).await;
    super::second_factors::enrol(&app, &b).await;
    let mail = mail_to(&app, &server, "alice@example.org", 1).await;
    assert!(mail[0].body.contains("Account: alice"), "{:?}", mail[0]);
    let (user, _) = admin::reset_mfa(
        &app.state.store,
        app.clock.as_ref(),
        "alice",
        None,
        Actor::system(),
    )
    .await
    .unwrap();
    healthgate_server::services::mail::security_notice(
        &app.state,
        &user,
        healthgate_core::recovery::Notice::FactorsReset,
    )
    .await
    .unwrap();
    let mail = mail_to(&app, &server, "alice@example.org", 2).await;
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert_ne!(subjects[0], subjects[1], "each change says what it was");
    let queued = app.events_of("email.notice_queued").await;
    let what: Vec<String> = queued.iter().filter_map(|e| e.data.clone()).collect();
    assert!(what.iter().any(|d| d.contains("factor_added")), "{what:?}");
    assert!(what.iter().any(|d| d.contains("factors_reset")), "{what:?}");
}
