//! Helpers of the differential tests (results compared with batch SQL): a
//! seeded random generator, query results as text lines, the `(k, v, ts)` test
//! events as records and as a batch table, and an engine configuration that
//! checkpoints often. Included with `#[path]` by the tests that need only these.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use datafusion::datasource::MemTable;
use sluice::config::ServerConfig;
use sluice::connectors::OutRecord;

/// Starts an engine on `config` again after the previous one on its data
/// directory was shut down and dropped: RocksDB releases its lock when the
/// last handle of the previous engine goes, which background tasks may hold
/// for a moment.
pub async fn restart_engine(config: &ServerConfig) -> Arc<sluice::engine::Engine> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sluice::engine::Engine::start(config.clone()).await {
            Ok(e) => return e,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("engine start: {e}"),
        }
    }
}

/// An engine in `dir` that checkpoints often, so restarts in tests resume from
/// recent state.
pub fn engine_config(dir: &Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_path_buf(),
        checkpoint_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

/// A test event of a stream `(k VARCHAR KEY, v BIGINT, ts BIGINT)` timed by `ts`.
#[derive(Clone, Debug)]
pub struct Event {
    pub k: String,
    pub v: i64,
    pub ts: i64,
}

/// The events as records: key `k`, JSON value `{"v", "ts"}`.
pub fn produce(events: &[Event]) -> Vec<OutRecord> {
    events
        .iter()
        .map(|e| OutRecord {
            partition: None,
            timestamp: e.ts,
            key: Some(Bytes::from(e.k.clone())),
            value: Some(Bytes::from(format!(r#"{{"v": {}, "ts": {}}}"#, e.v, e.ts))),
        })
        .collect()
}

/// The events as a batch table `(k, v, ts)` for DataFusion.
pub fn events_table(events: &[Event]) -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.k.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.v))),
            Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.ts))),
        ],
    )
    .expect("events batch");
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("events table"))
}

/// xorshift64*: deterministic per seed, good enough to generate test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every row as its columns joined by `separator` (NULL as `NULL`), sorted.
pub fn text_rows(batches: &[RecordBatch], separator: &str) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable column"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join(separator),
            );
        }
    }
    out.sort();
    out
}
