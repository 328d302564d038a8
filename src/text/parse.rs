//! The dump parser: text back to a graph.
//!
//! Every instruction is rebuilt with [`GraphData::add_node`], so every shape rule runs again
//! and must agree with the type written on the line; a dump that was edited into nonsense is
//! an [`Error::Parse`] naming the line, never a panic and never a graph that lies about its
//! types. The parser scans characters with a cursor and never indexes into the middle of a
//! UTF-8 sequence.

use crate::array::{Array, ConstValue, FloatAttr};
use crate::dtype::DType;
use crate::error::{Error, Result, SrcLoc};
use crate::graph::op::{Axes, BinaryOp, Op, RandomDist, ReduceOp, Ty, UnaryOp};
use crate::graph::{Graph, GraphData, NodeId};
use crate::init::Init;
use crate::shape::{Dim, Shape};
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

/// Builds the op from its name and attributes, checking that exactly the expected attributes
/// are present.
fn build_op(name: &str, attrs: &[(String, String)], ty: &Ty) -> Result<Op, String> {
    let get = |key: &str| -> Result<&str, String> {
        attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("{name}: missing attribute `{key}`"))
    };
    let expect = |keys: &[&str]| -> Result<(), String> {
        for (k, _) in attrs {
            if !keys.contains(&k.as_str()) {
                return Err(format!("{name}: unknown attribute `{k}`"));
            }
        }
        Ok(())
    };
    let a = |e: String| format!("{name}: {e}");
    if let Some(u) = UnaryOp::ALL.iter().find(|u| u.name() == name) {
        expect(&[])?;
        return Ok(Op::Unary(*u));
    }
    if let Some(b) = BinaryOp::ALL.iter().find(|b| b.name() == name) {
        expect(&[])?;
        return Ok(Op::Binary(*b));
    }
    let op = match name {
        "placeholder" | "where" | "reshape" | "broadcast_to" | "matmul" | "stop_gradient"
        | "assign" | "group" => {
            expect(&[])?;
            match name {
                "placeholder" => Op::Placeholder,
                "where" => Op::Where,
                "reshape" => Op::Reshape,
                "broadcast_to" => Op::BroadcastTo,
                "matmul" => Op::MatMul,
                "assign" => Op::Assign,
                "group" => Op::Group,
                _ => Op::StopGradient,
            }
        }
        "variable" => {
            expect(&["init"])?;
            Op::Variable {
                init: init(get("init")?).map_err(a)?,
            }
        }
        "constant" => {
            expect(&["value"])?;
            Op::Constant(ConstValue(Arc::new(
                constant(get("value")?, ty).map_err(a)?,
            )))
        }
        "random_uniform" => {
            expect(&["low", "high", "seed"])?;
            Op::Random {
                dist: RandomDist::Uniform {
                    low: FloatAttr(float(get("low")?).map_err(a)?),
                    high: FloatAttr(float(get("high")?).map_err(a)?),
                },
                seed: int(get("seed")?).map_err(a)?,
            }
        }
        "random_normal" => {
            expect(&["mean", "std", "seed"])?;
            Op::Random {
                dist: RandomDist::Normal {
                    mean: FloatAttr(float(get("mean")?).map_err(a)?),
                    std: FloatAttr(float(get("std")?).map_err(a)?),
                },
                seed: int(get("seed")?).map_err(a)?,
            }
        }
        "cast" => {
            expect(&["to"])?;
            let to = get("to")?;
            Op::Cast(DType::from_name(to).ok_or_else(|| a(format!("unknown dtype `{to}`")))?)
        }
        "reduce_sum" | "reduce_max" => {
            expect(&["axes", "keepdims"])?;
            let keepdims = match get("keepdims")? {
                "true" => true,
                "false" => false,
                v => return Err(a(format!("keepdims must be true or false, got `{v}`"))),
            };
            Op::Reduce {
                op: if name == "reduce_sum" {
                    ReduceOp::Sum
                } else {
                    ReduceOp::Max
                },
                axes: list(get("axes")?).map_err(a)?,
                keepdims,
            }
        }
        "permute" => {
            expect(&["perm"])?;
            Op::Permute(list(get("perm")?).map_err(a)?)
        }
        "slice" => {
            expect(&["begin"])?;
            Op::Slice {
                begin: list(get("begin")?).map_err(a)?,
            }
        }
        "pad" => {
            expect(&["lo", "hi"])?;
            Op::Pad {
                lo: list(get("lo")?).map_err(a)?,
                hi: list(get("hi")?).map_err(a)?,
            }
        }
        "concat" => {
            expect(&["axis"])?;
            Op::Concat {
                axis: int(get("axis")?).map_err(a)?,
            }
        }
        "size" => {
            expect(&["axes"])?;
            Op::Size {
                axes: list(get("axes")?).map_err(a)?,
            }
        }
        "fusion" => {
            return Err("fusion nodes are compiler output and do not parse back; \
                 dump the graph before the fusion pass"
                .into())
        }
        _ => return Err(format!("unknown op `{name}`")),
    };
    Ok(op)
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
    for part in args.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(v) = part.strip_prefix("seed=") {
            seed = Some(int(v)?);
        } else {
            pos.push(float(part)?);
        }
    }
    let bad = || format!("initializer `{s}` has the wrong arguments");
    let need = |n: usize, seeded: bool| {
        if pos.len() == n && seed.is_some() == seeded {
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
        "glorot_uniform" | "glorot_normal" | "he_uniform" | "he_normal" => {
            need(0, true)?;
            match kw {
                "glorot_uniform" => Init::GlorotUniform { seed: sd() },
                "glorot_normal" => Init::GlorotNormal { seed: sd() },
                "he_uniform" => Init::HeUniform { seed: sd() },
                _ => Init::HeNormal { seed: sd() },
            }
        }
        _ => return Err(format!("unknown initializer `{kw}`")),
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
    let numel: usize = shape.iter().product();
    if items.len() != numel || (shape.is_empty() && s.starts_with('[')) {
        return Err(format!(
            "the value has {} elements, the type {ty} needs {numel}",
            items.len()
        ));
    }
    let bad = |x: &str| format!("`{x}` is not a {} literal", ty.dtype);
    let arr = match ty.dtype {
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

/// A scanner over one line. Positions are byte offsets that always sit on char boundaries.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s, pos: 0 }
    }
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(match self.peek() {
                Some(got) => format!("expected `{c}`, found `{got}`"),
                None => format!("expected `{c}`, found the end of the line"),
            })
        }
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.pos]
    }
    fn ident(&mut self) -> &'a str {
        self.take_while(|c| c.is_ascii_alphanumeric() || c == '_')
    }
    fn number(&mut self) -> Result<usize, String> {
        let d = self.take_while(|c| c.is_ascii_digit());
        d.parse::<usize>()
            .map_err(|_| format!("expected a number, found `{}`", self.rest()))
    }
    fn percent_number(&mut self) -> Result<usize, String> {
        self.expect('%')?;
        self.number()
    }
    /// An attribute value: everything up to the next top-level `,` or `)`.
    fn balanced(&mut self) -> Result<&'a str, String> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' if depth > 0 => depth -= 1,
                ')' | ',' if depth == 0 => break,
                ']' => return Err("unbalanced `]`".into()),
                _ => {}
            }
            self.bump();
        }
        if depth != 0 || self.at_end() {
            return Err("an attribute value is not closed".into());
        }
        Ok(&self.s[start..self.pos])
    }
    /// `f32[?,784]`
    fn ty(&mut self) -> Result<Ty, String> {
        let d = self.ident();
        let dtype = DType::from_name(d).ok_or_else(|| format!("unknown dtype `{d}`"))?;
        self.expect('[')?;
        let mut dims: Vec<Dim> = vec![];
        self.ws();
        if !self.eat(']') {
            loop {
                self.ws();
                if self.eat('?') {
                    dims.push(Dim::Batch);
                } else {
                    dims.push(Dim::Fixed(self.number()?));
                }
                self.ws();
                if self.eat(',') {
                    continue;
                }
                self.expect(']')?;
                break;
            }
        }
        Ok(Ty {
            dtype,
            shape: Shape(dims.into_iter().collect()),
        })
    }
    /// A string literal as Rust's `{:?}` writes it.
    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated string".into()),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('0') => out.push('\0'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('\'') => out.push('\''),
                    Some('u') => {
                        self.expect('{')?;
                        let hex = self.take_while(|c| c.is_ascii_hexdigit());
                        self.expect('}')?;
                        let ch = u32::from_str_radix(hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("bad escape `\\u{{{hex}}}`"))?;
                        out.push(ch);
                    }
                    Some(c) => return Err(format!("unknown escape `\\{c}`")),
                    None => return Err("unterminated string".into()),
                },
                Some(c) => out.push(c),
            }
        }
    }
    /// The rest of the line up to a `#` comment, consumed.
    fn rest_before_comment(&mut self) -> &'a str {
        self.take_while(|c| c != '#')
    }
}
