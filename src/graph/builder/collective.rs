//! The builder of the collective op: `Graph::all_reduce` (see `crate::dist` for what it
//! computes and in which order).

use crate::graph::op::Op;
use crate::graph::{Graph, Tensor};

impl Graph {
    /// The sum of `parts` over every process of the distributed world ([`crate::dist`]), in
    /// one fixed order: rank 0's parts first to last, then rank 1's, …, folded left to right.
    /// So the result depends on the total number of parts, not on how they are spread over
    /// processes: one process holding all four micro-shard gradients and four processes
    /// holding one each get the same bits. Every part has one type (`f32` or `f64`); the
    /// result has it too. In a one-process world it is the ordered sum of `parts`.
    ///
    /// Its gradient with respect to each part is the `all_reduce` of the output's gradient
    /// (the sum over ranks of each rank's loss), as for JAX's `psum`.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let a = g.placeholder("a", DType::F32, [2]);
    /// let b = g.placeholder("b", DType::F32, [2]);
    /// let s = g.all_reduce(&[a, b]);
    /// let mut sess = Session::new(&g)?;
    /// let out = sess.run(&[s], &[(a, Array::new([2], vec![1.0f32, 2.0])?),
    ///                           (b, Array::new([2], vec![10.0f32, 20.0])?)])?;
    /// assert_eq!(out[0].to_vec::<f32>()?, vec![11.0, 22.0]); // one process
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[track_caller]
    pub fn all_reduce<'g>(&'g self, parts: &[Tensor<'g>]) -> Tensor<'g> {
        if parts.is_empty() {
            return self.fail("all_reduce", "needs at least one operand".into());
        }
        self.push(Op::AllReduce, parts, None, None)
    }
}

impl<'g> Tensor<'g> {
    /// `all_reduce` of this one tensor: its sum over every process, in rank order.
    #[track_caller]
    pub fn all_reduce(self) -> Tensor<'g> {
        self.graph.all_reduce(&[self])
    }
}
