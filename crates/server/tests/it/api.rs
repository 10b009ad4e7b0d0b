//! The resource API: `GET /api/v1/me` behind bearer tokens (RFC 6750).

use reqwest::StatusCode;
use serde_json::Value;

use super::*;

#[tokio::test]
async fn me_returns_the_user_for_a_profile_read_token() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, _) = tokens_for(&app, &client, "alice").await;
    let r = app
        .http()
        .get(app.url("/api/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["type"], "member");
    assert!(body["id"].as_str().unwrap().starts_with("usr-"));
}

#[tokio::test]
async fn bad_tokens_are_401_invalid_token() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    let cases: Vec<Option<String>> = vec![
        None,
        Some("Bearer hg_at_unknown".into()),
        Some(format!("Bearer {refresh}")),
        Some(format!("Basic {access}")),
        Some("Bearer".into()),
    ];
    for header in cases {
        let mut req = app.http().get(app.url("/api/v1/me"));
        if let Some(h) = &header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn wrong_scope_is_403_insufficient_scope() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app
        .code(&browser, &client, &[("scope", "profile_write")])
        .await;
    let (_, body) = app.exchange(&client, &code, &[]).await;
    let r = app
        .http()
        .get(app.url("/api/v1/me"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"], "insufficient_scope");
}

#[tokio::test]
async fn locked_account_tokens_stop_working() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, user) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let (_, body) = app.exchange(&client, &code, &[]).await;
    app.state
        .store
        .lock_user(&user.id, app.clock.now())
        .await
        .unwrap();
    assert_eq!(
        app.me(body["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&client, body["refresh_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (r.status(), r.text().await.unwrap()),
        (StatusCode::OK, "ok".to_owned())
    );
    let r = app.http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.state.store.close().await;
    let r = app.http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn storage_failure_is_never_success() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    app.state.store.close().await;
    let basic = Some((client.id(), client.secret.as_deref().unwrap()));
    let (s, b) = app
        .token(basic, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("temporarily_unavailable")
        )
    );
    let r = app.http().get(app.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unknown_paths_are_a_readable_404() {
    let app = spawn_app().await;
    let r = app.http().get(app.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("Page not found"));
}

#[tokio::test]
async fn cleanup_pass_removes_expired_rows_only() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    assert_eq!(healthgate_server::jobs::cleanup::run_once(&app.state).await.unwrap(), 0);
    app.clock.advance(7200 + 86_401);
    // The session, the code and the access token are past their time.
    let removed = healthgate_server::jobs::cleanup::run_once(&app.state).await.unwrap();
    assert!(removed >= 3, "{removed}");
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    // The non-expiring refresh token is kept and still works.
    assert_eq!(app.refresh(&client, &refresh).await.0, StatusCode::OK);
}
