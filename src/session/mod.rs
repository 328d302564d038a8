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
//! A run checks the feeds first, with the one checker both backends use (`src/feeds.rs`:
//! every missing placeholder is listed; wrong dtypes and shapes and disagreeing batch sizes
//! are reported by name). The JIT then finds or compiles the executable for this set of
//! fetches and this batch size, and runs it; the interpreter evaluates the graph as written,
//! without the passes, since it is the oracle they are checked against. Variables live in
//! the same store as the [`Interpreter`](crate::Interpreter)'s (`src/vars.rs`), which applies
//! a run's updates when it has finished. The cache key is the graph, the
//! fetched nodes and the batch size: nodes are never changed or reused once added (see
//! ARCHITECTURE.md), so a key can never come to mean another program. The cache keeps the
//! [`DEFAULT_CACHE_CAPACITY`] most recently used executables
//! ([`Session::set_cache_capacity`] changes it), and a compile copies only what its fetches
//! depend on, after checking that every value it will compute fits the allocation limit
//! ([`crate::shape::alloc_limit`]). `KILN_LOG_COMPILES=1` prints each compile and why the
//! cache missed.
//!
//! # Specialization on `bool` switches
//!
//! The JIT also specializes an executable on the value of every fed **scalar `bool`
//! placeholder** its fetches depend on (a TF1-style `is_training` switch, such as a
//! [`Model`](crate::nn::Model)'s `training`): those values join the cache key, and the pass
//! pipeline sees each as a constant ([`PassOptions::fixed_feeds`](crate::passes::PassOptions),
//! made constant by `concretize`, as the batch size is), so `where(training, a, b)` keeps one
//! branch and the other is removed as dead code. Inference then draws no dropout mask and
//! computes no batch statistics. This is what XLA and TF's grappler do with constants.
//!
//! - **Cost:** at most 2^k executables per set of fetches and batch size, for `k` switches
//!   the fetches depend on (a model: 2, one for training and one for inference). Other
//!   placeholders (any other dtype or shape) are never specialized on.
//! - **Invariant:** a specialized executable's results are bitwise what the unspecialized
//!   graph computes for the same feeds. The selected branch is computed exactly as before;
//!   only the unselected one is skipped. A run-time error the skipped branch would raise
//!   (an `i32` division by zero) is not lost: a branch that holds such an op is kept, so
//!   the JIT reports what the interpreter reports (see `passes::simplify`).
//! - **Random streams:** a random op draws from `(seed, run, element)`, and the run counter
//!   advances once per run whatever the run computes, so a skipped dropout fill changes no
//!   number a later run draws.
//! - **Opt-out:** [`Session::specialize_bool_feeds`]`(false)` compiles one executable that
//!   reads the switch at run time (fewer compiles when a switch flips often and the
//!   branches are cheap). The interpreter never specializes: it runs the graph as written.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{effects, Graph, NodeId, Tensor};
use crate::interp::{evaluate, Precision};
use crate::jit::Executable;
use crate::passes::{Pipeline, Program};
use crate::vars::VarStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

mod limits;
mod lru;
mod plan;

use limits::{check_sizes, check_workspace};
use lru::Lru;
use plan::FetchPlan;

pub use crate::jit::{CompileTimes, StepCounts};

/// Which engine runs a session's graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Optimize with the pass pipeline and compile to native code with Cranelift.
    Jit,
    /// The reference interpreter (the oracle): no compilation, slow, obviously right. It
    /// runs the graph as written, without the pass pipeline: an oracle that the passes are
    /// checked against must not go through them (ARCHITECTURE.md, "The JIT and the
    /// session").
    Interpreter,
}

/// The default of [`Session::set_cache_capacity`]: how many compiled executables a session
/// keeps.
pub const DEFAULT_CACHE_CAPACITY: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    fetches: Vec<NodeId>,
    batch: Option<usize>,
    /// The value of each `bool` switch the executable is specialized on, by id (empty when
    /// specialization is off).
    switches: Vec<(NodeId, bool)>,
}

