//! The HTTP API (axum): ksqlDB-like statement and query endpoints, server
//! info, health and Prometheus metrics.
//!
//! | Endpoint        | Body / answer |
//! |-----------------|---------------|
//! | `POST /ksql`    | `{"ksql": "...", "streamsProperties": {...}}` → JSON array, one entity per statement |
//! | `POST /query`   | `{"sql": "..."}` (or `"ksql"`; properties in `"streamsProperties"` or `"properties"`) → NDJSON stream |
//! | `GET /info`     | [`Engine::info`] |
//! | `GET /healthz`  | `{"status":"ok"}` |
//! | `GET /healthcheck` | ksqlDB's: `{"isHealthy", "details": {"metastore", "kafka"}}`, 503 when unhealthy |
//! | `GET /status`   | ksqlDB's `{"commandStatuses": {"stream/NAME/create": "SUCCESS", ...}}` |
//! | `GET /metrics`  | [`Engine::metrics_text`], `text/plain; version=0.0.4` |
//!
//! ## `POST /ksql` entities
//!
//! A statement without rows (DDL, INSERT, SET, TERMINATE, ...):
//!
//! ```json
//! {"@type": "currentStatus", "statementText": "CREATE STREAM ...",
//!  "commandStatus": {"status": "SUCCESS", "message": "Stream created"},
//!  "tag": "CREATE STREAM", "rowsAffected": null, "warnings": []}
//! ```
//!
//! A statement with a finite result (pull query, SHOW, DESCRIBE, EXPLAIN):
//!
//! ```json
//! {"@type": "rows", "statementText": "SHOW STREAMS",
//!  "columnNames": ["name", "topic"], "columnTypes": ["STRING", "STRING"],
//!  "rows": [["pageviews", "pageviews"], ["errors", "errors"]]}
//! ```
//!
//! Each row is an array of values in column order, encoded by `arrow_json`:
//! numbers, strings, `null`, ISO-8601 strings for timestamps, arrays for
//! lists and objects for structs. A push query (`EMIT CHANGES`) is refused:
//! it belongs on `/query`.
//!
//! ## `POST /query` stream
//!
//! `application/x-ndjson`, chunked. The first line is a header, then one JSON
//! array per row, written as rows arrive for push queries (one chunk per
//! batch):
//!
//! ```text
//! {"queryId":"transient_1","columnNames":["url","total"],"columnTypes":["STRING","BIGINT"]}
//! ["/checkout",3]
//! ["/home",7]
//! ```
//!
//! Pull queries get a `pull_<n>` id. If the query fails while streaming, the
//! last line is an error object (below) and the body ends. A client closing
//! the connection drops the stream, which stops the push query. A request
//! whose statement has no rows is answered like `/ksql`.
//!
//! ## Errors
//!
//! HTTP 400 (500 for internal errors) with
//!
//! ```json
//! {"@type": "statement_error", "error_code": 40001, "message": "...",
//!  "sqlstate": "42601", "line": 1, "column": 8, "hint": "...",
//!  "statementText": "...", "entities": [...]}
//! ```
//!
//! ## Authentication and TLS
//!
//! With a users file every endpoint but `/healthz` needs HTTP basic auth
//! (`Authorization: Basic …`, checked against the same SCRAM verifiers as
//! pgwire); without it the answer is 401 with `WWW-Authenticate` and
//! `{"@type": "generic_error", "error_code": 40100, ...}`, as ksqlDB answers.
//! With a certificate the listener speaks HTTPS only (ALPN h2 and http/1.1).
//!
//! `line`/`column`/`hint` are `null` when unknown; positions are relative to
//! the submitted text; `entities` holds the results of the statements that ran
//! before the failing one. Malformed requests get HTTP 400 with
//! `{"@type": "generic_error", "error_code": 40000, "message": ...}`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::{stream, Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::arrow_convert::{sql_type_name, write_json_rows, JsonRowLayout};
use super::security::users::Users;
use super::security::Security;
use super::split_statements;
use crate::engine::result::{BatchStream, StatementResult};
use crate::engine::session::Session;
use crate::engine::Engine;
use crate::error::SluiceError;

