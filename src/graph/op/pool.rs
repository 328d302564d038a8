//! 2-D pooling: the op family [`PoolKind`], its shape rule and its text attributes, and the
//! user's [`Pool2dOptions`].
//!
//! Pooling is one `Op::Pool { kind, window }` over an NHWC tensor (kiln's one image layout;
//! see [`super::window`]). Five kinds close the family under differentiation, so gradients of
//! any order are ordinary graph nodes:
//!
//! | kind | operands → result | its gradient |
//! |---|---|---|
//! | `Max` | x → y | x: `MaxGrad(x, g)` |
//! | `Avg` | x → y | x: `AvgGrad(g)` |
//! | `MaxGrad` | x, dy → dx | x: zero almost everywhere; dy: `MaxGather(x, g)` |
//! | `MaxGather` | x, g → (y's shape) | x: zero almost everywhere; g: `MaxGrad(x, g')` |
//! | `AvgGrad` | dy → dx | dy: `Avg(g)` |
//!
//! The semantics, which both backends follow bit for bit:
//! - a window's taps are scanned row by row (`kh` outer, `kw` inner); taps in the padding are
//!   skipped, and the shape rule refuses a window with no tap inside the input, so padding
//!   never wins a max and an average never divides by zero;
//! - the **argmax** is the first maximum in scan order (strict `>`), and the first NaN wins
//!   over any number (as PyTorch); `Max` is the value at the argmax;
//! - `Avg` sums its taps in scan order starting from `-0.0`, in the dtype's arithmetic, then
//!   divides by the count: the kernel area with `count_include_pad` (PyTorch's default), the
//!   taps inside the input without it (Keras' `"same"`);
//! - `MaxGrad` and `AvgGrad` start from `+0.0` and add each window's contribution (`dy` at
//!   the argmax; `dy / count` at every tap) to the input positions, windows in row-major
//!   order: overlapping windows therefore sum in one fixed order.

use super::window::{DataFormat, Padding, Window2d};
use super::{Arg, OpKind, Ty};
use crate::shape::{Dim, Shape};

/// Which member of the pooling family an `Op::Pool` is (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// Max pooling: `x → y`.
    Max,
    /// Average pooling: `x → y`.
    Avg {
        /// Divide by the whole kernel area (PyTorch's default), not only by the taps inside
        /// the input (Keras' `"same"`).
        count_include_pad: bool,
    },
    /// The gradient of max pooling: `(x, dy) → dx`, `dy` routed to each window's argmax.
    MaxGrad,
    /// `(x, g) → y`-shaped: `g` read at each window's argmax (the gradient of `MaxGrad` with
    /// respect to `dy`).
    MaxGather,
    /// The gradient of average pooling: `dy → dx`.
    AvgGrad {
        /// As [`PoolKind::Avg`]'s.
        count_include_pad: bool,
        /// The input's spatial size `[H, W]` (the result's, which `dy` does not determine).
        input_hw: [usize; 2],
    },
}

impl PoolKind {
    /// The number of operands.
    pub fn arity(self) -> usize {
        match self {
            PoolKind::Max | PoolKind::Avg { .. } | PoolKind::AvgGrad { .. } => 1,
            PoolKind::MaxGrad | PoolKind::MaxGather => 2,
        }
    }

    /// The kind's row in the op table.
    pub(crate) fn op_kind(self) -> OpKind {
        match self {
            PoolKind::Max => OpKind::MaxPool2d,
            PoolKind::Avg { .. } => OpKind::AvgPool2d,
            PoolKind::MaxGrad => OpKind::MaxPool2dGrad,
            PoolKind::MaxGather => OpKind::MaxPool2dGather,
            PoolKind::AvgGrad { .. } => OpKind::AvgPool2dGrad,
        }
    }

    /// The divisor of an average window with `inside` taps inside the input.
    pub(crate) fn count(self, w: &Window2d, inside: usize) -> usize {
        match self {
            PoolKind::Avg { count_include_pad }
            | PoolKind::AvgGrad {
                count_include_pad, ..
            } if count_include_pad => w.kernel[0] * w.kernel[1],
            _ => inside,
        }
    }
}

