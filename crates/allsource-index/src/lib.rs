//! Indexes over log positions: which positions belong to an entity, which to an event
//! type, and where an event id lives. No I/O.
//!
//! Indexes hold positions, never copies of events. A key's positions are appended in
//! increasing order, so every list is sorted by construction and every bound (the
//! `after` cursor, and time bounds once they are turned into positions) is a binary
//! search. Because timestamps never decrease along the log, a time bound is itself a
//! position bound: [`first_position_where`] finds it by binary search over positions.
//!
//! Maps are [`dashmap::DashMap`]s: readers of different keys never wait on each
//! other, and no reader takes a global lock.
//!
//! ```
//! use allsource_index::{PositionIndex, PositionRange};
//!
//! let index: PositionIndex<String> = PositionIndex::default();
//! for position in [1, 4, 9, 12] {
//!     index.push(&"user-1".to_string(), position);
//! }
//! let page = index.select("user-1", PositionRange::new(2, 12), 2);
//! assert_eq!(page, vec![4, 9]);
//! assert_eq!(index.count("user-1", PositionRange::ALL), 4);
//! ```

use std::borrow::Borrow;
use std::hash::Hash;

use allsource_core_types::{Position, MAP_SHARDS};
use dashmap::DashMap;
use uuid::Uuid;

mod list;

use list::{BlockList, PositionList};
use parking_lot::RwLock;

/// The hasher of every index map: fast, and seeded at random per process, so that
/// keys chosen by clients cannot be picked to collide.
type RandomState = foldhash::fast::RandomState;

fn sharded_map<K: Eq + Hash, V>() -> DashMap<K, V, RandomState> {
    DashMap::with_capacity_and_hasher_and_shard_amount(0, RandomState::default(), MAP_SHARDS)
}

/// An inclusive range of log positions, `first..=last`; empty when `first > last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionRange {
    /// The first position in the range.
    pub first: Position,
    /// The last position in the range.
    pub last: Position,
}

impl PositionRange {
    /// Every position.
    pub const ALL: PositionRange = PositionRange { first: 1, last: Position::MAX };

    /// The positions `first..=last`.
    pub const fn new(first: Position, last: Position) -> PositionRange {
        PositionRange { first, last }
    }

    /// Whether no position is in the range.
    pub const fn is_empty(&self) -> bool {
        self.first > self.last
    }

    /// Whether `position` is in the range.
    pub const fn contains(&self, position: Position) -> bool {
        self.first <= position && position <= self.last
    }

    /// The indexes into a sorted list of positions that fall in this range.
    fn slice_bounds(&self, positions: &PositionList) -> (usize, usize) {
        if self.is_empty() {
            return (0, 0);
        }
        let start = positions.partition_point(|&p| p < self.first);
        let end = positions.partition_point(|&p| p <= self.last);
        (start, end.max(start))
    }
}

/// Per-key sorted lists of positions: the entity index and the event-type index.
/// A long list is kept in blocks that never move once full, so that adding to it
/// never copies more than one block while the key is locked.
#[derive(Debug)]
pub struct PositionIndex<K: Eq + Hash> {
    lists: DashMap<K, PositionList, RandomState>,
}

impl<K: Eq + Hash> Default for PositionIndex<K> {
    fn default() -> Self {
        PositionIndex { lists: sharded_map() }
    }
}

impl<K: Eq + Hash> PositionIndex<K> {
    /// Records that `position` belongs to `key`. Positions of one key must be pushed in
    /// increasing order (the log's order); a smaller one is a bug in the caller.
    ///
    /// `key` is cloned only for a key not seen before: an id or type longer than 23
    /// bytes is shared (reference-counted) text, and a clone for each push would write
    /// to a count that every event of the key shares with the threads that read it.
    pub fn push(&self, key: &K, position: Position)
    where
        K: Clone,
    {
        let mut list = match self.lists.get_mut(key) {
            Some(list) => list,
            None => self.lists.entry(key.clone()).or_default(),
        };
        debug_assert!(list.last().is_none_or(|last| last < position), "positions pushed out of order");
        list.push(position);
    }

