//! The OpenAPI document (`GET /openapi.json`) against the server it describes, so the
//! two cannot drift apart:
//!
//! - every route the router serves (every `.route(PATH, METHOD(..))` in the server's
//!   sources) is in the document with the same methods, and every documented operation
//!   is served (a request to it does not fall through to the router's `404`/`405`);
//! - real responses of every endpoint, successes and errors, match their documented
//!   schemas: each required field is there, no field is undocumented, types agree, and
//!   the status and content type are documented for that operation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use allsource_server::{app, EventStore};
use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::inproc::InProcess;
use common::{Client, Reply, Req};

/// The methods axum's `routing` module has functions for.
const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head", "options", "trace"];

fn document() -> Value {
    let reply = InProcess::new().send(Req::get("/openapi.json"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.header("content-type").unwrap_or_default().starts_with("application/json"));
    reply.json()
}

#[test]
fn document_is_openapi_3_1_with_bearer_security() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "AllSource");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    for (path, method, operation) in operations(&doc) {
        let open = allsource_server::auth::OPEN_PATHS.contains(&path);
        let security = &operation["security"];
        if open {
            assert!(security.is_null(), "{method} {path} is open, yet has security {security}");
        } else {
            // Optional: `{}` (no keys on the server) or the bearer token.
            assert_eq!(security, &json!([{}, {"bearer": []}]), "{method} {path}");
            assert!(operation["responses"]["401"].is_object(), "{method} {path} lacks 401");
        }
        assert!(operation["responses"]["500"].is_object(), "{method} {path} lacks 500");
        if method == "post" {
            assert!(operation["responses"]["403"].is_object(), "{method} {path} lacks 403");
            assert!(operation["responses"]["503"].is_object(), "{method} {path} lacks 503");
        }
        assert!(operation["summary"].is_string(), "{method} {path} has no summary");
    }
}

/// The router's routes against the document's: the router's paths, each probed with
/// every method to see which it serves.
#[test]
fn every_route_is_documented_and_every_documented_route_is_served() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(path, method, _)| (method.to_string(), path.to_string()))
        .collect();
    let router = app(Arc::new(EventStore::new()));
    let paths = router_paths(&router);
    assert!(paths.len() >= 13, "found only {} paths in the router: {paths:?}", paths.len());

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut served = BTreeSet::new();
    for path in &paths {
        let uri = sample_uri(path);
        for method in PROBED_METHODS {
            if runtime.block_on(serves(&router, method, &uri)) {
                served.insert((method.to_string(), path.clone()));
            }
        }
    }
    assert!(served.len() >= paths.len(), "{served:?}");

    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "the router and /openapi.json disagree.\n  served but not documented: {undocumented:?}\n  \
         (add `#[utoipa::path(..)]` to the handler and list it in `paths(..)` of ApiDoc in src/openapi.rs)\n  \
         documented but not served: {unserved:?}"
    );
}

/// The methods probed on every path (`HEAD` comes with `GET` in axum).
const PROBED_METHODS: &[&str] = &["get", "post", "put", "delete", "patch"];

/// `path` with a sample value in each `{parameter}`.
fn sample_uri(path: &str) -> String {
    let uri = path
        .replace("{id}", "0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f60")
        .replace("{entity_id}", "order%2F7")
        .replace("{name}", "event_counters")
        .replace("{key}", "order.placed");
    let mut sampled = String::new();
    let mut in_parameter = false;
    for c in uri.chars() {
        match c {
            '{' => in_parameter = true,
            '}' => {
                in_parameter = false;
                sampled.push('x');
            }
            _ if in_parameter => {}
            _ => sampled.push(c),
        }
    }
    sampled
}

/// Whether `method uri` reaches a handler of `router`, rather than its fallbacks (`404`
/// "no route", `405`).
async fn serves(router: &axum::Router, method: &str, uri: &str) -> bool {
    let request = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    match response.status().as_u16() {
        405 => false,
        404 => {
            // Only error bodies are read: a success may be a stream that never ends.
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            !body["error"]["message"].as_str().unwrap_or_default().starts_with("no route for")
        }
        _ => true,
    }
}

