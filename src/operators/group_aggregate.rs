//! GROUP BY over an append-only stream, maintained incrementally with DataFusion
//! accumulators. Every chunk updates the touched groups and emits their new rows as
//! upserts keyed by the group columns.
//!
//! Group keys are Arrow row-format bytes (no string concatenation); each group holds
//! one accumulator per aggregate. At a checkpoint the accumulators' intermediate
//! state of changed groups is written in Arrow row format, and merged back into
//! fresh accumulators on restore.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, Int8Array, UInt32Array};
use arrow::compute::{filter, take};
use arrow::datatypes::{Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::evaluate::{evaluate, evaluate_all, predicate_mask, row_errors};
use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::state::{QueryState, StateWriteBatch};

/// One aggregate of the SELECT: its function, argument expressions and FILTER.
pub struct AggregateSpec {
    pub function: Arc<AggregateFunctionExpr>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// A GROUP BY over windows: one of the group columns is the window end, and a
/// group is final (and its state freed) once the watermark passes end + grace.
#[derive(Debug, Clone, Copy)]
pub struct WindowedGroups {
    /// Position of the window-end column among the group expressions.
    pub end_key: usize,
    pub grace: i64,
    /// EMIT FINAL: a group's row is emitted once, when its window closes.
    pub emit_final: bool,
}

/// Window bookkeeping of a windowed GROUP BY.
struct WindowState {
    config: WindowedGroups,
    /// Window end of every group slot.
    ends: Vec<i64>,
    /// Groups by window end, earliest first.
    expiry: BinaryHeap<Reverse<(i64, u32)>>,
    /// Slots of closed groups, reused by new ones.
    free: Vec<u32>,
    /// State keys of groups closed since the last checkpoint.
    deleted: Vec<Box<[u8]>>,
}

pub struct GroupAggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<AggregateSpec>,
    /// Group columns then aggregate columns.
    schema: SchemaRef,
    key_rows: RowConverter,
    state_rows: RowConverter,
    /// How many state fields each aggregate has, in order.
    state_widths: Vec<usize>,
    index: HashMap<Box<[u8]>, u32>,
    keys: Vec<Box<[u8]>>,
    accumulators: Vec<Vec<Box<dyn Accumulator>>>,
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// Latest event time seen per group: the timestamp of the group's output row.
    rowtime: Vec<i64>,
    /// False for a slot whose window closed (free for reuse).
    live: Vec<bool>,
    window: Option<WindowState>,
    /// Aggregating a changelog: Delete rows are retractions, accumulators are
    /// DataFusion's retractable ("sliding") ones, and `rows` counts each group's
    /// live input rows so an emptied group becomes a delete.
    retracting: bool,
    rows_in: Vec<i64>,
}

impl GroupAggregate {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<AggregateSpec>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let key_fields: Vec<SortField> = schema
            .fields()
            .iter()
            .take(group_exprs.len())
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let (state_rows, state_widths) = super::aggregate_inputs::state_layout(&aggregates)?;
        Ok(GroupAggregate {
            group_exprs,
            aggregates,
            schema,
            key_rows: RowConverter::new(key_fields)?,
            state_rows,
            state_widths,
            index: HashMap::new(),
            keys: Vec::new(),
            accumulators: Vec::new(),
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            rowtime: Vec::new(),
            live: Vec::new(),
            window: None,
            retracting: false,
            rows_in: Vec::new(),
        })
    }

    /// Aggregates a changelog of retractions (Delete) and additions (Upsert).
    pub fn retracting(mut self) -> Result<Self> {
        let (state_rows, state_widths) =
            super::aggregate_inputs::sliding_state_layout(&self.aggregates)?;
        self.state_rows = state_rows;
        self.state_widths = state_widths;
        self.retracting = true;
        Ok(self)
    }

    fn new_accumulator(&self, a: &AggregateSpec) -> Result<Box<dyn Accumulator>> {
        Ok(if self.retracting {
            a.function.create_sliding_accumulator()?
        } else {
            a.function.create_accumulator()?
        })
    }

    /// Makes this a windowed aggregate (see [`WindowedGroups`]).
    pub fn with_window(mut self, config: WindowedGroups) -> Self {
        self.window = Some(WindowState {
            config,
            ends: Vec::new(),
            expiry: BinaryHeap::new(),
            free: Vec::new(),
            deleted: Vec::new(),
        });
        self
    }

    /// Groups currently held in memory.
    pub fn group_count(&self) -> usize {
        self.index.len()
    }

    /// The group of `key`, created if new; `end` is its window end (windowed only).
    fn group_for(&mut self, key: &[u8], end: i64) -> Result<u32> {
        if let Some(&g) = self.index.get(key) {
            return Ok(g);
        }
        let mut accs = Vec::with_capacity(self.aggregates.len());
        for a in &self.aggregates {
            accs.push(self.new_accumulator(a)?);
        }
        let key: Box<[u8]> = key.into();
        let reused = self.window.as_mut().and_then(|w| w.free.pop());
        let g = match reused {
            Some(g) => {
                let i = g as usize;
                self.keys[i] = key.clone();
                self.accumulators[i] = accs;
                self.is_dirty[i] = false;
                self.rowtime[i] = i64::MIN;
                self.live[i] = true;
                self.rows_in[i] = 0;
                g
            }
            None => {
                self.keys.push(key.clone());
                self.accumulators.push(accs);
                self.is_dirty.push(false);
                self.rowtime.push(i64::MIN);
                self.live.push(true);
                self.rows_in.push(0);
                (self.keys.len() - 1) as u32
            }
        };
        if let Some(w) = self.window.as_mut() {
            if w.ends.len() <= g as usize {
                w.ends.resize(g as usize + 1, i64::MIN);
            }
            w.ends[g as usize] = end;
            w.expiry.push(Reverse((end, g)));
        }
        self.index.insert(key, g);
        Ok(g)
    }

    /// Window end of each row (windowed aggregates), from the end key column.
    fn row_ends(&self, key_arrays: &[ArrayRef]) -> Result<Option<Vec<i64>>> {
        let Some(w) = &self.window else {
            return Ok(None);
        };
        let col = arrow::compute::cast(
            &key_arrays[w.config.end_key],
            &arrow::datatypes::DataType::Int64,
        )?;
        let ends = col
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| SluiceError::Internal("window end is not a timestamp".into()))?;
        Ok(Some(ends.iter().map(|v| v.unwrap_or(i64::MAX)).collect()))
    }

    /// Closes the groups whose window ended at or before `watermark - grace`:
    /// EMIT FINAL rows come out now, and their state is freed either way.
    fn close_windows(&mut self, watermark: i64) -> Result<Option<Chunk>> {
        let Some(w) = self.window.as_mut() else {
            return Ok(None);
        };
        let mut closed = Vec::new();
        while let Some(Reverse((end, g))) = w.expiry.peek().copied() {
            if end.saturating_add(w.config.grace) > watermark {
                break;
            }
            w.expiry.pop();
            if self.live[g as usize] && w.ends[g as usize] == end {
                closed.push(g);
            }
        }
        if closed.is_empty() {
            return Ok(None);
        }
        let emit_final = w.config.emit_final;
        let out = if emit_final {
            Some(self.emit(&closed)?)
        } else {
            None
        };
        let w = self
            .window
            .as_mut()
            .ok_or_else(|| SluiceError::Internal("window state".into()))?;
        for &g in &closed {
            let i = g as usize;
            self.live[i] = false;
            self.is_dirty[i] = false;
            self.index.remove(&self.keys[i]);
            w.deleted.push(std::mem::take(&mut self.keys[i]));
            self.accumulators[i] = Vec::new();
            w.free.push(g);
        }
        Ok(out)
    }

    fn mark_dirty(&mut self, g: u32) {
        if !self.is_dirty[g as usize] {
            self.is_dirty[g as usize] = true;
            self.dirty.push(g);
        }
    }

    /// Current rows of `groups`, as upserts.
    fn emit(&mut self, groups: &[u32]) -> Result<Chunk> {
        let parser = self.key_rows.parser();
        let key_columns = self
            .key_rows
            .convert_rows(groups.iter().map(|&g| parser.parse(&self.keys[g as usize])))?;
        let mut columns: Vec<ArrayRef> = key_columns;
        for a in 0..self.aggregates.len() {
            let mut values = Vec::with_capacity(groups.len());
            for &g in groups {
                values.push(self.accumulators[g as usize][a].evaluate()?);
            }
            let field = self.schema.field(self.group_exprs.len() + a);
            let array = if values.is_empty() {
                arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            columns.push(super::aggregate_inputs::conform(array, field.data_type())?);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        // A group whose every input row was retracted leaves the table.
        let ops: Vec<i8> = groups
            .iter()
            .map(|&g| {
                if self.retracting && self.rows_in[g as usize] <= 0 {
                    Op::Delete as i8
                } else {
                    Op::Upsert as i8
                }
            })
            .collect();
        Ok(Chunk::new(
            batch,
            Int64Array::from_iter_values(groups.iter().map(|&g| self.rowtime[g as usize])),
            Some(Int8Array::from(ops)),
        ))
    }
}

impl Operator for GroupAggregate {
    fn describe(&self) -> String {
        format!(
            "GroupAggregate: {}",
            super::aggregate_inputs::describe_groups(&self.group_exprs, &self.aggregates)
        )
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        if chunk.ops.is_some() && !self.retracting {
            return Err(SluiceError::Internal(
                "GroupAggregate received a changelog without retraction support".into(),
            ));
        }
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let batch = &chunk.batch;
        let mut failures = Vec::new();
        let key_arrays = evaluate_all(&self.group_exprs, batch, &mut failures)?;
        let rows = super::aggregate_inputs::RowBytes::convert(&self.key_rows, &key_arrays)?;
        let ends = self.row_ends(&key_arrays)?;

        // Group id of every row, and the groups this chunk touches in first-seen order.
        let mut group_of_row = Vec::with_capacity(n);
        let mut touched: Vec<u32> = Vec::new();
        let mut slot: HashMap<u32, usize> = HashMap::new();
        let mut counts: Vec<usize> = Vec::new();
        for i in 0..n {
            let end = ends.as_ref().map_or(i64::MAX, |e| e[i]);
            let g = self.group_for(rows.row(i), end)?;
            let s = *slot.entry(g).or_insert_with(|| {
                touched.push(g);
                counts.push(0);
                touched.len() - 1
            });
            counts[s] += 1;
            group_of_row.push(s);
        }
        // Counting sort: rows of the same group become one contiguous range.
        let mut starts = Vec::with_capacity(counts.len());
        let mut acc = 0usize;
        for c in &counts {
            starts.push(acc);
            acc += c;
        }
        let mut fill = starts.clone();
        let mut order = vec![0u32; n];
        for (row, &s) in group_of_row.iter().enumerate() {
            order[fill[s]] = row as u32;
            fill[s] += 1;
        }
        let order = UInt32Array::from(order);
        // Additions (true) and retractions (false), in group order.
        let adds: Option<BooleanArray> = match &chunk.ops {
            Some(ops) => {
                let ops = take(ops, &order, None)?;
                let ops = ops
                    .as_any()
                    .downcast_ref::<Int8Array>()
                    .ok_or_else(|| SluiceError::Internal("ops are not Int8".into()))?;
                Some(ops.iter().map(|o| Some(o.unwrap_or(1) >= 0)).collect())
            }
            None => None,
        };
        if let Some(adds) = &adds {
            for (s, &g) in touched.iter().enumerate() {
                let slice = adds.slice(starts[s], counts[s]);
                let added = slice.true_count() as i64;
                self.rows_in[g as usize] += added - (counts[s] as i64 - added);
            }
        }

        for (a, spec) in self.aggregates.iter().enumerate() {
            let args: Vec<ArrayRef> = spec
                .function
                .expressions()
                .iter()
                .map(|e| {
                    evaluate(e, batch, &mut failures)
                        .and_then(|arr| take(&arr, &order, None).map_err(SluiceError::from))
                })
                .collect::<Result<_>>()?;
            let mask: Option<BooleanArray> = match &spec.filter {
                Some(f) => {
                    let m = predicate_mask(f, batch, &mut failures)?;
                    let m = take(&m, &order, None)?;
                    m.as_any().downcast_ref::<BooleanArray>().cloned()
                }
                None => None,
            };
            for (s, &g) in touched.iter().enumerate() {
                let (start, len) = (starts[s], counts[s]);
                let mut slices: Vec<ArrayRef> = args.iter().map(|c| c.slice(start, len)).collect();
                if let Some(mask) = &mask {
                    let m = mask.slice(start, len);
                    slices = slices
                        .iter()
                        .map(|c| filter(c, &m))
                        .collect::<std::result::Result<_, _>>()?;
                }
                match &adds {
                    None => self.accumulators[g as usize][a].update_batch(&slices)?,
                    Some(adds) => {
                        // The FILTER mask, if any, applies to additions and
                        // retractions alike.
                        let mut sign = adds.slice(start, len);
                        if let Some(mask) = &mask {
                            sign = filter(&sign, &mask.slice(start, len))?
                                .as_any()
                                .downcast_ref::<BooleanArray>()
                                .cloned()
                                .ok_or_else(|| SluiceError::Internal("mask".into()))?;
                        }
                        let removed = arrow::compute::not(&sign)?;
                        let plus: Vec<ArrayRef> = slices
                            .iter()
                            .map(|c| filter(c, &sign))
                            .collect::<std::result::Result<_, _>>()?;
                        let minus: Vec<ArrayRef> = slices
                            .iter()
                            .map(|c| filter(c, &removed))
                            .collect::<std::result::Result<_, _>>()?;
                        // Additions first: a row retracted in this chunk may have
                        // been added earlier in the same chunk.
                        let acc = &mut self.accumulators[g as usize][a];
                        acc.update_batch(&plus)?;
                        if minus.first().is_some_and(|c| !c.is_empty()) {
                            acc.retract_batch(&minus)?;
                        }
                    }
                }
            }
        }
        for &g in &touched {
            self.mark_dirty(g);
        }
        let times = take(&chunk.rowtime, &order, None)?;
        let times = times
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .unwrap_or_else(|| Int64Array::new_null(0));
        for (s, &g) in touched.iter().enumerate() {
            if let Some(t) = arrow::compute::max(&times.slice(starts[s], counts[s])) {
                let slot = &mut self.rowtime[g as usize];
                *slot = (*slot).max(t);
            }
        }
        if !self.window.as_ref().is_some_and(|w| w.config.emit_final) {
            let emitted = self.emit(&touched)?;
            out.push(Message::Chunk(emitted));
        }
        out.extend(row_errors(|| self.describe(), &chunk, failures));
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.index.len()
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        if let Some(chunk) = self.close_windows(watermark)? {
            out.push(Message::Chunk(chunk));
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn snapshot(&mut self, id: u16, batch: &mut StateWriteBatch) -> Result<()> {
        if let Some(w) = self.window.as_mut() {
            for key in w.deleted.drain(..) {
                batch.delete(id, &key);
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.retain(|&g| self.live[g as usize] && self.is_dirty[g as usize]);
        if dirty.is_empty() {
            return Ok(());
        }
        let width: usize = self.state_widths.iter().sum();
        // Ascending and unique, so the state rows line up with `dirty`.
        dirty.sort_unstable();
        dirty.dedup();
        for &g in &dirty {
            self.is_dirty[g as usize] = false;
        }
        let mut wanted = dirty.iter().peekable();
        let groups = self
            .accumulators
            .iter_mut()
            .enumerate()
            .filter_map(|(g, accs)| {
                (wanted.peek() == Some(&&(g as u32))).then(|| {
                    wanted.next();
                    accs
                })
            });
        let arrays = super::aggregate_inputs::accumulator_states(groups, width)?;
        let rows = super::aggregate_inputs::RowBytes::convert(&self.state_rows, &arrays)?;
        for (i, &g) in dirty.iter().enumerate() {
            let mut value = Vec::new();
            if self.retracting {
                // How many input rows the group holds, ahead of the state row.
                value.extend_from_slice(&self.rows_in[g as usize].to_be_bytes());
            }
            value.extend_from_slice(rows.row(i));
            batch.put(id, &self.keys[g as usize], value);
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        let entries = state.scan(id)?;
        if entries.is_empty() {
            return Ok(());
        }
        let prefix = if self.retracting { 8 } else { 0 };
        let corrupt = || SluiceError::Internal("corrupt aggregate state".into());
        let mut counts = Vec::with_capacity(entries.len());
        for (_, v) in &entries {
            if prefix > 0 {
                let head: [u8; 8] = v
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(corrupt)?;
                counts.push(i64::from_be_bytes(head));
            }
        }
        let parser = self.state_rows.parser();
        let arrays = self.state_rows.convert_rows(
            entries
                .iter()
                .map(|(_, v)| parser.parse(&v[prefix.min(v.len())..])),
        )?;
        let ends = if self.window.is_some() {
            let key_parser = self.key_rows.parser();
            let keys = self
                .key_rows
                .convert_rows(entries.iter().map(|(k, _)| key_parser.parse(k)))?;
            self.row_ends(&keys)?
        } else {
            None
        };
        for (i, (key, _)) in entries.iter().enumerate() {
            let end = ends.as_ref().map_or(i64::MAX, |e| e[i]);
            let g = self.group_for(key, end)? as usize;
            if let Some(&c) = counts.get(i) {
                self.rows_in[g] = c;
            }
            // The latest event time is not saved; a window's last instant stands
            // in (an EMIT FINAL row needs a real timestamp).
            if end < i64::MAX {
                self.rowtime[g] = end - 1;
            }
            let mut c = 0;
            for (a, &w) in self.state_widths.iter().enumerate() {
                let states: Vec<ArrayRef> =
                    arrays[c..c + w].iter().map(|s| s.slice(i, 1)).collect();
                self.accumulators[g][a].merge_batch(&states)?;
                c += w;
            }
        }
        Ok(())
    }
}

/// Output field for an aggregate (used by the planner).
pub fn aggregate_field(function: &AggregateFunctionExpr) -> Field {
    function.field().as_ref().clone()
}
