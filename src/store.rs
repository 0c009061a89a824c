//! The state dir and the one lock that serialises every read-modify-write of the ledger and
//! the rules; files in it are replaced atomically so a crash leaves the old or the new
//! version, never a torn one.
//!
//! Layout of `<state_dir>` (created 0700):
//! - `lock`: empty file; an exclusive fs2 lock on it is held for a command's whole
//!   read-modify-write.
//! - `ledger/`: the ledger, see [`crate::ledger_store`]. Each file is written to
//!   `<name>.tmp` (created fresh, mode 0600, never through a symlink), fsynced and renamed
//!   over the old one; a write of several files goes through the redo log `ledger/pending`
//!   first ([`commit_files`]). A file that does not parse is an error naming it; it is never
//!   overwritten.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ledger::{self, Ledger};
use crate::ledger_store;

const LOCK: &str = "lock";

/// A failure of the state dir, naming the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to use state directory {path}: {reason} (it holds the ledger: make it \
         root's and writable by no one else, e.g. chown root: and chmod 0700)"
    )]
    Unsafe { path: PathBuf, reason: String },
    #[error(
        "the ledger in {path} has an unfinished write (a command was killed while writing); \
         any changing command (`vzacct dump`) finishes it"
    )]
    Unfinished { path: PathBuf },
    #[error("cannot open lock file {path}")]
    OpenLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another vzacct command still holds the lock {path} after {waited:?}; try again later")]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read ledger {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "ledger {path} is corrupt and was left untouched; restore it from a backup, or move it \
         aside and run `vzacct sync` to start a new one (its counters are then lost)"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: ledger::FormatError,
    },
    #[error(
        "redo log {path} of an interrupted ledger write does not parse; it was left untouched: \
         move it aside and run `vzacct dump` (the ledger files are then as before that write)"
    )]
    BadRedoLog { path: PathBuf },
    #[error(
        "cannot write ledger {path}; nothing of this command is applied to the kernel (if \
         its redo log was written, the next vzacct command finishes the ledger write)"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The state dir, held locked: dropping it releases the lock.
#[derive(Debug)]
pub struct Locked {
    dir: PathBuf,
    _lock: File,
}

/// Why an existing directory that vzacct writes into is not safe to use: not root's, or
/// writable by someone else (who could plant files or symlinks in it). `None`: it is fine,
/// or does not exist.
pub fn unsafe_dir(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).ok()?;
    if m.file_type().is_symlink() {
        // Follow it: an operator may point /var/lib/vzacct elsewhere; the target must pass.
        return std::fs::metadata(dir)
            .ok()
            .and_then(|_| unsafe_dir(&dir.canonicalize().ok()?));
    }
    if !m.is_dir() {
        return Some("it is not a directory".into());
    }
    if m.uid() != 0 {
        return Some(format!("it is owned by uid {}, not root", m.uid()));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "it is writable by {} (mode {:04o})",
            if m.mode() & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            m.mode() & 0o7777
        ));
    }
    None
}

