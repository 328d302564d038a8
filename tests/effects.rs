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
