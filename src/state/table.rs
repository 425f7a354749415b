//! State tables: the one way operators keep keyed state.
//!
//! A [`StateTable`] is a map from key bytes to value bytes owned by one
//! operator. Writes go to an epoch buffer that [`StateTable::flush`] moves into
//! the checkpoint's write batch at a barrier, so a checkpoint writes only what
//! changed, and a key written and deleted within one epoch never reaches
//! RocksDB. Reads look in the buffer, then a cache of committed values, then
//! RocksDB; nothing is loaded at start-up. Without checkpoints (push queries,
//! benchmarks) the table lives in memory only.
//!
//! Stored keys are `[table id: u32 BE][vnode: u16 BE][key]` (see
//! docs/architecture.md, "Runtime core v2"): the vnode, a hash of the key's
//! distribution part, lets a later version split one table across workers by
//! vnode ranges. A table whose keys end in a time and sequence number (a join
//! buffer's rows) leaves that suffix out of the hash, so all rows of one join
//! key share a vnode.
//!
//! An operator that keeps its live entries in its own in-memory structures (an
//! interval join's time-ordered buffers) uses a *write-only* table: the table
//! persists the changes, keeps no cache, and is read back once by
//! [`StateTable::scan`] at restore.

use datafusion::common::{HashMap, HashSet};

use super::budget::MemoryUse;
use super::key::Key;
use super::{QueryState, StateWriteBatch};
use crate::error::Result;

/// Virtual nodes a table's keys are spread over.
pub const VNODES: u16 = 256;

/// State table ids start here, above every legacy operator prefix (a `u16`
/// node id) and below the metadata prefix, so old and new state can share a
/// query's column family while operators move over.
const FIRST_TABLE_ID: u32 = 0x4000_0000;

/// Identifies a state table within a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateTableId(u32);

impl StateTableId {
    /// Table `index` of the operator at dataflow node `node`. (Until plans are
    /// persisted with their table ids, the id derives from the node.)
    pub fn of_node(node: u16, index: u8) -> StateTableId {
        StateTableId(FIRST_TABLE_ID | (u32::from(node) << 8) | u32::from(index))
    }
}

