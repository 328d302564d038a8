//! An [`Executable`] runs native code that indexes its buffers without bounds checks, so
//! every array it is handed must have exactly the type the code was compiled for. These tests
//! call an executable directly (not through a session, which checks feeds on its own) with
//! wrong counts, dtypes and shapes, and check each is refused with an error naming the
//! placeholder or variable before any native code runs; output arrays handed in for reuse
//! are written into only when their type matches. (That the fields describing those types
//! cannot be changed from outside is a `compile_fail` doctest on `Executable`.)
//!
//! A `Program`'s graph and outputs are public, so they can change between the pipeline and
//! the compile: a constant, reshape or kernel given a larger type, an output dropped, a
//! matmul kernel whose product outgrows its output. Each is refused at compile.

use kiln::init;
use kiln::internals::Executable;
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

/// A program the pipeline produced and then changed by hand (its graph and outputs are
/// public): whatever was changed, compiling refuses it instead of running native code on
/// buffers sized for the old types.
fn refused_after(fusion: bool, change: impl FnOnce(&mut Program)) -> kiln::Error {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 3]);
    let c = g.constant(Array::new([3], vec![1f32, 2.0, 3.0]).unwrap());
    let h = (x * c).exp();
    let y = h.reshape([Some(3), Some(4)]).tanh();
    let z = y.sum_all();
    let mut p = Program::new(g.snapshot(), vec![z.id(), y.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(1);
    if !fusion {
        pl.remove("fusion");
    }
    pl.run(&mut p).unwrap();
    Executable::compile(&p).expect("the unchanged program compiles");
    change(&mut p);
    match Executable::compile(&p) {
        Ok(_) => panic!("a changed program compiled"),
        Err(e) => e,
    }
}

/// Grows the type of the first live node matching `pick` to 100 elements.
fn grow(p: &mut Program, pick: impl Fn(&kiln::Op) -> bool) {
    let id = p
        .live_order()
        .into_iter()
        .find(|&id| pick(&p.graph.node(id).op))
        .expect("such a node");
    let (_, ty) = kiln::internals::node_mut_parts(&mut p.graph, id);
    ty.shape = Shape::from([100]);
}

#[test]
fn a_constant_retyped_after_the_pipeline_is_refused() {
    let e = refused_after(false, |p| grow(p, |op| matches!(op, kiln::Op::Constant(_))));
    assert!(e.to_string().contains("constant"), "{e}");
}

#[test]
fn a_reshape_retyped_after_the_pipeline_is_refused() {
    // In a slot, the buffer assignment no longer fits it.
    let e = refused_after(false, |p| grow(p, |op| matches!(op, kiln::Op::Reshape)));
    assert!(matches!(e, kiln::Error::Internal(_)), "{e:?}");
    // A fetched reshape of a feed is a copy out of the feed's array: it would read past it.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 3]);
    let r = x.reshape([Some(3), Some(4)]);
    let mut p = Program::new(g.snapshot(), vec![r.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(1);
    pl.remove("fusion");
    pl.run(&mut p).unwrap();
    Executable::compile(&p).expect("the unchanged program compiles");
    grow(&mut p, |op| matches!(op, kiln::Op::Reshape));
    let e = Executable::compile(&p)
        .err()
        .expect("a grown reshape compiled");
    assert!(e.to_string().contains("jit: reshape"), "{e}");
}

#[test]
fn a_kernel_retyped_after_the_pipeline_is_refused() {
    let e = refused_after(true, |p| grow(p, |op| matches!(op, kiln::Op::Fusion(_))));
    assert!(
        matches!(e, kiln::Error::Internal(_) | kiln::Error::Invalid(_)),
        "{e:?}"
    );
}

#[test]
fn dropping_an_output_after_memplan_is_refused() {
    // The dropped output becomes an intermediate that the plan gave no slot.
    let e = refused_after(true, |p| {
        p.outputs.pop();
    });
    assert!(e.to_string().contains("changed after memplan"), "{e}");
}

#[test]
fn a_fused_node_pointed_at_another_kernel_is_refused() {
    // Kernels live in the program's table, which only the crate writes; what safe code can
    // still change is which kernel a fused node names. Point a 4x2 product's node at the
    // kernel of a 100x2 product: `gemm` would write 100 rows into a 4-row output.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 3]);
    let big = g.placeholder("big", DType::F32, [100, 3]);
    let w = g.placeholder("w", DType::F32, [3, 2]);
    let y = x.matmul(w);
    let z = big.matmul(w);
    let mut p = Program::new(g.snapshot(), vec![y.id(), z.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(1);
    pl.run(&mut p).unwrap();
    let fused: Vec<_> = p
        .live_order()
        .into_iter()
        .filter(|&id| matches!(p.graph.node(id).op, kiln::Op::Fusion(_)))
        .collect();
    assert_eq!(fused.len(), 2);
    let ids: Vec<_> = fused
        .iter()
        .map(|&id| match p.graph.node(id).op {
            kiln::Op::Fusion(k) => k,
            _ => unreachable!(),
        })
        .collect();
    let (op, _) = kiln::internals::node_mut_parts(&mut p.graph, fused[0]);
    *op = kiln::Op::Fusion(ids[1]);
    let e = Executable::compile(&p)
        .err()
        .expect("a fused node naming another kernel compiled");
    assert!(
        matches!(e, kiln::Error::Internal(_) | kiln::Error::Invalid(_)),
        "{e:?}"
    );
}
