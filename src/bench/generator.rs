//! Deterministic synthetic pageview events for `sluice bench`.
//!
//! The same seed always yields the same events, whichever form they are produced
//! in: Arrow chunks (the in-process benchmark), JSON log records (the decode
//! benchmark) or records to produce to Kafka (the end-to-end benchmark). The
//! generator is built to be cheap next to what it measures: strings come from
//! precomputed dictionaries (a `memcpy` per row, or a zero-copy `Bytes` slice for
//! Kafka keys), numbers are formatted by hand, and each batch allocates a handful of
//! buffers, not one per row.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::catalog::{ColumnMeta, FormatMeta, KeyFormat, Relation, ValueFormat};
use crate::connectors::{LogRecord, OutRecord};
use crate::dataflow::Chunk;
use crate::error::Result;
use crate::sql::RelationKind;

/// Event time of the first event (2023-11-14T22:13:20Z).
pub const BASE_TS: i64 = 1_700_000_000_000;

/// The stream's DDL, as a user would write it; `{topic}` is replaced.
pub const PAGEVIEWS_DDL: &str = "CREATE STREAM pageviews (user_id VARCHAR KEY, url VARCHAR, status INT, \
     latency_ms DOUBLE, ts TIMESTAMP) WITH (kafka_topic='{topic}', value_format='json', timestamp='ts')";

/// The `pageviews` stream as the catalog holds it after [`PAGEVIEWS_DDL`].
pub fn pageviews_relation(topic: &str, partitions: i32) -> Result<Relation> {
    let col = |name: &str, sql_type: &str, key: bool| ColumnMeta {
        name: name.into(),
        sql_type: sql_type.into(),
        key,
        not_null: false,
    };
    Relation::new(
        "pageviews".into(),
        RelationKind::Stream,
        vec![
            col("user_id", "VARCHAR", true),
            col("url", "VARCHAR", false),
            col("status", "INT", false),
            col("latency_ms", "DOUBLE", false),
            col("ts", "TIMESTAMP", false),
        ],
        topic.into(),
        partitions,
        FormatMeta {
            value_format: ValueFormat::Json,
            key_format: KeyFormat::Kafka,
            timestamp: Some("ts".into()),
            timestamp_format: None,
            delimiter: ',',
            key_delimiter: ',',
            wrap_single_value: true,
            key_in_value: Some(false),
            ksqldb_json: true,
            watermark_delay_ms: 0,
            idle_timeout_ms: None,
            processing_time: false,
        },
        PAGEVIEWS_DDL.replace("{topic}", topic),
        None,
        vec![],
    )
}

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Distinct `user_id`s (uniformly chosen).
    pub users: u32,
    /// Distinct `url`s (uniformly chosen).
    pub urls: u32,
    /// Events per millisecond of event time (event time only ever moves forward).
    pub events_per_ms: u32,
    /// JSON field names in upper case, as ksqlDB writes them.
    pub upper_case_fields: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            users: 100_000,
            urls: 1_000,
            events_per_ms: 10,
            upper_case_fields: false,
        }
    }
}

/// SplitMix64: tiny, fast, statistically fine for synthetic data, and stable (the
/// sequence for a seed never changes with a dependency upgrade).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is negligible here).
    fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// Fixed strings stored back to back: string `i` is `bytes[offsets[i]..offsets[i + 1]]`.
struct Dictionary {
    bytes: Bytes,
    offsets: Vec<usize>,
}

impl Dictionary {
    fn new(n: u32, name: impl Fn(u32) -> String) -> Self {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(n as usize + 1);
        offsets.push(0);
        for i in 0..n {
            bytes.extend_from_slice(name(i).as_bytes());
            offsets.push(bytes.len());
        }
        Dictionary {
            bytes: Bytes::from(bytes),
            offsets,
        }
    }

    fn get(&self, i: u32) -> &[u8] {
        &self.bytes[self.offsets[i as usize]..self.offsets[i as usize + 1]]
    }

