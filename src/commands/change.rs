//! The commands that change what is accounted or the ledger: add, remove, sync, dump,
//! restore, reset, repair.

use super::*;

/// The usable IPs vzctl assigns from a container config (its `IP_ADDRESS` over vz.conf's, as
/// the node's vzctl dialect reads them). Invalid entries and (with IPv6 accounting off, or
/// vzctl's IPV6 not "yes") IPv6 addresses are warned about and skipped.
pub(crate) fn config_ips(ctx: &mut Ctx, path: &Path) -> Result<Vec<IpAddr>, Error> {
    let (dialect, vz_conf) = (ctx.config.ct_dialect(), ctx.config.vz_conf_path());
    let conf = ctconf::read_assigned(dialect, path, &vz_conf)?;
    for w in &conf.warnings {
        ctx.warn(w);
    }
    let mut ips = Vec::new();
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
    Ok(ips)
}

/// What [`account`] did.
pub(crate) struct Accounted {
    pub new: Vec<IpAddr>,
    pub done: Committed,
    pub widened: Widened,
}

/// Account `ips` for `ctid` in one locked run (an IP of another container moves). With
/// `one` the run covers only that container when that suffices ([`begin_container`]).
pub(crate) fn account(
    ctx: &mut Ctx,
    ctid: &Ctid,
    ips: &[IpAddr],
    one: bool,
) -> Result<Accounted, Error> {
    let (mut s, mut widened) = if one {
        begin_container(ctx, ctid, None)?
    } else {
        (begin(ctx)?, None)
    };
    if s.container.is_some() {
        match fresh_elements(&mut s, ctid, ips)? {
            Ok(elements) => s.elements = elements,
            Err(why) => {
                s = s.widen(ctx)?;
                widened = Some(why);
            }
        }
    }
    let (now, today) = (ctx.now, ctx.today());
    let mut new = Vec::new();
    for ip in ips {
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
    for (ip, _) in s.elements.iter().filter(|(_, fresh)| *fresh) {
        // Created from zero: that is the baseline.
        for key in crate::backend::ipset::element_keys(ip) {
            s.ledger.baseline_zero(ctid, key);
        }
    }
    let done = commit(ctx, &mut s, true)?;
    Ok(Accounted { new, done, widened })
}

/// For one container's run: `ips` with whether each is new to `ctid` (its elements start
/// from zero), or why the run must cover the node. An IP another container holds moves
/// (its counters are read first); one `ctid` holds only by a last-seen value has elements a
/// full run was removing without confirming it, which only reading the kernel tells.
fn fresh_elements(
    s: &mut Session,
    ctid: &Ctid,
    ips: &[IpAddr],
) -> Result<Result<Vec<(IpAddr, bool)>, String>, Error> {
    let holders = s.loaded.holders(ips)?;
    for (ip, h) in ips.iter().zip(&holders) {
        if let Some(other) = h.iter().find(|h| *h != ctid) {
            return Ok(Err(format!("{ip} is held by container {other}")));
        }
    }
    let c = s.ledger.containers.get(ctid);
    let held = c.map(|c| c.held_ips()).unwrap_or_default();
    let mut out = Vec::new();
    for ip in ips {
        let live = c.is_some_and(|c| c.ips.contains(ip) || c.parked.contains(ip));
        if !live && held.contains(ip) {
            return Ok(Err(format!(
                "{ip}: the removal of its earlier counters is not confirmed"
            )));
        }
        out.push((*ip, !live));
    }
    Ok(Ok(out))
}

/// What [`unaccount`] did.
pub(crate) struct Unaccounted {
    pub removed: Vec<IpAddr>,
    pub not_found: Vec<IpAddr>,
    pub done: Committed,
    pub widened: Widened,
}

/// Stop accounting `ips` of `ctid`, or all of its IPs when `None`; their counts are
/// harvested first and kept. With `one` the run covers only that container when every
/// address is no longer routed to venet (vzctl's vps-net_del removed the routes on stop,
/// `--ipdel` and suspend): no packet can pass venet to or from them, so their elements
/// count nothing more and are parked, harvested exactly and removed by the next dump (the
/// ledger keeps naming the container their holder, so no other takes them before). An
/// address still routed (a container halted from inside) is harvested now, over the node.
pub(crate) fn unaccount(
    ctx: &mut Ctx,
    ctid: &Ctid,
    ips: Option<&[IpAddr]>,
    one: bool,
) -> Result<Unaccounted, Error> {
    // Nothing to stop: the container holds none of the addresses (or none at all) and has
    // no parked one (vzctl's stop runs net_del for each IP, then umount).
    let idle = |l: &Ledger| match (l.containers.get(ctid), ips) {
        (None, _) => true,
        (Some(c), _) if !c.parked.is_empty() => false,
        (Some(c), None) => c.ips.is_empty(),
        (Some(c), Some(ips)) => ips.iter().all(|ip| !c.ips.contains(ip)),
    };
    let (mut s, mut widened) = if one {
        begin_container(ctx, ctid, Some(&idle))?
    } else {
        (begin(ctx)?, None)
    };
    let ips: Vec<IpAddr> = match ips {
        Some(list) => list.to_vec(),
        None => s
            .ledger
            .containers
            .get(ctid)
            .map(|c| c.ips.iter().copied().collect())
            .unwrap_or_default(),
    };
    if s.container.is_some() {
        let venet = &ctx.config.venet_interface;
        let why = match crate::backend::routes::routed_via(&ctx.config.ip, &ips, venet) {
            Ok(routed) => routed
                .first()
                .map(|ip| format!("{ip} is still routed to {venet}")),
            Err(e) => Some(format!("cannot check routes: {e}")),
        };
        if let Some(why) = why {
            s = s.widen(ctx)?;
            widened = Some(why);
        }
    }
    let (removed, not_found): (Vec<IpAddr>, Vec<IpAddr>) =
        ips.iter().partition(|ip| s.ledger.unassign(ctid, ip));
    if s.container.is_some() {
        // The elements stay until the next full run: kept on record (one made since the
        // last harvest from zero), so the ledger goes on naming this container their
        // holder, and the harvest credits it.
        for ip in &removed {
            for key in crate::backend::ipset::element_keys(ip) {
                s.ledger.baseline_zero(ctid, key);
            }
            if let Some(c) = s.ledger.containers.get_mut(ctid) {
                c.parked.insert(*ip);
            }
        }
    }
    let done = commit(ctx, &mut s, true)?;
    Ok(Unaccounted {
        removed,
        not_found,
        done,
        widened,
    })
}

/// `vzacct add CTID [IP...]`
pub fn add(ctx: &mut Ctx, ctid: &Ctid, ip_args: &[String]) -> Result<(), Error> {
    let mut ips = Vec::new();
    for raw in ip_args {
        let ip = parse_ip(raw).map_err(|m| Error::Invalid(format!("container {ctid}: {m}")))?;
        check_family(ctx, &ip)?;
        if raw.contains('/') {
            ctx.warn(format!(
                "{raw}: accounting the address {ip} only; the prefix is not a range (vzacct \
                 accounts single addresses, as vzctl assigns them)"
            ));
        }
        ips.push(ip);
    }
    if ips.is_empty() {
        let path = ctconf::path_for(&ctx.config.conf_dir, ctid);
        ips = config_ips(ctx, &path)?;
        if ips.is_empty() {
            return Err(Error::Invalid(format!(
                "container {ctid}: no usable IP address in IP_ADDRESS of {}; nothing to account",
                path.display()
            )));
        }
    }
    // Over this container alone when that suffices, as its hooks are (the ipset backend:
    // its elements added without reading the node); otherwise over the node.
    let a = account(ctx, ctid, &ips, true)?;
    if a.new.is_empty() {
        ctx.say(format!("container {ctid}: already accounted"))?;
    } else {
        ctx.say(format!("container {ctid}: now accounting {}", join(&a.new)))?;
    }
    report(ctx, &a.done)
}

/// `vzacct remove CTID [IP...]`
pub fn remove(ctx: &mut Ctx, ctid: &Ctid, ip_args: &[String]) -> Result<(), Error> {
    let mut ips = Vec::new();
    for raw in ip_args {
        ips.push(parse_ip(raw).map_err(|m| Error::Invalid(format!("container {ctid}: {m}")))?);
    }
    {
        let shared = store::lock_shared(&ctx.config.state_dir, ctx.lock_wait)?;
        let known = shared
            .load()?
            .0
            .containers
            .get(ctid)
            .is_some_and(|c| c.accounted());
        if !known {
            return Err(Error::Invalid(format!(
                "container {ctid} is not accounted (no record in the ledger, or no IP); nothing to remove"
            )));
        }
    }
    // Over the node: the elements are harvested and removed now (with the ipset backend a
    // container's hook leaves them parked for the next dump instead).
    let u = unaccount(ctx, ctid, (!ips.is_empty()).then_some(&ips[..]), false)?;
    for ip in &u.not_found {
        ctx.warn(format!("container {ctid} was not accounting {ip}"));
    }
    if u.removed.is_empty() {
        ctx.say(format!("container {ctid}: nothing to remove"))?;
    } else {
        ctx.say(format!(
            "container {ctid}: stopped accounting {} (its counts so far are kept)",
            join(&u.removed)
        ))?;
    }
    report(ctx, &u.done)
}

/// Account exactly the running containers of veinfo, when the file exists.
fn align_with_veinfo(ctx: &mut Ctx, s: &mut Session) -> Result<(), Error> {
    let Some(live) = veinfo::read(&ctx.config.veinfo)? else {
        return Ok(());
    };
    for w in &live.warnings {
        ctx.warn(w);
    }
    // What veinfo lists, an IP kept for the first container listing it. The file's contents
    // and the owners go before the ledger changes (a node of 10,000 containers holds each
    // of these maps at once otherwise).
    let want = {
        let mut want: BTreeMap<Ctid, BTreeSet<IpAddr>> = BTreeMap::new();
        let mut owner: std::collections::HashMap<IpAddr, &Ctid> = std::collections::HashMap::new();
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
                owner.insert(*ip, ctid);
                want.entry(ctid.clone()).or_default().insert(*ip);
            }
        }
        want
    };
    drop(live);
    // The ledger's containers and veinfo's, both in CTID order, walked side by side: each
    // record's IPs become what veinfo lists for it (none when it is not listed). An IP
    // veinfo lists for another container leaves this one here and joins that one in its
    // turn, so no owner is looked up. (One walk: no copy of what is accounted, and no
    // lookup per IP, on a node of 10,000 containers.)
    let (now, today) = (ctx.now, ctx.today());
    let (mut accounted, mut started, mut changed, mut stopped) = (0, 0, 0, 0);
    let mut want = want.into_iter().peekable();
    let mut unknown = Vec::new();
    for (ctid, c) in &mut s.ledger.containers {
        while let Some(w) = want.next_if(|(w, _)| w < ctid) {
            unknown.push(w);
        }
        let listed = want.next_if(|(w, _)| w == ctid).map(|(_, ips)| ips);
        let listed = listed.unwrap_or_default();
        let was = c.accounted();
        if c.ips != listed {
            c.ips.retain(|ip| listed.contains(ip));
            c.ips.extend(listed.iter().copied());
            match (was, c.accounted()) {
                (true, true) => changed += 1,
                (false, true) => started += 1,
                (true, false) => stopped += 1,
                (false, false) => {}
            }
        }
        if c.accounted() {
            accounted += 1;
            c.total_since.get_or_insert(now);
            c.open_day(today);
            if !c.parked.is_empty() {
                c.parked.retain(|ip| !listed.contains(ip));
            }
        }
    }
    unknown.extend(want);
    for (ctid, ips) in unknown {
        for ip in ips {
            s.ledger.assign_from(&ctid, ip, None, now, today);
        }
        accounted += 1;
        started += 1;
    }
    ctx.say(format!(
        "{}: {} running container(s); {started} newly accounted, {stopped} no longer, {changed} with changed IPs",
        ctx.config.veinfo.display(),
        accounted
    ))
}

