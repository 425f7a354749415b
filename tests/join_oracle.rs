//! Differential oracle for joins. Stream-stream: random events on two streams,
//! out of order within the watermark delay, through INNER, LEFT and FULL
//! interval joins; once both watermarks have passed every interval, each result
//! stream must equal DataFusion batch SQL over the same events, the join state
//! must be freed, and events later than the grace period must be dropped and
//! counted. Table-table: random upserts and deletes on two tables through
//! foreign-key, outer and many-to-many joins; the materialized results must
//! equal a batch join of the tables' final contents.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::prelude::SessionContext;
use sluice::connectors::OutRecord;
use sluice::engine::{Engine, Session, StatementResult};

#[path = "support/oracle.rs"]
mod oracle;
use oracle::{engine_config, events_table, produce, text_rows, Event, Rng};

const DELAY_MS: i64 = 5_000;
const FLUSH_KEY: &str = "zz_flush";

/// Rows as sorted text lines (a multiset: joins may repeat a row).
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    text_rows(batches, "|")
}

async fn pull(engine: &Engine, session: &mut Session, sql: &str) -> Vec<String> {
    match engine.execute(session, sql).await.pop() {
        Some(Ok(StatementResult::Rows { batches, .. })) => rows(&batches),
        other => panic!("{sql}: {other:?}"),
    }
}

