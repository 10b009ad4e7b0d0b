//! The refresh token grant: rotation in both modes, reuse detection, scope
//! narrowing and redirect URI binding.

use healthgate_core::token::RefreshRotation;
use healthgate_server::config::Seconds;
use reqwest::StatusCode;

use super::*;

#[tokio::test]
async fn refresh_rotates_and_the_old_pair_dies_at_once() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;
    let (status, body) = app.refresh(&client, &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_access = body["access_token"].as_str().unwrap();
    let new_refresh = body["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, refresh);
    assert_eq!(body["scope"], "profile_read");
    // HealthKey: "This request invalidates the existing access_token and refresh_token."
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(new_access).await, StatusCode::OK);
}

#[tokio::test]
async fn rotated_refresh_token_replay_revokes_the_family() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (_, refresh) = tokens_for(&app, &client, "alice").await;
    let (_, second) = app.refresh(&client, &refresh).await;
    let live_access = second["access_token"].as_str().unwrap();
    let live_refresh = second["refresh_token"].as_str().unwrap();
    let (status, body) = app.refresh(&client, &refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The whole family is gone, including the pair the thief may hold.
    assert_eq!(app.me(live_access).await, StatusCode::UNAUTHORIZED);
    // The trail names the client and the address the replay came from.
    let reuse = app.events_of("token.reuse_detected").await;
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0].client_id.as_deref(), Some(client.id()));
    assert_eq!(reuse[0].ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        app.refresh(&client, live_refresh).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_leave_at_most_one_live_chain() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (_, refresh) = tokens_for(&app, &client, "alice").await;
    let results = join_all((0..20).map(|_| app.refresh(&client, &refresh))).await;
    let wins: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .collect();
    assert!(wins.len() <= 1, "{results:?}");
    let mut live = 0;
    for (_, body) in &wins {
        if app.me(body["access_token"].as_str().unwrap()).await == StatusCode::OK {
            live += 1;
        }
    }
    assert!(live <= 1);
}