/// Every path `router` has a route for. axum has no API to list them; its `Debug`
/// output prints them (`node: Node { paths: {RouteId(0): "/health", ..} }`, the main
/// router's node first, then the fallback router's).
fn router_paths(router: &axum::Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let marker = "node: Node { paths: {";
    let start = debug.find(marker).unwrap_or_else(|| {
        panic!("axum's Debug output of a Router changed (no {marker:?}); update router_paths: {debug:.300}")
    });
    // The quoted strings up to the `}` that closes the map (paths have braces too).
    let mut paths = BTreeSet::new();
    let mut quoted: Option<String> = None;
    for c in debug[start + marker.len()..].chars() {
        match (&mut quoted, c) {
            (None, '}') => break,
            (None, '"') => quoted = Some(String::new()),
            (Some(path), '"') => {
                paths.insert(std::mem::take(path));
                quoted = None;
            }
            (Some(path), c) => path.push(c),
            (None, _) => {}
        }
    }
    paths
}

/// `(path, method, operation)` of every operation in the document.
fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(*method) {
                operations.push((path.as_str(), *method, operation));
            }
        }
    }
    operations
}

/// Real answers of every endpoint against their documented responses.
#[test]
fn responses_match_their_schemas() {
    let doc = document();
    let client = InProcess::new();
    let check = |path: &str, req: Req| -> Value {
        let method = req.method.to_lowercase();
        let target = req.target.clone();
        let reply = client.send(req);
        conforms(&doc, path, &method, &reply, &target);
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
    };
    let event = |entity: &str, payload: Value| json!({"event_type": "order.placed", "entity_id": entity, "payload": payload});

    let ndjson_item = serde_json::to_string(&event("order/8", json!(1))).unwrap();
    check("/health", Req::get("/health"));
    let stored =
        check("/api/v1/events", Req::post_json("/api/v1/events", &event("order/7", json!({"total": 10}))));
    let id = stored["id"].as_str().unwrap().to_string();
    check("/api/v1/events", Req::post_json("/api/v1/events", &json!({"entity_id": "x"})));
    check(
        "/api/v1/events",
        Req::post_json(
            "/api/v1/events",
            &json!({"event_type": "t", "entity_id": "order/7", "payload": 1, "expected_version": 0}),
        ),
    );
    check(
        "/api/v1/events",
        Req::post_json(
            "/api/v1/events",
            &json!({"id": id, "event_type": "t", "entity_id": "order/7", "payload": 2}),
        ),
    );
    check("/api/v1/events", Req::post("/api/v1/events", Some("text/plain"), "{}"));
    let too_large = json!({"event_type": "t", "entity_id": "e", "payload": "x".repeat(1 << 20)});
    check("/api/v1/events", Req::post_json("/api/v1/events", &too_large));
    check(
        "/api/v1/events/batch",
        Req::post_json("/api/v1/events/batch", &json!({"events": [event("order/7", json!({"paid": true}))]})),
    );
    check(
        "/api/v1/events/batch",
        Req::post("/api/v1/events/batch", Some("application/x-ndjson"), ndjson_item),
    );
    check("/api/v1/events/batch", Req::post_json("/api/v1/events/batch", &json!({"events": []})));
    check("/api/v1/events/{id}", Req::get(format!("/api/v1/events/{id}")));
    check("/api/v1/events/{id}", Req::get("/api/v1/events/0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f61"));
    check("/api/v1/events/{id}", Req::get("/api/v1/events/not-a-uuid"));
    let page = check("/api/v1/events/query", Req::get("/api/v1/events/query?limit=1"));
    assert!(page["next_after"].is_u64(), "{page}");
    check("/api/v1/events/query", Req::get("/api/v1/events/query?entity_id=none"));
    check("/api/v1/events/query", Req::get("/api/v1/events/query?limit=0"));
    let arrow = Req::get("/api/v1/events/query").header("accept", "application/vnd.apache.arrow.stream");
    check("/api/v1/events/query", arrow);
    check(
        "/api/v1/entities/{entity_id}/state",
        Req::get("/api/v1/entities/order%2F7/state?as_of=2999-01-01T00:00:00Z"),
    );
    check("/api/v1/entities/{entity_id}/state", Req::get("/api/v1/entities/nobody/state"));
    check("/api/v1/entities/{entity_id}/snapshot", Req::get("/api/v1/entities/order%2F7/snapshot"));
    check("/api/v1/entities/{entity_id}/snapshot", Req::get("/api/v1/entities/order%2F7/snapshot?as_of=x"));
    check("/api/v1/stats", Req::get("/api/v1/stats"));
    check("/api/v1/projections", Req::get("/api/v1/projections"));
    check("/api/v1/projections/{name}/{key}", Req::get("/api/v1/projections/event_counters/order.placed"));
    check("/api/v1/projections/{name}/{key}", Req::get("/api/v1/projections/entity_snapshots/order%2F7"));
    check("/api/v1/projections/{name}/{key}", Req::get("/api/v1/projections/nope/x"));
    check("/api/v1/export/parquet", Req::get("/api/v1/export/parquet"));
    check("/api/v1/export/arrow", Req::get("/api/v1/export/arrow?limit=1"));
    check("/openapi.json", Req::get("/openapi.json"));
    check("/metrics", Req::get("/metrics"));
    check("/api/v1/events/stream", Req::get("/api/v1/events/stream?limit=1"));
}

