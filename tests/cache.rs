//! Issue 16, item 8: the session's compile cache is bounded (least recently used executables
//! are dropped past `Session::cache_capacity`), `Model::predict` compiles a bounded number of
//! times whatever the number of rows, and a compile copies only what its fetches depend on.

use kiln::nn::*;
use kiln::prelude::*;

fn ramp(rows: usize, cols: usize) -> Array {
    let v = (0..rows * cols)
        .map(|i| (i % 17) as f32 * 0.25 - 2.0)
        .collect();
    Array::new([rows, cols], v).unwrap()
}

#[test]
fn the_cache_keeps_at_most_its_capacity_of_batch_sizes() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let y = (x.exp() * 2.0).sum(&[1], false);
    let mut s = Session::new(&g).unwrap();
    assert_eq!(s.cache_capacity(), kiln::session::DEFAULT_CACHE_CAPACITY);
    s.set_cache_capacity(4).unwrap();
    let mut first = vec![];
    for b in 1..=20 {
        first.push(s.run(&[y], &[(x, ramp(b, 3))]).unwrap().remove(0));
        assert!(s.cache_len() <= 4, "{} executables cached", s.cache_len());
    }
    assert_eq!(s.compile_count(), 20);
    // The most recent batch sizes are cached: no compile.
    for b in 17..=20 {
        let again = s.run(&[y], &[(x, ramp(b, 3))]).unwrap().remove(0);
        assert!(again.bits_eq(&first[b - 1]));
    }
    assert_eq!(s.compile_count(), 20);
    // An evicted one compiles again, with the same results.
    let again = s.run(&[y], &[(x, ramp(1, 3))]).unwrap().remove(0);
    assert!(again.bits_eq(&first[0]));
    assert_eq!(s.compile_count(), 21);
    assert_eq!(s.cache_len(), 4);
    // Using an entry keeps it: batch 1 was just used, so 5 new sizes evict the others first.
    s.run(&[y], &[(x, ramp(17, 3))]).unwrap();
    s.run(&[y], &[(x, ramp(1, 3))]).unwrap();
    let before = s.compile_count();
    s.run(&[y], &[(x, ramp(30, 3))]).unwrap();
    s.run(&[y], &[(x, ramp(1, 3))]).unwrap();
    assert_eq!(s.compile_count(), before + 1);
    // Shrinking evicts at once; zero is refused.
    s.set_cache_capacity(1).unwrap();
    assert_eq!(s.cache_len(), 1);
    let e = s.set_cache_capacity(0).unwrap_err().to_string();
    assert!(e.contains("at least 1"), "{e}");
}

#[test]
fn the_cache_keeps_at_most_its_capacity_of_fetch_sets() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let mut s = Session::new(&g).unwrap();
    s.set_cache_capacity(3).unwrap();
    for k in 0..12 {
        let y = (x * k as f32).sum(&[1], false);
        let out = s.run(&[y], &[(x, ramp(2, 3))]).unwrap().remove(0);
        let want: Vec<f32> = ramp(2, 3)
            .to_vec::<f32>()
            .unwrap()
            .chunks(3)
            .map(|r| r.iter().map(|v| v * k as f32).sum())
            .collect();
        assert_eq!(out.to_vec::<f32>().unwrap(), want);
        assert!(s.cache_len() <= 3);
    }
    assert_eq!(s.compile_count(), 12);
}

/// A compile copies the fetches' cone, not the graph: 2,000 unrelated nodes added since do
/// not grow what a compile of `y` copies.
#[test]
fn a_compile_copies_only_what_its_fetches_depend_on() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let y = (x.exp() + 1.0).sum(&[1], false);
    let mut s = Session::new(&g).unwrap();
    let a = s.run(&[y], &[(x, ramp(2, 3))]).unwrap().remove(0);
    let small = s.last_compile_copied_nodes();
    assert!(small > 0 && small < 10, "{small} nodes copied");
    let mut z = x;
    for _ in 0..1000 {
        z = (z * 1.5).tanh();
    }
    assert!(g.len() > 2000);
    // A new batch size compiles y again: the same few nodes are copied, the same values come
    // out (batch 2 again, from a session that compiled it after the growth).
    s.run(&[y], &[(x, ramp(5, 3))]).unwrap();
    assert_eq!(s.last_compile_copied_nodes(), small);
    let mut fresh = Session::new(&g).unwrap();
    assert!(fresh.run(&[y], &[(x, ramp(2, 3))]).unwrap()[0].bits_eq(&a));
    assert_eq!(fresh.last_compile_copied_nodes(), small);
    // The long chain is a cone of its own.
    fresh.run(&[z], &[(x, ramp(2, 3))]).unwrap();
    assert!(fresh.last_compile_copied_nodes() > 2000);
}

