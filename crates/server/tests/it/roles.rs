//! Who may authorize what: roles in organizations (Fullscript's role-based
//! access), organization-level apps (clinic-level authorization), and the
//! resource owner tokens speak for.

use healthgate_core::org::{Organization, OrganizationKind};
use healthgate_core::owner::AuthorizationLevel;
use healthgate_server::services::admin;
use reqwest::StatusCode;
use serde_json::Value;

use super::*;

async fn org(app: &TestApp, name: &str, kind: OrganizationKind) -> Organization {
    admin::create_organization(&app.state.store, app.clock.as_ref(), name, kind)
        .await
        .unwrap()
}

async fn member_of(app: &TestApp, org: &Organization, username: &str, role: &str) {
    admin::add_member(&app.state.store, &app.state.settings, app.clock.as_ref(), &org.id, username, role)
        .await
        .unwrap();
}

/// A signed-in person with `role` in a new clinic.
async fn person(app: &TestApp, username: &str, role: &str) -> (Browser, User, Organization) {
    let (browser, user) = app.signed_in(username).await;
    let clinic = org(app, &format!("{username}'s clinic"), OrganizationKind::Clinic).await;
    member_of(app, &clinic, username, role).await;
    (browser, user, clinic)
}

fn request<'a>(client: &'a TestClient, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client.id()),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "s1"),
    ]
}

