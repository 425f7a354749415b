//! JSON values → Arrow, with a fast path for clean batches and a per-record
//! fallback that isolates bad records.

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::reader::{Decoder, ReaderBuilder};
use arrow::record_batch::RecordBatch;

/// Rows one decode call may hold; callers decode at most one poll's worth.
const MAX_ROWS: usize = 1 << 20;

pub struct JsonValueDecoder {
    schema: SchemaRef,
    decoder: Decoder,
    coerce: bool,
    /// `wrap_single_value=false`: each value is its one column's bare JSON value,
    /// fed to arrow-json inside this object opening (`{"col":`).
    unwrapped: Option<Vec<u8>>,
    fold: Option<CaseFold>,
    /// The schema arrow-json decodes: `schema`, plus the fold's upper-case twins.
    decoded: SchemaRef,
}

/// Matches JSON fields to columns case-insensitively, as ksqlDB does, without
/// slowing the common case. arrow-json matches names exactly; a row left with
/// a NULL in a folded column whose text names the column in another case is
/// rewritten (names folded) and decoded again. Once a batch has many such rows
/// (a topic written by ksqlDB, whose names are upper case), the decoder also
/// asks arrow-json for each column's upper-case spelling and takes that where
/// the exact one has no value, so such topics skip the rewrite too. Asking for
/// the twins always would cost exact-case topics about 13 % of decode time.
struct CaseFold {
    /// Positions of the folded columns in the schema.
    columns: Vec<usize>,
    names: Vec<String>,
    /// (column, position of its upper-case twin in `with_twins`).
    upper: Vec<(usize, usize)>,
    /// The schema with the upper-case twins last.
    with_twins: SchemaRef,
    twins_on: bool,
    /// Rows that went through the rewrite (to see which path decodes a topic).
    rewritten: u64,
    /// `(?i)"(name|…)"\s*:`, a field named like a folded column in any case.
    field: regex::bytes::Regex,
}

