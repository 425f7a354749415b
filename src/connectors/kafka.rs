//! Kafka backend, on librdkafka through the `rdkafka` crate.
//!
//! * Administration uses an `AdminClient`; metadata (list/describe) is fetched through a
//!   *consumer* handle with `allow.auto.create.topics=false`, because a metadata request
//!   from a producer-type handle may auto-create the topic it asks about.
//! * Writers are `ThreadedProducer`s with the murmur2 partitioner (keys land where Kafka
//!   Streams and ksqlDB put them, and where [`partition_for_key`](super::partition_for_key)
//!   says), idempotence and a small linger for batching. Delivery results are collected
//!   by the producer context: `send` only enqueues, `flush` waits and reports failures.
//! * Readers are `StreamConsumer`s with a manual `assign` of every partition and no
//!   offset commits: Sluice keeps source offsets in its own checkpoints. The end of a
//!   partition is detected with `PARTITION_EOF` events (`enable.partition.eof`), not
//!   ListOffsets, which some Kafka-compatible brokers (Tansu) answer wrongly.
//!
//! Connection settings (security, SASL, timeouts...) come from the `extra` properties
//! given to [`KafkaBackend::new`] and apply to every client. Sluice's defaults come first
//! so `extra` can override them, except for the few settings the readers rely on.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::local_log::validate_topic_name;

mod transactional;
use super::{
    ConnectorError, LogBackend, LogReader, LogRecord, LogWriter, OutRecord, Result, StartFrom,
    TopicInfo,
};

