//! Target 3: the checkpoint and IDX loaders on mutated files.
//!
//! A real checkpoint (`Session::save`) of random variables, or a small IDX file (raw or gzip),
//! is damaged: bytes flipped, a length field set to an extreme value, the file cut or extended.
//! Loading must never panic; a restore that succeeds must leave exactly the saved values, and
//! one that fails must leave the session's values untouched. An IDX file that loads must hold
//! byte values of the shape it claims.

use super::{graphs::random_array, no_panic, Rng};
use kiln::prelude::*;
use std::io::Write;
use std::path::PathBuf;

/// A scratch directory for one case, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(seed: u64) -> Scratch {
        let t = format!("{:?}", std::thread::current().id());
        let t: String = t.chars().filter(char::is_ascii_digit).collect();
        let p = std::env::temp_dir().join(format!("kiln-fuzz-{}-{t}-{seed:x}", std::process::id()));
        std::fs::create_dir_all(&p).expect("scratch directory");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Damages `b` in one to three random ways.
pub fn mutate(r: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + r.below(3) {
        match r.below(7) {
            0 | 1 if !b.is_empty() => {
                let i = r.below(b.len());
                b[i] ^= 1 << r.below(8);
            }
            2 if !b.is_empty() => {
                let i = r.below(b.len());
                b[i] = r.next() as u8;
            }
            3 => b.truncate(r.below(b.len() + 1)),
            4 => {
                let extra: Vec<u8> = (0..r.below(64)).map(|_| r.next() as u8).collect();
                b.extend(extra);
            }
            5 if b.len() >= 8 => {
                // A length or dimension field at an extreme: the first 8 bytes (the header
                // size of a safetensors file; an IDX magic number and first dimension).
                let v: u64 = r.pick(&[0, 1, u32::MAX as u64, 1 << 32, u64::MAX, b.len() as u64]);
                let at = r.below(b.len() - 7).min(r.pick(&[0, 4]));
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ if !b.is_empty() => {
                // A digit in a text header changed (the JSON of a checkpoint).
                let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    let i = r.pick(&digits);
                    b[i] = b'0' + r.below(10) as u8;
                }
            }
            _ => {}
        }
    }
}

fn checkpoint(r: &mut Rng, dir: &std::path::Path) -> Result<(), String> {
    let g = Graph::new();
    let mut vars = vec![];
    for k in 0..1 + r.below(4) {
        let dt = r.pick(&[DType::F32, DType::F64, DType::I32, DType::Bool]);
        let shape: Vec<usize> = (0..r.below(3)).map(|_| r.below(4)).collect();
        let v = g.variable_of(&format!("layer{k}/w"), dt, shape.clone(), init::zeros());
        vars.push((v, random_array(r, &shape, dt)));
    }
    let mut s = Session::new(&g).map_err(|e| format!("session: {e}"))?;
    for (v, a) in &vars {
        s.set_variable(*v, a.clone()).map_err(|e| e.to_string())?;
    }
    let path = dir.join("model.safetensors");
    s.save(&path).map_err(|e| format!("save: {e}"))?;
    let mut bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
    let original = bytes.clone();
    mutate(r, &mut bytes);
    std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
    // A fresh session (zeros) restores the damaged file.
    let mut fresh = Session::new(&g).map_err(|e| format!("session: {e}"))?;
    let before: Vec<Array> = vars
        .iter()
        .map(|(v, _)| fresh.variable(*v).unwrap().clone())
        .collect();
    let _ = no_panic("checkpoint::read", || kiln::checkpoint::read(&path))?;
    let restored = no_panic("Session::restore", || fresh.restore(&path))?;
    for (k, (v, saved)) in vars.iter().enumerate() {
        let now = fresh.variable(*v).ok_or("variable gone")?;
        let want = if restored.is_ok() { saved } else { &before[k] };
        if !now.bits_eq(want) {
            return Err(format!(
                "checkpoint: restore returned {restored:?} but variable {k} is {now:?}, \
                 expected {want:?} (file changed: {})",
                bytes != original
            ));
        }
    }
    Ok(())
}

fn idx_bytes(r: &mut Rng, labels: bool, n: usize) -> Vec<u8> {
    let dims: Vec<u32> = if labels {
        vec![n as u32]
    } else {
        vec![n as u32, 1 + r.below(4) as u32, 1 + r.below(4) as u32]
    };
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in &dims {
        b.extend(d.to_be_bytes());
    }
    let count: u32 = dims.iter().product();
    b.extend((0..count).map(|_| r.next() as u8));
    b
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("gzip in memory");
    e.finish().expect("gzip in memory")
}

fn idx(r: &mut Rng, dir: &std::path::Path) -> Result<(), String> {
    let n = r.below(5);
    let gz = r.one_in(2);
    let ext = if gz { "idx.gz" } else { "idx" };
    let mut files = vec![];
    for (labels, name) in [(false, "images"), (true, "labels")] {
        let mut raw = idx_bytes(r, labels, n);
        // Damage either the content (then compress) or the compressed stream.
        let damage_raw = r.one_in(2);
        if damage_raw || !gz {
            mutate(r, &mut raw);
        }
        let mut bytes = if gz { gzip(&raw) } else { raw };
        if gz && !damage_raw {
            mutate(r, &mut bytes);
        }
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
        files.push(path);
    }
    for p in &files {
        if let Ok(a) = no_panic("read_idx", || kiln::data::read_idx(p))? {
            let v = a.to_vec::<i32>().map_err(|e| e.to_string())?;
            if v.len() != a.shape().iter().product::<usize>()
                || v.iter().any(|&x| !(0..=255).contains(&x))
            {
                return Err(format!(
                    "idx: accepted an array that breaks its promise: {a:?}"
                ));
            }
        }
    }
    let _ = no_panic("load_mnist_files", || {
        kiln::data::load_mnist_files(&files[0], &files[1])
    })?;
    Ok(())
}

/// The target: one damaged checkpoint or pair of IDX files.
pub fn case(seed: u64) -> Result<(), String> {
    let mut r = Rng::new(seed);
    let dir = Scratch::new(seed);
    if r.one_in(2) {
        checkpoint(&mut r, &dir.0)
    } else {
        idx(&mut r, &dir.0)
    }
}
