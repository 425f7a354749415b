//! Non-strict expression evaluation: a value that fails to evaluate (division by
//! zero, a failed cast, an overflow, a function's bad argument) becomes NULL and
//! is reported, and the rest of the chunk goes on — as ksqlDB and RisingWave do.
//!
//! The whole chunk is evaluated at once (the fast path); only when that fails is
//! it split in halves until the failing rows are found, so a clean chunk costs
//! nothing extra and k bad rows cost O(k log n) evaluations.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, Int64Array};
use arrow::compute::{concat, take_record_batch};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion::physical_plan::PhysicalExpr;

use crate::dataflow::{Chunk, Message, Origin, RowError, RowErrors};
use crate::error::{Result, SluiceError};

/// Rows (by index in the evaluated batch) whose value failed, with the error.
pub type Failures = Vec<(usize, String)>;

/// Evaluates `expr` over `batch`; a row that fails is NULL in the result and
/// listed in `failures`.
pub fn evaluate(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    failures: &mut Failures,
) -> Result<ArrayRef> {
    let n = batch.num_rows();
    match expr.evaluate(batch).and_then(|v| v.into_array(n)) {
        Ok(array) => Ok(array),
        Err(_) if n == 0 => Ok(new_null_array(&expr.data_type(&batch.schema())?, 0)),
        Err(e) => {
            let data_type = expr.data_type(&batch.schema())?;
            let mut parts = Vec::new();
            if n == 1 {
                failures.push((0, e.to_string()));
                return Ok(new_null_array(&data_type, 1));
            }
            bisect(expr, batch, &data_type, 0, n, &mut parts, failures);
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            Ok(concat(&refs)?)
        }
    }
}

/// Evaluates rows `[offset, offset + len)`, halving the range while it fails.
fn bisect(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    data_type: &DataType,
    offset: usize,
    len: usize,
    parts: &mut Vec<ArrayRef>,
    failures: &mut Failures,
) {
    let slice = batch.slice(offset, len);
    match expr.evaluate(&slice).and_then(|v| v.into_array(len)) {
        Ok(a) if a.data_type() == data_type => parts.push(a),
        Ok(a) => match arrow::compute::cast(&a, data_type) {
            Ok(a) => parts.push(a),
            Err(e) => fail_all(data_type, offset, len, &e.to_string(), parts, failures),
        },
        Err(e) if len == 1 => fail_all(data_type, offset, 1, &e.to_string(), parts, failures),
        Err(_) => {
            let half = len / 2;
            bisect(expr, batch, data_type, offset, half, parts, failures);
            bisect(
                expr,
                batch,
                data_type,
                offset + half,
                len - half,
                parts,
                failures,
            );
        }
    }
}

fn fail_all(
    data_type: &DataType,
    offset: usize,
    len: usize,
    error: &str,
    parts: &mut Vec<ArrayRef>,
    failures: &mut Failures,
) {
    parts.push(new_null_array(data_type, len));
    failures.extend((offset..offset + len).map(|row| (row, error.to_string())));
}

/// The message reporting `failures` of `operator` over `chunk`'s rows (None when
/// nothing failed). A row that failed in several expressions is reported once,
/// with its first error.
pub fn row_errors(
    operator: impl FnOnce() -> String,
    chunk: &Chunk,
    failures: Failures,
) -> Option<Message> {
    report(
        operator,
        &chunk.batch,
        Some(&chunk.rowtime),
        chunk.origin.as_ref(),
        failures,
    )
}

/// As [`row_errors`], for rows that are not a chunk's (a join's candidate pairs).
pub fn batch_errors(
    operator: impl FnOnce() -> String,
    batch: &RecordBatch,
    failures: Failures,
) -> Option<Message> {
    report(operator, batch, None, None, failures)
}

