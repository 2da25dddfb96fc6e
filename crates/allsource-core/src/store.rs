//! The engine: sequencing, the commit step, and every read.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use allsource_core_types::limits::{BATCH_EVENTS_MAX, PAGE_TEXT_BYTES_MAX};
use allsource_core_types::{
    EntityId, Error, Event, EventType, IntoProposal, NewEvent, Position, ProposedEvent, Query,
    QueryEventsRequest, Result, Timestamp, Version,
};
use allsource_index::{first_position_where, IdIndex, PositionIndex, PositionRange};
use allsource_projection::{Projection, ProjectionRegistry, Snapshot};
use allsource_storage::archive::{Checkpoint, NewCheckpoint};
use allsource_storage::columnar::{EventColumns, IpcStreamWriter, ParquetFileWriter};
use allsource_storage::{DurableLog, Log, LogInfo, MemoryLog, Recovered, RecoveryReport, WalConfig};
use foldhash::fast::RandomState;
use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::commit::{Ticket, Waiters};
use crate::ids::IdGenerator;
use crate::table::{columns_of, touch_cells, EventTable, EventView, CHUNK_EVENTS};

/// The result of appending one event.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored event.
    pub event: Arc<Event>,
    /// `true` when this call appended it; `false` for an idempotent retry of an event
    /// already stored (same id, same content), which appends nothing.
    pub created: bool,
}

/// The result of appending a batch.
#[derive(Debug, Clone)]
pub struct BatchAppended {
    /// One stored event per item of the batch, in the batch's order.
    pub events: Vec<Arc<Event>>,
    /// How many of them this call appended (the others were idempotent retries).
    pub created: usize,
}

/// One page of a query's answer.
#[derive(Debug, Clone, Default)]
pub struct QueryPage {
    /// The matching events, in ascending position, at most the query's limit.
    pub events: Vec<Arc<Event>>,
    /// The last returned position when more events match, to pass as `after`.
    pub next_after: Option<Position>,
}

/// One page of a query's answer, the events as [`EventView`]s.
#[derive(Debug, Clone, Default)]
pub struct ViewPage {
    /// The matching events, in ascending position, at most the query's limit.
    pub events: Vec<EventView>,
    /// The last returned position when more events match, to pass as `after`.
    pub next_after: Option<Position>,
}

/// The formats of [`EventStore::export`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    ArrowIpc,
    /// A Parquet file, zstd-compressed, with column statistics.
    Parquet,
}

enum ExportSink<W: std::io::Write + Send> {
    Ipc(IpcStreamWriter<W>),
    Parquet(ParquetFileWriter<W>),
}

/// An entity's state, rebuilt by replay or read from the snapshot projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityState {
    /// The entity.
    pub entity_id: String,
    /// Its events' payloads merged in order (RFC 7386).
    pub state: Value,
    /// The version of the last event applied.
    pub version: Version,
    /// The timestamp of the last event applied.
    pub last_event_at: Timestamp,
    /// The time the state was asked for, if any.
    pub as_of: Option<Timestamp>,
}

/// Counts over the whole store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events in the store, recovered ones included.
    pub total_events: u64,
    /// Entities with at least one event.
    pub total_entities: u64,
    /// Distinct event types.
    pub total_event_types: u64,
    /// Events appended by this process since it started.
    pub total_ingested: u64,
    /// Whether the store refuses writes after a storage failure.
    pub read_only: bool,
    /// Events held in memory as Arrow columns (sealed chunks) rather than as event
    /// objects.
    pub columnar_events: u64,
    /// The bytes of those columns.
    pub columnar_bytes: u64,
    /// The log behind the store.
    #[serde(skip)]
    pub log: LogInfo,
}

/// What the sequencer owns: everything an append must check or assign.
struct Sequencer {
    /// The position the next event gets.
    next_position: Position,
    /// The timestamp of the last event sequenced; the next is never earlier.
    last_timestamp: Timestamp,
    /// The interned event types.
    event_types: HashSet<EventType, RandomState>,
    /// Makes the ids of events that come without one.
    ids: IdGenerator,
}

/// What the sequencer decided for one item of a batch.
enum Decision {
    /// A new event, to append.
    New(Arc<Event>),
    /// An idempotent retry of this stored (or in-flight) event.
    Existing(Arc<Event>),
}

impl Decision {
    fn event(&self) -> &Arc<Event> {
        match self {
            Decision::New(event) | Decision::Existing(event) => event,
        }
    }
}

/// A checkpoint during operation is written once at least this many events per entity
/// were committed since the last one. A checkpoint writes every entity's state, which
/// costs about as much as merging an event into one; so this spends about an eighth of
/// the merging work on checkpoints, and a crash restart replays at most 8 events per
/// entity that a checkpoint at the crash would have spared it (1.8 µs each, measured
/// with 100K entities: at most 1.5 s). With 4, checkpoints took over half of the
/// sealer's time under batch appends to 100K entities; 16 would let a crash restart of
/// the footprint bench's 10M events take about 10.7 s, past its 10 s target.
const CHECKPOINT_EVENTS_PER_ENTITY: u64 = 8;

/// Sequenced events waiting for the group-commit writer.
#[derive(Default)]
struct Queue {
    events: Vec<Arc<Event>>,
    shutdown: bool,
}

/// An event store: append, query, replay, project.
///
/// Thread-safe: share it behind an `Arc` between any number of writers and readers.
/// Appends are sequenced under one short critical section; readers take no lock that
/// an append holds for long, and never see a position above the committed watermark.
///
/// With a durable log, one writer thread commits every pending append with one log
/// write (group commit); an append returns once the write covering it is durable.
/// Dropping the store commits what is queued, then stops the writer.
pub struct EventStore {
    inner: Arc<Inner>,
    /// The writer and sealer threads of a durable store.
    threads: Vec<std::thread::JoinHandle<()>>,
}

