//! The account area around `/account/apps`: the overview, the profile (name,
//! email, password change), the organizations a person belongs to, and the
//! browsers signed in as them, over real HTTP with cookie-keeping clients.

use healthgate_core::org::{Organization, OrganizationKind};
use healthgate_core::secret::{SecretKind, mint, new_id};
use healthgate_core::user::{User, UserType};
use healthgate_server::services::admin;
use healthgate_store::{Session, StoredEvent};
use reqwest::StatusCode;

use super::*;

const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const FIREFOX_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

const PAGES: [&str; 5] = [
    "/account",
    "/account/profile",
    "/account/apps",
    "/account/organizations",
    "/account/sessions",
];

const FORMS: [&str; 6] = [
    "/account/profile",
    "/account/profile/password",
    "/account/apps/revoke",
    "/account/sessions/end",
    "/account/sessions/end-others",
    "/account/sessions/end-all",
];

/// A browser that says it is `user_agent`.
fn browser_as(app: &TestApp, user_agent: &str) -> Browser {
    Browser {
        base: app.base.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .user_agent(user_agent)
            .build()
            .unwrap(),
    }
}

/// A browser (as `user_agent`) signed in as `username`.
async fn signed_in_as(app: &TestApp, username: &str, user_agent: &str) -> Browser {
    let b = browser_as(app, user_agent);
    let r = b.login(username, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{username} signs in");
    b
}

/// A page the browser must see (200).
async fn page(browser: &Browser, path: &str) -> String {
    let r = browser.get(path).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    readable(r.text().await.unwrap())
}

/// Whether the browser is still signed in (its account page shows, rather
/// than a redirect to sign in).
async fn signed_in(browser: &Browser) -> bool {
    let r = browser.get("/account").await;
    match r.status() {
        StatusCode::OK => true,
        StatusCode::SEE_OTHER => {
            assert!(location(&r).starts_with("/login?"));
            false
        }
        other => panic!("GET /account: {other}"),
    }
}

/// Submits a form of `path` (its page at `from`) the way the page does: the
/// session's CSRF token plus `fields`.
async fn submit(
    browser: &Browser,
    from: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let csrf = hidden_inputs(&page(browser, from).await)["csrf_token"].clone();
    let mut form = vec![("csrf_token".to_owned(), csrf)];
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    browser.post_form(path, &form).await
}

async fn events_of(app: &TestApp, kind: &str) -> Vec<StoredEvent> {
    app.state
        .store
        .events(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

fn data_of(e: &StoredEvent) -> serde_json::Value {
    serde_json::from_str(e.data.as_deref().unwrap()).unwrap()
}

async fn stored_user(app: &TestApp, id: &str) -> User {
    app.state.store.user(id).await.unwrap().unwrap()
}

/// The session handles a sessions page offers to sign out.
fn handles(page: &str) -> Vec<String> {
    hidden_input_list(page)
        .into_iter()
        .filter(|(k, _)| k == "session")
        .map(|(_, v)| v)
        .collect()
}

/// The field's message is next to it, tied to the input for screen readers.
fn shows_error(page: &str, field: &str, message: &str) -> bool {
    page.contains(&format!(
        "aria-invalid=\"true\" aria-describedby=\"{field}-error\""
    )) && page.contains(&format!(
        "<p class=\"field-error\" id=\"{field}-error\">{message}</p>"
    ))
}

#[tokio::test]
async fn every_account_page_sends_a_signed_out_visitor_to_sign_in_and_back() {
    let app = spawn_app().await;
    let stranger = app.browser();
    for path in PAGES {
        let r = stranger.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        let to = location(&r);
        assert!(to.starts_with("/login?"), "{path}: {to}");
        assert_eq!(query_of(&to)["return_to"], path);
    }
    // Signing in from there comes back to the page.
    app.user("alice", UserType::Member).await;
    let login = stranger
        .get("/login?return_to=/account/sessions")
        .await
        .text()
        .await
        .unwrap();
    let mut form = hidden_input_list(&login);
    form.push(("username".into(), "alice".into()));
    form.push(("password".into(), PASSWORD.into()));
    let r = stranger.post_form("/login", &form).await;
    assert_eq!(location(&r), "/account/sessions");
    // Without a session, no form does anything.
    for path in FORMS {
        let r = app
            .browser()
            .post_form(path, &[("csrf_token".into(), "hg_csrf_x".into())])
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "POST {path}");
    }
}

/// A locked account is refused the same way on every page and form, even
/// with a session it had before: pages send it to sign in, forms are
/// refused, the console too; unlocked, the same session works again.
#[tokio::test]
async fn a_locked_account_is_refused_alike_everywhere() {
    let app = spawn_app().await;
    let (browser, alice) = app.signed_in("alice").await;
    app.state
        .store
        .set_operator(&alice.id, true, Actor::system(), app.clock.now())
        .await
        .unwrap();
    let csrf = hidden_inputs(&page(&browser, "/account/sessions").await)["csrf_token"].clone();
    app.state
        .store
        .lock_user_by(&alice.id, Actor::system(), app.clock.now())
        .await
        .unwrap();
    for path in PAGES.iter().copied().chain(["/admin", "/admin/users", "/developers/apps/new"]) {
        let r = browser.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&r).starts_with("/login?"), "{path}");
    }
    for path in FORMS.iter().copied().chain(["/admin/users/lock", "/admin/organizations"]) {
        let r = browser
            .post_form(path, &[("csrf_token".into(), csrf.clone())])
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "POST {path}");
    }
}

