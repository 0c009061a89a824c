//! The core scenarios on the netfilter userland that OpenVZ nodes really run, built by
//! `../shared/oldtools/build.sh target/oldtools`: OpenVZ 7 (RHEL 7's iptables 1.4.21 and
//! ipset 7.1: the ipset backend), OpenVZ 6 (RHEL 6's iptables 1.4.7 and ipset 6.11: `auto`
//! must fall back to per-IP rules) and plain upstream iptables 1.4.21 (with ipset 7.1).
//! vzacct is pointed at the tools by absolute path; real packets, exact bytes.
//!
//! Without the built tools the tests say so and pass, except under CI (`CI=true`) or
//! `tests/run-all.sh` (which builds them and sets `VZACCT_OLDTOOLS_REQUIRED`), where
//! a missing build is a failure.

mod common;

use common::*;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const NOW: &str = "2026-12-02T12:00:00Z";
const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];

/// One node userland: an iptables build and an ipset build of `target/oldtools`.
#[derive(Debug, Clone, Copy)]
struct Userland {
    iptables: &'static str,
    ipset: &'static str,
    /// The backend `auto` must choose there.
    backend: &'static str,
}

const EL7: Userland = Userland {
    iptables: "iptables-1.4.21-el7",
    ipset: "ipset-7.1",
    backend: "ipset",
};
const EL6: Userland = Userland {
    iptables: "iptables-1.4.7-el6",
    ipset: "ipset-6.11",
    backend: "iptables",
};
const PLAIN: Userland = Userland {
    iptables: "iptables-1.4.21",
    ipset: "ipset-7.1",
    backend: "ipset",
};