/// Builds the HTTP API. Streams never end because of a server shutdown; use
/// [`serve_http`] for that.
pub fn router(engine: Arc<Engine>) -> Router {
    // The sender is dropped at once: `wait_for_shutdown` treats a closed
    // channel as "never".
    let (_, rx) = watch::channel(false);
    router_with_shutdown(engine, rx)
}

fn router_with_shutdown(engine: Arc<Engine>, shutdown: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/ksql", post(ksql))
        .route("/query", post(query))
        .route("/info", get(info))
        .route("/healthz", get(healthz))
        .route("/healthcheck", get(healthcheck))
        .route("/status", get(command_statuses))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        .with_state(AppState { engine, shutdown })
}

/// Serves the HTTP API on an already-bound `listener` until `shutdown`
/// completes. Then it stops accepting, ends running `/query` streams (their
/// push queries stop) and waits for in-flight requests to finish.
pub async fn serve_http<F>(
    engine: Arc<Engine>,
    security: &Security,
    listener: TcpListener,
    shutdown: F,
) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = watch::channel(false);
    let max_connections = engine.config().max_connections;
    let mut app = router_with_shutdown(engine, rx);
    if let Some(users) = &security.users {
        app = app.layer(axum::middleware::from_fn_with_state(
            users.clone(),
            basic_auth,
        ));
    }
    let tls = match &security.tls {
        Some(tls) => Some(tls.acceptor(&[b"h2", b"http/1.1"])?),
        None => None,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its headers is dropped, not held open.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    // Typically EMFILE: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Streamed rows are small writes; don't let Nagle delay them.
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let permit = Arc::clone(&open).try_acquire_owned().ok();
        let service: Router = match permit {
            Some(_) => app.clone(),
            None => Router::new().fallback(too_many_connections),
        };
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let served = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(socket), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => {
                    // A client that never finishes its handshake is dropped like
                    // one that never finishes its headers.
                    let stream =
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(socket)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    // Running /query streams end, then in-flight requests finish.
    let _ = tx.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a client may take to send its request body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The largest request body (a script of statements).
const MAX_BODY_BYTES: usize = 16 << 20;

/// Lets a request through with the credentials of a user in the users file;
/// `/healthz` stays open for load balancers (it tells nothing but "up").
async fn basic_auth(
    State(users): State<Arc<Users>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/healthcheck") {
        return next.run(request).await;
    }
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials);
    if let Some((user, password)) = credentials {
        // PBKDF2 takes milliseconds on purpose: off the async workers.
        let ok = tokio::task::spawn_blocking(move || users.check_password(&user, &password))
            .await
            .unwrap_or(false);
        if ok {
            return next.run(request).await;
        }
    }
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        json!({
            "@type": "generic_error",
            "error_code": 40100,
            "message": "authentication required: HTTP basic auth with a user of the server's users file",
        }),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sluice\", charset=\"UTF-8\""),
    );
    response
}

/// `user` and `password` of an `Authorization: Basic …` header.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

async fn too_many_connections() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({
            "@type": "generic_error",
            "error_code": 50300,
            "message": "too many connections (--max-connections)",
        }),
    )
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    shutdown: watch::Receiver<bool>,
}

