//! vzacct's own configuration (`/etc/vz/vzacct.conf`, INI): where vzctl, netfilter and our
//! storage live. Read with serde_ini; every key is optional and validated before anything runs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::model::valid_interface;

/// Default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/vz/vzacct.conf";

/// The validated configuration every command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Directory of the containers' vzctl configs (`<CTID>.conf`).
    pub conf_dir: PathBuf,
    /// `/proc/vz/veinfo` or a file in the same format.
    pub veinfo: PathBuf,
    /// Whose rules the CT configs are read by; `None`: probed ([`Config::ct_dialect`]).
    pub dialect: Option<crate::model::Dialect>,
    /// vzctl's global config; `None`: `vz.conf` in the parent directory of `conf_dir`.
    pub vz_conf: Option<PathBuf>,
    /// The iptables command for IPv4 (`iptables`, `iptables-legacy`, `/sbin/iptables`, ...).
    pub iptables: String,
    /// The iptables command for IPv6.
    pub ip6tables: String,
    /// Whether IPv6 addresses are accounted.
    pub ipv6: bool,
    /// The host side of the containers' venet interface.
    pub venet_interface: String,
    /// How the per-IP counters are kept in the kernel.
    pub backend: Backend,
    /// The ipset command.
    pub ipset: String,
    /// The iproute2 command (whether a stopped container's address is still routed).
    pub ip: String,
    /// Where the ledger and the lock live.
    pub state_dir: PathBuf,
    /// Where the per-container daily CSV files are written.
    pub csv_dir: PathBuf,
    /// Mode of the CSV files (their directory gets the matching search bits).
    pub csv_mode: u32,
    /// Group of the CSV files and their directory (a name or a number), for a non-root
    /// billing collector; `None`: root's.
    pub csv_group: Option<String>,
    /// The zone whose calendar days close into the CSV: an IANA name (`Europe/Berlin`,
    /// read from the system's zoneinfo), `UTC`, or `None` for the system zone
    /// (`/etc/localtime`). Never the `TZ` of whoever runs the command.
    pub timezone: Option<String>,
    /// A failing hook fails vzctl's action (normally a hook logs and exits 0).
    pub strict: bool,
    /// How long a hook waits for the lock before giving up (and logging so).
    pub hook_lock_timeout: u64,
    /// A hook's whole budget in seconds (lock wait plus work); past it the hook logs and
    /// exits, and the next dump repairs.
    pub hook_timeout: u64,
    /// Seconds any one program vzacct runs (iptables-*, ipset, ip) may take.
    pub program_timeout: u64,
    /// Where hooks log what they did and every failure.
    pub hook_log: PathBuf,
    /// node_exporter textfile written by every dump, if set.
    pub prometheus_textfile: Option<PathBuf>,
    /// The day of the month (1..=28) on which every container's billing period starts, at
    /// local midnight; `vzacct set CTID --cycle-day N` overrides it per container.
    pub cycle_day: u8,
    /// How many closed days the ledger keeps (`days`: `show --period`, `history`), and the
    /// `thresholds` records of the periods they hold.
    pub history_days: u64,
    /// The percentages of a container's quota at which a dump acts (ascending).
    pub thresholds: Vec<u32>,
    /// The operator's program run once per container, threshold and period; `None`: the
    /// hook log line only.
    pub on_threshold: Option<PathBuf>,
    /// Seconds the action program may run.
    pub on_threshold_timeout: u64,
    /// Traffic counted apart as free (`[classes]`).
    pub classes: Classes,
}

/// Traffic that is counted but not billed: with these networks, or between two
/// containers of the node. It is counted in `in_*`/`out_*` as all traffic is, and again
/// apart in `free_*`; billable = in - free_in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classes {
    /// The free networks (`free = 10.0.0.0/8 2001:db8::/32`), each once, in order.
    pub free: Vec<ipnet::IpNet>,
    /// `container_to_container = free`: traffic between two accounted addresses of the
    /// node is free too.
    pub container_to_container: bool,
}

