//! AllSource as a library: the [`EventStore`] engine and everything a user needs to
//! drive it, re-exported so that one dependency is enough.
//!
//! An append flows through one short critical section (the sequencer), which checks
//! `expected_version` and duplicate ids and assigns position, version and timestamp;
//! then the commit step (the [`Log`] seam of `allsource-storage`); then the event
//! becomes visible: table, indexes, projections, committed watermark. Readers never see
//! a position above the watermark.
//!
//! ```
//! use allsource_core::{Event, EventStore, QueryEventsRequest};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), allsource_core::Error> {
//! let store = EventStore::new();
//! store.ingest(Event::new("user.created".into(), "user-123".into(), json!({"name": "Alice"})))?;
//! store.ingest(Event::new("user.renamed".into(), "user-123".into(), json!({"name": "Alicia"})))?;
//!
//! let page = store.query(QueryEventsRequest { entity_id: Some("user-123".into()), ..Default::default() })?;
//! assert_eq!(page.events.len(), 2);
//!
//! let state = store.reconstruct_state("user-123", None)?;
//! assert_eq!(state.state, json!({"name": "Alicia"}));
//! assert_eq!(state.version, 2);
//! assert_eq!(store.snapshot("user-123")?, state);
//! # Ok(())
//! # }
//! ```

mod commit;
mod ids;
mod store;
mod table;

pub use allsource_core_types::{
    limits, EntityId, Error, Event, EventType, IntoProposal, NewEvent, Position, ProposedEvent, Query,
    QueryEventsRequest, RawNewEvent, Result, Timestamp, Version,
};
pub use allsource_storage::{
    DurableLog, HistogramSnapshot, Log, LogInfo, MemoryLog, Recovered, RecoveryReport, SyncMode, Wal,
    WalConfig, CHUNK_EVENTS_DEFAULT, SEGMENT_BYTES_MAX_DEFAULT,
};
pub use commit::Ticket;
pub use store::{Appended, BatchAppended, EntityState, EventStore, ExportFormat, QueryPage, Stats, ViewPage};
pub use table::{write_event_json, write_json_array, write_json_string, write_u64, EventView};

/// Projections: the trait to implement for a custom one, and the built-in ones.
pub mod projection {
    pub use allsource_projection::{
        apply_merge_patch, merge_patch_compact, EntitySnapshots, EventCounters, Projection,
        ProjectionRegistry, Snapshot,
    };
}

/// The columnar form of events: the Arrow schema of IPC responses, exports and
/// Parquet files, and the conversions to and from it.
pub use allsource_storage::columnar;

/// The UUID type of event ids.
pub use uuid::Uuid;
