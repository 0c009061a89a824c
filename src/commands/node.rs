//! The commands about the node's integration: install, uninstall and check.

use std::path::{Path, PathBuf};

use super::*;
use crate::install::{self, Layout, Role};

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
    Ok(Layout {
        root: root.to_path_buf(),
        vzacct,
        config: config.to_path_buf(),
        conf_dir,
    })
}

/// `vzacct install [--root DIR]`
pub fn install_cmd(ctx: &mut Ctx, layout: &Layout) -> Result<(), Error> {
    for line in &install::install(layout)? {
        ctx.say(line)?;
    }
    if layout.root == Path::new("/") {
        ctx.say(
            "enable the init script on SysV nodes with `chkconfig --add vzacct` or \
             `update-rc.d vzacct defaults`; on systemd nodes run `systemctl daemon-reload`",
        )?;
    }
    ctx.say("vzacct is installed; `vzacct check` shows every integration point")
}

/// `vzacct uninstall [--root DIR]`
pub fn uninstall_cmd(ctx: &mut Ctx, layout: &Layout) -> Result<(), Error> {
    for line in install::uninstall(layout)? {
        ctx.say(line)?;
    }
    ctx.say(format!(
        "vzacct is uninstalled; the ledger ({}) and the CSV files ({}) are kept",
        ctx.config.state_dir.display(),
        ctx.config.csv_dir.display()
    ))
}

#[derive(Serialize)]
struct CheckItem {
    name: String,
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct CheckDoc {
    ok: bool,
    items: Vec<CheckItem>,
}

/// How old the last dump may be before `check` complains: three cron intervals.
const DUMP_MAX_AGE_SECS: i64 = 15 * 60;

/// `vzacct check [--root DIR] [--json]`: every integration point with its state; exit 0
/// only when all is well.
pub fn check(ctx: &mut Ctx, layout: &Layout, json: bool) -> Result<(), Error> {
    let mut items = Vec::new();
    let mut item = |name: &str, r: Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        items.push(CheckItem {
            name: name.to_string(),
            ok,
            detail,
        });
    };
    // Files.
    match layout.items() {
        Ok(list) => {
            if !list.iter().any(|i| i.role == Role::Wrap) {
                item(
                    "vzctl network scripts",
                    Err(format!(
                        "vps-net_add not found in any of {} (is vzctl installed?)",
                        install::SCRIPT_DIRS.join(", ")
                    )),
                );
            }
            for i in &list {
                let name = match i.role {
                    Role::Chain => "action script",
                    Role::Wrap => "network wrapper",
                    Role::Own if i.path.ends_with("vzacct.service") => "systemd unit",
                    Role::Own if i.path.starts_with(layout.under(Path::new("/etc/cron.d"))) => {
                        "cron entry"
                    }
                    Role::Own => "init script",
                    Role::Config => "config",
                };
                let r = if i.role == Role::Config && !i.path.exists() {
                    Ok(format!("{} absent: defaults apply", i.path.display()))
                } else {
                    install::file_state(i)
                };
                item(name, r);
            }
        }
        Err(e) => item("installation", Err(e.to_string())),
    }
    let link = layout.wants_link();
    item(
        "systemd enablement",
        match std::fs::read_link(&link) {
            Ok(_) => Ok(format!("{} in place", link.display())),
            Err(_) => Err(format!(
                "{} is missing (run `vzacct install`)",
                link.display()
            )),
        },
    );
    // Netfilter: the tools, then our chains, rules and sets (one read of everything).
    for family in ctx.families() {
        let restore = crate::config::companion(ctx.config.iptables_for(family), "restore");
        item(
            &format!("{family} iptables"),
            match crate::process::run(&restore, &["--version"], None) {
                Ok(_) => Ok(format!("restore usable ({restore})")),
                Err(e) => Err(chain(&e)),
            },
        );
    }
    let kernel = Kernel::read(&ctx.config, &ctx.families(), 0, false);
    if let Err(e) = &kernel {
        item("kernel rules", Err(chain(e)));
    }
    // The ledger, the rules and the running containers.
    let ledger = store::lock(&ctx.config.state_dir, ctx.lock_wait).and_then(|l| l.load());
    match ledger {
        Err(e) => item("ledger", Err(chain(&e))),
        Ok(ledger) => {
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
                                kernel.wanted(&accounted, *family, venet).len(),
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
                    let unusable: Vec<&String> = kernel
                        .sets
                        .iter()
                        .flat_map(|k| k.present.iter().filter(|(_, ok)| !**ok).map(|(n, _)| n))
                        .collect();
                    item(
                        "ipsets",
                        if s.create.is_empty()
                            && s.add.is_empty()
                            && s.del.is_empty()
                            && unusable.is_empty()
                        {
                            Ok("sets and elements in place".into())
                        } else {
                            Err(format!(
                                "{} set(s) missing, {} element(s) missing, {} stray, {} without counters: run `vzacct sync`{}",
                                s.create.len(),
                                s.add.len(),
                                s.del.len(),
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
            item(
                "last dump",
                match &ledger.last_dump {
                    None => Err("no dump has run yet (is the cron entry in place?)".into()),
                    Some(d) => {
                        let age = (ctx.now - d.at).num_seconds();
                        let text = format!(
                            "{} ({age} s ago, took {} ms)",
                            d.at.to_rfc3339(),
                            d.duration_ms
                        );
                        if age > DUMP_MAX_AGE_SECS {
                            Err(format!(
                                "{text}: older than {} minutes",
                                DUMP_MAX_AGE_SECS / 60
                            ))
                        } else {
                            Ok(text)
                        }
                    }
                },
            );
        }
    }
    let problems = items.iter().filter(|i| !i.ok).count();
    let doc = CheckDoc {
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
