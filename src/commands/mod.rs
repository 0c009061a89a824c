//! The subcommands. Every one that changes something runs the same pipeline: take the lock,
//! load the ledger, read the kernel once per family, harvest, change what is accounted, plan,
//! append the closed days' CSV rows, write the ledger, apply one batch per family.

pub mod billing;
pub mod change;
pub mod error;
pub mod hook;
pub mod install;
pub mod node;
pub mod quota;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::Serialize;

use crate::backend::iptables::{Family, Kind, Op};
use crate::backend::{Kernel, KernelPlan};
use crate::commands::error::{Error, chain};
use crate::config::Config;
use crate::ctid::{Ctid, escape_for_message};
use crate::export::csv;
use crate::export::prometheus;
use crate::ledger::db::{Loaded, Scope};
use crate::ledger::store::{self, Locked};
use crate::ledger::{Figures, Harvest, LastDump, Ledger, Row, month_of};
use crate::vzctl::ctconf;
use crate::vzctl::veinfo;

/// What every command runs with.
pub struct Ctx<'a> {
    pub config: Config,
    pub lock_wait: Duration,
    /// The current time (`VZACCT_NOW` overrides the clock for tests).
    pub now: DateTime<FixedOffset>,
    /// Where the kernel's boot id is read (`VZACCT_BOOT_ID_FILE` overrides it for tests).
    pub boot_id_file: PathBuf,
    /// The zone of the node's calendar (`timezone` of the config); `now` is given in it.
    pub tz: crate::clock::Zone,
    /// `now` was given (`VZACCT_NOW`): [`Ctx::refresh_now`] keeps it.
    pub clock_fixed: bool,
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

    /// Take the time again (after a lock wait, say), unless it was given.
    pub fn refresh_now(&mut self) {
        if !self.clock_fixed {
            self.now = self.tz.at(chrono::Utc::now());
        }
    }

    /// The calendar day of `now` in the configured zone.
    pub fn today(&self) -> NaiveDate {
        self.now.date_naive()
    }

    /// Mode and group of the CSV files, from the config.
    pub(crate) fn csv_perms(&self) -> Result<csv::Perms, Error> {
        let gid = match &self.config.csv_group {
            None => None,
            Some(g) => Some(csv::group_id(g).ok_or_else(|| {
                Error::Invalid(format!(
                    "csv_group = {g} under [storage]: no such group on this node"
                ))
            })?),
        };
        Ok(csv::Perms {
            mode: self.config.csv_mode,
            gid,
        })
    }

    /// What the installed tools can do, cached for this boot in the state directory (new
    /// answers written there only when `persist`).
    fn probes(&self, persist: bool) -> crate::backend::probe::Probes {
        let boot = self.boot_id().unwrap_or_default();
        crate::backend::probe::Probes::cached(&self.config.state_dir, &boot, persist)
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
    loaded: Loaded,
    kernel: Kernel,
    harvest: Harvest,
    rows: Vec<Row>,
    /// `Some(ctid)`: the run covers one container (see [`begin_container`]).
    container: Option<Ctid>,
    /// That container's IPs to put in the sets, each new to it (from zero) or not.
    elements: Vec<(IpAddr, bool)>,
}

/// Why a run for one container had to cover the whole node, if it did (for the hook log).
pub(crate) type Widened = Option<String>;

/// Lock and load one container's rows, and read the tables but no set: the run for one
/// container's event with the ipset backend, when nothing it does needs the whole node
/// (its set elements are added without reading any set; a stop leaves them, uncounting
/// once vzctl removed the routes, for the next dump to harvest). Whatever needs more (an IP
/// another container holds, the first event of a boot, rules to repair, the per-IP rules
/// backend, a node no full run has written yet) runs over the whole node: [`Session::widen`].
/// `idle` (for an event that may have nothing to do): whether it has nothing to do for the
/// container as loaded (it stops accounting addresses the container does not hold): then,
/// on either backend, the run reads no kernel at all (strays are the next dump's).
fn begin_container(
    ctx: &Ctx,
    ctid: &Ctid,
    idle: Option<&dyn Fn(&Ledger) -> bool>,
) -> Result<(Session, Widened), Error> {
    let locked = store::lock(&ctx.config.state_dir, ctx.lock_wait)?;
    let (locked, why) = match narrow(ctx, locked, ctid, idle)? {
        Ok(s) => return Ok((s, None)),
        Err(no) => no,
    };
    let (ledger, loaded) = locked.load_scope(&Scope::All)?;
    let kernel = read_kernel(ctx, &ledger, &loaded, true)?;
    Ok((harvested(ctx, locked, ledger, loaded, kernel)?, Some(why)))
}