/// Alice grants `client` `profile_read profile_write`; its refresh token.
async fn wide_grant(app: &TestApp, client: &TestClient) -> String {
    let (browser, _) = app.signed_in("alice").await;
    let scope = [("scope", "profile_read profile_write")];
    let code = app.code(&browser, client, &scope).await;
    let (status, body) = app.exchange(client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn refresh_may_narrow_but_never_widen_scope() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let refresh = wide_grant(&app, &client).await;
    let basic = Some((client.id(), client.secret.as_deref().unwrap()));
    let (s, b) = app
        .token(
            basic,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("scope", "profile_read pay"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (s, b) = app
        .token(
            basic,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("scope", "profile_write"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["scope"].as_str()),
        (StatusCode::OK, Some("profile_write")),
        "{b}"
    );
}

/// RFC 6749 §6: the new refresh token's scope "MUST be identical to that of
/// the refresh token included by the client". Narrowing a refresh narrows
/// that access token only; the grant keeps its whole scope, in both rotation
/// modes.
#[tokio::test]
async fn narrowed_refresh_keeps_the_grant_scope() {
    for rotation in [RefreshRotation::Immediate, RefreshRotation::OnFirstUse] {
        let app = spawn_app_with(|s| s.refresh_rotation = rotation).await;
        let client = app.confidential().await;
        let refresh = wide_grant(&app, &client).await;
        let basic = Some((client.id(), client.secret.as_deref().unwrap()));
        let (s, narrow) = app
            .token(
                basic,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &refresh),
                    ("scope", "profile_read"),
                ],
            )
            .await;
        assert_eq!(
            (s, narrow["scope"].as_str()),
            (StatusCode::OK, Some("profile_read")),
            "{rotation}: {narrow}"
        );
        // The narrowed access token carries the narrower scope.
        let narrow_access = narrow["access_token"].as_str().unwrap();
        let introspected = app.introspect(&client, narrow_access).await;
        assert_eq!(introspected["scope"], "profile_read", "{rotation}");
        // Its refresh token still stands for the whole grant.
        let next = narrow["refresh_token"].as_str().unwrap();
        assert_eq!(
            app.introspect(&client, next).await["scope"],
            "profile_read profile_write",
            "{rotation}"
        );
        let (s, again) = app.refresh(&client, next).await;
        assert_eq!(
            (s, again["scope"].as_str()),
            (StatusCode::OK, Some("profile_read profile_write")),
            "{rotation}: {again}"
        );
    }
}

#[tokio::test]
async fn refresh_redirect_uri_must_match_the_original() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (_, refresh) = tokens_for(&app, &client, "alice").await;
    let basic = Some((client.id(), client.secret.as_deref().unwrap()));
    let (s, b) = app
        .token(
            basic,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("redirect_uri", "https://partner.example/other"),
            ],
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // HealthKey sends the original redirect_uri with every refresh.
    let (s, b) = app
        .token(
            basic,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn refresh_tokens_of_another_client_are_refused() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let other = app.confidential().await;
    let (_, refresh) = tokens_for(&app, &client, "alice").await;
    let (s, b) = app.refresh(&other, &refresh).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(app.refresh(&client, &refresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn refresh_token_lifetime_is_configurable_and_non_expiring_by_default() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (_, refresh) = tokens_for(&app, &client, "alice").await;
    app.clock.advance(10 * 365 * 86_400);
    assert_eq!(app.refresh(&client, &refresh).await.0, StatusCode::OK);

    let app = spawn_app_with(|s| s.refresh_token_ttl = Some(Seconds::of(3600))).await;
    let client = app.confidential().await;
    let (_, refresh) = tokens_for(&app, &client, "alice").await;
    app.clock.advance(3600);
    let (s, b) = app.refresh(&client, &refresh).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn access_tokens_expire_after_two_hours() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (access, _) = tokens_for(&app, &client, "alice").await;
    app.clock.advance(7199);
    assert_eq!(app.me(&access).await, StatusCode::OK);
    app.clock.advance(1);
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
}

/// Fullscript: the old refresh token stays good until the new access or
/// refresh token is first used.
#[tokio::test]
async fn on_first_use_rotation_keeps_the_old_token_until_the_new_one_is_used() {
    let app = spawn_app_with(|s| s.refresh_rotation = RefreshRotation::OnFirstUse).await;
    let client = app.confidential().await;
    let (access, refresh) = tokens_for(&app, &client, "alice").await;

    let (s, first) = app.refresh(&client, &refresh).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    // The response got lost: the client retries with the old token and it still works.
    let (s, second) = app.refresh(&client, &refresh).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(
        app.me(&access).await,
        StatusCode::OK,
        "old access token lives until the new pair is used"
    );

    // Using the second pair retires the old refresh token, its access token,
    // and the first pair that was never used.
    let second_access = second["access_token"].as_str().unwrap();
    assert_eq!(app.me(second_access).await, StatusCode::OK);
    assert_eq!(app.me(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.me(first["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&client, first["refresh_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // The retired refresh token presented again is reuse: the family dies.
    let (s, b) = app.refresh(&client, &refresh).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(app.me(second_access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn on_first_use_rotation_by_refreshing_with_the_new_token() {
    let app = spawn_app_with(|s| s.refresh_rotation = RefreshRotation::OnFirstUse).await;
    let client = app.confidential().await;
    let (_, r0) = tokens_for(&app, &client, "alice").await;
    let (_, b1) = app.refresh(&client, &r0).await;
    let r1 = b1["refresh_token"].as_str().unwrap();
    let (s, b2) = app.refresh(&client, r1).await;
    assert_eq!(s, StatusCode::OK, "{b2}");
    // r1's use retired r0.
    assert_eq!(app.refresh(&client, &r0).await.0, StatusCode::BAD_REQUEST);
    // ...and that reuse revoked the family.
    assert_eq!(
        app.me(b2["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
}
