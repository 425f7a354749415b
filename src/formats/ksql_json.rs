//! JSON values as ksqlDB writes them, where that differs from arrow-json's
//! defaults: TIMESTAMP as epoch milliseconds, DATE as days since the epoch,
//! TIME as milliseconds of the day, BYTES as base64, and NaN / ±Infinity as the
//! strings Jackson writes (`"NaN"`, `"Infinity"`, `"-Infinity"`) instead of
//! `null`. Plugged into arrow-json's writer as an [`EncoderFactory`], so every
//! other type keeps arrow-json's own encoding.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray, Time64MicrosecondArray,
};
use arrow::datatypes::{
    DataType, FieldRef, Float32Type, Float64Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimeUnit,
};
use arrow::error::ArrowError;
use arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use base64::Engine;

#[derive(Debug)]
pub(crate) struct KsqlJson;

impl EncoderFactory for KsqlJson {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Float64 => Box::new(Float(array.as_primitive::<Float64Type>())),
            DataType::Float32 => Box::new(Float(array.as_primitive::<Float32Type>())),
            DataType::Timestamp(_, _) => {
                let millis =
                    arrow::compute::cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                let millis = arrow::compute::cast(&millis, &DataType::Int64)?;
                Box::new(Integers::<Int64Type>(
                    millis.as_primitive::<Int64Type>().clone(),
                ))
            }
            DataType::Date32 => {
                let days = arrow::compute::cast(array, &DataType::Int32)?;
                Box::new(Integers::<Int32Type>(
                    days.as_primitive::<Int32Type>().clone(),
                ))
            }
            DataType::Time64(TimeUnit::Microsecond) => {
                let micros = array.as_primitive::<Time64MicrosecondType>();
                let millis: PrimitiveArray<Int64Type> = micros.unary(|us| us.div_euclid(1000));
                Box::new(Integers::<Int64Type>(millis))
            }
            DataType::Binary => Box::new(Base64(array.as_binary::<i32>())),
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, array.nulls().cloned())))
    }
}

struct Float<'a, T: ArrowPrimitiveType>(&'a PrimitiveArray<T>);

impl<T> Encoder for Float<'_, T>
where
    T: ArrowPrimitiveType,
    T::Native: lexical_core::ToLexical + Into<f64>,
{
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.0.value(idx);
        let wide: f64 = v.into();
        if wide.is_nan() {
            out.extend_from_slice(b"\"NaN\"");
        } else if wide == f64::INFINITY {
            out.extend_from_slice(b"\"Infinity\"");
        } else if wide == f64::NEG_INFINITY {
            out.extend_from_slice(b"\"-Infinity\"");
        } else {
            // arrow-json's own formatting of finite floats.
            let mut buf = [0u8; lexical_core::BUFFER_SIZE];
            out.extend_from_slice(lexical_core::write(v, &mut buf));
        }
    }
}

struct Integers<T: ArrowPrimitiveType>(PrimitiveArray<T>);

impl<T> Encoder for Integers<T>
where
    T: ArrowPrimitiveType,
    T::Native: lexical_core::ToLexical,
{
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let mut buf = [0u8; lexical_core::BUFFER_SIZE];
        out.extend_from_slice(lexical_core::write(self.0.value(idx), &mut buf));
    }
}

struct Base64<'a>(&'a arrow::array::BinaryArray);

impl Encoder for Base64<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.push(b'"');
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(self.0.value(idx))
                .as_bytes(),
        );
        out.push(b'"');
    }
}

/// Columns read as JSON text and converted by [`from_text`]: arrow-json would
/// read BYTES as hex and a TIME number as microseconds.
pub(crate) fn read_as_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::Time64(TimeUnit::Microsecond)
    )
}

/// BYTES from base64, TIME from milliseconds of the day (or a time's text);
/// a value that does not read is reported for its row, never guessed.
pub(crate) fn from_text(
    column: &ArrayRef,
    target: &DataType,
) -> Result<(ArrayRef, Vec<(usize, String)>), ArrowError> {
    let text = column.as_string::<i32>();
    let mut errors = Vec::new();
    let array: ArrayRef = match target {
        DataType::Binary => {
            let mut b = arrow::array::BinaryBuilder::with_capacity(text.len(), 0);
            for (row, v) in text.iter().enumerate() {
                match v.map(|v| base64::engine::general_purpose::STANDARD.decode(v)) {
                    Some(Ok(bytes)) => b.append_value(bytes),
                    Some(Err(_)) => {
                        errors.push((row, "BYTES must be base64".to_string()));
                        b.append_null();
                    }
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let as_time = arrow::compute::cast_with_options(
                column,
                target,
                &arrow::compute::CastOptions {
                    safe: true,
                    ..Default::default()
                },
            )?;
            let as_time = as_time.as_primitive::<Time64MicrosecondType>();
            let values: Time64MicrosecondArray = text
                .iter()
                .enumerate()
                .map(|(row, v)| {
                    let v = v?;
                    match v.parse::<i64>() {
                        Ok(ms) if (0..86_400_000).contains(&ms) => Some(ms * 1000),
                        Ok(_) => {
                            errors.push((row, format!("TIME {v} is not a millisecond of a day")));
                            None
                        }
                        Err(_) if as_time.is_valid(row) => Some(as_time.value(row)),
                        Err(_) => {
                            errors.push((row, format!("'{v}' is not a TIME")));
                            None
                        }
                    }
                })
                .collect();
            Arc::new(values)
        }
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "no ksqlDB text form for {other}"
            )))
        }
    };
    Ok((array, errors))
}

#[cfg(test)]
mod tests {
    use arrow::array::{BinaryArray, Date32Array, Float64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::*;

    #[test]
    fn values_as_ksqldb_writes_them() {
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![Some(-1), None])),
            ),
            ("d", Arc::new(Date32Array::from(vec![Some(19000), None]))),
            (
                "t",
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(3_723_004_999),
                    None,
                ])),
            ),
            (
                "b",
                Arc::new(BinaryArray::from(vec![Some(&b"variations"[..]), None])),
            ),
            (
                "x",
                Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(1.5)])),
            ),
            (
                "y",
                Arc::new(Float64Array::from(vec![
                    Some(f64::INFINITY),
                    Some(f64::NEG_INFINITY),
                ])),
            ),
        ];
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch =
            RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect()).unwrap();
        let lines = super::super::encode::json_lines_as(&batch, true).unwrap();
        assert_eq!(
            String::from_utf8(lines[0].clone()).unwrap(),
            r#"{"ts":-1,"d":19000,"t":3723004,"b":"dmFyaWF0aW9ucw==","x":"NaN","y":"Infinity"}"#
        );
        assert_eq!(
            String::from_utf8(lines[1].clone()).unwrap(),
            r#"{"ts":null,"d":null,"t":null,"b":null,"x":1.5,"y":"-Infinity"}"#
        );
    }
}
