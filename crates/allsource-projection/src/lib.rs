//! Projections: views of the log kept current as events are committed. No I/O.
//!
//! A [`Projection`] sees every committed event exactly once, in position order (the
//! engine guarantees this by calling [`ProjectionRegistry::process`] from its single
//! apply step). Two are built in: [`EntitySnapshots`], each entity's state as the JSON
//! Merge Patches (RFC 7386) of its events applied in order, and [`EventCounters`], the
//! number of events of each type.
//!
//! ```
//! use allsource_core_types::{EntityId, Event, EventType, Timestamp};
//! use allsource_projection::{EntitySnapshots, Projection};
//! use serde_json::json;
//!
//! let snapshots = EntitySnapshots::default();
//! let event = |version, payload: serde_json::Value| Event {
//!     id: uuid::Uuid::now_v7(),
//!     event_type: EventType::try_from("user.updated").unwrap(),
//!     entity_id: EntityId::try_from("user-1").unwrap(),
//!     payload: payload.into(),
//!     metadata: json!({}).into(),
//!     timestamp: Timestamp::from_micros(version as i64),
//!     version,
//!     position: version,
//! };
//! snapshots.process(&event(1, json!({"name": "Alice", "tags": ["a"]}))).unwrap();
//! snapshots.process(&event(2, json!({"tags": null, "email": "a@example.com"}))).unwrap();
//! let snapshot = snapshots.snapshot("user-1").unwrap();
//! assert_eq!(snapshot.state, json!({"name": "Alice", "email": "a@example.com"}));
//! assert_eq!(snapshot.version, 2);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use allsource_core_types::{EntityId, Event, EventType, JsonWriter, Result, Timestamp, Version};
use dashmap::DashMap;
use parking_lot::RwLock;
use serde_json::value::RawValue;
use serde_json::{json, Value};

mod merge;

pub use merge::{merge_patch_compact, MERGE_DEPTH_MAX};

/// A view of the log kept current as events are committed.
///
/// Object-safe and shared between threads: the engine holds projections as
/// `Arc<dyn Projection>` and calls [`Projection::process`] once per committed event,
/// in position order, while readers call [`Projection::get_state`] concurrently.
pub trait Projection: Send + Sync {
    /// The projection's name, unique within a store; used in the API's paths.
    fn name(&self) -> &str;

    /// Takes one committed event into account. An error is logged by the engine and
    /// does not undo the event, which is already committed. `event.payload` is JSON
    /// text; `event.payload.to_value()` parses it.
    fn process(&self, event: &Event) -> Result<()>;

    /// The projection's state for `key`, or `None` when it has none.
    fn get_state(&self, key: &str) -> Option<Value>;

    /// Forgets everything, as before the first event.
    fn clear(&self);

    /// The whole state, taken for a checkpoint so that a restart need not replay the
    /// events before it: a writer that puts it out as one JSON value (what
    /// [`Projection::restore`] gets back, parsed). The engine calls this under its locks
    /// and runs the writer after, outside them: take the state quickly (share or copy
    /// it) and leave the writing to the writer. `None` (the default): this projection is
    /// not checkpointed and is rebuilt by replay.
    fn checkpoint(&self) -> Option<JsonWriter> {
        None
    }

    /// Whether the engine may take this projection's checkpoint while events keep being
    /// applied to it, instead of between two published groups (when appends wait). Such
    /// a checkpoint holds every event up to the checkpoint's position and maybe some
    /// after it, so after a restore [`Projection::process`] must ignore an event it
    /// already holds (the entity snapshots tell by the entity's version). `false` (the
    /// default): the checkpoint is taken with appends held back.
    fn checkpoint_while_live(&self) -> bool {
        false
    }

    /// Replaces the whole state with one [`Projection::checkpoint`] returned (parsed).
    /// An error makes the engine ignore the checkpoint and replay instead.
    fn restore(&self, state: Value) -> Result<()> {
        let _ = state;
        Err(allsource_core_types::Error::Internal(format!("projection '{}' cannot restore", self.name())))
    }
}

