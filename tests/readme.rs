//! The README's first session, run literally: its SQL block goes through psql
//! as a user would paste it, and what the README says appears does.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::server::TestServer;

/// The ```sql block under "## A first session".
fn first_session() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## A first session")
        .nth(1)
        .expect("the README has a first session");
    let block = section
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a sql block in the first session");
    block.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_first_session_shows_what_it_promises() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let sql = first_session();
    assert!(sql.contains("COPY (SELECT * FROM errors EMIT CHANGES) TO STDOUT"));

    // At a terminal psql's output is line-buffered and the COPY's rows show as
    // they stream; into a pipe stdio would hold them back. stdbuf gives psql
    // the terminal's buffering.
    let mut psql = Command::new("stdbuf")
        .args(["-oL", "psql"])
        .arg(server.pg_conn_string())
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs");
    psql.stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    // The session ends in a push query that runs until Ctrl-C: read until
    // the 503 streams out, then stop psql.
    let stdout = psql.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let streamed = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.starts_with("u2\t/home\t503\t80") => break line,
            Ok(line) => seen.push(line),
            Err(_) if Instant::now() > deadline => {
                let _ = psql.kill();
                let out = psql.wait_with_output().unwrap();
                panic!(
                    "the COPY never printed the 503; psql printed:\n{}\n{}\n{}",
                    seen.join("\n"),
                    String::from_utf8_lossy(&out.stderr),
                    server.log_tail()
                );
            }
            Err(_) => {
                if let Some(status) = psql.try_wait().unwrap() {
                    let out = psql.wait_with_output().unwrap();
                    panic!(
                        "psql exited ({status}) before the COPY streamed:\n{}\n{}",
                        seen.join("\n"),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    };
    assert!(streamed.ends_with("2024-01-01 00:00:02"), "{streamed}");
    let _ = psql.kill();
    let _ = psql.wait();

    // What the README says the tables hold, a moment later.
    server
        .wait_for(
            "SELECT url, total, errors, avg_latency FROM per_url ORDER BY url",
            Duration::from_secs(20),
            |rows| rows == [json!(["/cart", 1, 0, 15.0]), json!(["/home", 3, 1, 34.5])],
        )
        .await;
    server
        .wait_for(
            "SELECT url, total, p99, windowstart FROM per_minute",
            Duration::from_secs(20),
            |rows| rows == [json!(["/home", 2, 80.0, "2024-01-01T00:00:00"])],
        )
        .await;
}
