//! Routes together with the paths they serve, so what belongs to healthgate
//! (and so is closed to a profile's extra paths) is read from the routes
//! themselves, never from a list kept beside them.

use axum::Router;
use axum::routing::MethodRouter;

use crate::state::AppState;

/// A router and every path it serves. Each area's `routes()` builds one; the
/// standard routes merge them, and `crate::validate` reads their paths.
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    /// Serves `path` (axum's syntax: `{name}` is one segment) with `handler`.
    pub fn route(mut self, path: &'static str, handler: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, handler);
        self.paths.push(path);
        self
    }

    /// Serves another area's routes beside these.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    /// Every path served, in the order the routes were added.
    pub fn paths(&self) -> &[&'static str] {
        &self.paths
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
