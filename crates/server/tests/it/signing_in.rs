//! Signing in with an account that needs more than a password: a temporary
//! password (an operator reset it) is changed before anything else, and a
//! locked account is told so, but only with the right password.

use healthgate_core::user::User;
use reqwest::StatusCode;

use super::*;

/// A browser signed in as a new operator `username`.
async fn operator(app: &TestApp, username: &str) -> Browser {
    let (b, u) = app.signed_in(username).await;
    app.state
        .store
        .set_operator(&u.id, true, Actor::system(), app.clock.now())
        .await
        .unwrap();
    b
}

/// Resets `user`'s password in the console; returns the temporary one the
/// result page shows.
async fn console_reset(op: &Browser, user: &User) -> String {
    let page = op.get("/admin/organizations").await.text().await.unwrap();
    let csrf = hidden_inputs(&page).remove("csrf_token").unwrap();
    let r = op
        .post_form(
            "/admin/users/reset-password",
            &[
                ("csrf_token".into(), csrf),
                ("user_id".into(), user.id.clone()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.contains("must choose one of their own"), "{body}");
    let start = "<code id=\"temporary-password\">";
    let i = body.find(start).unwrap() + start.len();
    body[i..i + body[i..].find("</code>").unwrap()].to_owned()
}

/// Follows a redirect to the login page and submits it as `username`.
async fn sign_in_at(b: &Browser, login_page: &str, username: &str, password: &str) -> reqwest::Response {
    let page = b.get(login_page).await.text().await.unwrap();
    let mut form = hidden_input_list(&page);
    form.push(("username".into(), username.into()));
    form.push(("password".into(), password.into()));
    b.post_form("/login", &form).await
}

/// Where a redirect to the password page would return to; panics on any
/// other answer.
fn sent_to_choose_a_password(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.url());
    let to = location(r);
    assert!(to.starts_with("/account/password/new?"), "{to}");
    query_of(&to)["return_to"].clone()
}

/// Submits the password page with `fields` beside its own hidden inputs.
async fn choose(b: &Browser, page: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = hidden_input_list(page);
    form.dedup_by(|a, b| a.0 == b.0);
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    b.post_form("/account/password/new", &form).await
}

#[tokio::test]
async fn a_temporary_password_is_changed_before_anything_else_then_the_person_goes_on() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let op = operator(&app, "olivia").await;
    let alice = app.user("alice", healthgate_core::user::UserType::Member).await;
    let temporary = console_reset(&op, &alice).await;
    assert!(
        temporary_now(&app, &alice.id).await
    );

    // An app sends her to sign in; the temporary password signs her in, to
    // choose her own first, and back to the app after.
    let b = app.browser();
    let params = [
        ("response_type", "code"),
        ("client_id", client.id()),
        ("redirect_uri", REDIRECT),
        ("scope", "profile_read"),
        ("state", "s1"),
    ];
    let r = b.authorize(&params).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let login = location(&r);
    assert!(login.starts_with("/login?"), "{login}");
    let authorize_url = query_of(&login)["return_to"].clone();
    let r = sign_in_at(&b, &login, "alice", &temporary).await;
    assert_eq!(sent_to_choose_a_password(&r), authorize_url);
    assert!(r.headers().get("set-cookie").is_some(), "signed in");

    // Every page sends her there, and back to it after; a form is refused.
    for path in [
        "/",
        "/account",
        "/account/profile",
        "/account/apps",
        "/account/sessions",
        "/developers",
        "/developers/apps/new",
        "/admin",
        "/admin/users",
        "/integrations",
        "/playground",
    ] {
        let r = b.get(path).await;
        assert_eq!(sent_to_choose_a_password(&r), path, "{path}");
    }
    let page = b.get("/account/password/new?return_to=%2Faccount").await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("Choose a new password"));
    let csrf = hidden_inputs(&page)["csrf_token"].clone();
    let r = b
        .post_form(
            "/account/profile",
            &[("csrf_token".into(), csrf.clone()), ("name".into(), "A".into())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // No code is issued for her: the authorization request waits too, and
    // a consent form sent anyway is refused.
    let r = b.authorize(&params).await;
    assert_eq!(sent_to_choose_a_password(&r), authorize_url);
    let mut none = params.to_vec();
    none.push(("prompt", "none"));
    let r = b.authorize(&none).await;
    let back = location(&r);
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query_of(&back)["error"], "login_required");
    assert!(!query_of(&back).contains_key("code"));
    let mut consent: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    consent.push(("csrf_token".into(), csrf.clone()));
    consent.push(("decision".into(), "allow".into()));
    let r = b.post_form("/oauth/authorize", &consent).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(app.events_of("consent.granted").await.is_empty());

    // Choosing: the temporary password typed again, the new one twice.
    let page = b
        .get(&format!(
            "/account/password/new?return_to={}",
            url::form_urlencoded::byte_serialize(authorize_url.as_bytes()).collect::<String>()
        ))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(hidden_inputs(&page)["return_to"], authorize_url);
    let mine = "my own horse battery";
    for (fields, field) in [
        (
            [("current_password", "not it at all"), ("new_password", mine), ("new_password_confirmation", mine)],
            "current_password",
        ),
        (
            [("current_password", temporary.as_str()), ("new_password", mine), ("new_password_confirmation", "something else")],
            "new_password_confirmation",
        ),
        (
            [("current_password", temporary.as_str()), ("new_password", "short"), ("new_password_confirmation", "short")],
            "new_password",
        ),
        (
            [("current_password", temporary.as_str()), ("new_password", "Password123"), ("new_password_confirmation", "Password123")],
            "new_password",
        ),
        (
            [("current_password", temporary.as_str()), ("new_password", temporary.as_str()), ("new_password_confirmation", temporary.as_str())],
            "new_password",
        ),
    ] {
        let r = choose(&b, &page, &fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}");
        let again = r.text().await.unwrap();
        assert!(
            again.contains(&format!("id=\"{field}-error\"")),
            "{field}: {again}"
        );
        assert!(
            temporary_now(&app, &alice.id).await
        );
    }
    let r = choose(
        &b,
        &page,
        &[
            ("current_password", &temporary),
            ("new_password", mine),
            ("new_password_confirmation", mine),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), authorize_url, "on to where she was going");
    assert!(!temporary_now(&app, &alice.id).await);

    // On to the app: the consent page, and a code.
    let r = b.get(&authorize_url).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = b.consent(&r.text().await.unwrap(), "allow").await;
    assert!(query_of(&location(&r)).contains_key("code"));
    assert_eq!(b.get("/account").await.status(), StatusCode::OK);

    // The temporary password no longer works; hers does, straight on.
    let other = app.browser();
    let r = other.login("alice", &temporary).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = other.login("alice", mine).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/");
    assert_eq!(other.get("/account").await.status(), StatusCode::OK);
    // A person whose password is their own is sent on from the page.
    let r = other.get("/account/password/new?return_to=%2Faccount").await;
    assert_eq!(location(&r), "/account");

    for e in app.all_events().await {
        let e = format!("{e:?}");
        assert!(!e.contains(&temporary) && !e.contains(mine), "{e}");
    }
}

