//! The source a query reads: partitions of the event sequence, their offsets, and
//! an optional rate limit.
//!
//! Event numbers are dealt round-robin: partition `p` of `P` owns event numbers
//! `p, p + P, p + 2P, ...`, and its offset is how many of them it has passed (of
//! every type, so offsets mean the same for person, auction and bid sources). An
//! event depends only on the seed and its number, so a query restarted from a
//! checkpoint's offsets generates exactly the rows it would have generated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use super::batch::BatchGenerator;
use super::config::NexmarkConfig;
use super::fields::Channels;
use super::model::EventType;
use crate::connectors::generated::{ChunkSource, GeneratedRows};
use crate::connectors::{ConnectorError, LogReader, LogRecord, StartFrom};

pub struct NexmarkReader {
    config: NexmarkConfig,
    generator: BatchGenerator,
    /// Next offset of each partition.
    offsets: Vec<u64>,
    /// Offsets past the last event of each partition (`None`: unbounded).
    ends: Vec<Option<u64>>,
    /// For the rate limit: when reading started and the events passed since.
    started: Instant,
    passed: u64,
    numbers: Vec<u64>,
}

impl NexmarkReader {
    /// `schema` has the relation's columns; `projection` maps them to generator
    /// columns (see [`super::projection`]).
    pub fn open(
        config: &NexmarkConfig,
        schema: SchemaRef,
        projection: Vec<usize>,
        start: &StartFrom,
    ) -> NexmarkReader {
        Self::with_channels(config, schema, projection, start, None)
    }

    /// Like [`open`](Self::open), sharing channel URLs built for another reader of
    /// the same seed.
    pub fn with_channels(
        config: &NexmarkConfig,
        schema: SchemaRef,
        projection: Vec<usize>,
        start: &StartFrom,
        channels: Option<Arc<Channels>>,
    ) -> NexmarkReader {
        let parts = config.partitions.max(1);
        let mut offsets = vec![0u64; parts as usize];
        // Earliest and latest are the same for a generator: it starts at event 0.
        if let StartFrom::Offsets(saved) = start {
            for (p, o) in saved {
                if let Some(slot) = usize::try_from(*p).ok().and_then(|p| offsets.get_mut(p)) {
                    *slot = (*o).max(0) as u64;
                }
            }
        }
        NexmarkReader {
            generator: BatchGenerator::new(
                config.table,
                config.seed,
                config.clock(),
                schema,
                projection,
                channels,
            ),
            ends: (0..parts).map(|p| config.partition_events(p)).collect(),
            config: config.clone(),
            offsets,
            started: Instant::now(),
            passed: 0,
            numbers: Vec::with_capacity(8192),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.generator.schema()
    }

    pub fn is_bounded(&self) -> bool {
        self.config.events.is_some()
    }

    fn exhausted(&self) -> bool {
        self.offsets
            .iter()
            .zip(&self.ends)
            .all(|(o, e)| e.is_some_and(|e| *o >= e))
    }

    /// The partition to read next: the one furthest behind in event numbers, so
    /// partitions advance together and event time stays nearly ordered.
    fn next_partition(&self) -> Option<usize> {
        let parts = self.offsets.len() as u64;
        (0..self.offsets.len())
            .filter(|&p| self.ends[p].is_none_or(|e| self.offsets[p] < e))
            .min_by_key(|&p| p as u64 + self.offsets[p] * parts)
    }

    /// Events due under the rate limit (`u64::MAX` without one), and how long until
    /// the next one when none is.
    fn due(&self) -> (u64, Duration) {
        let Some(rate) = self.config.rate else {
            return (u64::MAX, Duration::ZERO);
        };
        let elapsed = self.started.elapsed();
        let allowed = (elapsed.as_secs_f64() * rate as f64) as u64;
        if allowed > self.passed {
            return (allowed - self.passed, Duration::ZERO);
        }
        let next_at = Duration::from_secs_f64((self.passed + 1) as f64 / rate as f64);
        (0, next_at.saturating_sub(elapsed))
    }

    /// Generates up to `max_rows` rows from the partition furthest behind, passing
    /// at most `max_events` event numbers.
    pub fn generate(
        &mut self,
        max_rows: usize,
        max_events: u64,
    ) -> Result<Option<GeneratedRows>, ConnectorError> {
        let Some(p) = self.next_partition() else {
            return Ok(None);
        };
        let parts = self.offsets.len() as u64;
        let end = self.ends[p].unwrap_or(u64::MAX);
        let table = self.config.table;
        let mut offset = self.offsets[p];
        let mut passed = 0u64;
        self.numbers.clear();
        while offset < end && self.numbers.len() < max_rows.max(1) && passed < max_events {
            let n = p as u64 + offset * parts;
            if EventType::of(n) == table {
                self.numbers.push(n);
            }
            offset += 1;
            passed += 1;
        }
        self.offsets[p] = offset;
        self.passed += passed;
        let chunk = self
            .generator
            .generate(&self.numbers)
            .map_err(|e| ConnectorError::InvalidRequest(format!("generating nexmark rows: {e}")))?;
        Ok(Some(GeneratedRows {
            chunk,
            partition: p as i32,
            next_offset: offset as i64,
        }))
    }
}

#[async_trait]
impl ChunkSource for NexmarkReader {
    async fn next_rows(
        &mut self,
        max_rows: usize,
        max_wait: Duration,
    ) -> Result<Option<GeneratedRows>, ConnectorError> {
        if self.exhausted() {
            return Ok(None);
        }
        let (due, wait) = self.due();
        if due == 0 {
            tokio::time::sleep(wait.min(max_wait)).await;
            return Ok(None);
        }
        let rows = self.generate(max_rows, due)?;
        // Generating a chunk takes a few milliseconds of CPU; yield so other tasks
        // on this worker (the pipeline, the servers) get their turn.
        tokio::task::yield_now().await;
        Ok(rows)
    }
}

#[async_trait]
impl LogReader for NexmarkReader {
    /// A generated source hands out Arrow chunks through [`ChunkSource`]; it has no
    /// records to decode.
    async fn poll(
        &mut self,
        _max: usize,
        _max_wait: Duration,
    ) -> crate::connectors::Result<Vec<LogRecord>> {
        Ok(Vec::new())
    }

