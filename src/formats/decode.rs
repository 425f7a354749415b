//! Log records → [`Chunk`]s in the relation's schema.

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int32Array, Int64Array, Int8Array,
};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{concat_batches, interleave_record_batch, is_not_null};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::delimited::DelimitedValueDecoder;
use super::json::JsonValueDecoder;
use super::key::KeyDecoder;
use super::rowtime;
use super::strict_int;
use crate::catalog::{KeyFormat, Relation, ValueFormat};
use crate::chunk::{Chunk, Op, Origin};
use crate::connectors::LogRecord;
use crate::error::Result;

/// A record that could not be decoded; it is skipped, counted and optionally sent
/// to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub reason: String,
}

pub struct Decoded {
    pub chunk: Chunk,
    pub bad: Vec<BadRecord>,
    /// Largest event time of the good rows, per partition (for watermarks).
    pub max_time: Vec<(i32, i64)>,
}

enum ValueDecoder {
    // Boxed: the JSON decoder is large and there is one per relation reader.
    Json(Box<JsonValueDecoder>),
    Delimited(DelimitedValueDecoder),
    Kafka(SchemaRef),
}

impl ValueDecoder {
    fn decode_all<'a>(
        &mut self,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> std::result::Result<RecordBatch, ArrowError> {
        match self {
            ValueDecoder::Json(d) => d.decode_all(values),
            ValueDecoder::Delimited(d) => d.decode_all(values),
            ValueDecoder::Kafka(schema) => kafka_value(schema, values.map(Some).collect()),
        }
    }

    fn decode_one(&mut self, value: &[u8]) -> std::result::Result<RecordBatch, ArrowError> {
        match self {
            ValueDecoder::Json(d) => d.decode_one(value),
            ValueDecoder::Delimited(d) => d.decode_one(value),
            ValueDecoder::Kafka(schema) => kafka_value(schema, vec![Some(value)]),
        }
    }
}

/// KAFKA-format values: one column in Kafka's serializer bytes; any unreadable
/// value fails the call so the caller isolates it record by record.
fn kafka_value(
    schema: &SchemaRef,
    items: Vec<Option<&[u8]>>,
) -> std::result::Result<RecordBatch, ArrowError> {
    let t = schema.field(0).data_type();
    let (column, errors) = super::kafka_primitive::decode(&items, t, "value");
    if let Some((_, e)) = errors.into_iter().next() {
        return Err(ArrowError::ParseError(e));
    }
    RecordBatch::try_new(schema.clone(), vec![column])
}

/// Decodes the records of one relation's topic.
pub struct RecordDecoder {
    /// The relation's name, for the origin of each row.
    source: Arc<str>,
    schema: SchemaRef,
    /// `schema` with every column nullable: rows are checked against NOT NULL
    /// before the batch takes the real schema.
    nullable_schema: SchemaRef,
    is_table: bool,
    value: ValueDecoder,
    /// The value columns as decoded (integers, and ksqlDB's BYTES and TIME, as
    /// text for JSON, see `text_columns`).
    decoded_schema: SchemaRef,
    /// The value columns with their real types.
    value_schema: SchemaRef,
    /// JSON value columns decoded as text and converted here: integers, so that
    /// a fraction or an out-of-range number is a bad record, not truncated; and
    /// ksqlDB's base64 BYTES and millisecond TIME, which arrow-json reads otherwise.
    text_columns: Vec<usize>,
    /// For each relation column, its position in the decoded value batch.
    value_pos: Vec<Option<usize>>,
    key: KeyDecoder,
    key_cols: Vec<usize>,
    timestamp_col: Option<usize>,
    timestamp_format: Option<String>,
    processing_time: bool,
    not_null: Vec<usize>,
}

