//! DPoP (RFC 9449) over TCP: proofs at the token endpoint bind the tokens
//! to the client's key (`token_type` DPoP, `cnf.jkt` in introspection and
//! JWT access tokens); a public client's refresh tokens and a code issued
//! for `dpop_jkt` need that key; `/api/v1/me` and UserInfo take a bound
//! token only with a fresh proof by its key, never as a bearer token. The
//! proofs are made here with ring, as a client library would.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::*;

/// A client's DPoP key.
struct Key(EcdsaKeyPair);

impl Key {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap())
    }

    fn jwk(&self) -> Value {
        let p = self.0.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&p[33..]),
        })
    }

    fn jkt(&self) -> String {
        healthgate_core::dpop::thumbprint(&self.jwk()).unwrap()
    }

    /// A proof for `method` at `url`, with `ath` for `token` when given.
    fn proof(&self, app: &TestApp, method: &str, url: &str, token: Option<&str>) -> String {
        self.proof_with_nonce(app, method, url, token, None)
    }

    fn proof_with_nonce(
        &self,
        app: &TestApp,
        method: &str,
        url: &str,
        token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut id = [0u8; 12];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut id).unwrap();
        let mut claims = json!({
            "jti": URL_SAFE_NO_PAD.encode(id), "htm": method, "htu": url, "iat": app.clock.now(),
        });
        if let Some(t) = token {
            claims["ath"] = healthgate_core::dpop::ath(t).into();
        }
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// A token request with `proofs` as DPoP headers.
async fn token_with(
    app: &TestApp,
    client: &TestClient,
    proofs: &[String],
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = app.http().post(app.url("/oauth/token"));
    for p in proofs {
        req = req.header("DPoP", p);
    }
    let mut form = form.to_vec();
    match client.secret.as_deref() {
        Some(secret) => req = req.basic_auth(client.id(), Some(secret)),
        None => form.push(("client_id", client.id())),
    }
    let r = req.form(&form).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET /api/v1/me` with `authorization` and, when given, a DPoP header.
async fn me_with(app: &TestApp, authorization: &str, proof: Option<String>) -> (StatusCode, String, Value) {
    let mut req = app.http().get(app.url("/api/v1/me")).header("authorization", authorization);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_proof_at_the_token_endpoint_binds_the_tokens_to_its_key() {
    let app = spawn_app().await;
    for document in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let m: Value = app.http().get(app.url(document)).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            m["dpop_signing_alg_values_supported"],
            json!(["ES256", "ES384", "RS256", "PS256", "EdDSA"]),
            "{document}"
        );
    }
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let key = Key::new();
    let token_url = app.url("/oauth/token");
    let code = app.code(&browser, &client, &[]).await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let (status, body) =
        token_with(&app, &client, &[key.proof(&app, "POST", &token_url, None)], &exchange).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap().to_owned();

    // Introspection says the binding (RFC 9449 §6.2).
    let rs = app.resource_server().await;
    let seen = app.introspect(&rs, &access).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["token_type"], "DPoP");
    assert_eq!(seen["cnf"]["jkt"], key.jkt());

    // At a resource: only as a DPoP token, with a fresh proof by the key.
    let me_url = app.url("/api/v1/me");
    let (status, challenge, body) = me_with(&app, &format!("Bearer {access}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(challenge.starts_with("DPoP ") && challenge.contains("error=\"invalid_token\""), "{challenge}");
    let proof = key.proof(&app, "GET", &me_url, Some(&access));
    let (status, _, body) = me_with(&app, &format!("DPoP {access}"), Some(proof.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["username"], "alice");
    // The same proof again, a proof without ath, or by another key: refused.
    let other = Key::new();
    for (what, proof) in [
        ("replayed", Some(proof)),
        ("no ath", Some(key.proof(&app, "GET", &me_url, None))),
        ("another key", Some(other.proof(&app, "GET", &me_url, Some(&access)))),
        ("for another URL", Some(key.proof(&app, "GET", &app.url("/oauth/userinfo"), Some(&access)))),
        ("none", None),
    ] {
        let (status, challenge, body) = me_with(&app, &format!("DPoP {access}"), proof).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{what}");
        assert!(challenge.contains("error=\"invalid_dpop_proof\"") && challenge.contains("algs=\"ES256"), "{what}: {challenge}");
    }

    // A refresh with a proof: a new bound token; the confidential client's
    // refresh token itself is held by its authentication, not the key.
    let refresh = body_refresh(&app, &client, &key, &token_url, &exchange_refresh(&app, &client).await).await;
    assert_eq!(refresh["token_type"], "DPoP", "{refresh}");
    let (status, body) = app.refresh(&client, refresh["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer", "no proof, a bearer token");
    let (status, _, _) = me_with(&app, &format!("DPoP {}", body["access_token"].as_str().unwrap()), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a bearer token is not a DPoP token");
}

/// A fresh refresh token for `client`, from a code exchanged without DPoP.
async fn exchange_refresh(app: &TestApp, client: &TestClient) -> String {
    let (browser, _) = app.signed_in("bob").await;
    let code = app.code(&browser, client, &[]).await;
    let (_, body) = app.exchange(client, &code, &[]).await;
    body["refresh_token"].as_str().unwrap().to_owned()
}

async fn body_refresh(app: &TestApp, client: &TestClient, key: &Key, token_url: &str, rt: &str) -> Value {
    let (status, body) = token_with(
        app,
        client,
        &[key.proof(app, "POST", token_url, None)],
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn bad_proofs_at_the_token_endpoint_are_invalid_dpop_proof_and_spend_nothing() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let key = Key::new();
    let token_url = app.url("/oauth/token");
    let code = app.code(&browser, &client, &[]).await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let used = key.proof(&app, "POST", &token_url, None);
    let (status, body) = token_with(
        &app,
        &client,
        std::slice::from_ref(&used),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let mut forged = key.proof(&app, "POST", &token_url, None);
    forged.push('A');
    let cases = vec![
        ("for another URL", vec![key.proof(&app, "POST", &app.url("/oauth/revoke"), None)]),
        ("for another method", vec![key.proof(&app, "GET", &token_url, None)]),
        ("used before", vec![used]),
        ("two headers", vec![key.proof(&app, "POST", &token_url, None), key.proof(&app, "POST", &token_url, None)]),
        ("forged", vec![forged]),
        ("not a JWT", vec!["hello".to_owned()]),
    ];
    for (what, proofs) in cases {
        let (status, body) = token_with(&app, &client, &proofs, &exchange).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{what}");
    }
    // The code was not spent: a good proof redeems it.
    let (status, body) =
        token_with(&app, &client, &[key.proof(&app, "POST", &token_url, None)], &exchange).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_public_clients_refresh_tokens_and_a_dpop_jkt_code_need_the_key() {
    let app = spawn_app().await;
    let client = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let (browser, _) = app.signed_in("alice").await;
    let key = Key::new();
    let token_url = app.url("/oauth/token");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = healthgate_core::pkce::CodeVerifier::parse(verifier).unwrap().s256();
    let pkce = [("code_challenge", challenge.as_str()), ("code_challenge_method", "S256")];
    let exchange = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ]
    };

    // dpop_jkt on the authorization request: only that key redeems it.
    let jkt = key.jkt();
    let mut params = pkce.to_vec();
    params.push(("dpop_jkt", jkt.as_str()));
    let code = app.code(&browser, &client, &params).await;
    let owned = exchange(&code);
    let form: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (what, proofs) in [
        ("no proof", vec![]),
        ("another key", vec![Key::new().proof(&app, "POST", &token_url, None)]),
    ] {
        let (status, body) = token_with(&app, &client, &proofs, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{what}");
    }
    let (status, body) =
        token_with(&app, &client, &[key.proof(&app, "POST", &token_url, None)], &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let rt = body["refresh_token"].as_str().unwrap().to_owned();

    // The public client's refresh token is bound to the key (RFC 9449 §5).
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", rt.as_str())];
    for (what, proofs) in [
        ("no proof", vec![]),
        ("another key", vec![Key::new().proof(&app, "POST", &token_url, None)]),
    ] {
        let (status, body) = token_with(&app, &client, &proofs, &refresh).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{what}");
    }
    let (status, body) =
        token_with(&app, &client, &[key.proof(&app, "POST", &token_url, None)], &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");

    // A malformed dpop_jkt is an invalid request.
    let mut params = pkce.to_vec();
    params.push(("dpop_jkt", "short"));
    params.extend([("response_type", "code"), ("client_id", client.id()), ("redirect_uri", REDIRECT), ("scope", "profile_read"), ("state", "s")]);
    let r = browser.authorize(&params).await;
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "invalid_request", "{q:?}");
}

#[tokio::test]
async fn jwt_access_tokens_and_userinfo_carry_the_binding() {
    let app = spawn_app().await;
    let client = app
        .register(ClientSpec {
            scope: "openid profile",
            ..ClientSpec::default()
        })
        .await;
    app.change_client(
        client.id(),
        admin::ClientChanges {
            jwt_access_tokens: Some(true),
            ..Default::default()
        },
    )
    .await;
    let (browser, _) = app.signed_in("alice").await;
    let key = Key::new();
    let token_url = app.url("/oauth/token");
    let code = app.code(&browser, &client, &[("scope", "openid profile")]).await;
    let (status, body) = token_with(
        &app,
        &client,
        &[key.proof(&app, "POST", &token_url, None)],
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(access.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["cnf"]["jkt"], key.jkt(), "{claims}");
    // UserInfo: the proof's ath is over the token as sent (the JWT).
    let userinfo = app.url("/oauth/userinfo");
    let r = app
        .http()
        .get(&userinfo)
        .header("authorization", format!("DPoP {access}"))
        .header("DPoP", key.proof(&app, "GET", &userinfo, Some(&access)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .http()
        .get(&userinfo)
        .header("authorization", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_client_registered_to_require_dpop_gets_no_bearer_token() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    app.change_client(
        client.id(),
        admin::ClientChanges {
            require_dpop: Some(true),
            ..Default::default()
        },
    )
    .await;
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let (status, body) = token_with(&app, &client, &[], &exchange).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_dpop_proof");
    let (status, _) = token_with(&app, &client, &[], &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // With a proof: the code, unspent, gives a bound token.
    let key = Key::new();
    let proof = key.proof(&app, "POST", &app.url("/oauth/token"), None);
    let (status, body) = token_with(&app, &client, &[proof], &exchange).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
}

/// RFC 9449 §8, §9: with `[dpop] nonce`, a proof must carry a nonce the
/// server gave; without one the token endpoint answers 400 and a resource
/// 401 `use_dpop_nonce`, each giving the nonce in `DPoP-Nonce`.
#[tokio::test]
async fn with_server_nonces_a_proof_must_carry_a_fresh_one() {
    let app = spawn_app_with(|s| s.dpop.nonce = true).await;
    let client = app.confidential().await;
    let key = Key::new();
    let token_url = app.url("/oauth/token");
    let ask = |proof: String| {
        app.http()
            .post(&token_url)
            .basic_auth(client.id(), client.secret.as_deref())
            .header("DPoP", proof)
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let r = ask(key.proof(&app, "POST", &token_url, None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce", "{body}");
    let stale = "1.AAAAAAAAAAAAAAAAAAAAAA";
    let r = ask(key.proof_with_nonce(&app, "POST", &token_url, None, Some(stale))).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = ask(key.proof_with_nonce(&app, "POST", &token_url, None, Some(&nonce))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("dpop-nonce"), "the next nonce is given");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    // Still good in the next window; not two windows on.
    app.clock.advance(healthgate_core::dpop::NONCE_WINDOW);
    let r = ask(key.proof_with_nonce(&app, "POST", &token_url, None, Some(&nonce))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // At a resource: 401 use_dpop_nonce with the nonce, then accepted.
    let (browser, _) = app.signed_in("alice").await;
    let code = app.code(&browser, &client, &[]).await;
    let r = ask_code(&app, &client, &key, &code, &nonce).await;
    let access = r["access_token"].as_str().unwrap().to_owned();
    let me = app.url("/api/v1/me");
    let (status, challenge, body) =
        me_with(&app, &format!("DPoP {access}"), Some(key.proof(&app, "GET", &me, Some(&access)))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "use_dpop_nonce");
    assert!(challenge.contains("error=\"use_dpop_nonce\""), "{challenge}");
    let r = app
        .http()
        .get(&me)
        .header("authorization", format!("DPoP {access}"))
        .header("DPoP", key.proof(&app, "GET", &me, Some(&access)))
        .send()
        .await
        .unwrap();
    let given = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let proof = key.proof_with_nonce(&app, "GET", &me, Some(&access), Some(&given));
    let (status, _, body) = me_with(&app, &format!("DPoP {access}"), Some(proof)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn ask_code(app: &TestApp, client: &TestClient, key: &Key, code: &str, nonce: &str) -> Value {
    let token_url = app.url("/oauth/token");
    let proof = key.proof_with_nonce(app, "POST", &token_url, None, Some(nonce));
    let (status, body) = token_with(
        app,
        client,
        &[proof],
        &[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The portal registers an app that requires DPoP, and says so.
#[tokio::test]
async fn a_developer_requires_dpop_in_the_portal() {
    use super::portal::{app_form, register_in_portal};
    let app = spawn_app().await;
    let (browser, _) = app.signed_in("dev").await;
    let mut form = app_form("Bound");
    form.push(("require_dpop".into(), "1".into()));
    let (id, _) = register_in_portal(&browser, form).await;
    assert!(app.state.store.client(&id).await.unwrap().unwrap().require_dpop);
    let page = browser.get(&format!("/developers/apps/{id}")).await.text().await.unwrap();
    assert!(page.contains("Required: every token request carries a DPoP proof"), "{page}");
    let edit = browser.get(&format!("/developers/apps/{id}/edit")).await.text().await.unwrap();
    let field = &edit[edit.find("name=\"require_dpop\"").unwrap()..];
    assert!(field.split('>').next().unwrap().contains("checked"));
}