    /// Appends `position` to `key`'s positions if `check` accepts the key and how many
    /// positions it has now (0 for a key not seen before), in one lookup: the
    /// sequencer's step, where the count is the entity's version. Returns the stored
    /// key (sharing its text) and the new count; when `check` fails, nothing changes.
    pub fn push_checked<E>(
        &self,
        key: K,
        position: Position,
        check: impl FnOnce(&K, usize) -> Result<(), E>,
    ) -> Result<(K, usize), E>
    where
        K: Clone,
    {
        match self.lists.entry(key) {
            dashmap::Entry::Occupied(mut entry) => {
                let len = entry.get().len();
                check(entry.key(), len)?;
                let list = entry.get_mut();
                debug_assert!(
                    list.last().is_none_or(|last| last < position),
                    "positions pushed out of order"
                );
                list.push(position);
                Ok((entry.key().clone(), len + 1))
            }
            dashmap::Entry::Vacant(slot) => {
                check(slot.key(), 0)?;
                let key = slot.key().clone();
                let mut list = PositionList::default();
                list.push(position);
                slot.insert(list);
                Ok((key, 1))
            }
        }
    }

    /// Takes back the push of `position`, the last position of `key`: for a batch
    /// refused after some of its events were pushed. A key left with no position is
    /// forgotten, as if never pushed. Anything else (not the last position) is left.
    pub fn take_back<Q>(&self, key: &Q, position: Position)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let emptied = match self.lists.get_mut(key) {
            Some(mut list) if list.last() == Some(position) => {
                list.pop();
                list.len() == 0
            }
            _ => false,
        };
        if emptied {
            self.lists.remove_if(key, |_, list| list.len() == 0);
        }
    }

    /// [`PositionIndex::push`] of several positions of `key`, in increasing order.
    pub fn extend(&self, key: K, positions: &[Position]) {
        if positions.is_empty() {
            return;
        }
        let mut list = self.lists.entry(key).or_default();
        debug_assert!(list.last().is_none_or(|last| last < positions[0]), "positions pushed out of order");
        for &position in positions {
            list.push(position);
        }
    }

    /// The positions of `key` within `range`, in increasing order, at most `limit`.
    pub fn select<Q>(&self, key: &Q, range: PositionRange, limit: usize) -> Vec<Position>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(list) = self.lists.get(key) else { return Vec::new() };
        let (start, end) = range.slice_bounds(&list);
        list.copy_range(start, end.min(start.saturating_add(limit)))
    }

    /// How many positions of `key` fall within `range`: two binary searches.
    pub fn count<Q>(&self, key: &Q, range: PositionRange) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(list) = self.lists.get(key) else { return 0 };
        let (start, end) = range.slice_bounds(&list);
        end - start
    }

    /// The last position of `key` within `range`, if any.
    pub fn last_in<Q>(&self, key: &Q, range: PositionRange) -> Option<Position>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let list = self.lists.get(key)?;
        let (start, end) = range.slice_bounds(&list);
        if end > start {
            list.get(end - 1)
        } else {
            None
        }
    }

    /// The stored key equal to `key` (to share its text) and how many positions it
    /// has; `None` when it has none.
    pub fn key_and_len<Q>(&self, key: &Q) -> Option<(K, usize)>
    where
        K: Borrow<Q> + Clone,
        Q: Hash + Eq + ?Sized,
    {
        self.lists.get(key).map(|entry| (entry.key().clone(), entry.value().len()))
    }

    /// Whether `key` has any position.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lists.contains_key(key)
    }

    /// How many keys have at least one position.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether no key has a position.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.lists.clear();
    }
}

/// Event id to log position.
///
/// Most ids are the store's own, UUIDv7s that increase with time, so they arrive in
/// increasing order: those go at the end of an ordered run, looked up by binary search.
/// Appending there writes memory that was just written, where a hash map, over which
/// ids spread evenly, misses the cache on nearly every insert of a large log (and
/// rehashes as it grows). Every other id (a client's UUIDv4, or one out of order) goes
/// to a hash map.
#[derive(Debug)]
pub struct IdIndex {
    /// Ids in increasing order, with their positions.
    ordered: RwLock<Run>,
    /// The ids not in `ordered`.
    others: DashMap<Uuid, Position, RandomState>,
}

