//! The OAuth playground over HTTP: a developer walks their app through the
//! code flow (authorize, redirect, token, refresh, introspection, /me), each
//! step showing the exchange; a run is bound to its developer.

use reqwest::StatusCode;

use super::portal::{app_form, csrf_of, element_text, register_in_portal};
use super::*;

/// The `href` of the element with `id`, entities decoded.
fn href_of(page: &str, id: &str) -> String {
    let at = page.find(&format!("id=\"{id}\"")).expect("element");
    let tag_start = page[..at].rfind('<').unwrap();
    let tag = &page[tag_start..at + page[at..].find('>').unwrap()];
    let start = tag.find("href=\"").unwrap() + 6;
    let raw = &tag[start..start + tag[start..].find('"').unwrap()];
    unescape_html(raw)
}

/// The forms' hidden fields plus `extra`.
fn step_form(page: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut form = hidden_input_list(page);
    for (k, v) in extra {
        form.retain(|(name, _)| name != k);
        form.push((k.to_string(), v.to_string()));
    }
    form
}

struct Run {
    browser: Browser,
    client_id: String,
    secret: Option<String>,
}

/// A developer with an app whose redirect URIs include the playground's.
async fn developer_with_app(app: &TestApp, public: bool) -> Run {
    let (browser, _) = app.signed_in("dev").await;
    let mut form = app_form("Playground App");
    if public {
        form.retain(|(k, _)| k != "client_type");
        form.push(("client_type".into(), "public".into()));
    }
    let (client_id, secret) = register_in_portal(&browser, form).await;
    // The playground offers to register its redirect URI.
    let page = browser
        .get(&format!("/playground?client_id={client_id}"))
        .await
        .text()
        .await
        .unwrap();
    let callback = format!("{}/playground/callback", app.base);
    assert!(readable(page.clone()).contains(&format!("<code>{callback}</code>")), "{page}");
    let r = browser
        .post_form("/playground/redirect-uri", &step_form(&page, &[("client_id", &client_id)]))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let c = app.state.store.client(&client_id).await.unwrap().unwrap();
    assert!(c.redirect_uris.iter().any(|u| u.as_str() == callback));
    Run {
        browser,
        client_id,
        secret,
    }
}

/// Steps 1 to 3: builds the authorize request, follows it through consent
/// and returns the callback page.
async fn authorize_and_come_back(app: &TestApp, run: &Run) -> String {
    let page = run
        .browser
        .get(&format!(
            "/playground/authorize?client_id={}&scope=openid&scope=profile_read",
            run.client_id
        ))
        .await
        .text()
        .await
        .unwrap();
    let url = href_of(&page, "authorize-link");
    assert!(url.starts_with(&format!("{}/oauth/authorize?", app.base)), "{url}");
    let q = query_of(&url);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], format!("{}/playground/callback", app.base));
    assert!(q.contains_key("nonce"), "openid asks for a nonce");
    assert!(page.contains("GET /oauth/authorize?"), "the request is shown");
    let consent = run.browser.get(url.strip_prefix(&app.base).unwrap()).await;
    assert_eq!(consent.status(), StatusCode::OK);
    let consent = consent.text().await.unwrap();
    let r = run.browser.consent(&consent, "allow").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert!(back.starts_with(&format!("{}/playground/callback?", app.base)), "{back}");
    let page = run.browser.get(back.strip_prefix(&app.base).unwrap()).await;
    assert_eq!(page.status(), StatusCode::OK);
    page.text().await.unwrap()
}

