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
