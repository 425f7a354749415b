//! Source watermarks: per partition, the largest event time seen minus the
//! declared delay; for the source, the minimum over partitions that are active.
//! A partition that produced nothing for the idle timeout stops holding the
//! watermark back, so one quiet partition cannot stall every window.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Default idle timeout when a source declares none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

struct PartitionTime {
    max_time: i64,
    /// `None` for an expected partition before the source delivered anything:
    /// idle clocks start with the first delivery (connecting can take longer
    /// than the idle timeout).
    last_active: Option<Instant>,
}

pub struct WatermarkTracker {
    delay: i64,
    idle_timeout: Duration,
    partitions: BTreeMap<i32, PartitionTime>,
    /// Last watermark emitted; watermarks never go back.
    emitted: i64,
}

impl WatermarkTracker {
    pub fn new(delay_ms: i64, idle_timeout: Duration) -> Self {
        WatermarkTracker {
            delay: delay_ms,
            idle_timeout,
            partitions: BTreeMap::new(),
            emitted: i64::MIN,
        }
    }

    /// Declares a partition that will deliver events: until it does (or stays
    /// silent for the idle timeout) it holds the watermark back, so a partition that
    /// is merely read later than the others cannot have its events made late.
    pub fn expect(&mut self, partition: i32) {
        self.partitions.entry(partition).or_insert(PartitionTime {
            max_time: i64::MIN,
            last_active: None,
        });
    }

    /// Records that `partition` delivered events up to `max_time` at `now`.
    pub fn observe(&mut self, partition: i32, max_time: i64, now: Instant) {
        for p in self.partitions.values_mut() {
            p.last_active.get_or_insert(now);
        }
        let p = self.partitions.entry(partition).or_insert(PartitionTime {
            max_time,
            last_active: Some(now),
        });
        p.max_time = p.max_time.max(max_time);
        p.last_active = Some(now);
    }

    /// The new watermark if it moved forward since the last call.
    ///
    /// A partition idle for the timeout is not counted (it may never receive
    /// data). When every known partition is idle, the watermark is the largest
    /// partition watermark: nothing is waiting for the idle ones any more.
    pub fn advance(&mut self, now: Instant) -> Option<i64> {
        let per_partition = |p: &PartitionTime| p.max_time.saturating_sub(self.delay);
        let active = self
            .partitions
            .values()
            .filter(|p| {
                p.last_active
                    .is_none_or(|t| now.duration_since(t) < self.idle_timeout)
            })
            .map(per_partition)
            .min();
        let candidate = active.or_else(|| self.partitions.values().map(per_partition).max())?;
        if candidate == i64::MIN {
            return None;
        }
        (candidate > self.emitted).then(|| {
            self.emitted = candidate;
            candidate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_active_partitions_minus_delay() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(5, Duration::from_secs(10));
        w.observe(0, 100, t0);
        assert_eq!(w.advance(t0), Some(95));
        w.observe(1, 50, t0);
        assert_eq!(w.advance(t0), None, "a slower partition holds it back");
        w.observe(1, 200, t0);
        assert_eq!(w.advance(t0), None, "partition 0 is still at 95");
        w.observe(0, 150, t0);
        assert_eq!(w.advance(t0), Some(145));
        w.observe(0, 90, t0);
        assert_eq!(w.advance(t0), None, "never goes back");
    }

    #[test]
    fn an_expected_partition_holds_it_back_until_it_delivers_or_idles() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(0, Duration::from_secs(1));
        w.expect(0);
        w.expect(1);
        w.observe(0, 100, t0);
        assert_eq!(
            w.advance(t0),
            None,
            "partition 1 may still deliver older events"
        );
        w.observe(1, 40, t0);
        assert_eq!(w.advance(t0), Some(40));
        // Idle clocks start with the first delivery, not when the source starts.
        let mut w = WatermarkTracker::new(0, Duration::from_secs(1));
        w.expect(0);
        w.expect(1);
        let later = t0 + Duration::from_millis(1500);
        w.observe(0, 100, later);
        assert_eq!(w.advance(later), None, "a slow start is not idleness");
        let much_later = later + Duration::from_millis(1500);
        w.observe(0, 200, much_later);
        assert_eq!(
            w.advance(much_later),
            Some(200),
            "partition 1 stayed silent: idle"
        );
    }

    #[test]
    fn an_idle_partition_stops_holding_it_back() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(0, Duration::from_secs(1));
        w.observe(0, 100, t0);
        w.observe(1, 10, t0);
        assert_eq!(w.advance(t0), Some(10));
        let later = t0 + Duration::from_millis(1500);
        w.observe(0, 300, later);
        assert_eq!(w.advance(later), Some(300));
        // Everything idle: the largest partition watermark.
        let much_later = later + Duration::from_secs(5);
        assert_eq!(w.advance(much_later), None);
    }
}