impl CaseFold {
    fn new(schema: &SchemaRef, columns: Vec<usize>) -> Option<CaseFold> {
        let names: Vec<String> = columns
            .iter()
            .map(|&c| schema.field(c).name().clone())
            .collect();
        // A name with no letters has no other case.
        if !names.iter().any(|n| n.chars().any(char::is_alphabetic)) {
            return None;
        }
        let mut fields: Vec<arrow::datatypes::FieldRef> = schema.fields().iter().cloned().collect();
        let mut upper = Vec::new();
        for &c in &columns {
            let f = schema.field(c);
            let name = f.name().to_uppercase();
            if fields.iter().all(|x| *x.name() != name) {
                upper.push((c, fields.len()));
                fields.push(std::sync::Arc::new(f.clone().with_name(name)));
            }
        }
        let with_twins = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
        let alternatives: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
        let field =
            regex::bytes::Regex::new(&format!(r#"(?i)"({})"\s*:"#, alternatives.join("|"))).ok()?;
        Some(CaseFold {
            columns,
            names,
            upper,
            with_twins,
            twins_on: false,
            rewritten: 0,
            field,
        })
    }

    /// The batch in the relation's schema, each column taking its upper-case
    /// twin's value where it has none of its own.
    fn merge_upper(
        &self,
        schema: &SchemaRef,
        batch: RecordBatch,
    ) -> Result<RecordBatch, ArrowError> {
        if batch.num_columns() == schema.fields().len() {
            return Ok(batch);
        }
        let mut columns: Vec<arrow::array::ArrayRef> =
            batch.columns()[..schema.fields().len()].to_vec();
        for &(c, twin) in &self.upper {
            let twin = batch.column(twin);
            if twin.null_count() == twin.len() || columns[c].null_count() == 0 {
                continue;
            }
            let own = arrow::compute::is_not_null(&columns[c])?;
            columns[c] = arrow::compute::kernels::zip::zip(&own, &columns[c], twin)?;
        }
        RecordBatch::try_new(schema.clone(), columns)
    }

    /// Whether the value has a field that is a folded column's name in another case.
    fn has_other_case(&self, value: &[u8]) -> bool {
        self.field
            .captures_iter(value)
            .any(|c| !self.names.iter().any(|n| n.as_bytes() == &c[1]))
    }

    /// The value with its fields renamed to the columns they match; a field
    /// named exactly like a column keeps it.
    fn rewrite(&self, value: &[u8]) -> Option<Vec<u8>> {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(value).ok()?;
        let mut out = serde_json::Map::with_capacity(object.len());
        let mut renamed = Vec::new();
        for (k, v) in object {
            if self.names.contains(&k) {
                out.insert(k, v);
            } else {
                let lower = k.to_lowercase();
                match self.names.iter().find(|n| n.to_lowercase() == lower) {
                    Some(n) => renamed.push((n.clone(), v)),
                    None => {
                        out.insert(k, v);
                    }
                }
            }
        }
        for (n, v) in renamed {
            let slot = out.entry(n).or_insert(serde_json::Value::Null);
            if slot.is_null() {
                *slot = v;
            }
        }
        serde_json::to_vec(&out).ok()
    }
}

impl JsonValueDecoder {
    pub fn new(schema: SchemaRef) -> Result<Self, ArrowError> {
        Self::with_coercion(schema, false)
    }

    /// `coerce`: numbers and booleans decode into text columns as their JSON
    /// text (so integers can be checked for lossless conversion afterwards).
    pub fn with_coercion(schema: SchemaRef, coerce: bool) -> Result<Self, ArrowError> {
        let decoder = Self::build(&schema, coerce)?;
        let schema_copy = schema.clone();
        Ok(JsonValueDecoder {
            schema,
            decoder,
            coerce,
            unwrapped: None,
            fold: None,
            decoded: schema_copy,
        })
    }

    /// Fields match these columns (positions in the schema) in any case.
    pub fn fold_case(mut self, columns: Vec<usize>) -> Self {
        self.fold = CaseFold::new(&self.schema, columns);
        self
    }

    /// From the next batch on, arrow-json also decodes the upper-case twins.
    fn ask_for_twins(&mut self) {
        let Some(fold) = self.fold.as_mut() else {
            return;
        };
        if fold.twins_on {
            return;
        }
        fold.twins_on = true;
        let with_twins = fold.with_twins.clone();
        if let Ok(d) = Self::build(&with_twins, self.coerce) {
            self.decoder = d;
            self.decoded = with_twins;
        }
    }

    /// Values are the bare JSON value of the schema's one column.
    pub fn unwrapped(mut self) -> Self {
        if let Some(f) = self.schema.fields().first() {
            let name = serde_json::to_string(f.name()).unwrap_or_default();
            self.unwrapped = Some(format!("{{{name}:").into_bytes());
        }
        self
    }

    fn build(schema: &SchemaRef, coerce: bool) -> Result<Decoder, ArrowError> {
        // Unknown fields are ignored (producers add fields over time); a value of the
        // wrong type is an error that marks the record bad.
        ReaderBuilder::new(schema.clone())
            .with_strict_mode(false)
            .with_coerce_primitive(coerce)
            .with_batch_size(MAX_ROWS)
            .build_decoder()
    }

    /// Decodes every value into one batch; on any error returns the error and the
    /// decoder is reset.
    pub fn decode_all<'a>(
        &mut self,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<RecordBatch, ArrowError> {
        if self.fold.is_none() || self.unwrapped.is_some() {
            return self.decode_exact(values);
        }
        let values: Vec<&[u8]> = values.collect();
        let batch = self.decode_folded(values.iter().copied())?;
        self.fold_fields(batch, &values)
    }

    fn decode_folded<'a>(
        &mut self,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<RecordBatch, ArrowError> {
        let batch = self.decode_exact(values)?;
        match &self.fold {
            Some(fold) => fold.merge_upper(&self.schema, batch),
            None => Ok(batch),
        }
    }

    /// Re-decodes the rows whose fields name a column in another case.
    fn fold_fields(
        &mut self,
        batch: RecordBatch,
        values: &[&[u8]],
    ) -> Result<RecordBatch, ArrowError> {
        let Some(fold) = &self.fold else {
            return Ok(batch);
        };
        let with_nulls: Vec<&arrow::array::ArrayRef> = fold
            .columns
            .iter()
            .map(|&c| batch.column(c))
            .filter(|a| a.null_count() > 0)
            .collect();
        if with_nulls.is_empty() {
            return Ok(batch);
        }
        let mut fixes: Vec<(usize, Vec<u8>)> = Vec::new();
        for (row, value) in values.iter().enumerate() {
            if with_nulls.iter().any(|a| a.is_null(row)) && fold.has_other_case(value) {
                if let Some(v) = fold.rewrite(value) {
                    fixes.push((row, v));
                }
            }
        }
        if fixes.is_empty() {
            return Ok(batch);
        }
        let fixed = self.decode_folded(fixes.iter().map(|(_, v)| v.as_slice()))?;
        if let Some(fold) = self.fold.as_mut() {
            fold.rewritten += fixes.len() as u64;
        }
        // Many rows in upper case, not a stray one: the topic is written so.
        if fixes.len() >= 16 && fixes.len() * 8 >= batch.num_rows() {
            self.ask_for_twins();
        }
        let mut rows: Vec<(usize, usize)> = (0..batch.num_rows()).map(|r| (0, r)).collect();
        for (i, (row, _)) in fixes.iter().enumerate() {
            rows[*row] = (1, i);
        }
        arrow::compute::interleave_record_batch(&[&batch, &fixed], &rows)
    }

    fn decode_exact<'a>(
        &mut self,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<RecordBatch, ArrowError> {
        let result = (|| {
            let mut count = 0usize;
            for v in values {
                self.feed(v)?;
                count += 1;
            }
            let batch = self.decoder.flush()?;
            let batch = batch.unwrap_or_else(|| RecordBatch::new_empty(self.decoded.clone()));
            if batch.num_rows() != count {
                return Err(ArrowError::JsonError(format!(
                    "expected {count} JSON values, decoded {}",
                    batch.num_rows()
                )));
            }
            Ok(batch)
        })();
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// Decodes one value on its own (the slow path used to find bad records).
    pub fn decode_one(&mut self, value: &[u8]) -> Result<RecordBatch, ArrowError> {
        self.decode_all(std::iter::once(value))
    }

    fn feed(&mut self, value: &[u8]) -> Result<(), ArrowError> {
        let trimmed = value.trim_ascii();
        if let Some(open) = self.unwrapped.clone() {
            if trimmed.is_empty() {
                return Err(ArrowError::JsonError("empty JSON value".into()));
            }
            self.push(&open)?;
            self.push(trimmed)?;
            self.push(b"}")?;
        } else {
            if trimmed.is_empty() || trimmed[0] != b'{' {
                // arrow-json would accept a bare scalar as an empty row; a record
                // value must be an object.
                return Err(ArrowError::JsonError("value is not a JSON object".into()));
            }
            self.push(trimmed)?;
        }
        // A newline ends the value so a truncated object cannot merge with the next.
        self.decoder.decode(b"\n")?;
        if self.decoder.has_partial_record() {
            return Err(ArrowError::JsonError("incomplete JSON object".into()));
        }
        Ok(())
    }

    fn push(&mut self, mut rest: &[u8]) -> Result<(), ArrowError> {
        while !rest.is_empty() {
            let n = self.decoder.decode(rest)?;
            if n == 0 {
                return Err(ArrowError::JsonError("decoder made no progress".into()));
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    fn reset(&mut self) {
        if let Ok(d) = Self::build(&self.decoded, self.coerce) {
            self.decoder = d;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn rows_rewritten(d: &JsonValueDecoder) -> u64 {
        d.fold.as_ref().map_or(0, |f| f.rewritten)
    }

    #[test]
    fn upper_case_topics_switch_to_twins_and_stop_rewriting() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut d = JsonValueDecoder::new(schema).unwrap().fold_case(vec![0, 1]);
        let upper: Vec<String> = (0..20)
            .map(|i| format!(r#"{{"ID": {i}, "NAME": "n{i}"}}"#))
            .collect();
        let values = || upper.iter().map(|v| v.as_bytes());
        let first = d.decode_all(values()).unwrap();
        assert_eq!(rows_rewritten(&d), 20, "the first batch is rewritten");
        let second = d.decode_all(values()).unwrap();
        assert_eq!(
            rows_rewritten(&d),
            20,
            "the second is read through the twins"
        );
        assert_eq!(first, second);
        assert_eq!(second.column(0).as_primitive::<Int64Type>().value(19), 19);
        // Exact names still decode, and other cases still fold, with twins on.
        let mixed = [r#"{"id": 1, "Name": "a"}"#, r#"{"id": null, "ID": 2}"#];
        let b = d.decode_all(mixed.iter().map(|v| v.as_bytes())).unwrap();
        let ids = b.column(0).as_primitive::<Int64Type>();
        assert_eq!((ids.value(0), ids.value(1)), (1, 2));
        assert_eq!(b.column(1).as_string::<i32>().value(0), "a");
        assert!(b.column(1).is_null(1));
    }

    #[test]
    fn a_stray_upper_case_row_does_not_switch() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let mut d = JsonValueDecoder::new(schema).unwrap().fold_case(vec![0]);
        let b = d.decode_all([&br#"{"V": 1}"#[..]].into_iter()).unwrap();
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 1);
        assert!(!d.fold.as_ref().unwrap().twins_on);
        assert_eq!(d.decoded.fields().len(), 1);
    }
}
