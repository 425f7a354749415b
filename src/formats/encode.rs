//! [`Chunk`]s → log records, vectorised through arrow-json / arrow-csv writers.

use arrow::array::ArrayRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::key::encode_keys;
use crate::catalog::{KeyFormat, Relation, ValueFormat};
use crate::chunk::{Chunk, Op};
use crate::connectors::OutRecord;
use crate::error::Result;

/// Encodes rows for one relation's topic.
pub struct RecordEncoder {
    value_format: ValueFormat,
    key_format: KeyFormat,
    key_cols: Vec<usize>,
    key_names: Vec<String>,
    delimiter: u8,
}

impl RecordEncoder {
    pub fn new(relation: &Relation) -> Self {
        let key_cols = relation.key_indices();
        RecordEncoder {
            value_format: relation.format.value_format,
            key_format: relation.format.key_format,
            key_names: key_cols
                .iter()
                .map(|&i| relation.columns[i].name.clone())
                .collect(),
            key_cols,
            delimiter: relation.format.delimiter as u8,
        }
    }

    /// One record per row: upserts and inserts carry the row as the value, deletes
    /// are tombstones (null value) keyed like the row they remove.
    pub fn encode(&self, chunk: &Chunk) -> Result<Vec<OutRecord>> {
        let batch = &chunk.batch;
        let n = batch.num_rows();
        let key_columns: Vec<ArrayRef> = self
            .key_cols
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let keys = encode_keys(self.key_format, &key_columns, &self.key_names, n);
        let values: Vec<Vec<u8>> = match self.value_format {
            // JSON values carry every column, the key columns too, so a consumer of the
            // topic sees whole rows.
            ValueFormat::Json => json_lines(batch)?,
            ValueFormat::Delimited => {
                let value_cols: Vec<usize> = (0..batch.num_columns())
                    .filter(|i| !self.key_cols.contains(i))
                    .collect();
                delimited_lines(&batch.project(&value_cols)?, self.delimiter)?
            }
        };
        let mut out = Vec::with_capacity(n);
        for (row, (value, key)) in values.into_iter().zip(keys).enumerate() {
            let value = match chunk.op(row) {
                Op::Delete => None,
                Op::Upsert => Some(Bytes::from(value)),
            };
            out.push(OutRecord {
                partition: None,
                timestamp: chunk.rowtime.value(row),
                key,
                value,
            });
        }
        Ok(out)
    }
}

/// Each row as one JSON object, nulls written explicitly.
pub(crate) fn json_lines(batch: &RecordBatch) -> std::result::Result<Vec<Vec<u8>>, ArrowError> {
    let mut buf = Vec::with_capacity(batch.num_rows() * 64);
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        w.write(batch)?;
        w.finish()?;
    }
    Ok(split_lines(&buf, batch.num_rows()))
}

fn delimited_lines(
    batch: &RecordBatch,
    delimiter: u8,
) -> std::result::Result<Vec<Vec<u8>>, ArrowError> {
    let mut buf = Vec::with_capacity(batch.num_rows() * 32);
    {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(false)
            .with_delimiter(delimiter)
            .build(&mut buf);
        w.write(batch)?;
    }
    Ok(split_lines(&buf, batch.num_rows()))
}

/// The writers end every row with '\n' and escape newlines inside values, so
/// splitting on '\n' recovers the rows.
fn split_lines(buf: &[u8], rows: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(rows);
    for line in buf.split(|&b| b == b'\n') {
        if out.len() == rows {
            break;
        }
        out.push(line.to_vec());
    }
    while out.len() < rows {
        out.push(b"{}".to_vec());
    }
    out
}
