//! [`Json`]: a JSON value kept as its compact text, which is how the store holds
//! payloads and metadata.
//!
//! Text is what every later step wants: the WAL and the Parquet files store it, HTTP
//! responses and Arrow columns copy it, and it takes a fraction of the memory of a
//! parsed `serde_json::Value`. A `Json` is made from a `Value` (serialized once, at
//! the edge) or from text checked to be JSON, so it always holds valid, compact JSON.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value as compact text (no insignificant whitespace), valid by construction.
///
/// Two `Json`s made from equal `Value`s hold the same text (object keys sorted, numbers
/// in one canonical form). One made from a client's text ([`Json::compact`]) keeps
/// that text as it was sent, only without whitespace: its keys in the client's order,
/// its numbers and escapes as written. Equality compares texts; [`Json::same_value`]
/// compares what they mean.
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

    /// `raw` without its insignificant whitespace: otherwise the text as it is, not
    /// parsed into a `Value` when it need not be.
    ///
    /// serde_json checks a raw value's syntax but not what parsing it would refuse:
    /// an escaped lone surrogate (`"\ud800"`) or a number beyond `f64`'s range
    /// (`1e400`). A text that has a `\u` escape, an exponent or a very long number is
    /// parsed to find out; an error says why it is not acceptable JSON.
    ///
    /// ```
    /// use allsource_core_types::Json;
    /// use serde_json::value::RawValue;
    ///
    /// let raw: Box<RawValue> = serde_json::from_str(r#"{ "z": "a b", "a" : [1, 2.50] }"#).unwrap();
    /// assert_eq!(Json::compact(&raw).unwrap().as_str(), r#"{"z":"a b","a":[1,2.50]}"#);
    /// let lone: Box<RawValue> = serde_json::from_str(r#""\ud800""#).unwrap();
    /// assert!(Json::compact(&lone).is_err());
    /// ```
    pub fn compact(raw: &RawValue) -> Result<Json, serde_json::Error> {
        let text = raw.get();
        let scan = Scan::of(text);
        if scan.needs_parse {
            serde_json::from_str::<Value>(text)?;
        }
        let Some(first_space) = scan.first_whitespace else { return Ok(Json(raw.to_owned())) };
        let mut compact = String::with_capacity(text.len());
        compact.push_str(&text[..first_space]);
        let mut in_string = false;
        let mut escaped = false;
        for c in text[first_space..].chars() {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
            } else if c == '"' {
                in_string = true;
            } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
                continue;
            }
            compact.push(c);
        }
        RawValue::from_string(compact).map(Json)
    }

    /// Whether the two texts are the same JSON value: object keys in any order (the
    /// last of a repeated key counts), strings compared after their escapes, integers
    /// by their digits (exactly, however long), other numbers as the doubles they read
    /// as (to the last bit: `-0.0` is not `0.0`); an integer is never the same as a
    /// number with a fraction or an exponent (`1` and `1.0` differ). Equal texts are
    /// the same without being read.
    ///
    /// ```
    /// use allsource_core_types::Json;
    /// let json = |text: &str| Json::from_compact_text(text.to_string()).unwrap();
    /// assert!(json(r#"{"a":1,"b":"x"}"#).same_value(&json(r#"{"b":"\u0078","a":1}"#)));
    /// assert!(json("1.5").same_value(&json("15e-1")));
    /// assert!(!json("123456789012345678901234567890").same_value(&json("123456789012345678901234567891")));
    /// assert!(!json("-0.0").same_value(&json("0.0")));
    /// assert!(!json("1").same_value(&json("1.0")));
    /// ```
    pub fn same_value(&self, other: &Json) -> bool {
        self == other
            || matches!(
                (Canonical::read(self.as_str()), Canonical::read(other.as_str())),
                (Some(a), Some(b)) if a == b
            )
    }

    /// The empty object, `{}`: the metadata of every event sent without any, so a copy
    /// of one made once rather than a `Value` serialized each time.
    pub fn empty_object() -> Json {
        static EMPTY: std::sync::LazyLock<Json> =
            std::sync::LazyLock::new(|| Json::from_value(&Value::Object(serde_json::Map::new())));
        EMPTY.clone()
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

/// The offset of the first `"` or `\\` in `bytes` at or after `from`, or `bytes.len()`
/// if there is none (or `from` is past the end): where a JSON string that goes on at
/// `from` ends or has an escape. Eight bytes at a time, since most of a JSON text is
/// usually inside strings.
pub fn next_quote_or_backslash(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(word) = bytes.get(at..at + 8).and_then(|chunk| <[u8; 8]>::try_from(chunk).ok()) {
        let word = u64::from_le_bytes(word);
        let found = bytes_equal_to(word, b'"') | bytes_equal_to(word, b'\\');
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest.iter().position(|&b| b == b'"' || b == b'\\').unwrap_or(rest.len())
}

/// A word with the high bit set in the lowest byte of `word` equal to `byte` (bytes
/// above it may be marked too, which the caller never looks at); 0 when none is.
fn bytes_equal_to(word: u64, byte: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & (ONES << 7)
}

/// What one pass over a JSON text (valid syntax) finds.
struct Scan {
    /// The byte offset of the first whitespace outside a string.
    first_whitespace: Option<usize>,
    /// Whether the text has something only a parse can tell is acceptable: a `\u`
    /// escape, an exponent, a run of digits long enough to leave `f64`'s range, or
    /// arrays and objects nested deeper than a parse allows.
    needs_parse: bool,
}

impl Scan {
    /// More digits than this in a row may be out of `f64`'s range (about 1.8e308).
    const DIGITS_MAX: usize = 300;
    /// Deeper nesting than this may be past serde_json's recursion limit (128).
    const DEPTH_MAX: usize = 100;

    fn of(text: &str) -> Scan {
        let bytes = text.as_bytes();
        let mut scan = Scan { first_whitespace: None, needs_parse: false };
        let mut digits = 0;
        let mut depth = 0usize;
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    scan.first_whitespace.get_or_insert(i);
                }
                b'[' | b'{' => {
                    depth += 1;
                    scan.needs_parse |= depth > Scan::DEPTH_MAX;
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'"' => {
                    // To the closing quote, over escapes.
                    i = next_quote_or_backslash(bytes, i + 1);
                    while bytes.get(i) == Some(&b'\\') {
                        scan.needs_parse |= bytes.get(i + 1) == Some(&b'u');
                        i = next_quote_or_backslash(bytes, i + 2);
                    }
                }
                // After a digit or a point: an exponent, not the `e` of `true`.
                b'e' | b'E' if i > 0 && matches!(bytes[i - 1], b'0'..=b'9' | b'.') => scan.needs_parse = true,
                _ => {}
            }
            digits = if byte.is_ascii_digit() { digits + 1 } else { 0 };
            scan.needs_parse |= digits > Scan::DIGITS_MAX;
            i += 1;
        }
        scan
    }
}

