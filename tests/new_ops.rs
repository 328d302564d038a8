//! The ops added to prove ARCHITECTURE.md's "Adding an op" section: `erf`, `softplus` (both
//! primitives) and `gelu` (a composite). For each: interpreter values against known
//! references, the JIT against the interpreter over a sweep of `f32` bit patterns (with the
//! documented error bound asserted) and bitwise on `f64`, and how fusion treats it.
//! (Gradients are checked by finite differences in `tests/autodiff.rs`, the text round trip in
//! `tests/text.rs`.)

use kiln::internals::Executable;
use kiln::passes::{Pipeline, Program};
use kiln::prelude::*;

/// Distance in units in the last place between two f32s (0 for equal, NaN==NaN).
fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            -i64::from(i & 0x7fff_ffff)
        } else {
            i64::from(i)
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

fn program(g: &Graph, outs: &[Tensor<'_>], batch: usize) -> Program {
    let mut p = Program::new(g.snapshot(), outs.iter().map(|t| t.id()).collect());
    let mut pl = Pipeline::default();
    pl.options.batch = Some(batch);
    pl.run(&mut p).unwrap();
    p
}

/// Every 251st f32 bit pattern plus special values.
fn sweep_inputs() -> Vec<f32> {
    let mut v: Vec<f32> = (0..u32::MAX / 251)
        .map(|i| f32::from_bits(i * 251))
        .collect();
    v.extend([
        0.0,
        -0.0,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.5,
        1.0,
        -3.0,
        3.9,
        4.0,
        -88.0,
        -104.0,
        20.0,
    ]);
    v
}

/// Runs `f` over `xs` in `dtype` on the JIT and the interpreter (f64 reference, rounded).
fn both(dtype: DType, xs: &[f64], f: impl for<'g> Fn(Tensor<'g>) -> Tensor<'g>) -> (Array, Array) {
    let g = Graph::new();
    let x = g.placeholder("x", dtype, [None]);
    let y = f(x);
    let xa = match dtype {
        DType::F32 => Array::new([xs.len()], xs.iter().map(|&v| v as f32).collect()),
        _ => Array::new([xs.len()], xs.to_vec()),
    }
    .unwrap();
    let exe = Executable::compile(&program(&g, &[y], xs.len())).unwrap();
    let jit = exe.run(&[&xa], &[], 0).unwrap().remove(0);
    let mut interp = Interpreter::new(&g).unwrap();
    let want = interp.run(&[y], &[(x, xa)]).unwrap().remove(0);
    (jit, want)
}

/// The worst ulp distance of the f32 JIT from the interpreter over the sweep, and where.
fn f32_sweep(name: &str, f: impl for<'g> Fn(Tensor<'g>) -> Tensor<'g>) -> (u64, f32) {
    let xs: Vec<f64> = sweep_inputs().into_iter().map(f64::from).collect();
    let (jit, want) = both(DType::F32, &xs, f);
    let (got, want) = (jit.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    let mut worst = (0u64, 0.0f32);
    for ((&a, &b), &x) in got.iter().zip(&want).zip(&xs) {
        assert_eq!(a.is_nan(), b.is_nan(), "{name}({x:e}): {a} vs {b}");
        if a.is_infinite() || b.is_infinite() {
            assert_eq!(a, b, "{name}({x:e})");
            continue;
        }
        // Subnormal results: at most two subnormal steps away.
        if b.abs() < f32::MIN_POSITIVE {
            assert!(
                (a - b).abs() <= 2.0 * f32::from_bits(1),
                "{name}({x:e}): {a:e} vs {b:e}"
            );
            continue;
        }
        let u = ulps(a, b);
        if u > worst.0 {
            worst = (u, x as f32);
        }
    }
    worst
}

/// Values of `f` on the interpreter in f64.
fn interp_f64(xs: &[f64], f: impl for<'g> Fn(Tensor<'g>) -> Tensor<'g>) -> Vec<f64> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, [xs.len()]);
    let y = f(x);
    let mut interp = Interpreter::new(&g).unwrap();
    let xa = Array::new([xs.len()], xs.to_vec()).unwrap();
    interp.run(&[y], &[(x, xa)]).unwrap()[0]
        .to_vec::<f64>()
        .unwrap()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1e-300) || a == b,
            "{what}[{i}]: {a:e} vs {b:e}"
        );
    }
}

