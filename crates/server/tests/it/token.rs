//! The token endpoint: the authorization code grant, client authentication,
//! client credentials, and errors.

use healthgate_core::user::UserType;
use healthgate_server::config::Seconds;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn code_exchange_returns_the_seed_token_shape() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let r = app
        .http()
        .post(app.url("/oauth/token"))
        .basic_auth(client.id(), client.secret.as_deref())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body: Value = r.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().starts_with("hg_at_"));
    assert!(
        body["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("hg_rt_")
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scope"], "profile_read");
    assert_eq!(body["created_at"], app.clock.now());
}

/// HealthTap: Basic auth and a JSON body that repeats client_id.
#[tokio::test]
async fn healthtap_json_body_with_basic_auth() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let r = app
        .http()
        .post(app.url("/oauth/token"))
        .basic_auth(client.id(), client.secret.as_deref())
        .json(&json!({"grant_type": "authorization_code", "code": code, "client_id": client.id(), "redirect_uri": REDIRECT}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        app.me(body["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
}

/// HealthKey / Fullscript: client_id and client_secret in the body.
#[tokio::test]
async fn client_secret_in_the_body() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let secret = client.secret.clone().unwrap();
    let (status, body) = app
        .token(
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", client.id()),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn code_replay_revokes_tokens() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let (status, first) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let access = first["access_token"].as_str().unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();
    assert_eq!(app.me(access).await, StatusCode::OK);

    let (status, replay) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(replay["error"], "invalid_grant");
    assert_eq!(app.me(access).await, StatusCode::UNAUTHORIZED);
    let (status, body) = app.refresh(&client, refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    // The trail (and the partner's webhook) hear of it.
    let events = app.state.store.events(None, 50).await.unwrap();
    let revoked: Vec<_> = events.iter().filter(|e| e.kind == "token.family_revoked").collect();
    assert_eq!(revoked.len(), 1, "{events:?}");
    assert_eq!(revoked[0].client_id.as_deref(), Some(client.id()));
    let replayed: Vec<_> = events.iter().filter(|e| e.kind == "code.replayed").collect();
    assert_eq!(replayed.len(), 1, "{events:?}");
    assert_eq!(replayed[0].outcome, "failure");
    // It names the client and the address it came from.
    assert_eq!(replayed[0].client_id.as_deref(), Some(client.id()));
    assert_eq!(replayed[0].ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_code_redemptions_yield_exactly_one_success() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let attempts = (0..20).map(|_| app.exchange(&client, &code, &[]));
    let results = join_all(attempts).await;
    let wins: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(wins.len(), 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
    }
    // The replays revoked the winner's tokens too.
    assert_eq!(
        app.me(wins[0]["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn code_is_bound_to_client_and_redirect_uri() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let other = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;

    let (status, body) = app.exchange(&other, &code, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let basic = (client.id(), client.secret.as_deref().unwrap());
    let (status, body) = app
        .token(
            Some(basic),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://partner.example/other"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, body) = app
        .token(
            Some(basic),
            &[("grant_type", "authorization_code"), ("code", &code)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // Failed bindings do not burn the code: the rightful client still redeems it.
    let (status, _) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn pkce_rfc7636_appendix_b_vector() {
    let app = spawn_app().await;
    let client = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app
        .code(
            &browser,
            &client,
            &[
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    let (status, body) = app
        .exchange(&client, &code, &[("code_verifier", VERIFIER)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn pkce_missing_wrong_and_downgraded_verifiers_fail() {
    let app = spawn_app().await;
    let public = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let confidential = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let pkce = [
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    let code = app.code(&browser, &public, &pkce).await;
    let wrong = "A".repeat(43);
    for extra in [
        vec![],
        vec![("code_verifier", wrong.as_str())],
        vec![("code_verifier", CHALLENGE)],
        vec![("code_verifier", "short")],
    ] {
        let (status, body) = app.exchange(&public, &code, &extra).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{extra:?}"
        );
    }
    // A verifier for a code that had no challenge fails too.
    let plain_code = app.code(&browser, &confidential, &[]).await;
    let (status, body) = app
        .exchange(&confidential, &plain_code, &[("code_verifier", VERIFIER)])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The public client's code still works with the right verifier.
    let (status, _) = app
        .exchange(&public, &code, &[("code_verifier", VERIFIER)])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn expired_code_is_rejected() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    app.clock.advance(600);
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn code_lifetime_is_configurable() {
    let app = spawn_app_with(|s| s.authorization_code_ttl = Seconds::of(30)).await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    app.clock.advance(29);
    assert_eq!(app.exchange(&client, &code, &[]).await.0, StatusCode::OK);
    let code = app.code(&browser, &client, &[]).await;
    app.clock.advance(30);
    assert_eq!(
        app.exchange(&client, &code, &[]).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn client_authentication_failures_are_401_with_www_authenticate() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let public = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "hg_ac_x"),
        ("redirect_uri", REDIRECT),
    ];
    // (Basic credentials, extra body parameters)
    type Case<'a> = (Option<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (Some((client.id(), "hg_cs_wrong")), vec![]),
        (Some(("app-unknown", "hg_cs_wrong")), vec![]),
        (None, vec![("client_id", client.id())]),
        (
            None,
            vec![("client_id", client.id()), ("client_secret", "wrong")],
        ),
        (None, vec![]),
        (
            None,
            vec![("client_id", public.id()), ("client_secret", "anything")],
        ),
    ];
    for (basic, extra) in cases {
        let mut f = form.to_vec();
        f.extend(extra.iter().copied());
        let r = {
            let mut req = app.http().post(app.url("/oauth/token")).form(&f);
            if let Some((id, s)) = basic {
                req = req.basic_auth(id, Some(s));
            }
            req.send().await.unwrap()
        };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{basic:?} {extra:?}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }
}

#[tokio::test]
async fn malformed_token_requests_are_rfc_errors() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let basic = Some((client.id(), client.secret.as_deref().unwrap()));
    let (s, b) = app.token(basic, &[("code", "x")]).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (s, b) = app
        .token(
            basic,
            &[
                ("grant_type", "password"),
                ("username", "a"),
                ("password", "b"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (s, b) = app
        .token(basic, &[("grant_type", "authorization_code")])
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (s, b) = app
        .token(
            basic,
            &[
                ("grant_type", "authorization_code"),
                ("code", "hg_ac_unknown"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // Repeated parameters, a broken JSON body, a foreign content type.
    let r = app
        .http()
        .post(app.url("/oauth/token"))
        .basic_auth(client.id(), client.secret.as_deref())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=authorization_code&code=a&code=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    for (ct, body) in [
        ("application/json", "{not json"),
        ("text/plain", "grant_type=client_credentials"),
    ] {
        let r = app
            .http()
            .post(app.url("/oauth/token"))
            .basic_auth(client.id(), client.secret.as_deref())
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{ct}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"], "invalid_request");
        assert!(b["error_description"].is_string());
    }
}

#[tokio::test]
async fn client_credentials_for_confidential_clients_within_scope() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let basic = Some((client.id(), client.secret.as_deref().unwrap()));
    let (s, b) = app
        .token(
            basic,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "profile_read"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["scope"], "profile_read");
    assert!(
        b.get("refresh_token").is_none(),
        "no refresh token for client credentials"
    );
    // Speaks for no user.
    assert_eq!(
        app.me(b["access_token"].as_str().unwrap()).await,
        StatusCode::FORBIDDEN
    );
    let (s, b) = app
        .token(basic, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(
        (s, b["scope"].as_str()),
        (StatusCode::OK, Some("profile_read profile_write"))
    );
    let (s, b) = app
        .token(
            basic,
            &[("grant_type", "client_credentials"), ("scope", "pay")],
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let public = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let (s, b) = app
        .token(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", public.id()),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
}

#[tokio::test]
async fn locked_users_get_no_tokens() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, user) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    sqlx_lock(&app, &user.id).await;
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

/// Locks an account through the admin path the CLI uses.
async fn sqlx_lock(app: &TestApp, user_id: &str) {
    app.state
        .store
        .lock_user(user_id, app.clock.now())
        .await
        .expect("lock");
}

#[tokio::test]
async fn token_endpoint_is_for_every_user_type() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    app.user("doc", UserType::Expert).await;
    let browser = app.browser();
    browser.login("doc", PASSWORD).await;
    let code = app.code(&browser, &client, &[]).await;
    assert_eq!(app.exchange(&client, &code, &[]).await.0, StatusCode::OK);
}
