//! Restarting persistent queries that stopped for a reason that can pass — a
//! topic that vanished, a broker that is away, a file that is not there yet —
//! with exponential backoff, as Flink's restart strategies do. A query stopped by
//! its own data (`on_error = 'fail'`) or by a planning error stays stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use crate::dataflow::query::RunStatus;

/// How often the supervisor looks at the queries.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);
/// First retry delay; doubled per failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A query that ran this long since its last restart starts its backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// A query waiting to be started again.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Failed attempts in a row.
    pub attempt: u32,
    pub next: Instant,
    pub error: String,
}

impl Retry {
    /// What SHOW QUERIES says about it.
    pub fn describe(&self) -> String {
        let wait = self.next.saturating_duration_since(Instant::now());
        format!(
            "{} (retry {} in {:.1} s)",
            self.error,
            self.attempt + 1,
            wait.as_secs_f64()
        )
    }
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF)
}

impl Engine {
    /// Starts the supervisor task; it ends when the engine is dropped.
    pub(super) fn spawn_supervisor(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SUPERVISE_EVERY).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.supervise_once().await;
            }
        });
    }

    /// Remembers that query `id` could not run because of `error`.
    pub(super) fn schedule_retry(&self, id: &str, error: String) {
        let mut retrying = self.retrying.lock();
        let attempt = match (retrying.get(id), self.started_at.lock().get(id)) {
            // Could not start again.
            (Some(r), _) => r.attempt + 1,
            // Failed again soon after a restart: wait longer.
            (None, Some((t, a))) if t.elapsed() < STABLE_AFTER => a + 1,
            _ => 0,
        };
        tracing::warn!(
            query = %id,
            "stopped: {error}; retrying in {:.1} s",
            backoff(attempt).as_secs_f64()
        );
        retrying.insert(
            id.to_string(),
            Retry {
                attempt,
                next: Instant::now() + backoff(attempt),
                error,
            },
        );
    }

    /// Forgets a query's retries (TERMINATE, DROP).
    pub(super) fn forget_retries(&self, id: &str) {
        self.retrying.lock().remove(id);
        self.started_at.lock().remove(id);
    }

    async fn supervise_once(&self) {
        // Running queries that failed for a transient reason wait for a retry.
        let failed: Vec<(String, String)> = {
            let mut running = self.running.lock();
            let ids: Vec<String> = running
                .iter()
                .filter(|(_, h)| h.failed_transiently())
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| {
                    let h = running.remove(&id)?;
                    let error = match h.status() {
                        RunStatus::Failed(e) => e,
                        other => format!("{other:?}"),
                    };
                    h.stop();
                    Some((id, error))
                })
                .collect()
        };
        for (id, error) in failed {
            self.schedule_retry(&id, error);
        }
        let now = Instant::now();
        let due: Vec<String> = self
            .retrying
            .lock()
            .iter()
            .filter(|(_, r)| r.next <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let _guard = self.ddl_lock.lock().await;
            let meta = self.catalog.read().queries.get(&id).cloned();
            let Some(meta) = meta else {
                self.forget_retries(&id);
                continue;
            };
            if self.running.lock().contains_key(&id) {
                self.retrying.lock().remove(&id);
                continue;
            }
            match self.start_persistent_query(&meta).await {
                Ok(()) => {
                    let attempt = self.retrying.lock().remove(&id).map_or(0, |r| r.attempt);
                    self.started_at
                        .lock()
                        .insert(id.clone(), (Instant::now(), attempt));
                    *self.restarts.lock().entry(id.clone()).or_default() += 1;
                    tracing::info!(query = %id, "resumed from its last checkpoint");
                }
                Err(e) if e.is_transient() => self.schedule_retry(&id, e.to_string()),
                Err(e) => {
                    tracing::error!(query = %id, "cannot restart: {e}");
                    self.retrying.lock().remove(&id);
                    let mut c = self.catalog.write();
                    if let Some(q) = c.queries.get_mut(&id) {
                        q.status = crate::catalog::QueryStatus::Error;
                        q.error = Some(e.to_string());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(1), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3), FIRST_BACKOFF * 8);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
