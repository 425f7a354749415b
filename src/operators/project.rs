//! SELECT list: DataFusion physical expressions evaluated over each chunk.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_plan::PhysicalExpr;

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

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        let mut columns = Vec::with_capacity(self.exprs.len());
        for (e, field) in self.exprs.iter().zip(self.schema.fields()) {
            let mut col = e.evaluate(&chunk.batch)?.into_array(n)?;
            if col.data_type() != field.data_type() {
                col = arrow::compute::cast(&col, field.data_type())?;
            }
            columns.push(col);
        }
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        out.push(Message::Chunk(Chunk::new(batch, chunk.rowtime, chunk.ops)));
        Ok(())
    }
}
