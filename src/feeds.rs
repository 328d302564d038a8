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
//!    `f32` node) and shape, an open (`?`) dimension taking any size (a mismatch names the
//!    line that made the placeholder: the run may be far from it);
//! 3. the fed placeholders with an open leading dimension agree on it: that number is the
//!    run's batch size.
//!
//! Feeds are checked in the order their nodes were created, so when several are wrong the
//! same one is reported every time.
//!
//! Also here, so that the session and the interpreter word them alike: a fetch or feed from
//! another graph ([`same_graph`]), a run with no batch size ([`no_batch_size`]), and the
//! optional check for NaN and infinities in feeds ([`check_finite`]). Each names the tensor by
//! name, type and the line that made it.

use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{Graph, GraphData, Node, NodeId, Tensor};
use crate::interp::Precision;
use crate::shape::Dim;
use std::collections::{HashMap, HashSet};

/// Checks a run of `fetches` with `fed` before anything is computed: the graph holds no
/// error, every fetch is a node of it, and the feeds fit (see the module docs). Returns the
/// batch size the feeds give, if any placeholder has an open dimension.
///
/// `cache` keeps the placeholders the run reads (a walk over the fetches' cone, which cost
/// more than the rest of the check) for the fed set that found them, the sorted fed ids: a
/// session passes the same cache for the same fetches, so a training loop walks once. Nodes
/// never change once made, so a new fed set is the only thing that changes the answer.
pub(crate) fn check(
    d: &GraphData,
    fetches: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
    precision: Precision,
    cache: &mut Option<(Vec<NodeId>, Vec<NodeId>)>,
) -> Result<Option<usize>> {
    d.check()?;
    if fetches.iter().any(|&f| d.get(f).is_none()) {
        return Err(Error::Feed("a fetched tensor is not in this graph".into()));
    }
    let mut ids: Vec<NodeId> = fed.keys().copied().collect();
    ids.sort_unstable();
    if !matches!(cache, Some((k, _)) if *k == ids) {
        *cache = Some((ids, needed_placeholders(d, fetches, fed)));
    }
    let needed: &[NodeId] = cache.as_ref().map_or(&[], |c| &c.1);
    let batch = check_feeds(d, needed, fed, precision)?;
    if batch.is_none() {
        // No fed placeholder sets `?`: every node the run computes must then have a fixed
        // shape, on both backends (the JIT once guessed batch 1).
        let order = d.topo_order_until(fetches, |id| fed.contains_key(&id));
        require_fixed_shapes(d, &order, fed)?;
    }
    Ok(batch)
}

/// Refuses a run with no batch size (no fed placeholder has a `?`) in which a node of
/// `order` still has an open dimension: [`no_batch_size`] of the first such node.
pub(crate) fn require_fixed_shapes(
    d: &GraphData,
    order: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
) -> Result<()> {
    match order
        .iter()
        .map(|&id| d.node(id))
        .find(|n| n.ty.shape.to_fixed().is_none())
    {
        Some(n) => Err(no_batch_size(d, n, fed)),
        None => Ok(()),
    }
}

/// The error for a node `n` with an open (`?`) dimension in a run where no fed placeholder
/// sets the batch size: names the node (its type, op, name and line) and the placeholders
/// with a `?` that are not fed (name, type, line), the first of which would set it.
pub(crate) fn no_batch_size(d: &GraphData, n: &Node, fed: &HashMap<NodeId, &Array>) -> Error {
    let open: Vec<String> = d
        .placeholders()
        .into_iter()
        .filter(|id| !fed.contains_key(id))
        .map(|id| d.node(id))
        .filter(|p| p.ty.shape.dims().first() == Some(&Dim::Batch))
        .map(|p| format!("{} ({}{})", p.label(), p.ty, made_at(p)))
        .collect();
    let hint = match open.as_slice() {
        [] => "; feed a placeholder with an open dimension, or give the op a fixed shape".into(),
        [one] => format!("; feed {one} to set it"),
        many => format!("; feed one of {} to set it", many.join(", ")),
    };
    Error::Feed(format!(
        "cannot tell the batch size for {} {}{}: no fed placeholder has an open dimension{hint}",
        n.ty,
        n.label(),
        made_at(n)
    ))
}

