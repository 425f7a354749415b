//! CREATE, DROP, TERMINATE and starting persistent queries.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlparser::ast::{Ident, Query};

use super::{done, Engine, Session, StatementResult};
use crate::catalog::{
    ColumnMeta, FormatMeta, KeyFormat, OnError, ProcessingGuarantee, QueryMeta, QueryStatus,
    Relation, SourceConnector, ValueFormat,
};
use crate::connectors::{ConnectorError, StartFrom};
use crate::dataflow::dead_letter::DeadLetters;
use crate::dataflow::metrics::QueryMetrics;
use crate::dataflow::pipeline::{NullSink, Pipeline, Sink, TopicSink};
use crate::dataflow::query::QueryHandle;
use crate::dataflow::row_errors::RowErrorPolicy;
use crate::dataflow::source::{SourceInput, SourceTask};
use crate::error::{Result, SluiceError};
use crate::formats::RecordEncoder;
use crate::operators::Materialize;
use crate::planner::{self, normalize_ident, StreamPlan};
use crate::sql::{types, CreateAs, CreateSource, EmitMode, RelationKind, WithOptions};

const SOURCE_PROPERTIES: &[&str] = &[
    "kafka_topic",
    "topic",
    "value_format",
    "format",
    "key_format",
    "partitions",
    "replicas",
    "timestamp",
    "timestamp_format",
    "value_delimiter",
    "key_delimiter",
    "wrap_single_value",
    "key_in_value",
    "connector",
    "path",
    "follow",
    "watermark_delay",
    "watermark_idle_timeout",
    "processing_time",
    "late_topic",
    "on_error",
    "processing_guarantee",
    "checkpoint_interval",
];

/// A duration property (`watermark_delay = '5 seconds'`) in milliseconds.
fn duration_option(with: &WithOptions, key: &str) -> Result<Option<i64>> {
    match with.get(key) {
        None => Ok(None),
        Some(v) => crate::sql::duration::parse_duration(&v.value)
            .map(Some)
            .ok_or_else(|| {
                with_error(
                    with,
                    key,
                    format!("{key} must be a duration, not '{}'", v.value),
                    &format!("{key}='5 seconds' (units: ms, seconds, minutes, hours, days)"),
                )
            }),
    }
}

fn bool_option(with: &WithOptions, key: &str, hint: &str) -> Result<bool> {
    match with.get(key).map(|v| v.value.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(with_error(
            with,
            key,
            format!("{key} must be true or false, not '{v}'"),
            hint,
        )),
    }
}

/// A one-character delimiter property (`'|'`, `TAB`, `SPACE`).
fn delimiter_option(with: &WithOptions, key: &str, default: char) -> Result<char> {
    let Some(d) = with.get(key).map(|v| v.value.clone()) else {
        return Ok(default);
    };
    match d.as_str() {
        "TAB" | "tab" | "\\t" => Ok('\t'),
        "SPACE" | "space" => Ok(' '),
        s if s.chars().count() == 1 && s.is_ascii() => Ok(s.chars().next().unwrap_or(default)),
        _ => Err(with_error(
            with,
            key,
            format!("{key} must be one ASCII character, not '{d}'"),
            &format!("{key}='|'"),
        )),
    }
}

/// Options of a relation's topic, validated.
struct TopicOptions {
    topic: String,
    partitions: Option<i32>,
    format: FormatMeta,
}

fn with_error(with: &WithOptions, key: &str, message: String, hint: &str) -> SluiceError {
    SluiceError::sql_at(
        message,
        with.get(key).map(|v| v.position),
        Some(hint.into()),
    )
}

/// A file path a client named was refused or could not be used. A refusal is a
/// privilege error (42501), as Postgres reports `COPY … FROM '/etc/shadow'`.
fn path_error(with: &WithOptions, path: &str, e: ConnectorError, hint: &str) -> SluiceError {
    match e {
        ConnectorError::NotAllowed { reason, .. } => SluiceError::Sql {
            message: format!("path '{path}' is not allowed: {reason}"),
            position: with.get("path").map(|v| v.position),
            hint: Some(crate::error::PATHS_HINT.into()),
            sqlstate: "42501",
        },
        other => with_error(with, "path", format!("path '{path}': {other}"), hint),
    }
}

