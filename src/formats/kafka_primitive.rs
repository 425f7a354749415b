//! ksqlDB's KAFKA format: the bytes Kafka's own primitive serializers write
//! (`ShortSerializer`, `IntegerSerializer`, `LongSerializer`, `FloatSerializer`,
//! `DoubleSerializer` big-endian, `StringSerializer` UTF-8, `BytesSerializer` raw).
//! Every Java producer, Kafka Streams and ksqlDB write keys like this, so a
//! topic's INT key is four bytes, not the text "42".

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, StringBuilder,
};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type};
use bytes::Bytes;

/// Whether Kafka has a serializer for values of this type.
pub fn supports(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Binary
    )
}

/// Rows (by index) that could not be read, with the reason.
pub type RowErrors = Vec<(usize, String)>;

/// Reads one column from serialized items; `what` names them in errors ("key").
/// An absent item is NULL; an item of the wrong length or invalid UTF-8 is NULL
/// and reported, so the record is counted bad instead of silently losing a value.
pub fn decode(items: &[Option<&[u8]>], t: &DataType, what: &str) -> (ArrayRef, RowErrors) {
    let mut errors = Vec::new();
    let array: ArrayRef = match t {
        DataType::Int16 => Arc::new(Int16Array::from_iter(
            fixed::<2>(items, t, what, &mut errors).map(|b| b.map(i16::from_be_bytes)),
        )),
        DataType::Int32 => Arc::new(Int32Array::from_iter(
            fixed::<4>(items, t, what, &mut errors).map(|b| b.map(i32::from_be_bytes)),
        )),
        DataType::Int64 => Arc::new(Int64Array::from_iter(
            fixed::<8>(items, t, what, &mut errors).map(|b| b.map(i64::from_be_bytes)),
        )),
        DataType::Float32 => Arc::new(Float32Array::from_iter(
            fixed::<4>(items, t, what, &mut errors).map(|b| b.map(f32::from_be_bytes)),
        )),
        DataType::Float64 => Arc::new(Float64Array::from_iter(
            fixed::<8>(items, t, what, &mut errors).map(|b| b.map(f64::from_be_bytes)),
        )),
        DataType::Binary => {
            let mut b = BinaryBuilder::with_capacity(items.len(), 0);
            for item in items {
                b.append_option(*item);
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(items.len(), 0);
            for (row, item) in items.iter().enumerate() {
                match item.map(std::str::from_utf8) {
                    Some(Ok(s)) => b.append_value(s),
                    Some(Err(_)) => {
                        errors.push((row, format!("the record {what} is not valid UTF-8")));
                        b.append_null();
                    }
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        other => {
            // DDL refuses these; a relation restored from elsewhere still must not
            // read garbage.
            let message = format!(
                "the KAFKA format has no serializer for {}",
                crate::sql::types::sql_type_name(other)
            );
            for (row, item) in items.iter().enumerate() {
                if item.is_some() {
                    errors.push((row, message.clone()));
                }
            }
            arrow::array::new_null_array(other, items.len())
        }
    };
    (array, errors)
}

/// The items as N-byte arrays; an item of another width is reported and NULL.
fn fixed<'a, const N: usize>(
    items: &'a [Option<&'a [u8]>],
    t: &DataType,
    what: &'a str,
    errors: &'a mut RowErrors,
) -> impl Iterator<Item = Option<[u8; N]>> + 'a {
    let type_name = crate::sql::types::sql_type_name(t);
    items.iter().enumerate().map(move |(row, item)| {
        let bytes = (*item)?;
        match <[u8; N]>::try_from(bytes) {
            Ok(b) => Some(b),
            Err(_) => {
                errors.push((
                    row,
                    format!(
                        "the record {what} has {} bytes; a KAFKA-format {type_name} has {N}",
                        bytes.len()
                    ),
                ));
                None
            }
        }
    })
}

/// Writes one column as Kafka's serializers do; NULL is an absent item.
pub fn encode(column: &dyn Array) -> Vec<Option<Bytes>> {
    fn each<T: arrow::datatypes::ArrowPrimitiveType, const N: usize>(
        column: &dyn Array,
        to_bytes: impl Fn(T::Native) -> [u8; N],
    ) -> Vec<Option<Bytes>> {
        column
            .as_primitive::<T>()
            .iter()
            .map(|v| v.map(|v| Bytes::copy_from_slice(&to_bytes(v))))
            .collect()
    }
    match column.data_type() {
        DataType::Int16 => each::<Int16Type, 2>(column, i16::to_be_bytes),
        DataType::Int32 => each::<Int32Type, 4>(column, i32::to_be_bytes),
        DataType::Int64 => each::<Int64Type, 8>(column, i64::to_be_bytes),
        DataType::Float32 => each::<Float32Type, 4>(column, f32::to_be_bytes),
        DataType::Float64 => each::<Float64Type, 8>(column, f64::to_be_bytes),
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(|s| Bytes::copy_from_slice(s.as_bytes())))
            .collect(),
        DataType::Binary => column
            .as_binary::<i32>()
            .iter()
            .map(|v| v.map(Bytes::copy_from_slice))
            .collect(),
        // Types Kafka cannot serialize are refused by DDL; a value of one is
        // written as its text so nothing is dropped.
        _ => text(column),
    }
}

