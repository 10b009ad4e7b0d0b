//! The operator commands: `org …`, `client update`/`webhook-secret`,
//! `audit …` and `webhooks …`.

use serde_json::{Value, json};

use crate::support::Sandbox;

fn db_url(sandbox: &Sandbox) -> String {
    format!(
        "sqlite://{}/healthgate-data/healthgate.db",
        sandbox.path().display()
    )
}

#[test]
fn organizations_and_members() {
    let sandbox = Sandbox::new();
    let org = sandbox
        .run(&["org", "create", "--name", "Joe's Practice", "--json"])
        .json();
    let id = org["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("pra-"), "{org}");
    let clinic = sandbox
        .run(&[
            "org",
            "create",
            "--name",
            "North Clinic",
            "--kind",
            "clinic",
            "--json",
        ])
        .json();
    assert!(clinic["id"].as_str().unwrap().starts_with("cln-"));
    sandbox
        .run(&[
            "user",
            "create",
            "--username",
            "joe",
            "--password",
            "correct horse",
            "--name",
            "Dr. Joe",
            "--json",
        ])
        .json();
    let added = sandbox
        .run(&["org", "add-member", &id, "joe", "--role", "admin", "--json"])
        .json();
    assert_eq!(added["role"], "admin");
    let shown = sandbox.run(&["org", "show", &id, "--json"]).json();
    assert_eq!(shown["members"][0]["username"], "joe");
    assert_eq!(shown["members"][0]["role"], "admin");
    let list = sandbox.run(&["org", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 2);

    sandbox
        .run(&["org", "add-member", &id, "joe", "--role", "owner"])
        .one_line_failure(2);
    sandbox
        .run(&["org", "add-member", "pra-nope", "joe", "--role", "staff"])
        .one_line_failure(2);
    sandbox
        .run(&["org", "add-member", &id, "nobody", "--role", "staff"])
        .one_line_failure(2);
    let bad_kind = sandbox.run(&["org", "create", "--name", "X", "--kind", "hospital"]);
    assert_eq!(bad_kind.code, Some(2));
}

#[test]
fn client_listing_and_webhook_settings() {
    let sandbox = Sandbox::new();
    let created = sandbox
        .run(&[
            "client",
            "create",
            "--name",
            "Scheduler",
            "--redirect-uri",
            "https://s.example/cb",
            "--scope",
            "profile_read",
            "--json",
        ])
        .json();
    let id = created["client_id"].as_str().unwrap().to_owned();
    assert_eq!(created["published"], false);
    // Publishing needs a connect URL.
    sandbox
        .run(&["client", "update", &id, "--publish"])
        .one_line_failure(2);
    let updated = sandbox
        .run(&[
            "client",
            "update",
            &id,
            "--publish",
            "--connect-url",
            "https://s.example/hint/connect?code=",
            "--description",
            "Online booking",
            "--json",
        ])
        .json();
    // A request: listed only once approved.
    assert_eq!(updated["published"], false);
    assert_eq!(updated["listing"]["state"], "requested");
    let approved = sandbox.run(&["client", "approve", &id, "--json"]).json();
    assert_eq!(approved["listing"]["state"], "approved");
    assert_eq!(
        sandbox.run(&["client", "show", &id, "--json"]).json()["published"],
        true
    );
    assert_eq!(
        updated["connect_url"],
        "https://s.example/hint/connect?code="
    );
    assert_eq!(updated["description"], "Online booking");
    // Webhook URLs: https, or http on loopback only in development.
    sandbox
        .run(&[
            "client",
            "update",
            &id,
            "--webhook-url",
            "http://hooks.example/in",
        ])
        .one_line_failure(2);
    sandbox
        .run(&[
            "client",
            "update",
            &id,
            "--webhook-url",
            "http://127.0.0.1:9/in",
        ])
        .one_line_failure(2);
    let with_hook = sandbox
        .run(&[
            "client",
            "update",
            &id,
            "--webhook-url",
            "https://hooks.example/in",
            "--json",
        ])
        .json();
    assert_eq!(with_hook["webhook_url"], "https://hooks.example/in");
    let mut dev = sandbox.command(&[
        "client",
        "update",
        &id,
        "--webhook-url",
        "http://127.0.0.1:9/in",
        "--json",
    ]);
    dev.env("HEALTHGATE_ALLOW_HTTP_WEBHOOKS", "true");
    let dev = crate::support::output(dev);
    assert_eq!(dev.json()["webhook_url"], "http://127.0.0.1:9/in");

    let secret = sandbox
        .run(&["client", "webhook-secret", &id, "--json"])
        .json();
    let first = secret["webhook_secret"].as_str().unwrap().to_owned();
    assert!(first.starts_with("hg_whsec_"), "{secret}");
    assert_eq!(
        sandbox
            .run(&["client", "webhook-secret", &id, "--json"])
            .json()["webhook_secret"],
        first.as_str()
    );
    let rotated = sandbox
        .run(&["client", "webhook-secret", &id, "--rotate", "--json"])
        .json();
    assert_ne!(rotated["webhook_secret"], first.as_str());

    // Rotating the client secret is an event for the partner: a delivery waits.
    sandbox
        .run(&["client", "rotate-secret", &id, "--json"])
        .json();
    let deliveries = sandbox
        .run(&["webhooks", "deliveries", "--client", &id, "--json"])
        .json();
    let list = deliveries.as_array().unwrap();
    assert_eq!(list.len(), 1, "{deliveries}");
    assert_eq!(list[0]["type"], "client.secret_rotated");
    assert_eq!(list[0]["status"], "pending");
    assert_eq!(list[0]["url"], "http://127.0.0.1:9/in");
    let unmuted = sandbox.run(&["webhooks", "unmute", &id, "--json"]).json();
    assert_eq!(unmuted, json!({"client_id": id, "resumed": 0}));
    sandbox
        .run(&["webhooks", "unmute", "app-nope"])
        .one_line_failure(2);
}

#[tokio::test]
async fn audit_verify_catches_an_edited_row() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["org", "create", "--name", "Joe's Practice", "--json"])
        .json();
    sandbox
        .run(&[
            "user",
            "create",
            "--username",
            "joe",
            "--password",
            "correct horse",
            "--json",
        ])
        .json();
    let verified = sandbox.run(&["audit", "verify", "--json"]).json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["sealed"].as_i64().unwrap() >= 2);

    let tail = sandbox.run(&["audit", "tail", "--json"]);
    assert_eq!(tail.code, Some(0));
    let kinds: Vec<String> = tail
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["user.created", "organization.created"]);

    // Someone edits the trail behind healthgate's back.
    let store = healthgate_store::Store::connect(&db_url(&sandbox), Default::default())
        .await
        .unwrap();
    store
        .execute_admin("UPDATE events SET kind = 'login.succeeded' WHERE chain_pos = 1")
        .await
        .unwrap();
    store.close().await;
    let broken = sandbox.run(&["audit", "verify"]);
    assert_eq!(broken.code, Some(1), "{broken:#?}");
    assert!(
        broken.stdout.contains("BROKEN at position 1"),
        "{broken:#?}"
    );
    assert!(
        broken
            .stderr
            .starts_with("healthgate: the audit trail was tampered with"),
        "{broken:#?}"
    );
}

