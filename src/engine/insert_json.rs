//! Rows as JSON objects (`POST /inserts-stream`), matched to a relation's
//! columns by name as ksqlDB matches them.

use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};
use sqlparser::ast::Ident;

use super::Engine;
use crate::catalog::Relation;
use crate::error::{Result, SluiceError};
use crate::formats::JsonValueDecoder;

/// A relation rows are inserted into, with the decoder for its schema.
pub struct JsonInsert {
    relation: Relation,
    decoder: JsonValueDecoder,
}

impl JsonInsert {
    /// The relation the rows go to.
    pub fn relation(&self) -> &Relation {
        &self.relation
    }

    /// The row with its keys renamed to the relation's columns: an exact
    /// match wins, else a case-insensitive one (ksqlDB upper-cases unquoted
    /// names, Sluice lower-cases them); a `` `quoted` `` key matches only
    /// exactly. Keys naming no column are ignored, as ksqlDB ignores them.
    fn canonical(&self, row: &[u8]) -> Result<Vec<u8>> {
        let value: Value = serde_json::from_slice(row)
            .map_err(|e| SluiceError::sql(format!("invalid JSON row: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(SluiceError::sql("a row must be a JSON object"));
        };
        let mut out = Map::with_capacity(fields.len());
        for (key, value) in fields {
            let column = match key.strip_prefix('`').and_then(|k| k.strip_suffix('`')) {
                Some(quoted) => self.relation.columns.iter().find(|c| c.name == quoted),
                None => self
                    .relation
                    .columns
                    .iter()
                    .find(|c| c.name == key)
                    .or_else(|| {
                        self.relation
                            .columns
                            .iter()
                            .find(|c| c.name.eq_ignore_ascii_case(&key))
                    }),
            };
            if let Some(column) = column {
                if out.insert(column.name.clone(), value).is_some() {
                    return Err(SluiceError::sql(format!(
                        "the row names column '{}' twice",
                        column.name
                    )));
                }
            }
        }
        serde_json::to_vec(&Value::Object(out)).map_err(|e| SluiceError::Internal(e.to_string()))
    }
}

impl Engine {
    /// The target of an inserts stream: `name` is folded like an unquoted
    /// identifier unless it is `` `quoted` ``.
    pub fn json_insert(&self, name: &str) -> Result<JsonInsert> {
        let ident = match name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
            Some(quoted) => Ident::with_quote('"', quoted),
            None => Ident::new(name),
        };
        let (relation, _) = self.insert_targets(&ident, &[])?;
        let decoder = JsonValueDecoder::with_coercion(relation.schema(), true)
            .map_err(|e| SluiceError::Internal(e.to_string()))?;
        Ok(JsonInsert { relation, decoder })
    }

    /// Decodes `rows` (JSON objects) into the target's columns; fails on the
    /// first row that does not match them.
    pub fn decode_json(&self, insert: &mut JsonInsert, rows: &[&[u8]]) -> Result<RecordBatch> {
        let canonical = rows
            .iter()
            .map(|r| insert.canonical(r))
            .collect::<Result<Vec<_>>>()?;
        insert
            .decoder
            .decode_all(canonical.iter().map(Vec::as_slice))
            .map_err(|e| SluiceError::sql(format!("a row does not match the columns: {e}")))
    }

    /// Writes rows [`Engine::decode_json`] decoded to `relation`'s topic.
    /// Returns the number of rows.
    pub async fn insert_decoded(&self, relation: &Relation, rows: &RecordBatch) -> Result<usize> {
        let all: Vec<usize> = (0..rows.num_columns()).collect();
        self.insert_columns(relation, &all, rows.columns()).await
    }
}
