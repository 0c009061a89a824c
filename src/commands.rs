//! The subcommands. Every one that changes something runs the same pipeline: take the lock,
//! load the ledger, read the kernel once per family, harvest, change what is accounted, plan,
//! append the closed days' CSV rows, write the ledger, apply one batch per family.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Local, NaiveDate};
use serde::Serialize;

use crate::config::Config;
use crate::csvlog;
use crate::ctconf;
use crate::ctid::{Ctid, escape_for_message};
use crate::error::Error;
use crate::ledger::{Figures, Harvest, Ledger, NewBoot, Row, month_of};
use crate::netfilter::Tables;
use crate::ruleset::{self, Current, Family, Kind, Op, Plan};
use crate::store::{self, Locked};
use crate::veinfo;

/// What every command runs with.
pub struct Ctx<'a> {
    pub config: Config,
    pub lock_wait: Duration,
    /// The current time (`VZACCT_NOW` overrides the clock for tests).
    pub now: DateTime<FixedOffset>,
    /// Where the kernel's boot id is read (`VZACCT_BOOT_ID_FILE` overrides it for tests).
    pub boot_id_file: PathBuf,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

impl Ctx<'_> {
    fn say(&mut self, line: impl AsRef<str>) -> Result<(), Error> {
        writeln!(self.out, "{}", line.as_ref()).map_err(Error::Output)
    }

    fn warn(&mut self, line: impl AsRef<str>) {
        // Warnings are best effort: a closed stderr must not fail the command.
        let _ = writeln!(self.err, "vzacct: warning: {}", line.as_ref());
    }

    fn families(&self) -> Vec<Family> {
        if self.config.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// The local calendar day of `now`.
    pub fn today(&self) -> NaiveDate {
        self.now.with_timezone(&Local).date_naive()
    }

    fn boot_id(&self) -> Result<String, Error> {
        let text = std::fs::read_to_string(&self.boot_id_file).map_err(|source| Error::BootId {
            path: self.boot_id_file.clone(),
            source,
        })?;
        let id = text.trim();
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Invalid(format!(
                "boot id file {} does not hold a boot id",
                self.boot_id_file.display()
            )));
        }
        Ok(id.to_string())
    }
}

/// Parse an IP given on the command line or by vzctl (`addr` or `addr/prefix`) and refuse
/// addresses a container cannot own.
pub fn parse_ip(raw: &str) -> Result<IpAddr, String> {
    let invalid = || format!("invalid IP address {}", escape_for_message(raw));
    let (addr, prefix) = match raw.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| invalid())?)),
        None => (raw, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| invalid())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix.is_some_and(|p| p > max) {
        return Err(invalid());
    }
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || broadcast {
        return Err(format!(
            "IP address {ip} cannot belong to a container (unspecified, loopback, multicast or broadcast)"
        ));
    }
    Ok(ip)
}

fn check_family(ctx: &Ctx, ip: &IpAddr) -> Result<(), Error> {
    if ip.is_ipv6() && !ctx.config.ipv6 {
        return Err(Error::Invalid(format!(
            "IPv6 address {ip} given, but IPv6 accounting is off (set ipv6 = yes under [netfilter])"
        )));
    }
    Ok(())
}

/// One locked read-modify-write: the ledger with the kernel's counters folded in.
struct Session {
    locked: Locked,
    ledger: Ledger,
    kernel: Vec<(Tables, Current)>,
    harvest: Harvest,
    rows: Vec<Row>,
}

/// Lock, load, read the kernel once per family (a missing or broken iptables stops the
/// command before anything changes) and harvest.
fn begin(ctx: &Ctx, policy: NewBoot) -> Result<Session, Error> {
    let locked = store::lock(&ctx.config.state_dir, ctx.lock_wait)?;
    let mut ledger = locked.load()?;
    let mut kernel = Vec::new();
    for family in ctx.families() {
        let tables = Tables::new(&ctx.config, family);
        let current = tables.read()?;
        kernel.push((tables, current));
    }
    let boot_id = ctx.boot_id()?;
    let currents: Vec<&Current> = kernel.iter().map(|(_, c)| c).collect();
    let (harvest, rows) = ledger.harvest(&currents, &boot_id, ctx.today(), policy);
    Ok(Session {
        locked,
        ledger,
        kernel,
        harvest,
        rows,
    })
}

