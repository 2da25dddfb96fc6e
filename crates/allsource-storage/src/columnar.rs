//! The columnar form of events: one fixed Arrow schema for the wire (Arrow IPC
//! streams), for exports and for the Parquet files of the storage layer.
//!
//! | column | Arrow type | |
//! |---|---|---|
//! | `id` | `FixedSizeBinary(16)` | the UUID's 16 bytes |
//! | `event_type` | `Dictionary(Int32, Utf8)` | |
//! | `entity_id` | `Utf8` | |
//! | `payload` | `Utf8` | compact JSON text |
//! | `metadata` | `Utf8` | compact JSON text (an object) |
//! | `timestamp` | `Timestamp(Microsecond, "UTC")` | |
//! | `version` | `UInt64` | |
//! | `position` | `UInt64` | |
//!
//! Every column is non-null. The schema's metadata names it (`allsource.schema` =
//! `events/1`) so that readers can tell which version of it they hold.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use allsource_core_types::{EntityId, Error, Event, EventType, Json, Timestamp};
use arrow_array::builder::{FixedSizeBinaryBuilder, StringBuilder, StringDictionaryBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, FixedSizeBinaryArray, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use uuid::Uuid;

/// The schema metadata key and value that name this schema's version.
pub const SCHEMA_VERSION_KEY: &str = "allsource.schema";
/// The version of the schema this code writes.
pub const SCHEMA_VERSION: &str = "events/1";
/// Rows per Parquet row group: large enough for zstd and column statistics to pay off,
/// small enough that a reader skipping by position or time reads little.
pub const PARQUET_ROW_GROUP_ROWS: usize = 64 * 1024;
/// The zstd level of Parquet files: the fastest. A chunk is written while appends flow
/// and competes with them for the cores; against level 3, 100-event batch appends ran
/// 2.5% faster (three paired runs) for chunks 2% larger on the load test's payloads.
const PARQUET_ZSTD_LEVEL: i32 = 1;

/// The Arrow schema of events (see the module documentation).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let fields = vec![
                Field::new("id", DataType::FixedSizeBinary(16), false),
                Field::new(
                    "event_type",
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    false,
                ),
                Field::new("entity_id", DataType::Utf8, false),
                Field::new("payload", DataType::Utf8, false),
                Field::new("metadata", DataType::Utf8, false),
                Field::new(
                    "timestamp",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                Field::new("version", DataType::UInt64, false),
                Field::new("position", DataType::UInt64, false),
            ];
            let metadata = HashMap::from([(SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())]);
            Arc::new(Schema::new_with_metadata(fields, metadata))
        })
        .clone()
}

fn arrow_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{context}: {error}"))
}

/// The most bytes of text one column of a record batch may hold: a `Utf8` column's
/// offsets are `i32`. 65,536 events of 32 KiB payloads pass it.
pub const BATCH_TEXT_BYTES_MAX: usize = i32::MAX as usize;

/// The events as columns of [`schema`]: one record batch, or as many as their texts
/// need (see [`BATCH_TEXT_BYTES_MAX`]).
pub fn to_columns(events: &[Arc<Event>]) -> Result<EventColumns, Error> {
    to_columns_within(events, BATCH_TEXT_BYTES_MAX)
}

/// [`to_columns`], with at most `text_bytes_max` bytes of text in each column of a batch
/// (an event with more gets a batch of its own).
pub(crate) fn to_columns_within(events: &[Arc<Event>], text_bytes_max: usize) -> Result<EventColumns, Error> {
    if events.is_empty() {
        return Ok(EventColumns::from_parts(vec![Part::from_events(&[], TextBytes::default())?]));
    }
    let text = |event: &Arc<Event>| {
        TextBytes([event.entity_id.as_str().len(), event.payload.len(), event.metadata.len()])
    };
    let parts = runs_within(events, text, text_bytes_max)
        .into_iter()
        .map(|(run, text)| Part::from_events(&events[run], text))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EventColumns::from_parts(parts))
}

/// Cuts `items` into runs, each as long as its texts stay within `text_bytes_max` in
/// every column (an item with more is a run of its own): each run's range and text.
fn runs_within<T>(
    items: &[T],
    text: impl Fn(&T) -> TextBytes,
    text_bytes_max: usize,
) -> Vec<(std::ops::Range<usize>, TextBytes)> {
    let mut runs = Vec::new();
    let mut start = 0;
    while let Some(first) = items.get(start) {
        let mut total = text(first);
        let mut end = start + 1;
        while let Some(item) = items.get(end) {
            let next = total.plus(text(item));
            if next.exceeds(text_bytes_max) {
                break;
            }
            total = next;
            end += 1;
        }
        runs.push((start..end, total));
        start = end;
    }
    runs
}

