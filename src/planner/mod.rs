//! From SQL to a streaming pipeline.
//!
//! DataFusion's SQL planner builds and type-checks the LogicalPlan (names, types,
//! coercion, functions); this module walks that plan and turns each node into a
//! streaming operator evaluated with DataFusion physical expressions and
//! accumulators. Only what is streaming-specific lives here.

mod checked;
pub mod errors;
mod join;
pub mod key_filters;
pub mod providers;
pub mod test_variant;
mod top_n;
pub mod views;
pub mod window;

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use checked::create_checked_expr;
use datafusion::common::DFSchemaRef;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, FetchType, LogicalPlan, Projection};
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::optimizer::Optimizer;
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::sql::parser::Statement as DFStatement;
use sqlparser::ast::{self, Query};

use crate::catalog::Catalog;
use crate::dataflow::Dataflow;
use crate::error::{Result, SluiceError};
use crate::operators::aggregate_inputs::WindowColumns;
use crate::operators::group_aggregate::{AggregateSpec, WindowedGroups};
use crate::operators::top_n::Ranking;
use crate::operators::{
    ChangelogRetractions, Filter, GroupAggregate, MaterializedTable, Operator, Project,
    SessionAggregate, WindowAssign, WindowFinalAggregate, WindowResults,
};
use crate::sql::{EmitMode, WindowClause, WindowKind};
use window::{WindowContext, Windows};

pub use errors::df_error;

/// A continuous query ready to run: read `sources`, push chunks through
/// `flow`, write rows of `schema`.
pub struct StreamPlan {
    /// The relations read: input `i` of `flow` reads `sources[i]`.
    pub sources: Vec<String>,
    pub flow: Dataflow,
    pub schema: SchemaRef,
    /// True when the output is a changelog (upserts/deletes keyed by `key_columns`).
    pub changelog: bool,
    /// Output columns that form the key: the GROUP BY columns of an aggregate, or
    /// the source's key columns passed through unchanged.
    pub key_columns: Vec<usize>,
    /// LIMIT of a push query.
    pub limit: Option<usize>,
    /// The DataFusion logical plan, for EXPLAIN.
    pub logical_plan: String,
    /// For windowed aggregates: which output column is the window end, and how
    /// long closed windows stay in the materialized table.
    pub retention: Option<crate::operators::materialize::Retention>,
    /// Sources that are the table side of a stream-table join (read ahead of
    /// the others, see `SourceInput::lookup`).
    pub lookups: Vec<String>,
}

/// How long closed windows stay queryable when the query sets no RETENTION: a day
/// (as Kafka Streams' window stores), or the window size + grace if longer.
pub const DEFAULT_RETENTION_MS: i64 = 86_400_000;

impl StreamPlan {
    pub fn explain(&self) -> Vec<String> {
        self.flow.explain(&self.sources)
    }

    /// The first relation read (the only one unless the query joins two inputs).
    pub fn source_name(&self) -> &str {
        self.sources.first().map(String::as_str).unwrap_or("")
    }
}

struct Partial {
    sources: Vec<String>,
    flow: Dataflow,
    schema: DFSchemaRef,
    changelog: bool,
    keys: Vec<usize>,
    /// Number of key columns the output must keep (set by GROUP BY or a table source).
    required_keys: usize,
    limit: Option<usize>,
    /// An aggregate over the query's windows was planned.
    windowed_aggregate: bool,
    /// Position in `keys` of the window end, and the retention (windowed aggregates).
    window_end_key: Option<(usize, i64)>,
    lookups: Vec<String>,
    /// A window assigned to the rows and not yet aggregated.
    window: Option<PendingWindow>,
    /// The column holding each row's event time, when one does.
    time: Option<TimeColumn>,
    /// Set when the output is the final results of windows (each key emitted
    /// once, when its window closes): `WindowResults` can read them as a stream.
    final_windows: Option<FinalWindows>,
    /// A ROW_NUMBER() waiting for the filter that limits it.
    rank: Option<PendingRank>,
}

struct PendingRank {
    ranking: Ranking,
    /// Node id of its `TopN` in `flow`, replaced once the limit is known.
    node: usize,
    /// The row number column (gone if a projection dropped it).
    column: Option<usize>,
}

