//! Data-parallel training across processes (issue 19): the distributed world, its
//! collectives, and the one reduction order that makes N processes compute the same bits as
//! one.
//!
//! **Why a fixed order.** A gradient is a sum, and f32 addition is not associative. MPI
//! lets `MPI_Allreduce` regroup operands by algorithm and process count (Open MPI 4.1 sums
//! 4 ranks as a tree, `(x0+x1)+(x2+x3)`; 22% of a 1 MB gradient's elements then differ
//! from the left-to-right sum), so a plain all-reduce can agree with a one-process run only
//! by luck. kiln defines the result instead: [`Graph::all_reduce`](crate::graph::Graph::all_reduce)
//! sums every *contribution* of every rank — rank 0's operands first to last, then rank 1's,
//! … — folded left to right, `((c0 + c1) + c2) + …`. Contributions are micro-shards of the
//! global batch, so the order depends on their number S, not on how many processes hold
//! them: 4 ranks × 1, 2 ranks × 2 and 1 process × 4 (kiln's *reference mode*) add the same
//! numbers in the same order, and train to the same weights, bit for bit.
//!
//! **How** ([`Algorithm::Ordered`], the default): an ordered reduce-scatter by hand, then an
//! all-gather. Each contribution is cut into N pieces; `MPI_Alltoall` sends piece `d` of
//! every contribution to rank `d`, which sums the pieces it received in global order and
//! `MPI_Allgather` hands every rank every summed piece. Each element is summed once, by one
//! rank, in the fixed order, so every rank gets the same bits, and the traffic is a ring
//! all-reduce's, `2(N−1)/N` × the bytes. [`Algorithm::Allgather`] (gather everything, sum
//! locally) gives the same bits with `N−1` × the bytes; [`Algorithm::MpiAllreduce`] is MPI's
//! own sum of each rank's local sum, stable for a fixed N but not equal to the reference.
//!
//! **Who knows MPI.** Only this module (and only with the `mpi` cargo feature, in
//! `mpi.rs`). Without the feature, or before [`init`], the world is one process: rank 0 of
//! 1, where a collective is the ordered local sum (so a program written for N processes
//! runs, as its own reference, on one). The interpreter and the JIT call
//! [`all_reduce_f32`]/[`all_reduce_f64`] from their `all_reduce` step; nothing else
//! communicates during a run.
//!
//! **Faults.** rsmpi ignores MPI's return codes and Open MPI's default error handler,
//! `MPI_ERRORS_ARE_FATAL`, aborts the whole job on any error, so kiln keeps it: an MPI error
//! on one rank stops every rank (there is no half-finished collective to recover from).
//! A rank that exits or is killed makes `mpirun` kill the others and exit non-zero
//! ("…exited on signal 9", or "…exited without calling finalize"); ranks blocked in a
//! collective with it do not hang. What kiln checks itself, with clear errors, before any
//! collective could go wrong: that every rank runs the same graph ([`check_same_graph`])
//! and that a process started by `mpirun` called [`init`].

#[cfg(feature = "mpi")]
mod mpi;
mod order;
mod sync;

pub use sync::{broadcast_variables, check_same_graph, graph_fingerprint, start};

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How [`all_reduce_f32`] combines the ranks' contributions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ordered reduce-scatter (`MPI_Alltoall`, a sum in global order) then `MPI_Allgather`:
    /// ring traffic, bitwise equal to the one-process reference. The default.
    #[default]
    Ordered,
    /// `MPI_Allgather` of every contribution, then the ordered sum on every rank: the same
    /// bits as `Ordered`, `N/2` × its traffic (each rank receives every contribution).
    Allgather,
    /// Each rank sums its own contributions, then `MPI_Allreduce`: MPI picks the grouping
    /// (by N and message size), so the bits are stable for a fixed N but differ from the
    /// reference (and between N). Only for measuring what determinism costs.
    MpiAllreduce,
}

/// The world as the collectives see it: set by [`init`], cleared when its [`World`] drops.
struct State {
    size: usize,
    rank: usize,
    algorithm: Algorithm,
}

/// MPI is initialized for serialized use (`MPI_THREAD_SERIALIZED`): this lock makes every
/// collective of the process one at a time, whichever thread runs a session.
static STATE: Mutex<Option<State>> = Mutex::new(None);

/// The distributed world of this process, from [`init`]: hold it for as long as you
/// communicate (its drop finalizes MPI).
pub struct World {
    size: usize,
    rank: usize,
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::Universe>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "World {{ rank: {}, size: {} }}", self.rank, self.size)
    }
}