/// Completes when the server shuts down; never if the sender is gone.
async fn wait_for_shutdown(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct KsqlRequest {
    ksql: String,
    #[serde(default, rename = "streamsProperties")]
    properties: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct QueryRequest {
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    ksql: Option<String>,
    #[serde(default, rename = "streamsProperties", alias = "properties")]
    properties: Map<String, Value>,
}

/// Parses a JSON body regardless of its Content-Type (ksqlDB clients send
/// `application/vnd.ksql.v1+json`, curl users often send none).
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

fn bad_request(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({
            "@type": "generic_error",
            "error_code": 40000,
            "message": message,
        }),
    )
}

/// A session carrying the request's properties; non-string values (numbers,
/// booleans) are used in their JSON spelling.
fn session_for(properties: &Map<String, Value>) -> Session {
    Session::new().with_properties(properties.iter().map(|(k, v)| {
        let value = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (k.as_str(), value)
    }))
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

async fn ksql(State(state): State<AppState>, body: Bytes) -> Response {
    let req: KsqlRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(msg) => return bad_request(&msg),
    };
    let mut session = session_for(&req.properties);
    let results = state.engine.execute(&mut session, &req.ksql).await;
    statement_results(
        &req.ksql,
        results,
        "push queries (EMIT CHANGES) stream their rows: run them with POST /query",
    )
}

async fn query(State(state): State<AppState>, body: Bytes) -> Response {
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
fn pull_id() -> String {
    static PULL_IDS: AtomicU64 = AtomicU64::new(1);
    format!("pull_{}", PULL_IDS.fetch_add(1, Ordering::Relaxed))
}

async fn info(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, state.engine.info())
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

/// ksqlDB's health check: 200 when the catalog and the log answer, else 503.
async fn healthcheck(State(state): State<AppState>) -> Response {
    let (healthy, body) = state.engine.health().await;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body)
}

async fn command_statuses(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, state.engine.command_statuses())
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.engine.metrics_text(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

fn json_response(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

fn raw_json_response(status: StatusCode, body: Vec<u8>) -> Response {
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
fn with_raw_field(object: &Value, key: &str, raw: &[u8]) -> Vec<u8> {
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

fn join_raw(items: &[Vec<u8>]) -> Vec<u8> {
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

fn column_header(schema: &SchemaRef) -> (Vec<String>, Vec<String>) {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), sql_type_name(f.data_type())))
        .unzip()
}

/// The `/ksql` answer for a list of statement results: one entity per
/// statement, or an error carrying the entities of the statements before it.
fn statement_results(
    sql: &str,
    results: Vec<crate::error::Result<StatementResult>>,
    push_refusal: &str,
) -> Response {
    // Engine results come in statement order; name each with its text when
    // the split agrees with the engine's (a RUN SCRIPT may add results).
    let texts = split_statements(sql);
    let use_texts = results.len() <= texts.len();
    let text_of = |i: usize| -> &str {
        if use_texts {
            texts.get(i).copied().unwrap_or(sql)
        } else {
            sql.trim()
        }
    };
    let mut entities: Vec<Vec<u8>> = Vec::with_capacity(results.len());
    for (i, result) in results.into_iter().enumerate() {
        let text = text_of(i);
        match result {
            Ok(StatementResult::Done {
                tag,
                message,
                rows_affected,
            }) => {
                let entity = json!({
                    "@type": "currentStatus",
                    "statementText": text,
                    "commandStatus": {"status": "SUCCESS", "message": message},
                    "tag": tag,
                    "rowsAffected": rows_affected,
                    "warnings": [],
                });
                entities.push(serde_json::to_vec(&entity).unwrap_or_default());
            }
            Ok(StatementResult::Rows { schema, batches }) => {
                match rows_entity(text, &schema, &batches) {
                    Ok(entity) => entities.push(entity),
                    Err(e) => {
                        let error = error_object(&SluiceError::Arrow(e), text);
                        return error_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &error,
                            &entities,
                        );
                    }
                }
            }
            Ok(StatementResult::Stream { .. }) => {
                // Callers collect streamed results first (`StatementResult::collected`).
                let error = error_object(
                    &SluiceError::Internal("a streamed result reached a collected response".into()),
                    text,
                );
                return error_response(StatusCode::INTERNAL_SERVER_ERROR, &error, &entities);
            }
            Ok(StatementResult::Push { .. }) => {
                // Dropping the result here stops the push query.
                let error = json!({
                    "@type": "statement_error",
                    "error_code": 40001,
                    "message": push_refusal,
                    "sqlstate": "0A000",
                    "line": null,
                    "column": null,
                    "hint": "POST /query with {\"sql\": \"SELECT ... EMIT CHANGES\"} streams the rows as newline-delimited JSON",
                    "statementText": text,
                });
                return error_response(StatusCode::BAD_REQUEST, &error, &entities);
            }
            Err(e) => {
                let status = error_status(&e);
                return error_response(status, &error_object(&e, text), &entities);
            }
        }
    }
    raw_json_response(StatusCode::OK, join_raw(&entities))
}

/// A finite result as a `rows` entity.
fn rows_entity(
    text: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let (names, types) = column_header(schema);
    let mut rows = vec![b'['];
    let mut layout = JsonRowLayout::Comma { first: true };
    for batch in batches {
        write_json_rows(batch, &mut rows, &mut layout)?;
    }
    rows.push(b']');
    let head = json!({
        "@type": "rows",
        "statementText": text,
        "columnNames": names,
        "columnTypes": types,
    });
    Ok(with_raw_field(&head, "rows", &rows))
}

/// Internal failures are the server's fault (500); everything else — bad
/// SQL, unknown names, unsupported features, unreachable topics — is 400.
fn error_status(e: &SluiceError) -> StatusCode {
    if e.sqlstate().starts_with("XX") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn error_object(e: &SluiceError, text: &str) -> Value {
    let position = e.position();
    json!({
        "@type": "statement_error",
        "error_code": if error_status(e) == StatusCode::INTERNAL_SERVER_ERROR { 50000 } else { 40001 },
        "message": e.message(),
        "sqlstate": e.sqlstate(),
        "line": position.map(|p| p.line),
        "column": position.map(|p| p.column),
        "hint": e.hint(),
        "statementText": text,
    })
}

fn error_response(status: StatusCode, error: &Value, entities: &[Vec<u8>]) -> Response {
    raw_json_response(
        status,
        with_raw_field(error, "entities", &join_raw(entities)),
    )
}

/// Streams a result as newline-delimited JSON: a header line, then one line
/// per row, one HTTP chunk per batch. Ends early on server shutdown.
fn ndjson_response(
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
fn ndjson_rows(batches: BatchStream) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
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

fn error_line(e: &SluiceError) -> Bytes {
    let mut line = serde_json::to_vec(&error_object(e, "")).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use axum::body::to_bytes;

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
        let (status, body) = body_json(statement_results(sql, results, "no")).await;
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
        let (status, body) = body_json(statement_results(sql, results, "no")).await;
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
        let (status, body) = body_json(statement_results("x", internal, "no")).await;
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
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], "use /query");
    }

    #[tokio::test]
    async fn ndjson_stream_shape_and_error_line() {
        let (schema, batch) = sample();
        let batches: BatchStream = Box::pin(stream::iter(vec![
            Ok(batch.clone()),
            Ok(batch.slice(0, 0)),
            Ok(batch),
            Err(SluiceError::Internal("lost".into())),
        ]));
        let (_tx, rx) = watch::channel(false);
        let resp = ndjson_response("q7".into(), &schema, batches, rx);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/x-ndjson");
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
        assert_eq!(lines[5]["@type"], "statement_error");
        assert_eq!(lines[5]["message"], "lost");
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
    async fn ndjson_stream_stops_on_shutdown_and_drops_source() {
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (schema, _) = sample();
        let (tx, rx) = watch::channel(false);
        let resp = ndjson_response(
            "q".into(),
            &schema,
            Box::pin(SilentQuery(Arc::clone(&dropped))),
            rx,
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
        let r: QueryRequest =
            serde_json::from_str(r#"{"sql": "x", "streamsProperties": {}}"#).unwrap();
        assert_eq!(r.sql.as_deref(), Some("x"));
        assert!(parse_body::<KsqlRequest>(b"{").is_err());
        assert!(parse_body::<KsqlRequest>(b"{\"sql\": 1}").is_err());
    }
}
