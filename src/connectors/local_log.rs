//! The embedded log: a durable, partitioned, append-only log on the local disk.
//!
//! It is the default backend when no Kafka brokers are configured, so a single
//! `sluice serve` works out of the box with the same semantics as Kafka: topics
//! with partitions, 0-based offsets per partition, keys placed with Kafka's
//! murmur2 partitioner, tombstones.
//!
//! # Layout
//!
//! ```text
//! <dir>/LOCK                      advisory lock: one process owns the log
//! <dir>/<topic>/meta.json         {"format":1,"partitions":N}
//! <dir>/<topic>/partition-<p>.log append-only frames, one file per partition
//! ```
//!
//! A frame is `body_len: u32 | crc32(body): u32 | body`, little endian, where the body is
//! `offset: i64 | timestamp: i64 | key_len: i32 | key | value_len: i32 | value` and a
//! length of -1 encodes a null key or a tombstone value. The offset is stored (although
//! it is implied by the position) so that recovery and readers can check that frames
//! are where the index says they are.
//!
//! Frames of an exactly-once publish (see [`staged`]) end with a trailer after the
//! value: `1` on every frame but the last, and on the last `2 | epoch: u64 |
//! producer_len: u16 | producer`. Recovery cuts off a publish whose last frame is
//! missing and remembers, per producer, the last epoch published, so that
//! publishing an epoch again after a crash adds nothing.
//!
//! # Durability
//!
//! [`LogWriter::send`] writes the frames with one `write(2)` per partition before it
//! returns, so they survive the process being killed; [`LogWriter::flush`] fsyncs them so
//! they survive a machine crash too. A crash in the middle of a write leaves a torn frame
//! at the tail of a partition file; opening the topic scans every partition, verifies
//! checksums and truncates the file after the last valid frame (like Kafka's log
//! recovery). The scan also rebuilds a sparse in-memory index (an entry every
//! [`INDEX_INTERVAL_BYTES`]) so a reader can start at any offset without reading the
//! partition from the beginning.
//!
//! Topics are loaded lazily, on first use, so opening a large log is instant.
//!
//! # Concurrency
//!
//! Appends to a partition are serialised by a per-partition mutex that also assigns the
//! offsets. Readers never take that mutex on the hot path: each one owns its own file
//! handles and reads only up to the partition's *committed length*, an atomic that a
//! writer publishes after its frames are completely written, so a reader never sees half
//! a frame. Writers bump a per-topic `watch` counter after every append, which wakes
//! readers that wait for new data (no polling).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{
    partition_for_key, ConnectorError, LogBackend, LogReader, LogRecord, LogWriter, OutRecord,
    Result, StartFrom, TopicInfo,
};

mod staged;

pub(crate) use staged::{create_staging_file, epoch_path, staged_epochs, sync_staging_file};

const META_FILE: &str = "meta.json";
const LOCK_FILE: &str = "LOCK";
const META_FORMAT: u32 = 1;
/// Directories being created or deleted carry this prefix. `~` cannot appear in a topic
/// name, so these never collide with a topic and are cleaned up on open.
const TMP_PREFIX: &str = "~";

/// `body_len: u32` and `crc32: u32`.
const FRAME_HEADER: usize = 8;
/// offset, timestamp, key length, value length.
const BODY_FIXED: usize = 8 + 8 + 4 + 4;
/// Largest frame body accepted. Bounds what a corrupt length can make us allocate.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
/// The sparse index gets an entry at the first frame after every this many bytes, so
/// positioning a reader scans at most about this much.
const INDEX_INTERVAL_BYTES: u64 = 64 << 10;
/// A partition's encoding buffer is dropped after a write larger than this,
/// so one exceptionally large batch does not keep its memory.
const MAX_KEPT_BUFFER: usize = 16 << 20;
/// Readers read partition files in chunks of this size.
const READ_CHUNK: usize = 256 << 10;
/// Recovery reads with a buffer of this size.
const RECOVERY_BUFFER: usize = 1 << 20;
/// More partitions than this is almost certainly a mistake (each one is a file).
const MAX_PARTITIONS: i32 = 10_000;
/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name with Kafka's rules: 1 to 249 characters among ASCII letters,
/// digits, `.`, `_` and `-`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason: &str| {
        Err(ConnectorError::InvalidTopicName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return invalid("the name is empty");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid("the name is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid(&format!(
            "character {c:?} is not allowed (use ASCII letters, digits, '.', '_' and '-')"
        ));
    }
    Ok(())
}

pub(crate) fn io_err(path: &Path, source: io::Error) -> ConnectorError {
    ConnectorError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> ConnectorError {
    ConnectorError::Corrupt {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// Runs blocking file-system work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(ConnectorError::Io {
            path: "<blocking task>".to_string(),
            source: io::Error::other(e.to_string()),
        }),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TopicMeta {
    format: u32,
    partitions: i32,
}

/// The embedded log backend. See the module documentation.
pub struct LocalLog {
    dir: PathBuf,
    /// Topics loaded so far. The async mutex serialises administration (create, delete,
    /// first load) so two tasks never recover the same topic twice; readers and writers
    /// hold an `Arc<Topic>` and never touch it again.
    topics: tokio::sync::Mutex<HashMap<String, Arc<Topic>>>,
    lock: Arc<File>,
}

impl std::fmt::Debug for LocalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLog").field("dir", &self.dir).finish()
    }
}

impl LocalLog {
    /// Opens (creating if needed) the log stored under `dir`. Fails if another process
    /// (or another `LocalLog` in this process) has the same directory open.
    pub fn open(dir: &Path) -> Result<Arc<LocalLog>> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io_err(
                    dir,
                    io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the log is already open in another process (or another LocalLog)",
                    ),
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
        }

        // Leftovers of a create or delete that crashed half way.
        for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                tracing::info!(path = %path.display(), "removing leftover of an interrupted topic create/delete");
                fs::remove_dir_all(&path).map_err(|e| io_err(&path, e))?;
            }
        }

        Ok(Arc::new(LocalLog {
            dir: dir.to_path_buf(),
            topics: tokio::sync::Mutex::new(HashMap::new()),
            lock: Arc::new(lock),
        }))
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The loaded topic, loading (and recovering) it from disk on first use.
    async fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        let mut topics = self.topics.lock().await;
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        let dir = self.topic_dir(name);
        let name_owned = name.to_string();
        let lock = self.lock.clone();
        let topic = blocking(move || {
            let meta = match read_meta(&dir)? {
                Some(meta) => meta,
                None => return Err(ConnectorError::UnknownTopic(name_owned)),
            };
            Topic::load(name_owned, dir, meta.partitions, lock)
        })
        .await?;
        let topic = Arc::new(topic);
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }
}

/// Reads `<dir>/meta.json`; `None` when the topic does not exist.
fn read_meta(dir: &Path) -> Result<Option<TopicMeta>> {
    let path = dir.join(META_FILE);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, e)),
    };
    let meta: TopicMeta = serde_json::from_slice(&text)
        .map_err(|e| corrupt(&path, format!("unreadable topic metadata: {e}")))?;
    if meta.format != META_FORMAT {
        return Err(corrupt(
            &path,
            format!(
                "unsupported format {} (expected {META_FORMAT})",
                meta.format
            ),
        ));
    }
    if meta.partitions < 1 || meta.partitions > MAX_PARTITIONS {
        return Err(corrupt(
            &path,
            format!("invalid partition count {}", meta.partitions),
        ));
    }
    Ok(Some(meta))
}

fn partition_path(dir: &Path, partition: i32) -> PathBuf {
    dir.join(format!("partition-{partition}.log"))
}