/// What one commit did.
struct Committed {
    plans: Vec<(Family, Plan)>,
    rows_written: usize,
}

/// Append the closed days' rows, write the ledger, then (if `apply`) make the kernel match
/// it with one batch per family. The ledger is written before the batch: if the batch is
/// never applied, the rules it would have removed are still in the ledger's baselines and
/// the next run harvests them exactly.
fn commit(ctx: &Ctx, mut s: Session, apply: bool) -> Result<Committed, Error> {
    let accounted = s.ledger.accounted();
    let mut plans = Vec::new();
    for (tables, current) in &s.kernel {
        let want = ruleset::desired(&accounted, tables.family, &ctx.config.venet_interface);
        plans.push(ruleset::plan(&want, current));
    }
    let rows_written = csvlog::append(&ctx.config.csv_dir, &s.rows)?;
    s.ledger.prune();
    s.locked.save(&s.ledger)?;
    let mut done = Vec::new();
    for ((tables, _), plan) in s.kernel.iter().zip(plans) {
        if apply {
            tables.apply(&plan)?;
        }
        done.push((tables.family, plan));
    }
    Ok(Committed {
        plans: done,
        rows_written,
    })
}

fn report(ctx: &mut Ctx, c: &Committed) -> Result<(), Error> {
    for (family, plan) in &c.plans {
        if plan.is_empty() {
            ctx.say(format!("{family}: rules already in place"))?;
        } else {
            ctx.say(format!(
                "{family}: {} rule(s) added, {} removed ({} change(s) in one batch)",
                plan.added(),
                plan.deleted(),
                plan.ops.len()
            ))?;
        }
    }
    Ok(())
}

fn report_harvest(ctx: &mut Ctx, h: &Harvest, rows: usize) -> Result<(), Error> {
    let f = &h.counted;
    ctx.say(format!(
        "harvested {} bytes in / {} bytes out ({} / {} packets){}{}",
        f.in_bytes,
        f.out_bytes,
        f.in_packets,
        f.out_packets,
        if h.restarted > 0 {
            format!("; {} counter(s) had restarted from zero", h.restarted)
        } else {
            String::new()
        },
        if h.new_boot {
            "; first run of a new boot"
        } else {
            ""
        }
    ))?;
    if rows > 0 {
        ctx.say(format!("{rows} daily CSV row(s) written"))?;
    }
    Ok(())
}

/// `vzacct add CTID [IP...]`
pub fn add(ctx: &mut Ctx, ctid: &Ctid, ip_args: &[String]) -> Result<(), Error> {
    let mut ips = Vec::new();
    for raw in ip_args {
        let ip = parse_ip(raw).map_err(|m| Error::Invalid(format!("container {ctid}: {m}")))?;
        check_family(ctx, &ip)?;
        ips.push(ip);
    }
    if ips.is_empty() {
        let path = ctconf::path_for(&ctx.config.conf_dir, ctid);
        let conf = ctconf::read(&path)?;
        for w in &conf.warnings {
            ctx.warn(w);
        }
        for ip in conf.ips {
            if ip.is_ipv6() && !ctx.config.ipv6 {
                ctx.warn(format!(
                    "{}: skipping IPv6 address {ip}: IPv6 accounting is off",
                    path.display()
                ));
                continue;
            }
            match parse_ip(&ip.to_string()) {
                Ok(ip) => ips.push(ip),
                Err(m) => ctx.warn(format!("{}: skipping {m}", path.display())),
            }
        }
        if ips.is_empty() {
            return Err(Error::Invalid(format!(
                "container {ctid}: no usable IP address in IP_ADDRESS of {}; nothing to account",
                path.display()
            )));
        }
    }
    let mut s = begin(ctx, NewBoot::Count)?;
    let (now, today) = (ctx.now, ctx.today());
    let mut new = Vec::new();
    for ip in &ips {
        let (moved_from, added) = s.ledger.assign(ctid, *ip, now, today);
        if let Some(prev) = moved_from {
            ctx.warn(format!(
                "{ip} moves from container {prev} to container {ctid}"
            ));
        }
        if added {
            new.push(*ip);
        }
    }
    let done = commit(ctx, s, true)?;
    if new.is_empty() {
        ctx.say(format!("container {ctid}: already accounted"))?;
    } else {
        ctx.say(format!("container {ctid}: now accounting {}", join(&new)))?;
    }
    report(ctx, &done)
}

