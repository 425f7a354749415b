//! DataFusion tables for Sluice relations, used by pull queries (and for schemas
//! when planning continuous queries).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{Relation, SourceConnector};
use crate::connectors::file::FileReader;
use crate::connectors::{LogReader, SharedBackend, StartFrom};
use crate::error::SluiceError;
use crate::formats::RecordDecoder;
use crate::operators::MaterializedTable;

/// A table's materialized rows: a pull query sees a consistent snapshot.
pub struct MaterializedProvider {
    pub table: Arc<MaterializedTable>,
}

impl fmt::Debug for MaterializedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaterializedProvider").finish()
    }
}

#[async_trait]
impl TableProvider for MaterializedProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self
            .table
            .snapshot()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.table.schema(),
            projection.cloned(),
        )?)
    }
}

/// A stream (or a table without materialized rows): scanning reads the topic from
/// the beginning to its current end.
pub struct TopicProvider {
    pub relation: Relation,
    pub backend: SharedBackend,
}

impl fmt::Debug for TopicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicProvider")
            .field("topic", &self.relation.topic)
            .finish()
    }
}

/// Opens a reader over a relation's records: its topic, or its files. `tail`
/// keeps a `follow = true` file source waiting for new lines.
pub async fn open_reader(
    backend: &SharedBackend,
    relation: &Relation,
    start: StartFrom,
    tail: bool,
) -> crate::error::Result<Box<dyn LogReader>> {
    match &relation.connector {
        SourceConnector::File { path, follow } => FileReader::open(path, start, *follow && tail)
            .map(|r| Box::new(r) as Box<dyn LogReader>)
            .map_err(|e| SluiceError::connector(format!("reading '{path}'"), e)),
        SourceConnector::Nexmark(config) => {
            crate::connectors::nexmark::open_relation(relation, config, &start)
                .map(|r| Box::new(r) as Box<dyn LogReader>)
                .map_err(|e| SluiceError::Catalog(format!("{}: {e}", relation.name)))
        }
        SourceConnector::Topic => backend
            .reader(&relation.topic, start)
            .await
            .map_err(|e| SluiceError::connector(format!("reading topic '{}'", relation.topic), e)),
    }
}

impl TopicProvider {
    pub async fn read_all(
        relation: &Relation,
        backend: &SharedBackend,
    ) -> crate::error::Result<Vec<RecordBatch>> {
        if let SourceConnector::Nexmark(config) = &relation.connector {
            if config.events.is_none() {
                return Err(SluiceError::sql(format!(
                    "{} is an endless nexmark stream, so a SELECT over it would never finish",
                    relation.name
                ))
                .with_hint(
                    "add EMIT CHANGES (and a LIMIT), or give the source a number of events",
                ));
            }
        }
        let mut reader = open_reader(backend, relation, StartFrom::Earliest, false).await?;
        let mut decoder = RecordDecoder::new(relation)?;
        let mut batches = Vec::new();
        loop {
            if reader
                .caught_up()
                .await
                .map_err(|e| crate::error::SluiceError::connector("reading topic", e))?
            {
                break;
            }
            if let Some(generated) = reader.as_chunk_source() {
                let rows = generated
                    .next_rows(8192, Duration::from_millis(50))
                    .await
                    .map_err(|e| SluiceError::connector("generating rows", e))?;
                if let Some(rows) = rows {
                    batches.push(rows.chunk.batch);
                }
                continue;
            }
            let records = reader
                .poll(8192, Duration::from_millis(50))
                .await
                .map_err(|e| crate::error::SluiceError::connector("reading topic", e))?;
            if records.is_empty() {
                continue;
            }
            let decoded = decoder.decode(&records)?;
            if !decoded.chunk.is_empty() {
                batches.push(decoded.chunk.batch);
            }
        }
        Ok(batches)
    }
}

#[async_trait]
impl TableProvider for TopicProvider {
    fn schema(&self) -> SchemaRef {
        self.relation.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = Self::read_all(&self.relation, &self.backend)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.relation.schema(),
            projection.cloned(),
        )?)
    }
}
