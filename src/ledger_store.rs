//! The ledger on disk, split so that an event about one container reads and writes a few
//! small files instead of the whole node: containers live in 64 buckets by a hash of their
//! CTID, an index from each IP to the containers holding counters for it lives in 64
//! buckets by a hash of the IP, and a small node file holds what is node-wide. A commit
//! that changes several files goes through the redo log of [`crate::store::commit_files`],
//! so it lands whole or not at all.
//!
//! Layout of `<state_dir>/ledger/` (directory 0700, files 0600):
//! ```text
//! node.json    {"format": 2, "boot_id": "...", "backend": "ipset", "last_dump": {...}}
//! ct-XX.json   {"format": 2, "containers": {"<ctid>": <container>, ...}}
//! ip-XX.json   {"format": 2, "holders": {"<ip>": ["<ctid>", ...], ...}}
//! pending      redo log of a multi-file write a crash interrupted (finished on next load)
//! ```
//! `XX` is the bucket (two hex digits, 00..3f) of the CTID or IP text: its 32-bit FNV-1a
//! hash modulo 64. `<container>` is the record documented in [`crate::ledger`]. An IP's
//! holders are the containers accounting it now or still holding a kernel counter for it
//! (a `seen` entry, harvested at the next full run); an empty bucket has no file.
//! A format 1 `<state_dir>/ledger.json` (one file for the node) is read when `node.json`
//! does not exist yet, and removed once the first full write has replaced it.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ctid::Ctid;
use crate::ledger::{Container, FormatError, LastDump, Ledger};
use crate::store::{self, FileChange, StateError};

pub const FORMAT: u32 = 2;
pub const DIR: &str = "ledger";
/// Buckets of each kind. Few enough that a full write of a node stays a few dozen files
/// (creating files is what costs here), many enough that one container's bucket stays
/// small (about 160 containers and 150 KB at 10,000 containers).
const BUCKETS: u8 = 64;
const NODE: &str = "node.json";
/// The format 1 single-file ledger.
pub const V1: &str = "ledger.json";

/// The bucket of a CTID or an IP: the FNV-1a hash of its text, modulo [`BUCKETS`].
pub fn bucket(text: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(BUCKETS)) as u8
}

fn ct_file(b: u8) -> String {
    format!("ct-{b:02x}.json")
}

fn ip_file(b: u8) -> String {
    format!("ip-{b:02x}.json")
}

fn ct_bucket(ctid: &Ctid) -> u8 {
    bucket(ctid.as_str())
}

fn ip_bucket(ip: &IpAddr) -> u8 {
    bucket(&ip.to_string())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_dump: Option<LastDump>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CtBucket {
    /// Checked by [`parse`] before.
    #[serde(rename = "format")]
    _format: u32,
    containers: BTreeMap<Ctid, Container>,
}

#[derive(Serialize)]
struct CtBucketRef<'a> {
    format: u32,
    containers: BTreeMap<&'a Ctid, &'a Container>,
}

