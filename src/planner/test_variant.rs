//! A test-only planner switch (`ServerConfig::test_planner_variant`): every
//! persistent query is planned with one more operator, a pass-through at the
//! end of its pipeline, the way a later planner might plan the same SQL
//! differently. Tests use it to show that state checkpointed under one plan is
//! never read by another.

use crate::dataflow::{Chunk, Message};
use crate::error::Result;
use crate::operators::Operator;

pub struct Passthrough;

impl Operator for Passthrough {
    fn describe(&self) -> String {
        "Passthrough".into()
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
        out.push(Message::Chunk(chunk));
        Ok(())
    }
}