impl Classes {
    /// Whether any traffic is free, so the free counters are wanted.
    pub fn active(&self) -> bool {
        !self.free.is_empty() || self.container_to_container
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            conf_dir: "/etc/vz/conf".into(),
            veinfo: "/proc/vz/veinfo".into(),
            dialect: None,
            vz_conf: None,
            iptables: "iptables".into(),
            ip6tables: "ip6tables".into(),
            ipv6: true,
            venet_interface: "venet0".into(),
            backend: Backend::Auto,
            ipset: "ipset".into(),
            ip: "ip".into(),
            state_dir: "/var/lib/vzacct".into(),
            csv_dir: "/var/log/vzacct".into(),
            csv_mode: 0o640,
            csv_group: None,
            timezone: None,
            strict: false,
            hook_lock_timeout: 10,
            hook_timeout: 15,
            program_timeout: 60,
            hook_log: "/var/log/vzacct/hook.log".into(),
            prometheus_textfile: None,
            cycle_day: 1,
            history_days: 800,
            thresholds: vec![80, 90, 100],
            on_threshold: None,
            on_threshold_timeout: 60,
            classes: Classes::default(),
        }
    }
}

/// Where the per-IP counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ipset when the ipset program and the kernel's sets work, else iptables.
    Auto,
    /// Hash sets with per-element counters behind a few fixed rules: the per-packet cost
    /// does not grow with the number of IPs.
    Ipset,
    /// One rule per IP and direction (the classic method): every packet walks the list.
    Iptables,
}