/// The number of fused kernels the default pipeline makes of `outs`.
fn kernels(g: &Graph, outs: &[Tensor<'_>]) -> usize {
    let p = program(g, outs, 4);
    p.live_order()
        .iter()
        .filter(|&&id| matches!(p.graph.node(id).op, kiln::Op::Fusion(_)))
        .count()
}

/// `f(x)` feeding two consumers: a cheap `f` is computed in each consumer's kernel (2
/// kernels), an expensive one once in a kernel of its own (3).
fn kernels_with_two_users(f: impl for<'g> Fn(Tensor<'g>) -> Tensor<'g>) -> usize {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(8)]);
    let y = f(x);
    let (a, b) = ((y * 2.0).exp(), (y + 1.0).tanh());
    kernels(&g, &[a, b])
}

#[test]
fn erf_interpreter_values() {
    let xs = [0.0, 0.5, 1.0, -3.0, 0.1, 2.0, 6.5, -0.0];
    let want = [
        0.0,
        0.5204998778130465,
        0.8427007929497149,
        -0.9999779095030014,
        0.1124629160182849,
        0.9953222650189527,
        1.0,
        -0.0,
    ];
    let got = interp_f64(&xs, |x| x.erf());
    assert_close(&got, &want, 2.0 * f64::EPSILON, "erf");
    assert!(got[7].is_sign_negative(), "erf(-0) = -0");
}

#[test]
fn erf_jit_f32_within_its_bound() {
    let (u, at) = f32_sweep("erf", |x| x.erf());
    println!("erf: max {u} ulp at {at:e}");
    assert!(u <= ERF_ULP, "erf: {u} ulp at x = {at:e} (bound {ERF_ULP})");
}

/// The bound `src/jit/math.rs` documents for `erf` on `f32`.
const ERF_ULP: u64 = 8;

#[test]
fn erf_jit_f64_is_the_interpreter_bitwise() {
    let xs: Vec<f64> = (-400..=400).map(|i| f64::from(i) / 64.0).collect();
    let (jit, want) = both(DType::F64, &xs, |x| x.erf());
    assert!(jit.bits_eq(&want));
}

#[test]
fn erf_is_expensive_for_fusion() {
    assert_eq!(kernels_with_two_users(|x| -x), 2, "neg is duplicated");
    assert_eq!(kernels_with_two_users(|x| x.erf()), 3, "erf is not");
}

#[test]
fn softplus_interpreter_values() {
    let xs = [0.0, 1.0, -1.0, 30.0, -30.0, 800.0, -800.0];
    let ln2 = std::f64::consts::LN_2;
    let want = [
        ln2,
        1.3132616875182228,
        0.31326168751822286,
        30.000000000000092,
        9.357622968839737e-14,
        800.0,
        0.0,
    ];
    let got = interp_f64(&xs, |x| x.softplus());
    assert_close(&got, &want, 4.0 * f64::EPSILON, "softplus");
    assert_eq!(got[0], ln2, "softplus(0) = ln 2");
}

#[test]
fn softplus_jit_f32_within_its_bound() {
    let (u, at) = f32_sweep("softplus", |x| x.softplus());
    println!("softplus: max {u} ulp at {at:e}");
    assert!(
        u <= SOFTPLUS_ULP,
        "softplus: {u} ulp at x = {at:e} (bound {SOFTPLUS_ULP})"
    );
}

/// The bound `src/jit/math.rs` documents for `softplus` on `f32`.
const SOFTPLUS_ULP: u64 = 4;

