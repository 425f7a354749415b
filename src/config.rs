//! Server configuration: command-line flags, environment variables, embedded defaults.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the catalog, the state store and (without Kafka) the local log live.
    pub data_dir: PathBuf,
    pub pg_addr: String,
    pub http_addr: String,
    /// Kafka bootstrap servers; `None` runs on the embedded local log.
    pub kafka_brokers: Option<String>,
    /// Extra librdkafka properties (`key=value`).
    pub kafka_properties: Vec<(String, String)>,
    /// How often queries commit state and source offsets together.
    pub checkpoint_interval: Duration,
    /// Topic that receives records that cannot be decoded; `None` drops them (they
    /// are still counted).
    pub dead_letter_topic: Option<String>,
    /// What a bad record or a failing expression does to a query that does not
    /// say (`WITH (on_error=...)`).
    pub on_error: crate::catalog::OnError,
    /// What a query's output promises across crashes when it does not say
    /// (`WITH (processing_guarantee=...)`).
    pub processing_guarantee: crate::catalog::ProcessingGuarantee,
    /// Memory a pull query may use (DataFusion's memory pool, shared by the pull
    /// queries running at once, and the size of one query's result).
    pub max_query_memory: usize,
    /// Open connections per listener (pgwire and HTTP each).
    pub max_connections: usize,
    /// Push queries (EMIT CHANGES) streaming at once, over both protocols.
    pub max_push_queries: usize,
    /// Bytes of state all queries' state tables may hold in memory before
    /// they evict cached entries (which stay readable from RocksDB).
    pub state_memory_budget: usize,
    /// Directories whose files clients may name in file sources, file sinks
    /// and RUN SCRIPT; empty means the data directory alone.
    pub allowed_paths: Vec<PathBuf>,
    /// `name:secret` lines (SCRAM-SHA-256 verifiers or passwords); with it
    /// every pgwire and HTTP client must authenticate.
    pub users_file: Option<PathBuf>,
    /// PEM certificate chain and private key: TLS on pgwire, HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve a non-loopback address without `users_file`.
    pub allow_unauthenticated: bool,
    /// Test only: plan every persistent query with one more pass-through
    /// operator, as a later planner might (see `planner::test_variant`).
    pub test_planner_variant: bool,
}

/// Default for `--max-query-memory`: 1 GiB.
pub const DEFAULT_MAX_QUERY_MEMORY: usize = 1 << 30;

impl ServerConfig {
    /// `allowed_paths`, or the data directory when none are given.
    pub fn file_roots(&self) -> Vec<PathBuf> {
        if self.allowed_paths.is_empty() {
            vec![self.data_dir.clone()]
        } else {
            self.allowed_paths.clone()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("sluice-data"),
            pg_addr: "127.0.0.1:5433".into(),
            http_addr: "127.0.0.1:8088".into(),
            kafka_brokers: None,
            kafka_properties: Vec::new(),
            checkpoint_interval: Duration::from_secs(1),
            dead_letter_topic: None,
            on_error: crate::catalog::OnError::Continue,
            processing_guarantee: crate::catalog::ProcessingGuarantee::ExactlyOnce,
            max_query_memory: DEFAULT_MAX_QUERY_MEMORY,
            max_connections: 256,
            max_push_queries: 64,
            state_memory_budget: crate::state::budget::DEFAULT_STATE_MEMORY_BUDGET,
            allowed_paths: Vec::new(),
            users_file: None,
            tls_cert: None,
            tls_key: None,
            allow_unauthenticated: false,
            test_planner_variant: false,
        }
    }
}