/// The events of a record batch of [`schema`] (as made by [`to_columns`], or read back
/// from an IPC stream or a Parquet file). Every value is checked: a batch that does not
/// hold valid events is an error, never a panic.
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Event>, Error> {
    let columns = EventColumns::try_new(batch, JsonCheck::Validate)?;
    (0..columns.len()).map(|row| columns.event(row)).collect()
}

/// Whether [`EventColumns::try_new`] checks that every payload and metadata text is
/// JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonCheck {
    /// Parse every text: for data from outside, or from a file without a checksum.
    Validate,
    /// Trust the texts: for batches this crate made from events, or read from a file
    /// whose checksum matched what was written (texts that were valid JSON then).
    Trust,
}

/// The bytes of text of a batch's `entity_id`, `payload` and `metadata` columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TextBytes([usize; 3]);

impl TextBytes {
    fn of(batch: &RecordBatch) -> TextBytes {
        let bytes = |name: &str| {
            batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>()).map_or(0, |texts| {
                let offsets = texts.value_offsets();
                let span = offsets.last().zip(offsets.first()).map_or(0, |(last, first)| last - first);
                usize::try_from(span).unwrap_or(0)
            })
        };
        TextBytes([bytes("entity_id"), bytes("payload"), bytes("metadata")])
    }

    fn plus(self, other: TextBytes) -> TextBytes {
        TextBytes(std::array::from_fn(|i| self.0[i].saturating_add(other.0[i])))
    }

    fn exceeds(self, max: usize) -> bool {
        self.0.iter().any(|&bytes| bytes > max)
    }
}

/// Events as columns of [`schema`], read row by row without making an [`Event`]: how
/// the engine holds sealed events in memory. The rows are one record batch, or several
/// when their texts would not fit one (see [`BATCH_TEXT_BYTES_MAX`]).
///
/// Checked once when made: the columns' types, no nulls, event types and entity ids
/// that follow the id rule, dictionary keys in range and (with [`JsonCheck::Validate`])
/// payload and metadata texts that are JSON. The row accessors then cannot fail; they
/// take `row < len()`.
#[derive(Debug, Clone)]
pub struct EventColumns {
    /// At least one, possibly empty.
    parts: Vec<Part>,
    /// The first row of each part, then the number of rows.
    starts: Vec<usize>,
    /// Where each part's event types begin in [`EventColumns::event_type_values`].
    type_bases: Vec<usize>,
}

/// One checked record batch of an [`EventColumns`].
#[derive(Debug, Clone)]
struct Part {
    batch: RecordBatch,
    ids: FixedSizeBinaryArray,
    event_type_keys: Int32Array,
    event_type_values: StringArray,
    entity_ids: StringArray,
    payloads: StringArray,
    metadata: StringArray,
    timestamps: TimestampMicrosecondArray,
    versions: UInt64Array,
    positions: UInt64Array,
}

impl Part {
    /// `events` as one batch; `text` is the bytes of their texts, for exact capacities
    /// (a sealed chunk is held in memory as this batch, so slack left by a growing
    /// buffer would be kept for as long as the process runs).
    fn from_events(events: &[Arc<Event>], text: TextBytes) -> Result<Part, Error> {
        let n = events.len();
        let [entity_bytes, payload_bytes, metadata_bytes] = text.0;
        let mut ids = FixedSizeBinaryBuilder::with_capacity(n, 16);
        let mut event_types = StringDictionaryBuilder::<Int32Type>::new();
        let mut entity_ids = StringBuilder::with_capacity(n, entity_bytes);
        let mut payloads = StringBuilder::with_capacity(n, payload_bytes);
        let mut metadata = StringBuilder::with_capacity(n, metadata_bytes);
        let mut timestamps = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        for event in events {
            ids.append_value(event.id.as_bytes()).map_err(|e| arrow_error("id column", e))?;
            event_types.append_value(event.event_type.as_str());
            entity_ids.append_value(event.entity_id.as_str());
            payloads.append_value(event.payload.as_str());
            metadata.append_value(event.metadata.as_str());
            timestamps.push(event.timestamp.as_micros());
            versions.push(event.version);
            positions.push(event.position);
        }
        Part::assemble(
            ids.finish(),
            event_types.finish(),
            [entity_ids.finish(), payloads.finish(), metadata.finish()],
            TimestampMicrosecondArray::from(timestamps),
            [UInt64Array::from(versions), UInt64Array::from(positions)],
        )
        .map_err(|why| arrow_error("record batch", why))
    }

