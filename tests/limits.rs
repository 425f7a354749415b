//! No statement, request or client stops the server, and every resource has a
//! bound with a clear error: deep and long statements, 10,000 mutated
//! statements from tests/cases over pgwire and HTTP, a pull query larger than
//! `--max-query-memory`, RUN SCRIPT on a device, connections and push queries
//! over their caps, and an HTTP client that never finishes its headers. Against
//! the real `sluice` process.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use support::server::TestServer;

async fn pg(server: &TestServer) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) =
        tokio_postgres::connect(&server.pg_conn_string(), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The server still answers, on a fresh connection of each protocol.
async fn assert_alive(server: &TestServer, after: &str) {
    let client = pg(server)
        .await
        .unwrap_or_else(|e| panic!("pgwire down after {after}: {e}\n{}", server.log_tail()));
    let row = client
        .simple_query("SELECT 1")
        .await
        .unwrap_or_else(|e| panic!("SELECT 1 failed after {after}: {e}\n{}", server.log_tail()));
    assert!(!row.is_empty());
    let (status, _) = server.ksql("SHOW STREAMS;").await;
    assert_eq!(status, 200, "HTTP after {after}");
}

/// The SQLSTATE of a statement over pgwire, `None` when it succeeded.
async fn pg_outcome(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    match client.simple_query(sql).await {
        Ok(_) => None,
        Err(e) => Some(
            e.as_db_error()
                .map(|d| d.code().code().to_string())
                .unwrap_or_else(|| format!("transport: {e}")),
        ),
    }
}

fn chains() -> Vec<(String, String)> {
    let n = 1000;
    let join = |piece: &str, sep: &str| vec![piece; n].join(sep);
    vec![
        ("plus".into(), format!("SELECT {}", join("1", "+"))),
        (
            "and".into(),
            format!("SELECT 1 WHERE {}", join("true", " AND ")),
        ),
        ("concat".into(), format!("SELECT {}", join("'a'", " || "))),
        ("union".into(), join("SELECT 1", " UNION ALL ")),
        (
            "parens".into(),
            format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        ),
        (
            "case".into(),
            format!(
                "SELECT {} 1 {}",
                "CASE WHEN true THEN ".repeat(200),
                " END".repeat(200)
            ),
        ),
        (
            "long plus".into(),
            format!("SELECT {}", vec!["1"; 20_000].join("+")),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_long_statements_run_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let client = pg(&server).await.expect("connect");
    for (name, sql) in chains() {
        // Chains of 1,000 run (1,000 UNION ALLs are at the operator budget of
        // sql::limits); 1,000
        // parentheses are deeper than sqlparser's nesting limit and 20,000
        // terms over the operator budget: both are refused as too complex.
        let want = match name.as_str() {
            "parens" | "long plus" => Some("54001"),
            // sqlparser stops at its depth limit inside the CASEs without an
            // error and the rest is reported as unexpected: a syntax error.
            "case" => Some("42601"),
            _ => None,
        };
        let outcome = pg_outcome(&client, &sql).await;
        assert_eq!(outcome.as_deref(), want, "{name} over pgwire");
        let (status, body) = server.ksql(&format!("{sql};")).await;
        match want {
            None => assert_eq!(status, 200, "{name} over HTTP: {body}"),
            Some(code) => {
                assert_eq!(status, 400, "{name} over HTTP: {body}");
                assert_eq!(body["sqlstate"], code, "{name} over HTTP: {body}");
            }
        }
        assert_alive(&server, &name).await;
    }
    // 1,000 terms run (DataFusion guards its own recursion).
    let sum = client
        .simple_query(&format!("SELECT {} AS s", vec!["1"; 1000].join("+")))
        .await
        .expect("1,000 terms run");
    let value = sum.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("1000"));
}

/// Statements of the behaviour cases, split at `;` ends of lines.
fn case_statements() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(q) = line
                .strip_prefix("--- expect ")
                .or(line.strip_prefix("--- error "))
            {
                out.push(q.to_string());
                continue;
            }
            if line.starts_with("--") {
                continue;
            }
            current.push_str(line);
            current.push('\n');
            if line.trim_end().ends_with(';') {
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const NOISE: &[&str] = &[
    "(",
    ")",
    ",",
    "'",
    "\"",
    ";",
    "*",
    "/",
    "-",
    "+",
    "||",
    "::",
    "[",
    "]",
    "{",
    "}",
    "NULL",
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "WINDOW",
    "EMIT CHANGES",
    "JOIN",
    "ON",
    "AS",
    "CAST",
    "INTERVAL",
    "'1' SECOND",
    "TUMBLING",
    "(SIZE",
    "9999999999999999999999",
    "-1",
    "1e308",
    "0",
    "''",
    "E'\\x00'",
    "$1",
    "CASE",
    "END",
    "OVER",
    "ROW_NUMBER()",
    "WITHIN",
    "KEY",
    "PRIMARY",
    "VARCHAR",
    "ARRAY[",
    "STRUCT<",
    "MAP(",
    "DROP",
    "TABLE",
    "STREAM",
    "IF",
    "NOT",
    "EXISTS",
    "\u{1F600}",
    "\\",
    "%",
    "?",
    "@",
    "#",
    "$$",
    "/*",
    "*/",
];

/// One random edit of `sql`'s whitespace-separated words.
fn mutate(sql: &str, rng: &mut Rng) -> String {
    let mut words: Vec<String> = sql.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return sql.to_string();
    }
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(words.len());
        match rng.below(6) {
            0 => {
                words.remove(i);
                if words.is_empty() {
                    words.push("SELECT".into());
                }
            }
            1 => {
                let w = words[i].clone();
                words.insert(i, w);
            }
            2 => {
                let j = rng.below(words.len());
                words.swap(i, j);
            }
            3 => words.insert(i, NOISE[rng.below(NOISE.len())].to_string()),
            4 => {
                // Cut inside a word (unterminated strings, half keywords).
                let w = &words[i];
                let cut = w
                    .char_indices()
                    .nth(rng.below(w.chars().count()))
                    .map_or(0, |(b, _)| b);
                words[i] = w[..cut].to_string();
            }
            _ => words.truncate(i.max(1)),
        }
    }
    words.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mutated_statements_never_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let seeds = case_statements();
    assert!(
        seeds.len() > 50,
        "{} statements in tests/cases",
        seeds.len()
    );
    let mut rng = Rng(0x5eed);
    let client = pg(&server).await.expect("connect");
    let http = reqwest::Client::new();
    let mut internal = Vec::new();
    for batch in 0..20 {
        for i in 0..500 {
            let sql = mutate(&seeds[rng.below(seeds.len())], &mut rng);
            // Push queries would stream until the client goes away.
            if sql.to_ascii_uppercase().contains("EMIT CHANGES")
                && !sql.to_ascii_uppercase().contains("CREATE")
            {
                continue;
            }
            if i % 2 == 0 {
                if let Some(code) = pg_outcome(&client, &sql).await {
                    assert!(
                        !code.starts_with("transport"),
                        "pgwire lost on {sql:?}: {code}"
                    );
                    if code.starts_with("XX") {
                        internal.push(sql.clone());
                    }
                }
            } else {
                let resp = http
                    .post(format!("{}/ksql", server.http()))
                    .json(&serde_json::json!({ "ksql": sql }))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("HTTP lost on {sql:?}: {e}\n{}", server.log_tail()));
                if resp.status().is_server_error() {
                    internal.push(sql.clone());
                }
            }
        }
        assert_alive(&server, &format!("batch {batch}")).await;
        // Mutated CREATE ... AS statements start queries; do not let them pile up.
        let _ = client.simple_query("TERMINATE ALL").await;
    }
    // Internal errors are bugs to look at, but they must not stop anything.
    if !internal.is_empty() {
        eprintln!(
            "{} statements gave internal errors, e.g. {:?}",
            internal.len(),
            &internal[..internal.len().min(5)]
        );
    }
}

