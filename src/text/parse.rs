//! The dump parser: text back to a graph.
//!
//! Every instruction is rebuilt with [`GraphData::add_node`], so every shape rule runs again
//! and must agree with the type written on the line; a dump that was edited into nonsense is
//! an [`Error::Parse`] naming the line, never a panic and never a graph that lies about its
//! types. The parser scans characters with a cursor and never indexes into the middle of a
//! UTF-8 sequence.

use super::cursor::Cursor;
use crate::array::{Array, ConstValue, FloatAttr};
use crate::dtype::DType;
use crate::error::{Error, Result, SrcLoc};
use crate::graph::op::{Axes, Op, OpKind, PoolKind, RandomDist, Ty, Window2d};
use crate::graph::{Graph, GraphData, NodeId};
use crate::init::{Init, KernelLayout};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A parsed dump: the graph, the `return` line's nodes, and the `%N` numbering.
#[derive(Debug)]
pub struct Parsed {
    /// The rebuilt graph.
    pub graph: Graph,
    /// The nodes named by the `return` line (empty if there is none).
    pub outputs: Vec<NodeId>,
    /// `%N` of the text to the node it became.
    pub numbering: BTreeMap<usize, NodeId>,
}

/// Parses the canonical dump format (see [`crate::text`]).
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(4)]);
/// let _ = (x.exp() * 2.0).sum(&[1], false);
/// let text = g.dump();
/// let back = kiln::text::parse(&text).unwrap();
/// assert_eq!(back.graph.dump(), text);
///
/// let err = kiln::text::parse("kiln.graph {\n  %0 = exp() : f32[2]\n}\n").unwrap_err();
/// assert_eq!(err.to_string(), "parse error at line 2: exp: takes a different number of operands, got 0");
/// ```
pub fn parse(text: &str) -> Result<Parsed> {
    let mut g = GraphData::new();
    let mut numbering: BTreeMap<usize, NodeId> = BTreeMap::new();
    let mut outputs = vec![];
    let mut state = State::Header;
    let mut last_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        last_line = line_no;
        let err = |msg: String| Error::Parse { line: line_no, msg };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match state {
            State::Header => {
                let rest = line
                    .strip_prefix("kiln.graph")
                    .map(str::trim)
                    .ok_or_else(|| err("expected `kiln.graph {`".into()))?;
                if rest != "{" {
                    return Err(err("expected `kiln.graph {`".into()));
                }
                state = State::Body;
            }
            State::Body if line == "}" => state = State::Done,
            State::Body if line.starts_with("return") => {
                if !outputs.is_empty() {
                    return Err(err("a second `return` line".into()));
                }
                let mut c = Cursor::new(&line["return".len()..]);
                loop {
                    c.ws();
                    let n = c.percent_number().map_err(&err)?;
                    let id = *numbering
                        .get(&n)
                        .ok_or_else(|| err(format!("%{n} is not defined")))?;
                    outputs.push(id);
                    c.ws();
                    if c.eat(',') {
                        continue;
                    }
                    if !c.at_end() {
                        return Err(err("expected `,` or the end of the line".into()));
                    }
                    break;
                }
            }
            State::Body => {
                let (n, id) = instruction(&mut g, &numbering, line).map_err(err)?;
                if numbering.insert(n, id).is_some() {
                    return Err(err(format!("%{n} is defined twice")));
                }
            }
            State::Done => return Err(err("text after the closing `}`".into())),
        }
    }
    if state != State::Done {
        return Err(Error::Parse {
            line: last_line.max(1),
            msg: "unexpected end of text: the graph is not closed with `}`".into(),
        });
    }
    Ok(Parsed {
        graph: Graph::from_data(g),
        outputs,
        numbering,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Body,
    Done,
}

/// Parses one instruction line and adds its node.
fn instruction(
    g: &mut GraphData,
    numbering: &BTreeMap<usize, NodeId>,
    line: &str,
) -> Result<(usize, NodeId), String> {
    let mut c = Cursor::new(line);
    let n = c.percent_number()?;
    c.ws();
    c.expect('=')?;
    c.ws();
    let op_name = c.ident();
    if op_name.is_empty() {
        return Err("expected an op name".into());
    }
    c.expect('(')?;
    let mut inputs: Vec<NodeId> = vec![];
    let mut attrs: Vec<(String, String)> = vec![];
    c.ws();
    if !c.eat(')') {
        loop {
            c.ws();
            if c.peek() == Some('%') {
                if !attrs.is_empty() {
                    return Err("operands must come before attributes".into());
                }
                let k = c.percent_number()?;
                let id = *numbering
                    .get(&k)
                    .ok_or_else(|| format!("operand %{k} is not defined before its use"))?;
                inputs.push(id);
            } else {
                let key = c.ident();
                if key.is_empty() {
                    return Err("expected an operand `%N` or an attribute `key=value`".into());
                }
                c.expect('=')?;
                let value = c.balanced()?;
                if attrs.iter().any(|(k, _)| k == key) {
                    return Err(format!("attribute `{key}` given twice"));
                }
                attrs.push((key.to_string(), value.trim().to_string()));
            }
            c.ws();
            if c.eat(',') {
                continue;
            }
            c.expect(')')?;
            break;
        }
    }
    c.ws();
    c.expect(':')?;
    c.ws();
    let ty = c.ty()?;
    c.ws();
    let name = if c.peek() == Some('"') {
        Some(c.string()?)
    } else {
        None
    };
    c.ws();
    let loc = if c.eat('@') {
        Some(location(c.rest_before_comment())?)
    } else {
        None
    };
    c.ws();
    if !(c.at_end() || c.peek() == Some('#')) {
        return Err(format!("unexpected text `{}`", c.rest()));
    }

    let op = build_op(op_name, &attrs, &ty)?;
    let op_label = op.name();
    let before = g.errors().len();
    let id = g.add_node(op, &inputs, Some(ty), name.clone(), loc);
    if g.is_invalid(id) {
        return Err(match g.errors().get(before) {
            Some(Error::Graph { msg, .. }) => format!("{op_label}: {msg}"),
            Some(e) => e.to_string(),
            None => format!("{op_label}: an operand is invalid"),
        });
    }
    if let Some(want) = name {
        if g.node(id).name.as_deref() != Some(want.as_str()) {
            return Err(format!("the name {want:?} is used twice"));
        }
    }
    Ok((n, id))
}

const FUSION_REFUSED: &str = "fusion nodes are compiler output and do not parse back; \
     dump the graph before the fusion pass";

/// Builds the op from its name and attributes: the name is looked up in the op table
/// ([`OpKind::from_name`]), exactly the kind's [`OpKind::attr_keys`] must be present, and one
/// exhaustive `match` over [`OpKind`] reads their values. An unknown name is an error.
fn build_op(name: &str, attrs: &[(String, String)], ty: &Ty) -> Result<Op, String> {
    let kind = OpKind::from_name(name).ok_or_else(|| format!("unknown op `{name}`"))?;
    if kind == OpKind::Fusion {
        return Err(FUSION_REFUSED.into());
    }
    let keys = kind.attr_keys();
    for (k, _) in attrs {
        if !keys.contains(&k.as_str()) {
            return Err(format!("{name}: unknown attribute `{k}`"));
        }
    }
    let get = |key: &str| -> Result<&str, String> {
        attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("{name}: missing attribute `{key}`"))
    };
    for k in keys {
        get(k)?;
    }
    let a = |e: String| format!("{name}: {e}");
    let float_attr =
        |key: &str| -> Result<FloatAttr, String> { Ok(FloatAttr(float(get(key)?).map_err(a)?)) };
    let list_attr = |key: &str| -> Result<Axes, String> { list(get(key)?).map_err(a) };
    Ok(match kind {
        OpKind::Placeholder => Op::Placeholder,
        OpKind::Variable => Op::Variable {
            init: init(get("init")?).map_err(a)?,
        },
        OpKind::Constant => Op::Constant(ConstValue(Arc::new(
            constant(get("value")?, ty).map_err(a)?,
        ))),
        OpKind::RandomUniform => Op::Random {
            dist: RandomDist::Uniform {
                low: float_attr("low")?,
                high: float_attr("high")?,
            },
            seed: int(get("seed")?).map_err(a)?,
        },
        OpKind::RandomNormal => Op::Random {
            dist: RandomDist::Normal {
                mean: float_attr("mean")?,
                std: float_attr("std")?,
            },
            seed: int(get("seed")?).map_err(a)?,
        },
        OpKind::Unary(u) => Op::Unary(u),
        OpKind::Binary(b) => Op::Binary(b),
        OpKind::Where => Op::Where,
        OpKind::Cast => {
            let to = get("to")?;
            Op::Cast(DType::from_name(to).ok_or_else(|| a(format!("unknown dtype `{to}`")))?)
        }
        OpKind::Reduce(op) => Op::Reduce {
            op,
            axes: list_attr("axes")?,
            keepdims: match get("keepdims")? {
                "true" => true,
                "false" => false,
                v => return Err(a(format!("keepdims must be true or false, got `{v}`"))),
            },
        },
        OpKind::Reshape => Op::Reshape,
        OpKind::Permute => Op::Permute(list_attr("perm")?),
        OpKind::BroadcastTo => Op::BroadcastTo,
        OpKind::Slice => Op::Slice {
            begin: list_attr("begin")?,
        },
        OpKind::Pad => Op::Pad {
            lo: list_attr("lo")?,
            hi: list_attr("hi")?,
        },
        OpKind::Concat => Op::Concat {
            axis: int(get("axis")?).map_err(a)?,
        },
        OpKind::MatMul => Op::MatMul,
        OpKind::Conv2d | OpKind::Conv2dInputGrad | OpKind::Conv2dFilterGrad => {
            let pair = |key: &str| -> Result<[usize; 2], String> {
                match list_attr(key)?.as_slice() {
                    &[a, b] => Ok([a, b]),
                    v => Err(a(format!("`{key}` must have two entries, got {v:?}"))),
                }
            };
            crate::graph::op::conv_from_attrs(kind, &pair, int(get("groups")?).map_err(a)?)?
        }
        OpKind::StopGradient => Op::StopGradient,
        OpKind::Size => Op::Size {
            axes: list_attr("axes")?,
        },
        OpKind::Assign => Op::Assign,
        OpKind::Group => Op::Group,
        OpKind::AllReduce => Op::AllReduce,
        OpKind::MaxPool2d
        | OpKind::AvgPool2d
        | OpKind::MaxPool2dGrad
        | OpKind::MaxPool2dGather
        | OpKind::AvgPool2dGrad => {
            pool(kind, &|k| get(k).map(str::to_string), &list_attr).map_err(a)?
        }
        OpKind::Fusion => return Err(FUSION_REFUSED.into()),
    })
}

