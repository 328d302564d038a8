//! The reference interpreter: the oracle that the JIT and every pass are tested against.
//!
//! It is written to be obviously right rather than fast. Every value is held as `f64`
//! elements with a dtype and a concrete shape, and every op is a few lines over those:
//!
//! - **Floats compute in `f64`.** In [`Precision::F32`] mode each `f32`-typed result is
//!   rounded to `f32` right after its op. For `+ - * /` and `sqrt` that equals native `f32`
//!   arithmetic exactly (an `f64` result rounded to `f32` is the correctly rounded `f32`
//!   result: double rounding is innocuous when the wide format has more than `2p+2` bits);
//!   `exp`, `log`, `tanh` and `sigmoid` come out correctly rounded, which is what an
//!   approximation in the JIT is measured against. Sums and matrix products accumulate in
//!   `f64` and round once at the end.
//! - In [`Precision::F64`] mode nothing is rounded and `f32` nodes come out as `f64` arrays:
//!   this is what finite-difference gradient checks use.
//! - Integers compute exactly in `i64` and wrap to `i32`; integer division truncates toward
//!   zero, and division by zero is an error naming the op and its source line.
//! - Random ops draw element `i` of stream `run_index` from [`crate::rng`], so results do not
//!   depend on evaluation order.
//!
//! Fused kernels (made by the optimizer) are evaluated expression by expression with the same
//! per-op rounding, so a graph evaluates to bitwise the same values before and after fusion.
//! Movement ops take their meaning from [`crate::view`], the same index maps that fusion
//! folds into kernel loads, so the two cannot disagree on what a pad or a concat is.
//!
//! The code is split by concern: this file holds the entry points (graph order, feed checks,
//! the [`Interpreter`]); `eval.rs` the per-op arithmetic, which the JIT's `f64` helpers and
//! constant folding also use; `kernel.rs` the evaluation of fused kernels.

use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{Graph, GraphData, NodeId, Tensor};
use crate::shape::Dim;
use std::collections::{HashMap, HashSet};

mod eval;
mod kernel;

use eval::eval_node;
pub(crate) use eval::unary;

/// The arithmetic the interpreter uses for `f32` nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Round every `f32` result to `f32` (the semantics of the graph).
    #[default]
    F32,
    /// Keep `f32` nodes in `f64` (for precise gradient checks).
    F64,
}

/// A value during evaluation.
#[derive(Clone, Debug)]
struct Value {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// Evaluates `fetches` of `d`. `vars` holds variable values (missing ones are an error);
/// `run_index` selects the random stream.
pub fn evaluate(
    d: &GraphData,
    fetches: &[NodeId],
    feeds: &[(NodeId, Array)],
    vars: &HashMap<NodeId, Array>,
    precision: Precision,
    run_index: u64,
) -> Result<Vec<Array>> {
    d.check()?;
    for &f in fetches {
        if d.get(f).is_none() {
            return Err(Error::Feed("a fetched tensor is not in this graph".into()));
        }
    }
    let fed: HashMap<NodeId, &Array> = feeds.iter().map(|(i, a)| (*i, a)).collect();
    // Roots of evaluation stop at fed nodes: they are not computed.
    let order = order_with_feeds(d, fetches, &fed);
    let batch = check_feeds(d, &order, &fed, precision)?;
    let mut vals: HashMap<NodeId, Value> = HashMap::with_capacity(order.len());
    for &id in &order {
        let n = d.node(id);
        let shape: Vec<usize> = match batch {
            Some(b) => n.ty.shape.resolve(b),
            None => match n.ty.shape.to_fixed() {
                Some(s) => s,
                None => {
                    return Err(Error::Feed(format!(
                        "cannot tell the batch size for {} {}: no fed placeholder has an open dimension",
                        n.ty,
                        n.label()
                    )))
                }
            },
        };
        let v = if let Some(a) = fed.get(&id) {
            Value {
                dtype: n.ty.dtype,
                shape,
                data: a.to_f64_vec(),
            }
        } else {
            let ins: Vec<&Value> = n.inputs.iter().map(|i| &vals[i]).collect();
            eval_node(n, id, &ins, shape, vars, precision, run_index)?
        };
        vals.insert(id, v);
    }
    Ok(fetches
        .iter()
        .map(|f| {
            let v = &vals[f];
            let dt = match (v.dtype, precision) {
                (DType::F32, Precision::F64) => DType::F64,
                (d, _) => d,
            };
            Array::from_f64(dt, v.shape.clone(), v.data.clone())
        })
        .collect())
}

pub(crate) fn order_with_feeds(
    d: &GraphData,
    fetches: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
) -> Vec<NodeId> {
    let mut seen = HashSet::new();
    let mut out = vec![];
    let mut stack: Vec<(NodeId, usize)> = vec![];
    for &r in fetches {
        if !seen.insert(r) {
            continue;
        }
        stack.push((r, 0));
        while let Some((id, i)) = stack.pop() {
            let inputs = if fed.contains_key(&id) {
                &[][..]
            } else {
                &d.node(id).inputs[..]
            };
            if i < inputs.len() {
                stack.push((id, i + 1));
                let c = inputs[i];
                if seen.insert(c) {
                    stack.push((c, 0));
                }
            } else {
                out.push(id);
            }
        }
    }
    out
}

pub(crate) fn check_feeds(
    d: &GraphData,
    order: &[NodeId],
    fed: &HashMap<NodeId, &Array>,
    precision: Precision,
) -> Result<Option<usize>> {
    let missing: Vec<String> = order
        .iter()
        .filter(|&&id| matches!(d.node(id).op, Op::Placeholder) && !fed.contains_key(&id))
        .map(|&id| format!("{} ({})", d.node(id).label(), d.node(id).ty))
        .collect();
    if !missing.is_empty() {
        let s = if missing.len() == 1 { " was" } else { "s were" };
        return Err(Error::Feed(format!(
            "{} placeholder{s} not fed: {}",
            missing.len(),
            missing.join(", ")
        )));
    }
    let mut batch: Option<(usize, String)> = None;
    for (&id, a) in fed {
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

/// Evaluates graphs: the reference backend. Holds the values of the graph's variables.
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(2)]);
/// let y = (x * 3.0).sum(&[1], false);
/// let mut interp = Interpreter::new(&g).unwrap();
/// let out = interp.run(&[y], &[(x, Array::new([2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap())]).unwrap();
/// assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![9.0, 21.0]);
/// ```
pub struct Interpreter {
    graph: Graph,
    vars: HashMap<NodeId, Array>,
    precision: Precision,
    runs: u64,
}

impl Interpreter {
    /// An interpreter over `g` in `f32` precision, variables initialized from their
    /// initializers.
    pub fn new(g: &Graph) -> Result<Interpreter> {
        Interpreter::with_precision(g, Precision::F32)
    }

