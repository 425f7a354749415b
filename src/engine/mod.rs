//! The engine: executes statements against the catalog, starts and stops queries,
//! answers pull and push queries. Protocol front ends (`serve`) call only this.

mod cursor;
mod ddl;
mod describe;
mod information_schema;
mod insert;
mod insert_json;
pub mod metrics;
mod params;
mod pg_catalog;
mod pg_keys;
mod pg_keywords;
pub mod pg_types;
mod push_queries;
mod query;
pub mod result;
pub mod session;
mod show;
mod supervise;
mod views;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::context::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use parking_lot::{Mutex, RwLock};

use crate::catalog::{Catalog, CatalogFile, Relation};
use crate::config::ServerConfig;
use crate::connectors::file_access::FileAccess;
use crate::connectors::kafka::KafkaBackend;
use crate::connectors::local_log::LocalLog;
use crate::connectors::SharedBackend;
use crate::dataflow::query::QueryHandle;
use crate::error::{Result, SluiceError};
use crate::operators::MaterializedTable;
use crate::planner::providers::{MaterializedProvider, TopicProvider};
use crate::sql::{parse_script, ParsedStatement, Statement};
use crate::state::StateStore;

pub use insert_json::JsonInsert;
pub use result::{BatchStream, StatementResult};
pub use session::Session;

pub struct Engine {
    config: ServerConfig,
    backend: SharedBackend,
    /// Which files clients may have the server read and write.
    file_access: Arc<FileAccess>,
    state: StateStore,
    catalog_file: CatalogFile,
    catalog: RwLock<Catalog>,
    /// Serialises statements that change the catalog.
    ddl_lock: tokio::sync::Mutex<()>,
    ctx: SessionContext,
    materialized: RwLock<BTreeMap<String, Arc<MaterializedTable>>>,
    running: Mutex<BTreeMap<String, QueryHandle>>,
    transient_seq: AtomicU64,
    /// Push queries streaming to clients, for TERMINATE and `/close-query`.
    push_queries: Arc<push_queries::OpenQueries>,
    /// Push queries currently streaming to a client.
    push_active: Arc<std::sync::atomic::AtomicI64>,
    /// Pull queries whose results are being computed or sent.
    pull_active: Arc<std::sync::atomic::AtomicI64>,
    started: Instant,
    /// The dead-letter topic's writer, shared by every query (opened on first use).
    dead_letters: tokio::sync::OnceCell<Arc<crate::dataflow::dead_letter::DeadLetters>>,
    /// Persistent queries waiting to be started again (see `supervise`).
    retrying: Mutex<BTreeMap<String, supervise::Retry>>,
    /// When each query was last restarted by the supervisor, and after how many
    /// failed attempts.
    started_at: Mutex<BTreeMap<String, (Instant, u32)>>,
    /// Restarts by the supervisor, per query.
    restarts: Mutex<BTreeMap<String, u64>>,
}

