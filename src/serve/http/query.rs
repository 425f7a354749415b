//! `POST /query`: a query's rows streamed as they come.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use futures::stream;
use serde::Deserialize;

use super::row_stream::{row_stream_response, Shape, StreamOptions};
use super::statements::statement_results;
use super::{bad_request, parse_body, session_for, wait_for_shutdown, AppState, QueryRequest};
use crate::engine::result::{BatchStream, StatementResult};

/// `POST /query`: ksqlDB's v1 answer (or the delimited one when `Accept`
/// asks for it, as Sluice answered before).
pub(super) async fn query(
    State(state): State<AppState>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shape = Shape::from_accept(accept(&headers), Shape::V1);
    run_query(state, version, shape, body).await
}

/// `POST /query-stream`: ksqlDB's v2 answer, delimited unless `Accept` asks
/// for `application/json`.
pub(super) async fn query_stream(
    State(state): State<AppState>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shape = Shape::from_accept(accept(&headers), Shape::Delimited);
    run_query(state, version, shape, body).await
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

async fn run_query(state: AppState, version: Version, shape: Shape, body: Bytes) -> Response {
    let req: QueryRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(msg) => return bad_request(&msg),
    };
    let Some(sql) = req.sql.or(req.ksql) else {
        return bad_request("the request needs a \"sql\" (or \"ksql\") field");
    };
    // Pull results stream while the client reads them; dropping the response
    // (the client left) stops the query.
    let mut session = session_for(&req.properties).streaming();
    let mut results = state.engine.execute(&mut session, &sql).await;
    let one_row_per_chunk = version == Version::HTTP_2;
    if results.len() == 1 {
        let options = |stop, guard| StreamOptions {
            shape,
            one_row_per_chunk,
            stop,
            _guard: guard,
        };
        let shutdown = || Box::pin(wait_for_shutdown(state.shutdown.clone()));
        match results.pop() {
            Some(Ok(StatementResult::Rows { schema, batches })) => {
                let batches: BatchStream = Box::pin(stream::iter(batches.into_iter().map(Ok)));
                return row_stream_response(
                    &pull_id(),
                    &schema,
                    batches,
                    options(shutdown(), None),
                );
            }
            Some(Ok(StatementResult::Stream { schema, stream })) => {
                return row_stream_response(&pull_id(), &schema, stream, options(shutdown(), None));
            }
            Some(Ok(StatementResult::Push {
                query_id,
                schema,
                stream,
            })) => {
                // `/close-query` and TERMINATE end the stream itself.
                return row_stream_response(&query_id, &schema, stream, options(shutdown(), None));
            }
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
        "a push query (EMIT CHANGES) must be the only statement of a query request",
        None,
    )
}

/// A name for a pull query's header, as push queries have their id.
pub(super) fn pull_id() -> String {
    static PULL_IDS: AtomicU64 = AtomicU64::new(1);
    format!("pull_{}", PULL_IDS.fetch_add(1, Ordering::Relaxed))
}

#[derive(Debug, Deserialize)]
struct CloseQueryRequest {
    #[serde(rename = "queryId")]
    query_id: String,
}

/// `POST /close-query`: ends a push query streaming on `/query` or
/// `/query-stream` (its response ends as if the rows had).
pub(super) async fn close_query(State(state): State<AppState>, body: Bytes) -> Response {
    let req: CloseQueryRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(msg) => return bad_request(&msg),
    };
    if state.engine.close_push_query(&req.query_id) {
        StatusCode::OK.into_response()
    } else {
        bad_request(&format!("No query with id {}", req.query_id))
    }
}
