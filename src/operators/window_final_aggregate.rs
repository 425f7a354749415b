//! GROUP BY over tumbling, hopping and cumulating windows with EMIT FINAL,
//! vectorised.
//!
//! - Windows are assigned here, from each event's time, instead of copying the
//!   event once per window upstream: a hopping event that belongs to twelve windows
//!   has its key converted and looked up once.
//! - Keys (the non-window group columns, Arrow row format) are interned to small
//!   ids; each open window (or pane) maps key ids to its group slots.
//! - Accumulators are DataFusion `GroupsAccumulator`s over all the groups of a
//!   window (or pane), so a chunk costs one `update_batch` call per window and
//!   aggregate, not one per group.
//! - Hopping windows whose size is a multiple of their advance keep panes instead
//!   of windows when every aggregate can merge partial results
//!   (`window_panes.rs`): an event updates one pane, and a window's result is
//!   merged from its panes when it closes.
//!
//! Nothing is emitted until the watermark passes a window's end + grace; then the
//! whole window is evaluated at once (consuming the accumulators, which EMIT FINAL
//! never needs again). `GroupAggregate` keeps per-group `Accumulator`s for EMIT
//! CHANGES, which must read a value without consuming it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, Int8Array, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::RowConverter;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_plan::PhysicalExpr;

use super::aggregate_inputs::{self, WindowColumns};
use super::evaluate::{group_keys, row_errors, Failures};
use super::group_aggregate::AggregateSpec;
use super::window_assign::windows_of;
use super::window_panes::{self, Pane, PaneAccumulator};
use super::window_state::{group_key, parse_group_key, SlotChanges, TIME_SUFFIX};
use super::{Checkpoint, Operator};
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::sql::WindowKind;
use crate::state::budget::MemoryUse;
use crate::state::table::{StateTable, StateTableId};
use crate::state::{QueryState, StateReader, StateWriteBatch};

/// The key of the watermark in the meta table (and, before state format 5,
/// among the groups: group keys were at least 16 bytes, so it cannot collide).
const WATERMARK_KEY: &[u8] = b"w";

/// Bytes a group slot costs beside its key and accumulators (slot map entry,
/// key id, event time, change flags), for the memory budget.
const SLOT_OVERHEAD: usize = 32;

/// A multiplicative hash for small integer keys (key ids are dense).
#[derive(Default)]
pub(super) struct IdHasher(u64);

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

pub(super) type IdMap = HashMap<u32, u32, BuildHasherDefault<IdHasher>>;

/// The groups of one window.
struct WindowGroups {
    start: i64,
    /// Key id → group slot.
    slots: IdMap,
    /// Key id of each group.
    key_ids: Vec<u32>,
    rowtime: Vec<i64>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    changes: SlotChanges,
}

/// Interned keys: one id per distinct key held by an open window or pane.
#[derive(Default)]
struct Keys {
    // foldhash (DataFusion's default hasher): an event's key is hashed here once
    // per event, and SipHash showed in profiles.
    ids: datafusion::common::HashMap<Box<[u8]>, u32>,
    bytes: Vec<Box<[u8]>>,
    /// Open windows (or live panes) holding each key; an id is freed when it
    /// drops to zero.
    refs: Vec<u32>,
    free: Vec<u32>,
    /// Bytes of the interned keys (for the memory budget, without a walk
    /// over every key at each checkpoint).
    held: usize,
}

impl Keys {
    fn intern(&mut self, key: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let key: Box<[u8]> = key.into();
        self.held += key.len();
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
            self.held -= std::mem::take(&mut self.bytes[id as usize]).len();
            self.free.push(id);
        }
    }
}

/// The slot of key `id` among a window's or pane's groups, created if new.
fn slot(
    keys: &mut Keys,
    slots: &mut IdMap,
    key_ids: &mut Vec<u32>,
    rowtime: &mut Vec<i64>,
    id: u32,
) -> usize {
    if let Some(&g) = slots.get(&id) {
        return g as usize;
    }
    let g = key_ids.len();
    slots.insert(id, g as u32);
    key_ids.push(id);
    rowtime.push(i64::MIN);
    keys.refs[id as usize] += 1;
    g
}

/// The group of each row in `idx` among a window's or pane's groups (created if
/// new); each group's latest event time rises to its rows'.
fn assign_groups(
    keys: &mut Keys,
    slots: &mut IdMap,
    key_ids: &mut Vec<u32>,
    rowtime: &mut Vec<i64>,
    ids: &[u32],
    times: &Int64Array,
    idx: &[u32],
) -> Vec<usize> {
    idx.iter()
        .map(|&i| {
            let g = slot(keys, slots, key_ids, rowtime, ids[i as usize]);
            let t = times.value(i as usize);
            if t > rowtime[g] {
                rowtime[g] = t;
            }
            g
        })
        .collect()
}

/// A group read back at restore: window end and start, key, value, and
/// whether it was written in the current layout.
type StoredGroup<'a> = (i64, i64, &'a [u8], &'a [u8], bool);

