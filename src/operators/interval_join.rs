//! Stream-stream interval join: `l JOIN r WITHIN ...` or `ON l.k = r.k AND r.ts
//! BETWEEN l.ts - INTERVAL ... AND l.ts + INTERVAL ...`.
//!
//! Each side buffers its rows by join key and event time. A new row probes the
//! other side's buffer for its key over the time range the bounds allow, the
//! rest of the ON condition is evaluated on the candidate pairs, and the row is
//! buffered for rows still to come. Watermarks free rows that no future row can
//! match: a left row at `lt` can only meet right rows with `rt <= lt + upper`,
//! and right rows older than the right watermark minus the grace period no
//! longer arrive (they are late and dropped). An outer join emits a row's
//! null-padded result when it is freed unmatched, never before.
//!
//! Time of a result: the later of the two rows' times; a null-padded row keeps
//! its own. The output watermark is held back by the bounds and the grace period
//! so that padded rows, emitted late by design, are never behind it.
//!
//! State: the buffers are the operator's own memory, indexed for probing and
//! expiry; each side's rows are persisted in a write-only state table keyed
//! `[join key][time][seq]` (the join key is the distribution key), so a row
//! buffered and freed between two checkpoints never reaches RocksDB.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use arrow::compute::filter;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::common::HashMap;
use datafusion::physical_plan::PhysicalExpr;

use super::evaluate::{batch_errors, row_errors};
use super::join_rows::{
    assemble, filter_mask, indices, null_columns, stored_columns, take_columns, JoinKeys,
};
use super::{Checkpoint, Operator, Side, SideWatermarks};
use crate::dataflow::{Chunk, Message};
use crate::error::{Result, SluiceError};
use crate::state::key::Key;
use crate::state::table::{StateTable, StateTableId};
use crate::state::QueryState;

/// Which unmatched rows an outer join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    pub fn preserves(self, side: Side) -> bool {
        matches!(
            (self, side),
            (JoinKind::Full, _) | (JoinKind::Left, Side::Left) | (JoinKind::Right, Side::Right)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            JoinKind::Inner => "INNER",
            JoinKind::Left => "LEFT",
            JoinKind::Right => "RIGHT",
            JoinKind::Full => "FULL",
        }
    }
}

/// The time bounds of an interval join: `lower <= rt - lt <= upper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub lower: i64,
    pub upper: i64,
    /// How far behind its watermark a row may arrive and still join.
    pub grace: i64,
}

impl Interval {
    /// Some row is kept for ever (a regular join: a bound is missing).
    pub fn is_unbounded(&self) -> bool {
        self.lower == i64::MIN || self.upper == i64::MAX
    }
}

/// Rows freed unmatched: (row, time).
type Unmatched = Vec<(Box<[u8]>, i64)>;

struct Stored {
    /// The row in its side's row format.
    row: Box<[u8]>,
    matched: bool,
}

/// One join key's rows by (event time, sequence number), oldest first. Rows
/// mostly arrive and expire in time order, so both ends are cheap.
struct KeyRows {
    key: Key,
    rows: VecDeque<((i64, u64), Stored)>,
}

impl KeyRows {
    fn position(&self, at: (i64, u64)) -> Option<usize> {
        match self.rows.front() {
            Some((first, _)) if *first == at => Some(0),
            _ => self.rows.binary_search_by_key(&at, |(k, _)| *k).ok(),
        }
    }
}

/// One side's buffered rows.
struct Buffer {
    schema: SchemaRef,
    rows: RowConverter,
    /// Join key → its slot in `keys`.
    ids: HashMap<Key, u32>,
    keys: Vec<KeyRows>,
    /// Slots of `keys` whose key has no rows left, for reuse (with the capacity
    /// of their row lists).
    free: Vec<u32>,
    /// (time, seq) → key slot, oldest first, to free rows as watermarks pass.
    expiry: BTreeMap<(i64, u64), u32>,
}

