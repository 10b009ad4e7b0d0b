//! The audit trail over years (`healthgate audit archive`): sealed events up
//! to a chain position are written to a gzip-compressed JSON-lines segment
//! file, checked, and only then deleted from the database in bounded
//! batches, leaving a checkpoint row (`audit_checkpoints`) so the chain in
//! the database continues from it.
//!
//! A segment's first line describes it: its first and last chain positions,
//! the hash the first row links to and the last row's hash, and how many
//! events it holds. Every further line is one event, as stored. A segment is
//! written beside its final name, read back and checked link by link, made
//! durable, and only then named; a name that exists is never replaced. The
//! checkpoint is written before any row is deleted, so an interrupted archive
//! leaves rows the next run deletes, never a gap.
//!
//! Verification walks the database from the last checkpoint in pages (never
//! the whole table at once) and, given the archive folder, every segment and
//! the links between them and to the checkpoints: an edited, missing or
//! extra segment fails it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::events::{EVENT_COLUMNS, LinkFault, event_from_row};
use crate::{Result, Store, StoreError, StoredEvent};

/// The first line's `format`.
const FORMAT: &str = "healthgate-audit-segment/1";
/// Rows read, or deleted, per statement.
const PAGE: i64 = 10_000;

/// One archive: the events it moved to its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The chain position of the segment's last event: the database's chain
    /// continues after it.
    pub through_pos: i64,
    /// That event's hash, which the next position links to.
    pub hash: String,
    pub first_pos: i64,
    /// The hash the segment's first event links to (empty at position 1).
    pub prev_hash: String,
    pub events: i64,
    /// The segment's file name.
    pub segment: String,
    pub at: i64,
}

/// What `archive_events` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub checkpoint: Checkpoint,
    /// The segment written.
    pub path: PathBuf,
    /// Rows deleted from the database (an earlier, interrupted run's too).
    pub deleted: u64,
}

/// What checking the archive folder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Segments checked, and the events in them.
    pub segments: u64,
    pub events: u64,
    /// The first problem: which segment (file name) and what is wrong.
    pub broken: Option<(String, String)>,
}

/// The segment's file name for positions `first..=last`.
fn segment_name(first: i64, last: i64) -> String {
    format!("events-{first:012}-{last:012}.jsonl.gz")
}

/// The folder's `.lock`, locked for this run (released when dropped, or
/// when the process ends however it ends).
fn lease(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| archive_error("cannot open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::ArchiveBusy(dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(archive_error("cannot lock", &path, e)),
    }
}

fn archive_error(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Archive(format!("{what} {}: {e}", path.display()))
}

/// An event as a segment line: every stored column.
fn line_of(e: &StoredEvent) -> String {
    json!({
        "seq": e.seq, "id": e.id, "at": e.at, "kind": e.kind,
        "actor_user_id": e.actor_user_id, "subject": e.subject,
        "client_id": e.client_id, "organization_id": e.organization_id,
        "ip": e.ip, "outcome": e.outcome, "data": e.data,
        "chain_pos": e.chain_pos, "prev_hash": e.prev_hash, "hash": e.hash,
    })
    .to_string()
}

fn event_of_line(line: &str) -> std::result::Result<StoredEvent, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("a line is not JSON: {e}"))?;
    let text = |k: &str| v[k].as_str().map(str::to_owned);
    let int = |k: &str| v[k].as_i64();
    Ok(StoredEvent {
        seq: int("seq").ok_or("a line has no seq")?,
        id: text("id").ok_or("a line has no id")?,
        at: int("at").ok_or("a line has no at")?,
        kind: text("kind").ok_or("a line has no kind")?,
        actor_user_id: text("actor_user_id"),
        subject: text("subject"),
        client_id: text("client_id"),
        organization_id: text("organization_id"),
        ip: text("ip"),
        outcome: text("outcome").ok_or("a line has no outcome")?,
        data: text("data"),
        chain_pos: int("chain_pos"),
        prev_hash: text("prev_hash"),
        hash: text("hash"),
    })
}

