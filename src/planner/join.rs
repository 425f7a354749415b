//! Planning joins. A stream joined with a TABLE looks the table up
//! (`LookupJoin`); two streams join within a time bound (`IntervalJoin`); two
//! tables join as changelogs with retractions (`ChangelogJoin`). The two inputs
//! of a stream-stream or table-table join become two inputs of the query's
//! dataflow.

use std::sync::Arc;

use super::checked::create_checked_expr;
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Join, JoinType, LogicalPlan, Operator as BinOp,
};

use super::window::Windows;
use super::{df_error, translate, unsupported, Partial, PendingWindow, TimeColumn};
use crate::catalog::Catalog;
use crate::dataflow::Dataflow;
use crate::error::{Result, SluiceError};
use crate::operators::changelog_join::TableInput;
use crate::operators::interval_join::{Interval, JoinKind};
use crate::operators::join_rows::JoinKeys;
use crate::operators::lookup_join::LookupTable;
use crate::operators::{ChangelogJoin, Filter, IntervalJoin, LookupJoin, Operator};

const INTERVAL_HINT: &str = "bound a stream-stream join in event time: JOIN r WITHIN 1 HOUR ON l.id = r.id, \
or ON l.id = r.id AND r.ts BETWEEN l.ts - INTERVAL '1' HOUR AND l.ts + INTERVAL '1' HOUR (ts being each stream's timestamp column)";

/// Plans `join`, and `where_clause` over it (a `WHERE` directly above): an
/// inner stream-stream join takes it into its condition, where a time bound in
/// it counts; other joins filter their results.
pub(super) fn translate_join(
    state: &SessionState,
    catalog: &Catalog,
    join: &Join,
    allow_limit: bool,
    windows: &Windows,
    where_clause: Option<&Expr>,
) -> Result<Partial> {
    let mut left = translate(state, catalog, &join.left, allow_limit, windows)?;
    left.windows_as_stream();
    left.check_ranked()?;
    let right_is_table = scanned_table(&join.right)
        .and_then(|n| catalog.relation(&n))
        .is_some_and(|r| r.is_table());
    let mut partial = if !left.changelog && right_is_table {
        let right = translate(state, catalog, &join.right, allow_limit, windows)?;
        translate_lookup_join(state, catalog, join, left, right)?
    } else {
        let mut right = translate(state, catalog, &join.right, allow_limit, windows)?;
        right.windows_as_stream();
        right.check_ranked()?;
        match (left.changelog, right.changelog) {
            (false, false) => {
                let inner = join.join_type == JoinType::Inner;
                let extra = where_clause.filter(|_| inner);
                let partial = interval_join(state, join, left, right, extra)?;
                if extra.is_some() {
                    return Ok(partial);
                }
                partial
            }
            (true, true) => table_join(state, join, left, right)?,
            (true, false) => {
                return Err(unsupported(
                    "a join with a TABLE on the left and a STREAM on the right",
                    "put the stream first: FROM stream [LEFT] JOIN table ON ...",
                ))
            }
            (false, true) => {
                return Err(unsupported(
                    "a stream joined with a subquery over a TABLE",
                    "join the stream with the TABLE itself (FROM stream JOIN table ON stream.col = table.<primary key>); create the table first with CREATE TABLE ... AS SELECT",
                ))
            }
        }
    };
    if let Some(predicate) = where_clause {
        let predicate = create_checked_expr(
            predicate,
            &join.schema,
            state.execution_props(),
            &Default::default(),
        )
        .map_err(df_error)?;
        partial
            .flow
            .push(Box::new(Filter::new(predicate, partial.changelog)));
    }
    Ok(partial)
}

fn join_kind(join: &Join) -> Result<JoinKind> {
    Ok(match join.join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        JoinType::Right => JoinKind::Right,
        JoinType::Full => JoinKind::Full,
        other => {
            return Err(unsupported(
                &format!("a {other} join"),
                "use JOIN, LEFT JOIN, RIGHT JOIN or FULL OUTER JOIN",
            ))
        }
    })
}

