//! The seed's library example: ingest, query, replay, snapshot. CI runs it.

use allsource_core::{Event, EventStore, QueryEventsRequest};
use serde_json::json;

fn main() -> Result<(), allsource_core::Error> {
    let store = EventStore::new();
    store.ingest(Event::new("user.created".into(), "user-123".into(), json!({"name": "Alice"})))?;
    store.ingest(Event::new(
        "user.email_changed".into(),
        "user-123".into(),
        json!({"email": "alice@example.com"}),
    ))?;

    let page =
        store.query(QueryEventsRequest { entity_id: Some("user-123".into()), ..Default::default() })?;
    for event in &page.events {
        println!(
            "{} v{} {}",
            event.position,
            event.version,
            serde_json::to_string(&**event).unwrap_or_default()
        );
    }

    let state = store.reconstruct_state("user-123", None)?;
    println!("state of user-123 at version {}: {}", state.version, state.state);
    assert_eq!(state.state, json!({"name": "Alice", "email": "alice@example.com"}));
    assert_eq!(store.snapshot("user-123")?, state);
    Ok(())
}
