//! Reads `/proc/vz/veinfo`, the OpenVZ kernel's list of running containers and the venet IPs
//! they hold right now (including IPs set without `--save`, which no config file shows).
//!
//! Each line is `VEID CLASS NPROC IP IP ...`, whitespace-separated and padded, for example
//! `       101     0    15      10.0.0.1 2001:db8::1`. VEID 0 is the host and is skipped. A
//! bad line or IP costs a warning, never the whole read.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::ctid::{Ctid, escape_for_message};
use crate::vzctl::ctconf::{Warnings, show_path};

/// Largest veinfo we read; a line per running container is far below this.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// The running containers as the kernel lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Veinfo {
    /// Every running container (the host excluded) and its IPs, duplicates removed, in the
    /// order the kernel lists them. A container without venet IPs maps to an empty list.
    pub containers: BTreeMap<Ctid, Vec<IpAddr>>,
    /// Skipped lines and entries, with file and line number; at most 20 plus one summary
    /// line. Never contains raw control characters.
    pub warnings: Vec<String>,
}

/// Why veinfo could not be read. The message names the file; the OS error is the source.
#[derive(Debug, thiserror::Error)]
pub enum VeinfoError {
    #[error("cannot read {}", show_path(.path))]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is larger than {} MiB; refusing to read it",
        show_path(.path),
        MAX_FILE_SIZE >> 20
    )]
    TooLarge { path: PathBuf },
}

