//! Puts each event into its windows: appends `window_start` / `window_end` columns
//! (one output row per window the event belongs to: one for tumbling windows,
//! size/advance for hopping, up to max/step for cumulating) and takes out events
//! whose every window has already closed, which leave as [`Message::Late`].
//!
//! For session windows each event gets its own proto-session `[t, t + gap)`; the
//! session aggregate merges them.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::{Checkpoint, Operator};
use crate::dataflow::{Chunk, Message};
use crate::error::Result;
use crate::sql::WindowKind;
use crate::state::QueryState;

/// Calls `f(start, end)` for every window of `kind` containing event time `t`,
/// oldest first.
pub fn windows_of(kind: WindowKind, t: i64, mut f: impl FnMut(i64, i64)) {
    // Times within two window sizes of the i64 range have no window (the arithmetic
    // below would overflow); such events count as late.
    let margin = kind.max_size().saturating_mul(2);
    if t.checked_add(margin).is_none() || t.checked_sub(margin).is_none() {
        return;
    }
    match kind {
        WindowKind::Tumbling { size } => {
            let start = t - t.rem_euclid(size);
            f(start, start + size);
        }
        WindowKind::Hopping { size, advance } => {
            let last = t - t.rem_euclid(advance);
            let mut start = last;
            // Oldest first, so output is in window order.
            while start - advance + size > t {
                start -= advance;
            }
            while start <= last {
                f(start, start + size);
                start += advance;
            }
        }
        WindowKind::Cumulate { step, max } => {
            let start = t - t.rem_euclid(max);
            let mut end = start + (t - start) / step * step + step;
            while end <= start + max {
                f(start, end);
                end += step;
            }
        }
        WindowKind::Session { gap } => f(t, t.saturating_add(gap)),
    }
}

pub struct WindowAssign {
    kind: WindowKind,
    grace: i64,
    /// Input columns + window start + window end.
    schema: SchemaRef,
    /// The event-time watermark seen so far (never goes back).
    watermark: i64,
    watermark_dirty: bool,
    /// False when the aggregate after it assigns windows itself: each event passes
    /// once (if any of its windows is open), its window columns unspecified.
    expand: bool,
}

impl WindowAssign {
    pub fn new(kind: WindowKind, grace: i64, schema: SchemaRef) -> Self {
        WindowAssign {
            kind,
            grace,
            schema,
            watermark: i64::MIN,
            watermark_dirty: false,
            expand: true,
        }
    }

    /// One output row per event: the next operator assigns the windows.
    pub fn collapsed(mut self) -> Self {
        self.expand = false;
        self
    }

    fn is_closed(&self, end: i64) -> bool {
        end.saturating_add(self.grace) <= self.watermark
    }
}