impl Buffer {
    fn new(schema: SchemaRef) -> Result<Buffer> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Buffer {
            schema,
            rows: RowConverter::new(fields)?,
            ids: HashMap::default(),
            keys: Vec::new(),
            free: Vec::new(),
            expiry: BTreeMap::new(),
        })
    }

    fn len(&self) -> usize {
        self.expiry.len()
    }

    fn insert(&mut self, key: &[u8], time: i64, seq: u64, stored: Stored) {
        let id = match self.ids.get(key) {
            Some(&id) => id,
            None => {
                let id = match self.free.pop() {
                    Some(id) => {
                        self.keys[id as usize].key = Key::new(key);
                        id
                    }
                    None => {
                        self.keys.push(KeyRows {
                            key: Key::new(key),
                            rows: VecDeque::new(),
                        });
                        (self.keys.len() - 1) as u32
                    }
                };
                self.ids.insert(Key::new(key), id);
                id
            }
        };
        let at = (time, seq);
        let rows = &mut self.keys[id as usize].rows;
        match rows.back() {
            Some((last, _)) if *last > at => {
                let i = rows.partition_point(|(k, _)| *k < at);
                rows.insert(i, (at, stored));
            }
            _ => rows.push_back((at, stored)),
        }
        self.expiry.insert(at, id);
    }

    /// The rows of `key` with times in `lo..=hi`.
    fn candidates(
        &self,
        key: &[u8],
        lo: i64,
        hi: i64,
    ) -> impl Iterator<Item = &((i64, u64), Stored)> {
        let rows = self.ids.get(key).map(|&id| &self.keys[id as usize].rows);
        let (from, to) = rows.map_or((0, 0), |rows| {
            (
                rows.partition_point(|((t, _), _)| *t < lo),
                rows.partition_point(|((t, _), _)| *t <= hi),
            )
        });
        rows.into_iter()
            .flat_map(move |r| r.range(from..to.max(from)))
    }

    /// Removes the rows older than `before`, telling `removed` each one's join
    /// key and (time, seq); returns the unmatched ones' rows and times.
    fn expire(&mut self, before: i64, mut removed: impl FnMut(&[u8], (i64, u64))) -> Unmatched {
        let mut unmatched = Vec::new();
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 >= before {
                break;
            }
            let (at, id) = entry.remove_entry();
            let slot = &mut self.keys[id as usize];
            if let Some(i) = slot.position(at) {
                if let Some((_, stored)) = slot.rows.remove(i) {
                    if !stored.matched {
                        unmatched.push((stored.row, at.0));
                    }
                }
            }
            removed(&slot.key, at);
            if slot.rows.is_empty() {
                self.ids.remove::<[u8]>(&slot.key);
                self.free.push(id);
            }
        }
        unmatched
    }

    /// The key and row buffered at (time, seq).
    fn get(&self, time: i64, seq: u64) -> Option<(&[u8], &Stored)> {
        let slot = &self.keys[*self.expiry.get(&(time, seq))? as usize];
        let i = slot.position((time, seq))?;
        Some((&slot.key, &slot.rows[i].1))
    }

    fn get_mut(&mut self, time: i64, seq: u64) -> Option<&mut Stored> {
        let slot = &mut self.keys[*self.expiry.get(&(time, seq))? as usize];
        let i = slot.position((time, seq))?;
        Some(&mut slot.rows[i].1)
    }
}

pub struct IntervalJoin {
    kind: JoinKind,
    keys: JoinKeys,
    interval: Interval,
    /// The rest of the ON condition, over the joined row.
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    sides: [Buffer; 2],
    watermarks: SideWatermarks,
    out_watermark: i64,
    next_seq: u64,
    /// Each side's rows, persisted (write-only: `sides` is the live copy).
    tables: [StateTable; 2],
    /// The watermarks and the next sequence number, under one key.
    meta: StateTable,
    /// Keys of the layout before state tables (state format < 3), deleted at
    /// the first checkpoint after their rows moved into `tables`.
    legacy: Vec<Vec<u8>>,
    /// Reused to build state keys and values.
    key_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

impl IntervalJoin {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: JoinKind,
        keys: JoinKeys,
        interval: Interval,
        filter: Option<Arc<dyn PhysicalExpr>>,
        left_schema: SchemaRef,
        right_schema: SchemaRef,
        schema: SchemaRef,
    ) -> Result<IntervalJoin> {
        Ok(IntervalJoin {
            kind,
            keys,
            interval,
            filter,
            schema,
            sides: [Buffer::new(left_schema)?, Buffer::new(right_schema)?],
            watermarks: SideWatermarks::default(),
            out_watermark: i64::MIN,
            next_seq: 0,
            tables: Self::row_tables(0),
            meta: StateTable::write_only(StateTableId::of_node(0, 2)),
            legacy: Vec::new(),
            key_scratch: Vec::new(),
            value_scratch: Vec::new(),
        })
    }