#[tokio::test]
async fn the_overview_says_who_the_person_is_and_every_page_carries_the_account_navigation() {
    let app = spawn_app().await;
    let (alice, user) = app.signed_in("alice").await;
    let overview = page(&alice, "/account").await;
    assert!(overview.contains("Your account"));
    assert!(overview.contains("<dd>alice</dd>"));
    assert!(overview.contains("alice@example.org"));
    assert!(overview.contains("<dd>Member</dd>"));
    let since = healthgate_server::http::pages::format_utc(user.created_at);
    assert!(overview.contains(&since), "member since {since}");
    assert!(overview.contains("No apps can use your account."));
    assert!(overview.contains("You do not belong to any organization."));
    assert!(overview.contains("Signed in on 1 browser."));

    for path in PAGES {
        let html = page(&alice, path).await;
        assert!(
            html.contains("<nav class=\"account-nav\" aria-label=\"Your account\">"),
            "{path} has the account navigation"
        );
        for (href, label) in [
            ("/account/profile", "Profile"),
            ("/account/apps", "Connected apps"),
            ("/account/organizations", "Organizations"),
            ("/account/sessions", "Sessions"),
        ] {
            assert!(
                html.contains(&format!("<a href=\"{href}\"")) && html.contains(label),
                "{path} links {href}"
            );
        }
        assert!(
            html.contains(&format!("<a href=\"{path}\" aria-current=\"page\">")),
            "{path} marks itself as the current page"
        );
        assert_eq!(
            html.matches("aria-current=\"page\"").count(),
            1,
            "{path}: one current page"
        );
    }
}

