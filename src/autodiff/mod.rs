//! Symbolic reverse-mode differentiation: a graph-to-graph transformation, as TF1's
//! `tf.gradients`.
//!
//! [`gradients`] adds the gradient subgraph to the *same* graph and returns one tensor per
//! `x`. Gradient nodes are ordinary nodes: the optimizer simplifies and fuses them with the
//! forward pass, the interpreter and the JIT run them, and they can be differentiated again
//! (second derivatives, [`hessian_vector_product`]).
//!
//! # How it works
//! 1. Keep the nodes that lie on a path from some `x` to some `y` and have a float dtype:
//!    only they carry gradient. Integer and boolean values (labels, masks, comparisons) stop
//!    it, as do `stop_gradient` and `size`.
//! 2. Visit those nodes from the `ys` back to the `xs` (reverse topological order). A node's
//!    gradient is the sum of the contributions of its users (fan-out adds up); its rule in
//!    `rules.rs` turns it into contributions to its operands.
//! 3. An `x` that no `y` depends on gets zeros of its shape.
//!
//! Broadcasting needs no special case: the builder made every broadcast an explicit
//! `broadcast_to` node, whose rule sums the gradient back to the operand's shape.
//!
//! Gradient nodes are named `gradients/<forward name>_grad/<op>` (TF1's convention) and carry
//! the source location of the forward op they come from, so a dump of a training graph reads
//! as the model does and a shape error in a gradient names the user's line.

mod rules;

use crate::error::{Error, Result, SrcLoc};
use crate::graph::op::Op;
use crate::graph::{Graph, NodeId, Tensor};
use std::collections::{HashMap, HashSet};