async fn post_step(run: &Run, path: &str, page: &str, extra: &[(&str, &str)]) -> String {
    let r = run.browser.post_form(path, &step_form(page, extra)).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn the_playground_walks_the_whole_flow_showing_each_exchange() {
    let app = spawn_app().await;
    let run = developer_with_app(&app, false).await;
    let secret = run.secret.clone().unwrap();
    let callback = authorize_and_come_back(&app, &run).await;
    assert!(callback.contains("GET /playground/callback?code="), "{callback}");
    assert!(callback.contains("iss (RFC 9207) is this server: yes."));

    let tokens = post_step(&run, "/playground/token", &callback, &[("client_secret", &secret)]).await;
    assert!(tokens.contains("POST /oauth/token HTTP/1.1"), "{tokens}");
    assert!(tokens.contains("grant_type=authorization_code"));
    assert!(tokens.contains("code_verifier="));
    assert!(tokens.contains("Basic •••••••• (base64 of APP_ID:APP_SECRET, hidden here)"));
    assert!(!tokens.contains(&format!("Basic {}", base64_basic(&run.client_id, &secret))));
    assert!(tokens.contains("HTTP/1.1 200 OK"), "{tokens}");
    assert!(tokens.contains("cache-control: no-store"));
    assert!(shows(&tokens, "\"id_token\""), "openid returns an ID token");
    let access = hidden_inputs(&tokens)["access_token"].clone();
    let refresh = hidden_inputs(&tokens)["refresh_token"].clone();
    assert!(access.starts_with("hg_at_") && refresh.starts_with("hg_rt_"));

    let refreshed = post_step(&run, "/playground/refresh", &tokens, &[]).await;
    assert!(refreshed.contains("grant_type=refresh_token"));
    assert!(refreshed.contains("HTTP/1.1 200 OK"), "{refreshed}");
    let new_access = hidden_inputs(&refreshed)["access_token"].clone();
    assert_ne!(new_access, access, "the refreshed token is carried on");

    let introspected = post_step(&run, "/playground/introspect", &refreshed, &[]).await;
    assert!(introspected.contains("POST /oauth/introspect HTTP/1.1"));
    assert!(shows(&introspected, "\"active\": true"), "{introspected}");

    let me = post_step(&run, "/playground/me", &introspected, &[]).await;
    assert!(me.contains("GET /api/v1/me HTTP/1.1"));
    assert!(me.contains(&format!("authorization: Bearer {new_access}")));
    assert!(me.contains("HTTP/1.1 200 OK"), "{me}");
    assert!(shows(&me, "\"username\": \"dev\""), "{me}");
}

fn base64_basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
}

#[tokio::test]
async fn a_wrong_secret_shows_the_servers_refusal() {
    let app = spawn_app().await;
    let run = developer_with_app(&app, false).await;
    let callback = authorize_and_come_back(&app, &run).await;
    let page = post_step(&run, "/playground/token", &callback, &[("client_secret", "hg_cs_wrong")]).await;
    assert!(page.contains("HTTP/1.1 401 Unauthorized"), "{page}");
    assert!(shows(&page, "\"invalid_client\""));
    assert!(!page.contains("Refresh the token"));
}

#[tokio::test]
async fn a_public_app_sends_its_id_and_pkce_alone() {
    let app = spawn_app().await;
    let run = developer_with_app(&app, true).await;
    let callback = authorize_and_come_back(&app, &run).await;
    assert!(!callback.contains("name=\"client_secret\""));
    let page = post_step(&run, "/playground/token", &callback, &[]).await;
    assert!(page.contains(&format!("client_id={}", run.client_id)), "{page}");
    assert!(!page.contains("authorization: Basic"));
    assert!(page.contains("HTTP/1.1 200 OK"), "{page}");
}

