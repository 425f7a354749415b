//! Streaming operators. Each takes [`Message`]s and emits messages; stateful ones
//! write their changes into the checkpoint when a barrier passes and read them back
//! on restart.

pub mod aggregate_inputs;
pub mod changelog_join;
pub mod evaluate;
pub mod filter;
pub mod group_aggregate;
pub mod interval_join;
pub mod join_rows;
pub mod lookup_join;
pub mod materialize;
pub mod project;
pub mod retractions;
pub mod session_aggregate;
#[cfg(test)]
mod test_rng;
pub mod top_n;
pub mod window_assign;
pub mod window_final_aggregate;
mod window_panes;
pub mod window_results;
mod window_state;

use crate::dataflow::{Chunk, Message};
use crate::error::Result;
use crate::state::{QueryState, StateWriteBatch};

pub use changelog_join::ChangelogJoin;
pub use filter::Filter;
pub use group_aggregate::GroupAggregate;
pub use interval_join::IntervalJoin;
pub use lookup_join::LookupJoin;
pub use materialize::{Materialize, MaterializedTable};
pub use project::Project;
pub use retractions::ChangelogRetractions;
pub use session_aggregate::SessionAggregate;
pub use top_n::TopN;
pub use window_assign::WindowAssign;
pub use window_final_aggregate::WindowFinalAggregate;
pub use window_results::WindowResults;

/// Which input of a two-input operator a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    /// 0 for the left input, 1 for the right (per-side arrays).
    pub fn index(self) -> usize {
        match self {
            Side::Left => 0,
            Side::Right => 1,
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

/// An operator with two inputs (joins). Its watermark is the smaller of its
/// inputs' (see [`SideWatermarks`]).
pub trait JoinOperator: Send {
    fn describe(&self) -> String;

    fn on_chunk(&mut self, side: Side, chunk: Chunk, out: &mut Vec<Message>) -> Result<()>;

    fn on_watermark(&mut self, side: Side, watermark: i64, out: &mut Vec<Message>) -> Result<()>;

    fn state_entries(&self) -> usize {
        0
    }

    fn snapshot(&mut self, _id: u16, _batch: &mut StateWriteBatch) -> Result<()> {
        Ok(())
    }

    fn restore(&mut self, _id: u16, _state: &QueryState) -> Result<()> {
        Ok(())
    }

    /// The query never checkpoints (push queries, benchmarks): changes need not
    /// be tracked for `snapshot`.
    fn without_checkpoints(&mut self) {}
}

/// The watermarks of a two-input operator's inputs.
#[derive(Debug, Clone, Copy)]
pub struct SideWatermarks {
    pub left: i64,
    pub right: i64,
}

impl Default for SideWatermarks {
    fn default() -> Self {
        SideWatermarks {
            left: i64::MIN,
            right: i64::MIN,
        }
    }
}

impl SideWatermarks {
    pub fn get(&self, side: Side) -> i64 {
        match side {
            Side::Left => self.left,
            Side::Right => self.right,
        }
    }

    /// Records `side`'s watermark; returns the combined one (the minimum) when it
    /// moved forward.
    pub fn update(&mut self, side: Side, watermark: i64) -> Option<i64> {
        let before = self.combined();
        let slot = match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        };
        *slot = (*slot).max(watermark);
        let after = self.combined();
        (after > before).then_some(after)
    }

    pub fn combined(&self) -> i64 {
        self.left.min(self.right)
    }
}

pub trait Operator: Send {
    /// For EXPLAIN and logs.
    fn describe(&self) -> String;

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<()>;

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Message>) -> Result<()> {
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// Entries of keyed state held (groups, open windows, sessions), for metrics.
    fn state_entries(&self) -> usize {
        0
    }

    /// Writes state changed since the last checkpoint under operator id `id`.
    fn snapshot(&mut self, _id: u16, _batch: &mut StateWriteBatch) -> Result<()> {
        Ok(())
    }

    /// Loads the state written by `snapshot` (called once, before any input).
    fn restore(&mut self, _id: u16, _state: &QueryState) -> Result<()> {
        Ok(())
    }

    /// The query never checkpoints (push queries, benchmarks): changes need not
    /// be tracked for `snapshot`.
    fn without_checkpoints(&mut self) {}
}
