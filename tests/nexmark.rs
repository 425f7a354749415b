//! Nexmark q0, q1 and q2 (`sql/nexmark/`) over the built-in nexmark source: each
//! query's streaming output must equal the same SELECT run as batch SQL by
//! DataFusion over the same generated bids.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use sluice::connectors::nexmark::model::DEFAULT_EVENT_RATE;
use sluice::connectors::nexmark::{self, EventType, NexmarkConfig, NexmarkReader};
use sluice::connectors::StartFrom;
use sluice::engine::{Engine, Session, StatementResult};

#[path = "support/oracle.rs"]
mod oracle;
use oracle::{engine_config, text_rows};

const EVENTS: u64 = 30_000;
const SEED: u64 = 5;
const PARTITIONS: u32 = 3;

async fn start(dir: &std::path::Path) -> Arc<Engine> {
    Engine::start(engine_config(dir)).await.expect("engine")
}

fn format_rows(batches: &[RecordBatch]) -> Vec<String> {
    text_rows(batches, " | ")
}

async fn rows(engine: &Engine, sql: &str) -> Vec<String> {
    let mut session = Session::new();
    match engine.execute(&mut session, sql).await.pop() {
        Some(Ok(StatementResult::Rows { batches, .. })) => format_rows(&batches),
        other => panic!("{sql}: {other:?}"),
    }
}

