//! An online copy of the SQLite database (`healthgate backup PATH`), taken
//! while a server goes on using it. `VACUUM INTO` reads the database in one
//! read transaction, so the copy holds exactly the commits made before it
//! began and writers are never held up (WAL). The copy is written beside
//! its destination, checked, flushed to disk and only then given its name,
//! so a failed or interrupted backup never leaves a file that looks whole.
//! PostgreSQL has its own tools (`pg_dump`); this refuses it.

use std::path::{Path, PathBuf};

use sqlx::Connection;

use crate::{Backend, Result, Store, StoreError};

impl Store {
    /// Writes a consistent copy of the SQLite database to `to`, a file that
    /// must not exist yet (its directory is made if missing); gives its size
    /// in bytes.
    pub async fn backup_sqlite(&self, to: &Path) -> Result<u64> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::BackupRefused(
                "healthgate backup copies a SQLite database; for PostgreSQL use pg_dump".into(),
            ));
        }
        if to.exists() {
            return Err(StoreError::BackupRefused(format!(
                "{} exists already: name a new file",
                to.display()
            )));
        }
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|cause| StoreError::Directory {
                path: dir.display().to_string(),
                cause,
            })?;
        }
        let partial = partial_of(to)?;
        // What a failed earlier run left (VACUUM INTO refuses a file that
        // has content).
        remove_if_present(&partial)?;
        let copied = self.copy_to(&partial, to).await;
        if copied.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        copied
    }

    async fn copy_to(&self, partial: &Path, to: &Path) -> Result<u64> {
        let partial_name = partial.to_str().ok_or_else(|| {
            StoreError::BackupRefused("the backup path is not valid UTF-8".into())
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(partial_name)
            .execute(&self.reader)
            .await?;
        check_copy(partial_name).await?;
        let io = |what: &str, e: std::io::Error| {
            StoreError::Backup(format!("{what} {}: {e}", partial.display()))
        };
        // VACUUM INTO does not sync what it wrote.
        std::fs::File::open(partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("cannot flush", e))?;
        // A hard link, not a rename: it fails rather than replace a file
        // that appeared at `to` meanwhile.
        std::fs::hard_link(partial, to).map_err(|e| {
            StoreError::Backup(format!("cannot name the copy {}: {e}", to.display()))
        })?;
        std::fs::remove_file(partial).map_err(|e| io("cannot remove", e))?;
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The new name is durable once its directory is.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot flush the directory of", e))?;
        }
        std::fs::metadata(to)
            .map(|m| m.len())
            .map_err(|e| io("cannot read", e))
    }
}

/// `to`'s name with `.partial` appended, in the same directory (so that
/// naming the finished copy is a link within one file system).
fn partial_of(to: &Path) -> Result<PathBuf> {
    let name = to
        .file_name()
        .ok_or_else(|| StoreError::BackupRefused(format!("{} names no file", to.display())))?;
    let mut partial = name.to_os_string();
    partial.push(".partial");
    Ok(to.with_file_name(partial))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Backup(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Opens the copy read-only and runs SQLite's `quick_check` on it.
async fn check_copy(path: &str) -> Result<()> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options).await?;
    let verdict: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(StoreError::Backup(format!(
            "the copy failed SQLite's quick_check: {verdict}"
        )))
    }
}
