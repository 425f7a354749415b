//! Prometheus text exposition (format 0.0.4) of the engine's metrics.

use std::fmt::Write;

use super::Engine;
use crate::dataflow::metrics::QueryMetrics;

pub(super) fn render(engine: &Engine) -> String {
    let mut out = String::new();
    let running = engine.running.lock();
    let counter = |out: &mut String, name: &str, help: &str, get: &dyn Fn(&QueryMetrics) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (id, h) in running.iter() {
            let _ = writeln!(
                out,
                "{name}{{query=\"{}\"}} {}",
                escape(id),
                get(&h.metrics)
            );
        }
    };
    counter(
        &mut out,
        "sluice_query_records_in_total",
        "Records read by the query's source.",
        &|m| QueryMetrics::get(&m.records_in),
    );
    counter(
        &mut out,
        "sluice_query_records_out_total",
        "Rows the query emitted.",
        &|m| QueryMetrics::get(&m.records_out),
    );
    counter(
        &mut out,
        "sluice_query_errors_total",
        "Source records skipped because they could not become a valid row (undecodable, missing NOT NULL value, key or event time, lossy number).",
        &|m| QueryMetrics::get(&m.decode_errors),
    );
    counter(
        &mut out,
        "sluice_query_expression_errors_total",
        "Rows in which an operator's expression failed (division by zero, failed cast, overflow, bad argument); the failing values became NULL.",
        &|m| QueryMetrics::get(&m.expression_errors),
    );
    counter(
        &mut out,
        "sluice_query_oversize_records_total",
        "Output records larger than their topic takes, sent to the dead-letter topic instead.",
        &|m| QueryMetrics::get(&m.oversize_records),
    );
    counter(
        &mut out,
        "sluice_query_dead_lettered_total",
        "Bad records written to the dead-letter topic.",
        &|m| QueryMetrics::get(&m.dead_lettered),
    );
    counter(
        &mut out,
        "sluice_query_late_records_total",
        "Events dropped because every window they belong to had closed (watermark past window end + grace).",
        &|m| QueryMetrics::get(&m.late_records),
    );
    let _ = writeln!(
        out,
        "# HELP sluice_query_status 1 for the query's current status (RUNNING, FINISHED or ERROR)."
    );
    let _ = writeln!(out, "# TYPE sluice_query_status gauge");
    for (id, h) in running.iter() {
        let status = match h.status() {
            crate::dataflow::query::RunStatus::Running => "RUNNING",
            crate::dataflow::query::RunStatus::Finished => "FINISHED",
            crate::dataflow::query::RunStatus::Failed(_) => "ERROR",
        };
        let _ = writeln!(
            out,
            "sluice_query_status{{query=\"{}\",status=\"{status}\"}} 1",
            escape(id)
        );
    }
    for id in engine.retrying.lock().keys() {
        let _ = writeln!(
            out,
            "sluice_query_status{{query=\"{}\",status=\"RETRYING\"}} 1",
            escape(id)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_query_restarts_total Times the query was started again after a transient failure (a lost topic, an unreachable broker)."
    );
    let _ = writeln!(out, "# TYPE sluice_query_restarts_total counter");
    for (id, n) in engine.restarts.lock().iter() {
        let _ = writeln!(
            out,
            "sluice_query_restarts_total{{query=\"{}\"}} {n}",
            escape(id)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_query_state_entries Keyed state entries held by the query's operators (groups, open windows, sessions)."
    );
    let _ = writeln!(out, "# TYPE sluice_query_state_entries gauge");
    for (id, h) in running.iter() {
        let _ = writeln!(
            out,
            "sluice_query_state_entries{{query=\"{}\"}} {}",
            escape(id),
            QueryMetrics::get(&h.metrics.state_entries)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_query_watermark_ms Event-time watermark of the query's source (ms since the epoch)."
    );
    let _ = writeln!(out, "# TYPE sluice_query_watermark_ms gauge");
    for (id, h) in running.iter() {
        let w = h
            .metrics
            .watermark
            .load(std::sync::atomic::Ordering::Relaxed);
        if w != i64::MIN {
            let _ = writeln!(
                out,
                "sluice_query_watermark_ms{{query=\"{}\"}} {w}",
                escape(id)
            );
        }
    }
    counter(
        &mut out,
        "sluice_query_batches_total",
        "Chunks processed.",
        &|m| QueryMetrics::get(&m.batches),
    );
    counter(
        &mut out,
        "sluice_query_checkpoints_total",
        "Checkpoints committed.",
        &|m| QueryMetrics::get(&m.checkpoints),
    );
    counter(
        &mut out,
        "sluice_query_checkpoint_entries_total",
        "State entries (puts and deletes) written by checkpoints.",
        &|m| QueryMetrics::get(&m.checkpoint_entries),
    );
    counter(
        &mut out,
        "sluice_query_checkpoint_bytes_total",
        "Bytes of state keys and values written by checkpoints.",
        &|m| QueryMetrics::get(&m.checkpoint_bytes),
    );
    counter(
        &mut out,
        "sluice_query_early_checkpoints_total",
        "Checkpoints taken before their interval because state memory was over its budget.",
        &|m| QueryMetrics::get(&m.early_checkpoints),
    );
    let _ = writeln!(
        out,
        "# HELP sluice_query_source_offset Next offset the query reads, per partition."
    );
    let _ = writeln!(out, "# TYPE sluice_query_source_offset gauge");
    for (id, h) in running.iter() {
        for ((source, p), prog) in h.metrics.partitions.lock().iter() {
            let _ = writeln!(
                out,
                "sluice_query_source_offset{{query=\"{}\",partition=\"{p}\",source=\"{}\"}} {}",
                escape(id),
                escape(source),
                prog.position
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_query_consumer_lag Records in the partition not yet read by the query."
    );
    let _ = writeln!(out, "# TYPE sluice_query_consumer_lag gauge");
    for (id, h) in running.iter() {
        for (source, p, lag) in h.metrics.lag() {
            let _ = writeln!(
                out,
                "sluice_query_consumer_lag{{query=\"{}\",partition=\"{p}\",source=\"{}\"}} {lag}",
                escape(id),
                escape(&source)
            );
        }
    }
    let progress: Vec<(String, crate::dataflow::metrics::Progress)> = running
        .iter()
        .filter_map(|(id, h)| h.metrics.progress().map(|p| (id.clone(), p)))
        .collect();
    let _ = writeln!(
        out,
        "# HELP sluice_query_progress_ratio How far a query has read its inputs (0 to 1), over the partitions whose end is known (a file backfill: bytes)."
    );
    let _ = writeln!(out, "# TYPE sluice_query_progress_ratio gauge");
    for (id, p) in &progress {
        let _ = writeln!(
            out,
            "sluice_query_progress_ratio{{query=\"{}\",unit=\"{}\"}} {}",
            escape(id),
            p.unit,
            p.ratio()
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_query_eta_seconds Seconds until a query has read up to its inputs' ends, at its rate so far."
    );
    let _ = writeln!(out, "# TYPE sluice_query_eta_seconds gauge");
    for (id, p) in &progress {
        if let Some(eta) = p.eta_seconds {
            let _ = writeln!(
                out,
                "sluice_query_eta_seconds{{query=\"{}\"}} {eta}",
                escape(id)
            );
        }
    }
    let ids: Vec<String> = running.keys().cloned().collect();
    drop(running);
    let _ = writeln!(
        out,
        "# HELP sluice_state_bytes Approximate size of a query's state in RocksDB."
    );
    let _ = writeln!(out, "# TYPE sluice_state_bytes gauge");
    for (id, bytes) in engine.state.sizes(&ids) {
        let _ = writeln!(
            out,
            "sluice_state_bytes{{query=\"{}\"}} {bytes}",
            escape(&id)
        );
    }
    let budget = engine.state.budget();
    for (name, kind, help, value) in [
        (
            "sluice_state_memory_bytes",
            "gauge",
            "Bytes state tables of all queries hold in memory.",
            budget.used() as u64,
        ),
        (
            "sluice_state_memory_budget_bytes",
            "gauge",
            "The state memory budget (--state-memory-budget).",
            budget.limit() as u64,
        ),
        (
            "sluice_state_evictions_total",
            "counter",
            "Cached state entries evicted to stay within the budget (they are read back from RocksDB on demand).",
            budget.evicted(),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP sluice_materialized_rows Rows in a materialized table (committed rows, counted at most every 30 s)."
    );
    let _ = writeln!(out, "# TYPE sluice_materialized_rows gauge");
    let tables: Vec<_> = engine
        .materialized
        .read()
        .iter()
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    for (name, t) in tables {
        if let Ok(n) = t.recent_row_count() {
            let _ = writeln!(
                out,
                "sluice_materialized_rows{{table=\"{}\"}} {n}",
                escape(&name)
            );
        }
    }
    let active = |a: &std::sync::atomic::AtomicI64| a.load(std::sync::atomic::Ordering::Relaxed);
    gauge(
        &mut out,
        "sluice_push_queries_active",
        "Push queries (EMIT CHANGES) streaming to clients.",
        active(&engine.push_active),
    );
    gauge(
        &mut out,
        "sluice_pull_queries_active",
        "Pull queries whose results are being computed or sent.",
        active(&engine.pull_active),
    );
    gauge(
        &mut out,
        "sluice_uptime_seconds",
        "Seconds since the server started.",
        engine.started.elapsed().as_secs(),
    );
    out
}

/// A gauge without labels: its HELP and TYPE lines and its one sample.
fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