fn parse_topic_options(
    name: &str,
    with: &WithOptions,
    key_types: &[arrow::datatypes::DataType],
    defaults: Option<&Relation>,
) -> Result<TopicOptions> {
    let key_columns = key_types.len();
    let nexmark = crate::connectors::nexmark::config::PROPERTIES;
    for (k, v) in with {
        if !SOURCE_PROPERTIES.contains(&k.as_str()) && !nexmark.contains(&k.as_str()) {
            return Err(SluiceError::sql_at(
                format!("unknown property '{k}'"),
                Some(v.position),
                Some(format!(
                    "known properties: {}; with connector='nexmark' also {}",
                    SOURCE_PROPERTIES.join(", "),
                    nexmark.join(", ")
                )),
            ));
        }
    }
    let get = |k: &str| with.get(k).map(|v| v.value.clone());
    let topic = get("kafka_topic")
        .or_else(|| get("topic"))
        .unwrap_or_else(|| name.to_string());
    let partitions = match get("partitions") {
        Some(p) => match p.parse::<i32>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(with_error(
                    with,
                    "partitions",
                    format!("partitions must be a positive number, not '{p}'"),
                    "partitions=4",
                ))
            }
        },
        None => None,
    };
    let value_format = match get("value_format").or_else(|| get("format")) {
        None => defaults
            .map(|d| d.format.value_format)
            .unwrap_or(ValueFormat::Json),
        Some(f) => match f.to_ascii_lowercase().as_str() {
            "json" => ValueFormat::Json,
            "delimited" | "csv" => ValueFormat::Delimited,
            "kafka" => ValueFormat::Kafka,
            other => {
                let key = if with.contains_key("value_format") {
                    "value_format"
                } else {
                    "format"
                };
                return Err(with_error(
                    with,
                    key,
                    format!("value_format '{other}' is not supported"),
                    "value_format='json', 'delimited' or 'kafka'",
                ));
            }
        },
    };
    let serializable = key_types
        .iter()
        .all(crate::formats::kafka_primitive::supports);
    // FORMAT names both formats, as in ksqlDB.
    let key_format = match get("key_format").or_else(|| get("format")) {
        // ksqlDB's default is KAFKA, which holds one key column of a type Kafka
        // serializes; for any other key Sluice picks JSON rather than refusing.
        // A query's output keeps its source's key format when it can hold the
        // new key, as ksqlDB does.
        None if defaults.is_some_and(|d| {
            let f = d.format.key_format;
            matches!(f, KeyFormat::Json | KeyFormat::Delimited)
                || (f != KeyFormat::None && key_columns == 1 && serializable)
        }) =>
        {
            defaults.map_or(KeyFormat::Json, |d| d.format.key_format)
        }
        None if key_columns > 1 || !serializable => KeyFormat::Json,
        None => KeyFormat::Kafka,
        Some(f) => match f.to_ascii_lowercase().as_str() {
            "kafka" => KeyFormat::Kafka,
            "kafka_text" => KeyFormat::KafkaText,
            "json" => KeyFormat::Json,
            "delimited" | "csv" => KeyFormat::Delimited,
            "none" => KeyFormat::None,
            other => {
                let key = if with.contains_key("key_format") {
                    "key_format"
                } else {
                    "format"
                };
                return Err(with_error(
                    with,
                    key,
                    format!("key_format '{other}' is not supported"),
                    "key_format='kafka', 'json', 'delimited', 'kafka_text' or 'none'",
                ));
            }
        },
    };
    if matches!(key_format, KeyFormat::Kafka | KeyFormat::KafkaText) && key_columns > 1 {
        return Err(with_error(
            with,
            "key_format",
            format!(
                "key_format='{}' holds one key column; this relation has several",
                key_format.name().to_ascii_lowercase()
            ),
            "use key_format='json' for a multi-column key",
        ));
    }
    if key_format == KeyFormat::Kafka && !serializable {
        let t = key_types
            .iter()
            .find(|t| !crate::formats::kafka_primitive::supports(t))
            .map(types::sql_type_name)
            .unwrap_or_default();
        return Err(with_error(
            with,
            "key_format",
            format!("the KAFKA format cannot hold a {t} key (Kafka has no serializer for it)"),
            "KAFKA keys are INT, BIGINT, SMALLINT, REAL, DOUBLE, VARCHAR or BYTES; use key_format='json'",
        ));
    }
    // A query's output keeps its source's delimiter unless told otherwise.
    let inherited = defaults
        .filter(|d| d.format.value_format == value_format)
        .map_or(',', |d| d.format.delimiter);
    let delimiter = delimiter_option(with, "value_delimiter", inherited)?;
    let key_delimiter = delimiter_option(
        with,
        "key_delimiter",
        defaults.map_or(',', |d| d.format.key_delimiter),
    )?;
    let processing_time = bool_option(
        with,
        "processing_time",
        "processing_time=true makes event time the moment a record is read",
    )?;
    if processing_time && with.contains_key("timestamp") {
        return Err(with_error(
            with,
            "processing_time",
            "processing_time=true and timestamp='<column>' contradict each other".into(),
            "choose event time from a column (timestamp) or the wall clock (processing_time)",
        ));
    }
    Ok(TopicOptions {
        topic,
        partitions,
        format: FormatMeta {
            value_format,
            key_format,
            timestamp: get("timestamp").map(|t| t.to_ascii_lowercase()),
            timestamp_format: get("timestamp_format"),
            delimiter,
            key_delimiter,
            wrap_single_value: !with.contains_key("wrap_single_value")
                || bool_option(
                    with,
                    "wrap_single_value",
                    "wrap_single_value=false writes a one-column value as a bare JSON value",
                )?,
            ksqldb_json: true,
            key_in_value: Some(bool_option(
                with,
                "key_in_value",
                "key_in_value=true repeats the key columns in every value",
            )?),
            watermark_delay_ms: duration_option(with, "watermark_delay")?.unwrap_or(0),
            idle_timeout_ms: duration_option(with, "watermark_idle_timeout")?,
            processing_time,
        },
    })
}

/// The value formats that hold a single column need the relation to have one.
fn check_value_format(relation: &Relation, with: &WithOptions) -> Result<()> {
    let value_cols = relation.value_indices();
    // (how the format was asked for, the property that asked)
    let (single, key) = match relation.format.value_format {
        ValueFormat::Kafka => ("value_format='kafka'", "value_format"),
        ValueFormat::Json if !relation.format.wrap_single_value => {
            ("wrap_single_value=false", "wrap_single_value")
        }
        _ => return Ok(()),
    };
    if value_cols.len() != 1 {
        return Err(with_error(
            with,
            key,
            format!(
                "{single} holds one value column; {} has {}",
                relation.name,
                value_cols.len()
            ),
            "use value_format='json' for several value columns",
        ));
    }
    let schema = relation.schema();
    let t = schema.field(value_cols[0]).data_type();
    if relation.format.value_format == ValueFormat::Kafka
        && !crate::formats::kafka_primitive::supports(t)
    {
        return Err(with_error(
            with,
            key,
            format!(
                "the KAFKA format cannot hold a {} value (Kafka has no serializer for it)",
                types::sql_type_name(t)
            ),
            "KAFKA values are INT, BIGINT, SMALLINT, REAL, DOUBLE, VARCHAR or BYTES",
        ));
    }
    Ok(())
}

fn check_timestamp_column(relation: &Relation, with: &WithOptions) -> Result<()> {
    let Some(ts) = &relation.format.timestamp else {
        if relation.format.timestamp_format.is_some() {
            return Err(with_error(
                with,
                "timestamp_format",
                "timestamp_format needs timestamp='<column>'".into(),
                "WITH (timestamp='ts', timestamp_format='yyyy-MM-dd HH:mm:ss')",
            ));
        }
        return Ok(());
    };
    let schema = relation.schema();
    let Ok(field) = schema.field_with_name(ts) else {
        return Err(with_error(
            with,
            "timestamp",
            format!(
                "timestamp column '{ts}' is not a column of {}",
                relation.name
            ),
            "name one of the declared columns",
        ));
    };
    use arrow::datatypes::DataType as D;
    match field.data_type() {
        D::Timestamp(_, _) | D::Int64 | D::Int32 | D::Date32 => {
            if relation.format.timestamp_format.is_some() {
                return Err(with_error(
                    with,
                    "timestamp_format",
                    format!(
                        "timestamp_format applies to a VARCHAR column; '{ts}' is {}",
                        types::sql_type_name(field.data_type())
                    ),
                    "remove timestamp_format",
                ));
            }
            Ok(())
        }
        D::Utf8 => Ok(()),
        other => Err(with_error(
            with,
            "timestamp",
            format!(
                "timestamp column '{ts}' has type {}, which is not a time",
                types::sql_type_name(other)
            ),
            "use a TIMESTAMP, BIGINT (epoch milliseconds) or VARCHAR column with timestamp_format",
        )),
    }
}

impl Engine {
    /// Creates the topic if it is missing; uses an existing one as is.
    async fn ensure_topic(
        &self,
        topic: &str,
        partitions: Option<i32>,
        default_partitions: i32,
        with: &WithOptions,
    ) -> Result<i32> {
        let existing = self
            .backend
            .describe_topic(topic)
            .await
            .map_err(|e| SluiceError::connector(format!("looking up topic '{topic}'"), e))?;
        match existing {
            Some(info) => {
                if let Some(p) = partitions {
                    if p != info.partitions {
                        return Err(with_error(
                            with,
                            "partitions",
                            format!(
                                "topic '{topic}' exists with {} partitions, but partitions={p} was given",
                                info.partitions
                            ),
                            "remove partitions to use the topic as it is",
                        ));
                    }
                }
                Ok(info.partitions)
            }
            None => {
                let p = partitions.unwrap_or(default_partitions);
                self.backend
                    .create_topic(topic, p)
                    .await
                    .map_err(|e| SluiceError::connector(format!("creating topic '{topic}'"), e))?;
                Ok(p)
            }
        }
    }

