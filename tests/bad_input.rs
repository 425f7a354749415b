//! Bad input never stops work: bad records are dead-lettered once however many
//! queries read them (and not again after a restart), failing expressions are
//! dead-lettered per query with their source position, a query whose topic
//! vanished is retried and resumes from its checkpoint, and a table whose query
//! could not start answers with an error instead of nothing. On the embedded
//! local log, in process; tests/kafka_e2e.rs covers oversize records on Kafka.

#[path = "support/oracle.rs"]
mod oracle;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use sluice::config::ServerConfig;
use sluice::connectors::{LogRecord, OutRecord, StartFrom};
use sluice::engine::{Engine, Session, StatementResult};

async fn exec(engine: &Engine, sql: &str) {
    for r in engine.execute(&mut Session::new(), sql).await {
        if let Err(e) = r {
            panic!("{sql}: {e}");
        }
    }
}

fn rows_text(batches: &[RecordBatch]) -> Vec<String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let f: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                f.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
    }
    out
}

/// The rows of a pull query, or its error.
async fn pull(engine: &Engine, sql: &str) -> Result<Vec<String>, String> {
    match engine.execute(&mut Session::new(), sql).await.pop() {
        Some(Ok(StatementResult::Rows { batches, .. })) => Ok(rows_text(&batches)),
        Some(Err(e)) => Err(e.to_string()),
        other => panic!("{sql}: {other:?}"),
    }
}

