//! In-process runs: the real planner and pipeline, fed by the generator (as Arrow
//! chunks, or as JSON records through the real source task and decoder).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::sync::mpsc;

use super::generator::{pageviews_relation, GeneratorConfig, PageviewGenerator};
use super::usage::Meter;
use super::{BenchQuery, RunResult};
use crate::catalog::{Catalog, Relation};
use crate::connectors::local_log::LocalLog;
use crate::connectors::{LogReader, LogRecord, SharedBackend};
use crate::dataflow::metrics::QueryMetrics;
use crate::dataflow::pipeline::{NullSink, Pipeline};
use crate::dataflow::query::{QueryHandle, RunStatus};
use crate::dataflow::row_errors::RowErrorPolicy;
use crate::dataflow::source::{SourceInput, SourceTask};
use crate::dataflow::{Chunk, Message};
use crate::error::{Result, SluiceError};
use crate::formats::RecordDecoder;
use crate::operators::{Materialize, MaterializedTable};
use crate::planner::providers::TopicProvider;
use crate::planner::{plan_continuous, StreamPlan};
use crate::sql::{parse_script, Statement};

/// Chunks in flight between source and pipeline, as in `dataflow::query`.
const CHANNEL_CAPACITY: usize = 4;

/// Plans `query` over `relation` the way the engine plans a CREATE ... AS SELECT: a
/// DataFusion session configured like the engine's, the stream registered as a
/// `TopicProvider`, and `plan_continuous`.
pub(super) async fn plan(
    query: BenchQuery,
    relation: &Relation,
    scratch: &Path,
) -> Result<StreamPlan> {
    plan_sql(&query.sql("bench"), std::slice::from_ref(relation), scratch).await
}

/// The `users` table of the enrichment benchmark: one row per generated user id
/// (`user-0000042`), region and tier derived from the number, as changelog chunks.
pub(super) fn users_table(users: u32) -> Result<(Relation, Vec<Chunk>)> {
    use arrow::array::{Int8Array as Ops, StringArray};
    let col = |name: &str, sql_type: &str, key: bool| crate::catalog::ColumnMeta {
        name: name.into(),
        sql_type: sql_type.into(),
        key,
        not_null: key,
    };
    let relation = Relation::new(
        "users".into(),
        crate::sql::RelationKind::Table,
        vec![
            col("id", "VARCHAR", true),
            col("region", "VARCHAR", false),
            col("tier", "VARCHAR", false),
        ],
        "users".into(),
        1,
        {
            let mut format = pageviews_relation("users", 1)?.format;
            format.timestamp = None;
            format
        },
        String::new(),
        None,
        vec![],
    )?;
    let mut chunks = Vec::new();
    const REGIONS: [&str; 4] = ["eu", "us", "apac", "latam"];
    const TIERS: [&str; 3] = ["free", "pro", "enterprise"];
    let mut start = 0u32;
    while start < users {
        let end = (start + 65_536).min(users);
        let ids = StringArray::from_iter_values((start..end).map(|i| format!("user-{i:07}")));
        let regions = StringArray::from_iter_values((start..end).map(|i| REGIONS[i as usize % 4]));
        let tiers = StringArray::from_iter_values((start..end).map(|i| TIERS[i as usize % 3]));
        let n = (end - start) as usize;
        let batch = arrow::record_batch::RecordBatch::try_new(
            relation.schema(),
            vec![Arc::new(ids), Arc::new(regions), Arc::new(tiers)],
        )?;
        chunks.push(Chunk::new(
            batch,
            arrow::array::Int64Array::from(vec![0; n]),
            Some(Ops::from(vec![crate::dataflow::Op::Upsert as i8; n])),
        ));
        start = end;
    }
    Ok((relation, chunks))
}

/// Rows of the enrichment benchmark's `users` table (set from `--users`).
pub(super) static USERS_FOR_PLANNING: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(100_000);

