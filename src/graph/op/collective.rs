//! The shape rule of `all_reduce` ([`Op::AllReduce`](super::Op::AllReduce)), the one
//! collective op: every operand has one type, `f32` or `f64`, and so does the result.
//!
//! The output's type does not depend on the number of processes, so one graph describes the
//! computation on every rank (and on one process in reference mode); what the op exchanges
//! and in which order it sums is `crate::dist`'s business, not the graph's.

use super::{Arg, Ty};
use crate::dtype::DType;

/// The output type of `all_reduce` over `ins`: the operands' common type.
pub(super) fn infer(ins: &[Arg<'_>]) -> Result<Ty, String> {
    let first = &ins[0];
    if !matches!(first.dtype, DType::F32 | DType::F64) {
        return Err(format!(
            "sums f32 or f64 values across processes, got {first}; cast first"
        ));
    }
    if let Some(other) = ins.iter().find(|a| a.ty != first.ty) {
        return Err(format!(
            "needs operands of one type, got {first} and {other}"
        ));
    }
    Ok(first.ty.clone())
}