/// How long metadata and admin requests may take before they fail.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `create_topic` waits for the new topic to show up in metadata.
const CREATE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `Latest` reader may take to reach the end of every partition.
const LATEST_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Distinguishes the `group.id`s of the clients this process creates.
static CLIENT_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_group_id(role: &str) -> String {
    format!(
        "sluice-{role}-{}-{}",
        std::process::id(),
        CLIENT_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn kafka_err(context: impl std::fmt::Display, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Kafka(format!("{context}: {e}"))
}

/// Runs a blocking librdkafka call (metadata, watermarks, flush) off the async workers.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(kafka_err(what, e)),
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The Kafka backend. Cheap to share; readers and writers each get their own clients.
pub struct KafkaBackend {
    brokers: String,
    extra: Vec<(String, String)>,
    admin: AdminClient<DefaultClientContext>,
    /// Used only for metadata requests, which must never auto-create topics.
    metadata: Arc<BaseConsumer>,
    /// Where transactional writers keep their epoch's records until the
    /// transaction commits; `None`: no exactly-once writers.
    staging: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `extra` may hold credentials: do not print it.
        f.debug_struct("KafkaBackend")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaBackend {
    /// Creates the backend for the comma-separated `brokers`. `extra` holds librdkafka
    /// properties for every client (e.g. `security.protocol`, `sasl.*`). This checks the
    /// configuration but does not wait for the brokers to answer.
    pub fn new(brokers: &str, extra: &[(String, String)]) -> Result<Arc<Self>> {
        let backend = KafkaBackend {
            brokers: brokers.to_string(),
            extra: extra.to_vec(),
            admin: base_config(brokers, extra)
                .create()
                .map_err(|e| kafka_err("creating the admin client", e))?,
            metadata: Arc::new(
                consumer_config(brokers, extra, &unique_group_id("metadata"))
                    .create()
                    .map_err(|e| kafka_err("creating the metadata client", e))?,
            ),
            staging: None,
        };
        Ok(Arc::new(backend))
    }

    /// [`KafkaBackend::new`], with exactly-once writers that keep a copy of
    /// their open epoch under `staging` (see `transactional`).
    pub fn with_staging(
        brokers: &str,
        extra: &[(String, String)],
        staging: &std::path::Path,
    ) -> Result<Arc<Self>> {
        let backend = Arc::into_inner(Self::new(brokers, extra)?).ok_or_else(|| {
            ConnectorError::InvalidRequest("the Kafka backend was shared while built".into())
        })?;
        Ok(Arc::new(KafkaBackend {
            staging: Some(staging.to_path_buf()),
            ..backend
        }))
    }

    /// The brokers this backend talks to.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    fn admin_options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT))
    }

    /// Fetches metadata (of one topic, or of all) without blocking the runtime.
    async fn fetch_metadata(&self, topic: Option<&str>) -> Result<Metadata> {
        let client = self.metadata.clone();
        let topic = topic.map(str::to_string);
        blocking("fetching metadata", move || {
            client
                .fetch_metadata(topic.as_deref(), REQUEST_TIMEOUT)
                .map_err(|e| kafka_err("fetching metadata", e))
        })
        .await
    }

    /// The partition count of `name`, or `None` when the topic does not exist.
    async fn partition_count(&self, name: &str) -> Result<Option<i32>> {
        let metadata = self.fetch_metadata(Some(name)).await?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) else {
            return Ok(None);
        };
        match topic.error() {
            None => {}
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Ok(None),
            // Right after creation a broker may report the topic with a transient error
            // (no leader yet) but already know its partitions.
            Some(e) if !topic.partitions().is_empty() => {
                tracing::debug!(topic = name, error = ?e, "topic metadata carries an error");
            }
            Some(e) => {
                return Err(kafka_err(
                    format!("describing topic '{name}'"),
                    RDKafkaErrorCode::from(e),
                ))
            }
        }
        Ok(Some(topic.partitions().len() as i32))
    }
}

/// Connection settings shared by every client.
fn base_config(brokers: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in extra {
        config.set(key, value);
    }
    config
}

/// A consumer that never joins a group, never commits and never creates topics.
fn consumer_config(brokers: &str, extra: &[(String, String)], group_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Out-of-range start offsets (e.g. deleted by retention) resume at the earliest
        // record still available rather than silently skipping to the end.
        .set("auto.offset.reset", "earliest")
        // librdkafka's default (1 s) pauses fetching after each burst whenever the
        // local queue drains, capping a fast query at ~150k records/s; 10 ms
        // measured 5x faster end to end (docs/benchmarks.md). Overridable.
        .set("fetch.queue.backoff.ms", "10")
        // Output of exactly-once queries is read once its transaction
        // commits (librdkafka's default too; said here because it matters).
        .set("isolation.level", "read_committed");
    for (key, value) in extra {
        config.set(key, value);
    }
    // What the reader's correctness depends on; not overridable. librdkafka wants a
    // group.id even though assign() never joins the group.
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false");
    config
}

fn producer_config(brokers: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Place keys as the Java client does (Kafka Streams, ksqlDB, partition_for_key).
        .set("partitioner", "murmur2_random")
        // A few milliseconds of batching buys a lot of throughput.
        .set("linger.ms", "5")
        // No duplicates or reordering when librdkafka retries a batch.
        .set("enable.idempotence", "true");
    for (key, value) in extra {
        config.set(key, value);
    }
    config
}

#[async_trait]
impl LogBackend for KafkaBackend {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let metadata = self.fetch_metadata(None).await?;
        let mut topics: Vec<TopicInfo> = metadata
            .topics()
            .iter()
            // `__consumer_offsets`, `__transaction_state` and the like are internal.
            .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
            .map(|t| TopicInfo {
                name: t.name().to_string(),
                partitions: t.partitions().len() as i32,
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    async fn describe_topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        validate_topic_name(name)?;
        Ok(self
            .partition_count(name)
            .await?
            .map(|partitions| TopicInfo {
                name: name.to_string(),
                partitions,
            }))
    }

    async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        validate_topic_name(name)?;
        if partitions < 1 {
            return Err(ConnectorError::InvalidRequest(format!(
                "a topic needs at least 1 partition, not {partitions}"
            )));
        }
        // -1: the broker's default.replication.factor (KIP-464), so production clusters
        // get their usual durability and single-broker test clusters still work.
        let new_topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        let results = self
            .admin
            .create_topics([&new_topic], &Self::admin_options())
            .await
            .map_err(|e| kafka_err(format!("creating topic '{name}'"), e))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    return Err(ConnectorError::TopicExists(name.to_string()))
                }
                Err((_, code)) => return Err(kafka_err(format!("creating topic '{name}'"), code)),
            }
        }
        // Brokers propagate new topics asynchronously; wait until it is visible so a
        // reader or writer opened right after this call finds all its partitions.
        let deadline = tokio::time::Instant::now() + CREATE_VISIBLE_TIMEOUT;
        loop {
            match self.partition_count(name).await {
                Ok(Some(n)) if n == partitions => return Ok(()),
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(found) => {
                    tracing::warn!(topic = name, ?found, "created topic is not visible yet");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn delete_topic(&self, name: &str) -> Result<()> {
        validate_topic_name(name)?;
        let results = self
            .admin
            .delete_topics(&[name], &Self::admin_options())
            .await
            .map_err(|e| kafka_err(format!("deleting topic '{name}'"), e))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    return Err(ConnectorError::UnknownTopic(name.to_string()))
                }
                Err((_, code)) => return Err(kafka_err(format!("deleting topic '{name}'"), code)),
            }
        }
        Ok(())
    }

    async fn reader(&self, topic: &str, start: StartFrom) -> Result<Box<dyn LogReader>> {
        validate_topic_name(topic)?;
        let partitions = self
            .partition_count(topic)
            .await?
            .ok_or_else(|| ConnectorError::UnknownTopic(topic.to_string()))?;
        let consumer: StreamConsumer<ReaderContext> =
            consumer_config(&self.brokers, &self.extra, &unique_group_id("reader"))
                .create_with_context(ReaderContext)
                .map_err(|e| kafka_err(format!("creating a consumer for '{topic}'"), e))?;

        let mut starts = vec![PartitionStart::Earliest; partitions as usize];
        match &start {
            StartFrom::Earliest => {}
            StartFrom::Latest => starts.fill(PartitionStart::Latest),
            StartFrom::Offsets(offsets) => {
                for &(p, offset) in offsets {
                    match starts.get_mut(p as usize) {
                        Some(s) if p >= 0 => *s = PartitionStart::At(offset.max(0)),
                        _ => tracing::warn!(
                            topic,
                            partition = p,
                            partitions,
                            "ignoring a start offset for a partition the topic does not have"
                        ),
                    }
                }
            }
        }
        let mut assignment = TopicPartitionList::with_capacity(partitions as usize);
        for (p, s) in starts.iter().enumerate() {
            let offset = match s {
                PartitionStart::Earliest => Offset::Beginning,
                PartitionStart::Latest => Offset::End,
                PartitionStart::At(o) => Offset::Offset(*o),
            };
            assignment
                .add_partition_offset(topic, p as i32, offset)
                .map_err(|e| kafka_err(format!("assigning '{topic}' partition {p}"), e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka_err(format!("assigning the partitions of '{topic}'"), e))?;
        let topic_c = CString::new(topic).map_err(|_| {
            ConnectorError::InvalidRequest(format!("topic name {topic:?} contains NUL"))
        })?;
        let mut reader = KafkaReader {
            topic: topic.to_string(),
            topic_c,
            consumer: Arc::new(consumer),
            partitions: starts
                .into_iter()
                .map(|start| PartitionProgress {
                    start,
                    next: match start {
                        PartitionStart::At(o) => Some(o),
                        _ => None,
                    },
                    at_eof: false,
                    done: false,
                })
                .collect(),
            targets_set: false,
        };
        if start == StartFrom::Latest {
            reader.skip_to_end().await?;
        }
        Ok(Box::new(reader))
    }

    async fn exactly_once_writer(
        &self,
        topic: &str,
        producer: &str,
    ) -> Result<Option<Box<dyn LogWriter>>> {
        let Some(staging) = &self.staging else {
            return Ok(None);
        };
        let mut config = producer_config(&self.brokers, &self.extra);
        config
            .set("transactional.id", format!("sluice-{producer}"))
            // Kafka's largest by default: a long checkpoint interval must not
            // outlive its transaction. An abandoned one (a crash) is aborted
            // when the restarted query's producer starts, not by this timeout.
            .set("transaction.timeout.ms", "900000");
        let inner = self.producer_writer(topic, &config).await?;
        let marker: BaseConsumer = consumer_config(
            &self.brokers,
            &self.extra,
            &transactional::marker_group(producer),
        )
        .create()
        .map_err(|e| kafka_err("creating the epoch marker's client", e))?;
        let dir = staging.join(topic).join(producer);
        Ok(Some(Box::new(transactional::TransactionalWriter::new(
            inner, marker, dir,
        ))))
    }

    async fn writer(&self, topic: &str) -> Result<Box<dyn LogWriter>> {
        let config = producer_config(&self.brokers, &self.extra);
        Ok(Box::new(self.producer_writer(topic, &config).await?))
    }
}

impl KafkaBackend {
    /// A writer of `topic` with a producer made from `config`.
    async fn producer_writer(&self, topic: &str, config: &ClientConfig) -> Result<KafkaWriter> {
        validate_topic_name(topic)?;
        // Check first: a producer would otherwise auto-create a missing topic with the
        // broker's default partition count.
        if self.partition_count(topic).await?.is_none() {
            return Err(ConnectorError::UnknownTopic(topic.to_string()));
        }
        let deliveries = Arc::new(Deliveries::default());
        let producer = ThreadedProducer::from_config_and_context(
            config,
            WriterContext {
                deliveries: deliveries.clone(),
            },
        )
        .map_err(|e| kafka_err(format!("creating a producer for '{topic}'"), e))?;
        // librdkafka refuses a message larger than message.max.bytes (1,000,000 by
        // default); the record batch header and record framing take some of it.
        let limit = self
            .extra
            .iter()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(1_000_000);
        Ok(KafkaWriter {
            topic: topic.to_string(),
            producer: Arc::new(producer),
            deliveries,
            max_record_bytes: limit.saturating_sub(RECORD_OVERHEAD_BYTES),
        })
    }
}

/// Delivery outcomes, filled in by the producer's polling thread.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Signalled on every delivery report: the producer queue has room again.
    progress: tokio::sync::Notify,
}

