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
        // Nor its random part without the type prefix.
        if let Some((_, random)) = secret.strip_prefix("hg_").and_then(|r| r.split_once('_')) {
            assert!(random.len() >= 32, "{kind}: {secret}");
            assert!(!log.contains(random), "the log contains a {kind}: {secret}");
        }
    }
}
