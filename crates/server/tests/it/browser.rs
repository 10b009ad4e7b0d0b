//! The pages in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs).
//! A person signs in, allows and denies an app by clicking; each main page is
//! saved as a screenshot under `target/tmp/screenshots/`.
//!
//! Without Chromium and its driver on this machine the tests say so and
//! pass without running.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use healthgate_core::user::UserType;
use healthgate_server::services::admin::{self, NewClient};

use super::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser, or `None` (having said why) on a machine without one.
async fn browser(test: &str) -> Option<(Driver, Client)> {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(DRIVER).exists() {
        eprintln!(
            "browser::{test} skipped: {CHROMIUM} or {DRIVER} is missing (apt-get install chromium chromium-driver)"
        );
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=800,900",
            ],
        }),
    );
    // The driver takes a moment to listen.
    for _ in 0..50 {
        // The driver is on loopback: plain HTTP, no TLS stack needed.
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.clone());
        if let Ok(client) = builder.connect(&driver.url).await {
            return Some((driver, client));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

/// What a screen-reader and keyboard user would trip on, as the page is now:
/// no language, not exactly one `h1`, a form control without a label, an
/// image without `alt`, a button or link without a name, a duplicate id, an
/// `aria-describedby` pointing nowhere.
const ACCESSIBILITY_AUDIT: &str = r#"
const problems = [];
if (!document.documentElement.lang) problems.push('the page has no lang');
const h1 = document.querySelectorAll('h1').length;
if (h1 !== 1) problems.push('h1 elements: ' + h1);
for (const el of document.querySelectorAll('input:not([type=hidden]):not([hidden]), select, textarea')) {
  const labelled = (el.id && document.querySelector('label[for="' + el.id + '"]'))
    || el.closest('label') || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
  if (!labelled) problems.push('unlabelled control: ' + el.outerHTML.slice(0, 100));
}
for (const img of document.querySelectorAll('img')) {
  if (!img.hasAttribute('alt')) problems.push('image without alt: ' + img.outerHTML.slice(0, 100));
}
for (const el of document.querySelectorAll('button, a')) {
  if (!el.textContent.trim() && !el.getAttribute('aria-label')) problems.push('nameless: ' + el.outerHTML.slice(0, 100));
}
const seen = new Set();
for (const el of document.querySelectorAll('[id]')) {
  if (seen.has(el.id)) problems.push('duplicate id: ' + el.id);
  seen.add(el.id);
}
for (const el of document.querySelectorAll('[aria-describedby]')) {
  for (const ref of el.getAttribute('aria-describedby').split(/\s+/)) {
    if (ref && !document.getElementById(ref)) problems.push('aria-describedby names no element: ' + ref);
  }
}
return problems;
"#;

/// Saves the page as `name.png`, after checking it has none of the
/// problems [`ACCESSIBILITY_AUDIT`] looks for.
async fn screenshot(c: &Client, name: &str) {
    let problems = c
        .execute(ACCESSIBILITY_AUDIT, vec![])
        .await
        .expect("run the accessibility audit");
    assert_eq!(
        problems,
        serde_json::json!([]),
        "{name}: accessibility problems"
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// An app whose redirect URI is the server's own demo callback page, so the
/// browser lands on a page of ours after the authorization.
async fn app_with_callback(app: &TestApp) -> (String, String) {
    let redirect = app.url("/demo/callback");
    let (client, _) = admin::create_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        NewClient {
            name: "Clicky Scheduler".into(),
            redirect_uris: vec![redirect.clone()],
            scope: "profile_read profile_write".into(),
            public: false,
            photo_url: None,
            user_types: vec![],
            authorization_level: Default::default(),
            ..Default::default()
        },
        Actor::system(),
    )
    .await
    .unwrap();
    (client.id, redirect)
}

#[tokio::test]
async fn a_person_signs_in_and_allows_then_denies_by_clicking() {
    let Some((_driver, c)) = browser("a_person_signs_in_and_allows_then_denies_by_clicking").await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;
    app.user("alice", UserType::Member).await;
    let (client_id, redirect) = app_with_callback(&app).await;
    let authorize = |scope: &str| {
        format!(
            "{}?{}",
            app.url("/oauth/authorize"),
            serde_urlencoded(&[
                ("response_type", "code"),
                ("client_id", &client_id),
                ("redirect_uri", &redirect),
                ("scope", scope),
                ("state", "clicked"),
            ])
        )
    };

    c.goto(&authorize("profile_read")).await.unwrap();
    wait_for(&c, "#username").await;
    screenshot(&c, "login").await;
    sign_in_here(&c, "alice").await;
    let allow = c
        .wait()
        .for_element(Locator::Css("button[value=allow]"))
        .await
        .unwrap();
    screenshot(&c, "consent").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("Clicky Scheduler") && page.contains("Read your profile"));
    allow.click().await.unwrap();
    let code = text_of(&c, "#code").await;
    assert!(code.starts_with("hg_ac_"), "{code}");
    assert_eq!(
        c.find(Locator::Css("#state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "clicked"
    );
    screenshot(&c, "callback").await;
    // The code the browser carried works at the token endpoint.
    let url = c.current_url().await.unwrap();
    assert!(url.as_str().starts_with(&redirect));

    // A wider request asks again; this time the person says no.
    c.goto(&authorize("profile_read profile_write"))
        .await
        .unwrap();
    click(&c, "button[value=deny]").await;
    let error = text_of(&c, "#error").await;
    assert_eq!(error, "access_denied");
    c.close().await.unwrap();
}

/// Fills the sign-in form the browser is on and sends it.
async fn sign_in_here(c: &Client, username: &str) {
    c.wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys(username)
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of the page's status message, once one shows.
async fn status_message(c: &Client) -> String {
    text_of(c, "[role=status]").await
}

/// Replaces what a text field holds.
async fn type_into(c: &Client, css: &str, text: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

#[tokio::test]
async fn a_person_revokes_an_app_from_their_account_by_clicking_and_its_token_stops_working() {
    let Some((_driver, c)) = browser(
        "a_person_revokes_an_app_from_their_account_by_clicking_and_its_token_stops_working",
    )
    .await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;
    app.user("alice", UserType::Member).await;
    let (client_id, redirect) = app_with_callback(&app).await;
    let secret = admin::rotate_client_secret(
        &app.state.store,
        app.clock.as_ref(),
        &client_id,
        None,
        Actor::system(),
    )
    .await
    .unwrap();

    // The real consent page, by clicking.
    c.goto(&format!(
        "{}?{}",
        app.url("/oauth/authorize"),
        serde_urlencoded(&[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", &redirect),
            ("scope", "profile_read"),
            ("state", "revoke-me"),
        ])
    ))
    .await
    .unwrap();
    sign_in_here(&c, "alice").await;
    click(&c, "button[value=allow]").await;
    let code = text_of(&c, "#code").await;
    let (status, body) = app
        .token(
            Some((&client_id, &secret)),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect),
            ],
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me(&access).await, reqwest::StatusCode::OK);

    // The account page lists it; Revoke, by clicking.
    c.goto(&app.url("/account")).await.unwrap();
    c.wait()
        .for_element(Locator::LinkText("Connected apps"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let card = c
        .wait()
        .for_element(Locator::Css(&format!("#app-{client_id}")))
        .await
        .unwrap();
    assert!(card.text().await.unwrap().contains("Clicky Scheduler"));
    screenshot(&c, "account-apps").await;
    card.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = status_message(&c).await;
    assert!(
        notice.contains("Clicky Scheduler no longer has access"),
        "{notice}"
    );
    assert!(
        c.find(Locator::Css(&format!("#app-{client_id}")))
            .await
            .is_err(),
        "the app is gone from the list"
    );

    // Its token stops working at once, at the resource and at introspection.
    assert_eq!(app.me(&access).await, reqwest::StatusCode::UNAUTHORIZED);
    let introspected: serde_json::Value = app
        .http()
        .post(app.url("/oauth/introspect"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], false, "{introspected}");
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_person_edits_their_profile_and_signs_out_everywhere_else_by_clicking() {
    let Some((_driver, c)) =
        browser("a_person_edits_their_profile_and_signs_out_everywhere_else_by_clicking").await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;
    let user = app.user("alice", UserType::Member).await;
    // Alice is also signed in on her phone.
    let phone = Browser {
        base: app.base.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .user_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
            .build()
            .unwrap(),
    };
    assert_eq!(
        phone.login("alice", PASSWORD).await.status(),
        reqwest::StatusCode::SEE_OTHER
    );

    c.goto(&app.url("/account")).await.unwrap();
    sign_in_here(&c, "alice").await;
    wait_for(&c, "#account-heading").await;
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("Signed in on 2 browsers.")
    );
    screenshot(&c, "account").await;

    // Profile: a wrong email is shown beside its field, then the name and
    // email are saved.
    follow(&c, "Profile").await;
    wait_for(&c, "#name").await;
    type_into(&c, "#name", "Alice Example").await;
    type_into(&c, "#email", "not-an-email").await;
    click(&c, "form[action='/account/profile'] button").await;
    let message = text_of(&c, "#email-error").await;
    assert!(message.starts_with("Email must be an address"), "{message}");
    let email = c.find(Locator::Css("#email")).await.unwrap();
    assert_eq!(
        email.attr("aria-describedby").await.unwrap().as_deref(),
        Some("email-error")
    );
    screenshot(&c, "account-profile-error").await;
    type_into(&c, "#email", "alice@clinic.example").await;
    click(&c, "form[action='/account/profile'] button").await;
    assert_eq!(status_message(&c).await, "Your profile was saved.");
    screenshot(&c, "account-profile").await;
    let stored = app.state.store.user(&user.id).await.unwrap().unwrap();
    assert_eq!(stored.name.as_deref(), Some("Alice Example"));
    assert_eq!(stored.email.as_deref(), Some("alice@clinic.example"));

    // Sessions: this browser and the phone; sign out everywhere else.
    follow(&c, "Sessions").await;
    let this = c
        .wait()
        .for_element(Locator::Css(".this-browser"))
        .await
        .unwrap();
    assert_eq!(this.text().await.unwrap(), "This browser");
    let page = c.source().await.unwrap();
    assert!(page.contains("Chrome on Linux"), "this browser, named");
    assert!(page.contains("Safari on iOS"), "the phone");
    screenshot(&c, "account-sessions").await;
    c.find(Locator::XPath(
        "//button[normalize-space()='Sign out everywhere else']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    assert_eq!(
        status_message(&c).await,
        "Signed out of 1 other session. This browser stays signed in."
    );
    assert!(!c.source().await.unwrap().contains("Safari on iOS"));
    let r = phone.get("/account").await;
    assert_eq!(
        r.status(),
        reqwest::StatusCode::SEE_OTHER,
        "the phone is signed out"
    );

    // At phone width the account pages fit without sideways scrolling.
    c.set_window_size(390, 844).await.unwrap();
    for path in ["/account", "/account/profile", "/account/sessions"] {
        c.goto(&app.url(path)).await.unwrap();
        wait_for(&c, ".account-nav").await;
        let overflow = c
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(overflow.as_i64(), Some(0), "{path} fits 390px");
    }
    screenshot(&c, "account-phone").await;
    c.close().await.unwrap();
}

/// Clicks the element `css` selects. The page may still be the previous
/// one when the element is found (when both have it) and be replaced
/// before the click lands: then it is found again on the new page.
async fn click(c: &Client, css: &str) {
    for _ in 0..20 {
        let element = c
            .wait()
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match element.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{css}: {e}"),
        }
    }
    panic!("{css}: the element kept going stale");
}

/// Waits for the element `css` selects to be on the page.
async fn wait_for(c: &Client, css: &str) {
    c.wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
}

/// The text of the element `css` selects once `wanted` holds for it
/// (the page may be replaced in between).
async fn text_until(c: &Client, css: &str, wanted: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(element) = c.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if wanted(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} still reads {last:?}");
}

/// Waits until no element `css` selects is on the page (the page that had
/// it was replaced).
async fn wait_gone(c: &Client, css: &str) {
    for _ in 0..100 {
        if c.find(Locator::Css(css)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} is still on the page");
}

/// Follows the link that reads `text`, finding it again if the page was
/// replaced under the click.
async fn follow(c: &Client, text: &str) {
    for _ in 0..20 {
        let link = c
            .wait()
            .for_element(Locator::LinkText(text))
            .await
            .unwrap_or_else(|e| panic!("link {text:?}: {e}"));
        match link.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("link {text:?}: {e}"),
        }
    }
    panic!("link {text:?}: it kept going stale");
}

async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_developer_signs_up_registers_an_app_and_walks_the_playground_by_clicking() {
    let Some((_driver, c)) =
        browser("a_developer_signs_up_registers_an_app_and_walks_the_playground_by_clicking").await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;

    // Sign up from the portal's front page.
    c.goto(&app.url("/developers")).await.unwrap();
    click(&c, "a[href='/developers/signup']").await;
    wait_for(&c, "#username").await;
    type_into(&c, "#username", "devon").await;
    type_into(&c, "#name", "Devon Partner").await;
    type_into(&c, "#email", "devon@partner.example").await;
    type_into(&c, "#password", PASSWORD).await;
    type_into(&c, "#password_confirmation", "not the same").await;
    click(&c, "button[type=submit]").await;
    // The mismatch is said next to the field.
    assert!(
        text_of(&c, "#password_confirmation-error")
            .await
            .contains("differ")
    );
    type_into(&c, "#password", PASSWORD).await;
    type_into(&c, "#password_confirmation", PASSWORD).await;
    click(&c, "button[type=submit]").await;

    // Register an app with the seed's fields.
    click(&c, "a[href='/developers/apps/new']").await;
    wait_for(&c, "#name").await;
    type_into(&c, "#name", "Sunrise Scheduling").await;
    type_into(&c, "#description", "Books appointments for your practice.").await;
    type_into(
        &c,
        "#redirect_uris",
        "https://sunrise.example/oauth/callback",
    )
    .await;
    click(&c, "input[name=scope][value=openid]").await;
    click(&c, "input[name=scope][value=profile_read]").await;
    screenshot(&c, "portal-register").await;
    click(&c, "form button[type=submit].primary").await;
    let client_id = text_of(&c, "#app-id").await;
    let secret = text_of(&c, "#app-secret").await;
    assert!(client_id.starts_with("app-") && secret.starts_with("hg_cs_"));
    // The page's one script (served here, no inline script) shows a Copy
    // button beside the APP_ID and the APP_SECRET.
    for value in ["app-id", "app-secret"] {
        let button = format!("button[data-copy='{value}']:not([hidden])");
        c.wait()
            .for_element(Locator::Css(&button))
            .await
            .unwrap_or_else(|e| panic!("{button}: {e}"));
    }
    screenshot(&c, "portal-credentials").await;
    // Reloading the result page registers nothing more; it says the
    // secret was shown and shows it no more.
    c.refresh().await.unwrap();
    wait_for(&c, "#secret-shown").await;
    assert!(!c.source().await.unwrap().contains(&secret));
    let devon = app
        .state
        .store
        .user_by_username("devon")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        app.state
            .store
            .clients_of_owner(&devon.id)
            .await
            .unwrap()
            .len(),
        1
    );

    // The playground: add its redirect URI, then walk the flow.
    click(&c, &format!("a[href='/playground?client_id={client_id}']")).await;
    click(&c, "form[action='/playground/redirect-uri'] button").await;
    // The page after it has the same authorization form: wait for the new
    // one, or the next click may land on the page being left.
    wait_gone(&c, "form[action='/playground/redirect-uri']").await;
    click(&c, "form[action='/playground/authorize'] button").await;
    click(&c, "#authorize-link").await;
    click(&c, "button[value=allow]").await;
    wait_for(&c, "#client_secret").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("GET /playground/callback?code="), "{page}");
    type_into(&c, "#client_secret", &secret).await;
    click(&c, "form[action='/playground/token'] button").await;
    wait_for(&c, "button[formaction='/playground/me']").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("HTTP/1.1 200 OK"), "{page}");
    screenshot(&c, "playground").await;
    click(&c, "button[formaction='/playground/me']").await;
    // The page being left has the same buttons: wait for the exchange itself.
    text_until(&c, "body", |t| t.contains("GET /api/v1/me HTTP/1.1")).await;
    let page = c.source().await.unwrap();
    assert!(page.contains("GET /api/v1/me HTTP/1.1"));
    assert!(
        page.contains("HTTP/1.1 200 OK") && page.contains("devon"),
        "{page}"
    );

    // The app's page, and the portal's list, on a desktop and on a phone.
    c.goto(&app.url(&format!("/developers/apps/{client_id}")))
        .await
        .unwrap();
    assert_eq!(text_of(&c, "#app-id").await, client_id);
    screenshot(&c, "portal-app").await;
    // Rotating the APP_SECRET asks first; Cancel goes back, changing nothing.
    follow(&c, "Rotate the APP_SECRET…").await;
    wait_for(&c, "#rotate-heading").await;
    screenshot(&c, "portal-rotate").await;
    follow(&c, "Cancel").await;
    assert_eq!(text_of(&c, "#app-id").await, client_id);
    assert!(app.events_of("client.secret_rotated").await.is_empty());
    follow(&c, "Rotate the APP_SECRET…").await;
    click(&c, "#rotate-heading ~ form button.danger").await;
    let rotated = text_of(&c, "#app-secret").await;
    assert!(rotated.starts_with("hg_cs_"), "{rotated}");
    assert_eq!(app.events_of("client.secret_rotated").await.len(), 1);
    c.goto(&app.url(&format!("/developers/apps/{client_id}")))
        .await
        .unwrap();
    c.goto(&app.url("/developers")).await.unwrap();
    assert!(c.source().await.unwrap().contains("Sunrise Scheduling"));
    screenshot(&c, "portal").await;
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&app.url(&format!("/developers/apps/{client_id}")))
        .await
        .unwrap();
    let scroll_width: f64 = serde_json::from_value(
        c.execute("return document.documentElement.scrollWidth", vec![])
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        scroll_width <= 390.0,
        "the page scrolls sideways on a phone: {scroll_width}"
    );
    screenshot(&c, "portal-phone").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_practice_admin_connects_an_app_from_the_directory_by_clicking() {
    let Some((_driver, c)) =
        browser("a_practice_admin_connects_an_app_from_the_directory_by_clicking").await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;
    let org = admin::create_organization(
        &app.state.store,
        app.clock.as_ref(),
        "Maple Family Practice",
        healthgate_core::org::OrganizationKind::Practice,
    )
    .await
    .unwrap();
    app.user("maple-admin", UserType::Member).await;
    admin::add_member(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        &org.id,
        "maple-admin",
        "admin",
    )
    .await
    .unwrap();
    // The partner's connect URL is the server's own demo page, which shows
    // the code it received.
    let (partner, _) = admin::create_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        NewClient {
            name: "Lab Results Sync".into(),
            redirect_uris: vec!["https://labsync.example/cb".into()],
            scope: "profile_read".into(),
            description: Some("Sends lab results to your charts.".into()),
            connect_redirect_url: Some(app.url("/demo/connect?code=")),
            published: true,
            ..Default::default()
        },
        Actor::system(),
    )
    .await
    .unwrap();
    // Asked to be listed, it is not in the directory until an operator
    // approves it.
    admin::approve_listing(
        &app.state.store,
        app.clock.as_ref(),
        &partner.id,
        None,
        Actor::system(),
    )
    .await
    .unwrap();
    c.goto(&app.url("/integrations")).await.unwrap();
    sign_in_here(&c, "maple-admin").await;
    wait_for(&c, &format!("#app-{}", partner.id)).await;
    screenshot(&c, "integrations").await;
    // Connect says first, in plain words, what the partner will be able to
    // read and do for the practice; Cancel goes back, issuing nothing.
    let connect = format!("#app-{} button[value=redirect]", partner.id);
    click(&c, &connect).await;
    wait_for(&c, "#connect-heading").await;
    assert_eq!(
        text_of(&c, "#connect-heading").await,
        "Connect Lab Results Sync to Maple Family Practice?"
    );
    let gives = text_of(&c, "#connect-gives").await;
    assert!(
        gives.contains("practice API key for Maple Family Practice"),
        "{gives}"
    );
    let scopes = text_of(&c, "#connect-scopes").await;
    assert!(scopes.contains("Read your profile"), "{scopes}");
    screenshot(&c, "integrations-connect").await;
    follow(&c, "Cancel").await;
    wait_for(&c, &connect).await;
    assert!(
        app.state
            .store
            .integrations_of_client(&partner.id)
            .await
            .unwrap()
            .is_empty(),
        "nothing is issued before the confirmation"
    );
    click(&c, &connect).await;
    wait_for(&c, "#connect-heading").await;
    click(
        &c,
        "form[method=post][action='/integrations/connect'] button.primary",
    )
    .await;
    let code = text_of(&c, "#code").await;
    assert!(code.starts_with("hg_cc_"), "{code}");
    // Back in the directory the app shows as connecting.
    c.goto(&app.url("/integrations")).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("Lab Results Sync"));
    let integrations = app
        .state
        .store
        .integrations_of_client(&partner.id)
        .await
        .unwrap();
    assert_eq!(integrations.len(), 1);
    assert_eq!(integrations[0].organization_id, org.id);

    // Disconnecting asks first; Cancel goes back, changing nothing.
    let disconnect = "button[aria-label='Disconnect Lab Results Sync']";
    click(&c, disconnect).await;
    wait_for(&c, "#disconnect-heading").await;
    screenshot(&c, "integrations-disconnect").await;
    follow(&c, "Cancel").await;
    click(&c, disconnect).await;
    // The action button, reached and pressed with the keyboard.
    wait_for(&c, "#disconnect-heading").await;
    c.execute(
        "document.querySelector('form button.danger').focus()",
        vec![],
    )
    .await
    .unwrap();
    keys(&c, ENTER).await;
    let said = status_message(&c).await;
    assert!(
        said.starts_with("Lab Results Sync is disconnected from Maple Family Practice"),
        "{said}"
    );
    assert_eq!(
        app.state
            .store
            .integrations_of_client(&partner.id)
            .await
            .unwrap()[0]
            .status,
        healthgate_core::integration::IntegrationStatus::Disconnected
    );
    c.close().await.unwrap();
}