/// [`StoredEvent::check_link`], said for a segment.
fn check_link(e: &StoredEvent, pos: i64, prev: &str) -> std::result::Result<String, String> {
    e.check_link(pos, prev).map_err(|fault| match fault {
        LinkFault::Missing => format!("position {pos} is missing (found {:?})", e.chain_pos),
        LinkFault::Unlinked => format!("position {pos} does not link to the one before it"),
        LinkFault::Altered => format!("position {pos} was altered after it was sealed"),
    })
}

/// Reads a segment whole and checks its header and every link; gives its
/// header's (first, last, prev_hash, last_hash, events).
fn check_segment(path: &Path) -> std::result::Result<(i64, i64, String, String, i64), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let header = lines
        .next()
        .ok_or("it is empty")?
        .map_err(|e| format!("cannot read: {e}"))?;
    let h: Value =
        serde_json::from_str(&header).map_err(|_| "its first line is not a segment header")?;
    if h["format"] != FORMAT {
        return Err(format!("its first line is not a {FORMAT} header"));
    }
    let (Some(first), Some(last), Some(prev), Some(last_hash), Some(events)) = (
        h["first_pos"].as_i64(),
        h["last_pos"].as_i64(),
        h["prev_hash"].as_str(),
        h["last_hash"].as_str(),
        h["events"].as_i64(),
    ) else {
        return Err("its header is incomplete".into());
    };
    let mut pos = first;
    let mut prev_hash = prev.to_owned();
    for line in lines {
        let line = line.map_err(|e| format!("cannot read: {e}"))?;
        let event = event_of_line(&line)?;
        prev_hash = check_link(&event, pos, &prev_hash)?;
        pos += 1;
    }
    if pos != last + 1 || events != last - first + 1 {
        return Err(format!(
            "it holds positions {first} to {} but says {first} to {last}",
            pos - 1
        ));
    }
    if prev_hash != last_hash {
        return Err("its last hash is not its last event's".into());
    }
    Ok((first, last, prev.to_owned(), last_hash.to_owned(), events))
}

