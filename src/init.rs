//! Variable initializers, with the semantics Keras documents.
//!
//! Each random initializer is seeded and draws from the counter-based generator in
//! `src/rng.rs`, so the same seed gives the same weights on every backend and machine.
//!
//! The variance-scaling family (Glorot, He, LeCun) scales by a kernel's fans, which depend
//! on how its axes are laid out ([`KernelLayout`]):
//! - [`KernelLayout::Hwio`], the default, is Keras' and TF's: a kernel `[.., in, out]`
//!   (Dense `[in, out]`, a convolution `[KH, KW, in, out]`) has `fan_in = in * receptive`,
//!   `fan_out = out * receptive`, `receptive` the product of the leading dimensions
//!   (Keras' `compute_fans`).
//! - [`KernelLayout::Oihw`] is PyTorch's and ONNX's: a kernel `[out, in, ..]` (Linear
//!   `[out, in]`, a convolution `[out, in, KH, KW]`) has `fan_in = in * receptive`,
//!   `fan_out = out * receptive`, `receptive` the product of the trailing dimensions
//!   (PyTorch's `_calculate_fan_in_and_fan_out`).
//!
//! A kernel of rank 1 has `fan_in = fan_out = its length` and a scalar `1` in both (Keras'
//! rule; PyTorch refuses them). The Keras layers make HWIO kernels; a filter for an NCHW
//! convolution ([`crate::graph::op::DataFormat::Nchw`] takes OIHW filters) says so:
//!
//! ```
//! use kiln::init::{self, KernelLayout};
//! // 64 output channels, 32 input channels, 3x3: fan_in = 32*9 in either layout.
//! assert_eq!(init::fans_for(&[3, 3, 32, 64], KernelLayout::Hwio), (288.0, 576.0));
//! assert_eq!(init::fans_for(&[64, 32, 3, 3], KernelLayout::Oihw), (288.0, 576.0));
//! // Read as HWIO, the OIHW filter would get fan_in 3*64*32: He weights 4.6x too small.
//! assert_eq!(init::fans(&[64, 32, 3, 3]), (6144.0, 6144.0));
//! let w = init::he_normal(1).with_layout(KernelLayout::Oihw);
//! assert_eq!(w.describe(), "he_normal(seed=1,layout=oihw)");
//! ```

use crate::array::{Array, Element, FloatAttr};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::rng;

/// How a kernel's axes are laid out: which of them are the inputs, the outputs and the
/// receptive field, for the fans of the variance-scaling initializers (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KernelLayout {
    /// Keras and TF: `[.., in, out]`: Dense `[in, out]`, convolution HWIO `[KH, KW, in, out]`.
    #[default]
    Hwio,
    /// PyTorch and ONNX: `[out, in, ..]`: Linear `[out, in]`, convolution OIHW
    /// `[out, in, KH, KW]`.
    Oihw,
}

impl KernelLayout {
    /// The name in the text format (`hwio`, `oihw`).
    pub fn name(self) -> &'static str {
        match self {
            KernelLayout::Hwio => "hwio",
            KernelLayout::Oihw => "oihw",
        }
    }

    /// The layout named `s` (as [`KernelLayout::name`] writes it).
    pub fn from_name(s: &str) -> Option<KernelLayout> {
        match s {
            "hwio" => Some(KernelLayout::Hwio),
            "oihw" => Some(KernelLayout::Oihw),
            _ => None,
        }
    }
}

