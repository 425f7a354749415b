//! Runs the real `sluice` binary for a test, on free ports and a data directory the
//! test owns, so it can be killed (even with SIGKILL) and started again.

#![allow(dead_code)] // Not every test binary uses every helper.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestServer {
    child: Option<Child>,
    pub pg_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl TestServer {
    /// Starts `sluice serve` on `data_dir` with extra flags and waits until both
    /// listeners answer.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> TestServer {
        let mut s = TestServer {
            child: None,
            pg_port: free_port(),
            http_port: free_port(),
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log: data_dir.with_extension("log"),
        };
        s.spawn();
        s
    }

    /// Starts the process; when a port it needs was taken meanwhile (ports come
    /// from the ephemeral range, where any client socket can hold one for a
    /// moment, for instance between a kill and a restart), tries again, then on
    /// other ports.
    fn spawn(&mut self) {
        for attempt in 0..6 {
            let logged = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
            match self.try_spawn() {
                Ok(()) => return,
                Err(status) => {
                    let text = self.log_text();
                    let fresh = text.get(logged..).unwrap_or_default();
                    if !fresh.contains("in use") || attempt == 5 {
                        // The start of this run's log: the error comes before
                        // any backtrace.
                        let head: Vec<&str> = fresh.lines().take(60).collect();
                        panic!("sluice exited with {status}:\n{}", head.join("\n"));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    if attempt >= 2 {
                        self.pg_port = free_port();
                        self.http_port = free_port();
                    }
                }
            }
        }
    }

    /// Starts the process and waits until both listeners answer; the exit
    /// status if it ended first.
    fn try_spawn(&mut self) -> Result<(), std::process::ExitStatus> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--pg-addr")
            .arg(format!("127.0.0.1:{}", self.pg_port))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(&self.extra_args)
            .env("SLUICE_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = TcpStream::connect(("127.0.0.1", self.pg_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.http_port)).is_ok();
            if up {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(status);
            }
            if Instant::now() > deadline {
                panic!("sluice did not start listening:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn pg_conn_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=sluice dbname=sluice",
            self.pg_port
        )
    }

    /// POST /ksql; panics on a transport error, returns (status, body).
    pub async fn ksql(&self, sql: &str) -> (u16, serde_json::Value) {
        self.ksql_with(sql, serde_json::json!({})).await
    }

    /// POST /ksql with ksqlDB's `streamsProperties`.
    pub async fn ksql_with(
        &self,
        sql: &str,
        properties: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/ksql", self.http()))
            .json(&serde_json::json!({ "ksql": sql, "streamsProperties": properties }))
            .send()
            .await
            .expect("POST /ksql");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    /// POST /ksql that must succeed.
    pub async fn ksql_ok(&self, sql: &str) -> serde_json::Value {
        let (status, body) = self.ksql(sql).await;
        assert_eq!(status, 200, "{sql}\n{body:#}\n{}", self.log_tail());
        body
    }

    /// A pull query over /query-stream: rows as JSON arrays.
    pub async fn pull(&self, sql: &str) -> Vec<serde_json::Value> {
        self.try_pull(sql).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A pull query that may be refused (a query still recovering, say).
    pub async fn try_pull(&self, sql: &str) -> Result<Vec<serde_json::Value>, String> {
        let resp = reqwest::Client::new()
            .post(format!("{}/query-stream", self.http()))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("{sql}: {e}"))?;
        if status != 200 {
            return Err(format!("{sql}: {status} {text}"));
        }
        Ok(text
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("row JSON"))
            .collect())
    }

    /// Polls a pull query until `check` accepts its rows, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        sql: &str,
        timeout: Duration,
        check: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.pull(sql).await;
            if check(&rows) {
                return rows;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting on {sql}; last rows: {rows:?}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls /metrics until the sample `name{labels}` satisfies `ok`, or
    /// panics after `timeout` with `what` and the server's log.
    pub async fn wait_metric(
        &self,
        sample: &str,
        timeout: Duration,
        what: &str,
        ok: impl Fn(f64) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let value = metric(&self.metrics().await, sample);
            if value.is_some_and(&ok) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: {sample} is {value:?} after {timeout:?}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http()))
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e:?}\n{}", self.log_tail()))
            .text()
            .await
            .expect("metrics text")
    }
}

/// The value of a Prometheus sample line `name{labels} value` (labels as written).
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
