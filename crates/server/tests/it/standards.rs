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
async fn revocation_leaves_unknown_tokens_alone_and_fails_closed() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let other = app.confidential().await;
    let (access, _) = tokens_for(&app, &client, "alice").await;
    for token in ["hg_at_unknown", "hg_rt_unknown", "hg_key_unknown", "garbage"] {
        let (status, _) = post_as(&app, &other, "/oauth/revoke", &[("token", token)]).await;
        assert_eq!(status, StatusCode::OK, "{token}");
    }
    let (status, body) = post_as(&app, &client, "/oauth/revoke", &[]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    let r = app.http().post(app.url("/oauth/revoke")).form(&[("token", access.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Storage down: never a 200.
    app.state.store.close().await;
    let (status, body) = post_as(&app, &client, "/oauth/revoke", &[("token", &access)]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("temporarily_unavailable")));
}

/// RFC 7009 §2.1: a token issued to another client is not revoked, and "the
/// request is refused and the client is informed of the error"; the attempt
/// is in the audit trail naming both clients. The caller's own tokens that
/// are already dead are still answered 200 (§2.2).
#[tokio::test]
async fn revoking_another_clients_token_is_refused_and_audited() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let other = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    for token in [&access, &refresh] {
        let (status, body) = post_as(&app, &other, "/oauth/revoke", &[("token", token)]).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unauthorized_client")), "{body}");
    }
    assert_eq!(app.me(&access).await, StatusCode::OK, "another client's token is left alone");
    assert_eq!(app.introspect(&client, &refresh).await["active"], true);
    let refused = app.events_of("access.refused").await;
    assert_eq!(refused.len(), 2);
    for e in &refused {
        assert_eq!(e.client_id.as_deref(), Some(other.id()));
        assert_eq!(e.outcome, "failure");
        assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
        let data: Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
        assert_eq!(data["owner_client_id"], client.id());
        assert_eq!(data["resource"], "token");
    }
    // The owner revokes it; revoking it again, or the other client trying
    // a now-dead token of its own, is 200.
    assert_eq!(post_as(&app, &client, "/oauth/revoke", &[("token", &refresh)]).await.0, StatusCode::OK);
    assert_eq!(post_as(&app, &client, "/oauth/revoke", &[("token", &refresh)]).await.0, StatusCode::OK);
    assert_eq!(post_as(&app, &client, "/oauth/revoke", &[("token", &access)]).await.0, StatusCode::OK);
}

/// RFC 7662 §2.1, §4: introspection is not a directory of other partners'
/// users. A client learns about its own tokens; a resource server about any
/// token; anyone else hears `{"active": false}` and nothing more.
#[tokio::test]
async fn introspection_tells_a_client_only_about_its_own_tokens() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let stranger = app.confidential().await;
    let resource_server = app.resource_server().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    for token in [&access, &refresh] {
        let (status, body) = post_as(&app, &stranger, "/oauth/introspect", &[("token", token)]).await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "active": false })));
        let mine = app.introspect(&client, token).await;
        assert_eq!((mine["active"].as_bool(), mine["client_id"].as_str()), (Some(true), Some(client.id())));
        let rs = app.introspect(&resource_server, token).await;
        assert_eq!(rs["active"], true);
        assert!(rs["sub"].as_str().unwrap().starts_with("usr-"));
    }
    let stranger_cc = client_credentials_token(&app, &stranger).await;
    assert_eq!(app.introspect(&client, &stranger_cc).await, json!({ "active": false }));
    assert_eq!(app.introspect(&stranger, &stranger_cc).await["active"], true);
}

