//! Materialized tables: the latest row per key of a changelog, kept for pull
//! queries and persisted at checkpoints.
//!
//! Once the table's query checkpoints, its rows live in a state table: the
//! `Materialize` operator writes each epoch's changes at the checkpoint, and
//! pull queries read the last committed epoch from RocksDB (a consistent view,
//! with no lock the pipeline takes). Without checkpoints (benchmarks, the
//! private table of `ChangelogRetractions`) the rows stay in memory and
//! readers see every applied chunk.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_map::EntryRef;
use datafusion::common::{HashMap, HashSet};
use parking_lot::RwLock;

use super::{Checkpoint, Operator};
use crate::dataflow::{Chunk, Message, Op};
use crate::error::Result;
use crate::state::key::Key;
use crate::state::table::{StateTable, StateTableId, KEY_HEADER};
use crate::state::QueryState;

/// The rows of one table, keyed by its key columns (Arrow row format) and stored as
/// Arrow rows, so a snapshot converts back to columns in one vectorised pass.
pub struct MaterializedTable {
    schema: SchemaRef,
    key_cols: Vec<usize>,
    key_rows: RowConverter,
    full_rows: RowConverter,
    inner: RwLock<TableRows>,
    /// Where the rows live once the table's query checkpoints.
    stored: RwLock<Option<StoredRows>>,
    /// The last count of stored rows, and when it was taken (for metrics).
    counted: parking_lot::Mutex<Option<(std::time::Instant, usize)>>,
}

/// How long a count of stored rows stands for metrics: counting reads every
/// key of the table.
const COUNT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The committed rows of a table in its query's state.
#[derive(Clone)]
struct StoredRows {
    state: QueryState,
    id: StateTableId,
}

/// The rows of a table that is not stored (its query never checkpoints).
#[derive(Default)]
struct TableRows {
    // A hash index: stream-table joins and upserts are point operations, and a
    // B-tree of long byte keys cost a dozen cache-missing `memcmp`s per probe.
    // Only snapshots need key order; they sort.
    rows: HashMap<Key, StoredRow>,
}

impl TableRows {
    /// Upserts `row`; returns the key if it is new to the table.
    fn upsert(&mut self, key: &[u8], row: &[u8]) -> Option<Key> {
        match self.rows.entry_ref(key) {
            EntryRef::Occupied(mut e) => {
                let stored = e.get_mut();
                // Same length (fixed-width rows): no reallocation.
                if stored.len() == row.len() {
                    stored.copy_from_slice(row);
                } else {
                    *stored = row.into();
                }
                None
            }
            EntryRef::Vacant(v) => {
                let e = v.insert_entry_with_key(Key::new(key), row.into());
                Some(e.key().clone())
            }
        }
    }

    fn delete(&mut self, key: &[u8]) {
        self.rows.remove(key);
    }
}