impl RecordDecoder {
    pub fn new(relation: &Relation) -> Result<Self> {
        let schema = relation.schema();
        let key_cols = relation.key_indices();
        // JSON objects may repeat the key columns (Sluice's own output did, and
        // `key_in_value` does), so every column is looked for; the other formats
        // hold exactly the value columns, in order.
        let unwrapped = !relation.format.wrap_single_value;
        let value_cols: Vec<usize> = match relation.format.value_format {
            ValueFormat::Json if !unwrapped => (0..schema.fields().len()).collect(),
            _ => relation.value_indices(),
        };
        let value_schema: SchemaRef = Arc::new(Schema::new(
            value_cols
                .iter()
                .map(|&i| schema.field(i).as_ref().clone().with_nullable(true))
                .collect::<Vec<Field>>(),
        ));
        let mut value_pos = vec![None; schema.fields().len()];
        for (pos, &i) in value_cols.iter().enumerate() {
            value_pos[i] = Some(pos);
        }
        let json = relation.format.value_format == ValueFormat::Json;
        let ksqldb_json = relation.format.ksqldb_json;
        let text_columns: Vec<usize> = if json {
            (0..value_schema.fields().len())
                .filter(|&i| {
                    let t = value_schema.field(i).data_type();
                    strict_int::is_signed_int(t)
                        || (ksqldb_json && super::ksql_json::read_as_text(t))
                })
                .collect()
        } else {
            Vec::new()
        };
        let decoded_schema: SchemaRef = Arc::new(Schema::new(
            value_schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if text_columns.contains(&i) {
                        f.as_ref().clone().with_data_type(DataType::Utf8)
                    } else {
                        f.as_ref().clone()
                    }
                })
                .collect::<Vec<Field>>(),
        ));
        let value = match relation.format.value_format {
            ValueFormat::Json => {
                let d = JsonValueDecoder::with_coercion(
                    decoded_schema.clone(),
                    !text_columns.is_empty(),
                )?;
                // Key columns come from the record key; looking for them in
                // other cases would send every keyed row down the slow path.
                let keyless = relation.format.key_format == KeyFormat::None;
                let fold: Vec<usize> = value_cols
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| keyless || !key_cols.contains(c))
                    .map(|(pos, _)| pos)
                    .collect();
                ValueDecoder::Json(Box::new(if unwrapped {
                    d.unwrapped()
                } else {
                    d.fold_case(fold)
                }))
            }
            ValueFormat::Kafka => ValueDecoder::Kafka(value_schema.clone()),
            ValueFormat::Delimited => ValueDecoder::Delimited(DelimitedValueDecoder::new(
                value_schema.clone(),
                relation.format.delimiter as u8,
            )),
        };
        let nullable_schema: SchemaRef = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<Field>>(),
        ));
        let key_fields = key_cols
            .iter()
            .map(|&i| schema.field(i).as_ref().clone())
            .collect();
        let timestamp_col = match &relation.format.timestamp {
            Some(name) => schema.index_of(name).ok(),
            None => None,
        };
        let not_null = relation
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.not_null || (relation.is_table() && c.key))
            .map(|(i, _)| i)
            .collect();
        Ok(RecordDecoder {
            source: Arc::from(relation.name.as_str()),
            schema: schema.clone(),
            nullable_schema,
            decoded_schema,
            text_columns,
            is_table: relation.is_table(),
            value,
            value_schema,
            value_pos,
            key: KeyDecoder::new(
                relation.format.key_format,
                key_fields,
                relation.format.key_delimiter as u8,
            ),
            key_cols,
            timestamp_col,
            timestamp_format: relation.format.timestamp_format.clone(),
            processing_time: relation.format.processing_time,
            not_null,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn decode(&mut self, records: &[LogRecord]) -> Result<Decoded> {
        let mut bad = Vec::new();
        // 1. Values, fast path then per-record fallback.
        let with_value: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].value.is_some())
            .collect();
        let values = |idx: &[usize]| -> Vec<&[u8]> {
            idx.iter()
                .map(|&i| records[i].value.as_deref().unwrap_or_default())
                .collect()
        };
        let (value_batch, good) = match self.value.decode_all(values(&with_value).into_iter()) {
            Ok(b) => (b, with_value),
            Err(_) => {
                let mut good = Vec::with_capacity(with_value.len());
                let mut batches = Vec::with_capacity(with_value.len());
                for &i in &with_value {
                    match self
                        .value
                        .decode_one(records[i].value.as_deref().unwrap_or_default())
                    {
                        Ok(b) => {
                            good.push(i);
                            batches.push(b);
                        }
                        Err(e) => bad.push(bad_record(&records[i], e.to_string())),
                    }
                }
                (concat_batches(&self.decoded_schema, &batches)?, good)
            }
        };
        let (value_batch, good) =
            self.convert_text_columns(value_batch, good, records, &mut bad)?;

        // 2. Rows in record order: decoded values, and for tables, tombstones as deletes.
        let null_row = RecordBatch::try_new(
            self.value_schema.clone(),
            self.value_schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), 1))
                .collect(),
        )?;
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(records.len());
        let mut src: Vec<usize> = Vec::with_capacity(records.len());
        let mut ops: Vec<i8> = Vec::new();
        let mut next_good = 0;
        for (i, r) in records.iter().enumerate() {
            if r.value.is_some() {
                if good.get(next_good) == Some(&i) {
                    order.push((0, next_good));
                    next_good += 1;
                } else {
                    continue; // bad record, already reported
                }
                ops.push(Op::Upsert as i8);
            } else if self.is_table {
                order.push((1, 0));
                ops.push(Op::Delete as i8);
            } else {
                continue; // a null value on a stream carries no row
            }
            src.push(i);
        }
        let values = interleave_record_batch(&[&value_batch, &null_row], &order)?;

        // 3. Columns in the relation's order; key columns from the record key when present.
        let keys: Vec<Option<&Bytes>> = src.iter().map(|&i| records[i].key.as_ref()).collect();
        let (key_arrays, key_errors) = if self.key.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.key.decode(&keys)
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            let from_value = self.value_pos[i].map(|p| values.column(p).clone());
            let from_key = self
                .key_cols
                .iter()
                .position(|&k| k == i)
                .and_then(|k| key_arrays.get(k).cloned());
            let col = match (from_key, from_value) {
                (Some(k), Some(v)) => {
                    let mask: BooleanArray = is_not_null(&k)?;
                    zip(&mask, &k, &v)?
                }
                (Some(k), None) => k,
                (None, Some(v)) => v,
                (None, None) => new_null_array(field.data_type(), src.len()),
            };
            columns.push(col);
        }
        let batch = RecordBatch::try_new(self.nullable_schema.clone(), columns)?;

        // 4. Event time.
        let rowtime = match self.timestamp_col {
            _ if self.processing_time => {
                let now = chrono::Utc::now().timestamp_millis();
                Int64Array::from_value(now, src.len())
            }
            Some(c) => rowtime::from_column(batch.column(c), self.timestamp_format.as_deref()),
            None => Int64Array::from_iter_values(src.iter().map(|&i| records[i].timestamp)),
        };

        // 5. Rows missing a required value (NOT NULL, table key, event time) are bad.
        let mut keep: Vec<bool> = vec![true; batch.num_rows()];
        let mut max_time: Vec<(i32, i64)> = Vec::new();
        let mut key_errors = key_errors.into_iter().peekable();
        for (row, keep_row) in keep.iter_mut().enumerate() {
            let deleting = ops.get(row) == Some(&(Op::Delete as i8));
            let key_error = match key_errors.peek() {
                Some((r, _)) if *r == row => key_errors.next().map(|(_, e)| e),
                _ => None,
            };
            let reason = if key_error.is_some() {
                key_error
            } else if rowtime.is_null(row) && !deleting {
                Some(match &self.timestamp_col {
                    Some(c) => format!(
                        "timestamp column '{}' is missing or unparseable",
                        self.schema.field(*c).name()
                    ),
                    None => "record has no timestamp".to_string(),
                })
            } else {
                self.not_null
                    .iter()
                    .find(|&&c| {
                        (!deleting || self.key_cols.contains(&c)) && batch.column(c).is_null(row)
                    })
                    .map(|&c| {
                        format!(
                            "column '{}' is missing or null",
                            self.schema.field(c).name()
                        )
                    })
            };
            if let Some(reason) = reason {
                *keep_row = false;
                bad.push(bad_record(&records[src[row]], reason));
            } else if !rowtime.is_null(row) {
                let partition = records[src[row]].partition;
                let t = rowtime.value(row);
                match max_time.iter_mut().find(|(p, _)| *p == partition) {
                    Some((_, m)) => *m = (*m).max(t),
                    None => max_time.push((partition, t)),
                }
            }
        }
        let ops = self.is_table.then(|| Int8Array::from(ops));
        let origin = Origin {
            source: self.source.clone(),
            partition: Int32Array::from_iter_values(src.iter().map(|&i| records[i].partition)),
            offset: Int64Array::from_iter_values(src.iter().map(|&i| records[i].offset)),
        };
        let mut chunk = Chunk::new(batch, rowtime, ops).with_origin(Some(origin));
        if keep.iter().any(|k| !k) {
            chunk = chunk.filter(&BooleanArray::from(keep))?;
        }
        // Every NOT NULL column is checked above (a table's value columns are
        // nullable for its deletes), so the real schema holds.
        let batch = RecordBatch::try_new(self.schema.clone(), chunk.batch.columns().to_vec())?;
        let chunk = chunk.with_batch(batch);
        Ok(Decoded {
            chunk,
            bad,
            max_time,
        })
    }
}