struct Inner {
    log: Box<dyn Log>,
    sequencer: Mutex<Sequencer>,
    /// The last position that is committed and visible to readers.
    committed: AtomicU64,
    /// Filled at sequencing time; readers only look at positions up to `committed`.
    table: EventTable,
    /// Each entity's positions, sequenced ones included, so also its version (how many
    /// it has); its keys are the interned entity ids, which every event of an entity
    /// shares. Grown only under the sequencer's lock.
    entities: PositionIndex<EntityId>,
    event_types: PositionIndex<EventType>,
    ids: IdIndex,
    projections: ProjectionRegistry,
    /// Serializes feeding committed events to projections with registering one.
    apply_lock: Mutex<()>,
    ingested: AtomicU64,
    /// The failure that made the store read-only, if any.
    failure: Mutex<Option<Error>>,
    /// `Some` when a writer thread commits in groups; `None` to commit inline.
    queue: Option<(Mutex<Queue>, Condvar)>,
    waiters: Waiters,
    /// Wakes the sealer when a chunk is due; its flag says "stop".
    sealer: (Mutex<bool>, Condvar),
    /// Called with the new committed position each time it advances.
    commit_listeners: RwLock<Vec<CommitListener>>,
}

/// A function [`EventStore::on_commit`] calls with the new committed position.
type CommitListener = Box<dyn Fn(Position) + Send + Sync>;

impl Default for EventStore {
    fn default() -> Self {
        EventStore::new()
    }
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Drop for EventStore {
    fn drop(&mut self) {
        if let Some((queue, ready)) = &self.inner.queue {
            queue.lock().shutdown = true;
            ready.notify_all();
        }
        // The writer drains and publishes the queue, then ends; only then is the sealer
        // stopped, so that its last seal covers every event.
        let sealer = (self.threads.len() > 1).then(|| self.threads.pop()).flatten();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a commit thread panicked");
            }
        }
        *self.inner.sealer.0.lock() = true;
        self.inner.sealer.1.notify_all();
        if let Some(sealer) = sealer {
            if sealer.join().is_err() {
                tracing::error!("the sealer thread panicked");
            }
        }
    }
}

impl EventStore {
    /// An empty store that keeps its events in memory only.
    pub fn new() -> EventStore {
        let inner = Inner::new(Box::new(MemoryLog::default()), false);
        EventStore { inner: Arc::new(inner), threads: Vec::new() }
    }

    /// A store over `log`, with the events the log already holds recovered: their
    /// positions and versions are checked to be gapless, and the indexes and
    /// projections rebuilt. A durable log gets a group-commit writer thread.
    pub fn open(log: Box<dyn Log>) -> Result<EventStore> {
        let group_commit = log.describe().durable;
        let recovered = log.recover()?;
        let inner = Arc::new(Inner::new(log, group_commit));
        let checkpoint = inner.log.read_checkpoint();
        let checkpointed = inner.recover(recovered, checkpoint)?;
        let mut store = EventStore { inner, threads: Vec::new() };
        if group_commit {
            let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn(work)
                    .map_err(|e| Error::Internal(format!("cannot start thread {name}: {e}")))
            };
            let inner = store.inner.clone();
            store.threads.push(spawn("allsource-commit", Box::new(move || inner.run_writer()))?);
            if let Some(chunk_events) = store.inner.log.chunk_events() {
                let inner = store.inner.clone();
                store.threads.push(spawn(
                    "allsource-seal",
                    Box::new(move || inner.run_sealer(chunk_events, checkpointed)),
                )?);
            }
        }
        Ok(store)
    }

    /// Opens the durable store in `data_dir` (created if missing): takes the
    /// directory's lock, loads the sealed Parquet chunks and recovers the write-ahead
    /// log after them (cutting a torn tail, refusing corruption), rebuilds indexes and
    /// projections, and starts the commit threads.
    pub fn open_dir(data_dir: &std::path::Path, config: WalConfig) -> Result<(EventStore, RecoveryReport)> {
        let (log, mut report) = DurableLog::open_dir(data_dir, config)?;
        let started = std::time::Instant::now();
        let store = EventStore::open(Box::new(log))?;
        report.rebuild_time = started.elapsed();
        Ok((store, report))
    }

    /// Appends one event and returns it as stored: the seed's name for [`EventStore::append`].
    pub fn ingest(&self, event: NewEvent) -> Result<Arc<Event>> {
        self.append(event).map(|appended| appended.event)
    }

    /// Appends one event, returning once it is committed. An event whose id is already
    /// stored with the same content is an idempotent retry: it returns the stored
    /// event with `created: false` and appends nothing.
    pub fn append(&self, event: impl IntoProposal) -> Result<Appended> {
        let (decision, ticket) = self.submit(event)?;
        ticket.wait()?;
        Ok(decision)
    }

    /// [`EventStore::append`] for async callers: waits for the commit without blocking
    /// a thread.
    pub async fn append_async(&self, event: impl IntoProposal) -> Result<Appended> {
        let (decision, ticket) = self.submit(event)?;
        ticket.await?;
        Ok(decision)
    }

    fn submit(&self, event: impl IntoProposal) -> Result<(Appended, Ticket)> {
        let proposal = event.into_proposal()?;
        let (mut decisions, ticket) = self.inner.sequence(vec![proposal], false)?;
        let appended = match decisions.pop() {
            Some(Decision::New(event)) => Appended { event, created: true },
            Some(Decision::Existing(event)) => Appended { event, created: false },
            None => return Err(Error::Internal("append produced no event".to_string())),
        };
        Ok((appended, ticket))
    }

    /// Appends 1..=10,000 events atomically: all get consecutive positions, or none is
    /// appended. An error names the index of the item it is about.
    pub fn append_batch<E: IntoProposal>(&self, events: Vec<E>) -> Result<BatchAppended> {
        let (appended, ticket) = self.submit_batch(events)?;
        ticket.wait()?;
        Ok(appended)
    }

    /// [`EventStore::append_batch`] for async callers.
    pub async fn append_batch_async<E: IntoProposal>(&self, events: Vec<E>) -> Result<BatchAppended> {
        let (appended, ticket) = self.submit_batch(events)?;
        ticket.await?;
        Ok(appended)
    }

    fn submit_batch<E: IntoProposal>(&self, events: Vec<E>) -> Result<(BatchAppended, Ticket)> {
        if events.is_empty() || events.len() > BATCH_EVENTS_MAX {
            return Err(Error::Validation(format!(
                "a batch must have 1..={BATCH_EVENTS_MAX} events, got {}",
                events.len()
            )));
        }
        let proposals = events
            .into_iter()
            .enumerate()
            .map(|(index, event)| event.into_proposal().map_err(|e| e.at_batch_item(index)))
            .collect::<Result<Vec<_>>>()?;
        let (decisions, ticket) = self.inner.sequence(proposals, true)?;
        let created = decisions.iter().filter(|d| matches!(d, Decision::New(_))).count();
        let events = decisions.into_iter().map(|d| d.event().clone()).collect();
        Ok((BatchAppended { events, created }, ticket))
    }
}

