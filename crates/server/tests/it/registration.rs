//! Dynamic client registration over TCP, as a client written from RFC 7591
//! and RFC 7592 would do it: an operator's initial access token registers
//! an app (owned by the token's owner, audited, in the console), which
//! then runs the code flow; its registration access token reads, replaces
//! (and is replaced) and deletes the registration. Metadata is checked by
//! the rules the portal and the command line apply.

use healthgate_core::client_assertion::ClientKey;
use healthgate_server::services::registration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

/// POSTs `body` to `/oauth/register` with `token` as the bearer.
async fn register(app: &TestApp, token: Option<&str>, body: &Value) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = app.http().post(app.url("/oauth/register")).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

/// `method` on a registration's configuration URI with `token`.
async fn configure(
    app: &TestApp,
    method: reqwest::Method,
    uri: &str,
    token: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = app.http().request(method, uri).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn initial_token(app: &TestApp, owner: Option<&str>, lifetime: Option<i64>) -> (String, String) {
    let (t, value) = registration::issue_token(
        &app.state.store,
        app.clock.as_ref(),
        Some("onboarding".into()),
        owner,
        lifetime,
        Actor::system(),
    )
    .await
    .unwrap();
    (t.id, value)
}

fn metadata() -> Value {
    json!({
        "client_name": "Registered by API",
        "redirect_uris": [REDIRECT],
        "scope": "profile_read",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
        "tos_uri": "https://app.example/tos",
    })
}

#[tokio::test]
async fn an_initial_access_token_registers_an_app_that_then_runs_the_code_flow() {
    let app = spawn_app().await;
    for document in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let m: Value = app.http().get(app.url(document)).send().await.unwrap().json().await.unwrap();
        assert_eq!(m["registration_endpoint"], app.url("/oauth/register"), "{document}");
    }
    let dev = app.user("dev", UserType::Member).await;
    let (token_id, token) = initial_token(&app, Some("dev"), Some(3600)).await;

    // Without a token, or with a wrong one: 401 invalid_token, Bearer.
    for presented in [None, Some("hg_iat_wrong")] {
        let (status, body, headers) = register(&app, presented, &metadata()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{presented:?}");
        assert_eq!(body["error"], "invalid_token");
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    }

    let (status, body, headers) = register(&app, Some(&token), &metadata()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let client_id = body["client_id"].as_str().unwrap().to_owned();
    let secret = body["client_secret"].as_str().unwrap().to_owned();
    let access = body["registration_access_token"].as_str().unwrap().to_owned();
    let uri = body["registration_client_uri"].as_str().unwrap().to_owned();
    assert_eq!(uri, app.url(&format!("/oauth/register/{client_id}")));
    assert!(access.starts_with("hg_rat_") && secret.starts_with("hg_cs_"));
    assert_eq!(body["client_secret_expires_at"], 0);
    assert_eq!(body["client_name"], "Registered by API");
    assert_eq!(body["redirect_uris"], json!([REDIRECT]));
    assert_eq!(body["scope"], "profile_read");
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(body["response_types"], json!(["code"]));
    assert!(body["grant_types"].as_array().unwrap().contains(&json!("authorization_code")));
    assert!(body.get("tos_uri").is_none(), "unknown metadata is not kept: {body}");

    // Owned by the token's owner, audited, shown in the console.
    let stored = app.state.store.client(&client_id).await.unwrap().unwrap();
    assert_eq!(stored.owner_id.as_deref(), Some(dev.id.as_str()));
    assert_eq!(stored.registered_with.as_deref(), Some(token_id.as_str()));
    let created = app.events_of("client.created").await;
    assert_eq!(created[0].client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(created[0].actor_user_id.as_deref(), Some(dev.id.as_str()));
    assert!(created[0].data.as_deref().unwrap().contains(&token_id));
    assert!(!app.events_of("registration_token.created").await.is_empty());
    let (operator, op) = app.signed_in("op").await;
    let made = app.state.store.set_operator(&op.id, true, Actor::system(), app.clock.now());
    assert!(made.await.unwrap());
    let console = readable(operator.get("/admin/apps").await.text().await.unwrap());
    assert!(console.contains(&format!("with token <code>{token_id}</code>")), "{console}");

    // The app runs the code flow.
    let client = TestClient {
        client: stored,
        secret: Some(secret.clone()),
    };
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let (status, tokens) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    // RFC 7592: read it with its registration access token, and only so.
    let (status, read) = configure(&app, reqwest::Method::GET, &uri, &access, None).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["client_id"], client_id.as_str());
    assert_eq!(read["registration_access_token"], access.as_str());
    assert!(read.get("client_secret").is_none());
    let (status, _) = configure(&app, reqwest::Method::GET, &uri, &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the initial token is not the access token");
    let (status, _) =
        configure(&app, reqwest::Method::GET, &app.url("/oauth/register/app-nobody"), &access, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another client");

    // PUT replaces it, and the registration access token with it.
    let mut replaced = metadata();
    replaced["client_name"] = "Renamed".into();
    replaced["redirect_uris"] = json!([REDIRECT, "https://app.example/cb2"]);
    let (status, body) = configure(&app, reqwest::Method::PUT, &uri, &access, Some(&replaced)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no client_id: {body}");
    assert_eq!(body["error"], "invalid_client_metadata");
    replaced["client_id"] = client_id.as_str().into();
    replaced["client_secret"] = "not-the-secret".into();
    let (status, body) = configure(&app, reqwest::Method::PUT, &uri, &access, Some(&replaced)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    replaced["client_secret"] = secret.as_str().into();
    replaced["token_endpoint_auth_method"] = "none".into();
    let (status, body) = configure(&app, reqwest::Method::PUT, &uri, &access, Some(&replaced)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    replaced["token_endpoint_auth_method"] = "client_secret_post".into();
    let (status, body) = configure(&app, reqwest::Method::PUT, &uri, &access, Some(&replaced)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["client_name"], "Renamed");
    assert_eq!(body["redirect_uris"].as_array().unwrap().len(), 2);
    let rotated = body["registration_access_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, access);
    let (status, _) = configure(&app, reqwest::Method::GET, &uri, &access, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old access token is spent");
    let (status, _) = configure(&app, reqwest::Method::GET, &uri, &rotated, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!app.events_of("client.updated").await.is_empty());
    assert!(!app.events_of("client.registration_access_rotated").await.is_empty());

    // DELETE: 204, then the app is gone everywhere.
    let r = app.http().delete(&uri).bearer_auth(&rotated).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, _) = configure(&app, reqwest::Method::GET, &uri, &rotated, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!app.events_of("client.deleted").await.is_empty());

    // An expired or revoked initial access token registers nothing.
    let (_, short) = initial_token(&app, None, Some(60)).await;
    app.clock.advance(61);
    let (status, _, _) = register(&app, Some(&short), &metadata()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(app.state.store.revoke_registration_token(&token_id, Actor::system(), app.clock.now()).await.unwrap());
    let (status, _, _) = register(&app, Some(&token), &metadata()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn registration_metadata_meets_the_rules_of_every_registration() {
    let app = spawn_app().await;
    let (_, token) = initial_token(&app, None, None).await;
    let before = app.state.store.clients().await.unwrap().len();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut m = metadata();
        f(&mut m);
        m
    };
    let cases = [
        (with(&|m| m["redirect_uris"] = json!(["https://app.example/cb#frag"])), "invalid_redirect_uri"),
        (with(&|m| m["redirect_uris"] = json!(["https://*.example/cb"])), "invalid_redirect_uri"),
        (with(&|m| { m.as_object_mut().unwrap().remove("redirect_uris"); }), "invalid_redirect_uri"),
        (with(&|m| m["scope"] = "no_such_scope".into()), "invalid_client_metadata"),
        (with(&|m| { m.as_object_mut().unwrap().remove("scope"); }), "invalid_client_metadata"),
        (with(&|m| m["grant_types"] = json!(["implicit"])), "invalid_client_metadata"),
        (with(&|m| m["response_types"] = json!(["token"])), "invalid_client_metadata"),
        (with(&|m| m["id_token_signed_response_alg"] = "none".into()), "invalid_client_metadata"),
        (
            with(&|m| {
                m["token_endpoint_auth_method"] = "private_key_jwt".into();
                m["jwks"] = json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": "x", "y": "y", "d": "secret" }] });
            }),
            "invalid_client_metadata",
        ),
        (with(&|m| m["software_statement"] = "a.b.c".into()), "unapproved_software_statement"),
    ];
    for (body, error) in cases {
        let (status, answer, _) = register(&app, Some(&token), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"], error, "{body}: {answer}");
    }
    let r = app
        .http()
        .post(app.url("/oauth/register"))
        .bearer_auth(&token)
        .form(&[("client_name", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.state.store.clients().await.unwrap().len(), before, "nothing registered");
}

#[tokio::test]
async fn open_registration_takes_dpop_par_public_and_keyed_apps() {
    let app = spawn_app_with(|s| s.registration.open = true).await;
    let mut bound = metadata();
    bound["dpop_bound_access_tokens"] = true.into();
    bound["require_pushed_authorization_requests"] = true.into();
    let (status, body, _) = register(&app, None, &bound).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["dpop_bound_access_tokens"], true);
    assert_eq!(body["require_pushed_authorization_requests"], true);
    let stored = app.state.store.client(body["client_id"].as_str().unwrap()).await.unwrap().unwrap();
    assert!(stored.require_dpop && stored.require_par && stored.owner_id.is_none());
    assert_eq!(stored.registered_with.as_deref(), Some("open"));

    // A public app: no secret.
    let mut public = metadata();
    public["token_endpoint_auth_method"] = "none".into();
    let (status, body, _) = register(&app, None, &public).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body.get("client_secret").is_none());
    assert_eq!(body["token_endpoint_auth_method"], "none");

    // A backend service with its keys: no secret, no redirect URI, and a
    // client credentials token with an assertion.
    let (key, _) = ClientKey::generate().unwrap();
    let service = json!({
        "client_name": "Nightly export",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": { "keys": [key.public_jwk("k1")] },
        "scope": "profile_read",
    });
    let (status, body, _) = register(&app, None, &service).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body.get("client_secret").is_none());
    assert_eq!(body["grant_types"], json!(["client_credentials"]));
    assert_eq!(body["response_types"], json!([]));
    let id = body["client_id"].as_str().unwrap();
    let now = app.clock.now();
    let assertion = key
        .sign("k1", &json!({ "iss": id, "sub": id, "aud": app.url("/oauth/token"), "exp": now + 60, "jti": "j1" }))
        .unwrap();
    let (status, tokens) = app
        .token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", assertion.as_str()),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
}
