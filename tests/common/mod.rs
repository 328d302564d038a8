//! Helpers shared by the integration tests: a tiny deterministic generator, random inputs
//! and random graphs.
#![allow(dead_code)]

use kiln::graph::NodeId;
use kiln::prelude::*;
use std::collections::HashMap;

/// A small deterministic generator (xorshift), so the tests need no extra crates.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    }
}

pub fn random_array(rng: &mut Rng, shape: &[usize], dtype: DType) -> Array {
    let n: usize = shape.iter().product();
    match dtype {
        DType::I32 => Array::new(
            shape,
            (0..n).map(|_| rng.below(4) as i32).collect::<Vec<_>>(),
        )
        .unwrap(),
        _ => Array::new(shape, (0..n).map(|_| rng.f32()).collect::<Vec<_>>()).unwrap(),
    }
}

/// Random feeds for every placeholder and random values for every variable.
pub fn inputs(
    g: &Graph,
    batch: usize,
    seed: u64,
) -> (Vec<(NodeId, Array)>, HashMap<NodeId, Array>) {
    let mut rng = Rng(seed | 1);
    let d = g.data();
    let feeds = d
        .placeholders()
        .into_iter()
        .map(|id| {
            let t = &d.node(id).ty;
            (id, random_array(&mut rng, &t.shape.resolve(batch), t.dtype))
        })
        .collect();
    let vars = d
        .variables()
        .into_iter()
        .map(|id| {
            let t = &d.node(id).ty;
            (id, random_array(&mut rng, &t.shape.resolve(batch), t.dtype))
        })
        .collect();
    (feeds, vars)
}

/// A random forward graph over `x: f32[?,n]`.
pub fn random_graph(seed: u64) -> (Graph, Vec<NodeId>) {
    random_graph_of(seed, 20)
}

/// [`random_graph`] with movement ops at random positions too: pads, concats, slices and
/// transposes around computed values (each keeps its operand's shape, so the graph stays
/// well typed), and fetched views.
pub fn random_view_graph(seed: u64) -> (Graph, Vec<NodeId>) {
    random_graph_of(seed, 26)
}

/// A random graph whose ops are drawn from the first `kinds` cases below.
fn random_graph_of(seed: u64, kinds: usize) -> (Graph, Vec<NodeId>) {
    let g = Graph::new();
    let mut rng = Rng(seed * 2654435761 + 1);
    let n = [1, 3, 4, 5][rng.below(4)];
    let x = g.placeholder("x", DType::F32, [None, Some(n)]);
    let b = g.variable("b", [n], init::zeros());
    let c = g.placeholder("c", DType::F32, [None, Some(1)]);
    let mut pool = vec![x, b, c];
    let ops = 6 + rng.below(10);
    for k in 0..ops {
        let a = pool[rng.below(pool.len())];
        let other = pool[rng.below(pool.len())];
        let last = a.rank().saturating_sub(1);
        let width = match a.shape().dims().last() {
            Some(Dim::Fixed(w)) => *w,
            _ => 1,
        };
        let (cut, shift) = (rng.below(width + 1), rng.below(3));
        let t = match rng.below(kinds) {
            0 => a.exp().minimum(10.0),
            1 => a.tanh(),
            2 => a.sigmoid(),
            3 => -(-a),
            4 => a * 1.0,
            5 => a + other,
            6 => a * other,
            7 => a - other * 0.5,
            8 => a / 2.0,
            9 => a.abs().sqrt(),
            10 => a.relu(),
            11 => a.greater(other).select(a, other),
            12 => a.maximum(other),
            13 if a.rank() == 2 => a.sum(&[1], true),
            14 if a.rank() == 2 => a.max(&[1], true) - a,
            15 if a.rank() == 2 && a.shape().dims()[1] == Dim::Fixed(n) => {
                let w = g.variable(&format!("w{k}"), [n, n], init::zeros());
                a.matmul(w)
            }
            16 if a.rank() == 2 && a.shape().dims()[1] == Dim::Fixed(n) => a.softmax(-1),
            17 => a.transpose_if_2d().transpose_if_2d(),
            18 => a + (-0.0),
            // Movement ops (only with kinds > 20): each result has `a`'s shape.
            20 if a.rank() >= 1 => {
                // Shifted by a pad and a slice: zeros enter on one side.
                let (mut lo, mut hi) = (vec![0; a.rank()], vec![0; a.rank()]);
                (lo[last], hi[last]) = (2, 2);
                a.pad(&lo, &hi).narrow(-1, shift * 2, width)
            }
            21 if a.rank() >= 1 => g.concat(
                &[a.narrow(-1, 0, cut), (-a).narrow(-1, cut, width - cut)],
                -1,
            ),
            22 => (a.transpose_if_2d() * 3.0).transpose_if_2d(),
            23 if a.rank() >= 1 => {
                g.concat(
                    &[
                        (a * -0.0).narrow(-1, 0, cut),
                        a.narrow(-1, cut, width - cut),
                    ],
                    -1,
                ) + other
            }
            24 => a.transpose_if_2d().exp().transpose_if_2d(),
            25 if a.rank() == 2 => a.sum(&[1], true).broadcast_to(a.shape()),
            _ => a.square() + 1.0,
        };
        if g.check().is_ok() {
            pool.push(t);
        } else {
            return random_graph_of(seed + 1000, kinds);
        }
    }
    let k = 1 + rng.below(3);
    let outs: Vec<NodeId> = pool.iter().rev().take(k).map(|t| t.id()).collect();
    (g, outs)
}

pub trait T2 {
    fn transpose_if_2d(self) -> Self;
}
impl T2 for Tensor<'_> {
    fn transpose_if_2d(self) -> Self {
        if self.rank() == 2 {
            self.transpose()
        } else {
            self
        }
    }
}

/// Asserts that the session's last JIT compile runs every compute node natively (a kernel,
/// a `gemm`, a copy or alias, a random fill): the JIT has no other way to run an op, and
/// this keeps it so.
pub fn assert_native(s: &Session, what: &str) {
    let t = s
        .last_compile_times()
        .unwrap_or_else(|| panic!("{what}: no JIT compile"));
    assert!(t.steps.covers_every_node(), "{what}: {:?}", t.steps);
}
