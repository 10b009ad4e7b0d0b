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
use healthgate_server::admin::{self, NewClient};

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

async fn screenshot(c: &Client, name: &str) {
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
    c.wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap();
    screenshot(&c, "login").await;
    c.find(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys("alice")
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
    let allow = c
        .wait()
        .for_element(Locator::Css("button[value=allow]"))
        .await
        .unwrap();
    screenshot(&c, "consent").await;
    let page = c.source().await.unwrap();
    assert!(page.contains("Clicky Scheduler") && page.contains("Read your profile"));
    allow.click().await.unwrap();
    let code = c
        .wait()
        .for_element(Locator::Css("#code"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    c.wait()
        .for_element(Locator::Css("button[value=deny]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let error = c
        .wait()
        .for_element(Locator::Css("#error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(error, "access_denied");
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
    )
    .await
    .unwrap();
    store
        .set_operator(
            &olivia.id,
            true,
            healthgate_store::Actor::system(),
            app.clock.now(),
        )
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
    c.wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys("olivia")
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
    c.wait()
        .for_element(Locator::Css("#home-heading"))
        .await
        .unwrap();

    c.find(Locator::LinkText("Users"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("#users-heading"))
        .await
        .unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("ada") && page.contains("Locked"));
    screenshot(&c, "admin-users").await;

    // Suspend the app by clicking.
    c.find(Locator::LinkText("Apps"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css(
            "button[aria-label='Suspend Clicky Scheduler']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = c
        .wait()
        .for_element(Locator::Css(".notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    c.find(Locator::LinkText("Audit log"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("#kind"))
        .await
        .unwrap()
        .select_by_value("client.suspended")
        .await
        .unwrap();
    c.find(Locator::Css("button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("tr.event"))
        .await
        .unwrap();
    let url = c.current_url().await.unwrap();
    assert!(url.as_str().contains("kind=client.suspended"), "{url}");
    let rows = c.find_all(Locator::Css("tr.event")).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = rows[0].text().await.unwrap();
    assert!(
        row.contains("client.suspended") && row.contains("olivia"),
        "{row}"
    );
    screenshot(&c, "admin-audit").await;

    let organization = format!("/admin/organizations/{}", clinic.id);
    c.goto(&app.url(&organization)).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#org-heading"))
        .await
        .unwrap();
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
        c.wait()
            .for_element(Locator::Css("nav.console-nav"))
            .await
            .unwrap();
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
    c.wait()
        .for_element(Locator::Css("tr.event"))
        .await
        .unwrap();
    screenshot(&c, "admin-audit-phone").await;
    c.close().await.unwrap();
}
