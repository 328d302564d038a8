//! `model.txt`: the text half of a saved model (the graph and the variables are the others).
//!
//! One record per line: a keyword, then tokens separated by spaces; a token is a bare word
//! (`42`, `from_logits=true`) or a quoted string with Rust's escapes (`"dense_1"`). Nodes are
//! named by their index in the `return` line of `graph.kiln`, which lists every node the
//! model needs in a fixed order (inputs, outputs, the training switch, weights, ...): a
//! graph dump numbers its nodes anew, so these indices are how a role survives the trip.
//!
//! ```text
//! kiln.model 1
//! name "sequential"
//! seed 42
//! inputs 0
//! outputs 1
//! training 2
//! weights 3 4
//! trainable 3 4
//! updates
//! losses
//! layer "dense" "Dense" "(None, 3)" 15 15
//! loss sparse_categorical_crossentropy from_logits=true
//! target 5
//! loss_node 6
//! train 7
//! metric "accuracy" 8 accuracy
//! optimizer "adam" 9 10 learning_rate=0.01
//! ```
//!
//! Losses and metrics are written by kind (`huber delta=1.0`); `f64`s in Rust's shortest
//! round-trip form, so they read back bit for bit. A custom loss or metric is written as
//! `custom name="..."`: its code is not data, but what it computes is already in the graph.

use super::super::losses::{Loss, Metric};
use crate::error::{Error, Result};
use std::fmt::Write as _;

/// The first line's keyword.
pub(super) const MAGIC: &str = "kiln.model";
/// The format version this kiln writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A summary row of one layer.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct LayerRow {
    pub name: String,
    pub kind: String,
    pub shape: String,
    pub params: usize,
    pub trainable: usize,
}

/// What `compile` chose, with the nodes it added (indices into the return line).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CompileCfg {
    pub loss: Loss,
    pub target: usize,
    pub loss_node: usize,
    pub train: usize,
    /// Log name, node, metric.
    pub metrics: Vec<(String, usize, Metric)>,
    pub optimizer: OptimizerCfg,
}

/// The optimizer's name, its learning-rate and step-count nodes, and its initial rate.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct OptimizerCfg {
    pub name: String,
    pub lr: usize,
    pub iterations: usize,
    pub learning_rate: f64,
}

/// The whole `model.txt`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ModelCfg {
    pub name: String,
    pub seed: u64,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    pub training: usize,
    pub weights: Vec<usize>,
    pub trainable: Vec<usize>,
    pub updates: Vec<usize>,
    pub losses: Vec<usize>,
    pub layers: Vec<LayerRow>,
    pub compile: Option<CompileCfg>,
}

fn list(v: &[usize]) -> String {
    v.iter().map(|i| format!(" {i}")).collect()
}

/// The loss as `kind key=value...`.
pub(super) fn loss_text(l: &Loss) -> String {
    match l {
        Loss::MeanSquaredError => "mean_squared_error".into(),
        Loss::MeanAbsoluteError => "mean_absolute_error".into(),
        Loss::Huber { delta } => format!("huber delta={delta:?}"),
        Loss::Hinge => "hinge".into(),
        Loss::Custom(c) => format!("custom name={:?}", c.name),
        Loss::BinaryCrossentropy { from_logits } => {
            format!("binary_crossentropy from_logits={from_logits}")
        }
        Loss::CategoricalCrossentropy { from_logits } => {
            format!("categorical_crossentropy from_logits={from_logits}")
        }
        Loss::SparseCategoricalCrossentropy { from_logits } => {
            format!("sparse_categorical_crossentropy from_logits={from_logits}")
        }
    }
}

/// The metric as `kind key=value...`.
pub(super) fn metric_text(m: &Metric) -> String {
    match m {
        Metric::TopKCategoricalAccuracy { k } | Metric::SparseTopKCategoricalAccuracy { k } => {
            format!("{} k={k}", m.name())
        }
        Metric::Custom(c) => format!("custom name={:?}", c.name),
        Metric::Accuracy
        | Metric::BinaryAccuracy
        | Metric::CategoricalAccuracy
        | Metric::SparseCategoricalAccuracy
        | Metric::MeanAbsoluteError
        | Metric::MeanSquaredError
        | Metric::Precision
        | Metric::Recall
        | Metric::F1Score
        | Metric::Auc => m.name().to_string(),
    }
}

