//! vzctl's calls into vzacct: the mount/umount action scripts and the vps-net_add/del
//! network scripts hand over to `vzacct hook EVENT` with exactly the environment vzctl gives
//! them, and the init script and unit hand over the node's boot and shutdown the same way.
//! A hook must never break or hold up a container's life cycle: whatever happens (a broken
//! config, a hung iptables, a lock someone holds) it writes exactly one line to the hook log
//! and one to stderr, ends within its budget (`hook_timeout`), and, unless the operator
//! asked for strict mode in a config that could be read, exits 0.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::commands::change::{account, config_ips, unaccount};
use crate::commands::error::{Error, chain};
use crate::commands::{Ctx, parse_ip};
use crate::ctid::{Ctid, escape_for_message};
use crate::vzctl::ctconf;

/// What vzctl reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Event {
    /// From `vps.mount` (VEID, VE_CONFFILE): check the container's config; nothing is
    /// accounted (vzctl has assigned no IP yet, and may never: `vzctl mount`, a failed start).
    Mount,
    /// From `vps.umount` (VEID): harvest and stop accounting the container.
    Umount,
    /// From `vps-net_add` (VEID, VE_STATE, IP_ADDR): account those IPs.
    NetAdd,
    /// From `vps-net_del` (VEID, VE_STATE, IP_ADDR): harvest and stop accounting those IPs.
    NetDel,
    /// From the init script or unit at boot: `vzacct restore` under a hook's rules.
    Restore,
    /// From the init script or unit at shutdown: `vzacct dump` under a hook's rules.
    Dump,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Mount => "mount",
            Event::Umount => "umount",
            Event::NetAdd => "net-add",
            Event::NetDel => "net-del",
            Event::Restore => "restore",
            Event::Dump => "dump",
        }
    }

    /// Whether the event concerns one container (and so needs VEID).
    fn per_container(self) -> bool {
        !matches!(self, Event::Restore | Event::Dump)
    }
}

/// Where a hook logs when its config cannot be read: the default `hook_log`.
pub const FALLBACK_LOG: &str = "/var/log/vzacct/hook.log";

/// Set by whoever writes the hook's one log line first: the hook itself or its watchdog.
static LOGGED: AtomicBool = AtomicBool::new(false);

/// Claim the one log line of this hook; false if it was already written.
fn claim_log() -> bool {
    !LOGGED.swap(true, Ordering::SeqCst)
}

/// Who the hook is about, for its log line.
fn who(event: Event, env: &HookEnv) -> String {
    if !event.per_container() {
        return "node".to_string();
    }
    match env.veid.as_deref() {
        Some(v) => match v.parse::<Ctid>() {
            Ok(c) => format!("ct={c}"),
            Err(_) => format!("ct={}", escape_for_message(v)),
        },
        None => "ct=(no VEID)".to_string(),
    }
}

/// The config could not be read: one line to the fallback log and one to stderr, and the
/// hook succeeds (strict mode cannot apply: it is the config that would say so).
pub fn config_failed(
    event: Event,
    env: &HookEnv,
    fallback_log: &Path,
    now: chrono::DateTime<chrono::FixedOffset>,
    error: &Error,
    err: &mut dyn Write,
) {
    let text = one_line(&chain(error));
    let line = format!(
        "{} {} {} error: {text}; nothing done (fix the config: `vzacct check` shows it; the next dump repairs)",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        event.name(),
        who(event, env)
    );
    let logged = claim_log() && append_log(fallback_log, &line).is_ok();
    let _ = writeln!(
        err,
        "vzacct: hook {} {} not run, vzctl goes on: {text}{}",
        event.name(),
        who(event, env),
        if logged {
            format!(" (logged in {})", fallback_log.display())
        } else {
            format!(" (cannot write {} either)", fallback_log.display())
        }
    );
}

/// Start the hook's watchdog: if the hook is still running `budget` after `started`, it
/// writes the hook's one log line and one line to stderr, ends every program the hook
/// started, and exits (0, or 1 in strict mode). The programs' own deadlines end before
/// it, so normally the hook reports a timed-out program itself.
pub fn watchdog(
    started: Instant,
    budget: Duration,
    event: Event,
    env: &HookEnv,
    log: PathBuf,
    strict: bool,
    now: chrono::DateTime<chrono::FixedOffset>,
) {
    let who = who(event, env);
    std::thread::spawn(move || {
        std::thread::sleep(budget.saturating_sub(started.elapsed()));
        let text = format!(
            "did not finish within hook_timeout = {} s and was stopped; vzctl goes on, and the \
             next dump repairs the rules and harvests the counters",
            budget.as_secs()
        );
        if claim_log() {
            let line = format!(
                "{} {} {who} error: {text}",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                event.name()
            );
            let _ = append_log(&log, &line);
            eprintln!("vzacct: hook {} {who} {text}", event.name());
        }
        crate::backend::process::end_all();
        std::process::exit(if strict { 1 } else { 0 });
    });
}

