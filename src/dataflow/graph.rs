//! The operator graph of a query: a chain of operators after each input, chains
//! joined pairwise by two-input operators into one tree whose root feeds the sink.
//!
//! Node indices are the operators' state ids, so a plan must build its nodes in
//! the same order every time it is planned (the planner walks the SQL plan
//! deterministically: left input, right input, then the join).

use crate::dataflow::Message;
use crate::error::Result;
use crate::operators::{JoinOperator, Operator, Side};
use crate::state::{QueryState, StateWriteBatch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Node(usize, Side),
    Output,
}

enum Stage {
    Unary(Box<dyn Operator>),
    Join(Box<dyn JoinOperator>),
}

struct Node {
    stage: Stage,
    target: Target,
}

/// Operators wired from numbered inputs to one output.
pub struct Dataflow {
    nodes: Vec<Node>,
    /// Where each input's messages enter (several places when the query reads
    /// the input more than once).
    inputs: Vec<Vec<Target>>,
}

impl Dataflow {
    /// One input, straight to the output.
    pub fn input() -> Dataflow {
        Dataflow {
            nodes: Vec::new(),
            inputs: vec![vec![Target::Output]],
        }
    }

    /// A chain of operators after one input.
    pub fn chain(operators: Vec<Box<dyn Operator>>) -> Dataflow {
        let mut flow = Dataflow::input();
        for op in operators {
            flow.push(op);
        }
        flow
    }

    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// Appends `op` at the output; returns its node id.
    pub fn push(&mut self, op: Box<dyn Operator>) -> usize {
        self.append(Stage::Unary(op))
    }

    /// Replaces the operator at node `id` (which must be a single-input node).
    pub fn replace(&mut self, id: usize, op: Box<dyn Operator>) {
        if let Some(node) = self.nodes.get_mut(id) {
            node.stage = Stage::Unary(op);
        }
    }

    /// Joins two flows: `left`'s inputs keep their numbers, `right`'s follow them.
    pub fn join(mut left: Dataflow, mut right: Dataflow, op: Box<dyn JoinOperator>) -> Dataflow {
        let offset = left.nodes.len();
        let join_at = offset + right.nodes.len();
        left.retarget(0, Target::Node(join_at, Side::Left));
        right.retarget(offset, Target::Node(join_at, Side::Right));
        left.nodes.extend(right.nodes);
        left.inputs.extend(right.inputs);
        left.nodes.push(Node {
            stage: Stage::Join(op),
            target: Target::Output,
        });
        left
    }

    fn append(&mut self, stage: Stage) -> usize {
        let id = self.nodes.len();
        self.retarget(0, Target::Node(id, Side::Left));
        self.nodes.push(Node {
            stage,
            target: Target::Output,
        });
        id
    }

    /// Moves every node index up by `offset` (the nodes are placed after
    /// `offset` others) and sends what went to the output to `output` instead.
    fn retarget(&mut self, offset: usize, output: Target) {
        let moved = |t: Target| match t {
            Target::Node(i, s) => Target::Node(i + offset, s),
            Target::Output => output,
        };
        for node in &mut self.nodes {
            node.target = moved(node.target);
        }
        for t in self.inputs.iter_mut().flatten() {
            *t = moved(*t);
        }
    }

    /// Input `from` reads the same as input `into`: `into` feeds both places
    /// and the inputs after `from` move down one number.
    pub fn share_input(&mut self, from: usize, into: usize) {
        if from == into || from >= self.inputs.len() || into >= self.inputs.len() {
            return;
        }
        let targets = self.inputs.remove(from);
        let into = if into > from { into - 1 } else { into };
        self.inputs[into].extend(targets);
    }

    /// Pushes one message from `input` through the graph; returns what reaches
    /// the output.
    pub fn process(&mut self, input: usize, msg: Message) -> Result<Vec<Message>> {
        let Some(targets) = self.inputs.get(input) else {
            return self.process_from(Target::Output, msg);
        };
        let Some(&last) = targets.last() else {
            return Ok(Vec::new());
        };
        let others = targets.len() - 1;
        if others == 0 {
            return self.process_from(last, msg);
        }
        let mut out = Vec::new();
        // Chunks share their Arrow buffers: a copy per reader is cheap.
        if matches!(msg, Message::Chunk(_) | Message::Watermark(_)) {
            for k in 0..others {
                let target = self.inputs[input][k];
                out.extend(self.process_from(target, msg.clone())?);
            }
        }
        out.extend(self.process_from(last, msg)?);
        Ok(out)
    }

    fn process_from(&mut self, mut target: Target, msg: Message) -> Result<Vec<Message>> {
        let mut current = vec![msg];
        while let Target::Node(i, side) = target {
            let node = &mut self.nodes[i];
            let mut next = Vec::with_capacity(current.len());
            for m in current {
                match (&mut node.stage, m) {
                    (Stage::Unary(op), Message::Chunk(c)) => op.on_chunk(c, &mut next)?,
                    (Stage::Unary(op), Message::Watermark(w)) => op.on_watermark(w, &mut next)?,
                    (Stage::Join(op), Message::Chunk(c)) => op.on_chunk(side, c, &mut next)?,
                    (Stage::Join(op), Message::Watermark(w)) => {
                        op.on_watermark(side, w, &mut next)?
                    }
                    (_, other) => next.push(other),
                }
            }
            current = next;
            target = node.target;
        }
        Ok(current)
    }

