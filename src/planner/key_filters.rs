//! What a pull query's WHERE clause says about a table's primary key, so that
//! the table is read by key instead of copied and sorted whole.
//!
//! DataFusion hands a table provider the conjuncts of the WHERE clause it could
//! push down. Those that constrain a key column to literals — `k = 'a'`,
//! `k IN (1, 2)`, `k > 10`, `k BETWEEN 5 AND 9` — become a [`KeySelection`]. The
//! provider reports them as *inexact*: DataFusion still applies every filter to
//! what the scan returns, so a selection only has to be a superset of the
//! answer, never exact.

use std::ops::Bound;

use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// Key value combinations a point selection may enumerate.
const MAX_POINTS: usize = 4096;

/// The rows of a table a pull query needs read.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySelection {
    /// Every row.
    All,
    /// The rows of these keys: one value per key column, in key column order.
    Points(Vec<Vec<ScalarValue>>),
    /// The rows whose (single-column) key lies in a range.
    Range {
        lower: Bound<ScalarValue>,
        upper: Bound<ScalarValue>,
    },
}

/// A comparison of a key column with a literal, the column on the left.
enum Constraint {
    In(Vec<ScalarValue>),
    Lower(Bound<ScalarValue>),
    Upper(Bound<ScalarValue>),
}

fn column(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
        _ => None,
    }
}

/// `col op literal` or `literal op col` (the operator flipped), on `keys`.
fn comparison<'a>(b: &'a BinaryExpr, keys: &[&'a str]) -> Option<(&'a str, Constraint)> {
    let (col, value, op) = match (column(&b.left), literal(&b.right)) {
        (Some(c), Some(v)) => (c, v, b.op),
        _ => match (literal(&b.left), column(&b.right)) {
            (Some(v), Some(c)) => (c, v, b.op.swap()?),
            _ => return None,
        },
    };
    let name = keys.iter().copied().find(|k| *k == col.name)?;
    let constraint = match op {
        Operator::Eq => Constraint::In(vec![value]),
        Operator::Gt => Constraint::Lower(Bound::Excluded(value)),
        Operator::GtEq => Constraint::Lower(Bound::Included(value)),
        Operator::Lt => Constraint::Upper(Bound::Excluded(value)),
        Operator::LtEq => Constraint::Upper(Bound::Included(value)),
        _ => return None,
    };
    Some((name, constraint))
}

