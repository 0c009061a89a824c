//! The commands about the node's integration: install, uninstall and check.

use std::path::{Path, PathBuf};

use super::*;
use crate::commands::install::{self, Layout, Role};

/// Where install puts things: `root` (normally `/`) with the node's standard locations
/// below it; the scripts run this very binary with the config at `config`.
pub fn layout(ctx: &Ctx, root: &Path, config: &Path) -> Result<Layout, Error> {
    let vzacct = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Error::Invalid(format!("cannot tell where this vzacct binary is: {e}")))?;
    let conf_dir = if root == Path::new("/") {
        ctx.config.conf_dir.clone()
    } else {
        PathBuf::from("/etc/vz/conf")
    };
    let layout = Layout {
        root: root.to_path_buf(),
        vzacct,
        config: config.to_path_buf(),
        conf_dir,
        mounts: PathBuf::new(),
    };
    Ok(Layout {
        mounts: layout.under(Path::new("/proc/mounts")),
        ..layout
    })
}

/// Print what install or uninstall did, then its problems and error, if any.
fn tell(
    ctx: &mut Ctx,
    what: &str,
    report: &install::Report,
    outcome: Result<(), install::InstallError>,
) -> Result<(), Error> {
    for line in &report.done {
        ctx.say(line)?;
    }
    for p in &report.problems {
        ctx.say(format!("PROBLEM     {p}"))?;
    }
    outcome?;
    if !report.problems.is_empty() {
        return Err(Error::Invalid(format!(
            "{what} left {} problem(s) for you to resolve (listed above); everything else is done",
            report.problems.len()
        )));
    }
    Ok(())
}

/// `vzacct install [--root DIR]`
pub fn install_cmd(ctx: &mut Ctx, layout: &Layout) -> Result<(), Error> {
    let mut report = install::Report::default();
    let outcome = install::install(layout, &mut report);
    tell(ctx, "install", &report, outcome)?;
    if layout.root == Path::new("/") {
        ctx.say(
            "enable the init script on SysV nodes with `chkconfig --add vzacct` or \
             `update-rc.d vzacct defaults`; on systemd nodes run `systemctl daemon-reload`",
        )?;
    }
    ctx.say("vzacct is installed; `vzacct check` shows every integration point")
}