/// The built tools, or `None` (with the reason printed) outside CI.
fn tools() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oldtools");
    let missing: Vec<String> = [EL7, EL6, PLAIN]
        .iter()
        .flat_map(|u| {
            [
                format!("{}/bin/iptables-restore", u.iptables),
                format!("{}/bin/ipset", u.ipset),
            ]
        })
        .filter(|p| !dir.join(p).exists())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    let why = format!(
        "old netfilter tools missing in {} ({}): run `../shared/oldtools/build.sh target/oldtools` as root",
        dir.display(),
        missing.join(", ")
    );
    // tests/run-all.sh builds them and sets VZACCT_OLDTOOLS_REQUIRED; CI sets CI=true.
    if std::env::var("CI").as_deref() == Ok("true")
        || std::env::var_os("VZACCT_OLDTOOLS_REQUIRED").is_some()
    {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// A node of the test topology whose vzacct uses one old userland.
struct Old {
    node: Node,
    u: Userland,
    dir: PathBuf,
}

impl Old {
    fn new(u: Userland, dir: PathBuf) -> Old {
        let node = Node::with_topology(Variant::Legacy, CTS);
        std::fs::create_dir_all(node.path("root/etc/vz/conf")).unwrap();
        let old = Old { node, u, dir };
        old.configure(&old.node.config.clone(), "");
        old
    }

    /// Write a config using this userland (and `extra` lines under [vzctl]).
    fn configure(&self, path: &Path, extra: &str) {
        let d = self.node.dir.path().display();
        write(
            path,
            format!(
                "[vzctl]\nconf_dir = {d}/root/etc/vz/conf\nveinfo = {d}/veinfo\nhook_log = {d}/hook.log\n{extra}\
                 [netfilter]\niptables = {}\nip6tables = {}\nipset = {}\nbackend = auto\nprogram_timeout = 20\n\
                 [storage]\nstate_dir = {d}/state\ncsv_dir = {d}/csv\ntimezone = UTC\n",
                self.bin(self.u.iptables, "iptables"),
                self.bin(self.u.iptables, "ip6tables"),
                self.bin(self.u.ipset, "ipset"),
            ),
        );
    }

    fn bin(&self, prefix: &str, prog: &str) -> String {
        self.dir
            .join(prefix)
            .join("bin")
            .join(prog)
            .display()
            .to_string()
    }

    fn iptables(&self, v6: bool) -> String {
        self.bin(self.u.iptables, if v6 { "ip6tables" } else { "iptables" })
    }

    /// The old `iptables-save -c` of the node's filter table.
    fn save(&self, v6: bool) -> String {
        let save = format!("{}-save", self.iptables(v6));
        self.node.ns.must(&save, &["-c", "-t", "filter"])
    }

    fn ipset_save(&self) -> String {
        self.node
            .ns
            .must(&self.bin(self.u.ipset, "ipset"), &["save"])
    }

    /// A reboot: the filter tables and every set gone, a new boot id.
    fn reboot(&self, boot_id: &str) {
        for v6 in [false, true] {
            for op in ["-F", "-X"] {
                self.node.ns.must(&self.iptables(v6), &[op]);
            }
        }
        let ipset = self.bin(self.u.ipset, "ipset");
        self.node.ns.must(&ipset, &["destroy"]);
        write(&self.node.path("boot_id"), format!("{boot_id}\n"));
    }

    /// Figures of a container in `show --json`.
    fn figures(&self, ctid: &str) -> F {
        let doc: serde_json::Value = serde_json::from_str(&self.ok(&["show", "--json"])).unwrap();
        F::of(&ct_of(&doc, ctid)["total"])
    }

    /// vzacct must succeed. The xtables lock file it may take is the test's own.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "vzacct {} failed:\n{}{}",
            args.join(" "),
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn run(&self, args: &[&str]) -> Output {
        let lock = self.node.path("xtables.lock").display().to_string();
        self.node
            .vzacct_env(args, &[("VZACCT_XTABLES_LOCK", &lock), ("VZACCT_NOW", NOW)])
    }
}

/// world -> CT, CT -> world, node -> CT and CT -> node datagrams for one address of `ctid`;
/// the figures they must add.
fn traffic(node: &Node, ctid: &str, ip: IpAddr) -> F {
    let v6 = ip.is_ipv6();
    let world: IpAddr = if v6 { WORLD_V6 } else { WORLD_V4 }.parse().unwrap();
    let venet: IpAddr = if v6 { NODE_VENET_V6 } else { NODE_VENET_V4 }
        .parse()
        .unwrap();
    let ct = &node.ct(ctid).ns;
    send_udp(node.world(), world, ct, ip, 300, 3);
    send_udp(ct, ip, node.world(), world, 200, 2);
    send_udp(&node.ns, venet, ct, ip, 50, 4);
    send_udp(ct, ip, &node.ns, venet, 70, 5);
    let l = |p| udp_ip_len(ip, p);
    // In and out include the node-local traffic, which is also shown on its own.
    let (li, lo) = (4 * l(50), 5 * l(70));
    F([3 * l(300) + li, 2 * l(200) + lo, 3 + 4, 2 + 5, li, lo, 4, 5])
}

/// add, exact bytes, dump, flush and heal, a reboot with `restore`, an IP move.
fn core_scenario(u: Userland) {
    let Some(dir) = tools() else { return };
    let o = Old::new(u, dir);
    let node = &o.node;
    o.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    o.ok(&["add", "102", "10.0.0.2"]);
    // The backend auto chose, and why.
    let status = o.ok(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(doc["backend"], u.backend, "{status}");
    if u.backend == "iptables" {
        let why = doc["backend_fallback"].as_str().unwrap();
        assert_eq!(
            why,
            "ipset unusable: ipset v6.11: Unknown argument: `counters'"
        );
        let text = o.ok(&["status"]);
        assert!(
            text.contains("backend: per-IP rules (iptables), because ipset unusable: ipset v6.11: Unknown argument: `counters'"),
            "{text}"
        );
        let save = o.save(false);
        assert!(
            save.contains("-A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\" \n"),
            "1.4.7 ends rule lines in a space:\n{save}"
        );
    } else {
        assert!(doc.get("backend_fallback").is_none(), "{status}");
        assert!(o.ipset_save().contains("create vzacct-fi4 hash:ip"));
    }
    let probes = std::fs::read_to_string(node.path("state/probes.json")).unwrap();
    assert!(probes.contains("boot-1"), "{probes}");
    let check = o.run(&["check"]);
    let check_text = stdout(&check);
    assert!(check_text.contains("backend"), "{check_text}");

    // Exact bytes, both families, both containers.
    let a4 = node.ct("101").v4;
    let a6 = node.ct("101").v6;
    let b4 = node.ct("102").v4;
    let mut want101 = traffic(node, "101", a4).add(traffic(node, "101", a6));
    let mut want102 = traffic(node, "102", b4);
    assert_eq!(o.figures("101"), want101);
    assert_eq!(o.figures("102"), want102);
    o.ok(&["dump"]);
    assert_eq!(o.figures("101"), want101, "after dump");

    // Someone flushes the firewall: dump heals it, and what was counted stays counted.
    for v6 in [false, true] {
        node.ns.must(&o.iptables(v6), &["-F"]);
        node.ns.must(&o.iptables(v6), &["-X"]);
    }
    if u.backend == "ipset" {
        node.ns.must(&o.bin(u.ipset, "ipset"), &["destroy"]);
    }
    o.ok(&["dump"]);
    let st = o.ok(&["status"]);
    assert!(
        st.contains("2 container(s) accounted, 0 with rules missing"),
        "{st}"
    );
    want101 = want101.add(traffic(node, "101", a4));
    assert_eq!(o.figures("101"), want101, "after heal");

    // A reboot: everything gone, `restore` brings it back, counting goes on exactly.
    o.ok(&["dump"]);
    o.reboot("boot-2");
    o.ok(&["restore"]);
    want101 = want101.add(traffic(node, "101", a6));
    want102 = want102.add(traffic(node, "102", b4));
    assert_eq!(o.figures("101"), want101, "after reboot");
    assert_eq!(o.figures("102"), want102, "after reboot");
    let probes = std::fs::read_to_string(node.path("state/probes.json")).unwrap();
    assert!(
        probes.contains("boot-2"),
        "probed again on the new boot: {probes}"
    );

    // 10.0.0.5 moves from 101 to 102: until the move it counts for 101, then for 102.
    node.add_ct_ip("101", "10.0.0.5");
    o.ok(&["add", "101", "10.0.0.5"]);
    let extra: IpAddr = "10.0.0.5".parse().unwrap();
    want101 = want101.add(traffic(node, "101", extra));
    node.ct("101").ns.ip("addr del 10.0.0.5/32 dev eth0");
    node.ns.ip("route del 10.0.0.5/32 dev venet0");
    node.add_ct_ip("102", "10.0.0.5");
    o.ok(&["add", "102", "10.0.0.5"]);
    want102 = want102.add(traffic(node, "102", extra));
    assert_eq!(o.figures("101"), want101, "101 after the move");
    assert_eq!(o.figures("102"), want102, "102 after the move");
    // Nothing duplicated: each IP has exactly one counter per kind.
    o.ok(&["sync"]);
    let st = o.ok(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&st).unwrap();
    for f in doc["netfilter"].as_array().unwrap() {
        assert_eq!(f["stray_rules"], 0, "{st}");
    }
    if u.backend == "iptables" {
        let save = o.save(false);
        assert_eq!(save.matches("\"ct:101\"").count(), 4, "{save}");
        assert_eq!(save.matches("\"ct:102\"").count(), 8, "{save}");
    } else {
        let sets = o.ipset_save();
        assert_eq!(sets.matches("comment \"ct:101\"").count(), 8, "{sets}");
        assert_eq!(sets.matches("comment \"ct:102\"").count(), 8, "{sets}");
    }
}

/// Free networks (`[classes]`) on each old userland: the free-network set is a `hash:net`
/// without counters, which ipset 6.11 has too, so OpenVZ 6's per-IP rules count free traffic
/// apart as well. Exact bytes, both families.
fn free_networks(u: Userland) {
    let Some(dir) = tools() else { return };
    let o = Old::new(u, dir);
    let node = &o.node;
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    write(
        &node.config,
        format!("{cfg}[classes]\nfree = 198.51.100.0/24 2001:db8:ff::/48\n"),
    );
    o.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    let mut want = F::default();
    let mut free = (0, 0);
    for ip in [node.ct("101").v4, node.ct("101").v6] {
        want = want.add(traffic(node, "101", ip));
        let l = |p| udp_ip_len(ip, p);
        free = (free.0 + 3 * l(300), free.1 + 2 * l(200));
    }
    o.ok(&["dump"]);
    let doc: serde_json::Value = serde_json::from_str(&o.ok(&["show", "--json"])).unwrap();
    let total = &ct_of(&doc, "101")["total"];
    assert_eq!(F::of(total), want, "{total}");
    assert_eq!(
        (
            total["free_in_bytes"].as_u64().unwrap(),
            total["free_out_bytes"].as_u64().unwrap()
        ),
        free,
        "{total}"
    );
    let sets = o.ipset_save();
    assert!(
        sets.contains("create vzacct-free4 hash:net")
            && sets.contains("add vzacct-free4 198.51.100.0/24"),
        "{sets}"
    );
    let check = stdout(&o.run(&["check"]));
    assert!(check.contains("ok   free networks"), "{check}");
    // Both families' rules in place as this iptables-save prints them (with the ipset
    // backend, the free chains' rules name their covers: `-s 2001:db8:ff::/48`).
    assert_eq!(check.matches(" rule(s) in place (").count(), 2, "{check}");
    // The /24 narrowed to a /25: its prefix length empties, so the set is rebuilt under
    // another name and swapped in (`swap` in an `ipset restore` batch), then the old
    // contents destroyed. Traffic from the network is free as before.
    write(
        &node.config,
        format!("{cfg}[classes]\nfree = 198.51.100.0/25 2001:db8:ff::/48\n"),
    );
    let out = o.ok(&["dump"]);
    assert!(out.contains("free networks"), "{out}");
    let sets = o.ipset_save();
    assert!(
        sets.contains("add vzacct-free4 198.51.100.0/25")
            && !sets.contains("198.51.100.0/24")
            && !sets.contains("vzacct-zfree"),
        "{sets}"
    );
    let ip = node.ct("101").v4;
    want = want.add(traffic(node, "101", ip));
    free = (
        free.0 + 3 * udp_ip_len(ip, 300),
        free.1 + 2 * udp_ip_len(ip, 200),
    );
    o.ok(&["dump"]);
    let doc: serde_json::Value = serde_json::from_str(&o.ok(&["show", "--json"])).unwrap();
    let total = &ct_of(&doc, "101")["total"];
    assert_eq!(F::of(total), want, "{total}");
    let got = |k: &str| total[k].as_u64().unwrap();
    assert_eq!(
        (got("free_in_bytes"), got("free_out_bytes")),
        free,
        "{total}"
    );
}

#[test]
fn free_networks_openvz7_userland() {
    free_networks(EL7);
}

#[test]
fn free_networks_openvz6_userland() {
    free_networks(EL6);
}

#[test]
fn core_scenario_openvz7_userland() {
    core_scenario(EL7);
}

#[test]
fn core_scenario_openvz6_userland() {
    core_scenario(EL6);
}

#[test]
fn core_scenario_plain_iptables_1_4_21() {
    core_scenario(PLAIN);
}

/// A fake root with vzctl's scripts, vzacct installed by `vzacct install --root`, and the
/// containers' configs (as tests/lifecycle.rs does).
struct Site<'a> {
    o: &'a Old,
    root: PathBuf,
}

const SCRIPTS: &str = "usr/libexec/vzctl/scripts";
const VZCTL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl<'a> Site<'a> {
    fn new(o: &'a Old) -> Site<'a> {
        let root = o.node.path("root");
        write_exec(
            &root.join(SCRIPTS).join("vps-net_add"),
            "#!/bin/sh\nexit 0\n",
        );
        // vzctl's own script takes the container's routes away.
        write_exec(
            &root.join(SCRIPTS).join("vps-net_del"),
            "#!/bin/sh\nfor ip in $IP_ADDR; do ip route del \"$ip\" dev venet0 2>/dev/null; done\nexit 0\n",
        );
        o.configure(&root.join("etc/vz/vzacct.conf"), "");
        o.configure(&o.node.config, "");
        // Hooks run with vzctl's bare environment and read the kernel's boot id.
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        write(&o.node.path("boot_id"), boot);
        let out = o.node.ns.run(
            env!("CARGO_BIN_EXE_vzacct"),
            &["install", "--root", root.to_str().unwrap()],
        );
        assert!(out.status.success(), "install: {}", stderr(&out));
        Site { o, root }
    }

    fn script(&self, path: &Path, env: &[(&str, &str)]) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.o.node.ns.name, "env", "-i", "HOME=/"])
            .arg(format!("PATH={VZCTL_PATH}"));
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        let out = cmd.arg(path).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    }

    /// `vzctl start`: the mount script, then vps-net_add.
    fn start(&self, ctid: &str, ips: &str) {
        let conf = self.root.join(format!("etc/vz/conf/{ctid}.conf"));
        write(&conf, format!("IP_ADDRESS=\"{ips}\"\n"));
        let c = conf.display().to_string();
        self.script(
            &self.root.join("etc/vz/conf/vps.mount"),
            &[("VEID", ctid), ("VE_CONFFILE", &c)],
        );
        self.script(
            &self.root.join(SCRIPTS).join("vps-net_add"),
            &[("VEID", ctid), ("VE_STATE", "starting"), ("IP_ADDR", ips)],
        );
    }

    /// `vzctl stop`: vps-net_del, then the umount script.
    fn stop(&self, ctid: &str, ips: &str) {
        self.script(
            &self.root.join(SCRIPTS).join("vps-net_del"),
            &[("VEID", ctid), ("VE_STATE", "stopping"), ("IP_ADDR", ips)],
        );
        let conf = self.root.join(format!("etc/vz/conf/{ctid}.conf"));
        let c = conf.display().to_string();
        self.script(
            &self.root.join("etc/vz/conf/vps.umount"),
            &[("VEID", ctid), ("VE_CONFFILE", &c)],
        );
    }
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The installed hooks start and stop containers; every byte lands exactly; the hook log
/// says which backend and why.
fn installed_hooks(u: Userland) {
    let Some(dir) = tools() else { return };
    let o = Old::new(u, dir);
    let site = Site::new(&o);
    let node = &o.node;
    site.start("101", "10.0.0.1 2001:db8:1::1");
    site.start("102", "10.0.0.2");
    let want101 =
        traffic(node, "101", node.ct("101").v4).add(traffic(node, "101", node.ct("101").v6));
    let want102 = traffic(node, "102", node.ct("102").v4);
    // 101 stops: its counters are harvested (by the hook, or by the next dump).
    site.stop("101", "10.0.0.1 2001:db8:1::1");
    o.ok(&["dump"]);
    assert_eq!(o.figures("101"), want101);
    assert_eq!(o.figures("102"), want102);
    let log = std::fs::read_to_string(node.path("hook.log")).unwrap();
    assert_eq!(log.lines().count(), 6, "one line per hook:\n{log}");
    assert!(!log.contains(" error: "), "{log}");
    if u.backend == "iptables" {
        assert!(
            log.contains("[full run: backend auto uses per-IP rules: ipset unusable: ipset v6.11: Unknown argument: `counters']"),
            "{log}"
        );
    }
    let save = o.save(false);
    assert!(!save.contains("\"ct:101\""), "{save}");
}