struct WriterContext {
    deliveries: Arc<Deliveries>,
}

impl ClientContext for WriterContext {}

impl ProducerContext for WriterContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, message)) = result {
            if self.deliveries.failed.fetch_add(1, Ordering::AcqRel) == 0 {
                *self.deliveries.first_error.lock() = Some(format!(
                    "delivery to '{}' partition {} failed: {e}",
                    message.topic(),
                    message.partition()
                ));
            }
        }
        self.deliveries.progress.notify_one();
    }
}

/// Room left in `message.max.bytes` for the record batch and record headers.
const RECORD_OVERHEAD_BYTES: usize = 512;

struct KafkaWriter {
    topic: String,
    producer: Arc<ThreadedProducer<WriterContext>>,
    deliveries: Arc<Deliveries>,
    max_record_bytes: usize,
}

impl KafkaWriter {
    /// Returns (and clears) the delivery failures reported since the last check.
    fn take_delivery_error(&self) -> Result<()> {
        let failed = self.deliveries.failed.swap(0, Ordering::AcqRel);
        if failed == 0 {
            return Ok(());
        }
        let first = self
            .deliveries
            .first_error
            .lock()
            .take()
            .unwrap_or_else(|| "unknown error".to_string());
        Err(ConnectorError::Kafka(format!(
            "{failed} record(s) to '{}' were not delivered; first error: {first}",
            self.topic
        )))
    }
}

