//! Helpers shared by the tests: a sandbox directory per test, running the
//! real `healthgate` binary in it, and a guard that never leaves a server
//! process behind.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_healthgate");

/// Where the binary puts its SQLite database by default, relative to its
/// working directory.
pub const DATA_DIR: &str = "healthgate-data";
pub const DB_FILE: &str = "healthgate-data/healthgate.db";

/// A port nobody listens on. Ports already handed out by this process are
/// not handed out again, so tests running in parallel do not collide.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts success and parses standard output as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, Some(0), "command failed: {self:#?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts the command failed with `code`, explaining why in exactly one
    /// `healthgate: …` line on standard error, and returns that line.
    pub fn one_line_failure(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "{self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "want one line on stderr: {self:#?}");
        assert!(lines[0].starts_with("healthgate: "), "{self:#?}");
        assert!(lines[0].len() > "healthgate: ".len() + 10, "{self:#?}");
        lines[0]
    }
}

/// A temporary working directory for one test; the binary's default
/// database lands in it.
pub struct Sandbox {
    dir: TempDir,
    logs: AtomicUsize,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("healthgate-it-")
                .tempdir()
                .expect("create a temporary directory"),
            logs: AtomicUsize::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file in the sandbox and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write a file in the sandbox");
        path
    }

    /// The binary with `args`, run in the sandbox, with none of the test
    /// runner's `HEALTHGATE_*` or `RUST_LOG` variables leaking in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.path()).args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HEALTHGATE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
        cmd
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Outcome {
        output(self.command(args))
    }

    /// Registers a confidential app with `client create` (scope
    /// `profile_read`) and returns its client id and secret.
    pub fn create_client(&self, name: &str) -> (String, String) {
        let created = self
            .run(&[
                "client",
                "create",
                "--name",
                name,
                "--redirect-uri",
                "https://app.example/cb",
                "--scope",
                "profile_read",
                "--json",
            ])
            .json();
        let field = |key: &str| created[key].as_str().expect(key).to_owned();
        (field("client_id"), field("client_secret"))
    }

    /// Starts a server from `cmd` (built with [`Sandbox::command`]), which
    /// is expected to listen on `port`. Standard error goes to a file in
    /// the sandbox; standard output is read line by line.
    pub fn spawn(&self, mut cmd: Command, port: u16) -> Server {
        let n = self.logs.fetch_add(1, Ordering::Relaxed);
        let stderr_path = self.path().join(format!("server-{n}.stderr"));
        let stderr = File::create(&stderr_path).expect("create the stderr file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start healthgate");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        // Drains stdout for the whole life of the process, so the server
        // never blocks on (or fails writing to) a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            port,
            stderr_path,
            stdout: rx,
        }
    }

    /// `healthgate serve --bind 127.0.0.1:PORT` plus `extra` arguments.
    pub fn serve(&self, extra: &[&str]) -> Server {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--bind", &bind];
        args.extend_from_slice(extra);
        self.spawn(self.command(&args), port)
    }

    /// The bytes of every file in the data directory (the database, its WAL
    /// and shared-memory files), concatenated.
    pub fn data_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.path().join(DATA_DIR)).expect("read the data dir") {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                all.extend(std::fs::read(&path).expect("read a data file"));
            }
        }
        all
    }
}

pub fn output(mut cmd: Command) -> Outcome {
    let out = cmd.stdin(Stdio::null()).output().expect("run healthgate");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether `haystack` contains `needle` anywhere.
pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A running server process; killed (if still running) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    stderr_path: PathBuf,
    stdout: Receiver<String>,
}

impl Server {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The next line of standard output, waiting up to 30 s (the demo
    /// hashes three passwords before printing).
    pub fn stdout_line(&mut self) -> String {
        match self.stdout.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(e) => panic!(
                "no line on stdout ({e}); exit status {:?}; stderr:\n{}",
                self.child.try_wait(),
                self.stderr()
            ),
        }
    }

    /// Polls `GET /healthz` until it answers 200 "ok"; fails early if the
    /// process exits.
    pub async fn wait_healthy(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("build an HTTP client");
        let url = self.url("/healthz");
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                panic!(
                    "healthgate exited with {status} before it was healthy; stderr:\n{}",
                    self.stderr()
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                assert_eq!(r.text().await.expect("read /healthz"), "ok");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "healthgate did not answer {url} within 10 s; stderr:\n{}",
            self.stderr()
        );
    }