#[test]
fn installed_hooks_openvz7_userland() {
    installed_hooks(EL7);
}

#[test]
fn installed_hooks_openvz6_userland() {
    installed_hooks(EL6);
}

#[test]
fn installed_hooks_plain_iptables_1_4_21() {
    installed_hooks(PLAIN);
}

/// `backend = ipset` on ipset 6.11 is one error naming what is missing, and nothing changes.
#[test]
fn backend_ipset_without_counters_is_a_clear_error() {
    let Some(dir) = tools() else { return };
    let o = Old::new(EL6, dir);
    let text = std::fs::read_to_string(&o.node.config)
        .unwrap()
        .replace("backend = auto", "backend = ipset");
    write(&o.node.config, text);
    let out = o.run(&["add", "101", "10.0.0.1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("backend = ipset under [netfilter], but ")
            && err.contains("cannot create a set with counters and comments")
            && err.contains("ipset v6.11: Unknown argument: `counters'"),
        "{err}"
    );
    assert!(!o.save(false).contains("VZACCT"), "nothing applied");
}

/// Run `script` with sh inside the node's network namespace and a private mount namespace
/// with its own /run (so a lock held there is never the host's /run/xtables.lock).
fn in_private_run(o: &Old, script: &str) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &o.node.ns.name])
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount -t tmpfs vzacct-run /run && {script}"))
        .output()
        .unwrap()
}

