//! `/metrics`, scraped as Prometheus would while tokens are being issued,
//! and read by the Prometheus project's own Python parsers (the classic text
//! format and, when asked for, strict OpenMetrics).

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Sandbox, TokenLoad, free_port};

/// One sample as the parser read it: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses a scrape with `prometheus_client` (installed by `.ci/run` into
/// `.ci/python`): every sample, after the parser accepted the whole text.
/// `None` when the parser is not installed.
fn parse(body: &str, openmetrics: bool) -> Option<Vec<Sample>> {
    use std::io::Write;
    let installed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/python");
    let script = "\
import json, sys
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as strict
parse = strict if sys.argv[1] == 'openmetrics' else classic
print(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))
";
    let mut child = std::process::Command::new("python3")
        .env("PYTHONPATH", installed)
        .args([
            "-c",
            script,
            if openmetrics { "openmetrics" } else { "text" },
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write the scrape");
    let out = child.wait_with_output().expect("python3 ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'prometheus_client'") {
        eprintln!("prometheus_client is not installed (.ci/run installs it): skipped");
        return None;
    }
    assert!(
        out.status.success(),
        "the parser refused the scrape: {stderr}\n{body}"
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    Some(
        samples
            .into_iter()
            .map(|(name, labels, value)| Sample {
                name,
                labels,
                value,
            })
            .collect(),
    )
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(url: &str, openmetrics: bool) -> (String, String) {
    let mut request = reqwest::Client::new().get(url);
    if openmetrics {
        request = request.header("accept", "application/openmetrics-text; version=1.0.0");
    }
    let r = request.send().await.expect("scrape");
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_listener_parse_under_load_and_add_up() {
    let sandbox = Sandbox::new();
    let (id, secret) = sandbox.create_client("Metrics App");
    let metrics_port = free_port();
    let config = sandbox.write(
        "healthgate.toml",
        // The load comes from one address: no per-address rate.
        &format!(
            "metrics_bind = \"127.0.0.1:{metrics_port}\"\nwebhook_poll_interval = 1\n[throttle]\napi_per_minute = 0\n"
        ),
    );
    let mut server = sandbox.serve(&["--config", config.to_str().unwrap()]);
    server.wait_healthy().await;
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");

    // One refused client authentication, one route no one serves.
    let r = reqwest::Client::new()
        .post(server.url("/oauth/token"))
        .basic_auth(&id, Some("not-the-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reqwest::get(server.url("/no/such/page")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let load = TokenLoad::start(&server.base(), &id, &secret);
    for round in 0..6 {
        let openmetrics = round % 2 == 1;
        let (content_type, body) = scrape(&url, openmetrics).await;
        if openmetrics {
            assert!(
                content_type.starts_with("application/openmetrics-text"),
                "{content_type}"
            );
            assert!(body.ends_with("# EOF\n"), "{body}");
        } else {
            assert!(
                content_type.starts_with("text/plain; version=0.0.4"),
                "{content_type}"
            );
        }
        if parse(&body, openmetrics).is_none() {
            load.stop().await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let issued = load.stop().await.len() as u64;
    // Let the webhook worker pass at least once.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(issued > 20, "the load issued only {issued} tokens");

    let (_, body) = scrape(&url, false).await;
    let samples = parse(&body, false).expect("parsed before");
    let token = [
        ("grant_type", "client_credentials"),
        ("client_id", id.as_str()),
    ];
    assert_eq!(
        value(&samples, "healthgate_tokens_issued_total", &token),
        Some(issued as f64),
        "{body}"
    );
    let answered = value(
        &samples,
        "healthgate_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/oauth/token"),
            ("status", "200"),
        ],
    );
    assert_eq!(answered, Some(issued as f64), "{body}");
    // Every request to the route is in its latency histogram (the 401 too).
    let route = [("method", "POST"), ("route", "/oauth/token")];
    assert_eq!(
        value(
            &samples,
            "healthgate_http_request_duration_seconds_count",
            &route
        ),
        Some(issued as f64 + 1.0),
        "{body}"
    );
    let le_inf = [
        ("method", "POST"),
        ("route", "/oauth/token"),
        ("le", "+Inf"),
    ];
    assert_eq!(
        value(
            &samples,
            "healthgate_http_request_duration_seconds_bucket",
            &le_inf
        ),
        Some(issued as f64 + 1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &samples,
            "healthgate_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &samples,
            "healthgate_events_total",
            &[("kind", "client.authentication_failed")]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &samples,
            "healthgate_events_total",
            &[("kind", "token.issued")]
        ),
        Some(issued as f64),
        "{body}"
    );
    assert_eq!(
        value(
            &samples,
            "healthgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &samples,
            "healthgate_job_runs_total",
            &[("job", "webhooks")]
        ) >= Some(1.0)
    );
    assert_eq!(
        value(&samples, "healthgate_webhook_queue_depth", &[]),
        Some(0.0)
    );
    let commits = value(&samples, "healthgate_db_group_commits_total", &[]).unwrap();
    let writes = value(&samples, "healthgate_db_group_commit_writes_total", &[]).unwrap();
    assert!(
        commits >= 1.0 && writes >= issued as f64 && writes >= commits,
        "{body}"
    );
    assert!(
        value(
            &samples,
            "healthgate_db_connections",
            &[("pool", "writer"), ("state", "idle")]
        )
        .is_some()
    );
    // The sample dashboard asks only for metrics there are.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana-dashboard.json"),
    )
    .unwrap();
    let asked: std::collections::BTreeSet<&str> = dashboard
        .match_indices("healthgate_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    assert!(asked.len() >= 10, "{asked:?}");
    for name in asked {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "the dashboard asks for {name}"
        );
    }
    // No secret or token is ever a label.
    assert!(!body.contains(&secret), "{body}");
    assert!(!body.contains("hg_at_"), "{body}");

    // Not on the main listener: metrics_bind took them off it.
    let r = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn metrics_on_the_main_listener_need_the_token() {
    let sandbox = Sandbox::new();
    let token = "m".repeat(16) + &"7".repeat(24);
    let config = sandbox.write("healthgate.toml", &format!("metrics_token = \"{token}\"\n"));
    let mut server = sandbox.serve(&["--config", config.to_str().unwrap()]);
    server.wait_healthy().await;
    let http = reqwest::Client::new();
    for presented in [None, Some("wrong-token-wrong-token-wrong-token")] {
        let mut request = http.get(server.url("/metrics"));
        if let Some(p) = presented {
            request = request.bearer_auth(p);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"metrics\"");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    let r = http
        .get(server.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    if let Some(samples) = parse(&body, false) {
        // The two refusals were requests like any other.
        assert_eq!(
            value(
                &samples,
                "healthgate_http_requests_total",
                &[("route", "/metrics"), ("status", "401")]
            ),
            Some(2.0),
            "{body}"
        );
    }
    assert!(!server.stderr().contains(&token));
}