/// `vzacct uninstall [--root DIR] [--purge [--purge-data]]`
pub fn uninstall_cmd(
    ctx: &mut Ctx,
    layout: &Layout,
    purge: bool,
    purge_data: bool,
    keep_config: bool,
) -> Result<(), Error> {
    let mut report = install::Report::default();
    let outcome = install::uninstall(layout, keep_config, &mut report);
    tell(ctx, "uninstall", &report, outcome)?;
    if purge {
        purge_kernel(ctx)?;
    } else {
        match Kernel::read(&ctx.config, &ctx.probes(false), &ctx.families(), 0, false) {
            Ok(k) => {
                let plan = k.teardown();
                let jumps_chains: usize = (plan.rules.iter())
                    .map(|(_, p)| p.ops.len() + p.free.len())
                    .sum();
                let rules: usize = (k.rules.tables.iter())
                    .map(|(_, c)| {
                        c.rules.len() + c.free_chains.values().map(Vec::len).sum::<usize>()
                    })
                    .sum();
                let sets = sets_destroyed(&plan);
                if jumps_chains + sets.len() > 0 {
                    ctx.say(format!(
                        "still in the kernel, and counting: {jumps_chains} of vzacct's chain(s) \
                         and jump(s), {rules} rule(s) and {} set(s) ({}); `vzacct uninstall \
                         --purge` harvests them into the ledger and removes them",
                        sets.len(),
                        if sets.is_empty() {
                            "no sets".to_string()
                        } else {
                            sets.join(", ")
                        }
                    ))?;
                } else {
                    ctx.say("nothing of vzacct's is left in the kernel")?;
                }
            }
            Err(e) => ctx.say(format!(
                "cannot tell what of vzacct's is left in the kernel: {}",
                chain(&e).replace("\n  caused by: ", "; caused by: ")
            ))?,
        }
    }
    if purge_data {
        // Only what vzacct writes there goes: either directory may be shared with others.
        let state: fn(&str) -> bool = |name| {
            ["lock", crate::backend::probe::FILE, "thresholds"].contains(&name)
                || name.starts_with("ledger")
        };
        let csv: fn(&str) -> bool = |name| {
            name.strip_suffix(".csv")
                .is_some_and(|ctid| ctid.parse::<Ctid>().is_ok())
        };
        for (dir, ours) in [
            (ctx.config.state_dir.clone(), state),
            (ctx.config.csv_dir.clone(), csv),
        ] {
            let left = purge_dir(&dir, ours).map_err(|e| {
                Error::Invalid(format!(
                    "cannot delete vzacct's files in {}: {e}",
                    dir.display()
                ))
            })?;
            match left {
                None => {}
                Some(left) if left.is_empty() => {
                    ctx.say(format!("deleted     {}", dir.display()))?
                }
                Some(left) => ctx.say(format!(
                    "kept        {} without vzacct's files (it holds others: {})",
                    dir.display(),
                    left.join(", ")
                ))?,
            }
        }
        return ctx.say("vzacct is uninstalled and purged, its data deleted");
    }
    ctx.say(format!(
        "vzacct is uninstalled; the ledger ({}) and the CSV files ({}) are kept",
        ctx.config.state_dir.display(),
        ctx.config.csv_dir.display()
    ))
}

/// Delete the entries of `dir` that `ours` names (a directory with what it holds), then `dir`
/// itself if nothing else is left in it. `None` when there is no such directory; else the
/// names of the entries left, sorted.
fn purge_dir(dir: &Path, ours: fn(&str) -> bool) -> std::io::Result<Option<Vec<String>>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r?,
    };
    let mut left = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !ours(&name) {
            left.push(name);
        } else if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    if left.is_empty() {
        std::fs::remove_dir(dir)?;
    }
    left.sort();
    Ok(Some(left))
}

/// Take vzacct out of the kernel under the lock: a final harvest into the ledger (so
/// nothing counted is lost), then every jump, chain, rule and set of ours removed.
fn purge_kernel(ctx: &mut Ctx) -> Result<(), Error> {
    let s = begin(ctx)?;
    let harvest = s.harvest.clone();
    let teardown = s.kernel.teardown();
    let Session {
        locked,
        mut ledger,
        mut loaded,
        kernel,
        rows,
        ..
    } = s;
    let rows_written = csv::append(&ctx.config.csv_dir, &rows, &ctx.csv_perms()?)?;
    ledger.prune();
    loaded.keep_days(ctx.config.history_days);
    loaded.save(&ledger, Some(kernel.backend_name()), &rows)?;
    // The iptables batch stops every set from counting; their final values are then read,
    // credited, and the sets destroyed.
    let today = ctx.today();
    let mut credited = crate::ledger::Figures::default();
    kernel.apply(&ctx.config, &teardown, &mut |w| {
        teardown.sets.write_with(w, &|_, _, _| None)
    })?;
    let frozen = kernel.read_stopped(&ctx.config, &teardown, &mut |c| {
        ledger.credit_frozen_one(c, today, &mut credited)
    })?;
    if frozen > 0 {
        loaded.save(&ledger, None, &[])?;
    }
    kernel.finish(&ctx.config, &teardown)?;
    drop(locked);
    report_harvest(ctx, &harvest, rows_written)?;
    for (family, p) in &teardown.rules {
        ctx.say(format!(
            "{family}: removed {} jump(s) and {} chain(s) with their rules",
            p.ops
                .iter()
                .filter(|o| matches!(o, Op::Delete { .. }))
                .count(),
            p.ops
                .iter()
                .filter(|o| matches!(o, Op::RemoveChain(_) | Op::RemoveGeneration))
                .count()
                + p.free.len()
        ))?;
    }
    let sets = sets_destroyed(&teardown);
    if !sets.is_empty() {
        ctx.say(format!("ipset: destroyed {}", sets.join(", ")))?;
    }
    Ok(())
}

