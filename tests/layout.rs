//! The `layout` pass: NCHW chains of convolutions, pooling and elementwise ops (what an
//! imported PyTorch or ONNX model is) run in NHWC with only the input's and the output's
//! transposes left. Results are bitwise those of the graph before the pass, on the
//! interpreter and on the JIT; the permute count drops to what the chain cannot avoid.

mod common;

use common::*;
use kiln::graph::op::Op;
use kiln::graph::NodeId;
use kiln::internals::Executable;
use kiln::interp::evaluate;
use kiln::passes::{
    concretize::Concretize, cse::Cse, dce::Dce, fold::Fold, layout::Layout, simplify::Simplify,
    Fixpoint, Pass, PassOptions, Program,
};
use kiln::prelude::*;
use kiln::{Conv2dOptions, DataFormat, Padding, Pool2dOptions};
use std::collections::HashMap;

fn opts(batch: usize) -> PassOptions {
    PassOptions {
        batch: Some(batch),
        ..PassOptions::default()
    }
}

/// The default cleanup without `layout`: what the program looked like before this pass.
fn cleanup_without_layout() -> Fixpoint {
    Fixpoint::new(
        "cleanup",
        vec![
            Box::new(Fold),
            Box::new(Simplify),
            Box::new(Cse),
            Box::new(Dce),
        ],
    )
}

fn count_permutes(p: &Program) -> usize {
    p.live_order()
        .into_iter()
        .filter(|&id| matches!(p.graph.node(id).op, Op::Permute(_)))
        .count()
}

type Vars = HashMap<NodeId, Array>;

fn interpret(p: &Program, feeds: &[(NodeId, Array)], vars: &Vars) -> Vec<Array> {
    evaluate(&p.graph, &p.outputs, feeds, vars, Precision::F32, 0).unwrap()
}

fn jit(p: &Program, feeds: &[(NodeId, Array)], vars: &Vars) -> Vec<Array> {
    let exe = Executable::compile(p).unwrap();
    let ph: Vec<&Array> = exe
        .placeholders()
        .iter()
        .map(|(id, _)| &feeds.iter().find(|(f, _)| f == id).unwrap().1)
        .collect();
    let vs: Vec<&Array> = exe.variables().iter().map(|(id, _)| &vars[id]).collect();
    exe.run(&ph, &vs, 0).unwrap()
}

fn assert_bitwise(a: &[Array], b: &[Array], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!(x.bits_eq(y), "{what}: {x:?}\n{y:?}");
    }
}

/// BatchNormalization as the ONNX importer builds it: per-channel variables reshaped to
/// `[1, C, 1, 1]` and broadcast.
fn batch_norm<'g>(g: &'g Graph, t: Tensor<'g>, scope: &str) -> Tensor<'g> {
    let c = t.shape().dims()[1].fixed().unwrap();
    let v = |n: &str| {
        g.variable(&format!("{scope}/{n}"), [c], init::zeros())
            .reshape([1, c, 1, 1])
    };
    (t - v("mean")) / (v("var") + 1e-5).sqrt() * v("scale") + v("bias")
}

/// An NCHW convolution (OIHW filter variable, `same` padding) with a random width and kernel.
fn conv<'g>(g: &'g Graph, t: Tensor<'g>, convs: &mut usize, rng: &mut Rng) -> Tensor<'g> {
    let cin = t.shape().dims()[1].fixed().unwrap();
    let cout = 1 + rng.below(4);
    let k = [1, 3][rng.below(2)];
    *convs += 1;
    let w = g.variable(&format!("w{convs}"), [cout, cin, k, k], init::zeros());
    let o = Conv2dOptions::new()
        .padding(Padding::Same)
        .format(DataFormat::Nchw);
    t.conv2d(w, &o)
}

/// How a random chain ends.
#[derive(Clone, Copy, Debug)]
enum Tail {
    /// The NCHW activation itself (one transpose back is needed).
    Image,
    /// Flattened NCHW, as `torch.flatten` (the transpose stays, before the reshape).
    Flatten,
    /// Global average pooling to `[N, C]` (NHWC's own; no transpose).
    Pool,
}

