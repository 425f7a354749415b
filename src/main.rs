//! The `sluice` command: `serve` runs the server; `run` sends a file of statements
//! to a running server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sluice::config::ServerConfig;
use sluice::engine::Engine;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Streaming SQL over Kafka, served over Postgres wire and HTTP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Execute a file of SQL statements on a running server (over HTTP).
    Run {
        /// The .sql file.
        file: PathBuf,
        /// The server's HTTP address.
        #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8088")]
        server: String,
    },
    /// Measure events/second of continuous queries over generated pageviews
    /// (`sluice bench nexmark` for the Nexmark queries).
    Bench(sluice::bench::BenchArgs),
    /// Print a SCRAM-SHA-256 verifier for a password read from standard input,
    /// for a line `name:<verifier>` of the users file.
    HashPassword,
    /// Write generated Nexmark events as JSON lines, one file or topic per event
    /// type, so other engines (and the Kafka benchmark) read the same data.
    NexmarkGen(NexmarkGenArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["out", "kafka_brokers"])))]
struct NexmarkGenArgs {
    /// Nexmark events of all types (1 person : 3 auctions : 46 bids).
    #[arg(long)]
    events: u64,
    /// Directory for person.jsonl, auction.jsonl and bid.jsonl (created if missing).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Kafka bootstrap servers: write topics <prefix>person, <prefix>auction, <prefix>bid.
    #[arg(long)]
    kafka_brokers: Option<String>,
    #[arg(long, default_value = "nexmark_")]
    topic_prefix: String,
    /// Extra librdkafka properties, repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// The same seed (and partitions) as a `connector='nexmark'` source gives the
    /// same rows.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generator partitions (and partitions of topics it creates).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Event types to write.
    #[arg(long, value_delimiter = ',', default_value = "person,auction,bid")]
    tables: Vec<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory for the catalog, state and (without Kafka) the local log.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    data_dir: PathBuf,
    /// Postgres wire protocol listener.
    #[arg(long, env = "SLUICE_PG_ADDR", default_value = "127.0.0.1:5433")]
    pg_addr: String,
    /// HTTP listener.
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value = "127.0.0.1:8088")]
    http_addr: String,
    /// Kafka bootstrap servers (host:port,...). Without it, Sluice runs on its
    /// embedded local log in the data directory.
    #[arg(long, env = "SLUICE_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Extra librdkafka properties, repeatable: --kafka-property security.protocol=SSL
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Milliseconds between checkpoints of query state and source offsets.
    #[arg(long, env = "SLUICE_CHECKPOINT_INTERVAL_MS", default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Topic that receives records that cannot be decoded, rows whose
    /// expressions failed and output records too large for their topic.
    #[arg(long, env = "SLUICE_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// What a bad record or a failing expression does to a query that does not
    /// say (WITH (on_error=...)): `continue` (skip or NULL, count, dead-letter)
    /// or `fail` (stop the query).
    #[arg(long, env = "SLUICE_ON_ERROR", default_value = "continue", value_parser = parse_on_error)]
    on_error: sluice::catalog::OnError,
    /// What a query's output promises across crashes when it does not say
    /// (WITH (processing_guarantee=...)): `exactly_once` (results become
    /// visible when their checkpoint commits) or `at_least_once` (visible at
    /// once, repeated after a crash).
    #[arg(long, env = "SLUICE_PROCESSING_GUARANTEE", default_value = "exactly_once", value_parser = sluice::catalog::ProcessingGuarantee::parse)]
    processing_guarantee: sluice::catalog::ProcessingGuarantee,
    /// Memory pull queries may use, in MiB (shared by the pull queries running
    /// at once; also the largest result one may hold).
    #[arg(long, env = "SLUICE_MAX_QUERY_MEMORY_MB", default_value_t = 1024)]
    max_query_memory: u64,
    /// Open connections per listener (pgwire and HTTP each); more are refused
    /// with "too many clients" (SQLSTATE 53300) or HTTP 503.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 256)]
    max_connections: usize,
    /// Push queries (EMIT CHANGES) streaming at once; more are refused.
    #[arg(long, env = "SLUICE_MAX_PUSH_QUERIES", default_value_t = 64)]
    max_push_queries: usize,
    /// Memory the state tables of all queries may hold, in MiB; beyond it
    /// they evict cached entries, which stay readable from RocksDB.
    #[arg(long, env = "SLUICE_STATE_MEMORY_BUDGET_MB", default_value_t = 512)]
    state_memory_budget: u64,
    /// A directory whose files clients may name in file sources, file sinks
    /// and RUN SCRIPT; repeatable. Default: the data directory alone. /proc,
    /// /sys and /dev are refused wherever they appear.
    #[arg(
        long = "allowed-path",
        env = "SLUICE_ALLOWED_PATHS",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    allowed_paths: Vec<PathBuf>,
    /// Users that may connect, one `name:secret` per line (a SCRAM-SHA-256
    /// verifier from `sluice hash-password`, or a password). With it every
    /// pgwire client authenticates with SCRAM and every HTTP client with
    /// basic auth.
    #[arg(long, env = "SLUICE_USERS_FILE", value_name = "FILE")]
    users_file: Option<PathBuf>,
    /// PEM certificate chain: TLS on pgwire (sslmode=require) and HTTPS.
    #[arg(
        long,
        env = "SLUICE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "SLUICE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve a non-loopback address without --users-file (anyone who can
    /// reach the port may query, change pipelines and read allowed files).
    #[arg(long, env = "SLUICE_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// Directory of .sql files to run at start-up, in name order.
    #[arg(long)]
    init: Option<PathBuf>,
}

