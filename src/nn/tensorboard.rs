//! The [`TensorBoard`] callback: scalar logs as TensorBoard event files, and a reader for them.
//!
//! Why kiln writes them itself: the crates found for it were `tensorboard-rs` 0.5.9 (built on
//! `protobuf` 2, a major version behind, and `image` 0.23 for its image summaries), `tboard`
//! 0.1.1 (a build script running `prost-build` 0.12, so `protoc` on every build machine) and
//! `tfrecord` 0.15 (TensorFlow's whole protobuf set, generated at build time). Scalars need
//! three small messages and a framing of a dozen lines; kiln already depends on `prost`
//! (0.14, derive only, for ONNX), so the messages below are derived by hand with the field
//! numbers of TensorFlow's `event.proto` and `summary.proto`, and CRC-32C is a table.
//!
//! The format (TFRecord): each record is `len: u64 LE`, `masked_crc32c(len bytes): u32 LE`,
//! the bytes, `masked_crc32c(bytes): u32 LE`; the bytes are one `Event`. A file starts with
//! an event holding `file_version = "brain.Event:2"`. A scalar is a `Summary.Value` with a
//! `simple_value`, which TensorBoard shows in its Scalars tab.
//!
//! Files are appended to, not replaced (the one other exception to ARCHITECTURE.md's
//! invariant 12 besides `CSVLogger`): TensorBoard follows a growing file while training
//! runs, and a file replaced by a rename would not be followed. Each file is new
//! (`create_new`, a name with the time, the process id and a counter), and every record
//! carries its own checksums, so a run killed mid-write leaves a torn last record that
//! readers (this one included) detect and drop, never a wrong value.

use super::batch::Logs;
use super::callbacks::{Callback, Control};
use super::model::Model;
use crate::error::{Error, Result};
use crate::train::args::ArgErrors;
use prost::Message;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `tensorflow.Event`, the fields kiln writes (`what` is a oneof; each arm is an optional
/// field on the wire).
#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

/// `tensorflow.Summary.Value` with a `simple_value` (optional, so that a 0 is written).
#[derive(Clone, PartialEq, Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), as TFRecord uses.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC: rotated right by 15 and offset, so that a CRC of data holding
/// CRCs does not degenerate.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its CRC, the bytes, their CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Files made by this process, for unique names.
static FILES: AtomicUsize = AtomicUsize::new(0);

/// One event file being appended to.
struct EventFile {
    path: PathBuf,
    file: File,
}

impl EventFile {
    /// A new event file in `dir` (created if missing, its parent must exist), with the
    /// version event written.
    fn create(dir: &Path) -> Result<EventFile> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(dir, "TensorBoard cannot create its log directory", e))?;
        let t = now();
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "events.out.tfevents.{}.kiln.{}.{n}.v2",
            t as u64,
            std::process::id()
        );
        let path = dir.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "TensorBoard cannot create its event file", e))?;
        let mut f = EventFile { path, file };
        f.write(&Event {
            wall_time: t,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        Ok(f)
    }

    /// Appends `scalars` at `step` as one event, and flushes it to the file.
    fn scalars(&mut self, step: usize, scalars: &[(String, f64)]) -> Result<()> {
        let value = scalars
            .iter()
            .map(|(tag, v)| Value {
                tag: tag.clone(),
                simple_value: Some(*v as f32),
            })
            .collect();
        self.write(&Event {
            wall_time: now(),
            step: i64::try_from(step).unwrap_or(i64::MAX),
            file_version: None,
            summary: Some(Summary { value }),
        })
    }

    fn write(&mut self, e: &Event) -> Result<()> {
        let bytes = record(&e.encode_to_vec());
        let r = self.file.write_all(&bytes).and_then(|_| self.file.flush());
        r.map_err(|err| Error::io(&self.path, "TensorBoard cannot write its event file", err))
    }
}

/// Writes the epoch logs as TensorBoard event files, as Keras' `TensorBoard` callback:
/// `log_dir/train` gets `epoch_loss`, `epoch_accuracy`, ... (and `epoch_learning_rate` when a
/// [`ReduceLROnPlateau`](super::ReduceLROnPlateau) logs it), `log_dir/validation` the `val_`
/// values under the same tags, so TensorBoard draws each pair in one chart; the step is
/// the 0-based epoch. With [`update_freq`](Self::update_freq), every `n`-th training batch
/// also writes `batch_loss`, ... at the count of batches run. `tensorboard --logdir
/// log_dir` shows them while training runs (each event is flushed as it is written).
///
/// `log_dir` and its two subdirectories are created if missing (its parent must exist);
/// each `fit` writes new files beside any earlier run's, as Keras does.
/// [`TensorBoard::read_scalars`] reads a file back.
///
/// ```
/// use kiln::prelude::*;
/// use kiln::nn::*;
/// let dir = tempfile::tempdir().unwrap();
/// let x = Array::new([4, 1], vec![0f32, 1., 2., 3.])?;
/// let y = Array::new([4, 1], vec![1f32, 3., 5., 7.])?;
/// let mut m = Sequential::new([Input::new([1]).into(), Dense::new(1).into()]);
/// m.compile(Sgd::new(0.05), Loss::MeanSquaredError, &[])?;
/// let config = FitConfig::new().epochs(3).verbosity(Verbosity::Silent)
///     .callback(TensorBoard::new(dir.path().join("logs")));
/// let h = m.fit(&x, &y, config)?;
/// let train = std::fs::read_dir(dir.path().join("logs/train")).unwrap().next().unwrap();
/// let events = TensorBoard::read_scalars(train.unwrap().path())?;
/// let losses: Vec<f64> = events.iter().map(|(_, _, v)| *v as f64).collect();
/// assert_eq!(events[2].0, 2); // steps are epochs
/// assert_eq!(events[2].1, "epoch_loss");
/// assert_eq!(losses, h.get("loss").unwrap().iter().map(|&v| v as f32 as f64).collect::<Vec<_>>());
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct TensorBoard {
    log_dir: PathBuf,
    update_freq: Option<usize>,
    train: Option<EventFile>,
    validation: Option<EventFile>,
    batches: usize,
    args: ArgErrors,
}