/// Presses keys on whatever has the focus.
async fn keys(c: &Client, keys: &str) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(keys)
        .await
        .unwrap();
}

const TAB: &str = "\u{e004}";
const ENTER: &str = "\u{e007}";

#[tokio::test]
async fn a_person_signs_in_and_allows_with_the_keyboard_alone() {
    let Some((_driver, c)) = browser("a_person_signs_in_and_allows_with_the_keyboard_alone").await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;
    app.user("kim", UserType::Member).await;
    let (client_id, redirect) = app_with_callback(&app).await;
    let authorize = format!(
        "{}?{}",
        app.url("/oauth/authorize"),
        serde_urlencoded(&[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", &redirect),
            ("scope", "profile_read"),
            ("state", "keys"),
        ])
    );
    c.goto(&authorize).await.unwrap();
    wait_for(&c, "#username").await;
    // The username field has the focus on arrival: type, Tab, type, Enter.
    let focused = c.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("username")
    );
    keys(&c, "kim").await;
    keys(&c, TAB).await;
    keys(&c, PASSWORD).await;
    keys(&c, ENTER).await;
    // On the consent page the first Tab reaches the skip link, and Tab
    // moves on through the controls to Allow.
    wait_for(&c, "button[value=allow]").await;
    keys(&c, TAB).await;
    let skip = c.active_element().await.unwrap();
    assert_eq!(skip.attr("href").await.unwrap().as_deref(), Some("#main"));
    let mut reached = false;
    for _ in 0..30 {
        keys(&c, TAB).await;
        let el = c.active_element().await.unwrap();
        if el.attr("value").await.unwrap().as_deref() == Some("allow") {
            reached = true;
            break;
        }
    }
    assert!(reached, "Allow cannot be reached with Tab");
    keys(&c, ENTER).await;
    let code = text_of(&c, "#code").await;
    assert!(code.starts_with("hg_ac_"), "{code}");
    c.close().await.unwrap();
}

