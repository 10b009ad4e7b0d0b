//! Pushed authorization requests (RFC 9126) and signed request objects
//! (RFC 9101) over TCP: a client pushes its request to `/oauth/par` with
//! any of its authentication methods and sends the browser with
//! `client_id` and `request_uri` only; the pushed parameters, and no
//! others, are used, once. Request objects are verified with the client's
//! registered keys. A DPoP proof at the PAR endpoint binds the code.

use healthgate_core::client_assertion::ClientKey;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::*;

const PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// POSTs `form` to `/oauth/par` as `client` (Basic when it has a secret,
/// else `client_id` in the body), with `proof` as a DPoP header.
async fn push(
    app: &TestApp,
    client: &TestClient,
    form: &[(&str, &str)],
    proof: Option<String>,
) -> (StatusCode, Value, HeaderMap) {
    let mut req = app.http().post(app.url("/oauth/par"));
    let mut form = form.to_vec();
    match client.secret.as_deref() {
        Some(secret) => req = req.basic_auth(client.id(), Some(secret)),
        None => form.push(("client_id", client.id())),
    }
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let r = req.form(&form).send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

/// A request of the test's usual shape, with `extra` replacing or adding.
fn request<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "profile_read"),
        ("state", "pushed-state"),
    ];
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        params.push((k, v));
    }
    params
}