    async fn caught_up(&mut self) -> crate::connectors::Result<bool> {
        Ok(self.exhausted())
    }

    fn end_offsets(&self) -> Vec<(i32, i64)> {
        self.ends
            .iter()
            .enumerate()
            .filter_map(|(p, e)| e.map(|e| (p as i32, e as i64)))
            .collect()
    }

    fn describe_position(&self, partition: i32, offset: i64) -> String {
        let parts = self.offsets.len() as i64;
        format!(
            "nexmark {} event number {}",
            self.config.table.name(),
            partition as i64 + offset * parts
        )
    }

    fn as_chunk_source(&mut self) -> Option<&mut dyn ChunkSource> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::nexmark::batch::{columns, full_schema};
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};

    fn config(table: EventType, events: u64, partitions: u32) -> NexmarkConfig {
        let mut c = NexmarkConfig::new(table);
        c.events = Some(events);
        c.partitions = partitions;
        c.seed = 11;
        c
    }

    fn read_all(reader: &mut NexmarkReader, rows: usize) -> (RecordBatch, Vec<(i32, i64)>) {
        let mut batches = Vec::new();
        let mut positions = std::collections::BTreeMap::new();
        while let Some(g) = reader.generate(rows, u64::MAX).unwrap() {
            positions.insert(g.partition, g.next_offset);
            assert_eq!(g.chunk.batch.num_rows(), g.chunk.rowtime.len());
            batches.push(g.chunk.batch);
        }
        let schema = reader.schema();
        (
            concat_batches(&schema, &batches).unwrap(),
            positions.into_iter().collect(),
        )
    }

    fn open(c: &NexmarkConfig, start: &StartFrom) -> NexmarkReader {
        let n = columns(c.table).len();
        NexmarkReader::open(c, full_schema(c.table), (0..n).collect(), start)
    }

