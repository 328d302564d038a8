//! ONNX node attributes, built by name and type.

use crate::onnx::proto::{attribute_proto::AttributeType, AttributeProto, TensorProto};

fn named(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

/// An integer attribute.
pub(crate) fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..named(name, AttributeType::Int)
    }
}

/// An integer-list attribute.
pub(crate) fn ints(name: &str, v: impl IntoIterator<Item = usize>) -> AttributeProto {
    AttributeProto {
        ints: v.into_iter().map(|x| x as i64).collect(),
        ..named(name, AttributeType::Ints)
    }
}

/// A tensor attribute.
pub(crate) fn tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..named(name, AttributeType::Tensor)
    }
}
