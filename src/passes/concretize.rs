//! `concretize`: makes every shape concrete once the batch size is known.
//!
//! Replaces each `?` with the batch size and each `size` op whose input shape is then known by
//! a constant. Later passes (fusion, memory planning) and the code generator rely on concrete
//! shapes; the passes before them work either way.

use super::{Pass, PassOptions, Program};
use crate::array::{Array, ConstValue};
use crate::error::Result;
use crate::graph::op::Op;
use crate::shape::Shape;
use std::sync::Arc;

/// See the module docs.
pub struct Concretize;

impl Pass for Concretize {
    fn name(&self) -> &str {
        "concretize"
    }

    fn run(&self, p: &mut Program, opts: &PassOptions) -> Result<bool> {
        let mut changed = false;
        for id in p.graph.ids() {
            let (op, ty) = p.graph.node_mut_parts(id);
            if let Some(b) = opts.batch {
                if ty.shape.has_batch() {
                    ty.shape = Shape::fixed(&ty.shape.resolve(b));
                    changed = true;
                }
            }
            if let Op::Size { axes } = op {
                let axes = axes.clone();
                let dtype = ty.dtype;
                let input = p.graph.node(id).inputs[0];
                let in_shape = &p.graph.node(input).ty.shape;
                let dims: Option<Vec<usize>> =
                    axes.iter().map(|&a| in_shape.dims()[a].fixed()).collect();
                if let Some(dims) = dims {
                    let n: usize = dims.iter().product();
                    let value = Array::from_f64(dtype, vec![], vec![n as f64]);
                    let (op, _) = p.graph.node_mut_parts(id);
                    *op = Op::Constant(ConstValue(Arc::new(value)));
                    p.graph.clear_inputs(id);
                    changed = true;
                }
            }
        }
        Ok(changed)
    }
}
