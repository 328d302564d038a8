//! The session's specialization on fed `bool` switches (`Session::specialize_bool_feeds`):
//! an executable per switch value, whose unselected branch is gone (no random fill for
//! dropout at inference), and whose results are bitwise the unspecialized graph's, on every
//! run of a train/infer alternation.

use kiln::nn::*;
use kiln::passes::{Pipeline, Program};
use kiln::prelude::*;

/// `x @ w`, dropout on a `training` switch, then a batch-statistics centering selected by
/// the same switch: the two patterns of the Keras layers. Inputs and weights are small
/// multiples of 1/4, so every sum is exact whatever its order, and the JIT (whose `gemm`
/// and reductions sum in their own order) is bitwise the interpreter.
struct Net {
    g: Graph,
    ids: [kiln::NodeId; 3],
}

impl Net {
    fn new() -> Net {
        let g = Graph::new();
        let ids = {
            let x = g.placeholder("x", DType::F32, [None, Some(6)]);
            let training = g.placeholder("training", DType::Bool, Shape::scalar());
            let wv: Vec<f32> = (0..48)
                .map(|i| ((i * 5) % 7) as f32 * 0.25 - 0.75)
                .collect();
            let w = g.constant(Array::new([6, 8], wv).unwrap());
            let h = x.matmul(w).relu().dropout(0.5, training, 11);
            let mean = h.mean(&[0], false);
            let y = training.select(h - mean, h);
            [x.id(), training.id(), y.id()]
        };
        Net { g, ids }
    }
    fn x(&self) -> Tensor<'_> {
        self.g.tensor(self.ids[0])
    }
    fn training(&self) -> Tensor<'_> {
        self.g.tensor(self.ids[1])
    }
    fn y(&self) -> Tensor<'_> {
        self.g.tensor(self.ids[2])
    }
    fn feeds(&self, batch: usize, step: usize, training: bool) -> Vec<(Tensor<'_>, Array)> {
        let v: Vec<f32> = (0..batch * 6)
            .map(|i| ((i * 7 + step * 3) % 11) as f32 * 0.25 - 1.0)
            .collect();
        vec![
            (self.x(), Array::new([batch, 6], v).unwrap()),
            (self.training(), Array::scalar(training)),
        ]
    }
}

fn session(net: &Net, backend: Backend, specialize: bool) -> Session {
    let mut s = Session::with_backend(&net.g, backend).unwrap();
    s.specialize_bool_feeds(specialize);
    s
}

#[test]
fn inference_executable_has_no_random_step_and_training_keeps_its_own() {
    let net = Net::new();
    let mut sess = session(&net, Backend::Jit, true);
    sess.run(&[net.y()], &net.feeds(4, 0, false)).unwrap();
    let infer = sess.last_compile_times().unwrap().steps;
    assert_eq!(
        infer.random, 0,
        "inference draws no dropout mask: {infer:?}"
    );
    sess.run(&[net.y()], &net.feeds(4, 0, true)).unwrap();
    let train = sess.last_compile_times().unwrap().steps;
    assert_eq!(train.random, 1, "training draws its mask: {train:?}");

    let mut plain = session(&net, Backend::Jit, false);
    plain.run(&[net.y()], &net.feeds(4, 0, false)).unwrap();
    let both = plain.last_compile_times().unwrap().steps;
    assert_eq!(
        both.random, 1,
        "unspecialized, the mask is drawn anyway: {both:?}"
    );
    assert!(
        infer.kernels < both.kernels,
        "the batch statistics are gone too: {infer:?} vs {both:?}"
    );
}

#[test]
fn specialized_results_are_bitwise_the_unspecialized_ones_through_an_alternation() {
    let net = Net::new();
    let mut spec = session(&net, Backend::Jit, true);
    let mut plain = session(&net, Backend::Jit, false);
    let mut oracle = session(&net, Backend::Interpreter, true);
    // Training runs after inference runs draw the masks of their own run index, whatever
    // the runs before them skipped.
    let pattern = [true, false, false, true, false, true, true, false];
    for (step, &training) in pattern.iter().enumerate() {
        let feeds = net.feeds(3, step, training);
        let a = spec.run(&[net.y()], &feeds).unwrap();
        let b = plain.run(&[net.y()], &feeds).unwrap();
        let c = oracle.run(&[net.y()], &feeds).unwrap();
        assert!(
            a[0].bits_eq(&b[0]),
            "step {step}: specialized vs unspecialized"
        );
        assert!(
            a[0].bits_eq(&c[0]),
            "step {step}: specialized vs interpreter"
        );
    }
    assert_eq!(spec.run_count(), pattern.len() as u64);
    assert_eq!(spec.run_count(), plain.run_count());
}