    /// A zero-copy handle on string `i`.
    fn slice(&self, i: u32) -> Bytes {
        self.bytes
            .slice(self.offsets[i as usize]..self.offsets[i as usize + 1])
    }

    fn avg_len(&self) -> usize {
        self.bytes.len() / (self.offsets.len() - 1).max(1)
    }
}

/// One pageview. Latency is kept in hundredths of a millisecond so the Arrow and the
/// JSON forms carry exactly the same `f64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub user: u32,
    pub url: u32,
    pub status: i32,
    pub latency_centis: u32,
    pub ts: i64,
}

impl Event {
    pub fn latency_ms(&self) -> f64 {
        f64::from(self.latency_centis) / 100.0
    }
}

pub struct PageviewGenerator {
    config: GeneratorConfig,
    rng: SplitMix64,
    users: Dictionary,
    urls: Dictionary,
    schema: SchemaRef,
    produced: u64,
}

impl PageviewGenerator {
    /// `schema` is the stream's schema (see [`pageviews_relation`]).
    pub fn new(config: GeneratorConfig, schema: SchemaRef) -> Self {
        let users = Dictionary::new(config.users.max(1), |i| format!("user-{i:07}"));
        let urls = Dictionary::new(config.urls.max(1), |i| format!("/catalog/item/{i:06}"));
        PageviewGenerator {
            rng: SplitMix64(config.seed),
            config,
            users,
            urls,
            schema,
            produced: 0,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Events generated so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    pub fn next_event(&mut self) -> Event {
        let user = self.rng.below(self.config.users.max(1));
        let url = self.rng.below(self.config.urls.max(1));
        // About 85% 200, 3% 301, 2% 304, 5% 404 and 5% 5xx (the filter keeps 5%).
        let status = match self.rng.below(1000) {
            0..850 => 200,
            850..880 => 301,
            880..900 => 304,
            900..950 => 404,
            950..970 => 500,
            970..990 => 502,
            _ => 503,
        };
        // Exponential with a 60 ms mean, plus 1 ms, capped at 60 s.
        let latency_ms = (1.0 - self.rng.unit().ln() * 60.0).min(60_000.0);
        let latency_centis = (latency_ms * 100.0) as u32;
        let ts = BASE_TS + (self.produced / u64::from(self.config.events_per_ms.max(1))) as i64;
        self.produced += 1;
        Event {
            user,
            url,
            status,
            latency_centis,
            ts,
        }
    }

    /// The next `n` events as a chunk in the stream's schema, event time from `ts`.
    pub fn next_chunk(&mut self, n: usize) -> Result<Chunk> {
        let mut user_offsets: Vec<i32> = Vec::with_capacity(n + 1);
        let mut user_bytes: Vec<u8> = Vec::with_capacity(n * self.users.avg_len());
        let mut url_offsets: Vec<i32> = Vec::with_capacity(n + 1);
        let mut url_bytes: Vec<u8> = Vec::with_capacity(n * self.urls.avg_len());
        let mut status: Vec<i32> = Vec::with_capacity(n);
        let mut latency: Vec<f64> = Vec::with_capacity(n);
        let mut ts: Vec<i64> = Vec::with_capacity(n);
        user_offsets.push(0);
        url_offsets.push(0);
        for _ in 0..n {
            let e = self.next_event();
            user_bytes.extend_from_slice(self.users.get(e.user));
            user_offsets.push(user_bytes.len() as i32);
            url_bytes.extend_from_slice(self.urls.get(e.url));
            url_offsets.push(url_bytes.len() as i32);
            status.push(e.status);
            latency.push(e.latency_ms());
            ts.push(e.ts);
        }
        let ts = ScalarBuffer::from(ts);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::try_new(
                OffsetBuffer::new(ScalarBuffer::from(user_offsets)),
                Buffer::from_vec(user_bytes),
                None,
            )?),
            Arc::new(StringArray::try_new(
                OffsetBuffer::new(ScalarBuffer::from(url_offsets)),
                Buffer::from_vec(url_bytes),
                None,
            )?),
            Arc::new(Int32Array::from(status)),
            Arc::new(Float64Array::from(latency)),
            Arc::new(TimestampMillisecondArray::new(ts.clone(), None)),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Chunk::new(batch, Int64Array::new(ts, None), None))
    }