#[tokio::test]
async fn a_run_belongs_to_the_developer_who_started_it() {
    let app = spawn_app().await;
    let run = developer_with_app(&app, false).await;
    let callback = authorize_and_come_back(&app, &run).await;
    let form = step_form(&callback, &[("client_secret", run.secret.as_deref().unwrap())]);
    let state = form.iter().find(|(k, _)| k == "run").unwrap().1.clone();

    // Another developer cannot finish it, nor see its callback.
    let (other, _) = app.signed_in("other").await;
    let r = other
        .get(&format!("/playground/callback?code=x&state={}", urlencode(&state)))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let csrf = csrf_of(&other, "/developers/apps/new").await;
    let mut stolen = form.clone();
    stolen.retain(|(k, _)| k != "csrf_token");
    stolen.push(("csrf_token".into(), csrf));
    let r = other.post_form("/playground/token", &stolen).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A state edited to name another app fails its MAC.
    let other_app = app.confidential().await;
    let forged = state.replacen(&run.client_id, other_app.id(), 1);
    let r = run
        .browser
        .get(&format!("/playground/callback?code=x&state={}", urlencode(&forged)))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // And the app must be the developer's own.
    let r = run
        .browser
        .get(&format!("/playground/authorize?client_id={}&scope=profile_read", other_app.id()))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The code is still usable by the rightful run.
    let page = post_step(&run, "/playground/token", &callback, &[("client_secret", run.secret.as_deref().unwrap())]).await;
    assert!(page.contains("HTTP/1.1 200 OK"), "{page}");
    assert!(element_text(&page, "pg-heading").is_some());
}

#[tokio::test]
async fn a_denial_comes_back_as_an_error() {
    let app = spawn_app().await;
    let run = developer_with_app(&app, false).await;
    let page = run
        .browser
        .get(&format!("/playground/authorize?client_id={}&scope=profile_read", run.client_id))
        .await
        .text()
        .await
        .unwrap();
    let url = href_of(&page, "authorize-link");
    let consent = run.browser.get(url.strip_prefix(&app.base).unwrap()).await.text().await.unwrap();
    let r = run.browser.consent(&consent, "deny").await;
    let back = location(&r);
    let page = run.browser.get(back.strip_prefix(&app.base).unwrap()).await.text().await.unwrap();
    assert!(page.contains("access_denied"), "{page}");
    assert!(!page.contains("/playground/token"));
}

