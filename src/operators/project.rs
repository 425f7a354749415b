//! SELECT list: DataFusion physical expressions evaluated over each chunk.

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::compute::{and, filter, is_not_null};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_plan::PhysicalExpr;

use super::evaluate::{evaluate, row_errors};
use super::Operator;
use crate::dataflow::{Chunk, Message};
use crate::error::Result;

pub struct Project {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl Project {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Project { exprs, schema }
    }
}

impl Operator for Project {
    fn describe(&self) -> String {
        format!(
            "Project: {}",
            self.exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        let mut columns = Vec::with_capacity(self.exprs.len());
        let mut failures = Vec::new();
        for (e, field) in self.exprs.iter().zip(self.schema.fields()) {
            let mut col = evaluate(e, &chunk.batch, &mut failures)?;
            if col.data_type() != field.data_type() {
                col = arrow::compute::cast(&col, field.data_type())?;
            }
            columns.push(col);
        }
        // A value that failed (or is NULL) in a NOT NULL column makes the row
        // invalid: it is reported and dropped instead of failing the chunk.
        let mut keep: Option<BooleanArray> = None;
        for (col, field) in columns.iter().zip(self.schema.fields()) {
            if field.is_nullable() || col.null_count() == 0 {
                continue;
            }
            let valid = is_not_null(col)?;
            for row in (0..n).filter(|&r| !valid.value(r)) {
                if !failures.iter().any(|(r, _)| *r == row) {
                    failures.push((row, format!("NULL in NOT NULL column '{}'", field.name())));
                }
            }
            keep = Some(match keep {
                Some(k) => and(&k, &valid)?,
                None => valid,
            });
        }
        if let Some(errors) = row_errors(|| self.describe(), &chunk, failures) {
            out.push(errors);
        }
        let (chunk, columns) = match keep {
            Some(mask) => {
                let columns = columns
                    .iter()
                    .map(|c| filter(c, &mask))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                (chunk.filter(&mask)?, columns)
            }
            None => (chunk, columns),
        };
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(chunk.num_rows())),
        )?;
        out.push(Message::Chunk(chunk.with_batch(batch)));
        Ok(())
    }
}
