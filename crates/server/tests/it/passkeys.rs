//! Passkeys (issue 13, item 2) over HTTP, without a browser: a software
//! authenticator written here (a P-256 key from `ring`, its attestation
//! and assertions encoded by hand in CBOR, "none" attestation, as the
//! WebAuthn Level 2 spec lays them out) sets one up on the security page,
//! gives it at the second step and, with `passkey_sign_in`, signs in with
//! it alone. What a browser adds (the script, a real authenticator) is in
//! `browser.rs`, with Chromium's virtual authenticator.
//!
//! The issuer is `http://localhost:PORT`: browsers, and `webauthn-rs`,
//! take passkeys for domain names only, never for an IP address.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::*;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// CBOR (RFC 8949) as much as an attestation object needs.
mod cbor {
    pub fn head(major: u8, n: u64, out: &mut Vec<u8>) {
        let m = major << 5;
        match n {
            0..=23 => out.push(m | n as u8),
            24..=0xff => out.extend([m | 24, n as u8]),
            0x100..=0xffff => {
                out.push(m | 25);
                out.extend((n as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 26);
                out.extend((n as u32).to_be_bytes());
            }
        }
    }
    pub fn int(i: i64, out: &mut Vec<u8>) {
        if i >= 0 {
            head(0, i as u64, out)
        } else {
            head(1, (-1 - i) as u64, out)
        }
    }
    pub fn bytes(b: &[u8], out: &mut Vec<u8>) {
        head(2, b.len() as u64, out);
        out.extend_from_slice(b);
    }
    pub fn text(s: &str, out: &mut Vec<u8>) {
        head(3, s.len() as u64, out);
        out.extend_from_slice(s.as_bytes());
    }
    pub fn map(n: u64, out: &mut Vec<u8>) {
        head(5, n, out)
    }
}

/// A software authenticator: one passkey, kept (discoverable), verifying
/// its user (UV) every time.
pub struct SoftAuthenticator {
    rp_id: String,
    origin: String,
    key: EcdsaKeyPair,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
    /// Backup eligible (a synced passkey): `swk` rather than `hwk`.
    synced: bool,
}

impl SoftAuthenticator {
    pub fn new(app: &TestApp, synced: bool) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap();
        let mut credential_id = vec![0u8; 32];
        rng.fill(&mut credential_id).unwrap();
        Self {
            rp_id: app.state.issuer.host().to_owned(),
            origin: app.state.issuer.origin(),
            key,
            credential_id,
            user_handle: Vec::new(),
            counter: 0,
            synced,
        }
    }

    fn flags(&self, attested: bool) -> u8 {
        // UP, UV; BE and BS for a synced passkey; AT when attesting.
        let mut f = 0x01 | 0x04;
        if self.synced {
            f |= 0x08 | 0x10;
        }
        if attested {
            f |= 0x40;
        }
        f
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({ "type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false })
            .to_string()
            .into_bytes()
    }

    /// `navigator.credentials.create` with the server's options: the
    /// credential as the script sends it.
    pub fn create(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        assert_eq!(pk["rp"]["id"], self.rp_id.as_str(), "{options}");
        let challenge = pk["challenge"].as_str().expect("a challenge");
        self.user_handle = URL_SAFE_NO_PAD
            .decode(pk["user"]["id"].as_str().expect("a user id"))
            .unwrap();
        let point = self.key.public_key().as_ref();
        let mut cose = Vec::new();
        cbor::map(5, &mut cose);
        cbor::int(1, &mut cose);
        cbor::int(2, &mut cose); // kty: EC2
        cbor::int(3, &mut cose);
        cbor::int(-7, &mut cose); // alg: ES256
        cbor::int(-1, &mut cose);
        cbor::int(1, &mut cose); // crv: P-256
        cbor::int(-2, &mut cose);
        cbor::bytes(&point[1..33], &mut cose);
        cbor::int(-3, &mut cose);
        cbor::bytes(&point[33..65], &mut cose);
        let mut auth_data = sha256(self.rp_id.as_bytes());
        auth_data.push(self.flags(true));
        auth_data.extend(self.counter.to_be_bytes());
        auth_data.extend([0u8; 16]); // AAGUID
        auth_data.extend((self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend(&self.credential_id);
        auth_data.extend(cose);
        let mut attestation = Vec::new();
        cbor::map(3, &mut attestation);
        cbor::text("fmt", &mut attestation);
        cbor::text("none", &mut attestation);
        cbor::text("attStmt", &mut attestation);
        cbor::map(0, &mut attestation);
        cbor::text("authData", &mut attestation);
        cbor::bytes(&auth_data, &mut attestation);
        let client_data = self.client_data("webauthn.create", challenge);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data),
            },
            "extensions": {},
        })
    }

