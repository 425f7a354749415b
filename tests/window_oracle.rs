//! Differential oracle for windowed aggregation: random events, shuffled out of
//! order within the allowed lateness, go through tumbling, hopping, session and
//! cumulating queries (EMIT FINAL); once every window has closed, each
//! materialized table must equal DataFusion batch SQL over the same events. Then
//! events later than the grace period are sent: they must change nothing, be
//! counted in /metrics, and land in the late topic.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use sluice::engine::{Engine, Session, StatementResult};

#[path = "support/oracle.rs"]
mod oracle;
use oracle::{engine_config, events_table, produce, text_rows, Event, Rng};

/// Watermark delay: events arrive at most this much out of order, so none is late.
const DELAY_MS: i64 = 10_000;
const FLUSH_KEY: &str = "zz_flush";

/// Events in arrival order: increasing event time, then displaced by up to
/// `DELAY_MS` - 1 s so arrival is out of order but never beyond the watermark.
fn events(seed: u64, n: usize) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut t = 1_700_000_000_000i64;
    let mut out: Vec<(i64, Event)> = Vec::with_capacity(n);
    for _ in 0..n {
        // Irregular gaps, sometimes long enough to split sessions.
        t += match rng.below(10) {
            0 => 8_000 + rng.below(4_000) as i64,
            _ => rng.below(800) as i64,
        };
        let e = Event {
            k: format!("k{}", rng.below(5)),
            v: rng.below(1000) as i64 - 200,
            ts: t,
        };
        let arrival = t + rng.below((DELAY_MS - 1_000) as u64) as i64;
        out.push((arrival, e));
    }
    out.sort_by_key(|(a, _)| *a);
    out.into_iter().map(|(_, e)| e).collect()
}

const QUERIES: &[(&str, &str)] = &[
    (
        "tumbling",
        "CREATE TABLE tumbling WITH (late_topic='late_events') AS SELECT k, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi \
         FROM ev WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 2 SECONDS) GROUP BY k EMIT FINAL",
    ),
    (
        "hopping",
        "CREATE TABLE hopping AS SELECT k, window_start AS windowstart, window_end AS windowend, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi \
         FROM HOP(ev, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) GROUP BY k, window_start, window_end EMIT FINAL",
    ),
    (
        "sessions",
        "CREATE TABLE sessions AS SELECT k, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi \
         FROM ev WINDOW SESSION (7 SECONDS) GROUP BY k EMIT FINAL",
    ),
    (
        "cumulative",
        "CREATE TABLE cumulative AS SELECT k, window_start AS windowstart, window_end AS windowend, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi \
         FROM CUMULATE(ev, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) GROUP BY k, window_start, window_end EMIT FINAL",
    ),
];

/// The same results, computed by DataFusion in batch over all events.
const ORACLES: &[(&str, &str)] = &[
    (
        "tumbling",
        "SELECT k, ts - ts % 10000 AS ws, ts - ts % 10000 + 10000 AS we, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi \
         FROM ev GROUP BY k, ts - ts % 10000",
    ),
    (
        "hopping",
        "SELECT k, ws, ws + 20000 AS we, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi FROM \
         (SELECT k, v, ts, ts - ts % 5000 - o.i * 5000 AS ws FROM ev CROSS JOIN (VALUES (0), (1), (2), (3)) AS o(i)) w \
         WHERE ws + 20000 > ts GROUP BY k, ws",
    ),
    (
        "sessions",
        "SELECT k, MIN(ts) AS ws, MAX(ts) + 7000 AS we, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi FROM \
         (SELECT k, v, ts, SUM(new_session) OVER (PARTITION BY k ORDER BY ts, v ROWS UNBOUNDED PRECEDING) AS sid FROM \
           (SELECT k, v, ts, CASE WHEN ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts, v) < 7000 THEN 0 ELSE 1 END AS new_session FROM ev) a) b \
         GROUP BY k, sid",
    ),
    (
        "cumulative",
        "SELECT k, ts - ts % 20000 AS ws, ts - ts % 20000 + o.j * 5000 AS we, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi \
         FROM ev CROSS JOIN (VALUES (1), (2), (3), (4)) AS o(j) \
         WHERE ts - ts % 20000 + o.j * 5000 > ts GROUP BY k, ts - ts % 20000, o.j",
    ),
];

fn rows(batches: &[RecordBatch]) -> BTreeSet<String> {
    text_rows(batches, "|").into_iter().collect()
}

async fn pull(engine: &Engine, session: &mut Session, sql: &str) -> BTreeSet<String> {
    match engine.execute(session, sql).await.pop() {
        Some(Ok(StatementResult::Rows { batches, .. })) => rows(&batches),
        other => panic!("{sql}: {other:?}"),
    }
}

