//! What executing a statement produces, independent of the protocol that asked.

use std::pin::Pin;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt};

use crate::error::SluiceError;

/// A stream of result batches for a push query; dropping it stops the query.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, SluiceError>> + Send>>;

/// The outcome of one statement.
pub enum StatementResult {
    /// A statement with no rows (DDL, INSERT, TERMINATE, SET ...). `tag` is the
    /// Postgres command tag (e.g. "CREATE STREAM"); `message` is for humans.
    Done {
        tag: String,
        message: String,
        rows_affected: Option<usize>,
    },
    /// A finite result: pull queries, SHOW, DESCRIBE, EXPLAIN.
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A finite result read as it is sent: pull queries of a streaming
    /// session. Dropping the stream (the client left) stops the query.
    Stream {
        schema: SchemaRef,
        stream: BatchStream,
    },
    /// An unbounded result: `SELECT ... EMIT CHANGES`. Ends after LIMIT rows if one
    /// was given; otherwise runs until the stream is dropped.
    Push {
        query_id: String,
        schema: SchemaRef,
        stream: BatchStream,
    },
}

impl std::fmt::Debug for StatementResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatementResult::Done { tag, message, .. } => f
                .debug_struct("Done")
                .field("tag", tag)
                .field("message", message)
                .finish(),
            StatementResult::Rows { schema, batches } => f
                .debug_struct("Rows")
                .field("schema", schema)
                .field("rows", &batches.iter().map(|b| b.num_rows()).sum::<usize>())
                .finish(),
            StatementResult::Stream { schema, .. } => {
                f.debug_struct("Stream").field("schema", schema).finish()
            }
            StatementResult::Push {
                query_id, schema, ..
            } => f
                .debug_struct("Push")
                .field("query_id", query_id)
                .field("schema", schema)
                .finish(),
        }
    }
}

impl StatementResult {
    /// The result with a streamed pull result collected into `Rows`, refusing
    /// one over `limit` bytes (it is held in memory until it is sent). Other
    /// results are returned as they are.
    pub async fn collected(self, limit: usize) -> Result<StatementResult, SluiceError> {
        match self {
            StatementResult::Stream { schema, stream } => Ok(StatementResult::Rows {
                schema,
                batches: collect_bounded(stream, limit).await?,
            }),
            other => Ok(other),
        }
    }
}

/// Collects a pull query's batches, refusing a result over `limit` bytes.
pub(crate) async fn collect_bounded(
    mut stream: BatchStream,
    limit: usize,
) -> Result<Vec<RecordBatch>, SluiceError> {
    let mut batches = Vec::new();
    let mut bytes = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        bytes += batch.get_array_memory_size();
        if bytes > limit {
            return Err(SluiceError::Sql {
                message: format!(
                    "the result of this pull query is larger than --max-query-memory ({limit} bytes)"
                ),
                position: None,
                hint: Some(
                    "add a LIMIT or a WHERE, or aggregate; over pgwire and POST /query results stream and are not held"
                        .into(),
                ),
                sqlstate: "53200",
            });
        }
        batches.push(batch);
    }
    Ok(batches)
}
