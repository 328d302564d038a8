//! Convolution layers: `Conv2D` and `DepthwiseConv2D`, as Keras defines them.
//!
//! Inputs are NHWC (`[batch, height, width, channels]`, Keras' `channels_last`), kernels HWIO,
//! so a Keras kernel loads as it is. Kernels start Glorot-uniform with Keras' fans, which
//! [`crate::init`] computes from the variable's shape (`fan_in = KH·KW·Cin/groups`,
//! `fan_out = KH·KW·Cout`, Keras' `compute_fans`). A depthwise kernel is stored in Keras'
//! shape `[KH, KW, C, multiplier]`, so its fans and its checkpoints are Keras', and is
//! reshaped (no copy) into the `[KH, KW, 1, C·multiplier]` filter of a convolution with
//! `groups = C`: output channel `c·multiplier + m` is input channel `c`'s `m`-th filter, the
//! order Keras uses.

use super::layers::{Activation, Ctx, Layer};
use super::regularizers::Regularizer;
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::init::{self, Init};
use crate::shape::Dim;
use crate::{Conv2dOptions, Padding};

/// The channel count of an NHWC input with known height, width and channels, or an error
/// naming the layer.
fn channels(x: Tensor<'_>, layer: &str) -> Result<usize> {
    match x.shape().dims() {
        [_, Dim::Fixed(_), Dim::Fixed(_), Dim::Fixed(c)] => Ok(*c),
        _ => Err(Error::invalid(format!(
            "{layer} takes a [batch, height, width, channels] input, got {}",
            x.shape()
        ))),
    }
}

/// A 2-D convolution layer (Keras `Conv2D`): `activation(conv2d(x, kernel) + bias)`.
#[derive(Clone, Debug)]
pub struct Conv2D {
    filters: usize,
    kernel_size: [usize; 2],
    opts: Conv2dOptions,
    activation: Activation,
    use_bias: bool,
    kernel_initializer: Option<Init>,
    bias_initializer: Init,
    kernel_regularizer: Option<Regularizer>,
}

impl Conv2D {
    /// `filters` output channels, a `kernel_size` window, stride 1, `valid` padding, no
    /// activation, a bias, a Glorot-uniform kernel (seeded by the model).
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> Conv2D {
        Conv2D {
            filters,
            kernel_size,
            opts: Conv2dOptions::new(),
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: None,
            bias_initializer: init::zeros(),
            kernel_regularizer: None,
        }
    }
    /// A penalty on the kernel, added to the training loss (Keras' `kernel_regularizer`).
    pub fn kernel_regularizer(mut self, r: Regularizer) -> Conv2D {
        self.kernel_regularizer = Some(r);
        self
    }
    /// The strides.
    pub fn strides(mut self, h: usize, w: usize) -> Conv2D {
        self.opts = self.opts.strides(h, w);
        self
    }
    /// The padding (Keras' `"valid"` is [`Padding::Valid`], `"same"` [`Padding::Same`]).
    pub fn padding(mut self, p: Padding) -> Conv2D {
        self.opts = self.opts.padding(p);
        self
    }
    /// The dilation rate.
    pub fn dilation_rate(mut self, h: usize, w: usize) -> Conv2D {
        self.opts = self.opts.dilations(h, w);
        self
    }
    /// Channel groups (input and output channels must be multiples of it).
    pub fn groups(mut self, g: usize) -> Conv2D {
        self.opts = self.opts.groups(g);
        self
    }
    /// The activation.
    pub fn activation(mut self, a: Activation) -> Conv2D {
        self.activation = a;
        self
    }
    /// Shorthand for `.activation(Activation::Relu)`.
    pub fn relu(self) -> Conv2D {
        self.activation(Activation::Relu)
    }
    /// With or without the bias.
    pub fn use_bias(mut self, on: bool) -> Conv2D {
        self.use_bias = on;
        self
    }
    /// The kernel's initializer (default: Glorot uniform with the model's next seed).
    pub fn kernel_initializer(mut self, i: Init) -> Conv2D {
        self.kernel_initializer = Some(i);
        self
    }
    /// The bias initializer (default: zeros).
    pub fn bias_initializer(mut self, i: Init) -> Conv2D {
        self.bias_initializer = i;
        self
    }
}

