//! The process-wide memory budget of state tables.
//!
//! Every state table attached to a store counts the bytes of keys and values
//! it holds in memory (its epoch buffer, its cache of committed values and the
//! keys it knows to be absent) against one budget shared by all queries
//! (`--state-memory-budget`). A table over budget evicts cached committed
//! entries — they are in RocksDB and are read back on demand — down to a
//! margin under the budget, so that one eviction pays for many reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The default of `--state-memory-budget`: 512 MiB.
pub const DEFAULT_STATE_MEMORY_BUDGET: usize = 512 << 20;

/// Evicting stops at this share of the budget (in percent).
const EVICT_TO_PERCENT: usize = 90;

#[derive(Debug)]
struct Counters {
    limit: usize,
    used: AtomicUsize,
    evicted: AtomicU64,
}

/// Bytes of state in memory, against a limit. Cloning shares the counters.
#[derive(Debug, Clone)]
pub struct MemoryBudget(Arc<Counters>);

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(DEFAULT_STATE_MEMORY_BUDGET)
    }
}

impl MemoryBudget {
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget(Arc::new(Counters {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }))
    }

    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Bytes counted now, across all tables.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Cached entries evicted so far.
    pub fn evicted(&self) -> u64 {
        self.0.evicted.load(Ordering::Relaxed)
    }

    pub(super) fn grow(&self, bytes: usize) {
        self.0.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn shrink(&self, bytes: usize) {
        self.0.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn count_evicted(&self, entries: u64) {
        self.0.evicted.fetch_add(entries, Ordering::Relaxed);
    }

    /// Bytes to free now: none under the budget; over it, enough to get back
    /// to the eviction margin below it.
    pub fn excess(&self) -> usize {
        let used = self.used();
        if used <= self.0.limit {
            return 0;
        }
        used - self.0.limit / 100 * EVICT_TO_PERCENT
    }
}

/// The bytes one holder of state (a state table, an operator's in-memory
/// groups) has in memory, mirrored into a budget once it has one. Dropping it
/// gives the bytes back.
#[derive(Default)]
pub struct MemoryUse {
    bytes: usize,
    budget: Option<MemoryBudget>,
}

impl MemoryUse {
    /// Counts against `budget` from now on (the bytes held so far move over).
    pub fn join(&mut self, budget: MemoryBudget) {
        if let Some(old) = self.budget.replace(budget) {
            old.shrink(self.bytes);
        }
        if let Some(new) = &self.budget {
            new.grow(self.bytes);
        }
    }

    pub fn budget(&self) -> Option<MemoryBudget> {
        self.budget.clone()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn add(&mut self, n: usize) {
        self.bytes += n;
        if let Some(b) = &self.budget {
            b.grow(n);
        }
    }

    pub fn sub(&mut self, n: usize) {
        self.bytes -= n;
        if let Some(b) = &self.budget {
            b.shrink(n);
        }
    }

    /// Counts `n` bytes from now on, for a holder that measures its whole
    /// memory at once rather than each change.
    pub fn set(&mut self, n: usize) {
        if n >= self.bytes {
            self.add(n - self.bytes);
        } else {
            self.sub(self.bytes - n);
        }
    }
}

impl Drop for MemoryUse {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.shrink(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_reaches_below_the_limit() {
        let b = MemoryBudget::new(1000);
        b.grow(900);
        assert_eq!(b.excess(), 0);
        b.grow(200);
        assert_eq!(b.excess(), 1100 - 900);
        b.shrink(1100);
        assert_eq!(b.used(), 0);
    }
}
