//! ksqlDB's typed `/ksql` entities: what ksqlDB clients read from SHOW,
//! DESCRIBE and DDL answers (`streams`, `tables`, `queries`, `properties`,
//! `kafka_topics`, `sourceDescription`, `currentStatus` with its command id).
//! Statements without a ksqlDB entity answer Sluice's generic `rows`.

use std::collections::HashMap;

use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use serde_json::{json, Value};

use crate::catalog::Relation;
use crate::engine::result::StatementResult;
use crate::engine::Engine;
use crate::serve::arrow_convert::sql_type_name;
use crate::sql::{ShowWhat, Statement};

/// The typed entity for `statement`'s `result`, if ksqlDB has one.
pub(super) fn typed_entity(
    engine: &Engine,
    statement: &Statement,
    text: &str,
    result: &StatementResult,
) -> Option<Value> {
    match (statement, result) {
        (
            Statement::CreateSource(_)
            | Statement::CreateAs(_)
            | Statement::Drop { .. }
            | Statement::Terminate(_),
            StatementResult::Done {
                tag,
                message,
                rows_affected,
            },
        ) => {
            let (command_id, query_id) = command_of(engine, statement);
            Some(json!({
                "@type": "currentStatus",
                "statementText": text,
                "commandId": command_id,
                "commandStatus": {"status": "SUCCESS", "message": message, "queryId": query_id},
                "commandSequenceNumber": -1,
                "tag": tag,
                "rowsAffected": rows_affected,
                "warnings": [],
            }))
        }
        (Statement::Show(what), StatementResult::Rows { batches, .. }) => {
            let rows = text_rows(batches);
            show_entity(engine, what, text, &rows)
        }
        (Statement::Describe { name, extended }, StatementResult::Rows { .. }) => {
            let relation = engine.relation(&crate::planner::normalize_ident(name))?;
            Some(json!({
                "@type": "sourceDescription",
                "statementText": text,
                "sourceDescription": source_description(engine, &relation, *extended),
                "warnings": [],
            }))
        }
        _ => None,
    }
}

/// ksqlDB's command id (`stream/NAME/create`, as `GET /status` lists them)
/// and the id of the query a statement started.
fn command_of(engine: &Engine, statement: &Statement) -> (Value, Value) {
    let kind = |is_table: bool| if is_table { "table" } else { "stream" };
    match statement {
        Statement::CreateSource(c) => {
            let name = crate::planner::normalize_ident(&c.name);
            let kind = kind(c.kind == crate::sql::RelationKind::Table);
            (
                json!(format!("{kind}/{}/create", name.to_uppercase())),
                Value::Null,
            )
        }
        Statement::CreateAs(c) => {
            let name = crate::planner::normalize_ident(&c.name);
            let relation = engine.relation(&name);
            let kind = kind(c.kind == crate::sql::RelationKind::Table);
            let query = relation.and_then(|r| r.written_by);
            (
                json!(format!("{kind}/{}/create", name.to_uppercase())),
                json!(query),
            )
        }
        Statement::Drop { kind: k, name, .. } => {
            let name = crate::planner::normalize_ident(name);
            let kind = kind(*k == Some(crate::sql::RelationKind::Table));
            (
                json!(format!("{kind}/{}/drop", name.to_uppercase())),
                Value::Null,
            )
        }
        Statement::Terminate(id) => {
            let id = id.clone().unwrap_or_else(|| "ALL".into());
            (json!(format!("terminate/{id}/execute")), Value::Null)
        }
        _ => (Value::Null, Value::Null),
    }
}

/// The rows of a SHOW answer as column name → text.
fn text_rows(batches: &[RecordBatch]) -> Vec<HashMap<String, String>> {
    let mut rows = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut values = HashMap::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                let value = if column.is_null(row) {
                    String::new()
                } else {
                    array_value_to_string(column, row).unwrap_or_default()
                };
                values.insert(field.name().clone(), value);
            }
            rows.push(values);
        }
    }
    rows
}

fn get<'a>(row: &'a HashMap<String, String>, column: &str) -> &'a str {
    row.get(column).map(String::as_str).unwrap_or("")
}

