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
    Array, ArrayRef, FixedSizeBinaryArray, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
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

/// The events as one record batch of [`schema`].
pub fn to_record_batch(events: &[Arc<Event>]) -> Result<RecordBatch, Error> {
    let n = events.len();
    // Exact capacities: a sealed chunk is held in memory as this batch, so slack left
    // by a growing buffer would be kept for as long as the process runs.
    let text_bytes = |text: fn(&Event) -> usize| events.iter().map(|e| text(e)).sum::<usize>();
    let mut ids = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut event_types = StringDictionaryBuilder::<Int32Type>::new();
    let mut entity_ids = StringBuilder::with_capacity(n, text_bytes(|e| e.entity_id.as_str().len()));
    let mut payloads = StringBuilder::with_capacity(n, text_bytes(|e| e.payload.len()));
    let mut metadata = StringBuilder::with_capacity(n, text_bytes(|e| e.metadata.len()));
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
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(event_types.finish()),
        Arc::new(entity_ids.finish()),
        Arc::new(payloads.finish()),
        Arc::new(metadata.finish()),
        Arc::new(TimestampMicrosecondArray::from(timestamps).with_timezone("UTC")),
        Arc::new(UInt64Array::from(versions)),
        Arc::new(UInt64Array::from(positions)),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| arrow_error("record batch", e))
}

/// The events of a record batch of [`schema`] (as written by [`to_record_batch`], or
/// read back from an IPC stream or a Parquet file). Every value is checked: a batch
/// that does not hold valid events is an error, never a panic.
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

