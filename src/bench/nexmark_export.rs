//! The generator's events as JSON lines — one file or topic per event type — so
//! the Kafka benchmark and other engines read exactly the rows the built-in source
//! produces. Encoding goes through the project's `RecordEncoder`, so the JSON is
//! what a Sluice query writing the same rows would produce (timestamps as
//! `2015-07-15T00:00:00.100`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{ColumnMeta, FormatMeta, KeyFormat, Relation, ValueFormat};
use crate::connectors::nexmark::fields::Channels;
use crate::connectors::nexmark::{batch, EventType, NexmarkConfig, NexmarkReader};
use crate::connectors::{LogBackend, StartFrom};
use crate::error::{Result, SluiceError};
use crate::formats::RecordEncoder;
use crate::sql::RelationKind;

/// Rows per generated chunk while exporting.
const CHUNK_ROWS: usize = 8192;

/// A stream relation with every column of `table`, JSON values, no key, event time
/// from `date_time`: the shape of an exported topic (and of a nexmark source
/// declared without a column list).
pub fn relation(table: EventType, name: &str, topic: &str, partitions: i32) -> Result<Relation> {
    let columns = batch::columns(table)
        .iter()
        .map(|(c, t)| ColumnMeta {
            name: c.to_string(),
            sql_type: t.to_string(),
            key: false,
            not_null: false,
        })
        .collect();
    Relation::new(
        name.to_string(),
        RelationKind::Stream,
        columns,
        topic.to_string(),
        partitions,
        FormatMeta {
            value_format: ValueFormat::Json,
            key_format: KeyFormat::None,
            timestamp: Some("date_time".into()),
            timestamp_format: None,
            delimiter: ',',
            key_delimiter: ',',
            wrap_single_value: true,
            key_in_value: Some(false),
            ksqldb_json: true,
            watermark_delay_ms: 0,
            idle_timeout_ms: None,
            processing_time: false,
        },
        create_statement(table, topic),
        None,
        vec![],
    )
}

/// The CREATE STREAM statement that reads an exported topic.
pub fn create_statement(table: EventType, topic: &str) -> String {
    let columns = column_list(table);
    format!(
        "CREATE STREAM {} ({columns}) WITH (kafka_topic='{topic}', value_format='json', timestamp='date_time')",
        table.name()
    )
}

/// `CREATE STREAM` for an exported JSON-lines file of `table`.
pub fn create_file_statement(table: EventType, path: &Path) -> String {
    format!(
        "CREATE STREAM {} ({}) WITH (connector='file', path='{}', value_format='json', timestamp='date_time')",
        table.name(),
        column_list(table),
        path.display().to_string().replace('\'', "''")
    )
}

fn column_list(table: EventType) -> String {
    batch::columns(table)
        .iter()
        .map(|(c, t)| format!("{c} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where exported events go.
pub enum Target<'a> {
    /// `<dir>/person.jsonl`, `<dir>/auction.jsonl`, `<dir>/bid.jsonl`.
    Directory(PathBuf),
    /// Topics `<prefix>person`, `<prefix>auction`, `<prefix>bid`, created with the
    /// generator's partition count when missing; generator partition p goes to
    /// topic partition p, so each partition's event time is in order.
    Topics {
        backend: &'a dyn LogBackend,
        prefix: String,
    },
}

/// Rows written per event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub table: EventType,
    /// The file or topic.
    pub destination: String,
    pub rows: u64,
}

/// Writes the events of `tables` (of `config.events` events in all) to `target`.
pub async fn export(
    config: &NexmarkConfig,
    tables: &[EventType],
    target: &Target<'_>,
) -> Result<Vec<Exported>> {
    if config.events.is_none() {
        return Err(SluiceError::sql(
            "exporting needs a number of events (an endless export never finishes)",
        ));
    }
    let channels = Arc::new(Channels::new(config.seed));
    let mut out = Vec::new();
    for &table in tables {
        let mut config = config.clone();
        config.table = table;
        let destination = match target {
            Target::Directory(dir) => dir
                .join(format!("{}.jsonl", table.name()))
                .display()
                .to_string(),
            Target::Topics { prefix, .. } => format!("{prefix}{}", table.name()),
        };
        let rel = relation(table, table.name(), &destination, config.partitions as i32)?;
        let projection = (0..rel.columns.len()).collect();
        let mut reader = NexmarkReader::with_channels(
            &config,
            rel.schema(),
            projection,
            &StartFrom::Earliest,
            Some(channels.clone()),
        );
        let encoder = RecordEncoder::new(&rel);
        let rows = match target {
            Target::Directory(dir) => write_file(
                &mut reader,
                &encoder,
                &dir.join(format!("{}.jsonl", table.name())),
            )?,
            Target::Topics { backend, .. } => {
                write_topic(
                    &mut reader,
                    &encoder,
                    *backend,
                    &destination,
                    config.partitions as i32,
                )
                .await?
            }
        };
        out.push(Exported {
            table,
            destination,
            rows,
        });
    }
    Ok(out)
}

fn write_file(reader: &mut NexmarkReader, encoder: &RecordEncoder, path: &Path) -> Result<u64> {
    let context = || format!("writing {}", path.display());
    let file = std::fs::File::create(path).map_err(|e| SluiceError::io(context(), e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rows = 0u64;
    while let Some(generated) = reader
        .generate(CHUNK_ROWS, u64::MAX)
        .map_err(|e| SluiceError::connector("generating nexmark events", e))?
    {
        for record in encoder.encode(&generated.chunk)? {
            if let Some(v) = record.value {
                w.write_all(&v).map_err(|e| SluiceError::io(context(), e))?;
                w.write_all(b"\n")
                    .map_err(|e| SluiceError::io(context(), e))?;
            }
        }
        rows += generated.chunk.num_rows() as u64;
    }
    w.flush().map_err(|e| SluiceError::io(context(), e))?;
    Ok(rows)
}

async fn write_topic(
    reader: &mut NexmarkReader,
    encoder: &RecordEncoder,
    backend: &dyn LogBackend,
    topic: &str,
    partitions: i32,
) -> Result<u64> {
    let existing = backend
        .describe_topic(topic)
        .await
        .map_err(|e| SluiceError::connector(format!("looking up topic '{topic}'"), e))?;
    let topic_partitions = match existing {
        Some(info) => info.partitions,
        None => {
            backend
                .create_topic(topic, partitions)
                .await
                .map_err(|e| SluiceError::connector(format!("creating topic '{topic}'"), e))?;
            partitions
        }
    };
    let mut writer = backend
        .writer(topic)
        .await
        .map_err(|e| SluiceError::connector(format!("writing topic '{topic}'"), e))?;
    let mut rows = 0u64;
    while let Some(generated) = reader
        .generate(CHUNK_ROWS, u64::MAX)
        .map_err(|e| SluiceError::connector("generating nexmark events", e))?
    {
        let mut records = encoder.encode(&generated.chunk)?;
        for r in &mut records {
            r.partition = Some(generated.partition % topic_partitions.max(1));
        }
        rows += records.len() as u64;
        writer
            .send(records)
            .await
            .map_err(|e| SluiceError::connector(format!("writing topic '{topic}'"), e))?;
    }
    writer
        .flush()
        .await
        .map_err(|e| SluiceError::connector(format!("flushing topic '{topic}'"), e))?;
    Ok(rows)
}
