//! Running queries: a source task reads and decodes records, a pipeline task
//! drives the operators and the sink, and bounded channels between them give
//! backpressure.

pub mod dead_letter;
pub mod generated;
pub mod graph;
pub mod message;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod row_errors;
pub mod source;
pub mod watermark;

pub use graph::Dataflow;
pub use message::{Barrier, Chunk, Message, Op, Origin, RowError, RowErrors};
