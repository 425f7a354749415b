//! The operator graph of a query: a chain of operators after each input, chains
//! combined by multi-input operators (joins) into one tree whose root feeds
//! the sink. Every message kind flows through it: chunks, watermarks, checkpoint
//! barriers (aligned where inputs meet) and the end of an input.
//!
//! Node indices are the operators' state ids, so a plan must build its nodes in
//! the same order every time it is planned (the planner walks the SQL plan
//! deterministically: left input, right input, then the join).

use std::collections::VecDeque;

use crate::dataflow::{Barrier, Message};
use crate::error::Result;
use crate::operators::{Checkpoint, Operator};
use crate::state::{QueryState, StateWriteBatch};

/// Where messages go: input `n` of a node, or the query's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Node(usize, usize),
    Output,
}

struct Node {
    op: Box<dyn Operator>,
    target: Target,
    /// Per input: it delivered the barrier now being aligned.
    barrier_seen: Vec<bool>,
    /// Per input: it ended.
    ended: Vec<bool>,
    /// Messages from inputs that are past the barrier being aligned, in
    /// arrival order: they belong to the next epoch, so they wait until the
    /// barrier has passed.
    held: VecDeque<(usize, Message)>,
}

impl Node {
    fn new(op: Box<dyn Operator>) -> Node {
        let inputs = op.inputs().max(1);
        Node {
            op,
            target: Target::Output,
            barrier_seen: vec![false; inputs],
            ended: vec![false; inputs],
            held: VecDeque::new(),
        }
    }

    /// Hands `msg` from `input` to the operator; what it emits goes to `out`.
    fn accept(
        &mut self,
        state_id: u16,
        input: usize,
        msg: Message,
        writes: &mut StateWriteBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if self.barrier_seen.get(input).copied().unwrap_or(false) {
            self.held.push_back((input, msg));
            return Ok(());
        }
        match msg {
            Message::Chunk(c) => self.op.on_chunk(input, c, out),
            Message::Watermark(w) => self.op.on_watermark(input, w, out),
            Message::Barrier(barrier) => self.on_barrier(state_id, input, barrier, writes, out),
            Message::End => {
                let Some(ended) = self.ended.get_mut(input) else {
                    return Ok(());
                };
                if std::mem::replace(ended, true) {
                    return Ok(());
                }
                self.op.on_end(input, out)?;
                if self.ended.iter().all(|e| *e) {
                    out.push(Message::End);
                }
                Ok(())
            }
            other @ (Message::Late(_) | Message::RowErrors(_)) => {
                out.push(other);
                Ok(())
            }
        }
    }

    /// Aligns the barrier: the operator checkpoints once every input has
    /// delivered it, then the barrier goes on and the held messages follow.
    fn on_barrier(
        &mut self,
        state_id: u16,
        input: usize,
        barrier: Barrier,
        writes: &mut StateWriteBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if let Some(seen) = self.barrier_seen.get_mut(input) {
            *seen = true;
        }
        if !self.barrier_seen.iter().all(|s| *s) {
            return Ok(());
        }
        self.barrier_seen.iter_mut().for_each(|s| *s = false);
        let mut checkpoint = Checkpoint {
            state_id,
            epoch: barrier.epoch,
            writes,
        };
        self.op.on_barrier(&mut checkpoint, out)?;
        out.push(Message::Barrier(barrier));
        let held = std::mem::take(&mut self.held);
        for (input, msg) in held {
            self.accept(state_id, input, msg, writes, out)?;
        }
        Ok(())
    }
}

/// Operators wired from numbered inputs to one output.
pub struct Dataflow {
    nodes: Vec<Node>,
    /// Where each input's messages enter (several places when the query reads
    /// the input more than once).
    inputs: Vec<Vec<Target>>,
    /// State written by the operators a barrier has passed, until the pipeline
    /// takes it to commit (see [`Dataflow::take_checkpoint`]).
    writes: StateWriteBatch,
}

