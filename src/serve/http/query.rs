//! `POST /query`: a query's rows streamed as they come.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{stream, Stream, StreamExt};
use serde_json::json;
use tokio::sync::watch;

use super::json::column_header;
use super::statements::{error_object, statement_results};
use super::{bad_request, parse_body, session_for, wait_for_shutdown, AppState, QueryRequest};
use crate::engine::result::BatchStream;
use crate::engine::result::StatementResult;
use crate::error::SluiceError;
use crate::serve::arrow_convert::{write_json_rows, JsonRowLayout};

pub(super) async fn query(State(state): State<AppState>, body: Bytes) -> Response {
    let req: QueryRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(msg) => return bad_request(&msg),
    };
    let Some(sql) = req.sql.or(req.ksql) else {
        return bad_request("the request needs a \"sql\" (or \"ksql\") field");
    };
    // Pull results stream as NDJSON while the client reads them; dropping the
    // response (the client left) stops the query.
    let mut session = session_for(&req.properties).streaming();
    let mut results = state.engine.execute(&mut session, &sql).await;
    if results.len() == 1 {
        match results.pop() {
            Some(Ok(StatementResult::Rows { schema, batches })) => {
                let batches: BatchStream = Box::pin(stream::iter(batches.into_iter().map(Ok)));
                return ndjson_response(pull_id(), &schema, batches, state.shutdown.clone());
            }
            Some(Ok(StatementResult::Stream { schema, stream })) => {
                return ndjson_response(pull_id(), &schema, stream, state.shutdown.clone());
            }
            Some(Ok(StatementResult::Push {
                query_id,
                schema,
                stream,
            })) => return ndjson_response(query_id, &schema, stream, state.shutdown.clone()),
            Some(other) => results.push(other),
            None => {}
        }
    }
    // Several statements answer as one JSON document: streamed results are
    // collected (bounded) first.
    let limit = state.engine.config().max_query_memory;
    let mut collected = Vec::with_capacity(results.len());
    for result in results {
        collected.push(match result {
            Ok(r) => r.collected(limit).await,
            Err(e) => Err(e),
        });
    }
    statement_results(
        &sql,
        collected,
        "a push query (EMIT CHANGES) must be the only statement of a POST /query request",
    )
}

/// A name for a pull query's NDJSON header, as push queries have their id.
pub(super) fn pull_id() -> String {
    static PULL_IDS: AtomicU64 = AtomicU64::new(1);
    format!("pull_{}", PULL_IDS.fetch_add(1, Ordering::Relaxed))
}

/// per row, one HTTP chunk per batch. Ends early on server shutdown.
/// Streams a result as newline-delimited JSON: a header line, then one line
/// per row, one HTTP chunk per batch. Ends early on server shutdown.
pub(super) fn ndjson_response(
    query_id: String,
    schema: &SchemaRef,
    batches: BatchStream,
    shutdown: watch::Receiver<bool>,
) -> Response {
    let (names, types) = column_header(schema);
    let header = json!({
        "queryId": query_id,
        "columnNames": names,
        "columnTypes": types,
    });
    let mut head = serde_json::to_vec(&header).unwrap_or_default();
    head.push(b'\n');
    let body = stream::once(async move { Ok::<_, Infallible>(Bytes::from(head)) })
        .chain(ndjson_rows(batches))
        .take_until(wait_for_shutdown(shutdown));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        // Proxies (nginx) must not buffer a live stream.
        .header("X-Accel-Buffering", "no")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The rows of a batch stream as NDJSON chunks. An error becomes a final
/// error line. Dropping this stream drops `batches`, which stops the query.
pub(super) fn ndjson_rows(
    batches: BatchStream,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    stream::unfold(Some(batches), |state| async move {
        let mut batches = state?;
        loop {
            match batches.next().await? {
                Ok(batch) if batch.num_rows() == 0 => continue,
                Ok(batch) => {
                    let mut out = Vec::with_capacity(batch.num_rows() * 32);
                    return match write_json_rows(&batch, &mut out, &mut JsonRowLayout::Lines) {
                        Ok(()) => Some((Ok(Bytes::from(out)), Some(batches))),
                        Err(e) => Some((Ok(error_line(&SluiceError::Arrow(e))), None)),
                    };
                }
                Err(e) => return Some((Ok(error_line(&e)), None)),
            }
        }
    })
}

pub(super) fn error_line(e: &SluiceError) -> Bytes {
    let mut line = serde_json::to_vec(&error_object(e, "")).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}
