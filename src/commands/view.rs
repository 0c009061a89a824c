//! The commands that only look: show (live figures) and status (rules in place).

use super::*;
use crate::model::{Chain, CounterId};
use std::collections::HashMap;

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
    /// Start of the totals (RFC 3339, whole seconds, in the configured zone).
    total_since: String,
    total: Figures,
    today: Figures,
    month: Figures,
    /// The cycle day in force today.
    cycle_day: u8,
    /// The period asked for (`--period`; by default the one holding today).
    period: super::billing::PeriodDoc,
    /// The period before the current one (without `--period`).
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_period: Option<super::billing::PeriodDoc>,
    /// The container's quota and its use in the current period (also with `--period`);
    /// `null` without one.
    quota: Option<super::billing::QuotaDoc>,
    by_ip: Vec<ShowIp>,
    /// Accounted IPs whose counters are not all in the kernel: their traffic is not all
    /// counted until `vzacct sync` or the next dump puts the counters back (left out when
    /// there is none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    uncounted_ips: Vec<IpAddr>,
}

#[derive(Serialize)]
struct ShowDoc {
    jsonversion: u32,
    /// Today in the configured zone.
    date: NaiveDate,
    /// The configured zone and its offset now (`+01:00`).
    timezone: String,
    utc_offset: String,
    /// Whether the kernel's counters since the last harvest are included.
    live: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_live_because: Option<String>,
    containers: Vec<ShowCt>,
}

/// The ledger as a view sees it: the kernel's counters harvested in memory, nothing written.
pub(crate) struct Live {
    pub ledger: Ledger,
    pub loaded: Loaded,
    /// Days the harvest closed in memory (not in the database until the next dump).
    pub closed: Vec<Row>,
    /// Why the kernel's counters since the last harvest are not included, if they are not.
    pub not_live_because: Option<String>,
    /// The accounted IPs whose counters of the backend in use are not all in the kernel
    /// (their traffic is not all counted now); empty when the kernel was not read.
    pub uncounted: BTreeMap<Ctid, Vec<IpAddr>>,
}

/// Load the ledger and harvest the kernel's counters in memory; the caller holds the
/// shared lock (and keeps it while it reads the database further).
pub(crate) fn live(ctx: &Ctx, shared: &store::Shared) -> Result<Live, Error> {
    let (mut ledger, loaded, kernel) =
        super::change::load_reading_kernel(ctx, false, || shared.load())?;
    let live = kernel.and_then(|kernel| {
        let rows = super::fold(ctx, &mut ledger, &kernel)?.1;
        // After the harvest, a container's last-seen values are exactly the counters of its
        // that the read found: an IP is counted when each kind in use has its counter there
        // and packets reach it (no map of every IP is built: a large node's view stays as
        // fast and as small as it was).
        let venet = &ctx.config.venet_interface;
        let reached = reached_kinds(&kernel, venet);
        let mut uncounted: BTreeMap<Ctid, Vec<IpAddr>> = BTreeMap::new();
        for (ctid, c) in &ledger.containers {
            for ip in &c.ips {
                let counted = kernel.kinds().iter().all(|&k| {
                    let key = match kernel.use_sets {
                        true => CounterId::set(k, *ip),
                        false => {
                            CounterId::rule(k, *ip, crate::backend::iptables::rule_iface(k, venet))
                        }
                    };
                    reached.contains(&(Family::of(ip), k)) && c.seen.contains_key(&key)
                });
                if !counted {
                    uncounted.entry(ctid.clone()).or_default().push(*ip);
                }
            }
        }
        Ok((rows, uncounted))
    });
    ledger.stamp_since(ctx.now);
    let (closed, uncounted, not_live_because) = match live {
        Ok((rows, uncounted)) => (rows, uncounted, None),
        Err(e) => (Vec::new(), BTreeMap::new(), Some(not_live(&ledger, &e))),
    };
    Ok(Live {
        ledger,
        loaded,
        closed,
        not_live_because,
        uncounted,
    })
}

