//! Exactly-once output to the local log. A query's records are staged per
//! partition while its epoch is open, made durable when the checkpoint is
//! prepared, and published into the topic when it commits (see
//! docs/architecture.md, "Exactly-once output").
//!
//! ```text
//! <log>/@staging/<topic>/<producer>/open/partition-<p>.log     the open epoch
//! <log>/@staging/<topic>/<producer>/epoch-<E>/partition-<p>.log prepared, not yet published
//! ```
//!
//! `@` cannot appear in a topic name, so the staging area is never a topic.
//! Staged frames are encoded as in a partition (their offsets mean nothing);
//! publishing re-encodes them with their offsets and the publish trailer.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::{blocking, encode_frame, io_err, partition_path, sync_dir, Topic};
use crate::connectors::{ConnectorError, LogWriter, OutRecord, Result};

const STAGING_DIR: &str = "@staging";
const OPEN_DIR: &str = "open";
const EPOCH_PREFIX: &str = "epoch-";

/// Where `producer` stages its records for `topic`.
pub(super) fn staging_dir(root: &Path, topic: &str, producer: &str) -> PathBuf {
    root.join(STAGING_DIR).join(topic).join(producer)
}

/// Writes one query's output to a topic, exactly once across crashes.
pub(super) struct StagedWriter {
    topic: Arc<Topic>,
    dir: PathBuf,
    producer: String,
    /// Per partition: the open epoch's staging file, once a record went there.
    open: Vec<Option<BufWriter<File>>>,
    buf: Vec<u8>,
    /// The publish of the last committed epoch, copying in the background
    /// while the query goes on with the next one; finished before the next
    /// `prepare` (and by `flush`), so epochs are published in order.
    publishing: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl StagedWriter {
    pub(super) fn new(topic: Arc<Topic>, dir: PathBuf, producer: &str) -> StagedWriter {
        let partitions = topic.partitions.len();
        StagedWriter {
            topic,
            dir,
            producer: producer.to_string(),
            open: (0..partitions).map(|_| None).collect(),
            buf: Vec::new(),
            publishing: None,
        }
    }

    /// Waits for the background publish, if one runs; its failure fails the
    /// query, whose restart publishes the epoch again from staging.
    async fn finish_publishing(&mut self) -> Result<()> {
        match self.publishing.take() {
            Some(task) => task.await.map_err(|e| {
                ConnectorError::InvalidRequest(format!("publishing staged output: {e}"))
            })?,
            None => Ok(()),
        }
    }

    fn stage(&mut self, partition: usize) -> Result<&mut BufWriter<File>> {
        let slot = &mut self.open[partition];
        if slot.is_none() {
            let path = partition_path(&self.dir.join(OPEN_DIR), partition as i32);
            *slot = Some(create_staging_file(&path)?);
        }
        slot.as_mut().ok_or_else(|| {
            ConnectorError::InvalidRequest("staging file vanished after opening".into())
        })
    }
}

fn epoch_dir(dir: &Path, epoch: u64) -> PathBuf {
    epoch_path(dir, epoch, "")
}

/// `<dir>/epoch-<epoch><suffix>`: where a prepared epoch is staged (a
/// directory here, a file for Kafka's transactional writer).
pub(crate) fn epoch_path(dir: &Path, epoch: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{EPOCH_PREFIX}{epoch}{suffix}"))
}

/// The epochs staged in `dir` as `epoch-<E><suffix>`, in order.
pub(crate) fn staged_epochs(dir: &Path, suffix: &str) -> Result<Vec<u64>> {
    let mut epochs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        if let Some(e) = name
            .to_str()
            .and_then(|n| n.strip_prefix(EPOCH_PREFIX))
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse().ok())
        {
            epochs.push(e);
        }
    }
    epochs.sort_unstable();
    Ok(epochs)
}