    /// Checks `batch` (see [`EventColumns`]). An `event_type` column of plain `Utf8`
    /// (as other writers may produce) is dictionary-encoded here.
    fn try_new(batch: &RecordBatch, json: JsonCheck) -> Result<Part, Error> {
        let bad = |why: String| Error::Storage {
            message: format!("not a batch of events: {why}"),
            read_only: false,
        };
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(format!("no column {name}")));
        for (index, array) in batch.columns().iter().enumerate() {
            if array.null_count() > 0 {
                return Err(bad(format!("column {} has nulls", batch.schema().field(index).name())));
            }
        }
        let ids = column("id")?
            .as_fixed_size_binary_opt()
            .filter(|a| a.value_length() == 16)
            .ok_or_else(|| bad("id is not FixedSizeBinary(16)".into()))?
            .clone();
        let event_type_column = column("event_type")?;
        let event_types = match event_type_column.data_type() {
            DataType::Dictionary(_, _) => event_type_column
                .as_dictionary_opt::<Int32Type>()
                .ok_or_else(|| bad("event_type is not Dictionary(Int32, Utf8)".into()))?
                .clone(),
            _ => {
                let values = event_type_column
                    .as_string_opt::<i32>()
                    .ok_or_else(|| bad("event_type is not Utf8".into()))?;
                let mut builder = StringDictionaryBuilder::<Int32Type>::new();
                for value in values.iter().flatten() {
                    builder.append_value(value);
                }
                builder.finish()
            }
        };
        let string_column = |name: &str| {
            column(name).and_then(|c| {
                c.as_string_opt::<i32>().cloned().ok_or_else(|| bad(format!("{name} is not Utf8")))
            })
        };
        let number_column = |name: &str| {
            column(name).and_then(|c| {
                c.as_primitive_opt::<UInt64Type>()
                    .cloned()
                    .ok_or_else(|| bad(format!("{name} is not UInt64")))
            })
        };
        let part = Part::assemble(
            ids,
            event_types,
            [string_column("entity_id")?, string_column("payload")?, string_column("metadata")?],
            column("timestamp")?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| bad("timestamp is not Timestamp(Microsecond)".into()))?
                .clone(),
            [number_column("version")?, number_column("position")?],
        )
        .map_err(bad)?;
        part.check(json).map_err(bad)?;
        Ok(part)
    }

    /// The part of these columns (`texts`: entity ids, payloads, metadata; `numbers`:
    /// versions, positions), with its batch in this schema whatever the source's
    /// (column order, plain event types, schema metadata), so that batches of any
    /// source join.
    fn assemble(
        ids: FixedSizeBinaryArray,
        event_types: DictionaryArray<Int32Type>,
        [entity_ids, payloads, metadata]: [StringArray; 3],
        timestamps: TimestampMicrosecondArray,
        [versions, positions]: [UInt64Array; 2],
    ) -> Result<Part, String> {
        let event_type_values = event_types
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| "event_type dictionary values are not Utf8".to_string())?
            .clone();
        let timestamps = timestamps.with_timezone("UTC");
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(ids.clone()),
            Arc::new(event_types.clone()),
            Arc::new(entity_ids.clone()),
            Arc::new(payloads.clone()),
            Arc::new(metadata.clone()),
            Arc::new(timestamps.clone()),
            Arc::new(versions.clone()),
            Arc::new(positions.clone()),
        ];
        let batch = RecordBatch::try_new(schema(), arrays).map_err(|e| e.to_string())?;
        Ok(Part {
            batch,
            ids,
            event_type_keys: event_types.keys().clone(),
            event_type_values,
            entity_ids,
            payloads,
            metadata,
            timestamps,
            versions,
            positions,
        })
    }

    fn check(&self, json: JsonCheck) -> Result<(), String> {
        if self.event_type_values.null_count() > 0 {
            return Err("event_type dictionary has nulls".to_string());
        }
        for value in self.event_type_values.iter().flatten() {
            EventType::check(value).map_err(|e| e.to_string())?;
        }
        let types = self.event_type_values.len();
        if let Some(row) = self
            .event_type_keys
            .values()
            .iter()
            .position(|&k| usize::try_from(k).map_or(true, |k| k >= types))
        {
            return Err(format!("row {row}: event_type key out of range"));
        }
        for (row, entity_id) in self.entity_ids.iter().flatten().enumerate() {
            EntityId::check(entity_id).map_err(|e| format!("row {row}: {e}"))?;
        }
        if json == JsonCheck::Validate {
            for (name, texts) in [("payload", &self.payloads), ("metadata", &self.metadata)] {
                for (row, text) in texts.iter().flatten().enumerate() {
                    serde_json::from_str::<&serde_json::value::RawValue>(text)
                        .map_err(|e| format!("row {row}: {name}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.batch.num_rows()
    }

    fn slice(&self, offset: usize, len: usize) -> Part {
        Part {
            batch: self.batch.slice(offset, len),
            ids: self.ids.slice(offset, len),
            event_type_keys: self.event_type_keys.slice(offset, len),
            event_type_values: self.event_type_values.clone(),
            entity_ids: self.entity_ids.slice(offset, len),
            payloads: self.payloads.slice(offset, len),
            metadata: self.metadata.slice(offset, len),
            timestamps: self.timestamps.slice(offset, len),
            versions: self.versions.slice(offset, len),
            positions: self.positions.slice(offset, len),
        }
    }

    /// The rows `rows` (ascending, each within the part): a slice when they are
    /// consecutive, else a copy of those rows.
    fn take(&self, rows: &[usize]) -> Result<Part, Error> {
        let (Some(&first), Some(&last)) = (rows.first(), rows.last()) else { return Ok(self.slice(0, 0)) };
        if last - first + 1 == rows.len() {
            return Ok(self.slice(first, rows.len()));
        }
        let indices = rows.iter().map(|&row| u32::try_from(row).ok()).collect::<Option<Vec<u32>>>();
        let indices = arrow_array::UInt32Array::from(
            indices.ok_or_else(|| Error::Internal("a row number beyond u32".to_string()))?,
        );
        let batch = arrow_select::take::take_record_batch(&self.batch, &indices)
            .map_err(|e| arrow_error("taking rows", e))?;
        Part::try_new(&batch, JsonCheck::Trust)
    }
}

impl EventColumns {
    /// Checks `batch` (see the type's documentation). An `event_type` column of plain
    /// `Utf8` (as other writers may produce) is dictionary-encoded here.
    pub fn try_new(batch: &RecordBatch, json: JsonCheck) -> Result<EventColumns, Error> {
        Part::try_new(batch, json).map(|part| EventColumns::from_parts(vec![part]))
    }

    /// Checks each of `batches` (as [`EventColumns::try_new`]): their rows, one batch
    /// after the other.
    pub fn try_from_batches(batches: &[RecordBatch], json: JsonCheck) -> Result<EventColumns, Error> {
        let parts = batches.iter().map(|batch| Part::try_new(batch, json)).collect::<Result<Vec<_>, _>>()?;
        if parts.is_empty() {
            return to_columns(&[]);
        }
        Ok(EventColumns::from_parts(parts))
    }

    /// `parts` must not be empty.
    fn from_parts(parts: Vec<Part>) -> EventColumns {
        debug_assert!(!parts.is_empty());
        let mut starts = Vec::with_capacity(parts.len() + 1);
        let mut type_bases = Vec::with_capacity(parts.len());
        let (mut rows, mut types) = (0, 0);
        for part in &parts {
            starts.push(rows);
            type_bases.push(types);
            rows += part.len();
            types += part.event_type_values.len();
        }
        starts.push(rows);
        EventColumns { parts, starts, type_bases }
    }

    /// The part that holds `row`, and the row's index in it.
    #[inline]
    fn at(&self, row: usize) -> (usize, &Part, usize) {
        if let [part] = self.parts.as_slice() {
            return (0, part, row);
        }
        let index = self.starts.partition_point(|&start| start <= row).saturating_sub(1);
        (index, &self.parts[index], row - self.starts[index])
    }

    /// The rows.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record batches, as checked: one, unless the texts needed more.
    pub fn batches(&self) -> impl ExactSizeIterator<Item = &RecordBatch> + '_ {
        self.parts.iter().map(|part| &part.batch)
    }

    /// The id of the event in `row`.
    pub fn id(&self, row: usize) -> Uuid {
        let (_, part, row) = self.at(row);
        Uuid::from_slice(part.ids.value(row)).unwrap_or_default()
    }

    /// The event type's index in [`EventColumns::event_type_values`].
    pub fn event_type_key(&self, row: usize) -> usize {
        let (index, part, row) = self.at(row);
        self.type_bases[index] + usize::try_from(part.event_type_keys.value(row)).unwrap_or(0)
    }

    /// The event types of each batch's dictionary, one batch after the other, indexed
    /// by [`EventColumns::event_type_key`].
    pub fn event_type_values(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts.iter().flat_map(|part| part.event_type_values.iter().flatten())
    }

    /// The event type of `row`.
    pub fn event_type(&self, row: usize) -> &str {
        let (_, part, row) = self.at(row);
        part.event_type_values.value(usize::try_from(part.event_type_keys.value(row)).unwrap_or(0))
    }

    /// The entity id of `row`.
    pub fn entity_id(&self, row: usize) -> &str {
        let (_, part, row) = self.at(row);
        part.entity_ids.value(row)
    }

    /// The payload of `row`: compact JSON text.
    pub fn payload(&self, row: usize) -> &str {
        let (_, part, row) = self.at(row);
        part.payloads.value(row)
    }

    /// The metadata of `row`: compact JSON text.
    pub fn metadata(&self, row: usize) -> &str {
        let (_, part, row) = self.at(row);
        part.metadata.value(row)
    }

    /// The timestamp of `row`.
    pub fn timestamp(&self, row: usize) -> Timestamp {
        let (_, part, row) = self.at(row);
        Timestamp::from_micros(part.timestamps.value(row))
    }

    /// The version of `row`.
    pub fn version(&self, row: usize) -> u64 {
        let (_, part, row) = self.at(row);
        part.versions.value(row)
    }

    /// The position of `row`.
    pub fn position(&self, row: usize) -> u64 {
        let (_, part, row) = self.at(row);
        part.positions.value(row)
    }

    /// Reads `row`'s fixed-width cells and the starts of its texts, and folds them into
    /// a word that means nothing. For a reader about to read many rows spread over
    /// memory: these loads depend on nothing but `row`, so those of every row can wait
    /// on memory at the same time, before the rows are read one after another.
    pub fn touch(&self, row: usize) -> u64 {
        let (_, part, row) = self.at(row);
        let start = |texts: &StringArray| texts.value_offsets()[row] as u64;
        u64::from(part.ids.value(row)[0])
            ^ part.event_type_keys.values()[row] as u64
            ^ start(&part.entity_ids)
            ^ start(&part.payloads)
            ^ start(&part.metadata)
            ^ part.timestamps.values()[row] as u64
            ^ part.versions.values()[row]
            ^ part.positions.values()[row]
    }

    /// The event in `row`, made whole (its texts checked to be JSON once more, which
    /// is what making a [`Json`] costs).
    pub fn event(&self, row: usize) -> Result<Event, Error> {
        let bad = |why: String| Error::Storage {
            message: format!("not a batch of events: row {row}: {why}"),
            read_only: false,
        };
        let json = |text: &str, name: &str| {
            Json::from_compact_text(text.to_string()).map_err(|e| bad(format!("{name}: {e}")))
        };
        Ok(Event {
            id: self.id(row),
            event_type: EventType::try_from(self.event_type(row)).map_err(|e| bad(e.to_string()))?,
            entity_id: EntityId::try_from(self.entity_id(row)).map_err(|e| bad(e.to_string()))?,
            payload: json(self.payload(row), "payload")?,
            metadata: json(self.metadata(row), "metadata")?,
            timestamp: self.timestamp(row),
            version: self.version(row),
            position: self.position(row),
        })
    }

    /// `len` rows from `offset` (which must lie within the rows): no copy, the
    /// buffers are shared.
    pub fn slice(&self, offset: usize, len: usize) -> EventColumns {
        if let [part] = self.parts.as_slice() {
            return EventColumns::from_parts(vec![part.slice(offset, len)]);
        }
        let end = offset + len;
        let parts: Vec<Part> = self
            .parts
            .iter()
            .zip(self.starts.windows(2))
            .filter(|(_, span)| span[0] < end && offset < span[1])
            .map(|(part, span)| {
                let from = offset.max(span[0]) - span[0];
                part.slice(from, end.min(span[1]) - span[0] - from)
            })
            .collect();
        if parts.is_empty() {
            return EventColumns::from_parts(vec![self.parts[0].slice(0, 0)]);
        }
        EventColumns::from_parts(parts)
    }

    /// The rows `rows` (ascending, each within the rows): slices where they are
    /// consecutive, else a copy of those rows.
    pub fn take(&self, rows: &[usize]) -> Result<EventColumns, Error> {
        if let [part] = self.parts.as_slice() {
            return Ok(EventColumns::from_parts(vec![part.take(rows)?]));
        }
        let mut parts = Vec::new();
        let mut rest = rows;
        while let Some(&first) = rest.first() {
            let (index, part, _) = self.at(first);
            let end = self.starts[index + 1];
            let here = rest.partition_point(|&row| row < end);
            let local: Vec<usize> = rest[..here].iter().map(|&row| row - self.starts[index]).collect();
            parts.push(part.take(&local)?);
            rest = &rest[here..];
        }
        if parts.is_empty() {
            return Ok(self.slice(0, 0));
        }
        Ok(EventColumns::from_parts(parts))
    }

    /// The rows of `parts`, one after the other, copied into as few batches as their
    /// texts allow (one, unless they pass [`BATCH_TEXT_BYTES_MAX`]).
    pub fn concat(parts: &[EventColumns]) -> Result<EventColumns, Error> {
        EventColumns::concat_within(parts, BATCH_TEXT_BYTES_MAX)
    }

    fn concat_within(columns: &[EventColumns], text_bytes_max: usize) -> Result<EventColumns, Error> {
        let parts: Vec<&Part> = columns.iter().flat_map(|c| &c.parts).collect();
        let mut joined = Vec::new();
        for (run, _) in runs_within(&parts, |part| TextBytes::of(&part.batch), text_bytes_max) {
            joined.push(match &parts[run] {
                [one] => (*one).clone(),
                many => {
                    let batches = many.iter().map(|part| &part.batch);
                    let batch = arrow_select::concat::concat_batches(&schema(), batches)
                        .map_err(|e| arrow_error("joining batches", e))?;
                    Part::try_new(&batch, JsonCheck::Trust)?
                }
            });
        }
        if joined.is_empty() {
            return to_columns(&[]);
        }
        Ok(EventColumns::from_parts(joined))
    }

    /// The bytes the columns' buffers hold.
    pub fn memory_bytes(&self) -> usize {
        self.parts.iter().map(|part| part.batch.get_array_memory_size()).sum()
    }
}

/// Writes record batches of [`schema`] as an Arrow IPC stream.
pub struct IpcStreamWriter<W: Write> {
    writer: arrow_ipc::writer::StreamWriter<W>,
}

impl<W: Write> IpcStreamWriter<W> {
    /// Starts a stream on `out` (writes the schema).
    pub fn new(out: W) -> Result<IpcStreamWriter<W>, Error> {
        let writer = arrow_ipc::writer::StreamWriter::try_new(out, &schema())
            .map_err(|e| arrow_error("Arrow IPC stream", e))?;
        Ok(IpcStreamWriter { writer })
    }

    /// Appends a record batch of [`schema`].
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.writer.write(batch).map_err(|e| arrow_error("Arrow IPC stream", e))
    }

    /// Ends the stream and returns the writer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.writer.finish().map_err(|e| arrow_error("Arrow IPC stream", e))?;
        self.writer.into_inner().map_err(|e| arrow_error("Arrow IPC stream", e))
    }
}

/// Writes record batches of [`schema`] as one Parquet file: zstd, statistics on every
/// column (so readers can skip row groups by position and time), row groups of
/// [`PARQUET_ROW_GROUP_ROWS`], or fewer where more would hold more than
/// [`BATCH_TEXT_BYTES_MAX`] of a text column: a row group is then always one batch
/// when read back.
pub struct ParquetFileWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    /// The text in the row group being written (at most; the writer may have ended a
    /// row group inside the last batch).
    text: TextBytes,
    text_bytes_max: usize,
}

