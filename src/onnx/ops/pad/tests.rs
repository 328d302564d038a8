//! `Pad` on models written here: the three gathered modes against numpy's values, and pads a
//! damaged or hostile file could hold (huge, `i64::MIN`) refused with an error naming the
//! node, before anything is allocated for them. Also the other ops whose sizes come from
//! the file's values, `Range` and `EyeLike`, at their extremes (`one_node` builds the models).

use crate::array::Array;
use crate::dtype::DType;
use crate::onnx::export::tensor::{int64s, value_info};
use crate::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use crate::shape::Shape;
use prost::Message;

/// A model of one `Pad` node (opset 13) on a `[2, 3]` f32 input `x`.
fn pad_model(mode: &str, pads: &[i64]) -> Vec<u8> {
    let mode = AttributeProto {
        name: Some("mode".into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(mode.as_bytes().to_vec()),
        ..Default::default()
    };
    let x = value_info("x", DType::F32, &Shape::from([2, 3]));
    one_node("Pad", vec![x], vec![int64s("pads", pads)], vec![mode])
}

/// A model of one node named `the_<op>` (opset 13) reading `inputs` then the initializers,
/// writing `y`.
pub(in crate::onnx) fn one_node(
    op: &str,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    attribute: Vec<AttributeProto>,
) -> Vec<u8> {
    let node = NodeProto {
        name: Some(format!("the_{}", op.to_lowercase())),
        op_type: Some(op.into()),
        input: inputs
            .iter()
            .filter_map(|v| v.name.clone())
            .chain(inits.iter().filter_map(|t| t.name.clone()))
            .collect(),
        output: vec!["y".into()],
        attribute,
        ..Default::default()
    };
    let graph = GraphProto {
        node: vec![node],
        name: Some(op.into()),
        initializer: inits,
        input: inputs,
        output: vec![value_info("y", DType::F32, &Shape::from([1]))],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn run(mode: &str, pads: &[i64]) -> crate::error::Result<Array> {
    let m = crate::onnx::import_bytes(&pad_model(mode, pads), "pad.onnx")?;
    let mut sess = m.session()?;
    let x = Array::new([2, 3], vec![1f32, 2., 3., 4., 5., 6.])?;
    let (xin, y) = (m.input(0).unwrap(), m.output(0).unwrap());
    Ok(sess.run(&[y], &[(xin, x)])?.remove(0))
}

#[test]
fn gathered_modes_match_numpy() {
    // np.pad([[1,2,3],[4,5,6]], ((0,0),(2,3)), mode=...) for reflect, edge, wrap.
    let want: [(&str, [f32; 16]); 3] = [
        (
            "reflect",
            [
                3., 2., 1., 2., 3., 2., 1., 2., 6., 5., 4., 5., 6., 5., 4., 5.,
            ],
        ),
        (
            "edge",
            [
                1., 1., 1., 2., 3., 3., 3., 3., 4., 4., 4., 5., 6., 6., 6., 6.,
            ],
        ),
        (
            "wrap",
            [
                2., 3., 1., 2., 3., 1., 2., 3., 5., 6., 4., 5., 6., 4., 5., 6.,
            ],
        ),
    ];
    for (mode, w) in want {
        let y = run(mode, &[0, 2, 0, 3]).unwrap();
        assert_eq!(y.shape(), &[2, 8], "{mode}");
        assert_eq!(y.as_slice::<f32>().unwrap(), &w[..], "{mode}");
    }
    // A negative pad crops first: wrap of [[2, 3], [5, 6]] by one on the left.
    let y = run("wrap", &[0, 0, 0, -1]).unwrap();
    assert_eq!(y.as_slice::<f32>().unwrap(), &[1f32, 2., 4., 5.]);
}

#[test]
fn huge_and_extreme_pads_are_errors_naming_the_node() {
    let cases: [(&str, [i64; 4], &str); 5] = [
        ("reflect", [0, 1 << 40, 0, 0], "at most 4096"),
        ("wrap", [0, 0, 0, i64::MAX], "at most 4096"),
        ("edge", [0, 4000, 0, 1000], "at most 4096"),
        (
            "reflect",
            [0, i64::MIN, 0, -1],
            "crop more than axis 1 holds",
        ),
        (
            "constant",
            [0, i64::MIN, 0, i64::MIN],
            "crop more than axis 1 holds",
        ),
    ];
    for (mode, pads, want) in cases {
        let e = run(mode, &pads).unwrap_err().to_string();
        assert!(
            e.contains("the_pad") && e.contains("Pad") && e.contains(want),
            "{mode} {pads:?}: {e}"
        );
    }
    // A constant pad too large for memory is refused by the graph's shape rule or the run,
    // never an abort.
    assert!(run("constant", &[0, 0, 0, i64::MAX]).is_err());
}

/// `Range` over the whole int64 line, computed exactly (its length once overflowed i64 and
/// came out empty), and `EyeLike` of a shape too large for a constant refused.
#[test]
fn range_at_the_int64_extremes_and_a_huge_eye_like() {
    let range = |s: i64, l: i64, d: i64| -> crate::error::Result<Vec<i64>> {
        let inits = vec![int64s("s", &[s]), int64s("l", &[l]), int64s("d", &[d])];
        let m = crate::onnx::import_bytes(&one_node("Range", vec![], inits, vec![]), "r.onnx")?;
        let mut sess = m.session()?;
        let y = sess.run(&[m.output(0).unwrap()], &[])?.remove(0);
        Ok(y.as_slice::<i64>().expect("int64 values").to_vec())
    };
    // (i64::MIN itself is the importer's mark for the open batch size, `tensor::BATCH`.)
    assert_eq!(
        range(i64::MIN + 1, i64::MAX, i64::MAX).unwrap(),
        [i64::MIN + 1, 0]
    );
    assert_eq!(range(5, -5, -4).unwrap(), [5, 1, -3]);
    assert_eq!(range(0, 10, -1).unwrap(), Vec::<i64>::new());
    let e = range(i64::MIN, i64::MAX, 1).unwrap_err().to_string();
    assert!(e.contains("the_range") && e.contains("too many"), "{e}");

    let x = value_info("x", DType::F32, &Shape::from([1 << 20, 1 << 20]));
    let e = crate::onnx::import_bytes(&one_node("EyeLike", vec![x], vec![], vec![]), "e.onnx")
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("the_eyelike") && e.contains("too large"), "{e}");
}
