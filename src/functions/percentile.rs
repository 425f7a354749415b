//! A vectorised `APPROX_PERCENTILE` (`approx_percentile_cont`) for windowed
//! aggregates. DataFusion's accumulator merges its t-digest on every
//! `update_batch` call; behind the generic groups adapter that is a merge per
//! group per chunk, i.e. nearly per event when groups are many. Here each group
//! buffers raw values and merges them into its digest a thousand at a time (and
//! before it is read), so the digest math is amortised. The state is DataFusion's
//! own t-digest state, so partial results merge with its accumulators.
//!
//! [`PercentileLog`] is the same aggregate for the panes of hopping windows, whose
//! partials are merged into every window over them.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{HashMap, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion_functions_aggregate_common::tdigest::{TDigest, DEFAULT_MAX_SIZE};

/// Values buffered per group before they are merged into its digest.
const FLUSH_AT: usize = 1024;

pub struct BufferedPercentile {
    percentile: f64,
    return_type: DataType,
    digests: Vec<TDigest>,
    buffers: Vec<Vec<f64>>,
}

impl BufferedPercentile {
    pub fn new(percentile: f64, return_type: DataType) -> Self {
        BufferedPercentile {
            percentile,
            return_type,
            digests: Vec::new(),
            buffers: Vec::new(),
        }
    }

    fn grow(&mut self, total: usize) {
        if self.digests.len() < total {
            self.digests
                .resize_with(total, || TDigest::new(DEFAULT_MAX_SIZE));
            self.buffers.resize_with(total, Vec::new);
        }
    }

    fn flush(&mut self, g: usize) {
        if !self.buffers[g].is_empty() {
            let values = std::mem::take(&mut self.buffers[g]);
            self.digests[g] = self.digests[g].merge_unsorted_f64(values);
        }
    }

    /// Removes the groups `emit_to` names, flushed.
    fn take(&mut self, emit_to: EmitTo) -> Vec<TDigest> {
        let n = match emit_to {
            EmitTo::All => self.digests.len(),
            EmitTo::First(n) => n,
        };
        for g in 0..n {
            self.flush(g);
        }
        self.buffers.drain(..n);
        self.digests.drain(..n).collect()
    }
}

