//! The demo's authorization-code flow driven over HTTP the way a browser and
//! the partner app's server would, recording every secret it sees so a test
//! can look for them where they must not be.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Server, browser, csrf_token, hidden_inputs, location, set_cookie_value};

/// What `serve --demo --json` prints.
#[derive(Debug, Clone)]
pub struct Demo {
    pub practice_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub authorize_url: String,
    /// (role, username, password)
    pub accounts: Vec<(String, String, String)>,
}

impl Demo {
    /// Parses and checks the demo's JSON line.
    pub fn parse(line: &str) -> Self {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("the demo line is not JSON ({e}): {line}"));
        let s = |key: &str| -> String {
            v[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} missing from {v}"))
                .to_owned()
        };
        let accounts: Vec<(String, String, String)> = v["accounts"]
            .as_array()
            .unwrap_or_else(|| panic!("accounts missing from {v}"))
            .iter()
            .map(|a| {
                let f = |key: &str| a[key].as_str().expect("account field").to_owned();
                (f("role"), f("username"), f("password"))
            })
            .collect();
        let demo = Self {
            practice_id: s("practice_id"),
            client_id: s("client_id"),
            client_secret: s("client_secret"),
            redirect_uri: s("redirect_uri"),
            authorize_url: s("authorize_url"),
            accounts,
        };
        assert!(demo.practice_id.starts_with("pra-"), "{v}");
        assert!(demo.client_secret.starts_with("hg_cs_"), "{v}");
        let roles: Vec<&str> = demo.accounts.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(roles, ["admin", "practitioner", "staff", "member"], "{v}");
        for (_, _, password) in &demo.accounts {
            assert!(password.len() >= 16, "weak demo password in {v}");
        }
        demo
    }

    pub fn password_of(&self, username: &str) -> &str {
        &self
            .accounts
            .iter()
            .find(|a| a.1 == username)
            .unwrap_or_else(|| panic!("no demo account {username}"))
            .2
    }
}

/// Every secret value one run of the flow handled.
#[derive(Debug, Default)]
pub struct Seen {
    pub csrf_tokens: Vec<String>,
    pub session_cookies: Vec<String>,
    pub codes: Vec<String>,
    pub access_tokens: Vec<String>,
    pub refresh_tokens: Vec<String>,
}

impl Seen {
    pub fn all(&self) -> Vec<(&'static str, &str)> {
        let mut all = Vec::new();
        for (kind, values) in [
            ("csrf token", &self.csrf_tokens),
            ("session cookie", &self.session_cookies),
            ("authorization code", &self.codes),
            ("access token", &self.access_tokens),
            ("refresh token", &self.refresh_tokens),
        ] {
            all.extend(values.iter().map(|v| (kind, v.as_str())));
        }
        all
    }
}

const SESSION_COOKIE: &str = "hg_session";

/// Records the session cookie a response sets, if any.
fn note_cookie(seen: &mut Seen, response: &reqwest::Response) {
    if let Some(v) = set_cookie_value(response, SESSION_COOKIE)
        && !v.is_empty()
    {
        seen.session_cookies.push(v);
    }
}

