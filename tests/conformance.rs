//! ksqlDB conformance: cases in `tests/conformance/*.toml` give statements, input
//! records as exact key bytes, value bytes and timestamps, and the exact output
//! records each topic must then hold. Every case runs on its own server against
//! a real Kafka-protocol broker (Tansu), so the bytes checked are the bytes a
//! Kafka consumer would read. The file format is described in
//! `tests/conformance/README.md`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use sluice::connectors::kafka::KafkaBackend;
use sluice::connectors::{LogBackend, LogRecord, OutRecord, StartFrom};
use support::broker::TestBroker;
use support::server::TestServer;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The point of issue #14 the case shows.
    point: u32,
    statements: String,
    /// Partitions of the input topics (default 1), created before the statements.
    #[serde(default)]
    partitions: BTreeMap<String, i32>,
    #[serde(default)]
    input: Vec<Record>,
    #[serde(default)]
    output: Vec<Record>,
    /// The last statement must be refused with a message containing this.
    error: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Record {
    topic: String,
    key: Option<String>,
    value: Option<String>,
    timestamp: i64,
}

/// A byte spec: `hex:0a0b`, `int:42` (4 bytes big-endian), `bigint:42`,
/// `double:1.5`, or else the text's UTF-8 bytes.
fn bytes_of(spec: &str) -> Vec<u8> {
    let parse = |what: &str, s: &str| -> String {
        assert!(!s.is_empty(), "empty {what} in byte spec '{spec}'");
        s.to_string()
    };
    if let Some(h) = spec.strip_prefix("hex:") {
        let h: String = parse("hex", h).split_whitespace().collect();
        return (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex byte spec"))
            .collect();
    }
    if let Some(n) = spec.strip_prefix("int:") {
        return parse("int", n)
            .parse::<i32>()
            .expect("int spec")
            .to_be_bytes()
            .to_vec();
    }
    if let Some(n) = spec.strip_prefix("bigint:") {
        return parse("bigint", n)
            .parse::<i64>()
            .expect("bigint spec")
            .to_be_bytes()
            .to_vec();
    }
    if let Some(n) = spec.strip_prefix("double:") {
        return parse("double", n)
            .parse::<f64>()
            .expect("double spec")
            .to_be_bytes()
            .to_vec();
    }
    spec.as_bytes().to_vec()
}

/// How a record is shown in a failure: text when it is printable, hex otherwise.
fn show(b: &Option<Bytes>) -> String {
    match b {
        None => "∅".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
            _ => format!(
                "hex:{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
        },
    }
}

/// A record as compared: key bytes, value bytes, timestamp.
type Exact = (Option<Bytes>, Option<Bytes>, i64);

fn show_record(r: &Exact) -> String {
    format!("key {} value {} ts {}", show(&r.0), show(&r.1), r.2)
}

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/conformance")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// Reads a topic from the start until the end of every partition.
async fn read_topic(backend: &KafkaBackend, topic: &str) -> Vec<LogRecord> {
    let Ok(mut reader) = backend.reader(topic, StartFrom::Earliest).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.caught_up().await.unwrap_or(true) && Instant::now() < deadline {
        out.extend(
            reader
                .poll(10_000, Duration::from_millis(100))
                .await
                .unwrap_or_default(),
        );
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Runs one case; returns what went wrong, if anything.
async fn run_case(
    broker: &TestBroker,
    backend: &Arc<KafkaBackend>,
    n: usize,
    case: &Case,
) -> Result<(), String> {
    // Topics get a per-case suffix so cases share the broker without meeting.
    let mut topics: Vec<&str> = case
        .input
        .iter()
        .chain(&case.output)
        .map(|r| r.topic.as_str())
        .chain(case.partitions.keys().map(String::as_str))
        .collect();
    topics.sort();
    topics.dedup();
    let real = |t: &str| format!("{t}_c{n}");
    let mut statements = case.statements.clone();
    for t in &topics {
        statements = statements.replace(&format!("'{t}'"), &format!("'{}'", real(t)));
    }
    let inputs: Vec<&str> = {
        let mut v: Vec<&str> = case.input.iter().map(|r| r.topic.as_str()).collect();
        v.extend(case.partitions.keys().map(String::as_str));
        v.sort();
        v.dedup();
        v
    };
    for t in &inputs {
        let partitions = case.partitions.get(*t).copied().unwrap_or(1);
        backend
            .create_topic(&real(t), partitions)
            .await
            .map_err(|e| format!("creating {t}: {e}"))?;
    }

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--kafka-brokers",
            &broker.addr,
            "--checkpoint-interval-ms",
            "200",
        ],
    );
    let (status, body) = server.ksql(&statements).await;
    match (&case.error, status) {
        (Some(expected), 200) => {
            return Err(format!(
                "accepted; expected an error containing {expected:?}: {body}"
            ))
        }
        (Some(expected), _) => {
            let message = body["message"].as_str().unwrap_or_default().to_string();
            return if message.contains(expected.as_str()) {
                Ok(())
            } else {
                Err(format!("error {message:?} does not contain {expected:?}"))
            };
        }
        (None, 200) => {}
        (None, _) => return Err(format!("statements refused: {body}")),
    }

    // Input in order, one topic at a time as listed.
    for r in &case.input {
        let mut w = backend
            .writer(&real(&r.topic))
            .await
            .map_err(|e| e.to_string())?;
        w.send(vec![OutRecord {
            partition: None,
            timestamp: r.timestamp,
            key: r.key.as_deref().map(|k| Bytes::from(bytes_of(k))),
            value: r.value.as_deref().map(|v| Bytes::from(bytes_of(v))),
        }])
        .await
        .map_err(|e| e.to_string())?;
        w.flush().await.map_err(|e| e.to_string())?;
    }

    let mut expected: BTreeMap<&str, Vec<Exact>> = BTreeMap::new();
    for r in &case.output {
        expected.entry(r.topic.as_str()).or_default().push((
            r.key.as_deref().map(|k| Bytes::from(bytes_of(k))),
            r.value.as_deref().map(|v| Bytes::from(bytes_of(v))),
            r.timestamp,
        ));
    }
    // Wait until every output topic has at least what is expected, then a
    // little longer so extra records would show too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: BTreeMap<&str, Vec<Exact>> = BTreeMap::new();
    for settle in [false, true] {
        if settle {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        loop {
            got.clear();
            for t in expected.keys() {
                let records = read_topic(backend, &real(t)).await;
                got.insert(
                    t,
                    records
                        .into_iter()
                        .map(|r| (r.key, r.value, r.timestamp))
                        .collect(),
                );
            }
            let enough = expected
                .iter()
                .all(|(t, e)| got.get(t).map_or(0, Vec::len) >= e.len());
            if enough || settle || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut problems = Vec::new();
    for (t, e) in &expected {
        let g = got.get(t).cloned().unwrap_or_default();
        if &g != e {
            problems.push(format!(
                "topic {t}:\n  expected:\n{}\n  got:\n{}",
                e.iter()
                    .map(|r| format!("    {}", show_record(r)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                g.iter()
                    .map(|r| format!("    {}", show_record(r)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\nserver log:\n{}",
            problems.join("\n"),
            server.log_tail()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ksqldb_conformance_cases() {
    let broker = TestBroker::start();
    let backend = KafkaBackend::new(&broker.addr, &[]).expect("kafka client");
    let only = std::env::var("SLUICE_CONFORMANCE_CASE").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut n = 0;
    for file in case_files() {
        let text = std::fs::read_to_string(&file).expect("case file");
        let cases: CaseFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for case in &cases.case {
            n += 1;
            if only
                .as_ref()
                .is_some_and(|o| !case.name.contains(o.as_str()))
            {
                continue;
            }
            ran += 1;
            if let Err(e) = run_case(&broker, &backend, n, case).await {
                failures.push(format!(
                    "{} / {} (point {}): {e}",
                    file.file_name().unwrap_or_default().to_string_lossy(),
                    case.name,
                    case.point
                ));
            }
        }
    }
    eprintln!("{ran} conformance cases ran, {} failed", failures.len());
    assert!(ran > 0, "no conformance case ran");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn byte_specs() {
    assert_eq!(bytes_of("int:42"), vec![0, 0, 0, 42]);
    assert_eq!(bytes_of("bigint:-1"), vec![0xff; 8]);
    assert_eq!(bytes_of("hex:00 ff"), vec![0, 255]);
    assert_eq!(bytes_of("double:1"), vec![0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(bytes_of("a"), b"a".to_vec());
}
