//! SHOW and DESCRIBE.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use sqlparser::ast::Ident;

use super::{Engine, Session, StatementResult};
use crate::dataflow::metrics::QueryMetrics;
use crate::dataflow::query::RunStatus;
use crate::error::{Result, SluiceError};
use crate::planner::normalize_ident;
use crate::sql::{RelationKind, ShowWhat};

/// A result whose columns are all text.
/// `SHOW x` for an `x` that is neither a Sluice list nor a Postgres setting.
fn unknown_show(name: &str) -> SluiceError {
    const TARGETS: &str = "SHOW STREAMS, TABLES, VIEWS, QUERIES, TOPICS or PROPERTIES; \
        SHOW CREATE TABLE|STREAM|VIEW name; or a Postgres setting (SHOW server_version)";
    // Plural object names other systems list (SHOW VIEWS, SHOW FUNCTIONS ...).
    let objects = [
        "functions",
        "types",
        "connectors",
        "sources",
        "sinks",
        "users",
        "roles",
        "databases",
        "schemas",
        "indexes",
        "variables",
    ];
    let message = if objects.contains(&name) {
        format!("SHOW {}: Sluice has no {name} to list", name.to_uppercase())
    } else {
        format!("unrecognized configuration parameter \"{name}\"")
    };
    SluiceError::Sql {
        message,
        position: None,
        hint: Some(TARGETS.into()),
        sqlstate: "42704",
    }
}

pub(crate) fn text_rows(columns: &[&str], rows: Vec<Vec<String>>) -> Result<StatementResult> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|i| {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r[i].as_str()),
            )) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    Ok(StatementResult::Rows {
        schema,
        batches: vec![batch],
    })
}

