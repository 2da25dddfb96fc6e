//! The in-memory table of committed events, addressed by position.
//!
//! Events live in fixed-size chunks, so finding an event by position is arithmetic
//! (chunk = (position - 1) / CHUNK_EVENTS) plus one row read, and growing the table
//! never moves an event. A chunk is *open* while it fills: one slot per position, set
//! once by the engine's apply step, in position order. Once every position of a chunk
//! is committed, the sealer turns it into a *sealed* chunk: one Arrow record batch of
//! the documented schema (`allsource_storage::columnar`), with no heap object per
//! event. At start-up the chunks recovered from Parquet files are sealed chunks from
//! the start. Readers read positions at or below the committed watermark only.

use std::sync::{Arc, OnceLock};

use allsource_core_types::{Error, Event, EventType, Position, Timestamp, Version};
use allsource_storage::columnar::EventColumns;
use parking_lot::RwLock;
use uuid::Uuid;

/// Events per chunk; a power of two so that the arithmetic is a shift and a mask.
pub(crate) const CHUNK_EVENTS: usize = 1 << 16;
const _: () = assert!(CHUNK_EVENTS.is_power_of_two());

/// A chunk still filling: one slot per position.
type Slots = Arc<[OnceLock<Arc<Event>>]>;

#[derive(Clone)]
enum Chunk {
    Open(Slots),
    Sealed(Arc<SealedChunk>),
}

/// A full chunk as columns, with its event types interned for the engine.
pub struct SealedChunk {
    columns: EventColumns,
    /// The interned event type of each of the columns' dictionary keys.
    event_types: Vec<EventType>,
}

impl SealedChunk {
    fn new(
        columns: EventColumns,
        intern: &mut dyn FnMut(&str) -> Result<EventType, Error>,
    ) -> Result<Self, Error> {
        let event_types = columns.event_type_values().map(&mut *intern).collect::<Result<Vec<_>, _>>()?;
        Ok(SealedChunk { columns, event_types })
    }

    /// The event in `row`, made whole, sharing the interned event type.
    fn event(&self, row: usize) -> Result<Event, Error> {
        let mut event = self.columns.event(row)?;
        if let Some(event_type) = self.event_types.get(self.columns.event_type_key(row)) {
            event.event_type = event_type.clone();
        }
        Ok(event)
    }
}

/// One stored event, without making it whole: an event object of an open chunk, or a
/// row of a sealed chunk. Cheap to make and to clone; reading a field of a row reads
/// the column.
#[derive(Clone)]
pub struct EventView(ViewInner);

#[derive(Clone)]
enum ViewInner {
    Object(Arc<Event>),
    Row(Arc<SealedChunk>, usize),
}

impl EventView {
    /// The event's id.
    pub fn id(&self) -> Uuid {
        match &self.0 {
            ViewInner::Object(e) => e.id,
            ViewInner::Row(c, row) => c.columns.id(*row),
        }
    }

    /// The event's type.
    pub fn event_type(&self) -> &str {
        match &self.0 {
            ViewInner::Object(e) => e.event_type.as_str(),
            ViewInner::Row(c, row) => c.columns.event_type(*row),
        }
    }

    /// The entity the event belongs to.
    pub fn entity_id(&self) -> &str {
        match &self.0 {
            ViewInner::Object(e) => e.entity_id.as_str(),
            ViewInner::Row(c, row) => c.columns.entity_id(*row),
        }
    }

    /// The payload, as compact JSON text.
    pub fn payload(&self) -> &str {
        match &self.0 {
            ViewInner::Object(e) => e.payload.as_str(),
            ViewInner::Row(c, row) => c.columns.payload(*row),
        }
    }

    /// The metadata, as compact JSON text.
    pub fn metadata(&self) -> &str {
        match &self.0 {
            ViewInner::Object(e) => e.metadata.as_str(),
            ViewInner::Row(c, row) => c.columns.metadata(*row),
        }
    }

    /// When the event was appended.
    pub fn timestamp(&self) -> Timestamp {
        match &self.0 {
            ViewInner::Object(e) => e.timestamp,
            ViewInner::Row(c, row) => c.columns.timestamp(*row),
        }
    }

