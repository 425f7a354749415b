//! The pipeline task: pushes messages through the operators into the sink and
//! commits checkpoints when barriers arrive.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::metrics::QueryMetrics;
use super::{Chunk, Message};
use crate::connectors::LogWriter;
use crate::error::{Result, SluiceError};
use crate::formats::RecordEncoder;
use crate::operators::Operator;
use crate::state::{QueryState, StateWriteBatch};

/// Where a pipeline's output goes.
#[async_trait]
pub trait Sink: Send {
    /// Returns false when the consumer is gone and the query should stop.
    async fn write(&mut self, chunk: Chunk) -> Result<bool>;
    /// Makes everything written so far durable (before a checkpoint commits).
    async fn flush(&mut self) -> Result<()>;
}

/// Writes rows to a topic (persistent queries).
pub struct TopicSink {
    pub encoder: RecordEncoder,
    pub writer: Box<dyn LogWriter>,
    pub topic: String,
}

#[async_trait]
impl Sink for TopicSink {
    async fn write(&mut self, chunk: Chunk) -> Result<bool> {
        let records = self.encoder.encode(&chunk)?;
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

pub struct Pipeline {
    pub operators: Vec<Box<dyn Operator>>,
    pub sink: Box<dyn Sink>,
    /// Where late events go (`late_topic`); without it they are only counted.
    pub late_sink: Option<Box<dyn Sink>>,
    pub state: Option<QueryState>,
    pub metrics: Arc<QueryMetrics>,
}

impl Pipeline {
    /// Loads every stateful operator's state from the last checkpoint.
    pub fn restore(&mut self) -> Result<()> {
        if let Some(state) = &self.state {
            for (i, op) in self.operators.iter_mut().enumerate() {
                op.restore(i as u16, state)?;
            }
        }
        Ok(())
    }

    /// Runs until the input ends or the consumer goes away.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Message>) -> Result<()> {
        while let Some(msg) = rx.recv().await {
            match msg {
                msg @ (Message::Chunk(_) | Message::Watermark(_) | Message::Late(_)) => {
                    if matches!(msg, Message::Chunk(_)) {
                        QueryMetrics::add(&self.metrics.batches, 1);
                    }
                    // A watermark can close windows, so it produces rows too.
                    for m in self.process(msg)? {
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
                            _ => {}
                        }
                    }
                }
                Message::Barrier(barrier) => {
                    let mut batch = StateWriteBatch::default();
                    for (i, op) in self.operators.iter_mut().enumerate() {
                        op.snapshot(i as u16, &mut batch)?;
                    }
                    // Output first, then state + offsets: after a crash the sink may
                    // repeat rows (at-least-once) but state never runs ahead of input.
                    self.sink.flush().await?;
                    if let Some(late) = self.late_sink.as_mut() {
                        late.flush().await?;
                    }
                    if let Some(state) = &self.state {
                        state.commit(batch, barrier.epoch, &barrier.offsets)?;
                        QueryMetrics::add(&self.metrics.checkpoints, 1);
                    }
                }
                Message::End => {
                    self.sink.flush().await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Pushes one message through every operator in order.
    fn process(&mut self, msg: Message) -> Result<Vec<Message>> {
        let mut current = vec![msg];
        for op in self.operators.iter_mut() {
            let mut next = Vec::with_capacity(current.len());
            for m in current {
                match m {
                    Message::Chunk(c) => op.on_chunk(c, &mut next)?,
                    Message::Watermark(w) => op.on_watermark(w, &mut next)?,
                    other => next.push(other),
                }
            }
            current = next;
        }
        Ok(current)
    }
}
