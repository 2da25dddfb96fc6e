//! The bytes of a WAL segment: header, record framing, event encoding. Described in
//! `docs/storage-format.md`; this file must match it.

use std::sync::Arc;

use allsource_core_types::{EntityId, Event, EventType, Json, Position, Timestamp};
use uuid::Uuid;

/// The segment header's magic bytes.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"ALLSWAL\0";
/// The segment format version this code writes: 2, whose records' checksums are
/// seeded with the segment's first position (see [`RecordCrc`]). Version 1 segments
/// (plain checksums) are read, and a version 1 segment left open is appended to as
/// version 1.
pub(crate) const SEGMENT_FORMAT_VERSION: u32 = 2;
/// The size of a segment header.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 32;
/// A record header's magic number.
pub(crate) const RECORD_MAGIC: u32 = 0xA115_0C0D;
/// The size of a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 16;
/// The largest record body: far above any group the writer makes.
pub(crate) const RECORD_BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The record format version this code writes.
pub(crate) const RECORD_FORMAT_VERSION: u8 = 1;
/// The record kind of a group of events.
pub(crate) const RECORD_KIND_EVENTS: u8 = 1;
/// The size of a record body's fixed part, before its events.
const BODY_PREFIX_BYTES: usize = 16;

const _: () = assert!(RECORD_BODY_BYTES_MAX <= u32::MAX as usize);

/// How the records of one segment are checksummed. In a version 2 segment every
/// record CRC starts from the CRC of the segment's first position, so records that a
/// reused segment file still holds from its earlier life (another first position) fail
/// their checksums like any other stale bytes; in a version 1 segment they are plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordCrc {
    seed: u32,
}

impl RecordCrc {
    /// The plain CRC32C of version 1 segments.
    pub(crate) const PLAIN: RecordCrc = RecordCrc { seed: 0 };

    /// The checksums of a version 2 segment whose first position is `first_position`.
    pub(crate) fn seeded(first_position: Position) -> RecordCrc {
        RecordCrc { seed: crc32c::crc32c(&first_position.to_le_bytes()) }
    }

    fn of(self, bytes: &[u8]) -> u32 {
        crc32c::crc32c_append(self.seed, bytes)
    }
}

/// The header of a segment whose first event will be `first_position`.
pub(crate) fn segment_header(first_position: Position) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Why a segment header is not valid.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer bytes than a header.
    Short,
    /// Magic, CRC or version wrong.
    Bad(String),
}

/// The first position a segment header names, and how its records are checksummed.
pub(crate) fn parse_segment_header(bytes: &[u8]) -> Result<(Position, RecordCrc), HeaderError> {
    let Some(header) = bytes.get(..SEGMENT_HEADER_BYTES) else { return Err(HeaderError::Short) };
    if header[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Bad("not an AllSource WAL segment (bad magic)".to_string()));
    }
    if crc32c::crc32c(&header[0..24]) != u32_at(header, 24) {
        return Err(HeaderError::Bad("segment header checksum mismatch".to_string()));
    }
    if u32_at(header, 12) != 0 || u32_at(header, 28) != 0 {
        return Err(HeaderError::Bad("segment header reserved bytes are not zero".to_string()));
    }
    let first_position = u64_at(header, 16);
    match u32_at(header, 8) {
        1 => Ok((first_position, RecordCrc::PLAIN)),
        2 => Ok((first_position, RecordCrc::seeded(first_position))),
        version => Err(HeaderError::Bad(format!("segment format version {version} is not supported"))),
    }
}

/// Appends one record holding `events` (consecutive positions) to `out`, checksummed
/// as its segment's records are.
pub(crate) fn encode_record(events: &[Arc<Event>], crc: RecordCrc, out: &mut Vec<u8>) -> Result<(), String> {
    let Some(first) = events.first() else { return Ok(()) };
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    let body_start = out.len();
    out.push(RECORD_FORMAT_VERSION);
    out.push(RECORD_KIND_EVENTS);
    out.extend_from_slice(&[0, 0]);
    let count = u32::try_from(events.len()).map_err(|_| "too many events in one record".to_string())?;
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&first.position.to_le_bytes());
    for event in events {
        encode_event(event, out)?;
    }
    let body_len = out.len() - body_start;
    if body_len > RECORD_BODY_BYTES_MAX {
        out.truncate(start);
        return Err(format!("a record of {body_len} bytes is over the limit of {RECORD_BODY_BYTES_MAX}"));
    }
    let body_crc = crc.of(&out[body_start..]);
    let header = &mut out[start..body_start];
    header[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
    header[8..12].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc.of(&header[0..12]);
    header[12..16].copy_from_slice(&header_crc.to_le_bytes());
    Ok(())
}