/// Predicting any number of rows compiles at most 1 + log2(batch_size) executables (full
/// batches, then the rest in power-of-two pieces), with the values of predicting all rows at
/// once.
#[test]
fn predict_compiles_a_bounded_number_of_times() {
    let mut m = Sequential::new([
        Input::new([4]).into(),
        Dense::new(8).relu().into(),
        Dense::new(3).into(),
    ]);
    m.compile(
        kiln::train::Sgd::new(0.1),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[],
    )
    .unwrap();
    let all = ramp(100, 4);
    let whole = m.predict(&all, 100).unwrap().to_vec::<f32>().unwrap();
    let before = m.session().unwrap().compile_count();
    for n in 1..=100 {
        let idx: Vec<usize> = (0..n).collect();
        let x = kiln::data::take_rows(&all, &idx).unwrap();
        let p = m.predict(&x, 32).unwrap();
        assert_eq!(p.shape(), &[n, 3]);
        let got = p.to_vec::<f32>().unwrap();
        for (i, (a, b)) in got.iter().zip(&whole).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{n} rows: element {i}: {a} vs {b}"
            );
        }
    }
    // Batch sizes 32, 16, 8, 4, 2, 1.
    let compiles = m.session().unwrap().compile_count() - before;
    assert!(compiles <= 6, "{compiles} compiles");
    // No rows: an empty prediction, as before.
    let none = m.predict(&ramp(0, 4), 32).unwrap();
    assert_eq!(none.shape(), &[0, 3]);
}

/// A run looks only at nodes added since the last one for new variables (not at the whole
/// graph): variables added between runs, before and after other nodes, are still initialized.
#[test]
fn variables_added_between_runs_are_initialized() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2]);
    let mut s = Session::new(&g).unwrap();
    let xv = Array::new([2], vec![1.0f32, 2.0]).unwrap();
    for k in 0..3 {
        let _ = x * 3.0;
        let v = g.variable(&format!("v{k}"), [2], kiln::init::constant(k as f64));
        let _ = x + 1.0;
        let out = s.run(&[x + v], &[(x, xv.clone())]).unwrap().remove(0);
        assert_eq!(
            out.to_vec::<f32>().unwrap(),
            vec![1.0 + k as f32, 2.0 + k as f32]
        );
    }
}

/// Issue 21: the feed check keeps the placeholders a set of fetches reads, walked once; the
/// answer depends on which tensors are fed, so a run feeding another set (here an
/// intermediate, which the interpreter accepts, in place of `x`) must walk again rather than
/// ask for `x`, and a run missing a placeholder must still be refused.
#[test]
fn the_feed_check_follows_each_runs_fed_set() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2]);
    let z = g.placeholder("z", DType::F32, [2]);
    let w = x * 2.0;
    let y = w + z;
    let mut s = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let a = Array::new([2], vec![1f32, 2.0]).unwrap();
    let got = |r: Vec<Array>| r[0].to_vec::<f32>().unwrap();
    let full = s.run(&[y], &[(x, a.clone()), (z, a.clone())]).unwrap();
    assert_eq!(got(full), vec![3.0, 6.0]);
    let cut = s.run(&[y], &[(w, a.clone()), (z, a.clone())]).unwrap();
    assert_eq!(got(cut), vec![2.0, 4.0]);
    let err = s.run(&[y], &[(w, a.clone())]).unwrap_err().to_string();
    assert!(err.contains('z'), "{err}");
    let again = s.run(&[y], &[(x, a.clone()), (z, a)]).unwrap();
    assert_eq!(got(again), vec![3.0, 6.0]);
}