/// Allows on the consent page, picking `organization` if given; returns the
/// token response.
async fn allow(app: &TestApp, b: &Browser, client: &TestClient, scope: &str, organization: Option<&str>) -> Value {
    let page = b.authorize(&request(client, scope)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let mut form = hidden_input_list(&page.text().await.unwrap());
    if let Some(o) = organization {
        form.push(("organization_id".into(), o.into()));
    }
    form.push(("decision".into(), "allow".into()));
    let r = b.post_form("/oauth/authorize", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let code = query_of(&location(&r))["code"].clone();
    let (status, body) = app.exchange(client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn wide_client(app: &TestApp, level: AuthorizationLevel) -> TestClient {
    app.register(ClientSpec {
        scope: "profile_read profile_write pay",
        authorization_level: level,
        ..ClientSpec::default()
    })
    .await
}

#[tokio::test]
async fn staff_get_what_they_asked_for_except_a_practitioner_only_scope() {
    let app = spawn_app().await;
    let client = wide_client(&app, AuthorizationLevel::User).await;
    let (staff, user, clinic) = person(&app, "sam", "staff").await;

    let page = staff.authorize(&request(&client, "profile_read pay")).await.text().await.unwrap();
    assert!(page.contains("does not allow"), "the page says what will not be granted");
    assert!(page.contains("Make payments on your behalf"));
    let body = allow(&app, &staff, &client, "profile_read pay", None).await;
    assert_eq!(body["scope"], "profile_read", "RFC 6749 §3.3: the token says what was granted");
    assert_eq!(body["resource_owner"]["id"], user.id.as_str());
    assert_eq!(body["resource_owner"]["type"], "Staff");
    assert_eq!(body["organization_id"], clinic.id.as_str());

    // /api/v1/me tells the same.
    let me: Value = app
        .http()
        .get(app.url("/api/v1/me"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["resource_owner"]["type"], "Staff");
    assert_eq!(me["organization"]["id"], clinic.id.as_str());
}

#[tokio::test]
async fn practitioners_grant_everything_requested() {
    let app = spawn_app().await;
    let client = wide_client(&app, AuthorizationLevel::User).await;
    let (doc, user, _) = person(&app, "dana", "practitioner").await;
    let body = allow(&app, &doc, &client, "profile_read pay", None).await;
    assert_eq!(body["scope"], "pay profile_read");
    assert_eq!(body["resource_owner"]["type"], "Practitioner");
    assert_eq!(body["resource_owner"]["id"], user.id.as_str());
}

#[tokio::test]
async fn people_without_an_organization_act_as_their_user_type() {
    let app = spawn_app().await;
    let client = wide_client(&app, AuthorizationLevel::User).await;
    let (browser, user) = app.signed_in("morgan").await;
    let body = allow(&app, &browser, &client, "profile_read pay", None).await;
    assert_eq!(body["scope"], "pay profile_read");
    assert_eq!(body["resource_owner"]["type"], "Member");
    assert_eq!(body["resource_owner"]["id"], user.id.as_str());
    assert!(body.get("organization_id").is_none());
}

#[tokio::test]
async fn a_role_that_allows_none_of_the_request_is_refused() {
    let app = spawn_app().await;
    let client = wide_client(&app, AuthorizationLevel::User).await;
    let (staff, _, _) = person(&app, "sam", "staff").await;
    let r = staff.authorize(&request(&client, "pay")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    let q = query_of(&authorize::back_link(&page));
    assert_eq!(q["error"], "access_denied");
}

#[tokio::test]
async fn a_person_in_several_organizations_chooses_which_one_the_app_gets() {
    let app = spawn_app().await;
    let client = wide_client(&app, AuthorizationLevel::User).await;
    let (b, _, first) = person(&app, "riley", "staff").await;
    let second = org(&app, "Second Practice", OrganizationKind::Practice).await;
    member_of(&app, &second, "riley", "practitioner").await;

    let page = b.authorize(&request(&client, "profile_read pay")).await.text().await.unwrap();
    assert!(page.contains("Which organization is this for?"));
    assert!(page.contains(&format!("value=\"{}\"", first.id)) && page.contains(&format!("value=\"{}\"", second.id)));

    // No choice, or an organization the person is not in: refused.
    let mut form = hidden_input_list(&page);
    form.push(("decision".into(), "allow".into()));
    assert_eq!(b.post_form("/oauth/authorize", &form).await.status(), StatusCode::BAD_REQUEST);
    let stranger = org(&app, "Not Mine", OrganizationKind::Clinic).await;
    let mut bad = form.clone();
    bad.push(("organization_id".into(), stranger.id.clone()));
    assert_eq!(b.post_form("/oauth/authorize", &bad).await.status(), StatusCode::BAD_REQUEST);

    // As practitioner of the second: everything, for that organization.
    let body = allow(&app, &b, &client, "profile_read pay", Some(&second.id)).await;
    assert_eq!(body["organization_id"], second.id.as_str());
    assert_eq!(body["resource_owner"]["type"], "Practitioner");
    assert_eq!(body["scope"], "pay profile_read");
    // As staff of the first: not `pay`.
    let body = allow(&app, &b, &client, "profile_read pay", Some(&first.id)).await;
    assert_eq!(body["organization_id"], first.id.as_str());
    assert_eq!(body["scope"], "profile_read");
}

#[tokio::test]
async fn organization_level_apps_are_authorized_by_an_admin_for_the_organization() {
    let app = spawn_app().await;
    let client = wide_client(&app, AuthorizationLevel::Organization).await;
    let (staff, _, _) = person(&app, "sam", "staff").await;
    let r = staff.authorize(&request(&client, "profile_read")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "only an admin may authorize");
    let page = r.text().await.unwrap();
    assert!(page.contains("only an administrator"));
    assert_eq!(query_of(&authorize::back_link(&page))["error"], "access_denied");

    let (admin_browser, _, clinic) = person(&app, "ada", "admin").await;
    let body = allow(&app, &admin_browser, &client, "profile_read pay", None).await;
    assert_eq!(body["resource_owner"]["id"], clinic.id.as_str());
    assert_eq!(body["resource_owner"]["type"], "Clinic");
    assert_eq!(body["organization_id"], clinic.id.as_str());
    assert_eq!(body["scope"], "pay profile_read");
    let me: Value = app
        .http()
        .get(app.url("/api/v1/me"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["organization"]["name"], "ada's clinic");
    assert!(me.get("username").is_none(), "the grant speaks for the clinic, not for ada: {me}");
}

#[tokio::test]
async fn an_organization_grant_outlives_the_admin_who_made_it_and_says_so() {
    let app = spawn_app().await;
    let client = wide_client(&app, AuthorizationLevel::Organization).await;
    let (admin_browser, ada, clinic) = person(&app, "ada", "admin").await;
    let body = allow(&app, &admin_browser, &client, "profile_read", None).await;
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    assert!(app.state.store.remove_membership(&clinic.id, &ada.id, app.clock.now()).await.unwrap());
    assert_eq!(app.me(&access).await, StatusCode::OK, "still valid for the clinic");
    let (status, refreshed) = app.refresh(&client, &refresh).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["resource_owner"]["id"], clinic.id.as_str());
    let events = app.state.store.events(None, 100).await.unwrap();
    let used = events.iter().find(|e| e.kind == "token.refreshed").expect("refresh audited");
    let data: Value = serde_json::from_str(used.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["granted_by"], ada.id.as_str());
    assert_eq!(data["granted_by_still_admin"], false);
    assert_eq!(used.organization_id.as_deref(), Some(clinic.id.as_str()));
}
