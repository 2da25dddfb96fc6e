//! The events of the committed fixture data directories: deterministic, so that the
//! fixture test can compare what it reads with what was written.

use std::sync::Arc;

use allsource_core_types::{EntityId, Event, EventType, Timestamp};
use serde_json::json;
use uuid::Uuid;

/// The groups of events written, in order: each group one WAL record.
pub fn fixture_groups() -> Vec<Vec<Arc<Event>>> {
    let payloads = [
        json!({"name": "Alice", "email": "alice@example.com"}),
        json!({"u64": u64::MAX, "i64": i64::MIN, "f": 0.1, "tiny": 5e-324, "e": 2.2250738585072014e-308}),
        json!("a string payload with \"quotes\", \\ backslash, NUL \u{0}, emoji \u{1F600}, é"),
        json!([1, [2, [3, {"deep": null}]]]),
        json!(null),
        json!({"name": null, "tags": ["x", "y"]}),
        json!(12345678901234567890u64),
        json!({"ünïcödé key": true}),
    ];
    let mut position = 0u64;
    let mut versions = std::collections::HashMap::new();
    let mut groups = Vec::new();
    for group_size in [1usize, 3, 2, 2] {
        let mut group = Vec::new();
        for _ in 0..group_size {
            position += 1;
            let entity = format!("entity-{}", position % 3);
            let version = versions.entry(entity.clone()).or_insert(0u64);
            *version += 1;
            group.push(Arc::new(Event {
                id: Uuid::from_u128(0x0190_f0c4_6a1e_7c3a_9d4e_0000_0000_0000 + u128::from(position)),
                event_type: EventType::try_from(format!("fixture.type{}", position % 2)).unwrap(),
                entity_id: EntityId::try_from(entity).unwrap(),
                payload: payloads[(position - 1) as usize].clone().into(),
                metadata: json!({"position": position, "source": "fixture"}).into(),
                timestamp: Timestamp::from_micros(1_795_000_000_000_000 + (position as i64) * 1_000),
                version: *version,
                position,
            }));
        }
        groups.push(group);
    }
    groups
}
