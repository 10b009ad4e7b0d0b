//! App photos given as a URL: fetched once, when the app is registered or
//! changed, from a real HTTP server on a loopback port (reached only because
//! these tests allow http on loopback), through the webhook client's
//! public-address-only resolver; stored and served by healthgate, so no page
//! loads anything from the partner's server. What cannot be fetched is a
//! refusal of the `photo_url` field, and changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{StatusCode as AxumStatus, header};
use axum::response::IntoResponse;
use axum::routing::get;
use healthgate_core::client::Client;
use healthgate_server::services::admin::{self, AdminError, ClientChanges, NewClient};
use reqwest::StatusCode;

use super::portal::{app_form, csrf_of, element_text};
use super::*;

/// A partner's web server with one good photo and every kind of bad one.
/// Counts the requests it gets.
struct PhotoServer {
    base: String,
    hits: Arc<AtomicUsize>,
}

impl PhotoServer {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let svg: &'static [u8] =
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
        let mut big = PNG.to_vec();
        big.resize(300 * 1024, 0);
        let app = axum::Router::new()
            .route("/p.png", get(|| async { ([(header::CONTENT_TYPE, "image/png")], PNG) }))
            // An SVG that says it is a PNG.
            .route("/logo.svg", get(move || async move { ([(header::CONTENT_TYPE, "image/png")], svg) }))
            .route("/big.png", get(move || async move { ([(header::CONTENT_TYPE, "image/png")], big) }))
            .route("/page.html", get(|| async { "<html><body>not an image</body></html>" }))
            .route(
                "/moved.png",
                get(|| async { (AxumStatus::FOUND, [(header::LOCATION, "/p.png")]).into_response() }),
            )
            .fallback(|| async { AxumStatus::NOT_FOUND })
            .layer(axum::middleware::from_fn_with_state(
                hits.clone(),
                |axum::extract::State(hits): axum::extract::State<Arc<AtomicUsize>>,
                 request: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    next.run(request).await
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("photo server");
        });
        Self {
            base: format!("http://{addr}"),
            hits,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An app where http photo URLs on loopback are allowed (as in development).
async fn loopback_allowed() -> TestApp {
    spawn_app_with(|s| s.allow_http_webhooks = true).await
}

async fn register_with_photo(app: &TestApp, photo_url: &str) -> Result<Client, AdminError> {
    admin::create_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        NewClient {
            name: "Pictured".into(),
            redirect_uris: vec![REDIRECT.into()],
            scope: "profile_read".into(),
            photo_url: Some(photo_url.into()),
            ..Default::default()
        }, Actor::system(),
    )
    .await
    .map(|(client, _)| client)
}

async fn change_photo(app: &TestApp, id: &str, photo_url: Option<&str>) -> Result<Client, AdminError> {
    admin::update_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        id,
        ClientChanges {
            photo_url: Some(photo_url.map(str::to_owned)),
            ..ClientChanges::default()
        }, Actor::system(),
    )
    .await
}

/// The message of a refusal of the `photo_url` field.
fn photo_refusal(result: Result<Client, AdminError>) -> String {
    match result {
        Err(AdminError::Field { field: "photo_url", message }) => message,
        other => panic!("expected a photo_url refusal, got {other:?}"),
    }
}

/// The consent page `browser` gets for `client`.
async fn consent_page(browser: &Browser, client_id: &str) -> reqwest::Response {
    browser
        .authorize(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("scope", "profile_read"),
            ("state", "s"),
        ])
        .await
}

