//! `serve --demo`: the credentials it prints run the whole flow, re-running
//! it rotates them, and the logs of a full flow hold none of its secrets.

use crate::flow::{self, Demo, Seen};
use crate::support::Sandbox;

#[tokio::test]
async fn demo_prints_credentials_and_a_working_authorize_url() {
    let sandbox = Sandbox::new();
    let mut server = sandbox.serve(&["--demo", "--json"]);
    let demo = Demo::parse(&server.stdout_line());
    assert_eq!(demo.client_id, "app-demo");
    assert_eq!(
        demo.redirect_uri,
        format!("{}/demo/callback", server.base())
    );
    assert!(
        demo.authorize_url
            .starts_with(&format!("{}/oauth/authorize?", server.base())),
        "{}",
        demo.authorize_url
    );
    server.wait_healthy().await;

    let mut seen = Seen::default();
    let tokens = flow::authorize_and_exchange(&server, &demo, &mut seen).await;
    assert_eq!(tokens["scope"], "profile_read profile_write");
    let status = server.terminate().await;
    assert!(status.success(), "{status}");

    // Again on the same data and address: same ids, fresh credentials.
    let port = server.port;
    drop(server);
    let bind = format!("127.0.0.1:{port}");
    let cmd = sandbox.command(&["serve", "--demo", "--json", "--bind", &bind]);
    let mut again = sandbox.spawn(cmd, port);
    let second = Demo::parse(&again.stdout_line());
    again.wait_healthy().await;
    assert_eq!(second.practice_id, demo.practice_id);
    assert_eq!(second.client_id, demo.client_id);
    assert_ne!(second.client_secret, demo.client_secret);
    for (first, next) in demo.accounts.iter().zip(&second.accounts) {
        assert_eq!(first.1, next.1);
        assert_ne!(first.2, next.2, "{} kept its password", first.1);
    }
    assert!(flow::client_secret_works(&again, &second, &second.client_secret).await);
    assert!(!flow::client_secret_works(&again, &second, &demo.client_secret).await);
    // The token issued before the restart is still good: state is in the
    // database, not in the process.
    flow::me(
        &again,
        tokens["access_token"].as_str().unwrap(),
        "member.demo",
    )
    .await;
}

#[tokio::test]
async fn logs_never_contain_secrets() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command(&[]);
    let port = crate::support::free_port();
    let bind = format!("127.0.0.1:{port}");
    cmd.args(["serve", "--demo", "--json", "--bind", &bind])
        .env("RUST_LOG", "debug");
    let mut server = sandbox.spawn(cmd, port);
    let demo = Demo::parse(&server.stdout_line());
    server.wait_healthy().await;

    let wrong_password = "WrongPassword-123";
    let mut seen = Seen::default();
    flow::failed_login(&server, "member.demo", wrong_password, &mut seen).await;
    let tokens = flow::authorize_and_exchange(&server, &demo, &mut seen).await;
    let refreshed = flow::refresh(&server, &demo, tokens["refresh_token"].as_str().unwrap()).await;
    seen.access_tokens
        .push(refreshed["access_token"].as_str().unwrap().to_owned());
    seen.refresh_tokens
        .push(refreshed["refresh_token"].as_str().unwrap().to_owned());
    flow::me(
        &server,
        refreshed["access_token"].as_str().unwrap(),
        "member.demo",
    )
    .await;

    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let log = server.stderr();

    // The check means something only if there is a log to check.
    assert!(log.lines().count() > 10, "{log}");
    assert!(
        log.contains("DEBUG"),
        "RUST_LOG=debug was not applied:\n{log}"
    );
    assert!(log.contains(" request "), "no access-log line:\n{log}");
    assert!(log.contains("path=/oauth/token"), "{log}");
    assert_eq!(seen.session_cookies.len(), 3, "{seen:?}");
    assert_eq!(seen.csrf_tokens.len(), 3, "{seen:?}");

    assert_holds_no_secret(&log, &demo, wrong_password, &seen);
}

