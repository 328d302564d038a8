//! Assign and group: variable updates with snapshot semantics, on both backends.

use kiln::prelude::*;

const BACKENDS: [Backend; 2] = [Backend::Interpreter, Backend::Jit];

fn f32s(a: &Array) -> Vec<f32> {
    a.to_vec::<f32>().unwrap()
}

#[test]
fn assign_add_counts_runs() {
    for b in BACKENDS {
        let g = Graph::new();
        let step = g.variable("step", Shape::scalar(), init::zeros());
        let inc = step.assign_add(1.0f32);
        let mut s = Session::with_backend(&g, b).unwrap();
        for i in 1..=3 {
            let out = s.run(&[inc], &[]).unwrap();
            // The fetched assign gives the new value.
            assert_eq!(out[0].scalar_value::<f32>().unwrap(), i as f32, "{b:?}");
        }
        assert_eq!(
            s.variable(step).unwrap().scalar_value::<f32>().unwrap(),
            3.0
        );
    }
}

#[test]
fn reads_in_a_run_see_the_old_value() {
    for b in BACKENDS {
        let g = Graph::new();
        let w = g.variable("w", [2], init::constant(3.0));
        let up = w.assign(w * 2.0f32);
        let mut s = Session::with_backend(&g, b).unwrap();
        let out = s.run(&[w, up, w + 1.0f32], &[]).unwrap();
        assert_eq!(f32s(&out[0]), vec![3.0, 3.0], "{b:?}");
        assert_eq!(f32s(&out[1]), vec![6.0, 6.0], "{b:?}");
        assert_eq!(f32s(&out[2]), vec![4.0, 4.0], "{b:?}");
        assert_eq!(f32s(s.variable(w).unwrap()), vec![6.0, 6.0], "{b:?}");
    }
}

#[test]
fn a_group_swaps_two_variables() {
    // Only snapshot semantics make `a = b; b = a` a swap.
    for b in BACKENDS {
        let g = Graph::new();
        let x = g.variable("x", [3], init::constant(1.0));
        let y = g.variable("y", [3], init::constant(2.0));
        let swap = g.group(&[x.assign(y), y.assign(x)]);
        let mut s = Session::with_backend(&g, b).unwrap();
        let out = s.run(&[swap], &[]).unwrap();
        assert!(out[0].scalar_value::<bool>().unwrap());
        assert_eq!(f32s(s.variable(x).unwrap()), vec![2.0; 3], "{b:?}");
        assert_eq!(f32s(s.variable(y).unwrap()), vec![1.0; 3], "{b:?}");
    }
}

#[test]
fn assigning_from_a_placeholder() {
    for b in BACKENDS {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, [Some(2)]);
        let w = g.variable("w", [2], init::zeros());
        let set = w.assign(x);
        let mut s = Session::with_backend(&g, b).unwrap();
        let xv = Array::new([2], vec![5.0f32, -1.0]).unwrap();
        s.run(&[set], &[(x, xv.clone())]).unwrap();
        assert_eq!(s.variable(w).unwrap(), &xv, "{b:?}");
    }
}

#[test]
fn hand_written_sgd_agrees_across_backends() {
    // w <- w - lr * dL/dw on a least-squares problem, five steps on each backend.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let y = g.placeholder("y", DType::F32, [None, Some(1)]);
    let w = g.variable("w", [3, 1], init::glorot_uniform(1));
    let b = g.variable("b", [1], init::zeros());
    let pred = x.matmul(w) + b;
    let loss = (pred - y).square().mean(&[0, 1], false);
    let gs = gradients(&[loss], &[w, b], None).unwrap();
    let lr = 0.1f32;
    let train = g.group(&[w.assign_sub(gs[0] * lr), b.assign_sub(gs[1] * lr)]);
    let xv = Array::new(
        [4, 3],
        vec![
            1.0f32, 0.0, 2.0, 0.5, 1.0, -1.0, 0.0, 0.3, 0.1, -0.2, 0.4, 1.0,
        ],
    )
    .unwrap();
    let yv = Array::new([4, 1], vec![1.0f32, 0.0, -1.0, 2.0]).unwrap();
    let mut finals = vec![];
    for be in BACKENDS {
        let mut s = Session::with_backend(&g, be).unwrap();
        let mut losses = vec![];
        for _ in 0..5 {
            let out = s
                .run(&[loss, train], &[(x, xv.clone()), (y, yv.clone())])
                .unwrap();
            losses.push(out[0].scalar_value::<f32>().unwrap());
        }
        assert!(losses[4] < losses[0], "{be:?}: {losses:?}");
        finals.push(f32s(s.variable(w).unwrap()));
    }
    for (a, b) in finals[0].iter().zip(&finals[1]) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{finals:?}");
    }
}

#[test]
fn assigning_a_variable_twice_in_one_run_is_an_error() {
    let g = Graph::new();
    let w = g.variable("w", Shape::scalar(), init::zeros());
    let both = g.group(&[w.assign_add(1.0f32), w.assign_add(2.0f32)]);
    let mut s = Session::new(&g).unwrap();
    let e = s.run(&[both], &[]).unwrap_err().to_string();
    assert!(e.contains("\"w\" is assigned twice"), "{e}");
    assert!(e.contains("tests/effects.rs"), "{e}");
    // Nothing changed.
    assert_eq!(s.variable(w).unwrap().scalar_value::<f32>().unwrap(), 0.0);
}

