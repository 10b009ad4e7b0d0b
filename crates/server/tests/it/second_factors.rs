//! A second factor (issue 13, item 2): an authenticator app set up on the
//! security page with the secret shown there, read by the stock `totp-rs`
//! library as an authenticator app would; recovery codes shown once; the
//! second step of signing in, where a code works once and wrong codes are
//! throttled like passwords; the policy that makes people enrol first; and
//! an operator's reset. Time moves with the test clock.

use reqwest::StatusCode;
use totp_rs::{Algorithm, Secret, TOTP};

use super::*;

/// What an authenticator app holds after scanning: the secret read from the
/// page's text, in the stock library.
fn app_from(secret_text: &str) -> TOTP {
    let encoded: String = secret_text.split_whitespace().collect();
    let bytes = Secret::Encoded(encoded).to_bytes().expect("a base32 secret");
    TOTP::new(Algorithm::SHA1, 6, 1, 30, bytes).expect("a TOTP")
}

/// The text of the element with `id` (its first text, tags left out).
fn text_of(page: &str, id: &str) -> Option<String> {
    let start = page.find(&format!("id=\"{id}\""))?;
    let rest = &page[start..];
    let rest = &rest[rest.find('>')? + 1..];
    Some(unescape_html(&rest[..rest.find('<')?]))
}

/// Every `<code>` on the page that is a recovery code.
fn recovery_codes(page: &str) -> Vec<String> {
    page.split("<code>")
        .skip(1)
        .filter_map(|c| c.split_once("</code>").map(|(v, _)| v.to_owned()))
        .filter(|v| v.starts_with("hg_rc_"))
        .collect()
}

pub(super) fn csrf(page: &str) -> String {
    hidden_inputs(page)
        .remove("csrf_token")
        .expect("a csrf_token on the page")
}

