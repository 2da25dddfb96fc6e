//! The archive: sealed chunks of the log as immutable Parquet files, listed by a
//! manifest that is replaced atomically. The storage of record for everything up to
//! the last sealed position; the WAL holds only what follows. Described in
//! `docs/storage-format.md`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use allsource_core_types::{Error, Event, JsonWriter, Position};
use arrow_array::RecordBatch;
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::columnar::{to_columns_within, EventColumns, JsonCheck, ParquetFileWriter, BATCH_TEXT_BYTES_MAX};
use crate::fs::{AppendFile, Fs};
use crate::wal::RecoveryBase;

/// The manifest's file name, in the data directory.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// The projection checkpoint's file name, in the data directory.
pub const CHECKPOINT_FILE: &str = "CHECKPOINT";
/// The directory of the chunk files, in the data directory.
pub const CHUNKS_DIR: &str = "chunks";
/// The manifest format this code writes.
const MANIFEST_FORMAT: u32 = 1;
/// The suffix of files being written, which recovery removes.
const TEMP_SUFFIX: &str = ".tmp";

/// What a crash interrupted, if `name` (in the data directory or `chunks/`) is a file
/// it left: a temporary file, or a chunk file the manifest does not list
/// (`unlisted_chunk`). Chunk files are written by seals and by merges alike.
fn leftover_of(name: &str, unlisted_chunk: bool) -> Option<&'static str> {
    if unlisted_chunk {
        return Some("seal or merge (a chunk the manifest does not list)");
    }
    let written = name.strip_suffix(TEMP_SUFFIX)?;
    Some(if written == MANIFEST_FILE {
        "manifest update"
    } else if written == CHECKPOINT_FILE {
        "checkpoint"
    } else if written.ends_with(".parquet") {
        "seal or merge"
    } else {
        "write"
    })
}

/// One sealed chunk: a Parquet file holding the events `first_position..=last_position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// The file's name in `chunks/`.
    pub file: String,
    /// The first position in the file.
    pub first_position: Position,
    /// The last position in the file.
    pub last_position: Position,
    /// The file's size.
    pub bytes: u64,
    /// The CRC32C of the whole file, checked before it is read. (Absent only in
    /// manifests written before it was added, whose chunks are read unchecked.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    chunks: Vec<ChunkEntry>,
}

impl Manifest {
    fn last_position(&self) -> Position {
        self.chunks.last().map_or(0, |c| c.last_position)
    }
}

/// The state of the checkpointed projections after the event at `position`, and what
/// identifies that event, so that a checkpoint that does not match the log is ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last event the projections' state includes.
    pub position: Position,
    /// That event's id ...
    pub event_id: uuid::Uuid,
    /// ... and timestamp, in microseconds.
    pub timestamp_micros: i64,
    /// Each checkpointed projection's state as JSON text, by name.
    pub projections: BTreeMap<String, Box<RawValue>>,
}

/// A checkpoint to write: what [`Checkpoint`] reads back, with each projection's state
/// still to be written (straight to the file: the entity snapshots of a large store
/// come to hundreds of megabytes).
pub struct NewCheckpoint {
    /// The last event the projections' state includes.
    pub position: Position,
    /// That event's id ...
    pub event_id: uuid::Uuid,
    /// ... and timestamp, in microseconds.
    pub timestamp_micros: i64,
    /// Each checkpointed projection's name, and the writer of its state. Names are
    /// unique.
    pub projections: Vec<(String, JsonWriter)>,
}

impl NewCheckpoint {
    /// Writes the checkpoint as the JSON object that [`Checkpoint`] reads.
    fn write_to(self, out: &mut dyn Write) -> io::Result<()> {
        write!(
            out,
            r#"{{"position":{},"event_id":"{}","timestamp_micros":{},"projections":{{"#,
            self.position, self.event_id, self.timestamp_micros
        )?;
        for (i, (name, state)) in self.projections.into_iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, &name)?;
            out.write_all(b":")?;
            state(out)?;
        }
        out.write_all(b"}}")
    }
}

