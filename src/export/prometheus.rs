//! Prometheus export: node_exporter's textfile collector reads `*.prom` files from a directory,
//! so vzacct renders each container's totals in the text exposition format and replaces that
//! file atomically after every dump, letting a node's traffic be graphed and alerted on without
//! vzacct running a server.
//!
//! Counters are the ledger's totals since each container's last `vzacct reset`; a reset shows
//! as a counter reset, which Prometheus' `rate()` and `increase()` already handle. Samples
//! carry no timestamps: node_exporter stamps them at scrape time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};

use std::collections::{BTreeMap, HashMap};

use crate::ctid::Ctid;
use crate::ledger::period::Span;
use crate::ledger::thresholds::Quota;
use crate::ledger::{Container, Figures, Ledger};

/// The textfile's mode: node_exporter runs as its own user and must be able to read it.
const MODE: u32 = 0o644;

/// The dump whose figures a textfile shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpInfo {
    /// When the dump ran.
    pub timestamp: DateTime<FixedOffset>,
    /// How long it took.
    pub duration: Duration,
}

/// A textfile that could not be written, naming it.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("cannot write Prometheus textfile {path}: the path names no file")]
    NoFileName { path: PathBuf },
    #[error("cannot write Prometheus textfile {path}; any earlier one is left as it was")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The per-container counter families, each split by `direction`: name, help text, and the
/// (in, out) pair of [`Figures`] it shows.
type Pick = fn(&Figures) -> (u64, u64);
const COUNTERS: [(&str, &str, Pick); 6] = [
    (
        "vzacct_bytes_total",
        "Bytes the container received (in) and sent (out) since its last reset, node-local traffic included.",
        |f| (f.in_bytes, f.out_bytes),
    ),
    (
        "vzacct_packets_total",
        "Packets the container received (in) and sent (out) since its last reset, node-local traffic included.",
        |f| (f.in_packets, f.out_packets),
    ),
    (
        "vzacct_local_bytes_total",
        "Bytes the container received from (in) and sent to (out) the node itself since its last reset.",
        |f| (f.local_in_bytes, f.local_out_bytes),
    ),
    (
        "vzacct_local_packets_total",
        "Packets the container received from (in) and sent to (out) the node itself since its last reset.",
        |f| (f.local_in_packets, f.local_out_packets),
    ),
    (
        "vzacct_free_bytes_total",
        "Bytes the container received from (in) and sent to (out) free networks ([classes]) since its last reset, included in vzacct_bytes_total.",
        |f| (f.free_in_bytes, f.free_out_bytes),
    ),
    (
        "vzacct_free_packets_total",
        "Packets the container received from (in) and sent to (out) free networks since its last reset.",
        |f| (f.free_in_packets, f.free_out_packets),
    ),
];

/// The whole textfile body for `ledger`: every container in it (also those with no IP
/// accounted now), ordered by CTID numerically.
pub fn render(ledger: &Ledger, info: &DumpInfo) -> String {
    let mut containers: Vec<(&Ctid, &Container)> = ledger.containers.iter().collect();
    containers.sort_by(|a, b| a.0.sort_key().cmp(&b.0.sort_key()));
    let mut out = String::new();
    // The free figures only on a node that counts free traffic (some is counted).
    let free = containers.iter().any(|(_, c)| {
        let t = &c.total;
        t.free_in_packets > 0 || t.free_out_packets > 0
    });
    for (name, help, pick) in COUNTERS {
        if name.starts_with("vzacct_free_") && !free {
            continue;
        }
        family(&mut out, name, "counter", help);
        for (ctid, c) in &containers {
            let ctid = escape_label(ctid.as_str());
            let (received, sent) = pick(&c.total);
            out.push_str(&format!(
                "{name}{{ctid=\"{ctid}\",direction=\"in\"}} {received}\n\
                 {name}{{ctid=\"{ctid}\",direction=\"out\"}} {sent}\n"
            ));
        }
    }
    let name = "vzacct_accounted_ips";
    family(
        &mut out,
        name,
        "gauge",
        "IP addresses accounted for the container now.",
    );
    for (ctid, c) in &containers {
        let ctid = escape_label(ctid.as_str());
        out.push_str(&format!("{name}{{ctid=\"{ctid}\"}} {}\n", c.ips.len()));
    }
    let accounted = containers.iter().filter(|(_, c)| c.accounted()).count();
    let unix = info.timestamp.timestamp_micros() as f64 / 1e6;
    for (name, help, value) in [
        (
            "vzacct_containers",
            "Containers with at least one IP address accounted now.",
            accounted.to_string(),
        ),
        (
            "vzacct_last_dump_timestamp_seconds",
            "When the dump that wrote these figures ran, in seconds since the Unix epoch.",
            unix.to_string(),
        ),
        (
            "vzacct_last_dump_duration_seconds",
            "How long the dump that wrote these figures took, in seconds.",
            info.duration.as_secs_f64().to_string(),
        ),
    ] {
        family(&mut out, name, "gauge", help);
        out.push_str(&format!("{name} {value}\n"));
    }
    out
}

