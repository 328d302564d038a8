//! The ONNX backend node tests as kiln's conformance suite.
//!
//! Each case is a directory with a one-node (or, for `_expanded` cases, a few-node)
//! `model.onnx` and `test_data_set_N/{input,output}_K.pb` tensors, as onnx's
//! `backend/test/case/node` generators write them (`tests/data/gen_onnx_node_tests.py` makes
//! the 1,858 cases of onnx 1.23.2 offline). [`run_case`] imports the model, runs every data set
//! on both backends (the JIT and the interpreter) and compares the outputs at onnx's own
//! backend-test tolerances (`rtol` 1e-3, 2^-6 for `bfloat16`, `atol` 1e-7; NaN matches NaN;
//! integers and booleans exactly). The node tests feed shape, axes and index tensors as graph
//! inputs; as tract's harness does with its `input:` tags, an input the import says must be a
//! constant (named in its error) is frozen into a constant of the case's value, one at a time,
//! when every data set feeds it the same value.
//!
//! A case is *skipped* when one of its ops is not in kiln's table, *refused* when the import
//! stops with an error (an attribute value or dtype kiln does not handle: the error names the
//! node, op and opset, as the contract asks), and *failed* only when kiln runs it and the
//! values, shapes or dtypes differ, or the run fails.

use super::import::{self, MAX_OPSET, MIN_OPSET};
use super::ops;
use super::proto::{self, type_proto, ModelProto, TensorProto};
use super::tensor::{kiln_dtype, Static};
use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::session::Backend;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// onnx's backend-test relative tolerance.
pub const RTOL: f64 = 1e-3;
/// The skip reason of a case whose inputs or outputs are not plain tensors (sequences,
/// optionals; the generator writes such a case's model, but not always its data).
const NO_DATA: &str = "sequence or optional values (not plain tensors)";

/// onnx's backend-test absolute tolerance.
pub const ATOL: f64 = 1e-7;

/// What happened to one case.
#[derive(Clone, Debug, PartialEq)]
pub enum CaseOutcome {
    /// Every data set matched on both backends.
    Passed,
    /// The import stopped with an error (the reason).
    Refused(String),
    /// A run failed or gave other values, shapes or dtypes (the reason).
    Failed(String),
    /// An op of the case is not in kiln's table (which).
    Skipped(String),
}

/// One case's result.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// The case's directory name (`test_conv_with_strides_padding`).
    pub name: String,
    /// Its op (the single node's op type, or the ops of a several-node model joined by `+`).
    pub op: String,
    /// What happened.
    pub outcome: CaseOutcome,
}

/// The results of a directory of cases.
#[derive(Clone, Debug, Default)]
pub struct SuiteReport {
    /// Every case, by name.
    pub cases: Vec<CaseReport>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    crate::saved::read_bounded(path, proto::MAX_MODEL_BYTES, "the test file")
}

fn read_tensor(path: &Path) -> Result<TensorProto> {
    proto::decode_tensor(&read(path)?, path)
}

/// The `(inputs, outputs)` of each `test_data_set_N`, in order.
type DataSets = Vec<(Vec<TensorProto>, Vec<TensorProto>)>;

fn data_sets(dir: &Path) -> Result<DataSets> {
    let mut sets = vec![];
    for n in 0.. {
        let d = dir.join(format!("test_data_set_{n}"));
        if !d.is_dir() {
            break;
        }
        let load = |kind: &str| -> Result<Vec<TensorProto>> {
            let mut v = vec![];
            for k in 0.. {
                let p = d.join(format!("{kind}_{k}.pb"));
                if !p.exists() {
                    break;
                }
                v.push(read_tensor(&p)?);
            }
            Ok(v)
        };
        sets.push((load("input")?, load("output")?));
    }
    Ok(sets)
}

fn op_label(m: &ModelProto) -> String {
    let nodes = m.graph.as_ref().map(|g| g.node.as_slice()).unwrap_or(&[]);
    let mut ops: Vec<&str> = vec![];
    for n in nodes {
        let o = n.op_type.as_deref().unwrap_or("?");
        if !ops.contains(&o) {
            ops.push(o);
        }
    }
    if ops.is_empty() {
        "(no node)".into()
    } else {
        ops.join("+")
    }
}