    /// The existing relation when a CREATE may be skipped; an error when it clashes.
    fn check_create(
        &self,
        name: &str,
        if_not_exists: bool,
        or_replace: bool,
        kind: RelationKind,
    ) -> Result<Option<StatementResult>> {
        let catalog = self.catalog.read();
        if catalog.views.contains_key(name) {
            return Err(SluiceError::duplicate(
                format!("view '{name}' already exists"),
                Some(format!("DROP VIEW {name} first, or choose another name")),
            ));
        }
        let Some(existing) = catalog.relation(name) else {
            return Ok(None);
        };
        if if_not_exists {
            return Ok(Some(done(
                &format!("CREATE {}", kind.keyword()),
                format!(
                    "{} {name} already exists",
                    existing.kind.keyword().to_lowercase()
                ),
            )));
        }
        if or_replace {
            if existing.kind != kind {
                return Err(SluiceError::duplicate(
                    format!(
                        "{name} is a {}, not a {}",
                        existing.kind.keyword(),
                        kind.keyword()
                    ),
                    None,
                ));
            }
            return Ok(None);
        }
        Err(SluiceError::duplicate(
            format!(
                "{} '{name}' already exists",
                existing.kind.keyword().to_lowercase()
            ),
            Some(format!(
                "use CREATE {} IF NOT EXISTS, or CREATE OR REPLACE",
                kind.keyword()
            )),
        ))
    }

    pub(super) async fn create_source(
        &self,
        _session: &mut Session,
        c: CreateSource,
        text: &str,
    ) -> Result<StatementResult> {
        let _guard = self.ddl_lock.lock().await;
        let name = normalize_ident(&c.name);
        let tag = format!("CREATE {}", c.kind.keyword());
        if let Some(r) = self.check_create(&name, c.if_not_exists, c.or_replace, c.kind)? {
            return Ok(r);
        }
        let mut columns = Vec::with_capacity(c.columns.len());
        for col in &c.columns {
            let t = types::arrow_type(&col.data_type).map_err(|e| match e {
                SluiceError::Sql {
                    message,
                    hint,
                    sqlstate,
                    ..
                } => SluiceError::Sql {
                    message: format!("column '{}': {message}", col.name.value),
                    position: Some(crate::error::SqlPosition::of(&col.name)),
                    hint,
                    sqlstate,
                },
                other => other,
            })?;
            let cname = normalize_ident(&col.name);
            if columns.iter().any(|c: &ColumnMeta| c.name == cname) {
                return Err(SluiceError::sql_at(
                    format!("column '{cname}' is declared twice"),
                    Some(crate::error::SqlPosition::of(&col.name)),
                    None,
                ));
            }
            columns.push(ColumnMeta {
                name: cname,
                sql_type: types::sql_type_name(&t),
                key: col.key,
                not_null: col.not_null,
            });
        }
        let connector = source_connector(&c.with)?;
        declared_or_generated_columns(&c, &connector, &mut columns)?;
        let key_types = columns
            .iter()
            .filter(|c| c.key)
            .map(|c| types::parse_type(&c.sql_type))
            .collect::<Result<Vec<_>>>()?;
        for key in ["on_error", "processing_guarantee", "checkpoint_interval"] {
            if c.with.contains_key(key) {
                return Err(with_error(
                    &c.with,
                    key,
                    format!("{key} belongs to a CREATE ... AS SELECT"),
                    &format!("CREATE STREAM s WITH ({key}='...') AS SELECT ..."),
                ));
            }
        }
        if c.with.contains_key("late_topic") {
            return Err(with_error(
                &c.with,
                "late_topic",
                "late_topic belongs to a windowed CREATE ... AS SELECT".into(),
                "CREATE TABLE t WITH (late_topic='late_events') AS SELECT ... WINDOW ...",
            ));
        }
        let mut opts = parse_topic_options(&name, &c.with, &key_types, None)?;
        if let Some(w) = &c.watermark {
            // WATERMARK FOR ts AS ts - INTERVAL ... declares the event-time column too.
            let column = normalize_ident(&w.column);
            if let Some(ts) = &opts.format.timestamp {
                if *ts != column {
                    return Err(with_error(
                        &c.with,
                        "timestamp",
                        format!("timestamp='{ts}' but the WATERMARK is declared FOR {column}"),
                        "name the same column in both, or drop the timestamp property",
                    ));
                }
            }
            if c.with.contains_key("watermark_delay") {
                return Err(with_error(
                    &c.with,
                    "watermark_delay",
                    "the delay is given twice: in WATERMARK FOR and in watermark_delay".into(),
                    "keep one of them",
                ));
            }
            opts.format.timestamp = Some(column);
            opts.format.watermark_delay_ms = w.delay_ms;
        }
        // Validate everything before touching the topic.
        let mut relation = Relation::new(
            name.clone(),
            c.kind,
            columns,
            opts.topic.clone(),
            opts.partitions.unwrap_or(1),
            opts.format,
            text.to_string(),
            None,
            vec![],
        )?;
        check_timestamp_column(&relation, &c.with)?;
        check_value_format(&relation, &c.with)?;
        if c.or_replace {
            self.replace_check(&name, &relation)?;
        }
        relation.connector = connector;
        match &relation.connector {
            SourceConnector::Nexmark(config) => {
                relation.topic = format!("nexmark.{}", config.table.name());
                relation.partitions = config.partitions as i32;
                if relation.columns.iter().any(|c| c.name == "date_time") {
                    relation.format.timestamp = Some("date_time".into());
                }
            }
            SourceConnector::File { path, .. } => {
                let files =
                    crate::connectors::file::list_files(path, &self.file_access).map_err(|e| {
                        path_error(
                            &c.with,
                            path,
                            e,
                            "name a file, a directory or a glob such as /data/events-*.jsonl",
                        )
                    })?;
                relation.topic = path.clone();
                relation.partitions = files.len() as i32;
                // A line has no record key: it holds the whole row.
                relation.format.key_in_value = Some(true);
            }
            SourceConnector::Topic => {
                relation.partitions = self
                    .ensure_topic(&opts.topic, opts.partitions, 1, &c.with)
                    .await?;
            }
        }
        let query = if relation.is_table() {
            // Source tables are materialized so pull queries and joins can read them.
            let mut catalog = self.catalog.write();
            let id = catalog.new_query_id("MATERIALIZE", &name);
            relation.written_by = Some(id.clone());
            relation.reads = vec![];
            Some(QueryMeta {
                id,
                statement: text.to_string(),
                query_text: format!("SELECT * FROM \"{name}\""),
                sink: name.clone(),
                emit: Some(EmitMode::Changes),
                status: QueryStatus::Running,
                error: None,
                late_topic: None,
                on_error: None,
                processing_guarantee: None,
                checkpoint_interval_ms: None,
            })
        } else {
            None
        };
        self.materialized.write().remove(&name);
        self.register_relation(&relation)?;
        {
            let mut catalog = self.catalog.write();
            catalog.relations.insert(name.clone(), relation.clone());
            if let Some(q) = &query {
                catalog.queries.insert(q.id.clone(), q.clone());
            }
        }
        self.save_catalog()?;
        if let Some(q) = &query {
            self.start_persistent_query(q).await?;
        }
        Ok(done(
            &tag,
            format!(
                "{} {name} created over topic '{}' ({} partitions)",
                c.kind.keyword().to_lowercase(),
                relation.topic,
                relation.partitions
            ),
        ))
    }