impl Inner {
    fn new(log: Box<dyn Log>, group_commit: bool) -> Inner {
        Inner {
            log,
            sequencer: Mutex::new(Sequencer {
                next_position: 1,
                last_timestamp: Timestamp::MIN,
                event_types: HashSet::default(),
                ids: IdGenerator::new(),
            }),
            committed: AtomicU64::new(0),
            table: EventTable::default(),
            entities: PositionIndex::default(),
            event_types: PositionIndex::default(),
            ids: IdIndex::default(),
            projections: ProjectionRegistry::default(),
            apply_lock: Mutex::new(()),
            ingested: AtomicU64::new(0),
            failure: Mutex::new(None),
            queue: group_commit.then(|| (Mutex::new(Queue::default()), Condvar::new())),
            waiters: Waiters::default(),
            sealer: (Mutex::new(false), Condvar::new()),
            commit_listeners: RwLock::new(Vec::new()),
        }
    }

    /// Rebuilds every table from the log's events, checking that positions and
    /// versions are gapless and timestamps never go back. Sealed chunks stay columns:
    /// their rows are indexed, not made into events.
    ///
    /// A projection checkpoint that matches the log (the event at its position has its
    /// id and timestamp) is restored, and those projections see only the events after
    /// it; one that does not match is ignored, never trusted.
    /// Returns the position the projection checkpoint on disk covers (0: none that
    /// matched), so that a clean stop writes a new one when it is behind.
    fn recover(&self, recovered: Recovered, checkpoint: Option<Checkpoint>) -> Result<Position> {
        let mut sequencer = self.sequencer.lock();
        let Sequencer { event_types, next_position, last_timestamp, .. } = &mut *sequencer;
        let mut intern_type = |text: &str| intern_event_type(event_types, text);
        self.table.load_sealed(&recovered.sealed, &mut intern_type)?;
        let mut check = |position: Position, entity: &str, version: Version, timestamp: Timestamp| {
            if position != *next_position {
                return Err(Error::Internal(format!(
                    "recovered position {position} where {next_position} was expected"
                )));
            }
            // The entity's positions so far are its versions 1..=n.
            let entity_id = match self.entities.key_and_len(entity) {
                Some((entity_id, n)) if version == n as Version + 1 => entity_id,
                None if version == 1 => EntityId::try_from(entity)?,
                other => {
                    return Err(Error::Internal(format!(
                        "recovered version {version} of entity '{entity}' where {} was expected",
                        other.map_or(0, |(_, n)| n) + 1
                    )))
                }
            };
            if timestamp < *last_timestamp {
                return Err(Error::Internal(format!(
                    "recovered timestamp at position {position} goes back in time"
                )));
            }
            *next_position += 1;
            *last_timestamp = timestamp;
            Ok(entity_id)
        };
        // The id index is built on another thread meanwhile: it needs no check.
        std::thread::scope(|scope| -> Result<()> {
            scope.spawn(|| {
                for columns in &recovered.sealed {
                    for row in 0..columns.len() {
                        self.ids.insert(columns.id(row), columns.position(row));
                    }
                }
            });
            for columns in &recovered.sealed {
                let types =
                    columns.event_type_values().map(&mut intern_type).collect::<Result<Vec<EventType>>>()?;
                let mut by_type: Vec<Vec<Position>> = vec![Vec::new(); types.len()];
                for row in 0..columns.len() {
                    let position = columns.position(row);
                    let entity_id = check(
                        position,
                        columns.entity_id(row),
                        columns.version(row),
                        columns.timestamp(row),
                    )?;
                    let of_type = by_type.get_mut(columns.event_type_key(row)).ok_or_else(|| {
                        Error::Internal(format!("recovered position {position}: no event type"))
                    })?;
                    of_type.push(position);
                    self.entities.push(&entity_id, position);
                }
                for (event_type, positions) in types.into_iter().zip(by_type) {
                    self.event_types.extend(event_type, &positions);
                }
            }
            Ok(())
        })?;
        for event in recovered.tail {
            let entity_id = check(event.position, event.entity_id.as_str(), event.version, event.timestamp)?;
            let event_type = intern_type(event.event_type.as_str())?;
            let event = Arc::new(Event { entity_id, event_type, ..event });
            self.entities.push(&event.entity_id, event.position);
            self.index(&event);
        }
        let last = *next_position - 1;
        drop(sequencer);
        self.committed.store(last, Ordering::Release);

        let (restored, restored_through) = self.restore_checkpoint(checkpoint, last);
        let names = self.projections.names();
        let all_restored = names.iter().all(|name| restored.contains(name));
        let first = if all_restored { restored_through + 1 } else { 1 };
        for position in first..=last {
            let event = self.table.get(position).ok_or_else(|| {
                Error::Internal(format!("recovered position {position} is missing from the table"))
            })?;
            let except: &[String] = if position <= restored_through { &restored } else { &[] };
            self.publish_except(&event, except);
        }
        Ok(restored_through)
    }