/// Every set a teardown destroys, by name: the counting sets and the free networks'.
fn sets_destroyed(plan: &KernelPlan) -> Vec<String> {
    let mut names = plan.sets.destroy.clone();
    names.extend((plan.sets.free_destroy.iter()).map(|f| crate::model::free_set_name(*f)));
    names.sort();
    names
}

#[derive(Serialize)]
struct CheckItem {
    name: String,
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct CheckDoc {
    jsonversion: u32,
    ok: bool,
    items: Vec<CheckItem>,
}

/// How old the last dump may be before `check` complains: three cron intervals.
const DUMP_MAX_AGE_SECS: i64 = 15 * 60;

/// Which vzctl the node has, by the network scripts found (and where), or why it is not
/// supported.
fn flavour(layout: &Layout) -> Result<String, String> {
    if let Some(why) = layout.proxmox() {
        return Err(format!(
            "Proxmox VE: {why}; not supported (`vzacct install` says why)"
        ));
    }
    let found = layout.script_dirs();
    if found.is_empty() {
        return Err(format!(
            "no network script (vps-net_add of vzctl 4, vz-net_add of OpenVZ 7) in any of {} (is vzctl installed?)",
            install::searched_dirs()
        ));
    }
    Ok(found
        .iter()
        .map(|(f, d)| format!("{}: {}", f.name(), d.display()))
        .collect::<Vec<_>>()
        .join("; "))
}

/// `vzacct check [--root DIR] [--json]`: every integration point with its state; exit 0
/// only when all is well. `config_error`: the config could not be read (check goes on with
/// the defaults to show everything else).
pub fn check(
    ctx: &mut Ctx,
    layout: &Layout,
    json: bool,
    config_error: Option<&Error>,
) -> Result<(), Error> {
    let mut items = Vec::new();
    let mut item = |name: &str, r: Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        items.push(CheckItem {
            name: name.to_string(),
            ok,
            // One item, one line: a cause chain is folded into it.
            detail: detail
                .replace("\n  caused by: ", "; caused by: ")
                .replace('\n', " "),
        });
    };
    // The config the installed scripts pass with --config.
    item(
        "config",
        match config_error {
            Some(e) => Err(format!(
                "{}; every hook logs this and does nothing until it is fixed (check shows the \
                 rest with the defaults)",
                chain(e)
            )),
            None if !layout.config.exists() => Err(format!(
                "{} is missing: the installed hooks pass it with --config, so every hook only \
                 logs an error (run `vzacct install` to write the default one)",
                layout.config.display()
            )),
            None => Ok(format!("{} read", layout.config.display())),
        },
    );
    item("storage", storage(ctx));
    // Files.
    match layout.items() {
        Ok(list) => {
            item("vzctl flavour", flavour(layout));
            for i in list.iter().filter(|i| i.role != Role::Config) {
                let name = match i.role {
                    Role::Chain => "action script",
                    Role::Wrap => "network wrapper",
                    Role::Own if i.path.ends_with("vzacct.service") => "systemd unit",
                    Role::Own if i.path.starts_with(layout.under(Path::new("/etc/cron.d"))) => {
                        "cron entry"
                    }
                    _ => "init script",
                };
                item(name, install::file_state(i));
            }
        }
        Err(e) => item("installation", Err(e.to_string())),
    }
    item("boot order", boot_order(layout));
    // Netfilter: the tools, then our chains, rules and sets (one read of everything).
    // Probed afresh (not from the boot's cache), so that `check` sees the tools as they are.
    let probes = crate::backend::probe::Probes::fresh();
    for family in ctx.families() {
        let t = crate::backend::netfilter::Tables::probed(&ctx.config, family, &probes);
        let restore = t.restore_program().to_string();
        item(
            &format!("{family} iptables"),
            match crate::backend::process::run(&restore, &["--version"], None) {
                Ok(_) => Ok(format!(
                    "restore usable ({restore}); {}",
                    t.lock().describe()
                )),
                Err(e) => Err(chain(&e)),
            },
        );
    }
    let kernel = Kernel::read(&ctx.config, &probes, &ctx.families(), 0, false);
    match &kernel {
        Err(e) => item("kernel rules", Err(chain(e))),
        Ok(k) => item("backend", Ok(k.backend_line())),
    }
    if let Ok(k) = &kernel
        && ctx.config.classes.active()
    {
        let c = &ctx.config.classes;
        item(
            "free networks",
            match (&k.classes, &k.sets.read) {
                (Some(_), Some(sets)) => Ok(format!(
                    "{} network(s){}; in the kernel: {} IPv4 and {} IPv6 element(s) in vzacct-free4/6",
                    c.free.len(),
                    if c.container_to_container {
                        ", and traffic between containers"
                    } else {
                        ""
                    },
                    sets.free
                        .get(&crate::model::Family::V4)
                        .map_or(0, |n| n.len()),
                    sets.free
                        .get(&crate::model::Family::V6)
                        .map_or(0, |n| n.len()),
                )),
                _ => Err(format!(
                    "[classes] names free traffic, but `{} save` does not work: nothing is \
                     counted as free (the free networks are an ipset hash:net set, with \
                     either backend; install ipset)",
                    ctx.config.ipset
                )),
            },
        );
    }
    // The ledger, the rules and the running containers: read under a shared lock, creating
    // nothing.
    let ledger = store::lock_shared(&ctx.config.state_dir, ctx.lock_wait).and_then(|l| l.load());
    match ledger {
        Err(e) => item("ledger", Err(chain(&e))),
        Ok((ledger, loaded)) => {
            let accounted = ledger.accounted();
            item(
                "ledger",
                Ok(format!("{} container(s) accounted", accounted.len())),
            );
            if let Ok(kernel) = &kernel {
                let venet = &ctx.config.venet_interface;
                let plan = kernel.plan(&accounted, venet);
                for (family, p) in &plan.rules {
                    let structural = p
                        .ops
                        .iter()
                        .filter(|o| matches!(o, Op::NewChain(_) | Op::InsertJump(_)))
                        .count();
                    let missing = p.added();
                    item(
                        &format!("{family} rules"),
                        if structural + missing + p.deleted() == 0 {
                            Ok(format!(
                                "chains, jumps and {} rule(s) in place ({} backend)",
                                kernel.wanted(&accounted, *family, venet),
                                kernel.backend_name()
                            ))
                        } else {
                            Err(format!(
                                "{structural} chain/jump fix(es), {missing} rule(s) missing, {} stray: run `vzacct sync`",
                                p.deleted()
                            ))
                        },
                    );
                }
                if kernel.use_sets {
                    let s = &plan.sets;
                    let (waiting, stray) = split_parked(&ledger, &s.del);
                    let unusable: Vec<&String> = kernel
                        .sets
                        .read
                        .iter()
                        .flat_map(|k| k.present.iter().filter(|(_, ok)| !**ok).map(|(n, _)| n))
                        .collect();
                    let waiting_text = if waiting > 0 {
                        format!(
                            "; {waiting} element(s) of stopped containers waiting for the next \
                             dump to harvest them"
                        )
                    } else {
                        String::new()
                    };
                    item(
                        "ipsets",
                        if s.create.is_empty()
                            && s.add.is_empty()
                            && stray == 0
                            && unusable.is_empty()
                        {
                            Ok(format!("sets and elements in place{waiting_text}"))
                        } else {
                            Err(format!(
                                "{} set(s) missing, {} element(s) missing, {stray} stray, {} without counters: run `vzacct sync`{}{waiting_text}",
                                s.create.len(),
                                s.add.len(),
                                unusable.len(),
                                if unusable.is_empty() {
                                    String::new()
                                } else {
                                    format!(
                                        " (destroy {} first)",
                                        unusable
                                            .iter()
                                            .map(|n| n.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    )
                                }
                            ))
                        },
                    );
                }
            }
            item("running containers", running(ctx, &ledger));
            item("thresholds", super::quota::check_item(ctx, &loaded));
            item(
                "last dump",
                match &ledger.last_dump {
                    None => Err("no dump has run yet (is the cron entry in place?)".into()),
                    Some(d) => {
                        let age = (ctx.now - d.at).num_seconds();
                        let at = crate::clock::format(&d.at.with_timezone(&ctx.now.timezone()));
                        if age < -60 {
                            Err(format!(
                                "{at} lies {} s in the future: the clock was set back since \
                                 (days already closed into the CSV stay closed)",
                                -age
                            ))
                        } else if age > DUMP_MAX_AGE_SECS {
                            Err(format!(
                                "{at} ({age} s ago; its read and harvest took {} ms): older than \
                                 {} minutes",
                                d.duration_ms,
                                DUMP_MAX_AGE_SECS / 60
                            ))
                        } else {
                            Ok(format!(
                                "{at} ({} s ago; its read and harvest took {} ms)",
                                age.max(0),
                                d.duration_ms
                            ))
                        }
                    }
                },
            );
        }
    }
    let problems = items.iter().filter(|i| !i.ok).count();
    let doc = CheckDoc {
        jsonversion: super::billing::JSON_VERSION,
        ok: problems == 0,
        items,
    };
    if json {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Output(e.into()))?;
        ctx.say(text)?;
    } else {
        for i in &doc.items {
            ctx.say(format!(
                "{:<4} {:<22} {}",
                if i.ok { "ok" } else { "FAIL" },
                i.name,
                i.detail
            ))?;
        }
    }
    if problems > 0 {
        return Err(Error::Invalid(format!("check found {problems} problem(s)")));
    }
    Ok(())
}

