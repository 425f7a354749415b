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
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionProgress {
    pub position: i64,
    pub end: Option<i64>,
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
        if let Some(end) = e.end {
            if position > end {
                e.end = Some(position);
            }
        }
    }

    pub fn set_end(&self, source: &str, partition: i32, end: i64) {
        self.partitions
            .lock()
            .entry((source.to_string(), partition))
            .or_default()
            .end = Some(end);
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
