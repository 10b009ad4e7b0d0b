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
    assert_eq!(updated["published"], true);
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