type Holders = BTreeMap<IpAddr, BTreeSet<Ctid>>;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpBucket {
    format: u32,
    holders: Holders,
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain maps of strings and integers: serialising cannot fail.
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

fn json_error(e: serde_json::Error) -> FormatError {
    FormatError::Json(
        e.to_string()
            .chars()
            .flat_map(char::escape_debug)
            .take(300)
            .collect(),
    )
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, FormatError> {
    #[derive(Deserialize)]
    struct Probe {
        format: u32,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(json_error)?;
    if probe.format != FORMAT {
        return Err(FormatError::Version(probe.format));
    }
    serde_json::from_slice(bytes).map_err(json_error)
}

/// Pure: the containers of a `ct-XX.json` file, checked to belong in bucket `bucket` (any
/// bucket when `None`).
pub fn parse_ct_bucket(
    bytes: &[u8],
    bucket: Option<u8>,
) -> Result<BTreeMap<Ctid, Container>, FormatError> {
    let parsed: CtBucket = parse(bytes)?;
    if let Some(b) = bucket
        && let Some(id) = parsed.containers.keys().find(|id| ct_bucket(id) != b)
    {
        return Err(FormatError::Json(format!(
            "container {id} does not belong in this file"
        )));
    }
    Ok(parsed.containers)
}

/// Pure: a `ct-XX.json` file of these containers.
pub fn render_ct_bucket<'a>(
    containers: impl Iterator<Item = (&'a Ctid, &'a Container)>,
) -> Vec<u8> {
    to_json(&CtBucketRef {
        format: FORMAT,
        containers: containers.collect(),
    })
}

/// Which part of the ledger a command reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every container: full runs (sync, dump, restore, reports).
    All,
    /// The buckets of these containers: one container's event.
    Containers(Vec<Ctid>),
}

/// A ledger as read, with what is needed to write back only what changed.
#[derive(Debug)]
pub struct Loaded {
    dir: PathBuf,
    /// Fingerprints of the files as read (absent files are not listed).
    read: BTreeMap<String, u64>,
    /// The container buckets read; `None`: all of them.
    ct_buckets: Option<BTreeSet<u8>>,
    /// The index as read, for the IP buckets read; `None`: all of them.
    holders: Holders,
    ip_buckets: Option<BTreeSet<u8>>,
    /// Read from a format 1 `ledger.json`, to be removed after the first full write.
    v1: bool,
    /// For a partial read: the IPs each container read held then.
    held_at_load: BTreeMap<Ctid, BTreeSet<IpAddr>>,
    /// `node.json` exists (a node already in this format).
    pub node_file: bool,
    /// The backend the last full run used (from `node.json`).
    pub backend: Option<String>,
}

fn ledger_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

/// Read a file of the ledger directory; a missing one is `None`.
fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn corrupt(path: PathBuf, source: FormatError) -> StateError {
    StateError::Corrupt { path, source }
}

/// Read the ledger (the caller holds the lock): finish an interrupted write first, then read
/// `scope`. A missing ledger is an empty one; a file that does not parse is an error naming
/// it, and nothing is written.
pub fn load(state_dir: &Path, scope: &Scope) -> Result<(Ledger, Loaded), StateError> {
    let dir = ledger_dir(state_dir);
    if dir.exists() {
        store::replay_pending(&dir)?;
    }
    load_files(state_dir, scope)
}

/// Read the whole ledger for a view, writing nothing: a redo log left by a killed write is
/// an error (finishing it means writing), and a missing ledger is an empty one.
pub fn load_view(state_dir: &Path) -> Result<(Ledger, Loaded), StateError> {
    let dir = ledger_dir(state_dir);
    if dir.join(store::PENDING).exists() {
        return Err(StateError::Unfinished { path: dir });
    }
    load_files(state_dir, &Scope::All)
}

fn load_files(state_dir: &Path, scope: &Scope) -> Result<(Ledger, Loaded), StateError> {
    let dir = ledger_dir(state_dir);
    let mut ledger = Ledger::default();
    let mut loaded = Loaded::nothing_read(&dir);
    let node_path = dir.join(NODE);
    match read_opt(&node_path)? {
        Some(bytes) => {
            let node: NodeFile = parse(&bytes).map_err(|e| corrupt(node_path.clone(), e))?;
            loaded.read.insert(NODE.to_string(), fingerprint(&bytes));
            loaded.node_file = true;
            loaded.backend = node.backend;
            ledger.boot_id = node.boot_id;
            ledger.last_dump = node.last_dump;
        }
        None => {
            // A node still on format 1, or a new one: only a full run converts it.
            let v1_path = state_dir.join(V1);
            if let Some(bytes) = read_opt(&v1_path)? {
                ledger = Ledger::from_json(&bytes).map_err(|e| corrupt(v1_path, e))?;
                loaded.v1 = true;
                return Ok((ledger, loaded));
            }
            // Buckets without their node file: its boot id is lost, and going on would
            // take every kernel counter for new (counted twice).
            if dir.exists() && (0..BUCKETS).any(|b| dir.join(ct_file(b)).exists()) {
                return Err(corrupt(
                    node_path,
                    FormatError::Json(
                        "missing, while container buckets exist: restore it from a backup".into(),
                    ),
                ));
            }
        }
    }
    let buckets: Vec<u8> = match scope {
        Scope::All => (0..BUCKETS).collect(),
        Scope::Containers(ids) => {
            let set: BTreeSet<u8> = ids.iter().map(ct_bucket).collect();
            loaded.ct_buckets = Some(set.clone());
            set.into_iter().collect()
        }
    };
    for b in buckets {
        let name = ct_file(b);
        let path = dir.join(&name);
        if let Some(bytes) = read_opt(&path)? {
            let containers =
                parse_ct_bucket(&bytes, Some(b)).map_err(|e| corrupt(path.clone(), e))?;
            ledger.containers.extend(containers);
            loaded.read.insert(name, fingerprint(&bytes));
        }
    }
    if *scope == Scope::All {
        loaded.load_ip_buckets((0..BUCKETS).collect())?;
        loaded.ip_buckets = None;
    } else {
        loaded.ip_buckets = Some(BTreeSet::new());
        loaded.held_at_load = ledger
            .containers
            .iter()
            .map(|(id, c)| (id.clone(), c.held_ips()))
            .collect();
    }
    Ok((ledger, loaded))
}

/// What [`salvage`] found and did.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// Files that did not parse, each moved aside to the path given (their containers'
    /// records are lost).
    pub moved_aside: Vec<(PathBuf, PathBuf)>,
    /// `node.json` was missing or moved aside: the boot id, backend and last dump are lost.
    pub node_lost: bool,
    /// The last dump, when the node file survived.
    pub last_dump: Option<LastDump>,
}