fn list(v: &[usize]) -> String {
    let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", s.join(","))
}

/// The text attributes of a pooling op, in the order of its kind's keys in the op table.
pub(crate) fn attr_values(kind: &PoolKind, w: &Window2d) -> Vec<String> {
    let mut v = vec![
        list(&w.kernel),
        list(&w.strides),
        list(&w.dilations),
        list(&w.pad_lo),
        list(&w.pad_hi),
    ];
    match kind {
        PoolKind::Max | PoolKind::MaxGrad | PoolKind::MaxGather => {}
        PoolKind::Avg { count_include_pad } => v.push(count_include_pad.to_string()),
        PoolKind::AvgGrad {
            count_include_pad,
            input_hw,
        } => {
            v.push(count_include_pad.to_string());
            v.push(list(input_hw));
        }
    }
    v
}

/// The spatial extent `[N, H, W, C]` of a pooled operand, with `H`, `W`, `C` known.
fn nhwc(what: &str, x: &Arg<'_>) -> Result<(Dim, [usize; 3]), String> {
    super::infer::compute(what, x.dtype)?;
    if !x.dtype.is_float() {
        return Err(format!("{what} needs a float operand, got {x}"));
    }
    let d = x.shape.dims();
    let fixed = |i: usize| d.get(i).and_then(|d| d.fixed());
    match (d.len(), fixed(1), fixed(2), fixed(3)) {
        (4, Some(h), Some(w), Some(c)) => Ok((d[0], [h, w, c])),
        _ => Err(format!(
            "{what} needs an NHWC operand of rank 4 with known height, width and channels, \
             got {x}"
        )),
    }
}

/// Checks that every window along one axis has a tap inside the input (so a max never takes
/// padding and an average never divides by zero).
fn every_window_inside(w: &Window2d, a: usize, size: usize, out: usize) -> Result<(), String> {
    let (s, d, lo, k) = (w.strides[a], w.dilations[a], w.pad_lo[a], w.kernel[a]);
    for o in 0..out {
        // The first tap at or after the input's start: `o·s + t·d >= lo`.
        let start = o * s;
        let t = lo.saturating_sub(start).div_ceil(d);
        let inside = t < k && start + t * d - lo < size;
        if !inside {
            return Err(format!(
                "window {o} along {} (kernel {:?}, strides {:?}, dilations {:?}, padding \
                 {:?} before, {:?} after) lies entirely in the padding",
                ["the height", "the width"][a],
                w.kernel,
                w.strides,
                w.dilations,
                w.pad_lo,
                w.pad_hi
            ));
        }
    }
    Ok(())
}

/// The pooled type of an NHWC input of type `x` under `w`.
fn pooled(what: &str, x: &Arg<'_>, w: &Window2d) -> Result<Ty, String> {
    let (n, [h, wd, c]) = nhwc(what, x)?;
    let named = |m: String| format!("{m}, for {x}");
    let out = w.out_hw([h, wd]).map_err(named)?;
    // An average divides by the window's area (`PoolKind::count`): it must be a size.
    w.kernel[0]
        .checked_mul(w.kernel[1])
        .ok_or_else(|| named(format!("the window area {:?} overflows", w.kernel)))?;
    Shape(vec![n, Dim::Fixed(out[0]), Dim::Fixed(out[1]), Dim::Fixed(c)].into())
        .check_size(x.dtype)?;
    every_window_inside(w, 0, h, out[0]).map_err(named)?;
    every_window_inside(w, 1, wd, out[1]).map_err(named)?;
    Ok(Ty {
        dtype: x.dtype,
        shape: Shape(vec![n, Dim::Fixed(out[0]), Dim::Fixed(out[1]), Dim::Fixed(c)].into()),
    })
}

