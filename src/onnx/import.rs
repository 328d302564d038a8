//! The import driver: an ONNX `ModelProto` walked node by node into a kiln [`Graph`].
//!
//! Values are kept by their ONNX names, each as a [`Val`]: a graph tensor, or a [`Static`]
//! known at import (an initializer, a `Constant`, a shape). Ops that need a static operand
//! (Reshape's shape, Squeeze's axes, Gather's indices) read it as numbers; ops that need data
//! ask for a tensor, and a static becomes one then: a float initializer as a trainable
//! variable (created once, on first use as data, under its ONNX name), anything else as a
//! constant. So shape subgraphs (`Shape → Gather → Concat → Reshape`, as PyTorch exports
//! `flatten`) fold away at import and never reach the graph.
//!
//! Before building anything, every node is checked against the op table (`ops.rs`): the
//! unsupported ones are reported together, each with its name, op and the model's opset, as
//! burn-onnx does. A node that fails while building (an attribute value kiln does not handle,
//! a shape kiln refuses) stops the import with an error naming it.

use super::ops::{self, OpDef};
use super::proto::{
    tensor_shape_proto::dimension::Value as DimValue, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use super::tensor::{dtype_name, kiln_dtype, SData, Static, BATCH};
use super::{Imported, ImportedVariable};
use crate::dtype::DType;
use crate::graph::{Graph, Tensor};
use crate::shape::{Dim, Shape};
use std::collections::HashMap;
use std::path::Path;

/// The oldest default-domain opset kiln imports (the range starts here).
pub const MIN_OPSET: i64 = 7;
/// The newest opset kiln's op table knows the version history of (onnx 1.23.2's); a model
/// past it may use op versions kiln has never seen, so it is refused.
pub const MAX_OPSET: i64 = 28;

/// The words of the error for a run-time value where kiln needs a constant, after the
/// value's quoted name (the conformance runner finds the name by them, see
/// [`needed_constant`]).
const NEEDS_CONSTANT: &str = "must be a constant (an initializer or a Constant's output)";

/// The name of the value an import error says must be a constant, if it says so.
pub(crate) fn needed_constant(err: &str) -> Option<String> {
    let end = err.find(&format!(") {NEEDS_CONSTANT}"))?;
    let head = &err[..end];
    let start = head.rfind(", \"")? + 3;
    let name = head.get(start..head.len().checked_sub(1)?)?;
    Some(name.replace("\\\"", "\""))
}

/// A value during import.
#[derive(Clone)]
pub(crate) enum Val<'g> {
    /// A graph tensor.
    T(Tensor<'g>),
    /// A value known at import.
    S(Static),
}

enum Slot<'g> {
    Val(Val<'g>),
    /// A float initializer: static until used as data, then this variable.
    Init(Static, Option<Tensor<'g>>),
}

/// The import state shared by the nodes: values by name and the variables made so far.
pub(crate) struct State<'g> {
    g: &'g Graph,
    values: HashMap<String, Slot<'g>>,
    variables: Vec<ImportedVariable>,
    /// A graph input whose first axis is the open batch `?` (kiln has one batch size per
    /// graph): what a static holding the batch sentinel reads its value from at run time.
    batch: Option<Tensor<'g>>,
}

/// One node's view of the import, handed to its op's builder in `ops.rs`.
pub(crate) struct Ctx<'a, 'g> {
    /// The graph being built.
    pub(crate) g: &'g Graph,
    /// The node.
    pub(crate) node: &'a NodeProto,
    /// The op version in force (the op's newest `since_version` at or below the model's
    /// opset): what decides attribute-versus-input forms and defaults.
    pub(crate) version: u32,
    st: &'a mut State<'g>,
}

impl<'g> State<'g> {
    fn slot(&self, name: &str) -> Result<&Slot<'g>, String> {
        self.values.get(name).ok_or_else(|| {
            format!("its input {name:?} is not a graph input, an initializer or the output of an earlier node")
        })
    }

    /// A static as a graph tensor: a constant, except that the open batch size `?` in an
    /// integer static (the output of `Shape` on a batched input) is read at run time from a
    /// batched graph input (`size` of its first axis).
    fn static_tensor(&self, s: &Static) -> Result<Tensor<'g>, String> {
        let g = self.g;
        let SData::Int(v) = &s.data else {
            return Ok(g.constant(s.to_array()?));
        };
        if !v.contains(&BATCH) {
            return Ok(g.constant(s.to_array()?));
        }
        let r = self
            .batch
            .ok_or("it holds the open batch size `?`, and no graph input has it")?;
        let fixed = Static {
            data: SData::Int(v.iter().map(|&x| if x == BATCH { 0 } else { x }).collect()),
            ..s.clone()
        };
        let known = g.constant(fixed.to_array()?);
        let mask = g.constant(
            crate::Array::new(&s.dims, v.iter().map(|&x| x == BATCH).collect::<Vec<_>>())
                .map_err(|e| e.to_string())?,
        );
        // `size` is an f32 count: exact for any batch below 2^24.
        let n = r.size(&[0]).cast(known.dtype());
        Ok(g.where_(mask, n, known))
    }

    /// The tensor for `name`, making a variable or constant of a static.
    fn tensor(&mut self, name: &str, trainable: bool) -> Result<Tensor<'g>, String> {
        let g = self.g;
        match self.slot(name)? {
            Slot::Val(Val::T(t)) => Ok(*t),
            Slot::Val(Val::S(s)) => self
                .static_tensor(s)
                .map_err(|e| format!("input {name:?} cannot be used: {e}")),
            Slot::Init(_, Some(t)) => Ok(*t),
            Slot::Init(s, None) => {
                let s = s.clone();
                let a = s
                    .to_array()
                    .map_err(|e| format!("initializer {name:?} cannot be used: {e}"))?;
                let v = g.variable_of(name, a.dtype(), a.shape(), crate::init::zeros());
                // Half-precision weights are kept as they are, but kiln's optimizers compute
                // in f32/f64, so they are not trained.
                let trainable = trainable && a.dtype().is_float();
                self.variables.push(ImportedVariable {
                    name: name.to_string(),
                    id: v.id(),
                    value: a,
                    trainable,
                });
                self.values.insert(name.to_string(), Slot::Init(s, Some(v)));
                Ok(v)
            }
        }
    }
}