/// What a dump writes besides the ledger: the CSV directory (with its group) and the
/// Prometheus textfile. (Not refused when the config is read: a hook must go on accounting.)
fn storage(ctx: &Ctx) -> Result<String, String> {
    let c = &ctx.config;
    ctx.csv_perms().map_err(|e| chain(&e))?;
    let dir = &c.csv_dir;
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "csv_dir = {} under [storage] is not a directory: every dump that closes a day \
             fails",
            dir.display()
        ));
    }
    if let Some(reason) = crate::ledger::store::unsafe_dir(dir) {
        return Err(format!(
            "csv_dir = {} under [storage]: {reason}, so no dump writes into it",
            dir.display()
        ));
    }
    let mut text = format!("daily CSV in {}", dir.display());
    if let Some(p) = &c.prometheus_textfile {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        if !p.to_string_lossy().ends_with(".prom") {
            return Err(format!(
                "prometheus_textfile = {} under [export]: node_exporter's textfile collector \
                 reads only files named *.prom",
                p.display()
            ));
        }
        if !parent.is_some_and(Path::is_dir) {
            return Err(format!(
                "prometheus_textfile = {} under [export]: its directory does not exist, so \
                 every dump fails to write it",
                p.display()
            ));
        }
        text.push_str(&format!("; Prometheus textfile {}", p.display()));
    }
    Ok(text)
}