/// Applies `patch` to `state` as a JSON Merge Patch (RFC 7386): object keys merge
/// recursively, `null` removes a key, and a non-object patch replaces the state.
pub fn apply_merge_patch(state: &mut Value, patch: &Value) {
    json_patch::merge(state, patch);
}

/// An entity's state at some version.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The merged state.
    pub state: Value,
    /// The version of the last event applied.
    pub version: Version,
    /// The timestamp of the last event applied.
    pub last_event_at: Timestamp,
}

impl Snapshot {
    /// Rebuilds a state by replaying `events` (one entity's, in version order).
    /// `None` when there are no events.
    pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Snapshot> {
        Snapshot::replay_texts(events.into_iter().map(|e| (e.payload.as_str(), e.version, e.timestamp)))
    }

    /// [`Snapshot::replay`] from the parts replay reads: each event's payload text
    /// (valid JSON), version and timestamp, in version order.
    pub fn replay_texts<'a>(
        events: impl IntoIterator<Item = (&'a str, Version, Timestamp)>,
    ) -> Option<Snapshot> {
        let mut last: Option<(Version, Timestamp)> = None;
        let (mut state, mut merged) = (String::new(), String::new());
        for (payload, version, timestamp) in events {
            merged.clear();
            if merge_patch_compact(&state, payload, &mut merged).is_err() {
                // Not reachable: stored payloads are compact JSON. An unreadable one
                // counts as `null`, as it did when payloads were parsed first.
                merged.clear();
                merged.push_str("null");
            }
            std::mem::swap(&mut state, &mut merged);
            last = Some((version, timestamp));
        }
        let (version, last_event_at) = last?;
        Some(Snapshot { state: parse_state(&state), version, last_event_at })
    }
}

/// A state's text, parsed. The texts are [`merge_patch_compact`]'s, from valid JSON:
/// parsing cannot fail.
fn parse_state(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

thread_local! {
    /// Where [`EntitySnapshots::process`] writes a merged state before it is copied
    /// into the state's block (or a new one of its size).
    static MERGED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Each entity's current state, as its events' payloads merged in order.
#[derive(Debug)]
pub struct EntitySnapshots {
    snapshots: DashMap<EntityId, Stored, foldhash::fast::RandomState>,
}

impl Default for EntitySnapshots {
    /// [`MAP_SHARDS`](allsource_core_types::MAP_SHARDS) shards, not the default 4 per
    /// core: a shard that outgrows its table moves every entry while it holds the
    /// shard's lock, and the commit writer, which every append waits for, is the one
    /// inserting.
    fn default() -> Self {
        EntitySnapshots {
            snapshots: DashMap::with_hasher_and_shard_amount(
                foldhash::fast::RandomState::default(),
                allsource_core_types::MAP_SHARDS,
            ),
        }
    }
}

/// A snapshot as the projection keeps it: the state as compact JSON text in one
/// block, which a merge reads and replaces whole, and shared, so that a checkpoint
/// takes every entity's state with a reference count each (holding each shard of the
/// map for a moment, not for a copy of its states, while appends wait to apply).
#[derive(Debug, Clone)]
struct Stored {
    /// Compact JSON text; `null` before the first event.
    state: StateText,
    version: Version,
    last_event_at: Timestamp,
}

impl Stored {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: parse_state(self.state.as_str()),
            version: self.version,
            last_event_at: self.last_event_at,
        }
    }
}

/// A state's text in one shared block, which a merged state no longer than the block
/// and not much shorter overwrites in place (when nothing else holds it): no
/// allocation, and the write lands on the lines the merge has just read. A new block
/// each time cost the commit writer a fifth of its time under batches (the allocator
/// looking for a page with a free block among a few hundred thousand states, and the
/// copy into memory not in the cache). Blocks are a multiple of [`STATE_BLOCK_STEP`]
/// bytes, the text padded with spaces (which compact JSON never ends with), so that a
/// state whose length moves by a few bytes (a counter passing 9, a name one letter
/// longer) keeps its block.
#[derive(Debug, Clone)]
struct StateText(Arc<[u8]>);

