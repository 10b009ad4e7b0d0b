//! The authorization endpoint: validation, login, consent, and the
//! authorization response.

use healthgate_core::user::UserType;
use reqwest::StatusCode;

use super::*;

fn authorize_params<'a>(client_id: &'a str, redirect_uri: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", "profile_read"),
        ("state", "xyz"),
    ]
}

#[tokio::test]
async fn exact_redirect_uri_matching_rejects_near_misses() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let near_misses = [
        "https://partner.example/callback/",
        "https://partner.example/callback?extra=1",
        "https://partner.example/Callback",
        "https://PARTNER.example/callback",
        "https://partner.example@evil.example/callback",
        "https://evil.example@partner.example/callback",
        "https://partner.example/callback#frag",
        "https://partner.example.evil.example/callback",
        "https://partner-example.com/callback",
        "https://partner.example/callback/../admin",
        "https://partner.example/callback/%2e%2e/admin",
        "https://partner.example/%63allback",
        "http://partner.example/callback",
        "https://partner.example:443/callback",
    ];
    for uri in near_misses {
        let r = browser.authorize(&authorize_params(client.id(), uri)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            r.headers().get("location").is_none(),
            "{uri} must not redirect"
        );
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("redirect_uri is not registered"),
            "{uri}"
        );
    }
    // The exact URI works.
    let r = browser
        .authorize(&authorize_params(client.id(), REDIRECT))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn invalid_client_never_redirects() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let browser = app.browser();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        authorize_params("app-unknown", REDIRECT),
        vec![
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "profile_read"),
        ],
        vec![
            ("client_id", client.id()),
            ("client_id", client.id()),
            ("redirect_uri", REDIRECT),
        ],
        vec![
            ("client_id", client.id()),
            ("redirect_uri", REDIRECT),
            ("redirect_uri", "https://evil.example/cb"),
        ],
    ];
    for params in cases {
        let r = browser.authorize(&params).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert!(r.headers().get("location").is_none(), "{params:?}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/html"), "{ct}");
    }
}

#[tokio::test]
async fn redirect_uri_may_be_omitted_only_with_one_registered() {
    let app = spawn_app().await;
    let one = app.confidential().await;
    let two = app
        .register(ClientSpec {
            redirect_uris: vec![REDIRECT, "https://partner.example/other"],
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = app.signed_in("alice").await;
    let params = |id| {
        vec![
            ("response_type", "code"),
            ("client_id", id),
            ("scope", "profile_read"),
        ]
    };
    assert_eq!(
        browser.authorize(&params(one.id())).await.status(),
        StatusCode::OK
    );
    let r = browser.authorize(&params(two.id())).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn request_errors_redirect_with_state_and_iss() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let browser = app.browser();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("scope", "profile_read pay")], "invalid_scope"),
        (vec![("scope", "")], "invalid_scope"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (
            vec![
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "plain"),
            ],
            "invalid_request",
        ),
        (vec![("code_challenge", CHALLENGE)], "invalid_request"),
        (vec![("code_challenge_method", "S256")], "invalid_request"),
    ];
    let state = "a b&c=d/é?%";
    for (overrides, expected) in cases {
        let mut params = authorize_params(client.id(), REDIRECT);
        params.retain(|(k, _)| *k != "state");
        params.push(("state", state));
        for (k, v) in &overrides {
            params.retain(|(pk, _)| pk != k);
            params.push((k, v));
        }
        let r = browser.authorize(&params).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{overrides:?}");
        let loc = location(&r);
        assert!(loc.starts_with(REDIRECT), "{loc}");
        let q = query_of(&loc);
        assert_eq!(q["error"], expected, "{overrides:?}");
        assert_eq!(q["state"], state, "state must come back byte for byte");
        assert_eq!(q["iss"], app.base, "RFC 9207 iss");
        assert!(!q.contains_key("code"));
    }
}