impl StateTableId {
    /// Every stored key of the table starts with these bytes.
    pub fn prefix(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// The stored form of `key` (no suffix left out of the vnode), for
    /// readers that read the table's committed entries from the store
    /// directly.
    pub fn stored_key(self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        StateTable::stored_key(self, Distribution::Whole, key, &mut out);
        out
    }
}

impl StateTableId {
    /// The stored-key ranges `[start, end)` that hold the keys between
    /// `lower` and `upper`: one per vnode, since the vnode comes before the
    /// key.
    pub fn key_ranges(
        self,
        lower: std::ops::Bound<&[u8]>,
        upper: std::ops::Bound<&[u8]>,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        use std::ops::Bound;
        let prefix = self.prefix();
        (0..VNODES)
            .map(|v| {
                let head = |vnode: u32| {
                    let mut k = prefix.to_vec();
                    // The vnode after the last is 256: still two bytes.
                    k.extend_from_slice(&(vnode as u16).to_be_bytes());
                    k
                };
                // The smallest key greater than `k` is `k` followed by 0.
                let at = |k: &[u8], past: bool| {
                    let mut out = head(u32::from(v));
                    out.extend_from_slice(k);
                    if past {
                        out.push(0);
                    }
                    out
                };
                let start = match lower {
                    Bound::Unbounded => head(u32::from(v)),
                    Bound::Included(k) => at(k, false),
                    Bound::Excluded(k) => at(k, true),
                };
                let end = match upper {
                    Bound::Unbounded => head(u32::from(v) + 1),
                    Bound::Included(k) => at(k, true),
                    Bound::Excluded(k) => at(k, false),
                };
                (start, end)
            })
            .collect()
    }
}

/// Bytes of a stored key before the operator's key: table id and vnode.
pub const KEY_HEADER: usize = 6;

/// The vnode of a key: xxh3 of its bytes, modulo [`VNODES`]. Stored in every
/// key, so it must never change.
pub fn vnode(key: &[u8]) -> u16 {
    (twox_hash::XxHash3_64::oneshot(key) % u64::from(VNODES)) as u16
}

type Bytes = Box<[u8]>;

/// A change of the current epoch.
struct Pending {
    /// The new value, or `None` for a delete.
    value: Option<Bytes>,
    /// The key has no committed value: deleting it again needs no write.
    new: bool,
}

/// One operator's keyed state.
pub struct StateTable {
    id: StateTableId,
    /// Where committed state lives; `None` until attached (and for ever
    /// without checkpoints, when the cache holds everything).
    store: Option<QueryState>,
    /// Changes since the last flush.
    buffer: HashMap<Key, Pending>,
    /// Committed values, all of them without a store.
    cache: HashMap<Key, Bytes>,
    /// Keys known to have no committed value, forgotten at every flush so that
    /// probes of many absent keys cannot grow memory without bound.
    absent: HashSet<Key>,
    /// Reused to build stored keys.
    scratch: Vec<u8>,
    /// Bytes of keys and values held in `buffer`, `cache` and `absent`.
    usage: MemoryUse,
    /// False for a write-only table: nothing is cached, and without a store
    /// nothing is kept at all.
    cached: bool,
    /// Which part of a key the vnode hashes.
    distribution: Distribution,
}

/// The part of a table's keys that picks their vnode: the distribution key
/// (group key, join key), so that every entry of one distribution key shares a
/// vnode and a later version can split a table by vnode ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// The whole key.
    Whole,
    /// All but a fixed-size suffix (a time and a sequence number, say).
    DropSuffix(usize),
    /// Keys start with a `u32` BE length and that many bytes of distribution
    /// key, then the rest (`u32::MAX`: no distribution key, as for a NULL
    /// join key, and nothing follows the length before the rest).
    LengthPrefixed,
}

impl Distribution {
    fn of(self, key: &[u8]) -> &[u8] {
        match self {
            Distribution::Whole => key,
            Distribution::DropSuffix(n) => &key[..key.len().saturating_sub(n)],
            // A malformed key hashes whole.
            Distribution::LengthPrefixed => match split_length_prefixed(key) {
                Some((_, rest)) => &key[..key.len() - rest.len()],
                None => key,
            },
        }
    }
}

