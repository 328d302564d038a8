//! `fusion`: lowers every compute node of the program into kernels (`src/kernel.rs`).
//!
//! Consumer-driven, in the manner of XLA's instruction fusion. Nodes are visited from the
//! outputs backwards; each compute node whose value some kernel or output needs and that is
//! not yet in a kernel becomes the root of a new one (elementwise ops, reductions, matmuls,
//! and movement ops: a fetched transpose is a kernel that computes its producers at the
//! transposed points), and its producers join while the rules allow:
//!
//! - elementwise ops (unary, binary, `where`, `cast`) join when **all** their users are
//!   already in the kernel: a producer with users elsewhere would be computed twice, so it is
//!   never duplicated and becomes the kernel's parameter instead;
//! - movement ops that are affine views (`broadcast_to`, `permute`, `slice`, and `reshape`
//!   that only adds or drops size-1 axes, or any reshape of a materialized buffer) fold into
//!   the index maps of loads: a broadcast is a stride of 0, a transpose permuted strides
//!   (the index math is `src/view.rs`'s);
//! - `pad` and `concat` fold into their consumers' loads too, as guarded loads (zero outside
//!   the operand) and an `Expr::Select` among operands, but their operands
//!   are always read from memory: a producer computed at a padded point would not be zero;
//! - a reduction joins as the kernel's core when its elementwise consumers are the kernel
//!   (they become its epilogue) and its elementwise producers join as its prologue, so
//!   `log(sum(exp(x - m)))` is one kernel;
//! - a matmul joins as the core of a contraction kernel, its elementwise consumers (bias add,
//!   activation) as the epilogue; its operands are read through strides (no copy for
//!   transposes) but are never computed inside the kernel;
//! - scalar constants become immediates;
//! - a kernel takes at most 256 members (`MAX_MEMBERS`): a longer chain is cut into
//!   several kernels, because one Cranelift function per chain would compile in more than
//!   linear time (the refused producer's note says so).
//!
//! Neither deciding membership nor building a body recurses (both keep explicit stacks), and
//! each kernel's decisions look only at its own neighbourhood, so a chain of 20,000 ops
//! fuses in linear time on a small stack (`tests/deep.rs`).
//!
//! Only reshapes, convolutions and pooling stay outside kernels: the JIT aliases a reshape's
//! operand's buffer or copies it, and runs a convolution (im2col and `gemm`) or a pooling
//! node as a native step of its own whose operands are buffers (a window is not an index
//! map). So after fusion every compute node is a kernel, a reshape, a convolution, a pooling
//! node or a random source, which is what the JIT lowers (it has no other way to run an op).
//!
//! Each refusal records a reason in [`Program::notes`], and the dump prints it as a comment
//! on the producer's line, as XLA's "Not fusing ... as ..." log lines do.
//!
//! `membership.rs` decides which producers join a kernel; `build.rs` writes its body.

mod build;
mod membership;

use super::{Note, Pass, PassOptions, Program};
use crate::error::Result;
use crate::graph::op::{Op, OpGroup, Ty};
use crate::graph::{GraphData, NodeId};
use build::build;
use std::collections::{HashMap, HashSet};

/// See the module docs.
pub struct Fusion;

pub(super) fn fixed(t: &Ty) -> Vec<usize> {
    t.shape.to_fixed().unwrap_or_default()
}

/// A view op that stays an affine map of the domain whatever the view of its output:
/// `broadcast_to`, `permute`, `slice`, and a reshape that only adds or drops size-1 axes.
/// (A pad or a concat is a view too, but a guarded one: see [`membership`].)
fn is_affine_view(g: &GraphData, id: NodeId) -> bool {
    let n = g.node(id);
    match n.op {
        Op::BroadcastTo | Op::Permute(_) | Op::Slice { .. } => true,
        Op::Reshape => {
            let strip =
                |t: &Ty| -> Vec<usize> { fixed(t).into_iter().filter(|&d| d != 1).collect() };
            strip(&n.ty) == strip(&g.node(n.inputs[0]).ty)
        }
        _ => false,
    }
}

/// What fusion does with a node of this op when some kernel or output needs its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not computed: a source, or a fused kernel already.
    Source,
    /// Roots a kernel (and may join one as a member or a view).
    Root,
    /// A reshape: the JIT aliases or copies its operand's buffer, which must exist.
    Alias,
    /// Computed by a native step of its own (a convolution, a pooling node): stays a node,
    /// and its operands must exist as buffers.
    Native,
    /// Left to later passes (none reach fusion in the default pipeline); its operands
    /// must exist as buffers.
    Other,
}

fn role(op: &Op) -> Role {
    match op {
        Op::Placeholder | Op::Variable { .. } | Op::Constant(_) | Op::Random { .. } => Role::Source,
        Op::Fusion(_) => Role::Source,
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) | Op::StopGradient => Role::Root,
        Op::Reduce { .. } | Op::MatMul => Role::Root,
        Op::Permute(_)
        | Op::BroadcastTo
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Concat { .. } => Role::Root,
        Op::Reshape => Role::Alias,
        // `size` of a concrete shape is a constant (`concretize` folds it; a pipeline
        // without it leaves it to fusion).
        Op::Size { .. } => Role::Root,
        Op::Assign | Op::Group => Role::Other,
        // A convolution runs as a native step of its own (im2col and `gemm`), never inside a
        // kernel: its operands must exist as buffers, and its consumers read its output.
        Op::Conv { .. } => Role::Native,
        Op::Pool { .. } => Role::Native,
        // A collective is a host step (`crate::dist`): its operands are buffers it sends,
        // its output a buffer it receives into.
        Op::AllReduce => Role::Native,
    }
}

