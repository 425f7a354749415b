//! Counters a running query updates; rendered as Prometheus text by the engine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

#[derive(Default)]
pub struct QueryMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records that could not be decoded (skipped).
    pub decode_errors: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Next offset to read and, when known, the partition's end, per partition.
    pub partitions: Mutex<BTreeMap<i32, PartitionProgress>>,
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

    pub fn set_position(&self, partition: i32, position: i64) {
        let mut p = self.partitions.lock();
        let e = p.entry(partition).or_default();
        e.position = position;
        if let Some(end) = e.end {
            if position > end {
                e.end = Some(position);
            }
        }
    }

    pub fn set_end(&self, partition: i32, end: i64) {
        self.partitions.lock().entry(partition).or_default().end = Some(end);
    }

    /// (partition, lag) for partitions whose end is known.
    pub fn lag(&self) -> Vec<(i32, i64)> {
        self.partitions
            .lock()
            .iter()
            .filter_map(|(p, prog)| prog.end.map(|e| (*p, (e - prog.position).max(0))))
            .collect()
    }
}