/// Plans a `CREATE ... AS SELECT` statement over `relation` like the engine does.
pub(super) async fn plan_sql(
    sql: &str,
    relations: &[Relation],
    scratch: &Path,
) -> Result<StreamPlan> {
    let backend: SharedBackend = LocalLog::open(&scratch.join("planning-log"))
        .map_err(|e| SluiceError::connector("opening the planning log", e))?;
    let session_config = SessionConfig::new()
        .with_information_schema(true)
        .set_bool("datafusion.sql_parser.collect_spans", true)
        .with_default_catalog_and_schema("sluice", "public");
    let ctx = SessionContext::new_with_config(session_config);
    crate::functions::register(&ctx)?;
    // Planning never reads: the scratch directory is all it could.
    let files = Arc::new(
        crate::connectors::file_access::FileAccess::new(&[scratch.to_path_buf()])
            .map_err(|e| SluiceError::io("the planning directory", e))?,
    );
    let mut catalog = Catalog::default();
    for relation in relations {
        ctx.register_table(
            relation.name.as_str(),
            Arc::new(TopicProvider {
                relation: relation.clone(),
                backend: backend.clone(),
                files: files.clone(),
            }),
        )?;
        catalog
            .relations
            .insert(relation.name.clone(), relation.clone());
    }
    if sql.contains(" users ") {
        let (users, _) = users_table(0)?;
        ctx.register_table(
            "users",
            Arc::new(TopicProvider {
                relation: users.clone(),
                backend: backend.clone(),
                files: files.clone(),
            }),
        )?;
        catalog.relations.insert("users".into(), users);
    }
    let statement = parse_script(sql)?
        .into_iter()
        .next()
        .map(|p| p.statement)
        .ok_or_else(|| SluiceError::Internal("empty benchmark statement".into()))?;
    let Statement::CreateAs(create) = statement else {
        return Err(SluiceError::Internal(
            "benchmark statement is not CREATE ... AS SELECT".into(),
        ));
    };
    plan_continuous(
        &ctx.state(),
        &catalog,
        &create.query,
        create.window.as_ref(),
        create.emit,
        false,
    )
    .await
}

/// The pipeline the engine runs for `plan` (a table sink also materializes its
/// rows), writing into a discarding sink.
pub(super) fn pipeline(plan: StreamPlan) -> Result<(Pipeline, Option<Arc<MaterializedTable>>)> {
    let mut flow = plan.flow;
    let mut table = None;
    if plan.changelog {
        let t = MaterializedTable::new(plan.schema.clone(), plan.key_columns.clone())?;
        let mut materialize = Materialize::new(t.clone());
        if let Some(r) = plan.retention {
            materialize = materialize.with_retention(r);
        }
        flow.push(Box::new(materialize));
        table = Some(t);
    }
    // The enrichment join's copy of `users` is filled before the timer starts.
    if let Some(input) = plan.sources.iter().position(|s| s == "users") {
        let (_, chunks) =
            users_table(USERS_FOR_PLANNING.load(std::sync::atomic::Ordering::Relaxed))?;
        for chunk in chunks {
            flow.process(input, Message::Chunk(chunk))?;
        }
    }
    let metrics = Arc::new(QueryMetrics::default());
    let pipeline = Pipeline {
        flow,
        sink: Box::new(NullSink),
        late_sink: None,
        state: None,
        errors: RowErrorPolicy::counting("bench", metrics.clone()),
        metrics,
    };
    Ok((pipeline, table))
}

fn note(table: &Option<Arc<MaterializedTable>>, metrics: &QueryMetrics, batch: usize) -> String {
    let state = QueryMetrics::get(&metrics.state_entries);
    match table {
        Some(t) => format!(
            "at the end: {} result rows, {state} state entries; chunks of {batch}",
            t.row_count().unwrap_or(0)
        ),
        None => format!("chunks of {batch}"),
    }
}

/// Chunks cycled by [`ArrowSource::Pool`] (about half a million events).
const POOL_CHUNKS: usize = 64;

/// Where the Arrow run's chunks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArrowSource {
    /// Generated while the run is timed (generation cost included).
    Generate,
    /// Generated before the timer starts and cycled: the run measures the channel and
    /// the operators alone. Repeated events flatter GROUP BY state growth (COUNT
    /// DISTINCT sets stop growing after the first pass).
    Pool,
}