async fn oracle(events: &[Event]) -> Vec<(String, BTreeSet<String>)> {
    let ctx = SessionContext::new();
    ctx.register_table("ev", events_table(events)).unwrap();
    let mut out = Vec::new();
    for (name, sql) in ORACLES {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        out.push((name.to_string(), rows(&batches)));
    }
    out
}

fn metric(text: &str, name: &str, query: &str) -> u64 {
    let prefix = format!("{name}{{query=\"{query}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn check_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(engine_config(dir.path())).await.unwrap();
    let mut session = Session::new();
    let ddl = format!(
        "CREATE STREAM ev (k VARCHAR KEY, v BIGINT, ts BIGINT) WITH (kafka_topic='ev', value_format='json', timestamp='ts', watermark_delay='{DELAY_MS} ms')"
    );
    for sql in std::iter::once(ddl.as_str()).chain(QUERIES.iter().map(|(_, q)| *q)) {
        for r in engine.execute(&mut session, sql).await {
            r.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    let events = events(seed, 1500);
    let mut writer = engine.backend().writer("ev").await.unwrap();
    // Several writes, so the queries see several chunks and watermarks in between.
    for part in events.chunks(100) {
        writer.send(produce(part)).await.unwrap();
        writer.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An event far ahead moves the watermark past every window of the test data.
    let last = events.iter().map(|e| e.ts).max().unwrap();
    let flush = Event {
        k: FLUSH_KEY.into(),
        v: 0,
        ts: last + 3_600_000,
    };
    writer
        .send(produce(std::slice::from_ref(&flush)))
        .await
        .unwrap();
    writer.flush().await.unwrap();

    let expected = oracle(&events).await;
    for (name, want) in &expected {
        let sql = format!(
            "SELECT k, CAST(windowstart AS BIGINT), CAST(windowend AS BIGINT), n, s, lo, hi FROM {name} WHERE k <> '{FLUSH_KEY}'"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = pull(&engine, &mut session, &sql).await;
            if &got == want {
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<_> = want.difference(&got).take(5).collect();
                let extra: Vec<_> = got.difference(want).take(5).collect();
                panic!(
                    "seed {seed}, {name}: {} rows, oracle {}; missing {missing:?}; unexpected {extra:?}",
                    got.len(),
                    want.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Every window of the test data closed, so its state is gone: what is left is
    // the flush event's own windows (at most 4 hopping or cumulating windows).
    let text = engine.metrics_text();
    for line in text
        .lines()
        .filter(|l| l.starts_with("sluice_query_state_entries{"))
    {
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(
            n <= 4,
            "seed {seed}: state not freed when windows closed: {line}"
        );
    }

    // Late: older than every closed window (end + grace below the watermark).
    let late: Vec<Event> = (0..7)
        .map(|i| Event {
            k: "k1".into(),
            v: 1_000_000,
            ts: events[0].ts + i,
        })
        .collect();
    writer.send(produce(&late)).await.unwrap();
    writer.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = engine.metrics_text();
        let counted: Vec<u64> = QUERIES
            .iter()
            .map(|(name, _)| {
                let id = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("sluice_query_late_records_total{query=\"")
                            .and_then(|rest| rest.split('"').next())
                            .filter(|id| id.to_ascii_lowercase().contains(name))
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                metric(&text, "sluice_query_late_records_total", &id)
            })
            .collect();
        if counted.iter().all(|&c| c == late.len() as u64) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "seed {seed}: late events counted per query {counted:?}, expected {} each",
                late.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // They changed nothing ...
    for (name, want) in &expected {
        let sql = format!(
            "SELECT k, CAST(windowstart AS BIGINT), CAST(windowend AS BIGINT), n, s, lo, hi FROM {name} WHERE k <> '{FLUSH_KEY}'"
        );
        assert_eq!(
            &pull(&engine, &mut session, &sql).await,
            want,
            "seed {seed}, {name} after late events"
        );
    }
    // ... and the tumbling query wrote them to its late topic, unchanged.
    for r in engine
        .execute(
            &mut session,
            "CREATE STREAM late_ev (k VARCHAR KEY, v BIGINT, ts BIGINT) WITH (kafka_topic='late_events', value_format='json')",
        )
        .await
    {
        r.unwrap();
    }
    let want: BTreeSet<String> = late
        .iter()
        .map(|e| format!("{}|{}|{}", e.k, e.v, e.ts))
        .collect();
    // Late events are output too: visible once their checkpoint commits.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = pull(&engine, &mut session, "SELECT k, v, ts FROM late_ev").await;
        if got == want || Instant::now() > deadline {
            assert_eq!(got, want, "seed {seed}: late topic");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_results_equal_batch_sql() {
    for seed in [1, 2, 3] {
        check_seed(seed).await;
    }
}