#[test]
fn training_after_inference_draws_the_same_mask_as_training_alone() {
    // A fresh session that trains at run 3 and one that ran inference at runs 1 and 2
    // first draw the same mask at run 3.
    let net = Net::new();
    let mut a = session(&net, Backend::Jit, true);
    a.set_run_count(2);
    let alone = a.run(&[net.y()], &net.feeds(5, 9, true)).unwrap();
    let mut b = session(&net, Backend::Jit, true);
    b.run(&[net.y()], &net.feeds(5, 1, false)).unwrap();
    b.run(&[net.y()], &net.feeds(5, 2, false)).unwrap();
    let after = b.run(&[net.y()], &net.feeds(5, 9, true)).unwrap();
    assert!(alone[0].bits_eq(&after[0]));
}

#[test]
fn each_switch_value_gets_one_executable_reused_afterwards() {
    let net = Net::new();
    let mut sess = session(&net, Backend::Jit, true);
    for step in 0..6 {
        sess.run(&[net.y()], &net.feeds(2, step, step % 2 == 0))
            .unwrap();
    }
    assert_eq!(
        sess.compile_count(),
        2,
        "one executable per value of `training`"
    );
    assert_eq!(sess.cache_len(), 2);
    // A new batch size is a new key for each value.
    sess.run(&[net.y()], &net.feeds(3, 0, false)).unwrap();
    sess.run(&[net.y()], &net.feeds(3, 0, true)).unwrap();
    assert_eq!(sess.compile_count(), 4);

    let mut plain = session(&net, Backend::Jit, false);
    for step in 0..4 {
        plain
            .run(&[net.y()], &net.feeds(2, step, step % 2 == 0))
            .unwrap();
    }
    assert_eq!(
        plain.compile_count(),
        1,
        "unspecialized: one executable for both"
    );
}

#[test]
fn a_switch_the_fetches_do_not_read_is_not_in_the_key() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2]);
    let flag = g.placeholder("flag", DType::Bool, Shape::scalar());
    let y = x * 2.0;
    let z = flag.select(x, y);
    let mut sess = Session::new(&g).unwrap();
    let xv = Array::new([2], vec![1.0f32, 2.0]).unwrap();
    for on in [false, true, false] {
        let out = sess
            .run(&[y], &[(x, xv.clone()), (flag, Array::scalar(on))])
            .unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
    }
    assert_eq!(sess.compile_count(), 1, "`y` does not read `flag`");
    // Fetching the switch itself, and what it selects, works on both values.
    for on in [false, true] {
        let out = sess
            .run(&[flag, z], &[(x, xv.clone()), (flag, Array::scalar(on))])
            .unwrap();
        assert_eq!(out[0].scalar_value::<bool>().unwrap(), on);
        let want = if on { vec![1.0, 2.0] } else { vec![2.0, 4.0] };
        assert_eq!(out[1].to_vec::<f32>().unwrap(), want);
    }
}

/// `select(training, x / d, x)` on `i32`: the division is in the training branch only.
fn dead_division(g: &Graph) -> (Tensor<'_>, Tensor<'_>, Tensor<'_>, Tensor<'_>) {
    let x = g.placeholder("x", DType::I32, [3]);
    let d = g.placeholder("d", DType::I32, [3]);
    let training = g.placeholder("training", DType::Bool, Shape::scalar());
    let y = training.select(x / d, x);
    (x, d, training, y)
}

#[test]
fn an_error_in_the_unselected_branch_is_reported_by_both_backends() {
    // Both branches are computed, as TF computes both of tf.where's: an integer division by
    // zero in the branch not selected is still an error, on the interpreter (which runs the
    // graph as written) and on the specialized JIT alike, which keeps the branch for that.
    let g = Graph::new();
    let (x, d, training, y) = dead_division(&g);
    let feeds = [
        (x, Array::new([3], vec![4i32, 5, 6]).unwrap()),
        (d, Array::new([3], vec![1i32, 0, 2]).unwrap()),
        (training, Array::scalar(false)),
    ];
    let mut messages = vec![];
    for (backend, specialize) in [
        (Backend::Interpreter, true),
        (Backend::Jit, true),
        (Backend::Jit, false),
    ] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        s.specialize_bool_feeds(specialize);
        let e = s.run(&[y], &feeds).unwrap_err().to_string();
        assert!(e.contains("division by zero"), "{backend:?}: {e}");
        messages.push(e);
    }
    assert!(messages.iter().all(|m| *m == messages[0]), "{messages:#?}");

    // With a divisor free of zeros, the selected branch's values come out.
    let mut s = Session::new(&g).unwrap();
    let ok = [
        (x, Array::new([3], vec![4i32, 5, 6]).unwrap()),
        (d, Array::new([3], vec![2i32, 5, 3]).unwrap()),
        (training, Array::scalar(false)),
    ];
    let out = s.run(&[y], &ok).unwrap();
    assert_eq!(out[0].to_vec::<i32>().unwrap(), vec![4, 5, 6]);
}