/// `vzacct remove CTID [IP...]`
pub fn remove(ctx: &mut Ctx, ctid: &Ctid, ip_args: &[String]) -> Result<(), Error> {
    let mut ips = Vec::new();
    for raw in ip_args {
        ips.push(parse_ip(raw).map_err(|m| Error::Invalid(format!("container {ctid}: {m}")))?);
    }
    let mut s = begin(ctx, NewBoot::Count)?;
    if ips.is_empty() {
        ips = s
            .ledger
            .containers
            .get(ctid)
            .map(|c| c.ips.iter().copied().collect())
            .unwrap_or_default();
    }
    let removed: Vec<IpAddr> = ips
        .iter()
        .filter(|ip| s.ledger.unassign(ctid, ip))
        .copied()
        .collect();
    for ip in ips.iter().filter(|ip| !removed.contains(ip)) {
        ctx.warn(format!("container {ctid} was not accounting {ip}"));
    }
    let done = commit(ctx, s, true)?;
    if removed.is_empty() {
        ctx.say(format!("container {ctid}: nothing to remove"))?;
    } else {
        ctx.say(format!(
            "container {ctid}: stopped accounting {} (its counts so far are kept)",
            join(&removed)
        ))?;
    }
    report(ctx, &done)
}

/// Account exactly the running containers of veinfo, when the file exists.
fn align_with_veinfo(ctx: &mut Ctx, s: &mut Session) -> Result<(), Error> {
    let Some(live) = veinfo::read(&ctx.config.veinfo)? else {
        return Ok(());
    };
    for w in &live.warnings {
        ctx.warn(w);
    }
    let before = s.ledger.accounted();
    let mut want: BTreeMap<Ctid, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut owner: BTreeMap<IpAddr, Ctid> = BTreeMap::new();
    for (ctid, ips) in &live.containers {
        for ip in ips {
            if ip.is_ipv6() && !ctx.config.ipv6 {
                continue;
            }
            if let Some(first) = owner.get(ip) {
                ctx.warn(format!(
                    "{}: {ip} is listed for containers {first} and {ctid}; kept for {first}",
                    ctx.config.veinfo.display()
                ));
                continue;
            }
            owner.insert(*ip, ctid.clone());
            want.entry(ctid.clone()).or_default().insert(*ip);
        }
    }
    for (ctid, ips) in &before {
        for ip in ips {
            if want.get(ctid).is_none_or(|w| !w.contains(ip)) {
                s.ledger.unassign(ctid, ip);
            }
        }
    }
    let (now, today) = (ctx.now, ctx.today());
    for (ctid, ips) in &want {
        for ip in ips {
            s.ledger.assign(ctid, *ip, now, today);
        }
    }
    let after = s.ledger.accounted();
    let started = after.keys().filter(|c| !before.contains_key(*c)).count();
    let stopped = before.keys().filter(|c| !after.contains_key(*c)).count();
    let changed = after
        .iter()
        .filter(|(c, ips)| before.get(*c).is_some_and(|b| b != *ips))
        .count();
    ctx.say(format!(
        "{}: {} running container(s); {started} newly accounted, {stopped} no longer, {changed} with changed IPs",
        ctx.config.veinfo.display(),
        after.len()
    ))
}

/// `vzacct sync`: align with veinfo when it exists, then make the kernel match.
pub fn sync(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = begin(ctx, NewBoot::Count)?;
    align_with_veinfo(ctx, &mut s)?;
    let done = commit(ctx, s, true)?;
    report(ctx, &done)
}

/// `vzacct dump`: harvest every rule, heal the rules as sync does, close finished days.
pub fn dump(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = begin(ctx, NewBoot::Count)?;
    align_with_veinfo(ctx, &mut s)?;
    let harvest = s.harvest.clone();
    let done = commit(ctx, s, true)?;
    report_harvest(ctx, &harvest, done.rows_written)?;
    report(ctx, &done)
}