/// `sluice_pull_queries_active`, polled until it is `want`.
async fn wait_pull_active(server: &TestServer, want: f64, what: &str) {
    server
        .wait_metric(
            "sluice_pull_queries_active",
            Duration::from_secs(20),
            &format!("never {want} {what}"),
            |v| v == want,
        )
        .await;
}

/// A pull result far larger than `--max-query-memory` streams to the client
/// batch by batch (collected it would be refused), and stops when the client
/// leaves, over pgwire and over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_results_stream_and_stop_when_the_client_leaves() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &["--max-query-memory", "16"]);
    // 10^12 rows: it ends only if the server stops it.
    let endless = "SELECT value FROM generate_series(1, 1000000000000)";

    let (client, conn) = tokio_postgres::connect(&server.pg_conn_string(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let rows = client
        .query_raw(endless, std::iter::empty::<i64>())
        .await
        .expect("the pull query starts");
    let first: Vec<i64> = rows
        .take(200_000)
        .map(|r| r.expect("a row").get::<_, i64>(0))
        .collect()
        .await;
    assert_eq!(first, (1..=200_000).collect::<Vec<i64>>());
    wait_pull_active(&server, 1.0, "while pgwire reads").await;
    drop(client);
    conn.abort();
    wait_pull_active(&server, 0.0, "after the pgwire client left").await;

    let response = reqwest::Client::new()
        .post(format!("{}/query-stream", server.http()))
        .json(&serde_json::json!({ "sql": endless }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut lines = 0usize;
    while lines < 200_000 {
        let chunk = body.next().await.expect("more rows").unwrap();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    wait_pull_active(&server, 1.0, "while HTTP reads").await;
    drop(body);
    wait_pull_active(&server, 0.0, "after the HTTP client left").await;
    assert_alive(&server, "abandoned pull queries").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_bounded_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--max-query-memory",
            "32",
            "--max-connections",
            "4",
            "--max-push-queries",
            "1",
        ],
    );
    let client = pg(&server).await.expect("connect");
    client
        .batch_execute("CREATE STREAM s (v INT) WITH (kafka_topic='s', partitions=1);")
        .await
        .unwrap();
    let values: Vec<String> = (0..3000).map(|i| format!("({i})")).collect();
    client
        .batch_execute(&format!("INSERT INTO s (v) VALUES {};", values.join(",")))
        .await
        .unwrap();

    // A collected result (POST /ksql answers in one document) of 3,000 x 3,000
    // rows is more than 32 MiB: refused, not grown.
    let (status, body) = server
        .ksql("SELECT a.v, b.v FROM s a CROSS JOIN s b;")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["sqlstate"], "53200", "{body}");
    // Working memory over the bound (an aggregate that cannot spill) is
    // refused the same way over pgwire.
    let code = pg_outcome(
        &client,
        "SELECT array_agg(a.v * 10000 + b.v) FROM s a CROSS JOIN s b",
    )
    .await;
    assert_eq!(code.as_deref(), Some("53200"), "{}", server.log_tail());
    let count = client
        .simple_query("SELECT COUNT(*) FROM s a CROSS JOIN s b")
        .await
        .expect("an aggregate over the same join fits");
    assert!(!count.is_empty());

    // RUN SCRIPT reads regular files only: a device is refused wherever it
    // is, a FIFO in the data directory would never end.
    let (status, body) = server.ksql("RUN SCRIPT '/dev/zero';").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not allowed"),
        "{body}"
    );
    let fifo = dir.path().join("data").join("script.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (status, body) = server
        .ksql(&format!("RUN SCRIPT '{}';", fifo.display()))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{body}"
    );

    // A push query over the cap is refused; the first one keeps streaming.
    let http = reqwest::Client::new();
    let first = http
        .post(format!("{}/query", server.http()))
        .json(&serde_json::json!({"sql": "SELECT v FROM s EMIT CHANGES"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = http
        .post(format!("{}/query", server.http()))
        .json(&serde_json::json!({"sql": "SELECT v FROM s EMIT CHANGES"}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 400);
    let body = second.text().await.unwrap();
    assert!(
        body.contains("53300") && body.contains("too many push queries"),
        "{body}"
    );
    drop(first);

    // Connections over the cap get Postgres' "too many clients".
    let mut clients = vec![client];
    let refused = loop {
        match pg(&server).await {
            Ok(c) => clients.push(c),
            Err(e) => break e,
        }
        assert!(
            clients.len() <= 4,
            "the cap of 4 connections was not enforced"
        );
    };
    assert_eq!(
        refused.as_db_error().map(|d| d.code().code()),
        Some("53300"),
        "{refused}"
    );
    drop(clients);

    // An HTTP client that never finishes its headers is dropped.
    let mut raw = TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
    raw.write_all(b"POST /ksql HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 256];
    // Ok: closed (or answered 408); a read timeout means it was held open.
    let result = raw.read(&mut buf);
    assert!(
        result.is_ok(),
        "a half-sent request was held for 60 s: {result:?}"
    );
    assert_alive(&server, "the limits").await;
}
