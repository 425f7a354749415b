//! Operator state on RocksDB.
//!
//! One column family per query. Operators keep their state in memory and write the
//! changes since the last checkpoint into a [`StateWriteBatch`] when a barrier
//! passes; the batch is committed together with the source offsets in one atomic
//! RocksDB write, so after a crash state and offsets always agree.
//! Keys are `[operator id: u16 BE][operator's key]`; the offsets live under an
//! operator id no operator uses.

pub mod budget;
pub mod key;
pub mod table;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{DBWithThreadMode, MultiThreaded, Options, WriteBatch, WriteOptions};

use crate::error::{Result, SluiceError};

type Db = DBWithThreadMode<MultiThreaded>;

const META_OPERATOR: u16 = u16::MAX;
const OFFSETS_KEY: &[u8] = b"offsets";
const EPOCH_KEY: &[u8] = b"epoch";
const FORMAT_KEY: &[u8] = b"format";
const PLAN_KEY: &[u8] = b"plan";
const PRODUCER_KEY: &[u8] = b"producer";
/// Followed by the sink's name: what the sink's `prepare` returned.
const SINK_KEY_PREFIX: &[u8] = b"sink.";

fn sink_key(sink: &str) -> Vec<u8> {
    let mut key = SINK_KEY_PREFIX.to_vec();
    key.extend_from_slice(sink.as_bytes());
    prefixed(META_OPERATOR, &key)
}

/// The layout of a query's state this build writes. Checkpoints written before
/// the key existed are format 1.
///
/// - 2: stream–table joins keep their own copy of the table in a state table
///   and read the table as an input of their own (format 1 read another
///   query's memory, and numbered the query's inputs without the table).
/// - 3: interval joins keep their rows in state tables (format 2's layout is
///   still read, and moved into the tables at the next checkpoint).
/// - 4: group aggregates keep their groups in a state table, with each
///   group's latest event time, and materialized tables their rows (format
///   3's layout is still read, and moved into the tables at the next
///   checkpoint).
/// - 5: window aggregates with EMIT FINAL keep their groups in a state table
///   keyed `[key][end][start]` and write only the groups that changed;
///   session aggregates keep each key's sessions, and table-table joins each
///   side's rows, in state tables (format 4's layouts are still read, and
///   moved at the next checkpoint).
pub const STATE_FORMAT: u32 = 5;

fn err(context: &str, e: rocksdb::Error) -> SluiceError {
    SluiceError::State(format!("{context}: {e}"))
}

/// Input 0 keeps the key single-input queries always used.
fn offsets_key(input: usize) -> Vec<u8> {
    match input {
        0 => OFFSETS_KEY.to_vec(),
        n => format!("offsets.{n}").into_bytes(),
    }
}

/// Options of every query's column family. Bloom filters let a read of a key
/// that is not stored (a new group, a join key without a row) skip the files
/// instead of reading a block of each.
fn family_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    opts
}

/// The process-wide state store.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Db>,
    budget: budget::MemoryBudget,
}

impl StateStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let mut opts = family_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let existing = Db::list_cf(&opts, dir).unwrap_or_else(|_| vec!["default".to_string()]);
        let db = Db::open_cf(&opts, dir, existing)
            .map_err(|e| err(&format!("opening {}", dir.display()), e))?;
        Ok(StateStore {
            db: Arc::new(db),
            budget: budget::MemoryBudget::default(),
        })
    }

    /// Counts the memory of every state table of this store against `budget`.
    pub fn with_budget(mut self, budget: budget::MemoryBudget) -> StateStore {
        self.budget = budget;
        self
    }

    pub fn budget(&self) -> &budget::MemoryBudget {
        &self.budget
    }

    fn cf_name(query_id: &str) -> String {
        format!("q:{query_id}")
    }

    /// The state of one query, created empty if it has none yet.
    pub fn query(&self, query_id: &str) -> Result<QueryState> {
        let name = Self::cf_name(query_id);
        if self.db.cf_handle(&name).is_none() {
            let opts = family_options();
            self.db
                .create_cf(&name, &opts)
                .map_err(|e| err(&format!("creating state for {query_id}"), e))?;
        }
        Ok(QueryState {
            db: self.db.clone(),
            cf: name,
            budget: self.budget.clone(),
        })
    }

    /// Deletes all state of a query (TERMINATE, DROP).
    pub fn drop_query(&self, query_id: &str) -> Result<()> {
        let name = Self::cf_name(query_id);
        if self.db.cf_handle(&name).is_some() {
            self.db
                .drop_cf(&name)
                .map_err(|e| err(&format!("dropping state of {query_id}"), e))?;
        }
        Ok(())
    }

    /// Approximate bytes of live state, per query id (for /metrics).
    pub fn sizes(&self, query_ids: &[String]) -> Vec<(String, u64)> {
        query_ids
            .iter()
            .filter_map(|q| {
                let cf = self.db.cf_handle(&Self::cf_name(q))?;
                let size = self
                    .db
                    .property_int_value_cf(&cf, "rocksdb.estimate-live-data-size")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let mem = self
                    .db
                    .property_int_value_cf(&cf, "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                Some((q.clone(), size + mem))
            })
            .collect()
    }
}