    /// The event's version within its entity.
    pub fn version(&self) -> Version {
        match &self.0 {
            ViewInner::Object(e) => e.version,
            ViewInner::Row(c, row) => c.columns.version(*row),
        }
    }

    /// The event's position in the log.
    pub fn position(&self) -> Position {
        match &self.0 {
            ViewInner::Object(e) => e.position,
            ViewInner::Row(c, row) => c.columns.position(*row),
        }
    }

    /// The event made whole. For a sealed row this copies its texts and checks them
    /// to be JSON once more (what making a [`Json`](allsource_core_types::Json) costs).
    pub fn to_event(&self) -> Result<Arc<Event>, Error> {
        match &self.0 {
            ViewInner::Object(e) => Ok(e.clone()),
            ViewInner::Row(c, row) => c.event(*row).map(Arc::new),
        }
    }

    /// Reads the row's cells without using them (see [`EventColumns::touch`]); an event
    /// object is already at hand.
    fn touch_cells(&self) -> u64 {
        match &self.0 {
            ViewInner::Object(_) => 0,
            ViewInner::Row(c, row) => c.columns.touch(*row),
        }
    }

    /// Appends the event's JSON (the contract's shape, as `serde_json` writes an
    /// [`Event`]) to `out`, copying the payload and metadata texts as they are.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.fields().write_json(out);
    }

    fn fields(&self) -> Fields<'_> {
        Fields {
            id: self.id(),
            event_type: self.event_type(),
            entity_id: self.entity_id(),
            payload: self.payload(),
            metadata: self.metadata(),
            timestamp: self.timestamp(),
            version: self.version(),
            position: self.position(),
        }
    }
}

/// Reads every row's fixed-width cells and text offsets, in one pass with no order
/// among the loads: for a page of rows spread over the log, whose readers then find
/// them in the cache instead of waiting on each row's misses after the last row's.
pub(crate) fn touch_cells(views: &[EventView]) {
    std::hint::black_box(views.iter().fold(0u64, |acc, view| acc ^ view.touch_cells()));
}

/// Appends `views` to `out` as a JSON array, each event as [`EventView::write_json`]
/// writes it. Every event's texts are read before any is copied, one byte a cache line:
/// the reads of rows spread over the log then wait on memory together, not one after
/// another. (A query page has read its rows' cells already: `touch_cells`.)
pub fn write_json_array(views: &[EventView], out: &mut Vec<u8>) {
    let fields: Vec<Fields<'_>> = views.iter().map(EventView::fields).collect();
    // A byte of each cache line of the texts, the last one included.
    let touched = fields.iter().fold(0u8, |acc, event| {
        [event.event_type, event.entity_id, event.payload, event.metadata]
            .iter()
            .flat_map(|text| text.as_bytes().iter().step_by(64).chain(text.as_bytes().last()))
            .fold(acc, |acc, &byte| acc ^ byte)
    });
    std::hint::black_box(touched);
    out.reserve(2 + fields.iter().map(Fields::len_hint).sum::<usize>());
    out.push(b'[');
    for (index, event) in fields.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        event.write_json(out);
    }
    out.push(b']');
}

/// Appends `event` as JSON, as [`EventView::write_json`] writes a stored one and as
/// `serde_json` writes an [`Event`].
pub fn write_event_json(event: &Event, out: &mut Vec<u8>) {
    let fields = Fields {
        id: event.id,
        event_type: event.event_type.as_str(),
        entity_id: event.entity_id.as_str(),
        payload: event.payload.as_str(),
        metadata: event.metadata.as_str(),
        timestamp: event.timestamp,
        version: event.version,
        position: event.position,
    };
    out.reserve(fields.len_hint());
    fields.write_json(out);
}

/// The fields of one event as [`EventView::write_json`] writes them.
struct Fields<'a> {
    id: Uuid,
    event_type: &'a str,
    entity_id: &'a str,
    payload: &'a str,
    metadata: &'a str,
    timestamp: Timestamp,
    version: Version,
    position: Position,
}