/// Why the configuration could not be used. Nothing runs on a bad config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: [{section}] {key} = {value} is not valid: {reason}")]
    BadValue {
        path: PathBuf,
        section: &'static str,
        key: &'static str,
        value: String,
        reason: &'static str,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    vzctl: Option<RawVzctl>,
    netfilter: Option<RawNetfilter>,
    storage: Option<RawStorage>,
    export: Option<RawExport>,
    billing: Option<RawBilling>,
    classes: Option<RawClasses>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClasses {
    free: Option<String>,
    container_to_container: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBilling {
    cycle_day: Option<String>,
    history_days: Option<String>,
    thresholds: Option<String>,
    on_threshold: Option<String>,
    on_threshold_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    prometheus_textfile: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVzctl {
    conf_dir: Option<String>,
    veinfo: Option<String>,
    dialect: Option<String>,
    vz_conf: Option<String>,
    strict: Option<String>,
    hook_lock_timeout: Option<String>,
    hook_timeout: Option<String>,
    hook_log: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetfilter {
    iptables: Option<String>,
    ip6tables: Option<String>,
    ipv6: Option<String>,
    venet_interface: Option<String>,
    backend: Option<String>,
    ipset: Option<String>,
    ip: Option<String>,
    program_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    state_dir: Option<String>,
    csv_dir: Option<String>,
    csv_mode: Option<String>,
    csv_group: Option<String>,
    timezone: Option<String>,
}

/// Load the config named by `--config` / `VZACCT_CONFIG` (which must exist), else the
/// default path (which may be absent: then every default applies).
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let (path, must_exist) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| ConfigError::Syntax {
                path: path.clone(),
                message: "it is not UTF-8 text".into(),
            })?;
            parse(&text, &path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(Config::default()),
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

/// Parse and validate INI text; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let cleaned = strip_comments(text);
    check_lines(&cleaned, path)?;
    let raw: RawFile = serde_ini::from_str(&cleaned).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: match e {
            serde_ini::de::Error::Custom(m) => clean(&m),
            other => clean(&other.to_string()),
        },
    })?;
    let mut cfg = Config::default();
    let bad = |section, key, value: &str, reason| ConfigError::BadValue {
        path: path.to_path_buf(),
        section,
        key,
        value: crate::ctid::escape_for_message(value),
        reason,
    };
    // `take!(section.key, check, REASON)`: when the file sets `key` in `[section]`, `cfg.key`
    // becomes what `check` makes of the value, and a value `check` refuses is the error.
    macro_rules! take {
        ($section:ident . $key:ident, $check:expr, $reason:expr) => {
            if let Some(v) = $section.$key {
                let (section, key) = (stringify!($section), stringify!($key));
                cfg.$key = ($check)(&v).ok_or_else(|| bad(section, key, &v, $reason))?;
            }
        };
    }
    let vzctl = raw.vzctl.unwrap_or_default();
    take!(vzctl.conf_dir, absolute_path, ABS);
    take!(vzctl.veinfo, absolute_path, ABS);
    take!(vzctl.dialect, dialect, DIALECT);
    take!(vzctl.vz_conf, optional_path, ABS);
    take!(vzctl.strict, yes_no, YESNO);
    take!(vzctl.hook_lock_timeout, seconds, SECONDS);
    take!(vzctl.hook_timeout, seconds, SECONDS);
    take!(vzctl.hook_log, absolute_path, ABS);
    let export = raw.export.unwrap_or_default();
    take!(export.prometheus_textfile, optional_path, ABS);
    let netfilter = raw.netfilter.unwrap_or_default();
    take!(netfilter.iptables, program, PROG);
    take!(netfilter.ip6tables, program, PROG);
    take!(netfilter.ipv6, yes_no, YESNO);
    take!(netfilter.venet_interface, interface, IFACE);
    take!(netfilter.backend, backend, BACKEND);
    take!(netfilter.ipset, program, PROG);
    take!(netfilter.ip, program, PROG);
    take!(netfilter.program_timeout, seconds, SECONDS);
    let storage = raw.storage.unwrap_or_default();
    take!(storage.state_dir, absolute_path, ABS);
    take!(storage.csv_dir, absolute_path, ABS);
    take!(storage.csv_mode, file_mode, MODE);
    take!(storage.csv_group, |v| optional_name(v, group_name), GROUP);
    take!(storage.timezone, |v| optional_name(v, zone_name), ZONE);
    let billing = raw.billing.unwrap_or_default();
    take!(billing.cycle_day, cycle_day, CYCLE);
    take!(billing.history_days, history_days, HISTORY);
    take!(billing.thresholds, |v| parse_thresholds(v).ok(), THRESHOLDS);
    take!(billing.on_threshold, optional_path, ABS);
    take!(billing.on_threshold_timeout, seconds, SECONDS);
    let cl = raw.classes.unwrap_or_default();
    if let Some(v) = cl.free {
        for word in v.split_ascii_whitespace() {
            let net = network(word).ok_or_else(|| bad("classes", "free", word, NETS))?;
            if !cfg.classes.free.contains(&net) {
                cfg.classes.free.push(net);
            }
        }
    }
    if let Some(v) = cl.container_to_container {
        cfg.classes.container_to_container = match v.trim() {
            "free" => true,
            "billed" => false,
            _ => return Err(bad("classes", "container_to_container", &v, C2C)),
        };
    }
    Ok(cfg)
}

/// A free network: `10.0.0.0/8`, `2001:db8::/32`, or one address (a host network). Host
/// bits must be clear (`10.0.0.1/8` is a typo for something), and the prefix at least 1
/// (the kernel's `hash:net` sets take no /0, and all traffic free is no class).
pub fn network(word: &str) -> Option<ipnet::IpNet> {
    let net: ipnet::IpNet = match word.parse::<std::net::IpAddr>() {
        Ok(ip) => ipnet::IpNet::from(ip),
        Err(_) => word.parse().ok()?,
    };
    (net.prefix_len() > 0 && net.trunc() == net).then_some(net)
}

/// A cycle day: 1 to 28, which every month has.
pub fn cycle_day(v: &str) -> Option<u8> {
    v.trim().parse().ok().filter(|d| (1..=28).contains(d))
}

/// The text as serde_ini can take it: comments go, both whole-line ones and those after a
/// value (`backend = auto ; auto | ipset | iptables`, `state_dir = /srv/x  # note`: a `;`
/// or `#` after a space or tab starts a comment, as people write INI files), and so does
/// trailing whitespace. serde_ini would keep an inline comment as part of the value, and it
/// rejects lines holding only whitespace.
pub fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with(';') || t.starts_with('#') {
                return "";
            }
            let b = line.as_bytes();
            let cut = (1..b.len())
                .find(|&i| matches!(b[i], b';' | b'#') && matches!(b[i - 1], b' ' | b'\t'))
                .unwrap_or(b.len());
            line[..cut].trim_end()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every line must be a comment, a `[section]` or a `key = value`: say which one is not,
/// before serde_ini gives a message without a line number.
fn check_lines(text: &str, path: &Path) -> Result<(), ConfigError> {
    let syntax = |message| ConfigError::Syntax {
        path: path.to_path_buf(),
        message,
    };
    // Each section once, and each of them known (the INI reader would name neither the line
    // nor the section: "duplicate field `vzctl`").
    let mut sections: Vec<(&str, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let Some(name) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
            continue;
        };
        let name = name.trim();
        if !SECTIONS.contains(&name) {
            return Err(syntax(format!(
                "line {}: unknown section [{}]; the sections are {}",
                i + 1,
                clean(name),
                SECTIONS.map(|s| format!("[{s}]")).join(", ")
            )));
        }
        if let Some((_, first)) = sections.iter().find(|(n, _)| *n == name) {
            return Err(syntax(format!(
                "line {}: section [{name}] appears a second time (first on line {first}); put \
                 its keys under the first",
                i + 1
            )));
        }
        sections.push((name, i + 1));
    }
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let ok = t.is_empty()
            || t.starts_with(';')
            || t.starts_with('#')
            || (t.starts_with('[') && t.ends_with(']'))
            || (!t.starts_with('[') && t.contains('='));
        // What is left after the comments went must not look like one: a `;` or `#` after
        // other whitespace (a no-break space, say) would silently end up in the value.
        if ok && let Some((key, value)) = t.split_once('=') {
            let v: Vec<char> = value.chars().collect();
            if v.windows(2)
                .any(|w| w[0].is_whitespace() && matches!(w[1], ';' | '#'))
            {
                return Err(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: format!(
                        "line {}: the value of {} holds what looks like a comment after unusual \
                         whitespace; put comments on their own line",
                        i + 1,
                        crate::ctid::escape_for_message(key.trim())
                    ),
                });
            }
        }
        if !ok {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                message: format!(
                    "line {}: expected `[section]` or `key = value`, found {}",
                    i + 1,
                    crate::ctid::escape_for_message(t)
                ),
            });
        }
    }
    Ok(())
}

