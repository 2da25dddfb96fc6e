//! JSON Merge Patch (RFC 7386) from compact text to compact text.
//!
//! Payloads are stored as compact JSON text, and so are the states the entity snapshots
//! keep. Merging a payload into a state walks the two texts side by side and writes the
//! merged text: no tree is built, and a state is one block of memory rather than a tree
//! of maps and strings scattered over the heap, which matters when a batch touches
//! thousands of states that are not in the cache.
//!
//! The result means the same as [`json_patch::merge`] with the parsed texts (a property
//! test checks). A patch member whose key appears twice in one object is applied twice,
//! in order, as a streaming parse of the patch would.
//!
//! The states this writes keep every object that can be merged into (the root and the
//! members of such objects, recursively) with its keys sorted and unique, which is what
//! lets a merge walk a state's members and the sorted patch members in one pass. Values
//! that replace are copied as the patch wrote them.

use std::borrow::Cow;

use allsource_core_types::next_quote_or_backslash;
use serde::de::Error as _;
use smallvec::SmallVec;

/// Writes to `out` the compact JSON text of `patch` merged into `state`.
///
/// Both texts must be compact JSON (as [`allsource_core_types::Json`] and this function
/// write it); `state` may be empty, which counts as no state. A text that is not gives
/// an error, or a result as invalid as it was: never a panic.
///
/// # Errors
/// When the structure of an object in either text cannot be read, or objects in the
/// patch are nested more than [`MERGE_DEPTH_MAX`] deep (stored payloads never are: they
/// are parsed when deeper than serde_json's recursion limit of 128, which refuses them).
pub fn merge_patch_compact(state: &str, patch: &str, out: &mut String) -> serde_json::Result<()> {
    merge_at(state, patch, out, 0)
}

/// How deep [`merge_patch_compact`] follows objects into objects: each level takes
/// about a kilobyte of the thread's stack.
pub const MERGE_DEPTH_MAX: usize = 128;

fn merge_at(state: &str, patch: &str, out: &mut String, depth: usize) -> serde_json::Result<()> {
    if !patch.starts_with('{') {
        out.push_str(patch);
        return Ok(());
    }
    if depth > MERGE_DEPTH_MAX {
        return Err(serde_json::Error::custom("objects nested too deep"));
    }
    let mut changes = Members::new();
    members(patch, &mut changes)?;
    // Stable: members with the same key stay in the patch's order.
    changes.sort_by(|a, b| a.key.cmp(&b.key));
    let mut kept = Members::new();
    if state.starts_with('{') {
        members(state, &mut kept)?;
    }
    if !kept.windows(2).all(|pair| pair[0].key < pair[1].key) {
        // Not written by this function: sorted here, the last of equal keys winning.
        kept.sort_by(|a, b| a.key.cmp(&b.key));
        kept.reverse();
        kept.dedup_by(|later, earlier| later.key == earlier.key);
        kept.reverse();
    }

    out.push('{');
    let mut first = true;
    let mut begin_member = |out: &mut String, raw_key: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(raw_key);
        out.push(':');
    };
    let (mut k, mut c) = (0, 0);
    while k < kept.len() || c < changes.len() {
        if c == changes.len() || (k < kept.len() && kept[k].key < changes[c].key) {
            begin_member(out, kept[k].raw_key);
            out.push_str(kept[k].value);
            k += 1;
            continue;
        }
        let same_key = changes[c..].iter().take_while(|m| m.key == changes[c].key).count();
        let group = &changes[c..c + same_key];
        c += same_key;
        let current = match kept.get(k) {
            Some(member) if member.key == group[0].key => {
                k += 1;
                member.value
            }
            _ => "",
        };
        let raw_key = group[same_key - 1].raw_key;
        if let [change] = group {
            // The common case, written in place.
            match change.value {
                "null" => {}
                value if value.starts_with('{') => {
                    begin_member(out, raw_key);
                    merge_at(current, value, out, depth + 1)?;
                }
                value => {
                    begin_member(out, raw_key);
                    out.push_str(value);
                }
            }
            continue;
        }
        let mut value: Option<String> = (!current.is_empty()).then(|| current.to_owned());
        for change in group {
            value = match change.value {
                "null" => None,
                patch if patch.starts_with('{') => {
                    let mut merged = String::new();
                    merge_at(value.as_deref().unwrap_or(""), patch, &mut merged, depth + 1)?;
                    Some(merged)
                }
                patch => Some(patch.to_owned()),
            };
        }
        if let Some(value) = value {
            begin_member(out, raw_key);
            out.push_str(&value);
        }
    }
    out.push('}');
    Ok(())
}

/// One member of an object, borrowed from its text.
struct Member<'a> {
    /// The key, unescaped (borrowed when it has no escapes).
    key: Key<'a>,
    /// The key as written, with its quotes.
    raw_key: &'a str,
    /// The value as written.
    value: &'a str,
}

/// A member's key, unescaped, ordered as its text is, with its first eight bytes in a
/// word: most keys are no longer or differ in them, and then comparing two keys is
/// comparing two words rather than a call to compare memory.
struct Key<'a> {
    /// The first eight bytes, big-endian, zeros past the end of a shorter key. Where
    /// two of these differ, the keys compare as they do. Where they are equal and both
    /// keys are no longer, the keys differ at most in trailing zero bytes: the shorter
    /// is first. Otherwise the texts decide.
    head: u64,
    text: Cow<'a, str>,
}

