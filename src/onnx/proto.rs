//! The ONNX protobuf messages and reading a model file with limits.
//!
//! The message types are prost's output for the `onnx.proto` of a pinned onnx release,
//! generated once and committed (`proto/onnx.rs`, whose header says how it was made), as
//! tract does: a build needs only the `prost` runtime, never `protoc` or a build script.
//! Maintained crates carrying the schema were stale (`onnx-protobuf`, `onnx-pb`), and
//! candle's build-time `protoc` would make every kiln build depend on a system tool.
//!
//! A model is untrusted input: the file is refused before reading if it is not a regular
//! file or is larger than [`MAX_MODEL_BYTES`], and a truncated or garbage file is a decode
//! error naming the file (prost never panics on bad input; its nesting limit bounds the
//! recursion).

#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    rustdoc::all,
    unreachable_pub,
    dead_code
)]
#[rustfmt::skip]
mod onnx;

pub(crate) use onnx::*;

use crate::error::{Error, Result};
use prost::Message;
use std::path::Path;

/// The largest model file [`import`](crate::onnx::import) reads: 2 GiB, protobuf's own limit for one message
/// (larger models keep their weights as external data, which kiln does not read yet).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Reads and decodes the model at `path`.
pub(crate) fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes = crate::saved::read_bounded(path, MAX_MODEL_BYTES, "the ONNX model")?;
    decode_model(&bytes, path)
}

/// Decodes a model from `bytes` (`path` names it in errors).
pub(crate) fn decode_model(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    let m = ModelProto::decode(bytes).map_err(|e| {
        Error::invalid_file(
            path,
            format!(
                "not an ONNX model (the protobuf does not decode: {e}); is the file truncated?"
            ),
        )
    })?;
    if m.graph.is_none() {
        return Err(Error::invalid_file(
            path,
            "not an ONNX model: it holds no graph (an empty or foreign protobuf)",
        ));
    }
    Ok(m)
}

/// Decodes one serialized `TensorProto` (the backend tests' `input_0.pb` files).
pub(crate) fn decode_tensor(bytes: &[u8], path: &Path) -> Result<TensorProto> {
    TensorProto::decode(bytes).map_err(|e| {
        Error::invalid_file(
            path,
            format!("not an ONNX tensor (the protobuf does not decode: {e})"),
        )
    })
}