impl ModelCfg {
    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut s = format!("{MAGIC} {FORMAT_VERSION}\n");
        let _ = writeln!(s, "name {:?}", self.name);
        let _ = writeln!(s, "seed {}", self.seed);
        let _ = writeln!(s, "inputs{}", list(&self.inputs));
        let _ = writeln!(s, "outputs{}", list(&self.outputs));
        let _ = writeln!(s, "training {}", self.training);
        let _ = writeln!(s, "weights{}", list(&self.weights));
        let _ = writeln!(s, "trainable{}", list(&self.trainable));
        let _ = writeln!(s, "updates{}", list(&self.updates));
        let _ = writeln!(s, "losses{}", list(&self.losses));
        for r in &self.layers {
            let _ = writeln!(
                s,
                "layer {:?} {:?} {:?} {} {}",
                r.name, r.kind, r.shape, r.params, r.trainable
            );
        }
        if let Some(c) = &self.compile {
            let _ = writeln!(s, "loss {}", loss_text(&c.loss));
            let _ = writeln!(s, "target {}", c.target);
            let _ = writeln!(s, "loss_node {}", c.loss_node);
            let _ = writeln!(s, "train {}", c.train);
            for (name, node, m) in &c.metrics {
                let _ = writeln!(s, "metric {name:?} {node} {}", metric_text(m));
            }
            let o = &c.optimizer;
            let _ = writeln!(
                s,
                "optimizer {:?} {} {} learning_rate={:?}",
                o.name, o.lr, o.iterations, o.learning_rate
            );
        }
        s
    }

    /// Reads the file's text; `custom` turns a custom loss's or metric's saved name into a
    /// value. Every problem is an error naming the line.
    pub fn parse(text: &str, custom: &dyn Fn(&str) -> Custom) -> Result<ModelCfg> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, first) = lines
            .next()
            .ok_or_else(|| Error::invalid("the file is empty"))?;
        let head = tokens(first).map_err(|m| at(1, m))?;
        match head.as_slice() {
            [m, v] if m == MAGIC => {
                let v: u32 = v
                    .parse()
                    .map_err(|_| at(1, format!("the format version {v:?} is not a number")))?;
                if v != FORMAT_VERSION {
                    return Err(at(
                        1,
                        format!(
                            "format version {v}; this kiln reads version {FORMAT_VERSION} \
                             (a newer kiln wrote it, or the file is damaged)"
                        ),
                    ));
                }
            }
            _ => {
                return Err(at(
                    1,
                    format!("expected `{MAGIC} {FORMAT_VERSION}`: not a kiln model config"),
                ))
            }
        }
        let mut b = Partial::default();
        for (i, line) in lines {
            let t = tokens(line).map_err(|m| at(i + 1, m))?;
            b.record(&t, custom).map_err(|m| at(i + 1, m))?;
        }
        b.finish()
    }
}

/// What a custom loss or metric becomes when read back (see [`ModelCfg::parse`]).
pub(super) type Custom = super::super::metrics::Custom;

fn at(line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Parse {
        line,
        msg: msg.to_string(),
    }
}

/// The fields read so far.
#[derive(Default)]
struct Partial {
    name: Option<String>,
    seed: Option<u64>,
    lists: std::collections::HashMap<&'static str, Vec<usize>>,
    training: Option<usize>,
    layers: Vec<LayerRow>,
    loss: Option<Loss>,
    target: Option<usize>,
    loss_node: Option<usize>,
    train: Option<usize>,
    metrics: Vec<(String, usize, Metric)>,
    optimizer: Option<OptimizerCfg>,
}

const LISTS: [&str; 6] = [
    "inputs",
    "outputs",
    "weights",
    "trainable",
    "updates",
    "losses",
];

fn num<T: std::str::FromStr>(s: &str, what: &str) -> std::result::Result<T, String> {
    s.parse()
        .map_err(|_| format!("{what}: {s:?} is not a number"))
}

