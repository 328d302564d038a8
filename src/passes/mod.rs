//! The optimizer: a pipeline of named graph-to-graph passes.
//!
//! A pass rewrites a [`Program`] (a graph plus the nodes it must compute) and says whether it
//! changed anything. A [`Pipeline`] runs passes in order, times each one, and can write the
//! graph before the pipeline and after every pass as numbered text files (`00-input.txt`,
//! `01-fold.txt`, ...) in the canonical dump format, so two stages compare with `diff`:
//! set `KILN_DUMP=dir`, or call [`Pipeline::dump_to`]. [`Fixpoint`] reruns a group of passes
//! until none of them changes the graph.
//!
//! Every built-in pass preserves the interpreter's results bit for bit; rewrites that do not
//! (reassociation, `exp(log x) -> x`) are documented in [`simplify`] and are off unless
//! [`PassOptions::relaxed`] is set. Each pass is tested by running the interpreter on the
//! graph before and after it with the same random inputs.
//!
//! Users embed their own passes by implementing [`Pass`] and adding, removing or reordering
//! entries of a pipeline by name.
//!
//! Two things every pipeline does whatever its passes, so that no choice of passes changes
//! what a graph means or lets a broken pass through:
//! - **Effect lowering comes first.** [`lower_effects`] (assign → its value, group → `true`)
//!   is not an entry of the editable list ([`Pipeline::names`]): it cannot be removed or
//!   reordered, and runs before the first entry, in [`Pipeline::empty`] too. It shows up in
//!   reports as the first pass and in dumps as `00-lower_effects.txt`, next to `00-input.txt`
//!   (stage 0, before the editable passes, whose files keep their numbers `01`, `02`, ...).
//! - **The verifier runs after every pass** ([`verify`]), after each member of a [`Fixpoint`]
//!   too; a broken invariant is [`Error::Internal`] naming the pass.

pub mod concretize;
pub mod cse;
pub mod dce;
pub mod fold;
pub mod fusion;
pub mod layout;
pub mod lower_effects;
pub mod memplan;
pub mod simplify;
pub mod verify;

use crate::error::{Error, Result};
use crate::graph::{GraphData, NodeId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A graph and the nodes that must be computed from it (fetches and targets).
///
/// `outputs` is kept up to date by [`Program::replace`], so a pass that replaces a fetched
/// node does not lose the fetch.
#[derive(Clone, Debug)]
pub struct Program {
    /// The graph being optimized.
    pub graph: GraphData,
    /// The nodes to compute, in the caller's order.
    pub outputs: Vec<NodeId>,
    /// Remarks attached to nodes by passes (why fusion refused a producer); the dump prints
    /// them as comments on the node's line.
    pub notes: BTreeMap<NodeId, Vec<Note>>,
    /// The buffer assignment, once [`memplan`] has run: read it with [`Program::memory`]
    /// (native code trusts it, so only the crate writes it).
    pub(crate) memory: Option<memplan::MemoryPlan>,
    /// The kernels the graph's fused nodes name (`Op::Fusion(id)`), appended by [`fusion`]:
    /// the lowered program's backend IR, kept out of the graph. Read it with
    /// [`Program::kernels`] (native code is compiled from it, so only the crate writes it).
    pub(crate) kernels: crate::kernel::Kernels,
    /// For each fused node, copies of the user's nodes inside its kernel that can fail at
    /// run time (integer divisions), recorded by [`fusion`]: the JIT's runtime errors name
    /// them (`graph/fallible.rs`).
    pub(crate) fallible: BTreeMap<NodeId, Vec<crate::graph::Node>>,
}

/// A pass's remark about a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The other node the remark is about (the kernel that did not absorb this one).
    pub consumer: Option<NodeId>,
    /// The remark.
    pub text: String,
}

impl Program {
    /// A program computing `outputs` of `graph`.
    pub fn new(graph: GraphData, outputs: Vec<NodeId>) -> Program {
        Program {
            graph,
            outputs,
            notes: BTreeMap::new(),
            memory: None,
            kernels: crate::kernel::Kernels::new(),
            fallible: BTreeMap::new(),
        }
    }

    /// The kernels of the program's fused nodes (empty before [`fusion`]).
    pub fn kernels(&self) -> &crate::kernel::Kernels {
        &self.kernels
    }