/// The gauges of the billing periods: every container's current period's bytes
/// (`vzacct_period_bytes{ctid,direction="in"|"out"}`, billable traffic) and each quota
/// (`vzacct_quota_bytes{ctid,direction="in"|"out"|"total"}`), ordered by CTID numerically.
pub fn render_periods(
    periods: &BTreeMap<Ctid, (Span, Figures)>,
    quotas: &HashMap<Ctid, Quota>,
) -> String {
    let mut out = String::new();
    let mut cts: Vec<&Ctid> = periods.keys().collect();
    cts.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let name = "vzacct_period_bytes";
    family(
        &mut out,
        name,
        "gauge",
        "Billable bytes the container received (in) and sent (out) in its current billing period.",
    );
    for ctid in &cts {
        let (inb, outb) = crate::ledger::quota::billable(&periods[*ctid].1);
        let ctid = escape_label(ctid.as_str());
        out.push_str(&format!(
            "{name}{{ctid=\"{ctid}\",direction=\"in\"}} {inb}\n\
             {name}{{ctid=\"{ctid}\",direction=\"out\"}} {outb}\n"
        ));
    }
    let mut with_quota: Vec<(&Ctid, &Quota)> = quotas.iter().collect();
    with_quota.sort_by(|a, b| a.0.sort_key().cmp(&b.0.sort_key()));
    let name = "vzacct_quota_bytes";
    family(
        &mut out,
        name,
        "gauge",
        "The container's quota per billing period, of the traffic its direction label names.",
    );
    for (ctid, q) in with_quota {
        out.push_str(&format!(
            "{name}{{ctid=\"{}\",direction=\"{}\"}} {}\n",
            escape_label(ctid.as_str()),
            q.direction,
            q.bytes
        ));
    }
    out
}

