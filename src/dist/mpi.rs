//! The MPI backend (rsmpi, the `mpi` cargo feature): the only file of kiln that names MPI.
//!
//! Every call is rsmpi's safe API on `MPI_COMM_WORLD`. rsmpi ignores MPI's return codes, so
//! errors go to Open MPI's default handler, `MPI_ERRORS_ARE_FATAL`: the job aborts on every
//! rank with MPI's message (see the module docs of `dist` for why kiln keeps that).

use super::{order, Algorithm};
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

pub(super) use mpi::environment::Universe;

/// `MPI_Init_thread` asking for `MPI_THREAD_SERIALIZED` (kiln's collectives take one lock,
/// so one thread at a time calls MPI, whichever runs a session). Returns size, rank and the
/// universe whose drop finalizes MPI.
pub(super) fn init() -> Result<(usize, usize, Universe)> {
    let Some((universe, level)) = mpi::initialize_with_threading(mpi::Threading::Serialized) else {
        return Err(Error::invalid(
            "dist::init: MPI was already initialized in this process",
        ));
    };
    if level < mpi::Threading::Serialized {
        return Err(Error::invalid(format!(
            "dist::init: the MPI library grants only {level:?} thread support; kiln needs \
             Serialized"
        )));
    }
    let world = universe.world();
    let size = usize::try_from(world.size()).unwrap_or(1);
    let rank = usize::try_from(world.rank()).unwrap_or(0);
    Ok((size, rank, universe))
}

fn world() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

/// An element count as MPI's `int`, or the error saying the message is too large.
fn count(n: usize) -> Result<()> {
    i32::try_from(n).map(|_| ()).map_err(|_| {
        Error::invalid(format!(
            "all_reduce: {n} elements per message pass MPI's int count; split the bucket"
        ))
    })
}

/// See [`super::all_reduce_f32`]: `parts` from this rank, `size` ranks in all.
pub(super) fn all_reduce<T>(
    size: usize,
    algorithm: Algorithm,
    parts: &[&[T]],
    out: &mut [T],
) -> Result<()>
where
    T: Equivalence + Copy + Default + std::ops::Add<Output = T>,
{
    let (k, len) = (parts.len(), out.len());
    match algorithm {
        Algorithm::Ordered => {
            // Piece d of every contribution goes to rank d: send is [dest][part][piece].
            let piece = len.div_ceil(size).max(1);
            count(k * piece * size)?;
            let mut send = vec![T::default(); size * k * piece];
            for d in 0..size {
                let lo = (d * piece).min(len);
                let hi = (lo + piece).min(len);
                for (j, p) in parts.iter().enumerate() {
                    let at = (d * k + j) * piece;
                    send[at..at + (hi - lo)].copy_from_slice(&p[lo..hi]);
                }
            }
            let mut recv = vec![T::default(); size * k * piece];
            world().all_to_all_into(&send[..], &mut recv[..]);
            // recv is [source rank][part][piece]: contributions in global order.
            let contributions: Vec<&[T]> = recv.chunks(piece).collect();
            let mut mine = vec![T::default(); piece];
            order::sum_in_order(&contributions, &mut mine);
            let mut all = vec![T::default(); size * piece];
            world().all_gather_into(&mine[..], &mut all[..]);
            out.copy_from_slice(&all[..len]);
        }
        Algorithm::Allgather => {
            count(size * k * len)?;
            let mut send = Vec::with_capacity(k * len);
            for p in parts {
                send.extend_from_slice(p);
            }
            let mut recv = vec![T::default(); size * k * len];
            world().all_gather_into(&send[..], &mut recv[..]);
            let contributions: Vec<&[T]> = recv.chunks(len.max(1)).collect();
            order::sum_in_order(&contributions, out);
        }
        Algorithm::MpiAllreduce => {
            count(len)?;
            let mut local = vec![T::default(); len];
            order::sum_in_order(parts, &mut local);
            world().all_reduce_into(&local[..], out, SystemOperation::sum());
        }
    }
    Ok(())
}

pub(super) fn broadcast<T: Equivalence>(buf: &mut [T]) -> Result<()> {
    count(buf.len())?;
    world().process_at_rank(0).broadcast_into(buf);
    Ok(())
}

pub(super) fn all_gather_u64(size: usize, value: u64) -> Result<Vec<u64>> {
    let mut all = vec![0u64; size];
    world().all_gather_into(&value, &mut all[..]);
    Ok(all)
}

pub(super) fn barrier() {
    world().barrier();
}
