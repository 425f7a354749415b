//! The final results of a windowed aggregate, read as a stream by the operator
//! after it (a join, or an aggregate over the windows' results).
//!
//! A closed window's row is emitted once and never changes, so the changelog
//! of a final windowed aggregate is a stream of inserts. Its rows take the
//! window's last instant (end − 1 ms) as their event time, as Flink's
//! `window_time`, so that what comes next can bound and expire by it. The
//! watermark is held back by the grace period: a window closes when the
//! watermark passes its end + grace, so every result still to come is at
//! least `watermark − grace` and none of them is late downstream.

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type};

use super::Operator;
use crate::dataflow::{Chunk, Message, Op};
use crate::error::{Result, SluiceError};

pub struct WindowResults {
    /// The column holding each row's window end.
    end_column: usize,
    grace: i64,
}

impl WindowResults {
    pub fn new(end_column: usize, grace: i64) -> Self {
        WindowResults { end_column, grace }
    }
}

impl Operator for WindowResults {
    fn describe(&self) -> String {
        format!(
            "WindowResults: a stream timed by window end − 1 ms (column {}), watermark − {} ms",
            self.end_column, self.grace
        )
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        // A delete stands for a row a HAVING filtered out: as a stream, no row.
        let chunk = match &chunk.ops {
            Some(ops) if ops.values().contains(&(Op::Delete as i8)) => {
                let keep = ops
                    .iter()
                    .map(|op| Some(op != Some(Op::Delete as i8)))
                    .collect();
                chunk.filter(&keep)?
            }
            _ => chunk,
        };
        if chunk.is_empty() {
            return Ok(());
        }
        let ends = arrow::compute::cast(chunk.batch.column(self.end_column), &DataType::Int64)?;
        let ends = ends.as_primitive_opt::<Int64Type>().ok_or_else(|| {
            SluiceError::Internal("a window end column is not a timestamp".into())
        })?;
        if ends.null_count() > 0 {
            return Err(SluiceError::Internal("a window without an end".into()));
        }
        let rowtime: Int64Array = ends.unary(|end| end - 1);
        out.push(Message::Chunk(Chunk::new(chunk.batch, rowtime, None)));
        Ok(())
    }

    fn on_watermark(
        &mut self,
        _input: usize,
        watermark: i64,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        out.push(Message::Watermark(watermark.saturating_sub(self.grace)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int8Array, TimestampMillisecondArray, UInt64Array};
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::*;

    #[test]
    fn final_rows_become_a_stream_timed_by_their_window() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::UInt64, false),
            Field::new(
                "window_end",
                crate::operators::session_aggregate::window_column_type(),
                false,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from(vec![3, 4, 5])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    10_000, 10_000, 20_000,
                ])),
            ],
        )
        .unwrap();
        let chunk = Chunk::new(
            batch,
            Int64Array::from(vec![9_100, 9_500, 12_000]),
            Some(Int8Array::from(vec![1, -1, 1])),
        );
        let mut op = WindowResults::new(1, 2_000);
        let mut out = Vec::new();
        op.on_chunk(0, chunk, &mut out).unwrap();
        op.on_watermark(0, 22_000, &mut out).unwrap();
        let [Message::Chunk(c), Message::Watermark(w)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(c.ops.is_none());
        assert_eq!(c.rowtime.values().to_vec(), vec![9_999, 19_999]);
        assert_eq!(
            c.batch
                .column(0)
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .values()
                .to_vec(),
            vec![3, 5]
        );
        assert_eq!(*w, 20_000);
    }
}
