//! Pull queries, push queries, EXPLAIN and PRINT.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use sqlparser::ast::Query;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Engine, Session, StatementResult};
use crate::connectors::StartFrom;
use crate::dataflow::metrics::QueryMetrics;
use crate::dataflow::pipeline::{ChannelSink, Pipeline};
use crate::dataflow::query::QueryHandle;
use crate::dataflow::row_errors::RowErrorPolicy;
use crate::dataflow::source::{SourceInput, SourceTask};
use crate::error::{Result, SluiceError};
use crate::planner::{self, df_error};
use crate::sql::Statement;

impl Engine {
    /// A SELECT without EMIT CHANGES: DataFusion over a snapshot of the tables
    /// (and a bounded scan of any stream's topic). Its working memory is bounded
    /// by the context's memory pool (`--max-query-memory`). A streaming session
    /// gets the rows as DataFusion produces them; otherwise they are collected,
    /// and the collected result counts against the same bound.
    pub(super) async fn pull_query(
        &self,
        session: &Session,
        query: &Query,
    ) -> Result<StatementResult> {
        let (plan, names) = self.pull_plan(query).await?;
        for name in &names {
            self.check_table_available(name)?;
        }
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(df_error)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await.map_err(df_error)?;
        let active = ActiveGuard::new(self.pull_active.clone());
        let stream: super::BatchStream = Box::pin(stream.map(move |batch| {
            let _ = &active;
            batch.map_err(df_error)
        }));
        if session.stream_results {
            return Ok(StatementResult::Stream { schema, stream });
        }
        let batches = super::result::collect_bounded(stream, self.config.max_query_memory).await?;
        Ok(StatementResult::Rows { schema, batches })
    }

    /// The DataFusion plan of a pull query, and the relations it reads. The
    /// extended protocol's Describe plans the same way, so a statement resolves
    /// the same names with and without parameters.
    pub(super) async fn pull_plan(
        &self,
        query: &Query,
    ) -> Result<(datafusion::logical_expr::LogicalPlan, Vec<String>)> {
        // psql / driver catalog syntax (pg_catalog.rs); other queries run as written.
        let rewritten = self.rewrite_pg_catalog_query(query);
        let mut query = rewritten.unwrap_or_else(|| query.clone());
        let names = {
            let catalog = self.catalog.read();
            planner::views::expand_views(&catalog, &mut query)?;
            planner::check_relations(&catalog, &query)?
        };
        let query = &query;
        let state = self.session_state();
        let statement = datafusion::sql::parser::Statement::Statement(Box::new(
            sqlparser::ast::Statement::Query(Box::new(query.clone())),
        ));
        let plan = state.statement_to_plan(statement).await.map_err(df_error)?;
        Ok((plan, names))
    }

    /// A table answers pull queries only if the query that keeps it started:
    /// otherwise its rows would be missing without an error.
    fn check_table_available(&self, name: &str) -> Result<()> {
        let catalog = self.catalog.read();
        if !catalog.relation(name).is_some_and(|r| r.is_table()) {
            return Ok(());
        }
        let running = self.running.lock();
        for q in catalog.queries_writing(name) {
            // A query that ran and then failed keeps the rows it had (SHOW
            // QUERIES says ERROR); one that never started has none to show.
            if running.contains_key(&q.id) {
                continue;
            }
            let message = match self.retrying.lock().get(&q.id) {
                Some(retry) => format!(
                    "table '{name}' cannot answer: query {} that keeps it is retrying: {}",
                    q.id,
                    retry.describe()
                ),
                None => format!(
                    "table '{name}' cannot answer: query {} that keeps it failed: {}",
                    q.id,
                    q.error.as_deref().unwrap_or("it is not running")
                ),
            };
            return Err(SluiceError::Sql {
                message,
                position: None,
                hint: Some("SHOW QUERIES shows its status; fix the cause and restart the server, or re-create the table".into()),
                sqlstate: "55000",
            });
        }
        Ok(())
    }