    /// Restores the projections from `checkpoint` if it matches the recovered log
    /// (which ends at `last`); returns the names restored and the position they are
    /// restored to.
    fn restore_checkpoint(&self, checkpoint: Option<Checkpoint>, last: Position) -> (Vec<String>, Position) {
        let Some(checkpoint) = checkpoint else { return (Vec::new(), 0) };
        let matches = (1..=last).contains(&checkpoint.position)
            && self.table.view(checkpoint.position).is_some_and(|e| {
                e.position() == checkpoint.position
                    && e.id() == checkpoint.event_id
                    && e.timestamp().as_micros() == checkpoint.timestamp_micros
            });
        if !matches {
            tracing::warn!(
                position = checkpoint.position,
                "ignoring a projection checkpoint that does not match the log"
            );
            return (Vec::new(), 0);
        }
        match self.projections.restore(checkpoint.projections) {
            Ok(restored) => {
                tracing::info!(position = checkpoint.position, projections = ?restored, "restored projections from a checkpoint");
                (restored, checkpoint.position)
            }
            Err((projection, error)) => {
                tracing::warn!(projection, %error, "ignoring a projection checkpoint that does not restore");
                (Vec::new(), 0)
            }
        }
    }

    /// Checkpoints the projections at the committed position (those that must be
    /// exact, between two published groups; those that may run ahead, after); returns
    /// that position. A failure is logged: a checkpoint only saves replay time.
    fn write_checkpoint(&self) -> Option<Position> {
        let mut checkpoint = {
            let _apply = self.apply_lock.lock();
            let position = self.committed.load(Ordering::Acquire);
            let event = self.table.view(position)?;
            NewCheckpoint {
                position,
                event_id: event.id(),
                timestamp_micros: event.timestamp().as_micros(),
                projections: self.projections.checkpoint(false),
            }
        };
        // The entity snapshots (most of a checkpoint's work: one state per entity) are
        // taken with appends flowing: they may run ahead of the position, which their
        // versions make harmless. Every state is written out after, with no lock held.
        checkpoint.projections.extend(self.projections.checkpoint(true));
        let position = checkpoint.position;
        match self.log.write_checkpoint(checkpoint) {
            Ok(()) => Some(position),
            Err(error) => {
                tracing::warn!(%error, "could not write a projection checkpoint");
                None
            }
        }
    }

    fn failure(&self) -> Option<Error> {
        self.failure.lock().clone()
    }

    /// Turns the store read-only after a failed write: appends are refused from now
    /// on. Returns the error to report to the appenders still waiting.
    fn mark_failed(&self, error: Error) -> Error {
        let error = match error {
            Error::Storage { message, .. } => Error::Storage { message, read_only: true },
            other => Error::Storage { message: other.to_string(), read_only: true },
        };
        {
            let mut failure = self.failure.lock();
            if failure.is_none() {
                tracing::error!(%error, "commit failed; the store is now read-only");
                *failure = Some(error.clone());
            }
        }
        error
    }

    /// The sequencer: checks and assigns under one lock, then commits inline or hands
    /// the events to the group-commit writer. Returns a ticket that completes when
    /// every decided event is committed.
    fn sequence(&self, proposals: Vec<ProposedEvent>, is_batch: bool) -> Result<(Vec<Decision>, Ticket)> {
        let mut sequencer = self.sequencer.lock();
        let timestamp = Timestamp::now().max(sequencer.last_timestamp);
        let mut decisions = Vec::with_capacity(proposals.len());
        let mut new_events: Vec<Arc<Event>> = Vec::with_capacity(proposals.len());
        // Each new event's position goes to its entity's list as the event is decided,
        // so that the list's length is the entity's version for the items after it; a
        // batch refused later takes those back. Readers see none of it: they stop at the
        // committed position.
        let decided =
            self.decide(&mut sequencer, proposals, is_batch, timestamp, &mut decisions, &mut new_events);
        // A read-only store still answers what needs no write: a retry of stored events
        // (its ticket fails if one of them never became durable), and `decide`'s
        // refusals, which a client must see rather than a storage error.
        let decided = decided.and_then(|()| match self.failure() {
            Some(error) if !new_events.is_empty() => Err(error),
            _ => Ok(()),
        });
        if let Err(error) = decided {
            for event in new_events.iter().rev() {
                self.entities.take_back(&event.entity_id, event.position);
            }
            return Err(error);
        }
        let target = decisions.iter().map(|d| d.event().position).max().unwrap_or(0);
        if new_events.is_empty() {
            drop(sequencer);
            return Ok((decisions, self.ticket(target)));
        }

        // Every check passed: the batch is in. Record it, invisible to readers until
        // the committed watermark passes it.
        sequencer.next_position += new_events.len() as Position;
        sequencer.last_timestamp = timestamp;
        for event in &new_events {
            if !sequencer.event_types.contains(&event.event_type) {
                sequencer.event_types.insert(event.event_type.clone());
            }
            self.index(event);
        }
        match &self.queue {
            Some((queue, ready)) => {
                queue.lock().events.extend(new_events);
                drop(sequencer);
                // Outside the sequencer's lock: waking an idle writer is a system call,
                // which the next appender would otherwise wait out. None is lost: the
                // writer looks at the queue, under its lock, before it waits.
                ready.notify_one();
                Ok((decisions, self.ticket(target)))
            }
            None => {
                // Inline commit, still under the sequencer's lock, so commits happen
                // in position order.
                let result = self.commit(&new_events);
                drop(sequencer);
                result.map(|()| (decisions, Ticket::ready(Ok(()))))
            }
        }
    }

