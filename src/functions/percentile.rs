//! A vectorised `APPROX_PERCENTILE` (`approx_percentile_cont`) for windowed
//! aggregates. DataFusion's accumulator merges its t-digest on every
//! `update_batch` call; behind the generic groups adapter that is a merge per
//! group per chunk, i.e. nearly per event when groups are many. Here each group
//! buffers raw values and merges them into its digest a thousand at a time (and
//! before it is read), so the digest math is amortised. The state is DataFusion's
//! own t-digest state, so partial results merge with its accumulators.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::ScalarValue;
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
        let values: Float64Array = digests
            .iter()
            .map(|d| (d.count() > 0.0).then(|| d.estimate_quantile(self.percentile)))
            .collect();
        let values: ArrayRef = Arc::new(values);
        Ok(if self.return_type == DataType::Float64 {
            values
        } else {
            arrow::compute::cast(&values, &self.return_type)?
        })
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let digests = self.take(emit_to);
        let states: Vec<Vec<ScalarValue>> = digests.iter().map(|d| d.to_scalar_state()).collect();
        let width = states.first().map_or(6, Vec::len);
        (0..width)
            .map(|c| ScalarValue::iter_to_array(states.iter().map(|s| s[c].clone())))
            .collect()
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        for (row, &g) in group_indices.iter().enumerate() {
            let state = values
                .iter()
                .map(|a| ScalarValue::try_from_array(a, row))
                .collect::<Result<Vec<_>>>()?;
            let other = TDigest::from_scalar_state(&state);
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
        let values = arrow::compute::cast(&values[0], &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        let states: Vec<Vec<ScalarValue>> = (0..values.len())
            .map(|row| {
                let keep = values.is_valid(row) && opt_filter.is_none_or(|f| f.value(row));
                let digest = TDigest::new(DEFAULT_MAX_SIZE);
                let digest = if keep {
                    digest.merge_sorted_f64(&[values.value(row)])
                } else {
                    digest
                };
                digest.to_scalar_state()
            })
            .collect();
        let width = TDigest::new(DEFAULT_MAX_SIZE).to_scalar_state().len();
        (0..width)
            .map(|c| ScalarValue::iter_to_array(states.iter().map(|s| s[c].clone())))
            .collect()
    }

    fn size(&self) -> usize {
        self.digests.iter().map(|d| d.size()).sum::<usize>()
            + self.buffers.iter().map(|b| b.capacity() * 8).sum::<usize>()
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
}
