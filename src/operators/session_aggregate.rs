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
use super::evaluate::{evaluate_all, row_errors};
use super::group_aggregate::AggregateSpec;
use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::state::{QueryState, StateReader, StateWriteBatch};

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
    /// Keys whose sessions changed since the last checkpoint.
    state_dirty: HashSet<Box<[u8]>>,
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

impl Operator for SessionAggregate {
    fn describe(&self) -> String {
        format!(
            "SessionAggregate: gap={}ms, {}{}",
            self.gap,
            aggregate_inputs::describe_groups(&self.key_exprs, &self.aggregates),
            if self.emit_final { ", emit=final" } else { "" }
        )
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let batch = &chunk.batch;
        let mut failures = Vec::new();
        let key_arrays = evaluate_all(&self.key_exprs, batch, &mut failures)?;
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

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        let mut closing: Vec<Box<[u8]>> = Vec::new();
        while let Some(Reverse((end, _))) = self.expiry.peek() {
            if end.saturating_add(self.grace) > watermark {
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
                if s.end.saturating_add(self.grace) <= watermark {
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
                sessions.retain(|s| s.end.saturating_add(self.grace) > watermark);
                if sessions.len() != before {
                    self.state_dirty.insert(key.clone());
                }
                if sessions.is_empty() {
                    self.sessions.remove(&key);
                }
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn snapshot(&mut self, id: u16, batch: &mut StateWriteBatch) -> Result<()> {
        for key in std::mem::take(&mut self.state_dirty) {
            match self.sessions.remove(&key) {
                None => batch.delete(id, &key),
                Some(mut sessions) => {
                    let value = self.encode_sessions(&mut sessions);
                    self.sessions.insert(key.clone(), sessions);
                    batch.put(id, &key, value?);
                }
            }
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        for (key, value) in state.scan(id)? {
            let sessions = self.decode_sessions(&value)?;
            let key: Box<[u8]> = key.into();
            for s in &sessions {
                self.expiry.push(Reverse((s.end, key.clone())));
            }
            self.sessions.insert(key, sessions);
        }
        Ok(())
    }
}

/// The session bounds' column type (window columns are millisecond timestamps).
pub fn window_column_type() -> DataType {
    DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None)
}