    /// `navigator.credentials.get` with the server's options: the
    /// assertion as the script sends it.
    pub fn get(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        if let Some(allowed) = pk["allowCredentials"].as_array()
            && !allowed.is_empty()
        {
            let mine = b64(&self.credential_id);
            assert!(
                allowed.iter().any(|c| c["id"] == mine.as_str()),
                "{options}"
            );
        }
        let challenge = pk["challenge"].as_str().expect("a challenge");
        self.counter += 1;
        let mut auth_data = sha256(self.rp_id.as_bytes());
        auth_data.push(self.flags(false));
        auth_data.extend(self.counter.to_be_bytes());
        let client_data = self.client_data("webauthn.get", challenge);
        let mut signed = auth_data.clone();
        signed.extend(sha256(&client_data));
        let signature = self.key.sign(&SystemRandom::new(), &signed).unwrap();
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }
}

/// A server whose issuer is `http://localhost:PORT` (a domain, as WebAuthn
/// wants), with `configure` applied.
pub async fn spawn_for_passkeys(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.issuer = Some(
            format!("http://localhost:{}", s.bind.port())
                .parse()
                .unwrap(),
        );
        configure(s);
    })
    .await
}

fn csrf(page: &str) -> String {
    hidden_inputs(page)
        .remove("csrf_token")
        .expect("a csrf_token on the page")
}

