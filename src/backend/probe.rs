//! What the installed netfilter tools can do, found by trying them, never read from a version
//! string (RHEL 7's iptables and plain 1.4.21 both say "v1.4.21" and lock differently):
//!
//! - whether `ipset` can create a set with `counters comment` (the ipset backend needs both;
//!   ipset 6.11 of RHEL 6 has neither), by creating and destroying a throw-away set named
//!   `vzacct-probe-<pid>`;
//! - how `iptables-restore` is kept from racing another iptables command: its own bounded
//!   wait (`-w SECONDS`), or else the lock the installed `iptables` takes (a flock on
//!   `/run/xtables.lock`, or the abstract socket `@xtables` of the network namespace), which
//!   vzacct then takes itself around the restore, or no lock at all (iptables 1.4.7).
//!
//! The answers are kept in `<state_dir>/probes.json` for the rest of the boot, so a hook does
//! not pay for them. Its layout:
//!
//! ```json
//! { "boot_id": "…",
//!   "ipset":   { "/sbin/ipset": { "usable": false, "why": "ipset v6.11: Unknown argument: `counters'" } },
//!   "restore": { "/sbin/iptables-restore /sbin/iptables /run/xtables.lock": "bounded" } }
//! ```
//!
//! A file of another boot is ignored and replaced; a file that cannot be read or written is
//! only a missed cache.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::process;

/// The lock file of iptables 1.6 and later (and of RHEL 7's 1.4.21).
pub const XTABLES_LOCK: &str = "/run/xtables.lock";
/// The abstract unix socket name of upstream iptables 1.4.21's lock (one per network
/// namespace).
pub const XTABLES_SOCKET: &[u8] = b"xtables";
/// The cache file in the state directory.
pub const FILE: &str = "probes.json";

/// How an `iptables-restore` run is kept from racing other iptables commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreLock {
    /// `iptables-restore -w SECONDS` waits for the xtables lock and gives up in time.
    Bounded,
    /// The restore does not wait by itself; the installed `iptables` takes a flock on this
    /// file, and so does vzacct around the restore.
    Flock(PathBuf),
    /// The restore does not lock; the installed `iptables` binds the abstract unix socket
    /// `@xtables` of the network namespace, and so does vzacct around the restore.
    AbstractSocket,
    /// Neither the restore nor `iptables` lock (iptables 1.4.7).
    None,
}

impl RestoreLock {
    /// In words, for `check`.
    pub fn describe(&self) -> String {
        match self {
            RestoreLock::Bounded => "waits for the xtables lock itself (-w SECONDS)".into(),
            RestoreLock::Flock(p) => format!(
                "no bounded wait; vzacct takes iptables' lock file {} around it",
                p.display()
            ),
            RestoreLock::AbstractSocket => {
                "no lock of its own; vzacct takes iptables' lock socket @xtables around it".into()
            }
            RestoreLock::None => "no xtables lock on this iptables".into(),
        }
    }
}

/// Whether the ipset program can hold the ipset backend's sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsetSupport {
    pub usable: bool,
    /// Why not, in the tool's words (one line).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    boot_id: String,
    #[serde(default)]
    ipset: BTreeMap<String, IpsetSupport>,
    #[serde(default)]
    restore: BTreeMap<String, RestoreLock>,
}

/// The probes of one command: answered from the boot's cache, or by trying and then cached.
#[derive(Debug)]
pub struct Probes {
    /// Where the cache lives; `None`: neither read nor written (fresh answers).
    dir: Option<PathBuf>,
    /// Write new answers to the cache (read-only commands do not).
    persist: bool,
    lock_path: PathBuf,
    cache: Mutex<Cache>,
}