#[async_trait]
impl LogWriter for KafkaWriter {
    async fn send(&mut self, records: Vec<OutRecord>) -> Result<()> {
        // Fail fast: if earlier records were lost the caller must recover anyway.
        self.take_delivery_error()?;
        for record in &records {
            let mut message: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(&self.topic).timestamp(record.timestamp);
            if let Some(p) = record.partition {
                message = message.partition(p);
            }
            if let Some(key) = &record.key {
                message = message.key(key.as_ref());
            }
            if let Some(value) = &record.value {
                message = message.payload(value.as_ref());
            }
            loop {
                // Register interest before trying, so a delivery between a QueueFull
                // and the wait is not missed.
                let progress = self.deliveries.progress.notified();
                match self.producer.send(message) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m)) => {
                        message = m;
                        // The timeout is only a safety net; deliveries wake us first.
                        let _ = tokio::time::timeout(Duration::from_millis(100), progress).await;
                    }
                    Err((e, _)) => {
                        return Err(kafka_err(format!("producing to '{}'", self.topic), e))
                    }
                }
            }
        }
        Ok(())
    }

    fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    async fn flush(&mut self) -> Result<()> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        // Bounded by librdkafka's message.timeout.ms: every message is either delivered
        // or failed by then, and failures are reported below.
        blocking("flushing the producer", move || {
            producer
                .flush(Timeout::Never)
                .map_err(|e| kafka_err(format!("flushing '{topic}'"), e))
        })
        .await?;
        self.take_delivery_error()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionStart {
    Earliest,
    Latest,
    At(i64),
}

