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

    /// The side a join's input number stands for.
    pub fn of_input(input: usize) -> Side {
        if input == 0 {
            Side::Left
        } else {
            Side::Right
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
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

/// Where an operator writes its state when a checkpoint barrier passes it.
pub struct Checkpoint<'a> {
    /// The operator's state id (its node position in the query's dataflow).
    pub state_id: u16,
    pub epoch: u64,
    /// The epoch's writes; they commit atomically with the source offsets.
    pub writes: &'a mut StateWriteBatch,
}

/// The one protocol every operator speaks, one input or several. Messages
/// come tagged with the number of the input they arrived on (0 for
/// single-input operators; 0 left and 1 right for joins).
///
/// The dataflow calls `on_barrier` once every input has delivered the
/// barrier (alignment) and forwards the barrier after it; it calls `on_end`
/// for each input that ends and forwards the end once every input has ended.
pub trait Operator: Send {
    /// For EXPLAIN and logs.
    fn describe(&self) -> String;

    /// How many inputs the operator reads.
    fn inputs(&self) -> usize {
        1
    }

    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()>;

    /// Event time on `input` is complete up to `watermark`. The default passes
    /// it on, which is right for single-input operators only.
    fn on_watermark(
        &mut self,
        _input: usize,
        watermark: i64,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// A checkpoint barrier has arrived on every input: write the state
    /// changed since the last checkpoint into `checkpoint`. Output pushed here
    /// goes downstream before the barrier.
    fn on_barrier(
        &mut self,
        _checkpoint: &mut Checkpoint<'_>,
        _out: &mut Vec<Message>,
    ) -> Result<()> {
        Ok(())
    }

    /// Nothing more will arrive on `input` (a bounded input was read to its
    /// end): whatever waits for time on that input can close now.
    fn on_end(&mut self, _input: usize, _out: &mut Vec<Message>) -> Result<()> {
        Ok(())
    }

    /// Entries of keyed state held (groups, open windows, sessions), for metrics.
    fn state_entries(&self) -> usize {
        0
    }

    /// Loads the state written at barriers under state id `id` (called once,
    /// before any input).
    fn restore(&mut self, _id: u16, _state: &QueryState) -> Result<()> {
        Ok(())
    }

    /// The query never checkpoints (push queries, benchmarks): changes need not
    /// be tracked for `on_barrier`.
    fn without_checkpoints(&mut self) {}
}

/// Passes a checkpoint barrier of epoch 1 through `op` alone (operator tests).
#[cfg(test)]
pub(crate) fn checkpoint<O: Operator + ?Sized>(
    op: &mut O,
    state_id: u16,
    writes: &mut StateWriteBatch,
) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    let mut checkpoint = Checkpoint {
        state_id,
        epoch: 1,
        writes,
    };
    op.on_barrier(&mut checkpoint, &mut out)?;
    Ok(out)
}