/// One flow from two: `left`'s inputs first, then `right`'s, into `op`.
fn merge(left: Partial, right: Partial, op: Box<dyn Operator>, join: &Join) -> Partial {
    Partial {
        sources: left.sources.into_iter().chain(right.sources).collect(),
        flow: Dataflow::join(left.flow, right.flow, op),
        schema: join.schema.clone(),
        changelog: false,
        keys: Vec::new(),
        required_keys: 0,
        limit: None,
        windowed_aggregate: false,
        window_end_key: None,
        lookups: left.lookups.into_iter().chain(right.lookups).collect(),
        // The right side's nodes are renumbered: its WindowAssign is not found again.
        window: left.window.or(right.window.map(|w| PendingWindow {
            assign_at: None,
            ..w
        })),
        time: None,
        final_windows: None,
        rank: None,
    }
}

/// `l [LEFT|RIGHT|FULL] JOIN r WITHIN ... ON l.k = r.k` or with a BETWEEN bound
/// on the two streams' timestamp columns.
fn interval_join(
    state: &SessionState,
    join: &Join,
    left: Partial,
    right: Partial,
    where_clause: Option<&Expr>,
) -> Result<Partial> {
    let kind = join_kind(join)?;
    if join.on.is_empty() {
        return Err(SluiceError::sql(
            "a stream-stream join needs an equality between the two streams (the join key)",
        )
        .with_hint(INTERVAL_HINT));
    }
    let mut within = None;
    let mut rest = Vec::new();
    for condition in join.filter.iter().chain(where_clause) {
        for c in split_conjunction(condition) {
            match within_marker(c)? {
                Some(w) => within = Some(w),
                None => rest.push(c.clone()),
            }
        }
    }
    let interval = match within {
        Some((before, after, grace)) => Interval {
            lower: -before,
            upper: after,
            grace,
        },
        None => {
            let bounds = time_bounds(join, left.time, right.time, &rest);
            // Without both bounds an inner join is Flink's and RisingWave's
            // regular join: rows stay until the one bound there is frees them,
            // or forever. An outer join would have to retract its padded rows,
            // which an append-only result cannot.
            if kind != JoinKind::Inner && bounds.is_unbounded() {
                return Err(SluiceError::sql(
                    "an outer stream-stream join needs a time bound on both sides of the left row's time",
                )
                .with_hint(INTERVAL_HINT));
            }
            bounds
        }
    };
    let props = state.execution_props();
    let filter = conjunction(rest)
        .map(|f| {
            create_checked_expr(&f, &join.schema, props, &Default::default()).map_err(df_error)
        })
        .transpose()?;
    let keys = join_keys(state, join)?;
    let op = IntervalJoin::new(
        kind,
        keys,
        interval,
        filter,
        Arc::new(join.left.schema().as_arrow().clone()),
        Arc::new(join.right.schema().as_arrow().clone()),
        Arc::new(join.schema.as_arrow().clone()),
    )?;
    Ok(merge(left, right, Box::new(op), join))
}

