//! Materialized tables: the latest row per key of a changelog, kept for pull
//! queries and persisted at checkpoints.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use parking_lot::RwLock;

use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::Result;
use crate::state::{QueryState, StateWriteBatch};

/// The rows of one table, keyed by its key columns (Arrow row format) and stored as
/// Arrow rows, so a snapshot converts back to columns in one vectorised pass.
pub struct MaterializedTable {
    schema: SchemaRef,
    key_cols: Vec<usize>,
    key_rows: RowConverter,
    full_rows: RowConverter,
    inner: RwLock<TableRows>,
}

#[derive(Default)]
struct TableRows {
    rows: BTreeMap<Box<[u8]>, Box<[u8]>>,
    /// Keys changed since the last checkpoint.
    dirty: BTreeSet<Box<[u8]>>,
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
        }))
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn len(&self) -> usize {
        self.inner.read().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a changelog chunk atomically: a concurrent snapshot sees all of it or
    /// none of it.
    pub fn apply(&self, chunk: &Chunk) -> Result<()> {
        self.apply_noting_new(chunk).map(|_| ())
    }

    /// [`apply`](Self::apply), returning for each row whether it inserted a key
    /// the table did not have.
    pub fn apply_noting_new(&self, chunk: &Chunk) -> Result<Vec<bool>> {
        let keys: Vec<ArrayRef> = self
            .key_cols
            .iter()
            .map(|&i| chunk.batch.column(i).clone())
            .collect();
        let keys = self.key_rows.convert_columns(&keys)?;
        let rows = self.full_rows.convert_columns(chunk.batch.columns())?;
        let mut inner = self.inner.write();
        let mut new = Vec::with_capacity(chunk.num_rows());
        for i in 0..chunk.num_rows() {
            let key: Box<[u8]> = keys.row(i).as_ref().into();
            match chunk.op(i) {
                Op::Upsert => {
                    let old = inner.rows.insert(key.clone(), rows.row(i).as_ref().into());
                    new.push(old.is_none());
                }
                Op::Delete => {
                    inner.rows.remove(&key);
                    new.push(false);
                }
            }
            inner.dirty.insert(key);
        }
        Ok(new)
    }

    /// All rows, in key order.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        let inner = self.inner.read();
        let parser = self.full_rows.parser();
        let columns = self
            .full_rows
            .convert_rows(inner.rows.values().map(|r| parser.parse(r)))?;
        drop(inner);
        if self.schema.fields().is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    pub(crate) fn snapshot_changes(&self, id: u16, batch: &mut StateWriteBatch) {
        let mut inner = self.inner.write();
        let dirty = std::mem::take(&mut inner.dirty);
        for key in dirty {
            match inner.rows.get(&key) {
                Some(row) => batch.put(id, &key, row.to_vec()),
                None => batch.delete(id, &key),
            }
        }
    }

    /// The current row of each key (`keys`: one array per key column, cast to the
    /// key types as needed), under one read lock.
    pub fn lookup(&self, keys: &[ArrayRef]) -> Result<Vec<Option<StoredRow>>> {
        Ok(self.lookup_keyed(keys)?.1)
    }

    /// [`lookup`](Self::lookup), also returning the keys in row format (to tell
    /// which rows of a chunk share a key).
    pub(crate) fn lookup_keyed(&self, keys: &[ArrayRef]) -> Result<(Rows, Vec<Option<StoredRow>>)> {
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
        let inner = self.inner.read();
        let found = (0..rows.num_rows())
            .map(|i| {
                // A NULL key matches nothing, as in SQL.
                if keys.iter().any(|k| k.is_null(i)) {
                    None
                } else {
                    inner.rows.get(rows.row(i).as_ref()).cloned()
                }
            })
            .collect();
        drop(inner);
        Ok((rows, found))
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
    fn remove(&self, keys: &[Box<[u8]>]) {
        let mut inner = self.inner.write();
        for key in keys {
            if inner.rows.remove(key).is_some() {
                inner.dirty.insert(key.clone());
            }
        }
    }

    /// Key and value of column `col` (as i64) of every row.
    fn column_of_rows(&self, col: usize) -> Result<Vec<KeyedTime>> {
        let inner = self.inner.read();
        if inner.rows.is_empty() {
            return Ok(Vec::new());
        }
        let parser = self.full_rows.parser();
        let columns = self
            .full_rows
            .convert_rows(inner.rows.values().map(|r| parser.parse(r)))?;
        let values = i64_values(&columns[col])?;
        Ok(inner.rows.keys().cloned().zip(values.iter()).collect())
    }

    pub(crate) fn restore_rows(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let mut inner = self.inner.write();
        inner.rows.clear();
        inner.dirty.clear();
        for (k, v) in entries {
            inner.rows.insert(k.into(), v.into());
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

/// How long the rows of a windowed table stay queryable after their window ends.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Column holding the window end.
    pub end_column: usize,
    pub retention_ms: i64,
}

type KeyedTime = (Box<[u8]>, Option<i64>);

/// A full row as the table stores it (Arrow row format).
pub type StoredRow = Box<[u8]>;

/// Keeps a [`MaterializedTable`] up to date and passes the changelog on unchanged.
pub struct Materialize {
    table: Arc<MaterializedTable>,
    retention: Option<Retention>,
    /// (window end, key) of rows, earliest first (windowed tables).
    expiry: BinaryHeap<Reverse<(i64, Box<[u8]>)>>,
}

impl Materialize {
    pub fn new(table: Arc<MaterializedTable>) -> Self {
        Materialize {
            table,
            retention: None,
            expiry: BinaryHeap::new(),
        }
    }

    /// Drops a window's rows once the watermark passes its end + `retention`.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }
}

impl Operator for Materialize {
    fn describe(&self) -> String {
        match &self.retention {
            Some(r) => format!("Materialize: retention={}ms", r.retention_ms),
            None => "Materialize".into(),
        }
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let new = self.table.apply_noting_new(&chunk)?;
        if let Some(r) = self.retention {
            let ends = i64_values(chunk.batch.column(r.end_column))?;
            let keys: Vec<ArrayRef> = self
                .table
                .key_cols
                .iter()
                .map(|&i| chunk.batch.column(i).clone())
                .collect();
            let keys = self.table.key_rows.convert_columns(&keys)?;
            // One expiry entry per window row, not one per update of it.
            for (i, &is_new) in new.iter().enumerate() {
                if is_new && ends.is_valid(i) {
                    self.expiry
                        .push(Reverse((ends.value(i), keys.row(i).as_ref().into())));
                }
            }
        }
        out.push(Message::Chunk(chunk));
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        // The end of a bounded input closes every window but is not time passing:
        // the windows stay queryable.
        if let Some(r) = self.retention.filter(|_| watermark < i64::MAX) {
            let mut expired = Vec::new();
            while let Some(Reverse((end, _))) = self.expiry.peek() {
                if end.saturating_add(r.retention_ms) > watermark {
                    break;
                }
                if let Some(Reverse((_, key))) = self.expiry.pop() {
                    expired.push(key);
                }
            }
            if !expired.is_empty() {
                self.table.remove(&expired);
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn snapshot(&mut self, id: u16, batch: &mut StateWriteBatch) -> Result<()> {
        self.table.snapshot_changes(id, batch);
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        self.table.restore_rows(state.scan(id)?);
        if let Some(r) = self.retention {
            for (key, end) in self.table.column_of_rows(r.end_column)? {
                if let Some(end) = end {
                    self.expiry.push(Reverse((end, key)));
                }
            }
        }
        Ok(())
    }
}
