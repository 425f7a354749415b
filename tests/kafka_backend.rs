//! `KafkaBackend` against a real Kafka-protocol broker (Tansu, started per test).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::connectors::kafka::KafkaBackend;
use sluice::connectors::{
    partition_for_key, ConnectorError, LogBackend, LogReader, LogRecord, OutRecord, StartFrom,
    TopicInfo,
};
use support::broker::TestBroker;

const BASE_TS: i64 = 1_700_000_000_000;

fn backend(broker: &TestBroker) -> Arc<KafkaBackend> {
    let extra = [
        ("session.timeout.ms".to_string(), "6000".to_string()),
        ("heartbeat.interval.ms".to_string(), "1000".to_string()),
    ];
    KafkaBackend::new(&broker.addr, &extra).expect("kafka backend")
}

fn record(key: Option<&str>, value: Option<&str>, ts: i64) -> OutRecord {
    OutRecord {
        partition: None,
        timestamp: ts,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
    }
}

/// Polls until `n` records arrived; fails after a generous timeout.
async fn read_n(reader: &mut dyn LogReader, n: usize) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records arrived: {out:?}",
            out.len()
        );
        let batch = reader
            .poll(n - out.len(), Duration::from_millis(500))
            .await
            .expect("poll");
        out.extend(batch);
    }
    out
}

/// Polls until `caught_up` is true; returns every record read on the way.
async fn read_until_caught_up(reader: &mut dyn LogReader) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.caught_up().await.expect("caught_up") {
        assert!(
            Instant::now() < deadline,
            "not caught up after reading {} records",
            out.len()
        );
        out.extend(
            reader
                .poll(1000, Duration::from_millis(500))
                .await
                .expect("poll"),
        );
    }
    out
}

