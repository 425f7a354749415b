//! The source task: reads records, decodes them into chunks, counts and
//! dead-letters bad records, and injects checkpoint barriers on a timer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::metrics::QueryMetrics;
use super::watermark::{WatermarkTracker, DEFAULT_IDLE_TIMEOUT};
use super::{Barrier, Message};
use crate::catalog::{Relation, SourceConnector};
use crate::connectors::{LogReader, LogWriter, OutRecord};
use crate::error::{Result, SluiceError};
use crate::formats::{BadRecord, RecordDecoder};

/// Records per poll; large enough to amortise per-batch costs, small enough to
/// keep latency low.
const MAX_BATCH: usize = 8192;

pub struct SourceTask {
    pub relation: Relation,
    pub reader: Box<dyn LogReader>,
    /// Next offsets the reader starts at (restored from a checkpoint).
    pub positions: BTreeMap<i32, i64>,
    pub metrics: Arc<QueryMetrics>,
    pub dead_letter: Option<Box<dyn LogWriter>>,
    /// `None`: no checkpoints (push queries).
    pub checkpoint_interval: Option<Duration>,
    /// Stop at the end of the topic (bounded scans).
    pub bounded: bool,
    pub first_epoch: u64,
    /// Set to true to end the query gracefully: a last checkpoint, then End.
    pub drain: tokio::sync::watch::Receiver<bool>,
}

impl SourceTask {
    pub async fn run(mut self, tx: mpsc::Sender<Message>) -> Result<()> {
        let mut decoder = RecordDecoder::new(&self.relation)?;
        let mut epoch = self.first_epoch;
        let mut next_barrier = self.checkpoint_interval.map(|i| Instant::now() + i);
        let topic = self.relation.topic.clone();
        let format = &self.relation.format;
        let mut watermarks = WatermarkTracker::new(
            format.watermark_delay_ms,
            format
                .idle_timeout_ms
                .map(|ms| Duration::from_millis(ms.max(0) as u64))
                .unwrap_or(DEFAULT_IDLE_TIMEOUT),
        );
        // Topic partitions are read side by side, so each one is waited for from
        // the start. Files are read one after another: a file not opened yet is
        // not behind, just later.
        if !matches!(self.relation.connector, SourceConnector::File { .. }) {
            for p in 0..self.relation.partitions.max(1) {
                watermarks.expect(p);
            }
        }
        loop {
            let exhausted = self.bounded
                && self
                    .reader
                    .caught_up()
                    .await
                    .map_err(|e| SluiceError::connector(format!("reading '{topic}'"), e))?;
            if exhausted || *self.drain.borrow() {
                if exhausted {
                    // End of input: every window closes and EMIT FINAL results come out.
                    if let Some(w) = watermarks.finish() {
                        send_watermark(&self.metrics, &tx, w).await;
                    }
                }
                // A last checkpoint, so a restart neither repeats nor loses anything.
                if self.checkpoint_interval.is_some() {
                    let offsets = Arc::new(self.positions.iter().map(|(p, o)| (*p, *o)).collect());
                    let _ = tx
                        .send(Message::Barrier(Barrier {
                            epoch: epoch + 1,
                            offsets,
                        }))
                        .await;
                }
                let _ = tx.send(Message::End).await;
                return Ok(());
            }
            let wait = match next_barrier {
                Some(t) => t
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
                None => Duration::from_millis(200),
            };
            // Generated sources (nexmark) hand over Arrow chunks and have no records.
            if let Some(generated) = self.reader.as_chunk_source() {
                let wait = wait.max(Duration::from_millis(1));
                let polled = super::generated::poll(
                    generated,
                    &mut self.positions,
                    &self.metrics,
                    MAX_BATCH,
                    wait,
                );
                let rows = polled
                    .await
                    .map_err(|e| SluiceError::connector(format!("generating '{topic}'"), e))?;
                if let Some(rows) = rows.filter(|r| !r.chunk.is_empty()) {
                    let (partition, max_time) = (rows.partition, rows.max_time());
                    if tx.send(Message::Chunk(rows.chunk)).await.is_err() {
                        return Ok(()); // the pipeline stopped
                    }
                    if let Some(t) = max_time {
                        watermarks.observe(partition, t, Instant::now());
                    }
                }
            }
            let records = self
                .reader
                .poll(MAX_BATCH, wait.max(Duration::from_millis(1)))
                .await
                .map_err(|e| SluiceError::connector(format!("reading '{topic}'"), e))?;
            if !records.is_empty() {
                for r in &records {
                    let next = self.positions.entry(r.partition).or_insert(0);
                    *next = (*next).max(r.offset + 1);
                }
                for (p, o) in &self.positions {
                    self.metrics.set_position(*p, *o);
                }
                for (p, end) in self.reader.end_offsets() {
                    self.metrics.set_end(p, end);
                }
                QueryMetrics::add(&self.metrics.records_in, records.len() as u64);
                let decoded = decoder.decode(&records)?;
                if !decoded.bad.is_empty() {
                    self.handle_bad(decoded.bad).await?;
                }
                if !decoded.chunk.is_empty()
                    && tx.send(Message::Chunk(decoded.chunk)).await.is_err()
                {
                    return Ok(()); // the pipeline stopped
                }
                let now = Instant::now();
                for (p, t) in decoded.max_time {
                    watermarks.observe(p, t, now);
                }
            }
            if let Some(w) = watermarks.advance(Instant::now()) {
                if !send_watermark(&self.metrics, &tx, w).await {
                    return Ok(());
                }
            }
            if let (Some(t), Some(interval)) = (next_barrier, self.checkpoint_interval) {
                if Instant::now() >= t {
                    epoch += 1;
                    let offsets = Arc::new(self.positions.iter().map(|(p, o)| (*p, *o)).collect());
                    if tx
                        .send(Message::Barrier(Barrier { epoch, offsets }))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    next_barrier = Some(Instant::now() + interval);
                }
            }
        }
    }

    async fn handle_bad(&mut self, bad: Vec<BadRecord>) -> Result<()> {
        QueryMetrics::add(&self.metrics.decode_errors, bad.len() as u64);
        for b in bad.iter().take(3) {
            tracing::warn!(
                source = %self.relation.topic,
                "skipping bad record at {}: {}",
                self.reader.describe_position(b.partition, b.offset),
                b.reason
            );
        }
        if let Some(dlq) = self.dead_letter.as_mut() {
            let n = bad.len() as u64;
            let records = bad
                .into_iter()
                .map(|b| OutRecord {
                    partition: None,
                    timestamp: b.timestamp,
                    key: b.key,
                    value: Some(Bytes::from(
                        serde_json::json!({
                            "topic": self.relation.topic,
                            "partition": b.partition,
                            "offset": b.offset,
                            "position": self.reader.describe_position(b.partition, b.offset),
                            "error": b.reason,
                            "value": b.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
                        })
                        .to_string(),
                    )),
                })
                .collect();
            dlq.send(records)
                .await
                .map_err(|e| SluiceError::connector("writing to the dead-letter topic", e))?;
            QueryMetrics::add(&self.metrics.dead_lettered, n);
        }
        Ok(())
    }
}

/// Returns false when the pipeline is gone.
async fn send_watermark(metrics: &QueryMetrics, tx: &mpsc::Sender<Message>, w: i64) -> bool {
    metrics
        .watermark
        .store(w, std::sync::atomic::Ordering::Relaxed);
    tx.send(Message::Watermark(w)).await.is_ok()
}