/// The constraints one pushed-down filter puts on key columns.
fn constraints<'a>(filter: &'a Expr, keys: &[&'a str]) -> Vec<(&'a str, Constraint)> {
    match filter {
        Expr::BinaryExpr(b) if b.op == Operator::And => {
            let mut out = constraints(&b.left, keys);
            out.extend(constraints(&b.right, keys));
            out
        }
        Expr::BinaryExpr(b) => comparison(b, keys).into_iter().collect(),
        Expr::InList(list) if !list.negated => {
            let Some(name) =
                column(&list.expr).and_then(|c| keys.iter().copied().find(|k| *k == c.name))
            else {
                return Vec::new();
            };
            let values: Option<Vec<ScalarValue>> = list.list.iter().map(literal).collect();
            values
                .map(|v| vec![(name, Constraint::In(v))])
                .unwrap_or_default()
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            let name = column(expr).and_then(|c| keys.iter().copied().find(|k| *k == c.name));
            match (name, literal(low), literal(high)) {
                (Some(name), Some(low), Some(high)) => vec![
                    (name, Constraint::Lower(Bound::Included(low))),
                    (name, Constraint::Upper(Bound::Included(high))),
                ],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// Whether `filter` says something about the key that [`select`] uses.
pub fn constrains_key(filter: &Expr, keys: &[&str]) -> bool {
    !constraints(filter, keys).is_empty()
}

/// The rows of a table keyed by `keys` that `filters` (all of which hold for
/// every answer row) leave to read.
pub fn select(filters: &[Expr], keys: &[&str]) -> KeySelection {
    if keys.is_empty() {
        return KeySelection::All;
    }
    let mut points: Vec<Option<Vec<ScalarValue>>> = vec![None; keys.len()];
    let (mut lower, mut upper) = (Bound::Unbounded, Bound::Unbounded);
    for filter in filters {
        for (name, constraint) in constraints(filter, keys) {
            let i = keys.iter().position(|k| *k == name).unwrap_or(0);
            match constraint {
                // Several IN lists on one column: any of them is a superset.
                Constraint::In(values) => {
                    let slot = &mut points[i];
                    if slot.as_ref().is_none_or(|s| values.len() < s.len()) {
                        *slot = Some(values);
                    }
                }
                // One bound of each kind is enough for a superset.
                Constraint::Lower(b) if keys.len() == 1 => lower = b,
                Constraint::Upper(b) if keys.len() == 1 => upper = b,
                _ => {}
            }
        }
    }
    if points.iter().all(Option::is_some) {
        let columns: Vec<Vec<ScalarValue>> = points.into_iter().flatten().collect();
        let combinations = columns
            .iter()
            .try_fold(1usize, |n, c| n.checked_mul(c.len()));
        if combinations.is_some_and(|n| n <= MAX_POINTS) {
            return KeySelection::Points(cartesian(&columns));
        }
    }
    if !matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
        return KeySelection::Range { lower, upper };
    }
    KeySelection::All
}

/// Every combination of one value per column.
fn cartesian(columns: &[Vec<ScalarValue>]) -> Vec<Vec<ScalarValue>> {
    let mut out: Vec<Vec<ScalarValue>> = vec![Vec::new()];
    for values in columns {
        out = out
            .iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut row = prefix.clone();
                    row.push(v.clone());
                    row
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn equalities_and_in_lists_on_every_key_column_are_points() {
        let keys = ["k"];
        assert_eq!(
            select(&[col("k").eq(lit("a"))], &keys),
            KeySelection::Points(vec![vec![ScalarValue::from("a")]])
        );
        assert_eq!(
            select(&[lit(3i64).eq(col("k"))], &keys),
            KeySelection::Points(vec![vec![ScalarValue::from(3i64)]])
        );
        assert_eq!(
            select(
                &[col("k").in_list(vec![lit(1i64), lit(2i64)], false)],
                &keys
            ),
            KeySelection::Points(vec![
                vec![ScalarValue::from(1i64)],
                vec![ScalarValue::from(2i64)]
            ])
        );
        let two = ["a", "b"];
        let filters = [
            col("a").eq(lit(1i64)),
            col("b").in_list(vec![lit("x"), lit("y")], false),
        ];
        assert_eq!(
            select(&filters, &two),
            KeySelection::Points(vec![
                vec![ScalarValue::from(1i64), ScalarValue::from("x")],
                vec![ScalarValue::from(1i64), ScalarValue::from("y")],
            ])
        );
        // One key column unconstrained: every row.
        assert_eq!(select(&filters[..1], &two), KeySelection::All);
    }

    #[test]
    fn comparisons_on_a_single_column_key_are_ranges() {
        let keys = ["k"];
        assert_eq!(
            select(&[col("k").gt(lit(5i64)), col("k").lt_eq(lit(9i64))], &keys),
            KeySelection::Range {
                lower: Bound::Excluded(ScalarValue::from(5i64)),
                upper: Bound::Included(ScalarValue::from(9i64)),
            }
        );
        assert_eq!(
            select(&[lit(5i64).lt(col("k"))], &keys),
            KeySelection::Range {
                lower: Bound::Excluded(ScalarValue::from(5i64)),
                upper: Bound::Unbounded,
            }
        );
        assert_eq!(
            select(&[col("k").between(lit(1i64), lit(4i64))], &keys),
            KeySelection::Range {
                lower: Bound::Included(ScalarValue::from(1i64)),
                upper: Bound::Included(ScalarValue::from(4i64)),
            }
        );
    }

    #[test]
    fn anything_else_reads_every_row() {
        let keys = ["k"];
        for filter in [
            col("v").eq(lit(1i64)),
            col("k").not_eq(lit(1i64)),
            col("k").in_list(vec![lit(1i64)], true),
            col("k").eq(col("v")),
            col("k").eq(lit(ScalarValue::Int64(None))),
            col("k").eq(lit(1i64)).or(col("k").eq(lit(2i64))),
        ] {
            assert_eq!(
                select(std::slice::from_ref(&filter), &keys),
                KeySelection::All,
                "{filter}"
            );
        }
        assert_eq!(select(&[col("k").eq(lit(1i64))], &[]), KeySelection::All);
    }
}
