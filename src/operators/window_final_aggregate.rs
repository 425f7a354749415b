//! GROUP BY over tumbling, hopping and cumulating windows with EMIT FINAL,
//! vectorised.
//!
//! - Windows are assigned here, from each event's time, instead of copying the
//!   event once per window upstream: a hopping event that belongs to twelve windows
//!   has its key converted and looked up once.
//! - Keys (the non-window group columns, Arrow row format) are interned to small
//!   ids; each open window maps key ids to its group slots.
//! - Each window holds DataFusion `GroupsAccumulator`s for all its groups, so a
//!   chunk costs one `update_batch` call per window and aggregate, not one per
//!   group.
//!
//! Nothing is emitted until the watermark passes a window's end + grace; then the
//! whole window is evaluated at once (consuming the accumulators, which EMIT FINAL
//! never needs again) and its state is dropped. `GroupAggregate` keeps per-group
//! `Accumulator`s for EMIT CHANGES, which must read a value without consuming it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, Int8Array, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::RowConverter;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_plan::PhysicalExpr;

use super::aggregate_inputs::{self, WindowColumns};
use super::group_aggregate::AggregateSpec;
use super::window_assign::windows_of;
use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::sql::WindowKind;
use crate::state::{QueryState, StateWriteBatch};

const WATERMARK_KEY: &[u8] = b"w";

/// A multiplicative hash for small integer keys (key ids are dense).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap = HashMap<u32, u32, BuildHasherDefault<IdHasher>>;

/// The groups of one window.
struct WindowGroups {
    start: i64,
    /// Key id → group slot.
    slots: IdMap,
    /// Key id of each group.
    key_ids: Vec<u32>,
    rowtime: Vec<i64>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Changed since the last checkpoint.
    dirty: bool,
}

/// Interned keys: one id per distinct key held by an open window.
#[derive(Default)]
struct Keys {
    ids: HashMap<Box<[u8]>, u32>,
    bytes: Vec<Box<[u8]>>,
    /// Open windows holding each key; an id is freed when it drops to zero.
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl Keys {
    fn intern(&mut self, key: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let key: Box<[u8]> = key.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.bytes[id as usize] = key.clone();
                id
            }
            None => {
                self.bytes.push(key.clone());
                self.refs.push(0);
                (self.bytes.len() - 1) as u32
            }
        };
        self.ids.insert(key, id);
        id
    }

    fn release(&mut self, id: u32) {
        let r = &mut self.refs[id as usize];
        *r = r.saturating_sub(1);
        self.forget_if_unused(id);
    }

    /// Frees `id` if no open window holds it (once, however often it is called).
    fn forget_if_unused(&mut self, id: u32) {
        if self.refs[id as usize] == 0 && self.ids.remove(&self.bytes[id as usize]).is_some() {
            self.bytes[id as usize] = Box::default();
            self.free.push(id);
        }
    }
}

pub struct WindowFinalAggregate {
    /// Group expressions other than the window columns.
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    columns: WindowColumns,
    aggregates: Vec<AggregateSpec>,
    /// Group columns (in GROUP BY order, window columns included) then aggregates.
    schema: SchemaRef,
    kind: WindowKind,
    grace: i64,
    key_rows: RowConverter,
    state_rows: RowConverter,
    state_widths: Vec<usize>,
    keys: Keys,
    /// Open windows by end.
    windows: BTreeMap<i64, WindowGroups>,
    watermark: i64,
    /// State keys of groups whose window closed since the last checkpoint.
    deleted: Vec<Vec<u8>>,
}