    /// CREATE OR REPLACE of a source keeps the topic; refuse when queries read it.
    fn replace_check(&self, name: &str, _new: &Relation) -> Result<()> {
        let catalog = self.catalog.read();
        let readers: Vec<String> = catalog
            .queries_reading(name)
            .iter()
            .map(|q| q.id.clone())
            .collect();
        if !readers.is_empty() {
            return Err(SluiceError::sql(format!(
                "cannot replace {name}: queries {} read it",
                readers.join(", ")
            ))
            .with_hint("TERMINATE those queries first"));
        }
        Ok(())
    }

    pub(super) async fn create_as(
        &self,
        session: &mut Session,
        c: CreateAs,
        text: &str,
    ) -> Result<StatementResult> {
        let _guard = self.ddl_lock.lock().await;
        let name = normalize_ident(&c.name);
        let tag = if c.materialized_view {
            "CREATE MATERIALIZED VIEW".to_string()
        } else {
            format!("CREATE {}", c.kind.keyword())
        };
        if let Some(r) = self.check_create(&name, c.if_not_exists, c.or_replace, c.kind)? {
            return Ok(r);
        }
        if c.or_replace {
            let same = self
                .catalog
                .read()
                .relation(&name)
                .is_some_and(|r| r.statement.trim() == text.trim());
            if same {
                return Ok(done(&tag, format!("{name} is unchanged")));
            }
        }
        let catalog = self.catalog.read().clone();
        let plan = planner::plan_continuous(
            &self.session_state(),
            &catalog,
            &c.query,
            c.window.as_ref(),
            c.emit,
            false,
        )
        .await?;
        match (c.kind, plan.changelog) {
            (RelationKind::Stream, true) => {
                return Err(SluiceError::sql(
                    "this query produces a changelog (it aggregates or reads a TABLE), so its result is a TABLE",
                )
                .with_hint(format!("CREATE TABLE {name} AS SELECT ...")))
            }
            (RelationKind::Table, false) => {
                return Err(SluiceError::sql(
                    "a TABLE needs a key: aggregate with GROUP BY, or select from a TABLE",
                )
                .with_hint(format!("CREATE STREAM {name} AS SELECT ... for an append-only result")))
            }
            _ => {}
        }
        // Defaults (partitions, formats) follow the first relation read.
        let source = self
            .catalog
            .read()
            .relation(plan.source_name())
            .cloned()
            .ok_or_else(|| {
                SluiceError::Internal(format!("source {} vanished", plan.source_name()))
            })?;
        let on_error = match c.with.get("on_error") {
            None => None,
            Some(v) => Some(OnError::parse(&v.value).ok_or_else(|| {
                with_error(
                    &c.with,
                    "on_error",
                    format!("on_error '{}' is neither 'continue' nor 'fail'", v.value),
                    "on_error='fail' stops the query at the first bad record or failing expression",
                )
            })?),
        };
        let processing_guarantee = match c.with.get("processing_guarantee") {
            None => session_guarantee(session)?,
            Some(v) => Some(ProcessingGuarantee::parse(&v.value).map_err(|e| {
                with_error(
                    &c.with,
                    "processing_guarantee",
                    format!("processing_guarantee {e}"),
                    "processing_guarantee='at_least_once' shows results before their checkpoint commits",
                )
            })?),
        };
        let checkpoint_interval_ms = duration_option(&c.with, "checkpoint_interval")?;
        if checkpoint_interval_ms.is_some_and(|ms| ms < 10) {
            return Err(with_error(
                &c.with,
                "checkpoint_interval",
                "checkpoint_interval must be at least 10 ms".into(),
                "checkpoint_interval='100 ms'",
            ));
        }
        if plan.sources.len() > 1 && c.with.contains_key("late_topic") {
            return Err(with_error(
                &c.with,
                "late_topic",
                "late_topic is not supported for a query that reads several inputs".into(),
                "remove late_topic; late events are still counted in sluice_query_late_records_total",
            ));
        }
        let columns: Vec<ColumnMeta> = plan
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| ColumnMeta {
                name: f.name().clone(),
                sql_type: types::sql_type_name(f.data_type()),
                key: plan.key_columns.contains(&i),
                not_null: false,
            })
            .collect();
        for (i, col) in columns.iter().enumerate() {
            if columns[..i].iter().any(|c| c.name == col.name) {
                return Err(SluiceError::sql(format!(
                    "the query produces two columns named '{}'",
                    col.name
                ))
                .with_hint("give each expression a distinct alias: expr AS name"));
            }
        }
        let key_types: Vec<_> = plan
            .key_columns
            .iter()
            .map(|&i| plan.schema.field(i).data_type().clone())
            .collect();
        let opts = parse_topic_options(&name, &c.with, &key_types, Some(&source))?;
        let mut relation = Relation::new(
            name.clone(),
            c.kind,
            columns,
            opts.topic.clone(),
            opts.partitions.unwrap_or(source.partitions),
            opts.format,
            text.to_string(),
            None,
            plan.sources.clone(),
        )?;
        check_timestamp_column(&relation, &c.with)?;
        check_value_format(&relation, &c.with)?;
        if c.or_replace {
            self.replace_check(&name, &relation)?;
            self.drop_queries_writing(&name)?;
        }
        relation.connector = source_connector(&c.with)?;
        match &relation.connector {
            SourceConnector::Nexmark(_) => {
                return Err(with_error(
                    &c.with,
                    "connector",
                    "connector='nexmark' generates a source; a query cannot write to it".into(),
                    "remove connector, or use connector='file' or a topic",
                ))
            }
            SourceConnector::File { path, follow } => {
                if *follow {
                    return Err(with_error(
                        &c.with,
                        "follow",
                        "follow applies to file sources, not to a query's output".into(),
                        "remove follow",
                    ));
                }
                if relation.format.value_format != ValueFormat::Json {
                    return Err(with_error(
                        &c.with,
                        "value_format",
                        "a file sink writes JSON lines".into(),
                        "value_format='json'",
                    ));
                }
                // A file has no record key: its lines are whole rows.
                relation.format.key_in_value = Some(true);
                // Create it now so mistakes in the path show before the query runs.
                crate::connectors::file::FileWriter::create(
                    path,
                    &self.file_access,
                    relation.is_table(),
                )
                .map_err(|e| path_error(&c.with, path, e, "the directory must exist"))?;
                relation.topic = path.clone();
                relation.partitions = 1;
            }
            SourceConnector::Topic => {
                relation.partitions = self
                    .ensure_topic(&opts.topic, opts.partitions, source.partitions, &c.with)
                    .await?;
            }
        }
        let prefix = match c.kind {
            RelationKind::Stream => "CSAS",
            RelationKind::Table => "CTAS",
        };
        let meta = {
            let mut catalog = self.catalog.write();
            let id = catalog.new_query_id(prefix, &name);
            relation.written_by = Some(id.clone());
            QueryMeta {
                id,
                statement: text.to_string(),
                query_text: c.query_text.clone(),
                sink: name.clone(),
                emit: c.emit,
                status: QueryStatus::Running,
                error: None,
                late_topic: c.with.get("late_topic").map(|v| v.value.clone()),
                on_error,
                processing_guarantee,
                checkpoint_interval_ms,
            }
        };
        self.materialized.write().remove(&name);
        self.register_relation(&relation)?;
        {
            let mut catalog = self.catalog.write();
            catalog.relations.insert(name.clone(), relation.clone());
            catalog.queries.insert(meta.id.clone(), meta.clone());
        }
        self.save_catalog()?;
        let start = session_start(session);
        if let Err(e) = self.run_plan(&meta, plan, start).await {
            // Leave nothing half-created.
            let mut catalog = self.catalog.write();
            catalog.relations.remove(&name);
            catalog.queries.remove(&meta.id);
            drop(catalog);
            let _ = self.ctx.deregister_table(name.as_str());
            self.save_catalog()?;
            return Err(e);
        }
        Ok(done(
            &tag,
            format!(
                "{name} created; query {} writes topic '{}'",
                meta.id, relation.topic
            ),
        ))
    }

    pub(super) async fn insert_select(
        &self,
        session: &mut Session,
        target: Ident,
        query: Box<Query>,
        window: Option<crate::sql::WindowClause>,
        query_text: String,
        text: &str,
    ) -> Result<StatementResult> {
        let _guard = self.ddl_lock.lock().await;
        let name = normalize_ident(&target);
        let relation = self
            .catalog
            .read()
            .relation(&name)
            .cloned()
            .ok_or_else(|| {
                SluiceError::undefined(format!("stream '{name}' does not exist"), None, None)
            })?;
        if relation.is_table() {
            return Err(
                SluiceError::sql(format!("INSERT INTO a TABLE ({name}) is not supported"))
                    .with_hint("INSERT INTO a STREAM"),
            );
        }
        let catalog = self.catalog.read().clone();
        let mut plan = planner::plan_continuous(
            &self.session_state(),
            &catalog,
            &query,
            window.as_ref(),
            None,
            false,
        )
        .await?;
        if plan.changelog {
            return Err(SluiceError::sql(
                "INSERT INTO ... SELECT must produce a stream, not a changelog",
            ));
        }
        conform_to(&mut plan, &relation)?;
        let meta = {
            let mut catalog = self.catalog.write();
            let id = catalog.new_query_id("INSERTQUERY", &name);
            QueryMeta {
                id,
                statement: text.to_string(),
                query_text,
                sink: name.clone(),
                emit: None,
                status: QueryStatus::Running,
                error: None,
                late_topic: None,
                on_error: None,
                processing_guarantee: session_guarantee(session)?,
                checkpoint_interval_ms: None,
            }
        };
        self.catalog
            .write()
            .queries
            .insert(meta.id.clone(), meta.clone());
        self.save_catalog()?;
        let start = session_start(session);
        if let Err(e) = self.run_plan(&meta, plan, start).await {
            self.catalog.write().queries.remove(&meta.id);
            self.save_catalog()?;
            return Err(e);
        }
        Ok(done(
            "INSERT",
            format!("query {} inserts into {name}", meta.id),
        ))
    }

    /// Re-plans and starts a saved query (on restart and for source tables).
    pub(super) async fn start_persistent_query(&self, meta: &QueryMeta) -> Result<()> {
        let (query, window, emit) = match crate::sql::parse_script(&meta.query_text)?
            .pop()
            .map(|p| p.statement)
        {
            Some(crate::sql::Statement::Select {
                query,
                window,
                emit,
                ..
            }) => (query, window, emit.or(meta.emit)),
            _ => {
                return Err(SluiceError::Internal(format!(
                    "query {} has no SELECT",
                    meta.id
                )))
            }
        };
        let catalog = self.catalog.read().clone();
        let plan = if meta.id.starts_with("MATERIALIZE_") {
            // A source table: its own topic, materialized, not written back.
            let relation = catalog
                .relation(&meta.sink)
                .ok_or_else(|| SluiceError::Internal(format!("table {} is missing", meta.sink)))?;
            StreamPlan {
                sources: vec![relation.name.clone()],
                flow: crate::dataflow::Dataflow::input(),
                schema: relation.schema(),
                changelog: true,
                key_columns: relation.key_indices(),
                limit: None,
                logical_plan: String::new(),
                retention: None,
                lookups: Vec::new(),
            }
        } else {
            planner::plan_continuous(
                &self.session_state(),
                &catalog,
                &query,
                window.as_ref(),
                emit,
                false,
            )
            .await?
        };
        self.run_plan(meta, plan, StartFrom::Earliest).await
    }

    /// The writer of a query's output topic: exactly-once (records visible
    /// when their checkpoint commits) unless the query or the server asks
    /// for at-least-once, or the backend cannot.
    async fn topic_writer(
        &self,
        meta: &QueryMeta,
        state: &crate::state::QueryState,
        topic: &str,
        role: &str,
    ) -> Result<Box<dyn crate::connectors::LogWriter>> {
        let failed = |e| SluiceError::connector(format!("writing topic '{topic}'"), e);
        let guarantee = meta
            .processing_guarantee
            .unwrap_or(self.config.processing_guarantee);
        if guarantee == ProcessingGuarantee::ExactlyOnce {
            let producer = format!("{}{role}", state.producer(&meta.id)?);
            if let Some(writer) = self
                .backend
                .exactly_once_writer(topic, &producer)
                .await
                .map_err(failed)?
            {
                return Ok(writer);
            }
            tracing::warn!(
                query = %meta.id,
                backend = self.backend.kind(),
                "exactly-once output is not available on this backend yet; writing at least once"
            );
        }
        self.backend.writer(topic).await.map_err(failed)
    }

    /// Starts a planned persistent query: source → operators → (materialize) → topic.
    async fn run_plan(
        &self,
        meta: &QueryMeta,
        plan: StreamPlan,
        default_start: StartFrom,
    ) -> Result<()> {
        let catalog = self.catalog.read().clone();
        let sink_rel = catalog
            .relation(&meta.sink)
            .cloned()
            .ok_or_else(|| SluiceError::Internal(format!("sink {} is missing", meta.sink)))?;
        let state = self.state.query(&meta.id)?;
        let first_epoch = state.epoch()?;
        if first_epoch > 0 {
            let format = state.readable_format().map_err(|e| match e {
                SluiceError::IncompatibleState(m) => {
                    SluiceError::IncompatibleState(format!("query {}: {m}", meta.id))
                }
                e => e,
            })?;
            // Never misread state: a stream-table join checkpointed by a build
            // before state format 2 numbered its inputs differently.
            if format < 2 && !plan.lookups.is_empty() {
                return Err(SluiceError::IncompatibleState(format!(
                    "query {} was checkpointed by an older Sluice (state format {format}; this \
                     build writes {}), whose stream-table joins kept no copy of the table: \
                     drop the query and create it again to rebuild its state from its inputs",
                    meta.id,
                    crate::state::STATE_FORMAT
                )));
            }
        }
        let mut inputs = Vec::with_capacity(plan.sources.len());
        for (i, name) in plan.sources.iter().enumerate() {
            let relation = catalog
                .relation(name)
                .cloned()
                .ok_or_else(|| SluiceError::Internal(format!("source {name} is missing")))?;
            let lookup = plan.lookups.contains(name);
            let start = match state.offsets(i)? {
                Some(offsets) => StartFrom::Offsets(offsets),
                // A join's copy of a table starts with the whole table.
                None if lookup => StartFrom::Earliest,
                None => default_start.clone(),
            };
            let positions = match &start {
                StartFrom::Offsets(o) => o.iter().copied().collect(),
                _ => BTreeMap::new(),
            };
            let reader = crate::planner::providers::open_reader(
                &self.backend,
                &self.file_access,
                &relation,
                start,
                true,
            )
            .await?;
            inputs.push(SourceInput {
                // A file source without follow (or a nexmark source with a number
                // of events) ends; the query then finishes when all inputs have.
                bounded: relation.connector.is_bounded(),
                lookup,
                relation,
                reader,
                positions,
            });
        }
        let source_rel = inputs
            .first()
            .map(|i| i.relation.clone())
            .ok_or_else(|| SluiceError::Internal(format!("query {} reads nothing", meta.id)))?;
        // The catalog's column types are what readers of the topic and pull queries
        // see (e.g. BIGINT for an unsigned count); cast the pipeline's output to them.
        let mut plan = plan;
        conform_to(&mut plan, &sink_rel)?;
        let mut flow = plan.flow;
        if self.config.test_planner_variant {
            flow.push(Box::new(crate::planner::test_variant::Passthrough));
        }
        if sink_rel.is_table() {
            let table = self.materialized_table(&sink_rel)?;
            let mut materialize = Materialize::new(table);
            if let Some(r) = plan.retention {
                materialize = materialize.with_retention(r);
            }
            flow.push(Box::new(materialize));
        }
        check_plan_identity(&state, &meta.id, first_epoch, &flow.signature())?;
        let materialize_only = meta.id.starts_with("MATERIALIZE_");
        let dead_letter = self.dead_letters().await?;
        let on_error = meta.on_error.unwrap_or(self.config.on_error);
        let metrics = Arc::new(QueryMetrics::default());
        let errors = RowErrorPolicy::new(meta.id.clone(), on_error, dead_letter, metrics.clone());
        let sink: Box<dyn Sink> = if materialize_only {
            Box::new(NullSink)
        } else {
            let writer: Box<dyn crate::connectors::LogWriter> = match &sink_rel.connector {
                SourceConnector::File { path, .. } => Box::new(
                    crate::connectors::file::FileWriter::create(
                        path,
                        &self.file_access,
                        sink_rel.is_table(),
                    )
                    .map_err(|e| SluiceError::connector(format!("writing '{path}'"), e))?,
                ),
                SourceConnector::Nexmark(_) => {
                    return Err(SluiceError::Internal(format!(
                        "{} is a nexmark source and cannot be written",
                        sink_rel.name
                    )))
                }
                SourceConnector::Topic => {
                    self.topic_writer(meta, &state, &sink_rel.topic, "").await?
                }
            };
            Box::new(
                TopicSink::new(
                    RecordEncoder::new(&sink_rel),
                    writer,
                    sink_rel.topic.clone(),
                )
                .with_errors(errors.clone()),
            )
        };
        let late_sink: Option<Box<dyn Sink>> = match &meta.late_topic {
            Some(t) => {
                self.ensure_topic(t, None, source_rel.partitions, &WithOptions::new())
                    .await?;
                let writer = self.topic_writer(meta, &state, t, ".late").await?;
                Some(Box::new(
                    TopicSink::new(RecordEncoder::new(&source_rel), writer, t.clone())
                        .with_errors(errors.clone()),
                ))
            }
            None => None,
        };
        let mut pipeline = Pipeline {
            flow,
            sink,
            late_sink,
            state: Some(state),
            metrics: metrics.clone(),
            errors: errors.clone(),
        };
        pipeline.restore()?;
        let (drain_tx, drain_rx) = crate::dataflow::query::drain_channel();
        let source = SourceTask {
            inputs,
            metrics,
            errors,
            checkpoint_interval: Some(
                meta.checkpoint_interval_ms
                    .map(|ms| std::time::Duration::from_millis(ms.max(10) as u64))
                    .unwrap_or(self.config.checkpoint_interval),
            ),
            budget: Some(self.state.budget().clone()),
            first_epoch,
            drain: drain_rx,
        };
        let handle = QueryHandle::spawn(meta.id.clone(), source, pipeline, drain_tx);
        self.running.lock().insert(meta.id.clone(), handle);
        Ok(())
    }

    /// The server's dead-letter topic (created on first use), if it has one.
    pub(super) async fn dead_letters(&self) -> Result<Option<Arc<DeadLetters>>> {
        let Some(topic) = &self.config.dead_letter_topic else {
            return Ok(None);
        };
        let dl = self
            .dead_letters
            .get_or_try_init(|| async {
                self.ensure_topic(topic, None, 1, &WithOptions::new())
                    .await?;
                let writer = self.backend.writer(topic).await.map_err(|e| {
                    SluiceError::connector(format!("writing dead-letter topic '{topic}'"), e)
                })?;
                Ok::<_, SluiceError>(Arc::new(DeadLetters::new(
                    topic.clone(),
                    writer,
                    Some(self.config.data_dir.join("dead_letter_marks.json")),
                )))
            })
            .await?;
        Ok(Some(dl.clone()))
    }

    /// Stops and forgets the queries that write `name` (before replacing or dropping it).
    fn drop_queries_writing(&self, name: &str) -> Result<Vec<String>> {
        let ids: Vec<String> = self
            .catalog
            .read()
            .queries_writing(name)
            .iter()
            .map(|q| q.id.clone())
            .collect();
        for id in &ids {
            if let Some(h) = self.running.lock().remove(id) {
                h.stop();
            }
            tracing::info!(query = %id, "query terminated: its output was dropped");
            self.forget_retries(id);
            self.catalog.write().queries.remove(id);
            self.state.drop_query(id)?;
        }
        Ok(ids)
    }

    pub(super) async fn drop_relation(
        &self,
        kind: Option<RelationKind>,
        name: Ident,
        if_exists: bool,
        delete_topic: bool,
    ) -> Result<StatementResult> {
        let _guard = self.ddl_lock.lock().await;
        let name = normalize_ident(&name);
        let tag = format!("DROP {}", kind.map(|k| k.keyword()).unwrap_or("TABLE"));
        let Some(relation) = self.catalog.read().relation(&name).cloned() else {
            if if_exists {
                return Ok(done(&tag, format!("{name} does not exist")));
            }
            return Err(SluiceError::undefined(
                format!("'{name}' does not exist"),
                None,
                Some("SHOW STREAMS and SHOW TABLES list what exists".into()),
            ));
        };
        if let Some(k) = kind {
            if k != relation.kind {
                return Err(SluiceError::sql(format!(
                    "{name} is a {}, not a {}",
                    relation.kind.keyword(),
                    k.keyword()
                ))
                .with_hint(format!("DROP {} {name}", relation.kind.keyword())));
            }
        }
        let readers: Vec<String> = {
            let catalog = self.catalog.read();
            catalog
                .relations
                .values()
                .filter(|r| r.reads.contains(&name))
                .map(|r| r.name.clone())
                .chain(
                    catalog
                        .queries
                        .values()
                        .filter(|q| {
                            q.sink != name
                                && q.id.starts_with("INSERTQUERY")
                                && q.query_text.to_lowercase().contains(&name)
                        })
                        .map(|q| q.id.clone()),
                )
                .chain(super::views::views_reading(&catalog, &name))
                .collect()
        };
        if !readers.is_empty() {
            return Err(SluiceError::sql(format!(
                "cannot drop {name}: {} read it",
                readers.join(", ")
            ))
            .with_hint("drop those first (or TERMINATE their queries)"));
        }
        self.drop_queries_writing(&name)?;
        // A relation created again under this name reads its topic anew: bad
        // records the old one dead-lettered must not hide the new one's.
        if let Some(dl) = self.dead_letters.get() {
            dl.forget_relation(&name);
        }
        self.catalog.write().relations.remove(&name);
        self.materialized.write().remove(&name);
        self.ctx.deregister_table(name.as_str())?;
        self.save_catalog()?;
        if delete_topic && relation.connector == SourceConnector::Topic {
            self.backend
                .delete_topic(&relation.topic)
                .await
                .map_err(|e| {
                    SluiceError::connector(format!("deleting topic '{}'", relation.topic), e)
                })?;
        }
        Ok(done(
            &tag,
            format!(
                "{name} dropped{}",
                if delete_topic {
                    format!(" and topic '{}' deleted", relation.topic)
                } else {
                    String::new()
                }
            ),
        ))
    }

    pub(super) async fn terminate(&self, id: Option<String>) -> Result<StatementResult> {
        let _guard = self.ddl_lock.lock().await;
        let ids: Vec<String> = match id {
            // A push query streaming to a client (ksqlDB terminates those too).
            Some(id) if self.push_queries.close(&id) => {
                tracing::info!(query = %id, "push query terminated");
                return Ok(done("TERMINATE", format!("terminated {id}")));
            }
            Some(id) => {
                let catalog = self.catalog.read();
                let found = catalog
                    .queries
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case(&id))
                    .cloned()
                    .ok_or_else(|| {
                        SluiceError::undefined(
                            format!("query '{id}' does not exist"),
                            None,
                            Some("SHOW QUERIES lists the running queries".into()),
                        )
                    })?;
                if found.starts_with("MATERIALIZE_") {
                    return Err(SluiceError::sql(format!(
                        "{found} keeps a source table materialized; DROP the table instead"
                    )));
                }
                vec![found]
            }
            None => self
                .catalog
                .read()
                .queries
                .keys()
                .filter(|k| !k.starts_with("MATERIALIZE_"))
                .cloned()
                .collect(),
        };
        for id in &ids {
            if let Some(h) = self.running.lock().remove(id) {
                h.stop();
            }
            tracing::info!(query = %id, "query terminated");
            self.forget_retries(id);
            let mut catalog = self.catalog.write();
            catalog.queries.remove(id);
            for r in catalog.relations.values_mut() {
                if r.written_by.as_deref() == Some(id.as_str()) {
                    r.written_by = None;
                }
            }
            drop(catalog);
            self.state.drop_query(id)?;
        }
        self.save_catalog()?;
        Ok(done("TERMINATE", format!("terminated {}", ids.join(", "))))
    }
}

