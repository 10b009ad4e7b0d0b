//! SMART Backend Services: `client_credentials` with `private_key_jwt`
//! (RFC 7523). The client's keys are made, and its assertions signed, by a
//! stock JOSE library (panva's jose, run with node: `backend_services/
//! jose.mjs`), as a real backend service's would be. Without node or the
//! library (`bash .ci/run` unpacks it) the tests say they are skipped.

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

const FHIR: &str = "https://fhir.example.com/r4";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The signing script, or `None` (having said why) when node or jose is
/// missing.
fn jose(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let library = dir.join("../../.ci/node/node_modules/jose/dist/webapi/index.js");
    let node = Command::new("node").arg("--version").output();
    if !library.exists() || !node.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "backend_services::{test} skipped: node or {} is missing (bash .ci/run unpacks jose)",
            library.display()
        );
        return None;
    }
    Some(dir.join("tests/it/backend_services/jose.mjs"))
}

fn node(script: &PathBuf, args: &[&str]) -> String {
    let out = Command::new("node").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A key pair made by jose: (private JWK, public JWK).
fn key_pair(script: &PathBuf, alg: &str, kid: &str) -> (Value, Value) {
    let pair: Value = serde_json::from_str(&node(script, &["generate", alg, kid])).unwrap();
    (pair["private"].clone(), pair["public"].clone())
}

/// An assertion signed by jose with `key`, with `header` added.
fn sign(script: &PathBuf, key: &Value, header: Value, claims: &Value) -> String {
    let input = json!({ "private": key, "alg": key["alg"], "header": header, "claims": claims });
    node(script, &["sign", &input.to_string()])
}

async fn backend(app: &TestApp, keys: Option<Value>, jwks_uri: Option<String>) -> Client {
    let (client, secret) = admin::create_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        NewClient {
            name: "Population health".into(),
            scope: "system/Observation.rs system/Patient.rs patient/*.rs".into(),
            jwks: keys.map(|k| json!({ "keys": [k] }).to_string()),
            jwks_uri,
            ..Default::default()
        },
        Actor::system(),
    )
    .await
    .expect("register a backend service");
    assert!(secret.is_none(), "an app with keys gets no secret");
    assert!(client.redirect_uris.is_empty());
    client
}

fn claims(app: &TestApp, client: &Client, jti: &str) -> Value {
    json!({
        "iss": client.id,
        "sub": client.id,
        "aud": app.url("/oauth/token"),
        "exp": app.clock.now() + 240,
        "jti": jti,
    })
}

