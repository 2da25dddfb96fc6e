//! A hash map in shards, so that growing never moves more than one shard's entries.
//!
//! A `HashMap` that outgrows its table moves every entry into one twice the size, in
//! one go. The sequencer's map of entity versions does that while it holds the
//! sequencer's lock, so every append waits: 13.6 ms at about 100K entities, measured
//! under a batch load, and ten times that at 1M. Split over [`SHARDS`] maps, each growth
//! moves a 256th of the entries. (The sequencer's lock already serializes access, so
//! the shards need no locks of their own.)

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;

/// How many maps.
const SHARDS: usize = 256;

pub(crate) struct ShardedMap<K, V> {
    /// Picks a key's shard; seeded apart from the shards' own hasher, so that the keys
    /// of one shard still spread over its buckets.
    pick: RandomState,
    shards: Box<[HashMap<K, V, RandomState>]>,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap { pick: RandomState::default(), shards: (0..SHARDS).map(|_| HashMap::default()).collect() }
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        (self.pick.hash_one(key) as usize) % SHARDS
    }

    /// The stored key equal to `key`, and its value.
    pub(crate) fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get_key_value(key)
    }

    /// Sets `key`'s value.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        let shard = self.shard(&key);
        self.shards[shard].insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_map_keeps_what_a_map_keeps() {
        let mut map: ShardedMap<String, u64> = ShardedMap::default();
        for i in 0..10_000u64 {
            map.insert(format!("entity-{}", i % 5_000), i);
        }
        for i in 0..5_000u64 {
            let key = format!("entity-{i}");
            assert_eq!(map.get_key_value(key.as_str()), Some((&key, &(i + 5_000))));
        }
        assert_eq!(map.get_key_value("entity-5000"), None);
        // The keys spread over the shards.
        assert!(map.shards.iter().all(|shard| !shard.is_empty()));
    }
}
