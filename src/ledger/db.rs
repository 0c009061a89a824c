//! The ledger on disk: one SQLite database, `<state_dir>/ledger.sqlite` (WAL mode,
//! `synchronous=FULL`, file 0600), so that a command's write lands whole or not at all and
//! an event about one container reads and writes only that container's rows. The caller
//! holds the state dir's lock ([`crate::ledger::store`]); every write is one transaction.
//!
//! Schema, version 5 (`PRAGMA user_version`; version 1 lacked `generations`, 2 `cycle_days`,
//! 3 `quotas` and `thresholds`, 4 the free figures). Figures are the twelve counters of
//! [`crate::ledger::Figures`] as columns `in_bytes out_bytes in_packets out_packets
//! local_in_bytes local_out_bytes local_in_packets local_out_packets free_in_bytes
//! free_out_bytes free_in_packets free_out_packets` (written `<figures>`
//! below; in `containers` prefixed `total_` and `month_`). Counters are 64-bit unsigned in
//! the ledger and stored as SQLite's signed integers: a value above 2^63-1 (8 EiB, never
//! seen in practice) reads back as negative in `sqlite3`. Times are RFC 3339 text, days
//! `YYYY-MM-DD`, months `YYYY-MM`.
//! ```text
//! node        (id = 1, boot_id, backend, last_dump_at, last_dump_ms)      one row, written by every full run
//! generations (scope PRIMARY KEY, generation, applied)  the number vzacct last wrote into each
//!             table (`rules4`, `rules6`) and set of its own (by name), and the last one it
//!             found there (a batch killed before it ran leaves them apart)
//! containers  (ctid PRIMARY KEY, total_since, last_closed, month, month_<figures>, total_<figures>)
//! ips         (ctid, ip)      the IPs a container accounts now
//! parked      (ctid, ip)      IPs a hook stopped accounting, elements left for the next full run
//! counters    (ctid, backend 'rule'|'set', family 4|6, kind forward_in|forward_out|local_in|local_out,
//!              ip, element: the interface of a rule ('' for none) or the set name, packets, bytes)
//!             the last-seen value of each kernel counter (valid within node.boot_id)
//! by_ip       (ctid, ip, <figures>)          totals since total_since, per address
//! open_days   (ctid PRIMARY KEY, date, <figures>)   the open day
//! days        (ctid, date, <figures>)        closed days (the CSV's rows), kept HISTORY_DAYS
//! holders     (ip, ctid) UNIQUE               containers accounting an IP or holding a counter for it
//! all_days    view: days plus open_days, with a column `open` (1 for the open day)
//! cycle_days  (ctid, cycle_day_from, cycle_day)  a container's own cycle day (1..28), in
//!             force from that date (a period boundary) on; see [`crate::ledger::billing`]
//! quotas      (ctid PRIMARY KEY, quota_bytes, direction 'in'|'out'|'total')  a container's quota
//! thresholds  (ctid, period_start, threshold, period_end, direction, used_bytes, quota_bytes,
//!              state 'running'|'failed'|'done', attempts, first_at, last_at, last_error)
//!             the action of each threshold crossed in a period; see [`crate::ledger::thresholds`];
//!             a period's records go with the last of its days in `days`
//! ```
//! A missing database is an empty ledger; a node still on a format of an earlier release
//! (the `ledger/` directory, or `ledger.json`) is converted by the first command that may
//! write ([`legacy`]).

use crate::ledger::legacy;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::ctid::Ctid;
use crate::ledger::{Container, Day, Figures, LastDump, Ledger, Month, Row};
use crate::model::{CounterId, Counters, Family, Kind};
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
        "the ledger in {path} is in the format of an earlier release and this view cannot \
         convert it (the state directory is read-only, or busy); any changing command \
         (`vzacct dump`) converts it"
    )]
    Unfinished { path: PathBuf },
    #[error("cannot open lock file {path}")]
    OpenLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another vzacct command still holds the lock {path} after {waited:?}; try again later")]
    LockTimeout {
        path: PathBuf,
        waited: std::time::Duration,
    },
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
        "ledger {path} is corrupt and was left untouched; restore it from a backup, or run \
         `vzacct repair` to move it aside and start again from the kernel's counters"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: crate::ledger::FormatError,
    },
    #[error(
        "redo log {path} of an interrupted ledger write does not parse; it was left untouched: \
         move it aside and run `vzacct dump` (the ledger files are then as before that write)"
    )]
    BadRedoLog { path: PathBuf },
    #[error("cannot write ledger {path}; nothing of this command is applied to the kernel")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The database file in the state dir.
pub const FILE: &str = "ledger.sqlite";
/// The schema version this vzacct reads and writes.
pub const VERSION: i32 = 5;
/// Closed days older than this are dropped from `days` (the CSV keeps every row), and the
/// `thresholds` records of the periods that ended before them, unless [`Loaded::keep_days`]
/// says otherwise (`history_days` of the config).
pub const HISTORY_DAYS: u64 = 800;

const FIGS: [&str; crate::ledger::FIGURES] = [
    "in_bytes",
    "out_bytes",
    "in_packets",
    "out_packets",
    "local_in_bytes",
    "local_out_bytes",
    "local_in_packets",
    "local_out_packets",
    "free_in_bytes",
    "free_out_bytes",
    "free_in_packets",
    "free_out_packets",
];

/// The figures version 5 added (free networks).
const FREE_FIGS: [&str; 4] = [
    "free_in_bytes",
    "free_out_bytes",
    "free_in_packets",
    "free_out_packets",
];

/// The statements that take a version 4 database to version 5: the free figures, as
/// columns of every table of figures (zero for what was counted before), and the view of
/// all days again.
/// A column already there (a version 5 database whose version number was set back) is
/// left as it is.
fn add_free_figures(conn: &Connection) -> rusqlite::Result<String> {
    let mut sql = String::new();
    for (table, prefixes) in [
        ("containers", &["month_", "total_"][..]),
        ("by_ip", &[""][..]),
        ("open_days", &[""][..]),
        ("days", &[""][..]),
    ] {
        let mut st = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let have: BTreeSet<String> = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for prefix in prefixes {
            for f in FREE_FIGS
                .iter()
                .filter(|f| !have.contains(&format!("{prefix}{f}")))
            {
                sql.push_str(&format!(
                    "ALTER TABLE {table} ADD COLUMN {prefix}{f} INTEGER NOT NULL DEFAULT 0;\n"
                ));
            }
        }
    }
    sql.push_str("DROP VIEW all_days;\n");
    sql.push_str(&all_days_view(""));
    Ok(sql)
}

/// The view of closed and open days (`temp.` for a view over an older database).
fn all_days_view(schema: &str) -> String {
    let fl = figs("", "");
    format!(
        "CREATE VIEW {schema}all_days AS
           SELECT ctid, date, 0 AS open, {fl} FROM days
           UNION ALL SELECT ctid, date, 1 AS open, {fl} FROM open_days;\n"
    )
}

