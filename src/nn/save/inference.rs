//! [`Model::save_inference`]: the model as a plain saved graph for serving.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::nn::model::Model;
use crate::session::Session;
use std::path::Path;

/// The name of output `i` of `n` in an inference model.
fn output_name(i: usize, n: usize) -> String {
    if n == 1 {
        "output".to_string()
    } else {
        format!("output_{i}")
    }
}

impl Model {
    /// Saves the model for inference only, as a [`crate::saved`] directory that
    /// [`kiln::saved::load`](crate::saved::load) and `kiln-run` read: the ops the outputs
    /// need with `training` fixed to `false` (dropout is the identity, batch normalization
    /// uses its moving statistics), and nothing else: no loss, metrics, optimizer, gradients,
    /// slots or target placeholder. The inputs keep their names (`input`, `input_1`, ...),
    /// the outputs are named `output` (`output_0`, `output_1`, ... for several), and
    /// `graph.kiln`'s `return` line lists them. The computation is the one `predict` runs,
    /// bit for bit.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::nn::*;
    /// let dir = std::env::temp_dir().join(format!("kiln-infer-doc-{}", std::process::id()));
    /// let mut model = Sequential::new([
    ///     Input::new([3]).into(),
    ///     Dense::new(4).relu().into(),
    ///     Dropout::new(0.5).into(),
    ///     Dense::new(2).into(),
    /// ]);
    /// model.compile(Adam::new(1e-3), Loss::MeanSquaredError, &[])?;
    /// model.save_inference(&dir)?;
    ///
    /// let (g, mut sess) = kiln::saved::load(&dir)?;
    /// let (x, out) = (g.by_name("input").unwrap(), g.by_name("output").unwrap());
    /// assert!(g.by_name("training").is_none()); // fixed, then pruned
    /// let xv = Array::new([1, 3], vec![1.0f32, 2.0, 3.0])?;
    /// let y = sess.run(&[out], &[(x, xv.clone())])?;
    /// assert_eq!(y[0], model.predict(&xv, 32)?);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn save_inference(&self, dir: impl AsRef<Path>) -> Result<()> {
        let (text, names) = self.inference_graph()?;
        let parsed = crate::text::parse(&text)?;
        let g = parsed.graph;
        let mut sess = Session::new(&g)?;
        let values = match &self.session {
            Some(s) => s
                .named_variables()
                .into_iter()
                .map(|(n, v)| (n, v.clone()))
                .collect(),
            None => Session::new(self.graph())?
                .named_variables()
                .into_iter()
                .map(|(n, v)| (n, v.clone()))
                .collect::<Vec<_>>(),
        };
        for (name, value) in values {
            if let Some(t) = g.by_name(&name) {
                if matches!(g.data().node(t.id()).op, Op::Variable { .. }) {
                    sess.set_variable(t, value)?;
                }
            }
        }
        debug_assert_eq!(names.len(), parsed.outputs.len());
        super::dir::replace(dir.as_ref(), |tmp| {
            crate::atomic::write(&tmp.join(crate::saved::GRAPH_FILE), text.as_bytes())?;
            sess.save(tmp.join(crate::saved::VARIABLES_FILE))
        })
    }

    /// The pruned graph's dump (with a `return` line) and its outputs' names.
    fn inference_graph(&self) -> Result<(String, Vec<String>)> {
        let built = self.built().map_err(|_| {
            Error::invalid("save_inference: the model is not built yet (call build or compile)")
        })?;
        let n = built.outputs.len();
        let names: Vec<String> = (0..n).map(|i| output_name(i, n)).collect();
        let fixed = vec![(built.training, Array::scalar(false))];
        let text = crate::saved::pruned_dump(&self.graph().data(), &built.outputs, &names, fixed)?;
        Ok((text, names))
    }
}
