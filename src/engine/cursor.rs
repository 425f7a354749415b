//! Cursors: `DECLARE c CURSOR FOR <SELECT>`, `FETCH n FROM c`, `CLOSE c`.
//!
//! A cursor over a pull query reads its result a few rows at a time, as
//! drivers do for large results (psycopg's named cursors, JDBC's fetch size).
//! A cursor over a push query (`... EMIT CHANGES`) is a subscription, as
//! Materialize's `DECLARE c CURSOR FOR SUBSCRIBE`: FETCH waits for the first
//! change, then returns what else has already arrived, up to the count.
//!
//! There are no real transactions, so every cursor lives until CLOSE or the
//! end of the connection (Postgres' WITH HOLD) and reads forward only.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use futures::{FutureExt, StreamExt};

use super::result::BatchStream;
use super::{done, Engine, Session, StatementResult};
use crate::error::{Result, SluiceError};
use crate::sql::Statement;

struct Cursor {
    schema: arrow::datatypes::SchemaRef,
    stream: BatchStream,
    /// Rows of a batch a FETCH did not take.
    pending: Option<RecordBatch>,
    /// A subscription: FETCH does not wait for more than the first change.
    push: bool,
    finished: bool,
}

/// A session's open cursors. Clones of a session share them.
#[derive(Clone, Default)]
pub struct Cursors(Arc<parking_lot::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Cursor>>>>>);

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.lock().keys()).finish()
    }
}

impl Cursors {
    /// The columns FETCH from `name` returns (for the extended protocol's
    /// Describe, which runs while no FETCH of the session does).
    pub fn schema(&self, name: &str) -> Option<arrow::datatypes::SchemaRef> {
        let cursor = self.0.lock().get(name).cloned()?;
        let schema = cursor.try_lock().ok()?.schema.clone();
        Some(schema)
    }
}

fn no_cursor(name: &str) -> SluiceError {
    SluiceError::Sql {
        message: format!("cursor \"{name}\" does not exist"),
        position: None,
        hint: Some("DECLARE it first: DECLARE c CURSOR FOR SELECT ...".into()),
        sqlstate: "34000",
    }
}

impl Engine {
    pub(super) async fn declare_cursor(
        &self,
        session: &mut Session,
        name: String,
        query: Statement,
    ) -> Result<StatementResult> {
        if session.cursors.0.lock().contains_key(&name) {
            return Err(SluiceError::Sql {
                message: format!("cursor \"{name}\" already exists"),
                position: None,
                hint: Some(format!("CLOSE {name} first")),
                sqlstate: "42P03",
            });
        }
        // The rows are read as FETCH asks for them, never collected.
        let mut reading = session.clone();
        reading.stream_results = true;
        let result = match query {
            Statement::Select {
                query,
                emit: Some(emit),
                window,
                ..
            } => {
                self.push_query(&reading, &query, window.as_ref(), emit)
                    .await?
            }
            Statement::Select {
                query,
                emit: None,
                window: None,
                ..
            } => self.pull_query(&reading, &query).await?,
            _ => {
                return Err(SluiceError::sql(
                    "a cursor reads a SELECT (with EMIT CHANGES for a subscription)",
                ))
            }
        };
        let (schema, stream, push): (_, BatchStream, _) = match result {
            StatementResult::Push { schema, stream, .. } => (schema, stream, true),
            StatementResult::Stream { schema, stream } => (schema, stream, false),
            StatementResult::Rows { schema, batches } => (
                schema,
                Box::pin(futures::stream::iter(batches.into_iter().map(Ok))),
                false,
            ),
            StatementResult::Done { .. } => {
                return Err(SluiceError::Internal(
                    "a cursor's SELECT returned no rows result".into(),
                ))
            }
        };
        let cursor = Cursor {
            schema,
            stream,
            pending: None,
            push,
            finished: false,
        };
        session
            .cursors
            .0
            .lock()
            .insert(name.clone(), Arc::new(tokio::sync::Mutex::new(cursor)));
        Ok(done("DECLARE CURSOR", format!("cursor {name} declared")))
    }

    /// Up to `count` rows (all that remain when `None`).
    pub(super) async fn fetch(
        &self,
        session: &Session,
        name: &str,
        count: Option<u64>,
    ) -> Result<StatementResult> {
        let cursor = session
            .cursors
            .0
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| no_cursor(name))?;
        let mut cursor = cursor.lock().await;
        let limit = usize::try_from(count.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while rows < limit {
            let batch = match cursor.pending.take() {
                Some(b) => b,
                None if cursor.finished => break,
                None => {
                    let next = if cursor.push && rows > 0 {
                        // A subscription returns what has arrived; it waits
                        // only while it has nothing to return.
                        match cursor.stream.next().now_or_never() {
                            Some(next) => next,
                            None => break,
                        }
                    } else {
                        cursor.stream.next().await
                    };
                    match next {
                        Some(batch) => batch?,
                        None => {
                            cursor.finished = true;
                            break;
                        }
                    }
                }
            };
            let take = batch.num_rows().min(limit - rows);
            if take < batch.num_rows() {
                cursor.pending = Some(batch.slice(take, batch.num_rows() - take));
            }
            rows += take;
            batches.push(batch.slice(0, take));
        }
        Ok(StatementResult::Rows {
            schema: cursor.schema.clone(),
            batches,
        })
    }

    /// Closes one cursor, or all (`None`); closing a subscription stops its
    /// push query.
    pub(super) fn close_cursor(
        &self,
        session: &Session,
        name: Option<String>,
    ) -> Result<StatementResult> {
        let mut cursors = session.cursors.0.lock();
        match name {
            Some(name) => {
                cursors.remove(&name).ok_or_else(|| no_cursor(&name))?;
            }
            None => cursors.clear(),
        }
        Ok(done("CLOSE CURSOR", String::new()))
    }
}