/// Parse `thresholds = 80 90 100` (percent, each 1..=1000, any order, no repeats).
pub fn parse_thresholds(text: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let t: u32 = word
            .trim_end_matches('%')
            .parse()
            .ok()
            .filter(|t| (1..=1000).contains(t))
            .ok_or_else(|| {
                format!(
                    "threshold {}: expected a percentage from 1 to 1000",
                    crate::ctid::escape_for_message(word)
                )
            })?;
        if out.contains(&t) {
            return Err(format!("threshold {t} given twice"));
        }
        out.push(t);
    }
    out.sort_unstable();
    Ok(out)
}

/// The sections of the config, in the template's order.
const SECTIONS: [&str; 6] = [
    "vzctl",
    "netfilter",
    "storage",
    "billing",
    "classes",
    "export",
];

/// A message from serde_ini, escaped and cut for an operator.
fn clean(m: &str) -> String {
    m.chars().flat_map(char::escape_debug).take(300).collect()
}

const ABS: &str = "expected an absolute path";
const PROG: &str = "expected a program name or an absolute path, without spaces";
const YESNO: &str = "expected yes or no";
const DIALECT: &str = "expected auto, vzctl4 or libvzctl";
const BACKEND: &str = "expected auto, ipset or iptables";
const SECONDS: &str = "expected a whole number of seconds from 1 to 3600";
const MODE: &str =
    "expected an octal file mode from 0600 to 0644 that no one but root may write, such as 0640";
const GROUP: &str = "expected a group name or number";
const ZONE: &str =
    "expected a time zone name such as Europe/Berlin or UTC (empty: the system's zone)";
const THRESHOLDS: &str =
    "expected percentages of the quota from 1 to 1000, separated by spaces, each once";
const CYCLE: &str = "expected a day of the month from 1 to 28 (every month has it)";
const HISTORY: &str =
    "expected a number of days from 62 (the previous period and this one) to 36600";
const NETS: &str = "expected networks separated by spaces, like 10.0.0.0/8 2001:db8::/32 \
     (an address alone is one host; no host bits set; prefix /1 or longer)";
const C2C: &str = "expected free or billed";
const IFACE: &str = "expected a network interface name (1-15 characters, no spaces or '/')";

/// An absolute path, or `None` (the default) when the value is empty.
fn optional_path(v: &str) -> Option<Option<PathBuf>> {
    match v.trim() {
        "" => Some(None),
        _ => absolute_path(v).map(Some),
    }
}