/// How a variable gets its first value. Fields are as in the matching constructor functions;
/// `layout` is the kernel layout the fans are read in ([`Init::with_layout`]).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element the same value.
    Constant(FloatAttr),
    /// Uniform on `[low, high)`.
    Uniform {
        low: FloatAttr,
        high: FloatAttr,
        seed: u64,
    },
    /// Normal with `mean` and `std`.
    Normal {
        mean: FloatAttr,
        std: FloatAttr,
        seed: u64,
    },
    /// Normal with `mean` and `std`, values further than 2 `std` from the mean redrawn.
    TruncatedNormal {
        mean: FloatAttr,
        std: FloatAttr,
        seed: u64,
    },
    /// Glorot (Xavier) uniform: `U(-l, l)`, `l = sqrt(6 / (fan_in + fan_out))`.
    GlorotUniform { seed: u64, layout: KernelLayout },
    /// Glorot normal: truncated normal, `std = sqrt(2 / (fan_in + fan_out)) / 0.8796`.
    GlorotNormal { seed: u64, layout: KernelLayout },
    /// He uniform: `U(-l, l)`, `l = sqrt(6 / fan_in)`.
    HeUniform { seed: u64, layout: KernelLayout },
    /// He normal: truncated normal, `std = sqrt(2 / fan_in) / 0.8796`.
    HeNormal { seed: u64, layout: KernelLayout },
    /// LeCun uniform: `U(-l, l)`, `l = sqrt(3 / fan_in)`.
    LecunUniform { seed: u64, layout: KernelLayout },
    /// LeCun normal: truncated normal, `std = sqrt(1 / fan_in) / 0.8796`.
    LecunNormal { seed: u64, layout: KernelLayout },
}

/// Zeros.
pub fn zeros() -> Init {
    Init::Zeros
}
/// Ones.
pub fn ones() -> Init {
    Init::Ones
}
/// A constant.
pub fn constant(v: f64) -> Init {
    Init::Constant(FloatAttr(v))
}
/// Uniform on `[low, high)`.
pub fn uniform(low: f64, high: f64, seed: u64) -> Init {
    Init::Uniform {
        low: FloatAttr(low),
        high: FloatAttr(high),
        seed,
    }
}
/// Normal.
pub fn normal(mean: f64, std: f64, seed: u64) -> Init {
    Init::Normal {
        mean: FloatAttr(mean),
        std: FloatAttr(std),
        seed,
    }
}
/// Truncated normal (redrawn beyond 2 std).
pub fn truncated_normal(mean: f64, std: f64, seed: u64) -> Init {
    Init::TruncatedNormal {
        mean: FloatAttr(mean),
        std: FloatAttr(std),
        seed,
    }
}
/// Glorot uniform, the Keras default for `Dense` kernels (fans in Keras' layout; see
/// [`Init::with_layout`]).
pub fn glorot_uniform(seed: u64) -> Init {
    Init::GlorotUniform {
        seed,
        layout: KernelLayout::Hwio,
    }
}
/// Glorot normal.
pub fn glorot_normal(seed: u64) -> Init {
    Init::GlorotNormal {
        seed,
        layout: KernelLayout::Hwio,
    }
}
/// He uniform.
pub fn he_uniform(seed: u64) -> Init {
    Init::HeUniform {
        seed,
        layout: KernelLayout::Hwio,
    }
}
/// He normal.
pub fn he_normal(seed: u64) -> Init {
    Init::HeNormal {
        seed,
        layout: KernelLayout::Hwio,
    }
}
/// LeCun uniform (Keras' `lecun_uniform`): `U(-l, l)` with `l = sqrt(3 / fan_in)`, a
/// variance of `1 / fan_in`; the initializer self-normalizing (SELU) networks assume.
///
/// ```
/// use kiln::prelude::*;
/// // fan_in 300 (a [300, 10] Dense kernel): every value within sqrt(3/300) = 0.1.
/// let w = init::lecun_uniform(7).fill(DType::F32, &[300, 10]);
/// assert!(w.to_f64_vec().iter().all(|v| v.abs() <= 0.1 + 1e-7));
/// ```
pub fn lecun_uniform(seed: u64) -> Init {
    Init::LecunUniform {
        seed,
        layout: KernelLayout::Hwio,
    }
}
/// LeCun normal (Keras' `lecun_normal`): a normal truncated at two standard deviations, with
/// standard deviation `sqrt(1 / fan_in)` after truncation.
///
/// ```
/// use kiln::prelude::*;
/// // fan_in 100: std 0.1, nothing drawn beyond 2 std of the untruncated normal.
/// let w = init::lecun_normal(3).fill(DType::F32, &[100, 200]).to_f64_vec();
/// let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
/// assert!((std - 0.1).abs() < 0.003, "{std}");
/// assert!(w.iter().all(|v| v.abs() <= 2.0 * 0.1 / 0.8796 + 1e-6));
/// ```
pub fn lecun_normal(seed: u64) -> Init {
    Init::LecunNormal {
        seed,
        layout: KernelLayout::Hwio,
    }
}