#[tokio::test]
async fn an_operator_suspends_an_app_and_filters_the_audit_log_by_clicking() {
    let Some((_driver, c)) =
        browser("an_operator_suspends_an_app_and_filters_the_audit_log_by_clicking").await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;
    let store = &app.state.store;
    let olivia = admin::create_user(
        store,
        app.clock.as_ref(),
        admin::NewUser {
            username: "olivia".into(),
            name: Some("Olivia Operator".into()),
            password: Some(PASSWORD.into()),
            email: Some("olivia@platform.example".into()),
            user_type: UserType::Member,
        },
        Creator::By(Actor::system()),
    )
    .await
    .unwrap();
    store
        .set_operator(&olivia.id, true, Actor::system(), app.clock.now())
        .await
        .unwrap();
    for (username, name) in [
        ("ada", "Dr. Ada Lovelace"),
        ("grace", "Grace Hopper"),
        ("sam.staff", "Sam Staff"),
    ] {
        admin::create_user(
            store,
            app.clock.as_ref(),
            admin::NewUser {
                username: username.into(),
                name: Some(name.into()),
                password: None,
                email: Some(format!("{username}@clinic.example")),
                user_type: UserType::Expert,
            },
            Creator::By(Actor::system()),
        )
        .await
        .unwrap();
    }
    let alice = app.user("alice", UserType::Member).await;
    store.lock_user(&alice.id, app.clock.now()).await.unwrap();
    let clinic = admin::create_organization(
        store,
        app.clock.as_ref(),
        "Harbor Clinic",
        healthgate_core::org::OrganizationKind::Clinic,
    )
    .await
    .unwrap();
    for (username, role) in [
        ("ada", "practitioner"),
        ("grace", "admin"),
        ("sam.staff", "staff"),
    ] {
        admin::add_member(
            store,
            &app.state.settings,
            app.clock.as_ref(),
            &clinic.id,
            username,
            role,
        )
        .await
        .unwrap();
    }
    let (client_id, _) = app_with_callback(&app).await;
    app.confidential().await;

    // Signing in on the way to the console comes back to it.
    c.set_window_size(1200, 900).await.unwrap();
    c.goto(&app.url("/admin")).await.unwrap();
    sign_in_here(&c, "olivia").await;
    wait_for(&c, "#home-heading").await;

    follow(&c, "Users").await;
    wait_for(&c, "#users-heading").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("ada") && page.contains("Locked"));
    screenshot(&c, "admin-users").await;

    // Suspend the app by clicking.
    follow(&c, "Apps").await;
    click(&c, "button[aria-label='Suspend Clicky Scheduler']").await;
    // A page asks first, for a reason; it is answered with the keyboard.
    wait_for(&c, "#suspend-heading").await;
    assert!(c.find(Locator::LinkText("Cancel")).await.is_ok());
    screenshot(&c, "admin-app-suspend").await;
    c.find(Locator::Css("#reason"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    keys(&c, "Books every slot at once").await;
    keys(&c, ENTER).await;
    let notice = text_of(&c, ".notice").await;
    assert!(
        notice.starts_with("Clicky Scheduler is suspended"),
        "{notice}"
    );
    assert!(
        store
            .client(&client_id)
            .await
            .unwrap()
            .unwrap()
            .suspended_at
            .is_some()
    );
    c.find(Locator::Css(
        "button[aria-label='Restore Clicky Scheduler']",
    ))
    .await
    .unwrap();
    screenshot(&c, "admin-apps").await;

    // The audit log, narrowed to suspensions by choosing the kind.
    follow(&c, "Audit log").await;
    c.wait()
        .for_element(Locator::Css("#kind"))
        .await
        .unwrap()
        .select_by_value("client.suspended")
        .await
        .unwrap();
    click(&c, "button.primary").await;
    // The unfiltered page has rows too: wait for the filtered one.
    let mut url = c.current_url().await.unwrap();
    for _ in 0..100 {
        if url.as_str().contains("kind=client.suspended") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        url = c.current_url().await.unwrap();
    }
    assert!(url.as_str().contains("kind=client.suspended"), "{url}");
    wait_for(&c, "tr.event").await;
    let rows = c.find_all(Locator::Css("tr.event")).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = rows[0].text().await.unwrap();
    assert!(
        row.contains("client.suspended")
            && row.contains("olivia")
            && row.contains("Books every slot at once"),
        "{row}"
    );
    screenshot(&c, "admin-audit").await;

    let organization = format!("/admin/organizations/{}", clinic.id);
    c.goto(&app.url(&organization)).await.unwrap();
    wait_for(&c, "#org-heading").await;
    screenshot(&c, "admin-organization").await;

    // On a phone: the tables become labelled rows, nothing runs off the side.
    c.set_window_size(390, 844).await.unwrap();
    for path in [
        "/admin",
        "/admin/organizations",
        organization.as_str(),
        "/admin/apps",
        "/admin/audit",
        "/admin/webhooks",
        "/admin/users",
    ] {
        c.goto(&app.url(path)).await.unwrap();
        wait_for(&c, "nav.console-nav").await;
        let overflow = c
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            overflow,
            serde_json::json!(0),
            "{path}: no sideways scrolling"
        );
    }
    screenshot(&c, "admin-users-phone").await;
    c.goto(&app.url("/admin/audit?kind=client.suspended"))
        .await
        .unwrap();
    wait_for(&c, "tr.event").await;
    screenshot(&c, "admin-audit-phone").await;
    c.close().await.unwrap();
}