    /// Sends SIGTERM and waits up to 10 s for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "healthgate did not exit within 10 s of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGKILL (no chance to finish anything) and reaps the process.
    pub fn sigkill(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -KILL failed");
        self.child.wait().expect("reap the killed server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An HTTP client that keeps cookies and does not follow redirects, so each
/// step of a flow can be inspected.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build an HTTP client")
}

/// Decodes the entities an HTML-escaping template engine produces.
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of the `csrf_token` hidden input of a page.
pub fn csrf_token(html: &str) -> String {
    const MARK: &str = r#"name="csrf_token" value=""#;
    let start = html
        .find(MARK)
        .unwrap_or_else(|| panic!("no csrf_token in page:\n{html}"))
        + MARK.len();
    let len = html[start..].find('"').expect("closing quote");
    html_unescape(&html[start..start + len])
}

/// Every `<input type="hidden" name=… value=…>` of a page, decoded, in order.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    const MARK: &str = r#"<input type="hidden" name=""#;
    let mut inputs = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(MARK) {
        rest = &rest[i + MARK.len()..];
        let name_end = rest.find('"').expect("end of name");
        let name = html_unescape(&rest[..name_end]);
        rest = rest[name_end..]
            .strip_prefix(r#"" value=""#)
            .expect("value after name");
        let value_end = rest.find('"').expect("end of value");
        inputs.push((name, html_unescape(&rest[..value_end])));
        rest = &rest[value_end..];
    }
    inputs
}

/// The `Location` of a redirect, resolved against `base`.
pub fn location(response: &reqwest::Response) -> reqwest::Url {
    let raw = response
        .headers()
        .get(reqwest::header::LOCATION)
        .unwrap_or_else(|| panic!("no Location on {response:?}"))
        .to_str()
        .expect("ASCII Location");
    response.url().join(raw).expect("a valid Location")
}

/// The value of cookie `name` set by a response, if it sets one.
pub fn set_cookie_value(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[test]
fn helpers_decode_pages() {
    assert_eq!(
        html_unescape("a&amp;b&#x2f;c&#39;d&quot;&lt;&unknown;"),
        "a&b/c'd\"<&unknown;"
    );
    let page = r#"<form><input type="hidden" name="csrf_token" value="hg_csrf_x">
<input type="hidden" name="redirect_uri" value="http:&#x2f;&#x2f;h&#x2f;cb?a=1&amp;b=2">
<input id="username" name="username" type="text"></form>"#;
    assert_eq!(csrf_token(page), "hg_csrf_x");
    assert_eq!(
        hidden_inputs(page),
        vec![
            ("csrf_token".to_owned(), "hg_csrf_x".to_owned()),
            ("redirect_uri".to_owned(), "http://h/cb?a=1&b=2".to_owned()),
        ]
    );
}

/// Load on a server: four clients asking `base`'s token endpoint for
/// client-credentials tokens as the app `id` until [`TokenLoad::stop`],
/// keeping every access token answered, in the order it came.
pub struct TokenLoad {
    pub issued: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TokenLoad {
    pub fn start(base: &str, id: &str, secret: &str) -> Self {
        let issued = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..4)
            .map(|_| {
                let (issued, stop) = (issued.clone(), stop.clone());
                let (url, id, secret) = (
                    format!("{base}/oauth/token"),
                    id.to_owned(),
                    secret.to_owned(),
                );
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    while !stop.load(Ordering::SeqCst) {
                        let r = http
                            .post(&url)
                            .basic_auth(&id, Some(&secret))
                            .form(&[("grant_type", "client_credentials")])
                            .send()
                            .await
                            .expect("token request");
                        assert_eq!(r.status(), reqwest::StatusCode::OK);
                        let body: serde_json::Value = r.json().await.expect("token JSON");
                        let token = body["access_token"].as_str().expect("access_token");
                        issued.lock().unwrap().push(token.to_owned());
                    }
                })
            })
            .collect();
        Self {
            issued,
            stop,
            tasks,
        }
    }

    /// How many tokens have come back so far.
    pub fn count(&self) -> usize {
        self.issued.lock().unwrap().len()
    }

    /// Stops asking and waits for the requests in flight; a load task that
    /// failed fails the test. Returns every token issued.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a load task failed");
        }
        self.issued.lock().unwrap().clone()
    }
}