/// For a view of a database older than version 5, opened read-only: temporary views that
/// stand in for the tables of figures, with the free figures as zero (nothing was counted
/// apart then). Unqualified names find them before the tables.
fn free_figures_as_zero() -> String {
    let zero = |prefix: &str| FREE_FIGS.map(|f| format!("0 AS {prefix}{f}")).join(", ");
    let mut sql = String::new();
    for (table, extra) in [
        (
            "containers",
            format!("{}, {}", zero("month_"), zero("total_")),
        ),
        ("by_ip", zero("")),
        ("open_days", zero("")),
        ("days", zero("")),
    ] {
        sql.push_str(&format!(
            "CREATE TEMP VIEW {table} AS SELECT *, {extra} FROM main.{table};\n"
        ));
    }
    sql.push_str(&all_days_view("temp."));
    sql
}

fn figs(prefix: &str, ty: &str) -> String {
    FIGS.map(|f| format!("{prefix}{f}{ty}")).join(", ")
}

fn schema() -> String {
    let f = figs("", " INTEGER NOT NULL DEFAULT 0");
    format!(
        "CREATE TABLE node (id INTEGER PRIMARY KEY CHECK (id = 1), boot_id TEXT, backend TEXT,
           last_dump_at TEXT, last_dump_ms INTEGER);
         CREATE TABLE generations (scope TEXT PRIMARY KEY, generation INTEGER NOT NULL,
           applied INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
         CREATE TABLE containers (ctid TEXT PRIMARY KEY, total_since TEXT, last_closed TEXT,
           month TEXT, {}, {}) WITHOUT ROWID;
         CREATE TABLE ips (ctid TEXT NOT NULL, ip TEXT NOT NULL, PRIMARY KEY (ctid, ip))
           WITHOUT ROWID;
         CREATE TABLE parked (ctid TEXT NOT NULL, ip TEXT NOT NULL, PRIMARY KEY (ctid, ip))
           WITHOUT ROWID;
         CREATE TABLE counters (ctid TEXT NOT NULL, backend TEXT NOT NULL
             CHECK (backend IN ('rule', 'set')), family INTEGER NOT NULL CHECK (family IN (4, 6)),
           kind TEXT NOT NULL, ip TEXT NOT NULL, element TEXT NOT NULL,
           packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
           PRIMARY KEY (ctid, backend, kind, ip, element)) WITHOUT ROWID;
         CREATE TABLE by_ip (ctid TEXT NOT NULL, ip TEXT NOT NULL, {f},
           PRIMARY KEY (ctid, ip)) WITHOUT ROWID;
         CREATE TABLE open_days (ctid TEXT PRIMARY KEY, date TEXT NOT NULL, {f}) WITHOUT ROWID;
         CREATE TABLE days (ctid TEXT NOT NULL, date TEXT NOT NULL, {f},
           PRIMARY KEY (ctid, date)) WITHOUT ROWID;
         CREATE INDEX days_by_date ON days (date);
         CREATE TABLE holders (ip TEXT NOT NULL, ctid TEXT NOT NULL);
         CREATE UNIQUE INDEX holders_ip_ctid ON holders (ip, ctid);
         CREATE INDEX holders_ctid ON holders (ctid);
         {all_days}
         {CYCLE_DAYS}
         {QUOTAS}
         PRAGMA user_version = {VERSION};",
        figs("month_", " INTEGER NOT NULL DEFAULT 0"),
        figs("total_", " INTEGER NOT NULL DEFAULT 0"),
        all_days = all_days_view(""),
    )
}

/// The table of version 3: a container's own cycle days, each from a period boundary on.
const CYCLE_DAYS: &str =
    "CREATE TABLE cycle_days (ctid TEXT NOT NULL, cycle_day_from TEXT NOT NULL,
           cycle_day INTEGER NOT NULL CHECK (cycle_day BETWEEN 1 AND 28),
           PRIMARY KEY (ctid, cycle_day_from)) WITHOUT ROWID;";

/// The tables of version 4: a container's quota, and the threshold actions of each period
/// (see [`crate::ledger::thresholds`]).
pub(crate) const QUOTAS: &str =
    "CREATE TABLE quotas (ctid TEXT PRIMARY KEY, quota_bytes INTEGER NOT NULL CHECK (quota_bytes > 0),
           direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'total'))) WITHOUT ROWID;
         CREATE TABLE thresholds (ctid TEXT NOT NULL, period_start TEXT NOT NULL,
           threshold INTEGER NOT NULL, period_end TEXT NOT NULL, direction TEXT NOT NULL,
           used_bytes INTEGER NOT NULL, quota_bytes INTEGER NOT NULL,
           state TEXT NOT NULL CHECK (state IN ('running', 'failed', 'done')),
           attempts INTEGER NOT NULL, first_at TEXT NOT NULL, last_at TEXT NOT NULL,
           last_error TEXT, PRIMARY KEY (ctid, period_start, threshold)) WITHOUT ROWID;";

/// Which part of the ledger a command reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every container: full runs (sync, dump, restore, reports).
    All,
    /// These containers: one container's event.
    Containers(Vec<Ctid>),
}

/// Fingerprints of the parts of a container as stored, to write back only what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prints {
    row: u64,
    ips: u64,
    parked: u64,
    seen: u64,
    by_ip: u64,
    today: u64,
    held: u64,
}

fn print_of(f: impl FnOnce(&mut std::collections::hash_map::DefaultHasher)) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f(&mut h);
    h.finish()
}

impl Prints {
    fn of(c: &Container) -> Prints {
        Prints {
            row: print_of(|h| {
                c.total_since.hash(h);
                c.total.fields().hash(h);
                c.month
                    .as_ref()
                    .map(|m| (&m.month, m.figures.fields()))
                    .hash(h);
                c.last_closed.hash(h);
            }),
            ips: print_of(|h| c.ips.hash(h)),
            parked: print_of(|h| c.parked.hash(h)),
            seen: print_of(|h| {
                for (k, v) in &c.seen {
                    (k, v.packets, v.bytes).hash(h);
                }
            }),
            by_ip: print_of(|h| {
                for (ip, f) in &c.by_ip {
                    (ip, f.fields()).hash(h);
                }
            }),
            today: print_of(|h| {
                c.today
                    .as_ref()
                    .map(|d| (d.date, d.figures.fields()))
                    .hash(h);
            }),
            // What the held IPs are made of (they are not gathered just to be hashed).
            held: print_of(|h| {
                c.ips.hash(h);
                c.parked.hash(h);
                c.seen.keys().for_each(|k| k.hash(h));
            }),
        }
    }
}

/// A ledger as read, with what is needed to write back only what changed.
#[derive(Debug)]
pub struct Loaded {
    path: PathBuf,
    /// `None`: nothing on disk yet and nothing may be written (a view of a new node).
    conn: Option<Connection>,
    /// The containers read; `None`: all of them.
    scope: Option<BTreeSet<Ctid>>,
    /// The containers as stored.
    prints: HashMap<Ctid, Prints>,
    /// A full run has written the node's row (boot id, backend).
    pub node_known: bool,
    /// The backend the last full run used.
    pub backend: Option<String>,
    /// How many closed days `days` keeps.
    history_days: u64,
}

