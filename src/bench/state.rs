//! `sluice bench state`: a GROUP BY whose state is larger than the state
//! memory budget.
//!
//! `--rounds` rounds of one record per key for `--keys` distinct keys are
//! written to the local log first; then `CREATE TABLE per_key AS SELECT k,
//! COUNT(*), SUM(v) ... GROUP BY k` runs over them with checkpoints and
//! `--budget` MiB of state memory. Every round touches every key once, the
//! worst case for a cache: each group is evicted and read back once per round.
//! Reports the time, CPU, peak RSS, evictions and early checkpoints, and
//! checks the table against DataFusion batch SQL over the same records.
//! Then `--update-rate` records per second update random keys for
//! `--update-seconds`, and the state entries and bytes each checkpoint wrote
//! are set against the records it covered: a checkpoint writes what changed,
//! whatever the size of the table.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use arrow::array::Array;
use futures::StreamExt;

use super::kafka::{counter, execute};
use super::usage::{cpu_seconds, peak_rss_bytes, reset_peak_rss};
use super::Scratch;
use crate::config::ServerConfig;
use crate::connectors::OutRecord;
use crate::engine::{Engine, Session, StatementResult};

#[derive(Debug, Clone, clap::Args)]
pub struct StateBenchArgs {
    /// Distinct GROUP BY keys.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Records per key (each round writes every key once).
    #[arg(long, default_value_t = 2)]
    pub rounds: u64,
    /// State memory budget in MiB (`--state-memory-budget`).
    #[arg(long, default_value_t = 256)]
    pub budget: usize,
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_interval_ms: u64,
    /// Skip the check against DataFusion (it holds every group in memory).
    #[arg(long)]
    pub no_check: bool,
    /// After the load: records per second updating random keys, to measure
    /// what each checkpoint writes against the keys it saw updated.
    #[arg(long, default_value_t = 10_000)]
    pub update_rate: u64,
    /// How long the updates run (0: no update phase).
    #[arg(long, default_value_t = 10)]
    pub update_seconds: u64,
}

const TOPIC: &str = "state_bench";

/// The value of key `k` in round `r`.
fn value(k: u64, r: u64) -> u64 {
    (k ^ (r << 7)) % 1_000
}

/// The first row of a query's answer, as integers.
pub(super) async fn first_row(
    engine: &Engine,
    session: &mut Session,
    sql: &str,
) -> anyhow::Result<Vec<Option<i64>>> {
    for result in engine.execute(session, sql).await {
        let batches = match result.with_context(|| sql.to_string())? {
            StatementResult::Rows { batches, .. } => batches,
            StatementResult::Stream { stream, .. } => stream
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?,
            other => bail!("{sql}: unexpected {other:?}"),
        };
        if let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) {
            let mut row = Vec::with_capacity(batch.num_columns());
            for column in batch.columns() {
                let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)?;
                let values = column
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .context("an integer column")?;
                row.push(values.is_valid(0).then(|| values.value(0)));
            }
            return Ok(row);
        }
    }
    Ok(Vec::new())
}