/// `, made at file:line:col`, or nothing.
fn made_at(n: &Node) -> String {
    n.loc
        .as_ref()
        .map(|l| format!(", made at {l}"))
        .unwrap_or_default()
}

/// ` (the placeholder was made at file:line:col)`, or nothing: the end of a feed mismatch
/// message, so that a run far from the graph's construction still points at the line that
/// declared what the array should be.
fn was_made_at(n: &Node) -> String {
    n.loc
        .as_ref()
        .map(|l| format!(" ({} was made at {l})", n.op.name()))
        .unwrap_or_default()
}

/// How a run's error names a tensor given to it: `fetch 1 ("y": relu f32[?,3], made at
/// src/main.rs:12:9)`.
fn describe(what: &str, pos: usize, t: &Tensor<'_>) -> String {
    let d = t.graph().data();
    let n = d.node(t.id());
    let name = n
        .name
        .as_deref()
        .map(|s| format!("{s:?}: "))
        .unwrap_or_default();
    format!(
        "{what} {pos} ({name}{} {}{})",
        n.op.name(),
        n.ty,
        made_at(n)
    )
}

/// Refuses fetches or feeds made in another graph than `graph`, naming the first one: fetch
/// or feed, its position in the caller's list, its name, op, type and line.
pub(crate) fn same_graph(
    graph: &Graph,
    fetches: &[Tensor<'_>],
    feeds: &[(Tensor<'_>, Array)],
) -> Result<()> {
    let fetched = fetches.iter().enumerate().map(|(i, t)| ("fetch", i, t));
    let fed = feeds.iter().enumerate().map(|(i, (t, _))| ("feed", i, t));
    for (what, pos, t) in fetched.chain(fed) {
        if !t.graph().same_as(graph) {
            return Err(Error::Feed(format!(
                "{} is from another graph than the one being run; use the tensors of the \
                 graph the session (or interpreter) was made with (each Graph::new() makes a \
                 new graph)",
                describe(what, pos, t)
            )));
        }
    }
    Ok(())
}

/// Refuses a fed floating-point array holding a NaN or an infinity (the check
/// `Session::check_feeds_finite` switches on), naming the placeholder, its line, and the
/// first bad element's index and value. Feeds are checked in the order their nodes were made.
pub(crate) fn check_finite(d: &GraphData, fed: &HashMap<NodeId, &Array>) -> Result<()> {
    let mut fed: Vec<(NodeId, &Array)> = fed.iter().map(|(&id, &a)| (id, a)).collect();
    fed.sort_unstable_by_key(|f| f.0);
    for (id, a) in fed {
        let bad = match a.dtype() {
            DType::F32 => first_non_finite(a.as_slice::<f32>()?.iter().map(|&x| x as f64)),
            DType::F64 => first_non_finite(a.as_slice::<f64>()?.iter().copied()),
            DType::F16 => first_non_finite(a.as_slice::<half::f16>()?.iter().map(|x| x.to_f64())),
            DType::BF16 => first_non_finite(a.as_slice::<half::bf16>()?.iter().map(|x| x.to_f64())),
            DType::I32 | DType::Bool | DType::I64 | DType::I8 | DType::U8 => None,
        };
        if let Some((i, v)) = bad {
            let n = d.node(id);
            return Err(Error::Feed(format!(
                "the array fed to {} ({}{}) holds {v} at index {:?} (element {i}); fix the \
                 data, or turn this check off with Session::check_feeds_finite(false)",
                n.label(),
                n.ty,
                made_at(n),
                unravel(i, a.shape()),
            )));
        }
    }
    Ok(())
}

/// The position and value of the first NaN or infinity.
fn first_non_finite(xs: impl Iterator<Item = f64>) -> Option<(usize, f64)> {
    xs.enumerate().find(|(_, x)| !x.is_finite())
}

/// The row-major multi-index of element `i` of an array of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &s) in shape.iter().enumerate().rev() {
        if s > 0 {
            idx[k] = i % s;
            i /= s;
        }
    }
    idx
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
                "{} expects {}, but the fed array holds {}{}",
                n.label(),
                n.ty,
                a.dtype(),
                was_made_at(n)
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
                "{} expects {}, but the fed array has shape {:?}{}",
                n.label(),
                n.ty,
                a.shape(),
                was_made_at(n)
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
