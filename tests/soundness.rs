//! An [`Executable`] runs native code that indexes its buffers without bounds checks, so
//! every array it is handed must have exactly the type the code was compiled for. These tests
//! call an executable directly (not through a session, which checks feeds on its own) with
//! wrong counts, dtypes and shapes, and check each is refused with an error naming the
//! placeholder or variable before any native code runs; output arrays handed in for reuse
//! are written into only when their type matches. (That the fields describing those types
//! cannot be changed from outside is a `compile_fail` doctest on `Executable`.)

use kiln::init;
use kiln::jit::Executable;
use kiln::passes::{Pipeline, Program};
use kiln::prelude::*;

/// `y = tanh(x · w) + 1` with `x: f32[4,3]`, `w: f32[3,2]` a variable.
fn compiled() -> Executable {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let w = g.variable("w", [3, 2], init::zeros());
    let y = x.matmul(w).tanh() + 1.0;
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(4);
    pl.run(&mut p).unwrap();
    Executable::compile(&p).unwrap()
}

fn feed_error(exe: &Executable, feeds: &[&Array], vars: &[&Array]) -> String {
    match exe.run(feeds, vars, 0) {
        Ok(_) => panic!("a wrong buffer was accepted"),
        Err(e @ kiln::Error::Feed(_)) => e.to_string(),
        Err(e) => panic!("not a feed error: {e:?}"),
    }
}

#[test]
fn the_types_an_executable_expects_are_readable() {
    let exe = compiled();
    assert_eq!(exe.placeholders().len(), 1);
    assert_eq!(exe.placeholders()[0].1.to_string(), "f32[4,3]");
    assert_eq!(exe.variables()[0].1.to_string(), "f32[3,2]");
}

#[test]
fn right_buffers_run() {
    let exe = compiled();
    let x = Array::new([4, 3], vec![1f32; 12]).unwrap();
    let w = Array::zeros(DType::F32, [3, 2]);
    let y = exe.run(&[&x], &[&w], 0).unwrap();
    assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1.0; 8]);
}

#[test]
fn a_smaller_or_larger_feed_is_refused() {
    let exe = compiled();
    let w = Array::zeros(DType::F32, [3, 2]);
    for shape in [[1, 3], [4, 2], [5, 3], [0, 3]] {
        let x = Array::zeros(DType::F32, shape);
        let e = feed_error(&exe, &[&x], &[&w]);
        assert!(e.contains("placeholder \"x\" expects f32[4,3]"), "{e}");
    }
    // Same element count, other shape: still refused (kernels index by the compiled shape).
    let x = Array::zeros(DType::F32, [3, 4]);
    assert!(feed_error(&exe, &[&x], &[&w]).contains("\"x\""));
    let x = Array::zeros(DType::F32, [12]);
    assert!(feed_error(&exe, &[&x], &[&w]).contains("\"x\""));
}

#[test]
fn a_feed_of_another_dtype_is_refused() {
    let exe = compiled();
    let w = Array::zeros(DType::F32, [3, 2]);
    for dt in [DType::F64, DType::I32, DType::Bool] {
        let x = Array::zeros(dt, [4, 3]);
        let e = feed_error(&exe, &[&x], &[&w]);
        assert!(e.contains(&format!("got {dt}[4, 3]")), "{e}");
    }
}

#[test]
fn a_wrong_variable_is_refused() {
    let exe = compiled();
    let x = Array::zeros(DType::F32, [4, 3]);
    for w in [
        Array::zeros(DType::F32, [2, 3]),
        Array::zeros(DType::F32, [3]),
        Array::zeros(DType::F64, [3, 2]),
    ] {
        let e = feed_error(&exe, &[&x], &[&w]);
        assert!(e.contains("variable \"w\" expects f32[3,2]"), "{e}");
    }
}

#[test]
fn a_wrong_number_of_buffers_is_refused() {
    let exe = compiled();
    let x = Array::zeros(DType::F32, [4, 3]);
    let w = Array::zeros(DType::F32, [3, 2]);
    let e = feed_error(&exe, &[], &[&w]);
    assert!(
        e.contains("expected 1 feed(s) and 1 variable(s), got 0 and 1"),
        "{e}"
    );
    let e = feed_error(&exe, &[&x, &x], &[&w]);
    assert!(e.contains("got 2 and 1"), "{e}");
    let e = feed_error(&exe, &[&x], &[]);
    assert!(e.contains("got 1 and 0"), "{e}");
}

#[test]
fn outputs_handed_in_are_reused_only_when_their_type_matches() {
    let exe = compiled();
    let x = Array::new([4, 3], vec![1f32; 12]).unwrap();
    let w = Array::zeros(DType::F32, [3, 2]);
    // Too small, wrong shape, wrong dtype: replaced by a new array of the right type.
    for stale in [
        Array::zeros(DType::F32, [1]),
        Array::zeros(DType::F32, [2, 4]),
        Array::zeros(DType::F64, [4, 2]),
        Array::zeros(DType::I32, [4, 2]),
    ] {
        let mut outs = vec![stale];
        exe.run_into(&[&x], &[&w], 0, &mut outs).unwrap();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].dtype(), DType::F32);
        assert_eq!(outs[0].shape(), &[4, 2]);
        assert_eq!(outs[0].to_vec::<f32>().unwrap(), vec![1.0; 8]);
    }
    // Extra arrays are dropped; a matching one is overwritten.
    let mut outs = vec![
        Array::new([4, 2], vec![7f32; 8]).unwrap(),
        Array::zeros(DType::F32, [9]),
    ];
    exe.run_into(&[&x], &[&w], 0, &mut outs).unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].to_vec::<f32>().unwrap(), vec![1.0; 8]);
}
