//! GROUP BY over tumbling, hopping and cumulating windows with EMIT FINAL,
//! vectorised: each open window holds DataFusion `GroupsAccumulator`s for all its
//! groups, so a chunk costs one `update_batch` call per window and aggregate
//! instead of one per group. Nothing is emitted until the watermark passes a
//! window's end + grace; then the whole window is evaluated at once (consuming
//! the accumulators, which EMIT FINAL never needs again) and its state is dropped.
//!
//! `GroupAggregate` keeps per-group `Accumulator`s for EMIT CHANGES, which must
//! read a group's value without consuming it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, Int8Array, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_plan::PhysicalExpr;

use super::group_aggregate::AggregateSpec;
use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};
use crate::state::{QueryState, StateWriteBatch};

/// The groups of one window.
struct WindowGroups {
    index: HashMap<Box<[u8]>, usize>,
    /// Group keys (all group columns, Arrow row format), by group index.
    keys: Vec<Box<[u8]>>,
    rowtime: Vec<i64>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Changed since the last checkpoint.
    dirty: bool,
}

pub struct WindowFinalAggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<AggregateSpec>,
    /// Group columns then aggregates.
    schema: SchemaRef,
    key_rows: RowConverter,
    state_rows: RowConverter,
    state_widths: Vec<usize>,
    /// Position of the window end among the group expressions.
    end_key: usize,
    grace: i64,
    /// Open windows by end.
    windows: BTreeMap<i64, WindowGroups>,
    /// State keys of groups whose window closed since the last checkpoint.
    deleted: Vec<Box<[u8]>>,
}

impl WindowFinalAggregate {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<AggregateSpec>,
        schema: SchemaRef,
        end_key: usize,
        grace: i64,
    ) -> Result<Self> {
        let key_fields: Vec<SortField> = schema
            .fields()
            .iter()
            .take(group_exprs.len())
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let mut state_fields: Vec<FieldRef> = Vec::new();
        let mut state_widths = Vec::new();
        for a in &aggregates {
            let fields = a.function.state_fields()?;
            state_widths.push(fields.len());
            state_fields.extend(fields);
        }
        let state_sort = state_fields
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(WindowFinalAggregate {
            group_exprs,
            aggregates,
            schema,
            key_rows: RowConverter::new(key_fields)?,
            state_rows: RowConverter::new(state_sort)?,
            state_widths,
            end_key,
            grace,
            windows: BTreeMap::new(),
            deleted: Vec::new(),
        })
    }

    fn new_window(&self) -> Result<WindowGroups> {
        let mut accumulators = Vec::with_capacity(self.aggregates.len());
        for a in &self.aggregates {
            let f = a.function.clone();
            accumulators.push(if let Some(p) = buffered_percentile(&f) {
                Box::new(p)
            } else if f.groups_accumulator_supported() {
                f.create_groups_accumulator()?
            } else {
                // Functions without a vectorised form (t-digest percentiles, ...)
                // get DataFusion's adapter over their per-group Accumulator.
                Box::new(GroupsAccumulatorAdapter::new(move || {
                    f.create_accumulator()
                })) as Box<dyn GroupsAccumulator>
            });
        }
        Ok(WindowGroups {
            index: HashMap::new(),
            keys: Vec::new(),
            rowtime: Vec::new(),
            accumulators,
            dirty: true,
        })
    }

    /// Every group's row of a closed window, as upserts; consumes the window.
    fn emit(&self, mut window: WindowGroups) -> Result<Chunk> {
        let parser = self.key_rows.parser();
        let mut columns = self
            .key_rows
            .convert_rows(window.keys.iter().map(|k| parser.parse(k)))?;
        for (a, acc) in window.accumulators.iter_mut().enumerate() {
            let field = self.schema.field(self.group_exprs.len() + a);
            let mut array = acc.evaluate(EmitTo::All)?;
            if array.data_type() != field.data_type() {
                array = arrow::compute::cast(&array, field.data_type())?;
            }
            columns.push(array);
        }
        let n = window.keys.len();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Chunk::new(
            batch,
            Int64Array::from(window.rowtime),
            Some(Int8Array::from(vec![Op::Upsert as i8; n])),
        ))
    }
}

