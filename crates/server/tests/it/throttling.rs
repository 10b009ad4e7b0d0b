//! Guessing stopped (issue 13, item 1): failed sign-ins slow down and then
//! lock a username, known or not, the same way; a client id past its
//! failures is refused with 429; an address past its rate is refused; a
//! burst from one address is audited. Time moves with the test clock.

use reqwest::StatusCode;
use serde_json::Value;

use super::*;

/// One sign-in from a fresh browser: its status, `Retry-After`, and the
/// message the page shows (or none).
async fn sign_in(app: &TestApp, username: &str, password: &str) -> (StatusCode, Option<i64>, String) {
    let r = app.browser().login(username, password).await;
    let status = r.status();
    let wait = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<i64>().unwrap());
    let page = r.text().await.unwrap();
    let said = page
        .find("id=\"login-error\">")
        .map(|i| {
            let rest = &page[i + "id=\"login-error\">".len()..];
            unescape_html(&rest[..rest.find("</p>").unwrap()])
        })
        .unwrap_or_default();
    (status, wait, said)
}

/// An event's data.
fn data(event: &healthgate_store::StoredEvent) -> Value {
    serde_json::from_str(event.data.as_deref().expect("data")).unwrap()
}

/// `text` with the instant after "until " (the stories run at different
/// times) left out.
fn without_instant(text: &str) -> String {
    match text.split_once("until ") {
        Some((before, after)) => {
            let rest = after.split_once(" UTC").map_or("", |(_, rest)| rest);
            format!("{before}until WHEN{rest}")
        }
        None => text.to_owned(),
    }
}

/// No limit per address: these tests count the failures per username.
fn no_address_rate(s: &mut Settings) {
    s.throttle.sign_in_per_minute = 0;
}

#[tokio::test]
async fn failed_sign_ins_wait_longer_then_lock_the_username_known_or_not_alike() {
    let app = spawn_app_with(no_address_rate).await;
    app.user("alice", UserType::Member).await;
    // The same story for an account and for a username without one.
    let mut stories: Vec<Vec<(StatusCode, Option<i64>, String)>> = Vec::new();
    for username in ["alice", "nobody"] {
        let mut story = Vec::new();
        // Five wrong passwords: each answered at once, the generic way.
        for _ in 0..5 {
            story.push(sign_in(&app, username, "wrong password").await);
        }
        // The sixth straight after waits a second, whatever it presents;
        // then each failure doubles the wait: 2, 4, 8, 16.
        story.push(sign_in(&app, username, PASSWORD).await);
        for wait in [1, 2, 4, 8, 16] {
            app.clock.advance(wait);
            story.push(sign_in(&app, username, "wrong password").await);
        }
        // The tenth failure locked it: the right password is refused too.
        story.push(sign_in(&app, username, PASSWORD).await);
        app.clock.advance(60);
        story.push(sign_in(&app, username, PASSWORD).await);
        stories.push(
            story
                .into_iter()
                .map(|(s, w, said)| (s, w, without_instant(&said.replace(username, "NAME"))))
                .collect(),
        );
        // Past the lock: the run is forgotten.
        app.clock.advance(900);
    }
    let [alice, nobody] = [&stories[0], &stories[1]];
    assert_eq!(alice, nobody, "a username without an account is answered alike");
    let statuses: Vec<u16> = alice.iter().map(|(s, _, _)| s.as_u16()).collect();
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 429, 401, 401, 401, 401, 401, 429, 429]
    );
    assert_eq!(alice[0].2, "The username or password is incorrect.");
    assert_eq!(alice[5].1, Some(1));
    assert!(alice[5].2.contains("Wait 1 second"), "{}", alice[5].2);
    // Locked: until when, and whom to ask, even with the right password.
    assert_eq!(alice[11].1, Some(900));
    assert!(
        alice[11].2.contains("cannot sign in until") && alice[11].2.contains("unlock"),
        "{}",
        alice[11].2
    );
    assert_eq!(alice[12].1, Some(900 - 60));

    // Both locks are over: the right password signs alice in, and the
    // success forgets her run.
    let (status, _, _) = sign_in(&app, "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        app.state
            .store
            .failure_run(healthgate_store::ThrottleKind::SignIn, "alice")
            .await
            .unwrap()
            .is_none()
    );

    // Audited: the start of each slow-down and each lock, with the
    // account when there is one.
    let throttled = app.events_of("login.throttled").await;
    let locked = app.events_of("login.locked").await;
    assert_eq!((throttled.len(), locked.len()), (2, 2));
    let alice_id = app
        .state
        .store
        .user_by_username("alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    let lock_of = |name: &str| {
        locked
            .iter()
            .find(|e| data(e)["username"] == name)
            .unwrap()
    };
    assert_eq!(lock_of("alice").subject.as_deref(), Some(alice_id.as_str()));
    assert_eq!(lock_of("nobody").subject, None);
    assert_eq!(data(lock_of("alice"))["failures"], 10);
}

