//! `POST /ksql`: statements answered with one JSON entity each.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::entities::typed_entity;
use super::json::{column_header, join_raw, raw_json_response, with_raw_field};
use super::{bad_request, parse_body, session_for, AppState, KsqlRequest};
use crate::engine::result::StatementResult;
use crate::engine::Engine;
use crate::error::SluiceError;
use crate::serve::arrow_convert::{write_json_rows, JsonRowLayout};
use crate::serve::split_statements;
use crate::sql::{parse_script, Statement};

pub(super) async fn ksql(State(state): State<AppState>, body: Bytes) -> Response {
    let req: KsqlRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(msg) => return bad_request(&msg),
    };
    let mut session = session_for(&req.properties);
    let results = state.engine.execute(&mut session, &req.ksql).await;
    // The statements again, to give ksqlDB's typed entity where it has one;
    // a script that does not parse failed in `execute` already.
    let statements: Vec<Statement> = parse_script(&req.ksql)
        .map(|s| s.into_iter().map(|p| p.statement).collect())
        .unwrap_or_default();
    statement_results(
        &req.ksql,
        results,
        "push queries (EMIT CHANGES) stream their rows: run them with POST /query-stream",
        Some((&state.engine, &statements)),
    )
}

/// The `/ksql` answer for a list of statement results: one entity per
/// statement, or an error carrying the entities of the statements before it.
pub(super) fn statement_results(
    sql: &str,
    results: Vec<crate::error::Result<StatementResult>>,
    push_refusal: &str,
    typed: Option<(&Engine, &[Statement])>,
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
    // Typed entities need each result's statement: only when they line up.
    let typed = typed.filter(|(_, statements)| statements.len() == results.len());
    let mut entities: Vec<Vec<u8>> = Vec::with_capacity(results.len());
    for (i, result) in results.into_iter().enumerate() {
        let text = text_of(i);
        if let (Some((engine, statements)), Ok(result)) = (typed, &result) {
            if let Some(entity) = typed_entity(engine, &statements[i], text, result) {
                entities.push(serde_json::to_vec(&entity).unwrap_or_default());
                continue;
            }
        }
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
                    "hint": "POST /query-stream with {\"sql\": \"SELECT ... EMIT CHANGES\"} streams the rows as newline-delimited JSON",
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
pub(super) fn rows_entity(
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
pub(super) fn error_status(e: &SluiceError) -> StatusCode {
    if e.sqlstate().starts_with("XX") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    }
}

pub(super) fn error_object(e: &SluiceError, text: &str) -> Value {
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

pub(super) fn error_response(status: StatusCode, error: &Value, entities: &[Vec<u8>]) -> Response {
    raw_json_response(
        status,
        with_raw_field(error, "entities", &join_raw(entities)),
    )
}