    /// Rows sorted by date_time then by every other column, so runs that deal
    /// events to partitions differently compare equal.
    fn sorted(batch: &RecordBatch) -> RecordBatch {
        let columns: Vec<arrow::compute::SortColumn> = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::SortColumn {
                values: c.clone(),
                options: None,
            })
            .collect();
        let indices = arrow::compute::lexsort_to_indices(&columns, None).unwrap();
        arrow::compute::take_record_batch(batch, &indices).unwrap()
    }

    #[test]
    fn the_event_mix_and_ids_hold_for_every_type() {
        let (people, _) = read_all(
            &mut open(&config(EventType::Person, 5_000, 1), &StartFrom::Earliest),
            1000,
        );
        let (auctions, _) = read_all(
            &mut open(&config(EventType::Auction, 5_000, 1), &StartFrom::Earliest),
            1000,
        );
        let (bids, _) = read_all(
            &mut open(&config(EventType::Bid, 5_000, 1), &StartFrom::Earliest),
            1000,
        );
        assert_eq!(
            (people.num_rows(), auctions.num_rows(), bids.num_rows()),
            (100, 300, 4600)
        );
        let ids = people.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), (1000..1100).collect::<Vec<i64>>());
        let ids = auctions.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), (1000..1300).collect::<Vec<i64>>());
        // Bids refer to auctions and people that exist (or are about to).
        let auction = bids.column(0).as_primitive::<Int64Type>();
        let bidder = bids.column(1).as_primitive::<Int64Type>();
        assert!(auction
            .values()
            .iter()
            .all(|a| (1000..1300 + 10).contains(a)));
        assert!(bidder
            .values()
            .iter()
            .all(|b| (1000..1100 + 10).contains(b)));
        // Hot auctions: most bids go to a multiple of 100 (base 0).
        let hot = auction
            .values()
            .iter()
            .filter(|a| (*a - 1000) % 100 == 0)
            .count();
        assert!(hot > 4000, "{hot}");
        // Auctions expire after they start; reserves are above initial bids.
        let start = auctions
            .column(5)
            .as_primitive::<TimestampMillisecondType>();
        let expires = auctions
            .column(6)
            .as_primitive::<TimestampMillisecondType>();
        assert!(start
            .values()
            .iter()
            .zip(expires.values())
            .all(|(s, e)| e > s));
        let initial = auctions.column(3).as_primitive::<Int64Type>();
        let reserve = auctions.column(4).as_primitive::<Int64Type>();
        assert!(initial
            .values()
            .iter()
            .zip(reserve.values())
            .all(|(i, r)| r > i));
        // 5000 events at 10,000 events/s span half a second of event time.
        let times = bids.column(5).as_primitive::<TimestampMillisecondType>();
        assert_eq!(
            times.value(0),
            crate::connectors::nexmark::config::DEFAULT_BASE_TIME_MS
        );
        assert!(times.values().windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            *times.values().last().unwrap(),
            crate::connectors::nexmark::config::DEFAULT_BASE_TIME_MS + 499
        );
        // Row sizes average what the reference generator aims for.
        let extra = bids.column(6).as_string::<i32>();
        let avg = extra.value_data().len() as f64 / extra.len() as f64;
        assert!((60.0..76.0).contains(&avg), "{avg}");
    }

    #[test]
    fn seeds_batch_sizes_and_partitions_do_not_change_the_events() {
        let c = config(EventType::Bid, 3_000, 1);
        let (a, _) = read_all(&mut open(&c, &StartFrom::Earliest), 1000);
        let (b, _) = read_all(&mut open(&c, &StartFrom::Earliest), 77);
        assert_eq!(a, b);
        let (p4, positions) = read_all(
            &mut open(&config(EventType::Bid, 3_000, 4), &StartFrom::Earliest),
            100,
        );
        assert_eq!(sorted(&a), sorted(&p4));
        assert_eq!(positions, vec![(0, 750), (1, 750), (2, 750), (3, 750)]);
        let mut other_seed = c.clone();
        other_seed.seed = 12;
        let (d, _) = read_all(&mut open(&other_seed, &StartFrom::Earliest), 1000);
        assert_ne!(a, d);
    }

    #[test]
    fn a_restart_from_offsets_continues_where_it_stopped() {
        let c = config(EventType::Bid, 2_000, 3);
        let (all, _) = read_all(&mut open(&c, &StartFrom::Earliest), 64);
        let mut first = open(&c, &StartFrom::Earliest);
        let mut batches = Vec::new();
        let mut positions = std::collections::BTreeMap::new();
        for _ in 0..5 {
            let g = first.generate(64, u64::MAX).unwrap().unwrap();
            positions.insert(g.partition, g.next_offset);
            batches.push(g.chunk.batch);
        }
        let resumed_from = StartFrom::Offsets(positions.into_iter().collect());
        let (rest, _) = read_all(&mut open(&c, &resumed_from), 64);
        batches.push(rest);
        let joined = concat_batches(&all.schema(), &batches).unwrap();
        assert_eq!(sorted(&joined), sorted(&all));
    }

    #[test]
    fn declared_columns_are_generated_alone_with_the_same_values() {
        let c = config(EventType::Bid, 1_000, 1);
        let (all, _) = read_all(&mut open(&c, &StartFrom::Earliest), 500);
        // price, auction: columns 2 and 0.
        let schema = Arc::new(all.schema().project(&[2, 0]).unwrap());
        let mut some = NexmarkReader::open(&c, schema, vec![2, 0], &StartFrom::Earliest);
        let (projected, _) = read_all(&mut some, 500);
        assert_eq!(projected, all.project(&[2, 0]).unwrap());
    }

    #[tokio::test]
    async fn the_rate_limit_paces_generation() {
        let mut c = config(EventType::Bid, 1_000_000, 1);
        c.rate = Some(2_000);
        let mut reader = open(&c, &StartFrom::Earliest);
        let started = Instant::now();
        let mut rows = 0;
        while started.elapsed() < Duration::from_millis(300) {
            if let Some(g) = reader
                .next_rows(8192, Duration::from_millis(20))
                .await
                .unwrap()
            {
                rows += g.chunk.num_rows();
            }
        }
        // 2,000 events/s for 0.3 s: about 600 events, 552 of them bids.
        assert!((300..800).contains(&rows), "{rows}");
    }
}