/// The granule of a state's block.
const STATE_BLOCK_STEP: usize = 16;

impl StateText {
    fn new(text: &str) -> StateText {
        let padding = text.len().next_multiple_of(STATE_BLOCK_STEP) - text.len();
        // Collected straight into the shared block (the iterator knows its length): one
        // allocation, where a `Vec` first would be a second one and a copy.
        StateText(text.bytes().chain(std::iter::repeat_n(b' ', padding)).collect())
    }

    fn as_str(&self) -> &str {
        // Made from a `str` and overwritten only with one: always UTF-8. The check
        // reads the state once more before the merge does (under batches most of its
        // time is the state's first cache miss, which the merge would take instead).
        std::str::from_utf8(&self.0).map_or("null", |text| text.trim_end_matches(' '))
    }

    /// Makes the state `text`.
    fn set(&mut self, text: &str) {
        match Arc::get_mut(&mut self.0) {
            Some(block) if text.len() <= block.len() && block.len() - text.len() < STATE_BLOCK_STEP => {
                let (written, padding) = block.split_at_mut(text.len());
                written.copy_from_slice(text.as_bytes());
                padding.fill(b' ');
            }
            _ => *self = StateText::new(text),
        }
    }
}

impl EntitySnapshots {
    /// The projection's name in the registry.
    pub const NAME: &'static str = "entity_snapshots";

    /// The current snapshot of `entity_id`.
    pub fn snapshot(&self, entity_id: &str) -> Option<Snapshot> {
        self.snapshots.get(entity_id).map(|s| s.snapshot())
    }

    /// The snapshot of `entity_id` if it is at exactly `version`: then it is what a
    /// replay of the entity's events up to that version gives.
    pub fn snapshot_at(&self, entity_id: &str, version: Version) -> Option<Snapshot> {
        self.snapshots.get(entity_id).filter(|s| s.version == version).map(|s| s.snapshot())
    }

    /// How many entities have a snapshot.
    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    /// Whether no entity has a snapshot.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }
}

impl Projection for EntitySnapshots {
    fn name(&self) -> &str {
        Self::NAME
    }

    /// An event at or below the entity's version is already in its state (a restore
    /// from a checkpoint taken while events were applied, then the replay of the events
    /// after the checkpoint's position): it is ignored.
    fn process(&self, event: &Event) -> Result<()> {
        // The id is cloned only for a new entity (a clone writes to a count shared with
        // every other holder of the id).
        let mut stored = match self.snapshots.get_mut(&event.entity_id) {
            Some(stored) => stored,
            None => self.snapshots.entry(event.entity_id.clone()).or_insert_with(|| Stored {
                state: StateText::new("null"),
                version: 0,
                last_event_at: Timestamp::MIN,
            }),
        };
        if event.version > stored.version {
            let merged = MERGED.with_borrow_mut(|merged| {
                merged.clear();
                let result = merge_patch_compact(stored.state.as_str(), event.payload.as_str(), merged);
                if result.is_ok() {
                    stored.state.set(merged);
                }
                result
            });
            stored.version = event.version;
            stored.last_event_at = event.timestamp;
            if let Err(error) = merged {
                // Not reachable: stored payloads are compact JSON. If it were, the state
                // would stay as it was; the error names the event.
                return Err(allsource_core_types::Error::Internal(format!(
                    "the payload of event {} is not JSON: {error}",
                    event.id
                )));
            }
        }
        Ok(())
    }

    /// Each entity's snapshot carries its version: a checkpoint may run ahead.
    fn checkpoint_while_live(&self) -> bool {
        true
    }