#[tokio::test]
async fn a_person_edits_their_display_name_and_email_and_the_change_is_audited() {
    let app = spawn_app().await;
    let (alice, user) = app.signed_in("alice").await;
    let profile = page(&alice, "/account/profile").await;
    assert!(profile.contains("<dd>alice</dd>") && profile.contains("<dd>Member</dd>"));
    assert!(profile.contains("value=\"alice@example.org\""));

    let r = submit(
        &alice,
        "/account/profile",
        "/account/profile",
        &[("name", "  Dr. Alice Example "), ("email", "alice@clinic.example")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert_eq!(back, "/account/profile?done=saved");
    let shown = page(&alice, &back).await;
    assert!(shown.contains("role=\"status\">Your profile was saved."));
    assert!(shown.contains("value=\"Dr. Alice Example\""), "trimmed");
    assert!(shown.contains("value=\"alice@clinic.example\""));
    let stored = stored_user(&app, &user.id).await;
    assert_eq!(stored.name.as_deref(), Some("Dr. Alice Example"));
    assert_eq!(stored.email.as_deref(), Some("alice@clinic.example"));
    assert!(page(&alice, "/account").await.contains("Dr. Alice Example"));

    let updated = events_of(&app, "user.updated").await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].actor_user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(updated[0].subject.as_deref(), Some(user.id.as_str()));
    assert!(updated[0].ip.is_some());
    assert_eq!(
        data_of(&updated[0]),
        serde_json::json!({"changed": ["name", "email"]})
    );

    // The same again: nothing changes, nothing is audited.
    let r = submit(
        &alice,
        "/account/profile",
        "/account/profile",
        &[("name", "Dr. Alice Example"), ("email", "alice@clinic.example")],
    )
    .await;
    assert_eq!(location(&r), "/account/profile?done=unchanged");
    assert_eq!(events_of(&app, "user.updated").await.len(), 1);

    // Blank fields clear them.
    let r = submit(
        &alice,
        "/account/profile",
        "/account/profile",
        &[("name", ""), ("email", " ")],
    )
    .await;
    assert_eq!(location(&r), "/account/profile?done=saved");
    let stored = stored_user(&app, &user.id).await;
    assert_eq!((stored.name, stored.email), (None, None));
    assert_eq!(events_of(&app, "user.updated").await.len(), 2);
}

#[tokio::test]
async fn each_profile_validation_error_is_shown_next_to_its_field_and_nothing_is_saved() {
    let app = spawn_app().await;
    let (alice, user) = app.signed_in("alice").await;
    let long_name = "N".repeat(201);
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "Alice",
            "not-an-email",
            "email",
            "Email must be an address such as name@example.org, without spaces.",
        ),
        (
            "Alice",
            "alice@@",
            "email",
            "Email must be an address such as name@example.org, without spaces.",
        ),
        (
            &long_name,
            "alice@example.org",
            "name",
            "Name must be at most 200 characters.",
        ),
        (
            "Alice\u{7}Bell",
            "alice@example.org",
            "name",
            "Name must not have surrounding spaces or control characters.",
        ),
    ];
    for (name, email, field, message) in cases {
        let r = submit(
            &alice,
            "/account/profile",
            "/account/profile",
            &[("name", name), ("email", email)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}: {email}");
        let html = r.text().await.unwrap();
        assert!(shows_error(&html, field, message), "{field}: {html}");
        let other = if field == "name" { "email" } else { "name" };
        assert!(
            !html.contains(&format!("id=\"{other}-error\"")),
            "only {field} is marked"
        );
        if field == "email" {
            assert!(
                html.contains(&format!("value=\"{email}\"")),
                "what was typed stays"
            );
        }
    }
    let stored = stored_user(&app, &user.id).await;
    assert_eq!(stored.name, None);
    assert_eq!(stored.email.as_deref(), Some("alice@example.org"));
    assert!(events_of(&app, "user.updated").await.is_empty());
}