/// POSTs an options endpoint as the script does; the answer's status and
/// JSON.
async fn options(b: &Browser, path: &str, fields: &[(&str, &str)]) -> (StatusCode, Value) {
    let form: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = b.post_form(path, &form).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sets up `key` as a passkey named "Laptop" through the security page;
/// the page the finish leads to.
async fn set_up(b: &Browser, key: &mut SoftAuthenticator) -> reqwest::Response {
    let page = b.get("/account/security").await.text().await.unwrap();
    assert!(page.contains("id=\"passkey-form\""), "the passkey form");
    assert!(page.contains("/static/passkeys.js"));
    // Without the script the form stays hidden and the page says why.
    assert!(page.contains("id=\"passkey-form\" data-passkey=\"create\""));
    assert!(page.contains("Setting up a passkey needs JavaScript"));
    let token = csrf(&page);
    let (status, opts) = options(
        b,
        "/account/security/passkey/options",
        &[("csrf_token", &token), ("label", "Laptop")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{opts}");
    let credential = key.create(&opts);
    b.post_form(
        "/account/security/passkey",
        &[
            ("csrf_token".into(), token),
            ("credential".into(), credential.to_string()),
        ],
    )
    .await
}

fn recovery_codes(page: &str) -> Vec<String> {
    page.split("<code>")
        .skip(1)
        .filter_map(|c| c.split_once("</code>").map(|(v, _)| v.to_owned()))
        .filter(|v| v.starts_with("hg_rc_"))
        .collect()
}

/// The password step of a new sign-in; the second-step page's CSRF token.
async fn password_step(app: &TestApp, username: &str) -> (Browser, String) {
    let b = app.browser();
    let r = b.login(username, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login/second-factor"));
    let page = b.get(&location(&r)).await.text().await.unwrap();
    assert!(page.contains("Use your passkey"), "the passkey button");
    let token = csrf(&page);
    (b, token)
}

/// The second step with a passkey: options, then the assertion `sign`
/// makes of them.
async fn second_step_with(
    b: &Browser,
    token: &str,
    sign: impl FnOnce(&Value) -> Value,
) -> reqwest::Response {
    let (status, opts) = options(
        b,
        "/login/second-factor/passkey/options",
        &[("csrf_token", token)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{opts}");
    let assertion = sign(&opts);
    b.post_form(
        "/login/second-factor/passkey",
        &[
            ("csrf_token".into(), token.to_owned()),
            ("credential".into(), assertion.to_string()),
            ("return_to".into(), "/account".into()),
        ],
    )
    .await
}

async fn amr_of(app: &TestApp, user_id: &str) -> Vec<&'static str> {
    let sessions = app
        .state
        .store
        .sessions_of_user(user_id, app.clock.now())
        .await
        .unwrap();
    sessions
        .first()
        .map(|s| s.amr.claim())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_passkey_is_set_up_with_recovery_codes_then_given_at_the_second_step() {
    let app = spawn_for_passkeys(|_| {}).await;
    let (b, user) = app.signed_in("hana").await;
    let mut key = SoftAuthenticator::new(&app, false);
    let r = set_up(&b, &mut key).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert_eq!(recovery_codes(&page).len(), 10, "a first factor's codes");
    assert_eq!(app.events_of("mfa.enrolled").await.len(), 1);
    // The security page lists it by name.
    let page = b.get("/account/security").await.text().await.unwrap();
    assert!(page.contains("Laptop") && page.contains(">Passkey</span>"));

    let (b2, token) = password_step(&app, "hana").await;
    let r = second_step_with(&b2, &token, |o| key.get(o)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account");
    assert_eq!(b2.get("/account").await.status(), StatusCode::OK);
    let logins = app.events_of("login.succeeded").await;
    let last = logins.iter().max_by_key(|e| e.seq).expect("login.succeeded");
    assert!(
        last.data.as_deref().unwrap_or("").contains("hwk"),
        "{last:?}"
    );
    let mut amrs = Vec::new();
    for s in app
        .state
        .store
        .sessions_of_user(&user.id, app.clock.now())
        .await
        .unwrap()
    {
        amrs.push(s.amr.claim());
    }
    assert!(amrs.contains(&vec!["pwd", "hwk"]), "{amrs:?}");
    // Its use is recorded: the security page shows when.
    let factors = app.state.store.factors_of_user(&user.id).await.unwrap();
    assert!(factors[0].last_used_at.is_some());
}

#[tokio::test]
async fn a_synced_passkey_is_swk() {
    let app = spawn_for_passkeys(|_| {}).await;
    let (b, user) = app.signed_in("ines").await;
    let mut key = SoftAuthenticator::new(&app, true);
    assert_eq!(set_up(&b, &mut key).await.status(), StatusCode::OK);
    let (b2, token) = password_step(&app, "ines").await;
    let r = second_step_with(&b2, &token, |o| key.get(o)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let _ = b2;
    let sessions = app
        .state
        .store
        .sessions_of_user(&user.id, app.clock.now())
        .await
        .unwrap();
    assert!(
        sessions.iter().any(|s| s.amr.claim() == vec!["pwd", "swk"]),
        "{:?}",
        sessions.iter().map(|s| s.amr.claim()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn options_endpoints_refuse_without_a_session_or_its_csrf_token() {
    let app = spawn_for_passkeys(|s| s.passkey_sign_in = true).await;
    let stranger = app.browser();
    for path in [
        "/account/security/passkey/options",
        "/login/second-factor/passkey/options",
        "/login/passkey/options",
    ] {
        let (status, _) = options(&stranger, path, &[("csrf_token", "hg_csrf_guess")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} without a session");
    }
    let (b, _) = app.signed_in("jo").await;
    for path in [
        "/account/security/passkey/options",
        "/login/second-factor/passkey/options",
        "/login/passkey/options",
    ] {
        let (status, _) = options(&b, path, &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} without a token");
        let (status, _) = options(&b, path, &[("csrf_token", "hg_csrf_guess")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} with a wrong token");
    }
    // A signed-in person with no second factor has nothing to give.
    let page = b.get("/account/security").await.text().await.unwrap();
    let (status, json) = options(
        &b,
        "/login/second-factor/passkey/options",
        &[("csrf_token", &csrf(&page))],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert!(json["error"].is_string());
}

#[tokio::test]
async fn a_finish_without_its_ceremony_or_a_second_time_is_refused_readably() {
    let app = spawn_for_passkeys(|_| {}).await;
    let (b, user) = app.signed_in("kai").await;
    let page = b.get("/account/security").await.text().await.unwrap();
    let token = csrf(&page);
    let mut key = SoftAuthenticator::new(&app, false);
    // No ceremony began.
    let r = b
        .post_form(
            "/account/security/passkey",
            &[
                ("csrf_token".into(), token.clone()),
                ("credential".into(), "{}".into()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"passkey-error\""), "{page}");
    assert!(page.contains("That passkey request has ended"));
    // Nothing sent (the person cancelled).
    let (_, opts) = options(
        &b,
        "/account/security/passkey/options",
        &[("csrf_token", &token), ("label", "Key")],
    )
    .await;
    let r = b
        .post_form(
            "/account/security/passkey",
            &[("csrf_token".into(), token.clone())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("No passkey was given"));
    // The ceremony went with that attempt: the right credential now finds none.
    let credential = key.create(&opts);
    let finish = [
        ("csrf_token".to_owned(), token.clone()),
        ("credential".to_owned(), credential.to_string()),
    ];
    let r = b.post_form("/account/security/passkey", &finish).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!app.state.store.has_second_factor(&user.id).await.unwrap());
    // A fresh ceremony, finished once: a replay of the same finish is refused.
    let (_, opts) = options(
        &b,
        "/account/security/passkey/options",
        &[("csrf_token", &token), ("label", "Key")],
    )
    .await;
    let credential = key.create(&opts);
    let finish = [
        ("csrf_token".to_owned(), token.clone()),
        ("credential".to_owned(), credential.to_string()),
    ];
    assert_eq!(
        b.post_form("/account/security/passkey", &finish)
            .await
            .status(),
        StatusCode::OK
    );
    let r = b.post_form("/account/security/passkey", &finish).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("That passkey request has ended"));
    assert_eq!(app.state.store.factors_of_user(&user.id).await.unwrap().len(), 1);
    // A ceremony that waited too long is over.
    let (_, opts) = options(
        &b,
        "/account/security/passkey/options",
        &[("csrf_token", &token), ("label", "Late")],
    )
    .await;
    app.clock.advance(400);
    let mut other = SoftAuthenticator::new(&app, false);
    let credential = other.create(&opts);
    let r = b
        .post_form(
            "/account/security/passkey",
            &[
                ("csrf_token".into(), token.clone()),
                ("credential".into(), credential.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.state.store.factors_of_user(&user.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_forged_or_replayed_assertion_counts_on_the_usernames_run() {
    let app = spawn_for_passkeys(|s| s.throttle.sign_in_per_minute = 0).await;
    let (b, _) = app.signed_in("lena").await;
    let mut key = SoftAuthenticator::new(&app, false);
    assert_eq!(set_up(&b, &mut key).await.status(), StatusCode::OK);
    let (attacker, token) = password_step(&app, "lena").await;
    // Signed by another key: refused, recorded, counted.
    let mut forger = SoftAuthenticator::new(&app, false);
    forger.credential_id = key.credential_id.clone();
    forger.user_handle = key.user_handle.clone();
    let r = second_step_with(&attacker, &token, |o| forger.get(o)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("could not be verified"));
    assert_eq!(app.events_of("login.second_factor_failed").await.len(), 1);
    let run = app
        .state
        .store
        .failure_run(healthgate_store::ThrottleKind::SignIn, "lena")
        .await
        .unwrap()
        .expect("a run of failures");
    assert_eq!(run.failures, 1, "{run:?}");
    // A good assertion replayed (its ceremony is gone) counts too.
    let (status, opts) = options(
        &attacker,
        "/login/second-factor/passkey/options",
        &[("csrf_token", &token)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let good = key.get(&opts).to_string();
    let finish = [
        ("csrf_token".to_owned(), token.clone()),
        ("credential".to_owned(), good),
    ];
    let r = attacker
        .post_form("/login/second-factor/passkey", &finish)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the real one works");
    let victim = app.browser();
    let r = victim.login("lena", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = victim.get(&location(&r)).await.text().await.unwrap();
    let token2 = csrf(&page);
    let replay = [
        ("csrf_token".to_owned(), token2),
        ("credential".to_owned(), finish[1].1.clone()),
    ];
    let r = victim.post_form("/login/second-factor/passkey", &replay).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.events_of("login.second_factor_failed").await.len(), 2);
    // Enough of them and the run throttles, before any passkey is looked at.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = second_step_with(&victim, &csrf(&page), |o| forger.get(o)).await;
        statuses.push(r.status());
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
}

#[tokio::test]
async fn signing_in_with_a_passkey_alone_is_404_when_off() {
    let app = spawn_for_passkeys(|_| {}).await;
    let b = app.browser();
    let page = b.get("/login").await.text().await.unwrap();
    assert!(!page.contains("Sign in with a passkey"));
    let token = csrf(&page);
    for path in ["/login/passkey/options", "/login/passkey"] {
        let r = b
            .post_form(path, &[("csrf_token".into(), token.clone())])
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// The sign-in page's passkey form: options, then the assertion.
async fn passkey_sign_in(
    b: &Browser,
    sign: impl FnOnce(&Value) -> Value,
) -> reqwest::Response {
    let page = b.get("/login").await.text().await.unwrap();
    assert!(page.contains("Sign in with a passkey"));
    let token = csrf(&page);
    let (status, opts) = options(b, "/login/passkey/options", &[("csrf_token", &token)]).await;
    assert_eq!(status, StatusCode::OK, "{opts}");
    assert!(
        opts["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "a discoverable request names no credential: {opts}"
    );
    let assertion = sign(&opts);
    b.post_form(
        "/login/passkey",
        &[
            ("csrf_token".into(), token),
            ("credential".into(), assertion.to_string()),
            ("return_to".into(), "/account".into()),
        ],
    )
    .await
}

#[tokio::test]
async fn with_passkey_sign_in_a_passkey_alone_signs_in_as_two_factors_in_one() {
    let app = spawn_for_passkeys(|s| s.passkey_sign_in = true).await;
    let (b, user) = app.signed_in("mia").await;
    let mut key = SoftAuthenticator::new(&app, false);
    // Registration asks the authenticator to keep the passkey.
    let page = b.get("/account/security").await.text().await.unwrap();
    let (_, opts) = options(
        &b,
        "/account/security/passkey/options",
        &[("csrf_token", &csrf(&page)), ("label", "Laptop")],
    )
    .await;
    assert_eq!(
        opts["publicKey"]["authenticatorSelection"]["residentKey"],
        "required",
        "{opts}"
    );
    let credential = key.create(&opts);
    let r = b
        .post_form(
            "/account/security/passkey",
            &[
                ("csrf_token".into(), csrf(&page)),
                ("credential".into(), credential.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Two wrong passwords first: the passkey's success resets the run.
    let other = app.browser();
    for _ in 0..2 {
        assert_eq!(
            other.login("mia", "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let fresh = app.browser();
    let r = passkey_sign_in(&fresh, |o| key.get(o)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account");
    assert_eq!(fresh.get("/account").await.status(), StatusCode::OK);
    let newest = app
        .state
        .store
        .sessions_of_user(&user.id, app.clock.now())
        .await
        .unwrap();
    let amrs: Vec<_> = newest.iter().map(|s| s.amr.claim()).collect();
    assert!(amrs.contains(&vec!["hwk"]), "{amrs:?}");
    let s = newest.iter().find(|s| s.amr.claim() == vec!["hwk"]).unwrap();
    assert!(s.amr.multi_factor() && s.mfa_at.is_some());
    let last = newest_event(&app, "login.succeeded").await;
    assert!(last.data.as_deref().unwrap_or("").contains("hwk"), "{last:?}");
    assert!(
        app.state
            .store
            .failure_run(healthgate_store::ThrottleKind::SignIn, "mia")
            .await
            .unwrap()
            .is_none_or(|r| r.failures == 0),
        "the run is reset"
    );
    let _ = amr_of(&app, &user.id).await;

    // A forged assertion for a real passkey counts on its owner's run.
    let mut forger = SoftAuthenticator::new(&app, false);
    forger.credential_id = key.credential_id.clone();
    forger.user_handle = key.user_handle.clone();
    let r = passkey_sign_in(&app.browser(), |o| forger.get(o)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let run = app
        .state
        .store
        .failure_run(healthgate_store::ThrottleKind::SignIn, "mia")
        .await
        .unwrap()
        .expect("a run");
    assert_eq!(run.failures, 1);
    // An unknown passkey is refused the same way.
    let mut stranger = SoftAuthenticator::new(&app, false);
    stranger.user_handle = vec![7; 16];
    let r = passkey_sign_in(&app.browser(), |o| stranger.get(o)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A locked account is refused like at a password sign-in.
    app.state
        .store
        .lock_user(&user.id, app.clock.now())
        .await
        .unwrap();
    let r = passkey_sign_in(&app.browser(), |o| key.get(o)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("This account is locked"));
}

#[tokio::test]
async fn a_signed_in_person_steps_up_with_their_passkey() {
    let app = spawn_for_passkeys(|_| {}).await;
    let (b, user) = app.signed_in("nell").await;
    let mut key = SoftAuthenticator::new(&app, true);
    assert_eq!(set_up(&b, &mut key).await.status(), StatusCode::OK);
    // Signed in, asked again (as an app's max_age or acr_values would).
    let page = b
        .get("/login/second-factor?return_to=%2Faccount")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Confirm it is you") && page.contains("Use your passkey"));
    let r = second_step_with(&b, &csrf(&page), |o| key.get(o)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account");
    let stepped = newest_event(&app, "login.stepped_up").await;
    assert!(stepped.data.as_deref().unwrap_or("").contains("swk"), "{stepped:?}");
    let sessions = app
        .state
        .store
        .sessions_of_user(&user.id, app.clock.now())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].amr.claim(), vec!["pwd", "swk"]);
    assert!(sessions[0].mfa_at.is_some());
}

#[tokio::test]
async fn an_issuer_that_is_an_ip_address_says_passkeys_cannot_be_used() {
    // spawn_app's issuer is http://127.0.0.1:PORT.
    let app = spawn_app().await;
    let (b, user) = app.signed_in("olga").await;
    let page = b.get("/account/security").await.text().await.unwrap();
    let (status, json) = options(
        &b,
        "/account/security/passkey/options",
        &[("csrf_token", &csrf(&page)), ("label", "Laptop")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap_or("")
            .contains("Passkeys cannot be used on this server"),
        "{json}"
    );
    assert!(!app.state.store.has_second_factor(&user.id).await.unwrap());
}

/// The newest event of `kind`.
pub async fn newest_event(app: &TestApp, kind: &str) -> healthgate_store::StoredEvent {
    app.events_of(kind)
        .await
        .into_iter()
        .max_by_key(|e| e.seq)
        .unwrap_or_else(|| panic!("no {kind} event"))
}