fn encode_event(event: &Event, out: &mut Vec<u8>) -> Result<(), String> {
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(&event.position.to_le_bytes());
    out.extend_from_slice(&event.version.to_le_bytes());
    out.extend_from_slice(&event.timestamp.as_micros().to_le_bytes());
    put_short_text(event.event_type.as_str(), out)?;
    put_short_text(event.entity_id.as_str(), out)?;
    put_json(&event.payload, out)?;
    put_json(&event.metadata, out)
}

fn put_short_text(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let len = u16::try_from(text.len()).map_err(|_| "id longer than 65535 bytes".to_string())?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn put_json(json: &Json, out: &mut Vec<u8>) -> Result<(), String> {
    let len = u32::try_from(json.len()).map_err(|_| "JSON over 4 GiB".to_string())?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(json.as_str().as_bytes());
    Ok(())
}

/// What is at an offset of a segment.
#[derive(Debug)]
pub(crate) enum RecordRead {
    /// A valid record of `len` bytes (header included) holding these events.
    Record { len: usize, events: Vec<Event> },
    /// The end of the bytes, exactly at a record boundary.
    End,
    /// Not a valid record (torn, or damaged); why.
    Invalid(String),
    /// A record whose checksums pass but whose content is wrong: never a torn write.
    Corrupt(String),
}

/// Reads the record at the start of `bytes`; `expected_first` is the position its
/// first event must have.
pub(crate) fn read_record(bytes: &[u8], expected_first: Position, crc: RecordCrc) -> RecordRead {
    if bytes.is_empty() {
        return RecordRead::End;
    }
    let body_len = match check_record_header(bytes, crc) {
        Ok(len) => len,
        Err(why) => return RecordRead::Invalid(why),
    };
    let body = &bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + body_len];
    if crc.of(body) != u32_at(bytes, 8) {
        return RecordRead::Invalid("record body checksum mismatch".to_string());
    }
    match decode_body(body, expected_first) {
        Ok(events) => RecordRead::Record { len: RECORD_HEADER_BYTES + body_len, events },
        Err(why) => RecordRead::Corrupt(why),
    }
}

/// Checks a record header (magic, CRC, length within `bytes`); returns the body length.
fn check_record_header(bytes: &[u8], crc: RecordCrc) -> Result<usize, String> {
    let Some(header) = bytes.get(..RECORD_HEADER_BYTES) else {
        return Err(format!("{} bytes, shorter than a record header", bytes.len()));
    };
    if u32_at(header, 0) != RECORD_MAGIC {
        return Err("bad record magic".to_string());
    }
    if crc.of(&header[0..12]) != u32_at(header, 12) {
        return Err("record header checksum mismatch".to_string());
    }
    let body_len = u32_at(header, 4) as usize;
    if body_len > RECORD_BODY_BYTES_MAX {
        return Err(format!("record length {body_len} over the limit"));
    }
    if bytes.len() - RECORD_HEADER_BYTES < body_len {
        return Err(format!(
            "record of {body_len} bytes runs past the end of the file ({} bytes left)",
            bytes.len() - RECORD_HEADER_BYTES
        ));
    }
    Ok(body_len)
}

/// Whether a record whose header and body both pass their checksums (as `crc` makes
/// them) starts anywhere in `bytes`: proof that the bytes before it had been synced.
pub(crate) fn valid_record_follows(bytes: &[u8], crc: RecordCrc) -> Option<usize> {
    header_candidates(bytes).find(|&offset| {
        let candidate = &bytes[offset..];
        check_record_header(candidate, crc).is_ok_and(|body_len| {
            let body = &candidate[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + body_len];
            crc.of(body) == u32_at(candidate, 8)
        })
    })
}

