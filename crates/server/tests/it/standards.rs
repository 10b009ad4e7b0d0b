//! Revocation (RFC 7009), introspection (RFC 7662) and authorization server
//! metadata (RFC 8414).

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

async fn post_as(app: &TestApp, client: &TestClient, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = app
        .http()
        .post(app.url(path))
        .basic_auth(client.id(), client.secret.as_deref())
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    if status == StatusCode::OK && path == "/oauth/revoke" {
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn revoking_an_access_token_kills_only_it() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    let (status, _) = post_as(&app, &client, "/oauth/revoke", &[("token", &access), ("token_type_hint", "access_token")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&client, &refresh).await.0, StatusCode::OK, "the grant lives on");
}

#[tokio::test]
async fn revoking_a_refresh_token_kills_the_whole_grant() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    let (status, _) = post_as(&app, &client, "/oauth/revoke", &[("token", &refresh)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    let (status, body) = app.refresh(&client, &refresh).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
}

#[tokio::test]
async fn revocation_leaves_unknown_and_foreign_tokens_alone_and_fails_closed() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let other = app.confidential().await;
    let (access, _) = tokens_for(&app, &client, "alice").await;
    for token in ["hg_at_unknown", "hg_rt_unknown", "hg_key_unknown", "garbage", &access] {
        let (status, _) = post_as(&app, &other, "/oauth/revoke", &[("token", token)]).await;
        assert_eq!(status, StatusCode::OK, "{token}");
    }
    assert_eq!(app.me(&access).await, StatusCode::OK, "another client's token is left alone");
    let (status, body) = post_as(&app, &client, "/oauth/revoke", &[]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    let r = app.http().post(app.url("/oauth/revoke")).form(&[("token", access.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Storage down: never a 200.
    app.state.store.close().await;
    let (status, body) = post_as(&app, &client, "/oauth/revoke", &[("token", &access)]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("temporarily_unavailable")));
}

#[tokio::test]
async fn introspection_describes_live_tokens_and_only_says_inactive_otherwise() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let resource_server = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;

    let (status, body) = post_as(&app, &resource_server, "/oauth/introspect", &[("token", &access)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], "profile_read");
    assert_eq!(body["client_id"], client.id());
    assert_eq!(body["username"], "alice");
    assert!(body["sub"].as_str().unwrap().starts_with("usr-"));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["exp"].as_i64().unwrap() - body["iat"].as_i64().unwrap(), 7200);
    assert_eq!(body["resource_owner"]["type"], "Member");
    assert_eq!(body["iss"], app.base);

    let (_, body) = post_as(&app, &resource_server, "/oauth/introspect", &[("token", &refresh)]).await;
    assert_eq!((body["active"].as_bool(), body["token_type"].as_str()), (Some(true), Some("refresh_token")));

    for token in ["hg_at_unknown", "nonsense", ""] {
        let (status, body) = post_as(&app, &resource_server, "/oauth/introspect", &[("token", token)]).await;
        if token.is_empty() {
            assert_eq!(status, StatusCode::BAD_REQUEST, "a missing token is a bad request");
            continue;
        }
        assert_eq!((status, &body), (StatusCode::OK, &json!({ "active": false })), "{token}");
    }
    post_as(&app, &client, "/oauth/revoke", &[("token", &refresh)]).await;
    for token in [&access, &refresh] {
        let (_, body) = post_as(&app, &resource_server, "/oauth/introspect", &[("token", token)]).await;
        assert_eq!(body, json!({ "active": false }), "revoked → inactive and nothing more");
    }
    let (fresh, _) = tokens_for(&app, &client, "bob").await;
    app.clock.advance(7200);
    let (_, body) = post_as(&app, &resource_server, "/oauth/introspect", &[("token", &fresh)]).await;
    assert_eq!(body, json!({ "active": false }), "expired");

    // Public clients cannot introspect; neither can anonymous callers.
    let public = app.register(ClientSpec { public: true, ..ClientSpec::default() }).await;
    let r = app
        .http()
        .post(app.url("/oauth/introspect"))
        .form(&[("token", fresh.as_str()), ("client_id", public.id())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn authorization_server_metadata_says_exactly_what_is_supported() {
    let app = spawn_app().await;
    let r = app.http().get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["issuer"], app.base);
    assert_eq!(m["authorization_endpoint"], app.url("/oauth/authorize"));
    assert_eq!(m["token_endpoint"], app.url("/oauth/token"));
    assert_eq!(m["revocation_endpoint"], app.url("/oauth/revoke"));
    assert_eq!(m["introspection_endpoint"], app.url("/oauth/introspect"));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["response_types_supported"], json!(["code"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert!(m["scopes_supported"].as_array().unwrap().iter().any(|s| s == "profile_read"));
}