impl Layer for Conv2D {
    fn kind(&self) -> &'static str {
        "Conv2D"
    }
    fn base_name(&self) -> String {
        "conv2d".into()
    }
    fn validate(&self) -> Result<()> {
        self.kernel_regularizer
            .iter()
            .try_for_each(|r| r.validate())
    }
    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let c = channels(x, "Conv2D")?;
        let groups = self.opts.groups.max(1);
        let [kh, kw] = self.kernel_size;
        let ki = self
            .kernel_initializer
            .clone()
            .unwrap_or_else(|| init::glorot_uniform(ctx.next_seed()));
        let w = ctx.weight("kernel", [kh, kw, c / groups, self.filters], ki);
        if let Some(r) = &self.kernel_regularizer {
            ctx.add_loss(r.penalty(w));
        }
        let mut y = x.conv2d(w, &self.opts);
        if self.use_bias {
            let b = ctx.weight("bias", [self.filters], self.bias_initializer.clone());
            y = y + b;
        }
        Ok(self.activation.apply(y))
    }
}

/// A depthwise 2-D convolution layer (Keras `DepthwiseConv2D`): each input channel is
/// convolved with its own `depth_multiplier` filters.
#[derive(Clone, Debug)]
pub struct DepthwiseConv2D {
    kernel_size: [usize; 2],
    depth_multiplier: usize,
    opts: Conv2dOptions,
    activation: Activation,
    use_bias: bool,
    depthwise_initializer: Option<Init>,
    bias_initializer: Init,
}

impl DepthwiseConv2D {
    /// A `kernel_size` window, multiplier 1, stride 1, `valid` padding, no activation, a
    /// bias, a Glorot-uniform kernel (seeded by the model).
    pub fn new(kernel_size: [usize; 2]) -> DepthwiseConv2D {
        DepthwiseConv2D {
            kernel_size,
            depth_multiplier: 1,
            opts: Conv2dOptions::new(),
            activation: Activation::Linear,
            use_bias: true,
            depthwise_initializer: None,
            bias_initializer: init::zeros(),
        }
    }
    /// Output channels per input channel.
    pub fn depth_multiplier(mut self, m: usize) -> DepthwiseConv2D {
        self.depth_multiplier = m;
        self
    }
    /// The strides.
    pub fn strides(mut self, h: usize, w: usize) -> DepthwiseConv2D {
        self.opts = self.opts.strides(h, w);
        self
    }
    /// The padding.
    pub fn padding(mut self, p: Padding) -> DepthwiseConv2D {
        self.opts = self.opts.padding(p);
        self
    }
    /// The dilation rate.
    pub fn dilation_rate(mut self, h: usize, w: usize) -> DepthwiseConv2D {
        self.opts = self.opts.dilations(h, w);
        self
    }
    /// The activation.
    pub fn activation(mut self, a: Activation) -> DepthwiseConv2D {
        self.activation = a;
        self
    }
    /// With or without the bias.
    pub fn use_bias(mut self, on: bool) -> DepthwiseConv2D {
        self.use_bias = on;
        self
    }
    /// The depthwise kernel's initializer (default: Glorot uniform with the model's next
    /// seed, over Keras' kernel shape `[KH, KW, C, multiplier]`).
    pub fn depthwise_initializer(mut self, i: Init) -> DepthwiseConv2D {
        self.depthwise_initializer = Some(i);
        self
    }
    /// The bias initializer (default: zeros).
    pub fn bias_initializer(mut self, i: Init) -> DepthwiseConv2D {
        self.bias_initializer = i;
        self
    }
}

impl Layer for DepthwiseConv2D {
    fn kind(&self) -> &'static str {
        "DepthwiseConv2D"
    }
    fn base_name(&self) -> String {
        "depthwise_conv2d".into()
    }
    fn call<'g>(&mut self, ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let c = channels(x, "DepthwiseConv2D")?;
        let (m, [kh, kw]) = (self.depth_multiplier, self.kernel_size);
        let ki = self
            .depthwise_initializer
            .clone()
            .unwrap_or_else(|| init::glorot_uniform(ctx.next_seed()));
        let k = ctx.weight("depthwise_kernel", [kh, kw, c, m], ki);
        let w = k.reshape([kh, kw, 1, c * m]);
        let mut y = x.conv2d(w, &self.opts.clone().groups(c.max(1)));
        if self.use_bias {
            let b = ctx.weight("bias", [c * m], self.bias_initializer.clone());
            y = y + b;
        }
        Ok(self.activation.apply(y))
    }
}
