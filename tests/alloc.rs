//! Issue 16, item 3: allocation that input drives is fallible. A value a run would compute
//! that is larger than the allocation limit (`KILN_MAX_ALLOC`, 64 GiB by default) is an error
//! naming the op, its name, the user's line, the shape and the bytes, on both backends,
//! instead of an allocation that aborts the process. These tests use the default limit;
//! `tests/alloc_limit.rs` runs with a small one (the variable is process-wide, so it has a
//! test binary of its own).

use kiln::init::Init;
use kiln::prelude::*;

fn both() -> [Backend; 2] {
    [Backend::Jit, Backend::Interpreter]
}

/// `random_uniform` and `random_normal` of 2^40 elements (4 TiB as f32) used to abort.
#[test]
fn a_huge_random_op_is_an_error_naming_it() {
    for normal in [false, true] {
        let g = Graph::new();
        let r = if normal {
            g.random_normal([1usize << 40], 0.0, 1.0, 7)
        } else {
            g.random_uniform([1usize << 40], 0.0, 1.0, 7)
        };
        let r = r.named("noise");
        for backend in both() {
            let mut s = Session::with_backend(&g, backend).unwrap();
            let msg = s.run(&[r], &[]).unwrap_err().to_string();
            let op = if normal {
                "random_normal"
            } else {
                "random_uniform"
            };
            assert!(msg.starts_with(op), "{backend:?}: {msg}");
            assert!(msg.contains("\"noise\""), "{backend:?}: {msg}");
            assert!(msg.contains("f32[1099511627776]"), "{backend:?}: {msg}");
            assert!(msg.contains("bytes"), "{backend:?}: {msg}");
            assert!(msg.contains("KILN_MAX_ALLOC"), "{backend:?}: {msg}");
            assert!(msg.contains(" at tests/alloc.rs:"), "{backend:?}: {msg}");
            // The session is still usable afterwards: a small run works.
            let small = g.random_uniform([3], 0.0, 1.0, 1);
            assert_eq!(s.run(&[small], &[]).unwrap()[0].shape(), &[3]);
        }
    }
}

/// A batch whose intermediates are too large: `exp(x + w)` of `[?, 2^20]` at batch 2^17 is
/// 512 GiB as f32. The feed is only 512 KiB; the error names the op at the user's line, the
/// shape at this batch size and the bytes. A smaller batch then runs.
#[test]
fn a_batch_whose_intermediates_are_too_large_is_an_error() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(1)]);
    let w = g.constant(Array::new([1, 1 << 20], vec![0.5f32; 1 << 20]).unwrap());
    let e = (x + w).exp();
    let line = line!() - 1;
    let y = e.sum(&[1], false) + e.max(&[1], false);
    let big = Array::new([1 << 17, 1], vec![0.0f32; 1 << 17]).unwrap();
    for backend in both() {
        let mut s = Session::with_backend(&g, backend).unwrap();
        let msg = s.run(&[y], &[(x, big.clone())]).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("alloc.rs:{line}")),
            "{backend:?}: {msg}"
        );
        assert!(msg.contains("[131072, 1048576]"), "{backend:?}: {msg}");
        assert!(msg.contains("at batch size 131072"), "{backend:?}: {msg}");
        assert!(msg.contains("bytes"), "{backend:?}: {msg}");
        let small = Array::new([2, 1], vec![0.0f32; 2]).unwrap();
        let out = s.run(&[y], &[(x, small)]).unwrap();
        assert_eq!(out[0].shape(), &[2]);
    }
}

/// A fetched output too large for the limit (a `?` broadcast) is refused before it is
/// allocated, on both backends.
#[test]
fn a_huge_output_is_an_error() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(1)]);
    let y = x.broadcast_to([None, Some(1 << 30)]).named("wide");
    let xv = Array::new([64, 1], vec![1.0f32; 64]).unwrap();
    for backend in both() {
        let mut s = Session::with_backend(&g, backend).unwrap();
        let msg = s.run(&[y], &[(x, xv.clone())]).unwrap_err().to_string();
        assert!(msg.starts_with("broadcast_to"), "{backend:?}: {msg}");
        assert!(msg.contains("\"wide\""), "{backend:?}: {msg}");
        assert!(msg.contains("[64, 1073741824]"), "{backend:?}: {msg}");
    }
}

/// `Array::try_zeros` and `Init::try_fill` are the checked constructors: overflow and sizes
/// past the limit are errors, small ones are the values the panicking forms give.
#[test]
fn checked_constructors_refuse_what_cannot_be_allocated() {
    assert!(Array::try_zeros(DType::F32, [1usize << 40, 1 << 40]).is_err());
    let e = Array::try_zeros(DType::F64, [1usize << 40]).unwrap_err();
    assert!(e.to_string().contains("8796093022208 bytes"), "{e}");
    assert!(Array::try_zeros(DType::Bool, [2, 2])
        .unwrap()
        .bits_eq(&Array::zeros(DType::Bool, [2, 2])));
    let e = kiln::init::glorot_uniform(1)
        .try_fill(DType::F32, &[1 << 20, 1 << 20])
        .unwrap_err();
    assert!(e.to_string().contains("glorot_uniform"), "{e}");
    assert!(e.to_string().contains("4398046511104 bytes"), "{e}");
}

/// `Init::fill` rounds each value straight into the array (no `f64` copy): the values are
/// those of computing in `f64` and rounding once, for every initializer and dtype.
#[test]
fn init_fill_values_are_unchanged() {
    let inits: [Init; 6] = [
        kiln::init::constant(0.1),
        kiln::init::uniform(-1.0, 1.0, 3),
        kiln::init::normal(0.5, 2.0, 4),
        kiln::init::truncated_normal(0.0, 1.0, 5),
        kiln::init::glorot_normal(6),
        kiln::init::he_uniform(7),
    ];
    for init in &inits {
        let f64s = init.fill(DType::F64, &[3, 5]).to_vec::<f64>().unwrap();
        let f32s = init.fill(DType::F32, &[3, 5]).to_vec::<f32>().unwrap();
        let i32s = init.fill(DType::I32, &[3, 5]).to_vec::<i32>().unwrap();
        for ((&d, &f), &i) in f64s.iter().zip(&f32s).zip(&i32s) {
            assert_eq!(f.to_bits(), (d as f32).to_bits(), "{init:?}");
            assert_eq!(i, d as i32, "{init:?}");
        }
    }
    // The uniform stream is drawn in f32: the f64 array holds those f32 values exactly.
    let u = kiln::init::uniform(0.0, 1.0, 9).fill(DType::F64, &[8]);
    assert!(u
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .all(|&v| v == v as f32 as f64));
}
