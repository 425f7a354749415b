//! What a query does with row-level problems: records that cannot be decoded,
//! expressions that fail on a row, output records too large for their topic.
//! Under `on_error = 'continue'` (the default) each is counted, a sample is
//! logged, and the record goes to the dead-letter topic; the good rows around it
//! go on. Under `on_error = 'fail'` the first one stops the query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::dead_letter::{DeadLetters, SourceOf};
use super::metrics::QueryMetrics;
use super::RowErrors;
use crate::catalog::OnError;
use crate::connectors::OutRecord;
use crate::error::{Result, SluiceError};
use crate::formats::BadRecord;

/// How often a query logs a sample of its row errors; the rest are counted.
const LOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RowErrorPolicy {
    query: Arc<str>,
    on_error: OnError,
    dead_letters: Option<Arc<DeadLetters>>,
    metrics: Arc<QueryMetrics>,
    /// When a sample was last logged, and how many errors went unlogged since.
    logged: Arc<Mutex<(Option<Instant>, u64)>>,
}

impl RowErrorPolicy {
    pub fn new(
        query: impl Into<Arc<str>>,
        on_error: OnError,
        dead_letters: Option<Arc<DeadLetters>>,
        metrics: Arc<QueryMetrics>,
    ) -> Self {
        RowErrorPolicy {
            query: query.into(),
            on_error,
            dead_letters,
            metrics,
            logged: Arc::new(Mutex::new((None, 0))),
        }
    }

    /// For queries nobody watches errors of (push queries, benchmarks): counted
    /// and logged only.
    pub fn counting(query: impl Into<Arc<str>>, metrics: Arc<QueryMetrics>) -> Self {
        Self::new(query, OnError::Continue, None, metrics)
    }

    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// Logs `line` unless a sample was logged less than [`LOG_EVERY`] ago.
    fn log_sample(&self, n: u64, line: impl FnOnce() -> String) {
        let mut logged = self.logged.lock();
        let now = Instant::now();
        if logged.0.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            logged.1 += n;
            return;
        }
        let suppressed = std::mem::take(&mut logged.1) + n.saturating_sub(1);
        logged.0 = Some(now);
        drop(logged);
        let more = if suppressed > 0 {
            format!(" ({suppressed} more since the last report)")
        } else {
            String::new()
        };
        tracing::warn!(query = %self.query, "{}{more}", line());
    }

    /// Rows whose expressions failed: their failing values are NULL already.
    pub async fn expression_errors(&self, errors: RowErrors) -> Result<()> {
        let n = errors.errors.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let first = &errors.errors[0];
        let position = match &first.origin {
            Some((source, p, o)) => format!("{source} partition {p}, offset {o}"),
            None => "a row".to_string(),
        };
        if self.on_error == OnError::Fail {
            return Err(SluiceError::Sql {
                message: format!(
                    "{} (in {}, at {position}); the query stops because on_error='fail'",
                    first.error, errors.operator
                ),
                position: None,
                hint: Some(
                    "with on_error='continue' (the default) the value becomes NULL and the query goes on"
                        .into(),
                ),
                sqlstate: "22000",
            });
        }
        QueryMetrics::add(&self.metrics.expression_errors, n);
        self.log_sample(n, || {
            format!(
                "expression error at {position}: {}; the value is NULL (in {}; row {})",
                first.error, errors.operator, first.row
            )
        });
        if let Some(dl) = &self.dead_letters {
            let written = dl.row_errors(&self.query, &errors).await?;
            QueryMetrics::add(&self.metrics.dead_lettered, written);
        }
        Ok(())
    }

    /// Records that could not become rows (already left out of the chunk).
    pub async fn bad_records(
        &self,
        relation: &str,
        topic: &str,
        bad: &[BadRecord],
        position: impl Fn(i32, i64) -> String,
    ) -> Result<()> {
        let Some(first) = bad.first() else {
            return Ok(());
        };
        let n = bad.len() as u64;
        if self.on_error == OnError::Fail {
            return Err(SluiceError::Sql {
                message: format!(
                    "bad record in '{relation}' at {}: {}; the query stops because on_error='fail'",
                    position(first.partition, first.offset),
                    first.reason
                ),
                position: None,
                hint: Some(
                    "with on_error='continue' (the default) bad records are skipped, counted and dead-lettered"
                        .into(),
                ),
                sqlstate: "22000",
            });
        }
        QueryMetrics::add(&self.metrics.decode_errors, n);
        self.log_sample(n, || {
            format!(
                "skipping bad record of '{relation}' at {}: {}",
                position(first.partition, first.offset),
                first.reason
            )
        });
        if let Some(dl) = &self.dead_letters {
            let from = SourceOf {
                query: &self.query,
                relation,
                topic,
            };
            let written = dl.bad_records(from, bad, position).await?;
            QueryMetrics::add(&self.metrics.dead_lettered, written);
        }
        Ok(())
    }

    /// Output records larger than `topic` takes (left out of what is sent).
    pub async fn oversize(&self, topic: &str, limit: usize, records: Vec<OutRecord>) -> Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let size = crate::connectors::record_size(first);
        let n = records.len() as u64;
        if self.on_error == OnError::Fail {
            return Err(SluiceError::Internal(format!(
                "an output record of {size} bytes is larger than '{topic}' takes ({limit} bytes); the query stops because on_error='fail'"
            )));
        }
        QueryMetrics::add(&self.metrics.oversize_records, n);
        self.log_sample(n, || {
            format!(
                "an output record of {size} bytes is larger than '{topic}' takes ({limit} bytes); it goes to the dead-letter topic"
            )
        });
        if let Some(dl) = &self.dead_letters {
            let written = dl.oversize(&self.query, topic, limit, records).await?;
            QueryMetrics::add(&self.metrics.dead_lettered, written);
        }
        Ok(())
    }
}
