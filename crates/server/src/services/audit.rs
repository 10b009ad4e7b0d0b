//! Archiving the audit trail: what `healthgate audit archive` and the
//! retention job (`[audit]`, `jobs::archive`) share.

use std::path::Path;

use healthgate_store::{Archived, StoreError};

use crate::state::AppState;

/// Seals every event appended so far, then moves the sealed events appended
/// before `before` (epoch seconds) to a new segment in `dir` and deletes
/// them from the database (`Store::archive_events`). `None`: nothing to
/// archive.
pub async fn archive(
    state: &AppState,
    before: i64,
    dir: &Path,
) -> Result<Option<Archived>, StoreError> {
    while state.store.seal_events(1000).await? > 0 {}
    state.store.archive_events(before, dir, state.now()).await
}
