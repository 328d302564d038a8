//! `fit` across processes (issue 19, Keras style): `FitConfig::distributed(4)` under
//! `mpirun -np 2` and `-np 4` (oversubscribed) gives bitwise the weights and the `History`
//! of the one-process reference run, and so does a run resumed on another process count.
//!
//! A test binary without libtest's harness, like `tests/dist.rs`: run by `cargo test` it is
//! the driver and starts `mpirun -np N <this binary> --worker …`; under `mpirun` it is a
//! worker, which trains an MNIST MLP **with dropout** (keyed per micro-shard) through
//! `Model::fit`, validation split, `ReduceLROnPlateau`, `EarlyStopping`, a `CSVLogger` and a
//! `ModelCheckpoint`, and prints rank 0's weight hash and history bits. Without the `mpi`
//! feature or `mpirun` it says so and passes (`cargo test --release --features mpi --test
//! dist_fit`).

use kiln::dist;
use kiln::nn::*;
use kiln::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        std::process::exit(i32::from(worker(&args[1..]).is_err()));
    }
    if !cfg!(feature = "mpi") {
        println!(
            "dist_fit: SKIPPED: kiln was built without the `mpi` feature \
             (run `cargo test --release --features mpi --test dist_fit`)"
        );
        return;
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        println!("dist_fit: SKIPPED: no `mpirun` on the path (apt-get install openmpi-bin)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-dist-fit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    type Case = (&'static str, fn(&Path));
    let cases: [Case; 6] = [
        ("fit_is_the_same_on_1_2_and_4_ranks", same_on_1_2_and_4),
        (
            "weights_batch_norm_and_datasets_are_the_same_on_1_2_and_4_ranks",
            features_same,
        ),
        ("a_dataset_that_differs_by_rank_is_refused", dataset_by_rank),
        ("fit_resumed_on_another_rank_count", resumed),
        ("different_fit_settings_are_refused", different_settings),
        ("a_rank_that_exits_stops_the_fit", rank_exits),
    ];
    for (name, case) in cases {
        let t0 = Instant::now();
        case(&dir);
        println!("test {name} ... ok ({:.1} s)", t0.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Worker options: `--mode once|twice|first|resume`, `--epochs E`, `--ckpt PATH` (the
/// session checkpoint `first` writes and `resume` reads), `--dir D` (where the CSV logs and
/// model checkpoints go), `--odd-batch` (the last rank asks for another batch size),
/// `--exit-at-epoch E` (the last rank exits after epoch E).
struct Opts {
    mode: String,
    epochs: usize,
    ckpt: Option<PathBuf>,
    dir: Option<PathBuf>,
    odd_batch: bool,
    exit_at: Option<usize>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        mode: "once".into(),
        epochs: 3,
        ckpt: None,
        dir: None,
        odd_batch: false,
        exit_at: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| Error::invalid(format!("{a} needs a value")))
        };
        let num = |s: String| {
            s.parse::<usize>()
                .map_err(|_| Error::invalid(format!("not a count: {s}")))
        };
        match a.as_str() {
            "--mode" => o.mode = val()?,
            "--epochs" => o.epochs = num(val()?)?,
            "--ckpt" => o.ckpt = Some(PathBuf::from(val()?)),
            "--dir" => o.dir = Some(PathBuf::from(val()?)),
            "--odd-batch" => o.odd_batch = true,
            "--exit-at-epoch" => o.exit_at = Some(num(val()?)?),
            _ => return Err(Error::invalid(format!("unknown argument {a}"))),
        }
    }
    Ok(o)
}

/// Exits the process after epoch `at` on the rank that has it (fault injection).
/// A rank's line on stderr in one write: `eprintln!` writes its pieces separately to the
/// unbuffered stderr, and mpirun interleaved two ranks' lines mid-line (a CI run failed on
/// a split `rank 1 weights` line).
fn say(line: String) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

struct ExitAt(usize);

impl Callback for ExitAt {
    fn on_epoch_end(&mut self, epoch: usize, _: &Logs, _: &mut Model) -> Result<Control> {
        if epoch == self.0 {
            say(format!(
                "rank {}: exiting after epoch {epoch} (fault injection)",
                dist::rank()
            ));
            std::process::exit(3);
        }
        Ok(Control::Continue)
    }
}

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn worker(args: &[String]) -> Result<()> {
    let world = dist::init()?;
    let res = train(&world, args);
    if let Err(e) = &res {
        // Said here, while the world (and this process's rank) is still known.
        say(format!("rank {}: {e}", world.rank()));
    }
    res
}

fn train(world: &dist::World, args: &[String]) -> Result<()> {
    let o = parse(args)?;
    if o.mode == "features" || o.mode == "dataset-by-rank" {
        return features(world, &o.mode);
    }
    let (n, r) = (world.size(), world.rank());
    let mnist =
        kiln::data::load_mnist(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))?;
    // 2,500 rows: 2,000 to train (15 full batches of 128 and one of 80, cut 20/20/20/20
    // into micro-shards), 500 held out for validation.
    let rows: Vec<usize> = (0..2500).collect();
    let x = kiln::data::take_rows(&mnist.train_x, &rows)?;
    let y = kiln::data::take_rows(&mnist.train_y, &rows)?;
    let mut model = Sequential::new([
        Input::new([784]).into(),
        Dense::new(64).relu().into(),
        Dropout::new(0.25).into(),
        Dense::new(10).into(),
    ]);
    model.compile(
        Adam::new(2e-3),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )?;
    let batch = if o.odd_batch && r + 1 == n && n > 1 {
        64
    } else {
        128
    };
    let config = |epochs: usize| {
        let mut c = FitConfig::new()
            .epochs(epochs)
            .batch_size(batch)
            .seed(7)
            .validation_split(0.2)
            .distributed(4)
            .verbosity(Verbosity::Lines)
            .callback(ReduceLROnPlateau::on("loss").factor(0.5).patience(0))
            .callback(EarlyStopping::on("val_loss").patience(3));
        if let Some(d) = &o.dir {
            c = c
                .callback(CSVLogger::new(d.join(format!("log_rank{r}.csv"))))
                .callback(ModelCheckpoint::new(d.join("model.safetensors")));
        }
        if let Some(e) = o.exit_at {
            if r + 1 == n && n > 1 {
                c = c.callback(ExitAt(e));
            }
        }
        c
    };
    if o.mode == "resume" {
        let ck = o.ckpt.as_ref().ok_or_else(|| Error::invalid("--ckpt"))?;
        model.session()?.restore(ck)?;
    }
    let mut history = model.fit(&x, &y, config(o.epochs))?;
    if o.mode == "twice" {
        history = model.fit(&x, &y, config(o.epochs))?;
    }
    if o.mode == "first" && world.is_root() {
        let ck = o.ckpt.as_ref().ok_or_else(|| Error::invalid("--ckpt"))?;
        model.session()?.save(ck)?;
    }
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (_, a) in model.get_weights()? {
        for v in a.to_vec::<f32>()? {
            h = fnv(h, &v.to_bits().to_le_bytes());
        }
    }
    // Every rank reports its own hash: they must all be rank 0's.
    say(format!("rank {r} weights {h:016x}"));
    if world.is_root() {
        println!("weights {h:016x}");
        let mut line = String::new();
        for (k, v) in &history.history {
            let bits: Vec<String> = v.iter().map(|x| format!("{:x}", x.to_bits())).collect();
            line += &format!("{k}={} ", bits.join(","));
        }
        println!("history {line}stopped={:?}", history.stopped_epoch);
        println!(
            "loss {:?} val_accuracy {:?} comm {:.1} ms",
            history.get("loss"),
            history.get("val_accuracy"),
            dist::comm_time().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// A hash of the model's weights (moving statistics included).
fn weights_hash(model: &Model) -> Result<u64> {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (_, a) in model.get_weights()? {
        for v in a.to_vec::<f32>()? {
            h = fnv(h, &v.to_bits().to_le_bytes());
        }
    }
    Ok(h)
}

/// The history's bits, one line.
fn history_bits(h: &History) -> String {
    let mut line = String::new();
    for (k, v) in &h.history {
        let bits: Vec<String> = v.iter().map(|x| format!("{:x}", x.to_bits())).collect();
        line += &format!("{k}={} ", bits.join(","));
    }
    format!("{line}stopped={:?}", h.stopped_epoch)
}

/// The worker of `features_same` (mode `features`): three distributed fits on 1,000 MNIST
/// rows, each reported as `case NAME HASH HISTORY` by rank 0 and `rank R case NAME HASH` by
/// every rank — sample weights from `class_weight` with `weighted_metrics`; a
/// `BatchNormalization` model with dropout; an endless shuffled dataset of weighted
/// `(x, y, w)` batches with `steps_per_epoch` and a validation dataset. Mode
/// `dataset-by-rank` trains on a dataset shuffled by the rank's own seed, which must fail.
fn features(world: &dist::World, mode: &str) -> Result<()> {
    use kiln::data::Dataset;
    let r = world.rank();
    let mnist =
        kiln::data::load_mnist(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))?;
    let rows: Vec<usize> = (0..1000).collect();
    let x = kiln::data::take_rows(&mnist.train_x, &rows)?;
    let y = kiln::data::take_rows(&mnist.train_y, &rows)?;
    let mlp = |bn: bool| -> Result<Model> {
        let mut layers: Vec<Box<dyn Layer>> = vec![Input::new([784]).into(), Dense::new(32).into()];
        if bn {
            layers.push(BatchNormalization::new().momentum(0.9).into());
        }
        layers.push(Dense::new(32).relu().into());
        layers.push(Dropout::new(0.2).into());
        layers.push(Dense::new(10).into());
        let mut m = Sequential::new(layers);
        m.compile(
            Adam::new(2e-3),
            Loss::SparseCategoricalCrossentropy { from_logits: true },
            &[Metric::Accuracy],
        )?;
        Ok(m)
    };
    let config = || {
        FitConfig::new()
            .epochs(3)
            .batch_size(100)
            .seed(11)
            .distributed(4)
            .verbosity(Verbosity::Silent)
    };
    let report = |name: &str, m: &Model, h: &History| -> Result<()> {
        let hash = weights_hash(m)?;
        say(format!("rank {r} case {name} {hash:016x}"));
        if world.is_root() {
            println!("case {name} {hash:016x} {}", history_bits(h));
        }
        Ok(())
    };
    let labels = y.to_vec::<i32>()?;
    let w: Vec<f32> = labels.iter().map(|&c| 0.5 + (c % 3) as f32 * 0.5).collect();
    let w = Array::new([1000], w)?;
    if mode == "dataset-by-rank" {
        let ds = Dataset::from_arrays(x, y)?
            .shuffle(1000, r as u64)
            .batch(100);
        mlp(false)?.fit_dataset(&ds, config())?;
        return Ok(());
    }
    // Class weights, weighted metrics, a validation split (weighted too).
    let mut m = mlp(false)?;
    m.weighted_metrics(&[Metric::Accuracy])?;
    let map: Vec<(usize, f64)> = (0..10).map(|c| (c, 0.5 + (c % 3) as f64 * 0.5)).collect();
    let h = m.fit(&x, &y, config().class_weight(map).validation_split(0.2))?;
    report("class_weight", &m, &h)?;
    // BatchNormalization's moving statistics.
    let mut m = mlp(true)?;
    let h = m.fit(&x, &y, config().validation_split(0.2))?;
    report("batch_norm", &m, &h)?;
    // An endless shuffled dataset of weighted batches, 4 batches an epoch, validated on a
    // dataset.
    let vrows: Vec<usize> = (1000..1300).collect();
    let vx = kiln::data::take_rows(&mnist.train_x, &vrows)?;
    let vy = kiln::data::take_rows(&mnist.train_y, &vrows)?;
    let ds = Dataset::from_slices((x, y, w))?
        .shuffle(1000, 5)
        .batch(100)
        .repeat(usize::MAX);
    let val = Dataset::from_arrays(vx, vy)?.batch(150);
    let mut m = mlp(true)?;
    m.weighted_metrics(&[Metric::Accuracy])?;
    let c = config().steps_per_epoch(4).validation_dataset(&val);
    let h = m.fit_dataset(&ds, c)?;
    report("dataset", &m, &h)?;
    Ok(())
}

fn features_same(_: &Path) {
    let cases = |n: usize| -> Vec<String> {
        let out = mpirun(n, &["--mode", "features"]);
        let (so, se) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "mpirun -np {n} features failed:\n{so}\n{se}"
        );
        let lines: Vec<String> = so
            .lines()
            .filter_map(|l| l.strip_prefix("case "))
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 3, "three cases:\n{so}\n{se}");
        for l in &lines {
            // Every rank ends with rank 0's weights.
            let mut it = l.split(' ');
            let (name, hash) = (it.next().unwrap(), it.next().unwrap());
            let same = se.matches(&format!(" case {name} {hash}")).count();
            assert_eq!(same, n, "{name}: every rank has rank 0's weights:\n{se}");
        }
        lines
    };
    let one = cases(1);
    assert!(one[0].contains("weighted_accuracy=") && one[0].contains("val_weighted_accuracy="));
    assert!(one[2].contains("val_loss="), "{}", one[2]);
    for n in [2, 4] {
        let many = cases(n);
        for (a, b) in many.iter().zip(&one) {
            assert_eq!(a, b, "{n} ranks against the 1-process reference");
        }
        println!("  np {n}: {} cases bitwise equal", many.len());
    }
}

fn dataset_by_rank(_: &Path) {
    let out = mpirun(2, &["--mode", "dataset-by-rank"]);
    let se = text(&out.stderr);
    assert!(!out.status.success(), "a rank-dependent dataset must fail");
    assert!(
        se.contains("rank 1 disagrees with rank 0 on batch 1 of the dataset"),
        "{se}"
    );
}

/// `mpirun -np n` this binary as a worker with `args`; a run over 5 minutes is a hang.
fn mpirun(n: usize, args: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &n.to_string(),
    ])
    .arg(exe)
    .arg("--worker")
    .args(args)
    .env("KILN_THREADS", "1")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    // Waiting ranks yield instead of spinning (see tests/dist.rs).
    .env("OMPI_MCA_mpi_yield_when_idle", "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("mpirun starts");
    let t0 = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("mpirun -np {n} {args:?} did not finish in 5 minutes (a rank hangs)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Rank 0's `weights` and `history` lines, after checking the run succeeded and that every
/// rank ended with rank 0's weights.
fn run(n: usize, args: &[&str]) -> (String, String, String) {
    let out = mpirun(n, args);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "mpirun -np {n} {args:?} failed:\n{so}\n{se}"
    );
    let line = |p: &str| {
        so.lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no {p:?} line in:\n{so}\n{se}"))
            .to_string()
    };
    let w = line("weights ");
    // (mpirun may interleave the ranks' stderr lines, so count, do not split lines.)
    assert_eq!(se.matches(" weights ").count(), n, "one per rank:\n{se}");
    let same = se.matches(&format!(" weights {w}")).count();
    assert_eq!(same, n, "every rank ends with rank 0's weights:\n{se}");
    println!("  np {n}: {}", line("loss "));
    (w, line("history "), so)
}

fn same_on_1_2_and_4(dir: &Path) {
    let d = dir.join("same");
    std::fs::create_dir_all(&d).unwrap();
    let ds = d.to_str().unwrap();
    let (w1, h1, so1) = run(1, &["--dir", ds]);
    assert!(
        h1.contains("learning_rate="),
        "ReduceLROnPlateau logged: {h1}"
    );
    for n in [2, 4] {
        let (w, h, so) = run(n, &["--dir", ds]);
        assert_eq!(w, w1, "{n} ranks: weights against the 1-process reference");
        assert_eq!(h, h1, "{n} ranks: History against the 1-process reference");
        // Only rank 0 printed progress, and only rank 0 wrote its CSV log.
        let epochs = |s: &str| s.lines().filter(|l| l.starts_with("Epoch ")).count();
        assert_eq!(epochs(&so), epochs(&so1), "{so}");
        for r in 1..n {
            assert!(
                !d.join(format!("log_rank{r}.csv")).exists(),
                "rank {r} wrote a log"
            );
        }
    }
    assert!(d.join("log_rank0.csv").exists());
    let c = kiln::checkpoint::read(d.join("model.safetensors")).expect("rank 0's checkpoint");
    assert!(!c.tensors.is_empty());
}

fn resumed(dir: &Path) {
    let ck = dir.join("first.safetensors");
    let cks = ck.to_str().unwrap();
    let (w_ref, h_ref, _) = run(1, &["--mode", "twice", "--epochs", "2"]);
    run(2, &["--mode", "first", "--epochs", "2", "--ckpt", cks]);
    let (w, h, _) = run(4, &["--mode", "resume", "--epochs", "2", "--ckpt", cks]);
    assert_eq!(w, w_ref, "2 ranks for 2 epochs, then 4 ranks for 2 more");
    assert_eq!(h, h_ref, "the resumed fit's History");
}

fn different_settings(_: &Path) {
    let out = mpirun(2, &["--odd-batch", "--epochs", "1"]);
    let se = text(&out.stderr);
    assert!(!out.status.success(), "mismatched settings must fail");
    assert!(
        se.contains("rank 0: ") && se.contains("rank 1: "),
        "every rank reports:\n{se}"
    );
    assert!(
        se.contains("rank 1 disagrees with rank 0 on the fit settings"),
        "{se}"
    );
}

fn rank_exits(dir: &Path) {
    let d = dir.join("exit");
    std::fs::create_dir_all(&d).unwrap();
    let out = mpirun(2, &["--dir", d.to_str().unwrap(), "--exit-at-epoch", "1"]);
    let se = text(&out.stderr);
    assert!(!out.status.success(), "the job must fail when a rank exits");
    assert!(se.contains("exiting after epoch 1"), "{se}");
    // Rank 0 wrote the first epoch's checkpoint before the ranks agreed on that epoch's end
    // (which the exiting rank passed), and any later one atomically: the file reads whole.
    let c = kiln::checkpoint::read(d.join("model.safetensors")).expect("a valid checkpoint");
    assert!(c.tensors.keys().any(|k| k.starts_with("dense")));
}