/// The ordered run and what its inserts need to know about the map.
#[derive(Debug, Default)]
struct Run {
    ids: BlockList<(Uuid, Position)>,
    /// Whether a UUIDv7 ever went to the map: only then can an id larger than the run's
    /// last be in the map already (one refused for being ahead of the clock), so only
    /// then must an insert into the run look there first.
    v7_in_others: bool,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex { ordered: RwLock::default(), others: sharded_map() }
    }
}

/// How far ahead of this machine's clock a UUIDv7 may be and still join the ordered
/// run. An id that joins is larger than every id before it, so one from a client
/// whose clock runs ahead sends the store's own ids to the hash map until the clock
/// catches up with it: for a minute at most.
const RUN_AHEAD_MILLIS_MAX: u64 = 60_000;

/// Whether `id` can be in the ordered run, which only UUIDv7s join (a UUIDv4 is
/// random, so would usually be larger than every UUIDv7 to come).
fn may_be_in_run(id: &Uuid) -> bool {
    id.get_version_num() == 7
}

/// A UUIDv7's time: its first 48 bits, milliseconds since the Unix epoch.
fn v7_millis(id: &Uuid) -> u64 {
    let bytes = id.as_bytes();
    u64::from_be_bytes([0, 0, bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]])
}

/// Whether the UUIDv7 `id`, larger than `last` (the run's last id), may join the run:
/// when it is not too far ahead of the clock. The clock is read only when `id` is in a
/// later millisecond than `last`, which was checked when it joined: at most once a
/// millisecond for the store's own ids.
fn may_join_run(id: &Uuid, last: Option<&Uuid>) -> bool {
    let millis = v7_millis(id);
    if last.is_some_and(|last| millis <= v7_millis(last)) {
        return true;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |now| u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
    millis <= now.saturating_add(RUN_AHEAD_MILLIS_MAX)
}

/// The position of `id` in the ordered run: a binary search.
fn find_in_run(run: &BlockList<(Uuid, Position)>, id: &Uuid) -> Option<Position> {
    let index = run.partition_point(|(other, _)| other < id);
    run.get(index).filter(|(other, _)| other == id).map(|(_, position)| position)
}

impl IdIndex {
    /// Records that the event `id` is at `position`; returns the position already
    /// recorded for `id`, if any, leaving it in place.
    pub fn insert(&self, id: Uuid, position: Position) -> Option<Position> {
        if may_be_in_run(&id) {
            let mut run = self.ordered.write();
            let last = run.ids.last().map(|(last, _)| last);
            if last.is_none_or(|last| last < id) {
                // Not in the run; in the map only if it could not join it before.
                if run.v7_in_others {
                    if let Some(existing) = self.others.get(&id) {
                        return Some(*existing);
                    }
                }
                if may_join_run(&id, last.as_ref()) {
                    run.ids.push((id, position));
                    return None;
                }
            } else if let Some(existing) = find_in_run(&run.ids, &id) {
                return Some(existing);
            }
            // Set while the run is locked, before the id is in the map.
            run.v7_in_others = true;
        }
        match self.others.entry(id) {
            dashmap::Entry::Occupied(existing) => Some(*existing.get()),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(position);
                None
            }
        }
    }

    /// The position of the event `id`.
    pub fn get(&self, id: &Uuid) -> Option<Position> {
        let in_run = if may_be_in_run(id) { find_in_run(&self.ordered.read().ids, id) } else { None };
        in_run.or_else(|| self.others.get(id).map(|p| *p))
    }

    /// How many ids are recorded.
    pub fn len(&self) -> usize {
        self.ordered.read().ids.len() + self.others.len()
    }

    /// Whether no id is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first position in `range` for which `predicate` holds, or `range.last + 1` when
/// none does, where `predicate` is false up to some position and true from there on
/// (as "timestamp >= T" is along the log). A binary search: `O(log n)` calls.
pub fn first_position_where(range: PositionRange, predicate: impl Fn(Position) -> bool) -> Position {
    if range.is_empty() {
        return range.first;
    }
    let (mut low, mut high) = (range.first, range.last.saturating_add(1));
    while low < high {
        let middle = low + (high - low) / 2;
        if predicate(middle) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(positions: &[Position]) -> PositionIndex<String> {
        let index = PositionIndex::default();
        for &p in positions {
            index.push(&"k".to_string(), p);
        }
        index
    }

    #[test]
    fn select_respects_range_and_limit() {
        let index = index_of(&[2, 3, 5, 8, 13, 21]);
        let check = |first, last, limit, expected: &[Position]| {
            assert_eq!(
                index.select("k", PositionRange::new(first, last), limit),
                expected,
                "{first}..={last}"
            );
            let all = index.select("k", PositionRange::new(first, last), usize::MAX);
            assert_eq!(index.count("k", PositionRange::new(first, last)), all.len());
        };
        check(1, 100, 100, &[2, 3, 5, 8, 13, 21]);
        check(4, 13, 100, &[5, 8, 13]);
        check(5, 5, 100, &[5]);
        check(6, 7, 100, &[]);
        check(9, 4, 100, &[]);
        check(1, 100, 2, &[2, 3]);
        check(14, Position::MAX, 1, &[21]);
        assert!(index.select("missing", PositionRange::ALL, 10).is_empty());
        assert_eq!(index.last_in("k", PositionRange::new(1, 12)), Some(8));
        assert_eq!(index.last_in("k", PositionRange::new(1, 1)), None);
        assert_eq!(index.key_and_len("k"), Some(("k".to_string(), 6)));
        assert_eq!(index.key_and_len("missing"), None);
    }

    #[test]
    fn push_checked_counts_and_take_back_undoes() {
        let index: PositionIndex<String> = PositionIndex::default();
        let refuse = |_: &String, _: usize| Err("refused");
        assert_eq!(index.push_checked("a".to_string(), 1, refuse), Err("refused"));
        assert!(!index.contains_key("a"), "a refused first push adds no key");
        let mut seen = Vec::new();
        let mut push = |key: &str, position| {
            index.push_checked(key.to_string(), position, |stored: &String, n| {
                seen.push((stored.clone(), n));
                Ok::<(), ()>(())
            })
        };
        assert_eq!(push("a", 1), Ok(("a".to_string(), 1)));
        assert_eq!(push("a", 2), Ok(("a".to_string(), 2)));
        assert_eq!(push("b", 3), Ok(("b".to_string(), 1)));
        let expected: Vec<(String, usize)> = vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)];
        assert_eq!(seen, expected);
        assert_eq!(index.push_checked("a".to_string(), 4, refuse), Err("refused"));
        assert_eq!(index.select("a", PositionRange::ALL, 10), [1, 2]);

        index.take_back("a", 1);
        assert_eq!(index.select("a", PositionRange::ALL, 10), [1, 2], "only the last position is taken back");
        index.take_back("b", 3);
        assert!(!index.contains_key("b"), "a key left empty is forgotten");
        index.take_back("a", 2);
        assert_eq!(index.key_and_len("a"), Some(("a".to_string(), 1)));
        index.take_back("missing", 9);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn id_index_keeps_first_position() {
        let ids = IdIndex::default();
        let id = Uuid::from_u128(7);
        assert_eq!(ids.insert(id, 3), None);
        assert_eq!(ids.insert(id, 9), Some(3));
        assert_eq!(ids.get(&id), Some(3));
        assert_eq!(ids.get(&Uuid::nil()), None);
    }

    /// A UUIDv7 at `millis`, ordered by `counter` within the millisecond, as the store
    /// makes them.
    fn v7(millis: u64, counter: u16, random: u64) -> Uuid {
        let mut bytes = [0u8; 10];
        bytes[..2].copy_from_slice(&counter.to_be_bytes());
        bytes[2..].copy_from_slice(&random.to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid()
    }

    fn now_millis() -> u64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        u64::try_from(now.as_millis()).unwrap()
    }

    #[test]
    fn increasing_ids_go_to_the_ordered_run_and_others_to_the_map() {
        let ids = IdIndex::default();
        let start = now_millis() - 10_000;
        for i in 0..3 * list::BLOCK as u64 {
            assert_eq!(ids.insert(v7(start + i / 7, (i % 7) as u16, i), i + 1), None);
        }
        assert!(ids.others.is_empty());
        // A client's UUIDv4, a UUIDv7 out of order, one from an hour ahead.
        let v4 = uuid::Builder::from_random_bytes([0xAB; 16]).into_uuid();
        let behind = v7(start, 0, 12_345);
        let ahead = v7(now_millis() + 3_600_000, 0, 0);
        assert_eq!(ids.insert(v4, 100_000), None);
        assert_eq!(ids.insert(behind, 100_001), None);
        assert_eq!(ids.insert(ahead, 100_002), None);
        assert_eq!(ids.others.len(), 3);
        // The store's next id still joins the run.
        let next = v7(start + 3 * list::BLOCK as u64, 0, 0);
        assert_eq!(ids.insert(next, 100_003), None);
        assert_eq!(ids.others.len(), 3);
        assert_eq!(ids.len(), 3 * list::BLOCK + 4);
        for (id, position) in [(v4, 100_000), (behind, 100_001), (ahead, 100_002), (next, 100_003)] {
            assert_eq!(ids.get(&id), Some(position));
            assert_eq!(ids.insert(id, 1), Some(position));
        }
        assert_eq!(ids.get(&v7(start + 5, 0, 35)), Some(36));
        assert_eq!(ids.get(&v7(start + 5, 0, 36)), None);
    }

    proptest::proptest! {
        /// Whatever the mix of ids (the store's increasing UUIDv7s, random UUIDv4s,
        /// repeats, UUIDv7s from a little or far ahead), the index answers as a map
        /// that keeps each id's first position.
        #[test]
        fn the_id_index_agrees_with_a_map(ops in proptest::collection::vec((0u8..6, proptest::prelude::any::<u64>()), 1..400)) {
            let ids = IdIndex::default();
            let mut model = std::collections::HashMap::new();
            let mut seen: Vec<Uuid> = Vec::new();
            let now = now_millis();
            let mut millis = now - 1_000_000;
            for (i, (kind, bits)) in ops.into_iter().enumerate() {
                let position = i as Position + 1;
                let id = match kind {
                    0 | 1 => {
                        millis += bits % 2;
                        v7(millis, i as u16, bits)
                    }
                    2 => uuid::Builder::from_random_bytes([bits.to_le_bytes(), bits.to_be_bytes()].concat().try_into().unwrap()).into_uuid(),
                    3 if !seen.is_empty() => seen[bits as usize % seen.len()],
                    4 => v7(now + 10_000, i as u16, bits),
                    _ => v7(now + 3_600_000 + bits % 1000, i as u16, bits),
                };
                proptest::prop_assert_eq!(ids.insert(id, position), model.get(&id).copied());
                model.entry(id).or_insert(position);
                seen.push(id);
            }
            proptest::prop_assert_eq!(ids.len(), model.len());
            for (id, position) in &model {
                proptest::prop_assert_eq!(ids.get(id), Some(*position));
            }
            proptest::prop_assert_eq!(ids.get(&Uuid::nil()), None);
        }
    }

    #[test]
    fn binary_search_over_positions() {
        // Timestamps along positions 1..=10, non-decreasing with repeats.
        let timestamps = [10, 10, 20, 20, 20, 30, 40, 40, 50, 60];
        let ts = |p: Position| timestamps[(p - 1) as usize];
        let range = PositionRange::new(1, 10);
        for bound in [0, 10, 15, 20, 25, 60, 61] {
            let found = first_position_where(range, |p| ts(p) >= bound);
            let expected = (1..=10).find(|&p| ts(p) >= bound).unwrap_or(11);
            assert_eq!(found, expected, "bound {bound}");
        }
        assert_eq!(first_position_where(PositionRange::new(5, 4), |_| true), 5);
    }

    #[test]
    fn concurrent_pushes_keep_lists_sorted() {
        let index: PositionIndex<u32> = PositionIndex::default();
        std::thread::scope(|scope| {
            for key in 0..4u32 {
                let index = &index;
                scope.spawn(move || {
                    for i in 0..10_000u64 {
                        index.push(&key, i * 4 + u64::from(key) + 1);
                    }
                });
            }
        });
        for key in 0..4u32 {
            let list = index.select(&key, PositionRange::ALL, usize::MAX);
            assert_eq!(list.len(), 10_000);
            assert!(list.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
