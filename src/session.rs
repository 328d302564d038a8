//! The TF1-style session: variables, feeds and fetches, and a cache of compiled executables.
//!
//! ```
//! use kiln::prelude::*;
//! let g = Graph::new();
//! let x = g.placeholder("x", DType::F32, [None, Some(3)]);
//! let w = g.variable("w", [3, 2], init::ones());
//! let y = x.matmul(w).sigmoid();
//!
//! let mut sess = Session::new(&g)?; // the JIT backend
//! let xv = Array::new([2, 3], vec![1.0f32, 2.0, 3.0, -1.0, -2.0, -3.0])?;
//! let out = sess.run(&[y], &[(x, xv)])?;
//! assert_eq!(out[0].shape(), &[2, 2]);
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Fetching an [`assign`](crate::Tensor::assign), or a [`group`](crate::Graph::group) of
//! them such as an optimizer's train op, updates variables when the run has finished: every
//! read in the run sees the old values (see [`crate::graph::effects`]).
//!
//! A run checks the feeds first (every missing placeholder is listed; wrong dtypes and shapes
//! and disagreeing batch sizes are reported by name), then finds or compiles the executable
//! for this set of fetches and this batch size, then runs it. The cache key is the graph, the
//! fetched nodes and the batch size: nodes are never changed or reused once added (see
//! ARCHITECTURE.md), so a key can never come to mean another program. `KILN_LOG_COMPILES=1`
//! prints each compile and why the cache missed.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{effects, Graph, NodeId, Tensor};
use crate::interp::{check_feeds, evaluate, order_with_feeds, Precision};
use crate::jit::Executable;
use crate::passes::{Pipeline, Program};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Which engine runs a session's graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Optimize with the pass pipeline and compile to native code with Cranelift.
    Jit,
    /// The reference interpreter (the oracle): no compilation, slow, obviously right.
    Interpreter,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    fetches: Vec<NodeId>,
    batch: Option<usize>,
}

/// Runs a graph: holds variable values and compiled executables.
pub struct Session {
    graph: Graph,
    backend: Backend,
    vars: HashMap<NodeId, Array>,
    cache: HashMap<Key, Arc<Executable>>,
    /// The assigns behind each set of fetches (sound to cache for the same reason as
    /// `cache`: nodes never change once added), so a training loop does not walk the graph
    /// on every step.
    updates: HashMap<Vec<NodeId>, Arc<[effects::Update]>>,
    /// Each updated variable's previous value: the buffer its next update is written into
    /// (double buffering: a training step allocates nothing for its variables).
    spare: HashMap<NodeId, Array>,
    runs: u64,
    compiles: usize,
    last_compile: Option<crate::jit::CompileTimes>,
    log: bool,
}

impl Session {
    /// A session on `graph` with the JIT backend; variables are initialized from their
    /// initializers.
    pub fn new(graph: &Graph) -> Result<Session> {
        Session::with_backend(graph, Backend::Jit)
    }