/// What [`salvage`] found and did.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// Files that could not be used, each moved aside to the path given.
    pub moved_aside: Vec<(PathBuf, PathBuf)>,
    /// The node's row was missing or lost: the boot id, backend and last dump are lost.
    pub node_lost: bool,
    /// The last dump, when the node's row survived.
    pub last_dump: Option<LastDump>,
}

fn bad(path: &Path, e: rusqlite::Error) -> StateError {
    StateError::Corrupt {
        path: path.to_path_buf(),
        source: crate::ledger::FormatError::Json(
            e.to_string()
                .chars()
                .flat_map(char::escape_debug)
                .take(300)
                .collect(),
        ),
    }
}

/// A database error: corruption is named as such; anything else is a failed read or write,
/// with the operating system's reason when SQLite has one.
pub(crate) fn db_error(conn: Option<&Connection>, path: &Path, e: rusqlite::Error) -> StateError {
    use rusqlite::ErrorCode as C;
    let code = e.sqlite_error_code();
    if matches!(code, Some(C::DatabaseCorrupt | C::NotADatabase))
        || matches!(
            e,
            rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
        )
    {
        return bad(path, e);
    }
    // SAFETY: the handle is valid for the lifetime of `conn`; the call only reads the
    // error number SQLite kept.
    let errno = conn.map_or(0, |c| unsafe {
        rusqlite::ffi::sqlite3_system_errno(c.handle())
    });
    let os = match (errno, code) {
        (0, Some(C::DiskFull)) => Some(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        (0, Some(C::ReadOnly)) => Some(std::io::Error::from_raw_os_error(libc::EROFS)),
        (0, _) => None,
        (n, _) => Some(std::io::Error::from_raw_os_error(n)),
    };
    let text = match os {
        Some(os) => format!("{e}: {os}"),
        None => e.to_string(),
    };
    StateError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(text),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|source| StateError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

fn set_pragmas(conn: &Connection, path: &Path) -> Result<(), StateError> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -512;",
    )
    .map_err(|e| db_error(Some(conn), path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| db_error(Some(conn), path, e))
}

/// Create a database with the schema (and `ledger`, if given) under a temporary name, then
/// rename it into place: a crash leaves no database (and any older ledger intact) or a
/// complete one.
fn create(state_dir: &Path, ledger: Option<(&Ledger, Option<&str>)>) -> Result<(), StateError> {
    let path = state_dir.join(FILE);
    let tmp = state_dir.join(format!("{FILE}.new"));
    for leftover in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{leftover}", tmp.display()));
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StateError::Write { path: p, source: e });
            }
            _ => {}
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|source| StateError::Write {
            path: tmp.clone(),
            source,
        })?;
    let conn = Connection::open_with_flags(
        &tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_error(None, &tmp, e))?;
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(|e| db_error(Some(&conn), &tmp, e))?;
    let mut loaded = Loaded::new(tmp.clone(), Some(conn), None);
    {
        let conn = loaded.conn.as_mut().expect("just opened");
        let tx = conn.transaction().map_err(|e| db_error(None, &tmp, e))?;
        tx.execute_batch(&schema())
            .map_err(|e| db_error(None, &tmp, e))?;
        tx.commit().map_err(|e| db_error(None, &tmp, e))?;
    }
    if let Some((l, backend)) = ledger {
        loaded.save(l, backend, &[])?;
    }
    let conn = loaded.conn.take().expect("open");
    conn.execute_batch("PRAGMA journal_mode = WAL;")
        .map_err(|e| db_error(Some(&conn), &tmp, e))?;
    conn.close().map_err(|(c, e)| db_error(Some(&c), &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|source| StateError::Write {
        path: path.clone(),
        source,
    })?;
    fsync_dir(state_dir)
}

/// Open the database for a command that may write (the caller holds the exclusive lock):
/// converting a ledger of an earlier release, or creating an empty one, first.
fn open_rw(state_dir: &Path) -> Result<Connection, StateError> {
    let path = state_dir.join(FILE);
    if !path.exists() {
        match legacy::read(state_dir)? {
            Some(old) => create(state_dir, Some((&old.ledger, old.backend.as_deref())))?,
            None => create(state_dir, None)?,
        }
    }
    // A conversion killed after the database was in place: the old files go aside now.
    if legacy::present(state_dir) {
        legacy::move_aside(state_dir)?;
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_error(None, &path, e))?;
    check_version(&conn, &path, true)?;
    set_pragmas(&conn, &path)?;
    Ok(conn)
}

/// Versions 1 (before the generation), 2 (before `cycle_days`) and 3 (before `quotas` and
/// `thresholds`) are upgraded in place by a
/// command that may write, and read as they are by a view.
fn check_version(conn: &Connection, path: &Path, upgrade: bool) -> Result<(), StateError> {
    let v: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| db_error(Some(conn), path, e))?;
    if v == 1 && upgrade {
        conn.execute_batch(
            "BEGIN IMMEDIATE; CREATE TABLE generations (scope TEXT PRIMARY KEY,
               generation INTEGER NOT NULL, applied INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
             PRAGMA user_version = 2; COMMIT;",
        )
        .map_err(|e| db_error(Some(conn), path, e))?;
    }
    if (v == 1 || v == 2) && upgrade {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {CYCLE_DAYS} PRAGMA user_version = 3; COMMIT;"
        ))
        .map_err(|e| db_error(Some(conn), path, e))?;
    }
    if (1..=3).contains(&v) && upgrade {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {QUOTAS} PRAGMA user_version = 4; COMMIT;"
        ))
        .map_err(|e| db_error(Some(conn), path, e))?;
    }
    if (1..=4).contains(&v) && upgrade {
        let add = add_free_figures(conn).map_err(|e| db_error(Some(conn), path, e))?;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {add} PRAGMA user_version = 5; COMMIT;"
        ))
        .map_err(|e| db_error(Some(conn), path, e))?;
    } else if (1..=4).contains(&v) {
        conn.execute_batch(&free_figures_as_zero())
            .map_err(|e| db_error(Some(conn), path, e))?;
    } else if v != VERSION {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            source: crate::ledger::FormatError::Json(format!(
                "schema version {v}, this vzacct understands version {VERSION}"
            )),
        });
    }
    Ok(())
}

/// Read `scope` of the ledger (the caller holds the exclusive lock).
pub fn load(state_dir: &Path, scope: &Scope) -> Result<(Ledger, Loaded), StateError> {
    let path = state_dir.join(FILE);
    let conn = open_rw(state_dir)?;
    let scope = match scope {
        Scope::All => None,
        Scope::Containers(ids) => {
            // One container's event leaves its commit in the write-ahead log, where it is
            // durable (fsync at each commit, synchronous = FULL): copying the log into the
            // database at close would cost each hook two more fsyncs and the log's
            // re-creation. The next full run's close copies it (as does SQLite's automatic
            // checkpoint past 1,000 pages), and any open replays it.
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .map_err(|e| db_error(Some(&conn), &path, e))?;
            Some(ids.iter().cloned().collect())
        }
    };
    let mut loaded = Loaded::new(path, Some(conn), scope);
    let ledger = loaded.read(false, true, Parts::All)?;
    Ok((ledger, loaded))
}