    /// The left and right rows' tables of the operator at node `node`.
    fn row_tables(node: u16) -> [StateTable; 2] {
        [0, 1].map(|side| {
            StateTable::write_only(StateTableId::of_node(node, side)).with_suffix(ROW_SUFFIX)
        })
    }

    /// Persists the buffered row of `side` at (time, seq) as it is now.
    fn persist_row(&mut self, side: usize, time: i64, seq: u64, new: bool) {
        if !self.tables[side].persists() {
            return;
        }
        let Some((key, stored)) = self.sides[side].get(time, seq) else {
            return;
        };
        write_row(
            &mut self.tables[side],
            (&mut self.key_scratch, &mut self.value_scratch),
            key,
            (time, seq),
            stored,
            new,
        );
    }

    /// Event times of `side`'s rows that a row of the other side at `t` joins.
    fn range_for(&self, side: Side, t: i64) -> (i64, i64) {
        let Interval { lower, upper, .. } = self.interval;
        match side {
            // A left row at t meets right rows in [t + lower, t + upper].
            Side::Right => (t.saturating_add(lower), t.saturating_add(upper)),
            Side::Left => (t.saturating_sub(upper), t.saturating_sub(lower)),
        }
    }

    /// Rows of `side` older than this can no longer meet a row of the other side.
    fn expiry_threshold(&self, side: Side) -> i64 {
        let other = self.watermarks.get(side.other());
        if other == i64::MAX {
            return i64::MAX;
        }
        let earliest_other = other.saturating_sub(self.interval.grace);
        match side {
            Side::Left => earliest_other.saturating_sub(self.interval.upper),
            Side::Right => earliest_other.saturating_add(self.interval.lower),
        }
    }

    /// No result this operator emits from now on is older than this.
    fn output_watermark(&self) -> i64 {
        let (l, r) = (self.watermarks.left, self.watermarks.right);
        if l.min(r) == i64::MAX {
            return i64::MAX;
        }
        let grace = self.interval.grace;
        let mut w = l.min(r).saturating_sub(grace);
        if self.kind.preserves(Side::Left) {
            w = w.min(self.expiry_threshold(Side::Left));
        }
        if self.kind.preserves(Side::Right) {
            w = w.min(self.expiry_threshold(Side::Right));
        }
        w
    }

    /// Rows of `side` paired with all-null columns for the other side.
    fn padded(&self, side: Side, this: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        let other = null_columns(&self.sides[side.other().index()].schema, rows);
        let (l, r) = match side {
            Side::Left => (this, other),
            Side::Right => (other, this),
        };
        assemble(&self.schema, l, r, rows)
    }

    fn emit_padded_stored(
        &self,
        side: Side,
        rows: Vec<(Box<[u8]>, i64)>,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        let columns = stored_columns(
            &self.sides[side.index()].rows,
            rows.iter().map(|(r, _)| r.as_ref()),
        )?;
        let times: Int64Array = rows.iter().map(|(_, t)| Some(*t)).collect();
        let batch = self.padded(side, columns, n)?;
        out.push(Message::Chunk(Chunk::new(batch, times, None)));
        Ok(())
    }

    fn expire(&mut self, out: &mut Vec<Message>) -> Result<()> {
        for side in [Side::Left, Side::Right] {
            let before = self.expiry_threshold(side);
            let table = &mut self.tables[side.index()];
            let scratch = &mut self.key_scratch;
            let unmatched = self.sides[side.index()].expire(before, |key, at| {
                if table.persists() {
                    row_key(key, at, scratch);
                    table.delete(scratch);
                }
            });
            if self.kind.preserves(side) {
                self.emit_padded_stored(side, unmatched, out)?;
            }
        }
        Ok(())
    }
}

impl Operator for IntervalJoin {
    fn inputs(&self) -> usize {
        2
    }

