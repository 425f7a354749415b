//! DataFusion tables for Sluice relations, used by pull queries (and for schemas
//! when planning continuous queries).

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{Relation, SourceConnector};
use crate::connectors::file::FileReader;
use crate::connectors::file_access::FileAccess;
use crate::connectors::{LogReader, SharedBackend, StartFrom};
use crate::error::SluiceError;
use crate::formats::RecordDecoder;
use crate::operators::MaterializedTable;

/// Lower and upper bound of a key range, in the key's row format.
type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A table's materialized rows: a pull query sees a consistent snapshot.
pub struct MaterializedProvider {
    pub table: Arc<MaterializedTable>,
}

impl fmt::Debug for MaterializedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaterializedProvider").finish()
    }
}

#[async_trait]
impl TableProvider for MaterializedProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters on the key are used to read only the rows they can select
    /// (see `key_filters`); DataFusion applies every filter again to what
    /// the scan returns.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let keys = self.searchable_keys();
        Ok(filters
            .iter()
            .map(|f| {
                if super::key_filters::constrains_key(f, &keys) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some((lower, upper)) = self.streamed_range(filters)? {
            let stream = RangeStream {
                table: self.table.clone(),
                lower,
                upper,
                limit,
                schema: self.table.schema(),
            };
            return Ok(Arc::new(StreamingTableExec::try_new(
                self.table.schema(),
                vec![Arc::new(stream)],
                projection,
                Vec::new(),
                false,
                limit,
            )?));
        }
        let batch = self
            .read(filters, limit)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.table.schema(),
            projection.cloned(),
        )?)
    }
}

/// A key range of a stored table, read in batches by a blocking task from one
/// snapshot of its committed rows (see `MaterializedTable::stream_range`).
struct RangeStream {
    table: Arc<MaterializedTable>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    limit: Option<usize>,
    schema: SchemaRef,
}

impl fmt::Debug for RangeStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeStream")
            .field("limit", &self.limit)
            .finish()
    }
}

impl PartitionStream for RangeStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        // Two batches in flight: the reader stays one batch ahead of the query.
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let table = self.table.clone();
        let (lower, upper, limit) = (self.lower.clone(), self.upper.clone(), self.limit);
        builder.spawn_blocking(move || {
            table
                .stream_range(
                    lower.as_ref().map(Vec::as_slice),
                    upper.as_ref().map(Vec::as_slice),
                    limit,
                    crate::operators::materialize::SCAN_BATCH_ROWS,
                    // A failed send: the query was cancelled or has enough.
                    |batch| Ok(tx.blocking_send(Ok(batch)).is_ok()),
                )
                .map_err(|e| DataFusionError::External(Box::new(e)))
        });
        builder.build()
    }
}

impl MaterializedProvider {
    /// The key columns a selection may search by: all of them, when SQL
    /// equality and order on each are those of its stored bytes (not for
    /// floats, where -0 = 0 and NaN compare differently).
    fn searchable_keys(&self) -> Vec<&str> {
        let fields = self.table.key_fields();
        if fields.iter().all(|(_, t)| bytes_order_is_sql_order(t)) {
            fields.into_iter().map(|(name, _)| name).collect()
        } else {
            Vec::new()
        }
    }

    /// The key range to stream, when the table is stored and `filters`
    /// select no point keys: a range, or every row.
    fn streamed_range(&self, filters: &[Expr]) -> Result<Option<KeyBounds>> {
        use super::key_filters::{select, KeySelection};
        if !self.table.is_stored() {
            return Ok(None);
        }
        let keys = self.searchable_keys();
        let (lower, upper) = match select(filters, &keys) {
            KeySelection::Points(_) => return Ok(None),
            KeySelection::All => return Ok(Some((Bound::Unbounded, Bound::Unbounded))),
            KeySelection::Range { lower, upper } => (lower, upper),
        };
        let bounds = (self.encode_bound(lower)?, self.encode_bound(upper)?);
        Ok(Some(match bounds {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => (Bound::Unbounded, Bound::Unbounded),
        }))
    }

    /// A key bound in the key's row format; `None` when the key type cannot
    /// hold it (then every row is read, and DataFusion filters).
    fn encode_bound(&self, bound: Bound<ScalarValue>) -> Result<Option<Bound<Vec<u8>>>> {
        let (value, included) = match bound {
            Bound::Unbounded => return Ok(Some(Bound::Unbounded)),
            Bound::Included(v) => (v, true),
            Bound::Excluded(v) => (v, false),
        };
        let encoded = self
            .table
            .encode_keys(&[value.to_array()?])
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(encoded.into_iter().next().flatten().map(|k| {
            if included {
                Bound::Included(k)
            } else {
                Bound::Excluded(k)
            }
        }))
    }