    fn get_state(&self, key: &str) -> Option<Value> {
        let snapshot = self.snapshots.get(key)?;
        Some(json!({
            "entity_id": key,
            "state": parse_state(snapshot.state.as_str()),
            "version": snapshot.version,
            "last_event_at": snapshot.last_event_at,
        }))
    }

    fn clear(&self) {
        self.snapshots.clear();
    }

    /// `{"entity": [state, version, last_event_at_micros], ...}`, written from the
    /// shared states without copying them. Each state is let go as soon as it is
    /// written: until then, merging an event into it copies it first.
    fn checkpoint(&self) -> Option<JsonWriter> {
        let stored: Vec<(EntityId, Stored)> =
            self.snapshots.iter().map(|entry| (entry.key().clone(), entry.value().clone())).collect();
        Some(Box::new(move |out| {
            out.write_all(b"{")?;
            for (i, (entity, s)) in stored.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, entity.as_str())?;
                write!(out, ":[{},{},{}]", s.state.as_str(), s.version, s.last_event_at.as_micros())?;
            }
            out.write_all(b"}")
        }))
    }

    fn restore(&self, state: Value) -> Result<()> {
        let bad = |why: &str| {
            allsource_core_types::Error::Internal(format!("bad entity_snapshots checkpoint: {why}"))
        };
        let Value::Object(entities) = state else { return Err(bad("not an object")) };
        let mut restored = Vec::with_capacity(entities.len());
        for (entity, snapshot) in entities {
            let Value::Array(mut parts) = snapshot else { return Err(bad("a snapshot is not an array")) };
            let (Some(micros), Some(version)) =
                (parts.get(2).and_then(Value::as_i64), parts.get(1).and_then(Value::as_u64))
            else {
                return Err(bad("a snapshot lacks its version or time"));
            };
            let state = StateText::new(&parts.swap_remove(0).to_string());
            let entity = EntityId::try_from(entity).map_err(|e| bad(&e.to_string()))?;
            let last_event_at = Timestamp::from_micros(micros);
            restored.push((entity, Stored { state, version, last_event_at }));
        }
        self.snapshots.clear();
        for (entity, snapshot) in restored {
            self.snapshots.insert(entity, snapshot);
        }
        Ok(())
    }
}

/// The number of events of each type.
#[derive(Debug, Default)]
pub struct EventCounters {
    counts: DashMap<EventType, u64, foldhash::fast::RandomState>,
}

impl EventCounters {
    /// The projection's name in the registry.
    pub const NAME: &'static str = "event_counters";

    /// How many events of `event_type` there are.
    pub fn count(&self, event_type: &str) -> u64 {
        self.counts.get(event_type).map_or(0, |c| *c)
    }

    /// How many event types have been counted.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no event has been counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

impl Projection for EventCounters {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn process(&self, event: &Event) -> Result<()> {
        // Every event of a type shares its text: cloning it for each event would make
        // its count a write that threads fight over.
        match self.counts.get_mut(&event.event_type) {
            Some(mut count) => *count += 1,
            None => *self.counts.entry(event.event_type.clone()).or_insert(0) += 1,
        }
        Ok(())
    }

    fn get_state(&self, key: &str) -> Option<Value> {
        self.counts.get(key).map(|count| json!({ "count": *count }))
    }

    fn clear(&self) {
        self.counts.clear();
    }

    fn checkpoint(&self) -> Option<JsonWriter> {
        let counts: BTreeMap<String, u64> =
            self.counts.iter().map(|entry| (entry.key().to_string(), *entry.value())).collect();
        Some(Box::new(move |out| Ok(serde_json::to_writer(out, &counts)?)))
    }