struct PendingWindow {
    context: WindowContext,
    /// Node id in `flow` of the `WindowAssign` after the windowed source, and
    /// its output schema (unknown after a join renumbered the nodes).
    assign_at: Option<(usize, SchemaRef)>,
}

/// A column whose value is each row's event time + `offset` ms.
#[derive(Debug, Clone, Copy)]
struct TimeColumn {
    index: usize,
    offset: i64,
    /// The end of the row's window (the results of a windowed aggregate).
    window_end: bool,
}

#[derive(Debug, Clone, Copy)]
struct FinalWindows {
    end_column: usize,
    grace: i64,
}

impl Partial {
    /// The final results of windows continue as a stream: append-only rows
    /// timed by their window (`WindowResults`). Other partials are unchanged.
    fn windows_as_stream(&mut self) {
        if let (true, Some(f)) = (self.changelog, self.final_windows.take()) {
            self.flow
                .push(Box::new(WindowResults::new(f.end_column, f.grace)));
            // The windows are consumed here: what comes next is not windowed.
            self.windowed_aggregate = false;
            self.window_end_key = None;
            self.changelog = false;
            self.required_keys = 0;
            self.time = Some(TimeColumn {
                index: f.end_column,
                offset: 1,
                window_end: true,
            });
        }
    }

    /// Column `i` of the input is column `to(i)` of the output, or gone.
    fn remap_columns(&mut self, to: impl Fn(usize) -> Option<usize>) {
        self.time = self
            .time
            .and_then(|t| to(t.index).map(|index| TimeColumn { index, ..t }));
        self.final_windows = self
            .final_windows
            .and_then(|f| to(f.end_column).map(|end_column| FinalWindows { end_column, ..f }));
        if let Some(rank) = self.rank.as_mut() {
            rank.column = rank.column.and_then(&to);
        }
    }

    /// A row number must be limited (Top-N) before the rows go on.
    fn check_ranked(&self) -> Result<()> {
        match self.rank {
            Some(_) => Err(unsupported(
                "ROW_NUMBER() without a limit on it",
                "rank in a subquery and filter it: SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (PARTITION BY k ORDER BY x DESC) AS rn FROM s) WHERE rn <= 3",
            )),
            None => Ok(()),
        }
    }
}