/// The shape rule of `Op::Pool` (the arity is checked by the caller).
pub(crate) fn infer(kind: &PoolKind, w: &Window2d, ins: &[Arg<'_>]) -> Result<Ty, String> {
    let what = kind.op_kind().name();
    match kind {
        PoolKind::Max | PoolKind::Avg { .. } => pooled(what, &ins[0], w),
        PoolKind::MaxGrad => {
            let y = pooled(what, &ins[0], w)?;
            if ins[1].ty != &y {
                return Err(format!(
                    "the output gradient {} must have the pooled type {y} of {}",
                    ins[1], ins[0]
                ));
            }
            Ok(ins[0].ty.clone())
        }
        PoolKind::MaxGather => {
            let y = pooled(what, &ins[0], w)?;
            if ins[1].ty != ins[0].ty {
                return Err(format!(
                    "the gathered operand {} must have the input's type {}",
                    ins[1], ins[0]
                ));
            }
            Ok(y)
        }
        PoolKind::AvgGrad { input_hw, .. } => {
            let dy = &ins[0];
            let (n, [_, _, c]) = nhwc(what, dy)?;
            let x = Ty {
                dtype: dy.dtype,
                shape: Shape(
                    vec![
                        n,
                        Dim::Fixed(input_hw[0]),
                        Dim::Fixed(input_hw[1]),
                        Dim::Fixed(c),
                    ]
                    .into(),
                ),
            };
            x.shape.check_size(x.dtype)?;
            let label = format!("(input {x})");
            let y = pooled(
                what,
                &Arg {
                    ty: &x,
                    label: &label,
                },
                w,
            )?;
            if dy.ty != &y {
                return Err(format!(
                    "the output gradient {dy} must have the pooled type {y} of an input of \
                     spatial size {input_hw:?}"
                ));
            }
            Ok(x)
        }
    }
}

/// How [`Tensor::max_pool2d`](crate::Tensor::max_pool2d) and
/// [`Tensor::avg_pool2d`](crate::Tensor::avg_pool2d) pool: window, strides, padding, layout.
///
/// ```
/// use kiln::{Padding, Pool2dOptions};
/// // Keras' MaxPooling2D(pool_size=3, strides=2, padding="same"):
/// let o = Pool2dOptions::new([3, 3]).strides([2, 2]).padding(Padding::Same);
/// assert_eq!(o.strides, Some([2, 2]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool2dOptions {
    /// The window `[height, width]`.
    pub window: [usize; 2],
    /// The step between windows; `None` means the window itself (as Keras).
    pub strides: Option<[usize; 2]>,
    /// The padding (default [`Padding::Valid`]).
    pub padding: Padding,
    /// Step between taps (default 1: a dense window; PyTorch's `dilation`).
    pub dilations: [usize; 2],
    /// The operand's layout (default NHWC; NCHW is permuted to NHWC around the op).
    pub format: DataFormat,
    /// For average pooling: divide by the whole window, padding included (PyTorch's
    /// default), rather than by the taps inside the input (Keras' `"same"`; the default).
    pub count_include_pad: bool,
}

impl Pool2dOptions {
    /// A `window` with strides equal to it, no padding, NHWC.
    pub fn new(window: [usize; 2]) -> Pool2dOptions {
        Pool2dOptions {
            window,
            strides: None,
            padding: Padding::Valid,
            dilations: [1, 1],
            format: DataFormat::Nhwc,
            count_include_pad: false,
        }
    }

    /// Sets the strides.
    pub fn strides(mut self, s: [usize; 2]) -> Self {
        self.strides = Some(s);
        self
    }

    /// Sets the padding.
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }

    /// Sets the dilations.
    pub fn dilations(mut self, d: [usize; 2]) -> Self {
        self.dilations = d;
        self
    }

    /// Sets the layout.
    pub fn format(mut self, f: DataFormat) -> Self {
        self.format = f;
        self
    }

    /// Sets whether an average counts the padding.
    pub fn count_include_pad(mut self, yes: bool) -> Self {
        self.count_include_pad = yes;
        self
    }

    /// The resolved window for an input of spatial size `in_hw`.
    pub(crate) fn resolve(&self, in_hw: [usize; 2]) -> Result<Window2d, String> {
        Window2d::resolve(
            self.window,
            self.strides.unwrap_or(self.window),
            self.dilations,
            self.padding,
            in_hw,
        )
    }
}
