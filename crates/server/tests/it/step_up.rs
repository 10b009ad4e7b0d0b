//! Step-up and claims (issue 13, item 3): ID tokens and introspection say
//! how the person signed in (`amr`, RFC 8176) and the assurance it reached
//! (`acr`); `acr_values` and `max_age` ask for a fresh second factor; an app
//! registered with `require_mfa` never gets a password-only token; discovery
//! lists the classes.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;

use super::second_factors::{csrf, enrol, password_step, second_step};
use super::*;

const AAL1: &str = "http://idmanagement.gov/ns/assurance/aal/1";
const AAL2: &str = "http://idmanagement.gov/ns/assurance/aal/2";

/// The claims of an ID token (its signature is checked by the OpenID
/// Connect tests; here only what it says).
fn claims(id_token: &str) -> Value {
    let payload = id_token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

async fn openid_client(app: &TestApp, require_mfa: bool) -> TestClient {
    app.register(ClientSpec {
        scope: "openid profile_read",
        require_mfa,
        resource_server: true,
        ..ClientSpec::default()
    })
    .await
}

/// The authorization request for `client`, with `extra` parameters.
fn request<'a>(client: &'a TestClient, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client.id()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile_read"),
        ("state", "s1"),
        ("nonce", "n1"),
    ];
    params.extend_from_slice(extra);
    params
}