async fn exec(engine: &Engine, sql: &str) {
    let mut session = Session::new();
    for r in engine.execute(&mut session, sql).await {
        r.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn error(engine: &Engine, sql: &str) -> String {
    let mut session = Session::new();
    match engine.execute(&mut session, sql).await.pop() {
        Some(Err(e)) => e.to_string(),
        other => panic!("{sql} should fail: {other:?}"),
    }
}

async fn wait_finished(engine: &Engine, query: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = rows(engine, "SHOW QUERIES").await;
        if shown
            .iter()
            .any(|r| r.starts_with(query) && r.contains("| FINISHED |"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query} did not finish: {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bids the source generates, read straight from the generator.
fn generated_bids() -> RecordBatch {
    generated(EventType::Bid)
}

/// The rows of one event type the source generates.
fn generated(table: EventType) -> RecordBatch {
    generated_at(table, DEFAULT_EVENT_RATE)
}

/// The same with event time advancing at `event_rate` events per second.
fn generated_at(table: EventType, event_rate: u64) -> RecordBatch {
    let mut config = NexmarkConfig::new(table);
    config.event_rate = Some(event_rate);
    config.events = Some(EVENTS);
    config.seed = SEED;
    config.partitions = PARTITIONS;
    let schema = nexmark::batch::full_schema(table);
    let all = (0..schema.fields().len()).collect();
    let mut reader = NexmarkReader::open(&config, schema.clone(), all, &StartFrom::Earliest);
    let mut batches = Vec::new();
    while let Some(g) = reader.generate(4096, u64::MAX).unwrap() {
        batches.push(g.chunk.batch);
    }
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// The query file's SELECT (what follows `AS` in its CREATE STREAM).
fn select_of(file_text: &str) -> String {
    let body: String = file_text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let at = body
        .find("AS\nSELECT")
        .expect("CREATE STREAM ... AS\\nSELECT");
    body[at + 3..].trim().trim_end_matches(';').to_string()
}

async fn batch_result(bids: &RecordBatch, select: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(bids.schema(), vec![vec![bids.clone()]]).unwrap();
    ctx.register_table("bid", Arc::new(table)).unwrap();
    let batches = ctx.sql(select).await.unwrap().collect().await.unwrap();
    format_rows(&batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q0_q1_q2_match_batch_sql_over_the_same_bids() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    exec(
        &engine,
        &format!(
            "CREATE STREAM bid WITH (connector='nexmark', nexmark.table='bid', events={EVENTS}, seed={SEED}, partitions={PARTITIONS})"
        ),
    )
    .await;
    let bids = generated_bids();
    assert_eq!(bids.num_rows() as u64, EVENTS / 50 * 46);
    // The source itself, read by a pull query, is the generator's output.
    assert_eq!(
        rows(
            &engine,
            "SELECT COUNT(*), MIN(date_time), MAX(auction) FROM bid"
        )
        .await,
        batch_result(
            &bids,
            "SELECT COUNT(*), MIN(date_time), MAX(auction) FROM bid"
        )
        .await
    );

    let root = env!("CARGO_MANIFEST_DIR");
    for (q, min_rows) in [("q0", 20_000), ("q1", 20_000), ("q2", 1)] {
        let text = std::fs::read_to_string(format!("{root}/sql/nexmark/{q}.sql")).unwrap();
        exec(&engine, &text).await;
        let id = format!("CSAS_NEXMARK_{}", q.to_uppercase());
        wait_finished(&engine, &id).await;
        let streamed = rows(&engine, &format!("SELECT * FROM nexmark_{q}")).await;
        let expected = batch_result(&bids, &select_of(&text)).await;
        assert!(
            expected.len() >= min_rows,
            "{q}: only {} rows; the test input is too small to mean much",
            expected.len()
        );
        assert_eq!(streamed.len(), expected.len(), "{q}: row counts differ");
        assert_eq!(streamed, expected, "{q}: rows differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_columns_are_checked_against_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    // A subset of the columns, in another order.
    exec(
        &engine,
        "CREATE STREAM b2 (price BIGINT, auction BIGINT, date_time TIMESTAMP)
           WITH (connector='nexmark', nexmark.table='bid', events=500, seed=1)",
    )
    .await;
    assert_eq!(
        rows(&engine, "SELECT COUNT(*), MIN(auction) FROM b2").await,
        vec!["460 | 1000"]
    );
    let e = error(
        &engine,
        "CREATE STREAM b3 (auction BIGINT, colour VARCHAR) WITH (connector='nexmark', event_type='bid')",
    )
    .await;
    assert!(
        e.contains("no column 'colour'") && e.contains("line 1"),
        "{e}"
    );
    let e = error(
        &engine,
        "CREATE STREAM b3 (auction VARCHAR) WITH (connector='nexmark', event_type='bid')",
    )
    .await;
    assert!(e.contains("bid.auction is BIGINT, not VARCHAR"), "{e}");
    let e = error(&engine, "CREATE STREAM b3 WITH (connector='nexmark')").await;
    assert!(e.contains("needs the event type"), "{e}");
    let e = error(
        &engine,
        "CREATE STREAM b3 WITH (connector='nexmark', nexmark.table='bidz', events=0)",
    )
    .await;
    assert!(e.contains("not a nexmark event type"), "{e}");
    let e = error(
        &engine,
        "CREATE STREAM b3 WITH (connector='nexmark', nexmark.table='bid', events=0)",
    )
    .await;
    assert!(e.contains("events must be a positive whole number"), "{e}");
    let e = error(&engine, "CREATE STREAM b3 WITH (kafka_topic='t', events=5)").await;
    assert!(e.contains("events needs connector='nexmark'"), "{e}");
    let e = error(&engine, "CREATE STREAM b3 WITH (kafka_topic='t')").await;
    assert!(e.contains("needs a column list"), "{e}");
    // An endless source cannot be scanned to its end by a pull query.
    exec(
        &engine,
        "CREATE STREAM endless WITH (connector='nexmark', nexmark.table='person')",
    )
    .await;
    let e = error(&engine, "SELECT COUNT(*) FROM endless").await;
    assert!(e.contains("endless nexmark stream"), "{e}");
    // Without a column list every column is there, with the standard names.
    let described = rows(&engine, "DESCRIBE endless").await;
    let names: Vec<&str> = described
        .iter()
        .map(|r| r.split(" | ").next().unwrap())
        .collect();
    for c in [
        "id",
        "name",
        "email_address",
        "credit_card",
        "city",
        "state",
        "date_time",
        "extra",
    ] {
        assert!(names.contains(&c), "{c} missing from {described:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_query_continues_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let events = 20_000u64;
    {
        let engine = start(dir.path()).await;
        // Throttled so the query is still running when the engine stops.
        exec(
            &engine,
            &format!(
                "CREATE STREAM bid WITH (connector='nexmark', nexmark.table='bid', events={events}, rate=20000, seed=3, partitions=2);
                 CREATE TABLE per_auction AS SELECT auction, COUNT(*) AS n, SUM(price) AS total FROM bid GROUP BY auction;"
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let partial = rows(&engine, "SELECT SUM(n) FROM per_auction").await;
        engine.shutdown().await;
        let counted: u64 = partial[0].parse().unwrap_or(0);
        assert!(
            counted < events / 50 * 46,
            "the query finished before the restart: {partial:?}"
        );
    }
    let engine = start(dir.path()).await;
    wait_finished(&engine, "CTAS_PER_AUCTION").await;
    let streamed = rows(&engine, "SELECT * FROM per_auction").await;
    let expected = rows(
        &engine,
        "SELECT auction, COUNT(*) AS n, SUM(price) AS total FROM bid GROUP BY auction",
    )
    .await;
    assert_eq!(streamed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_json_lines_hold_the_same_rows_as_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events");
    std::fs::create_dir(&out).unwrap();
    let mut config = NexmarkConfig::new(EventType::Bid);
    config.events = Some(5_000);
    config.seed = 9;
    config.partitions = 2;
    let exported = sluice::bench::nexmark_export::export(
        &config,
        &EventType::ALL,
        &sluice::bench::nexmark_export::Target::Directory(out.clone()),
    )
    .await
    .unwrap();
    let counts: Vec<u64> = exported.iter().map(|e| e.rows).collect();
    assert_eq!(counts, vec![100, 300, 4_600]);

    let engine = Engine::start(sluice::config::ServerConfig {
        allowed_paths: vec![out.clone()],
        ..engine_config(&dir.path().join("data"))
    })
    .await
    .expect("engine");
    for table in EventType::ALL {
        let name = table.name();
        let columns = nexmark::batch::columns(table)
            .iter()
            .map(|(c, t)| format!("{c} {t}"))
            .collect::<Vec<_>>()
            .join(", ");
        exec(
            &engine,
            &format!(
                "CREATE STREAM {name}_generated WITH (connector='nexmark', nexmark.table='{name}', events=5000, seed=9, partitions=2);
                 CREATE STREAM {name}_file ({columns}) WITH (connector='file', path='{}/{name}.jsonl', value_format='json', timestamp='date_time');",
                out.display()
            ),
        )
        .await;
        let from_file = rows(&engine, &format!("SELECT * FROM {name}_file")).await;
        let generated = rows(&engine, &format!("SELECT * FROM {name}_generated")).await;
        assert_eq!(
            from_file.len() as u64,
            exported.iter().find(|e| e.table == table).unwrap().rows
        );
        assert_eq!(from_file, generated, "{name}");
    }
}

/// q11 (session windows per bidder) over a bounded source: at the end of input
/// every session closes; the table must equal sessions computed by batch SQL
/// (a new session wherever a bidder's gap reaches 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q11_sessions_match_batch_sql() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    exec(
        &engine,
        &format!(
            "CREATE STREAM bid WITH (connector='nexmark', nexmark.table='bid', events={EVENTS}, seed={SEED}, partitions={PARTITIONS})"
        ),
    )
    .await;
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/sql/nexmark/q11.sql")).unwrap();
    exec(&engine, &text).await;
    wait_finished(&engine, "CTAS_NEXMARK_Q11").await;
    let mut streamed = rows(
        &engine,
        "SELECT bidder, bid_count, CAST(starttime AS BIGINT) AS s, CAST(endtime AS BIGINT) AS e FROM nexmark_q11",
    )
    .await;
    streamed.sort();
    let mut expected = batch_result(
        &generated_bids(),
        "SELECT bidder, COUNT(*) AS bid_count, MIN(t) AS s, MAX(t) + 10000 AS e FROM \
           (SELECT bidder, t, SUM(new_session) OVER (PARTITION BY bidder ORDER BY t ROWS UNBOUNDED PRECEDING) AS sid FROM \
             (SELECT bidder, t, CASE WHEN t - LAG(t) OVER (PARTITION BY bidder ORDER BY t) < 10000 THEN 0 ELSE 1 END AS new_session \
              FROM (SELECT bidder, CAST(date_time AS BIGINT) AS t FROM bid) x) a) b \
         GROUP BY bidder, sid",
    )
    .await;
    expected.sort();
    assert!(expected.len() > 100, "{} sessions", expected.len());
    assert_eq!(streamed, expected);
}

/// q3 (sellers in some states with auctions in a category: a join without a
/// time bound), q9 (each auction's winning bid: Top-1 per auction over the
/// join), q4 (average winning bid per category: an interval join bounded by each
/// auction's lifetime, MAX per auction, AVG over that changelog), q8 (persons who
/// opened an auction in the 10 s window they registered in) and the interval-join
/// benchmark query, all joins of two nexmark streams, against batch SQL over the
/// same generated rows.
/// An engine with the three nexmark streams, running the queries of
/// `sql/nexmark/` named in `queries` to their end.
async fn run_queries(
    dir: &std::path::Path,
    event_rate: u64,
    queries: &[(&str, &str)],
) -> Arc<Engine> {
    let engine = start(dir).await;
    for table in ["person", "auction", "bid"] {
        exec(
            &engine,
            &format!(
                "CREATE STREAM {table} WITH (connector='nexmark', nexmark.table='{table}', events={EVENTS}, seed={SEED}, partitions={PARTITIONS}, event_rate={event_rate})"
            ),
        )
        .await;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    for (file, _) in queries {
        let text = std::fs::read_to_string(format!("{root}/sql/nexmark/{file}.sql")).unwrap();
        exec(&engine, &text).await;
    }
    for (_, query) in queries {
        wait_finished(&engine, query).await;
    }
    engine
}

/// The three nexmark streams' generated rows as batch tables.
fn batch_context(event_rate: u64) -> SessionContext {
    let ctx = SessionContext::new();
    for (name, table) in [
        ("person", EventType::Person),
        ("auction", EventType::Auction),
        ("bid", EventType::Bid),
    ] {
        let rows = generated_at(table, event_rate);
        let mem = MemTable::try_new(rows.schema(), vec![vec![rows]]).unwrap();
        ctx.register_table(name, Arc::new(mem)).unwrap();
    }
    ctx
}

async fn batch(ctx: &SessionContext, sql: &str) -> Vec<String> {
    format_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q4_q8_and_the_interval_join_match_batch_sql() {
    let dir = tempfile::tempdir().unwrap();
    let engine = run_queries(
        dir.path(),
        DEFAULT_EVENT_RATE,
        &[
            ("q3", "CSAS_NEXMARK_Q3"),
            ("q4", "CTAS_NEXMARK_Q4"),
            ("q8", "CTAS_NEXMARK_Q8"),
            ("q9", "CTAS_NEXMARK_Q9"),
            ("interval_join", "CSAS_NEXMARK_INTERVAL_JOIN"),
        ],
    )
    .await;
    let ctx = batch_context(DEFAULT_EVENT_RATE);
    let batch = |sql: &'static str| batch(&ctx, sql);
    let q8 = rows(
        &engine,
        "SELECT id, name, CAST(starttime AS BIGINT), auctions FROM nexmark_q8",
    )
    .await;
    let expected = batch(
        "SELECT P.id, P.name, CAST(date_bin(INTERVAL '10' SECOND, P.date_time) AS BIGINT), COUNT(*) \
         FROM person P JOIN auction A ON P.id = A.seller \
          AND date_bin(INTERVAL '10' SECOND, P.date_time) = date_bin(INTERVAL '10' SECOND, A.date_time) \
         GROUP BY P.id, P.name, date_bin(INTERVAL '10' SECOND, P.date_time)",
    )
    .await;
    assert!(expected.len() > 20, "{} q8 rows", expected.len());
    assert_eq!(q8, expected);
    let q3 = rows(&engine, "SELECT name, city, state, id FROM nexmark_q3").await;
    let expected = batch(
        "SELECT P.name, P.city, P.state, A.id FROM auction A JOIN person P ON A.seller = P.id \
         WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')",
    )
    .await;
    assert!(expected.len() > 5, "{} q3 rows", expected.len());
    assert_eq!(q3, expected);
    let q4 = rows(&engine, "SELECT category, avg_final FROM nexmark_q4").await;
    let expected = batch(
        "SELECT Q.category, AVG(Q.final) FROM (SELECT MAX(B.price) AS final, A.category \
         FROM auction A JOIN bid B ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires \
         GROUP BY A.id, A.category) Q GROUP BY Q.category",
    )
    .await;
    assert!(expected.len() > 3, "{} q4 rows", expected.len());
    assert_eq!(q4, expected);
    // Bids of equal price and time tie: which of them wins is up to the engine,
    // so compare the winning price and time of each auction.
    let q9 = rows(
        &engine,
        "SELECT id, seller, price, CAST(bid_date_time AS BIGINT) FROM nexmark_q9",
    )
    .await;
    let expected = batch(
        "SELECT id, seller, price, CAST(bid_date_time AS BIGINT) FROM ( \
           SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_date_time, \
             ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum \
           FROM auction A JOIN bid B ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires) Q \
         WHERE rownum <= 1",
    )
    .await;
    assert!(expected.len() > 20, "{} q9 rows", expected.len());
    assert_eq!(q9, expected);
    let joined = rows(
        &engine,
        "SELECT auction, bidder, price, seller, category FROM nexmark_interval_join",
    )
    .await;
    let expected = batch(
        "SELECT B.auction, B.bidder, B.price, A.seller, A.category FROM bid B JOIN auction A \
         ON B.auction = A.id AND A.date_time >= B.date_time - INTERVAL '10' SECOND \
         AND A.date_time <= B.date_time + INTERVAL '10' SECOND",
    )
    .await;
    assert!(expected.len() > 1000, "{} joined bids", expected.len());
    assert_eq!(joined, expected);
}

/// q5 (the auctions with the most bids per sliding window: a join of two
/// windowed aggregates, one of them aggregated again per window) and q7 (the
/// highest bids per tumbling window: bids joined with their window's maximum),
/// against batch SQL with the windows spelled out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q5_q7_match_batch_sql() {
    let dir = tempfile::tempdir().unwrap();
    // 100 events per second of event time: the 30,000 events span 300 s.
    let engine = run_queries(
        dir.path(),
        100,
        &[("q5", "CSAS_NEXMARK_Q5"), ("q7", "CSAS_NEXMARK_Q7")],
    )
    .await;
    let ctx = batch_context(100);
    let q5 = rows(&engine, "SELECT auction, num FROM nexmark_q5").await;
    // Every 10 s window sliding by 2 s that holds a bid: the five starting at
    // most 8 s before the bid's 2 s slot.
    let expected = batch(
        &ctx,
        "WITH windowed AS (SELECT auction, CAST(date_time AS BIGINT) / 2000 * 2000 - i * 2000 AS ws \
                           FROM bid CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS k(i)), \
              counts AS (SELECT auction, COUNT(*) AS num, ws FROM windowed GROUP BY auction, ws), \
              maxes AS (SELECT MAX(num) AS maxn, ws FROM counts GROUP BY ws) \
         SELECT c.auction, c.num FROM counts c JOIN maxes m ON c.ws = m.ws AND c.num >= m.maxn",
    )
    .await;
    assert!(expected.len() > 50, "{} q5 rows", expected.len());
    assert_eq!(q5, expected);
    let q7 = rows(
        &engine,
        "SELECT auction, price, bidder, CAST(date_time AS BIGINT) FROM nexmark_q7",
    )
    .await;
    let expected = batch(
        &ctx,
        "SELECT B.auction, B.price, B.bidder, CAST(B.date_time AS BIGINT) FROM bid B \
         JOIN (SELECT MAX(price) AS maxprice, date_bin(INTERVAL '10' SECOND, date_time) + INTERVAL '10' SECOND AS date_time \
               FROM bid GROUP BY date_bin(INTERVAL '10' SECOND, date_time)) B1 \
           ON B.price = B1.maxprice \
         WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
    )
    .await;
    assert!(expected.len() > 5, "{} q7 rows", expected.len());
    assert_eq!(q7, expected);
    // Both joins are bounded in time, so they free rows as the windows pass (the
    // results above would be the same if they kept every row to the end).
    for (file, bounds) in [
        ("q5", "right time - left time in [0 ms, 0 ms]"),
        ("q7", "right time - left time in [-1 ms, 9999 ms]"),
    ] {
        let root = env!("CARGO_MANIFEST_DIR");
        let text = std::fs::read_to_string(format!("{root}/sql/nexmark/{file}.sql")).unwrap();
        let plan = rows(
            &engine,
            &format!("EXPLAIN {} EMIT CHANGES", select_of(&text)),
        )
        .await;
        assert!(
            plan.iter()
                .any(|l| l.contains("IntervalJoin") && l.contains(bounds)),
            "{file}: {plan:#?}"
        );
    }
    // Each query's state is freed as its windows close.
    let metrics = engine.metrics_text();
    for query in ["CSAS_NEXMARK_Q5", "CSAS_NEXMARK_Q7"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("sluice_query_state_entries{{query=\"{query}")))
            .unwrap_or_else(|| panic!("no state metric for {query}: {metrics}"));
        assert!(line.ends_with(" 0"), "{line}");
    }
}
