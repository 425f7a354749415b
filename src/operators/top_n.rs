//! Top-N per key: `ROW_NUMBER() OVER (PARTITION BY k ORDER BY o) AS rn` with
//! `WHERE rn <= N` above it (Nexmark q9's winning bids; "the 3 latest orders of
//! each customer").
//!
//! The input is a stream, so a row never leaves it: a partition's top N only
//! changes when a new row ranks among them, pushing the ones below it down a
//! rank and the last one out. The result is a table keyed by the partition key
//! (N = 1) or by the partition key and the rank; a chunk's changes are
//! coalesced into one upsert per rank that moved. Rows that tie keep their
//! arrival order (the first one ranks higher), as SQL leaves ties to the engine.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Int64Array, Int8Array, UInt64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_plan::PhysicalExpr;

use super::aggregate_inputs::RowBytes;
use super::evaluate::{evaluate_all, row_errors};
use super::join_rows::{cast_to, stored_columns};
use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::state::{QueryState, StateReader, StateWriteBatch};

/// What to rank and by what; the planner builds it from the window function.
#[derive(Clone)]
pub struct Ranking {
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    pub order: Vec<PhysicalSortExpr>,
    pub input: SchemaRef,
    /// The input's columns and the row number.
    pub output: SchemaRef,
}

struct Ranked {
    order: Box<[u8]>,
    row: Box<[u8]>,
    time: i64,
}

pub struct TopN {
    ranking: Ranking,
    n: usize,
    partition_rows: RowConverter,
    order_rows: RowConverter,
    input_rows: RowConverter,
    /// Each partition's best rows, best first.
    partitions: HashMap<Box<[u8]>, Vec<Ranked>>,
    dirty: HashSet<Box<[u8]>>,
    track_changes: bool,
}