/// The trimmed value, if `ok` accepts it.
fn name(v: &str, ok: fn(&str) -> bool) -> Option<String> {
    let v = v.trim();
    ok(v).then(|| v.to_string())
}

fn interface(v: &str) -> Option<String> {
    name(v, valid_interface)
}

/// [`name`], or `None` (the default) when the value is empty.
fn optional_name(v: &str, ok: fn(&str) -> bool) -> Option<Option<String>> {
    match v.trim() {
        "" => Some(None),
        v => name(v, ok).map(Some),
    }
}

/// `auto` (probe the node: `None`) or a dialect's name.
fn dialect(v: &str) -> Option<Option<crate::model::Dialect>> {
    match v.trim() {
        "auto" => Some(None),
        name => name.parse().ok().map(Some),
    }
}

fn backend(v: &str) -> Option<Backend> {
    match v.trim() {
        "auto" => Some(Backend::Auto),
        "ipset" => Some(Backend::Ipset),
        "iptables" => Some(Backend::Iptables),
        _ => None,
    }
}

fn history_days(v: &str) -> Option<u64> {
    v.trim().parse().ok().filter(|d| (62..=36600).contains(d))
}

fn absolute_path(v: &str) -> Option<PathBuf> {
    let v = v.trim();
    (v.starts_with('/') && !v.chars().any(char::is_control)).then(|| PathBuf::from(v))
}

fn program(v: &str) -> Option<String> {
    let v = v.trim();
    let ok = !v.is_empty()
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && (v.starts_with('/') || !v.contains('/'));
    ok.then(|| v.to_string())
}

fn seconds(v: &str) -> Option<u64> {
    v.trim().parse().ok().filter(|s| (1..=3600).contains(s))
}

/// An octal mode for a file that root writes and others may at most read: owner rw.
fn file_mode(v: &str) -> Option<u32> {
    let m = u32::from_str_radix(v.trim(), 8).ok()?;
    (m & !0o644 == 0 && m & 0o600 == 0o600).then_some(m)
}

fn group_name(v: &str) -> bool {
    (1..=32).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !v.starts_with('-')
}

/// An IANA zone name: path components of letters, digits, `_`, `-`, `+`, never `..`.
fn zone_name(v: &str) -> bool {
    v.len() <= 64
        && !v.starts_with('/')
        && v.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-+".contains(&b))
        })
}

