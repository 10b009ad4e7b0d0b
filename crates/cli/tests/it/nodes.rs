//! Several `healthgate serve` processes on one PostgreSQL database, as behind
//! a load balancer: any node finishes a flow another started, races between
//! nodes have one winner, a revocation made on one node holds on the others
//! at once, and killing a node loses no token it handed out.
//!
//! Runs only when `HEALTHGATE_TEST_POSTGRES_URL` is set; each test gets a
//! schema of its own, dropped afterwards (on failure too).

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Barrier;

use crate::flow::{self, Demo};
use crate::support::{Sandbox, Server, browser, csrf_token, free_port, hidden_inputs, location};

pub(crate) const POSTGRES_ENV: &str = "HEALTHGATE_TEST_POSTGRES_URL";
const USER: &str = "member.demo";

/// The PostgreSQL URL, or `None` after saying why `test` is skipped. Written
/// straight to standard error so the note shows even when output is captured.
fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "nodes::{test} skipped: {POSTGRES_ENV} is not set, and several nodes need one shared PostgreSQL database"
            );
            None
        }
    }
}

/// A schema of its own for one test; dropped (with everything in it) when
/// this guard is, including while a failed test unwinds.
pub(crate) struct Schema {
    base_url: String,
    name: String,
}

impl Schema {
    pub(crate) async fn create(base_url: &str) -> Self {
        let name = healthgate_core::secret::new_id("hg_nodes")
            .to_lowercase()
            .replace('-', "_");
        let admin = healthgate_store::Store::connect(base_url, Default::default())
            .await
            .unwrap_or_else(|e| panic!("connect to {POSTGRES_ENV}: {e}"));
        admin
            .execute_admin(&format!("CREATE SCHEMA \"{name}\""))
            .await
            .expect("create the test schema");
        admin.close().await;
        Self {
            base_url: base_url.to_owned(),
            name,
        }
    }

    /// The database URL whose connections use this schema.
    pub(crate) fn url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-csearch_path%3D{}",
            self.base_url, self.name
        )
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.base_url.clone(), self.name.clone());
        // Drop may run inside the test's runtime, which cannot be blocked
        // on: a thread with a runtime of its own does the work.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let store = healthgate_store::Store::connect(&url, Default::default()).await?;
                // Never hang a test run on a lock a dead node left behind.
                let sql =
                    format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                let result = store.execute_admin(&sql).await;
                store.close().await;
                result
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test schema {}: {dropped:?}",
                self.name
            );
        }
    }
}

/// For the tests that load the nodes from one address, or race one code
/// on purpose: the per-address rate off, and a client's failures counted
/// far past what the race produces (throttling has its own tests).
const UNTHROTTLED: &[(&str, &str)] = &[
    ("HEALTHGATE_THROTTLE__API_PER_MINUTE", "0"),
    ("HEALTHGATE_THROTTLE__CLIENT_FAILURE_LIMIT", "100000"),
];

/// Node A (which migrated and seeded the demo) and the nodes started after
/// it, all with A's address as issuer, as behind one load balancer.
struct Cluster {
    // Fields drop in order: the processes go before the schema they use.
    nodes: Vec<Server>,
    demo: Demo,
    issuer: String,
    _sandbox: Sandbox,
    _schema: Schema,
}

impl Cluster {
    /// Starts `count` nodes, or returns `None` (having said so) when no
    /// PostgreSQL is configured.
    async fn start(test: &str, count: usize) -> Option<Self> {
        Self::start_with(test, count, &[]).await
    }

    /// [`Cluster::start`], with `env` set on every node.
    async fn start_with(test: &str, count: usize, env: &[(&str, &str)]) -> Option<Self> {
        let base_url = postgres_url(test)?;
        let schema = Schema::create(&base_url).await;
        let sandbox = Sandbox::new();
        let url = schema.url();

        let port_a = free_port();
        let issuer = format!("http://127.0.0.1:{port_a}");
        let bind = format!("127.0.0.1:{port_a}");
        // Loopback webhook receivers stand in for partners: every node may
        // deliver to them (development setting).
        let mut cmd = sandbox.command(&[
            "--database-url",
            &url,
            "serve",
            "--demo",
            "--json",
            "--issuer",
            &issuer,
            "--bind",
            &bind,
        ]);
        cmd.env("HEALTHGATE_ALLOW_HTTP_WEBHOOKS", "true");
        cmd.envs(env.iter().copied());
        let mut a = sandbox.spawn(cmd, port_a);
        let demo = Demo::parse(&a.stdout_line());
        assert_eq!(demo.redirect_uri, format!("{issuer}/demo/callback"));
        a.wait_healthy().await;

        let mut nodes = vec![a];
        for _ in 1..count {
            let port = free_port();
            let bind = format!("127.0.0.1:{port}");
            let mut cmd = sandbox.command(&[
                "--database-url",
                &url,
                "serve",
                "--issuer",
                &issuer,
                "--bind",
                &bind,
            ]);
            cmd.env("HEALTHGATE_ALLOW_HTTP_WEBHOOKS", "true");
            cmd.envs(env.iter().copied());
            let mut node = sandbox.spawn(cmd, port);
            node.wait_healthy().await;
            nodes.push(node);
        }
        Some(Self {
            nodes,
            demo,
            issuer,
            _sandbox: sandbox,
            _schema: schema,
        })
    }

    fn a(&self) -> &Server {
        &self.nodes[0]
    }

    fn b(&self) -> &Server {
        &self.nodes[1]
    }

    /// Every node's standard error, for failure messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node on port {} ---\n{}", n.port, n.stderr()))
            .collect()
    }
}

/// A client for the partner app's server and the resource API: no cookies,
/// no redirects, bounded waits.
fn api() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build an HTTP client")
}