impl Dataflow {
    /// One input, straight to the output.
    pub fn input() -> Dataflow {
        Dataflow {
            nodes: Vec::new(),
            inputs: vec![vec![Target::Output]],
            writes: StateWriteBatch::default(),
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

    /// Appends the single-input `op` at the output; returns its node id.
    pub fn push(&mut self, op: Box<dyn Operator>) -> usize {
        let id = self.nodes.len();
        self.retarget(0, Target::Node(id, 0));
        self.nodes.push(Node::new(op));
        id
    }

    /// Replaces the operator at node `id` (which must be a single-input node).
    pub fn replace(&mut self, id: usize, op: Box<dyn Operator>) {
        if let Some(node) = self.nodes.get_mut(id) {
            let target = node.target;
            *node = Node::new(op);
            node.target = target;
        }
    }

    /// Joins two flows: `left`'s inputs keep their numbers, `right`'s follow them.
    pub fn join(left: Dataflow, right: Dataflow, op: Box<dyn Operator>) -> Dataflow {
        Dataflow::combine(vec![left, right], op)
    }

    /// Feeds each flow's output into the matching input of `op` (which reads
    /// `flows.len()` inputs): the flows' inputs are numbered in order, their
    /// nodes placed in order, then `op`.
    pub fn combine(flows: Vec<Dataflow>, op: Box<dyn Operator>) -> Dataflow {
        debug_assert_eq!(op.inputs(), flows.len());
        let at = flows.iter().map(|f| f.nodes.len()).sum::<usize>();
        let mut combined = Dataflow {
            nodes: Vec::with_capacity(at + 1),
            inputs: Vec::new(),
            writes: StateWriteBatch::default(),
        };
        for (input, mut flow) in flows.into_iter().enumerate() {
            flow.retarget(combined.nodes.len(), Target::Node(at, input));
            combined.nodes.extend(flow.nodes);
            combined.inputs.extend(flow.inputs);
        }
        combined.nodes.push(Node::new(op));
        combined
    }

    /// Moves every node index up by `offset` (the nodes are placed after
    /// `offset` others) and sends what went to the output to `output` instead.
    fn retarget(&mut self, offset: usize, output: Target) {
        let moved = |t: Target| match t {
            Target::Node(i, n) => Target::Node(i + offset, n),
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
    /// the output. A barrier entered this way is aligned with the same
    /// barrier from the other inputs; [`Dataflow::process_barrier`] enters it
    /// at every input at once.
    pub fn process(&mut self, input: usize, msg: Message) -> Result<Vec<Message>> {
        let Some(places) = self.inputs.get(input).map(Vec::len) else {
            return Ok(vec![msg]);
        };
        if places == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // Chunks share their Arrow buffers: a copy per reader is cheap.
        for k in 0..places - 1 {
            let target = self.inputs[input][k];
            out.extend(self.process_from(target, msg.clone())?);
        }
        let last = self.inputs[input][places - 1];
        out.extend(self.process_from(last, msg)?);
        Ok(out)
    }

    /// A barrier from the source task, which reads every input: it cuts all
    /// of them at once, so it enters at each.
    pub fn process_barrier(&mut self, barrier: Barrier) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        for input in 0..self.inputs.len() {
            out.extend(self.process(input, Message::Barrier(barrier.clone()))?);
        }
        Ok(out)
    }

    /// The state the operators wrote for the barrier that reached the output.
    pub fn take_checkpoint(&mut self) -> StateWriteBatch {
        std::mem::take(&mut self.writes)
    }

    fn process_from(&mut self, mut target: Target, msg: Message) -> Result<Vec<Message>> {
        let mut current = vec![msg];
        while let Target::Node(i, input) = target {
            let node = &mut self.nodes[i];
            let mut next = Vec::with_capacity(current.len());
            for m in current {
                node.accept(i as u16, input, m, &mut self.writes, &mut next)?;
            }
            current = next;
            target = node.target;
            if current.is_empty() {
                break;
            }
        }
        Ok(current)
    }

    pub fn state_entries(&self) -> usize {
        self.nodes.iter().map(|n| n.op.state_entries()).sum()
    }

    /// Tells every operator that no checkpoint will come (see
    /// [`Operator::without_checkpoints`]).
    pub fn without_checkpoints(&mut self) {
        for node in &mut self.nodes {
            node.op.without_checkpoints();
        }
    }

    pub fn restore(&mut self, state: &QueryState) -> Result<()> {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.op.restore(i as u16, state)?;
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
        // The text is stored with the state: it must not change between builds.
        let target = |t: &Target| match t {
            Target::Node(i, 0) => format!("{i}"),
            Target::Node(i, 1) => format!("{i}.right"),
            Target::Node(i, n) => format!("{i}.{n}"),
            Target::Output => "out".into(),
        };
        let mut lines = Vec::with_capacity(self.nodes.len() + self.inputs.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let described = node.op.describe();
            let kind = described.split(':').next().unwrap_or_default().trim();
            lines.push(format!("{i} {kind} -> {}", target(&node.target)));
        }
        for (i, targets) in self.inputs.iter().enumerate() {
            let to: Vec<String> = targets.iter().map(target).collect();
            lines.push(format!("input {i} -> {}", to.join(", ")));
        }
        lines.join("\n")
    }

    /// For EXPLAIN: each chain from its source up, a join followed by its
    /// inputs indented.
    pub fn explain(&self, sources: &[String]) -> Vec<String> {
        self.lines_into(Target::Output, sources)
    }

    fn feeders(&self, target: Target) -> Vec<Feeder> {
        let mut feeders: Vec<(usize, Feeder)> = Vec::new();
        for (i, targets) in self.inputs.iter().enumerate() {
            for t in targets {
                if let Some(input) = input_into(*t, target) {
                    feeders.push((input, Feeder::Input(i)));
                }
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(input) = input_into(n.target, target) {
                feeders.push((input, Feeder::Node(i)));
            }
        }
        feeders.sort_by_key(|(input, _)| *input);
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
                Feeder::Node(i) => {
                    let op = &self.nodes[i].op;
                    if op.inputs() == 1 {
                        lines.extend(self.lines_into(Target::Node(i, 0), sources));
                        lines.push(op.describe());
                    } else {
                        lines.push(op.describe());
                        for input in 0..op.inputs() {
                            lines.extend(
                                self.lines_into(Target::Node(i, input), sources)
                                    .into_iter()
                                    .map(|l| format!("    {l}")),
                            );
                        }
                    }
                }
            }
        }
        lines
    }
}

enum Feeder {
    Input(usize),
    Node(usize),
}

/// The input of `target` that `t` feeds, if it feeds `target`.
fn input_into(t: Target, target: Target) -> Option<usize> {
    match (t, target) {
        (Target::Output, Target::Output) => Some(0),
        (Target::Node(i, n), Target::Node(j, m)) if i == j && n == m => Some(n),
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

    type Log = Arc<Mutex<Vec<String>>>;

    /// Logs what reaches it as `name:event@input` and passes chunks on.
    struct Recorder {
        name: &'static str,
        inputs: usize,
        log: Log,
    }

    impl Recorder {
        fn boxed(name: &'static str, inputs: usize, log: &Log) -> Box<dyn Operator> {
            Box::new(Recorder {
                name,
                inputs,
                log: log.clone(),
            })
        }

        fn note(&self, event: String) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{}:{event}", self.name));
        }
    }

    impl Operator for Recorder {
        fn describe(&self) -> String {
            self.name.into()
        }

        fn inputs(&self) -> usize {
            self.inputs
        }

        fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Vec<Message>) -> Result<()> {
            self.note(format!("rows{}@{input}", chunk.num_rows()));
            out.push(Message::Chunk(chunk));
            Ok(())
        }

        fn on_barrier(&mut self, c: &mut Checkpoint<'_>, _: &mut Vec<Message>) -> Result<()> {
            self.note(format!("barrier{}", c.epoch));
            c.writes.put(c.state_id, self.name.as_bytes(), vec![]);
            Ok(())
        }

        fn on_end(&mut self, input: usize, _: &mut Vec<Message>) -> Result<()> {
            self.note(format!("end@{input}"));
            Ok(())
        }
    }

    fn chunk(rows: i64) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let values: Vec<i64> = (0..rows).collect();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap();
        let rowtime = Int64Array::from(vec![0; rows as usize]);
        Message::Chunk(Chunk::new(batch, rowtime, None))
    }