/// Arrow chunks from the generator straight into the operators.
pub(super) async fn run_arrow(
    query: BenchQuery,
    config: &GeneratorConfig,
    events: u64,
    batch: usize,
    source: ArrowSource,
    scratch: &Path,
) -> Result<RunResult> {
    let relation = pageviews_relation("pageviews", 1)?;
    let plan = plan(query, &relation, scratch).await?;
    let (pipeline, table) = pipeline(plan)?;
    let metrics = pipeline.metrics.clone();
    let mut generator = PageviewGenerator::new(config.clone(), relation.schema());
    let pool: Vec<Chunk> = match source {
        ArrowSource::Generate => Vec::new(),
        ArrowSource::Pool => {
            let chunks = events.div_ceil(batch as u64).min(POOL_CHUNKS as u64) as usize;
            (0..chunks)
                .map(|_| generator.next_chunk(batch))
                .collect::<Result<_>>()?
        }
    };
    let pool_len = pool.len();
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);

    let meter = Meter::start(None);
    let pipeline_task = tokio::spawn(pipeline.run(rx));
    let source_metrics = metrics.clone();
    let source_task = tokio::spawn(async move {
        let mut left = events;
        let mut sent = 0usize;
        while left > 0 {
            let n = left.min(batch as u64) as usize;
            let chunk = if pool.is_empty() {
                generator.next_chunk(n)?
            } else {
                let c = &pool[sent % pool.len()];
                Chunk::new(c.batch.slice(0, n), c.rowtime.slice(0, n), None)
            };
            sent += 1;
            QueryMetrics::add(&source_metrics.records_in, n as u64);
            // Event time only moves forward here, so the chunk's last event is the
            // watermark (windowed queries close their windows on it).
            let watermark = arrow::compute::max(&chunk.rowtime);
            if tx.send((0, Message::Chunk(chunk))).await.is_err() {
                return Err(SluiceError::Internal("the pipeline stopped early".into()));
            }
            if let Some(w) = watermark.filter(|_| pool.is_empty()) {
                if tx.send((0, Message::Watermark(w))).await.is_err() {
                    return Err(SluiceError::Internal("the pipeline stopped early".into()));
                }
            }
            left -= n as u64;
        }
        let _ = tx.send((0, Message::End)).await;
        Ok::<(), SluiceError>(())
    });
    source_task
        .await
        .map_err(|e| SluiceError::Internal(format!("generator task: {e}")))??;
    pipeline_task
        .await
        .map_err(|e| SluiceError::Internal(format!("pipeline task: {e}")))??;
    let measured = meter.stop();
    Ok(RunResult {
        query: query.name().into(),
        mode: match source {
            ArrowSource::Generate => "inprocess (Arrow)",
            ArrowSource::Pool => "operators only (pre-generated)",
        }
        .into(),
        events,
        rows_out: Some(QueryMetrics::get(&metrics.records_out)),
        measured,
        note: match source {
            ArrowSource::Generate => note(&table, &metrics, batch),
            ArrowSource::Pool => format!(
                "{}; a pool of {} chunks generated beforehand and cycled",
                note(&table, &metrics, batch),
                pool_len
            ),
        },
    })
}

/// A log that generates its records: `SourceTask` reads it like a topic.
struct GeneratedLog {
    generator: PageviewGenerator,
    left: u64,
    next_offset: i64,
}

#[async_trait]
impl LogReader for GeneratedLog {
    async fn poll(
        &mut self,
        max: usize,
        _max_wait: Duration,
    ) -> crate::connectors::Result<Vec<LogRecord>> {
        let n = self.left.min(max as u64) as usize;
        let records = self.generator.next_log_records(n, self.next_offset);
        self.left -= n as u64;
        self.next_offset += n as i64;
        Ok(records)
    }

    async fn caught_up(&mut self) -> crate::connectors::Result<bool> {
        Ok(self.left == 0)
    }
}

/// JSON records through the real source task (decode included) and pipeline.
pub(super) async fn run_json(
    query: BenchQuery,
    config: &GeneratorConfig,
    events: u64,
    scratch: &Path,
) -> Result<RunResult> {
    let relation = pageviews_relation("pageviews", 1)?;
    let plan = plan(query, &relation, scratch).await?;
    let (pipeline, table) = pipeline(plan)?;
    let metrics = pipeline.metrics.clone();
    let (drain_tx, drain_rx) = crate::dataflow::query::drain_channel();
    let source = SourceTask {
        inputs: vec![SourceInput {
            reader: Box::new(GeneratedLog {
                generator: PageviewGenerator::new(config.clone(), relation.schema()),
                left: events,
                next_offset: 0,
            }),
            relation,
            positions: Default::default(),
            bounded: true,
            lookup: false,
        }],
        metrics: metrics.clone(),
        errors: RowErrorPolicy::counting("bench", metrics.clone()),
        checkpoint_interval: None,
        budget: None,
        first_epoch: 0,
        drain: drain_rx,
    };
    let meter = Meter::start(None);
    let mut handle = QueryHandle::spawn(
        format!("bench_{}", query.name()),
        source,
        pipeline,
        drain_tx,
    );
    handle.join().await;
    let measured = meter.stop();
    if let RunStatus::Failed(e) = handle.status() {
        return Err(SluiceError::Internal(format!(
            "benchmark query failed: {e}"
        )));
    }
    let read = QueryMetrics::get(&metrics.records_in);
    let bad = QueryMetrics::get(&metrics.decode_errors);
    if read != events || bad != 0 {
        return Err(SluiceError::Internal(format!(
            "the query read {read} of {events} records ({bad} could not be decoded)"
        )));
    }
    Ok(RunResult {
        query: query.name().into(),
        mode: "json (decode + operators)".into(),
        events,
        rows_out: Some(QueryMetrics::get(&metrics.records_out)),
        measured,
        note: note(&table, &metrics, 8192),
    })
}

