//! The one protocol every operator speaks: chunks of rows, watermarks and
//! checkpoint barriers flow through the same pipe.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Int64Array, Int8Array, UInt32Array};
use arrow::compute::{filter, filter_record_batch, take, take_record_batch};
use arrow::record_batch::RecordBatch;

use crate::error::Result;

/// What a changelog row means. Append-only streams carry no ops at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum Op {
    /// Insert or replace the row for its key.
    Upsert = 1,
    /// Remove the row for its key (the other columns are null).
    Delete = -1,
}

/// A batch of rows with their event times and, for changelogs, their ops.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub batch: RecordBatch,
    /// Event time of each row, milliseconds since the epoch.
    pub rowtime: Int64Array,
    /// `None`: every row is an insert (append-only). Otherwise one [`Op`] per row.
    pub ops: Option<Int8Array>,
}

impl Chunk {
    pub fn new(batch: RecordBatch, rowtime: Int64Array, ops: Option<Int8Array>) -> Self {
        debug_assert_eq!(batch.num_rows(), rowtime.len());
        Chunk {
            batch,
            rowtime,
            ops,
        }
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    pub fn op(&self, row: usize) -> Op {
        match &self.ops {
            Some(ops) if ops.value(row) < 0 => Op::Delete,
            _ => Op::Upsert,
        }
    }

    /// Keeps the rows where `mask` is true.
    pub fn filter(&self, mask: &BooleanArray) -> Result<Chunk> {
        let batch = filter_record_batch(&self.batch, mask)?;
        let rowtime = filter(&self.rowtime, mask)?;
        let rowtime = rowtime
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .unwrap_or_else(|| Int64Array::new_null(0));
        let ops = match &self.ops {
            Some(ops) => Some(
                filter(ops, mask)?
                    .as_any()
                    .downcast_ref::<Int8Array>()
                    .cloned()
                    .unwrap_or_else(|| Int8Array::new_null(0)),
            ),
            None => None,
        };
        Ok(Chunk {
            batch,
            rowtime,
            ops,
        })
    }

    /// Reorders / selects rows by index.
    pub fn take(&self, indices: &UInt32Array) -> Result<Chunk> {
        let batch = take_record_batch(&self.batch, indices)?;
        let rowtime = take(&self.rowtime, indices, None)?
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .unwrap_or_else(|| Int64Array::new_null(0));
        let ops = match &self.ops {
            Some(ops) => Some(
                take(ops, indices, None)?
                    .as_any()
                    .downcast_ref::<Int8Array>()
                    .cloned()
                    .unwrap_or_else(|| Int8Array::new_null(0)),
            ),
            None => None,
        };
        Ok(Chunk {
            batch,
            rowtime,
            ops,
        })
    }

    pub fn max_rowtime(&self) -> Option<i64> {
        arrow::compute::max(&self.rowtime)
    }
}

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
    /// Next offset to read per partition once this checkpoint is restored.
    pub offsets: Arc<Vec<(i32, i64)>>,
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
    /// A bounded input is exhausted (SELECT over a stream without EMIT CHANGES).
    End,
}
