//! The durable log of a data directory: the WAL for what is recent, sealed Parquet
//! chunks (the archive) for the rest. Appends go to the WAL; once enough committed
//! events follow the last sealed one, the engine seals them into a chunk, and the WAL
//! segments the chunk covers are removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use allsource_core_types::{Error, Event, Position};

use parking_lot::Mutex;

use crate::archive::{Archive, Checkpoint, NewCheckpoint};
use crate::columnar::EventColumns;
use crate::fs::{Fs, RealFs};
use crate::wal::{create_dir_durably, lock_data_dir};
use crate::{Log, LogInfo, Recovered, RecoveryReport, Wal, WalConfig};

/// The WAL subdirectory of a data directory.
pub const WAL_DIR: &str = "wal";

/// A data directory: sealed chunks plus the WAL tail.
pub struct DurableLog {
    wal: Wal,
    archive: Archive,
    chunk_events: u64,
    data_dir: PathBuf,
    recovered: Mutex<Option<Recovered>>,
}

impl DurableLog {
    /// Opens the data directory `data_dir` on the real file system (creating it if
    /// missing), holding its lock file, and recovers it.
    pub fn open_dir(data_dir: &Path, config: WalConfig) -> Result<(DurableLog, RecoveryReport), Error> {
        let fs = RealFs;
        create_dir_durably(&fs, data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let (mut log, report) = DurableLog::open(Arc::new(fs), data_dir, config)?;
        log.wal.hold_lock(lock, data_dir);
        Ok((log, report))
    }

    /// Opens the data directory `data_dir` of `fs` (no lock: for tests on simulated
    /// file systems), and recovers it: the archive's chunks, then the WAL after them.
    pub fn open(
        fs: Arc<dyn Fs>,
        data_dir: &Path,
        config: WalConfig,
    ) -> Result<(DurableLog, RecoveryReport), Error> {
        create_dir_durably(fs.as_ref(), data_dir)?;
        let started = std::time::Instant::now();
        let (archive, sealed, base) = Archive::open(fs.clone(), data_dir)?;
        let chunks_load_time = started.elapsed();
        let started = std::time::Instant::now();
        let chunks = archive.chunks().len() as u64;
        let archived_events = sealed.iter().map(|c| c.len() as u64).sum::<u64>();
        let chunk_events = config.chunk_events.max(1);
        let (wal, mut report) = Wal::open_after(fs, &data_dir.join(WAL_DIR), config, base)?;
        let tail = wal.take_recovered();
        report.wal_read_time = started.elapsed();
        report.chunks_load_time = chunks_load_time;
        report.chunks = chunks;
        report.archived_events = archived_events;
        report.events = archived_events + tail.len() as u64;
        let log = DurableLog {
            wal,
            archive,
            chunk_events,
            data_dir: data_dir.to_path_buf(),
            recovered: Mutex::new(Some(Recovered { sealed, tail })),
        };
        Ok((log, report))
    }
}

impl Log for DurableLog {
    fn append(&self, events: &[Arc<Event>]) -> Result<(), Error> {
        self.wal.append(events)
    }

    fn recover(&self) -> Result<Recovered, Error> {
        Ok(self.recovered.lock().take().unwrap_or_default())
    }

    fn describe(&self) -> LogInfo {
        let chunks = self.archive.chunks();
        LogInfo {
            kind: "wal+parquet",
            data_dir: Some(self.data_dir.display().to_string()),
            sealed_position: chunks.last().map_or(0, |c| c.last_position),
            chunks: chunks.len() as u64,
            chunk_bytes: chunks.iter().map(|c| c.bytes).sum(),
            ..self.wal.describe()
        }
    }

    fn chunk_events(&self) -> Option<u64> {
        Some(self.chunk_events)
    }

    fn sealed_position(&self) -> Position {
        self.archive.last_position()
    }

    fn compact(&self) -> Result<bool, Error> {
        match self.archive.compact(self.chunk_events)? {
            Some(merged) => {
                tracing::info!(chunk = %merged.file, bytes = merged.bytes, "merged small chunks");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn write_checkpoint(&self, checkpoint: NewCheckpoint) -> Result<(), Error> {
        self.archive.write_checkpoint(checkpoint)
    }

    fn read_checkpoint(&self) -> Option<Checkpoint> {
        self.archive.read_checkpoint()
    }

    fn seal(&self, events: &[Arc<Event>]) -> Result<EventColumns, Error> {
        let (entry, columns) = self.archive.seal(events)?;
        let removed = self.wal.remove_through(entry.last_position)?;
        tracing::info!(
            chunk = %entry.file,
            events = events.len(),
            bytes = entry.bytes,
            wal_segments_removed = removed,
            "sealed a chunk"
        );
        Ok(columns)
    }
}
