//! Tile math (`vmath.rs`, `codegen/tiled.rs`) against the Cranelift polynomials of
//! `math.rs`: the two code paths must give bitwise the same results, which is what keeps
//! results independent of the thread count and of the CPU. (The JIT as a whole is tested
//! against the interpreter in `tests/jit.rs`.)

use super::codegen::tiled::{Plan, TILE};
use super::{vmath, Executable};
use crate::array::Array;
use crate::dtype::DType;
use crate::graph::{Graph, Tensor};
use crate::kernel::{Body, Expr, IndexMap};
use crate::passes::{Pipeline, Program};

/// Runs `fetch` of `g` compiled with and without tile math on `feeds` (by placeholder
/// name) and asserts bitwise equal results (NaN matching NaN).
fn same_both_ways(g: &Graph, fetch: Tensor<'_>, feeds: &[(&str, Array)], what: &str) {
    let mut p = Program::new(g.snapshot(), vec![fetch.id()]);
    Pipeline::default().run(&mut p).unwrap();
    let run = |tile: bool| {
        let exe = Executable::compile_with(&p, tile).unwrap();
        let tiled = exe.compile_times().tiled;
        assert_eq!(tiled > 0, tile, "{what}: {tiled} tiled kernel(s)");
        let args: Vec<&Array> = exe
            .placeholders()
            .iter()
            .map(|(id, _)| {
                let name = p.graph.node(*id).name.clone().expect("named");
                &feeds.iter().find(|(n, _)| *n == &*name).expect("fed").1
            })
            .collect();
        exe.run(&args, &[], 0).unwrap().remove(0)
    };
    let (tiled, plain) = (run(true), run(false));
    let (t, q) = (
        tiled.to_vec::<f32>().unwrap(),
        plain.to_vec::<f32>().unwrap(),
    );
    assert_eq!(t.len(), q.len());
    for (i, (a, b)) in t.iter().zip(&q).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what}[{i}]: tiled {a:e} vs Cranelift {b:e}"
        );
    }
}

/// Every 4099th f32 bit pattern (all signs, exponents and both NaN kinds) plus edge values;
/// the length is not a multiple of 4 or of a tile, so rows end in a partial tile and a
/// scalar tail.
fn sweep() -> Vec<f32> {
    let mut v: Vec<f32> = (0..u32::MAX / 4099)
        .map(|i| f32::from_bits(i * 4099))
        .collect();
    v.extend([
        0.0,
        -0.0,
        f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        88.72,
        -103.9,
        0.625,
        -0.625,
    ]);
    assert!(!v.len().is_multiple_of(4) && !v.len().is_multiple_of(TILE as usize));
    v
}

#[test]
fn tile_functions_are_bitwise_the_cranelift_polynomials() {
    if !vmath::available() {
        eprintln!("no AVX2+FMA here: tile math is never used, nothing to compare");
        return;
    }
    let xs = sweep();
    type Op1 = fn(Tensor<'_>) -> Tensor<'_>;
    let cases: [(&str, Op1); 4] = [
        ("exp", |x| x.exp()),
        ("log", |x| x.log()),
        ("tanh", |x| x.tanh()),
        ("sigmoid", |x| x.sigmoid()),
    ];
    for (name, f) in cases {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [xs.len()]);
        let feeds = [("x", Array::new([xs.len()], xs.clone()).unwrap())];
        same_both_ways(&g, f(x), &feeds, name);
    }
}

/// Bodies that cross passes in every way the plan allows: a value used by two passes, a
/// mask kept across a call, nested calls, one tile feeding three calls, a broadcast operand,
/// rows that end in a partial tile, and a matrix product's epilogue run in place.
#[test]
fn tiled_bodies_match_untiled_bitwise() {
    if !vmath::available() {
        return;
    }
    let ramp = |n: usize, scale: f32, period: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i % period) as f32 / period as f32 - 0.5) * scale)
            .collect()
    };
    type Build = for<'g> fn(&'g Graph) -> Tensor<'g>;
    let (rows, cols) = (5, 603);
    let cases: [(&str, Build); 6] = [
        ("sigmoid(a*b+c)*tanh(a)", |g| {
            let [a, b, c] = abc(g);
            (a * b + c).sigmoid() * a.tanh()
        }),
        ("where(a>0, exp(a), a*b) + a*b", |g| {
            let [a, b, _] = abc(g);
            let ab = a * b;
            a.greater(0.0).select(a.exp(), ab) + ab
        }),
        ("tanh(exp(a)) - log(abs(b)+1)", |g| {
            let [a, b, _] = abc(g);
            a.exp().tanh() - (b.abs() + 1.0).log()
        }),
        ("sigmoid(a + bias)", |g| {
            let [a, _, _] = abc(g);
            let bias = g.placeholder("bias", DType::F32, [603]);
            (a + bias).sigmoid()
        }),
        ("exp(a) * tanh(a) + sigmoid(a)", |g| {
            let [a, _, _] = abc(g);
            a.exp() * a.tanh() + a.sigmoid()
        }),
        ("tanh(a @ w + bias)", |g| {
            let [a, _, _] = abc(g);
            let w = g.placeholder("w", DType::F32, [603, 300]);
            let bias = g.placeholder("bias300", DType::F32, [300]);
            (a.matmul(w) + bias).tanh()
        }),
    ];
    fn abc(g: &Graph) -> [Tensor<'_>; 3] {
        ["a", "b", "c"].map(|n| g.placeholder(n, DType::F32, [5, 603]))
    }
    let feeds = [
        (
            "a",
            Array::new([rows, cols], ramp(rows * cols, 8.0, 1009)).unwrap(),
        ),
        (
            "b",
            Array::new([rows, cols], ramp(rows * cols, 2.0, 997)).unwrap(),
        ),
        (
            "c",
            Array::new([rows, cols], ramp(rows * cols, 1.0, 991)).unwrap(),
        ),
        ("bias", Array::new([cols], ramp(cols, 3.0, 101)).unwrap()),
        (
            "w",
            Array::new([cols, 300], ramp(cols * 300, 0.1, 331)).unwrap(),
        ),
        ("bias300", Array::new([300], ramp(300, 3.0, 37)).unwrap()),
    ];
    for (what, build) in cases {
        let g = Graph::new();
        let y = build(&g);
        same_both_ways(&g, y, &feeds, what);
    }
}

