//! Depthwise convolutions (groups = channels) on the JIT's Cranelift kernels: values, first
//! and second-order gradients against the interpreter on fixed and random geometries (odd
//! sizes, every padding mode, strides, dilation, multipliers up to 8, batch 1, f32 and f64),
//! the same bits at 1, 2 and 3 threads, and the same bits as the native loops the kernels
//! replaced (`KILN_DW_JIT=0`).

mod common;

use common::Rng;
use kiln::autodiff::grad;
use kiln::prelude::*;
use kiln::{Conv2dOptions, Padding};
use std::sync::Mutex;

/// The thread count and `KILN_DW_JIT` are process-wide: one test at a time changes them.
static GLOBAL: Mutex<()> = Mutex::new(());

/// One depthwise convolution: input `[n, h, w, c]`, filter `[kh, kw, 1, c·m]`.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    hw: [usize; 2],
    c: usize,
    m: usize,
    k: [usize; 2],
    opts: Conv2dOptions,
    dtype: DType,
}

fn case(n: usize, hw: [usize; 2], c: usize, m: usize, k: [usize; 2], o: Conv2dOptions) -> Case {
    Case {
        n,
        hw,
        c,
        m,
        k,
        opts: o.groups(c),
        dtype: DType::F32,
    }
}

fn fixed_cases() -> Vec<Case> {
    let o = Conv2dOptions::new;
    let mut f64_case = case(1, [7, 6], 5, 2, [3, 3], o().padding(Padding::Same));
    f64_case.dtype = DType::F64;
    let mut f64_wide = case(2, [9, 9], 12, 1, [3, 3], o().strides(2, 2));
    f64_wide.dtype = DType::F64;
    vec![
        case(2, [9, 9], 16, 1, [3, 3], o().padding(Padding::Same)),
        case(
            2,
            [11, 10],
            13,
            1,
            [3, 3],
            o().strides(2, 2).padding(Padding::Same),
        ),
        case(1, [7, 7], 5, 1, [3, 3], o()),
        case(2, [8, 9], 6, 4, [3, 3], o().padding(Padding::Same)),
        case(1, [6, 7], 3, 3, [2, 3], o().strides(1, 3)),
        case(2, [9, 8], 4, 8, [3, 3], o().dilations(2, 2)),
        case(
            1,
            [9, 8],
            7,
            2,
            [3, 2],
            o().strides(2, 3)
                .dilations(2, 1)
                .padding(Padding::Explicit([(1, 2), (0, 3)])),
        ),
        case(3, [5, 5], 9, 1, [5, 5], o().padding(Padding::Same)),
        f64_case,
        f64_wide,
    ]
}

/// A random depthwise case whose window fits.
fn random_case(rng: &mut Rng) -> Case {
    loop {
        let padding = match rng.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit([(rng.below(3), rng.below(3)), (rng.below(3), rng.below(3))]),
        };
        let opts = Conv2dOptions::new()
            .strides(1 + rng.below(2), 1 + rng.below(3))
            .dilations(1 + rng.below(2), 1 + rng.below(2))
            .padding(padding);
        let mut cs = case(
            1 + rng.below(4),
            [1 + rng.below(10), 1 + rng.below(10)],
            2 + rng.below(11),
            [1, 1, 2, 3, 4][rng.below(5)],
            [1 + rng.below(3), 1 + rng.below(3)],
            opts,
        );
        if rng.below(4) == 0 {
            cs.dtype = DType::F64;
        }
        let g = Graph::new();
        let (xs, ws) = shapes(&cs);
        let x = g.placeholder("x", cs.dtype, xs);
        let w = g.placeholder("w", cs.dtype, ws);
        let _ = x.conv2d(w, &cs.opts);
        if g.check().is_ok() {
            return cs;
        }
    }
}

fn shapes(cs: &Case) -> ([usize; 4], [usize; 4]) {
    (
        [cs.n, cs.hw[0], cs.hw[1], cs.c],
        [cs.k[0], cs.k[1], 1, cs.c * cs.m],
    )
}

fn random_array(rng: &mut Rng, shape: &[usize], dtype: DType) -> Array {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.f32() as f64).collect();
    match dtype {
        DType::F64 => Array::new(shape, v).unwrap(),
        _ => Array::new(shape, v.iter().map(|&x| x as f32).collect::<Vec<_>>()).unwrap(),
    }
}