/// Whether the state dir holds only a ledger of an earlier release, not converted yet.
pub fn needs_conversion(state_dir: &Path) -> bool {
    !state_dir.join(FILE).exists() && legacy::present(state_dir)
}

/// Read the whole ledger for a view, writing and creating nothing (the caller holds the
/// shared lock): the database is opened read-only, and when no write-ahead log is left
/// over it is read as immutable, so a read-only state dir works. A missing database is an
/// empty ledger.
pub fn load_view(state_dir: &Path) -> Result<(Ledger, Loaded), StateError> {
    load_view_parts(state_dir, Parts::All)
}

/// Which parts of each container a view reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// Everything.
    All,
    /// What is accounted and parked, and the container's row: no last-seen counters, no
    /// figures per IP, no open day (`status` needs only where the counters should be).
    Accounted,
}

/// [`load_view`] of `parts` of each container.
pub fn load_view_parts(state_dir: &Path, parts: Parts) -> Result<(Ledger, Loaded), StateError> {
    let path = state_dir.join(FILE);
    let mut loaded = Loaded::new(path.clone(), None, None);
    if !path.exists() {
        if legacy::present(state_dir) {
            return Err(StateError::Unfinished {
                path: state_dir.to_path_buf(),
            });
        }
        return Ok((Ledger::default(), loaded));
    }
    loaded.conn = Some(open_read_only(state_dir)?);
    // A view writes nothing: no fingerprints.
    let ledger = loaded.read(false, false, parts)?;
    Ok((ledger, loaded))
}

/// Open the database read-only, writing and creating nothing: when no write-ahead log is
/// left over it is read as immutable, so a read-only state dir works.
fn open_read_only(state_dir: &Path) -> Result<Connection, StateError> {
    let path = state_dir.join(FILE);
    let wal = state_dir.join(format!("{FILE}-wal"));
    let wal_left = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let uri = format!(
        "file:{}?mode=ro{}",
        uri_path(&path),
        if wal_left { "" } else { "&immutable=1" }
    );
    let conn = Connection::open_with_flags(&uri, flags).map_err(|e| db_error(None, &path, e))?;
    check_version(&conn, &path, false)?;
    conn.execute_batch("PRAGMA cache_size = -512;")
        .map_err(|e| db_error(Some(&conn), &path, e))?;
    Ok(conn)
}

/// What a kernel read needs to know of the ledger, read ahead of the ledger itself so that
/// the two can go at once (the caller holds the lock, so the ledger read next says the same;
/// the caller checks it anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// The last full run used the ipset backend (its sets must be read).
    pub sets_in_use: bool,
    /// [`Ledger::expected_elements`].
    pub elements: usize,
}

/// The [`Hint`] of the database in `state_dir`; `None` when there is none yet, or it cannot
/// be read (the caller then reads the ledger first, which says why).
pub fn hint(state_dir: &Path) -> Option<Hint> {
    if !state_dir.join(FILE).exists() {
        return None;
    }
    let conn = open_read_only(state_dir).ok()?;
    let backend: Option<String> = conn
        .query_row("SELECT backend FROM node WHERE id = 1", [], |r| r.get(0))
        .optional()
        .ok()?
        .flatten();
    let ips: i64 = conn
        .query_row("SELECT count(*) FROM ips", [], |r| r.get(0))
        .ok()?;
    Some(Hint {
        sets_in_use: backend.as_deref() == Some("ipset"),
        elements: 4 * usize::try_from(ips).ok()?,
    })
}

