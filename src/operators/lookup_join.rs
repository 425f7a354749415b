//! Stream-table join: each event looks up the table's current row for its key.
//!
//! The join keeps its own copy of the table in a state table, fed by the
//! table's changelog as the operator's right input and checkpointed with the
//! query's own offsets of both inputs (as Kafka Streams does). It never reads
//! another query's memory, so after a crash it replays against exactly the
//! table it had, whatever order queries restart in. The source task reads the
//! table ahead of the stream (see `SourceInput::lookup`), so an event joins the
//! table as it was when the event was read (ksqlDB's stream-table semantics).
//! Lookups are vectorised: a chunk's keys are converted to the table's key row
//! format at once and fetched from state in one batch.

use std::sync::Arc;

use arrow::array::{new_empty_array, new_null_array, ArrayRef, BooleanArray};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::physical_plan::PhysicalExpr;

use super::aggregate_inputs::conform;
use super::evaluate::{evaluate_all, row_errors};
use super::join_rows::{cast_to, null_key_rows, stored_columns};
use super::{Checkpoint, Operator, Side};
use crate::dataflow::{Chunk, Message, Op};
use crate::error::Result;
use crate::state::table::{StateTable, StateTableId};
use crate::state::QueryState;

/// The table side: its columns and which of them form its primary key.
pub struct LookupTable {
    pub name: String,
    pub schema: SchemaRef,
    pub key_columns: Vec<usize>,
}

pub struct LookupJoin {
    /// Expressions over the stream row giving the table key, in key-column order.
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    table_name: String,
    table_schema: SchemaRef,
    /// Columns of the table's rows forming its key.
    key_columns: Vec<usize>,
    key_types: Vec<DataType>,
    /// The table's key, in row format (the state key).
    key_rows: RowConverter,
    /// The table's full rows, in row format (the state value).
    rows: RowConverter,
    /// Table key → current row.
    table: StateTable,
    /// LEFT JOIN: events without a table row pass with NULL table columns.
    keep_unmatched: bool,
    /// Stream columns then table columns.
    schema: SchemaRef,
    /// The stream's watermark last passed on.
    watermark: i64,
}

impl LookupJoin {
    pub fn new(
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        table: LookupTable,
        keep_unmatched: bool,
        schema: SchemaRef,
    ) -> Result<Self> {
        let key_types: Vec<DataType> = table
            .key_columns
            .iter()
            .map(|&c| table.schema.field(c).data_type().clone())
            .collect();
        let sort_fields = |types: Vec<&DataType>| -> Vec<SortField> {
            types
                .into_iter()
                .map(|t| SortField::new(t.clone()))
                .collect()
        };
        let key_rows = RowConverter::new(sort_fields(key_types.iter().collect()))?;
        let rows = RowConverter::new(sort_fields(
            table
                .schema
                .fields()
                .iter()
                .map(|f| f.data_type())
                .collect(),
        ))?;
        Ok(LookupJoin {
            key_exprs,
            table_name: table.name,
            table_schema: table.schema,
            key_columns: table.key_columns,
            key_types,
            key_rows,
            rows,
            table: StateTable::new(StateTableId::of_node(0, 0)),
            keep_unmatched,
            schema,
            watermark: i64::MIN,
        })
    }

