//! A stream or table: its columns, its topic and how records are encoded.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sql::{types, RelationKind};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnMeta {
    pub name: String,
    /// The SQL type as shown to users ("VARCHAR", "DECIMAL(10,2)").
    pub sql_type: String,
    pub key: bool,
    #[serde(default)]
    pub not_null: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    Json,
    Delimited,
    /// ksqlDB's KAFKA format: one value column in Kafka's primitive serializer bytes.
    Kafka,
}

impl ValueFormat {
    /// The name users write in `value_format` and see in DESCRIBE.
    pub fn name(self) -> &'static str {
        match self {
            ValueFormat::Json => "JSON",
            ValueFormat::Delimited => "DELIMITED",
            ValueFormat::Kafka => "KAFKA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFormat {
    /// ksqlDB's KAFKA format: one key column in the bytes of Kafka's primitive
    /// serializers (INT 4 bytes big-endian, STRING UTF-8, ...).
    #[serde(rename = "kafka_serializers")]
    Kafka,
    /// One key column as its text. Sluice wrote KAFKA keys like this before it
    /// followed Kafka's serializers; catalogs saved then (where "kafka" meant
    /// this) load as it, so their topics keep reading the same bytes.
    #[serde(rename = "kafka")]
    KafkaText,
    /// A JSON scalar for one key column, a JSON object for several.
    #[serde(rename = "json")]
    Json,
    /// The key columns as one delimited line (`key_delimiter`).
    #[serde(rename = "delimited")]
    Delimited,
    /// No key: records are produced with a null key.
    #[serde(rename = "none")]
    None,
}

impl KeyFormat {
    /// The name users write in `key_format` and see in DESCRIBE.
    pub fn name(self) -> &'static str {
        match self {
            KeyFormat::Kafka => "KAFKA",
            KeyFormat::KafkaText => "KAFKA_TEXT",
            KeyFormat::Json => "JSON",
            KeyFormat::Delimited => "DELIMITED",
            KeyFormat::None => "NONE",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FormatMeta {
    pub value_format: ValueFormat,
    pub key_format: KeyFormat,
    /// Column holding event time; without it the record timestamp is used.
    pub timestamp: Option<String>,
    /// chrono format for a VARCHAR timestamp column.
    pub timestamp_format: Option<String>,
    /// Field delimiter for `value_format='delimited'`.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Field delimiter for `key_format='delimited'`.
    #[serde(default = "default_delimiter")]
    pub key_delimiter: char,
    /// `wrap_single_value=false`: a value with one column is that column's bare
    /// JSON value, not an object holding it.
    #[serde(default = "default_true")]
    pub wrap_single_value: bool,
    /// Whether values repeat the key columns. ksqlDB keeps key columns in the
    /// record key only (`AS_VALUE(k)` copies one into the value); `key_in_value=true`
    /// asks for self-contained values. `None`: saved before this option, when
    /// JSON values repeated the keys and delimited ones did not; such relations
    /// keep writing what they wrote.
    #[serde(default)]
    pub key_in_value: Option<bool>,
    /// JSON values typed as ksqlDB writes them: TIMESTAMP as epoch
    /// milliseconds, DATE as days, TIME as milliseconds of the day, BYTES as
    /// base64, NaN and ±Infinity as strings. Off in catalogs saved before it,
    /// whose relations keep arrow-json's ISO texts and hex.
    #[serde(default)]
    pub ksqldb_json: bool,
    /// Watermarks trail the largest event time seen per partition by this much
    /// (`watermark_delay` or `WATERMARK FOR ts AS ts - INTERVAL ...`).
    #[serde(default)]
    pub watermark_delay_ms: i64,
    /// A partition without records for this long stops holding the watermark back.
    #[serde(default)]
    pub idle_timeout_ms: Option<i64>,
    /// Event time is the wall clock when the record is read (`processing_time=true`).
    #[serde(default)]
    pub processing_time: bool,
}

fn default_true() -> bool {
    true
}

fn default_delimiter() -> char {
    ','
}

/// Where a relation's records live.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConnector {
    /// A topic of the log backend (Kafka or the local log).
    #[default]
    Topic,
    /// Lines of a file, a directory of files or a glob (`connector = 'file'`).
    File { path: String, follow: bool },
    /// Nexmark events generated in process (`connector = 'nexmark'`).
    Nexmark(crate::connectors::nexmark::NexmarkConfig),
}

impl SourceConnector {
    /// True when the source ends by itself, so a query over it finishes.
    pub fn is_bounded(&self) -> bool {
        match self {
            SourceConnector::Topic => false,
            SourceConnector::File { follow, .. } => !follow,
            SourceConnector::Nexmark(config) => config.events.is_some(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relation {
    pub name: String,
    pub kind: RelationKind,
    pub columns: Vec<ColumnMeta>,
    pub topic: String,
    pub partitions: i32,
    pub format: FormatMeta,
    /// The DDL text that created it.
    pub statement: String,
    /// Id of the query that populates it (CREATE ... AS SELECT), if any.
    pub written_by: Option<String>,
    /// Relations its defining query reads.
    #[serde(default)]
    pub reads: Vec<String>,
    #[serde(default)]
    pub connector: SourceConnector,
    #[serde(skip)]
    schema: Option<SchemaRef>,
}

impl Relation {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        kind: RelationKind,
        columns: Vec<ColumnMeta>,
        topic: String,
        partitions: i32,
        format: FormatMeta,
        statement: String,
        written_by: Option<String>,
        reads: Vec<String>,
    ) -> Result<Self> {
        let mut r = Relation {
            name,
            kind,
            columns,
            topic,
            partitions,
            format,
            statement,
            written_by,
            reads,
            connector: SourceConnector::Topic,
            schema: None,
        };
        r.schema = Some(r.build_schema()?);
        Ok(r)
    }

    fn build_schema(&self) -> Result<SchemaRef> {
        let mut fields = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            // A table's value columns are NULL in a delete (a tombstone carries
            // no value), so only its key is non-nullable in the schema; NOT NULL
            // on a value column is still enforced on every upsert (decode.rs).
            let nullable = !c.not_null || (self.is_table() && !c.key);
            fields.push(Field::new(
                &c.name,
                types::parse_type(&c.sql_type)?,
                nullable,
            ));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Re-derives cached fields after loading from disk.
    pub(crate) fn hydrate(&mut self) -> Result<()> {
        self.schema = Some(self.build_schema()?);
        Ok(())
    }

    pub fn schema(&self) -> SchemaRef {
        match &self.schema {
            Some(s) => s.clone(),
            // Only reachable for a Relation built by hand without `new`; derive it.
            None => self
                .build_schema()
                .unwrap_or_else(|_| Arc::new(Schema::empty())),
        }
    }

    /// Indices of the key columns, in declaration order.
    pub fn key_indices(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect()
    }

    /// Indices of the columns a record's value holds: the value columns, and
    /// the key columns too when they have no record key to live in or
    /// `key_in_value` asks for them.
    pub fn value_indices(&self) -> Vec<usize> {
        let legacy = self.format.value_format == ValueFormat::Json;
        let keys_too =
            self.format.key_in_value.unwrap_or(legacy) || self.format.key_format == KeyFormat::None;
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| keys_too || !c.key)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn is_table(&self) -> bool {
        self.kind == RelationKind::Table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_saved_before_kafka_serializers_keep_their_encoding() {
        // A relation's format as catalog.json held it before #14.
        let old = r#"{"value_format":"json","key_format":"kafka","timestamp":null,
            "timestamp_format":null,"delimiter":","}"#;
        let format: FormatMeta = serde_json::from_str(old).unwrap();
        assert_eq!(format.key_format, KeyFormat::KafkaText);
        assert_eq!(format.key_in_value, None);
        assert!(format.wrap_single_value);
        let col = |name: &str, key: bool| ColumnMeta {
            name: name.into(),
            sql_type: "INT".into(),
            key,
            not_null: false,
        };
        let mut r = Relation::new(
            "r".into(),
            RelationKind::Stream,
            vec![col("k", true), col("v", false)],
            "r".into(),
            1,
            format,
            String::new(),
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(
            r.value_indices(),
            vec![0, 1],
            "old JSON values repeat the key"
        );
        r.format.value_format = ValueFormat::Delimited;
        assert_eq!(r.value_indices(), vec![1], "old delimited values never did");
        // Saved again, the new names round-trip.
        r.format.key_format = KeyFormat::Kafka;
        let text = serde_json::to_string(&r.format).unwrap();
        assert!(
            text.contains(r#""key_format":"kafka_serializers""#),
            "{text}"
        );
        let back: FormatMeta = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r.format);
    }
}