/// Load the ledger (`load`, on this thread) while the kernel is read on another, when the
/// database says ahead what the read needs ([`crate::ledger::db::hint`]); one after the other
/// otherwise. The kernel's result is [`read_kernel`]'s for the ledger as loaded (read again
/// if the ledger turns out to differ from its hint). A failed load is returned first.
pub(crate) fn load_reading_kernel(
    ctx: &Ctx,
    persist: bool,
    load: impl FnOnce() -> Result<(Ledger, Loaded), store::StateError>,
) -> Result<(Ledger, Loaded, Result<Kernel, Error>), Error> {
    let Some(hint) = crate::ledger::db::hint(&ctx.config.state_dir) else {
        let (ledger, loaded) = load()?;
        let kernel = read_kernel(ctx, &ledger, &loaded, persist);
        return Ok((ledger, loaded, kernel));
    };
    let (config, probes, families) = (&ctx.config, ctx.probes(persist), ctx.families());
    let (loaded, kernel) = std::thread::scope(|s| {
        let reader =
            s.spawn(|| Kernel::read(config, &probes, &families, hint.elements, hint.sets_in_use));
        let loaded = load();
        let kernel = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (loaded, kernel)
    });
    let (ledger, loaded) = loaded?;
    let as_hinted = crate::ledger::db::Hint {
        sets_in_use: loaded.backend.as_deref() == Some("ipset"),
        elements: ledger.expected_elements(),
    } == hint;
    let kernel = if as_hinted {
        kernel.map_err(Error::from)
    } else {
        read_kernel(ctx, &ledger, &loaded, persist)
    };
    Ok((ledger, loaded, kernel))
}

