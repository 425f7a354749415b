//! Counters a running query updates; rendered as Prometheus text by the engine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

pub struct QueryMetrics {
    /// Latest watermark the source emitted; `i64::MIN` before the first.
    pub watermark: AtomicI64,
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records that could not be decoded (skipped).
    pub decode_errors: AtomicU64,
    /// Values that failed to evaluate and became NULL.
    pub expression_errors: AtomicU64,
    /// Output records too large for their topic (dead-lettered instead).
    pub oversize_records: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Keyed state entries the operators hold (groups, open windows, sessions).
    pub state_entries: AtomicU64,
    /// Events dropped because their windows had closed.
    pub late_records: AtomicU64,
    pub batches: AtomicU64,
    pub checkpoints: AtomicU64,
    /// State entries (puts and deletes) and their bytes written by checkpoints.
    pub checkpoint_entries: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
    /// Checkpoints taken before their interval because state memory was
    /// over its budget.
    pub early_checkpoints: AtomicU64,
    /// Next offset to read and, when known, the partition's end, per source
    /// relation and partition.
    pub partitions: Mutex<BTreeMap<(String, i32), PartitionProgress>>,
    /// When this run of the query started (rates are per run).
    pub started: std::time::Instant,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        QueryMetrics {
            watermark: AtomicI64::new(i64::MIN),
            records_in: Default::default(),
            records_out: Default::default(),
            decode_errors: Default::default(),
            dead_lettered: Default::default(),
            expression_errors: Default::default(),
            oversize_records: Default::default(),
            late_records: Default::default(),
            state_entries: Default::default(),
            batches: Default::default(),
            checkpoints: Default::default(),
            early_checkpoints: Default::default(),
            checkpoint_entries: Default::default(),
            checkpoint_bytes: Default::default(),
            partitions: Default::default(),
            started: std::time::Instant::now(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionProgress {
    pub position: i64,
    pub end: Option<i64>,
    /// The first position this run saw: what it read is `position - start`.
    pub start: Option<i64>,
    /// What offsets count (`records`, or `bytes` for files).
    pub unit: &'static str,
}

/// How far a query's inputs are read, over the partitions whose end is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Offsets read from the beginning, and the end they are read towards.
    pub position: i64,
    pub end: i64,
    pub unit: &'static str,
    /// Offsets per second this run has read.
    pub rate: f64,
    /// Seconds to the end at that rate; `None` before anything was read.
    pub eta_seconds: Option<f64>,
}

impl Progress {
    pub fn ratio(&self) -> f64 {
        if self.end <= 0 {
            1.0
        } else {
            (self.position as f64 / self.end as f64).min(1.0)
        }
    }

    /// `42% of 9.8 MB (4.1 MB read), 2.3 MB/s, about 3 s left`, or `caught up`.
    pub fn describe(&self) -> String {
        if self.position >= self.end {
            return format!("caught up ({})", amount(self.end, self.unit));
        }
        let mut text = format!(
            "{:.0}% of {} ({} read)",
            (self.ratio() * 100.0).floor(),
            amount(self.end, self.unit),
            amount(self.position, self.unit)
        );
        if self.rate > 0.0 {
            text.push_str(&format!(", {}/s", amount(self.rate as i64, self.unit)));
        }
        if let Some(eta) = self.eta_seconds {
            text.push_str(&format!(", about {} left", duration(eta)));
        }
        text
    }
}

fn amount(n: i64, unit: &str) -> String {
    let n = n as f64;
    let (scaled, suffix) = match unit {
        "bytes" if n >= 1e9 => (n / 1e9, " GB"),
        "bytes" if n >= 1e6 => (n / 1e6, " MB"),
        "bytes" if n >= 1e3 => (n / 1e3, " kB"),
        "bytes" => return format!("{n} bytes"),
        _ if n >= 1e9 => (n / 1e9, "G records"),
        _ if n >= 1e6 => (n / 1e6, "M records"),
        _ if n >= 1e3 => (n / 1e3, "K records"),
        _ => return format!("{n} records"),
    };
    format!("{scaled:.1}{suffix}")
}

fn duration(seconds: f64) -> String {
    let s = seconds.ceil() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min", s.div_ceil(60)),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

impl QueryMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set_position(&self, source: &str, partition: i32, position: i64) {
        let mut p = self.partitions.lock();
        let e = p.entry((source.to_string(), partition)).or_default();
        e.position = position;
        e.start.get_or_insert(position);
        if let Some(end) = e.end {
            if position > end {
                e.end = Some(position);
            }
        }
    }

    pub fn set_end(&self, source: &str, partition: i32, end: i64, unit: &'static str) {
        let mut p = self.partitions.lock();
        let e = p.entry((source.to_string(), partition)).or_default();
        e.end = Some(end);
        e.unit = unit;
    }

    /// Progress over the partitions whose end is known, in the unit most of
    /// them count in; `None` when no end is known.
    pub fn progress(&self) -> Option<Progress> {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.progress_after(elapsed)
    }

    fn progress_after(&self, elapsed: f64) -> Option<Progress> {
        let p = self.partitions.lock();
        let known: Vec<&PartitionProgress> = p.values().filter(|e| e.end.is_some()).collect();
        let unit = if known.iter().any(|e| e.unit == "bytes") {
            "bytes"
        } else {
            "records"
        };
        let same: Vec<&&PartitionProgress> = known.iter().filter(|e| e.unit == unit).collect();
        if same.is_empty() {
            return None;
        }
        let end: i64 = same.iter().filter_map(|e| e.end).sum();
        let position: i64 = same
            .iter()
            .map(|e| e.position.min(e.end.unwrap_or(0)))
            .sum();
        let read: i64 = same
            .iter()
            .map(|e| e.position - e.start.unwrap_or(e.position))
            .sum();
        let rate = if elapsed > 0.0 {
            read as f64 / elapsed
        } else {
            0.0
        };
        let eta_seconds = (rate > 0.0).then(|| (end - position).max(0) as f64 / rate);
        Some(Progress {
            position,
            end,
            unit,
            rate,
            eta_seconds,
        })
    }

    /// (source, partition, lag) for partitions whose end is known.
    pub fn lag(&self) -> Vec<(String, i32, i64)> {
        self.partitions
            .lock()
            .iter()
            .filter_map(|((s, p), prog)| {
                prog.end
                    .map(|e| (s.clone(), *p, (e - prog.position).max(0)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_what_this_run_read_towards_the_known_ends() {
        let m = QueryMetrics::default();
        assert_eq!(m.progress_after(1.0), None);
        // A file backfill resumed at byte 1,000 of the first file.
        m.set_position("bids", 0, 1_000);
        m.set_end("bids", 0, 4_000_000, "bytes");
        m.set_end("bids", 1, 6_000_000, "bytes");
        m.set_position("bids", 0, 2_001_000);
        let p = m.progress_after(2.0).unwrap();
        assert_eq!(
            (p.position, p.end, p.unit),
            (2_001_000, 10_000_000, "bytes")
        );
        assert_eq!(p.rate, 1_000_000.0);
        assert_eq!(p.eta_seconds, Some(7.999));
        assert_eq!(
            p.describe(),
            "20% of 10.0 MB (2.0 MB read), 1.0 MB/s, about 8 s left"
        );
        m.set_position("bids", 0, 4_000_000);
        m.set_position("bids", 1, 6_000_000);
        let done = m.progress_after(3.0).unwrap();
        assert_eq!(done.ratio(), 1.0);
        assert_eq!(done.describe(), "caught up (10.0 MB)");
        // Topics count records.
        let t = QueryMetrics::default();
        t.set_position("orders", 0, 0);
        t.set_end("orders", 0, 2_500_000, "records");
        t.set_position("orders", 0, 500_000);
        assert_eq!(
            t.progress_after(10.0).unwrap().describe(),
            "20% of 2.5M records (500.0K records read), 50.0K records/s, about 40 s left"
        );
    }
}