/// fsyncs a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Creates a topic directory atomically: everything is written and synced under a
/// temporary name, then renamed into place, so a crash never leaves half a topic.
fn create_topic_on_disk(root: &Path, name: &str, partitions: i32) -> Result<()> {
    let tmp = root.join(format!("{TMP_PREFIX}creating~{name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| io_err(&tmp, e))?;
    let meta = serde_json::to_vec(&TopicMeta {
        format: META_FORMAT,
        partitions,
    })
    .map_err(|e| corrupt(&tmp, format!("cannot encode topic metadata: {e}")))?;
    let meta_path = tmp.join(META_FILE);
    let mut f = File::create(&meta_path).map_err(|e| io_err(&meta_path, e))?;
    f.write_all(&meta)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&meta_path, e))?;
    for p in 0..partitions {
        let path = partition_path(&tmp, p);
        File::create(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(&path, e))?;
    }
    sync_dir(&tmp)?;
    let dest = root.join(name);
    fs::rename(&tmp, &dest).map_err(|e| io_err(&dest, e))?;
    sync_dir(root)
}

/// One topic, loaded: its partitions and the signal that wakes its readers.
struct Topic {
    name: String,
    partitions: Vec<Partition>,
    /// Bumped after every append (and on delete) to wake waiting readers.
    appended: watch::Sender<u64>,
    deleted: AtomicBool,
    /// Spreads records without a key over the partitions.
    round_robin: AtomicU32,
    /// Keeps the directory lock alive while readers and writers of this topic exist,
    /// even if the `LocalLog` itself was dropped.
    _lock: Arc<File>,
}

impl Topic {
    /// Loads a topic from disk, recovering every partition (see [`recover_partition`]).
    fn load(name: String, dir: PathBuf, partitions: i32, lock: Arc<File>) -> Result<Topic> {
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            parts.push(Partition::open(partition_path(&dir, p))?);
        }
        Ok(Topic {
            name,
            partitions: parts,
            appended: watch::channel(0).0,
            deleted: AtomicBool::new(false),
            round_robin: AtomicU32::new(0),
            _lock: lock,
        })
    }

    /// The partition `record` goes to: its own, by its key's hash as Kafka
    /// places keys, or round robin without a key.
    fn partition_of(&self, record: &OutRecord) -> Result<i32> {
        let n = self.partitions.len() as i32;
        match (record.partition, &record.key) {
            (Some(p), _) if (0..n).contains(&p) => Ok(p),
            (Some(p), _) => Err(ConnectorError::InvalidRequest(format!(
                "partition {p} does not exist in topic '{}' ({n} partitions)",
                self.name
            ))),
            (None, Some(key)) => Ok(partition_for_key(key, n)),
            (None, None) => {
                Ok((self.round_robin.fetch_add(1, Ordering::Relaxed) % n as u32) as i32)
            }
        }
    }

    /// Wakes readers waiting for records of the topic (or for its deletion).
    fn wake_readers(&self) {
        self.appended.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn check_not_deleted(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            Err(ConnectorError::UnknownTopic(self.name.clone()))
        } else {
            Ok(())
        }
    }
}

/// An entry of the sparse index: the frame holding `offset` starts at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEntry {
    offset: i64,
    position: u64,
}

struct Partition {
    path: PathBuf,
    /// Opened for appending; shared with `flush` for fsync.
    file: Arc<File>,
    /// Bytes of complete frames in the file. Written only with `state` locked,
    /// published with `Release` after the frames are written; readers never read past it.
    committed_len: AtomicU64,
    /// Offset the next appended record gets (= number of records). Updated after
    /// `committed_len`, so a reader that sees an end offset also sees its frames.
    end_offset: AtomicI64,
    state: Mutex<PartitionState>,
}

struct PartitionState {
    /// Sorted by offset; always starts with `{0, 0}`.
    index: Vec<IndexEntry>,
    /// Reused encoding buffer, so appends do not allocate in the steady state.
    encode_buf: Vec<u8>,
    /// Set when a failed append could not be rolled back: appending more would put
    /// records after garbage, so the partition refuses writes until reopened.
    poisoned: Option<String>,
    /// Per producer, the last epoch it published (see [`staged`]).
    published: HashMap<Box<[u8]>, u64>,
}

/// What recovery found in a partition file.
struct Recovered {
    len: u64,
    end_offset: i64,
    index: Vec<IndexEntry>,
    /// Per producer, the last epoch it published (see [`staged`]).
    published: HashMap<Box<[u8]>, u64>,
}

impl Partition {
    fn open(path: PathBuf) -> Result<Partition> {
        if !path.exists() {
            // Creation makes every partition file before the topic becomes visible, so
            // this only happens if someone deleted the file by hand.
            tracing::warn!(path = %path.display(), "partition file missing; starting it empty");
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let recovered = recover_partition(&path, &file)?;
        Ok(Partition {
            path,
            file: Arc::new(file),
            committed_len: AtomicU64::new(recovered.len),
            end_offset: AtomicI64::new(recovered.end_offset),
            state: Mutex::new(PartitionState {
                index: recovered.index,
                encode_buf: Vec::new(),
                poisoned: None,
                published: recovered.published,
            }),
        })
    }

    /// Refuses writes after a failed write that could not be rolled back.
    fn check_writable(&self, state: &PartitionState) -> Result<()> {
        match &state.poisoned {
            Some(reason) => Err(io_err(
                &self.path,
                io::Error::other(format!(
                    "partition refuses writes after an earlier failure: {reason}"
                )),
            )),
            None => Ok(()),
        }
    }

    /// Undoes a failed write of frames that started at byte `start_len`: their
    /// index entries go and the file is cut back, so the next write starts on
    /// a frame boundary. If even that fails, the partition refuses writes
    /// until it is reopened.
    fn roll_back(
        &self,
        state: &mut PartitionState,
        index_len: usize,
        start_len: u64,
        failure: &dyn std::fmt::Display,
    ) {
        state.index.truncate(index_len);
        if let Err(trunc) = self.file.set_len(start_len) {
            state.poisoned = Some(format!(
                "write failed ({failure}) and truncation failed ({trunc})"
            ));
        }
    }

    /// Appends `records` with one write, assigning consecutive offsets.
    fn append<'a>(&self, records: impl Iterator<Item = &'a OutRecord>) -> Result<()> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        self.check_writable(state)?;
        let start_len = self.committed_len.load(Ordering::Relaxed);
        let start_offset = self.end_offset.load(Ordering::Relaxed);
        let index_len = state.index.len();
        let mut last_indexed = state.index.last().map_or(0, |e| e.position);
        let mut offset = start_offset;
        let buf = &mut state.encode_buf;
        buf.clear();
        for record in records {
            let position = start_len + buf.len() as u64;
            if position - last_indexed >= INDEX_INTERVAL_BYTES {
                state.index.push(IndexEntry { offset, position });
                last_indexed = position;
            }
            if let Err(e) = encode_frame(buf, offset, record) {
                state.index.truncate(index_len);
                return Err(e);
            }
            offset += 1;
        }
        if offset == start_offset {
            return Ok(());
        }

