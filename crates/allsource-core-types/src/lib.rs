//! The event model of AllSource: plain data, validation and errors, no I/O.
//!
//! Untrusted input arrives as a [`NewEvent`] (strings and JSON as the client sent
//! them). [`ProposedEvent::try_from`] checks every rule of the contract once; code
//! behind that edge takes the typed values and never checks again. The store turns
//! a proposal into an [`Event`] by giving it a position, a version and a timestamp.
//!
//! ```
//! use allsource_core_types::{Event, ProposedEvent};
//! use serde_json::json;
//!
//! let new_event = Event::new("user.created".into(), "user-123".into(), json!({"name": "Alice"}));
//! let proposal = ProposedEvent::try_from(new_event).unwrap();
//! assert_eq!(proposal.entity_id.as_str(), "user-123");
//!
//! let bad = Event::new("".into(), "user-123".into(), json!({}));
//! assert_eq!(ProposedEvent::try_from(bad).unwrap_err().code(), "ValidationError");
//! ```

mod error;
mod event;
mod ids;
mod json;
pub mod limits;
mod query;
mod time;

pub use error::{Error, Result};
pub use event::{Event, IntoProposal, NewEvent, ProposedEvent, RawNewEvent};
pub use ids::{EntityId, EventType};
pub use json::{next_quote_or_backslash, Json};
pub use query::{Query, QueryEventsRequest};
pub use time::Timestamp;

/// Shards of the engine's large concurrent maps (the indexes, the entity snapshots). A
/// shard that outgrows its table rehashes every entry into one twice the size while it
/// holds the shard's lock, and the engine indexes under its sequencer lock: with
/// DashMap's default (4 per core, 8 here) a shard of the id index held 250K ids at 2M
/// events and stalled every append for up to 48 ms while it grew. With 256 shards each
/// growth moves 32 times fewer entries.
pub const MAP_SHARDS: usize = 256;

/// An event's number in the whole log: 1 for the first event ever, gapless.
pub type Position = u64;

/// An event's number within its entity: 1 for the entity's first event, gapless.
pub type Version = u64;

/// Writes one JSON value to the writer it is given: how a projection hands its state to
/// a checkpoint, which writes it straight to the file (a state can be hundreds of
/// megabytes) after taking it quickly under the engine's locks.
pub type JsonWriter = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;