/// `approx_percentile_cont(x, p)` with a constant p and no DISTINCT gets the
/// buffered accumulator (see `functions::percentile`).
fn buffered_percentile(
    f: &datafusion::physical_expr::aggregate::AggregateFunctionExpr,
) -> Option<crate::functions::percentile::BufferedPercentile> {
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
    Some(crate::functions::percentile::BufferedPercentile::new(
        p,
        f.field().data_type().clone(),
    ))
}

/// Window end of every row, from the end key column.
fn ends_of(column: &ArrayRef) -> Result<Int64Array> {
    let cast = arrow::compute::cast(column, &DataType::Int64)?;
    cast.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| SluiceError::Internal("window end is not a timestamp".into()))
}

impl Operator for WindowFinalAggregate {
    fn describe(&self) -> String {
        format!(
            "WindowFinalAggregate: groupBy=[{}], aggr=[{}], emit=final",
            self.group_exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.aggregates
                .iter()
                .map(|a| a.function.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn state_entries(&self) -> usize {
        self.windows.values().map(|w| w.keys.len()).sum()
    }

    fn on_chunk(&mut self, chunk: Chunk, _out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        if n == 0 {
            return Ok(());
        }
        let batch = &chunk.batch;
        let key_arrays = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let ends = ends_of(&key_arrays[self.end_key])?;
        let rows = self.key_rows.convert_columns(&key_arrays)?;

        // Rows per window (a chunk touches a handful of windows).
        let mut buckets: Vec<(i64, Vec<u32>)> = Vec::new();
        for (i, end) in ends.values().iter().enumerate() {
            match buckets.iter_mut().find(|(e, _)| e == end) {
                Some((_, rows)) => rows.push(i as u32),
                None => buckets.push((*end, vec![i as u32])),
            }
        }
        let args: Vec<Vec<ArrayRef>> = self
            .aggregates
            .iter()
            .map(|spec| {
                spec.function
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
                    .collect::<datafusion::error::Result<Vec<_>>>()
            })
            .collect::<datafusion::error::Result<_>>()?;
        let masks: Vec<Option<BooleanArray>> =
            self.aggregates
                .iter()
                .map(|spec| match &spec.filter {
                    Some(f) => {
                        let m = f.evaluate(batch)?.into_array(n)?;
                        let m = m.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
                            SluiceError::sql("FILTER (WHERE ...) must be a boolean")
                        })?;
                        Ok(Some(crate::dataflow::message::null_as_false(m)))
                    }
                    None => Ok(None),
                })
                .collect::<Result<_>>()?;

        for (end, idx) in buckets {
            if !self.windows.contains_key(&end) {
                let w = self.new_window()?;
                self.windows.insert(end, w);
            }
            let window = self
                .windows
                .get_mut(&end)
                .ok_or_else(|| SluiceError::Internal("window vanished".into()))?;
            window.dirty = true;
            let mut groups = Vec::with_capacity(idx.len());
            for &i in &idx {
                let key = rows.row(i as usize);
                let g = match window.index.get(key.as_ref()) {
                    Some(&g) => g,
                    None => {
                        let g = window.keys.len();
                        let key: Box<[u8]> = key.as_ref().into();
                        window.index.insert(key.clone(), g);
                        window.keys.push(key);
                        window.rowtime.push(i64::MIN);
                        g
                    }
                };
                let t = chunk.rowtime.value(i as usize);
                if t > window.rowtime[g] {
                    window.rowtime[g] = t;
                }
                groups.push(g);
            }
            let total = window.keys.len();
            let all_rows = idx.len() == n;
            let idx = UInt32Array::from(idx);
            for (a, acc) in window.accumulators.iter_mut().enumerate() {
                let values: Vec<ArrayRef> = if all_rows {
                    args[a].clone()
                } else {
                    args[a]
                        .iter()
                        .map(|c| take(c, &idx, None))
                        .collect::<std::result::Result<_, _>>()?
                };
                let mask = match &masks[a] {
                    Some(m) if all_rows => Some(m.clone()),
                    Some(m) => {
                        let t = take(m, &idx, None)?;
                        t.as_any().downcast_ref::<BooleanArray>().cloned()
                    }
                    None => None,
                };
                acc.update_batch(&values, &groups, mask.as_ref(), total)?;
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        let closed: Vec<i64> = self
            .windows
            .keys()
            .take_while(|end| end.saturating_add(self.grace) <= watermark)
            .copied()
            .collect();
        for end in closed {
            if let Some(window) = self.windows.remove(&end) {
                self.deleted.extend(window.keys.iter().cloned());
                let chunk = self.emit(window)?;
                out.push(Message::Chunk(chunk));
            }
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    fn snapshot(&mut self, id: u16, batch: &mut StateWriteBatch) -> Result<()> {
        for key in self.deleted.drain(..) {
            batch.delete(id, &key);
        }
        let dirty: Vec<i64> = self
            .windows
            .iter()
            .filter(|(_, w)| w.dirty)
            .map(|(e, _)| *e)
            .collect();
        for end in dirty {
            let fresh = self.new_window()?;
            let Some(window) = self.windows.get_mut(&end) else {
                continue;
            };
            window.dirty = false;
            let n = window.keys.len();
            // `state` consumes the accumulators: read it, then merge it back into
            // fresh ones so the window carries on unchanged.
            let mut columns: Vec<ArrayRef> = Vec::new();
            for acc in window.accumulators.iter_mut() {
                columns.extend(acc.state(EmitTo::All)?);
            }
            let groups: Vec<usize> = (0..n).collect();
            let mut accumulators = fresh.accumulators;
            let mut c = 0;
            for (a, &w) in self.state_widths.iter().enumerate() {
                accumulators[a].merge_batch(&columns[c..c + w], &groups, n)?;
                c += w;
            }
            window.accumulators = accumulators;
            let rows = self.state_rows.convert_columns(&columns)?;
            for (g, key) in window.keys.iter().enumerate() {
                let mut value = window.rowtime[g].to_be_bytes().to_vec();
                value.extend_from_slice(rows.row(g).as_ref());
                batch.put(id, key, value);
            }
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        let entries = state.scan(id)?;
        if entries.is_empty() {
            return Ok(());
        }
        let key_parser = self.key_rows.parser();
        let keys = self
            .key_rows
            .convert_rows(entries.iter().map(|(k, _)| key_parser.parse(k)))?;
        let ends = ends_of(&keys[self.end_key])?;
        let corrupt = || SluiceError::Internal("corrupt window state".into());
        let mut rowtimes = Vec::with_capacity(entries.len());
        for (_, v) in &entries {
            let head: [u8; 8] = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(corrupt)?;
            rowtimes.push(i64::from_be_bytes(head));
        }
        let parser = self.state_rows.parser();
        let states = self
            .state_rows
            .convert_rows(entries.iter().map(|(_, v)| parser.parse(&v[8..])))?;
        let mut by_window: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, end) in ends.values().iter().enumerate() {
            by_window.entry(*end).or_default().push(i as u32);
        }
        for (end, idx) in by_window {
            let mut window = self.new_window()?;
            window.dirty = false;
            for &i in &idx {
                let key: Box<[u8]> = entries[i as usize].0.as_slice().into();
                window.index.insert(key.clone(), window.keys.len());
                window.keys.push(key);
                window.rowtime.push(rowtimes[i as usize]);
            }
            let n = idx.len();
            let groups: Vec<usize> = (0..n).collect();
            let idx = UInt32Array::from(idx);
            let mut c = 0;
            for (a, &w) in self.state_widths.iter().enumerate() {
                let cols: Vec<ArrayRef> = states[c..c + w]
                    .iter()
                    .map(|s| take(s, &idx, None))
                    .collect::<std::result::Result<_, _>>()?;
                window.accumulators[a].merge_batch(&cols, &groups, n)?;
                c += w;
            }
            self.windows.insert(end, window);
        }
        Ok(())
    }
}
