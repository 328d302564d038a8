//! Each kiln primitive as ONNX nodes: one exhaustive `match` over [`Op`], so a new op is a
//! compile error here until it is exported or refused with a reason.
//!
//! Every mapping is exact: the ONNX op computes what the kiln op computes (on the values
//! both define), and kiln's importer reads each one back into the same primitive, which is
//! what makes an export → import round trip bitwise. Images are NHWC in kiln and NCHW in
//! ONNX's windowed ops, so convolutions and pools sit between `Transpose` nodes.

use super::attr;
use super::Emitter;
use crate::array::Array;
use crate::graph::op::{BinaryOp, ConvKind, Op, PoolKind, ReduceOp, UnaryOp, Window2d};
use crate::graph::NodeId;
use crate::onnx::proto::{AttributeProto, TensorProto};
use crate::shape::{broadcast_shapes, Dim};

type R<T> = Result<T, String>;

/// NHWC → NCHW.
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];
/// NCHW → NHWC.
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];
/// HWIO → OIHW.
const TO_OIHW: [usize; 4] = [3, 2, 0, 1];

fn unary_name(u: UnaryOp) -> &'static str {
    match u {
        UnaryOp::Neg => "Neg",
        UnaryOp::Exp => "Exp",
        UnaryOp::Log => "Log",
        UnaryOp::Sqrt => "Sqrt",
        UnaryOp::Recip => "Reciprocal",
        UnaryOp::Tanh => "Tanh",
        UnaryOp::Abs => "Abs",
        UnaryOp::Sigmoid => "Sigmoid",
        UnaryOp::Erf => "Erf",
        UnaryOp::Softplus => "Softplus",
    }
}

/// The ONNX op of a binary op (`ne` has none: it is `Equal` and a `Where`).
fn binary_name(b: BinaryOp) -> Option<&'static str> {
    Some(match b {
        BinaryOp::Add => "Add",
        BinaryOp::Sub => "Sub",
        BinaryOp::Mul => "Mul",
        BinaryOp::Div => "Div",
        BinaryOp::Pow => "Pow",
        BinaryOp::Rem => "Mod",
        BinaryOp::Max => "Max",
        BinaryOp::Min => "Min",
        BinaryOp::Eq => "Equal",
        BinaryOp::Lt => "Less",
        BinaryOp::Le => "LessOrEqual",
        BinaryOp::Gt => "Greater",
        BinaryOp::Ge => "GreaterOrEqual",
        BinaryOp::Ne => return None,
    })
}

