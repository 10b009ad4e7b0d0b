//! The developer portal (`/developers`) over HTTP: sign-up, registering an
//! app with the seeds' fields, the secret shown once, rotation, editing,
//! deleting, photos, what another developer can (not) reach, and every
//! refusal shown next to its field.

use healthgate_core::org::OrganizationKind;
use healthgate_server::services::admin;
use reqwest::StatusCode;

use super::*;

/// The text of the element with `id` up to its end tag, without the
/// `<wbr>` break opportunities inside, entities decoded.
pub fn element_text(page: &str, id: &str) -> Option<String> {
    let start = page.find(&format!("id=\"{id}\""))?;
    let rest = &page[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find("</")?;
    Some(unescape_html(&rest[open..open + close].replace("<wbr>", "")))
}

/// The CSRF token of a page the browser can open.
pub async fn csrf_of(browser: &Browser, path: &str) -> String {
    let page = browser.get(path).await.text().await.unwrap();
    hidden_inputs(&page)
        .remove("csrf_token")
        .unwrap_or_else(|| panic!("no csrf_token on {path}"))
}

/// A registration form as the portal's page sends it.
pub fn app_form(name: &str) -> Vec<(String, String)> {
    [
        ("name", name),
        ("description", "Scheduling for practices"),
        ("redirect_uris", "https://partner.example/callback\nhttp://127.0.0.1:7777/cb"),
        ("scope", "profile_read"),
        ("scope", "openid"),
        ("user_type", "member"),
        ("user_type", "expert"),
        ("client_type", "confidential"),
        ("authorization_level", "user"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Registers an app through the portal; returns its id and secret.
pub async fn register_in_portal(browser: &Browser, form: Vec<(String, String)>) -> (String, Option<String>) {
    let mut fields = vec![("csrf_token".to_owned(), csrf_of(browser, "/developers/apps/new").await)];
    fields.extend(form);
    let r = browser.post_form("/developers/apps", &fields).await;
    let r = browser.follow(r).await;
    let status = r.status();
    let page = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    (
        element_text(&page, "app-id").expect("APP_ID shown"),
        element_text(&page, "app-secret"),
    )
}

fn with(mut form: Vec<(String, String)>, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in changes {
        form.retain(|(name, _)| name != k);
        if !v.is_empty() {
            form.push((k.to_string(), v.to_string()));
        }
    }
    form
}

async fn token_with(app: &TestApp, client_id: &str, secret: &str) -> StatusCode {
    app.http()
        .post(app.url("/oauth/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_portal_asks_strangers_to_sign_in_or_sign_up() {
    let app = spawn_app().await;
    let b = app.browser();
    let page = b.get("/developers").await.text().await.unwrap();
    assert!(page.contains("href=\"/login?return_to=/developers\""));
    assert!(page.contains("href=\"/developers/signup\""));
    for path in ["/developers/apps/new", "/developers/apps/app-x", "/playground"] {
        let r = b.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&r).starts_with("/login?return_to="), "{path}");
    }
}

#[tokio::test]
async fn signing_up_makes_an_account_and_signs_it_in() {
    let app = spawn_app().await;
    app.user("taken", UserType::Member).await;
    let b = app.browser();
    let csrf = csrf_of(&b, "/developers/signup").await;
    let form = |username: &str, password: &str, again: &str| {
        vec![
            ("csrf_token".to_owned(), csrf.clone()),
            ("username".to_owned(), username.to_owned()),
            ("name".to_owned(), "Dev Eloper".to_owned()),
            ("email".to_owned(), "dev@partner.example".to_owned()),
            ("password".to_owned(), password.to_owned()),
            ("password_confirmation".to_owned(), again.to_owned()),
        ]
    };
    let cases = [
        (form("dev", PASSWORD, "something else"), "password_confirmation"),
        (form("dev", "short", "short"), "password"),
        (form("taken", PASSWORD, PASSWORD), "username"),
        (form("", PASSWORD, PASSWORD), "username"),
        (form("a/b", PASSWORD, PASSWORD), "username"),
    ];
    for (fields, field) in cases {
        let r = b.post_form("/developers/signup", &fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}");
        let page = r.text().await.unwrap();
        assert!(
            page.contains(&format!("id=\"{field}-error\"")),
            "{field}: {page}"
        );
        assert!(page.contains(&format!("aria-describedby=\"{field}-error\"")));
    }
    assert!(app.state.store.user_by_username("dev").await.unwrap().is_none());
    let r = b
        .post_form("/developers/signup", &form("dev", PASSWORD, PASSWORD))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/developers");
    let page = b.get("/developers").await.text().await.unwrap();
    assert!(page.contains("Signed in as <strong>Dev Eloper</strong>"), "{page}");
    // The account signs in like any other.
    let other = app.browser();
    let r = other.login("dev", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// The refusal a common password meets, as a page shows it.
pub const COMMON_PASSWORD: &str =
    "Password is one of the most common passwords and easy to guess, so choose another one.";

#[tokio::test]
async fn signing_up_refuses_a_common_password_beside_its_field_and_takes_others_as_typed() {
    let app = spawn_app().await;
    let b = app.browser();
    let csrf = csrf_of(&b, "/developers/signup").await;
    let form = |password: &str| {
        vec![
            ("csrf_token".to_owned(), csrf.clone()),
            ("username".to_owned(), "dev".to_owned()),
            ("password".to_owned(), password.to_owned()),
            ("password_confirmation".to_owned(), password.to_owned()),
        ]
    };
    // On the list, in any case; long enough, so only the list refuses it.
    for common in ["iloveyou1", "Password123", "QWERTYUIOP"] {
        let r = b.post_form("/developers/signup", &form(common)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{common}");
        let page = r.text().await.unwrap();
        assert_eq!(
            field_message(&page, "password").as_deref(),
            Some(COMMON_PASSWORD),
            "{common}"
        );
        assert!(!page.contains(common), "passwords never echo");
    }
    assert!(app.state.store.user_by_username("dev").await.unwrap().is_none());
    // No composition rules: lowercase words, spaces (around it too, kept as
    // typed, as signing in takes them) and an emoji make a password.
    let phrase = " pancakes on the 🌕 at noon ";
    let r = b.post_form("/developers/signup", &form(phrase)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.browser().login("dev", phrase).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.browser().login("dev", phrase.trim()).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sign_up_can_be_closed_by_the_operator() {
    let app = spawn_app_with(|s| s.developer_signup = false).await;
    let b = app.browser();
    assert_eq!(b.get("/developers/signup").await.status(), StatusCode::FORBIDDEN);
    let login = b.get("/login").await.text().await.unwrap();
    let csrf = hidden_inputs(&login)["csrf_token"].clone();
    let r = b
        .post_form(
            "/developers/signup",
            &[
                ("csrf_token".into(), csrf),
                ("username".into(), "dev".into()),
                ("password".into(), PASSWORD.into()),
                ("password_confirmation".into(), PASSWORD.into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(app.state.store.user_by_username("dev").await.unwrap().is_none());
    let page = b.get("/developers").await.text().await.unwrap();
    assert!(!page.contains("/developers/signup"));
}

#[tokio::test]
async fn a_registered_app_shows_its_secret_once_and_works() {
    let app = spawn_app().await;
    let (b, dev) = app.signed_in("dev").await;
    let (id, secret) = register_in_portal(&b, app_form("Scheduler")).await;
    let secret = secret.expect("a confidential app gets a secret");
    assert!(secret.starts_with("hg_cs_"), "{secret}");
    let client = app.state.store.client(&id).await.unwrap().unwrap();
    assert_eq!(client.owner_id.as_deref(), Some(dev.id.as_str()));
    assert_eq!(client.allowed_scopes.to_string(), "openid profile_read");
    assert_eq!(client.description.as_deref(), Some("Scheduling for practices"));
    assert_eq!(client.redirect_uris.len(), 2);
    // The secret is never shown again.
    let page = b.get(&format!("/developers/apps/{id}")).await.text().await.unwrap();
    assert!(page.contains(&id));
    assert!(!page.contains(&secret));
    let list = b.get("/developers").await.text().await.unwrap();
    assert!(list.contains(&format!("href=\"/developers/apps/{id}\"")));
    // And it authenticates the app: a code flow end to end.
    let test_client = TestClient {
        client,
        secret: Some(secret),
    };
    let code = app.code(&b, &test_client, &[]).await;
    let (status, body) = app.exchange(&test_client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_public_app_has_no_secret() {
    let app = spawn_app().await;
    let (b, _) = app.signed_in("dev").await;
    let form = with(app_form("Phone app"), &[("client_type", "public")]);
    let (id, secret) = register_in_portal(&b, form).await;
    assert_eq!(secret, None);
    assert!(app.state.store.client(&id).await.unwrap().unwrap().is_public());
}

#[tokio::test]
async fn refusals_are_shown_next_to_their_field_and_register_nothing() {
    let app = spawn_app().await;
    let (b, dev) = app.signed_in("dev").await;
    let long = "x".repeat(2001);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("name", vec![("name", "")]),
        ("redirect_uris", vec![("redirect_uris", "")]),
        ("redirect_uris", vec![("redirect_uris", "not a uri")]),
        ("redirect_uris", vec![("redirect_uris", "https://partner.example/cb#fragment")]),
        ("redirect_uris", vec![("redirect_uris", "https://*.partner.example/cb")]),
        ("redirect_uris", vec![("redirect_uris", "https://partner.example/cb/*")]),
        ("scope", vec![("scope", "")]),
        ("scope", vec![("scope", "no_such_scope")]),
        ("user_types", vec![("user_type", "")]),
        ("user_types", vec![("user_type", "robot")]),
        ("webhook_url", vec![("webhook_url", "http://partner.example/hook")]),
        ("webhook_url", vec![("webhook_url", "https://169.254.169.254/latest")]),
        ("webhook_url", vec![("webhook_url", "https://[fd00::1]/hook")]),
        ("connect_url", vec![("published", "1")]),
        ("photo_url", vec![("photo_url", "javascript:alert(1)")]),
        ("description", vec![("description", &long)]),
    ];
    for (field, changes) in cases {
        let mut fields = vec![(
            "csrf_token".to_owned(),
            csrf_of(&b, "/developers/apps/new").await,
        )];
        fields.extend(with(app_form("Scheduler"), &changes));
        let r = b.post_form("/developers/apps", &fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}: {changes:?}");
        let page = r.text().await.unwrap();
        assert!(
            page.contains(&format!("id=\"{field}-error\"")),
            "{field}: {changes:?}: {page}"
        );
        assert!(page.contains(&format!("aria-invalid=\"true\" aria-describedby=\"{field}-error\"")));
        // What was typed is kept.
        assert!(page.contains("Scheduling for practices") || field == "description");
    }
    assert!(app.state.store.clients_of_owner(&dev.id).await.unwrap().is_empty());
}

/// The message shown next to `field`, if any, as a person reads it.
fn field_message(page: &str, field: &str) -> Option<String> {
    assert_eq!(
        page.contains(&format!("aria-invalid=\"true\" aria-describedby=\"{field}-error\"")),
        page.contains(&format!("id=\"{field}-error\"")),
        "{field}: a message is tied to its input"
    );
    element_text(page, &format!("{field}-error"))
}

const HTTP_URI: &str = "http://acme.example/cb: redirect URI must use https, http on a loopback address, or a private-use scheme such as com.example.app:/cb.";

#[tokio::test]
async fn every_mistake_of_one_submit_is_shown_next_to_its_field() {
    let app = spawn_app().await;
    let (b, dev) = app.signed_in("dev").await;
    let mistakes = [
        ("name", " "),
        ("redirect_uris", "http://acme.example/cb\nhttps://partner.example/cb#top"),
        ("webhook_url", "http://partner.example/hook"),
    ];
    // With no scope ticked (the page's own rule) and with one (only the
    // registration rules refuse): either way every field says what is wrong.
    for scope in ["", "profile_read"] {
        let mut fields = vec![(
            "csrf_token".to_owned(),
            csrf_of(&b, "/developers/apps/new").await,
        )];
        let mut changes = mistakes.to_vec();
        changes.push(("scope", scope));
        fields.extend(with(app_form("Scheduler"), &changes));
        let r = b.post_form("/developers/apps", &fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{scope:?}");
        let page = r.text().await.unwrap();
        assert_eq!(
            field_message(&page, "name").as_deref(),
            Some("The name must be 1 to 200 characters, without surrounding spaces."),
            "{page}"
        );
        // Each bad URI is named, and a message that starts with one keeps
        // it as typed: "http://…", never "Http://…".
        let uris = field_message(&page, "redirect_uris").expect("redirect URIs refused");
        assert!(uris.starts_with(HTTP_URI), "{uris}");
        assert!(
            uris.contains("https://partner.example/cb#top: redirect URI must not contain a fragment"),
            "{uris}"
        );
        assert_eq!(
            field_message(&page, "webhook_url").as_deref(),
            Some("http://partner.example/hook: webhook URLs must be https."),
        );
        let scope_message = field_message(&page, "scope");
        if scope.is_empty() {
            assert_eq!(scope_message.as_deref(), Some("Tick at least one scope."));
        } else {
            assert_eq!(scope_message, None);
        }
        for fine in ["description", "user_types", "connect_url", "photo_url", "photo"] {
            assert_eq!(field_message(&page, fine), None, "{fine}");
        }
        assert!(page.contains("Scheduling for practices"), "what was typed stays");
    }
    assert!(app.state.store.clients_of_owner(&dev.id).await.unwrap().is_empty());

    // Editing an app: the same, and nothing is saved.
    let (id, _) = register_in_portal(&b, app_form("Scheduler")).await;
    let edit = format!("/developers/apps/{id}/edit");
    for scope in ["", "openid"] {
        let mut fields = vec![("csrf_token".to_owned(), csrf_of(&b, &edit).await)];
        let mut changes = mistakes.to_vec();
        changes.push(("scope", scope));
        changes.push(("user_type", ""));
        fields.extend(with(app_form("Scheduler"), &changes));
        let r = b.post_form(&edit, &fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{scope:?}");
        let page = r.text().await.unwrap();
        assert!(field_message(&page, "name").is_some(), "{page}");
        let uris = field_message(&page, "redirect_uris").expect("redirect URIs refused");
        assert!(uris.starts_with(HTTP_URI), "{uris}");
        assert!(field_message(&page, "webhook_url").is_some());
        assert_eq!(
            field_message(&page, "user_types").as_deref(),
            Some("Tick at least one kind of user.")
        );
        assert_eq!(field_message(&page, "scope").is_some(), scope.is_empty());
    }
    let c = app.state.store.client(&id).await.unwrap().unwrap();
    assert_eq!(c.name, "Scheduler");
    assert_eq!(c.webhook_url, None);

    // Signing up: every field at once.
    let stranger = app.browser();
    let fields = vec![
        ("csrf_token".to_owned(), csrf_of(&stranger, "/developers/signup").await),
        ("username".to_owned(), "a/b".to_owned()),
        ("email".to_owned(), "not-an-email".to_owned()),
        ("password".to_owned(), "short".to_owned()),
        ("password_confirmation".to_owned(), "short".to_owned()),
    ];
    let r = stranger.post_form("/developers/signup", &fields).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert_eq!(
        field_message(&page, "username").as_deref(),
        Some("Username must not contain /.")
    );
    assert_eq!(
        field_message(&page, "email").as_deref(),
        Some("\"not-an-email\" is not an email address.")
    );
    assert_eq!(
        field_message(&page, "password").as_deref(),
        Some("Password must be at least 8 characters.")
    );
    // A blank username is the page's own rule; the others still show.
    let mut fields = fields;
    fields[1].1 = String::new();
    fields[4].1 = "shorter".to_owned();
    let r = stranger.post_form("/developers/signup", &fields).await;
    let page = r.text().await.unwrap();
    assert_eq!(field_message(&page, "username").as_deref(), Some("Choose a username."));
    assert!(field_message(&page, "email").is_some());
    assert!(field_message(&page, "password_confirmation").is_some());
    assert!(app.state.store.user_by_username("a/b").await.unwrap().is_none());

    // The account's profile and password forms.
    let profile = csrf_of(&b, "/account/profile").await;
    let form = |pairs: &[(&str, &str)]| {
        let mut f = vec![("csrf_token".to_owned(), profile.clone())];
        f.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        f
    };
    let long = "N".repeat(201);
    let r = b
        .post_form("/account/profile", &form(&[("name", &long), ("email", "alice@@")]))
        .await;
    let page = r.text().await.unwrap();
    assert!(field_message(&page, "name").is_some(), "{page}");
    assert!(field_message(&page, "email").is_some(), "{page}");
    let r = b
        .post_form(
            "/account/profile/password",
            &form(&[
                ("current_password", "not it at all"),
                ("new_password", "short"),
                ("new_password_confirmation", "shorts"),
            ]),
        )
        .await;
    let page = r.text().await.unwrap();
    for field in ["current_password", "new_password", "new_password_confirmation"] {
        assert!(field_message(&page, field).is_some(), "{field}: {page}");
    }
}

#[test]
fn the_cli_names_every_refused_field_on_one_line() {
    let e = admin::AdminError::Fields(vec![
        ("name", "the name must be 1 to 200 characters".to_owned()),
        ("scope", "at least one scope is required".to_owned()),
    ]);
    assert_eq!(
        e.to_string(),
        "the name must be 1 to 200 characters; at least one scope is required"
    );
}

#[tokio::test]
async fn forms_without_the_session_token_or_from_elsewhere_are_refused() {
    let app = spawn_app().await;
    let (b, dev) = app.signed_in("dev").await;
    let r = b.post_form("/developers/apps", &app_form("Scheduler")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut fields = vec![(
        "csrf_token".to_owned(),
        csrf_of(&b, "/developers/apps/new").await,
    )];
    fields.extend(app_form("Scheduler"));
    let r = b
        .http
        .post(app.url("/developers/apps"))
        .header("Origin", "https://evil.example")
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(app.state.store.clients_of_owner(&dev.id).await.unwrap().is_empty());
}

/// A multipart body with the form's fields and one file.
fn multipart(fields: &[(String, String)], file: (&str, &str, &[u8])) -> (String, Vec<u8>) {
    let boundary = "----healthgate-test-boundary";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    let (name, filename, bytes) = file;
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn an_uploaded_photo_is_checked_stored_and_served() {
    let app = spawn_app().await;
    let (b, dev) = app.signed_in("dev").await;
    let post = |file: (&'static str, &'static str, &'static [u8])| {
        let b = &b;
        async move {
            let mut fields = vec![(
                "csrf_token".to_owned(),
                csrf_of(b, "/developers/apps/new").await,
            )];
            fields.extend(app_form("Pictured"));
            let (content_type, body) = multipart(&fields, file);
            b.http
                .post(format!("{}/developers/apps", b.base))
                .header("Content-Type", content_type)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    // An SVG (which can carry script) named .png is refused.
    let r = post(("photo", "logo.png", b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("id=\"photo-error\""));
    assert!(app.state.store.clients_of_owner(&dev.id).await.unwrap().is_empty());

    let r = b.follow(post(("photo", "logo.png", PNG)).await).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    let id = element_text(&page, "app-id").unwrap();
    let client = app.state.store.client(&id).await.unwrap().unwrap();
    let photo = client.photo_url.expect("photo_url points at the upload");
    assert!(photo.starts_with(&format!("{}/apps/{id}/photo", app.base)), "{photo}");
    let served = app.http().get(&photo).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.headers()["x-content-type-options"], "nosniff");
    assert_eq!(served.bytes().await.unwrap().as_ref(), PNG);
    // The consent page shows it.
    let test_client = TestClient { client: app.state.store.client(&id).await.unwrap().unwrap(), secret: None };
    let consent = b
        .authorize(&[
            ("response_type", "code"),
            ("client_id", test_client.id()),
            ("redirect_uri", REDIRECT),
            ("scope", "profile_read"),
            ("state", "s"),
        ])
        .await
        .text()
        .await
        .unwrap();
    assert!(consent.contains(&format!("/apps/{id}/photo")), "{consent}");

    // An oversized file is refused with a page saying so.
    let big: &'static [u8] = Box::leak(vec![0x89u8; 300 * 1024].into_boxed_slice());
    let r = post(("photo", "big.png", big)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("too large"));
    assert_eq!(
        app.http().get(app.url("/apps/app-none/photo")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn rotating_the_secret_shows_the_new_one_once_and_keeps_the_old_for_the_grace() {
    let app = spawn_app().await;
    let (b, _) = app.signed_in("dev").await;
    let form = with(app_form("Backend"), &[("scope", "profile_read")]);
    let (id, old) = register_in_portal(&b, form).await;
    let old = old.unwrap();
    assert_eq!(token_with(&app, &id, &old).await, StatusCode::OK);
    // The app's page links to a page that asks first; opening it changes nothing.
    let shown = b.get(&format!("/developers/apps/{id}")).await.text().await.unwrap();
    assert!(shown.contains(&format!("href=\"/developers/apps/{id}/secret\">Rotate the APP_SECRET…</a>")));
    let r = b.get(&format!("/developers/apps/{id}/secret")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let confirm = r.text().await.unwrap();
    assert_eq!(confirm.matches("<h1").count(), 1);
    assert!(confirm.contains("Rotate the APP_SECRET of Backend?"));
    assert!(confirm.contains(&format!("href=\"/developers/apps/{id}\">Cancel</a>")));
    assert!(confirm.contains("<button type=\"submit\" class=\"danger\">Rotate the APP_SECRET</button>"));
    assert_eq!(token_with(&app, &id, &old).await, StatusCode::OK);
    assert!(app.events_of("client.secret_rotated").await.is_empty());
    // Another developer has no such page.
    let (other, _) = app.signed_in("other").await;
    assert_eq!(other.get(&format!("/developers/apps/{id}/secret")).await.status(), StatusCode::NOT_FOUND);
    let csrf = hidden_inputs(&confirm)["csrf_token"].clone();
    let r = b
        .post_form(&format!("/developers/apps/{id}/secret"), &[("csrf_token".into(), csrf)])
        .await;
    let r = b.follow(r).await;
    assert_eq!(r.status(), StatusCode::OK);
    let shown = r.text().await.unwrap();
    let new = element_text(&shown, "app-secret").unwrap();
    assert_ne!(new, old);
    let until = app.state.now() + 86_400;
    let when = healthgate_server::http::pages::format_utc(until);
    assert!(shown.contains("The previous APP_SECRET keeps working until <time datetime="), "{shown}");
    assert!(shown.contains(&when), "{shown}");
    // Both work during the grace (24 hours by default), at the token
    // endpoint and as the partner's bearer key; the app's page says until when.
    assert_eq!(token_with(&app, &id, &old).await, StatusCode::OK);
    assert_eq!(token_with(&app, &id, &new).await, StatusCode::OK);
    assert_eq!(partner_with(&app, &old).await, StatusCode::OK);
    let page = b.get(&format!("/developers/apps/{id}")).await.text().await.unwrap();
    let previous = element_text(&page, "previous-secret").unwrap();
    assert!(previous.contains("the previous APP_SECRET works until"), "{previous}");
    assert!(page.contains(&format!(">{when}</time>, beside the new one.")), "{page}");
    let rotated = app.events_of("client.secret_rotated").await;
    let data: serde_json::Value = serde_json::from_str(rotated[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(data["previous_secret_expires_at"], until);
    app.clock.advance(86_400 - 1);
    assert_eq!(token_with(&app, &id, &old).await, StatusCode::OK);
    // Then the old one ends; the new one goes on.
    app.clock.advance(1);
    assert_eq!(token_with(&app, &id, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(partner_with(&app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(token_with(&app, &id, &new).await, StatusCode::OK);
    let page = b.get(&format!("/developers/apps/{id}")).await.text().await.unwrap();
    assert!(element_text(&page, "previous-secret").is_none());
}

/// The partner-level `Authorization: Bearer <client_secret>` on the partner API.
async fn partner_with(app: &TestApp, secret: &str) -> StatusCode {
    app.http()
        .get(app.url("/api/v1/integrations"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_grace_of_zero_ends_the_old_secret_at_once_and_a_new_rotation_ends_the_one_in_grace() {
    let app = spawn_app_with(|s| s.client_secret_grace = None).await;
    let (b, _) = app.signed_in("dev").await;
    let (id, old) = register_in_portal(&b, with(app_form("Backend"), &[("scope", "profile_read")])).await;
    let old = old.unwrap();
    let confirm = b.get(&format!("/developers/apps/{id}/secret")).await.text().await.unwrap();
    assert!(confirm.contains("The current one stops working at once"), "{confirm}");
    let csrf = hidden_inputs(&confirm)["csrf_token"].clone();
    let r = b.post_form(&format!("/developers/apps/{id}/secret"), &[("csrf_token".into(), csrf)]).await;
    let shown = b.follow(r).await.text().await.unwrap();
    assert!(shown.contains("The previous secret has stopped working."), "{shown}");
    let new = element_text(&shown, "app-secret").unwrap();
    assert_eq!(token_with(&app, &id, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(token_with(&app, &id, &new).await, StatusCode::OK);

    // With a grace, a second rotation ends the secret still in the first's.
    let app = spawn_app().await;
    let (b, _) = app.signed_in("dev").await;
    let (id, first) = register_in_portal(&b, with(app_form("Backend"), &[("scope", "profile_read")])).await;
    let first = first.unwrap();
    let rotate = async || {
        let csrf = csrf_of(&b, &format!("/developers/apps/{id}/secret")).await;
        let r = b.post_form(&format!("/developers/apps/{id}/secret"), &[("csrf_token".into(), csrf)]).await;
        element_text(&b.follow(r).await.text().await.unwrap(), "app-secret").unwrap()
    };
    let second = rotate().await;
    let warned = b.get(&format!("/developers/apps/{id}/secret")).await.text().await.unwrap();
    assert!(warned.contains("stops working at once"), "{warned}");
    let third = rotate().await;
    assert_eq!(token_with(&app, &id, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(token_with(&app, &id, &second).await, StatusCode::OK);
    assert_eq!(token_with(&app, &id, &third).await, StatusCode::OK);

    // Suspending the app ends the secret in grace; restoring does not bring it back.
    admin::suspend_client(&app.state.store, app.clock.as_ref(), &id, Some("test"), Actor::system())
        .await
        .unwrap();
    admin::restore_client(&app.state.store, app.clock.as_ref(), &id, Actor::system())
        .await
        .unwrap();
    assert_eq!(token_with(&app, &id, &second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(token_with(&app, &id, &third).await, StatusCode::OK);
}

/// Post/redirect/get: registering answers 303 to the credentials page,
/// which shows the APP_SECRET once; reloading it registers nothing more and
/// shows no secret, and no other browser or app ever sees it.
#[tokio::test]
async fn reloading_the_registered_page_repeats_nothing_and_shows_the_secret_once() {
    let app = spawn_app().await;
    let (b, dev) = app.signed_in("dev").await;
    let mut fields = vec![("csrf_token".to_owned(), csrf_of(&b, "/developers/apps/new").await)];
    fields.extend(app_form("Scheduler"));
    let r = b.post_form("/developers/apps", &fields).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let credentials = location(&r);
    assert!(credentials.ends_with("/credentials?done=created"), "{credentials}");
    let sealed = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let first = b.get(&credentials).await;
    assert_eq!(first.headers()["cache-control"], "no-store");
    let page = first.text().await.unwrap();
    let secret = element_text(&page, "app-secret").expect("the secret, once");
    assert!(secret.starts_with("hg_cs_"));
    assert!(!sealed.contains(&secret), "the cookie carries it sealed");
    // Reloaded: the same page, no secret, and still one app.
    let again = b.get(&credentials).await.text().await.unwrap();
    assert!(element_text(&again, "app-secret").is_none(), "{again}");
    assert!(again.contains("id=\"secret-shown\""), "{again}");
    assert_eq!(app.state.store.clients_of_owner(&dev.id).await.unwrap().len(), 1);
    // The sealed cookie replayed from elsewhere opens nothing.
    let (other, _) = app.signed_in("eve").await;
    let cookie = sealed.split(';').next().unwrap().to_owned();
    let stolen = other
        .http
        .get(format!("{}{credentials}", other.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_ne!(stolen.status(), StatusCode::OK);
    assert!(!stolen.text().await.unwrap().contains(&secret));
}

#[tokio::test]
async fn editing_an_app_saves_valid_changes_and_explains_invalid_ones() {
    let app = spawn_app().await;
    let (b, _) = app.signed_in("dev").await;
    let (id, _) = register_in_portal(&b, app_form("Scheduler")).await;
    let edit = format!("/developers/apps/{id}/edit");
    let page = b.get(&edit).await.text().await.unwrap();
    assert!(page.contains("value=\"Scheduler\""));
    let csrf = hidden_inputs(&page)["csrf_token"].clone();
    let post = |changes: Vec<(&'static str, &'static str)>| {
        let (b, edit, csrf) = (&b, &edit, csrf.clone());
        async move {
            let mut fields = vec![("csrf_token".to_owned(), csrf)];
            // Trying to turn a confidential app public is ignored.
            fields.extend(with(app_form("Scheduler"), &[("client_type", "public")]));
            fields = with(fields, &changes);
            b.post_form(edit, &fields).await
        }
    };
    let r = post(vec![("redirect_uris", "ftp://nope")]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("id=\"redirect_uris-error\""));
    let r = post(vec![
        ("name", "Scheduler Pro"),
        ("redirect_uris", "https://partner.example/new-callback"),
        ("webhook_url", "https://partner.example/hooks"),
        ("authorization_level", "organization"),
    ])
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), format!("/developers/apps/{id}?saved=1"));
    let c = app.state.store.client(&id).await.unwrap().unwrap();
    assert_eq!(c.name, "Scheduler Pro");
    assert!(!c.is_public());
    assert_eq!(c.redirect_uris.len(), 1);
    assert_eq!(c.webhook_url.as_deref(), Some("https://partner.example/hooks"));
    assert_eq!(c.authorization_level.as_str(), "organization");
    let page = b.get(&format!("/developers/apps/{id}?saved=1")).await.text().await.unwrap();
    assert!(page.contains("Your changes were saved."));
    // With a webhook URL the page shows the signing secret the deliveries carry.
    let secret = healthgate_server::services::secrets::webhook_secret(&app.state.store, &app.state.settings, &c).await.unwrap();
    assert_eq!(element_text(&page, "webhook-secret").as_deref(), Some(secret.as_str()));
}

/// Every change made in the portal names the developer and their address:
/// signing up, registering, publishing, rotating and deleting.
#[tokio::test]
async fn portal_changes_name_the_developer_and_address() {
    let app = spawn_app().await;
    let b = app.browser();
    let csrf = csrf_of(&b, "/developers/signup").await;
    let signup = [
        ("csrf_token", csrf.as_str()),
        ("username", "dev"),
        ("password", PASSWORD),
        ("password_confirmation", PASSWORD),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(b.post_form("/developers/signup", &signup).await.status(), StatusCode::SEE_OTHER);
    let dev = app.state.store.user_by_username("dev").await.unwrap().unwrap();
    let (id, _) = register_in_portal(&b, app_form("Scheduler")).await;
    let edit = format!("/developers/apps/{id}/edit");
    let mut fields = vec![("csrf_token".to_owned(), csrf_of(&b, &edit).await)];
    fields.extend(with(app_form("Scheduler"), &[("connect_url", "https://partner.example/connect"), ("published", "1")]));
    assert_eq!(b.post_form(&edit, &fields).await.status(), StatusCode::SEE_OTHER);
    let csrf = csrf_of(&b, &format!("/developers/apps/{id}/secret")).await;
    let r = b.post_form(&format!("/developers/apps/{id}/secret"), &[("csrf_token".into(), csrf.clone())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = b
        .post_form(
            &format!("/developers/apps/{id}/delete"),
            &[("csrf_token".into(), csrf), ("confirm_name".into(), "Scheduler".into())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let created = app.events_of("user.created").await;
    assert_eq!(created[0].subject.as_deref(), Some(dev.id.as_str()));
    for kind in ["user.created", "client.created", "client.updated", "client.secret_rotated", "client.deleted"] {
        let events = app.events_of(kind).await;
        assert_eq!(events.len(), 1, "{kind}");
        assert_eq!(events[0].actor_user_id.as_deref(), Some(dev.id.as_str()), "{kind}");
        assert_eq!(events[0].ip.as_deref(), Some("127.0.0.1"), "{kind}");
    }
    // Ticking "list it" is a request, audited with the developer too.
    let updated = &app.events_of("client.updated").await[0];
    let data: serde_json::Value = serde_json::from_str(updated.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["listing"], "requested");
    let requested = app.events_of("client.listing_requested").await;
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0].actor_user_id.as_deref(), Some(dev.id.as_str()));
    assert_eq!(requested[0].ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn another_developers_app_does_not_exist_for_you() {
    let app = spawn_app().await;
    let (owner, _) = app.signed_in("owner").await;
    let (id, secret) = register_in_portal(&owner, app_form("Mine")).await;
    let (other, _) = app.signed_in("other").await;
    for path in ["", "/edit", "/delete"] {
        let r = other.get(&format!("/developers/apps/{id}{path}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let csrf = csrf_of(&other, "/developers/apps/new").await;
    for path in ["/secret", "/webhook-secret", "/delete", "/edit"] {
        let mut form = vec![("csrf_token".to_owned(), csrf.clone())];
        form.extend(with(app_form("Stolen"), &[("confirm_name", "Mine")]));
        let r = other.post_form(&format!("/developers/apps/{id}{path}"), &form).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Apps the operator registered (no owner) are no one's in the portal.
    let cli_app = app.confidential().await;
    let r = other.get(&format!("/developers/apps/{}", cli_app.id())).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let c = app.state.store.client(&id).await.unwrap().unwrap();
    assert_eq!(c.name, "Mine");
    assert_eq!(token_with(&app, &id, &secret.unwrap()).await, StatusCode::OK);
}

#[tokio::test]
async fn deleting_an_app_needs_its_name_and_ends_its_tokens() {
    let app = spawn_app().await;
    let (b, dev) = app.signed_in("dev").await;
    let (id, secret) = register_in_portal(&b, app_form("Doomed")).await;
    let client = TestClient {
        client: app.state.store.client(&id).await.unwrap().unwrap(),
        secret,
    };
    let code = app.code(&b, &client, &[]).await;
    let (_, tokens) = app.exchange(&client, &code, &[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await, StatusCode::OK);
    let path = format!("/developers/apps/{id}/delete");
    let csrf = csrf_of(&b, &path).await;
    let r = b
        .post_form(&path, &[("csrf_token".into(), csrf.clone()), ("confirm_name".into(), "doomed".into())])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("id=\"confirm_name-error\""));
    assert!(app.state.store.client(&id).await.unwrap().is_some());
    let r = b
        .post_form(&path, &[("csrf_token".into(), csrf), ("confirm_name".into(), "Doomed".into())])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/developers?deleted=1");
    assert!(app.state.store.client(&id).await.unwrap().is_none());
    assert_eq!(app.me(access).await, StatusCode::UNAUTHORIZED);
    assert!(app.state.store.clients_of_owner(&dev.id).await.unwrap().is_empty());
    let page = b.get("/developers?deleted=1").await.text().await.unwrap();
    assert!(page.contains("The app was deleted"));
}

#[tokio::test]
async fn the_app_page_lists_integrations_and_webhook_deliveries() {
    let app = spawn_app_with(|s| s.allow_http_webhooks = true).await;
    let (b, _) = app.signed_in("dev").await;
    let form = with(
        app_form("Connector"),
        &[
            ("connect_url", "https://partner.example/connect?code="),
            ("published", "1"),
            ("webhook_url", "http://127.0.0.1:9/hook"),
        ],
    );
    let (id, _) = register_in_portal(&b, form).await;
    // An operator lists it; a practice admin connects it from the directory.
    admin::approve_listing(&app.state.store, app.clock.as_ref(), &id, None, Actor::system())
        .await
        .unwrap();
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
    let practice = app.browser();
    practice.login("maple-admin", PASSWORD).await;
    let csrf = csrf_of(&practice, &format!("/integrations?org={}", org.id)).await;
    let r = practice
        .post_form(
            "/integrations/connect",
            &[
                ("csrf_token".into(), csrf),
                ("org".into(), org.id.clone()),
                ("client_id".into(), id.clone()),
                ("mode".into(), "redirect".into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Rotating the secret is an event the partner is told of.
    let csrf = csrf_of(&b, &format!("/developers/apps/{id}/secret")).await;
    b.post_form(&format!("/developers/apps/{id}/secret"), &[("csrf_token".into(), csrf)])
        .await;
    let page = readable(b.get(&format!("/developers/apps/{id}")).await.text().await.unwrap());
    assert!(page.contains("<td>Maple Practice</td><td>pending</td>"), "{page}");
    assert!(page.contains("<td><code>client.secret_rotated</code></td>"), "{page}");
}