/// The names of the site header's links, as the person sees them.
async fn header_links(c: &Client) -> Vec<String> {
    let mut names = Vec::new();
    for link in c.find_all(Locator::Css("nav.site a")).await.unwrap() {
        names.push(link.text().await.unwrap());
    }
    names
}

#[tokio::test]
async fn a_new_user_meets_error_pages_a_temporary_password_a_lock_and_a_header_that_fits() {
    let Some((_driver, c)) =
        browser("a_new_user_meets_error_pages_a_temporary_password_a_lock_and_a_header_that_fits")
            .await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;
    let store = &app.state.store;
    let mia = app.user("mia", UserType::Member).await;
    let olivia = app.user("olivia", UserType::Member).await;
    store
        .set_operator(&olivia.id, true, Actor::system(), app.clock.now())
        .await
        .unwrap();
    let lee = app.user("lee", UserType::Member).await;
    store.lock_user(&lee.id, app.clock.now()).await.unwrap();

    // A page that is not there: says so, offers the way home, and shows
    // the request id the server logged.
    c.goto(&app.url("/no-such-page")).await.unwrap();
    let heading = text_of(&c, "h1").await;
    assert!(heading.contains("not found"), "{heading}");
    let request_id = text_of(&c, "#request-id").await;
    assert!(!request_id.is_empty());
    let page = c.source().await.unwrap();
    assert!(!page.contains("return to that app"), "{page}");
    screenshot(&c, "error-not-found").await;
    follow(&c, "Go to the home page").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/");
    // Under /api and /oauth the answer is JSON, even in a browser.
    c.goto(&app.url("/api/v1/no-such-thing")).await.unwrap();
    let body = text_of(&c, "body").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect(&body);
    assert_eq!(json["error"], "not_found", "{json}");

    // A locked account with the right password is told so, and whom to
    // ask; with a wrong one it gets the generic answer.
    c.goto(&app.url("/login")).await.unwrap();
    sign_in_here(&c, "lee").await;
    let said = text_of(&c, "#login-error").await;
    assert!(said.contains("locked") && said.contains("Ask"), "{said}");
    screenshot(&c, "login-locked").await;
    type_into(&c, "#username", "lee").await;
    type_into(&c, "#password", "not the password").await;
    click(&c, "button[type=submit]").await;
    let said = text_until(&c, "#login-error", |t| !t.contains("locked")).await;
    assert!(said.contains("password"), "{said}");

    // An operator resets Mia's password: the temporary one signs her in
    // to choosing her own, and every other page sends her back there.
    let (_, temporary) = admin::reset_password(
        store,
        app.clock.as_ref(),
        &mia.id,
        Actor::user(&olivia.id, None),
    )
    .await
    .unwrap();
    c.goto(&app.url("/account")).await.unwrap();
    type_into(&c, "#username", "mia").await;
    type_into(&c, "#password", &temporary).await;
    click(&c, "button[type=submit]").await;
    wait_for(&c, "#new-password-heading").await;
    // The header says who is signed in, with no links: each would lead
    // back here.
    assert!(text_of(&c, "form.signout .who").await.contains("mia"));
    assert_eq!(header_links(&c).await, Vec::<String>::new());
    screenshot(&c, "account-new-password").await;
    c.goto(&app.url("/developers")).await.unwrap();
    wait_for(&c, "#new-password-heading").await;
    // Every mistake at once, next to its field.
    type_into(&c, "#current_password", "wrong").await;
    type_into(&c, "#new_password", "short").await;
    type_into(&c, "#new_password_confirmation", "other").await;
    click(&c, "button.primary").await;
    wait_for(&c, "#new_password-error").await;
    for field in [
        "current_password",
        "new_password",
        "new_password_confirmation",
    ] {
        let said = text_of(&c, &format!("#{field}-error")).await;
        let first = said.chars().next().unwrap();
        assert!(first.is_uppercase(), "{field}: {said}");
    }
    type_into(&c, "#current_password", &temporary).await;
    type_into(&c, "#new_password", "a password of my own").await;
    type_into(&c, "#new_password_confirmation", "a password of my own").await;
    click(&c, "button.primary").await;
    // On to where she was going.
    wait_gone(&c, "#new-password-heading").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/developers");
    let stored = store.user(&mia.id).await.unwrap().unwrap();
    assert!(!stored.password_is_temporary());

    // The header: who is signed in, a Sign out, and only the links she
    // may use (a member: no Integrations, no Admin).
    let who = text_of(&c, "form.signout .who").await;
    assert!(who.contains("mia"), "{who}");
    let links = header_links(&c).await;
    assert!(links.iter().any(|l| l == "Your account"), "{links:?}");
    assert!(
        !links.iter().any(|l| l == "Integrations" || l == "Admin"),
        "{links:?}"
    );

    // /login while signed in offers to continue, or to switch.
    c.goto(&app.url("/login")).await.unwrap();
    let offered = text_of(&c, "#signed-in-as").await;
    assert!(offered.contains("mia"), "{offered}");
    screenshot(&c, "login-signed-in").await;
    type_into(&c, "#username", "olivia").await;
    type_into(&c, "#password", PASSWORD).await;
    click(&c, "form[action='/login'] button[type=submit]").await;
    wait_gone(&c, "#signed-in-as").await;
    let who = text_of(&c, "form.signout .who").await;
    assert!(who.contains("olivia"), "{who}");
    let links = header_links(&c).await;
    assert!(links.iter().any(|l| l == "Admin"), "{links:?}");
    follow(&c, "Admin").await;
    wait_for(&c, "#home-heading").await;

    // Signing out from the header ends the session.
    click(&c, "form.signout button").await;
    wait_gone(&c, "form.signout").await;
    c.goto(&app.url("/account")).await.unwrap();
    wait_for(&c, "#username").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn an_operator_reviews_a_directory_request_by_clicking() {
    let Some((_driver, c)) = browser("an_operator_reviews_a_directory_request_by_clicking").await
    else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |_| {}).await;
    let store = &app.state.store;
    let olivia = app.user("olivia", UserType::Member).await;
    store
        .set_operator(&olivia.id, true, Actor::system(), app.clock.now())
        .await
        .unwrap();
    let devon = admin::create_user(
        store,
        app.clock.as_ref(),
        admin::NewUser {
            username: "devon".into(),
            name: Some("Devon Partner".into()),
            password: None,
            email: Some("devon@partner.example".into()),
            user_type: UserType::Member,
        },
        Creator::By(Actor::system()),
    )
    .await
    .unwrap();
    // Two developers' apps ask to be listed.
    let mut asked = Vec::new();
    for (name, scope) in [
        ("Lab Results Sync", "profile_read"),
        ("Pay Later", "profile_read pay"),
    ] {
        let (client, _) = admin::create_client(
            store,
            &app.state.settings,
            app.clock.as_ref(),
            NewClient {
                name: name.into(),
                redirect_uris: vec!["https://partner.example/cb".into()],
                scope: scope.into(),
                description: Some(format!("{name} for your practice.")),
                connect_redirect_url: Some("https://partner.example/connect?code=".into()),
                published: true,
                owner_id: Some(devon.id.clone()),
                ..Default::default()
            },
            Actor::user(&devon.id, None),
        )
        .await
        .unwrap();
        asked.push(client.id);
    }
    c.set_window_size(1200, 900).await.unwrap();
    c.goto(&app.url("/admin")).await.unwrap();
    sign_in_here(&c, "olivia").await;
    wait_for(&c, "#home-heading").await;
    follow(&c, "Directory").await;
    wait_for(&c, "#requests-heading").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("Make payments on your behalf"), "{page}");
    screenshot(&c, "admin-directory").await;

    // Reject asks for a reason; Cancel goes back, changing nothing.
    click(&c, "button[aria-label='Reject Pay Later']").await;
    wait_for(&c, "#reject-heading").await;
    screenshot(&c, "admin-directory-reject").await;
    follow(&c, "Cancel").await;
    click(&c, "button[aria-label='Reject Pay Later']").await;
    wait_for(&c, "#reject-heading").await;
    type_into(&c, "#reason", "Payments need a signed agreement first").await;
    click(&c, "#reject-heading ~ form button.danger").await;
    let notice = text_of(&c, ".notice").await;
    assert!(
        notice.starts_with("Pay Later's request is rejected"),
        "{notice}"
    );

    // Approve lists the other at once.
    click(&c, "button[aria-label='Approve Lab Results Sync']").await;
    let notice = text_until(&c, ".notice", |t| t.contains("is listed")).await;
    assert!(notice.starts_with("Lab Results Sync is listed"), "{notice}");
    wait_for(&c, "#no-requests").await;
    let listed: Vec<String> = store
        .published_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, [asked[0].clone()]);
    let rejected = store.client(&asked[1]).await.unwrap().unwrap();
    assert_eq!(
        rejected.listing.reason.as_deref(),
        Some("Payments need a signed agreement first")
    );
    screenshot(&c, "admin-directory-reviewed").await;
    c.close().await.unwrap();
}

