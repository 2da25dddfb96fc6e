//! A simulated file system for crash and fault tests.
//!
//! It keeps each file's bytes together with how many of them are synced, and whether
//! the file's name is durable (its directory was synced after it was created). It can
//! fail the Nth mutating operation, or every write once the "disk" is full, and it can
//! produce the image a crash would leave: synced bytes kept, any prefix of the unsynced
//! bytes kept (optionally damaged, as a power loss may leave them), files whose names
//! were never made durable possibly gone. A file reads as its written bytes followed by
//! what lies beyond them on disk: the zeros a preallocation wrote, or the old bytes of a
//! file opened for writing at an earlier offset (a reused segment). Appends overwrite
//! them; a crash keeps them where it loses the appends over them.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{AppendFile, Fs};

#[derive(Debug, Clone, Default)]
struct SimFile {
    /// Follows the file through renames, as an open file does.
    id: u64,
    /// The bytes appended (the file reads as these, then `under` past their end).
    data: Vec<u8>,
    /// Synced bytes under the appends: zeros a preallocation wrote, or what the file
    /// held when it was opened at an earlier offset.
    under: Vec<u8>,
    synced_len: usize,
    name_durable: bool,
    /// The name it had before a rename that its directory has not synced yet.
    renamed_from: Option<PathBuf>,
    /// The file that rename replaced, which a crash before the directory sync brings back.
    replaced: Option<Box<SimFile>>,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<PathBuf, SimFile>,
    dirs: BTreeSet<PathBuf>,
    ops: u64,
    fail_at: Option<u64>,
    /// Every operation after this one fails and changes nothing: the process is dead.
    dead_after: Option<u64>,
    disk_full: bool,
    /// The id of the last file created.
    last_id: u64,
}

impl SimState {
    /// Counts a mutating operation and fails it if it is the chosen one.
    fn op(&mut self) -> io::Result<()> {
        self.ops += 1;
        if self.dead() {
            return Err(io::Error::other(format!("operation {} after the crash", self.ops)));
        }
        if self.fail_at == Some(self.ops) {
            return Err(io::Error::other(format!("injected fault at operation {}", self.ops)));
        }
        Ok(())
    }

    fn dead(&self) -> bool {
        self.dead_after.is_some_and(|last| self.ops > last)
    }

    /// The file an open handle refers to, wherever it has been renamed since.
    fn file_by_id(&mut self, id: u64) -> io::Result<&mut SimFile> {
        self.files.values_mut().find(|file| file.id == id).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the open file has been removed".to_string())
        })
    }
}

impl SimFile {
    /// The bytes the file reads as.
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.data.clone();
        if let Some(beyond) = self.under.get(bytes.len()..) {
            bytes.extend_from_slice(beyond);
        }
        bytes
    }
}

/// How a crash image treats unsynced bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// The process died (`kill -9`): the OS keeps every written byte.
    Process,
    /// The machine lost power: synced bytes stay, unsynced ones may be cut anywhere
    /// and the kept part may be damaged, and unsynced file names may vanish.
    Power,
}

/// A simulated file system; cheap to clone (clones share state).
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

impl SimFs {
    /// An empty file system.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Fails the `n`th mutating operation (write, sync, create, truncate, remove,
    /// directory sync) from now on, counting from 1.
    pub fn fail_operation(&self, n: u64) {
        let mut state = self.state.lock();
        state.fail_at = Some(state.ops + n);
    }

    /// Makes the process die after `n` more mutating operations: every one after them
    /// fails and changes nothing, so that the state is what a crash right after the Nth
    /// left (the code's own handling of the failures included, which a crash would
    /// never run).
    pub fn crash_after(&self, n: u64) {
        let mut state = self.state.lock();
        state.dead_after = Some(state.ops + n);
    }

    /// Makes every later write fail as on a full disk (or stops doing so).
    pub fn set_disk_full(&self, full: bool) {
        self.state.lock().disk_full = full;
    }

    /// Mutating operations done so far.
    pub fn operations(&self) -> u64 {
        self.state.lock().ops
    }