    /// The rows `filters` and `limit` leave to read, in key order.
    fn read(&self, filters: &[Expr], limit: Option<usize>) -> crate::error::Result<RecordBatch> {
        use super::key_filters::{select, KeySelection};
        let keys = self.searchable_keys();
        match select(filters, &keys) {
            KeySelection::All => self.table.select_rows(|_| true, limit),
            KeySelection::Points(points) => {
                let columns = (0..keys.len())
                    .map(|c| ScalarValue::iter_to_array(points.iter().map(|p| p[c].clone())))
                    .collect::<Result<Vec<_>>>()?;
                self.table.rows_of_keys(&columns)
            }
            KeySelection::Range { lower, upper } => {
                match (self.encode_bound(lower)?, self.encode_bound(upper)?) {
                    (Some(lo), Some(hi)) => self.table.select_range(
                        lo.as_ref().map(Vec::as_slice),
                        hi.as_ref().map(Vec::as_slice),
                        limit,
                    ),
                    _ => self.table.select_rows(|_| true, limit),
                }
            }
        }
    }
}

/// Key types whose row-format bytes compare as SQL compares their values.
fn bytes_order_is_sql_order(t: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType::*;
    matches!(
        t,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Boolean
            | Date32
            | Date64
            | Timestamp(_, _)
            | Decimal128(_, _)
    )
}

/// A stream (or a table without materialized rows): scanning reads the topic from
/// the beginning to its current end.
pub struct TopicProvider {
    pub relation: Relation,
    pub backend: SharedBackend,
    /// Confines a file stream's scan (its path was checked when created, but
    /// the files it lists may have changed since).
    pub files: Arc<FileAccess>,
}

impl fmt::Debug for TopicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicProvider")
            .field("topic", &self.relation.topic)
            .finish()
    }
}

/// Opens a reader over a relation's records: its topic, or its files. `tail`
/// keeps a `follow = true` file source waiting for new lines.
pub async fn open_reader(
    backend: &SharedBackend,
    files: &FileAccess,
    relation: &Relation,
    start: StartFrom,
    tail: bool,
) -> crate::error::Result<Box<dyn LogReader>> {
    match &relation.connector {
        SourceConnector::File { path, follow } => {
            FileReader::open(path, files, start, *follow && tail)
                .map(|r| Box::new(r) as Box<dyn LogReader>)
                .map_err(|e| SluiceError::connector(format!("reading '{path}'"), e))
        }
        SourceConnector::Nexmark(config) => {
            crate::connectors::nexmark::open_relation(relation.schema(), config, &start)
                .map(|r| Box::new(r) as Box<dyn LogReader>)
                .map_err(|e| SluiceError::Catalog(format!("{}: {e}", relation.name)))
        }
        SourceConnector::Topic => backend
            .reader(&relation.topic, start)
            .await
            .map_err(|e| SluiceError::connector(format!("reading topic '{}'", relation.topic), e)),
    }
}

impl TopicProvider {
    pub async fn read_all(
        relation: &Relation,
        backend: &SharedBackend,
        files: &FileAccess,
    ) -> crate::error::Result<Vec<RecordBatch>> {
        if let SourceConnector::Nexmark(config) = &relation.connector {
            if config.events.is_none() {
                return Err(SluiceError::sql(format!(
                    "{} is an endless nexmark stream, so a SELECT over it would never finish",
                    relation.name
                ))
                .with_hint(
                    "add EMIT CHANGES (and a LIMIT), or give the source a number of events",
                ));
            }
        }
        let mut reader = open_reader(backend, files, relation, StartFrom::Earliest, false).await?;
        let mut decoder = RecordDecoder::new(relation)?;
        let mut batches = Vec::new();
        loop {
            if reader
                .caught_up()
                .await
                .map_err(|e| crate::error::SluiceError::connector("reading topic", e))?
            {
                break;
            }
            if let Some(generated) = reader.as_chunk_source() {
                let rows = generated
                    .next_rows(8192, Duration::from_millis(50))
                    .await
                    .map_err(|e| SluiceError::connector("generating rows", e))?;
                if let Some(rows) = rows {
                    batches.push(rows.chunk.batch);
                }
                continue;
            }
            let records = reader
                .poll(8192, Duration::from_millis(50))
                .await
                .map_err(|e| crate::error::SluiceError::connector("reading topic", e))?;
            if records.is_empty() {
                continue;
            }
            let decoded = decoder.decode(&records)?;
            if !decoded.chunk.is_empty() {
                batches.push(decoded.chunk.batch);
            }
        }
        Ok(batches)
    }
}

