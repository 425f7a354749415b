//! What every aggregating operator computes the same way: the layout of the
//! aggregates' intermediate state (for checkpoints), the key columns' row format,
//! and each chunk's aggregate arguments and FILTER masks.

use arrow::array::{ArrayRef, BooleanArray};
use arrow::datatypes::{FieldRef, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;

use super::group_aggregate::AggregateSpec;
use crate::error::{Result, SluiceError};

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

/// Row format of the group columns `columns` of `schema`.
pub fn key_layout(
    schema: &SchemaRef,
    columns: impl Iterator<Item = usize>,
) -> Result<RowConverter> {
    Ok(RowConverter::new(
        columns
            .map(|i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?)
}

/// Each aggregate's argument columns over `batch`.
pub fn arguments(aggregates: &[AggregateSpec], batch: &RecordBatch) -> Result<Vec<Vec<ArrayRef>>> {
    let n = batch.num_rows();
    Ok(aggregates
        .iter()
        .map(|spec| {
            spec.function
                .expressions()
                .iter()
                .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
                .collect::<datafusion::error::Result<Vec<_>>>()
        })
        .collect::<datafusion::error::Result<_>>()?)
}

/// Each aggregate's FILTER (WHERE ...) over `batch` (NULL counts as false).
pub fn filter_masks(
    aggregates: &[AggregateSpec],
    batch: &RecordBatch,
) -> Result<Vec<Option<BooleanArray>>> {
    let n = batch.num_rows();
    aggregates
        .iter()
        .map(|spec| match &spec.filter {
            Some(f) => {
                let m = f.evaluate(batch)?.into_array(n)?;
                let m = m
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| SluiceError::sql("FILTER (WHERE ...) must be a boolean"))?;
                Ok(Some(crate::dataflow::message::null_as_false(m)))
            }
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
