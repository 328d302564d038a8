//! The `all_reduce` step: a host step that hands its operands' buffers to `crate::dist`
//! and receives the ordered sum into its output. It runs on the thread that runs the
//! executable, in the schedule's order, so every rank (same graph, same schedule) issues the
//! same collectives in the same sequence. Blocking: a step computing a later value waits
//! for it (overlap with the backward pass would need a non-blocking start and a wait step).

use super::buffers::{Buffers, Loc};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::NodeId;
use crate::passes::Program;

/// One `all_reduce` node: where its operands and output live, and their common length.
pub(super) struct CollectiveStep {
    pub(super) ins: Vec<Loc>,
    pub(super) out: Loc,
    pub(super) len: usize,
    pub(super) dtype: DType,
    pub(super) node: NodeId,
}

/// The step of `all_reduce` node `id`, after checking what the raw slices below assume:
/// every operand has the node's type, `f32` or `f64`, with a concrete shape.
pub(super) fn step(
    p: &Program,
    id: NodeId,
    loc: &std::collections::HashMap<NodeId, Loc>,
) -> Result<CollectiveStep> {
    let n = p.graph.node(id);
    let bad = |why: &str| Error::invalid(format!("jit: all_reduce {}: {why}", n.label()));
    debug_assert!(matches!(n.op, Op::AllReduce));
    let len =
        n.ty.shape
            .numel()
            .ok_or_else(|| bad("shape is not concrete"))?;
    if !matches!(n.ty.dtype, DType::F32 | DType::F64) {
        return Err(bad("not f32 or f64"));
    }
    if n.inputs.iter().any(|&i| p.graph.node(i).ty != n.ty) {
        return Err(bad("an operand's type differs from the output's"));
    }
    let ins: Vec<Loc> = n.inputs.iter().map(|i| loc[i]).collect();
    let out = loc[&id];
    if ins.contains(&out) {
        return Err(bad("the output shares an operand's buffer"));
    }
    Ok(CollectiveStep {
        ins,
        out,
        len,
        dtype: n.ty.dtype,
        node: id,
    })
}

impl CollectiveStep {
    /// Sends the operands, receives the sum (see `crate::dist::all_reduce_f32`).
    pub(super) fn run(&self, bufs: &mut Buffers<'_>) -> Result<()> {
        let ins: Vec<*const u8> = self.ins.iter().map(|&l| bufs.ptr(l) as *const u8).collect();
        let out = bufs.ptr(self.out);
        match self.dtype {
            DType::F32 => {
                // SAFETY: `step` checked that every operand and the output have this node's
                // type (f32, `len` elements), which their buffers have (feeds and variables
                // checked by `run_into`, slots validated, outputs allocated from their
                // types); the output is not an operand's location, so the one mutable slice
                // aliases none of the shared ones.
                let (parts, out) = unsafe {
                    let parts: Vec<&[f32]> = ins
                        .iter()
                        .map(|&p| std::slice::from_raw_parts(p.cast::<f32>(), self.len))
                        .collect();
                    (
                        parts,
                        std::slice::from_raw_parts_mut(out.cast::<f32>(), self.len),
                    )
                };
                crate::dist::all_reduce_f32(&parts, out)
            }
            _ => {
                // SAFETY: as above, with f64 elements.
                let (parts, out) = unsafe {
                    let parts: Vec<&[f64]> = ins
                        .iter()
                        .map(|&p| std::slice::from_raw_parts(p.cast::<f64>(), self.len))
                        .collect();
                    (
                        parts,
                        std::slice::from_raw_parts_mut(out.cast::<f64>(), self.len),
                    )
                };
                crate::dist::all_reduce_f64(&parts, out)
            }
        }
    }
}
