//! CREATE VIEW, DROP VIEW, SHOW VIEWS: named queries in the catalog. The
//! planner expands them where they are read (`planner::views`).

use sqlparser::ast::Ident;

use super::show::text_rows;
use super::{done, Engine, StatementResult};
use crate::catalog::{Catalog, ColumnMeta, ViewMeta};
use crate::error::{Result, SluiceError};
use crate::planner::normalize_ident;
use crate::planner::views::{names_read, view_query};
use crate::sql::{CreateView, RelationKind};

/// The views whose queries name `name` (a relation or another view).
pub(super) fn views_reading(catalog: &Catalog, name: &str) -> Vec<String> {
    catalog
        .views
        .values()
        .filter(|v| v.name != name)
        .filter(|v| {
            view_query(catalog, &v.name).is_ok_and(|q| names_read(&q).iter().any(|n| n == name))
        })
        .map(|v| format!("view {}", v.name))
        .collect()
}

/// The persistent queries whose text names `name`.
fn queries_reading(catalog: &Catalog, name: &str) -> Vec<String> {
    catalog
        .queries
        .values()
        .filter(
            |q| match crate::sql::parse_one(&q.query_text).map(|p| p.statement) {
                Ok(crate::sql::Statement::Select { query, .. }) => {
                    names_read(&query).iter().any(|n| n == name)
                }
                _ => false,
            },
        )
        .map(|q| q.id.clone())
        .collect()
}

impl Engine {
    pub(super) async fn create_view(
        &self,
        view: CreateView,
        text: &str,
    ) -> Result<StatementResult> {
        let _guard = self.ddl_lock.lock().await;
        let name = normalize_ident(&view.name);
        {
            let catalog = self.catalog.read();
            if let Some(existing) = catalog.relation(&name) {
                return Err(SluiceError::duplicate(
                    format!(
                        "{} '{name}' already exists",
                        existing.kind.keyword().to_lowercase()
                    ),
                    Some("a view needs a name no stream or table has".into()),
                ));
            }
            if catalog.views.contains_key(&name) {
                if view.if_not_exists {
                    return Ok(done("CREATE VIEW", format!("view {name} already exists")));
                }
                if !view.or_replace {
                    return Err(SluiceError::duplicate(
                        format!("view '{name}' already exists"),
                        Some("use CREATE OR REPLACE VIEW, or CREATE VIEW IF NOT EXISTS".into()),
                    ));
                }
            }
        }
        // Planned once now: the query must be valid, and its columns are what
        // DESCRIBE and the catalogs show.
        let (plan, _) = self.pull_plan(&view.query).await?;
        if names_read(&view.query).contains(&name) {
            return Err(SluiceError::sql(format!("view {name} cannot read itself")));
        }
        let columns = plan
            .schema()
            .fields()
            .iter()
            .map(|f| ColumnMeta {
                name: f.name().clone(),
                sql_type: crate::sql::types::sql_type_name(f.data_type()),
                key: false,
                not_null: !f.is_nullable(),
            })
            .collect();
        let meta = ViewMeta {
            name: name.clone(),
            query_text: view.query.to_string(),
            statement: text.trim().to_string(),
            columns,
        };
        self.catalog.write().views.insert(name.clone(), meta);
        self.save_catalog()?;
        Ok(done("CREATE VIEW", format!("view {name} created")))
    }

    /// DROP VIEW: a view; else a table made with CREATE MATERIALIZED VIEW
    /// (Postgres would want DROP MATERIALIZED VIEW; Sluice accepted this first).
    pub(super) async fn drop_view(&self, name: Ident, if_exists: bool) -> Result<StatementResult> {
        let normalized = normalize_ident(&name);
        if !self.catalog.read().views.contains_key(&normalized) {
            if self.catalog.read().relation(&normalized).is_some() {
                return self
                    .drop_relation(Some(RelationKind::Table), name, if_exists, false)
                    .await;
            }
            if if_exists {
                return Ok(done("DROP VIEW", format!("{normalized} does not exist")));
            }
            return Err(SluiceError::undefined(
                format!("view '{normalized}' does not exist"),
                Some(crate::error::SqlPosition::of(&name)),
                Some("SHOW VIEWS lists the views".into()),
            ));
        }
        let _guard = self.ddl_lock.lock().await;
        let readers: Vec<String> = {
            let catalog = self.catalog.read();
            views_reading(&catalog, &normalized)
                .into_iter()
                .chain(queries_reading(&catalog, &normalized))
                .collect()
        };
        if !readers.is_empty() {
            return Err(SluiceError::sql(format!(
                "cannot drop view {normalized}: {} read it",
                readers.join(", ")
            ))
            .with_hint("drop those first (or TERMINATE their queries)"));
        }
        self.catalog.write().views.remove(&normalized);
        self.save_catalog()?;
        Ok(done("DROP VIEW", format!("view {normalized} dropped")))
    }

    pub(super) fn show_views(&self) -> Result<StatementResult> {
        let rows = self
            .catalog
            .read()
            .views
            .values()
            .map(|v| vec![v.name.clone(), v.query_text.clone()])
            .collect();
        text_rows(&["view_name", "query"], rows)
    }
}
