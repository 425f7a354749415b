//! GROUP BY over session windows. Each event arrives as a proto-session
//! `[t, t + gap)` (from `WindowAssign`); sessions of the same key that overlap it
//! merge into one, whose accumulators are the merge of theirs (DataFusion
//! `Accumulator::state` + `merge_batch`). A merge or extension changes a session's
//! bounds, which are part of the result key, so with EMIT CHANGES the old row is
//! retracted (a delete) before the new one is emitted. With EMIT FINAL a session
//! is emitted once, when the watermark passes its end + grace.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, Int8Array, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::RowConverter;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::aggregate_inputs::{self, WindowColumns};
use super::evaluate::{group_keys, row_errors};
use super::group_aggregate::AggregateSpec;
use super::{Checkpoint, Operator};
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::state::budget::MemoryUse;
use crate::state::table::{StateTable, StateTableId};
use crate::state::{QueryState, StateReader};

/// Bytes a key's session list costs beside its key and accumulators, for the
/// memory budget.
const SESSION_OVERHEAD: usize = 96;

struct Session {
    start: i64,
    /// Last event time + gap.
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
    rowtime: i64,
    /// Bounds of the row last emitted for this session (to retract it on change).
    emitted: Option<(i64, i64)>,
    changed: bool,
}

/// A row to emit: session key, start, end, and for an upsert the session's index in
/// its key's list and its rowtime (`None`: a retraction).
type OutRow = (Box<[u8]>, i64, i64, Option<(usize, i64)>);

pub struct SessionAggregate {
    /// Group expressions other than the window columns: the session key.
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    columns: WindowColumns,
    aggregates: Vec<AggregateSpec>,
    /// Group columns (key and window, in GROUP BY order) then aggregates.
    schema: SchemaRef,
    key_rows: RowConverter,
    state_rows: RowConverter,
    state_widths: Vec<usize>,
    gap: i64,
    grace: i64,
    emit_final: bool,
    sessions: HashMap<Box<[u8]>, Vec<Session>>,
    /// (end, key) of sessions, earliest first; entries for sessions that grew since
    /// are stale and skipped.
    expiry: BinaryHeap<Reverse<(i64, Box<[u8]>)>>,
    /// Keys whose sessions changed since the last checkpoint (the
    /// accumulators change in place, so the operator says which lists the
    /// checkpoint must write).
    state_dirty: HashSet<Box<[u8]>>,
    /// Each key's open sessions, written at checkpoints; read back whole at
    /// restore (the expiry heap needs every session's end).
    table: StateTable,
    /// Stored keys of the layout before state format 5, deleted at the next
    /// checkpoint (their lists are written to `table` then).
    legacy: Vec<Vec<u8>>,
    /// Memory of the open sessions, against the state memory budget.
    usage: MemoryUse,
}

