//! Practice integrations (Hint's InstantOn): the directory, connect codes,
//! the partner's exchange, practice API keys and disconnection.

use healthgate_core::integration::connect_url;
use healthgate_core::org::{Organization, OrganizationKind};
use healthgate_core::user::UserType;
use healthgate_server::services::admin::{self, ClientChanges};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

const CONNECT: &str = "https://partner.example/hint/connect?code=";

/// A practice with an admin (signed in) and a staff member, and a published
/// partner app.
struct Practice {
    org: Organization,
    admin: Browser,
    partner: TestClient,
}

async fn practice(app: &TestApp, name: &str, admin_name: &str) -> Practice {
    let org = admin::create_organization(
        &app.state.store,
        app.clock.as_ref(),
        name,
        OrganizationKind::Practice,
    )
    .await
    .unwrap();
    app.user(admin_name, UserType::Member).await;
    admin::add_member(&app.state.store, &app.state.settings, app.clock.as_ref(),
        &org.id,
        admin_name,
        "admin",
    )
    .await
    .unwrap();
    let admin = app.browser();
    admin.login(admin_name, PASSWORD).await;
    let partner = app.confidential().await;
    publish(app, &partner, CONNECT).await;
    Practice {
        org,
        admin,
        partner,
    }
}

async fn publish(app: &TestApp, partner: &TestClient, connect: &str) {
    admin::update_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        partner.id(),
        ClientChanges {
            description: Some(Some("Scheduling for your practice".into())),
            connect_redirect_url: Some(Some(connect.into())),
            published: Some(true),
            ..ClientChanges::default()
        }, Actor::system(),
    )
    .await
    .unwrap();
    // An operator approves the request (or its return after a change).
    admin::approve_listing(&app.state.store, app.clock.as_ref(), partner.id(), None, Actor::system())
        .await
        .unwrap();
}

