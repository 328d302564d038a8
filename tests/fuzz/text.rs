//! Target 2: the text parser on mutated dumps.
//!
//! The input is the dump of a random graph (from the graph target's generator) or one of the
//! seeds below (inputs that once broke the parser), changed by one to four mutations: a byte
//! flip, two tokens swapped, a number replaced by an extreme one, a line duplicated, deleted
//! or moved, an op renamed, a cut. The parser must return `Ok` or `Err` and never panic; a
//! graph it accepts must check, and dump → parse → dump must give the same text.

use super::{graphs, no_panic, Rng};
use kiln::prelude::*;

/// Inputs that once broke the parser (issue 16, item 6): the mutator starts from them too.
pub const SEEDS: [&str; 5] = [
    "kiln.graph {\n  %0 = assign() : f32[2]\n}\n",
    "kiln.graph {\n  %0 = constant(value=[]) : f32[4294967296,4294967296]\n}\n",
    "kiln.graph {\n  %0 = placeholder() : f32[2] \"x\"\n  %1 = pad(%0, lo=[0], hi=[18446744073709551615]) : f32[5]\n}\n",
    "kiln.graph {\n  %0 = placeholder() : f32[2] \"x\"\n  %1 = pad(%0, lo=[0], hi=[18446744073709551615]) : f32[1]\n}\n",
    "kiln.graph {\n  %0 = placeholder() : f32[?,8589934592,2147483648] \"x\"\n  %1 = reduce_sum(%0, axes=[0], keepdims=false) : f32[8589934592,2147483648]\n}\n",
];

const NUMBERS: [&str; 12] = [
    "4294967296",
    "4294967295",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-1",
    "0",
    "-0",
    "1e309",
    "nan",
    "99999999999999999999999999",
    "2147483648",
];

const OPS: [&str; 16] = [
    "assign",
    "group",
    "add",
    "matmul",
    "pad",
    "slice",
    "concat",
    "reshape",
    "permute",
    "broadcast_to",
    "reduce_sum",
    "where",
    "cast",
    "size",
    "constant",
    "placeholder",
];

/// Splits `s` into tokens: runs of identifier characters, and single other characters.
fn tokens(s: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.' || c == '-';
    for c in s.chars() {
        match out.last_mut() {
            Some(t) if word(c) && t.chars().all(word) => t.push(c),
            _ => out.push(c.to_string()),
        }
    }
    out
}

/// Applies one random mutation to `s`.
pub fn mutate(r: &mut Rng, s: &str) -> String {
    let mut t = tokens(s);
    let n = t.len().max(1);
    match r.below(9) {
        0 => {
            let mut b = s.as_bytes().to_vec();
            if !b.is_empty() {
                let i = r.below(b.len());
                b[i] = if r.one_in(2) {
                    b" %[](),:=?\"{}0123456789".to_vec()[r.below(22)]
                } else {
                    r.next() as u8
                };
            }
            return String::from_utf8_lossy(&b).into_owned();
        }
        1 if t.len() > 1 => {
            let (i, j) = (r.below(n), r.below(n));
            t.swap(i, j);
        }
        2 => {
            let nums: Vec<usize> = (0..t.len())
                .filter(|&i| t[i].chars().all(|c| c.is_ascii_digit()))
                .collect();
            if !nums.is_empty() {
                let i = r.pick(&nums);
                t[i] = r.pick(&NUMBERS).to_string();
            }
        }
        3..=5 => {
            let mut lines: Vec<&str> = s.lines().collect();
            if lines.is_empty() {
                return String::new();
            }
            let i = r.below(lines.len());
            match r.below(3) {
                0 => lines.insert(i, lines[i]),
                1 => {
                    lines.remove(i);
                }
                _ => {
                    let l = lines.remove(i);
                    lines.insert(r.below(lines.len() + 1), l);
                }
            }
            return lines.join("\n") + "\n";
        }
        6 => {
            let words: Vec<usize> = (0..t.len())
                .filter(|&i| t[i].chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .collect();
            if !words.is_empty() {
                let i = r.pick(&words);
                t[i] = r.pick(&OPS).to_string();
            }
        }
        7 => return s.chars().take(r.below(s.len() + 1)).collect(),
        _ => {
            let i = r.below(n);
            let ins = r.pick(&["%0", "%99", ",", "[", "]", "?", "f32", "i32[2]", ")"]);
            t.insert(i, ins.to_string());
        }
    }
    t.concat()
}

/// Every size of an accepted graph must be computable: each node's byte count, and each pad's
/// padded dimension, without overflowing `usize` (issue 16, item 1).
fn sizes_fit(g: &Graph) -> Result<(), String> {
    let d = g.data();
    for id in d.ids() {
        let n = d.node(id);
        let bytes =
            n.ty.shape
                .dims()
                .iter()
                .try_fold(n.ty.dtype.size_bytes(), |acc, dim| match dim {
                    Dim::Fixed(k) => acc.checked_mul(*k),
                    Dim::Batch => Some(acc),
                });
        if bytes.is_none() {
            return Err(format!(
                "accepted a shape whose byte count overflows: {}",
                n.ty
            ));
        }
        if let kiln::Op::Pad { lo, hi } = &n.op {
            let input = &d.node(n.inputs[0]).ty.shape;
            for (k, dim) in input.dims().iter().enumerate() {
                let k0 = dim.fixed().unwrap_or(0);
                let (l, h) = (
                    lo.get(k).copied().unwrap_or(0),
                    hi.get(k).copied().unwrap_or(0),
                );
                if k0.checked_add(l).and_then(|x| x.checked_add(h)).is_none() {
                    return Err(format!(
                        "accepted a pad whose width overflows: {lo:?} {hi:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Parses `text` and checks the promises; `Err` says which was broken.
pub fn check(text: &str) -> Result<(), String> {
    let parsed = no_panic("parse", || Graph::parse(text))?;
    let Ok(g) = parsed else { return Ok(()) };
    no_panic("check", || g.check())?.map_err(|e| format!("accepted, but check fails: {e}"))?;
    sizes_fit(&g)?;
    let d1 = no_panic("dump", || g.dump())?;
    let g2 = no_panic("re-parse", || Graph::parse(&d1))?
        .map_err(|e| format!("round trip: the dump does not parse: {e}\n{d1}"))?;
    let d2 = no_panic("dump", || g2.dump())?;
    if d1 != d2 {
        return Err(format!("round trip: dump changed\n{d1}\nvs\n{d2}"));
    }
    Ok(())
}

/// The target: one mutated dump.
pub fn case(seed: u64) -> Result<(), String> {
    let mut r = Rng::new(seed);
    let base = if r.one_in(8) {
        r.pick(&SEEDS).to_string()
    } else {
        // Without the graph target's rare long chain: a dump of thousands of lines would
        // slow this target for no new parser path.
        let plan = graphs::Plan {
            deep: 0,
            ..graphs::Plan::new(r.next())
        };
        graphs::build(&plan).g.dump()
    };
    let mut text = base;
    for _ in 0..1 + r.below(4) {
        text = mutate(&mut r, &text);
    }
    check(&text).map_err(|e| format!("{e}\ninput:\n{text}"))
}