        if let Err(e) = (&*self.file).write_all(buf) {
            // Part of the batch may have reached the file.
            self.roll_back(state, index_len, start_len, &e);
            return Err(io_err(&self.path, e));
        }
        self.committed_len
            .store(start_len + buf.len() as u64, Ordering::Release);
        self.end_offset.store(offset, Ordering::Release);
        if buf.capacity() > MAX_KEPT_BUFFER {
            *buf = Vec::new();
        }
        Ok(())
    }

    /// Appends the records staged in the file `staged` (frames as
    /// [`encode_frame`] writes them) as `producer`'s publish of `epoch`: one
    /// group of frames, the last carrying producer and epoch, that readers see
    /// all at once. Returns false, adding nothing, when this producer has
    /// published `epoch` or a later one here already.
    fn publish(&self, staged: &Path, producer: &[u8], epoch: u64) -> Result<bool> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        self.check_writable(state)?;
        if state.published.get(producer).is_some_and(|&e| e >= epoch) {
            return Ok(false);
        }
        let start_len = self.committed_len.load(Ordering::Relaxed);
        let start_offset = self.end_offset.load(Ordering::Relaxed);
        let index_len = state.index.len();
        let mut buf = std::mem::take(&mut state.encode_buf);
        buf.clear();
        let result = self.write_publish(state, staged, producer, epoch, start_len, &mut buf);
        if buf.capacity() <= MAX_KEPT_BUFFER {
            state.encode_buf = buf;
        }
        match result {
            Ok((written, end_offset)) => {
                if end_offset == start_offset {
                    return Ok(false);
                }
                state.published.insert(producer.into(), epoch);
                self.committed_len
                    .store(start_len + written, Ordering::Release);
                self.end_offset.store(end_offset, Ordering::Release);
                Ok(true)
            }
            Err(e) => {
                self.roll_back(state, index_len, start_len, &e);
                Err(e)
            }
        }
    }

    /// Copies the staged frames into the partition file, in pieces; returns
    /// the bytes written and the next offset. Nothing is visible to readers yet.
    fn write_publish(
        &self,
        state: &mut PartitionState,
        staged: &Path,
        producer: &[u8],
        epoch: u64,
        start_len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(u64, i64)> {
        const PIECE: usize = 4 << 20;
        let file = File::open(staged).map_err(|e| io_err(staged, e))?;
        let mut reader = BufReader::with_capacity(RECOVERY_BUFFER, file);
        let mut offset = self.end_offset.load(Ordering::Relaxed);
        let mut written = 0u64;
        let mut last_indexed = state.index.last().map_or(0, |e| e.position);
        let (mut header, mut prev_header) = ([0u8; FRAME_HEADER], [0u8; FRAME_HEADER]);
        let (mut body, mut prev_body) = (Vec::new(), Vec::new());
        let mut have_prev = false;
        loop {
            let more = read_staged_frame(&mut reader, staged, &mut header, &mut body)?;
            if have_prev {
                let frame =
                    decode_frame(&prev_header, &prev_body).map_err(|e| corrupt(staged, e))?;
                let position = start_len + written + buf.len() as u64;
                if position - last_indexed >= INDEX_INTERVAL_BYTES {
                    state.index.push(IndexEntry { offset, position });
                    last_indexed = position;
                }
                let publish = if more {
                    Publish::Continues
                } else {
                    Publish::Last { epoch, producer }
                };
                encode_frame_parts(
                    buf,
                    offset,
                    frame.timestamp,
                    frame.key,
                    frame.value,
                    Some(publish),
                )?;
                offset += 1;
                if buf.len() >= PIECE {
                    (&*self.file)
                        .write_all(buf)
                        .map_err(|e| io_err(&self.path, e))?;
                    written += buf.len() as u64;
                    buf.clear();
                }
            }
            if !more {
                break;
            }
            std::mem::swap(&mut header, &mut prev_header);
            std::mem::swap(&mut body, &mut prev_body);
            have_prev = true;
        }
        (&*self.file)
            .write_all(buf)
            .map_err(|e| io_err(&self.path, e))?;
        written += buf.len() as u64;
        Ok((written, offset))
    }

    /// Where a reader that wants `offset` starts reading: a frame boundary at or before
    /// it, and the offset of the frame there. Offsets past the end start at the end.
    fn seek_point(&self, offset: i64) -> (IndexEntry, i64) {
        let state = self.state.lock();
        let len = self.committed_len.load(Ordering::Acquire);
        let end = self.end_offset.load(Ordering::Acquire);
        if offset >= end {
            if offset > end {
                tracing::warn!(
                    path = %self.path.display(), requested = offset, end,
                    "requested offset is past the end of the partition; reading from the end"
                );
            }
            return (
                IndexEntry {
                    offset: end,
                    position: len,
                },
                end,
            );
        }
        let offset = offset.max(0);
        let i = state.index.partition_point(|e| e.offset <= offset);
        // `index[0]` is {0, 0} and offset >= 0, so i >= 1.
        let entry = state.index[i.saturating_sub(1)];
        (entry, offset)
    }
}

/// Where a frame stands in an exactly-once publish (the frame trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish<'a> {
    /// More frames of the same publish follow.
    Continues,
    /// The last frame of `producer`'s publish of `epoch`.
    Last { epoch: u64, producer: &'a [u8] },
}

const TRAILER_CONTINUES: u8 = 1;
const TRAILER_LAST: u8 = 2;

impl Publish<'_> {
    fn encoded_len(&self) -> usize {
        match self {
            Publish::Continues => 1,
            Publish::Last { producer, .. } => 1 + 8 + 2 + producer.len(),
        }
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Publish::Continues => buf.push(TRAILER_CONTINUES),
            Publish::Last { epoch, producer } => {
                buf.push(TRAILER_LAST);
                buf.extend_from_slice(&epoch.to_le_bytes());
                buf.extend_from_slice(&(producer.len() as u16).to_le_bytes());
                buf.extend_from_slice(producer);
            }
        }
    }
}

/// Appends one frame for `record` at `offset` to `buf`.
fn encode_frame(buf: &mut Vec<u8>, offset: i64, record: &OutRecord) -> Result<()> {
    encode_frame_parts(
        buf,
        offset,
        record.timestamp,
        record.key.as_deref(),
        record.value.as_deref(),
        None,
    )
}

/// Appends one frame to `buf`, with the trailer of a publish when `publish` is set.
fn encode_frame_parts(
    buf: &mut Vec<u8>,
    offset: i64,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    publish: Option<Publish<'_>>,
) -> Result<()> {
    let key_len = key.map_or(0, |k| k.len());
    let value_len = value.map_or(0, |v| v.len());
    let trailer_len = publish.as_ref().map_or(0, Publish::encoded_len);
    let body_len = BODY_FIXED + key_len + value_len + trailer_len;
    if body_len > MAX_RECORD_BYTES {
        return Err(ConnectorError::InvalidRequest(format!(
            "record of {body_len} bytes is larger than the local log accepts ({MAX_RECORD_BYTES} bytes)"
        )));
    }
    let start = buf.len();
    buf.reserve(FRAME_HEADER + body_len);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // checksum, patched below
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp.to_le_bytes());
    for field in [key, value] {
        match field {
            Some(bytes) => {
                buf.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
                buf.extend_from_slice(bytes);
            }
            None => buf.extend_from_slice(&(-1i32).to_le_bytes()),
        }
    }
    if let Some(publish) = publish {
        publish.encode(buf);
    }
    let crc = crc32::checksum(&buf[start + FRAME_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends `record` to `buf` as a staged frame (see [`read_staged`]): the
/// local log's frame format, which other writers that stage output (Kafka's
/// transactional writer) use too.
pub(crate) fn encode_staged(buf: &mut Vec<u8>, record: &OutRecord) -> Result<()> {
    encode_frame(buf, 0, record)
}

/// Every record of a file of staged frames ([`encode_staged`]), with their
/// partitions left to the writer.
pub(crate) fn read_staged(path: &Path) -> Result<Vec<OutRecord>> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut reader = BufReader::with_capacity(RECOVERY_BUFFER, file);
    let (mut header, mut body) = ([0u8; FRAME_HEADER], Vec::new());
    let mut records = Vec::new();
    while read_staged_frame(&mut reader, path, &mut header, &mut body)? {
        let frame = decode_frame(&header, &body).map_err(|e| corrupt(path, e))?;
        records.push(OutRecord {
            partition: None,
            timestamp: frame.timestamp,
            key: frame.key.map(Bytes::copy_from_slice),
            value: frame.value.map(Bytes::copy_from_slice),
        });
    }
    Ok(records)
}

/// Reads the next frame of a staged file (`path`, for errors) into `header`
/// and `body`; false at the end of the file. Staged files are synced before
/// anyone reads them, so a frame cut short is corruption, not a torn tail.
fn read_staged_frame(
    reader: &mut impl Read,
    path: &Path,
    header: &mut [u8; FRAME_HEADER],
    body: &mut Vec<u8>,
) -> Result<bool> {
    match read_full(reader, header).map_err(|e| io_err(path, e))? {
        0 => Ok(false),
        FRAME_HEADER => {
            let len = frame_body_len(header).map_err(|e| corrupt(path, e))?;
            body.resize(len, 0);
            if read_full(reader, body).map_err(|e| io_err(path, e))? < len {
                return Err(corrupt(path, "staged frame cut short"));
            }
            Ok(true)
        }
        _ => Err(corrupt(path, "staged frame header cut short")),
    }
}

/// A decoded frame body, borrowing from the buffer it was read from.
struct FrameView<'a> {
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    publish: Option<Publish<'a>>,
}

