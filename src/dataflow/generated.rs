//! Reading sources that generate their rows as Arrow (the nexmark generator)
//! rather than records to decode: the source task asks its reader for a
//! [`ChunkSource`] and, when there is one, takes chunks from it instead.

use std::collections::BTreeMap;
use std::time::Duration;

use super::metrics::QueryMetrics;
pub use crate::connectors::generated::{ChunkSource, GeneratedRows};
use crate::connectors::ConnectorError;

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