/// Take a lock on `file` with `try_lock`, retrying while another process holds it, for at
/// most `wait`.
fn wait_for(
    file: &File,
    path: &Path,
    wait: Duration,
    try_lock: fn(&File) -> std::io::Result<()>,
) -> Result<(), StateError> {
    let start = Instant::now();
    loop {
        match try_lock(file) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
                if start.elapsed() >= wait {
                    return Err(StateError::LockTimeout {
                        path: path.to_path_buf(),
                        waited: wait,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(StateError::Lock {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Create the state dir (0700) if needed and take the exclusive lock, waiting at most `wait`.
pub fn lock(dir: &Path, wait: Duration) -> Result<Locked, StateError> {
    if let Some(reason) = unsafe_dir(dir) {
        return Err(StateError::Unsafe {
            path: dir.to_path_buf(),
            reason,
        });
    }
    create_private_dir(dir)?;
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| StateError::OpenLock {
            path: path.clone(),
            source,
        })?;
    wait_for(&file, &path, wait, fs2::FileExt::try_lock_exclusive)?;
    Ok(Locked {
        dir: dir.to_path_buf(),
        _lock: file,
    })
}

impl Locked {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Load the whole ledger (see [`crate::ledger_store`]); a missing one is empty, a
    /// corrupt file an error naming it.
    pub fn load(&self) -> Result<Ledger, StateError> {
        Ok(self.load_scope(&ledger_store::Scope::All)?.0)
    }

    /// Load part or all of the ledger, with what is needed to write back what changed.
    pub fn load_scope(
        &self,
        scope: &ledger_store::Scope,
    ) -> Result<(Ledger, ledger_store::Loaded), StateError> {
        ledger_store::load(&self.dir, scope)
    }
}

/// A read-only view's hold on the state dir: a shared lock, so no command changes the
/// ledger while it is read, taken without creating anything (the state dir may be read-only,
/// or vzacct may never have been set up on this node).
#[derive(Debug)]
pub struct Shared {
    dir: PathBuf,
    _lock: Option<File>,
}

/// Take the shared lock when the lock file exists, waiting at most `wait` for a command
/// that holds it exclusively. Nothing is created.
pub fn lock_shared(dir: &Path, wait: Duration) -> Result<Shared, StateError> {
    if let Some(reason) = unsafe_dir(dir) {
        return Err(StateError::Unsafe {
            path: dir.to_path_buf(),
            reason,
        });
    }
    // A write killed half-way is finished first, as any command does, when the state dir
    // can be written; a view of a read-only one says what is missing instead.
    let ledger = dir.join(ledger_store::DIR);
    if ledger.join(PENDING).exists() {
        let finished = lock(dir, wait).and_then(|l| {
            replay_pending(&ledger)?;
            drop(l);
            Ok(())
        });
        if let Err(e) = finished {
            return Err(match e {
                StateError::LockTimeout { .. } => e,
                _ => StateError::Unfinished { path: ledger },
            });
        }
    }
    let path = dir.join(LOCK);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Shared {
                dir: dir.to_path_buf(),
                _lock: None,
            });
        }
        Err(source) => return Err(StateError::OpenLock { path, source }),
    };
    wait_for(&file, &path, wait, fs2::FileExt::try_lock_shared)?;
    Ok(Shared {
        dir: dir.to_path_buf(),
        _lock: Some(file),
    })
}

impl Shared {
    /// The whole ledger as it is on disk, without writing anything (an unfinished write
    /// is an error saying how to finish it).
    pub fn load(&self) -> Result<(Ledger, ledger_store::Loaded), StateError> {
        ledger_store::load_view(&self.dir)
    }
}

/// Create `dir` (and its parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Replace `dir/name` atomically: a fresh temp file (0600, never through a symlink), fsync,
/// rename over the old file, fsync the directory. On error the old file is intact.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(dir, name, bytes, 0o600)
}

/// [`write_atomic`] with the given permission bits.
pub fn write_atomic_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    replace_file(dir, name, bytes, mode)?;
    File::open(dir)?.sync_all()
}

/// One change of a [`commit_files`] transaction: a file of `dir` written or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    Write(String, Vec<u8>),
    Remove(String),
}

impl FileChange {
    fn name(&self) -> &str {
        match self {
            FileChange::Write(n, _) | FileChange::Remove(n) => n,
        }
    }
}

/// The redo log of a [`commit_files`] that changes more than one file.
pub const PENDING: &str = "pending";
const PENDING_MAGIC: &str = "vzacct redo log 1\n";

/// Change several files of `dir` as one: all of them or none, whatever instant a crash
/// comes. The whole change is first written to the redo log `pending` (atomically), then
/// carried out, synced, and the log removed; [`replay_pending`] finishes an interrupted one.
/// A single change needs no log.
pub fn commit_files(dir: &Path, changes: &[FileChange]) -> std::io::Result<()> {
    match changes {
        [] => Ok(()),
        [FileChange::Write(name, bytes)] => write_atomic(dir, name, bytes),
        _ => {
            replace_file_with(dir, PENDING, 0o600, |w| write_pending(w, changes))?;
            File::open(dir)?.sync_all()?;
            carry_out(dir, changes)
        }
    }
}

/// Finish the transaction a killed [`commit_files`] left in `dir`, if any. A redo log that
/// does not parse is an error naming it; it is left for the operator.
pub fn replay_pending(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(PENDING);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let changes =
        parse_pending(&bytes).ok_or_else(|| StateError::BadRedoLog { path: path.clone() })?;
    carry_out(dir, &changes).map_err(|source| StateError::Write { path, source })
}

