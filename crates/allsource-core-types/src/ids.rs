//! Validated entity ids and event types.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;

use crate::limits::{ID_BYTES_MAX, ID_BYTES_MIN};
use crate::Error;

/// Checks the rule shared by entity ids and event types: 1..=256 bytes, no control
/// characters.
fn check_id(what: &str, value: &str) -> Result<(), Error> {
    if value.len() < ID_BYTES_MIN || value.len() > ID_BYTES_MAX {
        return Err(Error::Validation(format!(
            "{what} must be {ID_BYTES_MIN}..={ID_BYTES_MAX} bytes, got {}",
            value.len()
        )));
    }
    // ASCII first: one vectorizable pass over bytes covers nearly every real id.
    let has_control = if value.is_ascii() {
        value.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        value.chars().any(char::is_control)
    };
    if has_control {
        return Err(Error::Validation(format!("{what} must not contain control characters")));
    }
    Ok(())
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Cheap to clone: up to 23 bytes are held inline (copied, and compared where
        /// they are: a map keyed by ids finds a key without following a pointer), a
        /// longer text is shared.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(SmolStr);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Checks `value` against the rule without making an id: 1..=256 bytes, no
            /// control characters.
            pub fn check(value: &str) -> Result<(), Error> {
                check_id($what, value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(value: &str) -> Result<Self, Error> {
                check_id($what, value)?;
                Ok(Self(SmolStr::new(value)))
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self, Error> {
                check_id($what, &value)?;
                Ok(Self(SmolStr::from(value)))
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::try_from(text).map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

validated_id!(
    /// The id of an entity: 1..=256 bytes of text without control characters.
    EntityId,
    "entity_id"
);

validated_id!(
    /// The type of an event: 1..=256 bytes of text without control characters.
    EventType,
    "event_type"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(EntityId::try_from(input).is_ok(), ok, "entity id {input:?}");
        assert_eq!(EventType::try_from(input).is_ok(), ok, "event type {input:?}");
    }

    #[test]
    fn id_rules() {
        check("user-123", true);
        check("order/7", true);
        check("ünïcödé ✓", true);
        check(&"a".repeat(256), true);
        check(&"a".repeat(257), false);
        check(&"é".repeat(128), true); // 256 bytes
        check(&format!("{}a", "é".repeat(128)), false); // 257 bytes
        check("", false);
        check("tab\there", false);
        check("nul\0", false);
        check("del\u{7f}", false);
        check("c1\u{85}", false);
    }

    #[test]
    fn error_names_the_field() {
        let err = EntityId::try_from("").unwrap_err();
        assert!(err.to_string().contains("entity_id"), "{err}");
        let err = EventType::try_from("x\n").unwrap_err();
        assert!(err.to_string().contains("event_type"), "{err}");
    }
}