/// The gradients of `sum(ys[i] * grad_ys[i])` with respect to each of `xs`.
///
/// With `grad_ys` of `None` every `y` is seeded with ones (for a scalar loss, plain `dL/dx`).
/// The result has one tensor per `x`, of the `x`'s shape; an `x` that does not reach any `y`
/// gets zeros.
///
/// # Errors
/// Tensors from another graph, an integer or boolean `x` or `y`, a seed whose type differs
/// from its `y`'s, or a graph that already holds an error.
///
/// # Example
/// ```
/// use kiln::prelude::*;
/// use kiln::autodiff::gradients;
///
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [3]);
/// let w = g.variable("w", [3], init::constant(2.0));
/// let loss = (x * w).square().sum_all(); // sum((x w)^2)
/// let dw = gradients(&[loss], &[w], None)?; // 2 (x w) x
///
/// let mut interp = Interpreter::new(&g)?;
/// let xv = Array::new([3], vec![1.0f32, 2.0, 3.0])?;
/// let out = interp.run(&[dw[0]], &[(x, xv)])?;
/// assert_eq!(out[0].to_vec::<f32>()?, vec![4.0, 16.0, 36.0]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[track_caller]
pub fn gradients<'g>(
    ys: &[Tensor<'g>],
    xs: &[Tensor<'g>],
    grad_ys: Option<&[Tensor<'g>]>,
) -> Result<Vec<Tensor<'g>>> {
    let loc = SrcLoc::caller();
    let err = |msg: String| Error::Graph {
        op: "gradients".into(),
        loc: Some(loc.clone()),
        msg,
        more: vec![],
    };
    let Some(first) = ys.first().or(xs.first()) else {
        return Ok(vec![]);
    };
    let graph: &'g Graph = first.graph();
    for t in ys.iter().chain(xs).chain(grad_ys.unwrap_or(&[])) {
        if !t.graph().same_as(graph) {
            return Err(err(
                "tensors from different graphs (tensors cannot cross graphs)".into(),
            ));
        }
    }
    graph.check()?;
    for &x in xs {
        if !x.dtype().is_float() {
            return Err(err(format!(
                "cannot differentiate with respect to {}: only f32 and f64 tensors have gradients",
                x.desc()
            )));
        }
    }
    for &y in ys {
        if !y.dtype().is_float() {
            return Err(err(format!(
                "cannot differentiate {}: only f32 and f64 tensors have gradients",
                y.desc()
            )));
        }
    }
    if let Some(seeds) = grad_ys {
        if seeds.len() != ys.len() {
            return Err(err(format!(
                "{} seeds (grad_ys) for {} ys",
                seeds.len(),
                ys.len()
            )));
        }
        for (&s, &y) in seeds.iter().zip(ys) {
            if s.ty() != y.ty() {
                return Err(err(format!(
                    "the seed {} does not match its y {}",
                    s.desc(),
                    y.desc()
                )));
            }
        }
    }

    let y_ids: Vec<NodeId> = ys.iter().map(|t| t.id()).collect();
    let (order, on_path) = {
        let d = graph.data();
        let order = d.topo_order_from(&y_ids);
        // Nodes that depend on some x, through float values only.
        let mut from_x: HashSet<NodeId> = xs.iter().map(|t| t.id()).collect();
        for &id in &order {
            let n = d.node(id);
            if n.ty.dtype.is_float()
                && !matches!(n.op, Op::StopGradient | Op::Size { .. })
                && n.inputs.iter().any(|i| from_x.contains(i))
            {
                from_x.insert(id);
            }
        }
        (order, from_x)
    };

    let _scope = graph.name_scope("gradients");
    // Contributions to each node's gradient, summed when the node is visited.
    let mut pending: HashMap<NodeId, Vec<Tensor<'g>>> = HashMap::new();
    for (i, &y) in ys.iter().enumerate() {
        let seed = match grad_ys {
            Some(s) => s[i],
            None => {
                let _l = LocGuard::set(graph, y.id());
                graph.scalar_of(y.dtype(), 1.0).broadcast_to(y.shape())
            }
        };
        pending.entry(y.id()).or_default().push(seed);
    }
    let mut grads: HashMap<NodeId, Tensor<'g>> = HashMap::new();
    for &id in order.iter().rev() {
        if !on_path.contains(&id) {
            continue;
        }
        let Some(parts) = pending.remove(&id) else {
            continue;
        };
        let (op, inputs, fwd_name) = {
            let d = graph.data();
            let n = d.node(id);
            let name = n.name.as_deref().map(str::to_string);
            (
                n.op.clone(),
                n.inputs.clone(),
                name.unwrap_or(n.op.name().into()),
            )
        };
        let _l = LocGuard::set(graph, id);
        let _s = graph.name_scope(&format!("{fwd_name}_grad"));
        let g = add_all(&parts);
        grads.insert(id, g);
        if inputs.iter().all(|i| !on_path.contains(i)) {
            continue;
        }
        let x: Vec<Tensor<'g>> = inputs.iter().map(|&i| graph.tensor(i)).collect();
        let contributions = rules::vjp(&op, &x, graph.tensor(id), g).map_err(&err)?;
        for (&input, c) in inputs.iter().zip(contributions) {
            if let Some(c) = c {
                if on_path.contains(&input) {
                    pending.entry(input).or_default().push(c());
                }
            }
        }
    }
    let out = xs
        .iter()
        .map(|&x| match grads.get(&x.id()) {
            Some(&g) => g,
            None => {
                let _l = LocGuard::set(graph, x.id());
                graph.scalar_of(x.dtype(), 0.0).broadcast_to(x.shape())
            }
        })
        .collect();
    graph.check()?;
    Ok(out)
}

/// Sums the contributions in order (a left fold, so the result is deterministic).
fn add_all<'g>(parts: &[Tensor<'g>]) -> Tensor<'g> {
    let mut acc = parts[0];
    for &p in &parts[1..] {
        acc = acc + p;
    }
    acc
}

/// Makes builder calls record the location of node `id` until dropped.
struct LocGuard<'a> {
    graph: &'a Graph,
    prev: Option<SrcLoc>,
}