/// A path for an SQLite URI: `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// `vzacct repair`: open what of the ledger can be used (the caller holds the lock). A
/// database that cannot be opened, fails `PRAGMA integrity_check` or does not read is
/// moved aside to `<name>.corrupt-<unix time>` (with its write-ahead log) and a new one is
/// made. The boot id is dropped, so the caller's harvest sees a new boot and takes every
/// kernel counter as a baseline.
pub fn salvage(state_dir: &Path, stamp: i64) -> Result<(Ledger, Loaded, Salvaged), StateError> {
    let path = state_dir.join(FILE);
    let mut found = Salvaged::default();
    if !path.exists() && legacy::present(state_dir) {
        match legacy::read(state_dir) {
            Err(StateError::Corrupt { .. } | StateError::BadRedoLog { .. }) => {
                let to = legacy::move_aside(state_dir)?;
                found.moved_aside.push((state_dir.join(legacy::DIR), to));
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    if path.exists() {
        let checked = open_rw(state_dir).and_then(|conn| {
            let ok: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .map_err(|e| db_error(Some(&conn), &path, e))?;
            if ok != "ok" {
                return Err(StateError::Corrupt {
                    path: path.clone(),
                    source: crate::ledger::FormatError::Json(format!("integrity check: {ok}")),
                });
            }
            let mut loaded = Loaded::new(path.clone(), Some(conn), None);
            let ledger = loaded.read(true, true, Parts::All)?;
            Ok((ledger, loaded))
        });
        match checked {
            Ok((mut ledger, loaded)) => {
                found.node_lost = !loaded.node_known;
                found.last_dump = ledger.last_dump.clone();
                ledger.boot_id = None;
                return Ok((ledger, loaded, found));
            }
            Err(StateError::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", path.display()));
            if !from.exists() {
                continue;
            }
            let to = PathBuf::from(format!("{}.corrupt-{stamp}", from.display()));
            std::fs::rename(&from, &to).map_err(|source| StateError::Write {
                path: from.clone(),
                source,
            })?;
            found.moved_aside.push((from, to));
        }
        fsync_dir(state_dir)?;
    }
    found.node_lost = true;
    let (ledger, loaded) = load(state_dir, &Scope::All)?;
    Ok((ledger, loaded, found))
}

/// The `family` column of a counter.
fn family_number(ip: &IpAddr) -> u8 {
    match Family::of(ip) {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

fn to_i64(v: u64) -> i64 {
    v as i64
}

fn to_u64(v: i64) -> u64 {
    v as u64
}

pub(crate) fn figures_at(r: &rusqlite::Row, first: usize) -> rusqlite::Result<Figures> {
    let mut v = [0u64; crate::ledger::FIGURES];
    for (i, x) in v.iter_mut().enumerate() {
        *x = to_u64(r.get(first + i)?);
    }
    Ok(Figures::from_fields(v))
}

fn conv<E: std::error::Error + Send + Sync + 'static>(i: usize, e: E) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

fn parse_col<T: std::str::FromStr>(r: &rusqlite::Row, i: usize) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = r.get_ref(i)?.as_str()?;
    s.parse::<T>()
        .map_err(|e| conv(i, std::io::Error::other(format!("{s:?}: {e}"))))
}

/// Fold the rows of `sql` (first column the CTID, in CTID order) into their containers,
/// looking each container up once per run of rows.
fn fold_rows(
    conn: &Connection,
    sql: &str,
    id: Option<&str>,
    cts: &mut BTreeMap<Ctid, Container>,
    mut f: impl FnMut(&mut Container, &rusqlite::Row) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(sql)?;
    let mut rows = match id {
        None => st.query([])?,
        Some(id) => st.query([id])?,
    };
    let mut cur_id = String::new();
    let mut cur: Option<&mut Container> = None;
    while let Some(r) = rows.next()? {
        let text = r.get_ref(0)?.as_str()?;
        if cur.is_none() || text != cur_id {
            let ctid: Ctid = parse_col(r, 0)?;
            cur_id.clear();
            cur_id.push_str(text);
            cur = Some(cts.entry(ctid).or_default());
        }
        if let Some(c) = cur.as_deref_mut() {
            f(c, r)?;
        }
    }
    Ok(())
}

fn parse_opt<T: std::str::FromStr>(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(_) => parse_col(r, i).map(Some),
    }
}

fn parse_time(
    r: &rusqlite::Row,
    i: usize,
) -> rusqlite::Result<Option<DateTime<chrono::FixedOffset>>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(Some)
            .map_err(|e| conv(i, e)),
    }
}

fn time_text(t: &DateTime<chrono::FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl Loaded {
    fn new(path: PathBuf, conn: Option<Connection>, scope: Option<BTreeSet<Ctid>>) -> Loaded {
        Loaded {
            path,
            conn,
            scope,
            prints: HashMap::new(),
            node_known: false,
            backend: None,
            history_days: HISTORY_DAYS,
        }
    }

    /// Keep `days` closed days (`history_days` of the config) when writing.
    pub fn keep_days(&mut self, days: u64) {
        self.history_days = days;
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open database (a view's is read-only).
    pub(crate) fn conn(&self) -> Result<&Connection, StateError> {
        self.conn.as_ref().ok_or_else(|| StateError::Write {
            path: self.path.clone(),
            source: std::io::Error::other("internal: no database open"),
        })
    }

    /// Whether this is a partial read (one container's event).
    pub fn partial(&self) -> bool {
        self.scope.is_some()
    }

    /// Read the scope; containers without the node's row are corrupt unless
    /// `allow_no_node` (repair). `track`: keep fingerprints, to write back what changed
    /// (only with every part read).
    fn read(
        &mut self,
        allow_no_node: bool,
        track: bool,
        parts: Parts,
    ) -> Result<Ledger, StateError> {
        debug_assert!(!track || parts == Parts::All);
        let path = self.path.clone();
        let conn = self.conn()?;
        let mut ledger = Ledger::default();
        let err = |e| db_error(Some(conn), &path, e);
        let node = conn
            .query_row(
                "SELECT boot_id, backend, last_dump_at, last_dump_ms FROM node WHERE id = 1",
                [],
                |r| {
                    let at = parse_time(r, 2)?;
                    let ms: Option<i64> = r.get(3)?;
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        at.map(|at| LastDump {
                            at,
                            duration_ms: to_u64(ms.unwrap_or(0)),
                        }),
                    ))
                },
            )
            .optional()
            .map_err(err)?;
        let (mut node_known, mut node_backend) = (false, None);
        if let Some((boot_id, backend, last_dump)) = node {
            node_known = true;
            node_backend = backend;
            ledger.boot_id = boot_id;
            ledger.last_dump = last_dump;
            // (No such table in a version 1 database that a view reads.)
            if let Ok(mut stmt) = conn.prepare("SELECT scope, generation, applied FROM generations")
            {
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .map_err(err)?;
                for row in rows {
                    let (scope, written, applied) = row.map_err(err)?;
                    let g = crate::model::Generation {
                        written: to_u64(written),
                        applied: to_u64(applied),
                    };
                    ledger.generations.insert(scope, g);
                }
            }
        } else if !allow_no_node {
            // Its boot id is lost: going on would take every kernel counter for new
            // (counted twice).
            let any: bool = conn
                .query_row("SELECT EXISTS (SELECT 1 FROM containers)", [], |r| r.get(0))
                .map_err(err)?;
            if any {
                return Err(StateError::Corrupt {
                    path,
                    source: crate::ledger::FormatError::Json(
                        "the node's row (boot id, backend) is missing while containers exist"
                            .into(),
                    ),
                });
            }
        }
        let ids: Vec<Option<&str>> = match &self.scope {
            None => vec![None],
            Some(s) => s.iter().map(|c| Some(c.as_str())).collect(),
        };
        let cts = &mut ledger.containers;
        for id in ids {
            let q = |sql: String| match id {
                None => format!("{sql} ORDER BY ctid"),
                Some(_) => format!("{sql} WHERE ctid = ?1"),
            };
            let sql = q(format!(
                "SELECT ctid, total_since, last_closed, month, {}, {} FROM containers",
                figs("month_", ""),
                figs("total_", "")
            ));
            fold_rows(conn, &sql, id, cts, |c, r| {
                c.total_since = parse_time(r, 1)?;
                c.last_closed = parse_opt(r, 2)?;
                c.month = match r.get::<_, Option<String>>(3)? {
                    Some(month) => Some(Month {
                        month,
                        figures: figures_at(r, 4)?,
                    }),
                    None => None,
                };
                c.total = figures_at(r, 4 + crate::ledger::FIGURES)?;
                Ok(())
            })
            .map_err(err)?;
            let sql = q("SELECT ctid, ip FROM ips".into());
            fold_rows(conn, &sql, id, cts, |c, r| {
                c.ips.insert(parse_col(r, 1)?);
                Ok(())
            })
            .map_err(err)?;
            let sql = q("SELECT ctid, ip FROM parked".into());
            fold_rows(conn, &sql, id, cts, |c, r| {
                c.parked.insert(parse_col(r, 1)?);
                Ok(())
            })
            .map_err(err)?;
            if parts == Parts::Accounted {
                continue;
            }
            let sql =
                q("SELECT ctid, backend, kind, ip, element, packets, bytes FROM counters".into());
            fold_rows(conn, &sql, id, cts, |c, r| {
                let ip: IpAddr = parse_col(r, 3)?;
                let backend = r.get_ref(1)?.as_str()?;
                let kind = r.get_ref(2)?.as_str()?;
                let element = r.get_ref(4)?.as_str()?;
                let set = crate::model::parse_set_name(element);
                let key = match (backend, Kind::by_name(kind)) {
                    ("rule", Some(k)) => CounterId::rule(k, ip, element),
                    ("set", Some(k)) if set == Some((k, Family::of(&ip))) => CounterId::set(k, ip),
                    _ => {
                        let e = format!("counter {backend} {kind}");
                        return Err(conv(1, std::io::Error::other(e)));
                    }
                };
                let v = Counters {
                    packets: to_u64(r.get(5)?),
                    bytes: to_u64(r.get(6)?),
                };
                c.seen.insert(key, v);
                Ok(())
            })
            .map_err(err)?;
            let sql = q(format!("SELECT ctid, ip, {} FROM by_ip", figs("", "")));
            fold_rows(conn, &sql, id, cts, |c, r| {
                c.by_ip.insert(parse_col(r, 1)?, figures_at(r, 2)?);
                Ok(())
            })
            .map_err(err)?;
            let sql = q(format!(
                "SELECT ctid, date, {} FROM open_days",
                figs("", "")
            ));
            fold_rows(conn, &sql, id, cts, |c, r| {
                c.today = Some(Day {
                    date: parse_col(r, 1)?,
                    figures: figures_at(r, 2)?,
                });
                Ok(())
            })
            .map_err(err)?;
        }
        self.node_known = node_known;
        self.backend = node_backend;
        self.prints = ledger
            .containers
            .iter()
            .filter(|_| track)
            .map(|(id, c)| (id.clone(), Prints::of(c)))
            .collect();
        Ok(ledger)
    }

    /// The containers holding a counter for each of `ips`, as stored.
    pub fn holders(&mut self, ips: &[IpAddr]) -> Result<Vec<BTreeSet<Ctid>>, StateError> {
        let conn = self.conn()?;
        let err = |e| db_error(Some(conn), &self.path, e);
        let mut st = conn
            .prepare_cached("SELECT ctid FROM holders WHERE ip = ?1")
            .map_err(err)?;
        let mut out = Vec::new();
        for ip in ips {
            let mut set = BTreeSet::new();
            let mut rows = st.query([ip.to_string()]).map_err(err)?;
            while let Some(r) = rows.next().map_err(err)? {
                set.insert(parse_col(r, 0).map_err(err)?);
            }
            out.push(set);
        }
        Ok(out)
    }

    /// Write back, in one transaction, what changed since the read: the node's row, the
    /// rows of every container read whose record differs, and `closed` days. `backend` is
    /// the backend a full run used (`None` keeps the one recorded).
    pub fn save(
        &mut self,
        ledger: &Ledger,
        backend: Option<&str>,
        closed: &[Row],
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        if let Some(scope) = &self.scope
            && let Some(id) = ledger.containers.keys().find(|id| !scope.contains(*id))
        {
            return Err(StateError::Write {
                path,
                source: std::io::Error::other(format!(
                    "internal: container {id} was not read by this command"
                )),
            });
        }
        let backend = backend.map(str::to_string).or_else(|| self.backend.clone());
        let Some(conn) = self.conn.as_mut() else {
            return Err(StateError::Write {
                path,
                source: std::io::Error::other("internal: no database open"),
            });
        };
        let mut changed: Vec<(Ctid, Option<Prints>)> = Vec::new();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO node (id, boot_id, backend, last_dump_at, last_dump_ms)
                 VALUES (1, ?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                ledger.boot_id,
                backend,
                ledger.last_dump.as_ref().map(|d| time_text(&d.at)),
                ledger.last_dump.as_ref().map(|d| to_i64(d.duration_ms)),
            ])?;
            tx.execute("DELETE FROM generations", [])?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO generations (scope, generation, applied) VALUES (?1, ?2, ?3)",
            )?;
            for (scope, g) in &ledger.generations {
                ins.execute(params![scope, to_i64(g.written), to_i64(g.applied)])?;
            }
            drop(ins);
            let mut w = Writer::new(&tx);
            for (id, c) in &ledger.containers {
                let new = Prints::of(c);
                let old = self.prints.get(id);
                if old == Some(&new) {
                    continue;
                }
                w.container(id, c, old, &new)?;
                changed.push((id.clone(), Some(new)));
            }
            for id in self.prints.keys() {
                if !ledger.containers.contains_key(id) {
                    for part in 0..PARTS.len() {
                        w.delete(part, id.as_str())?;
                    }
                    changed.push((id.clone(), None));
                }
            }
            drop(w);
            let mut st = tx.prepare_cached(&insert_sql("days", "ctid, date, FIGS"))?;
            for r in closed {
                with_figs(
                    &mut st,
                    &[&r.ctid.as_str(), &r.date.to_string()],
                    &r.figures,
                )?;
            }
            drop(st);
            if let Some(newest) = closed.iter().map(|r| r.date).max() {
                let cutoff = newest - chrono::Days::new(self.history_days);
                tx.prepare_cached("DELETE FROM days WHERE date < ?1")?
                    .execute([cutoff.to_string()])?;
                // The threshold records of the periods whose every day went (`period_end`
                // is not included), whatever their state: such a period is never acted on
                // again.
                tx.prepare_cached("DELETE FROM thresholds WHERE period_end <= ?1")?
                    .execute([cutoff.to_string()])?;
            }
            tx.commit()
        })();
        result.map_err(|e| db_error(self.conn.as_ref(), &path, e))?;
        self.node_known = true;
        self.backend = backend;
        for (id, p) in changed {
            match p {
                Some(p) => self.prints.insert(id, p),
                None => self.prints.remove(&id),
            };
        }
        Ok(())
    }
}

