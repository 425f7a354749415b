//! Behaviour tests as data: each file in tests/cases/ is a script of SQL
//! statements, input records and expected query results, run against an engine on
//! the embedded local log. See tests/cases/README.md for the format.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use sluice::config::ServerConfig;
use sluice::connectors::OutRecord;
use sluice::engine::{Engine, Session, StatementResult};

enum Step {
    Sql(String),
    Input {
        topic: String,
        lines: Vec<String>,
    },
    Expect {
        query: String,
        rows: Vec<String>,
    },
    ExpectError {
        sql: String,
        fragments: Vec<String>,
    },
    /// A Prometheus sample (`name{labels}`) that must reach the value given.
    Metric {
        sample: String,
        value: String,
    },
    Restart,
}

fn parse_case(text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut sql = String::new();
    let mut block: Option<(String, String, Vec<String>)> = None;
    let flush_block = |block: &mut Option<(String, String, Vec<String>)>, steps: &mut Vec<Step>| {
        if let Some((kind, arg, lines)) = block.take() {
            match kind.as_str() {
                "input" => steps.push(Step::Input { topic: arg, lines }),
                "expect" => steps.push(Step::Expect {
                    query: arg,
                    rows: lines,
                }),
                "error" => steps.push(Step::ExpectError {
                    sql: arg,
                    fragments: lines,
                }),
                "metric" => steps.push(Step::Metric {
                    sample: arg,
                    value: lines.concat(),
                }),
                other => panic!("unknown block '{other}'"),
            }
        }
    };
    for line in text.lines() {
        if let Some(directive) = line.strip_prefix("--- ") {
            flush_block(&mut block, &mut steps);
            if !sql.trim().is_empty() {
                steps.push(Step::Sql(std::mem::take(&mut sql)));
            }
            let (kind, arg) = directive.split_once(' ').unwrap_or((directive, ""));
            if kind == "restart" {
                steps.push(Step::Restart);
            } else {
                block = Some((kind.to_string(), arg.trim().to_string(), Vec::new()));
            }
        } else if let Some((_, _, lines)) = block.as_mut() {
            if line.trim().is_empty() {
                // A blank line ends the block; what follows is SQL again.
                flush_block(&mut block, &mut steps);
            } else {
                lines.push(line.trim().to_string());
            }
        } else {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    flush_block(&mut block, &mut steps);
    if !sql.trim().is_empty() {
        steps.push(Step::Sql(sql));
    }
    steps
}

fn format_rows(batches: &[RecordBatch]) -> Vec<String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter"))
            .collect();
        for row in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
    }
    out
}

async fn start(dir: &Path) -> std::sync::Arc<Engine> {
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        checkpoint_interval: Duration::from_millis(100),
        ..Default::default()
    };
    Engine::start(config).await.expect("engine starts")
}

async fn run_case(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start(dir.path()).await;
    let mut session = Session::new();
    for step in parse_case(&text) {
        match step {
            Step::Sql(sql) => {
                for r in engine.execute(&mut session, &sql).await {
                    if let Err(e) = r {
                        panic!("{}: statement failed: {e}\n{sql}", path.display());
                    }
                }
            }
            Step::Input { topic, lines } => {
                let mut writer = engine.backend().writer(&topic).await.expect("writer");
                let records = lines
                    .iter()
                    .map(|l| {
                        let (key, value) = match l.split_once(" | ") {
                            Some((k, v)) if !l.starts_with('{') => {
                                (Some(Bytes::from(k.to_string())), v)
                            }
                            _ => (None, l.as_str()),
                        };
                        OutRecord {
                            partition: None,
                            timestamp: 1_700_000_000_000,
                            key,
                            value: (value != "null").then(|| Bytes::from(value.to_string())),
                        }
                    })
                    .collect();
                writer.send(records).await.expect("send");
                writer.flush().await.expect("flush");
            }
            Step::Expect { query, rows } => {
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    let mut results = engine.execute(&mut session, &query).await;
                    let got = match results.pop() {
                        Some(Ok(StatementResult::Rows { batches, .. })) => format_rows(&batches),
                        Some(Err(e)) => panic!("{}: {query}: {e}", path.display()),
                        other => panic!("{}: {query}: not rows: {other:?}", path.display()),
                    };
                    if got == rows {
                        break;
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "{}: {query}\nexpected:\n  {}\ngot:\n  {}",
                            path.display(),
                            rows.join("\n  "),
                            got.join("\n  ")
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Step::ExpectError { sql, fragments } => {
                let mut results = engine.execute(&mut session, &sql).await;
                match results.pop() {
                    Some(Err(e)) => {
                        let text = format!("{e} [{}]", e.sqlstate());
                        for f in &fragments {
                            assert!(
                                text.contains(f.as_str()),
                                "{}: error for {sql}\n{text}\nlacks '{f}'",
                                path.display()
                            );
                        }
                    }
                    other => panic!(
                        "{}: expected an error from {sql}, got {other:?}",
                        path.display()
                    ),
                }
            }
            Step::Metric { sample, value } => {
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    let text = engine.metrics_text();
                    let got = text
                        .lines()
                        .find(|l| {
                            l.starts_with(sample.as_str()) && l[sample.len()..].starts_with(' ')
                        })
                        .map(|l| l[sample.len() + 1..].to_string());
                    if got.as_deref() == Some(value.as_str()) {
                        break;
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "{}: metric {sample}: expected {value}, got {got:?}",
                            path.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Step::Restart => {
                engine.shutdown().await;
                drop(engine);
                // RocksDB releases its lock when the last handle goes; give the
                // aborted tasks a moment to drop theirs.
                let deadline = Instant::now() + Duration::from_secs(10);
                engine = loop {
                    let config = ServerConfig {
                        data_dir: dir.path().to_path_buf(),
                        checkpoint_interval: Duration::from_millis(100),
                        ..Default::default()
                    };
                    match Engine::start(config).await {
                        Ok(e) => break e,
                        Err(e) if Instant::now() < deadline => {
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("restart failed: {e}"),
                    }
                };
            }
        }
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behavior_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no cases in {}", dir.display());
    let filter = std::env::var("SLUICE_CASE").ok();
    for f in files {
        if filter
            .as_ref()
            .is_some_and(|name| !f.to_string_lossy().contains(name.as_str()))
        {
            continue;
        }
        eprintln!("case {}", f.file_name().unwrap().to_string_lossy());
        run_case(&f).await;
    }
}