    /// The sequencer's checks, under its lock: decides each proposal (a stored event
    /// for a retried id, or a new event with its position and version) into
    /// `decisions`, the new ones also into `new_events`, their positions pushed to
    /// their entities' lists. Stops at the first refusal.
    fn decide(
        &self,
        sequencer: &mut Sequencer,
        proposals: Vec<ProposedEvent>,
        is_batch: bool,
        timestamp: Timestamp,
        decisions: &mut Vec<Decision>,
        new_events: &mut Vec<Arc<Event>>,
    ) -> Result<()> {
        let item_error =
            |error: Error, index: usize| if is_batch { error.at_batch_item(index) } else { error };
        // Ids taken by earlier items of this batch (unused for one event).
        let mut batch_ids: HashSet<Uuid, RandomState> = HashSet::default();
        for (index, proposal) in proposals.into_iter().enumerate() {
            let id = match proposal.id {
                Some(id) => {
                    // Sequenced events are in the table already, committed or not.
                    if let Some(position) = self.ids.get(&id) {
                        // Never append a second event with this id, even if the stored
                        // one cannot be read back.
                        let existing = self.table.get(position).ok_or_else(|| {
                            Error::Internal(format!("event {id} at position {position} cannot be read"))
                        })?;
                        if !existing.same_content(&proposal) {
                            return Err(item_error(duplicate_id_error(id), index));
                        }
                        decisions.push(Decision::Existing(existing));
                        continue;
                    }
                    if is_batch && !batch_ids.insert(id) {
                        return Err(item_error(
                            Error::DuplicateEventId {
                                id,
                                message: format!("event id '{id}' appears twice in the batch"),
                            },
                            index,
                        ));
                    }
                    id
                }
                None => sequencer.ids.next(timestamp),
            };
            let position = sequencer.next_position + new_events.len() as Position;
            // An entity's version is how many events it has: the entity index holds
            // every sequenced event, committed or not. The event shares the entity id
            // and type already in use (a text longer than 23 bytes is then stored
            // once; shorter ones are held inline).
            let expected_version = proposal.expected_version;
            let (entity_id, version) = self
                .entities
                .push_checked(proposal.entity_id, position, |entity_id, current| {
                    let current = current as Version;
                    match expected_version {
                        Some(expected) if expected != current => Err(Error::ConcurrencyConflict {
                            expected_version: expected,
                            current_version: current,
                            message: format!(
                                "entity '{entity_id}' is at version {current}, not the expected {expected}"
                            ),
                        }),
                        _ => Ok(()),
                    }
                })
                .map_err(|error| item_error(error, index))?;
            let event_type = match sequencer.event_types.get(&proposal.event_type) {
                Some(event_type) => event_type.clone(),
                None => proposal.event_type,
            };
            let event = Arc::new(Event {
                id,
                event_type,
                entity_id,
                payload: proposal.payload_json,
                metadata: proposal.metadata,
                timestamp,
                version: version as Version,
                position,
            });
            new_events.push(event.clone());
            decisions.push(Decision::New(event));
        }
        Ok(())
    }

    fn ticket(&self, target: Position) -> Ticket {
        self.waiters.ticket(target, || self.committed.load(Ordering::Acquire), || self.failure())
    }

    /// Puts a sequenced event in the table and the indexes but the entity index (which
    /// has it already). Readers still cannot see it.
    fn index(&self, event: &Arc<Event>) {
        self.table.insert(event.clone());
        self.ids.insert(event.id, event.position);
        self.event_types.push(&event.event_type, event.position);
    }

    /// The commit step for a group of sequenced events: the log write, then the
    /// publication; inline (in-memory log) or on the group-commit writer's thread.
    fn commit(&self, events: &[Arc<Event>]) -> Result<()> {
        if let Some(error) = self.failure() {
            self.waiters.fail(&error);
            return Err(error);
        }
        if let Err(error) = self.log.append(events) {
            let error = self.mark_failed(error);
            self.waiters.fail(&error);
            return Err(error);
        }
        self.publish_group(events);
        Ok(())
    }

    /// Makes a durable group visible, in position order: the projections, then the
    /// watermark, then the waiters.
    fn publish_group(&self, events: &[Arc<Event>]) {
        let Some(last) = events.last() else { return };
        {
            let _apply = self.apply_lock.lock();
            for event in events {
                self.publish_except(event, &[]);
            }
            // One step for the whole group, so that readers see a batch whole or not
            // at all. (The snapshot projection may run ahead of queries by the group
            // being published; both agree once the append is acknowledged.)
            self.committed.store(last.position, Ordering::Release);
        }
        // Before the appenders wake: when an append returns, listeners have heard of it.
        for listener in self.commit_listeners.read().iter() {
            listener(last.position);
        }
        self.ingested.fetch_add(events.len() as u64, Ordering::Relaxed);
        self.waiters.committed(last.position);
        // Only when a chunk is due: waking the sealer after every group costs a context
        // switch each time. A sealer busy sealing checks again before it waits. (The
        // log's sealed position takes a short lock: a seal holds it only to read and to
        // swap its chunk list, not while it writes.)
        let sealed = self.log.sealed_position();
        let chunk_due = self
            .log
            .chunk_events()
            .is_some_and(|chunk_events| last.position.saturating_sub(sealed) >= chunk_events);
        if chunk_due {
            // Taking the sealer's lock orders this wake-up after its last check.
            drop(self.sealer.0.lock());
            self.sealer.1.notify_one();
        }
    }

