//! `connector = 'file'`: JSON-lines files as bounded streams. The query finishes at
//! the end of the input, bad lines are counted, nested objects are STRUCT columns,
//! and a restart after the end neither repeats nor loses input.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::util::display::{ArrayFormatter, FormatOptions};
use sluice::config::ServerConfig;
use sluice::engine::{Engine, Session, StatementResult};

/// An engine on `data_dir` whose clients may name files under `inputs`.
async fn start(data_dir: &Path, inputs: &Path) -> Arc<Engine> {
    Engine::start(ServerConfig {
        data_dir: data_dir.to_path_buf(),
        allowed_paths: vec![inputs.to_path_buf()],
        checkpoint_interval: Duration::from_millis(100),
        dead_letter_topic: Some("dead_letters".into()),
        ..Default::default()
    })
    .await
    .expect("engine")
}

async fn rows(engine: &Engine, sql: &str) -> Vec<String> {
    let mut session = Session::new();
    match engine.execute(&mut session, sql).await.pop() {
        Some(Ok(StatementResult::Rows { batches, .. })) => {
            let mut out = Vec::new();
            for b in &batches {
                let opts = FormatOptions::default().with_null("NULL");
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
        other => panic!("{sql}: {other:?}"),
    }
}

async fn exec(engine: &Engine, sql: &str) {
    let mut session = Session::new();
    for r in engine.execute(&mut session, sql).await {
        r.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn wait_finished(engine: &Engine, query: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_file_stream_finishes_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(
        input.join("part-1.jsonl"),
        concat!(
            r#"{"auction": 1, "bid": {"price": 10, "bidder": "a"}, "channel": "web"}"#,
            "\n",
            r#"{"auction": 2, "bid": {"price": 5, "bidder": "b"}}"#,
            "\n",
            "this line is not json\n",
        ),
    )
    .unwrap();
    std::fs::write(
        input.join("part-2.jsonl"),
        concat!(
            r#"{"auction": 1, "bid": {"price": 7, "bidder": "c"}, "channel": "app"}"#,
            "\n"
        ),
    )
    .unwrap();
    std::fs::write(input.join("ignored.txt"), "not matched by the glob\n").unwrap();

    let engine = start(&dir.path().join("data"), dir.path()).await;
    exec(
        &engine,
        &format!(
            "CREATE STREAM bids (auction BIGINT, bid STRUCT<price BIGINT, bidder VARCHAR>, channel VARCHAR)
               WITH (connector='file', path='{}/part-*.jsonl', value_format='json');
             CREATE TABLE per_auction AS
               SELECT auction, COUNT(*) AS n, SUM(bid['price']) AS total, MAX(bid['bidder']) AS last_bidder
               FROM bids GROUP BY auction;",
            input.display()
        ),
    )
    .await;
    wait_finished(&engine, "CTAS_PER_AUCTION").await;
    assert_eq!(
        rows(&engine, "SELECT * FROM per_auction ORDER BY auction").await,
        vec!["1 | 2 | 17 | c", "2 | 1 | 5 | b"]
    );
    // The backfill's progress: every byte of both files read.
    let bytes: u64 = ["part-1.jsonl", "part-2.jsonl"]
        .iter()
        .map(|f| std::fs::metadata(input.join(f)).unwrap().len())
        .sum();
    let shown = rows(&engine, "SHOW QUERIES").await;
    let line = shown
        .iter()
        .find(|r| r.starts_with("CTAS_PER_AUCTION"))
        .unwrap();
    assert!(
        line.contains(&format!("| caught up ({bytes} bytes) |")),
        "{line}"
    );
    let metrics = engine.metrics_text();
    assert!(
        metrics.contains(
            "sluice_query_progress_ratio{query=\"CTAS_PER_AUCTION_1\",unit=\"bytes\"} 1\n"
        ),
        "{metrics}"
    );
    // A pull query reads the files too; a missing field is NULL.
    assert_eq!(
        rows(
            &engine,
            "SELECT auction, channel FROM bids ORDER BY auction, channel"
        )
        .await,
        vec!["1 | app", "1 | web", "2 | NULL"]
    );
    let metrics = engine.metrics_text();
    assert!(
        metrics.contains("sluice_query_errors_total{query=\"CTAS_PER_AUCTION_1\"} 1"),
        "{metrics}"
    );

    // The bad line is reported with its file and line number.
    let dead = {
        let mut reader = engine
            .backend()
            .reader("dead_letters", sluice::connectors::StartFrom::Earliest)
            .await
            .unwrap();
        reader.poll(10, Duration::from_secs(5)).await.unwrap()
    };
    let first: serde_json::Value =
        serde_json::from_slice(dead[0].value.as_deref().unwrap()).unwrap();
    assert!(
        first["position"]
            .as_str()
            .unwrap()
            .ends_with("part-1.jsonl:3"),
        "{first}"
    );

    // Restart: the finished query resumes at the end of its input.
    engine.shutdown().await;
    drop(engine);
    let deadline = Instant::now() + Duration::from_secs(20);
    let engine = loop {
        match Engine::start(ServerConfig {
            data_dir: dir.path().join("data"),
            allowed_paths: vec![dir.path().to_path_buf()],
            checkpoint_interval: Duration::from_millis(100),
            ..Default::default()
        })
        .await
        {
            Ok(e) => break e,
            Err(e) if Instant::now() > deadline => panic!("restart: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    wait_finished(&engine, "CTAS_PER_AUCTION").await;
    assert_eq!(
        rows(&engine, "SELECT * FROM per_auction ORDER BY auction").await,
        vec!["1 | 2 | 17 | c", "2 | 1 | 5 | b"]
    );

    // Errors before anything is created.
    let mut session = Session::new();
    let err = engine
        .execute(
            &mut session,
            "CREATE STREAM nofile (a INT) WITH (connector='file', path='/no/such/dir/x.jsonl')",
        )
        .await
        .pop()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/dir/x.jsonl"), "{err}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_tails_a_growing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, "{\"k\": \"a\"}\n").unwrap();
    let engine = start(&dir.path().join("data"), dir.path()).await;
    exec(
        &engine,
        &format!(
            "CREATE STREAM ev (k VARCHAR) WITH (connector='file', path='{}', follow=true);
             CREATE TABLE counts AS SELECT k, COUNT(*) AS n FROM ev GROUP BY k;",
            file.display()
        ),
    )
    .await;
    let wait_for = |expected: Vec<&'static str>| {
        let engine = engine.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let got = rows(&engine, "SELECT * FROM counts ORDER BY k").await;
                if got == expected {
                    return;
                }
                assert!(Instant::now() < deadline, "got {got:?}, want {expected:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(vec!["a | 1"]).await;
    // A partial line waits for its end.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(b"{\"k\": \"b\"}\n{\"k\":").unwrap();
    f.flush().unwrap();
    wait_for(vec!["a | 1", "b | 1"]).await;
    f.write_all(b" \"a\"}\n").unwrap();
    f.flush().unwrap();
    wait_for(vec!["a | 2", "b | 1"]).await;
    let shown = rows(&engine, "SHOW QUERIES").await;
    assert!(shown.iter().any(|r| r.contains("| RUNNING |")), "{shown:?}");
    engine.shutdown().await;
}

/// A stream joined with a table over a followed file: the table's reader never
/// reports its end, so the join's warm-up (table before stream) must end on
/// its own instead of holding the stream back for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_a_followed_file_table_is_not_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.jsonl");
    std::fs::write(
        &users,
        "{\"id\": \"u1\", \"region\": \"eu\"}\n{\"id\": \"u2\", \"region\": \"us\"}\n",
    )
    .unwrap();
    let clicks = dir.path().join("clicks.jsonl");
    std::fs::write(
        &clicks,
        "{\"user\": \"u1\"}\n{\"user\": \"u2\"}\n{\"user\": \"u1\"}\n",
    )
    .unwrap();
    let engine = start(&dir.path().join("data"), dir.path()).await;
    exec(
        &engine,
        &format!(
            "CREATE TABLE users (id VARCHAR PRIMARY KEY, region VARCHAR)
               WITH (connector='file', path='{}', follow=true);
             CREATE STREAM clicks (user VARCHAR) WITH (connector='file', path='{}', follow=true);
             CREATE TABLE per_region AS SELECT u.region, COUNT(*) AS n
               FROM clicks c JOIN users u ON c.user = u.id GROUP BY u.region;",
            users.display(),
            clicks.display()
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = rows(&engine, "SELECT * FROM per_region ORDER BY region").await;
        if got == ["eu | 2", "us | 1"] {
            break;
        }
        assert!(Instant::now() < deadline, "got {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sinks_write_json_lines_with_ops_for_tables() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\",\"v\":5}\n{\"k\":\"a\",\"v\":2}\n",
    )
    .unwrap();
    let engine = start(&dir.path().join("data"), dir.path()).await;
    let out_stream = dir.path().join("big.jsonl");
    let out_table = dir.path().join("sums.jsonl");
    exec(
        &engine,
        &format!(
            "CREATE STREAM src (k VARCHAR, v INT) WITH (connector='file', path='{}');
             CREATE STREAM big WITH (connector='file', path='{}') AS SELECT k, v FROM src WHERE v > 1;
             CREATE TABLE sums WITH (connector='file', path='{}') AS SELECT k, SUM(v) AS total FROM src GROUP BY k;",
            input.display(),
            out_stream.display(),
            out_table.display()
        ),
    )
    .await;
    wait_finished(&engine, "CSAS_BIG").await;
    wait_finished(&engine, "CTAS_SUMS").await;
    let lines = std::fs::read_to_string(&out_stream).unwrap();
    assert_eq!(lines, "{\"k\":\"b\",\"v\":5}\n{\"k\":\"a\",\"v\":2}\n");
    let changes: Vec<serde_json::Value> = std::fs::read_to_string(&out_table)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(changes.iter().all(|c| c["op"] == "upsert"), "{changes:?}");
    let last_a = changes.iter().rev().find(|c| c["k"] == "a").unwrap();
    assert_eq!(last_a["total"], 3);
    // The sink file is itself readable as a stream.
    assert_eq!(
        rows(&engine, "SELECT k, v FROM big ORDER BY k").await,
        vec!["a | 2", "b | 5"]
    );
    engine.shutdown().await;
}

/// The end of a bounded file is the final watermark: every window closes, EMIT
/// FINAL results come out, and the query finishes. `watermark_delay` applies while
/// reading: an event more out of order than the delay is late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_file_closes_every_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bids.jsonl");
    // The source reads up to 8192 lines per batch, so the first file is exactly one
    // batch; after it the watermark is its largest event time (16 s) minus the
    // delay (2 s) = 14 s. The second file's 3 s bid then belongs to a window that
    // closed at 5 s: it is late.
    let mut lines: Vec<String> = [
        r#"{"auction": 1, "bid": {"price": 10}, "ts": 1000}"#,
        r#"{"auction": 1, "bid": {"price": 30}, "ts": 4000}"#,
        r#"{"auction": 2, "bid": {"price": 5}, "ts": 9000}"#,
        r#"{"auction": 1, "bid": {"price": 7}, "ts": 16000}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lines.extend(
        (0..8188).map(|_| r#"{"auction": 3, "bid": {"price": 1}, "ts": 16000}"#.to_string()),
    );
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let late = dir.path().join("bids2.jsonl");
    std::fs::write(
        &late,
        "{\"auction\": 1, \"bid\": {\"price\": 99}, \"ts\": 3000}\n",
    )
    .unwrap();
    let engine = start(dir.path(), dir.path()).await;
    exec(
        &engine,
        &format!(
            "CREATE STREAM bids (auction BIGINT, bid STRUCT<price BIGINT>, ts BIGINT) \
             WITH (connector='file', path='{}/bids*.jsonl', value_format='json', timestamp='ts', watermark_delay='2 seconds')",
            dir.path().display()
        ),
    )
    .await;
    exec(
        &engine,
        "CREATE TABLE per_auction AS SELECT auction, COUNT(*) AS bids, MAX(bid.price) AS best \
         FROM bids WINDOW TUMBLING (SIZE 5 SECONDS) GROUP BY auction EMIT FINAL",
    )
    .await;
    wait_finished(&engine, "CTAS_PER_AUCTION").await;
    assert_eq!(
        rows(
            &engine,
            "SELECT auction, CAST(windowstart AS BIGINT) AS ws, bids, best FROM per_auction ORDER BY ws, auction"
        )
        .await,
        vec!["1 | 0 | 2 | 30", "2 | 5000 | 1 | 5", "1 | 15000 | 1 | 7", "3 | 15000 | 8188 | 1"]
    );
    let metrics = engine.metrics_text();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("sluice_query_late_records_total{query=\"CTAS_PER_AUCTION")
            && l.ends_with(" 1")),
        "the 3 s bid in the second file is late: {metrics}"
    );
    engine.shutdown().await;
}

/// The error of the one statement in `sql`.
async fn refused(engine: &Engine, sql: &str) -> sluice::error::SluiceError {
    let mut session = Session::new();
    match engine.execute(&mut session, sql).await.pop() {
        Some(Err(e)) => e,
        other => panic!("{sql} was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_only_files_under_the_allowed_paths() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outside = tempfile::tempdir().unwrap();
    // A file outside, a script outside, and links to them from inside.
    let secret = outside.path().join("secret.jsonl");
    std::fs::write(&secret, "{\"k\": \"hunter2\"}\n").unwrap();
    let script = outside.path().join("deploy.sh");
    std::fs::write(&script, "#!/bin/sh\necho deployed\n").unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let inputs = data.join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("a.jsonl"), "{\"k\": \"a\"}\n").unwrap();
    std::os::unix::fs::symlink(&secret, inputs.join("b.jsonl")).unwrap();
    std::os::unix::fs::symlink(&script, data.join("out.jsonl")).unwrap();

    // No --allowed-path: the data directory alone.
    let engine = Engine::start(ServerConfig {
        data_dir: data.clone(),
        checkpoint_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .expect("engine");
    let check = |e: &sluice::error::SluiceError, path: &str| {
        assert_eq!(e.sqlstate(), "42501", "{path}: {e}");
        let text = format!("{e} {}", e.hint().unwrap_or_default());
        assert!(text.contains("not allowed"), "{path}: {text}");
        assert!(text.contains("--allowed-path"), "{path}: {text}");
        assert!(
            !text.contains("hunter2") && !text.contains("root:"),
            "{text}"
        );
    };
    for path in [
        "/etc/passwd".to_string(),
        "/proc/self/environ".to_string(),
        secret.display().to_string(),
        // Climbing out with `..` is judged by where it leads.
        format!("{}/../../..{}", data.display(), secret.display()),
        // A glob over a directory holding a link to the secret.
        format!("{}/*.jsonl", inputs.display()),
        inputs.join("b.jsonl").display().to_string(),
    ] {
        let e = refused(
            &engine,
            &format!("CREATE STREAM s (k VARCHAR) WITH (connector='file', path='{path}')"),
        )
        .await;
        check(&e, &path);
    }
    // RUN SCRIPT reports no word of a file it must not read.
    for path in ["/etc/passwd", "/proc/self/environ"] {
        let e = refused(&engine, &format!("RUN SCRIPT '{path}'")).await;
        check(&e, path);
    }
    // Sinks: not outside, not through a link, and the script is untouched.
    exec(
        &engine,
        &format!(
            "CREATE STREAM ok_in (k VARCHAR) WITH (connector='file', path='{}')",
            inputs.join("a.jsonl").display()
        ),
    )
    .await;
    for path in [
        script.display().to_string(),
        data.join("out.jsonl").display().to_string(),
    ] {
        let e = refused(
            &engine,
            &format!(
                "CREATE STREAM o WITH (connector='file', path='{path}') AS SELECT * FROM ok_in"
            ),
        )
        .await;
        assert_eq!(e.sqlstate(), "42501", "{path}: {e}");
    }
    assert_eq!(
        std::fs::read_to_string(&script).unwrap(),
        "#!/bin/sh\necho deployed\n"
    );
    // Inside the data directory a sink works.
    exec(
        &engine,
        &format!(
            "CREATE STREAM copied WITH (connector='file', path='{}') AS SELECT * FROM ok_in",
            data.join("copied.jsonl").display()
        ),
    )
    .await;
    wait_finished(&engine, "CSAS_COPIED").await;
    assert_eq!(
        std::fs::read_to_string(data.join("copied.jsonl")).unwrap(),
        "{\"k\":\"a\"}\n"
    );
    engine.shutdown().await;
    drop(engine);

    // Allowing the other directory lets the same statement read it; /proc stays
    // refused even when `/` is allowed.
    let engine = Engine::start(ServerConfig {
        data_dir: data.clone(),
        allowed_paths: vec![outside.path().to_path_buf(), "/".into()],
        checkpoint_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .expect("engine");
    exec(
        &engine,
        &format!(
            "CREATE STREAM s (k VARCHAR) WITH (connector='file', path='{}')",
            secret.display()
        ),
    )
    .await;
    assert_eq!(rows(&engine, "SELECT k FROM s").await, vec!["hunter2"]);
    let e = refused(
        &engine,
        "CREATE STREAM env (k VARCHAR) WITH (connector='file', path='/proc/self/environ')",
    )
    .await;
    assert_eq!(e.sqlstate(), "42501", "{e}");
    engine.shutdown().await;
}
