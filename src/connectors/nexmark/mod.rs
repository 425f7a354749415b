//! The built-in Nexmark source (`connector = 'nexmark'`): the auction benchmark's
//! people, auctions and bids, generated deterministically from a seed straight
//! into Arrow arrays.
//!
//! * `model`: event number → event type, ids and event time (the reference
//!   generator's id and time model);
//! * `fields`: the per-event random generator and the field value generators;
//! * `batch`: one event type's rows as Arrow columns;
//! * `config`: the WITH options;
//! * `reader`: the source a query reads (partitions, offsets, rate limit);
//! * `export`: the same events as JSON lines, for files and Kafka topics.

pub mod batch;
pub mod config;
pub mod fields;
pub mod model;
pub mod reader;

pub use config::NexmarkConfig;
pub use model::EventType;
pub use reader::NexmarkReader;

use arrow::datatypes::DataType;

/// A declared column the generator cannot fill.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ColumnError {
    #[error("nexmark {table} has no column '{column}' (its columns: {known})")]
    Unknown {
        table: &'static str,
        column: String,
        known: String,
    },
    #[error("nexmark {table}.{column} is {expected}, not {declared}")]
    WrongType {
        table: &'static str,
        column: String,
        expected: &'static str,
        declared: String,
    },
}

/// Generator column index of each declared column (any subset of the event
/// type's columns, in any order, with the generator's types).
pub fn projection(
    table: EventType,
    declared: &[(String, DataType)],
) -> Result<Vec<usize>, ColumnError> {
    let columns = batch::columns(table);
    declared
        .iter()
        .map(|(name, data_type)| {
            let Some(i) = columns.iter().position(|(c, _)| c == name) else {
                return Err(ColumnError::Unknown {
                    table: table.name(),
                    column: name.clone(),
                    known: columns
                        .iter()
                        .map(|(c, _)| *c)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let (_, sql_type) = columns[i];
            if &batch::arrow_type(sql_type) != data_type {
                return Err(ColumnError::WrongType {
                    table: table.name(),
                    column: name.clone(),
                    expected: sql_type,
                    declared: crate::sql::types::sql_type_name(data_type),
                });
            }
            Ok(i)
        })
        .collect()
}

/// Opens the source of a nexmark relation whose declared columns are
/// `schema`: they decide which columns are generated.
pub fn open_relation(
    schema: arrow::datatypes::SchemaRef,
    config: &NexmarkConfig,
    start: &crate::connectors::StartFrom,
) -> Result<NexmarkReader, ColumnError> {
    let declared: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let projection = projection(config.table, &declared)?;
    Ok(NexmarkReader::open(config, schema, projection, start))
}
