//! Sources that generate their rows as Arrow (the nexmark generator) rather than
//! read records to decode. The source task asks its reader for a [`ChunkSource`]
//! and, when there is one, takes chunks from it instead of decoding records.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::metrics::QueryMetrics;
use super::Chunk;
use crate::connectors::ConnectorError;

/// Rows generated for one partition, and where that partition now stands.
#[derive(Debug)]
pub struct GeneratedRows {
    /// May be empty: the source advanced over events of other types only.
    pub chunk: Chunk,
    pub partition: i32,
    /// Next offset of `partition` (checkpointed like a topic offset).
    pub next_offset: i64,
}

#[async_trait]
pub trait ChunkSource: Send {
    /// Up to `max_rows` rows, or `None` when none are due within `max_wait` (a rate
    /// limit) or the source is exhausted (see `LogReader::caught_up`).
    async fn next_rows(
        &mut self,
        max_rows: usize,
        max_wait: Duration,
    ) -> Result<Option<GeneratedRows>, ConnectorError>;
}

impl GeneratedRows {
    /// The largest event time among the rows (for the partition's watermark).
    pub fn max_time(&self) -> Option<i64> {
        arrow::compute::max(&self.chunk.rowtime)
    }
}

/// One read of a generated source by a source task: records the partition's new
/// position and the rows read.
pub async fn poll(
    source: &mut dyn ChunkSource,
    positions: &mut BTreeMap<i32, i64>,
    metrics: &QueryMetrics,
    source_name: &str,
    max_rows: usize,
    max_wait: Duration,
) -> Result<Option<GeneratedRows>, ConnectorError> {
    let Some(rows) = source.next_rows(max_rows, max_wait).await? else {
        return Ok(None);
    };
    positions.insert(rows.partition, rows.next_offset);
    metrics.set_position(source_name, rows.partition, rows.next_offset);
    QueryMetrics::add(&metrics.records_in, rows.chunk.num_rows() as u64);
    Ok(Some(rows))
}