/// `connector = 'file'` with `path` (and `follow`), or the default topic connector.
fn source_connector(with: &WithOptions) -> Result<SourceConnector> {
    let connector = with.get("connector").map(|v| v.value.to_ascii_lowercase());
    if connector.as_deref() != Some("nexmark") {
        if let Some(key) = crate::connectors::nexmark::config::PROPERTIES
            .iter()
            .find(|k| with.contains_key(**k))
        {
            return Err(with_error(
                with,
                key,
                format!("{key} needs connector='nexmark'"),
                "WITH (connector='nexmark', nexmark.table='bid', events=1000000)",
            ));
        }
    }
    match connector.as_deref() {
        None | Some("kafka") | Some("topic") => {
            if with.contains_key("path") {
                return Err(with_error(
                    with,
                    "path",
                    "path needs connector='file'".into(),
                    "WITH (connector='file', path='/data/events.jsonl')",
                ));
            }
            Ok(SourceConnector::Topic)
        }
        Some("file") => {
            let path = with.get("path").map(|v| v.value.clone()).ok_or_else(|| {
                with_error(
                    with,
                    "connector",
                    "connector='file' needs a path".into(),
                    "WITH (connector='file', path='/data/events.jsonl')",
                )
            })?;
            let follow = match with.get("follow").map(|v| v.value.to_ascii_lowercase()) {
                None => false,
                Some(v) if v == "true" => true,
                Some(v) if v == "false" => false,
                Some(v) => {
                    return Err(with_error(
                        with,
                        "follow",
                        format!("follow must be true or false, not '{v}'"),
                        "follow=true tails the file",
                    ))
                }
            };
            Ok(SourceConnector::File { path, follow })
        }
        Some("nexmark") => {
            if with.contains_key("path") {
                return Err(with_error(
                    with,
                    "path",
                    "path needs connector='file'".into(),
                    "remove path",
                ));
            }
            let get = |k: &str| with.get(k).map(|v| v.value.clone());
            let partitions = get("partitions").and_then(|p| p.parse::<i32>().ok());
            let config = crate::connectors::nexmark::config::parse(get, partitions)
                .map_err(|e| with_error(with, e.key, e.message, e.hint))?;
            Ok(SourceConnector::Nexmark(config))
        }
        Some(other) => Err(with_error(
            with,
            "connector",
            format!("connector '{other}' is not supported"),
            "connector='kafka' (the default), connector='file' or connector='nexmark'",
        )),
    }
}

