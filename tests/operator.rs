//! What an operator can get wrong, and what vzacct does about it: every installed script
//! under a broken, missing or unreadable config, a held xtables lock and a hanging
//! iptables-restore (exit 0 within the budget, exactly one log line); relative and
//! differently spelled paths; uninstall and purge; false strays; views on a read-only or
//! missing state dir and without iptables; CSV for a billing collector; the time zone;
//! unsafe directories; and `repair` after a lost node file. Real iptables (legacy and nft),
//! real packets, each test in its own network namespaces.

mod common;

use common::*;
use serde_json::Value;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const VZCTL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SCRIPTS: &str = "usr/libexec/vzctl/scripts";
/// `hook_timeout` of the tests' configs.
const BUDGET: u64 = 3;
const CTS: &[(&str, &str, &str)] = &[("101", "10.0.0.1", "2001:db8:1::1")];

fn write_exec(path: &Path, text: &str) {
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake root with vzctl's network scripts and a container config, vzacct installed in it.
struct Site<'a> {
    node: &'a Node,
    root: PathBuf,
    /// The config the installed scripts pass with --config.
    config: PathBuf,
    /// Its good content.
    good: String,
}

impl<'a> Site<'a> {
    fn new(node: &'a Node) -> Site<'a> {
        let root = node.path("root");
        for name in ["vps-net_add", "vps-net_del"] {
            write_exec(&root.join(SCRIPTS).join(name), "#!/bin/sh\nexit 0\n");
        }
        write(
            &root.join("etc/vz/conf/101.conf"),
            "IP_ADDRESS=\"10.0.0.1\"\n",
        );
        let d = node.dir.path().display().to_string();
        let good = format!(
            "[vzctl]\nconf_dir = {r}/etc/vz/conf\nveinfo = {d}/veinfo\nhook_log = {d}/log/hook.log\n\
             hook_timeout = {BUDGET}\nhook_lock_timeout = 1\n\
             [netfilter]\niptables = {}\nip6tables = {}\nbackend = {}\n\
             [storage]\nstate_dir = {d}/state\ncsv_dir = {d}/csv\ntimezone = UTC\n",
            node.variant.iptables(false),
            node.variant.iptables(true),
            node.variant.backend(),
            r = root.display(),
        );
        let config = root.join("etc/vz/vzacct.conf");
        write(&config, &good);
        write(&node.config, &good);
        // The scripts run with vzctl's bare environment and read the real boot id.
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        write(&node.path("boot_id"), boot);
        let site = Site {
            node,
            root,
            config,
            good,
        };
        let out = site.vzacct_root(&["install"]);
        assert!(out.status.success(), "install: {}", stderr(&out));
        site
    }

    fn vzacct_root(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--root", self.root.to_str().unwrap()]);
        self.node.ns.run(env!("CARGO_BIN_EXE_vzacct"), &full)
    }

    fn hook_log(&self) -> PathBuf {
        self.node.path("log/hook.log")
    }

    /// Where a hook logs when it cannot read its config.
    fn fallback_log(&self) -> PathBuf {
        self.root.join("var/log/vzacct/hook.log")
    }

    /// The installed scripts, with the environment vzctl (or init) gives each.
    fn scripts(&self) -> Vec<(String, PathBuf, Vec<String>)> {
        let conf = self.root.join("etc/vz/conf");
        let ve_conffile = format!("VE_CONFFILE={}", conf.join("101.conf").display());
        let net = |state: &str| {
            vec![
                "VEID=101".to_string(),
                format!("VE_STATE={state}"),
                "IP_ADDR=10.0.0.1".to_string(),
            ]
        };
        vec![
            (
                "vps.mount".into(),
                conf.join("vps.mount"),
                vec!["VEID=101".into(), ve_conffile],
            ),
            (
                "vps-net_add".into(),
                self.root.join(SCRIPTS).join("vps-net_add"),
                net("starting"),
            ),
            (
                "vps-net_del".into(),
                self.root.join(SCRIPTS).join("vps-net_del"),
                net("stopping"),
            ),
            (
                "vps.umount".into(),
                conf.join("vps.umount"),
                vec!["VEID=101".into()],
            ),
            (
                "init start".into(),
                self.root.join("etc/init.d/vzacct"),
                vec![],
            ),
            (
                "init stop".into(),
                self.root.join("etc/init.d/vzacct"),
                vec![],
            ),
        ]
    }

    /// Run one script as vzctl (or init) does: `env -i` with only its variables, stdin
    /// from /dev/null, in the node's namespace; `hold_lock`: while another program holds
    /// the xtables lock, in a mount namespace with a private /run so the host's lock is
    /// never touched.
    fn run(&self, path: &Path, env: &[String], arg: Option<&str>, hold_lock: bool) -> Output {
        let mut inner = format!("env -i HOME=/ TERM=linux PATH={VZCTL_PATH}");
        for e in env {
            inner.push(' ');
            inner.push_str(e);
        }
        inner.push_str(&format!(" {}", path.display()));
        if let Some(a) = arg {
            inner.push_str(&format!(" {a}"));
        }
        // The script's stderr goes to a file: the shell that ends the lock holder may say so.
        let errfile = self.node.path("script.stderr");
        let script = if hold_lock {
            format!(
                "mount -t tmpfs tmpfs /run && flock --no-fork /run/xtables.lock sleep 60 & h=$!; \
                 sleep 0.3; {inner} 2>{e}; rc=$?; kill $h; wait $h; exit $rc",
                e = errfile.display()
            )
        } else {
            format!("exec {inner} 2>{}", errfile.display())
        };
        let mut out = Command::new("ip")
            .args(["netns", "exec", &self.node.ns.name])
            .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        out.stderr = std::fs::read(&errfile).unwrap_or_default();
        out
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The five things that went wrong on nodes, each against every installed script.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trouble {
    UnknownKey,
    MissingConfig,
    ConfigIsADirectory,
    XtablesLockHeld,
    RestoreNeverExits,
}

/// Every installed script exits 0 within the hook budget and logs exactly one line, one
/// line on stderr at most (exactly one for an error), whatever of `Trouble` is the case.
fn hooks_never_fail_and_never_hang(v: Variant) {
    for trouble in [
        Trouble::UnknownKey,
        Trouble::MissingConfig,
        Trouble::ConfigIsADirectory,
        Trouble::XtablesLockHeld,
        Trouble::RestoreNeverExits,
    ] {
        let node = Node::new(v);
        let site = Site::new(&node);
        let d = node.dir.path().display().to_string();
        // A duration no other test uses, to find our hanging programs among all processes.
        let hang = format!(
            "600.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        match trouble {
            // strict = yes in a config that cannot be read must not apply.
            Trouble::UnknownKey => write(
                &site.config,
                site.good
                    .replace("[vzctl]\n", "[vzctl]\nstrict = yes\n")
                    .replace("[storage]\n", "[storage]\nstate_dri = /x\n"),
            ),
            Trouble::MissingConfig => std::fs::remove_file(&site.config).unwrap(),
            Trouble::ConfigIsADirectory => {
                std::fs::remove_file(&site.config).unwrap();
                std::fs::create_dir(&site.config).unwrap();
            }
            Trouble::XtablesLockHeld => {}
            Trouble::RestoreNeverExits => {
                // iptables-save is the real one; iptables-restore never ends, and neither
                // does the child it starts.
                let real = v.iptables(false);
                write_exec(
                    &node.path(&format!("fake/{real}-save")),
                    &format!("#!/bin/sh\nexec {real}-save \"$@\"\n"),
                );
                write_exec(
                    &node.path(&format!("fake/{real}-restore")),
                    &format!("#!/bin/sh\nsleep {hang} &\nexec sleep {hang}\n"),
                );
                write(
                    &site.config,
                    site.good.replace(
                        &format!("iptables = {real}\n"),
                        &format!("iptables = {d}/fake/{real}\n"),
                    ),
                );
            }
        }
        let config_broken = matches!(
            trouble,
            Trouble::UnknownKey | Trouble::MissingConfig | Trouble::ConfigIsADirectory
        );
        let log = if config_broken {
            site.fallback_log()
        } else {
            site.hook_log()
        };
        let mut errors = Vec::new();
        for (name, path, env) in site.scripts() {
            let arg = match name.as_str() {
                "init start" => Some("start"),
                "init stop" => Some("stop"),
                _ => None,
            };
            let before = lines(&log).len();
            let started = Instant::now();
            let out = site.run(&path, &env, arg, trouble == Trouble::XtablesLockHeld);
            let took = started.elapsed();
            let what = format!("{v:?} {trouble:?} {name}");
            assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
            assert!(
                took < Duration::from_secs(BUDGET + 2),
                "{what} took {took:?}, budget {BUDGET} s"
            );
            let after = lines(&log);
            assert_eq!(
                after.len(),
                before + 1,
                "{what}: log {} has {:?}",
                log.display(),
                &after[before..]
            );
            let line = after[before].clone();
            let is_error = line.contains(" error: ");
            assert!(is_error || line.contains(" ok: "), "{what}: {line}");
            let err_lines = stderr(&out).lines().count();
            assert_eq!(
                err_lines,
                usize::from(is_error),
                "{what}: stderr {}",
                stderr(&out)
            );
            if config_broken {
                assert!(is_error, "{what}: {line}");
                assert!(
                    line.contains(&site.config.display().to_string()),
                    "{what}: {line}"
                );
            }
            if is_error {
                errors.push((name.clone(), line));
            }
        }
        // What the operator reads: for each trouble, the cause named.
        let all: String = errors.iter().map(|(_, l)| format!("{l}\n")).collect();
        match trouble {
            Trouble::UnknownKey => assert!(all.contains("state_dri"), "{all}"),
            Trouble::MissingConfig => assert!(all.contains("No such file"), "{all}"),
            Trouble::ConfigIsADirectory => assert!(all.contains("directory"), "{all}"),
            Trouble::XtablesLockHeld => {
                // nf_tables takes no xtables lock: nothing to wait for there.
                if matches!(v, Variant::Legacy | Variant::LegacyIpset) {
                    // The first hook that changes the kernel (mount only reads the config).
                    let add = &errors
                        .iter()
                        .find(|(n, _)| n == "vps-net_add")
                        .unwrap_or_else(|| panic!("vps-net_add did not fail: {all}"))
                        .1;
                    assert!(add.contains("xtables lock"), "{add}");
                } else {
                    assert!(errors.is_empty(), "{all}");
                }
            }
            Trouble::RestoreNeverExits => {
                let add = &errors
                    .iter()
                    .find(|(n, _)| n == "vps-net_add")
                    .unwrap_or_else(|| panic!("vps-net_add did not fail: {all}"))
                    .1;
                assert!(
                    add.contains("-restore")
                        && (add.contains("did not finish within")
                            || add.contains("time budget is used up")),
                    "{add}"
                );
            }
        }
        // `check` names a broken config as a problem.
        if config_broken {
            let out = site.vzacct_root(&["check"]);
            assert_eq!(out.status.code(), Some(1), "{v:?} {trouble:?}");
            let text = stdout(&out);
            let line = text
                .lines()
                .find(|l| l.contains(" config "))
                .unwrap_or_else(|| panic!("no config item: {text}"));
            assert!(line.starts_with("FAIL config "), "{line}");
        }
        // No program was left running: nothing of ours sleeps on.
        let ps = must("ps", &["-eo", "args"]);
        let mine = format!("sleep {hang}");
        assert!(!ps.lines().any(|l| l.trim() == mine), "{mine} still runs");
    }
}

/// A relative `--config` or `VZACCT_CONFIG` is written into the installed files as the
/// absolute, canonical path (vzctl runs them from `/`).
#[test]
fn relative_config_paths_are_made_absolute() {
    let node = Node::new(Variant::Nft);
    let root = node.path("root");
    write_exec(&root.join(SCRIPTS).join("vps-net_add"), "#!/bin/sh\n");
    write_exec(&root.join(SCRIPTS).join("vps-net_del"), "#!/bin/sh\n");
    std::fs::create_dir_all(node.path("etc")).unwrap();
    let canonical = node.dir.path().canonicalize().unwrap().join("etc/my.conf");
    for via_env in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vzacct"));
        cmd.current_dir(node.path("etc"))
            .env_remove("VZACCT_CONFIG");
        if via_env {
            cmd.env("VZACCT_CONFIG", "../etc/./my.conf");
        } else {
            cmd.args(["--config", "../etc/./my.conf"]);
        }
        let out = cmd
            .args(["install", "--root", root.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        for f in [
            "etc/vz/conf/vps.mount",
            "etc/init.d/vzacct",
            "etc/cron.d/vzacct",
            "etc/systemd/system/vzacct.service",
            &format!("{SCRIPTS}/vps-net_add"),
        ] {
            let text = std::fs::read_to_string(root.join(f)).unwrap();
            assert!(
                text.contains(&format!("'{}'", canonical.display())),
                "{f}:\n{text}"
            );
            assert!(!text.contains("../etc"), "{f}:\n{text}");
        }
        assert!(canonical.exists(), "the default config is written there");
    }
}

/// `check` accepts installed files that name the same binary and config by another
/// spelling (a symlinked directory, `..`), and only then: a really different path is
/// outdated.
#[test]
fn check_compares_canonical_paths() {
    let node = Node::new(Variant::Nft);
    let site = Site::new(&node);
    let mount = site.root.join("etc/vz/conf/vps.mount");
    let text = std::fs::read_to_string(&mount).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_vzacct"))
        .canonicalize()
        .unwrap();
    let link = node.path("bin-link");
    std::os::unix::fs::symlink(exe.parent().unwrap(), &link).unwrap();
    let config = site.config.display().to_string();
    let other = text
        .replace(
            &exe.display().to_string(),
            &link.join(exe.file_name().unwrap()).display().to_string(),
        )
        .replace(&config, &config.replace("/etc/vz/", "/etc/vz/../vz/"));
    assert_ne!(other, text);
    write_exec(&mount, &other);
    let item = |out: &Output| {
        stdout(out)
            .lines()
            .find(|l| l.contains(&mount.display().to_string()))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let out = site.vzacct_root(&["check"]);
    assert!(
        item(&out).starts_with("ok   action script"),
        "{}",
        stdout(&out)
    );
    write_exec(&mount, &text.replace(&config, "/etc/vz/other.conf"));
    let out = site.vzacct_root(&["check"]);
    assert!(
        item(&out).starts_with("FAIL action script") && item(&out).contains("outdated"),
        "{}",
        stdout(&out)
    );
}

fn show(node: &Node) -> Value {
    serde_json::from_str(&node.ok(&["show", "--json"])).unwrap()
}

fn total(node: &Node, ctid: &str) -> F {
    F::of(&ct_of(&show(node), ctid)["total"])
}

/// world -> CT datagrams and CT -> world, both families.
fn traffic(node: &Node, payload: usize, n: usize) -> F {
    let c = node.ct("101");
    let mut f = F::default();
    for (src, dst) in [
        (WORLD_V4.parse::<IpAddr>().unwrap(), c.v4),
        (WORLD_V6.parse().unwrap(), c.v6),
    ] {
        send_udp(node.world(), src, &c.ns, dst, payload, n);
        f = f.add(F::inb(n as u64 * udp_ip_len(dst, payload), n as u64));
        send_udp(&c.ns, dst, node.world(), src, payload, n);
        f = f.add(F::outb(n as u64 * udp_ip_len(dst, payload), n as u64));
    }
    f
}

/// `uninstall` says what stays in the kernel; `uninstall --purge` harvests it first (the
/// ledger ends exact), then removes every chain, jump, rule and set, both families;
/// `--purge-data` deletes the ledger and the CSV.
fn uninstall_and_purge(v: Variant) {
    let node = Node::with_topology(v, CTS);
    let site = Site::new(&node);
    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    let a = traffic(&node, 100, 2);
    node.ok(&["dump"]);
    assert_eq!(ct_of(&show(&node), "101").get("uncounted_ips"), None);
    let b = traffic(&node, 200, 3);
    let out = site.vzacct_root(&["uninstall"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("still in the kernel, and counting: ")
            && text.contains("`vzacct uninstall --purge` harvests them"),
        "{text}"
    );
    assert_eq!(node.entries("101", false), 4);
    let out = site.vzacct_root(&["install"]);
    assert!(out.status.success());
    let out = site.vzacct_root(&["uninstall", "--purge"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "harvested {} bytes in / {} bytes out",
            b.0[0], b.0[1]
        )),
        "{text}"
    );
    assert!(
        text.contains("IPv4: removed 3 jump(s) and 4 chain(s)"),
        "{text}"
    );
    assert!(
        text.contains("IPv6: removed 3 jump(s) and 4 chain(s)"),
        "{text}"
    );
    assert_eq!(total(&node, "101"), a.add(b));
    for v6 in [false, true] {
        assert_eq!(node.ours(v6), Vec::<String>::new());
    }
    // The ledger still accounts 101 (a `sync` would resume), but nothing counts: the views
    // say so.
    assert_eq!(
        ct_of(&show(&node), "101")["uncounted_ips"],
        serde_json::json!(["10.0.0.1", "2001:db8:1::1"])
    );
    let note = "note: 101 (10.0.0.1, 2001:db8:1::1): accounted, but not all of their counters \
                are in the kernel, so their traffic is not all counted now (`vzacct status` \
                shows which; `vzacct sync` or the next dump puts them back)";
    for view in [&["show"][..], &["history", "101"]] {
        let text = node.ok(view);
        assert!(text.lines().any(|l| l == note), "{view:?}:\n{text}");
    }
    let sets = node.ns.must("ipset", &["list", "-n"]);
    assert!(!sets.contains("vzacct-"), "{sets}");
    // Again: nothing left, nothing fails; the data goes, and only vzacct's (the CSV
    // directory may be shared).
    write(&node.path("csv/other-app.log"), "not vzacct's\n");
    write(&node.path("csv/101.csv"), "date,ctid\n");
    let out = site.vzacct_root(&["uninstall", "--purge", "--purge-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("deleted     {}\n", node.path("state").display()))
            && text.contains(&format!(
                "kept        {} without vzacct's files (it holds others: other-app.log)\n",
                node.path("csv").display()
            )),
        "{text}"
    );
    assert!(!node.path("state").exists());
    let left: Vec<_> = std::fs::read_dir(node.path("csv"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["other-app.log"]);
}

/// `status --json`: per IP of 101, how many of its counters packets reach, of how many.
fn reached(node: &Node) -> Vec<(String, u64, u64)> {
    let s: Value = serde_json::from_str(&node.ok(&["status", "--json"])).unwrap();
    let ct = s["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ctid"] == "101")
        .unwrap();
    ct["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let n = |k: &str| i[k].as_u64().unwrap();
            (
                i["ip"].as_str().unwrap().to_string(),
                n("rules_present"),
                n("rules_expected"),
            )
        })
        .collect()
}

/// A rule or element that no packet reaches counts nothing: with vzacct's jump gone from
/// FORWARD (either backend), or the rule matching a set gone (ipset), `status` and `show` name
/// the IPs not all counted; a `sync` puts it right.
fn views_see_counters_no_packet_reaches(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    let (v4, v6) = ("10.0.0.1".to_string(), "2001:db8:1::1".to_string());
    assert_eq!(reached(&node), [(v4.clone(), 4, 4), (v6.clone(), 4, 4)]);
    node.ipt(false, &["-D", "FORWARD", "-j", "VZACCT-FORWARD"]);
    assert_eq!(reached(&node), [(v4.clone(), 2, 4), (v6.clone(), 4, 4)]);
    assert_eq!(
        ct_of(&show(&node), "101")["uncounted_ips"],
        serde_json::json!(["10.0.0.1"])
    );
    node.ok(&["sync"]);
    if v.ipset() {
        // The one rule of VZACCT-OUTPUT with sets: the one matching vzacct-li6.
        node.ipt(true, &["-D", "VZACCT-OUTPUT", "1"]);
        assert_eq!(reached(&node), [(v4.clone(), 4, 4), (v6.clone(), 3, 4)]);
        assert_eq!(
            ct_of(&show(&node), "101")["uncounted_ips"],
            serde_json::json!(["2001:db8:1::1"])
        );
        node.ok(&["sync"]);
    }
    assert_eq!(reached(&node), [(v4.clone(), 4, 4), (v6.clone(), 4, 4)]);
    assert_eq!(ct_of(&show(&node), "101").get("uncounted_ips"), None);
    // One counter of one IP gone (its set element, or its rule in a flushed chain).
    if v.ipset() {
        node.ns
            .must("ipset", &["del", "vzacct-lo6", "2001:db8:1::1"]);
    } else {
        node.ipt(true, &["-F", "VZACCT-INPUT"]);
    }
    assert_eq!(reached(&node), [(v4.clone(), 4, 4), (v6.clone(), 3, 4)]);
    assert_eq!(
        ct_of(&show(&node), "101")["uncounted_ips"],
        serde_json::json!(["2001:db8:1::1"])
    );
    node.ok(&["sync"]);
    assert_eq!(reached(&node), [(v4, 4, 4), (v6, 4, 4)]);
    assert_eq!(ct_of(&show(&node), "101").get("uncounted_ips"), None);
}

/// Elements a quick umount/net-del left for the next dump are not strays: status and
/// check say they wait for the dump, and the init script's status is 0.
fn parked_elements_are_not_strays(v: Variant) {
    let node = Node::with_topology(v, CTS);
    let site = Site::new(&node);
    for level in ['2', '3', '4', '5'] {
        let dir = site.root.join(format!("etc/rc.d/rc{level}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("../init.d/vzacct", dir.join("S95vzacct")).unwrap();
    }
    let scripts = site.scripts();
    let run = |name: &str| {
        let (_, path, env) = scripts.iter().find(|(n, _, _)| n == name).unwrap();
        let out = site.run(path, env, None, false);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    };
    run("vps.mount");
    run("vps-net_add");
    // The config has only the IPv4 address.
    let c = node.ct("101");
    let world: IpAddr = WORLD_V4.parse().unwrap();
    send_udp(node.world(), world, &c.ns, c.v4, 100, 2);
    send_udp(&c.ns, c.v4, node.world(), world, 100, 2);
    let sent = F::inb(2 * udp_ip_len(c.v4, 100), 2).add(F::outb(2 * udp_ip_len(c.v4, 100), 2));
    node.ok(&["dump"]);
    // vzctl stop: vps-net_del after the route is gone, then the umount scripts.
    node.ns.ip("route del 10.0.0.1/32 dev venet0");
    node.ns.ip("-6 route del 2001:db8:1::1/128 dev venet0");
    run("vps-net_del");
    run("vps.umount");
    assert_eq!(node.entries("101", false), 4, "left for the next dump");
    let status: Value = serde_json::from_str(&node.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["stray_set_elements"], 0, "{status}");
    assert_eq!(status["set_elements_waiting_for_dump"], 4, "{status}");
    let text = node.ok(&["status"]);
    assert!(
        text.ends_with("0 container(s) accounted, 0 with rules missing\n"),
        "{text:?}"
    );
    assert!(
        text.contains("ipset: 0 set(s) missing, 0 stray element(s), 4 waiting for the next dump"),
        "{text}"
    );
    let out = site.vzacct_root(&["check"]);
    assert!(
        stdout(&out).contains("ok   ipsets                 sets and elements in place; 4 element(s) of stopped containers waiting for the next dump"),
        "{}",
        stdout(&out)
    );
    let init = site.root.join("etc/init.d/vzacct");
    let out = site.run(&init, &[], Some("status"), false);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    node.ok(&["dump"]);
    assert_eq!(node.entries("101", false), 0);
    assert_eq!(total(&node, "101"), sent);
}

mod ipset_only {
    #[test]
    fn legacy_ipset() {
        super::parked_elements_are_not_strays(super::Variant::LegacyIpset)
    }
    #[test]
    fn nft_ipset() {
        super::parked_elements_are_not_strays(super::Variant::NftIpset)
    }
}

/// `check` prints one line per item, a cause chain folded in; a last dump in the future is
/// a problem.
#[test]
fn check_lines_and_a_dump_in_the_future() {
    let node = Node::new(Variant::Nft);
    let site = Site::new(&node);
    node.at("2026-12-02T12:00:00Z", &["dump"]);
    let out = node.vzacct_env(
        &["check", "--root", site.root.to_str().unwrap()],
        &[("VZACCT_NOW", "2026-12-01T12:00:00Z")],
    );
    assert!(
        stdout(&out).contains(
            "FAIL last dump              2026-12-02T12:00:00Z lies 86400 s in the future"
        ),
        "{}",
        stdout(&out)
    );
    // Ten minutes later: how long ago, and what its duration covers.
    let out = node.vzacct_env(
        &["check", "--root", site.root.to_str().unwrap()],
        &[("VZACCT_NOW", "2026-12-02T12:10:00Z")],
    );
    let line = stdout(&out)
        .lines()
        .find(|l| l.contains("last dump"))
        .unwrap()
        .to_string();
    let ms = line
        .strip_prefix("ok   last dump              2026-12-02T12:00:00Z (600 s ago; its read and harvest took ")
        .and_then(|r| r.strip_suffix(" ms)"))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(ms.parse::<u64>().is_ok(), "{line}");
    std::fs::remove_file(&site.config).unwrap();
    std::fs::create_dir(&site.config).unwrap();
    let text = stdout(&site.vzacct_root(&["check"]));
    let out = site.vzacct_root(&["check", "--json"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let items = doc["items"].as_array().unwrap();
    assert_eq!(text.lines().count(), items.len(), "{text}");
    assert!(
        text.lines().next().unwrap().starts_with(&format!(
            "FAIL config                 cannot read config file {}; caused by: Is a directory",
            site.config.display()
        )),
        "{text}"
    );
}

/// A time zone that cannot be loaded: the error names the config file and the key, and a
/// hook logs it in the config's own hook log, not the fallback.
#[test]
fn a_bad_time_zone_is_named_and_logged_where_configured() {
    let node = Node::new(Variant::Nft);
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    write(
        &node.config,
        cfg.replace("timezone = UTC\n", "timezone = Europe/Berln\n"),
    );
    let what = format!(
        "config file {}: [storage] timezone = Europe/Berln cannot be used",
        node.config.display()
    );
    let out = node.vzacct(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "vzacct: error: {what}\n  caused by: cannot read time zone file"
        )),
        "{}",
        stderr(&out)
    );
    let fallback = node.path("fallback.log");
    let out = node.vzacct_env(
        &[
            "hook",
            "umount",
            "--fallback-log",
            fallback.to_str().unwrap(),
        ],
        &[("VEID", "101")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(node.path("hook.log")).unwrap();
    assert!(
        log.lines()
            .last()
            .unwrap()
            .contains(&format!(" umount ct=101 error: {what}; caused by: ")),
        "{log}"
    );
    assert!(!fallback.exists());
}

/// Run `args` in the node with the state dir mounted read-only.
fn read_only(node: &Node, args: &str) -> Output {
    let state = node.path("state");
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {s} {s} && mount -o remount,bind,ro {s} && exec ip netns exec {ns} env \
             VZACCT_BOOT_ID_FILE={b} {exe} --config {c} {args}",
            s = state.display(),
            ns = node.ns.name,
            b = node.path("boot_id").display(),
            exe = env!("CARGO_BIN_EXE_vzacct"),
            c = node.config.display(),
        ))
        .output()
        .unwrap()
}

/// show, status and check work on a read-only state dir, and create nothing where vzacct
/// was never set up; without iptables, show gives the ledger's figures and says so.
fn views_under_degraded_conditions(v: Variant) {
    let node = Node::with_topology(v, CTS);
    // Never set up: nothing is created by looking.
    let out = node.vzacct(&["show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "no container is accounted yet: `vzacct add CTID` accounts one (its IP_ADDRESS), \
         `vzacct sync` every running one, and the installed hooks do it as containers start\n"
    );
    assert!(
        node.ok(&["status"])
            .ends_with("0 container(s) accounted, 0 with rules missing\n")
    );
    let _ = node.vzacct(&["check", "--root", node.path("nowhere").to_str().unwrap()]);
    assert!(!node.path("state").exists(), "a view created the state dir");

    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    let a = traffic(&node, 100, 2);
    node.ok(&["dump"]);
    let b = traffic(&node, 300, 1);
    // Read-only state dir: live figures all the same.
    let out = read_only(&node, "show --json");
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(F::of(&ct_of(&doc, "101")["total"]), a.add(b));
    assert_eq!(doc["live"], true);
    let out = read_only(&node, "status");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 container(s) accounted, 0 with rules missing"));
    let out = read_only(&node, "check --root /nonexistent");
    assert!(
        stdout(&out).contains("ok   ledger                 1 container(s) accounted"),
        "{}",
        stdout(&out)
    );
    // iptables gone: the ledger's figures, and the truth about them.
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    write(
        &node.config,
        cfg.replace(
            &format!("iptables = {}\n", v.iptables(false)),
            "iptables = /nonexistent/iptables\n",
        ),
    );
    let out = node.vzacct(&["show", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(F::of(&ct_of(&doc, "101")["total"]), a);
    assert_eq!(doc["live"], false);
    let why = doc["not_live_because"].as_str().unwrap();
    assert!(
        why.starts_with("the kernel's counters since the last harvest (last dump at ")
            && why.contains("/nonexistent/iptables-save"),
        "{why}"
    );
    let text = node.ok(&["show"]);
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("note: the kernel's counters since the last harvest"),
        "{text}"
    );
    let out = node.vzacct(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("101                                    10.0.0.1                                 unknown"),
        "{}",
        stdout(&out)
    );
    // With --json, JSON all the same: what is accounted, and why the rules are unknown.
    let out = node.vzacct(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["rules_known"], false);
    assert_eq!(
        doc["containers"],
        serde_json::json!([{"ctid": "101", "ips": ["10.0.0.1", "2001:db8:1::1"]}])
    );
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/iptables-save"),
        "{doc}"
    );
    write(&node.config, cfg);
    node.ok(&["dump"]);
    assert_eq!(total(&node, "101"), a.add(b));
    // The ledger gone while the kernel still counts: the views say what they can, no
    // internal error (the counters are a starting point, nothing credited).
    std::fs::rename(node.path("state"), node.path("state.away")).unwrap();
    let doc = show(&node);
    assert_eq!(F::of(&ct_of(&doc, "101")["total"]), F::default());
    assert_eq!(ct_of(&doc, "101")["ips"], serde_json::json!([]));
    assert!(
        node.ok(&["history", "101"])
            .ends_with("no traffic recorded in this span\n"),
        "{}",
        node.ok(&["history", "101"])
    );
    assert!(!node.path("state").exists(), "a view created the state dir");
}

/// csv_mode and csv_group let a collector outside root read the daily CSV; the day ends at
/// midnight of `timezone`, whatever TZ the caller has; JSON gives the zone and its offset.
#[test]
fn csv_for_a_billing_collector_and_the_time_zone() {
    let node = Node::new(Variant::Nft);
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    write(
        &node.config,
        cfg.replace(
            "timezone = UTC\n",
            "timezone = Europe/Berlin\ncsv_mode = 0640\ncsv_group = 4242\n",
        ),
    );
    let run = |now: &str, tz: &str, args: &[&str]| {
        let out = node.vzacct_env(args, &[("VZACCT_NOW", now), ("TZ", tz)]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    run(
        "2026-11-29T10:00:00Z",
        "America/New_York",
        &["add", "101", "10.0.0.1"],
    );
    let doc: Value = serde_json::from_str(&run(
        "2026-11-29T10:00:00Z",
        "Asia/Tokyo",
        &["show", "--json"],
    ))
    .unwrap();
    assert_eq!(doc["date"], "2026-11-29");
    assert_eq!(doc["timezone"], "Europe/Berlin");
    assert_eq!(doc["utc_offset"], "+01:00");
    assert_eq!(
        ct_of(&doc, "101")["total_since"],
        "2026-11-29T11:00:00+01:00"
    );
    // 23:30 UTC is already the 30th in Berlin: the 29th closes, whatever the caller's TZ.
    run("2026-11-29T23:30:00Z", "America/New_York", &["dump"]);
    let csv = node.path("csv/101.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        text.lines().nth(1).unwrap().split(',').next(),
        Some("2026-11-29")
    );
    let meta = std::fs::metadata(&csv).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o640, 4242));
    let dir = std::fs::metadata(node.path("csv")).unwrap();
    assert_eq!((dir.mode() & 0o777, dir.gid()), (0o750, 4242));
    let read = |gid: &str| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", gid, "--clear-groups", "cat"])
            .arg(&csv)
            .output()
            .unwrap()
    };
    let out = read("4242");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), text);
    assert!(!read("4243").status.success(), "anyone else is kept out");
}

/// Small things an operator sees.
#[test]
fn small_items() {
    let node = Node::new(Variant::Nft);
    let out = node.vzacct(&["add", "101", "10.0.0.6/24"]);
    assert!(out.status.success());
    assert_eq!(
        stderr(&out),
        "vzacct: warning: 10.0.0.6/24: accounting the address 10.0.0.6 only; the prefix is not \
         a range (vzacct accounts single addresses, as vzctl assigns them)\n"
    );
    assert!(node.ok(&["status"]).ends_with(" with rules missing\n"));
    // A state dir someone else may write to is refused, naming it.
    let state = node.path("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = node.vzacct(&["dump"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).lines().next().unwrap(),
        format!(
            "vzacct: error: refusing to use state directory {}: it is writable by everyone \
             (mode 0777) (it holds the ledger: make it root's and writable by no one else, e.g. \
             chown root: and chmod 0700)",
            state.display()
        )
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
    let out = node.vzacct(&["show"]);
    assert!(
        stderr(&out).contains("it is owned by uid 65534, not root"),
        "{}",
        stderr(&out)
    );
    std::os::unix::fs::chown(&state, Some(0), None).unwrap();
    let csv = node.path("csv");
    std::fs::create_dir(&csv).unwrap();
    std::fs::set_permissions(&csv, std::fs::Permissions::from_mode(0o770)).unwrap();
    let out = node.vzacct_env(&["dump"], &[("VZACCT_NOW", "2099-01-01T00:00:00Z")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("it is writable by its group (mode 0770)"),
        "{}",
        stderr(&out)
    );
}

/// A lost node record: commands refuse, `repair` rebuilds it, takes every counter as a new
/// starting point and says exactly how much the kernel counted since the last dump; from
/// then on every byte is counted once. A database that is not one any more is moved aside
/// and rebuilt from the kernel's counters.
fn repair_after_a_lost_node_file(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    let a = traffic(&node, 100, 2);
    node.ok(&["dump"]);
    let b = traffic(&node, 250, 3);
    let db = node.path("state/ledger.sqlite");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM node", [])
        .unwrap();
    let out = node.vzacct(&["dump"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    let out = node.vzacct(&["repair"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "node record rebuilt: the boot id, the backend and the last dump time were lost"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "not credited to anyone: at most {} bytes in / {} bytes out ({} / {} packets) that \
             the kernel counted since the last harvest (its time is lost)",
            b.0[0], b.0[1], b.0[2], b.0[3]
        )),
        "{text}"
    );
    let c = traffic(&node, 80, 4);
    node.ok(&["dump"]);
    assert_eq!(total(&node, "101"), a.add(c));
    // A database that is not one any more is moved aside; its containers start again from
    // the kernel's counters, nothing counted twice.
    write(&db, "{ not a database");
    assert_eq!(node.vzacct(&["dump"]).status.code(), Some(1));
    let text = node.ok(&["repair"]);
    assert!(
        text.contains("moved aside ") && text.contains("ledger.sqlite.corrupt-"),
        "{text}"
    );
    assert!(
        text.contains(
            "accounted again from their counters in the kernel: 101/10.0.0.1, 101/2001:db8:1::1"
        ),
        "{text}"
    );
    // No record was kept; each of the 8 counters (4 kinds, 2 IPs) is reported whole.
    let whole = a.add(b).add(c);
    assert!(
        text.contains(&format!(
            "0 container record(s) kept; 8 kernel counter(s) taken as new starting points\n\
             not credited to anyone: at most {} bytes in / {} bytes out ({} / {} packets) that \
             the kernel counted since they were made (no record of them was left)",
            whole.0[0], whole.0[1], whole.0[2], whole.0[3]
        )),
        "{text}"
    );
    let d = traffic(&node, 60, 2);
    node.ok(&["dump"]);
    assert_eq!(total(&node, "101"), d);
}

per_variant!(
    hooks_never_fail_and_never_hang,
    uninstall_and_purge,
    views_under_degraded_conditions,
    views_see_counters_no_packet_reaches,
    repair_after_a_lost_node_file,
);
