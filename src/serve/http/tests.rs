//! Shapes of the HTTP answers.

use super::json::*;
use super::row_stream::*;
use super::statements::*;
use super::*;
use crate::engine::result::{BatchStream, StatementResult};
use crate::error::SluiceError;
use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use axum::body::to_bytes;
use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures::{stream, Stream, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

fn sample() -> (SchemaRef, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("url", DataType::Utf8, true),
        Field::new("total", DataType::Int64, true),
        Field::new("ratio", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec![Some("/a"), None])) as ArrayRef,
            Arc::new(Int64Array::from(vec![3, 4])),
            Arc::new(Float64Array::from(vec![0.5, 1.0])),
        ],
    )
    .unwrap();
    (schema, batch)
}

async fn body_json(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn ksql_entities_shape() {
    let (schema, batch) = sample();
    let sql = "SET 'auto.offset.reset'='earliest'; SELECT * FROM t;";
    let results = vec![
        Ok(StatementResult::Done {
            tag: "SET".into(),
            message: "auto.offset.reset = earliest".into(),
            rows_affected: None,
        }),
        Ok(StatementResult::Rows {
            schema,
            batches: vec![batch.clone(), batch],
        }),
    ];
    let (status, body) = body_json(statement_results(sql, results, "no", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([
            {
                "@type": "currentStatus",
                "statementText": "SET 'auto.offset.reset'='earliest'",
                "commandStatus": {"status": "SUCCESS", "message": "auto.offset.reset = earliest"},
                "tag": "SET",
                "rowsAffected": null,
                "warnings": [],
            },
            {
                "@type": "rows",
                "statementText": "SELECT * FROM t",
                "columnNames": ["url", "total", "ratio"],
                "columnTypes": ["STRING", "BIGINT", "DOUBLE"],
                "rows": [["/a", 3, 0.5], [null, 4, 1.0], ["/a", 3, 0.5], [null, 4, 1.0]],
            }
        ])
    );
}

#[tokio::test]
async fn ksql_error_shape() {
    let sql = "CREATE STREAM s (x INT) WITH (kafka_topic='s');\nSELEC 1;";
    let results = vec![
        Ok(StatementResult::Done {
            tag: "CREATE STREAM".into(),
            message: "Stream created".into(),
            rows_affected: None,
        }),
        Err(SluiceError::sql_at(
            "syntax error",
            Some(crate::error::SqlPosition { line: 2, column: 1 }),
            Some("check the keyword".into()),
        )),
    ];
    let (status, body) = body_json(statement_results(sql, results, "no", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["@type"], "statement_error");
    assert_eq!(body["error_code"], 40001);
    assert_eq!(body["message"], "syntax error");
    assert_eq!(body["sqlstate"], "42601");
    assert_eq!(body["line"], 2);
    assert_eq!(body["column"], 1);
    assert_eq!(body["hint"], "check the keyword");
    assert_eq!(body["statementText"], "SELEC 1");
    assert_eq!(body["entities"][0]["@type"], "currentStatus");

    let internal = vec![Err(SluiceError::Internal("boom".into()))];
    let (status, body) = body_json(statement_results("x", internal, "no", None)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error_code"], 50000);
    assert_eq!(body["line"], Value::Null);
    assert_eq!(body["entities"], json!([]));
}

#[tokio::test]
async fn push_result_is_refused_on_ksql() {
    let (schema, _) = sample();
    let results = vec![Ok(StatementResult::Push {
        query_id: "q1".into(),
        schema,
        stream: Box::pin(stream::pending()),
    })];
    let (status, body) = body_json(statement_results(
        "SELECT 1 EMIT CHANGES",
        results,
        "use /query",
        None,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "use /query");
}

fn options(shape: Shape, one_row_per_chunk: bool) -> StreamOptions {
    StreamOptions {
        shape,
        one_row_per_chunk,
        stop: Box::pin(std::future::pending()),
        _guard: None,
    }
}

fn failing_batches(batch: &RecordBatch) -> BatchStream {
    Box::pin(stream::iter(vec![
        Ok(batch.clone()),
        Ok(batch.slice(0, 0)),
        Ok(batch.clone()),
        Err(SluiceError::Internal("lost".into())),
    ]))
}

fn ok_batches(batch: &RecordBatch) -> BatchStream {
    Box::pin(stream::iter(vec![Ok(batch.clone()), Ok(batch.clone())]))
}

#[tokio::test]
async fn delimited_stream_shape_and_error_line() {
    let (schema, batch) = sample();
    let resp = row_stream_response(
        "q7",
        &schema,
        failing_batches(&batch),
        options(Shape::Delimited, false),
    );
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/vnd.ksqlapi.delimited.v1"
    );
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let lines: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"queryId": "q7", "columnNames": ["url", "total", "ratio"], "columnTypes": ["STRING", "BIGINT", "DOUBLE"]})
    );
    assert_eq!(lines[1], json!(["/a", 3, 0.5]));
    assert_eq!(lines[2], json!([null, 4, 1.0]));
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5]["@type"], "generic_error");
    assert_eq!(lines[5]["error_code"], 50000);
    assert_eq!(lines[5]["message"], "lost");
}