/// The sealed chunks of a data directory.
pub struct Archive {
    fs: Arc<dyn Fs>,
    data_dir: PathBuf,
    /// Read briefly by anyone; replaced only under `changes`.
    manifest: Mutex<Manifest>,
    /// Held for a whole seal or merge, so that they come one at a time while readers of
    /// the manifest never wait for a chunk file to be written.
    changes: Mutex<()>,
    /// The most text a column of one record batch, or of one row group of a chunk
    /// file, holds: [`BATCH_TEXT_BYTES_MAX`], less in tests.
    text_bytes_max: usize,
}

fn storage_error(message: String) -> Error {
    Error::Storage { message, read_only: false }
}

/// The name of the chunk file of `first..=last`: sorts in position order.
fn chunk_file_name(first: Position, last: Position) -> String {
    format!("{first:020}-{last:020}.parquet")
}

/// An [`AppendFile`] as an `io::Write`, for the Parquet writer.
struct FileWriter(Box<dyn AppendFile>);

impl Write for FileWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Archive {
    /// Opens the archive of `data_dir`: reads the manifest (none: an empty archive),
    /// loads every chunk it lists, checks that positions run gapless from 1, and
    /// removes what a crash left behind (files being written, chunk files the manifest
    /// does not list). Returns the archive, its events as one [`EventColumns`] per
    /// chunk in position order, and the base a WAL after them must continue.
    pub fn open(
        fs: Arc<dyn Fs>,
        data_dir: &Path,
    ) -> Result<(Archive, Vec<EventColumns>, RecoveryBase), Error> {
        let chunks_dir = data_dir.join(CHUNKS_DIR);
        fs.create_dir_all(&chunks_dir)
            .map_err(|e| storage_error(format!("cannot create {}: {e}", chunks_dir.display())))?;
        let manifest_path = data_dir.join(MANIFEST_FILE);
        let manifest = match fs.read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes).map_err(|e| {
                storage_error(format!("corrupt manifest {}: {e}; refusing to start", manifest_path.display()))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Manifest { format: MANIFEST_FORMAT, chunks: Vec::new() }
            }
            Err(e) => return Err(storage_error(format!("cannot read {}: {e}", manifest_path.display()))),
        };
        if manifest.format != MANIFEST_FORMAT {
            return Err(storage_error(format!(
                "manifest {} has format {}, this build reads {MANIFEST_FORMAT}",
                manifest_path.display(),
                manifest.format
            )));
        }
        let mut sealed = Vec::with_capacity(manifest.chunks.len());
        let mut base = RecoveryBase::default();
        // Decoding is most of a restart's time: the files are decoded on every core,
        // then checked in order.
        let decoded = decode_in_parallel(fs.as_ref(), &chunks_dir, &manifest.chunks);
        for (chunk, columns) in manifest.chunks.iter().zip(decoded) {
            let path = chunks_dir.join(&chunk.file);
            let corrupt = |why: String| {
                storage_error(format!("corrupt chunk {}: {why}; refusing to start", path.display()))
            };
            let expected = base.last_position() + 1;
            if chunk.first_position != expected {
                return Err(corrupt(format!(
                    "starts at position {}, expected {expected}",
                    chunk.first_position
                )));
            }
            let columns = columns.map_err(corrupt)?;
            let positions_ok = (0..columns.len()).all(|i| columns.position(i) == expected + i as Position);
            if !positions_ok || expected + columns.len() as Position != chunk.last_position + 1 {
                return Err(corrupt("its positions do not match the manifest".to_string()));
            }
            base.check_columns(&columns).map_err(corrupt)?;
            sealed.push(columns);
        }
        let archive = Archive {
            fs,
            data_dir: data_dir.to_path_buf(),
            manifest: Mutex::new(manifest),
            changes: Mutex::new(()),
            text_bytes_max: BATCH_TEXT_BYTES_MAX,
        };
        archive.remove_leftovers()?;
        Ok((archive, sealed, base))
    }

    /// Removes files a crash left: temporary files, and chunk files that never made it
    /// into the manifest (their events are still in the WAL).
    fn remove_leftovers(&self) -> Result<(), Error> {
        let listed: Vec<String> = self.manifest.lock().chunks.iter().map(|c| c.file.clone()).collect();
        let chunks_dir = self.data_dir.join(CHUNKS_DIR);
        let mut removed = false;
        for (dir, names) in
            [(&self.data_dir, self.fs.list(&self.data_dir)), (&chunks_dir, self.fs.list(&chunks_dir))]
        {
            let names = names.map_err(|e| storage_error(format!("cannot list {}: {e}", dir.display())))?;
            for name in names {
                let unlisted_chunk =
                    dir == &chunks_dir && name.ends_with(".parquet") && !listed.contains(&name);
                if let Some(interrupted) = leftover_of(&name, unlisted_chunk) {
                    let path = dir.join(&name);
                    tracing::warn!(file = %path.display(), "removing a file left by an interrupted {interrupted}");
                    self.fs
                        .remove(&path)
                        .map_err(|e| storage_error(format!("cannot remove {}: {e}", path.display())))?;
                    removed = true;
                }
            }
        }
        if removed {
            for dir in [&self.data_dir, &chunks_dir] {
                self.fs
                    .sync_dir(dir)
                    .map_err(|e| storage_error(format!("cannot sync {}: {e}", dir.display())))?;
            }
        }
        Ok(())
    }

    /// The last sealed position (0 when nothing is sealed).
    pub fn last_position(&self) -> Position {
        self.manifest.lock().last_position()
    }

    /// The sealed chunks.
    pub fn chunks(&self) -> Vec<ChunkEntry> {
        self.manifest.lock().chunks.clone()
    }

    /// Seals `events` (the positions right after the last sealed one) into a new
    /// chunk: the Parquet file is written under a temporary name, synced, renamed and
    /// its directory synced; then the manifest is replaced the same way. The manifest
    /// swap is the commit point: a crash before it leaves the events in the WAL only.
    /// Returns the chunk's entry and the columns written.
    pub fn seal(&self, events: &[Arc<Event>]) -> Result<(ChunkEntry, EventColumns), Error> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Err(Error::Internal("sealing an empty chunk".to_string()));
        };
        let _changes = self.changes.lock();
        let manifest = self.manifest.lock().clone();
        let expected = manifest.last_position() + 1;
        let gapless = events.iter().enumerate().all(|(i, e)| e.position == expected + i as Position);
        if first.position != expected || !gapless {
            return Err(Error::Internal(format!(
                "sealing positions {}..={} after {}",
                first.position,
                last.position,
                expected - 1
            )));
        }
        let columns = to_columns_within(events, self.text_bytes_max)?;
        let entry = self.write_chunk(first.position, last.position, columns.batches())?;
        let mut next = manifest;
        next.chunks.push(entry.clone());
        self.replace_manifest(next)?;
        Ok((entry, columns))
    }

    /// Writes the chunk file of `first..=last` from `batches`, durably (temporary name,
    /// fsync, rename, fsync of `chunks/`); returns its manifest entry, not yet listed.
    fn write_chunk<'a>(
        &self,
        first: Position,
        last: Position,
        batches: impl Iterator<Item = &'a RecordBatch>,
    ) -> Result<ChunkEntry, Error> {
        let name = chunk_file_name(first, last);
        let (bytes, crc32c) = self.write_durably(&self.data_dir.join(CHUNKS_DIR), &name, |out| {
            let mut writer = ParquetFileWriter::with_text_bytes_max(out, self.text_bytes_max)?;
            for batch in batches {
                writer.write_batch(batch)?;
            }
            writer.finish().map(drop)
        })?;
        Ok(ChunkEntry { file: name, first_position: first, last_position: last, bytes, crc32c: Some(crc32c) })
    }

    /// Writes `next` as the manifest, durably, and makes it the current one.
    /// Writes `next` as the manifest, durably, then makes it the current one. The
    /// caller holds `changes`.
    fn replace_manifest(&self, next: Manifest) -> Result<(), Error> {
        let text = serde_json::to_vec_pretty(&next).map_err(|e| Error::Internal(format!("manifest: {e}")))?;
        self.write_durably(&self.data_dir, MANIFEST_FILE, |mut out| {
            out.write_all(&text).map_err(|e| storage_error(format!("cannot write the manifest: {e}")))
        })?;
        *self.manifest.lock() = next;
        Ok(())
    }

    /// Merges the first run of two or more adjacent chunks smaller than
    /// `chunk_events` (a shutdown seals a partial chunk) into one file of at most
    /// `2 × chunk_events` events. The new file is written durably first; the manifest
    /// swap is the commit point; the old files are removed after it. A crash before
    /// the swap leaves an unlisted file, after it unlisted old files: recovery removes
    /// either. Returns the merged chunk, or `None` when there was nothing to merge.
    pub fn compact(&self, chunk_events: u64) -> Result<Option<ChunkEntry>, Error> {
        let _changes = self.changes.lock();
        let manifest = self.manifest.lock().clone();
        let rows = |c: &ChunkEntry| c.last_position - c.first_position + 1;
        let Some(start) = (0..manifest.chunks.len().saturating_sub(1)).find(|&i| {
            rows(&manifest.chunks[i]) < chunk_events && rows(&manifest.chunks[i + 1]) < chunk_events
        }) else {
            return Ok(None);
        };
        let mut end = start;
        let mut total = 0;
        while end < manifest.chunks.len()
            && rows(&manifest.chunks[end]) < chunk_events
            && total + rows(&manifest.chunks[end]) <= 2 * chunk_events
        {
            total += rows(&manifest.chunks[end]);
            end += 1;
        }
        let run: Vec<ChunkEntry> = manifest.chunks[start..end].to_vec();
        let (Some(first), Some(last)) = (run.first(), run.last()) else { return Ok(None) };
        let chunks_dir = self.data_dir.join(CHUNKS_DIR);
        let mut parts = Vec::with_capacity(run.len());
        for chunk in &run {
            let path = chunks_dir.join(&chunk.file);
            parts.push(
                read_chunk(self.fs.as_ref(), &path, chunk)
                    .map_err(|why| storage_error(format!("cannot merge {}: {why}", path.display())))?,
            );
        }
        let merged = self.write_chunk(
            first.first_position,
            last.last_position,
            parts.iter().flat_map(EventColumns::batches),
        )?;
        let mut next = manifest;
        next.chunks.splice(start..end, [merged.clone()]);
        self.replace_manifest(next)?;
        for chunk in &run {
            let path = chunks_dir.join(&chunk.file);
            self.fs
                .remove(&path)
                .map_err(|e| storage_error(format!("cannot remove {}: {e}", path.display())))?;
        }
        self.fs
            .sync_dir(&chunks_dir)
            .map_err(|e| storage_error(format!("cannot sync {}: {e}", chunks_dir.display())))?;
        Ok(Some(merged))
    }

    /// Replaces the projection checkpoint, durably (temporary file, fsync, rename,
    /// fsync the directory): a crash leaves the old checkpoint or the new one.
    pub fn write_checkpoint(&self, checkpoint: NewCheckpoint) -> Result<(), Error> {
        self.write_durably(&self.data_dir, CHECKPOINT_FILE, |out| {
            let mut buffered = io::BufWriter::with_capacity(1 << 20, out);
            checkpoint
                .write_to(&mut buffered)
                .and_then(|()| buffered.flush())
                .map_err(|e| storage_error(format!("cannot write the checkpoint: {e}")))
        })
        .map(drop)
    }

    /// The projection checkpoint, if there is one that reads; one that does not is
    /// logged and ignored (the projections are then rebuilt by replay).
    pub fn read_checkpoint(&self) -> Option<Checkpoint> {
        let path = self.data_dir.join(CHECKPOINT_FILE);
        let bytes = match self.fs.read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the checkpoint; replaying instead");
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(checkpoint) => Some(checkpoint),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring a checkpoint that does not read");
                None
            }
        }
    }

    /// Writes `dir/name` durably: to `name.tmp`, fsync, rename over `name`, fsync
    /// `dir`. Returns the bytes written and their CRC32C.
    fn write_durably(
        &self,
        dir: &Path,
        name: &str,
        write: impl FnOnce(&mut CountingWriter) -> Result<(), Error>,
    ) -> Result<(u64, u32), Error> {
        let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
        let path = dir.join(name);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            storage_error(format!("cannot {what} {}: {e}", path.display()))
        };
        // A temporary file left by an earlier failure is replaced.
        let _ = self.fs.remove(&temp);
        let file = self.fs.create(&temp).map_err(|e| fail("create", &e))?;
        let mut out = CountingWriter { file: FileWriter(file), bytes: 0, crc32c: 0 };
        write(&mut out)?;
        out.file.0.sync_data().map_err(|e| fail("sync", &e))?;
        self.fs.rename(&temp, &path).map_err(|e| fail("rename into", &e))?;
        self.fs.sync_dir(dir).map_err(|e| fail("sync the directory of", &e))?;
        Ok((out.bytes, out.crc32c))
    }
}