/// A JSON value read for comparison ([`Json::same_value`]): `serde_json::Value` would
/// turn an integer beyond 64 bits into a double and lose its last digits.
#[derive(Debug, PartialEq)]
enum Canonical<'a> {
    Null,
    Bool(bool),
    /// A number without fraction or exponent, by its text (JSON allows no leading
    /// zeros, so equal integers have equal texts).
    Integer(&'a str),
    /// Any other number, by the bits of the double it reads as.
    Float(u64),
    String(Cow<'a, str>),
    Array(Vec<Canonical<'a>>),
    /// The last of a repeated key counts, as when parsing into a `Value`.
    Object(BTreeMap<Cow<'a, str>, Canonical<'a>>),
}

impl<'a> Canonical<'a> {
    /// Deeper nesting than a stored text can have is refused, never followed down the
    /// stack.
    const DEPTH_MAX: usize = 256;

    /// The value of `text`, or `None` if it is not one JSON value.
    fn read(text: &'a str) -> Option<Canonical<'a>> {
        let mut reader = CanonicalReader { text, at: 0 };
        let value = reader.value(0)?;
        reader.skip_whitespace();
        (reader.at == text.len()).then_some(value)
    }
}

struct CanonicalReader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> CanonicalReader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn value(&mut self, depth: usize) -> Option<Canonical<'a>> {
        if depth > Canonical::DEPTH_MAX {
            return None;
        }
        self.skip_whitespace();
        match self.peek()? {
            b'{' => {
                self.at += 1;
                let mut members = BTreeMap::new();
                if self.eat(b'}') {
                    return Some(Canonical::Object(members));
                }
                loop {
                    self.skip_whitespace();
                    let key = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    members.insert(key, self.value(depth + 1)?);
                    if self.eat(b'}') {
                        return Some(Canonical::Object(members));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Canonical::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Canonical::Array(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(Canonical::String),
            b't' => self.literal("true", Canonical::Bool(true)),
            b'f' => self.literal("false", Canonical::Bool(false)),
            b'n' => self.literal("null", Canonical::Null),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &str, value: Canonical<'a>) -> Option<Canonical<'a>> {
        self.text[self.at..].starts_with(word).then(|| {
            self.at += word.len();
            value
        })
    }

    /// A string, its escapes decoded (by serde_json, only when it has any).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.at;
        if self.peek() != Some(b'"') {
            return None;
        }
        self.at += 1;
        let mut escaped = false;
        loop {
            let byte = self.peek()?;
            self.at += 1;
            match byte {
                b'\\' => {
                    escaped = true;
                    self.at += 1;
                }
                b'"' => break,
                _ => {}
            }
        }
        let quoted = self.text.get(start..self.at)?;
        if escaped {
            serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
        } else {
            quoted.get(1..quoted.len() - 1).map(Cow::Borrowed)
        }
    }

    fn number(&mut self) -> Option<Canonical<'a>> {
        let start = self.at;
        while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.at += 1;
        }
        let text = &self.text[start..self.at];
        if text.is_empty() || !text.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            text.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| Canonical::Float(f.to_bits()))
        } else {
            Some(Canonical::Integer(text))
        }
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

    proptest::proptest! {
        /// The word-at-a-time search finds what a byte-by-byte one finds, wherever it
        /// starts (past the end too).
        #[test]
        fn next_quote_or_backslash_is_the_first_one(text in "[a\"\\\\é]{0,40}", from in 0usize..45) {
            let bytes = text.as_bytes();
            let expected = (from..bytes.len()).find(|&i| matches!(bytes[i], b'"' | b'\\')).unwrap_or(bytes.len().max(from));
            proptest::prop_assert_eq!(next_quote_or_backslash(bytes, from), expected);
        }
    }

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
    fn client_text_is_kept_without_whitespace() {
        let compact =
            |text: &str| Json::compact(&serde_json::from_str::<Box<RawValue>>(text).unwrap()).unwrap();
        for (sent, kept) in [
            (r#"{"b":1,"a":[true,null]}"#, r#"{"b":1,"a":[true,null]}"#),
            (" {\n\t\"b\" : 1 ,\r\n \"a\": [ true , null ] }\n", r#"{"b":1,"a":[true,null]}"#),
            (r#"{"s": "a \" b\\", "t" : "\u00e9 \\"}"#, r#"{"s":"a \" b\\","t":"\u00e9 \\"}"#),
            (r#"[ 1E2 , -0 , 18446744073709551616123 ]"#, r#"[1E2,-0,18446744073709551616123]"#),
            (r#"" padded string ""#, r#"" padded string ""#),
            ("7", "7"),
        ] {
            let json = compact(sent);
            assert_eq!(json.as_str(), kept, "{sent:?}");
            assert_eq!(json.to_value(), serde_json::from_str::<Value>(sent).unwrap(), "{sent:?}");
        }
    }

    #[test]
    fn what_a_parse_refuses_is_refused() {
        let compact = |text: &str| Json::compact(&serde_json::from_str::<Box<RawValue>>(text).unwrap());
        let long = format!("[{}]", "9".repeat(400));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for bad in [r#""\ud800""#, r#"{"a": ["x\udfff"]}"#, "1e400", "[-2.5E+999]", &long, &deep] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "serde_json takes {bad}");
            assert!(compact(bad).is_err(), "{bad} was taken");
        }
        let nested = format!("{}{}", "[".repeat(120), "]".repeat(120));
        for good in [r#""\ud83d\ude00 \u00e9""#, "[1e300, 2E-5, true, false]", &"9".repeat(300), &nested] {
            assert_eq!(compact(good).unwrap().to_value(), serde_json::from_str::<Value>(good).unwrap());
        }
    }

    /// JSON texts with whitespace between tokens and the spellings a raw parse lets
    /// through but a `Value` parse may refuse (lone surrogates, huge numbers, deep
    /// nesting).
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let space = prop::sample::select(vec!["", "", "", " ", "\n\t", "\r\n  "]);
        let number = prop::sample::select(vec![
            "0",
            "-0",
            "12",
            "-7",
            "1.5",
            "2.50",
            "1e3",
            "1E-2",
            "-2.5E+10",
            "1e400",
            "-1E999",
            "18446744073709551616123",
            "0.000001",
        ]);
        let piece = prop::sample::select(vec![
            "a",
            " b ",
            "\\n",
            "\\\"",
            "\\\\",
            "\\u00e9",
            "\\ud83d\\ude00",
            "\\ud800",
            "\\udfff x",
            "é",
            "✓",
        ]);
        let string = prop::collection::vec(piece, 0..4).prop_map(|p| format!("\"{}\"", p.concat()));
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            number.prop_map(str::to_string),
            string.clone(),
        ];
        let value = leaf.prop_recursive(4, 24, 4, move |inner| {
            let s = space.clone();
            prop_oneof![
                (prop::collection::vec((inner.clone(), s.clone()), 0..4), s.clone()).prop_map(
                    |(items, end)| {
                        let items: Vec<String> =
                            items.into_iter().map(|(v, w)| format!("{w}{v}{w}")).collect();
                        format!("[{end}{}]", items.join(","))
                    }
                ),
                (prop::collection::vec((string.clone(), inner, s.clone()), 0..4), s).prop_map(
                    |(members, end)| {
                        let members: Vec<String> =
                            members.into_iter().map(|(k, v, w)| format!("{w}{k}{w}:{w}{v}")).collect();
                        format!("{{{end}{}}}", members.join(","))
                    }
                ),
            ]
        });
        (value, 0..140usize, proptest::bool::weighted(0.1)).prop_map(|(value, depth, deep)| {
            if deep {
                format!("{}{value}{}", "[".repeat(depth), "]".repeat(depth))
            } else {
                value
            }
        })
    }

    proptest::proptest! {
        /// `compact` takes exactly what a `Value` parse takes, means the same value, and
        /// leaves no whitespace outside strings.
        #[test]
        fn compact_agrees_with_a_value_parse(text in json_text()) {
            let parsed = serde_json::from_str::<Value>(&text);
            match serde_json::from_str::<Box<RawValue>>(&text) {
                Err(_) => proptest::prop_assert!(parsed.is_err(), "raw refused, Value took {}", text),
                Ok(raw) => match (Json::compact(&raw), parsed) {
                    (Ok(json), Ok(value)) => {
                        proptest::prop_assert_eq!(json.to_value(), value);
                        proptest::prop_assert_eq!(Scan::of(json.as_str()).first_whitespace, None);
                    }
                    (Err(_), Err(_)) => {}
                    (json, value) => proptest::prop_assert!(false, "{} -> {:?} vs {:?}", text, json, value),
                },
            }
        }
    }

    #[test]
    fn same_value_ignores_key_order() {
        let compact =
            |text: &str| Json::compact(&serde_json::from_str::<Box<RawValue>>(text).unwrap()).unwrap();
        assert!(compact(r#"{"a":1,"b":[2]}"#).same_value(&compact(r#"{"b": [2], "a": 1}"#)));
        assert!(compact(r#"{"b":[2],"a":1}"#).same_value(&Json::from(json!({"a": 1, "b": [2]}))));
        assert!(!compact(r#"{"a":1}"#).same_value(&compact(r#"{"a":1.0}"#)));
        assert!(!compact(r#"{"a":1}"#).same_value(&compact(r#"{"a":2}"#)));
    }

    /// Integers compare by every digit, other numbers as doubles to the last bit;
    /// strings after their escapes; a repeated key by its last value.
    #[test]
    fn same_value_is_exact() {
        let same = |a: &str, b: &str| {
            let json =
                |text: &str| Json::compact(&serde_json::from_str::<Box<RawValue>>(text).unwrap()).unwrap();
            let (a, b) = (json(a), json(b));
            assert_eq!(a.same_value(&b), b.same_value(&a), "{a:?} {b:?}");
            a.same_value(&b)
        };
        let big = "123456789012345678901234567890";
        assert!(same(&format!(r#"{{"n":{big}}}"#), &format!(r#"{{ "n" : {big} }}"#)));
        assert!(!same(&format!(r#"{{"n":{big}}}"#), r#"{"n":123456789012345678901234567891}"#));
        assert!(!same("18446744073709551616", "18446744073709551617"));
        assert!(!same("-9223372036854775809", "-9223372036854775808"));
        assert!(!same("9007199254740993", "9007199254740992"));
        assert!(!same("-0.0", "0.0"));
        assert!(!same("-0", "0"));
        assert!(same("0.0", "0.00"));
        assert!(same("1.5", "15e-1"));
        assert!(same("1E2", "100.0"));
        assert!(same("0.1", "0.10000000000000001"), "the same double");
        assert!(!same("0.1", "0.1000000000000001"));
        assert!(!same("1", "1.0"));
        assert!(!same("1", r#""1""#));
        assert!(same(r#"{"a":"x\ny","\u0062":[1,{"c":null}]}"#, r#"{"b":[1,{"c":null}],"a":"x\u000ay"}"#));
        assert!(same(r#"{"a":1,"a":2}"#, r#"{"a":2}"#));
        assert!(!same(r#"{"a":1,"a":2}"#, r#"{"a":1}"#));
        assert!(!same("[1,2]", "[2,1]"));
        assert!(!same("[1]", "[1,1]"));
        assert!(!same(r#"{"a":1}"#, r#"{"a":1,"b":1}"#));
        assert!(!same("true", "false"));
        assert!(same(r#""\ud83d\ude00""#, "\"\u{1F600}\""));
        // Not one JSON value: never the same as anything else.
        assert!(Canonical::read("1 2").is_none());
        assert!(Canonical::read(r#"{"a":}"#).is_none());
        assert!(Canonical::read(r#""open"#).is_none());
        assert!(Canonical::read(r#""\"#).is_none());
        assert!(Canonical::read("-").is_none());
        assert!(Canonical::read(&"[".repeat(300)).is_none());
    }

    proptest::proptest! {
        /// On any value, the comparison agrees with `Value`'s equality wherever a
        /// `Value` keeps every digit; and a value is the same as itself rewritten.
        #[test]
        fn same_value_agrees_with_values(a in json_text(), b in json_text()) {
            let parse = |text: &str| serde_json::from_str::<Box<RawValue>>(text).ok().and_then(|raw| Json::compact(&raw).ok());
            if let (Some(a), Some(b)) = (parse(&a), parse(&b)) {
                let (va, vb) = (a.to_value(), b.to_value());
                proptest::prop_assert!(a.same_value(&Json::from(va.clone())) || has_lossy_number(&va), "{:?}", a);
                if !has_lossy_number(&va) && !has_lossy_number(&vb) {
                    proptest::prop_assert_eq!(a.same_value(&b), va == vb, "{:?} {:?}", a, b);
                }
            }
        }
    }

    /// Whether `value` holds a number a `Value` may not keep exactly (a float: its
    /// text may differ from the double's, or be a negative zero; an integer that did
    /// not fit 64 bits became one).
    fn has_lossy_number(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.is_f64(),
            Value::Array(items) => items.iter().any(has_lossy_number),
            Value::Object(members) => members.values().any(has_lossy_number),
            _ => false,
        }
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
