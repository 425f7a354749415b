//! The pipeline task: pushes messages through the operators into the sink and
//! commits checkpoints when barriers arrive.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::metrics::QueryMetrics;
use super::row_errors::RowErrorPolicy;
use super::{Barrier, Chunk, Dataflow, Message};
use crate::connectors::{record_size, LogWriter};
use crate::error::{Result, SluiceError};
use crate::formats::RecordEncoder;
use crate::state::QueryState;

/// Where a pipeline's output goes. Sinks take part in checkpoints in two
/// phases (`prepare`, then `commit` once the checkpoint is durable; see
/// docs/architecture.md, "The sink protocol"); the defaults are those of a
/// sink whose rows are visible as soon as they are written.
#[async_trait]
pub trait Sink: Send {
    /// Returns false when the consumer is gone and the query should stop.
    async fn write(&mut self, chunk: Chunk) -> Result<bool>;
    /// Makes everything written so far durable.
    async fn flush(&mut self) -> Result<()>;

    /// Phase one of `epoch`'s checkpoint; returns what `recover` needs,
    /// committed with the checkpoint.
    async fn prepare(&mut self, _epoch: u64) -> Result<Vec<u8>> {
        self.flush().await?;
        Ok(Vec::new())
    }

    /// Phase two: `epoch`'s checkpoint is committed.
    async fn commit(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }

    /// At start, with the last committed epoch and what its `prepare`
    /// returned: completes that epoch's output, drops anything later.
    async fn recover(&mut self, _epoch: u64, _prepared: Option<&[u8]>) -> Result<()> {
        Ok(())
    }
}

/// Writes rows to a topic (persistent queries).
pub struct TopicSink {
    encoder: RecordEncoder,
    writer: Box<dyn LogWriter>,
    topic: String,
    /// Where records too large for the topic go; without it they fail the query.
    errors: Option<RowErrorPolicy>,
}

impl TopicSink {
    pub fn new(encoder: RecordEncoder, writer: Box<dyn LogWriter>, topic: String) -> Self {
        TopicSink {
            encoder,
            writer,
            topic,
            errors: None,
        }
    }

    pub fn with_errors(mut self, errors: RowErrorPolicy) -> Self {
        self.errors = Some(errors);
        self
    }
}

#[async_trait]
impl Sink for TopicSink {
    async fn write(&mut self, chunk: Chunk) -> Result<bool> {
        let mut records = self.encoder.encode(&chunk)?;
        let limit = self.writer.max_record_bytes();
        if let Some(errors) = &self.errors {
            if records.iter().any(|r| record_size(r) > limit) {
                let (fit, oversize): (Vec<_>, Vec<_>) =
                    records.into_iter().partition(|r| record_size(r) <= limit);
                records = fit;
                errors.oversize(&self.topic, limit, oversize).await?;
            }
        }
        self.writer
            .send(records)
            .await
            .map_err(|e| SluiceError::connector(format!("writing to '{}'", self.topic), e))?;
        Ok(true)
    }

    async fn flush(&mut self) -> Result<()> {
        self.writer
            .flush()
            .await
            .map_err(|e| SluiceError::connector(format!("flushing '{}'", self.topic), e))
    }

    async fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        self.writer.prepare(epoch).await.map_err(|e| {
            SluiceError::connector(format!("preparing epoch {epoch} of '{}'", self.topic), e)
        })
    }

    async fn commit(&mut self, epoch: u64) -> Result<()> {
        self.writer.commit(epoch).await.map_err(|e| {
            SluiceError::connector(format!("committing epoch {epoch} of '{}'", self.topic), e)
        })
    }

    async fn recover(&mut self, epoch: u64, prepared: Option<&[u8]>) -> Result<()> {
        self.writer.recover(epoch, prepared).await.map_err(|e| {
            SluiceError::connector(format!("recovering the output of '{}'", self.topic), e)
        })
    }
}

/// Sends rows to a client (push queries); stops after `limit` rows.
pub struct ChannelSink {
    pub tx: mpsc::Sender<Result<RecordBatch>>,
    pub limit: Option<usize>,
    pub sent: usize,
}

