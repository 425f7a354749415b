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
//!
//! Each partition's list is written to the operator's state table when it
//! changes (the table's epoch buffer keeps the last version until the
//! checkpoint). The lists in memory count against the state memory budget;
//! over it, a checkpoint evicts the partitions used longest ago, and a later
//! row of an evicted partition reads its list back. Restore is lazy.

use std::collections::HashMap;
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
use super::{Checkpoint, Operator};
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::state::budget::MemoryUse;
use crate::state::table::{StateTable, StateTableId};
use crate::state::{QueryState, StateReader};

/// Memory of a partition besides its rows (an estimate, for the budget).
const PARTITION_OVERHEAD: usize = 96;
/// Memory of a ranked row besides its bytes.
const RANKED_OVERHEAD: usize = 48;

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

/// One partition's best rows, best first.
#[derive(Default)]
struct Partition {
    ranked: Vec<Ranked>,
    /// Checkpoints taken before its last use: eviction takes the partitions
    /// used longest ago first.
    used_at: u64,
    /// Bytes it holds, as counted in the operator's usage.
    bytes: usize,
}

impl Partition {
    /// The list as stored: per row its order bytes and row bytes (each after
    /// its u32 length) and its time.
    fn encode(&self) -> Vec<u8> {
        let mut value = Vec::new();
        for r in &self.ranked {
            for part in [&r.order, &r.row] {
                value.extend_from_slice(&(part.len() as u32).to_be_bytes());
                value.extend_from_slice(part);
            }
            value.extend_from_slice(&r.time.to_be_bytes());
        }
        value
    }

    fn decode(value: &[u8]) -> Result<Partition> {
        let mut ranked = Vec::new();
        let mut value = StateReader::new(value, "Top-N");
        while !value.is_empty() {
            let order = value.prefixed()?.into();
            let row = value.prefixed()?.into();
            let time = value.i64()?;
            ranked.push(Ranked { order, row, time });
        }
        Ok(Partition {
            ranked,
            ..Partition::default()
        })
    }

    fn size(&self, key: &[u8]) -> usize {
        PARTITION_OVERHEAD
            + key.len()
            + self
                .ranked
                .iter()
                .map(|r| RANKED_OVERHEAD + r.order.len() + r.row.len())
                .sum::<usize>()
    }
}

