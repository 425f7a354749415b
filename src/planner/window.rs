//! Planning windowed queries.
//!
//! Both window syntaxes end up the same way: the windowed source gains two
//! timestamp columns (`windowstart`/`windowend` for ksqlDB's `WINDOW` clause,
//! `window_start`/`window_end` for the table-valued functions), so DataFusion
//! plans and type-checks GROUP BY, SELECT and WHERE over them like any column.
//! At run time `WindowAssign` fills them in, right after the source.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider,
};
use datafusion::catalog::{CatalogProviderList, SchemaProvider};
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query,
    SelectItem, SetExpr, TableFactor,
};

use super::normalize_ident;
use crate::catalog::Catalog;
use crate::error::{Result, SluiceError, SqlPosition};
use crate::sql::duration::interval_ms;
use crate::sql::window::{check_cumulate, check_hop};
use crate::sql::{EmitMode, WindowClause, WindowKind, WindowSyntax};

/// The window of a continuous query and the relation it applies to.
#[derive(Debug, Clone)]
pub struct WindowContext {
    pub source: String,
    pub clause: WindowClause,
    pub emit_final: bool,
}

fn first_from(query: &mut Query) -> Option<&mut TableFactor> {
    match query.body.as_mut() {
        SetExpr::Select(select) => select.from.first_mut().map(|t| &mut t.relation),
        _ => None,
    }
}

fn tvf_error(message: impl Into<String>, at: Option<SqlPosition>) -> SluiceError {
    SluiceError::sql_at(
        message,
        at,
        Some(
            "TUMBLE(src, ts, INTERVAL '1' MINUTE), HOP(src, ts, slide, size), SESSION(src, ts, gap), \
             CUMULATE(src, ts, step, max size)"
                .into(),
        ),
    )
}

/// Rewrites `FROM TUMBLE(src, ts, INTERVAL ...)` (and HOP, SESSION, CUMULATE) to
/// `FROM src` and returns the window it described.
pub fn extract_tvf(query: &mut Query) -> Result<Option<WindowClause>> {
    let Some(TableFactor::Table { name, args, .. }) = first_from(query) else {
        return Ok(None);
    };
    let Some(fn_ident) = name.0.last().and_then(|p| p.as_ident()).cloned() else {
        return Ok(None);
    };
    let function = fn_ident.value.to_ascii_uppercase();
    if !matches!(function.as_str(), "TUMBLE" | "HOP" | "SESSION" | "CUMULATE") {
        return Ok(None);
    }
    let Some(fargs) = args.take() else {
        return Ok(None);
    };
    let at = Some(SqlPosition::of(&fn_ident));
    let exprs: Vec<&Expr> = fargs
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            } => Ok(e),
            _ => Err(tvf_error(
                format!("unexpected argument '{a}' of {function}"),
                at,
            )),
        })
        .collect::<Result<_>>()?;
    let expected = if matches!(function.as_str(), "HOP" | "CUMULATE") {
        4
    } else {
        3
    };
    if exprs.len() != expected {
        return Err(tvf_error(
            format!("{function} takes {expected} arguments"),
            at,
        ));
    }
    let source = match exprs[0] {
        Expr::Identifier(i) => i.clone(),
        Expr::CompoundIdentifier(parts) => parts.last().cloned().unwrap_or_else(|| Ident::new("")),
        other => {
            return Err(tvf_error(
                format!("the first argument of {function} must be a stream, not '{other}'"),
                at,
            ))
        }
    };
    let time_column = match exprs[1] {
        Expr::Identifier(i) => normalize_ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalize_ident).unwrap_or_default(),
        // Flink's DESCRIPTOR(ts)
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("descriptor") => match &f.args
        {
            FunctionArguments::List(list) => match list.args.first() {
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(i)))) => {
                    normalize_ident(i)
                }
                _ => return Err(tvf_error("DESCRIPTOR takes a column name", at)),
            },
            _ => return Err(tvf_error("DESCRIPTOR takes a column name", at)),
        },
        other => {
            return Err(tvf_error(
                format!(
                "the second argument of {function} must be the event-time column, not '{other}'"
            ),
                at,
            ))
        }
    };
    let duration = |e: &Expr| {
        interval_ms(e)
            .filter(|ms| *ms > 0)
            .ok_or_else(|| tvf_error(format!("expected a positive INTERVAL, found '{e}'"), at))
    };
    let kind = match function.as_str() {
        "TUMBLE" => WindowKind::Tumbling {
            size: duration(exprs[2])?,
        },
        "HOP" => {
            let (advance, size) = (duration(exprs[2])?, duration(exprs[3])?);
            check_hop(size, advance, at)?;
            WindowKind::Hopping { size, advance }
        }
        "SESSION" => WindowKind::Session {
            gap: duration(exprs[2])?,
        },
        _ => {
            let (step, max) = (duration(exprs[2])?, duration(exprs[3])?);
            check_cumulate(step, max, at)?;
            WindowKind::Cumulate { step, max }
        }
    };
    *name = ast::ObjectName::from(vec![source]);
    Ok(Some(WindowClause {
        kind,
        grace: 0,
        retention: None,
        syntax: WindowSyntax::Tvf { time_column },
        position: at,
    }))
}

