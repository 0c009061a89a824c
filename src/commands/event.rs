//! One container's vzctl event without reading the whole node: with the ipset backend, a
//! hook reads and writes only its container's ledger rows and holder entries, checks the
//! few fixed rules, and adds its set elements without reading any set. Whatever needs the
//! whole node (an IP another container holds, the first event of a boot, rules to repair,
//! the iptables backend, a ledger not yet converted) is left to the full pipeline, which
//! the caller then runs.
//!
//! Stopping to account an IP that is no longer routed to venet (vzctl's vps-net_del removed
//! its route on stop, `--ipdel` and suspend) does not touch the kernel: no packet can pass
//! venet to or from that address any more, so its elements count nothing until the next full
//! run harvests them exactly and removes them. Until then the index names the container as
//! the IP's holder, so no other container takes the IP without that harvest. An address
//! still routed to venet (a container halted from inside) goes through the full run.

use super::*;
use crate::backend::ipset;
use crate::backend::iptables;
use crate::backend::netfilter::{Ipset, Tables};
use crate::config::Backend;

/// The result of trying the quick path.
pub(crate) enum Quick<T> {
    Done(T),
    /// The full pipeline is needed, for this reason (for the hook log).
    Full(String),
}

/// A partial, locked session on the buckets of one container.
struct Part {
    _locked: Locked,
    ledger: Ledger,
    loaded: Loaded,
}

/// Lock and read `ctid`'s bucket, if the quick path can apply at all.
fn open(ctx: &Ctx, ctid: &Ctid) -> Result<Result<Part, String>, Error> {
    if ctx.config.backend == Backend::Iptables {
        return Ok(Err("backend = iptables".into()));
    }
    if ctx.config.backend == Backend::Auto {
        let s = ctx.probes(true).ipset(&ctx.config.ipset);
        if !s.usable {
            return Ok(Err(format!(
                "backend auto uses per-IP rules: ipset unusable: {}",
                s.why
            )));
        }
    }
    let locked = store::lock(&ctx.config.state_dir, ctx.lock_wait)?;
    let (ledger, loaded) = locked.load_scope(&Scope::Containers(vec![ctid.clone()]))?;
    if !loaded.node_known {
        return Ok(Err("no full run has written the ledger yet".into()));
    }
    if loaded.backend.as_deref() != Some("ipset") {
        return Ok(Err("the last full run did not use the ipset backend".into()));
    }
    if ledger.boot_id.as_deref() != Some(ctx.boot_id()?.as_str()) {
        return Ok(Err("first event of a new boot".into()));
    }
    Ok(Ok(Part {
        _locked: locked,
        ledger,
        loaded,
    }))
}

/// Close finished days of the containers read, append their rows, write the bucket.
fn commit_part(ctx: &Ctx, p: &mut Part) -> Result<usize, Error> {
    let rows = p.ledger.close_days(ctx.today());
    let written = csv::append(&ctx.config.csv_dir, &rows, &ctx.csv_perms()?)?;
    p.loaded.save(&p.ledger, None, &rows)?;
    Ok(written)
}

