//! Unary ops: each op's instructions per dtype. `f32` transcendentals are `math.rs`'s
//! polynomials (inline, vectorizable); `f64` ones call the runtime's helper with the op's
//! explicit code (`runtime::unary_code`), which evaluates the op's reference `f64` function
//! from its props. Integers have only the ops whose props allow `i32`.

use super::{math, Gen};
use crate::dtype::DType;
use crate::graph::op::UnaryOp;
use cranelift_codegen::ir::types::{F32X4, I32};
use cranelift_codegen::ir::{InstBuilder, Value};

impl Gen<'_, '_> {
    pub(super) fn unary(&mut self, u: UnaryOp, dt: DType, x: Value) -> Value {
        match dt {
            DType::F32 => match u {
                UnaryOp::Neg => self.b.ins().fneg(x),
                UnaryOp::Abs => self.b.ins().fabs(x),
                UnaryOp::Sqrt => self.b.ins().sqrt(x),
                UnaryOp::Recip => {
                    let one = self.b.ins().f32const(1.0f32);
                    let one = if self.b.func.dfg.value_type(x) == F32X4 {
                        self.b.ins().splat(F32X4, one)
                    } else {
                        one
                    };
                    self.b.ins().fdiv(one, x)
                }
                UnaryOp::Exp => math::exp(self.b, x),
                UnaryOp::Log => math::log(self.b, x),
                UnaryOp::Tanh => math::tanh(self.b, x),
                UnaryOp::Sigmoid => math::sigmoid(self.b, x),
                UnaryOp::Erf => math::erf(self.b, x),
                UnaryOp::Softplus => math::softplus(self.b, x),
            },
            DType::F64 => match u {
                UnaryOp::Neg => self.b.ins().fneg(x),
                UnaryOp::Abs => self.b.ins().fabs(x),
                UnaryOp::Sqrt => self.b.ins().sqrt(x),
                UnaryOp::Recip => {
                    let one = self.b.ins().f64const(1.0f64);
                    self.b.ins().fdiv(one, x)
                }
                UnaryOp::Exp
                | UnaryOp::Log
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid
                | UnaryOp::Erf
                | UnaryOp::Softplus => {
                    let code = self
                        .b
                        .ins()
                        .iconst(I32, super::super::runtime::unary_code(u) as i64);
                    let f = self.helpers.unary_f64;
                    self.call_helper(f, &[code, x])
                }
            },
            // Shape rules allow only the ops whose props say `on_i32` (neg, abs) on integers.
            DType::I32 | DType::I64 | DType::Bool => match u {
                UnaryOp::Abs => self.b.ins().iabs(x),
                UnaryOp::Neg => self.b.ins().ineg(x),
                UnaryOp::Exp
                | UnaryOp::Log
                | UnaryOp::Sqrt
                | UnaryOp::Recip
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid
                | UnaryOp::Erf
                | UnaryOp::Softplus => unreachable!("{} is not defined on {dt}", u.name()),
            },
            // Storage dtypes: the shape rules refuse arithmetic on them (`infer::compute`), so
            // fusion never puts a unary op of one in a kernel.
            DType::I8 | DType::U8 | DType::F16 | DType::BF16 => {
                unreachable!("{} is not defined on {dt}", u.name())
            }
        }
    }
}
