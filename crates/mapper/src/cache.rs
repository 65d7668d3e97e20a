//! A small LRU cache bounded by bytes, for decoded chunks.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Values whose estimated sizes sum to at most `budget` bytes; the least
/// recently used ones go first. A value larger than the whole budget is
/// not kept. Lookups, inserts and evictions are O(log n).
pub(crate) struct Lru<K, V> {
    budget: usize,
    used: usize,
    tick: u64,
    /// key -> (value, last use, size)
    map: HashMap<K, (V, u64, usize)>,
    /// last use -> key, oldest first
    order: BTreeMap<u64, K>,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, t, _) = self.map.get_mut(key)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, key.clone());
        Some(v.clone())
    }

    /// Keeps `value` of `size` bytes (estimated), evicting the least
    /// recently used values until it fits.
    pub(crate) fn insert(&mut self, key: K, value: V, size: usize) {
        self.remove(&key);
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, _, s)) = self.map.remove(&oldest) {
                self.used -= s;
            }
        }
        self.tick += 1;
        self.used += size;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, self.tick, size));
    }

    fn remove(&mut self, key: &K) {
        if let Some((_, t, s)) = self.map.remove(key) {
            self.order.remove(&t);
            self.used -= s;
        }
    }

    /// The estimated bytes kept.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut c = Lru::new(20);
        c.insert(1, "a", 10);
        c.insert(2, "b", 10);
        assert_eq!(c.get(&1), Some("a"));
        c.insert(3, "c", 10);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.get(&3), Some("c"));
        assert_eq!(c.len(), 2);
        assert_eq!(c.used(), 20);
    }

    #[test]
    fn the_byte_budget_holds() {
        let mut c = Lru::new(100);
        for i in 0..1000usize {
            c.insert(i, i, 1 + i % 37);
            assert!(c.used() <= 100);
            assert_eq!(c.used(), c.map.values().map(|(_, _, s)| s).sum::<usize>());
            assert_eq!(c.order.len(), c.map.len());
        }
        // Too big for the whole budget: not kept, nothing else evicted.
        let before = c.len();
        c.insert(5000, 5000, 101);
        assert_eq!(c.get(&5000), None);
        assert_eq!(c.len(), before);
        // Replacing a key accounts its new size.
        c.insert(7, 7, 50);
        c.insert(7, 7, 60);
        assert!(c.used() <= 100);
        assert_eq!(c.get(&7), Some(7));
        let mut z = Lru::new(0);
        z.insert(1, 1, 0);
        z.insert(2, 2, 1);
        assert_eq!(z.get(&2), None);
    }
}
