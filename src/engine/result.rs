//! What executing a statement produces, independent of the protocol that asked.

use std::pin::Pin;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::Stream;

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
