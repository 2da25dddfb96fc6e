//! The limits of the contract, as named constants, enforced at the edge.

/// Smallest length of an entity id or event type, in bytes.
pub const ID_BYTES_MIN: usize = 1;
/// Largest length of an entity id or event type, in bytes.
pub const ID_BYTES_MAX: usize = 256;
/// Largest payload, as compact JSON, in bytes (1 MiB).
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// Largest metadata object, as compact JSON, in bytes (64 KiB).
pub const METADATA_BYTES_MAX: usize = 64 * 1024;
/// Most events in one atomic batch.
pub const BATCH_EVENTS_MAX: usize = 10_000;
/// Largest HTTP request body, in bytes (16 MiB).
pub const REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest page a query may ask for.
pub const QUERY_LIMIT_MAX: usize = 10_000;
/// The page size of a query that does not ask for one.
pub const QUERY_LIMIT_DEFAULT: usize = 1_000;
/// Most bytes of payload and metadata text in one page of a query (not the contract's:
/// its pages hold "at most `limit`" events). A page stops before the event that would
/// pass it, and `next_after` continues from there; a page always holds one event. Without
/// it, 10,000 events of 1 MiB payloads would make one 10 GiB answer in memory.
pub const PAGE_TEXT_BYTES_MAX: usize = 64 * 1024 * 1024;

// A single event of the largest size must fit in a request, with room for its fields.
const _: () = assert!(PAYLOAD_BYTES_MAX + METADATA_BYTES_MAX + 4 * ID_BYTES_MAX < REQUEST_BYTES_MAX);
const _: () = assert!(QUERY_LIMIT_DEFAULT <= QUERY_LIMIT_MAX);
// A page of the largest events still holds several.
const _: () = assert!(PAGE_TEXT_BYTES_MAX >= 16 * (PAYLOAD_BYTES_MAX + METADATA_BYTES_MAX));
const _: () = assert!(ID_BYTES_MIN <= ID_BYTES_MAX);
