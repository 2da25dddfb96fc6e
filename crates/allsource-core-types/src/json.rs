//! [`Json`]: a JSON value kept as its compact text, which is how the store holds
//! payloads and metadata.
//!
//! Text is what every later step wants: the WAL and the Parquet files store it, HTTP
//! responses and Arrow columns copy it, and it takes a fraction of the memory of a
//! parsed `serde_json::Value`. A `Json` is made from a `Value` (serialized once, at
//! the edge) or from text checked to be JSON, so it always holds valid, compact JSON.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value as compact text (no insignificant whitespace), valid by construction.
///
/// Two `Json`s made from equal `Value`s hold the same text (object keys sorted, numbers
/// in one canonical form), so comparing texts compares values.
///
/// ```
/// use allsource_core_types::Json;
/// use serde_json::json;
///
/// let payload = Json::from(json!({"name": "Alice", "n": 1}));
/// assert_eq!(payload.as_str(), r#"{"n":1,"name":"Alice"}"#);
/// assert_eq!(payload, json!({"name": "Alice", "n": 1}));
/// assert_eq!(serde_json::to_string(&payload).unwrap(), payload.as_str());
/// ```
#[derive(Clone)]
pub struct Json(Box<RawValue>);

impl Json {
    /// The text of `value`, compact.
    pub fn from_value(value: &Value) -> Json {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Json(raw),
            // A `Value` always serializes: its map keys are strings.
            Err(_) => Json::null(),
        }
    }

    /// `text`, after checking that it is one JSON value. The caller promises it is
    /// compact (as every text this crate wrote is): it is stored as it is.
    pub fn from_compact_text(text: String) -> Result<Json, serde_json::Error> {
        RawValue::from_string(text).map(Json)
    }

    /// JSON `null`.
    pub fn null() -> Json {
        // serde_json's default raw value is `null`.
        Json(Box::<RawValue>::default())
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The length of the text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the text is empty (never: the shortest JSON value is one digit).
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }

    /// The value, parsed.
    pub fn to_value(&self) -> Value {
        // Valid JSON by construction: parsing cannot fail.
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Json {
        Json::from_value(&value)
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Json {
        Json::from_value(value)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Json {}

impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl PartialEq<Json> for Value {
    fn eq(&self, other: &Json) -> bool {
        *self == other.to_value()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    /// Reads any JSON value and keeps it in the canonical compact form.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        Value::deserialize(deserializer).map(|value| Json::from_value(&value))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn compact_canonical_and_exact() {
        let value: Value =
            serde_json::from_str(r#"{ "b" : [1, 2.5, "\u00e9"], "a": 18446744073709551615, "f": 0.1 }"#)
                .unwrap();
        let text = Json::from_value(&value);
        assert_eq!(text.as_str(), r#"{"a":18446744073709551615,"b":[1,2.5,"é"],"f":0.1}"#);
        assert_eq!(text.to_value(), value);
        assert_eq!(text, value);
        let parsed: Json =
            serde_json::from_str(r#"{"f": 0.1, "a": 18446744073709551615, "b":[1,2.5,"é"]}"#).unwrap();
        assert_eq!(parsed, text);
        assert_eq!(Json::null().as_str(), "null");
    }

    #[test]
    fn text_is_checked() {
        assert!(Json::from_compact_text("{\"a\":1}".to_string()).is_ok());
        assert!(Json::from_compact_text("{\"a\":".to_string()).is_err());
        assert!(Json::from_compact_text("1 2".to_string()).is_err());
    }

    #[test]
    fn serializes_as_the_json_itself() {
        let event = json!({"payload": Json::from(json!({"x": [null, true]}))});
        assert_eq!(event.to_string(), r#"{"payload":{"x":[null,true]}}"#);
    }
}