impl<'a> LocGuard<'a> {
    fn set(graph: &'a Graph, id: NodeId) -> LocGuard<'a> {
        let mut d = graph.data_mut();
        let loc = d.node(id).loc.clone();
        let prev = std::mem::replace(&mut d.loc_override, loc);
        LocGuard { graph, prev }
    }
}

impl Drop for LocGuard<'_> {
    fn drop(&mut self) {
        self.graph.data_mut().loc_override = self.prev.take();
    }
}

/// The gradient of a scalar `loss` with respect to each of `xs` (TF's `tf.gradients(loss,
/// xs)`, JAX's `grad`).
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F64, Shape::scalar());
/// let y = x * x * x;
/// let dy = kiln::autodiff::grad(y, &[x])?[0]; // 3x^2
/// let d2y = kiln::autodiff::grad(dy, &[x])?[0]; // 6x
/// let mut interp = Interpreter::new(&g)?;
/// let out = interp.run(&[dy, d2y], &[(x, Array::scalar(2.0f64))])?;
/// assert_eq!(out[0].scalar_value::<f64>()?, 12.0);
/// assert_eq!(out[1].scalar_value::<f64>()?, 12.0);
/// # Ok::<(), kiln::Error>(())
/// ```
#[track_caller]
pub fn grad<'g>(loss: Tensor<'g>, xs: &[Tensor<'g>]) -> Result<Vec<Tensor<'g>>> {
    if loss.rank() != 0 {
        return Err(Error::Graph {
            op: "grad".into(),
            loc: Some(SrcLoc::caller()),
            msg: format!(
                "the loss must be a scalar, got {}; reduce it (sum_all, mean_all) or use vjp",
                loss.desc()
            ),
            more: vec![],
        });
    }
    gradients(&[loss], xs, None)
}

/// The vector–Jacobian product `vᵀ ∂y/∂x` for each `x`: the gradients of a non-scalar `y`
/// seeded with `v` (of `y`'s shape).
#[track_caller]
pub fn vjp<'g>(y: Tensor<'g>, xs: &[Tensor<'g>], v: Tensor<'g>) -> Result<Vec<Tensor<'g>>> {
    gradients(&[y], xs, Some(&[v]))
}

/// The Hessian–vector products `H v` of a scalar `loss`: for each `x`,
/// `Σ_j ∂²loss/∂x∂x_j · v_j`, computed as the gradient of `⟨∇loss, v⟩` (reverse over
/// reverse), without ever forming the Hessian.
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F64, [2]);
/// let v = g.placeholder("v", DType::F64, [2]);
/// let loss = (x * x * x).sum_all(); // H = diag(6x)
/// let hv = kiln::autodiff::hessian_vector_product(loss, &[x], &[v])?[0];
/// let mut interp = Interpreter::new(&g)?;
/// let out = interp.run(&[hv], &[
///     (x, Array::new([2], vec![1.0f64, 2.0])?),
///     (v, Array::new([2], vec![1.0f64, -1.0])?),
/// ])?;
/// assert_eq!(out[0].to_vec::<f64>()?, vec![6.0, -12.0]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[track_caller]
pub fn hessian_vector_product<'g>(
    loss: Tensor<'g>,
    xs: &[Tensor<'g>],
    vs: &[Tensor<'g>],
) -> Result<Vec<Tensor<'g>>> {
    let g = grad(loss, xs)?;
    gradients(&g, xs, Some(vs))
}

impl Graph {
    /// [`gradients`] as a method: `g.gradients(&[loss], &[w, b], None)`.
    #[track_caller]
    pub fn gradients<'g>(
        &'g self,
        ys: &[Tensor<'g>],
        xs: &[Tensor<'g>],
        grad_ys: Option<&[Tensor<'g>]>,
    ) -> Result<Vec<Tensor<'g>>> {
        gradients(ys, xs, grad_ys)
    }
}