impl<'a> Key<'a> {
    fn new(text: Cow<'a, str>) -> Key<'a> {
        // Byte by byte: a copy of up to eight bytes into a word is a call to copy
        // memory, and reading the word back then waits for the copy's stores.
        let head = (text.as_bytes().iter().take(8).enumerate())
            .fold(0u64, |head, (i, &byte)| head | u64::from(byte) << (56 - 8 * i));
        Key { head, text }
    }

    /// The key written without escapes at `bytes[start..end]`: its first eight bytes
    /// read as one word where the text goes on that far (past a key come at least its
    /// quote, the colon, a value and the object's end, so it nearly always does).
    fn unescaped(text: &'a str, start: usize, end: usize) -> Option<Key<'a>> {
        let key = text.get(start..end)?;
        let Some(word) = text.as_bytes().get(start..start + 8).and_then(|w| <[u8; 8]>::try_from(w).ok())
        else {
            return Some(Key::new(Cow::Borrowed(key)));
        };
        let len = end - start;
        let mask = if len >= 8 { u64::MAX } else { !(u64::MAX >> (8 * len)) };
        Some(Key { head: u64::from_be_bytes(word) & mask, text: Cow::Borrowed(key) })
    }
}

impl Ord for Key<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head.cmp(&other.head).then_with(|| match (self.text.len(), other.text.len()) {
            (a, b) if a <= 8 && b <= 8 => a.cmp(&b),
            _ => self.text.cmp(&other.text),
        })
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Key<'_> {}

impl PartialOrd for Key<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn malformed() -> serde_json::Error {
    serde_json::Error::custom("not a compact JSON object")
}

/// An object's members, on the stack when there are few.
type Members<'a> = SmallVec<[Member<'a>; 8]>;

/// Puts in `found` the members of the compact JSON object `text` (which starts with
/// `{`), in order. (Filled in place: a `Members` is too large to move around.)
fn members<'a>(text: &'a str, found: &mut Members<'a>) -> serde_json::Result<()> {
    let bytes = text.as_bytes();
    let mut at = 1;
    if bytes.get(at) == Some(&b'}') && bytes.len() == 2 {
        return Ok(());
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return Err(malformed());
        }
        let (key_end, escaped) = string_end(bytes, at)?;
        let raw_key = text.get(at..key_end).ok_or_else(malformed)?;
        let key = if escaped {
            Key::new(Cow::Owned(serde_json::from_str::<String>(raw_key)?))
        } else {
            Key::unescaped(text, at + 1, key_end - 1).ok_or_else(malformed)?
        };
        if bytes.get(key_end) != Some(&b':') {
            return Err(malformed());
        }
        let value_end = value_end(bytes, key_end + 1)?;
        let value = text.get(key_end + 1..value_end).ok_or_else(malformed)?;
        found.push(Member { key, raw_key, value });
        match bytes.get(value_end) {
            Some(b',') => at = value_end + 1,
            Some(b'}') if value_end + 1 == bytes.len() => return Ok(()),
            _ => return Err(malformed()),
        }
    }
}

/// The end (exclusive) of the string that starts with the quote at `start`, and
/// whether it has escapes.
fn string_end(bytes: &[u8], start: usize) -> serde_json::Result<(usize, bool)> {
    let mut at = next_quote_or_backslash(bytes, start + 1);
    let mut escaped = false;
    loop {
        match bytes.get(at) {
            Some(b'"') => return Ok((at + 1, escaped)),
            Some(_) => {
                // A backslash.
                escaped = true;
                at = next_quote_or_backslash(bytes, at + 2);
            }
            None => return Err(malformed()),
        }
    }
}

/// The end (exclusive) of the compact JSON value that starts at `start`.
fn value_end(bytes: &[u8], start: usize) -> serde_json::Result<usize> {
    match bytes.get(start) {
        Some(b'"') => Ok(string_end(bytes, start)?.0),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match bytes.get(at) {
                    Some(b'"') => {
                        at = string_end(bytes, at)?.0;
                        continue;
                    }
                    Some(b'{' | b'[') => depth += 1,
                    Some(b'}' | b']') => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(at + 1);
                        }
                    }
                    Some(_) => {}
                    None => return Err(malformed()),
                }
                at += 1;
            }
        }
        Some(b',' | b'}' | b']' | b':') | None => Err(malformed()),
        Some(_) => {
            let len = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))
                .unwrap_or(bytes.len() - start);
            Ok(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Keys order as their texts do: short and long ones, ones equal in their first
        /// eight bytes, and ones that differ only by trailing zero bytes.
        #[test]
        fn keys_compare_as_their_texts(a in "[ab\\x00é]{0,12}", b in "[ab\\x00é]{0,12}") {
            let (x, y) = (Key::new(Cow::Borrowed(a.as_str())), Key::new(Cow::Borrowed(b.as_str())));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            let (x0, a0) = (Key::new(Cow::Owned(format!("{a}\0"))), format!("{a}\0"));
            prop_assert_eq!(x0.cmp(&x), a0.as_str().cmp(a.as_str()));
        }

        /// A key read in place from a text, whatever follows it (or nothing), is the
        /// same key as its text on its own.
        #[test]
        fn keys_read_in_place_are_the_same(a in "[ab\x00é]{0,12}", tail in "[\":,}1ab]{0,10}") {
            let text = format!("\"{a}{tail}");
            let key = Key::unescaped(&text, 1, 1 + a.len()).expect("a key at char boundaries");
            prop_assert_eq!(key.head, Key::new(Cow::Borrowed(a.as_str())).head);
            prop_assert_eq!(key.text.as_ref(), a.as_str());
        }
    }
}