impl WindowFinalAggregate {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        columns: WindowColumns,
        aggregates: Vec<AggregateSpec>,
        schema: SchemaRef,
        kind: WindowKind,
        grace: i64,
    ) -> Result<Self> {
        let n_groups = key_exprs.len() + 2;
        let key_rows = columns.key_layout(&schema, n_groups)?;
        let (state_rows, state_widths) = aggregate_inputs::state_layout(&aggregates)?;
        Ok(WindowFinalAggregate {
            key_exprs,
            columns,
            aggregates,
            schema,
            kind,
            grace,
            key_rows,
            state_rows,
            state_widths,
            keys: Keys::default(),
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            deleted: Vec::new(),
        })
    }

    fn new_window(&self, start: i64) -> Result<WindowGroups> {
        let mut accumulators = Vec::with_capacity(self.aggregates.len());
        for a in &self.aggregates {
            let f = a.function.clone();
            accumulators.push(if let Some(p) = buffered_percentile(&f) {
                Box::new(p)
            } else if f.groups_accumulator_supported() {
                f.create_groups_accumulator()?
            } else {
                // Functions without a vectorised form get DataFusion's adapter over
                // their per-group Accumulator.
                Box::new(GroupsAccumulatorAdapter::new(move || {
                    f.create_accumulator()
                })) as Box<dyn GroupsAccumulator>
            });
        }
        Ok(WindowGroups {
            start,
            slots: IdMap::default(),
            key_ids: Vec::new(),
            rowtime: Vec::new(),
            accumulators,
            dirty: true,
        })
    }

    /// The state key of a group: window end and start, then the key.
    fn state_key(&self, end: i64, start: i64, id: u32) -> Vec<u8> {
        let mut k = Vec::with_capacity(16 + self.keys.bytes[id as usize].len());
        k.extend_from_slice(&end.to_be_bytes());
        k.extend_from_slice(&start.to_be_bytes());
        k.extend_from_slice(&self.keys.bytes[id as usize]);
        k
    }

    /// Every group's row of a closed window, as upserts; consumes the window.
    fn emit(&mut self, end: i64, mut window: WindowGroups) -> Result<Chunk> {
        let n = window.key_ids.len();
        let parser = self.key_rows.parser();
        let keys = self.key_rows.convert_rows(
            window
                .key_ids
                .iter()
                .map(|&id| parser.parse(&self.keys.bytes[id as usize])),
        )?;
        let starts: ArrayRef = Arc::new(TimestampMillisecondArray::from_value(window.start, n));
        let ends: ArrayRef = Arc::new(TimestampMillisecondArray::from_value(end, n));
        let n_groups = self.key_exprs.len() + 2;
        let mut columns = self
            .columns
            .group_columns(&self.schema, n_groups, starts, ends, keys)?;
        for (a, acc) in window.accumulators.iter_mut().enumerate() {
            let field = self.schema.field(n_groups + a);
            columns.push(aggregate_inputs::conform(
                acc.evaluate(EmitTo::All)?,
                field.data_type(),
            )?);
        }
        for &id in &window.key_ids {
            self.deleted.push(self.state_key(end, window.start, id));
        }
        for &id in &window.key_ids {
            self.keys.release(id);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Chunk::new(
            batch,
            Int64Array::from(window.rowtime),
            Some(Int8Array::from(vec![Op::Upsert as i8; n])),
        ))
    }

    /// The slot of key `id` in `window`, created if new.
    fn slot(keys: &mut Keys, window: &mut WindowGroups, id: u32) -> usize {
        if let Some(&g) = window.slots.get(&id) {
            return g as usize;
        }
        let g = window.key_ids.len();
        window.slots.insert(id, g as u32);
        window.key_ids.push(id);
        window.rowtime.push(i64::MIN);
        keys.refs[id as usize] += 1;
        g
    }
}

/// `approx_percentile_cont(x, p)` with a constant p and no DISTINCT gets the
/// buffered accumulator (see `functions::percentile`).
fn buffered_percentile(
    f: &datafusion::physical_expr::aggregate::AggregateFunctionExpr,
) -> Option<crate::functions::percentile::BufferedPercentile> {
    if f.fun().name() != "approx_percentile_cont" || f.is_distinct() || f.expressions().len() != 2 {
        return None;
    }
    let literal = f.expressions()[1]
        .downcast_ref::<datafusion::physical_expr::expressions::Literal>()?
        .value()
        .clone();
    let p = match literal.cast_to(&DataType::Float64).ok()? {
        datafusion::scalar::ScalarValue::Float64(Some(p)) if (0.0..=1.0).contains(&p) => p,
        _ => return None,
    };
    Some(crate::functions::percentile::BufferedPercentile::new(
        p,
        f.field().data_type().clone(),
    ))
}

