//! Sorted lists (one key's positions; the ordered ids) stored so that growing never
//! moves many items.
//!
//! A `Vec` doubles when it is full: it allocates twice the room and copies every
//! item across, while the index holds the key's lock (and the engine its sequencer's).
//! For an event type with 2M events that is a 16 MB copy, and it grows with the log.
//! So a list is a plain `Vec` up to [`BLOCK`] items (most entities never get there),
//! then full blocks of [`BLOCK`] that never move again, plus the block being filled: a
//! push copies at most one block.

use allsource_core_types::Position;

/// Items per block: 64 KiB of positions.
pub(crate) const BLOCK: usize = 8 * 1024;

/// A list of items in increasing order.
#[derive(Debug)]
pub(crate) enum BlockList<T> {
    /// Up to [`BLOCK`] items.
    Small(Vec<T>),
    /// More: boxed, so that the short lists of most keys stay the size of a `Vec`.
    Blocks(Box<Blocks<T>>),
}

/// One key's positions.
pub(crate) type PositionList = BlockList<Position>;

#[derive(Debug)]
pub(crate) struct Blocks<T> {
    /// Full blocks of exactly [`BLOCK`] items each.
    full: Vec<Box<[T]>>,
    /// The block being filled: at most [`BLOCK`] items.
    tail: Vec<T>,
}

impl<T> Default for BlockList<T> {
    fn default() -> Self {
        BlockList::Small(Vec::new())
    }
}

impl<T: Copy> BlockList<T> {
    /// How many items.
    pub(crate) fn len(&self) -> usize {
        match self {
            BlockList::Small(list) => list.len(),
            BlockList::Blocks(blocks) => blocks.full.len() * BLOCK + blocks.tail.len(),
        }
    }

    /// The last item, if any.
    pub(crate) fn last(&self) -> Option<T> {
        match self {
            BlockList::Small(list) => list.last().copied(),
            BlockList::Blocks(blocks) => {
                blocks.tail.last().or_else(|| blocks.full.last().and_then(|block| block.last())).copied()
            }
        }
    }

    /// Appends `item`, larger than every item in the list.
    pub(crate) fn push(&mut self, item: T) {
        match self {
            BlockList::Small(list) if list.len() < BLOCK => list.push(item),
            BlockList::Small(list) => {
                let first = std::mem::take(list).into_boxed_slice();
                let mut tail = Vec::with_capacity(BLOCK);
                tail.push(item);
                *self = BlockList::Blocks(Box::new(Blocks { full: vec![first], tail }));
            }
            BlockList::Blocks(blocks) => {
                if blocks.tail.len() == BLOCK {
                    let full = std::mem::replace(&mut blocks.tail, Vec::with_capacity(BLOCK));
                    blocks.full.push(full.into_boxed_slice());
                }
                blocks.tail.push(item);
            }
        }
    }

    /// Removes the last item and returns it: a push taken back.
    pub(crate) fn pop(&mut self) -> Option<T> {
        match self {
            BlockList::Small(list) => list.pop(),
            BlockList::Blocks(blocks) => {
                if blocks.tail.is_empty() {
                    // The last full block becomes the block being filled again.
                    blocks.tail = blocks.full.pop()?.into_vec();
                }
                let item = blocks.tail.pop();
                if blocks.full.is_empty() {
                    *self = BlockList::Small(std::mem::take(&mut blocks.tail));
                }
                item
            }
        }
    }

    /// The number of leading items for which `predicate` holds, where it holds for a
    /// prefix of the list (as `p < bound` does): a binary search.
    pub(crate) fn partition_point(&self, predicate: impl Fn(&T) -> bool) -> usize {
        match self {
            BlockList::Small(list) => list.partition_point(predicate),
            BlockList::Blocks(blocks) => {
                // The first block whose last item fails holds the boundary.
                let whole = blocks.full.partition_point(|block| block.last().is_some_and(&predicate));
                match blocks.full.get(whole) {
                    Some(block) => whole * BLOCK + block.partition_point(predicate),
                    None => whole * BLOCK + blocks.tail.partition_point(predicate),
                }
            }
        }
    }

    /// The item at `index` (below [`BlockList::len`]).
    pub(crate) fn get(&self, index: usize) -> Option<T> {
        match self {
            BlockList::Small(list) => list.get(index).copied(),
            BlockList::Blocks(blocks) => match blocks.full.get(index / BLOCK) {
                Some(block) => block.get(index % BLOCK).copied(),
                None => blocks.tail.get(index - blocks.full.len() * BLOCK).copied(),
            },
        }
    }