#[test]
fn plan_keeps_only_what_crosses_a_pass() {
    // sigmoid(a*b+c) * tanh(a): loads a, b, c; then a*b, +c, sigmoid, tanh, product.
    let load = |param| Expr::Load {
        param,
        map: IndexMap::strided(0, &[1]),
    };
    use crate::graph::op::{BinaryOp as B, UnaryOp as U};
    let body = Body {
        domain: vec![1000],
        exprs: vec![
            (load(0), DType::F32),                    // 0 a
            (load(1), DType::F32),                    // 1 b
            (load(2), DType::F32),                    // 2 c
            (Expr::Binary(B::Mul, 0, 1), DType::F32), // 3
            (Expr::Binary(B::Add, 3, 2), DType::F32), // 4
            (Expr::Unary(U::Sigmoid, 4), DType::F32), // 5
            (Expr::Unary(U::Tanh, 0), DType::F32),    // 6
            (Expr::Binary(B::Mul, 5, 6), DType::F32), // 7
        ],
    };
    let plan = Plan::of(&body).expect("has transcendentals");
    // Tiles: a (tanh's operand), a*b+c (sigmoid's), and the two results; a*b stays in a
    // register, and so do b and c.
    assert_eq!(plan.kept(), vec![0, 4, 5, 6]);
    assert_eq!(plan.levels(), &[0, 0, 0, 0, 0, 1, 1, 1]);
    assert_eq!(plan.bytes(), 4 * TILE as u32 * 4);
    // No transcendental: no plan.
    let cheap = Body {
        domain: vec![8],
        exprs: vec![(load(0), DType::F32), (Expr::Unary(U::Neg, 0), DType::F32)],
    };
    assert!(Plan::of(&cheap).is_none());
}

/// Every op whose props name a tile function has it in `vmath::ENTRIES` (on x86_64, where
/// the entries exist), and every entry is some op's: the props table and the tile table
/// cannot drift apart.
#[test]
fn props_tile_names_match_the_tile_table() {
    use crate::graph::op::UnaryOp;
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    for &u in UnaryOp::ALL {
        if let Some(name) = u.props().tile {
            assert!(
                vmath::index(u).is_some(),
                "{name} of {u:?} is not in vmath::ENTRIES"
            );
            assert!(
                u.props().vectorizable,
                "{u:?} has a tile function but is not vectorizable"
            );
        }
    }
    for (name, _) in vmath::ENTRIES {
        assert!(
            UnaryOp::ALL.iter().any(|u| u.props().tile == Some(name)),
            "{name} belongs to no op"
        );
    }
}

/// Every unary op keeps the sign of zero (and of the tiniest subnormals) as its `f64`
/// reference does, on the Cranelift path (vector lanes and scalar tail) and on the tile path:
/// fuzz finding F3 was `tanh(-0) = +0` on the JIT. The exhaustive `match` makes a new op
/// join the check.
#[test]
fn unary_ops_keep_the_sign_of_zero() {
    use crate::graph::op::UnaryOp;
    fn apply(u: UnaryOp, x: Tensor<'_>) -> Tensor<'_> {
        match u {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.log(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Recip => x.recip(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sigmoid => x.sigmoid(),
            UnaryOp::Erf => x.erf(),
            UnaryOp::Softplus => x.softplus(),
        }
    }
    let tiny = f32::from_bits(1);
    // -0 in vector lanes and in the scalar tail (11 elements: two f32x4 and three more).
    let xs = vec![
        -0.0, 0.0, -tiny, tiny, -0.0, -0.0, -1e-30, 1e-30, -0.0, 0.0, -0.0,
    ];
    for &u in UnaryOp::ALL {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [xs.len()]);
        let y = apply(u, x);
        let mut p = Program::new(g.snapshot(), vec![y.id()]);
        Pipeline::default().run(&mut p).unwrap();
        let tiles: &[bool] = if vmath::available() && u.props().tile.is_some() {
            &[false, true]
        } else {
            &[false]
        };
        for &tile in tiles {
            let exe = Executable::compile_with(&p, tile).unwrap();
            let input = Array::new([xs.len()], xs.clone()).unwrap();
            let out = exe.run(&[&input], &[], 0).unwrap().remove(0);
            for (&x, r) in xs.iter().zip(out.to_vec::<f32>().unwrap()) {
                let want = (u.props().f64)(x as f64) as f32;
                let ok = if want.is_nan() {
                    r.is_nan()
                } else if want == 0.0 {
                    r.to_bits() == want.to_bits()
                } else {
                    r.is_sign_negative() == want.is_sign_negative() && r != 0.0
                };
                assert!(ok, "{u:?}({x:e}) (tile {tile}): {r:e}, want {want:e}");
            }
        }
    }
}
