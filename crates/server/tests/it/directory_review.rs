//! The integration directory's review (issue 13, item 6) over HTTP: an app
//! asking to be listed is in no practice's directory until an operator
//! approves it in the console; a rejection's reason reaches the developer;
//! changing a listed app's name, scopes or connect URL sends it back; an
//! operator unlists, a developer withdraws; every move is audited; and the
//! forms refuse strangers, forged requests and bad input, changing nothing.

use healthgate_core::org::{Organization, OrganizationKind};
use healthgate_core::user::User;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;
use super::portal::{app_form, csrf_of, element_text, register_in_portal};

const CONNECT: &str = "https://partner.example/connect?code=";

/// A practice with a signed-in admin.
async fn practice(app: &TestApp) -> (Organization, Browser) {
    let org = admin::create_organization(
        &app.state.store,
        app.clock.as_ref(),
        "Maple Practice",
        OrganizationKind::Practice,
    )
    .await
    .unwrap();
    app.user("maple-admin", UserType::Member).await;
    admin::add_member(&app.state.store, &app.state.settings, app.clock.as_ref(), &org.id, "maple-admin", "admin")
        .await
        .unwrap();
    let b = app.browser();
    b.login("maple-admin", PASSWORD).await;
    (org, b)
}

/// A browser signed in as a new operator `username`.
async fn operator(app: &TestApp, username: &str) -> (Browser, User) {
    let (b, u) = app.signed_in(username).await;
    app.state.store.set_operator(&u.id, true, Actor::system(), app.clock.now()).await.unwrap();
    (b, u)
}

/// A developer `username` (with a name and an email) signed in, and the app
/// they registered in the portal asking to be listed: its id.
async fn developer_with_request(app: &TestApp, username: &str, name: &str) -> (Browser, User, String) {
    let b = app.browser();
    let csrf = csrf_of(&b, "/developers/signup").await;
    let signup = [
        ("csrf_token", csrf.as_str()),
        ("username", username),
        ("name", "Devon Partner"),
        ("email", "devon@partner.example"),
        ("password", PASSWORD),
        ("password_confirmation", PASSWORD),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(b.post_form("/developers/signup", &signup).await.status(), StatusCode::SEE_OTHER);
    let dev = app.state.store.user_by_username(username).await.unwrap().unwrap();
    let mut form = app_form(name);
    form.push(("connect_url".into(), CONNECT.into()));
    form.push(("published".into(), "1".into()));
    form.push(("webhook_url".into(), "http://127.0.0.1:9/hook".into()));
    let (id, _) = register_in_portal(&b, form).await;
    (b, dev, id)
}

/// The HTML of the element `id="app-{client_id}"` on `page`, up to the end
/// of its card or row.
fn card<'a>(page: &'a str, client_id: &str) -> Option<&'a str> {
    let start = page.find(&format!("id=\"app-{client_id}\""))?;
    let rest = &page[start..];
    // A card holds lists of its own: it ends where the next card, the row
    // or the section does.
    let end = ["<li class=\"app-card", "</tr>", "</section>"]
        .iter()
        .filter_map(|end| rest.find(end))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The directory's cards, by app id, as the practice admin sees them.
async fn in_directory(b: &Browser, org: &Organization, client_id: &str) -> bool {
    let r = b.get(&format!("/integrations?org={}", org.id)).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap().contains(&format!("id=\"app-{client_id}\""))
}

/// Sends a console form with the session's CSRF token.
async fn post(b: &Browser, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("csrf_token".to_owned(), csrf_of(b, "/admin/organizations").await)];
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    b.post_form(path, &form).await
}

/// Clicks Approve on the directory page for `client_id`, as the page has it.
async fn approve(op: &Browser, client_id: &str) -> reqwest::Response {
    let page = op.get("/admin/directory").await.text().await.unwrap();
    let fields = hidden_inputs(card(&page, client_id).expect("the request's card"));
    post(op, "/admin/directory/approve", &[("client_id", client_id), ("reviewed", &fields["reviewed"])]).await
}