/// Runs the whole flow as `member.demo`: authorize → login → consent →
/// code → token → `/api/v1/me`. Returns the token response.
pub async fn authorize_and_exchange(server: &Server, demo: &Demo, seen: &mut Seen) -> Value {
    let http = browser();
    let username = "member.demo";

    // Not signed in: the authorization endpoint sends the browser to log in.
    let r = http
        .get(&demo.authorize_url)
        .send()
        .await
        .expect("GET authorize");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{r:?}");
    let login_url = location(&r);
    assert_eq!(login_url.path(), "/login", "{login_url}");
    let return_to = login_url
        .query_pairs()
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no return_to in {login_url}"));
    assert!(return_to.starts_with("/oauth/authorize?"), "{return_to}");

    let r = http.get(login_url.clone()).send().await.expect("GET login");
    assert_eq!(r.status(), StatusCode::OK);
    note_cookie(seen, &r);
    let page = r.text().await.expect("login page");
    let csrf = csrf_token(&page);
    seen.csrf_tokens.push(csrf.clone());
    let hidden = hidden_inputs(&page);
    assert!(
        hidden.contains(&("return_to".to_owned(), return_to.clone())),
        "{hidden:?}"
    );

    let r = http
        .post(server.url("/login"))
        .form(&[
            ("username", username),
            ("password", demo.password_of(username)),
            ("csrf_token", &csrf),
            ("return_to", &return_to),
        ])
        .send()
        .await
        .expect("POST login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{r:?}");
    note_cookie(seen, &r);
    let back = location(&r);
    assert_eq!(back.as_str(), server.url(&return_to));

    // Signed in: the consent page.
    let r = http.get(back).send().await.expect("GET authorize again");
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let page = r.text().await.expect("consent page");
    assert!(page.contains("Demo Partner App"), "{page}");
    assert!(page.contains(username), "{page}");
    let mut form = hidden_inputs(&page);
    let consent_csrf = csrf_token(&page);
    seen.csrf_tokens.push(consent_csrf.clone());
    assert!(form.contains(&("csrf_token".to_owned(), consent_csrf)));
    assert!(form.contains(&("client_id".to_owned(), demo.client_id.clone())));
    assert!(form.contains(&("redirect_uri".to_owned(), demo.redirect_uri.clone())));
    form.push(("decision".to_owned(), "allow".to_owned()));

    let r = http
        .post(server.url("/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .expect("POST consent");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{r:?}");
    let callback = location(&r);
    assert!(
        callback
            .as_str()
            .starts_with(&format!("{}?", demo.redirect_uri)),
        "{callback}"
    );
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let code = param("code").unwrap_or_else(|| panic!("no code in {callback}"));
    assert!(code.len() > 32, "{code}");
    assert_eq!(param("state").as_deref(), Some("demo"));
    assert_eq!(param("iss"), Some(server.base()));
    assert_eq!(param("error"), None);
    seen.codes.push(code.clone());

    // The partner app's server exchanges the code.
    let r = http
        .post(server.url("/oauth/token"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &demo.redirect_uri),
        ])
        .send()
        .await
        .expect("POST token");
    let tokens = token_response(r).await;
    seen.access_tokens
        .push(tokens["access_token"].as_str().unwrap().to_owned());
    seen.refresh_tokens
        .push(tokens["refresh_token"].as_str().unwrap().to_owned());
    assert_eq!(tokens["scope"], "profile_read profile_write");

    me(server, tokens["access_token"].as_str().unwrap(), username).await;
    tokens
}

