//! Options of a nexmark source (`CREATE STREAM ... WITH (connector='nexmark', ...)`).

use serde::{Deserialize, Serialize};

use super::model::{Clock, EventType, DEFAULT_EVENT_RATE};

/// Event time of event 0 unless `base_time` is given: 2015-07-15 00:00:00 UTC, the
/// reference generator's fixed base time, so the data does not depend on when it
/// was generated.
pub const DEFAULT_BASE_TIME_MS: i64 = 1_436_918_400_000;

/// What a nexmark source generates; saved in the catalog with the relation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NexmarkConfig {
    /// The event type whose rows this source produces.
    pub table: EventType,
    /// Events of all types to cover (event numbers 0..events); `None`: unbounded.
    pub events: Option<u64>,
    /// Events per second of wall-clock time (all types); `None`: as fast as possible.
    pub rate: Option<u64>,
    /// Events per second of event time; `None`: `rate`, or the reference
    /// generator's 10,000 when unthrottled. (Sparse event time spreads a short
    /// test over many windows.)
    #[serde(default)]
    pub event_rate: Option<u64>,
    pub seed: u64,
    /// Event numbers are dealt round-robin to this many partitions.
    pub partitions: u32,
    /// Event time of event 0, milliseconds since the epoch.
    pub base_time_ms: i64,
}

impl NexmarkConfig {
    pub fn new(table: EventType) -> NexmarkConfig {
        NexmarkConfig {
            table,
            events: None,
            rate: None,
            event_rate: None,
            seed: 0,
            partitions: 1,
            base_time_ms: DEFAULT_BASE_TIME_MS,
        }
    }

    /// Event time advances at `event_rate` events per second, else at `rate`,
    /// else at the reference generator's 10,000.
    pub fn clock(&self) -> Clock {
        Clock {
            base_time_ms: self.base_time_ms,
            event_rate: self
                .event_rate
                .or(self.rate)
                .unwrap_or(DEFAULT_EVENT_RATE)
                .max(1),
        }
    }

    /// Events of partition `p` (event numbers p, p + P, p + 2P, ... below `events`).
    pub fn partition_events(&self, p: u32) -> Option<u64> {
        let parts = self.partitions.max(1) as u64;
        let p = p as u64;
        self.events.map(|total| {
            if total <= p {
                0
            } else {
                (total - p).div_ceil(parts)
            }
        })
    }
}

/// A bad option: which property, what is wrong and an example that works.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct OptionError {
    pub key: &'static str,
    pub message: String,
    pub hint: &'static str,
}

/// Properties a nexmark source accepts besides `connector` and `partitions`.
pub const PROPERTIES: &[&str] = &[
    "nexmark.table",
    "event_type",
    "events",
    "rate",
    "event_rate",
    "seed",
    "base_time",
];