    /// The sealer: whenever `chunk_events` committed events follow the last sealed
    /// position, hands them to the log to seal (a Parquet chunk). When the store is
    /// dropped it seals the full chunks still due, then ends. A failed seal loses
    /// nothing (the WAL still holds every event): it is logged, and sealing stops until
    /// the store is reopened.
    ///
    /// It also merges small chunks (left by earlier shutdowns) at start and after each
    /// seal, and writes the projection checkpoints: after a seal when enough events
    /// have been committed since the last one to pay for it (a checkpoint costs time in
    /// proportion to the entities, a replay in proportion to the events). When the
    /// store is dropped it seals what is left as a partial chunk and checkpoints, so
    /// that the data directory is Parquet files plus an empty WAL tail and a clean
    /// restart replays nothing.
    /// `checkpointed` is the position the checkpoint on disk covers (0: none usable).
    fn run_sealer(&self, chunk_events: u64, checkpointed: Position) {
        let (stop, wake) = &self.sealer;
        let mut checkpointed = checkpointed;
        self.compact_all();
        loop {
            {
                let mut stopped = stop.lock();
                loop {
                    let sealed = self.log.sealed_position();
                    if self.committed.load(Ordering::Acquire).saturating_sub(sealed) >= chunk_events {
                        break;
                    }
                    if *stopped {
                        drop(stopped);
                        self.seal_rest_at_shutdown();
                        if self.committed.load(Ordering::Acquire) > checkpointed {
                            self.write_checkpoint();
                        }
                        return;
                    }
                    wake.wait(&mut stopped);
                }
            }
            // Woken at a chunk's end: the table chunk after the one being filled now is
            // made here, before the seal and a checkpoint take their time, rather than on
            // the append path when the first event reaches it.
            self.table.reserve(self.committed.load(Ordering::Acquire) + CHUNK_EVENTS as Position);
            let first = self.log.sealed_position() + 1;
            let events: Vec<Arc<Event>> =
                (first..first + chunk_events).filter_map(|p| self.table.get(p)).collect();
            if events.len() as u64 != chunk_events {
                tracing::error!(first, "committed events are missing from the table; sealing stops");
                return;
            }
            let written = match self.log.seal(&events) {
                Ok(written) => written,
                Err(error) => {
                    tracing::error!(%error, "sealing a chunk failed; the WAL keeps every event; sealing stops");
                    return;
                }
            };
            drop(events);
            self.compact_all();
            self.seal_table_chunks(&written);
            let entities = self.projections.snapshots().len() as u64;
            let committed = self.committed.load(Ordering::Acquire);
            if committed - checkpointed >= CHECKPOINT_EVENTS_PER_ENTITY * entities.max(1) {
                checkpointed = self.write_checkpoint().unwrap_or(checkpointed);
            }
        }
    }

    /// Turns the table's full chunks that are sealed on disk into columns, freeing
    /// their event objects; `written`, the columns the log just sealed, serve as the
    /// columns of the chunk they cover. A failure is logged: the chunk stays as it is.
    fn seal_table_chunks(&self, written: &EventColumns) {
        let mut intern = |text: &str| intern_event_type(&mut self.sequencer.lock().event_types, text);
        for index in self.table.full_open_chunks(self.log.sealed_position()) {
            if let Err(error) = self.table.seal(index, written, &mut intern) {
                tracing::error!(%error, index, "could not turn a table chunk into columns");
                return;
            }
        }
    }

    /// Seals every committed event not sealed yet, as a partial chunk: the shutdown's
    /// last seal. A failure is logged; the WAL still holds the events.
    fn seal_rest_at_shutdown(&self) {
        let first = self.log.sealed_position() + 1;
        let last = self.committed.load(Ordering::Acquire);
        if last < first {
            return;
        }
        let events: Vec<Arc<Event>> = (first..=last).filter_map(|p| self.table.get(p)).collect();
        if events.len() as u64 != last - first + 1 {
            tracing::error!(first, last, "committed events are missing from the table; not sealing");
            return;
        }
        if let Err(error) = self.log.seal(&events) {
            tracing::error!(%error, "sealing the last partial chunk failed; the WAL keeps every event");
        }
    }

    /// Merges small chunks until none are left to merge. A failure is logged: small
    /// chunks are only slower to read.
    fn compact_all(&self) {
        loop {
            match self.log.compact() {
                Ok(true) => continue,
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "merging small chunks failed; they stay as they are");
                    return;
                }
            }
        }
    }

    /// Feeds a committed event to the projections not named in `except`.
    fn publish_except(&self, event: &Event, except: &[String]) {
        for (projection, error) in self.projections.process_except(event, except) {
            tracing::warn!(projection, %error, position = event.position, "projection failed on an event");
        }
    }

    /// The group-commit writer: drains every pending event, writes and syncs them
    /// with one log write, publishes the durable group (projections, watermark, waking
    /// its appenders), and goes again, until the store is dropped and the queue is
    /// empty. Appends that arrive meanwhile make the next group.
    ///
    /// Publishing on this thread, rather than handing the group to a thread of its own
    /// that publishes it while the next one is written, saves a hand-off between
    /// threads per group, which on the project's 2-core VM (where waking a thread on
    /// the other core costs ~35 µs) was worth more than the overlap: the durable bench's
    /// single writer 3.6K -> 5.0K events/s, batches over HTTP +3.5%.
    fn run_writer(&self) {
        let Some((queue, ready)) = &self.queue else { return };
        loop {
            let group = {
                let mut pending = queue.lock();
                while pending.events.is_empty() && !pending.shutdown {
                    ready.wait(&mut pending);
                }
                if pending.events.is_empty() {
                    return;
                }
                std::mem::take(&mut pending.events)
            };
            // The same step as an inline commit. A failure has already reached this
            // group's waiters (and turned the store read-only); the groups before it
            // are published, so only the waiters from this one on fail.
            let _ = self.commit(&group);
        }
    }
}

impl EventStore {
    /// The last committed position: every position up to it is visible.
    pub fn committed_position(&self) -> Position {
        self.inner.committed.load(Ordering::Acquire)
    }