/// Reads the body length from a frame header, checking it is plausible.
fn frame_body_len(header: &[u8]) -> std::result::Result<usize, String> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(BODY_FIXED..=MAX_RECORD_BYTES).contains(&len) {
        return Err(format!("invalid frame length {len}"));
    }
    Ok(len)
}

/// Checks the checksum and decodes a frame body (`header` is the 8-byte frame header).
fn decode_frame<'a>(header: &[u8], body: &'a [u8]) -> std::result::Result<FrameView<'a>, String> {
    let expected = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let actual = crc32::checksum(body);
    if expected != actual {
        return Err(format!(
            "checksum mismatch (stored {expected:#010x}, computed {actual:#010x})"
        ));
    }
    let i64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[at..at + 8]);
        i64::from_le_bytes(b)
    };
    let offset = i64_at(0);
    let timestamp = i64_at(8);
    let mut at = 16;
    let mut field = || -> std::result::Result<Option<&'a [u8]>, String> {
        let len_bytes = body
            .get(at..at + 4)
            .ok_or_else(|| "frame body too short".to_string())?;
        let len = i32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        at += 4;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("invalid field length {len}"))?;
        let bytes = body
            .get(at..at + len)
            .ok_or_else(|| format!("field length {len} runs past the frame"))?;
        at += len;
        Ok(Some(bytes))
    };
    let key = field()?;
    let value = field()?;
    let publish = decode_trailer(&body[at..])?;
    Ok(FrameView {
        offset,
        timestamp,
        key,
        value,
        publish,
    })
}

/// The publish trailer of a frame (`rest`: the body after the value).
fn decode_trailer(rest: &[u8]) -> std::result::Result<Option<Publish<'_>>, String> {
    let unexpected = || format!("{} unexpected bytes after the value", rest.len());
    match rest.split_first() {
        None => Ok(None),
        Some((&TRAILER_CONTINUES, [])) => Ok(Some(Publish::Continues)),
        Some((&TRAILER_LAST, tail)) if tail.len() >= 10 => {
            let mut epoch = [0u8; 8];
            epoch.copy_from_slice(&tail[..8]);
            let len = u16::from_le_bytes([tail[8], tail[9]]) as usize;
            let producer = &tail[10..];
            if producer.len() != len {
                return Err(unexpected());
            }
            Ok(Some(Publish::Last {
                epoch: u64::from_le_bytes(epoch),
                producer,
            }))
        }
        Some(_) => Err(unexpected()),
    }
}

/// Reads until `buf` is full or the end of the input; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Scans a partition file, verifying every frame, and rebuilds the sparse index.
///
/// Everything after the first frame that is incomplete, fails its checksum or does not
/// carry the next offset is cut off: that is what a crash during a write leaves behind
/// (including the zero-filled blocks a file system may expose after a power loss).
fn recover_partition(path: &Path, file: &File) -> Result<Recovered> {
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut reader = BufReader::with_capacity(RECOVERY_BUFFER, file);
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| io_err(path, e))?;
    let mut index = vec![IndexEntry {
        offset: 0,
        position: 0,
    }];
    let mut position: u64 = 0;
    let mut offset: i64 = 0;
    let mut header = [0u8; FRAME_HEADER];
    let mut body = Vec::new();
    let mut published: HashMap<Box<[u8]>, u64> = HashMap::new();
    // Where the publish whose last frame has not been seen yet starts:
    // (position, offset, index length).
    let mut open_publish: Option<(u64, i64, usize)> = None;
    let torn: Option<String> = loop {
        let got = read_full(&mut reader, &mut header).map_err(|e| io_err(path, e))?;
        if got == 0 {
            break None;
        }
        if got < FRAME_HEADER {
            break Some("incomplete frame header".to_string());
        }
        let body_len = match frame_body_len(&header) {
            Ok(len) => len,
            Err(e) => break Some(e),
        };
        let frame_len = (FRAME_HEADER + body_len) as u64;
        if position + frame_len > file_len {
            break Some(format!(
                "frame of {frame_len} bytes runs past the end of the file"
            ));
        }
        body.resize(body_len, 0);
        let got = read_full(&mut reader, &mut body).map_err(|e| io_err(path, e))?;
        if got < body_len {
            break Some("incomplete frame body".to_string());
        }
        match decode_frame(&header, &body) {
            Ok(frame) if frame.offset == offset => match frame.publish {
                Some(Publish::Continues) => {
                    open_publish.get_or_insert((position, offset, index.len()));
                }
                Some(Publish::Last { epoch, producer }) => {
                    open_publish = None;
                    let last = published.entry(producer.into()).or_insert(epoch);
                    *last = (*last).max(epoch);
                }
                // Publishes hold the partition's lock, so nothing else is
                // written inside one.
                None if open_publish.is_some() => {
                    break Some("a record inside an unfinished publish".to_string())
                }
                None => {}
            },
            Ok(frame) => {
                break Some(format!(
                    "frame carries offset {} where {offset} was expected",
                    frame.offset
                ))
            }
            Err(e) => break Some(e),
        }
        if position - index.last().map_or(0, |e| e.position) >= INDEX_INTERVAL_BYTES {
            index.push(IndexEntry { offset, position });
        }
        position += frame_len;
        offset += 1;
    };
    // A publish cut short by a crash is dropped whole: its epoch is
    // published again from staging.
    let torn = match (open_publish, torn) {
        (Some((start, first, index_len)), torn) => {
            position = start;
            offset = first;
            index.truncate(index_len);
            Some(match torn {
                Some(reason) => format!("{reason}, inside an unfinished publish"),
                None => "a publish without its last record".to_string(),
            })
        }
        (None, torn) => torn,
    };
    if let Some(reason) = torn {
        tracing::warn!(
            path = %path.display(),
            valid_bytes = position,
            dropped_bytes = file_len - position,
            records = offset,
            %reason,
            "truncating the torn tail of a partition (left by a crash during a write)"
        );
        file.set_len(position)
            .and_then(|_| file.sync_all())
            .map_err(|e| io_err(path, e))?;
    }
    Ok(Recovered {
        len: position,
        end_offset: offset,
        index,
        published,
    })
}

