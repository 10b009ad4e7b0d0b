//! The jti of every accepted DPoP proof, recorded in batches.
//!
//! A proof comes with every request that uses a DPoP-bound token, reads
//! included, so recording its `jti` (RFC 9449 §11.1: no node may accept it
//! twice) is a write on paths that otherwise only read. Requests hand their
//! `jti` to one recorder task, which takes whatever is waiting (up to
//! [`MAX_BATCH`]) into one `INSERT … ON CONFLICT DO NOTHING RETURNING`:
//! a proof is accepted when its row was inserted, by this statement, and
//! refused when the row was there already (on any node) or an earlier
//! request of the same batch carried it. Every request is answered after
//! the statement has committed.

use std::collections::HashSet;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// The most proofs one statement records.
const MAX_BATCH: usize = 256;

/// Proofs waiting for the recorder; a request waits while it is full.
const QUEUE: usize = 4096;

struct Job {
    jkt: String,
    jti: String,
    expires_at: i64,
    done: oneshot::Sender<Result<bool>>,
}

/// The handle requests record their proofs through; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct ProofRecorder {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl ProofRecorder {
    /// Starts the recorder task on `pool`; it stops when the last handle is
    /// dropped.
    pub(crate) fn start(pool: AnyPool) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queue));
        Self { jobs }
    }

    /// Records the proof `jti` of the key `jkt`, kept until `expires_at`:
    /// true when no proof with them was recorded before.
    pub(crate) async fn record(&self, jkt: &str, jti: &str, expires_at: i64) -> Result<bool> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            jkt: jkt.to_owned(),
            jti: jti.to_owned(),
            expires_at,
            done,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Corrupt("the DPoP proof recorder has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the DPoP proof recorder stopped mid-write".into()))?
    }
}

async fn run(pool: AnyPool, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A pair seen earlier in the batch is a replay, answered now; the
        // statement carries each pair once.
        let mut seen = HashSet::new();
        let mut unique = Vec::with_capacity(batch.len());
        for job in batch {
            if seen.insert((job.jkt.clone(), job.jti.clone())) {
                unique.push(job);
            } else {
                let _ = job.done.send(Ok(false));
            }
        }
        match insert(&pool, &unique).await {
            Ok(inserted) => {
                for job in unique {
                    let new = inserted.contains(&(job.jkt, job.jti));
                    let _ = job.done.send(Ok(new));
                }
            }
            Err(e) if unique.len() > 1 => {
                tracing::debug!(error = %e, proofs = unique.len(), "recording DPoP proofs together failed; one by one");
                for job in unique {
                    let result = insert(&pool, std::slice::from_ref(&job))
                        .await
                        .map(|inserted| !inserted.is_empty());
                    let _ = job.done.send(result);
                }
            }
            Err(e) => {
                if let Some(job) = unique.pop() {
                    let _ = job.done.send(Err(e));
                }
            }
        }
    }
}

/// Inserts `jobs`' rows in one statement: the pairs it inserted.
async fn insert(pool: &AnyPool, jobs: &[Job]) -> Result<HashSet<(String, String)>> {
    let rows: Vec<String> = (0..jobs.len())
        .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO dpop_proofs (jkt, jti, expires_at) VALUES {}
         ON CONFLICT (jkt, jti) DO NOTHING RETURNING jkt, jti",
        rows.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for job in jobs {
        query = query.bind(&job.jkt).bind(&job.jti).bind(job.expires_at);
    }
    let inserted = query.fetch_all(pool).await?;
    inserted
        .iter()
        .map(|r| Ok((r.try_get("jkt")?, r.try_get("jti")?)))
        .collect()
}
