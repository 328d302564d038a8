//! The pooling builder methods: `max_pool2d`, `avg_pool2d` (one `Op::Pool` each, over NHWC)
//! and `global_avg_pool2d` (a composite: the mean over height and width). The user's padding
//! is resolved here against the input's spatial size (known at build time: only the batch may
//! be open), and an NCHW operand is permuted to NHWC around the op.

use super::Tensor;
use crate::graph::op::{DataFormat, Op, Pool2dOptions, PoolKind, Window2d};

/// NCHW → NHWC.
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];
/// NHWC → NCHW.
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];

impl<'g> Tensor<'g> {
    /// 2-D max pooling of a rank-4 image batch (NHWC unless `opts.format` says NCHW): each
    /// output is its window's maximum; taps in the padding never win, and a NaN in a window
    /// wins (as PyTorch). Keras' `MaxPooling2D`.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::Pool2dOptions;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [None, Some(4), Some(4), Some(1)]);
    /// let y = x.max_pool2d(&Pool2dOptions::new([2, 2]));
    /// assert_eq!(y.shape().to_string(), "[?,2,2,1]");
    /// let xs: Vec<f32> = (0..16).map(|i| i as f32).collect();
    /// let out = Interpreter::new(&g)?.run(&[y], &[(x, Array::new(&[1, 4, 4, 1], xs)?)])?;
    /// assert_eq!(out[0].to_vec::<f32>()?, [5.0, 7.0, 13.0, 15.0]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn max_pool2d(self, opts: &Pool2dOptions) -> Tensor<'g> {
        self.pool2d(PoolKind::Max, opts)
    }

    /// 2-D average pooling: each output is its window's mean, over the taps inside the input
    /// (Keras' `AveragePooling2D`), or over the whole window with
    /// [`Pool2dOptions::count_include_pad`] (PyTorch's default).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::{Padding, Pool2dOptions};
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [1, 3, 3, 1]);
    /// let same = Pool2dOptions::new([2, 2]).strides([1, 1]).padding(Padding::Same);
    /// let y = x.avg_pool2d(&same);
    /// let y_pad = x.avg_pool2d(&same.clone().count_include_pad(true));
    /// let xs = Array::new(&[1, 3, 3, 1], vec![4.0f32; 9])?;
    /// let out = Interpreter::new(&g)?.run(&[y, y_pad], &[(x, xs)])?;
    /// assert_eq!(out[0].to_vec::<f32>()?[8], 4.0); // the corner's one tap
    /// assert_eq!(out[1].to_vec::<f32>()?[8], 1.0); // 4 / the window's 4 taps
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn avg_pool2d(self, opts: &Pool2dOptions) -> Tensor<'g> {
        self.pool2d(
            PoolKind::Avg {
                count_include_pad: opts.count_include_pad,
            },
            opts,
        )
    }

    /// The mean over the spatial axes of a rank-4 image batch: `[N, H, W, C] → [N, C]` (NHWC)
    /// or `[N, C, H, W] → [N, C]` (NCHW). A composite (`mean` over two axes), so it needs no
    /// op of its own. Keras' `GlobalAveragePooling2D`.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::DataFormat;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [None, Some(7), Some(7), Some(64)]);
    /// assert_eq!(x.global_avg_pool2d(DataFormat::Nhwc).shape().to_string(), "[?,64]");
    /// ```
    #[track_caller]
    pub fn global_avg_pool2d(self, format: DataFormat) -> Tensor<'g> {
        if self.rank() != 4 && !self.graph.data().is_invalid(self.id) {
            return self.graph.fail(
                "global_avg_pool2d",
                format!("needs a rank-4 image batch, got {}", self.desc()),
            );
        }
        match format {
            DataFormat::Nhwc => self.mean(&[1, 2], false),
            // Through NHWC, so both layouts sum in the same order (the fused kernel reads
            // the permutation as strides).
            DataFormat::Nchw => self.permute(&TO_NHWC).mean(&[1, 2], false),
        }
    }

    #[track_caller]
    fn pool2d(self, kind: PoolKind, opts: &Pool2dOptions) -> Tensor<'g> {
        let name = kind.op_kind().name();
        let invalid = self.graph.data().is_invalid(self.id);
        let x = match opts.format {
            DataFormat::Nchw if self.rank() == 4 => self.permute(&TO_NHWC),
            _ => self,
        };
        let s = x.shape();
        let hw = match (s.rank(), s.dims().get(1), s.dims().get(2)) {
            (4, Some(h), Some(w)) => h.fixed().zip(w.fixed()),
            _ => None,
        };
        let window = match hw.map(|(h, w)| opts.resolve([h, w])) {
            _ if invalid => dummy_window(),
            Some(Ok(w)) => w,
            Some(Err(m)) => {
                return self
                    .graph
                    .fail(name, format!("{m} (operand {})", self.desc()));
            }
            None => {
                return self.graph.fail(
                    name,
                    format!(
                        "needs a rank-4 image batch ({:?}) with known height and width, got {}",
                        opts.format,
                        self.desc()
                    ),
                );
            }
        };
        let y = x.pool_op(kind, &window, None);
        match opts.format {
            DataFormat::Nchw if self.rank() == 4 => y.permute(&TO_NCHW),
            _ => y,
        }
    }

    /// The pooling op `kind` over NHWC `self` (and `other`, the second operand of
    /// `MaxGrad` and `MaxGather`), with a resolved window: what the gradient rules build.
    #[track_caller]
    pub(crate) fn pool_op(
        self,
        kind: PoolKind,
        window: &Window2d,
        other: Option<Tensor<'g>>,
    ) -> Tensor<'g> {
        let op = Op::Pool {
            kind,
            window: window.clone(),
        };
        match other {
            Some(o) => self.graph.push(op, &[self, o], None, None),
            None => self.graph.push(op, &[self], None, None),
        }
    }
}

/// A window for an op built on an invalid operand (which is invalid silently whatever it is).
fn dummy_window() -> Window2d {
    Window2d {
        kernel: [1, 1],
        strides: [1, 1],
        dilations: [1, 1],
        pad_lo: [0, 0],
        pad_hi: [0, 0],
    }
}
