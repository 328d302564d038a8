//! Each op kind's name and attribute keys: the one definition that the text printer
//! ([`Op::attrs`]) and the parser (`text::parse`) both work from.
//!
//! [`OpKind`] is an [`Op`] without its attribute values. Its table below gives every kind a
//! name and the keys of its attributes in canonical order; the printer pairs those keys with
//! the op's values, and the parser looks a name up in the same table, checks exactly those
//! keys are present, and builds the op in one exhaustive `match` over [`OpKind`] (so a new
//! kind does not compile until the parser can read it). An unknown name is an error, never
//! some other op.

use super::{BinaryOp, Op, RandomDist, ReduceOp, UnaryOp};
use std::fmt::Write as _;

/// Declares [`OpKind`] and its table: plain kinds with their name and keys, and kinds that
/// wrap a sub-enum (named by it) with their keys.
macro_rules! op_kinds {
    (
        plain { $($(#[$pm:meta])* $P:ident => $pname:literal [$($pkey:literal),*],)* }
        nested { $($(#[$nm:meta])* $N:ident($T:ident) [$($nkey:literal),*],)* }
    ) => {
        /// An [`Op`] without its attribute values: what the text format names.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum OpKind {
            $($(#[$pm])* $P,)*
            $($(#[$nm])* $N($T),)*
        }

        impl OpKind {
            /// Every kind, plain ones first, then each sub-enum's variants in order.
            pub fn all() -> impl Iterator<Item = OpKind> {
                let plain: &'static [OpKind] = &[$(OpKind::$P,)*];
                let it = plain.iter().copied();
                $(let it = it.chain($T::ALL.iter().map(|&x| OpKind::$N(x)));)*
                it
            }

            /// The name in dumps and error messages.
            pub fn name(self) -> &'static str {
                match self {
                    $(OpKind::$P => $pname,)*
                    $(OpKind::$N(x) => x.name(),)*
                }
            }

            /// The attribute keys, in the order the text format writes them.
            pub fn attr_keys(self) -> &'static [&'static str] {
                match self {
                    $(OpKind::$P => &[$($pkey),*],)*
                    $(OpKind::$N(_) => &[$($nkey),*],)*
                }
            }
        }
    };
}

op_kinds! {
    plain {
        /// [`Op::Placeholder`]
        Placeholder => "placeholder" [],
        /// [`Op::Variable`]
        Variable => "variable" ["init"],
        /// [`Op::Constant`] (its value prints as the `value` attribute)
        Constant => "constant" ["value"],
        /// [`Op::Random`] with [`RandomDist::Uniform`]
        RandomUniform => "random_uniform" ["low", "high", "seed"],
        /// [`Op::Random`] with [`RandomDist::Normal`]
        RandomNormal => "random_normal" ["mean", "std", "seed"],
        /// [`Op::Where`]
        Where => "where" [],
        /// [`Op::Cast`]
        Cast => "cast" ["to"],
        /// [`Op::Reshape`]
        Reshape => "reshape" [],
        /// [`Op::Permute`]
        Permute => "permute" ["perm"],
        /// [`Op::BroadcastTo`]
        BroadcastTo => "broadcast_to" [],
        /// [`Op::Slice`]
        Slice => "slice" ["begin"],
        /// [`Op::Pad`]
        Pad => "pad" ["lo", "hi"],
        /// [`Op::Concat`]
        Concat => "concat" ["axis"],
        /// [`Op::MatMul`]
        MatMul => "matmul" [],
        /// [`Op::Conv`] with [`ConvKind::Forward`](super::ConvKind::Forward)
        Conv2d => "conv2d" ["kernel", "strides", "dilations", "pad_lo", "pad_hi", "groups"],
        /// [`Op::Conv`] with [`ConvKind::InputGrad`](super::ConvKind::InputGrad)
        Conv2dInputGrad => "conv2d_input_grad"
            ["kernel", "strides", "dilations", "pad_lo", "pad_hi", "groups", "input_hw"],
        /// [`Op::Conv`] with [`ConvKind::FilterGrad`](super::ConvKind::FilterGrad)
        Conv2dFilterGrad => "conv2d_filter_grad"
            ["kernel", "strides", "dilations", "pad_lo", "pad_hi", "groups"],
        /// [`Op::StopGradient`]
        StopGradient => "stop_gradient" [],
        /// [`Op::Size`]
        Size => "size" ["axes"],
        /// [`Op::Assign`]
        Assign => "assign" [],
        /// [`Op::Group`]
        Group => "group" [],
        /// [`Op::Pool`] with [`PoolKind::Max`](super::PoolKind::Max)
        MaxPool2d => "max_pool2d" ["kernel", "strides", "dilations", "pad_lo", "pad_hi"],
        /// [`Op::Pool`] with [`PoolKind::Avg`](super::PoolKind::Avg)
        AvgPool2d => "avg_pool2d" ["kernel", "strides", "dilations", "pad_lo", "pad_hi", "count_include_pad"],
        /// [`Op::Pool`] with [`PoolKind::MaxGrad`](super::PoolKind::MaxGrad)
        MaxPool2dGrad => "max_pool2d_grad" ["kernel", "strides", "dilations", "pad_lo", "pad_hi"],
        /// [`Op::Pool`] with [`PoolKind::MaxGather`](super::PoolKind::MaxGather)
        MaxPool2dGather => "max_pool2d_gather" ["kernel", "strides", "dilations", "pad_lo", "pad_hi"],
        /// [`Op::Pool`] with [`PoolKind::AvgGrad`](super::PoolKind::AvgGrad)
        AvgPool2dGrad => "avg_pool2d_grad" ["kernel", "strides", "dilations", "pad_lo", "pad_hi", "count_include_pad", "input_hw"],
        /// [`Op::AllReduce`]
        AllReduce => "all_reduce" [],
        /// [`Op::Fusion`] (printed, never parsed: kernels are compiler output)
        Fusion => "fusion" ["kernel"],
    }
    nested {
        /// [`Op::Unary`]
        Unary(UnaryOp) [],
        /// [`Op::Binary`]
        Binary(BinaryOp) [],
        /// [`Op::Reduce`]
        Reduce(ReduceOp) ["axes", "keepdims"],
    }
}

impl OpKind {
    /// The kind named `name` in dumps, if any.
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::all().find(|k| k.name() == name)
    }
}

fn list(v: &[usize]) -> String {
    let mut s = String::from("[");
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{x}");
    }
    s.push(']');
    s
}

impl Op {
    /// The op's kind: its name and attribute keys without their values.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Placeholder => OpKind::Placeholder,
            Op::Variable { .. } => OpKind::Variable,
            Op::Constant(_) => OpKind::Constant,
            Op::Random {
                dist: RandomDist::Uniform { .. },
                ..
            } => OpKind::RandomUniform,
            Op::Random {
                dist: RandomDist::Normal { .. },
                ..
            } => OpKind::RandomNormal,
            Op::Unary(u) => OpKind::Unary(*u),
            Op::Binary(b) => OpKind::Binary(*b),
            Op::Where => OpKind::Where,
            Op::Cast(_) => OpKind::Cast,
            Op::Reduce { op, .. } => OpKind::Reduce(*op),
            Op::Reshape => OpKind::Reshape,
            Op::Permute(_) => OpKind::Permute,
            Op::BroadcastTo => OpKind::BroadcastTo,
            Op::Slice { .. } => OpKind::Slice,
            Op::Pad { .. } => OpKind::Pad,
            Op::Concat { .. } => OpKind::Concat,
            Op::MatMul => OpKind::MatMul,
            Op::Conv { kind, .. } => kind.op_kind(),
            Op::StopGradient => OpKind::StopGradient,
            Op::Size { .. } => OpKind::Size,
            Op::Assign => OpKind::Assign,
            Op::Group => OpKind::Group,
            Op::Pool { kind, .. } => kind.op_kind(),
            Op::Fusion(_) => OpKind::Fusion,
            Op::AllReduce => OpKind::AllReduce,
        }
    }

    /// The attributes as `key=value` pairs, in the canonical order of the text format: the
    /// keys are [`OpKind::attr_keys`], paired with this op's values. A constant's value is
    /// not among them (the printer writes it from the array).
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        let values: Vec<String> = match self {
            Op::Placeholder
            | Op::Constant(_)
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Reshape
            | Op::BroadcastTo
            | Op::MatMul
            | Op::StopGradient
            | Op::Assign
            | Op::Group
            | Op::AllReduce => vec![],
            Op::Variable { init } => vec![init.describe()],
            Op::Random { dist, seed } => match dist {
                RandomDist::Uniform { low, high } => {
                    vec![low.to_string(), high.to_string(), seed.to_string()]
                }
                RandomDist::Normal { mean, std } => {
                    vec![mean.to_string(), std.to_string(), seed.to_string()]
                }
            },
            Op::Cast(d) => vec![d.name().to_string()],
            Op::Reduce { axes, keepdims, .. } => vec![list(axes), keepdims.to_string()],
            Op::Permute(p) => vec![list(p)],
            Op::Slice { begin } => vec![list(begin)],
            Op::Pad { lo, hi } => vec![list(lo), list(hi)],
            Op::Concat { axis } => vec![axis.to_string()],
            Op::Size { axes } => vec![list(axes)],
            Op::Conv {
                kind,
                window,
                groups,
            } => super::conv_attrs(kind, window, *groups),
            Op::Pool { kind, window } => super::pool::attr_values(kind, window),
            Op::Fusion(k) => vec![k.index().to_string()],
        };
        self.kind()
            .attr_keys()
            .iter()
            .copied()
            .zip(values)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found_again() {
        let kinds: Vec<OpKind> = OpKind::all().collect();
        for &k in &kinds {
            assert_eq!(OpKind::from_name(k.name()), Some(k), "{}", k.name());
        }
        let mut names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len(), "two kinds share a name");
        assert_eq!(OpKind::from_name("no_such_op"), None);
    }

    /// An op of each kind (fused kernels aside: they are never parsed).
    fn sample(kind: OpKind) -> Option<Op> {
        use crate::array::{Array, ConstValue, FloatAttr};
        use crate::dtype::DType;
        use crate::init::Init;
        let axes = || [0usize, 1].into_iter().collect();
        let f = FloatAttr;
        Some(match kind {
            OpKind::Placeholder => Op::Placeholder,
            OpKind::Variable => Op::Variable { init: Init::Zeros },
            OpKind::Constant => {
                Op::Constant(ConstValue(std::sync::Arc::new(Array::scalar(1.0f32))))
            }
            OpKind::RandomUniform => Op::Random {
                dist: RandomDist::Uniform {
                    low: f(0.0),
                    high: f(1.0),
                },
                seed: 1,
            },
            OpKind::RandomNormal => Op::Random {
                dist: RandomDist::Normal {
                    mean: f(0.0),
                    std: f(1.0),
                },
                seed: 1,
            },
            OpKind::Unary(u) => Op::Unary(u),
            OpKind::Binary(b) => Op::Binary(b),
            OpKind::Where => Op::Where,
            OpKind::Cast => Op::Cast(DType::F64),
            OpKind::Reduce(op) => Op::Reduce {
                op,
                axes: axes(),
                keepdims: true,
            },
            OpKind::Reshape => Op::Reshape,
            OpKind::Permute => Op::Permute(axes()),
            OpKind::BroadcastTo => Op::BroadcastTo,
            OpKind::Slice => Op::Slice { begin: axes() },
            OpKind::Pad => Op::Pad {
                lo: axes(),
                hi: axes(),
            },
            OpKind::Concat => Op::Concat { axis: 1 },
            OpKind::MatMul => Op::MatMul,
            OpKind::Conv2d | OpKind::Conv2dInputGrad | OpKind::Conv2dFilterGrad => {
                let two = |_: &str| Ok([1, 1]);
                crate::graph::op::conv_from_attrs(kind, &two, 1).ok()?
            }
            OpKind::StopGradient => Op::StopGradient,
            OpKind::Size => Op::Size { axes: axes() },
            OpKind::Assign => Op::Assign,
            OpKind::Group => Op::Group,
            OpKind::AllReduce => Op::AllReduce,
            OpKind::MaxPool2d
            | OpKind::AvgPool2d
            | OpKind::MaxPool2dGrad
            | OpKind::MaxPool2dGather
            | OpKind::AvgPool2dGrad => {
                use super::super::{PoolKind, Window2d};
                let kind = match kind {
                    OpKind::MaxPool2d => PoolKind::Max,
                    OpKind::AvgPool2d => PoolKind::Avg {
                        count_include_pad: true,
                    },
                    OpKind::MaxPool2dGrad => PoolKind::MaxGrad,
                    OpKind::MaxPool2dGather => PoolKind::MaxGather,
                    _ => PoolKind::AvgGrad {
                        count_include_pad: false,
                        input_hw: [4, 4],
                    },
                };
                Op::Pool {
                    kind,
                    window: Window2d {
                        kernel: [2, 2],
                        strides: [2, 2],
                        dilations: [1, 1],
                        pad_lo: [0, 0],
                        pad_hi: [0, 0],
                    },
                }
            }
            OpKind::Fusion => return None,
        })
    }

    /// The printer writes exactly the keys the parser requires, in the table's order (a
    /// constant's value is written from its array, not from `attrs`).
    #[test]
    fn attrs_follow_the_table() {
        for kind in OpKind::all() {
            let Some(op) = sample(kind) else { continue };
            assert_eq!(op.kind(), kind);
            assert_eq!(op.name(), kind.name());
            let keys: Vec<&str> = op.attrs().iter().map(|(k, _)| *k).collect();
            let want: &[&str] = match kind {
                OpKind::Constant => &[],
                _ => kind.attr_keys(),
            };
            assert_eq!(keys, want, "{}", kind.name());
        }
    }
}