#[tokio::test]
async fn public_clients_must_use_pkce_s256() {
    let app = spawn_app().await;
    let client = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = app.signed_in("alice").await;
    let r = browser
        .authorize(&authorize_params(client.id(), REDIRECT))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(query_of(&location(&r))["error"], "invalid_request");
    let mut params = authorize_params(client.id(), REDIRECT);
    params.extend([
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]);
    assert_eq!(browser.authorize(&params).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn not_logged_in_goes_to_login_then_back_to_the_request() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    app.user("alice", UserType::Member).await;
    let browser = app.browser();
    let params = authorize_params(client.id(), REDIRECT);
    let r = browser.authorize(&params).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let login_url = location(&r);
    assert!(login_url.starts_with("/login?return_to="), "{login_url}");
    let page = browser.get(&login_url).await.text().await.unwrap();
    assert!(
        page.contains("to continue to <strong>Partner App</strong>"),
        "login names the app"
    );
    let mut form = hidden_input_list(&page);
    assert!(form.iter().any(|(k, _)| k == "csrf_token"));
    assert!(page.contains("name=\"username\"") && page.contains("name=\"password\""));
    form.push(("username".into(), "alice".into()));
    form.push(("password".into(), PASSWORD.into()));
    let r = browser.post_form("/login", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert_eq!(
        back,
        format!("/oauth/authorize?{}", serde_urlencoded(&params))
    );
    let consent = browser.get(&back).await;
    assert_eq!(consent.status(), StatusCode::OK);
    let page = consent.text().await.unwrap();
    assert!(page.contains("Partner App"));
    assert!(
        page.contains(&format!("src=\"/apps/{}/photo?v=", client.id())),
        "app photo, served here: {page}"
    );
    assert!(page.contains("Read your profile"), "scope in plain words");
    assert!(page.contains("name=\"decision\" value=\"allow\""));
    assert!(page.contains("name=\"decision\" value=\"deny\""));
}

#[tokio::test]
async fn login_failures_look_the_same() {
    let app = spawn_app().await;
    app.user("alice", UserType::Member).await;
    let wrong_password = app.browser().login("alice", "not the password").await;
    let no_such_user = app.browser().login("nobody", "not the password").await;
    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(no_such_user.status(), StatusCode::UNAUTHORIZED);
    let a = wrong_password.text().await.unwrap();
    let b = no_such_user.text().await.unwrap();
    assert!(a.contains("The username or password is incorrect."));
    assert_eq!(
        a.replace("alice", "USER").split("csrf_token").next(),
        b.replace("nobody", "USER").split("csrf_token").next()
    );
}

#[tokio::test]
async fn deny_returns_access_denied_with_state() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let page = browser
        .authorize(&authorize_params(client.id(), REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    let r = browser.consent(&page, "deny").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.base);
    assert!(!q.contains_key("code"));
}

#[tokio::test]
async fn allow_returns_code_state_and_iss() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let page = browser
        .authorize(&authorize_params(client.id(), REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    let r = browser.consent(&page, "allow").await;
    let loc = location(&r);
    assert!(loc.starts_with(&format!("{REDIRECT}?code=hg_ac_")), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.base);
}

/// Fullscript's rule (`[profile] scopes_from_registration`): the
/// authorization request's `scope` is ignored, whatever it says, and the
/// app's registered scopes are asked for and granted. Without the setting a
/// missing or unregistered scope is still `invalid_scope`.
#[tokio::test]
async fn with_scopes_from_registration_the_registered_scopes_are_asked_for() {
    let app = spawn_app_with(|s| s.profile.scopes_from_registration = true).await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    for scope in [None, Some("profile_read"), Some("pay"), Some("a\"b")] {
        let mut params = authorize_params(client.id(), REDIRECT);
        params.retain(|(k, _)| *k != "scope");
        params.extend(scope.map(|s| ("scope", s)));
        params.push(("prompt", "consent"));
        let r = browser.authorize(&params).await;
        assert_eq!(r.status(), StatusCode::OK, "scope {scope:?}");
        let page = r.text().await.unwrap();
        assert!(page.contains("Read your profile"), "{page}");
        assert!(page.contains("Update your profile"), "{page}");
        let back = location(&browser.consent(&page, "allow").await);
        let code = query_of(&back).remove("code").expect("a code");
        let (status, tokens) = app.exchange(&client, &code, &[]).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert_eq!(tokens["scope"], "profile_read profile_write", "scope {scope:?}");
    }

    let standard = spawn_app().await;
    let client = standard.confidential().await;
    let (browser, _) = standard.signed_in("alice").await;
    for scope in [None, Some("pay")] {
        let mut params = authorize_params(client.id(), REDIRECT);
        params.retain(|(k, _)| *k != "scope");
        params.extend(scope.map(|s| ("scope", s)));
        let r = browser.authorize(&params).await;
        assert_eq!(query_of(&location(&r))["error"], "invalid_scope", "scope {scope:?}");
    }
}

#[tokio::test]
async fn consent_is_remembered_for_confidential_clients_only() {
    let app = spawn_app().await;
    let confidential = app.confidential().await;
    let public = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = app.signed_in("alice").await;
    app.code(&browser, &confidential, &[]).await;
    // Same scope again: straight to the redirect.
    let r = browser
        .authorize(&authorize_params(confidential.id(), REDIRECT))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(query_of(&location(&r)).contains_key("code"));
    // A wider scope asks again.
    let mut wider = authorize_params(confidential.id(), REDIRECT);
    wider.retain(|(k, _)| *k != "scope");
    wider.push(("scope", "profile_read profile_write"));
    assert_eq!(browser.authorize(&wider).await.status(), StatusCode::OK);
    // A public client is asked every time.
    let pkce = [
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    app.code(&browser, &public, &pkce).await;
    let mut again = authorize_params(public.id(), REDIRECT);
    again.extend(pkce);
    assert_eq!(browser.authorize(&again).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn apps_refuse_user_types_they_do_not_serve() {
    let app = spawn_app().await;
    let experts_only = app
        .register(ClientSpec {
            user_types: vec![UserType::Expert],
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = app.signed_in("member1").await;
    let r = browser
        .authorize(&authorize_params(experts_only.id(), REDIRECT))
        .await;
    // A clear page, and the way back gives the app access_denied.
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(page.contains("not available to member accounts"), "{page}");
    let q = query_of(&back_link(&page));
    assert_eq!(q["error"], "access_denied");
    assert!(q["error_description"].contains("member"));
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.base);
}

/// The "Return to the app" link of a refusal page.
pub fn back_link(page: &str) -> String {
    let href = page
        .split("id=\"back-to-app\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no way back in {page}"));
    let decoded = hidden_input_list(&format!("<input type=\"hidden\" name=\"x\" value=\"{href}\">"));
    decoded[0].1.clone()
}

#[tokio::test]
async fn csrf_missing_or_wrong_is_403() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    app.user("alice", UserType::Member).await;

    // Login form.
    let browser = app.browser();
    let page = browser.get("/login").await.text().await.unwrap();
    let good = hidden_inputs(&page)["csrf_token"].clone();
    for token in [None, Some("hg_csrf_wrong".to_owned())] {
        let mut form = vec![
            ("username".to_owned(), "alice".to_owned()),
            ("password".to_owned(), PASSWORD.to_owned()),
        ];
        if let Some(t) = token {
            form.push(("csrf_token".into(), t));
        }
        assert_eq!(
            browser.post_form("/login", &form).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    // A foreign Origin is refused even with the right token.
    let r = browser
        .http
        .post(app.url("/login"))
        .header("origin", "https://evil.example")
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("csrf_token", good.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Consent form: another session's token, or none.
    let (alice, _) = (browser, ());
    assert_eq!(
        alice.login("alice", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let page = alice
        .authorize(&authorize_params(client.id(), REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    let mut form = hidden_input_list(&page);
    form.retain(|(k, _)| k != "csrf_token");
    form.push(("decision".into(), "allow".into()));
    let r = alice.post_form("/oauth/authorize", &form).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("location").is_none());
    let (mallory, _) = app.signed_in("mallory").await;
    let mallory_page = mallory
        .authorize(&authorize_params(client.id(), REDIRECT))
        .await
        .text()
        .await
        .unwrap();
    form.push((
        "csrf_token".into(),
        hidden_inputs(&mallory_page)["csrf_token"].clone(),
    ));
    assert_eq!(
        alice.post_form("/oauth/authorize", &form).await.status(),
        StatusCode::FORBIDDEN
    );
    // A consent POST without any session.
    assert_eq!(
        app.browser()
            .post_form("/oauth/authorize", &form)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn pages_cannot_be_framed() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let responses = vec![
        browser.get("/login").await,
        browser.get("/").await,
        browser
            .authorize(&authorize_params(client.id(), REDIRECT))
            .await,
        browser
            .authorize(&authorize_params("app-unknown", REDIRECT))
            .await,
    ];
    for r in responses {
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{}", r.url());
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
    }
}

#[tokio::test]
async fn session_cookie_is_httponly_and_samesite() {
    let app = spawn_app().await;
    let r = app.http().get(app.url("/login")).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("hg_session=hg_ss_"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
}

#[tokio::test]
async fn login_rotates_the_session_id() {
    let app = spawn_app().await;
    app.user("alice", UserType::Member).await;
    let r = app.http().get(app.url("/login")).send().await.unwrap();
    let before = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = r.text().await.unwrap();
    let csrf = hidden_inputs(&page)["csrf_token"].clone();
    let r = app
        .http()
        .post(app.url("/login"))
        .header("cookie", &before)
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let after = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(before, after);
    // The pre-login session id is worthless now.
    let home = app
        .http()
        .get(app.url("/"))
        .header("cookie", &before)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!home.contains("Signed in as"));
    let home = app
        .http()
        .get(app.url("/"))
        .header("cookie", &after)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("Signed in as <strong>alice</strong>"));
}

#[tokio::test]
async fn pages_carry_the_platform_name() {
    let app = spawn_app_with(|s| s.platform_name = "Acme Health".into()).await;
    let browser = app.browser();
    let login = browser.get("/login").await.text().await.unwrap();
    assert!(login.contains("Acme Health"));
    let r = browser
        .authorize(&authorize_params("app-unknown", REDIRECT))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Acme Health") && page.contains("not registered"),
        "{page}"
    );
}

#[tokio::test]
async fn malformed_form_bodies_get_a_page_not_a_parser_error() {
    let app = spawn_app().await;
    let r = app
        .browser()
        .http
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=%ZZ&password=%&&csrf_token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

/// A real browser sends the page's own origin with its forms: they must be
/// accepted. (Under `Referrer-Policy: no-referrer` browsers send
/// `Origin: null` instead, which the check refuses, so the policy matters.)
#[tokio::test]
async fn same_origin_forms_are_accepted() {
    let app = spawn_app().await;
    app.user("alice", UserType::Member).await;
    let browser = app.browser();
    let r = browser.get("/login").await;
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    let csrf = hidden_inputs(&r.text().await.unwrap())["csrf_token"].clone();
    let r = browser
        .http
        .post(app.url("/login"))
        .header("origin", app.base.as_str())
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn branding_reaches_every_page() {
    let app = spawn_app_with(|s| {
        s.platform_name = "Northwind Health".into();
        s.branding.logo_url = Some("/static/logo.svg".parse().unwrap());
        s.branding.accent_color = "#aa3300".parse().unwrap();
        s.branding.support_url = Some("https://help.northwind.example/".parse().unwrap());
    })
    .await;
    let browser = app.browser();
    for path in ["/login", "/", "/nope"] {
        let page = browser.get(path).await.text().await.unwrap();
        assert!(page.contains("Northwind Health"), "{path}");
        assert!(page.contains(r#"src="/static/logo.svg""#), "{path}");
        assert!(page.contains(r#"href="https://help.northwind.example/""#), "{path}");
        assert!(page.contains(r#"href="/static/brand.css""#), "{path}");
    }
    let css = browser.get("/static/brand.css").await.text().await.unwrap();
    assert!(css.contains("--accent: #aa3300"), "{css}");
}
