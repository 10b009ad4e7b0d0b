//! The healthgate HTTP server: the OAuth endpoints, the pages people see, the
//! resource API, and the administrative operations the CLI shares.
//!
//! A handler parses the request, applies the rules of `healthgate-core`,
//! reads and writes through `healthgate-store`, and renders.

pub mod api;
pub mod config;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod oauth;
pub mod services;
pub mod state;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use healthgate_core::Clock;
use healthgate_core::token::TokenPolicy;
use healthgate_store::{PoolConfig, Store, StoreError};
use tokio::net::TcpListener;

pub use config::Settings;
use http::routes::Routes;
pub use state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] config::InvalidSetting),
    #[error("cannot open the database: {0}")]
    Store(StoreError),
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Every problem of settings that each parse but do not fit together
/// ([`Settings::problems`]), of a profile's paths that clash with ones the
/// standard routes serve (which the router could not hold, or which would
/// answer for the wrong endpoint), and of an `smtp.ca_file` that cannot be
/// read. Empty when a server can start with them.
pub fn problems(settings: &Settings) -> Vec<config::InvalidSetting> {
    let mut problems = settings.problems();
    problems.extend(settings.profile.clashes(standard_routes().paths()));
    if let Err(e) = services::mail::Mailer::new(settings) {
        problems.push(config::InvalidSetting {
            key: "smtp.ca_file".to_owned(),
            reason: e.to_string(),
        });
    }
    problems
}

/// Refuses settings with their first problem ([`problems`]); derives the
/// token policy.
pub fn validate(settings: &Settings) -> Result<TokenPolicy, config::InvalidSetting> {
    match problems(settings).into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(settings.token_policy()),
    }
}

/// Opens and migrates the database and builds the shared state.
pub async fn open(settings: Settings, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
    let policy = validate(&settings)?;
    let store = Store::connect(
        &settings.database_url,
        PoolConfig {
            max_connections: settings.database_max_connections.get(),
            synchronous: settings.database_synchronous.store(),
            ..PoolConfig::default()
        },
    )
    .await?;
    store.migrate().await?;
    Ok(AppState::new(store, settings, policy, clock, router))
}

/// Every route. A path no route serves, or a method a path does not take,
/// is answered in JSON where machines call and with a page elsewhere
/// (`http::error::no_route`, `wrong_method`).
pub fn router(state: AppState) -> Router {
    profile_routes(&state.settings.profile, standard_routes().into_router())
        .method_not_allowed_fallback(http::error::wrong_method)
        .fallback(http::error::no_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::middleware::address_rate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::middleware::error_pages,
        ))
        .layer(axum::middleware::from_fn_with_state(
            http::middleware::content_security_policy(&state.settings),
            http::middleware::security_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            http::middleware::AccessLog::of(&state),
            http::middleware::access_log,
        ))
        .with_state(state)
}

/// The extra paths a seed-platform profile adds to the standard ones
/// (`validate` has made sure none clashes with them).
fn profile_routes(
    profile: &config::ProfileSettings,
    mut router: Router<AppState>,
) -> Router<AppState> {
    for path in &profile.authorize_paths {
        router = router.route(
            path.as_str(),
            get(oauth::authorize::get).post(oauth::authorize::post),
        );
    }
    for path in &profile.token_paths {
        router = router.route(
            path.as_str(),
            post(oauth::token::post).options(oauth::token::preflight),
        );
    }
    for path in &profile.revoke_paths {
        router = router.route(path.as_str(), post(oauth::revoke::post));
    }
    for path in &profile.user_paths {
        router = router.route(path.as_str(), post(api::users::create));
    }
    router
}

/// The standard routes, under their canonical paths: each area's own.
fn standard_routes() -> Routes {
    oauth::routes().merge(api::routes()).merge(web::routes())
}

