//! The facts of each unary and binary op, as one row per op in one exhaustive `match`
//! (as JAX keeps a primitive's rules beside it, and tinygrad groups its ops in tables).
//!
//! Passes and backends read these rows instead of keeping their own lists of op names:
//! fusion's duplication rule reads [`Cost`], `simplify` reads non-negativity, the JIT reads
//! `vectorizable` and `tile`, and the interpreter and the JIT's `f64` helper both call the
//! `f64` function, which is therefore *the* reference semantics of the op. A new op does not
//! compile until it has its row, and its row is the only place these facts are written.

use super::{BinaryOp, UnaryOp};

/// How expensive an elementwise op is, for the fusion pass: a cheap producer may be
/// computed again in every consumer kernel instead of being stored and loaded; an expensive
/// one (a division, a transcendental) never is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cost {
    /// About as fast as a load: duplicating it is cheaper than a round trip to memory.
    Cheap,
    /// Computed once, stored, and read by every user.
    Expensive,
}

/// The facts of a [`UnaryOp`] (see [`UnaryOp::props`]).
#[derive(Clone, Copy, Debug)]
pub struct UnaryProps {
    /// Name in dumps and error messages.
    pub name: &'static str,
    /// Fusion's cost class.
    pub cost: Cost,
    /// The JIT can compute it on `f32x4` lanes (its `math.rs` code is lane-generic).
    pub vectorizable: bool,
    /// The symbol of its `f32` tile function in the JIT's `vmath` (called once per tile of a
    /// few hundred elements), or `None` when Cranelift computes it inline.
    pub tile: Option<&'static str>,
    /// The result is `>= 0` (or NaN) for every input, so `log` of it is defined.
    pub nonneg: bool,
    /// `f(a + b) = f(a) + f(b)` and `f(k a) = k f(a)`.
    pub linear: bool,
    /// Defined on `i32` as well as on floats (otherwise floats only).
    pub on_i32: bool,
    /// The reference semantics on `f64`: the interpreter computes every float dtype with it
    /// (rounding to `f32` afterwards for `f32`), and the JIT's `f64` helper calls it.
    pub f64: fn(f64) -> f64,
}

/// The facts of a [`BinaryOp`] (see [`BinaryOp::props`]).
#[derive(Clone, Copy, Debug)]
pub struct BinaryProps {
    /// Name in dumps and error messages.
    pub name: &'static str,
    /// Fusion's cost class.
    pub cost: Cost,
    /// The JIT can compute it on `f32x4` lanes.
    pub vectorizable: bool,
    /// A comparison: its result is `bool`.
    pub comparison: bool,
    /// `a op b == b op a` for all inputs, bitwise, NaNs included (CSE relies on it).
    pub commutative: bool,
    /// Linear in its operands jointly: `f(a + a', b + b') = f(a, b) + f(a', b')`.
    pub linear: bool,
    /// The reference semantics on float operands (comparisons give `1.0` or `0.0`). Integer
    /// semantics (wrapping, division by zero) are the interpreter's.
    pub f64: fn(f64, f64) -> f64,
}

impl UnaryOp {
    /// This op's row of facts. One exhaustive match: a new op has no facts until its row is
    /// written here.
    pub const fn props(self) -> UnaryProps {
        use Cost::{Cheap, Expensive};
        use UnaryOp as U;
        let base = UnaryProps {
            name: "",
            cost: Expensive,
            vectorizable: true,
            tile: None,
            nonneg: false,
            linear: false,
            on_i32: false,
            f64: f64_neg,
        };
        match self {
            U::Neg => UnaryProps {
                name: "neg",
                cost: Cheap,
                linear: true,
                on_i32: true,
                f64: f64_neg,
                ..base
            },
            U::Exp => UnaryProps {
                name: "exp",
                tile: Some("kiln_tile_exp"),
                nonneg: true,
                f64: f64::exp,
                ..base
            },
            U::Log => UnaryProps {
                name: "log",
                tile: Some("kiln_tile_log"),
                f64: f64::ln,
                ..base
            },
            U::Sqrt => UnaryProps {
                name: "sqrt",
                nonneg: true,
                f64: f64::sqrt,
                ..base
            },
            U::Recip => UnaryProps {
                name: "recip",
                f64: f64_recip,
                ..base
            },
            U::Tanh => UnaryProps {
                name: "tanh",
                tile: Some("kiln_tile_tanh"),
                f64: f64::tanh,
                ..base
            },
            U::Abs => UnaryProps {
                name: "abs",
                cost: Cheap,
                nonneg: true,
                on_i32: true,
                f64: f64::abs,
                ..base
            },
            U::Sigmoid => UnaryProps {
                name: "sigmoid",
                tile: Some("kiln_tile_sigmoid"),
                nonneg: true,
                f64: f64_sigmoid,
                ..base
            },
            // No tile function: Cranelift computes its rational polynomial inline.
            U::Erf => UnaryProps {
                name: "erf",
                f64: super::special::erf,
                ..base
            },
            // No tile function: Cranelift computes it inline from `exp` and `log`.
            U::Softplus => UnaryProps {
                name: "softplus",
                nonneg: true,
                f64: f64_softplus,
                ..base
            },
        }
    }
}