    /// The items at indexes `start..end`, copied out.
    pub(crate) fn copy_range(&self, start: usize, end: usize) -> Vec<T> {
        let end = end.min(self.len());
        let mut out = Vec::with_capacity(end.saturating_sub(start));
        match self {
            BlockList::Small(list) => out.extend_from_slice(list.get(start..end).unwrap_or_default()),
            BlockList::Blocks(blocks) => {
                let mut offset = 0;
                let segments = blocks.full.iter().map(|block| &block[..]).chain([&blocks.tail[..]]);
                for segment in segments {
                    let (from, to) = (start.max(offset), end.min(offset + segment.len()));
                    if from < to {
                        out.extend_from_slice(&segment[from - offset..to - offset]);
                    }
                    offset += segment.len();
                    if offset >= end {
                        break;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A list of `n` positions: 3, 6, 9, ...
    fn list_of(n: usize) -> PositionList {
        let mut list = PositionList::default();
        for i in 1..=n as Position {
            list.push(i * 3);
        }
        list
    }

    #[test]
    fn short_lists_are_as_small_as_a_vec() {
        assert_eq!(std::mem::size_of::<PositionList>(), std::mem::size_of::<Vec<Position>>());
    }

    #[test]
    fn lists_become_blocks_past_one_block() {
        assert!(matches!(list_of(BLOCK), BlockList::Small(_)));
        let BlockList::Blocks(blocks) = list_of(3 * BLOCK + 1) else { panic!("not blocks") };
        assert_eq!(blocks.full.len(), 3);
        assert!(blocks.full.iter().all(|block| block.len() == BLOCK));
        assert_eq!(blocks.tail, [(3 * BLOCK as Position + 1) * 3]);
    }

    proptest! {
        /// Every read agrees with a plain sorted `Vec`, at every length around block
        /// boundaries.
        #[test]
        fn reads_agree_with_a_vec(
            blocks in 0usize..4,
            extra in prop_oneof![Just(0usize), Just(1), 2usize..BLOCK],
            bound in 0u64..(5 * BLOCK as u64 * 3),
            start in 0usize..(5 * BLOCK),
            take in 0usize..(2 * BLOCK),
        ) {
            let n = blocks * BLOCK + extra;
            let list = list_of(n);
            let model: Vec<Position> = (1..=n as Position).map(|i| i * 3).collect();
            prop_assert_eq!(list.len(), model.len());
            prop_assert_eq!(list.last(), model.last().copied());
            prop_assert_eq!(list.partition_point(|&p| p < bound), model.partition_point(|&p| p < bound));
            prop_assert_eq!(list.partition_point(|&p| p <= bound), model.partition_point(|&p| p <= bound));
            prop_assert_eq!(list.get(start), model.get(start).copied());
            let end = start.saturating_add(take);
            let expected = model.get(start.min(n)..end.min(n)).unwrap_or_default();
            prop_assert_eq!(list.copy_range(start, end), expected);
        }

        /// Pops take back pushes, across block boundaries, and the list reads as the
        /// shorter `Vec`; pushes after them land where they should.
        #[test]
        fn pops_agree_with_a_vec(
            blocks in 0usize..3,
            extra in prop_oneof![Just(0usize), Just(1), 2usize..BLOCK],
            pops in prop_oneof![Just(0usize), Just(1), 2usize..(2 * BLOCK + 2)],
            pushes in 0usize..(BLOCK + 2),
        ) {
            let n = blocks * BLOCK + extra;
            let mut list = list_of(n);
            let mut model: Vec<Position> = (1..=n as Position).map(|i| i * 3).collect();
            for _ in 0..pops {
                prop_assert_eq!(list.pop(), model.pop());
            }
            let next = model.last().copied().unwrap_or(0);
            for i in 1..=pushes as Position {
                list.push(next + i);
                model.push(next + i);
            }
            prop_assert_eq!(list.len(), model.len());
            prop_assert_eq!(list.last(), model.last().copied());
            prop_assert_eq!(list.copy_range(0, usize::MAX), model.clone());
            if let BlockList::Blocks(blocks) = &list {
                prop_assert!(!blocks.full.is_empty());
                prop_assert!(blocks.full.iter().all(|block| block.len() == BLOCK));
                prop_assert!(blocks.tail.len() <= BLOCK);
            }
        }
    }
}
