//! Storage: where committed events are kept. All of AllSource's file I/O lives here.
//!
//! The engine's write path has one commit step, and [`Log`] is its seam: the engine
//! sequences a batch (positions, versions, timestamps), hands it to the log, and makes
//! it visible to readers only once [`Log::append`] has returned `Ok`. [`MemoryLog`]
//! keeps nothing beyond the process (the engine's own tables are the only copy); the
//! durable logs plug in behind the same trait.
//!
//! ```
//! use allsource_storage::{Log, MemoryLog};
//! let log = MemoryLog::default();
//! assert!(log.recover().unwrap().is_empty());
//! assert_eq!(log.describe().kind, "memory");
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use allsource_core_types::{Error, Event, Position};
use serde::Serialize;

pub mod archive;
pub mod columnar;
mod durable;
pub mod fs;
mod histogram;
pub mod sim;
mod wal;

pub use durable::{DurableLog, WAL_DIR};
pub use histogram::{AtomicHistogram, HistogramSnapshot, EVENTS_PER_SYNC_BOUNDS, SYNC_MICROS_BOUNDS};
pub use wal::{
    Preallocate, RecoveryBase, RecoveryReport, SyncMode, Wal, WalConfig, CHUNK_EVENTS_DEFAULT,
    SEGMENT_BYTES_MAX_DEFAULT,
};

/// The commit step of the engine's write path.
///
/// The engine calls [`Log::append`] with batches in position order: each batch's
/// positions are consecutive and follow the previous batch's. A log must either make
/// the whole batch as durable as it promises and return `Ok`, or return an error, in
/// which case the engine acknowledges nothing of the batch and stops accepting
/// writes.
pub trait Log: Send + Sync {
    /// Keeps a sequenced batch. Returns once it is as durable as this log promises.
    fn append(&self, events: &[Arc<Event>]) -> Result<(), Error>;

    /// Every event already kept, in position order, for the engine to rebuild its
    /// tables at start-up.
    fn recover(&self) -> Result<Recovered, Error>;

    /// What the log is and how much it holds, for `stats`.
    fn describe(&self) -> LogInfo;

    /// Events per sealed chunk, for a log that seals committed events into longer-term
    /// storage: the engine calls [`Log::seal`] whenever that many committed events
    /// follow [`Log::sealed_position`]. `None` (the default): the log does not seal.
    fn chunk_events(&self) -> Option<u64> {
        None
    }

    /// The last sealed position (0 when nothing is sealed).
    fn sealed_position(&self) -> Position {
        0
    }

    /// Seals committed events, the positions right after [`Log::sealed_position`].
    /// Returns them as the columns (of [`columnar::schema`]) it sealed, for the engine
    /// to keep in memory instead of building the same columns again.
    fn seal(&self, events: &[Arc<Event>]) -> Result<columnar::EventColumns, Error> {
        let _ = events;
        Err(Error::Internal("this log does not seal chunks".to_string()))
    }

    /// Merges small sealed chunks (at most one run per call); returns whether it merged
    /// anything. The default has nothing to merge.
    fn compact(&self) -> Result<bool, Error> {
        Ok(false)
    }

    /// Keeps a projection checkpoint, replacing the previous one. The default keeps
    /// nothing.
    fn write_checkpoint(&self, checkpoint: archive::NewCheckpoint) -> Result<(), Error> {
        let _ = checkpoint;
        Ok(())
    }

    /// The projection checkpoint kept, if any, for the engine to check against the log
    /// and restore.
    fn read_checkpoint(&self) -> Option<archive::Checkpoint> {
        None
    }
}

/// The events a log holds at start-up, in position order: the sealed chunks' as
/// columns, then the rest (the WAL tail) as events.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The sealed chunks, in position order, from position 1.
    pub sealed: Vec<columnar::EventColumns>,
    /// The events after them.
    pub tail: Vec<Event>,
}

impl Recovered {
    /// How many events there are.
    pub fn len(&self) -> usize {
        self.sealed.iter().map(columnar::EventColumns::len).sum::<usize>() + self.tail.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every event made whole, in position order: for tests and tools (the engine
    /// keeps sealed events as columns).
    pub fn into_events(self) -> Result<Vec<Event>, Error> {
        let mut events = Vec::with_capacity(self.len());
        for chunk in &self.sealed {
            for row in 0..chunk.len() {
                events.push(chunk.event(row)?);
            }
        }
        events.extend(self.tail);
        Ok(events)
    }
}

/// A description of a log and its figures, for operators (`GET /api/v1/stats`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct LogInfo {
    /// `"memory"` or `"wal"`.
    pub kind: &'static str,
    /// Whether an acknowledged event survives the process.
    pub durable: bool,
    /// The last position kept (0 when empty).
    pub last_position: Position,
    /// The data directory, for a durable log on the real file system.
    pub data_dir: Option<String>,
    /// When an append is acknowledged: `"always"` (after fdatasync), `"none"`, or
    /// `"memory"`.
    pub sync: &'static str,
    /// Bytes in WAL segments.
    pub wal_bytes: u64,
    /// WAL segment files.
    pub segments: u64,
    /// fdatasync calls made for records since start-up.
    pub syncs: u64,
    /// Events covered by those syncs (divided by `syncs`: events per sync).
    pub synced_events: u64,
    /// How long the last record's fdatasync took, in microseconds.
    pub last_sync_micros: u64,
    /// How long each record's fdatasync took, in microseconds (bounds
    /// [`SYNC_MICROS_BOUNDS`]); for metrics, not in the stats' JSON.
    #[serde(skip)]
    pub sync_micros: HistogramSnapshot,
    /// How many events each fdatasync covered (bounds [`EVENTS_PER_SYNC_BOUNDS`]); its
    /// sum is `synced_events`. For metrics, not in the stats' JSON.
    #[serde(skip)]
    pub events_per_sync: HistogramSnapshot,
    /// The last position sealed into a Parquet chunk (0: none).
    pub sealed_position: Position,
    /// Sealed chunks (Parquet files).
    pub chunks: u64,
    /// Bytes in sealed chunks.
    pub chunk_bytes: u64,
}

/// A log that keeps nothing beyond the process: for tests, demos and `--in-memory`.
/// The engine's in-memory tables are the only copy of the events.
#[derive(Debug, Default)]
pub struct MemoryLog {
    last_position: AtomicU64,
}

impl Log for MemoryLog {
    fn append(&self, events: &[Arc<Event>]) -> Result<(), Error> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let previous = self.last_position.load(Ordering::Relaxed);
        // The engine's contract with every log: batches arrive gapless, in order.
        if first.position != previous + 1 || last.position != previous + events.len() as Position {
            return Err(Error::Internal(format!(
                "log received positions {}..={} after {previous}",
                first.position, last.position
            )));
        }
        self.last_position.store(last.position, Ordering::Relaxed);
        Ok(())
    }

    fn recover(&self) -> Result<Recovered, Error> {
        Ok(Recovered::default())
    }

    fn describe(&self) -> LogInfo {
        LogInfo {
            kind: "memory",
            durable: false,
            last_position: self.last_position.load(Ordering::Relaxed),
            sync: "memory",
            ..LogInfo::default()
        }
    }
}
