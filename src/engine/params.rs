//! Binding `$n` parameters (extended protocol) into a parsed statement.

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
        other => {
            // Timestamps, dates, ...: the text form cast back to the type.
            let text = other.to_string();
            let data_type = match other.data_type() {
                arrow::datatypes::DataType::Date32 | arrow::datatypes::DataType::Date64 => {
                    ast::DataType::Date
                }
                arrow::datatypes::DataType::Timestamp(_, _) => {
                    ast::DataType::Timestamp(None, ast::TimezoneInfo::None)
                }
                _ => return Expr::value(Value::SingleQuotedString(text)),
            };
            Expr::Cast {
                kind: ast::CastKind::Cast,
                expr: Box::new(Expr::value(Value::SingleQuotedString(text))),
                data_type,
                array: false,
                format: None,
            }
        }
    }
}
