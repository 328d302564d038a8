//! Feed checks: do the arrays given to a run fit the placeholders it needs?
//!
//! Both backends report the same errors for the same mistake, because both go through this
//! one checker before anything runs: the session calls [`check`] for either backend (the JIT
//! needs its answer, the batch size, to pick or compile an executable), and the interpreter's
//! evaluation calls [`check_feeds`] on its evaluation order. Neither backend's code is on the
//! other's path.
//!
//! What is checked, in this order:
//! 1. every placeholder the fetches need (stopping at fed nodes) is fed; all the missing ones
//!    are listed at once, in the order they were created;
//! 2. each fed array has its node's dtype (in [`Precision::F64`], an `f64` array may feed an
//!    `f32` node) and shape, an open (`?`) dimension taking any size;
//! 3. the fed placeholders with an open leading dimension agree on it: that number is the
//!    run's batch size.
//!
//! Feeds are checked in the order their nodes were created, so when several are wrong the
//! same one is reported every time.

use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{GraphData, NodeId};
use crate::interp::Precision;
use crate::shape::Dim;
use std::collections::{HashMap, HashSet};

/// Checks a run of `fetches` with `fed` before anything is computed: the graph holds no
/// error, every fetch is a node of it, and the feeds fit (see the module docs). Returns the
/// batch size the feeds give, if any placeholder has an open dimension.
pub(crate) fn check(
    d: &GraphData,
    fetches: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
    precision: Precision,
) -> Result<Option<usize>> {
    d.check()?;
    if fetches.iter().any(|&f| d.get(f).is_none()) {
        return Err(Error::Feed("a fetched tensor is not in this graph".into()));
    }
    let batch = check_feeds(d, &needed_placeholders(d, fetches, fed), fed, precision)?;
    if batch.is_none() {
        // No fed placeholder sets `?`: every node the run computes must then have a fixed
        // shape, on both backends (the JIT once guessed batch 1).
        let order = d.topo_order_until(fetches, |id| fed.contains_key(&id));
        require_fixed_shapes(d, &order)?;
    }
    Ok(batch)
}

/// Refuses a run with no batch size (no fed placeholder has a `?`) in which a node of
/// `order` still has an open dimension, naming the first such node's type and op.
pub(crate) fn require_fixed_shapes(d: &GraphData, order: &[NodeId]) -> Result<()> {
    match order
        .iter()
        .map(|&id| d.node(id))
        .find(|n| n.ty.shape.to_fixed().is_none())
    {
        Some(n) => Err(Error::Feed(format!(
            "cannot tell the batch size for {} {}: no fed placeholder has an open dimension",
            n.ty,
            n.label()
        ))),
        None => Ok(()),
    }
}

/// The placeholders that computing `fetches` reads, walking operands back from the fetches
/// and stopping at fed nodes (a fed node's operands are not computed).
fn needed_placeholders(
    d: &GraphData,
    fetches: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
) -> Vec<NodeId> {
    let mut seen: HashSet<NodeId> = fetches.iter().copied().collect();
    let mut stack: Vec<NodeId> = seen.iter().copied().collect();
    let mut out = vec![];
    while let Some(id) = stack.pop() {
        let n = d.node(id);
        if matches!(n.op, Op::Placeholder) {
            out.push(id);
        }
        if fed.contains_key(&id) {
            continue;
        }
        for &i in &n.inputs {
            if seen.insert(i) {
                stack.push(i);
            }
        }
    }
    out
}

/// Checks `fed` against the nodes a run computes (`order`, any order; only its placeholders
/// matter) and returns the batch size. See the module docs for what is checked.
pub(crate) fn check_feeds(
    d: &GraphData,
    order: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
    precision: Precision,
) -> Result<Option<usize>> {
    let mut missing: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|id| matches!(d.node(*id).op, Op::Placeholder) && !fed.contains_key(id))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|&id| format!("{} ({})", d.node(id).label(), d.node(id).ty))
            .collect();
        let s = if names.len() == 1 { " was" } else { "s were" };
        return Err(Error::Feed(format!(
            "{} placeholder{s} not fed: {}",
            names.len(),
            names.join(", ")
        )));
    }
    let mut fed: Vec<(NodeId, &Array)> = fed.iter().map(|(&id, &a)| (id, a)).collect();
    fed.sort_unstable_by_key(|f| f.0);
    let mut batch: Option<(usize, String)> = None;
    for (id, a) in fed {
        let Some(n) = d.get(id) else {
            return Err(Error::Feed("a fed tensor is not in this graph".into()));
        };
        let dtype_ok = a.dtype() == n.ty.dtype
            || (precision == Precision::F64 && n.ty.dtype == DType::F32 && a.dtype() == DType::F64);
        if !dtype_ok {
            return Err(Error::Feed(format!(
                "{} expects {}, but the fed array holds {}",
                n.label(),
                n.ty,
                a.dtype()
            )));
        }
        let dims = n.ty.shape.dims();
        let ok = dims.len() == a.shape().len()
            && dims.iter().zip(a.shape()).all(|(d, &s)| match d {
                Dim::Fixed(k) => *k == s,
                Dim::Batch => true,
            });
        if !ok {
            return Err(Error::Feed(format!(
                "{} expects {}, but the fed array has shape {:?}",
                n.label(),
                n.ty,
                a.shape()
            )));
        }
        if dims.first() == Some(&Dim::Batch) {
            let b = a.shape()[0];
            match &batch {
                Some((b0, who)) if *b0 != b => {
                    return Err(Error::Feed(format!(
                        "feeds disagree on the batch size: {who} has {b0} rows, {} has {b}",
                        n.label()
                    )))
                }
                Some(_) => {}
                None => batch = Some((b, n.label())),
            }
        }
    }
    Ok(batch.map(|(b, _)| b))
}