    fn barrier(epoch: u64) -> Barrier {
        Barrier {
            epoch,
            offsets: Arc::new(Vec::new()),
        }
    }

    fn kinds(out: &[Message]) -> Vec<String> {
        out.iter()
            .map(|m| match m {
                Message::Chunk(c) => format!("rows{}", c.num_rows()),
                Message::Barrier(b) => format!("barrier{}", b.epoch),
                Message::End => "end".into(),
                _ => "other".into(),
            })
            .collect()
    }

    /// `((in0 ⋈ in1) ⋈ in2) → tail`: a three-way join is two two-input
    /// operators, no special stage.
    fn three_way(log: &Log) -> Dataflow {
        let inner = Dataflow::join(
            Dataflow::input(),
            Dataflow::input(),
            Recorder::boxed("inner", 2, log),
        );
        let mut flow = Dataflow::join(inner, Dataflow::input(), Recorder::boxed("outer", 2, log));
        flow.push(Recorder::boxed("tail", 1, log));
        flow
    }

    #[test]
    fn a_shared_input_feeds_every_place_that_reads_it() {
        let log = Log::default();
        let mut flow = Dataflow::join(
            Dataflow::input(),
            Dataflow::input(),
            Recorder::boxed("join", 2, &log),
        );
        flow.share_input(1, 0);
        assert_eq!(flow.input_count(), 1);
        flow.process(0, chunk(3)).unwrap();
        assert_eq!(*log.lock().unwrap(), ["join:rows3@0", "join:rows3@1"]);
        let out = flow.process_barrier(barrier(1)).unwrap();
        assert_eq!(
            kinds(&out),
            ["barrier1"],
            "both sides deliver it, it passes once"
        );
        let plan = flow.explain(&["s".into()]);
        assert_eq!(plan, ["join", "    Source: s", "    Source: s"]);
    }