/// A nexmark source's columns: the generator's when none are declared, otherwise
/// checked against them (any subset, in any order, with the generator's types).
/// Other sources must declare their columns.
fn declared_or_generated_columns(
    c: &CreateSource,
    connector: &SourceConnector,
    columns: &mut Vec<ColumnMeta>,
) -> Result<()> {
    use crate::connectors::nexmark;
    let SourceConnector::Nexmark(config) = connector else {
        if columns.is_empty() {
            return Err(SluiceError::sql(format!(
                "{} needs a column list",
                normalize_ident(&c.name)
            ))
            .with_hint(format!(
                "CREATE {} {} (col TYPE, ...) WITH (...); only connector='nexmark' knows its columns",
                c.kind.keyword(),
                c.name.value
            )));
        }
        return Ok(());
    };
    if c.kind != RelationKind::Stream {
        return Err(
            SluiceError::sql("a nexmark source is an append-only STREAM, not a TABLE")
                .with_hint("CREATE STREAM ... WITH (connector='nexmark', ...)"),
        );
    }
    if c.with.contains_key("processing_time") {
        return Err(with_error(
            &c.with,
            "processing_time",
            "the event time of nexmark rows is their date_time".into(),
            "remove processing_time",
        ));
    }
    if let Some(ts) = c.with.get("timestamp") {
        if !ts.value.eq_ignore_ascii_case("date_time") {
            return Err(with_error(
                &c.with,
                "timestamp",
                "the event time of nexmark rows is date_time".into(),
                "remove timestamp",
            ));
        }
    }
    if columns.is_empty() {
        for (name, sql_type) in nexmark::batch::columns(config.table) {
            columns.push(ColumnMeta {
                name: name.to_string(),
                sql_type: sql_type.to_string(),
                key: false,
                not_null: false,
            });
        }
        return Ok(());
    }
    for (meta, spec) in columns.iter().zip(&c.columns) {
        let position = Some(crate::error::SqlPosition::of(&spec.name));
        if meta.key {
            return Err(SluiceError::sql_at(
                "nexmark rows have no key",
                position,
                Some("remove KEY".into()),
            ));
        }
        let data_type = types::parse_type(&meta.sql_type)?;
        nexmark::projection(config.table, &[(meta.name.clone(), data_type)]).map_err(|e| {
            SluiceError::sql_at(
                e.to_string(),
                position,
                Some("leave out the column list to get every column".into()),
            )
        })?;
    }
    Ok(())
}

