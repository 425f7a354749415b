//! Crash recovery with a real process: after `kill -9` (and after a graceful
//! restart) queries resume from their last checkpoint, and a materialized count
//! over N input records equals N — no loss, no double counting.

mod support;

use std::time::Duration;

use support::server::TestServer;

fn insert_batch(start: usize, count: usize) -> String {
    let values: Vec<String> = (start..start + count)
        .map(|i| format!("('k{}', {i})", i % 7))
        .collect();
    format!("INSERT INTO events (k, v) VALUES {};", values.join(", "))
}

async fn counts(server: &TestServer) -> (i64, usize) {
    let rows = server.pull("SELECT k, n FROM per_key").await;
    let total = rows.iter().map(|r| r[1].as_i64().unwrap_or(0)).sum();
    (total, rows.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_neither_loses_nor_double_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, &["--checkpoint-interval-ms", "700"]);
    server
        .ksql_ok(
            "CREATE STREAM events (k VARCHAR KEY, v INT) WITH (kafka_topic='events', partitions=3);
             CREATE TABLE per_key AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM events GROUP BY k;",
        )
        .await;

    const BATCH: usize = 500;
    let mut produced = 0;
    for _ in 0..5 {
        server.ksql_ok(&insert_batch(produced, BATCH)).await;
        produced += BATCH;
    }
    // These are checkpointed; the next ones are processed but (most likely) not yet
    // checkpointed when the process dies, so recovery must replay them exactly once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..5 {
        server.ksql_ok(&insert_batch(produced, BATCH)).await;
        produced += BATCH;
    }
    server
        .wait_for(
            "SELECT k, n FROM per_key",
            Duration::from_secs(30),
            |rows| rows.iter().map(|r| r[1].as_i64().unwrap_or(0)).sum::<i64>() >= produced as i64,
        )
        .await;
    server.kill9();
    server.restart();

    let shown = server.ksql_ok("SHOW QUERIES;").await;
    assert!(
        shown.to_string().contains("CTAS_PER_KEY"),
        "query back after restart: {shown}"
    );

    for _ in 0..10 {
        server.ksql_ok(&insert_batch(produced, BATCH)).await;
        produced += BATCH;
    }
    let n = produced as i64;
    server
        .wait_for(
            "SELECT k, n FROM per_key",
            Duration::from_secs(60),
            |rows| rows.iter().map(|r| r[1].as_i64().unwrap_or(0)).sum::<i64>() >= n,
        )
        .await;
    // Give a double count the chance to show up before checking exactly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (total, keys) = counts(&server).await;
    assert_eq!(
        total, n,
        "count after kill -9 must equal the records produced"
    );
    assert_eq!(keys, 7);
    let sums = server.pull("SELECT SUM(s) FROM per_key").await;
    let expected_sum: i64 = (0..produced as i64).sum();
    assert_eq!(sums[0][0].as_i64(), Some(expected_sum), "sums: {sums:?}");

    // A graceful restart resumes too.
    server.stop();
    server.restart();
    server.ksql_ok(&insert_batch(produced, 10)).await;
    let n = n + 10;
    server
        .wait_for(
            "SELECT k, n FROM per_key",
            Duration::from_secs(60),
            |rows| rows.iter().map(|r| r[1].as_i64().unwrap_or(0)).sum::<i64>() >= n,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counts(&server).await.0, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_checkpoints_first_so_outputs_are_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    // A long interval: without the final checkpoint on shutdown, everything since
    // the start would be replayed and the copy below would hold duplicates.
    // At-least-once, so that the rows are visible before that checkpoint.
    let mut server = TestServer::start(
        &dir.path().join("data"),
        &["--checkpoint-interval-ms", "60000"],
    );
    server
        .ksql_ok(
            "CREATE STREAM events (k VARCHAR KEY, v INT) WITH (kafka_topic='events', partitions=2);
             CREATE STREAM copy WITH (processing_guarantee='at_least_once') AS SELECT k, v FROM events;",
        )
        .await;
    server.ksql_ok(&insert_batch(0, 300)).await;
    server
        .wait_for("SELECT COUNT(*) FROM copy", Duration::from_secs(30), |r| {
            r[0][0] == 300
        })
        .await;
    server.stop();
    server.restart();
    server.ksql_ok(&insert_batch(300, 100)).await;
    server
        .wait_for("SELECT COUNT(*) FROM copy", Duration::from_secs(30), |r| {
            r[0][0].as_i64() >= Some(400)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = server
        .pull("SELECT COUNT(*), COUNT(DISTINCT v) FROM copy")
        .await;
    assert_eq!(
        rows[0],
        serde_json::json!([400, 400]),
        "no record twice after a graceful restart"
    );
}

/// Exactly-once output is staged until its checkpoint commits; at-least-once
/// output is visible at once; `checkpoint_interval` sets a query's own pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_output_appears_when_its_checkpoint_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(
        &dir.path().join("data"),
        &["--checkpoint-interval-ms", "600000"],
    );
    server
        .ksql_ok(
            "CREATE STREAM events (k VARCHAR KEY, v INT) WITH (kafka_topic='events', partitions=2);
             CREATE STREAM slow AS SELECT k, v FROM events;
             CREATE STREAM quick WITH (checkpoint_interval='300 ms') AS SELECT k, v FROM events;
             CREATE STREAM eager WITH (processing_guarantee='at_least_once') AS SELECT k, v FROM events;",
        )
        .await;
    // As ksqlDB clients set it: a session property for the queries created.
    let (status, body) = server
        .ksql_with(
            "CREATE STREAM eager_too AS SELECT k, v FROM events;",
            serde_json::json!({ "processing.guarantee": "at_least_once" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.ksql_ok(&insert_batch(0, 300)).await;
    for stream in ["quick", "eager", "eager_too"] {
        server
            .wait_for(
                &format!("SELECT COUNT(*) FROM {stream}"),
                Duration::from_secs(30),
                |r| r[0][0] == 300,
            )
            .await;
    }
    assert_eq!(
        server.pull("SELECT COUNT(*) FROM slow").await[0][0],
        0,
        "nothing of an epoch is visible before its checkpoint"
    );
    let (status, body) = server
        .ksql("CREATE STREAM bad WITH (processing_guarantee='twice') AS SELECT k FROM events;")
        .await;
    assert_eq!(status, 400, "{body}");
    // A graceful stop checkpoints every query, which publishes its output.
    server.stop();
    server.restart();
    server
        .wait_for("SELECT COUNT(*) FROM slow", Duration::from_secs(30), |r| {
            r[0][0] == 300
        })
        .await;
    let rows = server
        .pull("SELECT COUNT(*), COUNT(DISTINCT v) FROM slow")
        .await;
    assert_eq!(rows[0], serde_json::json!([300, 300]));
}

/// `n` rows of `events`, one per key `g0 .. g{n-1}`, each with value `round`.
fn distinct_keys(n: usize, round: i64) -> Vec<String> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(500)
        .map(|keys| {
            let values: Vec<String> = keys.iter().map(|i| format!("('g{i}', {round})")).collect();
            format!("INSERT INTO events (k, v) VALUES {};", values.join(", "))
        })
        .collect()
}

fn early_checkpoints(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sluice_query_early_checkpoints_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A GROUP BY whose groups are several times the state memory budget, with
/// a checkpoint interval longer than the inserts take: checkpoints come early
/// because memory passed the budget, groups are evicted and read back, and
/// after `kill -9` the replay from the last checkpoint is exact. (Pull
/// queries read committed state, so the interval also bounds how long the
/// last rows take to show.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_by_over_its_memory_budget_checkpoints_early_and_survives_kill_dash_nine() {
    const KEYS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start(
        &data,
        &[
            "--checkpoint-interval-ms",
            "5000",
            "--state-memory-budget",
            "1",
        ],
    );
    server
        .ksql_ok(
            "CREATE STREAM events (k VARCHAR KEY, v INT) WITH (kafka_topic='events', partitions=1);
             CREATE TABLE per_key AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM events GROUP BY k;",
        )
        .await;
    for insert in distinct_keys(KEYS, 1) {
        server.ksql_ok(&insert).await;
    }
    let totals = "SELECT COUNT(*) AS groups, SUM(n) AS rows FROM per_key";
    server
        .wait_for(totals, Duration::from_secs(60), |rows| {
            rows.first().and_then(|r| r[1].as_i64()) == Some(KEYS as i64)
        })
        .await;
    // The query id ends in a number; any query's early checkpoints are its.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while early_checkpoints(&server.metrics().await) == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no early checkpoint\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
        .wait_metric(
            "sluice_state_evictions_total",
            Duration::from_secs(30),
            "groups evicted",
            |v| v > 0.0,
        )
        .await;
    server.kill9();
    server.restart();

    for insert in distinct_keys(KEYS, 2) {
        server.ksql_ok(&insert).await;
    }
    let summary = "SELECT COUNT(*), SUM(n), MIN(n), MAX(n), SUM(s) FROM per_key";
    server
        .wait_for(summary, Duration::from_secs(60), |rows| {
            rows.first().and_then(|r| r[1].as_i64()) >= Some(2 * KEYS as i64)
        })
        .await;
    // Give a double count the chance to show up before checking exactly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = server.pull(summary).await;
    let got: Vec<Option<i64>> = rows[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64())
        .collect();
    let keys = KEYS as i64;
    assert_eq!(
        got,
        vec![Some(keys), Some(2 * keys), Some(2), Some(2), Some(3 * keys)],
        "groups, rows, fewest and most rows per group, sum of values"
    );
}