impl<'g> State<'g> {
    /// A 2-D convolution's filter: an `f32`/`f64` initializer not used yet becomes a variable
    /// in kiln's HWIO layout, seen by the model as OIHW through one permute, which the passes
    /// cancel against the NCHW convolution builder's own (`passes::layout`): otherwise every
    /// run would transpose every filter. Anything else is [`State::tensor`].
    fn filter(&mut self, name: &str) -> Result<Tensor<'g>, String> {
        let Ok(Slot::Init(s, None)) = self.slot(name) else {
            return self.tensor(name, true);
        };
        let a = s
            .to_array()
            .map_err(|e| format!("initializer {name:?} cannot be used: {e}"))?;
        if a.shape().len() != 4 || !matches!(a.dtype(), DType::F32 | DType::F64) {
            return self.tensor(name, true);
        }
        let hwio = a.permuted(&[2, 3, 1, 0]);
        let s = s.clone();
        let v = self
            .g
            .variable_of(name, hwio.dtype(), hwio.shape(), crate::init::zeros());
        self.variables.push(ImportedVariable {
            name: name.to_string(),
            id: v.id(),
            value: hwio,
            trainable: true,
        });
        let oihw = v.permute(&[3, 2, 0, 1]);
        self.values
            .insert(name.to_string(), Slot::Init(s, Some(oihw)));
        Ok(oihw)
    }
}

impl<'a, 'g> Ctx<'a, 'g> {
    /// Input `i` as a 2-D convolution's OIHW filter; an initializer becomes an HWIO variable
    /// (see [`State::filter`]).
    pub(crate) fn filter(&mut self, i: usize) -> Result<Tensor<'g>, String> {
        let n = self.input_name(i)?;
        self.st.filter(n)
    }

    /// The number of inputs (trailing empty names included).
    pub(crate) fn n_inputs(&self) -> usize {
        self.node.input.len()
    }

    /// True if input `i` is given (present and not the empty name).
    pub(crate) fn has(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|n| !n.is_empty())
    }

    fn input_name(&self, i: usize) -> Result<&'a str, String> {
        match self.node.input.get(i) {
            Some(n) if !n.is_empty() => Ok(n),
            _ => Err(format!("input {i} is required but not given")),
        }
    }

    /// Input `i` as a tensor (a float initializer becomes a trainable variable).
    pub(crate) fn t(&mut self, i: usize) -> Result<Tensor<'g>, String> {
        let n = self.input_name(i)?;
        self.st.tensor(n, true)
    }

    /// Input `i` as a tensor; an initializer becomes a non-trainable variable (state, such as
    /// BatchNormalization's running mean and variance).
    pub(crate) fn t_state(&mut self, i: usize) -> Result<Tensor<'g>, String> {
        let n = self.input_name(i)?;
        self.st.tensor(n, false)
    }

    /// Input `i` as a value, static or not.
    pub(crate) fn val(&self, i: usize) -> Result<Val<'g>, String> {
        let n = self.input_name(i)?;
        Ok(match self.st.slot(n)? {
            Slot::Val(v) => v.clone(),
            Slot::Init(s, _) => Val::S(s.clone()),
        })
    }

    /// Input `i`'s value at import time; an error if it is only known when the graph runs.
    pub(crate) fn s(&self, i: usize, what: &str) -> Result<Static, String> {
        match self.val(i)? {
            Val::S(s) => Ok(s),
            Val::T(_) => Err(format!(
                "input {i} ({what}, {:?}) {NEEDS_CONSTANT}: kiln needs it at import, and it is \
                 computed at run time",
                self.node.input[i]
            )),
        }
    }

    /// The number of outputs the node names (trailing empty names included).
    pub(crate) fn n_outputs(&self) -> usize {
        self.node.output.len()
    }

    /// True if output `i` is named (used).
    pub(crate) fn wants_output(&self, i: usize) -> bool {
        self.node.output.get(i).is_some_and(|n| !n.is_empty())
    }

    /// The attribute `name`, if given.
    pub(crate) fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    /// An integer attribute, or `default`.
    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }

    /// A float attribute, or `default`.
    pub(crate) fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).and_then(|a| a.f).unwrap_or(default)
    }

    /// An integer-list attribute, if given.
    pub(crate) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    /// A string attribute, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// A tensor attribute, decoded.
    pub(crate) fn tensor_attr(&self, name: &str) -> Result<Option<Static>, String> {
        match self.attr(name).and_then(|a| a.t.as_ref()) {
            Some(t) => Static::from_proto(t)
                .map(Some)
                .map_err(|e| format!("attribute {name}: {e}")),
            None => Ok(None),
        }
    }
}

