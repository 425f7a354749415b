//! Streaming operators. Each takes [`Message`]s and emits messages; stateful ones
//! write their changes into the checkpoint when a barrier passes and read them back
//! on restart.

pub mod aggregate_inputs;
pub mod filter;
pub mod group_aggregate;
pub mod lookup_join;
pub mod materialize;
pub mod project;
pub mod retractions;
pub mod session_aggregate;
pub mod window_assign;
pub mod window_final_aggregate;
mod window_panes;

use crate::dataflow::{Chunk, Message};
use crate::error::Result;
use crate::state::{QueryState, StateWriteBatch};

pub use filter::Filter;
pub use group_aggregate::GroupAggregate;
pub use lookup_join::LookupJoin;
pub use materialize::{Materialize, MaterializedTable};
pub use project::Project;
pub use retractions::ChangelogRetractions;
pub use session_aggregate::SessionAggregate;
pub use window_assign::WindowAssign;
pub use window_final_aggregate::WindowFinalAggregate;

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
}