/// An NCHW chain as an importer builds it: a convolution first, then random convolutions,
/// batch normalizations (per-channel `reshape → broadcast` operands), activations, max
/// pools and residual adds of earlier values of the same shape. Returns the output and the
/// number of convolutions.
fn random_chain(g: &Graph, seed: u64) -> (Tensor<'_>, usize, Tail, usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9) | 1);
    let c0 = 1 + rng.below(3);
    let x = g.placeholder("x", DType::F32, [None, Some(c0), Some(6), Some(5)]);
    let mut convs = 0;
    let mut t = conv(g, x, &mut convs, &mut rng);
    let mut seen = vec![t];
    for i in 0..2 + rng.below(7) {
        t = match rng.below(7) {
            0 => conv(g, t, &mut convs, &mut rng),
            1 => batch_norm(g, t, &format!("bn{i}")),
            2 => t.relu(),
            3 => t.greater(0.5).select(t, t * 0.25).tanh(),
            4 => {
                let o = Pool2dOptions::new([2, 2])
                    .strides([1, 1])
                    .padding(Padding::Same)
                    .format(DataFormat::Nchw);
                t.max_pool2d(&o)
            }
            5 => (-t.cast(DType::F64)).cast(DType::F32),
            _ => match seen.iter().rev().find(|s| s.shape() == t.shape()) {
                Some(&s) => s + t,
                None => t.abs(),
            },
        };
        seen.push(t);
    }
    let tail = [Tail::Image, Tail::Flatten, Tail::Pool][rng.below(3)];
    let last_channels = t.shape().dims()[1].fixed().unwrap();
    let out = match tail {
        Tail::Image => t,
        Tail::Flatten => {
            let [_, c, h, w] = t
                .shape()
                .dims()
                .iter()
                .map(|d| d.fixed())
                .collect::<Vec<_>>()[..]
            else {
                unreachable!()
            };
            t.reshape(Shape(
                [
                    kiln::Dim::Batch,
                    kiln::Dim::Fixed(c.unwrap() * h.unwrap() * w.unwrap()),
                ]
                .into_iter()
                .collect(),
            ))
        }
        Tail::Pool => t.global_avg_pool2d(DataFormat::Nchw),
    };
    (out, convs, tail, last_channels)
}

/// The permutes left, split into those of a source (the input, a filter variable) and those
/// at the end (the output's, or the one a flattening reshape reads); any other permute
/// fails the test.
fn remaining_permutes(p: &Program) -> (usize, usize) {
    let (mut sources, mut tails) = (0, 0);
    for id in p.live_order() {
        let n = p.graph.node(id);
        if !matches!(n.op, Op::Permute(_)) {
            continue;
        }
        let users = p.graph.users(id);
        if matches!(
            p.graph.node(n.inputs[0]).op,
            Op::Placeholder | Op::Variable { .. }
        ) {
            sources += 1;
        } else if p.outputs.contains(&id) || (users.len() == 1 && p.outputs.contains(&users[0])) {
            tails += 1;
        } else {
            panic!(
                "a permute inside the chain: {}",
                kiln::passes::program_dump(p)
            );
        }
    }
    (sources, tails)
}

/// Random NCHW chains: the interpreter and the JIT give bitwise the same results before and
/// after `layout`, and what is left is one transpose of the input, one per filter (OIHW to
/// HWIO: a variable, read by a convolution) and one at the end unless global pooling ends
/// the chain in NHWC's `[N, C]`.
#[test]
fn nchw_chains_run_in_nhwc_with_the_same_bits() {
    for seed in 0..40 {
        let g = Graph::new();
        let (y, convs, tail, last_channels) = random_chain(&g, seed);
        g.check().unwrap();
        for batch in [1, 2] {
            let o = opts(batch);
            let mut p = Program::new(g.snapshot(), vec![y.id()]);
            Concretize.run(&mut p, &o).unwrap();
            cleanup_without_layout().run(&mut p, &o).unwrap();
            let (feeds, vars) = inputs(&g, batch, seed);
            let before = p.clone();
            let changed = Layout.run(&mut p, &o).unwrap();
            cleanup_without_layout().run(&mut p, &o).unwrap();
            let what = format!("seed {seed} batch {batch} {tail:?}");
            let want = interpret(&before, &feeds, &vars);
            let got = interpret(&p, &feeds, &vars);
            assert_bitwise(&want, &got, &format!("interpreter, {what}"));
            let (jb, ja) = (jit(&before, &feeds, &vars), jit(&p, &feeds, &vars));
            assert_bitwise(&jb, &ja, &format!("JIT, {what}"));
            let left = count_permutes(&p);
            let (sources, tails) = remaining_permutes(&p);
            assert_eq!(
                sources + tails,
                left,
                "{what}: {}",
                kiln::passes::program_dump(&p)
            );
            let end = !matches!(tail, Tail::Pool) && last_channels > 1;
            assert_eq!(
                tails,
                usize::from(end),
                "{what}: {}",
                kiln::passes::program_dump(&p)
            );
            assert!(sources <= 1 + convs, "{what}");
            assert!(changed || count_permutes(&before) == left, "{what}");
        }
    }
}