    /// Redirects every use of `old`, including outputs, to `new`.
    pub fn replace(&mut self, old: NodeId, new: NodeId) {
        self.graph.replace_all_uses(old, new);
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// The buffer assignment, once [`memplan`] has run. Native code writes into its slots
    /// unchecked, so only the crate sets it:
    ///
    /// ```compile_fail,E0616
    /// fn forge(p: &mut kiln::passes::Program) {
    ///     p.memory = None;
    /// }
    /// ```
    pub fn memory(&self) -> Option<&memplan::MemoryPlan> {
        self.memory.as_ref()
    }

    /// The nodes the outputs depend on, in deterministic topological order.
    pub fn live_order(&self) -> Vec<NodeId> {
        self.graph.topo_order_from(&self.outputs)
    }
}

/// Options that change what passes may do.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    /// Allow rewrites that change results in the last bits (documented in [`simplify`]).
    pub relaxed: bool,
    /// The batch size that makes `?` concrete, if known ([`concretize`] needs it).
    pub batch: Option<usize>,
    /// Placeholders whose value this compile may assume, with that value: [`concretize`]
    /// turns each into a constant, so [`fold`] and [`simplify`] specialize the program on
    /// it (a session does this for the `bool` scalars it is fed, such as a model's
    /// `training` switch; see [`crate::session::Session::specialize_bool_feeds`]). The program then
    /// computes what the graph computes *for these values only*.
    pub fixed_feeds: Vec<(NodeId, crate::Array)>,
}

/// One graph-to-graph transformation.
pub trait Pass: Send + Sync {
    /// A short name, used in dump file names and reports (`fold`, `cse`).
    fn name(&self) -> &str;
    /// Rewrites the program; returns whether anything changed.
    fn run(&self, p: &mut Program, opts: &PassOptions) -> Result<bool>;
    /// [`Pass::run`], calling `after` after each step with the step's name, whether it
    /// changed the program, and the program: the pipeline drops a memory plan made stale
    /// there and runs the verifier. The default is one step, under [`Pass::name`]; a group
    /// of passes calls it after each member, so that a broken member is named
    /// (`cleanup/simplify`).
    fn run_checked(
        &self,
        p: &mut Program,
        opts: &PassOptions,
        after: &mut AfterStep<'_>,
    ) -> Result<bool> {
        let changed = self.run(p, opts)?;
        after(self.name(), changed, p)?;
        Ok(changed)
    }
}

/// What a pipeline does after each step of a pass (see [`Pass::run_checked`]).
pub type AfterStep<'a> = dyn FnMut(&str, bool, &mut Program) -> Result<()> + 'a;

/// Runs a group of passes again and again until none changes the program (or `max_rounds`).
pub struct Fixpoint {
    name: String,
    passes: Vec<Box<dyn Pass>>,
    max_rounds: usize,
}

impl Fixpoint {
    /// A fixpoint group named `name`.
    pub fn new(name: &str, passes: Vec<Box<dyn Pass>>) -> Fixpoint {
        Fixpoint {
            name: name.to_string(),
            passes,
            max_rounds: 16,
        }
    }

    /// Caps the number of rounds.
    pub fn max_rounds(mut self, n: usize) -> Fixpoint {
        self.max_rounds = n;
        self
    }
}

impl Pass for Fixpoint {
    fn name(&self) -> &str {
        &self.name
    }
    fn run(&self, p: &mut Program, opts: &PassOptions) -> Result<bool> {
        self.run_checked(p, opts, &mut |_, _, _| Ok(()))
    }
    fn run_checked(
        &self,
        p: &mut Program,
        opts: &PassOptions,
        after: &mut AfterStep<'_>,
    ) -> Result<bool> {
        let mut any = false;
        for _ in 0..self.max_rounds {
            let mut changed = false;
            for pass in &self.passes {
                changed |= pass.run_checked(p, opts, &mut |name, c, p| {
                    after(&format!("{}/{name}", self.name), c, p)
                })?;
            }
            any |= changed;
            if !changed {
                break;
            }
        }
        Ok(any)
    }
}

/// How long one pass took and what it did.
#[derive(Clone, Debug)]
pub struct PassRecord {
    /// The pass's name.
    pub name: String,
    /// Wall time spent in the pass.
    pub time: Duration,
    /// Whether it changed the program.
    pub changed: bool,
    /// Live nodes after the pass.
    pub nodes_after: usize,
}

/// What a pipeline run did, pass by pass.
#[derive(Clone, Debug, Default)]
pub struct PipelineReport {
    /// Live nodes before the first pass.
    pub nodes_before: usize,
    /// One record per pass, in order.
    pub passes: Vec<PassRecord>,
    /// Wall time spent in the verifier after the passes (not counted in their times).
    pub verify_time: Duration,
}

