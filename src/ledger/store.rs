//! The state dir and the one lock that serialises every read-modify-write of the ledger and
//! the rules.
//!
//! Layout of `<state_dir>` (created 0700):
//! - `lock`: empty file; an exclusive fs2 lock on it is held for a command's whole
//!   read-modify-write (kernel read, plan, apply), a shared one by a view.
//! - `ledger.sqlite` (and SQLite's `-wal`/`-shm` beside it): the ledger, see [`crate::ledger::db`].
//! - `ledger.migrated-<date>/`: a ledger of an earlier release, kept after its conversion.
//! - `probes.json`: what the installed iptables and ipset can do, for this boot
//!   ([`crate::backend::probe`]).
//! - `thresholds/`: the lock, receipt and failure note of each threshold action
//!   ([`crate::commands::quota`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::ledger::Ledger;
use crate::ledger::db::{self, Loaded, Scope};
use crate::ledger::legacy;

const LOCK: &str = "lock";

pub use crate::ledger::db::StateError;

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

/// Take a lock on `file` (`how`: exclusive or shared), waiting at most `wait` while another
/// process holds it. The wait blocks in the kernel (a thread takes the lock on a duplicate
/// of the descriptor, which shares the lock with `file`), so a waiter gets the lock as soon
/// as it is free instead of at its next poll, where a command that just arrived could take
/// it first (under steady load, polling every 20 ms left some hooks waiting ten turns).
/// Given up at `wait`: the thread, if it gets the lock later, lets it go at once.
fn wait_for(file: &File, path: &Path, wait: Duration, how: Lock) -> Result<(), StateError> {
    let failed = |source| StateError::Lock {
        path: path.to_path_buf(),
        source,
    };
    let timed_out = || StateError::LockTimeout {
        path: path.to_path_buf(),
        waited: wait,
    };
    type Take = fn(&File) -> std::io::Result<()>;
    let (try_lock, lock): (Take, Take) = match how {
        Lock::Exclusive => (
            fs2::FileExt::try_lock_exclusive,
            fs2::FileExt::lock_exclusive,
        ),
        Lock::Shared => (fs2::FileExt::try_lock_shared, fs2::FileExt::lock_shared),
    };
    match try_lock(file) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => {}
        Err(source) => return Err(failed(source)),
    }
    if wait.is_zero() {
        return Err(timed_out());
    }
    let waiter = file.try_clone().map_err(failed)?;
    // (given up, the waiting thread's result): both read and written under the mutex, so the
    // lock is either handed over or let go, never kept by a command that gave up.
    let state = Arc::new((Mutex::new((false, None)), Condvar::new()));
    let theirs = state.clone();
    std::thread::spawn(move || {
        let got = lock(&waiter);
        let (m, cv) = &*theirs;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 {
            if got.is_ok() {
                let _ = fs2::FileExt::unlock(&waiter);
            }
        } else {
            s.1 = Some(got);
            cv.notify_one();
        }
    });
    let (m, cv) = &*state;
    let s = m.lock().unwrap_or_else(|p| p.into_inner());
    let (mut s, _) = cv
        .wait_timeout_while(s, wait, |s| s.1.is_none())
        .unwrap_or_else(|p| p.into_inner());
    match s.1.take() {
        Some(Ok(())) => Ok(()),
        Some(Err(source)) => Err(failed(source)),
        None => {
            s.0 = true;
            Err(timed_out())
        }
    }
}

/// Which lock [`wait_for`] takes.
#[derive(Debug, Clone, Copy)]
enum Lock {
    Exclusive,
    Shared,
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
    let file = open_lock_file(&path).map_err(|source| StateError::OpenLock {
        path: path.clone(),
        source,
    })?;
    wait_for(&file, &path, wait, Lock::Exclusive)?;
    Ok(Locked {
        dir: dir.to_path_buf(),
        _lock: file,
    })
}

impl Locked {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Load the whole ledger; a missing one is empty, a corrupt one an error naming it.
    pub fn load(&self) -> Result<Ledger, StateError> {
        Ok(self.load_scope(&Scope::All)?.0)
    }

    /// Load part or all of the ledger, with what is needed to write back what changed
    /// (converting a ledger of an earlier release first).
    pub fn load_scope(&self, scope: &Scope) -> Result<(Ledger, Loaded), StateError> {
        db::load(&self.dir, scope)
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
    // A ledger of an earlier release is converted first, as any command does, when the
    // state dir can be written; a view of a read-only one says what is missing instead.
    // Old files left by a conversion killed after the database was in place are moved
    // aside the same way, if the state dir allows it (the database is the ledger anyway).
    let must = db::needs_conversion(dir);
    if must || legacy::present(dir) {
        let converted = lock(dir, wait).and_then(|l| {
            db::load(dir, &Scope::All)?;
            drop(l);
            Ok(())
        });
        if let Err(e) = converted.or_else(|e| if must { Err(e) } else { Ok(()) }) {
            return Err(match e {
                StateError::LockTimeout { .. } | StateError::Corrupt { .. } => e,
                _ => StateError::Unfinished {
                    path: dir.to_path_buf(),
                },
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
    wait_for(&file, &path, wait, Lock::Shared)?;
    Ok(Shared {
        dir: dir.to_path_buf(),
        _lock: Some(file),
    })
}

impl Shared {
    /// The whole ledger as it is on disk, without writing or creating anything.
    pub fn load(&self) -> Result<(Ledger, Loaded), StateError> {
        db::load_view(&self.dir)
    }

    /// Read what is accounted and parked only ([`db::Parts::Accounted`]).
    pub fn load_accounted(&self) -> Result<Ledger, StateError> {
        Ok(db::load_view_parts(&self.dir, db::Parts::Accounted)?.0)
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

/// Open (creating, 0600, never through a symlink) a file that is only ever locked.
pub(crate) fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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
}
