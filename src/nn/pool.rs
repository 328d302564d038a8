//! The Keras pooling layers: [`MaxPooling2D`], [`AveragePooling2D`] and
//! [`GlobalAveragePooling2D`]. They have no weights (`summary` shows 0 params); each is one
//! builder call ([`Tensor::max_pool2d`], [`Tensor::avg_pool2d`],
//! [`Tensor::global_avg_pool2d`]) on a `[batch, height, width, channels]` input (Keras'
//! `channels_last`, the default), or `[batch, channels, height, width]` with
//! [`DataFormat::Nchw`].

use super::layers::{Ctx, Layer};
use crate::error::{Error, Result};
use crate::graph::op::{DataFormat, Padding, Pool2dOptions};
use crate::graph::Tensor;

/// The image-batch check every pooling layer makes first, naming the layer.
fn image(x: Tensor<'_>, layer: &str) -> Result<()> {
    if x.rank() == 4 {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{layer} takes a 4-D [batch, height, width, channels] input, got {}",
        x.shape()
    )))
}

/// Keras' `MaxPooling2D`: the maximum of each `pool_size` window, windows `strides` apart
/// (default: `pool_size`), `"valid"` padding unless set.
///
/// ```
/// use kiln::nn::*;
/// use kiln::Padding;
/// let mut m = Sequential::new([
///     Input::new([28, 28, 1]).into(),
///     MaxPooling2D::new([2, 2]).into(),
///     MaxPooling2D::new([3, 3]).strides([2, 2]).padding(Padding::Same).into(),
/// ]);
/// let s = m.summary()?;
/// assert!(s.contains("max_pooling2d_1 (MaxPooling2D)") && s.contains("(None, 7, 7, 1)"));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct MaxPooling2D {
    opts: Pool2dOptions,
}

/// Keras' `AveragePooling2D`: the mean of each window over its taps inside the input (with
/// `"same"` padding the border windows divide by fewer taps, as Keras does).
#[derive(Clone, Debug)]
pub struct AveragePooling2D {
    opts: Pool2dOptions,
}

macro_rules! window_setters {
    ($T:ident) => {
        impl $T {
            /// Windows of `pool_size`, `pool_size` apart, no padding, channels last.
            pub fn new(pool_size: [usize; 2]) -> $T {
                $T {
                    opts: Pool2dOptions::new(pool_size),
                }
            }

            /// The step between windows.
            pub fn strides(mut self, strides: [usize; 2]) -> $T {
                self.opts.strides = Some(strides);
                self
            }

            /// `Padding::Valid` (the default) or `Padding::Same`, as Keras' `padding`.
            pub fn padding(mut self, padding: Padding) -> $T {
                self.opts.padding = padding;
                self
            }

            /// The input's layout (Keras' `data_format`; NHWC by default).
            pub fn data_format(mut self, format: DataFormat) -> $T {
                self.opts.format = format;
                self
            }
        }
    };
}
window_setters!(MaxPooling2D);
window_setters!(AveragePooling2D);

impl Layer for MaxPooling2D {
    fn kind(&self) -> &'static str {
        "MaxPooling2D"
    }
    fn base_name(&self) -> String {
        "max_pooling2d".into()
    }
    fn call<'g>(&mut self, _ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        image(x, self.kind())?;
        Ok(x.max_pool2d(&self.opts))
    }
}

impl Layer for AveragePooling2D {
    fn kind(&self) -> &'static str {
        "AveragePooling2D"
    }
    fn base_name(&self) -> String {
        "average_pooling2d".into()
    }
    fn call<'g>(&mut self, _ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        image(x, self.kind())?;
        Ok(x.avg_pool2d(&self.opts))
    }
}

/// Keras' `GlobalAveragePooling2D`: the mean over height and width, `[batch, channels]` out.
///
/// ```
/// use kiln::nn::*;
/// let mut m = Sequential::new([
///     Input::new([5, 5, 8]).into(),
///     GlobalAveragePooling2D::new().into(),
/// ]);
/// assert!(m.summary()?.contains("(None, 8)"));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalAveragePooling2D {
    format: DataFormat,
}

impl GlobalAveragePooling2D {
    /// Channels last.
    pub fn new() -> GlobalAveragePooling2D {
        GlobalAveragePooling2D::default()
    }

    /// The input's layout (Keras' `data_format`; NHWC by default).
    pub fn data_format(mut self, format: DataFormat) -> GlobalAveragePooling2D {
        self.format = format;
        self
    }
}

impl Layer for GlobalAveragePooling2D {
    fn kind(&self) -> &'static str {
        "GlobalAveragePooling2D"
    }
    fn base_name(&self) -> String {
        "global_average_pooling2d".into()
    }
    fn call<'g>(&mut self, _ctx: &Ctx<'g>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        image(x, self.kind())?;
        Ok(x.global_avg_pool2d(self.format))
    }
}