#[async_trait]
impl LogBackend for LocalLog {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        // Hold the admin lock so a concurrent create/delete is either seen whole or not.
        let _topics = self.topics.lock().await;
        let dir = self.dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
                let entry = entry.map_err(|e| io_err(&dir, e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if validate_topic_name(&name).is_err() || !entry.path().is_dir() {
                    continue;
                }
                if let Some(meta) = read_meta(&entry.path())? {
                    out.push(TopicInfo {
                        name,
                        partitions: meta.partitions,
                    });
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn describe_topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        validate_topic_name(name)?;
        let topics = self.topics.lock().await;
        if let Some(topic) = topics.get(name) {
            return Ok(Some(TopicInfo {
                name: name.to_string(),
                partitions: topic.partitions.len() as i32,
            }));
        }
        let dir = self.topic_dir(name);
        let meta = blocking(move || read_meta(&dir)).await?;
        Ok(meta.map(|m| TopicInfo {
            name: name.to_string(),
            partitions: m.partitions,
        }))
    }

    async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(ConnectorError::InvalidRequest(format!(
                "a topic needs between 1 and {MAX_PARTITIONS} partitions, not {partitions}"
            )));
        }
        let mut topics = self.topics.lock().await;
        let root = self.dir.clone();
        let name_owned = name.to_string();
        let lock = self.lock.clone();
        let topic = blocking(move || {
            let dir = root.join(&name_owned);
            if dir.join(META_FILE).exists() {
                return Err(ConnectorError::TopicExists(name_owned));
            }
            if dir.exists() {
                // A directory without metadata is not a topic we made; do not touch it.
                return Err(io_err(
                    &dir,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a directory with the topic's name exists but is not a topic",
                    ),
                ));
            }
            create_topic_on_disk(&root, &name_owned, partitions)?;
            Topic::load(name_owned, dir, partitions, lock)
        })
        .await?;
        topics.insert(name.to_string(), Arc::new(topic));
        Ok(())
    }

    async fn delete_topic(&self, name: &str) -> Result<()> {
        validate_topic_name(name)?;
        let mut topics = self.topics.lock().await;
        if let Some(topic) = topics.remove(name) {
            topic.deleted.store(true, Ordering::Release);
            // Wake readers blocked in poll so they notice the deletion.
            topic.wake_readers();
        }
        let root = self.dir.clone();
        let name_owned = name.to_string();
        blocking(move || {
            let dir = root.join(&name_owned);
            if read_meta(&dir)?.is_none() {
                return Err(ConnectorError::UnknownTopic(name_owned));
            }
            // Rename first so the topic disappears atomically; removing the files can
            // then be interrupted safely (leftovers are removed on the next open).
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let trash = root.join(format!("{TMP_PREFIX}deleting~{name_owned}~{nanos}"));
            fs::rename(&dir, &trash).map_err(|e| io_err(&dir, e))?;
            sync_dir(&root)?;
            fs::remove_dir_all(&trash).map_err(|e| io_err(&trash, e))
        })
        .await
    }

    async fn reader(&self, topic: &str, start: StartFrom) -> Result<Box<dyn LogReader>> {
        let topic = self.topic(topic).await?;
        let reader = blocking(move || LocalReader::new(topic, start)).await?;
        Ok(Box::new(reader))
    }

    async fn exactly_once_writer(
        &self,
        topic: &str,
        producer: &str,
    ) -> Result<Option<Box<dyn LogWriter>>> {
        let topic = self.topic(topic).await?;
        let dir = staged::staging_dir(&self.dir, &topic.name, producer);
        Ok(Some(Box::new(staged::StagedWriter::new(
            topic, dir, producer,
        ))))
    }

    async fn writer(&self, topic: &str) -> Result<Box<dyn LogWriter>> {
        let topic = self.topic(topic).await?;
        let partitions = topic.partitions.len();
        Ok(Box::new(LocalWriter {
            topic,
            dirty: vec![false; partitions],
            by_partition: vec![Vec::new(); partitions],
        }))
    }
}

struct LocalWriter {
    topic: Arc<Topic>,
    /// Partitions appended to since the last flush.
    dirty: Vec<bool>,
    /// Scratch: indexes of the records of one `send` going to each partition.
    by_partition: Vec<Vec<usize>>,
}

#[async_trait]
impl LogWriter for LocalWriter {
    async fn send(&mut self, records: Vec<OutRecord>) -> Result<()> {
        self.topic.check_not_deleted()?;
        if records.is_empty() {
            return Ok(());
        }
        for list in &mut self.by_partition {
            list.clear();
        }
        for (i, record) in records.iter().enumerate() {
            let p = self.topic.partition_of(record)?;
            self.by_partition[p as usize].push(i);
        }
        // The writes go to the page cache and take microseconds, so they run inline
        // rather than paying for a hop to the blocking pool on every batch.
        let mut result = Ok(());
        for (p, list) in self.by_partition.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            result = self.topic.partitions[p].append(list.iter().map(|&i| &records[i]));
            if result.is_err() {
                break;
            }
            self.dirty[p] = true;
        }
        // Wake readers even on a partial failure: earlier partitions did get records.
        self.topic.wake_readers();
        result
    }

    async fn flush(&mut self) -> Result<()> {
        let files: Vec<(PathBuf, Arc<File>)> = self
            .dirty
            .iter()
            .enumerate()
            .filter(|(_, dirty)| **dirty)
            .map(|(p, _)| {
                let part = &self.topic.partitions[p];
                (part.path.clone(), part.file.clone())
            })
            .collect();
        if files.is_empty() {
            return Ok(());
        }
        blocking(move || {
            for (path, file) in files {
                file.sync_data().map_err(|e| io_err(&path, e))?;
            }
            Ok(())
        })
        .await?;
        self.dirty.iter_mut().for_each(|d| *d = false);
        Ok(())
    }
}

/// A reader's position in one partition, with its own file handle and read buffer.
struct PartitionCursor {
    partition: i32,
    path: PathBuf,
    file: File,
    /// Bytes read from the file; `buf[consumed..]` is not decoded yet.
    buf: Vec<u8>,
    consumed: usize,
    /// File position of the end of `buf` (where the next read starts).
    file_pos: u64,
    /// Offset of the next frame in the file.
    next_frame_offset: i64,
    /// Frames below this offset are skipped (the reader was positioned at an index
    /// entry before the requested offset).
    skip_until: i64,
}

impl PartitionCursor {
    /// The offset of the next record this cursor returns.
    fn position(&self) -> i64 {
        self.next_frame_offset.max(self.skip_until)
    }

    /// Makes at least `need` undecoded bytes available, reading at most up to `limit`
    /// (the committed length). Returns false when the file holds no more committed bytes.
    fn fill(&mut self, need: usize, limit: u64) -> Result<bool> {
        if self.file_pos >= limit {
            return Ok(false);
        }
        // Keep the undecoded tail (at most one partial frame) and read after it.
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        let capacity = READ_CHUNK.max(need);
        let want = (capacity.saturating_sub(self.buf.len()) as u64).min(limit - self.file_pos);
        if self.buf.capacity() < self.buf.len() + want as usize {
            self.buf.reserve(want as usize);
        }
        let before = self.buf.len();
        (&self.file)
            .take(want)
            .read_to_end(&mut self.buf)
            .map_err(|e| io_err(&self.path, e))?;
        let got = (self.buf.len() - before) as u64;
        if got < want {
            return Err(corrupt(
                &self.path,
                format!(
                    "file ends at {} but {limit} bytes were committed",
                    self.file_pos + got
                ),
            ));
        }
        self.file_pos += got;
        Ok(true)
    }

    /// Decodes up to `max` records into `out`, reading up to `limit` bytes of the file.
    fn read_into(&mut self, limit: u64, max: usize, out: &mut Vec<LogRecord>) -> Result<()> {
        let mut taken = 0;
        while taken < max {
            let avail = self.buf.len() - self.consumed;
            if avail < FRAME_HEADER {
                if !self.fill(FRAME_HEADER, limit)? {
                    break;
                }
                continue;
            }
            let start = self.consumed;
            let body_len = frame_body_len(&self.buf[start..start + FRAME_HEADER])
                .map_err(|e| corrupt(&self.path, e))?;
            let frame_len = FRAME_HEADER + body_len;
            if avail < frame_len {
                if !self.fill(frame_len, limit)? {
                    // Committed lengths are frame aligned, so this is a bug or tampering.
                    return Err(corrupt(&self.path, "committed data ends inside a frame"));
                }
                continue;
            }
            let header = &self.buf[start..start + FRAME_HEADER];
            let body = &self.buf[start + FRAME_HEADER..start + frame_len];
            let frame = decode_frame(header, body).map_err(|e| {
                corrupt(
                    &self.path,
                    format!("offset {}: {e}", self.next_frame_offset),
                )
            })?;
            if frame.offset != self.next_frame_offset {
                return Err(corrupt(
                    &self.path,
                    format!(
                        "frame carries offset {} where {} was expected",
                        frame.offset, self.next_frame_offset
                    ),
                ));
            }
            self.consumed += frame_len;
            self.next_frame_offset += 1;
            if frame.offset < self.skip_until {
                continue;
            }
            // Copy key and value out so records do not pin the whole read buffer.
            out.push(LogRecord {
                partition: self.partition,
                offset: frame.offset,
                timestamp: frame.timestamp,
                key: frame.key.map(Bytes::copy_from_slice),
                value: frame.value.map(Bytes::copy_from_slice),
            });
            taken += 1;
        }
        Ok(())
    }
}