fn report(
    operator: impl FnOnce() -> String,
    batch: &RecordBatch,
    rowtime: Option<&Int64Array>,
    origin: Option<&Origin>,
    mut failures: Failures,
) -> Option<Message> {
    if failures.is_empty() {
        return None;
    }
    failures.sort_by_key(|(row, _)| *row);
    failures.dedup_by_key(|(row, _)| *row);
    let indices =
        arrow::array::UInt32Array::from_iter_values(failures.iter().map(|(row, _)| *row as u32));
    let rows = take_record_batch(batch, &indices)
        .ok()
        .and_then(|b| crate::formats::json_lines(&b).ok())
        .unwrap_or_default();
    let errors = failures
        .into_iter()
        .enumerate()
        .map(|(i, (row, error))| RowError {
            error,
            row: rows
                .get(i)
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .unwrap_or_default(),
            rowtime: rowtime.filter(|t| row < t.len()).map(|t| t.value(row)),
            origin: origin.map(|o| {
                let (p, off) = o.describe(row);
                (o.source.clone(), p, off)
            }),
        })
        .collect();
    Some(Message::RowErrors(RowErrors {
        operator: operator(),
        errors,
    }))
}

/// Each expression over `batch`, as a column (failing values NULL).
pub fn evaluate_all(
    exprs: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
    failures: &mut Failures,
) -> Result<Vec<ArrayRef>> {
    exprs.iter().map(|e| evaluate(e, batch, failures)).collect()
}

/// Evaluates GROUP BY keys and drops the rows whose key is NULL: they belong
/// to no group, and ksqlDB drops them (a NULL cannot be a record key). Errors
/// met computing the keys are reported against the rows as they came; the
/// chunk and keys returned hold the rows kept.
pub fn group_keys(
    exprs: &[Arc<dyn PhysicalExpr>],
    chunk: Chunk,
    operator: impl FnOnce() -> String,
    out: &mut Vec<Message>,
) -> Result<(Chunk, Vec<ArrayRef>)> {
    let mut failures = Vec::new();
    let keys = evaluate_all(exprs, &chunk.batch, &mut failures)?;
    out.extend(row_errors(operator, &chunk, failures));
    if !keys.iter().any(|k| k.null_count() > 0) {
        return Ok((chunk, keys));
    }
    let mut keep = arrow::compute::is_not_null(&keys[0])?;
    for k in &keys[1..] {
        keep = arrow::compute::and(&keep, &arrow::compute::is_not_null(k)?)?;
    }
    let keys = keys
        .iter()
        .map(|k| arrow::compute::filter(k, &keep))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((chunk.filter(&keep)?, keys))
}

/// A boolean predicate over `batch` as a mask: NULL, and a failed value, count
/// as false.
pub fn predicate_mask(
    predicate: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    failures: &mut Failures,
) -> Result<BooleanArray> {
    let value = evaluate(predicate, batch, failures)?;
    let mask = value
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| {
            SluiceError::sql(format!(
                "a condition must be a boolean, not {}",
                value.data_type()
            ))
        })?;
    Ok(crate::dataflow::message::null_as_false(mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{col, BinaryExpr};

    fn batch(a: &[i64], b: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(a.to_vec())),
                Arc::new(Int64Array::from(b.to_vec())),
            ],
        )
        .unwrap()
    }

    fn divide(b: &RecordBatch) -> Arc<dyn PhysicalExpr> {
        let schema = b.schema();
        Arc::new(BinaryExpr::new(
            col("a", &schema).unwrap(),
            BinOp::Divide,
            col("b", &schema).unwrap(),
        ))
    }

    #[test]
    fn failing_rows_become_null_and_are_listed() {
        let b = batch(&[10, 20, 30, 40, 50, 60, 70], &[2, 0, 3, 4, 0, 6, 0]);
        let mut failures = Vec::new();
        let out = evaluate(&divide(&b), &b, &mut failures).unwrap();
        let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
        let values: Vec<Option<i64>> = out.iter().collect();
        assert_eq!(
            values,
            vec![Some(5), None, Some(10), Some(10), None, Some(10), None]
        );
        let rows: Vec<usize> = failures.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![1, 4, 6]);
        assert!(
            failures[0].1.contains("Divide by zero"),
            "{}",
            failures[0].1
        );
    }

    #[test]
    fn a_clean_batch_reports_nothing() {
        let b = batch(&[10, 20], &[2, 5]);
        let mut failures = Vec::new();
        let out = evaluate(&divide(&b), &b, &mut failures).unwrap();
        assert_eq!(out.null_count(), 0);
        assert!(failures.is_empty());
    }
}
