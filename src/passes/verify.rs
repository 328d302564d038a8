//! The pass verifier: the program's invariants, checked after every pass.
//!
//! As XLA's `HloVerifier` (added to a pipeline with `AddInvariantChecker`), a [`Verifier`]
//! runs after each pass of a [`super::Pipeline`] (after each member of a [`super::Fixpoint`]
//! too) and turns a broken invariant into [`Error::Internal`] naming the pass that broke it,
//! the node (`%N` as in that pass's dump, or `#index` for a node no output needs) and what is
//! wrong. A pass bug then fails at the pass, not as a wrong number or a crash in the backend.
//!
//! It checks:
//! - **types**: each live node's type, re-inferred with `op::infer` from its operands'
//!   stored types, equals its stored type (ARCHITECTURE invariant 1); a fused node's shape
//!   rule takes its declared type as given (the graph does not see kernels), so its type is
//!   checked here against the kernel's;
//! - **edges**: petgraph's edges mirror `Node::inputs`, one edge per operand weighted by its
//!   position, and no operand is a removed node (invariant 4); and the graph has no cycle;
//! - **outputs** exist and have not been removed;
//! - **concreteness**: no `?` is left after `concretize` ran with a batch size, and no pass
//!   brings one back once every shape was concrete;
//! - **effects**: no `assign` or `group` is live after [`super::lower_effects`];
//! - **kernels**: every fused node's id is in the program's kernel table, the kernel passes
//!   `Kernel::validate`, and its parameter and output types are the node's operand and
//!   output types;
//! - **buffers**: the memory plan, if one was made, passes the backend's own check
//!   (`memplan::validate`: every value's slot is large enough, no two live values share one
//!   except a checked in-place update or reshape alias).
//!
//! # When it runs
//! Always, unless turned off with [`super::Pipeline::verify`] or `KILN_VERIFY=0`. It is
//! cheap next to a compile: on the MNIST MLP training graph (784-256-128-10, dropout, Adam,
//! batch 128) it takes about 0.46 ms per compile, against about 1.05 ms for the passes and
//! 20-30 ms for the whole compile (Cranelift's share), so about 2%. Debug-only with an
//! opt-in would save that 2% at the price of a second configuration; always-on means that
//! `cargo test --release`, which CI runs, verifies every program any test compiles, and a
//! pass bug (a user's own pass included) is reported at the pass in every build, not as a
//! wrong number in the backend. Its time is reported apart from the passes'
//! ([`super::PipelineReport::verify_time`]).

use super::Program;
use crate::error::{Error, Result};
use crate::graph::op::{self, Arg, Op, Ty};
use crate::graph::{GraphData, NodeId};
use crate::kernel::Kernel;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use smallvec::SmallVec;

/// What the verifier knows about the pipeline so far (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    /// Every live shape was concrete at the last check: a `?` may not come back.
    concrete: bool,
}

/// How an error names a node: `%N` (its number in a dump of the live program, `order`) or
/// `#index` for a node no output needs, with its op and name.
fn name_of(g: &GraphData, order: &[NodeId], id: NodeId) -> String {
    let Some(n) = g.get(id) else {
        return format!("#{} (removed)", id.index());
    };
    let at = match order.iter().position(|&i| i == id) {
        Some(k) => format!("%{k}"),
        None => format!("#{}", id.index()),
    };
    match &n.name {
        Some(name) => format!("{at} = {} {name:?}", n.op.name()),
        None => format!("{at} = {}", n.op.name()),
    }
}