/// A pooling op from its attributes (the keys are the kind's, already checked present).
fn pool(
    kind: OpKind,
    get: &dyn Fn(&str) -> Result<String, String>,
    list_attr: &dyn Fn(&str) -> Result<Axes, String>,
) -> Result<Op, String> {
    let pair = |key: &str| -> Result<[usize; 2], String> {
        let v = list_attr(key)?;
        <[usize; 2]>::try_from(v.as_slice())
            .map_err(|_| format!("`{key}` must list 2 sizes, got {v:?}"))
    };
    let flag = |key: &str| -> Result<bool, String> {
        match get(key)?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(format!("{key} must be true or false, got `{v}`")),
        }
    };
    let window = Window2d {
        kernel: pair("kernel")?,
        strides: pair("strides")?,
        dilations: pair("dilations")?,
        pad_lo: pair("pad_lo")?,
        pad_hi: pair("pad_hi")?,
    };
    let kind = match kind {
        OpKind::MaxPool2d => PoolKind::Max,
        OpKind::AvgPool2d => PoolKind::Avg {
            count_include_pad: flag("count_include_pad")?,
        },
        OpKind::MaxPool2dGrad => PoolKind::MaxGrad,
        OpKind::MaxPool2dGather => PoolKind::MaxGather,
        OpKind::AvgPool2dGrad => PoolKind::AvgGrad {
            count_include_pad: flag("count_include_pad")?,
            input_hw: pair("input_hw")?,
        },
        _ => return Err(format!("{} is not a pooling op", kind.name())),
    };
    Ok(Op::Pool { kind, window })
}