/// Hopping windows cut into panes of `width` (the advance; `size` is a multiple).
#[derive(Debug, Clone, Copy)]
struct PaneLayout {
    width: i64,
    size: i64,
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
    /// Open windows by end (without panes).
    windows: BTreeMap<i64, WindowGroups>,
    /// Set when the windows are kept as panes.
    layout: Option<PaneLayout>,
    /// Panes by start (with panes).
    panes: BTreeMap<i64, Pane>,
    /// Start of each open window that has events, by end (with panes).
    open: BTreeMap<i64, i64>,
    /// Accumulators a closing window's panes are merged into, kept for the next.
    closing: Vec<PaneAccumulator>,
    /// Group of each key id in the window being closed (`u32::MAX`: none); kept
    /// between windows so it is not reallocated.
    window_group: Vec<u32>,
    watermark: i64,
    /// Every open group whose window a checkpoint saw change, keyed
    /// `[key][end][start]` (see `window_state`).
    table: StateTable,
    /// The watermark.
    meta: StateTable,
    /// Stored keys of the layout before state format 5, deleted at the next
    /// checkpoint (their groups are written to `table` then).
    legacy: Vec<Vec<u8>>,
    /// Changes are tracked for checkpoints (false when the query never
    /// checkpoints).
    track: bool,
    /// Memory of the open groups, against the state memory budget.
    usage: MemoryUse,
    scratch: Vec<u8>,
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
        // Panes pay off when windows overlap and each is a whole number of panes;
        // otherwise (tumbling windows, advances that do not divide the size) a
        // window would merge more panes than an event updates windows.
        let layout = match kind {
            WindowKind::Hopping { size, advance }
                if advance > 0
                    && size > advance
                    && size % advance == 0
                    && aggregates
                        .iter()
                        .all(|a| window_panes::merges_exactly(&a.function)) =>
            {
                Some(PaneLayout {
                    width: advance,
                    size,
                })
            }
            _ => None,
        };
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
            layout,
            panes: BTreeMap::new(),
            open: BTreeMap::new(),
            closing: Vec::new(),
            window_group: Vec::new(),
            watermark: i64::MIN,
            table: Self::group_table(0),
            meta: StateTable::write_only(StateTableId::of_node(0, 1)),
            legacy: Vec::new(),
            track: true,
            usage: MemoryUse::default(),
            scratch: Vec::new(),
        })
    }

    fn new_window(&self, start: i64) -> Result<WindowGroups> {
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| window_panes::groups_accumulator(&a.function))
            .collect::<Result<Vec<_>>>()?;
        Ok(WindowGroups {
            start,
            slots: IdMap::default(),
            key_ids: Vec::new(),
            rowtime: Vec::new(),
            accumulators,
            changes: SlotChanges::default(),
        })
    }

    fn group_table(node: u16) -> StateTable {
        StateTable::write_only(StateTableId::of_node(node, 0)).with_suffix(TIME_SUFFIX)
    }

    /// Deletes the stored groups among `key_ids` of the window (or pane)
    /// `[start, end)`, which closed.
    fn delete_stored(&mut self, end: i64, start: i64, key_ids: &[u32], changes: &SlotChanges) {
        if !self.track {
            return;
        }
        for (g, &id) in key_ids.iter().enumerate() {
            if changes.stored(g) {
                group_key(&self.keys.bytes[id as usize], end, start, &mut self.scratch);
                self.table.delete(&self.scratch);
            }
        }
    }

    /// Writes the changed groups of the window (or pane) `[start, end)`,
    /// whose intermediate state is `columns` (a row per slot).
    #[allow(clippy::too_many_arguments)]
    fn write_changed(
        table: &mut StateTable,
        batch: &mut StateWriteBatch,
        scratch: &mut Vec<u8>,
        keys: &Keys,
        state_rows: &RowConverter,
        (start, end): (i64, i64),
        key_ids: &[u32],
        rowtime: &[i64],
        changed: Vec<u32>,
        columns: &[ArrayRef],
    ) -> Result<()> {
        let all = changed.len() == key_ids.len();
        let taken;
        let columns = if all {
            columns
        } else {
            let idx = UInt32Array::from(changed.clone());
            taken = columns
                .iter()
                .map(|c| take(c, &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            &taken
        };
        let rows = aggregate_inputs::RowBytes::convert(state_rows, columns)?;
        let mut value = Vec::new();
        for (j, &slot) in changed.iter().enumerate() {
            let g = slot as usize;
            value.clear();
            value.extend_from_slice(&rowtime[g].to_be_bytes());
            value.extend_from_slice(rows.row(if all { g } else { j }));
            group_key(&keys.bytes[key_ids[g] as usize], end, start, scratch);
            table.put_at_barrier(batch, scratch, &value);
        }
        Ok(())
    }

    /// Bytes the open groups hold: keys, accumulators, slots.
    fn memory_size(&self) -> usize {
        let keys = self.keys.held + self.keys.bytes.len() * SLOT_OVERHEAD;
        let windows: usize = self
            .windows
            .values()
            .map(|w| {
                w.key_ids.len() * SLOT_OVERHEAD
                    + w.accumulators.iter().map(|a| a.size()).sum::<usize>()
            })
            .sum();
        let panes: usize = self
            .panes
            .values()
            .map(|p| p.key_ids.len() * SLOT_OVERHEAD + p.memory_size())
            .sum();
        keys + windows + panes
    }

    /// The rows of a closed window, as upserts: one per key, with the
    /// aggregates' results in `values`.
    fn rows(
        &self,
        start: i64,
        end: i64,
        key_ids: &[u32],
        rowtime: Vec<i64>,
        values: Vec<ArrayRef>,
    ) -> Result<Chunk> {
        let n = key_ids.len();
        let parser = self.key_rows.parser();
        let keys = self.key_rows.convert_rows(
            key_ids
                .iter()
                .map(|&id| parser.parse(&self.keys.bytes[id as usize])),
        )?;
        let starts: ArrayRef = Arc::new(TimestampMillisecondArray::from_value(start, n));
        let ends: ArrayRef = Arc::new(TimestampMillisecondArray::from_value(end, n));
        let n_groups = self.key_exprs.len() + 2;
        let mut columns = self
            .columns
            .group_columns(&self.schema, n_groups, starts, ends, keys)?;
        for (a, v) in values.into_iter().enumerate() {
            let field = self.schema.field(n_groups + a);
            columns.push(aggregate_inputs::conform(v, field.data_type())?);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Chunk::new(
            batch,
            Int64Array::from(rowtime),
            Some(Int8Array::from(vec![Op::Upsert as i8; n])),
        ))
    }

    /// Every group's row of a closed window; consumes the window.
    fn emit(&mut self, end: i64, mut window: WindowGroups) -> Result<Chunk> {
        let values = window
            .accumulators
            .iter_mut()
            .map(|acc| acc.evaluate(EmitTo::All))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        self.delete_stored(end, window.start, &window.key_ids, &window.changes);
        let chunk = self.rows(window.start, end, &window.key_ids, window.rowtime, values)?;
        for &id in &window.key_ids {
            self.keys.release(id);
        }
        Ok(chunk)
    }

    /// The window's step, by which its ends are spaced.
    fn step(&self) -> i64 {
        match self.kind {
            WindowKind::Tumbling { size } => size,
            WindowKind::Hopping { advance, .. } => advance,
            WindowKind::Cumulate { step, .. } => step,
            WindowKind::Session { gap } => gap,
        }
    }

    /// Adds a chunk to every open window its events belong to.
    fn add_to_windows(
        &mut self,
        chunk: &Chunk,
        ids: &[u32],
        failures: &mut Failures,
    ) -> Result<()> {
        let n = chunk.num_rows();
        let batch = &chunk.batch;
        // Rows per open window. Window ends are multiples of the step past the
        // chunk's first end, so a window's bucket is found by arithmetic.
        let step = self.step();
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
        let args = aggregate_inputs::arguments(&self.aggregates, batch, failures)?;
        let masks = aggregate_inputs::filter_masks(&self.aggregates, batch, failures)?;

        for (end, start, idx) in buckets {
            if !self.windows.contains_key(&end) {
                let w = self.new_window(start)?;
                self.windows.insert(end, w);
            }
            let window = self
                .windows
                .get_mut(&end)
                .ok_or_else(|| SluiceError::Internal("window vanished".into()))?;
            let groups = assign_groups(
                &mut self.keys,
                &mut window.slots,
                &mut window.key_ids,
                &mut window.rowtime,
                ids,
                &chunk.rowtime,
                &idx,
            );
            if self.track {
                window.changes.mark(&groups);
            }
            let total = window.key_ids.len();
            let rows = Rows::new(idx, n);
            for (a, acc) in window.accumulators.iter_mut().enumerate() {
                let (values, mask) = rows.select(&args[a], masks[a].as_ref())?;
                acc.update_batch(&values, &groups, mask.as_ref(), total)?;
            }
        }
        Ok(())
    }

    /// Adds a chunk to the panes its events fall in (with panes).
    fn add_to_panes(
        &mut self,
        layout: PaneLayout,
        chunk: &Chunk,
        ids: &[u32],
        failures: &mut Failures,
    ) -> Result<()> {
        let n = chunk.num_rows();
        let closed_before = self.watermark.saturating_sub(self.grace);
        // As in `windows_of`: times within two window sizes of the i64 range
        // have no window.
        let margin = layout.size.saturating_mul(2);
        // Rows per pane, by pane start; consecutive events nearly always share one.
        let mut buckets: Vec<(i64, Vec<u32>)> = Vec::new();
        let mut bucket_of: HashMap<i64, usize> = HashMap::new();
        let mut last = usize::MAX;
        for (i, &t) in chunk.rowtime.values().iter().enumerate() {
            if t.checked_add(margin).is_none() || t.checked_sub(margin).is_none() {
                continue;
            }
            let start = t - t.rem_euclid(layout.width);
            // The last window over this pane starts with it.
            if start + layout.size <= closed_before {
                continue;
            }
            if buckets.get(last).is_none_or(|(s, _)| *s != start) {
                last = *bucket_of.entry(start).or_insert_with(|| {
                    buckets.push((start, Vec::new()));
                    buckets.len() - 1
                });
            }
            buckets[last].1.push(i as u32);
        }
        if buckets.is_empty() {
            return Ok(());
        }
        let batch = &chunk.batch;
        let args = aggregate_inputs::arguments(&self.aggregates, batch, failures)?;
        let masks = aggregate_inputs::filter_masks(&self.aggregates, batch, failures)?;
        for (start, idx) in buckets {
            if !self.panes.contains_key(&start) {
                self.panes.insert(start, Pane::new(&self.aggregates)?);
                // Every event of a pane is in the same windows; those open now
                // are the ones it can still reach.
                let open = &mut self.open;
                windows_of(self.kind, start, |s, e| {
                    if e > closed_before {
                        open.insert(e, s);
                    }
                });
            }
            let pane = self
                .panes
                .get_mut(&start)
                .ok_or_else(|| SluiceError::Internal("pane vanished".into()))?;
            pane.live_used = true;
            let groups = assign_groups(
                &mut self.keys,
                &mut pane.slots,
                &mut pane.key_ids,
                &mut pane.rowtime,
                ids,
                &chunk.rowtime,
                &idx,
            );
            if self.track {
                pane.changes.mark(&groups);
            }
            let total = pane.key_ids.len();
            let rows = Rows::new(idx, n);
            for (a, acc) in pane.live.iter_mut().enumerate() {
                let (values, mask) = rows.select(&args[a], masks[a].as_ref())?;
                acc.update_batch(&values, &groups, mask.as_ref(), total)?;
            }
        }
        Ok(())
    }

    /// The rows of the window `[start, end)`, merged from its panes.
    fn close_window(&mut self, start: i64, end: i64) -> Result<Chunk> {
        let starts: Vec<i64> = self.panes.range(start..end).map(|(s, _)| *s).collect();
        for s in &starts {
            if let Some(pane) = self.panes.get_mut(s) {
                pane.freeze(&self.aggregates)?;
            }
        }
        // The window's groups: the union of its panes' keys, and the group of
        // each pane slot.
        let mut key_ids: Vec<u32> = Vec::new();
        let mut rowtime: Vec<i64> = Vec::new();
        let mut pane_groups: Vec<(&Pane, Vec<usize>)> = Vec::with_capacity(starts.len());
        if self.window_group.len() < self.keys.bytes.len() {
            self.window_group.resize(self.keys.bytes.len(), u32::MAX);
        }
        for pane in self.panes.range(start..end).map(|(_, p)| p) {
            let groups = pane
                .key_ids
                .iter()
                .zip(&pane.rowtime)
                .map(|(&id, &t)| {
                    let g = &mut self.window_group[id as usize];
                    if *g == u32::MAX {
                        *g = key_ids.len() as u32;
                        key_ids.push(id);
                        rowtime.push(t);
                    } else if t > rowtime[*g as usize] {
                        rowtime[*g as usize] = t;
                    }
                    *g as usize
                })
                .collect();
            pane_groups.push((pane, groups));
        }
        for &id in &key_ids {
            self.window_group[id as usize] = u32::MAX;
        }
        let n = key_ids.len();
        let mut accumulators = match std::mem::take(&mut self.closing) {
            a if a.len() == self.aggregates.len() => a,
            _ => PaneAccumulator::for_all(&self.aggregates)?,
        };
        for (pane, groups) in &pane_groups {
            for partials in &pane.partials {
                for (acc, partial) in accumulators.iter_mut().zip(partials) {
                    acc.merge(partial, groups, n)?;
                }
            }
        }
        drop(pane_groups);
        let values = accumulators
            .iter_mut()
            .map(PaneAccumulator::evaluate)
            .collect::<Result<Vec<_>>>()?;
        self.closing = accumulators
            .into_iter()
            .zip(&self.aggregates)
            .map(|(a, spec)| a.recycled(spec))
            .collect::<Result<_>>()?;
        self.rows(start, end, &key_ids, rowtime, values)
    }

    /// Drops the panes whose every window has closed.
    fn drop_panes(&mut self, layout: PaneLayout, watermark: i64) {
        while let Some((&start, _)) = self.panes.first_key_value() {
            if (start + layout.size).saturating_add(self.grace) > watermark {
                break;
            }
            let Some(pane) = self.panes.remove(&start) else {
                break;
            };
            self.delete_stored(start + layout.width, start, &pane.key_ids, &pane.changes);
            for &id in &pane.key_ids {
                self.keys.release(id);
            }
        }
    }
}

/// The rows of a chunk that go to one window or pane.
struct Rows {
    /// None: every row of the chunk, in order (the usual case), so no copies.
    taken: Option<UInt32Array>,
}

impl Rows {
    fn new(idx: Vec<u32>, chunk_rows: usize) -> Self {
        let taken = (idx.len() != chunk_rows).then(|| UInt32Array::from(idx));
        Rows { taken }
    }

    /// An aggregate's argument columns and FILTER mask for these rows.
    fn select(
        &self,
        args: &[ArrayRef],
        mask: Option<&BooleanArray>,
    ) -> Result<(Vec<ArrayRef>, Option<BooleanArray>)> {
        let Some(idx) = &self.taken else {
            return Ok((args.to_vec(), mask.cloned()));
        };
        let values = args
            .iter()
            .map(|c| take(c, idx, None))
            .collect::<std::result::Result<_, _>>()?;
        let mask = match mask {
            Some(m) => {
                let t = take(m, idx, None)?;
                t.as_any().downcast_ref::<BooleanArray>().cloned()
            }
            None => None,
        };
        Ok((values, mask))
    }
}

impl WindowFinalAggregate {
    /// Emits and drops the windows whose end plus grace is at or before `bound`.
    fn close_windows(&mut self, bound: i64, out: &mut Vec<Message>) -> Result<()> {
        let closes = |end: &i64| end.saturating_add(self.grace) <= bound;
        match self.layout {
            Some(layout) => {
                let closed: Vec<(i64, i64)> = self
                    .open
                    .iter()
                    .take_while(|(end, _)| closes(end))
                    .map(|(e, s)| (*e, *s))
                    .collect();
                for (end, start) in closed {
                    self.open.remove(&end);
                    let chunk = self.close_window(start, end)?;
                    out.push(Message::Chunk(chunk));
                }
                self.drop_panes(layout, bound);
            }
            None => {
                let closed: Vec<i64> = self.windows.keys().copied().take_while(closes).collect();
                for end in closed {
                    if let Some(window) = self.windows.remove(&end) {
                        let chunk = self.emit(end, window)?;
                        out.push(Message::Chunk(chunk));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Operator for WindowFinalAggregate {
    fn describe(&self) -> String {
        format!(
            "WindowFinalAggregate: {:?}, {}, emit=final{}",
            self.kind,
            aggregate_inputs::describe_groups(&self.key_exprs, &self.aggregates),
            match self.layout {
                Some(l) => format!(", panes={}ms", l.width),
                None => String::new(),
            }
        )
    }

    fn state_entries(&self) -> usize {
        self.windows
            .values()
            .map(|w| w.key_ids.len())
            .sum::<usize>()
            + self.panes.values().map(|p| p.key_ids.len()).sum::<usize>()
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let (chunk, key_arrays) = group_keys(&self.key_exprs, chunk, || self.describe(), out)?;
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let mut failures = Vec::new();
        let rows = aggregate_inputs::RowBytes::convert(&self.key_rows, &key_arrays)?;
        let ids: Vec<u32> = (0..n).map(|i| self.keys.intern(rows.row(i))).collect();
        match self.layout {
            Some(layout) => self.add_to_panes(layout, &chunk, &ids, &mut failures)?,
            None => self.add_to_windows(&chunk, &ids, &mut failures)?,
        }
        out.extend(row_errors(|| self.describe(), &chunk, failures));
        // Keys of events whose windows had all closed are held by no window.
        for &id in &ids {
            self.keys.forget_if_unused(id);
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        _input: usize,
        watermark: i64,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        self.close_windows(watermark, out)?;
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// Every window closes, but the watermark stays where time had brought it:
    /// input added to a file later must not be late after a restart.
    fn on_end(&mut self, _input: usize, out: &mut Vec<Message>) -> Result<()> {
        self.close_windows(i64::MAX, out)
    }

    fn without_checkpoints(&mut self) {
        self.track = false;
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
        // With the watermark restored, an event replayed after a crash cannot
        // reopen a window that had closed.
        self.meta.put(WATERMARK_KEY, &self.watermark.to_be_bytes());
        if let Some(layout) = self.layout {
            let changed: Vec<i64> = self
                .panes
                .iter()
                .filter(|(_, p)| p.changes.any())
                .map(|(s, _)| *s)
                .collect();
            for start in changed {
                let Some(pane) = self.panes.get_mut(&start) else {
                    continue;
                };
                let slots = pane.changes.take();
                let columns = pane.consolidate(&self.aggregates)?;
                Self::write_changed(
                    &mut self.table,
                    batch,
                    &mut self.scratch,
                    &self.keys,
                    &self.state_rows,
                    (start, start + layout.width),
                    &pane.key_ids,
                    &pane.rowtime,
                    slots,
                    &columns,
                )?;
            }
        } else {
            let changed: Vec<i64> = self
                .windows
                .iter()
                .filter(|(_, w)| w.changes.any())
                .map(|(e, _)| *e)
                .collect();
            for end in changed {
                let Some(mut window) = self.windows.remove(&end) else {
                    continue;
                };
                let n = window.key_ids.len();
                // `state` consumes the accumulators: read it, then merge it
                // back into fresh ones so the window carries on unchanged.
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
                let slots = window.changes.take();
                Self::write_changed(
                    &mut self.table,
                    batch,
                    &mut self.scratch,
                    &self.keys,
                    &self.state_rows,
                    (window.start, end),
                    &window.key_ids,
                    &window.rowtime,
                    slots,
                    &columns,
                )?;
                self.windows.insert(end, window);
            }
        }
        self.table.flush(batch);
        self.meta.flush(batch);
        self.usage.set(self.memory_size());
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        self.table = Self::group_table(id);
        self.meta = StateTable::write_only(StateTableId::of_node(id, 1));
        self.table.attach(state);
        self.meta.attach(state);
        self.usage.join(state.budget().clone());
        let i64_of = |b: &[u8]| StateReader::new(b, "window").i64();
        if let Some((_, v)) = self.meta.scan()?.first() {
            self.watermark = i64_of(v)?;
        }
        let stored = self.table.scan()?;
        // Before state format 5 the groups were stored under the operator's
        // node id, keyed `[end][start][key]`, with the watermark among them.
        let legacy = state.scan(id)?;
        let mut groups: Vec<StoredGroup> = Vec::with_capacity(stored.len() + legacy.len());
        for (k, v) in &stored {
            let (key, end, start) = parse_group_key(k)?;
            groups.push((end, start, key, v, true));
        }
        for (k, v) in &legacy {
            if k.as_slice() == WATERMARK_KEY {
                self.watermark = i64_of(v)?;
            } else {
                let mut times = StateReader::new(k, "window");
                let (end, start) = (times.i64()?, times.i64()?);
                groups.push((end, start, &k[16..], v, false));
            }
        }
        self.legacy = legacy.iter().map(|(k, _)| k.clone()).collect();
        if !groups.is_empty() {
            self.restore_groups(&groups)?;
        }
        self.usage.set(self.memory_size());
        Ok(())
    }
}

impl WindowFinalAggregate {
    /// Rebuilds the open windows (or panes) from stored groups: (end, start,
    /// key, value, written in the current layout). Groups of the old layout
    /// are marked changed, so the next checkpoint writes them into the table.
    fn restore_groups(&mut self, groups: &[StoredGroup]) -> Result<()> {
        let corrupt = || SluiceError::State("corrupt window state".into());
        let parser = self.state_rows.parser();
        let states = self.state_rows.convert_rows(
            groups
                .iter()
                .map(|g| parser.parse(g.3.get(8..).unwrap_or_default())),
        )?;
        let mut by_end: BTreeMap<i64, (i64, Vec<u32>)> = BTreeMap::new();
        for (i, g) in groups.iter().enumerate() {
            by_end
                .entry(g.0)
                .or_insert((g.1, Vec::new()))
                .1
                .push(i as u32);
        }
        let closed_before = self.watermark.saturating_sub(self.grace);
        for (end, (start, idx)) in by_end {
            let n = idx.len();
            let slots: Vec<usize> = (0..n).collect();
            let taken = UInt32Array::from(idx.clone());
            let mut columns: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.state_widths.len());
            let mut c = 0;
            for &w in &self.state_widths {
                columns.push(
                    states[c..c + w]
                        .iter()
                        .map(|s| take(s, &taken, None))
                        .collect::<std::result::Result<_, _>>()?,
                );
                c += w;
            }
            if let Some(layout) = self.layout {
                if end - start != layout.width {
                    return Err(SluiceError::State(format!(
                        "window state of [{start}, {end}) is not a pane of {} ms (written by another version?)",
                        layout.width
                    )));
                }
            }
            let mut key_ids = Vec::with_capacity(n);
            let mut slot_map = IdMap::default();
            let mut rowtime = Vec::with_capacity(n);
            let mut changes = SlotChanges::default();
            for &i in &idx {
                let (_, g_start, key, value, current) = groups[i as usize];
                if g_start != start {
                    return Err(corrupt());
                }
                let key_id = self.keys.intern(key);
                let g = slot(
                    &mut self.keys,
                    &mut slot_map,
                    &mut key_ids,
                    &mut rowtime,
                    key_id,
                );
                rowtime[g] = StateReader::new(value, "window").i64()?;
                if current {
                    changes.mark_stored(g);
                } else if self.track {
                    changes.mark(&[g]);
                }
            }
            if self.layout.is_some() {
                let mut pane = Pane::new(&self.aggregates)?;
                pane.slots = slot_map;
                pane.key_ids = key_ids;
                pane.rowtime = rowtime;
                pane.changes = changes;
                for (acc, cols) in pane.live.iter_mut().zip(&columns) {
                    acc.merge_state(cols, &slots, n)?;
                }
                pane.live_used = true;
                self.panes.insert(start, pane);
                let open = &mut self.open;
                windows_of(self.kind, start, |s, e| {
                    if e > closed_before {
                        open.insert(e, s);
                    }
                });
                continue;
            }
            let mut window = self.new_window(start)?;
            window.slots = slot_map;
            window.key_ids = key_ids;
            window.rowtime = rowtime;
            window.changes = changes;
            for (acc, cols) in window.accumulators.iter_mut().zip(&columns) {
                acc.merge_batch(cols, &slots, n)?;
            }
            self.windows.insert(end, window);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::checkpoint;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use datafusion::functions_aggregate::{
        approx_percentile_cont::approx_percentile_cont_udaf, average::avg_udaf, count::count_udaf,
        min_max::max_udaf, min_max::min_udaf, sum::sum_udaf,
    };
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::scalar::ScalarValue;

    use crate::state::StateStore;

    const SIZE: i64 = 20_000;
    const ADVANCE: i64 = 5_000;
    const GRACE: i64 = 2_000;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            // Whole numbers: sums are exact in any order.
            Field::new("v", DataType::Float64, true),
        ]))
    }

    /// HOP(20 s, 5 s) GROUP BY k with `functions` over v.
    fn operator(functions: &[(&str, Arc<AggregateUDF>)]) -> WindowFinalAggregate {
        operator_of(
            functions,
            WindowKind::Hopping {
                size: SIZE,
                advance: ADVANCE,
            },
        )
    }

    /// `kind` GROUP BY k with `functions` over v.
    fn operator_of(
        functions: &[(&str, Arc<AggregateUDF>)],
        kind: WindowKind,
    ) -> WindowFinalAggregate {
        let input = input_schema();
        let v = col("v", &input).unwrap();
        let aggregates: Vec<AggregateSpec> = functions
            .iter()
            .map(|(name, udaf)| {
                let mut args = vec![v.clone()];
                if udaf.name() == "approx_percentile_cont" {
                    args.push(lit(ScalarValue::Float64(Some(0.5))));
                }
                let function = AggregateExprBuilder::new(udaf.clone(), args)
                    .schema(input.clone())
                    .alias(*name)
                    .build()
                    .unwrap();
                AggregateSpec {
                    function: Arc::new(function),
                    filter: None,
                }
            })
            .collect();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let mut fields = vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
        ];
        fields.extend(
            aggregates
                .iter()
                .map(|a| a.function.field().as_ref().clone()),
        );
        WindowFinalAggregate::new(
            vec![col("k", &input).unwrap()],
            WindowColumns { start: 1, end: 2 },
            aggregates,
            Arc::new(Schema::new(fields)),
            kind,
            GRACE,
        )
        .unwrap()
    }

    /// Chunks of events in arrival order, each followed by a watermark that trails
    /// the latest event by less than events are delayed: some events are late
    /// for their earliest windows but not for the later ones, some for all.
    fn arrivals(seed: u64) -> Vec<(Chunk, i64)> {
        let mut rng = crate::operators::test_rng::TestRng::new(seed);
        let mut next = move |n: u64| rng.below(n);
        let mut events: Vec<(i64, i64, String, Option<f64>)> = Vec::new();
        let mut t = 1_000_000i64;
        for _ in 0..3_000 {
            t += next(300) as i64;
            let arrival = t + next(12_000) as i64;
            let v = (next(10) > 0).then(|| next(1_000) as f64 - 100.0);
            events.push((arrival, t, format!("k{}", next(7)), v));
        }
        events.sort_by_key(|e| e.0);
        let mut out = Vec::new();
        let mut max_t = i64::MIN;
        let mut rest = events.as_slice();
        while !rest.is_empty() {
            let n = (1 + next(40) as usize).min(rest.len());
            let (now, later) = rest.split_at(n);
            rest = later;
            max_t = max_t.max(now.iter().map(|e| e.1).max().unwrap_or(i64::MIN));
            let batch = RecordBatch::try_new(
                input_schema(),
                vec![
                    Arc::new(StringArray::from_iter_values(
                        now.iter().map(|e| e.2.as_str()),
                    )),
                    Arc::new(arrow::array::Float64Array::from_iter(
                        now.iter().map(|e| e.3),
                    )),
                ],
            )
            .unwrap();
            let rowtime = Int64Array::from_iter_values(now.iter().map(|e| e.1));
            out.push((Chunk::new(batch, rowtime, None), max_t - 6_000));
        }
        out
    }

    /// Rows as text; a t-digest percentile (`p50`) only as whether it is NULL.
    fn format(chunk: &Chunk, out: &mut Vec<String>, exact_percentile: bool) {
        let options = FormatOptions::default().with_null("NULL");
        let schema = chunk.batch.schema();
        let formatters: Vec<_> = chunk
            .batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if f.name() == "p50" && !exact_percentile {
                    Arc::new(arrow::compute::is_null(c).unwrap())
                } else {
                    c.clone()
                }
            })
            .collect::<Vec<ArrayRef>>();
        let formatters: Vec<_> = formatters
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for r in 0..chunk.num_rows() {
            let mut row: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            row.push(chunk.rowtime.value(r).to_string());
            out.push(row.join("|"));
        }
    }

    /// Every row `op` emits for `input`, sorted; with `restart_every`, the
    /// operator is checkpointed and replaced by a restored one that often.
    fn run(
        mut make: impl FnMut() -> WindowFinalAggregate,
        input: &[(Chunk, i64)],
        restart_every: Option<usize>,
        exact_percentile: bool,
    ) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let mut op = make();
        if restart_every.is_some() {
            op.restore(0, &state).unwrap();
        }
        let mut rows = Vec::new();
        let mut out = Vec::new();
        for (i, (chunk, watermark)) in input.iter().enumerate() {
            op.on_chunk(0, chunk.clone(), &mut out).unwrap();
            op.on_watermark(0, *watermark, &mut out).unwrap();
            if restart_every.is_some_and(|n| i % n == n - 1) {
                let mut batch = StateWriteBatch::default();
                checkpoint(&mut op, 0, &mut batch).unwrap();
                state
                    .commit(batch, i as u64, &[vec![(0, i as i64)]])
                    .unwrap();
                op = make();
                op.restore(0, &state).unwrap();
            }
        }
        op.on_end(0, &mut out).unwrap();
        for m in &out {
            if let Message::Chunk(c) = m {
                format(c, &mut rows, exact_percentile);
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn panes_give_the_rows_of_per_window_accumulators() {
        let functions = [
            ("n", count_udaf()),
            ("s", sum_udaf()),
            ("lo", min_udaf()),
            ("hi", max_udaf()),
            ("mean", avg_udaf()),
            ("p50", approx_percentile_cont_udaf()),
        ];
        for seed in [1, 2, 3] {
            let input = arrivals(seed);
            let panes = run(|| operator(&functions), &input, None, true);
            assert!(operator(&functions).layout.is_some());
            let windows = run(
                || {
                    let mut op = operator(&functions);
                    op.layout = None;
                    op
                },
                &input,
                None,
                true,
            );
            assert!(panes.len() > 500, "{}", panes.len());
            assert_eq!(panes, windows, "seed {seed}");
        }
    }

    #[test]
    fn panes_survive_restarts() {
        // A restored t-digest is no longer raw values, so the percentile is
        // compared by whether it is NULL only.
        let functions = [
            ("n", count_udaf()),
            ("s", sum_udaf()),
            ("lo", min_udaf()),
            ("hi", max_udaf()),
            ("p50", approx_percentile_cont_udaf()),
        ];
        for seed in [4, 5] {
            let input = arrivals(seed);
            let straight = run(|| operator(&functions), &input, None, false);
            for every in [1, 7, 31] {
                let restarted = run(|| operator(&functions), &input, Some(every), false);
                assert_eq!(
                    straight, restarted,
                    "seed {seed}, restart every {every} chunks"
                );
            }
        }
    }

    fn chunk_of(keys: &[String], t: i64) -> Chunk {
        let batch = RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(keys.iter())),
                Arc::new(arrow::array::Float64Array::from_iter_values(
                    keys.iter().map(|_| 1.0),
                )),
            ],
        )
        .unwrap();
        Chunk::new(batch, Int64Array::from_value(t, keys.len()), None)
    }

    /// Entries a checkpoint of `op` writes (groups, deletes and the watermark).
    fn commit(op: &mut WindowFinalAggregate, state: &QueryState, epoch: u64) -> usize {
        let mut batch = StateWriteBatch::default();
        checkpoint(op, 0, &mut batch).unwrap();
        let n = batch.len();
        state.commit(batch, epoch, &[vec![(0, 0)]]).unwrap();
        n
    }

    #[test]
    fn checkpoints_write_changed_groups_and_nothing_for_windows_opened_and_closed_between() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let tumbling = WindowKind::Tumbling { size: 10_000 };
        for panes in [false, true] {
            let state = store.query(if panes { "p" } else { "t" }).unwrap();
            let kind = if panes {
                WindowKind::Hopping {
                    size: 20_000,
                    advance: 10_000,
                }
            } else {
                tumbling
            };
            let functions = [("n", count_udaf()), ("s", sum_udaf())];
            let mut op = operator_of(&functions, kind);
            assert_eq!(op.layout.is_some(), panes);
            op.restore(0, &state).unwrap();
            let mut out = Vec::new();
            let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
            op.on_chunk(0, chunk_of(&keys, 1_000), &mut out).unwrap();
            // 100 groups and the watermark.
            assert_eq!(commit(&mut op, &state, 1), 101, "panes: {panes}");
            op.on_chunk(0, chunk_of(&keys[..1], 2_000), &mut out)
                .unwrap();
            assert_eq!(commit(&mut op, &state, 2), 2, "panes: {panes}");
            // A window opens and closes between two checkpoints; the first
            // closes (its 100 stored groups are deleted).
            op.on_chunk(0, chunk_of(&keys, 25_000), &mut out).unwrap();
            op.on_watermark(0, 60_000, &mut out).unwrap();
            let emitted: usize = out
                .iter()
                .map(|m| match m {
                    Message::Chunk(c) => c.num_rows(),
                    _ => 0,
                })
                .sum();
            assert_eq!(emitted, if panes { 400 } else { 200 }, "panes: {panes}");
            assert_eq!(commit(&mut op, &state, 3), 101, "panes: {panes}");
            let mut restored = operator_of(&functions, kind);
            restored.restore(0, &state).unwrap();
            assert_eq!(restored.state_entries(), 0);
            assert_eq!(restored.watermark, 60_000);
        }
    }

    #[test]
    fn state_of_the_layout_before_format_5_is_restored_and_moved() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let functions = [("n", count_udaf()), ("s", sum_udaf())];
        let tumbling = WindowKind::Tumbling { size: 10_000 };
        // Format 4 wrote `[end][start][key]` under the node id, with the
        // watermark among the groups.
        let mut op = operator_of(&functions, tumbling);
        let mut out = Vec::new();
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        op.on_chunk(0, chunk_of(&keys, 1_000), &mut out).unwrap();
        op.on_watermark(0, 500, &mut out).unwrap();
        let mut batch = StateWriteBatch::default();
        let window = op.windows.get_mut(&10_000).unwrap();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for acc in window.accumulators.iter_mut() {
            columns.extend(acc.state(EmitTo::All).unwrap());
        }
        let rows = aggregate_inputs::RowBytes::convert(&op.state_rows, &columns).unwrap();
        for (g, &id) in window.key_ids.iter().enumerate() {
            let mut key = 10_000i64.to_be_bytes().to_vec();
            key.extend_from_slice(&0i64.to_be_bytes());
            key.extend_from_slice(&op.keys.bytes[id as usize]);
            let mut value = 1_000i64.to_be_bytes().to_vec();
            value.extend_from_slice(rows.row(g));
            batch.put(0, &key, value);
        }
        batch.put(0, WATERMARK_KEY, 500i64.to_be_bytes().to_vec());
        state.commit(batch, 1, &[vec![(0, 0)]]).unwrap();

        let mut restored = operator_of(&functions, tumbling);
        restored.restore(0, &state).unwrap();
        assert_eq!(restored.watermark, 500);
        assert_eq!(restored.state_entries(), 10);
        // The next checkpoint moves them: 11 old keys deleted (groups and
        // watermark), 10 groups and the watermark written.
        assert_eq!(commit(&mut restored, &state, 2), 22);
        assert!(state.scan(0).unwrap().is_empty());
        let mut again = operator_of(&functions, tumbling);
        again.restore(0, &state).unwrap();
        assert_eq!(again.state_entries(), 10);
        again
            .on_chunk(0, chunk_of(&keys[..1], 2_000), &mut out)
            .unwrap();
        let mut out = Vec::new();
        again.on_end(0, &mut out).unwrap();
        let Message::Chunk(c) = &out[0] else {
            panic!("no rows")
        };
        let mut rows = Vec::new();
        format(c, &mut rows, true);
        rows.sort();
        assert_eq!(rows.len(), 10);
        assert_eq!(
            rows[0],
            "k0|1970-01-01T00:00:00|1970-01-01T00:00:10|2|2.0|2000"
        );
        assert_eq!(
            rows[1],
            "k1|1970-01-01T00:00:00|1970-01-01T00:00:10|1|1.0|1000"
        );
    }
}
