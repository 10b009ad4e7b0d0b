//! OpenID Connect with an independent relying party, the `openidconnect`
//! crate: discovery, the code flow with a nonce and PKCE, the ID token's
//! signature, nonce and at_hash checked against the published JWKS,
//! UserInfo, and key rotation without a failed verification.

use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::Value;

use super::*;

fn http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn oidc_client(app: &TestApp, registered: &TestClient) -> CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
> {
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(app.base.clone()).unwrap(), &http())
        .await
        .expect("discovery");
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(registered.id().to_owned()),
        registered.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap())
}

/// Signs in, runs the flow, and returns the token response and the nonce.
async fn sign_in(app: &TestApp, browser: &Browser, client: &TestClient) -> (openidconnect::core::CoreTokenResponse, Nonce, StatusCode) {
    let rp = oidc_client(app, client).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = rp
        .authorize_url(AuthenticationFlow::<CoreResponseType>::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    let r = browser.http.get(url.as_str()).send().await.unwrap();
    let location = if r.status() == StatusCode::OK {
        let page = r.text().await.unwrap();
        location(&browser.consent(&page, "allow").await)
    } else {
        location(&r)
    };
    let q = query_of(&location);
    assert_eq!(&q["state"], csrf.secret());
    let tokens = rp
        .exchange_code(AuthorizationCode::new(q["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .expect("code exchange");
    (tokens, nonce, StatusCode::OK)
}

async fn oidc_app_client(app: &TestApp) -> TestClient {
    app.register(ClientSpec {
        scope: "openid profile email profile_read",
        ..ClientSpec::default()
    })
    .await
}

#[tokio::test]
async fn a_certified_style_relying_party_signs_in_and_verifies_the_id_token() {
    let app = spawn_app().await;
    let client = oidc_app_client(&app).await;
    let (browser, user) = app.signed_in("alice").await;
    let (tokens, nonce, _) = sign_in(&app, &browser, &client).await;

    let rp = oidc_client(&app, &client).await;
    let verifier = rp.id_token_verifier();
    let id_token = tokens.id_token().expect("an ID token for the openid scope");
    let claims = id_token.claims(&verifier, &nonce).expect("signature, issuer, audience, expiry and nonce check");
    assert_eq!(claims.subject().as_str(), user.id);
    assert!(claims.auth_time().is_some());
    let expected = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected));
    // Another nonce does not pass.
    assert!(id_token.claims(&verifier, &Nonce::new("other".into())).is_err());

    let info: CoreUserInfoClaims = rp
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http())
        .await
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), user.id);
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some("alice"));
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.org"));
}

