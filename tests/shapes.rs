//! Broadcasting and shape rules, checked against numpy's documented behaviour.
//!
//! Each expected case below is what `numpy.broadcast_shapes(a, b)` returns (or raises) for the
//! same fixed shapes; the `?` cases are kiln's own rule for its one batch symbol.

use kiln::prelude::*;
use kiln::shape::{broadcast_shapes, normalize_axes};

fn s(dims: &[i64]) -> Shape {
    Shape::from(
        dims.iter()
            .map(|&d| {
                if d < 0 {
                    Dim::Batch
                } else {
                    Dim::Fixed(d as usize)
                }
            })
            .collect::<Vec<_>>(),
    )
}

#[test]
fn broadcast_matches_numpy() {
    // (a, b, numpy.broadcast_shapes(a, b))
    let cases: &[(&[i64], &[i64], &[i64])] = &[
        (&[], &[], &[]),
        (&[], &[3], &[3]),
        (&[3], &[], &[3]),
        (&[1], &[3], &[3]),
        (&[2, 3], &[3], &[2, 3]),
        (&[2, 3], &[1, 3], &[2, 3]),
        (&[2, 1], &[1, 3], &[2, 3]),
        (&[2, 1], &[3], &[2, 3]),
        (&[8, 1, 6, 1], &[7, 1, 5], &[8, 7, 6, 5]),
        (&[5, 4], &[1], &[5, 4]),
        (&[15, 3, 5], &[15, 1, 5], &[15, 3, 5]),
        (&[15, 3, 5], &[3, 1], &[15, 3, 5]),
        (&[0], &[1], &[0]),
        (&[0, 3], &[3], &[0, 3]),
        (&[1, 1], &[1], &[1, 1]),
        // kiln's batch symbol: ? matches ? and stretches 1.
        (&[-1, 3], &[3], &[-1, 3]),
        (&[-1, 3], &[-1, 1], &[-1, 3]),
        (&[-1, 1], &[1, 5], &[-1, 5]),
        (&[-1], &[-1], &[-1]),
    ];
    for (a, b, want) in cases {
        let got = broadcast_shapes(&s(a), &s(b)).unwrap();
        assert_eq!(got, s(want), "{a:?} with {b:?}");
        // Broadcasting is symmetric.
        assert_eq!(
            broadcast_shapes(&s(b), &s(a)).unwrap(),
            s(want),
            "{b:?} with {a:?}"
        );
    }
}

#[test]
fn broadcast_refusals_match_numpy() {
    // numpy raises "shape mismatch" for each of these.
    let cases: &[(&[i64], &[i64])] = &[
        (&[3], &[4]),
        (&[2, 1], &[8, 4, 3]),
        (&[2, 3], &[2]),
        (&[0], &[2]),
        // kiln: ? against a fixed size other than 1 holds for one batch size only.
        (&[-1, 3], &[4, 3]),
    ];
    for (a, b) in cases {
        assert!(
            broadcast_shapes(&s(a), &s(b)).is_err(),
            "{a:?} with {b:?} should fail"
        );
    }
}

#[test]
fn binary_ops_insert_broadcasts() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let b = g.placeholder("b", DType::F32, [3]);
    let y = x + b;
    assert_eq!(y.shape(), s(&[-1, 3]));
    let z = y * 2.0;
    assert_eq!(z.shape(), s(&[-1, 3]));
    g.check().unwrap();
    // The add's operands have identical shapes: the bias went through broadcast_to.
    let d = g.data();
    let add = d.node(y.id());
    for &i in &add.inputs {
        assert_eq!(d.node(i).ty.shape, s(&[-1, 3]));
    }
}

#[test]
fn reductions_and_movement_shapes() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(4), Some(5)]);
    assert_eq!(x.sum(&[1], false).shape(), s(&[-1, 5]));
    assert_eq!(x.sum(&[1], true).shape(), s(&[-1, 1, 5]));
    assert_eq!(x.max(&[-1, 0], false).shape(), s(&[4]));
    assert_eq!(x.reshape(Shape::batch(&[20])).shape(), s(&[-1, 20]));
    assert_eq!(x.flatten().shape(), s(&[-1, 20]));
    assert_eq!(x.permute(&[2, 0, 1]).shape(), s(&[5, -1, 4]));
    assert_eq!(x.transpose().shape(), s(&[-1, 5, 4]));
    assert_eq!(x.narrow(2, 1, 3).shape(), s(&[-1, 4, 3]));
    assert_eq!(x.pad(&[0, 1, 0], &[0, 2, 3]).shape(), s(&[-1, 7, 8]));
    let w = g.variable("w", [4, 5, 6], init::zeros());
    assert_eq!(w.narrow(0, 0, 2).shape(), s(&[2, 5, 6]));
    assert_eq!(g.concat(&[w, w], 0).shape(), s(&[8, 5, 6]));
    let a = g.placeholder("a", DType::F32, [None, Some(8)]);
    let k = g.variable("k", [8, 2], init::zeros());
    assert_eq!(a.matmul(k).shape(), s(&[-1, 2]));
    // Contracting over the batch axis, as weight gradients do.
    assert_eq!(a.transpose().matmul(a).shape(), s(&[8, 8]));
    let bt = g.variable("bt", [3, 4, 5], init::zeros());
    let bu = g.variable("bu", [3, 5, 2], init::zeros());
    assert_eq!(bt.matmul(bu).shape(), s(&[3, 4, 2]));
    assert_eq!(x.mean(&[0], false).shape(), s(&[4, 5]));
    assert_eq!(a.argmax(-1).shape(), s(&[-1]));
    assert_eq!(a.argmax(-1).dtype(), DType::I32);
    let y = g.placeholder("y", DType::I32, [None]);
    assert_eq!(y.one_hot(10).shape(), s(&[-1, 10]));
    assert_eq!(
        a.sparse_softmax_cross_entropy_with_logits(y).shape(),
        s(&[-1])
    );
    g.check().unwrap();
}

#[test]
fn axes_normalize() {
    assert_eq!(normalize_axes(&[-1, 0], 3).unwrap(), vec![0, 2]);
    assert!(normalize_axes(&[3], 3).is_err());
    assert!(normalize_axes(&[-4], 3).is_err());
    assert!(normalize_axes(&[1, -2], 3).is_err());
}

#[test]
fn reshape_respects_the_batch_symbol() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(28), Some(28)]);
    x.reshape(Shape::batch(&[784]));
    g.check().unwrap();
    // [?,784] cannot become [784]: that holds for batch size 1 only.
    x.reshape([784]);
    assert!(g.check().is_err());
}
