//! Peer frameworks (JAX, numpy, PyTorch) timed in the same run as kiln.
//!
//! `benches/peers/mlp_peers.py` runs as one long-lived process per framework and thread
//! count, started on first use with the repository's `.peers-venv` Python (or the one
//! `KILN_PYTHON` names). The report asks it for one sample at a time ("run this case this
//! many times, give me the seconds per call"), so its samples interleave with kiln's
//! (kiln, JAX, numpy, PyTorch, kiln, ...) and load from other tenants of the machine hits
//! all of them alike. Between requests the process waits on its stdin and uses no CPU. A
//! framework that is missing or fails is dropped with a note, and its rows fall back to the
//! published figure, marked as not measured here.

use super::{Report, Target, PUBLISHED};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A peer framework of the MLP and elementwise rows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Fw {
    Jax,
    Numpy,
    Torch,
}

impl Fw {
    fn arg(self) -> &'static str {
        match self {
            Fw::Jax => "jax",
            Fw::Numpy => "numpy",
            Fw::Torch => "torch",
        }
    }

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Fw::Jax => "JAX jit",
            Fw::Numpy => "numpy (OpenBLAS)",
            Fw::Torch => "PyTorch eager",
        }
    }
}

/// The Python the peer scripts use, if there is one: `KILN_PYTHON`, else `.peers-venv` in the
/// repository (see `benches/peers/README.md`).
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers-venv/bin/python");
    p.exists().then_some(p)
}

/// Runs a one-shot peer script (`cmd`) and returns its standard output, a JSON line per
/// result; on failure prints its standard error under `who` and returns `None`.
pub fn json_lines(cmd: &mut std::process::Command, who: &str) -> Option<String> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!("  {who}: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn start(py: &Path, fw: Fw, threads: usize) -> Result<Proc, String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers");
        std::fs::create_dir_all(&dir).map_err(|e| format!("target/peers: {e}"))?;
        let log = dir.join(format!("{}-{threads}.log", fw.arg()));
        let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/mlp_peers.py");
        let mut child = Command::new(py)
            .arg(script)
            .args(["--fw", fw.arg(), "--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", py.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Proc {
            child,
            stdin,
            stdout,
        })
    }

    /// Seconds per call of `calls` runs of `case`.
    fn ask(&mut self, case: &str, calls: u32) -> Result<f64, String> {
        writeln!(self.stdin, "{case} {calls}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the process exited (its stderr is in target/peers/)".into());
        }
        json_number(&line, "s").ok_or_else(|| format!("unexpected answer {}", line.trim()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// The number after `"key": ` in a one-line JSON object (`{"threads": 1, "ms": 5.9}`).
pub fn json_number(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\": ");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

/// The peer processes of one report run.
pub struct Peers {
    py: Option<PathBuf>,
    /// One process per framework and thread count; `Err` once it failed (with why).
    procs: RefCell<HashMap<(Fw, usize), Result<Proc, String>>>,
    /// Why each dropped peer was dropped, once each (the report prints them as notes).
    failures: RefCell<Vec<String>>,
}

impl Peers {
    /// Finds the Python; starts nothing yet.
    pub fn new(enabled: bool) -> Peers {
        Peers {
            py: if enabled { python() } else { None },
            procs: RefCell::new(HashMap::new()),
            failures: RefCell::new(vec![]),
        }
    }

    /// Whether peers can be measured here at all.
    pub fn available(&self) -> bool {
        self.py.is_some()
    }

    /// Seconds per call of `calls` back-to-back runs of `case` on `fw` at `threads`, or None if
    /// the peer is not available or failed (then it stays dropped for this run).
    pub fn sample(&self, fw: Fw, threads: usize, case: &str, calls: u32) -> Option<f64> {
        let py = self.py.as_ref()?;
        let mut procs = self.procs.borrow_mut();
        let mut failures = self.failures.borrow_mut();
        let slot = match procs.entry((fw, threads)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let p = Proc::start(py, fw, threads);
                if let Err(e) = &p {
                    failures.push(format!("{} at {threads} thread(s): {e}", fw.label()));
                }
                v.insert(p)
            }
        };
        let p = slot.as_mut().ok()?;
        match p.ask(case, calls) {
            Ok(s) => Some(s),
            Err(e) => {
                failures.push(format!(
                    "{} at {threads} thread(s), case {case}: {e}; its rows show the published \
                     figure",
                    fw.label()
                ));
                *slot = Err(e);
                None
            }
        }
    }

    /// A timed workload (`harness::Timed`): `case` on `fw` at `threads` (NaN once it failed).
    pub fn timed<'a>(
        &'a self,
        fw: Fw,
        threads: usize,
        case: &'a str,
    ) -> impl FnMut(u32) -> f64 + 'a {
        move |calls| self.sample(fw, threads, case, calls).unwrap_or(f64::NAN)
    }

    /// Why peers were dropped so far (each reason once), emptied.
    pub fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.failures.borrow_mut())
    }
}

/// The peers' figures published on [`PUBLISHED`] (the peer scripts on the machine of that
/// day, not this one): seconds at 1 / 2 threads, shown when a peer is not measured here.
pub fn published(fw: Fw, case: &str) -> Option<[f64; 2]> {
    Some(match (fw, case) {
        (Fw::Jax, "train128") => [1.77e-3, 1.22e-3],
        (Fw::Jax, "train32") => [0.59e-3, 0.48e-3],
        (Fw::Jax, "infer128") => [0.72e-3, 0.50e-3],
        (Fw::Jax, "elementwise") => [66.7e-3, 39.8e-3],
        (Fw::Jax, "compile") => [0.63, 0.41],
        (Fw::Numpy, "train128") => [2.97e-3, 2.28e-3],
        (Fw::Numpy, "train32") => [1.63e-3, 1.44e-3],
        (Fw::Numpy, "infer128") => [0.72e-3, 0.42e-3],
        (Fw::Torch, "train128") => [2.05e-3, 1.41e-3],
        (Fw::Torch, "train32") => [0.93e-3, 0.82e-3],
        (Fw::Torch, "infer128") => [0.74e-3, 0.44e-3],
        _ => return None,
    })
}

/// A row comparing kiln (`kiln` seconds at `threads`) with `fw` on the peer case `peer_case`:
/// `measured` in this run when it is a number (judged against `target`), else the published
/// figure, marked so and judged against nothing (no row if there is none).
#[allow(clippy::too_many_arguments)]
pub fn peer_row(
    report: &mut Report,
    case: &str,
    threads: usize,
    kiln: f64,
    fw: Fw,
    peer_case: &str,
    measured: Option<f64>,
    target: Target,
) {
    match measured.filter(|s| s.is_finite()) {
        Some(s) => {
            let name = format!("{}, this run", fw.label());
            report.row(case, threads, kiln, &name, s, target);
        }
        None => {
            let Some(p) = published(fw, peer_case) else {
                return;
            };
            // Another machine's figure: shown, but no target is judged on it.
            let _ = target;
            let name = format!("{} ({PUBLISHED}, not measured here)", fw.label());
            report.row(case, threads, kiln, &name, p[threads - 1], Target::None);
        }
    }
}
