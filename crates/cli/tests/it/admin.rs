//! The admin commands: `client …` and `user …` with `--json`, and what they
//! leave in the database; suspending an app and making someone an operator,
//! seen at once by a server running on the same database.

use serde_json::{Value, json};

use crate::support::{Sandbox, browser, contains_bytes, csrf_token, free_port, location};

#[test]
fn client_commands_round_trip_as_json() {
    let sandbox = Sandbox::new();
    let created = sandbox
        .run(&[
            "client",
            "create",
            "--name",
            "My App",
            "--redirect-uri",
            "https://app.example.com/cb",
            "--redirect-uri",
            "https://app.example.com/cb2",
            "--scope",
            "profile_read profile_write",
            "--user-types",
            "member",
            "--json",
        ])
        .json();
    let id = created["client_id"].as_str().expect("client_id").to_owned();
    let secret = created["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_owned();
    assert!(id.starts_with("app-"), "{created}");
    assert!(secret.starts_with("hg_cs_"), "{created}");
    assert!(secret.len() >= "hg_cs_".len() + 43, "256 bits: {created}");
    assert_eq!(created["name"], "My App");
    assert_eq!(created["type"], "confidential");
    assert_eq!(
        created["redirect_uris"],
        json!(["https://app.example.com/cb", "https://app.example.com/cb2"])
    );
    assert_eq!(created["scope"], "profile_read profile_write");
    assert_eq!(created["user_types"], json!(["member"]));
    assert_eq!(created["photo_url"], Value::Null);

    // What is stored is everything but the secret.
    let mut described = created.clone();
    described.as_object_mut().unwrap().remove("client_secret");

    let list = sandbox.run(&["client", "list", "--json"]);
    assert!(!list.stdout.contains(&secret), "list shows the secret");
    assert!(
        !list.stdout.contains("\"client_secret\""),
        "{}",
        list.stdout
    );
    assert_eq!(list.json(), json!([described.clone()]));

    let shown = sandbox.run(&["client", "show", &id, "--json"]);
    assert!(!shown.stdout.contains(&secret));
    assert_eq!(shown.json(), described);

    let rotated = sandbox
        .run(&["client", "rotate-secret", &id, "--json"])
        .json();
    assert_eq!(rotated["client_id"], id.as_str());
    let new_secret = rotated["client_secret"].as_str().expect("new secret");
    assert!(new_secret.starts_with("hg_cs_"), "{rotated}");
    assert_ne!(new_secret, secret);

    // The store keeps digests, never the secrets.
    let data = sandbox.data_bytes();
    assert!(contains_bytes(&data, &id), "the client is in the database");
    for s in [secret.as_str(), new_secret] {
        assert!(!contains_bytes(&data, s), "secret stored in clear");
        let random_part = &s["hg_cs_".len()..];
        assert!(
            !contains_bytes(&data, random_part),
            "secret stored in clear"
        );
    }

    // A public client has no secret, and none to rotate.
    let public = sandbox
        .run(&[
            "client",
            "create",
            "--name",
            "Phone App",
            "--redirect-uri",
            "com.example.app:/cb",
            "--scope",
            "profile_read",
            "--public",
            "--json",
        ])
        .json();
    assert_eq!(public["client_secret"], Value::Null, "{public}");
    assert_eq!(public["type"], "public", "{public}");
    assert_eq!(
        public["user_types"],
        json!(["member", "expert"]),
        "{public}"
    );
    let public_id = public["client_id"].as_str().unwrap();
    let out = sandbox.run(&["client", "rotate-secret", public_id]);
    let line = out.one_line_failure(2);
    assert!(line.contains("public"), "{line}");

    let deleted = sandbox.run(&["client", "delete", &id, "--json"]).json();
    assert_eq!(deleted, json!({"client_id": id, "deleted": true}));

    for cmd in ["show", "delete", "rotate-secret"] {
        let out = sandbox.run(&["client", cmd, &id]);
        let line = out.one_line_failure(2);
        assert!(line.contains(&id), "{cmd}: {line}");
        assert!(line.contains("no client"), "{cmd}: {line}");
    }
    let left = sandbox.run(&["client", "list", "--json"]).json();
    let ids: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [public_id]);

    // Without --json: readable text that names the client.
    let text = sandbox.run(&["client", "show", public_id]);
    assert_eq!(text.code, Some(0), "{text:#?}");
    assert!(text.stdout.contains(public_id), "{text:#?}");
    assert!(text.stdout.contains("Phone App"), "{text:#?}");
}

