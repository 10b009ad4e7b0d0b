//! Prometheus metrics: what this node has answered and done since it
//! started, and what its database connections are doing now. Every label
//! takes its values from a small set (route templates, methods, statuses,
//! grant types, registered apps, event kinds, job names): never a token, a
//! user or a raw path.
//!
//! Counted where they happen: requests by the access log, tokens by the
//! token endpoint, webhook attempts and job passes by the workers. Read when
//! scraped: the store's connections and group commits, the events appended
//! (counted by the store, where every event is written), and the webhook
//! queue's depth (one count on the database).

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use healthgate_store::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the Prometheus text format (0.0.4).
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Content-Type` of OpenMetrics text, for a scraper that asks for it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    grant_type: String,
    client_id: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: &'static str,
}

/// The background jobs, by the names `job_pass` is given.
pub const JOBS: [&str; 6] = [
    "cleanup",
    "mail",
    "throttles",
    "webhooks",
    "audit_sealer",
    "audit_archive",
];

/// Request latency buckets, in seconds: 250 µs to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// One node's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Counter>,
    webhook_attempts: Family<OutcomeLabels, Counter>,
    webhook_queue: Gauge,
    job_runs: Family<JobLabels, Counter>,
    job_errors: Family<JobLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a node on `store` (`None`: without the database's,
    /// for tests of the parts that count).
    pub fn new(store: Option<Store>) -> Self {
        let mut registry = Registry::with_prefix("healthgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response, by method and route template",
            latency.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens_issued",
            "Token responses from the token endpoint, by grant type and app",
            tokens.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, failed)",
            webhook_attempts.clone(),
        );
        let webhook_queue = Gauge::default();
        registry.register(
            "webhook_queue_depth",
            "Webhook deliveries waiting to be sent, read when scraped",
            webhook_queue.clone(),
        );
        let job_runs = Family::<JobLabels, Counter>::default();
        registry.register(
            "job_runs",
            "Passes of the background jobs, by job",
            job_runs.clone(),
        );
        let job_errors = Family::<JobLabels, Counter>::default();
        registry.register(
            "job_errors",
            "Passes of the background jobs that failed, by job",
            job_errors.clone(),
        );
        // Every series a dashboard or an alert names exists from the start,
        // at 0, rather than appearing with its first count.
        for job in JOBS {
            let _ = job_runs.get_or_create(&JobLabels { job });
            let _ = job_errors.get_or_create(&JobLabels { job });
        }
        for outcome in ["delivered", "failed"] {
            let _ = webhook_attempts.get_or_create(&OutcomeLabels { outcome });
        }
        registry.register_collector(Box::new(Build));
        registry.register_collector(Box::new(Events));
        if let Some(store) = store {
            registry.register_collector(Box::new(Database(store)));
        }
        Self(Arc::new(Inner {
            registry,
            requests,
            latency,
            tokens,
            webhook_attempts,
            webhook_queue,
            job_runs,
            job_errors,
        }))
    }

    /// A request answered: `route` is the template that matched (`None`
    /// when none did).
    pub fn request(&self, method: &Method, route: Option<&str>, status: u16, took: Duration) {
        let method = method_label(method);
        let route = route.unwrap_or("unmatched").to_owned();
        self.0
            .latency
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.0
            .requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// A token response from the token endpoint (`grant_type` is one it
    /// serves: it is counted only once the grant succeeded).
    pub fn token_issued(&self, grant_type: &str, client_id: &str) {
        self.0
            .tokens
            .get_or_create(&TokenLabels {
                grant_type: grant_type.to_owned(),
                client_id: client_id.to_owned(),
            })
            .inc();
    }

    /// A webhook delivery attempt.
    pub fn webhook_attempt(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.0
            .webhook_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// One pass of a background job.
    pub fn job_pass(&self, job: &'static str, succeeded: bool) {
        self.0.job_runs.get_or_create(&JobLabels { job }).inc();
        if !succeeded {
            self.0.job_errors.get_or_create(&JobLabels { job }).inc();
        }
    }

    pub fn set_webhook_queue_depth(&self, depth: i64) {
        self.0.webhook_queue.set(depth);
    }

    /// Everything, in the Prometheus text format or OpenMetrics.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut text = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &self.0.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.0.registry)
        };
        // Writing to a String cannot fail.
        debug_assert!(encoded.is_ok());
        text
    }
}

/// The method as a label: the standard ones, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `healthgate_build_info{version}`, always 1.
#[derive(Debug)]
struct Build;

impl Collector for Build {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "build_info",
            "The running build: 1, with its version as a label",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(metric.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
    }
}

/// `healthgate_events_total{kind}`: every event this process appended, by
/// kind (sign-ins, their failures, throttles and locks, refresh-token
/// reuse, code replay, …).
#[derive(Debug)]
struct Events;

impl Collector for Events {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "events",
            "Events appended to the audit trail by this process, by kind",
            None,
            MetricType::Counter,
        )?;
        for (kind, count) in healthgate_store::events_appended() {
            ConstCounter::new(count).encode(metric.encode_family(&[("kind", kind.as_str())])?)?;
        }
        Ok(())
    }
}

/// The database connections and the group commit, read when scraped.
#[derive(Debug)]
struct Database(Store);

impl Collector for Database {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = self.0.pool_use();
        let mut pools = vec![("reader", now.reader)];
        pools.extend(now.writer.map(|w| ("writer", w)));
        let mut metric = encoder.encode_descriptor(
            "db_connections",
            "Database connections open, by pool (reader; writer on SQLite) and state (busy, idle)",
            None,
            MetricType::Gauge,
        )?;
        for (pool, c) in pools {
            let busy = i64::from(c.open.saturating_sub(c.idle));
            for (state, n) in [("busy", busy), ("idle", i64::from(c.idle))] {
                ConstGauge::new(n)
                    .encode(metric.encode_family(&[("pool", pool), ("state", state)])?)?;
            }
        }
        let commits = now.group_commits;
        let queued = i64::try_from(commits.queued).unwrap_or(i64::MAX);
        single(
            &mut encoder,
            "db_writes_queued",
            "Grant writes waiting for the group commit",
            ConstGauge::new(queued),
        )?;
        single(
            &mut encoder,
            "db_group_commits",
            "Transactions the group commit has committed",
            ConstCounter::new(commits.commits),
        )?;
        single(
            &mut encoder,
            "db_group_commit_writes",
            "Grant writes the group commit has applied",
            ConstCounter::new(commits.writes),
        )?;
        single(
            &mut encoder,
            "db_group_commit_seconds",
            "Time the group commit has spent applying and committing (divide by commits for the mean)",
            ConstCounter::new(commits.seconds),
        )?;
        Ok(())
    }
}

/// One value without labels, under `name`.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_type = value.metric_type();
    value.encode(encoder.encode_descriptor(name, help, None, metric_type)?)
}
