//! The SQL dialect: ksqlDB statements first, Flink/RisingWave forms accepted.
//!
//! Parsing is layered on sqlparser: its tokenizer splits the script and gives
//! every token a line and column; Sluice-specific statements (CREATE STREAM,
//! EMIT CHANGES, SHOW QUERIES, TERMINATE, ...) are recognised by a small
//! recursive-descent layer that drives sqlparser's own `Parser` for expressions,
//! queries and data types, so standard SQL is parsed by sqlparser alone.

pub mod ast;
pub mod duration;
pub mod limits;
pub mod parser;
pub mod types;
pub mod window;
pub mod within;

pub use ast::*;
pub use parser::{continuous_text, parse_one, parse_script};
pub use window::{WindowClause, WindowKind, WindowSyntax};