struct LocalReader {
    topic: Arc<Topic>,
    cursors: Vec<PartitionCursor>,
    appended: watch::Receiver<u64>,
    /// The partition read first in the next poll, rotated for fairness.
    first: usize,
    /// End offsets remembered by the first `caught_up` call.
    caught_up_targets: Option<Vec<i64>>,
}

impl LocalReader {
    fn new(topic: Arc<Topic>, start: StartFrom) -> Result<LocalReader> {
        topic.check_not_deleted()?;
        let n = topic.partitions.len() as i32;
        let mut wanted: Vec<i64> = match &start {
            StartFrom::Earliest => vec![0; n as usize],
            StartFrom::Latest => topic
                .partitions
                .iter()
                .map(|p| p.end_offset.load(Ordering::Acquire))
                .collect(),
            StartFrom::Offsets(_) => vec![0; n as usize],
        };
        if let StartFrom::Offsets(offsets) = &start {
            for &(p, offset) in offsets {
                match wanted.get_mut(p as usize) {
                    Some(w) if p >= 0 => {
                        let end = topic.partitions[p as usize]
                            .end_offset
                            .load(Ordering::Acquire);
                        // Past the end: the topic was deleted and created again.
                        // Like Kafka's auto.offset.reset=earliest, start over.
                        *w = if offset > end {
                            tracing::warn!(
                                topic = %topic.name, partition = p,
                                "start offset {offset} is past the partition's end {end} (was the topic recreated?); reading from the beginning"
                            );
                            0
                        } else {
                            offset.max(0)
                        };
                    }
                    _ => tracing::warn!(
                        topic = %topic.name, partition = p, partitions = n,
                        "ignoring a start offset for a partition the topic does not have"
                    ),
                }
            }
        }
        // Subscribe before positioning so no append between the two is missed.
        let appended = topic.appended.subscribe();
        let mut cursors = Vec::with_capacity(n as usize);
        for (p, part) in topic.partitions.iter().enumerate() {
            let (entry, skip_until) = part.seek_point(wanted[p]);
            let mut file = File::open(&part.path).map_err(|e| io_err(&part.path, e))?;
            file.seek(SeekFrom::Start(entry.position))
                .map_err(|e| io_err(&part.path, e))?;
            cursors.push(PartitionCursor {
                partition: p as i32,
                path: part.path.clone(),
                file,
                buf: Vec::new(),
                consumed: 0,
                file_pos: entry.position,
                next_frame_offset: entry.offset,
                skip_until,
            });
        }
        Ok(LocalReader {
            topic,
            cursors,
            appended,
            first: 0,
            caught_up_targets: None,
        })
    }

    /// Reads what is already committed, up to `max` records. A first pass gives each
    /// partition an equal share so one busy partition cannot starve the others; a
    /// second pass fills the rest of the batch.
    fn read_available(&mut self, max: usize) -> Result<Vec<LogRecord>> {
        let n = self.cursors.len();
        let mut out = Vec::with_capacity(max.min(8192));
        let share = max.div_ceil(n.max(1));
        for pass in 0..2 {
            for i in 0..n {
                let remaining = max - out.len();
                if remaining == 0 {
                    break;
                }
                let p = (self.first + i) % n;
                let limit = self.topic.partitions[p]
                    .committed_len
                    .load(Ordering::Acquire);
                let take = if pass == 0 {
                    share.min(remaining)
                } else {
                    remaining
                };
                self.cursors[p].read_into(limit, take, &mut out)?;
            }
        }
        self.first = (self.first + 1) % n.max(1);
        Ok(out)
    }
}

#[async_trait]
impl LogReader for LocalReader {
    async fn poll(&mut self, max: usize, max_wait: Duration) -> Result<Vec<LogRecord>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            self.topic.check_not_deleted()?;
            // Mark the current version seen *before* reading, so an append that lands
            // after the read below still wakes the wait.
            self.appended.borrow_and_update();
            // Reads come from the page cache in large chunks; like the writer, this runs
            // inline instead of hopping to the blocking pool.
            let records = self.read_available(max)?;
            if !records.is_empty() {
                return Ok(records);
            }
            match tokio::time::timeout_at(deadline, self.appended.changed()).await {
                Ok(Ok(())) => continue,
                // Timed out; or the sender is gone, which cannot happen while we hold
                // the topic, but would mean nothing more can arrive.
                Err(_) | Ok(Err(_)) => return Ok(Vec::new()),
            }
        }
    }

    fn end_offsets(&self) -> Vec<(i32, i64)> {
        self.topic
            .partitions
            .iter()
            .enumerate()
            .map(|(p, part)| (p as i32, part.end_offset.load(Ordering::Acquire)))
            .collect()
    }

    async fn caught_up(&mut self) -> Result<bool> {
        let topic = &self.topic;
        let targets = self.caught_up_targets.get_or_insert_with(|| {
            topic
                .partitions
                .iter()
                .map(|p| p.end_offset.load(Ordering::Acquire))
                .collect()
        });
        Ok(self
            .cursors
            .iter()
            .zip(targets.iter())
            .all(|(cursor, &target)| cursor.position() >= target))
    }
}

/// CRC-32 (IEEE, the zlib/Ethernet polynomial), slicing-by-8: about 1-2 GB/s, which
/// keeps checksumming far from being the bottleneck of appends or recovery.
mod crc32 {
    const POLY: u32 = 0xEDB8_8320;
    static TABLES: [[u32; 256]; 8] = make_tables();

    const fn make_tables() -> [[u32; 256]; 8] {
        let mut t = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut i = 0;
        while i < 256 {
            let mut s = 1;
            while s < 8 {
                let prev = t[s - 1][i];
                t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
                s += 1;
            }
            i += 1;
        }
        t
    }