    /// Appends the JSON value of `e` (without the key column, as ksqlDB writes it).
    fn write_json(&self, e: &Event, out: &mut Vec<u8>) {
        let upper = self.config.upper_case_fields;
        let name = |lower: &'static [u8], upper_case: &'static [u8]| {
            if upper {
                upper_case
            } else {
                lower
            }
        };
        out.extend_from_slice(name(b"{\"url\":\"", b"{\"URL\":\""));
        out.extend_from_slice(self.urls.get(e.url));
        out.extend_from_slice(name(b"\",\"status\":", b"\",\"STATUS\":"));
        write_u64(out, e.status as u64);
        out.extend_from_slice(name(b",\"latency_ms\":", b",\"LATENCY_MS\":"));
        write_u64(out, u64::from(e.latency_centis / 100));
        let frac = e.latency_centis % 100;
        out.extend_from_slice(&[b'.', b'0' + (frac / 10) as u8, b'0' + (frac % 10) as u8]);
        out.extend_from_slice(name(b",\"ts\":", b",\"TS\":"));
        write_u64(out, e.ts as u64);
        out.push(b'}');
    }

    /// The next `n` events as JSON records: the key is the `user_id` text (KAFKA
    /// key format), the value holds the other columns. One value buffer per call.
    fn next_json(&mut self, n: usize) -> (Vec<Event>, Bytes, Vec<usize>) {
        let mut events = Vec::with_capacity(n);
        let mut buf = Vec::with_capacity(n * 80);
        let mut ends = Vec::with_capacity(n);
        for _ in 0..n {
            let e = self.next_event();
            self.write_json(&e, &mut buf);
            ends.push(buf.len());
            events.push(e);
        }
        (events, Bytes::from(buf), ends)
    }

    /// The next `n` events as records read from partition 0 starting at `first_offset`.
    pub fn next_log_records(&mut self, n: usize, first_offset: i64) -> Vec<LogRecord> {
        let (events, values, ends) = self.next_json(n);
        let mut start = 0;
        events
            .iter()
            .zip(ends)
            .enumerate()
            .map(|(i, (e, end))| {
                let value = values.slice(start..end);
                start = end;
                LogRecord {
                    partition: 0,
                    offset: first_offset + i as i64,
                    timestamp: e.ts,
                    key: Some(self.users.slice(e.user)),
                    value: Some(value),
                }
            })
            .collect()
    }

    /// The next `n` events as records to produce (partitioned by key).
    pub fn next_out_records(&mut self, n: usize) -> Vec<OutRecord> {
        let (events, values, ends) = self.next_json(n);
        let mut start = 0;
        events
            .iter()
            .zip(ends)
            .map(|(e, end)| {
                let value = values.slice(start..end);
                start = end;
                OutRecord {
                    partition: None,
                    timestamp: e.ts,
                    key: Some(self.users.slice(e.user)),
                    value: Some(value),
                }
            })
            .collect()
    }
}