    fn restore(&self, state: Value) -> Result<()> {
        let bad = |why: &str| {
            allsource_core_types::Error::Internal(format!("bad event_counters checkpoint: {why}"))
        };
        let Value::Object(counts) = state else { return Err(bad("not an object")) };
        let mut restored = Vec::with_capacity(counts.len());
        for (event_type, count) in counts {
            let count = count.as_u64().ok_or_else(|| bad("a count is not a number"))?;
            restored.push((EventType::try_from(event_type).map_err(|e| bad(&e.to_string()))?, count));
        }
        self.counts.clear();
        for (event_type, count) in restored {
            self.counts.insert(event_type, count);
        }
        Ok(())
    }
}

/// The projections of a store: the built-in ones and any registered after.
pub struct ProjectionRegistry {
    snapshots: Arc<EntitySnapshots>,
    counters: Arc<EventCounters>,
    all: RwLock<Vec<Arc<dyn Projection>>>,
}

impl Default for ProjectionRegistry {
    fn default() -> Self {
        let snapshots = Arc::new(EntitySnapshots::default());
        let counters = Arc::new(EventCounters::default());
        let all: Vec<Arc<dyn Projection>> = vec![snapshots.clone(), counters.clone()];
        ProjectionRegistry { snapshots, counters, all: RwLock::new(all) }
    }
}

impl std::fmt::Debug for ProjectionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRegistry").field("names", &self.names()).finish()
    }
}

impl ProjectionRegistry {
    /// The built-in entity snapshots.
    pub fn snapshots(&self) -> &EntitySnapshots {
        &self.snapshots
    }

    /// The built-in event counters.
    pub fn counters(&self) -> &EventCounters {
        &self.counters
    }

    /// Adds a projection. The caller must already have fed it every event committed so
    /// far (the engine replays the log into it), so that it sees each event once.
    /// Returns it back as an error when its name is taken.
    #[allow(clippy::result_large_err)]
    pub fn register(&self, projection: Arc<dyn Projection>) -> std::result::Result<(), Arc<dyn Projection>> {
        let mut all = self.all.write();
        if all.iter().any(|p| p.name() == projection.name()) {
            return Err(projection);
        }
        all.push(projection);
        Ok(())
    }

    /// Whether a projection of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.all.read().iter().any(|p| p.name() == name)
    }

    /// The projection named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Projection>> {
        self.all.read().iter().find(|p| p.name() == name).cloned()
    }

    /// The names of every registered projection, in registration order.
    pub fn names(&self) -> Vec<String> {
        self.all.read().iter().map(|p| p.name().to_string()).collect()
    }

    /// The checkpoint of every projection that has one, by name: of those whose
    /// [`Projection::checkpoint_while_live`] is `while_live`.
    pub fn checkpoint(&self, while_live: bool) -> Vec<(String, JsonWriter)> {
        self.all
            .read()
            .iter()
            .filter(|p| p.checkpoint_while_live() == while_live)
            .filter_map(|p| p.checkpoint().map(|state| (p.name().to_string(), state)))
            .collect()
    }

    /// Restores every projection that has a state in `checkpoints`; returns the names
    /// of those restored. On a failure every projection is cleared and the failure
    /// returned, so that the caller replays from the start instead.
    pub fn restore(
        &self,
        mut checkpoints: BTreeMap<String, Box<RawValue>>,
    ) -> std::result::Result<Vec<String>, (String, allsource_core_types::Error)> {
        let all = self.all.read();
        let mut restored = Vec::new();
        for projection in all.iter() {
            let Some(state) = checkpoints.remove(projection.name()) else { continue };
            let restore = serde_json::from_str(state.get())
                .map_err(|e| allsource_core_types::Error::Internal(format!("unreadable checkpoint: {e}")))
                .and_then(|state| projection.restore(state));
            if let Err(error) = restore {
                for projection in all.iter() {
                    projection.clear();
                }
                return Err((projection.name().to_string(), error));
            }
            restored.push(projection.name().to_string());
        }
        Ok(restored)
    }

    /// Feeds one committed event to every projection not named in `except`, in
    /// registration order; returns the failures, by projection name, for the caller to
    /// report.
    pub fn process_except(
        &self,
        event: &Event,
        except: &[String],
    ) -> Vec<(String, allsource_core_types::Error)> {
        let mut failures = Vec::new();
        for projection in self.all.read().iter() {
            if except.iter().any(|name| name == projection.name()) {
                continue;
            }
            if let Err(error) = projection.process(event) {
                failures.push((projection.name().to_string(), error));
            }
        }
        failures
    }

    /// Feeds one committed event to every projection; see [`ProjectionRegistry::process_except`].
    pub fn process(&self, event: &Event) -> Vec<(String, allsource_core_types::Error)> {
        self.process_except(event, &[])
    }
}

