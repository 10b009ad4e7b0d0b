//! The operators' admin console (`/admin`) over real HTTP: who may use it,
//! what each action does (organizations and members, locking, unlocking and
//! resetting accounts, suspending and restoring apps, unmuting webhooks),
//! that a suspended app can do nothing anywhere, the audit log's filters and
//! paging, and the webhook health figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use healthgate_core::event::EventKind;
use healthgate_core::org::{Organization, OrganizationKind};
use healthgate_core::webhook::RETRY_WINDOW;
use healthgate_server::services::admin::{self, ClientChanges};
use healthgate_server::http::pages::{Stamp, format_utc};
use healthgate_server::jobs::webhooks;
use healthgate_store::{Actor, Event, StoredEvent};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

const CONNECT: &str = "https://partner.example/connect?code=";

/// A browser signed in as a new operator `username`.
async fn operator(app: &TestApp, username: &str) -> (Browser, User) {
    let (b, u) = app.signed_in(username).await;
    assert!(
        app.state
            .store
            .set_operator(&u.id, true, Actor::system(), app.clock.now())
            .await
            .unwrap()
    );
    (b, u)
}

/// The session's CSRF token, from a console page with a form.
async fn csrf(b: &Browser) -> String {
    let page = b.get("/admin/organizations").await.text().await.unwrap();
    hidden_inputs(&page)
        .remove("csrf_token")
        .expect("csrf_token on the organizations page")
}

/// Sends a console form the way its page does: the CSRF token and `fields`.
async fn post(b: &Browser, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("csrf_token".to_owned(), csrf(b).await)];
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    b.post_form(path, &form).await
}

/// A page the operator opens; it must be there.
async fn page(b: &Browser, path: &str) -> String {
    let r = b.get(path).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    readable(r.text().await.unwrap())
}

/// The message shown next to a field, if any, as people read it.
fn field_error(page: &str, field: &str) -> Option<String> {
    let start = format!("<p class=\"field-error\" id=\"{field}-error\">");
    let i = page.find(&start)? + start.len();
    let end = page[i..].find("</p>")?;
    Some(crate::unescape_html(&page[i..i + end]))
}

/// The status message an action left on its page, as people read it.
fn notice(page: &str) -> Option<String> {
    let start = "<p class=\"notice\" role=\"status\">";
    let i = page.find(start)? + start.len();
    let end = page[i..].find("</p>")?;
    Some(crate::unescape_html(&page[i..i + end]))
}

