//! Arrow → wire conversions shared by the pgwire and HTTP servers.
//!
//! Values are rendered by Arrow itself: text through
//! [`arrow::util::display::ArrayFormatter`] (with Postgres-style timestamp
//! formats) and JSON through `arrow_json`'s encoders. Only the handful of
//! places where Postgres clients expect something Arrow does not produce are
//! special-cased: booleans (`t`/`f`), `bytea` (`\x` hex), nested values (JSON
//! text) and the binary wire format, which is defined per Postgres type.
//!
//! Before encoding, each column is cast to its *wire type* (see [`wire_type`])
//! so the encoders only deal with a few physical layouts: small and unsigned
//! integers are widened to the Postgres integer they are described as,
//! timestamps become microseconds (Postgres' precision), dictionaries are
//! unpacked, and so on.

use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, ListArray, Time64MicrosecondArray,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::writer::{make_encoder, EncoderOptions, NullableEncoder};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::{BufMut, Bytes, BytesMut};
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::messages::data::DataRow;

pub(crate) use crate::engine::pg_types::arrow_type_for_pg;
use crate::engine::pg_types::is_nested;
pub use crate::engine::pg_types::{pg_type, pg_type_modifier};

/// Days from the Unix epoch to the Postgres epoch (2000-01-01).
pub(crate) const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from the Unix epoch to the Postgres epoch (2000-01-01).
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Text rendering that matches what Postgres clients parse: a space between
/// date and time (not RFC 3339's `T`) and a numeric UTC offset.
const PG_TEXT_FORMAT: FormatOptions<'static> = FormatOptions::new()
    .with_display_error(false)
    .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
    .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"))
    .with_time_format(Some("%H:%M:%S%.f"));

/// JSON rendering for nested values (Postgres text columns) and HTTP rows.
static JSON_OPTIONS: LazyLock<EncoderOptions> =
    LazyLock::new(|| EncoderOptions::default().with_explicit_nulls(true));

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// Describes one result column for a RowDescription.
pub(crate) fn field_info(field: &Field, format: FieldFormat) -> FieldInfo {
    let dt = field.data_type();
    let ty = crate::engine::pg_types::field_pg_type(field);
    // Fixed-size types advertise their width like Postgres does; -1 = varlena.
    let size = match ty {
        Type::BOOL => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::OID | Type::FLOAT4 | Type::DATE => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::TIME => 8,
        _ => -1,
    };
    FieldInfo::new(field.name().clone(), None, None, ty, format)
        .with_type_size(size)
        .with_type_modifier(pg_type_modifier(dt))
}

/// A short SQL type name for HTTP column headers, in ksqlDB's vocabulary where
/// it has one (`STRING`, `BIGINT`, `ARRAY<...>`, `STRUCT<...>`).
pub fn sql_type_name(dt: &DataType) -> String {
    match dt {
        DataType::Null => "NULL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SMALLINT".into(),
        DataType::Int32 | DataType::UInt16 => "INTEGER".into(),
        DataType::Int64 | DataType::UInt32 => "BIGINT".into(),
        DataType::UInt64 => "DECIMAL(20, 0)".into(),
        DataType::Float16 | DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BYTES".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".into(),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => format!("ARRAY<{}>", sql_type_name(f.data_type())),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP<{}, {}>",
                sql_type_name(kv[0].data_type()),
                sql_type_name(kv[1].data_type())
            ),
            other => format!("MAP<{}>", sql_type_name(other)),
        },
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_type_name(f.data_type())))
                .collect();
            format!("STRUCT<{}>", inner.join(", "))
        }
        DataType::Dictionary(_, value) => sql_type_name(value),
        DataType::RunEndEncoded(_, values) => sql_type_name(values.data_type()),
        other => other.to_string().to_uppercase(),
    }
}

/// The physical type a column is cast to before encoding.
fn wire_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Int8 | DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            DataType::Binary
        }
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Date64 => DataType::Date32,
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time64(TimeUnit::Microsecond),
        DataType::Dictionary(_, value) => wire_type(value),
        DataType::RunEndEncoded(_, values) => wire_type(values.data_type()),
        // Arrays: a List of wire-typed elements.
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
            if !is_nested(f.data_type()) =>
        {
            DataType::List(Arc::new(Field::new_list_field(
                wire_type(f.data_type()),
                true,
            )))
        }
        other => other.clone(),
    }
}

fn to_wire(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let target = wire_type(array.data_type());
    if &target == array.data_type() {
        Ok(Arc::clone(array))
    } else {
        cast(array, &target)
    }
}

