//! The convolution builder: [`Tensor::conv2d`] and its [`Conv2dOptions`].
//!
//! The op itself is NHWC with an HWIO filter (ARCHITECTURE.md, "Images"). With
//! [`DataFormat::Nchw`] the input is NCHW and the filter OIHW, as PyTorch and ONNX have them:
//! the builder puts permutes around the NHWC op, which the passes fold into kernels (an
//! operand's permute becomes the kernel that writes the transposed buffer, a result's permute
//! joins its consumers' index maps).
//!
//! A filter variable created for an OIHW filter should say so to its initializer
//! (`glorot_uniform(seed).with_layout(KernelLayout::Oihw)`, both in [`crate::init`]): fans are
//! read from the kernel's layout, and the default is Keras' HWIO.

use super::Tensor;
use crate::graph::op::{ConvKind, DataFormat, Op, Padding, Window2d};

/// How [`Tensor::conv2d`] slides its filter: strides, padding, dilations, groups and the
/// layout of its operands. The default is Keras' `Conv2D` default: stride 1, `valid`
/// padding, no dilation, one group, NHWC.
///
/// ```
/// use kiln::{Conv2dOptions, Padding};
/// let o = Conv2dOptions::new().strides(2, 2).padding(Padding::Same).groups(2);
/// assert_eq!(o.strides, [2, 2]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// Step between windows, `[height, width]`.
    pub strides: [usize; 2],
    /// How the input is padded.
    pub padding: Padding,
    /// Step between filter taps, `[height, width]` (1 is a dense filter).
    pub dilations: [usize; 2],
    /// Channel groups: each output channel sees `Cin/groups` input channels. `groups == Cin`
    /// is a depthwise convolution (the output has `Cout/Cin` channels per input channel).
    pub groups: usize,
    /// The layout of the input, the filter and the output.
    pub format: DataFormat,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            strides: [1, 1],
            padding: Padding::Valid,
            dilations: [1, 1],
            groups: 1,
            format: DataFormat::Nhwc,
        }
    }
}

impl Conv2dOptions {
    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the strides.
    pub fn strides(mut self, h: usize, w: usize) -> Self {
        self.strides = [h, w];
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    /// Sets the dilations.
    pub fn dilations(mut self, h: usize, w: usize) -> Self {
        self.dilations = [h, w];
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Sets the data format.
    pub fn format(mut self, f: DataFormat) -> Self {
        self.format = f;
        self
    }
}

impl<'g> Tensor<'g> {
    /// 2-D convolution of this image batch with `filter` (cross-correlation, as every
    /// framework computes it). In the default NHWC format the input is `[N, H, W, Cin]`, the
    /// filter `[KH, KW, Cin/groups, Cout]` (Keras' layout) and the result
    /// `[N, OH, OW, Cout]`; in NCHW they are `[N, Cin, H, W]`, `[Cout, Cin/groups, KH, KW]`
    /// and `[N, Cout, OH, OW]` (PyTorch's). Only the batch may be `?`.
    ///
    /// Its gradients are convolutions too (`conv2d_input_grad`, `conv2d_filter_grad` in
    /// dumps), so gradients of any order exist. A mismatch (channels, groups that do not
    /// divide them, a window larger than the padded input) is recorded with the shapes and
    /// the calling line.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::{Conv2dOptions, Padding};
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [None, Some(28), Some(28), Some(1)]);
    /// let w = g.variable("w", [3, 3, 1, 8], init::glorot_uniform(1));
    /// let y = x.conv2d(w, &Conv2dOptions::new().padding(Padding::Same));
    /// assert_eq!(y.shape().to_string(), "[?,28,28,8]");
    /// ```
    #[track_caller]
    pub fn conv2d(self, filter: Tensor<'g>, opts: &Conv2dOptions) -> Tensor<'g> {
        let (x, f) = match opts.format {
            DataFormat::Nhwc => (self, filter),
            DataFormat::Nchw => (self.permute(&[0, 2, 3, 1]), filter.permute(&[2, 3, 1, 0])),
        };
        if x.rank() != 4 || f.rank() != 4 {
            return self.graph.fail(
                "conv2d",
                format!(
                    "needs a 4-D image and a 4-D filter, got {} and {}",
                    self.desc(),
                    filter.desc()
                ),
            );
        }
        let (xs, fs) = (x.shape(), f.shape());
        let hw = [xs.dims()[1].fixed(), xs.dims()[2].fixed()];
        let ks = [fs.dims()[0].fixed(), fs.dims()[1].fixed()];
        let (Some(h), Some(w), Some(kh), Some(kw)) = (hw[0], hw[1], ks[0], ks[1]) else {
            return self.graph.fail(
                "conv2d",
                format!(
                    "needs known spatial sizes, got {} and {}",
                    self.desc(),
                    filter.desc()
                ),
            );
        };
        let window =
            match Window2d::resolve([kh, kw], opts.strides, opts.dilations, opts.padding, [h, w]) {
                Ok(w) => w,
                Err(m) => {
                    return self.graph.fail(
                        "conv2d",
                        format!("{m}; input {}, filter {}", self.desc(), filter.desc()),
                    )
                }
            };
        let y = x.conv(ConvKind::Forward, window, opts.groups, f);
        match opts.format {
            DataFormat::Nhwc => y,
            DataFormat::Nchw => y.permute(&[0, 3, 1, 2]),
        }
    }

    /// The convolution op of `kind` on `self` and `other` (the gradient rules build the
    /// input and filter gradients with it).
    #[track_caller]
    pub(crate) fn conv(
        self,
        kind: ConvKind,
        window: Window2d,
        groups: usize,
        other: Tensor<'g>,
    ) -> Tensor<'g> {
        let op = Op::Conv {
            kind,
            window: Box::new(window),
            groups,
        };
        self.graph.push(op, &[self, other], None, None)
    }
}
