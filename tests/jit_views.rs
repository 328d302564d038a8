//! Views, pads and concats on the JIT: a fetched view of computed values compiles to
//! kernels (issue 15 measured such fetches running on the interpreter), and pad and concat
//! copy bits exactly as the interpreter does, -0.0 and NaN payloads included.

mod common;

use common::*;
use kiln::prelude::*;

fn random_f32(rng: &mut Rng, shape: &[usize]) -> Array {
    let n: usize = shape.iter().product();
    Array::new(shape, (0..n).map(|_| rng.f32()).collect::<Vec<_>>()).unwrap()
}

/// The measured cases: a fetched view of computed values compiles to kernels that
/// compute its producers (no host step), and equals the interpreter bit for bit where the
/// arithmetic is exact.
#[test]
fn fetched_views_compile_to_kernels() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [Some(30), Some(20)]);
    let w = g.placeholder("w", DType::F32, [Some(30), Some(20)]);
    let exact = x * 2.0 + 1.0;
    let loss = x.transpose().matmul(w).tanh().sum(&[0, 1], false);
    let gx = grad(loss, &[x]).unwrap()[0];
    let mut rng = Rng(5);
    let feeds = [
        (x, random_f32(&mut rng, &[30, 20])),
        (w, random_f32(&mut rng, &[30, 20])),
    ];
    // (what, fetch, kernels, gemm calls)
    let cases = [
        ("exp(x)*2 transposed", (x.exp() * 2.0).transpose(), 1, 0),
        ("transpose", exact.transpose(), 1, 0),
        ("slice", exact.narrow(0, 3, 7), 1, 0),
        (
            "broadcast_to",
            exact.max(&[0], true).broadcast_to([Some(30), Some(20)]),
            2,
            0,
        ),
        ("reshape", exact.reshape([Some(600)]), 1, 0),
        ("pad", exact.pad(&[1, 0], &[2, 3]), 2, 0),
        ("concat", g.concat(&[exact, x.abs()], 0), 3, 0),
        ("grad of sum(tanh(x^T w))", gx, 2, 2),
    ];
    for (what, y, kernels, gemm) in cases {
        let mut jit = Session::new(&g).unwrap();
        let got = jit.run(&[y], &feeds).unwrap();
        assert_native(&jit, what);
        let steps = jit.last_compile_times().unwrap().steps;
        assert!(
            steps.kernels <= kernels && steps.kernels + steps.gemm >= 1 && steps.gemm == gemm,
            "{what}: {steps:?}"
        );
        if what.contains("exp") || what.contains("grad") {
            continue; // transcendental: within ulps, checked elsewhere
        }
        let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
        let want = interp.run(&[y], &feeds).unwrap();
        assert!(got[0].bits_eq(&want[0]), "{what}");
    }
}

/// Pad and concat copy bits: -0.0 stays -0.0, NaN payloads survive, padding is +0.0, and
/// empty operands work, alone and folded into each other and into views.
#[test]
fn pad_and_concat_copy_bits() {
    let specials = [
        -0.0f32,
        0.0,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0xffc0_0042),
        f32::INFINITY,
        -1.5,
    ];
    for (rows, cols) in [(2usize, 3usize), (0, 3), (2, 0), (1, 1)] {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [Some(rows), Some(cols)]);
        let y = g.placeholder("y", DType::F32, [Some(rows), Some(2)]);
        let z = g.placeholder("z", DType::F32, [Some(1), Some(cols)]);
        let outs = [
            x.pad(&[1, 0], &[0, 2]),
            x.pad(&[0, 0], &[0, 0]),
            g.concat(&[x, y], 1),
            g.concat(&[y, x, y], -1),
            g.concat(&[x, z], 0),
            g.concat(&[x.pad(&[0, 1], &[0, 1]), y], 1),
            g.concat(&[x, y], 1).pad(&[1, 1], &[1, 1]),
            g.concat(&[x, y], 1).transpose(),
            x.pad(&[2, 1], &[0, 1]).narrow(1, 1, cols).transpose(),
            g.concat(&[x, y], 1).narrow(1, cols, 2),
            x.narrow(1, cols / 2, cols - cols / 2)
                .pad(&[1, 1], &[0, cols / 2]),
            g.concat(&[x.narrow(1, 0, 0), y, x.narrow(1, 0, cols)], 1)
                .transpose(),
        ];
        let fill = |shape: &[usize], k: usize| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|i| specials[(i + k) % specials.len()]).collect();
            Array::new(shape, v).unwrap()
        };
        let feeds = [
            (x, fill(&[rows, cols], 0)),
            (y, fill(&[rows, 2], 1)),
            (z, fill(&[1, cols], 2)),
        ];
        for (k, &o) in outs.iter().enumerate() {
            let mut jit = Session::new(&g).unwrap();
            let got = jit.run(&[o], &feeds).unwrap();
            assert_native(&jit, "pad/concat");
            let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
            let want = interp.run(&[o], &feeds).unwrap();
            assert!(
                got[0].bits_eq(&want[0]),
                "case {k} at {rows}x{cols}: {:?} vs {:?}",
                got[0]
                    .to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                want[0]
                    .to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            );
        }
        // Padding is +0.0 exactly.
        let mut jit = Session::new(&g).unwrap();
        let p = jit.run(&[x.pad(&[1, 0], &[0, 0])], &feeds).unwrap()[0]
            .to_vec::<f32>()
            .unwrap();
        assert!(p[..cols].iter().all(|v| v.to_bits() == 0), "{p:?}");
    }
}

/// Two shapes the random graphs found where a value was computed inside one kernel but read
/// from memory by another (so no step produced its buffer): a matmul operand that the
/// matmul's epilogue also reads, and a fetched view of a value another kernel computes
/// through that view.
#[test]
fn values_read_from_memory_always_have_a_kernel() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(4)]);
    let w = g.placeholder("w", DType::F32, [Some(4), Some(4)]);
    let y = x.exp().minimum(10.0);
    let epilogue_reads_operand = y * y.matmul(w);
    let v = x.transpose().exp().transpose();
    let fetches = [epilogue_reads_operand, v.tanh(), v];
    let mut rng = Rng(11);
    let feeds = [
        (x, random_f32(&mut rng, &[7, 4])),
        (w, random_f32(&mut rng, &[4, 4])),
    ];
    let mut jit = Session::new(&g).unwrap();
    let got = jit.run(&fetches, &feeds).unwrap();
    assert_native(&jit, "operands read from memory");
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let want = interp.run(&fetches, &feeds).unwrap();
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        for (p, q) in a.iter().zip(&b) {
            assert!(
                (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                "output {k}: {p} vs {q}"
            );
        }
    }
}
