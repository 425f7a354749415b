//! GROUP BY over an append-only stream, maintained incrementally with DataFusion
//! accumulators. Every chunk updates the touched groups and emits their new rows as
//! upserts keyed by the group columns.
//!
//! Group keys are Arrow row-format bytes (no string concatenation); each group holds
//! one accumulator per aggregate. At a checkpoint the accumulators' intermediate
//! state of changed groups is written to the operator's state table in Arrow row
//! format, and merged back into fresh accumulators when a group is read again.
//!
//! The groups in memory count against the state memory budget. Over it, a
//! checkpoint evicts the groups changed longest ago (they are in the state
//! table); a later row of an evicted group reads it back. Restore is lazy for
//! the same reason: nothing is loaded until a row needs its group. Windowed
//! groups stay in memory (their expiry index holds every open window's
//! groups) and are read back whole at restore.

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

use super::evaluate::{evaluate, group_keys, predicate_mask, row_errors};
use super::{Checkpoint, Operator};
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::state::budget::MemoryUse;
use crate::state::table::{StateTable, StateTableId};
use crate::state::QueryState;

/// Memory of a group besides its key and accumulators: its index entry and
/// its slot in every per-group vector (an estimate, for the budget).
const GROUP_OVERHEAD: usize = 160;

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
}