#[async_trait]
impl Sink for ChannelSink {
    async fn write(&mut self, chunk: Chunk) -> Result<bool> {
        let mut batch = chunk.batch;
        if let Some(limit) = self.limit {
            let left = limit.saturating_sub(self.sent);
            if batch.num_rows() > left {
                batch = batch.slice(0, left);
            }
        }
        self.sent += batch.num_rows();
        if batch.num_rows() > 0 && self.tx.send(Ok(batch)).await.is_err() {
            return Ok(false);
        }
        Ok(self.limit.is_none_or(|l| self.sent < l))
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Discards rows (benchmarks).
pub struct NullSink;

#[async_trait]
impl Sink for NullSink {
    async fn write(&mut self, _chunk: Chunk) -> Result<bool> {
        Ok(true)
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The names sinks' checkpoint bytes are kept under.
const OUTPUT_SINK: &str = "out";
const LATE_SINK: &str = "late";

pub struct Pipeline {
    pub flow: Dataflow,
    pub sink: Box<dyn Sink>,
    /// Where late events go (`late_topic`); without it they are only counted.
    pub late_sink: Option<Box<dyn Sink>>,
    pub state: Option<QueryState>,
    pub metrics: Arc<QueryMetrics>,
    /// What row errors (failed expressions) do: count, log, dead-letter, or fail.
    pub errors: RowErrorPolicy,
}

impl Pipeline {
    /// Loads every stateful operator's state from the last checkpoint.
    pub fn restore(&mut self) -> Result<()> {
        if let Some(state) = &self.state {
            self.flow.restore(state)?;
        }
        Ok(())
    }

    /// Runs until the source stops (closes the channel) or the consumer goes
    /// away. Messages arrive tagged with the number of the input they come from.
    pub async fn run(mut self, mut rx: mpsc::Receiver<(usize, Message)>) -> Result<()> {
        if self.state.is_none() {
            self.flow.without_checkpoints();
        }
        self.recover_sinks().await?;
        while let Some((input, msg)) = rx.recv().await {
            let mut out = match msg {
                Message::Barrier(barrier) => self.flow.process_barrier(barrier)?,
                Message::RowErrors(errors) => {
                    self.errors.expression_errors(errors).await?;
                    continue;
                }
                msg => {
                    if matches!(msg, Message::Chunk(_)) {
                        QueryMetrics::add(&self.metrics.batches, 1);
                    }
                    // A watermark can close windows, so it produces rows too.
                    self.flow.process(input, msg)?
                }
            };
            // Row errors first: under on_error='fail' nothing of this
            // message may reach the sink.
            if out.iter().any(|m| matches!(m, Message::RowErrors(_))) {
                let (errors, rest): (Vec<_>, Vec<_>) = out
                    .into_iter()
                    .partition(|m| matches!(m, Message::RowErrors(_)));
                for e in errors {
                    if let Message::RowErrors(e) = e {
                        self.errors.expression_errors(e).await?;
                    }
                }
                out = rest;
            }
            let entries = self.flow.state_entries();
            self.metrics
                .state_entries
                .store(entries as u64, std::sync::atomic::Ordering::Relaxed);
            for m in out {
                match m {
                    Message::Chunk(c) => {
                        let n = c.num_rows() as u64;
                        if !self.sink.write(c).await? {
                            return Ok(());
                        }
                        QueryMetrics::add(&self.metrics.records_out, n);
                    }
                    Message::Late(c) => {
                        QueryMetrics::add(&self.metrics.late_records, c.num_rows() as u64);
                        if let Some(late) = self.late_sink.as_mut() {
                            late.write(c).await?;
                        }
                    }
                    Message::Barrier(barrier) => self.commit(barrier).await?,
                    // Every input ended: the source's last barrier and the
                    // channel's close follow, and the close flushes.
                    Message::End | Message::Watermark(_) | Message::RowErrors(_) => {}
                }
            }
        }
        self.flush().await
    }

    async fn flush(&mut self) -> Result<()> {
        self.sink.flush().await?;
        if let Some(late) = self.late_sink.as_mut() {
            late.flush().await?;
        }
        Ok(())
    }

    /// The sinks, by the names their checkpoint bytes are kept under.
    fn sinks(&mut self) -> impl Iterator<Item = (&'static str, &mut Box<dyn Sink>)> {
        std::iter::once((OUTPUT_SINK, &mut self.sink))
            .chain(self.late_sink.as_mut().map(|s| (LATE_SINK, s)))
    }

    /// Before any input: each sink completes the output of the last committed
    /// checkpoint and drops what a crash left after it. A sink that has no
    /// checkpoint yet records where it starts, so that the output of a first
    /// epoch that never commits can be dropped too.
    async fn recover_sinks(&mut self) -> Result<()> {
        let Some(state) = self.state.clone() else {
            return Ok(());
        };
        let epoch = state.epoch()?;
        for (name, sink) in self.sinks() {
            let saved = state.sink_state(name)?;
            sink.recover(epoch, saved.as_deref()).await?;
            if saved.is_none() {
                let baseline = sink.prepare(epoch).await?;
                if !baseline.is_empty() {
                    state.record_sink_state(name, &baseline)?;
                }
            }
        }
        Ok(())
    }

    /// The barrier passed every operator: the sinks prepare the epoch's
    /// output, the operators' state commits with the source offsets and the
    /// sinks' bytes in one write, then the sinks commit. A crash before the
    /// write leaves the epoch to be read again and its staged output
    /// dropped; after it, `recover_sinks` finishes publishing it.
    async fn commit(&mut self, barrier: Barrier) -> Result<()> {
        let mut batch = self.flow.take_checkpoint();
        let epoch = barrier.epoch;
        let mut prepared = Vec::new();
        for (name, sink) in self.sinks() {
            prepared.push((name, sink.prepare(epoch).await?));
        }
        if let Some(state) = &self.state {
            for (name, bytes) in prepared {
                if !bytes.is_empty() {
                    batch.put_sink_state(name, bytes);
                }
            }
            let (entries, bytes) = (batch.len() as u64, batch.bytes() as u64);
            state.commit(batch, epoch, &barrier.offsets)?;
            QueryMetrics::add(&self.metrics.checkpoints, 1);
            QueryMetrics::add(&self.metrics.checkpoint_entries, entries);
            QueryMetrics::add(&self.metrics.checkpoint_bytes, bytes);
        }
        for (_, sink) in self.sinks() {
            sink.commit(epoch).await?;
        }
        Ok(())
    }
}