async fn directory(b: &Browser, org: &str) -> String {
    let r = b.get(&format!("/integrations?org={org}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

/// Clicks Connect (or "Get a code") for `client_id` and returns the response.
async fn click(b: &Browser, org: &str, client_id: &str, mode: &str) -> reqwest::Response {
    directory(b, org).await;
    // The session's CSRF token; the directory has no POST form when every
    // app is already connected (Disconnect asks first, on a page of its own).
    let profile = b.get("/account/profile").await.text().await.unwrap();
    let csrf = hidden_inputs(&profile)["csrf_token"].clone();
    let form = vec![
        ("csrf_token".to_owned(), csrf),
        ("org".to_owned(), org.to_owned()),
        ("client_id".to_owned(), client_id.to_owned()),
        ("mode".to_owned(), mode.to_owned()),
    ];
    b.post_form("/integrations/connect", &form).await
}

/// Connect: the code the partner receives, appended to its connect URL.
async fn connect_code(p: &Practice) -> String {
    let r = click(&p.admin, &p.org.id, p.partner.id(), "redirect").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = location(&r);
    let code = loc
        .strip_prefix(CONNECT)
        .unwrap_or_else(|| panic!("{loc}"))
        .to_owned();
    assert!(code.starts_with("hg_cc_"));
    code
}

/// The partner's exchange at `/api/oauth/tokens` with HTTP Basic.
async fn exchange_connect(app: &TestApp, partner: &TestClient, body: Value) -> (StatusCode, Value) {
    let r = app
        .http()
        .post(app.url("/api/oauth/tokens"))
        .basic_auth(partner.id(), partner.secret.as_deref())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn practice_api(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    let r = app
        .http()
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn partner_call(
    app: &TestApp,
    partner: &TestClient,
    method: reqwest::Method,
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

#[tokio::test]
async fn instant_on_connect_then_exchange_then_practice_api() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    app.user("nurse", UserType::Member).await;
    admin::add_member(&app.state.store, &app.state.settings, app.clock.as_ref(),
        &p.org.id,
        "nurse",
        "staff",
    )
    .await
    .unwrap();

    let page = directory(&p.admin, &p.org.id).await;
    assert!(page.contains("Partner App") && page.contains("Scheduling for your practice"));
    assert!(page.contains("Not connected"));

    let code = connect_code(&p).await;
    assert!(directory(&p.admin, &p.org.id).await.contains("Pending"));

    let (status, body) = exchange_connect(&app, &p.partner, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("int-"));
    assert_eq!(body["status"], "connected");
    // The admin's account page says the same: the app is connected to the
    // practice, with the way to manage it.
    let account = p.admin.get("/account/apps").await.text().await.unwrap();
    assert!(account.contains("<strong>Partner App</strong>: connected since"), "{account}");
    assert!(account.contains(&format!("href=\"/integrations?org={}\"", p.org.id)));
    assert_eq!(body["token_type"], "bearer");
    let key = body["access_token"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("hg_key_") && key.len() >= 6 + 43,
        "a 256-bit prefixed key"
    );
    assert_eq!(
        body["practice"],
        json!({ "id": p.org.id, "name": "Joe's Practice" })
    );
    assert_eq!(body["activated_by"]["name"], "joe");
    assert_eq!(body["activated_by"]["email"], "joe@example.org");
    assert_eq!(body["created_at"], app.clock.now());

    let (status, practice) = practice_api(&app, &key, "/api/v1/practice").await;
    assert_eq!(status, StatusCode::OK, "{practice}");
    assert_eq!(practice["id"], p.org.id.as_str());
    let roles: Vec<(String, String)> = practice["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            ("joe".into(), "admin".into()),
            ("nurse".into(), "staff".into())
        ]
    );
    assert!(directory(&p.admin, &p.org.id).await.contains("Connected"));
}

#[tokio::test]
async fn the_code_replaces_a_placeholder_in_the_connect_url() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    publish(
        &app,
        &p.partner,
        "https://partner.example/connect/{code}/start",
    )
    .await;
    let r = click(&p.admin, &p.org.id, p.partner.id(), "redirect").await;
    let loc = location(&r);
    let code = loc
        .strip_prefix("https://partner.example/connect/")
        .and_then(|rest| rest.strip_suffix("/start"))
        .unwrap_or_else(|| panic!("{loc}"));
    assert_eq!(
        loc,
        connect_url("https://partner.example/connect/{code}/start", code)
    );
    assert_eq!(
        exchange_connect(&app, &p.partner, json!({ "code": code }))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn manual_codes_are_shown_once_and_last_an_hour() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    let r = click(&p.admin, &p.org.id, p.partner.id(), "manual").await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("1 hour"), "{page}");
    let code = page
        .split("<pre id=\"connect-code\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap()
        .to_owned();
    assert!(code.starts_with("hg_cc_"));
    // Hint's partner-level key: Authorization: Bearer <client_secret>, form body.
    let r = app
        .http()
        .post(app.url("/api/oauth/tokens"))
        .bearer_auth(p.partner.secret.as_deref().unwrap())
        .form(&[
            ("code", code.as_str()),
            ("grant_type", "authorization_code"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");

    let r = click(&p.admin, &p.org.id, p.partner.id(), "manual").await;
    let page = r.text().await.unwrap();
    let late = page
        .split("<pre id=\"connect-code\">")
        .nth(1)
        .unwrap()
        .split("</pre>")
        .next()
        .unwrap()
        .to_owned();
    app.clock.advance(3600);
    let (status, body) = exchange_connect(&app, &p.partner, json!({ "code": late })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn connect_code_refusals() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    let other = app.confidential().await;
    let code = connect_code(&p).await;

    // Another partner: refused, and the code is left for its partner.
    let (status, body) = exchange_connect(&app, &other, json!({ "code": code })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // No partner credentials.
    let r = app
        .http()
        .post(app.url("/api/oauth/tokens"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = app
        .http()
        .post(app.url("/api/oauth/tokens"))
        .bearer_auth("hg_cs_not_a_secret")
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Unknown code, wrong grant type.
    let (status, body) =
        exchange_connect(&app, &p.partner, json!({ "code": "hg_cc_unknown" })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, body) = exchange_connect(
        &app,
        &p.partner,
        json!({ "code": code, "grant_type": "password" }),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );

    // The rightful partner; then a replay, which also revokes the key.
    let (status, body) = exchange_connect(&app, &p.partner, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        practice_api(&app, &key, "/api/v1/practice").await.0,
        StatusCode::OK
    );
    let (status, body) = exchange_connect(&app, &p.partner, json!({ "code": code })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        practice_api(&app, &key, "/api/v1/practice").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Expired: ten minutes by default.
    let code = connect_code(&p).await;
    app.clock.advance(600);
    let (status, body) = exchange_connect(&app, &p.partner, json!({ "code": code })).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn activate_false_leaves_the_integration_pending_until_the_partner_activates() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    let code = connect_code(&p).await;
    let (status, body) =
        exchange_connect(&app, &p.partner, json!({ "code": code, "activate": false })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["activated_by"], Value::Null);
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(directory(&p.admin, &p.org.id).await.contains("Pending"));

    let other = app.confidential().await;
    let (status, _) = partner_call(
        &app,
        &other,
        reqwest::Method::POST,
        &format!("/api/v1/integrations/{id}/activate"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another partner's integration is invisible"
    );
    let (status, body) = partner_call(
        &app,
        &p.partner,
        reqwest::Method::POST,
        &format!("/api/v1/integrations/{id}/activate"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("connected")),
        "{body}"
    );
    assert_eq!(body["activated_by"]["name"], "joe");
    assert!(directory(&p.admin, &p.org.id).await.contains("Connected"));
}

#[tokio::test]
async fn partners_manage_their_keys() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    let code = connect_code(&p).await;
    let (_, body) = exchange_connect(&app, &p.partner, json!({ "code": code })).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let first = body["access_token"].as_str().unwrap().to_owned();
    let keys_path = format!("/api/v1/integrations/{id}/api_keys");

    app.clock.advance(5);
    assert_eq!(
        practice_api(&app, &first, "/api/v1/practice").await.0,
        StatusCode::OK
    );
    let (status, list) =
        partner_call(&app, &p.partner, reqwest::Method::GET, &keys_path, None).await;
    assert_eq!(status, StatusCode::OK);
    let keys = list["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["last_used_at"], app.clock.now());
    assert!(keys[0]["created_at"].is_i64() && keys[0]["description"].is_string());
    assert!(
        !list.to_string().contains(&first),
        "a listing never shows a key"
    );

    let (status, created) = partner_call(
        &app,
        &p.partner,
        reqwest::Method::POST,
        &keys_path,
        Some(json!({ "description": "reporting job" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["description"], "reporting job");
    let second = created["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        practice_api(&app, &second, "/api/v1/practice").await.0,
        StatusCode::OK
    );

    let key_id = created["id"].as_str().unwrap();
    let (status, _) = partner_call(
        &app,
        &p.partner,
        reqwest::Method::DELETE,
        &format!("{keys_path}/{key_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = practice_api(&app, &second, "/api/v1/practice").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    assert_eq!(
        practice_api(&app, &first, "/api/v1/practice").await.0,
        StatusCode::OK,
        "other keys live on"
    );
    let (status, _) = partner_call(
        &app,
        &p.partner,
        reqwest::Method::DELETE,
        &format!("{keys_path}/{key_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other = app.confidential().await;
    assert_eq!(
        partner_call(&app, &other, reqwest::Method::GET, &keys_path, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Another partner's integration is a 404, like an unknown one, and the
    // attempt is audited naming both partners.
    let refused = app.events_of("access.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].client_id.as_deref(), Some(other.id()));
    let data: serde_json::Value = serde_json::from_str(refused[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(
        (data["resource"].as_str(), data["owner_client_id"].as_str()),
        (Some("integration"), Some(p.partner.id()))
    );
}

#[tokio::test]
async fn a_key_of_practice_a_cannot_read_practice_b() {
    let app = spawn_app().await;
    let a = practice(&app, "Practice A", "alice").await;
    let b = admin::create_organization(
        &app.state.store,
        app.clock.as_ref(),
        "Practice B",
        OrganizationKind::Practice,
    )
    .await
    .unwrap();
    let code = connect_code(&a).await;
    let (_, body) = exchange_connect(&app, &a.partner, json!({ "code": code })).await;
    let key = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        practice_api(&app, &key, &format!("/api/v1/practices/{}", a.org.id))
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = practice_api(&app, &key, &format!("/api/v1/practices/{}", b.id)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        practice_api(&app, "hg_key_unknown", "/api/v1/practice")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn disconnecting_kills_every_key_and_reconnecting_issues_a_fresh_one() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    let code = connect_code(&p).await;
    let (_, body) = exchange_connect(&app, &p.partner, json!({ "code": code })).await;
    let old = body["access_token"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();

    // The admin clicks Disconnect in the directory: a page asks first.
    let page = directory(&p.admin, &p.org.id).await;
    assert!(page.contains("<form method=\"get\" action=\"/integrations/disconnect\">"));
    let confirm_url = format!("/integrations/disconnect?org={}&integration_id={id}", p.org.id);
    let r = p.admin.get(&confirm_url).await;
    assert_eq!(r.status(), StatusCode::OK);
    let confirm = r.text().await.unwrap();
    assert_eq!(confirm.matches("<h1").count(), 1);
    assert!(confirm.contains("<h1 id=\"disconnect-heading\">Disconnect "), "{confirm}");
    assert!(confirm.contains(&format!("href=\"/integrations?org={}\">Cancel</a>", p.org.id)));
    // Opening it changed nothing.
    assert_eq!(practice_api(&app, &old, "/api/v1/practice").await.0, StatusCode::OK);
    let form = hidden_input_list(&confirm);
    let r = p.admin.post_form("/integrations/disconnect", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(back.contains("done=disconnected"), "{back}");
    let shown = p.admin.get(&back).await.text().await.unwrap();
    assert!(shown.contains("is disconnected from Joe"), "{shown}");
    // Another practice's integration has no confirmation page.
    let r = p
        .admin
        .get(&format!("/integrations/disconnect?org={}&integration_id=int-nothing", p.org.id))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        practice_api(&app, &old, "/api/v1/practice").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, shown) = partner_call(
        &app,
        &p.partner,
        reqwest::Method::GET,
        &format!("/api/v1/integrations/{id}"),
        None,
    )
    .await;
    assert_eq!(shown["status"], "disconnected");
    assert!(
        directory(&p.admin, &p.org.id)
            .await
            .contains("Not connected")
    );
    let (status, _) = partner_call(
        &app,
        &p.partner,
        reqwest::Method::POST,
        &format!("/api/v1/integrations/{id}/api_keys"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Reconnecting issues a fresh key; the old one stays dead.
    let code = connect_code(&p).await;
    let (_, body) = exchange_connect(&app, &p.partner, json!({ "code": code })).await;
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(body["id"].as_str().unwrap(), id, "a new integration");
    assert_eq!(
        practice_api(&app, &fresh, "/api/v1/practice").await.0,
        StatusCode::OK
    );
    assert_eq!(
        practice_api(&app, &old, "/api/v1/practice").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn partners_can_deactivate() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    let code = connect_code(&p).await;
    let (_, body) = exchange_connect(&app, &p.partner, json!({ "code": code })).await;
    let key = body["access_token"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = partner_call(
        &app,
        &p.partner,
        reqwest::Method::POST,
        &format!("/api/v1/integrations/{id}/deactivate"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("disconnected"))
    );
    assert_eq!(
        practice_api(&app, &key, "/api/v1/practice").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, list) = partner_call(
        &app,
        &p.partner,
        reqwest::Method::GET,
        "/api/v1/integrations",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["integrations"][0]["status"], "disconnected");
}

#[tokio::test]
async fn the_directory_is_for_practice_admins_only() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    let other = admin::create_organization(
        &app.state.store,
        app.clock.as_ref(),
        "Elsewhere",
        OrganizationKind::Clinic,
    )
    .await
    .unwrap();
    assert!(other.id.starts_with("cln-"));

    // Signed out: to the login page, then back.
    let r = app.browser().get("/integrations").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login?return_to=%2Fintegrations"));
    // A staff member is refused.
    app.user("nurse", UserType::Member).await;
    admin::add_member(&app.state.store, &app.state.settings, app.clock.as_ref(),
        &p.org.id,
        "nurse",
        "staff",
    )
    .await
    .unwrap();
    let nurse = app.browser();
    nurse.login("nurse", PASSWORD).await;
    assert_eq!(
        nurse.get("/integrations").await.status(),
        StatusCode::FORBIDDEN
    );
    // The admin of one practice cannot act for another.
    assert_eq!(
        p.admin
            .get(&format!("/integrations?org={}", other.id))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let page = directory(&p.admin, &p.org.id).await;
    let csrf = hidden_inputs(&page)["csrf_token"].clone();
    let form = |org: &str, csrf: &str| {
        vec![
            ("csrf_token".to_owned(), csrf.to_owned()),
            ("org".to_owned(), org.to_owned()),
            ("client_id".to_owned(), p.partner.id().to_owned()),
        ]
    };
    assert_eq!(
        p.admin
            .post_form("/integrations/connect", &form(&other.id, &csrf))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // CSRF.
    assert_eq!(
        p.admin
            .post_form("/integrations/connect", &form(&p.org.id, "hg_csrf_wrong"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // An app that is not published cannot be connected.
    let hidden = app.confidential().await;
    let mut f = form(&p.org.id, &csrf);
    f[2].1 = hidden.id().to_owned();
    assert_eq!(
        p.admin
            .post_form("/integrations/connect", &f)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

/// Connect (and "Get a code to send") first opens a page that says in
/// plain words what the partner will be able to read and do for the
/// practice; only that page's POST issues a code (issue 13, item 6).
#[tokio::test]
async fn connect_says_first_what_the_partner_will_read_and_do_for_the_practice() {
    let app = spawn_app().await;
    let p = practice(&app, "Joe's Practice", "joe").await;
    let id = p.partner.id();
    // The directory's Connect is a link to the confirmation, not a POST.
    let page = directory(&p.admin, &p.org.id).await;
    let card = &page[page.find(&format!("id=\"app-{id}\"")).unwrap()..];
    assert!(card.contains("<form method=\"get\" action=\"/integrations/connect\">"), "{card}");

    let confirm = |mode: &str| {
        let path = format!("/integrations/connect?org={}&client_id={id}&mode={mode}", p.org.id);
        let admin = &p.admin;
        async move {
            let r = admin.get(&path).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            r.text().await.unwrap()
        }
    };
    // The page's words, without their markup.
    let words = |html: &str| {
        let mut out = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        unescape_html(&out)
    };
    let page = confirm("redirect").await;
    let said_there = words(&page);
    for said in [
        "Connect Partner App to Joe's Practice?",
        "Receive a practice API key for Joe's Practice",
        "read Joe's Practice's name and its members (each member's name, email address and role)",
        "Read your profile",
        "Update your profile",
        "Each person at Joe's Practice who uses it decides for themselves",
        "You go to partner.example with a one-time code",
        "works once, for 10 minutes",
        "Connect Partner App",
    ] {
        assert!(said_there.contains(said), "{said}: {said_there}");
    }
    assert!(page.contains(&format!("href=\"/integrations?org={}\">Cancel</a>", p.org.id)));
    let form = hidden_inputs(&page);
    assert_eq!((form["org"].as_str(), form["client_id"].as_str(), form["mode"].as_str()), (p.org.id.as_str(), id, "redirect"));
    // Looking issues nothing.
    assert!(app.state.store.integrations_of_client(id).await.unwrap().is_empty());
    assert!(app.events_of("integration.code_issued").await.is_empty());

    // A code to send by hand says so; an app an administrator authorizes
    // for the whole practice says that.
    admin::update_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        id,
        ClientChanges {
            authorization_level: Some(healthgate_core::owner::AuthorizationLevel::Organization),
            ..ClientChanges::default()
        },
        Actor::system(),
    )
    .await
    .unwrap();
    let page = words(&confirm("manual").await);
    for said in [
        "You get a one-time code to send to Partner App",
        "works once, for 1 hour",
        "An administrator of Joe's Practice may grant them for the whole practice",
        "Get a code for Partner App",
    ] {
        assert!(page.contains(said), "{said}: {page}");
    }

    // Only an administrator of the practice, only a listed app.
    let (stranger, _) = app.signed_in("stranger").await;
    let r = stranger.get(&format!("/integrations/connect?org={}&client_id={id}", p.org.id)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let other = app.confidential().await;
    let r = p.admin.get(&format!("/integrations/connect?org={}&client_id={}", p.org.id, other.id())).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The page's form issues the code.
    let page = confirm("redirect").await;
    let fields: Vec<(String, String)> = hidden_input_list(&page)
        .into_iter()
        .filter(|(k, _)| ["org", "client_id", "mode"].contains(&k.as_str()))
        .chain([("csrf_token".to_owned(), hidden_inputs(&page)["csrf_token"].clone())])
        .collect();
    let r = p.admin.post_form("/integrations/connect", &fields).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with(CONNECT), "{}", location(&r));
    assert_eq!(app.events_of("integration.code_issued").await.len(), 1);
}