impl Store {
    /// Every archive's checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let rows: Vec<(i64, String, i64, String, i64, String, i64)> = sqlx::query_as(
            "SELECT through_pos, hash, first_pos, prev_hash, events, segment, at
             FROM audit_checkpoints ORDER BY through_pos",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(through_pos, hash, first_pos, prev_hash, events, segment, at)| Checkpoint {
                    through_pos,
                    hash,
                    first_pos,
                    prev_hash,
                    events,
                    segment,
                    at,
                },
            )
            .collect())
    }

    /// The last checkpoint's position and hash: where the database's chain
    /// starts from (`(0, "")` before any archive).
    pub(crate) async fn chain_start(&self) -> Result<(i64, String)> {
        let last: Option<(i64, String)> = sqlx::query_as(
            "SELECT through_pos, hash FROM audit_checkpoints ORDER BY through_pos DESC LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await?;
        Ok(last.unwrap_or((0, String::new())))
    }

    /// Sealed events `after < chain_pos <= through`, at most a page, in order.
    pub(crate) async fn sealed_page(&self, after: i64, through: i64) -> Result<Vec<StoredEvent>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE chain_pos > $1 AND chain_pos <= $2
             ORDER BY chain_pos LIMIT $3"
        ));
        let rows = sqlx::query(sql)
            .bind(after)
            .bind(through)
            .bind(PAGE)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Moves the sealed events appended before `before` (epoch seconds) to
    /// a new segment in `dir`, made if missing, and deletes them from the
    /// database. Seal first: only sealed events are archived. `None` when
    /// there is nothing to archive (rows an interrupted run left are still
    /// deleted). One run at a time per folder: while another holds the
    /// folder's `.lock`, [`StoreError::ArchiveBusy`] and nothing done.
    pub async fn archive_events(
        &self,
        before: i64,
        dir: &Path,
        now: i64,
    ) -> Result<Option<Archived>> {
        std::fs::create_dir_all(dir).map_err(|e| archive_error("cannot create", dir, e))?;
        let _lease = lease(dir)?;
        let (start_after, prev_hash) = self.chain_start().await?;
        let leftovers = self.delete_archived(start_after).await?;
        let through = self.archivable_through(start_after, before).await?;
        if through <= start_after {
            return Ok(None);
        }
        let first = start_after + 1;
        let last_hash: String = sqlx::query_scalar("SELECT hash FROM events WHERE chain_pos = $1")
            .bind(through)
            .fetch_one(&self.reader)
            .await?;
        let name = segment_name(first, through);
        let path = dir.join(&name);
        if path.exists() {
            return Err(StoreError::Archive(format!(
                "{} exists already; it is never replaced",
                path.display()
            )));
        }
        // A name of this run's own: a second archive running at the same
        // time (another node, the CLI beside the retention job) writes its
        // own, and at most one of them gets the segment's name.
        let partial = dir.join(format!(
            "{name}.{}.{}.partial",
            std::process::id(),
            healthgate_core::secret::new_id("run")
        ));
        let written = self
            .write_segment(&partial, first, through, &prev_hash, &last_hash)
            .await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        // Read back what is on disk, then give it its name.
        let checked = tokio::task::spawn_blocking({
            let partial = partial.clone();
            move || check_segment(&partial)
        })
        .await
        .map_err(|e| StoreError::Archive(format!("the check stopped: {e}")))?;
        if let Err(why) = checked {
            let _ = std::fs::remove_file(&partial);
            return Err(StoreError::Archive(format!(
                "the segment written to {} does not check: {why}",
                partial.display()
            )));
        }
        std::fs::hard_link(&partial, &path).map_err(|e| archive_error("cannot name", &path, e))?;
        std::fs::remove_file(&partial).map_err(|e| archive_error("cannot remove", &partial, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| archive_error("cannot flush the directory", dir, e))?;
        let checkpoint = Checkpoint {
            through_pos: through,
            hash: last_hash,
            first_pos: first,
            prev_hash,
            events: through - first + 1,
            segment: name,
            at: now,
        };
        let recorded = sqlx::query(
            "INSERT INTO audit_checkpoints (through_pos, hash, first_pos, prev_hash, events, segment, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(checkpoint.through_pos)
        .bind(&checkpoint.hash)
        .bind(checkpoint.first_pos)
        .bind(&checkpoint.prev_hash)
        .bind(checkpoint.events)
        .bind(&checkpoint.segment)
        .bind(checkpoint.at)
        .execute(&self.writer)
        .await;
        if let Err(e) = recorded {
            // Another archive got there first (another node): its segment
            // stands, this one names nothing and goes.
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        let deleted = leftovers + self.delete_archived(through).await?;
        Ok(Some(Archived {
            checkpoint,
            path,
            deleted,
        }))
    }

    /// The last position whose event, and every one before it, was
    /// appended before `before`: walked forward from `after` in chain order
    /// (events are sealed in the order they were appended), so the cost is
    /// the rows to archive, not the rows to keep.
    async fn archivable_through(&self, after: i64, before: i64) -> Result<i64> {
        let mut through = after;
        loop {
            let page: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT chain_pos, at FROM events WHERE chain_pos > $1 ORDER BY chain_pos LIMIT $2",
            )
            .bind(through)
            .bind(PAGE)
            .fetch_all(&self.reader)
            .await?;
            let full = page.len() as i64 == PAGE;
            for (pos, at) in page {
                if at >= before {
                    return Ok(through);
                }
                through = pos;
            }
            if !full {
                return Ok(through);
            }
        }
    }

    /// Writes positions `first..=last` to `partial`, checking each link as it
    /// goes (a broken chain is not archived), and makes the file durable.
    async fn write_segment(
        &self,
        partial: &Path,
        first: i64,
        last: i64,
        prev_hash: &str,
        last_hash: &str,
    ) -> Result<()> {
        let file = std::fs::File::create(partial)
            .map_err(|e| archive_error("cannot create", partial, e))?;
        let mut out = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let header = json!({
            "format": FORMAT, "first_pos": first, "last_pos": last,
            "prev_hash": prev_hash, "last_hash": last_hash, "events": last - first + 1,
        });
        let mut text = format!("{header}\n");
        let mut prev = prev_hash.to_owned();
        let mut after = first - 1;
        while after < last {
            let page = self.sealed_page(after, last).await?;
            if page.is_empty() {
                return Err(StoreError::Archive(format!(
                    "position {} is missing from the database",
                    after + 1
                )));
            }
            for event in &page {
                prev = check_link(event, after + 1, &prev)
                    .map_err(|why| StoreError::Archive(format!("the chain is broken: {why}")))?;
                after += 1;
                text.push_str(&line_of(event));
                text.push('\n');
            }
            // Compressing is work for a blocking thread, not the runtime's.
            let chunk = std::mem::take(&mut text);
            out =
                tokio::task::spawn_blocking(move || out.write_all(chunk.as_bytes()).map(|()| out))
                    .await
                    .map_err(|e| StoreError::Archive(format!("the writer stopped: {e}")))?
                    .map_err(|e| archive_error("cannot write", partial, e))?;
        }
        let path = partial.to_owned();
        tokio::task::spawn_blocking(move || {
            let file = out.finish()?;
            file.sync_all()
        })
        .await
        .map_err(|e| StoreError::Archive(format!("the writer stopped: {e}")))?
        .map_err(|e| archive_error("cannot finish", &path, e))
    }

    /// Deletes the rows at or before `through` (archived), a page per
    /// transaction so no statement holds the writer long. Gives how many.
    async fn delete_archived(&self, through: i64) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let lowest: Option<i64> =
                sqlx::query_scalar("SELECT MIN(chain_pos) FROM events WHERE chain_pos IS NOT NULL")
                    .fetch_one(&self.reader)
                    .await?;
            let Some(lowest) = lowest.filter(|&p| p <= through) else {
                return Ok(deleted);
            };
            let upto = (lowest + PAGE - 1).min(through);
            deleted += sqlx::query("DELETE FROM events WHERE chain_pos >= $1 AND chain_pos <= $2")
                .bind(lowest)
                .bind(upto)
                .execute(&self.writer)
                .await?
                .rows_affected();
        }
    }
}

