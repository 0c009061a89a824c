//! Reads a container's vzctl config (`<conf_dir>/<CTID>.conf`) with the same rules vzctl 4.x
//! uses, so the IPs we account for are exactly the ones vzctl assigns, and a broken or hostile
//! file can only ever cost us warnings, never a crash or a wrong address.
//!
//! The rules (checked against `parse_line`/`unescapestr` in vzctl's `src/lib/util.c` and
//! `vps_parse_config`/`parse_ip` in `src/lib/config.c`):
//! - the file is read line by line as bytes; a line ends at its first NUL byte, as a C string
//!   would, and invalid UTF-8 is replaced with U+FFFD, line by line;
//! - a backslash is dropped and escapes the byte after it (so `\\` leaves one `\`); there is
//!   no line continuation;
//! - leading and trailing whitespace go; blank lines and lines starting with `#` are ignored;
//! - the key is everything before the first `=`, untrimmed (`KEY = v` is the key `KEY `);
//! - a value starting with `"` runs to the last `"` on the line; any other value is the raw rest
//!   of the line, `#` and single quotes included;
//! - a line with no `=` or an unmatched `"` is skipped with a warning;
//! - the first value of a key wins, except `IP_ADDRESS`, whose lines accumulate.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::ctid::{Ctid, escape_for_message};

/// Largest CT config we read. Real ones are a few KiB; this only bounds memory.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// How many warnings a parse keeps; the rest are only counted in one summary line.
pub(crate) const MAX_WARNINGS: usize = 20;

/// What a CT config says, as far as vzctl 4.x would understand it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtConfig {
    /// The addresses of all `IP_ADDRESS` lines, prefixes dropped, duplicates removed, in the
    /// order they first appear.
    pub ips: Vec<IpAddr>,
    /// Lines and `IP_ADDRESS` entries that were skipped, with file and line number; at most
    /// [`MAX_WARNINGS`] plus one summary line. Never contains raw control characters.
    pub warnings: Vec<String>,
    /// The first value of every key, as vzctl would see it.
    values: HashMap<String, String>,
}

impl CtConfig {
    /// The first value of `key` (exact, case-sensitive match), without its quotes.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Why a CT config could not be read. Each message names the file; the OS error, if any, is
/// the source.
#[derive(Debug, thiserror::Error)]
pub enum CtConfError {
    #[error("CT config {} does not exist", show_path(.path))]
    Missing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("CT config {} is a directory, not a file", show_path(.path))]
    IsDirectory { path: PathBuf },
    #[error("CT config {} is not a regular file", show_path(.path))]
    NotRegularFile { path: PathBuf },
    #[error("not allowed to read CT config {}", show_path(.path))]
    PermissionDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read CT config {}", show_path(.path))]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "CT config {} is {size} bytes, more than the {} MiB a CT config may have; refusing to read it",
        show_path(.path),
        MAX_FILE_SIZE >> 20
    )]
    TooLarge { path: PathBuf, size: u64 },
}

/// `<conf_dir>/<ctid>.conf`
pub fn path_for(conf_dir: &Path, ctid: &Ctid) -> PathBuf {
    conf_dir.join(format!("{ctid}.conf"))
}

/// Opens and parses; errors name the file.
pub fn read(path: &Path) -> Result<CtConfig, CtConfError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(CtConfError::IsDirectory { path: path.into() });
    }
    if !meta.is_file() {
        // A FIFO or device could block or never end.
        return Err(CtConfError::NotRegularFile { path: path.into() });
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(CtConfError::TooLarge {
            path: path.into(),
            size: meta.len(),
        });
    }
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut bytes = Vec::new();
    // The file may have grown since the stat: never read more than the limit allows.
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > MAX_FILE_SIZE {
        return Err(CtConfError::TooLarge {
            path: path.into(),
            size,
        });
    }
    Ok(parse(&bytes, path))
}

fn io_error(path: &Path, source: io::Error) -> CtConfError {
    let path = path.to_path_buf();
    match source.kind() {
        io::ErrorKind::NotFound => CtConfError::Missing { path, source },
        io::ErrorKind::PermissionDenied => CtConfError::PermissionDenied { path, source },
        io::ErrorKind::IsADirectory => CtConfError::IsDirectory { path },
        _ => CtConfError::Read { path, source },
    }
}

