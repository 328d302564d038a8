//! The 2-D convolution family: one [`Op::Conv`] with three kinds, closed under
//! differentiation, and the geometry every backend shares.
//!
//! Activations are NHWC and filters HWIO (`[KH, KW, Cin/groups, Cout]`, see [`super::window`]).
//! With `y = Forward(x, w)`:
//! - [`ConvKind::Forward`] `(x, w) → y`;
//! - [`ConvKind::InputGrad`] `(dy, w) → dx`, the transposed convolution. It carries the
//!   input's spatial size, since with a stride several input sizes give one output size;
//! - [`ConvKind::FilterGrad`] `(x, dy) → dw`; the kernel size is the window's.
//!
//! Each kind's gradient is made of the three kinds again (`src/autodiff/rules.rs`), so the
//! gradient of a gradient needs nothing more. The shape rule ([`conv_shape`]) and
//! [`ConvGeom`], the sizes a backend loops over, are written once here.

use super::{Arg, Op, OpKind, Ty, Window2d};
use crate::shape::{Dim, Shape};

/// Which member of the convolution family an [`Op::Conv`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvKind {
    /// `(x, w) → y`: `y[n,oh,ow,o] = Σ x[n, oh·s − pl + kh·d, ow·s − pl + kw·d, c] · w[kh,kw,c,o]`
    /// over the taps and the input channels `c` of `o`'s group.
    Forward,
    /// `(dy, w) → dx`: the gradient of `Forward` with respect to its input, whose spatial
    /// size is `input_hw`.
    InputGrad {
        /// The input's `[H, W]`.
        input_hw: [usize; 2],
    },
    /// `(x, dy) → dw`: the gradient of `Forward` with respect to its filter.
    FilterGrad,
}

/// The sizes of one convolution, as every backend loops over them: `x` is `[n, h, w, c]`,
/// the filter `[kh, kw, c/groups, o]`, `y` is `[n, oh, ow, o]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// batch
    pub n: usize,
    /// input height and width
    pub in_hw: [usize; 2],
    /// input channels
    pub c: usize,
    /// output height and width
    pub out_hw: [usize; 2],
    /// output channels
    pub o: usize,
    /// channel groups
    pub groups: usize,
    /// the window
    pub window: Window2d,
}

impl ConvGeom {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// The length of one im2col row of one group: `kh · kw · c/groups`.
    pub fn k(&self) -> usize {
        self.window.kernel[0] * self.window.kernel[1] * self.cg()
    }
    /// Output pixels per image.
    pub fn out_pixels(&self) -> usize {
        self.out_hw[0] * self.out_hw[1]
    }
    /// Input pixels per image.
    pub fn in_pixels(&self) -> usize {
        self.in_hw[0] * self.in_hw[1]
    }

    /// The geometry of `op` (a convolution) from its operand and output shapes, once the
    /// batch size is known: `a`, `b` and `out` are concrete.
    pub fn of(op: &Op, a: &[usize], b: &[usize], out: &[usize]) -> Option<ConvGeom> {
        let Op::Conv {
            kind,
            window,
            groups,
        } = op
        else {
            return None;
        };
        let (x, y) = match kind {
            ConvKind::Forward => (a, out),
            ConvKind::InputGrad { .. } => (out, a),
            ConvKind::FilterGrad => (a, b),
        };
        if x.len() != 4 || y.len() != 4 {
            return None;
        }
        Some(ConvGeom {
            n: x[0],
            in_hw: [x[1], x[2]],
            c: x[3],
            out_hw: [y[1], y[2]],
            o: y[3],
            groups: *groups,
            window: (**window).clone(),
        })
    }

    /// The input pixel (row or column along axis `a`) that output position `out` reads at
    /// tap `tap`, or `None` in the padding.
    #[inline]
    pub fn src(&self, a: usize, out: usize, tap: usize) -> Option<usize> {
        let w = &self.window;
        let p = out * w.strides[a] + tap * w.dilations[a];
        p.checked_sub(w.pad_lo[a]).filter(|&i| i < self.in_hw[a])
    }
}

impl ConvKind {
    /// The kind's [`OpKind`].
    pub fn op_kind(self) -> OpKind {
        match self {
            ConvKind::Forward => OpKind::Conv2d,
            ConvKind::InputGrad { .. } => OpKind::Conv2dInputGrad,
            ConvKind::FilterGrad => OpKind::Conv2dFilterGrad,
        }
    }
}

/// The attribute values of a convolution, in the order of its [`OpKind`]'s keys.
pub(crate) fn conv_attrs(kind: &ConvKind, w: &Window2d, groups: usize) -> Vec<String> {
    let l = |v: [usize; 2]| format!("[{},{}]", v[0], v[1]);
    let mut v = vec![
        l(w.kernel),
        l(w.strides),
        l(w.dilations),
        l(w.pad_lo),
        l(w.pad_hi),
        groups.to_string(),
    ];
    if let ConvKind::InputGrad { input_hw } = kind {
        v.push(l(*input_hw));
    }
    v
}