/// Whether the page shows `text` (as the person reads it, entities decoded).
fn shows(page: &str, text: &str) -> bool {
    unescape_html(page).contains(text)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ------------------------------------------------------------ SMART

const FHIR: &str = "https://fhir.example.com/r4";

/// A server with `[smart]`, and a developer whose app is registered (in the
/// portal) with SMART scopes, a launch URL and the playground's redirect
/// URI; two patients are linked to the developer.
async fn smart_developer(extra: &[(&str, &str)]) -> (TestApp, Run) {
    let app = spawn_app_with(|s| s.smart.fhir_base_urls = vec![format!("{FHIR}/").parse().unwrap()]).await;
    let (browser, dev) = app.signed_in("dev").await;
    let mut form = app_form("Chart viewer");
    form.push(("redirect_uris".into(), format!("{}/playground/callback", app.base)));
    form.retain(|(k, v)| k != "redirect_uris" || v.contains("playground"));
    for (k, v) in extra {
        form.retain(|(name, _)| name != k);
        form.push((k.to_string(), v.to_string()));
    }
    let (client_id, secret) = register_in_portal(&browser, form).await;
    for (patient, display) in [("123", "Alice Example"), ("456", "Sam Example")] {
        healthgate_server::services::smart::link_patient(
            &app.state.store,
            app.clock.now(),
            &dev.id,
            healthgate_core::smart::PatientLink { patient_id: patient.into(), display: display.into() },
            Actor::system(),
        )
        .await
        .unwrap();
    }
    (app, Run { browser, client_id, secret })
}

async fn playground_page(run: &Run, path: &str) -> (StatusCode, String) {
    let r = run.browser.get(path).await;
    (r.status(), r.text().await.unwrap())
}

/// Follows the authorize link through consent (with `patient` picked when
/// asked) to the callback page.
async fn consent_and_come_back(app: &TestApp, run: &Run, page: &str, patient: Option<&str>) -> String {
    let url = href_of(page, "authorize-link");
    let consent = run.browser.get(url.strip_prefix(&app.base).unwrap()).await;
    assert_eq!(consent.status(), StatusCode::OK);
    let consent = consent.text().await.unwrap();
    let mut form: Vec<(String, String)> = hidden_input_list(&consent);
    form.push(("decision".into(), "allow".into()));
    if let Some(p) = patient {
        assert!(readable(consent.clone()).contains("Whose records is this for?"), "{consent}");
        form.push(("patient".into(), p.into()));
    }
    let r = run.browser.post_form("/oauth/authorize", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    run.browser.get(back.strip_prefix(&app.base).unwrap()).await.text().await.unwrap()
}

#[tokio::test]
async fn the_playground_runs_an_ehr_launch_and_a_standalone_launch() {
    let (app, run) = smart_developer(&[
        ("smart_scope", "launch launch/patient fhirUser patient/*.rs"),
        ("launch_url", "https://partner.example/launch"),
    ])
    .await;
    let secret = run.secret.clone().unwrap();
    let (_, page) = playground_page(&run, &format!("/playground?client_id={}", run.client_id)).await;
    let text = readable(unescape_html(&page));
    assert!(text.contains("SMART launch") && text.contains("From the EHR"), "{text}");
    assert!(text.contains("Alice Example (Patient/123)") && text.contains("Sam Example (Patient/456)"));

    // From the EHR, with one of the developer's own patients.
    let ehr = format!(
        "/playground/authorize?client_id={}&scope=openid&scope=launch&scope={}&launch_mode=ehr&patient=123&aud={}",
        run.client_id,
        urlencode("patient/*.rs"),
        urlencode(FHIR)
    );
    let (status, page) = playground_page(&run, &ehr).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let shown = unescape_html(&page);
    assert!(shown.contains("The EHR opens the app's launch URL"), "{shown}");
    assert!(shown.contains("GET /launch?iss=") && shown.contains("Host: partner.example"), "{shown}");
    assert!(shown.contains("GET /.well-known/smart-configuration HTTP/1.1"));
    assert!(shown.contains("\"capabilities\""), "the SMART configuration is shown");
    let q = query_of(&href_of(&page, "authorize-link"));
    assert_eq!(q["aud"], FHIR);
    assert!(q["scope"].split(' ').any(|s| s == "launch"));
    let launch = q["launch"].clone();
    assert!(shown.contains(&format!("launch={}", urlencode(&launch))) || shown.contains(&format!("launch={launch}")));
    let callback = consent_and_come_back(&app, &run, &page, None).await;
    let tokens = post_step(&run, "/playground/token", &callback, &[("client_secret", &secret)]).await;
    assert!(tokens.contains("HTTP/1.1 200 OK"), "{tokens}");
    assert!(shows(&tokens, "\"patient\": \"123\""), "{tokens}");

    // Only the developer's own patients can be put in context.
    let other = ehr.replace("patient=123", "patient=999");
    let (status, page) = playground_page(&run, &other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(readable(page).contains("only a patient linked to your own account"));

    // Standalone: the person picks the patient on the consent page; a
    // typed narrower scope goes as typed.
    let standalone = format!(
        "/playground/authorize?client_id={}&scope=launch%2Fpatient&launch_mode=standalone&extra_scope={}",
        run.client_id,
        urlencode("patient/Observation.rs?category=laboratory")
    );
    let (status, page) = playground_page(&run, &standalone).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let q = query_of(&href_of(&page, "authorize-link"));
    assert_eq!(q["aud"], FHIR);
    assert!(!q.contains_key("launch"));
    assert_eq!(q["scope"], "launch/patient patient/Observation.rs?category=laboratory");
    let callback = consent_and_come_back(&app, &run, &page, Some("456")).await;
    let tokens = post_step(&run, "/playground/token", &callback, &[("client_secret", &secret)]).await;
    assert!(shows(&tokens, "\"patient\": \"456\""), "{tokens}");
    assert!(shows(&tokens, "\"scope\": \"launch/patient patient/Observation.rs?category=laboratory\""), "{tokens}");
}

/// The content of the textarea with `id`, entities decoded.
fn textarea_of(page: &str, id: &str) -> String {
    let at = page.find(&format!("id=\"{id}\"")).expect("textarea");
    let start = at + page[at..].find('>').unwrap() + 1;
    let end = start + page[start..].find("</textarea>").unwrap();
    unescape_html(&page[start..end])
}

#[tokio::test]
async fn the_playground_makes_keys_and_runs_a_backend_services_request() {
    let (app, run) = smart_developer(&[("smart_scope", "system/Observation.rs")]).await;
    let secret = run.secret.clone().unwrap();
    let (_, page) = playground_page(&run, &format!("/playground?client_id={}", run.client_id)).await;
    assert!(readable(page.clone()).contains("Backend Services"), "{page}");
    assert!(page.contains("the APP_SECRET stops working"));
    assert!(
        !page.contains("name=\"scope\" value=\"system/Observation.rs\""),
        "system/ scopes are not offered for an authorization request"
    );

    // A key pair: the public half registered, the private half shown once.
    let form = vec![
        ("csrf_token".to_owned(), hidden_inputs(&page)["csrf_token"].clone()),
        ("client_id".to_owned(), run.client_id.clone()),
    ];
    let r = run.browser.post_form("/playground/keys", &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"key-made\"") && page.contains("cannot show it again"), "{page}");
    let pem = textarea_of(&page, "private_key");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let kid_at = page.find("id=\"kid\"").unwrap();
    let kid = page[kid_at..].split("value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let c = app.state.store.client(&run.client_id).await.unwrap().unwrap();
    let jwks: Value = serde_json::from_str(c.jwks.as_deref().unwrap()).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(jwks["keys"][0]["crv"], "P-384");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part is kept");
    let (_, again) = playground_page(&run, &format!("/playground?client_id={}", run.client_id)).await;
    assert!(!again.contains(pem.lines().nth(1).unwrap()), "shown once");
    // With keys, the APP_SECRET no longer authenticates the app.
    let r = app
        .http()
        .post(app.url("/oauth/token"))
        .basic_auth(&run.client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The request: the assertion shown decoded, then the exchange.
    let backend = |key: &str| {
        vec![
            ("csrf_token".to_owned(), hidden_inputs(&page)["csrf_token"].clone()),
            ("client_id".to_owned(), run.client_id.clone()),
            ("private_key".to_owned(), key.to_owned()),
            ("kid".to_owned(), kid.clone()),
            ("scope".to_owned(), "system/Observation.rs".to_owned()),
        ]
    };
    let r = run.browser.post_form("/playground/backend", &backend(&pem)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let tokens = r.text().await.unwrap();
    assert!(shows(&tokens, "\"alg\": \"ES384\"") && shows(&tokens, &format!("\"kid\": \"{kid}\"")), "{tokens}");
    assert!(shows(&tokens, &format!("\"aud\": \"{}/oauth/token\"", app.base)));
    assert!(tokens.contains("grant_type=client_credentials"));
    assert!(tokens.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"));
    assert!(tokens.contains("HTTP/1.1 200 OK"), "{tokens}");
    assert!(shows(&tokens, "\"scope\": \"system/Observation.rs\""));
    assert!(!tokens.contains("/playground/me\""), "no person: no /me");
    let introspected = post_step(&run, "/playground/introspect", &tokens, &[]).await;
    assert!(introspected.contains("POST /oauth/introspect HTTP/1.1"));
    assert!(shows(&introspected, "\"active\": true"), "{introspected}");

    // A key the app never registered, or no key at all, is refused and said.
    let (_, stranger) = healthgate_core::client_assertion::ClientKey::generate().unwrap();
    let r = run.browser.post_form("/playground/backend", &backend(&stranger)).await;
    let refused = r.text().await.unwrap();
    assert!(refused.contains("HTTP/1.1 401 Unauthorized") && shows(&refused, "\"invalid_client\""), "{refused}");
    let r = run.browser.post_form("/playground/backend", &backend("not a key")).await;
    let refused = readable(r.text().await.unwrap());
    assert!(refused.contains("could not sign its assertion") && refused.contains("PKCS#8"), "{refused}");
}