/// What a reader knows about one partition.
#[derive(Debug, Clone, Copy)]
struct PartitionProgress {
    start: PartitionStart,
    /// Offset after the last record returned (or the explicit start offset).
    next: Option<i64>,
    /// The last event seen for this partition was PARTITION_EOF.
    at_eof: bool,
    /// Read up to the end the partition had at the first `caught_up` call.
    done: bool,
}

/// A reader's librdkafka callbacks. Reaching the end of a partition is how a
/// reader knows it has caught up (`enable.partition.eof`); librdkafka also
/// reports it as a global error, which the default context logs at ERROR level.
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!("librdkafka: {error}: {reason}")
            }
            _ => tracing::error!("librdkafka: {error}: {reason}"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

struct KafkaReader {
    topic: String,
    topic_c: CString,
    consumer: Arc<StreamConsumer<ReaderContext>>,
    partitions: Vec<PartitionProgress>,
    /// Whether `caught_up` has been called (and `done` is being tracked).
    targets_set: bool,
}

/// What one consumer event means for the reader.
enum Event {
    Record(LogRecord),
    /// PARTITION_EOF: this partition is read to its current end.
    Eof,
    /// Nothing for the caller (a transient error librdkafka recovers from).
    Nothing,
}

impl KafkaReader {
    fn handle(
        topic: &str,
        partitions: &mut [PartitionProgress],
        targets_set: bool,
        event: std::result::Result<BorrowedMessage<'_>, KafkaError>,
    ) -> Result<Event> {
        match event {
            Ok(message) => {
                let record = LogRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp: message.timestamp().to_millis().unwrap_or_else(now_millis),
                    key: message.key().map(Bytes::copy_from_slice),
                    value: message.payload().map(Bytes::copy_from_slice),
                };
                if let Some(p) = partitions.get_mut(record.partition as usize) {
                    p.next = Some(record.offset + 1);
                    p.at_eof = false;
                }
                Ok(Event::Record(record))
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                if let Some(p) = partitions.get_mut(partition as usize) {
                    p.at_eof = true;
                    // The end only grows, so reaching it now means reaching the end it
                    // had at the first caught_up call.
                    if targets_set {
                        p.done = true;
                    }
                }
                Ok(Event::Eof)
            }
            Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                Err(kafka_err(format!("reading '{topic}'"), e))
            }
            Err(KafkaError::MessageConsumption(
                code @ (RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed),
            )) => {
                if code == RDKafkaErrorCode::TopicAuthorizationFailed {
                    Err(kafka_err(format!("reading '{topic}'"), code))
                } else {
                    Err(ConnectorError::UnknownTopic(topic.to_string()))
                }
            }
            Err(e) => {
                // Broker disconnects and the like: librdkafka reconnects and retries.
                tracing::warn!(topic, error = %e, "kafka consumer error (retrying)");
                Ok(Event::Nothing)
            }
        }
    }

    fn all_done(&self) -> bool {
        self.targets_set && self.partitions.iter().all(|p| p.done)
    }

    /// Reads (and drops) records until every partition reported PARTITION_EOF.
    ///
    /// librdkafka resolves `Offset::End` with ListOffsets, which some brokers answer
    /// wrongly (Tansu returns the last batch's base offset + 1, so the tail of the last
    /// batch would be delivered as "new"). Reading to EOF finds the true end on every
    /// broker, and has a useful side effect on Kafka too: once `reader()` returns, every
    /// record produced afterwards is delivered, whereas librdkafka alone resolves the end
    /// lazily, after `reader()` returned.
    async fn skip_to_end(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + LATEST_SYNC_TIMEOUT;
        let mut skipped = 0u64;
        let mut stream = self.consumer.stream();
        while !self.partitions.iter().all(|p| p.at_eof) {
            let event = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        topic = %self.topic,
                        "could not reach the end of every partition in {LATEST_SYNC_TIMEOUT:?}; \
                         a few records produced before the reader started may be delivered"
                    );
                    break;
                }
            };
            if let Event::Record(_) = Self::handle(&self.topic, &mut self.partitions, false, event)?
            {
                skipped += 1;
            }
        }
        if skipped > 0 {
            tracing::debug!(topic = %self.topic, skipped, "skipped records before the end");
        }
        // Remember where each partition ended, so `caught_up` can tell whether records
        // arrived after this point.
        for p in 0..self.partitions.len() {
            if self.partitions[p].next.is_none() && self.partitions[p].at_eof {
                self.partitions[p].next = self.cached_watermarks(p as i32).map(|(_, high)| high);
            }
        }
        Ok(())
    }

    /// The partition's watermarks from the latest fetch response: a cache lookup, no
    /// request. (A ListOffsets query would cost a round trip per partition and some
    /// brokers answer it wrongly; fetch responses carry the real high watermark, which
    /// is what PARTITION_EOF detection relies on too.)
    fn cached_watermarks(&self, partition: i32) -> Option<(i64, i64)> {
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client handle lives as long as `self.consumer`, which is borrowed
        // for the call; `topic_c` is NUL-terminated; `low` and `high` are live locals.
        // The function only reads librdkafka's cached state and writes the two outputs.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.topic_c.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low, high))
    }
}

