//! People manage their grants (`/account/apps`): the apps a person
//! authorized, revoking one (every token of it stops at once, the partner is
//! told, the next authorization asks again), and an organization admin's
//! organization-level grants.

use healthgate_core::org::{Organization, OrganizationKind};
use healthgate_core::owner::AuthorizationLevel;
use healthgate_server::services::admin;
use reqwest::StatusCode;

use super::*;

/// Authorizes `client` for the signed-in `browser` and returns
/// `(access_token, refresh_token)`.
async fn authorized(app: &TestApp, browser: &Browser, client: &TestClient) -> (String, String) {
    let code = app.code(browser, client, &[]).await;
    let (status, body) = app.exchange(client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// The page as the browser sees it; it must be there.
async fn apps_page(browser: &Browser) -> String {
    let r = browser.get("/account/apps").await;
    assert_eq!(r.status(), StatusCode::OK);
    readable(r.text().await.unwrap())
}

/// The session's CSRF token, as every signed-in page carries it (the home
/// page's sign-out form; the apps page has no form when it lists nothing).
async fn csrf(browser: &Browser) -> String {
    let page = browser.get("/").await.text().await.unwrap();
    hidden_inputs(&page)["csrf_token"].clone()
}

/// Submits a revoke form the way the page does: the session's CSRF token
/// plus `fields`.
async fn post_revoke(browser: &Browser, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("csrf_token".to_owned(), csrf(browser).await)];
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    browser.post_form(path, &form).await
}

fn lists(page: &str, client: &TestClient) -> bool {
    page.contains(&format!("id=\"app-{}\"", client.id()))
}

async fn events_of(app: &TestApp, kind: &str) -> Vec<healthgate_store::StoredEvent> {
    app.state
        .store
        .events(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

async fn clinic_with(app: &TestApp, name: &str, members: &[(&str, &str)]) -> Organization {
    let org = admin::create_organization(
        &app.state.store,
        app.clock.as_ref(),
        name,
        OrganizationKind::Clinic,
    )
    .await
    .unwrap();
    for (username, role) in members {
        admin::add_member(
            &app.state.store,
            &app.state.settings,
            app.clock.as_ref(),
            &org.id,
            username,
            role,
        )
        .await
        .unwrap();
    }
    org
}

#[tokio::test]
async fn the_page_lists_the_apps_a_person_authorized_with_scopes_and_dates_and_no_one_elses() {
    let app = spawn_app().await;
    let mine = app.confidential().await;
    let theirs = app.confidential().await;
    let (alice, _) = app.signed_in("alice").await;
    let (bob, _) = app.signed_in("bob").await;
    let granted_at = healthgate_server::http::pages::format_utc(app.clock.now());
    authorized(&app, &alice, &mine).await;
    authorized(&app, &bob, &theirs).await;

    let page = apps_page(&alice).await;
    assert!(lists(&page, &mine), "{page}");
    assert!(!lists(&page, &theirs), "bob's app is not on alice's page");
    assert!(page.contains("Partner App"));
    assert!(page.contains(&format!("src=\"/apps/{}/photo?v=", mine.id())));
    assert!(page.contains("Read your profile"), "scopes in plain words");
    assert!(page.contains("<code>profile_read</code>"));
    assert!(
        !page.contains("Update your profile"),
        "only what was granted"
    );
    assert!(page.contains(&granted_at), "readable dates: {granted_at}");
    assert!(page.contains("Last used"));

    let (nobody, _) = app.signed_in("carol").await;
    let empty = apps_page(&nobody).await;
    assert!(empty.contains("You have not connected any apps."));
    assert!(!lists(&empty, &mine) && !lists(&empty, &theirs));
}

#[tokio::test]
async fn revoking_an_app_ends_its_tokens_at_once_and_the_next_authorization_asks_again() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (alice, user) = app.signed_in("alice").await;
    let (access, refresh) = authorized(&app, &alice, &client).await;
    assert_eq!(app.me(&access).await, StatusCode::OK);
    // Remembered consent: a second authorization goes straight back.
    let params = [
        ("response_type", "code"),
        ("client_id", client.id()),
        ("redirect_uri", REDIRECT),
        ("scope", "profile_read"),
        ("state", "s2"),
    ];
    assert_eq!(
        alice.authorize(&params).await.status(),
        StatusCode::SEE_OTHER
    );

    let r = post_revoke(
        &alice,
        "/account/apps/revoke",
        &[("client_id", client.id())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert!(back.starts_with("/account/apps?"), "{back}");

    assert_eq!(
        app.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "the access token stops at once"
    );
    let (status, body) = app.refresh(&client, &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");

    let page = alice.get(&back).await.text().await.unwrap();
    assert!(!lists(&page, &client), "the app is gone from the list");
    assert!(page.contains("no longer has access"), "a notice says so");

    let revoked = events_of(&app, "consent.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].actor_user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(revoked[0].subject.as_deref(), Some(user.id.as_str()));
    assert_eq!(revoked[0].client_id.as_deref(), Some(client.id()));
    assert!(revoked[0].ip.is_some());
    assert!(!events_of(&app, "token.family_revoked").await.is_empty());

    let again = alice.authorize(&params).await;
    assert_eq!(again.status(), StatusCode::OK, "consent is asked for again");
    assert!(again.text().await.unwrap().contains("wants to access"));
}

#[tokio::test]
async fn a_revoke_without_the_forms_csrf_token_is_refused() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (alice, _) = app.signed_in("alice").await;
    let (access, _) = authorized(&app, &alice, &client).await;

    let missing = vec![("client_id".to_owned(), client.id().to_owned())];
    let r = alice.post_form("/account/apps/revoke", &missing).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut wrong = missing.clone();
    wrong.push(("csrf_token".into(), "hg_csrf_forged".into()));
    let r = alice.post_form("/account/apps/revoke", &wrong).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // From another site, even with the right token.
    let page = apps_page(&alice).await;
    let mut right = missing.clone();
    right.push((
        "csrf_token".into(),
        hidden_inputs(&page)["csrf_token"].clone(),
    ));
    let r = alice
        .http
        .post(app.url("/account/apps/revoke"))
        .header("Origin", "https://evil.example")
        .form(&right)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    assert_eq!(app.me(&access).await, StatusCode::OK, "nothing was revoked");
    assert!(events_of(&app, "consent.revoked").await.is_empty());
}

#[tokio::test]
async fn a_person_can_only_ever_revoke_their_own_grant() {
    let app = spawn_app().await;
    let shared = app.confidential().await;
    let alices_only = app.confidential().await;
    let (alice, _) = app.signed_in("alice").await;
    let (bob, _) = app.signed_in("bob").await;
    let (alice_shared, _) = authorized(&app, &alice, &shared).await;
    let (alice_own, _) = authorized(&app, &alice, &alices_only).await;
    let (bob_shared, _) = authorized(&app, &bob, &shared).await;

    // Bob revokes the app they share: his grant only.
    let r = post_revoke(&bob, "/account/apps/revoke", &[("client_id", shared.id())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.me(&bob_shared).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(&alice_shared).await, StatusCode::OK);

    // Bob names an app only alice uses, and even alice's id: nothing of
    // hers is touched.
    let alice_id = app
        .state
        .store
        .user_by_username("alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    let r = post_revoke(
        &bob,
        "/account/apps/revoke",
        &[("client_id", alices_only.id()), ("user_id", &alice_id)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).contains("nothing=1"));
    assert_eq!(app.me(&alice_own).await, StatusCode::OK);
    assert!(lists(&apps_page(&alice).await, &alices_only));
    assert!(lists(&apps_page(&alice).await, &shared));
    assert_eq!(events_of(&app, "consent.revoked").await.len(), 1);
}

#[tokio::test]
async fn signed_out_people_are_sent_to_log_in_and_cannot_revoke() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (alice, _) = app.signed_in("alice").await;
    let (access, _) = authorized(&app, &alice, &client).await;

    let stranger = app.browser();
    let r = stranger.get("/account/apps").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with("/login?"), "{to}");
    assert_eq!(query_of(&to)["return_to"], "/account/apps");

    // Logging in from there lands on the page.
    app.user("dora", healthgate_core::user::UserType::Member)
        .await;
    let login = stranger.get(&to).await.text().await.unwrap();
    let mut form = hidden_input_list(&login);
    form.push(("username".into(), "dora".into()));
    form.push(("password".into(), PASSWORD.into()));
    let r = stranger.post_form("/login", &form).await;
    assert_eq!(location(&r), "/account/apps");

    let r = app
        .browser()
        .post_form(
            "/account/apps/revoke",
            &[
                ("csrf_token".into(), "hg_csrf_x".into()),
                ("client_id".into(), client.id().into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.me(&access).await, StatusCode::OK);
}

#[tokio::test]
async fn an_admin_sees_and_revokes_the_organization_level_grant_of_their_organization() {
    let app = spawn_app().await;
    let client = app
        .register(ClientSpec {
            authorization_level: AuthorizationLevel::Organization,
            ..ClientSpec::default()
        })
        .await;
    let (ada, admin_user) = app.signed_in("ada").await;
    let clinic = clinic_with(&app, "Northside Clinic", &[("ada", "admin")]).await;
    let (access, refresh) = authorized(&app, &ada, &client).await;

    let page = apps_page(&ada).await;
    assert!(
        page.contains("Apps connected for Northside Clinic"),
        "{page}"
    );
    assert!(
        page.contains(&format!("id=\"org-{}-app-{}\"", clinic.id, client.id())),
        "{page}"
    );
    assert!(
        !lists(&page, &client),
        "the clinic's grant is not ada's own"
    );
    assert!(page.contains("by ada"), "who allowed it");

    // Her personal Revoke does not reach the clinic's grant.
    let r = post_revoke(&ada, "/account/apps/revoke", &[("client_id", client.id())]).await;
    assert!(location(&r).contains("nothing=1"));
    assert_eq!(app.me(&access).await, StatusCode::OK);

    let r = post_revoke(
        &ada,
        "/account/apps/revoke-organization",
        &[("organization_id", &clinic.id), ("client_id", client.id())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    let (status, body) = app.refresh(&client, &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    let page = ada.get(&location(&r)).await.text().await.unwrap();
    assert!(page.contains("No apps are connected for Northside Clinic."));
    assert!(page.contains("no longer has access for Northside Clinic"));

    let revoked = events_of(&app, "consent.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        revoked[0].organization_id.as_deref(),
        Some(clinic.id.as_str())
    );
    assert_eq!(
        revoked[0].actor_user_id.as_deref(),
        Some(admin_user.id.as_str())
    );
}

#[tokio::test]
async fn someone_who_does_not_administer_the_organization_cannot_revoke_its_grant() {
    let app = spawn_app().await;
    let client = app
        .register(ClientSpec {
            authorization_level: AuthorizationLevel::Organization,
            ..ClientSpec::default()
        })
        .await;
    let (ada, _) = app.signed_in("ada").await;
    let (sam, _) = app.signed_in("sam").await;
    let (eve, _) = app.signed_in("eve").await;
    let clinic = clinic_with(
        &app,
        "Northside Clinic",
        &[("ada", "admin"), ("sam", "staff")],
    )
    .await;
    clinic_with(&app, "Elsewhere", &[("eve", "admin")]).await;
    let (access, _) = authorized(&app, &ada, &client).await;

    for (who, browser) in [("staff member", &sam), ("admin of another clinic", &eve)] {
        let page = apps_page(browser).await;
        assert!(
            !page.contains("Apps connected for Northside Clinic"),
            "a {who} does not see the clinic's grants"
        );
        let r = post_revoke(
            browser,
            "/account/apps/revoke-organization",
            &[("organization_id", &clinic.id), ("client_id", client.id())],
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "a {who} is refused");
    }
    assert_eq!(app.me(&access).await, StatusCode::OK);
    assert!(events_of(&app, "consent.revoked").await.is_empty());
}