/// Whether a record header that fails its checksum as `crc` makes it starts anywhere in
/// `bytes` (the magic number, then a header checksum for another segment): what a
/// reused segment holds after its last new record, its earlier life's records. A torn
/// write of the segment's own leaves no such header, unless a payload carries one.
pub(crate) fn old_record_header_in(bytes: &[u8], crc: RecordCrc) -> bool {
    header_candidates(bytes).any(|offset| crc.of(&bytes[offset..offset + 12]) != u32_at(bytes, offset + 12))
}

/// The offsets in `bytes` where a record header may start: its magic number, with room
/// for the rest of the header after it.
fn header_candidates(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let magic = RECORD_MAGIC.to_le_bytes();
    bytes
        .windows(RECORD_HEADER_BYTES)
        .enumerate()
        .filter(move |(_, header)| header[..4] == magic)
        .map(|(at, _)| at)
}

fn decode_body(body: &[u8], expected_first: Position) -> Result<Vec<Event>, String> {
    let mut reader = Reader { bytes: body, at: 0 };
    let prefix = reader.take(BODY_PREFIX_BYTES)?;
    if prefix[0] != RECORD_FORMAT_VERSION {
        return Err(format!("record format version {} is not supported", prefix[0]));
    }
    if prefix[1] != RECORD_KIND_EVENTS {
        return Err(format!("record kind {} is not supported", prefix[1]));
    }
    let count = u32_at(prefix, 4) as usize;
    let first = u64_at(prefix, 8);
    if first != expected_first {
        return Err(format!("record starts at position {first}, expected {expected_first}"));
    }
    if count == 0 {
        return Err("record holds no events".to_string());
    }
    let mut events = Vec::with_capacity(count.min(body.len() / 48));
    for index in 0..count {
        let event = decode_event(&mut reader)?;
        let expected = first + index as Position;
        if event.position != expected {
            return Err(format!("event at position {} where {expected} was expected", event.position));
        }
        events.push(event);
    }
    if reader.at != body.len() {
        return Err(format!("{} bytes after the last event of the record", body.len() - reader.at));
    }
    Ok(events)
}

