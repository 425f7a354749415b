//! A query's rows as a streamed HTTP body, in the layouts ksqlDB clients read.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{stream, Stream, StreamExt};
use serde_json::{json, Value};

use super::json::column_header;
use super::statements::error_object;
use crate::engine::result::BatchStream;
use crate::error::SluiceError;
use crate::serve::arrow_convert::{write_json_rows, JsonRowLayout};

/// How a streamed answer is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// ksqlDB's v2 `application/vnd.ksqlapi.delimited.v1` (Sluice's NDJSON):
    /// a header object line, then one JSON array line per row.
    Delimited,
    /// ksqlDB's v2 `application/json`: one JSON array holding the header
    /// object, then one array per row.
    Array,
    /// ksqlDB's v1 `/query`: a JSON array of `{"header": …}`, then
    /// `{"row": {"columns": […]}}` per row, then `{"finalMessage": …}`, one
    /// element per line, each line but the last ending in `,`.
    V1,
}

/// How often an idle v1 stream sends a newline: ksqlDB does, and clients
/// (ksql-python) time out a silent socket.
const V1_KEEP_ALIVE: Duration = Duration::from_secs(1);

impl Shape {
    /// The shape an `Accept` header asks for, `default` when it names none.
    pub(super) fn from_accept(accept: Option<&str>, default: Shape) -> Shape {
        let Some(accept) = accept else {
            return default;
        };
        if accept.contains("application/vnd.ksqlapi.delimited.v1")
            || accept.contains("application/x-ndjson")
        {
            Shape::Delimited
        } else if accept.contains("application/vnd.ksql.v1+json") {
            Shape::V1
        } else if accept.contains("application/json") {
            Shape::Array
        } else {
            default
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Shape::Delimited => "application/vnd.ksqlapi.delimited.v1",
            Shape::Array | Shape::V1 => "application/json",
        }
    }

    fn head(self, query_id: &str, schema: &SchemaRef) -> Vec<u8> {
        let (names, types) = column_header(schema);
        let header = json!({
            "queryId": query_id,
            "columnNames": names,
            "columnTypes": types,
        });
        let mut out = Vec::new();
        match self {
            Shape::Delimited => {
                out.extend_from_slice(&serde_json::to_vec(&header).unwrap_or_default());
                out.push(b'\n');
            }
            Shape::Array => {
                out.push(b'[');
                out.extend_from_slice(&serde_json::to_vec(&header).unwrap_or_default());
            }
            Shape::V1 => {
                let header =
                    json!({"header": {"queryId": query_id, "schema": v1_schema(&names, &types)}});
                out.push(b'[');
                out.extend_from_slice(&serde_json::to_vec(&header).unwrap_or_default());
                out.extend_from_slice(b",\n");
            }
        }
        out
    }

    /// A batch's rows; over HTTP/2 delimited rows go one per chunk, because
    /// clients (ksqldb-js) parse every DATA frame as one JSON document.
    fn rows(self, batch: &RecordBatch, one_per_chunk: bool) -> Result<Vec<Bytes>, SluiceError> {
        let mut out = Vec::with_capacity(batch.num_rows() * 32);
        let mut layout = match self {
            Shape::Delimited => JsonRowLayout::Lines,
            Shape::Array => JsonRowLayout::Elements,
            Shape::V1 => JsonRowLayout::V1Rows,
        };
        write_json_rows(batch, &mut out, &mut layout).map_err(SluiceError::Arrow)?;
        let out = Bytes::from(out);
        if !(one_per_chunk && self == Shape::Delimited) {
            return Ok(vec![out]);
        }
        // JSON text never holds a raw newline: every `\n` ends a row.
        let mut rows = Vec::with_capacity(batch.num_rows());
        let mut start = 0;
        for (i, b) in out.iter().enumerate() {
            if *b == b'\n' {
                rows.push(out.slice(start..=i));
                start = i + 1;
            }
        }
        Ok(rows)
    }

    /// What ends a stream that ran out of rows (a pull query, a LIMIT) or was
    /// closed (`/close-query`, shutdown).
    fn tail(self) -> Option<Bytes> {
        match self {
            Shape::Delimited => None,
            Shape::Array => Some(Bytes::from_static(b"]")),
            Shape::V1 => Some(Bytes::from_static(
                b"{\"finalMessage\":\"Query Completed\"}]\n",
            )),
        }
    }