/// Stack of every runtime thread. Planning a deeply nested statement recurses
/// (sqlparser, DataFusion's planner and optimizer, our planner); DataFusion grows
/// its own recursion on the heap, and this leaves room for the rest up to the
/// statement budget of `sql::limits`. Only the pages a thread touches are used.
const THREAD_STACK_BYTES: usize = 64 << 20;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()?
        // On a worker, not the main thread: recovery re-plans every query, and
        // planning wants the workers' large stacks.
        .block_on(async { tokio::spawn(run()).await? })
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Run { file, server } => run_file(&file, &server).await,
        Command::Bench(args) => sluice::bench::run(args).await,
        Command::NexmarkGen(args) => nexmark_gen(args).await,
        Command::HashPassword => hash_password(),
    }
}

fn parse_on_error(text: &str) -> Result<sluice::catalog::OnError, String> {
    sluice::catalog::OnError::parse(text)
        .ok_or_else(|| format!("'{text}' is neither 'continue' nor 'fail'"))
}

fn parse_properties(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => bail!("--kafka-property takes KEY=VALUE, got '{p}'"),
        })
        .collect()
}

async fn nexmark_gen(args: NexmarkGenArgs) -> anyhow::Result<()> {
    use sluice::bench::nexmark_export as export;
    use sluice::connectors::nexmark::{EventType, NexmarkConfig};
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    let mut tables = Vec::new();
    for t in &args.tables {
        match EventType::parse(t.trim()) {
            Some(t) => tables.push(t),
            None => bail!("--tables: '{t}' is not person, auction or bid"),
        }
    }
    let mut config = NexmarkConfig::new(EventType::Bid);
    config.events = Some(args.events);
    config.seed = args.seed;
    config.partitions = args.partitions.max(1);
    let started = std::time::Instant::now();
    let exported = match (&args.out, &args.kafka_brokers) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            export::export(&config, &tables, &export::Target::Directory(dir.clone())).await?
        }
        (None, Some(brokers)) => {
            let backend = sluice::connectors::kafka::KafkaBackend::new(
                brokers,
                &parse_properties(&args.kafka_properties)?,
            )
            .with_context(|| format!("connecting to Kafka at {brokers}"))?;
            let target = export::Target::Topics {
                backend: backend.as_ref(),
                prefix: args.topic_prefix.clone(),
            };
            export::export(&config, &tables, &target).await?
        }
        (None, None) => bail!("give --out DIR or --kafka-brokers HOST:PORT"),
    };
    for e in &exported {
        println!("{}: {} rows → {}", e.table.name(), e.rows, e.destination);
    }
    eprintln!(
        "{} events in {:.2} s",
        args.events,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `sluice hash-password`: the first line of standard input becomes a verifier.
fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on standard input (echo -n 'secret' | sluice hash-password)");
    }
    println!(
        "{}",
        sluice::serve::security::users::Verifier::new(password)
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut kafka_properties = Vec::new();
    for p in &args.kafka_properties {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--kafka-property takes KEY=VALUE, got '{p}'");
        };
        kafka_properties.push((k.trim().to_string(), v.trim().to_string()));
    }
    let config = ServerConfig {
        data_dir: args.data_dir,
        pg_addr: args.pg_addr,
        http_addr: args.http_addr,
        kafka_brokers: args.kafka_brokers,
        kafka_properties,
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(10)),
        dead_letter_topic: args.dead_letter_topic,
        on_error: args.on_error,
        processing_guarantee: args.processing_guarantee,
        max_query_memory: (args.max_query_memory.max(1) as usize) << 20,
        max_connections: args.max_connections.max(1),
        max_push_queries: args.max_push_queries,
        state_memory_budget: (args.state_memory_budget.max(1) as usize) << 20,
        allowed_paths: args.allowed_paths,
        users_file: args.users_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        allow_unauthenticated: args.allow_unauthenticated,
        test_planner_variant: false,
    };
    let security = sluice::serve::security::Security::from_config(&config)?;
    // Before binding: a refused listener must never accept a connection.
    for (listener, addr) in [("pgwire", &config.pg_addr), ("HTTP", &config.http_addr)] {
        for resolved in tokio::net::lookup_host(addr)
            .await
            .with_context(|| format!("resolving the {listener} address {addr}"))?
        {
            security.check_exposure(listener, resolved)?;
        }
    }
    let pg = tokio::net::TcpListener::bind(&config.pg_addr)
        .await
        .with_context(|| format!("binding the Postgres listener on {}", config.pg_addr))?;
    let http = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", config.http_addr))?;
    let engine = Engine::start(config.clone())
        .await
        .context("starting the engine")?;
    if let Some(dir) = &args.init {
        run_init_dir(&engine, dir).await?;
    }
    tracing::info!(
        pg = %config.pg_addr,
        http = %config.http_addr,
        backend = engine.backend().kind(),
        data_dir = %config.data_dir.display(),
        "sluice is ready: psql -h {} -p {}",
        config.pg_addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("localhost"),
        config.pg_addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("5433"),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let pg_task = tokio::spawn({
        let (engine, security, stop) = (engine.clone(), security.clone(), stop_rx.clone());
        async move { sluice::serve::pgwire::serve_pgwire(engine, &security, pg, stopped(stop)).await }
    });
    let http_task = tokio::spawn({
        let (engine, security, stop) = (engine.clone(), security.clone(), stop_rx.clone());
        async move { sluice::serve::http::serve_http(engine, &security, http, stopped(stop)).await }
    });
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = pg_task.await;
        let _ = http_task.await;
    })
    .await;
    engine.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run_init_dir(engine: &Engine, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading --init directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let mut session = sluice::engine::Session::new();
        for r in engine.execute(&mut session, &text).await {
            if let Err(e) = r {
                bail!("{}: {e}", f.display());
            }
        }
        tracing::info!(file = %f.display(), "ran init script");
    }
    Ok(())
}

async fn run_file(file: &std::path::Path, server: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let url = format!("{}/ksql", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "ksql": text, "streamsProperties": {} }))
        .send()
        .await
        .with_context(|| format!("sending {} to {url}", file.display()))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .context("reading the server's answer")?;
    let items = match &body {
        serde_json::Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    for item in &items {
        let statement = item
            .get("statementText")
            .and_then(|s| s.as_str())
            .unwrap_or("");
        let first_line = statement.lines().next().unwrap_or("");
        if let Some(msg) = item
            .pointer("/commandStatus/message")
            .and_then(|m| m.as_str())
        {
            println!("ok: {first_line}\n    {msg}");
        } else if item.get("@type").and_then(|t| t.as_str()) == Some("statement_error") {
            let msg = item
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("error");
            eprintln!("error: {}: {msg}", file.display());
            if let Some(h) = item.get("hint").and_then(|h| h.as_str()) {
                eprintln!("hint: {h}");
            }
        } else {
            println!("ok: {first_line}");
        }
    }
    if !status.is_success() {
        bail!("{} failed ({status})", file.display());
    }
    Ok(())
}