fn decode_event(reader: &mut Reader<'_>) -> Result<Event, String> {
    let fixed = reader.take(40)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&fixed[0..16]);
    let position = u64_at(fixed, 16);
    let version = u64_at(fixed, 24);
    let timestamp = Timestamp::from_micros(u64_at(fixed, 32) as i64);
    let event_type = EventType::try_from(reader.short_text()?).map_err(|e| e.to_string())?;
    let entity_id = EntityId::try_from(reader.short_text()?).map_err(|e| e.to_string())?;
    let payload = reader.json()?;
    let metadata = reader.json()?;
    if !metadata.as_str().starts_with('{') {
        return Err("metadata is not a JSON object".to_string());
    }
    Ok(Event {
        id: Uuid::from_bytes(id),
        event_type,
        entity_id,
        payload,
        metadata,
        timestamp,
        version,
        position,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else { return Err("record body ends inside an event".to_string()) };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn short_text(&mut self) -> Result<&'a str, String> {
        let len = u16::from_le_bytes([self.take(1)?[0], self.take(1)?[0]]) as usize;
        std::str::from_utf8(self.take(len)?).map_err(|e| format!("text is not UTF-8: {e}"))
    }

    fn json(&mut self) -> Result<Json, String> {
        let len = u32_at(self.take(4)?, 0) as usize;
        let text = std::str::from_utf8(self.take(len)?).map_err(|e| format!("JSON is not UTF-8: {e}"))?;
        Json::from_compact_text(text.to_string()).map_err(|e| format!("bad JSON in record: {e}"))
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(position: Position) -> Arc<Event> {
        Arc::new(Event {
            id: Uuid::from_u128(u128::from(position) * 7919),
            event_type: EventType::try_from("order.placed").unwrap(),
            entity_id: EntityId::try_from(format!("order-{}", position % 3)).unwrap(),
            payload: json!({"n": position, "big": u64::MAX, "f": 0.1, "s": "\u{0}\u{1F600}\"\\"}).into(),
            metadata: json!({"source": "test"}).into(),
            timestamp: Timestamp::from_micros(1_700_000_000_000_000 + position as i64),
            version: position,
            position,
        })
    }

    #[test]
    fn record_round_trip() {
        let events: Vec<_> = (5..9).map(event).collect();
        let mut bytes = Vec::new();
        encode_record(&events, RecordCrc::seeded(5), &mut bytes).unwrap();
        match read_record(&bytes, 5, RecordCrc::seeded(5)) {
            RecordRead::Record { len, events: decoded } => {
                assert_eq!(len, bytes.len());
                let expected: Vec<Event> = events.iter().map(|e| (**e).clone()).collect();
                assert_eq!(decoded, expected);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read_record(&bytes, 6, RecordCrc::seeded(5)), RecordRead::Corrupt(_)));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let mut bytes = Vec::new();
        let crc = RecordCrc::seeded(1);
        encode_record(&[event(1), event(2)], crc, &mut bytes).unwrap();
        for cut in 1..bytes.len() {
            assert!(matches!(read_record(&bytes[..cut], 1, crc), RecordRead::Invalid(_)), "cut at {cut}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(read_record(&flipped, 1, crc), RecordRead::Invalid(_)), "bit {bit}");
        }
    }

    #[test]
    fn a_record_passes_only_in_a_segment_with_its_first_position() {
        // What a reused segment file still holds from its earlier life: records whose
        // checksums were seeded with another first position, or plain (version 1).
        let mut bytes = Vec::new();
        encode_record(&[event(7)], RecordCrc::seeded(1), &mut bytes).unwrap();
        assert!(matches!(read_record(&bytes, 7, RecordCrc::seeded(1)), RecordRead::Record { .. }));
        for other in [RecordCrc::seeded(2), RecordCrc::seeded(7), RecordCrc::PLAIN] {
            assert!(matches!(read_record(&bytes, 7, other), RecordRead::Invalid(_)), "{other:?}");
            assert_eq!(valid_record_follows(&bytes, other), None);
            // Told apart from a torn write: after some garbage, an old record's header.
            let tail = [&[0xAB; 5][..], &bytes].concat();
            assert!(old_record_header_in(&tail, other), "{other:?}");
        }
        assert!(!old_record_header_in(&bytes, RecordCrc::seeded(1)), "a record of the segment's own");
        assert!(!old_record_header_in(&[0xAB; 100], RecordCrc::seeded(1)), "garbage");
        // Seeded: the CRC32C of the first position's 8 bytes, then the body.
        let seeded = [&1u64.to_le_bytes()[..], &bytes[RECORD_HEADER_BYTES..]].concat();
        assert_eq!(u32_at(&bytes, 8), crc32c::crc32c(&seeded));
        let mut plain = Vec::new();
        encode_record(&[event(7)], RecordCrc::PLAIN, &mut plain).unwrap();
        assert_eq!(
            u32_at(&plain, 8),
            crc32c::crc32c(&plain[RECORD_HEADER_BYTES..]),
            "version 1 is plain CRC32C"
        );
        assert!(matches!(read_record(&plain, 7, RecordCrc::seeded(1)), RecordRead::Invalid(_)));
    }

    #[test]
    fn finds_a_valid_record_after_garbage() {
        let mut bytes = vec![0xAB; 37];
        let at = bytes.len();
        let crc = RecordCrc::seeded(3);
        encode_record(&[event(3)], crc, &mut bytes).unwrap();
        assert_eq!(valid_record_follows(&bytes, crc), Some(at));
        assert_eq!(valid_record_follows(&bytes[..bytes.len() - 1], crc), None);
        assert_eq!(valid_record_follows(&[0u8; 100], crc), None);
    }

    #[test]
    fn segment_header_round_trip() {
        let header = segment_header(42);
        assert_eq!(parse_segment_header(&header), Ok((42, RecordCrc::seeded(42))));
        // A version 1 header: the same fields, plain record checksums.
        let mut v1 = header;
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&v1[0..24]);
        v1[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(parse_segment_header(&v1), Ok((42, RecordCrc::PLAIN)));
        assert_eq!(parse_segment_header(&header[..31]), Err(HeaderError::Short));
        let mut bad = header;
        bad[17] ^= 1;
        assert!(matches!(parse_segment_header(&bad), Err(HeaderError::Bad(_))));
    }
}
