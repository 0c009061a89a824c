//! The subcommands: each takes the lock, loads the ledger, reads the kernel once per family,
//! plans, applies one batch per family and writes the ledger back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::ctconf;
use crate::ctid::{Ctid, escape_for_message};
use crate::error::Error;
use crate::netfilter::Tables;
use crate::ruleset::{self, Current, Family, Kind, Plan};
use crate::state::{self, Locked, State};
use crate::veinfo;

/// What every command runs with.
pub struct Ctx<'a> {
    pub config: Config,
    pub lock_wait: Duration,
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

    fn lock(&self) -> Result<Locked, Error> {
        Ok(state::lock(&self.config.state_dir, self.lock_wait)?)
    }

    fn families(&self) -> Vec<Family> {
        if self.config.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
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

/// What one reconciliation did, per family.
struct Applied {
    family: Family,
    plan: Plan,
}

/// What the kernel holds of ours, read once per family before anything changes, so that a
/// missing or broken iptables stops a command before the ledger is touched.
struct Kernel(Vec<(Tables, Current)>);

fn read_kernel(ctx: &Ctx) -> Result<Kernel, Error> {
    let mut out = Vec::new();
    for family in ctx.families() {
        let tables = Tables::new(&ctx.config, family);
        let current = tables.read()?;
        out.push((tables, current));
    }
    Ok(Kernel(out))
}

/// Plan each family against the ledger and apply one batch per family.
fn apply(ctx: &Ctx, kernel: &Kernel, st: &State) -> Result<Vec<Applied>, Error> {
    let accounted = st.accounted();
    let mut done = Vec::new();
    for (tables, current) in &kernel.0 {
        let want = ruleset::desired(&accounted, tables.family, &ctx.config.venet_interface);
        let plan = ruleset::plan(&want, current);
        tables.apply(&plan)?;
        done.push(Applied {
            family: tables.family,
            plan,
        });
    }
    Ok(done)
}

fn report(ctx: &mut Ctx, applied: &[Applied]) -> Result<(), Error> {
    for a in applied {
        if a.plan.is_empty() {
            ctx.say(format!("{}: rules already in place", a.family))?;
        } else {
            ctx.say(format!(
                "{}: {} rule(s) added, {} removed ({} change(s) in one batch)",
                a.family,
                a.plan.added(),
                a.plan.deleted(),
                a.plan.ops.len()
            ))?;
        }
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
    let locked = ctx.lock()?;
    let mut st = locked.load()?;
    let kernel = read_kernel(ctx)?;
    for ip in &ips {
        if let Some(owner) = st.owner(ip).filter(|o| *o != ctid).cloned() {
            ctx.warn(format!(
                "{ip} moves from container {owner} to container {ctid}"
            ));
            if let Some(c) = st.containers.get_mut(&owner) {
                c.ips.remove(ip);
                if c.ips.is_empty() {
                    st.containers.remove(&owner);
                }
            }
        }
    }
    let entry = st.containers.entry(ctid.clone()).or_default();
    let new: Vec<IpAddr> = ips
        .iter()
        .filter(|ip| entry.ips.insert(**ip))
        .copied()
        .collect();
    locked.save(&st)?;
    let applied = apply(ctx, &kernel, &st)?;
    if new.is_empty() {
        ctx.say(format!("container {ctid}: already accounted"))?;
    } else {
        ctx.say(format!("container {ctid}: now accounting {}", join(&new)))?;
    }
    report(ctx, &applied)
}

/// `vzacct remove CTID [IP...]`
pub fn remove(ctx: &mut Ctx, ctid: &Ctid, ip_args: &[String]) -> Result<(), Error> {
    let mut ips = Vec::new();
    for raw in ip_args {
        ips.push(parse_ip(raw).map_err(|m| Error::Invalid(format!("container {ctid}: {m}")))?);
    }
    let locked = ctx.lock()?;
    let mut st = locked.load()?;
    let kernel = read_kernel(ctx)?;
    let removed: Vec<IpAddr> = match st.containers.get_mut(ctid) {
        None => Vec::new(),
        Some(c) if ips.is_empty() => std::mem::take(&mut c.ips).into_iter().collect(),
        Some(c) => ips.iter().filter(|ip| c.ips.remove(*ip)).copied().collect(),
    };
    if st.containers.get(ctid).is_some_and(|c| c.ips.is_empty()) {
        st.containers.remove(ctid);
    }
    for ip in ips.iter().filter(|ip| !removed.contains(ip)) {
        ctx.warn(format!("container {ctid} was not accounting {ip}"));
    }
    locked.save(&st)?;
    let applied = apply(ctx, &kernel, &st)?;
    if removed.is_empty() {
        ctx.say(format!("container {ctid}: nothing to remove"))?;
    } else {
        ctx.say(format!(
            "container {ctid}: stopped accounting {}",
            join(&removed)
        ))?;
    }
    report(ctx, &applied)
}

/// `vzacct sync`: align with `veinfo` when it exists, then make the kernel match.
pub fn sync(ctx: &mut Ctx) -> Result<(), Error> {
    let live = veinfo::read(&ctx.config.veinfo)?;
    let locked = ctx.lock()?;
    let mut st = locked.load()?;
    let kernel = read_kernel(ctx)?;
    if let Some(live) = live {
        for w in &live.warnings {
            ctx.warn(w);
        }
        let before = st.accounted();
        let mut next = State::default();
        let mut seen: BTreeMap<IpAddr, Ctid> = BTreeMap::new();
        for (ctid, ips) in &live.containers {
            let mut kept = BTreeSet::new();
            for ip in ips {
                if ip.is_ipv6() && !ctx.config.ipv6 {
                    continue;
                }
                if let Some(first) = seen.get(ip) {
                    ctx.warn(format!(
                        "{}: {ip} is listed for containers {first} and {ctid}; kept for {first}",
                        ctx.config.veinfo.display()
                    ));
                    continue;
                }
                seen.insert(*ip, ctid.clone());
                kept.insert(*ip);
            }
            if !kept.is_empty() {
                next.containers
                    .insert(ctid.clone(), state::Container { ips: kept });
            }
        }
        let after = next.accounted();
        let started = after.keys().filter(|c| !before.contains_key(*c)).count();
        let stopped = before.keys().filter(|c| !after.contains_key(*c)).count();
        let changed = after
            .iter()
            .filter(|(c, ips)| before.get(*c).is_some_and(|b| b != *ips))
            .count();
        st.containers = next.containers;
        ctx.say(format!(
            "{}: {} running container(s); {started} newly accounted, {stopped} no longer, {changed} with changed IPs",
            ctx.config.veinfo.display(),
            after.len()
        ))?;
    }
    locked.save(&st)?;
    let applied = apply(ctx, &kernel, &st)?;
    report(ctx, &applied)
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

/// `vzacct status [--json]`: what is accounted, and whether the kernel agrees.
pub fn status(ctx: &mut Ctx, json: bool) -> Result<(), Error> {
    let locked = ctx.lock()?;
    let st = locked.load()?;
    let accounted = st.accounted();
    let kernel = read_kernel(ctx)?;
    drop(locked);
    let mut currents: BTreeMap<Family, Current> = BTreeMap::new();
    let mut fams = Vec::new();
    for (tables, current) in kernel.0 {
        let family = tables.family;
        let want = ruleset::desired(&accounted, family, &ctx.config.venet_interface);
        let plan = ruleset::plan(&want, &current);
        let structural = !plan
            .ops
            .iter()
            .any(|op| matches!(op, ruleset::Op::NewChain(_) | ruleset::Op::InsertJump(_)));
        fams.push(StatusFamily {
            family: match family {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            },
            chains_and_jumps_in_place: structural,
            stray_rules: plan.deleted(),
        });
        currents.insert(family, current);
    }
    let mut cts = Vec::new();
    let mut ids: Vec<&Ctid> = accounted.keys().collect();
    ids.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    for ctid in ids {
        let mut ips = Vec::new();
        for ip in &accounted[ctid] {
            let family = Family::of(ip);
            let present: BTreeSet<Kind> = currents
                .get(&family)
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