fn float(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("`{s}` is not a number"))
}

fn int<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim()
        .parse::<T>()
        .map_err(|_| format!("`{s}` is not a non-negative integer in range"))
}

/// `[1,2,3]` (spaces allowed) into a list of indices.
fn list(s: &str) -> Result<Axes, String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("expected a list `[a,b,...]`, got `{s}`"))?;
    if inner.trim().is_empty() {
        return Ok(Axes::new());
    }
    inner.split(',').map(int::<usize>).collect()
}

/// An initializer as [`Init::describe`] writes it.
fn init(s: &str) -> Result<Init, String> {
    let s = s.trim();
    let (kw, args) = match s.find('(') {
        Some(p) => {
            let inner = s[p + 1..]
                .strip_suffix(')')
                .ok_or_else(|| format!("unclosed `(` in `{s}`"))?;
            (&s[..p], inner)
        }
        None => (s, ""),
    };
    let mut pos: Vec<f64> = vec![];
    let mut seed: Option<u64> = None;
    let mut layout: Option<KernelLayout> = None;
    for part in args.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(v) = part.strip_prefix("seed=") {
            seed = Some(int(v)?);
        } else if let Some(v) = part.strip_prefix("layout=") {
            layout =
                Some(KernelLayout::from_name(v).ok_or_else(|| {
                    format!("unknown kernel layout `{v}` in `{s}` (hwio or oihw)")
                })?);
        } else {
            pos.push(float(part)?);
        }
    }
    let bad = || format!("initializer `{s}` has the wrong arguments");
    let need = |n: usize, seeded: bool| {
        if pos.len() == n && seed.is_some() == seeded && layout.is_none() {
            Ok(())
        } else {
            Err(bad())
        }
    };
    let sd = || seed.unwrap_or(0);
    Ok(match kw {
        "zeros" => {
            need(0, false)?;
            Init::Zeros
        }
        "ones" => {
            need(0, false)?;
            Init::Ones
        }
        "constant" => {
            need(1, false)?;
            Init::Constant(FloatAttr(pos[0]))
        }
        "uniform" | "normal" | "truncated_normal" => {
            need(2, true)?;
            let (x, y) = (FloatAttr(pos[0]), FloatAttr(pos[1]));
            match kw {
                "uniform" => Init::Uniform {
                    low: x,
                    high: y,
                    seed: sd(),
                },
                "normal" => Init::Normal {
                    mean: x,
                    std: y,
                    seed: sd(),
                },
                _ => Init::TruncatedNormal {
                    mean: x,
                    std: y,
                    seed: sd(),
                },
            }
        }
        _ => match crate::init::scaled_by_name(kw, sd(), layout.unwrap_or_default()) {
            // A variance-scaling initializer: a seed, and a layout if not Keras'.
            Some(i) if pos.is_empty() && seed.is_some() => i,
            Some(_) => return Err(bad()),
            None => return Err(format!("unknown initializer `{kw}`")),
        },
    })
}

