//! Fuzzing every reader of outside input (issue "Hostile input, fuzzed"): a long campaign is
//! `VZACCT_FUZZ_CASES=200000 cargo test --release --test fuzz`.
//!
//! Targets: the CT config reader, the veinfo reader, the `iptables-save` parser, the INI config
//! and the ledger loader. No input may panic, hang, or take time (and so memory) beyond linear
//! in its size; every rejection is an error that names what failed, with no raw control
//! character on any line of its chain; warnings are capped, name the file and are just as
//! clean. Each target also has invariants of its own (see its `check_*` function). The bugs
//! this file found are fixed; their reproducers at the end stay as regression tests.
//!
//! Inputs are arbitrary bytes, arbitrary text, soups of the target's interesting tokens, and,
//! most of all, mutations of the checked-in corpus in `tests/fixtures/fuzz/<target>/` (bit
//! flips, inserted tokens such as quotes, backslashes, NUL, `18446744073709551616` or a 64 KiB
//! line, deletions, truncations, repeats, splices of two seeds), at most 1 MiB each. Every case
//! runs on a watchdog thread and fails if it takes a second or more. Beside the random cases,
//! every seed is cut and spliced at every point, and each target is timed on 1 MiB against
//! 8 MiB inputs to show linear behaviour.
//!
//! Budget: `VZACCT_FUZZ_CASES` random cases per target, 2000 by default. In a debug build the
//! random cases take about 1 s per target and the whole file about 30 s, most of it the
//! 8 MiB inputs; 200000 cases per target in a release build take about a minute.
//!
//! Failures are kept in `tests/fixtures/fuzz/regressions.txt`, beside the corpus rather than
//! proptest's default `tests/fuzz.proptest-regressions`: proptest appends a `cc <seed>` line
//! when a case fails, and every target replays every line first on every run (one file for
//! all targets; a seed replayed against another target is just one more random case). Commit
//! it together with the fix, so the failing case stays tested for good.

use std::collections::HashSet;
use std::error::Error;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::FileFailurePersistence;

use vzacct::backend::iptables;
use vzacct::config;
use vzacct::ledger::Ledger;
use vzacct::ledger::legacy as ledger_store;
use vzacct::vzctl::ctconf;
use vzacct::vzctl::veinfo;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz");
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fuzz/regressions.txt"
);
const MIB: usize = 1 << 20;
/// The largest random input.
const MAX_INPUT: usize = MIB;
/// The time any input of up to [`MAX_INPUT`] bytes may take, checks included.
const CASE_LIMIT: Duration = Duration::from_secs(1);
/// The time one of the 8 MiB inputs may take before it counts as a hang.
const BIG_LIMIT: Duration = Duration::from_secs(120);

/// One reader under test: its corpus directory, its checks, its own interesting tokens.
struct Target {
    name: &'static str,
    check: fn(&[u8]),
    tokens: &'static [&'static [u8]],
}

// ---------------------------------------------------------------------------------------
// The checks, one per target: run the reader on the input and assert every invariant.

const CT_ORIGIN: &str = "/etc/vz/conf/101.conf";

fn check_ctconf(bytes: &[u8]) {
    check_ctconf_from(bytes, Path::new(CT_ORIGIN), CT_ORIGIN);
}

/// `shown` is how `origin` must appear in every warning. Both dialects.
fn check_ctconf_from(bytes: &[u8], origin: &Path, shown: &str) {
    let written = ctconf_addresses(bytes);
    for dialect in [ctconf::Dialect::Vzctl4, ctconf::Dialect::Libvzctl] {
        let c = ctconf::parse_as(dialect, bytes, origin);
        check_warnings(&c.warnings, shown);
        let mut seen = HashSet::new();
        for ip in &c.ips {
            assert!(
                !ip.is_unspecified(),
                "{dialect:?}: unspecified address {ip} returned"
            );
            assert!(seen.insert(ip), "{dialect:?}: {ip} returned twice");
            assert!(
                written.contains(ip),
                "{dialect:?}: {ip} does not appear in the text"
            );
        }
    }
}

/// Every address written in a CT config: each run of address characters, after vzctl's
/// backslash escapes are undone line by line, that parses as an IP. vzctl 4.x reads a file
/// in pieces of at most its size less one byte, so a one-line file without a trailing
/// newline is also read without its last byte (`10.0.0.12` there is `10.0.0.1`); libvzctl
/// reads a line in pieces of 40959 bytes.
fn ctconf_addresses(bytes: &[u8]) -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let short = bytes.split_last().map_or(&[][..], |(_, init)| init);
    let one_piece_short = (!short.contains(&b'\n')).then_some(short);
    let long_line_pieces = bytes
        .split(|&b| b == b'\n')
        .filter(|line| line.len() >= 40959)
        .flat_map(|line| line.chunks(40959));
    for line in bytes
        .split(|&b| b == b'\n')
        .chain(one_piece_short)
        .chain(long_line_pieces)
    {
        let mut unescaped = Vec::with_capacity(line.len());
        let mut escaped = false;
        for &b in line {
            if b == b'\\' && !escaped {
                escaped = true;
            } else {
                unescaped.push(b);
                escaped = false;
            }
        }
        out.extend(addresses_in(&unescaped));
    }
    out
}