/// Writes node `id` (not an alias, not a broadcast: the driver skips those).
pub(super) fn emit(e: &mut Emitter<'_>, id: NodeId) -> R<()> {
    let d = e.d;
    let n = d.node(id);
    match &n.op {
        Op::Placeholder => match e.fixed.get(&id).cloned() {
            Some(v) => constant(e, id, &v),
            None if e.values.contains_key(&id) => Ok(()),
            None => Err(
                "the outputs need this placeholder, and it is neither an export input nor \
                 fixed (ExportOptions::fix)"
                    .into(),
            ),
        },
        Op::Variable { .. } => {
            let name = e.out(id);
            let v = &e.weights[&id];
            let t = if e.oihw.contains(&id) {
                super::tensor::tensor_proto(&name, &super::tensor::hwio_to_oihw(v)?)
            } else {
                super::tensor::tensor_proto(&name, v)
            };
            e.inits.push(t);
            Ok(())
        }
        Op::Constant(c) => constant(e, id, &c.0),
        Op::Random { .. } => Err(
            "random numbers have no ONNX export (dropout or noise still \
             active: fix the switch that selects them away, such as a model's `training`, \
             with ExportOptions::fix)"
                .into(),
        ),
        Op::Unary(u) => simple(e, id, unary_name(*u), vec![]),
        Op::Binary(b) => match binary_name(*b) {
            Some(op) => {
                let ins = broadcasting_operands(e, id)?;
                let out = e.out(id);
                // ONNX's float `Mod` must say it is C's (`fmod = 1`).
                let attrs = if *b == BinaryOp::Rem {
                    vec![attr::int("fmod", 1)]
                } else {
                    vec![]
                };
                e.add(op, ins, vec![out], attrs);
                Ok(())
            }
            None => not_equal(e, id),
        },
        Op::Where => {
            let ins = broadcasting_operands(e, id)?;
            let out = e.out(id);
            e.add("Where", ins, vec![out], vec![]);
            Ok(())
        }
        Op::Cast(dt) => {
            let to = super::tensor::onnx_dtype(*dt) as i64;
            simple(e, id, "Cast", vec![attr::int("to", to)])
        }
        Op::Reduce { op, axes, keepdims } => reduce(e, id, *op, axes, *keepdims),
        Op::Reshape => reshape(e, id),
        Op::Permute(perm) => simple(e, id, "Transpose", vec![attr::ints("perm", perm.to_vec())]),
        Op::BroadcastTo => e.value(id).map(|_| ()),
        Op::Slice { begin } => slice(e, id, begin),
        Op::Pad { lo, hi } => {
            if n.ty.shape.dims().first() == Some(&Dim::Batch) && (lo[0] != 0 || hi[0] != 0) {
                return Err("padding the open batch axis".into());
            }
            let x = e.input(id, 0)?;
            let pads: Vec<i64> = lo.iter().chain(hi.iter()).map(|&p| p as i64).collect();
            let p = e.int64s(&format!("{}/pads", label(e, id)), &pads);
            let out = e.out(id);
            e.add("Pad", vec![x, p], vec![out], vec![]);
            Ok(())
        }
        Op::Concat { axis } => {
            let ins = (0..n.inputs.len())
                .map(|i| e.input(id, i))
                .collect::<R<Vec<_>>>()?;
            let out = e.out(id);
            e.add(
                "Concat",
                ins,
                vec![out],
                vec![attr::int("axis", *axis as i64)],
            );
            Ok(())
        }
        Op::MatMul => simple(e, id, "MatMul", vec![]),
        Op::Conv {
            kind,
            window,
            groups,
        } => conv(e, id, *kind, window, *groups),
        Op::Pool { kind, window } => pool(e, id, *kind, window),
        Op::StopGradient => {
            // An alias (the plan's): reached only if asked for directly.
            let v = e.input(id, 0)?;
            let out = e.out(id);
            e.add("Identity", vec![v], vec![out], vec![]);
            Ok(())
        }
        Op::Size { axes } => size(e, id, axes),
        Op::Assign | Op::Group => Err("a variable update is an effect, not a value: export \
             the values a model computes, not its train op"
            .into()),
        Op::AllReduce => Err(
            "an all-reduce is communication between training processes; \
             ONNX's default domain has no collective: export the one-process graph"
                .into(),
        ),
        Op::Fusion(_) => Err(
            "a fused kernel belongs to an optimized program: export the \
             graph as built"
                .into(),
        ),
    }
}

/// The node's kiln name or its op, for naming helper values.
fn label(e: &Emitter<'_>, id: NodeId) -> String {
    let n = e.d.node(id);
    match &n.name {
        Some(s) => s.to_string(),
        None => format!("{}_{}", n.op.name(), id.index()),
    }
}

/// One ONNX node of the same operands.
fn simple(e: &mut Emitter<'_>, id: NodeId, op: &str, attrs: Vec<AttributeProto>) -> R<()> {
    let ins = (0..e.d.node(id).inputs.len())
        .map(|i| e.input(id, i))
        .collect::<R<Vec<_>>>()?;
    let out = e.out(id);
    e.add(op, ins, vec![out], attrs);
    Ok(())
}

fn constant(e: &mut Emitter<'_>, id: NodeId, v: &Array) -> R<()> {
    let out = e.out(id);
    let t = super::tensor::tensor_proto("", v);
    let t = TensorProto { name: None, ..t };
    e.add(
        "Constant",
        vec![],
        vec![out],
        vec![attr::tensor("value", t)],
    );
    Ok(())
}

/// The operands of an elementwise node, with broadcasts left to ONNX where its numpy
/// broadcasting of their sources gives the node's shape.
fn broadcasting_operands(e: &mut Emitter<'_>, id: NodeId) -> R<Vec<String>> {
    let d = e.d;
    let n = d.node(id);
    let srcs: Vec<NodeId> = n
        .inputs
        .iter()
        .map(|&i| {
            let r = e.resolve(i);
            match d.node(r).op {
                Op::BroadcastTo => d.node(r).inputs[0],
                _ => i,
            }
        })
        .collect();
    let mut shape = d.node(srcs[0]).ty.shape.clone();
    let mut fits = true;
    for &s in &srcs[1..] {
        match broadcast_shapes(&shape, &d.node(s).ty.shape) {
            Ok(b) => shape = b,
            Err(_) => fits = false,
        }
    }
    let use_srcs = fits && shape == n.ty.shape;
    let pick: Vec<NodeId> = if use_srcs { srcs } else { n.inputs.to_vec() };
    pick.into_iter().map(|i| e.value(i)).collect()
}

