//! `/metrics` on the main listener with `metrics_token`, on each backend:
//! the code flow, a refresh and its replay counted by grant type, route and
//! event kind; the database's connections as that backend has them.

use healthgate_server::config::MetricsToken;
use reqwest::StatusCode;

use super::*;

const TOKEN: &str = "metrics-token-metrics-token-metrics-token";

/// The value of the first sample line that starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let r = app
        .http()
        .get(app.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_grants_routes_and_replays_on_each_backend() {
    let app = spawn_app_with(|s| {
        s.metrics_token = Some(MetricsToken::try_from(TOKEN.to_owned()).unwrap());
    })
    .await;
    let before = scrape(&app).await;
    let reuse = "healthgate_events_total{kind=\"token.reuse_detected\"}";
    let reused_before = sample(&before, reuse).expect("every kind from 0");

    let client = app.confidential().await;
    let (_, refresh) = tokens_for(&app, &client, "alice").await;
    let (status, _) = app.refresh(&client, &refresh).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.refresh(&client, &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let text = scrape(&app).await;
    let id = client.id();
    for (series, want) in [
        (
            format!(
                "healthgate_tokens_issued_total{{grant_type=\"authorization_code\",client_id=\"{id}\"}}"
            ),
            1.0,
        ),
        (
            format!(
                "healthgate_tokens_issued_total{{grant_type=\"refresh_token\",client_id=\"{id}\"}}"
            ),
            1.0,
        ),
        (
            "healthgate_http_requests_total{method=\"POST\",route=\"/oauth/token\",status=\"400\"}"
                .to_owned(),
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series} in\n{text}");
    }
    // The events are counted by the process, which other tests share.
    assert!(sample(&text, reuse).unwrap() >= reused_before + 1.0, "{text}");
    // SQLite has a writer connection of its own; PostgreSQL one pool.
    let writer = text.contains("healthgate_db_connections{pool=\"writer\"");
    assert_eq!(
        writer,
        app.state.store.backend() == healthgate_store::Backend::Sqlite,
        "{text}"
    );
    assert!(text.contains("healthgate_db_connections{pool=\"reader\",state=\"idle\"}"));
    assert_eq!(sample(&text, "healthgate_webhook_queue_depth"), Some(0.0));
}