impl MaterializedTable {
    pub fn new(schema: SchemaRef, key_cols: Vec<usize>) -> Result<Arc<Self>> {
        let key_rows = RowConverter::new(
            key_cols
                .iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect(),
        )?;
        let full_rows = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Arc::new(MaterializedTable {
            schema,
            key_cols,
            key_rows,
            full_rows,
            inner: RwLock::new(TableRows::default()),
            stored: RwLock::new(None),
            counted: parking_lot::Mutex::new(None),
        }))
    }

    /// From now on the rows are read from state table `id` of `state`, as
    /// of its last committed checkpoint; the rows in memory are dropped.
    fn attach(&self, state: &QueryState, id: StateTableId) {
        *self.stored.write() = Some(StoredRows {
            state: state.clone(),
            id,
        });
        self.inner.write().rows = HashMap::default();
    }

    fn stored(&self) -> Option<StoredRows> {
        self.stored.read().clone()
    }

    /// The key and full row of every row of `chunk`, in row format.
    pub(crate) fn encode(
        &self,
        chunk: &Chunk,
    ) -> Result<(super::aggregate_inputs::RowBytes, Rows)> {
        let keys: Vec<ArrayRef> = self
            .key_cols
            .iter()
            .map(|&i| chunk.batch.column(i).clone())
            .collect();
        // A table without key columns (a global aggregate) has one row, whose
        // key is empty.
        let keys = super::aggregate_inputs::RowBytes::convert(&self.key_rows, &keys)?;
        let rows = self.full_rows.convert_columns(chunk.batch.columns())?;
        Ok((keys, rows))
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows in the table (committed ones, once it is stored).
    pub fn row_count(&self) -> Result<usize> {
        match self.stored() {
            Some(s) => s.state.count_prefix(&s.id.prefix()),
            None => Ok(self.inner.read().rows.len()),
        }
    }

    /// [`row_count`](Self::row_count), counted at most every 30 s for a stored table.
    pub fn recent_row_count(&self) -> Result<usize> {
        if self.stored.read().is_none() {
            return self.row_count();
        }
        let mut counted = self.counted.lock();
        if let Some((at, n)) = *counted {
            if at.elapsed() < COUNT_FOR {
                return Ok(n);
            }
        }
        let n = self.row_count()?;
        *counted = Some((std::time::Instant::now(), n));
        Ok(n)
    }

    /// Applies a changelog chunk atomically: a concurrent snapshot sees all of it or
    /// none of it.
    pub fn apply(&self, chunk: &Chunk) -> Result<()> {
        self.apply_noting_new(chunk).map(|_| ())
    }

    /// [`apply`](Self::apply), returning for each row the key it inserted if the
    /// table did not have it.
    fn apply_noting_new(&self, chunk: &Chunk) -> Result<Vec<Option<Key>>> {
        let (keys, rows) = self.encode(chunk)?;
        let mut inner = self.inner.write();
        let mut new = Vec::with_capacity(chunk.num_rows());
        for i in 0..chunk.num_rows() {
            let key = keys.row(i);
            match chunk.op(i) {
                Op::Upsert => new.push(inner.upsert(key, rows.row(i).as_ref())),
                Op::Delete => {
                    inner.delete(key);
                    new.push(None);
                }
            }
        }
        Ok(new)
    }

    /// All rows, in key order.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        self.select_rows(|_| true, None)
    }

    /// The rows whose key (in the key's row format, whose byte order is the
    /// key order) `keep` accepts, in key order; with a limit, only that many,
    /// of the smallest keys. Under one read lock, the stored rows are copied
    /// once, into the result's columns; a limit picks its rows without
    /// sorting the others.
    pub fn select_rows(
        &self,
        keep: impl Fn(&[u8]) -> bool,
        limit: Option<usize>,
    ) -> Result<RecordBatch> {
        if let Some(stored) = self.stored() {
            // An iterator reads one consistent view of the committed rows.
            let entries = stored.state.scan_prefix(&stored.id.prefix())?;
            let picked = entries
                .iter()
                .map(|(k, v)| (&k[KEY_HEADER..], v.as_slice()))
                .filter(|(k, _)| keep(k))
                .collect();
            return self.rows_to_batch(&smallest_keys(picked, limit));
        }
        let inner = self.inner.read();
        let picked = inner
            .rows
            .iter()
            .filter(|(k, _)| keep(k.as_ref()))
            .map(|(k, r)| (k.as_ref(), r.as_ref()))
            .collect();
        self.rows_to_batch(&smallest_keys(picked, limit))
    }

    /// The rows whose key (row format) lies between `lower` and `upper`, in
    /// key order; with a limit, only that many, of the smallest keys. A stored
    /// table reads the range in each vnode (a seek and the keys in range,
    /// merged by key), so the cost follows the result, not the table.
    pub fn select_range(
        &self,
        lower: std::ops::Bound<&[u8]>,
        upper: std::ops::Bound<&[u8]>,
        limit: Option<usize>,
    ) -> Result<RecordBatch> {
        let Some(stored) = self.stored() else {
            let range = (lower, upper);
            return self.select_rows(
                |k| std::ops::RangeBounds::<[u8]>::contains(&range, k),
                limit,
            );
        };
        let mut batches = Vec::new();
        self.merge_stored(&stored, (lower, upper), limit, SCAN_BATCH_ROWS, |batch| {
            batches.push(batch);
            Ok(true)
        })?;
        Ok(arrow::compute::concat_batches(&self.schema, &batches)?)
    }

    /// The table keeps its rows in a state table (its query checkpoints).
    pub fn is_stored(&self) -> bool {
        self.stored.read().is_some()
    }

    /// [`select_range`](Self::select_range) in pieces: the rows between
    /// `lower` and `upper` in key order, handed to `emit` in batches of at
    /// most `batch_rows` rows until it returns false. A stored table reads
    /// them from one snapshot of the committed rows, merging its vnodes, so
    /// memory follows the batch, not the result.
    pub fn stream_range(
        &self,
        lower: std::ops::Bound<&[u8]>,
        upper: std::ops::Bound<&[u8]>,
        limit: Option<usize>,
        batch_rows: usize,
        mut emit: impl FnMut(RecordBatch) -> Result<bool>,
    ) -> Result<()> {
        match self.stored() {
            Some(stored) => self.merge_stored(&stored, (lower, upper), limit, batch_rows, emit),
            None => emit(self.select_range(lower, upper, limit)?).map(|_| ()),
        }
    }

    /// The committed rows of a key range of a stored table, from one
    /// snapshot with its vnodes merged by key, in batches.
    fn merge_stored(
        &self,
        stored: &StoredRows,
        (lower, upper): (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>),
        limit: Option<usize>,
        batch_rows: usize,
        mut emit: impl FnMut(RecordBatch) -> Result<bool>,
    ) -> Result<()> {
        let ranges = stored.id.key_ranges(lower, upper);
        stored
            .state
            .merge_ranges(&ranges, KEY_HEADER, limit, batch_rows, |entries| {
                let rows: Vec<&[u8]> = entries.iter().map(|(_, v)| v.as_slice()).collect();
                emit(self.rows_to_batch(&rows)?)
            })
    }

    /// The rows of `keys` (one array per key column) that the table has, in
    /// key order, each once.
    pub fn rows_of_keys(&self, keys: &[ArrayRef]) -> Result<RecordBatch> {
        let mut wanted: Vec<Vec<u8>> = self.encode_keys(keys)?.into_iter().flatten().collect();
        wanted.sort_unstable();
        wanted.dedup();
        if let Some(stored) = self.stored() {
            let stored_keys: Vec<Vec<u8>> =
                wanted.iter().map(|k| stored.id.stored_key(k)).collect();
            // One batched read: all keys as of one committed checkpoint.
            let found = stored.state.get_many(&stored_keys)?;
            let hits: Vec<&[u8]> = found.iter().flatten().map(Vec::as_slice).collect();
            return self.rows_to_batch(&hits);
        }
        let inner = self.inner.read();
        let hits: Vec<&[u8]> = wanted
            .iter()
            .filter_map(|k| inner.rows.get(k.as_slice()).map(|r| r.as_ref()))
            .collect();
        self.rows_to_batch(&hits)
    }

    /// Stored rows as a batch of the table's schema.
    fn rows_to_batch(&self, rows: &[&[u8]]) -> Result<RecordBatch> {
        if self.schema.fields().is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let columns = self.rows_to_columns(rows)?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// The key columns' names and types.
    pub fn key_fields(&self) -> Vec<(&str, &arrow::datatypes::DataType)> {
        self.key_cols
            .iter()
            .map(|&c| {
                let f = self.schema.field(c);
                (f.name().as_str(), f.data_type())
            })
            .collect()
    }

    /// `keys` (one array per key column, cast to the key types as needed) in
    /// the key's row format; `None` for a row with a NULL or a value the key
    /// type cannot hold.
    pub fn encode_keys(&self, keys: &[ArrayRef]) -> Result<Vec<Option<Vec<u8>>>> {
        let (keys, rows) = self.key_rows_of(keys)?;
        Ok((0..rows.num_rows())
            .map(|i| (!keys.iter().any(|k| k.is_null(i))).then(|| rows.row(i).data().to_vec()))
            .collect())
    }

    /// `keys` (one array per key column) cast to the key columns' types.
    fn key_rows_of(&self, keys: &[ArrayRef]) -> Result<(Vec<ArrayRef>, Rows)> {
        let keys = keys
            .iter()
            .zip(&self.key_cols)
            .map(|(k, &c)| {
                let t = self.schema.field(c).data_type();
                if k.data_type() == t {
                    Ok(k.clone())
                } else {
                    arrow::compute::cast(k, t)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let rows = self.key_rows.convert_columns(&keys)?;
        Ok((keys, rows))
    }

    /// Full rows (as stored) back to columns.
    pub fn rows_to_columns(&self, rows: &[&[u8]]) -> Result<Vec<ArrayRef>> {
        if rows.is_empty() {
            return Ok(self
                .schema
                .fields()
                .iter()
                .map(|f| arrow::array::new_empty_array(f.data_type()))
                .collect());
        }
        let parser = self.full_rows.parser();
        Ok(self
            .full_rows
            .convert_rows(rows.iter().map(|r| parser.parse(r)))?)
    }

    /// Removes the rows of `keys` (expired windows).
    fn remove(&self, keys: &[Key]) {
        let mut inner = self.inner.write();
        for key in keys {
            inner.delete(key);
        }
    }
}

fn i64_values(array: &ArrayRef) -> Result<Int64Array> {
    let cast = arrow::compute::cast(array, &arrow::datatypes::DataType::Int64)?;
    cast.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| crate::error::SluiceError::Internal("window end is not a time".into()))
}

/// The rows of `picked` (key, row) in key order; with a limit, only that many,
/// of the smallest keys, picked without sorting the others.
fn smallest_keys<'a>(mut picked: Vec<(&'a [u8], &'a [u8])>, limit: Option<usize>) -> Vec<&'a [u8]> {
    if let Some(n) = limit.filter(|&n| n < picked.len()) {
        if n == 0 {
            picked.clear();
        } else {
            picked.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(b.0));
            picked.truncate(n);
        }
    }
    picked.sort_unstable_by(|a, b| a.0.cmp(b.0));
    picked.into_iter().map(|(_, r)| r).collect()
}

/// Rows a scan of a stored table reads into one batch.
pub const SCAN_BATCH_ROWS: usize = 8192;

/// How long the rows of a windowed table stay queryable after their window ends.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Column holding the window end.
    pub end_column: usize,
    pub retention_ms: i64,
}