/// Checks a successful token response (RFC 6749 §5.1) and returns its body.
pub async fn token_response(r: reqwest::Response) -> Value {
    let status = r.status();
    let no_store = r
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-store"));
    let body: Value = r.json().await.expect("token response JSON");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(no_store, "token response without Cache-Control: no-store");
    let access = body["access_token"].as_str().unwrap_or_default();
    let refresh = body["refresh_token"].as_str().unwrap_or_default();
    assert!(access.starts_with("hg_at_"), "{body}");
    assert!(refresh.starts_with("hg_rt_"), "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 7200, "{body}");
    assert!(body["scope"].is_string(), "{body}");
    body
}

/// `GET /api/v1/me` with a bearer token speaks for `username`.
pub async fn me(server: &Server, access_token: &str, username: &str) {
    let r = reqwest::Client::new()
        .get(server.url("/api/v1/me"))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("GET /api/v1/me");
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let body: Value = r.json().await.expect("me JSON");
    assert_eq!(body["username"], username, "{body}");
    assert!(
        body["id"].as_str().is_some_and(|id| id.starts_with("usr-")),
        "{body}"
    );
}

/// `grant_type=refresh_token`: a new, different pair.
pub async fn refresh(server: &Server, demo: &Demo, refresh_token: &str) -> Value {
    let r = reqwest::Client::new()
        .post(server.url("/oauth/token"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .expect("POST token (refresh)");
    let body = token_response(r).await;
    assert_ne!(
        body["refresh_token"], refresh_token,
        "refresh tokens rotate"
    );
    body
}

/// A login with the wrong password: refused with the login page again.
pub async fn failed_login(server: &Server, username: &str, password: &str, seen: &mut Seen) {
    let http = browser();
    let r = http
        .get(server.url("/login"))
        .send()
        .await
        .expect("GET login");
    assert_eq!(r.status(), StatusCode::OK);
    note_cookie(seen, &r);
    let csrf = csrf_token(&r.text().await.expect("login page"));
    seen.csrf_tokens.push(csrf.clone());
    let r = http
        .post(server.url("/login"))
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf_token", &csrf),
            ("return_to", "/"),
        ])
        .send()
        .await
        .expect("POST login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{r:?}");
    note_cookie(seen, &r);
    let page = r.text().await.expect("login page");
    assert!(page.contains("incorrect"), "{page}");
}

/// Whether the token endpoint accepts `secret` for the demo client: a bogus
/// code is `invalid_grant` (400) for an authenticated client and
/// `invalid_client` (401) otherwise.
pub async fn client_secret_works(server: &Server, demo: &Demo, secret: &str) -> bool {
    let r = reqwest::Client::new()
        .post(server.url("/oauth/token"))
        .basic_auth(&demo.client_id, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "hg_ac_not-a-real-code"),
            ("redirect_uri", &demo.redirect_uri),
        ])
        .send()
        .await
        .expect("POST token");
    let status = r.status();
    let body: Value = r.json().await.expect("error JSON");
    match status {
        StatusCode::BAD_REQUEST => {
            assert_eq!(body["error"], "invalid_grant", "{body}");
            true
        }
        StatusCode::UNAUTHORIZED => {
            assert_eq!(body["error"], "invalid_client", "{body}");
            false
        }
        other => panic!("unexpected {other}: {body}"),
    }
}

/// A fresh browser walks an authorization request: `authorize_url`, then
/// sign-in as `username` on `server`, then the consent page answered with
/// `decision` (or straight back when consent was remembered). Returns
/// where the browser is finally sent: the app's redirect URI.
pub async fn authorize_in_browser(
    server: &Server,
    authorize_url: &str,
    username: &str,
    password: &str,
    decision: &str,
) -> reqwest::Url {
    authorize_seeing_consent(server, authorize_url, username, password, decision)
        .await
        .1
}

/// [`authorize_in_browser`], also returning the consent page the person
/// saw (`None` when an earlier consent was remembered).
pub async fn authorize_seeing_consent(
    server: &Server,
    authorize_url: &str,
    username: &str,
    password: &str,
    decision: &str,
) -> (Option<String>, reqwest::Url) {
    authorize_answering(
        server,
        authorize_url,
        username,
        password,
        &[("decision", decision)],
    )
    .await
}

/// [`authorize_seeing_consent`], answering the consent page with `answer`
/// (the decision, and any choice it offers, such as a patient).
pub async fn authorize_answering(
    server: &Server,
    authorize_url: &str,
    username: &str,
    password: &str,
    answer: &[(&str, &str)],
) -> (Option<String>, reqwest::Url) {
    let http = browser();
    let r = http.get(authorize_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{authorize_url}");
    let login = location(&r);
    let login_path = match login.query() {
        Some(q) => format!("{}?{q}", login.path()),
        None => login.path().to_owned(),
    };
    let page = http
        .get(server.url(&login_path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let return_to = login
        .query_pairs()
        .find(|(k, _)| k == "return_to")
        .expect("return_to")
        .1
        .into_owned();
    let r = http
        .post(server.url("/login"))
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf_token", &csrf_token(&page)),
            ("return_to", &return_to),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = http.get(server.url(&return_to)).send().await.unwrap();
    if r.status() == StatusCode::SEE_OTHER {
        // Consent remembered from an earlier grant: straight back to the app.
        return (None, location(&r));
    }
    let page = r.text().await.unwrap();
    let mut form = hidden_inputs(&page);
    form.extend(answer.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let r = http
        .post(server.url("/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    (Some(page), location(&r))
}