/// The columns of `batch` as wire arrays, after casting each to the type the
/// client was told about (`schema`, from Describe) if the batch differs.
fn wire_columns(batch: &RecordBatch, schema: &Schema) -> Result<Vec<ArrayRef>, ArrowError> {
    if batch.num_columns() != schema.fields().len() {
        return Err(ArrowError::SchemaError(format!(
            "result has {} columns but {} were described",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(col, field)| {
            let col = if col.data_type() == field.data_type() {
                Arc::clone(col)
            } else {
                cast(col, field.data_type())?
            };
            to_wire(&col)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Cell encoders
// ---------------------------------------------------------------------------

/// `fmt::Write` into a byte vector, for Arrow's formatters.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Renders the non-null values of one (wire) column as Postgres text.
enum TextCell<'a> {
    Display(ArrayFormatter<'a>),
    Bool(&'a BooleanArray),
    Bytea(&'a BinaryArray),
    Json(NullableEncoder<'a>),
    /// A Postgres array literal, `{1,NULL,"a b"}`, of its elements' text.
    Array {
        list: &'a ListArray,
        elements: Box<TextCell<'a>>,
    },
}

impl<'a> TextCell<'a> {
    fn try_new(field: &'a FieldRef, array: &'a dyn Array) -> Result<Self, ArrowError> {
        Ok(match array.data_type() {
            DataType::Boolean => TextCell::Bool(array.as_boolean()),
            DataType::Binary => TextCell::Bytea(array.as_binary::<i32>()),
            DataType::List(element) if !is_nested(element.data_type()) => {
                let list = array.as_list::<i32>();
                TextCell::Array {
                    list,
                    elements: Box::new(TextCell::try_new(element, list.values().as_ref())?),
                }
            }
            dt if is_nested(dt) => TextCell::Json(make_encoder(field, array, &JSON_OPTIONS)?),
            _ => TextCell::Display(ArrayFormatter::try_new(array, &PG_TEXT_FORMAT)?),
        })
    }

    fn write(&mut self, idx: usize, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        match self {
            TextCell::Display(f) => f.value(idx).write(&mut ByteWriter(out)),
            TextCell::Bool(a) => {
                out.push(if a.value(idx) { b't' } else { b'f' });
                Ok(())
            }
            TextCell::Bytea(a) => {
                // Postgres' default `bytea_output = hex`.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let v = a.value(idx);
                out.reserve(2 + v.len() * 2);
                out.extend_from_slice(b"\\x");
                for b in v {
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xf)]);
                }
                Ok(())
            }
            TextCell::Json(e) => {
                e.encode(idx, out);
                Ok(())
            }
            TextCell::Array { list, elements } => {
                let offsets = list.value_offsets();
                let (start, end) = (offsets[idx] as usize, offsets[idx + 1] as usize);
                let values = list.values();
                out.push(b'{');
                let mut item = Vec::new();
                for (n, j) in (start..end).enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    if values.is_null(j) {
                        out.extend_from_slice(b"NULL");
                        continue;
                    }
                    item.clear();
                    elements.write(j, &mut item)?;
                    if needs_quotes(&item) {
                        out.push(b'"');
                        for &b in &item {
                            if b == b'"' || b == b'\\' {
                                out.push(b'\\');
                            }
                            out.push(b);
                        }
                        out.push(b'"');
                    } else {
                        out.extend_from_slice(&item);
                    }
                }
                out.push(b'}');
                Ok(())
            }
        }
    }
}

/// Whether an array element must be quoted to read back as itself.
fn needs_quotes(item: &[u8]) -> bool {
    item.is_empty()
        || item.eq_ignore_ascii_case(b"NULL")
        || item
            .iter()
            .any(|b| matches!(b, b'{' | b'}' | b',' | b'"' | b'\\') || b.is_ascii_whitespace())
}

/// Renders the non-null values of one (wire) column in Postgres binary format.
enum BinaryCell<'a> {
    Bool(&'a BooleanArray),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    /// `oid`: four unsigned bytes.
    Oid(&'a UInt32Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Timestamp(&'a TimestampMicrosecondArray),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Numeric(ArrayFormatter<'a>, Vec<u8>),
    Bytea(&'a BinaryArray),
    /// `text` columns: the binary format of text is its UTF-8 bytes.
    Text(TextCell<'a>),
    /// Postgres' binary array: dimensions, element OID, then each element in
    /// its own binary format (postgres-protocol writes the frame).
    Array {
        list: &'a ListArray,
        element_oid: u32,
        elements: Box<BinaryCell<'a>>,
    },
}

impl<'a> BinaryCell<'a> {
    fn try_new(field: &'a FieldRef, array: &'a dyn Array) -> Result<Self, ArrowError> {
        Ok(match array.data_type() {
            DataType::Boolean => BinaryCell::Bool(array.as_boolean()),
            DataType::Int16 => BinaryCell::I16(array.as_primitive()),
            DataType::Int32 => BinaryCell::I32(array.as_primitive()),
            DataType::Int64 => BinaryCell::I64(array.as_primitive()),
            DataType::UInt32 => BinaryCell::Oid(array.as_primitive()),
            DataType::Float32 => BinaryCell::F32(array.as_primitive()),
            DataType::Float64 => BinaryCell::F64(array.as_primitive()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                BinaryCell::Timestamp(array.as_primitive())
            }
            DataType::Date32 => BinaryCell::Date(array.as_primitive()),
            DataType::Time64(TimeUnit::Microsecond) => BinaryCell::Time(array.as_primitive()),
            DataType::Decimal128(..) | DataType::Decimal256(..) => {
                BinaryCell::Numeric(ArrayFormatter::try_new(array, &PG_TEXT_FORMAT)?, Vec::new())
            }
            DataType::Binary => BinaryCell::Bytea(array.as_binary::<i32>()),
            DataType::List(element) if !is_nested(element.data_type()) => {
                let list = array.as_list::<i32>();
                BinaryCell::Array {
                    list,
                    element_oid: pg_type(element.data_type()).oid(),
                    elements: Box::new(BinaryCell::try_new(element, list.values().as_ref())?),
                }
            }
            _ => BinaryCell::Text(TextCell::try_new(field, array)?),
        })
    }

    fn write(&mut self, idx: usize, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        match self {
            BinaryCell::Bool(a) => out.push(u8::from(a.value(idx))),
            BinaryCell::I16(a) => out.put_i16(a.value(idx)),
            BinaryCell::I32(a) => out.put_i32(a.value(idx)),
            BinaryCell::I64(a) => out.put_i64(a.value(idx)),
            BinaryCell::Oid(a) => out.put_u32(a.value(idx)),
            BinaryCell::F32(a) => out.put_f32(a.value(idx)),
            BinaryCell::F64(a) => out.put_f64(a.value(idx)),
            BinaryCell::Timestamp(a) => out.put_i64(a.value(idx).saturating_sub(PG_EPOCH_MICROS)),
            BinaryCell::Date(a) => out.put_i32(a.value(idx).saturating_sub(PG_EPOCH_DAYS)),
            BinaryCell::Time(a) => out.put_i64(a.value(idx)),
            BinaryCell::Numeric(f, scratch) => {
                scratch.clear();
                f.value(idx).write(&mut ByteWriter(scratch))?;
                let text = std::str::from_utf8(scratch)
                    .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
                numeric_binary(text, out).map_err(ArrowError::ComputeError)?;
            }
            BinaryCell::Bytea(a) => out.extend_from_slice(a.value(idx)),
            BinaryCell::Text(t) => t.write(idx, out)?,
            BinaryCell::Array {
                list,
                element_oid,
                elements,
            } => {
                let offsets = list.value_offsets();
                let (start, end) = (offsets[idx] as usize, offsets[idx + 1] as usize);
                let values = list.values();
                // An empty array has no dimensions, as Postgres writes it.
                let dimension = (end > start).then(|| postgres_protocol::types::ArrayDimension {
                    len: i32::try_from(end - start).unwrap_or(i32::MAX),
                    lower_bound: 1,
                });
                let mut buf = BytesMut::new();
                let mut item = Vec::new();
                postgres_protocol::types::array_to_sql(
                    dimension,
                    *element_oid,
                    start..end,
                    |j, buf| {
                        if values.is_null(j) {
                            return Ok(postgres_protocol::IsNull::Yes);
                        }
                        item.clear();
                        elements.write(j, &mut item)?;
                        buf.put_slice(&item);
                        Ok(postgres_protocol::IsNull::No)
                    },
                    &mut buf,
                )
                .map_err(|e| ArrowError::ComputeError(format!("binary array: {e}")))?;
                out.extend_from_slice(&buf);
            }
        }
        Ok(())
    }
}

enum Cell<'a> {
    Text(TextCell<'a>),
    Binary(BinaryCell<'a>),
}

impl Cell<'_> {
    fn write(&mut self, idx: usize, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        match self {
            Cell::Text(c) => c.write(idx, out),
            Cell::Binary(c) => c.write(idx, out),
        }
    }
}

/// Fields matching the wire arrays, for encoders that need one (JSON).
fn wire_fields(names: &Schema, columns: &[ArrayRef]) -> Vec<FieldRef> {
    names
        .fields()
        .iter()
        .zip(columns)
        .map(|(f, c)| Arc::new(Field::new(f.name(), c.data_type().clone(), true)))
        .collect()
}

// ---------------------------------------------------------------------------
// pgwire DataRows
// ---------------------------------------------------------------------------

/// Encodes Arrow batches as pgwire `DataRow`s for a fixed result description.
///
/// `schema` is what the client was (or will be) told in the RowDescription;
/// batches whose column types differ are cast to it so the bytes always match
/// the advertised types.
#[derive(Debug, Clone)]
pub(crate) struct PgRowEncoder {
    schema: SchemaRef,
    formats: Vec<FieldFormat>,
}

impl PgRowEncoder {
    /// `formats[i]` is the format of column `i`; missing entries mean text.
    pub(crate) fn new(schema: SchemaRef, formats: Vec<FieldFormat>) -> Self {
        Self { schema, formats }
    }

    pub(crate) fn field_infos(&self) -> Vec<FieldInfo> {
        field_infos(&self.schema, &self.formats)
    }

    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Vec<DataRow>, ArrowError> {
        let columns = wire_columns(batch, &self.schema)?;
        let fields = wire_fields(&self.schema, &columns);
        let nulls: Vec<_> = columns.iter().map(|c| c.logical_nulls()).collect();
        let mut cells = columns
            .iter()
            .zip(&fields)
            .enumerate()
            .map(|(i, (col, field))| {
                Ok(
                    match self.formats.get(i).copied().unwrap_or(FieldFormat::Text) {
                        FieldFormat::Text => Cell::Text(TextCell::try_new(field, col.as_ref())?),
                        FieldFormat::Binary => {
                            Cell::Binary(BinaryCell::try_new(field, col.as_ref())?)
                        }
                    },
                )
            })
            .collect::<Result<Vec<_>, ArrowError>>()?;

        let field_count = i16::try_from(columns.len())
            .map_err(|_| ArrowError::SchemaError("too many columns for Postgres".into()))?;
        let mut rows = Vec::with_capacity(batch.num_rows());
        let mut scratch = Vec::with_capacity(64);
        for row in 0..batch.num_rows() {
            let mut data = BytesMut::with_capacity(columns.len() * 12);
            for (cell, nulls) in cells.iter_mut().zip(&nulls) {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    data.put_i32(-1);
                    continue;
                }
                scratch.clear();
                cell.write(row, &mut scratch)?;
                let len = i32::try_from(scratch.len())
                    .map_err(|_| ArrowError::ComputeError("value too large for Postgres".into()))?;
                data.put_i32(len);
                data.put_slice(&scratch);
            }
            rows.push(DataRow::new(data, field_count));
        }
        Ok(rows)
    }
}

/// RowDescription fields for `schema`; `formats[i]` is column `i`'s format,
/// missing entries mean text.
pub(crate) fn field_infos(schema: &Schema, formats: &[FieldFormat]) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| field_info(f, formats.get(i).copied().unwrap_or(FieldFormat::Text)))
        .collect()
}

// ---------------------------------------------------------------------------
// COPY TO STDOUT
// ---------------------------------------------------------------------------

/// The row format of `COPY ... TO STDOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyFormat {
    Text,
    Csv,
}

/// Options of `COPY ... TO STDOUT` that Sluice supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyOptions {
    pub format: CopyFormat,
    pub header: bool,
    pub delimiter: char,
    pub null: String,
}

impl CopyOptions {
    pub(crate) fn text() -> Self {
        Self {
            format: CopyFormat::Text,
            header: false,
            delimiter: '\t',
            null: "\\N".into(),
        }
    }

    pub(crate) fn csv() -> Self {
        Self {
            format: CopyFormat::Csv,
            header: false,
            delimiter: ',',
            null: String::new(),
        }
    }
}

/// Encodes rows for `COPY ... TO STDOUT` in text or CSV format, one CopyData
/// payload per row like Postgres (clients may rely on it).
#[derive(Debug, Clone)]
pub(crate) struct CopyEncoder {
    options: CopyOptions,
}

impl CopyEncoder {
    pub(crate) fn new(options: CopyOptions) -> Self {
        Self { options }
    }

    /// The header line, if the options ask for one.
    pub(crate) fn header(&self, schema: &Schema) -> Option<Bytes> {
        if !self.options.header {
            return None;
        }
        let mut line = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if i > 0 {
                push_char(&mut line, self.options.delimiter);
            }
            self.push_value(&mut line, field.name().as_bytes());
        }
        line.push(b'\n');
        Some(line.into())
    }

    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Vec<Bytes>, ArrowError> {
        let columns = batch
            .columns()
            .iter()
            .map(to_wire)
            .collect::<Result<Vec<_>, _>>()?;
        let fields = wire_fields(batch.schema_ref(), &columns);
        let nulls: Vec<_> = columns.iter().map(|c| c.logical_nulls()).collect();
        let mut cells = columns
            .iter()
            .zip(&fields)
            .map(|(c, f)| TextCell::try_new(f, c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;

        let mut lines = Vec::with_capacity(batch.num_rows());
        let mut value = Vec::with_capacity(64);
        for row in 0..batch.num_rows() {
            let mut line = Vec::with_capacity(columns.len() * 12);
            for (i, (cell, nulls)) in cells.iter_mut().zip(&nulls).enumerate() {
                if i > 0 {
                    push_char(&mut line, self.options.delimiter);
                }
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    line.extend_from_slice(self.options.null.as_bytes());
                    continue;
                }
                value.clear();
                cell.write(row, &mut value)?;
                self.push_value(&mut line, &value);
            }
            line.push(b'\n');
            lines.push(Bytes::from(line));
        }
        Ok(lines)
    }

    /// Appends a non-null value, escaped (text) or quoted (CSV) as needed.
    fn push_value(&self, out: &mut Vec<u8>, value: &[u8]) {
        let delimiter = self.options.delimiter;
        match self.options.format {
            CopyFormat::Text => {
                // Only ASCII delimiters are accepted (see the COPY parser), so
                // comparing bytes is exact.
                let delim = u8::try_from(u32::from(delimiter)).unwrap_or(b'\t');
                for &b in value {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b if b == delim => {
                            out.push(b'\\');
                            out.push(b);
                        }
                        b => out.push(b),
                    }
                }
            }
            CopyFormat::Csv => {
                let delim = u8::try_from(u32::from(delimiter)).unwrap_or(b',');
                // Quote whatever could be misread: separators, quotes, line
                // breaks, and values that look like NULL (e.g. "" when NULL is
                // the empty string), like Postgres does.
                let needs_quotes = value.is_empty() && self.options.null.is_empty()
                    || value == self.options.null.as_bytes()
                    || value
                        .iter()
                        .any(|&b| b == delim || b == b'"' || b == b'\n' || b == b'\r');
                if needs_quotes {
                    out.push(b'"');
                    for &b in value {
                        if b == b'"' {
                            out.push(b'"');
                        }
                        out.push(b);
                    }
                    out.push(b'"');
                } else {
                    out.extend_from_slice(value);
                }
            }
        }
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

// ---------------------------------------------------------------------------
// JSON rows (HTTP)
// ---------------------------------------------------------------------------

/// How [`write_json_rows`] separates rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonRowLayout {
    /// Newline-delimited: every row is followed by `\n`.
    Lines,
    /// Elements of a JSON array: rows are separated by `,`. `first` tracks
    /// whether a row was written yet, across batches.
    Comma { first: bool },
    /// Elements of a JSON array after its first element: every row is
    /// preceded by `,`.
    Elements,
    /// ksqlDB's v1 `/query` rows: `{"row":{"columns":[…]}},` and a newline.
    V1Rows,
}

/// Appends every row of `batch` to `out` as a JSON array of its values in
/// column order (`[1,"a",null]`). Values are encoded by `arrow_json`:
/// timestamps become ISO-8601 strings, decimals JSON numbers, binary hex
/// strings, lists arrays and structs objects.
pub(crate) fn write_json_rows(
    batch: &RecordBatch,
    out: &mut Vec<u8>,
    layout: &mut JsonRowLayout,
) -> Result<(), ArrowError> {
    let schema = batch.schema();
    let mut encoders = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| make_encoder(f, c.as_ref(), &JSON_OPTIONS))
        .collect::<Result<Vec<_>, _>>()?;
    for row in 0..batch.num_rows() {
        if let JsonRowLayout::Comma { first } = layout {
            if !*first {
                out.push(b',');
            }
            *first = false;
        }
        match layout {
            JsonRowLayout::Elements => out.push(b','),
            JsonRowLayout::V1Rows => out.extend_from_slice(br#"{"row":{"columns":"#),
            _ => {}
        }
        out.push(b'[');
        for (i, enc) in encoders.iter_mut().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if enc.is_null(row) {
                out.extend_from_slice(b"null");
            } else {
                enc.encode(row, out);
            }
        }
        out.push(b']');
        match layout {
            JsonRowLayout::Lines => out.push(b'\n'),
            JsonRowLayout::V1Rows => out.extend_from_slice(b"}},\n"),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// NUMERIC binary format
// ---------------------------------------------------------------------------

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;

/// Encodes a plain decimal string (`-123.4500`, as Arrow displays decimals) in
/// Postgres' binary NUMERIC format: ndigits, weight, sign, dscale, then
/// base-10000 digits.
pub(crate) fn numeric_binary(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let invalid = || format!("invalid numeric value {text:?}");
    if text.eq_ignore_ascii_case("nan") {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(NUMERIC_NAN);
        out.put_u16(0);
        return Ok(());
    }
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let dscale = u16::try_from(frac_part.len()).map_err(|_| invalid())?;
    let int_part = int_part.trim_start_matches('0');

    // Group decimal digits into base-10000 digits, aligned on the decimal point.
    let digit = |s: &str| {
        s.bytes()
            .fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0'))
    };
    let mut digits: Vec<i16> = Vec::with_capacity((int_part.len() + frac_part.len()) / 4 + 2);
    let lead = int_part.len() % 4;
    if lead > 0 {
        digits.push(digit(&int_part[..lead]));
    }
    for chunk in int_part.as_bytes()[lead..].chunks(4) {
        digits.push(digit(std::str::from_utf8(chunk).map_err(|_| invalid())?));
    }
    let int_groups = digits.len();
    for chunk in frac_part.as_bytes().chunks(4) {
        let s = std::str::from_utf8(chunk).map_err(|_| invalid())?;
        // Right-pad the last fractional group: "45" means 4500/10000.
        digits.push(digit(s) * 10i16.pow(4 - chunk.len() as u32));
    }
    let mut weight = int_groups as i32 - 1;
    // Strip leading and trailing zero groups; they are implied by weight.
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    weight -= leading as i32;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let (weight, sign) = if digits.is_empty() {
        (0, NUMERIC_POS)
    } else {
        (weight, if negative { NUMERIC_NEG } else { NUMERIC_POS })
    };
    out.put_i16(i16::try_from(digits.len()).map_err(|_| invalid())?);
    out.put_i16(i16::try_from(weight).map_err(|_| invalid())?);
    out.put_u16(sign);
    out.put_u16(dscale);
    for d in digits {
        out.put_i16(d);
    }
    Ok(())
}

/// Decodes Postgres' binary NUMERIC format into a plain decimal string with
/// exactly `dscale` fractional digits (`NaN` for NaN).
pub(crate) fn numeric_from_binary(bytes: &[u8]) -> Result<String, String> {
    let invalid = || "invalid binary numeric value".to_string();
    let read_i16 = |at: usize| -> Result<i16, String> {
        bytes
            .get(at..at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(invalid)
    };
    let ndigits = usize::try_from(read_i16(0)?).map_err(|_| invalid())?;
    let weight = i32::from(read_i16(2)?);
    let sign = read_i16(4)? as u16;
    let dscale = usize::try_from(read_i16(6)?).map_err(|_| invalid())?;
    if bytes.len() != 8 + 2 * ndigits {
        return Err(invalid());
    }
    if sign == NUMERIC_NAN {
        return Ok("NaN".into());
    }
    if sign != NUMERIC_POS && sign != NUMERIC_NEG {
        return Err(invalid());
    }
    let digits = (0..ndigits)
        .map(|i| read_i16(8 + 2 * i))
        .collect::<Result<Vec<_>, _>>()?;
    if digits.iter().any(|d| !(0..10_000).contains(d)) {
        return Err(invalid());
    }
    // Base-10000 digit i has weight `weight - i`; materialize integer and
    // fractional decimal digits.
    let mut int_str = String::new();
    let mut frac_str = String::new();
    let int_groups = weight + 1;
    for g in 0..int_groups.max(0) {
        let d = usize::try_from(g)
            .ok()
            .and_then(|g| digits.get(g))
            .copied()
            .unwrap_or(0);
        int_str.push_str(&format!("{d:04}"));
    }
    let frac_groups = dscale.div_ceil(4);
    for g in 0..frac_groups {
        // Fractional group g has weight -(g+1) → digit index weight + g + 1.
        let idx = weight + 1 + g as i32;
        let d = usize::try_from(idx)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0);
        frac_str.push_str(&format!("{d:04}"));
    }
    frac_str.truncate(dscale);
    let int_str = int_str.trim_start_matches('0');
    let mut out = String::new();
    let is_zero = int_str.is_empty() && frac_str.bytes().all(|b| b == b'0');
    if sign == NUMERIC_NEG && !is_zero {
        out.push('-');
    }
    out.push_str(if int_str.is_empty() { "0" } else { int_str });
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac_str);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, Date32Array, Decimal128Array, DictionaryArray, Int8Array, ListArray,
        NullArray, StringArray, StructArray, TimestampNanosecondArray, UInt64Array,
    };
    use arrow::datatypes::{Int32Type, Int64Type};

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols).unwrap()
    }

    /// Splits a DataRow body into its cells (None = NULL).
    fn cells(row: &DataRow) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut data = &row.data[..];
        for _ in 0..row.field_count {
            let len = i32::from_be_bytes(data[..4].try_into().unwrap());
            data = &data[4..];
            if len < 0 {
                out.push(None);
            } else {
                out.push(Some(data[..len as usize].to_vec()));
                data = &data[len as usize..];
            }
        }
        assert!(data.is_empty());
        out
    }

    fn text_cells(row: &DataRow) -> Vec<Option<String>> {
        cells(row)
            .into_iter()
            .map(|c| c.map(|b| String::from_utf8(b).unwrap()))
            .collect()
    }

    #[test]
    fn arrow_to_pg_type_mapping() {
        use DataType::*;
        let cases = [
            (Boolean, Type::BOOL),
            (Int8, Type::INT2),
            (UInt8, Type::INT2),
            (Int16, Type::INT2),
            (UInt16, Type::INT4),
            (Int32, Type::INT4),
            (UInt32, Type::OID),
            (Int64, Type::INT8),
            (UInt64, Type::NUMERIC),
            (Float32, Type::FLOAT4),
            (Float64, Type::FLOAT8),
            (Utf8, Type::TEXT),
            (LargeUtf8, Type::TEXT),
            (Utf8View, Type::TEXT),
            (Binary, Type::BYTEA),
            (Timestamp(TimeUnit::Millisecond, None), Type::TIMESTAMP),
            (
                Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                Type::TIMESTAMPTZ,
            ),
            (Date32, Type::DATE),
            (Time64(TimeUnit::Nanosecond), Type::TIME),
            (Decimal128(10, 2), Type::NUMERIC),
            (
                List(Arc::new(Field::new("item", Int32, true))),
                Type::INT4_ARRAY,
            ),
            (
                List(Arc::new(Field::new(
                    "item",
                    Timestamp(TimeUnit::Millisecond, None),
                    true,
                ))),
                Type::TIMESTAMP_ARRAY,
            ),
            (
                List(Arc::new(Field::new(
                    "item",
                    List(Arc::new(Field::new("item", Int32, true))),
                    true,
                ))),
                Type::JSON,
            ),
            (
                Struct(vec![Field::new("a", Int32, true)].into()),
                Type::JSON,
            ),
            (Dictionary(Box::new(Int32), Box::new(Utf8)), Type::TEXT),
            (Dictionary(Box::new(Int32), Box::new(Int64)), Type::INT8),
            (Null, Type::TEXT),
        ];
        for (dt, ty) in cases {
            assert_eq!(pg_type(&dt), ty, "{dt}");
        }
        assert_eq!(pg_type_modifier(&Decimal128(10, 2)), (10 << 16 | 2) + 4);
        assert_eq!(pg_type_modifier(&Int32), -1);
    }

    #[test]
    fn sql_type_names() {
        use DataType::*;
        assert_eq!(sql_type_name(&Utf8), "STRING");
        assert_eq!(sql_type_name(&Int64), "BIGINT");
        assert_eq!(sql_type_name(&Decimal128(10, 2)), "DECIMAL(10, 2)");
        assert_eq!(
            sql_type_name(&List(Arc::new(Field::new("item", Int32, true)))),
            "ARRAY<INTEGER>"
        );
        assert_eq!(
            sql_type_name(&Struct(
                vec![Field::new("a", Int32, true), Field::new("b", Utf8, true)].into()
            )),
            "STRUCT<a INTEGER, b STRING>"
        );
    }

    #[test]
    fn text_format_matches_postgres() {
        let ts = TimestampNanosecondArray::from(vec![Some(1_700_000_000_123_456_789), None]);
        let tstz = TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_000), Some(0)])
            .with_timezone("+00:00");
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
        ]);
        let b = batch(vec![
            (
                "i",
                Arc::new(Int8Array::from(vec![Some(-3), None])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a\tb"), Some("")])),
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false)])),
            ),
            ("f", Arc::new(Float64Array::from(vec![1.5, -0.25]))),
            ("ts", Arc::new(ts)),
            ("tstz", Arc::new(tstz)),
            ("d", Arc::new(Date32Array::from(vec![19_000, 0]))),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), Some(-5)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            (
                "bin",
                Arc::new(BinaryArray::from(vec![&b"\x01\xab"[..], b""])),
            ),
            ("l", Arc::new(list)),
            ("n", Arc::new(NullArray::new(2))),
        ]);
        let enc = PgRowEncoder::new(batch_schema(&b), vec![]);
        let rows = enc.encode(&b).unwrap();
        assert_eq!(rows.len(), 2);
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            text_cells(&rows[0]),
            vec![
                s("-3"),
                s("a\tb"),
                s("t"),
                s("1.5"),
                s("2023-11-14 22:13:20.123456"),
                s("2023-11-14 22:13:20+00:00"),
                s("2022-01-08"),
                s("123.45"),
                s("\\x01ab"),
                s("{1,NULL}"),
                None,
            ]
        );
        assert_eq!(
            text_cells(&rows[1]),
            vec![
                None,
                s(""),
                s("f"),
                s("-0.25"),
                None,
                s("1970-01-01 00:00:00+00:00"),
                s("1970-01-01"),
                s("-0.05"),
                s("\\x"),
                None,
                None,
            ]
        );
        let infos = enc.field_infos();
        assert_eq!(infos[0].datatype(), &Type::INT2);
        assert_eq!(infos[4].datatype(), &Type::TIMESTAMP);
        assert_eq!(infos[5].datatype(), &Type::TIMESTAMPTZ);
        assert_eq!(infos[7].type_modifier(), (10 << 16 | 2) + 4);
    }

    #[test]
    fn arrays_in_text_and_binary() {
        let strings = {
            let mut b = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
            for v in ["a", "b c", "", "NULL", "q\"x", "{}"] {
                b.values().append_value(v);
            }
            b.values().append_null();
            b.append(true);
            b.append(true); // empty
            b.finish()
        };
        let ints = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(7), None]),
            Some(vec![]),
        ]);
        let b = batch(vec![
            ("s", Arc::new(strings) as ArrayRef),
            ("i", Arc::new(ints)),
        ]);
        let text = PgRowEncoder::new(b.schema(), vec![]).encode(&b).unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            text_cells(&text[0]),
            vec![s(r#"{a,"b c","","NULL","q\"x","{}",NULL}"#), s("{7,NULL}")]
        );
        assert_eq!(text_cells(&text[1]), vec![s("{}"), s("{}")]);

        // Binary: read back with postgres-protocol's decoder.
        use fallible_iterator::FallibleIterator;
        let enc = PgRowEncoder::new(b.schema(), vec![FieldFormat::Binary; 2]);
        assert_eq!(enc.field_infos()[1].datatype(), &Type::INT4_ARRAY);
        let rows = enc.encode(&b).unwrap();
        let first = cells(&rows[0]);
        let ints = postgres_protocol::types::array_from_sql(first[1].as_ref().unwrap()).unwrap();
        assert_eq!(ints.element_type(), Type::INT4.oid());
        let values: Vec<Option<i32>> = ints
            .values()
            .map(|v| Ok(v.map(|b| i32::from_be_bytes(b.try_into().unwrap()))))
            .collect()
            .unwrap();
        assert_eq!(values, vec![Some(7), None]);
        let strings = postgres_protocol::types::array_from_sql(first[0].as_ref().unwrap()).unwrap();
        assert_eq!(strings.element_type(), Type::TEXT.oid());
        assert_eq!(strings.values().count().unwrap(), 7);
        let empty = cells(&encode_second(&enc, &b))[1].clone().unwrap();
        let empty = postgres_protocol::types::array_from_sql(&empty).unwrap();
        assert_eq!(empty.dimensions().count().unwrap(), 0);
    }

    fn encode_second(enc: &PgRowEncoder, b: &RecordBatch) -> DataRow {
        enc.encode(b).unwrap().remove(1)
    }

    fn batch_schema(b: &RecordBatch) -> SchemaRef {
        b.schema()
    }

    #[test]
    fn binary_format_per_type() {
        let b = batch(vec![
            ("b", Arc::new(BooleanArray::from(vec![true])) as ArrayRef),
            ("i8", Arc::new(Int8Array::from(vec![-2]))),
            ("i64", Arc::new(Int64Array::from(vec![1i64 << 40]))),
            ("u64", Arc::new(UInt64Array::from(vec![u64::MAX]))),
            ("f", Arc::new(Float64Array::from(vec![2.5]))),
            ("s", Arc::new(StringArray::from(vec!["hé"]))),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![PG_EPOCH_MICROS + 1])),
            ),
            ("d", Arc::new(Date32Array::from(vec![PG_EPOCH_DAYS - 1]))),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from(vec![12345])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
        ]);
        let enc = PgRowEncoder::new(b.schema(), vec![FieldFormat::Binary; 9]);
        let rows = enc.encode(&b).unwrap();
        let c = cells(&rows[0]);
        assert_eq!(c[0].as_deref(), Some(&[1u8][..]));
        assert_eq!(c[1].as_deref(), Some(&(-2i16).to_be_bytes()[..]));
        assert_eq!(c[2].as_deref(), Some(&(1i64 << 40).to_be_bytes()[..]));
        let mut expected = Vec::new();
        numeric_binary("18446744073709551615", &mut expected).unwrap();
        assert_eq!(c[3].as_deref(), Some(&expected[..]));
        assert_eq!(c[4].as_deref(), Some(&2.5f64.to_be_bytes()[..]));
        assert_eq!(c[5].as_deref(), Some("hé".as_bytes()));
        assert_eq!(c[6].as_deref(), Some(&1i64.to_be_bytes()[..]));
        assert_eq!(c[7].as_deref(), Some(&(-1i32).to_be_bytes()[..]));
        assert_eq!(
            numeric_from_binary(c[8].as_deref().unwrap()).unwrap(),
            "123.45"
        );
        let infos = enc.field_infos();
        assert_eq!(infos[3].datatype(), &Type::NUMERIC);
        assert_eq!(infos[0].format(), FieldFormat::Binary);
    }

    #[test]
    fn encoder_casts_to_described_schema() {
        // Describe said BIGINT, execution produced INT: the bytes must be int8.
        let described = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let b = batch(vec![("x", Arc::new(Int32Array::from(vec![7])) as ArrayRef)]);
        let enc = PgRowEncoder::new(described, vec![FieldFormat::Binary]);
        let rows = enc.encode(&b).unwrap();
        assert_eq!(cells(&rows[0])[0].as_deref(), Some(&7i64.to_be_bytes()[..]));

        let wrong = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Int64, true),
        ]));
        assert!(PgRowEncoder::new(wrong, vec![]).encode(&b).is_err());
    }

    #[test]
    fn dictionary_columns_are_unpacked() {
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let b = batch(vec![("d", Arc::new(dict) as ArrayRef)]);
        let rows = PgRowEncoder::new(b.schema(), vec![]).encode(&b).unwrap();
        assert_eq!(text_cells(&rows[2]), vec![Some("a".to_string())]);
        let dict: DictionaryArray<Int64Type> = vec!["x"].into_iter().collect();
        let b = batch(vec![("d", Arc::new(dict) as ArrayRef)]);
        let rows = PgRowEncoder::new(b.schema(), vec![FieldFormat::Binary])
            .encode(&b)
            .unwrap();
        assert_eq!(cells(&rows[0]), vec![Some(b"x".to_vec())]);
    }

    #[test]
    fn copy_text_escapes_and_nulls() {
        let b = batch(vec![
            (
                "a",
                Arc::new(StringArray::from(vec![Some("x\ty\\z\nw"), None])) as ArrayRef,
            ),
            ("b", Arc::new(Int32Array::from(vec![Some(1), Some(2)]))),
        ]);
        let enc = CopyEncoder::new(CopyOptions::text());
        let lines = enc.encode(&b).unwrap();
        assert_eq!(&lines[0][..], b"x\\ty\\\\z\\nw\t1\n");
        assert_eq!(&lines[1][..], b"\\N\t2\n");
        assert_eq!(enc.header(&b.schema()), None);
    }

    #[test]
    fn copy_csv_quotes() {
        let b = batch(vec![
            (
                "a b",
                Arc::new(StringArray::from(vec![
                    Some("x,y"),
                    Some(""),
                    None,
                    Some("q\""),
                ])) as ArrayRef,
            ),
            ("n", Arc::new(Int32Array::from(vec![1, 2, 3, 4]))),
        ]);
        let mut opts = CopyOptions::csv();
        opts.header = true;
        let enc = CopyEncoder::new(opts);
        assert_eq!(&enc.header(&b.schema()).unwrap()[..], b"a b,n\n");
        let lines: Vec<_> = enc.encode(&b).unwrap();
        assert_eq!(&lines[0][..], b"\"x,y\",1\n");
        assert_eq!(&lines[1][..], b"\"\",2\n");
        assert_eq!(&lines[2][..], b",3\n");
        assert_eq!(&lines[3][..], b"\"q\"\"\",4\n");
    }

    #[test]
    fn json_rows_shape() {
        let s = StructArray::from(vec![(
            Arc::new(Field::new("k", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec!["v", "w"])) as ArrayRef,
        )]);
        let b = batch(vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("a\"b"), Some("c")])),
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![0, 1_000_000])),
            ),
            ("s", Arc::new(s)),
            ("f", Arc::new(Float64Array::from(vec![f64::NAN, 0.5]))),
        ]);
        let mut out = Vec::new();
        write_json_rows(&b, &mut out, &mut JsonRowLayout::Lines).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[1,\"a\\\"b\",\"1970-01-01T00:00:00\",{\"k\":\"v\"},null]\n\
             [null,\"c\",\"1970-01-01T00:00:01\",{\"k\":\"w\"},0.5]\n"
        );

        let mut out = Vec::new();
        let mut layout = JsonRowLayout::Comma { first: true };
        write_json_rows(&b, &mut out, &mut layout).unwrap();
        write_json_rows(&b, &mut out, &mut layout).unwrap();
        let parsed: serde_json::Value =
            serde_json::from_slice(&[b"[", &out[..], b"]"].concat()).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 4);
        assert_eq!(parsed[1][1], "c");
    }

    #[test]
    fn numeric_binary_roundtrip() {
        for (input, expected) in [
            ("123.45", "123.45"),
            ("-123.45", "-123.45"),
            ("0", "0"),
            ("0.00", "0.00"),
            ("-0.00", "0.00"),
            ("0.001", "0.001"),
            ("0.00001", "0.00001"),
            ("10000", "10000"),
            ("12345678.9", "12345678.9"),
            ("100000000.0001", "100000000.0001"),
            (
                "99999999999999999999999999999999999999",
                "99999999999999999999999999999999999999",
            ),
            ("NaN", "NaN"),
        ] {
            let mut buf = Vec::new();
            numeric_binary(input, &mut buf).unwrap();
            assert_eq!(numeric_from_binary(&buf).unwrap(), expected, "{input}");
        }
        // Known encoding: 123.45 → ndigits 2, weight 0, +, dscale 2, [123, 4500]
        let mut buf = Vec::new();
        numeric_binary("123.45", &mut buf).unwrap();
        assert_eq!(buf, [0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]);
        // 0.00001 → ndigits 1, weight -2, [1000]
        let mut buf = Vec::new();
        numeric_binary("0.00001", &mut buf).unwrap();
        assert_eq!(buf, [0, 1, 0xff, 0xfe, 0, 0, 0, 5, 0x03, 0xe8]);
        assert!(numeric_binary("1e5", &mut Vec::new()).is_err());
        assert!(numeric_binary("", &mut Vec::new()).is_err());
        assert!(numeric_from_binary(&[0, 1]).is_err());
        assert!(numeric_from_binary(&[0, 1, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
