//! Integers from JSON text without loss: arrow-json would truncate `1.5` into a
//! BIGINT column as 1, so integer columns are decoded as their JSON text and
//! converted here, where a fraction or an out-of-range value is an error for
//! that row only.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Builder, PrimitiveArray};
use arrow::datatypes::{DataType, Int16Type, Int32Type, Int64Type, Int8Type};

use crate::error::{Result, SluiceError};

/// Integer types decoded through text.
pub fn is_signed_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    )
}

/// Largest integer a double holds exactly: `1e3` is accepted as 1000, but an
/// exponent form of a larger integer may already have lost digits.
const EXACT_IN_F64: f64 = 9_007_199_254_740_992.0;

/// `text` (JSON text of numbers, or numeric strings) as `target`; rows that do
/// not convert exactly are NULL and listed with the reason.
pub fn convert(text: &ArrayRef, target: &DataType) -> Result<(ArrayRef, Vec<(usize, String)>)> {
    let strings = text
        .as_string_opt::<i32>()
        .ok_or_else(|| SluiceError::Internal(format!("integer text is {}", text.data_type())))?;
    let (min, max) = match target {
        DataType::Int8 => (i8::MIN as i128, i8::MAX as i128),
        DataType::Int16 => (i16::MIN as i128, i16::MAX as i128),
        DataType::Int32 => (i32::MIN as i128, i32::MAX as i128),
        DataType::Int64 => (i64::MIN as i128, i64::MAX as i128),
        other => {
            return Err(SluiceError::Internal(format!(
                "{other} is not a signed integer"
            )))
        }
    };
    let type_name = crate::sql::types::sql_type_name(target);
    let mut errors = Vec::new();
    let mut values = Int64Builder::with_capacity(strings.len());
    for (row, s) in strings.iter().enumerate() {
        let Some(s) = s else {
            values.append_null();
            continue;
        };
        match parse(s.trim()) {
            Some(v) if (min..=max).contains(&v) => values.append_value(v as i64),
            Some(_) => {
                let shown: String = s.chars().take(64).collect();
                errors.push((row, format!("{shown} is out of range for {type_name}")));
                values.append_null();
            }
            None => {
                let shown: String = s.chars().take(64).collect();
                errors.push((
                    row,
                    format!("'{shown}' is not a {type_name} (lossy or not a number)"),
                ));
                values.append_null();
            }
        }
    }
    let wide: PrimitiveArray<Int64Type> = values.finish();
    // Every value is in range, so the narrowing casts below are exact.
    let out: ArrayRef = match target {
        DataType::Int64 => Arc::new(wide),
        DataType::Int32 => Arc::new(wide.unary::<_, Int32Type>(|v| v as i32)),
        DataType::Int16 => Arc::new(wide.unary::<_, Int16Type>(|v| v as i16)),
        _ => Arc::new(wide.unary::<_, Int8Type>(|v| v as i8)),
    };
    Ok((out, errors))
}

/// An integer written as digits, or as a number with a zero fraction or an
/// exponent that is still an exact integer (`2.0`, `1e3`).
fn parse(s: &str) -> Option<i128> {
    if let Ok(v) = s.parse::<i128>() {
        return Some(v);
    }
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT_IN_F64).then_some(f as i128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};

    #[test]
    fn exact_integers_convert_and_lossy_ones_fail() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("12"),
            Some("1.5"),
            None,
            Some("2.0"),
            Some("1e3"),
            Some("true"),
            Some("9223372036854775808"),
            Some("-9223372036854775808"),
        ]));
        let (out, errors) = convert(&text, &DataType::Int64).unwrap();
        let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
        let got: Vec<Option<i64>> = out.iter().collect();
        assert_eq!(
            got,
            vec![
                Some(12),
                None,
                None,
                Some(2),
                Some(1000),
                None,
                None,
                Some(i64::MIN)
            ]
        );
        let rows: Vec<usize> = errors.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![1, 5, 6]);
        assert!(errors[2].1.contains("out of range"), "{}", errors[2].1);
    }

    #[test]
    fn narrow_types_check_their_range() {
        let text: ArrayRef = Arc::new(StringArray::from(vec!["2147483647", "2147483648"]));
        let (out, errors) = convert(&text, &DataType::Int32).unwrap();
        let out = out.as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(out.value(0), i32::MAX);
        assert!(out.is_null(1));
        assert_eq!(errors.len(), 1);
    }
}