async fn execute_all(engine: &Engine, session: &mut Session, statements: &[String]) {
    for sql in statements {
        for r in engine.execute(session, sql).await {
            r.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

/// Polls `sql` until it returns `want`.
async fn expect_rows(
    engine: &Engine,
    session: &mut Session,
    sql: &str,
    want: &[String],
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = pull(engine, session, sql).await;
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
            panic!(
                "{what}: {} rows, oracle {}; missing {missing:?}; unexpected {extra:?}",
                got.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- streams

/// Events in arrival order: increasing event time displaced by less than the
/// watermark delay, so none is late.
fn events(rng: &mut Rng, n: usize) -> Vec<Event> {
    let mut t = 1_700_000_000_000i64;
    let mut out: Vec<(i64, Event)> = Vec::with_capacity(n);
    for _ in 0..n {
        t += match rng.below(10) {
            0 => 4_000 + rng.below(4_000) as i64,
            _ => rng.below(700) as i64,
        };
        let e = Event {
            k: format!("k{}", rng.below(6)),
            v: rng.below(1000) as i64,
            ts: t,
        };
        out.push((t + rng.below((DELAY_MS - 1_000) as u64) as i64, e));
    }
    out.sort_by_key(|(a, _)| *a);
    out.into_iter().map(|(_, e)| e).collect()
}

/// (name, continuous query, batch SQL giving the same rows). Columns: left key,
/// right key, left value, right value, left time, right time.
const STREAM_JOINS: &[(&str, &str, &str)] = &[
    (
        "j_inner",
        "CREATE STREAM j_inner AS SELECT l.k AS lk, r.k AS rk, l.v AS lv, r.v AS rv, l.ts AS lts, r.ts AS rts \
         FROM l JOIN r WITHIN (2 SECONDS, 3 SECONDS) ON l.k = r.k",
        "SELECT l.k, r.k, l.v, r.v, l.ts, r.ts FROM l JOIN r ON l.k = r.k AND r.ts >= l.ts - 2000 AND r.ts <= l.ts + 3000",
    ),
    (
        "j_left",
        "CREATE STREAM j_left AS SELECT l.k AS lk, r.k AS rk, l.v AS lv, r.v AS rv, l.ts AS lts, r.ts AS rts \
         FROM l LEFT JOIN r WITHIN (2 SECONDS, 3 SECONDS) ON l.k = r.k",
        "SELECT l.k, r.k, l.v, r.v, l.ts, r.ts FROM l LEFT JOIN r ON l.k = r.k AND r.ts >= l.ts - 2000 AND r.ts <= l.ts + 3000",
    ),
    (
        "j_full",
        "CREATE STREAM j_full AS SELECT l.k AS lk, r.k AS rk, l.v AS lv, r.v AS rv, l.ts AS lts, r.ts AS rts \
         FROM l FULL OUTER JOIN r ON l.k = r.k AND r.ts BETWEEN l.ts - 1000 AND l.ts + 1500 AND r.v > l.v - 500",
        "SELECT l.k, r.k, l.v, r.v, l.ts, r.ts FROM l FULL OUTER JOIN r ON l.k = r.k AND r.ts >= l.ts - 1000 AND r.ts <= l.ts + 1500 AND r.v > l.v - 500",
    ),
];

async fn stream_oracle(left: &[Event], right: &[Event]) -> Vec<Vec<String>> {
    let ctx = SessionContext::new();
    for (name, events) in [("l", left), ("r", right)] {
        ctx.register_table(name, events_table(events)).unwrap();
    }
    let mut out = Vec::new();
    for (_, _, sql) in STREAM_JOINS {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        out.push(rows(&batches));
    }
    out
}

fn state_entries(text: &str, query_part: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("sluice_query_state_entries{"))
        .filter(|l| l.to_ascii_lowercase().contains(query_part))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

fn late_records(text: &str, query_part: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("sluice_query_late_records_total{"))
        .filter(|l| l.to_ascii_lowercase().contains(query_part))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

async fn check_stream_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(engine_config(dir.path())).await.unwrap();
    let mut session = Session::new();
    let mut statements: Vec<String> = ["l", "r"]
        .iter()
        .map(|s| format!(
            "CREATE STREAM {s} (k VARCHAR KEY, v BIGINT, ts BIGINT) WITH (kafka_topic='{s}', value_format='json', timestamp='ts', watermark_delay='{DELAY_MS} ms', partitions=2)"
        ))
        .collect();
    statements.extend(STREAM_JOINS.iter().map(|(_, q, _)| q.to_string()));
    execute_all(&engine, &mut session, &statements).await;

    let mut rng = Rng::new(seed);
    let left = events(&mut rng, 600);
    let right = events(&mut rng, 600);
    let mut writers = [
        engine.backend().writer("l").await.unwrap(),
        engine.backend().writer("r").await.unwrap(),
    ];
    // Small interleaved writes with pauses, so the joins see the two sides'
    // chunks and watermarks alternate (rows expire between the writes).
    for (l, r) in left.chunks(20).zip(right.chunks(20)) {
        for (w, part) in writers.iter_mut().zip([l, r]) {
            w.send(produce(part)).await.unwrap();
            w.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    // Both sides move far ahead: every interval of the test data closes.
    let last = left.iter().chain(&right).map(|e| e.ts).max().unwrap();
    let flush = Event {
        k: FLUSH_KEY.into(),
        v: 0,
        ts: last + 3_600_000,
    };
    for w in writers.iter_mut() {
        w.send(produce(std::slice::from_ref(&flush))).await.unwrap();
        w.flush().await.unwrap();
    }
    let expected = stream_oracle(&left, &right).await;
    for ((name, _, _), want) in STREAM_JOINS.iter().zip(&expected) {
        let sql = format!(
            "SELECT lk, rk, lv, rv, lts, rts FROM {name} WHERE COALESCE(lk, rk) <> '{FLUSH_KEY}'"
        );
        expect_rows(
            &engine,
            &mut session,
            &sql,
            want,
            &format!("seed {seed}, {name}"),
        )
        .await;
    }
    // Only the flush rows stay buffered: everything else can no longer match.
    // An inner join's rows can all be there before the flush rows' watermark
    // has been processed, so wait for the expiry rather than sample once.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, _, _) in STREAM_JOINS {
        loop {
            let n = state_entries(&engine.metrics_text(), name);
            if n <= 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {seed}, {name}: {n} rows still buffered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Late rows (far behind both watermarks) change nothing and are counted.
    let late: Vec<Event> = (0..5)
        .map(|i| Event {
            k: "k1".into(),
            v: 1,
            ts: left[0].ts + i,
        })
        .collect();
    writers[0].send(produce(&late)).await.unwrap();
    writers[0].flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = engine.metrics_text();
        let counted: Vec<u64> = STREAM_JOINS
            .iter()
            .map(|(name, _, _)| late_records(&text, name))
            .collect();
        if counted.iter().all(|&c| c == late.len() as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: late rows counted {counted:?}, expected {} each",
            late.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for ((name, _, _), want) in STREAM_JOINS.iter().zip(&expected) {
        let sql = format!(
            "SELECT lk, rk, lv, rv, lts, rts FROM {name} WHERE COALESCE(lk, rk) <> '{FLUSH_KEY}'"
        );
        assert_eq!(
            &pull(&engine, &mut session, &sql).await,
            want,
            "seed {seed}, {name} after late rows"
        );
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stream_joins_equal_batch_sql() {
    for seed in [1, 2, 3] {
        check_stream_seed(seed).await;
    }
}

// ----------------------------------------------------------------- tables

/// Random upserts and deletes; returns the records and each table's final rows.
fn table_changes(
    rng: &mut Rng,
    n: usize,
    ids: u64,
    value: impl Fn(&mut Rng) -> String,
) -> (Vec<OutRecord>, BTreeMap<String, String>) {
    let mut records = Vec::with_capacity(n);
    let mut current = BTreeMap::new();
    for _ in 0..n {
        let id = format!("id{}", rng.below(ids));
        let v = if rng.below(5) == 0 {
            current.remove(&id);
            None
        } else {
            let v = value(rng);
            current.insert(id.clone(), v.clone());
            Some(Bytes::from(v))
        };
        records.push(OutRecord {
            partition: None,
            timestamp: 0,
            key: Some(Bytes::from(id)),
            value: v,
        });
    }
    (records, current)
}

const TABLE_JOINS: &[(&str, &str, &str)] = &[
    (
        "t_fk",
        "CREATE TABLE t_fk AS SELECT a.id AS aid, a.x, b.y FROM a JOIN b ON a.fk = b.id",
        "SELECT a.id, a.x, b.y FROM a JOIN b ON a.fk = b.id",
    ),
    (
        "t_left",
        "CREATE TABLE t_left AS SELECT a.id AS aid, a.x, b.y FROM a LEFT JOIN b ON a.fk = b.id",
        "SELECT a.id, a.x, b.y FROM a LEFT JOIN b ON a.fk = b.id",
    ),
    (
        "t_full",
        "CREATE TABLE t_full AS SELECT a.id AS aid, b.id AS bid, a.x, b.y FROM a FULL OUTER JOIN b ON a.fk = b.id",
        "SELECT a.id, b.id, a.x, b.y FROM a FULL OUTER JOIN b ON a.fk = b.id",
    ),
    (
        "t_many",
        "CREATE TABLE t_many AS SELECT a1.id AS id1, a2.id AS id2, a1.x AS x1, a2.x AS x2 FROM a a1 JOIN a a2 ON a1.fk = a2.fk",
        "SELECT a1.id, a2.id, a1.x, a2.x FROM a a1 JOIN a a2 ON a1.fk = a2.fk",
    ),
];

/// With `restart`, the server stops halfway through the changes and the joins
/// carry on from their checkpointed tables.
async fn check_table_seed(seed: u64, restart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::start(engine_config(dir.path())).await.unwrap();
    let mut session = Session::new();
    let mut statements = vec![
        "CREATE TABLE a (id VARCHAR PRIMARY KEY, fk VARCHAR, x BIGINT) WITH (kafka_topic='a', value_format='json', partitions=3)".to_string(),
        "CREATE TABLE b (id VARCHAR PRIMARY KEY, y BIGINT) WITH (kafka_topic='b', value_format='json')".to_string(),
    ];
    statements.extend(TABLE_JOINS.iter().map(|(_, q, _)| q.to_string()));
    execute_all(&engine, &mut session, &statements).await;

    let mut rng = Rng::new(seed + 100);
    let (a_records, a_final) = table_changes(&mut rng, 400, 30, |rng| {
        let fk = match rng.below(8) {
            0 => "null".to_string(),
            n => format!("\"id{}\"", n - 1),
        };
        format!(r#"{{"fk": {fk}, "x": {}}}"#, rng.below(100))
    });
    let (b_records, b_final) = table_changes(&mut rng, 150, 8, |rng| {
        format!(r#"{{"y": {}}}"#, rng.below(100))
    });
    let mut wa = engine.backend().writer("a").await.unwrap();
    let mut wb = engine.backend().writer("b").await.unwrap();
    let mut b_iter = b_records.chunks(15);
    for (i, a_part) in a_records.chunks(40).enumerate() {
        if restart && i == 5 {
            drop((wa, wb));
            engine.shutdown().await;
            drop(engine);
            engine = oracle::restart_engine(&engine_config(dir.path())).await;
            session = Session::new();
            wa = engine.backend().writer("a").await.unwrap();
            wb = engine.backend().writer("b").await.unwrap();
        }
        wa.send(a_part.to_vec()).await.unwrap();
        wa.flush().await.unwrap();
        if let Some(b_part) = b_iter.next() {
            wb.send(b_part.to_vec()).await.unwrap();
            wb.flush().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for b_part in b_iter {
        wb.send(b_part.to_vec()).await.unwrap();
        wb.flush().await.unwrap();
    }

    // The batch join of the final tables.
    let ctx = SessionContext::new();
    let a_json: String = a_final
        .iter()
        .map(|(id, v)| {
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            format!(
                "('{id}', {}, {})\n",
                match v["fk"].as_str() {
                    Some(s) => format!("'{s}'"),
                    None => "CAST(NULL AS VARCHAR)".into(),
                },
                v["x"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let b_json: String = b_final
        .iter()
        .map(|(id, v)| {
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            format!("('{id}', {})", v["y"])
        })
        .collect::<Vec<_>>()
        .join(", ");
    ctx.sql(&format!(
        "CREATE TABLE a (id VARCHAR, fk VARCHAR, x BIGINT) AS VALUES {a_json}"
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE TABLE b (id VARCHAR, y BIGINT) AS VALUES {b_json}"
    ))
    .await
    .unwrap();
    for (name, _, sql) in TABLE_JOINS {
        let want = rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap());
        let columns = match *name {
            "t_full" => "aid, bid, x, y",
            "t_many" => "id1, id2, x1, x2",
            _ => "aid, x, y",
        };
        expect_rows(
            &engine,
            &mut session,
            &format!("SELECT {columns} FROM {name}"),
            &want,
            &format!("seed {seed}, {name}"),
        )
        .await;
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_table_joins_equal_batch_sql_of_the_final_tables() {
    for seed in [1, 2, 3] {
        check_table_seed(seed, seed != 1).await;
    }
}

// ----------------------------------------------------------- stream-table

/// Stream-table joins look the table up as it is when each event is processed.
/// In phases, random upserts and deletes change the table (and are waited for),
/// then a batch of events is joined (and waited for); every event's result must
/// equal a batch join with the table's contents of its phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_table_joins_equal_batch_sql_per_table_version() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(engine_config(dir.path())).await.unwrap();
    let mut session = Session::new();
    execute_all(
        &engine,
        &mut session,
        &[
            "CREATE TABLE users (id VARCHAR PRIMARY KEY, tier BIGINT) WITH (kafka_topic='users', value_format='json')".into(),
            "CREATE STREAM clicks (user_id VARCHAR, n BIGINT) WITH (kafka_topic='clicks', value_format='json', partitions=2)".into(),
            "CREATE STREAM st_inner AS SELECT c.user_id, c.n, u.tier FROM clicks c JOIN users u ON c.user_id = u.id".into(),
            "CREATE STREAM st_left AS SELECT c.user_id, c.n, u.tier FROM clicks c LEFT JOIN users u ON u.id = c.user_id".into(),
        ],
    )
    .await;
    let mut rng = Rng::new(7);
    let mut users_w = engine.backend().writer("users").await.unwrap();
    let mut clicks_w = engine.backend().writer("clicks").await.unwrap();
    let mut table: BTreeMap<String, i64> = BTreeMap::new();
    // (phase, id, tier) and (phase, user_id, n), for the batch join.
    let mut snapshots: Vec<(i64, String, i64)> = Vec::new();
    let mut clicks: Vec<(i64, String, i64)> = Vec::new();
    let mut n = 0i64;
    for phase in 0..6i64 {
        let mut changes = Vec::new();
        for _ in 0..15 {
            let id = format!("u{}", rng.below(10));
            let value = if rng.below(4) == 0 {
                table.remove(&id);
                None
            } else {
                let tier = rng.below(5) as i64;
                table.insert(id.clone(), tier);
                Some(Bytes::from(format!(r#"{{"tier": {tier}}}"#)))
            };
            changes.push(OutRecord {
                partition: None,
                timestamp: 0,
                key: Some(Bytes::from(id)),
                value,
            });
        }
        users_w.send(changes).await.unwrap();
        users_w.flush().await.unwrap();
        let want: Vec<String> = table.iter().map(|(k, v)| format!("{k}|{v}")).collect();
        expect_rows(
            &engine,
            &mut session,
            "SELECT id, tier FROM users",
            &want,
            "users",
        )
        .await;
        snapshots.extend(table.iter().map(|(k, v)| (phase, k.clone(), *v)));
        let batch: Vec<(i64, String, i64)> = (0..40)
            .map(|_| {
                n += 1;
                (phase, format!("u{}", rng.below(12)), n)
            })
            .collect();
        clicks_w
            .send(
                batch
                    .iter()
                    .map(|(_, u, n)| OutRecord {
                        partition: None,
                        timestamp: 0,
                        key: None,
                        value: Some(Bytes::from(format!(r#"{{"user_id": "{u}", "n": {n}}}"#))),
                    })
                    .collect(),
            )
            .await
            .unwrap();
        clicks_w.flush().await.unwrap();
        clicks.extend(batch);
        // Both joins must have processed this phase's events before the table moves on.
        let inner_so_far = clicks
            .iter()
            .filter(|(p, u, _)| snapshots.iter().any(|(sp, id, _)| sp == p && id == u))
            .count();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = pull(&engine, &mut session, "SELECT n FROM st_left")
                .await
                .len();
            let inner = pull(&engine, &mut session, "SELECT n FROM st_inner")
                .await
                .len();
            if left == clicks.len() && inner == inner_so_far {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "phase {phase}: left {left}/{}, inner {inner}/{inner_so_far}",
                clicks.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ctx = SessionContext::new();
    let values = |rows: &[(i64, String, i64)]| {
        rows.iter()
            .map(|(p, s, v)| format!("({p}, '{s}', {v})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    ctx.sql(&format!(
        "CREATE TABLE snapshots (phase BIGINT, id VARCHAR, tier BIGINT) AS VALUES {}",
        values(&snapshots)
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE TABLE clicks (phase BIGINT, user_id VARCHAR, n BIGINT) AS VALUES {}",
        values(&clicks)
    ))
    .await
    .unwrap();
    for (name, kind) in [("st_inner", "JOIN"), ("st_left", "LEFT JOIN")] {
        let want = rows(
            &ctx.sql(&format!(
                "SELECT c.user_id, c.n, s.tier FROM clicks c {kind} snapshots s ON c.phase = s.phase AND c.user_id = s.id"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
        );
        let got = pull(
            &engine,
            &mut session,
            &format!("SELECT user_id, n, tier FROM {name}"),
        )
        .await;
        assert_eq!(got, want, "{name}");
    }
    engine.shutdown().await;
}

// ---------------------------------------------------------------- memory budget

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A stream–table join whose copy of the table is ten times its memory
/// budget: the table's rows are evicted and read back from RocksDB, and the
/// aggregate over the join is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_table_join_over_its_memory_budget_is_exact() {
    const BUDGET: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let mut config = engine_config(dir.path());
    config.state_memory_budget = BUDGET;
    let engine = Engine::start(config).await.unwrap();
    let mut session = Session::new();
    execute_all(
        &engine,
        &mut session,
        &[
            "CREATE TABLE dim (id VARCHAR PRIMARY KEY, grp BIGINT, pad VARCHAR) \
             WITH (kafka_topic='dim', value_format='json', partitions=1)"
                .to_string(),
            "CREATE STREAM ev (k VARCHAR KEY, v BIGINT) \
             WITH (kafka_topic='ev', value_format='json', partitions=1)"
                .to_string(),
        ],
    )
    .await;
    let (rows, events) = (5_000u64, 20_000u64);
    let pad = "p".repeat(100);
    let dim: Vec<OutRecord> = (0..rows)
        .map(|i| OutRecord {
            partition: None,
            timestamp: 0,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!(
                r#"{{"grp": {}, "pad": "{pad}"}}"#,
                i % 7
            ))),
        })
        .collect();
    let mut writer = engine.backend().writer("dim").await.unwrap();
    writer.send(dim).await.unwrap();
    execute_all(
        &engine,
        &mut session,
        &[
            "CREATE TABLE per_grp AS SELECT d.grp, COUNT(*) AS n, SUM(e.v) AS total \
           FROM ev e JOIN dim d ON e.k = d.id GROUP BY d.grp"
                .to_string(),
        ],
    )
    .await;

    let mut rng = Rng::new(7);
    let mut expected: BTreeMap<u64, (u64, i64)> = BTreeMap::new();
    let mut records = Vec::new();
    for i in 0..events {
        // Some keys have no table row (an inner join drops them).
        let id = rng.below(rows + rows / 5);
        let v = i as i64 % 1_000;
        if id < rows {
            let e = expected.entry(id % 7).or_default();
            e.0 += 1;
            e.1 += v;
        }
        records.push(OutRecord {
            partition: None,
            timestamp: i as i64,
            key: Some(Bytes::from(format!("k{id}"))),
            value: Some(Bytes::from(format!(r#"{{"v": {v}}}"#))),
        });
    }
    let mut writer = engine.backend().writer("ev").await.unwrap();
    for chunk in records.chunks(2_000) {
        writer.send(chunk.to_vec()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let want: Vec<String> = expected
        .iter()
        .map(|(g, (n, total))| format!("{g}|{n}|{total}"))
        .collect();
    expect_rows(
        &engine,
        &mut session,
        "SELECT grp, n, total FROM per_grp",
        &want,
        "join over its memory budget",
    )
    .await;

    let text = engine.metrics_text();
    assert!(
        metric(&text, "sluice_state_evictions_total") > 0,
        "the table's copy never left memory"
    );
    assert_eq!(
        metric(&text, "sluice_state_memory_budget_bytes"),
        BUDGET as u64
    );
    // Every checkpoint evicts down to the budget's margin.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used = metric(&engine.metrics_text(), "sluice_state_memory_bytes");
        if used <= BUDGET as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "{used} bytes of state in memory");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine.shutdown().await;
}
