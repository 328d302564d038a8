//! The kernel table of a lowered program: the fused kernels its graph's `fusion` nodes name.
//!
//! The graph IR knows nothing of kernels (ARCHITECTURE.md, "Dependency rules"): a fused node
//! is `Op::Fusion(KernelId)`, an opaque id, and the kernel itself lives here, in the table the
//! lowered program owns (`passes::Program::kernels`), which the fusion pass appends to. Every
//! consumer that needs a kernel's content (the verifier, memory planning, the JIT, the
//! interpreter, the dump) looks it up by the node's id.
//!
//! Ids are positions: a table only grows, so an id stays valid for the program's life. Two
//! fused nodes with different ids are different ops even if their kernels are equal, so a
//! pass comparing ops (CSE) never merges nodes whose kernels differ.

use super::Kernel;
use crate::graph::op::KernelId;
use std::sync::Arc;

/// The fused kernels of a lowered program, indexed by [`KernelId`]. Cloning shares the
/// kernels (a program is cloned to compare it before and after a pass).
#[derive(Clone, Debug, Default)]
pub struct Kernels {
    list: Vec<Arc<Kernel>>,
}

impl Kernels {
    /// An empty table.
    pub fn new() -> Kernels {
        Kernels::default()
    }

    /// Adds `kernel` and returns its id.
    pub(crate) fn add(&mut self, kernel: Kernel) -> KernelId {
        self.list.push(Arc::new(kernel));
        KernelId::from_index(self.list.len() - 1)
    }

    /// The kernel `id`, if this table has it.
    pub(crate) fn get(&self, id: KernelId) -> Option<&Kernel> {
        self.list.get(id.index()).map(|k| &**k)
    }

    /// The kernel `id`, or an error naming the missing id (a fused node read without its
    /// program's table, or with another program's).
    pub(crate) fn lookup(&self, id: KernelId) -> Result<&Kernel, String> {
        self.get(id).ok_or_else(|| {
            format!(
                "kernel #{} is not in the kernel table ({} kernel(s)): a fused node is only \
                 meaningful with its program's kernels",
                id.index(),
                self.list.len()
            )
        })
    }

    /// The number of kernels.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when the table has no kernel.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::Ty;
    use crate::kernel::{Body, Core};
    use crate::DType;

    fn kernel() -> Kernel {
        Kernel {
            params: vec![],
            prologue: Body::default(),
            core: Core::None,
            epilogue: Body::default(),
            out: Ty {
                dtype: DType::F32,
                shape: crate::Shape::scalar(),
            },
        }
    }

    #[test]
    fn ids_are_positions_and_a_foreign_id_is_an_error() {
        let mut t = Kernels::new();
        assert!(t.is_empty());
        let a = t.add(kernel());
        let b = t.add(kernel());
        assert_eq!((a.index(), b.index(), t.len()), (0, 1, 2));
        assert_ne!(a, b, "equal kernels keep distinct ids");
        assert_eq!(t.get(b), Some(&kernel()));
        let e = Kernels::new().lookup(a).unwrap_err();
        assert!(e.contains("kernel #0 is not in the kernel table"), "{e}");
    }
}