#[tokio::test]
async fn no_id_token_without_openid_and_userinfo_needs_it() {
    let app = spawn_app().await;
    let client = oidc_app_client(&app).await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[("scope", "profile_read")]).await;
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("id_token").is_none());
    let r = app
        .http()
        .get(app.url("/oauth/userinfo"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn key_rotation_never_fails_a_verification() {
    let app = spawn_app().await;
    let client = oidc_app_client(&app).await;
    let (browser, _) = app.signed_in("alice").await;
    let (before, nonce_before, _) = sign_in(&app, &browser, &client).await;

    let added = healthgate_server::services::keys::rotate(&app.state.store, &app.state.settings, app.clock.now())
        .await
        .unwrap();
    let (new_kid, from) = added[0].clone();
    assert_eq!(from, app.clock.now() + 3600);
    let jwks: Value = app.http().get(app.url("/oauth/jwks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "the new key is published before it signs");

    // During the overlap the old key still signs; afterwards the new one does.
    let (during, nonce_during, _) = sign_in(&app, &browser, &client).await;
    app.clock.advance(3601);
    let (after, nonce_after, _) = sign_in(&app, &browser, &client).await;
    assert_ne!(kid_of(&before), new_kid);
    assert_eq!(kid_of(&during), kid_of(&before));
    assert_eq!(kid_of(&after), new_kid);

    // A relying party that discovers now verifies every one of them.
    let rp = oidc_client(&app, &client).await;
    let verifier = rp.id_token_verifier();
    for (tokens, nonce) in [(&before, &nonce_before), (&during, &nonce_during), (&after, &nonce_after)] {
        let id = tokens.id_token().unwrap();
        assert!(id.claims(&verifier, nonce).is_ok(), "kid {}", kid_of(tokens));
    }
}

/// The `kid` in an ID token's JOSE header.
fn kid_of(t: &openidconnect::core::CoreTokenResponse) -> String {
    use base64::Engine;
    let body = serde_json::to_value(t).unwrap();
    let jwt = body["id_token"].as_str().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').next().unwrap())
        .unwrap();
    serde_json::from_slice::<Value>(&header).unwrap()["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn openid_provider_metadata() {
    let app = spawn_app().await;
    let m: Value = app
        .http()
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], app.base);
    assert_eq!(m["jwks_uri"], app.url("/oauth/jwks"));
    assert_eq!(m["userinfo_endpoint"], app.url("/oauth/userinfo"));
    assert_eq!(m["id_token_signing_alg_values_supported"], serde_json::json!(["ES256", "RS256"]));
    assert_eq!(m["code_challenge_methods_supported"], serde_json::json!(["S256"]));
}

fn oidc_request<'a>(client: &'a TestClient, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("response_type", "code"),
        ("client_id", client.id()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", "st"),
        ("nonce", "n-1"),
    ];
    p.extend_from_slice(extra);
    p
}

#[tokio::test]
async fn prompt_none_answers_without_a_page() {
    let app = spawn_app().await;
    let client = oidc_app_client(&app).await;
    app.user("alice", healthgate_core::user::UserType::Member).await;
    let browser = app.browser();
    let r = browser.authorize(&oidc_request(&client, &[("prompt", "none")])).await;
    let q = query_of(&location(&r));
    assert_eq!((q["error"].as_str(), q["state"].as_str()), ("login_required", "st"));

    browser.login("alice", PASSWORD).await;
    let r = browser.authorize(&oidc_request(&client, &[("prompt", "none")])).await;
    assert_eq!(query_of(&location(&r))["error"], "consent_required");

    app.code(&browser, &client, &[("scope", "openid profile")]).await;
    let r = browser.authorize(&oidc_request(&client, &[("prompt", "none")])).await;
    assert!(query_of(&location(&r)).contains_key("code"), "remembered consent: a code without a page");

    let r = browser.authorize(&oidc_request(&client, &[("prompt", "none login")])).await;
    assert_eq!(query_of(&location(&r))["error"], "invalid_request");
}

#[tokio::test]
async fn prompt_login_and_max_age_ask_to_sign_in_again() {
    let app = spawn_app().await;
    let client = oidc_app_client(&app).await;
    let (browser, _) = app.signed_in("alice").await;
    app.code(&browser, &client, &[("scope", "openid profile")]).await;

    // prompt=login: back to the login page, then to the request without it.
    let r = browser.authorize(&oidc_request(&client, &[("prompt", "login")])).await;
    let login = location(&r);
    assert!(login.starts_with("/login?return_to="), "{login}");
    let return_to = query_of(&login)["return_to"].clone();
    assert!(!return_to.contains("prompt"), "{return_to}");
    let page = browser.get(&login).await.text().await.unwrap();
    let mut form = hidden_input_list(&page);
    form.push(("username".into(), "alice".into()));
    form.push(("password".into(), PASSWORD.into()));
    let r = browser.post_form("/login", &form).await;
    assert_eq!(location(&r), return_to);
    let r = browser.get(&return_to).await;
    assert!(query_of(&location(&r)).contains_key("code"));

    // max_age: a sign-in older than that must be repeated; a recent one is fine.
    app.clock.advance(120);
    let r = browser.authorize(&oidc_request(&client, &[("max_age", "60")])).await;
    assert!(location(&r).starts_with("/login?"));
    let r = browser.authorize(&oidc_request(&client, &[("max_age", "3600")])).await;
    assert!(query_of(&location(&r)).contains_key("code"));
    let r = browser.authorize(&oidc_request(&client, &[("max_age", "soon")])).await;
    assert_eq!(query_of(&location(&r))["error"], "invalid_request");
}

#[tokio::test]
async fn prompt_consent_asks_again() {
    let app = spawn_app().await;
    let client = oidc_app_client(&app).await;
    let (browser, _) = app.signed_in("alice").await;
    app.code(&browser, &client, &[("scope", "openid profile")]).await;
    let r = browser.authorize(&oidc_request(&client, &[("prompt", "consent")])).await;
    assert_eq!(r.status(), StatusCode::OK, "the consent page again");
}

#[tokio::test]
async fn jwt_access_tokens_verify_against_the_jwks_and_still_revoke() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    healthgate_server::services::admin::update_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        client.id(),
        healthgate_server::services::admin::ClientChanges {
            jwt_access_tokens: Some(true),
            ..Default::default()
        }, Actor::system(),
    )
    .await
    .unwrap();
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    assert!(healthgate_core::jose::looks_like_jwt(&access), "{access}");

    // A resource server checks it with the published key alone (RFC 9068).
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(access.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    let jwks: Value = app.http().get(app.url("/oauth/jwks")).send().await.unwrap().json().await.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the signing key is published");
    let claims = healthgate_core::jose::verify_es256(&access, jwk).expect("signature");
    assert_eq!(claims["client_id"], client.id());
    assert_eq!(claims["scope"], "profile_read");
    assert_eq!(claims["iss"], app.base);
    assert!(claims["sub"].as_str().unwrap().starts_with("usr-"));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 7200);

    // healthgate's own endpoints take it like an opaque token.
    assert_eq!(app.me(&access).await, StatusCode::OK);
    let introspected: Value = app
        .http()
        .post(app.url("/oauth/introspect"))
        .basic_auth(client.id(), client.secret.as_deref())
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true);
    let r = app
        .http()
        .post(app.url("/oauth/revoke"))
        .basic_auth(client.id(), client.secret.as_deref())
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED, "revoked: a JWT is still checked against the store here");
    // A forged token is not an access token.
    let forged = format!("{}x", &access[..access.len() - 1]);
    assert_eq!(app.me(&forged).await, StatusCode::UNAUTHORIZED);
    // Refresh gives a new JWT.
    let (status, body) = app.refresh(&client, &refresh).await;
    assert_eq!(status, StatusCode::OK);
    assert!(healthgate_core::jose::looks_like_jwt(body["access_token"].as_str().unwrap()));
}

