//! Command-line interface: argument definitions (their doc comments are the `--help` text)
//! and the dispatch from a parsed command line to the commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Utc};
use clap::{Parser, Subcommand};

use crate::backend::process;
use crate::clock::{self, Zone};
use crate::commands::error::Error;
use crate::commands::hook;
use crate::commands::{self, Ctx};
use crate::config::{self, Config};
use crate::ctid::Ctid;

/// Per-container traffic accounting for OpenVZ hardware nodes.
///
/// vzacct counts every byte each container sends and receives in its own netfilter chains
/// (VZACCT-FORWARD, VZACCT-INPUT, VZACCT-OUTPUT), with the per-IP counters in ipsets or in
/// one rule per IP (`backend` in the config). Every command folds the kernel's counters into
/// the ledger in the state directory first, so nothing counted is lost across IP changes,
/// firewall restarts and reboots; days close into one CSV file per container. The kernel is
/// changed in one batch per address family, and nothing that is not vzacct's is touched.
#[derive(Debug, Parser)]
#[command(name = "vzacct", version)]
pub struct Cli {
    /// Config file (INI). Without it, VZACCT_CONFIG, else /etc/vz/vzacct.conf (a missing
    /// default file means all defaults).
    #[arg(long, global = true, value_name = "PATH", env = "VZACCT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Seconds to wait for another vzacct command to release the state lock [default: 60;
    /// for hooks, hook_lock_timeout of the config].
    #[arg(long, global = true, value_name = "SECONDS")]
    pub lock_timeout: Option<u64>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Account a container's IPs: the ones given, or else those of IP_ADDRESS in its
    /// vzctl config (<conf_dir>/<CTID>.conf). Adding what is already accounted changes
    /// nothing; an IP accounted for another container moves to this one.
    Add {
        /// Container ID: a number 1..2147483644 or an OpenVZ 7 UUID.
        ctid: Ctid,
        /// IPv4 or IPv6 addresses (addr or addr/prefix).
        ips: Vec<String>,
    },
    /// Stop accounting the given IPs of a container, or all of them.
    Remove {
        /// Container ID.
        ctid: Ctid,
        /// The IPs to stop accounting; none means every IP of the container.
        ips: Vec<String>,
    },
    /// Make the kernel match what is accounted: recreate missing rules, chains and jumps,
    /// drop strays and duplicates. When the veinfo file exists, first account exactly its
    /// running containers and their live IPs.
    Sync,
    /// Show the accounted containers with their IPs, and whether their rules are in place.
    /// Set elements a quick stop left for the next dump are counted as waiting, not as
    /// strays. Read-only: takes a shared lock and creates nothing; when iptables cannot be
    /// read it lists what is accounted, says the rules are unknown, and exits 1.
    Status {
        /// One JSON document instead of a table: `backend` (`iptables` or `ipset`),
        /// `backend_fallback` (why `auto` chose per-IP rules, when it had to), `containers[]`
        /// (`ctid`, `in_place`, `ips[]` with `ip`, `rules_expected` and `rules_present`: the
        /// counters of the IP that packets reach), `netfilter[]` (`family`,
        /// `chains_and_jumps_in_place`, `stray_rules`), `sets_missing`, `stray_set_elements`,
        /// `set_elements_waiting_for_dump`, `rules_known` (true). When iptables cannot be
        /// read: `rules_known` false, `error`, and `containers[]` with `ctid` and `ips`.
        #[arg(long)]
        json: bool,
    },
    /// Harvest every rule's counters into the ledger, heal the rules as `sync` does, and
    /// close finished days into the daily CSV files. Cron runs this every 5 minutes.
    Dump,
    /// At boot, before vzctl starts containers: recreate vzacct's chains, jumps and the rules
    /// of every container accounted at the last dump, without duplicating rules a firewall
    /// service already restored. Counters found on rules at the first run of a boot are taken
    /// as the starting point, not counted (they may come from a saved ruleset).
    Restore,
    /// Show each container's traffic: totals since its last reset, today, this month so far,
    /// its billing period (the current one and the previous one), and its quota with what the
    /// current period used of it (`vzacct set --quota`). A period starts at local
    /// midnight of the cycle day (`cycle_day` under [billing], or the container's own, see
    /// `vzacct set`) and ends where the next begins. Live: the kernel's counters are read under a shared lock and nothing is
    /// written (a read-only state dir is fine). When iptables or ipset cannot be read, the
    /// ledger's figures are shown with a note that the counters since the last harvest are
    /// not included. Dates follow `timezone` of the config, never the caller's TZ.
    Show {
        /// Only these containers.
        ctids: Vec<Ctid>,
        /// The figures of one span instead: `current` or `previous` (each container's own
        /// period), `YYYY-MM` (a calendar month) or `FROM..TO` (dates YYYY-MM-DD, TO not
        /// included). From the daily history, which keeps `history_days` under [billing].
        #[arg(long, value_name = "PERIOD")]
        period: Option<crate::ledger::period::Wanted>,
        /// One JSON document with exact integers instead of a table with human units.
        #[arg(long)]
        json: bool,
    },
    /// Change a container's settings (the verb of `vzctl set`). Writes only the ledger.
    #[command(group(clap::ArgGroup::new("setting").required(true).multiple(true)
        .args(["cycle_day", "quota", "quota_direction"])))]
    Set {
        /// Container ID.
        ctid: Ctid,
        /// The day of the month (1 to 28) on which this container's billing periods start,
        /// for anniversary billing; the node's is `cycle_day` under [billing]. It takes
        /// effect at the end of the container's current period: a period begun is never
        /// changed. Setting it again before then replaces the pending change; setting the
        /// day in force cancels it.
        #[arg(long, value_name = "N", value_parser = crate::commands::billing::parse_cycle_day)]
        cycle_day: Option<u8>,
        /// The container's quota per billing period, in IEC or SI units (`500GiB`, `1TB`,
        /// `1.5TiB`), or `none` to take it away (the default: no quota). When a dump finds the
        /// period's figure past one of the node's `thresholds` (percent, under [billing]), it
        /// logs one line and runs `on_threshold`, once per container, threshold and period.
        #[arg(long, value_name = "BYTES|none", value_parser = crate::commands::quota::parse_quota)]
        quota: Option<crate::commands::quota::QuotaArg>,
        /// Which traffic the quota counts: in, out or total (the default for a new quota).
        #[arg(long, value_name = "in|out|total")]
        quota_direction: Option<crate::ledger::quota::Direction>,
    },
    /// A container's traffic per day (the last 30 by default) or per calendar month: in, out
    /// and total, with a bar scaled to the largest row (`#` in, `+` out), as `vnstat -d` and
    /// `-m` print it. The start of each billing period is marked with a line, and so are the
    /// day the period's figure reached the container's quota and, under the title, what the
    /// current period used of it. Live, like
    /// `show`, and read-only. Days come from the daily history (`history_days` under
    /// [billing]); days on which the container was not accounted have no row.
    History {
        /// Container ID.
        ctid: Ctid,
        /// The last N days, today included.
        #[arg(long, value_name = "N", conflicts_with = "months",
              value_parser = clap::value_parser!(u32).range(1..=36600))]
        days: Option<u32>,
        /// The last N calendar months, this one included.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1200))]
        months: Option<u32>,
        /// One JSON document: `{"jsonversion": 2, "ctid": ..., "quota": {...} or null,
        /// "days": [{"date": ..., <figures>}]}` or `"months": [{"month": "YYYY-MM", ...}]`.
        #[arg(long)]
        json: bool,
    },
    /// Called by vzctl's scripts (installed by `vzacct install`), with vzctl's environment:
    /// VEID, VE_CONFFILE (mount), VE_STATE and IP_ADDR (net-add, net-del). Never fails
    /// vzctl: errors go to stderr and the hook log, and the exit status is 0, unless
    /// `strict = yes` under [vzctl]. Waits at most `hook_lock_timeout` seconds for the lock.
    /// With ipset, a hook touches only its container's ledger rows and set elements;
    /// stopping to account an address vzctl no longer routes to venet leaves its elements to
    /// the next dump, which harvests them exactly. Otherwise (an IP another container holds,
    /// a new boot, rules to repair, iptables backend) it runs the full pipeline.
    ///
    /// Whatever goes wrong (a config that cannot be read, iptables hanging on the xtables
    /// lock, the state lock held) a hook writes exactly one line to the hook log (the default
    /// one when the config cannot be read) and one to stderr, and ends within `hook_timeout`
    /// seconds: every program it runs is stopped by then. The init script and unit run the
    /// `restore` (boot) and `dump` (shutdown) events under the same rules.
    Hook {
        /// mount, umount, net-add, net-del (from vzctl), or restore, dump (init script).
        #[arg(value_enum)]
        event: hook::Event,
        /// The log for when the config cannot be read (set by `install --root`).
        #[arg(long, value_name = "PATH", default_value = hook::FALLBACK_LOG, hide = true)]
        fallback_log: PathBuf,
    },
    /// Put vzacct's integration on the node: vps.mount/vps.umount in the CT config dir
    /// (an operator's existing script is kept and run first), wrappers around vzctl 4's
    /// vps-net_add/vps-net_del or OpenVZ 7's vz-net_add/vz-net_del (the originals are kept
    /// and run first), the init script and systemd unit, the cron entry, and a default config
    /// if none exists. Idempotent: run it again after a vzctl upgrade replaced the wrapped
    /// scripts. Never overwrites a file it did not write. Refuses a Proxmox VE node.
    Install {
        /// Install into this directory's standard locations (for tests and packaging).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Take vzacct's integration away again: every file it changed is restored byte for
    /// byte; the ledger and the CSV files stay. vzacct's chains, jumps, rules and sets stay
    /// in the kernel (it says so) unless --purge is given.
    Uninstall {
        /// Uninstall from this directory's standard locations.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Also take vzacct out of the kernel: a final dump first (nothing counted is
        /// lost), then every chain, jump, rule and set of vzacct's is removed, both families.
        #[arg(long)]
        purge: bool,
        /// With --purge: also delete the ledger and the daily CSV files: only vzacct's files in
        /// state_dir and csv_dir (`<CTID>.csv`), and each directory only when nothing else is
        /// left in it.
        #[arg(long, requires = "purge")]
        purge_data: bool,
        /// Leave the config file even when it is unmodified (the package's scriptlets: the
        /// package manager owns it).
        #[arg(long)]
        keep_config: bool,
    },
    /// Rebuild a ledger that is corrupt or lost its node record (boot id, backend): a
    /// database that does not read is moved aside and made anew, a container whose record
    /// was lost is accounted again for the IPs its counters in the kernel carry, every
    /// counter in the kernel is taken as a new starting point (so nothing is counted twice),
    /// and the traffic that may have gone uncounted (at most since the last dump) is
    /// reported.
    Repair,
    /// Check every integration point, one line each: the config the hooks read (missing or
    /// broken is a problem), storage (csv_dir, csv_group, the Prometheus textfile), the vzctl
    /// flavour, hooks, wrappers, init script, unit, cron entry, the boot order (systemd unit
    /// enabled, or the SysV init script enabled before vz), iptables, the backend, the free
    /// networks ([classes]), the ledger, vzacct's chains, rules and sets, running containers
    /// accounted, threshold actions that failed, and the last dump (too old, or in the
    /// future). Exit status 0 only when all is well. Creates nothing.
    Check {
        /// Check this directory's standard locations.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// One JSON document instead of a list: `ok` (all is well) and `items[]`, each with
        /// `name`, `ok` and `detail`, as the list prints them.
        #[arg(long)]
        json: bool,
    },
    /// Run a threshold's action program for a dump (hidden: started by `vzacct dump` in a
    /// process group of its own): within TIMEOUT seconds; the receipt is written when it
    /// exits 0.
    #[command(hide = true)]
    ThresholdRun {
        #[arg(long, value_name = "FILE")]
        receipt: PathBuf,
        #[arg(long, value_name = "SECS")]
        timeout: u64,
        #[arg(last = true, required = true)]
        program: PathBuf,
    },
    /// Set one container's totals (since its last reset) to zero. Its billing period and
    /// what the period used of its quota, its daily history, its CSV rows, every other
    /// container and every kernel counter stay as they are.
    Reset {
        /// Container ID.
        ctid: Ctid,
    },
}

