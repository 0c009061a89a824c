//! Ledgers written by the previous release (format 2: the `ledger/` directory, also with a
//! redo log a killed write left; format 1: `ledger.json`) are converted exactly by the first
//! command of this one: `show --json` is the same document before and after, every record
//! (last-seen counters, parked IPs, days, months, reset times) is carried over, the old
//! files are kept aside untouched, and a SIGKILL at any instant of the conversion leaves the
//! old ledger intact or the new one complete.
//!
//! The fixtures in `tests/fixtures/ledger/` were made by the previous release's binary;
//! `tests/fixtures/ledger/regenerate.sh` makes them again (through the ignored test
//! `regenerate_fixtures` below, run with `VZACCT_TEST_BIN` set to that binary).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ledger");
/// When the fixtures' `show --json` is taken.
const SHOW_AT: &str = "2026-12-03T09:30:00Z";
const BOOT_ID: &str = "4f1c2b1e-0c5a-4d3e-9a51-3f2b8d1c0a01";

/// A state dir with a fixture's ledger, and a config whose iptables cannot run, so `show`
/// gives the ledger's own figures (the same on any machine).
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(fixture: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        copy_tree(
            &Path::new(FIXTURES).join(fixture),
            &dir.path().join("state"),
        );
        std::fs::write(dir.path().join("boot_id"), format!("{BOOT_ID}\n")).unwrap();
        std::fs::write(
            dir.path().join("vzacct.conf"),
            format!(
                "[vzctl]\nconf_dir = {d}/conf\nveinfo = {d}/veinfo\n\
                 [netfilter]\niptables = /nonexistent/iptables\n\
                 ip6tables = /nonexistent/ip6tables\nbackend = ipset\n\
                 [storage]\nstate_dir = {d}/state\ncsv_dir = {d}/csv\ntimezone = UTC\n"
            ),
        )
        .unwrap();
        Site { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn command(&self, bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", "/nonexistent")
            .env("TZ", "UTC")
            .env("VZACCT_NOW", SHOW_AT)
            .env("VZACCT_BOOT_ID_FILE", self.dir.path().join("boot_id"))
            .arg("--config")
            .arg(self.dir.path().join("vzacct.conf"))
            .args(args);
        cmd
    }

    /// `show --json` by `bin`, with this site's temp dir written as `DIR`.
    fn show(&self, bin: &Path) -> String {
        let out = self.command(bin, &["show", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "show failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .replace(&self.dir.path().display().to_string(), "DIR")
    }
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vzacct"))
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// The one `ledger.migrated-*` directory of a state dir.
fn migrated(state: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ledger.migrated-")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

fn expected_show() -> serde_json::Value {
    as_release_1(&std::fs::read_to_string(Path::new(FIXTURES).join("show.json")).unwrap())
}

/// `show --json` with only the fields the release that wrote the fixtures printed: the
/// conversion must give the same figures; `jsonversion`, the billing periods, the quota and
/// the free figures (zero in everything converted) came later.
fn as_release_1(show: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(show).unwrap();
    let doc = v.as_object_mut().unwrap();
    doc.remove("jsonversion");
    for c in doc["containers"].as_array_mut().unwrap() {
        let c = c.as_object_mut().unwrap();
        for k in ["cycle_day", "period", "previous_period", "quota"] {
            c.remove(k);
        }
        let strip = |f: &mut serde_json::Value| {
            for k in [
                "free_in_bytes",
                "free_out_bytes",
                "free_in_packets",
                "free_out_packets",
            ] {
                let v = f.as_object_mut().unwrap().remove(k);
                assert!(v.is_none() || v == Some(0.into()), "{k}: {v:?}");
            }
        };
        for (k, f) in c.iter_mut() {
            match k.as_str() {
                "total" | "today" | "month" => strip(f),
                "by_ip" => f.as_array_mut().unwrap().iter_mut().for_each(strip),
                _ => {}
            }
        }
    }
    v
}

/// The old files, as the fixture has them (relative to the state dir).
fn old_files(fixture: &str) -> BTreeMap<String, Vec<u8>> {
    tree(&Path::new(FIXTURES).join(fixture))
}

fn converts_exactly(fixture: &str) {
    let site = Site::new(fixture);
    let before = old_files(fixture);
    let show = as_release_1(&site.show(&bin()));
    assert_eq!(show, expected_show(), "{fixture}: show --json differs");
    assert!(site.state().join("ledger.sqlite").exists());
    // The old files are aside, untouched: `ledger/` became the directory, `ledger.json`
    // went into it.
    let aside = tree(&migrated(&site.state()));
    let want: BTreeMap<String, Vec<u8>> = before
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("ledger/").unwrap_or(&k).to_string(), v))
        .collect();
    assert_eq!(aside, want);
    // Every record is carried over, last-seen counters and parked IPs included.
    let reference = tempfile::tempdir().unwrap();
    copy_tree(&Path::new(FIXTURES).join(fixture), reference.path());
    let old = vzacct::ledger::legacy::read(reference.path())
        .unwrap()
        .unwrap();
    let (new, loaded) = vzacct::ledger::db::load_view(&site.state()).unwrap();
    assert_eq!(new, old.ledger);
    assert_eq!(loaded.backend, old.backend);
    // A second command changes nothing.
    assert_eq!(as_release_1(&site.show(&bin())), expected_show());
    assert_eq!(tree(&migrated(&site.state())), aside);
}

#[test]
fn format_2_is_converted_exactly() {
    converts_exactly("v2");
}

#[test]
fn format_2_with_a_redo_log_is_finished_then_converted() {
    converts_exactly("v2-pending");
}

#[test]
fn format_1_is_converted_exactly() {
    converts_exactly("v1");
}

/// A view (`show`) is the first command: it converts, as a changing command would.
#[test]
fn a_view_converts_a_writable_state_dir() {
    let site = Site::new("v2");
    assert_eq!(as_release_1(&site.show(&bin())), expected_show());
    assert!(site.state().join("ledger.sqlite").exists());
    assert!(!site.state().join("ledger").exists());
}

/// SIGKILL at random instants of the conversion: afterwards the old ledger is intact where
/// it was and no database exists, or the database is complete; either way the next command
/// shows exactly the same figures.
#[test]
fn killed_at_random_points_of_the_conversion() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut old_kept, mut new_done) = (0, 0);
    for fixture in ["v2", "v2-pending", "v1"] {
        let before = old_files(fixture);
        for _ in 0..15 {
            let site = Site::new(fixture);
            let mut child = site.command(&bin(), &["show", "--json"]).spawn().unwrap();
            std::thread::sleep(std::time::Duration::from_micros(rand(15_000)));
            let _ = child.kill(); // SIGKILL, by the PID we started
            let _ = child.wait();
            let state = site.state();
            if state.join("ledger.sqlite").exists() {
                new_done += 1;
                let (new, _) = vzacct::ledger::db::load_view(&state).unwrap();
                let reference = tempfile::tempdir().unwrap();
                copy_tree(&Path::new(FIXTURES).join(fixture), reference.path());
                let old = vzacct::ledger::legacy::read(reference.path())
                    .unwrap()
                    .unwrap();
                assert_eq!(new, old.ledger, "{fixture}: database incomplete");
            } else {
                old_kept += 1;
                let now: BTreeMap<String, Vec<u8>> = tree(&state)
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("ledger/") || k == "ledger.json")
                    .collect();
                assert_eq!(now, before, "{fixture}: old ledger changed");
            }
            assert_eq!(
                as_release_1(&site.show(&bin())),
                expected_show(),
                "{fixture}"
            );
            assert!(!state.join("ledger").exists() && !state.join("ledger.json").exists());
        }
    }
    eprintln!("old ledger kept {old_kept} times, conversion done {new_done} times");
}

