//! The storage dtypes (`i64`, `i8`, `u8`, `f16`, `bf16`): fed, fetched, moved and cast the
//! same on both backends, bit for bit; refused by arithmetic with an error that says what to
//! cast to; saved and loaded by checkpoints.

use kiln::prelude::*;
use kiln::{bf16, f16, ArrayData};

const ALL: [DType; 9] = DType::ALL;

/// Runs `fetches` on both backends and asserts the results are bitwise equal; returns them.
fn both(g: &Graph, fetches: &[Tensor<'_>], feeds: &[(Tensor<'_>, Array)]) -> Vec<Array> {
    let mut jit = Session::with_backend(g, Backend::Jit).unwrap();
    let mut int = Session::with_backend(g, Backend::Interpreter).unwrap();
    let a = jit.run(fetches, feeds).unwrap();
    let b = int.run(fetches, feeds).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            x.bits_eq(y),
            "fetch {i} ({}): jit {:?} vs interpreter {:?}",
            fetches[i].ty(),
            &x.to_f64_vec()[..x.len().min(8)],
            &y.to_f64_vec()[..y.len().min(8)]
        );
    }
    a
}

/// Edge values of every dtype, as an array of that dtype.
fn edges(d: DType) -> Array {
    let floats = [
        0.0,
        -0.0,
        1.0,
        -1.5,
        2.5,
        -2.5,
        127.9,
        128.0,
        255.5,
        256.0,
        -129.0,
        65504.0,
        65520.0,
        1e-8,
        -6e-8,
        3e38,
        -1e30,
        1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        16_777_217.0,
        2147483647.0,
        -2147483649.0,
        9.3e18,
    ];
    match d {
        DType::F32 => Array::new([floats.len()], floats.map(|x| x as f32).to_vec()).unwrap(),
        DType::F64 => Array::new([floats.len()], floats.to_vec()).unwrap(),
        DType::F16 => {
            let mut v: Vec<f16> = floats.iter().map(|&x| f16::from_f64(x)).collect();
            v.extend([0x7C01, 0xFE33, 0x0001, 0x83FF].map(f16::from_bits)); // sNaN, qNaN, subnormals
            Array::new([v.len()], v).unwrap()
        }
        DType::BF16 => {
            let mut v: Vec<bf16> = floats.iter().map(|&x| bf16::from_f64(x)).collect();
            v.extend([0x7F81, 0xFFC3, 0x0001, 0x807F].map(bf16::from_bits));
            Array::new([v.len()], v).unwrap()
        }
        DType::I64 => Array::new(
            [8],
            vec![0i64, -1, 255, 300, -129, (1 << 53) + 1, i64::MAX, i64::MIN],
        )
        .unwrap(),
        DType::I32 => Array::new([7], vec![0i32, -1, 255, 300, -129, i32::MAX, i32::MIN]).unwrap(),
        DType::I8 => Array::new([5], vec![0i8, -1, 127, -128, 5]).unwrap(),
        DType::U8 => Array::new([5], vec![0u8, 1, 127, 128, 255]).unwrap(),
        DType::Bool => Array::new([2], vec![true, false]).unwrap(),
    }
}

#[test]
fn every_cast_agrees_on_both_backends_and_with_array_cast() {
    for from in ALL {
        let x = edges(from);
        let g = Graph::new();
        let p = g.placeholder("x", from, [x.len()]);
        let outs: Vec<Tensor<'_>> = ALL.iter().map(|&to| p.cast(to)).collect();
        g.check().unwrap();
        let got = both(&g, &outs, &[(p, x.clone())]);
        for (to, a) in ALL.iter().zip(&got) {
            assert_eq!(a.dtype(), *to);
            assert!(
                a.bits_eq(&x.cast(*to)),
                "{from} -> {to}: differs from Array::cast"
            );
        }
    }
}

#[test]
fn cast_rules_are_the_documented_ones() {
    let x = Array::new([4], vec![300.7f32, -3.2, f32::NAN, 1e10]).unwrap();
    assert_eq!(
        x.cast(DType::U8).to_vec::<u8>().unwrap(),
        vec![255, 0, 0, 255]
    );
    assert_eq!(
        x.cast(DType::I8).to_vec::<i8>().unwrap(),
        vec![127, -3, 0, 127]
    );
    assert_eq!(
        x.cast(DType::I64).to_vec::<i64>().unwrap(),
        vec![300, -3, 0, 10_000_000_000]
    );
    // Integer to integer wraps.
    let i = Array::new([3], vec![300i64, -1, (1 << 32) + 7]).unwrap();
    assert_eq!(i.cast(DType::U8).to_vec::<u8>().unwrap(), vec![44, 255, 7]);
    assert_eq!(
        i.cast(DType::I32).to_vec::<i32>().unwrap(),
        vec![300, -1, 7]
    );
}