#[async_trait]
impl TableProvider for TopicProvider {
    fn schema(&self) -> SchemaRef {
        self.relation.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = Self::read_all(&self.relation, &self.backend, &self.files)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.relation.schema(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use crate::dataflow::Chunk;

    /// Three keyed tables of 2,000 rows: a BIGINT key, a composite (INT,
    /// VARCHAR) key and a DOUBLE key (with -0 and NaN).
    fn tables() -> Vec<(&'static str, Arc<MaterializedTable>, RecordBatch)> {
        let n = 2_000i64;
        let one = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        let one_batch = RecordBatch::try_new(
            one.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i * 7 - 5_000))),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("v{i}")),
                )),
            ],
        )
        .unwrap();
        let two = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let two_batch = RecordBatch::try_new(
            two.clone(),
            vec![
                Arc::new(Int32Array::from_iter_values(
                    (0..n).map(|i| (i % 40) as i32),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("b{}", i / 40)),
                )),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap();
        let float = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Float64, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let mut floats: Vec<f64> = (0..n - 2).map(|i| i as f64 / 4.0 - 100.0).collect();
        floats.push(-0.0);
        floats.push(f64::NAN);
        let float_batch = RecordBatch::try_new(
            float.clone(),
            vec![
                Arc::new(Float64Array::from(floats)),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap();
        [
            ("one", one_batch, vec![0]),
            ("two", two_batch, vec![0, 1]),
            ("float", float_batch, vec![0]),
        ]
        .into_iter()
        .map(|(name, batch, keys)| {
            let table = MaterializedTable::new(batch.schema(), keys).unwrap();
            let times = Int64Array::from_iter_values(0..batch.num_rows() as i64);
            table
                .apply(&Chunk::new(batch.clone(), times, None))
                .unwrap();
            (name, table, batch)
        })
        .collect()
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// Every filter shape gives what DataFusion gives over the same rows in a
    /// plain memory table; key filters read only the rows they select.
    #[tokio::test]
    async fn key_filters_give_the_batch_answer() {
        let ours = SessionContext::new();
        let oracle = SessionContext::new();
        let mut providers = Vec::new();
        for (name, table, batch) in tables() {
            let provider = Arc::new(MaterializedProvider { table });
            ours.register_table(name, provider.clone()).unwrap();
            oracle
                .register_table(
                    name,
                    Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap()),
                )
                .unwrap();
            providers.push((name, provider));
        }
        let queries = [
            "SELECT * FROM one WHERE k = 5",
            "SELECT * FROM one WHERE k = 3",
            "SELECT * FROM one WHERE 12 = k",
            "SELECT * FROM one WHERE k IN (-5000, 5, 9, 12, 8993, 99999)",
            "SELECT * FROM one WHERE k = 5 AND v = 'v715'",
            "SELECT * FROM one WHERE k = 5 AND v = 'nope'",
            "SELECT * FROM one WHERE k > 8900",
            "SELECT * FROM one WHERE k >= 8900 AND k < 8950",
            "SELECT * FROM one WHERE k BETWEEN -5000 AND -4980",
            "SELECT * FROM one WHERE k > -4990 AND k <= 12 AND k >= 5",
            "SELECT * FROM one WHERE k < -4990 OR k > 8990",
            "SELECT * FROM one WHERE k > 99999999999",
            "SELECT * FROM one WHERE k = 2.5",
            "SELECT * FROM one WHERE k = 5 OR k = 12",
            "SELECT * FROM one WHERE v = 'v7'",
            "SELECT * FROM one ORDER BY k LIMIT 3",
            "SELECT * FROM one LIMIT 0",
            "SELECT * FROM two WHERE a = 3 AND b = 'b7'",
            "SELECT * FROM two WHERE a IN (1, 2) AND b IN ('b0', 'b49', 'b50')",
            "SELECT * FROM two WHERE a = 3",
            "SELECT * FROM two WHERE b = 'b7' AND a > 37",
            "SELECT * FROM float WHERE k = 0",
            "SELECT * FROM float WHERE k >= 0 AND k < 1",
            "SELECT * FROM float WHERE k = -100.0",
        ];
        for sql in queries {
            assert_eq!(rows(&ours, sql).await, rows(&oracle, sql).await, "{sql}");
        }
        // LIMIT without ORDER BY: the smallest keys, like a full read.
        assert_eq!(
            rows(&ours, "SELECT k FROM one LIMIT 2").await,
            rows(&oracle, "SELECT k FROM one ORDER BY k LIMIT 2").await
        );

        // What the scan reads, not only what the query answers.
        let one = &providers[0].1;
        let read = |filters: Vec<Expr>, limit: Option<usize>| {
            one.read(&filters, limit).unwrap().num_rows()
        };
        use datafusion::logical_expr::{col, lit};
        assert_eq!(read(vec![col("k").eq(lit(5i64))], None), 1);
        assert_eq!(read(vec![col("k").eq(lit(3i64))], None), 0);
        assert_eq!(read(vec![col("k").gt_eq(lit(8900i64))], None), 14);
        assert_eq!(read(vec![col("v").eq(lit("v1"))], None), 2_000);
        assert_eq!(read(vec![], Some(5)), 5);
        let float = &providers[2].1;
        assert_eq!(
            float
                .read(&[col("k").eq(lit(0.0f64))], None)
                .unwrap()
                .num_rows(),
            2_000,
            "float keys are read whole: -0 = 0 in SQL, not in bytes"
        );
    }
}