impl Verifier {
    /// A verifier for a pipeline that has not run yet.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Checks `p` after the pass named `pass` (a member of a group is named `group/member`);
    /// `batch` is the pipeline's batch size.
    pub fn check(&mut self, p: &Program, pass: &str, batch: Option<usize>) -> Result<()> {
        let fail = |what: String| {
            Error::Internal(format!(
                "the pass `{pass}` broke the program's invariants: {what}"
            ))
        };
        let g = &p.graph;
        check_edges(g).map_err(fail)?;
        if let Some(c) = g.find_cycle() {
            return Err(fail(format!("node #{} is on a cycle", c.index())));
        }
        for (i, &o) in p.outputs.iter().enumerate() {
            if g.get(o).is_none() {
                return Err(fail(format!("output {i} (#{}) was removed", o.index())));
            }
        }
        let order = p.live_order();
        let at = |id: NodeId, what: String| fail(format!("{}: {what}", name_of(g, &order, id)));
        let mut concrete = true;
        for &id in &order {
            let n = g.node(id);
            let args: SmallVec<[Arg<'_>; 3]> = n
                .inputs
                .iter()
                .map(|&i| Arg {
                    ty: &g.node(i).ty,
                    label: "",
                })
                .collect();
            match op::infer(&n.op, &args, Some(&n.ty)) {
                Ok(t) if t == n.ty => {}
                Ok(t) => return Err(at(id, format!("stored type {}, inferred {t}", n.ty))),
                Err(e) => return Err(at(id, format!("stored type {} is not inferred: {e}", n.ty))),
            }
            concrete &= n.ty.shape.is_fixed();
            match &n.op {
                Op::Assign | Op::Group => {
                    return Err(at(id, "an effect is left after effect lowering".into()))
                }
                Op::Fusion(k) => p
                    .kernels
                    .lookup(*k)
                    .and_then(|k| check_kernel(g, k, &n.inputs, &n.ty))
                    .map_err(|e| at(id, e))?,
                _ => {}
            }
        }
        let concretized = pass.rsplit('/').next() == Some("concretize") && batch.is_some();
        if !concrete && (self.concrete || concretized) {
            let id = order.iter().find(|&&i| !g.node(i).ty.shape.is_fixed());
            let what = if self.concrete {
                "a `?` dimension came back after every shape was concrete"
            } else {
                "a `?` dimension is left after concretize"
            };
            return Err(match id {
                Some(&id) => at(id, format!("{what} ({})", g.node(id).ty)),
                None => fail(what.into()),
            });
        }
        self.concrete = concrete;
        // Buffer assignment: the backend's own validation, the one check of a plan.
        if let Some(plan) = p.memory() {
            super::memplan::validate(p, plan).map_err(|e| match e {
                Error::Internal(m) => fail(m),
                e => e,
            })?;
        }
        Ok(())
    }
}

/// Petgraph's edges mirror `Node::inputs` (invariant 4), for every node, removed ones
/// included (a removed node has neither operands nor edges).
fn check_edges(g: &GraphData) -> Result<(), String> {
    for idx in g.g.node_indices() {
        let inputs: &[NodeId] = g.get(NodeId(idx)).map_or(&[], |n| &n.inputs);
        // Each edge claims a distinct operand position that holds its source, and there are
        // as many edges as operands (no allocation unless something is wrong).
        let mut claimed: SmallVec<[bool; 4]> = smallvec::smallvec![false; inputs.len()];
        let mut count = 0;
        let mut ok = true;
        for e in g.g.edges_directed(idx, Direction::Incoming) {
            let pos = *e.weight() as usize;
            count += 1;
            match claimed.get_mut(pos) {
                Some(c) if !*c && inputs[pos] == NodeId(e.source()) => *c = true,
                _ => ok = false,
            }
        }
        if !ok || count != inputs.len() {
            let mut edges: Vec<(usize, NodeId)> =
                g.g.edges_directed(idx, Direction::Incoming)
                    .map(|e| (*e.weight() as usize, NodeId(e.source())))
                    .collect();
            edges.sort();
            let show = |v: &mut dyn Iterator<Item = (usize, NodeId)>| {
                v.map(|(pos, i)| format!("{pos}:#{}", i.index()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "node #{}: its edges [{}] do not mirror its operands [{}] (as position:source)",
                idx.index(),
                show(&mut edges.into_iter()),
                show(&mut inputs.iter().copied().enumerate())
            ));
        }
        if let Some((pos, i)) = inputs.iter().enumerate().find(|(_, &i)| g.get(i).is_none()) {
            return Err(format!(
                "node #{}: operand {pos} is the removed node #{}",
                idx.index(),
                i.index()
            ));
        }
    }
    Ok(())
}

/// A fused kernel is valid, its parameters are its operands' types and its output is the
/// node's type (the graph's shape rule takes a fused node's declared type as given: the
/// graph does not see kernels).
fn check_kernel(g: &GraphData, k: &Kernel, inputs: &[NodeId], ty: &Ty) -> Result<(), String> {
    k.validate().map_err(|e| format!("invalid kernel: {e}"))?;
    if k.params.len() != inputs.len() {
        return Err(format!(
            "the kernel has {} parameter(s) for {} operand(s)",
            k.params.len(),
            inputs.len()
        ));
    }
    if k.out != *ty {
        return Err(format!("the kernel computes {}, the node is {ty}", k.out));
    }
    for (i, (&input, t)) in inputs.iter().zip(&k.params).enumerate() {
        if g.node(input).ty != *t {
            return Err(format!(
                "kernel parameter {i} is {t}, its operand is {}",
                g.node(input).ty
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Deliberately broken passes: each is caught by the verifier, which names it.
    use super::super::{memplan::MemPlan, Fixpoint, Pass, PassOptions, Pipeline, Program};
    use super::{Direction, EdgeRef};
    use crate::error::{Error, Result};
    use crate::graph::op::{KernelId, Op, UnaryOp};
    use crate::graph::Graph;
    use crate::{init, DType};

    /// What a closure does to the program, as a pass named `name` (which claims to have
    /// changed nothing, so that the pipeline keeps a memory plan it has broken).
    struct Broken<F>(&'static str, F);

    impl<F: Fn(&mut Program) + Send + Sync> Pass for Broken<F> {
        fn name(&self) -> &str {
            self.0
        }
        fn run(&self, p: &mut Program, _: &PassOptions) -> Result<bool> {
            (self.1)(p);
            Ok(false)
        }
    }

    /// `tanh(x + v)` over `f32[?,3]`, with `v` a variable.
    fn program() -> Program {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [None, Some(3)]);
        let v = g.variable("v", [1, 3], init::zeros());
        let y = (x + v).tanh();
        Program::new(g.snapshot(), vec![y.id()])
    }

    fn first(p: &Program, want: fn(&Op) -> bool) -> crate::graph::NodeId {
        let order = p.live_order();
        *order.iter().find(|&&i| want(&p.graph.node(i).op)).unwrap()
    }

    /// Runs the default pipeline with `pass` added after `after`; the internal error's text.
    fn caught(after: &str, pass: Box<dyn Pass>) -> String {
        let mut pl = Pipeline::default();
        pl.options.batch = Some(2);
        pl.verify(true).insert_after(after, pass);
        match pl.run(&mut program()) {
            Err(Error::Internal(m)) => m,
            other => panic!("not caught: {other:?}"),
        }
    }

    #[test]
    fn a_pass_that_changes_a_stored_type_is_caught() {
        let retype = |p: &mut Program| {
            let id = first(p, |op| matches!(op, Op::Unary(UnaryOp::Tanh)));
            p.graph.node_mut_parts(id).1.dtype = DType::F64;
        };
        let m = caught("fold", Box::new(Broken("retype", retype)));
        assert!(m.contains("`retype`") && m.contains("= tanh"), "{m}");
        assert!(m.contains("stored type f64[2,3]"), "{m}");
        // Inside a group, the member is named.
        let group = Fixpoint::new("group", vec![Box::new(Broken("retype", retype))]);
        let m = caught("cse", Box::new(group));
        assert!(m.contains("`group/retype`"), "{m}");
        // Without the verifier the same pass goes through unnoticed.
        let mut pl = Pipeline::default();
        pl.options.batch = Some(2);
        pl.verify(false)
            .insert_after("fold", Box::new(Broken("retype", retype)));
        assert!(pl.run(&mut program()).is_ok());
    }

    #[test]
    fn a_pass_that_leaves_an_edge_not_mirroring_its_operands_is_caught() {
        let unhook = |p: &mut Program| {
            let id = first(p, |op| matches!(op, Op::Unary(UnaryOp::Tanh)));
            let e = p.graph.g.edges_directed(id.0, Direction::Incoming).next();
            let e = e.map(|e| e.id()).unwrap();
            p.graph.g.remove_edge(e);
        };
        let m = caught("simplify", Box::new(Broken("unhook", unhook)));
        assert!(m.contains("`unhook`") && m.contains("do not mirror"), "{m}");
    }

    #[test]
    fn a_pass_that_leaves_an_assign_is_caught() {
        let reassign = |p: &mut Program| {
            let v = first(p, |op| matches!(op, Op::Variable { .. }));
            let a = p.graph.add_node(Op::Assign, &[v, v], None, None, None);
            p.outputs.push(a);
        };
        let m = caught("cse", Box::new(Broken("reassign", reassign)));
        assert!(m.contains("`reassign`") && m.contains("effect"), "{m}");
    }

    #[test]
    fn a_pass_that_shrinks_a_buffer_is_caught() {
        // A matmul's operand is a kernel of its own, whose value lives in a slot.
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [4, 8]);
        let w = g.variable("w", [8, 8], init::zeros());
        let y = x.exp().matmul(w).tanh();
        let mut p = Program::new(g.snapshot(), vec![y.id()]);
        let mut pl = Pipeline::default();
        pl.options.batch = Some(1);
        let shrink = |p: &mut Program| {
            if let Some(m) = &mut p.memory {
                m.slots.iter_mut().for_each(|s| *s = 1);
            }
        };
        pl.verify(true).add(Box::new(Broken("shrink", shrink)));
        match pl.run(&mut p) {
            Err(Error::Internal(m)) => {
                assert!(
                    m.contains("`shrink`") && m.contains("buffer assignment"),
                    "{m}"
                )
            }
            other => panic!("not caught: {other:?}"),
        }
    }

    #[test]
    fn a_fused_node_whose_kernel_disagrees_or_is_missing_is_caught() {
        // The graph takes a fused node's declared type as given; the verifier checks it
        // against the kernel in the program's table.
        let fused = |op: &Op| matches!(op, Op::Fusion(_));
        let retype = move |p: &mut Program| {
            let id = first(p, fused);
            p.graph.node_mut_parts(id).1.dtype = DType::F64;
        };
        let m = caught("fusion", Box::new(Broken("retype", retype)));
        assert!(m.contains("`retype`") && m.contains("= fusion"), "{m}");
        assert!(
            m.contains("the kernel computes f32[2,3], the node is f64[2,3]"),
            "{m}"
        );
        // An id from no table (a fused node copied from another program).
        let foreign = move |p: &mut Program| {
            let id = first(p, fused);
            *p.graph.node_mut_parts(id).0 = Op::Fusion(KernelId::from_index(7));
        };
        let m = caught("fusion", Box::new(Broken("foreign", foreign)));
        assert!(
            m.contains("`foreign`") && m.contains("kernel #7 is not in"),
            "{m}"
        );
    }

    #[test]
    fn memplan_output_passes_the_check() {
        let mut p = program();
        let mut pl = Pipeline::default();
        pl.options.batch = Some(2);
        pl.verify(true).add(Box::new(MemPlan));
        pl.run(&mut p).unwrap();
        let plan = p.memory().expect("memplan ran");
        assert!(super::super::memplan::validate(&p, plan).is_ok());
    }
}