/// The session of [`begin_container`], or why there cannot be one.
fn narrow(
    ctx: &Ctx,
    locked: Locked,
    ctid: &Ctid,
    idle: Option<&dyn Fn(&Ledger) -> bool>,
) -> Result<Result<Session, (Locked, String)>, Error> {
    use crate::config::Backend;
    let session = |locked, mut ledger: Ledger, loaded, kernel| Session {
        rows: ledger.close_days(ctx.today()),
        locked,
        ledger,
        loaded,
        kernel,
        harvest: Harvest::default(),
        container: Some(ctid.clone()),
        elements: Vec::new(),
    };
    let usable = match ctx.config.backend {
        Backend::Iptables => Err("backend = iptables".to_string()),
        Backend::Ipset => Ok(()),
        Backend::Auto => {
            let s = ctx.probes(true).ipset(&ctx.config.ipset);
            s.usable.then_some(()).ok_or(format!(
                "backend auto uses per-IP rules: ipset unusable: {}",
                s.why
            ))
        }
    };
    // (With per-IP rules only an idle event can stay narrow: no rows loaded for others.)
    if let (Err(why), None) = (&usable, idle) {
        return Ok(Err((locked, why.clone())));
    }
    let (ledger, loaded) = locked.load_scope(&Scope::Containers(vec![ctid.clone()]))?;
    if !loaded.node_known {
        return Ok(Err((
            locked,
            "no full run has written the ledger yet".into(),
        )));
    }
    if ledger.boot_id.as_deref() != Some(ctx.boot_id()?.as_str()) {
        return Ok(Err((locked, "first event of a new boot".into())));
    }
    if idle.is_some_and(|idle| idle(&ledger)) {
        return Ok(Ok(session(locked, ledger, loaded, Kernel::unread())));
    }
    if let Err(why) = usable {
        return Ok(Err((locked, why)));
    }
    if loaded.backend.as_deref() != Some("ipset") {
        return Ok(Err((
            locked,
            "the last full run did not use the ipset backend".into(),
        )));
    }
    let kernel = Kernel::read_tables(&ctx.config, &ctx.probes(true), &ctx.families())?;
    let plan = kernel.plan(&Default::default(), &ctx.config.venet_interface);
    if let Some((family, _)) = plan.rules.iter().find(|(_, p)| !p.is_empty()) {
        return Ok(Err((locked, format!("the {family} rules need repair"))));
    }
    Ok(Ok(session(locked, ledger, loaded, kernel)))
}

impl Session {
    /// The same run over the whole node (the lock kept): load everything, read the kernel,
    /// harvest.
    fn widen(self, ctx: &Ctx) -> Result<Session, Error> {
        let (ledger, loaded) = self.locked.load_scope(&Scope::All)?;
        if self.kernel.is_unread() {
            let kernel = read_kernel(ctx, &ledger, &loaded, true)?;
            return harvested(ctx, self.locked, ledger, loaded, kernel);
        }
        // The tables as the narrow run read them (under the same lock), the sets now.
        let kernel = self.kernel.with_sets(
            &ctx.config,
            &ctx.probes(true),
            ledger.expected_elements(),
            loaded.backend.as_deref() == Some("ipset"),
        )?;
        harvested(ctx, self.locked, ledger, loaded, kernel)
    }
}

/// Read the kernel for a ledger as loaded: its sets too when the last full run used them.
/// `persist`: a probe of the tools may be cached in the state dir (not by a view).
fn read_kernel(
    ctx: &Ctx,
    ledger: &Ledger,
    loaded: &Loaded,
    persist: bool,
) -> Result<Kernel, Error> {
    Kernel::read(
        &ctx.config,
        &ctx.probes(persist),
        &ctx.families(),
        ledger.expected_elements(),
        loaded.backend.as_deref() == Some("ipset"),
    )
    .map_err(Error::from)
}

