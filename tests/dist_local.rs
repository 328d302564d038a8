//! The collective op and the `Distributed` optimizer in a one-process world (the default
//! build, no MPI): what `all_reduce` computes and in which order, on both backends; its
//! shape rule, gradient and text form; and that `Distributed` averages micro-shard
//! gradients exactly as written by hand. The multi-process runs are `tests/dist.rs`.

use kiln::autodiff::grad;
use kiln::prelude::*;
use kiln::train::{Distributed, Sgd};
use std::sync::Mutex;

/// Tests that read or change the process environment take this lock.
static ENV: Mutex<()> = Mutex::new(());

fn arr(v: &[f32]) -> Array {
    Array::new([v.len()], v.to_vec()).unwrap()
}

#[test]
fn all_reduce_sums_parts_left_to_right_on_both_backends() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let g = Graph::new();
    let ps: Vec<Tensor<'_>> = (0..3)
        .map(|i| g.placeholder(&format!("p{i}"), DType::F32, [3]))
        .collect();
    let s = g.all_reduce(&ps);
    // Column 0 tells the orders apart: (1e8 + 1) - 1e8 = 0, but 1e8 + (1 - 1e8) = 0 and
    // (1e8 - 1e8) + 1 = 1; column 2 keeps -0 as -0.
    let vals = [[1e8f32, 2.0, -0.0], [1.0, 3.0, -0.0], [-1e8, 4.0, -0.0]];
    let feeds: Vec<(Tensor<'_>, Array)> = ps.iter().zip(vals).map(|(&p, v)| (p, arr(&v))).collect();
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut sess = Session::with_backend(&g, backend).unwrap();
        let out = sess.run(&[s], &feeds).unwrap()[0].to_vec::<f32>().unwrap();
        assert_eq!(out[0], 0.0, "{backend:?}");
        assert_eq!(out[1], 9.0, "{backend:?}");
        assert!(
            out[2] == 0.0 && out[2].is_sign_negative(),
            "{backend:?}: -0 kept"
        );
    }
    // Operands in another order, (-1e8 + 1e8) + 1, give 1: the op folds in operand order.
    let s2 = g.all_reduce(&[ps[2], ps[0], ps[1]]);
    let mut sess = Session::new(&g).unwrap();
    let out = sess.run(&[s2], &feeds).unwrap()[0].to_vec::<f32>().unwrap();
    assert_eq!(out[0], 1.0);
}

#[test]
fn all_reduce_in_f64_and_its_step_count() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let g = Graph::new();
    let a = g.placeholder("a", DType::F64, [2, 2]);
    let s = g.all_reduce(&[a, a * 2.0]).named("s");
    let mut sess = Session::new(&g).unwrap();
    let av = Array::new([2, 2], vec![1.0f64, 2.0, 3.0, 4.0]).unwrap();
    let out = sess.run(&[s], &[(a, av)]).unwrap();
    assert_eq!(out[0].to_vec::<f64>().unwrap(), vec![3.0, 6.0, 9.0, 12.0]);
    let steps = sess.last_compile_times().expect("compiled").steps;
    assert_eq!(steps.collectives, 1, "one host step: {steps:?}");
    assert!(steps.covers_every_node());
}

#[test]
fn shape_rule_refuses_mixed_and_integer_operands() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [2]);
    let b = g.placeholder("b", DType::F32, [3]);
    let _ = g.all_reduce(&[a, b]);
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("all_reduce") && e.contains("one type"), "{e}");

    let g = Graph::new();
    let i = g.placeholder("i", DType::I32, [2]);
    let _ = i.all_reduce();
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("f32 or f64"), "{e}");

    let g = Graph::new();
    let _ = g.all_reduce(&[]);
    assert!(g
        .check()
        .unwrap_err()
        .to_string()
        .contains("at least one operand"));
}

#[test]
fn gradient_of_all_reduce_is_all_reduce() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let g = Graph::new();
    let x = g.variable("x", [2], init::constant(1.5));
    let y = g.variable("y", [2], init::constant(-2.0));
    let loss = (g.all_reduce(&[x, y * 3.0])).square().sum_all();
    let d = grad(loss, &[x, y]).unwrap();
    let dump = g.dump();
    assert!(
        dump.matches("all_reduce(").count() >= 2,
        "the gradient reduces too:\n{dump}"
    );
    let mut sess = Session::new(&g).unwrap();
    let out = sess.run(&[d[0], d[1]], &[]).unwrap();
    // s = 1.5 + 3·(-2) = -4.5; dloss/dx = 2s, dloss/dy = 3·2s.
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![-9.0, -9.0]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![-27.0, -27.0]);
}

