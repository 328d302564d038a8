//! The graph IR: a petgraph of typed ops, each node with its output type, an optional
//! hierarchical name and the user's source location.
//!
//! # Invariants
//! - **Every node's type is inferred when it is added** (`op::infer`); a node whose rule
//!   fails is kept but marked *invalid*, its error is stored, and nodes built on it are invalid
//!   without a second error. [`Graph::check`] (and every compile or run) reports them all,
//!   the first one with the others listed after it.
//! - `Node::inputs` is the operand list; petgraph edges mirror it (one edge per operand, from
//!   operand to user, weighted by operand position). Only [`GraphData`] methods mutate either.
//! - Placeholder and variable names are unique within a graph; other names are made unique by
//!   a `_N` suffix, as in TF1.
//! - A [`Graph`] is a shared handle: clones refer to the same graph. [`Tensor`]s borrow it, so
//!   a tensor cannot outlive its graph; using a tensor of one graph in another is an error.

mod builder;
mod composite;
pub mod effects;
mod fallible;
mod handle;
pub mod op;
mod walk;

use crate::error::{Error, Result, SrcLoc};
use op::{Arg, Op, Ty};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::Direction;
use smallvec::SmallVec;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use builder::{Conv2dOptions, IntoOperand, Tensor};
pub use handle::{Graph, ScopeGuard};

/// The identity of a node within its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex<u32>);

impl NodeId {
    /// The raw index (stable for the node's lifetime, not dense after removals).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// A node: an op, its operands, its output type, and where it came from.
#[derive(Clone, Debug)]
pub struct Node {
    /// The op.
    pub op: Op,
    /// The operands, in order.
    pub inputs: SmallVec<[NodeId; 3]>,
    /// The output dtype and shape.
    pub ty: Ty,
    /// The hierarchical name (`dense_1/kernel`), if any.
    pub name: Option<Arc<str>>,
    /// Where the user created the node.
    pub loc: Option<SrcLoc>,
}

impl Node {
    /// `"x"` for a named node, `(exp)` for an unnamed one: how errors refer to it.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n:?}"),
            None => format!("({})", self.op.name()),
        }
    }
}

/// The graph's contents. [`Graph`] is a shared handle around it; passes and backends work on a
/// `GraphData` directly.
#[derive(Clone, Debug)]
pub struct GraphData {
    pub(crate) g: StableDiGraph<Node, u32>,
    id: u64,
    errors: Vec<Error>,
    invalid: HashSet<NodeId>,
    /// Removed nodes, kept as tombstones so that a `NodeId` is never reused for another node
    /// (petgraph's stable graph would hand a freed index to the next new node).
    dead: HashSet<NodeId>,
    scopes: Vec<String>,
    names: HashMap<Arc<str>, NodeId>,
    /// For a wanted name, a suffix below which every `{name}_{i}` is taken: where
    /// [`GraphData::unique_name`] starts looking, so that naming the `n`-th node of one name
    /// (a gradient per layer of a deep chain) costs O(1), not O(n).
    suffixes: HashMap<Arc<str>, usize>,
    /// While set, builder methods record this location instead of their caller's: derived
    /// nodes (gradients) point at the user's line of the op they come from.
    pub(crate) loc_override: Option<SrcLoc>,
}

static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

impl Default for GraphData {
    fn default() -> Self {
        GraphData {
            g: StableDiGraph::default(),
            id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
            errors: vec![],
            invalid: HashSet::new(),
            dead: HashSet::new(),
            scopes: vec![],
            names: HashMap::new(),
            suffixes: HashMap::new(),
            loc_override: None,
        }
    }
}

impl GraphData {
    /// An empty graph.
    pub fn new() -> GraphData {
        GraphData::default()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.g.node_count() - self.dead.len()
    }

