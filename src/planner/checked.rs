//! Physical expressions for continuous queries, with integer arithmetic that
//! reports overflow instead of wrapping. DataFusion's `+`, `-` and `*` wrap by
//! default (`i64::MAX + 1` is `i64::MIN`): a wrong value that nothing flags.
//! Checked, an overflow is a row error like a division by zero: the value
//! becomes NULL and is counted and dead-lettered (see `operators/evaluate.rs`),
//! or stops the query under `on_error = 'fail'`, as Postgres and RisingWave
//! refuse it.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, Operator};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr::PhysicalExpr;

/// `create_physical_expr` with checked `+`, `-` and `*`.
pub fn create_checked_expr(
    e: &Expr,
    schema: &DFSchema,
    props: &ExecutionProps,
    planning: &PhysicalPlanningContext,
) -> Result<Arc<dyn PhysicalExpr>> {
    checked(create_physical_expr(e, schema, props, planning)?)
}

/// `expr` with every `+`, `-` and `*` in it failing on overflow.
pub fn checked(expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|e| {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        if !matches!(
            b.op(),
            Operator::Plus | Operator::Minus | Operator::Multiply
        ) {
            return Ok(Transformed::no(e));
        }
        let checked = BinaryExpr::new(Arc::clone(b.left()), *b.op(), Arc::clone(b.right()))
            .with_fail_on_overflow(true);
        Ok(Transformed::yes(Arc::new(checked) as Arc<dyn PhysicalExpr>))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn integer_overflow_is_an_error_not_a_wrapped_value() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, i64::MAX]))])
                .unwrap();
        let props = ExecutionProps::new();
        let planning = PhysicalPlanningContext::default();
        for e in [
            col("a") + lit(1i64),
            col("a") * lit(2i64),
            lit(0i64) - col("a") - lit(2i64),
        ] {
            let expr = create_checked_expr(&e, &df_schema, &props, &planning).unwrap();
            assert!(expr.evaluate(&batch).is_err(), "{e} must fail on i64::MAX");
            let first = expr
                .evaluate(&batch.slice(0, 1))
                .unwrap()
                .into_array(1)
                .unwrap();
            assert!(!first.is_null(0), "{e} on 1 is a value");
        }
    }
}