    /// A change of the table: upserts replace the key's row, deletes remove it.
    fn apply_table_changes(&mut self, chunk: &Chunk) -> Result<()> {
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&c| chunk.batch.column(c).clone())
            .collect();
        let keys = self.key_rows.convert_columns(&keys)?;
        let rows = self.rows.convert_columns(chunk.batch.columns())?;
        for i in 0..chunk.num_rows() {
            match chunk.op(i) {
                Op::Upsert => self.table.put(keys.row(i).as_ref(), rows.row(i).as_ref()),
                Op::Delete => self.table.delete(keys.row(i).as_ref()),
            }
        }
        Ok(())
    }

    /// Joins a chunk of events with the table.
    fn probe(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        let mut failures = Vec::new();
        let keys = evaluate_all(&self.key_exprs, &chunk.batch, &mut failures)?;
        out.extend(row_errors(|| self.describe(), &chunk, failures));
        // The lookup casts the stream's values to the key's types (a value
        // that does not convert matches nothing, like a NULL).
        let keys: Vec<ArrayRef> = keys
            .into_iter()
            .zip(&self.key_types)
            .map(|(k, t)| conform(k, t))
            .collect::<Result<_>>()?;
        let null_key = null_key_rows(&keys, n);
        let key_rows = self.key_rows.convert_columns(&keys)?;
        self.table.load(
            (0..n)
                .filter(|&i| !null_key[i])
                .map(|i| key_rows.row(i).data()),
        )?;
        let mut matched = Vec::with_capacity(n);
        let mut hits: Vec<&[u8]> = Vec::with_capacity(n);
        let mut scratch = Vec::new();
        for (i, &null) in null_key.iter().enumerate() {
            // A NULL key matches nothing, as in SQL.
            let found = if null {
                None
            } else {
                self.table.get_loaded(key_rows.row(i).data(), &mut scratch)
            };
            matched.push(found.is_some());
            hits.extend(found);
        }
        let hit_columns: Vec<ArrayRef> = if hits.is_empty() {
            self.table_schema
                .fields()
                .iter()
                .map(|f| new_empty_array(f.data_type()))
                .collect()
        } else {
            stored_columns(&self.rows, hits.iter().copied())?
        };
        let hits = hits.len();
        let left = if self.keep_unmatched || hits == n {
            chunk
        } else {
            chunk.filter(&BooleanArray::from(matched.clone()))?
        };
        let out_rows = left.num_rows();
        let mut columns: Vec<ArrayRef> = left.batch.columns().to_vec();
        if self.keep_unmatched && hits < n {
            // Row i takes hit k (in order) or the null row.
            let mut next = 0usize;
            let picks: Vec<(usize, usize)> = matched
                .iter()
                .map(|&m| {
                    if m {
                        next += 1;
                        (0, next - 1)
                    } else {
                        (1, 0)
                    }
                })
                .collect();
            for (c, field) in hit_columns.iter().zip(self.table_schema.fields()) {
                let null = new_null_array(field.data_type(), 1);
                columns.push(interleave(&[c.as_ref(), null.as_ref()], &picks)?);
            }
        } else {
            columns.extend(hit_columns);
        }
        // The join's output types (table columns are nullable after a LEFT JOIN).
        let columns = cast_to(&self.schema, columns)?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        debug_assert_eq!(batch.num_rows(), out_rows);
        out.push(Message::Chunk(Chunk::new(batch, left.rowtime, left.ops)));
        Ok(())
    }
}

impl Operator for LookupJoin {
    fn inputs(&self) -> usize {
        2
    }

    fn describe(&self) -> String {
        format!(
            "LookupJoin: {} {} ON key = [{}] (own copy of the table)",
            if self.keep_unmatched { "LEFT" } else { "INNER" },
            self.table_name,
            self.key_exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let side = Side::of_input(input);
        if chunk.num_rows() == 0 {
            return Ok(());
        }
        match side {
            Side::Left => self.probe(chunk, out),
            Side::Right => self.apply_table_changes(&chunk),
        }
    }

    /// Only events produce rows, so only the stream's time moves the output's.
    fn on_watermark(&mut self, input: usize, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        let side = Side::of_input(input);
        if side == Side::Left && watermark > self.watermark {
            self.watermark = watermark;
            out.push(Message::Watermark(watermark));
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.table.entries_in_memory()
    }

    fn on_barrier(
        &mut self,
        checkpoint: &mut Checkpoint<'_>,
        _out: &mut Vec<Message>,
    ) -> Result<()> {
        let batch = &mut *checkpoint.writes;
        self.table.flush(batch);
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        self.table = StateTable::new(StateTableId::of_node(id, 0));
        self.table.attach(state);
        Ok(())
    }
}