/// The log holds none of a flow's secrets: the demo app's client secret,
/// the demo passwords, the wrong password tried, and every cookie, CSRF
/// token, code and token the flow saw, nor the random part of one without
/// its type prefix.
fn assert_holds_no_secret(log: &str, demo: &Demo, wrong_password: &str, seen: &Seen) {
    let mut secrets: Vec<(&str, &str)> = vec![
        ("client secret", &demo.client_secret),
        ("wrong password", wrong_password),
    ];
    for (_, _, password) in &demo.accounts {
        secrets.push(("demo password", password));
    }
    secrets.extend(seen.all());
    for (kind, secret) in secrets {
        assert!(!secret.is_empty());
        assert!(!log.contains(secret), "the log contains a {kind}: {secret}");
        if let Some((_, random)) = secret.strip_prefix("hg_").and_then(|r| r.split_once('_')) {
            assert!(random.len() >= 32, "{kind}: {secret}");
            assert!(!log.contains(random), "the log contains a {kind}: {secret}");
        }
    }
}

/// With `[smart]` on, the demo prints a SMART app, an EHR launch for the
/// practitioner and a standalone launch; both run to tokens with the
/// patient in context and the practitioner's `fhirUser`.
#[tokio::test]
async fn the_smart_demo_launches_from_the_ehr_and_on_its_own() {
    use reqwest::StatusCode;
    use serde_json::Value;
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "healthgate.toml",
        "[smart]\nfhir_base_urls = [\"https://fhir.example.com/r4\"]\n",
    );
    let port = crate::support::free_port();
    let bind = format!("127.0.0.1:{port}");
    let cmd = sandbox.command(&[
        "--config",
        config.to_str().unwrap(),
        "serve",
        "--demo",
        "--json",
        "--bind",
        &bind,
    ]);
    let mut server = sandbox.spawn(cmd, port);
    let line: Value = serde_json::from_str(&server.stdout_line()).unwrap();
    server.wait_healthy().await;
    let demo = Demo::parse(&line.to_string());
    let smart = &line["smart"];
    let password = demo.password_of("dr.demo").to_owned();
    let exchange = |code: String| {
        let server = &server;
        async move {
            let r = reqwest::Client::new()
                .post(server.url("/oauth/token"))
                .basic_auth(
                    smart["client_id"].as_str().unwrap(),
                    smart["client_secret"].as_str(),
                )
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    (
                        "redirect_uri",
                        &format!("{}/demo/callback?app=smart", server.base()),
                    ),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let code_of = |url: &reqwest::Url| {
        url.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no code in {url}"))
    };
    // The EHR launch: the app's launch page asks for authorization.
    let r = crate::support::browser()
        .get(smart["ehr_launch_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let authorize = server.url(
        crate::support::location(&r)
            .as_str()
            .trim_start_matches(&server.base()),
    );
    let back = flow::authorize_in_browser(&server, &authorize, "dr.demo", &password, "allow").await;
    let tokens = exchange(code_of(&back)).await;
    assert_eq!(tokens["patient"], "pat-1", "{tokens}");
    let claims = tokens["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["fhirUser"],
        "https://fhir.example.com/r4/Practitioner/dr-demo"
    );
    // The standalone launch: dr.demo picks the second patient.
    let (page, back) = flow::authorize_answering(
        &server,
        smart["standalone_url"].as_str().unwrap(),
        "dr.demo",
        &password,
        &[("decision", "allow"), ("patient", "pat-2")],
    )
    .await;
    let page = page.expect("a consent page with the patients");
    assert!(page.contains("Jamie Rivera") && page.contains("Alex Chen"));
    let tokens = exchange(code_of(&back)).await;
    assert_eq!(tokens["patient"], "pat-2", "{tokens}");
}

/// A webhook receiver that answers every request 500, on its own thread.
fn failing_receiver() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    port
}

/// `log_format = "json"` through a full flow: one object a line; each
/// request line with its id (the one the response's `X-Request-Id` gave),
/// route template, status, whole-microsecond latency, client address and
/// the app; a failed sign-in and a failed webhook delivery at WARN; none of
/// the flow's secrets.
#[tokio::test]
async fn json_logs_carry_what_an_operator_needs() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "healthgate.toml",
        "log_format = \"json\"\nallow_http_webhooks = true\nwebhook_poll_interval = 1\n",
    );
    let config = config.to_str().unwrap();
    let receiver = failing_receiver();
    let port = crate::support::free_port();
    let bind = format!("127.0.0.1:{port}");
    let cmd = sandbox.command(&[
        "--config", config, "serve", "--demo", "--json", "--bind", &bind,
    ]);
    let mut server = sandbox.spawn(cmd, port);
    let demo = Demo::parse(&server.stdout_line());
    server.wait_healthy().await;
    let hook = format!("http://127.0.0.1:{receiver}/hook");
    let out = sandbox.run(&[
        "--config",
        config,
        "client",
        "update",
        &demo.client_id,
        "--webhook-url",
        &hook,
    ]);
    assert_eq!(out.code, Some(0), "{out:#?}");

    let wrong_password = "WrongPassword-456";
    let mut seen = Seen::default();
    flow::failed_login(&server, "member.demo", wrong_password, &mut seen).await;
    // Consent is pushed to the app's webhook, which answers 500.
    let tokens = flow::authorize_and_exchange(&server, &demo, &mut seen).await;
    flow::me(
        &server,
        tokens["access_token"].as_str().unwrap(),
        "member.demo",
    )
    .await;
    let r = reqwest::get(server.url(&format!("/apps/{}/photo", demo.client_id)))
        .await
        .unwrap();
    let photo_request = r.headers()["x-request-id"].to_str().unwrap().to_owned();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !server.stderr().contains("webhook attempt failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed webhook attempt logged:\n{}",
            server.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let log = server.stderr();

    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["message"] == "request").collect();
    assert!(requests.len() > 5, "{log}");
    for line in &requests {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(
            line["span"]["request_id"].as_str().map(str::len),
            Some(16),
            "{line}"
        );
        assert!(line["latency_us"].is_u64(), "{line}");
        assert!(line["status"].is_u64(), "{line}");
        assert!(
            line["method"].is_string() && line["path"].is_string(),
            "{line}"
        );
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    }
    let token = requests
        .iter()
        .find(|l| l["path"] == "/oauth/token")
        .unwrap_or_else(|| panic!("no token request in {log}"));
    assert_eq!(token["route"], "/oauth/token", "{token}");
    assert_eq!(token["status"], 200, "{token}");
    assert_eq!(token["client_id"], demo.client_id.as_str(), "{token}");
    let me = requests
        .iter()
        .find(|l| l["path"] == "/api/v1/me")
        .unwrap_or_else(|| panic!("no /me request in {log}"));
    assert_eq!(me["client_id"], demo.client_id.as_str(), "{me}");
    let photo = requests
        .iter()
        .find(|l| l["span"]["request_id"] == photo_request.as_str())
        .unwrap_or_else(|| panic!("no line for request {photo_request} in {log}"));
    assert_eq!(photo["route"], "/apps/{id}/photo", "{photo}");
    assert_eq!(
        photo["path"],
        format!("/apps/{}/photo", demo.client_id).as_str(),
        "{photo}"
    );

    let failed_login = lines
        .iter()
        .find(|l| l["event"] == "login.failed")
        .unwrap_or_else(|| panic!("no failed sign-in in {log}"));
    assert_eq!(failed_login["level"], "WARN", "{failed_login}");
    assert_eq!(failed_login["outcome"], "failure", "{failed_login}");
    assert_eq!(failed_login["ip"], "127.0.0.1", "{failed_login}");
    assert_eq!(
        failed_login["span"]["request_id"].as_str().map(str::len),
        Some(16)
    );
    let webhook = lines
        .iter()
        .find(|l| l["message"] == "webhook attempt failed")
        .unwrap();
    assert_eq!(webhook["level"], "WARN", "{webhook}");
    assert_eq!(webhook["status"], 500, "{webhook}");
    assert_eq!(webhook["client_id"], demo.client_id.as_str(), "{webhook}");

    assert_holds_no_secret(&log, &demo, wrong_password, &seen);
}