/// Opens (creating it and its directory) a file records are staged in.
pub(crate) fn create_staging_file(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

/// Writes out and syncs a staging file (`path`, for errors).
pub(crate) fn sync_staging_file(file: BufWriter<File>, path: &Path) -> Result<()> {
    let file = file
        .into_inner()
        .map_err(|e| io_err(path, e.into_error()))?;
    file.sync_data().map_err(|e| io_err(path, e))
}

/// Publishes every partition staged in `staged` (an `epoch-E` directory) and
/// removes it. Partitions this producer already published `epoch` to are
/// skipped, so a publish cut short by a crash can simply run again.
fn publish_epoch(topic: &Topic, staged: &Path, producer: &str, epoch: u64) -> Result<()> {
    let mut published = Vec::new();
    for (p, partition) in topic.partitions.iter().enumerate() {
        let path = partition_path(staged, p as i32);
        if path.exists() && partition.publish(&path, producer.as_bytes(), epoch)? {
            published.push(partition);
        }
    }
    // On disk before the staged copy goes, or a power cut could lose both.
    for partition in published {
        partition
            .file
            .sync_data()
            .map_err(|e| io_err(&partition.path, e))?;
    }
    fs::remove_dir_all(staged).map_err(|e| io_err(staged, e))
}

#[async_trait]
impl LogWriter for StagedWriter {
    async fn send(&mut self, records: Vec<OutRecord>) -> Result<()> {
        self.topic.check_not_deleted()?;
        let mut buf = std::mem::take(&mut self.buf);
        let mut result = Ok(());
        for record in &records {
            let staged = self.topic.partition_of(record).and_then(|p| {
                buf.clear();
                encode_frame(&mut buf, 0, record)?;
                let path = self.dir.clone();
                self.stage(p as usize)?
                    .write_all(&buf)
                    .map_err(|e| io_err(&path, e))
            });
            if staged.is_err() {
                result = staged;
                break;
            }
        }
        self.buf = buf;
        result
    }

    /// Staged records are not in the topic until their epoch commits; this
    /// waits for the publish of a committed epoch to finish.
    async fn flush(&mut self) -> Result<()> {
        self.finish_publishing().await
    }

    async fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        self.finish_publishing().await?;
        let files: Vec<BufWriter<File>> = self.open.iter_mut().filter_map(Option::take).collect();
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.dir.clone();
        blocking(move || {
            let open = dir.join(OPEN_DIR);
            for file in files {
                sync_staging_file(file, &open)?;
            }
            sync_dir(&open)?;
            let prepared = epoch_dir(&dir, epoch);
            if prepared.exists() {
                fs::remove_dir_all(&prepared).map_err(|e| io_err(&prepared, e))?;
            }
            fs::rename(&open, &prepared).map_err(|e| io_err(&prepared, e))?;
            sync_dir(&dir)
        })
        .await?;
        Ok(Vec::new())
    }

    /// Starts publishing the committed epoch and returns: the copy runs on
    /// a blocking thread while the query processes the next epoch.
    async fn commit(&mut self, epoch: u64) -> Result<()> {
        self.finish_publishing().await?;
        let staged = epoch_dir(&self.dir, epoch);
        if !staged.exists() {
            return Ok(());
        }
        let (topic, producer) = (self.topic.clone(), self.producer.clone());
        self.publishing = Some(tokio::task::spawn_blocking(move || {
            let published = publish_epoch(&topic, &staged, &producer, epoch);
            // Wake readers even after a failure: earlier partitions got rows.
            topic.wake_readers();
            published
        }));
        Ok(())
    }

    async fn recover(&mut self, epoch: u64, _prepared: Option<&[u8]>) -> Result<()> {
        self.finish_publishing().await?;
        self.open.iter_mut().for_each(|f| *f = None);
        let (topic, producer, dir) = (self.topic.clone(), self.producer.clone(), self.dir.clone());
        let published = blocking(move || {
            if !dir.exists() {
                return Ok(false);
            }
            let open = dir.join(OPEN_DIR);
            if open.exists() {
                fs::remove_dir_all(&open).map_err(|e| io_err(&open, e))?;
            }
            let mut published = false;
            for e in staged_epochs(&dir, "")? {
                let path = epoch_dir(&dir, e);
                if e <= epoch {
                    // Committed, perhaps not (fully) published before the crash.
                    tracing::info!(producer = %producer, epoch = e, "publishing a committed epoch left staged by a crash");
                    publish_epoch(&topic, &path, &producer, e)?;
                    published = true;
                } else {
                    tracing::info!(producer = %producer, epoch = e, "dropping output of an epoch that never committed");
                    fs::remove_dir_all(&path).map_err(|e| io_err(&path, e))?;
                }
            }
            sync_dir(&dir)?;
            Ok(published)
        })
        .await?;
        if published {
            self.topic.wake_readers();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::connectors::local_log::LocalLog;
    use crate::connectors::{partition_for_key, LogBackend, StartFrom};

    fn rec(key: &str, value: &str) -> OutRecord {
        OutRecord {
            partition: None,
            timestamp: 7,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
        }
    }

    /// Every value in `topic` now, in (partition, offset) order.
    async fn values(log: &LocalLog, topic: &str) -> Vec<String> {
        let mut reader = log.reader(topic, StartFrom::Earliest).await.unwrap();
        let mut out = Vec::new();
        loop {
            let got = reader
                .poll(10_000, Duration::from_millis(20))
                .await
                .unwrap();
            if got.is_empty() && reader.caught_up().await.unwrap() {
                break;
            }
            out.extend(got);
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out.iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect()
    }

    async fn writer(log: &LocalLog, producer: &str) -> Box<dyn LogWriter> {
        log.exactly_once_writer("out", producer)
            .await
            .unwrap()
            .expect("the local log writes exactly once")
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    #[tokio::test]
    async fn staged_records_appear_once_when_their_epoch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        log.create_topic("out", 2).await.unwrap();
        let mut w = writer(&log, "q1.a").await;
        w.recover(0, None).await.unwrap();
        w.send(vec![rec("a", "1"), rec("b", "2"), rec("c", "3")])
            .await
            .unwrap();
        assert!(values(&log, "out").await.is_empty(), "staged, not visible");
        w.prepare(1).await.unwrap();
        assert!(
            values(&log, "out").await.is_empty(),
            "prepared, not visible"
        );
        w.commit(1).await.unwrap();
        w.flush().await.unwrap();
        let mut got = values(&log, "out").await;
        got.sort();
        assert_eq!(got, ["1", "2", "3"]);
        w.commit(1).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(values(&log, "out").await.len(), 3, "a commit is done once");

        // Epoch 2 is prepared, then the process dies before its checkpoint
        // commits: the restarted query recovers at epoch 1 and drops it.
        w.send(vec![rec("a", "4")]).await.unwrap();
        w.prepare(2).await.unwrap();
        drop(w);
        let mut w = writer(&log, "q1.a").await;
        w.recover(1, None).await.unwrap();
        assert_eq!(values(&log, "out").await.len(), 3);
        w.send(vec![rec("a", "5")]).await.unwrap();
        w.prepare(2).await.unwrap();
        w.commit(2).await.unwrap();
        w.flush().await.unwrap();
        let mut got = values(&log, "out").await;
        got.sort();
        assert_eq!(got, ["1", "2", "3", "5"]);
    }

    #[tokio::test]
    async fn a_publish_cut_short_by_a_crash_is_published_again_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition_for_key(b"k", 1);
        let staged_copy = dir.path().join("copy");
        let partition_file = partition_path(&dir.path().join("out"), p);
        let staged = epoch_dir(&staging_dir(dir.path(), "out", "q2.a"), 1);
        {
            let log = LocalLog::open(dir.path()).unwrap();
            log.create_topic("out", 1).await.unwrap();
            let mut plain = log.writer("out").await.unwrap();
            plain.send(vec![rec("k", "before")]).await.unwrap();
            let mut w = writer(&log, "q2.a").await;
            w.recover(0, None).await.unwrap();
            let records: Vec<OutRecord> = (0..50).map(|i| rec("k", &i.to_string())).collect();
            w.send(records).await.unwrap();
            w.prepare(1).await.unwrap();
            copy_dir(&staged, &staged_copy);
            w.commit(1).await.unwrap();
            w.flush().await.unwrap();
            assert_eq!(values(&log, "out").await.len(), 51);
        }
        // The crash: the publish's last record never reached the file, and
        // the staged epoch was not removed yet.
        let len = fs::metadata(&partition_file).unwrap().len();
        let file = OpenOptions::new()
            .write(true)
            .open(&partition_file)
            .unwrap();
        file.set_len(len - 3).unwrap();
        drop(file);
        copy_dir(&staged_copy, &staged);
        let log = LocalLog::open(dir.path()).unwrap();
        assert_eq!(
            values(&log, "out").await,
            ["before"],
            "recovery drops the unfinished publish whole"
        );
        let mut w = writer(&log, "q2.a").await;
        w.recover(1, None).await.unwrap();
        let expected: Vec<String> = std::iter::once("before".to_string())
            .chain((0..50).map(|i| i.to_string()))
            .collect();
        assert_eq!(values(&log, "out").await, expected);
        drop(w);
        drop(log);

        // Crash after the publish, before the staged epoch was removed: a
        // second recovery finds it published already and adds nothing, also
        // after the log was reopened.
        copy_dir(&staged_copy, &staged);
        let log = LocalLog::open(dir.path()).unwrap();
        let mut w = writer(&log, "q2.a").await;
        w.recover(1, None).await.unwrap();
        assert_eq!(values(&log, "out").await, expected);
        assert!(!staged.exists());
        // Another incarnation of the query (a new producer) is not mistaken
        // for this one.
        let mut other = writer(&log, "q2.b").await;
        other.recover(0, None).await.unwrap();
        other.send(vec![rec("k", "new")]).await.unwrap();
        other.prepare(1).await.unwrap();
        other.commit(1).await.unwrap();
        other.flush().await.unwrap();
        assert_eq!(values(&log, "out").await.len(), 52);
    }
}