/// RHEL 7's iptables-restore waits for /run/xtables.lock itself (`-w SECONDS`): with the
/// lock held by another program, vzacct ends within its deadline with a clear error, and
/// succeeds once the holder lets go.
#[test]
fn el7_lock_held_by_another_program() {
    let Some(dir) = tools() else { return };
    let o = Old::new(EL7, dir);
    let text = std::fs::read_to_string(&o.node.config)
        .unwrap()
        .replace("program_timeout = 20", "program_timeout = 3");
    write(&o.node.config, text);
    let vz = |args: &str| {
        let cmd = o.node.command(&[], &[]);
        let argv: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        // Drop `ip netns exec NS`: the caller is in the namespace already.
        format!("{} {args}", argv[4..].join(" "))
    };
    // The probes of this boot are made before the lock is taken (as on a node, where the
    // first command of a boot made them).
    o.node.ok(&["sync"]);
    // ...and the next command has a rule to put back: someone took our jump away.
    o.node.ns.must(
        &o.iptables(false),
        &["-D", "FORWARD", "-j", "VZACCT-FORWARD"],
    );
    let script = format!(
        "touch /run/xtables.lock; (flock /run/xtables.lock sleep 4) & sleep 0.3; \
         start=$(date +%s%N); {} 2>&1; echo rc=$?; end=$(date +%s%N); \
         echo ms=$(( (end - start) / 1000000 )); wait; {}; echo rc2=$?",
        vz("add 101 10.0.0.1"),
        vz("add 101 10.0.0.1")
    );
    let started = Instant::now();
    let out = in_private_run(&o, &script);
    let text = stdout(&out);
    assert!(started.elapsed() < Duration::from_secs(20), "{text}");
    assert!(text.contains("rc=1"), "{text}{}", stderr(&out));
    assert!(
        text.contains("the xtables lock stayed taken"),
        "a clear error: {text}"
    );
    let ms: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ms="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms < 3500, "within the 3 s deadline: {ms} ms\n{text}");
    assert!(text.contains("rc2=0"), "after the holder is gone: {text}");
    assert!(o.save(false).contains("-A FORWARD -j VZACCT-FORWARD"));
}

