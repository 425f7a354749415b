//! Connectors: where records come from and go to.
//!
//! Every log backend (the embedded local log, Kafka) implements [`LogBackend`]:
//! topic administration plus a [`LogReader`] and a [`LogWriter`]. The dataflow only
//! sees these traits, so the same query runs unchanged on either backend.

pub mod file;
pub mod file_access;
pub mod generated;
pub mod kafka;
pub mod local_log;
pub mod nexmark;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// One record of a partitioned log, as read from or written to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp, milliseconds since the epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
}

/// A record to produce; the backend chooses the partition from the key when
/// `partition` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    pub partition: Option<i32>,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: i32,
}

/// Where a reader starts in each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    /// Only records produced after the reader was created.
    Latest,
    /// Explicit next offset per partition (missing partitions start at earliest).
    Offsets(Vec<(i32, i64)>),
}

pub use crate::error::ConnectorError;

pub type Result<T> = std::result::Result<T, ConnectorError>;

/// A partitioned, durable log of records: the embedded local log or Kafka.
#[async_trait]
pub trait LogBackend: Send + Sync + 'static {
    /// A short name for logs and `/info`: "local" or "kafka".
    fn kind(&self) -> &'static str;
    async fn list_topics(&self) -> Result<Vec<TopicInfo>>;
    /// The topic's description, or `None` when it does not exist.
    async fn describe_topic(&self, name: &str) -> Result<Option<TopicInfo>>;
    async fn create_topic(&self, name: &str, partitions: i32) -> Result<()>;
    async fn delete_topic(&self, name: &str) -> Result<()>;
    /// Opens a reader over every partition of `topic`.
    async fn reader(&self, topic: &str, start: StartFrom) -> Result<Box<dyn LogReader>>;
    async fn writer(&self, topic: &str) -> Result<Box<dyn LogWriter>>;
    /// A writer whose records become visible only when the checkpoint they
    /// belong to commits (see [`LogWriter::prepare`]), written as `producer`
    /// (one per query and incarnation); `None` when the backend cannot.
    async fn exactly_once_writer(
        &self,
        _topic: &str,
        _producer: &str,
    ) -> Result<Option<Box<dyn LogWriter>>> {
        Ok(None)
    }
}

/// Reads records from all partitions of one topic.
#[async_trait]
pub trait LogReader: Send {
    /// Waits for at least one record (or until `max_wait` passes) and returns up to
    /// `max` records. An empty vector means nothing arrived in time.
    async fn poll(&mut self, max: usize, max_wait: std::time::Duration) -> Result<Vec<LogRecord>>;
    /// True once every partition has been read up to the end it had when this was
    /// first asked (used by bounded scans: `SELECT` on a stream without EMIT CHANGES).
    async fn caught_up(&mut self) -> Result<bool>;

    /// The end (next offset to be written) of each partition, as far as the reader
    /// knows without a round trip; used for consumer-lag metrics. Empty when unknown.
    fn end_offsets(&self) -> Vec<(i32, i64)> {
        Vec::new()
    }

    /// What an offset counts: `records` for logs, `bytes` for files (so a
    /// backfill's progress reads "4.1 MB of 9.8 MB").
    fn position_unit(&self) -> &'static str {
        "records"
    }

    /// Where a record is, in the words users know the source by (error reports).
    fn describe_position(&self, partition: i32, offset: i64) -> String {
        format!("partition {partition}, offset {offset}")
    }

    /// A source that generates Arrow rows itself (nexmark) returns itself here; the
    /// source task then takes chunks from it instead of decoding records.
    fn as_chunk_source(&mut self) -> Option<&mut dyn generated::ChunkSource> {
        None
    }
}

/// Produces records to one topic.
///
/// Exactly-once writers take part in a query's checkpoints in two phases
/// (see docs/architecture.md, "The sink protocol"): what is sent in an epoch
/// is made durable by `prepare`, committed with the query's state, and made
/// visible by `commit`; `recover` finishes or drops what a crash left. The
/// defaults are an at-least-once writer's: records are visible once sent.
#[async_trait]
pub trait LogWriter: Send {
    async fn send(&mut self, records: Vec<OutRecord>) -> Result<()>;
    /// Returns once everything sent so far is durable in the log.
    async fn flush(&mut self) -> Result<()>;

    /// Phase one of `epoch`'s checkpoint: everything sent since the last
    /// `prepare` is durable. Returns what `recover` needs to know about it;
    /// the bytes are committed with the checkpoint.
    async fn prepare(&mut self, _epoch: u64) -> Result<Vec<u8>> {
        self.flush().await?;
        Ok(Vec::new())
    }

    /// Phase two: the checkpoint of `epoch` is committed.
    async fn commit(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }

    /// Before anything is sent: `epoch` is the query's last committed
    /// checkpoint and `prepared` what `prepare` returned for it (`None`
    /// before the first). Completes that epoch's output and drops output
    /// of later epochs, which a crash left uncommitted.
    async fn recover(&mut self, _epoch: u64, _prepared: Option<&[u8]>) -> Result<()> {
        Ok(())
    }

    /// The largest record (key + value bytes) the log accepts; larger ones must
    /// not be sent (they would fail the whole send).
    fn max_record_bytes(&self) -> usize {
        local_log::MAX_RECORD_BYTES
    }
}

/// Bytes a record takes against [`LogWriter::max_record_bytes`].
pub fn record_size(r: &OutRecord) -> usize {
    r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
}

pub type SharedBackend = Arc<dyn LogBackend>;

/// Partition for a key, the way Kafka's Java clients (and so ksqlDB) place keys:
/// murmur2 of the key bytes, positive, modulo the partition count.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) as i32 % partitions.max(1)
}

/// Kafka's murmur2 (seed 0x9747b28c), as in `org.apache.kafka.common.utils.Utils`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_java_client() {
        // Reference values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
