//! How Arrow types look to Postgres clients: the type OIDs and modifiers
//! that the wire protocol describes columns with and that the emulated
//! `pg_catalog` lists, so both agree. Below the serving layer, which uses it.

use arrow::datatypes::{DataType, Field, TimeUnit};
use pgwire::api::Type;

/// The version string reported to clients (pgwire `server_version`,
/// `version()`, `/info`).
pub const SERVER_VERSION: &str = concat!("15.0 (Sluice ", env!("CARGO_PKG_VERSION"), ")");

/// Field metadata naming the Postgres type a text column is described as
/// when it is not `text` (the catalogs' one-byte `"char"` columns).
const PG_TYPE_KEY: &str = "sluice.pg_type";

/// A text field described as Postgres' `"char"`.
pub fn as_char(field: Field) -> Field {
    field.with_metadata([(PG_TYPE_KEY.to_string(), "char".to_string())].into())
}

/// The Postgres type a result column is described as: its Arrow type's,
/// unless its metadata names another (see [`as_char`]).
pub fn field_pg_type(field: &Field) -> Type {
    match field.metadata().get(PG_TYPE_KEY).map(String::as_str) {
        Some("char") if matches!(field.data_type(), DataType::Utf8) => Type::CHAR,
        _ => pg_type(field.data_type()),
    }
}

/// The Postgres type a column of Arrow type `dt` is described as.
///
/// Lists of scalars are Postgres arrays; other lists, structs and maps are
/// `json`; intervals, durations and anything else without a natural Postgres
/// counterpart are sent as `text` in Arrow's display form.
pub fn pg_type(dt: &DataType) -> Type {
    match dt {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 => Type::INT8,
        // The catalogs' OIDs (pg_class.oid, ...) are u32: Postgres' oid.
        DataType::UInt32 => Type::OID,
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
        // A list of scalars is a Postgres array of the element's type; lists
        // of lists or structs, structs and maps travel as JSON.
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
            if !is_nested(f.data_type()) =>
        {
            array_of(&pg_type(f.data_type()))
        }
        dt if is_nested(dt) => Type::JSON,
        _ => Type::TEXT,
    }
}

/// Lists, structs, maps and unions: values with parts.
pub fn is_nested(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
            | DataType::Union(..)
    )
}

/// The array type whose elements are `element`.
pub fn array_of(element: &Type) -> Type {
    match *element {
        Type::BOOL => Type::BOOL_ARRAY,
        Type::INT2 => Type::INT2_ARRAY,
        Type::INT4 => Type::INT4_ARRAY,
        Type::INT8 => Type::INT8_ARRAY,
        Type::OID => Type::OID_ARRAY,
        Type::FLOAT4 => Type::FLOAT4_ARRAY,
        Type::FLOAT8 => Type::FLOAT8_ARRAY,
        Type::NUMERIC => Type::NUMERIC_ARRAY,
        Type::BYTEA => Type::BYTEA_ARRAY,
        Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
        Type::DATE => Type::DATE_ARRAY,
        Type::TIME => Type::TIME_ARRAY,
        Type::JSON => Type::JSON_ARRAY,
        _ => Type::TEXT_ARRAY,
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
        Type::OID => DataType::UInt32,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::CHAR
        | Type::JSON
        | Type::JSONB => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        _ => return None,
    })
}