fn unsupported_op(m: &ModelProto) -> Option<String> {
    let opset = m
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .unwrap_or(0);
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Some(format!(
            "opset {opset} is outside {MIN_OPSET}..={MAX_OPSET}"
        ));
    }
    let g = m.graph.as_ref()?;
    for n in &g.node {
        let op = n.op_type.as_deref().unwrap_or("");
        if !matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            return Some(format!(
                "{op} is in domain {:?}",
                n.domain.as_deref().unwrap_or("")
            ));
        }
        match ops::find(op) {
            None => return Some(format!("{op} is not in kiln's op table")),
            Some(d) => {
                let v = d.history.iter().rev().find(|&&v| i64::from(v) <= opset);
                if v.is_none_or(|&v| v < d.from) {
                    return Some(format!(
                        "{op} at opset {opset} is older than {op}-{}",
                        d.from
                    ));
                }
            }
        }
    }
    None
}

fn close(a: f64, e: f64, rtol: f64) -> bool {
    (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= ATOL + rtol * e.abs()
}

/// Checks one output's dtype and shape against the expected one, which it returns.
fn same_type(got: &Array, want: &TensorProto) -> std::result::Result<Static, String> {
    let s = Static::from_proto(want).map_err(|e| format!("the expected output: {e}"))?;
    let code = want.data_type.unwrap_or(0);
    if kiln_dtype(code) != Some(got.dtype()) {
        return Err(format!(
            "dtype {} where {} was expected",
            got.dtype(),
            super::tensor::dtype_name(code)
        ));
    }
    if got.shape() != s.dims.as_slice() {
        return Err(format!(
            "shape {:?} where {:?} was expected",
            got.shape(),
            s.dims
        ));
    }
    Ok(s)
}

/// Compares one output; the reason if it differs.
fn compare(got: &Array, want: &TensorProto) -> std::result::Result<(), String> {
    let s = same_type(got, want)?;
    if !got.dtype().is_float() && !got.dtype().is_half() {
        // Integers and booleans exactly.
        let want = s.as_ints()?;
        let have = got
            .cast(DType::I64)
            .to_vec::<i64>()
            .map_err(|e| e.to_string())?;
        if let Some(i) = (0..want.len()).find(|&i| have[i] != want[i]) {
            return Err(format!("element {i} is {}, expected {}", have[i], want[i]));
        }
        return Ok(());
    }
    // onnx's runner allows two bfloat16 ulps.
    let rtol = if got.dtype() == DType::BF16 {
        RTOL.max(2f64.powi(-6))
    } else {
        RTOL
    };
    let want = s.as_f64()?;
    let have = got.to_f64_vec();
    for (i, (&a, &e)) in have.iter().zip(&want).enumerate() {
        if !close(a, e, rtol) {
            return Err(format!("element {i} is {a}, expected {e}"));
        }
    }
    Ok(())
}

fn run_sets(
    m: &ModelProto,
    path: &Path,
    sets: &DataSets,
    frozen: &HashMap<String, TensorProto>,
) -> std::result::Result<(), CaseOutcome> {
    let imp =
        import::import_model(m, path, frozen).map_err(|e| CaseOutcome::Refused(e.to_string()))?;
    let names: Vec<String> = m
        .graph
        .as_ref()
        .map(|g| {
            g.input
                .iter()
                .map(|v| v.name.clone().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    for backend in [Backend::Jit, Backend::Interpreter] {
        let fail = |e: String| CaseOutcome::Failed(format!("{backend:?}: {e}"));
        let mut sess = imp
            .session_with_backend(backend)
            .map_err(|e| fail(e.to_string()))?;
        for (k, (ins, outs)) in sets.iter().enumerate() {
            let mut feeds = vec![];
            for (name, t) in names.iter().zip(ins) {
                if let Some((_, id)) = imp.inputs.iter().find(|(n, _)| n == name) {
                    let a = Static::from_proto(t)
                        .and_then(|s| s.to_array())
                        .map_err(&fail)?;
                    feeds.push((imp.graph.tensor(*id), a));
                }
            }
            let fetches: Vec<_> = imp
                .outputs
                .iter()
                .map(|(_, id)| imp.graph.tensor(*id))
                .collect();
            let got = sess
                .run(&fetches, &feeds)
                .map_err(|e| fail(e.to_string()))?;
            if let Some((x, ratio)) = dropping(m, &names, ins) {
                compare_dropout(&got, outs, &x, ratio)
                    .map_err(|e| fail(format!("data set {k}: {e}")))?;
                continue;
            }
            for (j, (g, w)) in got.iter().zip(outs).enumerate() {
                compare(g, w).map_err(|e| fail(format!("data set {k}, output {j}: {e}")))?;
            }
        }
    }
    Ok(())
}

/// For a one-node Dropout case fed `training_mode = true` and a ratio above 0: its input
/// and ratio. Its mask is random (numpy's generator in the reference, kiln's Philox stream
/// here), so [`compare_dropout`] checks what the suite allows: the rule, not the draw.
fn dropping(m: &ModelProto, names: &[String], ins: &[TensorProto]) -> Option<(Vec<f64>, f64)> {
    let [n] = m.graph.as_ref()?.node.as_slice() else {
        return None;
    };
    if n.op_type.as_deref() != Some("Dropout") {
        return None;
    }
    let input = |k: usize| {
        let name = n.input.get(k).filter(|s| !s.is_empty())?;
        let i = names.iter().position(|v| v == name)?;
        Static::from_proto(ins.get(i)?).ok()
    };
    if input(2)?.as_ints().ok()? != [1] {
        return None;
    }
    let ratio = match input(1) {
        Some(r) => r.scalar_f64().ok()?,
        None if n.input.get(1).is_none_or(|s| s.is_empty()) => 0.5,
        None => return None,
    };
    if ratio <= 0.0 {
        return None; // nothing dropped: the exact comparison applies
    }
    Some((input(0)?.as_f64().ok()?, ratio))
}

/// A training-mode Dropout's outputs against the rule: each element is 0 (mask false) or
/// `x / (1 − ratio)` (mask true, at the suite's tolerance), and the number dropped is
/// within 5 standard deviations of the binomial's mean (a false alarm about once in 3.5
/// million runs); dtypes and shapes as the reference's.
fn compare_dropout(
    got: &[Array],
    want: &[TensorProto],
    x: &[f64],
    ratio: f64,
) -> std::result::Result<(), String> {
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        same_type(g, w).map_err(|e| format!("output {j}: {e}"))?;
    }
    let y = got.first().ok_or("no output")?.to_f64_vec();
    let mask: Option<Vec<i64>> = match got.get(1) {
        Some(m) => Some(
            m.cast(DType::I64)
                .to_vec::<i64>()
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let scale = 1.0 / (1.0 - ratio);
    let mut dropped = 0usize;
    for (i, (&yi, &xi)) in y.iter().zip(x).enumerate() {
        let kept_value = close(yi, xi * scale, RTOL);
        let kept = match &mask {
            Some(mk) => mk[i] != 0,
            None => !(yi == 0.0 && xi != 0.0),
        };
        let ok = if kept { kept_value } else { yi == 0.0 };
        if !ok {
            return Err(format!(
                "element {i} is {yi} with mask {kept}: expected {} or 0",
                xi * scale
            ));
        }
        dropped += usize::from(!kept);
    }
    let n = x.len() as f64;
    let sd = (n * ratio * (1.0 - ratio)).sqrt();
    if (dropped as f64 - n * ratio).abs() > 5.0 * sd + 1.0 {
        return Err(format!(
            "{dropped} of {n} elements dropped at ratio {ratio}: expected about {}",
            n * ratio
        ));
    }
    Ok(())
}

fn case(dir: &Path) -> std::result::Result<String, (String, CaseOutcome)> {
    let path = dir.join("model.onnx");
    let m = read(&path)
        .and_then(|b| proto::decode_model(&b, &path))
        .map_err(|e| ("?".to_string(), CaseOutcome::Failed(e.to_string())))?;
    let op = op_label(&m);
    let sets = data_sets(dir).map_err(|e| (op.clone(), CaseOutcome::Failed(e.to_string())))?;
    let n_out = m.graph.as_ref().map_or(0, |g| g.output.len());
    let non_tensor = m.graph.as_ref().is_some_and(|g| {
        g.input.iter().chain(&g.output).any(|v| {
            !matches!(
                v.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(type_proto::Value::TensorType(_))
            )
        })
    });
    if non_tensor || sets.is_empty() || sets.iter().any(|(_, o)| o.len() < n_out) {
        return Err((op, CaseOutcome::Skipped(NO_DATA.into())));
    }
    if let Some(why) = unsupported_op(&m) {
        return Err((op, CaseOutcome::Skipped(why)));
    }
    // Freeze, one at a time, each input the import says must be a constant (a Reshape's
    // shape, Gather's indices), as tract's harness does with its `input:` tags; only an input
    // that holds the same value in every data set can be frozen.
    let mut frozen = HashMap::new();
    let r = loop {
        match run_sets(&m, &path, &sets, &frozen) {
            Err(CaseOutcome::Refused(e)) => {
                let Some(name) = import::needed_constant(&e).filter(|n| !frozen.contains_key(n))
                else {
                    break Err(CaseOutcome::Refused(e));
                };
                if let Some(t) = constant_input(&m, &sets, &name) {
                    frozen.insert(name, t);
                    continue;
                }
                // The value is computed from inputs (a function body's shape arithmetic):
                // freeze every integer input that is the same in every data set.
                let before = frozen.len();
                for v in m.graph.iter().flat_map(|g| &g.input) {
                    let n = v.name.clone().unwrap_or_default();
                    if frozen.contains_key(&n) || !is_integer_input(v) {
                        continue;
                    }
                    if let Some(t) = constant_input(&m, &sets, &n) {
                        frozen.insert(n, t);
                    }
                }
                if frozen.len() == before {
                    break Err(CaseOutcome::Refused(e));
                }
            }
            r => break r,
        }
    };
    r.map(|()| op.clone()).map_err(|o| (op, o))
}

/// True for a graph input of an integer element type (shapes, axes, indices).
fn is_integer_input(v: &proto::ValueInfoProto) -> bool {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => kiln_dtype(t.elem_type.unwrap_or(0))
            .is_some_and(|d| matches!(d, DType::I32 | DType::I64 | DType::I8 | DType::U8)),
        _ => false,
    }
}

/// Graph input `name`'s value if every data set feeds it the same one.
fn constant_input(m: &ModelProto, sets: &DataSets, name: &str) -> Option<TensorProto> {
    let k = m
        .graph
        .as_ref()?
        .input
        .iter()
        .position(|v| v.name.as_deref() == Some(name))?;
    let first = sets.first()?.0.get(k)?;
    sets.iter()
        .all(|(ins, _)| ins.get(k) == Some(first))
        .then(|| first.clone())
}

/// Runs the case in `dir` (see the module docs). A panic inside kiln is caught and reported as
/// a failure, so one bad case does not hide the others.
pub fn run_case(dir: &Path) -> CaseReport {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(dir)));
    let (op, outcome) = match r {
        Ok(Ok(op)) => (op, CaseOutcome::Passed),
        Ok(Err((op, o))) => (op, o),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (
                "?".into(),
                CaseOutcome::Failed(format!("kiln panicked: {msg}")),
            )
        }
    };
    CaseReport { name, op, outcome }
}

/// Runs every case directory under `root` (those holding a `model.onnx`), in name order.
pub fn run_suite(root: impl AsRef<Path>) -> Result<SuiteReport> {
    let root = root.as_ref();
    let rd = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, "cannot list the conformance directory", e))?;
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    Ok(SuiteReport {
        cases: dirs.iter().map(|d| run_case(d)).collect(),
    })
}

