//! The write-ahead log: segment files of group-commit records. The format and the
//! crash protocol are in `docs/storage-format.md`.

pub(crate) mod format;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use std::collections::HashMap;

use allsource_core_types::{EntityId, Error, Event, Position, Timestamp, Version};
use parking_lot::Mutex;

use self::format::{HeaderError, RecordCrc, RecordRead, SEGMENT_HEADER_BYTES};
use crate::columnar::EventColumns;
use crate::fs::{AppendFile, Fs, RealFs};
use crate::histogram::{AtomicHistogram, EVENTS_PER_SYNC_BOUNDS, SYNC_MICROS_BOUNDS};
use crate::{Log, LogInfo};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// After `fdatasync` of the record holding it: survives `kill -9` and power loss.
    #[default]
    Always,
    /// After the record is written to the OS: survives `kill -9`, not power loss.
    None,
}

impl SyncMode {
    /// The mode's name, as the command line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::None => "none",
        }
    }
}

/// How a WAL is set up.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// When an append is acknowledged.
    pub sync: SyncMode,
    /// A segment that reaches this size is closed and a new one started.
    pub segment_bytes_max: u64,
    /// Events per sealed chunk (a Parquet file) of a [`crate::DurableLog`]: whenever
    /// this many committed events follow the last sealed one, they are sealed, and the
    /// WAL segments they cover are removed.
    pub chunk_events: u64,
    /// Whether the next segment is made ahead of time, full of zeros (with
    /// [`SyncMode::Always`] only).
    pub preallocate: Preallocate,
}

/// How the WAL makes its next segment ahead of time.
///
/// A sync that overwrites zeros already on disk writes the data and flushes; a sync
/// that grows the file must also write its inode, one more round trip to the disk
/// (140 µs against 280 µs for a 5 KB record on the project's test machine). So once
/// the open segment is a quarter full (half, when a full segment before it is about
/// to be sealed and reused instead, by [`Wal::remove_through`]), a spare segment is made:
/// a file of `segment_bytes_max` zeros, written and synced, which the writer takes
/// when it rotates. Small logs never make one. A failure to make one (a full disk) is logged,
/// and the WAL grows its segments as before until it is reopened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocate {
    /// Segments grow as records are appended.
    Off,
    /// A thread of the WAL's makes the spare, off the write path.
    #[default]
    Background,
    /// The writer makes the spare itself, when one is due (as above): the
    /// operations happen in a fixed order, for the simulated file system's fault tests.
    Inline,
}

/// The default number of events per sealed chunk.
pub const CHUNK_EVENTS_DEFAULT: u64 = 64 * 1024;

/// The default size at which a segment is closed: 64 MiB.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            sync: SyncMode::Always,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            chunk_events: CHUNK_EVENTS_DEFAULT,
            preallocate: Preallocate::default(),
        }
    }
}

/// A write-ahead log in a directory of segment files.
pub struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    data_dir: Option<PathBuf>,
    config: WalConfig,
    state: Mutex<WalState>,
    recovered: Mutex<Option<Vec<Event>>>,
    stats: WalStats,
    /// The next segment, made ahead of time.
    spare: Arc<Spare>,
    /// The thread making spares, started when the first is wanted.
    spare_maker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held for the life of the WAL: the data directory's lock.
    lock: Option<std::fs::File>,
}

/// The file name of a spare segment, which recovery ignores (its name does not end in
/// `.wal`) and removes.
const SPARE_NAME: &str = "next-segment.spare";

/// The spare segment and the hand-over between the writer and the spare maker.
#[derive(Default)]
struct Spare {
    slot: Mutex<SpareSlot>,
    /// Signalled whenever the slot changes.
    changed: parking_lot::Condvar,
}

#[derive(Default)]
struct SpareSlot {
    /// A spare ready for the writer: `SPARE_NAME`, open at 0, either zero-filled and
    /// synced or a sealed segment reused (see [`Wal::reuse_as_spare`]).
    ready: Option<Box<dyn AppendFile>>,
    /// The writer asked for a spare that is not ready yet.
    wanted: bool,
    /// A sealed segment is being made the spare.
    reusing: bool,
    /// Making one failed: no more are made (until the WAL is reopened).
    failed: bool,
    /// The WAL is being dropped: the maker stops.
    closing: bool,
}

