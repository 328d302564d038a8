//! Sliding windows over the two spatial axes of an NHWC tensor: what convolution and pooling
//! share.
//!
//! kiln's one internal layout for images is **NHWC** (batch, height, width, channels), with
//! convolution filters in **HWIO** (kernel height, kernel width, input channels per group,
//! output channels). With that layout an im2col row is `KH` runs of `KW·C` contiguous floats,
//! the batch folds into the GEMM's M axis, and the filter already is a row-major `[K, O]`
//! matrix (see ARCHITECTURE.md, "Images"). The builder accepts NCHW too ([`DataFormat`]) by
//! inserting transposes at the edges, which the passes fold.
//!
//! A user states padding as [`Padding`] (`valid`, `same`, or explicit per side); the builder
//! resolves it at build time, against the concrete spatial sizes, into a [`Window2d`] with
//! explicit `pad_lo`/`pad_hi`, which is what ops carry. Only the batch axis may be `?`, so
//! the resolution is always possible at build time.
//!
//! Every size here is computed with checked arithmetic: a window whose output size would
//! overflow, or that does not fit its padded input, is an `Err` naming the sizes.

/// How a window is padded, as the user states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Padding {
    /// No padding: windows lie entirely inside the input (Keras `"valid"`).
    #[default]
    Valid,
    /// Pad so that the output has `ceil(in / stride)` positions per axis; an odd total goes
    /// to the bottom/right, as TensorFlow and Keras do (`"same"`).
    Same,
    /// Explicit zero padding per side: `[(top, bottom), (left, right)]`.
    Explicit([(usize, usize); 2]),
}

/// The order of a 4-D image tensor's axes, as the user gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DataFormat {
    /// Batch, height, width, channels: Keras and TensorFlow, and kiln's internal layout.
    #[default]
    Nhwc,
    /// Batch, channels, height, width: PyTorch and ONNX.
    Nchw,
}

/// A resolved 2-D window: kernel extent, strides, dilations and explicit padding per
/// spatial axis (`[height, width]`). This is what convolution and pooling ops carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Window2d {
    /// Kernel taps per axis.
    pub kernel: [usize; 2],
    /// Step between windows per axis (≥ 1).
    pub strides: [usize; 2],
    /// Step between taps per axis (≥ 1; 1 is a dense kernel).
    pub dilations: [usize; 2],
    /// Zero rows/columns before the input, per axis.
    pub pad_lo: [usize; 2],
    /// Zero rows/columns after the input, per axis.
    pub pad_hi: [usize; 2],
}

impl Window2d {
    /// Resolves a user's padding against the input's spatial size `in_hw`.
    ///
    /// # Errors
    /// A zero kernel, stride or dilation, an arithmetic overflow, or a window larger than its
    /// padded input, each named with the sizes.
    pub fn resolve(
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        padding: Padding,
        in_hw: [usize; 2],
    ) -> Result<Window2d, String> {
        let mut w = Window2d {
            kernel,
            strides,
            dilations,
            pad_lo: [0; 2],
            pad_hi: [0; 2],
        };
        w.check_params()?;
        match padding {
            Padding::Valid => {}
            Padding::Explicit(p) => {
                w.pad_lo = [p[0].0, p[1].0];
                w.pad_hi = [p[0].1, p[1].1];
            }
            Padding::Same => {
                for a in 0..2 {
                    let out = in_hw[a].div_ceil(strides[a]);
                    let ext = w.extent(a)?;
                    // total = max((out - 1) * stride + extent - in, 0)
                    let need = out
                        .saturating_sub(1)
                        .checked_mul(strides[a])
                        .and_then(|v| v.checked_add(ext))
                        .ok_or_else(|| overflow(&w))?;
                    let total = need.saturating_sub(in_hw[a]);
                    w.pad_lo[a] = total / 2;
                    w.pad_hi[a] = total - total / 2;
                }
            }
        }
        w.out_hw(in_hw)?;
        Ok(w)
    }

    fn check_params(&self) -> Result<(), String> {
        for a in 0..2 {
            if self.kernel[a] == 0 || self.strides[a] == 0 || self.dilations[a] == 0 {
                return Err(format!(
                    "kernel {:?}, strides {:?} and dilations {:?} must all be at least 1",
                    self.kernel, self.strides, self.dilations
                ));
            }
        }
        Ok(())
    }

    /// The dilated kernel's extent along axis `a`: `dilation·(kernel − 1) + 1`.
    ///
    /// # Errors
    /// An axis other than 0 or 1, a zero kernel size (a public field: it has no extent, and
    /// `kernel − 1` would underflow), or an overflow.
    pub fn extent(&self, a: usize) -> Result<usize, String> {
        let (Some(&k), Some(&d)) = (self.kernel.get(a), self.dilations.get(a)) else {
            return Err(format!("a window has axes 0 and 1, not {a}"));
        };
        let gaps = k
            .checked_sub(1)
            .ok_or_else(|| format!("kernel {:?} must be at least 1", self.kernel))?;
        d.checked_mul(gaps)
            .and_then(|v| v.checked_add(1))
            .ok_or_else(|| overflow(self))
    }