fn addresses_in(bytes: &[u8]) -> impl Iterator<Item = IpAddr> + '_ {
    bytes
        .split(|b| !(b.is_ascii_hexdigit() || *b == b':' || *b == b'.'))
        .filter_map(|run| std::str::from_utf8(run).ok()?.parse().ok())
}

const VEINFO_ORIGIN: &str = "/proc/vz/veinfo";

fn check_veinfo(bytes: &[u8]) {
    check_veinfo_from(bytes, Path::new(VEINFO_ORIGIN), VEINFO_ORIGIN);
}

fn check_veinfo_from(bytes: &[u8], origin: &Path, shown: &str) {
    let v = veinfo::parse(bytes, origin);
    check_warnings(&v.warnings, shown);
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    let first_words: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.split_ascii_whitespace().next())
        .collect();
    let written: HashSet<IpAddr> = addresses_in(text.as_bytes()).collect();
    for (ctid, ips) in &v.containers {
        assert!(
            first_words.contains(ctid.as_str()),
            "CT {ctid} does not start any line"
        );
        let mut seen = HashSet::new();
        for ip in ips {
            assert!(!ip.is_unspecified(), "CT {ctid}: unspecified address {ip}");
            assert!(seen.insert(ip), "CT {ctid}: {ip} returned twice");
            assert!(written.contains(ip), "CT {ctid}: {ip} is not in the text");
        }
    }
}

/// Warnings: capped at 20 plus one summary line, each naming the file, none with a raw
/// control character.
fn check_warnings(warnings: &[String], shown_origin: &str) {
    assert!(
        warnings.len() <= 21,
        "{} warnings, more than 21",
        warnings.len()
    );
    for w in warnings {
        assert!(
            single_line_safe(w),
            "raw control character in warning {w:?}"
        );
        assert!(
            w.contains(shown_origin),
            "warning {w:?} does not name the file"
        );
    }
}

fn check_save(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let current = match iptables::parse_save(&text) {
        Ok(current) => current,
        Err(e) => {
            check_error(&e, &["saved ruleset"]);
            // At most 64 characters of the line, each escaped to at most 10.
            assert!(e.text.chars().count() <= 64 * 10 + 5, "echo not cut: {e}");
            assert!(e.to_string().starts_with(&format!("line {} ", e.line)));
            assert!(
                (1..=text.lines().count()).contains(&e.line),
                "line {} of {}",
                e.line,
                text.lines().count()
            );
            return;
        }
    };
    for j in &current.jumps {
        assert!(j.position >= 1, "{j:?}");
    }
    for seen in &current.rules {
        let Some(rule) = &seen.rule else { continue };
        assert_eq!(rule.kind.chain(), seen.chain, "{seen:?}");
        // What `spec` renders must read back as the very same rule.
        let again = format!(
            "*filter\n[0:0] -A {} {}\nCOMMIT\n",
            seen.chain.name(),
            rule.spec()
        );
        let reread = iptables::parse_save(&again)
            .unwrap_or_else(|e| panic!("{rule:?} rendered as {again:?}: {e}"));
        assert_eq!(
            reread.rules.first().and_then(|r| r.rule.as_ref()),
            Some(rule),
            "rule read from {:?}, rendered as {again:?}, reads back differently",
            seen.spec
        );
    }
}

const CONFIG_PATH: &str = "/etc/vz/vzacct.conf";

fn check_config(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let cfg = match config::parse(&text, Path::new(CONFIG_PATH)) {
        Ok(cfg) => cfg,
        Err(e) => return check_error(&e, &[CONFIG_PATH]),
    };
    let paths = [
        &cfg.conf_dir,
        &cfg.veinfo,
        &cfg.state_dir,
        &cfg.csv_dir,
        &cfg.hook_log,
    ];
    for p in paths.into_iter().chain(&cfg.prometheus_textfile) {
        let s = p.to_str().expect("a path from text is text");
        assert!(p.is_absolute(), "{s:?} is not absolute: {cfg:?}");
        assert!(single_line_safe(s), "control character in {s:?}");
        assert_eq!(s, s.trim(), "untrimmed path {s:?}");
    }
    for prog in [&cfg.iptables, &cfg.ip6tables] {
        assert!(!prog.is_empty(), "empty program: {cfg:?}");
        assert!(
            !prog.chars().any(|c| c.is_whitespace() || c.is_control()),
            "program {prog:?}"
        );
        assert!(
            prog.starts_with('/') || !prog.contains('/'),
            "relative path {prog:?}"
        );
    }
    assert!(
        config::valid_interface(&cfg.venet_interface),
        "{:?}",
        cfg.venet_interface
    );
    assert!((1..=3600).contains(&cfg.hook_lock_timeout), "{cfg:?}");
}