/// `vzacct repair`: read whatever of the ledger still parses (the caller holds the lock).
/// A file that does not parse (node file, bucket, redo log) is moved aside to
/// `<name>.corrupt-<unix time>`; the index is rebuilt from the containers; the node file is
/// written anew by the next save. The boot id is dropped, so the caller's harvest sees a
/// new boot and can take every kernel counter as a baseline.
pub fn salvage(state_dir: &Path, stamp: i64) -> Result<(Ledger, Loaded, Salvaged), StateError> {
    let dir = ledger_dir(state_dir);
    let mut found = Salvaged::default();
    let aside = |path: &Path, found: &mut Salvaged| -> Result<(), StateError> {
        let mut to = path.as_os_str().to_owned();
        to.push(format!(".corrupt-{stamp}"));
        let to = PathBuf::from(to);
        std::fs::rename(path, &to).map_err(|source| StateError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        found.moved_aside.push((path.to_path_buf(), to));
        Ok(())
    };
    if dir.exists() {
        match store::replay_pending(&dir) {
            Ok(()) => {}
            Err(StateError::BadRedoLog { path }) => aside(&path, &mut found)?,
            Err(e) => return Err(e),
        }
    }
    let node_path = dir.join(NODE);
    let node = match read_opt(&node_path)? {
        Some(bytes) => match parse::<NodeFile>(&bytes) {
            Ok(n) => Some(n),
            Err(_) => {
                aside(&node_path, &mut found)?;
                None
            }
        },
        None => None,
    };
    found.node_lost = node.is_none();
    let mut ledger = Ledger::default();
    // A format 1 ledger that still parses is a whole ledger: nothing else to salvage.
    let v1_path = state_dir.join(V1);
    if node.is_none()
        && let Some(bytes) = read_opt(&v1_path)?
    {
        match Ledger::from_json(&bytes) {
            Ok(l) => {
                ledger = l;
                found.node_lost = false;
            }
            Err(_) => aside(&v1_path, &mut found)?,
        }
    }
    let mut loaded = Loaded {
        v1: read_opt(&v1_path)?.is_some(),
        node_file: node.is_some(),
        backend: node.as_ref().and_then(|n| n.backend.clone()),
        ..Loaded::nothing_read(&dir)
    };
    found.last_dump = node
        .as_ref()
        .and_then(|n| n.last_dump.clone())
        .or_else(|| ledger.last_dump.clone());
    ledger.last_dump = found.last_dump.clone();
    for b in 0..BUCKETS {
        let name = ct_file(b);
        let path = dir.join(&name);
        if let Some(bytes) = read_opt(&path)? {
            match parse_ct_bucket(&bytes, Some(b)) {
                Ok(cts) => {
                    for (id, c) in cts {
                        ledger.containers.entry(id).or_insert(c);
                    }
                    loaded.read.insert(name, fingerprint(&bytes));
                }
                Err(_) => aside(&path, &mut found)?,
            }
        }
        // Every index file is written anew (or removed) from the containers.
        if dir.join(ip_file(b)).exists() {
            loaded.read.insert(ip_file(b), 0);
        }
    }
    ledger.boot_id = None;
    Ok((ledger, loaded, found))
}

impl Loaded {
    /// A whole-node read of `dir` before any file is read.
    fn nothing_read(dir: &Path) -> Loaded {
        Loaded {
            dir: dir.to_path_buf(),
            read: BTreeMap::new(),
            ct_buckets: None,
            holders: BTreeMap::new(),
            ip_buckets: None,
            held_at_load: BTreeMap::new(),
            v1: false,
            node_file: false,
            backend: None,
        }
    }

    fn load_ip_buckets(&mut self, buckets: BTreeSet<u8>) -> Result<(), StateError> {
        for b in buckets {
            if self.ip_buckets.as_ref().is_some_and(|s| s.contains(&b)) {
                continue;
            }
            let name = ip_file(b);
            let path = self.dir.join(&name);
            if let Some(bytes) = read_opt(&path)? {
                let bucket: IpBucket = parse(&bytes).map_err(|e| corrupt(path.clone(), e))?;
                for (ip, h) in bucket.holders {
                    if ip_bucket(&ip) != b {
                        return Err(corrupt(
                            path,
                            FormatError::Json(format!("IP {ip} does not belong in this file")),
                        ));
                    }
                    self.holders.insert(ip, h);
                }
                self.read.insert(name, fingerprint(&bytes));
            }
            if let Some(s) = &mut self.ip_buckets {
                s.insert(b);
            }
        }
        Ok(())
    }

    /// Whether this is a partial read (one container's event).
    pub fn partial(&self) -> bool {
        self.ct_buckets.is_some()
    }

    /// The containers holding a counter for each of `ips`, from the index (reading the
    /// buckets concerned). Only for a partial read of a node in this format.
    pub fn holders(&mut self, ips: &[IpAddr]) -> Result<Vec<BTreeSet<Ctid>>, StateError> {
        self.load_ip_buckets(ips.iter().map(ip_bucket).collect())?;
        Ok(ips
            .iter()
            .map(|ip| self.holders.get(ip).cloned().unwrap_or_default())
            .collect())
    }

    fn node_json(ledger: &Ledger, backend: Option<&str>) -> Vec<u8> {
        to_json(&NodeFile {
            format: FORMAT,
            boot_id: ledger.boot_id.clone(),
            backend: backend.map(str::to_string),
            last_dump: ledger.last_dump.clone(),
        })
    }

    /// Write back what changed: the buckets read whose content differs, the index entries
    /// of the IPs their containers hold or held, and the node file. `backend` is the
    /// backend a full run used (`None` keeps the one recorded).
    pub fn save(&mut self, ledger: &Ledger, backend: Option<&str>) -> Result<(), StateError> {
        if self.partial() {
            // The index buckets of every IP whose holders changed must be read first.
            let mut changed = BTreeSet::new();
            let empty = BTreeSet::new();
            for (id, c) in &ledger.containers {
                let before = self.held_at_load.get(id).unwrap_or(&empty);
                changed.extend(c.held_ips().symmetric_difference(before).map(ip_bucket));
            }
            for (id, before) in &self.held_at_load {
                if !ledger.containers.contains_key(id) {
                    changed.extend(before.iter().map(ip_bucket));
                }
            }
            self.load_ip_buckets(changed)?;
        }
        let mut changes = Vec::new();
        let mut put = |name: String, bytes: Option<Vec<u8>>| {
            let old = self.read.get(&name);
            match bytes {
                Some(b) if old != Some(&fingerprint(&b)) => {
                    changes.push(FileChange::Write(name, b))
                }
                None if old.is_some() => changes.push(FileChange::Remove(name)),
                _ => {}
            }
        };
        let backend = backend.map(str::to_string).or_else(|| self.backend.clone());
        put(
            NODE.to_string(),
            Some(Self::node_json(ledger, backend.as_deref())),
        );
        // Containers, by bucket.
        let mut by_bucket: BTreeMap<u8, BTreeMap<&Ctid, &Container>> = BTreeMap::new();
        for (id, c) in &ledger.containers {
            by_bucket.entry(ct_bucket(id)).or_default().insert(id, c);
        }
        let ct_scope: Vec<u8> = match &self.ct_buckets {
            Some(s) => s.iter().copied().collect(),
            None => (0..BUCKETS).collect(),
        };
        for b in ct_scope {
            let body = by_bucket
                .remove(&b)
                .map(|c| render_ct_bucket(c.into_iter()));
            put(ct_file(b), body);
        }
        // A partial read only ever holds the containers of its buckets.
        if let Some((b, _)) = by_bucket.iter().next() {
            return Err(StateError::Write {
                path: self.dir.join(ct_file(*b)),
                source: std::io::Error::other("internal: a container outside the buckets read"),
            });
        }
        // The index: rebuilt for every IP of the buckets read. Holders outside the
        // container buckets read are kept as they were.
        let mut holders: Holders = BTreeMap::new();
        if let Some(ct) = &self.ct_buckets {
            for (ip, h) in &self.holders {
                let kept: BTreeSet<Ctid> = h
                    .iter()
                    .filter(|id| !ct.contains(&ct_bucket(id)))
                    .cloned()
                    .collect();
                if !kept.is_empty() {
                    holders.insert(*ip, kept);
                }
            }
        }
        for (id, c) in &ledger.containers {
            for ip in c.held_ips() {
                holders.entry(ip).or_default().insert(id.clone());
            }
        }
        let mut ip_by_bucket: BTreeMap<u8, Holders> = BTreeMap::new();
        for (ip, h) in holders {
            ip_by_bucket
                .entry(ip_bucket(&ip))
                .or_default()
                .insert(ip, h);
        }
        let ip_scope: Vec<u8> = match &self.ip_buckets {
            Some(s) => s.iter().copied().collect(),
            None => (0..BUCKETS).collect(),
        };
        for b in &ip_scope {
            let body = ip_by_bucket.remove(b).map(|holders| {
                to_json(&IpBucket {
                    format: FORMAT,
                    holders,
                })
            });
            put(ip_file(*b), body);
        }
        let state_dir = self.dir.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !changes.is_empty() {
            let new_dir = !self.dir.exists();
            store::create_private_dir(&self.dir)?;
            if new_dir {
                sync_dir(&state_dir)?;
            }
            store::commit_files(&self.dir, &changes).map_err(|source| StateError::Write {
                path: self.dir.clone(),
                source,
            })?;
            // What is on disk now, for a second save by the same command.
            for c in &changes {
                match c {
                    FileChange::Write(name, bytes) => {
                        self.read.insert(name.clone(), fingerprint(bytes));
                    }
                    FileChange::Remove(name) => {
                        self.read.remove(name);
                    }
                }
            }
        }
        // A format 1 file is gone once a full write replaced it (also one a crash left
        // behind right after the conversion).
        if self.ct_buckets.is_none() && self.dir.join(NODE).exists() {
            let old = state_dir.join(V1);
            match std::fs::remove_file(&old) {
                Ok(()) => sync_dir(&state_dir)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StateError::Write {
                        path: old,
                        source: e,
                    });
                }
            }
            self.v1 = false;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|source| StateError::Write {
            path: dir.to_path_buf(),
            source,
        })
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
            ..Ledger::default()
        };
        for (ct, a) in [
            ("101", "10.0.0.1"),
            ("102", "10.0.0.2"),
            ("103", "2001:db8::3"),
        ] {
            l.assign(&id(ct), ip(a), now, today);
        }
        l
    }

    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir.join(DIR))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn buckets_are_stable() {
        // FNV-1a: these values are part of the on-disk format.
        assert_eq!(bucket(""), 0x05);
        assert_eq!(bucket("101"), 0x2f);
        assert_eq!(bucket("10.0.0.1"), 0x0d);
    }

    #[test]
    fn full_round_trip_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let l = node();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.save(&l, Some("ipset")).unwrap();
        let (back, loaded) = load(dir.path(), &Scope::All).unwrap();
        assert_eq!(back, l);
        assert_eq!(loaded.backend.as_deref(), Some("ipset"));
        let f = files(dir.path());
        let mut want: BTreeSet<String> = ["node.json".to_string()].into();
        for ct in ["101", "102", "103"] {
            want.insert(ct_file(bucket(ct)));
        }
        for a in ["10.0.0.1", "10.0.0.2", "2001:db8::3"] {
            want.insert(ip_file(bucket(a)));
        }
        assert_eq!(f.keys().cloned().collect::<BTreeSet<_>>(), want);
        assert_eq!(
            String::from_utf8(f["node.json"].clone()).unwrap(),
            "{\"format\":2,\"boot_id\":\"b1\",\"backend\":\"ipset\"}\n"
        );
        assert_eq!(
            String::from_utf8(f[&ip_file(bucket("10.0.0.2"))].clone()).unwrap(),
            "{\"format\":2,\"holders\":{\"10.0.0.2\":[\"102\"]}}\n"
        );
        // Saving the same ledger again writes nothing.
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.save(&l, None).unwrap();
        assert_eq!(files(dir.path()), f);
    }

    #[test]
    fn one_container_touches_only_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.save(&node(), Some("ipset")).unwrap();
        let before = files(dir.path());
        let (mut part, mut loaded) = load(dir.path(), &Scope::Containers(vec![id("101")])).unwrap();
        assert!(part.containers.contains_key(&id("101")));
        assert!(!part.containers.contains_key(&id("102")));
        let h = loaded.holders(&[ip("10.0.0.9"), ip("10.0.0.1")]).unwrap();
        assert_eq!(h, [BTreeSet::new(), [id("101")].into()]);
        let now = DateTime::parse_from_rfc3339("2026-11-29T13:00:00+00:00").unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        part.assign_from(&id("101"), ip("10.0.0.9"), None, now, today);
        part.unassign(&id("101"), &ip("10.0.0.1"));
        loaded.save(&part, None).unwrap();
        let after = files(dir.path());
        let changed: BTreeSet<String> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(before.keys().filter(|k| !after.contains_key(*k)).cloned())
            .collect();
        let mut want: BTreeSet<String> =
            [ct_file(bucket("101")), ip_file(bucket("10.0.0.9"))].into();
        want.insert(ip_file(bucket("10.0.0.1")));
        assert_eq!(changed, want);
        // The whole node reads back with the change and the others untouched.
        let (full, _) = load(dir.path(), &Scope::All).unwrap();
        let mut expect = node();
        expect
            .containers
            .insert(id("101"), part.containers[&id("101")].clone());
        assert_eq!(full, expect);
        let (_, mut loaded) = load(dir.path(), &Scope::Containers(vec![id("102")])).unwrap();
        assert_eq!(
            loaded.holders(&[ip("10.0.0.9"), ip("10.0.0.1")]).unwrap(),
            [[id("101")].into(), BTreeSet::new()]
        );
    }

    #[test]
    fn format_1_is_read_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let l = node();
        std::fs::write(dir.path().join(V1), l.to_json()).unwrap();
        let (back, mut loaded) = load(dir.path(), &Scope::Containers(vec![id("101")])).unwrap();
        assert_eq!(back, l);
        assert!(!loaded.node_file);
        loaded.save(&back, Some("iptables")).unwrap();
        assert!(!dir.path().join(V1).exists());
        let (again, loaded) = load(dir.path(), &Scope::All).unwrap();
        assert_eq!(again, l);
        assert!(loaded.node_file);
    }

    #[test]
    fn buckets_without_their_node_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.save(&node(), None).unwrap();
        let before = files(dir.path());
        std::fs::remove_file(dir.path().join(DIR).join(NODE)).unwrap();
        let e = load(dir.path(), &Scope::All).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("node.json"), "{e}");
        let mut after = files(dir.path());
        after.insert(NODE.into(), before[NODE].clone());
        assert_eq!(after, before, "nothing written");
    }

    #[test]
    fn a_format_1_file_left_by_a_crash_goes_at_the_next_full_write() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.save(&node(), None).unwrap();
        std::fs::write(dir.path().join(V1), b"{\"format\":1,\"containers\":{}}").unwrap();
        let (l, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        assert_eq!(l, node(), "node.json wins over a leftover ledger.json");
        loaded.save(&l, None).unwrap();
        assert!(!dir.path().join(V1).exists());
    }

    #[test]
    fn corrupt_or_misplaced_files_are_named_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut loaded) = load(dir.path(), &Scope::All).unwrap();
        loaded.save(&node(), None).unwrap();
        let name = ct_file(bucket("101"));
        let path = dir.path().join(DIR).join(&name);
        let other = ct_file(bucket("102"));
        let misplaced = std::fs::read(dir.path().join(DIR).join(&other)).unwrap();
        for text in [
            b"{\"format\":2,\"contai".to_vec(),
            b"{\"format\":3,\"containers\":{}}".to_vec(),
            b"{\"format\":2,\"containers\":{\"../x\":{}}}".to_vec(),
            misplaced,
        ] {
            std::fs::write(&path, &text).unwrap();
            let e = load(dir.path(), &Scope::All).unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(&name), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), text);
        }
    }
}
