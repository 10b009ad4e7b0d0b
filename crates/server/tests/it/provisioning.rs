//! Partner-provisioned accounts (HealthTap's "You manage users' identity"):
//! `POST /api/v1/users` and what a partner may do with the accounts.

use healthgate_core::scope::ScopeSet;
use healthgate_core::user::UserType;
use healthgate_server::services::admin::{self, ClientChanges};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;

async fn call(
    app: &TestApp,
    partner: &TestClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .http()
        .request(method, app.url(path))
        .basic_auth(partner.id(), partner.secret.as_deref());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn provision(app: &TestApp, partner: &TestClient, body: Value) -> (StatusCode, Value) {
    call(app, partner, Method::POST, "/api/v1/users", Some(body)).await
}

#[tokio::test]
async fn a_partner_provisions_a_user_with_basic_auth_and_gets_tokens() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    let (status, body) = provision(
        &app,
        &partner,
        json!({ "username": "YOUR_INTERNAL_ID", "password": "RANDOM_PASSWORD_FOR_YOUR_USER" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for field in [
        "guid",
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "created_at",
    ] {
        assert!(!body[field].is_null(), "{field} missing: {body}");
    }
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scope"], "profile_read profile_write");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await, StatusCode::OK);
    let (status, refreshed) = app
        .refresh(&partner, body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");

    let guid = body["guid"].as_str().unwrap();
    let (status, user) = call(
        &app,
        &partner,
        Method::GET,
        &format!("/api/v1/users/{guid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["username"], "YOUR_INTERNAL_ID");
    assert_eq!(user["provisioned"], true);
}

#[tokio::test]
async fn provisioning_scopes_are_configurable_and_forms_work_too() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    admin::update_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        partner.id(),
        ClientChanges {
            provisioning_scope: Some(Some("profile_read".into())),
            ..ClientChanges::default()
        }, Actor::system(),
    )
    .await
    .unwrap();
    let r = app
        .http()
        .post(app.url("/api/v1/users"))
        .basic_auth(partner.id(), partner.secret.as_deref())
        .form(&[("username", "u-1"), ("email", "u1@example.org")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "profile_read");
}

/// HealthTap: `[profile] provisioning_scope` gives every app's provisioned
/// accounts its scopes (here `create_content`, which the app was not even
/// registered for) with no step per app; an app's own setting still wins,
/// and tokens minted later for the account carry the same scopes.
#[tokio::test]
async fn the_profile_provisioning_scope_is_the_default_and_an_apps_own_wins() {
    let app = spawn_app_with(|s| s.profile.provisioning_scope = ScopeSet::parse("create_content").ok()).await;
    let partner = app.confidential().await;
    let (status, body) = provision(&app, &partner, json!({ "username": "ht-1" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["scope"], "create_content");
    let guid = body["guid"].as_str().unwrap();
    let (status, again) = call(
        &app,
        &partner,
        Method::POST,
        &format!("/api/v1/users/{guid}/tokens"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["scope"], "create_content");

    admin::update_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        partner.id(),
        ClientChanges {
            provisioning_scope: Some(Some("profile_read".into())),
            ..ClientChanges::default()
        }, Actor::system(),
    )
    .await
    .unwrap();
    let (_, body) = provision(&app, &partner, json!({ "username": "ht-2" })).await;
    assert_eq!(body["scope"], "profile_read");
}

#[tokio::test]
async fn usernames_are_unique_per_partner() {
    let app = spawn_app().await;
    let a = app.confidential().await;
    let b = app.confidential().await;
    assert_eq!(
        provision(&app, &a, json!({ "username": "joe" })).await.0,
        StatusCode::CREATED
    );
    let (status, body) = provision(&app, &a, json!({ "username": "joe" })).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "conflict");
    assert!(body["error_description"].is_string());
    assert_eq!(
        provision(&app, &b, json!({ "username": "joe" })).await.0,
        StatusCode::CREATED,
        "another partner's joe"
    );
    // A platform account named joe is another person again.
    app.user("joe", UserType::Member).await;
}

#[tokio::test]
async fn bad_requests_are_refused_clearly() {
    let app = spawn_app().await;
    let partner = app
        .register(ClientSpec {
            user_types: vec![UserType::Member],
            ..ClientSpec::default()
        })
        .await;
    let cases = [
        json!({}),
        json!({ "username": "" }),
        json!({ "username": "a/b" }),
        json!({ "username": "x", "password": "short" }),
        json!({ "username": "x", "user_type": "robot" }),
        json!({ "username": "x", "user_type": "expert" }),
        json!({ "username": "x", "email": "not-an-email" }),
    ];
    for body in cases {
        let (status, answer) = provision(&app, &partner, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["error"], "invalid_request");
    }
    let r = app
        .http()
        .post(app.url("/api/v1/users"))
        .json(&json!({ "username": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let public = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let r = app
        .http()
        .post(app.url("/api/v1/users"))
        .basic_auth(public.id(), Some(""))
        .json(&json!({ "username": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_partner_never_touches_users_it_did_not_create() {
    let app = spawn_app().await;
    let a = app.confidential().await;
    let b = app.confidential().await;
    let (_, created) = provision(
        &app,
        &a,
        json!({ "username": "joe", "password": "correct horse" }),
    )
    .await;
    let guid = created["guid"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/users/{guid}");
    // Partner B: nothing.
    assert_eq!(
        call(&app, &b, Method::GET, &path, None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(
            &app,
            &b,
            Method::PATCH,
            &path,
            Some(json!({ "email": "x@example.org" }))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, &b, Method::POST, &format!("{path}/tokens"), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, &b, Method::DELETE, &path, None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, &b, Method::GET, "/api/v1/users/usr-unknown", None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // Each refusal on A's user is audited, naming both partners; the
    // unknown id is refused the same but is no one's to name.
    let refused = app.events_of("access.refused").await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    for e in &refused {
        assert_eq!(e.client_id.as_deref(), Some(b.id()));
        assert_eq!(e.subject.as_deref(), Some(guid.as_str()));
        let data: Value = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
        assert_eq!((data["resource"].as_str(), data["owner_client_id"].as_str()), (Some("user"), Some(a.id())));
    }

    // A platform user who authorized B: B may read, not change or mint.
    let (browser, alice) = app.signed_in("alice").await;
    app.code(&browser, &b, &[]).await;
    let alice_path = format!("/api/v1/users/{}", alice.id);
    let (status, seen) = call(&app, &b, Method::GET, &alice_path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["provisioned"], false);
    assert_eq!(
        call(
            &app,
            &b,
            Method::POST,
            &format!("{alice_path}/tokens"),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, &b, Method::DELETE, &alice_path, None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, &a, Method::GET, &alice_path, None).await.0,
        StatusCode::FORBIDDEN,
        "never authorized A"
    );

    // Partner A mints fresh tokens and changes its own user.
    let (status, fresh) = call(&app, &a, Method::POST, &format!("{path}/tokens"), None).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_eq!(
        app.me(fresh["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    let (status, changed) = call(
        &app,
        &a,
        Method::PATCH,
        &path,
        Some(json!({ "email": "joe@example.org" })),
    )
    .await;
    assert_eq!(
        (status, changed["email"].as_str()),
        (StatusCode::OK, Some("joe@example.org"))
    );
}

#[tokio::test]
async fn deleting_a_provisioned_user_revokes_their_tokens() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    let (_, created) = provision(&app, &partner, json!({ "username": "joe" })).await;
    let guid = created["guid"].as_str().unwrap();
    let access = created["access_token"].as_str().unwrap();
    let refresh = created["refresh_token"].as_str().unwrap();
    let (status, _) = call(
        &app,
        &partner,
        Method::DELETE,
        &format!("/api/v1/users/{guid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.me(access).await, StatusCode::UNAUTHORIZED);
    let (status, body) = app.refresh(&partner, refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        app.state
            .store
            .events(None, 50)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "user.deleted")
    );
}

#[tokio::test]
async fn only_accounts_with_a_password_can_sign_in() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    provision(&app, &partner, json!({ "username": "nopass" })).await;
    provision(
        &app,
        &partner,
        json!({ "username": "withpass", "password": "correct horse" }),
    )
    .await;
    let r = app
        .browser()
        .login(&format!("{}/nopass", partner.id()), "")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .browser()
        .login(&format!("{}/withpass", partner.id()), "correct horse")
        .await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "signs in as CLIENT_ID/USERNAME"
    );
}

#[tokio::test]
async fn a_locked_account_gets_no_new_tokens() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    let (_, created) = provision(&app, &partner, json!({ "username": "joe" })).await;
    let guid = created["guid"].as_str().unwrap();
    app.state
        .store
        .lock_user(guid, app.clock.now())
        .await
        .unwrap();
    let (status, body) = app
        .refresh(&partner, created["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        app.me(created["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = call(
        &app,
        &partner,
        Method::POST,
        &format!("/api/v1/users/{guid}/tokens"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_password_change_ends_the_persons_sessions() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    let (_, created) = provision(&app, &partner, json!({ "username": "joe", "password": "correct horse" })).await;
    let guid = created["guid"].as_str().unwrap();
    let browser = app.browser();
    browser.login(&format!("{}/joe", partner.id()), "correct horse").await;
    assert!(browser.get("/").await.text().await.unwrap().contains("Signed in as"));
    let (status, _) = call(&app, &partner, Method::PATCH, &format!("/api/v1/users/{guid}"), Some(json!({ "password": "another horse" }))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!browser.get("/").await.text().await.unwrap().contains("Signed in as"), "the session ended");
    let r = app.browser().login(&format!("{}/joe", partner.id()), "another horse").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_common_password_is_a_clear_400_on_create_and_on_change() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    let description =
        "password is one of the most common passwords and easy to guess, so choose another one";
    // Long enough, so only the list refuses them; compared in any case.
    for common in ["password123", "Qwertyuiop", "ILOVEYOU1"] {
        let (status, answer) = provision(
            &app,
            &partner,
            json!({ "username": "joe", "password": common }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{common}: {answer}");
        assert_eq!(answer["error"], "invalid_request");
        assert_eq!(answer["error_description"], description);
    }
    let (status, created) = provision(
        &app,
        &partner,
        json!({ "username": "joe", "password": "correct horse" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["guid"].as_str().unwrap();
    let path = format!("/api/v1/users/{guid}");
    let (status, answer) = call(
        &app,
        &partner,
        Method::PATCH,
        &path,
        Some(json!({ "password": "Trustno1" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "invalid_request");
    assert_eq!(answer["error_description"], description);
    let joe = format!("{}/joe", partner.id());
    assert_eq!(
        app.browser().login(&joe, "correct horse").await.status(),
        StatusCode::SEE_OTHER,
        "the password is unchanged"
    );
    // Any characters, no composition rules.
    let phrase = "  mi contraseña tiene espacios y ñ  ";
    let (status, answer) = call(
        &app,
        &partner,
        Method::PATCH,
        &path,
        Some(json!({ "password": phrase })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        app.browser().login(&joe, phrase).await.status(),
        StatusCode::SEE_OTHER
    );
}