#[tokio::test]
async fn a_success_before_the_lock_starts_the_count_again() {
    let app = spawn_app_with(no_address_rate).await;
    app.user("alice", UserType::Member).await;
    for _ in 0..4 {
        assert_eq!(
            sign_in(&app, "alice", "wrong password").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(sign_in(&app, "alice", PASSWORD).await.0, StatusCode::SEE_OTHER);
    for _ in 0..5 {
        assert_eq!(
            sign_in(&app, "alice", "wrong password").await.0,
            StatusCode::UNAUTHORIZED,
            "five free failures again"
        );
    }
    assert_eq!(
        sign_in(&app, "alice", "wrong password").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn one_address_is_limited_and_a_burst_of_usernames_is_audited() {
    let app = spawn_app_with(|s| {
        s.throttle.sign_in_burst = std::num::NonZeroU32::new(12).unwrap();
        s.throttle.sign_in_per_minute = 6;
    })
    .await;
    // Eleven usernames, one wrong password each, from one address.
    for n in 0..11 {
        let (status, _, _) = sign_in(&app, &format!("user{n}"), "wrong password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let bursts = app.events_of("login.burst").await;
    assert_eq!(bursts.len(), 1, "once per window");
    assert_eq!(bursts[0].ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(data(&bursts[0])["accounts"], 10);
    // The twelfth attempt is the burst's last; the thirteenth waits for the
    // bucket (six a minute: one every ten seconds), whoever it is for.
    assert_eq!(
        sign_in(&app, "user11", "wrong password").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, wait, said) = sign_in(&app, "someone", PASSWORD).await;
    assert_eq!((status, wait), (StatusCode::TOO_MANY_REQUESTS, Some(10)));
    assert!(said.contains("from your network"), "{said}");
    app.clock.advance(10);
    assert_eq!(
        sign_in(&app, "user12", "wrong password").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// A token request with client credentials and `secret`.
async fn client_credentials(app: &TestApp, client: &TestClient, secret: &str) -> (StatusCode, Value) {
    app.token(
        Some((client.id(), secret)),
        &[("grant_type", "client_credentials")],
    )
    .await
}

#[tokio::test]
async fn a_client_past_its_failures_is_refused_everywhere_then_comes_back() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let secret = client.secret.clone().unwrap();
    let (alice_access, _) = tokens_for(&app, &client, "alice").await;
    for n in 1..=20 {
        let (status, body) = client_credentials(&app, &client, "guessed").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "failure {n}: {body}");
    }
    // Blocked: even the right secret, at every endpoint it authenticates at.
    let (status, body) = client_credentials(&app, &client, &secret).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "too_many_requests");
    let r = app
        .http()
        .post(app.url("/oauth/introspect"))
        .basic_auth(client.id(), Some(&secret))
        .form(&[("token", alice_access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((299..=300).contains(&wait), "{wait}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let r = app
        .http()
        .post(app.url("/oauth/revoke"))
        .basic_auth(client.id(), Some(&secret))
        .form(&[("token", alice_access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = app
        .http()
        .get(app.url("/api/v1/integrations"))
        .basic_auth(client.id(), Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The token it holds still works where it is the user's, not the
    // client's, credential.
    assert_eq!(app.me(&alice_access).await, StatusCode::OK);

    // Audited once, and the partner is told.
    let throttled = app.events_of("client.throttled").await;
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0].client_id.as_deref(), Some(client.id()));
    assert_eq!(data(&throttled[0])["failures"], 20);

    // Five minutes later it works again.
    app.clock.advance(301);
    let (status, body) = client_credentials(&app, &client, &secret).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn guessed_codes_count_against_the_client() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    for n in 1..=20 {
        let (status, body) = app.exchange(&client, &format!("hg_ac_guess{n}"), &[]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "guess {n}"
        );
    }
    // The twenty-first guess is not looked at, nor is a real code.
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let (status, body) = app.exchange(&client, &code, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Another client is not affected.
    let other = app.confidential().await;
    let (status, _) = client_credentials(&app, &other, other.secret.as_deref().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_client_id_is_counted_like_a_known_one() {
    let app = spawn_app().await;
    let stranger = |n: u32| {
        let app = &app;
        async move {
            app.token(
                Some(("app-made-up", "guessed")),
                &[("grant_type", "client_credentials"), ("n", &n.to_string())],
            )
            .await
            .0
        }
    };
    for n in 1..=20 {
        assert_eq!(stranger(n).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(stranger(21).await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn one_address_past_the_api_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.throttle.api_per_minute = 60;
        s.throttle.api_burst = std::num::NonZeroU32::new(3).unwrap();
    })
    .await;
    let discovery = || async {
        app.http()
            .get(app.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(discovery().await.status(), StatusCode::OK);
    }
    let r = discovery().await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    // Pages are not counted against it.
    assert_eq!(app.http().get(app.url("/login")).send().await.unwrap().status(), StatusCode::OK);
    app.clock.advance(1);
    assert_eq!(discovery().await.status(), StatusCode::OK);
}

#[tokio::test]
async fn guessed_connect_codes_count_against_the_partner() {
    let app = spawn_app().await;
    let partner = app.confidential().await;
    let secret = partner.secret.clone().unwrap();
    let guess = |n: u32| {
        let (app, id, secret) = (&app, partner.id().to_owned(), secret.clone());
        async move {
            let r = app
                .http()
                .post(app.url("/api/oauth/tokens"))
                .basic_auth(id, Some(secret))
                .form(&[("code", format!("hg_cc_guess{n}"))])
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    for n in 1..=20 {
        let (status, body) = guess(n).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "guess {n}"
        );
    }
    let (status, body) = guess(21).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
}

#[tokio::test]
async fn wrong_current_passwords_on_the_profile_count_like_failed_sign_ins() {
    let app = spawn_app_with(no_address_rate).await;
    let (alice, _) = app.signed_in("alice").await;
    let change = |current: &'static str| {
        let alice = &alice;
        async move {
            let page = alice.get("/account/profile").await.text().await.unwrap();
            let csrf = hidden_inputs(&page).remove("csrf_token").unwrap();
            let form = vec![
                ("csrf_token".to_owned(), csrf),
                ("current_password".to_owned(), current.to_owned()),
                ("new_password".to_owned(), "a brand new passphrase".to_owned()),
                (
                    "new_password_confirmation".to_owned(),
                    "a brand new passphrase".to_owned(),
                ),
            ];
            let r = alice.post_form("/account/profile/password", &form).await;
            (r.status(), readable(r.text().await.unwrap()))
        }
    };
    for _ in 0..10 {
        let (status, page) = change("guessed password").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("That is not your current password"), "{page}");
        app.clock.advance(61);
    }
    // The tenth locked the username: the right password is not looked at,
    // here or at sign-in.
    let (status, page) = change(PASSWORD).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Too many wrong passwords"), "{page}");
    assert_eq!(
        sign_in(&app, "alice", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(app.events_of("user.password_change_failed").await.len(), 10);
    assert_eq!(app.events_of("login.locked").await.len(), 1);
}