impl TopN {
    pub fn new(ranking: Ranking, n: usize) -> Result<TopN> {
        let partition_fields = ranking
            .partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&ranking.input)?)))
            .collect::<Result<Vec<_>>>()?;
        let order_fields = ranking
            .order
            .iter()
            .map(|s| {
                Ok(SortField::new_with_options(
                    s.expr.data_type(&ranking.input)?,
                    s.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let input_fields = ranking
            .input
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(TopN {
            partition_rows: RowConverter::new(partition_fields)?,
            order_rows: RowConverter::new(order_fields)?,
            input_rows: RowConverter::new(input_fields)?,
            ranking,
            n,
            partitions: HashMap::new(),
            dirty: HashSet::new(),
            track_changes: true,
        })
    }

    /// The rows at ranks `from..` of each changed partition, with their row numbers.
    fn emit(&self, changed: &[(Box<[u8]>, usize)]) -> Result<Option<Chunk>> {
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut numbers = Vec::new();
        let mut times = Vec::new();
        for (key, from) in changed {
            let Some(list) = self.partitions.get(key) else {
                continue;
            };
            for (rank, r) in list.iter().enumerate().skip(*from) {
                rows.push(&r.row);
                numbers.push(rank as u64 + 1);
                times.push(r.time);
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        let mut columns = stored_columns(&self.input_rows, rows)?;
        columns.push(Arc::new(UInt64Array::from(numbers)));
        let columns = cast_to(&self.ranking.output, columns)?;
        let batch = RecordBatch::try_new(self.ranking.output.clone(), columns)?;
        Ok(Some(Chunk::new(
            batch,
            Int64Array::from(times),
            Some(Int8Array::from(vec![Op::Upsert as i8; n])),
        )))
    }
}

impl Operator for TopN {
    fn describe(&self) -> String {
        let list = |items: Vec<String>| items.join(", ");
        format!(
            "TopN: {} per [{}] ORDER BY [{}]",
            self.n,
            list(
                self.ranking
                    .partition
                    .iter()
                    .map(|e| e.to_string())
                    .collect()
            ),
            list(self.ranking.order.iter().map(|s| s.to_string()).collect()),
        )
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        if chunk.ops.is_some() {
            return Err(SluiceError::Internal("a Top-N received a changelog".into()));
        }
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let batch = &chunk.batch;
        let mut failures = Vec::new();
        let keys = RowBytes::convert(
            &self.partition_rows,
            &evaluate_all(&self.ranking.partition, batch, &mut failures)?,
        )?;
        let order_exprs: Vec<_> = self.ranking.order.iter().map(|s| s.expr.clone()).collect();
        let order =
            self.order_rows
                .convert_columns(&evaluate_all(&order_exprs, batch, &mut failures)?)?;
        out.extend(row_errors(|| self.describe(), &chunk, failures));
        let rows = self.input_rows.convert_columns(batch.columns())?;
        // Partition → its best rank that changed, in first-changed order.
        let mut changed: Vec<(Box<[u8]>, usize)> = Vec::new();
        let mut slot: HashMap<Box<[u8]>, usize> = HashMap::new();
        for i in 0..n {
            let key = keys.row(i);
            let o = order.row(i);
            let o = o.data();
            let list = match self.partitions.get_mut(key) {
                Some(list) => list,
                None => self.partitions.entry(key.into()).or_default(),
            };
            // After the rows it ties with: the first arrival keeps the better rank.
            let rank = list.partition_point(|r| r.order.as_ref() <= o);
            if rank >= self.n {
                continue;
            }
            list.insert(
                rank,
                Ranked {
                    order: o.into(),
                    row: rows.row(i).data().into(),
                    time: chunk.rowtime.value(i),
                },
            );
            list.truncate(self.n);
            match slot.get(key) {
                Some(&s) => changed[s].1 = changed[s].1.min(rank),
                None => {
                    slot.insert(key.into(), changed.len());
                    changed.push((key.into(), rank));
                }
            }
            if self.track_changes {
                self.dirty.insert(key.into());
            }
        }
        if let Some(chunk) = self.emit(&changed)? {
            out.push(Message::Chunk(chunk));
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }

    fn snapshot(&mut self, id: u16, batch: &mut StateWriteBatch) -> Result<()> {
        for key in self.dirty.drain() {
            let Some(list) = self.partitions.get(&key) else {
                continue;
            };
            let mut value = Vec::new();
            for r in list {
                for part in [&r.order, &r.row] {
                    value.extend_from_slice(&(part.len() as u32).to_be_bytes());
                    value.extend_from_slice(part);
                }
                value.extend_from_slice(&r.time.to_be_bytes());
            }
            batch.put(id, &key, value);
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        for (key, value) in state.scan(id)? {
            let mut list = Vec::new();
            let mut value = StateReader::new(&value, "Top-N");
            while !value.is_empty() {
                let order = value.prefixed()?.into();
                let row = value.prefixed()?.into();
                let time = value.i64()?;
                list.push(Ranked { order, row, time });
            }
            self.partitions.insert(key.into(), list);
        }
        Ok(())
    }

    fn without_checkpoints(&mut self) {
        self.track_changes = false;
        self.dirty.clear();
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, StringArray};
    use arrow::compute::SortOptions;
    use arrow::datatypes::{DataType, Field, Schema, UInt64Type};
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    fn top(n: usize) -> TopN {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("price", DataType::Int64, false),
        ]));
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("rn", DataType::UInt64, false));
        let ranking = Ranking {
            partition: vec![Arc::new(Column::new("k", 0))],
            order: vec![PhysicalSortExpr {
                expr: Arc::new(Column::new("price", 1)),
                options: SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            }],
            input: input.clone(),
            output: Arc::new(Schema::new(fields)),
        };
        TopN::new(ranking, n).unwrap()
    }

    fn chunk(rows: &[(&str, i64)]) -> Chunk {
        let input = top(1).ranking.input;
        let batch = RecordBatch::try_new(
            input,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        Chunk::new(batch, Int64Array::from(vec![0; rows.len()]), None)
    }

    /// (key, price, row number) of what `op` emits for `rows`.
    fn run(op: &mut TopN, rows: &[(&str, i64)]) -> Vec<(String, i64, u64)> {
        let mut out = Vec::new();
        op.on_chunk(chunk(rows), &mut out).unwrap();
        let mut result = Vec::new();
        for m in out {
            let Message::Chunk(c) = m else { continue };
            for i in 0..c.num_rows() {
                result.push((
                    c.batch.column(0).as_string::<i32>().value(i).to_string(),
                    c.batch
                        .column(1)
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .value(i),
                    c.batch.column(2).as_primitive::<UInt64Type>().value(i),
                ));
            }
        }
        result
    }

    #[test]
    fn a_better_row_pushes_the_ranks_below_it_down() {
        let mut op = top(2);
        assert_eq!(
            run(&mut op, &[("a", 5), ("b", 1)]),
            [("a".into(), 5, 1), ("b".into(), 1, 1)]
        );
        // 7 takes rank 1, 5 moves to rank 2; 3 does not make the top 2.
        assert_eq!(
            run(&mut op, &[("a", 7), ("a", 3)]),
            [("a".into(), 7, 1), ("a".into(), 5, 2)]
        );
        // 6 lands between them; 5 drops out.
        assert_eq!(run(&mut op, &[("a", 6)]), [("a".into(), 6, 2)]);
        // A tie ranks after the row already there.
        assert_eq!(run(&mut op, &[("b", 1)]), [("b".into(), 1, 2)]);
        assert_eq!(op.state_entries(), 4);
    }

    #[test]
    fn one_upsert_per_partition_and_chunk_for_the_top_1() {
        let mut op = top(1);
        assert_eq!(
            run(&mut op, &[("a", 1), ("a", 4), ("a", 2), ("b", 3)]),
            [("a".into(), 4, 1), ("b".into(), 3, 1)]
        );
        assert!(run(&mut op, &[("a", 4)]).is_empty());
        assert_eq!(op.state_entries(), 2);
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let mut op = top(2);
        run(&mut op, &[("a", 5), ("a", 7), ("b", 1)]);
        let mut batch = StateWriteBatch::default();
        op.snapshot(3, &mut batch).unwrap();
        state.commit(batch, 1, &[]).unwrap();
        let mut restored = top(2);
        restored.restore(3, &state).unwrap();
        assert_eq!(restored.state_entries(), 3);
        assert_eq!(run(&mut restored, &[("a", 6)]), [("a".into(), 6, 2)]);
        assert_eq!(
            run(&mut restored, &[("b", 2)]),
            [("b".into(), 2, 1), ("b".into(), 1, 2)]
        );
    }
}
