//! panva's openid-client (npm), an independent client that implements
//! DPoP, PAR and JAR, driving the code flow against the real server
//! (`openid_client/flow.mjs`, run with node): discovery, a pushed request
//! with a DPoP key, the exchange, `/api/v1/me` and UserInfo with DPoP, and
//! a refresh. The browser's part (sign-in, consent) is this test's. Without
//! node or the library (`bash .ci/run` unpacks it) the tests say they are
//! skipped.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use healthgate_core::client_assertion::ClientKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

/// The flow script, or `None` (having said why) when node or
/// openid-client is missing.
fn script(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let library = dir.join("../../.ci/node/node_modules/openid-client/build/index.js");
    let node = Command::new("node").arg("--version").output();
    if !library.exists() || !node.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "openid_client::{test} skipped: node or {} is missing (bash .ci/run unpacks openid-client)",
            library.display()
        );
        return None;
    }
    Some(dir.join("tests/it/openid_client/flow.mjs"))
}

/// Runs the flow for `client_id` authenticating with `method` and
/// `credential`, as `browser` (signed in) in the middle: the result.
async fn run_flow(
    app: &TestApp,
    script: PathBuf,
    client_id: &str,
    method: &str,
    credential: &str,
    browser: &Browser,
) -> Value {
    let mut child = Command::new("node")
        .arg(script)
        .args([&app.url(""), client_id, REDIRECT, method, credential])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // node calls this server: its output is waited for off the runtime.
    let (line, stdout) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    })
    .await
    .unwrap();
    let first: Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(_) => {
            let out = child.wait_with_output().unwrap();
            panic!("openid-client: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    let authorize = first["authorize"].as_str().unwrap();
    // Only client_id and request_uri travel through the browser.
    let url = reqwest::Url::parse(authorize).unwrap();
    let mut names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    names.sort();
    assert_eq!(names, ["client_id", "request_uri"], "{authorize}");
    let path = &authorize[app.url("").len()..];
    let r = browser.get(path).await;
    assert_eq!(r.status(), StatusCode::OK, "the consent page");
    let page = r.text().await.unwrap();
    let r = browser.consent(&page, "allow").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    writeln!(stdin, "{}", location(&r)).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let mut stdout = stdout;
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let status = child.wait_with_output().unwrap();
        (rest, status)
    })
    .await
    .unwrap();
    let (rest, status) = out;
    assert!(
        status.status.success(),
        "openid-client: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let result: Value = serde_json::from_str(rest.trim()).unwrap();
    result["result"].clone()
}

/// What every run must show: DPoP-bound tokens that the resource and
/// UserInfo took with proofs, a refresh bound the same way.
async fn check(app: &TestApp, result: &Value, user: &User) {
    assert!(result["token_type"].as_str().unwrap().eq_ignore_ascii_case("dpop"), "{result}");
    assert_eq!(result["scope"], "openid profile_read", "{result}");
    assert_eq!(result["sub"], user.id.as_str(), "{result}");
    assert_eq!(result["me_status"], 200, "{result}");
    assert_eq!(result["me"]["username"], "alice", "{result}");
    assert_eq!(result["userinfo"]["sub"], user.id.as_str(), "{result}");
    assert!(
        result["refreshed_token_type"].as_str().unwrap().eq_ignore_ascii_case("dpop"),
        "{result}"
    );
    // The refreshed token is bound: refused as a bearer token.
    let access = result["refreshed_access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openid_client_runs_the_code_flow_with_par_and_dpop() {
    let Some(script) = script("openid_client_runs_the_code_flow_with_par_and_dpop") else {
        return;
    };
    let app = spawn_app().await;
    let client = app
        .register(ClientSpec {
            scope: "openid profile_read",
            ..ClientSpec::default()
        })
        .await;
    let (browser, user) = app.signed_in("alice").await;
    let secret = client.secret.clone().unwrap();
    let result = run_flow(&app, script, client.id(), "client_secret_basic", &secret, &browser).await;
    check(&app, &result, &user).await;
}

#[tokio::test]
async fn openid_client_pushes_a_signed_request_object_with_server_dpop_nonces() {
    let Some(script) = script("openid_client_pushes_a_signed_request_object_with_server_dpop_nonces")
    else {
        return;
    };
    let app = spawn_app_with(|s| s.dpop.nonce = true).await;
    let client = app
        .register(ClientSpec {
            scope: "openid profile_read",
            ..ClientSpec::default()
        })
        .await;
    let (key, pem) = ClientKey::generate().unwrap();
    app.change_client(
        client.id(),
        admin::ClientChanges {
            jwks: Some(Some(json!({ "keys": [key.public_jwk("k1")] }).to_string())),
            require_par: Some(true),
            require_dpop: Some(true),
            ..Default::default()
        },
    )
    .await;
    let (browser, user) = app.signed_in("alice").await;
    let result = run_flow(&app, script, client.id(), "private_key_jwt", &pem, &browser).await;
    check(&app, &result, &user).await;
}
