//! The admin commands: `client …` and `user …` with `--json`, and what they
//! leave in the database.

use serde_json::{Value, json};

use crate::support::{Sandbox, contains_bytes};

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
            "--photo-url",
            "https://app.example.com/p.png",
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
    assert_eq!(created["photo_url"], "https://app.example.com/p.png");

    // What is stored is everything but the secret.
    let mut described = created.clone();
    described.as_object_mut().unwrap().remove("client_secret");

    let list = sandbox.run(&["client", "list", "--json"]);
    assert!(!list.stdout.contains(&secret), "list shows the secret");
    assert!(!list.stdout.contains("client_secret"), "{}", list.stdout);
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
