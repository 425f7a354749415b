//! WHERE / HAVING: a DataFusion physical predicate over each chunk.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Int8Array};
use datafusion::physical_plan::PhysicalExpr;

use super::evaluate::{evaluate, row_errors};
use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};

pub struct Filter {
    predicate: Arc<dyn PhysicalExpr>,
    /// On a changelog (a table), an upsert that no longer passes the predicate must
    /// delete the key's previous row instead of vanishing, so it becomes a delete.
    changelog: bool,
}

impl Filter {
    pub fn new(predicate: Arc<dyn PhysicalExpr>, changelog: bool) -> Self {
        Filter {
            predicate,
            changelog,
        }
    }
}

impl Operator for Filter {
    fn describe(&self) -> String {
        format!("Filter: {}", self.predicate)
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let mut failures = Vec::new();
        let value = evaluate(&self.predicate, &chunk.batch, &mut failures)?;
        // A row whose predicate fails is NULL there, so it does not pass.
        if let Some(errors) = row_errors(|| self.describe(), &chunk, failures) {
            out.push(errors);
        }
        let mask = value
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| {
                SluiceError::sql(format!(
                    "WHERE must be a boolean, not {}",
                    value.data_type()
                ))
            })?;
        // NULL counts as false, as in SQL.
        let mask = crate::dataflow::message::null_as_false(mask);
        let result = match (&chunk.ops, self.changelog) {
            (Some(ops), true) => {
                // Rows failing the predicate stay, as deletes of their key.
                let ops: Int8Array = ops
                    .iter()
                    .zip(mask.iter())
                    .map(|(op, pass)| {
                        if pass == Some(true) {
                            op
                        } else {
                            Some(Op::Delete as i8)
                        }
                    })
                    .collect();
                Chunk::new(chunk.batch, chunk.rowtime, Some(ops))
            }
            _ => chunk.filter(&mask)?,
        };
        if !result.is_empty() {
            out.push(Message::Chunk(result));
        }
        Ok(())
    }
}