/// Lock, load, read the kernel once (a missing or broken iptables stops the command before
/// anything changes) and harvest.
fn begin(ctx: &Ctx) -> Result<Session, Error> {
    let locked = store::lock(&ctx.config.state_dir, ctx.lock_wait)?;
    let (ledger, loaded, kernel) =
        change::load_reading_kernel(ctx, true, || locked.load_scope(&Scope::All))?;
    harvested(ctx, locked, ledger, loaded, kernel?)
}

/// A locked ledger with the kernel just read: fold the kernel's counters in (parked
/// addresses given away, frozen sets left behind, then the harvest).
fn harvested(
    ctx: &Ctx,
    locked: Locked,
    mut ledger: Ledger,
    loaded: Loaded,
    mut kernel: Kernel,
) -> Result<Session, Error> {
    let (harvest, rows) = fold(ctx, &mut ledger, &kernel)?;
    ledger.stamp_since(ctx.now);
    ledger.unpark_all();
    kernel.compact();
    Ok(Session {
        locked,
        ledger,
        loaded,
        kernel,
        harvest,
        rows,
        container: None,
        elements: Vec::new(),
    })
}

/// Fold the kernel's counters into the ledger (in memory): parked addresses given away,
/// restored copies not trusted, frozen counters left behind credited, then the harvest.
/// Commands and views alike, so that a view shows what the next command will write.
pub(crate) fn fold(
    ctx: &Ctx,
    ledger: &mut Ledger,
    kernel: &Kernel,
) -> Result<(Harvest, Vec<Row>), Error> {
    let boot_id = ctx.boot_id()?;
    // An address a hook parked that vzctl has since given to another container without a
    // hook (one that failed, say): what its elements counted since then is that
    // container's, never the one that no longer holds it.
    if ledger.containers.values().any(|c| !c.parked.is_empty())
        && let Ok(Some(live)) = veinfo::read(&ctx.config.veinfo)
    {
        let holder: std::collections::HashMap<IpAddr, &Ctid> = live
            .containers
            .iter()
            .flat_map(|(c, ips)| ips.iter().map(move |ip| (*ip, c)))
            .collect();
        let moves: Vec<(Ctid, IpAddr, Ctid)> = ledger
            .containers
            .iter()
            .flat_map(|(id, c)| {
                let holder = &holder;
                c.parked.iter().filter_map(move |ip| {
                    let to = holder.get(ip).filter(|to| **to != id)?;
                    Some((id.clone(), *ip, (*to).clone()))
                })
            })
            .collect();
        for (from, ip, to) in moves {
            for key in crate::backend::ipset::element_keys(&ip) {
                ledger.transfer_seen(&key, &from, &to);
            }
        }
    }
    // Frozen sets a killed command left: their final counts, against the same last-seen
    // values as the live sets' (before the harvest moves those on). Same boot only: after
    // a reboot they are somebody's restored copy.
    let mut notes = Vec::new();
    if ledger.boot_id.as_deref() == Some(boot_id.as_str()) {
        // A saved copy of our rules or sets restored since the last run (its generation is
        // older than the ledger's): what its counters show was counted already, in part or
        // whole. They continue from here, credited never.
        let untrusted = crate::backend::untrusted(kernel, &mut ledger.generations);
        let forgot = ledger.forget_seen(&untrusted.keys);
        notes = untrusted.notes;
        if forgot > 0 {
            notes.extend(untrusted.notes_if_below);
        }
        let frozen: Vec<_> = kernel
            .frozen_left()
            .filter(|c| !untrusted.keys.contains_key(&c.key))
            .cloned()
            .collect();
        ledger.credit_frozen(&frozen, ctx.today());
    }
    let counted = kernel.counted();
    let (mut harvest, rows) = ledger.harvest(counted, &kernel.coverage(), &boot_id, ctx.today());
    harvest.notes = notes;
    Ok((harvest, rows))
}

/// What one commit did.
pub(crate) struct Committed {
    plan: KernelPlan,
    rows_written: usize,
    /// What counters that stopped counting in the batch (frozen or destroyed sets) had
    /// counted since the read.
    stopped: Figures,
}

