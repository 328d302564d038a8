//! What an executable runs, step by step, and the check that it runs everything natively.
//!
//! The JIT has no fallback: an op it cannot lower is a compile error, never a call into the
//! interpreter at run time (the issue that removed host steps measured a fetched transpose
//! running 50 times slower that way). Every compute node of the optimized program must be
//! covered by exactly one native step: a kernel call (with or without a `gemm`), a copy or
//! an alias of a reshape, a random fill, a convolution (`conv.rs`), a pooling step (`pool/`) or an `all_reduce` host step (`collective.rs`, which calls `crate::dist`). [`StepCounts`] says how many of each kind an
//! executable has, and [`covers`] proves the coverage at compile time; the session hands the
//! counts out with the compile times, and the test suite checks them on every JIT run.

use super::buffers::Loc;
use super::compile::Step;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::NodeId;
use crate::passes::Program;
use std::collections::HashMap;

/// How many steps of each kind an executable runs (see the module docs of `jit::native`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepCounts {
    /// Calls of compiled kernel functions.
    pub kernels: usize,
    /// Kernels whose core is a `gemm` call.
    pub gemm: usize,
    /// Reshapes copied into their own buffer.
    pub copies: usize,
    /// Reshapes that share their operand's buffer (no step at all).
    pub aliases: usize,
    /// Random fills.
    pub random: usize,
    /// Convolutions (im2col and `gemm` steps).
    pub conv: usize,
    /// Convolutions among `conv` that run Winograd F(2×2, 3×3) (`jit/conv_wino.rs`).
    pub conv_winograd: usize,
    /// Filter gradients that run the direct small-K kernel instead of `gemm`
    /// (`jit/conv_direct/filter.rs`; `KILN_CONV_FILTER=0` turns it off): among `conv`, or
    /// inside the backward twin (among `conv_fused`).
    pub conv_filter_direct: usize,
    /// Pooling steps.
    pub pools: usize,
    /// `all_reduce` steps (host steps that communicate: `jit/collective.rs`).
    pub collectives: usize,
    /// Pooling steps that run a Cranelift kernel (the others run native loops: see
    /// `jit/pool/native.rs`).
    pub pool_kernels: usize,
    /// Fused steps around a convolution's activation, each replacing several nodes
    /// (`KILN_CONV_FUSE=0` turns them off).
    pub conv_fused: usize,
    /// Fused forward steps: a small-K convolution with its bias, ReLU and max pool in one
    /// direct kernel (`jit/conv_direct.rs`; `KILN_CONV_DIRECT=0` turns them off). Not
    /// counted in `conv_fused` or `conv`.
    pub conv_direct: usize,
    /// Forward convolutions that run the kernel (bias, activation) and pooling after them
    /// on each tile (`jit/conv/epilogue.rs`; `KILN_CONV_EPILOGUE=0` turns them off).
    pub conv_epilogues: usize,
    /// Compute nodes of the program (everything but placeholders, variables and constants).
    pub nodes: usize,
    /// Nodes covered by one of the above.
    pub covered: usize,
}

impl StepCounts {
    /// True if every compute node runs as a native step (always, for a compiled executable).
    pub fn covers_every_node(&self) -> bool {
        self.covered == self.nodes
    }
}

/// Counts `steps` and checks that they cover every compute node of `order` (the program's
/// schedule), given where each value lives.
pub(super) fn covers(
    p: &Program,
    order: &[NodeId],
    steps: &[Step],
    loc: &HashMap<NodeId, Loc>,
) -> Result<StepCounts> {
    let mut c = StepCounts::default();
    let mut covered: Vec<NodeId> = vec![];
    for s in steps {
        match s {
            Step::Kernel { f, gemm, node, .. } => {
                c.kernels += usize::from(f.is_some());
                c.gemm += usize::from(gemm.is_some());
                covered.push(*node);
            }
            Step::Copy { node, .. } => {
                c.copies += 1;
                covered.push(*node);
            }
            Step::Random { node, .. } => {
                c.random += 1;
                covered.push(*node);
            }
            Step::Conv { node, conv, .. } => {
                c.conv += 1;
                c.conv_winograd += usize::from(conv.wino.is_some());
                c.conv_filter_direct += usize::from(conv.direct_filter());
                covered.push(*node);
            }
            Step::AllReduce(s) => {
                c.collectives += 1;
                covered.push(s.node);
            }
            Step::ConvFused(f) => {
                c.conv_filter_direct += usize::from(f.is_filter());
                if f.is_direct() {
                    c.conv_direct += 1;
                } else {
                    c.conv_fused += 1;
                }
                covered.extend(f.members());
            }
            Step::Pool(p) => {
                c.pools += 1;
                c.pool_kernels += usize::from(p.lowered);
                covered.push(p.node);
            }
        }
    }
    for &id in order {
        let n = p.graph.node(id);
        match n.op {
            Op::Placeholder | Op::Variable { .. } | Op::Constant(_) => continue,
            Op::Reshape if loc.get(&n.inputs[0]) == loc.get(&id) => {
                c.aliases += 1;
                covered.push(id);
            }
            _ => {}
        }
        c.nodes += 1;
    }
    covered.sort();
    covered.dedup();
    c.covered = covered.len();
    if !c.covers_every_node() {
        let missing: Vec<String> = order
            .iter()
            .filter(|id| !covered.contains(id))
            .map(|&id| p.graph.node(id))
            .filter(|n| {
                !matches!(
                    n.op,
                    Op::Placeholder | Op::Variable { .. } | Op::Constant(_)
                )
            })
            .map(|n| format!("{} {}", n.op.name(), n.label()))
            .collect();
        return Err(Error::Internal(format!(
            "jit: no native step computes {}",
            missing.join(", ")
        )));
    }
    Ok(c)
}

/// The error for a node the JIT has no lowering for: fusion turns every compute op into a
/// kernel, so reaching this is a compiler bug (or a pipeline without fusion).
pub(super) fn unsupported(op: &Op, label: &str) -> Error {
    Error::Internal(format!(
        "jit: no native lowering for {} {label} (the program must be fused: run the default \
         pipeline's fusion pass)",
        op.name()
    ))
}
