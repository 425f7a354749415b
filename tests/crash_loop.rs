//! Crash loops with a real process: while records flow into the local log,
//! the server is killed with SIGKILL at random moments and started again.
//!
//! `kill_nine_in_a_loop_keeps_every_result_exact`: 240,000 records, eleven
//! kills in the flow. A stream–table join feeding a GROUP BY, tumbling windows
//! with EMIT CHANGES and with EMIT FINAL, an interval join feeding a GROUP BY
//! and a plain GROUP BY must end exactly equal to DataFusion batch SQL over
//! the same input: nothing lost, nothing counted twice. A last kill after
//! everything converged checks that the restored state is still exact.
//!
//! The queries' outputs are checked too (issue #13, exactly-once output): a
//! filter stream and a stream–table join stream must hold each of their rows
//! exactly once, as batch SQL computes them, and the changelog of a GROUP BY,
//! read back from the log in offset order, must show each key's count only
//! rising, ending at its final value (an update written twice, as
//! at-least-once output does after a crash, shows as a count that repeats or
//! falls back). `twenty_kills_in_a_million_records_leave_each_output_row_once`
//! does the same for those three queries with 1,000,000 records and twenty
//! kills in the flow.
//!
//! Inserts and kills take turns on one lock, so the test knows exactly which
//! records were written (an INSERT cut off mid-way is not what this checks);
//! kills still land at random points of processing, checkpointing and
//! recovery, because the queries run behind the inserts.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use support::broker::TestBroker;
use support::server::TestServer;
use tokio::sync::Mutex;

#[path = "support/oracle.rs"]
mod oracle;
use oracle::{events_table, text_rows, Event, Rng};

const BATCH: usize = 1_000;
const KEYS: u64 = 60;
/// Keys `k0..k49` have a dimension row; events of the other keys find none.
const DIM_KEYS: u64 = 50;
const GROUPS: u64 = 7;
const STEP_MS: i64 = 5;
const BASE_TS: i64 = 1_700_000_000_000;
/// Keys of the events that close every window at the end; not compared.
const FLUSH_PREFIX: &str = "zz";

/// What a crash loop runs, feeds and checks.
struct Scenario {
    ddl: &'static str,
    /// (what, pull query, batch SQL): tables that must equal batch SQL.
    tables: &'static [(&'static str, &'static str, &'static str)],
    /// (what, query over an output stream, batch SQL): each row exactly as
    /// often as batch SQL has it. Empty when output is not exactly-once.
    outputs: &'static [(&'static str, &'static str, &'static str)],
    /// Read the changelog of `tens_per_key` from the log at the end.
    changelog: bool,
    events: usize,
    clicks_per_batch: usize,
    /// Kills spread over the input (one more follows once converged).
    kills: usize,
}

const DDL: &str = "
CREATE STREAM ev (k VARCHAR KEY, v BIGINT, ts BIGINT)
  WITH (kafka_topic='ev', value_format='json', timestamp='ts', watermark_delay='5 seconds', partitions=3);
CREATE STREAM clicks (k VARCHAR KEY, v BIGINT, ts BIGINT)
  WITH (kafka_topic='clicks', value_format='json', timestamp='ts', watermark_delay='5 seconds', partitions=2);
CREATE TABLE dim (k VARCHAR PRIMARY KEY, grp VARCHAR)
  WITH (kafka_topic='dim', value_format='json', partitions=2);
CREATE TABLE by_grp AS
  SELECT d.grp, COUNT(*) AS n, SUM(e.v) AS s FROM ev e JOIN dim d ON e.k = d.k GROUP BY d.grp;
CREATE TABLE win_changes AS
  SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev
  WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY k EMIT CHANGES;
CREATE TABLE win_final AS
  SELECT k, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi FROM ev
  WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 2 SECONDS) GROUP BY k EMIT FINAL;
CREATE TABLE ij AS
  SELECT e.k, COUNT(*) AS n, SUM(c.v) AS s FROM ev e JOIN clicks c WITHIN 2 SECONDS ON e.k = c.k
  GROUP BY e.k;
CREATE TABLE per_key AS
  SELECT k, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi FROM ev GROUP BY k;
CREATE STREAM tens WITH (kafka_topic='tens') AS
  SELECT k, v, ts FROM ev WHERE v % 10 = 0;
CREATE STREAM small_joined WITH (kafka_topic='small_joined') AS
  SELECT e.k, e.v, e.ts, d.grp FROM ev e JOIN dim d ON e.k = d.k WHERE e.v < 100;