impl Fields<'_> {
    /// About the length of the JSON: the texts, and room for the keys, the id, the
    /// timestamp and the numbers.
    fn len_hint(&self) -> usize {
        160 + self.event_type.len() + self.entity_id.len() + self.payload.len() + self.metadata.len()
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":\"");
        let mut id = Uuid::encode_buffer();
        out.extend_from_slice(self.id.hyphenated().encode_lower(&mut id).as_bytes());
        out.extend_from_slice(b"\",\"event_type\":");
        write_json_string(out, self.event_type);
        out.extend_from_slice(b",\"entity_id\":");
        write_json_string(out, self.entity_id);
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(self.payload.as_bytes());
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(self.metadata.as_bytes());
        // Written piece by piece: `write!` through `fmt` was 7% of the server's time
        // under entity queries.
        out.extend_from_slice(b",\"timestamp\":\"");
        self.timestamp.push_rfc3339(out);
        out.extend_from_slice(b"\",\"version\":");
        write_u64(out, self.version);
        out.extend_from_slice(b",\"position\":");
        write_u64(out, self.position);
        out.push(b'}');
    }
}

impl std::fmt::Debug for EventView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut json = Vec::new();
        self.write_json(&mut json);
        f.write_str(&String::from_utf8_lossy(&json))
    }
}

/// Appends `n` in decimal, as `serde_json` writes it (without a formatter).
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `text` as a JSON string, escaped as `serde_json` escapes it.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Ids without characters to escape (nearly all) are copied; the rest go through
    // serde_json, which cannot fail on a Vec.
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// The events `views` (ascending positions) as columns: rows of one sealed chunk are
/// taken from its columns (a slice when consecutive), event objects are converted.
pub(crate) fn columns_of(views: &[EventView]) -> Result<EventColumns, Error> {
    let mut parts: Vec<EventColumns> = Vec::new();
    let mut i = 0;
    while i < views.len() {
        let start = i;
        match &views[i].0 {
            ViewInner::Row(chunk, _) => {
                let mut rows = Vec::new();
                while let Some(ViewInner::Row(c, row)) = views.get(i).map(|v| &v.0) {
                    if !Arc::ptr_eq(c, chunk) {
                        break;
                    }
                    rows.push(*row);
                    i += 1;
                }
                parts.push(chunk.columns.take(&rows)?);
            }
            ViewInner::Object(_) => {
                let mut events = Vec::new();
                while let Some(ViewInner::Object(event)) = views.get(i).map(|v| &v.0) {
                    events.push(event.clone());
                    i += 1;
                }
                parts.push(allsource_storage::columnar::to_columns(&events)?);
            }
        }
        debug_assert!(i > start);
    }
    match parts.len() {
        0 => allsource_storage::columnar::to_columns(&[]),
        1 => Ok(parts.remove(0)),
        _ => EventColumns::concat(&parts),
    }
}

#[derive(Default)]
pub(crate) struct EventTable {
    chunks: RwLock<Vec<Chunk>>,
}

fn slot_of(position: Position) -> Option<(usize, usize)> {
    let index = usize::try_from(position.checked_sub(1)?).ok()?;
    Some((index / CHUNK_EVENTS, index % CHUNK_EVENTS))
}

/// The event at `position` among `chunks`, if stored.
fn view_in(chunks: &[Chunk], position: Position) -> Option<EventView> {
    let (chunk, slot) = slot_of(position)?;
    match chunks.get(chunk)? {
        Chunk::Open(slots) => Some(EventView(ViewInner::Object(slots.get(slot)?.get()?.clone()))),
        Chunk::Sealed(sealed) => {
            (slot < sealed.columns.len()).then(|| EventView(ViewInner::Row(sealed.clone(), slot)))
        }
    }
}

fn open_chunk() -> Chunk {
    Chunk::Open((0..CHUNK_EVENTS).map(|_| OnceLock::new()).collect())
}