/// `INSERT OR REPLACE` into `table` of `cols` (comma-separated; `MONTH`, `TOTAL` and `FIGS`
/// stand for the columns of the figures, prefixed `month_`, `total_` and not at all).
fn insert_sql(table: &str, cols: &str) -> String {
    let cols = cols
        .replace("MONTH", &figs("month_", ""))
        .replace("TOTAL", &figs("total_", ""))
        .replace("FIGS", &figs("", ""));
    let marks = vec!["?"; cols.split(',').count()].join(", ");
    format!("INSERT OR REPLACE INTO {table} ({cols}) VALUES ({marks})")
}

/// The tables holding a container's parts, in [`Prints`] order, with their columns.
const PARTS: [(&str, &str); 7] = [
    (
        "containers",
        "ctid, total_since, last_closed, month, MONTH, TOTAL",
    ),
    ("ips", "ctid, ip"),
    ("parked", "ctid, ip"),
    (
        "counters",
        "ctid, backend, family, kind, ip, element, packets, bytes",
    ),
    ("by_ip", "ctid, ip, FIGS"),
    ("open_days", "ctid, date, FIGS"),
    ("holders", "ip, ctid"),
];

/// The statements that write containers, each prepared once per transaction on first use.
struct Writer<'c> {
    tx: &'c rusqlite::Connection,
    insert: [Option<rusqlite::Statement<'c>>; 7],
    delete: [Option<rusqlite::Statement<'c>>; 7],
}

impl<'c> Writer<'c> {
    fn new(tx: &'c rusqlite::Connection) -> Writer<'c> {
        Writer {
            tx,
            insert: Default::default(),
            delete: Default::default(),
        }
    }

    fn insert(&mut self, part: usize) -> rusqlite::Result<&mut rusqlite::Statement<'c>> {
        if self.insert[part].is_none() {
            let (table, cols) = PARTS[part];
            self.insert[part] = Some(self.tx.prepare(&insert_sql(table, cols))?);
        }
        Ok(self.insert[part].as_mut().expect("prepared"))
    }

    /// Delete every row of `ctid` from the table of `part`.
    fn delete(&mut self, part: usize, ctid: &str) -> rusqlite::Result<()> {
        if self.delete[part].is_none() {
            let sql = format!("DELETE FROM {} WHERE ctid = ?1", PARTS[part].0);
            self.delete[part] = Some(self.tx.prepare(&sql)?);
        }
        self.delete[part]
            .as_mut()
            .expect("prepared")
            .execute([ctid])?;
        Ok(())
    }

    /// Write the parts of one container that differ from `old` (all of them when new).
    fn container(
        &mut self,
        id: &Ctid,
        c: &Container,
        old: Option<&Prints>,
        new: &Prints,
    ) -> rusqlite::Result<()> {
        use rusqlite::ToSql;
        let ct = id.as_str();
        let prints: [fn(&Prints) -> u64; 7] = [
            |p| p.row,
            |p| p.ips,
            |p| p.parked,
            |p| p.seen,
            |p| p.by_ip,
            |p| p.today,
            |p| p.held,
        ];
        for (part, print) in prints.iter().enumerate() {
            if old.is_some_and(|o| print(o) == print(new)) {
                continue;
            }
            if old.is_some() {
                self.delete(part, ct)?;
            }
            let st = self.insert(part)?;
            match part {
                0 => {
                    let m = c.month.as_ref();
                    let since = c.total_since.as_ref().map(time_text);
                    let closed = c.last_closed.map(|d| d.to_string());
                    let month = m.map(|m| m.month.as_str());
                    let mf = ints(&m.map(|m| m.figures).unwrap_or_default());
                    let tf = ints(&c.total);
                    let mut p: Vec<&dyn ToSql> = vec![&ct, &since, &closed, &month];
                    p.extend(mf.iter().map(|x| x as &dyn ToSql));
                    p.extend(tf.iter().map(|x| x as &dyn ToSql));
                    st.execute(&*p)?;
                }
                1 | 2 => {
                    let ips = if part == 1 { &c.ips } else { &c.parked };
                    for ip in ips {
                        st.execute(params![ct, ip.to_string()])?;
                    }
                }
                3 => {
                    for (key, v) in &c.seen {
                        let backend = if key.is_set() { "set" } else { "rule" };
                        let set = key.set_name();
                        st.execute(params![
                            ct,
                            backend,
                            family_number(&key.ip),
                            key.kind.name(),
                            key.ip.to_string(),
                            set.as_deref().unwrap_or(key.iface()),
                            to_i64(v.packets),
                            to_i64(v.bytes)
                        ])?;
                    }
                }
                4 => {
                    for (ip, f) in &c.by_ip {
                        with_figs(st, &[&ct, &ip.to_string()], f)?;
                    }
                }
                5 => {
                    if let Some(d) = &c.today {
                        with_figs(st, &[&ct, &d.date.to_string()], &d.figures)?;
                    }
                }
                _ => {
                    for ip in c.held_ips() {
                        st.execute(params![ip.to_string(), ct])?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The eight figures as stored.
fn ints(f: &Figures) -> [i64; crate::ledger::FIGURES] {
    f.fields().map(to_i64)
}

/// Execute `st` with `first` then the eight figures of `f`.
fn with_figs(
    st: &mut rusqlite::Statement,
    first: &[&dyn rusqlite::ToSql],
    f: &Figures,
) -> rusqlite::Result<()> {
    let v = ints(f);
    let mut p: Vec<&dyn rusqlite::ToSql> = first.to_vec();
    p.extend(v.iter().map(|x| x as &dyn rusqlite::ToSql));
    st.execute(&*p)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate};

    fn id(s: &str) -> Ctid {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn node() -> Ledger {
        let now = DateTime::parse_from_rfc3339("2026-11-29T12:00:00+00:00").unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        let mut l = Ledger {
            boot_id: Some("b1".into()),
            last_dump: Some(LastDump {
                at: now,
                duration_ms: 12,
            }),
            ..Ledger::default()
        };
        for (ct, a) in [
            ("101", "10.0.0.1"),
            ("102", "10.0.0.2"),
            ("103", "2001:db8::3"),
        ] {
            l.assign(&id(ct), ip(a), now, today);
        }
        let c = l.containers.get_mut(&id("101")).unwrap();
        c.seen.insert(
            "forward_in 10.0.0.1".parse().unwrap(),
            Counters {
                packets: 1,
                bytes: u64::MAX,
            },
        );
        c.seen.insert(
            "local_in 10.0.0.1 venet0".parse().unwrap(),
            Counters {
                packets: 2,
                bytes: 3,
            },
        );
        c.seen.insert(
            "set vzacct-fi4 10.0.0.9".parse().unwrap(),
            Counters::default(),
        );
        c.parked.insert(ip("10.0.0.8"));
        c.total.in_bytes = u64::MAX - 1;
        c.by_ip.insert(ip("10.0.0.1"), c.total);
        c.month = Some(Month {
            month: "2026-11".into(),
            figures: Figures {
                out_packets: 7,
                ..Figures::default()
            },
        });
        c.last_closed = Some(NaiveDate::from_ymd_opt(2026, 11, 28).unwrap());
        l
    }

    /// A database of version 4 (before the free figures): a view reads it read-only with
    /// the free figures as zero, and the first writing command adds their columns, every
    /// other figure kept.
    #[test]
    fn version_4_is_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = node();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let rows = vec![Row {
            date: day,
            ctid: id("101"),
            figures: Figures {
                in_bytes: 5,
                ..Figures::default()
            },
        }];
        loaded.save(&l, Some("ipset"), &rows).unwrap();
        drop(loaded);
        // As version 4 wrote it: no free columns.
        let conn = Connection::open(dir.path().join(FILE)).unwrap();
        let mut sql = String::from("DROP VIEW all_days;");
        for (table, prefixes) in [
            ("containers", &["month_", "total_"][..]),
            ("by_ip", &[""][..]),
            ("open_days", &[""][..]),
            ("days", &[""][..]),
        ] {
            for p in prefixes {
                for f in FREE_FIGS {
                    sql.push_str(&format!("ALTER TABLE {table} DROP COLUMN {p}{f};"));
                }
            }
        }
        let fl = FIGS[..8].join(", ");
        sql.push_str(&format!(
            "CREATE VIEW all_days AS SELECT ctid, date, 0 AS open, {fl} FROM days
               UNION ALL SELECT ctid, date, 1 AS open, {fl} FROM open_days;
             PRAGMA user_version = 4;"
        ));
        conn.execute_batch(&sql).unwrap();
        drop(conn);
        let (view, _) = load_view(dir.path()).unwrap();
        assert_eq!(view, l);
        let (back, loaded) = load(dir.path(), &Scope::All).unwrap();
        assert_eq!(back, l);
        let v: i32 = loaded
            .conn()
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
        let day28: (i64, i64) = loaded
            .conn()
            .unwrap()
            .query_row(
                "SELECT in_bytes, free_in_bytes FROM all_days WHERE ctid = '101' AND open = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(day28, (5, 0));
        // The free figures are written and read back from then on.
        l.containers
            .get_mut(&id("101"))
            .unwrap()
            .total
            .free_in_bytes = 7;
        let mut loaded = loaded;
        loaded.save(&l, None, &[]).unwrap();
        let (back, _) = load(dir.path(), &Scope::All).unwrap();
        assert_eq!(back.containers[&id("101")].total.free_in_bytes, 7);
    }

    #[test]
    fn round_trip_and_partial_writes() {
        let dir = tempfile::tempdir().unwrap();
        let l = node();
        let (empty, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        assert_eq!(empty, Ledger::default());
        assert!(!loaded.node_known);
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let rows = vec![Row {
            date: day(28),
            ctid: id("101"),
            figures: Figures {
                in_bytes: 5,
                ..Figures::default()
            },
        }];
        loaded.save(&l, Some("ipset"), &rows).unwrap();
        let (back, loaded) = load(dir.path(), &Scope::All).unwrap();
        assert_eq!(back, l);
        assert_eq!(loaded.backend.as_deref(), Some("ipset"));
        let day28: (String, i64) = loaded
            .conn()
            .unwrap()
            .query_row(
                "SELECT date, in_bytes FROM all_days WHERE ctid = '101' AND open = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(day28, ("2026-11-28".to_string(), 5));
        let (view, _) = load_view(dir.path()).unwrap();
        assert_eq!(view, l);
        // One container's event.
        let (mut part, mut loaded) = load(dir.path(), &Scope::Containers(vec![id("102")])).unwrap();
        assert_eq!(part.containers.keys().collect::<Vec<_>>(), [&id("102")]);
        assert_eq!(
            loaded
                .holders(&[ip("10.0.0.1"), ip("10.0.0.8"), ip("10.0.0.7")])
                .unwrap(),
            [[id("101")].into(), [id("101")].into(), BTreeSet::new()]
        );
        part.unassign(&id("102"), &ip("10.0.0.2"));
        part.containers
            .get_mut(&id("102"))
            .unwrap()
            .parked
            .insert(ip("10.0.0.2"));
        loaded.save(&part, None, &[]).unwrap();
        let (full, loaded) = load(dir.path(), &Scope::All).unwrap();
        let mut want = l.clone();
        want.containers
            .insert(id("102"), part.containers[&id("102")].clone());
        assert_eq!(full, want);
        assert_eq!(loaded.backend.as_deref(), Some("ipset"), "kept");
        // A container outside the scope read is refused.
        let (mut part, mut loaded) = load(dir.path(), &Scope::Containers(vec![id("102")])).unwrap();
        part.containers.insert(id("104"), Container::default());
        assert!(loaded.save(&part, None, &[]).is_err());
        // Removing a container removes its rows.
        let (mut all, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        all.containers.remove(&id("103"));
        loaded.save(&all, None, &[]).unwrap();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        assert_eq!(
            loaded.holders(&[ip("2001:db8::3")]).unwrap(),
            [BTreeSet::new()]
        );
    }

    /// A dump that closes a day drops, in its transaction, the days older than
    /// `history_days` before the newest and the threshold records of every period all of
    /// whose days went, whatever their state; nothing else.
    #[test]
    fn old_threshold_records_go_with_their_days() {
        use crate::ledger::period::Span;
        use crate::ledger::quota::Direction;
        use crate::ledger::thresholds::{self, Attempt, State};
        let dir = tempfile::tempdir().unwrap();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.keep_days(62);
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let row = |ct: &str, date: &str| Row {
            date: d(date),
            ctid: id(ct),
            figures: Figures {
                in_bytes: 1,
                ..Figures::default()
            },
        };
        let attempt = |ct: &str, start: &str, end: &str, threshold: u32, state: State| Attempt {
            ctid: id(ct),
            period: Span {
                start: d(start),
                end: d(end),
            },
            threshold,
            direction: Direction::Total,
            used: 900,
            quota: 1000,
            state,
            attempts: 1,
            first_at: "2027-01-20T10:00:00Z".into(),
            last_at: "2027-01-20T10:00:00Z".into(),
            last_error: None,
        };
        thresholds::record(
            &loaded,
            &[
                attempt("101", "2027-01-01", "2027-02-01", 80, State::Done),
                attempt("101", "2027-01-01", "2027-02-01", 90, State::Failed),
                attempt("101", "2027-02-01", "2027-03-01", 80, State::Done),
                attempt("102", "2027-01-15", "2027-02-15", 100, State::Running),
            ],
        )
        .unwrap();
        let l = node();
        let closed = ["2027-01-30", "2027-01-31", "2027-02-01"].map(|day| row("101", day));
        loaded.save(&l, None, &closed).unwrap();
        let left = |loaded: &Loaded| {
            let conn = loaded.conn().unwrap();
            let days: Vec<String> = conn
                .prepare("SELECT ctid || ' ' || date FROM days ORDER BY ctid, date")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let records: Vec<String> = conn
                .prepare(
                    "SELECT ctid || ' ' || period_start || ' ' || threshold FROM thresholds
                     ORDER BY ctid, period_start, threshold",
                )
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (days, records)
        };
        let all = vec![
            "101 2027-01-01 80".to_string(),
            "101 2027-01-01 90".into(),
            "101 2027-02-01 80".into(),
            "102 2027-01-15 100".into(),
        ];
        // 2027-04-03 closed: days before 2027-01-31 go; January's last day stays, and with it
        // January's records.
        loaded.save(&l, None, &[row("102", "2027-04-03")]).unwrap();
        assert_eq!(
            left(&loaded),
            (
                vec![
                    "101 2027-01-31".to_string(),
                    "101 2027-02-01".into(),
                    "102 2027-04-03".into()
                ],
                all.clone()
            )
        );
        // Nothing closed, nothing dropped.
        loaded.save(&l, None, &[]).unwrap();
        assert_eq!(left(&loaded).1, all);
        // 2027-04-04 closed: 2027-01-31 goes, and January's records (done or failed).
        loaded.save(&l, None, &[row("102", "2027-04-04")]).unwrap();
        assert_eq!(
            left(&loaded),
            (
                vec![
                    "101 2027-02-01".to_string(),
                    "102 2027-04-03".into(),
                    "102 2027-04-04".into()
                ],
                vec!["101 2027-02-01 80".to_string(), "102 2027-01-15 100".into()]
            )
        );
        // 2027-04-17: 102's period ends 2027-02-15, its last day 2027-02-14 is the cutoff.
        loaded.save(&l, None, &[row("102", "2027-04-17")]).unwrap();
        assert_eq!(left(&loaded).1.len(), 2);
        // 2027-04-18: it goes, though its action is still `running`.
        loaded.save(&l, None, &[row("102", "2027-04-18")]).unwrap();
        assert_eq!(left(&loaded).1, ["101 2027-02-01 80"]);
        // With the default (800 days), a day closed in 2029 keeps them all.
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.save(&l, None, &[row("102", "2029-04-12")]).unwrap();
        assert_eq!(left(&loaded).1, ["101 2027-02-01 80"]);
        loaded.save(&l, None, &[row("102", "2029-05-12")]).unwrap();
        assert_eq!(left(&loaded).1, Vec::<String>::new());
    }

    #[test]
    fn corrupt_databases_are_named_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.save(&node(), None, &[]).unwrap();
        drop(loaded);
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).unwrap();
        for bad in [&good[..good.len() / 2], b"\x00\x01garbage", b""] {
            std::fs::write(&path, bad).unwrap();
            let e = load(dir.path(), &Scope::All).unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
            let e = load_view(dir.path()).unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), bad);
        }
        let (l, _, found) = salvage(dir.path(), 7).unwrap();
        assert_eq!(l, Ledger::default());
        assert!(found.node_lost);
        assert!(dir.path().join(format!("{FILE}.corrupt-7")).exists());
    }
}
