//! SMART App Launch 2.2: discovery, and SMART's scopes at registration,
//! authorization (a registered wildcard allows a narrower request) and
//! consent.

use reqwest::StatusCode;
use serde_json::Value;

use super::*;

const FHIR: &str = "https://fhir.example.com/r4";
const LAB: &str = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

async fn smart_app() -> TestApp {
    spawn_app_with(|s| {
        s.smart.fhir_base_urls = vec![format!("{FHIR}/").parse().unwrap()];
    })
    .await
}

async fn smart_client(app: &TestApp) -> TestClient {
    app.register(ClientSpec {
        scope: "openid fhirUser patient/*.rs launch/patient offline_access",
        ..ClientSpec::default()
    })
    .await
}

/// `username` signed in, with one patient record linked (`123`, "Alice
/// Example"): `patient/` scopes have a patient in context.
async fn with_patient(app: &TestApp, username: &str) -> (Browser, User) {
    let (browser, user) = app.signed_in(username).await;
    link(app, &user, "123", "Alice Example").await;
    (browser, user)
}

async fn link(app: &TestApp, user: &User, patient: &str, display: &str) {
    healthgate_server::services::smart::link_patient(
        &app.state.store,
        app.clock.now(),
        &user.id,
        healthgate_core::smart::PatientLink {
            patient_id: patient.into(),
            display: display.into(),
        },
        Actor::system(),
    )
    .await
    .unwrap();
}

fn authorize_params<'a>(client: &'a TestClient, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client.id()),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "s1"),
        ("aud", FHIR),
    ]
}