/// Account `ips` for `ctid` quickly when no other container holds any of them.
pub(crate) fn account(
    ctx: &mut Ctx,
    ctid: &Ctid,
    ips: &[IpAddr],
) -> Result<Quick<Vec<IpAddr>>, Error> {
    let mut p = match open(ctx, ctid)? {
        Ok(p) => p,
        Err(why) => return Ok(Quick::Full(why)),
    };
    let holders = p.loaded.holders(ips)?;
    for (ip, h) in ips.iter().zip(&holders) {
        if let Some(other) = h.iter().find(|h| *h != ctid) {
            return Ok(Quick::Full(format!("{ip} is held by container {other}")));
        }
    }
    // The fixed rules must be in place: a flushed firewall is repaired by the full run.
    for family in ctx.families() {
        let t = Tables::new(&ctx.config, family);
        let current = t.read()?;
        let want = iptables::set_matches(family, &ctx.config.venet_interface);
        if !iptables::plan(&want, &current).is_empty() {
            return Ok(Quick::Full(format!("the {family} rules need repair")));
        }
    }
    // An IP the container accounts, or whose elements a hook parked, has live elements
    // (kept with their counters); an IP it does not hold at all gets new ones from zero.
    // One it holds only by a last-seen value has elements a full run was removing without
    // confirming it: only reading the kernel tells, so the full run does it.
    let mut fresh = Vec::new();
    if let Some(c) = p.ledger.containers.get(ctid) {
        let held = c.held_ips();
        for ip in ips {
            let live = c.ips.contains(ip) || c.parked.contains(ip);
            if !live && held.contains(ip) {
                return Ok(Quick::Full(format!(
                    "{ip}: the removal of its earlier counters is not confirmed"
                )));
            }
            fresh.push(!live);
        }
    } else {
        fresh = vec![true; ips.len()];
    }
    let (now, today) = (ctx.now, ctx.today());
    let mut new = Vec::new();
    let mut elements = Vec::new();
    for (ip, fresh) in ips.iter().zip(fresh) {
        if p.ledger.assign_from(ctid, *ip, None, now, today) {
            new.push(*ip);
        }
        if fresh {
            // Created from zero below: that is the baseline.
            baseline_zero(&mut p.ledger, ctid, ip);
        }
        elements.push((*ip, fresh));
    }
    commit_part(ctx, &mut p)?;
    // After the ledger: a failure here leaves elements the next full run adds.
    if let Err(e) = Ipset::new(&ctx.config).apply(&ipset::adds_for(ctid, &elements)) {
        return Ok(Quick::Full(format!(
            "ipset: {}",
            chain(&e).replace('\n', " ")
        )));
    }
    Ok(Quick::Done(new))
}

/// Stop accounting `ips` of `ctid` (all when `None`) quickly: a ledger change only; the
/// elements are harvested and removed by the next full run. Returns the IPs removed.
pub(crate) fn unaccount(
    ctx: &mut Ctx,
    ctid: &Ctid,
    ips: Option<&[IpAddr]>,
) -> Result<Quick<Vec<IpAddr>>, Error> {
    let mut p = match open(ctx, ctid)? {
        Ok(p) => p,
        Err(why) => return Ok(Quick::Full(why)),
    };
    let ips: Vec<IpAddr> = match ips {
        Some(list) => list.to_vec(),
        None => p
            .ledger
            .containers
            .get(ctid)
            .map(|c| c.ips.iter().copied().collect())
            .unwrap_or_default(),
    };
    // An address still routed to venet (a container halted from inside keeps its routes)
    // could still count: harvest it now, in the full run. A failing `ip` means the same.
    let routed =
        match crate::backend::routes::routed_via(&ctx.config.ip, &ips, &ctx.config.venet_interface)
        {
            Ok(r) => r,
            Err(e) => return Ok(Quick::Full(format!("cannot check routes: {e}"))),
        };
    if let Some(ip) = routed.first() {
        return Ok(Quick::Full(format!(
            "{ip} is still routed to {}",
            ctx.config.venet_interface
        )));
    }
    let removed: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| p.ledger.unassign(ctid, ip))
        .collect();
    // The elements stay until the next full run: keep them on record (an element made
    // since the last harvest was made from zero), so the index keeps naming this container
    // as their holder and the harvest credits it.
    for ip in &removed {
        baseline_zero(&mut p.ledger, ctid, ip);
        if let Some(c) = p.ledger.containers.get_mut(ctid) {
            c.parked.insert(*ip);
        }
    }
    commit_part(ctx, &mut p)?;
    Ok(Quick::Done(removed))
}

/// Record a zero baseline for each element of `ip` that has none.
fn baseline_zero(ledger: &mut Ledger, ctid: &Ctid, ip: &IpAddr) {
    if let Some(c) = ledger.containers.get_mut(ctid) {
        for key in ipset::element_keys(ip) {
            c.seen.entry(key).or_default();
        }
    }
}