/// Ok(None) when the file does not exist (not an OpenVZ kernel, or not configured).
pub fn read(path: &Path) -> Result<Option<Veinfo>, VeinfoError> {
    let read_error = |source| VeinfoError::Read {
        path: path.into(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    // A /proc file reports size 0, so the limit is enforced while reading.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_FILE_SIZE) {
        return Err(VeinfoError::TooLarge { path: path.into() });
    }
    Ok(Some(parse(&bytes, path)))
}

/// Pure parser; `origin` is only used in warning texts.
pub fn parse(text: &[u8], origin: &Path) -> Veinfo {
    let file = show_path(origin);
    let mut warnings = Warnings::default();
    let mut containers: BTreeMap<Ctid, Vec<IpAddr>> = BTreeMap::new();
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = String::from_utf8_lossy(raw);
        let mut fields = line.split_ascii_whitespace();
        let Some(veid) = fields.next() else {
            continue;
        };
        if veid == "0" {
            continue;
        }
        let ctid: Ctid = match veid.parse() {
            Ok(ctid) => ctid,
            Err(e) => {
                warnings.push(|| format!("{file}:{line_no}: {e}; line skipped"));
                continue;
            }
        };
        let counts = [fields.next(), fields.next()];
        if let Some(bad) = counts
            .iter()
            .find(|f| f.is_none_or(|f| f.parse::<i64>().is_err()))
        {
            let shown = bad.map_or_else(|| "nothing".to_string(), escape_for_message);
            warnings.push(|| {
                format!(
                    "{file}:{line_no}: CT {ctid}: expected the CLASS and NPROC numbers \
                     after the ID, found {shown}; line skipped"
                )
            });
            continue;
        }
        let ips = containers.entry(ctid.clone()).or_default();
        for token in fields {
            match token.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() => {}
                Ok(ip) => ips.push(ip),
                Err(_) => warnings.push(|| {
                    format!(
                        "{file}:{line_no}: CT {ctid}: {} is not an IP address; skipped",
                        escape_for_message(token)
                    )
                }),
            }
        }
    }
    for ips in containers.values_mut() {
        let mut seen = HashSet::new();
        ips.retain(|ip| seen.insert(*ip));
    }
    Veinfo {
        containers,
        warnings: warnings.finish(&file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "/proc/vz/veinfo";

    fn p(text: &str) -> Veinfo {
        parse(text.as_bytes(), Path::new(F))
    }

    fn ct(id: &str) -> Ctid {
        id.parse().unwrap()
    }

    /// The addresses in `list`, separated by spaces.
    fn ips(list: &str) -> Vec<IpAddr> {
        list.split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect()
    }

    #[test]
    fn kernel_sample() {
        let v = parse(
            include_bytes!("../../tests/fixtures/veinfo/veinfo"),
            Path::new(F),
        );
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        let expected = BTreeMap::from([
            (ct("101"), ips("10.0.0.101 192.0.2.15 2001:db8:1::101")),
            (ct("102"), ips("10.0.0.102")),
            (ct("103"), vec![]),
            (ct("250"), ips("10.0.0.250 10.0.0.251 10.0.0.252")),
        ]);
        assert_eq!(v.containers, expected);
    }

    #[test]
    fn garbage_lines_are_warned_about() {
        let v = p("         0     0   212\n\
                   \n\
                   \t  \n\
                   abc     0     1   10.0.0.1\n\
                   00101   0     1   10.0.0.1\n\
                   -5      0     1\n\
                   104\n\
                   105     x     1   10.0.0.5\n\
                   106     0\n\
                   107     0     1.5\n\
                   108     0     3   10.0.0.8 garbage 10.0.0.8/24 ;reboot 2001:db8::8 0.0.0.0 ::\n\
                   \x1b[2J   0     1\n\
                   109     0     3\r\n");
        assert_eq!(
            v.containers,
            BTreeMap::from([
                (ct("108"), ips("10.0.0.8 2001:db8::8")),
                (ct("109"), vec![]),
            ])
        );
        let expect_numbers = |n: usize, id: &str, found: &str| {
            format!(
                "{F}:{n}: CT {id}: expected the CLASS and NPROC numbers after the ID, \
                 found {found}; line skipped"
            )
        };
        assert_eq!(
            v.warnings,
            [
                format!(
                    "{F}:4: invalid container ID \"abc\": expected a number 1..2147483644 \
                     or an OpenVZ 7 UUID; line skipped"
                ),
                format!(
                    "{F}:5: invalid container ID \"00101\": 0 is the host and numeric IDs \
                     have no leading zeros; line skipped"
                ),
                format!(
                    "{F}:6: invalid container ID \"-5\": expected a number 1..2147483644 \
                     or an OpenVZ 7 UUID; line skipped"
                ),
                expect_numbers(7, "104", "nothing"),
                expect_numbers(8, "105", "\"x\""),
                expect_numbers(9, "106", "nothing"),
                expect_numbers(10, "107", "\"1.5\""),
                format!("{F}:11: CT 108: \"garbage\" is not an IP address; skipped"),
                format!("{F}:11: CT 108: \"10.0.0.8/24\" is not an IP address; skipped"),
                format!("{F}:11: CT 108: \";reboot\" is not an IP address; skipped"),
                format!(
                    "{F}:12: invalid container ID \"\\u{{1b}}[2J\": expected a number \
                     1..2147483644 or an OpenVZ 7 UUID; line skipped"
                ),
            ]
        );
    }

    #[test]
    fn a_ctid_listed_twice_is_merged() {
        let v = p("101 0 3 10.0.0.1 10.0.0.2\n\
                   102 0 1 10.0.0.9\n\
                   101 0 3 10.0.0.2 2001:db8::1 10.0.0.1 10.0.0.3\n");
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        assert_eq!(
            v.containers,
            BTreeMap::from([
                (ct("101"), ips("10.0.0.1 10.0.0.2 2001:db8::1 10.0.0.3")),
                (ct("102"), ips("10.0.0.9")),
            ])
        );
    }

    #[test]
    fn uuid_ctids_and_non_utf8() {
        let v = parse(
            b"8A1B2C3D-0000-1111-2222-333344445555 0 7 10.0.0.7 \xff\n\xfe\xfd 0 1\n",
            Path::new(F),
        );
        assert_eq!(
            v.containers,
            BTreeMap::from([(ct("8a1b2c3d-0000-1111-2222-333344445555"), ips("10.0.0.7"))])
        );
        assert_eq!(
            v.warnings,
            [
                format!(
                    "{F}:1: CT 8a1b2c3d-0000-1111-2222-333344445555: \"\u{fffd}\" is not an \
                     IP address; skipped"
                ),
                format!(
                    "{F}:2: invalid container ID \"\u{fffd}\u{fffd}\": expected a number \
                     1..2147483644 or an OpenVZ 7 UUID; line skipped"
                ),
            ]
        );
    }

    #[test]
    fn warnings_are_capped() {
        let text: String = (1..=30).map(|i| format!("{i} 0 1 bad{i}\n")).collect();
        let v = p(&text);
        assert_eq!(v.containers.len(), 30);
        assert!(v.containers.values().all(Vec::is_empty));
        assert_eq!(v.warnings.len(), 21);
        assert_eq!(
            v.warnings[19],
            format!("{F}:20: CT 20: \"bad20\" is not an IP address; skipped")
        );
        assert_eq!(v.warnings[20], format!("... and 10 more warnings in {F}"));
    }

    #[test]
    fn random_bytes_do_not_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut bytes = Vec::with_capacity(1024 * 1024);
        while bytes.len() < 1024 * 1024 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        let v = parse(&bytes, Path::new(F));
        assert!(v.warnings.len() <= 21);
        for w in &v.warnings {
            assert!(!w.chars().any(char::is_control), "{w:?}");
        }
    }

    /// A fresh path (nothing there yet) in a temp dir of its own, removed with the dir.
    fn temp_path(tag: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(tag);
        (dir, path)
    }

    #[test]
    fn read_missing_is_none() {
        let (_dir, path) = temp_path("missing");
        assert_eq!(read(&path).unwrap(), None);
    }

    #[test]
    fn read_a_file() {
        let (_dir, path) = temp_path("ok");
        std::fs::write(&path, "     0 0 100\n   101 0 5  10.0.0.1\n").unwrap();
        let v = read(&path).unwrap().unwrap();
        assert_eq!(v.containers, BTreeMap::from([(ct("101"), ips("10.0.0.1"))]));
    }

    #[test]
    fn read_errors_name_the_file() {
        let (_dir, path) = temp_path("dir");
        std::fs::create_dir(&path).unwrap();
        let e = read(&path).unwrap_err();
        assert!(matches!(e, VeinfoError::Read { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("cannot read {}", path.display()));
        assert!(std::error::Error::source(&e).is_some());

        let (_dir, path) = temp_path("big");
        let file = File::create(&path).unwrap();
        file.set_len(MAX_FILE_SIZE + 1).unwrap(); // sparse: costs no disk
        drop(file);
        let e = read(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is larger than 16 MiB; refusing to read it",
                path.display()
            )
        );
    }
}
