//! Exactly-once output to Kafka: one transaction per checkpoint epoch, with a
//! stable `transactional.id` per query (a restarted query fences the old
//! producer), and a local copy of the epoch's records for the one moment
//! Kafka cannot recover by itself.
//!
//! Order at a checkpoint: `prepare` flushes the epoch's records into the open
//! transaction, adds the epoch as the committed offset of partition 0 of the
//! output topic for the consumer group `sluice-eos-<producer>` (the *marker*:
//! it commits with the transaction or not at all) and syncs the local copy;
//! the query's state commits; `commit` commits the transaction. A crash
//! before the state commits leaves the transaction open: the restarted
//! producer's `init_transactions` aborts it and the input is read again. A
//! crash after the state commit but before the transaction commit leaves the
//! epoch committed in the state and aborted in Kafka (librdkafka cannot
//! resume a transaction): `recover` finds the marker behind the epoch and
//! produces the local copy again in a new transaction. A marker at the epoch
//! means the transaction did commit, and the copy is dropped.
//!
//! ```text
//! <data>/kafka-staging/<topic>/<producer>/open.log       the open epoch's records
//! <data>/kafka-staging/<topic>/<producer>/epoch-<E>.log  prepared, commit pending
//! ```

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::{blocking, kafka_err, KafkaWriter};
use crate::connectors::local_log::{
    create_staging_file, encode_staged, epoch_path, io_err, read_staged, staged_epochs, sync_dir,
    sync_staging_file,
};
use crate::connectors::{ConnectorError, LogWriter, OutRecord, Result};

/// How long a transaction call may take before the query fails (and is
/// restarted by the supervisor).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
const OPEN_FILE: &str = "open.log";

fn epoch_file(dir: &Path, epoch: u64) -> PathBuf {
    epoch_path(dir, epoch, ".log")
}

/// The consumer group whose offset for partition 0 of the output topic
/// records the last epoch a producer committed.
pub(super) fn marker_group(producer: &str) -> String {
    format!("sluice-eos-{producer}")
}

pub(super) struct TransactionalWriter {
    /// Produces with a transactional producer.
    inner: KafkaWriter,
    /// Member of the marker group: its metadata goes with each transaction,
    /// and it reads the marker back at recovery.
    marker: Arc<BaseConsumer>,
    dir: PathBuf,
    open: Option<BufWriter<File>>,
    buf: Vec<u8>,
    /// A transaction is open (something was sent since the last commit).
    in_transaction: bool,
}

impl TransactionalWriter {
    pub(super) fn new(inner: KafkaWriter, marker: BaseConsumer, dir: PathBuf) -> Self {
        TransactionalWriter {
            inner,
            marker: Arc::new(marker),
            dir,
            open: None,
            buf: Vec::new(),
            in_transaction: false,
        }
    }