#[async_trait]
impl LogReader for KafkaReader {
    fn end_offsets(&self) -> Vec<(i32, i64)> {
        (0..self.partitions.len() as i32)
            .filter_map(|p| self.cached_watermarks(p).map(|(_, high)| (p, high)))
            .collect()
    }

    async fn poll(&mut self, max: usize, max_wait: Duration) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        let KafkaReader {
            topic,
            consumer,
            partitions,
            targets_set,
            ..
        } = self;
        let mut stream = consumer.stream();
        // Wait for the first record.
        while out.is_empty() {
            let event = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) => return Ok(out),
            };
            match Self::handle(topic, partitions, *targets_set, event)? {
                Event::Record(record) => out.push(record),
                Event::Eof => {
                    // A bounded scan waiting for the end should not sit out max_wait.
                    if *targets_set && partitions.iter().all(|p| p.done) {
                        return Ok(out);
                    }
                }
                Event::Nothing => {}
            }
        }
        // Then take whatever else is already fetched, without waiting.
        while out.len() < max {
            let Some(Some(event)) = stream.next().now_or_never() else {
                break;
            };
            if let Event::Record(record) = Self::handle(topic, partitions, *targets_set, event)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn caught_up(&mut self) -> Result<bool> {
        if !self.targets_set {
            self.targets_set = true;
            // A partition whose last event was PARTITION_EOF was at its end *then*;
            // records may have been fetched since. Compare with the high watermark of
            // the latest fetch response; without one, trust the EOF.
            for p in 0..self.partitions.len() {
                if !self.partitions[p].at_eof {
                    continue;
                }
                let marks = self.cached_watermarks(p as i32);
                let progress = &mut self.partitions[p];
                progress.done = match (marks, progress.start, progress.next) {
                    (Some((_, high)), _, Some(next)) => next >= high,
                    // No record read yet: the reader is still where it started.
                    // (An unknown low watermark, -1, means no retention boundary was
                    // reported; then only an empty partition is known to be done.)
                    (Some((low, high)), PartitionStart::Earliest, None) => low.max(0) >= high,
                    _ => true,
                };
            }
        }
        Ok(self.all_done())
    }
}