    fn describe(&self) -> String {
        let bound = |ms: i64| match ms {
            i64::MIN => "-∞".to_string(),
            i64::MAX => "∞".to_string(),
            ms => format!("{ms} ms"),
        };
        let mut bounds = format!(
            "right time - left time in [{}, {}], grace {} ms",
            bound(self.interval.lower),
            bound(self.interval.upper),
            self.interval.grace
        );
        if self.interval.is_unbounded() {
            bounds.push_str(" (unbounded: the state of a side grows with its input)");
        }
        format!(
            "IntervalJoin: {} ON {}, {bounds}{}",
            self.kind.name(),
            self.keys.describe(),
            self.filter
                .as_ref()
                .map(|f| format!(", filter {f}"))
                .unwrap_or_default()
        )
    }

    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let side = Side::of_input(input);
        if chunk.ops.is_some() {
            return Err(SluiceError::Internal(
                "an interval join received a changelog".into(),
            ));
        }
        // Rows behind their own watermark by more than the grace period may have
        // lost matches already: they are late.
        let late_before = self
            .watermarks
            .get(side)
            .saturating_sub(self.interval.grace);
        let late: BooleanArray = chunk
            .rowtime
            .iter()
            .map(|t| Some(t.unwrap_or(i64::MIN) < late_before))
            .collect();
        let chunk = if late.true_count() > 0 {
            out.push(Message::Late(chunk.filter(&late)?));
            chunk.filter(&arrow::compute::not(&late)?)?
        } else {
            chunk
        };
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let mut failures = Vec::new();
        let (key_rows, null_key) = self.keys.of(side, &chunk.batch, &mut failures)?;
        out.extend(row_errors(|| self.describe(), &chunk, failures));

        // Probe the other side.
        let other = &self.sides[side.other().index()];
        let mut this_index = Vec::new();
        let mut other_at = Vec::new();
        let mut other_rows: Vec<&[u8]> = Vec::new();
        for (i, _) in null_key.iter().enumerate().filter(|(_, null)| !**null) {
            let (lo, hi) = self.range_for(side.other(), chunk.rowtime.value(i));
            if lo > hi {
                continue;
            }
            for ((t, seq), stored) in other.candidates(key_rows.row(i).as_ref(), lo, hi) {
                this_index.push(i as u32);
                other_at.push((*t, *seq));
                other_rows.push(&stored.row);
            }
        }
        let mut this_matched = vec![false; n];
        if !this_index.is_empty() {
            let pairs = this_index.len();
            let this_cols =
                take_columns(&chunk.batch, &indices(this_index.iter().map(|&i| Some(i))))?;
            let other_cols = stored_columns(&other.rows, other_rows)?;
            let (l, r) = match side {
                Side::Left => (this_cols, other_cols),
                Side::Right => (other_cols, this_cols),
            };
            let joined = assemble(&self.schema, l, r, pairs)?;
            let times: Int64Array = this_index
                .iter()
                .zip(&other_at)
                .map(|(&i, &(t, _))| Some(chunk.rowtime.value(i as usize).max(t)))
                .collect();
            let mut failures = Vec::new();
            let mask = filter_mask(self.filter.as_ref(), &joined, &mut failures)?;
            out.extend(batch_errors(|| self.describe(), &joined, failures));
            let keep = |k: usize| mask.as_ref().is_none_or(|m| m.value(k));
            for k in 0..pairs {
                if !keep(k) {
                    continue;
                }
                this_matched[this_index[k] as usize] = true;
                let (t, seq) = other_at[k];
                if let Some(stored) = self.sides[side.other().index()].get_mut(t, seq) {
                    if !stored.matched {
                        stored.matched = true;
                        self.persist_row(side.other().index(), t, seq, false);
                    }
                }
            }
            let (batch, times) = match &mask {
                Some(m) => (
                    arrow::compute::filter_record_batch(&joined, m)?,
                    filter(&times, m)?
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .cloned()
                        .ok_or_else(|| SluiceError::Internal("filtered times".into()))?,
                ),
                None => (joined, times),
            };
            if batch.num_rows() > 0 {
                out.push(Message::Chunk(Chunk::new(batch, times, None)));
            }
        }

