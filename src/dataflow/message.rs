//! The one protocol every operator speaks: chunks of rows, watermarks and
//! checkpoint barriers flow through the same pipe.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray};

pub use crate::chunk::{Chunk, Op, Origin};

/// A predicate result as a filter mask: NULL counts as false, as in SQL.
pub fn null_as_false(mask: &BooleanArray) -> BooleanArray {
    if mask.null_count() == 0 {
        mask.clone()
    } else {
        arrow::compute::prep_null_mask_filter(mask)
    }
}

/// A checkpoint barrier: every operator that sees it contributes its state to the
/// checkpoint, which commits atomically with the source offsets it carries.
#[derive(Debug, Clone)]
pub struct Barrier {
    pub epoch: u64,
    /// Per input: the next offset to read per partition once this checkpoint
    /// is restored.
    pub offsets: Arc<Vec<Vec<(i32, i64)>>>,
}

// Chunks are nearly every message; boxing them would add an allocation per chunk
// to save bytes on the rare watermark and barrier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Message {
    Chunk(Chunk),
    /// Event time up to which the input is complete (milliseconds).
    Watermark(i64),
    Barrier(Barrier),
    /// Input rows that arrived after every window they belong to had closed; they
    /// are counted and, with a `late_topic`, written there.
    Late(Chunk),
    /// A bounded input is exhausted (SELECT over a stream without EMIT CHANGES).
    End,
    /// Rows whose expressions failed to evaluate: the failing values became NULL
    /// and the rows went on; the pipeline counts, logs and dead-letters these (or
    /// fails the query under `on_error = 'fail'`).
    RowErrors(RowErrors),
}

/// Rows one operator could not fully evaluate.
#[derive(Debug, Clone)]
pub struct RowErrors {
    /// The operator, as EXPLAIN shows it.
    pub operator: String,
    pub errors: Vec<RowError>,
}

#[derive(Debug, Clone)]
pub struct RowError {
    pub error: String,
    /// The input row, as a JSON object.
    pub row: String,
    pub rowtime: Option<i64>,
    /// (relation, partition, offset) of the source record, when known.
    pub origin: Option<(Arc<str>, i32, i64)>,
}