fn is_ident(e: &Expr, name: &str) -> bool {
    matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(name))
}

/// ksqlDB's `WINDOW` clause groups by the window implicitly and the result is keyed
/// by it: add `windowstart, windowend` to GROUP BY and, unless selected, to SELECT.
pub fn add_window_columns(query: &mut Query, clause: &WindowClause) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(SluiceError::sql(
            "a WINDOW clause needs a plain SELECT ... GROUP BY",
        ));
    };
    let GroupByExpr::Expressions(group_by, _) = &mut select.group_by else {
        return Err(SluiceError::sql("GROUP BY ALL cannot be windowed"));
    };
    if group_by.is_empty() {
        return Err(SluiceError::sql_at(
            "a WINDOW clause needs a GROUP BY: windows group events",
            clause.position,
            Some("e.g. SELECT url, COUNT(*) FROM pageviews WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY url".into()),
        ));
    }
    for col in [clause.start_column(), clause.end_column()] {
        if !group_by.iter().any(|e| is_ident(e, col)) {
            group_by.push(Expr::Identifier(Ident::new(col)));
        }
        let selected = select.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                is_ident(e, col)
            }
            _ => false,
        });
        if !selected {
            select
                .projection
                .push(SelectItem::UnnamedExpr(Expr::Identifier(Ident::new(col))));
        }
    }
    Ok(())
}

/// Checks the window against the catalog and decides which relation it applies to.
pub fn window_context(
    catalog: &Catalog,
    reads: &[String],
    clause: WindowClause,
    emit: Option<EmitMode>,
) -> Result<WindowContext> {
    // Tables a stream is joined with are looked up, not windowed.
    let streams: Vec<String> = reads
        .iter()
        .filter(|r| catalog.relation(r).is_none_or(|rel| !rel.is_table()))
        .cloned()
        .collect();
    let streams = if streams.is_empty() {
        reads.to_vec()
    } else {
        streams
    };
    let [source] = streams.as_slice() else {
        return Err(SluiceError::sql_at(
            "a windowed query reads exactly one stream",
            clause.position,
            Some("window each input in its own query, or join first into a stream".into()),
        ));
    };
    let relation = catalog
        .relation(source)
        .ok_or_else(|| SluiceError::Internal(format!("relation {source} vanished")))?;
    if relation.is_table() {
        return Err(SluiceError::sql_at(
            format!("{source} is a TABLE; windows apply to streams of events"),
            clause.position,
            Some("window the stream the table is built from".into()),
        ));
    }
    if let WindowSyntax::Tvf { time_column } = &clause.syntax {
        let event_time = relation.format.timestamp.as_deref().unwrap_or("rowtime");
        if time_column != event_time && time_column != "rowtime" {
            return Err(SluiceError::sql_at(
                format!(
                    "windows are on {source}'s event time, which is {}; '{time_column}' is not it",
                    match &relation.format.timestamp {
                        Some(c) => format!("column '{c}'"),
                        None => "the record timestamp (ROWTIME)".into(),
                    }
                ),
                clause.position,
                Some(format!(
                    "pass {event_time}, or declare the stream WITH (timestamp='{time_column}') so watermarks follow it"
                )),
            ));
        }
    }
    Ok(WindowContext {
        source: source.clone(),
        clause,
        emit_final: emit == Some(EmitMode::Final),
    })
}

