//! A table's changelog as retractions and additions, for aggregating a TABLE.
//!
//! A changelog row replaces (upsert) or removes (delete) the row of its key; an
//! aggregate needs to know what that takes away. This operator keeps the current
//! row of every key (a private materialized table, checkpointed like any state)
//! and turns each change into "retract the old row" (op Delete, the old values)
//! and "add the new row" (op Upsert).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, Int8Array};
use arrow::compute::interleave;
use arrow::record_batch::RecordBatch;

use super::materialize::MaterializedTable;
use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::Result;
use crate::state::{QueryState, StateWriteBatch};

pub struct ChangelogRetractions {
    current: Arc<MaterializedTable>,
    key_cols: Vec<usize>,
}

impl ChangelogRetractions {
    pub fn new(current: Arc<MaterializedTable>, key_cols: Vec<usize>) -> Self {
        ChangelogRetractions { current, key_cols }
    }
}

impl Operator for ChangelogRetractions {
    fn describe(&self) -> String {
        "ChangelogRetractions".into()
    }

    fn state_entries(&self) -> usize {
        self.current.row_count().unwrap_or(0)
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        // One lookup for the chunk. A key that occurs again later in the chunk
        // replaces its own earlier row, which is what that occurrence retracts.
        let keys: Vec<ArrayRef> = self
            .key_cols
            .iter()
            .map(|&c| chunk.batch.column(c).clone())
            .collect();
        let (key_rows, found) = self.current.lookup_keyed(&keys)?;
        let mut latest: HashMap<&[u8], usize> = HashMap::new();
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(2 * n);
        let mut ops: Vec<i8> = Vec::with_capacity(2 * n);
        let mut times: Vec<i64> = Vec::with_capacity(2 * n);
        let mut old_rows: Vec<&[u8]> = Vec::new();
        for (i, stored) in found.iter().enumerate() {
            let old = match latest.insert(key_rows.row(i).data(), i) {
                Some(j) => (chunk.op(j) == Op::Upsert).then_some((1, j)),
                None => stored.as_ref().map(|row| {
                    old_rows.push(row);
                    (0, old_rows.len() - 1)
                }),
            };
            if let Some(pick) = old {
                picks.push(pick);
                ops.push(Op::Delete as i8);
                times.push(chunk.rowtime.value(i));
            }
            if chunk.op(i) == Op::Upsert {
                picks.push((1, i));
                ops.push(Op::Upsert as i8);
                times.push(chunk.rowtime.value(i));
            }
        }
        self.current.apply(&chunk)?;
        if picks.is_empty() {
            return Ok(());
        }
        let old_columns = self.current.rows_to_columns(&old_rows)?;
        let columns = old_columns
            .iter()
            .zip(chunk.batch.columns())
            .map(|(old, new)| interleave(&[old.as_ref(), new.as_ref()], &picks))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(chunk.batch.schema(), columns)?;
        out.push(Message::Chunk(Chunk::new(
            batch,
            Int64Array::from(times),
            Some(Int8Array::from(ops)),
        )));
        Ok(())
    }

    fn snapshot(&mut self, id: u16, batch: &mut StateWriteBatch) -> Result<()> {
        self.current.snapshot_changes(id, batch);
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        self.current.restore_rows(state.scan(id)?);
        Ok(())
    }
}
