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
