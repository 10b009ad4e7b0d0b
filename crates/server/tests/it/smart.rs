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
        scope: "openid patient/*.rs launch/patient",
        ..ClientSpec::default()
    })
    .await
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
    for expected in ["permission-v2", "permission-v1", "authorize-post", "client-public"] {
        assert!(capabilities.contains(&expected), "{expected}: {capabilities:?}");
    }
    // Nothing claimed before it works.
    for later in ["launch-ehr", "launch-standalone", "context-ehr-patient", "sso-openid-connect"] {
        assert!(!capabilities.contains(&later), "{later}: {capabilities:?}");
    }
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
    let (browser, _) = app.signed_in("alice").await;
    let r = browser.authorize(&authorize_params(&client, LAB)).await;
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
    assert_eq!(body["scope"], LAB, "granted as asked");
    assert!(body.get("aud").is_none(), "aud is not a token response parameter");
    // Introspection says the same scope, and which FHIR server the token is
    // for (the aud of the request, kept with the grant).
    let rs = app.resource_server().await;
    let seen = app.introspect(&rs, body["access_token"].as_str().unwrap()).await;
    assert_eq!(seen["scope"], LAB);
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
    assert_eq!(seen["scope"], LAB);
    // A grant made without SMART names no FHIR server.
    let plain = app.confidential().await;
    let (access, _) = tokens_for(&app, &plain, "bob").await;
    assert!(app.introspect(&rs, &access).await.get("aud").is_none());
}

#[tokio::test]
async fn smart_scopes_beyond_the_registration_or_malformed_are_invalid_scope() {
    let app = smart_app().await;
    let client = smart_client(&app).await;
    let (browser, _) = app.signed_in("alice").await;
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
    let (browser, _) = app.signed_in("alice").await;
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
    let (browser, _) = app.signed_in("alice").await;
    let code = app
        .code(
            &browser,
            &client,
            &[
                ("scope", "patient/*.rs"),
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
