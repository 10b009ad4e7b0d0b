//! `healthgate serve`: it listens, answers its probes, creates its database,
//! layers its configuration sources in order, and stops cleanly on SIGTERM.

use reqwest::StatusCode;

use crate::support::{DB_FILE, Sandbox, Server, free_port};

async fn get_text(server: &Server, path: &str) -> (StatusCode, String) {
    let r = reqwest::get(server.url(path)).await.expect("GET");
    let status = r.status();
    (status, r.text().await.expect("body"))
}

#[tokio::test]
async fn serve_listens_and_answers_health() {
    let sandbox = Sandbox::new();
    assert!(!sandbox.path().join(DB_FILE).exists());
    let mut server = sandbox.serve(&[]);
    server.wait_healthy().await;

    let (status, body) = get_text(&server, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, body) = get_text(&server, "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
    let (status, _) = get_text(&server, "/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let db = sandbox.path().join(DB_FILE);
    assert!(db.is_file(), "{} was not created", db.display());
    let header = std::fs::read(&db).expect("read the database");
    assert!(
        header.starts_with(b"SQLite format 3\0"),
        "not a SQLite file"
    );
}

#[tokio::test]
async fn config_precedence_file_then_env_then_flags() {
    let sandbox = Sandbox::new();
    let [a, b, c] = [free_port(), free_port(), free_port()];
    let config = sandbox.write(
        "healthgate.toml",
        &format!("bind = \"127.0.0.1:{a}\"\nplatform_name = \"FromFile\"\n"),
    );
    let config = config.to_str().expect("UTF-8 path");

    // The file alone.
    let cmd = sandbox.command(&["--config", config, "serve"]);
    let mut server = sandbox.spawn(cmd, a);
    server.wait_healthy().await;
    let (status, home) = get_text(&server, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(home.contains("FromFile"), "{home}");
    drop(server);

    // The environment overrides the file.
    let mut cmd = sandbox.command(&["--config", config, "serve"]);
    cmd.env("HEALTHGATE_BIND", format!("127.0.0.1:{b}"))
        .env("HEALTHGATE_PLATFORM_NAME", "FromEnv");
    let mut server = sandbox.spawn(cmd, b);
    server.wait_healthy().await;
    let (_, home) = get_text(&server, "/").await;
    assert!(home.contains("FromEnv"), "{home}");
    assert!(!home.contains("FromFile"), "{home}");
    drop(server);

    // Flags override both.
    let bind_c = format!("127.0.0.1:{c}");
    let mut cmd = sandbox.command(&["--config", config, "serve", "--bind", &bind_c]);
    cmd.env("HEALTHGATE_BIND", format!("127.0.0.1:{b}"));
    let mut server = sandbox.spawn(cmd, c);
    server.wait_healthy().await;
    let (_, home) = get_text(&server, "/").await;
    assert!(home.contains("FromFile"), "{home}");
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let sandbox = Sandbox::new();
    let mut server = sandbox.serve(&[]);
    server.wait_healthy().await;
    let status = server.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        server.stderr()
    );
    let log = server.stderr();
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(log.contains("healthgate stopped"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