/// Checks that every relation the query names exists, so the error can point at it.
pub fn check_relations(catalog: &Catalog, query: &Query) -> Result<Vec<String>> {
    let functions = table_function_calls(query);
    let ctes = cte_names(query);
    let mut names = Vec::new();
    let mut missing: Option<SluiceError> = None;
    let _ = ast::visit_relations(query, |name: &ast::ObjectName| {
        if functions.contains(name) {
            // `generate_series(1, 10)` and the like: DataFusion resolves them.
            return std::ops::ControlFlow::Continue(());
        }
        if let Some(ident) = name.0.last().and_then(|p| p.as_ident()) {
            let normalized = normalize_ident(ident);
            if window::is_windowed_name(&normalized)
                || (name.0.len() == 1 && ctes.contains(&normalized))
            {
                // A WITH query's own name (asyncpg's recursive type
                // introspection has several): DataFusion resolves it.
                return std::ops::ControlFlow::Continue(());
            }
            if catalog.relation(&normalized).is_none()
                && missing.is_none()
                && !is_system_table(name)
            {
                missing = Some(SluiceError::undefined(
                    format!("stream or table '{normalized}' does not exist"),
                    Some(crate::error::SqlPosition::of(ident)),
                    Some("SHOW STREAMS and SHOW TABLES list what exists; names are case-insensitive unless quoted".into()),
                ));
            }
            if !names.contains(&normalized) {
                names.push(normalized);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    match missing {
        Some(e) => Err(e),
        None => Ok(names),
    }
}

/// The names WITH clauses define anywhere in a query (normalized).
pub(crate) fn cte_names(query: &Query) -> Vec<String> {
    struct Ctes(Vec<String>);
    impl ast::Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> std::ops::ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    self.0.push(normalize_ident(&cte.alias.name));
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut ctes = Ctes(Vec::new());
    let _ = ast::Visit::visit(query, &mut ctes);
    ctes.0
}

/// The names called as table functions (`FROM f(args)`) in a query.
fn table_function_calls(query: &Query) -> Vec<ast::ObjectName> {
    struct Calls(Vec<ast::ObjectName>);
    impl ast::Visitor for Calls {
        type Break = ();
        fn pre_visit_table_factor(
            &mut self,
            factor: &ast::TableFactor,
        ) -> std::ops::ControlFlow<()> {
            if let ast::TableFactor::Table {
                name,
                args: Some(_),
                ..
            } = factor
            {
                self.0.push(name.clone());
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut calls = Calls(Vec::new());
    let _ = ast::Visit::visit(query, &mut calls);
    calls.0
}

fn is_system_table(name: &ast::ObjectName) -> bool {
    name.0.len() > 1
        && name.0.first().and_then(|p| p.as_ident()).is_some_and(|i| {
            let s = i.value.to_ascii_lowercase();
            s == "information_schema" || s == "pg_catalog"
        })
}

/// Unquoted identifiers fold to lower case (the Postgres convention).
pub fn normalize_ident(ident: &ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// Plans `query` with DataFusion and type-checks it (no streaming translation).
pub async fn logical_plan(state: &SessionState, query: &Query) -> Result<LogicalPlan> {
    let statement =
        DFStatement::Statement(Box::new(ast::Statement::Query(Box::new(query.clone()))));
    let plan = state.statement_to_plan(statement).await.map_err(df_error)?;
    let plan = state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(df_error)?;
    // Constant folding and the rewrites functions such as now() rely on.
    let optimizer = Optimizer::with_rules(vec![
        Arc::new(SimplifyExpressions::new()),
        // Joins: ON a = b becomes the join's key pairs.
        Arc::new(
            datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate::new(),
        ),
    ]);
    optimizer.optimize(plan, state, |_, _| {}).map_err(df_error)
}

/// A join whose inputs are all streams: interval joins buffer their inputs' rows,
/// so only the columns used above the join should be kept. (Tables keep all
/// columns: their primary key is needed for retractions even when unused.)
fn joins_streams_only(catalog: &Catalog, reads: &[String], plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    reads
        .iter()
        .all(|r| catalog.relation(r).is_some_and(|rel| !rel.is_table()))
        && plan
            .exists(|p| Ok(matches!(p, LogicalPlan::Join(_))))
            .unwrap_or(false)
}

/// DataFusion's projection pushdown: scans produce only the columns the query uses.
fn prune_columns(state: &SessionState, plan: LogicalPlan) -> Result<LogicalPlan> {
    let optimizer = Optimizer::with_rules(vec![Arc::new(
        datafusion::optimizer::optimize_projections::OptimizeProjections::new(),
    )]);
    optimizer.optimize(plan, state, |_, _| {}).map_err(df_error)
}

/// Plans a continuous query: `query` with its ksqlDB `WINDOW` clause (if any) and
/// EMIT mode.
pub async fn plan_continuous(
    state: &SessionState,
    catalog: &Catalog,
    query: &Query,
    window_clause: Option<&WindowClause>,
    emit: Option<EmitMode>,
    allow_limit: bool,
) -> Result<StreamPlan> {
    let mut query = query.clone();
    views::expand_views(catalog, &mut query)?;
    let tvfs = window::extract_tvfs(&mut query)?;
    if let Some(w) = window_clause {
        if tvfs.iter().any(|t| t.top_level) {
            return Err(SluiceError::sql_at(
                "the query has both a WINDOW clause and a window function in FROM",
                w.position,
                Some("use one of them".into()),
            ));
        }
        window::add_window_columns(&mut query, w)?;
    }
    let mut reads = check_relations(catalog, &query)?;
    let mut windows = Vec::new();
    if let Some(w) = window_clause {
        windows.push(window::clause_context(catalog, &reads, w.clone(), emit)?);
    }
    for tvf in tvfs {
        let context = window::tvf_context(catalog, tvf, emit)?;
        if !reads.contains(&context.relation) {
            reads.push(context.relation.clone());
        }
        windows.push(context);
    }
    let windows = Windows::new(windows);
    let owned_state;
    let state = if windows.contexts.is_empty() {
        state
    } else {
        owned_state = window::planning_state(state, catalog, &reads, &windows.contexts)?;
        &owned_state
    };
    let plan = logical_plan(state, &query).await?;
    // Pruned columns shrink join buffers, but pruning may also drop a key a later
    // aggregate over a changelog retracts by; then the query is planned unpruned.
    let pruned = if joins_streams_only(catalog, &reads, &plan) {
        let pruned = prune_columns(state, plan.clone())?;
        translate(
            state,
            catalog,
            &pruned,
            allow_limit,
            &windows.for_plan(&pruned),
        )
        .ok()
        .map(|partial| (pruned, partial))
    } else {
        None
    };
    let (plan, partial) = match pruned {
        Some(done) => done,
        None => {
            let partial = translate(state, catalog, &plan, allow_limit, &windows.for_plan(&plan))?;
            (plan, partial)
        }
    };
    partial.check_ranked()?;
    let mut partial = partial;
    share_inputs(&mut partial);
    let logical = plan.display_indent().to_string();
    if emit == Some(EmitMode::Final) && !partial.windowed_aggregate {
        return Err(SluiceError::sql(
            "EMIT FINAL needs an aggregate over windows: it emits each window's result once, when the window closes",
        )
        .with_hint("add a WINDOW clause (or FROM TUMBLE(...)) and GROUP BY, or use EMIT CHANGES"));
    }
    if partial.sources.is_empty() {
        return Err(SluiceError::sql(
            "a continuous query must read a stream or table (FROM ...)",
        ));
    }
    if partial.changelog && partial.keys.len() < partial.required_keys {
        return Err(SluiceError::sql(
            "every GROUP BY column (or the source table's PRIMARY KEY) must appear unchanged in the SELECT list: it is the result table's key",
        )
        .with_hint("add the GROUP BY columns to the SELECT list"));
    }
    let schema: SchemaRef = Arc::new(Schema::new(partial.schema.as_arrow().fields().clone()));
    let retention = partial.window_end_key.and_then(|(k, retention_ms)| {
        partial
            .keys
            .get(k)
            .map(|&end_column| crate::operators::materialize::Retention {
                end_column,
                retention_ms,
            })
    });
    Ok(StreamPlan {
        retention,
        lookups: partial.lookups,
        sources: partial.sources,
        flow: partial.flow,
        schema,
        changelog: partial.changelog,
        key_columns: partial.keys,
        limit: partial.limit,
        logical_plan: logical,
    })
}

/// A relation the query reads twice (windowed and plain, or with two windows)
/// is read and decoded once, and its rows feed both places.
fn share_inputs(partial: &mut Partial) {
    let mut i = 1;
    while i < partial.sources.len() {
        match partial.sources[..i]
            .iter()
            .position(|s| *s == partial.sources[i])
        {
            Some(first) => {
                partial.flow.share_input(i, first);
                partial.sources.remove(i);
            }
            None => i += 1,
        }
    }
}

fn unsupported(what: &str, hint: &str) -> SluiceError {
    SluiceError::Sql {
        message: format!("{what} is not supported in a continuous query"),
        position: None,
        hint: Some(hint.to_string()),
        sqlstate: "0A000",
    }
}

fn translate(
    state: &SessionState,
    catalog: &Catalog,
    plan: &LogicalPlan,
    allow_limit: bool,
    windows: &Windows,
) -> Result<Partial> {
    let props = state.execution_props();
    match plan {
        LogicalPlan::TableScan(scan) => {
            let scanned = scan.table_name.table();
            let window = windows.contexts.iter().find(|w| w.source == scanned);
            let name = window.map_or_else(|| scanned.to_string(), |w| w.relation.clone());
            let relation = catalog
                .relation(&name)
                .ok_or_else(|| SluiceError::undefined(format!("stream or table '{name}' does not exist"), None, None))?;
            let keys = relation.key_indices();
            let mut partial = Partial {
                sources: vec![name],
                flow: Dataflow::input(),
                schema: scan.projected_schema.clone(),
                changelog: relation.is_table(),
                required_keys: if relation.is_table() { keys.len() } else { 0 },
                keys,
                limit: None,
                windowed_aggregate: false,
                window_end_key: None,
                lookups: Vec::new(),
                window: None,
                time: relation.format.timestamp.as_ref().and_then(|ts| {
                    scan.source.schema().index_of(ts).ok().map(|index| TimeColumn {
                        index,
                        offset: 0,
                        window_end: false,
                    })
                }),
                final_windows: None,
                rank: None,
            };
            if let Some(w) = window {
                // The scan's schema has the window columns; the source does not.
                let at = partial.flow.push(Box::new(WindowAssign::new(
                    w.clause.kind,
                    w.clause.grace,
                    scan.source.schema(),
                )));
                partial.window = Some(PendingWindow {
                    context: w.clone(),
                    assign_at: Some((at, scan.source.schema())),
                });
            }
            if let Some(projection) = &scan.projection {
                // Scan output is the projected columns; the decoder produces all.
                let full = scan.source.schema();
                let exprs = projection
                    .iter()
                    .map(|&i| {
                        Arc::new(datafusion::physical_expr::expressions::Column::new(full.field(i).name(), i))
                            as Arc<dyn datafusion::physical_plan::PhysicalExpr>
                    })
                    .collect();
                partial.keys = partial
                    .keys
                    .iter()
                    .filter_map(|k| projection.iter().position(|p| p == k))
                    .collect();
                partial.remap_columns(|i| projection.iter().position(|&p| p == i));
                partial.flow.push(Box::new(Project::new(
                    exprs,
                    Arc::new(scan.projected_schema.as_arrow().clone()),
                )));
            }
            if !scan.filters.is_empty() {
                return Err(unsupported("a pushed-down filter", "internal planner error"));
            }
            Ok(partial)
        }
        LogicalPlan::Projection(p) => {
            let partial = translate(state, catalog, &p.input, allow_limit, windows)?;
            project(state, partial, p)
        }
        LogicalPlan::Filter(f) => {
            // WHERE over an inner join may hold its time bound (Flink's interval
            // joins are often written so); column pruning may have put a
            // projection between the two.
            match f.input.as_ref() {
                LogicalPlan::Join(j) => {
                    return join::translate_join(state, catalog, j, allow_limit, windows, Some(&f.predicate));
                }
                LogicalPlan::Projection(p) => {
                    if let (LogicalPlan::Join(j), Some(predicate)) = (p.input.as_ref(), below_projection(&f.predicate, p)) {
                        let partial =
                            join::translate_join(state, catalog, j, allow_limit, windows, Some(&predicate))?;
                        return project(state, partial, p);
                    }
                }
                _ => {}
            }
            let mut partial = translate(state, catalog, &f.input, allow_limit, windows)?;
            let predicate = match partial.rank.take() {
                Some(rank) => match top_n::limit_rank(&mut partial, rank, &f.predicate, f.input.schema())? {
                    Some(rest) => rest,
                    None => return Ok(partial),
                },
                None => f.predicate.clone(),
            };
            let predicate = create_checked_expr(&predicate, f.input.schema(), props, &Default::default())
                .map_err(df_error)?;
            partial
                .flow
                .push(Box::new(Filter::new(predicate, partial.changelog)));
            Ok(partial)
        }
        LogicalPlan::SubqueryAlias(a) => {
            let mut partial = translate(state, catalog, &a.input, allow_limit, windows)?;
            partial.schema = a.schema.clone();
            Ok(partial)
        }
        LogicalPlan::Aggregate(agg) => {
            let mut partial = translate(state, catalog, &agg.input, allow_limit, windows)?;
            partial.windows_as_stream();
            partial.check_ranked()?;
            // Aggregating a TABLE: each change retracts the key's old row and adds
            // the new one, so only aggregates that can take a row back work.
            let over_changelog = partial.changelog;
            if over_changelog && partial.keys.len() < partial.required_keys {
                return Err(SluiceError::sql(
                    "aggregating a TABLE needs its PRIMARY KEY columns in the query's input (to retract a row when its key changes)",
                )
                .with_hint("select from the table directly, or keep its key columns in the subquery"));
            }
            let input_schema = agg.input.schema();
            let physical_input = input_schema.as_arrow();
            let mut group_exprs = Vec::new();
            for e in &agg.group_expr {
                if matches!(e, Expr::GroupingSet(_)) {
                    return Err(unsupported("GROUPING SETS / ROLLUP / CUBE", "group by plain columns or expressions"));
                }
                group_exprs.push(create_checked_expr(e, input_schema, props, &Default::default()).map_err(df_error)?);
            }
            let mut aggregates = Vec::new();
            let planning = datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default();
            for e in &agg.aggr_expr {
                let mut builder =
                    LoweredAggregateBuilder::new(e, input_schema, physical_input, props, &planning)
                        .with_human_display(e.human_display().to_string());
                if let Expr::Alias(alias) = e {
                    builder = builder.with_name(alias.name.clone());
                } else if matches!(e, Expr::AggregateFunction(_)) {
                    builder = builder.with_name(e.schema_name().to_string());
                }
                let lowered = builder.build().map_err(df_error)?;
                let (function, filter) = (lowered.aggregate, lowered.filter);
                if !lowered.order_bys.is_empty() {
                    return Err(unsupported(
                        "an ordered aggregate (WITHIN GROUP / ORDER BY inside an aggregate)",
                        "remove the ORDER BY from the aggregate call",
                    ));
                }
                if over_changelog {
                    let name = function.fun().name().to_ascii_lowercase();
                    if function.is_distinct() || !["count", "sum", "avg", "mean"].contains(&name.as_str()) {
                        return Err(unsupported(
                            &format!("{}(...) over a TABLE", name.to_uppercase()),
                            "over a changelog, aggregates must be able to take a row back: COUNT, SUM and AVG; aggregate the stream the table comes from for the others",
                        ));
                    }
                }
                aggregates.push(AggregateSpec { function, filter });
            }
            if over_changelog {
                let input = Arc::new(agg.input.schema().as_arrow().clone());
                let layout = MaterializedTable::new(input, partial.keys.clone())?;
                partial
                    .flow
                    .push(Box::new(ChangelogRetractions::new(layout)));
            }
            let schema = Arc::new(agg.schema.as_arrow().clone());
            let n_keys = group_exprs.len();
            let pending = partial.window.take();
            // GROUP BY the window end of windows' results (MAX per window of
            // counts per window, as in Nexmark q5).
            let window_key = match partial.time {
                Some(t) if t.window_end && pending.is_none() && !over_changelog => agg
                    .group_expr
                    .iter()
                    .position(|e| matches!(e, Expr::Column(c) if input_schema.index_of_column(c).ok() == Some(t.index))),
                _ => None,
            };
            partial.time = None;
            partial.final_windows = None;
            match (pending, window_key) {
                (Some(PendingWindow { context: w, assign_at }), _) => {
                    let emit_final = windows.emit_final(&w, agg);
                    let find = |name: &str| {
                        agg.group_expr.iter().position(|e| matches!(e, Expr::Column(c) if c.name == name))
                    };
                    let (Some(start), Some(end)) = (find(w.clause.start_column()), find(w.clause.end_column())) else {
                        return Err(SluiceError::sql_at(
                            format!(
                                "a windowed aggregate must GROUP BY {} and {}",
                                w.clause.start_column(),
                                w.clause.end_column()
                            ),
                            w.clause.position,
                            Some(format!("GROUP BY ..., {}, {}", w.clause.start_column(), w.clause.end_column())),
                        ));
                    };
                    let op: Box<dyn Operator> = match w.clause.kind {
                        WindowKind::Session { gap } => {
                            let columns = WindowColumns { start, end };
                            Box::new(SessionAggregate::new(
                                columns.keys_of(group_exprs),
                                columns,
                                aggregates,
                                schema,
                                gap,
                                w.clause.grace,
                                emit_final,
                            )?)
                        }
                        kind if emit_final
                            && assign_at.is_some()
                            && !uses_window_columns(agg, &w.clause)? =>
                        {
                            // The aggregate assigns windows itself: the events pass once.
                            if let Some((at, assign_schema)) = assign_at {
                                partial.flow.replace(
                                    at,
                                    Box::new(WindowAssign::new(kind, w.clause.grace, assign_schema).collapsed()),
                                );
                            }
                            let columns = WindowColumns { start, end };
                            Box::new(WindowFinalAggregate::new(
                                columns.keys_of(group_exprs),
                                columns,
                                aggregates,
                                schema,
                                kind,
                                w.clause.grace,
                            )?)
                        }
                        _ => Box::new(GroupAggregate::new(group_exprs, aggregates, schema)?.with_window(
                            WindowedGroups {
                                end_key: end,
                                grace: w.clause.grace,
                                emit_final,
                            },
                        )),
                    };
                    partial.flow.push(op);
                    partial.windowed_aggregate = true;
                    let retention = w.clause.retention.unwrap_or_else(|| {
                        DEFAULT_RETENTION_MS.max(w.clause.kind.max_size().saturating_add(w.clause.grace))
                    });
                    partial.window_end_key = Some((end, retention));
                    if emit_final {
                        partial.final_windows = Some(FinalWindows {
                            end_column: end,
                            grace: w.clause.grace,
                        });
                    }
                }
                (None, Some(end)) => {
                    // Rows of windows' results are timed at their window's end − 1
                    // ms, so a group is complete once the watermark reaches the end.
                    let windowed = WindowedGroups {
                        end_key: end,
                        grace: 0,
                        emit_final: true,
                    };
                    partial
                        .flow
                        .push(Box::new(GroupAggregate::new(group_exprs, aggregates, schema)?.with_window(windowed)));
                    partial.windowed_aggregate = true;
                    partial.window_end_key = Some((end, DEFAULT_RETENTION_MS));
                    partial.final_windows = Some(FinalWindows { end_column: end, grace: 0 });
                }
                (None, None) => {
                    partial.windowed_aggregate = false;
                    partial.window_end_key = None;
                    let mut op = GroupAggregate::new(group_exprs, aggregates, schema)?;
                    if over_changelog {
                        op = op.retracting()?;
                    }
                    partial.flow.push(Box::new(op));
                }
            }
            partial.schema = agg.schema.clone();
            partial.changelog = true;
            partial.keys = (0..n_keys).collect();
            partial.required_keys = n_keys;
            Ok(partial)
        }
        LogicalPlan::Limit(limit) if allow_limit => {
            let mut partial = translate(state, catalog, &limit.input, false, windows)?;
            match limit.get_fetch_type().map_err(df_error)? {
                FetchType::Literal(n) => partial.limit = n,
                FetchType::UnsupportedExpr => return Err(SluiceError::sql("LIMIT must be a constant")),
            }
            Ok(partial)
        }
        LogicalPlan::Limit(_) => Err(unsupported(
            "LIMIT",
            "LIMIT ends a push query (SELECT ... EMIT CHANGES LIMIT n); a persistent query runs forever",
        )),
        LogicalPlan::Sort(_) => Err(unsupported(
            "ORDER BY",
            "results of a continuous query arrive in event order; use a pull query (without EMIT CHANGES) to sort",
        )),
        LogicalPlan::Join(join) => join::translate_join(state, catalog, join, allow_limit, windows, None),
        LogicalPlan::Distinct(_) => Err(unsupported("SELECT DISTINCT", "use GROUP BY instead")),
        LogicalPlan::Window(w) => {
            let mut partial = translate(state, catalog, &w.input, allow_limit, windows)?;
            partial.windows_as_stream();
            partial.check_ranked()?;
            top_n::rank(state, w, &mut partial)?;
            Ok(partial)
        }
        LogicalPlan::Union(_) => Err(unsupported("UNION", "use INSERT INTO to merge streams")),
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Err(SluiceError::sql(
            "a continuous query must read a stream or table (FROM ...)",
        )),
        other => Err(unsupported(
            &format!("'{}'", other.display()),
            "see docs/sql-reference.md for what continuous queries support",
        )),
    }
}

/// Whether anything between the windowed source and the aggregate, or the
/// aggregate's arguments and other group expressions, reads the window columns
/// (then windows must be assigned upstream, one row per window).
fn uses_window_columns(
    agg: &datafusion::logical_expr::Aggregate,
    clause: &WindowClause,
) -> Result<bool> {
    let names = [clause.start_column(), clause.end_column()];
    let refers = |e: &Expr| {
        e.column_refs()
            .iter()
            .any(|c| names.contains(&c.name.as_str()))
    };
    let bare = |e: &Expr| matches!(e, Expr::Column(c) if names.contains(&c.name.as_str()));
    if agg.aggr_expr.iter().any(refers) || agg.group_expr.iter().any(|e| !bare(e) && refers(e)) {
        return Ok(true);
    }
    let mut plan = agg.input.as_ref();
    loop {
        match plan {
            LogicalPlan::TableScan(_) => return Ok(false),
            LogicalPlan::SubqueryAlias(a) => plan = a.input.as_ref(),
            LogicalPlan::Filter(f) if !refers(&f.predicate) => plan = f.input.as_ref(),
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| bare(e) || !refers(e)) => {
                plan = p.input.as_ref()
            }
            _ => return Ok(true),
        }
    }
}

/// `p` over `partial`'s rows.
fn project(state: &SessionState, mut partial: Partial, p: &Projection) -> Result<Partial> {
    let props = state.execution_props();
    let input_schema = p.input.schema();
    let mut exprs = Vec::with_capacity(p.expr.len());
    let mut keys = Vec::new();
    for (out_idx, e) in p.expr.iter().enumerate() {
        exprs.push(
            create_checked_expr(e, input_schema, props, &Default::default()).map_err(df_error)?,
        );
        if let Some(col) = column_of(e) {
            if let Ok(in_idx) = input_schema.index_of_column(col) {
                if partial.keys.contains(&in_idx) {
                    keys.push((
                        partial.keys.iter().position(|k| *k == in_idx).unwrap_or(0),
                        out_idx,
                    ));
                }
            }
        }
    }
    let passed: Vec<Option<usize>> = p
        .expr
        .iter()
        .map(|e| column_of(e).and_then(|c| input_schema.index_of_column(c).ok()))
        .collect();
    partial.remap_columns(|i| passed.iter().position(|&p| p == Some(i)));
    // Keep keys in the order they had (GROUP BY order), one output column each.
    keys.sort();
    keys.dedup_by_key(|(k, _)| *k);
    partial.keys = keys.into_iter().map(|(_, o)| o).collect();
    partial.flow.push(Box::new(Project::new(
        exprs,
        Arc::new(p.schema.as_arrow().clone()),
    )));
    partial.schema = p.schema.clone();
    Ok(partial)
}

/// `predicate` over `p`'s output rewritten over its input, when `p` only
/// selects columns.
fn below_projection(predicate: &Expr, p: &Projection) -> Option<Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let mut inputs = Vec::with_capacity(p.expr.len());
    for e in &p.expr {
        inputs.push(Expr::Column(column_of(e)?.clone()));
    }
    predicate
        .clone()
        .transform(|e| match &e {
            Expr::Column(c) => match p.schema.index_of_column(c) {
                Ok(i) => Ok(Transformed::yes(inputs[i].clone())),
                Err(e) => Err(e),
            },
            _ => Ok(Transformed::no(e)),
        })
        .ok()
        .map(|t| t.data)
}

fn column_of(e: &Expr) -> Option<&datafusion::common::Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => column_of(&a.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Query {
        match crate::sql::parser::parse_one(sql).unwrap().statement {
            crate::sql::Statement::Select { query, .. } => *query,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_a_with_clause_defines_are_not_missing_relations() {
        let catalog = Catalog::default();
        let q = query(
            "WITH RECURSIVE tree(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM tree WHERE n < 3) \
             SELECT * FROM (WITH inner_cte AS (SELECT n FROM tree) SELECT * FROM inner_cte) t",
        );
        assert!(check_relations(&catalog, &q).is_ok());
        let missing = check_relations(&catalog, &query("WITH a AS (SELECT 1) SELECT * FROM b"));
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("'b' does not exist"));
    }
}