/// A full row as the table stores it (Arrow row format).
pub type StoredRow = Box<[u8]>;

/// Keeps a [`MaterializedTable`] up to date and passes the changelog on unchanged.
pub struct Materialize {
    table: Arc<MaterializedTable>,
    retention: Option<Retention>,
    /// Keys of rows by window end (windowed tables). Grouped by end: a window's
    /// thousands of rows share it, and a heap of (end, key) compared their keys.
    expiry: BTreeMap<i64, Vec<Key>>,
    /// Once the query checkpoints: the table's rows, each epoch's changes
    /// written at its checkpoint.
    rows: Option<StateTable>,
    /// The keys in `expiry` (with `rows`, whether a key is new to the table is
    /// not known without reading it).
    expiring: HashSet<Key>,
    /// Keys of rows written by state format 3 and before, deleted at the next
    /// checkpoint once the rows are in the state table.
    legacy: Vec<Vec<u8>>,
}

impl Materialize {
    pub fn new(table: Arc<MaterializedTable>) -> Self {
        Materialize {
            table,
            retention: None,
            expiry: BTreeMap::new(),
            rows: None,
            expiring: HashSet::default(),
            legacy: Vec::new(),
        }
    }

    /// Drops a window's rows once the watermark passes its end + `retention`.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Notes that `key`'s row ends its window at `end`, unless noted already.
    fn expire_at(&mut self, key: &[u8], end: i64) {
        if self.expiring.insert(Key::new(key)) {
            self.expiry.entry(end).or_default().push(Key::new(key));
        }
    }

