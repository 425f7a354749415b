//! [`Chunk`]s → log records, vectorised through arrow-json / arrow-csv writers.

use arrow::array::ArrayRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::kafka_primitive;
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
    /// The columns a value holds (see `Relation::value_indices`).
    value_cols: Vec<usize>,
    /// JSON with one value column written bare (`wrap_single_value=false`).
    unwrapped: bool,
    /// JSON values typed as ksqlDB writes them.
    ksqldb_json: bool,
    delimiter: u8,
    key_delimiter: u8,
}

impl RecordEncoder {
    pub fn new(relation: &Relation) -> Self {
        let key_cols = relation.key_indices();
        let value_cols = relation.value_indices();
        RecordEncoder {
            value_format: relation.format.value_format,
            key_format: relation.format.key_format,
            key_names: key_cols
                .iter()
                .map(|&i| relation.columns[i].name.clone())
                .collect(),
            key_cols,
            unwrapped: !relation.format.wrap_single_value && value_cols.len() == 1,
            ksqldb_json: relation.format.ksqldb_json,
            value_cols,
            delimiter: relation.format.delimiter as u8,
            key_delimiter: relation.format.key_delimiter as u8,
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
        let keys = encode_keys(
            self.key_format,
            &key_columns,
            &self.key_names,
            n,
            self.key_delimiter,
            self.ksqldb_json,
        );
        let value_batch = batch.project(&self.value_cols)?;
        let values: Vec<Option<Bytes>> = match self.value_format {
            ValueFormat::Json if self.unwrapped => json_scalars(&value_batch, self.ksqldb_json)?,
            ValueFormat::Json => present(json_lines_as(&value_batch, self.ksqldb_json)?),
            ValueFormat::Delimited => present(delimited_lines(&value_batch, self.delimiter)?),
            ValueFormat::Kafka => match value_batch.columns().first() {
                Some(c) => kafka_primitive::encode(c.as_ref()),
                None => vec![None; n],
            },
        };
        let mut out = Vec::with_capacity(n);
        for (row, (value, key)) in values.into_iter().zip(keys).enumerate() {
            let value = match chunk.op(row) {
                Op::Delete => None,
                Op::Upsert => value,
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

fn present(lines: Vec<Vec<u8>>) -> Vec<Option<Bytes>> {
    lines.into_iter().map(|l| Some(Bytes::from(l))).collect()
}

/// The first column of each row as a bare JSON value (`wrap_single_value=false`,
/// one-column JSON keys); NULL is an absent item.
pub(crate) fn json_scalars(
    batch: &RecordBatch,
    ksqldb: bool,
) -> std::result::Result<Vec<Option<Bytes>>, ArrowError> {
    let batch = batch.project(&[0])?;
    // The writer gives {"<name>":VALUE}; strip the wrapper it always writes.
    let prefix = format!(
        "{{{}:",
        serde_json::to_string(batch.schema().field(0).name()).unwrap_or_default()
    );
    Ok(json_lines_as(&batch, ksqldb)?
        .into_iter()
        .map(|line| {
            let inner = line
                .strip_prefix(prefix.as_bytes())
                .and_then(|l| l.strip_suffix(b"}"))?;
            (inner != b"null").then(|| Bytes::copy_from_slice(inner))
        })
        .collect())
}

/// Each row as one JSON object, nulls written explicitly.
pub(crate) fn json_lines(batch: &RecordBatch) -> std::result::Result<Vec<Vec<u8>>, ArrowError> {
    json_lines_as(batch, false)
}

/// `json_lines`; with `ksqldb`, values typed as ksqlDB writes them
/// (`formats/ksql_json.rs`).
pub(crate) fn json_lines_as(
    batch: &RecordBatch,
    ksqldb: bool,
) -> std::result::Result<Vec<Vec<u8>>, ArrowError> {
    let mut buf = Vec::with_capacity(batch.num_rows() * 64);
    {
        let mut builder = arrow::json::WriterBuilder::new().with_explicit_nulls(true);
        if ksqldb {
            builder = builder.with_encoder_factory(std::sync::Arc::new(super::ksql_json::KsqlJson));
        }
        let mut w = builder.build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        w.write(batch)?;
        w.finish()?;
    }
    Ok(split_lines(&buf, batch.num_rows()))
}

pub(crate) fn delimited_lines(
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