impl EventTable {
    /// Stores a committed event at its position. Called in position order only, for
    /// positions after the sealed chunks.
    pub(crate) fn insert(&self, event: Arc<Event>) {
        let Some((chunk, slot)) = slot_of(event.position) else { return };
        let existing = self.chunks.read().get(chunk).cloned();
        let chunk = match existing {
            Some(chunk) => chunk,
            None => {
                let mut chunks = self.chunks.write();
                while chunks.len() <= chunk {
                    chunks.push(open_chunk());
                }
                chunks[chunk].clone()
            }
        };
        if let Chunk::Open(slots) = chunk {
            // A slot is set once; the sequencer never hands out a position twice.
            let _ = slots[slot].set(event);
        }
    }

    /// Makes room for `position` ahead of time if its chunk is the next one: a new
    /// chunk is 65,536 empty slots (1 MiB to allocate and fault in, 2-10 ms measured),
    /// which [`EventTable::insert`] would otherwise make while the engine holds its
    /// sequencer's lock and this table's write lock. Does nothing when the chunk exists
    /// or is not the next one.
    pub(crate) fn reserve(&self, position: Position) {
        let Some((chunk, _)) = slot_of(position) else { return };
        if self.chunks.read().len() != chunk {
            return;
        }
        let fresh = open_chunk(); // with no lock held
        let mut chunks = self.chunks.write();
        if chunks.len() == chunk {
            chunks.push(fresh);
        }
    }

    /// The event at `position`, if stored, without making it whole.
    pub(crate) fn view(&self, position: Position) -> Option<EventView> {
        view_in(&self.chunks.read(), position)
    }

    /// The events at `positions` (ascending), if stored, taking the table's lock once.
    pub(crate) fn views(&self, positions: &[Position]) -> Vec<EventView> {
        let chunks = self.chunks.read();
        positions.iter().filter_map(|&position| view_in(&chunks, position)).collect()
    }