#[test]
fn softplus_does_not_overflow_in_f32() {
    // Composed as log(1 + exp(x)), x = 100 would be inf in f32; the primitive gives x.
    let xs = [88.0, 89.0, 100.0, 1e30, f64::from(f32::MAX), -100.0, -1e30];
    let (jit, want) = both(DType::F32, &xs, |x| x.softplus());
    let (j, w) = (jit.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    for (i, &x) in xs.iter().enumerate() {
        assert!(
            j[i].is_finite() && w[i].is_finite(),
            "softplus({x}) = {} / {}",
            j[i],
            w[i]
        );
        if x > 0.0 {
            assert_eq!(j[i], x as f32, "softplus({x}) is x");
        } else {
            assert!(j[i] >= 0.0 && j[i] < 1e-40, "softplus({x}) = {}", j[i]);
        }
    }
    // Its gradient, sigmoid(x), is finite at the extremes too.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2]);
    let y = x.softplus().sum_all();
    let dx = kiln::autodiff::grad(y, &[x]).unwrap()[0];
    let mut sess = Session::new(&g).unwrap();
    let out = sess
        .run(
            &[dx],
            &[(x, Array::new([2], vec![-200.0f32, 200.0]).unwrap())],
        )
        .unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![0.0, 1.0]);
}

#[test]
fn softplus_jit_f64_is_the_interpreter_bitwise() {
    let xs: Vec<f64> = (-400..=400).map(|i| f64::from(i) / 4.0).collect();
    let (jit, want) = both(DType::F64, &xs, |x| x.softplus());
    assert!(jit.bits_eq(&want));
}

#[test]
fn softplus_is_expensive_for_fusion() {
    assert_eq!(kernels_with_two_users(|x| x.softplus()), 3);
}

#[test]
fn gelu_interpreter_values() {
    // x·Φ(x) and its tanh approximation, from the formulas in f64 (mpmath agrees).
    let xs = [0.0, 1.0, -1.0, 2.0, -3.0, 0.5];
    let exact = [
        0.0,
        0.8413447460685429,
        -0.15865525393145707,
        1.9544997361036416,
        -0.00404969409489031,
        0.34573123063700656,
    ];
    let tanh = [
        0.0,
        0.8411919906082768,
        -0.15880800939172324,
        1.954597694087775,
        -0.0036373920817729943,
        0.34571400982514394,
    ];
    assert_close(&interp_f64(&xs, |x| x.gelu(false)), &exact, 1e-13, "gelu");
    assert_close(
        &interp_f64(&xs, |x| x.gelu(true)),
        &tanh,
        1e-13,
        "gelu_tanh",
    );
}

/// GELU is a composite: its f32 kernel and the interpreter differ by the primitives'
/// errors, which `1 + erf(x/√2)` turns into an absolute error near 1 ulp of 1 for negative
/// `x` (cancellation), scaled by `|x|`. Asserted: `|jit - interp| <= 2⁻²⁰·max(1, |x|)` on a
/// grid over [-10, 10], both forms (measured: 2.1e-7 exact, 1.1e-7 tanh form).
#[test]
fn gelu_jit_f32_close_to_the_interpreter() {
    let xs: Vec<f64> = (-2000..=2000).map(|i| f64::from(i) / 200.0).collect();
    for approximate in [false, true] {
        let (jit, want) = both(DType::F32, &xs, |x| x.gelu(approximate));
        let (j, w) = (jit.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        let mut worst = 0.0f64;
        for (i, &x) in xs.iter().enumerate() {
            let err = f64::from((j[i] - w[i]).abs()) / x.abs().max(1.0);
            worst = worst.max(err);
            assert!(
                err <= 2f64.powi(-20),
                "gelu({x}, approximate={approximate}): jit {} vs {}",
                j[i],
                w[i]
            );
        }
        println!("gelu(approximate={approximate}): worst scaled error {worst:e}");
    }
}

#[test]
fn gelu_fuses_into_one_kernel() {
    for approximate in [false, true] {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [None, Some(8)]);
        let y = x.gelu(approximate);
        assert_eq!(kernels(&g, &[y]), 1, "approximate={approximate}");
    }
}

#[test]
fn shape_rules_keep_the_type_and_refuse_integers() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    for y in [x.erf(), x.softplus(), x.gelu(false), x.gelu(true)] {
        assert_eq!(y.ty(), x.ty());
    }
    g.check().unwrap();
    for (name, build) in [
        ("erf", (|t| t.erf()) as fn(Tensor<'_>) -> Tensor<'_>),
        ("softplus", |t| t.softplus()),
    ] {
        let g = Graph::new();
        let i = g.placeholder("i", DType::I32, [2]);
        let _ = build(i);
        let err = g.check().unwrap_err().to_string();
        assert!(
            err.contains(&format!("{name} needs a float operand")),
            "{err}"
        );
    }
}
