//! Regression tests for what the fuzz harness (tests/fuzz/mod.rs) found; tests/fuzz_findings.md
//! describes each finding. A finding whose fix belongs to a file another change owns is
//! `#[ignore]`d here with its minimized reproducer, and listed in `fuzz::KNOWN`: when the fix
//! lands, remove the `#[ignore]` and the `KNOWN` entry.

use kiln::prelude::*;

/// F1: the parser panics (index out of bounds at src/graph/mod.rs:258) on an `assign` with no
/// operands instead of returning an error.
#[test]
fn f1_parser_rejects_an_assign_without_operands() {
    let text = "kiln.graph {\n  %0 = assign() : f32[2]\n}\n";
    let r = std::panic::catch_unwind(|| Graph::parse(text).map(|_| ()));
    match r {
        Ok(Err(e)) => assert!(e.to_string().contains("assign"), "{e}"),
        Ok(Ok(())) => panic!("an assign without operands was accepted"),
        Err(_) => panic!("the parser panicked"),
    }
}

/// F2: i32 arithmetic that overflows: the interpreter saturates, the JIT wraps. Minimized
/// from graphs seed 1013017 (`cast(inf) = i32::MAX`, plus 1, in a sum) and seed 3036693
/// (`neg(cast(-inf))` is `i32::MAX` on the interpreter, `i32::MIN` on the JIT, so a
/// following `where` picks other elements).
#[test]
fn f2_i32_overflow_is_the_same_on_both_backends() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let y = x.cast(DType::I32).sum(&[1], false);
    let xv = Array::new([1, 3], vec![f32::INFINITY, 1.0, 0.0]).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let j = jit.run(&[y], &[(x, xv.clone())]).unwrap();
    let i = interp.run(&[y], &[(x, xv)]).unwrap();
    // Wrapping, as TF and XLA do (issue 16, item 7).
    assert_eq!(j[0].to_vec::<i32>().unwrap(), vec![i32::MIN]);
    assert!(
        j[0].bits_eq(&i[0]),
        "jit {:?} vs interpreter {:?}",
        j[0],
        i[0]
    );
}

/// F2, as issue 16 (item 7) reported it: `reduce_sum(i32[?,3,9], axes=[0,2])` whose sums
/// overflow, and `neg`/`abs` of `i32::MIN`: both backends wrap, to the same bits.
#[test]
fn f2_i32_reduce_sum_neg_and_abs_wrap_on_both_backends() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::I32, [None, Some(3), Some(9)]);
    let s = x.sum(&[0, 2], false);
    let fetch = [s, -x, x.abs()];
    let data: Vec<i32> = (0..2 * 3 * 9)
        .map(|i| match i % 4 {
            0 => i32::MAX,
            1 => i32::MIN,
            2 => i32::MAX - i,
            _ => 1 << 30,
        })
        .collect();
    let xv = Array::new([2, 3, 9], data.clone()).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let j = jit.run(&fetch, &[(x, xv.clone())]).unwrap();
    let i = interp.run(&fetch, &[(x, xv)]).unwrap();
    // The wrapped sums, computed here with Rust's wrapping arithmetic.
    let want: Vec<i32> = (0..3)
        .map(|r| {
            (0..2)
                .flat_map(|b| (0..9).map(move |c| (b, c)))
                .fold(0i32, |acc, (b, c)| {
                    acc.wrapping_add(data[b * 27 + r * 9 + c])
                })
        })
        .collect();
    assert_eq!(i[0].to_vec::<i32>().unwrap(), want);
    assert_eq!(i[1].to_vec::<i32>().unwrap()[1], i32::MIN);
    assert_eq!(i[2].to_vec::<i32>().unwrap()[1], i32::MIN);
    for (k, (a, b)) in j.iter().zip(&i).enumerate() {
        assert!(a.bits_eq(b), "fetch {k}: jit {a:?} vs interpreter {b:?}");
    }
}

/// F3: the sign of zero: `tanh(-0)` is -0 on the interpreter (IEEE) and was +0 on the JIT, so
/// `recip(tanh(x))` was -inf against +inf. Minimized from seed 1016740.
#[test]
fn f3_tanh_keeps_the_sign_of_zero() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None]);
    let y = x.tanh().recip();
    let xv = Array::new([1], vec![-0.0f32]).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let j = jit.run(&[y], &[(x, xv.clone())]).unwrap();
    let i = interp.run(&[y], &[(x, xv)]).unwrap();
    assert_eq!(i[0].to_vec::<f32>().unwrap(), vec![f32::NEG_INFINITY]);
    assert!(
        j[0].bits_eq(&i[0]),
        "jit {:?} vs interpreter {:?}",
        j[0],
        i[0]
    );
}