CREATE TABLE tens_per_key WITH (kafka_topic='tens_per_key') AS
  SELECT k, COUNT(*) AS n FROM ev WHERE v % 10 = 0 GROUP BY k;
";

/// (what, a query over an output stream, the same rows by batch SQL): each
/// row must be there exactly as often as the oracle has it.
const OUTPUTS: &[(&str, &str, &str)] = &[
    (
        "filter stream",
        "SELECT k, v, ts FROM tens WHERE k NOT LIKE 'zz%'",
        "SELECT k, v, ts FROM ev WHERE v % 10 = 0",
    ),
    (
        "stream-table join stream",
        "SELECT k, v, ts, grp FROM small_joined",
        "SELECT e.k, e.v, e.ts, d.grp FROM ev e JOIN dim d ON e.k = d.k WHERE e.v < 100",
    ),
];

/// A GROUP BY whose changelog topic is read back in offset order, and its
/// final counts by batch SQL.
const CHANGELOG: (&str, &str) = (
    "tens_per_key",
    "SELECT k, COUNT(*) FROM ev WHERE v % 10 = 0 GROUP BY k",
);

/// (what, pull query on the server, the same rows by DataFusion over the input).
const CHECKS: &[(&str, &str, &str)] = &[
    (
        "stream-table join + GROUP BY",
        "SELECT grp, n, s FROM by_grp",
        "SELECT d.grp, COUNT(*), SUM(e.v) FROM ev e JOIN dim d ON e.k = d.k GROUP BY d.grp",
    ),
    (
        "tumbling EMIT CHANGES",
        "SELECT k, CAST(windowstart AS BIGINT), CAST(windowend AS BIGINT), n, s FROM win_changes WHERE k NOT LIKE 'zz%'",
        "SELECT k, ts - ts % 10000, ts - ts % 10000 + 10000, COUNT(*), SUM(v) FROM ev GROUP BY k, ts - ts % 10000",
    ),
    (
        "tumbling EMIT FINAL",
        "SELECT k, CAST(windowstart AS BIGINT), CAST(windowend AS BIGINT), n, s, lo, hi FROM win_final WHERE k NOT LIKE 'zz%'",
        "SELECT k, ts - ts % 10000, ts - ts % 10000 + 10000, COUNT(*), SUM(v), MIN(v), MAX(v) FROM ev GROUP BY k, ts - ts % 10000",
    ),
    (
        "interval join + GROUP BY",
        "SELECT k, n, s FROM ij WHERE k NOT LIKE 'zz%'",
        "SELECT e.k, COUNT(*), SUM(c.v) FROM ev e JOIN clicks c \
         ON e.k = c.k AND c.ts >= e.ts - 2000 AND c.ts <= e.ts + 2000 GROUP BY e.k",
    ),
    (
        "GROUP BY",
        "SELECT k, n, s, lo, hi FROM per_key WHERE k NOT LIKE 'zz%'",
        "SELECT k, COUNT(*), SUM(v), MIN(v), MAX(v) FROM ev GROUP BY k",
    ),
];

/// One batch of events and clicks over the same stretch of event time. Events
/// are displaced by less than a second (the watermark delay is five), so none
/// is late in any order the two streams are read in.
fn batch(rng: &mut Rng, index: usize, clicks_per_batch: usize) -> (Vec<Event>, Vec<Event>) {
    let start = BASE_TS + (index * BATCH) as i64 * STEP_MS;
    let span = BATCH as i64 * STEP_MS;
    let events = (0..BATCH as i64)
        .map(|i| Event {
            k: format!("k{}", rng.below(KEYS)),
            v: rng.below(1000) as i64,
            ts: start + i * STEP_MS + rng.below(1000) as i64,
        })
        .collect();
    let clicks = (0..clicks_per_batch)
        .map(|_| Event {
            k: format!("k{}", rng.below(KEYS)),
            v: rng.below(100) as i64,
            ts: start + rng.below(span as u64) as i64,
        })
        .collect();
    (events, clicks)
}

fn insert(stream: &str, events: &[Event]) -> String {
    let values: Vec<String> = events
        .iter()
        .map(|e| format!("('{}', {}, {})", e.k, e.v, e.ts))
        .collect();
    format!(
        "INSERT INTO {stream} (k, v, ts) VALUES {};",
        values.join(", ")
    )
}