/// The status message of a console page.
fn notice(page: &str) -> Option<String> {
    let start = "<p class=\"notice\" role=\"status\">";
    let i = page.find(start)? + start.len();
    let end = page[i..].find("</p>")?;
    Some(unescape_html(&page[i..i + end]))
}

/// What the app's page in the portal says of its listing.
async fn listing_said(dev: &Browser, client_id: &str) -> (String, Option<String>) {
    let page = dev.get(&format!("/developers/apps/{client_id}")).await.text().await.unwrap();
    (element_text(&page, "listing").expect("the listing line"), element_text(&page, "listing-reason"))
}

fn data(e: &healthgate_store::StoredEvent) -> Value {
    serde_json::from_str(e.data.as_deref().unwrap_or("null")).unwrap()
}

#[tokio::test]
async fn a_strangers_app_is_in_no_directory_until_an_operator_approves_it() {
    let app = spawn_app_with(|s| s.allow_http_webhooks = true).await;
    let (org, admin_b) = practice(&app).await;
    let (dev_b, dev, id) = developer_with_request(&app, "devon", "Sunrise Sync").await;

    // Asked, not listed: not in the directory, and Connect is refused both
    // at its confirmation page and at its form.
    assert!(!in_directory(&admin_b, &org, &id).await);
    let r = admin_b.get(&format!("/integrations/connect?org={}&client_id={id}&mode=redirect", org.id)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let csrf = csrf_of(&admin_b, &format!("/integrations?org={}", org.id)).await;
    let r = admin_b
        .post_form(
            "/integrations/connect",
            &[("csrf_token", csrf.as_str()), ("org", &org.id), ("client_id", &id), ("mode", "redirect")]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(app.state.store.integrations_of_client(&id).await.unwrap().is_empty());
    let (said, _) = listing_said(&dev_b, &id).await;
    assert!(said.starts_with("Waiting for review since"), "{said}");
    let requested = app.events_of("client.listing_requested").await;
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0].actor_user_id.as_deref(), Some(dev.id.as_str()));
    assert_eq!(requested[0].client_id.as_deref(), Some(id.as_str()));

    // The operator sees the request with what it takes to judge it (and
    // not the apps that did not ask).
    let quiet = app.confidential().await;
    let (op, olivia) = operator(&app, "olivia").await;
    // The console's home page counts it, linking to the review.
    let home = op.get("/admin").await.text().await.unwrap();
    let tile = &home[home.find("id=\"listing-requests\"").expect("the tile")..];
    assert!(
        tile[..tile.find("</a>").unwrap()].contains("<span class=\"count\">1</span> directory request to review"),
        "{tile}"
    );
    let page = readable(op.get("/admin/directory").await.text().await.unwrap());
    let shown = unescape_html(card(&page, &id).expect("the request is listed"));
    for expected in [
        "Sunrise Sync",
        "Scheduling for practices",
        "Devon Partner (devon)",
        "devon@partner.example",
        "Read your profile",
        "profile_read",
        "Confirm who you are",
        "https://partner.example/callback",
        "http://127.0.0.1:7777/cb",
        CONNECT,
        "Approve",
        "Reject…",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }
    assert!(card(&page, quiet.id()).is_none());

    // Approved: listed for every practice, and the developer reads so.
    let r = approve(&op, &id).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = op.follow(r).await.text().await.unwrap();
    assert!(notice(&back).unwrap().starts_with("Sunrise Sync is listed in the integration directory"));
    assert!(in_directory(&admin_b, &org, &id).await);
    let (said, _) = listing_said(&dev_b, &id).await;
    assert!(said.starts_with("Listed in the integration directory since"), "{said}");
    let approved = app.events_of("client.listing_approved").await;
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].actor_user_id.as_deref(), Some(olivia.id.as_str()));
    assert_eq!(approved[0].ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(data(&approved[0])["name"], "Sunrise Sync");
    let stored = app.state.store.client(&id).await.unwrap().unwrap();
    assert_eq!(stored.listing.reviewed_by.as_deref(), Some(olivia.id.as_str()));
    // The partner's webhook hears of it.
    let queued: Vec<String> = app
        .state
        .store
        .deliveries(Some(&id), 20)
        .await
        .unwrap()
        .iter()
        .map(|d| serde_json::from_str::<Value>(&d.payload).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued, ["client.listing_approved"], "the request itself is not pushed");
    // Approving again is said, and writes nothing.
    let r = post(&op, "/admin/directory/approve", &[("client_id", &id), ("reviewed", "x")]).await;
    assert!(location(&r).contains("done=already-approved"), "{}", location(&r));
    assert_eq!(app.events_of("client.listing_approved").await.len(), 1);
    // The console's app list says where it stands.
    let apps = op.get("/admin/apps").await.text().await.unwrap();
    assert!(card(&apps, &id).unwrap().contains("in the directory"));
}