/// A permute that also feeds a node no rule crosses (a reduction) stays for it; sinking it
/// into its elementwise reader would add a second transpose that nothing cancels, so the
/// pass leaves the program as it is.
#[test]
fn sinking_that_adds_a_transpose_is_not_made() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 3, 4, 5]);
    let t = x.permute(&[0, 2, 3, 1]);
    let a = t.exp();
    let b = t.sum(&[1], false);
    let mut p = Program::new(g.snapshot(), vec![a.id(), b.id()]);
    assert!(!Layout.run(&mut p, &opts(2)).unwrap());
    assert_eq!(count_permutes(&p), 1);
}

/// The table's small rules: two permutes compose (to nothing when they cancel), and a
/// permute that moves only size-1 axes is a reshape.
#[test]
fn permutes_compose_and_unit_axes_are_reshapes() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 3, 4, 5]);
    let u = g.placeholder("u", DType::F32, [2, 1, 4, 1]);
    let back = x.permute(&[0, 2, 3, 1]).permute(&[0, 3, 1, 2]);
    let unit = u.permute(&[1, 0, 3, 2]);
    let twice = x.permute(&[2, 0, 1, 3]).permute(&[2, 0, 1, 3]);
    let mut p = Program::new(g.snapshot(), vec![back.id(), unit.id(), twice.id()]);
    let xs = Array::new([2, 3, 4, 5], (0..120).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let us = Array::new([2, 1, 4, 1], (0..8).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let feeds = vec![(x.id(), xs), (u.id(), us)];
    let want = interpret(&p, &feeds, &HashMap::new());
    assert!(Layout.run(&mut p, &opts(2)).unwrap());
    assert_bitwise(&want, &interpret(&p, &feeds, &HashMap::new()), "layout");
    assert_eq!(p.outputs[0], x.id());
    assert!(matches!(p.graph.node(p.outputs[1]).op, Op::Reshape));
    assert_eq!(count_permutes(&p), 1);
}

/// Drops ` @ file:line:col` so snapshots do not move with this file's line numbers.
fn without_locations(text: &str) -> String {
    text.lines()
        .map(|l| l.find(" @ ").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// conv → batch norm → ReLU → conv in NCHW, as an ONNX import builds it, after the
/// default pipeline's cleanup (which runs `layout`): the block is NHWC between the two
/// convolutions, the only transposes left are the input's, the filters' and the output's.
#[test]
fn conv_bn_relu_conv_block_snapshot() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3), Some(8), Some(8)]);
    let o = Conv2dOptions::new()
        .padding(Padding::Same)
        .format(DataFormat::Nchw);
    let w1 = g.variable("conv1/w", [4, 3, 3, 3], init::zeros());
    let h = x.conv2d(w1, &o);
    let h = batch_norm(&g, h, "bn").relu();
    let w2 = g.variable("conv2/w", [2, 4, 1, 1], init::zeros());
    let y = h.conv2d(w2, &o);
    g.check().unwrap();
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    let mut pl = kiln::passes::Pipeline::default();
    pl.remove("fusion");
    pl.remove("memplan");
    pl.options = opts(2);
    pl.run(&mut p).unwrap();
    assert_eq!(count_permutes(&p), 4, "input, two filters, output");
    let text = without_locations(&kiln::passes::program_dumper(&p).to_string());
    insta::assert_snapshot!("conv_bn_relu_conv_nchw", text);
}