fn dim_table() -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("grp", DataType::Utf8, false),
    ]));
    let keys: Vec<String> = (0..DIM_KEYS).map(|i| format!("k{i}")).collect();
    let groups: Vec<String> = (0..DIM_KEYS).map(|i| format!("g{}", i % GROUPS)).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(keys)),
            Arc::new(StringArray::from(groups)),
        ],
    )
    .expect("dim batch");
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("dim table"))
}

/// Batch SQL's answers, with the queries they answer: the tables' rows, the
/// output streams' rows (sorted, duplicates kept) and the final count per key
/// of the changelog.
struct Oracle {
    tables: Vec<(&'static str, &'static str, BTreeSet<String>)>,
    outputs: Vec<(&'static str, &'static str, Vec<String>)>,
    counts: BTreeMap<String, i64>,
}

async fn oracle(scenario: &Scenario, events: &[Event], clicks: &[Event]) -> Oracle {
    let ctx = SessionContext::new();
    ctx.register_table("ev", events_table(events)).unwrap();
    ctx.register_table("clicks", events_table(clicks)).unwrap();
    ctx.register_table("dim", dim_table()).unwrap();
    let rows = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            text_rows(&batches, "|")
        }
    };
    let mut tables = Vec::new();
    for (what, pull, sql) in scenario.tables {
        tables.push((*what, *pull, rows(sql).await.into_iter().collect()));
    }
    let mut outputs = Vec::new();
    for (what, pull, sql) in scenario.outputs {
        let mut r = rows(sql).await;
        r.sort();
        outputs.push((*what, *pull, r));
    }
    let counts = rows(CHANGELOG.1)
        .await
        .into_iter()
        .map(|row| {
            let (k, n) = row.split_once('|').expect("k|n");
            (k.to_string(), n.parse().expect("count"))
        })
        .collect();
    Oracle {
        tables,
        outputs,
        counts,
    }
}