    /// A SELECT ... EMIT CHANGES: a transient continuous query whose rows stream to
    /// the client; dropping the stream stops it.
    pub(super) async fn push_query(
        &self,
        session: &Session,
        query: &Query,
        window: Option<&crate::sql::WindowClause>,
        emit: crate::sql::EmitMode,
    ) -> Result<StatementResult> {
        let catalog = self.catalog.read().clone();
        let plan = planner::plan_continuous(
            &self.session_state(),
            &catalog,
            query,
            window,
            Some(emit),
            true,
        )
        .await?;
        let start = if session.offset_reset_earliest() {
            StartFrom::Earliest
        } else {
            StartFrom::Latest
        };
        let mut inputs = Vec::with_capacity(plan.sources.len());
        for name in &plan.sources {
            let relation = catalog
                .relation(name)
                .cloned()
                .ok_or_else(|| SluiceError::Internal(format!("source {name} is missing")))?;
            // A join's copy of a table starts with the whole table.
            let lookup = plan.lookups.contains(name);
            let from = if lookup {
                StartFrom::Earliest
            } else {
                start.clone()
            };
            let reader = crate::planner::providers::open_reader(
                &self.backend,
                &self.file_access,
                &relation,
                from,
                true,
            )
            .await?;
            inputs.push(SourceInput {
                relation,
                reader,
                positions: Default::default(),
                bounded: false,
                lookup,
            });
        }
        let id = self.next_transient_id();
        let (tx, rx) = mpsc::channel(16);
        let metrics = Arc::new(QueryMetrics::default());
        let schema = plan.schema.clone();
        let pipeline = Pipeline {
            flow: plan.flow,
            sink: Box::new(ChannelSink {
                tx,
                limit: plan.limit,
                sent: 0,
            }),
            late_sink: None,
            state: None,
            metrics: metrics.clone(),
            errors: RowErrorPolicy::counting(id.clone(), metrics.clone()),
        };
        let (drain_tx, drain_rx) = crate::dataflow::query::drain_channel();
        let source = SourceTask {
            inputs,
            errors: RowErrorPolicy::counting(id.clone(), metrics.clone()),
            metrics,
            checkpoint_interval: None,
            budget: None,
            first_epoch: 0,
            drain: drain_rx,
        };
        if plan.limit == Some(0) {
            return Ok(StatementResult::Push {
                query_id: id,
                schema,
                stream: futures::stream::empty().boxed(),
            });
        }
        let active = ActiveGuard::new(self.push_active.clone());
        let max = self.config.max_push_queries;
        if active.count() > max as i64 {
            return Err(SluiceError::Sql {
                message: format!("too many push queries: {max} are running (--max-push-queries)"),
                position: None,
                hint: Some("close a push query first, or use a pull query".into()),
                sqlstate: "53300",
            });
        }
        let handle = QueryHandle::spawn(id.clone(), source, pipeline, drain_tx);
        // TERMINATE and HTTP's /close-query end the stream as if its rows had.
        let (closed, registered) = self.push_queries.open(&id);
        // The stream owns the query: when the client goes away and the stream is
        // dropped, the handle is dropped and both tasks stop.
        let stream = ReceiverStream::new(rx).take_until(closed).map(move |item| {
            let _keep_alive = (&handle, &active, &registered);
            item
        });
        Ok(StatementResult::Push {
            query_id: id,
            schema,
            stream: stream.boxed(),
        })
    }