/// Pure parser; `origin` is only used in warning texts.
pub fn parse(bytes: &[u8], origin: &Path) -> CtConfig {
    let file = show_path(origin);
    let mut warnings = Warnings::default();
    let mut values = HashMap::new();
    let mut ips = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = unescape(raw);
        let (key, value) = match split_line(&line) {
            Line::Ignored => continue,
            Line::Invalid(reason) => {
                warnings.push(|| format!("{file}:{line_no}: {reason}, line skipped"));
                continue;
            }
            Line::Setting { key, value } => (key, value),
        };
        let key = String::from_utf8_lossy(key);
        let value = String::from_utf8_lossy(value);
        if key == "IP_ADDRESS" {
            for token in value.split([' ', '\t']).filter(|t| !t.is_empty()) {
                match parse_ip_token(token) {
                    Ok(Some(ip)) => ips.push(ip),
                    Ok(None) => {}
                    Err(reason) => warnings.push(|| {
                        format!(
                            "{file}:{line_no}: IP_ADDRESS entry {} skipped: {reason}",
                            escape_for_message(token)
                        )
                    }),
                }
            }
        }
        values
            .entry(key.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    let mut seen = HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    CtConfig {
        ips,
        warnings: warnings.finish(&file),
        values,
    }
}

/// One line after vzctl's `parse_line`.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// Blank or a comment.
    Ignored,
    /// Skipped with a warning saying why.
    Invalid(&'static str),
    Setting {
        key: &'a [u8],
        value: &'a [u8],
    },
}

/// vzctl's `unescapestr` on a C string: stop at the first NUL, drop every backslash that is
/// not itself escaped, keep the byte after it.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    let mut out = Vec::with_capacity(raw.len());
    let mut escaped = false;
    for &b in raw {
        if b == b'\\' && !escaped {
            escaped = true;
        } else {
            out.push(b);
            escaped = false;
        }
    }
    out
}

/// C `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn split_line(line: &[u8]) -> Line<'_> {
    let start = line
        .iter()
        .position(|&b| !is_c_space(b))
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|&b| !is_c_space(b))
        .map_or(0, |i| i + 1);
    let line = line.get(start..end).unwrap_or_default();
    if line.is_empty() || line.first() == Some(&b'#') {
        return Line::Ignored;
    }
    let Some(eq) = line.iter().position(|&b| b == b'=') else {
        return Line::Invalid("no '=' in it");
    };
    let (key, rest) = line.split_at(eq);
    let rest = rest.get(1..).unwrap_or_default();
    let Some(quoted) = rest.strip_prefix(b"\"") else {
        return Line::Setting { key, value: rest };
    };
    match quoted.iter().rposition(|&b| b == b'"') {
        Some(close) => Line::Setting {
            key,
            value: quoted.get(..close).unwrap_or_default(),
        },
        None => Line::Invalid("the opening '\"' of the value has no closing '\"'"),
    }
}

/// One `IP_ADDRESS` entry: `addr` or `addr/prefix`. `Ok(None)` for the "no address" spellings
/// vzctl skips silently; `Err` says why the entry is refused.
fn parse_ip_token(token: &str) -> Result<Option<IpAddr>, &'static str> {
    if matches!(token, "0.0.0.0" | "::" | "::0") {
        return Ok(None);
    }
    let (addr, prefix) = match token.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (token, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| "not an IPv4 or IPv6 address (with an optional /prefix)")?;
    if let Some(prefix) = prefix {
        let bits = parse_c_int(prefix).ok_or("the prefix after '/' is not a whole number")?;
        match ip {
            IpAddr::V4(_) if !(0..=32).contains(&bits) => {
                return Err("an IPv4 prefix must be 0 to 32");
            }
            IpAddr::V6(_) if !(0..=128).contains(&bits) => {
                return Err("an IPv6 prefix must be 0 to 128");
            }
            _ => {}
        }
    }
    if ip.is_unspecified() {
        return Err("the unspecified address is not a container address");
    }
    Ok(Some(ip))
}

/// What vzctl's `parse_int` (`strtol` base 10, whole string) accepts: an optional sign and
/// decimal digits, or the empty string, which it reads as 0.
fn parse_c_int(text: &str) -> Option<i64> {
    if text.is_empty() {
        return Some(0);
    }
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some(if text.starts_with('-') { -n } else { n })
}

/// A path for a message: control and other unprintable characters escaped, nothing cut.
pub(crate) fn show_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.display().to_string().chars() {
        match c {
            '"' | '\'' | '\\' => out.push(c),
            _ => out.extend(c.escape_debug()),
        }
    }
    out
}