    fn marker_offsets(&self, epoch: u64) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.inner.topic, 0, Offset::Offset(epoch as i64))
            .map_err(|e| kafka_err("building the epoch marker", e))?;
        Ok(tpl)
    }

    /// The last epoch whose transaction committed, by the marker.
    async fn committed_epoch(&self) -> Result<u64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.inner.topic, 0);
        let marker = self.marker.clone();
        let committed = blocking("reading the epoch marker", move || {
            marker
                .committed_offsets(tpl, TRANSACTION_TIMEOUT)
                .map_err(|e| kafka_err("reading the epoch marker", e))
        })
        .await?;
        Ok(committed
            .elements()
            .first()
            .and_then(|e| match e.offset() {
                Offset::Offset(n) if n > 0 => Some(n as u64),
                _ => None,
            })
            .unwrap_or(0))
    }

    fn begin(&mut self) -> Result<()> {
        if !self.in_transaction {
            self.inner
                .producer
                .begin_transaction()
                .map_err(|e| kafka_err("beginning a transaction", e))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Adds the marker of `epoch` to the open transaction.
    async fn mark(&self, epoch: u64) -> Result<()> {
        let offsets = self.marker_offsets(epoch)?;
        let (producer, marker) = (self.inner.producer.clone(), self.marker.clone());
        blocking("adding the epoch marker", move || {
            let group = marker.group_metadata().ok_or_else(|| {
                ConnectorError::Kafka("the marker consumer has no group metadata".into())
            })?;
            producer
                .send_offsets_to_transaction(&offsets, &group, TRANSACTION_TIMEOUT)
                .map_err(|e| kafka_err("adding the epoch marker", e))
        })
        .await
    }

    async fn commit_transaction(&mut self) -> Result<()> {
        let producer = self.inner.producer.clone();
        blocking("committing a transaction", move || {
            producer
                .commit_transaction(TRANSACTION_TIMEOUT)
                .map_err(|e| kafka_err("committing a transaction", e))
        })
        .await?;
        self.in_transaction = false;
        self.inner.take_delivery_error()
    }

    /// Produces a staged epoch again, with its marker, in one transaction.
    async fn republish(&mut self, epoch: u64, staged: &Path) -> Result<()> {
        let records = read_staged(staged)?;
        tracing::info!(
            topic = %self.inner.topic,
            epoch,
            records = records.len(),
            "producing again the output of an epoch whose transaction did not commit"
        );
        self.begin()?;
        self.inner.send(records).await?;
        self.inner.flush().await?;
        self.mark(epoch).await?;
        self.commit_transaction().await
    }
}

#[async_trait]
impl LogWriter for TransactionalWriter {
    async fn send(&mut self, records: Vec<OutRecord>) -> Result<()> {
        self.begin()?;
        if self.open.is_none() {
            self.open = Some(create_staging_file(&self.dir.join(OPEN_FILE))?);
        }
        self.buf.clear();
        for record in &records {
            encode_staged(&mut self.buf, record)?;
        }
        if let Some(open) = self.open.as_mut() {
            open.write_all(&self.buf)
                .map_err(|e| io_err(&self.dir, e))?;
        }
        self.inner.send(records).await
    }

    /// Records in an open transaction are not visible: nothing to flush
    /// until `prepare`.
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        if !self.in_transaction {
            return Ok(Vec::new());
        }
        self.inner.flush().await?;
        self.mark(epoch).await?;
        if let Some(open) = self.open.take() {
            let dir = self.dir.clone();
            blocking("syncing the staged epoch", move || {
                let path = dir.join(OPEN_FILE);
                sync_staging_file(open, &path)?;
                let prepared = epoch_file(&dir, epoch);
                fs::rename(&path, &prepared).map_err(|e| io_err(&prepared, e))?;
                sync_dir(&dir)
            })
            .await?;
        }
        Ok(Vec::new())
    }

    async fn commit(&mut self, epoch: u64) -> Result<()> {
        if !self.in_transaction {
            return Ok(());
        }
        self.commit_transaction().await?;
        let staged = epoch_file(&self.dir, epoch);
        if staged.exists() {
            fs::remove_file(&staged).map_err(|e| io_err(&staged, e))?;
        }
        Ok(())
    }

    async fn recover(&mut self, epoch: u64, _prepared: Option<&[u8]>) -> Result<()> {
        // Fences an earlier producer of this query and aborts its open
        // transaction.
        let producer = self.inner.producer.clone();
        blocking("initialising transactions", move || {
            producer
                .init_transactions(TRANSACTION_TIMEOUT)
                .map_err(|e| kafka_err("initialising transactions", e))
        })
        .await?;
        self.in_transaction = false;
        self.open = None;
        if !self.dir.exists() {
            return Ok(());
        }
        let open = self.dir.join(OPEN_FILE);
        if open.exists() {
            fs::remove_file(&open).map_err(|e| io_err(&open, e))?;
        }
        let mut committed = None;
        for e in staged_epochs(&self.dir, ".log")? {
            let path = epoch_file(&self.dir, e);
            if e <= epoch {
                let marker = match committed {
                    Some(m) => m,
                    None => self.committed_epoch().await?,
                };
                committed = Some(marker);
                if marker < e {
                    self.republish(e, &path).await?;
                    committed = Some(e);
                }
            }
            fs::remove_file(&path).map_err(|err| io_err(&path, err))?;
        }
        Ok(())
    }

    fn max_record_bytes(&self) -> usize {
        self.inner.max_record_bytes
    }
}