impl GroupsAccumulator for BufferedPercentile {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let values = arrow::compute::cast(&values[0], &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        for (row, &g) in group_indices.iter().enumerate() {
            if values.is_null(row) || opt_filter.is_some_and(|f| !f.value(row)) {
                continue;
            }
            let buffer = &mut self.buffers[g];
            if buffer.capacity() == 0 {
                // Most groups see tens of values per window: skip the small regrowths.
                buffer.reserve(32);
            }
            buffer.push(values.value(row));
            if self.buffers[g].len() >= FLUSH_AT {
                self.flush(g);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let digests = self.take(emit_to);
        estimates(&digests, self.percentile, &self.return_type)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        digest_states(&self.take(emit_to))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        for (other, &g) in digests_of_states(values)?.into_iter().zip(group_indices) {
            self.flush(g);
            self.digests[g] = TDigest::merge_digests([&self.digests[g], &other]);
        }
        Ok(())
    }

    /// One digest per input row (DataFusion uses this to skip partial aggregation).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        row_states(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.digests.iter().map(|d| d.size()).sum::<usize>()
            + self.buffers.iter().map(|b| b.capacity() * 8).sum::<usize>()
    }
}

/// The percentile of each digest (NULL for a group without values), as `return_type`.
fn estimates(digests: &[TDigest], percentile: f64, return_type: &DataType) -> Result<ArrayRef> {
    let values: Float64Array = digests
        .iter()
        .map(|d| (d.count() > 0.0).then(|| d.estimate_quantile(percentile)))
        .collect();
    let values: ArrayRef = Arc::new(values);
    Ok(if *return_type == DataType::Float64 {
        values
    } else {
        arrow::compute::cast(&values, return_type)?
    })
}

/// DataFusion's intermediate state of `approx_percentile_cont` for each digest.
fn digest_states(digests: &[TDigest]) -> Result<Vec<ArrayRef>> {
    if digests.is_empty() {
        // Typed empty columns (there is no ScalarValue to infer them from).
        return Ok(digest_states(&[TDigest::new(DEFAULT_MAX_SIZE)])?
            .into_iter()
            .map(|c| c.slice(0, 0))
            .collect());
    }
    let states: Vec<Vec<ScalarValue>> = digests.iter().map(|d| d.to_scalar_state()).collect();
    (0..states[0].len())
        .map(|c| ScalarValue::iter_to_array(states.iter().map(|s| s[c].clone())))
        .collect()
}

/// The digests of DataFusion intermediate state rows.
fn digests_of_states(values: &[ArrayRef]) -> Result<Vec<TDigest>> {
    let rows = values.first().map_or(0, |a| a.len());
    (0..rows)
        .map(|row| {
            let state = values
                .iter()
                .map(|a| ScalarValue::try_from_array(a, row))
                .collect::<Result<Vec<_>>>()?;
            Ok(TDigest::from_scalar_state(&state))
        })
        .collect()
}

/// One digest state per input row.
fn row_states(values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
    let values = arrow::compute::cast(&values[0], &DataType::Float64)?;
    let values = values.as_primitive::<Float64Type>();
    let digests: Vec<TDigest> = (0..values.len())
        .map(|row| {
            let keep = values.is_valid(row) && opt_filter.is_none_or(|f| f.value(row));
            let digest = TDigest::new(DEFAULT_MAX_SIZE);
            if keep {
                digest.merge_sorted_f64(&[values.value(row)])
            } else {
                digest
            }
        })
        .collect();
    digest_states(&digests)
}

/// The log holds at least this many values before it may be compacted ...
const COMPACT_MIN: usize = 1 << 16;
/// ... and on average this many per group (as `FLUSH_AT` bounds a buffer).
const COMPACT_PER_GROUP: usize = FLUSH_AT;

/// `f64::total_cmp`'s order as an integer (an involution: it also maps back), so
/// values sort with integer comparisons.
fn order_key(v: f64) -> i64 {
    let bits = v.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

fn from_order_key(k: i64) -> f64 {
    f64::from_bits(order_key(f64::from_bits(k as u64)).cast_unsigned())
}

/// `digest` (or an empty one) with `keys` merged in; sorts `keys`.
fn digest_with(keys: &mut [i64], digest: Option<TDigest>, scratch: &mut Vec<f64>) -> TDigest {
    let digest = digest.unwrap_or_else(|| TDigest::new(DEFAULT_MAX_SIZE));
    if keys.is_empty() {
        return digest;
    }
    keys.sort_unstable();
    scratch.clear();
    scratch.extend(keys.iter().map(|&k| from_order_key(k)));
    digest.merge_sorted_f64(scratch)
}

/// A frozen [`PercentileLog`]: each slot's values (as order keys) and digest.
pub struct PercentileRuns {
    /// Slot `s`'s values are `values[offsets[s]..offsets[s + 1]]`.
    offsets: Vec<u32>,
    values: Vec<i64>,
    digests: HashMap<u32, TDigest>,
}

impl PercentileRuns {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn values(&self, slot: usize) -> &[i64] {
        &self.values[self.offsets[slot] as usize..self.offsets[slot + 1] as usize]
    }

    /// Bytes held.
    pub fn memory_size(&self) -> usize {
        self.offsets.capacity() * 4
            + self.values.capacity() * 8
            + self.digests.values().map(|d| d.size()).sum::<usize>()
    }
}

/// `APPROX_PERCENTILE` for the panes of hopping windows (see
/// `operators::window_panes`). A pane sees a few values per key, and its values
/// are merged into every window over it, so per-group buffers would cost an
/// allocation per group per pane and regrowths per window. Instead (value, group)
/// pairs are logged flat in arrival order; freezing a pane sorts its log into
/// per-slot runs (a counting sort), a window merging panes only records which of
/// its groups each pane slot belongs to, and reading a window gathers each
/// group's values from its panes and digests them at once, exactly as
/// `BufferedPercentile` digests a buffer of them. A log much larger than a window
/// usually holds is compacted into per-group digests to bound memory.
pub struct PercentileLog {
    percentile: f64,
    return_type: DataType,
    groups: usize,
    /// Logged values as order keys, and their groups.
    values: Vec<i64>,
    group_of: Vec<u32>,
    /// Digests by group (compacted values, merged checkpoint state).
    digests: HashMap<u32, TDigest>,
    /// Merged pane partials and the group of each of their slots.
    parts: Vec<(Arc<PercentileRuns>, Vec<u32>)>,
    /// Where `drain` gathers values by group.
    scratch: Vec<i64>,
}

impl PercentileLog {
    pub fn new(percentile: f64, return_type: DataType) -> Self {
        PercentileLog {
            percentile,
            return_type,
            groups: 0,
            values: Vec::new(),
            group_of: Vec::new(),
            digests: HashMap::default(),
            parts: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Groups held.
    pub fn len(&self) -> usize {
        self.groups
    }

    pub fn is_empty(&self) -> bool {
        self.groups == 0
    }

    fn grow(&mut self, total: usize) {
        self.groups = self.groups.max(total);
    }

    fn compact_if_large(&mut self) {
        if self.values.len() >= COMPACT_MIN.max(COMPACT_PER_GROUP.saturating_mul(self.groups)) {
            let groups = self.groups;
            let mut scratch = Vec::new();
            let mut digests = HashMap::default();
            self.drain(|g, keys, digest| {
                let d = digest_with(keys, digest, &mut scratch);
                if d.count() > 0.0 {
                    digests.insert(g as u32, d);
                }
            });
            self.digests = digests;
            self.groups = groups;
        }
    }

    /// Calls `f(group, values, digest)` for every group in order, with the
    /// group's values (order keys, unsorted) and the merge of its digests if it
    /// has any, and empties the accumulator.
    fn drain(&mut self, mut f: impl FnMut(usize, &mut [i64], Option<TDigest>)) {
        let n = self.groups;
        // Every value (the log's and the merged runs') is scattered to its
        // group's range of one buffer. The sources are read in order; reading
        // them group by group instead hopped between the panes' runs.
        let mut at = vec![0usize; n + 1];
        for &g in &self.group_of {
            at[g as usize + 1] += 1;
        }
        for (runs, groups) in &self.parts {
            for (slot, &g) in groups.iter().enumerate() {
                at[g as usize + 1] += runs.values(slot).len();
            }
        }
        for g in 0..n {
            at[g + 1] += at[g];
        }
        // Kept between calls: a window's values are megabytes, which a fresh
        // allocation would page-fault in every time.
        let mut all = std::mem::take(&mut self.scratch);
        all.clear();
        all.resize(at[n], 0);
        let mut next = at.clone();
        for (&v, &g) in self.values.iter().zip(&self.group_of) {
            all[next[g as usize]] = v;
            next[g as usize] += 1;
        }
        let mut digests = std::mem::take(&mut self.digests);
        for (runs, groups) in &self.parts {
            for (slot, &g) in groups.iter().enumerate() {
                let values = runs.values(slot);
                let to = &mut next[g as usize];
                all[*to..*to + values.len()].copy_from_slice(values);
                *to += values.len();
            }
            for (&slot, d) in &runs.digests {
                let Some(&g) = groups.get(slot as usize) else {
                    continue;
                };
                let merged = match digests.get(&g) {
                    Some(mine) => TDigest::merge_digests([mine, d]),
                    None => d.clone(),
                };
                digests.insert(g, merged);
            }
        }
        for g in 0..n {
            f(g, &mut all[at[g]..at[g + 1]], digests.remove(&(g as u32)));
        }
        self.scratch = all;
        self.values.clear();
        self.group_of.clear();
        self.parts.clear();
        self.groups = 0;
    }

    /// Takes everything out as per-slot runs; the accumulator is left empty.
    pub fn freeze(&mut self) -> Arc<PercentileRuns> {
        let mut offsets = Vec::with_capacity(self.groups + 1);
        offsets.push(0u32);
        let mut values = Vec::with_capacity(self.values.len());
        let mut digests = HashMap::default();
        self.drain(|g, keys, digest| {
            values.extend_from_slice(keys);
            offsets.push(values.len() as u32);
            if let Some(d) = digest {
                digests.insert(g as u32, d);
            }
        });
        // A pane freezes rarely; its buffer is not worth keeping.
        self.scratch = Vec::new();
        Arc::new(PercentileRuns {
            offsets,
            values,
            digests,
        })
    }

    /// Adds slot `i` of `runs` into group `groups[i]` (nothing is copied until
    /// the groups are read).
    pub fn merge_runs(&mut self, runs: Arc<PercentileRuns>, groups: &[usize], total: usize) {
        self.grow(total);
        let groups = groups.iter().take(runs.len()).map(|&g| g as u32).collect();
        self.parts.push((runs, groups));
    }

    /// Removes the groups `emit_to` names, as digests.
    fn take(&mut self, emit_to: EmitTo) -> Vec<TDigest> {
        let mut scratch = Vec::new();
        let mut digests = Vec::with_capacity(self.groups);
        self.drain(|_, keys, digest| digests.push(digest_with(keys, digest, &mut scratch)));
        match emit_to {
            EmitTo::All => digests,
            EmitTo::First(n) => {
                let rest = digests.split_off(n.min(digests.len()));
                self.groups = rest.len();
                self.digests = rest
                    .into_iter()
                    .enumerate()
                    .filter(|(_, d)| d.count() > 0.0)
                    .map(|(g, d)| (g as u32, d))
                    .collect();
                digests
            }
        }
    }
}

impl GroupsAccumulator for PercentileLog {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let values = arrow::compute::cast(&values[0], &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        self.values.reserve(group_indices.len());
        self.group_of.reserve(group_indices.len());
        for (row, &g) in group_indices.iter().enumerate() {
            if values.is_null(row) || opt_filter.is_some_and(|f| !f.value(row)) {
                continue;
            }
            self.values.push(order_key(values.value(row)));
            self.group_of.push(g as u32);
        }
        self.compact_if_large();
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        if let EmitTo::First(_) = emit_to {
            let digests = self.take(emit_to);
            return estimates(&digests, self.percentile, &self.return_type);
        }
        // Straight to the estimate: no digest outlives its group.
        let percentile = self.percentile;
        let mut scratch = Vec::new();
        let mut out = Vec::with_capacity(self.groups);
        self.drain(|_, keys, digest| {
            let d = digest_with(keys, digest, &mut scratch);
            out.push((d.count() > 0.0).then(|| d.estimate_quantile(percentile)));
        });
        let values: ArrayRef = Arc::new(Float64Array::from(out));
        Ok(if self.return_type == DataType::Float64 {
            values
        } else {
            arrow::compute::cast(&values, &self.return_type)?
        })
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        digest_states(&self.take(emit_to))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        for (other, &g) in digests_of_states(values)?.into_iter().zip(group_indices) {
            if other.count() == 0.0 {
                continue;
            }
            let g = g as u32;
            let merged = match self.digests.get(&g) {
                Some(mine) => TDigest::merge_digests([mine, &other]),
                None => other,
            };
            self.digests.insert(g, merged);
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        row_states(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.values.capacity() * 12
            + self.digests.values().map(|d| d.size()).sum::<usize>()
            + self
                .parts
                .iter()
                .map(|(_, g)| g.capacity() * 4)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_single_digest_and_survives_state_round_trips() {
        let values: Vec<f64> = (0..5000).map(|i| ((i * 7919) % 5000) as f64).collect();
        let mut acc = BufferedPercentile::new(0.99, DataType::Float64);
        let groups: Vec<usize> = (0..values.len()).map(|i| i % 2).collect();
        acc.update_batch(
            &[Arc::new(Float64Array::from(values.clone()))],
            &groups,
            None,
            2,
        )
        .unwrap();
        // Move group state through state() + merge_batch like a checkpoint does.
        let state = acc.state(EmitTo::All).unwrap();
        let mut restored = BufferedPercentile::new(0.99, DataType::Float64);
        restored.merge_batch(&state, &[0, 1], 2).unwrap();
        let out = restored.evaluate(EmitTo::All).unwrap();
        let out = out.as_primitive::<Float64Type>();
        for g in 0..2 {
            let p99 = out.value(g);
            assert!((p99 - 4950.0).abs() < 25.0, "group {g}: {p99}");
        }
    }

    fn p99s(array: &ArrayRef) -> Vec<Option<f64>> {
        array.as_primitive::<Float64Type>().iter().collect()
    }

    #[test]
    fn a_log_merged_from_parts_digests_like_one_buffer() {
        let values: Vec<f64> = (0..3000)
            .map(|i| ((i * 7919) % 1000) as f64 / 4.0)
            .collect();
        let groups: Vec<usize> = (0..values.len()).map(|i| (i * 31) % 7).collect();
        let mut buffered = BufferedPercentile::new(0.99, DataType::Float64);
        buffered
            .update_batch(
                &[Arc::new(Float64Array::from(values.clone()))],
                &groups,
                None,
                8,
            )
            .unwrap();
        // Three "panes" whose groups are numbered differently, merged into one.
        let mut merged = PercentileLog::new(0.99, DataType::Float64);
        let mut again = PercentileLog::new(0.99, DataType::Float64);
        for part in 0..3 {
            let rows: Vec<usize> = (0..values.len()).filter(|i| i % 3 == part).collect();
            let local: Vec<usize> = rows.iter().map(|&i| 6 - groups[i]).collect();
            let mut pane = PercentileLog::new(0.99, DataType::Float64);
            let part_values =
                Float64Array::from(rows.iter().map(|&i| values[i]).collect::<Vec<_>>());
            pane.update_batch(&[Arc::new(part_values)], &local, None, 7)
                .unwrap();
            let to_merged: Vec<usize> = (0..7).map(|g| 6 - g).collect();
            let runs = pane.freeze();
            merged.merge_runs(runs.clone(), &to_merged, 8);
            again.merge_runs(runs, &to_merged, 8);
        }
        let expected = p99s(&buffered.evaluate(EmitTo::All).unwrap());
        assert_eq!(expected[7], None);
        assert_eq!(p99s(&merged.evaluate(EmitTo::All).unwrap()), expected);
        // First(n) keeps the rest readable.
        let first = again.evaluate(EmitTo::First(3)).unwrap();
        let rest = again.evaluate(EmitTo::All).unwrap();
        assert_eq!([p99s(&first), p99s(&rest)].concat(), expected);
    }

    #[test]
    fn order_keys_sort_like_total_cmp_and_map_back() {
        let mut values = vec![
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            1.5,
            -1.5,
            f64::MIN_POSITIVE,
            -f64::MAX,
            f64::MAX,
        ];
        let mut keys: Vec<i64> = values.iter().map(|&v| order_key(v)).collect();
        keys.sort_unstable();
        values.sort_by(|a, b| a.total_cmp(b));
        let back: Vec<u64> = keys.iter().map(|&k| from_order_key(k).to_bits()).collect();
        let expected: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn a_compacted_log_stays_close_and_round_trips_through_state() {
        let n = COMPACT_MIN * 3;
        let values: Vec<f64> = (0..n).map(|i| ((i * 7919) % 10_000) as f64).collect();
        let mut log = PercentileLog::new(0.5, DataType::Float64);
        for chunk in values.chunks(4096) {
            let groups = vec![0usize; chunk.len()];
            log.update_batch(
                &[Arc::new(Float64Array::from(chunk.to_vec()))],
                &groups,
                None,
                1,
            )
            .unwrap();
        }
        assert!(log.values.len() < COMPACT_MIN, "the log was compacted");
        let state = log.state(EmitTo::All).unwrap();
        let mut restored = PercentileLog::new(0.5, DataType::Float64);
        restored.merge_batch(&state, &[0], 1).unwrap();
        let p50 = p99s(&restored.evaluate(EmitTo::All).unwrap())[0].unwrap_or_default();
        assert!((p50 - 5000.0).abs() < 100.0, "{p50}");
    }
}