fn yes_no(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

impl Config {
    /// The configured dialect, or the one installed on this node (probed at `/`).
    pub fn ct_dialect(&self) -> crate::model::Dialect {
        self.dialect
            .unwrap_or_else(|| crate::model::Dialect::detect(Path::new("/")))
    }

    /// `vz_conf`, or `vz.conf` beside `conf_dir` (`/etc/vz/conf` -> `/etc/vz/vz.conf`).
    pub fn vz_conf_path(&self) -> PathBuf {
        match &self.vz_conf {
            Some(p) => p.clone(),
            None => self
                .conf_dir
                .parent()
                .unwrap_or(&self.conf_dir)
                .join("vz.conf"),
        }
    }

    /// The iptables command of one address family.
    pub fn iptables_for(&self, family: crate::model::Family) -> &str {
        match family {
            crate::model::Family::V4 => &self.iptables,
            crate::model::Family::V6 => &self.ip6tables,
        }
    }
}

/// `iptables-legacy` -> `iptables-legacy-save`, `/sbin/iptables` -> `/sbin/iptables-save`.
pub fn companion(program: &str, suffix: &str) -> String {
    format!("{program}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/t/vzacct.conf"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(p("").unwrap(), Config::default());
    }

    #[test]
    fn every_key_is_read() {
        let cfg = p("[vzctl]\nconf_dir = /c\nveinfo = /v\n   \n\
                     dialect = libvzctl\nvz_conf = /etc/vz.conf\n\
                     strict = yes\nhook_lock_timeout = 3\nhook_timeout = 7\nhook_log = /h.log\n\
                     [netfilter]\niptables = iptables-legacy\nip6tables = /sbin/ip6tables\n\
                     ipv6 = no\nvenet_interface = venet9\nbackend = ipset\nipset = /sbin/ipset\nip = /sbin/ip\n\
                     program_timeout = 9\n\
                     [storage]\nstate_dir = /s\ncsv_dir = /l\ncsv_mode = 0644\ncsv_group = billing\n\
                     timezone = Europe/Berlin\n\
                     [export]\nprometheus_textfile = /p/vzacct.prom\n\
                     [billing]\ncycle_day = 15\nhistory_days = 400\nthresholds = 100 50\n\
                     on_threshold = /etc/vz/vzacct-threshold\non_threshold_timeout = 20\n")
        .unwrap();
        assert_eq!(
            cfg,
            Config {
                conf_dir: "/c".into(),
                veinfo: "/v".into(),
                dialect: Some(crate::model::Dialect::Libvzctl),
                vz_conf: Some("/etc/vz.conf".into()),
                iptables: "iptables-legacy".into(),
                ip6tables: "/sbin/ip6tables".into(),
                ipv6: false,
                venet_interface: "venet9".into(),
                backend: Backend::Ipset,
                ipset: "/sbin/ipset".into(),
                ip: "/sbin/ip".into(),
                state_dir: "/s".into(),
                csv_dir: "/l".into(),
                csv_mode: 0o644,
                csv_group: Some("billing".into()),
                timezone: Some("Europe/Berlin".into()),
                strict: true,
                hook_lock_timeout: 3,
                hook_timeout: 7,
                program_timeout: 9,
                hook_log: "/h.log".into(),
                prometheus_textfile: Some("/p/vzacct.prom".into()),
                cycle_day: 15,
                history_days: 400,
                thresholds: vec![50, 100],
                on_threshold: Some("/etc/vz/vzacct-threshold".into()),
                on_threshold_timeout: 20,
                classes: Classes::default(),
            }
        );
    }

    #[test]
    fn comments_are_ignored() {
        let cfg = p("; top\n# also\n[netfilter]\n; ipv6 = no\nipv6 = yes\n").unwrap();
        assert!(cfg.ipv6);
    }

    #[test]
    fn inline_comments_are_ignored() {
        let cfg = p(
            "[netfilter] ; the firewall\nbackend = ipset ; auto | ipset | iptables\n\
                     iptables = iptables-legacy\t# legacy node\n\
                     [storage]\nstate_dir = /srv/x  # note\ncsv_dir = /srv/a;b#c\n",
        )
        .unwrap();
        assert_eq!(cfg.backend, Backend::Ipset);
        assert_eq!(cfg.iptables, "iptables-legacy");
        assert_eq!(cfg.state_dir, PathBuf::from("/srv/x"));
        // Without whitespace before it, `;` or `#` is part of the value.
        assert_eq!(cfg.csv_dir, PathBuf::from("/srv/a;b#c"));
    }

    #[test]
    fn a_comment_left_in_a_value_is_an_error_naming_the_key() {
        let e = p("[storage]\nstate_dir = /srv/x\u{a0}; note\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("state_dir") && e.contains("line 2"), "{e}");
    }

    /// Every INI block of the README and the template parses as documented.
    #[test]
    fn every_ini_block_of_the_readme_and_the_template_parses() {
        let readme = include_str!("../README.md");
        let mut blocks = Vec::new();
        let mut cur: Option<String> = None;
        for line in readme.lines() {
            match (&mut cur, line.trim()) {
                (None, "```ini") => cur = Some(String::new()),
                (Some(b), "```") => {
                    blocks.push(std::mem::take(b));
                    cur = None;
                }
                (Some(b), _) => {
                    b.push_str(line);
                    b.push('\n');
                }
                _ => {}
            }
        }
        assert!(
            blocks.len() >= 2,
            "README holds {} INI block(s)",
            blocks.len()
        );
        for b in &blocks {
            if let Err(e) = p(b) {
                panic!("README block does not parse: {e}\n{b}");
            }
        }
        assert_eq!(
            p(include_str!("../conf-templates/vzacct.conf")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn thresholds_are_percentages_given_once() {
        assert_eq!(parse_thresholds("100 80 90%").unwrap(), [80, 90, 100]);
        for bad in ["0", "80 80", "x", "1001"] {
            assert!(parse_thresholds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_thresholds("").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn sections_are_known_and_given_once() {
        assert_eq!(
            p("[vzctl]\nstrict = no\n[storage]\n\n[vzctl]\n")
                .unwrap_err()
                .to_string(),
            "config file /t/vzacct.conf is not valid: line 5: section [vzctl] appears a second \
             time (first on line 1); put its keys under the first"
        );
        assert_eq!(
            p("[netfiltre]\n").unwrap_err().to_string(),
            "config file /t/vzacct.conf is not valid: line 1: unknown section [netfiltre]; the \
             sections are [vzctl], [netfilter], [storage], [billing], [classes], [export]"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = p("[netfilter]\niptabels = x\n").unwrap_err().to_string();
        assert!(e.contains("iptabels"), "{e}");
        assert!(e.contains("/t/vzacct.conf"), "{e}");
    }

    #[test]
    fn unknown_section_is_named() {
        let e = p("[storag]\nstate_dir = /x\n").unwrap_err().to_string();
        assert!(e.contains("storag"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("[netfilter]\nipv6 = maybe\n", "ipv6"),
            ("[storage]\nstate_dir = relative/dir\n", "state_dir"),
            ("[netfilter]\niptables = iptables; rm -rf /\n", "iptables"),
            ("[netfilter]\niptables = bin/iptables\n", "iptables"),
            ("[netfilter]\nvenet_interface = a/b\n", "venet_interface"),
            ("[vzctl]\nveinfo = \n", "veinfo"),
            ("[vzctl]\nhook_lock_timeout = 0\n", "hook_lock_timeout"),
            ("[vzctl]\nstrict = perhaps\n", "strict"),
            ("[vzctl]\nhook_timeout = 0\n", "hook_timeout"),
            ("[netfilter]\nprogram_timeout = 1h\n", "program_timeout"),
            ("[storage]\ncsv_mode = 0666\n", "csv_mode"),
            ("[storage]\ncsv_mode = 0400\n", "csv_mode"),
            ("[storage]\ncsv_group = a b\n", "csv_group"),
            ("[storage]\ntimezone = ../../etc/passwd\n", "timezone"),
            ("[netfilter]\nbackend = nftables\n", "backend"),
            ("[vzctl]\ndialect = openvz7\n", "dialect"),
            ("[vzctl]\nvz_conf = vz.conf\n", "vz_conf"),
            ("[billing]\ncycle_day = 29\n", "cycle_day"),
            ("[billing]\ncycle_day = 0\n", "cycle_day"),
            ("[billing]\nhistory_days = 30\n", "history_days"),
            ("[billing]\nthresholds = 80 80\n", "thresholds"),
            ("[billing]\nthresholds = 0\n", "thresholds"),
            ("[billing]\non_threshold = mail.sh\n", "on_threshold"),
            (
                "[billing]\non_threshold_timeout = 0\n",
                "on_threshold_timeout",
            ),
            (
                "[export]\nprometheus_textfile = x.prom\n",
                "prometheus_textfile",
            ),
        ] {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn dialect_and_vz_conf() {
        let cfg = p("[vzctl]\ndialect = vzctl4\nvz_conf =\n").unwrap();
        assert_eq!(cfg.dialect, Some(crate::model::Dialect::Vzctl4));
        assert_eq!(cfg.ct_dialect(), crate::model::Dialect::Vzctl4);
        assert_eq!(cfg.vz_conf_path(), PathBuf::from("/etc/vz/vz.conf"));
        let cfg = p("[vzctl]\ndialect = auto\nconf_dir = /etc/pve/openvz\n").unwrap();
        assert_eq!(cfg.dialect, None);
        assert_eq!(cfg.vz_conf_path(), PathBuf::from("/etc/pve/vz.conf"));
        let cfg = p("[vzctl]\nconf_dir = /etc/pve/openvz\nvz_conf = /etc/vz/vz.conf\n").unwrap();
        assert_eq!(cfg.vz_conf_path(), PathBuf::from("/etc/vz/vz.conf"));
        let e = p("[vzctl]\ndialect = vzctl7\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "config file /t/vzacct.conf: [vzctl] dialect = \"vzctl7\" is not valid: \
             expected auto, vzctl4 or libvzctl"
        );
    }

    #[test]
    fn companion_programs() {
        assert_eq!(companion("iptables-legacy", "save"), "iptables-legacy-save");
        assert_eq!(
            companion("/sbin/iptables", "restore"),
            "/sbin/iptables-restore"
        );
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let e = load(Some(Path::new("/nonexistent/vzacct.conf"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vzacct.conf"));
    }
}