/// Sets up an authenticator app for a signed-in browser through the pages;
/// returns the app and the recovery codes shown.
pub(super) async fn enrol(app: &TestApp, b: &Browser) -> (TOTP, Vec<String>) {
    let page = b.get("/account/security").await.text().await.unwrap();
    let r = b
        .post_form(
            "/account/security/totp",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("label".into(), "Phone".into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("<svg"), "a QR code drawn on the page");
    let secret = text_of(&page, "totp-secret").expect("the secret as text");
    let totp = app_from(&secret);
    let form = hidden_inputs(&page);
    // A wrong first code does not confirm it; the same secret is shown again.
    let r = b
        .post_form(
            "/account/security/totp/confirm",
            &[
                ("csrf_token".into(), form["csrf_token"].clone()),
                ("factor_id".into(), form["factor_id"].clone()),
                ("code".into(), "000000".into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let again = r.text().await.unwrap();
    assert_eq!(text_of(&again, "totp-secret").unwrap(), secret);
    assert!(again.contains("That code is not the one the app shows now"));
    let code = totp.generate(app.clock.now() as u64);
    let r = b
        .post_form(
            "/account/security/totp/confirm",
            &[
                ("csrf_token".into(), form["csrf_token"].clone()),
                ("factor_id".into(), form["factor_id"].clone()),
                ("code".into(), code),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    let codes = recovery_codes(&page);
    assert_eq!(codes.len(), 10, "ten recovery codes shown once");
    (totp, codes)
}

/// The second step's form: posts `code`, returns the response.
pub(super) async fn second_step(b: &Browser, code: &str) -> reqwest::Response {
    let page = b.get("/login/second-factor").await.text().await.unwrap();
    b.post_form(
        "/login/second-factor",
        &[
            ("csrf_token".into(), csrf(&page)),
            ("code".into(), code.into()),
        ],
    )
    .await
}

/// Whether the browser is signed in (its account page opens).
async fn signed_in(b: &Browser) -> bool {
    b.get("/account").await.status() == StatusCode::OK
}

/// Signs in with the password only: the answer must send to the second step.
pub(super) async fn password_step(b: &Browser, username: &str) {
    let r = b.login(username, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&r).starts_with("/login/second-factor"),
        "{}",
        location(&r)
    );
}

#[tokio::test]
async fn an_authenticator_app_is_set_up_and_then_asked_for_after_the_password() {
    let app = spawn_app().await;
    let (b, user) = app.signed_in("dana").await;
    let (totp, codes) = enrol(&app, &b).await;
    let page = b.get("/account/security").await.text().await.unwrap();
    assert!(page.contains("Phone"), "the factor is listed by its name");
    assert!(text_of(&page, "codes-left").unwrap().contains("10 unused"));
    let enrolled = app.events_of("mfa.enrolled").await;
    assert_eq!(enrolled.len(), 1);
    assert_eq!(enrolled[0].subject.as_deref(), Some(user.id.as_str()));
    // Nothing secret is kept in the clear: the digests of the codes only,
    // and the TOTP secret sealed.
    let factors = app.state.store.factors_of_user(&user.id).await.unwrap();
    let shown = totp.get_secret_base32();
    assert!(!factors[0].secret.contains(&shown));

    // A new sign-in: the password alone signs nobody in.
    app.clock.advance(60);
    let b2 = app.browser();
    password_step(&b2, "dana").await;
    assert!(!signed_in(&b2).await);
    let r = second_step(&b2, "123456").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("That code is not right"));
    assert!(!signed_in(&b2).await);
    let code = totp.generate(app.clock.now() as u64);
    let r = second_step(&b2, &code).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(signed_in(&b2).await);
    let logins = app.events_of("login.succeeded").await;
    assert!(logins[0].data.as_deref().unwrap().contains("otp"));

    // The same code, in the same window, from another browser that knows
    // the password: refused (no replay), and said so.
    let b3 = app.browser();
    password_step(&b3, "dana").await;
    let r = second_step(&b3, &code).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("used already"));
    assert!(!signed_in(&b3).await);

    // A recovery code works once, in place of the app.
    let r = second_step(&b3, &codes[0]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(signed_in(&b3).await);
    let b4 = app.browser();
    password_step(&b4, "dana").await;
    let r = second_step(&b4, &codes[0]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.events_of("mfa.recovery_code_used").await.len(), 1);
    assert_eq!(app.state.store.recovery_codes_left(&user.id).await.unwrap(), 9);
}

#[tokio::test]
async fn the_second_step_ends_after_a_few_minutes_and_needs_the_password_first() {
    let app = spawn_app().await;
    let (b, _) = app.signed_in("erin").await;
    let (totp, _) = enrol(&app, &b).await;
    // Straight to the second step, without a password: sent to sign in.
    let stranger = app.browser();
    let r = stranger.get("/login/second-factor").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login"));
    // The password, then too long a wait: the step is gone.
    let b2 = app.browser();
    password_step(&b2, "erin").await;
    app.clock.advance(301);
    let r = b2.get("/login/second-factor").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login?"));
    let r = b2.login("erin", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let code = totp.generate(app.clock.now() as u64);
    let r = second_step(&b2, &code).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(signed_in(&b2).await);
}

#[tokio::test]
async fn wrong_codes_count_like_wrong_passwords_and_lock_the_account_for_a_while() {
    let app = spawn_app_with(|s| s.throttle.sign_in_per_minute = 0).await;
    let (b, user) = app.signed_in("fay").await;
    let (totp, _) = enrol(&app, &b).await;
    let attacker = app.browser();
    password_step(&attacker, "fay").await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = second_step(&attacker, "000000").await;
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().get("retry-after").is_some());
        }
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    assert!(!app.events_of("login.second_factor_failed").await.is_empty());
    // Even the right code waits while the run is throttled.
    let code = totp.generate(app.clock.now() as u64);
    let r = second_step(&attacker, &code).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The password step counts on the same run: the right password does not
    // reset it while the second factor is still to come.
    let run = app
        .state
        .store
        .failure_run(healthgate_store::ThrottleKind::SignIn, "fay")
        .await
        .unwrap()
        .expect("a run of failures");
    assert!(run.failures >= 5, "{run:?}");
    let _ = user;
}

#[tokio::test]
async fn a_required_second_factor_is_set_up_before_anything_else() {
    let app = spawn_app_with(|s| s.mfa = healthgate_core::mfa::MfaPolicy::Required).await;
    let client = app.confidential().await;
    let (b, _) = app.signed_in("gail").await;
    // Every page waits for the set-up, and comes back after.
    let r = b.get("/account/apps").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&r),
        "/account/security?return_to=%2Faccount%2Fapps"
    );
    let page = b.get(&location(&r)).await.text().await.unwrap();
    assert!(page.contains("id=\"enrol-required\""));
    assert!(page.contains("requires a second factor for every account"));
    // No code for an app until then.
    let r = b
        .authorize(&[
            ("response_type", "code"),
            ("client_id", client.id()),
            ("redirect_uri", REDIRECT),
            ("scope", "profile_read"),
            ("state", "s"),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/account/security?return_to="), "{}", location(&r));
    // A form elsewhere is refused.
    let page = b.get("/account/security").await.text().await.unwrap();
    let r = b
        .post_form(
            "/account/sessions/end-others",
            &[("csrf_token".into(), csrf(&page))],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    enrol(&app, &b).await;
    assert_eq!(b.get("/account/apps").await.status(), StatusCode::OK);
    // The only factor cannot be removed while one is required.
    let page = b.get("/account/security").await.text().await.unwrap();
    let factor = page
        .split("name=\"factor_id\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let r = b
        .post_form(
            "/account/security/remove",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("factor_id".into(), factor),
                ("current_password".into(), PASSWORD.into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn roles_and_operators_can_require_a_second_factor() {
    let app = spawn_app_with(|s| {
        s.operators_require_mfa = true;
        s.roles.get_mut("practitioner").unwrap().require_mfa = true;
    })
    .await;
    // A member with no role: optional.
    let (member, _) = app.signed_in("hal").await;
    assert_eq!(member.get("/account/apps").await.status(), StatusCode::OK);
    // A practitioner of an organization: required.
    let (clinician, person) = app.signed_in("ida").await;
    let org = admin::create_organization(
        &app.state.store,
        app.clock.as_ref(),
        "Harbor Clinic",
        healthgate_core::org::OrganizationKind::Practice,
    )
    .await
    .unwrap();
    admin::add_member(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        &org.id,
        &person.id,
        "practitioner",
    )
    .await
    .unwrap();
    let r = clinician.get("/account/apps").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = clinician.get("/account/security").await.text().await.unwrap();
    assert!(page.contains("with the practitioner role"), "{page}");
    // An operator: required.
    let (op, op_user) = app.signed_in("jo").await;
    app.state
        .store
        .set_operator(&op_user.id, true, Actor::system(), app.clock.now())
        .await
        .unwrap();
    let r = op.get("/admin").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/account/security"));
}

#[tokio::test]
async fn new_recovery_codes_replace_the_old_and_removing_a_factor_asks_for_the_password() {
    let app = spawn_app().await;
    let (b, user) = app.signed_in("kim").await;
    let (_, old) = enrol(&app, &b).await;
    let page = b.get("/account/security").await.text().await.unwrap();
    // A wrong password changes nothing (and counts as a guess).
    let r = b
        .post_form(
            "/account/security/recovery-codes",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("current_password".into(), "not it at all".into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("That is not your password."));
    let r = b
        .post_form(
            "/account/security/recovery-codes",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("current_password".into(), PASSWORD.into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let new = recovery_codes(&r.text().await.unwrap());
    assert_eq!(new.len(), 10);
    assert!(new.iter().all(|c| !old.contains(c)));
    assert_eq!(app.events_of("mfa.recovery_codes_replaced").await.len(), 1);
    let b2 = app.browser();
    password_step(&b2, "kim").await;
    assert_eq!(second_step(&b2, &old[1]).await.status(), StatusCode::UNAUTHORIZED);
    // Remove the app: then the password alone signs in again.
    let factor = app.state.store.factors_of_user(&user.id).await.unwrap()[0]
        .id
        .clone();
    let r = b
        .post_form(
            "/account/security/remove",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("factor_id".into(), factor),
                ("current_password".into(), PASSWORD.into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.events_of("mfa.removed").await.len(), 1);
    assert_eq!(app.state.store.recovery_codes_left(&user.id).await.unwrap(), 0);
    app.clock.advance(3600);
    let b3 = app.browser();
    let r = b3.login("kim", PASSWORD).await;
    assert_eq!(location(&r), "/");
}

#[tokio::test]
async fn an_operator_resets_a_persons_factors_and_their_sessions_end() {
    let app = spawn_app().await;
    let (b, user) = app.signed_in("lee").await;
    enrol(&app, &b).await;
    let (person, factors) = admin::reset_mfa(
        &app.state.store,
        app.clock.as_ref(),
        "lee",
        Some(&healthgate_core::client::Reason::parse("lost phone, called back").unwrap()),
        Actor::system(),
    )
    .await
    .unwrap();
    assert_eq!((person.id.as_str(), factors), (user.id.as_str(), 1));
    assert!(!signed_in(&b).await, "every session ended");
    let reset = app.events_of("mfa.reset").await;
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0].subject.as_deref(), Some(user.id.as_str()));
    assert!(reset[0].data.as_deref().unwrap().contains("lost phone, called back"));
    // The password alone signs in again.
    let r = app.browser().login("lee", PASSWORD).await;
    assert_eq!(location(&r), "/");
}

#[tokio::test]
async fn an_operator_resets_second_factors_from_the_console_with_a_reason() {
    let app = spawn_app().await;
    let (b, user) = app.signed_in("mo").await;
    enrol(&app, &b).await;
    let (op, op_user) = app.signed_in("nell").await;
    app.state
        .store
        .set_operator(&op_user.id, true, Actor::system(), app.clock.now())
        .await
        .unwrap();
    let page = op.get("/admin/users?q=mo").await.text().await.unwrap();
    assert!(page.contains("Second factor"), "the list says who has one");
    assert!(page.contains("Reset second factors"));
    let form = |reason: &str| {
        vec![
            ("csrf_token".to_owned(), csrf(&page)),
            ("user_id".to_owned(), user.id.clone()),
            ("reason".to_owned(), reason.to_owned()),
        ]
    };
    // No reason, no reset.
    let r = op.post_form("/admin/users/reset-mfa", &form("  ")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(app.state.store.has_second_factor(&user.id).await.unwrap());
    let r = op
        .post_form("/admin/users/reset-mfa", &form("Lost phone; identity checked by a call"))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = op.follow(r).await.text().await.unwrap();
    assert!(page.contains("recovery codes are removed"), "{page}");
    assert!(!app.state.store.has_second_factor(&user.id).await.unwrap());
    assert!(!signed_in(&b).await);
    let reset = app.events_of("mfa.reset").await;
    assert_eq!(reset[0].actor_user_id.as_deref(), Some(op_user.id.as_str()));
    assert!(reset[0].data.as_deref().unwrap().contains("identity checked"));
}

/// What pyotp, the stock Python library, reads from an `otpauth://` URI:
/// the code at `at`, the issuer and the account name. `None` when pyotp
/// is not installed (`.ci/run` installs it into `.ci/python`).
fn pyotp(uri: &str, at: i64) -> Option<(String, String, String)> {
    let installed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/python");
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", installed)
        .args([
            "-c",
            "import pyotp, sys\nt = pyotp.parse_uri(sys.argv[1])\nprint(t.at(int(sys.argv[2])))\nprint(t.issuer)\nprint(t.name)",
            uri,
            &at.to_string(),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines().map(str::to_owned);
    Some((lines.next()?, lines.next()?, lines.next()?))
}

#[tokio::test]
async fn a_stock_authenticator_library_reads_the_link_and_signs_in() {
    let app = spawn_app_with(|s| s.platform_name = "Harbor Health".into()).await;
    let (b, _) = app.signed_in("otto").await;
    let page = b.get("/account/security").await.text().await.unwrap();
    let r = b
        .post_form(
            "/account/security/totp",
            &[("csrf_token".into(), csrf(&page)), ("label".into(), "Phone".into())],
        )
        .await;
    let page = r.text().await.unwrap();
    let uri = unescape_html(
        page.split("id=\"totp-link\" href=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("the otpauth link"),
    );
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let Some((code, issuer, name)) = pyotp(&uri, app.clock.now()) else {
        eprintln!("pyotp is not installed (.ci/run installs it): skipped");
        return;
    };
    assert_eq!((issuer.as_str(), name.as_str()), ("Harbor Health", "otto@example.org"));
    let form = hidden_inputs(&page);
    let r = b
        .post_form(
            "/account/security/totp/confirm",
            &[
                ("csrf_token".into(), form["csrf_token"].clone()),
                ("factor_id".into(), form["factor_id"].clone()),
                ("code".into(), code),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "pyotp's code confirms the app");
    app.clock.advance(30);
    let b2 = app.browser();
    password_step(&b2, "otto").await;
    let (code, _, _) = pyotp(&uri, app.clock.now()).unwrap();
    assert_eq!(second_step(&b2, &code).await.status(), StatusCode::SEE_OTHER);
    assert!(signed_in(&b2).await);
}