/// The guarantee the session set for the queries it creates (ksqlDB's
/// `processing.guarantee`), if any.
fn session_guarantee(session: &Session) -> Result<Option<ProcessingGuarantee>> {
    match session.processing_guarantee() {
        None => Ok(None),
        Some(v) => ProcessingGuarantee::parse(v)
            .map(Some)
            .map_err(|e| SluiceError::sql(format!("processing.guarantee {e}"))),
    }
}

/// Where a new persistent query starts reading: earliest, unless the session set
/// `auto.offset.reset` to latest.
fn session_start(session: &Session) -> StartFrom {
    let latest = ["auto.offset.reset", "ksql.streams.auto.offset.reset"]
        .iter()
        .filter_map(|k| session.properties.get(*k))
        .any(|v| v.eq_ignore_ascii_case("latest"));
    if latest {
        StartFrom::Latest
    } else {
        StartFrom::Earliest
    }
}

/// Refuses to run a query whose state was checkpointed under another plan
/// shape than the one planned now (its operators' state ids would point at
/// other operators' state); records the plan when the query has no state yet,
/// or state from before plans were recorded.
fn check_plan_identity(
    state: &crate::state::QueryState,
    query: &str,
    epoch: u64,
    signature: &str,
) -> Result<()> {
    if epoch > 0 {
        if let Some(stored) = state.plan()? {
            if stored == signature {
                return Ok(());
            }
            return Err(SluiceError::IncompatibleState(format!(
                "query {query} was checkpointed under another plan than this build makes of \
                 its SQL, so its state would be read by the wrong operators. Checkpointed \
                 under:\n{stored}\nplanned now:\n{signature}\nRun the Sluice version that \
                 created it, or drop the query and create it again to rebuild its state from \
                 its inputs"
            )));
        }
    }
    state.record_plan(signature)
}

