//! Sources that generate their rows as Arrow (the nexmark generator) rather
//! than read records to decode.

use std::time::Duration;

use async_trait::async_trait;

use super::ConnectorError;
use crate::chunk::Chunk;

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