impl Engine {
    /// Opens the data directory, connects the log backend, and restarts every
    /// persistent query from its last checkpoint.
    pub async fn start(config: ServerConfig) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| SluiceError::io(format!("creating {}", config.data_dir.display()), e))?;
        let backend: SharedBackend = match &config.kafka_brokers {
            Some(brokers) => KafkaBackend::with_staging(
                brokers,
                &config.kafka_properties,
                &config.data_dir.join("kafka-staging"),
            )
            .map_err(|e| SluiceError::connector(format!("connecting to Kafka at {brokers}"), e))?,
            None => LocalLog::open(&config.data_dir.join("log"))
                .map_err(|e| SluiceError::connector("opening the local log", e))?,
        };
        Self::start_with_backend(config, backend).await
    }

    pub async fn start_with_backend(
        config: ServerConfig,
        backend: SharedBackend,
    ) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| SluiceError::io(format!("creating {}", config.data_dir.display()), e))?;
        let state = StateStore::open(&config.data_dir.join("state"))?.with_budget(
            crate::state::budget::MemoryBudget::new(config.state_memory_budget),
        );
        let file_access = Arc::new(
            FileAccess::new(&config.file_roots())
                .map_err(|e| SluiceError::io("checking --allowed-path", e))?,
        );
        let catalog_file = CatalogFile::new(&config.data_dir);
        let catalog = catalog_file.load()?;
        let session_config = SessionConfig::new()
            .with_information_schema(false)
            .set_bool("datafusion.sql_parser.collect_spans", true)
            .with_default_catalog_and_schema("sluice", "public");
        // Pull queries share a bounded pool: a query needing more fails with
        // ResourcesExhausted instead of growing the server without limit.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(config.max_query_memory, 1.0)
            .build_arc()
            .map_err(SluiceError::from)?;
        let ctx = SessionContext::new_with_config_rt(session_config, runtime);
        crate::functions::register(&ctx)?;
        let engine = Arc::new(Engine {
            config,
            backend,
            file_access,
            state,
            catalog_file,
            catalog: RwLock::new(catalog),
            ddl_lock: tokio::sync::Mutex::new(()),
            ctx,
            materialized: RwLock::new(BTreeMap::new()),
            running: Mutex::new(BTreeMap::new()),
            transient_seq: AtomicU64::new(0),
            push_queries: Arc::default(),
            push_active: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            pull_active: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            started: Instant::now(),
            dead_letters: tokio::sync::OnceCell::new(),
            retrying: Mutex::new(BTreeMap::new()),
            started_at: Mutex::new(BTreeMap::new()),
            restarts: Mutex::new(BTreeMap::new()),
        });
        engine.register_pg_catalog()?;
        engine.recover().await?;
        engine.spawn_supervisor();
        Ok(engine)
    }

    /// Registers every relation and restarts every query of the saved catalog.
    async fn recover(&self) -> Result<()> {
        let catalog = self.catalog.read().clone();
        for relation in catalog.relations.values() {
            self.register_relation(relation)?;
        }
        // Any order: no query reads another's memory (a stream-table join keeps
        // its own copy of the table).
        for q in catalog.queries.values() {
            if q.status != crate::catalog::QueryStatus::Running {
                continue;
            }
            if let Err(e) = self.start_persistent_query(q).await {
                if e.is_transient() {
                    // A topic or broker that is not there yet: try again later.
                    self.schedule_retry(&q.id, e.to_string());
                    continue;
                }
                tracing::error!(query = %q.id, "could not restart: {e}");
                let mut c = self.catalog.write();
                if let Some(meta) = c.queries.get_mut(&q.id) {
                    // State this build cannot read stays as it is: the query
                    // stays stopped here and resumes under a build that can.
                    if !matches!(e, SluiceError::IncompatibleState(_)) {
                        meta.status = crate::catalog::QueryStatus::Error;
                    }
                    meta.error = Some(e.to_string());
                }
            } else {
                tracing::info!(query = %q.id, "restarted from its last checkpoint");
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    fn session_state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Makes a relation visible to DataFusion: tables through their materialized
    /// rows, streams through a scan of their topic.
    fn register_relation(&self, relation: &Relation) -> Result<()> {
        let name = relation.name.clone();
        let provider: Arc<dyn datafusion::datasource::TableProvider> = if relation.is_table() {
            let table = self.materialized_table(relation)?;
            Arc::new(MaterializedProvider { table })
        } else {
            Arc::new(TopicProvider {
                relation: relation.clone(),
                backend: self.backend.clone(),
                files: self.file_access.clone(),
            })
        };
        self.ctx.deregister_table(name.as_str())?;
        self.ctx.register_table(name.as_str(), provider)?;
        Ok(())
    }

    /// The materialized rows of a table, created empty the first time.
    fn materialized_table(&self, relation: &Relation) -> Result<Arc<MaterializedTable>> {
        if let Some(t) = self.materialized.read().get(&relation.name) {
            return Ok(t.clone());
        }
        let t = MaterializedTable::new(relation.schema(), relation.key_indices())?;
        self.materialized
            .write()
            .insert(relation.name.clone(), t.clone());
        Ok(t)
    }

    fn save_catalog(&self) -> Result<()> {
        let c = self.catalog.read().clone();
        self.catalog_file.save(&c)
    }

    /// Runs every statement in `sql` in order; stops after the first error, which is
    /// then the last element.
    pub async fn execute(&self, session: &mut Session, sql: &str) -> Vec<Result<StatementResult>> {
        self.execute_with_params(session, sql, Vec::new()).await
    }

    /// Like [`Engine::execute`], with values for `$1`, `$2`, ... placeholders.
    pub async fn execute_with_params(
        &self,
        session: &mut Session,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Vec<Result<StatementResult>> {
        let statements = match parse_script(sql) {
            Ok(s) => s,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::with_capacity(statements.len());
        for mut parsed in statements {
            if !params.is_empty() {
                if let Err(e) = params::bind(&mut parsed.statement, &params) {
                    out.push(Err(e));
                    break;
                }
            }
            let r = self.execute_statement(session, parsed, 0).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    fn execute_statement<'a>(
        &'a self,
        session: &'a mut Session,
        parsed: ParsedStatement,
        depth: usize,
    ) -> futures::future::BoxFuture<'a, Result<StatementResult>> {
        Box::pin(async move {
            let ParsedStatement {
                statement, text, ..
            } = parsed;
            match statement {
                Statement::CreateSource(c) => self.create_source(session, c, &text).await,
                Statement::CreateAs(c) => self.create_as(session, c, &text).await,
                Statement::CreateView(v) => self.create_view(v, &text).await,
                Statement::DropView { name, if_exists } => self.drop_view(name, if_exists).await,
                Statement::InsertSelect {
                    target,
                    query,
                    query_text,
                    window,
                } => {
                    self.insert_select(session, target, query, window, query_text, &text)
                        .await
                }
                Statement::InsertValues {
                    target,
                    columns,
                    rows,
                } => self.insert_values(target, columns, rows).await,
                Statement::Select {
                    query,
                    emit: Some(emit),
                    window,
                    ..
                } => {
                    self.push_query(session, &query, window.as_ref(), emit)
                        .await
                }
                Statement::Select {
                    window: Some(w), ..
                } => Err(SluiceError::sql_at(
                    "a windowed SELECT is a continuous query: add EMIT CHANGES or EMIT FINAL, or CREATE TABLE ... AS SELECT it",
                    w.position,
                    Some("pull queries read the materialized windows of a windowed TABLE".into()),
                )),
                Statement::Select {
                    query, emit: None, ..
                } => self.pull_query(session, &query).await,
                Statement::Drop {
                    kind,
                    name,
                    if_exists,
                    delete_topic,
                } => {
                    self.drop_relation(kind, name, if_exists, delete_topic)
                        .await
                }
                Statement::Show(what) => self.show(session, what).await,
                Statement::Describe { name, extended } => self.describe_relation(&name, extended),
                Statement::Terminate(id) => self.terminate(id).await,
                Statement::RunScript(path) => self.run_script(session, &path, depth).await,
                Statement::Set { name, value } => {
                    session.properties.insert(name.clone(), value.clone());
                    Ok(done("SET", format!("{name} = {value}")))
                }
                Statement::Unset(name) => {
                    session.properties.remove(&name);
                    Ok(done("UNSET", format!("{name} unset")))
                }
                Statement::Print {
                    topic,
                    from_beginning,
                    limit,
                } => self.print_topic(&topic, from_beginning, limit).await,
                Statement::Explain(inner) => self.explain(session, *inner).await,
                Statement::ClientCompat { tag } => Ok(done(&tag, String::new())),
                Statement::DeclareCursor { name, query } => {
                    self.declare_cursor(session, name, *query).await
                }
                Statement::Fetch { name, count } => self.fetch(session, &name, count).await,
                Statement::CloseCursor(name) => self.close_cursor(session, name),
            }
        })
    }

    async fn run_script(
        &self,
        session: &mut Session,
        path: &str,
        depth: usize,
    ) -> Result<StatementResult> {
        if depth > 8 {
            return Err(SluiceError::sql(
                "RUN SCRIPT nested more than 8 deep (does a script run itself?)",
            ));
        }
        let text = read_script(&self.file_access, path).await?;
        let statements = parse_script(&text).map_err(|e| match e {
            SluiceError::Sql {
                message,
                position,
                hint,
                sqlstate,
            } => SluiceError::Sql {
                message: format!("{path}: {message}"),
                position,
                hint,
                sqlstate,
            },
            other => other,
        })?;
        let total = statements.len();
        for parsed in statements {
            let position = parsed.position;
            let result = self.execute_statement(session, parsed, depth + 1).await;
            match result {
                Ok(StatementResult::Push { .. }) => {
                    return Err(SluiceError::sql_at(
                        format!("{path}: a push query (EMIT CHANGES) cannot run inside a script"),
                        Some(position),
                        None,
                    ))
                }
                Ok(_) => {}
                Err(SluiceError::Sql {
                    message,
                    position: p,
                    hint,
                    sqlstate,
                }) => {
                    return Err(SluiceError::Sql {
                        message: format!("{path}: {message}"),
                        position: p.or(Some(position)),
                        hint,
                        sqlstate,
                    })
                }
                Err(other) => {
                    return Err(SluiceError::Internal(format!(
                        "{path} (statement at {position}): {other}"
                    )))
                }
            }
        }
        Ok(done(
            "RUN SCRIPT",
            format!("{total} statements from {path} executed"),
        ))
    }

    /// Parameter types and result schema of one statement, without running it
    /// (the extended protocol's Describe).
    pub async fn describe(
        &self,
        session: &Session,
        sql: &str,
    ) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        describe::describe_statement(self, session, sql).await
    }

    /// Prometheus text exposition of every metric.
    pub fn metrics_text(&self) -> String {
        metrics::render(self)
    }

    /// Server facts for `GET /info`.
    pub fn info(&self) -> serde_json::Value {
        let catalog = self.catalog.read();
        serde_json::json!({
            "KsqlServerInfo": {
                "version": env!("CARGO_PKG_VERSION"),
                "serverStatus": "RUNNING",
            },
            "server": "sluice",
            "version": env!("CARGO_PKG_VERSION"),
            "log_backend": self.backend.kind(),
            "kafka_brokers": self.config.kafka_brokers,
            "data_dir": self.config.data_dir.display().to_string(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "streams": catalog.relations.values().filter(|r| !r.is_table()).count(),
            "tables": catalog.relations.values().filter(|r| r.is_table()).count(),
            "queries": catalog.queries.len(),
        })
    }

    /// Ends push query `id` (a `transient_n`): its stream ends as if its
    /// rows had. False when no such query streams.
    pub fn close_push_query(&self, id: &str) -> bool {
        self.push_queries.close(id)
    }

    /// A stream or table by its (folded) name.
    pub fn relation(&self, name: &str) -> Option<Relation> {
        self.catalog.read().relation(name).cloned()
    }

    /// The queries that read relation `name`: (query id, the relation it
    /// writes, that relation's statement).
    pub fn readers_of(&self, name: &str) -> Vec<(String, String, String)> {
        self.catalog
            .read()
            .relations
            .values()
            .filter(|r| r.reads.iter().any(|read| read == name))
            .filter_map(|r| {
                let id = r.written_by.clone()?;
                Some((id, r.name.clone(), r.statement.clone()))
            })
            .collect()
    }

    /// ksqlDB's `GET /healthcheck`: the catalog (metastore) and the log
    /// backend (kafka), which must answer a topic listing within two seconds.
    pub async fn health(&self) -> (bool, serde_json::Value) {
        let log = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.backend.list_topics(),
        )
        .await;
        let log_healthy = matches!(log, Ok(Ok(_)));
        let metastore_healthy = self.catalog_file.writable();
        let healthy = log_healthy && metastore_healthy;
        (
            healthy,
            serde_json::json!({
                "isHealthy": healthy,
                "details": {
                    "metastore": {"isHealthy": metastore_healthy},
                    "kafka": {"isHealthy": log_healthy},
                },
            }),
        )
    }

    /// ksqlDB's `GET /status`: `"stream/NAME/create"` (or `table/...`) →
    /// `SUCCESS` for every relation, as its command topic would show.
    pub fn command_statuses(&self) -> serde_json::Value {
        let catalog = self.catalog.read();
        let statuses: serde_json::Map<String, serde_json::Value> = catalog
            .relations
            .values()
            .map(|r| {
                let kind = if r.is_table() { "table" } else { "stream" };
                (
                    format!("{kind}/{}/create", r.name.to_uppercase()),
                    serde_json::Value::from("SUCCESS"),
                )
            })
            .collect();
        serde_json::json!({ "commandStatuses": statuses })
    }

    /// Stops every query after a final checkpoint, so a graceful restart
    /// replays nothing.
    pub async fn shutdown(&self) {
        let handles: Vec<QueryHandle> = std::mem::take(&mut *self.running.lock())
            .into_values()
            .collect();
        futures::future::join_all(
            handles
                .into_iter()
                .map(|h| h.drain(std::time::Duration::from_secs(10))),
        )
        .await;
    }

    fn next_transient_id(&self) -> String {
        format!(
            "transient_{}",
            self.transient_seq.fetch_add(1, Ordering::Relaxed) + 1
        )
    }
}

pub(crate) fn done(tag: &str, message: String) -> StatementResult {
    StatementResult::Done {
        tag: tag.to_string(),
        message,
        rows_affected: None,
    }
}

/// Largest script RUN SCRIPT reads.
pub const MAX_SCRIPT_BYTES: u64 = 16 << 20;

/// A script's text: only a regular file of at most [`MAX_SCRIPT_BYTES`] (a
/// device or FIFO would never end, a huge file would fill memory).
async fn read_script(access: &FileAccess, path: &str) -> Result<String> {
    use tokio::io::AsyncReadExt;
    // Opened by its resolved name, the one the check allowed.
    let resolved = access
        .readable(path)
        .map_err(|e| SluiceError::connector("RUN SCRIPT", e))?;
    let meta = tokio::fs::metadata(&resolved)
        .await
        .map_err(|e| SluiceError::io(format!("reading script '{path}'"), e))?;
    if !meta.is_file() {
        return Err(
            SluiceError::sql(format!("RUN SCRIPT '{path}': not a regular file"))
                .with_hint("give the path of a .sql file"),
        );
    }
    if meta.len() > MAX_SCRIPT_BYTES {
        return Err(SluiceError::too_complex(
            format!(
                "RUN SCRIPT '{path}': the file has {} bytes, more than the {MAX_SCRIPT_BYTES} a script may have",
                meta.len()
            ),
            "split the script into several files",
        ));
    }
    let file = tokio::fs::File::open(&resolved)
        .await
        .map_err(|e| SluiceError::io(format!("reading script '{path}'"), e))?;
    // The file may have grown since it was measured: read no more than the limit.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| SluiceError::io(format!("reading script '{path}'"), e))?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(SluiceError::too_complex(
            format!("RUN SCRIPT '{path}': the file grew past {MAX_SCRIPT_BYTES} bytes"),
            "split the script into several files",
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| SluiceError::sql(format!("RUN SCRIPT '{path}': the file is not UTF-8 text")))
}
