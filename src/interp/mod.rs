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
//! - `i64` values are held as their bits in the `f64` slot (`src/cast.rs`), so they stay
//!   exact past 2^53; only casts read them (arithmetic refuses the storage dtypes).
//! - Integers compute exactly in `i64` and wrap to `i32`; integer division truncates toward
//!   zero, and division by zero is an error naming the op and its source line.
//! - Random ops draw element `i` of stream `run_index` from `src/rng.rs`, so results do not
//!   depend on evaluation order.
//!
//! Fused kernels (made by the optimizer) are evaluated expression by expression with the same
//! per-op rounding, so a graph evaluates to bitwise the same values before and after fusion.
//! Movement ops take their meaning from `src/view.rs`, the same index maps that fusion
//! folds into kernel loads, so the two cannot disagree on what a pad or a concat is.
//!
//! The code is split by concern: this file holds the entry points (graph order, feed checks,
//! the [`Interpreter`]); `eval.rs` the per-op arithmetic, which the JIT's `f64` helpers and
//! constant folding also use; `kernel.rs` the evaluation of fused kernels.

use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::feeds::check_feeds;
use crate::graph::op::Op;
use crate::graph::{Graph, GraphData, NodeId, Tensor};
use crate::kernel::Kernels;
use crate::vars::VarStore;
use std::collections::HashMap;

mod conv;
mod eval;
mod kernel;
mod pool;

use eval::eval_node;

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
/// `run_index` selects the random stream. A fused node is an error here: its kernel is in its
/// program's table, see [`evaluate_lowered`].
pub fn evaluate(
    d: &GraphData,
    fetches: &[NodeId],
    feeds: &[(NodeId, Array)],
    vars: &HashMap<NodeId, Array>,
    precision: Precision,
    run_index: u64,
) -> Result<Vec<Array>> {
    let none = Kernels::new();
    evaluate_lowered(d, &none, fetches, feeds, vars, precision, run_index)
}

/// [`evaluate`] of a lowered program: `kernels` is its kernel table (`Program::kernels`),
/// which its fused nodes name.
pub fn evaluate_lowered(
    d: &GraphData,
    kernels: &Kernels,
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
    // Fed nodes are listed but not looked through (a fed value need not be computable).
    let order = d.topo_order_until(fetches, |id| fed.contains_key(&id));
    let batch = check_feeds(d, &order, &fed, precision)?;
    // `size` reads only its operand's shape, which the batch size fixes: its operand is not
    // evaluated (as on the JIT), so a division by zero inside `size(a / b)` is no error.
    let order = d.topo_order_until(fetches, |id| {
        fed.contains_key(&id) || matches!(d.node(id).op, Op::Size { .. })
    });
    let mut vals: HashMap<NodeId, Value> = HashMap::with_capacity(order.len());
    for &id in &order {
        let n = d.node(id);
        let shape: Vec<usize> = match batch {
            Some(b) => n.ty.shape.resolve(b),
            None => match n.ty.shape.to_fixed() {
                Some(s) => s,
                None => return Err(crate::feeds::no_batch_size(d, n, &fed)),
            },
        };
        // Every value is held as f64 elements: refuse one past the allocation limit, naming
        // the op, before allocating it (a too-large batch is an error, not an abort).
        crate::shape::check_value(
            n.op.name(),
            &n.label(),
            n.loc.as_ref(),
            n.ty.dtype,
            &shape,
            std::mem::size_of::<f64>(),
            batch,
            " as the interpreter's f64 values",
        )?;
        let v = if let Some(a) = fed.get(&id) {
            Value {
                dtype: n.ty.dtype,
                shape,
                data: a.to_slots(),
            }
        } else if let Op::Size { axes } = &n.op {
            let operand = &d.node(n.inputs[0]).ty.shape;
            let dims = match batch {
                Some(b) => operand.resolve(b),
                None => operand.to_fixed().unwrap_or_default(),
            };
            let count = axes.iter().map(|&a| dims[a]).product::<usize>() as f64;
            Value {
                dtype: n.ty.dtype,
                shape,
                data: vec![eval::round(n.ty.dtype, precision, count)],
            }
        } else {
            let ins: Vec<&Value> = n.inputs.iter().map(|i| &vals[i]).collect();
            eval_node(n, id, &ins, shape, vars, kernels, precision, run_index)?
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
            Array::from_slots(dt, v.shape.clone(), v.data.clone())
        })
        .collect())
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
    vars: VarStore,
    precision: Precision,
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
        Ok(Interpreter {
            graph: g.clone(),
            // `evaluate` returns new arrays: a spare buffer would only be kept, never used.
            vars: VarStore::new(g, false)?,
            precision,
        })
    }

    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Evaluates `fetches` with `feeds`; each call draws fresh random numbers.
    pub fn run(
        &mut self,
        fetches: &[Tensor<'_>],
        feeds: &[(Tensor<'_>, Array)],
    ) -> Result<Vec<Array>> {
        crate::feeds::same_graph(&self.graph, fetches, feeds)?;
        let f: Vec<NodeId> = fetches.iter().map(|t| t.id()).collect();
        let fd: Vec<(NodeId, Array)> = feeds.iter().map(|(t, a)| (t.id(), a.clone())).collect();
        self.run_ids(&f, &fd)
    }

    /// [`Interpreter::run`] by node ids.
    pub fn run_ids(&mut self, fetches: &[NodeId], feeds: &[(NodeId, Array)]) -> Result<Vec<Array>> {
        self.graph.check()?;
        self.vars.init_missing()?;
        // Run `i` (from 0) draws random stream `i`; a failed run draws none.
        let run_index = self.vars.runs();
        let (updates, mut out) = {
            let d = self.graph.data();
            let updates = crate::graph::effects::collect(&d, fetches)?;
            let all = crate::graph::effects::with_updates(fetches, &updates);
            let out = evaluate(
                &d,
                &all,
                feeds,
                self.vars.values(),
                self.precision,
                run_index,
            )?;
            (updates, out)
        };
        self.vars.count_run();
        // F64 precision hands out f64 arrays; `apply` casts them to the variables' dtypes.
        self.vars.apply(&updates, out.drain(fetches.len()..));
        Ok(out)
    }

    /// The current value of a variable.
    pub fn variable(&self, id: NodeId) -> Option<&Array> {
        self.vars.get(id)
    }

    /// Sets a variable, checking its dtype and shape (in [`Precision::F64`], an `f64` value
    /// may set an `f32` variable).
    pub fn set_variable(&mut self, id: NodeId, value: Array) -> Result<()> {
        self.vars.set(id, value, self.precision == Precision::F64)
    }
}