impl World {
    /// The number of processes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// This process's rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// True on rank 0, the one that prints and writes checkpoints.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }
    /// Chooses how `all_reduce` combines contributions from now on (see [`Algorithm`]).
    pub fn set_algorithm(&self, algorithm: Algorithm) {
        if let Some(s) = lock().as_mut() {
            s.algorithm = algorithm;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        *lock() = None;
        // The universe (if any) drops after this: MPI_Finalize.
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<State>> {
    // A panic while holding the lock leaves a state that is still consistent (it is only
    // written whole), so a poisoned lock is taken as is.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Joins the distributed world: MPI when kiln is built with the `mpi` feature (call it once,
/// at the start of `main`, on every rank), otherwise the one-process world. Errors if called
/// twice while a [`World`] is alive.
pub fn init() -> Result<World> {
    let mut st = lock();
    if st.is_some() {
        return Err(Error::invalid(
            "dist::init: the world is already initialized",
        ));
    }
    #[cfg(feature = "mpi")]
    let (size, rank, universe) = mpi::init()?;
    #[cfg(not(feature = "mpi"))]
    let (size, rank) = (1usize, 0usize);
    *st = Some(State {
        size,
        rank,
        algorithm: Algorithm::default(),
    });
    Ok(World {
        size,
        rank,
        #[cfg(feature = "mpi")]
        _universe: Some(universe),
    })
}

/// The number of processes (1 before [`init`] or without the `mpi` feature).
pub fn world_size() -> usize {
    lock().as_ref().map_or(1, |s| s.size)
}

/// This process's rank (0 before [`init`] or without the `mpi` feature).
pub fn rank() -> usize {
    lock().as_ref().map_or(0, |s| s.rank)
}

/// The process count `mpirun` announced in the environment, if it started this process.
fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// The error for a collective in a process that `mpirun` started with others but that has
/// not joined the world: it would otherwise sum only its own part, silently.
fn check_joined() -> Result<()> {
    match launched_size() {
        Some(n) if n > 1 => Err(Error::invalid(format!(
            "all_reduce: this process is one of {n} started by mpirun, but kiln::dist::init() \
             was not called{}",
            if cfg!(feature = "mpi") {
                ""
            } else {
                " (and kiln was built without the `mpi` feature)"
            }
        ))),
        _ => Ok(()),
    }
}

macro_rules! all_reduce_fn {
    ($name:ident, $t:ty) => {
        /// The sum of `parts` over every rank, in global order (rank 0's parts first to last,
        /// then rank 1's, …, folded left to right), written to `out` on every rank. Every
        /// part has `out`'s length; every rank must pass the same number of parts of the same
        /// length (kiln's graphs do: [`check_same_graph`]).
        pub fn $name(parts: &[&[$t]], out: &mut [$t]) -> Result<()> {
            if parts.is_empty() || parts.iter().any(|p| p.len() != out.len()) {
                return Err(Error::invalid(
                    "all_reduce: every part needs the output's length, and one part at least",
                ));
            }
            let st = lock();
            match st.as_ref() {
                None | Some(State { size: 1, .. }) => {
                    check_joined()?;
                    order::sum_in_order(parts, out);
                    Ok(())
                }
                #[cfg(feature = "mpi")]
                Some(s) => timed(|| mpi::all_reduce(s.size, s.algorithm, parts, out)),
                #[cfg(not(feature = "mpi"))]
                Some(_) => Err(Error::Internal(
                    "a world of several ranks without MPI".into(),
                )),
            }
        }
    };
}

all_reduce_fn!(all_reduce_f32, f32);
all_reduce_fn!(all_reduce_f64, f64);

macro_rules! broadcast_fn {
    ($name:ident, $t:ty) => {
        /// Overwrites `buf` on every rank with rank 0's `buf` (lengths must agree).
        pub fn $name(buf: &mut [$t]) -> Result<()> {
            let st = lock();
            match st.as_ref() {
                None | Some(State { size: 1, .. }) => Ok(()),
                #[cfg(feature = "mpi")]
                Some(_) => timed(|| mpi::broadcast(buf)),
                #[cfg(not(feature = "mpi"))]
                Some(_) => {
                    let _ = buf;
                    Err(Error::Internal(
                        "a world of several ranks without MPI".into(),
                    ))
                }
            }
        }
    };
}

broadcast_fn!(broadcast_f32, f32);
broadcast_fn!(broadcast_f64, f64);
broadcast_fn!(broadcast_i32, i32);
broadcast_fn!(broadcast_i64, i64);

/// Nanoseconds this process spent inside collectives since it started.
static COMM_NANOS: AtomicU64 = AtomicU64::new(0);

/// The time this process has spent inside collectives (`all_reduce`, broadcasts, gathers)
/// since it started: waiting for slower ranks included, so on a balanced run it is the
/// communication cost per step times the steps.
pub fn comm_time() -> Duration {
    Duration::from_nanos(COMM_NANOS.load(Ordering::Relaxed))
}

#[cfg(feature = "mpi")]
fn timed<T>(f: impl FnOnce() -> T) -> T {
    let t0 = std::time::Instant::now();
    let r = f();
    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    COMM_NANOS.fetch_add(ns, Ordering::Relaxed);
    r
}

/// Every rank's `value`, in rank order, on every rank.
pub fn all_gather_u64(value: u64) -> Result<Vec<u64>> {
    let st = lock();
    match st.as_ref() {
        None | Some(State { size: 1, .. }) => Ok(vec![value]),
        #[cfg(feature = "mpi")]
        Some(s) => timed(|| mpi::all_gather_u64(s.size, value)),
        #[cfg(not(feature = "mpi"))]
        Some(_) => Err(Error::Internal(
            "a world of several ranks without MPI".into(),
        )),
    }
}

/// Waits until every rank reaches this call.
pub fn barrier() -> Result<()> {
    let st = lock();
    match st.as_ref() {
        None | Some(State { size: 1, .. }) => Ok(()),
        #[cfg(feature = "mpi")]
        Some(_) => {
            timed(mpi::barrier);
            Ok(())
        }
        #[cfg(not(feature = "mpi"))]
        Some(_) => Err(Error::Internal(
            "a world of several ranks without MPI".into(),
        )),
    }
}
