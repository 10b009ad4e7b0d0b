//! `healthgate backup PATH`: a consistent copy of a running server's SQLite
//! database, taken while tokens are being issued, from which a new server
//! serves every token issued before the copy began.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Sandbox, TokenLoad, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_token_issued_before_it() {
    let sandbox = Sandbox::new();
    let (id, secret) = sandbox.create_client("Backup App");
    let mut server = sandbox.serve(&[]);
    server.wait_healthy().await;
    let base = server.base();

    // Four clients asking for tokens until told to stop: every token
    // answered is kept, in the order it came.
    let load = TokenLoad::start(&base, &id, &secret);
    let count = || load.count();
    // Until `n` tokens have come back; a load task that failed (or a
    // server that stopped answering) fails the test rather than hanging it.
    let reach = |n: usize| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} tokens",
                count()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    reach(100).await;

    let before: Vec<String> = load.issued.lock().unwrap().clone();
    let out = tokio::task::block_in_place(|| sandbox.run(&["backup", "copies/hg.db", "--json"]));
    let after_copy = count();
    let report = out.json();
    let copy = sandbox.path().join("copies/hg.db");
    assert_eq!(
        report["bytes"].as_u64(),
        Some(std::fs::metadata(&copy).unwrap().len()),
        "{report}"
    );
    // The load went on through the copy and after it.
    reach(after_copy + 100).await;
    load.stop().await;

    // The copy is never overwritten.
    let refused = sandbox.run(&["backup", "copies/hg.db"]);
    assert!(
        refused.one_line_failure(2).contains("exists"),
        "{refused:?}"
    );
    server.terminate().await;

    // Restored: a server on the copy serves every token issued before it.
    let port = free_port();
    let mut cmd = sandbox.command(&["serve", "--bind", &format!("127.0.0.1:{port}")]);
    cmd.env(
        "HEALTHGATE_DATABASE_URL",
        format!("sqlite://{}", copy.display()),
    );
    let mut restored = sandbox.spawn(cmd, port);
    restored.wait_healthy().await;
    let http = reqwest::Client::new();
    for token in &before {
        let r = http
            .post(restored.url("/oauth/introspect"))
            .basic_auth(&id, Some(&secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("introspect");
        assert_eq!(r.status(), StatusCode::OK);
        let answer: Value = r.json().await.expect("introspection JSON");
        assert_eq!(
            answer["active"], true,
            "a token issued before the copy: {answer}"
        );
    }
}

#[test]
fn a_backup_needs_a_database_and_says_where_postgresql_goes() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["backup", "copy.db"]);
    assert!(
        out.one_line_failure(1).contains("no SQLite database"),
        "{out:?}"
    );
    assert!(
        !sandbox.path().join("healthgate-data").exists(),
        "created nothing"
    );
    assert!(!sandbox.path().join("copy.db").exists());

    if let Ok(url) = std::env::var("HEALTHGATE_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        let mut cmd = sandbox.command(&["backup", "copy.db"]);
        cmd.env("HEALTHGATE_DATABASE_URL", url);
        let out = crate::support::output(cmd);
        assert!(out.one_line_failure(2).contains("pg_dump"), "{out:?}");
    }
}