/// The note of a view that shows containers of `uncounted` (at most ten named).
pub(crate) fn uncounted_note(
    uncounted: &BTreeMap<Ctid, Vec<IpAddr>>,
    shown: &[&Ctid],
) -> Option<String> {
    let mut hit = shown.iter().filter_map(|c| Some((c, uncounted.get(*c)?)));
    let named: Vec<String> = (hit.by_ref().take(10))
        .map(|(c, ips)| format!("{c} ({})", join(ips)))
        .collect();
    if named.is_empty() {
        return None;
    }
    let more = match hit.count() {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Some(format!(
        "note: {}{more}: accounted, but not all of their counters are in the kernel, so their \
         traffic is not all counted now (`vzacct status` shows which; `vzacct sync` or the next \
         dump puts them back)",
        named.join(", ")
    ))
}

fn not_live(ledger: &Ledger, e: &Error) -> String {
    {
        let since = match &ledger.last_dump {
            Some(d) => format!("last dump at {}", crate::clock::format(&d.at)),
            None => "no dump yet".to_string(),
        };
        format!(
            "the kernel's counters since the last harvest ({since}) are not included: {}",
            chain(e).replace("\n  caused by: ", "; caused by: ")
        )
    }
}

/// `vzacct show [CTID...] [--period P] [--json]`: live figures (the kernel's counters
/// harvested in memory under a shared lock, nothing written). When the kernel cannot be
/// read, the ledger's figures, saying so.
pub fn show(
    ctx: &mut Ctx,
    only: &[Ctid],
    wanted: Option<crate::ledger::period::Wanted>,
    json: bool,
) -> Result<(), Error> {
    let shared = store::lock_shared(&ctx.config.state_dir, ctx.lock_wait)?;
    let Live {
        ledger,
        loaded,
        closed,
        not_live_because,
        uncounted,
    } = live(ctx, &shared)?;
    let periods = super::billing::Periods::new(ctx, &loaded, &closed)?;
    let quotas = crate::ledger::thresholds::quotas(&loaded)?;
    let today = ctx.today();
    let month = month_of(today);
    for c in only {
        if !ledger.containers.contains_key(c) {
            return Err(Error::Invalid(format!(
                "container {c} has no record in the ledger"
            )));
        }
    }
    let mut ids: Vec<&Ctid> = ledger
        .containers
        .keys()
        .filter(|c| only.is_empty() || only.contains(c))
        .collect();
    ids.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut cts = Vec::new();
    for ctid in ids {
        let c = &ledger.containers[ctid];
        let since = c.total_since.unwrap_or(ctx.now);
        let schedule = periods.schedule(ctid);
        let span = wanted
            .unwrap_or(crate::ledger::period::Wanted::Current)
            .span(&schedule, today);
        let doc = |span: crate::ledger::period::Span| -> Result<_, Error> {
            Ok(super::billing::PeriodDoc {
                start: span.start,
                end: span.end,
                figures: periods.figures(ctid, c, span)?,
            })
        };
        let period = doc(span)?;
        let previous_period = match wanted {
            None => Some(doc(schedule.previous(today))?),
            Some(_) => None,
        };
        let quota = match quotas.get(ctid) {
            None => None,
            Some(q) => {
                let current = match wanted {
                    None => period.figures,
                    Some(_) => periods.figures(ctid, c, schedule.period(today))?,
                };
                Some(super::billing::QuotaDoc::of(*q, &current))
            }
        };
        cts.push(ShowCt {
            ctid: ctid.clone(),
            ips: c.ips.iter().copied().collect(),
            total_since: crate::clock::format(&since.with_timezone(&ctx.now.timezone())),
            total: c.total,
            today: c
                .today
                .as_ref()
                // The open day; after the clock was set back it may lie ahead of `today`.
                .filter(|d| d.date >= today)
                .map(|d| d.figures)
                .unwrap_or_default(),
            month: c.month_so_far(&month),
            cycle_day: schedule.day_on(today).0,
            period,
            previous_period,
            quota,
            by_ip: c
                .by_ip
                .iter()
                .map(|(ip, f)| ShowIp { ip: *ip, total: *f })
                .collect(),
            uncounted_ips: uncounted.get(ctid).cloned().unwrap_or_default(),
        });
    }
    drop(periods);
    drop(shared);
    let doc = ShowDoc {
        jsonversion: super::billing::JSON_VERSION,
        date: today,
        timezone: ctx.tz.name().to_string(),
        utc_offset: ctx.now.format("%:z").to_string(),
        live: not_live_because.is_none(),
        not_live_because,
        containers: cts,
    };
    if let Some(why) = &doc.not_live_because {
        ctx.warn(why);
    }
    if json {
        // Written as it is made (a large node's document is megabytes), then a newline.
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut *ctx.out);
        serde_json::to_writer(&mut out, &doc).map_err(|e| Error::Output(e.into()))?;
        return writeln!(out)
            .and_then(|()| out.flush())
            .map_err(Error::Output);
    }
    if doc.containers.is_empty() {
        return ctx.say(
            "no container is accounted yet: `vzacct add CTID` accounts one (its IP_ADDRESS), \
             `vzacct sync` every running one, and the installed hooks do it as containers start",
        );
    }
    let shown: Vec<&Ctid> = doc.containers.iter().map(|c| &c.ctid).collect();
    let note = uncounted_note(&uncounted, &shown);
    let ips_of = |ct: &ShowCt| {
        if ct.ips.is_empty() {
            "(not accounted)".to_string()
        } else {
            join(&ct.ips)
        }
    };
    let w = doc
        .containers
        .iter()
        .map(|c| ips_of(c).len())
        .max()
        .unwrap_or(0)
        .max(3);
    let idw = doc
        .containers
        .iter()
        .map(|c| c.ctid.as_str().len())
        .max()
        .unwrap_or(0)
        .max(4);
    if wanted.is_some() {
        ctx.say(format!(
            "{:<idw$} {:<w$} {:<10} {:<10} {:>11} {:>11} {:>11}",
            "CTID", "IPS", "FROM", "TO (excl.)", "IN", "OUT", "TOTAL"
        ))?;
        for ct in &doc.containers {
            let p = &ct.period;
            ctx.say(format!(
                "{:<idw$} {:<w$} {:<10} {:<10} {:>11} {:>11} {:>11}",
                ct.ctid.as_str(),
                ips_of(ct),
                p.start.to_string(),
                p.end.to_string(),
                human(p.figures.in_bytes),
                human(p.figures.out_bytes),
                human(p.figures.in_bytes.saturating_add(p.figures.out_bytes)),
            ))?;
        }
        free_table(ctx, &doc, idw, true)?;
        if let Some(note) = &note {
            ctx.say(note)?;
        }
        if let Some(why) = &doc.not_live_because {
            ctx.say(format!("note: {why}"))?;
        }
        return Ok(());
    }
    ctx.say(format!(
        "{:<idw$} {:<w$} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}  {}",
        "CTID",
        "IPS",
        "TOTAL IN",
        "TOTAL OUT",
        "TODAY IN",
        "TODAY OUT",
        "MONTH IN",
        "MONTH OUT",
        "PERIOD IN",
        "PERIOD OUT",
        "PREV IN",
        "PREV OUT",
        "QUOTA (USED IN THIS PERIOD)"
    ))?;
    for ct in &doc.containers {
        let prev = ct
            .previous_period
            .as_ref()
            .map(|p| p.figures)
            .unwrap_or_default();
        ctx.say(format!(
            "{:<idw$} {:<w$} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}  {}",
            ct.ctid.as_str(),
            ips_of(ct),
            human(ct.total.in_bytes),
            human(ct.total.out_bytes),
            human(ct.today.in_bytes),
            human(ct.today.out_bytes),
            human(ct.month.in_bytes),
            human(ct.month.out_bytes),
            human(ct.period.figures.in_bytes),
            human(ct.period.figures.out_bytes),
            human(prev.in_bytes),
            human(prev.out_bytes),
            ct.quota
                .as_ref()
                .map_or_else(|| "-".to_string(), |q| q.text())
        ))?;
    }
    free_table(ctx, &doc, idw, false)?;
    if let Some(note) = &note {
        ctx.say(note)?;
    }
    if let Some(why) = &doc.not_live_because {
        ctx.say(format!("note: {why}"))?;
    }
    Ok(())
}

