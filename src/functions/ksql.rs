//! ksqlDB's scalar functions that DataFusion lacks, under ksqlDB's names and
//! with ksqlDB's NULL semantics: a NULL argument (or a value that cannot be
//! read, such as a malformed date) gives NULL, never an error that stops the
//! query. Functions DataFusion has under another name are aliases
//! ([`ALIASES`]), so they run DataFusion's own code.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListBuilder, StringArray,
    StringBuilder, TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{ScalarUDF, Signature, Volatility};

use crate::formats::rowtime::{java_to_chrono, parse_with_format};

/// (DataFusion scalar function, ksqlDB's names for it).
pub(super) const ALIASES: &[(&str, &[&str])] = &[
    ("upper", &["ucase"]),
    ("lower", &["lcase"]),
    ("character_length", &["len"]),
    // AS_VALUE(k) copies a key column into the value: any expression over a
    // key column is a value column, and coalesce of one argument is the identity.
    ("coalesce", &["ifnull", "as_value"]),
    ("strpos", &["instr"]),
    ("string_to_array", &["split"]),
];

/// The functions defined here.
pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        super::array_udf(
            "unix_timestamp",
            Signature::variadic_any(Volatility::Volatile),
            DataType::Int64,
            unix_timestamp,
        ),
        ksql_udf("timestamptostring", DataType::Utf8, timestamp_to_string),
        ksql_udf("format_timestamp", DataType::Utf8, timestamp_to_string),
        ksql_udf("stringtotimestamp", DataType::Int64, string_to_timestamp),
        ksql_udf(
            "parse_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            parse_timestamp,
        ),
        ksql_udf("extractjsonfield", DataType::Utf8, extract_json_field),
        ksql_udf("is_json_string", DataType::Boolean, is_json_string),
        ksql_udf("json_array_length", DataType::Int32, json_array_length),
        ksql_udf(
            "json_keys",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            json_keys,
        ),
        ksql_udf("geo_distance", DataType::Float64, geo_distance),
    ]
    .into_iter()
    .chain(super::ksql_text::functions())
    .chain(super::ksql_more::functions())
    .collect()
}

pub(super) type Body = fn(&[ArrayRef], usize) -> DfResult<ArrayRef>;

/// A ksqlDB function over any arguments (each body converts and checks its
/// own), returning `returns`.
pub(super) fn ksql_udf(name: &'static str, returns: DataType, body: Body) -> ScalarUDF {
    super::array_udf(
        name,
        Signature::variadic_any(Volatility::Immutable),
        returns,
        body,
    )
}

pub(super) fn arity(name: &str, args: &[ArrayRef], allowed: &[usize]) -> DfResult<()> {
    if allowed.contains(&args.len()) {
        Ok(())
    } else {
        Err(datafusion::error::DataFusionError::Plan(format!(
            "{} takes {} arguments, got {}",
            name.to_uppercase(),
            allowed
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
            args.len()
        )))
    }
}

/// An argument cast to `to` as its concrete array type.
pub(super) fn cast_as<A: Array + Clone + 'static>(a: &ArrayRef, to: &DataType) -> DfResult<A> {
    let cast = cast(a, to)?;
    cast.as_any().downcast_ref::<A>().cloned().ok_or_else(|| {
        datafusion::error::DataFusionError::Internal(format!(
            "a cast to {to} gave {}",
            cast.data_type()
        ))
    })
}

pub(super) fn strings(a: &ArrayRef) -> DfResult<StringArray> {
    cast_as(a, &DataType::Utf8)
}

pub(super) fn longs(a: &ArrayRef) -> DfResult<Int64Array> {
    cast_as(a, &DataType::Int64)
}

/// Milliseconds since the epoch of a TIMESTAMP (any unit) or a BIGINT.
fn epoch_millis(a: &ArrayRef) -> DfResult<Int64Array> {
    match a.data_type() {
        DataType::Timestamp(_, _) => {
            let ms = cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            longs(&cast(&ms, &DataType::Int64)?)
        }
        _ => longs(a),
    }
}

/// `UNIX_TIMESTAMP()`: now, in epoch milliseconds; `UNIX_TIMESTAMP(ts)`: the
/// timestamp's.
fn unix_timestamp(args: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    arity("unix_timestamp", args, &[0, 1])?;
    match args.first() {
        None => {
            let now = chrono::Utc::now().timestamp_millis();
            Ok(Arc::new(Int64Array::from(vec![now; rows])))
        }
        Some(ts) => Ok(Arc::new(epoch_millis(ts)?)),
    }
}