/// Builds the configuration from WITH properties; `get` looks one up.
pub fn parse(
    get: impl Fn(&str) -> Option<String>,
    partitions: Option<i32>,
) -> Result<NexmarkConfig, OptionError> {
    let (key, table) = match (get("nexmark.table"), get("event_type")) {
        (Some(t), _) => ("nexmark.table", t),
        (None, Some(t)) => ("event_type", t),
        (None, None) => {
            return Err(OptionError {
                key: "connector",
                message: "connector='nexmark' needs the event type: nexmark.table = 'person', 'auction' or 'bid'".into(),
                hint: "WITH (connector='nexmark', nexmark.table='bid')",
            })
        }
    };
    let table = EventType::parse(&table).ok_or_else(|| OptionError {
        key,
        message: format!("'{table}' is not a nexmark event type (person, auction or bid)"),
        hint: "nexmark.table='bid'",
    })?;
    let mut config = NexmarkConfig::new(table);
    let positive = |key: &'static str, hint: &'static str| -> Result<Option<u64>, OptionError> {
        match get(key) {
            None => Ok(None),
            Some(v) => match v.trim().replace('_', "").parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(OptionError {
                    key,
                    message: format!("{key} must be a positive whole number, not '{v}'"),
                    hint,
                }),
            },
        }
    };
    config.events = positive(
        "events",
        "events=1000000 (leave it out for an endless stream)",
    )?;
    config.rate = positive(
        "rate",
        "rate=10000 events per second (leave it out for no limit)",
    )?;
    config.event_rate = positive(
        "event_rate",
        "event_rate=1000 events per second of event time (leave it out to follow rate)",
    )?;
    if let Some(seed) = get("seed") {
        config.seed = seed.trim().parse::<u64>().map_err(|_| OptionError {
            key: "seed",
            message: format!("seed must be a whole number, not '{seed}'"),
            hint: "seed=42",
        })?;
    }
    if let Some(p) = partitions {
        config.partitions = p.max(1) as u32;
    }
    if let Some(t) = get("base_time") {
        config.base_time_ms = parse_time(&t).ok_or_else(|| OptionError {
            key: "base_time",
            message: format!("base_time must be epoch milliseconds or a timestamp, not '{t}'"),
            hint: "base_time='2015-07-15 00:00:00' (UTC) or base_time=1436918400000",
        })?;
    }
    Ok(config)
}

/// Epoch milliseconds, or a UTC timestamp such as `2015-07-15 00:00:00` or RFC 3339.
fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_map(pairs: &[(&str, &str)]) -> Result<NexmarkConfig, OptionError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(|k| m.get(k).cloned(), None)
    }

    #[test]
    fn parses_options() {
        let c = parse_map(&[
            ("nexmark.table", "Bid"),
            ("events", "1_000"),
            ("rate", "50"),
            ("seed", "7"),
            ("base_time", "2020-01-01 00:00:00"),
        ])
        .unwrap();
        assert_eq!(c.table, EventType::Bid);
        assert_eq!(c.events, Some(1000));
        assert_eq!(c.rate, Some(50));
        assert_eq!(c.seed, 7);
        assert_eq!(c.base_time_ms, 1_577_836_800_000);
        assert_eq!(c.clock().event_rate, 50);
        let c = parse_map(&[
            ("nexmark.table", "bid"),
            ("rate", "50"),
            ("event_rate", "7"),
        ])
        .unwrap();
        assert_eq!((c.rate, c.clock().event_rate), (Some(50), 7));
        let c = parse_map(&[("event_type", "person")]).unwrap();
        assert_eq!(c.events, None);
        assert_eq!(c.base_time_ms, DEFAULT_BASE_TIME_MS);
        assert_eq!(c.clock().event_rate, DEFAULT_EVENT_RATE);
    }

    #[test]
    fn bad_options_name_their_property() {
        assert_eq!(parse_map(&[]).unwrap_err().key, "connector");
        assert_eq!(
            parse_map(&[("nexmark.table", "bids2")]).unwrap_err().key,
            "nexmark.table"
        );
        let e = parse_map(&[("event_type", "bid"), ("events", "-3")]).unwrap_err();
        assert_eq!(e.key, "events");
        assert!(e.message.contains("'-3'"), "{}", e.message);
        assert_eq!(
            parse_map(&[("event_type", "bid"), ("rate", "0")])
                .unwrap_err()
                .key,
            "rate"
        );
        assert_eq!(
            parse_map(&[("event_type", "bid"), ("base_time", "yesterday")])
                .unwrap_err()
                .key,
            "base_time"
        );
    }

    #[test]
    fn events_are_dealt_to_partitions() {
        let mut c = NexmarkConfig::new(EventType::Bid);
        c.events = Some(10);
        c.partitions = 3;
        // 0,3,6,9 | 1,4,7 | 2,5,8
        assert_eq!(c.partition_events(0), Some(4));
        assert_eq!(c.partition_events(1), Some(3));
        assert_eq!(c.partition_events(2), Some(3));
    }
}
