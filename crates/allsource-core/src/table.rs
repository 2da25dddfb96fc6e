//! The in-memory table of committed events, addressed by position.
//!
//! Events live in fixed-size chunks, so finding an event by position is arithmetic
//! (chunk = (position - 1) / CHUNK_EVENTS) plus one slot read, and growing the table
//! never moves an event. Only the engine's apply step writes, one position after the
//! other; readers read positions at or below the committed watermark, which the apply
//! step advances only after the slots are filled.

use std::sync::{Arc, OnceLock};

use allsource_core_types::{Event, Position, Timestamp};
use parking_lot::RwLock;

/// Events per chunk; a power of two so that the arithmetic is a shift and a mask.
const CHUNK_EVENTS: usize = 1 << 16;
const _: () = assert!(CHUNK_EVENTS.is_power_of_two());

type Chunk = Arc<[OnceLock<Arc<Event>>]>;

#[derive(Default)]
pub(crate) struct EventTable {
    chunks: RwLock<Vec<Chunk>>,
}

fn slot_of(position: Position) -> Option<(usize, usize)> {
    let index = usize::try_from(position.checked_sub(1)?).ok()?;
    Some((index / CHUNK_EVENTS, index % CHUNK_EVENTS))
}

impl EventTable {
    /// Stores a committed event at its position. Called in position order only.
    pub(crate) fn insert(&self, event: Arc<Event>) {
        let Some((chunk, slot)) = slot_of(event.position) else { return };
        let existing = self.chunks.read().get(chunk).cloned();
        let chunk = match existing {
            Some(chunk) => chunk,
            None => {
                let mut chunks = self.chunks.write();
                while chunks.len() <= chunk {
                    chunks.push((0..CHUNK_EVENTS).map(|_| OnceLock::new()).collect());
                }
                chunks[chunk].clone()
            }
        };
        // A slot is set once; the sequencer never hands out a position twice.
        let _ = chunk[slot].set(event);
    }

    /// The event at `position`, if stored.
    pub(crate) fn get(&self, position: Position) -> Option<Arc<Event>> {
        let (chunk, slot) = slot_of(position)?;
        self.chunks.read().get(chunk)?.get(slot)?.get().cloned()
    }

    /// The timestamp of the event at `position`, without cloning the event.
    pub(crate) fn timestamp(&self, position: Position) -> Option<Timestamp> {
        let (chunk, slot) = slot_of(position)?;
        Some(self.chunks.read().get(chunk)?.get(slot)?.get()?.timestamp)
    }
}
