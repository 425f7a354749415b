//! ksqlDB's regular-expression, encoding and date functions, with ksqlDB's
//! NULL semantics: a NULL argument, an invalid pattern or text that does not
//! decode gives NULL.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Date32Array, ListBuilder, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field};
use base64::Engine as _;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::ScalarUDF;

use super::ksql::{arity, cast_as, ksql_udf, longs, strings};
use crate::formats::rowtime::java_to_chrono;

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        ksql_udf("regexp_extract", DataType::Utf8, regexp_extract),
        ksql_udf(
            "regexp_extract_all",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            regexp_extract_all,
        ),
        ksql_udf("encode", DataType::Utf8, encode),
        ksql_udf("format_date", DataType::Utf8, format_date),
        ksql_udf("parse_date", DataType::Date32, parse_date),
    ]
}

/// The pattern, compiled once per distinct text (most calls pass a literal).
fn compiled(cache: &mut Option<(String, Option<regex::Regex>)>, p: &str) -> Option<regex::Regex> {
    match cache {
        Some((text, re)) if text == p => re.clone(),
        _ => {
            let re = regex::Regex::new(p).ok();
            *cache = Some((p.to_string(), re.clone()));
            re
        }
    }
}

/// Per row of `(pattern, s [, group])`: at most `limit` matches of the
/// capture group (0: the whole match); NULL for a NULL argument or an
/// invalid pattern.
fn matches(args: &[ArrayRef], rows: usize, limit: usize) -> DfResult<Vec<Option<Vec<String>>>> {
    let patterns = strings(&args[0])?;
    let texts = strings(&args[1])?;
    let groups: Vec<Option<usize>> = match args.get(2) {
        Some(g) => longs(g)?
            .iter()
            .map(|g| g.and_then(|g| usize::try_from(g).ok()))
            .collect(),
        None => vec![Some(0); rows],
    };
    let mut cache = None;
    Ok(groups
        .iter()
        .enumerate()
        .map(|(i, group)| {
            let re = compiled(&mut cache, patterns.is_valid(i).then(|| patterns.value(i))?)?;
            let text = texts.is_valid(i).then(|| texts.value(i))?;
            let group = (*group)?;
            Some(
                re.captures_iter(text)
                    .filter_map(|c| c.get(group).map(|m| m.as_str().to_string()))
                    .take(limit)
                    .collect(),
            )
        })
        .collect())
}

/// `REGEXP_EXTRACT(pattern, s [, group])`: the first match (or its group).
fn regexp_extract(args: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    arity("regexp_extract", args, &[2, 3])?;
    let out: StringArray = matches(args, rows, 1)?
        .into_iter()
        .map(|m| m?.into_iter().next())
        .collect();
    Ok(Arc::new(out))
}

/// `REGEXP_EXTRACT_ALL(pattern, s [, group])`: every match (or its group).
fn regexp_extract_all(args: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    arity("regexp_extract_all", args, &[2, 3])?;
    let mut out = ListBuilder::new(StringBuilder::new());
    for found in matches(args, rows, usize::MAX)? {
        match found {
            Some(values) => {
                for v in values {
                    out.values().append_value(v);
                }
                out.append(true);
            }
            None => out.append(false),
        }
    }
    Ok(Arc::new(out.finish()))
}