/// Testing aids read from the environment: `VZACCT_NOW` (RFC 3339) replaces the clock and
/// `VZACCT_BOOT_ID_FILE` replaces `/proc/sys/kernel/random/boot_id`.
fn clock_and_boot() -> Result<(DateTime<Utc>, PathBuf), Error> {
    let now = match std::env::var("VZACCT_NOW") {
        Ok(v) => DateTime::parse_from_rfc3339(&v)
            .map_err(|_| {
                Error::Invalid(format!(
                    "VZACCT_NOW={} is not an RFC 3339 time such as 2026-11-29T23:59:00+01:00",
                    crate::ctid::escape_for_message(&v)
                ))
            })?
            .with_timezone(&Utc),
        Err(_) => Utc::now(),
    };
    let boot = std::env::var_os("VZACCT_BOOT_ID_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/sys/kernel/random/boot_id"));
    Ok((now, boot))
}

/// The config path the installed scripts pass to vzacct: absolute and canonical, since vzctl
/// runs them from `/` (a file that does not exist yet is named in its canonical directory).
fn installed_config(explicit: &Option<PathBuf>) -> Result<PathBuf, Error> {
    let p = explicit
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let abs = std::path::absolute(&p).map_err(|e| {
        Error::Invalid(format!(
            "cannot make config path {} absolute: {e}",
            p.display()
        ))
    })?;
    if let Ok(c) = abs.canonicalize() {
        return Ok(c);
    }
    match (
        abs.parent().and_then(|d| d.canonicalize().ok()),
        abs.file_name(),
    ) {
        (Some(dir), Some(name)) => Ok(dir.join(name)),
        _ => Ok(abs),
    }
}

