//! Variable initializers, with the semantics Keras documents.
//!
//! Each random initializer is seeded and draws from the counter-based generator in
//! `src/rng.rs`, so the same seed gives the same weights on every backend and machine.
//! Fans follow Keras: for a kernel of shape `[.., in, out]`, `fan_in = in * receptive`,
//! `fan_out = out * receptive`, where `receptive` is the product of the leading dimensions.

use crate::array::{Array, Element, FloatAttr};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::rng;

/// How a variable gets its first value. Fields are as in the matching constructor functions.
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
    GlorotUniform { seed: u64 },
    /// Glorot normal: truncated normal, `std = sqrt(2 / (fan_in + fan_out)) / 0.8796`.
    GlorotNormal { seed: u64 },
    /// He uniform: `U(-l, l)`, `l = sqrt(6 / fan_in)`.
    HeUniform { seed: u64 },
    /// He normal: truncated normal, `std = sqrt(2 / fan_in) / 0.8796`.
    HeNormal { seed: u64 },
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
/// Glorot uniform, the Keras default for `Dense` kernels.
pub fn glorot_uniform(seed: u64) -> Init {
    Init::GlorotUniform { seed }
}
/// Glorot normal.
pub fn glorot_normal(seed: u64) -> Init {
    Init::GlorotNormal { seed }
}
/// He uniform.
pub fn he_uniform(seed: u64) -> Init {
    Init::HeUniform { seed }
}
/// He normal.
pub fn he_normal(seed: u64) -> Init {
    Init::HeNormal { seed }
}

/// Keras' correction that gives a 2-std truncated normal the requested standard deviation.
const TRUNC_STD_CORRECTION: f64 = 0.879_625_661_034_239_8;

/// `(fan_in, fan_out)` of a kernel shape, as Keras computes them.
pub fn fans(shape: &[usize]) -> (f64, f64) {
    match shape.len() {
        0 => (1.0, 1.0),
        1 => (shape[0] as f64, shape[0] as f64),
        n => {
            let receptive: usize = shape[..n - 2].iter().product();
            (
                (shape[n - 2] * receptive) as f64,
                (shape[n - 1] * receptive) as f64,
            )
        }
    }
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
            Init::GlorotUniform { seed } => format!("glorot_uniform(seed={seed})"),
            Init::GlorotNormal { seed } => format!("glorot_normal(seed={seed})"),
            Init::HeUniform { seed } => format!("he_uniform(seed={seed})"),
            Init::HeNormal { seed } => format!("he_normal(seed={seed})"),
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
        let (fan_in, fan_out) = fans(shape);
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
            Init::GlorotUniform { seed } => {
                let l = (6.0 / (fan_in + fan_out)).sqrt();
                uni(*seed, -l, l)
            }
            Init::GlorotNormal { seed } => tn(
                *seed,
                0.0,
                (2.0 / (fan_in + fan_out)).sqrt() / TRUNC_STD_CORRECTION,
                &mut put,
            ),
            Init::HeUniform { seed } => {
                let l = (6.0 / fan_in).sqrt();
                uni(*seed, -l, l)
            }
            Init::HeNormal { seed } => tn(
                *seed,
                0.0,
                (2.0 / fan_in).sqrt() / TRUNC_STD_CORRECTION,
                &mut put,
            ),
        }
    }
}
