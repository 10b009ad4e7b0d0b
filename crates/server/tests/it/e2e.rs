//! The whole flow over TCP with an independent client library, the `oauth2`
//! crate, playing the partner app: authorization URL with PKCE and state,
//! a person's login and consent, code exchange, refresh, and a denial.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl,
    Scope, TokenResponse, TokenUrl,
};
use reqwest::StatusCode;

use super::*;

fn http_client() -> oauth2::reqwest::Client {
    oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Opens `auth_url` in `browser` (already signed in), decides, and returns
/// the authorization response's query.
async fn visit(
    browser: &Browser,
    auth_url: &str,
    decision: &str,
) -> std::collections::HashMap<String, String> {
    let r = browser.http.get(auth_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "consent page expected");
    let page = r.text().await.unwrap();
    let r = browser.consent(&page, decision).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = location(&r);
    assert!(loc.starts_with(REDIRECT));
    query_of(&loc)
}

#[tokio::test]
async fn oauth2_crate_runs_the_flow_with_pkce_refresh_and_denial() {
    let app = spawn_app().await;
    let registered = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let client = BasicClient::new(ClientId::new(registered.id().to_owned()))
        .set_client_secret(ClientSecret::new(registered.secret.clone().unwrap()))
        .set_auth_uri(AuthUrl::new(app.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(app.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap());
    let http = http_client();

    // Allow, with PKCE.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("profile_read".into()))
        .add_scope(Scope::new("profile_write".into()))
        .set_pkce_challenge(challenge)
        .url();
    let response = visit(&browser, auth_url.as_str(), "allow").await;
    assert_eq!(&response["state"], csrf.secret());
    assert_eq!(response["iss"], app.base);
    let token = client
        .exchange_code(AuthorizationCode::new(response["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    assert_eq!(token.expires_in().map(|d| d.as_secs()), Some(7200));
    let scopes: Vec<String> = token
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(scopes, vec!["profile_read", "profile_write"]);
    assert_eq!(app.me(token.access_token().secret()).await, StatusCode::OK);

    // Refresh.
    let refreshed = client
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http)
        .await
        .expect("refresh");
    assert_eq!(
        app.me(refreshed.access_token().secret()).await,
        StatusCode::OK
    );
    assert_eq!(
        app.me(token.access_token().secret()).await,
        StatusCode::UNAUTHORIZED
    );
    let reuse = client
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http)
        .await;
    assert!(reuse.is_err(), "a rotated refresh token must be refused");

    // Deny: a new app, for which nothing has been granted yet.
    let fresh = app.confidential().await;
    let fresh_client = BasicClient::new(ClientId::new(fresh.id().to_owned()))
        .set_client_secret(ClientSecret::new(fresh.secret.clone().unwrap()))
        .set_auth_uri(AuthUrl::new(app.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(app.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap());
    let (auth_url, csrf) = fresh_client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("profile_read".into()))
        .url();
    let response = visit(&browser, auth_url.as_str(), "deny").await;
    assert_eq!(response["error"], "access_denied");
    assert_eq!(&response["state"], csrf.secret());
    assert!(!response.contains_key("code"));
}

#[tokio::test]
async fn oauth2_crate_as_a_public_client() {
    let app = spawn_app().await;
    let registered = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = app.signed_in("alice").await;
    let client = BasicClient::new(ClientId::new(registered.id().to_owned()))
        .set_auth_uri(AuthUrl::new(app.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(app.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("profile_read".into()))
        .set_pkce_challenge(challenge)
        .url();
    let response = visit(&browser, auth_url.as_str(), "allow").await;
    let token = client
        .exchange_code(AuthorizationCode::new(response["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http_client())
        .await
        .expect("public client exchange");
    assert_eq!(app.me(token.access_token().secret()).await, StatusCode::OK);
}