    /// True if the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The node `id`. Panics if `id` is not in this graph (ids come from this graph only).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    /// The node `id`, if present.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        if self.dead.contains(&id) {
            return None;
        }
        self.g.node_weight(id.0)
    }

    /// All node ids in index order (creation order for builder graphs).
    pub fn ids(&self) -> Vec<NodeId> {
        self.g
            .node_indices()
            .map(NodeId)
            .filter(|i| !self.dead.contains(i))
            .collect()
    }

    /// The nodes that use `id` as an operand (each once, in index order).
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .g
            .neighbors_directed(id.0, Direction::Outgoing)
            .map(NodeId)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// True if the node's shape rule failed (or one of its operands is invalid).
    pub fn is_invalid(&self, id: NodeId) -> bool {
        self.invalid.contains(&id)
    }

    /// The first recorded error, if any, holding the others (in the order they were made)
    /// in its `more` field: its message lists them, each with its op, operand types and
    /// source line (the first [`crate::error::MAX_LISTED`], then a count of the rest).
    pub fn check(&self) -> Result<()> {
        match self.errors.first() {
            None => Ok(()),
            Some(e) => {
                let mut e = e.clone();
                if let Error::Graph { more, .. } = &mut e {
                    *more = self.errors[1..].to_vec();
                }
                Err(e)
            }
        }
    }

    /// All recorded errors.
    pub fn errors(&self) -> &[Error] {
        &self.errors
    }

    /// The node with this exact name.
    pub fn by_name(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// The placeholders, in index order.
    pub fn placeholders(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|&i| matches!(self.node(i).op, Op::Placeholder))
            .collect()
    }

    /// The variables, in index order.
    pub fn variables(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|&i| matches!(self.node(i).op, Op::Variable { .. }))
            .collect()
    }

    /// The graph's identity (unique per process; copies made by `clone` share it).
    pub fn graph_id(&self) -> u64 {
        self.id
    }

    fn scoped(&self, base: &str) -> String {
        if self.scopes.is_empty() {
            base.to_string()
        } else {
            format!("{}/{}", self.scopes.join("/"), base)
        }
    }

    fn unique_name(&mut self, want: &str) -> Arc<str> {
        if !self.names.contains_key(want) {
            return Arc::from(want);
        }
        let from = self.suffixes.get(want).copied().unwrap_or(1);
        let (i, n) = (from..)
            .map(|i| (i, format!("{want}_{i}")))
            .find(|(_, n)| !self.names.contains_key(n.as_str()))
            .unwrap_or((from, want.to_string()));
        self.suffixes.insert(Arc::from(want), i + 1);
        Arc::from(n)
    }

    /// Forgets `name`, which may free a suffix below [`GraphData::unique_name`]'s start.
    fn release_name(&mut self, name: &str) {
        self.names.remove(name);
        if let Some((base, i)) = name.rsplit_once('_') {
            if let (Some(from), Ok(i)) = (self.suffixes.get_mut(base), i.parse::<usize>()) {
                *from = (*from).min(i.max(1));
            }
        }
    }

    /// Adds a node, inferring its type. `name` is used as given (with no scope prefix); an
    /// unnamed node inside a name scope gets `scope/op`. On a failed rule the node is added as
    /// invalid and the error recorded; the id is returned either way.
    pub fn add_node(
        &mut self,
        op: Op,
        inputs: &[NodeId],
        declared: Option<Ty>,
        name: Option<String>,
        loc: Option<SrcLoc>,
    ) -> NodeId {
        let mut invalid = inputs.iter().any(|i| self.invalid.contains(i));
        let ty = if invalid {
            declared.clone().unwrap_or(Ty {
                dtype: crate::DType::F32,
                shape: Default::default(),
            })
        } else {
            let labels: Vec<String> = inputs.iter().map(|&i| self.node(i).label()).collect();
            let args: Vec<Arg<'_>> = inputs
                .iter()
                .zip(&labels)
                .map(|(&i, l)| Arg {
                    ty: &self.node(i).ty,
                    label: l,
                })
                .collect();
            // The one rule that looks at an operand's op rather than its type.
            // (An assign without operands falls through to the arity check.)
            let not_var = matches!(op, Op::Assign)
                && inputs
                    .first()
                    .is_some_and(|&i| !matches!(self.node(i).op, Op::Variable { .. }));
            let rule = if not_var {
                Err(format!(
                    "the destination must be a variable, got {}",
                    args[0]
                ))
            } else {
                op::infer(&op, &args, declared.as_ref())
            };
            match rule {
                Ok(t) => t,
                Err(msg) => {
                    invalid = true;
                    self.errors.push(Error::Graph {
                        op: op.name().to_string(),
                        loc: loc.clone(),
                        msg,
                        more: vec![],
                    });
                    declared.unwrap_or(Ty {
                        dtype: crate::DType::F32,
                        shape: Default::default(),
                    })
                }
            }
        };
        let explicit = name.is_some();
        let want = match name {
            Some(n) => Some(n),
            None if !self.scopes.is_empty() => Some(self.scoped(op.name())),
            None => None,
        };
        let is_keyed = matches!(op, Op::Placeholder | Op::Variable { .. });
        let name: Option<Arc<str>> = match want {
            Some(w) if is_keyed && explicit && self.names.contains_key(w.as_str()) => {
                invalid = true;
                self.errors.push(Error::Graph {
                    op: op.name().to_string(),
                    loc: loc.clone(),
                    msg: format!("the name {w:?} is already taken"),
                    more: vec![],
                });
                Some(self.unique_name(&w))
            }
            Some(w) => Some(self.unique_name(&w)),
            None => None,
        };
        let node = Node {
            op,
            inputs: inputs.iter().copied().collect(),
            ty,
            name: name.clone(),
            loc,
        };
        let id = NodeId(self.g.add_node(node));
        for (pos, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i.0, id.0, pos as u32);
        }
        if let Some(n) = name {
            self.names.insert(n, id);
        }
        if invalid {
            self.invalid.insert(id);
        }
        id
    }

    /// Records an error that is not a shape rule's (for example a cross-graph operand) and
    /// returns an invalid node standing for the failed op.
    pub(crate) fn add_error(&mut self, op: &str, msg: String, loc: Option<SrcLoc>) -> NodeId {
        self.errors.push(Error::Graph {
            op: op.to_string(),
            loc: loc.clone(),
            msg,
            more: vec![],
        });
        let node = Node {
            op: Op::Placeholder,
            inputs: SmallVec::new(),
            ty: Ty {
                dtype: crate::DType::F32,
                shape: Default::default(),
            },
            name: None,
            loc,
        };
        let id = NodeId(self.g.add_node(node));
        self.invalid.insert(id);
        id
    }

    /// Sets the name of `id` (made unique; placeholder and variable names must be free).
    pub fn rename(&mut self, id: NodeId, name: &str) -> Result<()> {
        let node = self.node(id);
        if node.name.as_deref() == Some(name) {
            return Ok(());
        }
        if matches!(node.op, Op::Placeholder | Op::Variable { .. }) && self.names.contains_key(name)
        {
            return Err(Error::invalid(format!(
                "the name {name:?} is already taken"
            )));
        }
        if let Some(old) = self.g[id.0].name.take() {
            self.release_name(&old);
        }
        let n = self.unique_name(name);
        self.names.insert(n.clone(), id);
        self.g[id.0].name = Some(n);
        Ok(())
    }

    /// Replaces operand `pos` of `user` with `new`, keeping edges in step.
    pub(crate) fn set_input(&mut self, user: NodeId, pos: usize, new: NodeId) {
        let old = self.g[user.0].inputs[pos];
        if let Some(e) = self
            .g
            .edges_connecting(old.0, user.0)
            .find(|e| *e.weight() == pos as u32)
            .map(|e| petgraph::visit::EdgeRef::id(&e))
        {
            self.g.remove_edge(e);
        }
        self.g[user.0].inputs[pos] = new;
        self.g.add_edge(new.0, user.0, pos as u32);
    }

    /// Makes every user of `old` use `new` instead (operand by operand). `old` stays in the
    /// graph, unused, for dead-code elimination to remove.
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        for user in self.users(old) {
            let positions: Vec<usize> = self.g[user.0]
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, &i)| i == old)
                .map(|(p, _)| p)
                .collect();
            for p in positions {
                self.set_input(user, p, new);
            }
        }
    }

    /// Mutable access to a node's op and type, for passes that rewrite in place (such as
    /// making shapes concrete). Operands must be changed through [`GraphData::set_input`].
    pub(crate) fn node_mut_parts(&mut self, id: NodeId) -> (&mut Op, &mut Ty) {
        let n = &mut self.g[id.0];
        (&mut n.op, &mut n.ty)
    }

    /// Drops all operands of `id` (used when a node becomes a constant).
    pub(crate) fn clear_inputs(&mut self, id: NodeId) {
        let edges: Vec<_> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| petgraph::visit::EdgeRef::id(&e))
            .collect();
        for e in edges {
            self.g.remove_edge(e);
        }
        self.g[id.0].inputs.clear();
    }

    /// Removes a node that nothing uses any more (its id is never reused).
    pub(crate) fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        if self.dead.contains(&id) || self.g.node_weight(id.0).is_none() {
            return None;
        }
        if self
            .g
            .neighbors_directed(id.0, Direction::Outgoing)
            .next()
            .is_some()
        {
            return None;
        }
        self.clear_inputs(id);
        self.dead.insert(id);
        let n = self.g[id.0].clone();
        if let Some(name) = &n.name {
            if self.names.get(name) == Some(&id) {
                self.release_name(name);
            }
        }
        self.invalid.remove(&id);
        Some(n)
    }

    /// A copy holding only what `roots` depend on (roots included), which is all a compile
    /// of them reads, so that a graph grown by unrelated nodes does not make each compile copy,
    /// and each pass visit, all of them. Kept nodes keep their ids; the others' ids are vacant
    /// in the copy, and nodes that passes add to it may take them: sound because the copy's
    /// ids are compared with this graph's only for kept nodes (fetches, placeholders,
    /// variables). Invariant 5 holds for the user's graph, which this does not change.
    pub(crate) fn cone(&self, roots: &[NodeId]) -> GraphData {
        let keep: HashSet<NodeId> = self.topo_order_from(roots).into_iter().collect();
        let g = self.g.filter_map(
            |i, n| keep.contains(&NodeId(i)).then(|| n.clone()),
            |_, w| Some(*w),
        );
        let names = keep
            .iter()
            .filter_map(|&i| Some((self.g[i.0].name.clone()?, i)))
            .collect();
        GraphData {
            g,
            id: self.id,
            errors: self.errors.clone(),
            invalid: self.invalid.intersection(&keep).copied().collect(),
            dead: self.dead.intersection(&keep).copied().collect(),
            scopes: self.scopes.clone(),
            names,
            suffixes: self.suffixes.clone(),
            loc_override: self.loc_override.clone(),
        }
    }

    pub(crate) fn push_scope(&mut self, s: &str) {
        self.scopes.push(s.to_string());
    }

    pub(crate) fn pop_scope(&mut self) {
        self.scopes.pop();
    }
}
