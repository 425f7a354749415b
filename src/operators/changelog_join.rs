//! Table-table join, kept up to date with retractions.
//!
//! Each side keeps its table's current rows by primary key, and an index from
//! join key to the primary keys having it. A change on one side retracts the
//! result rows its old version produced (deletes), then adds those of its new
//! version (upserts); outer joins also swap a row of the other side between
//! padded and matched when it loses its last or gains its first partner. The
//! result is a changelog keyed by the planner's choice of key (the left key for
//! a join on the right table's primary key, else both keys), so downstream
//! tables and topics see upserts and tombstones.

use arrow::array::{ArrayRef, Int64Array, Int8Array, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{HashMap, HashSet};

use super::evaluate::row_errors;
use super::interval_join::JoinKind;
use super::join_rows::{assemble, stored_columns, take_columns, JoinKeys};
use super::{Checkpoint, Operator, Side, SideWatermarks};
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::state::table::{length_prefixed_key, split_length_prefixed, StateTable, StateTableId};
use crate::state::QueryState;

type Bytes = Box<[u8]>;

/// One side's table.
struct Table {
    schema: SchemaRef,
    rows: RowConverter,
    primary_key: Vec<usize>,
    pk_rows: RowConverter,
    /// Primary key → (join key, or `None` when it has a NULL; full row).
    current: HashMap<Bytes, (Option<Bytes>, Bytes)>,
    /// Join key → primary keys of the rows having it.
    index: HashMap<Bytes, HashSet<Bytes>>,
    /// The rows, keyed `[join key, length-prefixed][primary key]` (so that a
    /// join key's rows share a vnode), written as they change; read back
    /// whole at restore.
    store: StateTable,
    scratch: Vec<u8>,
}

impl Table {
    fn new(schema: SchemaRef, primary_key: Vec<usize>) -> Result<Table> {
        let fields = |cols: &mut dyn Iterator<Item = &DataType>| {
            cols.map(|t| SortField::new(t.clone())).collect::<Vec<_>>()
        };
        let all: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        let pk: Vec<&DataType> = primary_key.iter().map(|&i| all[i]).collect();
        Ok(Table {
            rows: RowConverter::new(fields(&mut all.iter().copied()))?,
            pk_rows: RowConverter::new(fields(&mut pk.iter().copied()))?,
            schema,
            primary_key,
            current: HashMap::default(),
            index: HashMap::default(),
            store: StateTable::write_only(StateTableId::of_node(0, 0)),
            scratch: Vec::new(),
        })
    }

    fn partners(&self, join_key: Option<&Bytes>) -> Vec<Bytes> {
        join_key
            .and_then(|k| self.index.get(k))
            .map(|pks| {
                pks.iter()
                    .filter_map(|pk| self.current.get(pk))
                    .map(|(_, row)| row.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn has_rows_with(&self, join_key: Option<&Bytes>) -> bool {
        join_key
            .and_then(|k| self.index.get(k))
            .is_some_and(|pks| !pks.is_empty())
    }

    fn remove(&mut self, pk: &Bytes) -> Option<(Option<Bytes>, Bytes)> {
        let old = self.current.remove(pk)?;
        if self.store.persists() {
            length_prefixed_key(old.0.as_deref(), pk, &mut self.scratch);
            self.store.delete(&self.scratch);
        }
        if let Some(k) = &old.0 {
            if let Some(pks) = self.index.get_mut(k) {
                pks.remove(pk);
                if pks.is_empty() {
                    self.index.remove(k);
                }
            }
        }
        Some(old)
    }

    fn insert(&mut self, pk: Bytes, join_key: Option<Bytes>, row: Bytes) {
        if self.store.persists() {
            length_prefixed_key(join_key.as_deref(), &pk, &mut self.scratch);
            self.store.put(&self.scratch, &row);
        }
        self.hold(pk, join_key, row);
    }

    /// Keeps a row in memory (without writing it).
    fn hold(&mut self, pk: Bytes, join_key: Option<Bytes>, row: Bytes) {
        if let Some(k) = &join_key {
            self.index.entry(k.clone()).or_default().insert(pk.clone());
        }
        self.current.insert(pk, (join_key, row));
    }
}

/// A result row: each side's row (None: padded with NULLs), and its op.
struct Change {
    left: Option<Bytes>,
    right: Option<Bytes>,
    op: Op,
    time: i64,
}

pub struct ChangelogJoin {
    kind: JoinKind,
    keys: JoinKeys,
    sides: [Table; 2],
    schema: SchemaRef,
    watermarks: SideWatermarks,
    /// Stored keys of the layout before state format 5, deleted at the next
    /// checkpoint (their rows are written to the tables then).
    legacy: Vec<Vec<u8>>,
}

/// The inputs of one side of a table-table join.
pub struct TableInput {
    pub schema: SchemaRef,
    /// Columns of `schema` forming the table's primary key.
    pub primary_key: Vec<usize>,
}

impl ChangelogJoin {
    pub fn new(
        kind: JoinKind,
        keys: JoinKeys,
        left: TableInput,
        right: TableInput,
        schema: SchemaRef,
    ) -> Result<ChangelogJoin> {
        Ok(ChangelogJoin {
            kind,
            keys,
            sides: [
                Table::new(left.schema, left.primary_key)?,
                Table::new(right.schema, right.primary_key)?,
            ],
            schema,
            watermarks: SideWatermarks::default(),
            legacy: Vec::new(),
        })
    }

    fn pair(
        side: Side,
        this: Option<Bytes>,
        other: Option<Bytes>,
    ) -> (Option<Bytes>, Option<Bytes>) {
        match side {
            Side::Left => (this, other),
            Side::Right => (other, this),
        }
    }

    /// Applies one change of `side`'s table and records the result changes.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        side: Side,
        pk: Bytes,
        join_key: Option<Bytes>,
        row: Option<Bytes>,
        time: i64,
        changes: &mut Vec<Change>,
    ) {
        let (this, other) = (side.index(), side.other().index());
        let this_kept = self.kind.preserves(side);
        let other_kept = self.kind.preserves(side.other());
        let mut emit = |left, right, op| {
            changes.push(Change {
                left,
                right,
                op,
                time,
            })
        };
        if let Some((old_key, old_row)) = self.sides[this].remove(&pk) {
            let partners = self.sides[other].partners(old_key.as_ref());
            if partners.is_empty() {
                if this_kept {
                    let (l, r) = Self::pair(side, Some(old_row), None);
                    emit(l, r, Op::Delete);
                }
            } else {
                let orphaned = other_kept && !self.sides[this].has_rows_with(old_key.as_ref());
                for o in partners {
                    let (l, r) = Self::pair(side, Some(old_row.clone()), Some(o.clone()));
                    emit(l, r, Op::Delete);
                    if orphaned {
                        let (l, r) = Self::pair(side, None, Some(o));
                        emit(l, r, Op::Upsert);
                    }
                }
            }
        }
        if let Some(new_row) = row {
            let partners = self.sides[other].partners(join_key.as_ref());
            if partners.is_empty() {
                if this_kept {
                    let (l, r) = Self::pair(side, Some(new_row.clone()), None);
                    emit(l, r, Op::Upsert);
                }
            } else {
                let adopted = other_kept && !self.sides[this].has_rows_with(join_key.as_ref());
                for o in partners {
                    if adopted {
                        let (l, r) = Self::pair(side, None, Some(o.clone()));
                        emit(l, r, Op::Delete);
                    }
                    let (l, r) = Self::pair(side, Some(new_row.clone()), Some(o));
                    emit(l, r, Op::Upsert);
                }
            }
            self.sides[this].insert(pk, join_key, new_row);
        }
    }

    /// The changes as one chunk of the join's schema.
    fn to_chunk(&self, changes: &[Change]) -> Result<Chunk> {
        let n = changes.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for side in [Side::Left, Side::Right] {
            let table = &self.sides[side.index()];
            let rows: Vec<&Option<Bytes>> = changes
                .iter()
                .map(|c| match side {
                    Side::Left => &c.left,
                    Side::Right => &c.right,
                })
                .collect();
            let present: Vec<&[u8]> = rows.iter().filter_map(|r| r.as_deref()).collect();
            let mut next = 0u32;
            let positions: UInt32Array = rows
                .iter()
                .map(|r| {
                    r.as_ref().map(|_| {
                        next += 1;
                        next - 1
                    })
                })
                .collect();
            let stored = stored_columns(&table.rows, present)?;
            let placed = arrow::record_batch::RecordBatch::try_new_with_options(
                table.schema.clone(),
                stored,
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(next as usize)),
            )?;
            columns.extend(take_columns(&placed, &positions)?);
        }
        let right = columns.split_off(self.sides[0].schema.fields().len());
        let batch = assemble(&self.schema, columns, right, n)?;
        let times: Int64Array = changes.iter().map(|c| Some(c.time)).collect();
        let ops: Int8Array = changes.iter().map(|c| Some(c.op as i8)).collect();
        Ok(Chunk::new(batch, times, Some(ops)))
    }
}

impl Operator for ChangelogJoin {
    fn inputs(&self) -> usize {
        2
    }

    fn describe(&self) -> String {
        format!(
            "ChangelogJoin: {} ON {}",
            self.kind.name(),
            self.keys.describe()
        )
    }

    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let side = Side::of_input(input);
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let table = &self.sides[side.index()];
        let mut failures = Vec::new();
        let (key_rows, null_key) = self.keys.of(side, &chunk.batch, &mut failures)?;
        out.extend(row_errors(|| self.describe(), &chunk, failures));
        let pk_columns: Vec<ArrayRef> = table
            .primary_key
            .iter()
            .map(|&i| chunk.batch.column(i).clone())
            .collect();
        let pk_rows = table.pk_rows.convert_columns(&pk_columns)?;
        let rows = table.rows.convert_columns(chunk.batch.columns())?;
        let mut changes = Vec::new();
        for (i, &null) in null_key.iter().enumerate() {
            let row = match chunk.op(i) {
                Op::Upsert => Some(Bytes::from(rows.row(i).as_ref())),
                Op::Delete => None,
            };
            let join_key = (!null).then(|| Bytes::from(key_rows.row(i).as_ref()));
            self.apply(
                side,
                pk_rows.row(i).as_ref().into(),
                join_key,
                row,
                chunk.rowtime.value(i),
                &mut changes,
            );
        }
        if !changes.is_empty() {
            out.push(Message::Chunk(self.to_chunk(&changes)?));
        }
        Ok(())
    }

    fn on_watermark(&mut self, input: usize, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        let side = Side::of_input(input);
        if let Some(w) = self.watermarks.update(side, watermark) {
            out.push(Message::Watermark(w));
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.sides.iter().map(|t| t.current.len()).sum()
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
        for table in &mut self.sides {
            table.store.flush(batch);
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        let corrupt = || SluiceError::State("corrupt table-table join state".into());
        for (s, table) in self.sides.iter_mut().enumerate() {
            table.store =
                StateTable::write_only(StateTableId::of_node(id, s as u8)).length_prefixed();
            table.store.attach(state);
            for (key, row) in table.store.scan()? {
                let (join_key, pk) = split_length_prefixed(&key).ok_or_else(corrupt)?;
                table.hold(pk.into(), join_key.map(Bytes::from), row.into());
            }
        }
        // Before state format 5 the rows were stored under the operator's node
        // id, keyed `[side][primary key]`, valued `[join key, length-prefixed]
        // [row]`; they are written to the tables now and flushed at the next
        // checkpoint.
        for (key, value) in state.scan(id)? {
            let (&s, pk) = key.split_first().ok_or_else(corrupt)?;
            let table = self.sides.get_mut(s as usize).ok_or_else(corrupt)?;
            let (join_key, row) = split_length_prefixed(&value).ok_or_else(corrupt)?;
            table.insert(pk.into(), join_key.map(Bytes::from), row.into());
            self.legacy.push(key);
        }
        Ok(())
    }
}
