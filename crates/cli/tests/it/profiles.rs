//! Each seed platform's documented requests, sent unchanged to healthgate
//! started with that platform's example configuration
//! (`examples/config/{healthkey,fullscript,healthtap,hint}.toml`).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Sandbox, Server, browser, csrf_token, hidden_inputs, location};

const PASSWORD: &str = "correct horse battery";

fn config(name: &str) -> String {
    format!(
        "{}/../../examples/config/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A sandbox and a running server on `profile`'s configuration.
async fn start(profile: &str) -> (Sandbox, Server, String) {
    let sandbox = Sandbox::new();
    let cfg = config(profile);
    let mut server = sandbox.serve(&["--config", &cfg]);
    server.wait_healthy().await;
    (sandbox, server, cfg)
}

fn run(sandbox: &Sandbox, cfg: &str, args: &[&str]) -> Value {
    let mut all = vec!["--config", cfg];
    all.extend_from_slice(args);
    all.push("--json");
    sandbox.run(&all).json()
}

/// Signs `username` in on `server` and answers `authorize_url` with `decision`.
async fn allow(
    server: &Server,
    authorize_url: &str,
    username: &str,
    decision: &str,
) -> reqwest::Url {
    crate::flow::authorize_in_browser(server, authorize_url, username, PASSWORD, decision).await
}

fn param(url: &reqwest::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn me_status(server: &Server, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(server.url("/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn healthkey_page_requests_work_unchanged() {
    let (sandbox, server, cfg) = start("healthkey").await;
    let redirect = "https://example.com/oauth/redirect";
    let app = run(
        &sandbox,
        &cfg,
        &[
            "client",
            "create",
            "--name",
            "HK App",
            "--redirect-uri",
            redirect,
            "--scope",
            "profile address payment",
            "--public",
        ],
    );
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    run(
        &sandbox,
        &cfg,
        &[
            "user",
            "create",
            "--username",
            "hk-user",
            "--password",
            PASSWORD,
        ],
    );

    // 1. Request an authorization code at /o/authorize/ with state (and PKCE).
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let authorize = format!(
        "{}/o/authorize/?response_type=code&client_id={client_id}&redirect_uri={redirect}&scope=profile%20payment&state=asdfdfs133&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        server.base()
    );
    let (consent, back) =
        crate::flow::authorize_seeing_consent(&server, &authorize, "hk-user", PASSWORD, "allow")
            .await;
    let consent = consent.expect("a consent page");
    for words in [
        "Read your profile",
        "Make payments with your HealthKey account",
    ] {
        assert!(consent.contains(words), "{words}: {consent}");
    }
    assert!(!consent.contains("See your address"), "not asked for");
    assert!(back.as_str().starts_with(redirect), "{back}");
    assert_eq!(param(&back, "state"), "asdfdfs133");
    let code = param(&back, "code");

    // 2. The token request, parameters in the URL as the page shows.
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{}/o/token/?code={code}&grant_type=authorization_code&client_id={client_id}&redirect_uri={redirect}&code_verifier={verifier}",
            server.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 36000);
    for f in ["access_token", "refresh_token", "created_at"] {
        assert!(!tokens[f].is_null(), "{f}: {tokens}");
    }
    let old_access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // 3. Refresh, with the original redirect_uri and the code verifier.
    let r = http
        .post(format!(
            "{}/o/token/?client_id={client_id}&refresh_token={refresh}&grant_type=refresh_token&redirect_uri={redirect}&code_verifier={verifier}",
            server.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let refreshed: Value = r.json().await.unwrap();
    assert_eq!(refreshed["expires_in"], 36000);
    // "This request invalidates the existing access_token and refresh_token."
    assert_eq!(
        me_status(&server, &old_access).await,
        StatusCode::UNAUTHORIZED
    );
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(
        me_status(&server, new_access).await,
        StatusCode::FORBIDDEN,
        "valid; /me needs profile_read, which HealthKey has not"
    );
    // Secrets in URLs are accepted only under this profile, and logged.
    assert!(
        server.stderr().contains("query string"),
        "the warning is logged"
    );

    // HealthKey's third scope, the address.
    let with_address = format!(
        "{}/o/authorize/?response_type=code&client_id={client_id}&redirect_uri={redirect}&scope=profile%20address&state=s2&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        server.base()
    );
    let (consent, back) =
        crate::flow::authorize_seeing_consent(&server, &with_address, "hk-user", PASSWORD, "allow")
            .await;
    let consent = consent.expect("address was not granted before: asked again");
    assert!(consent.contains("See your address"), "{consent}");
    let code = param(&back, "code");
    let r = http
        .post(format!(
            "{}/o/token/?code={code}&grant_type=authorization_code&client_id={client_id}&redirect_uri={redirect}&code_verifier={verifier}",
            server.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["scope"], "address profile", "{tokens}");
}

#[tokio::test]
async fn fullscript_page_requests_work_unchanged() {
    let (sandbox, server, cfg) = start("fullscript").await;
    let redirect = "https://partner.example/fullscript/callback";
    let app = run(
        &sandbox,
        &cfg,
        &[
            "client",
            "create",
            "--name",
            "FS App",
            "--redirect-uri",
            redirect,
            "--scope",
            "catalog:read patients:treatment_plan_history",
        ],
    );
    let (client_id, secret) = (
        app["client_id"].as_str().unwrap().to_owned(),
        app["client_secret"].as_str().unwrap().to_owned(),
    );
    let clinic = run(
        &sandbox,
        &cfg,
        &[
            "org",
            "create",
            "--name",
            "Fullscript Clinic",
            "--kind",
            "clinic",
        ],
    );
    run(
        &sandbox,
        &cfg,
        &[
            "user",
            "create",
            "--username",
            "dr-fs",
            "--password",
            PASSWORD,
            "--type",
            "expert",
        ],
    );
    run(
        &sandbox,
        &cfg,
        &[
            "org",
            "add-member",
            clinic["id"].as_str().unwrap(),
            "dr-fs",
            "--role",
            "practitioner",
        ],
    );

    // The app's scopes were set at registration: an authorize URL without
    // a scope asks for them, in Fullscript's words.
    let authorize = format!(
        "{}/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={redirect}",
        server.base()
    );
    let (consent, back) =
        crate::flow::authorize_seeing_consent(&server, &authorize, "dr-fs", PASSWORD, "allow")
            .await;
    let consent = consent.expect("a consent page");
    for words in ["See the product catalog", "treatment plans"] {
        assert!(consent.contains(words), "{words}: {consent}");
    }
    assert!(!consent.contains("orders"), "not registered: {consent}");
    let code = param(&back, "code");
    let http = reqwest::Client::new();
    let token = |body: Value| {
        let http = http.clone();
        let url = server.url("/api/oauth/token");
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    let r = token(json!({ "client_id": client_id, "client_secret": secret, "code": code, "grant_type": "authorization_code", "redirect_uri": redirect })).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let oauth = &body["oauth"];
    assert_eq!(oauth["expires_in"], 7200, "{body}");
    assert_eq!(
        oauth["scope"], "catalog:read patients:treatment_plan_history",
        "{body}"
    );
    assert_eq!(oauth["resource_owner"]["type"], "Practitioner");
    assert!(
        oauth["resource_owner"]["id"]
            .as_str()
            .unwrap()
            .starts_with("usr-")
    );
    let first_refresh = oauth["refresh_token"].as_str().unwrap().to_owned();

    // Refresh tokens rotate on first use: the old one works until the new pair is used.
    let refresh = |rt: String| {
        token(
            json!({ "client_id": client_id, "client_secret": secret, "grant_type": "refresh_token", "refresh_token": rt }),
        )
    };
    let r1: Value = refresh(first_refresh.clone()).await.json().await.unwrap();
    let r2 = refresh(first_refresh.clone()).await;
    assert_eq!(
        r2.status(),
        StatusCode::OK,
        "the old refresh token still works before the new one is used"
    );
    let r2: Value = r2.json().await.unwrap();
    assert_eq!(
        me_status(&server, r2["oauth"]["access_token"].as_str().unwrap()).await,
        StatusCode::FORBIDDEN,
        "valid; /me needs profile_read, which is not among Fullscript's scopes"
    );
    assert_eq!(
        refresh(first_refresh).await.status(),
        StatusCode::BAD_REQUEST,
        "used now: retired"
    );
    assert_eq!(
        me_status(&server, r1["oauth"]["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );

    // A scope in the authorize URL, narrower or never registered, is
    // ignored: the registered scopes are asked for and granted.
    for scope in ["catalog:read", "patients:order_history", "no_such_scope"] {
        let other = format!("{authorize}&scope={scope}");
        let code = param(&allow(&server, &other, "dr-fs", "allow").await, "code");
        let got: Value = token(json!({ "client_id": client_id, "client_secret": secret, "code": code, "grant_type": "authorization_code", "redirect_uri": redirect }))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            got["oauth"]["scope"], "catalog:read patients:treatment_plan_history",
            "scope={scope}: {got}"
        );
    }

    // Revocation in Fullscript's shape.
    let code = param(&allow(&server, &authorize, "dr-fs", "allow").await, "code");
    let fresh: Value = token(json!({ "client_id": client_id, "client_secret": secret, "code": code, "grant_type": "authorization_code", "redirect_uri": redirect }))
        .await
        .json()
        .await
        .unwrap();
    let access = fresh["oauth"]["access_token"].as_str().unwrap();
    assert_eq!(me_status(&server, access).await, StatusCode::FORBIDDEN);
    let r = http
        .post(server.url("/api/oauth/revoke"))
        .json(&json!({ "client_id": client_id, "client_secret": secret, "token": access }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(me_status(&server, access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn healthtap_page_requests_work_unchanged() {
    let (sandbox, server, cfg) = start("healthtap").await;
    let redirect = "https://www.mywebsite.com/login_with_healthtap";
    let app = run(
        &sandbox,
        &cfg,
        &[
            "client",
            "create",
            "--name",
            "MyApp",
            "--redirect-uri",
            redirect,
            "--scope",
            "profile_read profile_write",
            "--user-types",
            "member,expert",
        ],
    );
    let (client_id, secret) = (
        app["client_id"].as_str().unwrap().to_owned(),
        app["client_secret"].as_str().unwrap().to_owned(),
    );
    run(
        &sandbox,
        &cfg,
        &[
            "user",
            "create",
            "--username",
            "ht-member",
            "--password",
            PASSWORD,
        ],
    );

    // HealthTap provides the identity: Allow…
    let authorize = format!(
        "{}/oauth/authorize?client_id={client_id}&response_type=code&redirect_uri={redirect}&scope=profile_write",
        server.base()
    );
    let code = param(
        &allow(&server, &authorize, "ht-member", "allow").await,
        "code",
    );
    let r = reqwest::Client::new()
        .post(server.url("/oauth/token"))
        .basic_auth(&client_id, Some(&secret))
        .json(&json!({ "grant_type": "authorization_code", "code": code, "client_id": client_id, "redirect_uri": redirect }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    assert!(
        tokens["access_token"].is_string()
            && tokens["refresh_token"].is_string()
            && tokens["expires_in"].is_i64()
    );
    // …or Deny.
    let ask_again = format!(
        "{}/oauth/authorize?client_id={client_id}&response_type=code&redirect_uri={redirect}&scope=profile_read",
        server.base()
    );
    let denied = allow(&server, &ask_again, "ht-member", "deny").await;
    assert_eq!(param(&denied, "error"), "access_denied");

    // You manage the identity: create the account on the fly. The app was
    // registered with HealthTap's form scopes and nothing more: its
    // provisioned accounts get member_public, as the page shows.
    let provision = |username: &'static str| {
        let (client_id, secret) = (client_id.clone(), secret.clone());
        let url = server.url("/api/v2.1/users.json");
        async move {
            reqwest::Client::new()
                .post(url)
                .basic_auth(&client_id, Some(&secret))
                .json(&json!({ "username": username, "password": "RANDOM_PASSWORD_FOR_YOUR_USER" }))
                .send()
                .await
                .unwrap()
        }
    };
    let r = provision("YOUR_INTERNAL_ID").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["token_type"], "bearer");
    assert_eq!(created["scope"], "member_public");
    for f in [
        "access_token",
        "expires_in",
        "refresh_token",
        "created_at",
        "guid",
    ] {
        assert!(!created[f].is_null(), "{f}: {created}");
    }

    // An app's own provisioning scope still wins.
    run(
        &sandbox,
        &cfg,
        &[
            "client",
            "update",
            &client_id,
            "--provisioning-scope",
            "profile_read",
        ],
    );
    let r = provision("ANOTHER_INTERNAL_ID").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["scope"], "profile_read", "{created}");
}

#[tokio::test]
async fn hint_page_requests_work_unchanged() {
    let (sandbox, server, cfg) = start("hint").await;
    let app = run(
        &sandbox,
        &cfg,
        &[
            "client",
            "create",
            "--name",
            "Partner",
            "--redirect-uri",
            "https://partner.example/cb",
            "--scope",
            "profile_read",
        ],
    );
    let (client_id, secret) = (
        app["client_id"].as_str().unwrap().to_owned(),
        app["client_secret"].as_str().unwrap().to_owned(),
    );
    let connect = "https://partner.example/hint/connect/";
    run(
        &sandbox,
        &cfg,
        &[
            "client",
            "update",
            &client_id,
            "--publish",
            "--connect-url",
            connect,
            "--description",
            "Scheduling",
        ],
    );
    run(&sandbox, &cfg, &["client", "approve", &client_id]);
    let practice = run(
        &sandbox,
        &cfg,
        &["org", "create", "--name", "Joe's Practice"],
    );
    run(
        &sandbox,
        &cfg,
        &[
            "user",
            "create",
            "--username",
            "joe",
            "--password",
            PASSWORD,
            "--name",
            "Joe",
            "--email",
            "joe@example.org",
        ],
    );
    run(
        &sandbox,
        &cfg,
        &[
            "org",
            "add-member",
            practice["id"].as_str().unwrap(),
            "joe",
            "--role",
            "admin",
        ],
    );

    // The provider sees the integration and clicks Connect.
    let http = browser();
    let page = http
        .get(server.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    http.post(server.url("/login"))
        .form(&[
            ("username", "joe"),
            ("password", PASSWORD),
            ("csrf_token", &csrf_token(&page)),
            ("return_to", "/integrations"),
        ])
        .send()
        .await
        .unwrap();
    let page = http
        .get(server.url("/integrations"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut named = Vec::new();
    // The first of each: the header's Sign out form carries a csrf_token too.
    let form: Vec<(String, String)> = hidden_inputs(&page)
        .into_iter()
        .filter(|(k, _)| ["csrf_token", "org", "client_id"].contains(&k.as_str()))
        .filter(|(k, _)| {
            let first = !named.contains(k);
            named.push(k.clone());
            first
        })
        .chain([("mode".to_owned(), "redirect".to_owned())])
        .collect();
    let r = http
        .post(server.url("/integrations/connect"))
        .form(&form)
        .send()
        .await
        .unwrap();
    // "We just put the authorization code immediately after your url."
    let to = location(&r).to_string();
    let code = to.strip_prefix(connect).unwrap_or_else(|| panic!("{to}"));

    let r = reqwest::Client::new()
        .post(server.url("/api/oauth/tokens"))
        .bearer_auth(&secret)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("int-"));
    assert_eq!(body["status"], "connected");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["practice"]["name"], "Joe's Practice");
    assert_eq!(body["activated_by"]["name"], "Joe");
    let key = body["access_token"].as_str().unwrap();
    let practice_api = reqwest::Client::new()
        .get(server.url("/api/v1/practice"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(practice_api.status(), StatusCode::OK);
}