/// A constant's value: a scalar literal or a flat list, typed by the line's declared type.
fn constant(s: &str, ty: &Ty) -> Result<Array, String> {
    let shape = ty
        .shape
        .to_fixed()
        .ok_or_else(|| format!("a constant's shape must be fixed, got {}", ty.shape))?;
    let s = s.trim();
    let items: Vec<&str> = match s.strip_prefix('[') {
        Some(r) => {
            let inner = r
                .strip_suffix(']')
                .ok_or_else(|| format!("unclosed `[` in `{s}`"))?;
            if inner.trim().is_empty() {
                vec![]
            } else {
                inner.split(',').map(str::trim).collect()
            }
        }
        None => vec![s],
    };
    let numel = crate::shape::checked_bytes(&shape, ty.dtype)
        .and_then(|_| crate::shape::checked_numel(&shape))
        .ok_or_else(|| format!("the type {ty} holds more bytes than memory can address"))?;
    if items.len() != numel || (shape.is_empty() && s.starts_with('[')) {
        return Err(format!(
            "the value has {} elements, the type {ty} needs {numel}",
            items.len()
        ));
    }
    let bad = |x: &str| format!("`{x}` is not a {} literal", ty.dtype);
    fn all<T: crate::array::Element + std::str::FromStr>(
        shape: &[usize],
        items: &[&str],
        bad: impl Fn(&str) -> String,
    ) -> Result<crate::Result<Array>, String> {
        let v = items
            .iter()
            .map(|x| x.parse::<T>().map_err(|_| bad(x)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Array::new(shape, v))
    }
    let arr = match ty.dtype {
        DType::I64 => all::<i64>(&shape, &items, bad)?,
        DType::I8 => all::<i8>(&shape, &items, bad)?,
        DType::U8 => all::<u8>(&shape, &items, bad)?,
        DType::F16 => all::<half::f16>(&shape, &items, bad)?,
        DType::BF16 => all::<half::bf16>(&shape, &items, bad)?,
        DType::F32 => Array::new(
            &shape,
            items
                .iter()
                .map(|x| x.parse::<f32>().map_err(|_| bad(x)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        DType::F64 => Array::new(
            &shape,
            items
                .iter()
                .map(|x| x.parse::<f64>().map_err(|_| bad(x)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        DType::I32 => Array::new(
            &shape,
            items
                .iter()
                .map(|x| x.parse::<i32>().map_err(|_| bad(x)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        DType::Bool => Array::new(
            &shape,
            items
                .iter()
                .map(|x| match *x {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(bad(x)),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    arr.map_err(|e| e.to_string())
}

/// `file:line:col`; the file may itself contain `:`.
fn location(s: &str) -> Result<SrcLoc, String> {
    let s = s.trim();
    let mut parts = s.rsplitn(3, ':');
    let col = parts.next().and_then(|c| c.parse::<u32>().ok());
    let line = parts.next().and_then(|c| c.parse::<u32>().ok());
    let file = parts.next().filter(|f| !f.is_empty());
    match (file, line, col) {
        (Some(file), Some(line), Some(col)) => Ok(SrcLoc {
            file: Arc::from(file),
            line,
            col,
        }),
        _ => Err(format!("expected a location `file:line:col`, got `{s}`")),
    }
}