/// `t1 [LEFT|RIGHT|FULL] JOIN t2 ON t1.a = t2.b`: both sides are changelogs; the
/// result is a table kept up to date with retractions.
fn table_join(state: &SessionState, join: &Join, left: Partial, right: Partial) -> Result<Partial> {
    let kind = join_kind(join)?;
    for (p, side) in [(&left, "left"), (&right, "right")] {
        if p.keys.len() < p.required_keys {
            return Err(SluiceError::sql(format!(
                "the {side} side of a table-table join must keep its table's PRIMARY KEY columns"
            ))
            .with_hint("select the key columns in the subquery, or join the tables directly"));
        }
    }
    if join.on.is_empty() {
        return Err(SluiceError::sql(
            "a table-table join needs an equality between the two tables",
        )
        .with_hint("JOIN t2 ON t1.col = t2.col"));
    }
    if join.filter.is_some() {
        return Err(unsupported(
            "a table-table join condition other than equalities",
            "join on equal columns, and filter the result with WHERE or in a query over the joined table",
        ));
    }
    let on_keys = join_keys(state, join)?;
    // The result's key: when every left row meets at most one right row (the join
    // covers the right table's key: a primary-key or foreign-key join) and left
    // rows are never padded away, the left key; symmetrically the right key;
    // otherwise both, which a FULL join pads with NULLs on one side.
    let covers = |on: &mut dyn Iterator<Item = &Expr>, plan: &LogicalPlan, keys: &[usize]| {
        let columns: Vec<usize> = on
            .filter_map(|e| match e {
                Expr::Column(c) => plan.schema().index_of_column(c).ok(),
                _ => None,
            })
            .collect();
        keys.iter().all(|k| columns.contains(k))
    };
    let left_width = join.left.schema().fields().len();
    let right_key: Vec<usize> = right.keys.iter().map(|k| k + left_width).collect();
    let keys = if covers(
        &mut join.on.iter().map(|(_, r)| r),
        &join.right,
        &right.keys,
    ) && matches!(kind, JoinKind::Inner | JoinKind::Left)
    {
        left.keys.clone()
    } else if covers(&mut join.on.iter().map(|(l, _)| l), &join.left, &left.keys)
        && matches!(kind, JoinKind::Inner | JoinKind::Right)
    {
        right_key
    } else {
        left.keys.iter().copied().chain(right_key).collect()
    };
    let op = ChangelogJoin::new(
        kind,
        on_keys,
        TableInput {
            schema: Arc::new(join.left.schema().as_arrow().clone()),
            primary_key: left.keys.clone(),
        },
        TableInput {
            schema: Arc::new(join.right.schema().as_arrow().clone()),
            primary_key: right.keys.clone(),
        },
        Arc::new(join.schema.as_arrow().clone()),
    )?;
    let mut partial = merge(left, right, Box::new(op), join);
    partial.changelog = true;
    partial.required_keys = keys.len();
    partial.keys = keys;
    Ok(partial)
}

/// The equi-join key pairs of `ON` as physical expressions over each side.
fn join_keys(state: &SessionState, join: &Join) -> Result<JoinKeys> {
    let props = state.execution_props();
    let physical = |e: &Expr, plan: &LogicalPlan| {
        create_checked_expr(e, plan.schema(), props, &Default::default()).map_err(df_error)
    };
    let (mut left, mut right, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for (l, r) in &join.on {
        types.push(l.get_type(join.left.schema()).map_err(df_error)?);
        left.push(physical(l, &join.left)?);
        right.push(physical(r, &join.right)?);
    }
    JoinKeys::new(left, right, types)
}

/// `__sluice_within(before, after, grace)` (see sql/within.rs).
fn within_marker(e: &Expr) -> Result<Option<(i64, i64, i64)>> {
    let Expr::ScalarFunction(f) = e else {
        return Ok(None);
    };
    if f.name() != crate::functions::within::NAME {
        return Ok(None);
    }
    let values: Option<Vec<i64>> = f
        .args
        .iter()
        .map(|a| match a {
            Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v),
            Expr::Cast(c) => match c.expr.as_ref() {
                Expr::Literal(v, _) => v
                    .clone()
                    .cast_to(&arrow::datatypes::DataType::Int64)
                    .ok()
                    .and_then(|v| match v {
                        ScalarValue::Int64(v) => v,
                        _ => None,
                    }),
                _ => None,
            },
            _ => None,
        })
        .collect();
    match values.as_deref() {
        Some(&[before, after, grace]) => Ok(Some((before, after, grace))),
        _ => Err(SluiceError::Internal(format!(
            "malformed WITHIN marker {e}"
        ))),
    }
}

