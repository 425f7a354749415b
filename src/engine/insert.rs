//! INSERT INTO ... VALUES: evaluate the rows with DataFusion, encode, produce.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Int64Array, Int8Array, StringArray};
use arrow::compute::{cast_with_options, concat_batches, CastOptions};
use arrow::record_batch::RecordBatch;
use sqlparser::ast::{Expr, Ident, Query, SetExpr, Values};

use super::{Engine, StatementResult};
use crate::catalog::Relation;
use crate::dataflow::{Chunk, Op};
use crate::error::{Result, SluiceError};
use crate::formats::RecordEncoder;
use crate::planner::{df_error, normalize_ident};

impl Engine {
    /// The relation an INSERT names, and which of its columns each VALUES
    /// position fills.
    pub(super) fn insert_targets(
        &self,
        target: &Ident,
        columns: &[Ident],
    ) -> Result<(Relation, Vec<usize>)> {
        let name = normalize_ident(target);
        if self.catalog.read().views.contains_key(&name) {
            return Err(SluiceError::sql(format!(
                "{name} is a view: rows go into the streams and tables it reads"
            )));
        }
        let relation = self
            .catalog
            .read()
            .relation(&name)
            .cloned()
            .ok_or_else(|| {
                SluiceError::undefined(
                    format!("stream or table '{name}' does not exist"),
                    Some(crate::error::SqlPosition::of(target)),
                    Some("SHOW STREAMS and SHOW TABLES list what exists".into()),
                )
            })?;
        let schema = relation.schema();
        // Which relation column each VALUES position fills.
        let targets: Vec<usize> = if columns.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let n = normalize_ident(c);
                    schema.index_of(&n).map_err(|_| {
                        SluiceError::undefined(
                            format!("{name} has no column '{n}'"),
                            Some(crate::error::SqlPosition::of(c)),
                            Some(format!(
                                "columns: {}",
                                relation
                                    .columns
                                    .iter()
                                    .map(|c| c.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        )
                    })
                })
                .collect::<Result<_>>()?
        };
        Ok((relation, targets))
    }

    pub(super) async fn insert_values(
        &self,
        target: Ident,
        columns: Vec<Ident>,
        rows: Vec<Vec<Expr>>,
    ) -> Result<StatementResult> {
        let (relation, targets) = self.insert_targets(&target, &columns)?;
        let name = relation.name.clone();
        for (i, row) in rows.iter().enumerate() {
            if row.len() != targets.len() {
                return Err(SluiceError::sql(format!(
                    "row {} has {} values but {} columns are named",
                    i + 1,
                    row.len(),
                    targets.len()
                )));
            }
        }
        // Evaluate the expressions with DataFusion: SELECT * FROM (VALUES ...).
        let query = Query {
            with: None,
            body: Box::new(SetExpr::Values(Values {
                explicit_row: false,
                value_keyword: false,
                rows: rows
                    .into_iter()
                    .map(sqlparser::ast::Parens::with_empty_span)
                    .collect(),
            })),
            order_by: None,
            limit_clause: None,
            fetch: None,
            locks: vec![],
            for_clause: None,
            settings: None,
            format_clause: None,
            pipe_operators: vec![],
        };
        let statement = datafusion::sql::parser::Statement::Statement(Box::new(
            sqlparser::ast::Statement::Query(Box::new(query)),
        ));
        let state = self.session_state();
        let plan = state.statement_to_plan(statement).await.map_err(df_error)?;
        let batches = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(df_error)?
            .collect()
            .await
            .map_err(df_error)?;
        let Some(first) = batches.first() else {
            return Ok(super::done("INSERT 0 0", "no rows".into()));
        };
        let values = concat_batches(&first.schema(), &batches)?;
        let n = self
            .insert_columns(&relation, &targets, values.columns())
            .await?;
        Ok(StatementResult::Done {
            tag: "INSERT".into(),
            message: format!("{n} rows inserted into {name}"),
            rows_affected: Some(n),
        })
    }