pub async fn run(args: StateBenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.keys > 0 && args.rounds > 0,
        "--keys and --rounds must be positive"
    );
    let scratch = Scratch::new()?;
    let engine = Engine::start(ServerConfig {
        data_dir: scratch.0.join("engine"),
        kafka_brokers: None,
        state_memory_budget: args.budget << 20,
        // The check against DataFusion holds every group in memory (after
        // the measurement).
        max_query_memory: 16 << 30,
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(10)),
        ..Default::default()
    })
    .await
    .context("starting the engine")?;
    let mut session = Session::new();
    execute(
        &engine,
        &mut session,
        &format!(
            "CREATE STREAM ev (k BIGINT KEY, v BIGINT) \
             WITH (kafka_topic='{TOPIC}', value_format='json', partitions=1)"
        ),
    )
    .await?;
    let total = args.keys * args.rounds;
    let written = Instant::now();
    let mut writer = engine.backend().writer(TOPIC).await?;
    for r in 0..args.rounds {
        let mut k = 0;
        while k < args.keys {
            let end = (k + 50_000).min(args.keys);
            let batch = (k..end)
                .map(|k| OutRecord {
                    partition: Some(0),
                    timestamp: 0,
                    key: Some(k.to_string().into_bytes().into()),
                    value: Some(format!("{{\"v\":{}}}", value(k, r)).into_bytes().into()),
                })
                .collect();
            writer.send(batch).await?;
            k = end;
        }
    }
    drop(writer);
    eprintln!(
        "sluice bench state: {total} records written in {:.1} s",
        written.elapsed().as_secs_f64()
    );

    let peak_reset = reset_peak_rss();
    let cpu_before = cpu_seconds("self");
    let started = Instant::now();
    execute(
        &engine,
        &mut session,
        "CREATE TABLE per_key AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev GROUP BY k",
    )
    .await?;
    let summary = "SELECT COUNT(*), SUM(n), SUM(s), MIN(n), MAX(n) FROM per_key";
    // Done once every record is in and a checkpoint after that committed
    // (pull queries see committed checkpoints). Watched through the metrics:
    // a pull query over the whole table every poll would cost as much as
    // the query measured.
    let progress = || {
        let m = engine.metrics_text();
        (
            counter(&m, "sluice_query_records_in_total"),
            counter(&m, "sluice_query_checkpoints_total"),
        )
    };
    let mut last = (Instant::now(), 0);
    let all_in_at = loop {
        let (records, checkpoints) = progress();
        if records >= total {
            break checkpoints;
        }
        if records > last.1 {
            last = (Instant::now(), records);
        } else if last.0.elapsed() > Duration::from_secs(300) {
            bail!("the query stopped at {records} of {total} records");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while progress().1 < all_in_at + 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_seconds("self")) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let peak = peak_rss_bytes();
    let metrics = engine.metrics_text();
    let evictions = super::kafka::counter_plain(&metrics, "sluice_state_evictions_total");
    let early = counter(&metrics, "sluice_query_early_checkpoints_total");
    let checkpoints = counter(&metrics, "sluice_query_checkpoints_total");

    let got = first_row(&engine, &mut session, summary).await?;
    let check = if args.no_check {
        "not checked (--no-check)".to_string()
    } else {
        let batch = first_row(
            &engine,
            &mut session,
            "SELECT COUNT(*), SUM(n), SUM(s), MIN(n), MAX(n) FROM \
             (SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev GROUP BY k)",
        )
        .await?;
        ensure!(
            got == batch,
            "the table {got:?} differs from DataFusion batch SQL {batch:?}"
        );
        "equal to DataFusion batch SQL".to_string()
    };
    println!(
        "| keys | records | budget MiB | elapsed s | records/s | CPU s | records/s per core | peak RSS MiB | evictions | checkpoints (early) | result |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let per_core = cpu.map_or("n/a".into(), |c| format!("{:.0}", total as f64 / c));
    println!(
        "| {} | {total} | {} | {elapsed:.1} | {:.0} | {} | {per_core} | {}{} | {evictions} | {checkpoints} ({early}) | {check}: {got:?} |",
        args.keys,
        args.budget,
        total as f64 / elapsed,
        cpu.map_or("n/a".into(), |c| format!("{c:.1}")),
        if peak_reset { "" } else { "≤" },
        peak.map_or("n/a".into(), |b| format!("{:.0}", b as f64 / 1048576.0)),
    );
    if args.update_seconds > 0 {
        update_phase(&engine, &args).await?;
    }
    engine.shutdown().await;
    Ok(())
}

/// Updates random keys at `--update-rate` and reports what the checkpoints
/// meanwhile wrote.
async fn update_phase(engine: &Engine, args: &StateBenchArgs) -> anyhow::Result<()> {
    let totals = || {
        let m = engine.metrics_text();
        [
            counter(&m, "sluice_query_records_in_total"),
            counter(&m, "sluice_query_checkpoints_total"),
            counter(&m, "sluice_query_checkpoint_entries_total"),
            counter(&m, "sluice_query_checkpoint_bytes_total"),
        ]
    };
    let before = totals();
    let mut writer = engine.backend().writer(TOPIC).await?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let per_tick = (args.update_rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let until = Instant::now() + Duration::from_secs(args.update_seconds);
    while Instant::now() < until {
        tick.tick().await;
        let batch = (0..per_tick)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = x % args.keys;
                OutRecord {
                    partition: Some(0),
                    timestamp: 0,
                    key: Some(k.to_string().into_bytes().into()),
                    value: Some(b"{\"v\":1}".to_vec().into()),
                }
            })
            .collect();
        writer.send(batch).await?;
    }
    // Let the last checkpoint of the phase commit.
    tokio::time::sleep(Duration::from_millis(2 * args.checkpoint_interval_ms + 200)).await;
    let after = totals();
    let [records, checkpoints, entries, bytes] =
        [0, 1, 2, 3].map(|i| after[i].saturating_sub(before[i]));
    let per = |n: u64| n as f64 / checkpoints.max(1) as f64;
    println!(
        "\n| table keys | updates/s | checkpoints | records per checkpoint | state entries written per checkpoint | bytes written per checkpoint | bytes per record |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {checkpoints} | {:.0} | {:.0} | {:.0} | {:.1} |",
        args.keys,
        args.update_rate,
        per(records),
        per(entries),
        per(bytes),
        bytes as f64 / records.max(1) as f64,
    );
    Ok(())
}