/// F4: sizes computed with wrapping arithmetic: the parser accepts a constant claiming 2^64
/// elements and a pad to `2 + usize::MAX` elements (which wraps to 1).
#[test]
fn f4_overflowing_sizes_are_errors() {
    let wrong = [
        "kiln.graph {\n  %0 = constant(value=[]) : f32[4294967296,4294967296]\n}\n",
        "kiln.graph {\n  %0 = placeholder() : f32[2] \"x\"\n  %1 = pad(%0, lo=[0], hi=[18446744073709551615]) : f32[1]\n}\n",
    ]
    .into_iter()
    .filter(|text| !matches!(std::panic::catch_unwind(|| Graph::parse(text).map(|_| ())), Ok(Err(_))))
    .collect::<Vec<_>>();
    assert!(
        wrong.is_empty(),
        "accepted or panicked on:\n{}",
        wrong.join("\n")
    );
}

/// F5: the maximum of an empty i32 axis: the JIT gives `i32::MIN`, the interpreter an
/// out-of-range value (`-inf` once cast to f64, 0 after a multiplication). Minimized from
/// graphs seeds 2012327 and 2024399.
#[test]
fn f5_max_of_an_empty_i32_axis_is_the_same_on_both_backends() {
    let g = Graph::new();
    let v = g.placeholder("v", DType::I32, [0]);
    let m = v.max(&[0], true);
    let fetch = [m, m.cast(DType::F64), m * 1];
    let vv = Array::new([0], Vec::<i32>::new()).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let j = jit.run(&fetch, &[(v, vv.clone())]).unwrap();
    let i = interp.run(&fetch, &[(v, vv)]).unwrap();
    assert_eq!(i[0].to_vec::<i32>().unwrap(), vec![i32::MIN]);
    for (k, (a, b)) in j.iter().zip(&i).enumerate() {
        assert!(a.bits_eq(b), "fetch {k}: jit {a:?} vs interpreter {b:?}");
    }
}

/// F6: a `?` dimension that no fed placeholder sets: the JIT silently takes batch 1, the
/// interpreter refuses. Minimized from graphs seed 351 (`cargo test`'s own cases): the
/// gradient with respect to an unfed `x: f32[?,3]` of a loss that does not use it.
#[test]
fn f6_an_unfed_batch_dimension_is_refused_on_both_backends() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let c = g.constant(Array::new([2], vec![1.0f32, 2.0]).unwrap());
    let dx = grad(c.sum_all(), &[x]).unwrap()[0];
    let r = g.random_uniform([None, Some(3)], 0.0, 1.0, 1);
    for fetch in [dx, r] {
        let mut jit = Session::new(&g).unwrap();
        let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
        let i = interp.run(&[fetch], &[]);
        assert!(i.is_err(), "the interpreter ran an unfed batch: {i:?}");
        let j = jit.run(&[fetch], &[]);
        assert!(j.is_err(), "the JIT ran an unfed batch: {j:?}");
        let (i, j) = (i.unwrap_err().to_string(), j.unwrap_err().to_string());
        assert_eq!(i, j, "the backends report different errors");
        assert!(j.contains("cannot tell the batch size"), "{j}");
    }
}

/// F7: `size` of an integer division by zero: the JIT never evaluates the division (only its
/// shape matters), the interpreter reports the division by zero. Minimized from graphs seeds
/// 5139815, 5278127 and 5577161.
#[test]
fn f7_size_of_a_division_by_zero_agrees_on_both_backends() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::I32, [None, Some(3)]);
    let n = (x / x).size(&[0]);
    let xv = Array::new([1, 3], vec![0i32, 1, 2]).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let j = jit.run(&[n], &[(x, xv.clone())]);
    let i = interp.run(&[n], &[(x, xv)]);
    // `size` does not evaluate its operand, on either backend: the count of rows is 1.
    let (j, i) = (j.unwrap(), i.unwrap());
    assert!(
        j[0].bits_eq(&i[0]),
        "jit {:?} vs interpreter {:?}",
        j[0],
        i[0]
    );
    assert_eq!(i[0].to_vec::<f32>().unwrap(), vec![1.0]);
}

/// F8: dividing by a subnormal constant: `1e-45 / 1e-45` is 1 (IEEE, the interpreter) but
/// inf on the JIT, as if the division became a multiplication by the reciprocal, which
/// overflows. Minimized from graphs seed 5440607.
#[test]
fn f8_division_by_a_subnormal_constant_is_exact() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [1]);
    let c = g.constant(Array::new([1], vec![1e-45f32]).unwrap());
    let y = x / c;
    let xv = Array::new([1], vec![1e-45f32]).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let j = jit.run(&[y], &[(x, xv.clone())]).unwrap();
    let i = interp.run(&[y], &[(x, xv)]).unwrap();
    assert_eq!(i[0].to_vec::<f32>().unwrap(), vec![1.0]);
    assert!(
        j[0].bits_eq(&i[0]),
        "jit {:?} vs interpreter {:?}",
        j[0],
        i[0]
    );
}