/// The variance-scaling initializer named `name` in the text format (`glorot_uniform`,
/// `he_normal`, `lecun_uniform`, ...), or `None` for another name.
pub(crate) fn scaled_by_name(name: &str, seed: u64, layout: KernelLayout) -> Option<Init> {
    Some(match name {
        "glorot_uniform" => Init::GlorotUniform { seed, layout },
        "glorot_normal" => Init::GlorotNormal { seed, layout },
        "he_uniform" => Init::HeUniform { seed, layout },
        "he_normal" => Init::HeNormal { seed, layout },
        "lecun_uniform" => Init::LecunUniform { seed, layout },
        "lecun_normal" => Init::LecunNormal { seed, layout },
        _ => return None,
    })
}

/// Keras' correction that gives a 2-std truncated normal the requested standard deviation.
const TRUNC_STD_CORRECTION: f64 = 0.879_625_661_034_239_8;

/// `(fan_in, fan_out)` of a kernel shape in Keras' layout (`[.., in, out]`), as Keras
/// computes them: [`fans_for`] with [`KernelLayout::Hwio`].
pub fn fans(shape: &[usize]) -> (f64, f64) {
    fans_for(shape, KernelLayout::Hwio)
}

/// `(fan_in, fan_out)` of a kernel shape in `layout` (module docs): Keras' rule for HWIO,
/// PyTorch's for OIHW, and the same for both below rank 2.
pub fn fans_for(shape: &[usize], layout: KernelLayout) -> (f64, f64) {
    let n = shape.len();
    if n < 2 {
        let k = shape.first().map_or(1.0, |&k| k as f64);
        return (k, k);
    }
    let (inputs, outputs, receptive) = match layout {
        KernelLayout::Hwio => (shape[n - 2], shape[n - 1], &shape[..n - 2]),
        KernelLayout::Oihw => (shape[1], shape[0], &shape[2..]),
    };
    // In f64: a product of dimensions that overflows usize is still a (huge) fan.
    let receptive: f64 = receptive.iter().map(|&k| k as f64).product();
    (inputs as f64 * receptive, outputs as f64 * receptive)
}

fn truncated(seed: u64, i: u64) -> f64 {
    // Redraw from stream j+1 until within 2 std; counter-based, so still a pure function of i.
    for j in 0..64u64 {
        let z = rng::standard_normal(seed, j + 1, i) as f64;
        if z.abs() <= 2.0 {
            return z;
        }
    }
    0.0
}

