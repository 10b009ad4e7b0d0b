//! Group commit for grant writes.
//!
//! Every grant's write goes to a writer task through a channel. The task
//! takes whatever writes are waiting (up to [`MAX_BATCH`]) and applies them
//! in one database transaction, then answers each request: only after the
//! commit, so a client never holds a token that is not durable. Concurrent
//! grants share a commit instead of queueing for one each, which is what a
//! durable commit (an fsync) costs.
//!
//! Each write stays atomic and isolated from the others': a stale write has
//! written nothing (its claims that only read are checked first, and it
//! consumes at most one thing, last; a write that would consume more gets a
//! savepoint of its own), and if a statement fails the whole batch is rolled
//! back and each write applied again alone, so one write's failure is its
//! own.
//!
//! SQLite has one writer task (it has one writer connection); PostgreSQL a
//! few, each with a batch and a connection of its own, so one slow commit
//! does not hold every grant.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use healthgate_core::grant::Write;
use sqlx::AnyPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::grants::{BatchReads, Inserts, apply_together, apply_whole};
use crate::{Applied, Result, StoreError};

/// The most writes one transaction carries.
const MAX_BATCH: usize = 64;

/// Writes waiting for a writer task; a request waits while it is full.
const QUEUE: usize = 1024;

struct Job {
    write: Write,
    done: oneshot::Sender<Result<Applied>>,
}

/// The handle requests send their writes through; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct GrantWriter {
    jobs: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

/// What the writer tasks have done, for metrics.
#[derive(Debug, Default)]
struct Stats {
    commits: AtomicU64,
    writes: AtomicU64,
    /// Time spent committing, in microseconds.
    busy_us: AtomicU64,
}

/// The group commit's work so far and its queue now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupCommits {
    /// Writes waiting for a writer task.
    pub queued: u64,
    /// Transactions committed (a write applied alone after its batch failed
    /// counts as one of its own).
    pub commits: u64,
    /// Writes applied.
    pub writes: u64,
    /// Seconds spent applying and committing batches.
    pub seconds: f64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl GrantWriter {
    /// Starts `tasks` writer tasks on `pool`. They stop when the last handle
    /// is dropped.
    pub(crate) fn start(pool: AnyPool, tasks: usize) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let stats = Arc::new(Stats::default());
        for _ in 0..tasks.max(1) {
            tokio::spawn(run(pool.clone(), queue.clone(), stats.clone()));
        }
        Self { jobs, stats }
    }

    pub(crate) fn stats(&self) -> GroupCommits {
        GroupCommits {
            queued: (self.jobs.max_capacity() - self.jobs.capacity()) as u64,
            commits: self.stats.commits.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
            seconds: self.stats.busy_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Applies `write` in the next group commit; answers after the commit.
    pub(crate) async fn apply(&self, write: Write) -> Result<Applied> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, done })
            .await
            .map_err(|_| StoreError::Corrupt("the grant writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the grant writer stopped mid-write".into()))?
    }
}

async fn run(pool: AnyPool, queue: Arc<Mutex<mpsc::Receiver<Job>>>, stats: Arc<Stats>) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        let started = Instant::now();
        let mut commits = 1;
        let results = match together(&pool, &batch).await {
            Ok(results) => results,
            Err(e) => {
                if batch.len() > 1 {
                    commits += batch.len() as u64;
                    tracing::debug!(error = %e, writes = batch.len(), "a group commit failed; applying its writes one by one");
                    let mut results = Vec::with_capacity(batch.len());
                    for job in &batch {
                        results.push(alone(&pool, &job.write).await);
                    }
                    results
                } else {
                    vec![Err(e)]
                }
            }
        };
        let busy_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.busy_us.fetch_add(busy_us, Ordering::Relaxed);
        stats.commits.fetch_add(commits, Ordering::Relaxed);
        stats
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (job, result) in batch.into_iter().zip(results) {
            // The request may have gone (its client hung up): the write
            // stands, as it would have without group commit.
            let _ = job.done.send(result);
        }
    }
}

/// Every write of `batch` in one transaction, one statement per kind of
/// claim and per table of new rows.
async fn together(pool: &AnyPool, batch: &[Job]) -> Result<Vec<Result<Applied>>> {
    let mut tx = pool.begin().await?;
    let writes: Vec<&Write> = batch.iter().map(|job| &job.write).collect();
    let reads = BatchReads::read(&mut tx, &writes).await?;
    let mut inserts = Inserts::default();
    let applied = apply_together(&mut tx, &writes, &reads, &mut inserts).await?;
    inserts.flush(&mut tx).await?;
    tx.commit().await?;
    Ok(applied.into_iter().map(Ok).collect())
}

/// One write in a transaction of its own.
async fn alone(pool: &AnyPool, write: &Write) -> Result<Applied> {
    apply_whole(pool.begin().await?, write).await
}