/// Issue 16, item 7: the interpreter's matmul turned -0 into +0 (its sums started from +0)
/// while gemm keeps -0, so a following division gave -inf against +inf. Both keep IEEE signed
/// zero now: a sum of products that are all -0 is -0.
#[test]
fn matmul_of_zeros_keeps_the_sign_of_zero_on_both_backends() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [85, 16]);
    let a = g.constant(Array::new([85, 1], vec![-0.0f32; 85]).unwrap());
    let b = g.constant(Array::new([1, 16], vec![0.0f32; 16]).unwrap());
    let y = x / a.matmul(b);
    let xv = Array::new([85, 16], vec![1.0f32; 85 * 16]).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let j = jit.run(&[y], &[(x, xv.clone())]).unwrap();
    let i = interp.run(&[y], &[(x, xv)]).unwrap();
    assert!(i[0]
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v == f32::NEG_INFINITY));
    assert!(
        j[0].bits_eq(&i[0]),
        "jit {:?} vs interpreter {:?}",
        j[0],
        i[0]
    );
}

/// Runs `y` on both backends with `feeds` and returns (JIT, interpreter).
fn both(g: &Graph, y: Tensor<'_>, feeds: &[(Tensor<'_>, Array)]) -> (Array, Array) {
    let mut jit = Session::new(g).unwrap();
    let mut interp = Session::with_backend(g, Backend::Interpreter).unwrap();
    let j = jit.run(&[y], feeds).unwrap().remove(0);
    let i = interp.run(&[y], feeds).unwrap().remove(0);
    (j, i)
}

/// F9: a padded convolution whose filter holds an infinity: the interpreter (the oracle,
/// src/interp/conv.rs) skipped the padding taps, so `1·1` was 1, while the JIT's im2col path
/// writes zeros in the padding and multiplies them (`0·inf + 1` is NaN); the filter gradient
/// met the same (`0·dy` with an infinite `dy`), and the depthwise loop skipped the taps as
/// the interpreter did. Fixed by defining a padding tap as a zero that is multiplied, as
/// TensorFlow and PyTorch compute: the interpreter and the depthwise loop now do. Minimized
/// from graphs seeds 54 and 306 (the first cases with convolutions).
#[test]
fn f9_padded_conv_with_an_infinite_tap_agrees_on_both_backends() {
    use kiln::{Conv2dOptions, Padding};
    for c in [2, 1] {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [1, 1, 1, c]);
        let w = g.placeholder("w", DType::F32, [1, 2, 1, c]);
        let o = Conv2dOptions::new()
            .padding(Padding::Explicit([(0, 0), (1, 0)]))
            .groups(c);
        let y = x.conv2d(w, &o);
        let xv = Array::new([1, 1, 1, c], vec![1.0f32; c]).unwrap();
        let mut wv = vec![f32::INFINITY; c];
        wv.extend(vec![1.0f32; c]);
        let wv = Array::new([1, 2, 1, c], wv).unwrap();
        let (j, i) = both(&g, y, &[(x, xv.clone()), (w, wv.clone())]);
        let (jv, iv) = (j.to_vec::<f32>().unwrap(), i.to_vec::<f32>().unwrap());
        assert!(
            iv.iter().all(|v| v.is_nan()),
            "groups {c}: interpreter {iv:?}"
        );
        assert!(jv.iter().all(|v| v.is_nan()), "groups {c}: jit {jv:?}");
        // The filter gradient: an infinite dy in the padding column gives 0·inf = NaN there.
        let dy = g.placeholder("dy", DType::F32, [1, 1, 1, c]);
        let dwy = kiln::autodiff::vjp(y, &[w], dy).unwrap()[0];
        let dyv = Array::new([1, 1, 1, c], vec![f32::INFINITY; c]).unwrap();
        let feeds = [(x, xv), (w, wv), (dy, dyv)];
        let (j, i) = both(&g, dwy, &feeds);
        let (jv, iv) = (j.to_vec::<f32>().unwrap(), i.to_vec::<f32>().unwrap());
        for k in 0..c {
            assert!(
                jv[k].is_nan() && iv[k].is_nan(),
                "groups {c}: {jv:?} vs {iv:?}"
            );
            assert_eq!(jv[c + k], iv[c + k], "groups {c}: {jv:?} vs {iv:?}");
        }
    }
}

/// F10: an integer division by zero outside a slice: the JIT computes only the sliced
/// elements (the slice joins the division's kernel as an index map), so it never divides by
/// the zero and returns the slice, while the interpreter evaluates the whole division and
/// reports it. As F7 was for `size`, the backends must agree (both refuse, or both return the
/// slice). Minimized from graphs seed 11034482 (an empty slice of `neg(p) / p`).
#[test]
fn f10_a_division_by_zero_outside_a_slice_agrees_on_both_backends() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::I32, [1, 3]);
    let y = (x / x).slice(&[0, 1], Shape::fixed(&[1, 2]));
    let xv = Array::new([1, 3], vec![0i32, 1, 2]).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let j = jit.run(&[y], &[(x, xv.clone())]).map(|mut v| v.remove(0));
    let i = interp.run(&[y], &[(x, xv)]).map(|mut v| v.remove(0));
    match (&j, &i) {
        (Ok(a), Ok(b)) => assert!(a.bits_eq(b), "jit {a:?} vs interpreter {b:?}"),
        (Err(_), Err(_)) => {}
        _ => panic!("jit {j:?} vs interpreter {i:?}"),
    }
}