    /// The output's spatial size for an input of spatial size `in_hw`:
    /// `floor((in + lo + hi − extent) / stride) + 1` per axis.
    ///
    /// # Errors
    /// A zero kernel, stride or dilation, an overflow, or a dilated kernel larger than the
    /// padded input.
    pub fn out_hw(&self, in_hw: [usize; 2]) -> Result<[usize; 2], String> {
        self.check_params()?;
        let mut out = [0; 2];
        for a in 0..2 {
            let padded = in_hw[a]
                .checked_add(self.pad_lo[a])
                .and_then(|v| v.checked_add(self.pad_hi[a]))
                .ok_or_else(|| overflow(self))?;
            let ext = self.extent(a)?;
            if ext > padded {
                return Err(format!(
                    "the window (kernel {:?}, dilations {:?}) is larger than the padded input \
                     {:?} (padding {:?} before, {:?} after)",
                    self.kernel, self.dilations, in_hw, self.pad_lo, self.pad_hi
                ));
            }
            out[a] = (padded - ext) / self.strides[a] + 1;
        }
        Ok(out)
    }

    /// True when the window is 1×1 with unit strides and no padding (a plain GEMM).
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.strides == [1, 1]
            && self.pad_lo == [0, 0]
            && self.pad_hi == [0, 0]
    }
}

fn overflow(w: &Window2d) -> String {
    format!(
        "window sizes overflow: kernel {:?}, strides {:?}, dilations {:?}, padding {:?}/{:?}",
        w.kernel, w.strides, w.dilations, w.pad_lo, w.pad_hi
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        // 28 wide, 3x3 stride 2: out 14, total pad = 13*2 + 3 - 28 = 1 -> (0, 1).
        let w = Window2d::resolve([3, 3], [2, 2], [1, 1], Padding::Same, [28, 28]).unwrap();
        assert_eq!((w.pad_lo, w.pad_hi), ([0, 0], [1, 1]));
        assert_eq!(w.out_hw([28, 28]).unwrap(), [14, 14]);
        let w = Window2d::resolve([3, 3], [1, 1], [1, 1], Padding::Same, [5, 7]).unwrap();
        assert_eq!((w.pad_lo, w.pad_hi), ([1, 1], [1, 1]));
        assert_eq!(w.out_hw([5, 7]).unwrap(), [5, 7]);
    }

    #[test]
    fn valid_and_dilated_output_sizes() {
        let w = Window2d::resolve([3, 3], [1, 1], [2, 2], Padding::Valid, [10, 9]).unwrap();
        assert_eq!(w.out_hw([10, 9]).unwrap(), [6, 5]);
        let w = Window2d::resolve([2, 2], [2, 2], [1, 1], Padding::Valid, [7, 7]).unwrap();
        assert_eq!(w.out_hw([7, 7]).unwrap(), [3, 3]);
    }

    #[test]
    fn bad_windows_are_errors() {
        let e = Window2d::resolve([0, 3], [1, 1], [1, 1], Padding::Valid, [4, 4]).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = Window2d::resolve([5, 5], [1, 1], [1, 1], Padding::Valid, [4, 4]).unwrap_err();
        assert!(e.contains("larger than the padded input"), "{e}");
        let e =
            Window2d::resolve([3, 3], [1, 1], [usize::MAX, 1], Padding::Valid, [4, 4]).unwrap_err();
        assert!(e.contains("overflow"), "{e}");
        let e = Window2d::resolve(
            [1, 1],
            [1, 1],
            [1, 1],
            Padding::Explicit([(usize::MAX, 1), (0, 0)]),
            [4, 4],
        )
        .unwrap_err();
        assert!(e.contains("overflow"), "{e}");
    }

    /// `extent` is public: a kernel of 0 (the fields are public) or an axis past 1 is an
    /// error, not an underflow or an index panic.
    #[test]
    fn extent_is_checked() {
        let mut w = Window2d::resolve([3, 2], [1, 1], [2, 1], Padding::Valid, [9, 9]).unwrap();
        assert_eq!((w.extent(0), w.extent(1)), (Ok(5), Ok(2)));
        w.kernel = [0, 2];
        let e = w.extent(0).unwrap_err();
        assert!(e.contains("kernel [0, 2] must be at least 1"), "{e}");
        assert_eq!(w.extent(1), Ok(2));
        assert!(w.extent(2).unwrap_err().contains("not 2"));
        w.kernel = [2, 2];
        w.dilations = [usize::MAX, 1];
        assert!(w.extent(0).unwrap_err().contains("overflow"));
    }
}
