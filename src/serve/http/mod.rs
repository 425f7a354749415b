//! The HTTP API (axum): ksqlDB's REST protocol (statements, queries,
//! inserts), server info, health and Prometheus metrics. One port serves
//! HTTP/1.1 and HTTP/2 (cleartext with prior knowledge, or TLS with ALPN).
//!
//! | Endpoint        | Body / answer |
//! |-----------------|---------------|
//! | `POST /ksql`    | `{"ksql": "...", "streamsProperties": {...}}` → JSON array, one entity per statement ([`statements`], typed ones in [`entities`]) |
//! | `POST /query`   | ksqlDB's v1: `{"ksql": "..."}` (or `"sql"`) → a streamed JSON array of `{"header"}`, `{"row"}`s, `{"finalMessage"}` ([`row_stream`]) |
//! | `POST /query-stream` | ksqlDB's v2: `{"sql": "...", "properties": {...}}` → a header line, then one JSON array per row (or one JSON array for `Accept: application/json`) |
//! | `POST /close-query` | `{"queryId": "transient_n"}` → ends that push query's stream |
//! | `POST /inserts-stream` | `{"target": "s"}` and JSON rows, one per line → one acknowledgement line per row ([`inserts`]) |
//! | `GET /info`     | [`Engine::info`] |
//! | `GET /healthz`  | `{"status":"ok"}` |
//! | `GET /healthcheck` | ksqlDB's: `{"isHealthy", "details": {"metastore", "kafka"}}`, 503 when unhealthy |
//! | `GET /status`   | ksqlDB's `{"commandStatuses": {"stream/NAME/create": "SUCCESS", ...}}`; `/status/{id}` one of them |
//! | `GET /metrics`  | [`Engine::metrics_text`], `text/plain; version=0.0.4` |
//!
//! docs/sql-reference.md ("HTTP API") gives every shape with examples.
//!
//! Streams: a client closing the connection drops the stream, which stops
//! its query; server shutdown ends running streams; a failure after the
//! rows started is a last error element and the end of the body.
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
//! `line`/`column`/`hint` are `null` when unknown; positions are relative to
//! the submitted text; `entities` holds the results of the statements that ran
//! before the failing one. Malformed requests get HTTP 400 with
//! `{"@type": "generic_error", "error_code": 40000, "message": ...}`.
//!
//! ## Authentication and TLS
//!
//! With a users file every endpoint but `/healthz` and `/healthcheck` needs
//! HTTP basic auth (`Authorization: Basic …`, checked against the same SCRAM
//! verifiers as pgwire); without it the answer is 401 with `WWW-Authenticate`
//! and `{"@type": "generic_error", "error_code": 40100, ...}`, as ksqlDB
//! answers. With a certificate the listener speaks HTTPS only.

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::security::Security;
use crate::engine::session::Session;
use crate::engine::Engine;
use auth::basic_auth;
use inserts::inserts_stream;
use json::json_response;
use query::{close_query, query, query_stream};
use statements::ksql;

mod auth;
mod entities;
mod inserts;
mod json;
mod query;
mod row_stream;
mod statements;
#[cfg(test)]
mod tests;

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
        .route("/query-stream", post(query_stream))
        .route("/close-query", post(close_query))
        .route("/info", get(info))
        .route("/healthz", get(healthz))
        .route("/healthcheck", get(healthcheck))
        .route("/status", get(command_statuses))
        .route("/status/{*command}", get(command_status))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        // An inserts stream is open as long as its client has rows to send:
        // no body size or read timeout (its lines are bounded one by one).
        .route("/inserts-stream", post(inserts_stream))
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
pub(super) const MAX_BODY_BYTES: usize = 16 << 20;

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

/// ksqlDB's `GET /status/{type}/{entity}/{action}`: one command's status.
async fn command_status(
    State(state): State<AppState>,
    axum::extract::Path(command): axum::extract::Path<String>,
) -> Response {
    let statuses = state.engine.command_statuses();
    match statuses["commandStatuses"].get(&command) {
        Some(status) => json_response(StatusCode::OK, json!({"status": status, "message": ""})),
        None => json_response(
            StatusCode::NOT_FOUND,
            json!({
                "@type": "generic_error",
                "error_code": 40400,
                "message": format!("command {command} not found"),
            }),
        ),
    }
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