    pub fn checksum(data: &[u8]) -> u32 {
        let t = &TABLES;
        let mut c = !0u32;
        let mut chunks = data.chunks_exact(8);
        for ch in &mut chunks {
            let lo = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
            let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &b in chunks.remainder() {
            c = t[0][((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
        }
        !c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn rec(key: Option<&str>, value: Option<&str>, ts: i64) -> OutRecord {
        OutRecord {
            partition: None,
            timestamp: ts,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        }
    }

    /// Polls until `n` records arrived (or fails after a generous timeout).
    async fn read_n(reader: &mut dyn LogReader, n: usize) -> Vec<LogRecord> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} records arrived",
                out.len()
            );
            out.extend(
                reader
                    .poll(n - out.len(), Duration::from_millis(200))
                    .await
                    .unwrap(),
            );
        }
        out
    }

    fn sorted(mut records: Vec<LogRecord>) -> Vec<LogRecord> {
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32::checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32::checksum(b""), 0);
        // Longer input exercises the 8-byte path plus a remainder.
        assert_eq!(
            crc32::checksum(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn topic_names_are_validated() {
        for ok in ["a", "orders", "my.topic_v2-x", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", "~tmp", &"x".repeat(250)] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(ConnectorError::InvalidTopicName { .. })
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[tokio::test]
    async fn round_trip_with_keys_tombstones_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        log.create_topic("events", 3).await.unwrap();
        let mut w = log.writer("events").await.unwrap();
        let mut batch = vec![
            rec(Some("alice"), Some("v1"), 1_000),
            rec(Some("bob"), Some("v2"), 2_000),
            rec(Some("alice"), None, 3_000), // tombstone
            rec(None, Some("no key"), 4_000),
            rec(None, None, 5_000),
        ];
        batch.push(OutRecord {
            partition: Some(2),
            ..rec(Some("pinned"), Some(""), 6_000)
        });
        w.send(batch.clone()).await.unwrap();
        w.flush().await.unwrap();

        let mut r = log.reader("events", StartFrom::Earliest).await.unwrap();
        let got = sorted(read_n(r.as_mut(), batch.len()).await);
        assert_eq!(got.len(), 6);
        for record in &got {
            let sent = batch
                .iter()
                .find(|b| b.timestamp == record.timestamp)
                .expect("timestamp preserved");
            assert_eq!(record.key, sent.key);
            assert_eq!(record.value, sent.value);
            match (sent.partition, &sent.key) {
                (Some(p), _) => assert_eq!(record.partition, p),
                (None, Some(k)) => assert_eq!(record.partition, partition_for_key(k, 3)),
                (None, None) => {}
            }
        }
        // Offsets are dense and 0-based per partition.
        for p in 0..3 {
            let offsets: Vec<i64> = got
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .collect();
            assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
        }
        // The tombstone and the empty (non-null) value stay distinct.
        assert!(got
            .iter()
            .any(|r| r.timestamp == 3_000 && r.value.is_none()));
        assert!(got
            .iter()
            .any(|r| r.timestamp == 6_000 && r.value.as_deref() == Some(&b""[..])));
        // Nothing more, and an empty poll honours its wait.
        let t = Instant::now();
        assert!(r
            .poll(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty());
        assert!(t.elapsed() >= Duration::from_millis(45));
    }

    #[tokio::test]
    async fn records_without_key_go_round_robin() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        log.create_topic("rr", 4).await.unwrap();
        let mut w = log.writer("rr").await.unwrap();
        w.send((0..8).map(|i| rec(None, Some("x"), i)).collect())
            .await
            .unwrap();
        let mut r = log.reader("rr", StartFrom::Earliest).await.unwrap();
        let got = read_n(r.as_mut(), 8).await;
        for p in 0..4 {
            assert_eq!(got.iter().filter(|r| r.partition == p).count(), 2);
        }
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_offsets_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = LocalLog::open(dir.path()).unwrap();
            log.create_topic("t", 2).await.unwrap();
            let mut w = log.writer("t").await.unwrap();
            w.send(
                (0..100)
                    .map(|i| rec(Some(&format!("k{i}")), Some("a"), i))
                    .collect(),
            )
            .await
            .unwrap();
            // No flush: write(2) alone must be enough to survive the process.
        }
        let log = LocalLog::open(dir.path()).unwrap();
        assert_eq!(
            log.list_topics().await.unwrap(),
            vec![TopicInfo {
                name: "t".into(),
                partitions: 2
            }]
        );
        let mut w = log.writer("t").await.unwrap();
        w.send(
            (100..150)
                .map(|i| rec(Some(&format!("k{i}")), Some("b"), i))
                .collect(),
        )
        .await
        .unwrap();
        w.flush().await.unwrap();
        let mut r = log.reader("t", StartFrom::Earliest).await.unwrap();
        let got = sorted(read_n(r.as_mut(), 150).await);
        for p in 0..2 {
            let part: Vec<&LogRecord> = got.iter().filter(|r| r.partition == p).collect();
            for (i, record) in part.iter().enumerate() {
                assert_eq!(record.offset, i as i64);
            }
        }
        let mut timestamps: Vec<i64> = got.iter().map(|r| r.timestamp).collect();
        timestamps.sort();
        assert_eq!(timestamps, (0..150).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t").join("partition-0.log");
        {
            let log = LocalLog::open(dir.path()).unwrap();
            log.create_topic("t", 1).await.unwrap();
            let mut w = log.writer("t").await.unwrap();
            w.send((0..10).map(|i| rec(Some("k"), Some("value"), i)).collect())
                .await
                .unwrap();
            w.flush().await.unwrap();
        }
        let good_len = fs::metadata(&path).unwrap().len();

        // A crash in the middle of writing the 11th frame: its first bytes only.
        let mut frame = Vec::new();
        encode_frame(&mut frame, 10, &rec(Some("k"), Some("torn"), 10)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&frame[..frame.len() - 3]).unwrap();
        drop(f);

        {
            let log = LocalLog::open(dir.path()).unwrap();
            let mut r = log.reader("t", StartFrom::Earliest).await.unwrap();
            let got = read_n(r.as_mut(), 10).await;
            assert_eq!(got.last().unwrap().offset, 9);
            assert!(r
                .poll(10, Duration::from_millis(20))
                .await
                .unwrap()
                .is_empty());
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
            // Appends continue at offset 10 on a frame boundary.
            let mut w = log.writer("t").await.unwrap();
            w.send(vec![rec(Some("k"), Some("after"), 99)])
                .await
                .unwrap();
            let got = read_n(r.as_mut(), 1).await;
            assert_eq!(got[0].offset, 10);
            assert_eq!(got[0].value.as_deref(), Some(&b"after"[..]));
        }

        // A complete frame with a flipped bit (e.g. zeros after a power loss) is also cut.
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        let mut r = log.reader("t", StartFrom::Earliest).await.unwrap();
        let got = read_n(r.as_mut(), 10).await;
        assert_eq!(got.last().unwrap().offset, 9);
        assert!(r
            .poll(10, Duration::from_millis(20))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    }

    #[tokio::test]
    async fn latest_skips_old_records_and_wakes_on_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        log.create_topic("t", 2).await.unwrap();
        let mut w = log.writer("t").await.unwrap();
        w.send(
            (0..10)
                .map(|i| rec(Some(&i.to_string()), Some("old"), i))
                .collect(),
        )
        .await
        .unwrap();
        let mut r = log.reader("t", StartFrom::Latest).await.unwrap();
        assert!(r
            .poll(100, Duration::from_millis(20))
            .await
            .unwrap()
            .is_empty());
        assert!(r.caught_up().await.unwrap());

        // A writer in another task wakes the blocked poll long before its deadline.
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            w.send(vec![rec(Some("new"), Some("new"), 100)])
                .await
                .unwrap();
            w
        });
        let t = Instant::now();
        let got = r.poll(100, Duration::from_secs(30)).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value.as_deref(), Some(&b"new"[..]));
        assert_eq!(got[0].timestamp, 100);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn caught_up_remembers_the_ends_of_its_first_call() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        log.create_topic("empty", 3).await.unwrap();
        let mut r = log.reader("empty", StartFrom::Earliest).await.unwrap();
        assert!(r.caught_up().await.unwrap());

        log.create_topic("t", 1).await.unwrap();
        let mut w = log.writer("t").await.unwrap();
        w.send((0..10).map(|i| rec(None, Some("a"), i)).collect())
            .await
            .unwrap();
        let mut r = log.reader("t", StartFrom::Earliest).await.unwrap();
        assert!(!r.caught_up().await.unwrap()); // remembers end = 10
        w.send((10..15).map(|i| rec(None, Some("b"), i)).collect())
            .await
            .unwrap();
        let got = r.poll(4, Duration::from_millis(100)).await.unwrap();
        assert_eq!(got.len(), 4);
        assert!(!r.caught_up().await.unwrap());
        let got = r.poll(6, Duration::from_millis(100)).await.unwrap();
        assert_eq!(got.last().unwrap().offset, 9);
        // Records 10..15 exist but arrived after the first call.
        assert!(r.caught_up().await.unwrap());

        // Starting at explicit offsets counts as having read what lies before them.
        let mut r = log
            .reader("t", StartFrom::Offsets(vec![(0, 15)]))
            .await
            .unwrap();
        assert!(r.caught_up().await.unwrap());
    }

    #[tokio::test]
    async fn explicit_offsets_start_exactly_there_through_the_sparse_index() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        log.create_topic("t", 2).await.unwrap();
        let mut w = log.writer("t").await.unwrap();
        // ~1 MB per partition: many index entries.
        let value = "v".repeat(100);
        for chunk in 0..20 {
            let batch = (0..1000)
                .map(|i| OutRecord {
                    partition: Some(i % 2),
                    ..rec(None, Some(&value), (chunk * 1000 + i) as i64)
                })
                .collect();
            w.send(batch).await.unwrap();
        }
        {
            let topic = log.topic("t").await.unwrap();
            assert!(topic.partitions[0].state.lock().index.len() > 10);
        }
        for start in [0i64, 1, 4_321, 9_999] {
            let mut r = log
                .reader("t", StartFrom::Offsets(vec![(0, start), (1, 10_000)]))
                .await
                .unwrap();
            let got = r.poll(3, Duration::from_millis(100)).await.unwrap();
            assert_eq!(got[0].partition, 0);
            assert_eq!(got[0].offset, start);
            assert_eq!(got[0].timestamp, start * 2);
        }
        // Past the end (the topic was recreated): from the beginning, as Kafka
        // readers do with auto.offset.reset=earliest; at the end: the next record.
        let mut r = log
            .reader("t", StartFrom::Offsets(vec![(0, 50_000), (1, 10_000)]))
            .await
            .unwrap();
        let got = r.poll(3, Duration::from_secs(5)).await.unwrap();
        assert_eq!((got[0].partition, got[0].offset), (0, 0));
        let mut r = log
            .reader("t", StartFrom::Offsets(vec![(0, 10_000), (1, 10_000)]))
            .await
            .unwrap();
        assert!(r
            .poll(3, Duration::from_millis(20))
            .await
            .unwrap()
            .is_empty());
        w.send(vec![OutRecord {
            partition: Some(0),
            ..rec(None, Some("next"), 1)
        }])
        .await
        .unwrap();
        let got = r.poll(3, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got[0].offset, 10_000);
    }