#[tokio::test]
async fn a_locked_account_is_told_so_only_with_the_right_password() {
    let app = spawn_app().await;
    let alice = app.user("alice", healthgate_core::user::UserType::Member).await;
    app.state
        .store
        .lock_user(&alice.id, app.clock.now())
        .await
        .unwrap();

    let b = app.browser();
    let r = b.login("alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none(), "no session");
    let page = r.text().await.unwrap();
    assert!(page.contains("This account is locked"), "{page}");
    assert!(page.contains("Ask an administrator of this platform to unlock it."));
    assert!(!page.contains("incorrect"));
    let r = b.get("/account").await;
    assert!(location(&r).starts_with("/login?"), "not signed in");

    // A wrong password, for a locked or an unknown account: the same
    // answer as ever.
    for (username, password) in [("alice", "not her password"), ("nobody", PASSWORD)] {
        let r = app.browser().login(username, password).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{username}");
        let page = r.text().await.unwrap();
        assert!(page.contains("The username or password is incorrect."));
        assert!(!page.contains("locked"), "{username}");
    }

    // Each attempt is a failed login; the locked one says why.
    let failed = app.events_of("login.failed").await;
    assert_eq!(failed.len(), 3);
    let reasons: Vec<Option<&str>> = failed.iter().map(|e| e.data.as_deref()).collect();
    assert_eq!(reasons, [None, None, Some(r#"{"reason":"locked"}"#)]);
    assert_eq!(failed[2].actor_user_id.as_deref(), Some(alice.id.as_str()));
    for e in &failed {
        assert!(!format!("{e:?}").contains(PASSWORD));
    }
}

#[tokio::test]
async fn a_locked_account_is_pointed_to_the_platforms_support_when_there_is_one() {
    let app = spawn_app_with(|s| {
        s.branding.support_url = Some("https://help.northwind.example/".parse().unwrap());
    })
    .await;
    let alice = app.user("alice", healthgate_core::user::UserType::Member).await;
    app.state
        .store
        .lock_user(&alice.id, app.clock.now())
        .await
        .unwrap();
    let r = app.browser().login("alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Ask <a href=\"https://help.northwind.example/\">"),
        "{page}"
    );
}

/// Whether `user_id`'s password is a temporary one now.
async fn temporary_now(app: &TestApp, user_id: &str) -> bool {
    let user = app.state.store.user(user_id).await.unwrap().unwrap();
    user.password_is_temporary()
}