/// `path?query` of a URL, to replay it on another node.
fn path_and_query(url: &reqwest::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// One browser (one cookie jar, so one session across nodes, as cookies
/// ignore ports) runs authorize → login → consent as `member.demo`: the
/// authorization request goes to A, the login page and form to `login`, the
/// consent page to `consent_page` and the decision to `consent_post`.
/// Returns the authorization code.
async fn code_via(
    cluster: &Cluster,
    login: &Server,
    consent_page: &Server,
    consent_post: &Server,
) -> String {
    let demo = &cluster.demo;
    let http = browser();

    let r = http
        .get(&demo.authorize_url)
        .send()
        .await
        .expect("GET authorize");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{r:?}");
    let to_login = location(&r);
    assert_eq!(to_login.path(), "/login", "{to_login}");
    let return_to = to_login
        .query_pairs()
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no return_to in {to_login}"));
    assert!(return_to.starts_with("/oauth/authorize?"), "{return_to}");

    let r = http
        .get(login.url(&path_and_query(&to_login)))
        .send()
        .await
        .expect("GET login");
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let page = r.text().await.expect("login page");
    let csrf = csrf_token(&page);
    assert!(
        hidden_inputs(&page).contains(&("return_to".to_owned(), return_to.clone())),
        "{page}"
    );
    let r = http
        .post(login.url("/login"))
        .form(&[
            ("username", USER),
            ("password", demo.password_of(USER)),
            ("csrf_token", &csrf),
            ("return_to", &return_to),
        ])
        .send()
        .await
        .expect("POST login");
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{r:?}\n{}",
        cluster.logs()
    );
    assert_eq!(path_and_query(&location(&r)), return_to);

    let r = http
        .get(consent_page.url(&return_to))
        .send()
        .await
        .expect("GET consent page");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the session made on one node is not known on another: {r:?}"
    );
    let page = r.text().await.expect("consent page");
    assert!(page.contains("Demo Partner App"), "{page}");
    assert!(page.contains(USER), "{page}");
    let mut form = hidden_inputs(&page);
    assert!(form.contains(&("client_id".to_owned(), demo.client_id.clone())));
    form.push(("decision".to_owned(), "allow".to_owned()));

    let r = http
        .post(consent_post.url("/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .expect("POST consent");
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{r:?}\n{}",
        cluster.logs()
    );
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
    assert_eq!(param("error"), None, "{callback}");
    assert_eq!(param("state").as_deref(), Some("demo"));
    // Whichever node answered, the issuer is the one the nodes share.
    assert_eq!(param("iss").as_deref(), Some(cluster.issuer.as_str()));
    param("code").unwrap_or_else(|| panic!("no code in {callback}"))
}

/// `POST /oauth/token` on the node at `base` as the demo app; the status
/// and JSON body. (Takes an address rather than a [`Server`] so that tasks
/// can share it.)
async fn token_request(
    http: &reqwest::Client,
    base: &str,
    demo: &Demo,
    form: &[(&str, &str)],
) -> reqwest::Result<(StatusCode, Value)> {
    let r = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .form(form)
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.json().await?))
}

async fn exchange(
    http: &reqwest::Client,
    base: &str,
    demo: &Demo,
    code: &str,
) -> (StatusCode, Value) {
    token_request(
        http,
        base,
        demo,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &demo.redirect_uri),
        ],
    )
    .await
    .expect("POST token (code)")
}

async fn refresh(
    http: &reqwest::Client,
    base: &str,
    demo: &Demo,
    refresh_token: &str,
) -> (StatusCode, Value) {
    token_request(
        http,
        base,
        demo,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
    .expect("POST token (refresh)")
}

/// Which token request a race sends.
#[derive(Clone, Copy)]
enum Grant {
    Code,
    Refresh,
}

/// Sends fifty copies of one token request (`token` being the code or the
/// refresh token), alternating between the first two nodes and released
/// together by a barrier; returns every answer.
async fn race_across_nodes(
    cluster: &Cluster,
    http: &reqwest::Client,
    grant: Grant,
    token: &str,
) -> Vec<(StatusCode, Value)> {
    const N: usize = 50;
    let bases = Arc::new([cluster.a().base(), cluster.b().base()]);
    let demo = Arc::new(cluster.demo.clone());
    let token = Arc::new(token.to_owned());
    let start = Arc::new(Barrier::new(N));
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let (bases, demo, http, start, token) = (
            bases.clone(),
            demo.clone(),
            http.clone(),
            start.clone(),
            token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let base = &bases[i % 2];
            match grant {
                Grant::Code => exchange(&http, base, &demo, &token).await,
                Grant::Refresh => refresh(&http, base, &demo, &token).await,
            }
        }));
    }
    let mut answers = Vec::with_capacity(N);
    for task in tasks {
        answers.push(task.await.expect("a racing token request"));
    }
    answers
}