impl PipelineReport {
    /// Total time in all passes and the verifier.
    pub fn total_time(&self) -> Duration {
        self.passes.iter().map(|p| p.time).sum::<Duration>() + self.verify_time
    }
}

impl std::fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<16} {:>10} {:>8} {:>8}",
            "pass", "time", "changed", "nodes"
        )?;
        writeln!(
            f,
            "{:<16} {:>10} {:>8} {:>8}",
            "(input)", "", "", self.nodes_before
        )?;
        for p in &self.passes {
            writeln!(
                f,
                "{:<16} {:>8.3}ms {:>8} {:>8}",
                p.name,
                p.time.as_secs_f64() * 1e3,
                if p.changed { "yes" } else { "no" },
                p.nodes_after
            )?;
        }
        writeln!(
            f,
            "{:<16} {:>8.3}ms",
            "(verifier)",
            self.verify_time.as_secs_f64() * 1e3
        )?;
        write!(
            f,
            "{:<16} {:>8.3}ms",
            "total",
            self.total_time().as_secs_f64() * 1e3
        )
    }
}

/// An ordered list of named passes, after the mandatory effect lowering and each followed by
/// the verifier (see the module docs).
///
/// ```
/// use kiln::passes::{Pipeline, cse::Cse};
/// let mut p = Pipeline::default();
/// assert!(p.names().contains(&"cse".to_string()));
/// assert!(!p.remove("lower_effects")); // mandatory: not in the editable list
/// p.remove("cse");
/// p.insert_after("fold", Box::new(Cse));
/// ```
pub struct Pipeline {
    passes: Vec<Box<dyn Pass>>,
    dump_dir: Option<PathBuf>,
    verify: bool,
    /// Options handed to every pass.
    pub options: PassOptions,
}

/// Whether pipelines verify by default: yes, unless `KILN_VERIFY=0` (see [`verify`]).
fn verify_default() -> bool {
    std::env::var_os("KILN_VERIFY").is_none_or(|v| v != "0")
}

impl Default for Pipeline {
    /// `concretize`, one round each of `fold`, `simplify`, `cse`, `dce`, then those four
    /// and [`layout`] (after `simplify`) again to a fixpoint (`cleanup`), then `fusion` and
    /// `memplan`.
    fn default() -> Pipeline {
        Pipeline {
            passes: vec![
                Box::new(concretize::Concretize),
                Box::new(fold::Fold),
                Box::new(simplify::Simplify),
                Box::new(cse::Cse),
                Box::new(dce::Dce),
                Box::new(Fixpoint::new(
                    "cleanup",
                    vec![
                        Box::new(fold::Fold),
                        Box::new(simplify::Simplify),
                        Box::new(layout::Layout),
                        Box::new(cse::Cse),
                        Box::new(dce::Dce),
                    ],
                )),
                Box::new(fusion::Fusion),
                Box::new(memplan::MemPlan),
            ],
            dump_dir: std::env::var_os("KILN_DUMP").map(PathBuf::from),
            verify: verify_default(),
            options: PassOptions::default(),
        }
    }
}

impl Pipeline {
    /// A pipeline with no editable passes (it still lowers effects and verifies).
    pub fn empty() -> Pipeline {
        Pipeline {
            passes: vec![],
            dump_dir: None,
            verify: verify_default(),
            options: PassOptions::default(),
        }
    }

    /// Turns the verifier after each pass on or off (on by default, off with
    /// `KILN_VERIFY=0`).
    pub fn verify(&mut self, on: bool) -> &mut Pipeline {
        self.verify = on;
        self
    }

    /// The editable pass names, in order (the mandatory [`lower_effects`] runs before them
    /// and is not listed).
    pub fn names(&self) -> Vec<String> {
        self.passes.iter().map(|p| p.name().to_string()).collect()
    }

    /// Appends a pass.
    pub fn add(&mut self, pass: Box<dyn Pass>) -> &mut Pipeline {
        self.passes.push(pass);
        self
    }

    /// Removes every pass named `name`; returns whether one was found (never for the
    /// mandatory `lower_effects`, which is not in the list).
    pub fn remove(&mut self, name: &str) -> bool {
        let n = self.passes.len();
        self.passes.retain(|p| p.name() != name);
        self.passes.len() != n
    }

    /// Inserts `pass` after the first pass named `after` (at the end if there is none; first
    /// for `lower_effects`, which always runs before the list).
    pub fn insert_after(&mut self, after: &str, pass: Box<dyn Pass>) -> &mut Pipeline {
        let at = if after == lower_effects::NAME {
            0
        } else {
            self.passes
                .iter()
                .position(|p| p.name() == after)
                .map_or(self.passes.len(), |i| i + 1)
        };
        self.passes.insert(at, pass);
        self
    }