fn by_partition(records: &[LogRecord]) -> HashMap<i32, Vec<&LogRecord>> {
    let mut map: HashMap<i32, Vec<&LogRecord>> = HashMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r);
    }
    for list in map.values_mut() {
        list.sort_by_key(|r| r.offset);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_administration() {
    let broker = TestBroker::start();
    let kafka = backend(&broker);
    assert_eq!(kafka.kind(), "kafka");

    // Describing a missing topic must not create it.
    assert_eq!(kafka.describe_topic("missing").await.unwrap(), None);
    assert!(!kafka
        .list_topics()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "missing"));

    kafka.create_topic("orders", 3).await.unwrap();
    kafka.create_topic("users", 1).await.unwrap();
    assert_eq!(
        kafka.describe_topic("orders").await.unwrap(),
        Some(TopicInfo {
            name: "orders".into(),
            partitions: 3
        })
    );
    let topics = kafka.list_topics().await.unwrap();
    assert!(topics.contains(&TopicInfo {
        name: "orders".into(),
        partitions: 3
    }));
    assert!(topics.contains(&TopicInfo {
        name: "users".into(),
        partitions: 1
    }));
    assert!(matches!(
        kafka.create_topic("orders", 3).await,
        Err(ConnectorError::TopicExists(_))
    ));
    assert!(matches!(
        kafka.create_topic("bad name", 1).await,
        Err(ConnectorError::InvalidTopicName { .. })
    ));

    assert!(matches!(
        kafka.reader("missing", StartFrom::Earliest).await,
        Err(ConnectorError::UnknownTopic(_))
    ));
    assert!(matches!(
        kafka.writer("missing").await,
        Err(ConnectorError::UnknownTopic(_))
    ));

    kafka.delete_topic("orders").await.unwrap();
    assert_eq!(kafka.describe_topic("orders").await.unwrap(), None);
    assert!(!kafka
        .list_topics()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "orders"));
    assert!(matches!(
        kafka.delete_topic("orders").await,
        Err(ConnectorError::UnknownTopic(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_read_back_keys_tombstones_and_timestamps() {
    let broker = TestBroker::start();
    let kafka = backend(&broker);
    kafka.create_topic("events", 4).await.unwrap();

    let mut sent: Vec<OutRecord> = (0..100)
        .map(|i| {
            record(
                Some(&format!("user-{}", i % 17)),
                Some(&format!("{{\"n\":{i}}}")),
                BASE_TS + i,
            )
        })
        .collect();
    sent.push(record(Some("user-3"), None, BASE_TS + 100)); // tombstone
    sent.push(record(None, Some("no key"), BASE_TS + 101));
    sent.push(OutRecord {
        partition: Some(2),
        ..record(Some("pinned"), Some("to partition 2"), BASE_TS + 102)
    });
    let mut writer = kafka.writer("events").await.unwrap();
    writer.send(sent.clone()).await.unwrap();
    writer.flush().await.unwrap();

    let mut reader = kafka.reader("events", StartFrom::Earliest).await.unwrap();
    let got = read_n(reader.as_mut(), sent.len()).await;
    assert_eq!(got.len(), sent.len());

    for r in &got {
        let s = sent
            .iter()
            .find(|s| s.timestamp == r.timestamp)
            .unwrap_or_else(|| panic!("unexpected record {r:?}"));
        assert_eq!(r.key, s.key, "key of {r:?}");
        assert_eq!(r.value, s.value, "value of {r:?}");
        match (s.partition, &s.key) {
            (Some(p), _) => assert_eq!(r.partition, p),
            (None, Some(k)) => assert_eq!(r.partition, partition_for_key(k, 4), "{r:?}"),
            (None, None) => assert!((0..4).contains(&r.partition)),
        }
    }
    // Offsets are dense from 0 in every partition, and per-key order is kept.
    for (p, records) in by_partition(&got) {
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
        let mut last_ts: HashMap<&Option<Bytes>, i64> = HashMap::new();
        for r in records {
            if let Some(prev) = last_ts.insert(&r.key, r.timestamp) {
                assert!(prev < r.timestamp, "per-key order broken in partition {p}");
            }
        }
    }
    let tombstone = got.iter().find(|r| r.timestamp == BASE_TS + 100).unwrap();
    assert_eq!(tombstone.value, None);
    assert_eq!(tombstone.key.as_deref(), Some(&b"user-3"[..]));

    // Everything was read, so the reader is caught up.
    assert!(read_until_caught_up(reader.as_mut()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caught_up_after_reading_everything_that_existed() {
    let broker = TestBroker::start();
    let kafka = backend(&broker);
    kafka.create_topic("empty", 2).await.unwrap();
    kafka.create_topic("t", 3).await.unwrap();

    // An empty topic is caught up as soon as every partition reports its end.
    let mut reader = kafka.reader("empty", StartFrom::Earliest).await.unwrap();
    assert!(read_until_caught_up(reader.as_mut()).await.is_empty());

    let mut writer = kafka.writer("t").await.unwrap();
    for batch in 0..5 {
        writer
            .send(
                (0..200)
                    .map(|i| record(Some(&format!("k{i}")), Some("v"), BASE_TS + batch * 200 + i))
                    .collect(),
            )
            .await
            .unwrap();
    }
    writer.flush().await.unwrap();

    // First call before reading anything: remembers the ends, so it is false now...
    let mut reader = kafka.reader("t", StartFrom::Earliest).await.unwrap();
    assert!(!reader.caught_up().await.unwrap());
    // ...and becomes true once the 1000 records were read, although more arrive meanwhile.
    writer
        .send(
            (0..50)
                .map(|i| record(None, Some("later"), BASE_TS + 5000 + i))
                .collect(),
        )
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let got = read_until_caught_up(reader.as_mut()).await;
    assert!(
        got.len() >= 1000,
        "caught up after only {} records",
        got.len()
    );
    let mut timestamps: Vec<i64> = got
        .iter()
        .map(|r| r.timestamp)
        .filter(|&t| t < BASE_TS + 5000)
        .collect();
    timestamps.sort();
    assert_eq!(timestamps, (BASE_TS..BASE_TS + 1000).collect::<Vec<_>>());

    // A reader that first polls, then asks, is also caught up when it reaches the end.
    let mut reader = kafka.reader("t", StartFrom::Earliest).await.unwrap();
    let first = read_n(reader.as_mut(), 10).await;
    let rest = read_until_caught_up(reader.as_mut()).await;
    assert_eq!(first.len() + rest.len(), 1050);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_offsets_resume_where_a_checkpoint_left_off() {
    let broker = TestBroker::start();
    let kafka = backend(&broker);
    kafka.create_topic("t", 3).await.unwrap();
    let mut writer = kafka.writer("t").await.unwrap();
    let sent: Vec<OutRecord> = (0..300)
        .map(|i| record(Some(&format!("key-{i}")), Some(&i.to_string()), BASE_TS + i))
        .collect();
    writer.send(sent.clone()).await.unwrap();
    writer.flush().await.unwrap();

    let mut reader = kafka.reader("t", StartFrom::Earliest).await.unwrap();
    let all = read_n(reader.as_mut(), sent.len()).await;
    let all = by_partition(&all);
    let len = |p: i32| all.get(&p).map_or(0, Vec::len) as i64;
    assert!(
        len(0) > 10 && len(1) > 10,
        "keys should spread over the partitions"
    );

    // Resume partition 0 at 5 and partition 1 at its end; partition 2 is not in the
    // checkpoint and starts at the earliest offset.
    let resume = vec![(0, 5), (1, len(1))];
    let mut reader = kafka.reader("t", StartFrom::Offsets(resume)).await.unwrap();
    let expected = (len(0) - 5) + len(2);
    let got = read_n(reader.as_mut(), expected as usize).await;
    let got = by_partition(&got);
    let offsets = |p: i32| -> Vec<i64> {
        got.get(&p)
            .map_or(vec![], |v| v.iter().map(|r| r.offset).collect())
    };
    assert_eq!(offsets(0), (5..len(0)).collect::<Vec<_>>());
    assert_eq!(offsets(1), Vec::<i64>::new());
    assert_eq!(offsets(2), (0..len(2)).collect::<Vec<_>>());
    // The records at those offsets are the same ones as before.
    assert_eq!(got[&0][0].value, all[&0][5].value);
    assert!(read_until_caught_up(reader.as_mut()).await.is_empty());

    // New records on the resumed partition 1 arrive.
    writer
        .send(vec![OutRecord {
            partition: Some(1),
            ..record(None, Some("new"), BASE_TS + 1000)
        }])
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let got = read_n(reader.as_mut(), 1).await;
    assert_eq!((got[0].partition, got[0].offset), (1, len(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn murmur2_partitioning_matches_partition_for_key() {
    let broker = TestBroker::start();
    let kafka = backend(&broker);
    kafka.create_topic("t", 7).await.unwrap();
    let mut writer = kafka.writer("t").await.unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("customer/{i}")).collect();
    writer
        .send(
            keys.iter()
                .map(|k| record(Some(k), Some("x"), BASE_TS))
                .collect(),
        )
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let mut reader = kafka.reader("t", StartFrom::Earliest).await.unwrap();
    let got = read_n(reader.as_mut(), keys.len()).await;
    let mut used = std::collections::HashSet::new();
    for r in &got {
        let key = r.key.as_ref().unwrap();
        assert_eq!(r.partition, partition_for_key(key, 7), "key {key:?}");
        used.insert(r.partition);
    }
    assert_eq!(used.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_reads_only_new_records() {
    let broker = TestBroker::start();
    let kafka = backend(&broker);
    kafka.create_topic("t", 1).await.unwrap();
    let mut writer = kafka.writer("t").await.unwrap();
    // Several records in one batch: Tansu's ListOffsets answers "latest" with the last
    // batch's base offset + 1, which the reader must not trust.
    writer
        .send(
            (0..5)
                .map(|i| record(None, Some("old"), BASE_TS + i))
                .collect(),
        )
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let mut reader = kafka.reader("t", StartFrom::Latest).await.unwrap();
    assert!(reader.caught_up().await.unwrap());
    assert!(reader
        .poll(10, Duration::from_millis(1000))
        .await
        .unwrap()
        .is_empty());
    writer
        .send(vec![record(None, Some("new"), BASE_TS + 10)])
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let got = read_n(reader.as_mut(), 1).await;
    assert_eq!(got[0].value.as_deref(), Some(&b"new"[..]));
    assert_eq!(got[0].offset, 5);

    // On an empty topic too.
    kafka.create_topic("empty", 2).await.unwrap();
    let mut reader = kafka.reader("empty", StartFrom::Latest).await.unwrap();
    assert!(reader.caught_up().await.unwrap());
}

/// `cargo test --release --test kafka_backend throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let broker = TestBroker::start();
    let kafka = backend(&broker);
    kafka.create_topic("t", 4).await.unwrap();
    let mut writer = kafka.writer("t").await.unwrap();
    let total = 500_000usize;
    let value = Bytes::from(vec![b'x'; 100]);
    let started = Instant::now();
    for b in 0..total / 10_000 {
        let batch = (0..10_000)
            .map(|i| OutRecord {
                partition: None,
                timestamp: BASE_TS,
                key: Some(Bytes::from(format!("k{}", b * 10_000 + i))),
                value: Some(value.clone()),
            })
            .collect();
        writer.send(batch).await.unwrap();
    }
    writer.flush().await.unwrap();
    let produce = started.elapsed();
    let mut reader = kafka.reader("t", StartFrom::Earliest).await.unwrap();
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        n += reader
            .poll(10_000, Duration::from_secs(1))
            .await
            .unwrap()
            .len();
    }
    let consume = started.elapsed();
    println!(
        "kafka (tansu memory): produce {:.0} records/s, consume {:.0} records/s",
        total as f64 / produce.as_secs_f64(),
        total as f64 / consume.as_secs_f64()
    );
}

/// Values of every record in `topic`, sorted.
async fn all_values(backend: &KafkaBackend, topic: &str) -> Vec<String> {
    let mut reader = backend
        .reader(topic, StartFrom::Earliest)
        .await
        .expect("reader");
    let mut values: Vec<String> = read_until_caught_up(reader.as_mut())
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    values.sort();
    values
}

/// Exactly-once output on Kafka: one transaction per epoch, committed after
/// the checkpoint; a crash between the checkpoint and the transaction's
/// commit is repaired from the local copy, and a crash after the commit
/// adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_writer_commits_each_epoch_once() {
    let broker = TestBroker::start();
    let staging = tempfile::tempdir().unwrap();
    let extra = [
        ("session.timeout.ms".to_string(), "6000".to_string()),
        ("heartbeat.interval.ms".to_string(), "1000".to_string()),
    ];
    let backend =
        KafkaBackend::with_staging(&broker.addr, &extra, staging.path()).expect("backend");
    backend.create_topic("eo_out", 2).await.unwrap();
    let writer = || async {
        backend
            .exactly_once_writer("eo_out", "q1.a")
            .await
            .expect("writer")
            .expect("exactly-once on Kafka")
    };
    let mut w = writer().await;
    w.recover(0, None).await.unwrap();
    w.send(vec![
        record(Some("a"), Some("1"), BASE_TS),
        record(Some("b"), Some("2"), BASE_TS),
        record(Some("c"), Some("3"), BASE_TS),
    ])
    .await
    .unwrap();
    w.prepare(1).await.unwrap();
    w.commit(1).await.unwrap();
    assert_eq!(all_values(&backend, "eo_out").await, ["1", "2", "3"]);

    // Epoch 2 commits in Kafka; the process dies before its local copy is
    // removed. Recovery finds the epoch's marker and produces nothing.
    let staged = staging
        .path()
        .join("eo_out")
        .join("q1.a")
        .join("epoch-2.log");
    let copy = staging.path().join("copy.log");
    w.send(vec![
        record(Some("d"), Some("4"), BASE_TS),
        record(Some("e"), Some("5"), BASE_TS),
    ])
    .await
    .unwrap();
    w.prepare(2).await.unwrap();
    std::fs::copy(&staged, &copy).unwrap();
    w.commit(2).await.unwrap();
    drop(w);
    std::fs::copy(&copy, &staged).unwrap();
    let mut w = writer().await;
    w.recover(2, None).await.unwrap();
    assert!(!staged.exists());
    assert_eq!(
        all_values(&backend, "eo_out").await,
        ["1", "2", "3", "4", "5"]
    );

    // Epoch 3 is in the checkpoint, but the process dies before its
    // transaction commits: the restarted producer aborts it and produces the
    // local copy again.
    w.send(vec![record(Some("f"), Some("6"), BASE_TS)])
        .await
        .unwrap();
    w.prepare(3).await.unwrap();
    drop(w);
    let mut w = writer().await;
    w.recover(3, None).await.unwrap();
    let values = all_values(&backend, "eo_out").await;
    let sixes = values.iter().filter(|v| *v == "6").count();
    // Once on Kafka. The test broker also shows records of aborted
    // transactions to read_committed readers (KAFKA_TEST_BROKER.md), so the
    // aborted first attempt may show here as a second copy.
    assert!((1..=2).contains(&sixes), "{values:?}");
    assert_eq!(&values[..5], ["1", "2", "3", "4", "5"]);
    // Its marker says epoch 3 committed: a second recovery adds nothing.
    std::fs::copy(&copy, staging.path().join("eo_out/q1.a/epoch-3.log")).unwrap();
    drop(w);
    let mut w = writer().await;
    w.recover(3, None).await.unwrap();
    assert_eq!(all_values(&backend, "eo_out").await, values);
}