/// `a != b` as `Equal(Cast(Equal(a, b), int32), 0)`: ONNX's `Not` would do, but kiln's
/// importer does not read it yet, and onnxruntime has no `Where` on booleans; this form runs
/// on both.
fn not_equal(e: &mut Emitter<'_>, id: NodeId) -> R<()> {
    let ins = broadcasting_operands(e, id)?;
    let base = label(e, id);
    let eq = e.fresh(&format!("{base}/equal"));
    e.add("Equal", ins, vec![eq.clone()], vec![]);
    let int = e.fresh(&format!("{base}/as_int"));
    let to = super::tensor::onnx_dtype(crate::dtype::DType::I32) as i64;
    e.add(
        "Cast",
        vec![eq],
        vec![int.clone()],
        vec![attr::int("to", to)],
    );
    let zero = e.fresh(&format!("{base}/zero"));
    let t = TensorProto {
        name: None,
        ..super::tensor::tensor_proto("", &Array::scalar(0i32))
    };
    e.add(
        "Constant",
        vec![],
        vec![zero.clone()],
        vec![attr::tensor("value", t)],
    );
    let out = e.out(id);
    e.add("Equal", vec![int, zero], vec![out], vec![]);
    Ok(())
}

/// A broadcast as `Expand`, its target shape an `int64` initializer, or built from the
/// batch input's `Shape` when the batch dimension is new.
pub(super) fn expand(e: &mut Emitter<'_>, id: NodeId) -> R<String> {
    let d = e.d;
    let n = d.node(id);
    let x_id = n.inputs[0];
    let (xs, out_s) = (d.node(x_id).ty.shape.clone(), n.ty.shape.clone());
    let x = e.value(x_id)?;
    let off = out_s.rank() - xs.rank().min(out_s.rank());
    let mut fixed = vec![];
    let mut needs_batch = false;
    for (k, d) in out_s.dims().iter().enumerate() {
        fixed.push(match d {
            Dim::Fixed(v) => *v as i64,
            Dim::Batch => {
                let inherited = k >= off && xs.dims()[k - off] == Dim::Batch;
                needs_batch |= !inherited;
                1
            }
        });
    }
    let base = label(e, id);
    let shape = if needs_batch {
        // Only the first axis can be the batch: [batch] ++ the rest.
        let src = e
            .batch_input()
            .ok_or("the broadcast makes a batch dimension, and no input has one")?;
        let b = e.fresh(&format!("{base}/batch"));
        e.add(
            "Shape",
            vec![src],
            vec![b.clone()],
            vec![attr::int("start", 0), attr::int("end", 1)],
        );
        let rest = e.int64s(&format!("{base}/dims"), &fixed[1..]);
        let s = e.fresh(&format!("{base}/shape"));
        e.add(
            "Concat",
            vec![b, rest],
            vec![s.clone()],
            vec![attr::int("axis", 0)],
        );
        s
    } else {
        e.int64s(&format!("{base}/shape"), &fixed)
    };
    let out = e.out(id);
    e.add("Expand", vec![x, shape], vec![out.clone()], vec![]);
    Ok(out)
}

fn reduce(e: &mut Emitter<'_>, id: NodeId, op: ReduceOp, axes: &[usize], keep: bool) -> R<()> {
    let x = e.input(id, 0)?;
    let out = e.out(id);
    if axes.is_empty() {
        e.add("Identity", vec![x], vec![out], vec![]);
        return Ok(());
    }
    let keep = attr::int("keepdims", i64::from(keep));
    match op {
        // ReduceSum takes its axes as an input from opset 13.
        ReduceOp::Sum => {
            let a: Vec<i64> = axes.iter().map(|&v| v as i64).collect();
            let a = e.int64s(&format!("{out}/axes"), &a);
            e.add("ReduceSum", vec![x, a], vec![out], vec![keep]);
        }
        // ReduceMax, as an attribute until opset 18.
        ReduceOp::Max => {
            let a = attr::ints("axes", axes.iter().copied());
            e.add("ReduceMax", vec![x], vec![out], vec![a, keep]);
        }
    }
    Ok(())
}