    /// Inserts `pass` before the first pass named `before` (at the end if there is none).
    /// Nothing runs before `lower_effects`: naming it inserts at the end, as for any name
    /// that is not in the list.
    pub fn insert_before(&mut self, before: &str, pass: Box<dyn Pass>) -> &mut Pipeline {
        let at = self
            .passes
            .iter()
            .position(|p| p.name() == before)
            .unwrap_or(self.passes.len());
        self.passes.insert(at, pass);
        self
    }

    /// Writes the program before the pipeline and after each pass into `dir`.
    pub fn dump_to(&mut self, dir: impl Into<PathBuf>) -> &mut Pipeline {
        self.dump_dir = Some(dir.into());
        self
    }

    /// Runs effect lowering, then every pass in order, verifying after each (if on).
    ///
    /// A pass (or group member) that changes the program after a memory plan was made, and
    /// does not plan again itself, discards the plan (it would describe another program);
    /// the backend then plans again.
    pub fn run(&self, p: &mut Program) -> Result<PipelineReport> {
        p.graph.check()?;
        let mut report = PipelineReport {
            nodes_before: p.live_order().len(),
            ..PipelineReport::default()
        };
        if let Some(dir) = &self.dump_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(dir, "KILN_DUMP: cannot create the dump directory", e))?;
            write_dump(dir, 0, "input", p)?;
        }
        let mut verifier = verify::Verifier::new();
        let batch = self.options.batch;
        let verify_time = std::cell::Cell::new(Duration::ZERO);
        let mut last_plan = p.memory.clone();
        let mut after = |name: &str, changed: bool, p: &mut Program| {
            // A step that changed the program but not the plan made before it leaves a plan
            // of another program: drop it (the backend plans again).
            if changed && p.memory.is_some() && p.memory == last_plan {
                p.memory = None;
            }
            last_plan.clone_from(&p.memory);
            if !self.verify {
                return Ok(());
            }
            let t = Instant::now();
            let r = verifier.check(p, name, batch);
            verify_time.set(verify_time.get() + t.elapsed());
            r
        };
        let lowering: &dyn Pass = &lower_effects::LowerEffects;
        let all = std::iter::once((0, lowering)).chain(
            self.passes
                .iter()
                .enumerate()
                .map(|(i, b)| (i + 1, b.as_ref())),
        );
        for (i, pass) in all {
            let t = Instant::now();
            let changed = pass.run_checked(p, &self.options, &mut after)?;
            // The verifier's share of this step is reported apart.
            let time = t
                .elapsed()
                .saturating_sub(verify_time.get() - report.verify_time);
            report.verify_time = verify_time.get();
            report.passes.push(PassRecord {
                name: pass.name().to_string(),
                time,
                changed,
                nodes_after: p.live_order().len(),
            });
            if let Some(dir) = &self.dump_dir {
                write_dump(dir, i, pass.name(), p)?;
            }
        }
        Ok(report)
    }
}

fn write_dump(dir: &std::path::Path, i: usize, name: &str, p: &Program) -> Result<()> {
    let path = dir.join(format!("{i:02}-{name}.txt"));
    std::fs::write(&path, program_dump(p))
        .map_err(|e| Error::io(&path, "KILN_DUMP: cannot write the dump", e))
}

/// The canonical dump of the live part of a program: its nodes, a `return` line with its
/// outputs, and the passes' notes as comments above the nodes they concern (with source
/// locations, so a kernel can be traced back to the user's line); after [`memplan`], the
/// buffer assignment as comments too (see [`memplan`]'s docs).
pub fn program_dump(p: &Program) -> String {
    program_dumper(p).locations(true).to_string()
}

/// The dumper [`program_dump`] uses, without locations (stable text for snapshots).
pub fn program_dumper(p: &Program) -> crate::text::Dumper<'_> {
    let mut d = crate::text::Dumper::new(&p.graph)
        .kernels(&p.kernels)
        .outputs(&p.outputs)
        .only_live(true);
    let (_, num) = d.numbering();
    for (&id, notes) in &p.notes {
        if !num.contains_key(&id) {
            continue;
        }
        for n in notes {
            let text = match n.consumer.and_then(|c| num.get(&c)) {
                Some(c) => format!("not fused into %{c}: {}", n.text),
                None => n.text.clone(),
            };
            d = d.comment(id, text);
        }
    }
    for (id, text) in p.memory.iter().flat_map(|m| m.annotations(p, &num)) {
        d = d.comment(id, text);
    }
    d
}