impl Partial {
    fn record(
        &mut self,
        t: &[String],
        custom: &dyn Fn(&str) -> Custom,
    ) -> std::result::Result<(), String> {
        let (key, rest) = t.split_first().ok_or("an empty record")?;
        let one = |what: &str| -> std::result::Result<usize, String> {
            match rest {
                [v] => num(v, what),
                _ => Err(format!("{what} takes one node index")),
            }
        };
        match key.as_str() {
            "name" => match rest {
                [n] => self.name = Some(n.clone()),
                _ => return Err("name takes one string".into()),
            },
            "seed" => {
                self.seed = Some(match rest {
                    [v] => num(v, "seed")?,
                    _ => return Err("seed takes one number".into()),
                })
            }
            "training" => self.training = Some(one("training")?),
            "target" => self.target = Some(one("target")?),
            "loss_node" => self.loss_node = Some(one("loss_node")?),
            "train" => self.train = Some(one("train")?),
            k if LISTS.contains(&k) => {
                let k = LISTS.iter().find(|l| **l == k).copied().unwrap_or("inputs");
                let v = rest.iter().map(|s| num(s, k)).collect::<Result<_, _>>()?;
                self.lists.insert(k, v);
            }
            "layer" => match rest {
                [name, kind, shape, p, tr] => self.layers.push(LayerRow {
                    name: name.clone(),
                    kind: kind.clone(),
                    shape: shape.clone(),
                    params: num(p, "layer params")?,
                    trainable: num(tr, "layer trainable params")?,
                }),
                _ => return Err("layer takes name, kind, shape, params, trainable".into()),
            },
            "loss" => self.loss = Some(parse_loss(rest, custom)?),
            "metric" => match rest {
                [name, node, kind @ ..] => {
                    let m = parse_metric(kind, custom)?;
                    self.metrics
                        .push((name.clone(), num(node, "metric node")?, m));
                }
                _ => return Err("metric takes a name, a node and a kind".into()),
            },
            "optimizer" => match rest {
                [name, lr, it, rate] => {
                    let rate = rate
                        .strip_prefix("learning_rate=")
                        .ok_or("optimizer: expected learning_rate=")?;
                    self.optimizer = Some(OptimizerCfg {
                        name: name.clone(),
                        lr: num(lr, "optimizer learning-rate node")?,
                        iterations: num(it, "optimizer iterations node")?,
                        learning_rate: num(rate, "learning_rate")?,
                    });
                }
                _ => return Err("optimizer takes a name, two nodes and learning_rate=".into()),
            },
            other => return Err(format!("unknown record {other:?}")),
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ModelCfg> {
        let missing = |what: &str| Error::invalid(format!("the config has no `{what}` record"));
        let mut list = |k: &str| self.lists.remove(k).ok_or_else(|| missing(k));
        let (inputs, outputs, weights) = (list("inputs")?, list("outputs")?, list("weights")?);
        let (trainable, updates, losses) = (list("trainable")?, list("updates")?, list("losses")?);
        let compile = match self.loss {
            None => None,
            Some(loss) => Some(CompileCfg {
                loss,
                target: self.target.ok_or_else(|| missing("target"))?,
                loss_node: self.loss_node.ok_or_else(|| missing("loss_node"))?,
                train: self.train.ok_or_else(|| missing("train"))?,
                metrics: self.metrics,
                optimizer: self.optimizer.ok_or_else(|| missing("optimizer"))?,
            }),
        };
        Ok(ModelCfg {
            name: self.name.ok_or_else(|| missing("name"))?,
            seed: self.seed.ok_or_else(|| missing("seed"))?,
            inputs,
            outputs,
            training: self.training.ok_or_else(|| missing("training"))?,
            weights,
            trainable,
            updates,
            losses,
            layers: self.layers,
            compile,
        })
    }
}

/// `key=value` from `kv`, or an error naming what is missing.
fn field<'a>(kv: &'a [String], key: &str, what: &str) -> std::result::Result<&'a str, String> {
    kv.iter()
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .ok_or_else(|| format!("{what} needs {key}="))
}

