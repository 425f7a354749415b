//! Building joined batches: the left side's columns then the right side's, each
//! taken from a chunk by index, rebuilt from stored rows, or all null for the
//! missing side of an outer join's unmatched row.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, RecordBatchOptions, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::DataType;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_plan::PhysicalExpr;

use super::aggregate_inputs::conform;
use super::evaluate::{evaluate_all, predicate_mask, Failures};
use super::Side;
use crate::error::{Result, SluiceError};

/// The columns of `batch` at `indices` (a null index gives a null row).
pub fn take_columns(batch: &RecordBatch, indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    batch
        .columns()
        .iter()
        .map(|c| Ok(take(c.as_ref(), indices, None)?))
        .collect()
}

/// Columns rebuilt from rows in `converter`'s row format.
pub fn stored_columns<'a>(
    converter: &RowConverter,
    rows: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<ArrayRef>> {
    let parser = converter.parser();
    Ok(converter.convert_rows(rows.into_iter().map(|r| parser.parse(r)))?)
}

/// `n` null rows of every column of `schema`.
pub fn null_columns(schema: &SchemaRef, n: usize) -> Vec<ArrayRef> {
    schema
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), n))
        .collect()
}

/// One batch of the join's output schema from its two sides' columns.
pub fn assemble(
    schema: &SchemaRef,
    left: Vec<ArrayRef>,
    right: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch> {
    let columns = cast_to(schema, left.into_iter().chain(right).collect())?;
    // The join's schema may declare a column NOT NULL that an outer join pads;
    // the planner marks those nullable, so a mismatch here is a bug worth seeing.
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .map_err(|e| SluiceError::Internal(format!("building a joined batch: {e}")))
}

/// `columns` cast to the types of `schema`'s fields (a join's output types: type
/// coercion may have widened a key, an outer join's side is nullable).
pub fn cast_to(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
    Ok(columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                arrow::compute::cast(&c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Rows of `batch` satisfying `filter` (all of them without one).
pub fn filter_mask(
    filter: Option<&Arc<dyn PhysicalExpr>>,
    batch: &RecordBatch,
    failures: &mut Failures,
) -> Result<Option<arrow::array::BooleanArray>> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    predicate_mask(filter, batch, failures).map(Some)
}

/// Indices as an Arrow array, `None` for a null row.
pub fn indices(values: impl IntoIterator<Item = Option<u32>>) -> UInt32Array {
    values.into_iter().collect()
}

/// Whether a row of key columns has a null (SQL equality never matches it).
pub fn null_key_rows(keys: &[ArrayRef], rows: usize) -> Vec<bool> {
    let mut nulls = vec![false; rows];
    for k in keys {
        if k.null_count() > 0 {
            for (i, n) in nulls.iter_mut().enumerate() {
                *n |= k.is_null(i);
            }
        }
    }
    nulls
}

/// A join's key: the expressions giving it on each side, cast to common types
/// and compared in Arrow row format.
pub struct JoinKeys {
    left: Vec<Arc<dyn PhysicalExpr>>,
    right: Vec<Arc<dyn PhysicalExpr>>,
    types: Vec<DataType>,
    rows: RowConverter,
}

impl JoinKeys {
    pub fn new(
        left: Vec<Arc<dyn PhysicalExpr>>,
        right: Vec<Arc<dyn PhysicalExpr>>,
        types: Vec<DataType>,
    ) -> Result<JoinKeys> {
        let rows = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        Ok(JoinKeys {
            left,
            right,
            types,
            rows,
        })
    }

    /// `[left exprs] = [right exprs]`, for EXPLAIN.
    pub fn describe(&self) -> String {
        let list = |e: &[Arc<dyn PhysicalExpr>]| {
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("[{}] = [{}]", list(&self.left), list(&self.right))
    }

    /// The key of each row of `batch` from `side`, and whether it has a NULL
    /// (such a row matches nothing).
    pub fn of(
        &self,
        side: Side,
        batch: &RecordBatch,
        failures: &mut Failures,
    ) -> Result<(Rows, Vec<bool>)> {
        let exprs = match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        };
        let keys: Vec<ArrayRef> = evaluate_all(exprs, batch, failures)?
            .into_iter()
            .zip(&self.types)
            .map(|(a, t)| conform(a, t))
            .collect::<Result<_>>()?;
        let nulls = null_key_rows(&keys, batch.num_rows());
        Ok((self.rows.convert_columns(&keys)?, nulls))
    }
}
