//! The server as users meet it: psql-compatible clients (tokio-postgres, simple and
//! extended protocol), HTTP statements, pull and push queries, metrics, and
//! pipelines kept in .sql files (`sluice run`, `RUN SCRIPT`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use support::server::{metric, TestServer};

async fn pg(server: &TestServer) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&server.pg_conn_string(), tokio_postgres::NoTls)
        .await
        .expect("connect over pgwire");
    tokio::spawn(conn);
    client
}

const PAGEVIEWS: &str = "INSERT INTO pageviews (user_id, url, status, latency_ms, ts) VALUES
  ('u1', '/home', 200, 12.0, '2024-01-01 00:00:01'),
  ('u2', '/home', 500, 80.0, '2024-01-01 00:00:02'),
  ('u1', '/cart', 200, 30.0, '2024-01-01 00:00:03'),
  ('u3', '/home', 503, 40.0, '2024-01-01 00:00:04');";

fn sluice_run(file: &Path, server: &TestServer) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(file)
        .arg("--server")
        .arg(server.http())
        .output()
        .expect("run sluice run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_from_files_pull_and_push_over_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--allowed-path", examples.to_str().unwrap()],
    );

    // `sluice run` twice: the second run must be a no-op, not an error.
    for round in 0..2 {
        for f in [
            "01_pageviews.sql",
            "02_login_failures.sql",
            "03_shop_joins.sql",
        ] {
            let out = sluice_run(&examples.join(f), &server);
            assert!(
                out.status.success(),
                "round {round} {f}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // RUN SCRIPT executes a server-side file, again idempotently.
    let script = examples.join("01_pageviews.sql");
    server
        .ksql_ok(&format!("RUN SCRIPT '{}';", script.display()))
        .await;

    server.ksql_ok(PAGEVIEWS).await;
    server
        .ksql_ok(
            "INSERT INTO logins (ip, user_name, success, ts) VALUES
               ('10.0.0.1', 'ann', false, '2024-01-01 00:00:01'),
               ('10.0.0.1', 'bob', false, '2024-01-01 00:00:02'),
               ('10.0.0.2', 'cy', false, '2024-01-01 00:00:02'),
               ('10.0.0.1', 'ann', false, '2024-01-01 00:00:03');",
        )
        .await;
    let rows = server
        .wait_for(
            "SELECT url, total, errors, error_rate FROM error_rate ORDER BY url",
            Duration::from_secs(20),
            |r| r.len() == 2 && r[1][1] == 3,
        )
        .await;
    assert_eq!(rows[0], serde_json::json!(["/cart", 1, 0, 0.0]));
    assert_eq!(rows[1][2], 2);
    let errors = server
        .wait_for(
            "SELECT user_id, status FROM server_errors ORDER BY user_id",
            Duration::from_secs(20),
            |r| r.len() == 2,
        )
        .await;
    assert_eq!(
        errors,
        vec![
            serde_json::json!(["u2", 500]),
            serde_json::json!(["u3", 503])
        ]
    );
    let suspicious = server
        .wait_for(
            "SELECT ip, failures, users_tried FROM suspicious_ips",
            Duration::from_secs(20),
            |r| r.len() == 1,
        )
        .await;
    assert_eq!(suspicious[0], serde_json::json!(["10.0.0.1", 3, 2]));
    // Windowed examples: three /home views in the first seconds fall into the same
    // twelve one-minute windows that advance by 5 s.
    let hopping = server
        .wait_for(
            "SELECT COUNT(*) AS windows, MIN(total) AS lo, MAX(total) AS hi FROM error_rate_1m WHERE url = '/home'",
            Duration::from_secs(20),
            |r| r.len() == 1 && r[0][0] == 12 && r[0][1] == 3,
        )
        .await;
    assert_eq!(hopping[0], serde_json::json!([12, 3, 3]));
    let failures = server
        .wait_for(
            "SELECT ip, failures, users_tried, CAST(windowstart AS VARCHAR) AS ws FROM login_failures_30s",
            Duration::from_secs(20),
            |r| r.len() == 1,
        )
        .await;
    assert_eq!(
        failures[0],
        serde_json::json!(["10.0.0.1", 3, 2, "2024-01-01T00:00:00"])
    );

    // Join examples: a search followed by a click, and one nobody clicked after.
    server
        .ksql_ok(
            "INSERT INTO searches (customer_id, query, ts) VALUES
               ('c1', 'shoes', '2024-01-01 10:00:00'),
               ('c2', 'hats', '2024-01-01 10:00:00');
             INSERT INTO shop_clicks (customer_id, url, ts) VALUES
               ('c1', '/shoes/42', '2024-01-01 10:03:00'),
               ('c8', '/moving-on', '2024-01-01 11:00:00');
             INSERT INTO searches (customer_id, query, ts) VALUES
               ('c9', 'later', '2024-01-01 11:00:00');",
        )
        .await;
    let clicked = server
        .wait_for(
            "SELECT customer_id, query, url FROM search_then_click",
            Duration::from_secs(20),
            |r| r.len() == 1,
        )
        .await;
    assert_eq!(clicked[0], serde_json::json!(["c1", "shoes", "/shoes/42"]));
    let abandoned = server
        .wait_for(
            "SELECT customer_id, query FROM abandoned_searches",
            Duration::from_secs(20),
            |r| r.len() == 1,
        )
        .await;
    assert_eq!(abandoned[0], serde_json::json!(["c2", "hats"]));

    // pgwire, simple protocol.
    let client = pg(&server).await;
    let msgs = client
        .simple_query("SELECT url, total FROM error_rate WHERE total > 1")
        .await
        .expect("simple query");
    let row = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("one row");
    assert_eq!(row.get(0), Some("/home"));
    assert_eq!(row.get(1), Some("3"));

    // pgwire, extended protocol with a parameter.
    let rows = client
        .query(
            "SELECT url, total, avg_latency_ms FROM error_rate WHERE url = $1",
            &[&"/home"],
        )
        .await
        .expect("extended query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(1), 3);
    assert!((rows[0].get::<_, f64>(2) - 44.0).abs() < 1e-9);

    // Key ranges and IN lists with parameters read by key; the same
    // conditions on an expression (never pushed down) give the same rows.
    let urls = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    for (by_key, by_expression) in [
        (
            "SELECT url FROM error_rate WHERE url >= $1 AND url < $2",
            "SELECT url FROM error_rate WHERE url || '' >= $1 AND url || '' < $2 ORDER BY url",
        ),
        (
            "SELECT url FROM error_rate WHERE url IN ($1, $2)",
            "SELECT url FROM error_rate WHERE url || '' IN ($1, $2) ORDER BY url",
        ),
    ] {
        for (a, b) in [
            ("/", "/z"),
            ("/home", "/i"),
            ("/checkout", "/home"),
            ("/x", "/y"),
        ] {
            let keyed = urls(client.query(by_key, &[&a, &b]).await.expect(by_key));
            let plain = urls(
                client
                    .query(by_expression, &[&a, &b])
                    .await
                    .expect(by_expression),
            );
            assert_eq!(keyed, plain, "{by_key} with {a}, {b}");
        }
    }
    let all = urls(
        client
            .query("SELECT url FROM error_rate", &[])
            .await
            .unwrap(),
    );
    assert!(all.contains(&"/home".to_string()), "{all:?}");
    assert_eq!(
        urls(
            client
                .query("SELECT url FROM error_rate WHERE url >= $1", &[&"/"])
                .await
                .unwrap()
        ),
        all,
        "a range over every key returns the table in key order"
    );

    // A join between two materialized tables, as a pull query.
    let joined = client
        .query(
            "SELECT e.url, e.total, s.failures FROM error_rate e JOIN suspicious_ips s ON e.total = s.failures",
            &[],
        )
        .await
        .expect("join");
    assert_eq!(joined.len(), 1);

    // Errors carry a SQLSTATE, a position and a hint.
    let err = client
        .simple_query("SELECT *\nFROM no_such_stream")
        .await
        .expect_err("unknown relation");
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "42P01");
    assert!(db.message().contains("no_such_stream"), "{}", db.message());
    assert!(
        db.message().contains("line 2, column 6"),
        "{}",
        db.message()
    );
    assert!(db.hint().is_some());

    // Push query over HTTP (ksqlDB's /query-stream): newline-delimited JSON as rows arrive.
    let resp = reqwest::Client::new()
        .post(format!("{}/query-stream", server.http()))
        .json(&serde_json::json!({
            "sql": "SELECT user_id, url FROM pageviews WHERE status >= 500 EMIT CHANGES",
            "streamsProperties": {"auto.offset.reset": "earliest"}
        }))
        .send()
        .await
        .expect("push query");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while text.lines().count() < 3 {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("rows arrive")
            .expect("stream open")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("columnNames"), "{text}");
    assert_eq!(lines[1], r#"["u2","/home"]"#);
    assert_eq!(lines[2], r#"["u3","/home"]"#);
    let m = server.metrics().await;
    assert_eq!(metric(&m, "sluice_push_queries_active"), Some(1.0), "{m}");
    // Closing the client stops the query.
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = server.metrics().await;
        if metric(&m, "sluice_push_queries_active") == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "push query still active:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Push query over pgwire with COPY, as psql users watch one; new rows stream in.
    let copy = client
        .copy_out("COPY (SELECT user_id, status FROM pageviews EMIT CHANGES) TO STDOUT")
        .await
        .expect("COPY push query");
    futures::pin_mut!(copy);
    server
        .ksql_ok("INSERT INTO pageviews (user_id, url, status, latency_ms, ts) VALUES ('u9', '/new', 404, 1.0, '2024-01-01 00:01:00');")
        .await;
    let line = tokio::time::timeout(Duration::from_secs(20), copy.next())
        .await
        .expect("a row arrives")
        .expect("stream open")
        .expect("copy data");
    assert_eq!(&line[..], b"u9\t404\n");

    // Metrics per query.
    let m = server.metrics().await;
    assert_eq!(
        metric(
            &m,
            "sluice_query_records_in_total{query=\"CTAS_ERROR_RATE_2\"}"
        ),
        Some(5.0),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l
                .starts_with("sluice_query_consumer_lag{query=\"CTAS_ERROR_RATE_2\",partition=")),
        "{m}"
    );
    assert!(
        m.contains("sluice_state_bytes{query=\"CTAS_ERROR_RATE_2\"}"),
        "{m}"
    );

    // Info and health.
    let info: serde_json::Value = reqwest::get(format!("{}/info", server.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["log_backend"], "local");
    let health = reqwest::get(format!("{}/healthz", server.http()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_survives_restart_and_ddl_behaves() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(&dir.path().join("data"), &[]);
    server
        .ksql_ok(
            "CREATE STREAM s (id VARCHAR KEY, v INT) WITH (kafka_topic='s_topic', partitions=3);
             CREATE STREAM big AS SELECT id, v FROM s WHERE v > 10;
             CREATE TABLE t AS SELECT id, SUM(v) AS total FROM s GROUP BY id;
             INSERT INTO s (id, v) VALUES ('a', 5), ('a', 20), ('b', 30);",
        )
        .await;
    server
        .wait_for(
            "SELECT id, total FROM t ORDER BY id",
            Duration::from_secs(20),
            |r| r.len() == 2,
        )
        .await;
    let (status, body) = server.ksql("CREATE STREAM s (x INT);").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["sqlstate"], "42P07", "{body}");
    let (status, body) = server.ksql("DROP STREAM s;").await;
    assert_eq!(status, 400, "dropping a stream queries read: {body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("read it"),
        "{body}"
    );

    server.stop();
    server.restart();
    let shown = server
        .ksql_ok("SHOW STREAMS; SHOW TABLES; SHOW QUERIES; SHOW TOPICS; DESCRIBE EXTENDED t;")
        .await;
    let text = shown.to_string();
    for expected in [
        "\"s\"",
        "s_topic",
        "\"big\"",
        "CSAS_BIG_1",
        "CTAS_T_2",
        "RUNNING",
    ] {
        assert!(
            text.contains(expected),
            "{expected} missing after restart: {text}"
        );
    }
    server
        .ksql_ok("INSERT INTO s (id, v) VALUES ('a', 1);")
        .await;
    let rows = server
        .wait_for(
            "SELECT id, total FROM t ORDER BY id",
            Duration::from_secs(20),
            |r| r.first().is_some_and(|a| a[1] == 26),
        )
        .await;
    assert_eq!(
        rows,
        vec![serde_json::json!(["a", 26]), serde_json::json!(["b", 30])]
    );

    // TERMINATE stops a query; its sink stays; then the chain can be dropped.
    server.ksql_ok("TERMINATE CSAS_BIG_1;").await;
    let q = server.ksql_ok("SHOW QUERIES;").await.to_string();
    assert!(!q.contains("CSAS_BIG_1"), "{q}");
    server
        .ksql_ok("DROP STREAM big DELETE TOPIC; DROP TABLE t; DROP STREAM s;")
        .await;
    let topics = server.ksql_ok("SHOW TOPICS;").await.to_string();
    assert!(!topics.contains("\"big\""), "{topics}");
    assert!(topics.contains("s_topic"), "{topics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_init_runs_a_directory_of_pipelines_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let init = examples.to_str().unwrap();
    let mut server = TestServer::start(&dir.path().join("data"), &["--init", init]);
    let shown = server
        .ksql_ok("SHOW STREAMS; SHOW TABLES;")
        .await
        .to_string();
    for name in [
        "pageviews",
        "server_errors",
        "logins",
        "error_rate",
        "suspicious_ips",
        "users",
    ] {
        assert!(
            shown.contains(&format!("\"{name}\"")),
            "{name} missing: {shown}"
        );
    }
    // Starting again with the same --init is safe (IF NOT EXISTS).
    server.stop();
    server.restart();
    let queries = server.ksql_ok("SHOW QUERIES;").await.to_string();
    assert!(queries.contains("CTAS_ERROR_RATE"), "{queries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_plain_text_and_tells_each_query_s_life() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in.jsonl"), "{\"v\": 1}\n{\"v\": 2}\n").unwrap();
    let server = TestServer::start(&data, &[]);
    server
        .ksql_ok(&format!(
            "CREATE STREAM f (v INT) WITH (connector='file', path='{}');
             CREATE STREAM doubled AS SELECT v * 2 AS w FROM f;
             CREATE STREAM t (v INT) WITH (kafka_topic='t', partitions=1);
             CREATE STREAM kept AS SELECT v FROM t;",
            data.join("in.jsonl").display()
        ))
        .await;
    server
        .wait_for("SHOW QUERIES", Duration::from_secs(20), |rows| {
            rows.iter().any(|r| {
                r.to_string().contains("CSAS_DOUBLED") && r.to_string().contains("FINISHED")
            })
        })
        .await;
    server.ksql_ok("TERMINATE CSAS_KEPT_2;").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = server.log_text();
        if log.contains("query terminated") || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Written to a file, not a terminal: no colour codes.
    assert!(!log.contains('\u{1b}'), "{log}");
    let line = |needle: &str, query: &str| {
        assert!(
            log.lines().any(|l| l.contains(needle) && l.contains(query)),
            "no '{needle}' line for {query}:\n{log}"
        );
    };
    line("query started", "CSAS_DOUBLED_1");
    line("query started", "CSAS_KEPT_2");
    line("query finished: its input ended", "CSAS_DOUBLED_1");
    line("records_in=2", "CSAS_DOUBLED_1");
    line("query terminated", "CSAS_KEPT_2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ksqldb_health_and_command_status_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    server
        .ksql_ok(
            "CREATE STREAM clicks (user_id VARCHAR KEY, url VARCHAR) WITH (kafka_topic='clicks', partitions=1);
             CREATE TABLE per_user AS SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id;",
        )
        .await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthcheck", server.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"isHealthy": true, "details": {"metastore": {"isHealthy": true}, "kafka": {"isHealthy": true}}})
    );
    let status: serde_json::Value = http
        .get(format!("{}/status", server.http()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status,
        serde_json::json!({"commandStatuses": {"stream/CLICKS/create": "SUCCESS", "table/PER_USER/create": "SUCCESS"}})
    );
}

/// ksqlDB's REST protocol end to end, beyond what the real ksqlDB clients
/// (tests/clients.rs) exercise: refusals, a v1 push query ended by a
/// TERMINATE from another protocol, and the typed `/ksql` entities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ksqldb_rest_inserts_streams_and_typed_entities() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let created = server
        .ksql_ok(
            "CREATE STREAM s (k VARCHAR KEY, v INT) WITH (kafka_topic='s', partitions=2);
             CREATE TABLE per_k AS SELECT k, SUM(v) AS total FROM s GROUP BY k;",
        )
        .await;
    assert_eq!(created[0]["commandId"], "stream/S/create", "{created}");
    assert_eq!(created[1]["commandStatus"]["queryId"], "CTAS_PER_K_1");
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.http());

    // Inserts into what does not exist are refused before any row.
    let refused = http
        .post(url("/inserts-stream"))
        .body("{\"target\": \"nope\"}\n{\"k\": \"a\", \"v\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["sqlstate"], "42P01", "{body}");

    let acks = http
        .post(url("/inserts-stream"))
        .body("{\"target\": \"S\"}\n{\"K\": \"a\", \"V\": 1}\n\n{\"k\": \"b\", \"v\": 2}\n{\"k\": \"a\", \"v\": 4}")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        acks,
        "{\"seq\":0,\"status\":\"ok\"}\n{\"seq\":1,\"status\":\"ok\"}\n{\"seq\":2,\"status\":\"ok\"}\n"
    );
    let rows = server
        .wait_for(
            "SELECT k, total FROM per_k ORDER BY k",
            Duration::from_secs(20),
            |r| r.len() == 2 && r[0][1] == 5,
        )
        .await;
    assert_eq!(
        rows,
        vec![serde_json::json!(["a", 5]), serde_json::json!(["b", 2])]
    );

    // A v1 push query, ended by TERMINATE over pgwire: its body closes with
    // ksqlDB's final message.
    let response = http
        .post(url("/query"))
        .json(&serde_json::json!({
            "ksql": "SELECT k, v FROM s EMIT CHANGES;",
            "streamsProperties": {"auto.offset.reset": "earliest"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while text.matches("\"row\"").count() < 3 {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("rows arrive")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let header: serde_json::Value = serde_json::from_str(
        text.lines()
            .next()
            .unwrap()
            .trim_start_matches('[')
            .trim_end_matches(','),
    )
    .unwrap();
    assert_eq!(header["header"]["schema"], "`k` STRING, `v` INTEGER");
    let query_id = header["header"]["queryId"].as_str().unwrap().to_string();
    pg(&server)
        .await
        .simple_query(&format!("TERMINATE {query_id}"))
        .await
        .expect("TERMINATE a push query");
    while let Some(chunk) = tokio::time::timeout_at(deadline, body.next())
        .await
        .expect("the stream ends")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let whole: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
    let items = whole.as_array().unwrap();
    let mut got: Vec<&serde_json::Value> = items[1..items.len() - 1]
        .iter()
        .map(|i| &i["row"]["columns"])
        .collect();
    got.sort_by_key(|v| v.to_string());
    assert_eq!(
        got,
        vec![
            &serde_json::json!(["a", 1]),
            &serde_json::json!(["a", 4]),
            &serde_json::json!(["b", 2])
        ]
    );
    assert_eq!(items[items.len() - 1]["finalMessage"], "Query Completed");
    let closed = http
        .post(url("/close-query"))
        .json(&serde_json::json!({"queryId": query_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status().as_u16(), 400, "the query is gone");

    // Typed entities.
    let shown = server
        .ksql_ok("SHOW QUERIES; SHOW TOPICS; SHOW PROPERTIES; DESCRIBE per_k;")
        .await;
    assert_eq!(shown[0]["@type"], "queries");
    assert_eq!(shown[0]["queries"][0]["id"], "CTAS_PER_K_1");
    assert_eq!(
        shown[0]["queries"][0]["sinks"],
        serde_json::json!(["per_k"])
    );
    assert_eq!(shown[0]["queries"][0]["state"], "RUNNING");
    assert_eq!(shown[1]["@type"], "kafka_topics");
    let s_topic = shown[1]["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "s")
        .cloned();
    assert_eq!(
        s_topic,
        Some(serde_json::json!({"name": "s", "replicaInfo": [1, 1]}))
    );
    assert_eq!(shown[2]["@type"], "properties");
    assert!(shown[2]["properties"].as_array().unwrap().len() > 1);
    let source = &shown[3]["sourceDescription"];
    assert_eq!(source["type"], "TABLE");
    assert_eq!(source["writeQueries"][0]["id"], "CTAS_PER_K_1");
    assert_eq!(
        source["fields"],
        serde_json::json!([
            {"name": "k", "schema": {"type": "STRING", "fields": null, "memberSchema": null}, "type": "KEY"},
            {"name": "total", "schema": {"type": "BIGINT", "fields": null, "memberSchema": null}}
        ])
    );
}

/// CREATE VIEW: a named query read by pull, push and persistent queries,
/// kept across a crash, guarded against drops that would break its readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_named_queries_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(&dir.path().join("data"), &[]);
    server
        .ksql_ok(
            "CREATE STREAM orders (id BIGINT KEY, customer VARCHAR, amount DOUBLE) WITH (kafka_topic='orders', partitions=1);
             CREATE VIEW big AS SELECT id, customer, amount FROM orders WHERE amount > 5;
             CREATE VIEW big_ann AS SELECT id, amount FROM big WHERE customer = 'ann';
             CREATE TABLE big_per_customer AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM big GROUP BY customer;
             INSERT INTO orders (id, customer, amount) VALUES (1, 'ann', 10.0), (2, 'bob', 3.0), (3, 'ann', 7.0), (4, 'bob', 9.0);",
        )
        .await;
    assert_eq!(
        server
            .pull("SELECT id, amount FROM big_ann ORDER BY id")
            .await,
        vec![serde_json::json!([1, 10.0]), serde_json::json!([3, 7.0])]
    );
    let totals =
        |r: &[serde_json::Value]| r.iter().map(|x| x[1].as_i64().unwrap_or(0)).sum::<i64>();
    let rows = server
        .wait_for(
            "SELECT customer, n, total FROM big_per_customer ORDER BY customer",
            Duration::from_secs(20),
            |r| totals(r) == 3,
        )
        .await;
    assert_eq!(
        rows,
        vec![
            serde_json::json!(["ann", 2, 17.0]),
            serde_json::json!(["bob", 1, 9.0])
        ]
    );

    // A push query over a view, from the start.
    let pushed = reqwest::Client::new()
        .post(format!("{}/query-stream", server.http()))
        .json(&serde_json::json!({
            "sql": "SELECT id FROM big EMIT CHANGES LIMIT 3",
            "properties": {"auto.offset.reset": "earliest"}
        }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut ids: Vec<&str> = pushed.lines().skip(1).collect();
    ids.sort();
    assert_eq!(ids, vec!["[1]", "[3]", "[4]"], "{pushed}");

    // Refusals that keep readers working.
    let client = pg(&server).await;
    for (sql, expected) in [
        ("DROP VIEW big", "big_ann"),
        ("DROP STREAM orders", "view big"),
        ("INSERT INTO big (id) VALUES (9)", "is a view"),
        (
            "CREATE STREAM big (x INT) WITH (kafka_topic='x')",
            "already exists",
        ),
        ("CREATE VIEW big AS SELECT 1", "already exists"),
    ] {
        let e = client.simple_query(sql).await.expect_err(sql);
        let message = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(message.contains(expected), "{sql}: {message}");
    }

    // A crash: the views and the query over them come back.
    server.kill9();
    server.restart();
    server
        .ksql_ok(
            "INSERT INTO orders (id, customer, amount) VALUES (5, 'ann', 100.0), (6, 'cy', 1.0);",
        )
        .await;
    let rows = server
        .wait_for(
            "SELECT customer, n, total FROM big_per_customer ORDER BY customer",
            Duration::from_secs(30),
            |r| totals(r) == 4,
        )
        .await;
    assert_eq!(
        rows,
        vec![
            serde_json::json!(["ann", 3, 117.0]),
            serde_json::json!(["bob", 1, 9.0])
        ]
    );
    let client = pg(&server).await;
    let shown = client.simple_query("SHOW VIEWS").await.unwrap();
    let names: Vec<String> = shown
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["big", "big_ann"]);
    client
        .simple_query("CREATE OR REPLACE VIEW big_ann AS SELECT id FROM big WHERE amount > 50")
        .await
        .unwrap();
    assert_eq!(
        server.pull("SELECT id FROM big_ann").await,
        vec![serde_json::json!([5])]
    );
    client.simple_query("DROP VIEW big_ann").await.unwrap();
    let still_read = client
        .simple_query("DROP VIEW big")
        .await
        .expect_err("read by a query");
    assert!(
        still_read
            .as_db_error()
            .is_some_and(|d| d.message().contains("CTAS_BIG_PER_CUSTOMER")),
        "{still_read:?}"
    );
}