#[test]
fn a_constant_condition_keeps_only_the_selected_branch_in_the_pipeline() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4]);
    let training = g.placeholder("training", DType::Bool, Shape::scalar());
    let y = x.dropout(0.5, training, 1);
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    let mut pl = Pipeline::default();
    pl.options.fixed_feeds = vec![(training.id(), Array::scalar(false))];
    pl.run(&mut p).unwrap();
    let dump = kiln::passes::program_dump(&p);
    assert!(!dump.contains("random"), "{dump}");
    // The switch became a constant, which nothing reads once the select is gone.
    assert!(!dump.contains("\"training\""), "{dump}");

    // A fixed value of the wrong type is refused, naming the placeholder.
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    let mut pl = Pipeline::default();
    pl.options.fixed_feeds = vec![(training.id(), Array::scalar(1.0f32))];
    let e = pl.run(&mut p).unwrap_err().to_string();
    assert!(e.contains("training") && e.contains("fixed feed"), "{e}");
}

fn small_model() -> Model {
    let mut m = Sequential::new([
        Input::new([5]).into(),
        Dense::new(8).relu().into(),
        BatchNormalization::new().into(),
        Dropout::new(0.3).into(),
        Dense::new(3).into(),
    ]);
    m.compile(
        Adam::new(0.01),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn rows(n: usize) -> (Array, Array) {
    let x: Vec<f32> = (0..n * 5)
        .map(|i| ((i * 13) % 17) as f32 / 8.0 - 1.0)
        .collect();
    let y: Vec<i32> = (0..n as i32).map(|i| i % 3).collect();
    (Array::new([n, 5], x).unwrap(), Array::new([n], y).unwrap())
}

#[test]
fn predict_and_evaluate_run_the_specialized_inference_executable() {
    let mut m = small_model();
    let (x, y) = rows(32);
    let cfg = FitConfig::new()
        .epochs(2)
        .batch_size(16)
        .verbosity(Verbosity::Silent);
    m.fit(&x, &y, cfg).unwrap();
    let p = m.predict(&x, 16).unwrap();
    let steps = m.session().unwrap().last_compile_times().unwrap().steps;
    assert_eq!(steps.random, 0, "predict draws no dropout mask: {steps:?}");
    m.evaluate(&x, &y, 8).unwrap();
    let steps = m.session().unwrap().last_compile_times().unwrap().steps;
    assert_eq!(steps.random, 0, "evaluate draws no dropout mask: {steps:?}");

    // The same weights through an unspecialized session and the interpreter.
    let g = m.graph().clone();
    let weights = m.session().unwrap().named_variables();
    let weights: Vec<(String, Array)> = weights.into_iter().map(|(n, a)| (n, a.clone())).collect();
    let out = m.output().unwrap().id();
    let (xin, training) = (m.input().unwrap().id(), m.training_flag().unwrap().id());
    for (backend, specialize) in [(Backend::Jit, false), (Backend::Interpreter, true)] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        s.specialize_bool_feeds(specialize);
        for (name, a) in &weights {
            let v = g.by_name(name).unwrap();
            s.set_variable(v, a.clone()).unwrap();
        }
        let feeds = [
            (g.tensor(xin), x.clone()),
            (g.tensor(training), Array::scalar(false)),
        ];
        let q = s.run(&[g.tensor(out)], &feeds).unwrap();
        if backend == Backend::Jit {
            assert!(q[0].bits_eq(&p), "unspecialized JIT: predict differs");
        } else {
            // The interpreter sums in another order than gemm: close, not bitwise.
            let (a, b) = (q[0].to_f64_vec(), p.to_f64_vec());
            let err = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-4, "interpreter: predict differs by {err}");
        }
    }
}

#[test]
fn nan_and_infinity_in_the_unselected_branch_stay_there_on_every_backend() {
    // Float ops never fail: a NaN or an infinity computed in the branch not selected is
    // simply not selected, whether the branch is computed (interpreter, unspecialized JIT)
    // or skipped (specialized JIT).
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4]);
    let training = g.placeholder("training", DType::Bool, Shape::scalar());
    let y = training.select(x.log() / (x - x), x * 3.0);
    let xv = Array::new([4], vec![-1.0f32, 0.0, 2.0, -0.0]).unwrap();
    let feeds = [(x, xv), (training, Array::scalar(false))];
    let want = Array::new([4], vec![-3.0f32, 0.0, 6.0, -0.0]).unwrap();
    for (backend, specialize) in [
        (Backend::Interpreter, true),
        (Backend::Jit, true),
        (Backend::Jit, false),
    ] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        s.specialize_bool_feeds(specialize);
        let out = s.run(&[y], &feeds).unwrap();
        assert!(
            out[0].bits_eq(&want),
            "{backend:?} {specialize}: {:?}",
            out[0]
        );
    }
}