#[tokio::test]
async fn a_wrong_current_password_is_refused_beside_its_field_and_audited_as_a_failure() {
    let app = spawn_app().await;
    let (alice, user) = app.signed_in("alice").await;
    let r = submit(
        &alice,
        "/account/profile",
        "/account/profile/password",
        &[
            ("current_password", "not my password"),
            ("new_password", "a much better secret"),
            ("new_password_confirmation", "a much better secret"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(
        shows_error(
            &html,
            "current_password",
            "That is not your current password, so it was not changed."
        ),
        "{html}"
    );
    assert!(!html.contains("a much better secret"), "passwords never echo");

    let failed = events_of(&app, "user.password_change_failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].outcome, "failure");
    assert_eq!(failed[0].actor_user_id.as_deref(), Some(user.id.as_str()));
    assert!(events_of(&app, "user.password_changed").await.is_empty());
    assert!(signed_in(&alice).await, "still signed in");
    let other = app.browser();
    assert_eq!(
        location(&other.login("alice", PASSWORD).await),
        "/",
        "the old password still works"
    );
}

#[tokio::test]
async fn a_weak_missing_or_mismatched_new_password_is_refused_beside_its_field() {
    let app = spawn_app().await;
    let (alice, _) = app.signed_in("alice").await;
    let cases = [
        (
            PASSWORD,
            "short",
            "short",
            "new_password",
            "Password must be at least 8 characters.",
        ),
        (
            PASSWORD,
            "Trustno1",
            "Trustno1",
            "new_password",
            "Password is one of the most common passwords and easy to guess, so choose another one.",
        ),
        (
            PASSWORD,
            "",
            "",
            "new_password",
            "Choose a new password.",
        ),
        (
            PASSWORD,
            "a much better secret",
            "a much better secrets",
            "new_password_confirmation",
            "The two new passwords are not the same.",
        ),
        (
            "",
            "a much better secret",
            "a much better secret",
            "current_password",
            "Enter your current password.",
        ),
    ];
    for (current, new, again, field, message) in cases {
        let r = submit(
            &alice,
            "/account/profile",
            "/account/profile/password",
            &[
                ("current_password", current),
                ("new_password", new),
                ("new_password_confirmation", again),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}");
        let html = r.text().await.unwrap();
        assert!(shows_error(&html, field, message), "{field}: {html}");
    }
    assert!(events_of(&app, "user.password_changed").await.is_empty());
    assert!(
        events_of(&app, "user.password_change_failed")
            .await
            .is_empty(),
        "the current password was right each time it was given"
    );
    assert_eq!(
        location(&app.browser().login("alice", PASSWORD).await),
        "/"
    );
}

#[tokio::test]
async fn a_password_change_signs_out_every_other_browser_and_keeps_this_one() {
    let app = spawn_app().await;
    let (here, user) = app.signed_in("alice").await;
    let elsewhere = signed_in_as(&app, "alice", FIREFOX_WINDOWS).await;
    let (bob, _) = app.signed_in("bob").await;
    let new = "a much better secret";

    let r = submit(
        &here,
        "/account/profile",
        "/account/profile/password",
        &[
            ("current_password", PASSWORD),
            ("new_password", new),
            ("new_password_confirmation", new),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers().get("set-cookie").is_some(),
        "a fresh session for this browser"
    );
    let back = location(&r);
    let shown = page(&here, &back).await;
    assert!(shown.contains("Your password was changed."), "{shown}");

    assert!(signed_in(&here).await, "this browser stays signed in");
    assert!(!signed_in(&elsewhere).await, "the other browser is signed out");
    assert!(signed_in(&bob).await, "nobody else is touched");

    let fresh = app.browser();
    assert_eq!(
        fresh.login("alice", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED,
        "the old password no longer works"
    );
    assert_eq!(location(&fresh.login("alice", new).await), "/");
    assert!(
        stored_user(&app, &user.id)
            .await
            .password_hash
            .unwrap()
            .starts_with("$argon2id$")
    );

    let changed = events_of(&app, "user.password_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].actor_user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(
        data_of(&changed[0]),
        serde_json::json!({"other_sessions_ended": 1})
    );
    // The fresh session and the new login are alice's only sessions.
    let sessions = app
        .state
        .store
        .sessions_of_user(&user.id, app.clock.now())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2);
}

#[tokio::test]
async fn an_account_without_a_password_is_told_it_has_none_to_change() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    let user = User {
        id: new_id("usr"),
        username: format!("{}/pat", partner.id()),
        name: None,
        email: None,
        user_type: UserType::Member,
        password_hash: None,
        created_at: app.clock.now(),
        locked_at: None,
        provisioned_by: Some(partner.id().to_owned()),
        operator: false,
        password_reset_at: None,
        email_verified_at: None,
        fhir_user: None,
    };
    app.state.store.insert_user(&user).await.unwrap();
    // Such an account cannot sign in here; give it a session directly.
    let secret = mint(SecretKind::Session);
    let csrf = mint(SecretKind::Csrf).value;
    let now = app.clock.now();
    app.state
        .store
        .replace_session(
            None,
            &Session {
                id_digest: secret.digest.clone(),
                user_id: Some(user.id.clone()),
                csrf_token: csrf.clone(),
                auth_time: Some(now),
                created_at: now,
                expires_at: now + 3600,
                user_agent: None,
                ip: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let cookie = format!("hg_session={}", secret.value);
    let r = app
        .http()
        .get(app.url("/account/profile"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("Your account has no password on healthgate: Partner App created it"));
    assert!(!html.contains("name=\"current_password\""), "no form");

    let r = app
        .http()
        .post(app.url("/account/profile/password"))
        .header("Cookie", &cookie)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("current_password", "anything at all"),
            ("new_password", "a much better secret"),
            ("new_password_confirmation", "a much better secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Your account has no password here, so there is none to change.")
    );
    assert_eq!(stored_user(&app, &user.id).await.password_hash, None);
    assert!(events_of(&app, "user.password_changed").await.is_empty());
}

async fn organization(app: &TestApp, name: &str, kind: OrganizationKind) -> Organization {
    admin::create_organization(&app.state.store, app.clock.as_ref(), name, kind)
        .await
        .unwrap()
}

async fn join(app: &TestApp, org: &Organization, username: &str, role: &str) {
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

/// The part of the organizations page about one organization.
fn section<'p>(page: &'p str, org: &Organization) -> &'p str {
    let start = page
        .find(&format!("id=\"org-{}\"", org.id))
        .unwrap_or_else(|| panic!("{} is listed", org.name));
    let rest = &page[start..];
    &rest[..rest[1..]
        .find("class=\"app-card\"")
        .map_or(rest.len(), |end| end + 1)]
}

#[tokio::test]
async fn the_organizations_page_shows_each_role_and_in_words_what_it_lets_apps_do() {
    let app = spawn_app().await;
    let (alice, _) = app.signed_in("alice").await;
    let clinic = organization(&app, "Northside Clinic", OrganizationKind::Clinic).await;
    let practice = organization(&app, "Hillview Practice", OrganizationKind::Practice).await;
    let other = organization(&app, "Elsewhere", OrganizationKind::Practice).await;
    join(&app, &clinic, "alice", "admin").await;
    join(&app, &practice, "alice", "staff").await;
    app.user("bob", UserType::Member).await;
    join(&app, &other, "bob", "admin").await;

    let html = page(&alice, "/account/organizations").await;
    assert!(!html.contains("Elsewhere"), "only her own organizations");

    let admin = section(&html, &clinic);
    assert!(admin.contains("Northside Clinic") && admin.contains("Clinic ·"));
    assert!(admin.contains("<strong class=\"role\">admin</strong>"));
    for (scope, words) in [
        ("pay", "Make payments on your behalf"),
        ("profile_read", "Read your profile"),
    ] {
        assert!(
            admin.contains(&format!("<span>{words}</span> <code>{scope}</code>")),
            "admin: {scope}"
        );
    }
    let integrations = format!("href=\"/integrations?org={}\"", clinic.id);
    assert!(admin.contains(&integrations), "{admin}");
    assert!(admin.contains(&format!("href=\"/account/apps#org-{}\"", clinic.id)));

    let staff = section(&html, &practice);
    assert!(staff.contains("Hillview Practice") && staff.contains("Practice ·"));
    assert!(staff.contains("<strong class=\"role\">staff</strong>"));
    assert!(staff.contains("<span>Read your profile</span>"));
    assert!(
        !staff.contains("Make payments on your behalf"),
        "staff may not grant pay (the default roles)"
    );
    assert!(!staff.contains("/integrations"), "no admin links for staff");

    // The admin link leads to that organization's integrations.
    let directory = page(&alice, &format!("/integrations?org={}", clinic.id)).await;
    assert!(directory.contains("Northside Clinic"));
    // And its section of the apps page is there to land on.
    assert!(
        page(&alice, "/account/apps")
            .await
            .contains(&format!("id=\"org-{}\"", clinic.id))
    );

    let (carol, _) = app.signed_in("carol").await;
    assert!(
        page(&carol, "/account/organizations")
            .await
            .contains("You do not belong to any organization.")
    );
}

#[tokio::test]
async fn two_browsers_of_a_person_see_each_other_on_the_sessions_page() {
    let app = spawn_app().await;
    app.user("alice", UserType::Member).await;
    let (bob, _) = app.signed_in("bob").await;
    let laptop = signed_in_as(&app, "alice", CHROME_LINUX).await;
    app.clock.advance(60);
    let phone = signed_in_as(&app, "alice", SAFARI_IPHONE).await;

    let seen_by_laptop = page(&laptop, "/account/sessions").await;
    assert!(seen_by_laptop.contains("Chrome on Linux"));
    assert!(seen_by_laptop.contains("Safari on iOS"));
    assert!(
        seen_by_laptop.contains(&format!("title=\"{}\"", CHROME_LINUX.replace('/', "&#x2f;")))
            || seen_by_laptop.contains(&format!("title=\"{CHROME_LINUX}\"")),
        "the full user agent is there too"
    );
    assert!(seen_by_laptop.contains("<code>127.0.0.1</code>"), "address");
    assert_eq!(seen_by_laptop.matches("This browser").count(), 1);
    let this = &seen_by_laptop[seen_by_laptop.find("This browser").unwrap() - 200..];
    assert!(
        seen_by_laptop.find("Chrome on Linux") < seen_by_laptop.find("Safari on iOS"),
        "this browser comes first"
    );
    assert!(this.contains("Chrome on Linux"), "the laptop is this browser");
    let started = healthgate_server::http::pages::format_utc(app.clock.now() - 60);
    let expires =
        healthgate_server::http::pages::format_utc(app.clock.now() - 60 + app.state.settings.session_ttl.secs());
    assert!(seen_by_laptop.contains(&started) && seen_by_laptop.contains(&expires));
    assert_eq!(handles(&seen_by_laptop).len(), 1, "only the other one has Sign out");
    assert!(!seen_by_laptop.contains("hg_ss_"), "never a cookie value");

    let seen_by_phone = page(&phone, "/account/sessions").await;
    let this = &seen_by_phone[seen_by_phone.find("This browser").unwrap() - 200..];
    assert!(this.contains("Safari on iOS"));
    assert!(!seen_by_laptop.contains("bob") && !page(&bob, "/account/sessions").await.contains("Safari"));
    assert!(page(&laptop, "/account").await.contains("Signed in on 2 browsers."));
}

#[tokio::test]
async fn signing_out_one_other_session_ends_that_one_only() {
    let app = spawn_app().await;
    let user = app.user("alice", UserType::Member).await;
    let laptop = signed_in_as(&app, "alice", CHROME_LINUX).await;
    let phone = signed_in_as(&app, "alice", SAFARI_IPHONE).await;
    let desktop = signed_in_as(&app, "alice", FIREFOX_WINDOWS).await;

    let html = page(&laptop, "/account/sessions").await;
    let phone_handle = {
        let at = html.find("Safari on iOS").unwrap();
        handles(&html[at..])[0].clone()
    };
    let r = submit(
        &laptop,
        "/account/sessions",
        "/account/sessions/end",
        &[("session", &phone_handle)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert!(
        page(&laptop, &back)
            .await
            .contains("That browser was signed out.")
    );
    assert!(!signed_in(&phone).await);
    assert!(signed_in(&laptop).await && signed_in(&desktop).await);
    let after = page(&laptop, "/account/sessions").await;
    assert!(!after.contains("Safari on iOS") && after.contains("Firefox on Windows"));

    let ended = events_of(&app, "session.ended").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].actor_user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(
        data_of(&ended[0]),
        serde_json::json!({"which": "one", "ended": 1})
    );

    // The same handle again: that session is gone.
    let r = submit(
        &laptop,
        "/account/sessions",
        "/account/sessions/end",
        &[("session", &phone_handle)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("not one of your sessions"));
}

#[tokio::test]
async fn signing_out_everywhere_else_keeps_this_browser() {
    let app = spawn_app().await;
    let user = app.user("alice", UserType::Member).await;
    let laptop = signed_in_as(&app, "alice", CHROME_LINUX).await;
    let phone = signed_in_as(&app, "alice", SAFARI_IPHONE).await;
    let desktop = signed_in_as(&app, "alice", FIREFOX_WINDOWS).await;
    let (bob, _) = app.signed_in("bob").await;

    let r = submit(
        &laptop,
        "/account/sessions",
        "/account/sessions/end-others",
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = page(&laptop, &location(&r)).await;
    assert!(html.contains("Signed out of 2 other sessions. This browser stays signed in."));
    assert!(!html.contains("Sign out everywhere else"), "no others left");
    assert!(signed_in(&laptop).await);
    assert!(!signed_in(&phone).await && !signed_in(&desktop).await);
    assert!(signed_in(&bob).await);

    let ended = events_of(&app, "session.ended").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].actor_user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(
        data_of(&ended[0]),
        serde_json::json!({"which": "everywhere_else", "ended": 2})
    );
}

#[tokio::test]
async fn signing_out_everywhere_ends_this_browser_too_and_lands_on_sign_in() {
    let app = spawn_app().await;
    let user = app.user("alice", UserType::Member).await;
    let laptop = signed_in_as(&app, "alice", CHROME_LINUX).await;
    let phone = signed_in_as(&app, "alice", SAFARI_IPHONE).await;

    let r = submit(&laptop, "/account/sessions", "/account/sessions/end-all", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(!signed_in(&laptop).await && !signed_in(&phone).await);
    assert!(
        app.state
            .store
            .sessions_of_user(&user.id, app.clock.now())
            .await
            .unwrap()
            .is_empty()
    );
    let ended = events_of(&app, "session.ended").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(
        data_of(&ended[0]),
        serde_json::json!({"which": "everywhere", "ended": 2})
    );
}

#[tokio::test]
async fn no_one_can_sign_out_someone_elses_session() {
    let app = spawn_app().await;
    app.user("alice", UserType::Member).await;
    let laptop = signed_in_as(&app, "alice", CHROME_LINUX).await;
    let phone = signed_in_as(&app, "alice", SAFARI_IPHONE).await;
    let (mallory, _) = app.signed_in("mallory").await;
    let alices = handles(&page(&laptop, "/account/sessions").await);
    assert_eq!(alices.len(), 1);

    for forged in [alices[0].as_str(), "0123456789abcdef0123", "x"] {
        let r = submit(
            &mallory,
            "/account/sessions",
            "/account/sessions/end",
            &[("session", forged)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{forged}");
        assert!(r.text().await.unwrap().contains("Session not found"));
    }
    // Nor by the digest the sessions table is keyed by.
    let digest = app
        .state
        .store
        .sessions_of_user(
            &app.state
                .store
                .user_by_username("alice")
                .await
                .unwrap()
                .unwrap()
                .id,
            app.clock.now(),
        )
        .await
        .unwrap()[0]
        .id_digest
        .clone();
    let r = submit(
        &mallory,
        "/account/sessions",
        "/account/sessions/end",
        &[("session", &digest)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = submit(&mallory, "/account/sessions", "/account/sessions/end", &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    assert!(signed_in(&laptop).await && signed_in(&phone).await && signed_in(&mallory).await);
    assert!(events_of(&app, "session.ended").await.is_empty());
}

#[tokio::test]
async fn the_account_forms_refuse_a_missing_or_wrong_csrf_token_and_a_foreign_origin() {
    let app = spawn_app().await;
    let (alice, user) = app.signed_in("alice").await;
    let phone = signed_in_as(&app, "alice", SAFARI_IPHONE).await;
    let html = page(&alice, "/account/sessions").await;
    let csrf = hidden_inputs(&html)["csrf_token"].clone();
    let phone_handle = handles(&html)[0].clone();
    let new = "a much better secret";
    let forms: [(&str, Vec<(&str, &str)>); 5] = [
        (
            "/account/profile",
            vec![("name", "Mallory"), ("email", "m@evil.example")],
        ),
        (
            "/account/profile/password",
            vec![
                ("current_password", PASSWORD),
                ("new_password", new),
                ("new_password_confirmation", new),
            ],
        ),
        ("/account/sessions/end", vec![("session", &phone_handle)]),
        ("/account/sessions/end-others", vec![]),
        ("/account/sessions/end-all", vec![]),
    ];
    for (path, fields) in &forms {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = alice.post_form(path, &fields).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}: no token");
        let mut wrong = fields.clone();
        wrong.push(("csrf_token".into(), "hg_csrf_forged".into()));
        let r = alice.post_form(path, &wrong).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}: wrong token");
        let mut right = fields.clone();
        right.push(("csrf_token".into(), csrf.clone()));
        let r = alice
            .http
            .post(app.url(path))
            .header("Origin", "https://evil.example")
            .form(&right)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}: foreign origin");
        assert!(
            r.text().await.unwrap().contains("sent from another site"),
            "{path}: a readable page"
        );
    }
    let stored = stored_user(&app, &user.id).await;
    assert_eq!(stored.name, None);
    assert_eq!(stored.email.as_deref(), Some("alice@example.org"));
    assert!(signed_in(&alice).await && signed_in(&phone).await);
    assert_eq!(
        location(&app.browser().login("alice", PASSWORD).await),
        "/",
        "the password is unchanged"
    );
    for kind in ["user.updated", "user.password_changed", "session.ended"] {
        assert!(events_of(&app, kind).await.is_empty(), "{kind}");
    }
}

/// The header says who is signed in, offers Sign out, and links only to
/// what that person may use: Integrations for a practice's admin, Admin for
/// an operator; a visitor is offered Sign in.
#[tokio::test]
async fn the_header_fits_the_person() {
    let app = spawn_app().await;
    let links = |page: &str| {
        let nav = &page[page.find("<nav class=\"site\"").unwrap()..];
        let nav = &nav[..nav.find("</nav>").unwrap()];
        ["/account", "/integrations", "/developers", "/playground", "/admin", "/login"]
            .into_iter()
            .filter(|href| nav.contains(&format!("href=\"{href}\"")))
            .collect::<Vec<_>>()
    };
    let visitor = app.browser().get("/developers/signup").await.text().await.unwrap();
    assert_eq!(links(&visitor), ["/developers", "/login"]);
    assert!(!visitor.contains("Sign out"));

    let (member, _) = app.signed_in("mia").await;
    // Already signed in, /login offers to continue or to switch account.
    let login = member.get("/login?return_to=/account/apps").await.text().await.unwrap();
    assert!(login.contains("You are signed in as <strong>mia</strong>"), "{login}");
    assert!(login.contains("href=\"/account/apps\">Continue as mia</a>"), "{login}");
    assert!(login.contains("Or sign in with another account"));
    let page = member.get("/account").await.text().await.unwrap();
    assert_eq!(links(&page), ["/account", "/developers", "/playground"]);
    assert!(page.contains("Signed in as <strong>mia</strong>"), "{page}");
    assert!(page.contains("<form class=\"signout\" method=\"post\" action=\"/logout\">"));

    let (admin, ada) = app.signed_in("ada").await;
    let practice = organization(&app, "Harbor Practice", OrganizationKind::Practice).await;
    join(&app, &practice, &ada.username, "admin").await;
    let page = admin.get("/account").await.text().await.unwrap();
    assert_eq!(links(&page), ["/account", "/integrations", "/developers", "/playground"]);

    app.state
        .store
        .set_operator(&ada.id, true, Actor::system(), app.clock.now())
        .await
        .unwrap();
    let page = admin.get("/admin").await.text().await.unwrap();
    assert_eq!(
        links(&page),
        ["/account", "/integrations", "/developers", "/playground", "/admin"]
    );
    // Sign out from the header ends the session.
    let csrf = hidden_inputs(&page)["csrf_token"].clone();
    let r = admin.post_form("/logout", &[("csrf_token".into(), csrf)]).await;
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(admin.get("/account").await.status(), StatusCode::SEE_OTHER);
}
