//! Helpers shared by the storage tests.

#![allow(dead_code)]

pub mod fixture;

use std::sync::Arc;

use allsource_core_types::{EntityId, Event, EventType, Position, Timestamp};

/// Event `position` of a log where each event is its own entity's first (so that any
/// prefix of the log is valid), with a payload padded by `pad` bytes.
pub fn lone_event(position: Position, pad: usize) -> Arc<Event> {
    Arc::new(Event {
        id: uuid::Uuid::from_u128(0xAB00_0000 + u128::from(position)),
        event_type: EventType::try_from("lone.test").unwrap(),
        entity_id: EntityId::try_from(format!("entity-{position}")).unwrap(),
        payload: serde_json::json!({"n": position, "pad": "p".repeat(pad)}).into(),
        metadata: serde_json::json!({}).into(),
        timestamp: Timestamp::from_micros(1_800_000_000_000_000 + position as i64),
        version: 1,
        position,
    })
}
