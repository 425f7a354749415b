//! The source task: reads records, decodes them into chunks, counts and
//! dead-letters bad records, and injects checkpoint barriers on a timer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::metrics::QueryMetrics;
use super::row_errors::RowErrorPolicy;
use super::watermark::{WatermarkTracker, DEFAULT_IDLE_TIMEOUT};
use super::{Barrier, Message};
use crate::catalog::{Relation, SourceConnector};
use crate::connectors::LogReader;
use crate::error::{Result, SluiceError};
use crate::formats::{BadRecord, RecordDecoder};

/// Records per poll; large enough to amortise per-batch costs, small enough to
/// keep latency low.
const MAX_BATCH: usize = 8192;

/// How far (event time, ms) one input of a query may run ahead of the slowest
/// input that is still delivering rows before it pauses.
const MAX_INPUT_DRIFT_MS: i64 = 1_000;

/// One relation a query reads.
pub struct SourceInput {
    pub relation: Relation,
    pub reader: Box<dyn LogReader>,
    /// Next offsets the reader starts at (restored from a checkpoint).
    pub positions: BTreeMap<i32, i64>,
    /// Stop at the end of the input (files, bounded generators, bounded scans).
    pub bounded: bool,
}

impl SourceInput {
    fn offsets(&self) -> Vec<(i32, i64)> {
        self.positions.iter().map(|(p, o)| (*p, *o)).collect()
    }
}

/// Reads every input of a query in one task, so a barrier's offsets are a
/// consistent cut across inputs without aligning barriers downstream.
pub struct SourceTask {
    pub inputs: Vec<SourceInput>,
    pub metrics: Arc<QueryMetrics>,
    /// What bad records do: skipped, counted and dead-lettered, or fail the query.
    pub errors: RowErrorPolicy,
    /// `None`: no checkpoints (push queries).
    pub checkpoint_interval: Option<Duration>,
    pub first_epoch: u64,
    /// Set to true to end the query gracefully: a last checkpoint, then End.
    pub drain: tokio::sync::watch::Receiver<bool>,
}

/// Per-input reading state.
struct Reading {
    decoder: RecordDecoder,
    watermarks: WatermarkTracker,
    /// Last watermark sent (for the query's watermark gauge).
    watermark: i64,
    finished: bool,
    /// Rows came in the last poll.
    delivered: bool,
}

type Tx = mpsc::Sender<(usize, Message)>;