impl RecordDecoder {
    /// Converts the integer columns decoded as text; a value with a fraction or
    /// out of the column's range makes its record bad.
    fn convert_text_columns(
        &self,
        batch: RecordBatch,
        good: Vec<usize>,
        records: &[LogRecord],
        bad: &mut Vec<BadRecord>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        if self.text_columns.is_empty() {
            return Ok((batch, good));
        }
        let mut columns = batch.columns().to_vec();
        let mut failed: Vec<(usize, String)> = Vec::new();
        for &c in &self.text_columns {
            let field = self.value_schema.field(c);
            let (converted, errors) = if strict_int::is_signed_int(field.data_type()) {
                strict_int::convert(&columns[c], field.data_type())?
            } else {
                super::ksql_json::from_text(&columns[c], field.data_type())?
            };
            columns[c] = converted;
            failed.extend(
                errors
                    .into_iter()
                    .map(|(row, e)| (row, format!("column '{}': {e}", field.name()))),
            );
        }
        let batch = RecordBatch::try_new(self.value_schema.clone(), columns)?;
        if failed.is_empty() {
            return Ok((batch, good));
        }
        failed.sort_by_key(|(row, _)| *row);
        failed.dedup_by_key(|(row, _)| *row);
        let mut keep = vec![true; batch.num_rows()];
        for (row, reason) in failed {
            keep[row] = false;
            bad.push(bad_record(&records[good[row]], reason));
        }
        let batch = arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep.clone()))?;
        let good = good
            .into_iter()
            .zip(keep)
            .filter_map(|(i, k)| k.then_some(i))
            .collect();
        Ok((batch, good))
    }
}