/// `TIMESTAMPTOSTRING(epoch_ms, format)` and `FORMAT_TIMESTAMP(ts, format)`:
/// a Java `DateTimeFormatter` pattern, in UTC.
fn timestamp_to_string(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    arity("timestamptostring", args, &[2])?;
    let times = epoch_millis(&args[0])?;
    let formats = strings(&args[1])?;
    let out: StringArray = times
        .iter()
        .zip(formats.iter())
        .map(|(t, f)| {
            let time = chrono::DateTime::from_timestamp_millis(t?)?;
            let format = java_to_chrono(f?);
            let mut text = String::new();
            use std::fmt::Write;
            // A pattern chrono cannot render gives NULL, not a panic.
            write!(text, "{}", time.naive_utc().format(&format)).ok()?;
            Some(text)
        })
        .collect();
    Ok(Arc::new(out))
}

fn parse_all(args: &[ArrayRef]) -> DfResult<Int64Array> {
    arity("stringtotimestamp", args, &[2])?;
    let texts = strings(&args[0])?;
    let formats = strings(&args[1])?;
    Ok(texts
        .iter()
        .zip(formats.iter())
        .map(|(s, f)| parse_with_format(s?, f?))
        .collect())
}

/// `STRINGTOTIMESTAMP(text, format)`: epoch milliseconds, NULL when the text
/// does not match the format.
fn string_to_timestamp(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    Ok(Arc::new(parse_all(args)?))
}

/// `PARSE_TIMESTAMP(text, format)`: a TIMESTAMP.
fn parse_timestamp(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let millis = parse_all(args)?;
    Ok(Arc::new(TimestampMillisecondArray::from(
        millis.iter().collect::<Vec<_>>(),
    )))
}