/// A session state for planning one query: only the relations it reads, as
/// schema-only tables, the windowed one with its two window columns. (Registering
/// in the engine's own catalog would leak the window columns to other queries.)
pub fn planning_state(
    state: &SessionState,
    catalog: &Catalog,
    reads: &[String],
    window: &WindowContext,
) -> Result<SessionState> {
    let schema_provider = Arc::new(MemorySchemaProvider::new());
    for name in reads {
        let relation = catalog
            .relation(name)
            .ok_or_else(|| SluiceError::Internal(format!("relation {name} vanished")))?;
        let base = relation.schema();
        let schema = if *name == window.source {
            let ts = crate::operators::session_aggregate::window_column_type();
            let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new(window.clause.start_column(), ts.clone(), false));
            fields.push(Field::new(window.clause.end_column(), ts, false));
            Arc::new(Schema::new(fields))
        } else {
            base
        };
        schema_provider.register_table(name.clone(), Arc::new(EmptyTable::new(schema)))?;
    }
    let options = state.config_options();
    let catalog_provider = MemoryCatalogProvider::new();
    catalog_provider.register_schema(&options.catalog.default_schema, schema_provider)?;
    let catalogs = MemoryCatalogProviderList::new();
    catalogs.register_catalog(
        options.catalog.default_catalog.clone(),
        Arc::new(catalog_provider),
    );
    Ok(SessionStateBuilder::new_from_existing(state.clone())
        .with_catalog_list(Arc::new(catalogs))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Query {
        let dialect = sqlparser::dialect::GenericDialect {};
        *sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(sql)
            .unwrap()
            .parse_query()
            .unwrap()
    }

    #[test]
    fn table_valued_functions_become_their_source() {
        let mut q = query("SELECT window_start, COUNT(*) FROM HOP(bids, ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE) GROUP BY window_start, window_end");
        let w = extract_tvf(&mut q).unwrap().unwrap();
        assert_eq!(
            w.kind,
            WindowKind::Hopping {
                size: 60_000,
                advance: 5_000
            }
        );
        assert_eq!(
            w.syntax,
            WindowSyntax::Tvf {
                time_column: "ts".into()
            }
        );
        assert!(q.to_string().contains("FROM bids GROUP BY"), "{q}");
        let mut q = query("SELECT 1 FROM TUMBLE(bids, DESCRIPTOR(ts), INTERVAL '10' SECOND) AS b");
        assert_eq!(
            extract_tvf(&mut q).unwrap().unwrap().kind,
            WindowKind::Tumbling { size: 10_000 }
        );
        assert!(q.to_string().contains("FROM bids AS b"), "{q}");
        let mut q = query("SELECT 1 FROM TUMBLE(bids, ts)");
        assert!(extract_tvf(&mut q)
            .unwrap_err()
            .to_string()
            .contains("3 arguments"));
        let mut q = query("SELECT 1 FROM bids");
        assert!(extract_tvf(&mut q).unwrap().is_none());
    }

    #[test]
    fn ksql_window_columns_are_added_once() {
        let clause = WindowClause {
            kind: WindowKind::Tumbling { size: 1000 },
            grace: 0,
            retention: None,
            syntax: WindowSyntax::Ksql,
            position: None,
        };
        let mut q = query("SELECT url, WINDOWSTART AS ws, COUNT(*) FROM pv GROUP BY url");
        add_window_columns(&mut q, &clause).unwrap();
        assert_eq!(
            q.to_string(),
            "SELECT url, WINDOWSTART AS ws, COUNT(*), windowend FROM pv GROUP BY url, windowstart, windowend"
        );
        let mut q = query("SELECT url FROM pv");
        assert!(add_window_columns(&mut q, &clause).is_err());
    }
}
