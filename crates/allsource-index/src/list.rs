//! One key's positions, in increasing order, stored so that growing never moves many.
//!
//! A `Vec` doubles when it is full: it allocates twice the room and copies every
//! position across, while the index holds the key's lock (and the engine its
//! sequencer's). For an event type with 2M events that is a 16 MB copy, and it grows
//! with the log. So a list is a plain `Vec` up to [`BLOCK`] positions (most entities
//! never get there), then full blocks of [`BLOCK`] that never move again, plus the
//! block being filled: a push copies at most one block.

use allsource_core_types::Position;

/// Positions per block: 64 KiB.
pub(crate) const BLOCK: usize = 8 * 1024;

/// A sorted list of positions.
#[derive(Debug)]
pub(crate) enum PositionList {
    /// Up to [`BLOCK`] positions.
    Small(Vec<Position>),
    /// More: boxed, so that the short lists of most keys stay the size of a `Vec`.
    Blocks(Box<Blocks>),
}

#[derive(Debug)]
pub(crate) struct Blocks {
    /// Full blocks of exactly [`BLOCK`] positions each.
    full: Vec<Box<[Position]>>,
    /// The block being filled: fewer than [`BLOCK`] positions.
    tail: Vec<Position>,
}

impl Default for PositionList {
    fn default() -> Self {
        PositionList::Small(Vec::new())
    }
}

impl PositionList {
    /// How many positions.
    pub(crate) fn len(&self) -> usize {
        match self {
            PositionList::Small(list) => list.len(),
            PositionList::Blocks(blocks) => blocks.full.len() * BLOCK + blocks.tail.len(),
        }
    }

    /// The last position, if any.
    pub(crate) fn last(&self) -> Option<Position> {
        match self {
            PositionList::Small(list) => list.last().copied(),
            PositionList::Blocks(blocks) => {
                blocks.tail.last().or_else(|| blocks.full.last().and_then(|block| block.last())).copied()
            }
        }
    }

    /// Appends `position`, larger than every position in the list.
    pub(crate) fn push(&mut self, position: Position) {
        match self {
            PositionList::Small(list) if list.len() < BLOCK => list.push(position),
            PositionList::Small(list) => {
                let first = std::mem::take(list).into_boxed_slice();
                let mut tail = Vec::with_capacity(BLOCK);
                tail.push(position);
                *self = PositionList::Blocks(Box::new(Blocks { full: vec![first], tail }));
            }
            PositionList::Blocks(blocks) => {
                if blocks.tail.len() == BLOCK {
                    let full = std::mem::replace(&mut blocks.tail, Vec::with_capacity(BLOCK));
                    blocks.full.push(full.into_boxed_slice());
                }
                blocks.tail.push(position);
            }
        }
    }

    /// The number of leading positions for which `predicate` holds, where it holds for
    /// a prefix of the list (as `p < bound` does): a binary search.
    pub(crate) fn partition_point(&self, predicate: impl Fn(Position) -> bool) -> usize {
        match self {
            PositionList::Small(list) => list.partition_point(|&p| predicate(p)),
            PositionList::Blocks(blocks) => {
                // The first block whose last position fails holds the boundary.
                let whole = blocks.full.partition_point(|block| block.last().is_some_and(|&p| predicate(p)));
                match blocks.full.get(whole) {
                    Some(block) => whole * BLOCK + block.partition_point(|&p| predicate(p)),
                    None => whole * BLOCK + blocks.tail.partition_point(|&p| predicate(p)),
                }
            }
        }
    }

    /// The position at `index` (below [`PositionList::len`]).
    pub(crate) fn get(&self, index: usize) -> Option<Position> {
        match self {
            PositionList::Small(list) => list.get(index).copied(),
            PositionList::Blocks(blocks) => match blocks.full.get(index / BLOCK) {
                Some(block) => block.get(index % BLOCK).copied(),
                None => blocks.tail.get(index - blocks.full.len() * BLOCK).copied(),
            },
        }
    }

    /// The positions at indexes `start..end`, copied out.
    pub(crate) fn copy_range(&self, start: usize, end: usize) -> Vec<Position> {
        let end = end.min(self.len());
        let mut out = Vec::with_capacity(end.saturating_sub(start));
        match self {
            PositionList::Small(list) => out.extend_from_slice(list.get(start..end).unwrap_or_default()),
            PositionList::Blocks(blocks) => {
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
        assert!(matches!(list_of(BLOCK), PositionList::Small(_)));
        let PositionList::Blocks(blocks) = list_of(3 * BLOCK + 1) else { panic!("not blocks") };
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
            prop_assert_eq!(list.partition_point(|p| p < bound), model.partition_point(|&p| p < bound));
            prop_assert_eq!(list.partition_point(|p| p <= bound), model.partition_point(|&p| p <= bound));
            prop_assert_eq!(list.get(start), model.get(start).copied());
            let end = start.saturating_add(take);
            let expected = model.get(start.min(n)..end.min(n)).unwrap_or_default();
            prop_assert_eq!(list.copy_range(start, end), expected);
        }
    }
}