/// The state of one query.
#[derive(Clone)]
pub struct QueryState {
    db: Arc<Db>,
    cf: String,
    budget: budget::MemoryBudget,
}

fn prefixed(operator: u16, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(&operator.to_be_bytes());
    k.extend_from_slice(key);
    k
}

impl QueryState {
    /// The memory budget its state tables count against.
    pub fn budget(&self) -> &budget::MemoryBudget {
        &self.budget
    }

    fn handle(&self) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.db
            .cf_handle(&self.cf)
            .ok_or_else(|| SluiceError::State(format!("column family {} is gone", self.cf)))
    }

    /// Offsets of input `input` in the last committed checkpoint.
    pub fn offsets(&self, input: usize) -> Result<Option<Vec<(i32, i64)>>> {
        let cf = self.handle()?;
        let raw = self
            .db
            .get_cf(&cf, prefixed(META_OPERATOR, &offsets_key(input)))
            .map_err(|e| err("reading offsets", e))?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SluiceError::State(format!("corrupt offsets in {}: {e}", self.cf))),
        }
    }

    /// A metadata value of the last committed checkpoint.
    fn meta<const N: usize>(&self, key: &[u8], what: &str) -> Result<Option<[u8; N]>> {
        let cf = self.handle()?;
        let raw = self
            .db
            .get_cf(&cf, prefixed(META_OPERATOR, key))
            .map_err(|e| err(&format!("reading {what}"), e))?;
        Ok(raw.and_then(|b| <[u8; N]>::try_from(b.as_slice()).ok()))
    }

    /// The epoch of the last committed checkpoint (0 when none).
    pub fn epoch(&self) -> Result<u64> {
        Ok(self
            .meta(EPOCH_KEY, "epoch")?
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// The state format of the last checkpoint (see [`STATE_FORMAT`]); 1 for
    /// checkpoints older than the format key.
    pub fn format(&self) -> Result<u32> {
        Ok(self
            .meta(FORMAT_KEY, "the state format")?
            .map(u32::from_be_bytes)
            .unwrap_or(1))
    }

    /// [`QueryState::format`], refused when a newer build wrote it: its
    /// layout may differ in ways this build would misread.
    pub fn readable_format(&self) -> Result<u32> {
        let format = self.format()?;
        if format > STATE_FORMAT {
            return Err(SluiceError::IncompatibleState(format!(
                "checkpointed by a newer Sluice (state format {format}; this build reads \
                 formats up to {STATE_FORMAT}): run that version, or drop the query and \
                 create it again to rebuild its state from its inputs"
            )));
        }
        Ok(format)
    }

    /// The plan the query's state was written under (see
    /// `Dataflow::signature`), if one was recorded.
    pub fn plan(&self) -> Result<Option<String>> {
        let cf = self.handle()?;
        let raw = self
            .db
            .get_cf(&cf, prefixed(META_OPERATOR, PLAN_KEY))
            .map_err(|e| err("reading the plan", e))?;
        Ok(raw.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Records the plan the query's state is written under.
    pub fn record_plan(&self, plan: &str) -> Result<()> {
        let cf = self.handle()?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(&cf, prefixed(META_OPERATOR, PLAN_KEY), plan, &wo)
            .map_err(|e| err("recording the plan", e))
    }

    /// What sink `sink` prepared for the last committed checkpoint (see
    /// `LogWriter::prepare`).
    pub fn sink_state(&self, sink: &str) -> Result<Option<Vec<u8>>> {
        let cf = self.handle()?;
        self.db
            .get_cf(&cf, sink_key(sink))
            .map_err(|e| err("reading a sink's checkpoint", e))
    }

    /// Records sink `sink`'s state outside a checkpoint (its baseline, before
    /// the query's first checkpoint that has one).
    pub fn record_sink_state(&self, sink: &str, value: &[u8]) -> Result<()> {
        let cf = self.handle()?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(&cf, sink_key(sink), value, &wo)
            .map_err(|e| err("recording a sink's checkpoint", e))
    }

    /// The name this query's state writes its exactly-once output under,
    /// made when first asked: a query created again (new state) gets a new
    /// one, so what an earlier incarnation published never hides its output.
    pub fn producer(&self, query_id: &str) -> Result<String> {
        let cf = self.handle()?;
        let key = prefixed(META_OPERATOR, PRODUCER_KEY);
        if let Some(raw) = self
            .db
            .get_cf(&cf, &key)
            .map_err(|e| err("reading the producer name", e))?
        {
            return Ok(String::from_utf8_lossy(&raw).into_owned());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name: String = format!("{query_id}.{nanos:x}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(&cf, &key, name.as_bytes(), &wo)
            .map_err(|e| err("recording the producer name", e))?;
        Ok(name)
    }

    /// The committed values of `keys` (stored keys, as state tables build
    /// them), in one batched read.
    pub fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let cf = self.handle()?;
        self.db
            .batched_multi_get_cf(&cf, keys, false)
            .into_iter()
            .map(|r| {
                r.map(|v| v.map(|v| v.to_vec()))
                    .map_err(|e| err("reading state", e))
            })
            .collect()
    }

    /// Every (key, value) an operator stored, keys without the operator prefix.
    pub fn scan(&self, operator: u16) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = self.scan_prefix(&operator.to_be_bytes())?;
        for (k, _) in &mut entries {
            k.drain(..2);
        }
        Ok(entries)
    }

    /// The committed entries of the ranges `[start, end)`, merged into one
    /// sequence ordered by their keys past the first `header` bytes (each
    /// range holds one vnode of a table, whose keys are in order within it),
    /// as of one snapshot, handed to `emit` in pieces of at most `piece`
    /// entries (keys with the header, values). At most `limit` entries in
    /// all; stops early when `emit` returns false. Memory: one entry per
    /// range and one piece, whatever the number of entries.
    pub fn merge_ranges(
        &self,
        ranges: &[(Vec<u8>, Vec<u8>)],
        header: usize,
        limit: Option<usize>,
        piece: usize,
        mut emit: impl FnMut(Vec<(Vec<u8>, Vec<u8>)>) -> Result<bool>,
    ) -> Result<()> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let cf = self.handle()?;
        let snapshot = self.db.snapshot();
        let mut iters = Vec::with_capacity(ranges.len());
        // (key past the header, range) of each range's next entry.
        let mut next: BinaryHeap<Reverse<(Vec<u8>, usize)>> = BinaryHeap::new();
        for (i, (start, end)) in ranges.iter().enumerate() {
            let mut opts = rocksdb::ReadOptions::default();
            opts.set_iterate_upper_bound(end.clone());
            let mut iter = snapshot.raw_iterator_cf_opt(&cf, opts);
            iter.seek(start);
            if let Some(k) = iter.key() {
                next.push(Reverse((k.get(header..).unwrap_or_default().to_vec(), i)));
            }
            iter.status().map_err(|e| err("scanning state", e))?;
            iters.push(iter);
        }
        let piece = piece.max(1);
        let mut out = Vec::with_capacity(piece);
        let mut left = limit.unwrap_or(usize::MAX);
        while left > 0 {
            let Some(Reverse((_, i))) = next.pop() else {
                break;
            };
            let iter = &mut iters[i];
            if let (Some(k), Some(v)) = (iter.key(), iter.value()) {
                out.push((k.to_vec(), v.to_vec()));
                left -= 1;
            }
            iter.next();
            if let Some(k) = iter.key() {
                next.push(Reverse((k.get(header..).unwrap_or_default().to_vec(), i)));
            }
            iter.status().map_err(|e| err("scanning state", e))?;
            if out.len() == piece && !emit(std::mem::replace(&mut out, Vec::with_capacity(piece)))?
            {
                return Ok(());
            }
        }
        if !out.is_empty() {
            emit(out)?;
        }
        Ok(())
    }

    /// Every committed (key, value) whose stored key starts with `prefix`.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = self.handle()?;
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            &cf,
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| err("scanning state", e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// How many committed keys start with `prefix`.
    pub fn count_prefix(&self, prefix: &[u8]) -> Result<usize> {
        let cf = self.handle()?;
        let mut iter = self.db.raw_iterator_cf(&cf);
        iter.seek(prefix);
        let mut n = 0;
        while iter.key().is_some_and(|k| k.starts_with(prefix)) {
            n += 1;
            iter.next();
        }
        iter.status().map_err(|e| err("scanning state", e))?;
        Ok(n)
    }

    /// Some committed key starts with `prefix`.
    pub fn has_prefix(&self, prefix: &[u8]) -> Result<bool> {
        let cf = self.handle()?;
        let mut iter = self.db.raw_iterator_cf(&cf);
        iter.seek(prefix);
        iter.status().map_err(|e| err("scanning state", e))?;
        Ok(iter.key().is_some_and(|k| k.starts_with(prefix)))
    }

    /// Commits operator changes and source offsets in one atomic, synced write.
    /// `offsets[i]` are input `i`'s next offsets per partition.
    pub fn commit(
        &self,
        batch: StateWriteBatch,
        epoch: u64,
        offsets: &[Vec<(i32, i64)>],
    ) -> Result<()> {
        let cf = self.handle()?;
        let mut wb = WriteBatch::default();
        // In key order: RocksDB's memtable (a skip list) inserts each key next
        // to the one before instead of searching from the top, which costs a
        // fraction of a random-order insert. The sort is stable, so the last
        // write to a key still wins.
        let mut ops = batch.ops;
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in ops {
            match v {
                Some(v) => wb.put_cf(&cf, k, v),
                None => wb.delete_cf(&cf, k),
            }
        }
        for (input, offsets) in offsets.iter().enumerate() {
            let json =
                serde_json::to_vec(offsets).map_err(|e| SluiceError::Internal(e.to_string()))?;
            wb.put_cf(&cf, prefixed(META_OPERATOR, &offsets_key(input)), json);
        }
        wb.put_cf(&cf, prefixed(META_OPERATOR, EPOCH_KEY), epoch.to_be_bytes());
        wb.put_cf(
            &cf,
            prefixed(META_OPERATOR, FORMAT_KEY),
            STATE_FORMAT.to_be_bytes(),
        );
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .write_opt(wb, &wo)
            .map_err(|e| err("committing checkpoint", e))
    }
}

/// Changes collected from the operators for one checkpoint.
#[derive(Default)]
pub struct StateWriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl StateWriteBatch {
    pub fn put(&mut self, operator: u16, key: &[u8], value: Vec<u8>) {
        self.ops.push((prefixed(operator, key), Some(value)));
    }

    pub fn delete(&mut self, operator: u16, key: &[u8]) {
        self.ops.push((prefixed(operator, key), None));
    }

    /// A change under a key that is already complete (a state table's).
    /// What sink `sink` prepared for this checkpoint.
    pub fn put_sink_state(&mut self, sink: &str, value: Vec<u8>) {
        self.ops.push((sink_key(sink), Some(value)));
    }

    pub fn write_raw(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.ops.push((key.to_vec(), value.map(<[u8]>::to_vec)));
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Bytes of keys and values to write.
    pub fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Reads back, field by field, a value an operator wrote into its state
/// (big-endian numbers, byte strings after their u32 length).
pub struct StateReader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> StateReader<'a> {
    /// `what` names the state in the error a truncated value gives.
    pub fn new(value: &'a [u8], what: &'static str) -> StateReader<'a> {
        StateReader { rest: value, what }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(SluiceError::State(format!("corrupt {} state", self.what)));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A byte string written after its u32 length.
    pub fn prefixed(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_of_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let q = store.query("q").unwrap();
        q.commit(StateWriteBatch::default(), 1, &[]).unwrap();
        assert_eq!(q.readable_format().unwrap(), STATE_FORMAT);
        let cf = q.db.cf_handle(&q.cf).unwrap();
        q.db.put_cf(
            &cf,
            prefixed(META_OPERATOR, FORMAT_KEY),
            (STATE_FORMAT + 1).to_be_bytes(),
        )
        .unwrap();
        let e = q.readable_format().unwrap_err().to_string();
        assert!(e.contains("newer Sluice"), "{e}");
    }

    #[test]
    fn commit_is_atomic_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            let q = store.query("q1").unwrap();
            assert_eq!(q.offsets(0).unwrap(), None);
            assert_eq!(q.format().unwrap(), 1, "no checkpoint: the oldest format");
            let mut b = StateWriteBatch::default();
            b.put(1, b"a", b"1".to_vec());
            b.put(1, b"b", b"2".to_vec());
            b.put(2, b"a", b"x".to_vec());
            q.commit(b, 1, &[vec![(0, 10), (1, 20)]]).unwrap();
            let mut b = StateWriteBatch::default();
            b.delete(1, b"a");
            q.commit(b, 2, &[vec![(0, 11), (1, 20)], vec![(0, 3)]])
                .unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let q = store.query("q1").unwrap();
        assert_eq!(q.offsets(0).unwrap(), Some(vec![(0, 11), (1, 20)]));
        assert_eq!(q.offsets(1).unwrap(), Some(vec![(0, 3)]));
        assert_eq!(q.offsets(2).unwrap(), None);
        assert_eq!(q.epoch().unwrap(), 2);
        assert_eq!(
            q.format().unwrap(),
            STATE_FORMAT,
            "checkpoints record their format"
        );
        assert_eq!(q.scan(1).unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
        assert_eq!(q.scan(2).unwrap(), vec![(b"a".to_vec(), b"x".to_vec())]);
        store.drop_query("q1").unwrap();
        let q = store.query("q1").unwrap();
        assert!(q.scan(1).unwrap().is_empty());
    }
}
