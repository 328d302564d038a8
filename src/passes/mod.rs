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

pub mod concretize;
pub mod cse;
pub mod dce;
pub mod fold;
pub mod fusion;
pub mod memplan;
pub mod simplify;

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
        }
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
}

/// One graph-to-graph transformation.
pub trait Pass: Send + Sync {
    /// A short name, used in dump file names and reports (`fold`, `cse`).
    fn name(&self) -> &str;
    /// Rewrites the program; returns whether anything changed.
    fn run(&self, p: &mut Program, opts: &PassOptions) -> Result<bool>;
}

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
        let mut any = false;
        for _ in 0..self.max_rounds {
            let mut changed = false;
            for pass in &self.passes {
                changed |= pass.run(p, opts)?;
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
}

impl PipelineReport {
    /// Total time in all passes.
    pub fn total_time(&self) -> Duration {
        self.passes.iter().map(|p| p.time).sum()
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
        write!(
            f,
            "{:<16} {:>8.3}ms",
            "total",
            self.total_time().as_secs_f64() * 1e3
        )
    }
}

/// An ordered list of named passes.
///
/// ```
/// use kiln::passes::{Pipeline, cse::Cse};
/// let mut p = Pipeline::default();
/// assert!(p.names().contains(&"cse".to_string()));
/// p.remove("cse");
/// p.insert_after("fold", Box::new(Cse));
/// ```
pub struct Pipeline {
    passes: Vec<Box<dyn Pass>>,
    dump_dir: Option<PathBuf>,
    /// Options handed to every pass.
    pub options: PassOptions,
}

impl Default for Pipeline {
    /// `concretize`, one round each of `fold`, `simplify`, `cse`, `dce`, then those four
    /// again to a fixpoint (`cleanup`), then `fusion` and `memplan`.
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
                        Box::new(cse::Cse),
                        Box::new(dce::Dce),
                    ],
                )),
                Box::new(fusion::Fusion),
                Box::new(memplan::MemPlan),
            ],
            dump_dir: std::env::var_os("KILN_DUMP").map(PathBuf::from),
            options: PassOptions::default(),
        }
    }
}

impl Pipeline {
    /// A pipeline with no passes.
    pub fn empty() -> Pipeline {
        Pipeline {
            passes: vec![],
            dump_dir: None,
            options: PassOptions::default(),
        }
    }

    /// The pass names, in order.
    pub fn names(&self) -> Vec<String> {
        self.passes.iter().map(|p| p.name().to_string()).collect()
    }

    /// Appends a pass.
    pub fn add(&mut self, pass: Box<dyn Pass>) -> &mut Pipeline {
        self.passes.push(pass);
        self
    }

    /// Removes every pass named `name`; returns whether one was found.
    pub fn remove(&mut self, name: &str) -> bool {
        let n = self.passes.len();
        self.passes.retain(|p| p.name() != name);
        self.passes.len() != n
    }

    /// Inserts `pass` after the first pass named `after` (at the end if there is none).
    pub fn insert_after(&mut self, after: &str, pass: Box<dyn Pass>) -> &mut Pipeline {
        let at = self
            .passes
            .iter()
            .position(|p| p.name() == after)
            .map_or(self.passes.len(), |i| i + 1);
        self.passes.insert(at, pass);
        self
    }

    /// Inserts `pass` before the first pass named `before` (at the end if there is none).
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

    /// Runs every pass in order.
    pub fn run(&self, p: &mut Program) -> Result<PipelineReport> {
        p.graph.check()?;
        let mut report = PipelineReport {
            nodes_before: p.live_order().len(),
            passes: vec![],
        };
        if let Some(dir) = &self.dump_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Io(format!("KILN_DUMP: cannot create {}: {e}", dir.display()))
            })?;
            write_dump(dir, 0, "input", p)?;
        }
        for (i, pass) in self.passes.iter().enumerate() {
            let t = Instant::now();
            let changed = pass.run(p, &self.options)?;
            let time = t.elapsed();
            report.passes.push(PassRecord {
                name: pass.name().to_string(),
                time,
                changed,
                nodes_after: p.live_order().len(),
            });
            if let Some(dir) = &self.dump_dir {
                write_dump(dir, i + 1, pass.name(), p)?;
            }
        }
        Ok(report)
    }
}

fn write_dump(dir: &std::path::Path, i: usize, name: &str, p: &Program) -> Result<()> {
    let path = dir.join(format!("{i:02}-{name}.txt"));
    std::fs::write(&path, program_dump(p))
        .map_err(|e| Error::Io(format!("KILN_DUMP: cannot write {}: {e}", path.display())))
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