/// All 65,536 bit patterns of a half type, cast to `f32` and back and to every other dtype,
/// on both backends, against the `half` crate.
fn exhaustive(d: DType) {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let x = match d {
        DType::F16 => Array::new(
            [bits.len()],
            bits.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>(),
        ),
        _ => Array::new(
            [bits.len()],
            bits.iter().map(|&b| bf16::from_bits(b)).collect::<Vec<_>>(),
        ),
    }
    .unwrap();
    let g = Graph::new();
    let p = g.placeholder("h", d, [bits.len()]);
    let f = p.cast(DType::F32);
    let back = f.cast(d);
    let mut fetches = vec![f, back];
    fetches.extend(ALL.iter().map(|&to| p.cast(to)));
    let got = both(&g, &fetches, &[(p, x.clone())]);
    let want: Vec<u32> = bits
        .iter()
        .map(|&b| match d {
            DType::F16 => f16::from_bits(b).to_f32().to_bits(),
            _ => bf16::from_bits(b).to_f32().to_bits(),
        })
        .collect();
    let have: Vec<u32> = got[0]
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(have, want, "{d} -> f32 differs from the half crate");
    // f32 -> half of an exact half value gives it back, NaN payloads quieted as half does.
    let round: Vec<u16> = match got[1].data() {
        ArrayData::F16(v) => v.iter().map(|h| h.to_bits()).collect(),
        ArrayData::BF16(v) => v.iter().map(|h| h.to_bits()).collect(),
        _ => panic!("not a half array"),
    };
    for (&b, &r) in bits.iter().zip(&round) {
        let nan = match d {
            DType::F16 => f16::from_bits(b).is_nan(),
            _ => bf16::from_bits(b).is_nan(),
        };
        let quiet = if d == DType::F16 { 0x0200 } else { 0x0040 };
        assert_eq!(r, if nan { b | quiet } else { b }, "{d} bits {b:#06x}");
    }
    for (to, a) in ALL.iter().zip(&got[2..]) {
        assert!(a.bits_eq(&x.cast(*to)), "{d} -> {to}");
    }
}

#[test]
fn every_f16_bit_pattern_converts_as_the_half_crate_does() {
    exhaustive(DType::F16);
}

#[test]
fn every_bf16_bit_pattern_converts_as_the_half_crate_does() {
    exhaustive(DType::BF16);
}

#[test]
fn f32_to_half_rounds_as_the_half_crate_on_both_backends() {
    // Every 8th f32 bit pattern near the f16 range and its rounding boundaries, plus edges.
    let mut v: Vec<f32> = (0u32..(1 << 20))
        .map(|i| f32::from_bits(i.wrapping_mul(4099).wrapping_add(0x3300_0000)))
        .collect();
    v.extend([
        65519.99,
        65520.0,
        5.960_464_5e-8,
        2.980_232_2e-8,
        f32::from_bits(0x7F80_0001),
    ]);
    let x = Array::new([v.len()], v.clone()).unwrap();
    let g = Graph::new();
    let p = g.placeholder("x", DType::F32, [v.len()]);
    let got = both(&g, &[p.cast(DType::F16), p.cast(DType::BF16)], &[(p, x)]);
    let h = got[0].as_slice::<f16>().unwrap();
    let b = got[1].as_slice::<bf16>().unwrap();
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(h[i].to_bits(), f16::from_f32(x).to_bits(), "f16 of {x:e}");
        assert_eq!(b[i].to_bits(), bf16::from_f32(x).to_bits(), "bf16 of {x:e}");
    }
}

#[test]
fn storage_dtypes_move_bit_for_bit() {
    for d in [DType::I64, DType::I8, DType::U8, DType::F16, DType::BF16] {
        let x = edges(d);
        let n = x.len();
        let g = Graph::new();
        let p = g.placeholder("x", d, [n]);
        let m = g.placeholder("m", DType::Bool, [n]);
        let two = g.concat(&[p, p], 0).reshape([2, n]).permute(&[1, 0]);
        let padded = p.pad(&[1], &[2]).slice(&[1], [n]);
        let picked = g.where_(m, p, p.slice(&[0], [1]).broadcast_to([n]));
        let mask = Array::new([n], (0..n).map(|i| i % 2 == 0).collect::<Vec<_>>()).unwrap();
        g.check().unwrap();
        let got = both(&g, &[p, two, padded, picked], &[(p, x.clone()), (m, mask)]);
        assert!(got[0].bits_eq(&x), "{d}: identity");
        assert!(got[2].bits_eq(&x), "{d}: pad then slice");
        assert_eq!(got[1].shape(), &[n, 2]);
        // The transposed concat holds each element twice, side by side.
        let t = got[1].cast(DType::I64).to_vec::<i64>().unwrap();
        let s = x.cast(DType::I64).to_vec::<i64>().unwrap();
        for i in 0..n {
            assert_eq!(
                (t[2 * i], t[2 * i + 1]),
                (s[i], s[i]),
                "{d}: concat/permute"
            );
        }
    }
}