    /// An interpreter with the given precision.
    pub fn with_precision(g: &Graph, precision: Precision) -> Result<Interpreter> {
        g.check()?;
        let mut it = Interpreter {
            graph: g.clone(),
            vars: HashMap::new(),
            precision,
            runs: 0,
        };
        it.init_missing();
        Ok(it)
    }

    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn init_missing(&mut self) {
        let d = self.graph.data();
        for id in d.variables() {
            let n = d.node(id);
            if let (Op::Variable { init }, Some(shape)) = (&n.op, n.ty.shape.to_fixed()) {
                self.vars
                    .entry(id)
                    .or_insert_with(|| init.fill(n.ty.dtype, &shape));
            }
        }
    }

    /// Evaluates `fetches` with `feeds`; each call draws fresh random numbers.
    pub fn run(
        &mut self,
        fetches: &[Tensor<'_>],
        feeds: &[(Tensor<'_>, Array)],
    ) -> Result<Vec<Array>> {
        for t in fetches.iter().chain(feeds.iter().map(|(t, _)| t)) {
            if !t.graph().same_as(&self.graph) {
                return Err(Error::Feed(format!("{t:?} belongs to a different graph")));
            }
        }
        let f: Vec<NodeId> = fetches.iter().map(|t| t.id()).collect();
        let fd: Vec<(NodeId, Array)> = feeds.iter().map(|(t, a)| (t.id(), a.clone())).collect();
        self.run_ids(&f, &fd)
    }

    /// [`Interpreter::run`] by node ids.
    pub fn run_ids(&mut self, fetches: &[NodeId], feeds: &[(NodeId, Array)]) -> Result<Vec<Array>> {
        self.graph.check()?;
        self.init_missing();
        let (updates, mut out) = {
            let d = self.graph.data();
            let updates = crate::graph::effects::collect(&d, fetches)?;
            let all = crate::graph::effects::with_updates(fetches, &updates);
            let out = evaluate(&d, &all, feeds, &self.vars, self.precision, self.runs)?;
            (updates, out)
        };
        self.runs += 1;
        let d = self.graph.data();
        for (u, value) in updates.iter().zip(out.drain(fetches.len()..)) {
            // F64 precision hands out f64 arrays; a variable keeps its own dtype.
            let value = value.cast(d.node(u.variable).ty.dtype);
            self.vars.insert(u.variable, value);
        }
        Ok(out)
    }

    /// The current value of a variable.
    pub fn variable(&self, id: NodeId) -> Option<&Array> {
        self.vars.get(&id)
    }

    /// Sets a variable, checking its dtype and shape.
    pub fn set_variable(&mut self, id: NodeId, value: Array) -> Result<()> {
        let d = self.graph.data();
        let n = d
            .get(id)
            .ok_or_else(|| Error::invalid("set_variable: no such node"))?;
        if !matches!(n.op, Op::Variable { .. }) {
            return Err(Error::invalid(format!(
                "set_variable: {} is not a variable",
                n.label()
            )));
        }
        let dtype_ok = value.dtype() == n.ty.dtype
            || (self.precision == Precision::F64
                && n.ty.dtype == DType::F32
                && value.dtype() == DType::F64);
        if !dtype_ok || n.ty.shape.to_fixed().as_deref() != Some(value.shape()) {
            return Err(Error::invalid(format!(
                "set_variable: {} is {}, the value is {}{:?}",
                n.label(),
                n.ty,
                value.dtype(),
                value.shape()
            )));
        }
        drop(d);
        self.vars.insert(id, value);
        Ok(())
    }
}