impl SuiteReport {
    /// How many cases have outcome `f`.
    pub fn count(&self, f: fn(&CaseOutcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }

    /// The per-op table (cases, passed, refused, failed, skipped), the totals, and then each
    /// case that did not pass with its reason.
    pub fn table(&self) -> String {
        let mut per: BTreeMap<&str, [usize; 5]> = BTreeMap::new();
        for c in &self.cases {
            let row = per.entry(&c.op).or_default();
            row[0] += 1;
            row[match c.outcome {
                CaseOutcome::Passed => 1,
                CaseOutcome::Refused(_) => 2,
                CaseOutcome::Failed(_) => 3,
                CaseOutcome::Skipped(_) => 4,
            }] += 1;
        }
        let mut s = String::new();
        let _ = writeln!(s, "| op | cases | passed | refused | failed | skipped |");
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let mut tot = [0usize; 5];
        for (op, r) in &per {
            if r[4] == r[0] {
                continue; // not supported at all: in the totals only
            }
            let _ = writeln!(
                s,
                "| {op} | {} | {} | {} | {} | {} |",
                r[0], r[1], r[2], r[3], r[4]
            );
        }
        for r in per.values() {
            for i in 0..5 {
                tot[i] += r[i];
            }
        }
        let _ = writeln!(
            s,
            "| **total** | {} | {} | {} | {} | {} |",
            tot[0], tot[1], tot[2], tot[3], tot[4]
        );
        let no_data = self.count(|o| matches!(o, CaseOutcome::Skipped(r) if r == NO_DATA));
        let _ = writeln!(
            s,
            "\n{} cases of plain tensors ({no_data} more with sequence or optional values, \
             skipped); {} of them use only ops kiln imports: {} pass on both backends, {} are \
             refused with an error, {} fail.",
            tot[0] - no_data,
            tot[0] - tot[4],
            tot[1],
            tot[2],
            tot[3]
        );
        for c in &self.cases {
            match &c.outcome {
                CaseOutcome::Refused(r) => {
                    let _ = writeln!(s, "refused {} ({}): {}", c.name, c.op, first_line(r));
                }
                CaseOutcome::Failed(r) => {
                    let _ = writeln!(s, "FAILED {} ({}): {}", c.name, c.op, first_line(r));
                }
                _ => {}
            }
        }
        s
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
