//! SQL column types ↔ Arrow types.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use sqlparser::ast::{ArrayElemTypeDef, DataType as SqlType, ExactNumberInfo, TimezoneInfo};

use crate::error::{Result, SluiceError};

/// The Arrow type that stores a declared SQL column type. Timestamps are kept in
/// milliseconds, like Kafka record timestamps.
pub fn arrow_type(t: &SqlType) -> Result<DataType> {
    use SqlType as S;
    Ok(match t {
        S::Varchar(_) | S::Text | S::String(_) | S::Char(_) | S::Character(_) | S::CharacterVarying(_)
        | S::CharVarying(_) | S::Nvarchar(_) | S::Uuid | S::JSON | S::JSONB => DataType::Utf8,
        S::Boolean | S::Bool => DataType::Boolean,
        S::TinyInt(_) => DataType::Int8,
        S::SmallInt(_) | S::Int2(_) | S::Int16 => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) | S::Int32 => DataType::Int32,
        S::BigInt(_) | S::Int8(_) | S::Int64 => DataType::Int64,
        S::Real | S::Float4 | S::Float32 => DataType::Float32,
        S::Double(_) | S::DoublePrecision | S::Float8 | S::Float64 => DataType::Float64,
        S::Float(info) => match info {
            ExactNumberInfo::Precision(p) if *p <= 24 => DataType::Float32,
            _ => DataType::Float64,
        },
        S::Decimal(info) | S::Numeric(info) | S::Dec(info) => match info {
            ExactNumberInfo::None => DataType::Decimal128(38, 10),
            ExactNumberInfo::Precision(p) => DataType::Decimal128(precision(*p)?, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => DataType::Decimal128(precision(*p)?, scale(*s)?),
        },
        S::Timestamp(_, tz) => match tz {
            TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => {
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
            }
            _ => DataType::Timestamp(TimeUnit::Millisecond, None),
        },
        S::Date => DataType::Date32,
        S::Time(_, _) => DataType::Time64(TimeUnit::Microsecond),
        S::Bytes(_) | S::Bytea | S::Binary(_) | S::Varbinary(_) | S::Blob(_) => DataType::Binary,
        S::Array(elem) => match elem {
            ArrayElemTypeDef::AngleBracket(t)
            | ArrayElemTypeDef::SquareBracket(t, _)
            | ArrayElemTypeDef::Parenthesis(t) => {
                DataType::List(Arc::new(Field::new("item", arrow_type(t)?, true)))
            }
            ArrayElemTypeDef::None => return Err(SluiceError::sql("ARRAY needs an element type: ARRAY<INT>")),
        },
        S::Map(k, v) => DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(k)?, false),
                    Field::new("value", arrow_type(v)?, true),
                ])),
                false,
            )),
            false,
        ),
        S::Struct(fields, _) => {
            let mut out = Vec::with_capacity(fields.len());
            for (i, f) in fields.iter().enumerate() {
                let name = f
                    .field_name
                    .as_ref()
                    .map(|n| n.value.clone())
                    .unwrap_or_else(|| format!("f{i}"));
                out.push(Field::new(name, arrow_type(&f.field_type)?, true));
            }
            DataType::Struct(Fields::from(out))
        }
        S::Custom(name, _) => match name.to_string().to_ascii_uppercase().as_str() {
            "STRING" => DataType::Utf8,
            "BYTES" => DataType::Binary,
            "DOUBLE" => DataType::Float64,
            other => {
                return Err(SluiceError::sql(format!("unknown column type {other}"))
                    .with_hint("column types: VARCHAR, INT, BIGINT, DOUBLE, BOOLEAN, DECIMAL(p,s), TIMESTAMP, DATE, BYTES, ARRAY<T>, MAP<K,V>, STRUCT<...>"))
            }
        },
        other => {
            return Err(SluiceError::sql(format!("column type {other} is not supported"))
                .with_hint("column types: VARCHAR, INT, BIGINT, DOUBLE, BOOLEAN, DECIMAL(p,s), TIMESTAMP, DATE, BYTES, ARRAY<T>, MAP<K,V>, STRUCT<...>"))
        }
    })
}

fn precision(p: u64) -> Result<u8> {
    match u8::try_from(p) {
        Ok(p) if (1..=38).contains(&p) => Ok(p),
        _ => Err(SluiceError::sql(format!(
            "DECIMAL precision {p} is out of range 1..38"
        ))),
    }
}

fn scale(s: i64) -> Result<i8> {
    i8::try_from(s).map_err(|_| SluiceError::sql(format!("DECIMAL scale {s} is out of range")))
}

/// The SQL name users see for an Arrow type (DESCRIBE, SHOW, HTTP headers).
pub fn sql_type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "BIGINT".into(),
        DataType::Float16 | DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::List(f) | DataType::LargeList(f) => {
            format!("ARRAY<{}>", sql_type_name(f.data_type()))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                // sqlparser reads MAP(K, V); ksqlDB's MAP<K, V> does not parse.
                format!(
                    "MAP({}, {})",
                    sql_type_name(kv[0].data_type()),
                    sql_type_name(kv[1].data_type())
                )
            }
            _ => "MAP".into(),
        },
        DataType::Struct(fields) => format!(
            "STRUCT<{}>",
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DataType::Null => "NULL".into(),
        other => other.to_string(),
    }
}

/// Parses a type name such as "VARCHAR" or "DECIMAL(10,2)" (used when the catalog
/// is read back from disk).
pub fn parse_type(text: &str) -> Result<DataType> {
    let dialect = sqlparser::dialect::GenericDialect {};
    let mut parser = sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| super::parser::parser_error(e, None))?;
    let t = parser
        .parse_data_type()
        .map_err(|e| super::parser::parser_error(e, None))?;
    arrow_type(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_names() {
        for name in [
            "VARCHAR",
            "INTEGER",
            "BIGINT",
            "DOUBLE",
            "BOOLEAN",
            "DECIMAL(10,2)",
            "TIMESTAMP",
            "DATE",
            "BYTES",
            "ARRAY<VARCHAR>",
            "MAP(VARCHAR, BIGINT)",
            "STRUCT<a INTEGER, b VARCHAR>",
        ] {
            let t = parse_type(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(sql_type_name(&t), name);
        }
        assert_eq!(parse_type("STRING").unwrap(), DataType::Utf8);
        assert_eq!(parse_type("INT").unwrap(), DataType::Int32);
    }
}