/// The events of one chunk file as one record batch: its size and CRC checked against
/// the manifest first (when the manifest has a CRC; without one, every JSON text is
/// checked too), then decoded. A decoder that panics on bytes it did not expect is
/// caught: damaged data is an error naming the file, never a crash.
fn read_chunk(fs: &dyn Fs, path: &Path, chunk: &ChunkEntry) -> Result<EventColumns, String> {
    let bytes = fs.read(path).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 != chunk.bytes {
        return Err(format!("it is {} bytes, the manifest says {}", bytes.len(), chunk.bytes));
    }
    if let Some(expected) = chunk.crc32c {
        let actual = crc32c::crc32c(&bytes);
        if actual != expected {
            return Err(format!("checksum mismatch (CRC32C {actual:08x}, the manifest says {expected:08x})"));
        }
    }
    let json = if chunk.crc32c.is_some() { JsonCheck::Trust } else { JsonCheck::Validate };
    let decode = || -> Result<EventColumns, String> {
        let bytes = bytes::Bytes::from(bytes);
        let metadata =
            ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::default()).map_err(|e| e.to_string())?;
        // One batch per row group: a row group holds no more text than a batch can (the
        // writer cuts them so), where the rows of a file may hold more. Then joined
        // into as few batches as the texts allow.
        let row_groups = metadata.metadata().row_groups().len();
        let mut parts = Vec::with_capacity(row_groups);
        for row_group in 0..row_groups {
            let group_rows =
                usize::try_from(metadata.metadata().row_group(row_group).num_rows()).unwrap_or(0);
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata.clone())
                .with_row_groups(vec![row_group])
                .with_batch_size(group_rows.max(1))
                .build()
                .map_err(|e| e.to_string())?;
            let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
            parts.push(EventColumns::try_from_batches(&batches, json).map_err(|e| e.to_string())?);
        }
        EventColumns::concat(&parts).map_err(|e| e.to_string())
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .unwrap_or_else(|_| Err("the Parquet decoder failed on it".to_string()))
}