// --- making the fixtures with the previous release ----------------------------------------

const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];

fn traffic(node: &Node, ctid: &str, payload: usize, n: usize) {
    let c = node.ct(ctid);
    let w4: std::net::IpAddr = WORLD_V4.parse().unwrap();
    let w6: std::net::IpAddr = WORLD_V6.parse().unwrap();
    send_udp(node.world(), w4, &c.ns, c.v4, payload, n);
    send_udp(&c.ns, c.v4, node.world(), w4, payload + 10, n);
    send_udp(node.world(), w6, &c.ns, c.v6, payload, n);
}

/// Run by `regenerate.sh` with `VZACCT_TEST_BIN` = the previous release's binary: a node
/// with traffic over four days, a reset, a parked IP and counters not yet harvested; its
/// `ledger/` as `v2/`, the same with the last write left as a redo log as `v2-pending/`,
/// the same ledger as a format 1 file as `v1/`, and that release's `show --json` of it.
#[test]
#[ignore]
fn regenerate_fixtures() {
    let old = PathBuf::from(std::env::var("VZACCT_TEST_BIN").expect("VZACCT_TEST_BIN"));
    let node = Node::with_topology(Variant::NftIpset, CTS);
    std::fs::write(node.path("boot_id"), format!("{BOOT_ID}\n")).unwrap();
    node.at(
        "2026-11-30T10:00:00Z",
        &["add", "101", "10.0.0.1", "2001:db8:1::1"],
    );
    node.at("2026-11-30T10:00:00Z", &["add", "102", "10.0.0.2"]);
    traffic(&node, "101", 100, 3);
    traffic(&node, "102", 200, 2);
    node.at("2026-11-30T12:00:00Z", &["dump"]);
    traffic(&node, "101", 300, 1);
    node.at("2026-12-01T00:10:00Z", &["dump"]);
    traffic(&node, "102", 50, 4);
    node.at("2026-12-02T00:10:00Z", &["dump"]);
    node.at("2026-12-02T08:00:00Z", &["reset", "102"]);
    traffic(&node, "102", 70, 2);
    node.at("2026-12-02T09:00:00Z", &["dump"]);
    let t1 = tree(&node.path("state/ledger"));
    traffic(&node, "101", 20, 5);
    node.at("2026-12-03T00:20:00Z", &["dump"]);
    // vzctl stops 102: its route goes, then umount parks its IP for the next dump.
    node.ns.ip("route del 10.0.0.2/32 dev venet0");
    let out = node.vzacct_env(
        &["hook", "umount"],
        &[("VEID", "102"), ("VZACCT_NOW", "2026-12-03T09:00:00Z")],
    );
    assert!(out.status.success());
    traffic(&node, "101", 40, 2); // counted by the kernel, not harvested
    let t2 = tree(&node.path("state/ledger"));
    assert_ne!(t1, t2);
    let fx = Path::new(FIXTURES);
    let _ = std::fs::remove_dir_all(fx.join("v2"));
    let _ = std::fs::remove_dir_all(fx.join("v2-pending"));
    let _ = std::fs::remove_dir_all(fx.join("v1"));
    let put = |dir: &Path, files: &BTreeMap<String, Vec<u8>>| {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    };
    put(&fx.join("v2/ledger"), &t2);
    // The last write, as the redo log of a write killed before it was carried out.
    let mut log = b"vzacct redo log 1\n".to_vec();
    for (name, bytes) in &t2 {
        if t1.get(name) != Some(bytes) {
            log.extend_from_slice(format!("W {name} {}\n", bytes.len()).as_bytes());
            log.extend_from_slice(bytes);
            log.push(b'\n');
        }
    }
    for name in t1.keys().filter(|n| !t2.contains_key(*n)) {
        log.extend_from_slice(format!("R {name}\n").as_bytes());
    }
    log.extend_from_slice(b"END\n");
    let mut with_log = t1.clone();
    with_log.insert("pending".into(), log);
    put(&fx.join("v2-pending/ledger"), &with_log);
    // Format 1: the same ledger in one file.
    let v2 = vzacct::ledger::legacy::read(&fx.join("v2"))
        .unwrap()
        .unwrap();
    std::fs::create_dir_all(fx.join("v1")).unwrap();
    std::fs::write(fx.join("v1/ledger.json"), v2.ledger.to_json()).unwrap();
    // That release's view of it.
    let site = Site::new("v2");
    std::fs::write(fx.join("show.json"), site.show(&old)).unwrap();
    for f in ["v2-pending", "v1"] {
        assert_eq!(Site::new(f).show(&old), site.show(&old), "{f}");
    }
}
