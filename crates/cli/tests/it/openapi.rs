//! The API description, tested as an operator would: the real binary serves
//! `/openapi.json`, and schemathesis (from PyPI, installed by `.ci/run` into
//! `.ci/venv`) sends every operation in it generated requests, with real
//! credentials for every security scheme and the ids of real records, and
//! must find no 5xx, no undocumented status and no response that breaks its
//! schema.

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::flow::Demo;
use crate::support::{Sandbox, browser, csrf_token, location, output};

/// The schemathesis `.ci/run` installs, if it is there.
fn schemathesis() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.ci/venv/bin/schemathesis");
    let runs = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    runs.then_some(bin)
}

/// Signs in as the demo practice's admin, connects the practice to the demo
/// app, and exchanges the connect code as the partner: the integration id
/// and the practice API key.
async fn connect_demo_practice(base: &str, demo: &Demo) -> (String, String) {
    let http = browser();
    let (_, admin, password) = demo
        .accounts
        .iter()
        .find(|(role, _, _)| role == "admin")
        .expect("the demo has an admin");
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    let page = page.text().await.unwrap();
    let r = http
        .post(format!("{base}/login"))
        .form(&[
            ("username", admin.as_str()),
            ("password", password),
            ("csrf_token", &csrf_token(&page)),
            ("return_to", "/integrations"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign in: {r:?}");
    let page = http
        .get(format!("{base}/integrations"))
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    let r = http
        .post(format!("{base}/integrations/connect"))
        .form(&[
            ("csrf_token", csrf_token(&page).as_str()),
            ("org", &demo.practice_id),
            ("client_id", &demo.client_id),
            ("mode", "redirect"),
        ])
        .send()
        .await
        .unwrap();
    let to = location(&r);
    let code = to
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {to}"));
    let r = reqwest::Client::new()
        .post(format!("{base}/api/oauth/tokens"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let body: Value = r.json().await.unwrap();
    let field = |k: &str| body[k].as_str().unwrap_or_else(|| panic!("{k}: {body}"));
    (field("id").to_owned(), field("access_token").to_owned())
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_undocumented_status_or_broken_schema() {
    let Some(schemathesis) = schemathesis() else {
        eprintln!("schemathesis is not installed (.ci/run installs it into .ci/venv): skipped");
        return;
    };
    let sandbox = Sandbox::new();
    // Limits high enough that the generated requests reach the handlers
    // (the 429s themselves are documented); open registration and SMART
    // on, so that every operation has something to do.
    let config = sandbox.write(
        "healthgate.toml",
        r#"
[throttle]
client_failure_limit = 1000000
api_per_minute = 1000000
api_burst = 1000000

[registration]
open = true

[smart]
fhir_base_urls = ["https://fhir.example.org/r4"]
"#,
    );
    let config = config.to_str().unwrap();
    let mut server = sandbox.serve(&["--config", config, "--demo", "--json"]);
    let demo = Demo::parse(&server.stdout_line());
    server.wait_healthy().await;
    let base = server.base();
    let http = reqwest::Client::new();

    // The document itself: OpenAPI 3.1, naming this server.
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], base.as_str());
    // The reference page for people says the same, and needs nothing from
    // elsewhere (the page's CSP allows this server alone).
    let page = http
        .get(format!("{base}/developers/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            assert!(
                page.contains(&format!("id=\"{id}\"")),
                "{id} is not on the page"
            );
        }
    }
    for schema in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            page.contains(&format!("id=\"schema-{schema}\"")),
            "{schema}"
        );
    }
    assert!(
        !page.contains("src=\"http"),
        "the page loads something from elsewhere"
    );

    // Real credentials for every scheme, and real records to act on.
    let (integration, api_key) = connect_demo_practice(&base, &demo).await;
    let r = http
        .post(format!("{base}/api/v1/users"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .json(&json!({ "username": "schemathesis", "email": "st@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let user: Value = r.json().await.unwrap();
    let r = http
        .post(format!("{base}/oauth/register"))
        .json(&json!({
            "client_name": "Registered by the test",
            "redirect_uris": ["https://app.example.org/cb"],
            "scope": "profile_read",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let registered: Value = r.json().await.unwrap();
    let text = |v: &Value, k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k}: {v}"))
            .to_owned()
    };
    let settings = sandbox.write(
        "schemathesis.toml",
        &format!(
            r#"
[auth.openapi.client_basic]
username = "{client_id}"
password = "{client_secret}"

[auth.openapi.client_secret_bearer]
bearer = "{client_secret}"

[auth.openapi.access_token]
bearer = "{access_token}"

[auth.openapi.practice_api_key]
bearer = "{api_key}"

[auth.openapi.registration_access_token]
bearer = "{registration_token}"

[parameters]
client_id = "{registered_id}"

# The account the access token speaks for, everywhere but its deletion
# (which would leave the rest of the run nothing to read).
[[operations]]
include-path-regex = "^/api/v1/users/\\{{guid\\}}"
exclude-operation-id = "deleteUser"
parameters = {{ guid = "{guid}" }}

[[operations]]
include-path-regex = "^/api/v1/integrations/"
parameters = {{ id = "{integration}" }}

[[operations]]
include-path-regex = "^/api/v1/practices/"
parameters = {{ id = "{practice}" }}
"#,
            client_id = demo.client_id,
            client_secret = demo.client_secret,
            access_token = text(&user, "access_token"),
            guid = text(&user, "guid"),
            registered_id = text(&registered, "client_id"),
            registration_token = text(&registered, "registration_access_token"),
            practice = demo.practice_id,
        ),
    );

    let mut run = Command::new(&schemathesis);
    run.current_dir(sandbox.path())
        .env("NO_COLOR", "1")
        .args(["--config-file", settings.to_str().unwrap(), "run"])
        .arg(format!("{base}/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
            "--max-examples",
            "40",
            "--seed",
            "17",
            "--no-color",
        ]);
    let out = output(run);
    let report = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(0), "schemathesis found problems:\n{report}");
    // Every operation in the document was run, but the one serving the
    // document itself, which schemathesis leaves out.
    let operations = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        .count()
        - 1;
    assert!(
        report.contains(&format!("Selected: {operations}/{operations}"))
            && report.contains(&format!("Tested: {operations}")),
        "not every one of the {operations} operations was tested:\n{report}"
    );
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}
