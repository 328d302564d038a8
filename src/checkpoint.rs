//! Checkpoints: variables (weights and optimizer state) in the safetensors format.
//!
//! The format is [safetensors](https://github.com/huggingface/safetensors), so Python's
//! `safetensors` and PyTorch read kiln checkpoints as they are: one tensor per variable,
//! named as the variable. kiln adds three metadata entries, which other readers ignore:
//! `format = "kiln"`, `kiln.runs` (the session's run counter, so random streams such as
//! dropout masks continue exactly where they left off) and `kiln.checksum` (FNV-1a over the
//! metadata and the tensors' names, types and bytes, so a flipped byte anywhere is caught,
//! not only one that breaks the header's syntax).
//!
//! Two promises, and how they are kept:
//! - **A crash never destroys the previous checkpoint.** [`write()`] writes a temporary file
//!   in the same directory, fsyncs it, renames it over the target (atomic on POSIX), then
//!   fsyncs the directory (`src/atomic.rs`, shared by every file kiln writes).
//! - **A bad file changes nothing.** [`read()`] checks the whole file (header, offsets, sizes,
//!   checksum) before returning, and [`Session::restore`] checks every variable's name,
//!   dtype and shape against the file before it sets any of them.
//!
//! Every safetensors dtype reads (`decode.rs`: the nine kiln holds as themselves, the rest
//! widened exactly), so a PyTorch file with an `i64` counter or `f16` weights loads.
//!
//! A file with no kiln metadata at all (written by Python's `safetensors`, or a kiln file
//! whose metadata was stripped) cannot be told apart from a foreign file: it is accepted
//! without a checksum, and no run counter is restored. [`Session::restore`] says so in its
//! result ([`Restored`]), so a caller that needs the guarantee can refuse it.
//!
//! ```
//! use kiln::prelude::*;
//! let g = Graph::new();
//! let w = g.variable("w", [2], init::constant(3.0));
//! let mut sess = Session::new(&g)?;
//! let path = std::env::temp_dir().join(format!("kiln-doc-{}.safetensors", std::process::id()));
//! sess.save(&path)?;
//! sess.set_variable(w, Array::new([2], vec![0.0f32, 0.0])?)?;
//! let restored = sess.restore(&path)?;
//! assert!(restored.checksum_verified && restored.run_counter_restored);
//! assert_eq!(sess.variable(w).unwrap().to_vec::<f32>()?, vec![3.0, 3.0]);
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), kiln::Error>(())
//! ```

mod decode;

use crate::array::Array;
use crate::error::{Error, Result};
use crate::session::Session;
use decode::{from_view, st_dtype, to_bytes};
use safetensors::tensor::{SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The contents of a checkpoint file: named tensors and string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Array>,
    /// Metadata (`__metadata__` in the file).
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Whether [`read()`] verified this checkpoint's kiln checksum. `false` for a file with no
    /// kiln metadata (a foreign file, or a kiln file whose metadata was stripped): nothing
    /// beyond the safetensors structure was checked.
    pub fn checksum_verified(&self) -> bool {
        self.metadata.contains_key("kiln.checksum")
    }
}

/// What [`Session::restore`] could vouch for. Every variable was set in either case; the
/// fields say what a file without kiln's metadata could not give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The file carried kiln's checksum and it matched. `false`: a foreign file (or one whose
    /// metadata was stripped), taken as it is.
    pub checksum_verified: bool,
    /// The session's run counter was restored from `kiln.runs`, so random streams (dropout
    /// masks) continue exactly. `false`: the counter kept its value, so a resumed run's
    /// random streams differ from the uninterrupted run's.
    pub run_counter_restored: bool,
}

impl Restored {
    /// A one-line warning for a caller to show, or `None` when the file was kiln's own.
    pub fn warning(&self) -> Option<String> {
        match (self.checksum_verified, self.run_counter_restored) {
            (true, true) => None,
            (c, r) => {
                let mut parts = vec![];
                if !c {
                    parts.push("the file carries no kiln checksum (a foreign file, or its metadata was stripped), so only its structure was checked");
                }
                if !r {
                    parts.push("no run counter was restored, so random streams (dropout) do not continue where the saved run left off");
                }
                Some(parts.join("; "))
            }
        }
    }
}

/// The checkpoint at `path` cannot be used: `what`, `detail`.
fn bad(path: &Path, what: &str, detail: impl std::fmt::Display) -> Error {
    Error::invalid_file(path, format!("{what}: {detail}"))
}

/// FNV-1a (64-bit) over the metadata (but the checksum itself) and the tensors' names,
/// dtypes, shapes and bytes, in name order.
fn checksum(tensors: &BTreeMap<String, Array>, meta: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (k, v) in meta {
        if k != "kiln.checksum" {
            eat(k.as_bytes());
            eat(&[0]);
            eat(v.as_bytes());
            eat(&[0]);
        }
    }
    for (name, a) in tensors {
        eat(name.as_bytes());
        eat(&[0]);
        eat(format!("{}{:?}", a.dtype(), a.shape()).as_bytes());
        eat(&to_bytes(a));
    }
    format!("{h:016x}")
}