/// The HELP and TYPE lines that open a metric family. `help` must hold no backslash or
/// newline (ours are constants).
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// Escape a label value for the text exposition format: backslash, double quote and line feed
/// are the three characters it gives a meaning to.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Replace the textfile at `path` atomically, mode 0644 whatever the umask: a fresh
/// `.<name>.<pid>.tmp` beside it (a name no other process uses; never through a symlink;
/// node_exporter reads only `*.prom`), fsync, rename over the old file, fsync the directory.
/// The directory must exist. On error the previous file is intact and the temp file gone.
/// Callers write it while holding the state lock, so a dump's totals are never replaced by
/// an older dump's.
pub fn write(path: &Path, body: &str) -> Result<(), PrometheusError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(name) = path.file_name() else {
        return Err(PrometheusError::NoFileName {
            path: path.to_path_buf(),
        });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let err = |source| PrometheusError::Write {
        path: path.to_path_buf(),
        source,
    };
    // A leftover of a killed process that had our pid is ours to replace.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(MODE))?;
            f.write_all(body.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    fn info() -> DumpInfo {
        DumpInfo {
            timestamp: DateTime::parse_from_rfc3339("2026-11-29T12:00:00.25+01:00").unwrap(),
            duration: Duration::from_millis(1234),
        }
    }

    fn ctid(s: &str) -> Ctid {
        s.parse().unwrap()
    }

    /// 101 and 1000 accounted (1000 with two IPs), 20 with history only, and a UUID one: in
    /// map order they would come as 1000, 101, 20.
    fn ledger() -> Ledger {
        let now = DateTime::parse_from_rfc3339("2026-11-29T00:00:00+00:00").unwrap();
        let today = "2026-11-29".parse().unwrap();
        let mut l = Ledger::default();
        for (ct, ip) in [
            ("1000", "10.0.0.3"),
            ("1000", "2001:db8::3"),
            ("101", "10.0.0.1"),
            ("20", "10.0.0.2"),
            ("A1B2C3D4-0000-1111-2222-333344445555", "10.0.0.4"),
        ] {
            l.assign(&ctid(ct), ip.parse().unwrap(), now, today);
        }
        l.unassign(&ctid("20"), &"10.0.0.2".parse().unwrap());
        let c = l.containers.get_mut(&ctid("101")).unwrap();
        c.total = Figures {
            in_bytes: 350,
            out_bytes: 270,
            in_packets: 4,
            out_packets: 6,
            local_in_bytes: 50,
            local_out_bytes: 70,
            local_in_packets: 1,
            local_out_packets: 4,
            ..Figures::default()
        };
        let c = l.containers.get_mut(&ctid("20")).unwrap();
        c.total.in_bytes = 18_446_744_073_709_551_615;
        c.total.in_packets = 1;
        l
    }

    #[test]
    fn renders_every_container_in_numeric_order() {
        assert_eq!(
            render(&ledger(), &info()),
            include_str!("../../tests/fixtures/prometheus/four-containers.prom")
        );
    }

    #[test]
    fn empty_ledger_still_reports_the_dump() {
        let want = "\
# HELP vzacct_bytes_total Bytes the container received (in) and sent (out) since its last reset, node-local traffic included.
# TYPE vzacct_bytes_total counter
# HELP vzacct_packets_total Packets the container received (in) and sent (out) since its last reset, node-local traffic included.
# TYPE vzacct_packets_total counter
# HELP vzacct_local_bytes_total Bytes the container received from (in) and sent to (out) the node itself since its last reset.
# TYPE vzacct_local_bytes_total counter
# HELP vzacct_local_packets_total Packets the container received from (in) and sent to (out) the node itself since its last reset.
# TYPE vzacct_local_packets_total counter
# HELP vzacct_accounted_ips IP addresses accounted for the container now.
# TYPE vzacct_accounted_ips gauge
# HELP vzacct_containers Containers with at least one IP address accounted now.
# TYPE vzacct_containers gauge
vzacct_containers 0
# HELP vzacct_last_dump_timestamp_seconds When the dump that wrote these figures ran, in seconds since the Unix epoch.
# TYPE vzacct_last_dump_timestamp_seconds gauge
vzacct_last_dump_timestamp_seconds 1795950000
# HELP vzacct_last_dump_duration_seconds How long the dump that wrote these figures took, in seconds.
# TYPE vzacct_last_dump_duration_seconds gauge
vzacct_last_dump_duration_seconds 0
";
        let info = DumpInfo {
            timestamp: DateTime::parse_from_rfc3339("2026-11-29T12:00:00+01:00").unwrap(),
            duration: Duration::ZERO,
        };
        assert_eq!(render(&Ledger::default(), &info), want);
    }

    #[test]
    fn period_and_quota_gauges() {
        use crate::ledger::quota::Direction;
        let (a, b): (Ctid, Ctid) = ("101".parse().unwrap(), "20".parse().unwrap());
        let span = Span::month(2027, 2).unwrap();
        let f = |i, o| Figures {
            in_bytes: i,
            out_bytes: o,
            in_packets: 1,
            ..Figures::default()
        };
        let periods: BTreeMap<Ctid, (Span, Figures)> =
            [(a.clone(), (span, f(5, 6))), (b.clone(), (span, f(0, 7)))].into();
        let quotas: HashMap<Ctid, Quota> = [(
            a,
            Quota {
                bytes: 1 << 30,
                direction: Direction::Total,
            },
        )]
        .into();
        assert_eq!(
            render_periods(&periods, &quotas),
            "# HELP vzacct_period_bytes Billable bytes the container received (in) and sent \
             (out) in its current billing period.\n\
             # TYPE vzacct_period_bytes gauge\n\
             vzacct_period_bytes{ctid=\"20\",direction=\"in\"} 0\n\
             vzacct_period_bytes{ctid=\"20\",direction=\"out\"} 7\n\
             vzacct_period_bytes{ctid=\"101\",direction=\"in\"} 5\n\
             vzacct_period_bytes{ctid=\"101\",direction=\"out\"} 6\n\
             # HELP vzacct_quota_bytes The container's quota per billing period, of the traffic \
             its direction label names.\n\
             # TYPE vzacct_quota_bytes gauge\n\
             vzacct_quota_bytes{ctid=\"101\",direction=\"total\"} 1073741824\n"
        );
    }

    #[test]
    fn escape_label_escapes_the_three_special_characters() {
        for (raw, want) in [
            ("101", "101"),
            ("", ""),
            (r#"a"b"#, r#"a\"b"#),
            (r"a\b", r"a\\b"),
            ("a\nb", r"a\nb"),
            // Already-escaped text is escaped again, not passed through.
            (r"\n", r"\\n"),
            (r#"\""#, r#"\\\""#),
            // An attempt to close the label set and inject a sample stays one label value.
            (
                "1\"} 99\nvzacct_containers 7\n",
                r#"1\"} 99\nvzacct_containers 7\n"#,
            ),
            // Other control characters and non-ASCII text are legal as they are.
            ("tab\there\r ü €", "tab\there\r ü €"),
        ] {
            assert_eq!(escape_label(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn hostile_label_values_stay_inside_their_quotes() {
        for raw in ["1\"} 99\nx 7\n", "\\", "\\\"", "\n\n", "a\\nb\"\\"] {
            let line = format!("m{{ctid=\"{}\"}} 1\n", escape_label(raw));
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            let value = line
                .strip_prefix("m{ctid=\"")
                .and_then(|l| l.strip_suffix("\"} 1\n"))
                .unwrap();
            assert_eq!(unescape(value), raw);
        }
    }

    /// The reverse of [`escape_label`], as Prometheus' parser does it; panics on an unescaped
    /// quote, which would end the value early.
    fn unescape(value: &str) -> String {
        let mut out = String::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('n') => out.push('\n'),
                    other => panic!("bad escape {other:?} in {value:?}"),
                },
                '"' => panic!("unescaped quote in {value:?}"),
                c => out.push(c),
            }
        }
        out
    }

    /// promtool from PATH, or as tests/deps.sh unpacks it. Missing is a failure, not a skip.
    fn promtool() -> PathBuf {
        let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/usr/bin/promtool");
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("promtool"))
            .chain([unpacked.clone()])
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "promtool is neither on PATH nor at {}: run `bash tests/deps.sh` (as root) to \
                     fetch it",
                    unpacked.display()
                )
            })
    }

    /// `promtool check metrics` on `text`: what it said, if anything, or a non-zero exit.
    fn promtool_check(text: &str) -> Result<(), String> {
        let promtool = promtool();
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
        let mut stdin = child.stdin.take().unwrap();
        let body = text.to_string();
        let feeder = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && said.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("promtool check metrics: {}\n{said}", out.status))
        }
    }

    #[test]
    fn promtool_accepts_the_output() {
        for text in [
            render(&ledger(), &info()),
            render(&Ledger::default(), &info()),
            {
                let l = ledger();
                let span = Span::month(2027, 2).unwrap();
                let periods = l
                    .containers
                    .iter()
                    .map(|(id, c)| (id.clone(), (span, c.total)))
                    .collect();
                let quotas = l
                    .containers
                    .keys()
                    .map(|id| {
                        let direction = crate::ledger::quota::Direction::Out;
                        (
                            id.clone(),
                            Quota {
                                bytes: 5,
                                direction,
                            },
                        )
                    })
                    .collect();
                render(&l, &info()) + &render_periods(&periods, &quotas)
            },
        ] {
            if let Err(e) = promtool_check(&text) {
                panic!("{e}\non:\n{text}");
            }
        }
    }

    #[test]
    fn promtool_reports_lint_problems() {
        // Guards the test above against passing vacuously.
        let e = promtool_check("# TYPE vzacct_bytes counter\nvzacct_bytes 1\n").unwrap_err();
        assert!(e.contains("_total") && e.contains("no help text"), "{e}");
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn write_replaces_the_file_readable_by_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vzacct.prom");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        write(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(mode(&path), 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["vzacct.prom"]);
    }

    #[test]
    fn write_does_not_follow_a_symlinked_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("vzacct.prom.tmp")).unwrap();
        let path = dir.path().join("vzacct.prom");
        write(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    }

    #[test]
    fn write_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/vzacct.prom");
        let e = write(&path, "x").unwrap_err();
        assert!(matches!(e, PrometheusError::Write { .. }), "{e}");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        let e = write(Path::new("/"), "x").unwrap_err();
        assert!(matches!(e, PrometheusError::NoFileName { .. }), "{e}");
    }
}