/// Keeps the first [`MAX_WARNINGS`] warnings and counts the rest, so a garbage file cannot
/// flood memory or the log.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    kept: Vec<String>,
    dropped: usize,
}

impl Warnings {
    /// Adds a warning; `make` is only called while there is room.
    pub(crate) fn push(&mut self, make: impl FnOnce() -> String) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(make());
        } else {
            self.dropped += 1;
        }
    }

    /// The kept warnings, plus `... and N more warnings in FILE` when some were dropped.
    pub(crate) fn finish(mut self, file: &str) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("... and {} more warnings in {file}", self.dropped));
        }
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> CtConfig {
        parse(text.as_bytes(), Path::new("/etc/vz/conf/101.conf"))
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const F: &str = "/etc/vz/conf/101.conf";

    #[test]
    fn backslashes_are_removed_and_do_not_continue_lines() {
        let c = p("NAME=\"we\\b\\\\x\"\n\
                   IP_ADDRESS=\"10.0.\\0.1 10.0.0.2\"\\\n\
                   10.0.0.3\"\n");
        assert_eq!(c.get("NAME"), Some("web\\x"));
        assert_eq!(c.ips, ips(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(c.warnings, [format!("{F}:3: no '=' in it, line skipped")]);
        let c = p("IP_ADDRESS=\\\"10.0.0.9\\\"\n");
        assert_eq!(c.ips, ips(&["10.0.0.9"]));
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let c = p("# IP_ADDRESS=\"10.0.0.1\"\n\
                   \n   \t\n\
                   \t  # NAME=\"commented\"\n\
                   \t  NAME=\"web\"  \t\r\n\
                   HOSTNAME=web.example.com # the host name \n\
                   \x0bONBOOT=yes\x0c\n");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.ips.is_empty());
        assert_eq!(c.get("NAME"), Some("web"));
        assert_eq!(c.get("HOSTNAME"), Some("web.example.com # the host name"));
        assert_eq!(c.get("ONBOOT"), Some("yes"));
        assert_eq!(c.get("# NAME"), None);
    }

    #[test]
    fn quoted_value_runs_to_the_last_quote() {
        let c = p("A=\"x\" # trailing comment\n\
                   B=\"x\"y\"z\"\n\
                   C=\"x\" # comment with \"quote\"\n\
                   D=''\n\
                   E='single # literal'\n\
                   F=\"\"\n\
                   G=\n\
                   H=a=b\n\
                   I= \"spaced\"\n");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.get("A"), Some("x"));
        assert_eq!(c.get("B"), Some("x\"y\"z"));
        assert_eq!(c.get("C"), Some("x\" # comment with \"quote"));
        assert_eq!(c.get("D"), Some("''"));
        assert_eq!(c.get("E"), Some("'single # literal'"));
        assert_eq!(c.get("F"), Some(""));
        assert_eq!(c.get("G"), Some(""));
        assert_eq!(c.get("H"), Some("a=b"));
        assert_eq!(c.get("I"), Some(" \"spaced\""));
    }

    #[test]
    fn unmatched_quote_and_missing_equals_skip_the_line() {
        let c = p("NAME=\"web\nIP_ADDRESS=\"\nJUST SOME TEXT\n\"IP_ADDRESS\"\nONBOOT=yes\n");
        let unmatched = "the opening '\"' of the value has no closing '\"', line skipped";
        assert_eq!(
            c.warnings,
            [
                format!("{F}:1: {unmatched}"),
                format!("{F}:2: {unmatched}"),
                format!("{F}:3: no '=' in it, line skipped"),
                format!("{F}:4: no '=' in it, line skipped"),
            ]
        );
        assert_eq!(c.get("NAME"), None);
        assert_eq!(c.get("IP_ADDRESS"), None);
        assert_eq!(c.get("ONBOOT"), Some("yes"));
        assert!(c.ips.is_empty());
    }

    #[test]
    fn key_is_not_trimmed() {
        let c = p("IP_ADDRESS = \"10.0.0.1\"\n ip_address=\"10.0.0.2\"\nNAME =x\n");
        assert!(c.ips.is_empty());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.get("IP_ADDRESS "), Some(" \"10.0.0.1\""));
        assert_eq!(c.get("IP_ADDRESS"), None);
        assert_eq!(c.get("ip_address"), Some("10.0.0.2"));
        assert_eq!(c.get("NAME "), Some("x"));
        assert_eq!(c.get("NAME"), None);
    }

    #[test]
    fn ip_address_lines_accumulate_other_keys_first_wins() {
        let c = p("NAME=\"first\"\n\
                   IP_ADDRESS=\"10.0.0.1 10.0.0.2\"\n\
                   NAME=\"second\"\n\
                   IP_ADDRESS=\"10.0.0.3\"\n\
                   IP_ADDRESS=\"10.0.0.2 10.0.0.4\"\n");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.ips,
            ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
        );
        assert_eq!(c.get("NAME"), Some("first"));
        assert_eq!(c.get("IP_ADDRESS"), Some("10.0.0.1 10.0.0.2"));
    }

    #[test]
    fn ip_separators_are_spaces_and_tabs_only() {
        let c = p("IP_ADDRESS=\"\t10.0.0.1\t\t10.0.0.2   10.0.0.3 \"\n\
                   IP_ADDRESS=10.0.0.4 10.0.0.5\n\
                   IP_ADDRESS=\"1.2.3.4,5.6.7.8\"\n");
        assert_eq!(
            c.ips,
            ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"])
        );
        assert_eq!(
            c.warnings,
            [format!(
                "{F}:3: IP_ADDRESS entry \"1.2.3.4,5.6.7.8\" skipped: \
                 not an IPv4 or IPv6 address (with an optional /prefix)"
            )]
        );
    }

    #[test]
    fn prefixes_are_accepted_and_dropped() {
        let c = p("IP_ADDRESS=\"10.0.0.1/24 10.0.0.2/32 10.0.0.3/0 \
                   2001:db8::1/64 2001:db8::2/128 10.0.0.1 10.0.0.4/ 10.0.0.5/+8 10.0.0.6/-0 \
                   10.0.0.7/0024\"\n");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.ips,
            ips(&[
                "10.0.0.1",
                "10.0.0.2",
                "10.0.0.3",
                "2001:db8::1",
                "2001:db8::2",
                "10.0.0.4",
                "10.0.0.5",
                "10.0.0.6",
                "10.0.0.7",
            ])
        );
    }

    #[test]
    fn bad_prefixes_are_warned_about() {
        let c = p(
            "IP_ADDRESS=\"10.0.0.1/33 10.0.0.2/x 2001:db8::1/129 10.0.0.3/-1 \
                   10.0.0.4/24/8 10.0.0.5/99999999999999999999999 10.0.0.6/+ 10.0.0.9\"\n",
        );
        assert_eq!(c.ips, ips(&["10.0.0.9"]));
        let w = |tok: &str, why: &str| format!("{F}:1: IP_ADDRESS entry \"{tok}\" skipped: {why}");
        let not_int = "the prefix after '/' is not a whole number";
        assert_eq!(
            c.warnings,
            [
                w("10.0.0.1/33", "an IPv4 prefix must be 0 to 32"),
                w("10.0.0.2/x", not_int),
                w("2001:db8::1/129", "an IPv6 prefix must be 0 to 128"),
                w("10.0.0.3/-1", "an IPv4 prefix must be 0 to 32"),
                w("10.0.0.4/24/8", not_int),
                w("10.0.0.5/99999999999999999999999", not_int),
                w("10.0.0.6/+", not_int),
            ]
        );
    }

    #[test]
    fn unspecified_addresses_are_skipped() {
        let c = p("IP_ADDRESS=\"0.0.0.0 :: ::0 10.0.0.1 0.0.0.0/0 ::/0 0:0::0\"\n");
        assert_eq!(c.ips, ips(&["10.0.0.1"]));
        let why = "the unspecified address is not a container address";
        assert_eq!(
            c.warnings,
            [
                format!("{F}:1: IP_ADDRESS entry \"0.0.0.0/0\" skipped: {why}"),
                format!("{F}:1: IP_ADDRESS entry \"::/0\" skipped: {why}"),
                format!("{F}:1: IP_ADDRESS entry \"0:0::0\" skipped: {why}"),
            ]
        );
    }

    #[test]
    fn ipv6_forms() {
        let c = p(
            "IP_ADDRESS=\"2001:DB8::A 2001:db8::a fe80::1 ::ffff:10.0.0.1 ::1 \
                   2001:db8:0:0:0:0:0:b fe80::1%eth0 2001:db8:::1\"\n",
        );
        assert_eq!(
            c.ips,
            ips(&[
                "2001:db8::a",
                "fe80::1",
                "::ffff:10.0.0.1",
                "::1",
                "2001:db8::b"
            ])
        );
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("\"fe80::1%eth0\""));
        assert!(c.warnings[1].contains("\"2001:db8:::1\""));
    }

    #[test]
    fn injection_attempts_are_refused_and_valid_entries_kept() {
        let c = p("IP_ADDRESS=\"1.2.3.4;touch /tmp/x\"\n\
                   IP_ADDRESS=\"$(reboot) 10.0.0.1 `id` 10.0.0.2|nc\"\n\
                   IP_ADDRESS=\"10.0.0.3 && rm -rf / ; 10.0.0.4 -j ACCEPT\"\n");
        assert_eq!(c.ips, ips(&["10.0.0.1", "10.0.0.3", "10.0.0.4"]));
        let bad: Vec<&str> = c
            .warnings
            .iter()
            .map(|w| w.split(" skipped:").next().unwrap())
            .collect();
        assert_eq!(
            bad,
            [
                format!("{F}:1: IP_ADDRESS entry \"1.2.3.4;touch\""),
                format!("{F}:1: IP_ADDRESS entry \"/tmp/x\""),
                format!("{F}:2: IP_ADDRESS entry \"$(reboot)\""),
                format!("{F}:2: IP_ADDRESS entry \"`id`\""),
                format!("{F}:2: IP_ADDRESS entry \"10.0.0.2|nc\""),
                format!("{F}:3: IP_ADDRESS entry \"&&\""),
                format!("{F}:3: IP_ADDRESS entry \"rm\""),
                format!("{F}:3: IP_ADDRESS entry \"-rf\""),
                format!("{F}:3: IP_ADDRESS entry \"/\""),
                format!("{F}:3: IP_ADDRESS entry \";\""),
                format!("{F}:3: IP_ADDRESS entry \"-j\""),
                format!("{F}:3: IP_ADDRESS entry \"ACCEPT\""),
            ]
        );
        let c = p("IP_ADDRESS=\"10.0.0.5\x1b[31m\x07 10.0.0.6\"\n");
        assert_eq!(c.ips, ips(&["10.0.0.6"]));
        assert_eq!(
            c.warnings,
            [format!(
                "{F}:1: IP_ADDRESS entry \"10.0.0.5\\u{{1b}}[31m\\u{{7}}\" skipped: \
                 not an IPv4 or IPv6 address (with an optional /prefix)"
            )]
        );
    }

    #[test]
    fn non_utf8_and_nul_bytes() {
        let c = parse(
            b"NAME=\"caf\xe9\"\nIP_ADDRESS=\"10.0.0.1 \xff\xfe 10.0.0.2\"\nHOSTNAME=\"a\0b\"\nX=1\0\"\n",
            Path::new(F),
        );
        assert_eq!(c.get("NAME"), Some("caf\u{fffd}"));
        assert_eq!(c.ips, ips(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(c.get("X"), Some("1"));
        assert_eq!(c.get("HOSTNAME"), None);
        assert_eq!(
            c.warnings,
            [
                format!(
                    "{F}:2: IP_ADDRESS entry \"\u{fffd}\u{fffd}\" skipped: \
                     not an IPv4 or IPv6 address (with an optional /prefix)"
                ),
                format!("{F}:3: the opening '\"' of the value has no closing '\"', line skipped"),
            ]
        );
    }

    #[test]
    fn warnings_are_capped() {
        let text: String = (0..35).map(|i| format!("garbage {i}\n")).collect();
        let c = p(&format!("{text}IP_ADDRESS=\"10.0.0.1\"\n"));
        assert_eq!(c.ips, ips(&["10.0.0.1"]));
        assert_eq!(c.warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(c.warnings[0], format!("{F}:1: no '=' in it, line skipped"));
        assert_eq!(
            c.warnings[19],
            format!("{F}:20: no '=' in it, line skipped")
        );
        assert_eq!(c.warnings[20], format!("... and 15 more warnings in {F}"));
    }

    #[test]
    fn warnings_escape_the_file_name() {
        let c = parse(b"oops\n", Path::new("/tmp/a\nb\x1b.conf"));
        assert_eq!(
            c.warnings,
            ["/tmp/a\\nb\\u{1b}.conf:1: no '=' in it, line skipped"]
        );
    }

    #[test]
    fn realistic_vzctl_config() {
        let c = parse(
            include_bytes!("../tests/fixtures/ctconf/101.conf"),
            Path::new(F),
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.ips, ips(&["10.0.0.101", "192.0.2.15", "2001:db8:1::101"]));
        assert_eq!(c.get("NAME"), Some("web101"));
        assert_eq!(c.get("HOSTNAME"), Some("web101.example.com"));
        assert_eq!(c.get("VE_PRIVATE"), Some("/vz/private/$VEID"));
        assert_eq!(c.get("NAMESERVER"), Some("192.0.2.53 2001:db8::53"));
        assert_eq!(c.get("NETIF"), None);
    }

    #[test]
    fn ten_megabytes_of_random_bytes() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut bytes = Vec::with_capacity(10 * 1024 * 1024);
        while bytes.len() < 10 * 1024 * 1024 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        let c = parse(&bytes, Path::new("/tmp/random.conf"));
        assert!(c.ips.is_empty());
        assert_eq!(c.warnings.len(), MAX_WARNINGS + 1);
        assert!(
            c.warnings[20].starts_with("... and ")
                && c.warnings[20].ends_with(" more warnings in /tmp/random.conf"),
            "{}",
            c.warnings[20]
        );
        for w in &c.warnings {
            assert!(!w.chars().any(char::is_control), "{w:?}");
        }
    }

    #[test]
    fn path_for_joins_ctid() {
        let ctid: Ctid = "101".parse().unwrap();
        assert_eq!(
            path_for(Path::new("/etc/vz/conf"), &ctid),
            PathBuf::from("/etc/vz/conf/101.conf")
        );
    }

    /// A fresh path under the temp dir; removed (file or dir) on drop.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let name = format!("vzacct-ctconf-{}-{tag}-{n}", std::process::id());
            TempPath(std::env::temp_dir().join(name))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn read_a_file() {
        let tmp = TempPath::new("ok");
        std::fs::write(&tmp.0, "IP_ADDRESS=\"10.0.0.1 x\"\n").unwrap();
        let c = read(&tmp.0).unwrap();
        assert_eq!(c.ips, ips(&["10.0.0.1"]));
        assert_eq!(
            c.warnings,
            [format!(
                "{}:1: IP_ADDRESS entry \"x\" skipped: \
                 not an IPv4 or IPv6 address (with an optional /prefix)",
                tmp.0.display()
            )]
        );
    }

    #[test]
    fn read_missing_file() {
        let tmp = TempPath::new("missing");
        let e = read(&tmp.0).unwrap_err();
        assert!(matches!(e, CtConfError::Missing { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("CT config {} does not exist", tmp.0.display())
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn read_a_directory() {
        let tmp = TempPath::new("dir");
        std::fs::create_dir(&tmp.0).unwrap();
        let e = read(&tmp.0).unwrap_err();
        assert!(matches!(e, CtConfError::IsDirectory { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("CT config {} is a directory, not a file", tmp.0.display())
        );
    }

    #[test]
    fn read_oversize_file() {
        let tmp = TempPath::new("big");
        let file = File::create(&tmp.0).unwrap();
        file.set_len(MAX_FILE_SIZE + 1).unwrap(); // sparse: costs no disk
        drop(file);
        let e = read(&tmp.0).unwrap_err();
        assert!(matches!(e, CtConfError::TooLarge { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "CT config {} is 16777217 bytes, more than the 16 MiB a CT config may have; \
                 refusing to read it",
                tmp.0.display()
            )
        );
        let file = File::options().write(true).open(&tmp.0).unwrap();
        file.set_len(MAX_FILE_SIZE).unwrap();
        drop(file);
        let c = read(&tmp.0).unwrap();
        assert!(c.ips.is_empty());
    }

    #[test]
    fn io_errors_are_classified() {
        let path = Path::new("/etc/vz/conf/101.conf");
        let e = io_error(path, io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(e, CtConfError::PermissionDenied { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("not allowed to read CT config {F}"));
        let e = io_error(path, io::Error::other("disk on fire"));
        assert_eq!(e.to_string(), format!("cannot read CT config {F}"));
        assert_eq!(
            std::error::Error::source(&e).map(|s| s.to_string()),
            Some("disk on fire".to_string())
        );
    }

    #[test]
    fn device_is_refused() {
        let e = read(Path::new("/dev/null")).unwrap_err();
        assert!(matches!(e, CtConfError::NotRegularFile { .. }), "{e:?}");
        assert_eq!(e.to_string(), "CT config /dev/null is not a regular file");
    }
}
