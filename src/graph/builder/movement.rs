//! The reduction, movement and contraction builder methods: sum, max, size, reshape,
//! permute, transpose, broadcast_to, slice, narrow, pad, matmul (a second `impl Tensor`
//! block, kept apart so that each file stays readable).

use super::Tensor;
use crate::graph::op::{Axes, Op, ReduceOp, Ty};
use crate::shape::{normalize_axes, Dim, Shape};

impl<'g> Tensor<'g> {
    #[track_caller]
    fn reduce(self, op: ReduceOp, axes: &[isize], keepdims: bool) -> Tensor<'g> {
        match normalize_axes(axes, self.rank()) {
            Ok(a) => self.graph.push(
                Op::Reduce {
                    op,
                    axes: a.into_iter().collect(),
                    keepdims,
                },
                &[self],
                None,
                None,
            ),
            Err(m) => self
                .graph
                .fail(op.name(), format!("{m} of {}", self.desc())),
        }
    }

    /// Sum over `axes` (negative axes count from the end).
    #[track_caller]
    pub fn sum(self, axes: &[isize], keepdims: bool) -> Tensor<'g> {
        self.reduce(ReduceOp::Sum, axes, keepdims)
    }

    /// Maximum over `axes`.
    #[track_caller]
    pub fn max(self, axes: &[isize], keepdims: bool) -> Tensor<'g> {
        self.reduce(ReduceOp::Max, axes, keepdims)
    }

    /// Sum of all elements, as a scalar.
    #[track_caller]
    pub fn sum_all(self) -> Tensor<'g> {
        let axes: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&axes, false)
    }

    /// The product of the sizes of `axes`, as a float scalar (known when the graph runs).
    #[track_caller]
    pub fn size(self, axes: &[isize]) -> Tensor<'g> {
        match normalize_axes(axes, self.rank()) {
            Ok(a) => self.graph.push(
                Op::Size {
                    axes: a.into_iter().collect(),
                },
                &[self],
                None,
                None,
            ),
            Err(m) => self.graph.fail("size", format!("{m} of {}", self.desc())),
        }
    }

    /// Same elements, new shape. The shape may contain `?` where the input has it.
    #[track_caller]
    pub fn reshape(self, shape: impl Into<Shape>) -> Tensor<'g> {
        let dtype = self.dtype();
        self.graph.push(
            Op::Reshape,
            &[self],
            Some(Ty {
                dtype,
                shape: shape.into(),
            }),
            None,
        )
    }

    /// Permutes axes: output axis `i` is input axis `perm[i]`.
    #[track_caller]
    pub fn permute(self, perm: &[usize]) -> Tensor<'g> {
        self.graph.push(
            Op::Permute(perm.iter().copied().collect()),
            &[self],
            None,
            None,
        )
    }

    /// Swaps the last two axes.
    #[track_caller]
    pub fn transpose(self) -> Tensor<'g> {
        let r = self.rank();
        if r < 2 {
            return self.graph.fail(
                "permute",
                format!("transpose needs rank >= 2, got {}", self.desc()),
            );
        }
        let mut p: Vec<usize> = (0..r).collect();
        p.swap(r - 2, r - 1);
        self.permute(&p)
    }

    /// Numpy broadcast to `shape`; returns `self` when the shape already matches.
    #[track_caller]
    pub fn broadcast_to(self, shape: impl Into<Shape>) -> Tensor<'g> {
        let shape = shape.into();
        let ty = self.ty();
        if ty.shape == shape {
            return self;
        }
        self.graph.push(
            Op::BroadcastTo,
            &[self],
            Some(Ty {
                dtype: ty.dtype,
                shape,
            }),
            None,
        )
    }

    /// The box starting at `begin` with sizes `size` (a `?` axis must be taken whole).
    #[track_caller]
    pub fn slice(self, begin: &[usize], size: impl Into<Shape>) -> Tensor<'g> {
        let dtype = self.dtype();
        let op = Op::Slice {
            begin: begin.iter().copied().collect(),
        };
        self.graph.push(
            op,
            &[self],
            Some(Ty {
                dtype,
                shape: size.into(),
            }),
            None,
        )
    }

    /// `len` elements of `axis` starting at `start`, all of the other axes.
    #[track_caller]
    pub fn narrow(self, axis: isize, start: usize, len: usize) -> Tensor<'g> {
        let shape = self.shape();
        match normalize_axes(&[axis], shape.rank()) {
            Ok(a) => {
                let mut begin = vec![0; shape.rank()];
                begin[a[0]] = start;
                let mut size = shape.0.clone();
                size[a[0]] = Dim::Fixed(len);
                self.slice(&begin, Shape(size))
            }
            Err(m) => self.graph.fail("slice", format!("{m} of {}", self.desc())),
        }
    }

    /// Zero padding: `lo[i]` elements before and `hi[i]` after axis `i`.
    #[track_caller]
    pub fn pad(self, lo: &[usize], hi: &[usize]) -> Tensor<'g> {
        let op = Op::Pad {
            lo: lo.iter().copied().collect::<Axes>(),
            hi: hi.iter().copied().collect(),
        };
        self.graph.push(op, &[self], None, None)
    }

    /// Matrix product over the last two axes (leading axes are batch axes and must match).
    #[track_caller]
    pub fn matmul(self, rhs: Tensor<'g>) -> Tensor<'g> {
        self.graph.push(Op::MatMul, &[self, rhs], None, None)
    }
}