    /// The event at `position`, if stored, made whole.
    pub(crate) fn get(&self, position: Position) -> Option<Arc<Event>> {
        match self.view(position)?.to_event() {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::error!(%error, position, "a sealed row does not make an event");
                None
            }
        }
    }

    /// The timestamp of the event at `position`, without cloning the event.
    pub(crate) fn timestamp(&self, position: Position) -> Option<Timestamp> {
        let (chunk, slot) = slot_of(position)?;
        match self.chunks.read().get(chunk)? {
            Chunk::Open(slots) => Some(slots.get(slot)?.get()?.timestamp),
            Chunk::Sealed(sealed) => (slot < sealed.columns.len()).then(|| sealed.columns.timestamp(slot)),
        }
    }

    /// How many events are held as columns (in sealed chunks), and the bytes of those
    /// columns.
    pub(crate) fn columnar(&self) -> (u64, u64) {
        self.chunks.read().iter().fold((0, 0), |(events, bytes), chunk| match chunk {
            Chunk::Sealed(sealed) => {
                (events + sealed.columns.len() as u64, bytes + sealed.columns.memory_bytes() as u64)
            }
            Chunk::Open(_) => (events, bytes),
        })
    }

    /// The open chunks whose every position is at or below `committed`: the chunks to
    /// seal, by index.
    pub(crate) fn full_open_chunks(&self, committed: Position) -> Vec<usize> {
        let full = usize::try_from(committed).unwrap_or(usize::MAX) / CHUNK_EVENTS;
        let chunks = self.chunks.read();
        (0..full.min(chunks.len())).filter(|&i| matches!(chunks[i], Chunk::Open(_))).collect()
    }

    /// Turns the full open chunk `index` into a sealed one (its events as columns).
    /// Readers holding its events keep them; new reads read the columns. `written` is
    /// what the log has just sealed: kept as the chunk's columns when it holds exactly
    /// this chunk's rows (made from the same events by the same function), instead of
    /// building the same columns a second time.
    pub(crate) fn seal(
        &self,
        index: usize,
        written: &EventColumns,
        intern: &mut dyn FnMut(&str) -> Result<EventType, Error>,
    ) -> Result<(), Error> {
        let Some(Chunk::Open(slots)) = self.chunks.read().get(index).cloned() else { return Ok(()) };
        let first = (index * CHUNK_EVENTS) as Position + 1;
        let columns = if written.len() == CHUNK_EVENTS && written.position(0) == first {
            written.clone()
        } else {
            let events =
                slots.iter().map(|slot| slot.get().cloned()).collect::<Option<Vec<_>>>().ok_or_else(
                    || Error::Internal(format!("chunk {index} is not full; it cannot be sealed")),
                )?;
            allsource_storage::columnar::to_columns(&events)?
        };
        let sealed = Chunk::Sealed(Arc::new(SealedChunk::new(columns, intern)?));
        self.chunks.write()[index] = sealed;
        Ok(())
    }

    /// Loads recovered sealed events (positions from 1, gapless, already checked) into
    /// an empty table: every full chunk of them as a sealed chunk, the rows after the
    /// last full chunk (fewer than a chunk) as events in the open chunk. Returns those
    /// events, for the caller to index like any other.
    pub(crate) fn load_sealed(
        &self,
        sealed: &[EventColumns],
        intern: &mut dyn FnMut(&str) -> Result<EventType, Error>,
    ) -> Result<Vec<Arc<Event>>, Error> {
        let total: usize = sealed.iter().map(EventColumns::len).sum();
        let full = total / CHUNK_EVENTS;
        let mut chunks = Vec::with_capacity(full + 1);
        // Walk the recovered chunks, cutting and joining them at chunk boundaries.
        let mut parts: Vec<EventColumns> = Vec::new();
        let mut in_parts = 0;
        let mut rest = Vec::new();
        for columns in sealed {
            let mut offset = 0;
            while offset < columns.len() {
                if chunks.len() == full {
                    for row in offset..columns.len() {
                        rest.push(Arc::new(columns.event(row)?));
                    }
                    break;
                }
                let take = (CHUNK_EVENTS - in_parts).min(columns.len() - offset);
                parts.push(if offset == 0 && take == columns.len() {
                    columns.clone()
                } else {
                    columns.slice(offset, take)
                });
                in_parts += take;
                offset += take;
                if in_parts == CHUNK_EVENTS {
                    let joined = match <[_; 1]>::try_from(std::mem::take(&mut parts)) {
                        Ok([one]) => one,
                        Err(many) => EventColumns::concat(&many)?,
                    };
                    in_parts = 0;
                    chunks.push(Chunk::Sealed(Arc::new(SealedChunk::new(joined, intern)?)));
                }
            }
        }
        let mut table = self.chunks.write();
        table.clear();
        table.extend(chunks);
        drop(table);
        for event in &rest {
            self.insert(event.clone());
        }
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use allsource_core_types::{EntityId, Timestamp};
    use serde_json::json;

    use super::*;

    fn event(position: Position) -> Arc<Event> {
        Arc::new(Event {
            id: Uuid::from_u128(u128::from(position)),
            event_type: EventType::try_from("t").unwrap(),
            entity_id: EntityId::try_from("e").unwrap(),
            payload: json!({"p": position}).into(),
            metadata: json!({}).into(),
            timestamp: Timestamp::from_micros(position as i64),
            version: position,
            position,
        })
    }

    #[test]
    fn a_reserved_chunk_is_the_one_inserts_fill() {
        let table = EventTable::default();
        let chunk = CHUNK_EVENTS as Position;
        // Only the next chunk is made: not one past a gap, not one that exists.
        table.reserve(chunk + 1);
        assert_eq!(table.chunks.read().len(), 0);
        table.reserve(1);
        table.reserve(1);
        assert_eq!(table.chunks.read().len(), 1);
        for position in [1, 2, chunk - 1, chunk] {
            table.insert(event(position));
        }
        table.reserve(chunk + 1);
        assert_eq!(table.chunks.read().len(), 2);
        for position in [chunk + 1, chunk + 2] {
            table.insert(event(position));
        }
        assert_eq!(table.chunks.read().len(), 2, "inserts used the reserved chunk");
        for position in [1, 2, chunk - 1, chunk, chunk + 1, chunk + 2] {
            assert_eq!(table.get(position).map(|e| e.position), Some(position));
        }
        assert!(table.get(3).is_none());
    }
}
