//! JSON response helpers.

use arrow::datatypes::SchemaRef;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::serve::arrow_convert::sql_type_name;

pub(super) fn json_response(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

pub(super) fn raw_json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Serializes `object` with one more field whose value is already-encoded
/// JSON (`raw`), so row data encoded by Arrow is not re-parsed (which would
/// also round large decimals through f64).
pub(super) fn with_raw_field(object: &Value, key: &str, raw: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(object).unwrap_or_else(|_| b"{}".to_vec());
    // `object` is a non-empty JSON object: replace its closing brace.
    out.pop();
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(&serde_json::to_vec(key).unwrap_or_default());
    out.push(b':');
    out.extend_from_slice(raw);
    out.push(b'}');
    out
}

pub(super) fn join_raw(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

pub(super) fn column_header(schema: &SchemaRef) -> (Vec<String>, Vec<String>) {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), sql_type_name(f.data_type())))
        .unzip()
}
