//! `concretize`: makes every shape concrete once the batch size is known, and every fixed
//! feed a constant.
//!
//! Replaces each `?` with the batch size and each `size` op whose input shape is then known by
//! a constant. Later passes (fusion, memory planning) and the code generator rely on concrete
//! shapes; the passes before them work either way.
//!
//! It also replaces each placeholder named in [`PassOptions::fixed_feeds`] by a constant
//! holding its value: the same move as the batch size, for values. A session fixes the `bool`
//! scalars it is fed (a model's `training` switch), so `where(training, a, b)` meets a
//! constant condition and [`super::simplify`] keeps only the selected branch; [`super::dce`]
//! then drops the other one (dropout's random fill, batch normalization's statistics). A
//! fixed value whose dtype or shape is not its placeholder's is refused, since the program
//! would otherwise compute with a value that no run could feed.

use super::{Pass, PassOptions, Program};
use crate::array::{Array, ConstValue};
use crate::error::{Error, Result};
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
        let mut changed = fix_feeds(p, opts)?;
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

/// Turns each placeholder of [`PassOptions::fixed_feeds`] that the program holds into a
/// constant of its value (a fixed feed the program does not read is ignored).
fn fix_feeds(p: &mut Program, opts: &PassOptions) -> Result<bool> {
    let mut changed = false;
    for (id, value) in &opts.fixed_feeds {
        let Some(n) = p.graph.get(*id) else { continue };
        if n.op != Op::Placeholder {
            return Err(Error::invalid(format!(
                "concretize: fixed feed {} is not a placeholder",
                n.label()
            )));
        }
        let fits = n.ty.dtype == value.dtype()
            && n.ty.shape.rank() == value.shape().len()
            && n.ty.shape.dims().iter().zip(value.shape()).all(|(d, &k)| {
                // An open dimension takes the batch size, if this compile has one.
                d.fixed().or(opts.batch).is_none_or(|want| want == k)
            });
        if !fits {
            return Err(Error::invalid(format!(
                "concretize: fixed feed {} of type {} cannot hold a {}{:?}",
                n.label(),
                n.ty,
                value.dtype(),
                value.shape()
            )));
        }
        let (op, _) = p.graph.node_mut_parts(*id);
        *op = Op::Constant(ConstValue(Arc::new(value.clone())));
        changed = true;
    }
    Ok(changed)
}
