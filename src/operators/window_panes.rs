//! Panes for hopping windows: the time line is cut into panes as long as the
//! advance, and each key keeps one partial aggregate per pane. An event updates
//! the one pane it falls in instead of every window it belongs to (twelve for a
//! one-minute window advancing by five seconds); a window's result is its panes'
//! partials merged when it closes.
//!
//! A pane can still change after the first window over it closed (an event late
//! for that window but not for the next), so merging must not consume it: when a
//! window closes, each of its panes' accumulators is *frozen* into a partial
//! (DataFusion's intermediate state, or the buffered percentile's raw values) that
//! every later window merges again, and further events go to fresh accumulators.
//!
//! Only aggregates whose partials merge into the same result as feeding every
//! event to one accumulator use panes (see [`merges_exactly`]); first/last value,
//! lists and DISTINCT depend on the order events arrived, which panes lose.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray};
use arrow::datatypes::DataType;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::GroupsAccumulatorAdapter;

use super::group_aggregate::AggregateSpec;
use super::window_state::SlotChanges;
use crate::error::{Result, SluiceError};
use crate::functions::percentile::{BufferedPercentile, PercentileLog, PercentileRuns};

/// Aggregates whose partial states merge into exactly what one accumulator fed
/// every event in any order would give (up to floating-point rounding of sums).
pub fn merges_exactly(f: &AggregateFunctionExpr) -> bool {
    if f.is_distinct() {
        return false;
    }
    matches!(
        f.fun().name(),
        "count"
            | "sum"
            | "avg"
            | "min"
            | "max"
            | "approx_distinct"
            | "bool_and"
            | "bool_or"
            | "bit_and"
            | "bit_or"
            | "bit_xor"
            | "stddev"
            | "stddev_pop"
            | "var"
            | "var_pop"
    ) || percentile_of(f).is_some()
}

/// The percentile and result type of `approx_percentile_cont(x, p)` with a
/// constant p and no DISTINCT, which gets Sluice's own accumulators (see
/// `functions::percentile`).
fn percentile_of(f: &AggregateFunctionExpr) -> Option<(f64, DataType)> {
    if f.fun().name() != "approx_percentile_cont" || f.is_distinct() || f.expressions().len() != 2 {
        return None;
    }
    let literal = f.expressions()[1]
        .downcast_ref::<datafusion::physical_expr::expressions::Literal>()?
        .value()
        .clone();
    let p = match literal.cast_to(&DataType::Float64).ok()? {
        datafusion::scalar::ScalarValue::Float64(Some(p)) if (0.0..=1.0).contains(&p) => p,
        _ => return None,
    };
    Some((p, f.field().data_type().clone()))
}

/// A vectorised accumulator for `f`: the buffered percentile, DataFusion's groups
/// accumulator, or DataFusion's adapter over its per-group accumulator.
pub fn groups_accumulator(f: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    Ok(if let Some((p, t)) = percentile_of(f) {
        Box::new(BufferedPercentile::new(p, t))
    } else if f.groups_accumulator_supported() {
        f.create_groups_accumulator()?
    } else {
        let f = f.clone();
        Box::new(GroupsAccumulatorAdapter::new(move || {
            f.create_accumulator()
        }))
    })
}

/// One aggregate's accumulator over a pane's (or a closing window's) groups.
pub enum PaneAccumulator {
    Groups(Box<dyn GroupsAccumulator>),
    /// Kept apart so its partials move as logged values: DataFusion's t-digest
    /// state goes through a `ScalarValue` per group and field.
    Percentile(PercentileLog),
}

/// What a frozen accumulator held, one entry per pane slot.
#[derive(Clone)]
pub enum Partial {
    State(Vec<ArrayRef>),
    Percentile(Arc<PercentileRuns>),
}

impl Partial {
    fn len(&self) -> usize {
        match self {
            Partial::State(columns) => columns.first().map_or(0, |c| c.len()),
            Partial::Percentile(p) => p.len(),
        }
    }
}

impl PaneAccumulator {
    pub fn new(spec: &AggregateSpec) -> Result<Self> {
        Ok(match percentile_of(&spec.function) {
            Some((p, t)) => PaneAccumulator::Percentile(PercentileLog::new(p, t)),
            None => PaneAccumulator::Groups(groups_accumulator(&spec.function)?),
        })
    }

    pub fn for_all(aggregates: &[AggregateSpec]) -> Result<Vec<Self>> {
        aggregates.iter().map(PaneAccumulator::new).collect()
    }

    pub fn update_batch(
        &mut self,
        values: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        match self {
            PaneAccumulator::Groups(acc) => acc.update_batch(values, groups, filter, total)?,
            PaneAccumulator::Percentile(acc) => acc.update_batch(values, groups, filter, total)?,
        }
        Ok(())
    }

    /// Takes everything out as a partial; the accumulator is left empty.
    pub fn freeze(&mut self) -> Result<Partial> {
        Ok(match self {
            PaneAccumulator::Groups(acc) => Partial::State(acc.state(EmitTo::All)?),
            PaneAccumulator::Percentile(acc) => Partial::Percentile(acc.freeze()),
        })
    }

    /// Adds partial entry `i` into group `groups[i]`.
    pub fn merge(&mut self, partial: &Partial, groups: &[usize], total: usize) -> Result<()> {
        let n = partial.len();
        let groups = groups.get(..n).ok_or_else(|| {
            SluiceError::Internal("pane partial has more groups than slots".into())
        })?;
        match (self, partial) {
            (PaneAccumulator::Groups(acc), Partial::State(columns)) => {
                acc.merge_batch(columns, groups, total)?
            }
            (PaneAccumulator::Percentile(acc), Partial::Percentile(runs)) => {
                acc.merge_runs(runs.clone(), groups, total)
            }
            _ => {
                return Err(SluiceError::Internal(
                    "pane partial of another aggregate".into(),
                ))
            }
        }
        Ok(())
    }