/// [`read_chunk`] of every chunk, on as many threads as there are cores (at most 8),
/// the results in the chunks' order.
fn decode_in_parallel(
    fs: &dyn Fs,
    chunks_dir: &Path,
    chunks: &[ChunkEntry],
) -> Vec<Result<EventColumns, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(chunks.len());
    if threads <= 1 {
        return chunks.iter().map(|chunk| read_chunk(fs, &chunks_dir.join(&chunk.file), chunk)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<EventColumns, String>>>> =
        chunks.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(chunk) = chunks.get(index) else { break };
                *results[index].lock() = Some(read_chunk(fs, &chunks_dir.join(&chunk.file), chunk));
            });
        }
    });
    results
        .into_iter()
        .map(|result| result.into_inner().unwrap_or_else(|| Err("it was not decoded".to_string())))
        .collect()
}

/// A writer that counts what goes through it.
struct CountingWriter {
    file: FileWriter,
    bytes: u64,
    crc32c: u32,
}

impl Write for &mut CountingWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.bytes += n as u64;
        self.crc32c = crc32c::crc32c_append(self.crc32c, &bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: Position) -> Arc<Event> {
        Arc::new(Event {
            id: uuid::Uuid::from_u128(u128::from(position)),
            event_type: allsource_core_types::EventType::try_from("doc.written").unwrap(),
            entity_id: allsource_core_types::EntityId::try_from(format!("doc-{position}")).unwrap(),
            payload: serde_json::json!({"body": "x".repeat(40 + position as usize)}).into(),
            metadata: serde_json::json!({}).into(),
            timestamp: allsource_core_types::Timestamp::from_micros(1_795_000_000_000_000 + position as i64),
            version: 1,
            position,
        })
    }

    #[test]
    fn a_chunk_with_more_text_than_a_batch_holds_is_sealed_in_row_groups_and_read_back() {
        let fs: Arc<dyn Fs> = Arc::new(crate::sim::SimFs::new());
        let dir = Path::new("/data");
        let (mut archive, sealed, _) = Archive::open(fs.clone(), dir).unwrap();
        assert!(sealed.is_empty());
        // As 65,536 events of more than 32 KiB of payload each would with the real limit.
        archive.text_bytes_max = 500;
        let events: Vec<Arc<Event>> = (1..=30).map(event).collect();
        let (entry, columns) = archive.seal(&events).unwrap();
        assert!(columns.batches().len() >= 4, "{} batches", columns.batches().len());
        let file = bytes::Bytes::from(fs.read(&dir.join(CHUNKS_DIR).join(&entry.file)).unwrap());
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default()).unwrap();
        assert!(
            metadata.metadata().num_row_groups() >= 4,
            "{} row groups",
            metadata.metadata().num_row_groups()
        );
        drop(archive);

        let (_, sealed, base) = Archive::open(fs, dir).unwrap();
        assert_eq!(base.last_position(), 30);
        let [columns] = sealed.as_slice() else { panic!("{} chunks", sealed.len()) };
        let read: Vec<Event> = (0..columns.len()).map(|row| columns.event(row).unwrap()).collect();
        assert_eq!(read, events.iter().map(|e| (**e).clone()).collect::<Vec<_>>());
    }

    #[test]
    fn a_leftover_names_what_was_interrupted() {
        assert_eq!(leftover_of("MANIFEST.tmp", false), Some("manifest update"));
        assert_eq!(leftover_of("CHECKPOINT.tmp", false), Some("checkpoint"));
        assert_eq!(
            leftover_of("00000000000000000001-00000000000000065536.parquet.tmp", false),
            Some("seal or merge")
        );
        let unlisted = leftover_of("00000000000000000001-00000000000000065536.parquet", true);
        assert!(unlisted.is_some_and(|what| what.starts_with("seal or merge")), "{unlisted:?}");
        assert_eq!(leftover_of("other.tmp", false), Some("write"));
        // Not leftovers: the manifest, a listed chunk, the WAL's directory.
        assert_eq!(leftover_of("MANIFEST", false), None);
        assert_eq!(leftover_of("00000000000000000001-00000000000000065536.parquet", false), None);
        assert_eq!(leftover_of("wal", false), None);
    }
}