/// Follows the authorization request to its code (allowing on the consent
/// page), then exchanges it: the token response.
async fn tokens_after(app: &TestApp, b: &Browser, client: &TestClient, r: reqwest::Response) -> Value {
    let r = if r.status() == StatusCode::OK {
        let page = r.text().await.unwrap();
        b.consent(&page, "allow").await
    } else {
        r
    };
    let code = query_of(&location(&r))
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code in {}", location(&r)));
    let (status, body) = app.exchange(client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn id_tokens_and_introspection_say_how_the_person_signed_in() {
    let app = spawn_app().await;
    let client = openid_client(&app, false).await;
    // A password alone.
    let (b, _) = app.signed_in("ann").await;
    let r = b.authorize(&request(&client, &[])).await;
    let body = tokens_after(&app, &b, &client, r).await;
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["amr"], serde_json::json!(["pwd"]));
    assert_eq!(id["acr"], AAL1);
    let seen = app.introspect(&client, body["access_token"].as_str().unwrap()).await;
    assert_eq!((seen["amr"].clone(), seen["acr"].clone()), (serde_json::json!(["pwd"]), Value::from(AAL1)));
    // With an authenticator app: both methods, two factors.
    let (totp, _) = enrol(&app, &b).await;
    app.clock.advance(60);
    let b2 = app.browser();
    password_step(&b2, "ann").await;
    let code = totp.generate(app.clock.now() as u64);
    assert_eq!(second_step(&b2, &code).await.status(), StatusCode::SEE_OTHER);
    let r = b2.authorize(&request(&client, &[])).await;
    let body = tokens_after(&app, &b2, &client, r).await;
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(id["acr"], AAL2);
    let seen = app.introspect(&client, body["access_token"].as_str().unwrap()).await;
    assert_eq!(seen["acr"], AAL2);
    // A refreshed access token still says how the grant was made.
    let (_, refreshed) = app.refresh(&client, body["refresh_token"].as_str().unwrap()).await;
    let seen = app.introspect(&client, refreshed["access_token"].as_str().unwrap()).await;
    assert_eq!(seen["amr"], serde_json::json!(["pwd", "otp"]));
    // Discovery names the classes.
    let m: Value = app
        .http()
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["acr_values_supported"], serde_json::json!([AAL1, AAL2]));
    let claims_supported: Vec<&str> = m["claims_supported"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(claims_supported.contains(&"acr") && claims_supported.contains(&"amr"));
}

#[tokio::test]
async fn max_age_with_two_factors_asked_wants_a_fresh_sign_in_with_both() {
    let app = spawn_app().await;
    let client = openid_client(&app, false).await;
    let (b, _) = app.signed_in("bea").await;
    // Setting the factor up proves it in this session: within max_age, the
    // code comes at once.
    let (totp, _) = enrol(&app, &b).await;
    let asked = [("acr_values", AAL2), ("max_age", "300")];
    let r = b.authorize(&request(&client, &asked)).await;
    let body = tokens_after(&app, &b, &client, r).await;
    assert_eq!(claims(body["id_token"].as_str().unwrap())["acr"], AAL2);
    // Past max_age: sign in again, both factors.
    app.clock.advance(600);
    let r = b.authorize(&request(&client, &asked)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login?"), "{}", location(&r));
    // prompt=none cannot ask: the app is told.
    let mut silent = request(&client, &asked);
    silent.push(("prompt", "none"));
    let r = b.authorize(&silent).await;
    assert_eq!(query_of(&location(&r))["error"], "login_required");
    let b2 = app.browser();
    password_step(&b2, "bea").await;
    let code = totp.generate(app.clock.now() as u64);
    assert_eq!(second_step(&b2, &code).await.status(), StatusCode::SEE_OTHER);
    let r = b2.authorize(&request(&client, &asked)).await;
    let body = tokens_after(&app, &b2, &client, r).await;
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["acr"], AAL2);
    assert!(id["auth_time"].as_i64().unwrap() >= app.clock.now() - 300);
}

#[tokio::test]
async fn a_step_up_is_asked_of_a_signed_in_person_whose_sign_in_had_no_second_factor() {
    let app = spawn_app().await;
    let client = openid_client(&app, false).await;
    // Signed in with the password alone, then the factor is set up in
    // another browser: this session has given no second factor.
    let (b, _) = app.signed_in("cat").await;
    let other = app.browser();
    other.login("cat", PASSWORD).await;
    let (totp, _) = enrol(&app, &other).await;
    let params = request(&client, &[("acr_values", AAL2)]);
    let r = b.authorize(&params).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with("/login/second-factor?return_to="), "{to}");
    // prompt=none: interaction_required.
    let mut silent = params.clone();
    silent.push(("prompt", "none"));
    let r = b.authorize(&silent).await;
    assert_eq!(query_of(&location(&r))["error"], "interaction_required");
    // The step-up page, then back to the request.
    let page = b.get(&to).await.text().await.unwrap();
    assert!(page.contains("Confirm it is you"));
    app.clock.advance(30);
    let code = totp.generate(app.clock.now() as u64);
    let r = b
        .post_form(
            "/login/second-factor",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("code".into(), code),
                ("return_to".into(), query_of(&to)["return_to"].clone()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/oauth/authorize?"));
    assert_eq!(app.events_of("login.stepped_up").await.len(), 1);
    let r = b.get(&location(&r)).await;
    let body = tokens_after(&app, &b, &client, r).await;
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(id["acr"], AAL2);
}

#[tokio::test]
async fn an_app_that_requires_a_second_factor_never_gets_a_password_only_token() {
    let app = spawn_app().await;
    let client = openid_client(&app, true).await;
    let (b, _) = app.signed_in("dee").await;
    // No factor yet: set one up first, then back to the request.
    let r = b.authorize(&request(&client, &[])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with("/account/security?return_to="), "{to}");
    // A consent form posted without the second factor is refused.
    let params = request(&client, &[]);
    let mut form: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let page = b.get("/account/security").await.text().await.unwrap();
    form.push(("csrf_token".into(), csrf(&page)));
    form.push(("decision".into(), "allow".into()));
    let r = b.post_form("/oauth/authorize", &form).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Enrolling proves the factor in this session: the code comes.
    enrol(&app, &b).await;
    let r = b.authorize(&request(&client, &[])).await;
    let body = tokens_after(&app, &b, &client, r).await;
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["acr"], AAL2);
    // The registration says so.
    let saved = app.state.store.client(client.id()).await.unwrap().unwrap();
    assert!(saved.require_mfa);
}

#[tokio::test]
async fn a_developer_requires_a_second_factor_when_registering_in_the_portal() {
    let app = spawn_app().await;
    let (b, _) = app.signed_in("dev").await;
    let mut form = super::portal::app_form("Charting");
    form.push(("require_mfa".into(), "1".into()));
    let (id, _) = super::portal::register_in_portal(&b, form).await;
    let saved = app.state.store.client(&id).await.unwrap().unwrap();
    assert!(saved.require_mfa);
    let page = b.get(&format!("/developers/apps/{id}/edit")).await.text().await.unwrap();
    assert!(page.contains("name=\"require_mfa\" value=\"1\" checked"), "the form shows it");
}