async fn client_credentials_token(app: &TestApp, client: &TestClient) -> String {
    let basic = Some((client.id(), client.secret.as_deref().unwrap()));
    let (status, body) = app.token(basic, &[("grant_type", "client_credentials"), ("scope", "profile_read")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// Failed client authentication is written to the audit trail with the
/// client id and address, never the secret, at every endpoint that
/// authenticates clients.
#[tokio::test]
async fn failed_client_authentication_is_audited_without_the_secret() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let wrong = "hg_cs_definitely-not-the-secret";
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        let r = app
            .http()
            .post(app.url(path))
            .basic_auth(client.id(), Some(wrong))
            .form(&[("grant_type", "client_credentials"), ("token", "hg_at_x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["/api/v1/integrations", "/api/v1/users/usr-x"] {
        let r = app.http().get(app.url(path)).basic_auth(client.id(), Some(wrong)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = app
        .http()
        .post(app.url("/api/oauth/tokens"))
        .basic_auth(client.id(), Some(wrong))
        .form(&[("code", "hg_cc_x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // An id nobody registered is recorded as presented, not as a client.
    let (status, _) = app.token(Some(("app-nobody", wrong)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let failed = app.events_of("client.authentication_failed").await;
    assert_eq!(failed.len(), 7, "{failed:?}");
    let (unknown, known): (Vec<_>, Vec<_>) = failed.iter().partition(|e| e.client_id.is_none());
    assert_eq!(known.len(), 6);
    for e in &failed {
        assert_eq!(e.outcome, "failure");
        assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
        let data = e.data.as_deref().unwrap();
        assert!(!data.contains(wrong), "the presented secret is never recorded: {data}");
    }
    for e in known {
        assert_eq!(e.client_id.as_deref(), Some(client.id()));
    }
    let data: Value = serde_json::from_str(unknown[0].data.as_deref().unwrap()).unwrap();
    assert_eq!((data["presented_client_id"].as_str(), data["registered"].as_bool()), (Some("app-nobody"), Some(false)));
}

/// Behind a trusted proxy the recorded address is the rightmost
/// `X-Forwarded-For` entry that is not a trusted proxy: what the client wrote
/// in the header itself is ignored.
#[tokio::test]
async fn the_audited_address_cannot_be_forged_through_x_forwarded_for() {
    let app = spawn_app_with(|s| s.trust_forwarded_for = true).await;
    let client = app.confidential().await;
    let r = app
        .http()
        .post(app.url("/oauth/token"))
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
        .basic_auth(client.id(), Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let failed = app.events_of("client.authentication_failed").await;
    assert_eq!(failed[0].ip.as_deref(), Some("203.0.113.9"));
}

#[tokio::test]
async fn introspection_describes_live_tokens_and_only_says_inactive_otherwise() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let resource_server = app.resource_server().await;
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

/// The one script, the favicon (where browsers look too) and a CSP that runs
/// scripts from this server only, never inline.
#[tokio::test]
async fn pages_load_their_script_and_icon_from_this_server_only() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/static/healthgate.js", "text/javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let r = app.http().get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
    }
    let page = app.http().get(app.url("/login")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<script src=\"/static/healthgate.js\" defer></script>"));
    assert!(!html.contains("<script>"), "no inline script");
}

/// The demo app's callback says why an authorization was not granted, and
/// shows a token request that runs as it is once the secret is set.
#[tokio::test]
async fn the_demo_callback_shows_the_error_description_and_a_complete_request() {
    let app = spawn_app().await;
    let page = |query: &'static str| {
        let app = &app;
        async move { readable(app.http().get(app.url(&format!("/demo/callback?{query}"))).send().await.unwrap().text().await.unwrap()) }
    };
    let denied = page("error=access_denied&error_description=the+user+denied+the+request&state=demo").await;
    assert!(denied.contains("access_denied") && denied.contains("the user denied the request"), "{denied}");
    let granted = page("code=hg_ac_abc&state=demo").await;
    for part in ["curl -u \"app-demo:$CLIENT_SECRET\"", "code=hg_ac_abc", "grant_type=authorization_code", "/oauth/token"] {
        assert!(granted.contains(part), "{part}: {granted}");
    }
}