async fn token_with(app: &TestApp, assertion: &str, scope: &str) -> (StatusCode, Value) {
    app.token(
        None,
        &[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
    .await
}

async fn smart_app() -> TestApp {
    spawn_app_with(|s| {
        s.smart.fhir_base_urls = vec![FHIR.parse().unwrap()];
        s.allow_http_webhooks = true;
    })
    .await
}

/// A backend service registered with its public keys gets a `system/`
/// token that lives five minutes at most, without a refresh token, for an
/// assertion signed with RS384 or ES384; an assertion works once.
#[tokio::test]
async fn a_backend_service_gets_a_system_token_for_a_signed_assertion_once() {
    let Some(script) = jose("a_backend_service_gets_a_system_token_for_a_signed_assertion_once")
    else {
        return;
    };
    let app = smart_app().await;
    let rs = app.resource_server().await;
    for alg in ["RS384", "ES384", "ES256", "PS256"] {
        let (private, public) = key_pair(&script, alg, &format!("{alg}-1"));
        let client = backend(&app, Some(public), None).await;
        let assertion = sign(&script, &private, json!({}), &claims(&app, &client, alg));
        let (status, body) = token_with(&app, &assertion, "system/Observation.rs").await;
        assert_eq!(status, StatusCode::OK, "{alg}: {body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "system/Observation.rs");
        assert!(body["expires_in"].as_i64().unwrap() <= 300, "{body}");
        assert!(body.get("refresh_token").is_none(), "{body}");
        let seen = app
            .introspect(&rs, body["access_token"].as_str().unwrap())
            .await;
        assert_eq!(seen["active"], true);
        assert_eq!(seen["client_id"], client.id);
        // The same assertion again: a replay.
        let (status, body) = token_with(&app, &assertion, "system/Observation.rs").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{alg}: {body}");
        assert_eq!(body["error"], "invalid_client");
        assert!(body["error_description"].as_str().unwrap().contains("jti"));
    }
}

/// What the profile forbids is `invalid_client` (a bad assertion) or
/// `invalid_scope`, and issues nothing.
#[tokio::test]
async fn forged_stale_or_misaddressed_assertions_are_refused() {
    let Some(script) = jose("forged_stale_or_misaddressed_assertions_are_refused") else {
        return;
    };
    let app = smart_app().await;
    let (private, public) = key_pair(&script, "RS384", "k1");
    let (other_key, _) = key_pair(&script, "RS384", "k1");
    let client = backend(&app, Some(public), None).await;
    let base = claims(&app, &client, "j");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        change(&mut c);
        c
    };
    let unsigned = {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(json!({ "alg": "none", "kid": "k1" })), b64(base.clone()))
    };
    let cases: Vec<(String, &str)> = vec![
        (sign(&script, &other_key, json!({}), &with(&|c| c["jti"] = "1".into())), "signature"),
        (
            sign(&script, &private, json!({}), &with(&|c| c["aud"] = "https://evil.example/token".into())),
            "aud",
        ),
        (
            sign(&script, &private, json!({}), &with(&|c| c["exp"] = (app.clock.now() + 600).into())),
            "five minutes",
        ),
        (
            sign(&script, &private, json!({}), &with(&|c| c["sub"] = "app-someone".into())),
            "iss and sub",
        ),
        (
            sign(&script, &private, json!({ "jku": "https://evil.example/jwks" }), &with(&|c| c["jti"] = "2".into())),
            "jku",
        ),
        (unsigned, "alg none"),
    ];
    for (assertion, says) in cases {
        let (status, body) = token_with(&app, &assertion, "system/Observation.rs").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{says}: {body}");
        assert_eq!(body["error"], "invalid_client", "{says}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(says), "{says}: {description}");
    }
    // A person's scopes are not for a client acting for itself.
    let assertion = sign(&script, &private, json!({}), &with(&|c| c["jti"] = "3".into()));
    let (status, body) = token_with(&app, &assertion, "patient/*.rs").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_scope");
    // The SMART test kit's smart_backend_services_invalid_grant_type: 400.
    let assertion = sign(&script, &private, json!({}), &with(&|c| c["jti"] = "4".into()));
    let (status, body) = app
        .token(
            None,
            &[
                ("grant_type", "not_a_grant_type"),
                ("scope", "system/Observation.rs"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "unsupported_grant_type");
    // Another assertion type (the kit's invalid_client_assertion: 400 or
    // 401), or a secret, does not stand in.
    let (status, body) = app
        .token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:example:saml"),
                ("client_assertion", "x"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = app
        .token(
            Some((&client.id, "a-guessed-secret")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(app.events_of("token.issued").await.is_empty());
}

/// `system/` scopes come with client credentials only: an authorization
/// request for one is `invalid_scope`.
#[tokio::test]
async fn system_scopes_are_not_for_authorization_requests() {
    let app = smart_app().await;
    let client = app
        .register(ClientSpec {
            scope: "openid system/*.rs patient/*.rs",
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = app.signed_in("alice").await;
    let r = browser
        .authorize(&[
            ("response_type", "code"),
            ("client_id", client.id()),
            ("redirect_uri", REDIRECT),
            ("scope", "system/*.rs"),
            ("aud", FHIR),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "invalid_scope");
}

/// Keys registered by URL: fetched when first needed, kept, fetched again
/// when an assertion names a key the copy lacks (a rotation); a URL that
/// does not answer is `invalid_client`.
#[tokio::test]
async fn keys_registered_by_url_are_fetched_and_refetched_for_a_new_kid() {
    let Some(script) = jose("keys_registered_by_url_are_fetched_and_refetched_for_a_new_kid")
    else {
        return;
    };
    let app = smart_app().await;
    let (first, first_public) = key_pair(&script, "ES384", "k1");
    let (second, second_public) = key_pair(&script, "ES384", "k2");
    let served = std::sync::Arc::new(std::sync::Mutex::new(json!({ "keys": [first_public] })));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/jwks.json", listener.local_addr().unwrap().port());
    {
        let served = served.clone();
        let fetches = fetches.clone();
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let set = served.lock().unwrap().clone();
                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { axum::Json(set) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    let client = backend(&app, None, Some(url.clone())).await;
    let fetched = || fetches.load(std::sync::atomic::Ordering::SeqCst);
    for jti in ["a", "b"] {
        let assertion = sign(&script, &first, json!({}), &claims(&app, &client, jti));
        let (status, body) = token_with(&app, &assertion, "system/Patient.rs").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(fetched(), 1, "kept between assertions");
    // The service rotates to k2; its URL says so.
    *served.lock().unwrap() = json!({ "keys": [second_public] });
    app.clock.advance(11);
    let assertion = sign(&script, &second, json!({}), &claims(&app, &client, "c"));
    let (status, body) = token_with(&app, &assertion, "system/Patient.rs").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetched(), 2);
    // A kid nobody has: fetched again at most every ten seconds.
    let (stranger, _) = key_pair(&script, "ES384", "k9");
    for jti in ["d", "e"] {
        let assertion = sign(&script, &stranger, json!({}), &claims(&app, &client, jti));
        let (status, _) = token_with(&app, &assertion, "system/Patient.rs").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(fetched(), 2, "no fetch for a made-up kid within ten seconds");
    // A URL that does not answer.
    let gone = backend(&app, None, Some("http://127.0.0.1:9/jwks.json".into())).await;
    let assertion = sign(&script, &first, json!({}), &claims(&app, &gone, "f"));
    let (status, body) = token_with(&app, &assertion, "system/Patient.rs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("could not be fetched"));
}