impl<W: Write + Send> ParquetFileWriter<W> {
    /// Starts a file on `out`.
    pub fn new(out: W) -> Result<ParquetFileWriter<W>, Error> {
        ParquetFileWriter::with_text_bytes_max(out, BATCH_TEXT_BYTES_MAX)
    }

    /// [`ParquetFileWriter::new`], with at most `text_bytes_max` bytes of a text column
    /// in a row group (that has more than one batch).
    pub(crate) fn with_text_bytes_max(out: W, text_bytes_max: usize) -> Result<ParquetFileWriter<W>, Error> {
        let level = ZstdLevel::try_new(PARQUET_ZSTD_LEVEL).map_err(|e| arrow_error("zstd level", e))?;
        let column = |name: &str| ColumnPath::from(name);
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
            .set_statistics_enabled(EnabledStatistics::Page)
            // Ids and payloads are (nearly) all distinct: a dictionary only costs a
            // hash lookup per value before the writer gives up on it. Nobody prunes by
            // the min and max of ids or JSON texts, and computing them compares every
            // value. (A 65,536-event chunk of the load test's payloads: 32 ms and
            // 1.16 MB instead of 39 ms and 1.30 MB.)
            .set_column_dictionary_enabled(column("id"), false)
            .set_column_dictionary_enabled(column("payload"), false)
            // Nor entity ids: a chunk of a store with many entities holds few events of
            // each, and where they do repeat, zstd finds the repeats. The integers are
            // deltas: positions and timestamps climb, versions stay small, and a
            // dictionary of 65,536 distinct positions hashes each one for nothing.
            // (The same chunk, with random ids: 30-36 ms and 1.84 MB with
            // dictionaries, 16-19 ms and 1.34 MB without.)
            .set_column_dictionary_enabled(column("entity_id"), false)
            .set_column_dictionary_enabled(column("timestamp"), false)
            .set_column_dictionary_enabled(column("version"), false)
            .set_column_dictionary_enabled(column("position"), false)
            .set_column_encoding(column("timestamp"), Encoding::DELTA_BINARY_PACKED)
            .set_column_encoding(column("version"), Encoding::DELTA_BINARY_PACKED)
            .set_column_encoding(column("position"), Encoding::DELTA_BINARY_PACKED)
            .set_column_statistics_enabled(column("id"), EnabledStatistics::None)
            .set_column_statistics_enabled(column("payload"), EnabledStatistics::None)
            .set_column_statistics_enabled(column("metadata"), EnabledStatistics::None)
            .set_created_by(format!("allsource {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(out, schema(), Some(properties))
            .map_err(|e| arrow_error("Parquet file", e))?;
        Ok(ParquetFileWriter { writer, text: TextBytes::default(), text_bytes_max })
    }

    /// Appends a record batch of [`schema`].
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        let text = TextBytes::of(batch);
        if self.writer.in_progress_rows() == 0 {
            self.text = TextBytes::default();
        }
        if self.text.plus(text).exceeds(self.text_bytes_max) {
            self.writer.flush().map_err(|e| arrow_error("Parquet file", e))?;
            self.text = TextBytes::default();
        }
        self.text = self.text.plus(text);
        self.writer.write(batch).map_err(|e| arrow_error("Parquet file", e))
    }

    /// Writes the footer and returns the writer.
    pub fn finish(self) -> Result<W, Error> {
        self.writer.into_inner().map_err(|e| arrow_error("Parquet file", e))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn events() -> Vec<Arc<Event>> {
        (1..=5u64)
            .map(|position| {
                Arc::new(Event {
                    id: Uuid::from_u128(u128::from(position) << 64 | 0xABCD),
                    event_type: EventType::try_from(["a.created", "a.updated"][(position % 2) as usize]).unwrap(),
                    entity_id: EntityId::try_from(format!("entity/{}", position % 3)).unwrap(),
                    payload: json!({"n": position, "max": u64::MAX, "f": 0.1, "s": "\u{0}é\u{1F600}", "null": null}).into(),
                    metadata: if position == 2 { json!({"trace": "x"}) } else { json!({}) }.into(),
                    timestamp: Timestamp::from_micros(1_795_000_000_000_000 + position as i64),
                    version: position.div_ceil(3),
                    position,
                })
            })
            .collect()
    }

    /// `events` as columns, which must be one batch.
    fn one_batch(events: &[Arc<Event>]) -> RecordBatch {
        let columns = to_columns(events).unwrap();
        let batches: Vec<&RecordBatch> = columns.batches().collect();
        assert_eq!(batches.len(), 1);
        batches[0].clone()
    }

    fn plain(events: &[Arc<Event>]) -> Vec<Event> {
        events.iter().map(|e| (**e).clone()).collect()
    }

    #[test]
    fn record_batch_round_trip() {
        let events = events();
        let batch = one_batch(&events);
        assert_eq!(batch.num_rows(), 5);
        assert_eq!(batch.schema(), schema());
        assert_eq!(from_record_batch(&batch).unwrap(), plain(&events));
        let empty = one_batch(&[]);
        assert_eq!(empty.num_rows(), 0);
    }

    #[test]
    fn ipc_stream_round_trip() {
        let events = events();
        let mut writer = IpcStreamWriter::new(Vec::new()).unwrap();
        writer.write_batch(&one_batch(&events[..2])).unwrap();
        writer.write_batch(&one_batch(&events[2..])).unwrap();
        let bytes = writer.finish().unwrap();
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        assert_eq!(reader.schema(), schema());
        let mut read = Vec::new();
        for batch in reader {
            read.extend(from_record_batch(&batch.unwrap()).unwrap());
        }
        assert_eq!(read, plain(&events));
    }

    #[test]
    fn parquet_round_trip_with_the_parquet_crates_own_reader() {
        let events = events();
        let mut file = tempfile::tempfile().unwrap();
        let mut writer = ParquetFileWriter::new(file.try_clone().unwrap()).unwrap();
        writer.write_batch(&one_batch(&events)).unwrap();
        writer.finish().unwrap();
        use std::io::Seek;
        file.rewind().unwrap();
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let metadata = builder.metadata().clone();
        assert_eq!(metadata.file_metadata().num_rows(), 5);
        let row_group = metadata.row_group(0);
        let position_column =
            row_group.columns().iter().find(|c| c.column_path().string() == "position").unwrap();
        assert!(position_column.statistics().is_some(), "position statistics are written");
        assert!(matches!(position_column.compression(), Compression::ZSTD(_)));
        let column =
            |name: &str| row_group.columns().iter().find(|c| c.column_path().string() == name).unwrap();
        for name in ["id", "payload", "metadata"] {
            assert!(column(name).statistics().is_none(), "no statistics for {name}");
        }
        for name in ["id", "payload", "entity_id", "timestamp", "version", "position"] {
            assert!(column(name).dictionary_page_offset().is_none(), "no dictionary for {name}");
        }
        for name in ["timestamp", "version", "position"] {
            let encodings: Vec<Encoding> = column(name).encodings().collect();
            assert!(encodings.contains(&Encoding::DELTA_BINARY_PACKED), "{name} as deltas: {encodings:?}");
        }
        for name in ["event_type", "metadata"] {
            assert!(column(name).dictionary_page_offset().is_some(), "{name} repeats: a dictionary");
        }
        let mut read = Vec::new();
        for batch in builder.build().unwrap() {
            read.extend(from_record_batch(&batch.unwrap()).unwrap());
        }
        assert_eq!(read, plain(&events));
    }

    /// `n` events, positions from 1, with payloads of 20 to 80 bytes and three types.
    fn varied_events(n: u64) -> Vec<Arc<Event>> {
        (1..=n)
            .map(|position| {
                Arc::new(Event {
                    id: Uuid::from_u128(u128::from(position)),
                    event_type: EventType::try_from(format!("t.{}", position % 3)).unwrap(),
                    entity_id: EntityId::try_from(format!("e-{}", position % 4)).unwrap(),
                    payload: json!({"pad": "x".repeat((position % 7 * 10) as usize)}).into(),
                    metadata: json!({}).into(),
                    timestamp: Timestamp::from_micros(1_795_000_000_000_000 + position as i64),
                    version: position.div_ceil(4),
                    position,
                })
            })
            .collect()
    }

    fn rows(columns: &EventColumns) -> Vec<Event> {
        (0..columns.len()).map(|row| columns.event(row).unwrap()).collect()
    }

    #[test]
    fn texts_past_a_batchs_limit_make_more_batches_that_read_as_one() {
        let events = varied_events(40);
        assert_eq!(to_columns(&events).unwrap().batches().len(), 1);
        let limit = 300;
        let columns = to_columns_within(&events, limit).unwrap();
        assert!(columns.batches().len() >= 4, "{} batches", columns.batches().len());
        for batch in columns.batches() {
            assert!(!TextBytes::of(batch).exceeds(limit), "{:?}", TextBytes::of(batch));
        }
        assert_eq!(columns.len(), 40);
        assert_eq!(rows(&columns), plain(&events));
        let types: Vec<&str> = columns.event_type_values().collect();
        for row in 0..columns.len() {
            assert_eq!(types[columns.event_type_key(row)], columns.event_type(row));
            assert_eq!(columns.event_type(row), events[row].event_type.as_str());
        }

        for (offset, len) in [(0, 40), (3, 17), (10, 0), (39, 1), (5, 30), (0, 1)] {
            let slice = columns.slice(offset, len);
            assert_eq!(rows(&slice), plain(&events[offset..offset + len]), "slice({offset}, {len})");
            // Every row of every part, sliced or not, can be touched (no index past a part).
            std::hint::black_box((0..len).fold(0, |acc, row| acc ^ slice.touch(row)));
        }
        let wanted = [0, 1, 2, 9, 10, 11, 25, 39];
        let taken = columns.take(&wanted).unwrap();
        let expected: Vec<Event> = wanted.iter().map(|&row| (*events[row]).clone()).collect();
        assert_eq!(rows(&taken), expected);
        assert_eq!(rows(&columns.take(&[]).unwrap()), Vec::<Event>::new());

        // Joined: into one batch when the texts fit, into batches within the limit
        // when they do not, the rows unchanged either way.
        let halves = [columns.slice(0, 20), columns.slice(20, 20)];
        let joined = EventColumns::concat(&halves).unwrap();
        assert_eq!(joined.batches().len(), 1);
        assert_eq!(rows(&joined), plain(&events));
        let within = EventColumns::concat_within(&halves, limit).unwrap();
        assert!(within.batches().len() > 1);
        for batch in within.batches() {
            assert!(!TextBytes::of(batch).exceeds(limit));
        }
        assert_eq!(rows(&within), plain(&events));
        assert!(columns.memory_bytes() > 0);
    }

    #[test]
    fn an_event_with_more_text_than_the_limit_gets_a_batch_of_its_own() {
        let events = varied_events(10);
        let columns = to_columns_within(&events, 10).unwrap();
        assert_eq!(columns.batches().len(), 10);
        assert_eq!(rows(&columns), plain(&events));
        assert_eq!(to_columns_within(&[], 10).unwrap().len(), 0);
    }

    #[test]
    fn parquet_row_groups_hold_no_more_text_than_a_batch_may() {
        let events = varied_events(40);
        let limit = 600;
        let mut file = tempfile::tempfile().unwrap();
        let mut writer = ParquetFileWriter::with_text_bytes_max(file.try_clone().unwrap(), limit).unwrap();
        for batch in to_columns_within(&events, 250).unwrap().batches() {
            writer.write_batch(batch).unwrap();
        }
        writer.finish().unwrap();
        use std::io::Seek;
        file.rewind().unwrap();
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let row_groups = ParquetRecordBatchReaderBuilder::try_new(file.try_clone().unwrap())
            .unwrap()
            .metadata()
            .num_row_groups();
        assert!(row_groups >= 2, "{row_groups} row groups");
        let mut read = Vec::new();
        for row_group in 0..row_groups {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file.try_clone().unwrap())
                .unwrap()
                .with_row_groups(vec![row_group])
                .with_batch_size(1_000)
                .build()
                .unwrap();
            let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
            assert_eq!(batches.len(), 1);
            assert!(!TextBytes::of(&batches[0]).exceeds(limit), "{:?}", TextBytes::of(&batches[0]));
            read.extend(from_record_batch(&batches[0]).unwrap());
        }
        assert_eq!(read, plain(&events));
    }

    #[test]
    fn a_batch_of_another_shape_is_an_error() {
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::UInt64, false)])),
            vec![Arc::new(UInt64Array::from(vec![1u64]))],
        )
        .unwrap();
        assert_eq!(from_record_batch(&other).unwrap_err().code(), "StorageError");
    }
}