/// How a stored group's value is laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `[latest event time: i64 BE][input rows: i64 BE, retracting only][state row]`.
    Current,
    /// State format 3 and before (keys `[node][group]`): no event time.
    Legacy,
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
    /// False for a free slot (its window closed, or it was evicted).
    live: Vec<bool>,
    /// Checkpoints taken before the group last changed: eviction takes the
    /// groups changed longest ago first.
    used_at: Vec<u64>,
    /// Bytes each group holds, as counted in `usage`.
    bytes: Vec<usize>,
    /// Free slots, reused by new groups.
    free: Vec<u32>,
    window: Option<WindowState>,
    /// Aggregating a changelog: Delete rows are retractions, accumulators are
    /// DataFusion's retractable ("sliding") ones, and `rows` counts each group's
    /// live input rows so an emptied group becomes a delete.
    retracting: bool,
    rows_in: Vec<i64>,
    /// Every group's state, written at checkpoints.
    table: StateTable,
    /// Keys of groups that left the table since the last checkpoint.
    deleted: Vec<Box<[u8]>>,
    /// The table may hold groups that are not in memory (restored lazily,
    /// or evicted): a key new to memory is looked up there first.
    stored_elsewhere: bool,
    /// Memory of the groups held, against the state memory budget.
    usage: MemoryUse,
    /// Checkpoints taken so far.
    checkpoints: u64,
    /// Keys of state written by format 3 and before, deleted at the next
    /// checkpoint once their groups are in the table.
    legacy: Vec<Box<[u8]>>,
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
            used_at: Vec::new(),
            bytes: Vec::new(),
            free: Vec::new(),
            window: None,
            retracting: false,
            rows_in: Vec::new(),
            table: StateTable::write_only(StateTableId::of_node(0, 0)),
            deleted: Vec::new(),
            stored_elsewhere: false,
            usage: MemoryUse::default(),
            checkpoints: 0,
            legacy: Vec::new(),
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
        let g = match self.free.pop() {
            Some(g) => {
                let i = g as usize;
                self.keys[i] = key.clone();
                self.accumulators[i] = accs;
                self.is_dirty[i] = false;
                self.rowtime[i] = i64::MIN;
                self.live[i] = true;
                self.rows_in[i] = 0;
                self.used_at[i] = self.checkpoints;
                g
            }
            None => {
                self.keys.push(key.clone());
                self.accumulators.push(accs);
                self.is_dirty.push(false);
                self.rowtime.push(i64::MIN);
                self.live.push(true);
                self.rows_in.push(0);
                self.used_at.push(self.checkpoints);
                self.bytes.push(0);
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
        self.measure(g);
        Ok(g)
    }

    /// Counts the bytes group `g` holds now (only where they are budgeted:
    /// queries that checkpoint).
    fn measure(&mut self, g: u32) {
        if !self.table.persists() {
            return;
        }
        let i = g as usize;
        let accumulators: usize = self.accumulators[i]
            .iter()
            .map(|a| a.size() + std::mem::size_of::<Box<dyn Accumulator>>())
            .sum();
        let now = GROUP_OVERHEAD + 2 * self.keys[i].len() + accumulators;
        self.usage.add(now);
        self.usage.sub(self.bytes[i]);
        self.bytes[i] = now;
    }

    /// Frees group `g`'s slot; returns its key.
    fn free_group(&mut self, g: u32) -> Box<[u8]> {
        let i = g as usize;
        self.live[i] = false;
        self.is_dirty[i] = false;
        self.index.remove(&self.keys[i]);
        self.accumulators[i] = Vec::new();
        self.usage.sub(self.bytes[i]);
        self.bytes[i] = 0;
        self.free.push(g);
        std::mem::take(&mut self.keys[i])
    }

    /// Brings the stored groups of `keys` that are not in memory back into
    /// memory (after a restore or an eviction).
    fn load_stored(&mut self, rows: &super::aggregate_inputs::RowBytes, n: usize) -> Result<()> {
        if !self.stored_elsewhere {
            return Ok(());
        }
        let index = &self.index;
        let stored = self
            .table
            .read_missing((0..n).map(|i| rows.row(i)), |k| index.contains_key(k))?;
        let found: Vec<(&[u8], &[u8])> = stored.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        self.adopt(&found, Layout::Current)?;
        Ok(())
    }

    /// Makes groups of stored `(key, value)` entries: fresh accumulators that
    /// merge the stored state. Returns their slots.
    fn adopt(&mut self, entries: &[(&[u8], &[u8])], layout: Layout) -> Result<Vec<u32>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let corrupt = || SluiceError::Internal("corrupt aggregate state".into());
        let word = |v: &[u8], at: usize| -> Result<i64> {
            let bytes: [u8; 8] = v
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(corrupt)?;
            Ok(i64::from_be_bytes(bytes))
        };
        let time_width = if layout == Layout::Current { 8 } else { 0 };
        let count_width = if self.retracting { 8 } else { 0 };
        let head = time_width + count_width;
        if entries.iter().any(|(_, v)| v.len() < head) {
            return Err(corrupt());
        }
        let parser = self.state_rows.parser();
        let arrays = self
            .state_rows
            .convert_rows(entries.iter().map(|(_, v)| parser.parse(&v[head..])))?;
        let ends = if self.window.is_some() {
            let key_parser = self.key_rows.parser();
            let keys = self
                .key_rows
                .convert_rows(entries.iter().map(|(k, _)| key_parser.parse(k)))?;
            self.row_ends(&keys)?
        } else {
            None
        };
        let mut groups = Vec::with_capacity(entries.len());
        for (i, (key, value)) in entries.iter().enumerate() {
            let end = ends.as_ref().map_or(i64::MAX, |e| e[i]);
            let g = self.group_for(key, end)?;
            let slot = g as usize;
            if self.retracting {
                self.rows_in[slot] = word(value, time_width)?;
            }
            self.rowtime[slot] = match layout {
                Layout::Current => word(value, 0)?,
                // The latest event time was not saved; a window's last
                // instant stands in (an EMIT FINAL row needs a real timestamp).
                Layout::Legacy if end < i64::MAX => end - 1,
                Layout::Legacy => i64::MIN,
            };
            let mut c = 0;
            for (a, &w) in self.state_widths.iter().enumerate() {
                let states: Vec<ArrayRef> =
                    arrays[c..c + w].iter().map(|s| s.slice(i, 1)).collect();
                self.accumulators[slot][a].merge_batch(&states)?;
                c += w;
            }
            self.measure(g);
            groups.push(g);
        }
        Ok(groups)
    }

    /// Over the memory budget: evicts the groups changed longest ago (all
    /// of them are in the table, written by the checkpoint that calls this)
    /// until the budget is back under its margin. Windowed groups stay.
    fn evict_if_over(&mut self) {
        if self.window.is_some() {
            return;
        }
        let Some(budget) = self.usage.budget() else {
            return;
        };
        let mut excess = budget.excess();
        if excess == 0 || self.index.is_empty() {
            return;
        }
        let mut live: Vec<u32> = self.index.values().copied().collect();
        // Roughly how many groups free the excess; the oldest of them first.
        let average = (self.usage.bytes() / live.len()).max(1);
        let k = (excess / average + 1).min(live.len());
        live.select_nth_unstable_by_key(k - 1, |&g| self.used_at[g as usize]);
        let mut evicted = 0u64;
        for g in live {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(self.bytes[g as usize]);
            self.free_group(g);
            evicted += 1;
        }
        budget.count_evicted(evicted);
        self.stored_elsewhere = true;
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
        for &g in &closed {
            let key = self.free_group(g);
            self.deleted.push(key);
        }
        Ok(out)
    }

    fn mark_dirty(&mut self, g: u32) {
        self.used_at[g as usize] = self.checkpoints;
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

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        if chunk.ops.is_some() && !self.retracting {
            return Err(SluiceError::Internal(
                "GroupAggregate received a changelog without retraction support".into(),
            ));
        }
        if chunk.num_rows() == 0 {
            return Ok(());
        }
        let (chunk, key_arrays) = group_keys(&self.group_exprs, chunk, || self.describe(), out)?;
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let batch = &chunk.batch;
        let mut failures = Vec::new();
        let rows = super::aggregate_inputs::RowBytes::convert(&self.key_rows, &key_arrays)?;
        let ends = self.row_ends(&key_arrays)?;
        self.load_stored(&rows, n)?;

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

    fn on_watermark(
        &mut self,
        _input: usize,
        watermark: i64,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if let Some(chunk) = self.close_windows(watermark)? {
            out.push(Message::Chunk(chunk));
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn on_end(&mut self, _input: usize, out: &mut Vec<Message>) -> Result<()> {
        if let Some(chunk) = self.close_windows(i64::MAX)? {
            out.push(Message::Chunk(chunk));
        }
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
        for key in self.deleted.drain(..) {
            self.table.delete(&key);
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.retain(|&g| self.live[g as usize] && self.is_dirty[g as usize]);
        // Ascending and unique, so the state rows line up with `dirty`.
        dirty.sort_unstable();
        dirty.dedup();
        for &g in &dirty {
            self.is_dirty[g as usize] = false;
        }
        if !dirty.is_empty() {
            let width: usize = self.state_widths.iter().sum();
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
            let mut value = Vec::new();
            for (i, &g) in dirty.iter().enumerate() {
                let slot = g as usize;
                if self.retracting && self.rows_in[slot] == 0 {
                    // Every input row was retracted: the group left the
                    // table (its delete was emitted), and a fresh group
                    // stands for it if the key comes back.
                    let key = self.free_group(g);
                    self.table.delete(&key);
                    continue;
                }
                value.clear();
                value.extend_from_slice(&self.rowtime[slot].to_be_bytes());
                if self.retracting {
                    value.extend_from_slice(&self.rows_in[slot].to_be_bytes());
                }
                value.extend_from_slice(rows.row(i));
                self.table.put(&self.keys[slot], &value);
                self.measure(g);
            }
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
        if self.window.is_some() {
            // The expiry index needs every open window's groups.
            let entries = self.table.scan()?;
            let pairs: Vec<(&[u8], &[u8])> = entries
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            self.adopt(&pairs, Layout::Current)?;
        } else {
            self.stored_elsewhere = self.table.has_committed()?;
        }
        // State of format 3 and before: into memory, and into the table at
        // the next checkpoint.
        let legacy = state.scan(id)?;
        let pairs: Vec<(&[u8], &[u8])> = legacy
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        for g in self.adopt(&pairs, Layout::Legacy)? {
            self.mark_dirty(g);
        }
        self.legacy = legacy.into_iter().map(|(k, _)| k.into()).collect();
        Ok(())
    }
}

/// Output field for an aggregate (used by the planner).
pub fn aggregate_field(function: &AggregateFunctionExpr) -> Field {
    function.field().as_ref().clone()
}

#[cfg(test)]
mod tests {
    use crate::operators::checkpoint;
    use crate::state::StateWriteBatch;
    use std::collections::BTreeMap;

    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Schema};
    use datafusion::functions_aggregate::{count::count_udaf, min_max::max_udaf, sum::sum_udaf};
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;

    use crate::state::budget::MemoryBudget;
    use crate::state::StateStore;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// `SELECT k, COUNT(v), SUM(v), MAX(v) ... GROUP BY k`; over a changelog
    /// (where MAX cannot take a row back) `SUM(v)` again in place of MAX.
    fn operator(retracting: bool) -> GroupAggregate {
        let input = input_schema();
        let v = col("v", &input).unwrap();
        let third = if retracting { sum_udaf() } else { max_udaf() };
        let udafs = [count_udaf(), sum_udaf(), third];
        let aggregates: Vec<AggregateSpec> = udafs
            .iter()
            .enumerate()
            .map(|(i, udaf)| {
                let function = AggregateExprBuilder::new(udaf.clone(), vec![v.clone()])
                    .schema(input.clone())
                    .alias(format!("{}_{i}", udaf.name()))
                    .build()
                    .unwrap();
                AggregateSpec {
                    function: Arc::new(function),
                    filter: None,
                }
            })
            .collect();
        let mut fields = vec![Field::new("k", DataType::Utf8, false)];
        fields.extend(aggregates.iter().map(|a| aggregate_field(&a.function)));
        let op = GroupAggregate::new(
            vec![col("k", &input).unwrap()],
            aggregates,
            Arc::new(Schema::new(fields)),
        )
        .unwrap();
        if retracting {
            op.retracting().unwrap()
        } else {
            op
        }
    }

    /// Chunks of `(key, value, added)` rows over `keys` keys; with
    /// `retracting`, some rows retract a row added before.
    fn chunks(keys: u64, retracting: bool) -> Vec<Vec<(String, i64, bool)>> {
        let mut rng = crate::operators::test_rng::TestRng::new(0x9e37_79b9_7f4a_7c15);
        let mut present: Vec<(String, i64)> = Vec::new();
        (0..300)
            .map(|_| {
                (0..1 + rng.below(60))
                    .map(|_| {
                        if retracting && !present.is_empty() && rng.below(3) == 0 {
                            let i = rng.below(present.len() as u64) as usize;
                            let (k, v) = present.swap_remove(i);
                            (k, v, false)
                        } else {
                            let row = (format!("key-{}", rng.below(keys)), rng.below(1_000) as i64);
                            if retracting {
                                present.push(row.clone());
                            }
                            (row.0, row.1, true)
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// When row `j` of chunk `i` happened: out of order, so a group's latest
    /// time is often from an earlier chunk.
    fn event_time(i: usize, j: usize) -> i64 {
        ((i * 131 + j * 17) % 1_000) as i64
    }

    fn chunk(i: usize, rows: &[(String, i64, bool)], retracting: bool) -> Chunk {
        let batch = RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        let ops = retracting.then(|| {
            Int8Array::from_iter_values(rows.iter().map(|r| {
                if r.2 {
                    Op::Upsert as i8
                } else {
                    Op::Delete as i8
                }
            }))
        });
        Chunk::new(
            batch,
            Int64Array::from_iter_values((0..rows.len()).map(|j| event_time(i, j))),
            ops,
        )
    }

    /// Latest (count, sum, max) per key from the operator's output, and the
    /// time of its latest row.
    fn apply(
        out: Vec<Message>,
        table: &mut BTreeMap<String, (i64, i64, i64)>,
        times: &mut BTreeMap<String, i64>,
    ) {
        for m in out {
            let Message::Chunk(c) = m else { continue };
            let columns = c.batch.columns();
            let keys = columns[0].as_any().downcast_ref::<StringArray>().unwrap();
            let counts = columns[1].as_any().downcast_ref::<Int64Array>().unwrap();
            let sums = columns[2].as_any().downcast_ref::<Int64Array>().unwrap();
            let maxes = columns[3].as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..c.num_rows() {
                let key = keys.value(i).to_string();
                times.insert(key.clone(), c.rowtime.value(i));
                if c.op(i) == Op::Delete {
                    table.remove(&key);
                } else {
                    table.insert(key, (counts.value(i), sums.value(i), maxes.value(i)));
                }
            }
        }
    }

    fn oracle(
        chunks: &[Vec<(String, i64, bool)>],
        retracting: bool,
    ) -> BTreeMap<String, (i64, i64, i64)> {
        let mut rows: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (k, v, added) in chunks.iter().flatten() {
            let values = rows.entry(k.clone()).or_default();
            if *added {
                values.push(*v);
            } else {
                let at = values.iter().position(|x| x == v).unwrap();
                values.swap_remove(at);
            }
        }
        rows.into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| {
                let sum = v.iter().sum();
                let third = if retracting {
                    sum
                } else {
                    *v.iter().max().unwrap()
                };
                (k, (v.len() as i64, sum, third))
            })
            .collect()
    }

    /// Groups evicted under a small budget, a restart that loads nothing up
    /// front, and retracted groups leaving the table: the results equal the
    /// oracle's.
    fn over_budget_is_exact(retracting: bool) {
        const BUDGET: usize = 48 << 10;
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(BUDGET);
        let store = StateStore::open(dir.path())
            .unwrap()
            .with_budget(budget.clone());
        let q = store.query("q").unwrap();
        let input = chunks(3_000, retracting);
        let mut op = operator(retracting);
        op.restore(5, &q).unwrap();
        let mut got = BTreeMap::new();
        let mut times = BTreeMap::new();
        let mut epoch = 0;
        for (i, rows) in input.iter().enumerate() {
            if i == 150 {
                // A restart right after the checkpoint of chunk 149.
                drop(op);
                op = operator(retracting);
                op.restore(5, &q).unwrap();
                assert_eq!(op.group_count(), 0, "restore loaded groups up front");
            }
            let mut out = Vec::new();
            op.on_chunk(0, chunk(i, rows, retracting), &mut out)
                .unwrap();
            apply(out, &mut got, &mut times);
            if i % 10 == 9 {
                let mut batch = StateWriteBatch::default();
                checkpoint(&mut op, 5, &mut batch).unwrap();
                epoch += 1;
                q.commit(batch, epoch, &[]).unwrap();
                assert!(
                    budget.used() <= BUDGET,
                    "{} bytes after a checkpoint",
                    budget.used()
                );
            }
        }
        assert!(budget.evicted() > 0, "no group was evicted");
        let want = oracle(&input, retracting);
        let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
        let wrong: Vec<String> = keys
            .into_iter()
            .filter(|k| got.get(*k) != want.get(*k))
            .map(|k| format!("{k}: got {:?}, want {:?}", got.get(k), want.get(k)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of {} groups differ, e.g. {:?}",
            wrong.len(),
            want.len(),
            &wrong[..wrong.len().min(5)]
        );
        if !retracting {
            // A group's row carries its latest event time, across evictions
            // and the restart.
            let mut latest = BTreeMap::new();
            for (i, rows) in input.iter().enumerate() {
                for (j, (k, _, _)) in rows.iter().enumerate() {
                    let t = latest.entry(k.clone()).or_insert(i64::MIN);
                    *t = event_time(i, j).max(*t);
                }
            }
            assert_eq!(times, latest);
        }
    }

    #[test]
    fn groups_over_the_memory_budget_are_evicted_and_read_back() {
        over_budget_is_exact(false);
    }

    #[test]
    fn retracting_groups_over_the_memory_budget_are_exact() {
        over_budget_is_exact(true);
    }

    /// Groups written by state format 3 (`[node][group]`, no event time) are
    /// read at restore and moved into the state table at the next checkpoint.
    #[test]
    fn format_3_groups_move_into_the_state_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let input = chunks(50, false);
        let (first, rest) = input.split_at(100);

        // Format 3's values are today's without the leading event time.
        let current = store.query("current").unwrap();
        let mut op = operator(false);
        op.restore(5, &current).unwrap();
        let mut got = BTreeMap::new();
        let mut times = BTreeMap::new();
        for (i, rows) in first.iter().enumerate() {
            let mut out = Vec::new();
            op.on_chunk(0, chunk(i, rows, false), &mut out).unwrap();
            apply(out, &mut got, &mut times);
        }
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut op, 5, &mut batch).unwrap();
        current.commit(batch, 1, &[]).unwrap();
        let mut table = StateTable::write_only(StateTableId::of_node(5, 0));
        table.attach(&current);
        let groups = table.scan().unwrap();
        assert!(!groups.is_empty());
        let old = store.query("old").unwrap();
        let mut batch = StateWriteBatch::default();
        for (key, value) in &groups {
            batch.put(5, key, value[8..].to_vec());
        }
        old.commit(batch, 1, &[]).unwrap();

        let mut op = operator(false);
        op.restore(5, &old).unwrap();
        assert_eq!(op.group_count(), groups.len());
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut op, 5, &mut batch).unwrap();
        old.commit(batch, 2, &[]).unwrap();
        assert!(old.scan(5).unwrap().is_empty(), "format 3 keys were kept");
        let mut table = StateTable::write_only(StateTableId::of_node(5, 0));
        table.attach(&old);
        assert_eq!(table.scan().unwrap().len(), groups.len());

        // The migrated groups go on counting.
        let mut op = operator(false);
        op.restore(5, &old).unwrap();
        for (i, rows) in rest.iter().enumerate() {
            let mut out = Vec::new();
            op.on_chunk(0, chunk(100 + i, rows, false), &mut out)
                .unwrap();
            apply(out, &mut got, &mut times);
        }
        assert_eq!(got, oracle(&input, false));
    }
}