impl SourceTask {
    pub async fn run(mut self, tx: Tx) -> Result<()> {
        let mut readings = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            readings.push(Reading::new(&input.relation)?);
        }
        let mut epoch = self.first_epoch;
        let mut next_barrier = self.checkpoint_interval.map(|i| Instant::now() + i);
        let several = self.inputs.len() > 1;
        let mut busy = false;
        loop {
            for i in 0..self.inputs.len() {
                if readings[i].finished || !self.inputs[i].bounded {
                    continue;
                }
                let input = &mut self.inputs[i];
                let exhausted = input.reader.caught_up().await.map_err(|e| {
                    SluiceError::connector(format!("reading '{}'", input.relation.topic), e)
                })?;
                if exhausted {
                    // End of input: every window closes and EMIT FINAL results come out.
                    readings[i].finished = true;
                    if let Some(w) = readings[i].watermarks.finish() {
                        readings[i].watermark = w;
                        let msg = self.watermark_message(&readings, i);
                        if tx.send(msg).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            if readings.iter().all(|r| r.finished) || *self.drain.borrow() {
                // A last checkpoint, so a restart neither repeats nor loses anything.
                if self.checkpoint_interval.is_some() {
                    let _ = tx
                        .send((0, Message::Barrier(self.barrier(epoch + 1))))
                        .await;
                }
                let _ = tx.send((0, Message::End)).await;
                return Ok(());
            }
            let wait = match next_barrier {
                Some(t) => t
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
                None => Duration::from_millis(200),
            };
            // With several inputs an idle one must not hold up the others: a round
            // that found data polls again at once, an idle round shares the wait.
            let wait = match (several, busy) {
                (false, _) => wait,
                (true, true) => Duration::from_millis(1),
                (true, false) => wait / self.inputs.len() as u32,
            }
            .max(Duration::from_millis(1));
            busy = false;
            // Event-time alignment: an input ahead of the slowest input that is
            // still delivering waits for it, so a join does not buffer the faster
            // input's rows for longer than its interval needs.
            let slowest = readings
                .iter()
                .filter(|r| !r.finished && r.delivered)
                .map(|r| r.watermark)
                .min();
            for i in 0..self.inputs.len() {
                if readings[i].finished {
                    continue;
                }
                let ahead = slowest.is_some_and(|w| {
                    w != i64::MIN && readings[i].watermark > w.saturating_add(MAX_INPUT_DRIFT_MS)
                });
                if several && ahead {
                    readings[i].delivered = false;
                    busy = true;
                } else {
                    match self.poll_input(i, &mut readings[i], wait, &tx).await? {
                        None => return Ok(()), // the pipeline stopped
                        Some(got) => {
                            readings[i].delivered = got;
                            busy |= got;
                        }
                    }
                }
                if let Some(w) = readings[i].watermarks.advance(Instant::now()) {
                    readings[i].watermark = w;
                    let msg = self.watermark_message(&readings, i);
                    if tx.send(msg).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if let (Some(t), Some(interval)) = (next_barrier, self.checkpoint_interval) {
                if Instant::now() >= t {
                    epoch += 1;
                    if tx
                        .send((0, Message::Barrier(self.barrier(epoch))))
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

    fn barrier(&self, epoch: u64) -> Barrier {
        Barrier {
            epoch,
            offsets: Arc::new(self.inputs.iter().map(SourceInput::offsets).collect()),
        }
    }

    /// Reads one batch of input `i`. `None` when the pipeline is gone, otherwise
    /// whether any rows were read.
    async fn poll_input(
        &mut self,
        i: usize,
        reading: &mut Reading,
        wait: Duration,
        tx: &Tx,
    ) -> Result<Option<bool>> {
        let input = &mut self.inputs[i];
        let topic = &input.relation.topic;
        let mut got = false;
        // Generated sources (nexmark) hand over Arrow chunks and have no records.
        if let Some(generated) = input.reader.as_chunk_source() {
            let polled = super::generated::poll(
                generated,
                &mut input.positions,
                &self.metrics,
                &input.relation.name,
                MAX_BATCH,
                wait,
            );
            let rows = polled
                .await
                .map_err(|e| SluiceError::connector(format!("generating '{topic}'"), e))?;
            if let Some(rows) = rows.filter(|r| !r.chunk.is_empty()) {
                got = true;
                let (partition, max_time) = (rows.partition, rows.max_time());
                if tx.send((i, Message::Chunk(rows.chunk))).await.is_err() {
                    return Ok(None);
                }
                if let Some(t) = max_time {
                    reading.watermarks.observe(partition, t, Instant::now());
                }
            }
        }
        let records = input
            .reader
            .poll(MAX_BATCH, wait)
            .await
            .map_err(|e| SluiceError::connector(format!("reading '{topic}'"), e))?;
        if records.is_empty() {
            return Ok(Some(got));
        }
        for r in &records {
            let next = input.positions.entry(r.partition).or_insert(0);
            *next = (*next).max(r.offset + 1);
        }
        let name = &input.relation.name;
        for (p, o) in &input.positions {
            self.metrics.set_position(name, *p, *o);
        }
        for (p, end) in input.reader.end_offsets() {
            self.metrics.set_end(name, p, end);
        }
        QueryMetrics::add(&self.metrics.records_in, records.len() as u64);
        let decoded = reading.decoder.decode(&records)?;
        if !decoded.bad.is_empty() {
            self.handle_bad(i, decoded.bad).await?;
        }
        if !decoded.chunk.is_empty() && tx.send((i, Message::Chunk(decoded.chunk))).await.is_err() {
            return Ok(None);
        }
        let now = Instant::now();
        for (p, t) in decoded.max_time {
            reading.watermarks.observe(p, t, now);
        }
        Ok(Some(true))
    }

    /// Input `i`'s watermark as a message; the query's gauge shows the lowest
    /// over all inputs.
    fn watermark_message(&self, readings: &[Reading], i: usize) -> (usize, Message) {
        let w = readings[i].watermark;
        let lowest = readings.iter().map(|r| r.watermark).min().unwrap_or(w);
        self.metrics
            .watermark
            .store(lowest, std::sync::atomic::Ordering::Relaxed);
        (i, Message::Watermark(w))
    }

    async fn handle_bad(&mut self, i: usize, bad: Vec<BadRecord>) -> Result<()> {
        let input = &self.inputs[i];
        // Positions are described now: the reader cannot go along into the await.
        let positions: std::collections::HashMap<(i32, i64), String> = bad
            .iter()
            .map(|b| {
                let at = (b.partition, b.offset);
                (at, input.reader.describe_position(at.0, at.1))
            })
            .collect();
        let (name, topic) = (input.relation.name.clone(), input.relation.topic.clone());
        self.errors
            .bad_records(&name, &topic, &bad, move |p, o| {
                positions.get(&(p, o)).cloned().unwrap_or_default()
            })
            .await
    }
}

impl Reading {
    fn new(relation: &Relation) -> Result<Reading> {
        let format = &relation.format;
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
        if !matches!(relation.connector, SourceConnector::File { .. }) {
            for p in 0..relation.partitions.max(1) {
                watermarks.expect(p);
            }
        }
        Ok(Reading {
            decoder: RecordDecoder::new(relation)?,
            watermarks,
            watermark: i64::MIN,
            finished: false,
            delivered: false,
        })
    }
}
