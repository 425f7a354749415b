//! Binding `$n` parameters (extended protocol) into a parsed statement.

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::scalar::ScalarValue;
use sqlparser::ast::{self, Expr, Value, ValueWithSpan};

use crate::error::{Result, SluiceError};
use crate::sql::Statement;

/// Replaces `$1`, `$2`, ... with literal values.
pub fn bind(statement: &mut Statement, params: &[ScalarValue]) -> Result<()> {
    let mut error = None;
    let mut replace = |e: &mut Expr| {
        if let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) = e
        {
            let index = p.trim_start_matches('$').parse::<usize>().ok();
            match index
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| params.get(i))
            {
                Some(v) => *e = literal(v),
                None => {
                    error = Some(SluiceError::sql(format!(
                        "no value bound for parameter {p} ({} given)",
                        params.len()
                    )))
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    };
    match statement {
        Statement::Select { query, .. } | Statement::InsertSelect { query, .. } => {
            let _ = ast::visit_expressions_mut(query.as_mut(), &mut replace);
        }
        Statement::CreateAs(c) => {
            let _ = ast::visit_expressions_mut(c.query.as_mut(), &mut replace);
        }
        Statement::InsertValues { rows, .. } => {
            for row in rows.iter_mut() {
                for e in row.iter_mut() {
                    let _ = ast::visit_expressions_mut(e, &mut replace);
                }
            }
        }
        _ => {}
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A SQL literal for a bound value; typed values keep their type through a CAST.
fn literal(v: &ScalarValue) -> Expr {
    if v.is_null() {
        return Expr::value(Value::Null);
    }
    match v {
        ScalarValue::Boolean(Some(b)) => Expr::value(Value::Boolean(*b)),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Float32(_)
        | ScalarValue::Float64(_)
        | ScalarValue::Decimal128(..) => Expr::value(Value::Number(v.to_string(), false)),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Expr::value(Value::SingleQuotedString(s.clone())),
        ScalarValue::List(list) => {
            // ARRAY[...] of the elements' literals; an empty array keeps its
            // element type through a CAST.
            let values = list.value(0);
            let elements: Vec<Expr> = (0..values.len())
                .map(|i| match ScalarValue::try_from_array(&values, i) {
                    Ok(v) => literal(&v),
                    Err(_) => Expr::value(Value::Null),
                })
                .collect();
            let array = Expr::Array(ast::Array {
                elem: elements,
                named: true,
            });
            match sql_type(values.data_type()) {
                Some(t) if values.is_empty() => cast(
                    array,
                    ast::DataType::Array(ast::ArrayElemTypeDef::SquareBracket(Box::new(t), None)),
                ),
                _ => array,
            }
        }
        other => {
            // Timestamps, dates, times: their ISO text (arrow's display, not
            // ScalarValue's, which prints a timestamp as its raw integer) cast
            // back to the type.
            let text = display(other);
            match sql_type(&other.data_type()) {
                Some(t) => cast(Expr::value(Value::SingleQuotedString(text)), t),
                None => Expr::value(Value::SingleQuotedString(text)),
            }
        }
    }
}

fn cast(expr: Expr, data_type: ast::DataType) -> Expr {
    Expr::Cast {
        kind: ast::CastKind::Cast,
        expr: Box::new(expr),
        data_type,
        array: false,
        format: None,
    }
}

/// The SQL type a bound value is cast back to, for types whose literal is text.
fn sql_type(t: &DataType) -> Option<ast::DataType> {
    Some(match t {
        DataType::Date32 | DataType::Date64 => ast::DataType::Date,
        // A zone-aware value is written with its offset; as TIMESTAMP it is the
        // same instant in UTC, which is how Sluice keeps timestamps.
        DataType::Timestamp(_, _) => ast::DataType::Timestamp(None, ast::TimezoneInfo::None),
        DataType::Time32(_) | DataType::Time64(_) => {
            ast::DataType::Time(None, ast::TimezoneInfo::None)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ast::DataType::Text,
        DataType::Boolean => ast::DataType::Boolean,
        DataType::Int16 => ast::DataType::SmallInt(None),
        DataType::Int32 => ast::DataType::Int(None),
        DataType::Int64 => ast::DataType::BigInt(None),
        DataType::Float32 => ast::DataType::Real,
        DataType::Float64 => ast::DataType::DoublePrecision,
        _ => return None,
    })
}

/// A value's text as Arrow formats it (ISO 8601 for dates and times).
fn display(v: &ScalarValue) -> String {
    let options = FormatOptions::default();
    v.to_array()
        .ok()
        .and_then(|array| {
            ArrayFormatter::try_new(array.as_ref(), &options)
                .ok()
                .map(|f| f.value(0).to_string())
        })
        .unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_values_read_back_as_their_type() {
        let ts = ScalarValue::TimestampMicrosecond(Some(1_709_296_200_000_000), None);
        assert_eq!(
            literal(&ts).to_string(),
            "CAST('2024-03-01T12:30:00' AS TIMESTAMP)"
        );
        let tz =
            ScalarValue::TimestampMicrosecond(Some(1_709_296_200_000_000), Some("+00:00".into()));
        assert_eq!(
            literal(&tz).to_string(),
            "CAST('2024-03-01T12:30:00Z' AS TIMESTAMP)"
        );
        assert_eq!(
            literal(&ScalarValue::Date32(Some(19_783))).to_string(),
            "CAST('2024-03-01' AS DATE)"
        );
        let list = ScalarValue::List(ScalarValue::new_list(
            &[ScalarValue::from("a"), ScalarValue::Utf8(None)],
            &DataType::Utf8,
            true,
        ));
        assert_eq!(literal(&list).to_string(), "ARRAY['a', NULL]");
        let empty = ScalarValue::List(ScalarValue::new_list(&[], &DataType::Int64, true));
        assert_eq!(literal(&empty).to_string(), "CAST(ARRAY[] AS BIGINT[])");
    }
}