/// The op of a convolution kind from its text attributes: `pair(key)` reads a two-element
/// list, `groups` is the `groups` attribute.
pub(crate) fn conv_from_attrs(
    kind: OpKind,
    pair: &dyn Fn(&str) -> Result<[usize; 2], String>,
    groups: usize,
) -> Result<Op, String> {
    let window = Window2d {
        kernel: pair("kernel")?,
        strides: pair("strides")?,
        dilations: pair("dilations")?,
        pad_lo: pair("pad_lo")?,
        pad_hi: pair("pad_hi")?,
    };
    let kind = match kind {
        OpKind::Conv2d => ConvKind::Forward,
        OpKind::Conv2dInputGrad => ConvKind::InputGrad {
            input_hw: pair("input_hw")?,
        },
        OpKind::Conv2dFilterGrad => ConvKind::FilterGrad,
        k => return Err(format!("{} is not a convolution", k.name())),
    };
    Ok(Op::Conv {
        kind,
        window: Box::new(window),
        groups,
    })
}

/// The spatial and channel sizes of a 4-D image operand: `[N, H, W, C]` with `H, W, C`
/// known (only the batch may be `?`).
fn image(what: &str, a: &Arg<'_>) -> Result<(Dim, [usize; 2], usize), String> {
    let d = a.shape.dims();
    let fixed = |i: usize| d.get(i).and_then(|x| x.fixed());
    match (d.len(), fixed(1), fixed(2), fixed(3)) {
        (4, Some(h), Some(w), Some(c)) => Ok((d[0], [h, w], c)),
        _ => Err(format!(
            "the {what} must be 4-D NHWC with known height, width and channels, got {a}"
        )),
    }
}

/// A filter `[KH, KW, Cin/groups, Cout]`.
fn filter(a: &Arg<'_>) -> Result<[usize; 4], String> {
    match a.shape.to_fixed().as_deref() {
        Some(&[kh, kw, ci, co]) => Ok([kh, kw, ci, co]),
        _ => Err(format!(
            "the filter must be 4-D HWIO [KH,KW,Cin/groups,Cout] and fully known, got {a}"
        )),
    }
}

fn divides(groups: usize, what: &str, n: usize, ins: &[Arg<'_>]) -> Result<(), String> {
    if groups == 0 || !n.is_multiple_of(groups) {
        return Err(format!(
            "groups = {groups} must be at least 1 and divide the {what} ({n}) of {} and {}",
            ins[0], ins[1]
        ));
    }
    Ok(())
}

/// The shape rule of [`Op::Conv`]: operands `ins` (checked float, same dtype, 4-D), output
/// type or a message naming the shapes.
pub(crate) fn conv_shape(
    kind: &ConvKind,
    w: &Window2d,
    groups: usize,
    ins: &[Arg<'_>],
) -> Result<Ty, String> {
    let dtype = ins[0].dtype;
    super::infer::compute("conv", dtype)?;
    super::infer::compute("conv", ins[1].dtype)?;
    if !dtype.is_float() || ins[1].dtype != dtype {
        return Err(format!(
            "needs two float operands of one dtype, got {} and {}",
            ins[0], ins[1]
        ));
    }
    let out_of = |in_hw: [usize; 2]| -> Result<[usize; 2], String> {
        w.out_hw(in_hw)
            .map_err(|e| format!("{e}; input {}", ins[0]))
    };
    let shape = match kind {
        ConvKind::Forward => {
            let (n, in_hw, c) = image("input", &ins[0])?;
            let f = filter(&ins[1])?;
            divides(groups, "input channels", c, ins)?;
            divides(groups, "output channels", f[3], ins)?;
            if f[..2] != w.kernel || f[2] != c / groups {
                return Err(format!(
                    "the filter {} does not fit the input {} with groups = {groups} \
                     (expected [{},{},{},Cout])",
                    ins[1],
                    ins[0],
                    w.kernel[0],
                    w.kernel[1],
                    c / groups
                ));
            }
            let o = out_of(in_hw)?;
            Shape::from([n, Dim::Fixed(o[0]), Dim::Fixed(o[1]), Dim::Fixed(f[3])])
        }
        ConvKind::InputGrad { input_hw } => {
            let (n, out_hw, o) = image("output gradient", &ins[0])?;
            let f = filter(&ins[1])?;
            divides(groups, "output channels", o, ins)?;
            if f[..2] != w.kernel || f[3] != o {
                return Err(format!(
                    "the filter {} does not fit the output gradient {}",
                    ins[1], ins[0]
                ));
            }
            if out_of(*input_hw)? != out_hw {
                return Err(format!(
                    "an input of spatial size {input_hw:?} gives outputs of {:?}, not the \
                     gradient {}",
                    out_of(*input_hw)?,
                    ins[0]
                ));
            }
            let c = f[2]
                .checked_mul(groups)
                .ok_or_else(|| "channel count overflows".to_string())?;
            Shape::from([
                n,
                Dim::Fixed(input_hw[0]),
                Dim::Fixed(input_hw[1]),
                Dim::Fixed(c),
            ])
        }
        ConvKind::FilterGrad => {
            let (n, in_hw, c) = image("input", &ins[0])?;
            let (n2, out_hw, o) = image("output gradient", &ins[1])?;
            divides(groups, "input channels", c, ins)?;
            divides(groups, "output channels", o, ins)?;
            if n != n2 || out_of(in_hw)? != out_hw {
                return Err(format!(
                    "the output gradient {} does not match the input {} (expected [{},{:?},{o}])",
                    ins[1],
                    ins[0],
                    n,
                    out_of(in_hw)?
                ));
            }
            Shape::fixed(&[w.kernel[0], w.kernel[1], c / groups, o])
        }
    };
    Ok(Ty { dtype, shape })
}
