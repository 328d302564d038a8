//! What the ranks agree on before they train: the graph they run (a fingerprint compared at
//! start-up, so a mismatch is a clear error instead of collectives that hang or sum
//! unrelated buffers) and the starting values of the variables (rank 0's, broadcast, as
//! Horovod's `broadcast_variables` does).

use crate::array::{Array, ArrayData};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::session::Session;

/// A 64-bit FNV-1a hash of the graph's canonical dump (ops, attributes, types, names and
/// constants, not source lines): equal on two ranks exactly when they built the same graph.
pub fn graph_fingerprint(graph: &Graph) -> u64 {
    graph.dump().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Ok if every rank built the same graph (compared by [`graph_fingerprint`]); otherwise an
/// error on every rank naming the ranks whose graph differs from rank 0's. Call it on every
/// rank, before the first run (`Distributed` and `fit` do).
pub fn check_same_graph(graph: &Graph) -> Result<()> {
    let all = super::all_gather_u64(graph_fingerprint(graph))?;
    let odd: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(_, &h)| h != all[0])
        .map(|(r, h)| format!("rank {r} ({h:016x})"))
        .collect();
    if odd.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "dist: the ranks built different graphs: {} differ from rank 0 ({:016x}); every rank \
         must build the same graph (same model, batch shapes and micro-shards per rank)",
        odd.join(", "),
        all[0]
    )))
}

/// Replaces every variable of `session` (weights and optimizer state, of every dtype but
/// the 8- and 16-bit storage ones) and its run counter by rank 0's, in the graph's variable
/// order, so every rank sends and receives the same sequence.
pub fn broadcast_variables(session: &mut Session) -> Result<()> {
    let g = session.graph().clone();
    let vars: Vec<(String, Array)> = session
        .named_variables()
        .into_iter()
        .map(|(n, a)| (n, a.clone()))
        .collect();
    for (name, a) in vars {
        let shape = a.shape().to_vec();
        let value = match a.data() {
            ArrayData::F32(v) => {
                let mut v = v.clone();
                super::broadcast_f32(&mut v)?;
                Array::new(&shape, v)?
            }
            ArrayData::F64(v) => {
                let mut v = v.clone();
                super::broadcast_f64(&mut v)?;
                Array::new(&shape, v)?
            }
            ArrayData::I32(v) => {
                let mut v = v.clone();
                super::broadcast_i32(&mut v)?;
                Array::new(&shape, v)?
            }
            ArrayData::I64(v) => {
                let mut v = v.clone();
                super::broadcast_i64(&mut v)?;
                Array::new(&shape, v)?
            }
            _ => {
                return Err(Error::invalid(format!(
                    "dist::broadcast_variables: variable {name} is {}; only f32, f64, i32 \
                     and i64 variables are broadcast",
                    a.dtype()
                )))
            }
        };
        let t = g
            .by_name(&name)
            .ok_or_else(|| Error::Internal(format!("variable {name} has no node")))?;
        session.set_variable(t, value)?;
    }
    let mut runs = [i64::try_from(session.run_count()).unwrap_or(i64::MAX)];
    super::broadcast_i64(&mut runs)?;
    session.set_run_count(u64::try_from(runs[0]).unwrap_or(0));
    Ok(())
}

/// What every rank does once its session exists, before the first step: checks that all
/// ranks built the same graph, then gives every rank rank 0's variables.
pub fn start(session: &mut Session) -> Result<()> {
    check_same_graph(&session.graph().clone())?;
    broadcast_variables(session)
}