impl Probes {
    /// Probes cached in `state_dir` for `boot_id`. The lock file is `/run/xtables.lock`
    /// unless `VZACCT_XTABLES_LOCK` names another (for tests).
    pub fn cached(state_dir: &Path, boot_id: &str, persist: bool) -> Probes {
        let cache = std::fs::read(state_dir.join(FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Cache>(&b).ok())
            .filter(|c| c.boot_id == boot_id)
            .unwrap_or_else(|| Cache {
                boot_id: boot_id.to_string(),
                ..Cache::default()
            });
        Probes {
            dir: Some(state_dir.to_path_buf()),
            persist,
            lock_path: default_lock_path(),
            cache: Mutex::new(cache),
        }
    }

    /// Probes answered by trying, with no cache.
    pub fn fresh() -> Probes {
        Probes {
            dir: None,
            persist: false,
            lock_path: default_lock_path(),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Whether `ipset` can create and destroy a set with counters and comments.
    pub fn ipset(&self, ipset: &str) -> IpsetSupport {
        if let Some(s) = self.lock_cache().ipset.get(ipset) {
            return s.clone();
        }
        let s = probe_ipset(ipset);
        let mut c = self.lock_cache();
        c.ipset.insert(ipset.to_string(), s.clone());
        self.save(&c);
        s
    }

    /// How to keep `restore` from racing the installed `iptables`.
    pub fn restore_lock(&self, restore: &str, iptables: &str) -> RestoreLock {
        let key = format!("{restore} {iptables} {}", self.lock_path.display());
        if let Some(l) = self.lock_cache().restore.get(&key) {
            return l.clone();
        }
        let (lock, conclusive) = probe_restore_lock(restore, iptables, &self.lock_path);
        if conclusive {
            let mut c = self.lock_cache();
            c.restore.insert(key, lock.clone());
            self.save(&c);
        }
        lock
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Best effort: a cache that cannot be written is probed again next time.
    fn save(&self, cache: &Cache) {
        let Some(dir) = self.dir.as_deref().filter(|_| self.persist) else {
            return;
        };
        if cache.boot_id.is_empty() || !dir.is_dir() {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec_pretty(cache) {
            let _ = crate::atomic::write_atomic(dir, FILE, &bytes);
        }
    }
}

fn default_lock_path() -> PathBuf {
    std::env::var_os("VZACCT_XTABLES_LOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(XTABLES_LOCK))
}

/// The longest any one probe may take.
const PROBE_TIME: Duration = Duration::from_secs(2);

/// Create and destroy `vzacct-probe-<pid>` with counters and comments.
pub fn probe_ipset(ipset: &str) -> IpsetSupport {
    let name = format!(
        "{}probe-{}",
        crate::backend::ipset::PREFIX,
        std::process::id()
    );
    let args = [
        "create", &name, "hash:ip", "family", "inet", "counters", "comment", "-exist",
    ];
    let run = |args: &[&str]| {
        process::checked(
            ipset,
            args,
            process::run_any_for(ipset, args, None, PROBE_TIME)?,
        )
    };
    if let Err(e) = run(&args) {
        return IpsetSupport {
            usable: false,
            why: tool_reason(&e),
        };
    }
    match run(&["destroy", &name]) {
        Ok(_) => IpsetSupport {
            usable: true,
            why: String::new(),
        },
        Err(e) => IpsetSupport {
            usable: false,
            why: format!("cannot destroy the probe set {name}: {}", tool_reason(&e)),
        },
    }
}

/// The line of a failed tool's message that says what is wrong (not ipset's "Try `ipset
/// help'" nor 6.11's protocol-version preamble); the whole error when it did not run.
fn tool_reason(e: &process::ProcessError) -> String {
    match e {
        process::ProcessError::Failed { stderr, .. } => stderr
            .lines()
            .map(str::trim)
            .rfind(|l| {
                !l.is_empty() && !l.starts_with("Try `") && !l.contains("Kernel support protocol")
            })
            .unwrap_or(stderr)
            .to_string(),
        // The error and its causes on one line (the crate's error type is above us).
        other => std::iter::successors(Some(other as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": "),
    }
}

/// Whether a tool's message says the xtables lock is held.
pub fn lock_held_message(stderr: &str) -> bool {
    stderr.contains("xtables lock")
}

/// How `restore` is kept from racing `iptables`, and whether the answer is sure (a lock that
/// someone else held during the probe leaves it unsure: asked again next time).
///
/// 1. `restore -w 1 --test` of an empty table succeeds where a bounded wait exists (RHEL 7's
///    1.4.21, 1.6.2 and later); 1.4.x takes the `1` for a file and fails.
/// 2. Otherwise, which lock the installed `iptables` takes: holding a candidate, `iptables
///    -S INPUT` fails with "...holding the xtables lock..." if it is that one. When it fails
///    so before anything is held, someone holds its lock now: the candidate that cannot be
///    taken is the one (unsure).
pub fn probe_restore_lock(restore: &str, iptables: &str, lock_path: &Path) -> (RestoreLock, bool) {
    // A probe is a quick question: it never takes more than PROBE_TIME of a hook's budget
    // (`-w 1` waits one second at most for a held lock), so a tool that hangs is left for
    // the real run to meet, and to name, at its deadline.
    match process::run_any_for(
        restore,
        &["-w", "1", "--test"],
        Some(b"*filter\nCOMMIT\n"),
        PROBE_TIME,
    ) {
        Ok((status, out)) if status.success() || lock_held_message(&out.stderr) => {
            return (RestoreLock::Bounded, true);
        }
        _ => {}
    }
    let refused = || match process::run_any_for(iptables, &["-S", "INPUT"], None, PROBE_TIME) {
        Ok((status, out)) => !status.success() && lock_held_message(&out.stderr),
        Err(_) => false,
    };
    // Someone holds iptables' lock now: it is the candidate that cannot be taken.
    let busy_now = refused();
    // Each candidate taken as vzacct takes it: one that cannot be made (a lock file that
    // cannot be opened, a socket that cannot be bound) is not the one.
    for candidate in [
        RestoreLock::Flock(lock_path.to_path_buf()),
        RestoreLock::AbstractSocket,
    ] {
        match take(&candidate, Duration::ZERO) {
            Ok(Held::Nothing) => {}
            Ok(held) => {
                let uses = !busy_now && refused();
                drop(held);
                if uses {
                    return (candidate, true);
                }
            }
            // Someone holds it: some program on this node locks that way.
            Err(_) => return (candidate, false),
        }
    }
    // Refused while neither candidate was held by anyone: a lock this probe does not know,
    // asked again next time.
    (RestoreLock::None, !busy_now)
}

/// The lock file, created if missing, as iptables itself does (an unused file harms no
/// version).
fn open_lock(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn bind_abstract() -> std::io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(XTABLES_SOCKET)?;
    UnixListener::bind_addr(&addr)
}

/// The xtables lock, held by vzacct (released on drop).
#[derive(Debug)]
pub enum Held {
    Flock(File),
    Socket(UnixListener),
    Nothing,
}

/// The lock someone else held past the time there was to wait.
#[derive(Debug, thiserror::Error)]
#[error("another program held {what} for {} s", .waited.as_secs_f64().ceil())]
pub struct LockBusy {
    pub what: String,
    pub waited: Duration,
}

/// Take the lock `lock` names, trying every 50 ms for up to `wait`.
pub fn take(lock: &RestoreLock, wait: Duration) -> Result<Held, LockBusy> {
    let started = Instant::now();
    let busy = |what: String| LockBusy {
        what,
        waited: started.elapsed(),
    };
    loop {
        let attempt = match lock {
            RestoreLock::Bounded | RestoreLock::None => return Ok(Held::Nothing),
            RestoreLock::Flock(path) => match open_lock(path) {
                // A lock file that cannot be opened is one no iptables can take either.
                Err(_) => return Ok(Held::Nothing),
                Ok(f) => match fs2::FileExt::try_lock_exclusive(&f) {
                    Ok(()) => Some(Held::Flock(f)),
                    Err(_) => None,
                },
            },
            RestoreLock::AbstractSocket => match bind_abstract() {
                Ok(s) => Some(Held::Socket(s)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
                Err(_) => return Ok(Held::Nothing),
            },
        };
        if let Some(h) = attempt {
            return Ok(h);
        }
        if started.elapsed() >= wait {
            return Err(busy(match lock {
                RestoreLock::Flock(p) => format!("the xtables lock {}", p.display()),
                _ => "the xtables lock (socket @xtables of this network namespace)".into(),
            }));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    /// iptables 1.6.0/1.6.1: `iptables` flocks the lock file, `iptables-restore` neither
    /// waits nor locks. Faked by scripts that behave so.
    #[test]
    fn a_restore_without_wait_takes_the_lock_file_iptables_uses() {
        let d = tempfile::tempdir().unwrap();
        let lock = d.path().join("xtables.lock");
        std::fs::write(&lock, "").unwrap();
        let restore = script(
            d.path(),
            "iptables-restore",
            "echo \"iptables-restore: invalid option -- 'w'\" >&2; echo \"Can't open 1\" >&2; exit 1",
        );
        let iptables = script(
            d.path(),
            "iptables",
            &format!(
                "flock -n {} true || {{ echo 'Another app is currently holding the xtables lock. Perhaps you want to use the -w option?' >&2; exit 4; }}",
                lock.display()
            ),
        );
        let (l, sure) = probe_restore_lock(&restore, &iptables, &lock);
        assert_eq!((l.clone(), sure), (RestoreLock::Flock(lock.clone()), true));
        // Held by vzacct, it is busy for another taker, and free again after the drop.
        let held = take(&l, Duration::from_millis(10)).unwrap();
        assert!(matches!(held, Held::Flock(_)));
        let other = File::open(&lock).unwrap();
        assert!(fs2::FileExt::try_lock_exclusive(&other).is_err());
        let started = Instant::now();
        let again = take(&l, Duration::from_millis(300));
        let e = again.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            e.to_string()
                .starts_with("another program held the xtables lock"),
            "{e}"
        );
        drop(held);
        assert!(take(&l, Duration::ZERO).is_ok());
    }

    #[test]
    fn a_restore_with_a_bounded_wait_needs_nothing_more() {
        let d = tempfile::tempdir().unwrap();
        let restore = script(
            d.path(),
            "iptables-restore",
            "[ \"$1 $2\" = '-w 1' ] && cat >/dev/null",
        );
        let iptables = script(d.path(), "iptables", "exit 0");
        let got = probe_restore_lock(&restore, &iptables, &d.path().join("none"));
        assert_eq!(got, (RestoreLock::Bounded, true));
        let plain = script(d.path(), "r2", "exit 1");
        // The abstract socket is the network namespace's: another test run on this host
        // may hold it, which the probe rightly reports.
        let free = bind_abstract().is_ok();
        let got = probe_restore_lock(&plain, &iptables, &d.path().join("none"));
        if free {
            assert_eq!(got, (RestoreLock::None, true));
        } else {
            assert_eq!(got, (RestoreLock::AbstractSocket, false));
        }
    }

    /// The literal message of ipset 6.11 (tests/fixtures/oldtools/ipset-6.11-probe.txt).
    #[test]
    fn ipset_6_11_says_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let fixture = include_str!("../../tests/fixtures/oldtools/ipset-6.11-probe.txt");
        let msg: String = fixture
            .lines()
            .filter(|l| !l.starts_with("rc="))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(d.path().join("msg"), &msg).unwrap();
        let ipset = script(
            d.path(),
            "ipset",
            &format!("cat {} >&2; exit 2", d.path().join("msg").display()),
        );
        let s = probe_ipset(&ipset);
        assert!(!s.usable);
        assert_eq!(s.why, "ipset v6.11: Unknown argument: `counters'");
        let ok = script(d.path(), "ipset-ok", "exit 0");
        assert!(probe_ipset(&ok).usable);
        let missing = probe_ipset("/nonexistent/ipset");
        assert!(
            !missing.usable && missing.why.contains("not found"),
            "{}",
            missing.why
        );
    }

    #[test]
    fn answers_are_cached_per_boot() {
        let d = tempfile::tempdir().unwrap();
        let ok = script(d.path(), "ipset", "echo run >> $(dirname $0)/runs");
        let p = Probes::cached(d.path(), "boot-1", true);
        assert!(p.ipset(&ok).usable);
        let p = Probes::cached(d.path(), "boot-1", true);
        assert!(p.ipset(&ok).usable);
        let runs = || {
            std::fs::read_to_string(d.path().join("runs"))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(runs(), 2, "create and destroy, once");
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert!(text.contains("\"boot-1\""), "{text}");
        let p = Probes::cached(d.path(), "boot-2", false);
        assert!(p.ipset(&ok).usable);
        assert_eq!(runs(), 4, "a new boot probes again");
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert!(text.contains("\"boot-1\""), "read-only: not written");
    }
}