        // Buffer the rows for the other side's rows still to come; rows that can
        // never match (a NULL key, or older than the other side can still reach)
        // are padded at once by an outer join.
        let own_rows = self.sides[side.index()]
            .rows
            .convert_columns(chunk.batch.columns())?;
        let too_old = self.expiry_threshold(side);
        let mut pad_now = Vec::new();
        for i in 0..n {
            let t = chunk.rowtime.value(i);
            if null_key[i] || t < too_old {
                if !this_matched[i] && self.kind.preserves(side) {
                    pad_now.push(i as u32);
                }
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let stored = Stored {
                row: own_rows.row(i).as_ref().into(),
                matched: this_matched[i],
            };
            let table = &mut self.tables[side.index()];
            if table.persists() {
                write_row(
                    table,
                    (&mut self.key_scratch, &mut self.value_scratch),
                    key_rows.row(i).as_ref(),
                    (t, seq),
                    &stored,
                    true,
                );
            }
            self.sides[side.index()].insert(key_rows.row(i).as_ref(), t, seq, stored);
        }
        if !pad_now.is_empty() {
            let idx = indices(pad_now.iter().map(|&i| Some(i)));
            let rows = pad_now.len();
            let batch = self.padded(side, take_columns(&chunk.batch, &idx)?, rows)?;
            let times = arrow::compute::take(&chunk.rowtime, &idx, None)?;
            let times = times
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| SluiceError::Internal("taken times".into()))?;
            out.push(Message::Chunk(Chunk::new(batch, times, None)));
        }
        Ok(())
    }

    fn on_watermark(&mut self, input: usize, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        let side = Side::of_input(input);
        self.watermarks.update(side, watermark);
        self.expire(out)?;
        let w = self.output_watermark();
        if w > self.out_watermark {
            self.out_watermark = w;
            out.push(Message::Watermark(w));
        }
        Ok(())
    }

    /// No row of `input` will come: the other side's rows need not wait for
    /// it, and unmatched ones of an outer join come out now.
    fn on_end(&mut self, input: usize, out: &mut Vec<Message>) -> Result<()> {
        self.watermarks.update(Side::of_input(input), i64::MAX);
        self.expire(out)
    }

    fn state_entries(&self) -> usize {
        self.sides.iter().map(Buffer::len).sum()
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
        let mut meta = Vec::with_capacity(32);
        for v in [
            self.watermarks.left,
            self.watermarks.right,
            self.out_watermark,
        ] {
            // The end-of-input watermark is not kept: input appended later (a file
            // that grows) is not late.
            let v = if v == i64::MAX { i64::MIN } else { v };
            meta.extend_from_slice(&v.to_be_bytes());
        }
        meta.extend_from_slice(&self.next_seq.to_be_bytes());
        self.meta.put(META_KEY, &meta);
        for table in self.tables.iter_mut().chain([&mut self.meta]) {
            table.flush(batch);
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        let corrupt = || SluiceError::State("corrupt interval join state".into());
        self.tables = Self::row_tables(id);
        self.meta = StateTable::write_only(StateTableId::of_node(id, 2));
        for table in self.tables.iter_mut().chain([&mut self.meta]) {
            table.attach(state);
        }
        if let Some((_, value)) = self.meta.scan()?.into_iter().next() {
            self.restore_meta(&value)?;
        }
        for side in 0..2 {
            for (key, value) in self.tables[side].scan()? {
                let (join_key, (t, seq)) = parse_row_key(&key).ok_or_else(corrupt)?;
                let (&matched, row) = value.split_first().ok_or_else(corrupt)?;
                self.sides[side].insert(
                    join_key,
                    t,
                    seq,
                    Stored {
                        row: row.into(),
                        matched: matched != 0,
                    },
                );
                self.next_seq = self.next_seq.max(seq + 1);
            }
        }
        self.restore_legacy(id, state)
    }
}

impl IntervalJoin {
    fn restore_meta(&mut self, value: &[u8]) -> Result<()> {
        let word = |i: usize| -> Result<[u8; 8]> {
            value
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| SluiceError::State("corrupt interval join state".into()))
        };
        self.watermarks.left = i64::from_be_bytes(word(0)?);
        self.watermarks.right = i64::from_be_bytes(word(1)?);
        self.out_watermark = i64::from_be_bytes(word(2)?);
        self.next_seq = self.next_seq.max(u64::from_be_bytes(word(3)?));
        Ok(())
    }

    /// State written before state tables (format < 3) under the operator's
    /// prefix: its rows move into the tables at the next checkpoint, which
    /// deletes the old keys in the same atomic write.
    fn restore_legacy(&mut self, id: u16, state: &QueryState) -> Result<()> {
        let corrupt = || SluiceError::State("corrupt interval join state".into());
        for (key, value) in state.scan(id)? {
            if key == META_KEY {
                self.restore_meta(&value)?;
                self.legacy.push(key);
                continue;
            }
            let (side, t, seq) = parse_legacy_row_key(&key).ok_or_else(corrupt)?;
            let len = value
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(corrupt)? as usize;
            let join_key = value.get(4..4 + len).ok_or_else(corrupt)?;
            let matched = *value.get(4 + len).ok_or_else(corrupt)? != 0;
            let row = value.get(5 + len..).ok_or_else(corrupt)?;
            self.sides[side as usize].insert(
                join_key,
                t,
                seq,
                Stored {
                    row: row.into(),
                    matched,
                },
            );
            self.next_seq = self.next_seq.max(seq + 1);
            self.persist_row(side as usize, t, seq, false);
            self.legacy.push(key);
        }
        Ok(())
    }
}

