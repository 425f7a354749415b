//! Stream-table join: each event looks up the table's current row for its key.
//!
//! The table side is the table's materialized state, kept up to date by the
//! query that maintains the table; the join reads it at the moment the event is
//! processed (ksqlDB's stream-table semantics). Lookups are vectorised: the join
//! keys of a chunk are converted to the table's key row format at once and
//! probed under one read lock.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, BooleanArray};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::physical_plan::PhysicalExpr;

use super::evaluate::{evaluate_all, row_errors};
use super::materialize::MaterializedTable;
use super::Operator;
use crate::dataflow::{Chunk, Message};
use crate::error::Result;

pub struct LookupJoin {
    /// Expressions over the stream row giving the table key, in key-column order.
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    table: Arc<MaterializedTable>,
    table_name: String,
    /// LEFT JOIN: events without a table row pass with NULL table columns.
    keep_unmatched: bool,
    /// Stream columns then table columns.
    schema: SchemaRef,
}

impl LookupJoin {
    pub fn new(
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        table: Arc<MaterializedTable>,
        table_name: String,
        keep_unmatched: bool,
        schema: SchemaRef,
    ) -> Self {
        LookupJoin {
            key_exprs,
            table,
            table_name,
            keep_unmatched,
            schema,
        }
    }
}

impl Operator for LookupJoin {
    fn describe(&self) -> String {
        format!(
            "LookupJoin: {} {} ON key = [{}]",
            if self.keep_unmatched { "LEFT" } else { "INNER" },
            self.table_name,
            self.key_exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let mut failures = Vec::new();
        let keys = evaluate_all(&self.key_exprs, &chunk.batch, &mut failures)?;
        out.extend(row_errors(|| self.describe(), &chunk, failures));
        let (matched, hit_columns) = self.table.lookup_columns(&keys)?;
        let hits = matched.iter().filter(|m| **m).count();
        let table_schema = self.table.schema();
        let left = if self.keep_unmatched || matched.iter().all(|m| *m) {
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
            for (c, field) in hit_columns.iter().zip(table_schema.fields()) {
                let null = new_null_array(field.data_type(), 1);
                columns.push(interleave(&[c.as_ref(), null.as_ref()], &picks)?);
            }
        } else {
            columns.extend(hit_columns);
        }
        // The join's output types (table columns are nullable after a LEFT JOIN).
        let columns = super::join_rows::cast_to(&self.schema, columns)?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        debug_assert_eq!(batch.num_rows(), out_rows);
        out.push(Message::Chunk(Chunk::new(batch, left.rowtime, left.ops)));
        Ok(())
    }
}
