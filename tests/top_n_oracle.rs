//! Differential oracle for Top-N: random events (arriving out of order, across
//! a restart) through ROW_NUMBER() rankings per key, per key ascending, and over
//! the whole stream; each materialized result must equal DataFusion's batch
//! ROW_NUMBER() over the same events. Times are distinct, and every ORDER BY ends
//! with the time, so there are no ties to break differently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use sluice::engine::{Engine, Session, StatementResult};

#[path = "support/oracle.rs"]
mod oracle;
use oracle::{engine_config, events_table, produce, text_rows, Event, Rng};

/// (table, continuous query, batch SQL giving the same rows).
const RANKINGS: &[(&str, &str, &str)] = &[
    (
        "top3",
        "CREATE TABLE top3 AS SELECT k, rn, v, ts FROM \
         (SELECT k, v, ts, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, ts) AS rn FROM ev) t \
         WHERE rn <= 3",
        "SELECT k, rn, v, ts FROM \
         (SELECT k, v, ts, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, ts) AS rn FROM ev) t \
         WHERE rn <= 3",
    ),
    (
        "lowest",
        "CREATE TABLE lowest AS SELECT k, v, ts FROM \
         (SELECT k, v, ts, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v, ts DESC) AS rn FROM ev) t \
         WHERE rn = 1",
        "SELECT k, v, ts FROM \
         (SELECT k, v, ts, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v, ts DESC) AS rn FROM ev) t \
         WHERE rn = 1",
    ),
    (
        "top5",
        "CREATE TABLE top5 AS SELECT rn, k, v, ts FROM \
         (SELECT k, v, ts, ROW_NUMBER() OVER (ORDER BY v DESC, ts) AS rn FROM ev) t \
         WHERE rn < 6",
        "SELECT rn, k, v, ts FROM \
         (SELECT k, v, ts, ROW_NUMBER() OVER (ORDER BY v DESC, ts) AS rn FROM ev) t \
         WHERE rn < 6",
    ),
];

/// Distinct times, shuffled a little.
fn events(rng: &mut Rng, n: usize) -> Vec<Event> {
    let mut out: Vec<(u64, Event)> = (0..n)
        .map(|i| {
            let e = Event {
                k: format!("k{}", rng.below(12)),
                v: rng.below(500) as i64,
                ts: 1_700_000_000_000 + i as i64 * 10,
            };
            (i as u64 + rng.below(30), e)
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    out.into_iter().map(|(_, e)| e).collect()
}

async fn pull(engine: &Engine, session: &mut Session, sql: &str) -> Vec<String> {
    match engine.execute(session, sql).await.pop() {
        Some(Ok(StatementResult::Rows { batches, .. })) => text_rows(&batches, "|"),
        other => panic!("{sql}: {other:?}"),
    }
}

async fn start(dir: &std::path::Path) -> Arc<Engine> {
    Engine::start(engine_config(dir)).await.expect("engine")
}

async fn batch_result(events: &[Event], sql: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    ctx.register_table("ev", events_table(events)).unwrap();
    text_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap(), "|")
}

async fn write(engine: &Engine, events: &[Event]) {
    let mut writer = engine.backend().writer("ev").await.unwrap();
    for part in events.chunks(40) {
        writer.send(produce(part)).await.unwrap();
        writer.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn check_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed);
    let all = events(&mut rng, 600);
    let (first, second) = all.split_at(350);

    let engine = start(dir.path()).await;
    let mut session = Session::new();
    let ddl = std::iter::once(
        "CREATE STREAM ev (k VARCHAR KEY, v BIGINT, ts BIGINT) WITH (kafka_topic='ev', value_format='json', timestamp='ts', partitions=2)",
    )
    .chain(RANKINGS.iter().map(|(_, q, _)| *q));
    for sql in ddl {
        for r in engine.execute(&mut session, sql).await {
            r.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    write(&engine, first).await;
    // Wait for the first part to be ranked, then restart: the rankings continue
    // from their checkpointed state.
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = batch_result(first, RANKINGS[0].2).await;
    while pull(&engine, &mut session, "SELECT k, rn, v, ts FROM top3").await != want {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: top3 of the first part"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.shutdown().await;
    drop(engine);

    let engine = start(dir.path()).await;
    let mut session = Session::new();
    write(&engine, second).await;
    for (name, _, batch_sql) in RANKINGS {
        let want = batch_result(&all, batch_sql).await;
        assert!(want.len() >= 5, "{name}: {} rows", want.len());
        let columns = batch_sql
            .split(" FROM ")
            .next()
            .and_then(|s| s.strip_prefix("SELECT "))
            .unwrap();
        let sql = format!("SELECT {columns} FROM {name}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = pull(&engine, &mut session, &sql).await;
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {seed}, {name}: got {got:?}, batch SQL {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankings_equal_batch_row_number() {
    for seed in [1, 2, 3] {
        check_seed(seed).await;
    }
}