/// Plain 1.4.21 locks with the abstract socket @xtables of the network namespace, and its
/// iptables-restore does not lock at all: vzacct takes that socket itself around the
/// restore, so it never interleaves with an `iptables` command; held by another program,
/// vzacct ends within its deadline with a clear error, and succeeds once it is free.
#[test]
fn plain_1_4_21_lock_held_by_another_program() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let Some(dir) = tools() else { return };
    let o = Old::new(PLAIN, dir);
    let text = std::fs::read_to_string(&o.node.config)
        .unwrap()
        .replace("program_timeout = 20", "program_timeout = 3");
    write(&o.node.config, text);
    // Holding means: the socket is bound in the node's namespace. Plain iptables then
    // refuses to run, which is what the probe sees too.
    let held = o.node.ns.enter(|| {
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(b"xtables").unwrap()).unwrap()
    });
    let ipt = o.node.ns.run(&o.iptables(false), &["-S", "INPUT"]);
    assert_eq!(ipt.status.code(), Some(4), "{}", stderr(&ipt));
    let started = Instant::now();
    let out = o.run(&["add", "101", "10.0.0.1"]);
    let took = started.elapsed();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(took < Duration::from_millis(3500), "{took:?}: {err}");
    assert!(err.contains("the xtables lock stayed taken"), "{err}");
    assert!(err.contains("socket @xtables"), "{err}");
    drop(held);
    o.ok(&["add", "101", "10.0.0.1"]);
    let probes = std::fs::read_to_string(o.node.path("state/probes.json")).unwrap();
    assert!(probes.contains("abstract_socket"), "{probes}");
}