async fn wait_rows(engine: &Engine, sql: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = pull(engine, sql).await;
        if got.as_ref().is_ok_and(|g| g == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: wanted {want:?}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_metric(engine: &Engine, sample: &str, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = engine.metrics_text();
        let v = text
            .lines()
            .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if v.is_some_and(&ok) {
            return;
        }
        assert!(Instant::now() < deadline, "{sample} = {v:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn produce(engine: &Engine, topic: &str, records: &[(&str, &str)]) {
    let mut w = engine.backend().writer(topic).await.expect("writer");
    w.send(
        records
            .iter()
            .map(|(k, v)| OutRecord {
                partition: None,
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from(k.to_string())),
                value: Some(Bytes::from(v.to_string())),
            })
            .collect(),
    )
    .await
    .expect("send");
    w.flush().await.expect("flush");
}

async fn read_topic(engine: &Engine, topic: &str) -> Vec<LogRecord> {
    let mut r = engine
        .backend()
        .reader(topic, StartFrom::Earliest)
        .await
        .expect("reader");
    let mut out = Vec::new();
    while !r.caught_up().await.expect("caught_up") {
        out.extend(
            r.poll(1000, Duration::from_millis(100))
                .await
                .expect("poll"),
        );
    }
    out
}

fn dead_letters(records: &[LogRecord]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap())
        .collect()
}

async fn start(config: &ServerConfig) -> Arc<Engine> {
    oracle::restart_engine(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_dead_lettered_once_and_failed_values_per_query() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        dead_letter_topic: Some("dlq".into()),
        ..oracle::engine_config(dir.path())
    };
    let engine = start(&config).await;
    exec(
        &engine,
        "CREATE STREAM s (k VARCHAR KEY, a BIGINT, b BIGINT) WITH (kafka_topic='s', value_format='json', partitions=1);
         CREATE STREAM q1 AS SELECT k, a / b AS x FROM s;
         CREATE STREAM q2 AS SELECT k, a FROM s;",
    )
    .await;
    produce(
        &engine,
        "s",
        &[
            ("k1", r#"{"a": 4, "b": 2}"#),
            ("k2", "not json"),
            ("k3", r#"{"a": 1, "b": 0}"#),
            ("k4", r#"{"a": 9, "b": 3}"#),
        ],
    )
    .await;
    wait_rows(
        &engine,
        "SELECT k, x FROM q1 ORDER BY k",
        &["k1 | 2", "k3 | NULL", "k4 | 3"],
    )
    .await;
    wait_rows(
        &engine,
        "SELECT k, a FROM q2 ORDER BY k",
        &["k1 | 4", "k3 | 1", "k4 | 9"],
    )
    .await;
    for q in ["CSAS_Q1_1", "CSAS_Q2_2"] {
        wait_metric(
            &engine,
            &format!("sluice_query_errors_total{{query=\"{q}\"}}"),
            |v| v == 1.0,
        )
        .await;
    }
    wait_metric(
        &engine,
        "sluice_query_expression_errors_total{query=\"CSAS_Q1_1\"}",
        |v| v == 1.0,
    )
    .await;

    // After a restart a new query reads the bad record again: not written twice.
    engine.shutdown().await;
    drop(engine);
    let engine = start(&config).await;
    exec(&engine, "CREATE STREAM q3 AS SELECT k, a / b AS y FROM s;").await;
    wait_rows(
        &engine,
        "SELECT k, y FROM q3 ORDER BY k",
        &["k1 | 2", "k3 | NULL", "k4 | 3"],
    )
    .await;
    wait_metric(
        &engine,
        "sluice_query_expression_errors_total{query=\"CSAS_Q3_3\"}",
        |v| v == 1.0,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let letters = dead_letters(&read_topic(&engine, "dlq").await);
        if letters.len() >= 3 || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kinds: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["query"].as_str().unwrap()))
        .collect();
    let bad: Vec<&serde_json::Value> = letters
        .iter()
        .filter(|l| l["kind"] == "bad_record")
        .collect();
    assert_eq!(bad.len(), 1, "one bad record, once: {letters:#?}");
    assert_eq!(bad[0]["offset"], 1);
    assert_eq!(bad[0]["value"], "not json");
    assert_eq!(bad[0]["key"], "k2");
    let mut expr: Vec<&serde_json::Value> = letters
        .iter()
        .filter(|l| l["kind"] == "expression_error")
        .collect();
    expr.sort_by_key(|l| l["query"].as_str().unwrap().to_string());
    assert_eq!(expr.len(), 2, "{kinds:?}");
    assert_eq!(expr[0]["query"], "CSAS_Q1_1");
    assert_eq!(expr[1]["query"], "CSAS_Q3_3");
    for e in expr {
        assert_eq!(e["source"], "s");
        assert_eq!(e["partition"], 0);
        assert_eq!(e["offset"], 2);
        assert_eq!(e["row"]["k"], "k3");
        assert_eq!(e["row"]["b"], 0);
        assert!(
            e["error"].as_str().unwrap().contains("Divide by zero"),
            "{e}"
        );
    }
    engine.shutdown().await;
}

/// Waits until query CTAS_T_1 shows RETRYING in /metrics.
async fn wait_retrying(engine: &Engine) {
    let sample = "sluice_query_status{query=\"CTAS_T_1\",status=\"RETRYING\"}";
    wait_metric(engine, sample, |v| v == 1.0).await;
}

/// Waits until CTAS_T_1 has committed two more checkpoints (so the state it
/// shows is in the last one).
async fn wait_two_checkpoints(engine: &Engine) {
    let sample = "sluice_query_checkpoints_total{query=\"CTAS_T_1\"}";
    let before = engine
        .metrics_text()
        .lines()
        .find(|l| l.starts_with(sample))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    wait_metric(engine, sample, |v| v >= before + 2.0).await;
}

/// An engine whose query CTAS_T_1 counts `a | 2` and `b | 1` from topic `s`
/// and has checkpointed them (two more checkpoints after the counts showed).
async fn counted_and_checkpointed(config: &ServerConfig) -> Arc<Engine> {
    let engine = start(config).await;
    exec(
        &engine,
        "CREATE STREAM s (k VARCHAR KEY, v INT) WITH (kafka_topic='s', value_format='json', partitions=1);
         CREATE TABLE t AS SELECT k, COUNT(*) AS n FROM s GROUP BY k;",
    )
    .await;
    produce(
        &engine,
        "s",
        &[
            ("a", r#"{"v": 1}"#),
            ("a", r#"{"v": 2}"#),
            ("b", r#"{"v": 3}"#),
        ],
    )
    .await;
    wait_rows(
        &engine,
        "SELECT k, n FROM t ORDER BY k",
        &["a | 2", "b | 1"],
    )
    .await;
    wait_two_checkpoints(&engine).await;
    engine
}

/// A query's state is only read under the plan it was checkpointed with: a
/// build that plans the same SQL into another shape (the test-only planner
/// switch adds an operator, which moves the table's state to another node)
/// leaves the query stopped with an error saying so and writes nothing; the
/// build that wrote the state then carries on exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_never_read_under_another_plan() {
    let dir = tempfile::tempdir().unwrap();
    let config = oracle::engine_config(dir.path());
    let engine = counted_and_checkpointed(&config).await;
    engine.shutdown().await;
    drop(engine);

    let replanned = ServerConfig {
        test_planner_variant: true,
        ..config.clone()
    };
    let engine = start(&replanned).await;
    let shown = pull(&engine, "SHOW QUERIES").await.unwrap().join("\n");
    assert!(shown.contains("CTAS_T_1 | ERROR"), "{shown}");
    assert!(shown.contains("another plan"), "{shown}");
    assert!(shown.contains("Passthrough"), "{shown}");
    let answer = pull(&engine, "SELECT k, n FROM t ORDER BY k").await;
    assert!(answer.is_err(), "{answer:?}");
    produce(&engine, "s", &[("b", r#"{"v": 5}"#)]).await;
    engine.shutdown().await;
    drop(engine);

    let engine = start(&config).await;
    produce(&engine, "s", &[("a", r#"{"v": 4}"#)]).await;
    wait_rows(
        &engine,
        "SELECT k, n FROM t ORDER BY k",
        &["a | 3", "b | 2"],
    )
    .await;
    let shown = pull(&engine, "SHOW QUERIES").await.unwrap().join("\n");
    assert!(shown.contains("CTAS_T_1 | RUNNING"), "{shown}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_topic_vanished_is_retried_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = oracle::engine_config(dir.path());
    let engine = counted_and_checkpointed(&config).await;
    engine.shutdown().await;
    drop(engine);

    // The topic is lost while the server is down.
    std::fs::remove_dir_all(dir.path().join("log").join("s")).expect("delete the topic");
    let engine = start(&config).await;
    let answer = pull(&engine, "SELECT k, n FROM t ORDER BY k").await;
    let error = answer.expect_err("a table whose query could not start must not answer empty");
    assert!(error.contains("cannot answer"), "{error}");
    let shown = pull(&engine, "SHOW QUERIES").await.unwrap().join("\n");
    assert!(shown.contains("CTAS_T_1 | RETRYING"), "{shown}");
    assert!(shown.contains("does not exist"), "{shown}");
    wait_retrying(&engine).await;

    // The topic comes back: the query resumes from its checkpointed state and
    // reads the new topic from its beginning.
    engine
        .backend()
        .create_topic("s", 1)
        .await
        .expect("recreate the topic");
    produce(&engine, "s", &[("a", r#"{"v": 4}"#)]).await;
    wait_rows(
        &engine,
        "SELECT k, n FROM t ORDER BY k",
        &["a | 3", "b | 1"],
    )
    .await;
    wait_metric(
        &engine,
        "sluice_query_restarts_total{query=\"CTAS_T_1\"}",
        |v| v == 1.0,
    )
    .await;
    let shown = pull(&engine, "SHOW QUERIES").await.unwrap().join("\n");
    assert!(shown.contains("CTAS_T_1 | RUNNING"), "{shown}");

    // The checkpoint holds the position in the new topic (1), not the old
    // one's (3, past the new end): a restart counts nothing twice.
    wait_two_checkpoints(&engine).await;
    engine.shutdown().await;
    drop(engine);
    let engine = start(&config).await;
    produce(&engine, "s", &[("b", r#"{"v": 5}"#)]).await;
    wait_rows(
        &engine,
        "SELECT k, n FROM t ORDER BY k",
        &["a | 3", "b | 2"],
    )
    .await;
    engine.shutdown().await;
}

/// The source topic deleted under the running query: it shows RETRYING, its
/// table refuses pull queries with the reason, and once the topic is recreated
/// the query resumes from its checkpoint and reads the new topic from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_under_a_running_query_is_retried_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = oracle::engine_config(dir.path());
    let engine = counted_and_checkpointed(&config).await;

    engine
        .backend()
        .delete_topic("s")
        .await
        .expect("delete the topic");
    wait_retrying(&engine).await;
    let shown = pull(&engine, "SHOW QUERIES").await.unwrap().join("\n");
    assert!(shown.contains("CTAS_T_1 | RETRYING"), "{shown}");
    let error = pull(&engine, "SELECT k, n FROM t")
        .await
        .expect_err("a retrying query's table must not answer");
    assert!(error.contains("is retrying"), "{error}");

    engine
        .backend()
        .create_topic("s", 1)
        .await
        .expect("recreate the topic");
    produce(&engine, "s", &[("b", r#"{"v": 4}"#)]).await;
    wait_rows(
        &engine,
        "SELECT k, n FROM t ORDER BY k",
        &["a | 2", "b | 2"],
    )
    .await;
    wait_metric(
        &engine,
        "sluice_query_restarts_total{query=\"CTAS_T_1\"}",
        |v| v == 1.0,
    )
    .await;

    // The sink topic goes: the next write fails, the query retries until the
    // topic is back and then writes the change it could not write before.
    // CREATE TABLE t AS ... writes topic 't'.
    let sink_topic = "t";
    engine
        .backend()
        .delete_topic(sink_topic)
        .await
        .expect("delete the sink topic");
    produce(&engine, "s", &[("a", r#"{"v": 5}"#)]).await;
    wait_retrying(&engine).await;
    engine
        .backend()
        .create_topic(sink_topic, 1)
        .await
        .expect("recreate the sink topic");
    wait_rows(
        &engine,
        "SELECT k, n FROM t ORDER BY k",
        &["a | 3", "b | 2"],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let written: Vec<(String, serde_json::Value)> = read_topic(&engine, sink_topic)
            .await
            .iter()
            .map(|r| {
                (
                    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                    serde_json::from_slice(r.value.as_deref().unwrap_or(b"null")).unwrap(),
                )
            })
            .collect();
        if written.iter().any(|(k, v)| k == "a" && v["n"] == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recreated sink never got a = 3: {written:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_metric(
        &engine,
        "sluice_query_restarts_total{query=\"CTAS_T_1\"}",
        |v| v == 2.0,
    )
    .await;
    engine.shutdown().await;
}