    /// Registers `listener`, called with the new committed position each time it
    /// advances, after the events up to it are visible to every read. It runs on the
    /// thread that commits (the commit writer thread, or an appender's with an in-memory
    /// log), so it must be quick and must not block: wake a waiter, set a flag (and not
    /// register another listener). A listener stays registered for the life of the store.
    pub fn on_commit(&self, listener: impl Fn(Position) + Send + Sync + 'static) {
        self.inner.commit_listeners.write().push(Box::new(listener));
    }

    /// The event with this id.
    pub fn get_event(&self, id: Uuid) -> Result<Arc<Event>> {
        self.get_event_view(id)?.to_event()
    }

    /// The event with this id, without making it whole (see [`EventView`]).
    pub fn get_event_view(&self, id: Uuid) -> Result<EventView> {
        self.inner
            .ids
            .get(&id)
            .filter(|&p| p <= self.committed_position())
            .and_then(|p| self.inner.table.view(p))
            .ok_or(Error::EventNotFound(id))
    }

    /// The events matching `request`, one page of them.
    pub fn query(&self, request: QueryEventsRequest) -> Result<QueryPage> {
        let page = self.query_views(request)?;
        Ok(QueryPage {
            events: page.events.iter().map(EventView::to_event).collect::<Result<_>>()?,
            next_after: page.next_after,
        })
    }

    /// [`EventStore::query`] without making the events whole: what the server renders
    /// its JSON from.
    pub fn query_views(&self, request: QueryEventsRequest) -> Result<ViewPage> {
        let query = Query::try_from(request)?;
        Ok(self.query_page(&query, self.committed_position()))
    }

    /// One page of the events matching `request`, as an Arrow IPC stream of one record
    /// batch (the schema of `allsource_storage::columnar`); same filters and paging as
    /// [`EventStore::query`]. Returns the stream, the number of events and `next_after`.
    pub fn query_arrow_ipc(&self, request: QueryEventsRequest) -> Result<(Vec<u8>, usize, Option<Position>)> {
        let page = self.query_views(request)?;
        let mut writer = IpcStreamWriter::new(Vec::new())?;
        for batch in columns_of(&page.events)?.batches() {
            writer.write_batch(batch)?;
        }
        Ok((writer.finish()?, page.events.len(), page.next_after))
    }

    /// Writes every event matching the filters of `request` (its `limit` is the page
    /// size the export reads with) as an Arrow IPC stream or a Parquet file to `out`,
    /// in position order; returns how many events were written. The export is of the
    /// log as committed when it starts: events appended meanwhile are not in it.
    /// Sealed events are copied column by column, never made into event objects.
    pub fn export<W: std::io::Write + Send>(
        &self,
        request: QueryEventsRequest,
        format: ExportFormat,
        out: W,
    ) -> Result<u64> {
        let mut query = Query::try_from(request)?;
        let ceiling = self.committed_position();
        let mut sink = match format {
            ExportFormat::ArrowIpc => ExportSink::Ipc(IpcStreamWriter::new(out)?),
            ExportFormat::Parquet => ExportSink::Parquet(ParquetFileWriter::new(out)?),
        };
        let mut written = 0u64;
        loop {
            let page = self.query_page(&query, ceiling);
            if !page.events.is_empty() {
                for batch in columns_of(&page.events)?.batches() {
                    match &mut sink {
                        ExportSink::Ipc(writer) => writer.write_batch(batch)?,
                        ExportSink::Parquet(writer) => writer.write_batch(batch)?,
                    }
                }
                written += page.events.len() as u64;
            }
            match page.next_after {
                Some(after) => query.after = after,
                None => break,
            }
        }
        match sink {
            ExportSink::Ipc(writer) => drop(writer.finish()?),
            ExportSink::Parquet(writer) => drop(writer.finish()?),
        }
        Ok(written)
    }

    /// One page of `query`'s matches among the positions up to `ceiling`.
    fn query_page(&self, query: &Query, ceiling: Position) -> ViewPage {
        let mut range = self.position_range(query.after, query.since, query.until);
        range.last = range.last.min(ceiling);
        let limit = query.limit;
        // One more than the limit, to learn whether another page follows.
        let wanted = limit + 1;
        let mut positions: Vec<Position> = match (&query.entity_id, &query.event_type) {
            (Some(entity), Some(event_type)) => self.select_both(entity, event_type, range, wanted),
            (Some(entity), None) => self.inner.entities.select(entity.as_str(), range, wanted),
            (None, Some(event_type)) => self.inner.event_types.select(event_type.as_str(), range, wanted),
            (None, None) if range.is_empty() => Vec::new(),
            (None, None) => (range.first..=range.last).take(wanted).collect(),
        };
        let mut more = positions.len() > limit;
        positions.truncate(limit);
        let mut events = self.inner.table.views(&positions);
        // The page bound below and every renderer read these rows' cells.
        touch_cells(&events);
        // Bounded in bytes too: a page stops before the event that would pass the limit.
        let mut text_bytes = 0usize;
        if let Some(over) = events.iter().position(|event| {
            text_bytes += event.payload().len() + event.metadata().len();
            text_bytes > PAGE_TEXT_BYTES_MAX
        }) {
            let keep = over.max(1);
            if keep < events.len() {
                events.truncate(keep);
                more = true;
            }
        }
        let next_after = if more { events.last().map(EventView::position) } else { None };
        ViewPage { events, next_after }
    }

