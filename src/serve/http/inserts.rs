//! `POST /inserts-stream`: ksqlDB's streaming inserts. The body is a line
//! `{"target": "name"}`, then one JSON object per line; the answer is one
//! acknowledgement line per row (`{"status":"ok","seq":n}`), written as rows
//! are stored, until the body ends or a row fails (an error line, then the
//! end). Over HTTP/2 every acknowledgement is a DATA frame of its own.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::{stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::statements::{error_object, error_status};
use super::{bad_request, AppState, MAX_BODY_BYTES};
use crate::engine::JsonInsert;
use crate::error::SluiceError;

#[derive(Debug, Deserialize)]
struct InsertsRequest {
    target: String,
}

pub(super) async fn inserts_stream(State(state): State<AppState>, body: Body) -> Response {
    let mut lines = Lines::new(body.into_data_stream());
    let first = match lines.next_batch().await {
        Some(Ok(mut batch)) if !batch.is_empty() => {
            let first = batch.remove(0);
            lines.unread(batch);
            first
        }
        Some(Err(message)) => return bad_request(&message),
        _ => return bad_request("the body needs a first line {\"target\": \"stream name\"}"),
    };
    let req: InsertsRequest = match serde_json::from_slice(&first) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("invalid first line: {e}")),
    };
    let insert = match state.engine.json_insert(&req.target) {
        Ok(i) => i,
        Err(e) => {
            let status = error_status(&e);
            let text = format!("INSERTS INTO {}", req.target);
            return (status, axum::Json(error_object(&e, &text))).into_response();
        }
    };
    tracing::debug!(
        target = insert.relation().name.as_str(),
        "inserts stream opened"
    );
    let acks = Acks {
        state,
        lines,
        insert,
        seq: 0,
    };
    let body = stream::unfold(Some(acks), |acks| async move {
        let mut acks = acks?;
        let (chunks, more) = acks.next().await;
        Some((chunks, more.then_some(acks)))
    })
    .flat_map(|chunks| stream::iter(chunks.into_iter().map(Ok::<_, Infallible>)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/vnd.ksqlapi.delimited.v1")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

struct Acks {
    state: AppState,
    lines: Lines,
    insert: JsonInsert,
    /// The sequence number of the next row.
    seq: u64,
}

impl Acks {
    /// Stores the rows that have arrived; their acknowledgements, and whether
    /// the stream goes on.
    async fn next(&mut self) -> (Vec<Bytes>, bool) {
        let rows = match self.lines.next_batch().await {
            None => return (Vec::new(), false),
            Some(Ok(rows)) => rows,
            Some(Err(message)) => {
                return (vec![self.error(SluiceError::sql(message))], false);
            }
        };
        let slices: Vec<&[u8]> = rows.iter().map(|r| r.as_ref()).collect();
        let engine = Arc::clone(&self.state.engine);
        // A bad row fails the decoding of its batch: the rows before it are
        // stored and acknowledged, the bad one gets the error.
        let (good, bad) = match engine.decode_json(&mut self.insert, &slices) {
            Ok(batch) => (vec![batch], None),
            Err(_) => {
                let mut good = Vec::new();
                let mut failure = None;
                for row in &slices {
                    match engine.decode_json(&mut self.insert, &[row]) {
                        Ok(batch) => good.push(batch),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                (good, failure)
            }
        };
        let mut acks = Vec::with_capacity(slices.len());
        for batch in good {
            if let Err(e) = engine.insert_decoded(self.insert.relation(), &batch).await {
                acks.push(self.error(e));
                return (acks, false);
            }
            acks.extend((0..batch.num_rows()).map(|_| self.ok()));
        }
        match bad {
            Some(e) => {
                acks.push(self.error(e));
                (acks, false)
            }
            None => (acks, true),
        }
    }

    fn ok(&mut self) -> Bytes {
        let line = ack_line(&json!({"status": "ok", "seq": self.seq}));
        self.seq += 1;
        line
    }

    fn error(&mut self, e: SluiceError) -> Bytes {
        let internal = error_status(&e) == StatusCode::INTERNAL_SERVER_ERROR;
        ack_line(&json!({
            "@type": "generic_error",
            "status": "error",
            "seq": self.seq,
            "error_code": if internal { 50000 } else { 40000 },
            "message": e.message(),
            "sqlstate": e.sqlstate(),
        }))
    }
}

fn ack_line(value: &serde_json::Value) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Newline-delimited lines of a request body, as many as have arrived.
struct Lines {
    body: Option<BodyDataStream>,
    buffer: BytesMut,
    pending: Vec<Bytes>,
}

impl Lines {
    fn new(body: BodyDataStream) -> Self {
        Lines {
            body: Some(body),
            buffer: BytesMut::new(),
            pending: Vec::new(),
        }
    }

    fn unread(&mut self, lines: Vec<Bytes>) {
        self.pending = lines;
    }

    /// The complete non-blank lines received so far, waiting for at least
    /// one; the last line needs no newline. `None` at the end of the body.
    async fn next_batch(&mut self) -> Option<Result<Vec<Bytes>, String>> {
        if !self.pending.is_empty() {
            return Some(Ok(std::mem::take(&mut self.pending)));
        }
        loop {
            let mut lines = Vec::new();
            while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1).freeze();
                let line = line.slice(..end);
                if !line.trim_ascii().is_empty() {
                    lines.push(line);
                }
            }
            if !lines.is_empty() {
                return Some(Ok(lines));
            }
            if self.buffer.len() > MAX_BODY_BYTES {
                return Some(Err(format!("a line is longer than {MAX_BODY_BYTES} bytes")));
            }
            let body = self.body.as_mut()?;
            match body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    self.body = None;
                    return Some(Err(format!("reading the request body: {e}")));
                }
                None => {
                    self.body = None;
                    let rest = self.buffer.split().freeze();
                    if rest.trim_ascii().is_empty() {
                        return None;
                    }
                    return Some(Ok(vec![rest]));
                }
            }
        }
    }
}