impl Init {
    /// The keyword used in dumps (`glorot_uniform(seed=42)`).
    pub fn describe(&self) -> String {
        match self {
            Init::Zeros => "zeros".into(),
            Init::Ones => "ones".into(),
            Init::Constant(v) => format!("constant({v})"),
            Init::Uniform { low, high, seed } => format!("uniform({low},{high},seed={seed})"),
            Init::Normal { mean, std, seed } => format!("normal({mean},{std},seed={seed})"),
            Init::TruncatedNormal { mean, std, seed } => {
                format!("truncated_normal({mean},{std},seed={seed})")
            }
            Init::GlorotUniform { seed, layout }
            | Init::GlorotNormal { seed, layout }
            | Init::HeUniform { seed, layout }
            | Init::HeNormal { seed, layout }
            | Init::LecunUniform { seed, layout }
            | Init::LecunNormal { seed, layout } => {
                let name = match self {
                    Init::GlorotUniform { .. } => "glorot_uniform",
                    Init::GlorotNormal { .. } => "glorot_normal",
                    Init::HeUniform { .. } => "he_uniform",
                    Init::HeNormal { .. } => "he_normal",
                    Init::LecunUniform { .. } => "lecun_uniform",
                    _ => "lecun_normal",
                };
                // Keras' layout is the default and is not written, so dumps made before
                // layouts existed read back the same.
                match layout {
                    KernelLayout::Hwio => format!("{name}(seed={seed})"),
                    l => format!("{name}(seed={seed},layout={})", l.name()),
                }
            }
        }
    }