/// Makes a spare segment: `SPARE_NAME` in `dir`, `len` bytes of zeros, synced.
fn make_spare(fs: &dyn Fs, dir: &Path, len: u64) -> std::io::Result<Box<dyn AppendFile>> {
    let path = dir.join(SPARE_NAME);
    // One left by a crash or by a failed attempt is of no use: start over.
    match fs.remove(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = fs.create(&path)?;
    if let Err(error) = file.preallocate(len) {
        // A part-made spare is only disk space taken (a full disk, likely).
        drop(file);
        let _ = fs.remove(&path);
        return Err(error);
    }
    Ok(file)
}

/// The spare maker's thread: makes a spare whenever one is wanted, until the WAL closes.
fn run_spare_maker(spare: &Spare, fs: &dyn Fs, dir: &Path, len: u64) {
    loop {
        {
            let mut slot = spare.slot.lock();
            while !slot.wanted && !slot.closing {
                spare.changed.wait(&mut slot);
            }
            if slot.closing {
                return;
            }
        }
        let made = make_spare(fs, dir, len);
        let mut slot = spare.slot.lock();
        slot.wanted = false;
        slot.take(made, dir);
        spare.changed.notify_all();
    }
}

impl SpareSlot {
    /// Keeps a spare just made, or gives up making them after a failure.
    fn take(&mut self, made: std::io::Result<Box<dyn AppendFile>>, dir: &Path) {
        match made {
            Ok(file) => self.ready = Some(file),
            Err(error) => {
                self.failed = true;
                tracing::warn!(%error, dir = %dir.display(), "cannot make a spare WAL segment; segments grow as they fill");
            }
        }
    }
}

struct WalState {
    /// The open segment, if any.
    file: Option<Box<dyn AppendFile>>,
    /// The position the next record must start at.
    next_position: Position,
    /// Every segment, oldest first: its first position and size. The last is open.
    segments: Vec<(Position, u64)>,
    /// Set after a failed write or sync: the WAL refuses every write after it.
    poisoned: Option<String>,
    /// Reused encoding buffer.
    buffer: Vec<u8>,
    /// How the open segment's records are checksummed.
    crc: RecordCrc,
    /// The open segment was a spare: its records go over bytes already on disk (zeros,
    /// or a reused segment's old records), not past its end.
    preallocated: bool,
    /// A spare was asked for since the open segment began: asked once per segment,
    /// so that later writes take no lock for it.
    spare_asked: bool,
}

/// Figures for `describe`, kept apart from the state so that reading them never waits
/// for a write or a sync in progress.
#[derive(Default)]
struct WalStats {
    last_position: AtomicU64,
    bytes: AtomicU64,
    segments: AtomicU64,
    syncs: AtomicU64,
    synced_events: AtomicU64,
    last_sync_micros: AtomicU64,
    syncs_observed: SyncHistograms,
}

/// Every record's sync, as histograms for metrics: recording costs a few atomic adds
/// on the writer's path, next to the two clock reads it already makes.
struct SyncHistograms {
    micros: AtomicHistogram,
    events: AtomicHistogram,
}

impl Default for SyncHistograms {
    fn default() -> Self {
        SyncHistograms {
            micros: AtomicHistogram::new(&SYNC_MICROS_BOUNDS),
            events: AtomicHistogram::new(&EVENTS_PER_SYNC_BOUNDS),
        }
    }
}

/// What recovery found, for the start-up log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: u64,
    /// Events recovered.
    pub events: u64,
    /// Bytes of the segments kept, after any cut.
    pub bytes: u64,
    /// Bytes of torn tail cut from the last segment (0 when clean).
    pub bytes_cut: u64,
    /// Of `bytes_cut`, the zeros after the last byte that is not zero: the rest of a
    /// segment written ahead of time, never written by a record. A torn write in such
    /// a segment leaves a few bytes, then up to the segment's end in zeros.
    pub zeros_cut: u64,
    /// Of `bytes_cut`, a cut of bytes that hold a record header checksummed for another
    /// segment: a reused segment's old records after its last new one, cut at every
    /// restart (with any torn write before them).
    pub old_bytes_cut: u64,
    /// Sealed chunks (Parquet files) loaded, and the events in them (counted in
    /// `events` too).
    pub chunks: u64,
    /// Events loaded from sealed chunks.
    pub archived_events: u64,
    /// Time spent loading the sealed chunks (reading, checking, decoding them).
    pub chunks_load_time: std::time::Duration,
    /// Time spent reading the WAL.
    pub wal_read_time: std::time::Duration,
    /// Time the engine spent rebuilding its tables, indexes and projections from them
    /// (set by the engine; zero from the storage layer).
    pub rebuild_time: std::time::Duration,
    /// The kept segments: first position and size.
    kept_segments: Vec<(Position, u64)>,
    /// The last position in the WAL, sealed or not (`None`: no segment).
    wal_last: Option<Position>,
}

fn segment_name(first_position: Position) -> String {
    format!("{first_position:020}.wal")
}

fn storage_error(message: String) -> Error {
    Error::Storage { message, read_only: false }
}

impl Wal {
    /// Opens the WAL of the data directory `data_dir` (created if missing) on the real
    /// file system, holding the directory's lock file, and recovers it.
    pub fn open_dir(data_dir: &Path, config: WalConfig) -> Result<(Wal, RecoveryReport), Error> {
        let fs = RealFs;
        create_dir_durably(&fs, data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let (mut wal, report) = Wal::open(Arc::new(fs), &data_dir.join("wal"), config)?;
        wal.lock = Some(lock);
        wal.data_dir = Some(data_dir.to_path_buf());
        Ok((wal, report))
    }

    /// Opens (creating if missing) the WAL in directory `dir` of `fs`, and recovers it:
    /// reads every segment, cuts a torn tail, and refuses corruption anywhere else.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, config: WalConfig) -> Result<(Wal, RecoveryReport), Error> {
        Wal::open_after(fs, dir, config, RecoveryBase::default())
    }