/// Signs alice in on the sign-in page at `login_url`: where it sends her.
async fn sign_in_at(browser: &Browser, login_url: &str) -> String {
    let page = browser.get(login_url).await.text().await.unwrap();
    let mut form = hidden_input_list(&page);
    form.push(("username".into(), "alice".into()));
    form.push(("password".into(), PASSWORD.into()));
    let r = browser.post_form("/login", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    location(&r)
}

/// Pushes `form` for `client` and gives the `request_uri`.
async fn pushed(app: &TestApp, client: &TestClient, form: &[(&str, &str)]) -> String {
    let (status, body, _) = push(app, client, form, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["request_uri"].as_str().unwrap().to_owned()
}

/// The authorization endpoint with `client_id`, `request_uri` and `extra`
/// for a signed-in `browser`, consent given: the redirect's query.
async fn authorized(
    browser: &Browser,
    client: &TestClient,
    request_uri: &str,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut params = vec![("client_id", client.id()), ("request_uri", request_uri)];
    params.extend_from_slice(extra);
    let r = browser.authorize(&params).await;
    let r = if r.status() == StatusCode::OK {
        let page = r.text().await.unwrap();
        browser.consent(&page, "allow").await
    } else {
        r
    };
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    query_of(&location(&r))
}

#[tokio::test]
async fn a_pushed_request_is_used_once_and_only_its_own_parameters_count() {
    let app = spawn_app().await;
    for document in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let m: Value = app.http().get(app.url(document)).send().await.unwrap().json().await.unwrap();
        assert_eq!(m["pushed_authorization_request_endpoint"], app.url("/oauth/par"), "{document}");
        assert_eq!(m["require_pushed_authorization_requests"], false, "{document}");
        assert_eq!(m["request_parameter_supported"], true, "{document}");
    }
    let client = app.confidential().await;
    let (status, body, headers) = push(&app, &client, &request(&[]), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let uri = body["request_uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with(PREFIX), "{uri}");
    assert_eq!(body["expires_in"], 90);

    // Not signed in: to the sign-in page and back, carrying the reference
    // only, never the pushed parameters.
    let user = app.user("alice", UserType::Member).await;
    let browser = app.browser();
    let r = browser
        .authorize(&[("client_id", client.id()), ("request_uri", &uri)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to_login = location(&r);
    let return_to = query_of(&to_login)["return_to"].clone();
    let back = query_of(&return_to);
    assert_eq!(back["request_uri"], uri);
    assert!(back.contains_key("resume"), "{return_to}");
    assert!(!back.contains_key("redirect_uri") && !back.contains_key("scope"), "{return_to}");
    assert_eq!(sign_in_at(&browser, &to_login).await, return_to);
    // The consent form carries the reference too; parameters added to it
    // change nothing.
    let page = browser.get(&return_to).await.text().await.unwrap();
    let hidden = hidden_inputs(&page);
    assert_eq!(hidden["request_uri"], uri);
    assert!(!hidden.contains_key("scope") && !hidden.contains_key("state"), "{hidden:?}");
    let mut form = hidden_input_list(&page);
    form.push(("decision".into(), "allow".into()));
    form.push(("scope".into(), "profile_write".into()));
    form.push(("state".into(), "forged".into()));
    let r = browser.post_form("/oauth/authorize", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    assert!(location(&r).starts_with(REDIRECT));
    assert_eq!(q["state"], "pushed-state");
    let (status, tokens) = app.exchange(&client, &q["code"], &[]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["scope"], "profile_read");
    let consented = app.events_of("consent.granted").await;
    assert_eq!(consented[0].subject.as_deref(), Some(user.id.as_str()));

    // Used: the same request_uri is refused, with a page (no redirect URI
    // can be trusted without the request).
    let again = browser
        .authorize(&[("client_id", client.id()), ("request_uri", &uri)])
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let text = readable(again.text().await.unwrap());
    assert!(text.contains("invalid_request_uri"), "{text}");

    // Signed in already: the query's own parameters are ignored.
    let uri = pushed(&app, &client, &request(&[])).await;
    let q = authorized(
        &browser,
        &client,
        &uri,
        &[("scope", "profile_write"), ("state", "forged"), ("redirect_uri", "https://evil.example/cb")],
    )
    .await;
    assert_eq!(q["state"], "pushed-state");
    let (_, tokens) = app.exchange(&client, &q["code"], &[]).await;
    assert_eq!(tokens["scope"], "profile_read");
}

#[tokio::test]
async fn a_request_uri_that_expired_or_is_another_clients_or_not_ours_is_refused() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let other = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let refused = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        readable(r.text().await.unwrap())
    };

    let uri = pushed(&app, &client, &request(&[])).await;
    app.clock.advance(91);
    let r = browser.authorize(&[("client_id", client.id()), ("request_uri", &uri)]).await;
    assert!(refused(r).await.contains("expired"));

    // Another client's: refused, and still usable by its own client.
    let uri = pushed(&app, &client, &request(&[])).await;
    let r = browser.authorize(&[("client_id", other.id()), ("request_uri", &uri)]).await;
    refused(r).await;
    let q = authorized(&browser, &client, &uri, &[]).await;
    assert!(q.contains_key("code"), "{q:?}");

    // A resume token for another request brings nothing back.
    let uri = pushed(&app, &client, &request(&[])).await;
    let r = browser
        .authorize(&[("client_id", client.id()), ("request_uri", &uri), ("resume", "forged")])
        .await;
    refused(r).await;

    // request_uri by reference to anywhere else is never fetched.
    let r = browser
        .authorize(&[
            ("client_id", client.id()),
            ("request_uri", "https://client.example/request.jwt"),
        ])
        .await;
    assert!(refused(r).await.contains("request_uri_not_supported"));
}

#[tokio::test]
async fn every_client_authentication_method_pushes_and_bad_pushes_get_the_rfcs_errors() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let par = app.url("/oauth/par");

    // client_secret_post.
    let mut form = request(&[]);
    let secret = client.secret.clone().unwrap();
    form.extend([("client_id", client.id()), ("client_secret", secret.as_str())]);
    let r = app.http().post(&par).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // A public client: client_id alone, and PKCE as at the authorization
    // endpoint.
    let public = app
        .register(ClientSpec {
            public: true,
            ..ClientSpec::default()
        })
        .await;
    let (status, body, _) = push(&app, &public, &request(&[]), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].as_str().unwrap().contains("PKCE"), "{body}");
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let pkce = request(&[("code_challenge", challenge), ("code_challenge_method", "S256")]);
    let (status, _, _) = push(&app, &public, &pkce, None).await;
    assert_eq!(status, StatusCode::CREATED);

    // private_key_jwt, with the PAR endpoint as the assertion's aud.
    let (key, _) = ClientKey::generate().unwrap();
    let keyed = app.confidential().await;
    app.change_client(
        keyed.id(),
        admin::ClientChanges {
            jwks: Some(Some(json!({ "keys": [key.public_jwk("k1")] }).to_string())),
            ..Default::default()
        },
    )
    .await;
    let now = app.clock.now();
    let assertion = key
        .sign(
            "k1",
            &json!({ "iss": keyed.id(), "sub": keyed.id(), "aud": par, "exp": now + 60, "jti": "a-1" }),
        )
        .unwrap();
    let mut form = request(&[]);
    form.extend([
        ("client_id", keyed.id()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion.as_str()),
    ]);
    let r = app.http().post(&par).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // A wrong secret: 401 invalid_client, audited.
    let r = app
        .http()
        .post(&par)
        .basic_auth(client.id(), Some("wrong"))
        .form(&request(&[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(!app.events_of("client.authentication_failed").await.is_empty());

    // What the RFCs refuse, each a 400 with its error.
    for (form, error) in [
        (request(&[("request_uri", "urn:ietf:params:oauth:request_uri:x")]), "invalid_request"),
        (request(&[("redirect_uri", "https://evil.example/cb")]), "invalid_request"),
        (request(&[("scope", "no_such_scope")]), "invalid_scope"),
        (request(&[("response_type", "token")]), "unsupported_response_type"),
        (request(&[("client_id", "app-someone-else")]), "invalid_client"),
        (request(&[("request", "not.a.jwt")]), "invalid_request_object"),
    ] {
        let (status, body, _) = push(&app, &client, &form, None).await;
        assert_eq!(status.as_u16() / 100, 4, "{form:?}: {body}");
        assert_eq!(body["error"], error, "{form:?}: {body}");
    }
    let r = app.http().get(&par).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn pushing_can_be_required_of_every_app_or_of_one() {
    let app = spawn_app_with(|s| s.par.required = true).await;
    let m: Value = app
        .http()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["require_pushed_authorization_requests"], true);
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let mut direct = request(&[]);
    direct.push(("client_id", client.id()));
    let r = browser.authorize(&direct).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("/oauth/par"), "{q:?}");
    assert_eq!(q["state"], "pushed-state");
    let uri = pushed(&app, &client, &request(&[])).await;
    assert!(authorized(&browser, &client, &uri, &[]).await.contains_key("code"));

    // One app only.
    let app = spawn_app().await;
    let client = app.confidential().await;
    app.change_client(
        client.id(),
        admin::ClientChanges {
            require_par: Some(true),
            ..Default::default()
        },
    )
    .await;
    let (browser, _) = app.signed_in("alice").await;
    let mut direct = request(&[]);
    direct.push(("client_id", client.id()));
    let q = query_of(&location(&browser.authorize(&direct).await));
    assert_eq!(q["error"], "invalid_request");
    let uri = pushed(&app, &client, &request(&[])).await;
    assert!(authorized(&browser, &client, &uri, &[]).await.contains_key("code"));
    // Other apps are not asked to.
    let other = app.confidential().await;
    let code = app.code(&browser, &other, &[]).await;
    assert!(!code.is_empty());
}

#[tokio::test]
async fn a_pushed_prompt_login_asks_once() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let uri = pushed(&app, &client, &request(&[("prompt", "login")])).await;
    let r = browser.authorize(&[("client_id", client.id()), ("request_uri", &uri)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login"), "{}", location(&r));
    let return_to = query_of(&location(&r))["return_to"].clone();
    assert_eq!(sign_in_at(&browser, &location(&r)).await, return_to);
    let r = browser.get(&return_to).await;
    assert_eq!(r.status(), StatusCode::OK, "signed in again, so consent is next");
    let page = r.text().await.unwrap();
    let r = browser.consent(&page, "allow").await;
    assert!(query_of(&location(&r)).contains_key("code"));
}

#[tokio::test]
async fn a_dpop_proof_at_the_par_endpoint_binds_the_code_to_its_key() {
    let app = spawn_app().await;
    let client = app.confidential().await;
    let (browser, _) = app.signed_in("alice").await;
    let (key, _) = ClientKey::generate().unwrap();
    let par = app.url("/oauth/par");
    let token_url = app.url("/oauth/token");
    let proof = |url: &str| key.dpop_proof("POST", url, app.clock.now(), None).unwrap();

    let (status, body, _) = push(&app, &client, &request(&[]), Some(proof(&par))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let uri = body["request_uri"].as_str().unwrap();
    let q = authorized(&browser, &client, uri, &[]).await;
    let code = &q["code"];
    let basic = (client.id(), client.secret.as_deref().unwrap());
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT)];
    let (status, body) = app.token(Some(basic), &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no proof: {body}");
    assert_eq!(body["error"], "invalid_grant");
    let (other, _) = ClientKey::generate().unwrap();
    let r = app
        .http()
        .post(&token_url)
        .basic_auth(basic.0, Some(basic.1))
        .header("DPoP", other.dpop_proof("POST", &token_url, app.clock.now(), None).unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "another key");
    let r = app
        .http()
        .post(&token_url)
        .basic_auth(basic.0, Some(basic.1))
        .header("DPoP", proof(&token_url))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP");

    // A proof for another URL, and a dpop_jkt naming another key.
    let (status, body, _) = push(&app, &client, &request(&[]), Some(proof(&token_url))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_dpop_proof");
    let other_jkt = healthgate_core::dpop::thumbprint(&other.public_jwk("")).unwrap();
    let form = request(&[("dpop_jkt", other_jkt.as_str())]);
    let (status, body, _) = push(&app, &client, &form, Some(proof(&par))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_dpop_proof");
}

/// A confidential client whose keys are registered with it, and its key.
async fn keyed_client(app: &TestApp) -> (TestClient, ClientKey) {
    let (key, _) = ClientKey::generate().unwrap();
    let client = app.confidential().await;
    app.change_client(
        client.id(),
        admin::ClientChanges {
            jwks: Some(Some(json!({ "keys": [key.public_jwk("k1")] }).to_string())),
            ..Default::default()
        },
    )
    .await;
    let client = TestClient {
        client: app.state.store.client(client.id()).await.unwrap().unwrap(),
        secret: None,
    };
    (client, key)
}

/// A request object of `client`'s signed with `key`: the usual request,
/// with `changes` made to its claims.
fn request_object(app: &TestApp, client: &TestClient, key: &ClientKey, changes: &dyn Fn(&mut Value)) -> String {
    let now = app.clock.now();
    let mut claims = json!({
        "iss": client.id(), "aud": app.state.issuer.to_string(), "client_id": client.id(),
        "iat": now, "nbf": now, "exp": now + 300, "jti": healthgate_core::secret::new_id("ro"),
        "response_type": "code", "redirect_uri": REDIRECT, "scope": "profile_read",
        "state": "signed-state",
    });
    changes(&mut claims);
    key.sign_jws(json!({ "typ": "oauth-authz-req+jwt", "kid": "k1" }), &claims)
        .unwrap()
}

#[tokio::test]
async fn a_signed_request_object_is_verified_with_the_clients_keys() {
    let app = spawn_app().await;
    let (client, key) = keyed_client(&app).await;
    let (browser, _) = app.signed_in("alice").await;

    // By value at the authorization endpoint: its parameters, not the
    // query's, and the pages bring it back by reference.
    let jwt = request_object(&app, &client, &key, &|_| {});
    let r = browser
        .authorize(&[("client_id", client.id()), ("request", &jwt), ("state", "query-state")])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    let hidden = hidden_inputs(&page);
    assert!(hidden["request_uri"].starts_with(PREFIX), "{hidden:?}");
    assert!(!hidden.contains_key("request"), "{hidden:?}");
    let r = browser.consent(&page, "allow").await;
    let q = query_of(&location(&r));
    assert_eq!(q["state"], "signed-state");
    assert!(q.contains_key("code"));

    // Pushed, with the client's assertion.
    let par = app.url("/oauth/par");
    let assertion = |jti: &str| {
        key.sign(
            "k1",
            &json!({ "iss": client.id(), "sub": client.id(), "aud": par, "exp": app.clock.now() + 60, "jti": jti }),
        )
        .unwrap()
    };
    let jwt = request_object(&app, &client, &key, &|c| c["state"] = "pushed-signed".into());
    let a = assertion("p-1");
    let form = [
        ("client_id", client.id()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", a.as_str()),
        ("request", jwt.as_str()),
    ];
    let r = app.http().post(&par).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let q = authorized(&browser, &client, body["request_uri"].as_str().unwrap(), &[]).await;
    assert_eq!(q["state"], "pushed-signed");

    // Signed by another key, with alg none, for another audience, expired,
    // or naming another client: refused, at both endpoints.
    let (stranger, _) = ClientKey::generate().unwrap();
    let forged = request_object(&app, &client, &stranger, &|_| {});
    let header = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({ "alg": "none" }).to_string(),
    );
    let unsigned_claims = forged.split('.').nth(1).unwrap();
    let unsigned = format!("{header}.{unsigned_claims}.");
    let cases = [
        (forged, "signature"),
        (unsigned, "alg none"),
        (request_object(&app, &client, &key, &|c| c["aud"] = "https://other.example".into()), "aud"),
        (request_object(&app, &client, &key, &|c| c["exp"] = (app.clock.now() - 1).into()), "expired"),
        (request_object(&app, &client, &key, &|c| c["client_id"] = "app-other".into()), "client_id"),
    ];
    for (n, (jwt, says)) in cases.iter().enumerate() {
        let r = browser.authorize(&[("client_id", client.id()), ("request", jwt)]).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{says}");
        let text = readable(r.text().await.unwrap());
        assert!(text.contains("invalid_request_object") && text.contains(says), "{says}: {text}");
        let a = assertion(&format!("bad-{n}"));
        let form = [
            ("client_id", client.id()),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", a.as_str()),
            ("request", jwt.as_str()),
        ];
        let r = app.http().post(&par).form(&form).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{says}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request_object", "{says}: {body}");
    }

    // A client without keys cannot send request objects.
    let plain = app.confidential().await;
    let r = browser.authorize(&[("client_id", plain.id()), ("request", &request_object(&app, &plain, &key, &|_| {}))]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// The portal registers an app that must push its requests, and says so.
#[tokio::test]
async fn a_developer_requires_pushed_requests_in_the_portal() {
    use super::portal::{app_form, register_in_portal};
    let app = spawn_app().await;
    let (browser, _) = app.signed_in("dev").await;
    let mut form = app_form("Pushed");
    form.push(("require_par".into(), "1".into()));
    let (id, _) = register_in_portal(&browser, form).await;
    assert!(app.state.store.client(&id).await.unwrap().unwrap().require_par);
    let page = browser.get(&format!("/developers/apps/{id}")).await.text().await.unwrap();
    assert!(page.contains("Required: every authorization request is pushed"), "{page}");
    assert!(page.contains("oauth/<wbr>par"), "the PAR endpoint is listed");
    let edit = browser.get(&format!("/developers/apps/{id}/edit")).await.text().await.unwrap();
    let field = &edit[edit.find("name=\"require_par\"").unwrap()..];
    assert!(field.split('>').next().unwrap().contains("checked"));
}