/// Writes a buffered row into its side's table (`new`: it was never written).
fn write_row(
    table: &mut StateTable,
    (key_scratch, value_scratch): (&mut Vec<u8>, &mut Vec<u8>),
    join_key: &[u8],
    at: (i64, u64),
    stored: &Stored,
    new: bool,
) {
    row_key(join_key, at, key_scratch);
    value_scratch.clear();
    value_scratch.push(stored.matched as u8);
    value_scratch.extend_from_slice(&stored.row);
    if new {
        table.insert_new(key_scratch, value_scratch);
    } else {
        table.put(key_scratch, value_scratch);
    }
}

const META_KEY: &[u8] = b"m";

/// Bytes after the join key in a row's state key: time and sequence number.
const ROW_SUFFIX: usize = 16;

/// A buffered row's state key: the join key, the time (sign flipped so byte
/// order is time order), the sequence number.
fn row_key(join_key: &[u8], (time, seq): (i64, u64), out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(join_key);
    out.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

fn parse_row_key(key: &[u8]) -> Option<(&[u8], (i64, u64))> {
    let split = key.len().checked_sub(ROW_SUFFIX)?;
    let (join_key, suffix) = key.split_at(split);
    let time = u64::from_be_bytes(suffix[..8].try_into().ok()?) ^ (1 << 63);
    let seq = u64::from_be_bytes(suffix[8..].try_into().ok()?);
    Some((join_key, (time as i64, seq)))
}

/// A row key of the layout before state tables: `r`, side, time, sequence.
fn parse_legacy_row_key(key: &[u8]) -> Option<(u8, i64, u64)> {
    if key.len() != 18 || key[0] != b'r' || key[1] > 1 {
        return None;
    }
    let time = u64::from_be_bytes(key[2..10].try_into().ok()?) ^ (1 << 63);
    let seq = u64::from_be_bytes(key[10..18].try_into().ok()?);
    Some((key[1], time as i64, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::checkpoint;
    use crate::state::StateWriteBatch;
    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn side_schema(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Utf8, false),
            Field::new(format!("{prefix}v"), DataType::Int64, false),
        ]))
    }

    /// `l LEFT JOIN r ON lk = rk`, right time - left time in [-1000, 3000].
    fn join(kind: JoinKind) -> IntervalJoin {
        let (l, r) = (side_schema("l"), side_schema("r"));
        let out = Arc::new(Schema::new(vec![
            Field::new("lk", DataType::Utf8, true),
            Field::new("lv", DataType::Int64, true),
            Field::new("rk", DataType::Utf8, true),
            Field::new("rv", DataType::Int64, true),
        ]));
        IntervalJoin::new(
            kind,
            JoinKeys::new(
                vec![Arc::new(Column::new("lk", 0))],
                vec![Arc::new(Column::new("rk", 0))],
                vec![DataType::Utf8],
            )
            .unwrap(),
            Interval {
                lower: -1000,
                upper: 3000,
                grace: 0,
            },
            None,
            l,
            r,
            out,
        )
        .unwrap()
    }

    fn chunk(prefix: &str, rows: &[(&str, i64, i64)]) -> Chunk {
        let batch = RecordBatch::try_new(
            side_schema(prefix),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        Chunk::new(batch, rows.iter().map(|r| Some(r.2)).collect(), None)
    }

    /// (left value, right value) of the output rows, and late row count.
    type Pairs = Vec<(Option<i64>, Option<i64>)>;

    fn results(out: &[Message]) -> (Pairs, usize) {
        let mut rows = Vec::new();
        let mut late = 0;
        for m in out {
            match m {
                Message::Chunk(c) => {
                    let lv = c
                        .batch
                        .column(1)
                        .as_primitive::<arrow::datatypes::Int64Type>();
                    let rv = c
                        .batch
                        .column(3)
                        .as_primitive::<arrow::datatypes::Int64Type>();
                    for i in 0..c.num_rows() {
                        rows.push((
                            lv.is_valid(i).then(|| lv.value(i)),
                            rv.is_valid(i).then(|| rv.value(i)),
                        ));
                    }
                }
                Message::Late(c) => late += c.num_rows(),
                _ => {}
            }
        }
        (rows, late)
    }

    #[test]
    fn a_row_is_kept_until_no_row_of_the_other_side_can_match() {
        let mut j = join(JoinKind::Left);
        let mut out = Vec::new();
        j.on_chunk(
            Side::Left.index(),
            chunk("l", &[("a", 1, 10_000)]),
            &mut out,
        )
        .unwrap();
        // The right side's watermark reaches the last time that can still match.
        j.on_watermark(Side::Right.index(), 13_000, &mut out)
            .unwrap();
        j.on_watermark(Side::Left.index(), 20_000, &mut out)
            .unwrap();
        assert_eq!(
            results(&out).0,
            vec![],
            "nothing is padded while a match can come"
        );
        j.on_chunk(
            Side::Right.index(),
            chunk("r", &[("a", 7, 13_000), ("a", 8, 13_001)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(results(&out).0, vec![(Some(1), Some(7))]);
        // Past the interval the row goes; it matched, so it is not padded.
        out.clear();
        j.on_watermark(Side::Right.index(), 13_001, &mut out)
            .unwrap();
        assert_eq!(results(&out).0, vec![]);
        assert_eq!(j.sides[0].len(), 0);
    }

    #[test]
    fn an_unmatched_row_is_padded_once_when_its_interval_closes() {
        let mut j = join(JoinKind::Left);
        let mut out = Vec::new();
        j.on_chunk(
            Side::Left.index(),
            chunk("l", &[("a", 1, 10_000), ("b", 2, 10_500)]),
            &mut out,
        )
        .unwrap();
        j.on_chunk(
            Side::Right.index(),
            chunk("r", &[("a", 5, 8_999)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(results(&out).0, vec![], "8,999 is before 10,000 - 1,000");
        j.on_watermark(Side::Left.index(), 20_000, &mut out)
            .unwrap();
        j.on_watermark(Side::Right.index(), 13_001, &mut out)
            .unwrap();
        assert_eq!(results(&out).0, vec![(Some(1), None)]);
        // Row b (10,500) is still to be padded: the output watermark must not
        // pass it, or a windowed aggregate downstream would drop it as late.
        let last_watermark = out.iter().rev().find_map(|m| match m {
            Message::Watermark(w) => Some(*w),
            _ => None,
        });
        assert!(
            last_watermark.is_some_and(|w| w <= 10_500),
            "{last_watermark:?}"
        );
        j.on_watermark(Side::Right.index(), 20_000, &mut out)
            .unwrap();
        assert_eq!(results(&out).0, vec![(Some(1), None), (Some(2), None)]);
    }

    #[test]
    fn rows_behind_their_watermark_are_late_and_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let mut j = join(JoinKind::Inner);
        j.restore(3, &state).unwrap();
        let mut out = Vec::new();
        j.on_watermark(Side::Left.index(), 5_000, &mut out).unwrap();
        j.on_chunk(
            Side::Left.index(),
            chunk("l", &[("a", 1, 4_999), ("a", 2, 6_000)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(results(&out).1, 1);
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut j, 3, &mut batch).unwrap();
        state.commit(batch, 1, &[]).unwrap();
        let mut restored = join(JoinKind::Inner);
        restored.restore(3, &state).unwrap();
        assert_eq!(restored.watermarks.left, 5_000);
        let mut out = Vec::new();
        restored
            .on_chunk(
                Side::Right.index(),
                chunk("r", &[("a", 9, 7_000)]),
                &mut out,
            )
            .unwrap();
        assert_eq!(results(&out).0, vec![(Some(2), Some(9))]);
    }

    /// The rows of q7's join mostly live shorter than a checkpoint interval:
    /// those never reach the store, and a row freed after it was written is
    /// deleted there.
    #[test]
    fn rows_freed_within_a_checkpoint_interval_are_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let mut j = join(JoinKind::Inner);
        j.restore(3, &state).unwrap();
        let mut out = Vec::new();
        j.on_chunk(Side::Left.index(), chunk("l", &[("a", 1, 1_000)]), &mut out)
            .unwrap();
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut j, 3, &mut batch).unwrap();
        // The row and the operator's watermarks.
        assert_eq!(batch.len(), 2);
        state.commit(batch, 1, &[]).unwrap();

        // Rows buffered and freed in one interval, and the committed row freed.
        j.on_chunk(
            Side::Left.index(),
            chunk("l", &[("b", 2, 2_000), ("c", 3, 2_500), ("b", 4, 50_000)]),
            &mut out,
        )
        .unwrap();
        j.on_watermark(Side::Right.index(), 40_000, &mut out)
            .unwrap();
        assert_eq!(j.state_entries(), 1);
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut j, 3, &mut batch).unwrap();
        // The committed row's delete, the live row, the watermarks.
        assert_eq!(batch.len(), 3);
        state.commit(batch, 2, &[]).unwrap();

        let mut restored = join(JoinKind::Inner);
        restored.restore(3, &state).unwrap();
        assert_eq!(restored.state_entries(), 1);
        let mut out = Vec::new();
        restored
            .on_chunk(
                Side::Right.index(),
                chunk("r", &[("b", 9, 49_500)]),
                &mut out,
            )
            .unwrap();
        assert_eq!(results(&out).0, vec![(Some(4), Some(9))]);
    }

    /// State written by builds before state tables (format 2) is read and
    /// moved into the tables at the next checkpoint.
    #[test]
    fn state_of_the_layout_before_state_tables_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        // One left row "a" (join key in row format), value 2 at 6 s, as the
        // old snapshot wrote it; watermarks left 5 s, right and output unset.
        let j = join(JoinKind::Inner);
        let key_rows = j.sides[0]
            .rows
            .convert_columns(chunk("l", &[("a", 2, 6_000)]).batch.columns())
            .unwrap();
        let keys = RowConverter::new(vec![SortField::new(DataType::Utf8)])
            .unwrap()
            .convert_columns(&[Arc::new(StringArray::from(vec!["a"])) as ArrayRef])
            .unwrap();
        let join_key = keys.row(0).as_ref().to_vec();
        let mut value = (join_key.len() as u32).to_be_bytes().to_vec();
        value.extend_from_slice(&join_key);
        value.push(0);
        value.extend_from_slice(key_rows.row(0).as_ref());
        let mut legacy_key = vec![b'r', 0];
        legacy_key.extend_from_slice(&((6_000u64) ^ (1 << 63)).to_be_bytes());
        legacy_key.extend_from_slice(&7u64.to_be_bytes());
        let mut meta = Vec::new();
        for v in [5_000i64, i64::MIN, i64::MIN] {
            meta.extend_from_slice(&v.to_be_bytes());
        }
        meta.extend_from_slice(&8u64.to_be_bytes());
        let mut batch = StateWriteBatch::default();
        batch.put(3, &legacy_key, value);
        batch.put(3, META_KEY, meta);
        state.commit(batch, 1, &[]).unwrap();

        let mut migrated = join(JoinKind::Inner);
        migrated.restore(3, &state).unwrap();
        assert_eq!(migrated.watermarks.left, 5_000);
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut migrated, 3, &mut batch).unwrap();
        state.commit(batch, 2, &[]).unwrap();
        assert!(state.scan(3).unwrap().is_empty(), "old keys deleted");

        let mut restored = join(JoinKind::Inner);
        restored.restore(3, &state).unwrap();
        assert_eq!(restored.watermarks.left, 5_000);
        assert!(restored.legacy.is_empty());
        let mut out = Vec::new();
        restored
            .on_chunk(
                Side::Right.index(),
                chunk("r", &[("a", 9, 7_000)]),
                &mut out,
            )
            .unwrap();
        assert_eq!(results(&out).0, vec![(Some(2), Some(9))]);
    }

    #[test]
    fn row_keys_round_trip_and_sort_by_time() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        row_key(b"k", (-5, 1), &mut a);
        row_key(b"k", (3, 0), &mut b);
        assert!(a < b);
        assert_eq!(parse_row_key(&a), Some((&b"k"[..], (-5, 1))));
        row_key(b"", (i64::MAX, 7), &mut c);
        assert_eq!(parse_row_key(&c), Some((&b""[..], (i64::MAX, 7))));
        assert_eq!(parse_row_key(b"short"), None);
    }
}