async fn organization(app: &TestApp, name: &str) -> Organization {
    admin::create_organization(
        &app.state.store,
        app.clock.as_ref(),
        name,
        OrganizationKind::Practice,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_console_is_for_operators_only() {
    let app = spawn_app().await;
    let client = app.confidential().await;

    // A visitor is sent to sign in, and back to the page asked for.
    let r = app.browser().get("/admin").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login?return_to=%2Fadmin");
    let r = app.browser().get("/admin/users?q=ali&page=2").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = query_of(&location(&r))["return_to"].clone();
    assert_eq!(back, "/admin/users?q=ali&page=2");

    // A signed-in person who is not an operator is refused, page by page.
    let (member, _) = app.signed_in("mallory").await;
    for path in [
        "/admin",
        "/admin/organizations",
        "/admin/users",
        "/admin/apps",
        "/admin/audit",
        "/admin/webhooks",
    ] {
        let r = member.get(path).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("Only the platform&#39;s operators can use the admin console.")
                || body.contains("Only the platform's operators can use the admin console."),
            "{path}: {body}"
        );
    }
    // … and so are their forms, even with a valid CSRF token.
    let home = member.get("/").await.text().await.unwrap();
    let token = hidden_inputs(&home)["csrf_token"].clone();
    let r = member
        .post_form(
            "/admin/apps/suspend",
            &[
                ("csrf_token".into(), token),
                ("client_id".into(), client.id().into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // An operator sees the console with its navigation.
    let (op, _) = operator(&app, "olivia").await;
    let home = page(&op, "/admin").await;
    for link in [
        "/admin/organizations",
        "/admin/users",
        "/admin/apps",
        "/admin/audit",
        "/admin/webhooks",
    ] {
        assert!(home.contains(&format!("href=\"{link}\"")), "{link}");
    }

    // A form without the CSRF token, or from another site, is refused.
    let r = op
        .post_form("/admin/apps/suspend", &[("client_id".into(), client.id().into())])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let token = csrf(&op).await;
    let r = op
        .http
        .post(app.url("/admin/apps/suspend"))
        .header("Origin", "https://evil.example")
        .form(&[("csrf_token", token.as_str()), ("client_id", client.id())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A visitor's form is refused, not redirected.
    let r = app
        .browser()
        .post_form("/admin/apps/suspend", &[("client_id".into(), client.id().into())])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // None of them changed anything.
    let stored = app.state.store.client(client.id()).await.unwrap().unwrap();
    assert!(stored.suspended_at.is_none());
    assert!(app.events_of("client.suspended").await.is_empty());

    // Taking operator status away closes the console at the next request.
    let olivia = app.state.store.user_by_username("olivia").await.unwrap().unwrap();
    app.state
        .store
        .set_operator(&olivia.id, false, Actor::system(), app.clock.now())
        .await
        .unwrap();
    assert_eq!(op.get("/admin").await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn operators_create_organizations_and_manage_their_members() {
    let app = spawn_app().await;
    let (op, me) = operator(&app, "olivia").await;
    let ada = app.user("ada", UserType::Expert).await;

    let r = post(
        &op,
        "/admin/organizations",
        &[("name", "Harbor Clinic"), ("kind", "clinic")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let at = location(&r);
    let org_id = at
        .strip_prefix("/admin/organizations/")
        .and_then(|rest| rest.split('?').next())
        .unwrap()
        .to_owned();
    assert!(org_id.starts_with("cln-"), "{at}");
    let org = app.state.store.organization(&org_id).await.unwrap().unwrap();
    assert_eq!(org.name, "Harbor Clinic");
    assert_eq!(org.kind, OrganizationKind::Clinic);
    let created = app.events_of("organization.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(created[0].organization_id.as_deref(), Some(org_id.as_str()));
    let shown = page(&op, &at).await;
    assert!(notice(&shown).unwrap().contains("Harbor Clinic was created"));

    let list = page(&op, "/admin/organizations").await;
    let row = &list[list.find(&format!("id=\"org-{org_id}\"")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("Harbor Clinic") && row.contains("clinic"));
    assert!(row.contains("<td data-label=\"Members\">0</td>"), "{row}");

    // Add Ada as staff.
    let path = format!("/admin/organizations/{org_id}");
    let r = post(
        &op,
        &format!("{path}/members"),
        &[("username", "ada"), ("role", "staff")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown = page(&op, &location(&r)).await;
    assert_eq!(notice(&shown).as_deref(), Some("ada was added to Harbor Clinic."));
    assert!(shown.contains(&format!("id=\"member-{}\"", ada.id)));
    let members = app.state.store.members(&org_id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!((members[0].0.id.as_str(), members[0].1.as_str()), (ada.id.as_str(), "staff"));
    let added = app.events_of("organization.member_added").await;
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(added[0].subject.as_deref(), Some(ada.id.as_str()));
    let list = page(&op, "/admin/organizations").await;
    assert!(list.contains("<td data-label=\"Members\">1</td>"));

    // Change her role.
    let r = post(
        &op,
        &format!("{path}/members/role"),
        &[("user_id", &ada.id), ("role", "practitioner")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown = page(&op, &location(&r)).await;
    assert_eq!(notice(&shown).as_deref(), Some("ada's role at Harbor Clinic was changed."));
    assert_eq!(
        app.state.store.members(&org_id).await.unwrap()[0].1,
        "practitioner"
    );
    let changed = app.events_of("organization.member_role_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    let data: Value = serde_json::from_str(changed[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(data, json!({"role": "practitioner", "previous_role": "staff"}));
    // The same role again changes nothing.
    let r = post(
        &op,
        &format!("{path}/members/role"),
        &[("user_id", &ada.id), ("role", "practitioner")],
    )
    .await;
    assert!(location(&r).contains("done=unchanged"));
    assert_eq!(app.events_of("organization.member_role_changed").await.len(), 1);

    // Remove her.
    let r = post(&op, &format!("{path}/members/remove"), &[("user_id", &ada.id)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown = page(&op, &location(&r)).await;
    assert_eq!(notice(&shown).as_deref(), Some("ada was removed from Harbor Clinic."));
    assert!(!shown.contains(&format!("id=\"member-{}\"", ada.id)));
    assert!(app.state.store.members(&org_id).await.unwrap().is_empty());
    let removed = app.events_of("organization.member_removed").await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    let r = post(&op, &format!("{path}/members/remove"), &[("user_id", &ada.id)]).await;
    assert!(location(&r).contains("done=not-member"));
    assert_eq!(app.events_of("organization.member_removed").await.len(), 1);
}

#[tokio::test]
async fn invalid_organization_and_member_forms_are_answered_with_the_message_next_to_the_field() {
    let app = spawn_app().await;
    let (op, _) = operator(&app, "olivia").await;
    let ada = app.user("ada", UserType::Member).await;
    let before = app.all_events().await.len();

    for (fields, field) in [
        (vec![("name", "   "), ("kind", "practice")], "name"),
        (vec![("name", "North"), ("kind", "hospital")], "kind"),
        (vec![("kind", "clinic")], "name"),
    ] {
        let r = post(&op, "/admin/organizations", &fields).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}");
        let body = r.text().await.unwrap();
        assert!(field_error(&body, field).is_some(), "{fields:?}: {body}");
        assert!(
            body.contains(&format!("aria-describedby=\"{field}-error\"")),
            "{fields:?}"
        );
        assert!(body.contains("aria-invalid=\"true\""));
    }
    let long = "x".repeat(201);
    let r = post(&op, "/admin/organizations", &[("name", &long), ("kind", "clinic")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert_eq!(
        field_error(&body, "name").as_deref(),
        Some("The name must be 1 to 200 characters.")
    );
    assert!(body.contains(&long), "what was typed is kept");
    assert!(app.state.store.organizations().await.unwrap().is_empty());

    let org = organization(&app, "Harbor Practice").await;
    let members = format!("/admin/organizations/{}/members", org.id);
    let r = post(&op, &members, &[("username", "nobody"), ("role", "staff")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert_eq!(
        field_error(&body, "username").as_deref(),
        Some("No one has the username \"nobody\".")
    );
    let r = post(&op, &members, &[("username", "ada"), ("role", "owner")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert_eq!(
        field_error(&body, "role").as_deref(),
        Some("Unknown role \"owner\": expected one of admin, practitioner, staff."),
    );
    let r = post(&op, &members, &[("role", "staff")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.text().await.unwrap(), "username").is_some());

    // Someone already in it is pointed to the role change.
    assert_eq!(
        post(&op, &members, &[("username", "ada"), ("role", "staff")]).await.status(),
        StatusCode::SEE_OTHER
    );
    let r = post(&op, &members, &[("username", "ada"), ("role", "admin")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        field_error(&body, "username").unwrap().contains("already a member, as staff"),
        "{body}"
    );
    // A role change to a role that does not exist: the message is beside
    // that member's role.
    let r = post(
        &op,
        &format!("{members}/role"),
        &[("user_id", &ada.id), ("role", "owner")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(field_error(&body, &format!("role-{}", ada.id)).is_some(), "{body}");
    assert_eq!(app.state.store.members(&org.id).await.unwrap()[0].1, "staff");

    // An unknown organization is a 404 page.
    let r = op.get("/admin/organizations/pra-nothing").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Nothing refused wrote an event: the only new ones are the
    // organization and the one member added.
    let kinds: Vec<String> = app.all_events().await[..app.all_events().await.len() - before]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        ["organization.member_added", "organization.created"],
        "newest first"
    );
}

/// Rows of the users list.
fn user_rows(page: &str) -> usize {
    page.matches("<tr id=\"user-").count()
}

#[tokio::test]
async fn users_are_searched_case_insensitively_and_paged_fifty_at_a_time() {
    let app = spawn_app().await;
    let (op, me) = operator(&app, "olivia").await;
    let now = app.clock.now();
    for i in 0..54 {
        let mut u = User {
            id: healthgate_core::secret::new_id("usr"),
            username: format!("patient{i:02}"),
            name: Some(format!("Patient Number {i}")),
            email: Some(format!("p{i}@clinic.example")),
            user_type: UserType::Member,
            password_hash: None,
            created_at: now,
            locked_at: None,
            provisioned_by: None,
            operator: false,
            password_reset_at: None,
            email_verified_at: None,
            fhir_user: None,
        };
        if i == 7 {
            u.name = Some("Dr. Ada Lovelace".into());
            u.email = Some("ADA@Analytical.example".into());
        }
        app.state.store.insert_user(&u).await.unwrap();
    }
    app.user("under_score", UserType::Member).await;

    // Everyone, fifty a page, in username order.
    let first = page(&op, "/admin/users").await;
    assert_eq!(user_rows(&first), 50);
    assert!(first.contains("56 accounts"), "olivia, 54 patients, under_score");
    assert!(first.contains("page 1 of 2"));
    assert!(first.contains("href=\"/admin/users?page=2\""));
    assert!(!first.contains("rel=\"prev\""));
    // The operator is marked, and not offered actions on their own account.
    assert!(first.contains(&format!("id=\"user-{}\"", me.id)));
    assert!(first.contains("This is you."));
    let second = page(&op, "/admin/users?page=2").await;
    assert_eq!(user_rows(&second), 6);
    assert!(second.contains("href=\"/admin/users\""), "back to page 1");
    assert!(!second.contains("rel=\"next\""));
    let third = page(&op, "/admin/users?page=3").await;
    assert_eq!(user_rows(&third), 0);
    assert_eq!(op.get("/admin/users?page=0").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(op.get("/admin/users?page=x").await.status(), StatusCode::BAD_REQUEST);

    // Substrings of username, name or email, in any case.
    for (q, expected) in [
        ("PATIENT0", 10),
        ("number 1", 11), // 1, 10..19
        ("lovelace", 1),
        ("analytical.EXAMPLE", 1),
        ("@clinic", 50), // of 53: one page
        ("nobody", 0),
        // LIKE's wildcards are taken literally.
        ("_", 1),
        ("%", 0),
    ] {
        let shown = page(&op, &format!("/admin/users?{}", serde_urlencoded(&[("q", q)]))).await;
        assert_eq!(user_rows(&shown), expected, "{q}");
    }
    assert!(page(&op, "/admin/users?q=%40clinic").await.contains("53 accounts match"));
    let searched = page(&op, "/admin/users?q=patient").await;
    assert!(searched.contains("54 accounts match"));
    assert!(searched.contains("href=\"/admin/users?q=patient&#38;page=2\""));
    let second = page(&op, "/admin/users?q=patient&page=2").await;
    assert_eq!(user_rows(&second), 4);
}

#[tokio::test]
async fn locking_and_unlocking_an_account_from_the_console() {
    let app = spawn_app().await;
    let (op, me) = operator(&app, "olivia").await;
    let (alice, user) = app.signed_in("alice").await;
    assert_eq!(alice.get("/account/apps").await.status(), StatusCode::OK);

    let r = post(
        &op,
        "/admin/users/lock",
        &[("user_id", &user.id), ("q", "ali"), ("page", "1")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert!(back.starts_with("/admin/users?"), "{back}");
    assert_eq!(query_of(&back)["q"], "ali", "back to the same search");
    let shown = page(&op, &back).await;
    assert!(notice(&shown).unwrap().starts_with("alice is locked"));
    assert!(shown.contains("Locked"));
    assert!(shown.contains("aria-label=\"Unlock alice\""));

    let stored = app.state.store.user(&user.id).await.unwrap().unwrap();
    assert!(stored.locked_at.is_some());
    // Her session ended, and she cannot sign in again.
    assert_eq!(alice.get("/account/apps").await.status(), StatusCode::SEE_OTHER);
    let again = app.browser();
    again.login("alice", PASSWORD).await;
    assert_eq!(again.get("/account/apps").await.status(), StatusCode::SEE_OTHER);
    let locked = app.events_of("user.locked").await;
    assert_eq!(locked.len(), 1);
    assert_eq!(locked[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(locked[0].subject.as_deref(), Some(user.id.as_str()));
    assert!(locked[0].ip.is_some(), "the operator's address is kept");
    // Locking again changes nothing and says so.
    let r = post(&op, "/admin/users/lock", &[("user_id", &user.id)]).await;
    assert!(location(&r).contains("done=already-locked"));
    assert_eq!(app.events_of("user.locked").await.len(), 1);

    let r = post(&op, "/admin/users/unlock", &[("user_id", &user.id)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown = page(&op, &location(&r)).await;
    assert_eq!(notice(&shown).as_deref(), Some("alice is unlocked and can sign in again."));
    let unlocked = app.events_of("user.unlocked").await;
    assert_eq!(unlocked.len(), 1);
    assert_eq!(unlocked[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    let again = app.browser();
    again.login("alice", PASSWORD).await;
    assert_eq!(again.get("/account/apps").await.status(), StatusCode::OK);
    let r = post(&op, "/admin/users/unlock", &[("user_id", &user.id)]).await;
    assert!(location(&r).contains("done=not-locked"));

    // Not one's own account, and not an account that does not exist.
    let r = post(&op, "/admin/users/lock", &[("user_id", &me.id)]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(op.get("/admin").await.status(), StatusCode::OK);
    let r = post(&op, "/admin/users/lock", &[("user_id", "usr-nobody")]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post(&op, "/admin/users/lock", &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_password_reset_shows_a_temporary_password_once_that_replaces_the_old_one() {
    let app = spawn_app().await;
    let (op, me) = operator(&app, "olivia").await;
    let (alice, user) = app.signed_in("alice").await;

    let r = post(&op, "/admin/users/reset-password", &[("user_id", &user.id)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    let start = "<code id=\"temporary-password\">";
    let i = body.find(start).unwrap() + start.len();
    let password = body[i..i + body[i..].find("</code>").unwrap()].to_owned();
    assert_eq!(password.len(), healthgate_core::secret::TEMPORARY_PASSWORD_LEN);
    assert!(body.contains("shown only now"));

    // Her session ended; the old password no longer works, the new one does.
    assert_eq!(alice.get("/account/apps").await.status(), StatusCode::SEE_OTHER);
    let old = app.browser();
    let r = old.login("alice", PASSWORD).await;
    assert_ne!(r.status(), StatusCode::SEE_OTHER, "the old password is refused");
    assert_eq!(old.get("/account/apps").await.status(), StatusCode::SEE_OTHER);
    let new = app.browser();
    let r = new.login("alice", &password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Signed in, to choose a password of her own first (signing_in.rs).
    let r = new.get("/account/apps").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/account/password/new?"));

    let reset = app.events_of("user.password_reset").await;
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(reset[0].subject.as_deref(), Some(user.id.as_str()));
    // The password is nowhere but on that one page: not in the trail, not
    // in the database, not on the list.
    for e in app.all_events().await {
        assert!(!format!("{e:?}").contains(&password));
    }
    let list = page(&op, "/admin/users").await;
    assert!(!list.contains(&password));
    // The list says her password is a temporary one until she changes it.
    let row = &list[list.find(&format!("id=\"user-{}\"", user.id)).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("Temporary password"), "{row}");
    let stored = app.state.store.user(&user.id).await.unwrap().unwrap();
    assert!(stored.password_hash.unwrap().starts_with("$argon2id$"));

    // A second reset gives another password; not one's own account.
    let r = post(&op, "/admin/users/reset-password", &[("user_id", &user.id)]).await;
    assert!(!r.text().await.unwrap().contains(&password));
    let r = post(&op, "/admin/users/reset-password", &[("user_id", &me.id)]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

async fn client_credentials(app: &TestApp, client: &TestClient) -> (StatusCode, Value) {
    app.token(
        Some((client.id(), client.secret.as_deref().unwrap())),
        &[("grant_type", "client_credentials")],
    )
    .await
}

/// Clicks Connect in the directory for `client_id`; returns the response.
async fn connect(admin: &Browser, org: &str, client_id: &str) -> reqwest::Response {
    // The home page's sign-out form carries the token even when the
    // directory lists nothing.
    let page = admin.get("/").await.text().await.unwrap();
    let token = hidden_inputs(&page)["csrf_token"].clone();
    admin
        .post_form(
            "/integrations/connect",
            &[
                ("csrf_token".into(), token),
                ("org".into(), org.into()),
                ("client_id".into(), client_id.into()),
                ("mode".into(), "redirect".into()),
            ],
        )
        .await
}

/// The partner's call of one of its APIs with HTTP Basic.
async fn partner(
    app: &TestApp,
    client: &TestClient,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = app
        .http()
        .request(method, app.url(path))
        .basic_auth(client.id(), client.secret.as_deref())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn practice_api(app: &TestApp, key: &str) -> StatusCode {
    app.http()
        .get(app.url("/api/v1/practice"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
}

fn says_suspended(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::UNAUTHORIZED
        && body["error"] == "invalid_client"
        && body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("suspended"))
}

#[tokio::test]
async fn a_suspended_app_can_do_nothing_until_it_is_restored() {
    let app = spawn_app().await;
    let (op, me) = operator(&app, "olivia").await;
    let client = app.confidential().await;
    let rs = app.resource_server().await;
    admin::update_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        client.id(),
        ClientChanges {
            connect_redirect_url: Some(Some(CONNECT.into())),
            published: Some(true),
            ..ClientChanges::default()
        }, Actor::system(),
    )
    .await
    .unwrap();
    admin::approve_listing(&app.state.store, app.clock.as_ref(), client.id(), None, Actor::system())
        .await
        .unwrap();
    // A practice connected to the app, with a practice API key, and a
    // second connect code not yet exchanged.
    let org = organization(&app, "Harbor Practice").await;
    app.user("pat", UserType::Member).await;
    admin::add_member(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        &org.id,
        "pat",
        "admin",
    )
    .await
    .unwrap();
    let pat = app.browser();
    pat.login("pat", PASSWORD).await;
    let code_of = |r: &reqwest::Response| location(r).strip_prefix(CONNECT).unwrap().to_owned();
    let first = code_of(&connect(&pat, &org.id, client.id()).await);
    let (status, body) = partner(
        &app,
        &client,
        reqwest::Method::POST,
        "/api/oauth/tokens",
        json!({"code": first}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(practice_api(&app, &key).await, StatusCode::OK);
    let second = code_of(&connect(&pat, &org.id, client.id()).await);

    // A person's grant, and a code of theirs not yet redeemed.
    let (alice, _) = app.signed_in("alice").await;
    let code = app.code(&alice, &client, &[]).await;
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let pending = app.code(&alice, &client, &[("state", "later")]).await;
    let (status, cc) = client_credentials(&app, &client).await;
    assert_eq!(status, StatusCode::OK, "{cc}");
    let cc_access = cc["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me(&access).await, StatusCode::OK);
    assert_eq!(app.introspect(&rs, &access).await["active"], true);

    // The operator clicks Suspend: a page asks first, and for a reason.
    let list = page(&op, "/admin/apps").await;
    assert!(list.contains("<form method=\"get\" action=\"/admin/apps/suspend\">"));
    let confirm = page(&op, &format!("/admin/apps/suspend?client_id={}", client.id())).await;
    assert_eq!(confirm.matches("<h1").count(), 1);
    assert!(confirm.contains("Suspend Partner App?"));
    assert!(confirm.contains("<label for=\"reason\">"));
    assert!(confirm.contains(&format!("href=\"/admin/apps#app-{}\">Cancel</a>", client.id())));
    let confirm_form = hidden_inputs(&confirm);
    assert_eq!(confirm_form["client_id"], client.id());
    // Without a reason nothing happens, and the field says why.
    for reason in ["", "   "] {
        let r = post(&op, "/admin/apps/suspend", &[("client_id", client.id()), ("reason", reason)]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let shown = r.text().await.unwrap();
        assert!(field_error(&shown, "reason").unwrap().starts_with("Say why the app is suspended"));
    }
    let long = "x".repeat(201);
    let r = post(&op, "/admin/apps/suspend", &[("client_id", client.id()), ("reason", &long)]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(app.events_of("client.suspended").await.is_empty());
    assert!(app.state.store.client(client.id()).await.unwrap().unwrap().suspended_at.is_none());
    let r = post(
        &op,
        "/admin/apps/suspend",
        &[("client_id", client.id()), ("reason", " Phishing reported by a practice ")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    let q = query_of(&back);
    assert_eq!(
        (q["done"].as_str(), q["families"].as_str(), q["codes"].as_str()),
        ("suspended", "2", "1"),
        "alice's grant and the client-credentials token; alice's pending code"
    );
    let shown = page(&op, &back).await;
    assert!(notice(&shown).unwrap().starts_with("Partner App is suspended"));
    let row = &shown[shown.find(&format!("id=\"app-{}\"", client.id())).unwrap()..];
    assert!(row[..row.find("</tr>").unwrap()].contains("Suspended"));
    let suspended = app.events_of("client.suspended").await;
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(suspended[0].client_id.as_deref(), Some(client.id()));
    let data: Value = serde_json::from_str(suspended[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(
        data,
        json!({"families_revoked": 2, "codes_expired": 1, "reason": "Phishing reported by a practice"})
    );
    // The audit log shows the reason.
    let audit = page(&op, "/admin/audit?kind=client.suspended").await;
    assert!(audit.contains("Phishing reported by a practice"));
    // Once suspended, the confirmation page sends back to the list.
    let r = op.get(&format!("/admin/apps/suspend?client_id={}", client.id())).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).contains("done=already-suspended"));

    // The authorize endpoint: a page that says so, no redirect.
    let params = [
        ("response_type", "code"),
        ("client_id", client.id()),
        ("redirect_uri", REDIRECT),
        ("scope", "profile_read"),
        ("state", "s9"),
    ];
    let r = alice.authorize(&params).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("location").is_none());
    let body = r.text().await.unwrap();
    assert!(body.contains("This app is suspended"), "{body}");
    // The token endpoint: the code, the refresh token, client credentials.
    let (status, body) = app.exchange(&client, &pending, &[]).await;
    assert!(says_suspended(status, &body), "{status} {body}");
    let (status, body) = app.refresh(&client, &refresh).await;
    assert!(says_suspended(status, &body), "{status} {body}");
    let (status, body) = client_credentials(&app, &client).await;
    assert!(says_suspended(status, &body), "{status} {body}");
    // Tokens issued before: inactive, and refused by the API.
    assert_eq!(app.introspect(&rs, &access).await, json!({"active": false}));
    assert_eq!(app.introspect(&rs, &cc_access).await, json!({"active": false}));
    assert_eq!(app.introspect(&rs, &refresh).await, json!({"active": false}));
    assert_eq!(app.introspect(&rs, &key).await, json!({"active": false}));
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    // The practice API key, Hint's exchange, the partner and provisioning
    // APIs.
    assert_eq!(practice_api(&app, &key).await, StatusCode::UNAUTHORIZED);
    let (status, body) = partner(
        &app,
        &client,
        reqwest::Method::POST,
        "/api/oauth/tokens",
        json!({"code": second}),
    )
    .await;
    assert!(says_suspended(status, &body), "{status} {body}");
    // Hint's partner-level `Bearer <client_secret>` too.
    let r = app
        .http()
        .get(app.url("/api/v1/integrations"))
        .bearer_auth(client.secret.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(says_suspended(status, &r.json().await.unwrap()));
    let (status, body) =
        partner(&app, &client, reqwest::Method::GET, "/api/v1/integrations", Value::Null).await;
    assert!(says_suspended(status, &body), "{status} {body}");
    let (status, body) = partner(
        &app,
        &client,
        reqwest::Method::POST,
        "/api/v1/users",
        json!({"username": "newcomer"}),
    )
    .await;
    assert!(says_suspended(status, &body), "{status} {body}");
    // The directory no longer offers it, and Connect is refused; the
    // practice connected to it still sees it, to disconnect it.
    let directory = page(&pat, &format!("/integrations?org={}", org.id)).await;
    let card = &directory[directory.find(&format!("id=\"app-{}\"", client.id())).unwrap()..];
    let card = &card[..card.find("</li>").unwrap()];
    assert!(crate::unescape_html(card).contains("Suspended by the platform's operators"), "{card}");
    assert!(!card.contains("value=\"redirect\""), "{card}");
    assert!(card.contains("Disconnect"), "{card}");
    assert_eq!(
        connect(&pat, &org.id, client.id()).await.status(),
        StatusCode::BAD_REQUEST
    );

    // Restored: it may work again with new tokens; the old ones stay dead.
    let r = post(&op, "/admin/apps/restore", &[("client_id", client.id())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown = page(&op, &location(&r)).await;
    assert!(notice(&shown).unwrap().starts_with("Partner App is restored"));
    let restored = app.events_of("client.restored").await;
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    let (status, body) = app.refresh(&client, &refresh).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (status, _) = app.exchange(&client, &pending, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the pending code expired");
    assert_eq!(practice_api(&app, &key).await, StatusCode::OK, "keys work again");
    let code = app.code(&alice, &client, &[]).await;
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.me(body["access_token"].as_str().unwrap()).await, StatusCode::OK);
    assert_eq!(client_credentials(&app, &client).await.0, StatusCode::OK);
    let directory = page(&pat, &format!("/integrations?org={}", org.id)).await;
    assert!(directory.contains(&format!("id=\"app-{}\"", client.id())));

    // Suspending twice, or restoring an app that is not suspended, says so.
    let r = post(&op, "/admin/apps/restore", &[("client_id", client.id())]).await;
    assert!(location(&r).contains("done=not-suspended"));
    post(&op, "/admin/apps/suspend", &[("client_id", client.id()), ("reason", "again")]).await;
    let r = post(&op, "/admin/apps/suspend", &[("client_id", client.id()), ("reason", "again")]).await;
    assert!(location(&r).contains("done=already-suspended"));
    assert_eq!(app.events_of("client.suspended").await.len(), 2);
    let r = post(&op, "/admin/apps/suspend", &[("client_id", "app-nothing"), ("reason", "x")]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(op.get("/admin/apps/suspend?client_id=app-nothing").await.status(), StatusCode::NOT_FOUND);
}

/// The `seq`s of the events a page of the audit log shows, in order.
fn event_seqs(page: &str) -> Vec<i64> {
    page.split("<tr class=\"event\" id=\"event-")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The first hundred events `keep` keeps, newest first: what the page must show.
fn expected(events: &[StoredEvent], keep: impl Fn(&StoredEvent) -> bool) -> Vec<i64> {
    events.iter().filter(|e| keep(e)).take(100).map(|e| e.seq).collect()
}


/// The `href` of the link with `rel`.
fn link(page: &str, text: &str) -> Option<String> {
    let end = page.find(text)?;
    let start = page[..end].rfind("href=\"")? + "href=\"".len();
    let stop = page[start..].find('"')? + start;
    Some(crate::unescape_html(&page[start..stop]))
}

#[tokio::test]
async fn the_audit_log_narrows_by_each_filter_and_pages_by_seq() {
    let app = spawn_app().await;
    let (op, me) = operator(&app, "olivia").await;
    let client = app.confidential().await;
    let day_one = format_utc(app.clock.now())[..10].to_owned();
    // Day one: alice authorizes the app; a failed sign-in; an organization.
    tokens_for(&app, &client, "alice").await;
    let alice = app.state.store.user_by_username("alice").await.unwrap().unwrap();
    app.browser().login("alice", "wrong password").await;
    let r = post(
        &op,
        "/admin/organizations",
        &[("name", "<b>Bold & \"quoted\"</b>"), ("kind", "practice")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let org = app.state.store.organizations().await.unwrap().remove(0);
    // Three days later: the operator locks alice; 120 failed sign-ins.
    app.clock.advance(3 * 86_400);
    let day_four = format_utc(app.clock.now())[..10].to_owned();
    // The session did not last three days.
    op.login("olivia", PASSWORD).await;
    post(&op, "/admin/users/lock", &[("user_id", &alice.id)]).await;
    for _ in 0..120 {
        app.state
            .store
            .record_event(
                app.clock.now(),
                &Event::new(EventKind::LoginFailed).failed().data(json!({"username": "bot"})),
            )
            .await
            .unwrap();
    }
    let events = app.all_events().await;
    assert!(events.len() > 130);

    type Keep = Box<dyn Fn(&StoredEvent) -> bool>;
    let (alice_id, client_id, org_id, me_id) =
        (alice.id.clone(), client.id().to_owned(), org.id.clone(), me.id.clone());
    let day_four_at = app.clock.now() / 86_400 * 86_400;
    let cases: Vec<(String, Keep)> = vec![
        ("kind=token.issued".into(), Box::new(|e: &StoredEvent| e.kind == "token.issued")),
        (
            "person=alice".into(),
            Box::new(move |e: &StoredEvent| {
                e.actor_user_id.as_deref() == Some(alice_id.as_str())
                    || e.subject.as_deref() == Some(alice_id.as_str())
            }),
        ),
        (format!("person={}", me.id), {
            let me_id = me_id.clone();
            Box::new(move |e: &StoredEvent| {
                e.actor_user_id.as_deref() == Some(me_id.as_str())
                    || e.subject.as_deref() == Some(me_id.as_str())
            })
        }),
        (
            format!("app={}", client.id()),
            Box::new(move |e: &StoredEvent| e.client_id.as_deref() == Some(client_id.as_str())),
        ),
        (
            format!("organization={}", org.id),
            Box::new(move |e: &StoredEvent| {
                e.organization_id.as_deref() == Some(org_id.as_str())
            }),
        ),
        ("outcome=failure".into(), Box::new(|e: &StoredEvent| e.outcome == "failure")),
        (format!("to={day_one}"), Box::new(move |e: &StoredEvent| e.at < day_four_at)),
        (format!("from={day_four}"), Box::new(move |e: &StoredEvent| e.at >= day_four_at)),
        (
            format!("kind=login.failed&from={day_one}&to={day_one}"),
            Box::new(move |e: &StoredEvent| e.kind == "login.failed" && e.at < day_four_at),
        ),
        (
            "person=alice&kind=user.locked&outcome=success&app=&organization=".into(),
            Box::new(move |e: &StoredEvent| e.kind == "user.locked"),
        ),
    ];
    for (query, keep) in cases {
        let shown = page(&op, &format!("/admin/audit?{query}")).await;
        let kept = events.iter().filter(|e| keep(e)).count();
        assert!(kept > 0, "{query}: a filter that keeps nothing proves little");
        assert!(kept < events.len(), "{query}: the filter narrows");
        let want = expected(&events, keep);
        assert_eq!(event_seqs(&shown), want, "{query}");
    }
    // Everything together narrows to nothing sensible: a clear answer.
    let shown = page(&op, "/admin/audit?kind=client.deleted").await;
    assert!(event_seqs(&shown).is_empty());
    assert!(shown.contains("No events match these filters."));

    // Each event shows its time, kind, outcome, actor, subject and data,
    // escaped.
    let shown = page(&op, "/admin/audit?kind=user.locked").await;
    assert!(shown.contains(&format!("olivia ({})", me.id)), "the actor by name");
    assert!(shown.contains(&format!("alice ({})", alice.id)), "the subject by name");
    let shown = page(&op, "/admin/audit?kind=organization.created").await;
    assert!(shown.contains("&#60;b&#62;Bold &#38; "), "escaped: {shown}");
    assert!(!shown.contains("<b>Bold"));

    // Paging: a hundred, then the rest, by seq.
    let newest = page(&op, "/admin/audit?kind=login.failed").await;
    let all_failed: Vec<i64> = events.iter().filter(|e| e.kind == "login.failed").map(|e| e.seq).collect();
    assert_eq!(all_failed.len(), 121);
    assert_eq!(event_seqs(&newest), all_failed[..100]);
    let older = link(&newest, "Older events").expect("an Older link");
    assert_eq!(
        older,
        format!("/admin/audit?kind=login.failed&before={}", all_failed[99])
    );
    let rest = page(&op, &older).await;
    assert_eq!(event_seqs(&rest), all_failed[100..]);
    assert!(link(&rest, "Older events").is_none());
    assert_eq!(link(&rest, "Newest events").as_deref(), Some("/admin/audit?kind=login.failed"));
    let unfiltered = page(&op, "/admin/audit").await;
    assert_eq!(event_seqs(&unfiltered), expected(&events, |_| true));
}

#[tokio::test]
async fn invalid_audit_filters_are_refused_next_to_their_field() {
    let app = spawn_app().await;
    let (op, _) = operator(&app, "olivia").await;
    for (query, field) in [
        ("kind=token.stolen", "kind"),
        ("outcome=maybe", "outcome"),
        ("from=2026-02-30", "from"),
        ("to=yesterday", "to"),
        ("from=2026-11-22&to=2026-11-21", "to"),
    ] {
        let r = op.get(&format!("/admin/audit?{query}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = r.text().await.unwrap();
        assert!(field_error(&body, field).is_some(), "{query}: {body}");
        assert!(body.contains(&format!("aria-describedby=\"{field}-error\"")));
        assert!(event_seqs(&body).is_empty());
    }
    let r = op.get("/admin/audit?before=x").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("role=\"alert\""));
    // The same day as both ends is one whole day.
    let today = &format_utc(app.clock.now())[..10];
    let shown = page(&op, &format!("/admin/audit?from={today}&to={today}")).await;
    assert!(!event_seqs(&shown).is_empty());
}

/// An operator makes an app a resource server on the Apps page (it may then
/// introspect every token) and takes it back; each change names the
/// operator. Anyone not an operator cannot.
#[tokio::test]
async fn operators_make_an_app_a_resource_server_and_take_it_back() {
    let app = spawn_app().await;
    let (op, me) = operator(&app, "olivia").await;
    let client = app.confidential().await;
    let api = app.confidential().await;
    let (access, _) = tokens_for(&app, &client, "alice").await;
    assert_eq!(app.introspect(&api, &access).await, json!({"active": false}));

    let listed = page(&op, "/admin/apps").await;
    assert!(listed.contains(&format!("aria-label=\"Make {} a resource server\"", "Partner App")));
    let r = post(&op, "/admin/apps/resource-server", &[("client_id", api.id()), ("resource_server", "1")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown = page(&op, &location(&r)).await;
    assert_eq!(notice(&shown).as_deref(), Some("Partner App is a resource server: it may introspect every token."));
    assert_eq!(app.introspect(&api, &access).await["active"], true);
    let updated = app.events_of("client.updated").await;
    assert_eq!(updated[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(updated[0].client_id.as_deref(), Some(api.id()));

    let r = post(&op, "/admin/apps/resource-server", &[("client_id", api.id()), ("resource_server", "0")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.introspect(&api, &access).await, json!({"active": false}));

    // A person who is not an operator is refused and changes nothing.
    let (someone, _) = app.signed_in("mallory").await;
    let token = super::portal::csrf_of(&someone, "/developers/apps/new").await;
    let form = [("csrf_token", token.as_str()), ("client_id", api.id()), ("resource_server", "1")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let r = someone.post_form("/admin/apps/resource-server", &form).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!app.state.store.client(api.id()).await.unwrap().unwrap().resource_server);
}

/// The refusals item by item in the audit log: the console's filter finds a
/// failed client authentication and a refused revocation by kind and by
/// app, each shown to the second.
#[tokio::test]
async fn the_audit_filter_finds_refusals_shown_to_the_second() {
    let app = spawn_app().await;
    let (op, _) = operator(&app, "olivia").await;
    let client = app.confidential().await;
    let other = app.confidential().await;
    let (access, _) = tokens_for(&app, &client, "alice").await;
    app.clock.advance(7);
    let (status, _) = app.token(Some((client.id(), "wrong")), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = app
        .http()
        .post(app.url("/oauth/revoke"))
        .basic_auth(other.id(), other.secret.as_deref())
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let failed = app.events_of("client.authentication_failed").await;
    let shown = page(&op, &format!("/admin/audit?kind=client.authentication_failed&app={}", client.id())).await;
    assert_eq!(event_seqs(&shown), [failed[0].seq]);
    assert!(shown.contains(&Stamp::exact(failed[0].at).text), "{shown}");
    let refused = app.events_of("access.refused").await;
    let shown = page(&op, &format!("/admin/audit?kind=access.refused&app={}", other.id())).await;
    assert_eq!(event_seqs(&shown), [refused[0].seq]);
    let shown = page(&op, &format!("/admin/audit?kind=access.refused&app={}", client.id())).await;
    assert!(event_seqs(&shown).is_empty(), "the filter is by the app that acted");
}

/// A partner's webhook endpoint on a loopback port, answering every POST
/// with the status it is set to.
async fn receiver(status: Arc<AtomicU16>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let status = status.clone();
            async move {
                axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/hook")
}

/// One webhook's figure on the page, by its class.
fn figure(page: &str, client_id: &str, class: &str) -> i64 {
    let card = &page[page.find(&format!("id=\"hook-{client_id}\"")).unwrap()..];
    let card = &card[..card.find("</li>").unwrap()];
    let start = format!("<dd class=\"{class}\">");
    let i = card.find(&start).unwrap() + start.len();
    card[i..i + card[i..].find('<').unwrap()].parse().unwrap()
}

fn hook_card<'a>(page: &'a str, client_id: &str) -> &'a str {
    let card = &page[page.find(&format!("id=\"hook-{client_id}\"")).unwrap()..];
    &card[..card.find("</li>").unwrap()]
}

#[tokio::test]
async fn webhook_health_counts_deliveries_and_unmute_resends_the_held_ones() {
    let app = spawn_app_with(|s| {
        s.webhook_poll_interval = None;
        s.allow_http_webhooks = true;
    })
    .await;
    let (op, me) = operator(&app, "olivia").await;
    let status = Arc::new(AtomicU16::new(200));
    let url = receiver(status.clone()).await;
    let client = app.confidential().await;
    let quiet = app.confidential().await;
    for c in [&client, &quiet] {
        admin::update_client(
            &app.state.store,
            &app.state.settings,
            app.clock.as_ref(),
            c.id(),
            ClientChanges {
                webhook_url: Some(Some(url.clone())),
                ..ClientChanges::default()
            }, Actor::system(),
        )
        .await
        .unwrap();
    }
    let http = healthgate_server::services::outbound::http_client(app.state.settings.allow_http_webhooks).unwrap();
    let notify = |n: usize| {
        let app = &app;
        let id = client.id().to_owned();
        async move {
            for _ in 0..n {
                app.state
                    .store
                    .record_event(
                        app.clock.now(),
                        &Event::new(EventKind::ApiKeyCreated).client(&id).subject("key-x"),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    let deliver = || async { webhooks::deliver_due(&app.state, &http).await.unwrap() };

    // Three delivered.
    let delivered_at = app.clock.now();
    notify(3).await;
    assert_eq!(deliver().await, 3);
    // Two fail, then fail again after the 72-hour window: given up.
    app.clock.advance(60);
    status.store(500, Ordering::SeqCst);
    notify(2).await;
    assert_eq!(deliver().await, 2);
    app.clock.advance(RETRY_WINDOW + 3600);
    let failed_at = app.clock.now();
    assert_eq!(deliver().await, 2);
    // The session did not last three days.
    op.login("olivia", PASSWORD).await;
    // One waiting.
    notify(1).await;

    let shown = page(&op, "/admin/webhooks").await;
    let card = hook_card(&shown, client.id());
    assert!(card.contains(&url));
    assert_eq!(figure(&shown, client.id(), "pending"), 1);
    assert_eq!(figure(&shown, client.id(), "delivered"), 3);
    assert_eq!(figure(&shown, client.id(), "failed"), 2);
    assert_eq!(figure(&shown, client.id(), "held"), 0);
    assert_eq!(figure(&shown, client.id(), "streak"), 4);
    assert!(card.contains(&Stamp::exact(delivered_at).text), "last success: {card}");
    assert!(card.contains(&Stamp::exact(failed_at).text), "last failure: {card}");
    assert!(card.contains("HTTP 500 Internal Server Error"), "{card}");
    assert!(card.contains("Failing") && !card.contains("Unmute"));
    let other = hook_card(&shown, quiet.id());
    assert!(other.contains("Healthy") && other.contains("Last success: never"));
    assert_eq!(figure(&shown, quiet.id(), "delivered"), 0);

    // A hundred failures in a row mute it; what is left is held.
    notify(100).await;
    for _ in 0..10 {
        deliver().await;
        let c = app.state.store.client(client.id()).await.unwrap().unwrap();
        if c.webhook_muted_at.is_some() {
            break;
        }
    }
    let shown = page(&op, "/admin/webhooks").await;
    let card = hook_card(&shown, client.id());
    assert!(card.contains("Muted"), "{card}");
    assert!(card.contains("aria-label=\"Unmute the webhook of Partner App\""));
    let held = figure(&shown, client.id(), "held");
    assert!(held >= 1, "{card}");
    let counted: i64 = ["pending", "delivered", "failed", "held"]
        .iter()
        .map(|c| figure(&shown, client.id(), c))
        .sum();
    assert_eq!(counted, 106, "every delivery is counted once");
    assert!(figure(&shown, client.id(), "streak") >= 100);

    // Unmute: the held deliveries are due again, and the trail says who.
    status.store(200, Ordering::SeqCst);
    let r = post(&op, "/admin/webhooks/unmute", &[("client_id", client.id())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert_eq!(query_of(&back)["resumed"], held.to_string());
    let shown = page(&op, &back).await;
    assert!(notice(&shown).unwrap().contains("webhook is unmuted"));
    let card = hook_card(&shown, client.id());
    assert!(!card.contains("Muted") && !card.contains("Unmute"));
    assert_eq!(figure(&shown, client.id(), "held"), 0);
    assert_eq!(figure(&shown, client.id(), "streak"), 0);
    let unmuted = app.events_of("webhook.unmuted").await;
    assert_eq!(unmuted.len(), 1);
    assert_eq!(unmuted[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(unmuted[0].client_id.as_deref(), Some(client.id()));
    while deliver().await > 0 {}
    let shown = page(&op, "/admin/webhooks").await;
    assert!(figure(&shown, client.id(), "delivered") >= 3 + held);
    let r = post(&op, "/admin/webhooks/unmute", &[("client_id", client.id())]).await;
    assert!(location(&r).contains("done=not-muted"));
    assert_eq!(app.events_of("webhook.unmuted").await.len(), 1);
}

/// Fails to sign in as `username` `times` times, from this machine's
/// address, each a minute after the last (past the 1, 2, 4 … s waits after
/// the first five, and with the address's sign-in bucket refilled): every
/// attempt is looked at and refused, none is told to wait.
async fn fail_sign_ins(app: &TestApp, username: &str, times: u32) {
    for i in 0..times {
        let r = app.browser().login(username, "not the password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i} for {username}");
        app.clock.advance(61);
    }
}

/// The Security rows on the console's home page, as `(kind, row text)`.
fn security_rows(home: &str) -> Vec<(String, String)> {
    home.split("<tr class=\"security-event\"")
        .skip(1)
        .map(|rest| {
            let row = &rest[..rest.find("</tr>").unwrap()];
            let kind = row.split("/admin/audit?kind=").nth(1).unwrap();
            (kind[..kind.find('"').unwrap()].to_owned(), row.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn an_account_locked_by_failed_sign_ins_is_shown_and_unlocked_from_the_console() {
    let app = spawn_app().await;
    let (op, me) = operator(&app, "olivia").await;
    let alice = app.user("alice", UserType::Member).await;

    // Ten failures in a row lock her username; even her right password is
    // then refused, before it is looked at.
    fail_sign_ins(&app, "alice", 10).await;
    let locks = app.events_of("login.locked").await;
    assert_eq!(locks.len(), 1);
    let until = locks[0].at + 900;
    let b = app.browser();
    assert_eq!(b.login("alice", PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b.get("/account/apps").await.status(), StatusCode::SEE_OTHER);

    // The console says so, until when, and offers Unlock (and Lock: the
    // operator's lock is another thing).
    let shown = page(&op, "/admin/users?q=alice").await;
    let row = &shown[shown.find(&format!("id=\"user-{}\"", alice.id)).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("Locked after failed sign-ins"), "{row}");
    let when = Stamp::exact(until);
    assert!(
        row.contains(&format!("until <time datetime=\"{}\">{}</time>", when.iso, when.text)),
        "{row}"
    );
    assert!(row.contains("aria-label=\"Unlock alice\""), "{row}");
    assert!(row.contains("aria-label=\"Lock alice\""), "{row}");
    assert!(!row.contains(">Active<"), "{row}");
    // The home page's Security section lists the lock, with her account.
    let home = page(&op, "/admin").await;
    let rows = security_rows(&home);
    assert_eq!(rows.len(), 1, "{home}");
    assert_eq!(rows[0].0, "login.locked");
    assert!(rows[0].1.contains("href=\"/admin/users?q=alice\""), "{}", rows[0].1);
    assert!(rows[0].1.contains("10 failed sign-ins; locked until"), "{}", rows[0].1);

    // Unlock clears the failed sign-ins, says so, and is audited.
    let r = post(
        &op,
        "/admin/users/unlock",
        &[("user_id", &alice.id), ("q", "alice")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert_eq!(query_of(&back)["q"], "alice", "back to the same search");
    let shown = page(&op, &back).await;
    assert_eq!(
        notice(&shown).as_deref(),
        Some("alice is unlocked: their failed sign-ins are cleared and they can sign in again.")
    );
    assert!(!shown.contains("Locked after failed sign-ins"), "{shown}");
    assert!(!shown.contains("aria-label=\"Unlock alice\""));
    let unlocked = app.events_of("user.unlocked").await;
    assert_eq!(unlocked.len(), 1);
    assert_eq!(unlocked[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    assert_eq!(unlocked[0].subject.as_deref(), Some(alice.id.as_str()));
    assert!(unlocked[0].ip.is_some(), "the operator's address is kept");
    assert_eq!(
        unlocked[0].data.as_deref(),
        Some(r#"{"cleared":["failed_sign_ins"]}"#)
    );
    // Her right password signs her in.
    let b = app.browser();
    assert_eq!(b.login("alice", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.get("/account/apps").await.status(), StatusCode::OK);
    // Nothing left to unlock.
    let r = post(&op, "/admin/users/unlock", &[("user_id", &alice.id)]).await;
    assert!(location(&r).contains("done=not-locked"));

    // Locked by an operator and by failed sign-ins: one Unlock lifts both,
    // with one event saying so.
    let r = post(&op, "/admin/users/lock", &[("user_id", &alice.id)]).await;
    assert!(location(&r).contains("done=locked"));
    fail_sign_ins(&app, "alice", 10).await;
    let shown = page(&op, "/admin/users?q=alice").await;
    assert!(shown.contains(">Locked<"), "{shown}");
    assert!(shown.contains("Locked after failed sign-ins"), "{shown}");
    let r = post(&op, "/admin/users/unlock", &[("user_id", &alice.id)]).await;
    let shown = page(&op, &location(&r)).await;
    assert_eq!(
        notice(&shown).as_deref(),
        Some("alice is unlocked, and their failed sign-ins are cleared: they can sign in again.")
    );
    let unlocked = app.events_of("user.unlocked").await;
    assert_eq!(unlocked.len(), 2);
    assert_eq!(
        unlocked[0].data.as_deref(),
        Some(r#"{"cleared":["operator_lock","failed_sign_ins"]}"#)
    );
    let b = app.browser();
    assert_eq!(b.login("alice", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.get("/account/apps").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_console_home_lists_the_last_days_bursts_locks_and_throttled_apps() {
    let app = spawn_app().await;
    let (op, _) = operator(&app, "olivia").await;
    let home = page(&op, "/admin").await;
    assert!(security_rows(&home).is_empty());
    assert!(
        home.contains("No bursts of failed sign-ins, usernames locked after failed sign-ins or apps refused after failed authentications in the last 24 hours."),
        "{home}"
    );

    // Ten different usernames (most without an account) fail from one
    // address: a burst.
    app.user("bob", UserType::Member).await;
    for username in ["bob", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"] {
        let r = app.browser().login(username, "not the password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{username}");
    }
    let bursts = app.events_of("login.burst").await;
    assert_eq!(bursts.len(), 1);
    app.clock.advance(5);

    // An app failing to authenticate twenty times is refused for a while.
    let client = app.confidential().await;
    for _ in 0..20 {
        let (status, _) = app
            .token(Some((client.id(), "wrong")), &[("grant_type", "client_credentials")])
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let throttled = app.events_of("client.throttled").await;
    assert_eq!(throttled.len(), 1);

    // Newest first, each linking to the audit log narrowed to its kind.
    let home = page(&op, "/admin").await;
    let rows = security_rows(&home);
    let kinds: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["client.throttled", "login.burst"], "{home}");
    let (_, app_row) = &rows[0];
    assert!(app_row.contains(client.id()), "{app_row}");
    assert!(app_row.contains("20 failures; refused until"), "{app_row}");
    let (_, burst_row) = &rows[1];
    assert!(burst_row.contains("10 usernames within 10 minutes"), "{burst_row}");
    assert!(burst_row.contains("from</span> 127.0.0.1"), "{burst_row}");
    assert!(
        burst_row.contains(&Stamp::exact(bursts[0].at).text),
        "{burst_row}"
    );
    let audit = page(&op, "/admin/audit?kind=login.burst").await;
    assert_eq!(event_seqs(&audit), [bursts[0].seq]);

    // A day later they are history: the audit log has them, the home page
    // does not.
    app.clock.advance(24 * 3600 + 60);
    let (op, _) = operator(&app, "oscar").await;
    let home = page(&op, "/admin").await;
    assert!(security_rows(&home).is_empty(), "{home}");
    assert!(home.contains("in the last 24 hours."));
    let audit = page(&op, "/admin/audit?kind=login.burst").await;
    assert_eq!(event_seqs(&audit), [bursts[0].seq]);
}

/// With SMART on, an operator sets who a person is on the FHIR server and
/// the patients they may pick, from the users page; a bad value is
/// explained and changes nothing.
#[tokio::test]
async fn operators_set_fhir_user_and_link_patients_from_the_console() {
    let app = spawn_app_with(|s| {
        s.smart.fhir_base_urls = vec!["https://fhir.example.com/r4".parse().unwrap()];
    })
    .await;
    let (op, me) = operator(&app, "olivia").await;
    let (_, user) = app.signed_in("alice").await;
    let r = post(
        &op,
        "/admin/users/fhir-user",
        &[("user_id", &user.id), ("fhir_user", "Practitioner/9")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown = page(&op, &location(&r)).await;
    assert_eq!(notice(&shown).as_deref(), Some("alice's fhirUser is saved."));
    assert!(shown.contains("Practitioner/9"), "{shown}");
    let r = post(
        &op,
        "/admin/users/link-patient",
        &[("user_id", &user.id), ("patient", "123"), ("display", "Alice Example")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let shown = page(&op, &location(&r)).await;
    assert!(shown.contains("aria-label=\"Unlink Alice Example from alice\""), "{shown}");
    let r = post(
        &op,
        "/admin/users/fhir-user",
        &[("user_id", &user.id), ("fhir_user", "Observation/1")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post(
        &op,
        "/admin/users/link-patient",
        &[("user_id", &user.id), ("patient", "a/b"), ("display", "Bad")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let stored = app.state.store.user(&user.id).await.unwrap().unwrap();
    assert_eq!(stored.fhir_user.as_deref(), Some("Practitioner/9"));
    let r = post(
        &op,
        "/admin/users/unlink-patient",
        &[("user_id", &user.id), ("patient", "123")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(app.state.store.patient_links(&user.id).await.unwrap().is_empty());
    let linked = app.events_of("user.patient_linked").await;
    assert_eq!(linked[0].actor_user_id.as_deref(), Some(me.id.as_str()));
    // Without SMART, the users page says nothing of it.
    let plain = spawn_app().await;
    let (op, _) = operator(&plain, "olivia").await;
    assert!(!page(&op, "/admin/users").await.contains("fhirUser"));
}

/// `[audit]`: the retention job moves the events older than
/// `archive_after_days` to a segment, leaves the newer ones, and the chain
/// and the console's audit page go on from the checkpoint.
#[tokio::test]
async fn the_retention_job_archives_old_events_and_the_rest_goes_on() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path().join("audit");
    let app = spawn_app_with(|s| {
        s.audit.archive_after_days = std::num::NonZeroU32::new(1);
        s.audit.archive_dir = Some(dir.clone());
    })
    .await;
    app.signed_in("otto").await;
    let old: Vec<String> = app.all_events().await.into_iter().map(|e| e.id).collect();
    assert!(!old.is_empty());
    app.clock.advance(2 * 86_400);
    let advanced = app.clock.now();
    let (op, _) = operator(&app, "olga").await;

    let job = healthgate_server::jobs::archive::spawn(app.state.clone()).expect("[audit] is set");
    // Until the pass has written its checkpoint and deleted what it
    // archived (the server's own job, started with the app, may be the one
    // that does it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let checkpoint = loop {
        let checkpoint = app.state.store.checkpoints().await.unwrap().pop();
        let old_left = app
            .all_events()
            .await
            .iter()
            .any(|e| old.contains(&e.id));
        if let (Some(cp), false) = (checkpoint, old_left) {
            break cp;
        }
        assert!(std::time::Instant::now() < deadline, "the old events are still there");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    job.abort();
    assert!(checkpoint.events >= old.len() as i64, "{checkpoint:?}");
    assert!(dir.join(&checkpoint.segment).exists());
    let report = healthgate_store::verify_archive(&dir, std::slice::from_ref(&checkpoint)).unwrap();
    assert_eq!(report.broken, None);
    // What is left is what came after the clock moved (other work of the
    // app may add events meanwhile): none of the archived ones.
    let left = app.all_events().await;
    assert!(!left.is_empty());
    for e in &left {
        assert!(e.at >= advanced, "{} at {} was not archived", e.kind, e.at);
        assert!(!old.contains(&e.id), "{} was not archived", e.kind);
    }
    app.state.store.seal_events(1000).await.unwrap();
    let chain = app.state.store.verify_chain().await.unwrap();
    assert_eq!(chain.archived_through, checkpoint.through_pos);
    assert_eq!(chain.broken, None);
    // The console still pages what is left, filtered by kind.
    let audit = page(&op, "/admin/audit?kind=login.succeeded").await;
    assert!(audit.contains("login.succeeded"), "{audit}");
}