/// The version of `op` in force at `opset`: its newest `since_version` not above it.
fn version_in_force(op: &OpDef, opset: i64) -> Option<u32> {
    op.history
        .iter()
        .rev()
        .copied()
        .find(|&v| i64::from(v) <= opset)
}

/// The model's default-domain opset.
fn default_opset(m: &ModelProto) -> Result<i64, String> {
    let v = m
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or("the model imports no default-domain (ai.onnx) opset")?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&v) {
        return Err(format!(
            "the model uses opset {v}; kiln imports opsets {MIN_OPSET} to {MAX_OPSET} (the \
             op versions of onnx 1.23.2)"
        ));
    }
    Ok(v)
}

fn describe(n: &NodeProto, opset: i64) -> String {
    let op = n.op_type.as_deref().unwrap_or("");
    let dom = match n.domain.as_deref() {
        None | Some("") | Some("ai.onnx") => String::new(),
        Some(d) => format!("{d}."),
    };
    format!(
        "node {:?} ({dom}{op}, opset {opset})",
        n.name.as_deref().unwrap_or("")
    )
}

/// Every node the op table cannot build, as one message (the first 10 listed).
fn check_supported(graph: &GraphProto, opset: i64) -> Result<(), String> {
    let mut bad = vec![];
    for n in &graph.node {
        let op = n.op_type.as_deref().unwrap_or("");
        let why = match (n.domain.as_deref(), ops::find(op)) {
            (Some(d), _) if !d.is_empty() && d != "ai.onnx" => {
                Some(format!("domain {d:?} is not ONNX's default domain"))
            }
            (_, None) => Some("kiln has no import for this op".to_string()),
            (_, Some(def)) => match version_in_force(def, opset) {
                Some(v) if v >= def.from => None,
                v => Some(format!(
                    "version {} of {op} is in force at this opset; kiln imports {op}-{} and later",
                    v.unwrap_or(0),
                    def.from
                )),
            },
        };
        if let Some(w) = why {
            bad.push(format!("{}: {w}", describe(n, opset)));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let total = bad.len();
    bad.truncate(10);
    let more = if total > 10 {
        format!("\n  ... and {} more", total - 10)
    } else {
        String::new()
    };
    Err(format!(
        "{total} node(s) cannot be imported:\n  {}{more}",
        bad.join("\n  ")
    ))
}

/// The kiln type of a graph input: a dtype kiln has and a shape whose only open dimension
/// (a `dim_param` or a missing size) is the first.
fn input_type(v: &ValueInfoProto) -> Result<(DType, Shape), String> {
    let name = v.name.as_deref().unwrap_or("");
    let Some(type_proto::Value::TensorType(tt)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("graph input {name:?} is not a tensor"));
    };
    let code = tt.elem_type.unwrap_or(0);
    let dtype = kiln_dtype(code).ok_or_else(|| {
        format!(
            "graph input {name:?} is {}, and kiln has no {} values",
            dtype_name(code),
            dtype_name(code)
        )
    })?;
    let Some(shape) = &tt.shape else {
        return Err(format!(
            "graph input {name:?} has no shape; kiln needs its rank and sizes"
        ));
    };
    let mut dims = vec![];
    for (i, d) in shape.dim.iter().enumerate() {
        let dim = match &d.value {
            Some(DimValue::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
            _ if i == 0 => Dim::Batch,
            _ => {
                return Err(format!(
                    "graph input {name:?} has an open size in axis {i}; kiln allows only the \
                     first axis (the batch) to be open"
                ))
            }
        };
        dims.push(dim);
    }
    Ok((dtype, Shape(dims.into())))
}

/// Imports `m` (read from `path`, which errors name), with the graph inputs in `frozen`
/// taken as constants of those values instead of placeholders.
pub(crate) fn import_model(
    m: &ModelProto,
    path: &Path,
    frozen: &HashMap<String, TensorProto>,
) -> crate::Result<Imported> {
    let fail = |msg: String| crate::Error::invalid_file(path, msg);
    let opset = default_opset(m).map_err(fail)?;
    let gp = m
        .graph
        .as_ref()
        .ok_or_else(|| fail("the model holds no graph".into()))?;
    check_supported(gp, opset).map_err(fail)?;
    let g = Graph::new();
    let mut st = State {
        g: &g,
        values: HashMap::new(),
        variables: vec![],
        batch: None,
    };
    let static_of = |t: &TensorProto, what: &str| {
        Static::from_proto(t)
            .map_err(|e| fail(format!("{what} {:?}: {e}", t.name.as_deref().unwrap_or(""))))
    };
    for t in &gp.initializer {
        let s = static_of(t, "initializer")?;
        let name = t.name.clone().unwrap_or_default();
        let slot = match s.to_array() {
            Ok(a) if a.dtype().is_float() || a.dtype().is_half() => Slot::Init(s, None),
            _ => Slot::Val(Val::S(s)),
        };
        st.values.insert(name, slot);
    }
    let mut inputs = vec![];
    for v in &gp.input {
        let name = v.name.clone().unwrap_or_default();
        if let Some(t) = frozen.get(&name) {
            let s = static_of(t, "frozen input")?;
            st.values.insert(name, Slot::Val(Val::S(s)));
            continue;
        }
        if st.values.contains_key(&name) {
            continue; // an initializer listed as an input: its default value is used
        }
        let (dtype, shape) = input_type(v).map_err(fail)?;
        let batched = shape.dims().first() == Some(&Dim::Batch);
        let p = g.placeholder(&name, dtype, shape);
        if batched && st.batch.is_none() {
            st.batch = Some(p);
        }
        inputs.push((name.clone(), p.id()));
        st.values.insert(name, Slot::Val(Val::T(p)));
    }
    for n in &gp.node {
        build_node(&mut st, n, opset).map_err(|e| fail(format!("{}: {e}", describe(n, opset))))?;
    }
    let mut outputs = vec![];
    for v in &gp.output {
        let name = v.name.clone().unwrap_or_default();
        let t = st
            .tensor(&name, true)
            .map_err(|e| fail(format!("graph output {name:?}: {e}")))?;
        let t = t.named(&name);
        outputs.push((name, t.id()));
    }
    g.check()
        .map_err(|e| fail(format!("the imported graph is invalid: {e}")))?;
    let variables = std::mem::take(&mut st.variables);
    drop(st);
    Ok(Imported {
        graph: g,
        inputs,
        outputs,
        variables,
        opset,
    })
}

fn build_node(st: &mut State<'_>, n: &NodeProto, opset: i64) -> Result<(), String> {
    let op = n.op_type.as_deref().unwrap_or("");
    let def = ops::find(op).ok_or("kiln has no import for this op")?;
    let version = version_in_force(def, opset).ok_or("no version of this op is in force")?;
    let g = st.g;
    let errors_before = g.data().errors().len();
    let outs = {
        let mut ctx = Ctx {
            g,
            node: n,
            version,
            st,
        };
        (def.build)(&mut ctx)?
    };
    if let Some(e) = g.data().errors().get(errors_before) {
        // The op and message without the source line, which is the importer's, not the user's.
        return Err(match e {
            crate::Error::Graph { op, msg, .. } => format!("kiln's {op}: {msg}"),
            e => e.to_string(),
        });
    }
    if let Some(i) = (outs.len()..n.output.len()).find(|&i| !n.output[i].is_empty()) {
        return Err(format!(
            "kiln builds {} output(s) of this op, and the node also asks for output {i} ({:?})",
            outs.len(),
            n.output[i]
        ));
    }
    for (name, v) in n.output.iter().zip(outs) {
        if !name.is_empty() {
            st.values.insert(name.clone(), Slot::Val(v));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_needing_a_constant_is_found_in_the_error() {
        let e = format!(
            "m.onnx: node \"r\" (Reshape, opset 21): input 1 (shape, \"a, \\\"b\\\"\") \
             {NEEDS_CONSTANT}: kiln needs it at import"
        );
        assert_eq!(needed_constant(&e).as_deref(), Some("a, \"b\""));
        assert_eq!(needed_constant("node \"r\": mode = \"reflect\""), None);
    }
}