/// The status of `GET /api/v1/me` with `token` on `node`.
async fn me_status(http: &reqwest::Client, node: &Server, token: &str) -> StatusCode {
    http.get(node.url("/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /api/v1/me")
        .status()
}

fn str_field(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .to_owned()
}

/// A refusal of a grant: 400 `invalid_grant`.
fn assert_invalid_grant(status: StatusCode, body: &Value) {
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flow_started_on_one_node_finishes_on_another() {
    let Some(cluster) = Cluster::start("a_flow_started_on_one_node_finishes_on_another", 2).await
    else {
        return;
    };
    let (a, b, demo) = (cluster.a(), cluster.b(), &cluster.demo);
    let http = api();

    // Authorize on A, log in on B, see the consent page on A, allow on B.
    let code = code_via(&cluster, b, a, b).await;

    // The partner app exchanges the code on A.
    let (status, body) = exchange(&http, &a.base(), demo, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", cluster.logs());
    let access = str_field(&body, "access_token");
    let refresh_token = str_field(&body, "refresh_token");

    // Both nodes honour what A issued (so either could remember it as
    // good), and B rotates it.
    flow::me(a, &access, USER).await;
    flow::me(b, &access, USER).await;
    let rotated = flow::refresh(b, demo, &refresh_token).await;
    let new_access = str_field(&rotated, "access_token");

    // Rotation is immediate on every node: A refuses the old access token
    // and honours the new one.
    assert_eq!(me_status(&http, a, &access).await, StatusCode::UNAUTHORIZED);
    flow::me(a, &new_access, USER).await;
    // The retired refresh token is refused by A too (which revokes the family).
    let (status, body) = refresh(&http, &a.base(), demo, &refresh_token).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_code_redemptions_across_nodes_have_one_winner() {
    let Some(cluster) = Cluster::start_with(
        "concurrent_code_redemptions_across_nodes_have_one_winner",
        2,
        UNTHROTTLED,
    )
    .await
    else {
        return;
    };
    let code = code_via(&cluster, cluster.a(), cluster.b(), cluster.a()).await;

    let http = api();
    let mut winners = Vec::new();
    for (status, body) in race_across_nodes(&cluster, &http, Grant::Code, &code).await {
        if status == StatusCode::OK {
            winners.push(body);
        } else {
            assert_invalid_grant(status, &body);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "one code redeemed {} times: {winners:#?}",
        winners.len()
    );

    // The replays revoked what the winner got, on every node.
    let access = str_field(&winners[0], "access_token");
    for node in &cluster.nodes {
        assert_eq!(
            me_status(&http, node, &access).await,
            StatusCode::UNAUTHORIZED,
            "the winner's access token survived the replays on port {}",
            node.port
        );
    }
    let (status, body) = refresh(
        &http,
        &cluster.b().base(),
        &cluster.demo,
        &str_field(&winners[0], "refresh_token"),
    )
    .await;
    assert_invalid_grant(status, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_across_nodes_leave_at_most_one_live_chain() {
    let Some(cluster) = Cluster::start(
        "concurrent_refreshes_across_nodes_leave_at_most_one_live_chain",
        2,
    )
    .await
    else {
        return;
    };
    let http = api();
    let code = code_via(&cluster, cluster.b(), cluster.a(), cluster.b()).await;
    let (status, body) = exchange(&http, &cluster.a().base(), &cluster.demo, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first_access = str_field(&body, "access_token");
    let refresh_token = str_field(&body, "refresh_token");

    let mut issued = Vec::new();
    let mut refused = 0;
    for (status, body) in race_across_nodes(&cluster, &http, Grant::Refresh, &refresh_token).await {
        if status == StatusCode::OK {
            issued.push(body);
        } else {
            assert_invalid_grant(status, &body);
            refused += 1;
        }
    }
    assert!(
        issued.len() <= 1,
        "one refresh token rotated {} times: {issued:#?}",
        issued.len()
    );

    // Every node agrees on every token, and at most one chain lives on.
    let mut live = 0;
    for body in &issued {
        let access = str_field(body, "access_token");
        let on_a = me_status(&http, cluster.a(), &access).await;
        let on_b = me_status(&http, cluster.b(), &access).await;
        assert_eq!(on_a, on_b, "the nodes disagree about one access token");
        if on_a == StatusCode::OK {
            live += 1;
        }
    }
    assert!(live <= 1, "{live} live chains from one refresh token");
    // Each refused request presented a retired token, which revokes the
    // family: nothing the race handed out lives on.
    if refused > 0 {
        assert_eq!(live, 0, "a family survived the reuse of its refresh token");
    }
    for node in &cluster.nodes {
        assert_eq!(
            me_status(&http, node, &first_access).await,
            StatusCode::UNAUTHORIZED,
            "the rotated-out access token still works on port {}",
            node.port
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_one_node_holds_on_the_other_at_once() {
    let Some(cluster) =
        Cluster::start("a_revocation_on_one_node_holds_on_the_other_at_once", 2).await
    else {
        return;
    };
    let (a, b, demo) = (cluster.a(), cluster.b(), &cluster.demo);
    let http = api();
    let code = code_via(&cluster, a, a, a).await;
    let (status, body) = exchange(&http, &a.base(), demo, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let old_refresh = str_field(&body, "refresh_token");

    let rotated = flow::refresh(a, demo, &old_refresh).await;
    let new_access = str_field(&rotated, "access_token");
    let new_refresh = str_field(&rotated, "refresh_token");
    // B has seen the new access token work, so anything it might remember
    // about it would say "active".
    flow::me(b, &new_access, USER).await;

    // Reuse of the retired refresh token on A revokes the family...
    let (status, body) = refresh(&http, &a.base(), demo, &old_refresh).await;
    assert_invalid_grant(status, &body);

    // ...and B holds to that on its very next requests.
    assert_eq!(
        me_status(&http, b, &new_access).await,
        StatusCode::UNAUTHORIZED,
        "B still honours an access token A revoked"
    );
    let (status, body) = refresh(&http, &b.base(), demo, &new_refresh).await;
    assert_invalid_grant(status, &body);
    assert_eq!(
        me_status(&http, a, &new_access).await,
        StatusCode::UNAUTHORIZED
    );
}

/// What one request of the load brought back.
enum Reply {
    Token {
        from_a: bool,
        after_kill: bool,
        access_token: String,
    },
    Refused(StatusCode, String),
    /// No complete response: the client never got a token.
    Failed {
        from_a: bool,
    },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_node_under_load_loses_no_issued_token() {
    let Some(mut cluster) = Cluster::start_with(
        "killing_a_node_under_load_loses_no_issued_token",
        2,
        UNTHROTTLED,
    )
    .await
    else {
        return;
    };
    let http = api();

    // A user's tokens, issued by B before it dies.
    let b = cluster.b();
    let code = code_via(&cluster, b, b, b).await;
    let (status, body) = exchange(&http, &b.base(), &cluster.demo, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user_access = str_field(&body, "access_token");
    let user_refresh = str_field(&body, "refresh_token");

    // Client-credentials requests from several tasks, alternating nodes,
    // bounded in time and count. B is killed once it has handed out
    // KILL_AFTER tokens (or a third of the time has passed), which leaves
    // most of the budget for the load to go on against A alone.
    const TASKS: usize = 8;
    const PER_TASK: usize = 400;
    const KILL_AFTER: usize = 50;
    const LOAD: Duration = Duration::from_secs(2);
    let urls = Arc::new([
        cluster.a().url("/oauth/token"),
        cluster.b().url("/oauth/token"),
    ]);
    let client = Arc::new((
        cluster.demo.client_id.clone(),
        cluster.demo.client_secret.clone(),
    ));
    let killed = Arc::new(AtomicBool::new(false));
    let from_b_so_far = Arc::new(AtomicUsize::new(0));
    let load = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("build an HTTP client");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let (urls, client, killed, from_b_so_far, load) = (
            urls.clone(),
            client.clone(),
            killed.clone(),
            from_b_so_far.clone(),
            load.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            for i in 0..PER_TASK {
                if started.elapsed() >= LOAD {
                    break;
                }
                let from_a = (t + i) % 2 == 0;
                let sent = load
                    .post(&urls[usize::from(!from_a)])
                    .basic_auth(&client.0, Some(&client.1))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await;
                let reply = match sent {
                    Ok(r) => {
                        let status = r.status();
                        match r.text().await {
                            Ok(body) if status == StatusCode::OK => {
                                let v: Value = serde_json::from_str(&body)
                                    .unwrap_or_else(|e| panic!("token JSON ({e}): {body}"));
                                if !from_a {
                                    from_b_so_far.fetch_add(1, Ordering::SeqCst);
                                }
                                Reply::Token {
                                    from_a,
                                    after_kill: killed.load(Ordering::SeqCst),
                                    access_token: str_field(&v, "access_token"),
                                }
                            }
                            Ok(body) => Reply::Refused(status, body),
                            // The body was cut off.
                            Err(_) => Reply::Failed { from_a },
                        }
                    }
                    Err(_) => Reply::Failed { from_a },
                };
                replies.push(reply);
            }
            replies
        }));
    }

    while started.elapsed() < LOAD / 3 && from_b_so_far.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = cluster.nodes[1].sigkill();
    killed.store(true, Ordering::SeqCst);
    assert_eq!(status.signal(), Some(9), "{status}");

    let mut tokens = Vec::new();
    let (mut from_b, mut from_a_after_kill, mut failed_on_b) = (0, 0, 0);
    for task in tasks {
        for reply in task.await.expect("a load task") {
            match reply {
                Reply::Token {
                    from_a,
                    after_kill,
                    access_token,
                } => {
                    from_b += usize::from(!from_a);
                    from_a_after_kill += usize::from(from_a && after_kill);
                    tokens.push(access_token);
                }
                Reply::Refused(status, body) => {
                    panic!("a token request was refused with {status}: {body}")
                }
                Reply::Failed { from_a: true } => panic!(
                    "a request to A failed while B was killed\n{}",
                    cluster.logs()
                ),
                Reply::Failed { from_a: false } => failed_on_b += 1,
            }
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "nodes::killing_a_node_under_load_loses_no_issued_token: {} tokens received ({from_b} from B before the kill, {from_a_after_kill} from A after it), {failed_on_b} requests to B failed, load ran {:?}",
        tokens.len(),
        started.elapsed()
    );
    assert!(from_b > 0, "B issued nothing before it was killed");
    assert!(
        from_a_after_kill > 0,
        "A issued nothing after B was killed\n{}",
        cluster.logs()
    );
    assert!(failed_on_b > 0, "no request to B failed after B was killed");

    // Every token a client received is still good on the survivor: 403
    // (it speaks for no user) rather than 401 (unknown or revoked).
    let a = cluster.a();
    let checks = Arc::new(tokio::sync::Semaphore::new(16));
    let mut verdicts = Vec::with_capacity(tokens.len());
    for token in &tokens {
        let (http, checks, url, token) = (
            http.clone(),
            checks.clone(),
            a.url("/api/v1/me"),
            token.clone(),
        );
        verdicts.push(tokio::spawn(async move {
            let _permit = checks.acquire().await.expect("the semaphore");
            let r = http
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("GET /api/v1/me on A");
            (r.status(), r.text().await.unwrap_or_default())
        }));
    }
    let mut lost = 0;
    for verdict in verdicts {
        let (status, body) = verdict.await.expect("a check task");
        if status == StatusCode::UNAUTHORIZED {
            lost += 1;
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(body.contains("insufficient_scope"), "{body}");
        }
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {} issued tokens were lost",
        tokens.len()
    );

    // A keeps serving: it is ready, issues tokens, and honours the user's
    // tokens that B issued.
    let r = http
        .get(a.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(r.status(), StatusCode::OK);
    let (status, body) = token_request(
        &http,
        &a.base(),
        &cluster.demo,
        &[("grant_type", "client_credentials")],
    )
    .await
    .expect("POST token on A");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        me_status(&http, a, &str_field(&body, "access_token")).await,
        StatusCode::FORBIDDEN
    );
    flow::me(a, &user_access, USER).await;
    let rotated = flow::refresh(a, &cluster.demo, &user_refresh).await;
    flow::me(a, &str_field(&rotated, "access_token"), USER).await;
}

/// A webhook receiver on loopback: answers 200 to every POST and keeps
/// `(Healthgate-Delivery, Healthgate-Event)` of each.
async fn webhook_receiver() -> (String, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/healthgate", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the body (Content-Length bytes).
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = &text[..end];
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| {
                                    l.split_once(':')
                                        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                                })
                                .map(|(_, v)| v.trim().to_owned())
                                .unwrap_or_default()
                        };
                        let length: usize = header("content-length").parse().unwrap_or(0);
                        if buf.len() < end + 4 + length {
                            continue;
                        }
                        kept.lock()
                            .unwrap()
                            .push((header("healthgate-delivery"), header("healthgate-event")));
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_integration_connected_on_one_node_is_used_and_disconnected_on_the_others() {
    let Some(cluster) = Cluster::start(
        "an_integration_connected_on_one_node_is_used_and_disconnected_on_the_others",
        2,
    )
    .await
    else {
        return;
    };
    let (a, b, demo) = (cluster.a(), cluster.b(), &cluster.demo);
    let (hook_url, received) = webhook_receiver().await;
    // The operator points the demo app's webhook at the receiver (the CLI on
    // the same database; loopback http is for development only).
    let mut cmd = cluster._sandbox.command(&[
        "--database-url",
        &cluster._schema.url(),
        "client",
        "update",
        &demo.client_id,
        "--webhook-url",
        &hook_url,
        "--json",
    ]);
    cmd.env("HEALTHGATE_ALLOW_HTTP_WEBHOOKS", "true");
    crate::support::output(cmd).json();

    // The practice admin signs in on B and clicks Connect on A's page, posting to B.
    let admin = browser();
    let page = admin
        .get(b.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = admin
        .post(b.url("/login"))
        .form(&[
            ("username", "admin.demo"),
            ("password", demo.password_of("admin.demo")),
            ("csrf_token", &csrf_token(&page)),
            ("return_to", "/integrations"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = admin
        .get(a.url("/integrations"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Demo Partner App"), "{page}");
    let mut named = Vec::new();
    // The first of each: the header's Sign out form carries a csrf_token too.
    let form: Vec<(String, String)> = hidden_inputs(&page)
        .into_iter()
        .filter(|(k, _)| ["csrf_token", "org", "client_id"].contains(&k.as_str()))
        .filter(|(k, _)| {
            let first = !named.contains(k);
            named.push(k.clone());
            first
        })
        .chain([("mode".to_owned(), "redirect".to_owned())])
        .collect();
    let r = admin
        .post(b.url("/integrations/connect"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", cluster.logs());
    let to = location(&r);
    assert!(
        to.as_str()
            .starts_with(&format!("{}/demo/connect?code=", cluster.issuer)),
        "{to}"
    );
    let code = to
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();

    // The partner exchanges on A and uses the key on B.
    let http = api();
    let r = http
        .post(a.url("/api/oauth/tokens"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .form(&[("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let key = str_field(&body, "access_token");
    let id = str_field(&body, "id");
    let practice = http
        .get(b.url("/api/v1/practice"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(practice.status(), StatusCode::OK);

    // The partner deactivates on B; A refuses the key at once.
    let r = http
        .post(b.url(&format!("/api/v1/integrations/{id}/deactivate")))
        .bearer_auth(&demo.client_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let practice = http
        .get(a.url("/api/v1/practice"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(practice.status(), StatusCode::UNAUTHORIZED);

    // Both nodes poll the outbox; every delivery arrives once.
    let wanted = ["integration.connected", "integration.deactivated"];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let kinds: Vec<String> = received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, k)| k.clone())
            .collect();
        if wanted.iter().all(|w| kinds.iter().any(|k| k == w)) {
            break;
        }
        if Instant::now() >= deadline {
            let log = crate::support::output(cluster._sandbox.command(&[
                "--database-url",
                &cluster._schema.url(),
                "webhooks",
                "deliveries",
                "--json",
            ]));
            panic!(
                "deliveries so far: {kinds:?}\ndelivery log: {}\n{}",
                log.stdout,
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give both nodes a few more polls to show any duplicate.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = received.lock().unwrap().clone();
    let mut ids: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "a delivery arrived twice: {got:?}");
    assert!(ids.iter().all(|d| d.starts_with("whd-")), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_provisioned_on_one_node_is_served_and_deleted_on_the_others() {
    let Some(cluster) = Cluster::start(
        "a_user_provisioned_on_one_node_is_served_and_deleted_on_the_others",
        2,
    )
    .await
    else {
        return;
    };
    let (a, b, demo) = (cluster.a(), cluster.b(), &cluster.demo);
    let http = api();
    let r = http
        .post(a.url("/api/v1/users"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .json(&serde_json::json!({ "username": "partner-user-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let access = str_field(&body, "access_token");
    let guid = str_field(&body, "guid");
    assert_eq!(me_status(&http, b, &access).await, StatusCode::OK);
    // The same username again, on the other node: one account per partner.
    let r = http
        .post(b.url("/api/v1/users"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .json(&serde_json::json!({ "username": "partner-user-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = http
        .delete(b.url(&format!("/api/v1/users/{guid}")))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(me_status(&http, a, &access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn id_tokens_signed_on_one_node_verify_with_the_keys_another_publishes() {
    let Some(cluster) = Cluster::start(
        "id_tokens_signed_on_one_node_verify_with_the_keys_another_publishes",
        2,
    )
    .await
    else {
        return;
    };
    let (a, b, demo) = (cluster.a(), cluster.b(), &cluster.demo);
    let url = cluster._schema.url();
    let cli = |args: &[&str]| {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        all.push("--json");
        crate::support::output(cluster._sandbox.command(&all)).json()
    };
    cli(&[
        "client",
        "update",
        &demo.client_id,
        "--scope",
        "openid profile_read profile_write",
    ]);

    // Authorize on A, sign in and consent on B.
    let authorize = format!(
        "{}/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid&state=s&nonce=n-42",
        cluster.issuer, demo.client_id, demo.redirect_uri
    );
    let back =
        flow::authorize_in_browser(b, &authorize, USER, demo.password_of(USER), "allow").await;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();

    // Exchange on A; verify the ID token with the JWKS node B publishes.
    let (status, body) = exchange(&api(), &a.base(), demo, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", cluster.logs());
    let id_token = str_field(&body, "id_token");
    let kid = healthgate_core::jose::header_kid(&id_token).unwrap();
    let jwks: Value = api()
        .get(b.url("/oauth/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("B publishes A's key");
    let claims = healthgate_core::jose::verify_es256(&id_token, jwk).expect("signature");
    assert_eq!(claims["nonce"], "n-42");
    assert_eq!(claims["aud"], demo.client_id.as_str());
    assert_eq!(claims["iss"], cluster.issuer.as_str());

    // A rotation made through one database shows on every node at once.
    cli(&["keys", "rotate"]);
    let jwks: Value = api()
        .get(a.url("/oauth/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

/// The text of the element with `id` in a page, decoded: up to its end
/// tag, without the `<wbr>` break opportunities inside.
fn element_text(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in page:\n{html}"));
    let open = at + html[at..].find('>').expect("end of tag") + 1;
    let close = open + html[open..].find("</").expect("end of element");
    crate::support::html_unescape(&html[open..close].replace("<wbr>", ""))
}

/// A page's form: its hidden fields plus `extra`.
fn form_of(html: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut form = hidden_inputs(html);
    form.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    form
}

async fn page(http: &reqwest::Client, node: &Server, path: &str) -> String {
    let r = http.get(node.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_registered_in_the_portal_on_one_node_runs_in_the_playground_across_the_others() {
    let Some(cluster) = Cluster::start(
        "an_app_registered_in_the_portal_on_one_node_runs_in_the_playground_across_the_others",
        2,
    )
    .await
    else {
        return;
    };
    let (a, b) = (cluster.a(), cluster.b());
    // One browser: cookies ignore ports, so one session on both nodes.
    let http = browser();

    // Sign up on A, register the app on B.
    let signup = page(&http, a, "/developers/signup").await;
    let r = http
        .post(a.url("/developers/signup"))
        .form(&form_of(
            &signup,
            &[
                ("username", "devon"),
                ("password", "correct horse battery"),
                ("password_confirmation", "correct horse battery"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", cluster.logs());
    let new = page(&http, b, "/developers/apps/new").await;
    let r = http
        .post(b.url("/developers/apps"))
        .form(&form_of(
            &new,
            &[
                ("name", "Across Nodes"),
                ("redirect_uris", "https://across.example/cb"),
                ("scope", "profile_read"),
                ("user_type", "member"),
                ("client_type", "confidential"),
                ("authorization_level", "user"),
            ],
        ))
        .send()
        .await
        .unwrap();
    // Post/redirect/get: the secret, sealed in a cookie by B, is shown once
    // by A.
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", cluster.logs());
    let credentials = r.headers()["location"].to_str().unwrap().to_owned();
    let created = page(&http, a, &credentials).await;
    let client_id = element_text(&created, "app-id");
    let secret = element_text(&created, "app-secret");

    // The playground: its redirect URI added on A, the run built on B,
    // consent shown on B and decided on A, the callback on B, the token
    // request on A, the API call on B.
    let pg = page(&http, a, &format!("/playground?client_id={client_id}")).await;
    let r = http
        .post(a.url("/playground/redirect-uri"))
        .form(&form_of(&pg, &[("client_id", &client_id)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let built = page(
        &http,
        b,
        &format!("/playground/authorize?client_id={client_id}&scope=profile_read"),
    )
    .await;
    let marker = "id=\"authorize-link\" href=\"";
    let start = built.find(marker).expect("authorize link") + marker.len();
    let href =
        crate::support::html_unescape(&built[start..start + built[start..].find('"').unwrap()]);
    let authorize = reqwest::Url::parse(&href).unwrap();
    let consent = page(&http, b, &path_and_query(&authorize)).await;
    let r = http
        .post(a.url("/oauth/authorize"))
        .form(&form_of(&consent, &[("decision", "allow")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert_eq!(back.path(), "/playground/callback");
    let callback = page(&http, b, &path_and_query(&back)).await;
    let r = http
        .post(a.url("/playground/token"))
        .form(&form_of(&callback, &[("client_secret", &secret)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tokens = r.text().await.unwrap();
    assert!(tokens.contains("HTTP/1.1 200 OK"), "{tokens}");
    let r = http
        .post(b.url("/playground/me"))
        .form(&form_of(&tokens, &[]))
        .send()
        .await
        .unwrap();
    let me = r.text().await.unwrap();
    assert!(
        me.contains("GET /api/v1/me HTTP/1.1") && me.contains("HTTP/1.1 200 OK"),
        "{me}"
    );

    // A secret rotated on A: B accepts the new one at once, and the old one
    // for the grace (client_secret_grace, 24 hours by default).
    let confirm = page(&http, a, &format!("/developers/apps/{client_id}/secret")).await;
    let r = http
        .post(a.url(&format!("/developers/apps/{client_id}/secret")))
        .form(&form_of(&confirm, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let credentials = r.headers()["location"].to_str().unwrap().to_owned();
    let rotated = element_text(&page(&http, a, &credentials).await, "app-secret");
    assert_ne!(rotated, secret);
    for presented in [&rotated, &secret] {
        let r = api()
            .post(b.url("/oauth/token"))
            .basic_auth(&client_id, Some(presented))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    // Signing out everywhere on B ends the session A was serving.
    let sessions = page(&http, b, "/account/sessions").await;
    assert!(sessions.contains("This browser"), "{sessions}");
    let r = http
        .post(b.url("/account/sessions/end-all"))
        .form(&[("csrf_token", csrf_token(&sessions))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = http
        .get(a.url("/developers/apps/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r).path(), "/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_suspended_in_the_console_on_one_node_is_stopped_on_the_others() {
    let Some(cluster) = Cluster::start(
        "an_app_suspended_in_the_console_on_one_node_is_stopped_on_the_others",
        2,
    )
    .await
    else {
        return;
    };
    let (a, b, demo) = (cluster.a(), cluster.b(), &cluster.demo);
    let grant = |node: &Server| {
        api()
            .post(node.url("/oauth/token"))
            .basic_auth(&demo.client_id, Some(&demo.client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let r = grant(b).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = str_field(&r.json().await.unwrap(), "access_token");

    // The demo's admin is an operator: they sign in on A and suspend the
    // app from the console there.
    let (_, username, password) = demo
        .accounts
        .iter()
        .find(|(role, _, _)| role == "admin")
        .expect("the demo's admin")
        .clone();
    let http = browser();
    let login = page(&http, a, "/login").await;
    let r = http
        .post(a.url("/login"))
        .form(&form_of(
            &login,
            &[("username", &username), ("password", &password)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let apps = page(&http, a, "/admin/apps").await;
    let r = http
        .post(a.url("/admin/apps/suspend"))
        .form(&[
            ("csrf_token", csrf_token(&apps).as_str()),
            ("client_id", demo.client_id.as_str()),
            ("reason", "multi-node test"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", cluster.logs());

    // B refuses the app at once, and its token no longer works anywhere.
    let r = grant(b).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = api()
        .post(b.url("/oauth/introspect"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a suspended app cannot introspect"
    );
    // Restored on B, it gets tokens on A again.
    let apps = page(&http, b, "/admin/apps").await;
    let r = http
        .post(b.url("/admin/apps/restore"))
        .form(&[
            ("csrf_token", csrf_token(&apps).as_str()),
            ("client_id", demo.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(grant(a).await.unwrap().status(), StatusCode::OK);
    // What the suspension revoked stays revoked.
    let r = api()
        .post(a.url("/oauth/introspect"))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["active"], false, "{body}");
}

/// One sign-in attempt on `node` from a fresh browser: its status.
async fn sign_in_on(node: &Server, username: &str, password: &str) -> StatusCode {
    let http = browser();
    let page = http
        .get(node.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    http.post(node.url("/login"))
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf_token", &csrf_token(&page)),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_or_a_client_block_set_on_one_node_holds_on_the_other() {
    // Three failures lock a username, and three block a client, so the
    // test runs on the real clock without waiting for the slow-downs.
    let Some(cluster) = Cluster::start_with(
        "a_lock_or_a_client_block_set_on_one_node_holds_on_the_other",
        2,
        &[
            ("HEALTHGATE_THROTTLE__SIGN_IN_LOCK_AFTER", "3"),
            ("HEALTHGATE_THROTTLE__CLIENT_FAILURE_LIMIT", "3"),
        ],
    )
    .await
    else {
        return;
    };
    let (a, b) = (cluster.a(), cluster.b());
    let demo = &cluster.demo;

    // Failures on A and B count together; the lock holds on both, even
    // for the right password.
    for node in [a, b, a] {
        assert_eq!(
            sign_in_on(node, USER, "not the password").await,
            StatusCode::UNAUTHORIZED
        );
    }
    for node in [b, a] {
        assert_eq!(
            sign_in_on(node, USER, demo.password_of(USER)).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            cluster.logs()
        );
    }

    // A client blocked by failures on A is refused on B, which never saw
    // a failure: B learns it from the database within a couple of seconds.
    let token_on = |node: &Server, secret: &str| {
        let (url, id, secret) = (
            node.url("/oauth/token"),
            demo.client_id.clone(),
            secret.to_owned(),
        );
        async move {
            api()
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        token_on(b, &demo.client_secret).await,
        StatusCode::OK,
        "before the guessing"
    );
    for _ in 0..3 {
        assert_eq!(token_on(a, "guessed").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        token_on(a, &demo.client_secret).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let mut refused_on_b = false;
    for _ in 0..50 {
        if token_on(b, &demo.client_secret).await == StatusCode::TOO_MANY_REQUESTS {
            refused_on_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused_on_b,
        "B still serves the blocked client\n{}",
        cluster.logs()
    );
}

/// The directory's review across nodes (issue 13, item 6): an app an
/// operator unlists on A leaves B's directory at once; asked again with
/// the CLI and approved in B's console, A lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_reviewed_on_one_node_holds_on_the_other() {
    let Some(cluster) =
        Cluster::start("a_listing_reviewed_on_one_node_holds_on_the_other", 2).await
    else {
        return;
    };
    let (a, b, demo) = (cluster.a(), cluster.b(), &cluster.demo);
    // The demo's admin administers the practice and is an operator.
    let http = browser();
    let login = page(&http, a, "/login").await;
    let r = http
        .post(a.url("/login"))
        .form(&form_of(
            &login,
            &[
                ("username", "admin.demo"),
                ("password", demo.password_of("admin.demo")),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let listed = |node: &'static str| {
        let http = http.clone();
        let server = if node == "a" { a } else { b };
        async move {
            page(&http, server, "/integrations")
                .await
                .contains("Demo Partner App")
        }
    };
    assert!(listed("b").await, "seeded as listed");

    // Unlisted in A's console, with a reason.
    let confirm = page(
        &http,
        a,
        &format!("/admin/directory/unlist?client_id={}", demo.client_id),
    )
    .await;
    let r = http
        .post(a.url("/admin/directory/unlist"))
        .form(&form_of(&confirm, &[("reason", "multi-node review")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", cluster.logs());
    assert!(!listed("b").await, "B's directory no longer lists it");

    // Asked again from the command line, approved in B's console.
    let out = crate::support::output(cluster._sandbox.command(&[
        "--database-url",
        &cluster._schema.url(),
        "client",
        "update",
        &demo.client_id,
        "--publish",
        "--json",
    ]))
    .json();
    assert_eq!(out["listing"]["state"], "requested");
    assert!(!listed("a").await);
    let review = page(&http, b, "/admin/directory").await;
    let card = &review[review
        .find(&format!("id=\"app-{}\"", demo.client_id))
        .expect("the request on B")..];
    let fields: Vec<(String, String)> = hidden_inputs(card)
        .into_iter()
        .filter(|(k, _)| ["csrf_token", "client_id", "reviewed"].contains(&k.as_str()))
        .take(3)
        .collect();
    let r = http
        .post(b.url("/admin/directory/approve"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", cluster.logs());
    assert!(
        location(&r).as_str().contains("done=approved"),
        "{}",
        location(&r)
    );
    assert!(listed("a").await, "A lists it once B approved it");
}

const SMART: &[(&str, &str)] = &[
    (
        "HEALTHGATE_SMART__FHIR_BASE_URLS",
        "[\"https://fhir.example.com/r4\"]",
    ),
    ("HEALTHGATE_THROTTLE__API_PER_MINUTE", "0"),
];

impl Cluster {
    /// Runs the binary's admin command `args` on the cluster's database,
    /// with `env`, and parses its JSON.
    fn admin(&self, env: &[(&str, &str)], args: &[&str]) -> Value {
        let url = self._schema.url();
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        all.push("--json");
        let mut cmd = self._sandbox.command(&all);
        cmd.envs(env.iter().copied());
        crate::support::output(cmd).json()
    }
}

/// SMART across nodes: an EHR launch made on A is used by an authorization
/// on B and gives its context to a code exchanged on A; a Backend Services
/// assertion accepted by A is a replay on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_smart_launch_an_assertion_a_dpop_proof_and_a_pushed_request_hold_across_nodes() {
    let Some(cluster) = Cluster::start_with(
        "a_smart_launch_an_assertion_a_dpop_proof_and_a_pushed_request_hold_across_nodes",
        2,
        SMART,
    )
    .await
    else {
        return;
    };
    let (a, b, demo) = (cluster.a(), cluster.b(), &cluster.demo);
    let http = api();
    let launcher = cluster.admin(
        SMART,
        &[
            "client",
            "create",
            "--name",
            "The EHR",
            "--redirect-uri",
            "https://ehr.example/cb",
            "--scope",
            "openid",
            "--smart-launcher",
        ],
    );
    let app = cluster.admin(
        SMART,
        &[
            "client",
            "create",
            "--name",
            "Growth charts",
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "launch patient/*.rs",
            "--launch-url",
            "https://app.example/launch",
        ],
    );
    let app_id = str_field(&app, "client_id");
    let r = http
        .post(a.url("/api/v1/smart/launches"))
        .basic_auth(
            str_field(&launcher, "client_id"),
            Some(str_field(&launcher, "client_secret")),
        )
        .json(&serde_json::json!({ "client_id": app_id, "user": USER, "patient": "123" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", cluster.logs());
    let launch = str_field(&r.json::<Value>().await.unwrap(), "launch");
    // The app, opened with the launch, is authorized on B.
    let mut authorize = reqwest::Url::parse(&b.url("/oauth/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &app_id)
        .append_pair("redirect_uri", "https://app.example/cb")
        .append_pair("scope", "launch patient/*.rs")
        .append_pair("aud", "https://fhir.example.com/r4")
        .append_pair("launch", &launch)
        .append_pair("state", "s");
    let back =
        flow::authorize_in_browser(b, authorize.as_str(), USER, demo.password_of(USER), "allow")
            .await;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {back}\n{}", cluster.logs()));
    let r = http
        .post(a.url("/oauth/token"))
        .basic_auth(&app_id, Some(str_field(&app, "client_secret")))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "https://app.example/cb"),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["patient"], "123", "{body}\n{}", cluster.logs());

    // Backend Services: one assertion, accepted on A, a replay on B.
    let (pkcs8, public) =
        healthgate_core::jose::generate(healthgate_core::jose::Alg::Es256, "k1").unwrap();
    let jwks = cluster._sandbox.write(
        "jwks.json",
        &serde_json::json!({ "keys": [public] }).to_string(),
    );
    let service = cluster.admin(
        SMART,
        &[
            "client",
            "create",
            "--name",
            "Population health",
            "--scope",
            "system/Observation.rs",
            "--jwks",
            jwks.to_str().unwrap(),
        ],
    );
    let service_id = str_field(&service, "client_id");
    let key = healthgate_core::jose::SigningKey::from_pkcs8(
        healthgate_core::jose::Alg::Es256,
        "k1",
        &pkcs8,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let assertion = key
        .sign(
            "JWT",
            &serde_json::json!({
                "iss": service_id, "sub": service_id, "aud": format!("{}/oauth/token", cluster.issuer),
                "exp": now + 240, "jti": "once-only",
            }),
        )
        .unwrap();
    let ask = |node: &Server| {
        http.post(node.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "system/Observation.rs"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
    };
    let r = ask(a).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", cluster.logs());
    let r = ask(b).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error_description"].as_str().unwrap().contains("jti"),
        "{body}"
    );

    // DPoP (RFC 9449 §11.1): one proof, accepted on A, a replay on B; the
    // bound token is then taken on B with a fresh proof by the same key.
    let partner = cluster.admin(
        SMART,
        &[
            "client",
            "create",
            "--name",
            "Partner",
            "--redirect-uri",
            "https://partner.example/cb",
            "--scope",
            "profile_read",
        ],
    );
    let (partner_id, partner_secret) = (
        str_field(&partner, "client_id"),
        str_field(&partner, "client_secret"),
    );
    let (dpop_key, _) = healthgate_core::client_assertion::ClientKey::generate().unwrap();
    let token_url = format!("{}/oauth/token", cluster.issuer);
    let proof = dpop_key.dpop_proof("POST", &token_url, now, None).unwrap();
    let ask = |node: &Server| {
        http.post(node.url("/oauth/token"))
            .basic_auth(&partner_id, Some(&partner_secret))
            .header("DPoP", &proof)
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let r = ask(a).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", cluster.logs());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    let r = ask(b).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let refused: Value = r.json().await.unwrap();
    assert_eq!(refused["error"], "invalid_dpop_proof", "{refused}");
    let access = str_field(&body, "access_token");
    let rs = cluster.admin(
        SMART,
        &[
            "client",
            "create",
            "--name",
            "API",
            "--redirect-uri",
            "https://api.example/cb",
            "--scope",
            "profile_read",
            "--resource-server",
        ],
    );
    let seen: Value = http
        .post(b.url("/oauth/introspect"))
        .basic_auth(
            str_field(&rs, "client_id"),
            Some(str_field(&rs, "client_secret")),
        )
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["token_type"], "DPoP", "{seen}");
    assert_eq!(
        seen["cnf"]["jkt"].as_str(),
        healthgate_core::dpop::thumbprint(&dpop_key.public_jwk("")).as_deref()
    );

    // PAR (RFC 9126): a request pushed to A is used on B, once.
    let r = http
        .post(a.url("/oauth/par"))
        .basic_auth(&partner_id, Some(&partner_secret))
        .form(&[
            ("response_type", "code"),
            ("redirect_uri", "https://partner.example/cb"),
            ("scope", "profile_read"),
            ("state", "pushed"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", cluster.logs());
    let request_uri = str_field(&r.json::<Value>().await.unwrap(), "request_uri");
    let mut authorize = reqwest::Url::parse(&b.url("/oauth/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", &partner_id)
        .append_pair("request_uri", &request_uri);
    let back =
        flow::authorize_in_browser(b, authorize.as_str(), USER, demo.password_of(USER), "allow")
            .await;
    let query: std::collections::HashMap<String, String> =
        back.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("state").map(String::as_str),
        Some("pushed"),
        "{back}"
    );
    assert!(query.contains_key("code"), "{back}\n{}", cluster.logs());
    let again = http
        .get(authorize.as_str().replace(&b.url(""), &a.url("")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::BAD_REQUEST,
        "used on B, refused on A"
    );
}
