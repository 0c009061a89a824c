//! The ledgers of earlier releases, read once to convert them into the database: format 2,
//! the directory `<state_dir>/ledger/` (`node.json`, container buckets `ct-XX.json`, IP
//! index buckets `ip-XX.json`, and a redo log `pending` a killed write may have left), and
//! format 1, the single file `<state_dir>/ledger.json`. Nothing here writes into them: a
//! redo log is carried out in memory, and once the database is in place the old files are
//! moved, untouched, to `<state_dir>/ledger.migrated-<date>/`.
//!
//! ```text
//! node.json    {"format": 2, "boot_id": "...", "backend": "ipset", "last_dump": {...}}
//! ct-XX.json   {"format": 2, "containers": {"<ctid>": <container>, ...}}
//! ip-XX.json   {"format": 2, "holders": {"<ip>": ["<ctid>", ...]}}   (derived; not read)
//! pending      "vzacct redo log 1\n", then "W <name> <len>\n<bytes>\n" or "R <name>\n"
//!              lines, then "END\n"
//! ```
//! `XX` is the 32-bit FNV-1a hash of the CTID text modulo 64, two hex digits; `<container>`
//! is the record documented in [`crate::ledger`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ctid::Ctid;
use crate::ledger::db::StateError;
use crate::ledger::{Container, FormatError, LastDump, Ledger};

/// The format 2 directory, and the format 1 file.
pub const DIR: &str = "ledger";
pub const V1: &str = "ledger.json";
const FORMAT: u32 = 2;
const NODE: &str = "node.json";
const PENDING: &str = "pending";
const PENDING_MAGIC: &str = "vzacct redo log 1\n";
const BUCKETS: u8 = 64;

/// A ledger of an earlier release, as read.
#[derive(Debug)]
pub struct Old {
    pub ledger: Ledger,
    /// The backend its last full run used.
    pub backend: Option<String>,
}

/// The bucket of a CTID: the FNV-1a hash of its text, modulo 64.
pub fn bucket(text: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(BUCKETS)) as u8
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    #[serde(rename = "format")]
    _format: u32,
    #[serde(default)]
    boot_id: Option<String>,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    last_dump: Option<LastDump>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CtBucket {
    #[serde(rename = "format")]
    _format: u32,
    containers: BTreeMap<Ctid, Container>,
}

#[derive(Serialize)]
struct CtBucketRef<'a> {
    format: u32,
    containers: BTreeMap<&'a Ctid, &'a Container>,
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
        && let Some(id) = parsed
            .containers
            .keys()
            .find(|id| self::bucket(id.as_str()) != b)
    {
        return Err(FormatError::Json(format!(
            "container {id} does not belong in this file"
        )));
    }
    Ok(parsed.containers)
}

/// Pure: a `ct-XX.json` file of these containers, as the earlier release wrote it.
pub fn render_ct_bucket<'a>(
    containers: impl Iterator<Item = (&'a Ctid, &'a Container)>,
) -> Vec<u8> {
    let out = serde_json::to_vec(&CtBucketRef {
        format: FORMAT,
        containers: containers.collect(),
    })
    .unwrap_or_default();
    let mut out = without_free(out);
    out.push(b'\n');
    out
}

