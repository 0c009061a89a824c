//! The state dir and the one lock that serialises every read-modify-write of the ledger and
//! the rules; files in it are replaced atomically so a crash leaves the old or the new
//! version, never a torn one.
//!
//! Layout of `<state_dir>` (created 0700):
//! - `lock`: empty file; an exclusive fs2 lock on it is held for a command's whole
//!   read-modify-write.
//! - `ledger.json`: see [`crate::ledger`]. Written to `ledger.json.tmp` (created fresh, mode
//!   0600, never through a symlink), fsynced, renamed over the old file, and the directory
//!   fsynced. A file that does not parse is an error naming it; it is never overwritten.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ledger::{self, Ledger};

const LEDGER: &str = "ledger.json";
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
    #[error("cannot write ledger {path}; the previous ledger is intact")]
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

/// Create the state dir (0700) if needed and take the exclusive lock, waiting at most `wait`.
pub fn lock(dir: &Path, wait: Duration) -> Result<Locked, StateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
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
    let start = Instant::now();
    loop {
        match fs2::FileExt::try_lock_exclusive(&file) {
            Ok(()) => break,
            Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
                if start.elapsed() >= wait {
                    return Err(StateError::LockTimeout { path, waited: wait });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => return Err(StateError::Lock { path, source }),
        }
    }
    Ok(Locked {
        dir: dir.to_path_buf(),
        _lock: file,
    })
}

impl Locked {
    pub fn ledger_path(&self) -> PathBuf {
        self.dir.join(LEDGER)
    }

    /// Load the ledger; a missing file is an empty ledger, a corrupt one an error.
    pub fn load(&self) -> Result<Ledger, StateError> {
        let path = self.ledger_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ledger::default()),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        Ledger::from_json(&bytes).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Replace the ledger atomically.
    pub fn save(&self, ledger: &Ledger) -> Result<(), StateError> {
        write_atomic(&self.dir, LEDGER, &ledger.to_json()).map_err(|source| StateError::Write {
            path: self.ledger_path(),
            source,
        })
    }
}

/// Replace `dir/name` atomically: a fresh temp file (0600, never through a symlink), fsync,
/// rename over the old file, fsync the directory. On error the old file is intact.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(dir, name, bytes, 0o600)
}

/// [`write_atomic`] with the given permission bits.
pub fn write_atomic_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let path = dir.join(name);
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
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("state");
        let locked = lock(&sd, Duration::ZERO).unwrap();
        assert_eq!(locked.load().unwrap(), Ledger::default());
        let mut l = Ledger::default();
        l.containers
            .insert("101".parse().unwrap(), Default::default());
        locked.save(&l).unwrap();
        assert_eq!(locked.load().unwrap(), l);
        let text = std::fs::read_to_string(sd.join(LEDGER)).unwrap();
        assert_eq!(
            text,
            "{\"format\":1,\"containers\":{\"101\":{\"ips\":[],\"total\":{\"in_bytes\":0,\"out_bytes\":0,\"in_packets\":0,\"out_packets\":0,\"local_in_bytes\":0,\"local_out_bytes\":0,\"local_in_packets\":0,\"local_out_packets\":0}}}}\n"
        );
        assert!(!sd.join("ledger.json.tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sd), 0o700);
        assert_eq!(mode(&sd.join(LEDGER)), 0o600);
    }

    #[test]
    fn second_locker_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock(dir.path(), Duration::ZERO).unwrap();
        let e = lock(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, StateError::LockTimeout { .. }), "{e}");
    }

    #[test]
    fn corrupt_ledger_is_named_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let locked = lock(dir.path(), Duration::ZERO).unwrap();
        std::fs::write(locked.ledger_path(), b"{\"format\":1,\"contai").unwrap();
        let e = locked.load().unwrap_err();
        assert!(e.to_string().contains("ledger.json"), "{e}");
        assert_eq!(
            std::fs::read(locked.ledger_path()).unwrap(),
            b"{\"format\":1,\"contai"
        );
    }

    #[test]
    fn bad_ctid_ip_or_format_in_ledger_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let locked = lock(dir.path(), Duration::ZERO).unwrap();
        for text in [
            r#"{"format":1,"containers":{"../x":{"ips":[]}}}"#,
            r#"{"format":1,"containers":{"101":{"ips":["1.2.3.4;x"]}}}"#,
            r#"{"format":9,"containers":{}}"#,
            "",
        ] {
            std::fs::write(locked.ledger_path(), text).unwrap();
            let e = locked.load().unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{text}: {e}");
        }
    }

    #[test]
    fn symlinked_temp_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let sd = dir.path().join("s");
        let locked = lock(&sd, Duration::ZERO).unwrap();
        std::os::unix::fs::symlink(&victim, sd.join("ledger.json.tmp")).unwrap();
        locked.save(&Ledger::default()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
