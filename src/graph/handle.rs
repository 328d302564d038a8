//! [`Graph`], the shared handle users build with: a `GraphData` behind a mutex, so tensors
//! (which borrow the handle) can add nodes from any method, and name scopes.

use super::{GraphData, NodeId, Tensor};
use crate::error::Result;
use std::sync::{Arc, Mutex, MutexGuard};

/// A symbolic graph, shared by handle: cloning a `Graph` gives another handle to the same graph.
///
/// ```
/// use kiln::prelude::*;
/// let g = Graph::new();
/// let x = g.placeholder("x", DType::F32, [None, Some(3)]);
/// let y = (x * 2.0).sum(&[1], false);
/// assert_eq!(y.shape().to_string(), "[?]");
/// ```
#[derive(Clone, Default)]
pub struct Graph {
    inner: Arc<Mutex<GraphData>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Graph({} nodes)", self.data().len())
    }
}

/// Restores the enclosing name scope when dropped. See [`Graph::name_scope`].
#[must_use = "the scope ends when this guard is dropped"]
pub struct ScopeGuard<'g> {
    graph: &'g Graph,
}

impl Drop for ScopeGuard<'_> {
    fn drop(&mut self) {
        self.graph.data_mut().pop_scope();
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Wraps existing graph contents in a new handle.
    pub fn from_data(d: GraphData) -> Graph {
        Graph {
            inner: Arc::new(Mutex::new(d)),
        }
    }

    /// Locks the contents for reading. Do not call builder methods while holding it.
    pub fn data(&self) -> MutexGuard<'_, GraphData> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn data_mut(&self) -> MutexGuard<'_, GraphData> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the contents.
    pub fn snapshot(&self) -> GraphData {
        self.data().clone()
    }

    /// True if both handles refer to the same graph.
    pub fn same_as(&self, other: &Graph) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Opens a TF1-style name scope: unnamed ops created until the guard drops are named
    /// `scope/op`, and scopes nest.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F32, [2]);
    /// let _s = g.name_scope("dense_1");
    /// assert_eq!(x.exp().name().as_deref(), Some("dense_1/exp"));
    /// ```
    pub fn name_scope(&self, scope: &str) -> ScopeGuard<'_> {
        self.data_mut().push_scope(scope);
        ScopeGuard { graph: self }
    }

    /// The current scope prefix joined with `name` (`dense_1/kernel`).
    pub fn scoped_name(&self, name: &str) -> String {
        self.data().scoped(name)
    }

    /// Reports the shape and dtype errors recorded while building, if any: the first one,
    /// whose message lists the others (see [`GraphData::check`]).
    pub fn check(&self) -> Result<()> {
        self.data().check()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.data().len()
    }

    /// True if the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.data().is_empty()
    }

    /// A handle to node `id` of this graph.
    pub fn tensor(&self, id: NodeId) -> Tensor<'_> {
        Tensor::from_parts(self, id)
    }

    /// The tensor with this exact name.
    pub fn by_name(&self, name: &str) -> Option<Tensor<'_>> {
        let id = self.data().by_name(name)?;
        Some(self.tensor(id))
    }
}