/// The environment vzctl sets for its scripts (nothing else is read).
#[derive(Debug, Clone, Default)]
pub struct HookEnv {
    pub veid: Option<String>,
    pub ve_conffile: Option<String>,
    pub ve_state: Option<String>,
    pub ip_addr: Option<String>,
}

impl HookEnv {
    pub fn from_process() -> HookEnv {
        let var = |k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
        HookEnv {
            veid: var("VEID"),
            ve_conffile: var("VE_CONFFILE"),
            ve_state: var("VE_STATE"),
            ip_addr: var("IP_ADDR"),
        }
    }
}

/// Run one hook: do the work, then log the outcome. A failure is returned only in strict
/// mode; otherwise it is written to stderr and the hook log, and the hook succeeds.
pub fn run_logged(ctx: &mut Ctx, event: Event, env: &HookEnv) -> Result<(), Error> {
    let who = who(event, env);
    let outcome = run(ctx, event, env);
    let at = ctx.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let line = match &outcome {
        Ok(summary) => format!("{at} {} {who} ok: {summary}", event.name()),
        Err(e) => format!("{at} {} {who} error: {}", event.name(), one_line(&chain(e))),
    };
    if !claim_log() {
        // The watchdog has reported this hook and is ending the process.
        std::thread::sleep(Duration::from_secs(5));
        return Ok(());
    }
    if let Err(e) = append_log(&ctx.config.hook_log, &line) {
        let _ = writeln!(
            ctx.err,
            "vzacct: warning: cannot write hook log {}: {e}",
            ctx.config.hook_log.display()
        );
    }
    match outcome {
        Ok(summary) => {
            let _ = writeln!(ctx.out, "vzacct hook {}: {summary}", event.name());
            Ok(())
        }
        Err(e) if ctx.config.strict => Err(e),
        Err(e) => {
            // What the next dump repairs is the kernel's side; a container's config or an
            // IP_ADDR it cannot use is for the operator to fix.
            let next = match e {
                Error::CtConf(_) | Error::Ctid(_) | Error::Invalid(_) => "fix what it names",
                _ => "`vzacct dump` repairs the rules",
            };
            let _ = writeln!(
                ctx.err,
                "vzacct: hook {} {who} failed (logged in {}; vzctl goes on, {next}): {}",
                event.name(),
                ctx.config.hook_log.display(),
                one_line(&chain(&e))
            );
            Ok(())
        }
    }
}

/// The work of one hook; returns a one-line summary for the log.
pub fn run(ctx: &mut Ctx, event: Event, env: &HookEnv) -> Result<String, Error> {
    if !event.per_container() {
        return node_event(ctx, event);
    }
    let raw = env
        .veid
        .as_deref()
        .ok_or_else(|| Error::Invalid("VEID is not set: not called by vzctl?".into()))?;
    let ctid: Ctid = raw.parse()?;
    match event {
        Event::Mount => {
            let path = match env.ve_conffile.as_deref().filter(|p| !p.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => ctconf::path_for(&ctx.config.conf_dir, &ctid),
            };
            // Only the event in which vzctl really assigns an IP may move it from another
            // container (DESIGN invariant 8): that is its net_add script, which carries every
            // IP at start and resume on vzctl 4 (vps_add_ip, src/lib/net.c) and OpenVZ 7
            // (add_ip, lib/net.c). At mount vzctl has checked nothing: `vzctl mount` assigns
            // no IP, and a start may still fail (EADDRINUSE: another container holds one).
            // So mount only reads the config, to report a broken one before the start.
            let ips = config_ips(ctx, &path)?;
            if ips.is_empty() {
                return Ok(format!("no venet IP in {}", path.display()));
            }
            Ok(format!(
                "config lists {}; accounted when vzctl assigns them (net_add)",
                join(&ips)
            ))
        }
        Event::Umount => {
            let (removed, how) = hook_unaccount(ctx, &ctid, None)?;
            Ok(format!("stopped accounting {}{how}", join(&removed)))
        }
        Event::Restore | Event::Dump => unreachable!("node events are handled above"),
        Event::NetAdd | Event::NetDel => {
            let (ips, bad) = ip_addr(env.ip_addr.as_deref().unwrap_or(""), ctx.config.ipv6);
            let state = env.ve_state.as_deref().unwrap_or("?");
            let summary = if ips.is_empty() {
                "no IP in IP_ADDR".to_string()
            } else if event == Event::NetAdd {
                let (new, how) = hook_account(ctx, &ctid, &ips)?;
                format!(
                    "VE_STATE={} accounting {} (new: {}){how}",
                    escape_state(state),
                    join(&ips),
                    join(&new)
                )
            } else {
                let (removed, how) = hook_unaccount(ctx, &ctid, Some(&ips))?;
                format!(
                    "VE_STATE={} stopped accounting {}{how}",
                    escape_state(state),
                    join(&removed)
                )
            };
            if bad.is_empty() {
                Ok(summary)
            } else {
                Err(Error::Invalid(format!(
                    "{summary}; IP_ADDR entries ignored: {}",
                    bad.join(", ")
                )))
            }
        }
    }
}