#[tokio::test]
async fn a_rejection_tells_the_developer_why_and_lists_nothing() {
    let app = spawn_app_with(|s| s.allow_http_webhooks = true).await;
    let (org, admin_b) = practice(&app).await;
    let (dev_b, _, id) = developer_with_request(&app, "devon", "Sunrise Sync").await;
    let (op, olivia) = operator(&app, "olivia").await;

    // Reject asks first, for a reason; Cancel goes back to the directory.
    let page = op.get(&format!("/admin/directory/reject?client_id={id}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = unescape_html(&page.text().await.unwrap());
    assert!(page.contains("Reject Sunrise Sync's request to be listed?"), "{page}");
    assert!(page.contains("<label for=\"reason\">"));
    assert!(page.contains(&format!("href=\"/admin/directory#app-{id}\">Cancel</a>")));
    assert_eq!(hidden_inputs(&page)["client_id"], id);

    // Without a reason, or with one too long, nothing happens.
    let long = "x".repeat(201);
    for (reason, said) in [
        ("", "Say why the request is rejected"),
        ("   ", "Say why the request is rejected"),
        (long.as_str(), "Keep the reason to 200 characters or fewer."),
    ] {
        let r = post(&op, "/admin/directory/reject", &[("client_id", &id), ("reason", reason)]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{reason:?}");
        let page = r.text().await.unwrap();
        let start = page.find("id=\"reason-error\">").expect("the field's message") + "id=\"reason-error\">".len();
        let message = unescape_html(&page[start..start + page[start..].find("</p>").unwrap()]);
        assert!(message.starts_with(said), "{reason:?}: {message}");
    }
    // An unknown app is said to be unknown.
    let r = post(&op, "/admin/directory/reject", &[("client_id", "app-nothing"), ("reason", "no")]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(op.get("/admin/directory/reject?client_id=app-nothing").await.status(), StatusCode::NOT_FOUND);
    let stored = app.state.store.client(&id).await.unwrap().unwrap();
    assert_eq!(stored.listing.state, healthgate_core::listing::ListingState::Requested);
    assert!(app.events_of("client.listing_rejected").await.is_empty());

    let r = post(
        &op,
        "/admin/directory/reject",
        &[("client_id", &id), ("reason", " The connect page answers 404; fix it and ask again. ")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = op.follow(r).await.text().await.unwrap();
    assert!(notice(&back).unwrap().starts_with("Sunrise Sync's request is rejected"));
    let rejected_row = unescape_html(card(&back, &id).expect("a rejected row"));
    assert!(rejected_row.contains("The connect page answers 404"), "{rejected_row}");
    assert!(!in_directory(&admin_b, &org, &id).await);

    // The developer reads the reason on the app's page.
    let (said, reason) = listing_said(&dev_b, &id).await;
    assert!(said.starts_with("The platform's operators declined to list it"), "{said}");
    assert_eq!(reason.as_deref(), Some("The connect page answers 404; fix it and ask again."));
    let events = app.events_of("client.listing_rejected").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor_user_id.as_deref(), Some(olivia.id.as_str()));
    assert_eq!(data(&events[0]), json!({"reason": "The connect page answers 404; fix it and ask again."}));
    // … and its webhook receives it.
    let deliveries = app.state.store.deliveries(Some(&id), 20).await.unwrap();
    assert!(deliveries.iter().any(|d| d.payload.contains("client.listing_rejected") && d.payload.contains("answers 404")));
    // A rejected request cannot be approved; the page says why (409).
    let r = post(&op, "/admin/directory/approve", &[("client_id", &id), ("reviewed", "x")]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(unescape_html(&r.text().await.unwrap()).contains("The app is not waiting for review: it is rejected."));

    // Asking again from the app's page: back in the queue, the old reason gone.
    let csrf = csrf_of(&dev_b, &format!("/developers/apps/{id}")).await;
    let r = dev_b
        .post_form(&format!("/developers/apps/{id}/listing"), &[("csrf_token".into(), csrf), ("listing".into(), "request".into())])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (said, reason) = listing_said(&dev_b, &id).await;
    assert!(said.starts_with("Waiting for review since"), "{said}");
    assert_eq!(reason, None);
    assert_eq!(app.events_of("client.listing_requested").await.len(), 2);
}

#[tokio::test]
async fn changing_a_listed_apps_name_scopes_or_connect_url_sends_it_back_for_review() {
    let app = spawn_app_with(|s| s.allow_http_webhooks = true).await;
    let (org, admin_b) = practice(&app).await;
    let (dev_b, _, id) = developer_with_request(&app, "devon", "Sunrise Sync").await;
    let (op, _) = operator(&app, "olivia").await;
    assert_eq!(approve(&op, &id).await.status(), StatusCode::SEE_OTHER);
    let edit = format!("/developers/apps/{id}/edit");
    let save = |changes: Vec<(&'static str, String)>| {
        let dev_b = &dev_b;
        let edit = edit.clone();
        async move {
            let mut fields = vec![("csrf_token".to_owned(), csrf_of(dev_b, &edit).await)];
            let mut form = app_form("Sunrise Sync");
            form.push(("connect_url".into(), CONNECT.into()));
            form.push(("published".into(), "1".into()));
            for (k, v) in changes {
                form.retain(|(name, _)| name != k);
                form.push((k.to_owned(), v));
            }
            fields.extend(form);
            let r = dev_b.post_form(&edit, &fields).await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
        }
    };
    // The edit form says what a change does.
    let form = unescape_html(&dev_b.get(&edit).await.text().await.unwrap());
    assert!(form.contains("changing its name, scopes or connect URL sends it back for review"));

    // A new description, or redirect URIs: it stays listed.
    save(vec![("description", "Now with reminders".into())]).await;
    save(vec![("redirect_uris", "https://partner.example/callback".into())]).await;
    assert!(in_directory(&admin_b, &org, &id).await);
    assert!(app.events_of("client.listing_requested").await.len() == 1);

    // Each change is kept by the next save.
    let mut kept: Vec<(&'static str, String)> = Vec::new();
    for (field, changes, label) in [
        ("name", vec![("name", "Sunrise Sync Pro".to_owned())], "name"),
        ("scope", vec![("scope", "profile_write".to_owned())], "scopes"),
        ("connect_url", vec![("connect_url", "https://elsewhere.example/connect?code=".to_owned())], "connect URL"),
    ] {
        let before = app.events_of("client.listing_requested").await.len();
        kept.extend(changes);
        save(kept.clone()).await;
        // Out of the directory, back in the operators' queue, and the
        // developer reads why.
        assert!(!in_directory(&admin_b, &org, &id).await, "{field}");
        let (said, _) = listing_said(&dev_b, &id).await;
        assert!(said.starts_with("Back under review since"), "{field}: {said}");
        assert!(said.contains(&format!("after a change of its {label}")), "{field}: {said}");
        let events = app.events_of("client.listing_requested").await;
        assert_eq!(events.len(), before + 1, "{field}");
        assert_eq!(data(&events[0]), json!({"changed": [field]}), "{field}");
        let page = op.get("/admin/directory").await.text().await.unwrap();
        let shown = unescape_html(card(&page, &id).unwrap());
        assert!(shown.contains(&format!("Back for review after a change of its {label}")), "{field}: {shown}");
        // Listed again once approved.
        assert_eq!(approve(&op, &id).await.status(), StatusCode::SEE_OTHER);
        assert!(in_directory(&admin_b, &org, &id).await, "{field}");
    }
    assert_eq!(app.events_of("client.listing_approved").await.len(), 4);
}

#[tokio::test]
async fn an_operator_unlists_an_app_and_a_developer_withdraws_theirs() {
    let app = spawn_app_with(|s| s.allow_http_webhooks = true).await;
    let (org, admin_b) = practice(&app).await;
    let (dev_b, dev, id) = developer_with_request(&app, "devon", "Sunrise Sync").await;
    let (op, olivia) = operator(&app, "olivia").await;
    approve(&op, &id).await;
    // The practice connects it and holds a key.
    let secret = {
        let r = dev_b.get(&format!("/developers/apps/{id}/secret")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let csrf = csrf_of(&dev_b, &format!("/developers/apps/{id}/secret")).await;
        let r = dev_b.post_form(&format!("/developers/apps/{id}/secret"), &[("csrf_token".into(), csrf)]).await;
        let page = dev_b.follow(r).await.text().await.unwrap();
        element_text(&page, "app-secret").unwrap()
    };
    let csrf = csrf_of(&admin_b, &format!("/integrations?org={}", org.id)).await;
    let r = admin_b
        .post_form(
            "/integrations/connect",
            &[("csrf_token", csrf.as_str()), ("org", &org.id), ("client_id", &id), ("mode", "redirect")]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .await;
    let code = location(&r).strip_prefix(CONNECT).unwrap().to_owned();
    let r = app.http().post(app.url("/api/oauth/tokens")).basic_auth(&id, Some(&secret)).json(&json!({"code": code})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let key = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();

    // Unlist asks first, for a reason; without one nothing changes.
    let page = op.get(&format!("/admin/directory/unlist?client_id={id}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(unescape_html(&page.text().await.unwrap()).contains("Take Sunrise Sync out of the directory?"));
    let r = post(&op, "/admin/directory/unlist", &[("client_id", &id), ("reason", "")]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(in_directory(&admin_b, &org, &id).await);
    let r = post(&op, "/admin/directory/unlist", &[("client_id", &id), ("reason", "Practices report failed syncs")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = op.follow(r).await.text().await.unwrap();
    assert!(notice(&back).unwrap().contains("Practices connected to it stay connected"));
    let unlisted = app.events_of("client.unlisted").await;
    assert_eq!(unlisted.len(), 1);
    assert_eq!(unlisted[0].actor_user_id.as_deref(), Some(olivia.id.as_str()));
    assert_eq!(data(&unlisted[0]), json!({"reason": "Practices report failed syncs"}));
    // Out of the directory for new connections; the connected practice
    // still sees it, to disconnect it, and its key still works.
    let page = admin_b.get(&format!("/integrations?org={}", org.id)).await.text().await.unwrap();
    let shown = unescape_html(card(&page, &id).unwrap());
    assert!(shown.contains("No longer listed in the directory"), "{shown}");
    assert!(!shown.contains("value=\"redirect\""), "{shown}");
    assert!(shown.contains("Disconnect"), "{shown}");
    let r = app.http().get(app.url("/api/v1/practice")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = admin_b.get(&format!("/integrations/connect?org={}&client_id={id}", org.id)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A second practice does not see it at all.
    let other = admin::create_organization(&app.state.store, app.clock.as_ref(), "Oak Clinic", OrganizationKind::Clinic)
        .await
        .unwrap();
    admin::add_member(&app.state.store, &app.state.settings, app.clock.as_ref(), &other.id, "maple-admin", "admin")
        .await
        .unwrap();
    assert!(!in_directory(&admin_b, &other, &id).await);
    // The developer reads why; unlisting what is not listed is refused.
    let (said, reason) = listing_said(&dev_b, &id).await;
    assert!(said.starts_with("The platform's operators took it out of the integration directory"), "{said}");
    assert_eq!(reason.as_deref(), Some("Practices report failed syncs"));
    let r = post(&op, "/admin/directory/unlist", &[("client_id", &id), ("reason", "again")]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(app.events_of("client.unlisted").await.len(), 1);

    // The developer asks again, then withdraws; and takes a listed app out.
    let listing = |action: &'static str| {
        let dev_b = &dev_b;
        let id = id.clone();
        async move {
            let csrf = csrf_of(dev_b, &format!("/developers/apps/{id}")).await;
            dev_b
                .post_form(&format!("/developers/apps/{id}/listing"), &[("csrf_token".into(), csrf), ("listing".into(), action.into())])
                .await
        }
    };
    assert_eq!(listing("request").await.status(), StatusCode::SEE_OTHER);
    let r = listing("withdraw").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = dev_b.follow(r).await.text().await.unwrap();
    assert!(page.contains("The app is not listed, and no longer asks to be."));
    let page = op.get("/admin/directory").await.text().await.unwrap();
    assert!(card(&page, &id).is_none(), "withdrawn: no longer waiting");
    listing("request").await;
    approve(&op, &id).await;
    assert!(in_directory(&admin_b, &other, &id).await);
    let (said, _) = listing_said(&dev_b, &id).await;
    assert!(said.starts_with("Listed"), "{said}");
    listing("withdraw").await;
    assert!(!in_directory(&admin_b, &other, &id).await);
    let withdrawn = app.events_of("client.listing_withdrawn").await;
    assert_eq!(withdrawn.len(), 2);
    assert!(withdrawn.iter().all(|e| e.actor_user_id.as_deref() == Some(dev.id.as_str())));
    assert_eq!(data(&withdrawn[0]), json!({"was": "approved"}));
    assert_eq!(data(&withdrawn[1]), json!({"was": "requested"}));
    // Nothing else is accepted from the page's buttons.
    assert_eq!(listing("approve").await.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_review_refuses_strangers_forged_forms_stale_pages_and_bad_input() {
    let app = spawn_app_with(|s| s.allow_http_webhooks = true).await;
    let (dev_b, _, id) = developer_with_request(&app, "devon", "Sunrise Sync").await;
    let (op, _) = operator(&app, "olivia").await;
    let before = app.all_events().await.len();

    // A signed-in person who is not an operator: 403, page and forms alike.
    let (mallory, _) = app.signed_in("mallory").await;
    for path in ["/admin/directory", &format!("/admin/directory/reject?client_id={id}"), &format!("/admin/directory/unlist?client_id={id}")] {
        assert_eq!(mallory.get(path).await.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let token = hidden_inputs(&mallory.get("/").await.text().await.unwrap())["csrf_token"].clone();
    for (path, extra) in [
        ("/admin/directory/approve", ("reviewed", "x")),
        ("/admin/directory/reject", ("reason", "no")),
        ("/admin/directory/unlist", ("reason", "no")),
    ] {
        let form = [("csrf_token", token.as_str()), ("client_id", &id), extra].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(mallory.post_form(path, &form).await.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // A visitor is sent to sign in.
    assert_eq!(app.browser().get("/admin/directory").await.status(), StatusCode::SEE_OTHER);
    // An operator's form without the session's token, or from another
    // origin, is refused.
    let page = op.get("/admin/directory").await.text().await.unwrap();
    let fields = hidden_inputs(card(&page, &id).unwrap());
    let forged = [("csrf_token", "hg_csrf_wrong"), ("client_id", &id), ("reviewed", &fields["reviewed"])]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(op.post_form("/admin/directory/approve", &forged).await.status(), StatusCode::FORBIDDEN);
    let mut good = forged.clone();
    good[0].1 = csrf_of(&op, "/admin/organizations").await;
    let r = op
        .http
        .post(format!("{}/admin/directory/approve", op.base))
        .header("Origin", "https://evil.example")
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The developer's listing button, forged or on another's app.
    let r = dev_b
        .post_form(&format!("/developers/apps/{id}/listing"), &[("csrf_token".into(), "hg_csrf_wrong".into()), ("listing".into(), "withdraw".into())])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let csrf = csrf_of(&mallory, "/developers/apps/new").await;
    let r = mallory
        .post_form(&format!("/developers/apps/{id}/listing"), &[("csrf_token".into(), csrf), ("listing".into(), "withdraw".into())])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A page opened before the app changed approves nothing: the operator
    // is sent back to review it again.
    let stale = fields["reviewed"].clone();
    let edit = format!("/developers/apps/{id}/edit");
    let mut form = vec![("csrf_token".to_owned(), csrf_of(&dev_b, &edit).await)];
    form.extend(app_form("Sunrise Sync"));
    form.push(("connect_url".into(), CONNECT.into()));
    form.push(("published".into(), "1".into()));
    form.retain(|(k, _)| k != "description");
    form.push(("description".into(), "Now it also reads your payments".into()));
    assert_eq!(dev_b.post_form(&edit, &form).await.status(), StatusCode::SEE_OTHER);
    let r = post(&op, "/admin/directory/approve", &[("client_id", &id), ("reviewed", &stale)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = op.follow(r).await.text().await.unwrap();
    assert!(notice(&back).unwrap().contains("changed since you opened this page"), "{back}");
    assert_eq!(app.state.store.client(&id).await.unwrap().unwrap().listing.state, healthgate_core::listing::ListingState::Requested);

    // Bad input: each a clear answer, none writes anything.
    let quiet = app.confidential().await;
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        ("/admin/directory/approve", vec![("client_id", "app-nothing"), ("reviewed", "x")], StatusCode::NOT_FOUND, "There is no app with this id"),
        ("/admin/directory/approve", vec![("client_id", quiet.id()), ("reviewed", "x")], StatusCode::CONFLICT, "The app is not waiting for review: it is not listed."),
        ("/admin/directory/approve", vec![("client_id", &id)], StatusCode::BAD_REQUEST, "Choose what was reviewed."),
        ("/admin/directory/reject", vec![("reason", "no")], StatusCode::BAD_REQUEST, "Choose the app."),
        ("/admin/directory/unlist", vec![("client_id", &id), ("reason", "Not listed yet")], StatusCode::CONFLICT, "The app is not listed in the directory: it is waiting for review."),
        ("/admin/directory/unlist", vec![("client_id", &id), ("reason", "line one\nline two")], StatusCode::BAD_REQUEST, "Keep the reason to one line."),
    ];
    let events = app.all_events().await.len();
    for (path, fields, status, said) in cases {
        let r = post(&op, path, &fields).await;
        assert_eq!(r.status(), status, "{path} {fields:?}");
        let body = unescape_html(&r.text().await.unwrap());
        assert!(body.contains(said), "{path} {fields:?}: {body}");
    }
    assert_eq!(app.all_events().await.len(), events, "nothing was written");
    assert!(app.all_events().await.len() > before);
}