fn carry_out(dir: &Path, changes: &[FileChange]) -> std::io::Result<()> {
    // Every new file goes to its temp name first; all are synced together, then renamed
    // over the old ones.
    let mut temps = Vec::new();
    let written = changes.iter().try_for_each(|c| {
        if let FileChange::Write(name, bytes) = c {
            temps.push((write_temp(dir, name, 0o600, |w| w.write_all(bytes))?, name));
        }
        Ok(())
    });
    let synced = written.and_then(|()| {
        let files: Vec<&File> = temps.iter().map(|((_, f), _)| f).collect();
        sync_files(&files)
    });
    if let Err(e) = synced {
        for ((tmp, _), _) in &temps {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e);
    }
    for ((tmp, _), name) in &temps {
        std::fs::rename(tmp, dir.join(name))?;
    }
    for c in changes {
        if let FileChange::Remove(name) = c {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    File::open(dir)?.sync_all()?;
    std::fs::remove_file(dir.join(PENDING))?;
    File::open(dir)?.sync_all()
}

/// Make the temp files durable. For more than a few, writeback of all of them is started
/// first and then each is fsynced, so the disk works on them together: a dump or bring-up
/// writes hundreds of bucket files (513 files: ~78 ms one fsync after another, ~33 ms so).
/// Only our files are flushed, unlike `syncfs`, which would wait for every other dirty
/// page of the file system too.
fn sync_files(files: &[&File]) -> std::io::Result<()> {
    if files.len() > 8 {
        for f in files {
            use std::os::fd::AsRawFd;
            // SAFETY: sync_file_range only reads its integer arguments, and the descriptor
            // stays open for the lifetime of `f`. Its result is ignored on purpose: it only
            // starts writeback early, and the fsync below reports any failure.
            unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }
    files.iter().try_for_each(|f| f.sync_all())
}

fn write_pending(out: &mut dyn Write, changes: &[FileChange]) -> std::io::Result<()> {
    out.write_all(PENDING_MAGIC.as_bytes())?;
    for c in changes {
        match c {
            FileChange::Write(name, bytes) => {
                writeln!(out, "W {name} {}", bytes.len())?;
                out.write_all(bytes)?;
                out.write_all(b"\n")?;
            }
            FileChange::Remove(name) => writeln!(out, "R {name}")?,
        }
    }
    out.write_all(b"END\n")
}

#[cfg(test)]
fn render_pending(changes: &[FileChange]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = write_pending(&mut out, changes);
    out
}

/// A plain file name of ours: no path separator, no dot file, nothing to escape.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_pending(bytes: &[u8]) -> Option<Vec<FileChange>> {
    let mut rest = bytes.strip_prefix(PENDING_MAGIC.as_bytes())?;
    let mut changes = Vec::new();
    loop {
        let nl = rest.iter().position(|b| *b == b'\n')?;
        let line = std::str::from_utf8(&rest[..nl]).ok()?;
        rest = &rest[nl + 1..];
        let mut words = line.split(' ');
        match (words.next()?, words.next(), words.next(), words.next()) {
            ("END", None, None, None) => return rest.is_empty().then_some(changes),
            ("R", Some(name), None, None) if safe_name(name) => {
                changes.push(FileChange::Remove(name.to_string()))
            }
            ("W", Some(name), Some(len), None) if safe_name(name) => {
                let len: usize = len.parse().ok()?;
                let body = rest.get(..len)?;
                if rest.get(len) != Some(&b'\n') {
                    return None;
                }
                changes.push(FileChange::Write(name.to_string(), body.to_vec()));
                rest = &rest[len + 1..];
            }
            _ => return None,
        }
        if changes.last().is_some_and(|c| c.name() == PENDING) {
            return None;
        }
    }
}

/// Write `dir/name` through a fresh temp file (fsynced) renamed over it; the caller syncs
/// the directory.
fn replace_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    replace_file_with(dir, name, mode, |w| w.write_all(bytes))
}

/// [`replace_file`] with the content written by `fill` (through a buffer).
fn replace_file_with(
    dir: &Path,
    name: &str,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (tmp, f) = write_temp(dir, name, mode, fill)?;
    if let Err(e) = f.sync_all() {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

/// Write `dir/<name>.tmp` (created fresh with exactly `mode`, never through a symlink), not
/// yet synced; on error nothing is left behind.
fn write_temp(
    dir: &Path,
    name: &str,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<(PathBuf, File)> {
    let tmp = dir.join(format!("{name}.tmp"));
    // A leftover temp file from a killed run is ours to replace; a symlink is not followed.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    // The umask may have taken bits away; the file gets exactly `mode`.
    let written = f
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .and_then(|()| {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut f);
            fill(&mut w)?;
            w.flush()
        });
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock(dir.path(), Duration::ZERO).unwrap();
        let e = lock(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, StateError::LockTimeout { .. }), "{e}");
    }

    #[test]
    fn state_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("state");
        let _l = lock(&sd, Duration::ZERO).unwrap();
        let mode = std::fs::metadata(&sd).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn symlinked_temp_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("f.tmp")).unwrap();
        write_atomic(dir.path(), "f", b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
    }

    fn changes() -> Vec<FileChange> {
        vec![
            FileChange::Write("a.json".into(), b"A\nwith newline\n".to_vec()),
            FileChange::Remove("gone.json".into()),
            FileChange::Write("b.json".into(), Vec::new()),
        ]
    }

    #[test]
    fn redo_log_round_trip_and_rejects() {
        let text = render_pending(&changes());
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            "vzacct redo log 1\nW a.json 15\nA\nwith newline\n\nR gone.json\nW b.json 0\n\nEND\n"
        );
        assert_eq!(parse_pending(&text), Some(changes()));
        // Torn anywhere, or a name that is a path: not a redo log.
        for cut in 0..text.len() {
            assert_eq!(parse_pending(&text[..cut]), None, "cut at {cut}");
        }
        for bad in [
            "vzacct redo log 1\nR ../x\nEND\n",
            "vzacct redo log 1\nR a/b\nEND\n",
            "vzacct redo log 1\nW pending 0\n\nEND\n",
            "vzacct redo log 1\nW a 99999999999999999999\nEND\n",
            "vzacct redo log 1\nEND\nextra",
        ] {
            assert_eq!(parse_pending(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn an_interrupted_commit_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gone.json"), b"old").unwrap();
        std::fs::write(dir.path().join("a.json"), b"old a").unwrap();
        // The log was written, then the process died before carrying it out.
        write_atomic(dir.path(), PENDING, &render_pending(&changes())).unwrap();
        replay_pending(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.json")).unwrap(),
            b"A\nwith newline\n"
        );
        assert_eq!(std::fs::read(dir.path().join("b.json")).unwrap(), b"");
        assert!(!dir.path().join("gone.json").exists());
        assert!(!dir.path().join(PENDING).exists());
        // Nothing to do the second time.
        replay_pending(dir.path()).unwrap();
    }

    #[test]
    fn a_bad_redo_log_is_named_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), b"old a").unwrap();
        std::fs::write(
            dir.path().join(PENDING),
            b"vzacct redo log 1\nW a.json 3\nxy",
        )
        .unwrap();
        let e = replay_pending(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::BadRedoLog { .. }), "{e}");
        assert!(e.to_string().contains("pending"), "{e}");
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"old a");
        assert!(dir.path().join(PENDING).exists());
    }

    #[test]
    fn a_large_commit_is_synced_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let changes: Vec<FileChange> = (0..40)
            .map(|i| FileChange::Write(format!("f{i}"), format!("{i}\n").into_bytes()))
            .collect();
        commit_files(dir.path(), &changes).unwrap();
        for i in 0..40 {
            assert_eq!(
                std::fs::read_to_string(dir.path().join(format!("f{i}"))).unwrap(),
                format!("{i}\n")
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            40,
            "no temp or log left"
        );
    }

    #[test]
    fn commit_files_writes_all_and_leaves_no_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gone.json"), b"old").unwrap();
        commit_files(dir.path(), &changes()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.json")).unwrap(),
            b"A\nwith newline\n"
        );
        assert!(!dir.path().join("gone.json").exists());
        assert!(!dir.path().join(PENDING).exists());
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.json", "b.json"]);
    }
}
