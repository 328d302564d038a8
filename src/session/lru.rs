//! The compile cache's bound: a small least-recently-used map.

use std::collections::HashMap;

/// A map that keeps its `cap` most recently used entries (a linear scan finds the least
/// recently used one: caches hold tens of entries, and each miss costs a compile).
pub(super) struct Lru<K, V> {
    map: HashMap<K, (V, u64)>,
    tick: u64,
    pub(super) cap: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            tick: 0,
            cap,
        }
    }

    /// The entry for `k`, marked as the most recently used.
    pub(super) fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(k).map(|(v, used)| {
            *used = tick;
            v.clone()
        })
    }

    /// Adds an entry, evicting the least recently used ones beyond the capacity.
    pub(super) fn insert(&mut self, k: K, v: V) {
        self.tick += 1;
        self.map.insert(k, (v, self.tick));
        self.shrink();
    }

    pub(super) fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
        self.shrink();
    }

    pub(super) fn shrink(&mut self) {
        while self.map.len() > self.cap {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.map.remove(&k),
                None => break,
            };
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