    /// Writes the changes of `chunk` into the state table.
    fn store_chunk(&mut self, chunk: &Chunk) -> Result<()> {
        let (keys, rows) = self.table.encode(chunk)?;
        let ends = match self.retention {
            Some(r) => Some(i64_values(chunk.batch.column(r.end_column))?),
            None => None,
        };
        for i in 0..chunk.num_rows() {
            let key = keys.row(i);
            let Some(table) = self.rows.as_mut() else {
                return Ok(());
            };
            match chunk.op(i) {
                Op::Upsert => {
                    table.put(key, rows.row(i).as_ref());
                    if let Some(ends) = ends.as_ref().filter(|e| e.is_valid(i)) {
                        self.expire_at(key, ends.value(i));
                    }
                }
                Op::Delete => table.delete(key),
            }
        }
        Ok(())
    }

    /// Notes the window ends of stored `(key, row)` entries (at restore).
    fn expire_stored(&mut self, entries: &[(&[u8], &[u8])]) -> Result<()> {
        let Some(r) = self.retention else {
            return Ok(());
        };
        if entries.is_empty() {
            return Ok(());
        }
        let rows: Vec<&[u8]> = entries.iter().map(|(_, v)| *v).collect();
        let columns = self.table.rows_to_columns(&rows)?;
        let ends = i64_values(&columns[r.end_column])?;
        for (i, (key, _)) in entries.iter().enumerate() {
            if ends.is_valid(i) {
                self.expire_at(key, ends.value(i));
            }
        }
        Ok(())
    }
}

