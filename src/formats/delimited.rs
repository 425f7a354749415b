//! Delimited (CSV) values → Arrow via arrow-csv.

use arrow::csv::reader::{Decoder, ReaderBuilder};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// Rows one decode call may hold; callers decode at most one poll's worth.
const MAX_ROWS: usize = 1 << 20;

pub struct DelimitedValueDecoder {
    schema: SchemaRef,
    delimiter: u8,
}

impl DelimitedValueDecoder {
    pub fn new(schema: SchemaRef, delimiter: u8) -> Self {
        DelimitedValueDecoder { schema, delimiter }
    }

    fn decoder(&self) -> Decoder {
        ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_batch_size(MAX_ROWS)
            .build_decoder()
    }

    pub fn decode_all<'a>(
        &mut self,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<RecordBatch, ArrowError> {
        let mut decoder = self.decoder();
        let mut count = 0usize;
        for v in values {
            let line = v.strip_suffix(b"\n").unwrap_or(v);
            if line.contains(&b'\n') {
                return Err(ArrowError::CsvError(
                    "a delimited value must be one line".into(),
                ));
            }
            let mut rest: &[u8] = line;
            while !rest.is_empty() {
                let n = decoder.decode(rest)?;
                if n == 0 {
                    return Err(ArrowError::CsvError("decoder made no progress".into()));
                }
                rest = &rest[n..];
            }
            decoder.decode(b"\n")?;
            count += 1;
        }
        let batch = decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()));
        if batch.num_rows() != count {
            return Err(ArrowError::CsvError(format!(
                "expected {count} delimited rows, decoded {}",
                batch.num_rows()
            )));
        }
        Ok(batch)
    }

    pub fn decode_one(&mut self, value: &[u8]) -> Result<RecordBatch, ArrowError> {
        self.decode_all(std::iter::once(value))
    }
}
