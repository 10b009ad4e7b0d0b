//! The JWK Sets of apps that registered a URL for their `private_key_jwt`
//! keys (SMART Backend Services): fetched through the one outbound client
//! (public addresses only; loopback only under `allow_http_webhooks`, the
//! development switch), kept per node no longer than the answer's
//! `Cache-Control: max-age` says (five minutes without one, a day at most,
//! not at all with `no-store` or `no-cache`), and fetched again when an
//! assertion names a key the copy lacks (at most every ten seconds per
//! URL, so that made-up `kid`s cannot turn healthgate into a fetcher).
//! A cache that never decides: every assertion is still verified.

use axum::http::header;
use serde_json::Value;

use crate::config::Settings;
use crate::state::AppState;
pub use crate::state::Want;

/// How long a JWK Set is kept when its answer says nothing.
const DEFAULT_MAX_AGE: i64 = 300;
/// The longest a JWK Set is kept, whatever its answer says.
const LONGEST_MAX_AGE: i64 = 86_400;
/// The largest JWK Set read.
const MAX_BYTES: usize = 64 * 1024;

/// The JWK Set at `url`, from this node's copy (`AppState::jwks`) when
/// `want` allows, else fetched and kept; an error says, for the client, why
/// none could be had.
pub async fn jwk_set(state: &AppState, url: &str, want: Want) -> Result<Value, String> {
    let now = state.now();
    if let Some(set) = state.jwks.copy(url, now, want) {
        return Ok(set);
    }
    let (set, max_age) = fetch(&state.settings, url).await?;
    state.jwks.keep(url, set.clone(), now, max_age);
    Ok(set)
}

/// How long an answer's `Cache-Control` lets it be kept.
fn max_age(cache_control: Option<&str>) -> i64 {
    let Some(value) = cache_control else {
        return DEFAULT_MAX_AGE;
    };
    let mut age = DEFAULT_MAX_AGE;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return 0;
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            age = n.trim_matches('"').parse::<i64>().unwrap_or(0);
        }
    }
    age.clamp(0, LONGEST_MAX_AGE)
}

async fn fetch(settings: &Settings, url: &str) -> Result<(Value, i64), String> {
    let unreachable = |why: &str| format!("the registered JWK Set could not be fetched ({why})");
    let http = crate::services::outbound::http_client(settings.allow_http_webhooks)
        .map_err(|_| unreachable("no HTTP client"))?;
    let mut response = http
        .get(url)
        .header(header::ACCEPT, "application/json, application/jwk-set+json")
        .send()
        .await
        .map_err(|e| unreachable(&crate::services::outbound::describe(&e)))?;
    if !response.status().is_success() {
        return Err(unreachable(&format!("HTTP {}", response.status().as_u16())));
    }
    let age = max_age(
        response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
    );
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unreachable(&crate::services::outbound::describe(&e)))?
    {
        if bytes.len() + chunk.len() > MAX_BYTES {
            return Err(unreachable("larger than 64 KB"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let set: Value = serde_json::from_slice(&bytes).map_err(|_| unreachable("not JSON"))?;
    healthgate_core::client_assertion::check_jwks(&set).map_err(|e| unreachable(&e))?;
    Ok((set, age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_kept_as_long_as_its_answer_says_within_bounds() {
        for (header, age) in [
            (None, DEFAULT_MAX_AGE),
            (Some("max-age=60"), 60),
            (Some("public, max-age=600"), 600),
            (Some("max-age=9999999"), LONGEST_MAX_AGE),
            (Some("no-store"), 0),
            (Some("max-age=60, no-cache"), 0),
            (Some("max-age=oops"), 0),
            (Some("public"), DEFAULT_MAX_AGE),
        ] {
            assert_eq!(max_age(header), age, "{header:?}");
        }
    }
}
