//! IDX: the simple binary format MNIST ships in, read straight from `.gz` files.
//!
//! An IDX file is a big-endian header — two zero bytes, a type byte, a dimension count `d`,
//! then `d` u32 dimension sizes — followed by the elements, row-major. Only unsigned bytes
//! (type `0x08`) are supported, which covers MNIST and its drop-ins (Fashion-MNIST, EMNIST).

use super::Split;
use crate::array::Array;
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

/// The IDX type byte for unsigned bytes, the only element type supported.
const U8: u8 = 0x08;
/// The largest data an IDX file may declare (4 GiB; MNIST's training images are 47 MB). The
/// header is checked against it before any data is read, and the data is read with a bound
/// of the declared size plus one byte, so a small `.gz` whose header claims huge dimensions,
/// or a stream that decompresses to far more than its header says, cannot exhaust memory.
pub(crate) const MAX_IDX_BYTES: usize = 1 << 32;
/// Largest buffer reserved up front from a header's claim (the data may still be larger).
const MAX_RESERVE: usize = 1 << 28;

/// A decoded IDX file: dimension sizes and raw bytes.
struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

fn type_name(t: u8) -> &'static str {
    match t {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// How the header describes the data, for error messages: "60000 labels" or
/// "60000x28x28 = 47040000 bytes".
fn describe(dims: &[usize], total: usize, items: &str) -> String {
    match dims {
        [n] => format!("{n} {items}"),
        _ => {
            let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("{} = {total} bytes", d.join("x"))
        }
    }
}

/// Reads an IDX file of unsigned bytes with `want_dims` dimensions (any if `None`); `items`
/// names what the elements are in error messages ("labels", "items").
fn read_raw(path: &Path, want_dims: Option<u8>, items: &str) -> Result<Idx> {
    let file = File::open(path).map_err(|e| Error::io(path, "cannot open the IDX file", e))?;
    let buffered = BufReader::with_capacity(1 << 16, file);
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let mut r: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let kind = if gz { "gzip stream" } else { "file" };

    let mut head = [0u8; 4];
    read_header(&mut r, &mut head, path, 0)?;
    let magic = u32::from_be_bytes(head);
    if head[0] != 0 || head[1] != 0 {
        return Err(Error::invalid_file(
            path,
            format!(
                "bad magic number 0x{magic:08X}: not an IDX file (an IDX header starts with \
                 two zero bytes, then the type byte and the dimension count, e.g. 0x00000803)"
            ),
        ));
    }
    if head[2] != U8 {
        return Err(Error::invalid_file(
            path,
            format!(
                "unsupported IDX element type 0x{:02X} ({}) in magic number 0x{magic:08X}; \
                 only 0x08 (unsigned byte) is supported",
                head[2],
                type_name(head[2])
            ),
        ));
    }
    let nd = head[3];
    if let Some(w) = want_dims {
        if nd != w {
            return Err(Error::invalid_file(
                path,
                format!(
                    "magic number 0x{magic:08X} declares {nd} dimensions, expected {w} \
                     (0x{:08X}) for {items}",
                    0x0800 | w as u32
                ),
            ));
        }
    }
    let mut dims_raw = vec![0u8; 4 * nd as usize];
    read_header(&mut r, &mut dims_raw, path, 4)?;
    let dims: Vec<usize> = dims_raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let total = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::invalid_file(path, format!("header dimensions {dims:?} overflow")))?;

    if total > MAX_IDX_BYTES {
        return Err(Error::invalid_file(
            path,
            format!(
                "header declares {}, more than the limit of {MAX_IDX_BYTES} bytes \
                 (MNIST's largest file is 47 MB); nothing was decompressed",
                describe(&dims, total, items)
            ),
        ));
    }
    let mut data = Vec::with_capacity(total.min(MAX_RESERVE));
    // One byte past the declared size is enough to tell trailing data from a clean end.
    let res = r.take(total as u64 + 1).read_to_end(&mut data);
    let want = describe(&dims, total, items);
    let found = data.len();
    let have = if dims.len() == 1 {
        found.to_string()
    } else {
        format!("{found} bytes")
    };
    match res {
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && found < total => {
            Err(Error::invalid_file(
                path,
                format!("truncated: header says {want}, {kind} holds {have} before it ends ({e})"),
            ))
        }
        Err(e) => Err(Error::io(
            path,
            format!("cannot read the IDX data after {found} bytes"),
            e,
        )),
        Ok(_) if found < total => Err(Error::invalid_file(
            path,
            format!("truncated: header says {want}, {kind} holds {have}"),
        )),
        Ok(_) if found > total => Err(Error::invalid_file(
            path,
            format!(
                "trailing data after the {total} bytes the header declares: header says {want}"
            ),
        )),
        Ok(_) => Ok(Idx { dims, data }),
    }
}