#[test]
fn arithmetic_on_a_storage_dtype_is_refused_with_the_cast_to_use() {
    for (d, to) in [
        (DType::F16, "f32"),
        (DType::BF16, "f32"),
        (DType::I64, "i32"),
        (DType::I8, "i32"),
        (DType::U8, "i32"),
    ] {
        let ops: &[&str] = if d == DType::I64 {
            &["exp", "matmul", "pow"] // i64 has the integer ops but these
        } else {
            &["add", "exp", "sum", "matmul", "equal"]
        };
        for &op in ops {
            let g = Graph::new();
            let x = g.placeholder("x", d, [2, 2]);
            let _ = match op {
                "add" => x + x,
                "exp" => x.exp(),
                "sum" => x.sum(&[0], false),
                "matmul" => x.matmul(x),
                "pow" => x.pow(x),
                _ => x.equal(x),
            };
            let e = g.check().expect_err(op).to_string();
            assert!(
                e.contains(&format!("cast to {to} first")) && e.contains(d.name()),
                "{d} {op}: {e}"
            );
            assert!(
                e.contains("dtypes.rs"),
                "{d} {op}: the error names the line: {e}"
            );
        }
    }
}

#[test]
fn checkpoints_hold_every_dtype() {
    let mut ck = kiln::checkpoint::Checkpoint::default();
    for d in ALL {
        ck.tensors.insert(d.name().to_string(), edges(d));
    }
    let path = std::env::temp_dir().join(format!("kiln-dtypes-{}.safetensors", std::process::id()));
    kiln::checkpoint::write(&path, &ck).unwrap();
    let back = kiln::checkpoint::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(back.checksum_verified());
    for d in ALL {
        assert!(back.tensors[d.name()].bits_eq(&edges(d)), "{d}");
    }
}

#[test]
fn a_saved_model_keeps_storage_dtype_constants_placeholders_and_casts() {
    let dir = std::env::temp_dir().join(format!("kiln-dtypes-saved-{}", std::process::id()));
    let h = Array::new(
        [3],
        vec![
            f16::from_f32(1.5),
            f16::from_bits(0x7C01),
            f16::from_f32(-0.0),
        ],
    )
    .unwrap();
    {
        let g = Graph::new();
        let x = g.placeholder("x", DType::I64, [None]);
        let c = g.constant(h.clone());
        let _ = x.cast(DType::F32).named("xf");
        let _ = c.cast(DType::BF16).named("cb");
        let _ = g.concat(&[c, c], 0).named("cc");
        let sess = Session::new(&g).unwrap();
        kiln::saved::save(&dir, &sess).unwrap();
    }
    let (g, mut sess) = kiln::saved::load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let t = |n: &str| g.by_name(n).unwrap();
    let x = Array::new([2], vec![i64::MAX, -3]).unwrap();
    let out = sess
        .run(&[t("xf"), t("cb"), t("cc")], &[(t("x"), x)])
        .unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![9.223372e18, -3.0]);
    assert!(out[1].bits_eq(&h.cast(DType::BF16)));
    let cc = out[2].as_slice::<f16>().unwrap();
    assert_eq!(cc[0].to_f32(), 1.5);
    assert!(cc[1].is_nan() && cc[2].is_sign_negative());
}

#[test]
fn sparse_cross_entropy_takes_i64_labels_and_never_wraps_them_into_range() {
    let g = Graph::new();
    let logits = g.placeholder("logits", DType::F32, [None, Some(3)]);
    let l32 = g.placeholder("l32", DType::I32, [None]);
    let l64 = g.placeholder("l64", DType::I64, [None]);
    let a = logits.sparse_softmax_cross_entropy_with_logits_checked(l32);
    let b = logits.sparse_softmax_cross_entropy_with_logits_checked(l64);
    g.check().unwrap();
    let lv = Array::new(
        [3, 3],
        vec![0.5f32, -1.0, 2.0, 0.0, 1.0, 0.25, 3.0, 1.0, -2.0],
    )
    .unwrap();
    let y32 = Array::new([3], vec![2i32, 0, 1]).unwrap();
    let got = both(
        &g,
        &[a, b],
        &[
            (logits, lv.clone()),
            (l32, y32),
            (l64, Array::new([3], vec![2i64, 0, 1]).unwrap()),
        ],
    );
    assert!(
        got[0].bits_eq(&got[1]),
        "i64 labels give the i32 labels' loss"
    );
    // 2^32 + 1 would wrap to 1, a valid class: it must be out of range (NaN) instead.
    let far = Array::new([3], vec![(1i64 << 32) + 1, -(1i64 << 40), 1]).unwrap();
    let y32 = Array::new([3], vec![0i32, 0, 0]).unwrap();
    let got = both(&g, &[b], &[(logits, lv), (l32, y32), (l64, far)]);
    let v = got[0].to_vec::<f32>().unwrap();
    assert!(v[0].is_nan() && v[1].is_nan() && v[2].is_finite(), "{v:?}");
}