    /// A session with the chosen backend.
    pub fn with_backend(graph: &Graph, backend: Backend) -> Result<Session> {
        graph.check()?;
        let mut s = Session {
            graph: graph.clone(),
            backend,
            vars: HashMap::new(),
            cache: HashMap::new(),
            updates: HashMap::new(),
            spare: HashMap::new(),
            runs: 0,
            compiles: 0,
            last_compile: None,
            log: std::env::var("KILN_LOG_COMPILES").is_ok_and(|v| v == "1"),
        };
        s.init_missing();
        Ok(s)
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many executables this session has compiled.
    pub fn compile_count(&self) -> usize {
        self.compiles
    }

    /// Where the time of this session's last compile went (passes, Cranelift IR, machine
    /// code, finalizing); None before the first compile or on the interpreter.
    pub fn last_compile_times(&self) -> Option<crate::jit::CompileTimes> {
        self.last_compile
    }

    fn init_missing(&mut self) {
        let d = self.graph.data();
        for id in d.variables() {
            let n = d.node(id);
            if let (Op::Variable { init }, Some(shape)) = (&n.op, n.ty.shape.to_fixed()) {
                self.vars
                    .entry(id)
                    .or_insert_with(|| init.fill(n.ty.dtype, &shape));
            }
        }
    }

    /// Every variable's name and current value, in the graph's order.
    pub fn named_variables(&self) -> Vec<(String, &Array)> {
        let d = self.graph.data();
        d.variables()
            .into_iter()
            .filter_map(|id| {
                let name = d.node(id).name.as_deref()?.to_string();
                Some((name, self.vars.get(&id)?))
            })
            .collect()
    }

    /// `(name, id, type)` of every variable.
    pub(crate) fn variable_specs(&self) -> Vec<(String, NodeId, crate::Ty)> {
        let d = self.graph.data();
        d.variables()
            .into_iter()
            .filter_map(|id| {
                let n = d.node(id);
                Some((n.name.as_deref()?.to_string(), id, n.ty.clone()))
            })
            .collect()
    }

    /// Sets variables whose dtypes and shapes the caller has checked.
    pub(crate) fn put_variables(&mut self, values: Vec<(NodeId, Array)>) {
        self.vars.extend(values);
    }

    /// How many runs this session has made: the index of the random stream of the last run
    /// (each run draws from stream `run_count() + 1`).
    pub fn run_count(&self) -> u64 {
        self.runs
    }

    /// Sets the run counter, so that the next run draws random stream `runs + 1` (a restore
    /// does this to resume random streams exactly).
    pub fn set_run_count(&mut self, runs: u64) {
        self.runs = runs;
    }

    /// The graph this session runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The current value of a variable.
    pub fn variable(&self, v: Tensor<'_>) -> Option<&Array> {
        self.vars.get(&v.id())
    }

    /// Replaces a variable's value (same dtype and shape).
    pub fn set_variable(&mut self, v: Tensor<'_>, value: Array) -> Result<()> {
        let d = self.graph.data();
        let n = d
            .get(v.id())
            .filter(|n| matches!(n.op, Op::Variable { .. }))
            .ok_or_else(|| Error::invalid("set_variable: not a variable of this graph"))?;
        let want = n.ty.shape.to_fixed().unwrap_or_default();
        if value.dtype() != n.ty.dtype || value.shape() != want.as_slice() {
            return Err(Error::invalid(format!(
                "set_variable: {} is {}, the value is {}{:?}",
                n.label(),
                n.ty,
                value.dtype(),
                value.shape()
            )));
        }
        drop(d);
        self.vars.insert(v.id(), value);
        Ok(())
    }

    /// Evaluates `fetches` with `feeds` (placeholder, value). Feeds are checked before any
    /// code runs.
    pub fn run(
        &mut self,
        fetches: &[Tensor<'_>],
        feeds: &[(Tensor<'_>, Array)],
    ) -> Result<Vec<Array>> {
        let mut out = vec![];
        self.run_into(fetches, feeds, &mut out)?;
        Ok(out)
    }

    /// [`Session::run`] writing into `outputs`: arrays already there (say, from the previous
    /// call) are overwritten when they have the fetch's dtype and shape, instead of
    /// allocating new ones, like numpy's `out=`. On success `outputs` holds one array per
    /// fetch; on error it is emptied.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [3]);
    /// let y = x * 2.0;
    /// let mut sess = Session::new(&g)?;
    /// let mut out = vec![];
    /// for i in 0..3 {
    ///     let xv = Array::new([3], vec![i as f32; 3])?;
    ///     sess.run_into(&[y], &[(x, xv)], &mut out)?; // allocates on the first call only
    ///     assert_eq!(out[0].to_vec::<f32>()?, vec![2.0 * i as f32; 3]);
    /// }
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn run_into(
        &mut self,
        fetches: &[Tensor<'_>],
        feeds: &[(Tensor<'_>, Array)],
        outputs: &mut Vec<Array>,
    ) -> Result<()> {
        let mut out = std::mem::take(outputs);
        for t in fetches.iter().chain(feeds.iter().map(|(t, _)| t)) {
            if !t.graph().same_as(&self.graph) {
                return Err(Error::Feed(
                    "a fetched or fed tensor belongs to another graph".into(),
                ));
            }
        }
        self.init_missing();
        let user: Vec<NodeId> = fetches.iter().map(|t| t.id()).collect();
        // Assigns behind the fetches become extra outputs, stored when the run has finished
        // (snapshot semantics; see graph::effects).
        let updates = match self.updates.get(&user) {
            Some(u) => u.clone(),
            None => {
                let u: Arc<[effects::Update]> = effects::collect(&self.graph.data(), &user)?.into();
                self.updates.insert(user.clone(), u.clone());
                u
            }
        };
        let fetch_ids = effects::with_updates(&user, &updates);
        self.runs += 1;
        let run_index = self.runs;
        out.resize_with(user.len(), || Array::zeros(crate::DType::F32, [0]));
        // Each update's position gets its variable's spare buffer (none on the first run:
        // an empty array, which the executable replaces with a new one).
        out.extend(updates.iter().map(|u| {
            self.spare
                .remove(&u.variable)
                .unwrap_or_else(|| Array::zeros(crate::DType::F32, [0]))
        }));
        out = match self.backend {
            Backend::Interpreter => {
                let feed_ids: Vec<(NodeId, Array)> =
                    feeds.iter().map(|(t, a)| (t.id(), a.clone())).collect();
                evaluate(
                    &self.graph.data(),
                    &fetch_ids,
                    &feed_ids,
                    &self.vars,
                    Precision::F32,
                    run_index,
                )?
            }
            Backend::Jit => {
                self.run_jit(&fetch_ids, feeds, run_index, &mut out)?;
                out
            }
        };
        for (u, value) in updates.iter().zip(out.drain(user.len()..)) {
            if let Some(old) = self.vars.insert(u.variable, value) {
                self.spare.insert(u.variable, old);
            }
        }
        *outputs = out;
        Ok(())
    }

    fn run_jit(
        &mut self,
        fetches: &[NodeId],
        feeds: &[(Tensor<'_>, Array)],
        run_index: u64,
        out: &mut Vec<Array>,
    ) -> Result<()> {
        // Check feeds exactly as the interpreter does, before anything is compiled or run.
        let batch = {
            let d = self.graph.data();
            d.check()?;
            for &f in fetches {
                if d.get(f).is_none() {
                    return Err(Error::Feed("a fetched tensor is not in this graph".into()));
                }
            }
            let fed: HashMap<NodeId, &Array> = feeds.iter().map(|(t, a)| (t.id(), a)).collect();
            for id in fed.keys() {
                if !matches!(d.get(*id).map(|n| &n.op), Some(Op::Placeholder)) {
                    return Err(Error::Feed(
                        "the JIT backend feeds placeholders only (use Backend::Interpreter to \
                         feed other tensors)"
                            .into(),
                    ));
                }
            }
            let order = order_with_feeds(&d, fetches, &fed);
            check_feeds(&d, &order, &fed, Precision::F32)?
        };
        let key = Key {
            fetches: fetches.to_vec(),
            batch,
        };
        let exe = match self.cache.get(&key) {
            Some(e) => e.clone(),
            None => {
                let why = if self.cache.keys().any(|k| k.fetches == key.fetches) {
                    format!("new batch size {batch:?}")
                } else {
                    "new set of fetches".to_string()
                };
                let t0 = Instant::now();
                let mut p = Program::new(self.graph.snapshot(), fetches.to_vec());
                let mut pl = Pipeline::default();
                pl.options.batch = batch.or(Some(1));
                pl.run(&mut p)?;
                let passes = t0.elapsed();
                let exe = Arc::new(Executable::compile(&p)?);
                self.compiles += 1;
                self.last_compile = Some(crate::jit::CompileTimes {
                    passes,
                    ..exe.compile_times()
                });
                if self.log {
                    let t = self.last_compile.unwrap_or_default();
                    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                    eprintln!(
                        "kiln: compiled {} kernel(s) ({} tiled) for {} fetch(es) in {:.2} ms \
                         (passes {:.2}, lowering {:.2}, cranelift {:.2}, finalize {:.2}; cache \
                         miss: {why})",
                        exe.kernel_count(),
                        t.tiled,
                        fetches.len(),
                        ms(t0.elapsed()),
                        ms(t.passes),
                        ms(t.lowering),
                        ms(t.cranelift),
                        ms(t.finalize),
                    );
                }
                self.cache.insert(key, exe.clone());
                exe
            }
        };
        let fed: HashMap<NodeId, &Array> = feeds.iter().map(|(t, a)| (t.id(), a)).collect();
        let feed_refs: Vec<&Array> = exe
            .placeholders()
            .iter()
            .map(|(id, _)| {
                fed.get(id)
                    .copied()
                    .ok_or_else(|| Error::Feed("a placeholder was not fed".into()))
            })
            .collect::<Result<_>>()?;
        let var_refs: Vec<&Array> = exe
            .variables()
            .iter()
            .map(|(id, _)| {
                self.vars
                    .get(id)
                    .ok_or_else(|| Error::invalid("a variable has no value"))
            })
            .collect::<Result<_>>()?;
        exe.run_into(&feed_refs, &var_refs, run_index, out)
    }
}
