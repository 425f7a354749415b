//! Sluice against a real Kafka-protocol broker process (Tansu): streams over an
//! existing topic, continuous queries writing keyed upserts, bad records counted
//! and dead-lettered, topics created with the requested partitions.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::connectors::kafka::KafkaBackend;
use sluice::connectors::{LogBackend, LogRecord, OutRecord, StartFrom};
use support::broker::TestBroker;
use support::server::{metric, TestServer};

async fn read_all(backend: &KafkaBackend, topic: &str) -> Vec<LogRecord> {
    let mut reader = backend
        .reader(topic, StartFrom::Earliest)
        .await
        .expect("reader");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.caught_up().await.expect("caught_up") {
        assert!(Instant::now() < deadline, "reading {topic} did not finish");
        out.extend(
            reader
                .poll(1000, Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    out
}

fn json(v: serde_json::Value) -> Option<Bytes> {
    Some(Bytes::from(v.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_a_real_broker() {
    let broker = TestBroker::start();
    let admin = KafkaBackend::new(&broker.addr, &[]).expect("kafka client");

    // An existing topic with data, produced by "another application".
    admin.create_topic("orders", 3).await.expect("create topic");
    let mut w = admin.writer("orders").await.expect("writer");
    let mut records = Vec::new();
    for i in 0..30 {
        records.push(OutRecord {
            partition: None,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("c{}", i % 3))),
            value: json(
                serde_json::json!({"amount": i, "region": if i % 2 == 0 { "eu" } else { "us" }}),
            ),
        });
    }
    // Bad input: not JSON, a wrong type, and valid again afterwards.
    records.push(OutRecord {
        partition: None,
        timestamp: 1_700_000_001_000,
        key: Some(Bytes::from("c0")),
        value: Some(Bytes::from("{not json")),
    });
    records.push(OutRecord {
        partition: None,
        timestamp: 1_700_000_001_001,
        key: Some(Bytes::from("c1")),
        value: json(serde_json::json!({"amount": "lots", "region": "eu"})),
    });
    w.send(records).await.expect("produce");
    w.flush().await.expect("flush");

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--kafka-brokers",
            &broker.addr,
            "--dead-letter-topic",
            "sluice_dlq",
            "--checkpoint-interval-ms",
            "300",
        ],
    );
    server
        .ksql_ok(
            "CREATE STREAM orders (customer VARCHAR KEY, amount INT, region VARCHAR)
               WITH (kafka_topic='orders', value_format='json');
             CREATE TABLE per_customer AS
               SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer;
             CREATE STREAM big_orders WITH (kafka_topic='big_orders', partitions=2) AS
               SELECT customer, amount FROM orders WHERE amount >= 25;",
        )
        .await;
    let describe = server
        .ksql_ok("DESCRIBE EXTENDED orders;")
        .await
        .to_string();
    assert!(
        describe.contains("[\"partitions\",\"3\"]"),
        "existing topic used as is: {describe}"
    );

    let rows = server
        .wait_for(
            "SELECT customer, n, total FROM per_customer ORDER BY customer",
            Duration::from_secs(60),
            |r| r.iter().map(|x| x[1].as_i64().unwrap_or(0)).sum::<i64>() == 30,
        )
        .await;
    let expected: Vec<serde_json::Value> = (0..3)
        .map(|c| {
            let amounts: Vec<i64> = (0..30).filter(|i| i % 3 == c).collect();
            serde_json::json!([format!("c{c}"), amounts.len(), amounts.iter().sum::<i64>()])
        })
        .collect();
    assert_eq!(rows, expected);

    // The table's topic carries keyed upserts: the last value per key is the row.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = read_all(&admin, "per_customer").await;
        let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for r in &out {
            let key = String::from_utf8_lossy(r.key.as_deref().expect("keyed")).to_string();
            let value: serde_json::Value =
                serde_json::from_slice(r.value.as_deref().expect("value")).unwrap();
            latest.insert(key, value);
        }
        if latest.get("c0").map(|v| v["n"].clone()) == Some(serde_json::json!(10))
            && latest.len() == 3
        {
            assert_eq!(latest["c1"]["total"], expected[1][2]);
            break;
        }
        assert!(Instant::now() < deadline, "output topic: {latest:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The CSAS created its topic with the requested partitions.
    let info = admin
        .describe_topic("big_orders")
        .await
        .unwrap()
        .expect("created");
    assert_eq!(info.partitions, 2);
    let big = server
        .wait_for(
            "SELECT amount FROM big_orders ORDER BY amount",
            Duration::from_secs(30),
            |r| r.len() == 5,
        )
        .await;
    assert_eq!(
        big,
        (25..30).map(|a| serde_json::json!([a])).collect::<Vec<_>>()
    );

    // Bad records: skipped, counted per query, and dead-lettered (once per query).
    let m = server.metrics().await;
    assert_eq!(
        metric(
            &m,
            "sluice_query_errors_total{query=\"CTAS_PER_CUSTOMER_1\"}"
        ),
        Some(2.0),
        "{m}"
    );
    let dlq = read_all(&admin, "sluice_dlq").await;
    assert!(dlq.len() >= 2, "dead letters: {dlq:?}");
    let first: serde_json::Value =
        serde_json::from_slice(dlq[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(first["topic"], "orders");
    assert!(
        first["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{first}"
    );

    // New records keep flowing; the query survived the bad ones.
    let mut w = admin.writer("orders").await.unwrap();
    w.send(vec![OutRecord {
        partition: None,
        timestamp: 1_700_000_002_000,
        key: Some(Bytes::from("c9")),
        value: json(serde_json::json!({"amount": 1, "region": "eu"})),
    }])
    .await
    .unwrap();
    w.flush().await.unwrap();
    server
        .wait_for(
            "SELECT n FROM per_customer WHERE customer = 'c9'",
            Duration::from_secs(30),
            |r| r.len() == 1,
        )
        .await;

    // A stream over a missing topic creates it.
    server
        .ksql_ok("CREATE STREAM fresh (a INT) WITH (kafka_topic='fresh_topic', partitions=4);")
        .await;
    assert_eq!(
        admin
            .describe_topic("fresh_topic")
            .await
            .unwrap()
            .map(|t| t.partitions),
        Some(4)
    );
    // ...and a mismatched partition count on an existing topic is refused before anything is created.
    let (status, body) = server
        .ksql("CREATE STREAM orders2 (a INT) WITH (kafka_topic='orders', partitions=5);")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("exists with 3 partitions"),
        "{body}"
    );
}