    /// Merges DataFusion intermediate state (a checkpoint's) into the groups.
    pub fn merge_state(
        &mut self,
        columns: &[ArrayRef],
        groups: &[usize],
        total: usize,
    ) -> Result<()> {
        match self {
            PaneAccumulator::Groups(acc) => acc.merge_batch(columns, groups, total)?,
            PaneAccumulator::Percentile(acc) => acc.merge_batch(columns, groups, total)?,
        }
        Ok(())
    }

    /// DataFusion intermediate state of every group (consumes the groups).
    pub fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(match self {
            PaneAccumulator::Groups(acc) => acc.state(EmitTo::All)?,
            PaneAccumulator::Percentile(acc) => acc.state(EmitTo::All)?,
        })
    }

    /// This accumulator, empty, for another window: the percentile keeps its
    /// buffers; DataFusion's are not meant for reuse after `EmitTo::All`.
    pub fn recycled(self, spec: &AggregateSpec) -> Result<Self> {
        match self {
            PaneAccumulator::Percentile(p) if p.is_empty() => Ok(PaneAccumulator::Percentile(p)),
            _ => PaneAccumulator::new(spec),
        }
    }

    /// Bytes the accumulator holds.
    pub fn size(&self) -> usize {
        match self {
            PaneAccumulator::Groups(acc) => acc.size(),
            PaneAccumulator::Percentile(acc) => acc.size(),
        }
    }

    /// The result of every group (consumes the groups).
    pub fn evaluate(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            PaneAccumulator::Groups(acc) => acc.evaluate(EmitTo::All)?,
            PaneAccumulator::Percentile(acc) => acc.evaluate(EmitTo::All)?,
        })
    }
}

/// The groups of one pane.
pub struct Pane {
    /// Key id → slot.
    pub(super) slots: super::window_final_aggregate::IdMap,
    /// Key id of each slot.
    pub key_ids: Vec<u32>,
    /// Latest event time of each slot.
    pub rowtime: Vec<i64>,
    /// Events since the last freeze, one accumulator per aggregate.
    pub live: Vec<PaneAccumulator>,
    /// `live` has been updated since it was last frozen.
    pub live_used: bool,
    /// Earlier contents: per freeze, one partial per aggregate.
    pub partials: Vec<Vec<Partial>>,
    /// Slots changed since the last checkpoint, and slots a checkpoint wrote.
    pub changes: SlotChanges,
}

impl Pane {
    pub fn new(aggregates: &[AggregateSpec]) -> Result<Self> {
        Ok(Pane {
            slots: Default::default(),
            key_ids: Vec::new(),
            rowtime: Vec::new(),
            live: PaneAccumulator::for_all(aggregates)?,
            live_used: false,
            partials: Vec::new(),
            changes: SlotChanges::default(),
        })
    }

    /// Bytes held by the accumulators and partials (not the slots).
    pub fn memory_size(&self) -> usize {
        let live: usize = self.live.iter().map(PaneAccumulator::size).sum();
        let partials: usize = self
            .partials
            .iter()
            .flatten()
            .map(|p| match p {
                Partial::State(columns) => columns.iter().map(|c| c.get_array_memory_size()).sum(),
                Partial::Percentile(runs) => runs.memory_size(),
            })
            .sum();
        live + partials
    }

    /// Moves the live accumulators' contents to the partials.
    pub fn freeze(&mut self, aggregates: &[AggregateSpec]) -> Result<()> {
        if !self.live_used {
            return Ok(());
        }
        let mut frozen = Vec::with_capacity(self.live.len());
        for (acc, spec) in self.live.iter_mut().zip(aggregates) {
            frozen.push(acc.freeze()?);
            // DataFusion's accumulators are not meant to be reused after
            // EmitTo::All: start over.
            if let PaneAccumulator::Groups(_) = acc {
                *acc = PaneAccumulator::new(spec)?;
            }
        }
        self.partials.push(frozen);
        self.live_used = false;
        Ok(())
    }

    /// Folds every partial into one per aggregate (what a checkpoint writes),
    /// returning its DataFusion intermediate state columns (one row per slot).
    pub fn consolidate(&mut self, aggregates: &[AggregateSpec]) -> Result<Vec<ArrayRef>> {
        self.freeze(aggregates)?;
        let n = self.key_ids.len();
        let identity: Vec<usize> = (0..n).collect();
        let mut merged = Vec::with_capacity(aggregates.len());
        let mut columns = Vec::new();
        for (a, spec) in aggregates.iter().enumerate() {
            let single = match self.partials.as_slice() {
                [one] => Some(one[a].clone()),
                _ => None,
            };
            let partial = match single {
                Some(p) => p,
                None => {
                    let mut acc = PaneAccumulator::new(spec)?;
                    for set in &self.partials {
                        acc.merge(&set[a], &identity, n)?;
                    }
                    acc.freeze()?
                }
            };
            // Written as DataFusion state, so the checkpoint format does not
            // depend on how a partial is held in memory. A slot added after the
            // last update of an aggregate has no entry in its partial: merging
            // into `n` groups pads it with empty groups.
            let state = match &partial {
                Partial::State(c) if c.first().map_or(0, |c| c.len()) == n => c.clone(),
                _ => {
                    let mut acc = PaneAccumulator::new(spec)?;
                    acc.merge(&partial, &identity, n)?;
                    acc.state()?
                }
            };
            columns.extend(state);
            merged.push(partial);
        }
        self.partials = vec![merged];
        Ok(columns)
    }
}