/// `vzacct sync`: align with veinfo when it exists, then make the kernel match.
pub fn sync(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = begin(ctx)?;
    align_with_veinfo(ctx, &mut s)?;
    let done = commit(ctx, &mut s, true)?;
    report(ctx, &done)
}

/// `vzacct dump`: harvest every rule, heal the rules as sync does, close finished days,
/// act on the quota thresholds crossed, and write the Prometheus textfile if configured.
pub fn dump(ctx: &mut Ctx) -> Result<(), Error> {
    dump_node(ctx, true)
}

/// [`dump`]; `act`: run the threshold actions (not at the node's shutdown, where the next
/// dump after the boot does).
pub fn dump_node(ctx: &mut Ctx, act: bool) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let mut s = begin(ctx)?;
    // The time of the dump is when it holds the lock, not when it started waiting.
    ctx.refresh_now();
    align_with_veinfo(ctx, &mut s)?;
    s.ledger.last_dump = Some(LastDump {
        at: ctx.now,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    let harvest = s.harvest.clone();
    let done = commit(ctx, &mut s, true)?;
    // Each container's current period as saved, for its quota and the gauges: only the
    // containers with a quota when no textfile is written (summing every container's
    // closed days of the period was a tenth of a large node's dump).
    let quotas = crate::ledger::thresholds::quotas(&s.loaded)?;
    let periods = if ctx.config.prometheus_textfile.is_some() {
        super::quota::period_figures(ctx, &s.ledger, &s.loaded, &|_| true)?
    } else {
        super::quota::period_figures(ctx, &s.ledger, &s.loaded, &|c| quotas.contains_key(c))?
    };
    let step = if act {
        super::quota::plan(ctx, &s.loaded, &quotas, &periods)?
    } else {
        Default::default()
    };
    // The textfile is written while the lock is held, so two overlapping dumps cannot
    // publish older totals last, and its duration covers the whole dump: the CSV, the
    // ledger and the kernel batches included.
    // A textfile that cannot be written fails the dump, but only after the rest of it: the
    // ledger is written already, and the threshold actions still run.
    let textfile = ctx.config.prometheus_textfile.as_ref().and_then(|path| {
        let info = prometheus::DumpInfo {
            timestamp: ctx.now,
            duration: started.elapsed(),
        };
        let mut body = prometheus::render(&s.ledger, &info);
        body.push_str(&prometheus::render_periods(&periods, &quotas));
        prometheus::write(path, &body).err()
    });
    drop(s);
    report_harvest(ctx, &harvest, done.rows_written)?;
    report(ctx, &done)?;
    // The actions run with the state lock released (hooks are not held up by them).
    let (said, warnings) = super::quota::act(ctx, step)?;
    for line in said {
        ctx.say(line)?;
    }
    for w in warnings {
        ctx.warn(w);
    }
    match textfile {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `vzacct restore`: at boot, before containers start: recreate chains, jumps and the
/// rules of every accounted container, and start the new boot's baselines.
pub fn restore(ctx: &mut Ctx) -> Result<(), Error> {
    let mut s = begin(ctx)?;
    let harvest = s.harvest.clone();
    let n = s.ledger.accounted().len();
    let done = commit(ctx, &mut s, true)?;
    ctx.say(format!("{n} accounted container(s) restored"))?;
    report_harvest(ctx, &harvest, done.rows_written)?;
    report(ctx, &done)
}

/// `vzacct reset CTID`: one container's totals to zero; nothing else changes (its period
/// and calendar included).
pub fn reset(ctx: &mut Ctx, ctid: &Ctid) -> Result<(), Error> {
    let mut s = begin(ctx)?;
    if !s.ledger.reset(ctid, ctx.now) {
        return Err(Error::Invalid(format!(
            "container {ctid} has no record in the ledger; nothing to reset"
        )));
    }
    commit(ctx, &mut s, false)?;
    ctx.say(format!(
        "container {ctid}: totals reset at {}; daily history and CSV rows are unchanged",
        crate::clock::format(&ctx.now)
    ))
}

/// `vzacct repair`: rebuild what of the ledger is lost or does not parse, take every kernel
/// counter as a new starting point, and say how much may have gone uncounted.
pub fn repair(ctx: &mut Ctx) -> Result<(), Error> {
    let locked = store::lock(&ctx.config.state_dir, ctx.lock_wait)?;
    let (mut ledger, loaded, found) =
        crate::ledger::db::salvage(locked.dir(), ctx.now.timestamp())?;
    let kernel = read_kernel(ctx, &ledger, &loaded, true)?;
    // What the kernel counted that no baseline accounts for: since the last harvest where
    // the container's record survived, the whole counter where it did not.
    let mut uncounted = Figures::default();
    let (mut counters, mut unknown) = (0usize, 0usize);
    for c in kernel.counted() {
        counters += 1;
        let base = ledger
            .containers
            .get(&c.ctid)
            .and_then(|ct| ct.seen.get(&c.key));
        let delta = match base {
            Some(b) if c.counters.bytes >= b.bytes && c.counters.packets >= b.packets => {
                crate::backend::iptables::Counters {
                    packets: c.counters.packets - b.packets,
                    bytes: c.counters.bytes - b.bytes,
                }
            }
            _ => {
                unknown += 1;
                c.counters
            }
        };
        uncounted.credit(c.kind(), delta);
    }
    let kept = ledger.containers.len();
    // A container whose record was lost is accounted again for the IPs its counters in the
    // kernel carry, unless the ledger has the IP for another container.
    let (now, today) = (ctx.now, ctx.today());
    let mut recovered: BTreeSet<(Ctid, IpAddr)> = BTreeSet::new();
    let found_in_kernel: Vec<(Ctid, IpAddr)> =
        kernel.counted().map(|c| (c.ctid.clone(), c.ip())).collect();
    for (ctid, ip) in found_in_kernel {
        if ledger.owner(&ip).is_none() && (ip.is_ipv4() || ctx.config.ipv6) {
            ledger.assign_from(&ctid, ip, None, now, today);
            recovered.insert((ctid, ip));
        }
    }
    let mut session = harvested(ctx, locked, ledger, loaded, kernel)?;
    let done = commit(ctx, &mut session, true)?;
    for (from, to) in &found.moved_aside {
        ctx.say(format!(
            "moved aside {} (it did not parse) to {}",
            from.display(),
            to.display()
        ))?;
    }
    if found.node_lost {
        ctx.say("node record rebuilt: the boot id, the backend and the last dump time were lost")?;
    }
    if !recovered.is_empty() {
        ctx.say(format!(
            "accounted again from their counters in the kernel: {}",
            recovered
                .iter()
                .map(|(c, ip)| format!("{c}/{ip}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    ctx.say(format!(
        "{kept} container record(s) kept; {counters} kernel counter(s) taken as new starting points"
    ))?;
    let since = match &found.last_dump {
        Some(d) => format!("since the last dump at {}", crate::clock::format(&d.at)),
        None => "since the last harvest (its time is lost)".to_string(),
    };
    // A counter no record was left for: its whole value, since it was made.
    let since = match unknown {
        0 => since,
        n if n == counters => "since they were made (no record of them was left)".to_string(),
        n => format!("{since}, and by {n} counter(s) no record was left for since they were made"),
    };
    ctx.say(format!(
        "not credited to anyone: at most {} bytes in / {} bytes out ({} / {} packets) that the \
         kernel counted {since}",
        uncounted.in_bytes, uncounted.out_bytes, uncounted.in_packets, uncounted.out_packets
    ))?;
    report(ctx, &done)
}