    /// This initializer with its fans read in `layout` (see the module docs); an
    /// initializer without fans (zeros, uniform, ...) is returned unchanged.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// use kiln::init::KernelLayout;
    /// // An OIHW filter for an NCHW convolution: 16 filters over 8 channels, 3x3.
    /// let g = Graph::new();
    /// let w = g.variable("w", [16, 8, 3, 3], init::he_uniform(1).with_layout(KernelLayout::Oihw));
    /// let mut sess = Session::new(&g)?;
    /// let limit = (6.0f64 / (8.0 * 9.0)).sqrt(); // fan_in = 8 * 3 * 3
    /// let v = sess.variable(w).unwrap().to_f64_vec();
    /// assert!(v.iter().all(|x| x.abs() <= limit) && v.iter().any(|x| x.abs() > 0.9 * limit));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn with_layout(self, layout: KernelLayout) -> Init {
        match self {
            Init::GlorotUniform { seed, .. } => Init::GlorotUniform { seed, layout },
            Init::GlorotNormal { seed, .. } => Init::GlorotNormal { seed, layout },
            Init::HeUniform { seed, .. } => Init::HeUniform { seed, layout },
            Init::HeNormal { seed, .. } => Init::HeNormal { seed, layout },
            Init::LecunUniform { seed, .. } => Init::LecunUniform { seed, layout },
            Init::LecunNormal { seed, .. } => Init::LecunNormal { seed, layout },
            Init::Zeros
            | Init::Ones
            | Init::Constant(_)
            | Init::Uniform { .. }
            | Init::Normal { .. }
            | Init::TruncatedNormal { .. } => self,
        }
    }

    /// The initial value for a variable of `dtype` and `shape`.
    ///
    /// # Panics
    /// If the array cannot be allocated; [`Init::try_fill`] is the checked form (sessions
    /// use it).
    pub fn fill(&self, dtype: DType, shape: &[usize]) -> Array {
        match self.try_fill(dtype, shape) {
            Ok(a) => a,
            Err(e) => panic!("Init::fill: {e}"),
        }
    }

    /// The initial value for a variable of `dtype` and `shape`, or an error if it is larger
    /// than [`crate::shape::alloc_limit`] or the allocator refuses it. Each element is
    /// computed in `f64` and rounded straight into the array (as [`Array::from_f64`] rounds):
    /// no `f64` copy of the whole value is made.
    pub fn try_fill(&self, dtype: DType, shape: &[usize]) -> Result<Array> {
        let what = format!("initializer {}", self.describe());
        crate::shape::check_alloc(&what, dtype, shape).map_err(Error::invalid)?;
        let n = crate::shape::checked_numel(shape).unwrap_or(0);
        match dtype {
            DType::F32 => Array::new(shape, self.values::<f32>(n, shape)?),
            DType::F64 => Array::new(shape, self.values::<f64>(n, shape)?),
            DType::I32 => Array::new(shape, self.values::<i32>(n, shape)?),
            DType::Bool => Array::new(shape, self.values::<bool>(n, shape)?),
            DType::I64 => Array::new(shape, self.values::<i64>(n, shape)?),
            DType::I8 => Array::new(shape, self.values::<i8>(n, shape)?),
            DType::U8 => Array::new(shape, self.values::<u8>(n, shape)?),
            DType::F16 => Array::new(shape, self.values::<half::f16>(n, shape)?),
            DType::BF16 => Array::new(shape, self.values::<half::bf16>(n, shape)?),
        }
    }

    /// The `n` initial values of `shape`, each rounded to `T`.
    fn values<T: Element>(&self, n: usize, shape: &[usize]) -> Result<Vec<T>> {
        let mut v: Vec<T> = Vec::new();
        v.try_reserve_exact(n).map_err(|_| {
            Error::invalid(format!(
                "initializer {}: cannot allocate {n} elements of {}: out of memory",
                self.describe(),
                T::DTYPE
            ))
        })?;
        self.each(n, shape, |x| v.push(T::from_f64(x)));
        Ok(v)
    }

    /// Calls `put` with each of the `n` initial values of `shape` in order, as `f64`.
    fn each(&self, n: usize, shape: &[usize], mut put: impl FnMut(f64)) {
        let (fan_in, fan_out) = match self {
            Init::GlorotUniform { layout, .. }
            | Init::GlorotNormal { layout, .. }
            | Init::HeUniform { layout, .. }
            | Init::HeNormal { layout, .. }
            | Init::LecunUniform { layout, .. }
            | Init::LecunNormal { layout, .. } => fans_for(shape, *layout),
            _ => (1.0, 1.0),
        };
        let range = 0..n as u64;
        let mut uni = |seed: u64, lo: f64, hi: f64| {
            rng::fill_uniform(seed, 0, range.clone(), lo as f32, hi as f32, |_, x| {
                put(x as f64)
            })
        };
        // Truncated normals and the plain ones go through `uni`'s `put` too: one borrow.
        let tn = |seed: u64, mean: f64, std: f64, put: &mut dyn FnMut(f64)| {
            for i in 0..n as u64 {
                put(mean + std * truncated(seed, i));
            }
        };
        match self {
            Init::Zeros => (0..n).for_each(|_| put(0.0)),
            Init::Ones => (0..n).for_each(|_| put(1.0)),
            Init::Constant(v) => (0..n).for_each(|_| put(v.0)),
            Init::Uniform { low, high, seed } => uni(*seed, low.0, high.0),
            Init::Normal { mean, std, seed } => {
                for i in 0..n as u64 {
                    put(mean.0 + std.0 * rng::standard_normal(*seed, 0, i) as f64);
                }
            }
            Init::TruncatedNormal { mean, std, seed } => tn(*seed, mean.0, std.0, &mut put),
            Init::GlorotUniform { seed, .. } => {
                let l = (6.0 / (fan_in + fan_out)).sqrt();
                uni(*seed, -l, l)
            }
            Init::GlorotNormal { seed, .. } => tn(
                *seed,
                0.0,
                (2.0 / (fan_in + fan_out)).sqrt() / TRUNC_STD_CORRECTION,
                &mut put,
            ),
            Init::HeUniform { seed, .. } => {
                let l = (6.0 / fan_in).sqrt();
                uni(*seed, -l, l)
            }
            Init::HeNormal { seed, .. } => tn(
                *seed,
                0.0,
                (2.0 / fan_in).sqrt() / TRUNC_STD_CORRECTION,
                &mut put,
            ),
            Init::LecunUniform { seed, .. } => {
                let l = (3.0 / fan_in).sqrt();
                uni(*seed, -l, l)
            }
            Init::LecunNormal { seed, .. } => tn(
                *seed,
                0.0,
                (1.0 / fan_in).sqrt() / TRUNC_STD_CORRECTION,
                &mut put,
            ),
        }
    }
}