    #[test]
    fn barriers_flow_through_operators_and_align_where_inputs_meet() {
        let log = Log::default();
        let mut flow = three_way(&log);
        assert_eq!(flow.input_count(), 3);
        let mut out = Vec::new();
        out.extend(flow.process(0, Message::Barrier(barrier(7))).unwrap());
        // Input 0 is past the barrier: its next rows belong to the next epoch.
        out.extend(flow.process(0, chunk(1)).unwrap());
        out.extend(flow.process(1, chunk(2)).unwrap());
        out.extend(flow.process(1, Message::Barrier(barrier(7))).unwrap());
        out.extend(flow.process(2, chunk(3)).unwrap());
        out.extend(flow.process(2, Message::Barrier(barrier(7))).unwrap());
        assert_eq!(
            *log.lock().unwrap(),
            [
                "inner:rows2@1",
                "outer:rows2@0",
                "tail:rows2@0",
                "inner:barrier7",
                // Released by the inner join, then held again by the outer
                // one, whose input 0 is now past the barrier.
                "inner:rows1@0",
                "outer:rows3@1",
                "tail:rows3@0",
                "outer:barrier7",
                "outer:rows1@0",
                // Each operator sees the barrier before the next epoch's rows.
                "tail:barrier7",
                "tail:rows1@0",
            ]
        );
        assert_eq!(kinds(&out), ["rows2", "rows3", "barrier7", "rows1"]);
        let writes = flow.take_checkpoint();
        assert_eq!(writes.len(), 3, "every operator wrote at the barrier");
        assert!(flow.take_checkpoint().is_empty());
    }

    #[test]
    fn the_end_of_input_passes_a_join_once_every_input_has_ended() {
        let log = Log::default();
        let mut flow = three_way(&log);
        assert!(flow.process(0, Message::End).unwrap().is_empty());
        assert!(
            flow.process(0, Message::End).unwrap().is_empty(),
            "ends once"
        );
        assert!(flow.process(2, Message::End).unwrap().is_empty());
        let out = flow.process(1, Message::End).unwrap();
        assert_eq!(kinds(&out), ["end"]);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "inner:end@0",
                "outer:end@1",
                "inner:end@1",
                "outer:end@0",
                "tail:end@0"
            ]
        );
        // A barrier after the end still checkpoints every operator.
        let out = flow.process_barrier(barrier(2)).unwrap();
        assert_eq!(kinds(&out), ["barrier2"]);
        assert_eq!(flow.take_checkpoint().len(), 3);
    }
}