/// The refusals of the API keys (`401`, `403`) against their documented responses.
#[test]
fn auth_errors_match_their_schemas() {
    use allsource_server::{ApiKey, ApiKeys, AppOptions};
    let doc = document();
    let keys =
        ApiKeys::new([ApiKey::parse("reader-key:read").unwrap(), ApiKey::parse("writer-key:write").unwrap()])
            .unwrap();
    let router =
        allsource_server::app_with(Arc::new(EventStore::new()), AppOptions::default().with_api_keys(keys));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let send = |request: Request<Body>| -> Reply {
        runtime.block_on(async {
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec();
            Reply { status, headers, body }
        })
    };
    let append = |key: &str| {
        Request::post("/api/v1/events")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(r#"{"event_type": "t", "entity_id": "e", "payload": 1}"#))
            .unwrap()
    };

    let reply = send(Request::get("/api/v1/stats").body(Body::empty()).unwrap());
    assert_eq!(reply.status, 401, "{}", reply.text());
    conforms(&doc, "/api/v1/stats", "get", &reply, "/api/v1/stats without a key");
    let reply = send(append("reader-key"));
    assert_eq!(reply.status, 403, "{}", reply.text());
    conforms(&doc, "/api/v1/events", "post", &reply, "/api/v1/events with a read key");
    let reply = send(append("writer-key"));
    assert_eq!(reply.status, 201, "{}", reply.text());
    conforms(&doc, "/api/v1/events", "post", &reply, "/api/v1/events with a write key");
    // The document itself is open.
    let reply = send(Request::get("/openapi.json").body(Body::empty()).unwrap());
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The first lines of a subscription (its stored events, then `caught_up`), in both
/// encodings, against the documented `StreamLine`. Only the start is read: a stream
/// never ends.
#[test]
fn stream_lines_match_their_schema() {
    let doc = document();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let router = app(Arc::new(EventStore::new()));
    let line_schema = json!({"$ref": "#/components/schemas/StreamLine"});
    runtime.block_on(async {
        let append = Request::post("/api/v1/events")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"event_type": "t", "entity_id": "e", "payload": {"a": 1}}"#))
            .unwrap();
        assert_eq!(router.clone().oneshot(append).await.unwrap().status(), 201);

        for accept in ["application/x-ndjson", "text/event-stream"] {
            let request = Request::get("/api/v1/events/stream?after=0")
                .header("accept", accept)
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let reply = Reply {
                status: response.status().as_u16(),
                headers: response
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                    .collect(),
                body: Vec::new(),
            };
            conforms(&doc, "/api/v1/events/stream", "get", &reply, accept);
            assert_eq!(reply.header("content-type"), Some(accept));
            let text = read_until(response.into_body(), r#""type":"caught_up""#).await;
            let lines: Vec<Value> = if accept == "application/x-ndjson" {
                text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
            } else {
                // SSE: the `data:` of each message; an event's is the event itself.
                text.split("\n\n")
                    .filter(|message| !message.trim().is_empty())
                    .map(|message| {
                        let data = message.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                        let data: Value = serde_json::from_str(data).unwrap();
                        if message.starts_with("id: ") {
                            json!({"type": "event", "event": data})
                        } else {
                            data
                        }
                    })
                    .collect()
            };
            assert_eq!(lines.len(), 2, "{accept}: {text}");
            assert_eq!(lines[0]["type"], "event", "{accept}: {text}");
            assert_eq!(lines[1]["type"], "caught_up", "{accept}: {text}");
            for line in &lines {
                let mut problems = Vec::new();
                validate(&doc, &line_schema, line, "$", &mut problems);
                assert!(
                    problems.is_empty(),
                    "{accept}: {line} does not match StreamLine:\n  {}",
                    problems.join("\n  ")
                );
            }
        }
    });
}

/// The body's text up to and including the first line that contains `marker`; waits
/// at most 10 s.
async fn read_until(mut body: Body, marker: &str) -> String {
    use axum::body::HttpBody;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(at) = text.find(marker) {
            if let Some(end) = text[at..].find('\n') {
                let end = at + end + 1;
                return text[..end].to_string();
            }
        }
        let frame = tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)),
        )
        .await
        .unwrap_or_else(|_| panic!("no {marker:?} within 10 s; so far: {text}"))
        .expect("the stream ended")
        .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