/// The node's boot (`restore`) or shutdown (`dump`), with what the command printed folded
/// into the log line.
fn node_event(ctx: &mut Ctx, event: Event) -> Result<String, Error> {
    let mut buf = Vec::new();
    let mut sub = Ctx {
        config: ctx.config.clone(),
        lock_wait: ctx.lock_wait,
        now: ctx.now,
        boot_id_file: ctx.boot_id_file.clone(),
        tz: ctx.tz.clone(),
        clock_fixed: ctx.clock_fixed,
        out: &mut buf,
        err: &mut *ctx.err,
    };
    match event {
        Event::Restore => crate::commands::change::restore(&mut sub)?,
        _ => crate::commands::change::dump_node(&mut sub, false)?,
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().collect::<Vec<_>>().join("; "))
}

/// Account `ips` for one container, in a run over that container alone when it suffices.
/// Returns the IPs new to the container and, for the log, why the run covered the node.
fn hook_account(
    ctx: &mut Ctx,
    ctid: &Ctid,
    ips: &[IpAddr],
) -> Result<(Vec<IpAddr>, String), Error> {
    let a = account(ctx, ctid, ips, true)?;
    Ok((a.new, widened(&a.widened)))
}

/// Stop accounting `ips` (all when `None`) of one container, over it alone when possible.
fn hook_unaccount(
    ctx: &mut Ctx,
    ctid: &Ctid,
    ips: Option<&[IpAddr]>,
) -> Result<(Vec<IpAddr>, String), Error> {
    let u = unaccount(ctx, ctid, ips, true)?;
    let how = match &u.widened {
        None if !u.removed.is_empty() => {
            " (counters kept in the sets until the next dump harvests them)".to_string()
        }
        w => widened(w),
    };
    Ok((u.removed, how))
}

/// The log's note of a run that had to cover the whole node.
fn widened(why: &crate::commands::Widened) -> String {
    why.as_ref()
        .map(|why| format!(" [full run: {why}]"))
        .unwrap_or_default()
}

/// Parse vzctl's `IP_ADDR` ("ip[/prefix] ip2 ..."): the usable IPs, and the refused entries
/// (already escaped for a message).
pub fn ip_addr(raw: &str, ipv6: bool) -> (Vec<IpAddr>, Vec<String>) {
    let mut ips = Vec::new();
    let mut bad = Vec::new();
    for tok in raw.split_ascii_whitespace() {
        match parse_ip(tok) {
            Ok(ip) if ip.is_ipv6() && !ipv6 => {}
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(m) => bad.push(m),
        }
    }
    (ips, bad)
}

fn escape_state(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric()) && s.len() <= 16 {
        s.to_string()
    } else {
        escape_for_message(s)
    }
}

fn join(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "none".into();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A message on one log line: a cause chain joined as the views join it, other line
/// breaks made visible, control characters escaped.
fn one_line(s: &str) -> String {
    s.replace("\n  caused by: ", "; caused by: ")
        .replace('\n', " | ")
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Append one line to the hook log (created 0640, its directory 0700, never through a
/// symlink). One write per line, so concurrent hooks never interleave within a line.
pub(crate) fn append_log(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if let Some(reason) = crate::ledger::store::unsafe_dir(dir) {
            return Err(std::io::Error::other(format!(
                "refusing to write into {}: {reason}",
                dir.display()
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addr_as_vzctl_passes_it() {
        let (ips, bad) = ip_addr("10.0.0.1/24 10.0.0.2  2001:db8::1/64\t10.0.0.1", true);
        let want: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "2001:db8::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
        assert!(bad.is_empty());
        let (ips, bad) = ip_addr("10.0.0.1 2001:db8::1", false);
        assert_eq!(ips.len(), 1);
        assert!(bad.is_empty());
        let (ips, bad) = ip_addr("10.0.0.1;reboot $(x) 10.0.0.3", true);
        assert_eq!(ips, vec!["10.0.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(bad.len(), 2);
        assert!(bad[0].contains(r#""10.0.0.1;reboot""#), "{bad:?}");
    }

    #[test]
    fn log_lines_stay_on_one_line() {
        assert_eq!(one_line("a\nb\u{1b}c"), "a | b\\u{1b}c");
        assert_eq!(
            one_line("cannot read x\n  caused by: No such file"),
            "cannot read x; caused by: No such file"
        );
    }
}