impl TensorBoard {
    /// Logs into `log_dir` (Keras' `log_dir`), once per epoch.
    #[track_caller]
    pub fn new(log_dir: impl Into<PathBuf>) -> TensorBoard {
        let log_dir = log_dir.into();
        let mut args = ArgErrors::default();
        let ok = !log_dir.as_os_str().is_empty();
        let f = "TensorBoard::new";
        args.check(ok, f, "log_dir", "a directory path", "\"\"");
        TensorBoard {
            log_dir,
            update_freq: None,
            train: None,
            validation: None,
            batches: 0,
            args,
        }
    }

    /// Also log every `n`-th training batch's own loss and metrics (`batch_loss`, ...), at
    /// least 1 (Keras' `update_freq=n`).
    #[track_caller]
    pub fn update_freq(mut self, n: usize) -> Self {
        let f = "TensorBoard::update_freq";
        self.args.check(n >= 1, f, "update_freq", "at least 1", n);
        self.update_freq = Some(n);
        self
    }

    /// The scalars of an event file, `(step, tag, value)` in file order. A record whose
    /// checksum does not match is an error naming its offset; a torn last record (a writer
    /// killed mid-write) is dropped, as TensorBoard drops it.
    pub fn read_scalars(path: impl AsRef<Path>) -> Result<Vec<(i64, String, f32)>> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::io(path, "cannot read the TensorBoard event file", e))?;
        let bad = |at: usize, what: &str| {
            Error::invalid(format!(
                "{}: the TensorBoard record at byte {at} {what}",
                path.display()
            ))
        };
        let mut out = vec![];
        let mut at = 0usize;
        while at < bytes.len() {
            let Some(head) = bytes.get(at..at + 12) else {
                break; // torn header
            };
            let (len_bytes, crc) = head.split_at(8);
            let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
            if masked_crc(len_bytes) != crc {
                return Err(bad(at, "has a length whose checksum does not match"));
            }
            let mut len8 = [0u8; 8];
            len8.copy_from_slice(len_bytes);
            let len = usize::try_from(u64::from_le_bytes(len8))
                .map_err(|_| bad(at, "is longer than memory"))?;
            let start = at + 12;
            let Some(end) = start.checked_add(len).filter(|&e| e + 4 <= bytes.len()) else {
                break; // torn body
            };
            let data = &bytes[start..end];
            let c = &bytes[end..end + 4];
            if masked_crc(data) != u32::from_le_bytes([c[0], c[1], c[2], c[3]]) {
                return Err(bad(at, "has data whose checksum does not match"));
            }
            let e = Event::decode(data).map_err(|e| bad(at, &format!("is no Event: {e}")))?;
            for v in e.summary.into_iter().flat_map(|s| s.value) {
                if let Some(x) = v.simple_value {
                    out.push((e.step, v.tag, x));
                }
            }
            at = end + 4;
        }
        Ok(out)
    }
}

impl Callback for TensorBoard {
    /// Reports bad arguments, creates `log_dir/train` and its event file.
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        self.args.result()?;
        let parent = match self.log_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(Error::io(
                &self.log_dir,
                format!(
                    "TensorBoard cannot log here: {} is not a directory (kiln creates log_dir \
                     but not its parents). Found before training started",
                    parent.display()
                ),
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        self.train = Some(EventFile::create(&self.log_dir.join("train"))?);
        self.validation = None;
        self.batches = 0;
        Ok(())
    }

    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _step: usize,
        logs: &Logs,
        _model: &mut Model,
    ) -> Result<Control> {
        self.batches += 1;
        let (Some(n), Some(f)) = (self.update_freq, self.train.as_mut()) else {
            return Ok(Control::Continue);
        };
        if self.batches.is_multiple_of(n) {
            let s: Vec<(String, f64)> = logs
                .iter()
                .map(|(k, v)| (format!("batch_{k}"), *v))
                .collect();
            f.scalars(self.batches, &s)?;
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _model: &mut Model) -> Result<Control> {
        let (mut train, mut val) = (vec![], vec![]);
        for (k, &v) in logs {
            match k.strip_prefix("val_") {
                Some(rest) => val.push((format!("epoch_{rest}"), v)),
                None => train.push((format!("epoch_{k}"), v)),
            }
        }
        let f = self
            .train
            .as_mut()
            .ok_or_else(|| Error::Internal("TensorBoard: no event file open".into()))?;
        f.scalars(epoch, &train)?;
        if !val.is_empty() {
            if self.validation.is_none() {
                self.validation = Some(EventFile::create(&self.log_dir.join("validation"))?);
            }
            if let Some(f) = self.validation.as_mut() {
                f.scalars(epoch, &val)?;
            }
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _model: &mut Model) -> Result<()> {
        self.train = None;
        self.validation = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_values() {
        // The standard check value, and RFC 3720's all-zero and all-one 32-byte vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn a_zero_scalar_is_written() {
        let v = Value {
            tag: "t".into(),
            simple_value: Some(0.0),
        };
        let back = Value::decode(v.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.simple_value, Some(0.0));
    }
}