/// Rows of `rows` in the oracle's text form, in the order they came.
fn text_list(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|row| {
            row.as_array()
                .expect("row array")
                .iter()
                .map(|v| match v {
                    serde_json::Value::Null => "NULL".to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// What is wrong with the output streams, if anything: each row must be
/// there as often as batch SQL has it.
async fn output_mismatches(server: &TestServer, want: &Oracle) -> Vec<String> {
    let mut out = Vec::new();
    for (what, sql, want) in &want.outputs {
        match server.try_pull(sql).await {
            Ok(rows) => {
                let mut got = text_list(&rows);
                got.sort();
                if got != *want {
                    let mut seen = BTreeSet::new();
                    let twice: Vec<&String> =
                        got.iter().filter(|r| !seen.insert(*r)).take(3).collect();
                    let got_set: BTreeSet<&String> = got.iter().collect();
                    let want_set: BTreeSet<&String> = want.iter().collect();
                    let missing: Vec<_> = want_set.difference(&got_set).take(3).collect();
                    out.push(format!(
                        "{what}: {} rows, oracle {}; twice {twice:?}; missing {missing:?}",
                        got.len(),
                        want.len()
                    ));
                }
            }
            Err(e) => out.push(format!("{what}: {e}")),
        }
    }
    out
}

/// Reads the GROUP BY's changelog topic from the stopped server's local log
/// in offset order: each key's count must only rise (an update written twice
/// shows as a count that repeats or falls back) and end at batch SQL's.
async fn changelog_mismatches(data_dir: &std::path::Path, want: &Oracle) -> Vec<String> {
    use sluice::connectors::local_log::LocalLog;
    use sluice::connectors::{LogBackend, StartFrom};
    let log = LocalLog::open(&data_dir.join("log")).expect("open the local log");
    let mut reader = log
        .reader(CHANGELOG.0, StartFrom::Earliest)
        .await
        .expect("read the changelog");
    let mut records = Vec::new();
    loop {
        let got = reader
            .poll(100_000, Duration::from_millis(50))
            .await
            .expect("poll");
        if got.is_empty() && reader.caught_up().await.expect("caught up") {
            break;
        }
        records.extend(got);
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut out = Vec::new();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for r in &records {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        if key.starts_with(FLUSH_PREFIX) {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_slice(r.value.as_deref().unwrap_or_default()).expect("JSON value");
        let n = value["n"].as_i64().expect("n");
        if let Some(before) = last.insert(key.clone(), n) {
            if before >= n && out.len() < 5 {
                out.push(format!(
                    "changelog: key {key} went from {before} to {n} (partition {}, offset {})",
                    r.partition, r.offset
                ));
            }
        }
    }
    if last != want.counts {
        out.push(format!(
            "changelog: last counts of {} keys, oracle {}; first differences {:?}",
            last.len(),
            want.counts.len(),
            want.counts
                .iter()
                .filter(|(k, n)| last.get(*k) != Some(n))
                .take(3)
                .map(|(k, n)| (k, n, last.get(k)))
                .collect::<Vec<_>>()
        ));
    }
    out
}

/// Pulled rows in the oracle's text form.
fn text(rows: &[serde_json::Value]) -> BTreeSet<String> {
    text_list(rows).into_iter().collect()
}

/// The first differences between a result and its oracle, for the failure message.
fn diff(got: &BTreeSet<String>, want: &BTreeSet<String>) -> String {
    let missing: Vec<_> = want.difference(got).take(5).collect();
    let extra: Vec<_> = got.difference(want).take(5).collect();
    format!(
        "{} rows, oracle {}; missing {missing:?}; unexpected {extra:?}",
        got.len(),
        want.len()
    )
}

async fn mismatches(server: &TestServer, want: &Oracle) -> Vec<String> {
    let mut out = Vec::new();
    for (what, sql, want) in &want.tables {
        match server.try_pull(sql).await {
            Ok(rows) => {
                let got = text(&rows);
                if &got != want {
                    out.push(format!("{what}: {}", diff(&got, want)));
                }
            }
            Err(e) => out.push(format!("{what}: {e}")),
        }
    }
    if out.is_empty() {
        out = output_mismatches(server, want).await;
    }
    out
}

/// Polls until every table and output equals its oracle; panics with the
/// differences after `timeout`.
async fn converge(server: &TestServer, want: &Oracle, timeout: Duration, when: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        let wrong = mismatches(server, want).await;
        if wrong.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{when}: results differ from batch SQL after {timeout:?}:\n{}\n{}",
                wrong.join("\n"),
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn kill_and_restart(server: &mut TestServer) {
    tokio::task::block_in_place(|| {
        server.kill9();
        server.restart();
    });
}

/// Every query kind, 200,000 events and 40,000 clicks, 11 kills in the flow.
const EVERY_QUERY: Scenario = Scenario {
    ddl: DDL,
    tables: CHECKS,
    outputs: OUTPUTS,
    changelog: true,
    events: 200_000,
    clicks_per_batch: 200,
    kills: 11,
};

/// Issue #13's loop: 1,000,000 records through a filter stream, an
/// aggregate table and a stream–table join, 20 kills in the flow.
const EXACTLY_ONCE: Scenario = Scenario {
    ddl: "
CREATE STREAM ev (k VARCHAR KEY, v BIGINT, ts BIGINT)
  WITH (kafka_topic='ev', value_format='json', timestamp='ts', partitions=3);
CREATE TABLE dim (k VARCHAR PRIMARY KEY, grp VARCHAR)
  WITH (kafka_topic='dim', value_format='json', partitions=2);
CREATE STREAM tens WITH (kafka_topic='tens') AS
  SELECT k, v, ts FROM ev WHERE v % 10 = 0;
CREATE STREAM small_joined WITH (kafka_topic='small_joined') AS
  SELECT e.k, e.v, e.ts, d.grp FROM ev e JOIN dim d ON e.k = d.k WHERE e.v < 100;
CREATE TABLE tens_per_key WITH (kafka_topic='tens_per_key') AS
  SELECT k, COUNT(*) AS n FROM ev WHERE v % 10 = 0 GROUP BY k;
",
    tables: &[(
        "aggregate table",
        "SELECT k, n FROM tens_per_key WHERE k NOT LIKE 'zz%'",
        "SELECT k, COUNT(*) FROM ev WHERE v % 10 = 0 GROUP BY k",
    )],
    outputs: OUTPUTS,
    changelog: true,
    events: 1_000_000,
    clicks_per_batch: 0,
    kills: 20,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_in_a_loop_keeps_every_result_exact() {
    crash_loop(&[], &EVERY_QUERY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_in_a_million_records_leave_each_output_row_once() {
    crash_loop(&[], &EXACTLY_ONCE).await;
}

/// The same loop over the test broker (Tansu) instead of the local log. Not in
/// the suite (it takes several minutes); run once per version with
/// `cargo test --test crash_loop -- --ignored` (docs/testing.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run once per version against the test broker"]
async fn kill_nine_in_a_loop_over_kafka_keeps_every_result_exact() {
    let broker = TestBroker::start();
    // Output is exactly-once on Kafka too, but the test broker shows records
    // of aborted transactions to read_committed readers, so the output
    // cannot be checked against it (KAFKA_TEST_BROKER.md).
    let at_least_once = Scenario {
        outputs: &[],
        changelog: false,
        ..EVERY_QUERY
    };
    crash_loop(&["--kafka-brokers", &broker.addr], &at_least_once).await;
}

async fn crash_loop(backend_args: &[&str], scenario: &Scenario) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--checkpoint-interval-ms", "300"];
    args.extend_from_slice(backend_args);
    let server = TestServer::start(&dir.path().join("data"), &args);
    server.ksql_ok(scenario.ddl).await;
    let dim: Vec<String> = (0..DIM_KEYS)
        .map(|i| format!("('k{i}', 'g{}')", i % GROUPS))
        .collect();
    server
        .ksql_ok(&format!(
            "INSERT INTO dim (k, grp) VALUES {};",
            dim.join(", ")
        ))
        .await;

    let mut rng = Rng::new(0x5eed_c4a5);
    let batches: Vec<(Vec<Event>, Vec<Event>)> = (0..scenario.events / BATCH)
        .map(|i| batch(&mut rng, i, scenario.clicks_per_batch))
        .collect();
    let events: Vec<Event> = batches.iter().flat_map(|(e, _)| e.clone()).collect();
    let clicks: Vec<Event> = batches.iter().flat_map(|(_, c)| c.clone()).collect();
    let want = oracle(scenario, &events, &clicks).await;
    let events_total = scenario.events;

    let total_batches = batches.len();
    let server = Arc::new(Mutex::new(server));
    let sent = Arc::new(AtomicUsize::new(0));
    let with_clicks = scenario.clicks_per_batch > 0;
    let producer = {
        let (server, sent) = (server.clone(), sent.clone());
        tokio::spawn(async move {
            for (events, clicks) in &batches {
                let mut statements = insert("ev", events);
                if !clicks.is_empty() {
                    statements = format!("{statements}\n{}", insert("clicks", clicks));
                }
                server.lock().await.ksql_ok(&statements).await;
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            // Far-future events on many keys (so on every partition) close every window.
            let last = BASE_TS + (events_total as i64 + 2_000) * STEP_MS;
            let flush: Vec<Event> = (0..16)
                .map(|i| Event {
                    k: format!("{FLUSH_PREFIX}{i}"),
                    v: 0,
                    ts: last + 3_600_000,
                })
                .collect();
            let mut statements = insert("ev", &flush);
            if with_clicks {
                statements = format!("{statements}\n{}", insert("clicks", &flush));
            }
            server.lock().await.ksql_ok(&statements).await;
        })
    };

    // Kills spread over the input (one per stretch of batches, however fast
    // the backend takes inserts), each at a random moment after its stretch
    // was sent, while the queries work through it; one more while they catch
    // up after the last insert.
    let mut kill_rng = Rng::new(0xdead_0009);
    let mut kills = 0;
    for k in 1..=scenario.kills {
        let due = k * total_batches / scenario.kills;
        while sent.load(Ordering::Relaxed) < due && !producer.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(kill_rng.below(800))).await;
        kill_and_restart(&mut *server.lock().await);
        kills += 1;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the crash loop takes too long ({kills} kills so far)"
        );
    }
    producer.await.expect("producer");

    let mut server = server.lock().await;
    converge(
        &server,
        &want,
        Duration::from_secs(180),
        &format!("after {kills} kills"),
    )
    .await;
    // Give a double count the chance to appear, then check once more.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let wrong = mismatches(&server, &want).await;
    assert!(wrong.is_empty(), "after settling: {}", wrong.join("\n"));

    // State restored from the last checkpoint, plus replay, is still exact.
    kill_and_restart(&mut server);
    converge(
        &server,
        &want,
        Duration::from_secs(60),
        "after the last kill",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let wrong = mismatches(&server, &want).await;
    assert!(
        wrong.is_empty(),
        "after the last kill, settled: {}",
        wrong.join("\n")
    );

    if scenario.changelog {
        server.stop();
        let wrong = changelog_mismatches(&dir.path().join("data"), &want).await;
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
