//! The ONNX ops that needed more than a table row: the `rem` primitive behind a float `Mod`
//! (both backends against Rust's `%`, bitwise), and kiln's own node cases
//! (`tests/data/onnx-kiln`, written by its `make_cases.py` with onnx's reference evaluator)
//! for what the standard suite leaves out: 3-D convolutions (none in it) and grouped, strided
//! 3-D transposed ones, open batch axes
//! through the 3-D lowerings, MaxPool's indices in 3-D and column-major, pads wider than
//! their axis, integer powers that wrap, float remainders of large quotients, training-mode
//! BatchNormalization with a momentum, ceil-mode averages under `count_include_pad`. The imported 3-D convolution's gradients are checked
//! against finite differences.

use kiln::onnx::CaseOutcome;
use kiln::prelude::*;
use std::path::PathBuf;

fn kiln_cases() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-kiln")
}

#[test]
fn kiln_node_cases_pass_on_both_backends() {
    let report = kiln::onnx::run_suite(kiln_cases()).unwrap();
    assert_eq!(report.cases.len(), 21, "{}", report.table());
    let bad: Vec<String> = report
        .cases
        .iter()
        .filter(|c| c.outcome != CaseOutcome::Passed)
        .map(|c| format!("{} ({}): {:?}", c.name, c.op, c.outcome))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Operand pairs where a remainder is easy to get wrong: signs, zeros, infinities, NaN,
/// quotients past 2^24 and 2^53, subnormals.
fn rem_pairs() -> Vec<(f64, f64)> {
    let specials = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        3.5,
        -7.25,
        1e-3,
        -2.5e-5,
        1e30,
        -3e15,
        5e-324,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    let mut v = vec![];
    for &a in &specials {
        for &b in &specials {
            v.push((a, b));
        }
    }
    v
}

#[test]
fn rem_is_c_fmod_bitwise_on_both_backends() {
    let pairs = rem_pairs();
    let n = pairs.len();
    for dt in [DType::F32, DType::F64] {
        let g = Graph::new();
        let a = g.placeholder("a", dt, [n]);
        let b = g.placeholder("b", dt, [n]);
        let y = a % b;
        let av: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let bv: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let feeds = [
            (a, Array::from_f64(dt, vec![n], av)),
            (b, Array::from_f64(dt, vec![n], bv)),
        ];
        // What C's fmod gives on the values as fed (f32 values rounded first).
        let want: Vec<u64> = match dt {
            DType::F32 => {
                let (a, b) = (
                    feeds[0].1.to_vec::<f32>().unwrap(),
                    feeds[1].1.to_vec::<f32>().unwrap(),
                );
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x % y).to_bits() as u64)
                    .collect()
            }
            _ => {
                let (a, b) = (
                    feeds[0].1.to_vec::<f64>().unwrap(),
                    feeds[1].1.to_vec::<f64>().unwrap(),
                );
                a.iter().zip(&b).map(|(x, y)| (x % y).to_bits()).collect()
            }
        };
        for backend in [Backend::Jit, Backend::Interpreter] {
            let mut s = Session::with_backend(&g, backend).unwrap();
            let got = s.run(&[y], &feeds).unwrap().remove(0);
            let bits: Vec<u64> = match dt {
                DType::F32 => got
                    .to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits() as u64)
                    .collect(),
                _ => got
                    .to_vec::<f64>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
            };
            for i in 0..n {
                let nan = |u: u64| match dt {
                    DType::F32 => f32::from_bits(u as u32).is_nan(),
                    _ => f64::from_bits(u).is_nan(),
                };
                assert!(
                    bits[i] == want[i] || (nan(bits[i]) && nan(want[i])),
                    "{dt} {backend:?}: rem{:?} gives bits {:#x}, C's fmod {:#x}",
                    pairs[i],
                    bits[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn rem_on_integers_is_refused_naming_the_op() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::I32, [3]);
    let _ = a % a;
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("rem") && e.contains("float"), "{e}");
}

/// The imported f64 3-D convolution (padding on every side, strides): d loss / d input and
/// d loss / d filter against central differences on the interpreter.
#[test]
fn imported_conv3d_gradients_match_finite_differences() {
    let dir = kiln_cases().join("kiln_conv3d_f64_same_upper");
    let m = kiln::onnx::import(dir.join("model.onnx")).unwrap();
    let (x, w) = (m.input(0).unwrap(), m.input(1).unwrap());
    let y = m.output(0).unwrap();
    let g = &m.graph;
    let yshape = y.shape().to_fixed().unwrap();
    let ny: usize = yshape.iter().product();
    let weights: Vec<f64> = (0..ny).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
    let r = g.constant(Array::new(&yshape, weights).unwrap());
    let loss = (y * r).sum_all();
    let grads = kiln::autodiff::grad(loss, &[x, w]).unwrap();
    let fill = |t: Tensor<'_>, seed: usize| {
        let s = t.shape().to_fixed().unwrap();
        let n: usize = s.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| (((i + seed) * 2654435761usize % 1000) as f64) / 500.0 - 1.0)
            .collect();
        Array::new(&s, v).unwrap()
    };
    let vals = [fill(x, 1), fill(w, 7)];
    let mut interp = Interpreter::with_precision(g, Precision::F64).unwrap();
    let feeds = |v: &[Array]| vec![(x, v[0].clone()), (w, v[1].clone())];
    let out = interp.run(&[grads[0], grads[1]], &feeds(&vals)).unwrap();
    let eps = 1e-6;
    for k in 0..2 {
        let analytic = out[k].to_vec::<f64>().unwrap();
        // Every 5th element: the corners, the padded border and the interior all come up.
        for i in (0..analytic.len()).step_by(5) {
            let mut at = |d: f64| {
                let mut v = vals.clone();
                v[k].as_mut_slice::<f64>().unwrap()[i] += d;
                interp.run(&[loss], &feeds(&v)).unwrap()[0]
                    .scalar_value::<f64>()
                    .unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            let a = analytic[i];
            assert!(
                (a - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                "operand {k}, element {i}: analytic {a} vs finite difference {fd}"
            );
        }
    }
    // And the JIT agrees with the interpreter on the gradients.
    let mut s = m.session().unwrap();
    let jit = s.run(&[grads[0], grads[1]], &feeds(&vals)).unwrap();
    for k in 0..2 {
        let (a, b) = (
            jit[k].to_vec::<f64>().unwrap(),
            out[k].to_vec::<f64>().unwrap(),
        );
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-12 * (1.0 + q.abs()),
                "JIT gradient {k}[{i}]: {p} vs {q}"
            );
        }
    }
}