impl SessionAggregate {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        columns: WindowColumns,
        aggregates: Vec<AggregateSpec>,
        schema: SchemaRef,
        gap: i64,
        grace: i64,
        emit_final: bool,
    ) -> Result<Self> {
        let n_groups = key_exprs.len() + 2;
        let key_rows = columns.key_layout(&schema, n_groups)?;
        let (state_rows, state_widths) = aggregate_inputs::state_layout(&aggregates)?;
        Ok(SessionAggregate {
            key_exprs,
            columns,
            aggregates,
            schema,
            key_rows,
            state_rows,
            state_widths,
            gap,
            grace,
            emit_final,
            sessions: HashMap::new(),
            expiry: BinaryHeap::new(),
            state_dirty: HashSet::new(),
            table: StateTable::write_only(StateTableId::of_node(0, 0)),
            legacy: Vec::new(),
            usage: MemoryUse::default(),
        })
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.aggregates
            .iter()
            .map(|a| a.function.create_accumulator().map_err(SluiceError::from))
            .collect()
    }

    /// Adds event `row` (time `t`) of the chunk to its key's sessions.
    fn add_event(
        &mut self,
        key: &[u8],
        t: i64,
        row: usize,
        args: &[Vec<ArrayRef>],
        masks: &[Option<BooleanArray>],
        retract: &mut Vec<(Box<[u8]>, i64, i64)>,
    ) -> Result<()> {
        let (lo, hi) = (t, t.saturating_add(self.gap));
        let fresh = self.new_accumulators()?;
        let sessions = self.sessions.entry(key.into()).or_default();
        let overlapping: Vec<usize> = sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.start < hi && lo < s.end)
            .map(|(i, _)| i)
            .collect();
        let mut merged = match overlapping.first() {
            None => Session {
                start: lo,
                end: hi,
                accumulators: fresh,
                rowtime: t,
                emitted: None,
                changed: true,
            },
            Some(_) => {
                // Remove from the back so indices stay valid; the first one survives.
                let mut parts: Vec<Session> = overlapping
                    .iter()
                    .rev()
                    .map(|&i| sessions.remove(i))
                    .collect();
                let mut keep = parts
                    .pop()
                    .ok_or_else(|| SluiceError::Internal("session".into()))?;
                for mut other in parts {
                    for (a, acc) in other.accumulators.iter_mut().enumerate() {
                        let state: Vec<ArrayRef> = acc
                            .state()?
                            .iter()
                            .map(|v| v.to_array())
                            .collect::<datafusion::error::Result<_>>()?;
                        keep.accumulators[a].merge_batch(&state)?;
                    }
                    keep.start = keep.start.min(other.start);
                    keep.end = keep.end.max(other.end);
                    keep.rowtime = keep.rowtime.max(other.rowtime);
                    if let Some((s, e)) = other.emitted {
                        retract.push((key.into(), s, e));
                    }
                }
                keep.start = keep.start.min(lo);
                keep.end = keep.end.max(hi);
                keep.rowtime = keep.rowtime.max(t);
                keep.changed = true;
                keep
            }
        };
        for (a, acc) in merged.accumulators.iter_mut().enumerate() {
            if let Some(mask) = &masks[a] {
                if !mask.value(row) {
                    continue;
                }
            }
            let slices: Vec<ArrayRef> = args[a].iter().map(|c| c.slice(row, 1)).collect();
            acc.update_batch(&slices)?;
        }
        self.expiry.push(Reverse((merged.end, key.into())));
        let pos = sessions.partition_point(|s| s.start < merged.start);
        sessions.insert(pos, merged);
        self.state_dirty.insert(key.into());
        Ok(())
    }

    /// Rows for `items` (key, start, end, session or None for a retraction).
    fn rows(&mut self, items: Vec<OutRow>) -> Result<Chunk> {
        let parser = self.key_rows.parser();
        let key_columns = self
            .key_rows
            .convert_rows(items.iter().map(|(k, ..)| parser.parse(k)))?;
        let starts: ArrayRef = Arc::new(TimestampMillisecondArray::from_iter_values(
            items.iter().map(|(_, s, ..)| *s),
        ));
        let ends: ArrayRef = Arc::new(TimestampMillisecondArray::from_iter_values(
            items.iter().map(|(_, _, e, _)| *e),
        ));
        let n_groups = self.key_exprs.len() + 2;
        let mut columns =
            self.columns
                .group_columns(&self.schema, n_groups, starts, ends, key_columns)?;
        for a in 0..self.aggregates.len() {
            let field = self.schema.field(n_groups + a);
            let mut values = Vec::with_capacity(items.len());
            for (key, _, _, session) in &items {
                values.push(match session {
                    Some((idx, _)) => {
                        let s = self
                            .sessions
                            .get_mut(key)
                            .and_then(|v| v.get_mut(*idx))
                            .ok_or_else(|| SluiceError::Internal("session vanished".into()))?;
                        s.accumulators[a].evaluate()?
                    }
                    // A retraction carries only its key; a non-nullable column
                    // still needs some value.
                    None if field.is_nullable() => ScalarValue::try_from(field.data_type())?,
                    None => ScalarValue::new_default(field.data_type())?,
                });
            }
            let array = if values.is_empty() {
                arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            columns.push(aggregate_inputs::conform(array, field.data_type())?);
        }
        let ops: Vec<i8> = items
            .iter()
            .map(|(.., s)| {
                if s.is_some() {
                    Op::Upsert as i8
                } else {
                    Op::Delete as i8
                }
            })
            .collect();
        let rowtime = Int64Array::from_iter_values(items.iter().map(|(_, _, e, s)| match s {
            Some((_, t)) => *t,
            None => *e - 1,
        }));
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Chunk::new(batch, rowtime, Some(Int8Array::from(ops))))
    }

    fn encode_sessions(&self, sessions: &mut [Session]) -> Result<Vec<u8>> {
        let width: usize = self.state_widths.iter().sum();
        let arrays = aggregate_inputs::accumulator_states(
            sessions.iter_mut().map(|s| &mut s.accumulators),
            width,
        )?;
        let rows = aggregate_inputs::RowBytes::convert(&self.state_rows, &arrays)?;
        let mut out = Vec::new();
        out.extend_from_slice(&(sessions.len() as u32).to_be_bytes());
        for (i, s) in sessions.iter().enumerate() {
            let (es, ee) = s.emitted.unwrap_or((i64::MIN, i64::MIN));
            for v in [s.start, s.end, s.rowtime, es, ee] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            let bytes = rows.row(i);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// Bytes the open sessions hold: keys, accumulators, bookkeeping.
    fn memory_size(&self) -> usize {
        self.sessions
            .iter()
            .map(|(k, list)| {
                k.len()
                    + SESSION_OVERHEAD
                    + list
                        .iter()
                        .map(|s| {
                            SESSION_OVERHEAD
                                + s.accumulators.iter().map(|a| a.size()).sum::<usize>()
                        })
                        .sum::<usize>()
            })
            .sum()
    }

    fn decode_sessions(&self, value: &[u8]) -> Result<Vec<Session>> {
        let mut value = StateReader::new(value, "session");
        let count = value.u32()? as usize;
        let mut sessions = Vec::with_capacity(count);
        let parser = self.state_rows.parser();
        for _ in 0..count {
            let mut v = [0i64; 5];
            for x in v.iter_mut() {
                *x = value.i64()?;
            }
            let row = value.prefixed()?;
            let arrays = self.state_rows.convert_rows([parser.parse(row)])?;
            let mut accumulators = self.new_accumulators()?;
            let mut c = 0;
            for (a, &w) in self.state_widths.iter().enumerate() {
                accumulators[a].merge_batch(&arrays[c..c + w])?;
                c += w;
            }
            sessions.push(Session {
                start: v[0],
                end: v[1],
                accumulators,
                rowtime: v[2],
                emitted: (v[3] != i64::MIN).then_some((v[3], v[4])),
                changed: false,
            });
        }
        Ok(sessions)
    }
}

impl SessionAggregate {
    /// Emits (under EMIT FINAL) and drops the sessions whose end plus grace is
    /// at or before `bound`.
    fn close_sessions(&mut self, bound: i64, out: &mut Vec<Message>) -> Result<()> {
        let mut closing: Vec<Box<[u8]>> = Vec::new();
        while let Some(Reverse((end, _))) = self.expiry.peek() {
            if end.saturating_add(self.grace) > bound {
                break;
            }
            if let Some(Reverse((_, key))) = self.expiry.pop() {
                closing.push(key);
            }
        }
        closing.sort();
        closing.dedup();
        let mut items = Vec::new();
        let mut closed_keys = Vec::new();
        for key in closing {
            let Some(sessions) = self.sessions.get(&key) else {
                continue;
            };
            for (idx, s) in sessions.iter().enumerate() {
                if s.end.saturating_add(self.grace) <= bound {
                    items.push((key.clone(), s.start, s.end, Some((idx, s.rowtime))));
                }
            }
            closed_keys.push(key);
        }
        if self.emit_final && !items.is_empty() {
            let chunk = self.rows(items)?;
            out.push(Message::Chunk(chunk));
        }
        for key in closed_keys {
            if let Some(sessions) = self.sessions.get_mut(&key) {
                let before = sessions.len();
                sessions.retain(|s| s.end.saturating_add(self.grace) > bound);
                if sessions.len() != before {
                    self.state_dirty.insert(key.clone());
                }
                if sessions.is_empty() {
                    self.sessions.remove(&key);
                }
            }
        }
        Ok(())
    }
}

impl Operator for SessionAggregate {
    fn describe(&self) -> String {
        format!(
            "SessionAggregate: gap={}ms, {}{}",
            self.gap,
            aggregate_inputs::describe_groups(&self.key_exprs, &self.aggregates),
            if self.emit_final { ", emit=final" } else { "" }
        )
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let (chunk, key_arrays) = group_keys(&self.key_exprs, chunk, || self.describe(), out)?;
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let batch = &chunk.batch;
        let mut failures = Vec::new();
        let rows = aggregate_inputs::RowBytes::convert(&self.key_rows, &key_arrays)?;
        let args = aggregate_inputs::arguments(&self.aggregates, batch, &mut failures)?;
        let masks = aggregate_inputs::filter_masks(&self.aggregates, batch, &mut failures)?;
        out.extend(row_errors(|| self.describe(), &chunk, failures));
        let mut retract = Vec::new();
        let mut touched: Vec<Box<[u8]>> = Vec::new();
        let mut seen: HashSet<Box<[u8]>> = HashSet::new();
        for i in 0..n {
            let key = rows.row(i);
            let t = chunk.rowtime.value(i);
            self.add_event(key, t, i, &args, &masks, &mut retract)?;
            if !self.emit_final && seen.insert(key.into()) {
                touched.push(key.into());
            }
        }
        if self.emit_final {
            return Ok(());
        }
        // Retractions of replaced bounds first, then the sessions' current rows.
        let mut items: Vec<OutRow> = Vec::new();
        let mut upserts = Vec::new();
        for key in touched {
            if let Some(sessions) = self.sessions.get_mut(&key) {
                for (idx, s) in sessions.iter_mut().enumerate() {
                    if !s.changed {
                        continue;
                    }
                    s.changed = false;
                    if let Some((es, ee)) = s.emitted {
                        if (es, ee) != (s.start, s.end) {
                            retract.push((key.clone(), es, ee));
                        }
                    }
                    s.emitted = Some((s.start, s.end));
                    upserts.push((key.clone(), s.start, s.end, Some((idx, s.rowtime))));
                }
            }
        }
        for (k, s, e) in retract {
            items.push((k, s, e, None));
        }
        items.extend(upserts);
        let chunk = self.rows(items)?;
        out.push(Message::Chunk(chunk));
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.sessions.values().map(Vec::len).sum()
    }

    fn on_watermark(
        &mut self,
        _input: usize,
        watermark: i64,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.close_sessions(watermark, out)?;
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn on_end(&mut self, _input: usize, out: &mut Vec<Message>) -> Result<()> {
        self.close_sessions(i64::MAX, out)
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
        for key in std::mem::take(&mut self.state_dirty) {
            match self.sessions.remove(&key) {
                None => self.table.delete(&key),
                Some(mut sessions) => {
                    let value = self.encode_sessions(&mut sessions);
                    self.sessions.insert(key.clone(), sessions);
                    self.table.put_at_barrier(batch, &key, &value?);
                }
            }
        }
        self.table.flush(batch);
        self.usage.set(self.memory_size());
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        self.table = StateTable::write_only(StateTableId::of_node(id, 0));
        self.table.attach(state);
        self.usage.join(state.budget().clone());
        // Before state format 5 the lists were stored under the operator's
        // node id; they are moved into the table at the next checkpoint.
        let legacy = state.scan(id)?;
        for (key, value, current) in self
            .table
            .scan()?
            .into_iter()
            .map(|(k, v)| (k, v, true))
            .chain(legacy.into_iter().map(|(k, v)| (k, v, false)))
        {
            let sessions = self.decode_sessions(&value)?;
            let key: Box<[u8]> = key.into();
            for s in &sessions {
                self.expiry.push(Reverse((s.end, key.clone())));
            }
            if !current {
                self.legacy.push(key.to_vec());
                self.state_dirty.insert(key.clone());
            }
            self.sessions.insert(key, sessions);
        }
        self.usage.set(self.memory_size());
        Ok(())
    }
}

/// The session bounds' column type (window columns are millisecond timestamps).
pub fn window_column_type() -> DataType {
    DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::checkpoint;
    use crate::state::StateWriteBatch;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use datafusion::functions_aggregate::{count::count_udaf, sum::sum_udaf};
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;

    use crate::state::StateStore;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Float64, true),
        ]))
    }

    /// SESSION (gap 5 s, grace 1 s) GROUP BY k: COUNT(v), SUM(v).
    fn operator(emit_final: bool) -> SessionAggregate {
        let input = input_schema();
        let v = col("v", &input).unwrap();
        let aggregates: Vec<AggregateSpec> = [("n", count_udaf()), ("s", sum_udaf())]
            .into_iter()
            .map(|(name, udaf)| AggregateSpec {
                function: Arc::new(
                    AggregateExprBuilder::new(udaf, vec![v.clone()])
                        .schema(input.clone())
                        .alias(name)
                        .build()
                        .unwrap(),
                ),
                filter: None,
            })
            .collect();
        let mut fields = vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("window_start", window_column_type(), false),
            Field::new("window_end", window_column_type(), false),
        ];
        fields.extend(
            aggregates
                .iter()
                .map(|a| a.function.field().as_ref().clone()),
        );
        SessionAggregate::new(
            vec![col("k", &input).unwrap()],
            WindowColumns { start: 1, end: 2 },
            aggregates,
            Arc::new(Schema::new(fields)),
            5_000,
            1_000,
            emit_final,
        )
        .unwrap()
    }

    /// Chunks of events for 6 keys with gaps around the session gap, each
    /// followed by a watermark 3 s behind the latest event.
    fn arrivals(seed: u64) -> Vec<(Chunk, i64)> {
        let mut rng = crate::operators::test_rng::TestRng::new(seed);
        let mut next = move |n: u64| rng.below(n);
        let mut t = 1_000_000i64;
        let mut out = Vec::new();
        for _ in 0..200 {
            let n = 1 + next(8) as usize;
            let mut keys = Vec::new();
            let mut times = Vec::new();
            for _ in 0..n {
                t += next(1_500) as i64;
                keys.push(format!("k{}", next(6)));
                times.push(t - next(2_500) as i64);
            }
            let batch = RecordBatch::try_new(
                input_schema(),
                vec![
                    Arc::new(StringArray::from_iter_values(keys.iter())),
                    Arc::new(Float64Array::from_iter_values(
                        times.iter().map(|t| (t % 7) as f64),
                    )),
                ],
            )
            .unwrap();
            out.push((Chunk::new(batch, Int64Array::from(times), None), t - 3_000));
        }
        out
    }

    /// The rows emitted, as text with their op, in order of emission within
    /// each chunk (sorted per chunk: a chunk's row order is not meaningful).
    fn run(input: &[(Chunk, i64)], emit_final: bool, restart_every: Option<usize>) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let mut op = operator(emit_final);
        op.restore(0, &state).unwrap();
        let mut out = Vec::new();
        for (i, (chunk, watermark)) in input.iter().enumerate() {
            op.on_chunk(0, chunk.clone(), &mut out).unwrap();
            op.on_watermark(0, *watermark, &mut out).unwrap();
            if restart_every.is_some_and(|n| i % n == n - 1) {
                let mut batch = StateWriteBatch::default();
                checkpoint(&mut op, 0, &mut batch).unwrap();
                state
                    .commit(batch, i as u64 + 1, &[vec![(0, i as i64)]])
                    .unwrap();
                op = operator(emit_final);
                op.restore(0, &state).unwrap();
            }
        }
        op.on_end(0, &mut out).unwrap();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for m in &out {
            let Message::Chunk(c) = m else { continue };
            let formatters: Vec<_> = c
                .batch
                .columns()
                .iter()
                .map(|a| ArrayFormatter::try_new(a.as_ref(), &options).unwrap())
                .collect();
            let mut these: Vec<String> = (0..c.num_rows())
                .map(|r| {
                    let mut row: Vec<String> =
                        formatters.iter().map(|f| f.value(r).to_string()).collect();
                    row.push(format!("{:?}", c.ops.as_ref().map(|o| o.value(r))));
                    row.join("|")
                })
                .collect();
            these.sort();
            rows.extend(these);
        }
        rows
    }

    #[test]
    fn sessions_survive_restarts() {
        for emit_final in [true, false] {
            for seed in [1, 2] {
                let input = arrivals(seed);
                let straight = run(&input, emit_final, None);
                assert!(straight.len() > 50, "{}", straight.len());
                for every in [1, 9] {
                    assert_eq!(
                        straight,
                        run(&input, emit_final, Some(every)),
                        "seed {seed}, final {emit_final}, restart every {every}"
                    );
                }
            }
        }
    }

    #[test]
    fn lists_of_the_layout_before_format_5_are_restored_and_moved() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let input = arrivals(3);
        let mut op = operator(true);
        let mut out = Vec::new();
        for (chunk, watermark) in &input[..20] {
            op.on_chunk(0, chunk.clone(), &mut out).unwrap();
            op.on_watermark(0, *watermark, &mut out).unwrap();
        }
        // Format 4 wrote each key's list under the node id.
        let mut batch = StateWriteBatch::default();
        let keys: Vec<Box<[u8]>> = op.sessions.keys().cloned().collect();
        assert!(!keys.is_empty());
        for key in &keys {
            let mut sessions = op.sessions.remove(key).unwrap();
            batch.put(0, key, op.encode_sessions(&mut sessions).unwrap());
            op.sessions.insert(key.clone(), sessions);
        }
        state.commit(batch, 1, &[vec![(0, 0)]]).unwrap();
        let mut restored = operator(true);
        restored.restore(0, &state).unwrap();
        assert_eq!(restored.state_entries(), op.state_entries());
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut restored, 0, &mut batch).unwrap();
        assert_eq!(batch.len(), 2 * keys.len(), "old keys deleted, new written");
        state.commit(batch, 2, &[vec![(0, 0)]]).unwrap();
        assert!(state.scan(0).unwrap().is_empty());
        let mut again = operator(true);
        again.restore(0, &state).unwrap();
        assert_eq!(again.state_entries(), op.state_entries());
    }
}