/// The free part of the figures (`[classes]`), when any container has some: since the
/// reset and in the period shown, with what remains billable in that period.
fn free_table(ctx: &mut Ctx, doc: &ShowDoc, idw: usize, period_only: bool) -> Result<(), Error> {
    let free = |f: &Figures| f.free_in_bytes > 0 || f.free_out_bytes > 0;
    if !doc
        .containers
        .iter()
        .any(|c| free(&c.total) || free(&c.period.figures))
    {
        return Ok(());
    }
    ctx.say(String::new())?;
    ctx.say(format!(
        "{:<idw$} {:>13} {:>13} {:>15} {:>15} {:>15} {:>15}",
        "CTID",
        "FREE IN",
        "FREE OUT",
        "PERIOD FREE IN",
        "PERIOD FREE OUT",
        "BILLABLE IN",
        "BILLABLE OUT"
    ))?;
    for ct in &doc.containers {
        let p = &ct.period.figures;
        let (total_in, total_out) = match period_only {
            true => ("-".to_string(), "-".to_string()),
            false => (
                human(ct.total.free_in_bytes),
                human(ct.total.free_out_bytes),
            ),
        };
        ctx.say(format!(
            "{:<idw$} {:>13} {:>13} {:>15} {:>15} {:>15} {:>15}",
            ct.ctid.as_str(),
            total_in,
            total_out,
            human(p.free_in_bytes),
            human(p.free_out_bytes),
            human(p.billable_in_bytes()),
            human(p.billable_out_bytes())
        ))?;
    }
    ctx.say("(free traffic: with the networks of [classes]; included in IN and OUT above)")
}

