//! kiln's worker threads: one persistent pool that the JIT splits kernels and matrix
//! products over.
//!
//! The pool is made once (on first use, or again after [`set_threads`] changes the count) and
//! lives for the process, so a run costs a wake-up of sleeping workers, never a thread spawn.
//! It is a [`rayon`] pool because the `gemm` crate parallelizes on rayon: running inside this
//! pool makes `gemm` use these workers rather than rayon's global pool.
//!
//! The thread count is, in order: the last [`set_threads`], else the `KILN_THREADS`
//! environment variable, else the number of cores.
//!
//! # Determinism
//! Results do not depend on the thread count: work is split only where each output element is
//! computed by the same instructions in the same order whichever thread computes it (rows of
//! an elementwise kernel, kept rows of a reduction, output blocks of a matrix product), never
//! by splitting a sum. tests/threads.rs checks this bitwise.
//!
//! ```
//! kiln::threads::set_threads(1); // e.g. for timing one core
//! assert_eq!(kiln::threads::threads(), 1);
//! kiln::threads::set_threads(0); // back to the default
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

static CHOSEN: AtomicUsize = AtomicUsize::new(0);
static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

/// Sets how many threads runs use from now on; 0 restores the default (`KILN_THREADS`, else
/// the number of cores). Runs already under way finish with the count they started with.
pub fn set_threads(n: usize) {
    CHOSEN.store(n, Ordering::Relaxed);
}

/// The number of threads a run started now would use (at least 1).
pub fn threads() -> usize {
    match CHOSEN.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

fn default_threads() -> usize {
    static DEFAULT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("KILN_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// The pool for `n > 1` threads (made on first use, remade if the count changed). None if
/// the pool cannot be built (then work runs on the caller's thread).
///
/// The thread that first builds a pool becomes its worker 0 (`use_current_thread`): a run
/// started on that thread (usually the program's main thread) works inside the pool
/// directly, where a run from any other thread is handed to a worker and waits for it to
/// finish. The hand-off costs two wake-ups per run (the worker's, then the caller's), a few
/// microseconds on a quiet machine and up to a scheduler time slice on a loaded one, where it
/// made two-thread runs of small steps swing by 1.5x between reports. A thread can be worker
/// 0 of only one pool in its life (rayon leaks that pool's registry), so a later pool (after
/// [`set_threads`] changed the count) spawns all its workers. Side effect: rayon work the
/// program itself starts on that thread (a `par_iter`) runs in kiln's pool, not rayon's
/// global one.
pub(crate) fn pool(n: usize) -> Option<Arc<rayon::ThreadPool>> {
    let mut guard = POOL.lock().ok()?;
    if let Some((k, p)) = guard.as_ref() {
        if *k == n {
            return Some(p.clone());
        }
    }
    let builder = || {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("kiln-worker-{i}"))
    };
    let built = builder()
        .use_current_thread()
        .build()
        .or_else(|_| builder().build())
        .ok()?;
    let p = Arc::new(built);
    *guard = Some((n, p.clone()));
    Some(p)
}