impl Operator for WindowFinalAggregate {
    fn describe(&self) -> String {
        format!(
            "WindowFinalAggregate: {:?}, groupBy=[{}], aggr=[{}], emit=final",
            self.kind,
            self.key_exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.aggregates
                .iter()
                .map(|a| a.function.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn state_entries(&self) -> usize {
        self.windows.values().map(|w| w.key_ids.len()).sum()
    }

    fn on_chunk(&mut self, chunk: Chunk, _out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let batch = &chunk.batch;
        let key_arrays = aggregate_inputs::evaluate(&self.key_exprs, batch)?;
        let rows = self.key_rows.convert_columns(&key_arrays)?;
        let ids: Vec<u32> = (0..n)
            .map(|i| self.keys.intern(rows.row(i).as_ref()))
            .collect();

        // Rows per open window. Window ends are multiples of the step past the
        // chunk's first end, so a window's bucket is found by arithmetic.
        let step = match self.kind {
            WindowKind::Tumbling { size } => size,
            WindowKind::Hopping { advance, .. } => advance,
            WindowKind::Cumulate { step, .. } => step,
            WindowKind::Session { gap } => gap,
        };
        let first_end = chunk
            .rowtime
            .values()
            .iter()
            .min()
            .map(|&t| {
                let mut first = i64::MAX;
                windows_of(self.kind, t, |_, end| first = first.min(end));
                first
            })
            .unwrap_or(0);
        let mut buckets: Vec<(i64, i64, Vec<u32>)> = Vec::new();
        // Windows too far from the chunk's first for a dense index (a chunk
        // spanning a very long time): their own buckets, found by end.
        let mut far: HashMap<i64, usize> = HashMap::new();
        const DENSE: usize = 1 << 16;
        let closed_before = self.watermark.saturating_sub(self.grace);
        for (i, t) in chunk.rowtime.values().iter().enumerate() {
            windows_of(self.kind, *t, |start, end| {
                if end <= closed_before {
                    return;
                }
                let dense = end
                    .checked_sub(first_end)
                    .and_then(|d| usize::try_from(d / step).ok())
                    .filter(|s| *s < DENSE);
                let bucket = match dense {
                    Some(s) => {
                        if buckets.len() <= s {
                            buckets.resize_with(s + 1, || (i64::MIN, 0, Vec::new()));
                        }
                        s
                    }
                    None => *far.entry(end).or_insert_with(|| {
                        // Far buckets live after every dense slot.
                        if buckets.len() < DENSE {
                            buckets.resize_with(DENSE, || (i64::MIN, 0, Vec::new()));
                        }
                        buckets.push((i64::MIN, 0, Vec::new()));
                        buckets.len() - 1
                    }),
                };
                let (e, st, rows) = &mut buckets[bucket];
                *e = end;
                *st = start;
                rows.push(i as u32);
            });
        }
        buckets.retain(|(.., rows)| !rows.is_empty());
        let args = aggregate_inputs::arguments(&self.aggregates, batch)?;
        let masks = aggregate_inputs::filter_masks(&self.aggregates, batch)?;

        for (end, start, idx) in buckets {
            if !self.windows.contains_key(&end) {
                let w = self.new_window(start)?;
                self.windows.insert(end, w);
            }
            let window = self
                .windows
                .get_mut(&end)
                .ok_or_else(|| SluiceError::Internal("window vanished".into()))?;
            window.dirty = true;
            let mut groups = Vec::with_capacity(idx.len());
            for &i in &idx {
                let g = Self::slot(&mut self.keys, window, ids[i as usize]);
                let t = chunk.rowtime.value(i as usize);
                if t > window.rowtime[g] {
                    window.rowtime[g] = t;
                }
                groups.push(g);
            }
            let total = window.key_ids.len();
            // Usually every row of a chunk falls in each of its windows: no copies.
            let all_rows = idx.len() == n;
            let idx = UInt32Array::from(idx);
            for (a, acc) in window.accumulators.iter_mut().enumerate() {
                let values: Vec<ArrayRef> = if all_rows {
                    args[a].clone()
                } else {
                    args[a]
                        .iter()
                        .map(|c| take(c, &idx, None))
                        .collect::<std::result::Result<_, _>>()?
                };
                let mask = match &masks[a] {
                    Some(m) if all_rows => Some(m.clone()),
                    Some(m) => {
                        let t = take(m, &idx, None)?;
                        t.as_any().downcast_ref::<BooleanArray>().cloned()
                    }
                    None => None,
                };
                acc.update_batch(&values, &groups, mask.as_ref(), total)?;
            }
        }
        // Keys of events whose windows had all closed are held by no window.
        for &id in &ids {
            self.keys.forget_if_unused(id);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let closed: Vec<i64> = self
            .windows
            .keys()
            .take_while(|end| end.saturating_add(self.grace) <= watermark)
            .copied()
            .collect();
        for end in closed {
            if let Some(window) = self.windows.remove(&end) {
                let chunk = self.emit(end, window)?;
                out.push(Message::Chunk(chunk));
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn snapshot(&mut self, id: u16, batch: &mut StateWriteBatch) -> Result<()> {
        for key in self.deleted.drain(..) {
            batch.delete(id, &key);
        }
        // Group keys are at least 16 bytes, so this one-byte key cannot collide.
        // With the watermark restored, an event replayed after a crash cannot
        // reopen a window that had closed.
        // Not the end-of-input watermark: input added to a file later must not be
        // late after a restart.
        if self.watermark < i64::MAX {
            batch.put(id, WATERMARK_KEY, self.watermark.to_be_bytes().to_vec());
        }
        let dirty: Vec<i64> = self
            .windows
            .iter()
            .filter(|(_, w)| w.dirty)
            .map(|(e, _)| *e)
            .collect();
        for end in dirty {
            let Some(mut window) = self.windows.remove(&end) else {
                continue;
            };
            window.dirty = false;
            let n = window.key_ids.len();
            // `state` consumes the accumulators: read it, then merge it back into
            // fresh ones so the window carries on unchanged.
            let mut columns: Vec<ArrayRef> = Vec::new();
            for acc in window.accumulators.iter_mut() {
                columns.extend(acc.state(EmitTo::All)?);
            }
            let groups: Vec<usize> = (0..n).collect();
            let mut accumulators = self.new_window(window.start)?.accumulators;
            let mut c = 0;
            for (a, &w) in self.state_widths.iter().enumerate() {
                accumulators[a].merge_batch(&columns[c..c + w], &groups, n)?;
                c += w;
            }
            window.accumulators = accumulators;
            let rows = self.state_rows.convert_columns(&columns)?;
            for (g, &key_id) in window.key_ids.iter().enumerate() {
                let mut value = window.rowtime[g].to_be_bytes().to_vec();
                value.extend_from_slice(rows.row(g).as_ref());
                batch.put(id, &self.state_key(end, window.start, key_id), value);
            }
            self.windows.insert(end, window);
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        let entries = state.scan(id)?;
        if entries.is_empty() {
            return Ok(());
        }
        let corrupt = || SluiceError::Internal("corrupt window state".into());
        let i64_at = |b: &[u8], at: usize| -> Result<i64> {
            let bytes: [u8; 8] = b
                .get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(corrupt)?;
            Ok(i64::from_be_bytes(bytes))
        };
        let (marks, entries): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(k, _)| k.as_slice() == WATERMARK_KEY);
        if let Some((_, v)) = marks.first() {
            self.watermark = i64_at(v, 0)?;
        }
        let parser = self.state_rows.parser();
        let states = self.state_rows.convert_rows(
            entries
                .iter()
                .map(|(_, v)| parser.parse(v.get(8..).unwrap_or_default())),
        )?;
        // Entries are in key order: by window end, then start, then key.
        let mut by_window: BTreeMap<i64, (i64, Vec<u32>)> = BTreeMap::new();
        for (i, (k, _)) in entries.iter().enumerate() {
            let (end, start) = (i64_at(k, 0)?, i64_at(k, 8)?);
            by_window
                .entry(end)
                .or_insert((start, Vec::new()))
                .1
                .push(i as u32);
        }
        for (end, (start, idx)) in by_window {
            let mut window = self.new_window(start)?;
            window.dirty = false;
            for &i in &idx {
                let (k, v) = &entries[i as usize];
                let key_id = self.keys.intern(k.get(16..).ok_or_else(corrupt)?);
                let g = Self::slot(&mut self.keys, &mut window, key_id);
                window.rowtime[g] = i64_at(v, 0)?;
            }
            let n = idx.len();
            let groups: Vec<usize> = (0..n).collect();
            let idx = UInt32Array::from(idx);
            let mut c = 0;
            for (a, &w) in self.state_widths.iter().enumerate() {
                let cols: Vec<ArrayRef> = states[c..c + w]
                    .iter()
                    .map(|s| take(s, &idx, None))
                    .collect::<std::result::Result<_, _>>()?;
                window.accumulators[a].merge_batch(&cols, &groups, n)?;
                c += w;
            }
            self.windows.insert(end, window);
        }
        Ok(())
    }
}
