//! The persisted set of accounted containers, in the state dir, and the one lock that
//! serialises every read-modify-write of it and of the rules.
//!
//! On-disk layout of `<state_dir>`:
//! - `lock`: empty file; an exclusive fs2 lock on it is held for a command's whole
//!   read-modify-write.
//! - `ledger.json`: `{"format":1,"containers":{"<ctid>":{"ips":["10.0.0.1",...]}}}`. Written
//!   to `ledger.json.tmp` (created fresh, mode 0600, never through a symlink), fsynced, renamed
//!   over the old file, and the directory fsynced, so a crash leaves either the old or the new
//!   file, never a torn one. A file that does not parse is an error naming it; it is never
//!   overwritten by an empty ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ctid::Ctid;
use crate::ruleset::Accounted;

const FORMAT: u32 = 1;
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
         aside and run `vzacct sync` to start a new one"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("ledger {path} has format {found}, this vzacct understands format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("cannot write ledger {path}; the previous ledger is intact")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One accounted container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub ips: BTreeSet<IpAddr>,
}

/// Everything vzacct persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    pub containers: BTreeMap<Ctid, Container>,
}

impl Default for State {
    fn default() -> Self {
        State {
            format: FORMAT,
            containers: BTreeMap::new(),
        }
    }
}

impl State {
    /// The accounted containers and IPs, as planning wants them.
    pub fn accounted(&self) -> Accounted {
        self.containers
            .iter()
            .filter(|(_, c)| !c.ips.is_empty())
            .map(|(id, c)| (id.clone(), c.ips.clone()))
            .collect()
    }

    /// Which container currently owns `ip`, if any.
    pub fn owner(&self, ip: &IpAddr) -> Option<&Ctid> {
        self.containers
            .iter()
            .find(|(_, c)| c.ips.contains(ip))
            .map(|(id, _)| id)
    }
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
    pub fn load(&self) -> Result<State, StateError> {
        let path = self.ledger_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        parse(&bytes, &path)
    }

    /// Replace the ledger atomically: temp file, fsync, rename, fsync the directory.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.ledger_path();
        let tmp = self.dir.join(format!("{LEDGER}.tmp"));
        let werr = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| werr(e.into()))?;
        bytes.push(b'\n');
        // A leftover temp file from a killed run is ours to replace; a symlink is not followed.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(werr(e)),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(werr)?;
        let written = f.write_all(&bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(werr(e));
        }
        drop(f);
        std::fs::rename(&tmp, &path).map_err(werr)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)?;
        Ok(())
    }
}

/// Parse ledger bytes; `path` is used in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<State, StateError> {
    #[derive(Deserialize)]
    struct Probe {
        format: u32,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    if probe.format != FORMAT {
        return Err(StateError::Format {
            path: path.to_path_buf(),
            found: probe.format,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("state");
        let locked = lock(&sd, Duration::ZERO).unwrap();
        assert_eq!(locked.load().unwrap(), State::default());
        let mut st = State::default();
        st.containers.insert(
            "101".parse().unwrap(),
            Container {
                ips: ["10.0.0.1".parse().unwrap()].into(),
            },
        );
        locked.save(&st).unwrap();
        assert_eq!(locked.load().unwrap(), st);
        let text = std::fs::read_to_string(sd.join(LEDGER)).unwrap();
        assert_eq!(
            text,
            "{\n  \"format\": 1,\n  \"containers\": {\n    \"101\": {\n      \"ips\": [\n        \"10.0.0.1\"\n      ]\n    }\n  }\n}\n"
        );
        assert!(!sd.join("ledger.json.tmp").exists());
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
    fn bad_ctid_or_ip_in_ledger_is_corrupt() {
        for text in [
            r#"{"format":1,"containers":{"../x":{"ips":[]}}}"#,
            r#"{"format":1,"containers":{"101":{"ips":["1.2.3.4;x"]}}}"#,
        ] {
            assert!(matches!(
                parse(text.as_bytes(), Path::new("/l")),
                Err(StateError::Corrupt { .. })
            ));
        }
        assert!(matches!(
            parse(br#"{"format":9}"#, Path::new("/l")),
            Err(StateError::Format { found: 9, .. })
        ));
    }

    #[test]
    fn symlinked_temp_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let sd = dir.path().join("s");
        let locked = lock(&sd, Duration::ZERO).unwrap();
        std::os::unix::fs::symlink(&victim, sd.join("ledger.json.tmp")).unwrap();
        locked.save(&State::default()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
