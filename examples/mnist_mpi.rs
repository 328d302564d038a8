//! Data-parallel MNIST on MPI (issue 19): the same weights, bit for bit, on 1, 2 or 4
//! processes. Build with the `mpi` feature and start it with `mpirun`:
//!
//! ```sh
//! cargo build --release --features mpi --example mnist_mpi
//! mpirun -np 2 target/release/examples/mnist_mpi --steps 300 --out w2.safetensors
//! target/release/examples/mnist_mpi --steps 300 --out w1.safetensors   # reference
//! ```
//!
//! Both print the same weight hash: 4 micro-shards per global batch of 128, summed in one
//! order whatever the number of processes (see `kiln::dist`). Options: `--shards S`,
//! `--batch B`, `--checkpoint-every N`, `--resume PATH --from STEP`, and the fault
//! injections `--die-at STEP` and `--odd-graph` the tests use.

mod dist_lab;

use kiln::dist;
use kiln::prelude::*;

fn main() -> Result<()> {
    let world = dist::init()?;
    let opts = dist_lab::parse(std::env::args().skip(1))?;
    let s = dist_lab::run(&opts)?;
    if world.is_root() {
        let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / s.steps.max(1) as f64;
        println!(
            "ranks {} shards {} steps {}: loss {:.4}, {:.2} ms/step, {:.2} ms/step in collectives",
            world.size(),
            opts.shards,
            s.steps,
            s.last_loss,
            per_step(s.train_time),
            per_step(s.comm_time)
        );
        println!("weights {:016x}", s.weights_hash);
    }
    Ok(())
}