/// `Reshape` to the node's shape: the batch as `-1`, a zero size kept with `allowzero`.
fn reshape(e: &mut Emitter<'_>, id: NodeId) -> R<()> {
    let s = e.d.node(id).ty.shape.clone();
    let dims: Vec<i64> = s
        .dims()
        .iter()
        .map(|d| d.fixed().map_or(-1, |v| v as i64))
        .collect();
    let zero = dims.contains(&0);
    if zero && dims.contains(&-1) {
        return Err(
            "a reshape to an empty shape with the open batch dimension (ONNX cannot \
             infer -1 beside a 0)"
                .into(),
        );
    }
    let x = e.input(id, 0)?;
    let sh = e.int64s(&format!("{}/shape", label(e, id)), &dims);
    let out = e.out(id);
    let attrs = if zero {
        vec![attr::int("allowzero", 1)]
    } else {
        vec![]
    };
    e.add("Reshape", vec![x, sh], vec![out], attrs);
    Ok(())
}

fn slice(e: &mut Emitter<'_>, id: NodeId, begin: &[usize]) -> R<()> {
    let d = e.d;
    let n = d.node(id);
    let xs = d.node(n.inputs[0]).ty.shape.clone();
    let (mut starts, mut ends, mut axes) = (vec![], vec![], vec![]);
    for (a, (&b, d)) in begin.iter().zip(n.ty.shape.dims()).enumerate() {
        match d {
            Dim::Batch if b == 0 => {} // the whole open axis
            Dim::Batch => return Err("slicing the open batch axis".into()),
            Dim::Fixed(size) if b == 0 && xs.dims()[a] == Dim::Fixed(*size) => {}
            Dim::Fixed(size) => {
                starts.push(b as i64);
                ends.push((b + size) as i64);
                axes.push(a as i64);
            }
        }
    }
    let x = e.input(id, 0)?;
    if axes.is_empty() {
        let out = e.out(id);
        e.add("Identity", vec![x], vec![out], vec![]);
        return Ok(());
    }
    let base = label(e, id);
    let s = e.int64s(&format!("{base}/starts"), &starts);
    let en = e.int64s(&format!("{base}/ends"), &ends);
    let ax = e.int64s(&format!("{base}/axes"), &axes);
    let out = e.out(id);
    e.add("Slice", vec![x, s, en, ax], vec![out], vec![]);
    Ok(())
}

/// The window attributes of ONNX's Conv and pools (`pads` as begins then ends).
fn window_attrs(w: &Window2d, dilations: bool) -> Vec<AttributeProto> {
    let mut v = vec![
        attr::ints("kernel_shape", w.kernel),
        attr::ints("strides", w.strides),
        attr::ints("pads", [w.pad_lo[0], w.pad_lo[1], w.pad_hi[0], w.pad_hi[1]]),
    ];
    if dilations {
        v.push(attr::ints("dilations", w.dilations));
    }
    v
}

fn transpose(e: &mut Emitter<'_>, x: String, perm: [usize; 4], base: &str) -> String {
    let t = e.fresh(base);
    e.add(
        "Transpose",
        vec![x],
        vec![t.clone()],
        vec![attr::ints("perm", perm)],
    );
    t
}

/// The NCHW result `y` of node `id`'s ONNX op, back to NHWC as the node's value.
fn back_to_nhwc(e: &mut Emitter<'_>, id: NodeId, y: String) {
    let out = e.out(id);
    e.add(
        "Transpose",
        vec![y],
        vec![out],
        vec![attr::ints("perm", TO_NHWC)],
    );
}

