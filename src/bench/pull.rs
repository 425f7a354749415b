//! `sluice bench pull`: pull-query latency on a large table while it ingests.
//!
//! A table keyed by `id` is filled with `--keys` rows through the local log,
//! then updated at `--rate` records per second in the background while pull
//! queries run one after another through the engine, as a dashboard sends
//! them: point lookups by key, key ranges of 100 rows, and a few full scans.
//! Reports latency percentiles per kind and the ingest rate achieved meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;

use super::kafka::execute;
use super::Scratch;
use crate::connectors::OutRecord;
use crate::engine::{Engine, Session, StatementResult};

#[derive(Debug, Clone, clap::Args)]
pub struct PullBenchArgs {
    /// Rows (distinct keys) in the table.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Updates per second written to the table's topic while queries run.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Point lookups to time.
    #[arg(long, default_value_t = 2_000)]
    pub lookups: usize,
    /// Range scans (100 keys each) to time.
    #[arg(long, default_value_t = 200)]
    pub ranges: usize,
    /// Full scans to time.
    #[arg(long, default_value_t = 3)]
    pub scans: usize,
    /// Point lookups go on at least this long, so that the ingest rate
    /// achieved meanwhile means something.
    #[arg(long, default_value_t = 10)]
    pub min_seconds: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

const TOPIC: &str = "pull_bench";

fn record(id: u64, v: u64) -> OutRecord {
    OutRecord {
        partition: Some(0),
        timestamp: 0,
        key: Some(id.to_string().into_bytes().into()),
        value: Some(
            format!("{{\"v\":{v},\"note\":\"row {id}\"}}")
                .into_bytes()
                .into(),
        ),
    }
}

/// A small xorshift generator: the keys to read and update.
struct Keys(u64);

impl Keys {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs a statement and counts the rows of its answer.
async fn rows_of(engine: &Engine, session: &mut Session, sql: &str) -> anyhow::Result<usize> {
    let mut rows = 0;
    for result in engine.execute(session, sql).await {
        match result.with_context(|| sql.to_string())? {
            StatementResult::Rows { batches, .. } => {
                rows += batches.iter().map(|b| b.num_rows()).sum::<usize>()
            }
            StatementResult::Stream { mut stream, .. } => {
                while let Some(batch) = stream.next().await {
                    rows += batch?.num_rows();
                }
            }
            other => bail!("{sql}: unexpected {other:?}"),
        }
    }
    Ok(rows)
}

/// p50, p99 and max of `samples`, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99), at(1.0))
}

pub async fn run(args: PullBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.keys >= 100, "--keys must be at least 100");
    let scratch = Scratch::new()?;
    let engine = super::local_engine(&scratch).await?;
    let mut session = Session::new();
    execute(
        &engine,
        &mut session,
        &format!(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT, note VARCHAR) \
             WITH (kafka_topic='{TOPIC}', value_format='json', partitions=1)"
        ),
    )
    .await?;

    let filled = Instant::now();
    let mut writer = engine.backend().writer(TOPIC).await?;
    let mut id = 0;
    while id < args.keys {
        let end = (id + 50_000).min(args.keys);
        writer
            .send((id..end).map(|i| record(i, i)).collect())
            .await?;
        id = end;
    }
    let mut last = 0;
    loop {
        let count = count_rows(&engine, &mut session).await?;
        if count >= args.keys {
            break;
        }
        if count == last && filled.elapsed() > Duration::from_secs(600) {
            bail!("the table stopped at {count} of {} rows", args.keys);
        }
        last = count;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "sluice bench pull: {} keys in the table after {:.1} s",
        args.keys,
        filled.elapsed().as_secs_f64()
    );

    // Updates at --rate in the background, in 10 ms slices.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let ingest = {
        let (stop, written) = (stop.clone(), written.clone());
        let (keys, rate, seed) = (args.keys, args.rate, args.seed);
        let mut writer = engine.backend().writer(TOPIC).await?;
        tokio::spawn(async move {
            let mut rng = Keys(seed | 1);
            let per_slice = (rate / 100).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let batch = (0..per_slice)
                    .map(|_| {
                        let k = rng.next(keys);
                        record(k, k + 1)
                    })
                    .collect();
                if writer.send(batch).await.is_err() {
                    break;
                }
                written.fetch_add(per_slice, Ordering::Relaxed);
            }
        })
    };
    let applied = || super::kafka::counter(&engine.metrics_text(), "sluice_query_records_in_total");
    let mut rng = Keys(args.seed.wrapping_mul(31) | 1);
    let mut report = Vec::new();
    for (kind, count) in [
        ("point lookup", args.lookups),
        ("range of 100 keys", args.ranges),
        ("full scan (COUNT(*))", args.scans),
    ] {
        let mut samples = Vec::with_capacity(count);
        let mut rows = 0;
        let min = Duration::from_secs(if kind == "point lookup" {
            args.min_seconds
        } else {
            0
        });
        let kind_started = Instant::now();
        let (written_before, applied_before) = (written.load(Ordering::Relaxed), applied());
        while samples.len() < count || kind_started.elapsed() < min {
            let k = rng.next(args.keys - 100);
            let sql = match kind {
                "point lookup" => format!("SELECT * FROM t WHERE id = {k}"),
                "range of 100 keys" => {
                    format!("SELECT * FROM t WHERE id >= {k} AND id < {}", k + 100)
                }
                _ => "SELECT COUNT(*) FROM t".to_string(),
            };
            let t0 = Instant::now();
            rows += rows_of(&engine, &mut session, &sql).await?;
            samples.push(t0.elapsed());
        }
        let (p50, p99, max) = percentiles(&mut samples);
        let seconds = kind_started.elapsed().as_secs_f64();
        let written_now = written.load(Ordering::Relaxed) - written_before;
        let applied_now = applied() - applied_before;
        report.push(format!(
            "| {kind} | {} | {rows} | {p50:.3} | {p99:.3} | {max:.3} | {seconds:.1} | {:.0} | {:.0} |",
            samples.len(),
            written_now as f64 / seconds,
            applied_now as f64 / seconds,
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ingest.await;
    println!(
        "| query | queries | rows returned | p50 ms | p99 ms | max ms | seconds | updates written/s | updates applied/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for line in report {
        println!("{line}");
    }
    println!(
        "\n{} keys; updates offered at --rate {} in the background while each kind of query ran",
        args.keys, args.rate
    );
    engine.shutdown().await;
    Ok(())
}

/// Rows in the table, by a pull query.
async fn count_rows(engine: &Engine, session: &mut Session) -> anyhow::Result<u64> {
    let row = super::state::first_row(engine, session, "SELECT COUNT(*) AS n FROM t").await?;
    Ok(row.first().copied().flatten().unwrap_or(0) as u64)
}
