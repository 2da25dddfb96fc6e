//! JSON Merge Patch (RFC 7386) applied straight from the patch's text.
//!
//! Payloads are stored as JSON text. Parsing one into a `Value` and then merging it
//! builds the patch's tree, copies its leaves into the state and drops the tree. Here
//! the parser walks the text and the merge happens as it goes: keys already in the
//! state are looked up by the borrowed key text, `null` removes a key without being
//! built, and only the values that land in the state are allocated. The result is
//! the same as [`json_patch::merge`] with the parsed patch (a property test checks).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Applies the JSON text `patch` to `state` as a JSON Merge Patch.
///
/// # Errors
/// When `patch` is not valid JSON. The state may then hold the part of the patch
/// before the error: callers pass text that was validated when it was stored.
pub fn apply_merge_patch_text(state: &mut Value, patch: &str) -> serde_json::Result<()> {
    let mut deserializer = serde_json::Deserializer::from_str(patch);
    MergeInto(state).deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Merges the value being parsed into the state it holds.
struct MergeInto<'s>(&'s mut Value);

impl<'de> DeserializeSeed<'de> for MergeInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MergeInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // A patch that is not an object replaces the state.
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        *self.0 = Value::Bool(v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        *self.0 = Value::from(v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        *self.0 = Value::from(v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // Parsed JSON numbers are finite, so this is never `Null`.
        *self.0 = Value::from(v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        *self.0 = Value::String(v.to_owned());
        Ok(())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        *self.0 = Value::String(v);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.0 = Value::Null;
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        *self.0 = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(())
    }

    // An object patch merges into the state, which becomes an object if it was not.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if !self.0.is_object() {
            *self.0 = Value::Object(Map::new());
        }
        let Value::Object(object) = self.0 else { unreachable!("made an object just above") };
        while let Some(key) = map.next_key::<Key<'de>>()? {
            map.next_value_seed(MergeMember { object: &mut *object, key })?;
        }
        Ok(())
    }
}

/// A patch's member key: borrowed from the text unless it had escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }

    fn into_owned(self) -> String {
        match self {
            Key::Borrowed(key) => key.to_owned(),
            Key::Owned(key) => key,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Merges one member of an object patch into the state's object.
struct MergeMember<'s, 'de> {
    object: &'s mut Map<String, Value>,
    key: Key<'de>,
}

impl<'de> DeserializeSeed<'de> for MergeMember<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> MergeMember<'_, 'de> {
    fn set(self, value: Value) {
        match self.object.get_mut(self.key.as_str()) {
            Some(slot) => *slot = value,
            None => {
                self.object.insert(self.key.into_owned(), value);
            }
        }
    }
}

impl<'de> Visitor<'de> for MergeMember<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.set(Value::Bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.set(Value::from(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.set(Value::from(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.set(Value::from(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        // A string replacing a string (a field updated) reuses its buffer.
        match self.object.get_mut(self.key.as_str()) {
            Some(Value::String(slot)) => {
                slot.clear();
                slot.push_str(v);
            }
            Some(slot) => *slot = Value::String(v.to_owned()),
            None => {
                self.object.insert(self.key.into_owned(), Value::String(v.to_owned()));
            }
        }
        Ok(())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.set(Value::String(v));
        Ok(())
    }

    // `null` removes the member.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.object.remove(self.key.as_str());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.set(value);
        Ok(())
    }

    // An object merges into the member (a new member starts as `null`, so its own
    // `null`s are dropped, as RFC 7386 asks).
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let slot = match self.object.get_mut(self.key.as_str()) {
            Some(slot) => slot,
            None => self.object.entry(self.key.into_owned()).or_insert(Value::Null),
        };
        MergeInto(slot).visit_map(map)
    }
}