/// Fills `buf` with header bytes starting at byte `at`, or reports a truncated header.
fn read_header(r: &mut dyn Read, buf: &mut [u8], path: &Path, at: usize) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(Error::io(path, "cannot read the IDX header", e)),
        }
    }
    if got < buf.len() {
        return Err(Error::invalid_file(
            path,
            format!(
                "truncated: the file ends inside the IDX header (after {} bytes)",
                at + got
            ),
        ));
    }
    Ok(())
}

/// Reads an IDX file of unsigned bytes, gzip-compressed if the name ends in `.gz`, as an
/// `i32` array with the file's dimensions holding the raw byte values `0..=255`.
///
/// The magic number, element type and data length are checked; a truncated file is an error
/// stating how much data the header promises and how much the file holds.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Array> {
    let idx = read_raw(path.as_ref(), None, "items")?;
    Array::new(idx.dims, idx.data.into_iter().map(i32::from).collect())
}

/// MNIST's training and test splits.
#[derive(Clone, Debug, PartialEq)]
pub struct Mnist {
    /// Training images: `f32 [60000, 784]`, pixels scaled from `0..=255` to `[0, 1]`.
    pub train_x: Array,
    /// Training labels: `i32 [60000]`, digits `0..=9`.
    pub train_y: Array,
    /// Test images: `f32 [10000, 784]`, scaled to `[0, 1]`.
    pub test_x: Array,
    /// Test labels: `i32 [10000]`.
    pub test_y: Array,
}

impl Mnist {
    /// The same splits with the images as NHWC `f32 [n, 28, 28, 1]` (rows, columns, one grey
    /// channel), the layout convolution layers take. Only the shapes change: the pixels are
    /// not copied. Images that are not 28 x 28 (a file loaded by [`load_mnist_files`] with
    /// other sizes) are an error.
    ///
    /// ```no_run
    /// let mnist = kiln::data::load_mnist("data/mnist")?.into_images()?;
    /// assert_eq!(mnist.train_x.shape(), &[60000, 28, 28, 1]);
    /// assert_eq!(mnist.test_x.shape(), &[10000, 28, 28, 1]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn into_images(self) -> Result<Mnist> {
        Ok(Mnist {
            train_x: as_images(self.train_x, "train_x")?,
            train_y: self.train_y,
            test_x: as_images(self.test_x, "test_x")?,
            test_y: self.test_y,
        })
    }
}

/// `[n, 784]` pixels as `[n, 28, 28, 1]` images.
fn as_images(x: Array, name: &str) -> Result<Array> {
    match *x.shape() {
        [n, 784] => x.reshape([n, 28, 28, 1]),
        _ => Err(Error::invalid(format!(
            "Mnist::into_images: {name} has shape {:?}, not [n, 784] (28 x 28 images)",
            x.shape()
        ))),
    }
}

/// Loads one IDX image file (magic `0x00000803`) and its label file (magic `0x00000801`),
/// gzip-compressed or plain: `x: f32 [n, rows * cols]` with pixels scaled to `[0, 1]` and
/// `y: i32 [n]`. The two files must hold the same number of items.
pub fn load_mnist_files(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Split> {
    let (images, labels) = (images.as_ref(), labels.as_ref());
    let (img, lab) = std::thread::scope(|s| {
        let l = s.spawn(|| read_raw(labels, Some(1), "labels"));
        let i = read_raw(images, Some(3), "images");
        (i, l.join())
    });
    let img = img?;
    let lab = lab.map_err(|_| {
        Error::Internal(format!("{}: the reader thread panicked", labels.display()))
    })??;
    let n = img.dims[0];
    if lab.dims[0] != n {
        return Err(Error::invalid_file(
            labels,
            format!(
                "holds {} labels but {} holds {n} images",
                lab.dims[0],
                images.display()
            ),
        ));
    }
    let pixels = img.dims[1] * img.dims[2];
    let x: Vec<f32> = img.data.iter().map(|&b| b as f32 / 255.0).collect();
    let y: Vec<i32> = lab.data.iter().map(|&b| i32::from(b)).collect();
    Ok(Split {
        x: Array::new([n, pixels], x)?,
        y: Array::new([n], y)?,
    })
}

/// Loads MNIST from a directory holding the four standard files
/// `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`
/// and `t10k-labels-idx1-ubyte.gz` (as shipped in `data/mnist`).
///
/// Both splits decompress in parallel; the whole set loads in well under a second in a release
/// build.
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<Mnist> {
    let d = dir.as_ref();
    let (train, test) = std::thread::scope(|s| {
        let test = s.spawn(|| {
            load_mnist_files(
                d.join("t10k-images-idx3-ubyte.gz"),
                d.join("t10k-labels-idx1-ubyte.gz"),
            )
        });
        let train = load_mnist_files(
            d.join("train-images-idx3-ubyte.gz"),
            d.join("train-labels-idx1-ubyte.gz"),
        );
        (train, test.join())
    });
    let train = train?;
    let test = test.map_err(|_| {
        Error::Internal(format!(
            "{}: the test split's reader thread panicked",
            d.display()
        ))
    })??;
    Ok(Mnist {
        train_x: train.x,
        train_y: train.y,
        test_x: test.x,
        test_y: test.y,
    })
}