impl BinaryOp {
    /// This op's row of facts. One exhaustive match: a new op has no facts until its row is
    /// written here.
    pub const fn props(self) -> BinaryProps {
        use BinaryOp as B;
        use Cost::{Cheap, Expensive};
        let base = BinaryProps {
            name: "",
            cost: Cheap,
            vectorizable: true,
            comparison: false,
            commutative: false,
            linear: false,
            f64: f64_add,
        };
        let cmp = BinaryProps {
            comparison: true,
            ..base
        };
        match self {
            B::Add => BinaryProps {
                name: "add",
                commutative: true,
                linear: true,
                f64: f64_add,
                ..base
            },
            B::Sub => BinaryProps {
                name: "sub",
                linear: true,
                f64: f64_sub,
                ..base
            },
            B::Mul => BinaryProps {
                name: "mul",
                commutative: true,
                f64: f64_mul,
                ..base
            },
            B::Div => BinaryProps {
                name: "div",
                cost: Expensive,
                f64: f64_div,
                ..base
            },
            // An extern call in the JIT (libm's `pow`), so neither cheap nor vectorized.
            B::Pow => BinaryProps {
                name: "pow",
                cost: Expensive,
                vectorizable: false,
                f64: f64::powf,
                ..base
            },
            // An extern call in the JIT (Rust's `%`, libm's `fmod`), exact.
            B::Rem => BinaryProps {
                name: "rem",
                cost: Expensive,
                vectorizable: false,
                f64: f64_rem,
                ..base
            },
            B::Max => BinaryProps {
                name: "maximum",
                commutative: true,
                f64: ieee_max,
                ..base
            },
            B::Min => BinaryProps {
                name: "minimum",
                commutative: true,
                f64: ieee_min,
                ..base
            },
            B::Eq => BinaryProps {
                name: "eq",
                commutative: true,
                f64: f64_eq,
                ..cmp
            },
            B::Ne => BinaryProps {
                name: "ne",
                commutative: true,
                f64: f64_ne,
                ..cmp
            },
            B::Lt => BinaryProps {
                name: "lt",
                f64: f64_lt,
                ..cmp
            },
            B::Le => BinaryProps {
                name: "le",
                f64: f64_le,
                ..cmp
            },
            B::Gt => BinaryProps {
                name: "gt",
                f64: f64_gt,
                ..cmp
            },
            B::Ge => BinaryProps {
                name: "ge",
                f64: f64_ge,
                ..cmp
            },
        }
    }
}

fn f64_rem(a: f64, b: f64) -> f64 {
    a % b
}

fn f64_neg(x: f64) -> f64 {
    -x
}

fn f64_recip(x: f64) -> f64 {
    1.0 / x
}

fn f64_sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `max(x, 0) + log1p(e^{-|x|})`: never overflows, and keeps the tail `≈ e^x` for very
/// negative `x` (NaN stays NaN: `f64::max` drops it, the `exp` term keeps it).
fn f64_softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn f64_add(a: f64, b: f64) -> f64 {
    a + b
}

fn f64_sub(a: f64, b: f64) -> f64 {
    a - b
}

fn f64_mul(a: f64, b: f64) -> f64 {
    a * b
}

fn f64_div(a: f64, b: f64) -> f64 {
    a / b
}

fn bool01(c: bool) -> f64 {
    if c {
        1.0
    } else {
        0.0
    }
}

fn f64_eq(a: f64, b: f64) -> f64 {
    bool01(a == b)
}

fn f64_ne(a: f64, b: f64) -> f64 {
    bool01(a != b)
}

fn f64_lt(a: f64, b: f64) -> f64 {
    bool01(a < b)
}

fn f64_le(a: f64, b: f64) -> f64 {
    bool01(a <= b)
}

fn f64_gt(a: f64, b: f64) -> f64 {
    bool01(a > b)
}

fn f64_ge(a: f64, b: f64) -> f64 {
    bool01(a >= b)
}

/// IEEE `maximum`: NaN if either is NaN, and `max(-0, +0) = +0` (also `reduce_max`'s
/// step in the interpreter).
pub(crate) fn ieee_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b {
        a
    } else if b > a || a.is_sign_negative() {
        // b is larger, or they are equal and a is -0 (max(-0, +0) = +0).
        b
    } else {
        a
    }
}

/// IEEE `minimum`: NaN if either is NaN, and `min(-0, +0) = -0`.
fn ieee_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b {
        a
    } else if b < a {
        b
    } else if a.is_sign_negative() {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_nonempty() {
        let mut names: Vec<&str> = UnaryOp::ALL.iter().map(|u| u.props().name).collect();
        names.extend(BinaryOp::ALL.iter().map(|b| b.props().name));
        assert!(names.iter().all(|n| !n.is_empty()));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "two ops share a name");
    }

    #[test]
    fn rows_agree_with_their_semantics() {
        // A non-negative op gives no negative result; a linear one maps 0 to 0 and scales;
        // a commutative one commutes; a comparison gives 0 or 1. Checked on a grid, so a
        // row that claims a fact its f64 function breaks fails here.
        let xs = [-3.5, -1.0, -0.25, 0.0, 0.5, 2.0, 7.0];
        for u in UnaryOp::ALL {
            let p = u.props();
            for &x in &xs {
                let y = (p.f64)(x);
                if p.nonneg {
                    assert!(y.is_nan() || y >= 0.0, "{}({x}) = {y}", p.name);
                }
                if p.linear {
                    assert_eq!((p.f64)(2.0 * x), 2.0 * y, "{}", p.name);
                }
            }
        }
        for b in BinaryOp::ALL {
            let p = b.props();
            for &x in &xs {
                for &y in &xs {
                    let r = (p.f64)(x, y);
                    if p.commutative {
                        assert_eq!(r.to_bits(), (p.f64)(y, x).to_bits(), "{}", p.name);
                    }
                    if p.comparison {
                        assert!(r == 0.0 || r == 1.0, "{}", p.name);
                    }
                    if p.linear {
                        assert_eq!((p.f64)(2.0 * x, 2.0 * y), 2.0 * r, "{}", p.name);
                    }
                }
            }
        }
    }
}