/// A key of a [`Distribution::LengthPrefixed`] table: `distribution` after
/// its `u32` BE length (`u32::MAX` for `None`), then `rest`.
pub fn length_prefixed_key(distribution: Option<&[u8]>, rest: &[u8], out: &mut Vec<u8>) {
    out.clear();
    match distribution {
        Some(d) => {
            out.extend_from_slice(&(d.len() as u32).to_be_bytes());
            out.extend_from_slice(d);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
    out.extend_from_slice(rest);
}

/// The distribution key and the rest of a key written by
/// [`length_prefixed_key`]; `None` when it is malformed.
pub fn split_length_prefixed(key: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
    if len == u32::MAX {
        return Some((None, &key[4..]));
    }
    let end = 4usize.checked_add(len as usize)?;
    Some((Some(key.get(4..end)?), key.get(end..)?))
}

fn entry_size(key: &[u8], value: &Option<Bytes>) -> usize {
    key.len() + value.as_ref().map_or(0, |v| v.len())
}

impl StateTable {
    pub fn new(id: StateTableId) -> StateTable {
        StateTable {
            id,
            store: None,
            buffer: HashMap::default(),
            cache: HashMap::default(),
            absent: HashSet::default(),
            scratch: Vec::new(),
            usage: MemoryUse::default(),
            cached: true,
            distribution: Distribution::Whole,
        }
    }

    /// A table whose operator keeps the live entries in memory itself: writes
    /// are persisted at flush and then dropped, and reads go to the operator
    /// (only [`StateTable::scan`] reads the table, at restore).
    pub fn write_only(id: StateTableId) -> StateTable {
        StateTable {
            cached: false,
            ..StateTable::new(id)
        }
    }

    /// The last `suffix` bytes of every key (a time and a sequence number,
    /// say) are not part of its distribution key: keys that differ only there
    /// share a vnode.
    pub fn with_suffix(mut self, suffix: usize) -> StateTable {
        self.distribution = Distribution::DropSuffix(suffix);
        self
    }

    /// Keys are length-prefixed distribution keys followed by the rest (see
    /// [`Distribution::LengthPrefixed`]).
    pub fn length_prefixed(mut self) -> StateTable {
        self.distribution = Distribution::LengthPrefixed;
        self
    }

    /// Reads and writes committed state in `store` from now on (before any
    /// input), counting its memory against the store's budget.
    pub fn attach(&mut self, store: &QueryState) {
        self.store = Some(store.clone());
        self.usage.join(store.budget().clone());
    }

    /// Over the memory budget: forgets what can be read again — keys known to
    /// be absent, then cached committed values — until the budget is back
    /// under its margin. Buffered changes stay (they are not in the store
    /// yet). Called only where no loaded key is still to be read, and only
    /// after the last flush was committed (the pipeline commits a barrier's
    /// batch before it processes the next chunk).
    fn evict_if_over(&mut self) {
        let Some(budget) = self.usage.budget() else {
            return;
        };
        let mut excess = budget.excess();
        if excess == 0 {
            return;
        }
        for key in self.absent.drain() {
            self.usage.sub(key.len());
            excess = excess.saturating_sub(key.len());
        }
        let usage = &mut self.usage;
        let mut evicted = 0u64;
        self.cache.retain(|k, v| {
            if excess == 0 {
                return true;
            }
            let n = k.len() + v.len();
            usage.sub(n);
            excess = excess.saturating_sub(n);
            evicted += 1;
            false
        });
        budget.count_evicted(evicted);
    }

    /// The stored form of `key`.
    fn stored_key(id: StateTableId, distribution: Distribution, key: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(6 + key.len());
        out.extend_from_slice(&id.0.to_be_bytes());
        out.extend_from_slice(&vnode(distribution.of(key)).to_be_bytes());
        out.extend_from_slice(key);
    }

    /// Every committed entry of the table, keys as written (without the table
    /// id and vnode), in stored order. For restoring an operator's own memory
    /// from a write-only table; call it before any write.
    pub fn scan(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let mut entries = store.scan_prefix(&self.id.0.to_be_bytes())?;
        for (k, _) in &mut entries {
            k.drain(..KEY_HEADER);
        }
        Ok(entries)
    }

    /// Writes reach a store (the query checkpoints).
    pub fn persists(&self) -> bool {
        self.store.is_some()
    }

    /// Entries held in memory (buffered changes and cached values).
    pub fn entries_in_memory(&self) -> usize {
        self.buffer.len() + self.cache.len() + self.absent.len()
    }

    /// Bytes of keys and values held in memory.
    pub fn bytes_in_memory(&self) -> usize {
        self.usage.bytes()
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.write(key, Some(value.into()), false);
    }

    /// Like `put`, for a key the caller knows has no committed value (a
    /// unique row id, say): if it is deleted before the next checkpoint,
    /// neither write reaches the store.
    pub fn insert_new(&mut self, key: &[u8], value: &[u8]) {
        self.write(key, Some(value.into()), true);
    }

    /// For a write-only table whose operator writes its changes at the
    /// barrier itself, just before [`StateTable::flush`]: writes `key →
    /// value` straight into the checkpoint's batch, without the epoch
    /// buffer (nothing can follow it in this epoch). A buffered change of the
    /// key is dropped, this write being the later one.
    pub fn put_at_barrier(&mut self, batch: &mut StateWriteBatch, key: &[u8], value: &[u8]) {
        debug_assert!(!self.cached, "only write-only tables skip the buffer");
        if self.store.is_none() {
            return;
        }
        Self::stored_key(self.id, self.distribution, key, &mut self.scratch);
        if let Some(old) = self.buffer.remove(self.scratch.as_slice()) {
            self.usage.sub(entry_size(&self.scratch, &old.value));
        }
        batch.write_raw(&self.scratch, Some(value));
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.write(key, None, false);
    }

    fn write(&mut self, key: &[u8], value: Option<Bytes>, known_new: bool) {
        if self.store.is_none() && !self.cached {
            // The operator holds it, and nothing is persisted.
            return;
        }
        Self::stored_key(self.id, self.distribution, key, &mut self.scratch);
        let k = self.scratch.as_slice();
        if self.store.is_none() {
            let old = match value {
                Some(v) => {
                    self.usage.add(k.len() + v.len());
                    self.cache.insert(Key::new(k), v)
                }
                None => self.cache.remove(k),
            };
            if let Some(old) = old {
                self.usage.sub(k.len() + old.len());
            }
            return;
        }
        let mut new = known_new;
        if self.absent.remove(k) {
            new = true;
            self.usage.sub(k.len());
        }
        if let Some(old) = self.cache.remove(k) {
            self.usage.sub(k.len() + old.len());
        }
        if let Some(old) = self.buffer.remove(k) {
            new = old.new;
            self.usage.sub(entry_size(k, &old.value));
        }
        if new && value.is_none() {
            // Never committed: forget it, remembering that it is absent.
            if self.cached {
                self.absent.insert(Key::new(k));
                self.usage.add(k.len());
            }
            return;
        }
        self.usage.add(entry_size(k, &value));
        self.buffer.insert(Key::new(k), Pending { value, new });
    }

    fn in_memory(&self, k: &[u8]) -> bool {
        self.buffer.contains_key(k) || self.cache.contains_key(k) || self.absent.contains(k)
    }

    /// Makes every key of `keys` readable with [`StateTable::get_loaded`]:
    /// those neither buffered nor cached are read from the store in one batch.
    pub fn load<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) -> Result<()> {
        debug_assert!(self.cached, "a write-only table is read only by scan");
        if self.store.is_none() {
            return Ok(());
        }
        self.evict_if_over();
        let mut missing: Vec<Vec<u8>> = Vec::new();
        for key in keys {
            Self::stored_key(self.id, self.distribution, key, &mut self.scratch);
            if !self.in_memory(&self.scratch) {
                missing.push(self.scratch.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        let Some(store) = &self.store else {
            return Ok(());
        };
        let values = store.get_many(&missing)?;
        for (key, value) in missing.into_iter().zip(values) {
            match value {
                Some(v) => {
                    self.usage.add(key.len() + v.len());
                    self.cache.insert(Key::new(&key), v.into());
                }
                None => {
                    self.usage.add(key.len());
                    self.absent.insert(Key::new(&key));
                }
            }
        }
        Ok(())
    }

    /// The value of a key [`StateTable::load`]ed (or written) before; `None`
    /// when it has none. A key not loaded reads as absent: a bug in the caller,
    /// caught in debug builds.
    pub fn get_loaded(&self, key: &[u8], scratch: &mut Vec<u8>) -> Option<&[u8]> {
        Self::stored_key(self.id, self.distribution, key, scratch);
        let k = scratch.as_slice();
        match self.buffer.get(k) {
            Some(p) => p.value.as_deref(),
            None => {
                debug_assert!(
                    self.store.is_none() || self.in_memory(k),
                    "state key read before it was loaded"
                );
                self.cache.get(k).map(|v| &v[..])
            }
        }
    }

    /// The value of `key`, read from the store when not in memory.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.load([key])?;
        let mut scratch = std::mem::take(&mut self.scratch);
        Self::stored_key(self.id, self.distribution, key, &mut scratch);
        self.scratch = scratch;
        let k = self.scratch.as_slice();
        Ok(match self.buffer.get(k) {
            Some(p) => p.value.as_deref(),
            None => self.cache.get(k).map(|v| &v[..]),
        })
    }

    /// The values of `keys` without remembering them, for an operator that
    /// keeps what it reads in its own form (an aggregate's accumulators):
    /// this epoch's changes, else cached values, else one batched read of the
    /// store.
    pub fn read_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(keys.len());
        // Positions in `out` still to read, and their stored keys.
        let mut at = Vec::new();
        let mut missing = Vec::new();
        let mut scratch = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            Self::stored_key(self.id, self.distribution, key, &mut scratch);
            let k = scratch.as_slice();
            out.push(match (self.buffer.get(k), self.cache.get(k)) {
                (Some(p), _) => p.value.as_deref().map(<[u8]>::to_vec),
                (None, Some(v)) => Some(v.to_vec()),
                (None, None) => {
                    if self.store.is_some() && !self.absent.contains(k) {
                        at.push(i);
                        missing.push(scratch.clone());
                    }
                    None
                }
            });
        }
        if let (Some(store), false) = (&self.store, missing.is_empty()) {
            for (i, value) in at.into_iter().zip(store.get_many(&missing)?) {
                out[i] = value;
            }
        }
        Ok(out)
    }

    /// The values of those `keys` that `held` says are not in memory, each
    /// once, in key order, keys without a value left out: for an operator
    /// that holds what it reads in its own form and reads back what it
    /// evicted.
    pub fn read_missing<'k>(
        &self,
        keys: impl Iterator<Item = &'k [u8]>,
        held: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<(&'k [u8], Vec<u8>)>> {
        let mut missing: Vec<&[u8]> = keys.filter(|k| !held(k)).collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        missing.sort_unstable();
        missing.dedup();
        let values = self.read_many(&missing)?;
        Ok(missing
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| Some((k, v?)))
            .collect())
    }

    /// The store holds committed entries of this table.
    pub fn has_committed(&self) -> Result<bool> {
        match &self.store {
            Some(store) => store.has_prefix(&self.id.0.to_be_bytes()),
            None => Ok(false),
        }
    }

    /// Moves the changes of this epoch into `batch`; they stay readable from
    /// memory (values in the cache, deletes as absent keys until the next flush). Without a store there is nothing to write.
    pub fn flush(&mut self, batch: &mut StateWriteBatch) {
        if self.store.is_none() {
            return;
        }
        for key in self.absent.drain() {
            self.usage.sub(key.len());
        }
        for (key, pending) in self.buffer.drain() {
            batch.write_raw(&key, pending.value.as_deref());
            if !self.cached {
                self.usage.sub(entry_size(&key, &pending.value));
                continue;
            }
            match pending.value {
                Some(v) => {
                    self.cache.insert(key, v);
                }
                // Known absent until the next flush, also before this
                // batch is committed.
                None => {
                    self.absent.insert(key);
                }
            }
        }
        if self.cached {
            self.evict_if_over();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    fn committed(store: &QueryState, table: &mut StateTable, epoch: u64) {
        let mut batch = StateWriteBatch::default();
        table.flush(&mut batch);
        store.commit(batch, epoch, &[]).unwrap();
    }

    #[test]
    fn writes_reach_the_store_at_flush_and_read_back_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let q = store.query("q").unwrap();
        let id = StateTableId::of_node(3, 1);
        let mut t = StateTable::new(id);
        t.attach(&q);
        t.put(b"a", b"1");
        t.put(b"b", b"2");
        t.delete(b"b");
        t.put(b"c", b"3");
        assert_eq!(t.get(b"a").unwrap(), Some(&b"1"[..]));
        committed(&q, &mut t, 1);
        t.delete(b"a");
        committed(&q, &mut t, 2);

        // A new table reads committed state from the store on demand.
        let mut fresh = StateTable::new(id);
        fresh.attach(&q);
        assert_eq!(fresh.entries_in_memory(), 0);
        assert_eq!(fresh.get(b"a").unwrap(), None);
        assert_eq!(fresh.get(b"b").unwrap(), None);
        assert_eq!(fresh.get(b"c").unwrap(), Some(&b"3"[..]));
        fresh.load([&b"c"[..], &b"zz"[..]]).unwrap();
        let mut scratch = Vec::new();
        assert_eq!(fresh.get_loaded(b"c", &mut scratch), Some(&b"3"[..]));
        assert_eq!(fresh.get_loaded(b"zz", &mut scratch), None);

        // Another table id does not see these keys.
        let mut other = StateTable::new(StateTableId::of_node(3, 2));
        other.attach(&q);
        assert_eq!(other.get(b"c").unwrap(), None);
    }

    #[test]
    fn a_new_key_deleted_within_its_epoch_never_reaches_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let q = store.query("q").unwrap();
        let mut t = StateTable::new(StateTableId::of_node(0, 0));
        t.attach(&q);
        t.insert_new(b"bid-1", b"v");
        t.put(b"bid-1", b"w");
        t.delete(b"bid-1");
        // A key read as absent counts as new too.
        assert_eq!(t.get(b"k").unwrap(), None);
        t.put(b"k", b"v");
        t.delete(b"k");
        // A key whose committed value is unknown needs its delete written.
        t.put(b"unknown", b"v");
        t.delete(b"unknown");
        let mut batch = StateWriteBatch::default();
        t.flush(&mut batch);
        assert_eq!(batch.len(), 1);
        assert_eq!(t.get(b"bid-1").unwrap(), None);
        assert_eq!(t.get(b"k").unwrap(), None);
    }

    #[test]
    fn without_a_store_everything_stays_in_memory() {
        let mut t = StateTable::new(StateTableId::of_node(0, 0));
        t.put(b"k", b"v");
        let mut batch = StateWriteBatch::default();
        t.flush(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(t.get(b"k").unwrap(), Some(&b"v"[..]));
        t.delete(b"k");
        assert_eq!(t.get(b"k").unwrap(), None);
    }

    #[test]
    fn a_write_only_table_persists_changes_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let q = store.query("q").unwrap();
        let id = StateTableId::of_node(1, 0);
        let mut t = StateTable::write_only(id).with_suffix(2);
        t.attach(&q);
        t.insert_new(b"k1\x00\x01", b"a");
        t.insert_new(b"k1\x00\x02", b"b");
        t.insert_new(b"k2\x00\x03", b"gone");
        t.delete(b"k2\x00\x03");
        let mut batch = StateWriteBatch::default();
        t.flush(&mut batch);
        assert_eq!(
            batch.len(),
            2,
            "the row inserted and deleted in one epoch is not written"
        );
        q.commit(batch, 1, &[]).unwrap();
        assert_eq!(t.entries_in_memory(), 0);
        assert_eq!(t.bytes_in_memory(), 0);
        // A committed row's delete and an update are written.
        t.delete(b"k1\x00\x01");
        t.put(b"k1\x00\x02", b"B");
        committed(&q, &mut t, 2);

        let mut fresh = StateTable::write_only(id).with_suffix(2);
        fresh.attach(&q);
        assert_eq!(
            fresh.scan().unwrap(),
            vec![(b"k1\x00\x02".to_vec(), b"B".to_vec())]
        );
        // The suffix is left out of the vnode: the rows of one key share one.
        let mut a = Vec::new();
        let mut b = Vec::new();
        StateTable::stored_key(id, Distribution::DropSuffix(2), b"k1\x00\x01", &mut a);
        StateTable::stored_key(id, Distribution::DropSuffix(2), b"k1\xff\xff", &mut b);
        assert_eq!(a[4..6], b[4..6]);
        assert_eq!(a[4..6], vnode(b"k1").to_be_bytes());

        // Without a store a write-only table holds nothing.
        let mut memory = StateTable::write_only(id);
        memory.insert_new(b"k", b"v");
        assert_eq!(memory.entries_in_memory(), 0);
    }

    #[test]
    fn length_prefixed_keys_hash_their_distribution_key_only() {
        let d = Distribution::LengthPrefixed;
        let key = |jk: Option<&[u8]>, rest: &[u8]| {
            let mut k = match jk {
                Some(j) => {
                    let mut k = (j.len() as u32).to_be_bytes().to_vec();
                    k.extend_from_slice(j);
                    k
                }
                None => u32::MAX.to_be_bytes().to_vec(),
            };
            k.extend_from_slice(rest);
            k
        };
        assert_eq!(
            d.of(&key(Some(b"join"), b"pk1")),
            &key(Some(b"join"), b"")[..]
        );
        assert_eq!(d.of(&key(None, b"pk1")), &u32::MAX.to_be_bytes()[..]);
        // Malformed keys hash what there is, without panicking.
        assert_eq!(d.of(b"\x00\x00\x00\x09ab"), b"\x00\x00\x00\x09ab");
        assert_eq!(d.of(b"ab"), b"ab");
        let mut written = Vec::new();
        length_prefixed_key(Some(b"join"), b"pk1", &mut written);
        assert_eq!(written, key(Some(b"join"), b"pk1"));
        assert_eq!(
            split_length_prefixed(&written),
            Some((Some(&b"join"[..]), &b"pk1"[..]))
        );
        length_prefixed_key(None, b"pk1", &mut written);
        assert_eq!(split_length_prefixed(&written), Some((None, &b"pk1"[..])));
        assert_eq!(split_length_prefixed(b"\x00\x00\x00\x09ab"), None);
    }

    #[test]
    fn merged_ranges_come_in_key_order_from_one_snapshot_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let q = store.query("q").unwrap();
        let id = StateTableId::of_node(1, 0);
        let mut t = StateTable::new(id);
        t.attach(&q);
        let keys: Vec<Vec<u8>> = (0u32..500)
            .map(|i| (i * 7).to_be_bytes().to_vec())
            .collect();
        for k in &keys {
            t.put(k, k);
        }
        committed(&q, &mut t, 1);
        let read = |lower: std::ops::Bound<&[u8]>,
                    upper: std::ops::Bound<&[u8]>,
                    limit: Option<usize>,
                    stop_after: usize| {
            let mut pieces = Vec::new();
            q.merge_ranges(&id.key_ranges(lower, upper), KEY_HEADER, limit, 64, |p| {
                pieces.push(p);
                Ok(pieces.len() < stop_after)
            })
            .unwrap();
            pieces
        };
        use std::ops::Bound::*;
        let pieces = read(Unbounded, Unbounded, None, usize::MAX);
        assert!(pieces.iter().all(|p| p.len() <= 64));
        let got: Vec<Vec<u8>> = pieces.concat().into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, keys, "every key, in key order across vnodes");
        // A commit during a scan is not seen by it (one snapshot), and is by
        // the next.
        let mut seen = Vec::new();
        let mut deleted = false;
        q.merge_ranges(
            &id.key_ranges(Unbounded, Unbounded),
            KEY_HEADER,
            None,
            64,
            |p| {
                seen.extend(p.into_iter().map(|(_, v)| v));
                if !deleted {
                    t.delete(&keys[499]);
                    committed(&q, &mut t, 2);
                    deleted = true;
                }
                Ok(true)
            },
        )
        .unwrap();
        assert_eq!(seen, keys);
        let after: Vec<Vec<u8>> = read(Unbounded, Unbounded, None, usize::MAX)
            .concat()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(after, keys[..499].to_vec());
        let (lo, hi) = (70u32.to_be_bytes(), 700u32.to_be_bytes());
        let range: Vec<Vec<u8>> = read(Included(&lo), Excluded(&hi), Some(30), usize::MAX)
            .concat()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(range, keys[10..40].to_vec(), "a range, limited");
        assert_eq!(
            read(Unbounded, Unbounded, None, 2).len(),
            2,
            "stops when told"
        );
    }

    #[test]
    fn vnodes_are_stable_and_spread() {
        // Stored in every key: a change of hash would misplace all state.
        assert_eq!(vnode(b""), vnode(b""));
        let used: std::collections::HashSet<u16> =
            (0u32..4096).map(|i| vnode(&i.to_be_bytes())).collect();
        assert!(used.len() > 250, "{} vnodes used", used.len());
        assert!(used.iter().all(|v| *v < VNODES));
    }
}