fn bad_record(r: &LogRecord, reason: String) -> BadRecord {
    BadRecord {
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.clone(),
        value: r.value.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnMeta, FormatMeta, KeyFormat};
    use crate::sql::RelationKind;
    use arrow::array::{Int32Array, StringArray};

    /// A JSON stream like `relation`'s with its columns changed.
    fn with_columns(change: impl FnOnce(&mut Vec<ColumnMeta>)) -> Relation {
        let rel = relation(RelationKind::Stream, ValueFormat::Json, None);
        let mut columns = rel.columns.clone();
        change(&mut columns);
        Relation::new(
            rel.name.clone(),
            rel.kind,
            columns,
            rel.topic.clone(),
            1,
            rel.format.clone(),
            String::new(),
            None,
            vec![],
        )
        .unwrap()
    }

    fn relation(
        kind: RelationKind,
        value_format: ValueFormat,
        timestamp: Option<&str>,
    ) -> Relation {
        let col = |name: &str, t: &str, key: bool| ColumnMeta {
            name: name.into(),
            sql_type: t.into(),
            key,
            not_null: false,
        };
        Relation::new(
            "r".into(),
            kind,
            vec![
                col("id", "VARCHAR", true),
                col("status", "INT", false),
                col("ts", "BIGINT", false),
            ],
            "r".into(),
            1,
            FormatMeta {
                value_format,
                key_format: KeyFormat::Kafka,
                timestamp: timestamp.map(str::to_string),
                timestamp_format: None,
                delimiter: ',',
                key_delimiter: ',',
                wrap_single_value: true,
                key_in_value: Some(false),
                ksqldb_json: true,
                watermark_delay_ms: 0,
                idle_timeout_ms: None,
                processing_time: false,
            },
            String::new(),
            None,
            vec![],
        )
        .unwrap()
    }

    fn rec(offset: i64, key: Option<&str>, value: Option<&str>) -> LogRecord {
        LogRecord {
            partition: 0,
            offset,
            timestamp: 1000 + offset,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: value.map(|v| Bytes::from(v.to_string())),
        }
    }

    #[test]
    fn json_with_bad_records_isolated() {
        let mut d = RecordDecoder::new(&relation(
            RelationKind::Stream,
            ValueFormat::Json,
            Some("ts"),
        ))
        .unwrap();
        let out = d
            .decode(&[
                rec(0, Some("a"), Some(r#"{"status": 200, "ts": 5}"#)),
                rec(1, None, Some("not json")),
                rec(2, None, Some(r#"{"id": "b", "status": "oops", "ts": 6}"#)),
                rec(
                    3,
                    None,
                    Some(r#"{"id": "c", "status": 500, "ts": 7, "extra": true}"#),
                ),
                rec(4, None, Some(r#"{"id": "d", "status": 500}"#)),
                rec(5, Some("z"), None),
            ])
            .unwrap();
        let b = &out.chunk.batch;
        assert_eq!(b.num_rows(), 2, "{b:?}");
        let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(ids.value(0), "a", "key comes from the record key");
        assert_eq!(ids.value(1), "c", "key falls back to the value field");
        let status = b.column(1).as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(status.values(), &[200, 500]);
        assert_eq!(out.chunk.rowtime.values(), &[5, 7]);
        let bad: Vec<i64> = out.bad.iter().map(|r| r.offset).collect();
        assert_eq!(bad, vec![1, 2, 4]);
        assert!(
            out.bad[2].reason.contains("timestamp"),
            "{}",
            out.bad[2].reason
        );
    }

    #[test]
    fn event_time_per_partition_and_processing_time() {
        let mut rel = relation(RelationKind::Stream, ValueFormat::Json, Some("ts"));
        let mut d = RecordDecoder::new(&rel).unwrap();
        let mut records = vec![
            rec(0, None, Some(r#"{"status": 1, "ts": 50}"#)),
            rec(1, None, Some(r#"{"status": 1, "ts": 70}"#)),
            rec(2, None, Some(r#"{"status": 1, "ts": 60}"#)),
        ];
        records[1].partition = 1;
        let out = d.decode(&records).unwrap();
        let mut max_time = out.max_time.clone();
        max_time.sort();
        assert_eq!(max_time, vec![(0, 60), (1, 70)]);

        rel.format.timestamp = None;
        rel.format.processing_time = true;
        let mut d = RecordDecoder::new(&rel).unwrap();
        let before = chrono::Utc::now().timestamp_millis();
        let out = d.decode(&records).unwrap();
        let after = chrono::Utc::now().timestamp_millis();
        assert!(out
            .chunk
            .rowtime
            .values()
            .iter()
            .all(|t| (before..=after).contains(t)));
    }

    #[test]
    fn table_tombstones_become_deletes_in_order() {
        let mut d =
            RecordDecoder::new(&relation(RelationKind::Table, ValueFormat::Json, None)).unwrap();
        let out = d
            .decode(&[
                rec(0, Some("a"), Some(r#"{"status": 1}"#)),
                rec(1, Some("a"), None),
                rec(2, None, Some(r#"{"status": 2}"#)),
            ])
            .unwrap();
        assert_eq!(out.chunk.num_rows(), 2);
        assert_eq!(out.chunk.op(0), Op::Upsert);
        assert_eq!(out.chunk.op(1), Op::Delete);
        assert_eq!(out.bad.len(), 1, "a table row without a key is bad");
        assert_eq!(out.chunk.rowtime.values(), &[1000, 1001]);
    }

    #[test]
    fn keys_that_cannot_be_read_make_the_record_bad() {
        // KAFKA_TEXT: keys are text, parsed as the key's type.
        let mut rel = with_columns(|c| c[0].sql_type = "INT".into());
        rel.format.key_format = KeyFormat::KafkaText;
        let mut d = RecordDecoder::new(&rel).unwrap();
        let mut not_utf8 = rec(1, None, Some(r#"{"status": 2}"#));
        not_utf8.key = Some(Bytes::from_static(&[0xff, 0xfe]));
        let out = d
            .decode(&[
                rec(0, Some("7"), Some(r#"{"status": 1}"#)),
                not_utf8,
                rec(2, Some("seven"), Some(r#"{"status": 3}"#)),
                rec(3, None, Some(r#"{"status": 4}"#)),
            ])
            .unwrap();
        let bad: Vec<(i64, String)> = out
            .bad
            .iter()
            .map(|b| (b.offset, b.reason.clone()))
            .collect();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].1.contains("not valid UTF-8"), "{bad:?}");
        assert!(bad[1].1.contains("'seven' is not a valid INT"), "{bad:?}");
        assert_eq!(out.chunk.num_rows(), 2, "a missing key is NULL, not bad");
        let origin = out.chunk.origin.as_ref().expect("rows know their offsets");
        assert_eq!(origin.offset.values(), &[0, 3]);
    }

    #[test]
    fn a_missing_not_null_value_loses_only_its_record() {
        let rel = with_columns(|c| c[1].not_null = true);
        let mut d = RecordDecoder::new(&rel).unwrap();
        let out = d
            .decode(&[
                rec(0, Some("a"), Some(r#"{"status": 1}"#)),
                rec(1, Some("b"), Some(r#"{"ts": 5}"#)),
                rec(2, Some("c"), Some(r#"{"status": 3.5}"#)),
                rec(3, Some("d"), Some(r#"{"status": 4}"#)),
            ])
            .unwrap();
        assert_eq!(out.chunk.num_rows(), 2);
        assert!(!out.chunk.batch.schema().field(1).is_nullable());
        let offsets: Vec<i64> = out.bad.iter().map(|b| b.offset).collect();
        assert_eq!(offsets, vec![2, 1], "lossy number first, then NOT NULL");
    }

    #[test]
    fn delimited_values() {
        let mut d = RecordDecoder::new(&relation(
            RelationKind::Stream,
            ValueFormat::Delimited,
            None,
        ))
        .unwrap();
        let out = d
            .decode(&[
                rec(0, Some("k"), Some("200,17")),
                rec(1, Some("k"), Some("x,y,z")),
            ])
            .unwrap();
        assert_eq!(out.chunk.num_rows(), 1);
        assert_eq!(out.bad.len(), 1);
        let status = out
            .chunk
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        assert_eq!(status.value(0), 200);
    }

    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;

    fn key_bytes(offset: i64, key: Option<&[u8]>, value: Option<&str>) -> LogRecord {
        LogRecord {
            key: key.map(Bytes::copy_from_slice),
            ..rec(offset, None, value)
        }
    }

    #[test]
    fn kafka_keys_are_serializer_bytes() {
        let rel = with_columns(|c| c[0].sql_type = "INT".into());
        let mut d = RecordDecoder::new(&rel).unwrap();
        let out = d
            .decode(&[
                key_bytes(0, Some(&[0, 0, 1, 0]), Some(r#"{"status": 1}"#)),
                key_bytes(1, Some(b"7"), Some(r#"{"status": 2}"#)),
                key_bytes(2, None, Some(r#"{"status": 3}"#)),
            ])
            .unwrap();
        let ids = out.chunk.batch.column(0).as_primitive::<Int32Type>();
        assert_eq!(ids.value(0), 256);
        assert!(ids.is_null(1), "a key absent is NULL");
        assert_eq!(out.bad.len(), 1);
        assert!(out.bad[0].reason.contains("has 1 bytes"), "{:?}", out.bad);
    }

    #[test]
    fn kafka_values_hold_one_column() {
        let mut rel = with_columns(|c| c.truncate(2));
        rel.format.value_format = ValueFormat::Kafka;
        let mut d = RecordDecoder::new(&rel).unwrap();
        let out = d
            .decode(&[
                key_bytes(0, Some(b"a"), Some("\0\0\0\x05")),
                key_bytes(1, Some(b"b"), Some("5")),
                key_bytes(2, Some(b"c"), Some("\0\0\x01\0")),
            ])
            .unwrap();
        let status = out.chunk.batch.column(1).as_primitive::<Int32Type>();
        assert_eq!(status.values(), &[5, 256]);
        assert_eq!(out.bad.len(), 1);
        assert_eq!(out.bad[0].offset, 1);
    }

    #[test]
    fn unwrapped_json_values() {
        let mut rel = with_columns(|c| c.truncate(2));
        rel.format.wrap_single_value = false;
        let mut d = RecordDecoder::new(&rel).unwrap();
        let out = d
            .decode(&[
                rec(0, Some("a"), Some("5")),
                rec(1, Some("b"), Some("null")),
                rec(2, Some("c"), Some(r#""five""#)),
                rec(3, Some("d"), Some(r#"{"status": 1}"#)),
                rec(4, Some("e"), Some(" 7 ")),
            ])
            .unwrap();
        let status = out.chunk.batch.column(1).as_primitive::<Int32Type>();
        assert_eq!(status.len(), 3, "{:?}", out.bad);
        assert_eq!(status.value(0), 5);
        assert!(status.is_null(1));
        assert_eq!(status.value(2), 7);
        let mut bad: Vec<i64> = out.bad.iter().map(|b| b.offset).collect();
        bad.sort();
        assert_eq!(bad, vec![2, 3]);
    }

    #[test]
    fn json_fields_match_columns_in_any_case() {
        let mut d =
            RecordDecoder::new(&relation(RelationKind::Stream, ValueFormat::Json, None)).unwrap();
        let out = d
            .decode(&[
                rec(0, Some("a"), Some(r#"{"STATUS": 1, "TS": 10}"#)),
                rec(1, Some("b"), Some(r#"{"Status": 2, "tS": 20}"#)),
                rec(2, Some("c"), Some(r#"{"status": 3, "STATUS": 9}"#)),
                rec(3, Some("d"), Some(r#"{"status": null, "STATUS": 4}"#)),
                rec(4, Some("e"), Some(r#"{"ts": 50}"#)),
                rec(5, Some("f"), Some(r#"{"STATUS": 6.5}"#)),
            ])
            .unwrap();
        let b = &out.chunk.batch;
        let status = b.column(1).as_primitive::<Int32Type>();
        let ts = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(status.len(), 5, "{:?}", out.bad);
        assert_eq!(
            (0..4).map(|i| status.value(i)).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(status.is_null(4));
        assert_eq!((ts.value(0), ts.value(1)), (10, 20));
        assert!(ts.is_null(2) && ts.is_null(3));
        assert_eq!(
            out.bad.len(),
            1,
            "a fraction is still a bad INT in any case"
        );
        assert_eq!(out.bad[0].offset, 5);
    }
}