/// A command of the WebDriver extension for WebAuthn (W3C WebAuthn Level 2
/// §11), which Chromium's driver implements: a virtual authenticator the
/// browser uses as it would a real one.
#[derive(Debug)]
struct WebAuthnCommand {
    /// Under `/session/{id}/`.
    path: String,
    body: serde_json::Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(self.body.to_string()))
    }
}

/// The path the browser is on.
async fn path_now(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

/// Waits until the browser is on `path`.
async fn wait_for_path(c: &Client, path: &str) {
    for _ in 0..100 {
        if path_now(c).await == path {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still on {} rather than {path}", path_now(c).await);
}

/// The `amr` of the newest session of `user_id`.
async fn newest_amr(app: &TestApp, user_id: &str) -> Vec<&'static str> {
    let sessions = app
        .state
        .store
        .sessions_of_user(user_id, app.clock.now())
        .await
        .unwrap();
    sessions
        .iter()
        .max_by_key(|s| (s.created_at, s.auth_time))
        .map(|s| s.amr.claim())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_person_sets_up_a_passkey_then_signs_in_with_it_by_clicking() {
    let Some((_driver, c)) =
        browser("a_person_sets_up_a_passkey_then_signs_in_with_it_by_clicking").await
    else {
        return;
    };
    // Browsers take passkeys for domain names only: the issuer is
    // localhost (a secure context over plain HTTP), not 127.0.0.1.
    let app = spawn_on(Backend::Sqlite, |s| {
        s.issuer = Some(
            format!("http://localhost:{}", s.bind.port())
                .parse()
                .unwrap(),
        );
        s.passkey_sign_in = true;
    })
    .await;
    let base = app.state.issuer.to_string();
    let user = app.user("nadia", UserType::Member).await;
    let added = c
        .issue_cmd(WebAuthnCommand {
            path: "webauthn/authenticator".into(),
            body: serde_json::json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
            }),
        })
        .await
        .expect("a virtual authenticator");
    let authenticator = added.as_str().map(str::to_owned).unwrap_or_else(|| {
        added["authenticatorId"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    // The person's fingerprint or PIN not given: the ceremony fails in the
    // browser, and the page says so beside the button.
    let verified = |yes: bool| WebAuthnCommand {
        path: format!("webauthn/authenticator/{authenticator}/uv"),
        body: serde_json::json!({ "isUserVerified": yes }),
    };

    // Sign in with the password, set up a passkey on the security page.
    c.goto(&format!("{base}/login?return_to=%2Faccount%2Fsecurity"))
        .await
        .unwrap();
    sign_in_here(&c, "nadia").await;
    wait_for(&c, "#passkey-add").await;
    // With the script, the form shows and the note saying it is needed does not.
    let shown = |css: &'static str| {
        let c = c.clone();
        async move {
            c.find(Locator::Css(css))
                .await
                .unwrap()
                .is_displayed()
                .await
                .unwrap()
        }
    };
    assert!(shown("#passkey-form").await);
    assert!(!shown("#passkey-needs-script").await);
    c.issue_cmd(verified(false))
        .await
        .expect("user verification off");
    click(&c, "#passkey-add").await;
    let said = text_until(&c, "#passkey-form [data-passkey-message]", |t| {
        !t.is_empty()
    })
    .await;
    assert!(said.contains("No passkey was given"), "{said}");
    c.issue_cmd(verified(true))
        .await
        .expect("user verification on");
    type_into(&c, "#passkey-label", "This laptop").await;
    click(&c, "#passkey-add").await;
    let codes = text_of(&c, "#recovery-codes").await;
    assert_eq!(codes.lines().filter(|l| l.contains("hg_rc_")).count(), 10);
    click(&c, "#codes-continue").await;
    wait_for(&c, "#factors-heading").await;
    let listed = text_of(&c, ".factors").await;
    assert!(
        listed.contains("This laptop") && listed.contains("Passkey"),
        "{listed}"
    );
    screenshot(&c, "account-security-passkey").await;
    let enrolled = app.events_of("mfa.enrolled").await;
    assert_eq!(enrolled.len(), 1);
    assert!(
        enrolled[0]
            .data
            .as_deref()
            .unwrap_or("")
            .contains("passkey")
    );
    click(&c, "form.signout button").await;
    wait_for_path(&c, "/").await;

    // The password, then the passkey at the second step.
    c.goto(&format!("{base}/login?return_to=%2Faccount"))
        .await
        .unwrap();
    sign_in_here(&c, "nadia").await;
    wait_for_path(&c, "/login/second-factor").await;
    screenshot(&c, "login-second-factor-passkey").await;
    click(&c, "#passkey-use").await;
    wait_for_path(&c, "/account").await;
    assert_eq!(newest_amr(&app, &user.id).await, vec!["pwd", "hwk"]);
    let login = newest_event(&app, "login.succeeded").await;
    assert!(
        login.data.as_deref().unwrap_or("").contains("hwk"),
        "{login:?}"
    );
    click(&c, "form.signout button").await;
    wait_for_path(&c, "/").await;

    // The passkey alone (passkey_sign_in): two factors in one.
    c.goto(&format!("{base}/login?return_to=%2Faccount"))
        .await
        .unwrap();
    click(&c, "#passkey-sign-in-button").await;
    wait_for_path(&c, "/account").await;
    assert_eq!(newest_amr(&app, &user.id).await, vec!["hwk"]);
    let login = newest_event(&app, "login.succeeded").await;
    let data = login.data.as_deref().unwrap_or("");
    assert!(data.contains("hwk") && !data.contains("pwd"), "{login:?}");
    assert!(app.events_of("login.second_factor_failed").await.is_empty());
    c.close().await.unwrap();
}

/// The newest event of `kind`.
async fn newest_event(app: &TestApp, kind: &str) -> healthgate_store::StoredEvent {
    app.events_of(kind)
        .await
        .into_iter()
        .max_by_key(|e| e.seq)
        .unwrap_or_else(|| panic!("no {kind} event"))
}

/// The SMART project's own JavaScript client (npm's `fhirclient`, its
/// browser bundle), as `.ci/run` unpacks it; `None`, having said why, when
/// it is not there.
fn fhirclient(test: &str) -> Option<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.ci/node/node_modules/fhirclient/build/fhir-client.js");
    match std::fs::read(&path) {
        Ok(bundle) => Some(bundle),
        Err(_) => {
            eprintln!(
                "browser::{test} skipped: {} is missing (bash .ci/run installs fhirclient)",
                path.display()
            );
            None
        }
    }
}

/// Serves, on `listener`, a SMART app built on fhirclient (its launch and
/// redirect pages, `tests/it/fhirclient/`, and the library) and the FHIR
/// server's base, `/fhir`, whose `.well-known/smart-configuration`
/// redirects to `healthgate`'s, as the README says a FHIR server fronted
/// by healthgate may.
fn serve_smart_app(listener: tokio::net::TcpListener, bundle: Vec<u8>, healthgate: String) {
    use axum::http::header;
    use axum::response::IntoResponse;
    use axum::routing::get;
    let html =
        |page: &'static str| move || async move { ([(header::CONTENT_TYPE, "text/html")], page) };
    let discovery = format!("{healthgate}/.well-known/smart-configuration");
    let router = axum::Router::new()
        .route(
            "/launch.html",
            get(html(include_str!("fhirclient/launch.html"))),
        )
        .route(
            "/index.html",
            get(html(include_str!("fhirclient/index.html"))),
        )
        .route(
            "/fhir-client.js",
            get(
                move || async move { ([(header::CONTENT_TYPE, "application/javascript")], bundle) },
            ),
        )
        .route(
            "/fhir/.well-known/smart-configuration",
            get(move || async move {
                (
                    axum::http::StatusCode::FOUND,
                    [
                        (header::LOCATION, discovery),
                        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_owned()),
                    ],
                )
                    .into_response()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// What the app's page made of the authorization: its `#result` JSON, or a
/// failure with the page's `#error`.
async fn fhirclient_result(c: &Client, result: &str, error: &str) -> Value {
    wait_for(c, &format!("#{result}, #{error}")).await;
    if let Ok(e) = c.find(Locator::Css(&format!("#{error}"))).await {
        panic!("fhirclient failed: {}", e.text().await.unwrap());
    }
    serde_json::from_str(&text_of(c, &format!("#{result}")).await).unwrap()
}

/// The claims of a JWT, unverified (the token endpoint's own answer is
/// verified elsewhere; here only what it says matters).
fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// SMART App Launch with the SMART project's own JavaScript client in a
/// real browser: an EHR launch (the platform makes the launch, the app is
/// opened at its launch URL with `iss` and `launch`), then a standalone
/// launch with the person's patient, each exchanged and refreshed from the
/// page across origins.
#[tokio::test]
async fn the_smart_javascript_client_launches_from_the_ehr_and_on_its_own() {
    const TEST: &str = "the_smart_javascript_client_launches_from_the_ehr_and_on_its_own";
    let Some(bundle) = fhirclient(TEST) else {
        return;
    };
    let Some((_driver, c)) = browser(TEST).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let fhir = format!("{origin}/fhir");
    let base = fhir.clone();
    let app = spawn_on(Backend::Sqlite, move |s| {
        s.smart.fhir_base_urls = vec![base.parse().unwrap()];
    })
    .await;
    serve_smart_app(listener, bundle, app.base.clone());
    let alice = app.user("alice", UserType::Member).await;
    let store = &app.state.store;
    let now = app.clock.now();
    healthgate_server::services::smart::link_patient(
        store,
        now,
        &alice.id,
        healthgate_core::smart::PatientLink {
            patient_id: "123".into(),
            display: "Alice Example".into(),
        },
        Actor::system(),
    )
    .await
    .unwrap();
    healthgate_server::services::smart::set_fhir_user(
        store,
        now,
        &alice.id,
        Some("Practitioner/77"),
        Actor::system(),
    )
    .await
    .unwrap();
    // A public app: the page holds no secret, so PKCE (fhirclient uses it
    // when discovery lists S256).
    let (growth, _) = admin::create_client(
        store,
        &app.state.settings,
        app.clock.as_ref(),
        NewClient {
            name: "Growth Charts".into(),
            redirect_uris: vec![format!("{origin}/index.html")],
            scope: "launch launch/patient openid fhirUser patient/*.rs offline_access".into(),
            public: true,
            launch_url: Some(format!("{origin}/launch.html")),
            ..Default::default()
        },
        Actor::system(),
    )
    .await
    .unwrap();

    // The EHR launch, made as the platform would.
    let made = healthgate_server::services::smart::create_launch(
        store,
        &app.state.settings,
        now,
        "test-ehr",
        Actor::system(),
        healthgate_server::services::smart::LaunchRequest {
            client_id: growth.id.clone(),
            user: Some("alice".into()),
            patient: Some("123".into()),
            encounter: Some("enc-9".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let opened = format!(
        "{}&{}",
        made.launch_url,
        serde_urlencoded(&[
            ("clientId", &growth.id),
            (
                "scope",
                "launch openid fhirUser patient/*.rs offline_access"
            ),
        ])
    );
    c.goto(&opened).await.unwrap();
    sign_in_here(&c, "alice").await;
    wait_for(&c, "button[value=allow]").await;
    screenshot(&c, "consent-smart-ehr").await;
    click(&c, "button[value=allow]").await;
    let ehr = fhirclient_result(&c, "result", "error").await;
    assert_eq!(ehr["launch"], "ehr", "{ehr:#}");
    assert_eq!(ehr["patient"], "123", "{ehr:#}");
    assert_eq!(ehr["encounter"], "enc-9", "{ehr:#}");
    assert_eq!(ehr["pkce"], true, "{ehr:#}");
    assert_eq!(ehr["server_url"], fhir);
    assert_eq!(ehr["has_refresh_token"], true, "{ehr:#}");
    let id_token = jwt_claims(ehr["token_response"]["id_token"].as_str().unwrap());
    assert_eq!(id_token["fhirUser"], format!("{fhir}/Practitioner/77"));
    // fhirclient reads fhirUser by decoding the ID token with the
    // browser's atob, which cannot read every base64url payload.
    if ehr["id_token_error"].is_null() {
        assert_eq!(ehr["fhirUser"], "Practitioner/77", "{ehr:#}");
    }
    // The refresh from the page sends the refresh token alone.
    click(&c, "#refresh").await;
    let refreshed = fhirclient_result(&c, "refreshed", "refresh-error").await;
    assert_eq!(refreshed["has_access_token"], true, "{refreshed:#}");
    assert_eq!(
        refreshed["token_response"]["patient"], "123",
        "{refreshed:#}"
    );
    // The launch was used.
    assert_eq!(app.events_of("smart.launch_created").await.len(), 1);

    // The standalone launch: the app opened on its own, with the FHIR
    // server it knows; alice's only patient is in context.
    let standalone = format!(
        "{origin}/launch.html?{}",
        serde_urlencoded(&[
            ("iss", &fhir),
            ("clientId", &growth.id),
            (
                "scope",
                "launch/patient openid fhirUser patient/*.rs offline_access"
            ),
        ])
    );
    c.goto(&standalone).await.unwrap();
    wait_for(&c, "button[value=allow]").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("For the records of <strong>Alice Example</strong>"));
    screenshot(&c, "consent-smart-standalone").await;
    click(&c, "button[value=allow]").await;
    let alone = fhirclient_result(&c, "result", "error").await;
    assert_eq!(alone["launch"], "standalone", "{alone:#}");
    assert_eq!(alone["patient"], "123", "{alone:#}");
    assert_eq!(alone["need_patient_banner"], true, "{alone:#}");
    assert!(alone["encounter"].is_null(), "{alone:#}");
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_developer_runs_an_ehr_launch_and_a_backend_services_request_in_the_playground_by_clicking()
 {
    const TEST: &str = "a_developer_runs_an_ehr_launch_and_a_backend_services_request_in_the_playground_by_clicking";
    let Some((_driver, c)) = browser(TEST).await else {
        return;
    };
    let app = spawn_on(Backend::Sqlite, |s| {
        s.smart.fhir_base_urls = vec!["https://fhir.example.com/r4".parse().unwrap()];
    })
    .await;
    let dev = app.user("dev", UserType::Expert).await;
    let store = &app.state.store;
    healthgate_server::services::smart::link_patient(
        store,
        app.clock.now(),
        &dev.id,
        healthgate_core::smart::PatientLink {
            patient_id: "123".into(),
            display: "Alice Example".into(),
        },
        Actor::system(),
    )
    .await
    .unwrap();
    let (chart, secret) = admin::create_client(
        store,
        &app.state.settings,
        app.clock.as_ref(),
        NewClient {
            name: "Chart Viewer".into(),
            redirect_uris: vec![app.url("/playground/callback")],
            scope: "openid launch patient/*.rs system/Observation.rs".into(),
            launch_url: Some("https://partner.example/launch".into()),
            owner_id: Some(dev.id.clone()),
            ..Default::default()
        },
        Actor::system(),
    )
    .await
    .unwrap();

    // An EHR launch with the developer's patient in context.
    c.goto(&app.url(&format!("/playground?client_id={}", chart.id)))
        .await
        .unwrap();
    sign_in_here(&c, "dev").await;
    wait_for(&c, "#smart-launch").await;
    click(&c, "input[name=launch_mode][value=ehr]").await;
    click(&c, "#patient option[value='123']").await;
    screenshot(&c, "playground-smart").await;
    click(&c, "form[action='/playground/authorize'] button").await;
    wait_for(&c, "#authorize-link").await;
    assert!(
        text_of(&c, "body")
            .await
            .contains("The EHR opens the app's launch URL")
    );
    click(&c, "#authorize-link").await;
    click(&c, "button[value=allow]").await;
    wait_for(&c, "#client_secret").await;
    type_into(&c, "#client_secret", secret.as_deref().unwrap()).await;
    click(&c, "form[action='/playground/token'] button").await;
    let page = text_until(&c, "body", |t| t.contains("HTTP/1.1 200")).await;
    assert!(page.contains("\"patient\": \"123\""), "{page}");

    // Backend Services: a key pair made here, then a signed request.
    c.goto(&app.url(&format!("/playground?client_id={}", chart.id)))
        .await
        .unwrap();
    click(&c, "form[action='/playground/keys'] button").await;
    wait_for(&c, "#key-made").await;
    let pem: String = serde_json::from_value(
        c.execute(
            "return document.getElementById('private_key').value",
            vec![],
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    screenshot(&c, "playground-keys").await;
    click(&c, "form[action='/playground/backend'] button").await;
    let page = text_until(&c, "body", |t| t.contains("HTTP/1.1 200")).await;
    assert!(page.contains("\"alg\": \"ES384\""), "{page}");
    assert!(
        page.contains("\"scope\": \"system/Observation.rs\""),
        "{page}"
    );
    screenshot(&c, "playground-backend").await;
    assert_eq!(app.events_of("smart.launch_created").await.len(), 1);
}