#[test]
fn fit_and_evaluate_take_i64_labels() {
    use kiln::nn::*;
    let n = 32;
    let xs: Vec<f32> = (0..n * 2)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let y64: Vec<i64> = (0..n).map(|i| i64::from(xs[2 * i] > 0.0)).collect();
    let x = Array::new([n, 2], xs).unwrap();
    let y = Array::new([n], y64.clone()).unwrap();
    let mut m = Sequential::new([Input::new([2]).into(), Dense::new(2).into()]);
    m.compile(
        Sgd::new(0.5),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )
    .unwrap();
    let quiet = FitConfig::new()
        .verbosity(Verbosity::Silent)
        .epochs(30)
        .batch_size(8);
    m.fit(&x, &y, quiet).unwrap();
    assert!(m.evaluate(&x, &y, 8).unwrap()["accuracy"] > 0.9);
    let mut bad = y64;
    bad[3] = 1 << 33;
    let e = m
        .evaluate(&x, &Array::new([n], bad).unwrap(), 8)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("y[3] = 8589934592") && e.contains("not a class index"),
        "{e}"
    );
}

#[test]
fn i64_arithmetic_wraps_like_i32_on_both_backends() {
    let big = (1i64 << 53) + 1;
    let a = vec![big, i64::MAX, i64::MIN, -7, 7, 0, 5];
    let b = vec![3i64, 1, -1, 2, -2, 9, big];
    let n = a.len();
    let g = Graph::new();
    let x = g.placeholder("x", DType::I64, [n]);
    let y = g.placeholder("y", DType::I64, [n]);
    let fetches = [
        x + y,
        x - y,
        x * y,
        x / y,
        x.maximum(y),
        x.minimum(y),
        -x,
        x.abs(),
        x.less(y).cast(DType::I64),
        x.equal(y).cast(DType::I64),
        // Fused with a cast, as a model's input pipeline would.
        (x + y).cast(DType::F32),
        (x * y).sum(&[0], false),
        (x - y).max(&[0], false),
    ];
    g.check().unwrap();
    let feeds = [
        (x, Array::new([n], a.clone()).unwrap()),
        (y, Array::new([n], b.clone()).unwrap()),
    ];
    let got = both(&g, &fetches, &feeds);
    type F = fn(i64, i64) -> i64;
    let want: [F; 10] = [
        i64::wrapping_add,
        i64::wrapping_sub,
        i64::wrapping_mul,
        i64::wrapping_div,
        i64::max,
        i64::min,
        |x, _| x.wrapping_neg(),
        |x, _| x.wrapping_abs(),
        |x, y| i64::from(x < y),
        |x, y| i64::from(x == y),
    ];
    for (k, f) in want.iter().enumerate() {
        let w: Vec<i64> = a.iter().zip(&b).map(|(&p, &q)| f(p, q)).collect();
        assert_eq!(got[k].to_vec::<i64>().unwrap(), w, "fetch {k}");
    }
    let sums: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(p, q)| p.wrapping_add(*q) as f32)
        .collect();
    assert_eq!(got[10].to_vec::<f32>().unwrap(), sums);
    let prod = a
        .iter()
        .zip(&b)
        .fold(0i64, |s, (p, q)| s.wrapping_add(p.wrapping_mul(*q)));
    assert_eq!(got[11].scalar_value::<i64>().unwrap(), prod);
    let top = a
        .iter()
        .zip(&b)
        .map(|(p, q)| p.wrapping_sub(*q))
        .max()
        .unwrap();
    assert_eq!(got[12].scalar_value::<i64>().unwrap(), top);
    // Division by zero is an error on both backends, naming the op.
    let zero = Array::new([n], vec![0i64; n]).unwrap();
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        let e = s.run(&[fetches[3]], &[(x, feeds[0].1.clone()), (y, zero.clone())]);
        let e = e.expect_err("division by zero").to_string();
        assert!(
            e.contains("division by zero") && e.contains("div"),
            "{backend:?}: {e}"
        );
    }
}