/// Bounds on `right time - left time` from comparisons of the two sides'
/// event-time columns (`r.ts BETWEEN l.ts - INTERVAL '1' HOUR AND l.ts`,
/// `r.ts >= l.ts`, equal window ends, ...). The comparisons stay in the join
/// condition, which is evaluated exactly; the bounds decide how long rows are
/// kept. A bound not found is infinite.
fn time_bounds(
    join: &Join,
    left_time: Option<TimeColumn>,
    right_time: Option<TimeColumn>,
    conjuncts: &[Expr],
) -> Interval {
    // (is the right side, event time = value - offset)
    let side_of = |c: &Column| -> Option<(bool, i64)> {
        let at = |plan: &LogicalPlan, time: Option<TimeColumn>| {
            time.filter(|t| plan.schema().index_of_column(c).ok() == Some(t.index))
        };
        at(&join.left, left_time)
            .map(|t| (false, t.offset))
            .or_else(|| at(&join.right, right_time).map(|t| (true, t.offset)))
    };
    let (mut lower, mut upper) = (i64::MIN, i64::MAX);
    let mut comparisons: Vec<(Expr, BinOp, Expr)> = join
        .on
        .iter()
        .map(|(l, r)| (l.clone(), BinOp::Eq, r.clone()))
        .collect();
    for c in conjuncts {
        match c {
            Expr::Between(b) if !b.negated => {
                comparisons.push((b.expr.as_ref().clone(), BinOp::GtEq, b.low.as_ref().clone()));
                comparisons.push((
                    b.expr.as_ref().clone(),
                    BinOp::LtEq,
                    b.high.as_ref().clone(),
                ));
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                comparisons.push((left.as_ref().clone(), *op, right.as_ref().clone()))
            }
            _ => {}
        }
    }
    for (a, op, b) in comparisons {
        let (Some((ca, oa)), Some((cb, ob))) = (time_term(&a), time_term(&b)) else {
            continue;
        };
        // a + oa  op  b + ob with a = (its row's time) + da: a bound on d = rt - lt.
        let (op, value) = match (side_of(&ca), side_of(&cb)) {
            (Some((true, da)), Some((false, db))) => (
                op,
                ob.saturating_add(db).saturating_sub(oa.saturating_add(da)),
            ),
            (Some((false, da)), Some((true, db))) => match op.swap() {
                Some(swapped) => (
                    swapped,
                    oa.saturating_add(da).saturating_sub(ob.saturating_add(db)),
                ),
                None => continue,
            },
            _ => continue,
        };
        match op {
            BinOp::GtEq | BinOp::Gt => lower = lower.max(value),
            BinOp::LtEq | BinOp::Lt => upper = upper.min(value),
            BinOp::Eq => {
                lower = lower.max(value);
                upper = upper.min(value);
            }
            _ => {}
        }
    }
    Interval {
        lower,
        upper,
        grace: 0,
    }
}

