//! The buffer-assignment validator against deliberately corrupted plans: each corruption is
//! refused by [`validate`] and by the JIT's compile, as an [`Error::Internal`] naming what is
//! wrong. (Valid plans are checked on every compile of the whole test suite.)

use super::{plan, validate};
use crate::error::Error;
use crate::graph::op::Op;
use crate::graph::{Graph, NodeId};
use crate::jit::Executable;
use crate::passes::{Pipeline, Program};
use crate::DType;

fn planned(g: &Graph, outputs: Vec<NodeId>) -> Program {
    let mut p = Program::new(g.snapshot(), outputs);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(1);
    pl.run(&mut p).unwrap();
    assert!(p.memory().is_some(), "memplan ran");
    p
}

/// The kernels with a slot, in schedule order.
fn planned_kernels(p: &Program) -> Vec<NodeId> {
    let plan = p.memory().unwrap();
    p.live_order()
        .into_iter()
        .filter(|id| matches!(p.graph.node(*id).op, Op::Fusion(_)) && plan.slot_of.contains_key(id))
        .collect()
}

/// Asserts both the validator and the JIT refuse `p` with an internal error mentioning `what`.
fn refused(p: &Program, what: &str) {
    let e = validate(p, p.memory().unwrap()).expect_err("corrupted plan accepted");
    assert!(matches!(e, Error::Internal(_)), "{e:?}");
    assert!(e.to_string().contains(what), "{e}");
    let e = Executable::compile(p)
        .err()
        .expect("the JIT compiled a corrupted plan");
    assert!(
        matches!(&e, Error::Internal(m) if m.contains(what)),
        "{e:?}"
    );
}

/// A chain of reductions and elementwise kernels: intermediates share slots, some in place.
fn chain() -> Program {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [16, 16]);
    let mut t = x;
    for _ in 0..4 {
        t = (t.exp() - t.max(&[1], true)).tanh();
    }
    let out = t.sum_all();
    planned(&g, vec![out.id()])
}

#[test]
fn the_pipelines_plan_is_valid_and_writes_in_place() {
    let p = chain();
    let m = p.memory().unwrap();
    validate(&p, m).unwrap();
    assert!(!m.in_place().is_empty(), "the chain updates in place");
    assert_eq!(&plan(&p), m, "planning is deterministic");
    assert!(Executable::compile(&p).is_ok());
}

#[test]
fn a_slot_too_small_is_refused() {
    let mut p = chain();
    let m = p.memory.as_mut().unwrap();
    let big = (0..m.slots.len()).max_by_key(|&s| m.slots[s]).unwrap();
    m.slots[big] -= 4;
    refused(&p, &format!("slot {big} holds"));
}

#[test]
fn a_value_without_a_slot_is_refused() {
    let mut p = chain();
    let k = planned_kernels(&p)[0];
    p.memory.as_mut().unwrap().slot_of.remove(&k);
    refused(&p, "has no slot");
    p.memory.as_mut().unwrap().slot_of.insert(k, 99);
    refused(&p, "is in slot 99");
}

#[test]
fn two_live_values_in_one_slot_are_refused() {
    let mut p = chain();
    let m = p.memory.as_ref().unwrap();
    // Two kernels in different slots, the first still read when the second is written:
    // the first's value is read by a kernel after the second one's position.
    let order = p.live_order();
    let pos = |id: &NodeId| order.iter().position(|x| x == id).unwrap();
    let kernels = planned_kernels(&p);
    let last_read = |id: NodeId| {
        order
            .iter()
            .rposition(|r| p.graph.node(*r).inputs.contains(&id))
            .unwrap()
    };
    let (a, b) = kernels
        .iter()
        .flat_map(|&a| kernels.iter().map(move |&b| (a, b)))
        .find(|&(a, b)| {
            pos(&a) < pos(&b) && last_read(a) > pos(&b) && m.slot_of[&a] != m.slot_of[&b]
        })
        .expect("two overlapping values");
    let slot = m.slot_of[&a];
    let m = p.memory.as_mut().unwrap();
    m.slot_of.insert(b, slot);
    m.slots[slot] = m.slots.iter().copied().max().unwrap();
    refused(&p, "still lives there");
}

#[test]
fn writing_in_place_over_a_value_read_elsewhere_is_refused() {
    // `a` is read transposed by the kernel computing `b`: `b` may not take `a`'s slot even
    // though `a` dies there (element (i,j) of `b` is written before (j,i) of `a` is read).
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [8, 8]);
    let a = x.matmul(x);
    let b = a + a.transpose();
    // A matmul reads its operands from memory: `b` stays a kernel of its own.
    let out = b.matmul(x);
    let mut p = planned(&g, vec![out.id()]);
    let kernels: Vec<NodeId> = planned_kernels(&p);
    assert_eq!(kernels.len(), 2, "{}", crate::passes::program_dump(&p));
    let (ka, kb) = (kernels[0], kernels[1]);
    assert!(
        p.graph.node(kb).inputs.contains(&ka),
        "the second kernel reads the first"
    );
    let m = p.memory.as_mut().unwrap();
    assert_ne!(m.slot_of[&ka], m.slot_of[&kb], "memplan kept them apart");
    let slot = m.slot_of[&ka];
    m.slot_of.insert(kb, slot);
    refused(&p, "still lives there");
}

#[test]
fn a_compile_without_memplan_plans_explicitly() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 4]);
    let y = (x.exp() - x.max(&[1], true)).tanh().sum_all();
    let mut p = Program::new(g.snapshot(), vec![y.id()]);
    let mut pl = Pipeline::default();
    pl.options.batch = Some(1);
    assert!(pl.remove("memplan"));
    pl.run(&mut p).unwrap();
    assert!(p.memory().is_none());
    let exe = Executable::compile(&p).unwrap();
    let xs = crate::array::Array::new([4, 4], vec![0.5f32; 16]).unwrap();
    let got = exe.run(&[&xs], &[], 0).unwrap();
    let want = {
        pl.add(Box::new(super::MemPlan));
        let mut q = Program::new(g.snapshot(), vec![y.id()]);
        pl.run(&mut q).unwrap();
        Executable::compile(&q)
            .unwrap()
            .run(&[&xs], &[], 0)
            .unwrap()
    };
    assert_eq!(
        got[0].to_vec::<f32>().unwrap(),
        want[0].to_vec::<f32>().unwrap()
    );
}