/// Of the set elements a plan would delete: how many belong to IPs a quick umount/net-del
/// parked for the next dump (expected), and how many are strays.
pub(crate) fn split_parked(ledger: &Ledger, del: &[(Kind, IpAddr)]) -> (usize, usize) {
    let parked: BTreeSet<IpAddr> = ledger
        .containers
        .values()
        .flat_map(|c| c.parked.iter().copied())
        .collect();
    let waiting = del.iter().filter(|(_, ip)| parked.contains(ip)).count();
    (waiting, del.len() - waiting)
}

/// Whether the node runs `vzacct restore` at boot before vz starts the containers: the
/// systemd unit's wants link on a systemd node, else the init script's start link in each
/// multi-user runlevel, numbered before vz's.
fn boot_order(layout: &Layout) -> Result<String, String> {
    let double = "without it, counters a firewall service restores at boot would be counted \
                  again and rules wait for the first dump";
    if layout.under(Path::new("/run/systemd/system")).exists() {
        let link = layout.wants_link();
        return match std::fs::read_link(&link) {
            Ok(_) => Ok(format!(
                "systemd: {} in place (vzacct.service runs before vz.service)",
                link.display()
            )),
            Err(_) => Err(format!(
                "systemd: {} is missing (run `vzacct install`, then `systemctl daemon-reload`); {double}",
                link.display()
            )),
        };
    }
    // SysV: /etc/rc.d/rcN.d (RHEL) or /etc/rcN.d (Debian).
    let mut enabled = Vec::new();
    let mut late = Vec::new();
    for level in ['2', '3', '4', '5'] {
        let dirs = [
            layout.under(Path::new(&format!("/etc/rc.d/rc{level}.d"))),
            layout.under(Path::new(&format!("/etc/rc{level}.d"))),
        ];
        let start = |name: &str| -> Option<u32> {
            dirs.iter()
                .filter_map(|d| std::fs::read_dir(d).ok())
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .find_map(|f| {
                    let n = f.strip_prefix('S')?;
                    (n.get(2..) == Some(name)).then(|| n[..2].parse().ok())?
                })
        };
        match (start("vzacct"), start("vz")) {
            (Some(a), Some(v)) if a >= v => {
                late.push(format!("rc{level}.d: S{a:02}vzacct after S{v:02}vz"))
            }
            (Some(_), _) => enabled.push(level),
            (None, _) => {}
        }
    }
    if !late.is_empty() {
        return Err(format!(
            "the init script starts after vz ({}): renumber it below vz; {double}",
            late.join(", ")
        ));
    }
    if enabled.is_empty() {
        return Err(format!(
            "the init script is not enabled in any runlevel (`chkconfig --add vzacct` or \
             `update-rc.d vzacct defaults`); {double}"
        ));
    }
    Ok(format!(
        "SysV: the init script starts before vz in runlevel(s) {}",
        enabled.iter().collect::<String>()
    ))
}

/// Every container running per veinfo is accounted with all its live IPs.
fn running(ctx: &Ctx, ledger: &Ledger) -> Result<String, String> {
    let live = match veinfo::read(&ctx.config.veinfo) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Ok(format!(
                "{} not found (not an OpenVZ kernel?): nothing to compare",
                ctx.config.veinfo.display()
            ));
        }
        Err(e) => return Err(chain(&e)),
    };
    let mut missing = Vec::new();
    for (ctid, ips) in &live.containers {
        for ip in ips.iter().filter(|ip| ctx.config.ipv6 || ip.is_ipv4()) {
            let ok = ledger
                .containers
                .get(ctid)
                .is_some_and(|c| c.ips.contains(ip));
            if !ok {
                missing.push(format!("{ctid}/{ip}"));
            }
        }
    }
    if missing.is_empty() {
        Ok(format!(
            "all {} running container(s) accounted",
            live.containers.len()
        ))
    } else {
        let n = missing.len();
        missing.truncate(10);
        Err(format!(
            "{n} running IP(s) not accounted: {} (run `vzacct sync`)",
            missing.join(", ")
        ))
    }
}
