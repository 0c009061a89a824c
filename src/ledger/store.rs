//! The state dir and the one lock that serialises every read-modify-write of the ledger and
//! the rules; small files in it are replaced atomically so a crash leaves the old or the new
//! version, never a torn one.
//!
//! Layout of `<state_dir>` (created 0700):
//! - `lock`: empty file; an exclusive fs2 lock on it is held for a command's whole
//!   read-modify-write (kernel read, plan, apply), a shared one by a view.
//! - `ledger.sqlite` (and SQLite's `-wal`/`-shm` beside it): the ledger, see [`crate::ledger::db`].
//! - `ledger.migrated-<date>/`: a ledger of an earlier release, kept after its conversion.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    wait_for(&file, &path, wait, fs2::FileExt::try_lock_shared)?;
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