/// Append the closed days' rows, write the ledger, then (if `apply`) make the kernel match
/// it. The ledger is written before the kernel changes: if they are never applied, the rules
/// or set elements they would have removed are still in the ledger's baselines and the next
/// run harvests them exactly.
fn commit(ctx: &Ctx, s: &mut Session, apply: bool) -> Result<Committed, Error> {
    if let Some(ctid) = s.container.clone() {
        return commit_container(ctx, s, &ctid);
    }
    // (`apply` false: the kernel is not made to match, only the new generation written.)
    let mut plan = if apply {
        s.kernel
            .plan(&s.ledger.accounted(), &ctx.config.venet_interface)
    } else {
        s.kernel.unchanged()
    };
    // A new generation with every harvest written: a saved copy of the rules or sets
    // restored later shows an older one.
    plan.stamp(&mut s.ledger.generations, &s.kernel);
    // Planning is done: the set elements read are not needed to save and apply.
    s.kernel.drop_elements();
    // Elements given to another container in place take their last-seen values along.
    for (kind, ip, from) in &plan.sets.moved {
        if let Some(to) = s.ledger.owner(ip).cloned() {
            let key = crate::model::CounterId::set(*kind, *ip);
            s.ledger.transfer_seen(&key, from, &to);
        }
    }
    // What this batch creates starts from zero: that is its baseline. A counter the ledger
    // has no last-seen value for is otherwise taken as a baseline at the next read, since
    // its past is unknown (a rule of a container whose record was lost, say).
    for (_, p) in &plan.rules {
        for op in &p.ops {
            if let Op::Append(crate::backend::iptables::Wanted::Count(rule)) = op {
                s.ledger.baseline_zero(&rule.ctid, rule.seen_key());
            }
        }
        // A rebuilt chain's rules carry their counters over; a rule given to another
        // container takes its last-seen value along, the new ones start from zero.
        for sw in p.swapped() {
            for (key, from, to) in &sw.moved {
                s.ledger.transfer_seen(key, from, to);
            }
            for (w, _) in &sw.rules {
                if let crate::backend::iptables::Wanted::Count(rule) = w {
                    s.ledger.baseline_zero(&rule.ctid, rule.seen_key());
                }
            }
        }
    }
    for (kind, ip, ctid) in &plan.sets.add {
        let moved = plan.sets.moved.iter().any(|(k, i, _)| k == kind && i == ip);
        if !moved {
            s.ledger
                .baseline_zero(ctid, crate::model::CounterId::set(*kind, *ip));
        }
    }
    let rows_written = csv::append(&ctx.config.csv_dir, &s.rows, &ctx.csv_perms()?)?;
    s.ledger.prune();
    s.loaded.keep_days(ctx.config.history_days);
    s.loaded
        .save(&s.ledger, Some(s.kernel.backend_name()), &s.rows)?;
    // A set that loses elements is swapped with its wanted contents, which start from the
    // counters just read (the ledger's last-seen values, which the pruning above keeps).
    let ledger = &s.ledger;
    let counters = |kind, ip, ctid: &Ctid| {
        let key = crate::model::CounterId::set(kind, ip);
        ledger.containers.get(ctid)?.seen.get(&key).copied()
    };
    s.kernel.apply(&ctx.config, &plan, &mut |w| {
        plan.sets.write_with(w, &counters)
    })?;
    let mut stopped = Figures::default();
    if apply {
        // Rules and set elements that no longer count (frozen chains and sets, sets the batch
        // stopped using): what they counted between this read and the batch is credited now,
        // each as it is read.
        let (ledger, today) = (&mut s.ledger, ctx.today());
        let frozen = s.kernel.read_stopped(&ctx.config, &plan, &mut |c| {
            ledger.credit_frozen_one(c, today, &mut stopped)
        })?;
        // Confirmed gone: their baselines go too (a crash before this save only keeps them,
        // which sends the next hook for such an IP through the full run).
        let coverage = s.kernel.coverage();
        let forgot = s
            .ledger
            .forget_removed(|k, accounted| s.kernel.survives(&coverage, k, accounted));
        // The frozen copies go before the credit is written: killed in between, the credit
        // is lost (milliseconds of traffic), never made twice by the next command.
        s.kernel.finish(&ctx.config, &plan)?;
        if forgot || frozen > 0 {
            s.loaded.save(&s.ledger, None, &[])?;
        }
    }
    Ok(Committed {
        plan,
        rows_written,
        stopped,
    })
}