impl Operator for WindowAssign {
    fn describe(&self) -> String {
        format!(
            "WindowAssign: {:?}, grace={}ms{}",
            self.kind,
            self.grace,
            if self.expand {
                ""
            } else {
                ", assigned by the aggregate"
            }
        )
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        let n = chunk.num_rows();
        let mut rows: Vec<u32> = Vec::with_capacity(n);
        let mut starts: Vec<i64> = Vec::with_capacity(n);
        let mut ends: Vec<i64> = Vec::with_capacity(n);
        let mut late: Vec<u32> = Vec::new();
        for (i, t) in chunk.rowtime.values().iter().enumerate() {
            let before = rows.len();
            let expand = self.expand;
            windows_of(self.kind, *t, |start, end| {
                if !self.is_closed(end) && (expand || rows.len() == before) {
                    rows.push(i as u32);
                    starts.push(start);
                    ends.push(end);
                }
            });
            if rows.len() == before {
                late.push(i as u32);
            }
        }
        if !late.is_empty() {
            let idx = UInt32Array::from(late);
            let columns = chunk
                .batch
                .columns()
                .iter()
                .map(|c| take(c, &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let batch = RecordBatch::try_new(chunk.batch.schema(), columns)?;
            let rowtime = take(&chunk.rowtime, &idx, None)?;
            let rowtime = rowtime
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .unwrap_or_else(|| Int64Array::new_null(0));
            out.push(Message::Late(Chunk::new(batch, rowtime, None)));
        }
        if rows.is_empty() {
            return Ok(());
        }
        // One window per event and nothing late: the input columns pass unchanged.
        let identity = rows.len() == n;
        let (mut columns, rowtime): (Vec<ArrayRef>, Int64Array) = if identity {
            (chunk.batch.columns().to_vec(), chunk.rowtime)
        } else {
            let idx = UInt32Array::from(rows);
            let columns = chunk
                .batch
                .columns()
                .iter()
                .map(|c| take(c, &idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let rowtime = take(&chunk.rowtime, &idx, None)?;
            let rowtime = rowtime
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .unwrap_or_else(|| Int64Array::new_null(0));
            (columns, rowtime)
        };
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        out.push(Message::Chunk(Chunk::new(batch, rowtime, None)));
        Ok(())
    }

    fn on_watermark(
        &mut self,
        _input: usize,
        watermark: i64,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.watermark_dirty = true;
        }
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    // The watermark is state: after a restart, events replayed from the last
    // checkpoint must be judged late exactly as before, or a closed window would
    // reopen with part of its events.
    fn on_barrier(
        &mut self,
        checkpoint: &mut Checkpoint<'_>,
        _out: &mut Vec<Message>,
    ) -> Result<()> {
        let (id, batch) = (checkpoint.state_id, &mut *checkpoint.writes);
        if std::mem::take(&mut self.watermark_dirty) {
            batch.put(id, b"watermark", self.watermark.to_be_bytes().to_vec());
        }
        Ok(())
    }

    fn restore(&mut self, id: u16, state: &QueryState) -> Result<()> {
        for (key, value) in state.scan(id)? {
            if key == b"watermark" {
                if let Ok(bytes) = <[u8; 8]>::try_from(value.as_slice()) {
                    self.watermark = i64::from_be_bytes(bytes);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn assign(
        kind: WindowKind,
        grace: i64,
        times: &[i64],
        watermark: i64,
    ) -> (Vec<(i32, i64, i64)>, usize) {
        let input = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int32, false),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
        ]));
        let mut op = WindowAssign::new(kind, grace, schema);
        let mut out = Vec::new();
        op.on_watermark(0, watermark, &mut out).unwrap();
        out.clear();
        let values = Int32Array::from_iter_values(0..times.len() as i32);
        let batch = RecordBatch::try_new(input, vec![Arc::new(values)]).unwrap();
        op.on_chunk(
            0,
            Chunk::new(batch, Int64Array::from(times.to_vec()), None),
            &mut out,
        )
        .unwrap();
        let mut rows = Vec::new();
        let mut late = 0;
        for m in out {
            match m {
                Message::Chunk(c) => {
                    let v = c
                        .batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int32Array>()
                        .unwrap();
                    let s = c
                        .batch
                        .column(1)
                        .as_any()
                        .downcast_ref::<TimestampMillisecondArray>()
                        .unwrap();
                    let e = c
                        .batch
                        .column(2)
                        .as_any()
                        .downcast_ref::<TimestampMillisecondArray>()
                        .unwrap();
                    for i in 0..c.num_rows() {
                        rows.push((v.value(i), s.value(i), e.value(i)));
                    }
                }
                Message::Late(c) => late += c.num_rows(),
                _ => {}
            }
        }
        (rows, late)
    }

    #[test]
    fn tumbling_windows_are_epoch_aligned_and_half_open() {
        let (rows, late) = assign(
            WindowKind::Tumbling { size: 10 },
            0,
            &[0, 9, 10, -1],
            i64::MIN,
        );
        assert_eq!(rows, vec![(0, 0, 10), (1, 0, 10), (2, 10, 20), (3, -10, 0)]);
        assert_eq!(late, 0);
    }

    #[test]
    fn hopping_windows_cover_size_over_advance() {
        let (rows, _) = assign(
            WindowKind::Hopping {
                size: 10,
                advance: 5,
            },
            0,
            &[7],
            i64::MIN,
        );
        assert_eq!(rows, vec![(0, 0, 10), (0, 5, 15)]);
        let (rows, _) = assign(
            WindowKind::Hopping {
                size: 10,
                advance: 3,
            },
            0,
            &[7],
            i64::MIN,
        );
        assert_eq!(rows, vec![(0, 0, 10), (0, 3, 13), (0, 6, 16)]);
    }

    #[test]
    fn cumulating_windows_grow_by_step() {
        let (rows, _) = assign(
            WindowKind::Cumulate { step: 10, max: 30 },
            0,
            &[12, 30],
            i64::MIN,
        );
        assert_eq!(
            rows,
            vec![
                (0, 0, 20),
                (0, 0, 30),
                (1, 30, 40),
                (1, 30, 50),
                (1, 30, 60)
            ]
        );
    }

    #[test]
    fn times_at_the_ends_of_the_range_have_no_window() {
        let (rows, late) = assign(
            WindowKind::Hopping {
                size: 10,
                advance: 5,
            },
            0,
            &[i64::MAX - 3, i64::MIN + 3],
            i64::MIN,
        );
        assert!(rows.is_empty());
        assert_eq!(late, 2);
    }

    #[test]
    fn closed_windows_drop_events_and_report_them_late() {
        // Watermark 20, grace 5: [0,10) closed at 15, [10,20) open until 25.
        let (rows, late) = assign(WindowKind::Tumbling { size: 10 }, 5, &[3, 12, 25], 20);
        assert_eq!(rows, vec![(1, 10, 20), (2, 20, 30)]);
        assert_eq!(late, 1);
        // A hopping event keeps its open windows and loses the closed ones.
        let (rows, late) = assign(
            WindowKind::Hopping {
                size: 10,
                advance: 5,
            },
            0,
            &[12],
            15,
        );
        assert_eq!(rows, vec![(0, 10, 20)]);
        assert_eq!(late, 0);
    }
}
