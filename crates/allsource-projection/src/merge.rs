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
    Put { slot: state, merge: true }.deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Puts the value being parsed in the place it holds: merged into it when `merge` and
/// both are objects (RFC 7386), otherwise replacing it. A string replacing a string
/// reuses its buffer, and an array replacing an array reuses it and its elements.
struct Put<'s> {
    slot: &'s mut Value,
    /// Merge an object into an object: a patch and its members; not an array's elements.
    merge: bool,
}

impl<'de> DeserializeSeed<'de> for Put<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Put<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        *self.slot = Value::Bool(v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        *self.slot = Value::from(v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        *self.slot = Value::from(v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // Parsed JSON numbers are finite, so this is never `Null`.
        *self.slot = Value::from(v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.slot {
            Value::String(slot) => {
                slot.clear();
                slot.push_str(v);
            }
            slot => *slot = Value::String(v.to_owned()),
        }
        Ok(())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        *self.slot = Value::String(v);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.slot = Value::Null;
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Value::Array(items) = self.slot else {
            *self.slot = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
            return Ok(());
        };
        let mut len = 0;
        loop {
            let more = match items.get_mut(len) {
                Some(item) => seq.next_element_seed(Put { slot: item, merge: false })?.is_some(),
                None => match seq.next_element::<Value>()? {
                    Some(item) => {
                        items.push(item);
                        true
                    }
                    None => false,
                },
            };
            if !more {
                break;
            }
            len += 1;
        }
        items.truncate(len);
        Ok(())
    }

    // An object patch merges into the state, which becomes an object if it was not.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if !self.merge {
            *self.slot = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
            return Ok(());
        }
        if !self.slot.is_object() {
            *self.slot = Value::Object(Map::new());
        }
        let Value::Object(object) = self.slot else { unreachable!("made an object just above") };
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

impl MergeMember<'_, '_> {
    /// Runs `put` on the member's place in the state; a new member starts as `null`, so
    /// that an object put there drops its own `null`s, as RFC 7386 asks.
    fn put<R>(self, put: impl FnOnce(Put<'_>) -> R) -> R {
        let slot = match self.object.get_mut(self.key.as_str()) {
            Some(slot) => slot,
            None => self.object.entry(self.key.into_owned()).or_insert(Value::Null),
        };
        put(Put { slot, merge: true })
    }
}

impl<'de> Visitor<'de> for MergeMember<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.put(|place| place.visit_bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.put(|place| place.visit_i64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.put(|place| place.visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.put(|place| place.visit_f64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.put(|place| place.visit_str(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.put(|place| place.visit_string(v))
    }

    // `null` removes the member.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.object.remove(self.key.as_str());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.put(|place| place.visit_seq(seq))
    }

    // An object merges into the member.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.put(|place| place.visit_map(map))
    }
}