fn flag(kv: &[String], what: &str) -> std::result::Result<bool, String> {
    match field(kv, "from_logits", what)? {
        "true" => Ok(true),
        "false" => Ok(false),
        v => Err(format!("{what}: from_logits={v} is not true or false")),
    }
}

fn parse_loss(t: &[String], custom: &dyn Fn(&str) -> Custom) -> std::result::Result<Loss, String> {
    let (kind, kv) = t.split_first().ok_or("loss needs a kind")?;
    Ok(match kind.as_str() {
        "mean_squared_error" => Loss::MeanSquaredError,
        "mean_absolute_error" => Loss::MeanAbsoluteError,
        "huber" => Loss::Huber {
            delta: num(field(kv, "delta", "huber")?, "huber delta")?,
        },
        "hinge" => Loss::Hinge,
        "custom" => Loss::Custom(custom(field(kv, "name", "a custom loss")?)),
        "binary_crossentropy" => Loss::BinaryCrossentropy {
            from_logits: flag(kv, kind)?,
        },
        "categorical_crossentropy" => Loss::CategoricalCrossentropy {
            from_logits: flag(kv, kind)?,
        },
        "sparse_categorical_crossentropy" => Loss::SparseCategoricalCrossentropy {
            from_logits: flag(kv, kind)?,
        },
        other => return Err(format!("unknown loss {other:?} (written by a newer kiln?)")),
    })
}

fn parse_metric(
    t: &[String],
    custom: &dyn Fn(&str) -> Custom,
) -> std::result::Result<Metric, String> {
    let (kind, kv) = t.split_first().ok_or("metric needs a kind")?;
    let k = || -> std::result::Result<usize, String> { num(field(kv, "k", kind)?, "k") };
    Ok(match kind.as_str() {
        "top_k_categorical_accuracy" => Metric::TopKCategoricalAccuracy { k: k()? },
        "sparse_top_k_categorical_accuracy" => Metric::SparseTopKCategoricalAccuracy { k: k()? },
        "custom" => Metric::Custom(custom(field(kv, "name", "a custom metric")?)),
        "accuracy" => Metric::Accuracy,
        "binary_accuracy" => Metric::BinaryAccuracy,
        "categorical_accuracy" => Metric::CategoricalAccuracy,
        "sparse_categorical_accuracy" => Metric::SparseCategoricalAccuracy,
        "mean_absolute_error" => Metric::MeanAbsoluteError,
        "mean_squared_error" => Metric::MeanSquaredError,
        "precision" => Metric::Precision,
        "recall" => Metric::Recall,
        "f1_score" => Metric::F1Score,
        "auc" => Metric::Auc,
        other => {
            return Err(format!(
                "unknown metric {other:?} (written by a newer kiln?)"
            ))
        }
    })
}

/// Splits a line into tokens: bare words, and quoted strings with `\"`, `\\`, `\n`, `\t`,
/// `\u{..}` escapes (what `{:?}` writes for a `str`). A `key="..."` token keeps its key.
pub(super) fn tokens(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = vec![];
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut tok = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c != '"' {
                tok.push(c);
                continue;
            }
            loop {
                match chars.next() {
                    None => return Err("a quoted string is not closed".into()),
                    Some('"') => break,
                    Some('\\') => tok.push(unescape(&mut chars)?),
                    Some(ch) => tok.push(ch),
                }
            }
        }
        out.push(tok);
    }
    Ok(out)
}

fn unescape(chars: &mut impl Iterator<Item = char>) -> std::result::Result<char, String> {
    Ok(match chars.next() {
        Some('n') => '\n',
        Some('t') => '\t',
        Some('r') => '\r',
        Some('0') => '\0',
        Some('\\') => '\\',
        Some('"') => '"',
        Some('\'') => '\'',
        Some('u') => {
            let body: String = chars.take_while(|&c| c != '}').collect();
            let hex = body.strip_prefix('{').ok_or("a \\u escape without {")?;
            u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("a bad \\u escape {hex:?}"))?
        }
        other => return Err(format!("an unknown escape \\{}", other.unwrap_or(' '))),
    })
}
