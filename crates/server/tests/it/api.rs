//! The resource API: `GET /api/v1/me` behind bearer tokens (RFC 6750).

use reqwest::StatusCode;
use serde_json::Value;

use super::*;

#[tokio::test]
async fn me_returns_the_user_for_a_profile_read_token() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, _) = tokens_for(&app, &client, "alice").await;
    let r = app
        .http()
        .get(app.url("/api/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["type"], "member");
    assert!(body["id"].as_str().unwrap().starts_with("usr-"));
}

#[tokio::test]
async fn bad_tokens_are_401_invalid_token() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    let cases: Vec<Option<String>> = vec![
        None,
        Some("Bearer hg_at_unknown".into()),
        Some(format!("Bearer {refresh}")),
        Some(format!("Basic {access}")),
        Some("Bearer".into()),
    ];
    for header in cases {
        let mut req = app.http().get(app.url("/api/v1/me"));
        if let Some(h) = &header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn wrong_scope_is_403_insufficient_scope() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app
        .code(&browser, &client, &[("scope", "profile_write")])
        .await;
    let (_, body) = app.exchange(&client, &code, &[]).await;
    let r = app
        .http()
        .get(app.url("/api/v1/me"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"], "insufficient_scope");
}

#[tokio::test]
async fn locked_account_tokens_stop_working() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, user) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let (_, body) = app.exchange(&client, &code, &[]).await;
    app.state
        .store
        .lock_user(&user.id, app.clock.now())
        .await
        .unwrap();
    assert_eq!(
        app.me(body["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&client, body["refresh_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (r.status(), r.text().await.unwrap()),
        (StatusCode::OK, "ok".to_owned())
    );
    let r = app.http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.state.store.close().await;
    let r = app.http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn storage_failure_is_never_success() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    app.state.store.close().await;
    let basic = Some((client.id(), client.secret.as_deref().unwrap()));
    let (s, b) = app
        .token(basic, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("temporarily_unavailable")
        )
    );
    let r = app.http().get(app.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// The `X-Request-Id` of a response, which the access log line carries.
fn request_id(r: &reqwest::Response) -> String {
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    id
}

/// The error's own words on an error page, without the site's frame.
fn error_card(page: &str) -> String {
    let start = page.find("<section class=\"card\" role=\"alert\">").expect("an error card");
    let end = start + page[start..].find("</section>").expect("the card ends");
    page[start..end].to_lowercase()
}

/// Whether an error page speaks of an app.
fn mentions_an_app(page: &str) -> bool {
    error_card(page)
        .split(|c: char| !c.is_alphabetic())
        .any(|w| w == "app" || w == "apps")
}

/// What an error page shows: its request id, a way home, and no advice to
/// return to an app that never sent the person.
fn assert_helpful_error_page(page: &str, id: &str) {
    assert_eq!(
        super::portal::element_text(page, "request-id").as_deref(),
        Some(id),
        "{page}"
    );
    assert!(page.contains("<a class=\"button\" href=\"/\">Go to the home page</a>"), "{page}");
}

#[tokio::test]
async fn unknown_pages_are_a_readable_404_with_the_request_id_and_a_way_home() {
    let app = spawn_app().await;
    for path in ["/nope", "/account/nope", "/apis", "/oauthx/token"] {
        let r = app.http().get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let id = request_id(&r);
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with("text/html"),
            "{path}"
        );
        let page = r.text().await.unwrap();
        assert!(page.contains("<h1>Page not found</h1>"), "{page}");
        assert!(page.contains("There is nothing at this address."), "{page}");
        assert!(page.contains("Check the address"), "{page}");
        assert!(!mentions_an_app(&page), "a 404 is not about an app: {page}");
        assert_helpful_error_page(&page, &id);
    }
    // Every response carries its own id, errors or not.
    let a = app.http().get(app.url("/")).send().await.unwrap();
    let b = app.http().get(app.url("/")).send().await.unwrap();
    assert_ne!(request_id(&a), request_id(&b));
}

#[tokio::test]
async fn error_pages_word_themselves_by_what_went_wrong() {
    let app = spawn_app().await;
    // A form without its session token: refused, with no word of an app.
    let r = app
        .http()
        .post(app.url("/developers/apps"))
        .form(&[("name", "x")])
        .send()
        .await
        .unwrap();
    let (status, id) = (r.status(), request_id(&r));
    let page = r.text().await.unwrap();
    assert!(status.is_client_error(), "{status}");
    assert!(!mentions_an_app(&page), "{page}");
    assert_helpful_error_page(&page, &id);
    // A wrong method on a page: 405, a page, with the methods it takes.
    let r = app.http().delete(app.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers()["allow"].to_str().unwrap().contains("GET"));
    let id = request_id(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains("This address does not accept a DELETE request."), "{page}");
    assert_helpful_error_page(&page, &id);
    // An app that sent a person with a request that cannot be completed:
    // now, and only now, the page says to go back to the app.
    let r = app
        .browser()
        .authorize(&[
            ("response_type", "code"),
            ("client_id", "app-nobody"),
            ("redirect_uri", "https://partner.example/callback"),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let id = request_id(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains("Go back to the app and try again"), "{page}");
    assert_helpful_error_page(&page, &id);
}

#[tokio::test]
async fn unknown_api_and_oauth_paths_answer_json_never_the_html_page() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/nope",
        "/api",
        "/api/",
        "/oauth/nope",
        "/oauth/token/extra",
        "/.well-known/nope",
    ] {
        for post in [false, true] {
            let http = app.http();
            let request = if post {
                http.post(app.url(path)).form(&[("a", "b")])
            } else {
                http.get(app.url(path))
            };
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            request_id(&r);
            assert_eq!(r.headers()["content-type"], "application/json", "{path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "not_found", "{path}: {body}");
            let description = body["error_description"].as_str().unwrap();
            assert!(
                description
                    .chars()
                    .all(healthgate_core::error::allowed_in_description),
                "{description}"
            );
            assert!(description.contains("/.well-known/openid-configuration"));
        }
    }
}

#[tokio::test]
async fn a_wrong_method_on_an_endpoint_is_a_json_405() {
    let app = spawn_app().await;
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/oauth/token", "POST"),
        (reqwest::Method::GET, "/oauth/revoke", "POST"),
        (reqwest::Method::DELETE, "/api/v1/me", "GET"),
        (reqwest::Method::POST, "/.well-known/openid-configuration", "GET"),
    ] {
        let r = app
            .http()
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            r.headers()["allow"].to_str().unwrap().contains(allowed),
            "{method} {path}"
        );
        request_id(&r);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed", "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(method.as_str()), "{description}");
        assert!(
            description
                .chars()
                .all(healthgate_core::error::allowed_in_description)
        );
    }
}

#[tokio::test]
async fn a_profiles_token_path_answers_a_wrong_method_in_json() {
    let app = spawn_app_with(|s| {
        s.profile.token_paths = vec!["/o/token/".parse().unwrap()];
    })
    .await;
    let r = app.http().get(app.url("/o/token/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn the_api_description_names_this_server_and_a_profiles_paths() {
    let app = spawn_app_with(|s| {
        s.profile.token_paths = vec!["/o/token/".parse().unwrap()];
        s.profile.user_paths = vec!["/api/v2.1/users.json".parse().unwrap()];
        s.profile.token_response_wrapper = Some("oauth".parse().unwrap());
    })
    .await;
    let r = app.http().get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], app.url(""));
    // The profile's paths are described as the standard ones they serve.
    let token = &doc["paths"]["/oauth/token"]["post"];
    let alias = &doc["paths"]["/o/token/"]["post"];
    assert_eq!(alias["responses"], token["responses"]);
    assert_eq!(alias["operationId"], "requestToken at /o/token/");
    // The token response as this profile shapes it: wrapped.
    let schema = &token["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(
        schema["properties"]["oauth"]["$ref"],
        "#/components/schemas/TokenResponse",
        "{schema}"
    );
    assert_eq!(schema["required"], serde_json::json!(["oauth"]));
    assert_eq!(
        doc["paths"]["/api/v2.1/users.json"]["post"]["requestBody"],
        doc["paths"]["/api/v1/users"]["post"]["requestBody"]
    );
    // Operation ids are unique, and every operation says what a refusal
    // to authenticate or a throttle looks like where it can happen.
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "{id} repeats");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("429"), "{method} {path}");
            if op["security"].as_array().is_some_and(|s| s.iter().all(|a| a != &serde_json::json!({}))) {
                assert!(
                    responses.contains_key("401") || responses.contains_key("403"),
                    "{method} {path} needs credentials but documents no refusal"
                );
            }
        }
    }
}

#[tokio::test]
async fn cleanup_pass_removes_expired_rows_only() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    assert_eq!(healthgate_server::jobs::cleanup::run_once(&app.state).await.unwrap(), 0);
    app.clock.advance(7200 + 86_401);
    // The session, the code and the access token are past their time.
    let removed = healthgate_server::jobs::cleanup::run_once(&app.state).await.unwrap();
    assert!(removed >= 3, "{removed}");
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    // The non-expiring refresh token is kept and still works.
    assert_eq!(app.refresh(&client, &refresh).await.0, StatusCode::OK);
}