    /// The image a crash at this moment would leave, as a new file system; `seed`
    /// chooses where unsynced bytes are cut.
    pub fn crash_image(&self, kind: CrashKind, seed: u64) -> SimFs {
        let state = self.state.lock();
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut files = BTreeMap::new();
        for (path, file) in &state.files {
            let mut file = file.clone();
            let mut path = path.clone();
            if kind == CrashKind::Power {
                if !file.name_durable && rng.below(2) == 0 {
                    // The name never reached the disk: an unsynced rename is undone, an
                    // unsynced creation is gone.
                    if let Some(replaced) = file.replaced.take() {
                        files.insert(path.clone(), *replaced);
                    }
                    match file.renamed_from.take() {
                        Some(old) => path = old,
                        None => continue,
                    }
                }
                let unsynced = file.data.len() - file.synced_len;
                let kept = file.synced_len + rng.below(unsynced as u64 + 1) as usize;
                file.data.truncate(kept);
                if kept > file.synced_len && rng.below(4) == 0 {
                    let at = file.synced_len + rng.below((kept - file.synced_len) as u64) as usize;
                    file.data[at] ^= 1 + rng.below(255) as u8;
                }
            }
            file.synced_len = file.data.len();
            file.name_durable = true;
            file.renamed_from = None;
            file.replaced = None;
            files.insert(path, file);
        }
        let image =
            SimState { files, dirs: state.dirs.clone(), last_id: state.last_id, ..SimState::default() };
        SimFs { state: Arc::new(Mutex::new(image)) }
    }

    /// A file's current bytes (preallocated zeros included), for tests that damage files.
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        self.state.lock().files.get(path).map(SimFile::bytes)
    }

    /// Replaces a file's bytes (all synced), for tests that damage files.
    pub fn set_file(&self, path: &Path, data: Vec<u8>) {
        let mut state = self.state.lock();
        let id = state.files.get(path).map_or_else(|| state.last_id + 1, |file| file.id);
        state.last_id = state.last_id.max(id);
        let synced_len = data.len();
        let file = SimFile { id, data, synced_len, name_durable: true, ..SimFile::default() };
        state.files.insert(path.to_path_buf(), file);
    }

    /// The paths of every file.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.lock().files.keys().cloned().collect()
    }
}

struct SimAppendFile {
    state: Arc<Mutex<SimState>>,
    /// The [`SimFile::id`] of the file.
    id: u64,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl AppendFile for SimAppendFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let result = state.op();
        let (full, dead) = (state.disk_full, state.dead());
        let file = state.file_by_id(self.id)?;
        let failure = match result {
            Err(error) => Some(error),
            Ok(()) if full => Some(io::Error::new(io::ErrorKind::StorageFull, "no space left on device")),
            Ok(()) => None,
        };
        if let Some(error) = failure {
            // A failed write may still have written a prefix (not after a crash).
            if !dead {
                file.data.extend_from_slice(&bytes[..bytes.len() / 2]);
            }
            return Err(error);
        }
        file.data.extend_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.op()?;
        let file = state.file_by_id(self.id)?;
        file.synced_len = file.data.len();
        Ok(())
    }

    fn preallocate(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.op()?;
        if state.disk_full {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"));
        }
        let file = state.file_by_id(self.id)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if file.under.len() < len {
            file.under.resize(len, 0);
        }
        Ok(())
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.state.lock().files.get(path).map(SimFile::bytes).ok_or_else(|| not_found(path))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut state = self.state.lock();
        state.op()?;
        if state.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        state.last_id += 1;
        let id = state.last_id;
        state.files.insert(path.to_path_buf(), SimFile { id, ..SimFile::default() });
        Ok(Box::new(SimAppendFile { state: self.state.clone(), id }))
    }

    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn AppendFile>> {
        let mut state = self.state.lock();
        let file = state.files.get_mut(path).ok_or_else(|| not_found(path))?;
        // Appends go at the end of `data`: the bytes from `offset` on stay under them,
        // and the file keeps reading as them until they are overwritten.
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = file.bytes();
        if offset > bytes.len() || file.synced_len < file.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the simulation opens {} only synced, and within its bytes", path.display()),
            ));
        }
        file.data = bytes[..offset].to_vec();
        file.under = bytes;
        file.synced_len = offset;
        Ok(Box::new(SimAppendFile { state: self.state.clone(), id: file.id }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.op()?;
        let file = state.files.get_mut(path).ok_or_else(|| not_found(path))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        // What the file reads as, cut (or zero-extended, as `ftruncate` does), all synced.
        let mut bytes = file.bytes();
        bytes.resize(len, 0);
        file.data = bytes;
        file.under.clear();
        file.synced_len = len;
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.op()?;
        state.files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.op()?;
        let mut file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        if file.name_durable {
            file.renamed_from = Some(from.to_path_buf());
        }
        file.name_durable = false;
        let replaced = state.files.remove(to).filter(|old| old.name_durable);
        file.replaced = replaced.map(Box::new);
        state.files.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.op()?;
        for (path, file) in state.files.iter_mut() {
            if path.parent() == Some(dir) {
                file.name_durable = true;
                file.renamed_from = None;
                file.replaced = None;
            }
        }
        Ok(())
    }
}

/// A small deterministic generator: crash images must be reproducible from a seed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 {
            0
        } else {
            self.0 % n
        }
    }
}