fn check_ledger_bucket(bytes: &[u8]) {
    let containers = match ledger_store::parse_ct_bucket(bytes, None) {
        Ok(c) => c,
        Err(e) => return check_error(&e, &["ledger", "format"]),
    };
    let json = ledger_store::render_ct_bucket(containers.iter());
    let again = ledger_store::parse_ct_bucket(&json, None).unwrap_or_else(|e| {
        panic!(
            "render wrote what parse refuses ({}): {}",
            vzacct::commands::error::chain(&e),
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(again, containers, "parse(render(x)) != x");
    assert_eq!(
        ledger_store::render_ct_bucket(again.iter()),
        json,
        "render is not stable"
    );
}

fn check_ledger(bytes: &[u8]) {
    let ledger = match Ledger::from_json(bytes) {
        Ok(ledger) => ledger,
        Err(e) => {
            return check_error(&e, &["ledger", "format"]);
        }
    };
    assert_eq!(ledger.format, 1);
    let json = ledger.to_json();
    let again = Ledger::from_json(&json).unwrap_or_else(|e| {
        panic!(
            "to_json wrote what from_json refuses ({}): {}",
            vzacct::commands::error::chain(&e),
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(again, ledger, "from_json(to_json(x)) != x");
    assert_eq!(again.to_json(), json, "to_json is not stable");
}

/// A rejection an operator can act on: every line of the error chain is non-empty and free
/// of raw control characters, and the top line names one of `names`.
fn check_error(err: &dyn Error, names: &[&str]) {
    check_error_except(err, names, |_| false);
}

/// [`check_error`], except that a line of the chain for which `known_bug` holds may hold raw
/// control characters.
fn check_error_except(err: &dyn Error, names: &[&str], known_bug: impl Fn(&str) -> bool) {
    let top = err.to_string();
    assert!(
        names.iter().any(|n| top.contains(n)),
        "error {top:?} names none of {names:?}"
    );
    let mut cur = Some(err);
    while let Some(e) = cur {
        let line = e.to_string();
        assert!(
            !line.trim().is_empty(),
            "empty message in the chain of {top:?}"
        );
        assert!(
            single_line_safe(&line) || known_bug(&line),
            "raw control character in error {line:?}"
        );
        cur = e.source();
    }
}

fn single_line_safe(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

// ---------------------------------------------------------------------------------------
// The targets and their interesting tokens (beside the common ones in `COMMON_TOKENS`).

const CTCONF: Target = Target {
    name: "ctconf",
    check: check_ctconf,
    tokens: &[
        b"IP_ADDRESS=",
        b"IP_ADDRESS=\"",
        b"IP_ADDRESS=\"10.0.0.1 ",
        b" 10.0.0.2/24",
        b"2001:db8::1/128",
        b"/+32",
        b"/-0",
        b"/",
        b"/999999999999999999999",
        b"fe80::1%eth0",
        b"NAME=\"",
        b"\\\n",
        b"\\\"",
        b"\x0b",
        b"\x0c",
    ],
};

const VEINFO: Target = Target {
    name: "veinfo",
    check: check_veinfo,
    tokens: &[
        b"0 ",
        b"       101     0    38      ",
        b"101 0 1 ",
        b"2147483644 ",
        b"2147483645 ",
        b"00101 ",
        b"-5 ",
        b"1.5 ",
        b"10.0.0.1 ",
        b"2001:db8::1 ",
        b"10.0.0.8/24 ",
        b"\x0b",
    ],
};

const SAVE: Target = Target {
    name: "ruleset",
    check: check_save,
    tokens: &[
        b"*filter\n",
        b"*nat\n",
        b"*",
        b"COMMIT\n",
        b"[0:0] ",
        b"[18446744073709551615:18446744073709551616] ",
        b"[1:2",
        b"[:] ",
        b"-A ",
        b"-A VZACCT-FORWARD ",
        b"-A FORWARD -j VZACCT-FORWARD\n",
        b"VZACCT-FORWARD",
        b"VZACCT-INPUT",
        b"VZACCT-OUTPUT",
        b"FORWARD",
        b":FORWARD ACCEPT [0:0]\n",
        b":VZACCT-INPUT - [0:0]\n",
        b"-j ",
        b"-g ",
        b"-m comment --comment ",
        b"\"ct:101\"",
        b"ct:8a1b2c3d-0000-1111-2222-333344445555",
        b" -d 10.0.0.1/32",
        b" -s 2001:db8::1/128",
        b" -i venet0",
        b" -o venet0",
        b" -o \"\"",
        b" -o \"a b\"",
        b"\" \"",
        b"# Generated by iptables-nft-save v1.8.9 (nf_tables)\n",
    ],
};

const CONFIG: Target = Target {
    name: "config",
    check: check_config,
    tokens: &[
        b"[vzctl]\n",
        b"[netfilter]\n",
        b"[storage]\n",
        b"[export]\n",
        b"[]\n",
        b"conf_dir = ",
        b"veinfo=",
        b"strict = yes",
        b"hook_lock_timeout = ",
        b"3600",
        b"hook_log = /",
        b"iptables = ",
        b"ip6tables = /sbin/ip6tables",
        b"ipv6 = no",
        b"venet_interface = ",
        b"venet0",
        b"state_dir = /",
        b"csv_dir = ",
        b"prometheus_textfile = ",
        b"; comment\n",
        b" = ",
        b"\n[",
    ],
};

const LEDGER_BUCKET: Target = Target {
    name: "ledger_bucket",
    check: check_ledger_bucket,
    tokens: &[
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b"\"format\":2,",
        b"\"format\":1,",
        b"\"containers\":{}",
        b"\"101\":{}",
        b"\"0\":{}",
        b"null",
        b"\"parked\":[\"10.0.0.1\"]",
        b"\"seen\":{\"set vzacct-fi4 10.0.0.1\":{\"packets\":1,\"bytes\":18446744073709551615}}",
        b"\"ips\":[\"10.0.0.1\",\"10.0.0.1\"]",
        b"\"2026-02-30\"",
        b"\"2026-11-29T12:00:00+23:59\"",
        b"18446744073709551616",
    ],
};

const LEDGER: Target = Target {
    name: "ledger",
    check: check_ledger,
    tokens: &[
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b"\"format\":",
        b"\"format\":1,",
        b"2",
        b"4294967296",
        b"\"containers\":{}",
        b"\"101\":{}",
        b"\"0\":{}",
        b"null",
        b"true",
        b"\"ips\":[\"10.0.0.1\",\"10.0.0.1\"]",
        b"\"2026-02-30\"",
        b"\"+10000-01-01\"",
        b"\"-0001-12-31\"",
        b"\"2026-11-29T12:00:00+23:59\"",
        b"\"2016-12-31T23:59:60Z\"",
        b"\"2026-11-29T12:00:00.123456789123-00:00\"",
        b"\\u0000",
        b"\\u001b",
        b"\\ud800",
        b"1e3",
        b"-0",
        b"1.5",
        b"\"seen\":{\"\":{\"packets\":0,\"bytes\":0}}",
        b"\"\\u001b[2J\":1",
    ],
};

/// Tokens that break parsers of every kind.
const COMMON_TOKENS: &[&[u8]] = &[
    b"\"",
    b"'",
    b"\\",
    b"\\\\",
    b"=",
    b"#",
    b";",
    b":",
    b"::",
    b"/",
    b"[",
    b"]",
    b"\n",
    b"\r",
    b"\r\n",
    b"\t",
    b" ",
    b"\0",
    b"\x1b[2J",
    b"\x7f",
    b"\xc2\x85",     // U+0085, a C1 control
    b"\xe2\x80\xae", // U+202E, right-to-left override
    b"\xef\xbf\xbd", // U+FFFD
    b"\xff",
    b"\xc3",
    b"0",
    b"-1",
    b"18446744073709551615",
    b"18446744073709551616",
    b"2147483645",
    b"0.0.0.0",
    b"::ffff:10.0.0.1",
    b"10.0.0.1",
    b"010.0.0.1",
    b"8A1B2C3D-0000-1111-2222-333344445555",
    b"$(reboot)",
];

/// Every token for `target`, with long lines and huge numbers made here.
fn tokens(target: &Target) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = COMMON_TOKENS
        .iter()
        .chain(target.tokens)
        .map(|t| t.to_vec())
        .collect();
    out.push(vec![b'A'; 64 * 1024]);
    out.push(vec![b'9'; 5000]);
    out.push([b'['].repeat(4096));
    out.push(b"\" \\".repeat(3000));
    out
}

// ---------------------------------------------------------------------------------------
// Inputs.

/// Bytes that print readably (and not too long) when proptest reports a failing case.
#[derive(Clone)]
struct Input(Vec<u8>);

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.get(..4096).unwrap_or(&self.0);
        write!(f, "{} bytes: b\"{}\"", self.0.len(), shown.escape_ascii())?;
        if shown.len() < self.0.len() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// The corpus of one target, in name order.
fn seeds(target: &Target) -> Vec<Vec<u8>> {
    let dir = Path::new(CORPUS).join(target.name);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// One change to a seed; every index is taken modulo the current length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        byte: u8,
    },
    Insert {
        at: Index,
        token: Index,
    },
    Delete {
        at: Index,
        len: usize,
    },
    Truncate {
        at: Index,
    },
    /// This input up to `at`, then another seed from `from` on.
    Splice {
        at: Index,
        seed: Index,
        from: Index,
    },
    /// Repeat `len` bytes from `at` `times` times.
    Repeat {
        at: Index,
        len: usize,
        times: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        3 => (any::<Index>(), any::<Index>())
            .prop_map(|(at, token)| Mutation::Insert { at, token }),
        1 => (any::<Index>(), 1..64usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(at, seed, from)| Mutation::Splice { at, seed, from }),
        1 => (any::<Index>(), 1..256usize, 2..64usize)
            .prop_map(|(at, len, times)| Mutation::Repeat { at, len, times }),
    ]
}

fn mutate(data: &mut Vec<u8>, m: &Mutation, seeds: &[Vec<u8>], tokens: &[Vec<u8>]) {
    let len = data.len();
    let point = |at: &Index| at.index(len + 1);
    match m {
        Mutation::FlipBit { at, bit } if len > 0 => data[at.index(len)] ^= 1 << bit,
        Mutation::SetByte { at, byte } if len > 0 => data[at.index(len)] = *byte,
        Mutation::FlipBit { .. } | Mutation::SetByte { .. } => {}
        Mutation::Insert { at, token } => {
            let at = point(at);
            data.splice(at..at, token.get(tokens).iter().copied());
        }
        Mutation::Delete { at, len: n } => {
            let at = point(at);
            data.drain(at..(at + n).min(len));
        }
        Mutation::Truncate { at } => data.truncate(point(at)),
        Mutation::Splice { at, seed, from } => {
            let other = seed.get(seeds);
            data.truncate(point(at));
            data.extend_from_slice(&other[from.index(other.len() + 1)..]);
        }
        Mutation::Repeat { at, len: n, times } => {
            let at = point(at);
            let chunk = data[at..(at + n).min(len)].to_vec();
            let repeated = chunk.repeat(*times);
            data.splice(at..at, repeated);
        }
    }
}

fn inputs(target: &Target) -> BoxedStrategy<Input> {
    let seeds = seeds(target);
    let tokens = tokens(target);
    let mutated = (select(seeds.clone()), vec(mutation(), 1..8)).prop_map({
        let tokens = tokens.clone();
        move |(mut data, mutations)| {
            for m in &mutations {
                mutate(&mut data, m, &seeds, &tokens);
            }
            data
        }
    });
    let soup = vec(select(tokens), 0..48).prop_map(|parts| parts.concat());
    prop_oneof![
        1 => vec(any::<u8>(), 0..2048),
        1 => any::<String>().prop_map(String::into_bytes),
        2 => soup,
        6 => mutated,
    ]
    .prop_map(|mut data| {
        data.truncate(MAX_INPUT);
        Input(data)
    })
    .boxed()
}

fn cases() -> u32 {
    match std::env::var("VZACCT_FUZZ_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("VZACCT_FUZZ_CASES={v:?} is not a number")),
        Err(_) => 2000,
    }
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        // A hang found is re-run while shrinking, each time leaving a stuck thread behind.
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    }
}

/// Run `check` on a watchdog thread; fail if it takes `limit` or more. Returns its time.
fn guarded(input: &[u8], check: fn(&[u8]), limit: Duration) -> Duration {
    let owned = input.to_vec();
    let (done, finished) = mpsc::channel();
    let started = Instant::now();
    let worker = thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            check(&owned);
            let _ = done.send(());
        })
        .expect("cannot start a thread");
    match finished.recv_timeout(limit) {
        Ok(()) => {
            let took = started.elapsed();
            let _ = worker.join();
            took
        }
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker ends by sending or by panicking"),
        },
        Err(RecvTimeoutError::Timeout) => panic!(
            "took more than {limit:?} (a hang, or time beyond linear) on {:?}",
            Input(input.to_vec())
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic inputs.

/// `len` pseudo-random bytes, the same on every run.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `line(i)` for i = 0, 1, ... until at least `size` bytes.
fn lines_up_to(size: usize, line: impl Fn(usize) -> String) -> Vec<u8> {
    let mut out = String::with_capacity(size + 256);
    let mut i = 0;
    while out.len() < size {
        out.push_str(&line(i));
        i += 1;
    }
    out.into_bytes()
}

fn ipv4(i: usize) -> String {
    format!(
        "10.{}.{}.{}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        (i & 255).max(1)
    )
}

/// Inputs of about `size` bytes in several shapes, per target.
type Shapes = fn(usize) -> Vec<(&'static str, Vec<u8>)>;

fn big_ctconf(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let many = lines_up_to(size, |i| {
        format!("IP_ADDRESS=\"{}/24\"\nKEY{i}=\"v\"\n", ipv4(i))
    });
    let mut one = b"IP_ADDRESS=\"".to_vec();
    one.extend(lines_up_to(size, |i| format!("{} ", ipv4(i))));
    one.push(b'"');
    let bad = lines_up_to(size, |i| format!("IP_ADDRESS=\"bad{i} 10.0.0.{i}/99\"\n"));
    vec![
        ("a line per IP", many),
        ("one line of IPs", one),
        ("a warning per line", bad),
        ("noise", noise(size)),
    ]
}

fn big_veinfo(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let many = lines_up_to(size, |i| {
        format!("{:>10} 0 {:>5} {}\n", i % 2_000_000 + 1, i % 99, ipv4(i))
    });
    let mut one = b"       101     0    38 ".to_vec();
    one.extend(lines_up_to(size, |i| format!("{} ", ipv4(i))));
    let bad = lines_up_to(size, |i| format!("x{i} 0 1 10.0.0.1\n"));
    vec![
        ("a line per container", many),
        ("one container's IPs", one),
        ("a warning per line", bad),
        ("noise", noise(size)),
    ]
}

fn big_save(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut many = b"*filter\n:VZACCT-FORWARD - [0:0]\n".to_vec();
    many.extend(lines_up_to(size, |i| {
        format!(
            "[{i}:{i}] -A VZACCT-FORWARD -d {}/32 -m comment --comment \"ct:{}\"\n",
            ipv4(i),
            i % 2_000_000 + 1
        )
    }));
    many.extend_from_slice(b"COMMIT\n");
    let mut foreign = b"*filter\n".to_vec();
    foreign.extend(lines_up_to(size, |i| {
        format!("[0:0] -A FORWARD -s {}/32 -j CHAIN{i}\n", ipv4(i))
    }));
    let mut long = b"*filter\n[0:0] -A VZACCT-FORWARD -m comment --comment \"".to_vec();
    long.extend(lines_up_to(size, |_| "\\\" x".to_string()));
    long.extend_from_slice(b"\"\nCOMMIT\n");
    vec![
        ("a rule per line", many),
        ("foreign rules", foreign),
        ("one long rule", long),
        ("noise", noise(size)),
    ]
}

fn big_config(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut comments = b"[vzctl]\n".to_vec();
    comments.extend(lines_up_to(size, |i| format!("; comment {i}\n\n   \n")));
    comments.extend_from_slice(b"conf_dir = /etc/vz/conf\n");
    let mut long = b"[storage]\nstate_dir = /".to_vec();
    long.extend(std::iter::repeat_n(b'a', size));
    let mut sections = lines_up_to(size, |i| format!("[s{i}]\nk{i} = v\n"));
    sections.extend_from_slice(b"[vzctl]\n");
    vec![
        ("comment lines", comments),
        ("one long value", long),
        ("unknown sections", sections),
        ("noise", noise(size)),
    ]
}

fn big_bucket(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut many = b"{\"format\":2,\"containers\":{".to_vec();
    many.extend(lines_up_to(size, |i| {
        format!(
            "\"{}\":{{\"ips\":[\"{}\"],\"parked\":[\"{}\"],\"seen\":{{\"set vzacct-fi4 {}\":\
             {{\"packets\":{i},\"bytes\":{i}}}}}}},",
            i + 1,
            ipv4(i),
            ipv4(i + 1),
            ipv4(i)
        )
    }));
    many.extend_from_slice(b"\"2147483644\":{}}}");
    let mut deep = b"{\"format\":2,\"containers\":{\"101\":{\"parked\":".to_vec();
    deep.extend(std::iter::repeat_n(b'[', size));
    vec![
        ("many containers", many),
        ("deep nesting", deep),
        ("noise", noise(size)),
    ]
}

fn big_ledger(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    let figures = "{\"in_bytes\":1,\"out_bytes\":2,\"in_packets\":3,\"out_packets\":4,\
                   \"local_in_bytes\":0,\"local_out_bytes\":0,\"local_in_packets\":0,\
                   \"local_out_packets\":0}";
    let mut many = b"{\"format\":1,\"containers\":{".to_vec();
    many.extend(lines_up_to(size, |i| {
        format!(
            "\"{}\":{{\"ips\":[\"{}\"],\"total\":{figures},\"seen\":{{\"forward_in {}\":\
             {{\"packets\":{i},\"bytes\":{i}}}}}}},",
            i + 1,
            ipv4(i),
            ipv4(i)
        )
    }));
    many.extend_from_slice(b"\"2147483644\":{}}}");
    let mut long = b"{\"format\":1,\"boot_id\":\"".to_vec();
    long.extend(lines_up_to(size, |_| "\\u001b".to_string()));
    long.extend_from_slice(b"\",\"containers\":{}}");
    let mut deep = b"{\"format\":1,\"containers\":{\"101\":{\"seen\":".to_vec();
    deep.extend(std::iter::repeat_n(b'[', size));
    vec![
        ("many containers", many),
        ("one long string", long),
        ("deep nesting", deep),
        ("noise", noise(size)),
    ]
}

// ---------------------------------------------------------------------------------------
// The tests: per target, random cases, every cut of every seed, and 8 MiB in linear time.

/// Every seed cut at every point (prefixes and suffixes), and every pair of seeds spliced at
/// every 61st byte of one and 67th of the other.
fn cut_and_splice(target: &Target) {
    let seeds = seeds(target);
    for s in &seeds {
        for i in 0..=s.len() {
            guarded(&s[..i], target.check, CASE_LIMIT);
            guarded(&s[i..], target.check, CASE_LIMIT);
        }
    }
    for a in &seeds {
        for b in &seeds {
            for i in (0..=a.len()).step_by(61) {
                for j in (0..=b.len()).step_by(67) {
                    guarded(&[&a[..i], &b[j..]].concat(), target.check, CASE_LIMIT);
                }
            }
        }
    }
}

/// Each shape at 1 MiB and at 8 MiB: eight times the input may take at most about eight
/// times as long (32 times, for busy machines; quadratic time would be 64 times). One target
/// at a time, so that they do not slow each other down.
fn linear(target: &Target, shapes: Shapes) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for ((shape, small), (_, big)) in shapes(MIB).into_iter().zip(shapes(8 * MIB)) {
        assert!(big.len() >= 8 * MIB && small.len() >= MIB, "{shape}");
        let t1 = guarded(&small, target.check, BIG_LIMIT);
        let t8 = guarded(&big, target.check, BIG_LIMIT);
        eprintln!("{}, {shape}: 1 MiB {t1:.2?}, 8 MiB {t8:.2?}", target.name);
        assert!(
            t8 <= t1 * 32 + Duration::from_secs(1),
            "{}, {shape}: 1 MiB took {t1:?} but 8 MiB {t8:?}: worse than linear",
            target.name
        );
    }
}

macro_rules! fuzz_target {
    ($module:ident, $target:expr, $shapes:expr) => {
        mod $module {
            use super::*;

            proptest! {
                #![proptest_config(proptest_config())]

                #[test]
                fn random_and_mutated_inputs(input in inputs(&$target)) {
                    guarded(&input.0, $target.check, CASE_LIMIT);
                }
            }

            #[test]
            fn every_seed_cut_and_spliced() {
                cut_and_splice(&$target);
            }

            #[test]
            fn eight_mib_in_linear_time() {
                linear(&$target, $shapes);
            }
        }
    };
}

fuzz_target!(ctconf_parse, CTCONF, big_ctconf);
fuzz_target!(veinfo_parse, VEINFO, big_veinfo);
fuzz_target!(ruleset_parse_save, SAVE, big_save);
fuzz_target!(config_parse, CONFIG, big_config);
fuzz_target!(ledger_from_json, LEDGER, big_ledger);
fuzz_target!(ledger_bucket_parse, LEDGER_BUCKET, big_bucket);

// ---------------------------------------------------------------------------------------
// The corpus itself: each seed reads as intended, so mutations start from real input.

#[test]
fn ctconf_seeds_read_as_intended() {
    for seed in seeds(&CTCONF) {
        check_ctconf(&seed);
        assert!(!ctconf::parse(&seed, Path::new(CT_ORIGIN)).ips.is_empty());
        let libvzctl = ctconf::parse_as(ctconf::Dialect::Libvzctl, &seed, Path::new(CT_ORIGIN));
        assert!(!libvzctl.ips.is_empty());
        // A file name with control characters is shown escaped in every warning.
        let origin = Path::new("/etc/vz/conf/\n\x1b[2J.conf");
        check_ctconf_from(&seed, origin, "/etc/vz/conf/\\n\\u{1b}[2J.conf");
    }
}

#[test]
fn veinfo_seeds_read_as_intended() {
    for seed in seeds(&VEINFO) {
        check_veinfo(&seed);
        assert!(
            !veinfo::parse(&seed, Path::new(VEINFO_ORIGIN))
                .containers
                .is_empty()
        );
        let origin = Path::new("/proc/vz/\tveinfo");
        check_veinfo_from(&seed, origin, "/proc/vz/\\tveinfo");
    }
}

#[test]
fn ruleset_seeds_read_as_intended() {
    for seed in seeds(&SAVE) {
        let text = String::from_utf8(seed).expect("UTF-8 seed");
        let current = iptables::parse_save(&text).expect("every seed parses");
        check_save(text.as_bytes());
        assert!(!current.policies.is_empty());
    }
}

#[test]
fn config_seeds_read_as_intended() {
    for seed in seeds(&CONFIG) {
        let text = String::from_utf8(seed).expect("UTF-8 seed");
        config::parse(&text, Path::new(CONFIG_PATH)).expect("every seed parses");
        check_config(text.as_bytes());
    }
}

#[test]
fn ledger_seeds_read_as_intended() {
    for seed in seeds(&LEDGER) {
        let ledger = Ledger::from_json(&seed).expect("every seed parses");
        assert_eq!(ledger.to_json(), seed, "seeds are to_json's own output");
        check_ledger(&seed);
    }
}

#[test]
fn ledger_bucket_seeds_read_as_intended() {
    for seed in seeds(&LEDGER_BUCKET) {
        let containers = ledger_store::parse_ct_bucket(&seed, None).expect("every seed parses");
        let rendered = ledger_store::render_ct_bucket(containers.iter());
        assert_eq!(
            String::from_utf8_lossy(&rendered),
            String::from_utf8_lossy(&seed),
            "seeds are render's own output"
        );
        check_ledger_bucket(&seed);
    }
}

// ---------------------------------------------------------------------------------------
// Bugs in src/ found by this file, now fixed; their reproducers stay as regression tests.

/// `iptables::ParseError` echoes the offending line (up to 200 characters) unescaped, so a
/// control character in `iptables-save` output reaches the operator's terminal raw.
#[test]
fn known_bug_1_save_error_echoes_control_characters() {
    let e = iptables::parse_save("*filter\n[\x15:5] -A FOREIGN -j \x1b[2JACCEPT\n").unwrap_err();
    check_error(&e, &["saved ruleset"]);
}

/// `Ledger::from_json` on an unknown field: serde's message, the source of the error, holds
/// the field's name raw (`\u001b` in the JSON is a real ESC in the message).
#[test]
fn known_bug_2_ledger_error_echoes_control_characters() {
    let e = Ledger::from_json(br#"{"format":1,"containers":{},"\u001b[2J":1}"#).unwrap_err();
    check_error(&e, &["ledger"]);
}

/// `iptables::recognise` takes any word after `-i`/`-o` as the venet interface (empty, with
/// spaces, quotes or control characters, longer than 15 bytes), and `Rule::spec` writes it
/// unquoted: the rule then reads back as another rule, as none, or as an error.
#[test]
fn known_bug_3_rule_with_unusable_interface_is_recognised() {
    for iface in [r#""a b""#, r#""""#, r#""x\"y""#, "\"\u{3000}\""] {
        let text = format!(
            "*filter\n[0:0] -A VZACCT-OUTPUT -d 10.0.0.1/32 -o {iface} \
             -m comment --comment \"ct:101\"\nCOMMIT\n"
        );
        let Some(rule) = iptables::parse_save(&text).unwrap().rules[0].rule.clone() else {
            continue;
        };
        let again = format!("*filter\n[0:0] -A VZACCT-OUTPUT {}\nCOMMIT\n", rule.spec());
        let reread = iptables::parse_save(&again).map(|c| c.rules[0].rule.clone());
        assert_eq!(reread, Ok(Some(rule)), "-o {iface}, rendered as {again:?}");
    }
}

/// `config::parse` turns a serde_ini error into its message with `to_string()`, which for
/// serde_ini is its Debug form: `... is not valid: Custom("unknown field `x`, ...")`.
#[test]
fn known_bug_4_config_syntax_error_shows_debug_form() {
    for text in [
        "[vzctl]\nconf_dri = /x\n",
        "[vzctl]\nconf_dir\n",
        "[vzctl\n",
    ] {
        let e = config::parse(text, Path::new(CONFIG_PATH))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("Custom(") && !e.contains("\\\""), "{e}");
    }
}
