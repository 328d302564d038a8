//! ONNX import: a `.onnx` model turned into a kiln graph that can run, be differentiated and
//! be fine-tuned like any other.
//!
//! [`import`] reads the model (protobuf, decoded with limits; `proto.rs`), then walks its nodes
//! in order (`import.rs`), building each with kiln's builder through the op table (`ops.rs`:
//! one row per ONNX op, with the op versions it covers beside it). Named graph inputs become
//! placeholders (a `dim_param` batch dimension becomes `?`); float initializers become
//! trainable variables under their ONNX names (BatchNormalization's running statistics
//! become non-trainable ones), so [`crate::train`]'s optimizers fine-tune an imported model;
//! integer initializers and `Constant`s that ops need as numbers (shapes, axes, indices,
//! pads) are read at import and become attributes. ONNX is NCHW with OIHW filters: the
//! convolution and pooling builders take that format and put the permutes to kiln's NHWC
//! around their ops, which the passes fold.
//!
//! Values keep their ONNX types where kiln has them (`float`, `double`, `float16`,
//! `bfloat16`, `int64`, `int32`, `int8`, `uint8`, `bool`); an op on a half or 8-bit operand
//! computes in `f32`/`i32` and is cast back after the op, which is what ONNX's reference
//! computes (see `ops::widen`).
//!
//! What kiln does not import is an error naming the node, the op and the model's opset, never
//! a wrong result: an op missing from the table, an attribute value the table does not handle
//! (BatchNormalization's `spatial = 0`), or a value of a dtype kiln has no values of.
//! The refusals that remain in the ONNX backend node tests, and why:
//! - dtypes kiln does not have: float8, float4, int4, int2, strings, `int16`, `uint16`,
//!   `uint32`, `uint64` (most of them Cast/CastLike cases); adding a dtype is kiln-wide work.
//!
//! 3-D Conv, ConvTranspose and pooling are lowered exactly onto the 2-D ops (`ops/nn3d.rs`).
//!
//! Training mode is imported: BatchNormalization with batch statistics (and its running
//! outputs), Dropout with kiln's own random stream (so its masks differ from numpy's draws;
//! the conformance runner checks them by their rule and count).
//!
//! ```no_run
//! let model = kiln::onnx::import("model.onnx")?;
//! let mut sess = model.session()?;
//! let x = model.input(0).unwrap();
//! let y = model.output(0).unwrap();
//! let xs = kiln::Array::new([1, 3, 224, 224], vec![0.0f32; 3 * 224 * 224])?;
//! let out = sess.run(&[y], &[(x, xs)])?;
//! # Ok::<(), kiln::Error>(())
//! ```

mod conformance;
pub mod export;
mod import;
mod ops;
mod proto;
mod tensor;

pub use conformance::{run_case, run_suite, CaseOutcome, CaseReport, SuiteReport};
pub use export::{export, export_with, ExportOptions, Weights, EXPORT_OPSET};
pub use import::{MAX_OPSET, MIN_OPSET};
pub use proto::MAX_MODEL_BYTES;

use crate::array::Array;
use crate::error::Result;
use crate::graph::{Graph, NodeId, Tensor};
use crate::session::{Backend, Session};
use std::collections::HashMap;
use std::path::Path;

/// An imported model: its graph, the placeholders its inputs became, its outputs, and the
/// variables its initializers became with their values.
pub struct Imported {
    /// The kiln graph.
    pub graph: Graph,
    /// Each graph input's ONNX name and placeholder, in the model's order (initializers
    /// listed as inputs are variables, not placeholders).
    pub inputs: Vec<(String, NodeId)>,
    /// Each graph output's ONNX name and node, in the model's order.
    pub outputs: Vec<(String, NodeId)>,
    /// The variables made from initializers, with their values.
    pub variables: Vec<ImportedVariable>,
    /// The model's default-domain opset.
    pub opset: i64,
}

/// A variable made from an ONNX initializer.
pub struct ImportedVariable {
    /// The initializer's ONNX name (also the variable's kiln name).
    pub name: String,
    /// The variable's node.
    pub id: NodeId,
    /// Its value in the model.
    pub value: Array,
    /// False for state that is not trained (BatchNormalization's running mean and variance).
    pub trainable: bool,
}

impl Imported {
    /// A JIT session on the graph, its variables set to the model's values.
    pub fn session(&self) -> Result<Session> {
        self.session_with_backend(Backend::Jit)
    }

    /// A session with the chosen backend, its variables set to the model's values.
    pub fn session_with_backend(&self, backend: Backend) -> Result<Session> {
        let mut s = Session::with_backend(&self.graph, backend)?;
        for v in &self.variables {
            s.set_variable(self.graph.tensor(v.id), v.value.clone())?;
        }
        Ok(s)
    }

    /// Input `i`'s placeholder.
    pub fn input(&self, i: usize) -> Option<Tensor<'_>> {
        self.inputs.get(i).map(|(_, id)| self.graph.tensor(*id))
    }

    /// Output `i`'s tensor.
    pub fn output(&self, i: usize) -> Option<Tensor<'_>> {
        self.outputs.get(i).map(|(_, id)| self.graph.tensor(*id))
    }

    /// The trainable variables (what an optimizer's `minimize` takes).
    pub fn trainable_variables(&self) -> Vec<Tensor<'_>> {
        self.variables
            .iter()
            .filter(|v| v.trainable)
            .map(|v| self.graph.tensor(v.id))
            .collect()
    }
}

/// Imports the ONNX model at `path`.
///
/// # Errors
/// The file cannot be read, is not an ONNX model (truncated, garbage), uses an opset outside
/// [`MIN_OPSET`]`..=`[`MAX_OPSET`], or holds a node kiln cannot import; each names the file,
/// and a node error names the node, its op and the opset.
pub fn import(path: impl AsRef<Path>) -> Result<Imported> {
    let path = path.as_ref();
    let m = proto::read_model(path)?;
    import::import_model(&m, path, &HashMap::new())
}

/// Imports an ONNX model from its serialized bytes (`name` stands for the file in errors).
pub fn import_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<Imported> {
    let path = name.as_ref();
    let m = proto::decode_model(bytes, path)?;
    import::import_model(&m, path, &HashMap::new())
}