    pub fn state_entries(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.stage {
                Stage::Unary(op) => op.state_entries(),
                Stage::Join(op) => op.state_entries(),
            })
            .sum()
    }

    pub fn snapshot(&mut self, batch: &mut StateWriteBatch) -> Result<()> {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            match &mut node.stage {
                Stage::Unary(op) => op.snapshot(i as u16, batch)?,
                Stage::Join(op) => op.snapshot(i as u16, batch)?,
            }
        }
        Ok(())
    }

    /// Tells every operator that no checkpoint will come (see
    /// [`Operator::without_checkpoints`]).
    pub fn without_checkpoints(&mut self) {
        for node in &mut self.nodes {
            match &mut node.stage {
                Stage::Unary(op) => op.without_checkpoints(),
                Stage::Join(op) => op.without_checkpoints(),
            }
        }
    }

    pub fn restore(&mut self, state: &QueryState) -> Result<()> {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            match &mut node.stage {
                Stage::Unary(op) => op.restore(i as u16, state)?,
                Stage::Join(op) => op.restore(i as u16, state)?,
            }
        }
        Ok(())
    }

    /// What the query's state ids depend on: each node's operator kind and
    /// where it sends its output, and where each input enters. Stored with
    /// the state at the first checkpoint; a start that plans the query into
    /// another shape is refused (state ids are node positions). Operator
    /// parameters are left out, so that a build that only prints an
    /// expression differently still runs the query; a change of what an
    /// operator stores is a change of `state::STATE_FORMAT`.
    pub fn signature(&self) -> String {
        let target = |t: &Target| match t {
            Target::Node(i, Side::Left) => format!("{i}"),
            Target::Node(i, Side::Right) => format!("{i}.right"),
            Target::Output => "out".into(),
        };
        let mut lines = Vec::with_capacity(self.nodes.len() + self.inputs.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let described = match &node.stage {
                Stage::Unary(op) => op.describe(),
                Stage::Join(op) => op.describe(),
            };
            let kind = described.split(':').next().unwrap_or_default().trim();
            lines.push(format!("{i} {kind} -> {}", target(&node.target)));
        }
        for (i, targets) in self.inputs.iter().enumerate() {
            let to: Vec<String> = targets.iter().map(target).collect();
            lines.push(format!("input {i} -> {}", to.join(", ")));
        }
        lines.join("\n")
    }

    /// For EXPLAIN: each chain from its source up, a join followed by its two
    /// inputs indented.
    pub fn explain(&self, sources: &[String]) -> Vec<String> {
        self.lines_into(Target::Output, sources)
    }

    fn feeders(&self, target: Target) -> Vec<Feeder> {
        let mut feeders: Vec<(Side, Feeder)> = Vec::new();
        for (i, targets) in self.inputs.iter().enumerate() {
            for t in targets {
                if let Some(side) = side_into(*t, target) {
                    feeders.push((side, Feeder::Input(i)));
                }
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(side) = side_into(n.target, target) {
                feeders.push((side, Feeder::Node(i)));
            }
        }
        feeders.sort_by_key(|(s, _)| *s == Side::Right);
        feeders.into_iter().map(|(_, f)| f).collect()
    }

    fn lines_into(&self, target: Target, sources: &[String]) -> Vec<String> {
        let mut lines = Vec::new();
        for feeder in self.feeders(target) {
            match feeder {
                Feeder::Input(i) => lines.push(format!(
                    "Source: {}",
                    sources.get(i).map(String::as_str).unwrap_or("?")
                )),
                Feeder::Node(i) => match &self.nodes[i].stage {
                    Stage::Unary(op) => {
                        lines.extend(self.lines_into(Target::Node(i, Side::Left), sources));
                        lines.push(op.describe());
                    }
                    Stage::Join(op) => {
                        lines.push(op.describe());
                        for side in [Side::Left, Side::Right] {
                            lines.extend(
                                self.lines_into(Target::Node(i, side), sources)
                                    .into_iter()
                                    .map(|l| format!("    {l}")),
                            );
                        }
                    }
                },
            }
        }
        lines
    }
}

enum Feeder {
    Input(usize),
    Node(usize),
}

fn side_into(t: Target, target: Target) -> Option<Side> {
    match (t, target) {
        (Target::Output, Target::Output) => Some(Side::Left),
        (Target::Node(i, s), Target::Node(j, sj)) if i == j && s == sj => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::dataflow::Chunk;

    /// Records which side each chunk reached.
    struct Sides(Arc<Mutex<Vec<(Side, usize)>>>);

    impl JoinOperator for Sides {
        fn describe(&self) -> String {
            "Sides".into()
        }

        fn on_chunk(&mut self, side: Side, chunk: Chunk, _: &mut Vec<Message>) -> Result<()> {
            self.0.lock().unwrap().push((side, chunk.num_rows()));
            Ok(())
        }

        fn on_watermark(&mut self, _: Side, _: i64, _: &mut Vec<Message>) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_shared_input_feeds_every_place_that_reads_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut flow = Dataflow::join(
            Dataflow::input(),
            Dataflow::input(),
            Box::new(Sides(seen.clone())),
        );
        flow.share_input(1, 0);
        assert_eq!(flow.input_count(), 1);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        let chunk = Chunk::new(batch, Int64Array::from(vec![0, 0, 0]), None);
        flow.process(0, Message::Chunk(chunk)).unwrap();
        assert_eq!(*seen.lock().unwrap(), [(Side::Left, 3), (Side::Right, 3)]);
        let plan = flow.explain(&["s".into()]);
        assert_eq!(plan, ["Sides", "    Source: s", "    Source: s"]);
    }
}