/// Decimal digits of `v`, without allocating.
fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::RecordDecoder;
    use arrow::array::Array;
    use arrow::datatypes::{DataType, TimeUnit};

    fn generator(seed: u64) -> PageviewGenerator {
        let relation = pageviews_relation("pageviews", 1).unwrap();
        PageviewGenerator::new(
            GeneratorConfig {
                seed,
                ..Default::default()
            },
            relation.schema(),
        )
    }

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        let a = generator(7).next_chunk(5000).unwrap();
        let b = generator(7).next_chunk(5000).unwrap();
        let c = generator(8).next_chunk(5000).unwrap();
        assert_eq!(a.batch, b.batch);
        assert_eq!(a.rowtime, b.rowtime);
        assert_ne!(a.batch, c.batch);
        // Batch boundaries do not change the sequence.
        let mut g = generator(7);
        let first = g.next_chunk(1234).unwrap();
        let rest = g.next_chunk(5000 - 1234).unwrap();
        let joined =
            arrow::compute::concat_batches(&a.batch.schema(), [&first.batch, &rest.batch]).unwrap();
        assert_eq!(joined, a.batch);
    }

    #[test]
    fn chunks_have_the_stream_schema_and_plausible_values() {
        let relation = pageviews_relation("pageviews", 1).unwrap();
        let chunk = generator(1).next_chunk(20_000).unwrap();
        assert_eq!(chunk.batch.schema(), relation.schema());
        assert_eq!(
            chunk.batch.schema().field(4).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert!(chunk.ops.is_none(), "a stream chunk is append-only");
        let ts = chunk
            .batch
            .column(4)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(
            ts.values(),
            chunk.rowtime.values(),
            "event time is the ts column"
        );
        assert!(ts.values().windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(ts.value(0), BASE_TS);
        let status = chunk
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        let errors = status.values().iter().filter(|s| **s >= 500).count();
        assert!(
            (800..1200).contains(&errors),
            "about 5% errors, got {errors}"
        );
        let users = chunk
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(users
            .iter()
            .all(|u| u.is_some_and(|u| u.starts_with("user-"))));
        let distinct_urls: std::collections::HashSet<_> = chunk
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(distinct_urls.len(), 1000, "20k events cover all 1000 urls");
        assert_eq!(chunk.batch.column(3).null_count(), 0);
    }

    #[test]
    fn upper_case_json_fields_decode_to_the_same_rows() {
        let relation = pageviews_relation("pageviews", 1).unwrap();
        let expected = generator(3).next_chunk(500).unwrap();
        let mut upper = PageviewGenerator::new(
            GeneratorConfig {
                seed: 3,
                upper_case_fields: true,
                ..Default::default()
            },
            relation.schema(),
        );
        let records = upper.next_log_records(500, 0);
        assert!(records[0]
            .value
            .as_deref()
            .unwrap()
            .starts_with(b"{\"URL\""));
        let mut decoder = RecordDecoder::new(&relation).unwrap();
        // The first batch is folded row by row and turns on the upper-case
        // twins; the second is decoded through them.
        for part in [&records[..250], &records[250..]] {
            let decoded = decoder.decode(part).unwrap();
            assert!(decoded.bad.is_empty(), "{:?}", decoded.bad.first());
            let offset = part[0].offset as usize;
            assert_eq!(decoded.chunk.batch, expected.batch.slice(offset, 250));
        }
    }

    #[test]
    fn json_records_decode_to_the_same_rows() {
        let relation = pageviews_relation("pageviews", 1).unwrap();
        let expected = generator(3).next_chunk(3000).unwrap();
        let records = generator(3).next_log_records(3000, 100);
        assert_eq!(records[0].offset, 100);
        let decoded = RecordDecoder::new(&relation)
            .unwrap()
            .decode(&records)
            .unwrap();
        assert!(decoded.bad.is_empty(), "{:?}", decoded.bad.first());
        assert_eq!(decoded.chunk.batch, expected.batch);
        assert_eq!(decoded.chunk.rowtime, expected.rowtime);
        let out = generator(3).next_out_records(3000);
        assert_eq!(out[5].value, records[5].value);
        assert_eq!(out[5].key, records[5].key);
    }

    #[test]
    fn writes_integers() {
        let mut out = Vec::new();
        for v in [0u64, 7, 10, 1_700_000_000_000, u64::MAX] {
            out.clear();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }
}
