//! A running query: its two tasks, its metrics and its status.

use std::sync::Arc;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::metrics::QueryMetrics;
use super::pipeline::Pipeline;
use super::source::SourceTask;
use crate::error::SluiceError;

/// The channel that asks a query's source to drain.
pub fn drain_channel() -> (
    tokio::sync::watch::Sender<bool>,
    tokio::sync::watch::Receiver<bool>,
) {
    tokio::sync::watch::channel(false)
}

/// A panic inside a query fails that query, not the server.
fn panic_error(payload: Box<dyn std::any::Any + Send>) -> SluiceError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    SluiceError::Internal(format!("query panicked: {message}"))
}

/// Chunks in flight between the source and the pipeline: enough to overlap decoding
/// with processing, small enough that a slow sink pushes back on the source.
const CHANNEL_CAPACITY: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Finished,
    Failed(String),
}

pub struct QueryHandle {
    pub id: String,
    drain: tokio::sync::watch::Sender<bool>,
    pub metrics: Arc<QueryMetrics>,
    pub status: Arc<Mutex<RunStatus>>,
    /// The query failed with an error that may pass (see `SluiceError::is_transient`).
    transient: Arc<std::sync::atomic::AtomicBool>,
    source: JoinHandle<()>,
    pipeline: JoinHandle<()>,
}

/// Records the query's failure: the first error (the other task usually fails
/// as a consequence) together with whether it may pass, under one lock so the
/// supervisor never sees one error with the other's transient flag.
fn fail(
    status: &Mutex<RunStatus>,
    transient: &std::sync::atomic::AtomicBool,
    error: &crate::error::SluiceError,
) {
    let mut status = status.lock();
    if !matches!(*status, RunStatus::Failed(_)) {
        transient.store(error.is_transient(), std::sync::atomic::Ordering::Release);
        *status = RunStatus::Failed(error.to_string());
    }
}

impl QueryHandle {
    /// Starts the query. `drain` is the sender whose receiver the source watches
    /// (see [`drain_channel`]).
    pub fn spawn(
        id: String,
        source: SourceTask,
        pipeline: Pipeline,
        drain: tokio::sync::watch::Sender<bool>,
    ) -> QueryHandle {
        let (tx, rx) = mpsc::channel::<(usize, crate::dataflow::Message)>(CHANNEL_CAPACITY);
        let status = Arc::new(Mutex::new(RunStatus::Running));
        let metrics = pipeline.metrics.clone();
        let transient = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = status.clone();
        let t = transient.clone();
        let qid = id.clone();
        let source = tokio::spawn(async move {
            let result = AssertUnwindSafe(source.run(tx))
                .catch_unwind()
                .await
                .unwrap_or_else(|p| Err(panic_error(p)));
            if let Err(e) = result {
                tracing::error!(query = %qid, "source failed: {e}");
                fail(&s, &t, &e);
            }
        });
        let s = status.clone();
        let t = transient.clone();
        let qid = id.clone();
        let drained = drain.subscribe();
        let counts = metrics.clone();
        tracing::info!(query = %id, "query started");
        let pipeline = tokio::spawn(async move {
            let result = AssertUnwindSafe(pipeline.run(rx))
                .catch_unwind()
                .await
                .unwrap_or_else(|p| Err(panic_error(p)));
            match result {
                Err(e) => {
                    tracing::error!(query = %qid, "query failed: {e}");
                    fail(&s, &t, &e);
                }
                Ok(()) => {
                    let mut status = s.lock();
                    if *status == RunStatus::Running {
                        *status = RunStatus::Finished;
                        let records_in =
                            counts.records_in.load(std::sync::atomic::Ordering::Relaxed);
                        let records_out = counts
                            .records_out
                            .load(std::sync::atomic::Ordering::Relaxed);
                        if *drained.borrow() {
                            tracing::info!(query = %qid, records_in, records_out, "query stopped after a final checkpoint");
                        } else {
                            tracing::info!(query = %qid, records_in, records_out, "query finished: its input ended");
                        }
                    }
                }
            }
        });
        QueryHandle {
            id,
            drain,
            metrics,
            status,
            transient,
            source,
            pipeline,
        }
    }

    pub fn status(&self) -> RunStatus {
        self.status.lock().clone()
    }

    /// Failed, with an error that may pass: worth starting again.
    pub fn failed_transiently(&self) -> bool {
        matches!(self.status(), RunStatus::Failed(_))
            && self.transient.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops both tasks; the query's state stays as of its last checkpoint.
    pub fn stop(&self) {
        self.source.abort();
        self.pipeline.abort();
    }

    /// Waits until the pipeline task ends (bounded queries, benchmarks).
    pub async fn join(&mut self) {
        let _ = (&mut self.pipeline).await;
    }

    /// Ends the query gracefully: the source stops reading, a last checkpoint
    /// commits everything processed, and the tasks end. Falls back to stopping
    /// after `timeout`.
    pub async fn drain(mut self, timeout: std::time::Duration) {
        let _ = self.drain.send(true);
        let _ = tokio::time::timeout(timeout, &mut self.pipeline).await;
        self.stop();
    }
}

impl Drop for QueryHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
