//! PyTorch weights into a kiln model: `tests/data/torch_seq.safetensors` holds the state_dict
//! of `nn.Sequential(Conv2d, BatchNorm2d, ReLU, Flatten, Linear)` with PyTorch's names,
//! layouts and its `i64` batch counter (see `tests/data/SOURCE.torch_seq.md`); the kiln model
//! built the same way, loaded through `TorchLayout`, gives the outputs the generator computed
//! with numpy. Also: every safetensors dtype loads, and damaged files are clear errors.

use kiln::checkpoint::{self, Checkpoint};
use kiln::nn::*;
use kiln::prelude::*;
use kiln::{bf16, f16};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-st-{}-{name}", std::process::id()))
}

fn torch_model() -> Model {
    let mut m = Sequential::new([
        Input::new([5, 5, 2]).into(),
        Conv2D::new(3, [3, 3]).into(),
        BatchNormalization::new().epsilon(1e-5).into(),
        Activation::Relu.into(),
        Flatten.into(),
        Dense::new(4).into(),
    ]);
    m.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap();
    m
}

fn torch_map() -> TorchLayout {
    TorchLayout::new()
        .layer("0", "conv2d")
        .layer("1", "batch_normalization")
        .layer("4", "dense")
        .linear_after_flatten("4", [3, 3, 3])
}

#[test]
fn the_file_holds_pytorch_names_layouts_and_an_i64_counter() {
    let ck = checkpoint::read(data("torch_seq.safetensors")).unwrap();
    assert!(!ck.checksum_verified()); // a foreign file
    let counter = &ck.tensors["1.num_batches_tracked"];
    assert_eq!((counter.dtype(), counter.shape()), (DType::I64, &[][..]));
    assert_eq!(counter.scalar_value::<i64>().unwrap(), 1234);
    assert_eq!(ck.tensors["0.weight"].shape(), &[3, 2, 3, 3]);
    assert_eq!(ck.tensors["4.weight"].shape(), &[4, 27]);
}

#[test]
fn a_pytorch_state_dict_loads_and_gives_pytorch_outputs() {
    let io = checkpoint::read(data("torch_seq_io.safetensors")).unwrap();
    let (x, want) = (&io.tensors["x"], &io.tensors["y"]);
    // NCHW -> NHWC.
    let xs = x.to_vec::<f32>().unwrap();
    let (n, c, h, w) = (2, 2, 5, 5);
    let mut nhwc = vec![0f32; xs.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    nhwc[((b * h + i) * w + j) * c + ch] = xs[((b * c + ch) * h + i) * w + j];
                }
            }
        }
    }
    let x = Array::new([n, h, w, c], nhwc).unwrap();
    let mut m = torch_model();
    m.load_weights_with(data("torch_seq.safetensors"), torch_map())
        .unwrap();
    let got = m.predict(&x, 2).unwrap().to_vec::<f32>().unwrap();
    let want = want.to_vec::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{got:?} vs numpy {want:?}"
        );
    }
    // Without the column reorder the Linear reads the features in the wrong order.
    let plain = TorchLayout::new()
        .layer("0", "conv2d")
        .layer("1", "batch_normalization")
        .layer("4", "dense");
    m.load_weights_with(data("torch_seq.safetensors"), plain)
        .unwrap();
    let off = m.predict(&x, 2).unwrap().to_vec::<f32>().unwrap();
    assert!(off.iter().zip(&want).any(|(g, w)| (g - w).abs() > 1e-3));
}

#[test]
fn a_missing_mapping_is_an_error_naming_the_weights_and_changes_nothing() {
    let mut m = torch_model();
    let before = m.get_weights().unwrap();
    let only_conv = TorchLayout::new().layer("0", "conv2d");
    let e = m
        .load_weights_with(data("torch_seq.safetensors"), only_conv)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"dense/kernel\"") && e.contains("no weight was changed"),
        "{e}"
    );
    let after = m.get_weights().unwrap();
    assert!(before.iter().zip(&after).all(|(a, b)| a.1.bits_eq(&b.1)));
}

#[test]
fn a_closure_renames_and_half_weights_are_cast_to_f32() {
    let mut m = Sequential::new([Input::new([3]).into(), Dense::new(2).into()]);
    m.compile(Sgd::new(0.1), Loss::MeanSquaredError, &[])
        .unwrap();
    let k: Vec<f16> = [1.5f32, -2.0, 0.25, 3.0, 0.5, -1.0]
        .map(f16::from_f32)
        .to_vec();
    let mut ck = Checkpoint::default();
    ck.tensors
        .insert("model.dense/kernel".into(), Array::new([3, 2], k).unwrap());
    let b = vec![bf16::from_f32(0.5), bf16::from_f32(-0.5)];
    ck.tensors
        .insert("model.dense/bias".into(), Array::new([2], b).unwrap());
    ck.tensors.insert("step".into(), Array::scalar(7i64));
    let p = tmp("rename.safetensors");
    checkpoint::write(&p, &ck).unwrap();
    m.load_weights_with(&p, |n: &str| n.strip_prefix("model.").map(String::from))
        .unwrap();
    std::fs::remove_file(&p).ok();
    let w = m.get_weights().unwrap();
    assert_eq!(
        w[0].1.to_vec::<f32>().unwrap(),
        vec![1.5, -2.0, 0.25, 3.0, 0.5, -1.0]
    );
    assert_eq!(w[1].1.to_vec::<f32>().unwrap(), vec![0.5, -0.5]);
}