    /// What ends a stream that failed: ksqlDB's error object, and for the
    /// JSON array shapes the closing bracket, so the body stays one document.
    fn failure(self, e: &SluiceError) -> Bytes {
        let error = stream_error(e);
        let mut out = Vec::new();
        match self {
            Shape::Delimited => {
                out.extend_from_slice(&serde_json::to_vec(&error).unwrap_or_default());
                out.push(b'\n');
            }
            Shape::Array => {
                out.push(b',');
                out.extend_from_slice(&serde_json::to_vec(&error).unwrap_or_default());
                out.push(b']');
            }
            Shape::V1 => {
                let message = json!({"errorMessage": error});
                out.extend_from_slice(&serde_json::to_vec(&message).unwrap_or_default());
                out.extend_from_slice(b"]\n");
            }
        }
        Bytes::from(out)
    }
}

/// A failure after the rows started: ksqlDB's generic error (the status line
/// is long gone), with Sluice's SQLSTATE and hint.
fn stream_error(e: &SluiceError) -> Value {
    let mut error = error_object(e, "");
    if let Some(o) = error.as_object_mut() {
        o.insert("@type".into(), json!("generic_error"));
        o.remove("statementText");
    }
    error
}

/// ksqlDB's v1 schema string: `` `NAME` STRING, `AGE` INTEGER ``.
fn v1_schema(names: &[String], types: &[String]) -> String {
    names
        .iter()
        .zip(types)
        .map(|(n, t)| format!("`{}` {t}", n.replace('`', "``")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Something to keep alive as long as the body (a `/close-query` handle).
pub(super) type Guard = Box<dyn Send + Sync>;

/// How a body streams.
pub(super) struct StreamOptions {
    pub shape: Shape,
    /// HTTP/2: one row per DATA frame (delimited shape).
    pub one_row_per_chunk: bool,
    /// Ends the rows early (server shutdown, `/close-query`); the JSON shapes
    /// are then closed as if the rows had ended.
    pub stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Held until the body ends (dropped with it).
    pub _guard: Option<Guard>,
}

/// A response streaming `batches` until the rows end, the query fails or
/// `options.stop` completes. Dropping the body (the client left) drops
/// `batches`, which stops the query.
pub(super) fn row_stream_response(
    query_id: &str,
    schema: &SchemaRef,
    batches: BatchStream,
    options: StreamOptions,
) -> Response {
    let shape = options.shape;
    let head = Bytes::from(shape.head(query_id, schema));
    let body = stream::once(async move { Ok::<_, Infallible>(head) })
        .chain(rows(batches, options).flat_map(|chunks| stream::iter(chunks.into_iter().map(Ok))));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, shape.content_type())
        // Proxies (nginx) must not buffer a live stream.
        .header("X-Accel-Buffering", "no")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

struct Rows {
    batches: BatchStream,
    options: StreamOptions,
}

fn rows(batches: BatchStream, options: StreamOptions) -> impl Stream<Item = Vec<Bytes>> + Send {
    stream::unfold(Some(Rows { batches, options }), |state| async move {
        let mut st = state?;
        let shape = st.options.shape;
        let keep_alive = shape == Shape::V1;
        loop {
            let next = tokio::select! {
                _ = &mut st.options.stop => None,
                next = st.batches.next() => next,
                _ = tokio::time::sleep(V1_KEEP_ALIVE), if keep_alive => {
                    return Some((vec![Bytes::from_static(b"\n")], Some(st)));
                }
            };
            return match next {
                None => shape.tail().map(|t| (vec![t], None)),
                Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                Some(Ok(batch)) => match shape.rows(&batch, st.options.one_row_per_chunk) {
                    Ok(chunks) => Some((chunks, Some(st))),
                    Err(e) => Some((vec![shape.failure(&e)], None)),
                },
                Some(Err(e)) => Some((vec![shape.failure(&e)], None)),
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_schema_quotes_names() {
        assert_eq!(
            v1_schema(
                &["name".into(), "a`b".into()],
                &["STRING".into(), "BIGINT".into()]
            ),
            "`name` STRING, `a``b` BIGINT"
        );
    }
}
