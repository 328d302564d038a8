//! Issue 16, item 1: every size is computed with checked arithmetic. A shape whose element
//! count or byte size overflows is a graph error at build time, naming the op and the user's
//! line, instead of wrapping in release builds (which once let the JIT's bounds check pass an
//! out-of-bounds access).

use kiln::prelude::*;

/// The build error of `g` as text; fails if the graph checks.
fn build_error(g: &Graph) -> String {
    match g.check() {
        Ok(()) => panic!("the graph was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_placeholder_whose_size_overflows_is_a_build_error() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(1 << 33), Some(1 << 31)]);
    let line = line!() - 1;
    let y = x.sum(&[0], false);
    let msg = build_error(&g);
    assert!(msg.contains("placeholder"), "{msg}");
    assert!(msg.contains("overflows"), "{msg}");
    assert!(msg.contains(&format!("sizes.rs:{line}")), "{msg}");
    // Running it, with the empty array that once made the JIT segfault, is an error too.
    let empty = Array::new([0, 1 << 33, 1 << 31], Vec::<f32>::new()).unwrap();
    assert_eq!(empty.len(), 0);
    match Session::new(&g) {
        Err(_) => {}
        Ok(mut s) => assert!(s.run(&[y], &[(x, empty)]).is_err()),
    }
}

#[test]
fn a_pad_whose_width_overflows_is_a_build_error() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 3]);
    let _ = x.pad(&[0, usize::MAX], &[0, 5]);
    let line = line!() - 1;
    let msg = build_error(&g);
    assert!(msg.contains("pad"), "{msg}");
    assert!(msg.contains("overflows"), "{msg}");
    assert!(msg.contains(&format!("sizes.rs:{line}")), "{msg}");
}

#[test]
fn a_concat_whose_size_overflows_is_a_build_error() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::Bool, [1usize << 62]);
    let _ = g.concat(&[a, a, a, a], 0);
    let msg = build_error(&g);
    assert!(msg.contains("concat"), "{msg}");
    assert!(msg.contains("overflow"), "{msg}");
}

#[test]
fn a_byte_size_past_isize_max_is_a_build_error() {
    // 2^62 elements fit in usize; 2^62 f32 take 2^64 bytes, which do not.
    let g = Graph::new();
    let _ = g.placeholder("x", DType::F32, [1usize << 62]);
    let msg = build_error(&g);
    assert!(msg.contains("more bytes than memory can address"), "{msg}");
}

#[test]
fn the_parser_refuses_a_constant_claiming_2_to_the_64_elements() {
    let text = "kiln.graph {\n  %0 = constant(value=[]) : f32[4294967296,4294967296]\n}\n";
    let e = Graph::parse(text).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("constant"), "{e}");
    assert!(e.contains("more bytes than memory can address"), "{e}");
}

#[test]
fn array_new_refuses_an_overflowing_shape() {
    let e = Array::new([1usize << 40, 1 << 40], Vec::<f32>::new()).unwrap_err();
    assert!(e.to_string().contains("overflows"), "{e}");
    let e = Array::new([0usize], vec![0.0f32; 0]).map(|a| a.reshape([1usize << 40, 1 << 40]));
    assert!(e.unwrap().is_err());
}

/// Issue 16, item 3: a variable too large for the allocation limit (`KILN_MAX_ALLOC`, 64 GiB
/// by default) is an error at `Session::new` naming the variable, the shape and the bytes,
/// on both backends, instead of an allocation of 4 TiB that aborts the process.
#[test]
fn a_variable_past_the_allocation_limit_is_an_error() {
    let g = Graph::new();
    let _ = g.variable("huge", [1usize << 40], kiln::init::zeros());
    for backend in [Backend::Jit, Backend::Interpreter] {
        let e = Session::with_backend(&g, backend).err().expect("accepted");
        let msg = e.to_string();
        assert!(msg.contains("huge"), "{msg}");
        assert!(msg.contains("1099511627776"), "{msg}");
        assert!(msg.contains("4398046511104 bytes"), "{msg}");
        assert!(msg.contains("KILN_MAX_ALLOC"), "{msg}");
    }
}
