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
use datafusion::common::DFSchemaRef;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Aggregate, LogicalPlan};
use std::ops::ControlFlow;

use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query,
    SelectItem, SetExpr, TableFactor, VisitMut, VisitorMut,
};

use super::normalize_ident;
use crate::catalog::Catalog;
use crate::error::{Result, SluiceError, SqlPosition};
use crate::sql::duration::interval_ms;
use crate::sql::window::{check_cumulate, check_hop};
use crate::sql::{EmitMode, WindowClause, WindowKind, WindowSyntax};

/// A window of a continuous query and the relation it applies to.
#[derive(Debug, Clone)]
pub struct WindowContext {
    /// The name the query's plan scans: the stream itself for a `WINDOW` clause,
    /// a name of its own for each table-valued function (so that a query may read
    /// the same stream windowed and not, or windowed twice).
    pub source: String,
    /// The stream read.
    pub relation: String,
    pub clause: WindowClause,
    /// The query says EMIT FINAL. (Windows aggregated below the outermost
    /// aggregate emit final whatever it says: see [`Windows::emit_final`].)
    pub emit_final: bool,
}

/// The windows of a query, and which aggregate is the outermost one: the only
/// one whose emission the query's EMIT chooses.
pub struct Windows {
    pub contexts: Vec<WindowContext>,
    outer_aggregate: Option<DFSchemaRef>,
}

impl Windows {
    pub fn new(contexts: Vec<WindowContext>) -> Windows {
        Windows {
            contexts,
            outer_aggregate: None,
        }
    }

    /// The same windows for planning `plan`.
    pub fn for_plan(&self, plan: &LogicalPlan) -> Windows {
        Windows {
            contexts: self.contexts.clone(),
            outer_aggregate: outer_aggregate(plan),
        }
    }

    /// Whether the aggregate of `window` emits each window once, when it closes:
    /// with EMIT FINAL, or when its results go on into a join, an aggregate or a
    /// ranking (they are a stream of closed windows there).
    pub fn emit_final(&self, window: &WindowContext, aggregate: &Aggregate) -> bool {
        window.emit_final
            || !self
                .outer_aggregate
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &aggregate.schema))
    }
}

/// The aggregate whose rows are the query's output (under projections, filters
/// and limits only).
fn outer_aggregate(plan: &LogicalPlan) -> Option<DFSchemaRef> {
    match plan {
        LogicalPlan::Aggregate(a) => Some(a.schema.clone()),
        LogicalPlan::Projection(p) => outer_aggregate(&p.input),
        LogicalPlan::Filter(f) => outer_aggregate(&f.input),
        LogicalPlan::SubqueryAlias(a) => outer_aggregate(&a.input),
        LogicalPlan::Limit(l) => outer_aggregate(&l.input),
        LogicalPlan::Sort(s) => outer_aggregate(&s.input),
        _ => None,
    }
}

/// A table-valued window function found in a query, before it is checked.
#[derive(Debug)]
pub struct WindowTvf {
    /// The name it was rewritten to.
    pub source: String,
    pub relation: String,
    pub clause: WindowClause,
    /// In the outermost SELECT's FROM, where a WINDOW clause would be too.
    pub top_level: bool,
}

/// Prefix of the names the window functions are rewritten to.
const WINDOWED: &str = "__sluice_window_";

