//! Rows as they move through Sluice: an Arrow batch with each row's event
//! time and, for changelogs, its op and source position. Decoders produce
//! chunks, operators transform them, encoders write them; this module sits
//! below all of them.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, Int8Array};
use arrow::compute::{filter, filter_record_batch};
use arrow::datatypes::{Int32Type, Int64Type, Int8Type};
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
    /// Where each row was read (set by the source; kept by the stateless operators
    /// right after it), so a row that fails to evaluate can be reported by position.
    pub origin: Option<Origin>,
}

/// The source record of each row of a chunk.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The relation the rows were read from.
    pub source: Arc<str>,
    pub partition: Int32Array,
    pub offset: Int64Array,
}

impl Origin {
    /// `source`'s partition and offset of row `row`, as users see positions.
    pub fn describe(&self, row: usize) -> (i32, i64) {
        (self.partition.value(row), self.offset.value(row))
    }
}

impl Chunk {
    pub fn new(batch: RecordBatch, rowtime: Int64Array, ops: Option<Int8Array>) -> Self {
        debug_assert_eq!(batch.num_rows(), rowtime.len());
        Chunk {
            batch,
            rowtime,
            ops,
            origin: None,
        }
    }

    /// The same rows with their source positions.
    pub fn with_origin(mut self, origin: Option<Origin>) -> Self {
        self.origin = origin.filter(|o| o.offset.len() == self.batch.num_rows());
        self
    }

    /// `batch` (the same rows, other columns) with this chunk's times, ops and origin.
    pub fn with_batch(self, batch: RecordBatch) -> Chunk {
        debug_assert_eq!(batch.num_rows(), self.rowtime.len());
        Chunk { batch, ..self }
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
        let origin = match &self.origin {
            Some(o) => Some(Origin {
                source: o.source.clone(),
                partition: kernel(&o.partition)?.as_primitive::<Int32Type>().clone(),
                offset: kernel(&o.offset)?.as_primitive::<Int64Type>().clone(),
            }),
            None => None,
        };
        Ok(Chunk {
            batch,
            rowtime,
            ops,
            origin,
        })
    }
}