/// Writes `ckpt` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write(path: impl AsRef<Path>, ckpt: &Checkpoint) -> Result<()> {
    let path = path.as_ref();
    let bytes: Vec<(String, Vec<u8>, &Array)> = ckpt
        .tensors
        .iter()
        .map(|(n, a)| (n.clone(), to_bytes(a), a))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, a)| {
            TensorView::new(st_dtype(a.dtype()), a.shape().to_vec(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| {
                    Error::Internal(format!("{}: cannot encode {n:?}: {e}", path.display()))
                })
        })
        .collect::<Result<_>>()?;
    let mut meta = ckpt.metadata.clone();
    meta.insert("format".into(), "kiln".into());
    let sum = checksum(&ckpt.tensors, &meta);
    meta.insert("kiln.checksum".into(), sum);
    let meta: HashMap<String, String> = meta.into_iter().collect();
    let data = safetensors::serialize(views, &Some(meta)).map_err(|e| {
        Error::Internal(format!(
            "{}: cannot encode the checkpoint: {e}",
            path.display()
        ))
    })?;

    crate::atomic::write(path, &data)
}

/// The largest checkpoint [`read()`] reads (64 GiB): a guard against a device or a runaway
/// file, not a model-size policy. Non-regular files (a symlink to `/dev/zero`) are refused too.
pub const MAX_CHECKPOINT_BYTES: u64 = 64 << 30;

/// Reads and fully checks a checkpoint file: a truncated file, a damaged header, a tensor
/// whose bytes do not match its shape, or a checksum mismatch is an error naming the file.
pub fn read(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let data = crate::saved::read_bounded(path, MAX_CHECKPOINT_BYTES, "the checkpoint")?;
    let st = SafeTensors::deserialize(&data).map_err(|e| {
        bad(
            path,
            "not a valid safetensors file (truncated or corrupted?)",
            format!("{e:?}"),
        )
    })?;
    let (_, meta) = SafeTensors::read_metadata(&data)
        .map_err(|e| bad(path, "not a valid safetensors file", format!("{e:?}")))?;
    let mut ckpt = Checkpoint {
        metadata: meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..Default::default()
    };
    for (name, view) in st.iter() {
        let a = from_view(name, &view).map_err(|m| bad(path, "bad tensor", m))?;
        ckpt.tensors.insert(name.to_string(), a);
    }
    // A file kiln wrote must carry its checksum; files from other writers (Python's
    // safetensors, PyTorch) carry no kiln metadata and are taken as they are.
    let from_kiln = ckpt.metadata.get("format").is_some_and(|f| f == "kiln")
        || ckpt.metadata.keys().any(|k| k.starts_with("kiln."));
    match ckpt.metadata.get("kiln.checksum") {
        Some(want) => {
            let got = checksum(&ckpt.tensors, &ckpt.metadata);
            if &got != want {
                return Err(bad(
                    path,
                    "corrupted",
                    format!("checksum is {got}, the header says {want}"),
                ));
            }
        }
        None if from_kiln => {
            return Err(bad(path, "corrupted", "the kiln checksum is missing"));
        }
        None => {}
    }
    Ok(ckpt)
}

impl Session {
    /// Saves every variable (weights and optimizer state) and the run counter to `path`,
    /// atomically (see [`crate::checkpoint`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut ckpt = Checkpoint::default();
        for (name, value) in self.named_variables() {
            ckpt.tensors.insert(name, value.clone());
        }
        ckpt.metadata
            .insert("kiln.runs".into(), self.run_count().to_string());
        write(path, &ckpt)
    }

    /// Restores every variable of the graph from `path`. The file and every variable's name,
    /// dtype and shape are checked first; on any error no variable is changed. Tensors in the
    /// file that the graph does not have are ignored (an inference graph can load a training
    /// checkpoint).
    ///
    /// The result says whether the file's kiln checksum was verified and whether the run
    /// counter was restored: both are `false` for a file without kiln's metadata (see
    /// [`Restored::warning`]).
    pub fn restore(&mut self, path: impl AsRef<Path>) -> Result<Restored> {
        let path = path.as_ref();
        let ckpt = read(path)?;
        let mut problems = vec![];
        let mut values = vec![];
        for (name, id, ty) in self.variable_specs() {
            match ckpt.tensors.get(&name) {
                None => problems.push(format!("tensor {name:?} is missing")),
                Some(a) => {
                    let want = ty.shape.to_fixed().unwrap_or_default();
                    if a.dtype() != ty.dtype || a.shape() != want.as_slice() {
                        problems.push(format!(
                            "tensor {name:?} is {}{:?} in the file, {ty} in the graph",
                            a.dtype(),
                            a.shape()
                        ));
                    } else {
                        values.push((id, a.clone()));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::invalid_file(
                path,
                format!("restore: {}; no variable was changed", problems.join("; ")),
            ));
        }
        let runs = match ckpt.metadata.get("kiln.runs") {
            Some(r) => Some(r.parse::<u64>().map_err(|_| {
                bad(
                    path,
                    "corrupted",
                    format!("kiln.runs is {r:?}, not a number"),
                )
            })?),
            None => None,
        };
        self.put_variables(values);
        if let Some(r) = runs {
            self.set_run_count(r);
        }
        Ok(Restored {
            checksum_verified: ckpt.checksum_verified(),
            run_counter_restored: runs.is_some(),
        })
    }
}
