//! What every aggregating operator computes the same way: the layout of the
//! aggregates' intermediate state (for checkpoints), the key columns' row format,
//! and each chunk's aggregate arguments and FILTER masks.

use arrow::array::{ArrayRef, BooleanArray};
use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::evaluate::{evaluate_all, predicate_mask, Failures};
use super::group_aggregate::AggregateSpec;
use crate::error::{Result, SluiceError};

/// Rows of some columns in a converter's row format. With no columns (an
/// aggregate without GROUP BY keys, or with no aggregates) every row is the empty
/// row; arrow's converter would give no rows at all.
pub struct RowBytes(Option<Rows>);

impl RowBytes {
    pub fn convert(converter: &RowConverter, columns: &[ArrayRef]) -> Result<RowBytes> {
        if columns.is_empty() {
            return Ok(RowBytes(None));
        }
        Ok(RowBytes(Some(converter.convert_columns(columns)?)))
    }

    pub fn row(&self, i: usize) -> &[u8] {
        match &self.0 {
            Some(rows) => rows.row(i).data(),
            None => &[],
        }
    }
}

/// `groupBy=[...], aggr=[...]`, for an aggregating operator's EXPLAIN line.
pub fn describe_groups(keys: &[Arc<dyn PhysicalExpr>], aggregates: &[AggregateSpec]) -> String {
    format!(
        "groupBy=[{}], aggr=[{}]",
        keys.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        aggregates
            .iter()
            .map(|a| a.function.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Row format of the aggregates' state fields, and how many fields each has.
pub fn state_layout(aggregates: &[AggregateSpec]) -> Result<(RowConverter, Vec<usize>)> {
    let mut fields: Vec<FieldRef> = Vec::new();
    let mut widths = Vec::with_capacity(aggregates.len());
    for a in aggregates {
        let f = a.function.state_fields()?;
        widths.push(f.len());
        fields.extend(f);
    }
    let sort = fields
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    Ok((RowConverter::new(sort)?, widths))
}

/// The same for retractable ("sliding") accumulators, whose state DataFusion does
/// not declare (a sliding SUM keeps its row count too): read off a fresh one.
pub fn sliding_state_layout(aggregates: &[AggregateSpec]) -> Result<(RowConverter, Vec<usize>)> {
    let mut sort = Vec::new();
    let mut widths = Vec::with_capacity(aggregates.len());
    for a in aggregates {
        let state = a.function.create_sliding_accumulator()?.state()?;
        widths.push(state.len());
        sort.extend(state.iter().map(|v| SortField::new(v.data_type())));
    }
    Ok((RowConverter::new(sort)?, widths))
}

/// Where the window start and end sit among a windowed aggregate's group columns
/// (the others form the key the operator indexes its state by).
#[derive(Debug, Clone, Copy)]
pub struct WindowColumns {
    pub start: usize,
    pub end: usize,
}

impl WindowColumns {
    fn is_window(&self, i: usize) -> bool {
        i == self.start || i == self.end
    }

    /// The group expressions other than the window columns.
    pub fn keys_of<T>(&self, group_exprs: Vec<T>) -> Vec<T> {
        group_exprs
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !self.is_window(*i))
            .map(|(_, e)| e)
            .collect()
    }

    /// Row format of the non-window group columns among the first `n_groups`
    /// columns of `schema`.
    pub fn key_layout(&self, schema: &SchemaRef, n_groups: usize) -> Result<RowConverter> {
        Ok(RowConverter::new(
            (0..n_groups)
                .filter(|i| !self.is_window(*i))
                .map(|i| SortField::new(schema.field(i).data_type().clone()))
                .collect(),
        )?)
    }

    /// The first `n_groups` columns of `schema` in GROUP BY order: `starts` and
    /// `ends` in the window positions, `keys` (in order) in the others.
    pub fn group_columns(
        &self,
        schema: &SchemaRef,
        n_groups: usize,
        starts: ArrayRef,
        ends: ArrayRef,
        keys: Vec<ArrayRef>,
    ) -> Result<Vec<ArrayRef>> {
        let mut keys = keys.into_iter();
        (0..n_groups)
            .map(|i| {
                let col = if i == self.start {
                    starts.clone()
                } else if i == self.end {
                    ends.clone()
                } else {
                    keys.next()
                        .ok_or_else(|| SluiceError::Internal("window group key".into()))?
                };
                conform(col, schema.field(i).data_type())
            })
            .collect()
    }
}

/// `array` cast to `data_type` if it is not of that type already (an accumulator
/// may produce a wider type than the one the plan declares).
pub fn conform(array: ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    if array.data_type() == data_type {
        Ok(array)
    } else {
        Ok(arrow::compute::cast(&array, data_type)?)
    }
}

/// Each aggregate's argument columns over `batch` (failing values NULL).
pub fn arguments(
    aggregates: &[AggregateSpec],
    batch: &RecordBatch,
    failures: &mut Failures,
) -> Result<Vec<Vec<ArrayRef>>> {
    aggregates
        .iter()
        .map(|spec| evaluate_all(&spec.function.expressions(), batch, failures))
        .collect()
}

/// Each aggregate's FILTER (WHERE ...) over `batch` (NULL and failures count as
/// false).
pub fn filter_masks(
    aggregates: &[AggregateSpec],
    batch: &RecordBatch,
    failures: &mut Failures,
) -> Result<Vec<Option<BooleanArray>>> {
    aggregates
        .iter()
        .map(|spec| match &spec.filter {
            Some(f) => predicate_mask(f, batch, failures).map(Some),
            None => Ok(None),
        })
        .collect()
}

/// The intermediate state of several groups' accumulators (one `Vec` per group,
/// one accumulator per aggregate) as state columns, `width` fields in all.
pub fn accumulator_states<'a>(
    groups: impl Iterator<Item = &'a mut Vec<Box<dyn Accumulator>>>,
    width: usize,
) -> Result<Vec<ArrayRef>> {
    let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); width];
    for accumulators in groups {
        let mut c = 0;
        for acc in accumulators.iter_mut() {
            for v in acc.state()? {
                columns[c].push(v);
                c += 1;
            }
        }
    }
    Ok(columns
        .into_iter()
        .map(ScalarValue::iter_to_array)
        .collect::<datafusion::error::Result<_>>()?)
}