/// `EXTRACTJSONFIELD(json, '$.a.b[0]')`: the value at a JSONPath as text (a
/// string's own text, other values as JSON); NULL when the text is no JSON or
/// nothing is at the path.
fn extract_json_field(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    arity("extractjsonfield", args, &[2])?;
    let texts = strings(&args[0])?;
    let paths = strings(&args[1])?;
    let out: StringArray = texts
        .iter()
        .zip(paths.iter())
        .map(|(text, path)| {
            let value: serde_json::Value = serde_json::from_str(text?).ok()?;
            let found = json_path(&value, path?)?;
            match found {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        })
        .collect();
    Ok(Arc::new(out))
}

fn json_values(args: &[ArrayRef], name: &str) -> DfResult<Vec<Option<serde_json::Value>>> {
    arity(name, args, &[1])?;
    Ok(strings(&args[0])?
        .iter()
        .map(|t| serde_json::from_str(t?).ok())
        .collect())
}

/// `IS_JSON_STRING(s)`: whether `s` is JSON text (NULL is not).
fn is_json_string(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let values = json_values(args, "is_json_string")?;
    Ok(Arc::new(BooleanArray::from(
        values.iter().map(|v| Some(v.is_some())).collect::<Vec<_>>(),
    )))
}

/// `JSON_ARRAY_LENGTH(s)`: the length of a JSON array, NULL for other text.
fn json_array_length(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let values = json_values(args, "json_array_length")?;
    Ok(Arc::new(Int32Array::from(
        values
            .iter()
            .map(|v| {
                v.as_ref()?
                    .as_array()
                    .and_then(|a| i32::try_from(a.len()).ok())
            })
            .collect::<Vec<_>>(),
    )))
}

/// `JSON_KEYS(s)`: a JSON object's keys, NULL for other text.
fn json_keys(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let values = json_values(args, "json_keys")?;
    let mut out = ListBuilder::new(StringBuilder::new());
    for v in &values {
        match v.as_ref().and_then(|v| v.as_object()) {
            Some(object) => {
                for key in object.keys() {
                    out.values().append_value(key);
                }
                out.append(true);
            }
            None => out.append(false),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `GEO_DISTANCE(lat1, lon1, lat2, lon2 [, 'KM' | 'MI'])`: the great-circle
/// distance, in kilometres unless miles are asked for (ksqlDB's radii).
fn geo_distance(args: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    arity("geo_distance", args, &[4, 5])?;
    let points = args[..4]
        .iter()
        .map(|a| cast_as::<Float64Array>(a, &DataType::Float64))
        .collect::<DfResult<Vec<_>>>()?;
    let units = match args.get(4) {
        Some(u) => strings(u)?,
        None => StringArray::from(vec![Some("KM"); rows]),
    };
    let out: Float64Array = (0..rows)
        .map(|i| {
            let v = |a: &Float64Array| (!a.is_null(i)).then(|| a.value(i));
            let (lat1, lon1, lat2, lon2) = (
                v(&points[0])?,
                v(&points[1])?,
                v(&points[2])?,
                v(&points[3])?,
            );
            let radius = match if units.is_null(i) {
                "KM"
            } else {
                units.value(i)
            } {
                u if u.eq_ignore_ascii_case("mi") || u.eq_ignore_ascii_case("miles") => 3959.0,
                u if u.eq_ignore_ascii_case("km") || u.eq_ignore_ascii_case("kilometers") => 6371.0,
                _ => return None,
            };
            let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
            let dp = (lat2 - lat1).to_radians();
            let dl = (lon2 - lon1).to_radians();
            let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
            Some(2.0 * radius * a.sqrt().asin())
        })
        .collect();
    Ok(Arc::new(out))
}

/// The value at a JSONPath of `$`, `.name`, `['name']` and `[index]` steps.
fn json_path<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut rest = path.trim().strip_prefix('$')?;
    let mut at = value;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            at = at.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let key = r[..end].trim();
            at = match key
                .strip_prefix(['\'', '"'])
                .and_then(|k| k.strip_suffix(['\'', '"']))
            {
                Some(name) => at.get(name)?,
                None => at.get(key.parse::<usize>().ok()?)?,
            };
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(at)
}

/// Text arrays in and out, for the function tests.
#[cfg(test)]
pub(super) mod test_support {
    use super::*;

    pub fn text(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    pub fn texts_of(a: ArrayRef) -> Vec<Option<String>> {
        strings(&a)
            .unwrap()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{text, texts_of};
    use super::*;

    #[test]
    fn json_fields_as_ksqldb_extracts_them() {
        let json = r#"{"log": {"cloud": "gcp", "app": "x", "n": 3, "tags": ["a", "b"]}}"#;
        let out = extract_json_field(
            &[
                text(&[
                    Some(json),
                    Some(json),
                    Some(json),
                    Some(json),
                    Some("not json"),
                    None,
                ]),
                text(&[
                    Some("$.log.cloud"),
                    Some("$.log.n"),
                    Some("$.log.tags[1]"),
                    Some("$['log'].missing"),
                    Some("$.a"),
                    Some("$.a"),
                ]),
            ],
            6,
        )
        .unwrap();
        assert_eq!(
            texts_of(out),
            vec![
                Some("gcp".into()),
                Some("3".into()),
                Some("b".into()),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn timestamps_format_and_parse_with_java_patterns() {
        // ksqlDB: TIMESTAMPTOSTRING(1712345678901, 'yyyy-MM-dd HH:mm:ss.SSS')
        let ms: ArrayRef = Arc::new(Int64Array::from(vec![Some(1_712_345_678_901), None]));
        let out = timestamp_to_string(
            &[ms, text(&[Some("yyyy-MM-dd HH:mm:ss.SSS"), Some("yyyy")])],
            2,
        )
        .unwrap();
        assert_eq!(
            texts_of(out),
            vec![Some("2024-04-05 19:34:38.901".into()), None]
        );

        let parsed = string_to_timestamp(
            &[
                text(&[Some("2024-04-05 19:34:38"), Some("nonsense"), None]),
                text(&[Some("yyyy-MM-dd HH:mm:ss"); 3]),
            ],
            3,
        )
        .unwrap();
        let parsed = longs(&parsed).unwrap();
        assert_eq!(
            parsed.iter().collect::<Vec<_>>(),
            vec![Some(1_712_345_678_000), None, None]
        );
    }

    #[test]
    fn json_helpers_and_geo_distance() {
        let json = text(&[
            Some(r#"{"a": 1, "b": [1, 2, 3]}"#),
            Some("[1, 2]"),
            Some("x"),
            None,
        ]);
        let valid = is_json_string(std::slice::from_ref(&json), 4).unwrap();
        assert_eq!(
            valid
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(true), Some(true), Some(false), Some(false)]
        );
        let lengths = longs(&json_array_length(std::slice::from_ref(&json), 4).unwrap()).unwrap();
        assert_eq!(
            lengths.iter().collect::<Vec<_>>(),
            vec![None, Some(2), None, None]
        );
        let keys = json_keys(&[json], 4).unwrap();
        let keys = keys
            .as_any()
            .downcast_ref::<arrow::array::ListArray>()
            .unwrap();
        assert_eq!(
            texts_of(keys.value(0)),
            vec![Some("a".into()), Some("b".into())]
        );
        assert!(keys.is_null(1));
        // Palo Alto to London by haversine on ksqlDB's radii (6,371 km, 3,959 mi).
        let point = |v: f64| Arc::new(Float64Array::from(vec![v, v])) as ArrayRef;
        let d = geo_distance(
            &[
                point(37.4439),
                point(-122.1663),
                point(51.5257),
                point(-0.1122),
                text(&[Some("KM"), Some("MI")]),
            ],
            2,
        )
        .unwrap();
        let d = d.as_any().downcast_ref::<Float64Array>().unwrap();
        assert!((d.value(0) - 8634.6).abs() < 1.0, "{}", d.value(0));
        assert!((d.value(1) - 5365.3).abs() < 1.0, "{}", d.value(1));
    }

    #[test]
    fn unix_timestamp_of_a_timestamp_and_now() {
        let ts: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![Some(1_000), None]));
        let out = longs(&unix_timestamp(&[ts], 2).unwrap()).unwrap();
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(1_000), None]);
        let before = chrono::Utc::now().timestamp_millis();
        let now = longs(&unix_timestamp(&[], 1).unwrap()).unwrap().value(0);
        assert!(now >= before);
    }
}
