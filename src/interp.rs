//! The reference interpreter (placeholder).
use crate::array::Array;
use crate::error::Result;
use crate::graph::{Graph, Tensor};
/// Precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32
    F32,
    /// f64
    F64,
}
/// Interpreter.
pub struct Interpreter {}
impl Interpreter {
    /// New.
    pub fn new(_g: &Graph) -> Result<Interpreter> {
        Ok(Interpreter {})
    }
    /// Run.
    pub fn run(&mut self, _f: &[Tensor<'_>], _feeds: &[(Tensor<'_>, Array)]) -> Result<Vec<Array>> {
        todo!()
    }
}