#[test]
fn assign_checks_its_destination_and_type() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [Some(2)]);
    let _ = x.assign(x * 2.0f32);
    let e = g.check().unwrap_err().to_string();
    assert!(e.starts_with("assign at tests/effects.rs:"), "{e}");
    assert!(e.contains("the destination must be a variable"), "{e}");

    let g = Graph::new();
    let w = g.variable("w", [2], init::zeros());
    let v = g.constant(Array::new([3], vec![1.0f32, 2.0, 3.0]).unwrap());
    let _ = w.assign(v);
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("cannot assign f32[3]"), "{e}");
}

#[test]
fn train_ops_survive_a_text_round_trip() {
    let g = Graph::new();
    let w = g.variable("w", [2], init::constant(1.0));
    let _ = g.group(&[w.assign(w * 3.0f32)]).named("train");
    let text = g.dump();
    assert!(text.contains("assign("), "{text}");
    assert!(text.contains("group("), "{text}");
    let g2 = Graph::parse(&text).unwrap();
    let mut s = Session::new(&g2).unwrap();
    s.run(&[g2.by_name("train").unwrap()], &[]).unwrap();
    let w2 = g2.by_name("w").unwrap();
    assert_eq!(f32s(s.variable(w2).unwrap()), vec![3.0, 3.0]);
}

/// One feed checker (src/feeds.rs) serves both backends: the same mistake gives the same
/// message, and when several feeds are wrong the first created is the one reported.
#[test]
fn both_backends_report_the_same_feed_errors() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(2)]);
    let y = g.placeholder("y", DType::F32, [None, Some(2)]);
    let out = (x + y).sum_all();
    let z = |rows: usize, cols: usize| Array::zeros(DType::F32, [rows, cols]);
    // A mismatch names the line that made the placeholder.
    let x_at = format!(
        " (placeholder was made at {})",
        g.data().node(x.id()).loc.as_ref().unwrap()
    );
    let shape_msg =
        format!(r#"run: "x" expects f32[?,2], but the fed array has shape [3, 3]{x_at}"#);
    let dtype_msg = format!(r#"run: "x" expects f32[?,2], but the fed array holds i32{x_at}"#);
    let cases = [
        (
            vec![],
            r#"run: 2 placeholders were not fed: "x" (f32[?,2]), "y" (f32[?,2])"#,
        ),
        (
            vec![(y, z(4, 2)), (x, z(3, 2))],
            r#"run: feeds disagree on the batch size: "x" has 3 rows, "y" has 4"#,
        ),
        (vec![(y, z(3, 3)), (x, z(3, 3))], shape_msg.as_str()),
        (
            vec![(x, Array::zeros(DType::I32, [3, 2])), (y, z(3, 2))],
            dtype_msg.as_str(),
        ),
    ];
    for (feeds, want) in cases {
        for b in BACKENDS {
            let mut s = Session::with_backend(&g, b).unwrap();
            let e = s.run(&[out], &feeds).unwrap_err().to_string();
            assert_eq!(e, want, "{b:?}");
        }
        let mut it = Interpreter::new(&g).unwrap();
        assert_eq!(it.run(&[out], &feeds).unwrap_err().to_string(), want);
    }
    // Feeding a computed tensor is the interpreter's privilege.
    let sum = x + y;
    let fed = [(sum, z(3, 2))];
    let mut s = Session::with_backend(&g, Backend::Interpreter).unwrap();
    assert_eq!(s.run(&[sum * 2.0f32], &fed).unwrap()[0].shape(), &[3, 2]);
    let mut s = Session::new(&g).unwrap();
    let e = s.run(&[sum * 2.0f32], &fed).unwrap_err().to_string();
    assert!(e.contains("feeds placeholders only"), "{e}");
}

/// Both backends keep their variables in one store (src/vars.rs): a variable added after the
/// session was made is initialized before the next run, a value of the wrong type is
/// refused, and an update computed in f64 (the interpreter's f64 precision) keeps the
/// variable's dtype.
#[test]
fn one_variable_store_for_both_backends() {
    for b in BACKENDS {
        let g = Graph::new();
        let w = g.variable("w", [2], init::constant(1.0));
        let mut s = Session::with_backend(&g, b).unwrap();
        let v = g.variable("v", [2], init::constant(5.0)); // added after the session
        let up = v.assign(v + w);
        s.run(&[up], &[]).unwrap();
        assert_eq!(f32s(s.variable(v).unwrap()), vec![6.0, 6.0], "{b:?}");
        let e = s
            .set_variable(v, Array::zeros(DType::F32, [3]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, r#"set_variable: "v" is f32[2], the value is f32[3]"#);
        let e = s
            .set_variable(up, Array::zeros(DType::F32, [2]))
            .unwrap_err();
        assert!(e.to_string().ends_with("is not a variable"), "{e}");
        let other = Graph::new();
        let o = other.variable("o", [2], init::zeros());
        assert!(s.set_variable(o, Array::zeros(DType::F32, [2])).is_err());
    }
    let g = Graph::new();
    let w = g.variable("w", [2], init::constant(1.5));
    let up = w.assign(w * 2.0f32);
    let mut it = Interpreter::with_precision(&g, Precision::F64).unwrap();
    let out = it.run(&[up], &[]).unwrap();
    assert_eq!(out[0].dtype(), DType::F64);
    let after = it.variable(w.id()).unwrap();
    assert_eq!(after.dtype(), DType::F32);
    assert_eq!(f32s(after), vec![3.0, 3.0]);
    // f64 precision also accepts an f64 value for an f32 variable.
    it.set_variable(w.id(), Array::new([2], vec![0.5f64, 0.25]).unwrap())
        .unwrap();
    assert!(it
        .set_variable(w.id(), Array::zeros(DType::I32, [2]))
        .is_err());
}