/// Asserts that `reply` is a documented response of `method path`, and that a JSON body
/// matches the documented schema.
fn conforms(doc: &Value, path: &str, method: &str, reply: &Reply, target: &str) {
    let what = format!("{} {target} -> {}", method.to_uppercase(), reply.status);
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{what}: {method} {path} is not documented");
    let mut response = &operation["responses"][reply.status.to_string()];
    assert!(response.is_object(), "{what}: status {} is not documented: {}", reply.status, reply.text());
    if let Some(reference) = response["$ref"].as_str() {
        response = resolve(doc, reference);
    }
    let content_type = reply.header("content-type").unwrap_or_default();
    let media_type = essence(content_type);
    let content = documented_content(response, media_type)
        .unwrap_or_else(|| panic!("{what}: content type {content_type:?} is not documented: {response}"));
    if media_type == "application/json" {
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        let mut problems = Vec::new();
        validate(doc, &content["schema"], &body, "$", &mut problems);
        assert!(
            problems.is_empty(),
            "{what}: the body does not match its schema:\n  {}\n{body}",
            problems.join("\n  ")
        );
    }
}

/// The documented content of `response` for `media_type` (documented media types may
/// carry parameters: `text/plain; version=0.0.4`).
fn documented_content<'a>(response: &'a Value, media_type: &str) -> Option<&'a Value> {
    let contents = response["content"].as_object()?;
    contents.iter().find(|(documented, _)| essence(documented) == media_type).map(|(_, content)| content)
}

fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or_default().trim()
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("not a local $ref: {reference}"));
    doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

/// A small JSON Schema check, for the keywords utoipa writes: `$ref`, `allOf`, `oneOf`,
/// `type` (one or several), `properties`, `required`, `items`, `enum`, `minimum`. Stricter than
/// JSON Schema in one way: an object whose schema lists properties may have no other
/// field, so a field added to a response but not to its schema fails here.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        return validate(doc, resolve(doc, reference), value, at, problems);
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let matching = alternatives
            .iter()
            .filter(|alternative| {
                let mut inner = Vec::new();
                validate(doc, alternative, value, at, &mut inner);
                inner.is_empty()
            })
            .count();
        if matching != 1 {
            problems.push(format!("{at}: {value} matches {matching} of oneOf {schema}"));
        }
        return;
    }
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    collect_object(doc, schema, &mut properties, &mut required);
    if let Some(types) = types_of(schema) {
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types.iter().any(|t| t == actual || (t == "number" && actual == "integer"));
        if !ok {
            problems.push(format!("{at}: {value} is {actual}, the schema says {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            problems.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let (Some(minimum), Some(number)) = (schema["minimum"].as_f64(), value.as_f64()) {
        if number < minimum {
            problems.push(format!("{at}: {number} is below the minimum {minimum}"));
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"), problems);
        }
    }
    let Some(object) = value.as_object() else { return };
    for name in &required {
        if !object.contains_key(name) {
            problems.push(format!("{at}: the required field `{name}` is missing"));
        }
    }
    if properties.is_empty() {
        return;
    }
    for (name, field) in object {
        match properties.get(name) {
            Some(schema) => validate(doc, schema, field, &format!("{at}.{name}"), problems),
            None => problems.push(format!("{at}: the field `{name}` is not in the schema")),
        }
    }
}

/// The properties and required fields of an object schema, through `$ref` and `allOf`.
fn collect_object(
    doc: &Value,
    schema: &Value,
    properties: &mut serde_json::Map<String, Value>,
    required: &mut Vec<String>,
) {
    if let Some(reference) = schema["$ref"].as_str() {
        return collect_object(doc, resolve(doc, reference), properties, required);
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        collect_object(doc, part, properties, required);
    }
    if let Some(own) = schema["properties"].as_object() {
        properties.extend(own.clone());
    }
    required.extend(
        schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).map(String::from),
    );
}

fn types_of(schema: &Value) -> Option<Vec<String>> {
    match &schema["type"] {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(types) => Some(types.iter().filter_map(|t| t.as_str()).map(String::from).collect()),
        _ => None,
    }
}