impl Engine {
    pub(super) async fn show(&self, session: &Session, what: ShowWhat) -> Result<StatementResult> {
        match what {
            ShowWhat::Streams | ShowWhat::Tables => {
                let tables = what == ShowWhat::Tables;
                let catalog = self.catalog.read();
                let rows = catalog
                    .relations
                    .values()
                    .filter(|r| r.is_table() == tables)
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.topic.clone(),
                            r.format.key_format.name().to_string(),
                            r.format.value_format.name().to_string(),
                            r.partitions.to_string(),
                        ]
                    })
                    .collect();
                let first = if tables { "table_name" } else { "stream_name" };
                text_rows(
                    &[
                        first,
                        "kafka_topic",
                        "key_format",
                        "value_format",
                        "partitions",
                    ],
                    rows,
                )
            }
            ShowWhat::Queries => {
                let catalog = self.catalog.read();
                let running = self.running.lock();
                let retrying = self.retrying.lock();
                let rows = catalog
                    .queries
                    .values()
                    .map(|q| {
                        let (status, error) = match running.get(&q.id).map(|h| h.status()) {
                            Some(RunStatus::Running) => ("RUNNING".to_string(), String::new()),
                            Some(RunStatus::Finished) => ("FINISHED".to_string(), String::new()),
                            Some(RunStatus::Failed(e)) => ("ERROR".to_string(), e),
                            None if retrying.contains_key(&q.id) => {
                                ("RETRYING".to_string(), retrying[&q.id].describe())
                            }
                            None => (
                                "ERROR".to_string(),
                                q.error.clone().unwrap_or_else(|| "not running".into()),
                            ),
                        };
                        let (records_in, records_out, progress) = running
                            .get(&q.id)
                            .map(|h| {
                                (
                                    QueryMetrics::get(&h.metrics.records_in),
                                    QueryMetrics::get(&h.metrics.records_out),
                                    h.metrics.progress().map(|p| p.describe()),
                                )
                            })
                            .unwrap_or((0, 0, None));
                        vec![
                            q.id.clone(),
                            status,
                            q.sink.clone(),
                            records_in.to_string(),
                            records_out.to_string(),
                            progress.unwrap_or_default(),
                            q.statement.clone(),
                            error,
                        ]
                    })
                    .collect();
                text_rows(
                    &[
                        "query_id",
                        "status",
                        "sink",
                        "records_in",
                        "records_out",
                        "progress",
                        "statement",
                        "error",
                    ],
                    rows,
                )
            }
            ShowWhat::Topics => {
                let topics = self
                    .backend
                    .list_topics()
                    .await
                    .map_err(|e| SluiceError::connector("listing topics", e))?;
                let rows = topics
                    .into_iter()
                    .filter(|t| !t.name.starts_with("__"))
                    .map(|t| vec![t.name, t.partitions.to_string()])
                    .collect();
                text_rows(&["topic", "partitions"], rows)
            }
            ShowWhat::Views => self.show_views(),
            ShowWhat::Setting(name) => {
                let value = super::pg_catalog::setting(&name)
                    .or_else(|| session.properties.get(&name).cloned())
                    .ok_or_else(|| unknown_show(&name))?;
                text_rows(&[name.as_str()], vec![vec![value]])
            }
            ShowWhat::Create { kind, name } => {
                let wanted = normalize_ident(&name);
                if kind.is_none() {
                    if let Some(view) = self.catalog.read().views.get(&wanted) {
                        return text_rows(
                            &["name", "create_sql"],
                            vec![vec![view.name.clone(), view.statement.clone()]],
                        );
                    }
                }
                let relation = self.catalog.read().relation(&wanted).cloned();
                let relation = relation
                    .filter(|r| match kind {
                        Some(RelationKind::Table) => r.is_table(),
                        Some(RelationKind::Stream) => !r.is_table(),
                        None => true,
                    })
                    .ok_or_else(|| {
                        let what = match kind {
                            Some(RelationKind::Table) => "table",
                            Some(RelationKind::Stream) => "stream",
                            None => "stream or table",
                        };
                        SluiceError::undefined(
                            format!("{what} '{wanted}' does not exist"),
                            Some(crate::error::SqlPosition::of(&name)),
                            Some("SHOW STREAMS and SHOW TABLES list what exists".into()),
                        )
                    })?;
                text_rows(
                    &["name", "create_sql"],
                    vec![vec![relation.name.clone(), relation.statement.clone()]],
                )
            }
            ShowWhat::Properties => {
                let mut rows: Vec<Vec<String>> = vec![
                    vec![
                        "log_backend".into(),
                        self.backend.kind().into(),
                        "server".into(),
                    ],
                    vec![
                        "kafka_brokers".into(),
                        self.config.kafka_brokers.clone().unwrap_or_default(),
                        "server".into(),
                    ],
                    vec![
                        "data_dir".into(),
                        self.config.data_dir.display().to_string(),
                        "server".into(),
                    ],
                    vec![
                        "checkpoint_interval_ms".into(),
                        self.config.checkpoint_interval.as_millis().to_string(),
                        "server".into(),
                    ],
                    vec![
                        "dead_letter_topic".into(),
                        self.config.dead_letter_topic.clone().unwrap_or_default(),
                        "server".into(),
                    ],
                ];
                for (k, v) in &session.properties {
                    rows.push(vec![k.clone(), v.clone(), "session".into()]);
                }
                text_rows(&["property", "value", "scope"], rows)
            }
        }
    }

    pub(super) fn describe_relation(
        &self,
        name: &Ident,
        extended: bool,
    ) -> Result<StatementResult> {
        let n = normalize_ident(name);
        let catalog = self.catalog.read();
        let view = catalog.views.get(&n).and_then(|v| v.as_relation().ok());
        let relation = catalog.relation(&n).or(view.as_ref()).ok_or_else(|| {
            SluiceError::undefined(
                format!("'{n}' does not exist"),
                Some(crate::error::SqlPosition::of(name)),
                Some("SHOW STREAMS and SHOW TABLES list what exists".into()),
            )
        })?;
        if !extended {
            let schema = Arc::new(Schema::new(vec![
                Field::new("column_name", DataType::Utf8, false),
                Field::new("type", DataType::Utf8, false),
                Field::new("key", DataType::Boolean, false),
            ]));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(
                        relation.columns.iter().map(|c| c.name.as_str()),
                    )) as ArrayRef,
                    Arc::new(StringArray::from_iter_values(
                        relation.columns.iter().map(|c| c.sql_type.as_str()),
                    )),
                    Arc::new(BooleanArray::from(
                        relation.columns.iter().map(|c| c.key).collect::<Vec<_>>(),
                    )),
                ],
            )?;
            return Ok(StatementResult::Rows {
                schema,
                batches: vec![batch],
            });
        }
        let mut rows: Vec<Vec<String>> = relation
            .columns
            .iter()
            .map(|c| {
                vec![
                    format!("column {}", c.name),
                    format!("{}{}", c.sql_type, if c.key { " KEY" } else { "" }),
                ]
            })
            .collect();
        rows.push(vec!["type".into(), relation.kind.keyword().into()]);
        rows.push(vec!["kafka_topic".into(), relation.topic.clone()]);
        rows.push(vec!["partitions".into(), relation.partitions.to_string()]);
        rows.push(vec![
            "key_format".into(),
            relation.format.key_format.name().to_string(),
        ]);
        rows.push(vec![
            "value_format".into(),
            relation.format.value_format.name().to_string(),
        ]);
        rows.push(vec![
            "timestamp".into(),
            relation
                .format
                .timestamp
                .clone()
                .unwrap_or_else(|| "ROWTIME".into()),
        ]);
        rows.push(vec!["statement".into(), relation.statement.clone()]);
        if let Some(q) = &relation.written_by {
            rows.push(vec!["written_by".into(), q.clone()]);
            if let Some(h) = self.running.lock().get(q) {
                let m = &h.metrics;
                rows.push(vec![
                    "records_in".into(),
                    QueryMetrics::get(&m.records_in).to_string(),
                ]);
                rows.push(vec![
                    "records_out".into(),
                    QueryMetrics::get(&m.records_out).to_string(),
                ]);
                rows.push(vec![
                    "decode_errors".into(),
                    QueryMetrics::get(&m.decode_errors).to_string(),
                ]);
            }
        }
        for q in catalog.queries_reading(&n) {
            rows.push(vec!["read_by".into(), q.id.clone()]);
        }
        if relation.is_table() {
            let table = self.materialized.read().get(&n).cloned();
            if let Some(t) = table {
                rows.push(vec!["materialized_rows".into(), t.row_count()?.to_string()]);
            }
        }
        text_rows(&["property", "value"], rows)
    }
}