/// Makes a stream query's output match an existing stream's columns (INSERT INTO):
/// same number of columns, renamed and cast to the target's names and types.
fn conform_to(plan: &mut StreamPlan, target: &Relation) -> Result<()> {
    let target_schema = target.schema();
    if plan.schema.fields().len() != target_schema.fields().len() {
        return Err(SluiceError::sql(format!(
            "the query produces {} columns but {} has {}",
            plan.schema.fields().len(),
            target.name,
            target_schema.fields().len()
        ))
        .with_hint(format!(
            "select exactly: {}",
            target
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if plan.schema.as_ref() == target_schema.as_ref() {
        return Ok(());
    }
    let mut exprs: Vec<Arc<dyn datafusion::physical_plan::PhysicalExpr>> = Vec::new();
    for (i, (from, to)) in plan
        .schema
        .fields()
        .iter()
        .zip(target_schema.fields())
        .enumerate()
    {
        if !arrow::compute::can_cast_types(from.data_type(), to.data_type()) {
            return Err(SluiceError::sql(format!(
                "column {} ('{}') is {} but {}.{} is {}",
                i + 1,
                from.name(),
                types::sql_type_name(from.data_type()),
                target.name,
                to.name(),
                types::sql_type_name(to.data_type())
            )));
        }
        let col = Arc::new(datafusion::physical_expr::expressions::Column::new(
            from.name(),
            i,
        ));
        exprs.push(if from.data_type() == to.data_type() {
            col
        } else {
            Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
                col,
                to.data_type().clone(),
                None,
            ))
        });
    }
    plan.flow.push(Box::new(crate::operators::Project::new(
        exprs,
        target_schema.clone(),
    )));
    plan.schema = target_schema;
    Ok(())
}