/// `col`, `col + interval` or `col - interval` → (col, offset in ms).
fn time_term(e: &Expr) -> Option<(Column, i64)> {
    match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        // Coercion to a common timestamp type keeps every millisecond; a cast
        // to DATE or seconds would make equal values of different times.
        Expr::Cast(c) if keeps_milliseconds(c.field.data_type()) => time_term(&c.expr),
        Expr::TryCast(c) if keeps_milliseconds(c.field.data_type()) => time_term(&c.expr),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (c, o) = time_term(left)?;
            let ms = interval_ms(right)?;
            match op {
                BinOp::Plus => Some((c, o.checked_add(ms)?)),
                BinOp::Minus => Some((c, o.checked_sub(ms)?)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn keeps_milliseconds(t: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::{DataType, TimeUnit};
    matches!(
        t,
        DataType::Timestamp(
            TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Nanosecond,
            _
        )
    )
}

fn interval_ms(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match v {
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
        // A BIGINT event-time column holds epoch milliseconds.
        ScalarValue::Int64(Some(v)) => Some(*v),
        ScalarValue::Int32(Some(v)) => Some(i64::from(*v)),
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1000),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(v / 1000),
        ScalarValue::DurationNanosecond(Some(v)) => Some(v / 1_000_000),
        _ => None,
    }
}

/// The table a join's right side scans (`t` or `t AS alias`).
fn scanned_table(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::TableScan(scan) if scan.filters.is_empty() => {
            Some(scan.table_name.table().to_string())
        }
        LogicalPlan::SubqueryAlias(a) => scanned_table(&a.input),
        _ => None,
    }
}

/// `stream [LEFT] JOIN table ON <stream exprs> = <table key columns>`: each event
/// looks up the table's current row in the join's own copy of the table, which
/// `right` (the table's changelog) keeps up to date.
fn translate_lookup_join(
    state: &SessionState,
    catalog: &Catalog,
    join: &datafusion::logical_expr::Join,
    partial: Partial,
    right: Partial,
) -> Result<Partial> {
    use datafusion::logical_expr::JoinType;
    const SHAPE: &str = "FROM stream [LEFT] JOIN table ON stream.col = table.<primary key>";
    if partial.changelog {
        return Err(unsupported(
            "a join with a TABLE on the left",
            &format!("put the stream first: {SHAPE}; table-table joins are planned"),
        ));
    }
    let Some(table_name) = scanned_table(&join.right) else {
        return Err(unsupported(
            "a join whose right side is not a table",
            &format!(
                "stream-table joins look up a TABLE: {SHAPE}; stream-stream joins are planned"
            ),
        ));
    };
    let relation = catalog
        .relation(&table_name)
        .ok_or_else(|| SluiceError::Internal(format!("relation {table_name} vanished")))?;
    if !relation.is_table() {
        return Err(unsupported(
            "a stream-stream join",
            &format!("the right side must be a TABLE: {SHAPE}; stream-stream (interval) joins are planned"),
        ));
    }
    let keep_unmatched = match join.join_type {
        JoinType::Inner => false,
        JoinType::Left => true,
        other => {
            return Err(unsupported(
                &format!("a {other} stream-table join"),
                "use JOIN or LEFT JOIN: an event finds the table row for its key or not",
            ))
        }
    };
    if join.filter.is_some() {
        return Err(unsupported(
            "a join condition other than equality with the table's key",
            &format!("join on the key ({SHAPE}) and filter with WHERE"),
        ));
    }
    // One stream expression per table key column, in key order.
    let key_names: Vec<String> = relation
        .key_indices()
        .iter()
        .map(|&i| relation.columns[i].name.clone())
        .collect();
    let mut by_key: Vec<Option<&Expr>> = vec![None; key_names.len()];
    for (l, r) in &join.on {
        // Type coercion may have cast the table's side; the lookup casts the
        // stream's values to the key's type itself.
        let column = match r {
            Expr::Cast(c) => c.expr.as_ref(),
            Expr::TryCast(c) => c.expr.as_ref(),
            other => other,
        };
        let pos = match column {
            Expr::Column(c) => key_names.iter().position(|k| *k == c.name),
            _ => None,
        };
        match pos {
            Some(p) => by_key[p] = Some(l),
            None => {
                return Err(SluiceError::sql(format!(
                    "a stream-table join must match the table's PRIMARY KEY ({}); '{r}' is not a key column of {table_name}",
                    key_names.join(", ")
                ))
                .with_hint("re-key the table with CREATE TABLE ... AS SELECT ... GROUP BY the join column"))
            }
        }
    }
    let left_schema = join.left.schema();
    let mut key_exprs = Vec::with_capacity(by_key.len());
    for (i, e) in by_key.into_iter().enumerate() {
        let e = e.ok_or_else(|| {
            SluiceError::sql(format!(
                "the join does not give a value for {table_name}'s key column '{}'",
                key_names[i]
            ))
            .with_hint(SHAPE)
        })?;
        key_exprs.push(
            create_checked_expr(e, left_schema, state.execution_props(), &Default::default())
                .map_err(df_error)?,
        );
    }
    // The table's key columns within the right side's rows.
    let right_schema = join.right.schema();
    let key_columns = key_names
        .iter()
        .map(|k| {
            right_schema
                .fields()
                .iter()
                .position(|f| f.name() == k)
                .ok_or_else(|| {
                    SluiceError::Internal(format!("key column {k} of {table_name} is not scanned"))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let op = LookupJoin::new(
        key_exprs,
        LookupTable {
            name: table_name.clone(),
            schema: Arc::new(right_schema.as_arrow().clone()),
            key_columns,
        },
        keep_unmatched,
        Arc::new(join.schema.as_arrow().clone()),
    )?;
    // Rows come from the stream: everything known about the stream's columns
    // (key, event time, a pending window: its nodes keep their numbers, the
    // left side's come first) still holds after the table's columns are added.
    let mut joined = partial;
    let flow = std::mem::replace(&mut joined.flow, Dataflow::input());
    joined.flow = Dataflow::join(flow, right.flow, Box::new(op));
    joined.sources.extend(right.sources);
    joined.lookups.extend(right.lookups);
    joined.lookups.push(table_name);
    joined.schema = join.schema.clone();
    Ok(joined)
}
