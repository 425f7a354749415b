//! The one protocol every operator speaks: chunks of rows, watermarks and
//! checkpoint barriers flow through the same pipe.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, Int8Array};
use arrow::compute::{filter, filter_record_batch};
use arrow::datatypes::{Int64Type, Int8Type};
use arrow::error::ArrowError;
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
        self.with_rows(filter_record_batch(&self.batch, mask)?, |a| filter(a, mask))
    }

    /// A chunk of `batch` whose event times and ops went through the same row
    /// selection `kernel` made for the batch.
    fn with_rows(
        &self,
        batch: RecordBatch,
        kernel: impl Fn(&dyn Array) -> std::result::Result<ArrayRef, ArrowError>,
    ) -> Result<Chunk> {
        // Selection kernels keep the array type, so the downcasts cannot fail.
        let rowtime = kernel(&self.rowtime)?.as_primitive::<Int64Type>().clone();
        let ops = match &self.ops {
            Some(ops) => Some(kernel(ops)?.as_primitive::<Int8Type>().clone()),
            None => None,
        };
        Ok(Chunk {
            batch,
            rowtime,
            ops,
        })
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
}