/// Runs a graph: holds variable values and compiled executables.
///
/// The JIT keeps one executable per set of fetches, batch size and value of each fed scalar
/// `bool` placeholder the fetches read (a `training` switch): each is specialized on those
/// values, so the branch a `select` on a switch does not take is not computed, with results
/// bitwise those of the unspecialized graph (module docs, "Specialization on `bool`
/// switches"; [`Session::specialize_bool_feeds`] turns it off).
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(2)]);
/// let w = g.variable("w", [2, 1], init::ones());
/// let loss = x.matmul(w).square().mean_all();
/// let step = Sgd::new(0.1).minimize(loss, &[w])?; // an update op in the graph
/// let mut sess = Session::new(&g)?; // variables initialized, nothing compiled yet
/// let xv = Array::new([1, 2], vec![1f32, 1.])?;
/// let before = sess.run(&[loss], &[(x, xv.clone())])?[0].scalar_value::<f32>()?;
/// sess.run(&[step], &[(x, xv.clone())])?; // one training step: w changes in the session
/// let after = sess.run(&[loss], &[(x, xv)])?[0].scalar_value::<f32>()?;
/// assert!(after < before);
/// let w_now = sess.variable(w).unwrap().to_vec::<f32>()?;
/// assert!(w_now.iter().all(|v| (v - 0.6).abs() < 1e-6)); // 1 - 0.1 · 4
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Session {
    graph: Graph,
    backend: Backend,
    /// Variable values, double-buffered (an update is written into the variable's previous
    /// buffer, so a training step allocates nothing for its variables), and the run counter.
    vars: VarStore,
    /// The compiled executables, the most recently used [`Session::cache_capacity`] of them.
    cache: Lru<Key, Arc<Executable>>,
    /// The assigns and switches behind each set of fetches (sound to cache for the same
    /// reason as `cache`: nodes never change once added), so a training loop does not walk
    /// the graph on every step; bounded like `cache`.
    plans: Lru<Vec<NodeId>, Arc<FetchPlan>>,
    /// Specialize executables on fed `bool` switches ([`Session::specialize_bool_feeds`]).
    specialize: bool,
    compiles: usize,
    /// How many nodes the last compile copied out of the graph (the fetches' cone).
    last_copied: usize,
    last_compile: Option<crate::jit::CompileTimes>,
    log: bool,
    /// Refuse feeds holding NaN or infinities ([`Session::check_feeds_finite`]).
    check_finite: bool,
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
        Ok(Session {
            graph: graph.clone(),
            backend,
            vars: VarStore::new(graph, true)?,
            cache: Lru::new(DEFAULT_CACHE_CAPACITY),
            plans: Lru::new(DEFAULT_CACHE_CAPACITY),
            specialize: true,
            compiles: 0,
            last_copied: 0,
            last_compile: None,
            log: std::env::var("KILN_LOG_COMPILES").is_ok_and(|v| v == "1"),
            check_finite: false,
        })
    }

    /// Makes every later run refuse a feed that holds a NaN or an infinity, naming the
    /// placeholder, the line that made it, and the first bad element's index and value (off
    /// by default: it reads every fed float once per run). This is TF's
    /// `tf.debugging.check_numerics` for the data you feed; integer and bool feeds are not
    /// checked.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [None, Some(2)]);
    /// let y = x * 2.0;
    /// let mut sess = Session::new(&g)?;
    /// sess.check_feeds_finite(true);
    /// let xv = Array::new([2, 2], vec![1.0f32, 2.0, f32::NAN, 4.0])?;
    /// let e = sess.run(&[y], &[(x, xv)]).unwrap_err().to_string();
    /// assert!(e.contains(r#""x""#) && e.contains("NaN at index [1, 0]"), "{e}");
    /// # Ok::<(), kiln::Error>(())
    /// ```
    #[doc(alias = "check_numerics")]
    pub fn check_feeds_finite(&mut self, on: bool) -> &mut Session {
        self.check_finite = on;
        self
    }

    /// Whether the JIT specializes executables on the values of fed scalar `bool`
    /// placeholders (on by default; see the module docs, "Specialization on `bool`
    /// switches"). Off, one executable serves every value of a switch and selects between
    /// both computed branches at run time; on, each value gets its own executable, which
    /// skips the unselected branch. Results are bitwise the same either way. Executables
    /// already compiled stay cached under their keys.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [None, Some(4)]);
    /// let training = g.placeholder("training", DType::Bool, Shape::scalar());
    /// let y = x.dropout(0.5, training, 7);
    /// let xv = Array::new([1, 4], vec![1.0f32; 4])?;
    /// let mut sess = Session::new(&g)?;
    /// for on in [false, true] {
    ///     sess.run(&[y], &[(x, xv.clone()), (training, Array::scalar(on))])?;
    /// }
    /// assert_eq!(sess.compile_count(), 2); // one executable per value of `training`
    /// // The inference one draws no mask: its only steps are not random fills.
    /// sess.run(&[y], &[(x, xv.clone()), (training, Array::scalar(false))])?;
    /// assert_eq!(sess.compile_count(), 2);
    ///
    /// let mut once = Session::new(&g)?;
    /// once.specialize_bool_feeds(false);
    /// for on in [false, true] {
    ///     once.run(&[y], &[(x, xv.clone()), (training, Array::scalar(on))])?;
    /// }
    /// assert_eq!(once.compile_count(), 1); // one executable reads the switch at run time
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn specialize_bool_feeds(&mut self, on: bool) -> &mut Session {
        self.specialize = on;
        self
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many executables this session has compiled.
    pub fn compile_count(&self) -> usize {
        self.compiles
    }

    /// Sets how many compiled executables the session keeps (at least 1; the default is
    /// [`DEFAULT_CACHE_CAPACITY`]). An executable is compiled for each set of fetches and
    /// batch size; past the capacity the least recently used one is dropped (its machine code
    /// freed), and compiled again if it is needed again. A training loop uses one or two; a
    /// loop over many batch sizes or fetch sets stays within this many.
    pub fn set_cache_capacity(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid(
                "set_cache_capacity: the capacity must be at least 1 (a run needs its executable)",
            ));
        }
        self.cache.set_capacity(n);
        self.plans.set_capacity(n);
        Ok(())
    }

    /// How many compiled executables the session keeps at most.
    pub fn cache_capacity(&self) -> usize {
        self.cache.cap
    }

    /// How many compiled executables the session holds now.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// How many graph nodes the last compile copied (the nodes its fetches depend on, not
    /// the whole graph). For tests and benchmarks.
    #[doc(hidden)]
    pub fn last_compile_copied_nodes(&self) -> usize {
        self.last_copied
    }

    /// Where the time of this session's last compile went (passes, Cranelift IR, machine
    /// code, finalizing); None before the first compile or on the interpreter.
    pub fn last_compile_times(&self) -> Option<crate::jit::CompileTimes> {
        self.last_compile
    }

    /// Every variable's name and current value, in the graph's order.
    pub fn named_variables(&self) -> Vec<(String, &Array)> {
        self.vars.named()
    }

    /// `(name, id, type)` of every variable.
    pub(crate) fn variable_specs(&self) -> Vec<(String, NodeId, crate::Ty)> {
        self.vars.specs()
    }

    /// Gives every variable added to the graph since this session was made its initial
    /// value now (a run does it anyway; `Model::compile` wants the optimizer's at once).
    pub(crate) fn init_new_variables(&mut self) -> Result<()> {
        self.vars.init_missing()
    }

    /// Sets variables whose dtypes and shapes the caller has checked.
    pub(crate) fn put_variables(&mut self, values: Vec<(NodeId, Array)>) {
        self.vars.put_checked(values);
    }

    /// How many runs this session has made: the index of the random stream of the last run
    /// (each run draws from stream `run_count() + 1`).
    pub fn run_count(&self) -> u64 {
        self.vars.runs()
    }

    /// Sets the run counter, so that the next run draws random stream `runs + 1` (a restore
    /// does this to resume random streams exactly).
    pub fn set_run_count(&mut self, runs: u64) {
        self.vars.set_runs(runs);
    }

    /// The graph this session runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The current value of a variable.
    pub fn variable(&self, v: Tensor<'_>) -> Option<&Array> {
        self.vars.get(v.id())
    }

    /// Replaces a variable's value (same dtype and shape).
    pub fn set_variable(&mut self, v: Tensor<'_>, value: Array) -> Result<()> {
        if !v.graph().same_as(&self.graph) {
            return Err(Error::invalid(format!(
                "set_variable: {v:?} belongs to another graph than this session's"
            )));
        }
        self.vars.set(v.id(), value, false)
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
        crate::feeds::same_graph(&self.graph, fetches, feeds)?;
        self.vars.init_missing()?;
        let user: Vec<NodeId> = fetches.iter().map(|t| t.id()).collect();
        // Assigns behind the fetches become extra outputs, stored when the run has finished
        // (snapshot semantics; see graph::effects).
        let plan = match self.plans.get(&user) {
            Some(p) => p,
            None => {
                let p = Arc::new(plan::plan(&self.graph.data(), self.backend, &user)?);
                self.plans.insert(user.clone(), p.clone());
                p
            }
        };
        let updates = &plan.updates;
        let fetch_ids = effects::with_updates(&user, updates);
        // Counted before the checks, as it always was: a refused run still uses up its
        // random stream.
        let run_index = self.vars.count_run();
        // The feeds are checked by one checker for both backends, before anything is
        // compiled or run, so both report the same errors.
        let fed: HashMap<NodeId, &Array> = feeds.iter().map(|(t, a)| (t.id(), a)).collect();
        let batch = {
            let mut cache = plan.needed.lock().unwrap_or_else(|e| e.into_inner());
            crate::feeds::check(
                &self.graph.data(),
                &fetch_ids,
                &fed,
                Precision::F32,
                &mut cache,
            )?
        };
        if self.check_finite {
            crate::feeds::check_finite(&self.graph.data(), &fed)?;
        }
        out.resize_with(user.len(), || Array::zeros(crate::DType::F32, [0]));
        // Each update's position gets its variable's spare buffer (none on the first run:
        // an empty array, which the executable replaces with a new one).
        out.extend(updates.iter().map(|u| self.vars.take_spare(u.variable)));
        out = match self.backend {
            Backend::Interpreter => {
                let feed_ids: Vec<(NodeId, Array)> =
                    feeds.iter().map(|(t, a)| (t.id(), a.clone())).collect();
                evaluate(
                    &self.graph.data(),
                    &fetch_ids,
                    &feed_ids,
                    self.vars.values(),
                    Precision::F32,
                    run_index,
                )?
            }
            Backend::Jit => {
                let switches = self.switch_values(&plan.switches, &fed)?;
                self.run_jit(&fetch_ids, &fed, batch, switches, run_index, &mut out)?;
                out
            }
        };
        self.vars.apply(updates, out.drain(user.len()..));
        *outputs = out;
        Ok(())
    }

    /// The fed value of each switch, for the cache key (none when specialization is off).
    /// The feeds have been checked, so each switch is fed a `bool` scalar; a miss is named
    /// all the same.
    fn switch_values(
        &self,
        switches: &[NodeId],
        fed: &HashMap<NodeId, &Array>,
    ) -> Result<Vec<(NodeId, bool)>> {
        if !self.specialize {
            return Ok(vec![]);
        }
        switches
            .iter()
            .map(|id| {
                let v = fed.get(id).map(|a| a.scalar_value::<bool>());
                match v {
                    Some(Ok(b)) => Ok((*id, b)),
                    _ => Err(Error::Feed(format!(
                        "placeholder {} needs a bool scalar",
                        self.graph.data().node(*id).label()
                    ))),
                }
            })
            .collect()
    }

    /// Runs `fetches` on the executable for them, this batch size and these switch values,
    /// compiling it first if the cache does not have it. The feeds have been checked.
    fn run_jit(
        &mut self,
        fetches: &[NodeId],
        fed: &HashMap<NodeId, &Array>,
        batch: Option<usize>,
        switches: Vec<(NodeId, bool)>,
        run_index: u64,
        out: &mut Vec<Array>,
    ) -> Result<()> {
        {
            let d = self.graph.data();
            if fed
                .keys()
                .any(|id| !matches!(d.get(*id).map(|n| &n.op), Some(Op::Placeholder)))
            {
                return Err(Error::Feed(
                    "the JIT backend feeds placeholders only (use Backend::Interpreter to \
                     feed other tensors)"
                        .into(),
                ));
            }
        }
        let exe = self.executable(fetches, batch, switches)?;
        // Both were checked (the feeds by `feeds::check`, the variables by `init_missing`);
        // a miss is named all the same.
        let label = |id: &NodeId| self.graph.data().get(*id).map(|n| n.label());
        let feed_refs: Vec<&Array> = exe
            .placeholders()
            .iter()
            .map(|(id, _)| {
                fed.get(id).copied().ok_or_else(|| {
                    Error::Feed(format!(
                        "placeholder {} was not fed",
                        label(id).unwrap_or_default()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let var_refs: Vec<&Array> = exe
            .variables()
            .iter()
            .map(|(id, _)| {
                self.vars.get(*id).ok_or_else(|| {
                    Error::invalid(format!(
                        "variable {} has no value",
                        label(id).unwrap_or_default()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        exe.run_into(&feed_refs, &var_refs, run_index, out)
    }

    /// The executable for `fetches` at this batch size and these switch values: from the
    /// cache, or compiled (the default pipeline with the batch size and the switches made
    /// concrete, then Cranelift) and cached.
    fn executable(
        &mut self,
        fetches: &[NodeId],
        batch: Option<usize>,
        switches: Vec<(NodeId, bool)>,
    ) -> Result<Arc<Executable>> {
        let key = Key {
            fetches: fetches.to_vec(),
            batch,
            switches,
        };
        let exe = match self.cache.get(&key) {
            Some(e) => e,
            None => {
                let same = |k: &&Key| k.fetches == key.fetches;
                let why = if self.cache.keys().any(|k| same(&k) && k.batch == batch) {
                    format!("new values of bool switches {:?}", key.switches)
                } else if self.cache.keys().any(|k| same(&k)) {
                    format!("new batch size {batch:?}")
                } else {
                    "new set of fetches".to_string()
                };
                let t0 = Instant::now();
                // Only the fetches' cone is copied: the rest of the graph (other fetch sets'
                // nodes, say) is nothing this compile reads. Every value it will compute is
                // checked against the allocation limit first, naming the user's op.
                let graph = {
                    let d = self.graph.data();
                    check_sizes(&d, fetches, batch)?;
                    d.cone(fetches)
                };
                self.last_copied = graph.len();
                let mut p = Program::new(graph, fetches.to_vec());
                let mut pl = Pipeline::default();
                pl.options.batch = batch.or(Some(1));
                pl.options.fixed_feeds = key
                    .switches
                    .iter()
                    .map(|&(id, v)| (id, Array::scalar(v)))
                    .collect();
                pl.run(&mut p)?;
                check_workspace(&p, &self.graph.data(), fetches, batch)?;
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
        Ok(exe)
    }
}