fn conv(e: &mut Emitter<'_>, id: NodeId, kind: ConvKind, w: &Window2d, groups: usize) -> R<()> {
    let base = label(e, id);
    let d = e.d;
    let f_id = d.node(id).inputs[1];
    let (op, mut attrs) = match kind {
        ConvKind::Forward => ("Conv", window_attrs(w, true)),
        ConvKind::InputGrad { input_hw } => {
            // ConvTranspose's output is s·(in−1) + output_padding + extent − begin − end:
            // the end padding (or output padding) that gives the forward input's size.
            let dy = d.node(d.node(id).inputs[0]).ty.shape.clone();
            let mut win = w.clone();
            let mut out_pad = [0usize; 2];
            for a in 0..2 {
                let inn = dy.dims()[1 + a].fixed().ok_or("an open spatial size")?;
                let ext = w.dilations[a] * (w.kernel[a] - 1) + 1;
                let full = (w.strides[a] * (inn - 1) + ext) as i64;
                let r = full - w.pad_lo[a] as i64 - input_hw[a] as i64;
                if r >= 0 {
                    win.pad_hi[a] = r as usize;
                } else {
                    win.pad_hi[a] = 0;
                    out_pad[a] = (-r) as usize;
                }
            }
            let mut v = window_attrs(&win, true);
            if out_pad != [0, 0] {
                v.push(attr::ints("output_padding", out_pad));
            }
            ("ConvTranspose", v)
        }
        ConvKind::FilterGrad => {
            return Err(
                "a convolution's filter gradient is a training op (export the \
                 inference graph)"
                    .into(),
            )
        }
    };
    attrs.push(attr::int("group", groups as i64));
    let x = e.input(id, 0)?;
    let xt = transpose(e, x, TO_NCHW, &format!("{base}/nchw"));
    let f = e.value(f_id)?;
    let f = if e.oihw.contains(&e.resolve(f_id)) {
        f
    } else {
        transpose(e, f, TO_OIHW, &format!("{base}/oihw"))
    };
    let y = e.fresh(&format!("{base}/{}", op.to_lowercase()));
    e.add(op, vec![xt, f], vec![y.clone()], attrs);
    back_to_nhwc(e, id, y);
    Ok(())
}

fn pool(e: &mut Emitter<'_>, id: NodeId, kind: PoolKind, w: &Window2d) -> R<()> {
    let dilated = w.dilations != [1, 1];
    let (op, attrs) = match kind {
        PoolKind::Max => ("MaxPool", window_attrs(w, dilated)),
        PoolKind::Avg { count_include_pad } => {
            if dilated {
                return Err(format!(
                    "an average pool with dilations {:?}: ONNX's AveragePool has dilations \
                     from opset 19, and kiln exports opset {}",
                    w.dilations,
                    super::EXPORT_OPSET
                ));
            }
            let mut v = window_attrs(w, false);
            v.push(attr::int("count_include_pad", i64::from(count_include_pad)));
            ("AveragePool", v)
        }
        PoolKind::MaxGrad | PoolKind::MaxGather | PoolKind::AvgGrad { .. } => {
            return Err("a pooling gradient is a training op (export the inference graph)".into())
        }
    };
    let base = label(e, id);
    let x = e.input(id, 0)?;
    let xt = transpose(e, x, TO_NCHW, &format!("{base}/nchw"));
    let y = e.fresh(&format!("{base}/{}", op.to_lowercase()));
    e.add(op, vec![xt], vec![y.clone()], attrs);
    back_to_nhwc(e, id, y);
    Ok(())
}

/// `size`: a constant when the sizes are known, else the product of the input's `Shape`
/// at those axes, cast to the node's dtype.
fn size(e: &mut Emitter<'_>, id: NodeId, axes: &[usize]) -> R<()> {
    let d = e.d;
    let n = d.node(id);
    let xs = d.node(n.inputs[0]).ty.shape.clone();
    let dt = n.ty.dtype;
    let known: Option<usize> = axes.iter().map(|&a| xs.dims()[a].fixed()).product();
    if let Some(v) = known {
        return constant(e, id, &Array::from_f64(dt, vec![], vec![v as f64]));
    }
    let base = label(e, id);
    let x = e.input(id, 0)?;
    let s = e.fresh(&format!("{base}/shape"));
    e.add("Shape", vec![x], vec![s.clone()], vec![]);
    let idx: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
    let idx = e.int64s(&format!("{base}/axes"), &idx);
    let g = e.fresh(&format!("{base}/dims"));
    e.add(
        "Gather",
        vec![s, idx],
        vec![g.clone()],
        vec![attr::int("axis", 0)],
    );
    let p = e.fresh(&format!("{base}/count"));
    e.add(
        "ReduceProd",
        vec![g],
        vec![p.clone()],
        vec![attr::int("keepdims", 0)],
    );
    let to = super::tensor::onnx_dtype(dt) as i64;
    let out = e.out(id);
    e.add("Cast", vec![p], vec![out], vec![attr::int("to", to)]);
    Ok(())
}