/// Each value's display text (the pre-KAFKA-serializer encoding of keys, kept
/// for relations created before it and for `key_format='kafka_text'`).
pub fn text(column: &dyn Array) -> Vec<Option<Bytes>> {
    match arrow::util::display::ArrayFormatter::try_new(column, &Default::default()) {
        Ok(f) => (0..column.len())
            .map(|i| (!column.is_null(i)).then(|| Bytes::from(f.value(i).to_string())))
            .collect(),
        Err(_) => vec![None; column.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_serializer_type() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int16Array::from(vec![Some(-2), None])),
            Arc::new(Int32Array::from(vec![Some(42), Some(i32::MIN)])),
            Arc::new(Int64Array::from(vec![Some(1 << 40), None])),
            Arc::new(Float32Array::from(vec![Some(1.5), None])),
            Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(-0.25)])),
            Arc::new(arrow::array::StringArray::from(vec![Some("é"), None])),
            Arc::new(arrow::array::BinaryArray::from(vec![
                Some(&[0u8, 255][..]),
                None,
            ])),
        ];
        for c in columns {
            let bytes = encode(c.as_ref());
            let items: Vec<Option<&[u8]>> = bytes.iter().map(|b| b.as_deref()).collect();
            let (back, errors) = decode(&items, c.data_type(), "key");
            assert!(errors.is_empty(), "{errors:?}");
            // NaN != NaN, so compare the bytes again.
            assert_eq!(encode(back.as_ref()), bytes, "{:?}", c.data_type());
        }
    }

    #[test]
    fn java_serializer_bytes() {
        let c = Int32Array::from(vec![42]);
        assert_eq!(encode(&c)[0].as_deref(), Some(&[0u8, 0, 0, 42][..]));
        let c = Int64Array::from(vec![-1]);
        assert_eq!(encode(&c)[0].as_deref(), Some(&[0xffu8; 8][..]));
        let c = Float64Array::from(vec![1.0]);
        assert_eq!(
            encode(&c)[0].as_deref(),
            Some(&[0x3f, 0xf0, 0, 0, 0, 0, 0, 0][..])
        );
    }

    #[test]
    fn wrong_width_and_bad_utf8_are_errors_not_values() {
        let items: Vec<Option<&[u8]>> = vec![Some(b"42"), None, Some(&[0, 0, 0, 7])];
        let (a, errors) = decode(&items, &DataType::Int32, "key");
        assert_eq!(a.null_count(), 2);
        assert_eq!(a.as_primitive::<Int32Type>().value(2), 7);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].1.contains("2 bytes"), "{errors:?}");
        let (_, errors) = decode(&[Some(&[0xff, 0xfe][..])], &DataType::Utf8, "value");
        assert_eq!(errors[0].0, 0);
    }
}