/// `vzacct restore`: at boot, before containers start: recreate chains, jumps and the
/// rules of every accounted container, and start the new boot's baselines.
pub fn restore(ctx: &mut Ctx) -> Result<(), Error> {
    let s = begin(ctx, NewBoot::Baseline)?;
    let harvest = s.harvest.clone();
    let n = s.ledger.accounted().len();
    let done = commit(ctx, s, true)?;
    ctx.say(format!("{n} accounted container(s) restored"))?;
    report_harvest(ctx, &harvest, done.rows_written)?;
    report(ctx, &done)
}

/// `vzacct reset CTID`: a new billing period for one container; nothing else changes.
pub fn reset(ctx: &mut Ctx, ctid: &Ctid) -> Result<(), Error> {
    let mut s = begin(ctx, NewBoot::Count)?;
    if !s.ledger.reset(ctid, ctx.now) {
        return Err(Error::Invalid(format!(
            "container {ctid} has no record in the ledger; nothing to reset"
        )));
    }
    commit(ctx, s, false)?;
    ctx.say(format!(
        "container {ctid}: totals reset at {}; daily history and CSV rows are unchanged",
        ctx.now.to_rfc3339()
    ))
}

#[derive(Serialize)]
struct ShowIp {
    ip: IpAddr,
    #[serde(flatten)]
    total: Figures,
}

#[derive(Serialize)]
struct ShowCt {
    ctid: Ctid,
    ips: Vec<IpAddr>,
    total_since: Option<DateTime<FixedOffset>>,
    total: Figures,
    today: Figures,
    month: Figures,
    by_ip: Vec<ShowIp>,
}

#[derive(Serialize)]
struct ShowDoc {
    date: NaiveDate,
    containers: Vec<ShowCt>,
}

/// `vzacct show [CTID...] [--json]`: live figures (harvested under the lock, not written).
pub fn show(ctx: &mut Ctx, only: &[Ctid], json: bool) -> Result<(), Error> {
    let s = begin(ctx, NewBoot::Count)?;
    drop(s.locked);
    let today = ctx.today();
    let month = month_of(today);
    for c in only {
        if !s.ledger.containers.contains_key(c) {
            return Err(Error::Invalid(format!(
                "container {c} has no record in the ledger"
            )));
        }
    }
    let mut ids: Vec<&Ctid> = s
        .ledger
        .containers
        .keys()
        .filter(|c| only.is_empty() || only.contains(c))
        .collect();
    ids.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut cts = Vec::new();
    for ctid in ids {
        let c = &s.ledger.containers[ctid];
        cts.push(ShowCt {
            ctid: ctid.clone(),
            ips: c.ips.iter().copied().collect(),
            total_since: c.total_since,
            total: c.total,
            today: c
                .today
                .as_ref()
                .filter(|d| d.date == today)
                .map(|d| d.figures)
                .unwrap_or_default(),
            month: c.month_so_far(&month),
            by_ip: c
                .by_ip
                .iter()
                .map(|(ip, f)| ShowIp { ip: *ip, total: *f })
                .collect(),
        });
    }
    let doc = ShowDoc {
        date: today,
        containers: cts,
    };
    if json {
        let text = serde_json::to_string(&doc).map_err(|e| Error::Output(e.into()))?;
        return ctx.say(text);
    }
    ctx.say(format!(
        "{:<12} {:<18} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "CTID", "IPS", "TOTAL IN", "TOTAL OUT", "TODAY IN", "TODAY OUT", "MONTH IN", "MONTH OUT"
    ))?;
    for ct in &doc.containers {
        let ips = if ct.ips.is_empty() {
            "(not accounted)".to_string()
        } else {
            join(&ct.ips)
        };
        ctx.say(format!(
            "{:<12} {:<18} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            ct.ctid.as_str(),
            ips,
            human(ct.total.in_bytes),
            human(ct.total.out_bytes),
            human(ct.today.in_bytes),
            human(ct.today.out_bytes),
            human(ct.month.in_bytes),
            human(ct.month.out_bytes)
        ))?;
    }
    Ok(())
}

/// Bytes in binary units with two decimals: `1.23 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

#[derive(Serialize)]
struct StatusIp {
    ip: IpAddr,
    rules_expected: usize,
    rules_present: usize,
}

#[derive(Serialize)]
struct StatusCt {
    ctid: Ctid,
    in_place: bool,
    ips: Vec<StatusIp>,
}

#[derive(Serialize)]
struct StatusFamily {
    family: &'static str,
    chains_and_jumps_in_place: bool,
    stray_rules: usize,
}

