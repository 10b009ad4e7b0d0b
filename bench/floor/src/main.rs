//! The durable floor: the least a token endpoint that keeps its tokens must
//! do. `POST /oauth/token` checks the client's HTTP Basic credentials
//! against one configured client, mints a random 32-byte token, inserts its
//! SHA-256 digest as one row into a SQLite file (WAL) and answers only after
//! that row is committed. `GET /healthz` answers when it is ready.
//!
//! Configuration from the environment:
//! - `FLOOR_BIND` (default `127.0.0.1:8099`)
//! - `FLOOR_DATABASE` the SQLite file (default `floor.db`)
//! - `FLOOR_CLIENT_ID`, `FLOOR_CLIENT_SECRET` the one client
//! - `FLOOR_SYNCHRONOUS` `normal` (default, what healthgate uses) or `full`

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

const ACCESS_TTL: i64 = 3600;

#[derive(Clone)]
struct App {
    db: SqlitePool,
    client_id: String,
    secret_digest: [u8; 32],
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: String,
    scope: Option<String>,
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({ "error": code }))).into_response()
}

/// `Some` if the HTTP Basic credentials are the configured client's.
fn authenticate(app: &App, headers: &HeaderMap) -> Option<()> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    (id == app.client_id && digest == app.secret_digest).then_some(())
}

async fn token(
    State(app): State<App>,
    headers: HeaderMap,
    Form(req): Form<TokenRequest>,
) -> Response {
    if authenticate(&app, &headers).is_none() {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if req.grant_type != "client_credentials" {
        return error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let mut raw = [0u8; 32];
    if getrandom::fill(&mut raw).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    }
    let token = hex::encode(raw);
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let scope = req.scope.unwrap_or_default();
    let inserted = sqlx::query(
        "INSERT INTO access_tokens (digest, client_id, scope, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&digest)
    .bind(&app.client_id)
    .bind(&scope)
    .bind(now)
    .bind(now + ACCESS_TTL)
    .execute(&app.db)
    .await;
    if inserted.is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    }
    let mut response = Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TTL,
        "scope": scope,
    }))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-store".parse().expect("a header value"),
    );
    response
}

async fn healthz() -> &'static str {
    "ok"
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = env("FLOOR_BIND", "127.0.0.1:8099");
    let synchronous = match env("FLOOR_SYNCHRONOUS", "normal").as_str() {
        "full" => SqliteSynchronous::Full,
        _ => SqliteSynchronous::Normal,
    };
    let options = SqliteConnectOptions::from_str(&env("FLOOR_DATABASE", "floor.db"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous);
    // SQLite has one writer at a time: one connection serialises the
    // inserts in the process instead of in busy-wait retries.
    let db = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS access_tokens (
            digest TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            scope TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
        )",
    )
    .execute(&db)
    .await?;
    let app = App {
        db,
        client_id: env("FLOOR_CLIENT_ID", "floor-client"),
        secret_digest: Sha256::digest(env("FLOOR_CLIENT_SECRET", "floor-secret").as_bytes()).into(),
    };
    let router = Router::new()
        .route("/oauth/token", post(token))
        .route("/healthz", get(healthz))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
