//! Describe a statement without running it (the extended protocol's Describe).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};

use super::{Engine, Session};
use crate::error::Result;
use crate::planner;
use crate::sql::{parser::parse_one, Statement};

/// Parameter types DataFusion's inference leaves open (it types placeholders
/// in comparisons, IN lists and BETWEEN only): a placeholder under a CAST
/// takes the cast's type (`$1::text[]`), and `x = ANY($1)` (planned as
/// `array_has($1, x)`) makes `$1` a list of `x`'s type, as Postgres infers.
fn placeholder_types_beyond_datafusion(plan: &LogicalPlan) -> Vec<(String, DataType)> {
    let mut found = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        let inputs = node.inputs();
        let _ = node.apply_expressions(|e| {
            e.apply(|e| {
                match e {
                    Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                        if let Expr::Placeholder(p) = expr.as_ref() {
                            found.push((p.id.clone(), field.data_type().clone()));
                        }
                    }
                    Expr::ScalarFunction(f) if f.name() == "array_has" => {
                        if let [Expr::Placeholder(p), needle] = f.args.as_slice() {
                            let element = inputs
                                .iter()
                                .find_map(|i| needle.get_type(i.schema().as_ref()).ok());
                            if let Some(t) = element {
                                found.push((
                                    p.id.clone(),
                                    DataType::List(Arc::new(Field::new_list_field(t, true))),
                                ));
                            }
                        }
                    }
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// `n` of a `$n` placeholder.
fn placeholder_index(e: &sqlparser::ast::Expr) -> Option<usize> {
    match e {
        sqlparser::ast::Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::Placeholder(p) => p
                .trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .filter(|i| *i > 0),
            _ => None,
        },
        _ => None,
    }
}

pub(super) async fn describe_statement(
    engine: &Engine,
    session: &Session,
    sql: &str,
) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
    let parsed = parse_one(sql)?;
    match parsed.statement {
        Statement::Select {
            query, emit: None, ..
        } => {
            let (plan, _) = engine.pull_plan(&query).await?;
            let mut params = plan.get_parameter_types().map_err(planner::df_error)?;
            for (id, t) in placeholder_types_beyond_datafusion(&plan) {
                if let Some(slot @ None) = params.get_mut(&id) {
                    *slot = Some(t);
                }
            }
            let mut ordered: Vec<(usize, Option<DataType>)> = params
                .into_iter()
                .filter_map(|(name, t)| {
                    name.trim_start_matches('$')
                        .parse::<usize>()
                        .ok()
                        .map(|i| (i, t))
                })
                .collect();
            ordered.sort_by_key(|(i, _)| *i);
            let n = ordered.last().map(|(i, _)| *i).unwrap_or(0);
            let mut types = vec![None; n];
            for (i, t) in ordered {
                types[i - 1] = t;
            }
            let schema: SchemaRef =
                Arc::new(Schema::new(plan.schema().as_arrow().fields().clone()));
            Ok((types, Some(schema)))
        }
        Statement::Select {
            query,
            emit: Some(emit),
            window,
            ..
        } => {
            let catalog = engine.catalog.read().clone();
            let plan = planner::plan_continuous(
                &engine.session_state(),
                &catalog,
                &query,
                window.as_ref(),
                Some(emit),
                true,
            )
            .await?;
            Ok((vec![], Some(plan.schema)))
        }
        Statement::InsertValues {
            target,
            columns,
            rows,
        } => {
            // A placeholder that is a whole value takes its column's type (what
            // asyncpg and JDBC encode by); one inside an expression is unknown.
            let (relation, targets) = engine.insert_targets(&target, &columns)?;
            let schema = relation.schema();
            let mut types: Vec<Option<DataType>> = Vec::new();
            for row in &rows {
                for (position, e) in row.iter().enumerate() {
                    // Every placeholder counts, so drivers bind them all.
                    let _ = sqlparser::ast::visit_expressions(e, |inner| {
                        if let Some(i) = placeholder_index(inner) {
                            if types.len() < i {
                                types.resize(i, None);
                            }
                        }
                        std::ops::ControlFlow::<()>::Continue(())
                    });
                    if let (Some(i), Some(&column)) = (placeholder_index(e), targets.get(position))
                    {
                        types[i - 1]
                            .get_or_insert_with(|| schema.field(column).data_type().clone());
                    }
                }
            }
            Ok((types, None))
        }
        Statement::Show(_) | Statement::Describe { .. } | Statement::Explain(_) => {
            // Run it: these are cheap and their schema is their result's.
            let mut session = Session::new();
            let mut results = engine.execute(&mut session, sql).await;
            match results.pop() {
                Some(Ok(super::StatementResult::Rows { schema, .. })) => Ok((vec![], Some(schema))),
                Some(Err(e)) => Err(e),
                _ => Ok((vec![], None)),
            }
        }
        Statement::Fetch { name, .. } => Ok((vec![], session.cursors.schema(&name))),
        _ => Ok((vec![], None)),
    }
}
