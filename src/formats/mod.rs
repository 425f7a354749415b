//! Record formats: raw log records ↔ Arrow chunks, vectorised through arrow-json
//! and arrow-csv. Records that cannot be decoded are returned separately so the
//! query can count them, dead-letter them, and keep running.

mod decode;
mod delimited;
mod encode;
mod json;
pub mod kafka_primitive;
mod key;
mod ksql_json;
pub mod rowtime;
mod strict_int;

pub use decode::{BadRecord, Decoded, RecordDecoder};
pub(crate) use encode::json_lines;
pub use encode::RecordEncoder;
pub use json::JsonValueDecoder;
pub use rowtime::from_column as rowtime_of;