/// `--resource-server`, `--require-mfa` and `--require-dpop` on create and
/// update (and their
/// `--no-` forms) are kept and shown; a redirect URI with a wildcard is refused with one line
/// naming it, and registers nothing.
#[test]
fn resource_servers_and_wildcard_redirect_uris() {
    let sandbox = Sandbox::new();
    let create = |extra: &[&str]| {
        let mut args = vec![
            "client",
            "create",
            "--name",
            "FHIR API",
            "--redirect-uri",
            "https://fhir.example/cb",
            "--scope",
            "profile_read",
            "--json",
        ];
        args.extend_from_slice(extra);
        sandbox.run(&args)
    };
    let rs = create(&["--resource-server"]).json();
    assert_eq!(rs["resource_server"], true, "{rs}");
    let plain = create(&[]).json();
    assert_eq!(plain["resource_server"], false, "{plain}");
    let id = plain["client_id"].as_str().unwrap();
    let updated = sandbox
        .run(&["client", "update", id, "--resource-server", "--json"])
        .json();
    assert_eq!(updated["resource_server"], true);
    let updated = sandbox
        .run(&["client", "update", id, "--no-resource-server", "--json"])
        .json();
    assert_eq!(updated["resource_server"], false);
    let text = sandbox.run(&["client", "show", rs["client_id"].as_str().unwrap()]);
    assert!(text.stdout.contains("resource_server true"), "{text:#?}");

    // An app that requires a second factor (a clinician app).
    let clinical = create(&["--require-mfa"]).json();
    assert_eq!(clinical["require_mfa"], true, "{clinical}");
    assert_eq!(plain["require_mfa"], false, "{plain}");
    let updated = sandbox
        .run(&["client", "update", id, "--require-mfa", "--json"])
        .json();
    assert_eq!(updated["require_mfa"], true);
    let updated = sandbox
        .run(&["client", "update", id, "--no-require-mfa", "--json"])
        .json();
    assert_eq!(updated["require_mfa"], false);
    let text = sandbox.run(&["client", "show", clinical["client_id"].as_str().unwrap()]);
    assert!(text.stdout.contains("require_mfa    true"), "{text:#?}");

    // An app whose every token must be DPoP-bound (RFC 9449).
    let bound = create(&["--require-dpop"]).json();
    assert_eq!(bound["require_dpop"], true, "{bound}");
    assert_eq!(plain["require_dpop"], false, "{plain}");
    for (flag, on) in [("--require-dpop", true), ("--no-require-dpop", false)] {
        let updated = sandbox
            .run(&["client", "update", id, flag, "--json"])
            .json();
        assert_eq!(updated["require_dpop"], on, "{flag}");
    }
    let text = sandbox.run(&["client", "show", bound["client_id"].as_str().unwrap()]);
    assert!(text.stdout.contains("require_dpop   true"), "{text:#?}");

    // An app whose authorization requests must be pushed first (RFC 9126).
    let pushing = create(&["--require-par"]).json();
    assert_eq!(pushing["require_par"], true, "{pushing}");
    assert_eq!(plain["require_par"], false, "{plain}");
    for (flag, on) in [("--require-par", true), ("--no-require-par", false)] {
        let updated = sandbox
            .run(&["client", "update", id, flag, "--json"])
            .json();
        assert_eq!(updated["require_par"], on, "{flag}");
    }
    let text = sandbox.run(&["client", "show", pushing["client_id"].as_str().unwrap()]);
    assert!(text.stdout.contains("require_par    true"), "{text:#?}");

    for uri in ["https://*.partner.example/cb", "https://partner.example/*"] {
        let out = sandbox.run(&[
            "client",
            "create",
            "--name",
            "Wild",
            "--redirect-uri",
            uri,
            "--scope",
            "profile_read",
        ]);
        let line = out.one_line_failure(2);
        assert!(line.contains("wildcard") && line.contains(uri), "{line}");
        let out = sandbox.run(&["client", "update", id, "--redirect-uri", uri]);
        assert!(out.one_line_failure(2).contains("wildcard"));
    }
    let all = sandbox.run(&["client", "list", "--json"]).json();
    assert_eq!(
        all.as_array().unwrap().len(),
        5,
        "nothing registered: {all}"
    );
    let kept = sandbox.run(&["client", "show", id, "--json"]).json();
    assert_eq!(kept["redirect_uris"], json!(["https://fhir.example/cb"]));
}

/// A partner's web server on loopback for `--photo-url`: `/p.png` is a
/// PNG, anything else 404. Counts the requests it answers.
fn photo_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body): (&str, &[u8]) = if request_line.starts_with("GET /p.png ") {
                ("200 OK", PNG)
            } else {
                ("404 Not Found", b"no such photo")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    (base, hits)
}

/// A 1×1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\0\0\x01\x01\0\x05\x18\xd8N\0\0\0\0IEND\xaeB`\x82";

/// `--photo-url` is fetched once, by the command, and the photo kept and
/// served by healthgate; one that cannot be fetched is refused in one line
/// and changes nothing.
#[tokio::test]
async fn a_photo_url_is_fetched_once_and_served_by_healthgate() {
    let sandbox = Sandbox::new();
    let (photos, hits) = photo_server();
    let run = |args: &[&str]| {
        let mut cmd = sandbox.command(args);
        // http on loopback, as in development.
        cmd.env("HEALTHGATE_ALLOW_HTTP_WEBHOOKS", "true");
        crate::support::output(cmd)
    };
    let create = |photo: &str| {
        run(&[
            "client",
            "create",
            "--name",
            "Pictured",
            "--redirect-uri",
            "https://app.example.com/cb",
            "--scope",
            "profile_read",
            "--photo-url",
            photo,
            "--json",
        ])
    };
    let out = create(&format!("{photos}/missing.png"));
    let line = out.one_line_failure(2);
    assert!(line.contains("HTTP 404"), "{line}");
    assert_eq!(sandbox.run(&["client", "list", "--json"]).json(), json!([]));
    // Not fetched at all: private addresses, and http unless allowed.
    let refused = sandbox.run(&[
        "client",
        "create",
        "--name",
        "Pictured",
        "--redirect-uri",
        "https://app.example.com/cb",
        "--scope",
        "profile_read",
        "--photo-url",
        &format!("{photos}/p.png"),
    ]);
    let line = refused.one_line_failure(2);
    assert!(line.contains("private or reserved"), "{line}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    let created = create(&format!("{photos}/p.png")).json();
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    let id = created["client_id"].as_str().unwrap().to_owned();
    let served = created["photo_url"].as_str().expect("photo_url").to_owned();
    assert!(
        served.starts_with(&format!("http://127.0.0.1:8080/apps/{id}/photo?v=")),
        "{created}"
    );
    // A change that cannot be fetched leaves the photo as it was.
    let out = run(&[
        "client",
        "update",
        &id,
        "--photo-url",
        &format!("{photos}/gone.png"),
    ]);
    let line = out.one_line_failure(2);
    assert!(
        line.contains("photo URL") && line.contains("HTTP 404"),
        "{line}"
    );
    let shown = sandbox.run(&["client", "show", &id, "--json"]).json();
    assert_eq!(shown["photo_url"], served.as_str());

    let mut server = sandbox.serve(&[]);
    server.wait_healthy().await;
    let path = served.strip_prefix("http://127.0.0.1:8080").unwrap();
    let r = reqwest::get(server.url(path)).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), PNG);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "served from healthgate"
    );
}

#[test]
fn user_create_prints_id() {
    let sandbox = Sandbox::new();
    let password = "correct horse";
    let user = sandbox
        .run(&[
            "user",
            "create",
            "--username",
            "alice",
            "--password",
            password,
            "--email",
            "a@example.org",
            "--type",
            "expert",
            "--json",
        ])
        .json();
    assert!(
        user["id"].as_str().is_some_and(|id| id.starts_with("usr-")),
        "{user}"
    );
    assert_eq!(user["type"], "expert", "{user}");
    assert_eq!(user["username"], "alice", "{user}");
    assert_eq!(user["email"], "a@example.org", "{user}");
    assert!(!user.to_string().contains(password), "{user}");

    // The password is stored as an argon2id hash.
    let data = sandbox.data_bytes();
    assert!(!contains_bytes(&data, password), "password stored in clear");
    assert!(
        contains_bytes(&data, "$argon2id$"),
        "no argon2id hash stored"
    );
}