fn show_entity(
    engine: &Engine,
    what: &ShowWhat,
    text: &str,
    rows: &[HashMap<String, String>],
) -> Option<Value> {
    let entity = match what {
        ShowWhat::Streams | ShowWhat::Tables => {
            let (list, kind, name_column) = match what {
                ShowWhat::Tables => ("tables", "TABLE", "table_name"),
                _ => ("streams", "STREAM", "stream_name"),
            };
            let sources: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let name = get(r, name_column);
                    json!({
                        "type": kind,
                        "name": name,
                        "topic": get(r, "kafka_topic"),
                        "keyFormat": get(r, "key_format"),
                        "valueFormat": get(r, "value_format"),
                        "isWindowed": engine.relation(name).is_some_and(|r| is_windowed(&r)),
                    })
                })
                .collect();
            json!({"@type": list, "statementText": text, list: sources, "warnings": []})
        }
        ShowWhat::Queries => {
            let queries: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let state = get(r, "status");
                    let sink = get(r, "sink");
                    let topic = engine.relation(sink).map(|r| r.topic);
                    json!({
                        "queryString": get(r, "statement"),
                        "sinks": [sink],
                        "sinkKafkaTopics": topic.into_iter().collect::<Vec<_>>(),
                        "id": get(r, "query_id"),
                        "statusCount": {state: 1},
                        "queryType": "PERSISTENT",
                        "state": state,
                    })
                })
                .collect();
            json!({"@type": "queries", "statementText": text, "queries": queries, "warnings": []})
        }
        ShowWhat::Properties => {
            let properties: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let scope = match get(r, "scope") {
                        "session" => "SESSION",
                        _ => "KSQL",
                    };
                    json!({"name": get(r, "property"), "scope": scope, "value": get(r, "value")})
                })
                .collect();
            let overwritten: Vec<&str> = rows
                .iter()
                .filter(|r| get(r, "scope") == "session")
                .map(|r| get(r, "property"))
                .collect();
            json!({
                "@type": "properties",
                "statementText": text,
                "properties": properties,
                "overwrittenProperties": overwritten,
                "defaultProperties": [],
                "warnings": [],
            })
        }
        ShowWhat::Topics => {
            let topics: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let partitions: usize = get(r, "partitions").parse().unwrap_or(1);
                    // One replica per partition: Sluice does not see replication.
                    json!({"name": get(r, "topic"), "replicaInfo": vec![1; partitions]})
                })
                .collect();
            json!({"@type": "kafka_topics", "statementText": text, "topics": topics, "warnings": []})
        }
        ShowWhat::Setting(_) | ShowWhat::Create { .. } | ShowWhat::Views => return None,
    };
    Some(entity)
}

fn is_windowed(relation: &Relation) -> bool {
    relation
        .columns
        .iter()
        .any(|c| c.key && matches!(c.name.as_str(), "window_start" | "window_end"))
}

fn source_description(engine: &Engine, relation: &Relation, extended: bool) -> Value {
    let schema = relation.schema();
    let fields: Vec<Value> = relation
        .columns
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            let mut field = json!({"name": c.name, "schema": schema_info(f.data_type())});
            if c.key {
                field["type"] = json!("KEY");
            }
            field
        })
        .collect();
    let write_queries: Vec<Value> = relation
        .written_by
        .iter()
        .map(|id| {
            json!({
                "queryString": relation.statement,
                "sinks": [relation.name],
                "sinkKafkaTopics": [relation.topic],
                "id": id,
                "queryType": "PERSISTENT",
            })
        })
        .collect();
    let read_queries: Vec<Value> = engine
        .readers_of(&relation.name)
        .into_iter()
        .map(|(id, sink, statement)| {
            json!({"queryString": statement, "sinks": [sink], "id": id, "queryType": "PERSISTENT"})
        })
        .collect();
    json!({
        "name": relation.name,
        "windowType": Value::Null,
        "readQueries": read_queries,
        "writeQueries": write_queries,
        "fields": fields,
        "type": relation.kind.keyword(),
        "timestamp": relation.format.timestamp.clone().unwrap_or_default(),
        "statistics": "",
        "errorStats": "",
        "extended": extended,
        "keyFormat": relation.format.key_format.name().to_string(),
        "valueFormat": relation.format.value_format.name().to_string(),
        "topic": relation.topic,
        "partitions": relation.partitions,
        "replication": 1,
        "statement": relation.statement,
        "queryOffsetSummaries": [],
    })
}

/// ksqlDB's `SchemaInfo`: the base type, a struct's fields, an array's or
/// map's member schema, a decimal's precision and scale.
fn schema_info(data_type: &DataType) -> Value {
    match data_type {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => {
            json!({"type": "ARRAY", "fields": null, "memberSchema": schema_info(f.data_type())})
        }
        DataType::Map(entries, _) => {
            let value = match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => schema_info(kv[1].data_type()),
                _ => Value::Null,
            };
            json!({"type": "MAP", "fields": null, "memberSchema": value})
        }
        DataType::Struct(fields) => {
            let fields: Vec<Value> = fields
                .iter()
                .map(|f| json!({"name": f.name(), "schema": schema_info(f.data_type())}))
                .collect();
            json!({"type": "STRUCT", "fields": fields, "memberSchema": null})
        }
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => json!({
            "type": "DECIMAL",
            "fields": null,
            "memberSchema": null,
            "parameters": {"precision": p, "scale": s},
        }),
        other => json!({"type": sql_type_name(other), "fields": null, "memberSchema": null}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn schema_info_nests() {
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        assert_eq!(
            schema_info(&list),
            json!({"type": "ARRAY", "fields": null, "memberSchema": {"type": "STRING", "fields": null, "memberSchema": null}})
        );
        let s = DataType::Struct(vec![Field::new("f1", DataType::Int32, true)].into());
        assert_eq!(
            schema_info(&s)["fields"][0],
            json!({"name": "f1", "schema": {"type": "INTEGER", "fields": null, "memberSchema": null}})
        );
        assert_eq!(
            schema_info(&DataType::Decimal128(10, 2))["parameters"],
            json!({"precision": 10, "scale": 2})
        );
    }
}