/// Checks every segment in `dir` against `checkpoints` (oldest first): each
/// checkpoint's segment is there, whole, and links to the one before it; the
/// first starts the chain; no other segment lies there.
pub fn verify_archive(dir: &Path, checkpoints: &[Checkpoint]) -> Result<ArchiveReport> {
    let mut report = ArchiveReport {
        segments: 0,
        events: 0,
        broken: None,
    };
    let mut expected_prev = String::new();
    let mut expected_first = 1;
    for cp in checkpoints {
        let path = dir.join(&cp.segment);
        let problem = if !path.exists() {
            Some("the segment is missing".to_owned())
        } else {
            match check_segment(&path) {
                Err(why) => Some(why),
                Ok((first, last, prev, last_hash, _)) => {
                    if first != expected_first || prev != expected_prev {
                        Some("it does not link to the segment before it".to_owned())
                    } else if last != cp.through_pos || last_hash != cp.hash {
                        Some("it does not end where its checkpoint says".to_owned())
                    } else {
                        None
                    }
                }
            }
        };
        if let Some(why) = problem {
            report.broken = Some((cp.segment.clone(), why));
            return Ok(report);
        }
        report.segments += 1;
        report.events += u64::try_from(cp.events).unwrap_or(0);
        expected_first = cp.through_pos + 1;
        expected_prev = cp.hash.clone();
    }
    let entries = std::fs::read_dir(dir).map_err(|e| archive_error("cannot read", dir, e))?;
    for entry in entries {
        let name = entry
            .map_err(|e| archive_error("cannot read", dir, e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let segment = name.starts_with("events-") && name.ends_with(".jsonl.gz");
        if segment && !checkpoints.iter().any(|cp| cp.segment == name) {
            report.broken = Some((name, "no checkpoint names this segment".to_owned()));
            return Ok(report);
        }
    }
    Ok(report)
}
