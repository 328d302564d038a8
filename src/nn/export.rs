//! `Model::export_onnx`: a Keras-style model written as an ONNX model file, ready for
//! onnxruntime or any other ONNX runtime (Keras' `tf2onnx` route, in one call).
//!
//! What is written is the model's inference graph: the `training` switch is fixed to
//! `false`, so dropout is gone and batch normalization uses its moving statistics, exactly
//! what `predict` computes. The inputs keep their names (`input`, `input_1`, ...) and their
//! Keras layout (NHWC images, the batch as the `dim_param` `"batch"`); each output is named
//! after the layer that produced it (`dense_1`). The weights are the session's current
//! values (after `fit`), or the initial values of a model that was built but not compiled.
//! See [the export module](mod@crate::onnx::export) for the rules and what is refused.

use super::model::Model;
use crate::array::Array;
use crate::error::Result;
use crate::onnx::{export_with, ExportOptions};
use std::collections::HashSet;
use std::path::Path;

impl Model {
    /// Writes the model's inference graph (dropout off, batch normalization in inference
    /// mode) as an ONNX model at `path` (opset [`crate::onnx::EXPORT_OPSET`]), atomically.
    ///
    /// ```no_run
    /// use kiln::prelude::*;
    /// use kiln::nn::*;
    /// let mut model = Sequential::new([
    ///     Input::new([28, 28, 1]).into(),
    ///     Conv2D::new(8, [3, 3]).relu().into(),
    ///     MaxPooling2D::new([2, 2]).into(),
    ///     Flatten.into(),
    ///     Dropout::new(0.5).into(),
    ///     Dense::new(10).into(),
    /// ]);
    /// model.compile(Adam::new(1e-3),
    ///     Loss::SparseCategoricalCrossentropy { from_logits: true }, &[])?;
    /// // ... model.fit(...) ...
    /// model.export_onnx("mnist_cnn.onnx")?; // input "input" [batch, 28, 28, 1], output "dense"
    /// # Ok::<(), kiln::Error>(())
    /// ```
    ///
    /// # Errors
    /// The model is not built yet, a layer computes something kiln does not export (see
    /// [the export module](mod@crate::onnx::export)), or the file cannot be written (then
    /// no file is left).
    pub fn export_onnx(&self, path: impl AsRef<Path>) -> Result<()> {
        let built = self.built()?;
        let g = self.graph();
        let inputs: Vec<_> = built.inputs.iter().map(|&i| g.tensor(i)).collect();
        let outputs: Vec<_> = built.outputs.iter().map(|&i| g.tensor(i)).collect();
        let opts = ExportOptions::new()
            .fix(g.tensor(built.training), Array::scalar(false))
            .output_names(self.output_layer_names()?);
        match &self.session {
            Some(s) => export_with(s, &inputs, &outputs, path, &opts),
            None => export_with(g, &inputs, &outputs, path, &opts),
        }
    }

    /// Each output's name: the layer that made it (`dense_1` of `dense_1/add`), made unique.
    fn output_layer_names(&self) -> Result<Vec<String>> {
        let built = self.built()?;
        let d = self.graph().data();
        let mut seen = HashSet::new();
        Ok(built
            .outputs
            .iter()
            .enumerate()
            .map(|(k, &id)| {
                let base = match d.node(id).name.as_deref() {
                    Some(n) => n.split('/').next().unwrap_or(n).to_string(),
                    None => format!("output_{k}"),
                };
                let mut name = base.clone();
                let mut i = 1;
                while !seen.insert(name.clone()) {
                    name = format!("{base}_{i}");
                    i += 1;
                }
                name
            })
            .collect())
    }
}