fn is_elementwise(op: &Op) -> bool {
    // `stop_gradient` is the identity here (`simplify` removes it; a pipeline without
    // `simplify` leaves it to fusion, which reads through it).
    matches!(
        op,
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast(_) | Op::StopGradient
    )
}

impl Pass for Fusion {
    fn name(&self) -> &str {
        "fusion"
    }

    fn run(&self, p: &mut Program, _opts: &PassOptions) -> Result<bool> {
        let order = p.live_order();
        if order
            .iter()
            .any(|&id| !p.graph.node(id).ty.shape.is_fixed())
        {
            // Fusion needs concrete shapes; without a batch size there is nothing to do.
            return Ok(false);
        }
        let mut users: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for &id in &order {
            for &i in &p.graph.node(id).inputs {
                let e = users.entry(i).or_default();
                // A user's operands are read together: a repeated operand repeats `id` last.
                if e.last() != Some(&id) {
                    e.push(id);
                }
            }
        }
        let outputs: HashSet<NodeId> = p.outputs.iter().copied().collect();
        let mut assigned: HashSet<NodeId> = HashSet::new();
        // Values that must exist as buffers: outputs, operands of pad and concat (read
        // through guarded loads) and of ops that are not fused, operands of needed reshapes
        // (added below, consumers first), and every kernel parameter.
        let mut needed: HashSet<NodeId> = outputs.clone();
        for &id in &order {
            let n = p.graph.node(id);
            if matches!(n.op, Op::Pad { .. } | Op::Concat { .. })
                || matches!(role(&n.op), Role::Other | Role::Native)
            {
                needed.extend(n.inputs.iter().copied());
            }
        }
        let pos: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(k, &id)| (id, k)).collect();
        let mut built: Vec<(NodeId, build::Built)> = vec![];
        for &root in order.iter().rev() {
            let n = p.graph.node(root);
            if role(&n.op) == Role::Alias && needed.contains(&root) {
                needed.insert(n.inputs[0]);
            }
            // A member of a kernel built earlier is computed there, but if some kernel reads
            // it from memory after all (it became needed later) it gets a kernel of its own.
            if role(&n.op) != Role::Root {
                continue;
            }
            // Consumers come first, so every reader of `root` is decided: if no kernel reads it
            // as a parameter, each one computes it itself and it needs no kernel.
            if !needed.contains(&root) {
                continue;
            }
            let b = match build(
                &p.graph, root, &users, &outputs, &assigned, &needed, true, &pos,
            ) {
                Some(b) => b,
                None => build(
                    &p.graph, root, &users, &outputs, &assigned, &needed, false, &pos,
                )
                .ok_or_else(|| crate::Error::Internal("fusion: no kernel without a core".into()))?,
            };
            b.kernel.validate().map_err(|e| {
                crate::Error::Internal(format!("fusion built an invalid kernel: {e}"))
            })?;
            assigned.extend(b.members.iter().copied());
            needed.extend(b.params.iter().copied());
            built.push((root, b));
        }
        let changed = !built.is_empty();
        let mut kernel_of: HashMap<NodeId, NodeId> = HashMap::new();
        let mut pending_notes = vec![];
        for (root, b) in built {
            let n = p.graph.node(root);
            let (loc, ty) = (n.loc.clone(), n.ty.clone());
            let name = n.name.as_deref().map(str::to_string);
            // The user's ops that can fail inside the kernel, for the JIT's runtime errors.
            let fallible = p.graph.fallible_between(root, &b.params);
            let kernel = p.kernels.add(b.kernel);
            let f = p
                .graph
                .add_node(Op::Fusion(kernel), &b.params, Some(ty), None, loc);
            if !fallible.is_empty() {
                p.fallible.insert(f, fallible);
            }
            p.replace(root, f);
            if let Some(name) = name {
                let _ = p.graph.rename(root, &format!("{name}.unfused"));
                let _ = p.graph.rename(f, &name);
            }
            kernel_of.insert(root, f);
            for (producer, why) in b.notes {
                pending_notes.push((producer, f, why));
            }
        }
        for (producer, consumer, why) in pending_notes {
            // A producer that became a kernel root is noted on its kernel.
            let at = kernel_of.get(&producer).copied().unwrap_or(producer);
            p.notes.entry(at).or_default().push(Note {
                consumer: Some(consumer),
                text: why,
            });
        }
        let outs = p.outputs.clone();
        super::dce::remove_dead(&mut p.graph, &outs);
        p.notes.retain(|id, _| p.graph.get(*id).is_some());
        Ok(changed)
    }
}

/// Counts the kernels a program runs: fused kernels, and compute ops left unfused.
pub fn kernel_count(p: &Program) -> usize {
    p.live_order()
        .into_iter()
        .filter(|&id| {
            let op = &p.graph.node(id).op;
            !matches!(op.group(), OpGroup::Source) && !matches!(op, Op::Reshape)
        })
        .count()
}