    pub(super) async fn explain(
        &self,
        session: &Session,
        statement: Statement,
    ) -> Result<StatementResult> {
        let catalog = self.catalog.read().clone();
        let (query, continuous, window, emit) = match &statement {
            Statement::CreateAs(c) => (c.query.clone(), true, c.window.clone(), c.emit),
            Statement::InsertSelect { query, window, .. } => {
                (query.clone(), true, window.clone(), None)
            }
            Statement::Select {
                query,
                emit,
                window,
                ..
            } => (query.clone(), emit.is_some(), window.clone(), *emit),
            _ => {
                return Err(SluiceError::sql(
                    "EXPLAIN takes a SELECT, CREATE ... AS SELECT or INSERT ... SELECT",
                ))
            }
        };
        let _ = session;
        let mut lines = Vec::new();
        if continuous {
            let plan = planner::plan_continuous(
                &self.session_state(),
                &catalog,
                &query,
                window.as_ref(),
                emit,
                true,
            )
            .await?;
            lines.push("Streaming pipeline:".to_string());
            lines.extend(plan.explain().into_iter().map(|l| format!("  {l}")));
            lines.push(format!(
                "  Output: {} ({})",
                if plan.changelog {
                    "changelog"
                } else {
                    "append-only"
                },
                plan.schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!(
                        "{}{}",
                        f.name(),
                        if plan.key_columns.contains(&i) {
                            " KEY"
                        } else {
                            ""
                        }
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            lines.push("DataFusion logical plan:".to_string());
            lines.extend(plan.logical_plan.lines().map(|l| format!("  {l}")));
        } else {
            planner::check_relations(&catalog, &query)?;
            let plan = planner::logical_plan(&self.session_state(), &query).await?;
            lines.push("Pull query (DataFusion logical plan):".to_string());
            lines.extend(
                plan.display_indent()
                    .to_string()
                    .lines()
                    .map(|l| format!("  {l}")),
            );
        }
        let schema = Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(lines)) as ArrayRef],
        )?;
        Ok(StatementResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    /// PRINT topic: raw records as they arrive (from the beginning with FROM BEGINNING).
    pub(super) async fn print_topic(
        &self,
        topic: &str,
        from_beginning: bool,
        limit: Option<u64>,
    ) -> Result<StatementResult> {
        if self
            .backend
            .describe_topic(topic)
            .await
            .map_err(|e| SluiceError::connector(format!("looking up topic '{topic}'"), e))?
            .is_none()
        {
            return Err(SluiceError::undefined(
                format!("topic '{topic}' does not exist"),
                None,
                Some("SHOW TOPICS lists the topics".into()),
            ));
        }
        let mut reader = self
            .backend
            .reader(
                topic,
                if from_beginning {
                    StartFrom::Earliest
                } else {
                    StartFrom::Latest
                },
            )
            .await
            .map_err(|e| SluiceError::connector(format!("reading topic '{topic}'"), e))?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("rowtime", DataType::Int64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("value", DataType::Utf8, true),
        ]));
        let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(4);
        let out_schema = schema.clone();
        let task = tokio::spawn(async move {
            let mut left = limit.map(|l| l as usize);
            loop {
                if left == Some(0) {
                    return;
                }
                let max = left.unwrap_or(1000).min(1000);
                let records = match reader
                    .poll(max, std::time::Duration::from_millis(500))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(SluiceError::connector("PRINT", e))).await;
                        return;
                    }
                };
                if records.is_empty() {
                    continue;
                }
                let text = |b: &Option<bytes::Bytes>| {
                    b.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let batch = RecordBatch::try_new(
                    out_schema.clone(),
                    vec![
                        Arc::new(Int32Array::from_iter_values(
                            records.iter().map(|r| r.partition),
                        )) as ArrayRef,
                        Arc::new(Int64Array::from_iter_values(
                            records.iter().map(|r| r.offset),
                        )),
                        Arc::new(Int64Array::from_iter_values(
                            records.iter().map(|r| r.timestamp),
                        )),
                        Arc::new(StringArray::from(
                            records.iter().map(|r| text(&r.key)).collect::<Vec<_>>(),
                        )),
                        Arc::new(StringArray::from(
                            records.iter().map(|r| text(&r.value)).collect::<Vec<_>>(),
                        )),
                    ],
                );
                let n = records.len();
                let sent = match batch {
                    Ok(b) => tx.send(Ok(b)).await,
                    Err(e) => tx.send(Err(e.into())).await,
                };
                if sent.is_err() {
                    return;
                }
                if let Some(l) = left.as_mut() {
                    *l = l.saturating_sub(n);
                }
            }
        });
        let abort = task.abort_handle();
        let guard = AbortOnDrop(abort);
        let stream = ReceiverStream::new(rx).map(move |item| {
            let _keep = &guard;
            item
        });
        Ok(StatementResult::Push {
            query_id: format!("print_{topic}"),
            schema,
            stream: stream.boxed(),
        })
    }
}

/// Counts a query as active for as long as its result stream lives.
struct ActiveGuard(Arc<std::sync::atomic::AtomicI64>);

impl ActiveGuard {
    fn new(counter: Arc<std::sync::atomic::AtomicI64>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ActiveGuard(counter)
    }

    /// Queries active, this one included.
    fn count(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
