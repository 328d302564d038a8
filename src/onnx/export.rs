//! ONNX export: a kiln inference graph written as an ONNX model file.
//!
//! [`export`] walks the nodes the chosen outputs need (`export/plan.rs` resolves the `where`s
//! that fixed placeholders decide, such as a model's `training` switch), and turns each kiln
//! primitive into ONNX nodes (`export/ops.rs`, one exhaustive `match` over the op enum). The
//! model is ONNX opset [`EXPORT_OPSET`] (IR version [`EXPORT_IR_VERSION`]): the conservative
//! pair that onnx's checker and onnxruntime accept everywhere.
//!
//! The rules, and why:
//! - **Inputs** are the placeholders given, under their kiln names; the open batch dimension
//!   `?` becomes the `dim_param` `"batch"`. **Outputs** are named by
//!   [`ExportOptions::output_names`], else by their kiln names, else `output_{i}`.
//! - **Variables** become initializers holding their current values (a [`Session`]'s, or
//!   their initial ones for a bare [`Graph`]), under their kiln names; **constants** become
//!   `Constant` nodes (so an importer keeps them constant, and only the weights trainable).
//! - **Layout.** kiln computes images in NHWC with HWIO filters; ONNX's `Conv`, `MaxPool`
//!   and `AveragePool` are NCHW with OIHW filters. Each such op is written between two
//!   `Transpose` nodes (NHWC→NCHW before, NCHW→NHWC after; onnxruntime's layout optimizer
//!   removes the pairs), and a filter variable read only by convolutions is written in OIHW
//!   (its data transposed), as PyTorch stores it; any other filter gets a `Transpose` node.
//!   The exported model's inputs and outputs keep kiln's layout (a Keras model's NHWC).
//! - **Broadcasts** are left to ONNX's numpy broadcasting where the consuming op broadcasts
//!   to the same shape, and are `Expand` nodes otherwise.
//! - **Refused**, with the op, its operand types and the user's source line: random numbers
//!   (fix the switch that selects them away), gradient ops (a convolution's filter gradient,
//!   pooling gradients), variable updates and train ops, fused kernels, an average pool with
//!   dilations (ONNX's `AveragePool` has them from opset 19), a placeholder that is neither
//!   an input nor fixed. Never a silently wrong file.
//! - **Written atomically** (temporary file, fsync, rename: `src/atomic.rs`), so a failed
//!   export leaves no file and never a truncated one.
//!
//! Semantics kiln pins down and ONNX leaves to the runtime (a float→integer cast out of
//! range, NaN among maxima) are exported as the plain ONNX op.

mod attr;
mod ops;
mod plan;
pub(crate) mod tensor;

pub use tensor::BATCH_PARAM;

use crate::array::Array;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{Graph, GraphData, NodeId, Tensor};
use crate::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use crate::session::Session;
use crate::shape::Dim;
use prost::Message;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The ONNX opset exported models declare (the default domain).
pub const EXPORT_OPSET: i64 = 17;
/// The ONNX IR version exported models declare.
pub const EXPORT_IR_VERSION: i64 = 8;

/// Where an export takes its graph and the values of its variables from: a [`Session`]
/// (the values it holds now: trained weights) or a bare [`Graph`] (each variable's initial
/// value, from its initializer).
pub trait Weights {
    /// The graph.
    fn graph(&self) -> &Graph;
    /// The current value of variable `v`, if this source holds one (else its initializer's
    /// value is exported).
    fn variable_value(&self, v: NodeId) -> Option<&Array>;
}

impl Weights for Session {
    fn graph(&self) -> &Graph {
        Session::graph(self)
    }
    fn variable_value(&self, v: NodeId) -> Option<&Array> {
        self.variable(Session::graph(self).tensor(v))
    }
}

impl Weights for Graph {
    fn graph(&self) -> &Graph {
        self
    }
    fn variable_value(&self, _: NodeId) -> Option<&Array> {
        None
    }
}

/// Options of [`export_with`]: placeholders fixed to values, output names, the graph's
/// name.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    fixed: Vec<(u64, NodeId, Array)>,
    output_names: Option<Vec<String>>,
    graph_name: Option<String>,
}

impl ExportOptions {
    /// The defaults: nothing fixed, outputs named by their kiln names.
    pub fn new() -> ExportOptions {
        ExportOptions::default()
    }

    /// Fixes `placeholder` to `value` in the exported graph (a `training` switch to
    /// `false`): it becomes a constant, and a `where` it decides keeps only its branch.
    pub fn fix(mut self, placeholder: Tensor<'_>, value: Array) -> ExportOptions {
        let gid = placeholder.graph().data().graph_id();
        self.fixed.push((gid, placeholder.id(), value));
        self
    }

