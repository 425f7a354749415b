//! `sluice bench latency`: how long an event takes from being written to its
//! topic until the result is visible to a reader of the query's output, at a
//! steady input rate, per checkpoint interval and processing guarantee.
//!
//! Each event carries the wall-clock time it was written (microseconds); a
//! reader tails the output topic of a filter query that passes every event
//! and records, for each row it sees, how old the event was. Under
//! exactly-once the rows of an epoch become visible when its checkpoint
//! commits, so the latency follows the checkpoint interval.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::kafka::execute;
use super::Scratch;
use crate::catalog::ProcessingGuarantee;
use crate::connectors::{OutRecord, StartFrom};
use crate::engine::Session;

#[derive(Debug, Clone, clap::Args)]
pub struct LatencyBenchArgs {
    /// Events per second written to the input topic.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Checkpoint intervals to measure, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "1000,100")]
    pub intervals: Vec<u64>,
    /// Guarantees to measure: exactly_once, at_least_once.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "exactly_once,at_least_once"
    )]
    pub guarantees: Vec<String>,
    /// Seconds measured per run (after a warm-up of 3 seconds).
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
}

const WARM_UP: Duration = Duration::from_secs(3);

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// p50, p99 and max of `samples` (microseconds), in milliseconds.
fn percentiles(samples: &mut [i64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i] as f64 / 1000.0
    };
    (at(0.50), at(0.99), at(1.0))
}

/// One run: a fresh engine, the filter query, input at `rate` for the warm-up
/// and `seconds`, latency of every row seen after the warm-up.
async fn measure(
    args: &LatencyBenchArgs,
    interval_ms: u64,
    guarantee: ProcessingGuarantee,
) -> anyhow::Result<String> {
    let scratch = Scratch::new()?;
    let engine = super::local_engine(&scratch).await?;
    let mut session = Session::new();
    execute(
        &engine,
        &mut session,
        "CREATE STREAM ev (id BIGINT KEY, sent BIGINT) \
         WITH (kafka_topic='latency_in', value_format='json', partitions=4)",
    )
    .await?;
    execute(
        &engine,
        &mut session,
        &format!(
            "CREATE STREAM seen WITH (kafka_topic='latency_out', processing_guarantee='{}', \
             checkpoint_interval='{interval_ms} ms') AS SELECT id, sent FROM ev WHERE sent > 0",
            guarantee.as_str()
        ),
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let ingest = {
        let (stop, written) = (stop.clone(), written.clone());
        let mut writer = engine.backend().writer("latency_in").await?;
        let per_slice = (args.rate / 100).max(1);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let sent = now_micros();
                let batch: Vec<OutRecord> = (0..per_slice)
                    .map(|i| OutRecord {
                        partition: None,
                        timestamp: sent / 1000,
                        key: Some((id + i).to_string().into_bytes().into()),
                        value: Some(format!("{{\"sent\":{sent}}}").into_bytes().into()),
                    })
                    .collect();
                id += per_slice;
                if writer.send(batch).await.is_err() {
                    break;
                }
                written.fetch_add(per_slice, Ordering::Relaxed);
            }
        })
    };

    let mut reader = engine
        .backend()
        .reader("latency_out", StartFrom::Earliest)
        .await?;
    let started = Instant::now();
    let end = started + WARM_UP + Duration::from_secs(args.seconds);
    let mut samples: Vec<i64> = Vec::new();
    let mut seen = 0u64;
    let written_at_warm_up = loop {
        if started.elapsed() >= WARM_UP {
            break written.load(Ordering::Relaxed);
        }
        seen += reader.poll(100_000, Duration::from_millis(50)).await?.len() as u64;
    };
    while Instant::now() < end {
        for record in reader.poll(100_000, Duration::from_millis(20)).await? {
            seen += 1;
            let now = now_micros();
            let sent = record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                .and_then(|v| v["sent"].as_i64());
            if let Some(sent) = sent {
                samples.push(now - sent);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ingest.await;
    let offered =
        (written.load(Ordering::Relaxed) - written_at_warm_up) as f64 / args.seconds.max(1) as f64;
    let (p50, p99, max) = percentiles(&mut samples);
    engine.shutdown().await;
    Ok(format!(
        "| {} | {interval_ms} | {:.0} | {} | {p50:.1} | {p99:.1} | {max:.1} | {seen} |",
        guarantee.as_str(),
        offered,
        samples.len(),
    ))
}

pub async fn run(args: LatencyBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    let mut guarantees = Vec::new();
    for g in &args.guarantees {
        guarantees.push(ProcessingGuarantee::parse(g).map_err(anyhow::Error::msg)?);
    }
    let mut rows = Vec::new();
    for &interval in &args.intervals {
        anyhow::ensure!(interval >= 10, "checkpoint intervals start at 10 ms");
        for &guarantee in &guarantees {
            eprintln!(
                "sluice bench latency: {} at a {interval} ms checkpoint interval, {} events/s",
                guarantee.as_str(),
                args.rate
            );
            rows.push(measure(&args, interval, guarantee).await?);
        }
    }
    println!(
        "| guarantee | checkpoint ms | events/s written | rows timed | p50 ms | p99 ms | max ms | rows seen |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        println!("{row}");
    }
    println!(
        "\nlatency = when a reader of the output topic got the row − when the event was \
         written to the input topic (local log, {} s after a {} s warm-up)",
        args.seconds,
        WARM_UP.as_secs()
    );
    Ok(())
}