#[tokio::test]
async fn http2_delimited_rows_come_one_per_chunk() {
    let (schema, batch) = sample();
    let resp = row_stream_response(
        "q",
        &schema,
        ok_batches(&batch),
        options(Shape::Delimited, true),
    );
    let chunks: Vec<Bytes> = resp
        .into_body()
        .into_data_stream()
        .map(|c| c.unwrap())
        .collect()
        .await;
    // The header, then every row in a chunk of its own.
    assert_eq!(chunks.len(), 5);
    for chunk in &chunks {
        serde_json::from_slice::<Value>(chunk).expect("each chunk is one JSON document");
    }
    assert_eq!(&chunks[4][..], b"[null,4,1.0]\n");
}

#[tokio::test]
async fn json_array_shape_is_one_document() {
    let (schema, batch) = sample();
    let resp = row_stream_response(
        "q",
        &schema,
        ok_batches(&batch),
        options(Shape::Array, false),
    );
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let (_, body) = body_json(resp).await;
    assert_eq!(
        body,
        json!([
            {"queryId": "q", "columnNames": ["url", "total", "ratio"], "columnTypes": ["STRING", "BIGINT", "DOUBLE"]},
            ["/a", 3, 0.5], [null, 4, 1.0], ["/a", 3, 0.5], [null, 4, 1.0]
        ])
    );
    let resp = row_stream_response(
        "q",
        &schema,
        failing_batches(&batch),
        options(Shape::Array, false),
    );
    let (_, body) = body_json(resp).await;
    let items = body.as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(items[5]["message"], "lost");
}

#[tokio::test]
async fn v1_shape_has_one_element_per_line() {
    let (schema, batch) = sample();
    let resp = row_stream_response("q", &schema, ok_batches(&batch), options(Shape::V1, false));
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // ksql-python reads rows line by line: every element but the last ends
    // in a comma, the last in `]`.
    assert_eq!(
        lines[0],
        r#"[{"header":{"queryId":"q","schema":"`url` STRING, `total` BIGINT, `ratio` DOUBLE"}},"#
    );
    assert_eq!(lines[1], r#"{"row":{"columns":["/a",3,0.5]}},"#);
    assert_eq!(lines[5], r#"{"finalMessage":"Query Completed"}]"#);
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 6);

    let resp = row_stream_response(
        "q",
        &schema,
        failing_batches(&batch),
        options(Shape::V1, false),
    );
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let parsed: Value = serde_json::from_slice(&bytes).unwrap();
    let items = parsed.as_array().unwrap();
    assert_eq!(items[5]["errorMessage"]["message"], "lost");
    assert_eq!(items[5]["errorMessage"]["@type"], "generic_error");
}

#[test]
fn accept_header_picks_the_shape() {
    assert_eq!(Shape::from_accept(None, Shape::V1), Shape::V1);
    assert_eq!(
        Shape::from_accept(Some("*/*"), Shape::Delimited),
        Shape::Delimited
    );
    // axios' default.
    assert_eq!(
        Shape::from_accept(Some("application/json, text/plain, */*"), Shape::Delimited),
        Shape::Array
    );
    assert_eq!(
        Shape::from_accept(Some("application/vnd.ksql.v1+json"), Shape::Delimited),
        Shape::V1
    );
    assert_eq!(
        Shape::from_accept(Some("application/x-ndjson"), Shape::V1),
        Shape::Delimited
    );
}

/// A push query that never produces a row; records when it is dropped.
struct SilentQuery(Arc<std::sync::atomic::AtomicBool>);

impl Stream for SilentQuery {
    type Item = crate::error::Result<RecordBatch>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Pending
    }
}

impl Drop for SilentQuery {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn row_stream_stops_on_shutdown_and_drops_source() {
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (schema, _) = sample();
    let (tx, rx) = watch::channel(false);
    let mut opts = options(Shape::Delimited, false);
    opts.stop = Box::pin(wait_for_shutdown(rx));
    let resp = row_stream_response(
        "q",
        &schema,
        Box::pin(SilentQuery(Arc::clone(&dropped))),
        opts,
    );
    let mut body = resp.into_body().into_data_stream();
    let header = body.next().await.unwrap().unwrap();
    assert!(header.ends_with(b"\n"));
    tx.send(true).unwrap();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("stream ended");
    assert!(end.is_none());
    drop(body);
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn raw_field_splicing() {
    let v = json!({"a": 1});
    assert_eq!(
        with_raw_field(&v, "rows", b"[[1]]"),
        br#"{"a":1,"rows":[[1]]}"#.to_vec()
    );
    assert_eq!(
        join_raw(&[b"1".to_vec(), b"{}".to_vec()]),
        b"[1,{}]".to_vec()
    );
    assert_eq!(join_raw(&[]), b"[]".to_vec());
}

#[test]
fn request_parsing() {
    let r: QueryRequest = serde_json::from_str(
        r#"{"ksql": "SELECT 1", "properties": {"auto.offset.reset": "earliest", "n": 5}}"#,
    )
    .unwrap();
    assert_eq!(r.ksql.as_deref(), Some("SELECT 1"));
    let s = session_for(&r.properties);
    assert!(s.offset_reset_earliest());
    assert_eq!(s.properties.get("n").map(String::as_str), Some("5"));
    let r: QueryRequest = serde_json::from_str(r#"{"sql": "x", "streamsProperties": {}}"#).unwrap();
    assert_eq!(r.sql.as_deref(), Some("x"));
    assert!(parse_body::<KsqlRequest>(b"{").is_err());
    assert!(parse_body::<KsqlRequest>(b"{\"sql\": 1}").is_err());
}