    #[tokio::test]
    async fn key_partitioning_is_stable_across_writers_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let mut placements = HashMap::new();
        for round in 0..2 {
            let log = LocalLog::open(dir.path()).unwrap();
            if round == 0 {
                log.create_topic("t", 5).await.unwrap();
            }
            let mut w = log.writer("t").await.unwrap();
            w.send(
                keys.iter()
                    .map(|k| rec(Some(k), Some("x"), round))
                    .collect(),
            )
            .await
            .unwrap();
            let mut r = log.reader("t", StartFrom::Earliest).await.unwrap();
            let got = read_n(r.as_mut(), keys.len() * (round as usize + 1)).await;
            for record in got {
                let key = record.key.clone().unwrap();
                assert_eq!(record.partition, partition_for_key(&key, 5));
                let previous = placements.insert(key, record.partition);
                assert!(previous.is_none() || previous == Some(record.partition));
            }
        }
    }

    #[tokio::test]
    async fn administration() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        assert_eq!(log.kind(), "local");
        assert!(log.list_topics().await.unwrap().is_empty());
        assert!(log.describe_topic("nope").await.unwrap().is_none());
        assert!(matches!(
            log.reader("nope", StartFrom::Earliest).await,
            Err(ConnectorError::UnknownTopic(_))
        ));
        assert!(matches!(
            log.create_topic("bad/name", 1).await,
            Err(ConnectorError::InvalidTopicName { .. })
        ));
        assert!(matches!(
            log.create_topic("zero", 0).await,
            Err(ConnectorError::InvalidRequest(_))
        ));
        log.create_topic("b", 2).await.unwrap();
        log.create_topic("a", 1).await.unwrap();
        assert!(matches!(
            log.create_topic("a", 1).await,
            Err(ConnectorError::TopicExists(_))
        ));
        let names: Vec<String> = log
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            log.describe_topic("b").await.unwrap(),
            Some(TopicInfo {
                name: "b".into(),
                partitions: 2
            })
        );

        // A writer/reader of a deleted topic fail instead of writing into the void.
        let mut w = log.writer("b").await.unwrap();
        let mut r = log.reader("b", StartFrom::Earliest).await.unwrap();
        let mut bad = rec(None, Some("x"), 0);
        bad.partition = Some(7);
        assert!(matches!(
            w.send(vec![bad]).await,
            Err(ConnectorError::InvalidRequest(_))
        ));
        log.delete_topic("b").await.unwrap();
        assert!(!dir.path().join("b").exists());
        assert!(log.describe_topic("b").await.unwrap().is_none());
        assert!(matches!(
            w.send(vec![rec(None, Some("x"), 0)]).await,
            Err(ConnectorError::UnknownTopic(_))
        ));
        assert!(matches!(
            r.poll(1, Duration::from_millis(10)).await,
            Err(ConnectorError::UnknownTopic(_))
        ));
        assert!(matches!(
            log.delete_topic("b").await,
            Err(ConnectorError::UnknownTopic(_))
        ));

        // Recreated with the same name, it starts empty.
        log.create_topic("b", 1).await.unwrap();
        let mut r2 = log.reader("b", StartFrom::Earliest).await.unwrap();
        assert!(r2
            .poll(1, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty());

        // One owner per directory, for as long as any reader or writer is alive.
        assert!(LocalLog::open(dir.path()).is_err());
        drop((log, r, w));
        assert!(LocalLog::open(dir.path()).is_err());
        drop(r2);
        LocalLog::open(dir.path()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_and_a_tailing_reader() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        log.create_topic("t", 3).await.unwrap();
        let mut r = log.reader("t", StartFrom::Earliest).await.unwrap();
        let mut tasks = Vec::new();
        for wi in 0..4 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut w = log.writer("t").await.unwrap();
                for b in 0..50 {
                    let batch = (0..20)
                        .map(|i| rec(Some(&format!("{wi}-{b}-{i}")), Some("x"), wi))
                        .collect();
                    w.send(batch).await.unwrap();
                    tokio::task::yield_now().await;
                }
                w.flush().await.unwrap();
            }));
        }
        let got = read_n(r.as_mut(), 4 * 50 * 20).await;
        for t in tasks {
            t.await.unwrap();
        }
        let mut keys: Vec<Bytes> = got.iter().map(|r| r.key.clone().unwrap()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 4000);
        for p in 0..3 {
            let offsets: Vec<i64> = got
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .collect();
            assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
        }
    }

    /// Throughput check: `cargo test --release --lib local_log::tests::throughput -- --ignored --nocapture`
    #[tokio::test]
    #[ignore]
    async fn throughput() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalLog::open(dir.path()).unwrap();
        log.create_topic("t", 4).await.unwrap();
        let mut w = log.writer("t").await.unwrap();
        let total = 4_000_000usize;
        let batch_size = 10_000;
        let batches: Vec<Vec<OutRecord>> = (0..total / batch_size)
            .map(|b| {
                (0..batch_size)
                    .map(|i| {
                        let n = b * batch_size + i;
                        OutRecord {
                            partition: None,
                            timestamp: n as i64,
                            key: Some(Bytes::from(format!("key-{}", n % 10_000))),
                            value: Some(Bytes::from(format!("{{\"n\":{n},\"v\":\"abcdef\"}}"))),
                        }
                    })
                    .collect()
            })
            .collect();
        let t = Instant::now();
        for batch in batches {
            w.send(batch).await.unwrap();
        }
        w.flush().await.unwrap();
        let write = t.elapsed();
        let mut r = log.reader("t", StartFrom::Earliest).await.unwrap();
        let t = Instant::now();
        let mut n = 0;
        while n < total {
            n += r
                .poll(10_000, Duration::from_millis(100))
                .await
                .unwrap()
                .len();
        }
        let read = t.elapsed();
        println!(
            "local log: write {:.2} M records/s, read {:.2} M records/s ({total} records)",
            total as f64 / write.as_secs_f64() / 1e6,
            total as f64 / read.as_secs_f64() / 1e6
        );
    }
}
