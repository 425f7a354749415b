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
}

impl JsonValueDecoder {
    pub fn new(schema: SchemaRef) -> Result<Self, ArrowError> {
        Self::with_coercion(schema, false)
    }

    /// `coerce`: numbers and booleans decode into text columns as their JSON
    /// text (so integers can be checked for lossless conversion afterwards).
    pub fn with_coercion(schema: SchemaRef, coerce: bool) -> Result<Self, ArrowError> {
        let decoder = Self::build(&schema, coerce)?;
        Ok(JsonValueDecoder {
            schema,
            decoder,
            coerce,
        })
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
        let result = (|| {
            let mut count = 0usize;
            for v in values {
                self.feed(v)?;
                count += 1;
            }
            let batch = self.decoder.flush()?;
            let batch = batch.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()));
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
        if trimmed.is_empty() || trimmed[0] != b'{' {
            // arrow-json would accept a bare scalar as an empty row; a record value
            // must be an object.
            return Err(ArrowError::JsonError("value is not a JSON object".into()));
        }
        let mut rest = trimmed;
        while !rest.is_empty() {
            let n = self.decoder.decode(rest)?;
            if n == 0 {
                return Err(ArrowError::JsonError("decoder made no progress".into()));
            }
            rest = &rest[n..];
        }
        // A newline ends the value so a truncated object cannot merge with the next.
        self.decoder.decode(b"\n")?;
        if self.decoder.has_partial_record() {
            return Err(ArrowError::JsonError("incomplete JSON object".into()));
        }
        Ok(())
    }

    fn reset(&mut self) {
        if let Ok(d) = Self::build(&self.schema, self.coerce) {
            self.decoder = d;
        }
    }
}