#[cfg(test)]
mod tests {
    use allsource_core_types::Position;
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;

    /// What a checkpoint writer writes, parsed.
    fn written(writer: JsonWriter) -> Value {
        let mut text = Vec::new();
        writer(&mut text).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    #[test]
    fn a_state_is_overwritten_in_its_block_unless_shared_outgrown_or_much_shorter() {
        let mut state = StateText::new(r#"{"n":1}"#);
        let block = Arc::as_ptr(&state.0);
        state.set(r#"{"n":2}"#);
        assert_eq!((state.as_str(), Arc::as_ptr(&state.0)), (r#"{"n":2}"#, block));
        // A few bytes longer or shorter: the same block, padded.
        state.set(r#"{"n":10}"#);
        assert_eq!((state.as_str(), Arc::as_ptr(&state.0)), (r#"{"n":10}"#, block));
        state.set(r#"{}"#);
        assert_eq!((state.as_str(), Arc::as_ptr(&state.0)), (r#"{}"#, block));
        // Longer than the block, or so much shorter that it would waste it: a new one.
        let long = format!(r#"{{"n":"{}"}}"#, "x".repeat(STATE_BLOCK_STEP));
        state.set(&long);
        assert_eq!(state.as_str(), long);
        assert!(!std::ptr::eq(Arc::as_ptr(&state.0), block));
        let longer = Arc::as_ptr(&state.0);
        state.set(r#"{"n":10}"#);
        assert_eq!(state.as_str(), r#"{"n":10}"#);
        assert!(!std::ptr::eq(Arc::as_ptr(&state.0), longer));
        assert_eq!(state.0.len(), STATE_BLOCK_STEP);
        // Held elsewhere (a checkpoint being written): that holder keeps its text.
        let held = state.clone();
        state.set(r#"{"n":20}"#);
        assert_eq!((held.as_str(), state.as_str()), (r#"{"n":10}"#, r#"{"n":20}"#));
        assert!(!std::ptr::eq(Arc::as_ptr(&held.0), Arc::as_ptr(&state.0)));
    }

    fn event(entity: &str, version: Version, position: Position, payload: Value) -> Event {
        Event {
            id: Uuid::from_u128(u128::from(position)),
            event_type: EventType::try_from("t").unwrap(),
            entity_id: EntityId::try_from(entity).unwrap(),
            payload: payload.into(),
            metadata: json!({}).into(),
            timestamp: Timestamp::from_micros(position as i64),
            version,
            position,
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (state, patch, expected) in cases {
            let mut from_value = state.clone();
            apply_merge_patch(&mut from_value, &patch);
            assert_eq!(from_value, expected, "patch {patch}");
            assert_eq!(
                merged_text(&state.to_string(), &patch.to_string()),
                expected,
                "patch {patch} as text"
            );
        }
    }

    /// `patch` merged into `state` by [`merge_patch_compact`], parsed.
    fn merged_text(state: &str, patch: &str) -> Value {
        let mut merged = String::new();
        merge_patch_compact(state, patch, &mut merged).unwrap();
        serde_json::from_str(&merged).unwrap_or_else(|e| panic!("{merged:?} is not JSON: {e}"))
    }

    #[test]
    fn text_merge_reads_escaped_keys_and_repeated_keys_and_refuses_bad_text() {
        // "\u0061" is the key "a": it must replace the member "a", not add a second.
        let state = json!({"a": 1, "b": {"c": 2}}).to_string();
        assert_eq!(
            merged_text(&state, r#"{"\u0061":[1,{"x":null}],"b":{"\"q":"\u00e9","c":null}}"#),
            json!({"a": [1, {"x": null}], "b": {"\"q": "é"}})
        );
        // A key given twice is applied twice, in order: objects merge, null removes.
        assert_eq!(
            merged_text(&state, r#"{"b":{"x":1},"z":0,"b":{"y":2},"a":null,"a":{"n":null,"m":3}}"#),
            json!({"a": {"m": 3}, "b": {"c": 2, "x": 1, "y": 2}, "z": 0})
        );
        assert_eq!(merged_text(&state, r#"{"b":{"x":1},"b":null}"#), json!({"a": 1}));
        // A state whose keys are not sorted (not one this merge wrote) still merges.
        assert_eq!(merged_text(r#"{"b":1,"a":2,"b":3}"#, r#"{"c":4}"#), json!({"a": 2, "b": 3, "c": 4}));
        // No state: the patch, without its nulls.
        assert_eq!(merged_text("", r#"{"a":{"b":null},"c":[null]}"#), json!({"a": {}, "c": [null]}));
        let mut out = String::new();
        // Nesting past MERGE_DEPTH_MAX is refused, not followed until the stack runs out.
        let deep = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        assert!(merge_patch_compact("", &deep(MERGE_DEPTH_MAX + 1), &mut out).is_ok());
        assert!(merge_patch_compact("", &deep(MERGE_DEPTH_MAX + 2), &mut out).is_err());
        assert!(merge_patch_compact("", &deep(100_000), &mut out).is_err());
        for bad in
            ["{", "{\"a\"", r#"{"a":1}x"#, r#"{"a" 1}"#, r#"{"a":}"#, r#"{"a":"1}"#, r#"{"a":[1}"#, "{,}"]
        {
            assert!(merge_patch_compact(&state, bad, &mut out).is_err(), "patch {bad:?}");
            assert!(merge_patch_compact(bad, "{}", &mut out).is_err(), "state {bad:?}");
        }
    }

    #[test]
    fn counters_count_per_type() {
        let counters = EventCounters::default();
        for position in 1..=3 {
            counters.process(&event("e", position, position, json!({}))).unwrap();
        }
        assert_eq!(counters.get_state("t"), Some(json!({"count": 3})));
        assert_eq!(counters.get_state("other"), None);
        counters.clear();
        assert_eq!(counters.count("t"), 0);
    }

    #[test]
    fn a_snapshot_checkpoint_that_ran_ahead_restores_to_the_same_state() {
        // Events 1..=7 of two entities; the checkpoint's position is 3, but the
        // snapshots were read after event 5 was applied.
        let events: Vec<Event> = (1..=7u64)
            .map(|p| {
                event(["a", "b"][(p % 2) as usize], p.div_ceil(2), p, json!({"p": p, format!("k{p}"): p}))
            })
            .collect();
        let live = EntitySnapshots::default();
        for e in &events[..5] {
            live.process(e).unwrap();
        }
        let checkpoint = written(live.checkpoint().unwrap());
        assert!(live.checkpoint_while_live());
        let restored = EntitySnapshots::default();
        restored.restore(checkpoint).unwrap();
        // The replay after position 3 repeats events 4 and 5: they are ignored.
        for e in &events[3..] {
            restored.process(e).unwrap();
        }
        for e in &events {
            live.process(e).unwrap(); // also a no-op for 1..=5 on the live one
        }
        for entity in ["a", "b"] {
            let expected = Snapshot::replay(events.iter().filter(|e| e.entity_id.as_str() == entity));
            assert_eq!(restored.snapshot(entity), expected, "{entity}");
            assert_eq!(live.snapshot(entity), expected, "{entity}");
        }
        // The counters are not idempotent: they are checkpointed exactly.
        assert!(!EventCounters::default().checkpoint_while_live());
        let registry = ProjectionRegistry::default();
        let names = |writers: Vec<(String, JsonWriter)>| {
            writers.into_iter().map(|(name, _)| name).collect::<Vec<_>>()
        };
        assert_eq!(names(registry.checkpoint(true)), ["entity_snapshots"]);
        assert_eq!(names(registry.checkpoint(false)), ["event_counters"]);
    }

    #[test]
    fn registry_rejects_taken_names() {
        let registry = ProjectionRegistry::default();
        assert_eq!(registry.names(), vec!["entity_snapshots", "event_counters"]);
        assert!(registry.register(Arc::new(EventCounters::default())).is_err());
        assert_eq!(registry.names().len(), 2);
    }

    /// `value` as compact text, the members of each object in an order drawn from
    /// `seed` (serde_json writes them sorted).
    fn shuffled_text(value: &Value, seed: u64) -> String {
        match value {
            Value::Object(members) => {
                let mut members: Vec<_> = members.iter().collect();
                let n = members.len().max(1) as u64;
                members.rotate_left((seed % n) as usize);
                if seed & 1 == 1 {
                    members.reverse();
                }
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(key, value)| {
                        format!("{}:{}", Value::from(key.as_str()), shuffled_text(value, seed / 3))
                    })
                    .collect();
                format!("{{{}}}", members.join(","))
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(|item| shuffled_text(item, seed / 5)).collect();
                format!("[{}]", items.join(","))
            }
            other => other.to_string(),
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
            // Longer than a word, with quotes, backslashes and multibyte characters
            // anywhere: the scan reads strings eight bytes at a time.
            "[a-c\"\\\\é/]{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-d\"é]|[a-d\"\\\\é]{8,12}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Merging texts gives what merging the parsed values gives, for any state and
        /// patch, their keys in any order, and again when the result is merged into.
        #[test]
        fn text_merge_equals_value_merge(
            state in json_value(),
            patches in prop::collection::vec(json_value(), 1..4),
            shuffle in any::<u64>(),
        ) {
            let mut expected = state.clone();
            let mut merged = String::new();
            let mut text = shuffled_text(&state, shuffle);
            for patch in &patches {
                apply_merge_patch(&mut expected, patch);
                merged.clear();
                merge_patch_compact(&text, &shuffled_text(patch, shuffle), &mut merged).unwrap();
                prop_assert_eq!(serde_json::from_str::<Value>(&merged).unwrap(), expected.clone());
                std::mem::swap(&mut text, &mut merged);
            }
        }

        /// Text that is not compact JSON gives an error or a text, never a panic.
        #[test]
        fn text_merge_never_panics(state in "[{}\\[\\]\",:a\\\\1né ]{0,30}", patch in "[{}\\[\\]\",:a\\\\1né ]{0,30}") {
            let _ = merge_patch_compact(&state, &patch, &mut String::new());
            let _ = merge_patch_compact(&state, &format!("{{{patch}}}"), &mut String::new());
            let _ = merge_patch_compact(&format!("{{{state}}}"), &format!("{{{patch}}}"), &mut String::new());
        }

        /// The snapshot kept by the projection equals a full replay, for any sequence of
        /// payloads spread over a few entities.
        #[test]
        fn snapshot_equals_replay(payloads in prop::collection::vec((0u8..3, json_value()), 1..40)) {
            let snapshots = EntitySnapshots::default();
            let mut log: Vec<Event> = Vec::new();
            let mut versions = [0u64; 3];
            for (position, (entity, payload)) in payloads.into_iter().enumerate() {
                versions[entity as usize] += 1;
                let e = event(&format!("e{entity}"), versions[entity as usize], position as u64 + 1, payload);
                snapshots.process(&e).unwrap();
                log.push(e);
            }
            for entity in 0..3 {
                let name = format!("e{entity}");
                let replayed = Snapshot::replay(log.iter().filter(|e| e.entity_id.as_str() == name));
                prop_assert_eq!(snapshots.snapshot(&name), replayed);
            }
        }
    }
}
