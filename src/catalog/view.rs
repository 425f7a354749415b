//! Views: named queries (`CREATE VIEW`). A view keeps no data and runs no
//! query; the planner expands it where a query reads it.

use serde::{Deserialize, Serialize};

use super::relation::{ColumnMeta, FormatMeta, KeyFormat, Relation, ValueFormat};
use crate::sql::RelationKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewMeta {
    pub name: String,
    /// The SELECT the view names, re-parsed where the view is read.
    pub query_text: String,
    /// The statement that created it (SHOW CREATE VIEW, pg_views).
    pub statement: String,
    /// The query's columns when the view was created (DESCRIBE, catalogs).
    pub columns: Vec<ColumnMeta>,
}

impl ViewMeta {
    /// The view as the Postgres catalogs list relations: a view (relkind
    /// `v`, as streams are) with the query's columns and no topic.
    pub fn as_relation(&self) -> crate::error::Result<Relation> {
        Relation::new(
            self.name.clone(),
            RelationKind::Stream,
            self.columns.clone(),
            String::new(),
            0,
            FormatMeta {
                value_format: ValueFormat::Json,
                key_format: KeyFormat::None,
                timestamp: None,
                timestamp_format: None,
                delimiter: ',',
                key_delimiter: ',',
                wrap_single_value: true,
                key_in_value: Some(false),
                ksqldb_json: true,
                watermark_delay_ms: 0,
                idle_timeout_ms: None,
                processing_time: false,
            },
            self.statement.clone(),
            None,
            Vec::new(),
        )
    }
}