pub struct TopN {
    ranking: Ranking,
    n: usize,
    partition_rows: RowConverter,
    order_rows: RowConverter,
    input_rows: RowConverter,
    /// The partitions in memory.
    partitions: HashMap<Box<[u8]>, Partition>,
    /// Every partition's list, written when it changes.
    table: StateTable,
    /// The table may hold partitions that are not in memory (restored
    /// lazily, or evicted): a key new to memory is looked up there first.
    stored_elsewhere: bool,
    /// Memory of the partitions held, against the state memory budget.
    usage: MemoryUse,
    /// Checkpoints taken so far.
    checkpoints: u64,
    /// Keys of lists written by state format 3 and before, deleted at the
    /// next checkpoint once the lists are in the table.
    legacy: Vec<Vec<u8>>,
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
            table: StateTable::write_only(StateTableId::of_node(0, 0)),
            stored_elsewhere: false,
            usage: MemoryUse::default(),
            checkpoints: 0,
            legacy: Vec::new(),
        })
    }

    /// Brings the stored partitions of `keys` that are not in memory back.
    fn load_stored(&mut self, keys: &RowBytes, n: usize) -> Result<()> {
        if !self.stored_elsewhere {
            return Ok(());
        }
        let partitions = &self.partitions;
        let stored = self
            .table
            .read_missing((0..n).map(|i| keys.row(i)), |k| partitions.contains_key(k))?;
        for (key, value) in stored {
            let partition = Partition::decode(&value)?;
            self.adopt(key, partition);
        }
        Ok(())
    }

    /// Holds `partition` in memory, counted.
    fn adopt(&mut self, key: &[u8], mut partition: Partition) {
        partition.used_at = self.checkpoints;
        partition.bytes = partition.size(key);
        self.usage.add(partition.bytes);
        if let Some(old) = self.partitions.insert(key.into(), partition) {
            self.usage.sub(old.bytes);
        }
    }

    /// Over the memory budget: evicts the partitions used longest ago (all
    /// of them are in the table, written by the checkpoint that calls this)
    /// until the budget is back under its margin.
    fn evict_if_over(&mut self) {
        let Some(budget) = self.usage.budget() else {
            return;
        };
        let mut excess = budget.excess();
        if excess == 0 || self.partitions.is_empty() {
            return;
        }
        let mut ages: Vec<(u64, &Box<[u8]>)> = self
            .partitions
            .iter()
            .map(|(k, p)| (p.used_at, k))
            .collect();
        // Roughly how many partitions free the excess; the oldest of them first.
        let average = (self.usage.bytes() / ages.len()).max(1);
        let k = (excess / average + 1).min(ages.len());
        ages.select_nth_unstable_by_key(k - 1, |(at, _)| *at);
        let victims: Vec<Box<[u8]>> = ages.into_iter().map(|(_, key)| key.clone()).collect();
        let mut evicted = 0u64;
        for key in victims {
            if excess == 0 {
                break;
            }
            if let Some(p) = self.partitions.remove(&key) {
                self.usage.sub(p.bytes);
                excess = excess.saturating_sub(p.bytes);
                evicted += 1;
            }
        }
        budget.count_evicted(evicted);
        self.stored_elsewhere = true;
    }

    /// The rows at ranks `from..` of each changed partition, with their row numbers.
    fn emit(&self, changed: &[(Box<[u8]>, usize)]) -> Result<Option<Chunk>> {
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut numbers = Vec::new();
        let mut times = Vec::new();
        for (key, from) in changed {
            let Some(partition) = self.partitions.get(key) else {
                continue;
            };
            for (rank, r) in partition.ranked.iter().enumerate().skip(*from) {
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

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
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
        self.load_stored(&keys, n)?;
        let now = self.checkpoints;
        // Partition → its best rank that changed, in first-changed order.
        let mut changed: Vec<(Box<[u8]>, usize)> = Vec::new();
        let mut slot: HashMap<Box<[u8]>, usize> = HashMap::new();
        for i in 0..n {
            let key = keys.row(i);
            let o = order.row(i);
            let o = o.data();
            let partition = match self.partitions.get_mut(key) {
                Some(p) => p,
                None => self.partitions.entry(key.into()).or_default(),
            };
            partition.used_at = now;
            let list = &mut partition.ranked;
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
        }
        // Each changed list once into the table, counted anew.
        for (key, _) in &changed {
            if let Some(p) = self.partitions.get_mut(key) {
                if self.table.persists() {
                    self.table.put(key, &p.encode());
                }
                let bytes = p.size(key);
                self.usage.add(bytes);
                self.usage.sub(p.bytes);
                p.bytes = bytes;
            }
        }
        if let Some(chunk) = self.emit(&changed)? {
            out.push(Message::Chunk(chunk));
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.partitions.values().map(|p| p.ranked.len()).sum()
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
        self.table.flush(batch);
        self.checkpoints += 1;
        self.evict_if_over();
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        self.table = StateTable::write_only(StateTableId::of_node(id, 0));
        self.table.attach(state);
        self.usage.join(state.budget().clone());
        self.stored_elsewhere = self.table.has_committed()?;
        // Lists of format 3 and before (the same value layout): into memory,
        // and into the table at the next checkpoint.
        for (key, value) in state.scan(id)? {
            self.adopt(&key, Partition::decode(&value)?);
            self.table.put(&key, &value);
            self.legacy.push(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::operators::checkpoint;
    use crate::state::StateWriteBatch;
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
        op.on_chunk(0, chunk(rows), &mut out).unwrap();
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
        op.restore(3, &state).unwrap();
        run(&mut op, &[("a", 5), ("a", 7), ("b", 1)]);
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut op, 3, &mut batch).unwrap();
        state.commit(batch, 1, &[]).unwrap();
        let mut restored = top(2);
        restored.restore(3, &state).unwrap();
        assert_eq!(restored.state_entries(), 0, "restore loaded lists up front");
        assert_eq!(run(&mut restored, &[("a", 6)]), [("a".into(), 6, 2)]);
        assert_eq!(
            run(&mut restored, &[("b", 2)]),
            [("b".into(), 2, 1), ("b".into(), 1, 2)]
        );
    }

    /// Partitions evicted under a small budget and a restart that loads
    /// nothing up front rank exactly as an operator holding everything.
    #[test]
    fn evicted_partitions_rank_as_if_they_never_left() {
        let dir = tempfile::tempdir().unwrap();
        let budget = crate::state::budget::MemoryBudget::new(8 << 10);
        let store = crate::state::StateStore::open(dir.path())
            .unwrap()
            .with_budget(budget.clone());
        let state = store.query("q").unwrap();
        let mut memory = top(2);
        let mut op = top(2);
        op.restore(3, &state).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let keys: Vec<String> = (0..400).map(|i| format!("p{i}")).collect();
        for round in 0..150u64 {
            if round == 100 {
                op = top(2);
                op.restore(3, &state).unwrap();
            }
            let rows: Vec<(&str, i64)> = (0..1 + next(20))
                .map(|_| (keys[next(400) as usize].as_str(), next(1_000) as i64))
                .collect();
            assert_eq!(
                run(&mut op, &rows),
                run(&mut memory, &rows),
                "round {round}"
            );
            if round % 10 == 9 {
                let mut batch = StateWriteBatch::default();
                checkpoint(&mut op, 3, &mut batch).unwrap();
                state.commit(batch, round + 1, &[]).unwrap();
                assert!(budget.used() <= 8 << 10, "{} bytes", budget.used());
            }
        }
        assert!(budget.evicted() > 0, "nothing was evicted");
    }
}