    /// Entity and type: walk the shorter list, check the other field on each event.
    fn select_both(
        &self,
        entity: &EntityId,
        event_type: &EventType,
        mut range: PositionRange,
        wanted: usize,
    ) -> Vec<Position> {
        const STEP: usize = 1024;
        let by_entity = self.inner.entities.count(entity.as_str(), range)
            <= self.inner.event_types.count(event_type.as_str(), range);
        let mut found = Vec::new();
        while found.len() < wanted && !range.is_empty() {
            let candidates = if by_entity {
                self.inner.entities.select(entity.as_str(), range, STEP)
            } else {
                self.inner.event_types.select(event_type.as_str(), range, STEP)
            };
            let Some(&last) = candidates.last() else { break };
            for event in self.inner.table.views(&candidates) {
                if event.entity_id() == entity.as_str() && event.event_type() == event_type.as_str() {
                    found.push(event.position());
                    if found.len() == wanted {
                        break;
                    }
                }
            }
            range.first = last + 1;
        }
        found
    }

    /// The committed positions after `after` whose timestamps lie in `since..=until`:
    /// binary searches, since timestamps never decrease along the log.
    fn position_range(
        &self,
        after: Position,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> PositionRange {
        let mut range = PositionRange::new(after.saturating_add(1), self.committed_position());
        let timestamp = |p| self.inner.table.timestamp(p).unwrap_or(Timestamp::MAX);
        if let Some(since) = since {
            range.first = first_position_where(range, |p| timestamp(p) >= since);
        }
        if let Some(until) = until {
            range.last = first_position_where(range, |p| timestamp(p) > until).saturating_sub(1);
        }
        range
    }

    /// Rebuilds an entity's state by replaying its events (those with
    /// `timestamp <= as_of`, when given) as JSON Merge Patches in version order.
    ///
    /// When the entity's snapshot is at the version of the last of those events, the
    /// snapshot is that replay's result and is returned without replaying: an entity's
    /// versions count its events from 1, so the events that qualify are versions
    /// `1..=n` and the snapshot at version `n` has applied exactly them.
    pub fn reconstruct_state(&self, entity_id: &str, as_of: Option<Timestamp>) -> Result<EntityState> {
        let entity = EntityId::try_from(entity_id)?;
        let range = self.position_range(0, None, as_of);
        let qualifying = self.inner.entities.count(entity.as_str(), range) as Version;
        if qualifying == 0 {
            return Err(Error::EntityNotFound(entity_id.to_string()));
        }
        if let Some(snapshot) = self.inner.projections.snapshots().snapshot_at(entity.as_str(), qualifying) {
            return Ok(entity_state(entity_id, snapshot, as_of));
        }
        let positions = self.inner.entities.select(entity.as_str(), range, usize::MAX);
        let events = self.inner.table.views(&positions);
        let snapshot =
            Snapshot::replay_texts(events.iter().map(|e| (e.payload(), e.version(), e.timestamp())))
                .ok_or_else(|| Error::EntityNotFound(entity_id.to_string()))?;
        Ok(entity_state(entity_id, snapshot, as_of))
    }

    /// An entity's current state from the snapshot projection, kept current on every
    /// append: no replay. Always equal to `reconstruct_state(entity_id, None)`.
    pub fn snapshot(&self, entity_id: &str) -> Result<EntityState> {
        let entity = EntityId::try_from(entity_id)?;
        let snapshot = self
            .inner
            .projections
            .snapshots()
            .snapshot(entity.as_str())
            .ok_or_else(|| Error::EntityNotFound(entity_id.to_string()))?;
        Ok(entity_state(entity_id, snapshot, None))
    }

    /// Counts over the whole store.
    pub fn stats(&self) -> Stats {
        let (columnar_events, columnar_bytes) = self.inner.table.columnar();
        Stats {
            total_events: self.committed_position(),
            total_entities: self.inner.projections.snapshots().len() as u64,
            total_event_types: self.inner.projections.counters().len() as u64,
            total_ingested: self.inner.ingested.load(Ordering::Relaxed),
            read_only: self.inner.failure().is_some(),
            columnar_events,
            columnar_bytes,
            log: self.inner.log.describe(),
        }
    }

    /// The names of the registered projections.
    pub fn projection_names(&self) -> Vec<String> {
        self.inner.projections.names()
    }

    /// The projection named `name`.
    pub fn projection(&self, name: &str) -> Option<Arc<dyn Projection>> {
        self.inner.projections.get(name)
    }

    /// Registers a custom projection. It first sees every event already committed, then
    /// every new one, each exactly once and in position order. Its
    /// [`Projection::process`] runs on the thread that commits, before the appenders
    /// are answered and (with a durable log) before the next group is written: it
    /// should be quick.
    pub fn register_projection(&self, projection: Arc<dyn Projection>) -> Result<()> {
        // Holding the apply lock keeps commits out while the projection catches up.
        let _apply = self.inner.apply_lock.lock();
        if self.inner.projections.contains(projection.name()) {
            return Err(Error::Validation(format!("a projection named '{}' exists", projection.name())));
        }
        for position in 1..=self.committed_position() {
            if let Some(event) = self.inner.table.get(position) {
                projection.process(&event)?;
            }
        }
        self.inner
            .projections
            .register(projection)
            .map_err(|p| Error::Validation(format!("a projection named '{}' exists", p.name())))
    }
}

fn entity_state(entity_id: &str, snapshot: Snapshot, as_of: Option<Timestamp>) -> EntityState {
    EntityState {
        entity_id: entity_id.to_string(),
        state: snapshot.state,
        version: snapshot.version,
        last_event_at: snapshot.last_event_at,
        as_of,
    }
}

/// The event type `text` as interned in `event_types` (added if new).
fn intern_event_type(event_types: &mut HashSet<EventType, RandomState>, text: &str) -> Result<EventType> {
    if let Some(event_type) = event_types.get(text) {
        return Ok(event_type.clone());
    }
    let event_type = EventType::try_from(text)?;
    event_types.insert(event_type.clone());
    Ok(event_type)
}

fn duplicate_id_error(id: Uuid) -> Error {
    Error::DuplicateEventId { id, message: format!("an event with id '{id}' exists with different content") }
}