impl Operator for Materialize {
    fn describe(&self) -> String {
        match &self.retention {
            Some(r) => format!("Materialize: retention={}ms", r.retention_ms),
            None => "Materialize".into(),
        }
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        if self.rows.is_some() {
            self.store_chunk(&chunk)?;
            out.push(Message::Chunk(chunk));
            return Ok(());
        }
        let new = self.table.apply_noting_new(&chunk)?;
        if let Some(r) = self.retention {
            let ends = i64_values(chunk.batch.column(r.end_column))?;
            // One expiry entry per window row, not one per update of it.
            let mut last: Option<(i64, &mut Vec<Key>)> = None;
            for (i, key) in new.into_iter().enumerate() {
                let Some(key) = key.filter(|_| ends.is_valid(i)) else {
                    continue;
                };
                let end = ends.value(i);
                match &mut last {
                    Some((e, keys)) if *e == end => keys.push(key),
                    _ => {
                        let keys = self.expiry.entry(end).or_default();
                        keys.push(key);
                        last = Some((end, keys));
                    }
                }
            }
        }
        out.push(Message::Chunk(chunk));
        Ok(())
    }

    fn on_watermark(
        &mut self,
        _input: usize,
        watermark: i64,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        // The end of a bounded input (`on_end`) closes every window but is not
        // time passing: the windows stay queryable.
        if let Some(r) = self.retention {
            while let Some(entry) = self.expiry.first_entry() {
                if entry.key().saturating_add(r.retention_ms) > watermark {
                    break;
                }
                let keys = entry.remove();
                match self.rows.as_mut() {
                    Some(table) => {
                        for key in &keys {
                            table.delete(key);
                            self.expiring.remove(key);
                        }
                    }
                    None => self.table.remove(&keys),
                }
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn on_barrier(
        &mut self,
        checkpoint: &mut Checkpoint<'_>,
        _out: &mut Vec<Message>,
    ) -> Result<()> {
        let (id, batch) = (checkpoint.state_id, &mut *checkpoint.writes);
        // Without a store (never restored) there is nothing to write.
        if let Some(table) = self.rows.as_mut() {
            for key in self.legacy.drain(..) {
                batch.delete(id, &key);
            }
            table.flush(batch);
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        let table_id = StateTableId::of_node(id, 0);
        let mut table = StateTable::write_only(table_id);
        table.attach(state);
        self.table.attach(state, table_id);
        if self.retention.is_some() {
            let committed = table.scan()?;
            let entries: Vec<(&[u8], &[u8])> = committed
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            self.expire_stored(&entries)?;
        }
        // Rows of format 3 and before: into the table at the next checkpoint
        // (until then pull queries do not see them).
        let legacy = state.scan(id)?;
        for (key, row) in &legacy {
            table.put(key, row);
        }
        let entries: Vec<(&[u8], &[u8])> = legacy
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        self.expire_stored(&entries)?;
        self.legacy = legacy.into_iter().map(|(k, _)| k).collect();
        self.rows = Some(table);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::checkpoint;
    use crate::state::StateWriteBatch;
    use arrow::array::{Int8Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use crate::state::StateStore;

    fn chunk(rows: &[(&str, Option<&str>)]) -> Chunk {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        let ops = rows
            .iter()
            .map(|r| if r.1.is_some() { Op::Upsert } else { Op::Delete } as i8);
        Chunk::new(
            batch,
            Int64Array::from(vec![0; rows.len()]),
            Some(Int8Array::from_iter_values(ops)),
        )
    }

    fn rows(table: &MaterializedTable) -> Vec<(String, String)> {
        let batch = table.snapshot().unwrap();
        let col = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (k, v) = (col(0), col(1));
        (0..batch.num_rows())
            .map(|i| (k.value(i).to_string(), v.value(i).to_string()))
            .collect()
    }

    /// Once its query checkpoints, a table's rows are read from the state
    /// table as of the last committed checkpoint; rows written by format 3
    /// move into the table at the first checkpoint.
    #[test]
    fn stored_rows_are_read_as_committed_and_format_3_rows_move_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let schema = chunk(&[]).batch.schema();
        // Format 3: `[node][key] → row`.
        let old = MaterializedTable::new(schema.clone(), vec![0]).unwrap();
        let (keys, full) = old
            .encode(&chunk(&[("a", Some("1")), ("b", Some("1"))]))
            .unwrap();
        let mut batch = StateWriteBatch::default();
        for i in 0..2 {
            batch.put(4, keys.row(i), full.row(i).as_ref().to_vec());
        }
        state.commit(batch, 1, &[]).unwrap();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());

        let table = MaterializedTable::new(schema.clone(), vec![0]).unwrap();
        let mut op = Materialize::new(table.clone());
        op.restore(4, &state).unwrap();
        let mut epoch = 1;
        let mut checkpoint = |op: &mut Materialize| {
            let mut batch = StateWriteBatch::default();
            checkpoint(op, 4, &mut batch).unwrap();
            epoch += 1;
            state.commit(batch, epoch, &[]).unwrap();
        };
        checkpoint(&mut op);
        assert_eq!(rows(&table), vec![pair("a", "1"), pair("b", "1")]);
        assert!(state.scan(4).unwrap().is_empty(), "format 3 rows were kept");

        let mut out = Vec::new();
        op.on_chunk(
            0,
            chunk(&[("b", None), ("c", Some("2")), ("a", Some("3"))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&table),
            vec![pair("a", "1"), pair("b", "1")],
            "changes are visible once committed"
        );
        checkpoint(&mut op);
        let now = vec![pair("a", "3"), pair("c", "2")];
        assert_eq!(rows(&table), now);
        let points = table
            .rows_of_keys(&[Arc::new(StringArray::from(vec![
                Some("c"),
                Some("zz"),
                None,
                Some("a"),
            ]))])
            .unwrap();
        assert_eq!(points.num_rows(), 2);
        let limited = table.select_rows(|_| true, Some(1)).unwrap();
        assert_eq!(limited.num_rows(), 1);

        // A restart reads nothing into memory and sees the same rows.
        let again = MaterializedTable::new(schema, vec![0]).unwrap();
        Materialize::new(again.clone()).restore(4, &state).unwrap();
        assert_eq!(again.inner.read().rows.len(), 0);
        assert_eq!(rows(&again), now);
        assert_eq!(again.row_count().unwrap(), 2);
    }

    /// Key ranges over a stored table (one seek per vnode) read what the
    /// same range reads from a table in memory, limits included.
    #[test]
    fn stored_key_ranges_read_what_a_table_in_memory_reads() {
        use std::ops::Bound::{self, Excluded, Included, Unbounded};
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let state = store.query("q").unwrap();
        let schema = chunk(&[]).batch.schema();
        let keys: Vec<String> = (0..300).map(|i| format!("k{i:03}")).collect();
        let rows: Vec<(&str, Option<&str>)> =
            keys.iter().map(|k| (k.as_str(), Some("v"))).collect();
        let memory = MaterializedTable::new(schema.clone(), vec![0]).unwrap();
        memory.apply(&chunk(&rows)).unwrap();
        let stored = MaterializedTable::new(schema, vec![0]).unwrap();
        let mut op = Materialize::new(stored.clone());
        op.restore(2, &state).unwrap();
        op.on_chunk(0, chunk(&rows), &mut Vec::new()).unwrap();
        let mut batch = StateWriteBatch::default();
        checkpoint(&mut op, 2, &mut batch).unwrap();
        state.commit(batch, 1, &[]).unwrap();

        let key = |k: &str| {
            memory
                .encode_keys(&[Arc::new(StringArray::from(vec![k]))])
                .unwrap()[0]
                .clone()
                .unwrap()
        };
        let bound = |b: Bound<&str>| match b {
            Included(k) => Included(key(k)),
            Excluded(k) => Excluded(key(k)),
            Unbounded => Unbounded,
        };
        let names = |batch: RecordBatch| -> Vec<String> {
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            (0..batch.num_rows())
                .map(|i| col.value(i).to_string())
                .collect()
        };
        let cases = [
            (Included("k010"), Excluded("k020")),
            (Excluded("k010"), Included("k020")),
            (Unbounded, Excluded("k005")),
            (Included("k295"), Unbounded),
            (Included("k1"), Excluded("k2")),
            (Excluded("k299"), Unbounded),
            (Unbounded, Unbounded),
        ];
        for (lo, hi) in cases {
            let (lo, hi) = (bound(lo), bound(hi));
            for limit in [None, Some(0), Some(3)] {
                let read = |t: &MaterializedTable| {
                    names(
                        t.select_range(
                            lo.as_ref().map(Vec::as_slice),
                            hi.as_ref().map(Vec::as_slice),
                            limit,
                        )
                        .unwrap(),
                    )
                };
                let want = read(&memory);
                assert_eq!(read(&stored), want, "{lo:?}..{hi:?} limit {limit:?}");
            }
        }
        assert_eq!(
            names(
                stored
                    .select_range(Included(&key("k010")), Excluded(&key("k013")), None)
                    .unwrap()
            ),
            vec!["k010", "k011", "k012"]
        );
    }
}