/// A name a window function was rewritten to (not a relation of the catalog).
pub fn is_windowed_name(name: &str) -> bool {
    name.starts_with(WINDOWED)
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

/// Rewrites every `TUMBLE(src, ts, INTERVAL ...)` (and HOP, SESSION, CUMULATE) in
/// FROM, in subqueries too, to a relation of its own (`__sluice_window_N AS src`,
/// keeping an alias if there is one) and returns the windows they describe.
pub fn extract_tvfs(query: &mut Query) -> Result<Vec<WindowTvf>> {
    let mut found = Vec::new();
    if let SetExpr::Select(select) = query.body.as_mut() {
        for from in &mut select.from {
            let factors = std::iter::once(&mut from.relation)
                .chain(from.joins.iter_mut().map(|j| &mut j.relation));
            for factor in factors {
                rewrite_tvf(factor, true, &mut found)?;
            }
        }
    }
    let mut nested = NestedTvfs { found, error: None };
    let _ = VisitMut::visit(query, &mut nested);
    match nested.error {
        Some(e) => Err(e),
        None => Ok(nested.found),
    }
}

struct NestedTvfs {
    found: Vec<WindowTvf>,
    error: Option<SluiceError>,
}

impl VisitorMut for NestedTvfs {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        match rewrite_tvf(factor, false, &mut self.found) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

fn rewrite_tvf(
    factor: &mut TableFactor,
    top_level: bool,
    found: &mut Vec<WindowTvf>,
) -> Result<()> {
    let TableFactor::Table {
        name, args, alias, ..
    } = factor
    else {
        return Ok(());
    };
    let Some((source, clause)) = parse_tvf(name, args)? else {
        return Ok(());
    };
    let windowed = format!("{WINDOWED}{}", found.len());
    *name = ast::ObjectName::from(vec![Ident::new(&windowed)]);
    if alias.is_none() {
        *alias = Some(ast::TableAlias {
            explicit: true,
            name: source.clone(),
            columns: Vec::new(),
            at: None,
        });
    }
    found.push(WindowTvf {
        source: windowed,
        relation: normalize_ident(&source),
        clause,
        top_level,
    });
    Ok(())
}

/// `TUMBLE(src, ts, INTERVAL ...)` → (src, its window); `None` for other names.
fn parse_tvf(
    name: &ast::ObjectName,
    args: &mut Option<ast::TableFunctionArgs>,
) -> Result<Option<(Ident, WindowClause)>> {
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
    Ok(Some((
        source,
        WindowClause {
            kind,
            grace: 0,
            retention: None,
            syntax: WindowSyntax::Tvf { time_column },
            position: at,
        },
    )))
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
    // No GROUP BY: a global windowed aggregate (one row per window), keyed by
    // the window alone, as in ksqlDB.
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

/// The ksqlDB `WINDOW` clause applies to the one stream the query reads.
pub fn clause_context(
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
    check_windowed(catalog, source, &clause)?;
    Ok(WindowContext {
        source: source.clone(),
        relation: source.clone(),
        clause,
        emit_final: emit == Some(EmitMode::Final),
    })
}

/// A window function's window, checked against the catalog.
pub fn tvf_context(
    catalog: &Catalog,
    tvf: WindowTvf,
    emit: Option<EmitMode>,
) -> Result<WindowContext> {
    if catalog.relation(&tvf.relation).is_none() {
        return Err(SluiceError::undefined(
            format!("stream '{}' does not exist", tvf.relation),
            tvf.clause.position,
            Some("the first argument of a window function is the stream to window".into()),
        ));
    }
    check_windowed(catalog, &tvf.relation, &tvf.clause)?;
    Ok(WindowContext {
        source: tvf.source,
        relation: tvf.relation,
        clause: tvf.clause,
        emit_final: emit == Some(EmitMode::Final),
    })
}

/// Windows apply to a stream, on its event time.
fn check_windowed(catalog: &Catalog, source: &str, clause: &WindowClause) -> Result<()> {
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
    Ok(())
}

/// A session state for planning one query: only the relations it reads, as
/// schema-only tables, and each window's relation with its two window columns.
/// (Registering in the engine's own catalog would leak the window columns to
/// other queries.)
pub fn planning_state(
    state: &SessionState,
    catalog: &Catalog,
    reads: &[String],
    windows: &[WindowContext],
) -> Result<SessionState> {
    let schema_provider = Arc::new(MemorySchemaProvider::new());
    let schema_of = |name: &str| {
        catalog
            .relation(name)
            .map(|r| r.schema())
            .ok_or_else(|| SluiceError::Internal(format!("relation {name} vanished")))
    };
    for name in reads {
        let schema = schema_of(name)?;
        schema_provider.register_table(name.clone(), Arc::new(EmptyTable::new(schema)))?;
    }
    for window in windows {
        let base = schema_of(&window.relation)?;
        let ts = crate::operators::session_aggregate::window_column_type();
        let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(window.clause.start_column(), ts.clone(), false));
        fields.push(Field::new(window.clause.end_column(), ts, false));
        // A WINDOW clause's relation is the stream itself: this replaces it.
        schema_provider.deregister_table(&window.source)?;
        schema_provider.register_table(
            window.source.clone(),
            Arc::new(EmptyTable::new(Arc::new(Schema::new(fields)))),
        )?;
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
    fn table_valued_functions_become_relations_of_their_own() {
        let mut q = query("SELECT window_start, COUNT(*) FROM HOP(bids, ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE) GROUP BY window_start, window_end");
        let found = extract_tvfs(&mut q).unwrap();
        let [w] = found.as_slice() else {
            panic!("one window expected")
        };
        assert_eq!(
            w.clause.kind,
            WindowKind::Hopping {
                size: 60_000,
                advance: 5_000
            }
        );
        assert_eq!(
            w.clause.syntax,
            WindowSyntax::Tvf {
                time_column: "ts".into()
            }
        );
        assert_eq!((w.relation.as_str(), w.top_level), ("bids", true));
        assert!(
            q.to_string()
                .contains("FROM __sluice_window_0 AS bids GROUP BY"),
            "{q}"
        );
        let mut q = query("SELECT 1 FROM TUMBLE(bids, DESCRIPTOR(ts), INTERVAL '10' SECOND) AS b");
        assert_eq!(
            extract_tvfs(&mut q).unwrap()[0].clause.kind,
            WindowKind::Tumbling { size: 10_000 }
        );
        assert!(q.to_string().contains("FROM __sluice_window_0 AS b"), "{q}");
        let mut q = query("SELECT 1 FROM TUMBLE(bids, ts)");
        assert!(extract_tvfs(&mut q)
            .unwrap_err()
            .to_string()
            .contains("3 arguments"));
        let mut q = query("SELECT 1 FROM bids");
        assert!(extract_tvfs(&mut q).unwrap().is_empty());
        // In subqueries and joins, each one gets a name of its own.
        let mut q = query(
            "SELECT * FROM bids b JOIN (SELECT MAX(p) FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end) m ON true \
             JOIN (SELECT 1 FROM (SELECT * FROM HOP(bids, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) x) y ON true",
        );
        let found = extract_tvfs(&mut q).unwrap();
        assert_eq!(
            found
                .iter()
                .map(|w| (w.source.as_str(), w.relation.as_str(), w.top_level))
                .collect::<Vec<_>>(),
            [
                ("__sluice_window_0", "bids", false),
                ("__sluice_window_1", "bids", false)
            ]
        );
        assert!(
            q.to_string().starts_with("SELECT * FROM bids b JOIN"),
            "{q}"
        );
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
        // No GROUP BY: one group per window (a global windowed aggregate).
        let mut q = query("SELECT COUNT(*) AS n FROM pv");
        add_window_columns(&mut q, &clause).unwrap();
        assert_eq!(
            q.to_string(),
            "SELECT COUNT(*) AS n, windowstart, windowend FROM pv GROUP BY windowstart, windowend"
        );
    }
}