/// The generator and the decoder alone, each on one thread: what the in-process and
/// JSON numbers include besides the operators.
pub(super) async fn run_stages(
    config: &GeneratorConfig,
    events: u64,
    batch: usize,
) -> Result<Vec<RunResult>> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<RunResult>> {
        let relation = pageviews_relation("pageviews", 1)?;
        let mut results = Vec::new();
        let stage =
            |mode: &str, note: &str, f: &mut dyn FnMut(usize) -> Result<()>| -> Result<RunResult> {
                let meter = Meter::start(None);
                let mut left = events;
                while left > 0 {
                    let n = left.min(batch as u64) as usize;
                    f(n)?;
                    left -= n as u64;
                }
                Ok(RunResult {
                    query: "-".into(),
                    mode: mode.into(),
                    events,
                    rows_out: None,
                    measured: meter.stop(),
                    note: note.into(),
                })
            };

        let mut generator = PageviewGenerator::new(config.clone(), relation.schema());
        results.push(stage("generate Arrow", "generator only", &mut |n| {
            std::hint::black_box(generator.next_chunk(n)?);
            Ok(())
        })?);

        let mut generator = PageviewGenerator::new(config.clone(), relation.schema());
        let mut offset = 0;
        results.push(stage("generate JSON", "generator only", &mut |n| {
            std::hint::black_box(generator.next_log_records(n, offset));
            offset += n as i64;
            Ok(())
        })?);

        let mut generator = PageviewGenerator::new(config.clone(), relation.schema());
        let mut decoder = RecordDecoder::new(&relation)?;
        let mut offset = 0;
        results.push(stage(
            "generate JSON + decode",
            "RecordDecoder, no operators",
            &mut |n| {
                let records = generator.next_log_records(n, offset);
                offset += n as i64;
                let decoded = decoder.decode(&records)?;
                if !decoded.bad.is_empty() {
                    return Err(SluiceError::Internal(format!(
                        "bad record: {}",
                        decoded.bad[0].reason
                    )));
                }
                std::hint::black_box(decoded);
                Ok(())
            },
        )?);
        Ok(results)
    })
    .await
    .map_err(|e| SluiceError::Internal(format!("stage task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int32Array};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-bench-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn errors_in(config: &GeneratorConfig, events: usize) -> u64 {
        let relation = pageviews_relation("pageviews", 1).unwrap();
        let chunk = PageviewGenerator::new(config.clone(), relation.schema())
            .next_chunk(events)
            .unwrap();
        let status = chunk
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        status.values().iter().filter(|s| **s >= 500).count() as u64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_produce_the_query_results() {
        let dir = scratch("runs");
        let config = GeneratorConfig {
            urls: 50,
            users: 500,
            ..Default::default()
        };
        let expected_errors = errors_in(&config, 20_000);

        let arrow = run_arrow(
            BenchQuery::Filter,
            &config,
            20_000,
            4096,
            ArrowSource::Generate,
            &dir,
        )
        .await
        .unwrap();
        assert_eq!(arrow.rows_out, Some(expected_errors));
        let json = run_json(BenchQuery::Filter, &config, 20_000, &dir)
            .await
            .unwrap();
        assert_eq!(json.rows_out, Some(expected_errors));

        let grouped = run_arrow(
            BenchQuery::GroupBy,
            &config,
            20_000,
            4096,
            ArrowSource::Generate,
            &dir,
        )
        .await
        .unwrap();
        assert!(
            grouped.note.starts_with("at the end: 50 result rows"),
            "{}",
            grouped.note
        );
        let grouped = run_json(BenchQuery::GroupBy, &config, 20_000, &dir)
            .await
            .unwrap();
        assert!(
            grouped.note.starts_with("at the end: 50 result rows"),
            "{}",
            grouped.note
        );
        assert!(grouped.table_row().starts_with("| groupby | json"));

        // 20k events from a pool of 64 x 256-row chunks: the pool holds the first
        // 16384 events, then the first 3616 again.
        let pooled = run_arrow(
            BenchQuery::Filter,
            &config,
            20_000,
            256,
            ArrowSource::Pool,
            &dir,
        )
        .await
        .unwrap();
        assert_eq!(
            pooled.rows_out,
            Some(errors_in(&config, 16_384) + errors_in(&config, 3_616))
        );

        let stages = run_stages(&config, 10_000, 4096).await.unwrap();
        assert_eq!(stages.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn plans_like_the_engine() {
        let dir = scratch("plan");
        let relation = pageviews_relation("pageviews", 1).unwrap();
        let filter = plan(BenchQuery::Filter, &relation, &dir).await.unwrap();
        assert!(!filter.changelog);
        assert_eq!(filter.schema.fields().len(), 4);
        assert!(
            filter.explain().iter().any(|l| l.starts_with("Filter")),
            "{:?}",
            filter.explain()
        );
        let grouped = plan(BenchQuery::GroupBy, &relation, &dir).await.unwrap();
        assert!(grouped.changelog);
        assert_eq!(grouped.key_columns, vec![0]);
        assert_eq!(grouped.schema.fields().len(), 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