    /// The ONNX names of the outputs, in order (one per output).
    pub fn output_names<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.output_names = Some(names.into_iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// The ONNX graph's name (default `"kiln"`).
    pub fn graph_name(mut self, name: &str) -> ExportOptions {
        self.graph_name = Some(name.to_string());
        self
    }
}

/// Writes the graph computing `outputs` from the placeholders `inputs` as an ONNX model at
/// `path`, with the variables' values from `from` (a [`Session`] or a [`Graph`]).
///
/// The file is ONNX opset [`EXPORT_OPSET`]; see the [module docs](self) for the rules
/// (layout transposes, names, what is refused). A failed export leaves no file.
///
/// ```no_run
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(4)]);
/// let w = g.variable("w", [4, 3], kiln::init::glorot_uniform(1));
/// let logits = x.matmul(w).named("logits");
/// let probs = logits.softmax(-1).named("probs");
/// let sess = Session::new(&g)?; // trained weights live in the session
/// kiln::onnx::export(&sess, &[x], &[probs], "mlp.onnx")?;
/// // Read back: the same graph, weights as variables.
/// let m = kiln::onnx::import("mlp.onnx")?;
/// assert_eq!(m.outputs[0].0, "probs");
/// # Ok::<(), kiln::Error>(())
/// ```
///
/// # Errors
/// A tensor of another graph, an input that is not a placeholder, a node kiln does not
/// export (named with its op, operand types and source line), or the file cannot be written.
pub fn export<W: Weights + ?Sized>(
    from: &W,
    inputs: &[Tensor<'_>],
    outputs: &[Tensor<'_>],
    path: impl AsRef<Path>,
) -> Result<()> {
    export_with(from, inputs, outputs, path, &ExportOptions::new())
}

/// [`export`] with options: fixed placeholders, output names.
///
/// ```no_run
/// use kiln::prelude::*;
/// use kiln::onnx::ExportOptions;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(4)]);
/// let training = g.placeholder("training", DType::Bool, Shape::scalar());
/// let y = x.dropout(0.5, training, 7);
/// let opts = ExportOptions::new()
///     .fix(training, Array::scalar(false)) // dropout is gone from the file
///     .output_names(["y"]);
/// kiln::onnx::export_with(&g, &[x], &[y], "model.onnx", &opts)?;
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn export_with<W: Weights + ?Sized>(
    from: &W,
    inputs: &[Tensor<'_>],
    outputs: &[Tensor<'_>],
    path: impl AsRef<Path>,
    opts: &ExportOptions,
) -> Result<()> {
    let bytes = to_bytes(from, inputs, outputs, opts)?;
    crate::atomic::write(path.as_ref(), &bytes)
}

/// The serialized ONNX model [`export_with`] would write.
pub fn to_bytes<W: Weights + ?Sized>(
    from: &W,
    inputs: &[Tensor<'_>],
    outputs: &[Tensor<'_>],
    opts: &ExportOptions,
) -> Result<Vec<u8>> {
    Ok(model(from, inputs, outputs, opts)?.encode_to_vec())
}

fn fail(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("ONNX export: {msg}"))
}

/// The ids of `ts`, checked to belong to `g`.
fn ids_in(g: &Graph, ts: &[Tensor<'_>], what: &str) -> Result<Vec<NodeId>> {
    ts.iter()
        .enumerate()
        .map(|(i, t)| {
            if t.graph().same_as(g) {
                Ok(t.id())
            } else {
                Err(fail(format!(
                    "{what} {i} belongs to another graph than the one exported"
                )))
            }
        })
        .collect()
}

fn model<W: Weights + ?Sized>(
    from: &W,
    inputs: &[Tensor<'_>],
    outputs: &[Tensor<'_>],
    opts: &ExportOptions,
) -> Result<ModelProto> {
    let g = from.graph();
    g.check()?;
    let ins = ids_in(g, inputs, "input")?;
    let outs = ids_in(g, outputs, "output")?;
    if outs.is_empty() {
        return Err(fail("there are no outputs to export"));
    }
    let d = g.data();
    let fixed = fixed_values(&d, opts)?;
    let mut e = Emitter::new(&d, fixed);
    for &id in &ins {
        e.add_input(id)?;
    }
    let out_names = output_names(&d, &outs, opts)?;
    for (k, name) in out_names.iter().enumerate() {
        if !e.used.insert(name.clone()) {
            return Err(fail(format!(
                "output name {name:?} is also the name of an input or another output"
            )));
        }
        e.preferred.entry(outs[k]).or_insert_with(|| name.clone());
    }
    let p = plan::plan(&d, &outs, &e.fixed);
    e.weights = weights(&d, from, &p.order)?;
    e.alias = p.alias;
    e.oihw = p.oihw;
    for &id in &p.order {
        if e.alias.contains_key(&id) || matches!(d.node(id).op, Op::BroadcastTo) {
            continue; // an alias has no node; a broadcast is made where it is needed
        }
        ops::emit(&mut e, id).map_err(|why| refusal(&d, id, &why))?;
    }
    let mut output = vec![];
    for (k, name) in out_names.iter().enumerate() {
        let v = e.value(outs[k]).map_err(|why| refusal(&d, outs[k], &why))?;
        if &v != name {
            e.add("Identity", vec![v], vec![name.clone()], vec![]);
        }
        let n = d.node(outs[k]);
        output.push(tensor::value_info(name, n.ty.dtype, &n.ty.shape));
    }
    let graph = GraphProto {
        node: e.nodes,
        name: Some(opts.graph_name.clone().unwrap_or_else(|| "kiln".into())),
        initializer: e.inits,
        input: e.graph_inputs,
        output,
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(EXPORT_IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(EXPORT_OPSET),
        }],
        producer_name: Some("kiln".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    })
}

/// The value of every variable in `order`: the source's, or its initializer's.
fn weights<'d, W: Weights + ?Sized>(
    d: &GraphData,
    from: &'d W,
    order: &[NodeId],
) -> Result<HashMap<NodeId, Cow<'d, Array>>> {
    let mut out = HashMap::new();
    for &id in order {
        let n = d.node(id);
        let Op::Variable { init } = &n.op else {
            continue;
        };
        let v = match from.variable_value(id) {
            Some(a) => Cow::Borrowed(a),
            None => {
                let shape =
                    n.ty.shape.to_fixed().ok_or_else(|| {
                        fail(format!("variable {} has no known shape", n.label()))
                    })?;
                Cow::Owned(init.try_fill(n.ty.dtype, &shape)?)
            }
        };
        out.insert(id, v);
    }
    Ok(out)
}

/// The fixed placeholders' values, checked against their placeholders.
fn fixed_values(d: &GraphData, opts: &ExportOptions) -> Result<HashMap<NodeId, Array>> {
    let mut out = HashMap::new();
    for (gid, id, v) in &opts.fixed {
        if *gid != d.graph_id() {
            return Err(fail("a fixed placeholder belongs to another graph"));
        }
        let n = d.node(*id);
        if !matches!(n.op, Op::Placeholder) {
            return Err(fail(format!(
                "fix: {} is a {}, not a placeholder",
                n.label(),
                n.op.name()
            )));
        }
        let want = n.ty.shape.to_fixed();
        if v.dtype() != n.ty.dtype || want.as_deref() != Some(v.shape()) {
            return Err(fail(format!(
                "fix: placeholder {} is {}, the value is {}{:?} (a fixed placeholder needs a \
                 known shape)",
                n.label(),
                n.ty,
                v.dtype(),
                v.shape()
            )));
        }
        out.insert(*id, v.clone());
    }
    Ok(out)
}

/// Each output's ONNX name: given, else the node's kiln name, else `output_{k}`.
fn output_names(d: &GraphData, outs: &[NodeId], opts: &ExportOptions) -> Result<Vec<String>> {
    if let Some(names) = &opts.output_names {
        if names.len() != outs.len() {
            return Err(fail(format!(
                "{} output names for {} outputs",
                names.len(),
                outs.len()
            )));
        }
        if let Some(n) = names.iter().find(|n| n.is_empty()) {
            return Err(fail(format!("output name {n:?} is empty")));
        }
        return Ok(names.clone());
    }
    let mut seen = HashSet::new();
    Ok(outs
        .iter()
        .enumerate()
        .map(|(k, &id)| match d.node(id).name.as_deref() {
            Some(n) if !matches!(d.node(id).op, Op::Placeholder) && seen.insert(n.to_string()) => {
                n.to_string()
            }
            _ => format!("output_{k}"),
        })
        .collect())
}

/// The error for a node that cannot be exported: its op, name, operand types and line.
fn refusal(d: &GraphData, id: NodeId, why: &str) -> Error {
    let n = d.node(id);
    let operands: Vec<String> = n
        .inputs
        .iter()
        .map(|&i| format!("{} {}", d.node(i).ty, d.node(i).label()))
        .collect();
    let name = n
        .name
        .as_deref()
        .map(|s| format!(" {s:?}"))
        .unwrap_or_default();
    let at = n
        .loc
        .as_ref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    fail(format!(
        "{}{name}({}) -> {}{at} cannot be exported: {why}",
        n.op.name(),
        operands.join(", "),
        n.ty
    ))
}

/// The ONNX graph being written.
pub(crate) struct Emitter<'d> {
    pub(crate) d: &'d GraphData,
    /// The variables' values (the source's, or their initial values).
    pub(crate) weights: HashMap<NodeId, Cow<'d, Array>>,
    pub(crate) fixed: HashMap<NodeId, Array>,
    pub(crate) alias: HashMap<NodeId, NodeId>,
    pub(crate) oihw: HashSet<NodeId>,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    graph_inputs: Vec<ValueInfoProto>,
    /// Each exported node's ONNX value.
    values: HashMap<NodeId, String>,
    /// Every ONNX name in use.
    used: HashSet<String>,
    /// Names the outputs' values take.
    preferred: HashMap<NodeId, String>,
    /// A graph input whose first dimension is the batch (for `Shape` when one is needed).
    batch_input: Option<String>,
}

impl<'d> Emitter<'d> {
    fn new(d: &'d GraphData, fixed: HashMap<NodeId, Array>) -> Emitter<'d> {
        Emitter {
            d,
            weights: HashMap::new(),
            fixed,
            alias: HashMap::new(),
            oihw: HashSet::new(),
            nodes: vec![],
            inits: vec![],
            graph_inputs: vec![],
            values: HashMap::new(),
            used: HashSet::new(),
            preferred: HashMap::new(),
            batch_input: None,
        }
    }

    /// Registers placeholder `id` as a graph input under its kiln name.
    fn add_input(&mut self, id: NodeId) -> Result<()> {
        let n = self.d.node(id);
        if !matches!(n.op, Op::Placeholder) {
            return Err(fail(format!(
                "input {} is a {}, not a placeholder",
                n.label(),
                n.op.name()
            )));
        }
        if self.fixed.contains_key(&id) {
            return Err(fail(format!(
                "placeholder {} is both an input and fixed",
                n.label()
            )));
        }
        let name = n.name.as_deref().unwrap_or("input").to_string();
        if !self.used.insert(name.clone()) {
            return Err(fail(format!(
                "placeholder {name:?} is given twice as an input"
            )));
        }
        if self.batch_input.is_none() && n.ty.shape.dims().first() == Some(&Dim::Batch) {
            self.batch_input = Some(name.clone());
        }
        self.graph_inputs
            .push(tensor::value_info(&name, n.ty.dtype, &n.ty.shape));
        self.values.insert(id, name);
        Ok(())
    }

    /// The node `id` resolves to (through decided `where`s and `stop_gradient`s).
    pub(crate) fn resolve(&self, mut id: NodeId) -> NodeId {
        while let Some(&a) = self.alias.get(&id) {
            id = a;
        }
        id
    }

    /// The ONNX value of node `id`; a broadcast becomes an `Expand` the first time it is
    /// asked for.
    pub(crate) fn value(&mut self, id: NodeId) -> std::result::Result<String, String> {
        let id = self.resolve(id);
        if let Some(v) = self.values.get(&id) {
            return Ok(v.clone());
        }
        if matches!(self.d.node(id).op, Op::BroadcastTo) {
            return ops::expand(self, id);
        }
        Err(format!(
            "internal: the value of {} was not written before its use",
            self.d.node(id).label()
        ))
    }

    /// The value of operand `i` of node `id`.
    pub(crate) fn input(&mut self, id: NodeId, i: usize) -> std::result::Result<String, String> {
        self.value(self.d.node(id).inputs[i])
    }

    /// A name not used yet, from `base`.
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while !self.used.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    /// The name node `id`'s value takes (an output's name, else its kiln name, else the op
    /// and its index), bound to it.
    pub(crate) fn out(&mut self, id: NodeId) -> String {
        let name = match self.preferred.get(&id) {
            Some(p) => p.clone(),
            None => {
                let n = self.d.node(id);
                let base = match &n.name {
                    Some(s) => s.to_string(),
                    None => format!("{}_{}", n.op.name(), id.index()),
                };
                self.fresh(&base)
            }
        };
        self.values.insert(id, name.clone());
        name
    }

    /// Appends an ONNX node.
    pub(crate) fn add(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            name: outputs.first().cloned(),
            op_type: Some(op.to_string()),
            input: inputs,
            output: outputs,
            attribute,
            ..Default::default()
        });
    }

    /// A 1-D `int64` initializer (a shape, axes, pads) named from `base`.
    pub(crate) fn int64s(&mut self, base: &str, v: &[i64]) -> String {
        let name = self.fresh(base);
        self.inits.push(tensor::int64s(&name, v));
        name
    }

    /// The name of a graph input whose first dimension is the batch.
    pub(crate) fn batch_input(&self) -> Option<String> {
        self.batch_input.clone()
    }
}