    /// The events recovered at opening, handed over once (later calls get none).
    pub fn take_recovered(&self) -> Vec<Event> {
        self.recovered.lock().take().unwrap_or_default()
    }

    /// [`Wal::open`] for a WAL that continues `base` (the archive's events): its events
    /// at or before `base`'s last position are skipped, the rest must continue it.
    pub fn open_after(
        fs: Arc<dyn Fs>,
        dir: &Path,
        config: WalConfig,
        base: RecoveryBase,
    ) -> Result<(Wal, RecoveryReport), Error> {
        create_dir_durably(fs.as_ref(), dir)?;
        let base_last = base.last_position;
        let (events, report, open) = recover(fs.as_ref(), dir, base)?;
        // A last segment that was a spare keeps being written over its zeros.
        let (file, crc, preallocated) = match open {
            Some(open) => (Some(open.file), open.crc, open.preallocated),
            None => (None, RecordCrc::PLAIN, false),
        };
        // Only committed events are sealed, and only segments wholly sealed are removed:
        // the WAL always reaches at least as far as the archive.
        if let Some(wal_last) = report.wal_last.filter(|&last| last < base_last) {
            return Err(storage_error(format!(
                "the WAL in {} ends at position {wal_last}, before the sealed chunks' last position \
                 {base_last}; refusing to start",
                dir.display()
            )));
        }
        let next_position = report.wal_last.unwrap_or(0).max(base_last) + 1;
        let stats = WalStats::default();
        stats.segments.store(report.segments, Ordering::Relaxed);
        stats.bytes.store(report.bytes, Ordering::Relaxed);
        stats.last_position.store(next_position - 1, Ordering::Relaxed);
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            data_dir: None,
            config,
            state: Mutex::new(WalState {
                file,
                next_position,
                segments: report.kept_segments.clone(),
                poisoned: None,
                buffer: Vec::new(),
                crc,
                preallocated,
                spare_asked: false,
            }),
            recovered: Mutex::new(Some(events)),
            spare: Arc::default(),
            spare_maker: Mutex::new(None),
            stats,
            lock: None,
        };
        Ok((wal, report))
    }

    /// Starts a new segment whose first event will be `first_position`: create (or take
    /// the spare), write the header, sync the file, name it (a spare), sync the
    /// directory.
    fn rotate(&self, state: &mut WalState) -> Result<(), String> {
        let path = self.dir.join(segment_name(state.next_position));
        let header = format::segment_header(state.next_position);
        let spare = self.spare.slot.lock().ready.take();
        state.preallocated = spare.is_some();
        state.spare_asked = false;
        // The file the header goes into: the spare, or a new file under its final name.
        let spare_path = self.dir.join(SPARE_NAME);
        let (mut file, written) = match spare {
            Some(file) => (file, &spare_path),
            None => {
                let file = self
                    .fs
                    .create(&path)
                    .map_err(|e| format!("cannot create segment {}: {e}", path.display()))?;
                (file, &path)
            }
        };
        file.write_all(&header)
            .map_err(|e| format!("cannot write segment header {}: {e}", written.display()))?;
        file.sync_data().map_err(|e| format!("cannot sync segment {}: {e}", written.display()))?;
        if state.preallocated {
            self.fs
                .rename(&spare_path, &path)
                .map_err(|e| format!("cannot rename {} to {}: {e}", spare_path.display(), path.display()))?;
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| format!("cannot sync directory {}: {e}", self.dir.display()))?;
        state.file = Some(file);
        state.crc = RecordCrc::seeded(state.next_position);
        state.segments.push((state.next_position, SEGMENT_HEADER_BYTES as u64));
        self.stats.segments.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(SEGMENT_HEADER_BYTES as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write_record(&self, state: &mut WalState, events: &[Arc<Event>]) -> Result<(), String> {
        let segment_bytes = state.segments.last().map_or(0, |(_, bytes)| *bytes);
        // A segment that grows is closed early once a spare is ready: writes go over
        // bytes on disk from then on (all but a segment's last record, which may run
        // past them).
        if state.file.is_none()
            || segment_bytes >= self.config.segment_bytes_max
            || (!state.preallocated && self.spare.slot.lock().ready.is_some())
        {
            self.rotate(state)?;
        }
        let mut buffer = std::mem::take(&mut state.buffer);
        buffer.clear();
        format::encode_record(events, state.crc, &mut buffer)?;
        let Some(file) = state.file.as_mut() else { return Err("no open segment".to_string()) };
        let result =
            file.write_all(&buffer).map_err(|e| format!("cannot write to the WAL: {e}")).and_then(|()| {
                if self.config.sync == SyncMode::Always {
                    let started = Instant::now();
                    file.sync_data().map_err(|e| format!("cannot sync the WAL: {e}"))?;
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.stats.last_sync_micros.store(micros, Ordering::Relaxed);
                    self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                    self.stats.synced_events.fetch_add(events.len() as u64, Ordering::Relaxed);
                    self.stats.syncs_observed.micros.record(micros);
                    self.stats.syncs_observed.events.record(events.len() as u64);
                }
                Ok(())
            });
        // A spare is asked for once the open segment is a quarter full; or half, when a
        // full segment before it waits for its seal, which usually comes first and
        // makes that segment the spare ([`Wal::reuse_as_spare`]) with no zeros to write.
        let max = self.config.segment_bytes_max;
        let reusable = state.segments.iter().rev().nth(1).is_some_and(|&(_, bytes)| bytes >= max);
        let threshold = if reusable { max / 2 } else { max / 4 };
        let due = state.segments.last_mut().is_some_and(|(_, bytes)| {
            *bytes += buffer.len() as u64;
            *bytes >= threshold
        });
        if result.is_ok() && due && !state.spare_asked {
            state.spare_asked = true;
            self.want_spare();
        }
        self.stats.bytes.fetch_add(buffer.len() as u64, Ordering::Relaxed);
        state.buffer = buffer;
        result
    }

    /// Asks for a spare segment, unless one is ready, on its way, or not to be made.
    fn want_spare(&self) {
        if self.config.sync != SyncMode::Always || self.config.preallocate == Preallocate::Off {
            return;
        }
        let mut slot = self.spare.slot.lock();
        if slot.ready.is_some() || slot.wanted || slot.reusing || slot.failed || slot.closing {
            return;
        }
        match self.config.preallocate {
            Preallocate::Off => {}
            Preallocate::Inline => {
                slot.take(make_spare(self.fs.as_ref(), &self.dir, self.config.segment_bytes_max), &self.dir);
            }
            Preallocate::Background => {
                slot.wanted = true;
                self.spare.changed.notify_all();
                drop(slot);
                let mut maker = self.spare_maker.lock();
                if maker.is_none() {
                    let (spare, fs, dir) = (self.spare.clone(), self.fs.clone(), self.dir.clone());
                    let len = self.config.segment_bytes_max;
                    let started = std::thread::Builder::new()
                        .name("allsource-wal-spare".to_string())
                        .spawn(move || run_spare_maker(&spare, fs.as_ref(), &dir, len));
                    match started {
                        Ok(handle) => *maker = Some(handle),
                        Err(error) => {
                            let mut slot = self.spare.slot.lock();
                            (slot.wanted, slot.failed) = (false, true);
                            tracing::warn!(%error, "cannot start the spare WAL segment maker");
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Wal {
    /// Stops the spare maker, and removes a spare that was never used.
    fn drop(&mut self) {
        let ready = {
            let mut slot = self.spare.slot.lock();
            slot.closing = true;
            self.spare.changed.notify_all();
            slot.ready.take()
        };
        if let Some(handle) = self.spare_maker.get_mut().take() {
            let _ = handle.join();
        }
        // The maker may have finished one after `closing` was set.
        let ready = ready.or_else(|| self.spare.slot.lock().ready.take());
        if let Some(file) = ready {
            drop(file);
            let _ = self.fs.remove(&self.dir.join(SPARE_NAME));
        }
    }
}

impl Wal {
    /// Takes over the data directory's lock, for a log that holds the WAL.
    pub(crate) fn hold_lock(&mut self, lock: std::fs::File, data_dir: &Path) {
        self.lock = Some(lock);
        self.data_dir = Some(data_dir.to_path_buf());
    }

    /// Removes the segments whose events all lie at or before `position` (sealed into
    /// the archive); never the open segment. Returns how many were removed. A segment
    /// left on disk by a failure here is harmless: recovery skips what is sealed. One
    /// may become the next spare instead of being removed (`Wal::reuse_as_spare`).
    pub fn remove_through(&self, position: Position) -> Result<usize, Error> {
        let doomed: Vec<(Position, u64)> = {
            let mut state = self.state.lock();
            let covered = state.segments.windows(2).take_while(|pair| pair[1].0 - 1 <= position).count();
            state.segments.drain(..covered).collect()
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        for (first, bytes) in &doomed {
            let path = self.dir.join(segment_name(*first));
            if !self.reuse_as_spare(&path, *bytes)? {
                self.fs
                    .remove(&path)
                    .map_err(|e| storage_error(format!("cannot remove {}: {e}", path.display())))?;
            }
            self.stats.segments.fetch_sub(1, Ordering::Relaxed);
            self.stats.bytes.fetch_sub(*bytes, Ordering::Relaxed);
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| storage_error(format!("cannot sync {}: {e}", self.dir.display())))?;
        Ok(doomed.len())
    }

    /// Makes a sealed segment of `bytes` bytes at `path` the next spare, when spares
    /// are made and none is ready or on its way, as PostgreSQL and RocksDB recycle their
    /// logs: its blocks are allocated and written already, so no zeros need writing
    /// (nor its blocks freeing), and appends over it sync as they do over a spare's
    /// zeros. Its old records cannot pass for the new segment's: their checksums were
    /// seeded with another first position ([`RecordCrc`]). The directory is synced
    /// before the writer may take it (a header written into the file must never show
    /// under its old name), and the file is cut to `segment_bytes_max`, so that no old
    /// bytes are left past where the next segment closes. Returns whether it was reused
    /// (or, after a failure, removed); false leaves it to be removed.
    fn reuse_as_spare(&self, path: &Path, bytes: u64) -> Result<bool, Error> {
        let max = self.config.segment_bytes_max;
        if self.config.sync != SyncMode::Always || self.config.preallocate == Preallocate::Off || bytes < max
        {
            return Ok(false);
        }
        {
            let mut slot = self.spare.slot.lock();
            if slot.ready.is_some() || slot.wanted || slot.reusing || slot.closing {
                return Ok(false);
            }
            slot.reusing = true;
        }
        let spare_path = self.dir.join(SPARE_NAME);
        let reused = (|| {
            self.fs.rename(path, &spare_path)?;
            self.fs.sync_dir(&self.dir)?;
            // Cut only under the spare's name: a segment cut inside its last record and
            // found under its own name after a crash would read as corrupt.
            if bytes > max {
                self.fs.truncate(&spare_path, max)?;
            }
            self.fs.open_at(&spare_path, 0)
        })();
        let mut slot = self.spare.slot.lock();
        slot.reusing = false;
        match reused {
            Ok(file) => {
                slot.ready = Some(file);
                self.spare.changed.notify_all();
                Ok(true)
            }
            Err(error) => {
                drop(slot);
                tracing::warn!(%error, segment = %path.display(), "cannot reuse a sealed WAL segment; removing it");
                for doomed in [path, spare_path.as_path()] {
                    match self.fs.remove(doomed) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(storage_error(format!("cannot remove {}: {e}", doomed.display())));
                        }
                        _ => {}
                    }
                }
                Ok(true)
            }
        }
    }
}

impl Log for Wal {
    fn append(&self, events: &[Arc<Event>]) -> Result<(), Error> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let mut state = self.state.lock();
        if let Some(why) = &state.poisoned {
            return Err(Error::Storage { message: why.clone(), read_only: true });
        }
        if first.position != state.next_position || last.position != first.position + events.len() as u64 - 1
        {
            return Err(Error::Internal(format!(
                "WAL received positions {}..={} where {} was next",
                first.position, last.position, state.next_position
            )));
        }
        match self.write_record(&mut state, events) {
            Ok(()) => {
                state.next_position = last.position + 1;
                self.stats.last_position.store(last.position, Ordering::Relaxed);
                Ok(())
            }
            Err(why) => {
                // After a failed write or sync the file's state is unknown: refuse
                // every later write, so that nothing is appended after torn bytes.
                state.poisoned = Some(why.clone());
                Err(Error::Storage { message: why, read_only: true })
            }
        }
    }

    fn recover(&self) -> Result<crate::Recovered, Error> {
        Ok(crate::Recovered { sealed: Vec::new(), tail: self.take_recovered() })
    }

    fn describe(&self) -> LogInfo {
        LogInfo {
            kind: "wal",
            durable: true,
            last_position: self.stats.last_position.load(Ordering::Relaxed),
            data_dir: self.data_dir.as_ref().map(|d| d.display().to_string()),
            sync: self.config.sync.as_str(),
            wal_bytes: self.stats.bytes.load(Ordering::Relaxed),
            segments: self.stats.segments.load(Ordering::Relaxed),
            syncs: self.stats.syncs.load(Ordering::Relaxed),
            synced_events: self.stats.synced_events.load(Ordering::Relaxed),
            last_sync_micros: self.stats.last_sync_micros.load(Ordering::Relaxed),
            sync_micros: self.stats.syncs_observed.micros.snapshot(),
            events_per_sync: self.stats.syncs_observed.events.snapshot(),
            ..LogInfo::default()
        }
    }
}

/// Creates `dir` if missing, and makes its name durable: a directory entry is only
/// safe from a power loss once its parent directory is synced.
pub(crate) fn create_dir_durably(fs: &dyn Fs, dir: &Path) -> Result<(), Error> {
    if fs.list(dir).is_ok() {
        return Ok(());
    }
    fs.create_dir_all(dir)
        .map_err(|e| storage_error(format!("cannot create directory {}: {e}", dir.display())))?;
    let parents = dir.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty());
    for parent in parents {
        fs.sync_dir(parent)
            .map_err(|e| storage_error(format!("cannot sync directory {}: {e}", parent.display())))?;
    }
    Ok(())
}

/// Takes the exclusive lock on `<data_dir>/LOCK`, or fails naming the directory.
pub(crate) fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, Error> {
    use std::io::Write;
    let path = data_dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| storage_error(format!("cannot open lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(storage_error(format!(
                "data directory {} is in use by another process (lock file {} is held)",
                data_dir.display(),
                path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(storage_error(format!("cannot lock {}: {e}", path.display())))
        }
    }
    // The pid is for operators; the lock, not the file's content, is what counts.
    let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// The first positions of the segments of `dir`, sorted; and whether a spare segment
/// was left there.
fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<(Vec<Position>, bool), Error> {
    let names = fs.list(dir).map_err(|e| storage_error(format!("cannot list {}: {e}", dir.display())))?;
    let mut segments = Vec::new();
    let mut spare = false;
    for name in names {
        spare |= name == SPARE_NAME;
        let Some(stem) = name.strip_suffix(".wal") else { continue };
        let first: Position = stem
            .parse()
            .map_err(|_| storage_error(format!("unexpected file {name} in {}", dir.display())))?;
        segments.push(first);
    }
    segments.sort_unstable();
    Ok((segments, spare))
}

/// What the log held before the WAL's first event: the WAL checks that its events
/// continue it. Built from the archive's events at start-up (empty without an archive).
///
/// Checks what a record's checksums cannot: each entity's versions are gapless from 1
/// and timestamps never decrease along the log.
#[derive(Debug, Clone, Default)]
pub struct RecoveryBase {
    last_position: Position,
    versions: HashMap<EntityId, Version>,
    last_timestamp: Option<Timestamp>,
}

impl RecoveryBase {
    /// The base after `events` (positions from 1, in order, already checked).
    pub fn after(events: &[Event]) -> RecoveryBase {
        let mut base = RecoveryBase::default();
        for event in events {
            base.versions.insert(event.entity_id.clone(), event.version);
        }
        base.last_position = events.last().map_or(0, |e| e.position);
        base.last_timestamp = events.last().map(|e| e.timestamp);
        base
    }

    /// The last position seen.
    pub(crate) fn last_position(&self) -> Position {
        self.last_position
    }

    /// [`RecoveryBase::check`] for the rows of a sealed chunk.
    pub(crate) fn check_columns(&mut self, columns: &EventColumns) -> Result<(), String> {
        for row in 0..columns.len() {
            let timestamp = columns.timestamp(row);
            let position = columns.position(row);
            if self.last_timestamp.is_some_and(|last| timestamp < last) {
                return Err(format!("the timestamp of position {position} goes back in time"));
            }
            self.last_timestamp = Some(timestamp);
            let entity_id = columns.entity_id(row);
            let version = match self.versions.get_mut(entity_id) {
                Some(version) => version,
                None => {
                    let entity = EntityId::try_from(entity_id).map_err(|e| e.to_string())?;
                    self.versions.entry(entity).or_insert(0)
                }
            };
            if columns.version(row) != *version + 1 {
                return Err(format!(
                    "position {position} has version {} of entity '{entity_id}' where {} was expected",
                    columns.version(row),
                    *version + 1
                ));
            }
            *version = columns.version(row);
            self.last_position = position;
        }
        Ok(())
    }

    pub(crate) fn check(&mut self, events: &[Event]) -> Result<(), String> {
        for event in events {
            if self.last_timestamp.is_some_and(|last| event.timestamp < last) {
                return Err(format!("the timestamp of position {} goes back in time", event.position));
            }
            self.last_timestamp = Some(event.timestamp);
            let version = self.versions.entry(event.entity_id.clone()).or_insert(0);
            if event.version != *version + 1 {
                return Err(format!(
                    "position {} has version {} of entity '{}' where {} was expected",
                    event.position,
                    event.version,
                    event.entity_id,
                    *version + 1
                ));
            }
            *version = event.version;
            self.last_position = event.position;
        }
        Ok(())
    }
}

type Recovered = (Vec<Event>, RecoveryReport, Option<OpenSegment>);

/// The last segment, open for appending after recovery.
struct OpenSegment {
    file: Box<dyn AppendFile>,
    /// How its records are checksummed.
    crc: RecordCrc,
    /// It ends in zeros (it was a spare): appends go over them.
    preallocated: bool,
}

/// Reads every segment in order; see "Recovery" in `docs/storage-format.md`. Events at
/// or before `base`'s last position (already in the archive) are skipped; the rest
/// must continue it.
fn recover(fs: &dyn Fs, dir: &Path, mut base: RecoveryBase) -> Result<Recovered, Error> {
    let (segments, spare) = list_segments(fs, dir)?;
    if spare {
        // Left by the last run, maybe unfinished: a new one is made when it is wanted.
        let path = dir.join(SPARE_NAME);
        fs.remove(&path).map_err(|e| storage_error(format!("cannot remove {}: {e}", path.display())))?;
    }
    let mut events: Vec<Event> = Vec::new();
    let skip_through = base.last_position;
    // The position the next record must start at, once a segment has been read.
    let mut next_expected: Option<Position> = None;
    let mut report = RecoveryReport::default();
    let mut open: Option<(PathBuf, usize, RecordCrc, bool)> = None;
    let count = segments.len();
    for (index, first) in segments.into_iter().enumerate() {
        let is_last = index + 1 == count;
        let path = dir.join(segment_name(first));
        let bytes =
            fs.read(&path).map_err(|e| storage_error(format!("cannot read {}: {e}", path.display())))?;
        let corrupt = |offset: usize, why: &str| {
            storage_error(format!(
                "corrupt WAL segment {} at byte offset {offset}: {why}; refusing to start",
                path.display()
            ))
        };
        let expected = next_expected.unwrap_or(first);
        let crc = match format::parse_segment_header(&bytes) {
            Ok((named, crc)) if named == first && named == expected => crc,
            Ok((named, _)) => {
                return Err(corrupt(0, &format!("header names position {named}, expected {expected}")));
            }
            Err(error) => {
                let why = match error {
                    HeaderError::Short => "segment shorter than its header".to_string(),
                    HeaderError::Bad(why) => why,
                };
                // The header is written and synced before the file takes this name, in
                // a new file or over a spare: only records the name's header would
                // have checksummed can prove it was ever there.
                let records_follow = [RecordCrc::seeded(first), RecordCrc::PLAIN]
                    .into_iter()
                    .any(|crc| format::valid_record_follows(&bytes, crc).is_some());
                if is_last && !records_follow {
                    // A crash during rotation: the segment never held a record.
                    tracing::warn!(segment = %path.display(), %why, "removing an unfinished WAL segment");
                    fs.remove(&path)
                        .map_err(|e| storage_error(format!("cannot remove {}: {e}", path.display())))?;
                    fs.sync_dir(dir)
                        .map_err(|e| storage_error(format!("cannot sync {}: {e}", dir.display())))?;
                    report.bytes_cut += bytes.len() as u64;
                    continue;
                }
                return Err(corrupt(0, &why));
            }
        };
        report.segments += 1;
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut next = first;
        let mut zeros_after = false;
        loop {
            match format::read_record(&bytes[offset..], next, crc) {
                RecordRead::Record { len, events: mut decoded } => {
                    next += decoded.len() as Position;
                    decoded.retain(|e| e.position > skip_through);
                    if decoded.first().is_some_and(|e| e.position != base.last_position + 1) {
                        return Err(corrupt(
                            offset,
                            &format!(
                                "the WAL continues at position {} but the log before it ends at {}",
                                decoded[0].position, base.last_position
                            ),
                        ));
                    }
                    if let Err(why) = base.check(&decoded) {
                        return Err(corrupt(offset, &why));
                    }
                    events.append(&mut decoded);
                    offset += len;
                }
                RecordRead::End => break,
                RecordRead::Corrupt(why) => return Err(corrupt(offset, &why)),
                // The zeros of a preallocated segment: nothing was ever written here.
                // (Lost records in an earlier segment would still be caught: the next
                // segment's first position would not follow.)
                RecordRead::Invalid(_) if bytes[offset..].iter().all(|&b| b == 0) => {
                    zeros_after = true;
                    break;
                }
                RecordRead::Invalid(why) => {
                    if !is_last || format::valid_record_follows(&bytes[offset + 1..], crc).is_some() {
                        return Err(corrupt(offset, &why));
                    }
                    let cut = bytes.len() - offset;
                    let written = bytes[offset..].iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
                    let zeros = cut - written;
                    if !format::old_record_header_in(&bytes[offset..], crc) {
                        tracing::warn!(
                            segment = %path.display(),
                            offset,
                            bytes_cut = cut,
                            zeros_cut = zeros,
                            %why,
                            "cutting a torn tail from the WAL: the record was never acknowledged"
                        );
                    } else {
                        tracing::info!(
                            segment = %path.display(),
                            offset,
                            bytes_cut = cut,
                            zeros_cut = zeros,
                            "cutting a reused WAL segment's old records after its last record (and any \
                             torn write before them: never acknowledged)"
                        );
                        report.old_bytes_cut += cut as u64;
                    }
                    // Cut, not written over: no byte of a torn record may outlive it.
                    fs.truncate(&path, offset as u64)
                        .map_err(|e| storage_error(format!("cannot truncate {}: {e}", path.display())))?;
                    report.bytes_cut += cut as u64;
                    report.zeros_cut += zeros as u64;
                    break;
                }
            }
        }
        next_expected = Some(next);
        report.bytes += offset as u64;
        report.kept_segments.push((first, offset as u64));
        if is_last {
            open = Some((path, offset, crc, zeros_after));
        }
    }
    report.events = events.len() as u64;
    report.wal_last = next_expected.map(|next| next - 1);
    let open = match open {
        Some((path, end, crc, preallocated)) => Some(OpenSegment {
            file: fs
                .open_at(&path, end as u64)
                .map_err(|e| storage_error(format!("cannot open {}: {e}", path.display())))?,
            crc,
            preallocated,
        }),
        None => None,
    };
    Ok((events, report, open))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use allsource_core_types::EventType;

    fn event(position: Position) -> Arc<Event> {
        Arc::new(Event {
            id: uuid::Uuid::from_u128(u128::from(position)),
            event_type: EventType::try_from("spare.test").unwrap(),
            entity_id: EntityId::try_from(format!("entity-{position}")).unwrap(),
            payload: serde_json::json!({"n": position, "pad": "x".repeat(200)}).into(),
            metadata: serde_json::json!({}).into(),
            timestamp: Timestamp::from_micros(1_800_000_000_000_000 + position as i64),
            version: 1,
            position,
        })
    }

    impl Wal {
        /// Waits until the spare maker has made a spare (true) or given up (false).
        fn wait_for_spare(&self) -> bool {
            let mut slot = self.spare.slot.lock();
            while slot.ready.is_none() && !slot.failed {
                self.spare.changed.wait(&mut slot);
            }
            slot.ready.is_some()
        }
    }

    #[test]
    fn a_sealed_segment_becomes_the_next_one_on_real_files() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig { segment_bytes_max: 64 * 1024, ..WalConfig::default() };
        let wal_dir = dir.path().join("wal");
        let inode = |first: Position| std::fs::metadata(wal_dir.join(segment_name(first))).unwrap().ino();
        let mut next = 1;
        let (wal, _) = Wal::open_dir(dir.path(), config.clone()).unwrap();
        let append = |next: &mut Position| {
            wal.append(&[event(*next)]).unwrap();
            *next += 1;
        };
        // Three segments: the first grew, the second was a spare of zeros and is full.
        while wal.describe().segments < 3 {
            append(&mut next);
        }
        let segments: Vec<(Position, u64)> = wal.state.lock().segments.clone();
        let (second, third) = (segments[1].0, segments[2].0);
        assert!(segments[1].1 >= 64 * 1024, "{segments:?}");
        let reused = inode(second);
        // With the full second segment waiting for its seal, no spare is asked for at a
        // quarter of the third (it would be at half).
        while wal.state.lock().segments[2].1 < 24 * 1024 {
            append(&mut next);
        }
        {
            let slot = wal.spare.slot.lock();
            assert!(!slot.wanted && slot.ready.is_none(), "a spare of zeros was asked for");
        }
        // Sealed through the second segment: the first is removed, the second becomes
        // the spare, cut to 64 KiB.
        assert_eq!(wal.remove_through(third - 1).unwrap(), 2);
        let spare = wal_dir.join(SPARE_NAME);
        assert_eq!(std::fs::metadata(&spare).unwrap().ino(), reused);
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 64 * 1024);
        assert_eq!(wal.describe().segments, 1);
        // The next rotation takes it: the fourth segment is the second's file.
        while wal.describe().segments < 2 {
            append(&mut next);
        }
        let fourth = wal.state.lock().segments[1].0;
        assert_eq!(inode(fourth), reused);
        append(&mut next);
        let last = next - 1;
        drop(wal);
        // Reopened, the fourth segment's records are read up to the second's old ones,
        // which are cut: never taken for records of the fourth.
        let base = RecoveryBase::after(&(1..third).map(|p| (*event(p)).clone()).collect::<Vec<_>>());
        let reopen =
            |base: RecoveryBase| Wal::open_after(Arc::new(RealFs), &wal_dir, config.clone(), base).unwrap();
        let (wal, report) = reopen(base.clone());
        let recovered: Vec<Position> = wal.take_recovered().iter().map(|e| e.position).collect();
        assert_eq!(recovered, (third..=last).collect::<Vec<_>>());
        assert!(report.old_bytes_cut > 0 && report.bytes_cut == report.old_bytes_cut, "{report:?}");
        assert_eq!(report.zeros_cut, 0);
        // Appends go on, and the next opening cuts nothing.
        wal.append(&[event(last + 1)]).unwrap();
        drop(wal);
        let (wal, report) = reopen(base);
        assert_eq!(wal.take_recovered().last().map(|e| e.position), Some(last + 1));
        assert_eq!(report.bytes_cut, 0, "{report:?}");
    }

    #[test]
    fn the_background_maker_preallocates_the_next_segment_on_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig { segment_bytes_max: 64 * 1024, ..WalConfig::default() };
        let spare = dir.path().join("wal").join(SPARE_NAME);
        let segment_lengths = || -> Vec<u64> {
            let mut names: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "wal"))
                .collect();
            names.sort();
            names.iter().map(|path| std::fs::metadata(path).unwrap().len()).collect()
        };
        let mut next = 1;
        {
            let (wal, _) = Wal::open_dir(dir.path(), config.clone()).unwrap();
            // A quarter of a segment: the spare is wanted.
            while wal.describe().wal_bytes < 16 * 1024 {
                wal.append(&[event(next)]).unwrap();
                next += 1;
            }
            assert!(wal.wait_for_spare());
            assert_eq!(std::fs::metadata(&spare).unwrap().len(), 64 * 1024);
            // The next write closes the growing segment early and goes into the spare,
            // which is 64 KiB from its start.
            wal.append(&[event(next)]).unwrap();
            next += 1;
            assert!(!spare.exists());
            let lengths = segment_lengths();
            assert!((16 * 1024..64 * 1024).contains(&lengths[0]) && lengths[1] == 64 * 1024, "{lengths:?}");
            // Filling it makes and takes the next spare, at its full size.
            while wal.describe().segments < 3 {
                wal.append(&[event(next)]).unwrap();
                next += 1;
            }
            let lengths = segment_lengths();
            assert!(lengths[1] >= 64 * 1024 && lengths[2] == 64 * 1024, "{lengths:?}");
            wal.append(&[event(next)]).unwrap();
            next += 1;
        }
        // Closing removed the spare it made for the next rotation, if any.
        assert!(!spare.exists());
        let (wal, report) = Wal::open_dir(dir.path(), config.clone()).unwrap();
        assert_eq!((report.events, report.bytes_cut), (next - 1, 0));
        let recovered: Vec<Position> = wal.take_recovered().iter().map(|e| e.position).collect();
        assert_eq!(recovered, (1..next).collect::<Vec<_>>());
        // Appends continue over the zeros, and survive another reopen.
        wal.append(&[event(next)]).unwrap();
        drop(wal);
        let (wal, report) = Wal::open_dir(dir.path(), config).unwrap();
        assert_eq!((report.events, report.bytes_cut), (next, 0));
        assert_eq!(wal.take_recovered().last().map(|e| e.position), Some(next));
    }
}
