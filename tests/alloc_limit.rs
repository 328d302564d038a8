//! The allocation limit at a small value: `KILN_MAX_ALLOC` is read once per process, so these
//! tests have a test binary of their own, and each sets it (to 1 MiB) before kiln reads it.

use kiln::prelude::*;
use std::sync::Once;

const LIMIT: usize = 1 << 20;

fn small_limit() {
    static SET: Once = Once::new();
    SET.call_once(|| std::env::set_var("KILN_MAX_ALLOC", LIMIT.to_string()));
    assert_eq!(kiln::shape::alloc_limit(), LIMIT);
}

/// Two intermediates of 800 KB each fit the limit one by one, but not together: the JIT
/// refuses the batch, naming the largest intermediate's op and line and the total; the
/// interpreter, which holds each as f64 (1.6 MB), refuses the first of them. Half the batch
/// runs on both.
#[test]
fn intermediates_that_together_pass_the_limit_are_an_error() {
    small_limit();
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(1000)]);
    let a = x.exp();
    let la = line!() - 1;
    let b = (x + 1.0).log();
    let lb = line!() - 1;
    let y = (a * b).sum(&[1], false) + a.max(&[1], false) + b.max(&[1], false);
    let feed = |rows: usize| Array::new([rows, 1000], vec![0.25f32; rows * 1000]).unwrap();
    let mut jit = Session::new(&g).unwrap();
    let msg = jit.run(&[y], &[(x, feed(200))]).unwrap_err().to_string();
    assert!(msg.starts_with("exp") || msg.starts_with("log"), "{msg}");
    assert!(
        msg.contains(&format!("alloc_limit.rs:{la}"))
            || msg.contains(&format!("alloc_limit.rs:{lb}")),
        "{msg}"
    );
    assert!(msg.contains("intermediates at batch size 200"), "{msg}");
    assert!(msg.contains("800000 bytes"), "{msg}");
    assert!(msg.contains(&format!("limit of {LIMIT} bytes")), "{msg}");
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let msg = interp.run(&[y], &[(x, feed(200))]).unwrap_err().to_string();
    assert!(
        msg.contains("1600000 bytes as the interpreter's f64 values"),
        "{msg}"
    );
    assert!(msg.contains("f32[200, 1000] at batch size 200"), "{msg}");
    // The graph is fine at a smaller batch, on both backends, with the same values.
    let j = jit.run(&[y], &[(x, feed(50))]).unwrap();
    let i = interp.run(&[y], &[(x, feed(50))]).unwrap();
    assert_eq!(j[0].shape(), &[50]);
    assert_eq!(i[0].shape(), &[50]);
}

/// A variable past the limit is refused at `Session::new`; an initializer's checked form
/// refuses it too.
#[test]
fn a_variable_past_a_small_limit_is_an_error() {
    small_limit();
    let g = Graph::new();
    let _ = g.variable("w", [600, 600], kiln::init::glorot_uniform(1));
    let msg = Session::new(&g).err().expect("accepted").to_string();
    assert!(msg.contains("\"w\""), "{msg}");
    assert!(msg.contains("1440000 bytes"), "{msg}");
    let e = kiln::init::zeros()
        .try_fill(DType::F32, &[600, 600])
        .unwrap_err();
    assert!(e.to_string().contains("1440000 bytes"), "{e}");
    assert!(kiln::init::zeros()
        .try_fill(DType::F32, &[500, 500])
        .is_ok());
}