/// `audit archive` moves the trail to a segment the stock `gzip` reads;
/// `audit verify --archive` checks it and the links, and catches a segment
/// edited or taken away.
#[tokio::test]
async fn audit_archive_then_verify_catches_an_edited_or_missing_segment() {
    let sandbox = Sandbox::new();
    for name in ["North Practice", "South Practice", "East Practice"] {
        sandbox
            .run(&["org", "create", "--name", name, "--json"])
            .json();
    }
    // Nothing before 1970.
    let none = sandbox
        .run(&[
            "audit",
            "archive",
            "--before",
            "1970-01-02",
            "archive",
            "--json",
        ])
        .json();
    assert_eq!(none["archived"], Value::Null, "{none}");
    // Everything sealed so far, into the folder `archive`.
    let archive_all = [
        "audit",
        "archive",
        "--before",
        "2999-01-01",
        "archive",
        "--json",
    ];
    let archived = sandbox.run(&archive_all).json();
    let segment = sandbox
        .path()
        .join(archived["archived"]["segment"].as_str().unwrap());
    assert_eq!(archived["archived"]["events"], 3, "{archived}");
    assert_eq!(archived["archived"]["deleted"], 3, "{archived}");
    let text = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&segment)
        .output()
        .expect("gzip");
    assert!(text.status.success());
    let lines: Vec<String> = String::from_utf8(text.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[1].contains("organization.created"), "{lines:?}");

    // The database holds none of them now; the chain goes on.
    sandbox
        .run(&["org", "create", "--name", "West Practice", "--json"])
        .json();
    let verified = sandbox
        .run(&["audit", "verify", "--archive", "archive", "--json"])
        .json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["archived_through"], 3, "{verified}");
    assert_eq!(verified["sealed"], 1, "{verified}");
    assert_eq!(verified["archive_checked"]["events"], 3, "{verified}");
    let plain = sandbox.run(&["audit", "verify"]);
    assert!(
        plain.stdout.contains("not checked: pass --archive DIR"),
        "{plain:#?}"
    );

    // An event edited inside the segment, recompressed with gzip.
    let edited: Vec<String> = lines
        .iter()
        .map(|l| l.replace("North Practice", "Nowhere"))
        .collect();
    let tampered = edited.join("\n") + "\n";
    assert_ne!(edited, lines, "the segment names the practice");
    let mut gzip = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    gzip.stdin
        .take()
        .unwrap()
        .write_all(tampered.as_bytes())
        .unwrap();
    let original = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, gzip.wait_with_output().unwrap().stdout).unwrap();
    let broken = sandbox.run(&["audit", "verify", "--archive", "archive"]);
    let line = broken.one_line_failure(1);
    assert!(
        line.contains("does not check at segment events-000000000001-000000000003.jsonl.gz"),
        "{line}"
    );
    assert!(broken.stdout.contains("altered"), "{broken:#?}");

    std::fs::remove_file(&segment).unwrap();
    let missing = sandbox.run(&["audit", "verify", "--archive", "archive"]);
    assert!(
        missing
            .one_line_failure(1)
            .contains("the segment is missing"),
        "{missing:#?}"
    );
    std::fs::write(&segment, original).unwrap();
    let whole = sandbox
        .run(&["audit", "verify", "--archive", "archive", "--json"])
        .json();
    assert_eq!(whole["ok"], true, "{whole}");

    // A second archive takes what came since, into a segment of its own.
    let again = sandbox.run(&archive_all).json();
    assert_eq!(again["archived"]["first_pos"], 4, "{again}");
    let both = sandbox
        .run(&["audit", "verify", "--archive", "archive", "--json"])
        .json();
    assert_eq!(both["archive_checked"]["segments"], 2, "{both}");
    // A date that is not one is a usage error.
    let bad = sandbox.run(&["audit", "archive", "--before", "2999-13-01", "x"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
}

/// The integration directory's review from the command line (issue 13,
/// item 6): requests listed with what it takes to judge them, approved,
/// rejected and unlisted with a reason, each audited with no actor (the
/// server itself); bad input is one line, exit 2, and changes nothing.
#[test]
fn directory_requests_are_reviewed_from_the_command_line() {
    let sandbox = Sandbox::new();
    let none = sandbox.run(&["client", "list-requests"]);
    assert_eq!(none.code, Some(0));
    assert_eq!(none.stdout.trim(), "no app is waiting for review");
    let id = sandbox
        .run(&[
            "client",
            "create",
            "--name",
            "Scheduler",
            "--redirect-uri",
            "https://s.example/cb",
            "--scope",
            "openid profile_read",
            "--json",
        ])
        .json()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sandbox
        .run(&[
            "client",
            "update",
            &id,
            "--publish",
            "--connect-url",
            "https://s.example/connect?code=",
            "--json",
        ])
        .json();
    let waiting = sandbox.run(&["client", "list-requests", "--json"]).json();
    let waiting = waiting.as_array().unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["client_id"], id.as_str());
    assert_eq!(waiting[0]["listing"]["state"], "requested");
    assert_eq!(waiting[0]["owner"], Value::Null, "registered with the CLI");
    assert_eq!(waiting[0]["connect_url"], "https://s.example/connect?code=");
    assert_eq!(
        waiting[0]["scopes"],
        json!([
            {"scope": "openid", "description": "Confirm who you are (sign in with your account)"},
            {"scope": "profile_read", "description": "Read your profile"},
        ])
    );
    let text = sandbox.run(&["client", "list-requests"]);
    assert!(
        text.stdout.contains(&format!("{id}  Scheduler")),
        "{text:?}"
    );
    assert!(text.stdout.contains("waiting for review since"), "{text:?}");

    // Bad input: one line, exit 2, nothing changed.
    let before = sandbox
        .run(&["audit", "tail", "--json"])
        .stdout
        .lines()
        .count();
    let long = "x".repeat(201);
    for args in [
        vec!["client", "reject", &id, "--reason", ""],
        vec!["client", "reject", &id, "--reason", "  "],
        vec!["client", "reject", &id, "--reason", &long],
        vec!["client", "reject", "app-nothing", "--reason", "no"],
        vec!["client", "approve", "app-nothing"],
        vec!["client", "unlist", &id, "--reason", "not listed yet"],
    ] {
        sandbox.run(&args).one_line_failure(2);
    }
    let no_reason = sandbox.run(&["client", "reject", &id]);
    assert_eq!(no_reason.code, Some(2), "{no_reason:?}");
    assert!(no_reason.stderr.contains("--reason"), "{no_reason:?}");
    assert_eq!(
        sandbox
            .run(&["audit", "tail", "--json"])
            .stdout
            .lines()
            .count(),
        before
    );
    let said = sandbox
        .run(&["client", "reject", &id, "--reason", ""])
        .one_line_failure(2)
        .to_owned();
    assert!(said.contains("a reason is required"), "{said}");

    // Approved: listed, once.
    let approved = sandbox.run(&["client", "approve", &id, "--json"]).json();
    assert_eq!(
        (
            approved["changed"].as_bool(),
            approved["listing"]["state"].as_str()
        ),
        (Some(true), Some("approved"))
    );
    assert_eq!(approved["listing"]["reviewed_by"], Value::Null);
    let again = sandbox.run(&["client", "approve", &id]);
    assert_eq!(again.code, Some(0));
    assert!(
        again.stdout.contains("nothing to do, it is listed since"),
        "{again:?}"
    );
    let said = sandbox
        .run(&["client", "reject", &id, "--reason", "late"])
        .one_line_failure(2)
        .to_owned();
    assert!(
        said.contains("not waiting for review: it is listed"),
        "{said}"
    );
    assert_eq!(
        sandbox.run(&["client", "list-requests", "--json"]).json(),
        json!([])
    );

    // Unlisted with a reason; asked again; rejected with a reason.
    let unlisted = sandbox
        .run(&[
            "client",
            "unlist",
            &id,
            "--reason",
            "Broken connect page",
            "--json",
        ])
        .json();
    assert_eq!(unlisted["listing"]["state"], "none");
    assert_eq!(unlisted["listing"]["reason"], "Broken connect page");
    let shown = sandbox.run(&["client", "show", &id]);
    assert!(shown.stdout.contains("not listed (taken out"), "{shown:?}");
    assert_eq!(
        sandbox.run(&["client", "update", &id, "--publish"]).code,
        Some(0)
    );
    let rejected = sandbox
        .run(&[
            "client",
            "reject",
            &id,
            "--reason",
            "Still broken",
            "--json",
        ])
        .json();
    assert_eq!(rejected["listing"]["state"], "rejected");
    assert_eq!(rejected["listing"]["reason"], "Still broken");

    // Each decision is in the audit trail, by nobody: the server itself.
    let events: Vec<Value> = sandbox
        .run(&["audit", "tail", "--json"])
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == kind).collect() };
    assert_eq!(of("client.listing_requested").len(), 2);
    assert_eq!(of("client.listing_approved").len(), 1);
    assert_eq!(
        of("client.unlisted")[0]["data"],
        json!({"reason": "Broken connect page"})
    );
    assert_eq!(
        of("client.listing_rejected")[0]["data"],
        json!({"reason": "Still broken"})
    );
    for e in [
        "client.listing_approved",
        "client.unlisted",
        "client.listing_rejected",
    ] {
        assert_eq!(of(e)[0]["actor"], Value::Null, "{e}");
        assert_eq!(of(e)[0]["client_id"], id.as_str(), "{e}");
    }
}
