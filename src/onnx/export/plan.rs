//! What an export writes: the nodes the outputs depend on, in topological order, once the
//! fixed placeholders (a model's `training` switch) have decided the `where`s they control.
//!
//! A `where` whose condition is known at export (a constant or a fixed placeholder, through
//! broadcasts and reshapes) is the branch it selects: the other branch is not walked, so
//! dropout's random mask and batch normalization's batch statistics never reach the file.
//! That is what the session's specialization on `bool` feeds computes, bitwise (a `where`
//! picks one operand's bits), so the exported graph gives the inference results.
//! `stop_gradient` is its operand too (an identity in a graph that is not differentiated).

use crate::array::{Array, ArrayData};
use crate::graph::op::Op;
use crate::graph::{GraphData, NodeId};
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};

/// The walk's result.
pub(crate) struct Plan {
    /// Every node the outputs need, operands first.
    pub(crate) order: Vec<NodeId>,
    /// Nodes that are another node's value (a decided `where`, `stop_gradient`): no ONNX node.
    pub(crate) alias: HashMap<NodeId, NodeId>,
    /// Variables every use of which is a convolution's filter: written in ONNX's OIHW layout.
    pub(crate) oihw: HashSet<NodeId>,
}

/// The single value of a `bool` array all of whose elements agree.
fn uniform_bool(a: &Array) -> Option<bool> {
    match a.data() {
        ArrayData::Bool(v) => {
            let first = *v.first()?;
            v.iter().all(|&b| b == first).then_some(first)
        }
        _ => None,
    }
}

/// The value of a condition known at export, looking through broadcasts and reshapes.
fn known_bool(d: &GraphData, mut id: NodeId, fixed: &HashMap<NodeId, Array>) -> Option<bool> {
    loop {
        let n = d.node(id);
        // Any other op is "not known": the `where` is then exported as it is, which is
        // always right (this only decides what can be left out).
        match &n.op {
            Op::Constant(c) => return uniform_bool(&c.0),
            Op::Placeholder => return fixed.get(&id).and_then(uniform_bool),
            Op::BroadcastTo | Op::Reshape | Op::StopGradient => id = n.inputs[0],
            _ => return None,
        }
    }
}

/// The operands a node needs and, for a node that is one of them, which.
fn needs(
    d: &GraphData,
    id: NodeId,
    fixed: &HashMap<NodeId, Array>,
) -> (SmallVec<[NodeId; 3]>, Option<NodeId>) {
    let n = d.node(id);
    match n.op {
        Op::Where => match known_bool(d, n.inputs[0], fixed) {
            Some(c) => {
                let pick = n.inputs[if c { 1 } else { 2 }];
                (SmallVec::from_slice(&[pick]), Some(pick))
            }
            None => (n.inputs.clone(), None),
        },
        Op::StopGradient => (n.inputs.clone(), Some(n.inputs[0])),
        Op::Placeholder if fixed.contains_key(&id) => (SmallVec::new(), None),
        _ => (n.inputs.clone(), None),
    }
}

/// Walks from `outputs` (iteratively: graphs can be deep chains).
pub(crate) fn plan(d: &GraphData, outputs: &[NodeId], fixed: &HashMap<NodeId, Array>) -> Plan {
    let mut order = vec![];
    let mut alias = HashMap::new();
    let mut operands: HashMap<NodeId, SmallVec<[NodeId; 3]>> = HashMap::new();
    let mut seen: HashSet<NodeId> = HashSet::new();
    for &root in outputs {
        if !seen.insert(root) {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        while let Some((id, i)) = stack.pop() {
            let ops = operands.entry(id).or_insert_with(|| {
                let (ops, a) = needs(d, id, fixed);
                if let Some(a) = a {
                    alias.insert(id, a);
                }
                ops
            });
            if let Some(&c) = ops.get(i) {
                stack.push((id, i + 1));
                if seen.insert(c) {
                    stack.push((c, 0));
                }
            } else {
                order.push(id);
            }
        }
    }
    let resolve = |mut id: NodeId| {
        while let Some(&a) = alias.get(&id) {
            id = a;
        }
        id
    };
    // A variable goes OIHW only if nothing but convolutions' filters reads it.
    let mut filter_only: HashMap<NodeId, bool> = HashMap::new();
    for &o in outputs {
        filter_only.insert(resolve(o), false);
    }
    for &id in &order {
        if alias.contains_key(&id) {
            continue;
        }
        let is_conv = matches!(&d.node(id).op, Op::Conv { kind, .. }
            if !matches!(kind, crate::graph::op::ConvKind::FilterGrad));
        for (pos, &x) in operands[&id].iter().enumerate() {
            let ok = is_conv && pos == 1;
            let e = filter_only.entry(resolve(x)).or_insert(true);
            *e &= ok;
        }
    }
    let oihw = order
        .iter()
        .copied()
        .filter(|&id| {
            matches!(d.node(id).op, Op::Variable { .. })
                && d.node(id).ty.shape.rank() == 4
                && filter_only.get(&id).copied().unwrap_or(false)
        })
        .collect();
    Plan { order, alias, oihw }
}
