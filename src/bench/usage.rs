//! Process resource usage from `/proc` (Linux): CPU time and peak resident memory.

use std::time::{Duration, Instant};

/// Kernel clock ticks per second for `/proc/<pid>/stat` times (`USER_HZ`, which is
/// 100 on every mainstream Linux build; `getconf CLK_TCK`).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of every thread of process `pid` ("self" for this one).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

/// Peak resident set size of this process in bytes (VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak RSS to the current RSS so each run reports its own peak.
/// Returns false where the kernel does not allow it (then peaks are cumulative).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Wall and CPU time since `start`.
pub struct Meter {
    wall: Instant,
    cpu: Option<f64>,
    broker_pid: Option<u32>,
    broker_cpu: Option<f64>,
    pub peak_reset: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub elapsed: Duration,
    /// CPU seconds of this process (all threads).
    pub cpu: Option<f64>,
    /// CPU seconds of the broker process, when it is ours.
    pub broker_cpu: Option<f64>,
    pub peak_rss: Option<u64>,
    /// Peak RSS was reset at the start (it is this run's own peak).
    pub peak_reset: bool,
}

impl Meter {
    pub fn start(broker_pid: Option<u32>) -> Meter {
        let peak_reset = reset_peak_rss();
        Meter {
            cpu: cpu_seconds("self"),
            broker_cpu: broker_pid.and_then(|p| cpu_seconds(&p.to_string())),
            broker_pid,
            peak_reset,
            wall: Instant::now(),
        }
    }

    pub fn stop(&self) -> Measured {
        let elapsed = self.wall.elapsed();
        let cpu = match (self.cpu, cpu_seconds("self")) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let broker_cpu = match (
            self.broker_cpu,
            self.broker_pid.and_then(|p| cpu_seconds(&p.to_string())),
        ) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        Measured {
            elapsed,
            cpu,
            broker_cpu,
            peak_rss: peak_rss_bytes(),
            peak_reset: self.peak_reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        let meter = Meter::start(None);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let m = meter.stop();
        assert!(m.cpu.is_some_and(|c| c >= 0.0));
        assert!(m.peak_rss.is_some_and(|r| r > 0));
        assert!(cpu_seconds("self").is_some());
    }
}