/// A record batch of [`schema`] with its columns checked and typed, read row by row
/// without making an [`Event`]: how the engine holds sealed events in memory.
///
/// Checked once when made: the columns' types, no nulls, event types and entity ids
/// that follow the id rule, dictionary keys in range and (with [`JsonCheck::Validate`])
/// payload and metadata texts that are JSON. The row accessors then cannot fail; they
/// take `row < len()`.
#[derive(Debug, Clone)]
pub struct EventColumns {
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

impl EventColumns {
    /// Checks `batch` (see the type's documentation). An `event_type` column of plain
    /// `Utf8` (as other writers may produce) is dictionary-encoded here.
    pub fn try_new(batch: &RecordBatch, json: JsonCheck) -> Result<EventColumns, Error> {
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
        let event_type_values = event_types
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| bad("event_type dictionary values are not Utf8".into()))?
            .clone();
        let event_type_keys = event_types.keys().clone();
        let event_type_column: ArrayRef = Arc::new(event_types);
        let string_column = |name: &str| {
            column(name).and_then(|c| {
                c.as_string_opt::<i32>().cloned().ok_or_else(|| bad(format!("{name} is not Utf8")))
            })
        };
        let mut columns = EventColumns {
            batch: batch.clone(),
            ids,
            event_type_keys,
            event_type_values,
            entity_ids: string_column("entity_id")?,
            payloads: string_column("payload")?,
            metadata: string_column("metadata")?,
            timestamps: column("timestamp")?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| bad("timestamp is not Timestamp(Microsecond)".into()))?
                .clone(),
            versions: column("version")?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad("version is not UInt64".into()))?
                .clone(),
            positions: column("position")?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad("position is not UInt64".into()))?
                .clone(),
        };
        columns.check(json).map_err(bad)?;
        // The batch again, in this schema whatever the source's (column order, plain
        // event types, schema metadata), so that batches of any source join.
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(columns.ids.clone()),
            event_type_column,
            Arc::new(columns.entity_ids.clone()),
            Arc::new(columns.payloads.clone()),
            Arc::new(columns.metadata.clone()),
            Arc::new(columns.timestamps.clone().with_timezone("UTC")),
            Arc::new(columns.versions.clone()),
            Arc::new(columns.positions.clone()),
        ];
        columns.batch = RecordBatch::try_new(schema(), arrays).map_err(|e| bad(e.to_string()))?;
        Ok(columns)
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

    /// The rows.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    /// The record batch, as checked.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// The id of the event in `row`.
    pub fn id(&self, row: usize) -> Uuid {
        Uuid::from_slice(self.ids.value(row)).unwrap_or_default()
    }

    /// The event type's index in [`EventColumns::event_type_values`].
    pub fn event_type_key(&self, row: usize) -> usize {
        usize::try_from(self.event_type_keys.value(row)).unwrap_or(0)
    }

    /// The distinct event types, indexed by [`EventColumns::event_type_key`].
    pub fn event_type_values(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.event_type_values.len()).map(|i| self.event_type_values.value(i))
    }

    /// The event type of `row`.
    pub fn event_type(&self, row: usize) -> &str {
        self.event_type_values.value(self.event_type_key(row))
    }

    /// The entity id of `row`.
    pub fn entity_id(&self, row: usize) -> &str {
        self.entity_ids.value(row)
    }

    /// The payload of `row`: compact JSON text.
    pub fn payload(&self, row: usize) -> &str {
        self.payloads.value(row)
    }

    /// The metadata of `row`: compact JSON text.
    pub fn metadata(&self, row: usize) -> &str {
        self.metadata.value(row)
    }

    /// The timestamp of `row`.
    pub fn timestamp(&self, row: usize) -> Timestamp {
        Timestamp::from_micros(self.timestamps.value(row))
    }

    /// The version of `row`.
    pub fn version(&self, row: usize) -> u64 {
        self.versions.value(row)
    }

    /// The position of `row`.
    pub fn position(&self, row: usize) -> u64 {
        self.positions.value(row)
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
        EventColumns {
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

    /// The rows `rows` (ascending, each within the rows): a slice when they are
    /// consecutive, else a copy of those rows.
    pub fn take(&self, rows: &[usize]) -> Result<EventColumns, Error> {
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
        EventColumns::try_new(&batch, JsonCheck::Trust)
    }

    /// The rows of `parts`, one after the other, copied into one batch.
    pub fn concat(parts: &[EventColumns]) -> Result<EventColumns, Error> {
        let batches: Vec<&RecordBatch> = parts.iter().map(|p| &p.batch).collect();
        let batch = arrow_select::concat::concat_batches(&schema(), batches)
            .map_err(|e| arrow_error("joining batches", e))?;
        EventColumns::try_new(&batch, JsonCheck::Trust)
    }

    /// The bytes the columns' buffers hold.
    pub fn memory_bytes(&self) -> usize {
        self.batch.get_array_memory_size()
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
/// [`PARQUET_ROW_GROUP_ROWS`].
pub struct ParquetFileWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
}

impl<W: Write + Send> ParquetFileWriter<W> {
    /// Starts a file on `out`.
    pub fn new(out: W) -> Result<ParquetFileWriter<W>, Error> {
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
            .set_column_statistics_enabled(column("id"), EnabledStatistics::None)
            .set_column_statistics_enabled(column("payload"), EnabledStatistics::None)
            .set_column_statistics_enabled(column("metadata"), EnabledStatistics::None)
            .set_created_by(format!("allsource {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(out, schema(), Some(properties))
            .map_err(|e| arrow_error("Parquet file", e))?;
        Ok(ParquetFileWriter { writer })
    }

    /// Appends a record batch of [`schema`].
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), Error> {
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

    fn plain(events: &[Arc<Event>]) -> Vec<Event> {
        events.iter().map(|e| (**e).clone()).collect()
    }

    #[test]
    fn record_batch_round_trip() {
        let events = events();
        let batch = to_record_batch(&events).unwrap();
        assert_eq!(batch.num_rows(), 5);
        assert_eq!(batch.schema(), schema());
        assert_eq!(from_record_batch(&batch).unwrap(), plain(&events));
        let empty = to_record_batch(&[]).unwrap();
        assert_eq!(empty.num_rows(), 0);
    }

    #[test]
    fn ipc_stream_round_trip() {
        let events = events();
        let mut writer = IpcStreamWriter::new(Vec::new()).unwrap();
        writer.write_batch(&to_record_batch(&events[..2]).unwrap()).unwrap();
        writer.write_batch(&to_record_batch(&events[2..]).unwrap()).unwrap();
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
        writer.write_batch(&to_record_batch(&events).unwrap()).unwrap();
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
        for name in ["id", "payload"] {
            assert!(column(name).dictionary_page_offset().is_none(), "no dictionary for {name}");
        }
        assert!(column("entity_id").dictionary_page_offset().is_some(), "entity ids repeat: a dictionary");
        let mut read = Vec::new();
        for batch in builder.build().unwrap() {
            read.extend(from_record_batch(&batch.unwrap()).unwrap());
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
