//! Compiling and dropping executables does not leak. In a test binary of its own, because
//! resident memory is per process and other tests running in parallel would move it.

use kiln::internals::Executable;
use kiln::passes::{Pipeline, Program};
use kiln::prelude::*;

/// Compiling and dropping an executable 1000 times keeps resident memory flat.
#[test]
fn compiling_in_a_loop_does_not_leak() {
    fn rss_kb() -> usize {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<usize>().ok())
            })
            .map_or(0, |pages| pages * 4)
    }
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [64]);
    let y = ((a * 2.0).sigmoid() + a.tanh()).sum_all();
    let av = Array::new([64], vec![0.5f32; 64]).unwrap();
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    Pipeline::default().run(&mut p).unwrap();
    for _ in 0..50 {
        let e = Executable::compile(&p).unwrap();
        e.run(&[&av], &[], 0).unwrap();
    }
    let before = rss_kb();
    for _ in 0..1000 {
        let e = Executable::compile(&p).unwrap();
        e.run(&[&av], &[], 0).unwrap();
    }
    let after = rss_kb();
    // A leaked module is at least a page of code and data each time: 1000 leaks >= 4 MB.
    assert!(
        after < before + 2048,
        "resident memory grew from {before} kB to {after} kB"
    );
}
