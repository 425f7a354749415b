//! Event time of each row: a timestamp column, or the record timestamp.

use arrow::array::{Array, ArrayRef, Int64Array, Int64Builder, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{NaiveDate, NaiveDateTime};

/// Event times from `column` (null where missing or unparseable).
pub fn from_column(column: &ArrayRef, format: Option<&str>) -> Int64Array {
    let n = column.len();
    let millis = DataType::Timestamp(TimeUnit::Millisecond, None);
    match (column.data_type(), format) {
        (DataType::Utf8, Some(fmt)) => {
            let Some(text) = column.as_any().downcast_ref::<StringArray>() else {
                return nulls(n);
            };
            let mut b = Int64Builder::with_capacity(n);
            for v in text.iter() {
                b.append_option(v.and_then(|s| parse_with_format(s, fmt)));
            }
            b.finish()
        }
        (DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Utf8, _) => {
            cast_to_int64(cast(column, &millis).ok().as_ref(), n)
        }
        (DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64, _) => {
            cast_to_int64(Some(column), n)
        }
        _ => nulls(n),
    }
}

/// Epoch milliseconds as Int64 (a millisecond timestamp's physical value).
fn cast_to_int64(column: Option<&ArrayRef>, n: usize) -> Int64Array {
    column
        .and_then(|c| cast(c, &DataType::Int64).ok())
        .and_then(|a| a.as_any().downcast_ref::<Int64Array>().cloned())
        .unwrap_or_else(|| nulls(n))
}

fn nulls(n: usize) -> Int64Array {
    Int64Array::new_null(n)
}

/// Parses `s` with a chrono format (ksqlDB's `timestamp_format`, written in Java's
/// `yyyy-MM-dd HH:mm:ss` style or chrono's `%Y-%m-%d %H:%M:%S`).
pub fn parse_with_format(s: &str, format: &str) -> Option<i64> {
    let fmt = java_to_chrono(format);
    if let Ok(dt) = chrono::DateTime::parse_from_str(s, &fmt) {
        return Some(dt.timestamp_millis());
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(s, &fmt) {
        return Some(dt.and_utc().timestamp_millis());
    }
    NaiveDate::parse_from_str(s, &fmt)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_millis())
}

/// Translates the common Java DateTimeFormatter letters to chrono; a format that
/// already uses `%` is returned as is.
pub fn java_to_chrono(format: &str) -> String {
    if format.contains('%') {
        return format.to_string();
    }
    let mut out = String::with_capacity(format.len() * 2);
    let chars: Vec<char> = format.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut run = 1;
        while i + run < chars.len() && chars[i + run] == c {
            run += 1;
        }
        let piece = match (c, run) {
            ('y', 4) | ('u', 4) => "%Y".to_string(),
            ('y', 2) => "%y".to_string(),
            ('M', 2) => "%m".to_string(),
            ('M', 3) => "%b".to_string(),
            ('d', 2) => "%d".to_string(),
            ('H', 2) => "%H".to_string(),
            ('h', 2) => "%I".to_string(),
            ('m', 2) => "%M".to_string(),
            ('s', 2) => "%S".to_string(),
            ('S', n) => format!("%{}f", n.min(9)),
            ('a', 1) => "%p".to_string(),
            ('X', _) | ('Z', _) | ('x', _) => "%z".to_string(),
            ('\'', _) => String::new(),
            (c, n) => std::iter::repeat_n(c, n).collect(),
        };
        out.push_str(&piece);
        i += run;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_formats() {
        assert_eq!(java_to_chrono("yyyy-MM-dd HH:mm:ss"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(
            parse_with_format("2024-01-02 03:04:05", "yyyy-MM-dd HH:mm:ss"),
            Some(1704164645000)
        );
        assert_eq!(
            parse_with_format("2024-01-02", "yyyy-MM-dd"),
            Some(1704153600000)
        );
        assert_eq!(parse_with_format("nope", "yyyy-MM-dd"), None);
    }
}
