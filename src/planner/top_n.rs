//! Planning Top-N: `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)` in a
//! subquery, limited by a filter on the row number above it. The window
//! function becomes a `TopN`, whose limit the filter sets.

use std::sync::Arc;

use arrow::compute::SortOptions;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator as BinOp, Window};
use datafusion::physical_expr::PhysicalSortExpr;

use super::checked::create_checked_expr;
use super::{df_error, unsupported, Partial, PendingRank};
use crate::error::{Result, SluiceError};
use crate::operators::top_n::{Ranking, TopN};

const TOP_N_HINT: &str = "SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (PARTITION BY k ORDER BY x DESC) AS rn FROM s) WHERE rn <= 3";

/// The window function of `window` over `partial`'s rows: a `TopN` whose limit
/// is not known yet.
pub(super) fn rank(state: &SessionState, window: &Window, partial: &mut Partial) -> Result<()> {
    if partial.changelog {
        return Err(unsupported(
            "ROW_NUMBER() over a TABLE",
            "rank the stream the table is built from",
        ));
    }
    let [expr] = window.window_expr.as_slice() else {
        return Err(unsupported(
            "several window functions in one SELECT",
            TOP_N_HINT,
        ));
    };
    let Expr::WindowFunction(function) = strip_alias(expr) else {
        return Err(SluiceError::Internal(format!(
            "unexpected window expression {expr}"
        )));
    };
    let name = function.fun.name().to_ascii_lowercase();
    if name != "row_number" {
        return Err(unsupported(
            &format!("the window function {}()", name.to_uppercase()),
            &format!("continuous queries rank with ROW_NUMBER() and a limit on it (Top-N): {TOP_N_HINT}; aggregate with GROUP BY"),
        ));
    }
    let params = &function.params;
    if params.order_by.is_empty() {
        return Err(
            SluiceError::sql("ROW_NUMBER() needs ORDER BY: it ranks rows by it")
                .with_hint(TOP_N_HINT),
        );
    }
    let input = window.input.schema();
    let physical = |e: &Expr| {
        create_checked_expr(e, input, state.execution_props(), &Default::default())
            .map_err(df_error)
    };
    let partition = params
        .partition_by
        .iter()
        .map(physical)
        .collect::<Result<Vec<_>>>()?;
    let order = params
        .order_by
        .iter()
        .map(|s| {
            Ok(PhysicalSortExpr {
                expr: physical(&s.expr)?,
                options: SortOptions {
                    descending: !s.asc,
                    nulls_first: s.nulls_first,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The result is keyed by the partition columns (and the rank when N > 1).
    let mut keys = Vec::with_capacity(params.partition_by.len() + 1);
    for e in &params.partition_by {
        match strip_alias(e) {
            Expr::Column(c) => keys.push(input.index_of_column(c).map_err(df_error)?),
            other => {
                return Err(unsupported(
                    &format!("PARTITION BY {other}"),
                    "partition by columns (compute the expression in a subquery first): the result is keyed by them",
                ))
            }
        }
    }
    let column = input.fields().len();
    keys.push(column);
    let ranking = Ranking {
        partition,
        order,
        input: Arc::new(input.as_arrow().clone()),
        output: Arc::new(window.schema.as_arrow().clone()),
    };
    let node = partial
        .flow
        .push(Box::new(TopN::new(ranking.clone(), usize::MAX)?));
    partial.schema = window.schema.clone();
    partial.windowed_aggregate = false;
    partial.window_end_key = None;
    partial.changelog = true;
    partial.required_keys = keys.len();
    partial.keys = keys;
    partial.time = None;
    partial.rank = Some(PendingRank {
        ranking,
        node,
        column: Some(column),
    });
    Ok(())
}

/// Takes the limit on the row number out of a filter's `predicate` into the
/// `TopN`; returns what is left of the predicate, if anything.
pub(super) fn limit_rank(
    partial: &mut Partial,
    rank: PendingRank,
    predicate: &Expr,
    schema: &DFSchema,
) -> Result<Option<Expr>> {
    let Some(column) = rank.column else {
        partial.rank = Some(rank);
        return Ok(Some(predicate.clone()));
    };
    let mut limit: Option<usize> = None;
    let mut rest = Vec::new();
    for c in split_conjunction(predicate) {
        match row_limit(c, schema, column) {
            Some(n) => limit = Some(limit.map_or(n, |l| l.min(n))),
            None => rest.push(c.clone()),
        }
    }
    let Some(n) = limit else {
        partial.rank = Some(rank);
        return Ok(Some(predicate.clone()));
    };
    if n == 0 {
        return Err(
            SluiceError::sql("the limit on ROW_NUMBER() keeps no row").with_hint(TOP_N_HINT)
        );
    }
    partial
        .flow
        .replace(rank.node, Box::new(TopN::new(rank.ranking, n)?));
    if n == 1 {
        // One row per partition: the partition key alone is the result's key.
        partial.keys.retain(|&k| k != column);
        partial.required_keys = partial.keys.len();
    }
    Ok(conjunction(rest))
}

/// `rn <= n`, `rn < n + 1`, `rn = 1` (either way round) on the row number column.
fn row_limit(e: &Expr, schema: &DFSchema, column: usize) -> Option<usize> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let is_rank = |e: &Expr| {
        let e = match e {
            Expr::Cast(c) => c.expr.as_ref(),
            Expr::TryCast(c) => c.expr.as_ref(),
            e => e,
        };
        matches!(e, Expr::Column(c) if schema.index_of_column(c).ok() == Some(column))
    };
    let (op, value) = if is_rank(left) {
        (*op, integer(right)?)
    } else if is_rank(right) {
        (op.swap()?, integer(left)?)
    } else {
        return None;
    };
    match op {
        BinOp::LtEq => usize::try_from(value).ok(),
        BinOp::Lt => usize::try_from(value.checked_sub(1)?).ok(),
        BinOp::Eq if value == 1 => Some(1),
        _ => None,
    }
}

fn integer(e: &Expr) -> Option<i64> {
    let e = match e {
        Expr::Cast(c) => c.expr.as_ref(),
        e => e,
    };
    let Expr::Literal(v, _) = e else {
        return None;
    };
    // `rn < 2.5` is not a whole number of rows: no limit is read from it.
    if !v.data_type().is_integer() {
        return None;
    }
    match v.cast_to(&arrow::datatypes::DataType::Int64).ok()? {
        ScalarValue::Int64(v) => v,
        _ => None,
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        e => e,
    }
}