fn decode_bytes(text: &str, encoding: &str) -> Option<Vec<u8>> {
    match encoding.to_ascii_lowercase().as_str() {
        "utf8" => Some(text.as_bytes().to_vec()),
        "ascii" => text.is_ascii().then(|| text.as_bytes().to_vec()),
        "base64" => base64::engine::general_purpose::STANDARD.decode(text).ok(),
        "hex" => {
            let digits = text.strip_prefix("0x").unwrap_or(text);
            if !digits.len().is_multiple_of(2) {
                return None;
            }
            (0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
                .collect()
        }
        _ => None,
    }
}

fn encode_bytes(bytes: &[u8], encoding: &str) -> Option<String> {
    match encoding.to_ascii_lowercase().as_str() {
        "utf8" => String::from_utf8(bytes.to_vec()).ok(),
        "ascii" => bytes
            .is_ascii()
            .then(|| String::from_utf8_lossy(bytes).into_owned()),
        "base64" => Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        "hex" => Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        _ => None,
    }
}

/// `ENCODE(s, input_encoding, output_encoding)`: `hex`, `utf8`, `ascii`,
/// `base64`.
fn encode(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    arity("encode", args, &[3])?;
    let texts = strings(&args[0])?;
    let inputs = strings(&args[1])?;
    let outputs = strings(&args[2])?;
    let out: StringArray = texts
        .iter()
        .zip(inputs.iter())
        .zip(outputs.iter())
        .map(|((t, i), o)| encode_bytes(&decode_bytes(t?, i?)?, o?))
        .collect();
    Ok(Arc::new(out))
}

/// `FORMAT_DATE(date, format)`: a DATE in a Java pattern.
fn format_date(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    arity("format_date", args, &[2])?;
    let dates: Date32Array = cast_as(&args[0], &DataType::Date32)?;
    let formats = strings(&args[1])?;
    let out: StringArray = dates
        .iter()
        .zip(formats.iter())
        .map(|(d, f)| {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(d? + 719_163)?;
            let mut text = String::new();
            use std::fmt::Write;
            write!(text, "{}", date.format(&java_to_chrono(f?))).ok()?;
            Some(text)
        })
        .collect();
    Ok(Arc::new(out))
}

/// `PARSE_DATE(s, format)`: a DATE read with a Java pattern.
fn parse_date(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    arity("parse_date", args, &[2])?;
    let texts = strings(&args[0])?;
    let formats = strings(&args[1])?;
    let out: Date32Array = texts
        .iter()
        .zip(formats.iter())
        .map(|(t, f)| {
            let date = chrono::NaiveDate::parse_from_str(t?, &java_to_chrono(f?)).ok()?;
            use chrono::Datelike;
            Some(date.num_days_from_ce() - 719_163)
        })
        .collect();
    Ok(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::super::ksql::test_support::{text, texts_of};
    use super::*;
    use chrono::Datelike;

    #[test]
    fn regular_expressions() {
        let p = text(&[Some(r"(\w+)@(\w+)\.com"), Some("[")]);
        let s = text(&[Some("ann@x.com, bob@y.com"), Some("x")]);
        assert_eq!(
            texts_of(regexp_extract(&[p.clone(), s.clone()], 2).unwrap()),
            vec![Some("ann@x.com".into()), None]
        );
        let group: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![2, 2]));
        assert_eq!(
            texts_of(regexp_extract(&[p.clone(), s.clone(), group.clone()], 2).unwrap())[0]
                .as_deref(),
            Some("x")
        );
        let all = regexp_extract_all(&[p, s, group], 2).unwrap();
        let all = all
            .as_any()
            .downcast_ref::<arrow::array::ListArray>()
            .unwrap();
        assert_eq!(
            texts_of(all.value(0)),
            vec![Some("x".into()), Some("y".into())]
        );
        assert!(all.is_null(1));
    }

    #[test]
    fn encodings_as_ksqldb_documents_them() {
        let out = encode(
            &[
                text(&[
                    Some("4578616d706c6521"),
                    Some("RXhhbXBsZSE="),
                    Some("Example!"),
                    Some("zz"),
                ]),
                text(&[Some("hex"), Some("base64"), Some("utf8"), Some("hex")]),
                text(&[Some("utf8"), Some("utf8"), Some("base64"), Some("utf8")]),
            ],
            4,
        )
        .unwrap();
        assert_eq!(
            texts_of(out),
            vec![
                Some("Example!".into()),
                Some("Example!".into()),
                Some("RXhhbXBsZSE=".into()),
                None
            ]
        );
    }

    #[test]
    fn dates_format_and_parse() {
        let parsed = parse_date(
            &[
                text(&[Some("2024-02-29"), Some("2024-02-30")]),
                text(&[Some("yyyy-MM-dd"); 2]),
            ],
            2,
        )
        .unwrap();
        let parsed = parsed.as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!(
            parsed
                .value_as_date(0)
                .map(|d| (d.year(), d.month(), d.day())),
            Some((2024, 2, 29))
        );
        assert!(parsed.is_null(1));
        let formatted = format_date(
            &[
                Arc::new(parsed.clone()) as ArrayRef,
                text(&[Some("dd/MM/yyyy"); 2]),
            ],
            2,
        )
        .unwrap();
        assert_eq!(texts_of(formatted), vec![Some("29/02/2024".into()), None]);
    }
}
