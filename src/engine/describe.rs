//! Describe a statement without running it (the extended protocol's Describe).

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{Engine, Session};
use crate::error::Result;
use crate::planner;
use crate::sql::{parser::parse_one, Statement};

pub(super) async fn describe_statement(
    engine: &Engine,
    _session: &Session,
    sql: &str,
) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
    let parsed = parse_one(sql)?;
    match parsed.statement {
        Statement::Select {
            query, emit: None, ..
        } => {
            planner::check_relations(&engine.catalog.read(), &query)?;
            let state = engine.session_state();
            let statement = datafusion::sql::parser::Statement::Statement(Box::new(
                sqlparser::ast::Statement::Query(query),
            ));
            let plan = state
                .statement_to_plan(statement)
                .await
                .map_err(planner::df_error)?;
            let params = plan.get_parameter_types().map_err(planner::df_error)?;
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
        Statement::InsertValues { rows, .. } => {
            // Count placeholders so drivers can bind them; their types are unknown.
            let mut max = 0usize;
            for row in &rows {
                for e in row {
                    let _ = sqlparser::ast::visit_expressions(e, |e| {
                        if let sqlparser::ast::Expr::Value(v) = e {
                            if let sqlparser::ast::Value::Placeholder(p) = &v.value {
                                if let Ok(i) = p.trim_start_matches('$').parse::<usize>() {
                                    max = max.max(i);
                                }
                            }
                        }
                        std::ops::ControlFlow::<()>::Continue(())
                    });
                }
            }
            Ok((vec![None; max], None))
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
        _ => Ok((vec![], None)),
    }
}