/// Bytes in binary units with two decimals: `1.23 GiB`.
pub fn human(bytes: u64) -> String {
    scaled(bytes, 1024, ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"])
}

/// Bytes in decimal units with two decimals: `1.23 GB` (beside a quantity given in them).
pub fn human_si(bytes: u64) -> String {
    scaled(bytes, 1000, ["KB", "MB", "GB", "TB", "PB", "EB"])
}

fn scaled(bytes: u64, base: u64, units: [&str; 6]) -> String {
    if bytes < base {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / base as f64;
    let mut unit = 0;
    while v >= base as f64 && unit < units.len() - 1 {
        v /= base as f64;
        unit += 1;
    }
    format!("{v:.2} {}", units[unit])
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

/// `status --json` when the rules cannot be read: what is accounted, and why not.
#[derive(Serialize)]
struct StatusUnknown {
    jsonversion: u32,
    rules_known: bool,
    error: String,
    containers: Vec<StatusUnknownCt>,
}

#[derive(Serialize)]
struct StatusUnknownCt {
    ctid: Ctid,
    ips: Vec<IpAddr>,
}

#[derive(Serialize)]
struct StatusDoc {
    jsonversion: u32,
    /// Whether the kernel's rules could be read (always true here; see [`StatusUnknown`]).
    rules_known: bool,
    backend: &'static str,
    /// Why `backend = auto` uses per-IP rules (absent when it did not have to).
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_fallback: Option<String>,
    containers: Vec<StatusCt>,
    netfilter: Vec<StatusFamily>,
    sets_missing: usize,
    stray_set_elements: usize,
    /// Elements of IPs a quick umount/net-del stopped accounting: the next dump harvests
    /// and removes them.
    set_elements_waiting_for_dump: usize,
}

/// `vzacct status [--json]`: what is accounted, and whether the kernel agrees. Read-only.
pub fn status(ctx: &mut Ctx, json: bool) -> Result<(), Error> {
    let shared = store::lock_shared(&ctx.config.state_dir, ctx.lock_wait)?;
    let ledger = shared.load_accounted()?;
    drop(shared);
    let kernel = match Kernel::read(
        &ctx.config,
        &ctx.probes(false),
        &ctx.families(),
        ledger.expected_elements(),
        false,
    ) {
        Ok(k) => k,
        Err(e) => {
            // Say what is accounted, then why the rules cannot be checked.
            let accounted = ledger.accounted();
            if json {
                let mut ids: Vec<&Ctid> = accounted.keys().collect();
                ids.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
                let doc = StatusUnknown {
                    jsonversion: super::billing::JSON_VERSION,
                    rules_known: false,
                    error: chain(&e).replace("\n  caused by: ", "; caused by: "),
                    containers: ids
                        .into_iter()
                        .map(|c| StatusUnknownCt {
                            ctid: c.clone(),
                            ips: accounted[c].iter().copied().collect(),
                        })
                        .collect(),
                };
                let text =
                    serde_json::to_string_pretty(&doc).map_err(|e| Error::Output(e.into()))?;
                ctx.say(text)?;
                return Err(e.into());
            }
            for (ctid, ips) in &accounted {
                for ip in ips {
                    ctx.say(format!(
                        "{:<38} {:<40} unknown",
                        ctid.as_str(),
                        ip.to_string()
                    ))?;
                }
            }
            ctx.say(format!(
                "{} container(s) accounted; whether their rules are in place is unknown",
                accounted.len()
            ))?;
            return Err(e.into());
        }
    };
    let accounted = ledger.accounted();
    let venet = &ctx.config.venet_interface;
    let plan = kernel.plan(&accounted, venet);
    let mut fams = Vec::new();
    for (family, p) in &plan.rules {
        fams.push(StatusFamily {
            family: match family {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            },
            chains_and_jumps_in_place: !p
                .ops
                .iter()
                .any(|op| matches!(op, Op::NewChain(_) | Op::InsertJump(_))),
            stray_rules: p.deleted(),
        });
    }
    let present = present_kinds(&kernel, &accounted, venet);
    let mut ids: Vec<&Ctid> = accounted.keys().collect();
    ids.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut cts = Vec::new();
    for ctid in ids {
        let mut ips = Vec::new();
        for ip in &accounted[ctid] {
            let n = present.get(&(ctid, *ip)).map_or(0, |k| k.count_ones()) as usize;
            ips.push(StatusIp {
                ip: *ip,
                rules_expected: kernel.kinds().len(),
                rules_present: n,
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
        jsonversion: super::billing::JSON_VERSION,
        rules_known: true,
        backend: kernel.backend_name(),
        backend_fallback: kernel.sets.why_not.clone(),
        containers: cts,
        netfilter: fams,
        sets_missing: plan.sets.create.len(),
        stray_set_elements: super::node::split_parked(&ledger, &plan.sets.del).1,
        set_elements_waiting_for_dump: super::node::split_parked(&ledger, &plan.sets.del).0,
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
    if let Some(why) = &doc.backend_fallback {
        ctx.say(format!("backend: per-IP rules (iptables), because {why}"))?;
    }
    if doc.backend == "ipset" {
        ctx.say(format!(
            "ipset: {} set(s) missing, {} stray element(s), {} waiting for the next dump",
            doc.sets_missing, doc.stray_set_elements, doc.set_elements_waiting_for_dump
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

/// The kinds in use whose packets reach their counters in each family: our chain is there
/// and jumped to, and with sets, the rule matching the kind's set is in it. (A rule or element
/// of a kind that no packet reaches counts nothing.)
fn reached_kinds(kernel: &Kernel, venet: &str) -> Vec<(Family, Kind)> {
    kernel
        .rules
        .tables
        .iter()
        .flat_map(|(t, cur)| {
            kernel.kinds().iter().filter_map(move |k| {
                let chain = k.chain();
                let hooked =
                    cur.chains.contains(&chain) && cur.jumps.iter().any(|j| j.chain == chain);
                let matched = !kernel.use_sets
                    || cur.rules.iter().any(|r| {
                        r.chain == chain
                            && r.set_match
                                .as_ref()
                                .is_some_and(|m| m.kind == *k && m.iface == venet)
                    });
                (hooked && matched).then_some((t.family, *k))
            })
        })
        .collect()
}

/// Which kinds of counter of the backend in use are in place for each accounted (container,
/// IP), one bit per kind: a map of the accounted addresses only, filled from the kernel's
/// counters as read (a set of every counter found would hold 80,000 entries on a node of
/// 10,000 containers).
fn present_kinds<'a>(
    kernel: &'a Kernel,
    accounted: &'a crate::model::Accounted,
    venet: &str,
) -> HashMap<(&'a Ctid, IpAddr), u8> {
    let mut present: HashMap<(&Ctid, IpAddr), u8> = accounted
        .iter()
        .flat_map(|(c, ips)| ips.iter().map(move |ip| ((c, *ip), 0)))
        .collect();
    let reached = reached_kinds(kernel, venet);
    for c in kernel.counted() {
        let in_set = c.key.is_set();
        // Every set is matched on venet; a rule of the local chains must name it.
        let in_place = if in_set {
            kernel.use_sets
        } else {
            !kernel.use_sets && (c.kind().chain() == Chain::Forward || c.key.iface() == venet)
        };
        let in_place = in_place && reached.contains(&(Family::of(&c.ip()), c.kind()));
        if in_place && let Some(bits) = present.get_mut(&(&c.ctid, c.ip())) {
            let bit = Kind::ALL.iter().position(|k| *k == c.kind()).unwrap_or(0);
            *bits |= 1 << bit;
        }
    }
    present
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
        assert_eq!(human_si(999), "999 B");
        assert_eq!(human_si(1000), "1.00 KB");
        assert_eq!(human_si(999_999_999_999), "1000.00 GB");
        assert_eq!(human_si(1_000_000_000_000), "1.00 TB");
    }
}
