//! Views where a query reads them: a view named in FROM becomes its query, a
//! derived table under the view's name (or the alias written), before the
//! query is planned. So a view works wherever a subquery does — pull, push
//! and persistent queries — and keeps no state of its own.

use std::ops::ControlFlow;

use sqlparser::ast::{self, Ident, Query, TableAlias, TableFactor, VisitMut, VisitorMut};

use super::{cte_names, normalize_ident};
use crate::catalog::Catalog;
use crate::error::{Result, SluiceError};
use crate::sql::Statement;

/// More expansions than any sane nesting: views that read each other.
const MAX_EXPANSIONS: usize = 256;

/// Replaces every view `query` reads with the view's query; returns the
/// names of the views expanded.
pub fn expand_views(catalog: &Catalog, query: &mut Query) -> Result<Vec<String>> {
    if catalog.views.is_empty() {
        return Ok(Vec::new());
    }
    let mut expander = Expander {
        catalog,
        ctes: cte_names(query),
        expanded: Vec::new(),
        count: 0,
        error: None,
    };
    let _ = VisitMut::visit(query, &mut expander);
    match expander.error {
        Some(e) => Err(e),
        None => Ok(expander.expanded),
    }
}

/// The query of view `name`, as written at CREATE VIEW.
pub fn view_query(catalog: &Catalog, name: &str) -> Result<Query> {
    let view = catalog
        .views
        .get(name)
        .ok_or_else(|| SluiceError::Internal(format!("view {name} is missing")))?;
    match crate::sql::parse_one(&view.query_text)?.statement {
        Statement::Select { query, .. } => Ok(*query),
        _ => Err(SluiceError::Internal(format!(
            "view {name} is not a SELECT: {}",
            view.query_text
        ))),
    }
}

struct Expander<'a> {
    catalog: &'a Catalog,
    ctes: Vec<String>,
    expanded: Vec<String>,
    count: usize,
    error: Option<SluiceError>,
}

impl VisitorMut for Expander<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let parts: Vec<&Ident> = name.0.iter().filter_map(|p| p.as_ident()).collect();
        let view = match parts.as_slice() {
            [one] => normalize_ident(one),
            [schema, one] if normalize_ident(schema) == "public" => normalize_ident(one),
            _ => return ControlFlow::Continue(()),
        };
        if parts.len() == 1 && self.ctes.contains(&view) || !self.catalog.views.contains_key(&view)
        {
            return ControlFlow::Continue(());
        }
        self.count += 1;
        if self.count > MAX_EXPANSIONS {
            self.error = Some(SluiceError::sql(format!(
                "view {view} reads itself (through other views)"
            )));
            return ControlFlow::Break(());
        }
        let query = match view_query(self.catalog, &view) {
            Ok(q) => q,
            Err(e) => {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        };
        let alias = alias.clone().unwrap_or(TableAlias {
            explicit: true,
            name: Ident::new(view.clone()),
            columns: Vec::new(),
            at: None,
        });
        // The walk goes on into the derived table: views it reads expand too.
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: Box::new(query),
            alias: Some(alias),
            sample: None,
        };
        if !self.expanded.contains(&view) {
            self.expanded.push(view);
        }
        ControlFlow::Continue(())
    }
}

/// The relations and views `query` names in FROM (for dependency checks).
pub fn names_read(query: &Query) -> Vec<String> {
    let mut names = Vec::new();
    let _ = ast::visit_relations(query, |name: &ast::ObjectName| {
        if let Some(ident) = name.0.last().and_then(|p| p.as_ident()) {
            let n = normalize_ident(ident);
            if !names.contains(&n) {
                names.push(n);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    names
}