/// A client-credentials token request to a running server.
async fn client_token(base: &str, id: &str, secret: &str) -> (reqwest::StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `client rotate-secret` keeps the old secret for `client_secret_grace`
/// beside the new one; `--now` ends it at once.
#[tokio::test]
async fn client_rotate_secret_keeps_the_old_one_for_the_grace_unless_now() {
    let sandbox = Sandbox::new();
    let created = sandbox
        .run(&[
            "client",
            "create",
            "--name",
            "Rolling App",
            "--redirect-uri",
            "https://rolling.example/cb",
            "--scope",
            "profile_read",
            "--json",
        ])
        .json();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let first = created["client_secret"].as_str().unwrap().to_owned();
    let mut server = sandbox.serve(&[]);
    server.wait_healthy().await;
    let base = server.base();
    let rotated = sandbox
        .run(&["client", "rotate-secret", &id, "--json"])
        .json();
    let second = rotated["client_secret"].as_str().unwrap().to_owned();
    let until = rotated["previous_secret_expires_at"]
        .as_i64()
        .expect("the old secret's expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((until - now - 86_400).abs() < 60, "24 hours: {rotated}");
    for secret in [&first, &second] {
        let (status, body) = client_token(&base, &id, secret).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }

    let out = sandbox.run(&["client", "rotate-secret", &id, "--now"]);
    assert!(
        out.stdout.contains("The old secret no longer works."),
        "{out:#?}"
    );
    let third = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret  "))
        .expect("the new secret")
        .to_owned();
    for secret in [&first, &second] {
        let (status, body) = client_token(&base, &id, secret).await;
        assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, body) = client_token(&base, &id, &third).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let rotated = sandbox
        .run(&["client", "rotate-secret", &id, "--now", "--json"])
        .json();
    assert_eq!(rotated["previous_secret_expires_at"], Value::Null);
}

#[tokio::test]
async fn client_suspend_and_restore_act_at_once_on_a_running_server() {
    let sandbox = Sandbox::new();
    let created = sandbox
        .run(&[
            "client",
            "create",
            "--name",
            "Batch App",
            "--redirect-uri",
            "https://batch.example/cb",
            "--scope",
            "profile_read",
            "--json",
        ])
        .json();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(created["suspended_at"], Value::Null);
    let mut server = sandbox.serve(&[]);
    server.wait_healthy().await;
    let base = server.base();
    let (status, body) = client_token(&base, &id, &secret).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");

    let suspended = sandbox.run(&["client", "suspend", &id, "--json"]).json();
    assert_eq!(
        suspended,
        json!({"client_id": id, "suspended": true, "changed": true,
               "families_revoked": 1, "codes_expired": 0})
    );
    // The server reads the suspension from the database at the next request.
    let (status, body) = client_token(&base, &id, &secret).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("suspended"),
        "{body}"
    );
    let shown = sandbox.run(&["client", "show", &id, "--json"]).json();
    assert!(shown["suspended_at"].is_i64(), "{shown}");
    let text = sandbox.run(&["client", "show", &id]);
    assert!(
        text.stdout.contains("status         suspended"),
        "{text:#?}"
    );
    let again = sandbox.run(&["client", "suspend", &id, "--json"]).json();
    assert_eq!(
        again,
        json!({"client_id": id, "suspended": true, "changed": false})
    );

    let restored = sandbox.run(&["client", "restore", &id, "--json"]).json();
    assert_eq!(
        restored,
        json!({"client_id": id, "suspended": false, "changed": true})
    );
    let (status, body) = client_token(&base, &id, &secret).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let again = sandbox.run(&["client", "restore", &id, "--json"]).json();
    assert_eq!(again["changed"], false);
    let text = sandbox.run(&["client", "restore", &id]);
    assert!(text.stdout.contains("was not suspended"), "{text:#?}");

    for cmd in ["suspend", "restore"] {
        let out = sandbox.run(&["client", cmd, "app-nothing"]);
        let line = out.one_line_failure(2);
        assert!(line.contains("no client"), "{cmd}: {line}");
    }
    let trail = sandbox.run(&["audit", "tail", "--json"]);
    assert_eq!(trail.code, Some(0), "{trail:#?}");
    for kind in ["client.suspended", "client.restored"] {
        assert_eq!(
            trail.stdout.matches(&format!("\"{kind}\"")).count(),
            1,
            "{kind}: {}",
            trail.stdout
        );
    }
    server.terminate().await;
}

/// Signs `username` in to a running server and opens `/admin`.
async fn open_console(base: &str, username: &str, password: &str) -> reqwest::StatusCode {
    let b = sign_in(base, username, password).await.expect("signed in");
    b.get(format!("{base}/admin"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn user_operator_opens_and_closes_the_admin_console() {
    let sandbox = Sandbox::new();
    let password = "correct horse";
    let ops = sandbox
        .run(&[
            "user",
            "create",
            "--username",
            "olivia",
            "--password",
            password,
            "--operator",
            "--json",
        ])
        .json();
    assert_eq!(ops["operator"], true, "{ops}");
    let bob = sandbox
        .run(&[
            "user",
            "create",
            "--username",
            "bob",
            "--password",
            password,
            "--json",
        ])
        .json();
    assert_eq!(bob["operator"], false, "{bob}");
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let mut server = sandbox.serve(&[]);
    server.wait_healthy().await;
    let base = server.base();
    assert_eq!(open_console(&base, "olivia", password).await, 200);
    assert_eq!(open_console(&base, "bob", password).await, 403);

    let granted = sandbox.run(&["user", "operator", "bob", "--json"]).json();
    assert_eq!(
        granted,
        json!({"id": bob_id, "username": "bob", "operator": true, "changed": true})
    );
    assert_eq!(open_console(&base, "bob", password).await, 200);
    let again = sandbox.run(&["user", "operator", &bob_id, "--json"]).json();
    assert_eq!(again["changed"], false);

    let revoked = sandbox
        .run(&["user", "operator", &bob_id, "--revoke", "--json"])
        .json();
    assert_eq!(
        revoked,
        json!({"id": bob_id, "username": "bob", "operator": false, "changed": true})
    );
    assert_eq!(open_console(&base, "bob", password).await, 403);
    let text = sandbox.run(&["user", "operator", "bob", "--revoke"]);
    assert!(text.stdout.contains("bob"), "{text:#?}");
    assert!(text.stdout.contains("was not an operator"), "{text:#?}");

    let out = sandbox.run(&["user", "operator", "nobody"]);
    let line = out.one_line_failure(2);
    assert!(line.contains("nobody"), "{line}");
    let trail = sandbox.run(&["audit", "tail", "--json"]);
    for (kind, n) in [("user.operator_granted", 2), ("user.operator_revoked", 1)] {
        assert_eq!(
            trail.stdout.matches(&format!("\"{kind}\"")).count(),
            n,
            "{kind}: {}",
            trail.stdout
        );
    }
    server.terminate().await;
}

#[tokio::test]
async fn the_demo_practice_admin_is_an_operator() {
    let sandbox = Sandbox::new();
    let mut server = sandbox.serve(&["--demo", "--json"]);
    let demo = crate::flow::Demo::parse(&server.stdout_line());
    server.wait_healthy().await;
    let account = |role: &str| {
        demo.accounts
            .iter()
            .find(|(r, _, _)| r == role)
            .unwrap_or_else(|| panic!("no {role} in the demo"))
            .clone()
    };
    let (_, admin, password) = account("admin");
    assert_eq!(admin, "admin.demo");
    assert_eq!(open_console(&server.base(), &admin, &password).await, 200);
    let (_, member, password) = account("member");
    assert_eq!(open_console(&server.base(), &member, &password).await, 403);
    server.terminate().await;
}

/// Runs commands on one database: the sandbox's SQLite file, or a
/// PostgreSQL schema of its own.
struct Db {
    sandbox: Sandbox,
    url: Option<String>,
    // Dropped after the sandbox's last command.
    _schema: Option<crate::nodes::Schema>,
}

impl Db {
    /// SQLite, and PostgreSQL too when `HEALTHGATE_TEST_POSTGRES_URL` is set.
    async fn every_backend() -> Vec<Db> {
        let mut all = vec![Db {
            sandbox: Sandbox::new(),
            url: None,
            _schema: None,
        }];
        match std::env::var(crate::nodes::POSTGRES_ENV) {
            Ok(base) if !base.trim().is_empty() => {
                let schema = crate::nodes::Schema::create(&base).await;
                all.push(Db {
                    sandbox: Sandbox::new(),
                    url: Some(schema.url()),
                    _schema: Some(schema),
                });
            }
            _ => eprintln!(
                "PostgreSQL skipped: {} is not set",
                crate::nodes::POSTGRES_ENV
            ),
        }
        all
    }

    fn run(&self, args: &[&str]) -> crate::support::Outcome {
        let mut all = Vec::new();
        if let Some(url) = &self.url {
            all.extend(["--database-url", url.as_str()]);
        }
        all.extend_from_slice(args);
        let mut cmd = self.sandbox.command(&all);
        if self.url.is_some() {
            // Every command migrates first, and PostgreSQL's notice that the
            // migrations table exists is logged at info on standard error.
            cmd.env("HEALTHGATE_LOG_LEVEL", "warn");
        }
        crate::support::output(cmd)
    }

    /// The audit trail, oldest first.
    fn events(&self) -> Vec<Value> {
        let tail = self.run(&["audit", "tail", "--limit", "1000", "--json"]);
        assert_eq!(tail.code, Some(0), "{tail:#?}");
        let mut events: Vec<Value> = tail
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        events.reverse();
        events
    }
}

#[tokio::test]
async fn user_commands_do_what_the_console_does() {
    for db in Db::every_backend().await {
        let backend = if db.url.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        let create = |username: &str, extra: &[&str]| {
            let mut args = vec![
                "user",
                "create",
                "--username",
                username,
                "--password",
                "correct horse",
                "--json",
            ];
            args.extend_from_slice(extra);
            db.run(&args).json()["id"].as_str().unwrap().to_owned()
        };
        let alice = create(
            "alice",
            &["--name", "Alice Smith", "--email", "alice@example.org"],
        );
        let bob = create("bob", &["--email", "bob@clinic.example"]);
        let carol = create("carol", &["--type", "expert"]);

        // Listing and searching, as the console's users page.
        let usernames = |args: &[&str]| -> Vec<String> {
            let mut all = vec!["user", "list", "--json"];
            all.extend_from_slice(args);
            db.run(&all)
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(usernames(&[]), ["alice", "bob", "carol"], "{backend}");
        assert_eq!(usernames(&["--query", "SMITH"]), ["alice"], "{backend}");
        assert_eq!(usernames(&["--query", "Clinic.Example"]), ["bob"]);
        assert_eq!(usernames(&["--query", "%"]), Vec::<String>::new());
        assert_eq!(usernames(&["--limit", "2"]), ["alice", "bob"]);
        assert_eq!(usernames(&["--limit", "2", "--offset", "2"]), ["carol"]);
        let listed = db.run(&["user", "list", "--json"]).json();
        assert_eq!(
            listed[0],
            json!({"id": alice, "username": "alice", "name": "Alice Smith",
                   "email": "alice@example.org", "type": "member", "operator": false,
                   "locked": false, "locked_at": null, "sign_in_locked_until": null,
                   "password": "set", "password_reset_at": null, "provisioned_by": null,
                   "fhir_user": null, "created_at": listed[0]["created_at"]}),
            "{backend}"
        );
        assert!(listed[0]["created_at"].is_i64());
        let text = db.run(&["user", "list", "--limit", "2"]);
        assert_eq!(text.code, Some(0), "{text:#?}");
        assert!(text.stdout.contains(&alice) && text.stdout.contains("bob"));
        assert!(text.stdout.contains("(1 to 2 of 3)"), "{text:#?}");
        let long = "x".repeat(201);
        let line = db
            .run(&["user", "list", "--query", &long])
            .one_line_failure(2)
            .to_owned();
        assert!(line.contains("200"), "{line}");

        // Showing one, by username or id, with its organizations.
        let org = db
            .run(&["org", "create", "--name", "Joe's Practice", "--json"])
            .json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        db.run(&[
            "org",
            "add-member",
            &org,
            "alice",
            "--role",
            "staff",
            "--json",
        ])
        .json();
        let shown = db.run(&["user", "show", "alice", "--json"]).json();
        assert_eq!(shown, db.run(&["user", "show", &alice, "--json"]).json());
        assert_eq!(
            shown["organizations"],
            json!([{"id": org, "name": "Joe's Practice", "role": "staff"}])
        );
        let text = db.run(&["user", "show", "alice"]);
        for want in [
            alice.as_str(),
            "Alice Smith",
            "Joe's Practice",
            "staff",
            "active",
        ] {
            assert!(text.stdout.contains(want), "{want}: {text:#?}");
        }

        // Locking and unlocking.
        let locked = db.run(&["user", "lock", "alice", "--json"]).json();
        assert_eq!(
            locked,
            json!({"id": alice, "username": "alice", "locked": true, "changed": true})
        );
        let again = db.run(&["user", "lock", &alice, "--json"]).json();
        assert_eq!(again["changed"], false);
        let shown = db.run(&["user", "show", "alice", "--json"]).json();
        assert_eq!(shown["locked"], true);
        assert!(shown["locked_at"].is_i64(), "{shown}");
        assert!(db.run(&["user", "list"]).stdout.contains("[locked]"));
        let text = db.run(&["user", "lock", "alice"]);
        assert!(text.stdout.contains("was already locked"), "{text:#?}");
        let unlocked = db.run(&["user", "unlock", "alice", "--json"]).json();
        assert_eq!(
            unlocked,
            json!({"id": alice, "username": "alice", "locked": false, "changed": true,
                   "cleared_failed_sign_ins": false})
        );
        let text = db.run(&["user", "unlock", "alice"]);
        assert!(text.stdout.contains("was not locked"), "{text:#?}");
        assert_eq!(
            db.run(&["user", "show", "alice", "--json"]).json()["locked"],
            false
        );

        // Second factors: none yet, said in both forms.
        let shown = db.run(&["user", "show", "alice", "--json"]).json();
        assert_eq!(shown["second_factors"], json!([]), "{shown}");
        assert_eq!(shown["recovery_codes_left"], 0);
        assert!(
            db.run(&["user", "show", "alice"])
                .stdout
                .contains("second factors: none")
        );
        // Resetting second factors (a lost phone): the reason is audited.
        let reset = db
            .run(&[
                "user",
                "reset-mfa",
                "alice",
                "--reason",
                "lost phone, called back",
                "--json",
            ])
            .json();
        assert_eq!(
            reset,
            json!({"id": alice, "username": "alice", "factors_removed": 0})
        );
        let text = db.run(&["user", "reset-mfa", "alice"]);
        assert!(text.stdout.contains("had no second factor"), "{text:#?}");
        let line = db
            .run(&["user", "reset-mfa", "alice", "--reason", " "])
            .one_line_failure(2)
            .to_owned();
        assert!(line.contains("reason"), "{line}");
        let resets: Vec<Value> = db
            .events()
            .into_iter()
            .filter(|e| e["type"] == "mfa.reset")
            .collect();
        assert_eq!(resets.len(), 2);
        assert!(
            resets
                .iter()
                .any(|e| e.to_string().contains("lost phone, called back"))
        );

        // A reset prints the temporary password once, and only there.
        let reset = db.run(&["user", "reset-password", "bob", "--json"]).json();
        assert_eq!(reset["id"], bob.as_str());
        let bob_password = reset["temporary_password"].as_str().unwrap().to_owned();
        assert!(bob_password.len() >= 16, "{reset}");
        let text = db.run(&["user", "reset-password", &carol]);
        assert_eq!(text.code, Some(0), "{text:#?}");
        assert!(text.stdout.contains("shown only now"), "{text:#?}");
        let carol_password = text
            .stdout
            .lines()
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .to_owned();
        assert_ne!(carol_password, bob_password);
        // Until they choose their own, the account says so.
        let shown = db.run(&["user", "show", "bob", "--json"]).json();
        assert_eq!(shown["password"], "temporary", "{shown}");
        assert!(shown["password_reset_at"].is_i64(), "{shown}");
        let text = db.run(&["user", "show", "bob"]);
        assert!(
            text.stdout.contains("must be changed at the next sign-in"),
            "{text:#?}"
        );
        assert!(
            db.run(&["user", "list"])
                .stdout
                .contains("[temporary password]"),
            "the list marks it"
        );

        // Removing a member, as the console's organization page.
        let removed = db
            .run(&["org", "remove-member", &org, "alice", "--json"])
            .json();
        assert_eq!(
            removed,
            json!({"organization_id": org, "user_id": alice, "username": "alice", "removed": true})
        );
        let again = db
            .run(&["org", "remove-member", &org, &alice, "--json"])
            .json();
        assert_eq!(again["removed"], false);
        let text = db.run(&["org", "remove-member", &org, "alice"]);
        assert!(text.stdout.contains("was not a member"), "{text:#?}");
        let shown = db.run(&["user", "show", "alice", "--json"]).json();
        assert_eq!(shown["organizations"], json!([]));

        // Deleting.
        let deleted = db.run(&["user", "delete", "carol", "--json"]).json();
        assert_eq!(
            deleted,
            json!({"id": carol, "username": "carol", "deleted": true})
        );
        assert_eq!(usernames(&[]), ["alice", "bob"]);

        // Unknown people, organizations: one line, and nothing changed.
        let before = db.events().len();
        for args in [
            &["user", "show", "nobody"][..],
            &["user", "lock", "nobody"],
            &["user", "unlock", "nobody"],
            &["user", "reset-password", "nobody"],
            &["user", "reset-mfa", "nobody"],
            &["user", "delete", "nobody"],
            &["user", "delete", &carol],
            &["org", "remove-member", &org, "nobody"],
        ] {
            let out = db.run(args);
            let line = out.one_line_failure(2);
            let who = args.last().unwrap();
            assert!(line.contains(&format!("{who:?}")), "{args:?}: {line}");
            assert!(out.stdout.is_empty(), "{out:#?}");
        }
        let line = db
            .run(&["org", "remove-member", "pra-nope", "alice"])
            .one_line_failure(2)
            .to_owned();
        assert!(line.contains("pra-nope"), "{line}");
        assert_eq!(usernames(&[]), ["alice", "bob"]);

        // The console's events, made by the CLI (no operator, no address),
        // and never a password.
        let events = db.events();
        assert_eq!(events.len(), before, "refusals wrote nothing");
        let of =
            |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == kind).collect() };
        let subjects = |kind: &str| -> Vec<&str> {
            of(kind)
                .iter()
                .map(|e| e["subject"].as_str().unwrap())
                .collect()
        };
        assert_eq!(subjects("user.locked"), [alice.as_str()], "{backend}");
        assert_eq!(subjects("user.unlocked"), [alice.as_str()]);
        assert_eq!(
            subjects("user.password_reset"),
            [bob.as_str(), carol.as_str()]
        );
        assert_eq!(subjects("user.deleted"), [carol.as_str()]);
        let removal = of("organization.member_removed");
        assert_eq!(removal.len(), 1);
        assert_eq!(removal[0]["subject"], alice.as_str());
        assert_eq!(removal[0]["organization_id"], org.as_str());
        for kind in [
            "user.locked",
            "user.unlocked",
            "user.password_reset",
            "user.deleted",
            "organization.member_removed",
        ] {
            for e in of(kind) {
                assert_eq!(e["actor"], Value::Null, "{e}");
                assert_eq!(e["ip"], Value::Null, "{e}");
            }
        }
        let trail = db.run(&["audit", "tail", "--json"]).stdout;
        for secret in [&bob_password, &carol_password] {
            assert!(!trail.contains(secret.as_str()), "{backend}");
        }
        if db.url.is_none() {
            let data = db.sandbox.data_bytes();
            for secret in [&bob_password, &carol_password] {
                assert!(!contains_bytes(&data, secret), "password stored in clear");
            }
        }
    }
}

/// Signs in to a running server: the browser, if the password was taken.
async fn sign_in(base: &str, username: &str, password: &str) -> Option<reqwest::Client> {
    let (b, status) = sign_in_answer(base, username, password).await;
    match status {
        reqwest::StatusCode::SEE_OTHER => Some(b),
        // Refused: a wrong password, or a locked account (403, which says so).
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => None,
        other => panic!("signing in answered {other}"),
    }
}

/// Tries to sign in to a running server: the browser and the answer's status.
async fn sign_in_answer(
    base: &str,
    username: &str,
    password: &str,
) -> (reqwest::Client, reqwest::StatusCode) {
    let b = browser();
    let page = b
        .get(format!("{base}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(format!("{base}/login"))
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf_token", &csrf_token(&page)),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    (b, status)
}

/// Whether the browser is still signed in: its account page opens.
async fn still_signed_in(b: &reqwest::Client, base: &str) -> bool {
    let r = b.get(format!("{base}/account")).send().await.unwrap();
    match r.status() {
        reqwest::StatusCode::OK => true,
        s if s.is_redirection() => {
            assert!(location(&r).path() == "/login", "{r:?}");
            false
        }
        other => panic!("/account answered {other}"),
    }
}

#[tokio::test]
async fn a_locked_or_reset_account_is_seen_at_once_by_a_running_server() {
    let sandbox = Sandbox::new();
    let password = "correct horse";
    sandbox
        .run(&[
            "user",
            "create",
            "--username",
            "alice",
            "--password",
            password,
            "--json",
        ])
        .json();
    let mut server = sandbox.serve(&[]);
    server.wait_healthy().await;
    let base = server.base();
    let session = sign_in(&base, "alice", password).await.expect("signed in");
    assert!(still_signed_in(&session, &base).await);

    sandbox.run(&["user", "lock", "alice", "--json"]).json();
    assert!(!still_signed_in(&session, &base).await, "sessions end");
    assert!(sign_in(&base, "alice", password).await.is_none(), "locked");
    sandbox.run(&["user", "unlock", "alice", "--json"]).json();
    let session = sign_in(&base, "alice", password).await.expect("unlocked");

    let reset = sandbox
        .run(&["user", "reset-password", "alice", "--json"])
        .json();
    let temporary = reset["temporary_password"].as_str().unwrap();
    assert!(!still_signed_in(&session, &base).await, "sessions end");
    assert!(sign_in(&base, "alice", password).await.is_none());
    let session = sign_in(&base, "alice", temporary).await.expect("reset");
    // The temporary password is changed before anything else: every page
    // sends her to choose her own, and comes back after.
    let r = session.get(format!("{base}/account")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    let to = location(&r);
    assert_eq!(to.path(), "/account/password/new", "{r:?}");
    assert_eq!(to.query(), Some("return_to=%2Faccount"));
    let page = session.get(to).send().await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Choose a new password"));

    sandbox.run(&["user", "delete", "alice", "--json"]).json();
    assert!(!still_signed_in(&session, &base).await, "deleted");
    assert!(sign_in(&base, "alice", temporary).await.is_none());
    server.terminate().await;
}

#[tokio::test]
async fn an_account_locked_by_failed_sign_ins_is_unlocked_by_the_cli_on_a_running_server() {
    let sandbox = Sandbox::new();
    let password = "correct horse";
    let alice = sandbox
        .run(&[
            "user",
            "create",
            "--username",
            "alice",
            "--password",
            password,
            "--json",
        ])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Three failures lock a username (no waits before: the server runs on
    // the real clock).
    let config = sandbox.write(
        "healthgate.toml",
        "[throttle]\nsign_in_free_failures = 3\nsign_in_lock_after = 3\n",
    );
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let cmd = sandbox.command(&[
        "--config",
        config.to_str().unwrap(),
        "serve",
        "--bind",
        &bind,
    ]);
    let mut server = sandbox.spawn(cmd, port);
    server.wait_healthy().await;
    let base = server.base();
    let lock = || async {
        for _ in 0..3 {
            assert!(sign_in(&base, "alice", "not the password").await.is_none());
        }
        let (_, status) = sign_in_answer(&base, "alice", password).await;
        assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS, "locked");
    };
    lock().await;

    // `user show` and `user list` say until when.
    let shown = sandbox.run(&["user", "show", "alice", "--json"]).json();
    let until = shown["sign_in_locked_until"].as_i64().expect("until when");
    assert_eq!(shown["locked"], false, "not an operator's lock: {shown}");
    let text = sandbox.run(&["user", "show", "alice"]).stdout;
    assert!(
        text.contains(&format!("locked after failed sign-ins until {until}")),
        "{text}"
    );
    let listed = sandbox.run(&["user", "list", "--json"]).json();
    assert_eq!(listed[0]["sign_in_locked_until"], until);
    let text = sandbox.run(&["user", "list"]).stdout;
    assert!(
        text.contains(&format!("[locked after failed sign-ins until {until}]")),
        "{text}"
    );

    // `user unlock` clears it, says so, and she signs in at once.
    let unlocked = sandbox.run(&["user", "unlock", "alice", "--json"]).json();
    assert_eq!(
        unlocked,
        json!({"id": alice, "username": "alice", "locked": false, "changed": true,
               "cleared_failed_sign_ins": true})
    );
    assert!(
        sign_in(&base, "alice", password).await.is_some(),
        "unlocked"
    );
    let shown = sandbox.run(&["user", "show", "alice", "--json"]).json();
    assert_eq!(shown["sign_in_locked_until"], Value::Null);
    assert!(
        sandbox
            .run(&["user", "show", "alice"])
            .stdout
            .contains("active")
    );

    // In words too; and with an operator's lock as well, both go at once.
    lock().await;
    sandbox.run(&["user", "lock", "alice", "--json"]).json();
    let text = sandbox.run(&["user", "show", "alice"]).stdout;
    assert!(text.contains("and after failed sign-ins until"), "{text}");
    let out = sandbox.run(&["user", "unlock", "alice"]);
    assert!(
        out.stdout
            .contains("and cleared the lock after failed sign-ins: they can sign in again"),
        "{out:#?}"
    );
    assert!(
        sign_in(&base, "alice", password).await.is_some(),
        "unlocked"
    );
    let out = sandbox.run(&["user", "unlock", "alice"]);
    assert!(out.stdout.contains("was not locked"), "{out:#?}");

    // Oldest first: `audit tail` prints the newest first, one a line.
    let tail = sandbox
        .run(&["audit", "tail", "--limit", "1000", "--json"])
        .stdout;
    let mut events: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    events.reverse();
    let cleared: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "user.unlocked")
        .map(|e| &e["data"]["cleared"])
        .collect();
    assert_eq!(
        cleared,
        [
            &json!(["failed_sign_ins"]),
            &json!(["operator_lock", "failed_sign_ins"])
        ],
        "{tail}"
    );
    server.terminate().await;
}

/// SMART on the command line: an app registered with a launch URL, a
/// launcher, and `smart launch`, which prints the app's launch URL with
/// `iss` and a launch value the database keeps (by digest) with its
/// context. Without `[smart]`, a launch is refused in one line.
#[test]
fn smart_launches_are_made_from_the_command_line() {
    let sandbox = Sandbox::new();
    let off = sandbox.run(&["smart", "launch", "--client", "app-x"]);
    assert!(off.one_line_failure(2).contains("SMART is off"), "{off:#?}");
    let config = sandbox.write(
        "healthgate.toml",
        "[smart]\nfhir_base_urls = [\"https://fhir.example.com/r4\"]\n",
    );
    let config = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config];
        all.extend_from_slice(args);
        sandbox.run(&all)
    };
    let app = run(&[
        "client",
        "create",
        "--name",
        "Growth charts",
        "--redirect-uri",
        "https://app.example/cb",
        "--scope",
        "openid launch patient/*.rs",
        "--launch-url",
        "https://app.example/launch",
        "--json",
    ])
    .json();
    assert_eq!(app["launch_url"], "https://app.example/launch");
    assert_eq!(app["smart_launcher"], false);
    let id = app["client_id"].as_str().unwrap();
    let ehr = run(&[
        "client",
        "create",
        "--name",
        "The EHR",
        "--redirect-uri",
        "https://ehr.example/cb",
        "--scope",
        "openid",
        "--smart-launcher",
        "--json",
    ])
    .json();
    assert_eq!(ehr["smart_launcher"], true);
    let updated = run(&[
        "client",
        "update",
        ehr["client_id"].as_str().unwrap(),
        "--no-smart-launcher",
        "--json",
    ])
    .json();
    assert_eq!(updated["smart_launcher"], false);
    let bad = run(&[
        "client",
        "update",
        id,
        "--launch-url",
        "ftp://app.example/x",
    ]);
    assert!(bad.one_line_failure(2).contains("launch URL"), "{bad:#?}");
    run(&[
        "user",
        "create",
        "--username",
        "dr.who",
        "--password",
        "correct horse battery staple",
        "--json",
    ])
    .json();
    // Who dr.who is on the FHIR server, and the patients they may pick.
    let updated = run(&[
        "user",
        "update",
        "dr.who",
        "--fhir-user",
        "Practitioner/77",
        "--json",
    ])
    .json();
    assert_eq!(updated["fhir_user"], "Practitioner/77");
    let bad = run(&["user", "update", "dr.who", "--fhir-user", "Observation/1"]);
    assert!(bad.one_line_failure(2).contains("fhirUser"), "{bad:#?}");
    run(&[
        "user",
        "link-patient",
        "dr.who",
        "--patient",
        "123",
        "--display",
        "Jane Doe",
        "--json",
    ])
    .json();
    run(&[
        "user",
        "link-patient",
        "dr.who",
        "--patient",
        "456",
        "--display",
        "Sam Doe",
        "--json",
    ])
    .json();
    run(&[
        "user",
        "unlink-patient",
        "dr.who",
        "--patient",
        "456",
        "--json",
    ])
    .json();
    let again = run(&["user", "unlink-patient", "dr.who", "--patient", "456"]);
    assert!(
        again.one_line_failure(2).contains("not linked"),
        "{again:#?}"
    );
    let shown = run(&["user", "show", "dr.who", "--json"]).json();
    assert_eq!(shown["fhir_user"], "Practitioner/77");
    assert_eq!(
        shown["patients"],
        json!([{ "id": "123", "display": "Jane Doe" }])
    );
    let text = run(&["user", "show", "dr.who"]);
    assert!(
        text.stdout.contains("fhir_user       Practitioner/77"),
        "{text:#?}"
    );
    assert!(text.stdout.contains("123           Jane Doe"), "{text:#?}");
    let made = run(&[
        "smart",
        "launch",
        "--client",
        id,
        "--user",
        "dr.who",
        "--patient",
        "123",
        "--encounter",
        "enc-9",
        "--context",
        "Appointment/9",
        "--json",
    ])
    .json();
    let url = reqwest::Url::parse(made["launch_url"].as_str().unwrap()).unwrap();
    assert_eq!(url.path(), "/launch");
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["iss"], "https://fhir.example.com/r4");
    assert_eq!(q["launch"], made["launch"].as_str().unwrap());
    assert!(q["launch"].starts_with("hg_ln_"));
    // The value itself is not kept: only its digest.
    assert!(!contains_bytes(&sandbox.data_bytes(), &q["launch"]));
    let text = run(&["smart", "launch", "--client", id]);
    assert!(
        text.stdout
            .contains("launch_url  https://app.example/launch?iss="),
        "{text:#?}"
    );
    for (args, says) in [
        (vec!["--client", "app-nope"], "no client"),
        (vec!["--client", id, "--patient", "a/b"], "patient"),
        (
            vec!["--client", id, "--user", "nobody"],
            "no user with id or username",
        ),
    ] {
        let mut all = vec!["smart", "launch"];
        all.extend(args);
        let out = run(&all);
        assert!(out.one_line_failure(2).contains(says), "{out:#?}");
    }
}

/// A backend service registered from the command line: its public JWK Set
/// from a file (or a URL), no redirect URI, no secret; a set with a private
/// key in it is refused.
#[test]
fn a_backend_service_is_registered_with_its_public_keys() {
    let sandbox = Sandbox::new();
    let public = json!({ "keys": [{
        "kty": "EC", "crv": "P-384", "kid": "k1",
        "x": "xEE9D-CE_ub35ugXtfsCFGt-Mtp0O_GogtuDE5Wd8Y9aB2zHk0URikbUWtP76zj_",
        "y": "5sdBziUerZ5ff2aNeI1auHmUQF0S-fon-ZJ7xe5SVWCgX-W_bMMwwfr5TEMKD3Nx",
    }]});
    let file = sandbox.write("jwks.json", &public.to_string());
    let created = sandbox
        .run(&[
            "client",
            "create",
            "--name",
            "Population health",
            "--scope",
            "profile_read",
            "--jwks",
            file.to_str().unwrap(),
            "--json",
        ])
        .json();
    assert_eq!(created["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(created["client_secret"], Value::Null);
    assert_eq!(created["redirect_uris"], json!([]));
    assert_eq!(created["jwks"], public);
    let mut private = public.clone();
    private["keys"][0]["d"] = "0OscZkR0Vv2JhNvg".into();
    let file = sandbox.write("private.json", &private.to_string());
    let out = sandbox.run(&[
        "client",
        "create",
        "--name",
        "Leaky",
        "--scope",
        "profile_read",
        "--jwks",
        file.to_str().unwrap(),
    ]);
    assert!(out.one_line_failure(2).contains("private key"), "{out:#?}");
    let by_url = sandbox
        .run(&[
            "client",
            "create",
            "--name",
            "By URL",
            "--scope",
            "profile_read",
            "--jwks-uri",
            "https://backend.example/.well-known/jwks.json",
            "--json",
        ])
        .json();
    assert_eq!(
        by_url["jwks_uri"],
        "https://backend.example/.well-known/jwks.json"
    );
    assert_eq!(by_url["token_endpoint_auth_method"], "private_key_jwt");
}

/// `client registration-token create|list|revoke`: a token made on the
/// command line registers an app at a running server's /oauth/register,
/// owned by the token's owner; revoked, it registers nothing more.
#[tokio::test]
async fn registration_tokens_register_apps_at_the_endpoint_until_revoked() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&[
        "user",
        "create",
        "--username",
        "dev",
        "--password",
        "correct horse battery",
    ]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let made = sandbox
        .run(&[
            "client",
            "registration-token",
            "create",
            "--owner",
            "dev",
            "--expires",
            "3600",
            "--label",
            "Acme onboarding",
            "--json",
        ])
        .json();
    let token = made["token"].as_str().expect("token").to_owned();
    let id = made["id"].as_str().expect("id").to_owned();
    assert!(token.starts_with("hg_iat_"), "{made}");
    assert_eq!(made["label"], "Acme onboarding");
    let text = sandbox
        .run(&["client", "registration-token", "list"])
        .stdout;
    assert!(
        text.contains(&format!("{id}  usable  Acme onboarding")),
        "{text}"
    );
    let nobody = sandbox.run(&[
        "client",
        "registration-token",
        "create",
        "--owner",
        "nobody",
    ]);
    assert!(nobody.one_line_failure(2).contains("nobody"), "{nobody:#?}");

    let server = {
        let mut s = sandbox.serve(&[]);
        s.wait_healthy().await;
        s
    };
    let register = |token: String| {
        let url = server.url("/oauth/register");
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({
                    "client_name": "Acme",
                    "redirect_uris": ["https://acme.example/cb"],
                    "scope": "profile_read",
                }))
                .send()
                .await
                .unwrap()
        }
    };
    let r = register(token.clone()).await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let shown = sandbox
        .run(&[
            "client",
            "show",
            body["client_id"].as_str().unwrap(),
            "--json",
        ])
        .json();
    assert_eq!(shown["name"], "Acme");
    let dev = sandbox.run(&["user", "show", "dev", "--json"]).json();
    assert_eq!(shown["owner_id"], dev["id"], "{shown}");

    let revoked = sandbox
        .run(&["client", "registration-token", "revoke", &id, "--json"])
        .json();
    assert_eq!(revoked["revoked"], true);
    let again = sandbox.run(&["client", "registration-token", "revoke", &id]);
    assert_eq!(again.code, Some(1), "{again:#?}");
    let r = register(token).await;
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let text = sandbox
        .run(&["client", "registration-token", "list"])
        .stdout;
    assert!(text.contains(&format!("{id}  revoked")), "{text}");
}