/// JSON of figures as the earlier releases wrote them: without the free figures, which
/// they did not have (they are zero in what those formats hold; any other value stays).
pub fn without_free(json: Vec<u8>) -> Vec<u8> {
    const FREE: &[u8] =
        b",\"free_in_bytes\":0,\"free_out_bytes\":0,\"free_in_packets\":0,\"free_out_packets\":0";
    let mut out = Vec::with_capacity(json.len());
    let mut rest = &json[..];
    while let Some(i) = rest.windows(FREE.len()).position(|w| w == FREE) {
        out.extend_from_slice(&rest[..i]);
        rest = &rest[i + FREE.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The `seen` map of a container record: keyed by each counter's text
/// ([`CounterId`]'s `Display`), in the order of that text, as earlier releases wrote it.
pub mod seen {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::{CounterId, Counters};

    pub fn serialize<S: Serializer>(
        seen: &BTreeMap<CounterId, Counters>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let by_text: BTreeMap<String, &Counters> =
            seen.iter().map(|(k, v)| (k.to_string(), v)).collect();
        s.collect_map(by_text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<CounterId, Counters>, D::Error> {
        let by_text = BTreeMap::<String, Counters>::deserialize(d)?;
        by_text
            .into_iter()
            .map(|(k, v)| Ok((k.parse().map_err(serde::de::Error::custom)?, v)))
            .collect()
    }
}

/// Pure: the changes of a redo log (`None`: torn or not one).
fn parse_pending(bytes: &[u8]) -> Option<Vec<(String, Option<Vec<u8>>)>> {
    let mut rest = bytes.strip_prefix(PENDING_MAGIC.as_bytes())?;
    let mut changes = Vec::new();
    let safe = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && !n.starts_with('.')
            && n != PENDING
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    loop {
        let nl = rest.iter().position(|b| *b == b'\n')?;
        let line = std::str::from_utf8(&rest[..nl]).ok()?;
        rest = &rest[nl + 1..];
        let mut words = line.split(' ');
        match (words.next()?, words.next(), words.next(), words.next()) {
            ("END", None, None, None) => return rest.is_empty().then_some(changes),
            ("R", Some(name), None, None) if safe(name) => changes.push((name.to_string(), None)),
            ("W", Some(name), Some(len), None) if safe(name) => {
                let len: usize = len.parse().ok()?;
                let body = rest.get(..len)?;
                if rest.get(len) != Some(&b'\n') {
                    return None;
                }
                changes.push((name.to_string(), Some(body.to_vec())));
                rest = &rest[len + 1..];
            }
            _ => return None,
        }
    }
}

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

/// Whether a ledger of an earlier release is in the state dir.
pub fn present(state_dir: &Path) -> bool {
    state_dir.join(DIR).exists() || state_dir.join(V1).exists()
}

/// Read the ledger of an earlier release, if there is one: format 2 (with its redo log
/// carried out in memory) or else format 1. A file that does not parse is an error naming
/// it.
pub fn read(state_dir: &Path) -> Result<Option<Old>, StateError> {
    let dir = state_dir.join(DIR);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let wanted = name == NODE
                || name == PENDING
                || (0..BUCKETS).any(|b| name == format!("ct-{b:02x}.json"));
            if wanted && let Some(bytes) = read_opt(&e.path())? {
                files.insert(name, bytes);
            }
        }
    }
    if let Some(log) = files.remove(PENDING) {
        let changes = parse_pending(&log).ok_or_else(|| StateError::BadRedoLog {
            path: dir.join(PENDING),
        })?;
        for (name, body) in changes {
            match body {
                Some(b) => files.insert(name, b),
                None => files.remove(&name),
            };
        }
    }
    let Some(node_bytes) = files.remove(NODE) else {
        if files.keys().any(|n| n.starts_with("ct-")) {
            return Err(corrupt(
                dir.join(NODE),
                FormatError::Json(
                    "missing, while container buckets exist: restore it from a backup".into(),
                ),
            ));
        }
        let v1 = state_dir.join(V1);
        return match read_opt(&v1)? {
            Some(bytes) => {
                let ledger = Ledger::from_json(&bytes).map_err(|e| corrupt(v1, e))?;
                Ok(Some(Old {
                    ledger,
                    backend: None,
                }))
            }
            None => Ok(None),
        };
    };
    let node: NodeFile = parse(&node_bytes).map_err(|e| corrupt(dir.join(NODE), e))?;
    let mut ledger = Ledger {
        boot_id: node.boot_id,
        last_dump: node.last_dump,
        ..Ledger::default()
    };
    for (name, bytes) in &files {
        let b = u8::from_str_radix(&name[3..5], 16).unwrap_or(u8::MAX);
        let cts = parse_ct_bucket(bytes, Some(b)).map_err(|e| corrupt(dir.join(name), e))?;
        ledger.containers.extend(cts);
    }
    Ok(Some(Old {
        ledger,
        backend: node.backend,
    }))
}

/// Move the files of an earlier release, untouched, into `ledger.migrated-<date>/` (a
/// new name each time), once the database holds their content. Returns where they went.
pub fn move_aside(state_dir: &Path) -> Result<PathBuf, StateError> {
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let mut to = state_dir.join(format!("ledger.migrated-{date}"));
    let mut n = 1;
    while to.exists() {
        n += 1;
        to = state_dir.join(format!("ledger.migrated-{date}.{n}"));
    }
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Write { path, source }
    };
    let dir = state_dir.join(DIR);
    if dir.exists() {
        std::fs::rename(&dir, &to).map_err(fail(&dir))?;
    } else {
        std::fs::create_dir(&to).map_err(fail(&to))?;
    }
    let v1 = state_dir.join(V1);
    if v1.exists() {
        std::fs::rename(&v1, to.join(V1)).map_err(fail(&v1))?;
    }
    std::fs::File::open(state_dir)
        .and_then(|f| f.sync_all())
        .map_err(fail(state_dir))?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable() {
        assert_eq!(bucket(""), 0x05);
        assert_eq!(bucket("101"), 0x2f);
    }

    #[test]
    fn redo_logs() {
        let text =
            b"vzacct redo log 1\nW a.json 15\nA\nwith newline\n\nR gone.json\nW b.json 0\n\nEND\n";
        assert_eq!(
            parse_pending(text),
            Some(vec![
                ("a.json".into(), Some(b"A\nwith newline\n".to_vec())),
                ("gone.json".into(), None),
                ("b.json".into(), Some(Vec::new())),
            ])
        );
        for cut in 0..text.len() {
            assert_eq!(parse_pending(&text[..cut]), None, "cut at {cut}");
        }
        for bad in [
            "vzacct redo log 1\nR ../x\nEND\n",
            "vzacct redo log 1\nW pending 0\n\nEND\n",
            "vzacct redo log 1\nEND\nextra",
        ] {
            assert_eq!(parse_pending(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn format_2_with_a_redo_log_and_format_1() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T12:00:00+00:00").unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        let mut l = Ledger {
            boot_id: Some("b1".into()),
            ..Ledger::default()
        };
        let id: Ctid = "101".parse().unwrap();
        l.assign(&id, "10.0.0.1".parse().unwrap(), now, today);
        // Format 1.
        std::fs::write(dir.path().join(V1), l.to_json()).unwrap();
        let old = read(dir.path()).unwrap().unwrap();
        assert_eq!(old.ledger, l);
        // Format 2 wins; its redo log replaces the bucket.
        let d = dir.path().join(DIR);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join(NODE),
            b"{\"format\":2,\"boot_id\":\"b1\",\"backend\":\"ipset\"}\n",
        )
        .unwrap();
        let name = format!("ct-{:02x}.json", bucket("101"));
        std::fs::write(d.join(&name), b"{\"format\":2,\"containers\":{}}\n").unwrap();
        let body = render_ct_bucket(l.containers.iter());
        let mut log = format!("{PENDING_MAGIC}W {name} {}\n", body.len()).into_bytes();
        log.extend_from_slice(&body);
        log.extend_from_slice(b"\nEND\n");
        std::fs::write(d.join(PENDING), &log).unwrap();
        let old = read(dir.path()).unwrap().unwrap();
        assert_eq!(old.ledger, l);
        assert_eq!(old.backend.as_deref(), Some("ipset"));
        // Moved aside whole.
        move_aside(dir.path()).unwrap();
        assert!(!present(dir.path()));
        let aside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(aside.len(), 1);
        let a = aside[0].path();
        assert!(a.join(PENDING).exists() && a.join(V1).exists() && a.join(&name).exists());
    }

    /// A record's `seen` keys are written as the earlier releases' text, in its order, and
    /// a key that is not one is refused with the file.
    #[test]
    fn seen_keys_are_the_old_text() {
        let text = "{\"format\":2,\"containers\":{\"101\":{\"ips\":[],\"total\":{\"in_bytes\":0,\"out_bytes\":0,\
                    \"in_packets\":0,\"out_packets\":0,\"local_in_bytes\":0,\"local_out_bytes\":0,\
                    \"local_in_packets\":0,\"local_out_packets\":0},\"seen\":{\
                    \"forward_in 10.0.0.10\":{\"packets\":1,\"bytes\":2},\
                    \"forward_in 10.0.0.9\":{\"packets\":0,\"bytes\":0},\
                    \"forward_out 10.0.0.9\":{\"packets\":0,\"bytes\":0},\
                    \"set vzacct-fi4 10.0.0.9\":{\"packets\":0,\"bytes\":0}}}}}\n";
        let cts = parse_ct_bucket(text.as_bytes(), None).unwrap();
        let seen = &cts[&"101".parse::<Ctid>().unwrap()].seen;
        assert_eq!(seen.len(), 4);
        assert_eq!(
            String::from_utf8(render_ct_bucket(cts.iter())).unwrap(),
            text
        );
        let bad = text.replace("forward_out 10.0.0.9", "forward_out 10.0.0.9 a b");
        let e = parse_ct_bucket(bad.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a counter: "), "{e}");
    }
}