    /// Writes rows to `relation`'s topic: `values` are columns (any type that
    /// casts to the column's) for the relation columns `targets` names, the
    /// others are NULL. Returns the number of rows.
    pub(super) async fn insert_columns(
        &self,
        relation: &Relation,
        targets: &[usize],
        values: &[ArrayRef],
    ) -> Result<usize> {
        let n = values.first().map_or(0, |v| v.len());
        let schema = relation.schema();
        let opts = CastOptions {
            safe: false,
            ..Default::default()
        };
        let mut out: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (i, field) in schema.fields().iter().enumerate() {
            let col = match targets.iter().position(|&t| t == i) {
                Some(pos) => {
                    cast_with_options(&values[pos], field.data_type(), &opts).map_err(|e| {
                        SluiceError::sql(format!(
                            "value for column '{}' is not a {}: {e}",
                            field.name(),
                            crate::sql::types::sql_type_name(field.data_type())
                        ))
                    })?
                }
                None => new_null_array(field.data_type(), n),
            };
            out.push(col);
        }
        let batch = RecordBatch::try_new(Arc::new(schema.as_ref().clone()), out)
            .map_err(|e| SluiceError::sql(e.to_string()))?;
        for (i, c) in relation.columns.iter().enumerate() {
            let required = c.not_null || (relation.is_table() && c.key);
            if required && batch.column(i).null_count() > 0 {
                return Err(SluiceError::sql(format!(
                    "column '{}' needs a value",
                    c.name
                )));
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        let rowtime = match &relation.format.timestamp {
            Some(ts) => {
                let idx = schema
                    .index_of(ts)
                    .map_err(|e| SluiceError::Internal(e.to_string()))?;
                let times = crate::formats::rowtime_of(
                    batch.column(idx),
                    relation.format.timestamp_format.as_deref(),
                );
                Int64Array::from_iter_values(times.iter().map(|t| t.unwrap_or(now)))
            }
            None => Int64Array::from(vec![now; n]),
        };
        let ops = relation
            .is_table()
            .then(|| Int8Array::from(vec![Op::Upsert as i8; n]));
        let chunk = Chunk::new(batch, rowtime, ops);
        let records = RecordEncoder::new(relation).encode(&chunk)?;
        let mut writer = self.backend.writer(&relation.topic).await.map_err(|e| {
            SluiceError::connector(format!("writing topic '{}'", relation.topic), e)
        })?;
        writer.send(records).await.map_err(|e| {
            SluiceError::connector(format!("writing topic '{}'", relation.topic), e)
        })?;
        writer.flush().await.map_err(|e| {
            SluiceError::connector(format!("flushing topic '{}'", relation.topic), e)
        })?;
        Ok(n)
    }

    /// `COPY target (columns) FROM STDIN`: rows of text fields (`None` is
    /// NULL), each cast to its column's type. Returns the number of rows.
    pub async fn insert_text_rows(
        &self,
        target: &Ident,
        columns: &[Ident],
        rows: &[Vec<Option<String>>],
    ) -> Result<usize> {
        let (relation, targets) = self.insert_targets(target, columns)?;
        if let Some((i, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != targets.len())
        {
            return Err(SluiceError::Sql {
                message: format!(
                    "row {} has {} fields but {} columns are copied",
                    i + 1,
                    row.len(),
                    targets.len()
                ),
                position: None,
                hint: None,
                sqlstate: "22P04",
            });
        }
        let values: Vec<ArrayRef> = (0..targets.len())
            .map(|c| {
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r[c].as_deref()))) as ArrayRef
            })
            .collect();
        self.insert_columns(&relation, &targets, &values).await
    }

    /// Which columns `COPY target (columns) FROM STDIN` fills, checked before
    /// the client sends any data.
    pub fn copy_columns(&self, target: &Ident, columns: &[Ident]) -> Result<usize> {
        self.insert_targets(target, columns).map(|(_, t)| t.len())
    }
}