/// `y = conv(x, w)`, both gradients of `Σ y²` and a second-order term, from `backend`.
fn outputs(cs: &Case, backend: Backend, seed: u64) -> Vec<Array> {
    let g = Graph::new();
    let mut rng = Rng(seed | 1);
    let (xs, ws) = shapes(cs);
    let x = g.placeholder("x", cs.dtype, [None, Some(xs[1]), Some(xs[2]), Some(xs[3])]);
    let w = g.placeholder("w", cs.dtype, ws);
    let y = x.conv2d(w, &cs.opts);
    let loss = (y * y).sum_all();
    let d = grad(loss, &[x, w]).unwrap();
    let dd = grad((d[0] * d[0]).sum_all(), &[w]).unwrap()[0];
    let feeds = [
        (x, random_array(&mut rng, &xs, cs.dtype)),
        (w, random_array(&mut rng, &ws, cs.dtype)),
    ];
    let mut s = Session::with_backend(&g, backend).unwrap();
    let out = s.run(&[y, d[0], d[1], dd], &feeds).unwrap();
    if backend == Backend::Jit {
        common::assert_native(&s, "depthwise");
        let steps = s.last_compile_times().unwrap().steps;
        assert!(steps.conv >= 4, "{cs:?}: {steps:?}");
    }
    out
}

/// The worst `|a − b| / (1 + |b|)`.
fn worst(a: &Array, b: &Array) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_f64_vec()
        .iter()
        .zip(&b.to_f64_vec())
        .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
        .fold(0.0, f64::max)
}

/// The kernels sum in the dtype, the interpreter in `f64`: f32 results agree to the
/// tolerance `tests/conv.rs` allows every convolution, f64 ones to a few ulps of the sums.
#[test]
fn jit_matches_interpreter_on_depthwise_convolutions() {
    let _g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng(0xd3e7_0001);
    let mut all = fixed_cases();
    all.extend((0..30).map(|_| random_case(&mut rng)));
    for (i, cs) in all.iter().enumerate() {
        let jit = outputs(cs, Backend::Jit, i as u64);
        let interp = outputs(cs, Backend::Interpreter, i as u64);
        let tol = if cs.dtype == DType::F64 { 1e-12 } else { 2e-4 };
        for (k, (a, b)) in jit.iter().zip(&interp).enumerate() {
            let e = worst(a, b);
            assert!(e <= tol, "{cs:?}: output {k} is {e} from the interpreter");
        }
    }
}

/// Images and partial ranges are fixed by the plan: the same bits at 1, 2 and 3 threads;
/// and the kernels give exactly the native loops' bits.
#[test]
fn same_bits_at_every_thread_count_and_as_the_loops() {
    let _g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = Conv2dOptions::new;
    let mut f64_case = case(5, [12, 11], 9, 1, [3, 3], o().strides(2, 2));
    f64_case.dtype = DType::F64;
    let big = [
        case(7, [16, 16], 16, 1, [3, 3], o().padding(Padding::Same)),
        case(
            6,
            [15, 17],
            12,
            1,
            [3, 3],
            o().strides(2, 2).padding(Padding::Same),
        ),
        case(
            5,
            [10, 9],
            5,
            4,
            [3, 3],
            o().dilations(2, 1).padding(Padding::Same),
        ),
        f64_case,
    ];
    for cs in &big {
        kiln::threads::set_threads(1);
        let one = outputs(cs, Backend::Jit, 5);
        for t in [2, 3] {
            kiln::threads::set_threads(t);
            let many = outputs(cs, Backend::Jit, 5);
            for (k, (a, b)) in one.iter().zip(&many).enumerate() {
                assert!(a.bits_eq(b), "{cs:?}: output {k} differs at {t} threads");
            }
        }
        kiln::threads::set_threads(1);
        std::env::set_var("KILN_DW_JIT", "0");
        let loops = outputs(cs, Backend::Jit, 5);
        std::env::remove_var("KILN_DW_JIT");
        for (k, (a, b)) in one.iter().zip(&loops).enumerate() {
            assert!(a.bits_eq(b), "{cs:?}: output {k} differs from the loops");
        }
    }
    kiln::threads::set_threads(0);
}