/// A safetensors file from raw parts: `header` JSON and `data` bytes.
fn raw(name: &str, header: &str, data: &[u8]) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn every_safetensors_dtype_reads() {
    let cases: [(&str, Vec<u8>, DType, Vec<f64>); 8] = [
        ("I16", vec![0xFF, 0xFF, 2, 0], DType::I32, vec![-1.0, 2.0]),
        (
            "U16",
            vec![0xFF, 0xFF, 2, 0],
            DType::I32,
            vec![65535.0, 2.0],
        ),
        (
            "U32",
            vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0],
            DType::I64,
            vec![4294967295.0, 1.0],
        ),
        (
            "U64",
            [5u64.to_le_bytes(), 6u64.to_le_bytes()].concat(),
            DType::I64,
            vec![5.0, 6.0],
        ),
        ("F8_E5M2", vec![0x3C, 0xC0], DType::F16, vec![1.0, -2.0]),
        ("F8_E4M3", vec![0x38, 0x7E], DType::F16, vec![1.0, 448.0]),
        ("I8", vec![0xFF, 7], DType::I8, vec![-1.0, 7.0]),
        ("U8", vec![0xFF, 7], DType::U8, vec![255.0, 7.0]),
    ];
    for (st, bytes, dt, want) in cases {
        let h = format!(
            r#"{{"t":{{"dtype":"{st}","shape":[2],"data_offsets":[0,{}]}}}}"#,
            bytes.len()
        );
        let p = raw(&format!("{st}.safetensors"), &h, &bytes);
        let r = checkpoint::read(&p);
        std::fs::remove_file(&p).ok();
        let a = &r.unwrap_or_else(|e| panic!("{st}: {e}")).tensors["t"];
        assert_eq!((a.dtype(), a.to_f64_vec()), (dt, want), "{st}");
    }
}

#[test]
fn damaged_headers_are_clear_errors() {
    let f32x2 = [0u8; 8];
    let cases = [
        // (header, data, what the error must say)
        (
            r#"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &f32x2[..],
            "safetensors",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#,
            &f32x2[..],
            "safetensors",
        ),
        (
            r#"{"t":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
            &f32x2[..],
            "safetensors",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            &f32x2[..],
            "safetensors",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
            &f32x2[..],
            "safetensors",
        ),
        (
            r#"{"t":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}"#,
            &[0xFF; 8][..],
            "does not fit in i64",
        ),
        (
            r#"{"t":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#,
            &[0, 2][..],
            "neither 0 nor 1",
        ),
        (
            r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
            &f32x2[..],
            "safetensors",
        ),
    ];
    for (i, (h, d, says)) in cases.into_iter().enumerate() {
        let p = raw(&format!("bad{i}.safetensors"), h, d);
        let r = checkpoint::read(&p);
        std::fs::remove_file(&p).ok();
        let e = r.expect_err(h).to_string();
        assert!(
            e.contains(says) && e.contains(&format!("bad{i}")),
            "{h}: {e}"
        );
    }
}

#[test]
fn a_tensor_past_the_allocation_limit_is_refused_before_decoding() {
    // 2^40 bool elements would be 1 TiB: safetensors itself refuses the sizes first, and the
    // decoder checks KILN_MAX_ALLOC; either way an error, not an abort.
    let h = r#"{"t":{"dtype":"BOOL","shape":[1099511627776],"data_offsets":[0,1099511627776]}}"#;
    let p = raw("huge.safetensors", h, &[0; 4]);
    let r = checkpoint::read(&p);
    std::fs::remove_file(&p).ok();
    assert!(r.is_err());
}

#[test]
fn half_nan_payloads_survive_a_round_trip() {
    let bits = [0x7C01u16, 0xFE00, 0x7E55, 0xFC00, 0x0001];
    let mut ck = Checkpoint::default();
    let h: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
    let b: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
    ck.tensors.insert("h".into(), Array::new([5], h).unwrap());
    ck.tensors.insert("b".into(), Array::new([5], b).unwrap());
    let p = tmp("nan.safetensors");
    checkpoint::write(&p, &ck).unwrap();
    let back = checkpoint::read(&p).unwrap();
    std::fs::remove_file(&p).ok();
    assert!(back.tensors["h"].bits_eq(&ck.tensors["h"]));
    assert!(back.tensors["b"].bits_eq(&ck.tensors["b"]));
}