#[derive(Serialize)]
struct StatusDoc {
    containers: Vec<StatusCt>,
    netfilter: Vec<StatusFamily>,
}

/// `vzacct status [--json]`: what is accounted, and whether the kernel agrees. Read-only.
pub fn status(ctx: &mut Ctx, json: bool) -> Result<(), Error> {
    let locked = store::lock(&ctx.config.state_dir, ctx.lock_wait)?;
    let ledger = locked.load()?;
    let mut kernel = Vec::new();
    for family in ctx.families() {
        kernel.push((family, Tables::new(&ctx.config, family).read()?));
    }
    drop(locked);
    let accounted = ledger.accounted();
    let mut fams = Vec::new();
    for (family, current) in &kernel {
        let want = ruleset::desired(&accounted, *family, &ctx.config.venet_interface);
        let plan = ruleset::plan(&want, current);
        fams.push(StatusFamily {
            family: match family {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            },
            chains_and_jumps_in_place: !plan
                .ops
                .iter()
                .any(|op| matches!(op, Op::NewChain(_) | Op::InsertJump(_))),
            stray_rules: plan.deleted(),
        });
    }
    let currents: BTreeMap<Family, &Current> = kernel.iter().map(|(f, c)| (*f, c)).collect();
    let mut ids: Vec<&Ctid> = accounted.keys().collect();
    ids.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut cts = Vec::new();
    for ctid in ids {
        let mut ips = Vec::new();
        for ip in &accounted[ctid] {
            let present: BTreeSet<Kind> = currents
                .get(&Family::of(ip))
                .map(|c| {
                    c.rules
                        .iter()
                        .filter_map(|r| r.rule.as_ref())
                        .filter(|r| r.ctid == *ctid && r.ip == *ip)
                        .filter(|r| {
                            r.kind.chain() == ruleset::Chain::Forward
                                || r.iface == ctx.config.venet_interface
                        })
                        .map(|r| r.kind)
                        .collect()
                })
                .unwrap_or_default();
            ips.push(StatusIp {
                ip: *ip,
                rules_expected: Kind::ALL.len(),
                rules_present: present.len(),
            });
        }
        let in_place = ips.iter().all(|i| i.rules_present == i.rules_expected);
        cts.push(StatusCt {
            ctid: ctid.clone(),
            in_place,
            ips,
        });
    }
    let doc = StatusDoc {
        containers: cts,
        netfilter: fams,
    };
    if json {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Output(e.into()))?;
        return ctx.say(text);
    }
    ctx.say(format!("{:<38} {:<40} RULES", "CTID", "IP"))?;
    for ct in &doc.containers {
        for ip in &ct.ips {
            let mark = if ip.rules_present == ip.rules_expected {
                "in place"
            } else {
                "MISSING"
            };
            ctx.say(format!(
                "{:<38} {:<40} {}/{} {mark}",
                ct.ctid.as_str(),
                ip.ip.to_string(),
                ip.rules_present,
                ip.rules_expected
            ))?;
        }
    }
    for f in &doc.netfilter {
        ctx.say(format!(
            "{}: chains and jumps {}, {} stray rule(s)",
            f.family,
            if f.chains_and_jumps_in_place {
                "in place"
            } else {
                "NEED SYNC"
            },
            f.stray_rules
        ))?;
    }
    let missing = doc.containers.iter().filter(|c| !c.in_place).count();
    ctx.say(format!(
        "{} container(s) accounted, {} with rules missing{}",
        doc.containers.len(),
        missing,
        if missing > 0 {
            " (run `vzacct sync`)"
        } else {
            ""
        }
    ))
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.00 KiB");
        assert_eq!(human(1_320_702_444), "1.23 GiB");
        assert_eq!(human(u64::MAX), "16.00 EiB");
    }

    #[test]
    fn ip_arguments() {
        assert_eq!(parse_ip("10.0.0.1/24"), Ok("10.0.0.1".parse().unwrap()));
        assert_eq!(
            parse_ip("2001:db8::1/64"),
            Ok("2001:db8::1".parse().unwrap())
        );
        for bad in [
            "10.0.0.1/33",
            "2001:db8::1/129",
            "10.0.0.1/",
            "x",
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "255.255.255.255",
        ] {
            assert!(parse_ip(bad).is_err(), "{bad}");
        }
    }
}
