//! `cse`: common-subexpression elimination by structural hashing.
//!
//! Two nodes are the same computation when their ops (attributes included, constants compared
//! by bits), operands and types are equal; operands of commutative ops are compared as a set.
//! Placeholders and variables are never merged: they are identities, not computations.
//! Random ops with equal seeds and shapes *are* merged: a random value is a pure function of
//! `(seed, run, element)`, so two such nodes hold the same numbers.

use super::{Pass, PassOptions, Program};
use crate::error::Result;
use crate::graph::op::{Op, Ty};
use crate::graph::NodeId;
use smallvec::SmallVec;
use std::collections::HashMap;

/// See the module docs.
pub struct Cse;

#[derive(PartialEq, Eq, Hash)]
struct Key {
    op: Op,
    inputs: SmallVec<[NodeId; 3]>,
    ty: Ty,
}

impl Pass for Cse {
    fn name(&self) -> &str {
        "cse"
    }
    fn run(&self, p: &mut Program, _opts: &PassOptions) -> Result<bool> {
        let mut seen: HashMap<Key, NodeId> = HashMap::new();
        let mut changed = false;
        // Topological order: a node's operands are already canonical when it is visited.
        for id in p.live_order() {
            let n = p.graph.node(id);
            if matches!(n.op, Op::Placeholder | Op::Variable { .. }) {
                continue;
            }
            let mut inputs = n.inputs.clone();
            if let Op::Binary(b) = &n.op {
                if b.is_commutative() {
                    inputs.sort();
                }
            }
            let key = Key {
                op: n.op.clone(),
                inputs,
                ty: n.ty.clone(),
            };
            match seen.get(&key) {
                Some(&canon) => {
                    p.replace(id, canon);
                    changed = true;
                }
                None => {
                    seen.insert(key, id);
                }
            }
        }
        Ok(changed)
    }
}