/// Serves until `shutdown` resolves, then finishes requests in flight and
/// closes the database.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let cleanup = jobs::cleanup::spawn(state.clone());
    let delivery = jobs::webhooks::spawn(state.clone());
    let sealer = jobs::webhooks::spawn_sealer(state.clone());
    let throttles = jobs::throttles::spawn(state.clone());
    let mail = jobs::mail::spawn(state.clone());
    let archive = jobs::archive::spawn(state.clone());
    let metrics = match state.settings.metrics_bind {
        Some(address) => Some(serve_metrics(address, state.clone()).await?),
        None => None,
    };
    let app = router(state);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    for job in [cleanup, delivery, mail, archive, metrics]
        .into_iter()
        .flatten()
    {
        job.abort();
    }
    sealer.abort();
    throttles.abort();
    store.close().await;
    served?;
    Ok(())
}

/// Serves `/metrics` alone on `address` (`metrics_bind`), to whoever
/// reaches it: the address is the operator's to keep private.
async fn serve_metrics(
    address: std::net::SocketAddr,
    state: AppState,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {address} for metrics (metrics_bind): {e}"),
        )
    })?;
    tracing::info!(%address, "metrics on http://{address}/metrics");
    let app = Router::new()
        .route("/metrics", get(api::metrics::on_own_listener))
        .with_state(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request path that `route` (axum's syntax) serves.
    fn served_by(route: &str) -> String {
        route
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_path_healthgate_serves_is_closed_to_profiles() {
        let standard = standard_routes();
        let taken = standard.paths();
        for area in ["/admin", "/developers", "/playground", "/apps/{id}/photo"] {
            assert!(taken.contains(&area), "{area} is not among {taken:?}");
        }
        for route in taken.iter().filter(|r| **r != "/") {
            for path in [served_by(route), format!("{}/", served_by(route))] {
                for kind in 0..4 {
                    let mut s = Settings::default();
                    let (key, list) = match kind {
                        0 => ("profile.authorize_paths", &mut s.profile.authorize_paths),
                        1 => ("profile.token_paths", &mut s.profile.token_paths),
                        2 => ("profile.revoke_paths", &mut s.profile.revoke_paths),
                        _ => ("profile.user_paths", &mut s.profile.user_paths),
                    };
                    list.push(path.parse().expect("a plain path"));
                    let e = validate(&s).expect_err(&path);
                    assert_eq!(e.key, key, "{path}: {e}");
                    assert!(e.reason.contains(&format!("{path:?}")), "{e}");
                }
            }
        }
    }

    /// Every route machines call is in the API description, with a path
    /// the description really has; the exceptions are named here.
    #[test]
    fn the_api_description_covers_every_machine_route() {
        // A person's browser goes here; Prometheus reads its own format.
        const NOT_JSON: &[&str] = &["/oauth/authorize", "/metrics"];
        let s = Settings::default();
        let doc = api::openapi::document(&s, "https://id.example.org");
        let paths = doc["paths"].as_object().expect("paths");
        for route in standard_routes().paths() {
            let machine = http::error::machine_path(&s, route)
                || ["/healthz", "/readyz", "/openapi.json"].contains(route);
            if machine && !NOT_JSON.contains(route) {
                assert!(paths.contains_key(*route), "{route} is not described");
            }
        }
        let served = standard_routes();
        for path in paths.keys() {
            assert!(
                served.paths().contains(&path.as_str()),
                "{path} is described but not served"
            );
        }
    }

    #[test]
    fn accepted_profile_paths_build_a_router() {
        let paths = |list: &[&str]| -> Vec<config::ProfilePath> {
            list.iter().map(|p| p.parse().expect(p)).collect()
        };
        let mut s = Settings::default();
        s.profile.authorize_paths = paths(&["/o/authorize/"]);
        s.profile.token_paths = paths(&["/o/token/", "/api/oauth/token"]);
        s.profile.revoke_paths = paths(&["/api/oauth/revoke"]);
        s.profile.user_paths = paths(&["/api/v2.1/users.json", "/apps.json"]);
        validate(&s).unwrap();
        let _router = profile_routes(&s.profile, standard_routes().into_router());
    }
}

#[cfg(test)]
mod architecture_test;
