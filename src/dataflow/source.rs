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
use crate::connectors::{LogReader, LogRecord};
use crate::error::{Result, SluiceError};
use crate::formats::{BadRecord, RecordDecoder};
use crate::state::budget::MemoryBudget;

/// Records per poll; large enough to amortise per-batch costs, small enough to
/// keep latency low.
const MAX_BATCH: usize = 8192;

/// How far (event time, ms) one input of a query may run ahead of the slowest
/// input that is still delivering rows before it pauses.
const MAX_INPUT_DRIFT_MS: i64 = 1_000;
/// A lookup table that finds nothing new for this long counts as read to its
/// end (its reader may never say so: a followed file).
const LOOKUP_WARMUP_IDLE: Duration = Duration::from_secs(2);

/// One relation a query reads.
pub struct SourceInput {
    pub relation: Relation,
    pub reader: Box<dyn LogReader>,
    /// Next offsets the reader starts at (restored from a checkpoint).
    pub positions: BTreeMap<i32, i64>,
    /// Stop at the end of the input (files, bounded generators, bounded scans).
    pub bounded: bool,
    /// The table side of a stream-table join: read up to its end before any
    /// other input at start, ahead of the others afterwards, outside event-time
    /// alignment, and not waited for to finish the query.
    pub lookup: bool,
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
    /// The state memory budget: over it, a checkpoint comes early, so that
    /// state changed since the last one (which cannot be evicted before it is
    /// written) is written and can be evicted.
    pub budget: Option<MemoryBudget>,
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
    /// Since when polls have found nothing (none since the last rows).
    empty_since: Option<Instant>,
    /// A lookup input has read up to the end its topic had at start.
    warmed: bool,
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
        let mut last_barrier = Instant::now();
        let several = self.inputs.len() > 1;
        // Inputs never change, so neither does the order they are polled in.
        let order = self.lookups_first();
        let mut busy = false;
        loop {
            for (i, (input, reading)) in self.inputs.iter_mut().zip(&mut readings).enumerate() {
                if reading.finished || !input.bounded {
                    continue;
                }
                let exhausted = input.reader.caught_up().await.map_err(|e| {
                    SluiceError::connector(format!("reading '{}'", input.relation.topic), e)
                })?;
                if exhausted {
                    // End of input: every window closes and EMIT FINAL results come out.
                    reading.finished = true;
                    if tx.send((i, Message::End)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            let inputs_done = readings
                .iter()
                .zip(&self.inputs)
                .all(|(r, input)| r.finished || input.lookup);
            if inputs_done {
                // The streams ended; the tables they are joined with end with
                // them, so that the joins pass the end on.
                for (i, reading) in readings.iter_mut().enumerate() {
                    if !std::mem::replace(&mut reading.finished, true) {
                        let _ = tx.send((i, Message::End)).await;
                    }
                }
            }
            if inputs_done || *self.drain.borrow() {
                // A last checkpoint, so a restart neither repeats nor loses
                // anything. Closing the channel then stops the pipeline.
                if self.checkpoint_interval.is_some() {
                    let _ = tx
                        .send((0, Message::Barrier(self.barrier(epoch + 1))))
                        .await;
                }
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
                .zip(&self.inputs)
                .filter(|(r, input)| !r.finished && r.delivered && !input.lookup)
                .map(|(r, _)| r.watermark)
                .min();
            // Lookup tables first, and only them until each has read what its
            // topic held at start: the events read next see the table as it was.
            // Finding nothing for a while also ends the warm-up, so a table
            // whose end is never reached (a followed file) cannot hold the
            // stream back for ever.
            let mut warming = false;
            for (input, reading) in self.inputs.iter_mut().zip(readings.iter_mut()) {
                if input.lookup && !reading.warmed && !reading.finished {
                    let idle = reading
                        .empty_since
                        .is_some_and(|t| t.elapsed() >= LOOKUP_WARMUP_IDLE);
                    reading.warmed = idle
                        || input.reader.caught_up().await.map_err(|e| {
                            SluiceError::connector(format!("reading '{}'", input.relation.topic), e)
                        })?;
                    warming |= !reading.warmed;
                }
            }
            for &i in &order {
                if readings[i].finished {
                    continue;
                }
                let lookup = self.inputs[i].lookup;
                if warming && !lookup {
                    busy = true;
                    continue;
                }
                let ahead = !lookup
                    && slowest.is_some_and(|w| {
                        w != i64::MIN
                            && readings[i].watermark > w.saturating_add(MAX_INPUT_DRIFT_MS)
                    });
                if several && ahead {
                    readings[i].delivered = false;
                    busy = true;
                } else {
                    match self.poll_input(i, &mut readings, wait, &tx).await? {
                        None => return Ok(()), // the pipeline stopped
                        Some(got) => {
                            readings[i].delivered = got;
                            readings[i].empty_since = match (got, readings[i].empty_since) {
                                (true, _) => None,
                                (false, since) => Some(since.unwrap_or_else(Instant::now)),
                            };
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
                let now = Instant::now();
                let early = now < t && self.over_budget(now - last_barrier, interval);
                if now >= t || early {
                    if early {
                        QueryMetrics::add(&self.metrics.early_checkpoints, 1);
                    }
                    last_barrier = now;
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

    /// State memory is over its budget and the last checkpoint is long
    /// enough ago (a quarter of the interval, between 50 ms and 1 s) that
    /// another one is worth its cost: memory held by state that cannot be
    /// evicted (windows, say) must not turn into a checkpoint per poll.
    fn over_budget(&self, since_last: Duration, interval: Duration) -> bool {
        let gap = (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        since_last >= gap && self.budget.as_ref().is_some_and(|b| b.used() > b.limit())
    }

    /// Input numbers, lookup tables first.
    fn lookups_first(&self) -> Vec<usize> {
        let (mut order, rest): (Vec<usize>, Vec<usize>) =
            (0..self.inputs.len()).partition(|&i| self.inputs[i].lookup);
        order.extend(rest);
        order
    }

    fn barrier(&self, epoch: u64) -> Barrier {
        Barrier {
            epoch,
            offsets: Arc::new(self.inputs.iter().map(SourceInput::offsets).collect()),
        }
    }

    /// Reads one batch of input `i` and sends it on. `None` when the pipeline
    /// is gone, otherwise whether any rows were read. Before a stream's rows go
    /// on, the lookup tables are read up to what they hold now, so an event
    /// never overtakes a table update written before it.
    async fn poll_input(
        &mut self,
        i: usize,
        readings: &mut [Reading],
        wait: Duration,
        tx: &Tx,
    ) -> Result<Option<bool>> {
        let mut got = match self.poll_generated(i, &mut readings[i], wait, tx).await? {
            None => return Ok(None),
            Some(got) => got,
        };
        let records = self.fetch(i, wait).await?;
        if !records.is_empty() {
            got = true;
            if !self.inputs[i].lookup && !self.catch_up_lookups(readings, tx).await? {
                return Ok(None);
            }
            if !self.deliver(i, &mut readings[i], records, tx).await? {
                return Ok(None);
            }
        }
        Ok(Some(got))
    }

    /// Reads every lookup input with no wait until it has nothing more (or a
    /// bounded number of batches, so a busy table cannot starve the stream).
    /// False when the pipeline is gone.
    async fn catch_up_lookups(&mut self, readings: &mut [Reading], tx: &Tx) -> Result<bool> {
        const MAX_BATCHES: usize = 64;
        for (j, reading) in readings.iter_mut().enumerate() {
            if !self.inputs[j].lookup || reading.finished {
                continue;
            }
            for _ in 0..MAX_BATCHES {
                let records = self.fetch(j, Duration::ZERO).await?;
                if records.is_empty() {
                    break;
                }
                if !self.deliver(j, reading, records, tx).await? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Generated sources (nexmark) hand over Arrow chunks and have no records.
    async fn poll_generated(
        &mut self,
        i: usize,
        reading: &mut Reading,
        wait: Duration,
        tx: &Tx,
    ) -> Result<Option<bool>> {
        let input = &mut self.inputs[i];
        let Some(generated) = input.reader.as_chunk_source() else {
            return Ok(Some(false));
        };
        let polled = super::generated::poll(
            generated,
            &mut input.positions,
            &self.metrics,
            &input.relation.name,
            MAX_BATCH,
            wait,
        );
        let rows = polled.await.map_err(|e| {
            SluiceError::connector(format!("generating '{}'", input.relation.topic), e)
        })?;
        let Some(rows) = rows.filter(|r| !r.chunk.is_empty()) else {
            return Ok(Some(false));
        };
        let (partition, max_time) = (rows.partition, rows.max_time());
        if tx.send((i, Message::Chunk(rows.chunk))).await.is_err() {
            return Ok(None);
        }
        if let Some(t) = max_time {
            reading.watermarks.observe(partition, t, Instant::now());
        }
        Ok(Some(true))
    }

    async fn fetch(&mut self, i: usize, wait: Duration) -> Result<Vec<LogRecord>> {
        let input = &mut self.inputs[i];
        input
            .reader
            .poll(MAX_BATCH, wait)
            .await
            .map_err(|e| SluiceError::connector(format!("reading '{}'", input.relation.topic), e))
    }

    /// Advances input `i`'s positions past `records`, decodes them and sends the
    /// chunk on. False when the pipeline is gone.
    async fn deliver(
        &mut self,
        i: usize,
        reading: &mut Reading,
        records: Vec<LogRecord>,
        tx: &Tx,
    ) -> Result<bool> {
        let input = &mut self.inputs[i];
        // The position follows what was read, not the largest offset ever
        // seen: a reader that started over (its topic was recreated and the
        // checkpointed offset lies past the new end) must checkpoint its new
        // position, or a later restart would skip ahead and read it all again.
        // A partition's records arrive in offset order.
        for r in &records {
            input.positions.insert(r.partition, r.offset + 1);
        }
        let name = &input.relation.name;
        for (p, o) in &input.positions {
            self.metrics.set_position(name, *p, *o);
        }
        for (p, end) in input.reader.end_offsets() {
            self.metrics
                .set_end(name, p, end, input.reader.position_unit());
        }
        QueryMetrics::add(&self.metrics.records_in, records.len() as u64);
        let decoded = reading.decoder.decode(&records)?;
        if !decoded.bad.is_empty() {
            self.handle_bad(i, decoded.bad).await?;
        }
        if !decoded.chunk.is_empty() && tx.send((i, Message::Chunk(decoded.chunk))).await.is_err() {
            return Ok(false);
        }
        let now = Instant::now();
        for (p, t) in decoded.max_time {
            reading.watermarks.observe(p, t, now);
        }
        Ok(true)
    }

    /// Input `i`'s watermark as a message; the query's gauge shows the lowest
    /// over all inputs but lookup tables (whose time does not move the output's).
    fn watermark_message(&self, readings: &[Reading], i: usize) -> (usize, Message) {
        let w = readings[i].watermark;
        let lowest = readings
            .iter()
            .zip(&self.inputs)
            .filter(|(_, input)| !input.lookup)
            .map(|(r, _)| r.watermark)
            .min()
            .unwrap_or(w);
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
            empty_since: None,
            warmed: false,
        })
    }
}
