// The front page is the README (its examples run as doctests); it shows `history.plot`, so
// a build without the `ui` feature gets a short page instead.
#![cfg_attr(feature = "ui", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "ui"),
    doc = "A static compute-graph compiler for neural networks (the README, rendered here \
           in the default build, needs the `ui` feature)."
)]
//!
//! ## Where things are
//!
//! The public modules are the user's API: [`graph`] and [`session`] (the low level),
//! [`nn`] (the Keras-style level), [`train`], [`data`], [`init`], [`checkpoint`] and
//! [`saved`], [`onnx`], [`passes`] and [`text`] (dumps). The backend IR, the JIT and the other
//! internals are crate-private (ARCHITECTURE.md, "Public API"); `internals` (hidden) holds
//! hooks for kiln's own tests and benches only.
#![warn(missing_docs)]
// `unsafe` is allowed in the `jit` module only (see ARCHITECTURE.md, invariant 9).
#![deny(unsafe_code)]

pub mod array;
mod atomic;
pub mod autodiff;
mod cast;
pub mod checkpoint;
pub mod data;
pub mod dist;
pub mod dtype;
pub mod error;
mod feeds;
pub mod graph;
pub mod init;
pub mod interp;
#[allow(unsafe_code)]
mod jit;
mod kernel;
pub mod nn;
pub mod onnx;
pub mod passes;
/// Training curves as SVG (plotters): only with the default-on `ui` feature.
#[cfg(feature = "ui")]
pub mod plot;
mod progress;
mod rng;
pub mod saved;
pub mod session;
pub mod shape;
pub mod text;
pub mod threads;
pub mod train;
mod vars;
mod view;

pub use array::{Array, ArrayData, Element};
pub use dtype::DType;
pub use error::{Error, Result, SrcLoc};
pub use graph::op::{
    BinaryOp, ConvGeom, ConvKind, DataFormat, Op, OpGroup, Padding, ReduceOp, Ty, UnaryOp, Window2d,
};
pub use graph::op::{Pool2dOptions, PoolKind};
pub use graph::{Conv2dOptions, Graph, GraphData, Node, NodeId, Tensor};
/// The `half` crate's element types, for `f16` and `bf16` arrays.
pub use half::{bf16, f16};
pub use interp::{Interpreter, Precision};
pub use shape::{Dim, Shape};

/// Hooks for kiln's own tests, benches and examples: the JIT's [`Executable`](internals::Executable)
/// without a session, the counter-based random numbers, and the few graph mutators that can
/// break the graph's invariants on purpose (to test that the verifier catches it).
///
/// Not part of the public API and not covered by semver: anything here may change or vanish in
/// any release. A user's program goes through [`session::Session`] and [`prelude`].
#[doc(hidden)]
pub mod internals {
    pub use crate::jit::{Executable, StepTime};
    pub use crate::rng::{standard_normal, uniform};

    use crate::graph::op::{Op, Ty};
    use crate::graph::{GraphData, NodeId};

    /// [`GraphData`]'s in-place access to a node's op and type, which passes use to rewrite a
    /// node; a test uses it to break a program on purpose and see the verifier catch it.
    pub fn node_mut_parts(g: &mut GraphData, id: NodeId) -> (&mut Op, &mut Ty) {
        g.node_mut_parts(id)
    }

    /// Checks the loop kernel `id` of `p`'s kernel table against the invariants the JIT's
    /// memory safety rests on (every load in bounds); the kernel IR itself is crate-private.
    pub fn validate_kernel(
        p: &crate::passes::Program,
        id: crate::graph::op::KernelId,
    ) -> Result<(), String> {
        p.kernels().lookup(id)?.validate()
    }

    /// Replaces operand `pos` of `user` with `new`, unchecked (it can make a cycle, which the
    /// walk tests need).
    pub fn set_input(g: &mut GraphData, user: NodeId, pos: usize, new: NodeId) {
        g.set_input(user, pos, new)
    }
}

/// The names most programs need: `use kiln::prelude::*;`.
pub mod prelude {
    pub use crate::array::Array;
    pub use crate::autodiff::{grad, gradients};
    pub use crate::dtype::DType;
    pub use crate::error::{Error, Result};
    pub use crate::graph::{Graph, Tensor};
    pub use crate::init;
    pub use crate::interp::{Interpreter, Precision};
    pub use crate::session::{Backend, Session};
    pub use crate::shape::{Dim, Shape};
    pub use crate::train::{Adam, AdamW, Optimizer, RmsProp, Sgd};
}