/// The budget of a hook: the per-program limit cut short by the whole hook's deadline, and
/// a watchdog for anything else that could hold it up.
fn start_hook_budget(
    config: &Config,
    started: Instant,
    event: hook::Event,
    env: &hook::HookEnv,
    now: DateTime<FixedOffset>,
) -> Duration {
    let budget = Duration::from_secs(config.hook_timeout);
    // Programs end half a second before the watchdog, so the hook can still report them.
    let programs_by = started + budget.saturating_sub(Duration::from_millis(500));
    process::set_limits(
        Duration::from_secs(config.program_timeout),
        Some(programs_by),
    );
    hook::watchdog(
        started,
        budget,
        event,
        env,
        config.hook_log.clone(),
        config.strict,
        now,
    );
    budget.saturating_sub(Duration::from_secs(1))
}

/// Whether the process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions, cannot fail and does not touch memory.
    unsafe { libc::geteuid() == 0 }
}

/// Run a parsed command line.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Error> {
    let started = Instant::now();
    // The threshold wrapper reads no config: everything it needs is on its command line.
    if let Command::ThresholdRun {
        receipt,
        timeout,
        program,
    } = &cli.command
    {
        return commands::quota::threshold_run(receipt, *timeout, program);
    }
    // Everything but installing into a directory of one's own needs root: the kernel's
    // firewall and the state dir are root's. Say so once, before anything fails on it.
    // Hooks are exempt: they report every failure in their log and never fail vzctl.
    let into_dir = matches!(&cli.command, Command::Install { root } | Command::Uninstall { root, .. } if root != Path::new("/"));
    let hook = matches!(&cli.command, Command::Hook { .. });
    if !into_dir && !hook && !is_root() {
        return Err(Error::Invalid(
            "vzacct must run as root: it reads and changes the kernel's firewall rules and keeps \
             its ledger in a root-only directory"
                .into(),
        ));
    }
    // clap has already folded VZACCT_CONFIG into `config`. With --root, the config is the
    // one inside that root unless one is named.
    let root = match &cli.command {
        Command::Install { root }
        | Command::Uninstall { root, .. }
        | Command::Check { root, .. } => Some(root.clone()),
        _ => None,
    };
    let config_path = match (&cli.config, &root) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(r)) if r != Path::new("/") => Some(r.join("etc/vz/vzacct.conf")),
        _ => None,
    };
    let (utc_now, boot_id_file) = clock_and_boot()?;
    let loaded = match (&config_path, &root) {
        // install writes the config it names when there is none yet.
        (Some(p), Some(_))
            if !p.exists()
                && (cli.config.is_none() || matches!(cli.command, Command::Install { .. })) =>
        {
            Ok(Config::default())
        }
        (p, _) => config::load(p.as_deref()).map_err(Error::from),
    };
    // A config that was read names the hook log, even when its time zone cannot be used.
    let read_log = loaded.as_ref().ok().map(|c| c.hook_log.clone());
    let loaded = loaded.and_then(|c| {
        let tz = Zone::load(
            c.timezone.as_deref(),
            Path::new(clock::ZONEINFO),
            Path::new(clock::LOCALTIME),
        )
        .map_err(|source| Error::Timezone {
            path: (config_path.clone()).unwrap_or_else(|| config::DEFAULT_PATH.into()),
            value: (c.timezone.clone())
                .unwrap_or_else(|| "(unset: the system's /etc/localtime)".into()),
            source,
        })?;
        Ok((c, tz))
    });
    // A config that cannot be read: a hook logs it and lets vzctl go on; check reports it
    // among everything else; any other command stops here.
    let (config, tz, config_error) = match (loaded, &cli.command) {
        (Ok((c, tz)), _) => (c, tz, None),
        (
            Err(e),
            Command::Hook {
                event,
                fallback_log,
            },
        ) => {
            let env = hook::HookEnv::from_process();
            let now = Zone::utc().at(utc_now);
            let log = read_log.as_deref().unwrap_or(fallback_log);
            hook::config_failed(*event, &env, log, now, &e, err);
            return Ok(());
        }
        (Err(e), Command::Check { .. }) => (Config::default(), Zone::utc(), Some(e)),
        (Err(e), _) => return Err(e),
    };
    let now = tz.at(utc_now);
    process::set_limits(Duration::from_secs(config.program_timeout), None);
    let lock_wait = match (&cli.command, cli.lock_timeout) {
        (Command::Hook { event, .. }, lock) => {
            let env = hook::HookEnv::from_process();
            let left = start_hook_budget(&config, started, *event, &env, now);
            Duration::from_secs(lock.unwrap_or(config.hook_lock_timeout)).min(left)
        }
        (_, Some(s)) => Duration::from_secs(s),
        (_, None) => Duration::from_secs(60),
    };
    let mut ctx = Ctx {
        config,
        lock_wait,
        now,
        boot_id_file,
        tz,
        clock_fixed: std::env::var_os("VZACCT_NOW").is_some(),
        out,
        err,
    };
    match &cli.command {
        Command::Add { ctid, ips } => commands::change::add(&mut ctx, ctid, ips),
        Command::Remove { ctid, ips } => commands::change::remove(&mut ctx, ctid, ips),
        Command::Sync => commands::change::sync(&mut ctx),
        Command::Status { json } => commands::view::status(&mut ctx, *json),
        Command::Dump => commands::change::dump(&mut ctx),
        Command::Restore => commands::change::restore(&mut ctx),
        Command::Show {
            ctids,
            period,
            json,
        } => commands::view::show(&mut ctx, ctids, *period, *json),
        Command::Set {
            ctid,
            cycle_day,
            quota,
            quota_direction,
        } => commands::billing::set(&mut ctx, ctid, *cycle_day, *quota, *quota_direction),
        Command::ThresholdRun { .. } => unreachable!("run before the config is read"),
        Command::History {
            ctid,
            days,
            months,
            json,
        } => {
            let per = match (days, months) {
                (_, Some(m)) => commands::billing::Per::Months(*m),
                (d, None) => commands::billing::Per::Days(d.unwrap_or(30)),
            };
            commands::billing::history(&mut ctx, ctid, per, *json)
        }
        Command::Reset { ctid } => commands::change::reset(&mut ctx, ctid),
        Command::Repair => commands::change::repair(&mut ctx),
        Command::Install { root } => {
            let l = commands::node::layout(&ctx, root, &installed_config(&config_path)?)?;
            commands::node::install_cmd(&mut ctx, &l)
        }
        Command::Uninstall {
            root,
            purge,
            purge_data,
            keep_config,
        } => {
            let l = commands::node::layout(&ctx, root, &installed_config(&config_path)?)?;
            commands::node::uninstall_cmd(&mut ctx, &l, *purge, *purge_data, *keep_config)
        }
        Command::Check { root, json } => {
            let l = commands::node::layout(&ctx, root, &installed_config(&config_path)?)?;
            commands::node::check(&mut ctx, &l, *json, config_error.as_ref())
        }
        Command::Hook { event, .. } => {
            hook::run_logged(&mut ctx, *event, &hook::HookEnv::from_process())
        }
    }
}