#[tokio::test]
async fn a_photo_url_is_fetched_once_stored_and_served_from_healthgate() {
    let photos = PhotoServer::start().await;
    let app = loopback_allowed().await;
    let client = register_with_photo(&app, &photos.url("/p.png")).await.expect("registered");
    assert_eq!(photos.hits(), 1, "fetched once, at registration");

    let id = &client.id;
    let photo_url = client.photo_url.clone().expect("a photo");
    assert!(photo_url.starts_with(&format!("{}/apps/{id}/photo?v=", app.base)), "{photo_url}");
    assert_eq!(app.state.store.client(id).await.unwrap().unwrap().photo_url, Some(photo_url.clone()));
    let served = app.http().get(&photo_url).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.bytes().await.unwrap().as_ref(), PNG);

    // The consent page shows it from here, and names no other server.
    let (browser, _) = app.signed_in("alice").await;
    let r = consent_page(&browser, id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("img-src 'self' data:;"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains(&format!("src=\"/apps/{id}/photo?v=")), "{page}");
    assert!(!page.contains(&photos.base), "the partner's server is not named: {page}");
    assert!(!page.contains("src=\"http"), "no image from an absolute address: {page}");
    // Pages and the photo itself never go back to the partner's server.
    app.http().get(&photo_url).send().await.unwrap();
    assert_eq!(photos.hits(), 1);

    // Changing the URL fetches the new one, once; the app's own address
    // (as `client show` prints it) leaves the photo as it is.
    app.clock.advance(5);
    let changed = change_photo(&app, id, Some(&photos.url("/p.png?second"))).await.unwrap();
    assert_eq!(photos.hits(), 2);
    let new_url = changed.photo_url.clone().unwrap();
    assert_ne!(new_url, photo_url, "a new version");
    change_photo(&app, id, Some(&new_url)).await.unwrap();
    change_photo(&app, id, Some(&photo_url)).await.unwrap();
    assert_eq!(photos.hits(), 2);
    assert_eq!(app.state.store.client(id).await.unwrap().unwrap().photo_url, Some(new_url));

    // Clearing it forgets the stored photo.
    let cleared = change_photo(&app, id, None).await.unwrap();
    assert_eq!(cleared.photo_url, None);
    assert_eq!(app.state.store.client_photo(id).await.unwrap(), None);
    assert_eq!(
        app.http().get(app.url(&format!("/apps/{id}/photo"))).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_photo_url_that_gives_no_photo_is_a_field_error_and_changes_nothing() {
    let photos = PhotoServer::start().await;
    let app = loopback_allowed().await;
    let cases = [
        ("/logo.svg", "PNG, JPEG, GIF or WebP"),
        ("/page.html", "PNG, JPEG, GIF or WebP"),
        ("/big.png", "larger than 256 KB"),
        ("/missing.png", "HTTP 404"),
        ("/moved.png", "redirect"),
    ];
    for (path, says) in cases {
        let message = photo_refusal(register_with_photo(&app, &photos.url(path)).await);
        assert!(message.contains(says), "{path}: {message}");
    }
    // A server that is not there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let message = photo_refusal(register_with_photo(&app, &format!("http://{closed}/p.png")).await);
    assert!(message.contains("could not be fetched"), "{message}");
    assert!(app.state.store.clients().await.unwrap().is_empty(), "nothing was registered");

    // A change to a bad photo leaves the good one in place.
    let client = register_with_photo(&app, &photos.url("/p.png")).await.unwrap();
    app.clock.advance(5);
    for (path, _) in cases {
        photo_refusal(change_photo(&app, &client.id, Some(&photos.url(path))).await);
    }
    let kept = app.state.store.client(&client.id).await.unwrap().unwrap();
    assert_eq!(kept.photo_url, client.photo_url);
    assert_eq!(
        app.state.store.client_photo(&client.id).await.unwrap(),
        Some(("image/png".to_owned(), PNG.to_vec()))
    );
}

#[tokio::test]
async fn photos_are_not_fetched_from_the_platforms_own_network() {
    let photos = PhotoServer::start().await;
    let port = url::Url::parse(&photos.base).unwrap().port().unwrap();
    // http on loopback is not allowed here, as in production.
    let app = spawn_app().await;
    let cases = [
        (format!("http://127.0.0.1:{port}/p.png"), "private or reserved"),
        (format!("http://localhost:{port}/p.png"), "use https"),
        (format!("https://127.0.0.1:{port}/p.png"), "private or reserved"),
        (format!("https://localhost:{port}/p.png"), "private or reserved"),
        ("https://10.0.0.7/p.png".to_owned(), "private or reserved"),
        ("https://169.254.169.254/latest/meta-data".to_owned(), "private or reserved"),
        ("https://[fd00::1]/p.png".to_owned(), "private or reserved"),
        ("ftp://partner.example/p.png".to_owned(), "https"),
        ("javascript:alert(1)".to_owned(), "https"),
        ("not a url".to_owned(), "not an absolute URL"),
    ];
    for (url, says) in &cases {
        let message = photo_refusal(register_with_photo(&app, url).await);
        assert!(message.contains(says), "{url}: {message}");
    }
    assert_eq!(photos.hits(), 0, "nothing in the platform's network was reached");
    assert!(app.state.store.clients().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_portal_fetches_a_photo_url_and_shows_a_failure_next_to_the_field() {
    let photos = PhotoServer::start().await;
    let app = loopback_allowed().await;
    let (b, dev) = app.signed_in("dev").await;
    let post = |photo_url: String| {
        let b = &b;
        async move {
            let mut fields = vec![("csrf_token".to_owned(), csrf_of(b, "/developers/apps/new").await)];
            fields.extend(app_form("Pictured"));
            fields.push(("photo_url".to_owned(), photo_url));
            b.post_form("/developers/apps", &fields).await
        }
    };
    let r = post(photos.url("/logo.svg")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    let error = element_text(&page, "photo_url-error").expect("the error is next to the photo URL");
    assert!(error.contains("PNG, JPEG, GIF or WebP"), "{error}");
    assert!(page.contains(&photos.url("/logo.svg")), "what was typed is kept");
    assert!(app.state.store.clients_of_owner(&dev.id).await.unwrap().is_empty());

    let r = b.follow(post(photos.url("/p.png")).await).await;
    assert_eq!(r.status(), StatusCode::OK);
    let id = element_text(&r.text().await.unwrap(), "app-id").unwrap();
    for path in [format!("/developers/apps/{id}"), format!("/developers/apps/{id}/edit"), "/developers".to_owned()] {
        let page = b.get(&path).await.text().await.unwrap();
        assert!(page.contains(&format!("src=\"/apps/{id}/photo?v=")), "{path}: {page}");
        assert!(!page.contains(&photos.base), "{path}");
    }
    assert_eq!(
        app.http().get(app.url(&format!("/apps/{id}/photo"))).send().await.unwrap().bytes().await.unwrap().as_ref(),
        PNG
    );
}

/// An app registered before photos were fetched may still hold a partner's
/// address: no page shows it (no image rather than a third party's).
#[tokio::test]
async fn a_photo_address_kept_from_before_is_never_shown() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let mut c = client.client.clone();
    c.photo_url = Some("https://partner.example/logo.png".into());
    app.state.store.update_client(&c, None, Actor::system()).await.unwrap();
    app.state.store.delete_client_photo(&c.id).await.unwrap();
    let (browser, _) = app.signed_in("alice").await;
    let page = consent_page(&browser, client.id()).await.text().await.unwrap();
    assert!(page.contains("Partner App"));
    assert!(!page.contains("partner.example/logo.png"), "{page}");
    assert!(!page.contains("<img src="), "no photo at all: {page}");
}
