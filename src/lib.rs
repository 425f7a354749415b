//! Sluice: a streaming SQL server.
//!
//! The folders mirror the architecture (see `docs/architecture.md`):
//! `sql` parses the dialect, `catalog` holds streams, tables and queries,
//! `planner` turns DataFusion logical plans into streaming pipelines made of
//! `operators` run by `dataflow`, `state` keeps operator state in RocksDB,
//! `connectors` and `formats` move records in and out, `serve` speaks pgwire and
//! HTTP, and `engine` ties them together.

pub mod bench;
pub mod catalog;
pub mod chunk;
pub mod config;
pub mod connectors;
pub mod dataflow;
pub mod engine;
pub mod error;
pub mod formats;
pub mod functions;
pub mod operators;
pub mod planner;
pub mod serve;
pub mod sql;
pub mod state;
