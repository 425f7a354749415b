//! The catalog: streams, tables and persistent queries, saved in the data directory
//! so a restart brings every one of them back.

mod persist;
mod relation;
mod view;

pub use persist::CatalogFile;
pub use relation::*;
pub use view::ViewMeta;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sql::EmitMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QueryStatus {
    Running,
    /// A query that failed keeps its entry so SHOW QUERIES can say why.
    Error,
}

/// A persistent query: CREATE ... AS SELECT or INSERT INTO ... SELECT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryMeta {
    pub id: String,
    /// The full statement text as the user wrote it.
    pub statement: String,
    /// The SELECT it runs, re-planned on restart.
    pub query_text: String,
    /// The relation it writes.
    pub sink: String,
    pub emit: Option<EmitMode>,
    pub status: QueryStatus,
    #[serde(default)]
    pub error: Option<String>,
    /// Topic that receives events too late for their windows (`late_topic`).
    #[serde(default)]
    pub late_topic: Option<String>,
    /// What a bad record or a failing expression does to this query
    /// (`WITH (on_error=...)`); `None` follows the server's `--on-error`.
    #[serde(default)]
    pub on_error: Option<OnError>,
    /// What its output promises across crashes (`WITH
    /// (processing_guarantee=...)`); `None` follows the server's default.
    #[serde(default)]
    pub processing_guarantee: Option<ProcessingGuarantee>,
    /// Milliseconds between its checkpoints (`WITH (checkpoint_interval=...)`);
    /// `None` follows the server's `--checkpoint-interval-ms`.
    #[serde(default)]
    pub checkpoint_interval_ms: Option<i64>,
}

/// What a query's output promises across crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Each result is in the output once: it becomes visible when the
    /// checkpoint that produced it commits.
    #[default]
    ExactlyOnce,
    /// Results are visible as soon as they are written; after a crash the
    /// results since the last checkpoint are written again.
    AtLeastOnce,
}

impl ProcessingGuarantee {
    /// Sluice's names, and ksqlDB's (`processing.guarantee`); the error
    /// says what else is accepted.
    pub fn parse(text: &str) -> Result<ProcessingGuarantee, String> {
        match text.to_ascii_lowercase().replace('-', "_").as_str() {
            "exactly_once" | "exactly_once_v2" => Ok(ProcessingGuarantee::ExactlyOnce),
            "at_least_once" => Ok(ProcessingGuarantee::AtLeastOnce),
            _ => Err(format!(
                "'{text}' is neither 'exactly_once' nor 'at_least_once'"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingGuarantee::ExactlyOnce => "exactly_once",
            ProcessingGuarantee::AtLeastOnce => "at_least_once",
        }
    }
}

/// What a row-level problem (an undecodable record, an expression that fails, an
/// output record too large for its topic) does to a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Skip the record (or make the failing value NULL), count it, log a sample
    /// and dead-letter it; the query goes on.
    #[default]
    Continue,
    /// Stop the query with the error (its state stays at the last checkpoint).
    Fail,
}

impl OnError {
    pub fn parse(text: &str) -> Option<OnError> {
        match text.to_ascii_lowercase().as_str() {
            "continue" | "log" | "skip" => Some(OnError::Continue),
            "fail" | "stop" => Some(OnError::Fail),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Catalog {
    pub relations: BTreeMap<String, Relation>,
    /// Named queries (CREATE VIEW), in the same namespace as relations.
    #[serde(default)]
    pub views: BTreeMap<String, ViewMeta>,
    pub queries: BTreeMap<String, QueryMeta>,
    /// Sequence for query ids; never reused, so state of a dropped query cannot be
    /// picked up by a new one.
    pub next_query_seq: u64,
}

impl Catalog {
    pub fn relation(&self, name: &str) -> Option<&Relation> {
        self.relations.get(name)
    }

    /// Queries that read `name` (by the relation names recorded at planning time).
    pub fn queries_reading(&self, name: &str) -> Vec<&QueryMeta> {
        self.relations
            .values()
            .filter(|r| r.reads.iter().any(|n| n == name))
            .filter_map(|r| r.written_by.as_ref())
            .filter_map(|q| self.queries.get(q))
            .collect()
    }

    /// Queries writing into `name`: the CSAS/CTAS that created it and INSERT INTO queries.
    pub fn queries_writing(&self, name: &str) -> Vec<&QueryMeta> {
        self.queries.values().filter(|q| q.sink == name).collect()
    }

    pub fn new_query_id(&mut self, prefix: &str, sink: &str) -> String {
        self.next_query_seq += 1;
        format!(
            "{}_{}_{}",
            prefix,
            sink.to_ascii_uppercase(),
            self.next_query_seq
        )
    }
}
