//! A table's changelog as retractions and additions, for aggregating a TABLE.
//!
//! A changelog row replaces (upsert) or removes (delete) the row of its key; an
//! aggregate needs to know what that takes away. This operator keeps the current
//! row of every key in a state table (read through its cache, evicted under the
//! state memory budget) and turns each change into "retract the old row" (op
//! Delete, the old values) and "add the new row" (op Upsert).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, Int8Array};
use arrow::compute::interleave;
use arrow::record_batch::RecordBatch;

use super::materialize::MaterializedTable;
use super::{Checkpoint, Operator};
use crate::dataflow::{Chunk, Message, Op};
use crate::error::Result;
use crate::state::table::{StateTable, StateTableId};
use crate::state::QueryState;

pub struct ChangelogRetractions {
    /// The input table's layout: its key and row encodings (it holds no rows).
    layout: Arc<MaterializedTable>,
    /// The current row of every key.
    current: StateTable,
    /// Keys of rows written by state format 3 and before, deleted at the next
    /// checkpoint once the rows are in the state table.
    legacy: Vec<Vec<u8>>,
}

impl ChangelogRetractions {
    pub fn new(layout: Arc<MaterializedTable>) -> Self {
        ChangelogRetractions {
            layout,
            current: StateTable::new(StateTableId::of_node(0, 0)),
            legacy: Vec::new(),
        }
    }
}

impl Operator for ChangelogRetractions {
    fn describe(&self) -> String {
        "ChangelogRetractions".into()
    }

    fn state_entries(&self) -> usize {
        self.current.entries_in_memory()
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        // One batched read for the chunk. A key that occurs again later in
        // the chunk replaces its own earlier row, which is what that
        // occurrence retracts.
        let (keys, rows) = self.layout.encode(&chunk)?;
        self.current.load((0..n).map(|i| keys.row(i)))?;
        let mut scratch = Vec::new();
        let found: Vec<Option<Vec<u8>>> = (0..n)
            .map(|i| {
                self.current
                    .get_loaded(keys.row(i), &mut scratch)
                    .map(<[u8]>::to_vec)
            })
            .collect();
        for i in 0..n {
            match chunk.op(i) {
                Op::Upsert => self.current.put(keys.row(i), rows.row(i).as_ref()),
                Op::Delete => self.current.delete(keys.row(i)),
            }
        }
        let mut latest: HashMap<&[u8], usize> = HashMap::new();
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(2 * n);
        let mut ops: Vec<i8> = Vec::with_capacity(2 * n);
        let mut times: Vec<i64> = Vec::with_capacity(2 * n);
        let mut old_rows: Vec<&[u8]> = Vec::new();
        for (i, stored) in found.iter().enumerate() {
            let old = match latest.insert(keys.row(i), i) {
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
        if picks.is_empty() {
            return Ok(());
        }
        let old_columns = self.layout.rows_to_columns(&old_rows)?;
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

    fn on_barrier(
        &mut self,
        checkpoint: &mut Checkpoint<'_>,
        _out: &mut Vec<Message>,
    ) -> Result<()> {
        let (id, batch) = (checkpoint.state_id, &mut *checkpoint.writes);
        for key in self.legacy.drain(..) {
            batch.delete(id, &key);
        }
        self.current.flush(batch);
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        self.current = StateTable::new(StateTableId::of_node(id, 0));
        self.current.attach(state);
        // Rows of format 3 and before: into the table at the next checkpoint.
        let legacy = state.scan(id)?;
        for (key, row) in &legacy {
            self.current.put(key, row);
        }
        self.legacy = legacy.into_iter().map(|(k, _)| k).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::operators::checkpoint;
    use crate::state::StateWriteBatch;
    use std::collections::HashMap;

    use super::*;
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use crate::state::budget::MemoryBudget;
    use crate::state::StateStore;

    fn schema() -> arrow::datatypes::SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn chunk(rows: &[(String, Option<i64>)]) -> Chunk {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        let ops = rows.iter().map(|r| {
            if r.1.is_some() {
                Op::Upsert as i8
            } else {
                Op::Delete as i8
            }
        });
        Chunk::new(
            batch,
            Int64Array::from(vec![0; rows.len()]),
            Some(Int8Array::from_iter_values(ops)),
        )
    }

    /// Every change retracts exactly the key's previous row, also when the
    /// rows were evicted under a small budget and after a restart.
    #[test]
    fn each_change_retracts_the_previous_row_across_evictions_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(16 << 10);
        let store = StateStore::open(dir.path())
            .unwrap()
            .with_budget(budget.clone());
        let state = store.query("q").unwrap();
        let layout = || MaterializedTable::new(schema(), vec![0]).unwrap();
        let mut op = ChangelogRetractions::new(layout());
        op.restore(1, &state).unwrap();
        let mut current: HashMap<String, i64> = HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..200u64 {
            if round == 120 {
                op = ChangelogRetractions::new(layout());
                op.restore(1, &state).unwrap();
            }
            let rows: Vec<(String, Option<i64>)> = (0..1 + next(30))
                .map(|_| {
                    let k = format!("key-{}", next(2_000));
                    (k, (next(4) > 0).then(|| next(1_000) as i64))
                })
                .collect();
            // The expected changes, row by row.
            let mut want = Vec::new();
            for (k, v) in &rows {
                if let Some(old) = current.remove(k) {
                    want.push((k.clone(), Some(old), Op::Delete));
                }
                if let Some(v) = v {
                    current.insert(k.clone(), *v);
                    want.push((k.clone(), Some(*v), Op::Upsert));
                }
            }
            let mut out = Vec::new();
            op.on_chunk(0, chunk(&rows), &mut out).unwrap();
            let mut got = Vec::new();
            for m in out {
                let Message::Chunk(c) = m else { continue };
                let keys = c
                    .batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let values = c
                    .batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                for i in 0..c.num_rows() {
                    let v = values.is_valid(i).then(|| values.value(i));
                    got.push((keys.value(i).to_string(), v, c.op(i)));
                }
            }
            assert_eq!(got, want, "round {round}");
            if round % 10 == 9 {
                let mut batch = StateWriteBatch::default();
                checkpoint(&mut op, 1, &mut batch).unwrap();
                state.commit(batch, round + 1, &[]).unwrap();
            }
        }
        assert!(budget.evicted() > 0, "nothing was evicted");
    }
}
