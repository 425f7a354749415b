//! How Arrow types look to Postgres clients: the type OIDs and modifiers
//! that the wire protocol describes columns with and that the emulated
//! `pg_catalog` lists, so both agree. Below the serving layer, which uses it.

use arrow::datatypes::{DataType, TimeUnit};
use pgwire::api::Type;

/// The version string reported to clients (pgwire `server_version`,
/// `version()`, `/info`).
pub const SERVER_VERSION: &str = concat!("15.0 (Sluice ", env!("CARGO_PKG_VERSION"), ")");

/// The Postgres type a column of Arrow type `dt` is described as.
///
/// Lists, structs and maps are sent as `text` holding JSON; intervals,
/// durations and anything else without a natural Postgres counterpart are sent
/// as `text` in Arrow's display form.
pub fn pg_type(dt: &DataType) -> Type {
    match dt {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        // u64 does not fit an int8.
        DataType::UInt64 => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Type::NUMERIC,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Dictionary(_, value) => pg_type(value),
        DataType::RunEndEncoded(_, values) => pg_type(values.data_type()),
        _ => Type::TEXT,
    }
}

/// The Postgres type modifier (`atttypmod`): precision and scale for numerics,
/// so clients like JDBC report them; -1 ("none") otherwise.
pub fn pg_type_modifier(dt: &DataType) -> i32 {
    match dt {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s)
            if *s >= 0 =>
        {
            ((i32::from(*p) << 16) | i32::from(*s as u8)) + 4
        }
        DataType::Dictionary(_, value) => pg_type_modifier(value),
        _ => -1,
    }
}

/// The Arrow type for a Postgres type, used to interpret parameters whose type
/// the client declared. `None` for types Sluice does not accept as parameters.
pub fn arrow_type_for_pg(ty: &Type) -> Option<DataType> {
    Some(match *ty {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::JSONB => {
            DataType::Utf8
        }
        Type::BYTEA => DataType::Binary,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        _ => return None,
    })
}
