//! The file-system operations the WAL needs, behind a small trait, so that a simulated
//! backend ([`crate::sim::SimFs`]) can fail any operation and produce the disk image a
//! crash would leave.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

/// The file-system operations of the storage layer. Paths are full paths.
pub trait Fs: Send + Sync {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// A whole file's bytes.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates a new, empty file for appending; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Opens an existing file for appending at byte `offset`, which may lie before its
    /// end: the bytes from there on are overwritten as the appends reach them.
    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn AppendFile>>;
    /// Cuts a file to `len` bytes and syncs it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists (atomically, as rename(2) does).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes a directory's entries (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for appending. It keeps its own write offset (the end of the last
/// append), which stays with the file when it is renamed.
pub trait AppendFile: Send {
    /// Appends all of `bytes` at the write offset.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes the file at least `len` bytes long by writing zeros after its end, and
    /// syncs them; the write offset stays where it is. Appends over those zeros then
    /// change neither the file's size nor its block map, so their `fdatasync` writes
    /// the data and flushes, without the inode write that a growing file needs (about
    /// half the time of a sync that grows the file, on this project's test machine).
    fn preallocate(&mut self, len: u64) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

/// A real file, written at its cursor (not opened for appending, so that appends can
/// go over the zeros of a preallocated file).
struct RealFile(File);

/// The zeros [`AppendFile::preallocate`] writes at a time.
const ZEROS_PER_WRITE: usize = 1 << 20;

impl AppendFile for RealFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn preallocate(&mut self, len: u64) -> io::Result<()> {
        // Written, not `fallocate`d: blocks allocated but unwritten still need their
        // extents converted, an inode write, when data first lands in them. Synced a
        // piece at a time, so that another file's sync never waits behind the
        // writeback of the whole file.
        let offset = self.0.stream_position()?;
        let mut end = self.0.seek(SeekFrom::End(0))?;
        let zeros = vec![0u8; ZEROS_PER_WRITE];
        while end < len {
            let n = usize::try_from(len - end).map_or(ZEROS_PER_WRITE, |left| left.min(ZEROS_PER_WRITE));
            self.0.write_all(&zeros[..n])?;
            self.0.sync_data()?;
            end += n as u64;
        }
        self.0.seek(SeekFrom::Start(offset))?;
        Ok(())
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn AppendFile>> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(RealFile(file)))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
