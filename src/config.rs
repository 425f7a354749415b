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
        }
    }
}