#[tokio::test]
async fn smart_configuration_is_off_until_a_fhir_server_is_named() {
    let app = spawn_app().await;
    let r = app
        .http()
        .get(app.url("/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn smart_configuration_lists_what_is_supported_as_json_for_any_origin() {
    let app = smart_app().await;
    // A browser app asks from its own origin, perhaps for HTML.
    let r = app
        .http()
        .get(app.url("/.well-known/smart-configuration"))
        .header("accept", "text/html")
        .header("origin", "https://app.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let c: Value = r.json().await.unwrap();
    let issuer = c["issuer"].as_str().unwrap().to_owned();
    assert_eq!(issuer, app.base);
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
        "pushed_authorization_request_endpoint",
    ] {
        let url = c[field].as_str().unwrap_or_else(|| panic!("{field}"));
        assert!(url.starts_with(&format!("{issuer}/")), "{field}: {url}");
    }
    assert_eq!(c["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(c["response_types_supported"], serde_json::json!(["code"]));
    let capabilities: Vec<&str> = c["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for expected in [
        "permission-v2",
        "permission-v1",
        "authorize-post",
        "client-public",
        "launch-ehr",
        "launch-standalone",
        "context-ehr-patient",
        "context-standalone-patient",
        "sso-openid-connect",
        "permission-offline",
        "permission-online",
        "client-confidential-asymmetric",
    ] {
        assert!(capabilities.contains(&expected), "{expected}: {capabilities:?}");
    }
    // Nothing claimed before it works.
    assert!(
        !capabilities.contains(&"context-standalone-encounter"),
        "{capabilities:?}"
    );
    assert!(
        c["scopes_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "patient/*.rs")
    );
    assert!(
        c["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "authorization_code")
    );
}

#[tokio::test]
async fn a_registered_wildcard_allows_a_narrower_request_said_in_plain_words() {
    let app = smart_app().await;
    let client = smart_client(&app).await;
    let (browser, _) = with_patient(&app, "alice").await;
    let asked = format!("{LAB} offline_access");
    let r = browser.authorize(&authorize_params(&client, &asked)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(
        readable(page.clone()).contains("Read and search your lab results"),
        "{page}"
    );
    let r = browser.consent(&page, "allow").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let code = query_of(&location(&r))["code"].clone();
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let granted = format!("offline_access {LAB}");
    assert_eq!(body["scope"], granted, "granted as asked");
    assert!(body.get("aud").is_none(), "aud is not a token response parameter");
    // Introspection says the same scope, and which FHIR server the token is
    // for (the aud of the request, kept with the grant).
    let rs = app.resource_server().await;
    let seen = app.introspect(&rs, body["access_token"].as_str().unwrap()).await;
    assert_eq!(seen["scope"], granted);
    assert_eq!(seen["aud"], FHIR);
    // A refresh keeps it.
    let (status, refreshed) = app
        .refresh(&client, body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let seen = app
        .introspect(&rs, refreshed["access_token"].as_str().unwrap())
        .await;
    assert_eq!(seen["aud"], FHIR);
    assert_eq!(seen["scope"], granted);
    // A grant made without SMART names no FHIR server.
    let plain = app.confidential().await;
    let (access, _) = tokens_for(&app, &plain, "bob").await;
    assert!(app.introspect(&rs, &access).await.get("aud").is_none());
}

#[tokio::test]
async fn smart_scopes_beyond_the_registration_or_malformed_are_invalid_scope() {
    let app = smart_app().await;
    let client = smart_client(&app).await;
    let (browser, _) = with_patient(&app, "alice").await;
    for (scope, says) in [
        ("patient/*.cruds", "not allowed for this client"),
        ("user/Observation.rs", "not allowed for this client"),
        ("launch/encounter", "not allowed for this client"),
        ("patient/Observation.dus", "not a valid SMART scope"),
        ("patient/Observation.read?category=laboratory", "not a valid SMART scope"),
    ] {
        let r = browser.authorize(&authorize_params(&client, scope)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{scope}");
        let q = query_of(&location(&r));
        assert_eq!(q["error"], "invalid_scope", "{scope}");
        assert!(q["error_description"].contains(says), "{scope}: {q:?}");
        assert_eq!(q["state"], "s1");
    }
}

#[tokio::test]
async fn apps_are_registered_with_smart_scopes_only_when_smart_is_on() {
    let on = smart_app().await;
    let new = |scope: &str| NewClient {
        name: "SMART App".into(),
        redirect_uris: vec![REDIRECT.into()],
        scope: scope.into(),
        ..Default::default()
    };
    let registered = admin::create_client(
        &on.state.store,
        &on.state.settings,
        on.clock.as_ref(),
        new("patient/*.read user/Observation.rs?category=laboratory launch launch/patient fhirUser offline_access"),
        Actor::system(),
    )
    .await;
    assert!(registered.is_ok(), "{registered:?}");
    let malformed = admin::create_client(
        &on.state.store,
        &on.state.settings,
        on.clock.as_ref(),
        new("patient/Observation.rr"),
        Actor::system(),
    )
    .await
    .unwrap_err();
    assert!(malformed.to_string().contains("not a valid SMART scope"), "{malformed}");

    let off = spawn_app().await;
    let refused = admin::create_client(
        &off.state.store,
        &off.state.settings,
        off.clock.as_ref(),
        new("patient/*.rs"),
        Actor::system(),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("unknown scope"), "{refused}");
}

#[tokio::test]
async fn aud_names_a_configured_fhir_server_and_is_required_with_smart_scopes() {
    let app = smart_app().await;
    let client = smart_client(&app).await;
    let (browser, _) = with_patient(&app, "alice").await;
    let without = |extra: Vec<(&'static str, &'static str)>| {
        let mut p: Vec<(&str, &str)> = authorize_params(&client, "patient/*.rs")
            .into_iter()
            .filter(|(k, _)| *k != "aud")
            .collect();
        p.extend(extra);
        p
    };
    for (extra, says) in [
        (vec![], "aud is required"),
        (vec![("aud", "https://evil.example/fhir")], "not a FHIR server"),
        (
            vec![("aud", FHIR), ("resource", "https://other.example/fhir")],
            "different servers",
        ),
    ] {
        let r = browser.authorize(&without(extra.clone())).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{extra:?}");
        let q = query_of(&location(&r));
        assert_eq!(q["error"], "invalid_request", "{extra:?}");
        assert!(q["error_description"].contains(says), "{extra:?}: {q:?}");
    }
    // RFC 8707's resource works as aud, with or without a trailing slash,
    // through the consent page and the POST form that carries the request.
    let r = browser
        .authorize(&without(vec![("resource", "https://fhir.example.com/r4/")]))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    let r = browser.consent(&page, "allow").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(query_of(&location(&r)).contains_key("code"), "{}", location(&r));
    // The authorization request may be POSTed (SMART's authorize-post).
    let form: Vec<(String, String)> = authorize_params(&client, "patient/*.rs")
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let r = browser.post_form("/oauth/authorize", &form).await;
    // Consent to that scope was given just above: the code comes at once.
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    assert!(q.contains_key("code"), "{q:?}");
    assert_eq!(q["state"], "s1");
    // A new scope through POST reaches the consent page.
    let form: Vec<(String, String)> = authorize_params(&client, "patient/Condition.rs")
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let r = browser.post_form("/oauth/authorize", &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(readable(r.text().await.unwrap()).contains("Read and search your conditions"));
}

/// A browser app (public, PKCE) exchanges and refreshes its code from its
/// page: the token endpoint answers CORS for the origin of its redirect
/// URIs, preflight included, and for no other origin.
#[tokio::test]
async fn the_token_endpoint_answers_cors_for_a_browser_apps_own_origin_only() {
    const APP: &str = "https://growth.example.org";
    let app = smart_app().await;
    let client = app
        .register(ClientSpec {
            public: true,
            redirect_uris: vec![REDIRECT, "https://growth.example.org/app/callback"],
            scope: "openid patient/*.rs offline_access",
            ..ClientSpec::default()
        })
        .await;
    let other = app.confidential().await;
    let (browser, _) = with_patient(&app, "alice").await;
    let code = app
        .code(
            &browser,
            &client,
            &[
                ("scope", "patient/*.rs offline_access"),
                ("aud", FHIR),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;

    // The preflight, for a page that adds a header.
    let preflight = |origin: &'static str| {
        app.http()
            .request(reqwest::Method::OPTIONS, app.url("/oauth/token"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let r = preflight(APP).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert!(
        r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let r = preflight("https://evil.example").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    let post = |origin: &'static str, form: Vec<(&'static str, String)>| {
        app.http()
            .post(app.url("/oauth/token"))
            .header("origin", origin)
            .form(&form)
            .send()
    };
    let exchange = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", client.id().to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
        ]
    };
    // Another origin, even with a valid request, gets no CORS headers (and
    // the browser keeps the answer from the page); the code is unused, as
    // a failed read leaves it.
    let r = post("https://evil.example", vec![("grant_type", "authorization_code".into()), ("client_id", client.id().to_owned())]).await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    assert_eq!(r.headers()["vary"], "Origin");
    // The app's own origin: the answer, readable by the page.
    let r = post(APP, exchange(&code)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    let body: Value = r.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().expect("offline_access gives a refresh token").to_owned();
    // The refresh from the page.
    let r = post(
        APP,
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh),
            ("client_id", client.id().to_owned()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    // A public app may send the refresh token alone (RFC 6749 §6; the SMART
    // JavaScript client does by default): it is the app the token was
    // issued to.
    let body: Value = r.json().await.unwrap();
    let r = post(
        APP,
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", body["refresh_token"].as_str().unwrap().to_owned()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    // A confidential app's refresh token alone is not enough.
    let (_, confidential_refresh) = tokens_for(&app, &other, "bob").await;
    let (status, body) = app
        .token(
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &confidential_refresh),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    // Errors are readable too (a replayed code).
    let r = post(APP, exchange(&code)).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    // Another app's request from this app's origin: not this app's answer
    // to read.
    let r = post(
        APP,
        vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", other.id().to_owned()),
            ("client_secret", other.secret.clone().unwrap()),
        ],
    )
    .await
    .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

const LAUNCH_URL: &str = "https://app.example/launch";

/// The platform acting as the EHR, and an app it can launch.
async fn launcher_and_app(app: &TestApp) -> (TestClient, TestClient) {
    let launcher = app
        .register(ClientSpec {
            smart_launcher: true,
            ..ClientSpec::default()
        })
        .await;
    let launched = app
        .register(ClientSpec {
            scope: "openid launch launch/patient patient/*.rs",
            launch_url: Some(LAUNCH_URL),
            ..ClientSpec::default()
        })
        .await;
    (launcher, launched)
}

/// `POST /api/v1/smart/launches` as `caller`.
async fn make_launch(app: &TestApp, caller: &TestClient, body: Value) -> (StatusCode, Value) {
    let r = app
        .http()
        .post(app.url("/api/v1/smart/launches"))
        .basic_auth(caller.id(), caller.secret.as_deref())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn launch_params<'a>(client: &'a TestClient, launch: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut p = authorize_params(client, "openid launch patient/*.rs");
    p.push(("launch", launch));
    p
}

/// An EHR launch (SMART App Launch 2.2 §EHR launch): the platform makes
/// it for a person, the app is opened at its launch URL with `iss` and
/// `launch`, and the token response carries the context, once.
#[tokio::test]
async fn an_ehr_launch_gives_the_app_its_context_once() {
    let app = smart_app().await;
    let (launcher, launched) = launcher_and_app(&app).await;
    let (browser, alice) = app.signed_in("alice").await;
    let (status, made) = make_launch(
        &app,
        &launcher,
        serde_json::json!({
            "client_id": launched.id(),
            "user": "alice",
            "patient": "123",
            "encounter": "enc-9",
            "fhirContext": [{ "reference": "Appointment/9" }],
            "need_patient_banner": false,
            "intent": "reconcile-medications",
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["expires_in"], 300);
    let launch = made["launch"].as_str().unwrap().to_owned();
    let url = made["launch_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{LAUNCH_URL}?")), "{url}");
    let q = query_of(url);
    assert_eq!(q["iss"], FHIR);
    assert_eq!(q["launch"], launch);
    // The app, opened there, asks with the launch and the launch scope.
    let r = browser.authorize(&launch_params(&launched, &launch)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    let r = browser.consent(&page, "allow").await;
    let q = query_of(&location(&r));
    let (status, body) = app.exchange(&launched, &q["code"], &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["patient"], "123");
    assert_eq!(body["encounter"], "enc-9");
    assert_eq!(
        body["fhirContext"],
        serde_json::json!([{ "reference": "Appointment/9" }])
    );
    assert_eq!(body["need_patient_banner"], false);
    assert_eq!(body["intent"], "reconcile-medications");
    assert_eq!(body["scope"], "launch openid patient/*.rs");
    // Introspection says the same context, for the FHIR server to hold
    // the token to its patient.
    let rs = app.resource_server().await;
    let seen = app
        .introspect(&rs, body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(seen["patient"], "123");
    assert_eq!(seen["aud"], FHIR);
    // The launch works once.
    let r = browser.authorize(&launch_params(&launched, &launch)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("launch"), "{q:?}");
    // Audited: who launched which app for whom, never the value.
    let events = app.events_of("smart.launch_created").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].client_id.as_deref(), Some(launched.id()));
    assert_eq!(events[0].subject.as_deref(), Some(alice.id.as_str()));
    let data: Value = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(data["launcher"], launcher.id());
    assert_eq!(data["patient"], "123");
    assert!(!events[0].data.as_deref().unwrap().contains(&launch));
}

/// A launch is for its app, its person and its FHIR server, for five
/// minutes; `launch` and the `launch` scope come together.
#[tokio::test]
async fn a_launch_is_refused_to_anyone_else_late_or_without_its_scope() {
    let app = smart_app().await;
    let (launcher, launched) = launcher_and_app(&app).await;
    let other = app
        .register(ClientSpec {
            scope: "openid launch patient/*.rs",
            launch_url: Some(LAUNCH_URL),
            ..ClientSpec::default()
        })
        .await;
    app.user("bob", UserType::Member).await;
    let (browser, _) = app.signed_in("alice").await;
    let new_launch = |user: &'static str| {
        let app = &app;
        let launcher = &launcher;
        let launched = &launched;
        async move {
            let (status, made) = make_launch(
                app,
                launcher,
                serde_json::json!({ "client_id": launched.id(), "user": user, "patient": "123" }),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{made}");
            made["launch"].as_str().unwrap().to_owned()
        }
    };
    let error_of = |r: &reqwest::Response| {
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let q = query_of(&location(r));
        (q["error"].clone(), q["error_description"].clone())
    };
    // Another app cannot use it; an unknown value says the same.
    let launch = new_launch("alice").await;
    let r = browser.authorize(&launch_params(&other, &launch)).await;
    assert_eq!(
        error_of(&r),
        (
            "invalid_request".into(),
            "launch is unknown, expired or already used".into()
        )
    );
    let r = browser.authorize(&launch_params(&launched, "hg_ln_guess")).await;
    assert_eq!(error_of(&r).1, "launch is unknown, expired or already used");
    // The launch scope without the launch, and the launch without it.
    let r = browser
        .authorize(&authorize_params(&launched, "launch patient/*.rs"))
        .await;
    assert_eq!(error_of(&r).0, "invalid_request");
    let mut no_scope = authorize_params(&launched, "patient/*.rs");
    no_scope.push(("launch", &launch));
    let r = browser.authorize(&no_scope).await;
    assert_eq!(error_of(&r).0, "invalid_scope");
    // Made for bob: alice is told, and the app gets access_denied.
    let for_bob = new_launch("bob").await;
    let r = browser.authorize(&launch_params(&launched, &for_bob)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(readable(r.text().await.unwrap()).contains("opened for someone else"));
    // Five minutes later, alice's own launch is gone.
    app.clock.advance(301);
    let r = browser.authorize(&launch_params(&launched, &launch)).await;
    assert_eq!(error_of(&r).1, "launch is unknown, expired or already used");
}

/// Only a SMART launcher makes launches, and only of an app that can be
/// launched, with a context that names FHIR resources.
#[tokio::test]
async fn launches_are_made_only_by_launchers_of_launchable_apps() {
    let app = smart_app().await;
    let (launcher, launched) = launcher_and_app(&app).await;
    let plain = app.confidential().await;
    app.user("alice", UserType::Member).await;
    let (status, body) = make_launch(
        &app,
        &plain,
        serde_json::json!({ "client_id": launched.id() }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let r = app
        .http()
        .post(app.url("/api/v1/smart/launches"))
        .json(&serde_json::json!({ "client_id": launched.id() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for (body, says) in [
        (serde_json::json!({ "client_id": "app-nope" }), "no client"),
        (
            serde_json::json!({ "client_id": plain.id() }),
            "no launch URL",
        ),
        (
            serde_json::json!({ "client_id": launched.id(), "patient": "a/b" }),
            "patient must be a FHIR resource id",
        ),
        (
            serde_json::json!({ "client_id": launched.id(), "user": "nobody" }),
            "no user with id or username",
        ),
        (
            serde_json::json!({ "client_id": launched.id(), "iss": "https://other.example/r4" }),
            "not one of the FHIR servers",
        ),
        (
            serde_json::json!({ "client_id": launched.id(), "fhirContext": ["Appointment/9"] }),
            "fhirContext",
        ),
        (serde_json::json!({ "app": launched.id() }), "JSON launch"),
    ] {
        let (status, answer) = make_launch(&app, &launcher, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_request");
        let description = answer["error_description"].as_str().unwrap();
        assert!(description.contains(says), "{body}: {description}");
    }
    assert!(app.events_of("smart.launch_created").await.is_empty());
}

/// A standalone launch (SMART App Launch 2.2 §Standalone launch): the app
/// asks for `launch/patient` without a launch; the person's only linked
/// patient is in context without a question, with a banner.
#[tokio::test]
async fn a_standalone_launch_puts_the_persons_only_patient_in_context() {
    let app = smart_app().await;
    let client = smart_client(&app).await;
    let (browser, _) = with_patient(&app, "alice").await;
    let r = browser
        .authorize(&authorize_params(&client, "launch/patient patient/*.rs"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("For the records of <strong>Alice Example</strong>"),
        "{page}"
    );
    assert!(!page.contains("name=\"patient\""), "no choice to make");
    let r = browser.consent(&page, "allow").await;
    let q = query_of(&location(&r));
    let (status, body) = app.exchange(&client, &q["code"], &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["patient"], "123");
    assert_eq!(body["need_patient_banner"], true);
    assert!(body.get("encounter").is_none());
    // Consent remembered, one patient: the next request needs no page.
    let r = browser
        .authorize(&authorize_params(&client, "launch/patient patient/*.rs"))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    let (_, body) = app.exchange(&client, &q["code"], &[]).await;
    assert_eq!(body["patient"], "123");
    // No encounter can be picked: launch/encounter is not granted.
    let encounter = app
        .register(ClientSpec {
            scope: "launch/patient launch/encounter patient/*.rs",
            ..ClientSpec::default()
        })
        .await;
    let code = app
        .code(
            &browser,
            &encounter,
            &[("scope", "launch/patient launch/encounter patient/*.rs"), ("aud", FHIR)],
        )
        .await;
    let (status, body) = app.exchange(&encounter, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "launch/patient patient/*.rs");
    assert!(body.get("encounter").is_none());
}

/// A person linked to several patients picks one on the consent page,
/// every time; a patient not linked to them cannot be forced in.
#[tokio::test]
async fn a_person_with_several_patients_picks_one_of_their_own() {
    let app = smart_app().await;
    let client = smart_client(&app).await;
    let (browser, alice) = with_patient(&app, "alice").await;
    link(&app, &alice, "456", "Sam Example").await;
    let asked = authorize_params(&client, "launch/patient patient/*.rs");
    let page = browser.authorize(&asked).await.text().await.unwrap();
    let text = readable(page.clone());
    assert!(text.contains("Whose records is this for?"), "{text}");
    assert!(text.contains("Alice Example") && text.contains("Sam Example"));
    // In the middle of an authorization the header has no links, and
    // never offers the signed-in person "Sign in".
    assert!(!page.contains("href=\"/login\"") && !page.contains("<nav class=\"site\""));
    // The picked one.
    let mut form: Vec<(String, String)> = hidden_input_list(&page);
    form.push(("decision".into(), "allow".into()));
    form.push(("patient".into(), "456".into()));
    let r = browser.post_form("/oauth/authorize", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    let (_, body) = app.exchange(&client, &q["code"], &[]).await;
    assert_eq!(body["patient"], "456");
    // Asked again (consent remembered, but two patients to choose from).
    let r = browser.authorize(&asked).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    for forced in [Some("999"), None] {
        let mut form: Vec<(String, String)> = hidden_input_list(&page);
        form.push(("decision".into(), "allow".into()));
        if let Some(p) = forced {
            form.push(("patient".into(), p.into()));
        }
        let r = browser.post_form("/oauth/authorize", &form).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{forced:?}");
        assert!(readable(r.text().await.unwrap()).contains("Choose whose records"));
    }
}

/// `patient/` scopes with no patient possible are refused (SMART App
/// Launch 2.2: the EHR "SHALL establish a patient in context" for them):
/// a person with no linked patient, or an EHR launch made without one.
#[tokio::test]
async fn patient_scopes_without_a_possible_patient_are_refused() {
    let app = smart_app().await;
    let client = smart_client(&app).await;
    let (browser, _) = app.signed_in("alice").await;
    // Identity and user-level scopes need no patient.
    let r = browser.authorize(&authorize_params(&client, "openid")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = browser
        .authorize(&authorize_params(&client, "patient/*.rs"))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(
        readable(page.clone()).contains("no patient record is linked to your account"),
        "{page}"
    );
    assert!(page.contains("error=access_denied"), "{page}");
    let (launcher, launched) = launcher_and_app(&app).await;
    let (status, made) = make_launch(
        &app,
        &launcher,
        serde_json::json!({ "client_id": launched.id() }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let r = browser
        .authorize(&launch_params(&launched, made["launch"].as_str().unwrap()))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(readable(r.text().await.unwrap()).contains("opened without a patient"));
}

/// A partner links patients to the accounts it manages, and sets who they
/// are on the FHIR server; only for its own accounts.
#[tokio::test]
async fn a_partner_links_patients_and_sets_fhir_user_for_its_own_accounts() {
    let app = smart_app().await;
    let partner = app.confidential().await;
    let other = app.confidential().await;
    let r = app
        .http()
        .post(app.url("/api/v1/users"))
        .basic_auth(partner.id(), partner.secret.as_deref())
        .form(&[("username", "pat")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let guid = r.json::<Value>().await.unwrap()["guid"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |method: reqwest::Method, path: String, caller: &TestClient| {
        app.http()
            .request(method, app.url(&path))
            .basic_auth(caller.id(), caller.secret.as_deref())
    };
    let r = call(
        reqwest::Method::PUT,
        format!("/api/v1/users/{guid}/patients/123"),
        &partner,
    )
    .json(&serde_json::json!({ "display": "Pat Example" }))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed: Value = r.json().await.unwrap();
    assert_eq!(
        listed["patients"],
        serde_json::json!([{ "id": "123", "display": "Pat Example" }])
    );
    let r = call(
        reqwest::Method::PUT,
        format!("/api/v1/users/{guid}/patients/a%2Fb"),
        &partner,
    )
    .json(&serde_json::json!({ "display": "Bad" }))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Another partner may not read or change them.
    let r = call(
        reqwest::Method::GET,
        format!("/api/v1/users/{guid}/patients"),
        &other,
    )
    .send()
    .await
    .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = call(
        reqwest::Method::PUT,
        format!("/api/v1/users/{guid}/patients/9"),
        &other,
    )
    .json(&serde_json::json!({ "display": "Not theirs" }))
    .send()
    .await
    .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // fhirUser, checked, and changed.
    let r = call(reqwest::Method::PATCH, format!("/api/v1/users/{guid}"), &partner)
        .form(&[("fhir_user", "Patient/123")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["fhir_user"], "Patient/123");
    let r = call(reqwest::Method::PATCH, format!("/api/v1/users/{guid}"), &partner)
        .form(&[("fhir_user", "Observation/1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = call(reqwest::Method::PATCH, format!("/api/v1/users/{guid}"), &partner)
        .json(&serde_json::json!({ "fhir_user": "RelatedPerson/7" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["fhir_user"], "RelatedPerson/7");
    // Unlinked once; a second time there is nothing to unlink.
    for expected in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let r = call(
            reqwest::Method::DELETE,
            format!("/api/v1/users/{guid}/patients/123"),
            &partner,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), expected);
    }
    assert_eq!(app.events_of("user.patient_linked").await.len(), 1);
    assert_eq!(app.events_of("user.patient_unlinked").await.len(), 1);
}

/// `fhirUser` (SMART App Launch 2.2 §fhirUser): the ID token names the
/// person's FHIR resource as an absolute URL on the FHIR server the grant
/// is for, introspection says it too, and a refresh token comes only with
/// `offline_access`.
#[tokio::test]
async fn the_id_token_names_the_fhir_user_and_refresh_needs_offline_access() {
    let app = smart_app().await;
    let client = smart_client(&app).await;
    let (browser, alice) = with_patient(&app, "alice").await;
    healthgate_server::services::smart::set_fhir_user(
        &app.state.store,
        app.clock.now(),
        &alice.id,
        Some("Practitioner/77"),
        Actor::system(),
    )
    .await
    .unwrap();
    let code = app
        .code(
            &browser,
            &client,
            &[("scope", "openid fhirUser patient/*.rs"), ("aud", FHIR)],
        )
        .await;
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("refresh_token").is_none(), "no offline_access: {body}");
    assert!(body.get("fhirUser").is_none(), "not a launch parameter");
    let id_token = body["id_token"].as_str().unwrap();
    // An app registered with SMART scopes gets RS256 ID tokens, checked
    // as the SMART test kit does: the published RSA key named by `kid`.
    let parsed = healthgate_core::client_assertion::parse(id_token).unwrap();
    assert_eq!(parsed.header["alg"], "RS256");
    let jwks: Value = app.http().get(app.url("/oauth/jwks")).send().await.unwrap().json().await.unwrap();
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA" && k["kid"] == parsed.header["kid"])
        .expect("the RSA key is published");
    healthgate_core::client_assertion::verify_signature(&parsed, rsa).expect("RS256 signature");
    let oidc: Value = app
        .http()
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(oidc["id_token_signing_alg_values_supported"].as_array().unwrap().iter().any(|a| a == "RS256"));
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["fhirUser"], format!("{FHIR}/Practitioner/77"));
    let rs = app.resource_server().await;
    let seen = app
        .introspect(&rs, body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(seen["fhirUser"], format!("{FHIR}/Practitioner/77"));
    assert_eq!(seen["iss"], app.base);
    assert_eq!(seen["sub"], alice.id);
    // Without the fhirUser scope, no claim.
    let code = app
        .code(&browser, &client, &[("scope", "openid patient/*.rs"), ("aud", FHIR)])
        .await;
    let (_, body) = app.exchange(&client, &code, &[]).await;
    let payload = body["id_token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    assert!(claims.get("fhirUser").is_none(), "{claims}");
}

#[tokio::test]
async fn developers_register_smart_apps_and_backend_services_in_the_portal() {
    use super::portal::{app_form, csrf_of, element_text, register_in_portal};
    let app = smart_app().await;
    let (browser, _) = app.signed_in("dev").await;
    let form = |changes: &[(&str, &str)]| {
        let mut form = app_form("Chart viewer");
        for (k, v) in changes {
            form.retain(|(name, _)| name != k);
            if !v.is_empty() {
                form.push((k.to_string(), v.to_string()));
            }
        }
        form
    };
    let page = browser.get("/developers/apps/new").await.text().await.unwrap();
    assert!(page.contains("id=\"smart_scope\"") && page.contains("id=\"launch_url\""));
    assert!(page.contains("id=\"jwks_uri\"") && page.contains("id=\"jwks\""));

    // An EHR-launchable app: the ticked scopes and the typed SMART ones.
    let (id, secret) = register_in_portal(
        &browser,
        form(&[
            ("smart_scope", "launch launch/patient fhirUser offline_access patient/*.rs"),
            ("launch_url", "https://partner.example/launch"),
        ]),
    )
    .await;
    assert!(secret.is_some());
    let c = app.state.store.client(&id).await.unwrap().unwrap();
    assert_eq!(c.launch_url.as_deref(), Some("https://partner.example/launch"));
    for s in ["profile_read", "openid", "launch", "launch/patient", "patient/*.rs"] {
        assert!(c.allowed_scopes.contains(s), "{s}: {}", c.allowed_scopes);
    }
    let shown = browser.get(&format!("/developers/apps/{id}")).await.text().await.unwrap();
    assert!(readable(shown.clone()).contains("https://partner.example/launch"), "{shown}");
    assert!(readable(shown).contains("/.well-known/smart-configuration"));
    // The edit form gives the SMART scopes back in their own field.
    let edit = browser.get(&format!("/developers/apps/{id}/edit")).await.text().await.unwrap();
    let smart_field = edit[edit.find("id=\"smart_scope\"").unwrap()..].split('>').next().unwrap().to_owned();
    assert!(smart_field.contains("value=\"fhirUser launch launch/patient offline_access patient/*.rs\""), "{smart_field}");

    // A malformed SMART scope or launch URL registers nothing and says why.
    for (changes, field) in [
        (vec![("smart_scope", "patient/Observation.rr")], "scope"),
        (vec![("launch_url", "not a url")], "launch_url"),
    ] {
        let mut fields = vec![("csrf_token".to_owned(), csrf_of(&browser, "/developers/apps/new").await)];
        fields.extend(form(&changes));
        let r = browser.post_form("/developers/apps", &fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}");
        let page = r.text().await.unwrap();
        assert!(page.contains(&format!("id=\"{field}-error\"")), "{field}: {page}");
    }

    // A backend service: keys instead of a secret, no redirect URI, system
    // scopes; it gets tokens with an assertion only.
    use healthgate_core::jose::{Alg, SigningKey, generate};
    let (pkcs8, public_jwk) = generate(Alg::Es256, "k1").unwrap();
    let jwks = serde_json::json!({ "keys": [public_jwk] }).to_string();
    let backend_form = form(&[
        ("redirect_uris", ""),
        ("scope", ""),
        ("smart_scope", "system/Observation.rs"),
        ("jwks", &jwks),
    ]);
    let (backend_id, backend_secret) = register_in_portal(&browser, backend_form.clone()).await;
    assert_eq!(backend_secret, None, "an app with keys gets no APP_SECRET");
    let c = app.state.store.client(&backend_id).await.unwrap().unwrap();
    assert!(c.redirect_uris.is_empty() && c.uses_assertions() && c.secret_digest.is_none());
    let shown = browser.get(&format!("/developers/apps/{backend_id}")).await.text().await.unwrap();
    assert!(readable(shown.clone()).contains("signs a JWT with one of its keys"), "{shown}");
    assert!(element_text(&shown, "app-id").is_some());
    let assertion = SigningKey::from_pkcs8(Alg::Es256, "k1", &pkcs8)
        .unwrap()
        .sign(
            "JWT",
            &serde_json::json!({
                "iss": backend_id, "sub": backend_id, "aud": app.url("/oauth/token"),
                "exp": app.clock.now() + 60, "jti": "portal-1",
            }),
        )
        .unwrap();
    let r = app
        .http()
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/Observation.rs"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &assertion),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "system/Observation.rs");

    // Keys belong to confidential apps; a public one is told so.
    let mut fields = vec![("csrf_token".to_owned(), csrf_of(&browser, "/developers/apps/new").await)];
    fields.extend(form(&[("client_type", "public"), ("jwks", &jwks)]));
    let r = browser.post_form("/developers/apps", &fields).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"jwks-error\"") && page.contains("public app has no keys"), "{page}");

    // Without [smart], the SMART fields are not offered; keys still are.
    let plain = spawn_app().await;
    let (b, _) = plain.signed_in("dev").await;
    let page = b.get("/developers/apps/new").await.text().await.unwrap();
    assert!(!page.contains("id=\"smart_scope\"") && !page.contains("id=\"launch_url\""));
    assert!(page.contains("id=\"jwks\""));
}

/// SMART's `online_access`: a refresh token that works while the person
/// stays signed in where they authorized, and not after they sign out
/// there; `offline_access` outlives the sign-out.
#[tokio::test]
async fn online_access_ends_with_the_persons_sign_in_and_offline_access_does_not() {
    let app = smart_app().await;
    let client = app
        .register(ClientSpec {
            scope: "openid patient/*.rs online_access offline_access",
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = with_patient(&app, "alice").await;
    let mut refresh_tokens = Vec::new();
    for scope in ["patient/*.rs online_access", "patient/*.rs offline_access"] {
        let code = app
            .code(&browser, &client, &[("scope", scope), ("aud", FHIR)])
            .await;
        let (status, body) = app.exchange(&client, &code, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("online_session").is_none(), "never said: {body}");
        let rt = body["refresh_token"].as_str().expect("a refresh token").to_owned();
        // While signed in, each refreshes (and the new token carries on).
        let (status, body) = app.refresh(&client, &rt).await;
        assert_eq!(status, StatusCode::OK, "{scope}: {body}");
        assert_eq!(body["patient"], "123", "the context is kept");
        let rs = app.resource_server().await;
        let seen = app.introspect(&rs, body["access_token"].as_str().unwrap()).await;
        assert!(seen.get("online_session").is_none(), "{seen}");
        refresh_tokens.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    // Signing out ends the online grant's refresh tokens, not the offline one's.
    let page = browser.get("/account").await.text().await.unwrap();
    let csrf = hidden_inputs(&page)["csrf_token"].clone();
    let r = browser.post_form("/logout", &[("csrf_token".into(), csrf)]).await;
    assert!(r.status().is_redirection());
    let (status, body) = app.refresh(&client, &refresh_tokens[0]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"].as_str().unwrap().contains("signed out"), "{body}");
    let (status, body) = app.refresh(&client, &refresh_tokens[1]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Signing in again does not bring the online grant back.
    app.browser().login("alice", PASSWORD).await;
    let (status, _) = app.refresh(&client, &refresh_tokens[0]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// RFC 9068 access tokens of a SMART grant are for the FHIR server (`aud`)
/// and carry the launch context, so a FHIR server can check them with the
/// published key alone.
#[tokio::test]
async fn jwt_access_tokens_name_the_fhir_server_and_carry_the_launch_context() {
    let app = smart_app().await;
    let (launcher, launched) = launcher_and_app(&app).await;
    app.change_client(
        launched.id(),
        admin::ClientChanges {
            jwt_access_tokens: Some(true),
            ..Default::default()
        },
    )
    .await;
    let (browser, alice) = app.signed_in("alice").await;
    let (_, made) = make_launch(
        &app,
        &launcher,
        serde_json::json!({
            "client_id": launched.id(), "user": "alice", "patient": "123", "encounter": "enc-9",
            "fhirContext": [{ "reference": "Appointment/9" }], "need_patient_banner": false,
        }),
    )
    .await;
    let launch = made["launch"].as_str().unwrap().to_owned();
    let page = browser
        .authorize(&launch_params(&launched, &launch))
        .await
        .text()
        .await
        .unwrap();
    let q = query_of(&location(&browser.consent(&page, "allow").await));
    let (status, body) = app.exchange(&launched, &q["code"], &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap();
    assert!(healthgate_core::jose::looks_like_jwt(access), "{access}");
    let kid = healthgate_core::jose::header_kid(access).unwrap();
    let jwks: Value = app.http().get(app.url("/oauth/jwks")).send().await.unwrap().json().await.unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    let claims = healthgate_core::jose::verify_es256(access, jwk).expect("signed by a published key");
    assert_eq!(claims["aud"], FHIR, "for the FHIR server, not healthgate");
    assert_eq!(claims["iss"], app.base);
    assert_eq!(claims["sub"], alice.id);
    assert_eq!(claims["client_id"], launched.id());
    assert_eq!(claims["scope"], "launch openid patient/*.rs");
    assert_eq!(claims["patient"], "123");
    assert_eq!(claims["encounter"], "enc-9");
    assert_eq!(claims["fhirContext"], serde_json::json!([{ "reference": "Appointment/9" }]));
    assert_eq!(claims["need_patient_banner"], false);
    assert!(claims.get("online_session").is_none() && claims.get("launch").is_none(), "{claims}");
}

/// The public SMART App Launch test kit's server checks (Inferno,
/// `smart-app-launch-test-kit` 1.0.0, suite `smart_stu2_2`), in its order,
/// for a standalone launch by a confidential app with the kit's default
/// scopes: discovery, the launch with PKCE and `state`, the token
/// response and its headers, refresh with and without `scope`, OpenID
/// Connect (RS256 ID token, JWKS, `fhirUser`), introspection (active and
/// not), and the certification kit's PKCE negatives (wrong verifier,
/// `plain`), each with what the kit expects.
#[tokio::test]
async fn the_smart_test_kits_checks_hold_for_a_standalone_launch() {
    let app = smart_app().await;
    let client = app
        .register(ClientSpec {
            scope: "launch/patient openid fhirUser offline_access patient/*.rs",
            ..ClientSpec::default()
        })
        .await;
    let (browser, alice) = with_patient(&app, "alice").await;
    healthgate_server::services::smart::set_fhir_user(
        &app.state.store,
        app.clock.now(),
        &alice.id,
        Some("Practitioner/77"),
        Actor::system(),
    )
    .await
    .unwrap();
    let get = |path: String| {
        let http = app.http();
        async move { http.get(path).header("accept", "application/json").send().await.unwrap() }
    };

    // well_known_endpoint, well_known_capabilities_stu2.
    let r = get(app.url("/.well-known/smart-configuration")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let c: Value = r.json().await.unwrap();
    for field in ["authorization_endpoint", "token_endpoint"] {
        assert!(c[field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
    for field in ["capabilities", "grant_types_supported", "code_challenge_methods_supported"] {
        assert!(c[field].as_array().is_some_and(|a| !a.is_empty()), "{field}");
    }
    assert!(c["capabilities"].as_array().unwrap().iter().all(Value::is_string));
    assert!(c["grant_types_supported"].as_array().unwrap().iter().any(|g| g == "authorization_code"));
    let methods = c["code_challenge_methods_supported"].as_array().unwrap();
    assert!(methods.iter().any(|m| m == "S256") && !methods.iter().any(|m| m == "plain"));
    assert!(c["capabilities"].as_array().unwrap().iter().any(|v| v == "sso-openid-connect"));
    assert!(c["issuer"].is_string() && c["jwks_uri"].is_string());
    let token_url = c["token_endpoint"].as_str().unwrap().to_owned();
    let introspection_url = c["introspection_endpoint"].as_str().expect("listed").to_owned();

    // smart_app_redirect_stu2, smart_code_received: S256 PKCE, a random state.
    let verifier = "5f0c3a1e-8d2b-4c6f-9a7e-1b2c3d4e5f60-0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d";
    let challenge = healthgate_core::pkce::CodeVerifier::parse(verifier).unwrap().s256();
    let scope = "launch/patient openid fhirUser offline_access patient/*.rs";
    let authorize = |state: &'static str| {
        vec![
            ("response_type", "code"),
            ("client_id", client.id()),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", state),
            ("aud", FHIR),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
    };
    // Allowed on the consent page the first time; remembered after.
    let authorized = |state: &'static str| {
        let params = authorize(state);
        let browser = &browser;
        async move {
            let r = browser.authorize(&params).await;
            let r = if r.status() == StatusCode::OK {
                browser.consent(&r.text().await.unwrap(), "allow").await
            } else {
                r
            };
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            query_of(&location(&r))
        }
    };
    let q = authorized("7b0e3d4c").await;
    assert_eq!(q["state"], "7b0e3d4c");
    assert!(!q.contains_key("error"), "{q:?}");
    let code = q["code"].clone();

    // The certification kit's PKCE negatives: 400 or 401, changing nothing.
    let (status, _) = app
        .exchange(&client, &code, &[("code_verifier", "not-the-verifier-0000000000000000000000000000")])
        .await;
    assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED, "{status}");
    let mut plain = authorize("s-plain");
    plain.retain(|(k, _)| *k != "code_challenge_method" && *k != "code_challenge");
    plain.push(("code_challenge", verifier));
    plain.push(("code_challenge_method", "plain"));
    let r = browser.authorize(&plain).await;
    let refused = query_of(&location(&r));
    assert_eq!(refused["error"], "invalid_request", "plain is refused: {refused:?}");

    // The wrong verifier spent the code (RFC 6749 §4.1.2: used once);
    // a fresh one for the kit's exchange.
    let code = authorized("8c1f4e5d").await["code"].clone();

    // smart_token_exchange_stu2_2, smart_token_response_body_stu2_2,
    // smart_token_response_headers.
    let r = app
        .http()
        .post(&token_url)
        .basic_auth(client.id(), client.secret.as_deref())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["cache-control"].to_str().unwrap().to_lowercase().contains("no-store"));
    assert!(r.headers()["pragma"].to_str().unwrap().contains("no-cache"));
    let body: Value = r.json().await.unwrap();
    for field in ["access_token", "token_type", "scope", "refresh_token"] {
        assert!(body[field].as_str().is_some_and(|s| !s.is_empty()), "{field}: {body}");
    }
    assert!(body["expires_in"].is_number());
    assert!(body["token_type"].as_str().unwrap().eq_ignore_ascii_case("bearer"));
    assert_eq!(body["patient"], "123");
    let granted: std::collections::BTreeSet<&str> = body["scope"].as_str().unwrap().split(' ').collect();
    assert_eq!(granted, scope.split(' ').collect(), "every requested scope granted");

    // smart_openid_*: configuration, JWKS, the ID token's header and claims.
    let oidc: Value = get(app.url("/.well-known/openid-configuration")).await.json().await.unwrap();
    for field in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(!oidc[field].is_null(), "{field}");
    }
    assert!(oidc["id_token_signing_alg_values_supported"].as_array().unwrap().iter().any(|a| a == "RS256"));
    let jwks: Value = get(oidc["jwks_uri"].as_str().unwrap().to_owned()).await.json().await.unwrap();
    let id_token = healthgate_core::client_assertion::parse(body["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(id_token.header["alg"], "RS256");
    let rsa: Vec<&Value> = jwks["keys"].as_array().unwrap().iter().filter(|k| k["kty"] == "RSA").collect();
    assert!(!rsa.is_empty());
    let key = rsa.iter().find(|k| k["kid"] == id_token.header["kid"]).expect("kid names a published key");
    healthgate_core::client_assertion::verify_signature(&id_token, key).unwrap();
    let claims = &id_token.claims;
    assert_eq!(claims["iss"], oidc["issuer"]);
    assert_eq!(claims["aud"], client.id());
    for field in ["iss", "sub", "aud", "exp", "iat"] {
        assert!(!claims[field].is_null(), "{field}");
    }
    assert!(claims["sub"].as_str().unwrap().len() < 256);
    let fhir_user = claims["fhirUser"].as_str().unwrap();
    let segments: Vec<&str> = fhir_user.rsplit('/').collect();
    assert!(["Patient", "Practitioner", "RelatedPerson", "Person"].contains(&segments[1]), "{fhir_user}");

    // Introspection (token_introspection_*): the client asks of its own token.
    let introspect = |token: String| {
        let http = app.http();
        let (url, id, secret) = (introspection_url.clone(), client.id().to_owned(), client.secret.clone());
        async move {
            let r = http.post(url).basic_auth(id, secret).form(&[("token", token)]).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let seen = introspect(body["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["client_id"], client.id());
    let seen_scope: std::collections::BTreeSet<&str> = seen["scope"].as_str().unwrap().split(' ').collect();
    assert_eq!(seen_scope, granted);
    assert!(seen["exp"].as_i64().unwrap() >= app.clock.now() - 600);
    assert_eq!(seen["patient"], "123");
    assert_eq!(seen["iss"], claims["iss"]);
    assert_eq!(seen["sub"], claims["sub"]);
    assert_eq!(seen["fhirUser"], fhir_user);
    let unknown = introspect("invalid_token_value".to_owned()).await;
    assert_eq!(unknown["active"], false);

    // smart_token_refresh_stu2 (without, then with, scope) and its body and
    // headers: the scopes a subset of the grant.
    let mut refresh_token = body["refresh_token"].as_str().unwrap().to_owned();
    for with_scope in [false, true] {
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())];
        if with_scope {
            form.push(("scope", scope));
        }
        let r = app
            .http()
            .post(&token_url)
            .basic_auth(client.id(), client.secret.as_deref())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["cache-control"].to_str().unwrap().contains("no-store"));
        assert!(r.headers()["pragma"].to_str().unwrap().contains("no-cache"));
        let refreshed: Value = r.json().await.unwrap();
        assert!(refreshed["token_type"].as_str().unwrap().eq_ignore_ascii_case("bearer"));
        assert!(refreshed["expires_in"].is_number() && refreshed["access_token"].is_string());
        let scopes: std::collections::BTreeSet<&str> = refreshed["scope"].as_str().unwrap().split(' ').collect();
        assert!(scopes.is_subset(&granted), "{refreshed}");
        assert_eq!(refreshed["patient"], "123");
        refresh_token = refreshed["refresh_token"].as_str().unwrap().to_owned();
    }
}