#[tokio::test]
async fn rs256_is_available_per_client() {
    let app = spawn_app().await;
    let client = oidc_app_client(&app).await;
    healthgate_server::services::admin::update_client(
        &app.state.store,
        &app.state.settings,
        app.clock.as_ref(),
        client.id(),
        healthgate_server::services::admin::ClientChanges {
            id_token_alg: Some(healthgate_core::jose::Alg::Rs256),
            ..Default::default()
        }, Actor::system(),
    )
    .await
    .unwrap();
    let (browser, user) = app.signed_in("alice").await;
    let (tokens, nonce, _) = sign_in(&app, &browser, &client).await;
    let rp = oidc_client(&app, &client).await;
    let verifier = rp.id_token_verifier();
    let id_token = tokens.id_token().unwrap();
    assert_eq!(
        id_token.signing_alg().unwrap(),
        &openidconnect::core::CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
    );
    let claims = id_token.claims(&verifier, &nonce).expect("RS256 signature verifies");
    assert_eq!(claims.subject().as_str(), user.id);
}

/// An ID token that cannot be signed is found out before anything is
/// written: the request fails, no token is issued, and the code stays
/// unused, so the client can redeem it once signing works again.
#[tokio::test]
async fn an_id_token_that_cannot_be_signed_leaves_the_code_unused() {
    use healthgate_core::jose::Alg;
    use healthgate_store::StoredKey;
    let app = spawn_app().await;
    let client = oidc_app_client(&app).await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app
        .code(&browser, &client, &[("scope", "openid profile_read")])
        .await;
    // The key that signs now cannot be opened (sealed under another
    // instance's secret, say).
    let now = app.clock.now();
    app.state
        .store
        .add_signing_key(&StoredKey {
            kid: "unopenable".into(),
            alg: Alg::Es256.as_str().into(),
            private_key: "not a sealed key".into(),
            public_jwk: "{}".into(),
            created_at: now,
            active_from: now,
            retired_at: None,
        })
        .await
        .unwrap();
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"], "server_error", "{body}");
    assert!(body.get("access_token").is_none());
    assert!(app.events_of("token.issued").await.is_empty());
    let digest = healthgate_core::secret::digest(&code);
    let read = app.state.store.code_for_redemption(&digest).await.unwrap();
    assert!(!read.expect("the code is still there").consumed);

    // A key that opens takes over; the same code is redeemed once.
    app.clock.advance(1);
    healthgate_server::services::keys::add_key(
        &app.state.store,
        &app.state.settings,
        Alg::Es256,
        app.clock.now(),
        app.clock.now(),
    )
    .await
    .unwrap();
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["id_token"].as_str().is_some(), "{body}");
    assert_eq!(app.events_of("token.issued").await.len(), 1);
}
