//! Record keys → key columns.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::delimited::DelimitedValueDecoder;
use super::json::JsonValueDecoder;
use super::kafka_primitive;
use crate::catalog::KeyFormat;

/// Decodes record keys into one array per key column; a row whose key is absent
/// or cannot be decoded is null in every key column.
pub struct KeyDecoder {
    format: KeyFormat,
    fields: Vec<Field>,
    json: Option<JsonValueDecoder>,
    delimited: Option<DelimitedValueDecoder>,
}

impl KeyDecoder {
    pub fn new(format: KeyFormat, fields: Vec<Field>, delimiter: u8) -> Self {
        let json = match format {
            KeyFormat::Json if !fields.is_empty() => {
                JsonValueDecoder::new(nullable_schema(&fields)).ok()
            }
            _ => None,
        };
        let delimited = (format == KeyFormat::Delimited && !fields.is_empty())
            .then(|| DelimitedValueDecoder::new(nullable_schema(&fields), delimiter));
        KeyDecoder {
            format,
            fields,
            json,
            delimited,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The key columns of each record, and the records whose key is present but
    /// cannot be read (such a record is bad: its key would silently be NULL).
    pub fn decode(&mut self, keys: &[Option<&Bytes>]) -> (Vec<ArrayRef>, KeyErrors) {
        match self.format {
            KeyFormat::None => (self.nulls(keys.len()), Vec::new()),
            KeyFormat::Kafka => self.decode_serialized(keys),
            KeyFormat::KafkaText => self.decode_text(keys),
            KeyFormat::Json => self.decode_json(keys),
            KeyFormat::Delimited => self.decode_delimited(keys),
        }
    }

    /// DELIMITED: the key columns as one delimited line.
    fn decode_delimited(&mut self, keys: &[Option<&Bytes>]) -> (Vec<ArrayRef>, KeyErrors) {
        let n = keys.len();
        let Some(csv) = self.delimited.as_mut() else {
            return (self.nulls(n), Vec::new());
        };
        let present: Vec<usize> = (0..n).filter(|&i| keys[i].is_some()).collect();
        let line = |i: usize| keys[i].map(|k| k.as_ref()).unwrap_or_default();
        let mut errors = Vec::new();
        // Each row's (batch, row): decoded rows from batch 0, NULL keys from 1.
        let mut rows: Vec<(usize, usize)> = vec![(1, 0); n];
        let decoded = match csv.decode_all(present.iter().map(|&i| line(i))) {
            Ok(b) => {
                for (j, &i) in present.iter().enumerate() {
                    rows[i] = (0, j);
                }
                b
            }
            Err(_) => {
                let mut good = Vec::new();
                for &i in &present {
                    match csv.decode_one(line(i)) {
                        Ok(b) => {
                            rows[i] = (0, good.len());
                            good.push(b);
                        }
                        Err(e) => errors.push((
                            i,
                            format!("the record key is not a valid delimited key: {e}"),
                        )),
                    }
                }
                match arrow::compute::concat_batches(&nullable_schema(&self.fields), &good) {
                    Ok(b) => b,
                    Err(_) => return (self.nulls(n), errors),
                }
            }
        };
        let nulls = self.nulls(1);
        let columns = (0..self.fields.len())
            .map(|c| {
                let sources: [&dyn Array; 2] = [decoded.column(c).as_ref(), nulls[c].as_ref()];
                arrow::compute::interleave(&sources, &rows)
            })
            .collect::<Result<Vec<_>, _>>();
        match columns {
            Ok(c) => (c, errors),
            Err(_) => (self.nulls(n), errors),
        }
    }

    fn nulls(&self, n: usize) -> Vec<ArrayRef> {
        self.fields
            .iter()
            .map(|f| arrow::array::new_null_array(f.data_type(), n))
            .collect()
    }

    /// KAFKA format: a single key column in Kafka's serializer bytes.
    fn decode_serialized(&mut self, keys: &[Option<&Bytes>]) -> (Vec<ArrayRef>, KeyErrors) {
        if self.fields.len() != 1 {
            return (self.nulls(keys.len()), Vec::new());
        }
        let items: Vec<Option<&[u8]>> = keys.iter().map(|k| k.map(|k| k.as_ref())).collect();
        let (column, errors) = kafka_primitive::decode(&items, self.fields[0].data_type(), "key");
        (vec![column], errors)
    }

    /// KAFKA_TEXT format: the UTF-8 text of a single key column, cast to its type.
    fn decode_text(&mut self, keys: &[Option<&Bytes>]) -> (Vec<ArrayRef>, KeyErrors) {
        let mut errors = Vec::new();
        if self.fields.len() != 1 {
            return (self.nulls(keys.len()), errors);
        }
        let mut b = StringBuilder::with_capacity(keys.len(), keys.len() * 16);
        for (row, k) in keys.iter().enumerate() {
            match k.map(|k| std::str::from_utf8(k)) {
                Some(Ok(s)) => b.append_value(s),
                Some(Err(_)) => {
                    errors.push((row, "the record key is not valid UTF-8".to_string()));
                    b.append_null();
                }
                None => b.append_null(),
            }
        }
        let text: ArrayRef = Arc::new(b.finish());
        let target = self.fields[0].data_type();
        if target == &DataType::Utf8 {
            return (vec![text], errors);
        }
        let opts = CastOptions {
            safe: true,
            ..Default::default()
        };
        let cast = cast_with_options(&text, target, &opts)
            .unwrap_or_else(|_| arrow::array::new_null_array(target, keys.len()));
        // A key that is there but does not parse as the column's type.
        for row in 0..keys.len() {
            if cast.is_null(row) && !text.is_null(row) {
                let value = text
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .map(|t| t.value(row).chars().take(64).collect::<String>())
                    .unwrap_or_default();
                errors.push((
                    row,
                    format!(
                        "the record key '{value}' is not a valid {}",
                        crate::sql::types::sql_type_name(target)
                    ),
                ));
            }
        }
        // The decoder matches errors to rows in row order.
        errors.sort_by_key(|(row, _)| *row);
        (vec![cast], errors)
    }

    fn decode_json(&mut self, keys: &[Option<&Bytes>]) -> (Vec<ArrayRef>, KeyErrors) {
        let n = keys.len();
        let Some(json) = self.json.as_mut() else {
            return (self.nulls(n), Vec::new());
        };
        // One key column: the key is a bare JSON scalar; wrap it as an object so
        // arrow-json can decode it. Several: the key is already an object.
        let single = self.fields.len() == 1;
        let name = self.fields[0].name().clone();
        let wrap = |k: &[u8]| -> Vec<u8> {
            if single {
                let mut v = Vec::with_capacity(k.len() + name.len() + 8);
                v.extend_from_slice(b"{");
                v.extend_from_slice(serde_json::to_string(&name).unwrap_or_default().as_bytes());
                v.extend_from_slice(b":");
                v.extend_from_slice(k);
                v.extend_from_slice(b"}");
                v
            } else {
                k.to_vec()
            }
        };
        let empty = b"{}".to_vec();
        let mut all = Vec::with_capacity(n);
        for k in keys {
            all.push(match k {
                Some(k) => wrap(k),
                None => empty.clone(),
            });
        }
        if let Ok(batch) = json.decode_all(all.iter().map(|v| v.as_slice())) {
            return (batch.columns().to_vec(), Vec::new());
        }
        let mut errors = Vec::new();
        let mut rows: Vec<RecordBatch> = Vec::with_capacity(n);
        for (row, v) in all.iter().enumerate() {
            let decoded = match json.decode_one(v) {
                Ok(r) => Ok(r),
                Err(e) => {
                    errors.push((row, format!("the record key is not valid JSON: {e}")));
                    json.decode_one(&empty)
                }
            };
            match decoded {
                Ok(r) => rows.push(r),
                Err(_) => {
                    return (
                        self.nulls(n),
                        (0..n).map(|r| (r, "undecodable key".into())).collect(),
                    )
                }
            }
        }
        match arrow::compute::concat_batches(
            &rows
                .first()
                .map(|r| r.schema())
                .unwrap_or_else(|| Arc::new(Schema::empty())),
            &rows,
        ) {
            Ok(b) if b.num_rows() == n => (b.columns().to_vec(), errors),
            _ => (
                self.nulls(n),
                (0..n).map(|r| (r, "undecodable key".into())).collect(),
            ),
        }
    }
}

/// Records (by index) whose key could not be read, with the reason.
pub type KeyErrors = Vec<(usize, String)>;

/// Key columns → record key bytes.
pub fn encode_keys(
    format: KeyFormat,
    columns: &[ArrayRef],
    names: &[String],
    n: usize,
    delimiter: u8,
    ksqldb_json: bool,
) -> Vec<Option<Bytes>> {
    match format {
        KeyFormat::None => vec![None; n],
        _ if columns.is_empty() => vec![None; n],
        KeyFormat::Kafka if columns.len() == 1 => kafka_primitive::encode(columns[0].as_ref()),
        KeyFormat::KafkaText if columns.len() == 1 => kafka_primitive::text(columns[0].as_ref()),
        // Several key columns, or JSON: a JSON scalar for one column, an object otherwise.
        _ => {
            let fields: Vec<Field> = names
                .iter()
                .zip(columns)
                .map(|(name, c)| Field::new(name, c.data_type().clone(), true))
                .collect();
            let Ok(batch) = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.to_vec())
            else {
                return vec![None; n];
            };
            if format == KeyFormat::Delimited {
                return super::encode::delimited_lines(&batch, delimiter)
                    .map(|lines| {
                        lines
                            .into_iter()
                            .enumerate()
                            // A one-column key that is NULL is no key at all.
                            .map(|(i, l)| {
                                (columns.len() > 1 || !columns[0].is_null(i))
                                    .then(|| Bytes::from(l))
                            })
                            .collect()
                    })
                    .unwrap_or_else(|_| vec![None; n]);
            }
            if columns.len() == 1 {
                return super::encode::json_scalars(&batch, ksqldb_json)
                    .unwrap_or_else(|_| vec![None; n]);
            }
            super::encode::json_lines_as(&batch, ksqldb_json)
                .unwrap_or_default()
                .into_iter()
                .map(|line| Some(Bytes::from(line)))
                .collect()
        }
    }
}

/// The key columns, every one nullable (a missing key is NULL in each).
fn nullable_schema(fields: &[Field]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|f| f.clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}