/// [`commit`] for one container's run: its rows and closed days written, then its IPs'
/// set elements added (an IP new to it from zero counters, whose baseline the ledger holds
/// already; one it holds keeps its element's counters). Elements it stopped accounting stay
/// parked for the next dump. The ledger is written first: a failing `ipset` leaves elements
/// the next full run adds.
fn commit_container(ctx: &Ctx, s: &mut Session, ctid: &Ctid) -> Result<Committed, Error> {
    let rows_written = csv::append(&ctx.config.csv_dir, &s.rows, &ctx.csv_perms()?)?;
    s.loaded.keep_days(ctx.config.history_days);
    s.loaded.save(&s.ledger, None, &s.rows)?;
    crate::backend::netfilter::Ipset::new(&ctx.config).apply(&crate::backend::ipset::adds_for(
        ctid,
        &s.elements,
        s.kernel.kinds(),
        s.kernel.c2c_free(),
    ))?;
    Ok(Committed {
        plan: KernelPlan::default(),
        rows_written,
        stopped: Figures::default(),
    })
}

pub(crate) fn report(ctx: &mut Ctx, c: &Committed) -> Result<(), Error> {
    if c.stopped.in_packets + c.stopped.out_packets > 0 {
        ctx.say(format!(
            "counted by rules or set elements until the batch stopped them: {} bytes in / {} bytes out (credited)",
            c.stopped.in_bytes, c.stopped.out_bytes
        ))?;
    }
    let sets = &c.plan.sets;
    if !(sets.create.is_empty()
        && sets.add.is_empty()
        && sets.del.is_empty()
        && sets.destroy.is_empty())
    {
        ctx.say(format!(
            "ipset: {} element(s) added, {} removed, {} set(s) created, {} destroyed",
            sets.add.len(),
            sets.del.len(),
            sets.create.len(),
            sets.destroy.len()
        ))?;
    }
    if !sets.free_add.is_empty() || !sets.free_del.is_empty() || !sets.free_destroy.is_empty() {
        ctx.say(format!(
            "free networks ([classes]): {} entry(ies) added to vzacct-free4/6, {} removed, {} set(s) destroyed",
            sets.free_add.len(),
            sets.free_del.len(),
            sets.free_destroy.len()
        ))?;
    }
    for (family, nets) in &sets.free_rebuild {
        ctx.say(format!(
            "free networks ([classes]): {} rebuilt with {} entry(ies) and swapped in (a prefix length went)",
            crate::model::free_set_name(*family),
            nets.len()
        ))?;
    }
    for (family, plan) in &c.plan.rules {
        if plan.is_empty() {
            ctx.say(format!("{family}: rules already in place"))?;
        } else {
            ctx.say(format!(
                "{family}: {} rule(s) added, {} removed (one batch of {} operation(s))",
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
        "harvested {} bytes in / {} bytes out ({} / {} packets){}{}{}{}",
        f.in_bytes,
        f.out_bytes,
        f.in_packets,
        f.out_packets,
        if h.restarted > 0 {
            format!("; {} counter(s) had restarted from zero", h.restarted)
        } else {
            String::new()
        },
        if h.unknown > 0 {
            format!(
                "; {} counter(s) vzacct did not create and had not seen (unknown past): taken as a starting point",
                h.unknown
            )
        } else {
            String::new()
        },
        if h.implausible > 0 {
            format!(
                "; {} rule(s) had impossible counters (set by someone else): not counted",
                h.implausible
            )
        } else {
            String::new()
        },
        if h.new_boot {
            "; first run of a new boot"
        } else {
            ""
        }
    ))?;
    for note in &h.notes {
        ctx.say(note)?;
    }
    if rows > 0 {
        ctx.say(format!("{rows} daily CSV row(s) written"))?;
    }
    Ok(())
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