#[test]
fn all_reduce_round_trips_through_the_text_format() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [2]);
    let _ = g.all_reduce(&[a, a]).named("s");
    let text = g.dump();
    assert!(text.contains("all_reduce(%0, %0) : f32[2] \"s\""), "{text}");
    assert_eq!(Graph::parse(&text).unwrap().dump(), text);
}

/// `Distributed(Sgd)` over two micro-shards: the update is the mean of the shards'
/// gradients, summed in shard order (a hand-written graph computes the same bits), and the
/// variables are bucketed (a tiny bucket cap makes one bucket per variable).
#[test]
fn distributed_averages_micro_shard_gradients_like_the_hand_written_graph() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    for cap in [1usize, 1 << 20] {
        let g = Graph::new();
        let w = g.variable("w", [3, 2], init::glorot_uniform(7));
        let b = g.variable("b", [2], init::constant(0.25));
        let xs: Vec<Tensor<'_>> = (0..2)
            .map(|j| g.placeholder(&format!("x{j}"), DType::F32, [4, 3]))
            .collect();
        let losses: Vec<Tensor<'_>> = xs
            .iter()
            .map(|&x| (x.matmul(w) + b).tanh().square().mean_all())
            .collect();
        let mut opt = Distributed::new(Sgd::new(0.5)).bucket_bytes(cap);
        let train = opt.minimize_shards(&losses, &[w, b]).unwrap();
        let n_reduce = g.dump().matches("all_reduce(").count();
        assert_eq!(
            n_reduce,
            if cap == 1 { 2 } else { 1 },
            "buckets at cap {cap}"
        );
        // By hand: (g0 + g1) * 0.5 per variable.
        let g0 = grad(losses[0], &[w, b]).unwrap();
        let g1 = grad(losses[1], &[w, b]).unwrap();
        let want_w = w - (g0[0] + g1[0]) * 0.5 * 0.5;
        let want_b = b - (g0[1] + g1[1]) * 0.5 * 0.5;
        let mut sess = Session::new(&g).unwrap();
        let feeds: Vec<(Tensor<'_>, Array)> = xs
            .iter()
            .enumerate()
            .map(|(j, &x)| {
                let v: Vec<f32> = (0..12)
                    .map(|i| ((i * 7 + j * 5) % 11) as f32 / 5.0 - 1.0)
                    .collect();
                (x, Array::new([4, 3], v).unwrap())
            })
            .collect();
        let want = sess.run(&[want_w, want_b], &feeds).unwrap();
        sess.run(&[train], &feeds).unwrap();
        for (v, want) in [w, b].iter().zip(&want) {
            let got = sess.variable(*v).unwrap().to_vec::<f32>().unwrap();
            let want = want.to_vec::<f32>().unwrap();
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "cap {cap}: {got:?} vs {want:?}");
        }
    }
}

/// A process that `mpirun` started among several but that never joined the world refuses
/// to reduce alone (it would silently train on its own shard).
#[test]
fn a_process_started_by_mpirun_must_join_the_world() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [1]);
    let s = a.all_reduce();
    let mut sess = Session::new(&g).unwrap();
    // `set_var` is safe in edition 2021; the ENV lock keeps this file's other tests out.
    std::env::set_var("OMPI_COMM_WORLD_SIZE", "2");
    let r = sess.run(&[s], &[(a, arr(&[1.0]))]);
    std::env::remove_var("OMPI_COMM_WORLD_SIZE");
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("one of 2 started by mpirun") && e.contains("dist::init"),
        "{e}"
    );
    assert_eq!(kiln::dist::world_size(), 1);
    assert_eq!(kiln::dist::rank(), 0);
}

/// The dependency rule of ARCHITECTURE.md's "Distributed training": only `src/dist` names
/// the `mpi` crate, so the rest of kiln builds and runs the same without the feature.
#[test]
fn only_src_dist_names_mpi() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    walk(&root, &mut files);
    assert!(files.len() > 50, "found the sources");
    let mut offenders = vec![];
    for f in files.iter().filter(|f| !f.starts_with(root.join("dist"))) {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("mpi::") || code.contains("use mpi") {
                offenders.push(format!("{}:{}", f.display(), i + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "MPI named outside src/dist: {offenders:?}"
    );
}
