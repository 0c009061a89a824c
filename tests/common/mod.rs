//! Test harness: private network namespaces (removed on drop, also when a test fails), the
//! node topology of DESIGN.md, real UDP datagrams sent between namespaces, and the built
//! `vzacct` binary run inside the node namespace.
#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

pub mod site;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Run a program, panicking with its stderr when it fails: for test set-up only.
pub fn must(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of ours; deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the integration tests need root (network namespaces and iptables)"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("vzt-{}-{n}-{tag}", std::process::id());
        must("ip", &["netns", "add", &name]);
        Netns { name }
    }

    /// Run a program inside the namespace, returning its output whatever the status.
    pub fn run(&self, prog: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, prog])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Run a program inside the namespace; it must succeed.
    pub fn must(&self, prog: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, prog];
        full.extend_from_slice(args);
        must("ip", &full)
    }

    /// `ip -n NS ...`
    pub fn ip(&self, args: &str) {
        let mut full = vec!["-n", &self.name];
        full.extend(args.split_whitespace());
        must("ip", &full);
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.must("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    /// Run `f` on a thread that has entered this namespace: sockets it creates live here.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The two iptables 1.8 back-ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// iptables-legacy, one rule per IP (backend = iptables).
    Legacy,
    /// iptables-nft, one rule per IP (backend = iptables).
    Nft,
    /// iptables-legacy with the ipset backend.
    LegacyIpset,
    /// iptables-nft with the ipset backend.
    NftIpset,
}

impl Variant {
    pub fn iptables(self, v6: bool) -> String {
        let base = if v6 { "ip6tables" } else { "iptables" };
        match self {
            Variant::Legacy | Variant::LegacyIpset => format!("{base}-legacy"),
            Variant::Nft | Variant::NftIpset => format!("{base}-nft"),
        }
    }

    /// The `backend` config value.
    pub fn backend(self) -> &'static str {
        match self {
            Variant::Legacy | Variant::Nft => "iptables",
            Variant::LegacyIpset | Variant::NftIpset => "ipset",
        }
    }

    pub fn ipset(self) -> bool {
        self.backend() == "ipset"
    }
}

/// Generate one test per iptables variant and backend from `fn name(v: Variant)`.
#[macro_export]
macro_rules! per_variant {
    ($($name:ident),* $(,)?) => {
        $crate::per_rules_variant!($($name),*);
        mod legacy_ipset {
            $( #[test] fn $name() { super::$name($crate::common::Variant::LegacyIpset) } )*
        }
        mod nft_ipset {
            $( #[test] fn $name() { super::$name($crate::common::Variant::NftIpset) } )*
        }
    };
}

/// Generate one test per iptables variant, with the iptables backend only (for tests about
/// the per-IP rules themselves).
#[macro_export]
macro_rules! per_rules_variant {
    ($($name:ident),* $(,)?) => {
        mod legacy {
            $( #[test] fn $name() { super::$name($crate::common::Variant::Legacy) } )*
        }
        mod nft {
            $( #[test] fn $name() { super::$name($crate::common::Variant::Nft) } )*
        }
    };
}

/// IP-level length of a UDP datagram carrying `payload` bytes.
pub fn udp_ip_len(ip: IpAddr, payload: usize) -> u64 {
    let header = if ip.is_ipv4() { 20 } else { 40 };
    (payload + 8 + header) as u64
}

/// A container in the test topology: its own namespace behind the node's venet0.
pub struct Ct {
    pub ctid: String,
    pub ns: Netns,
    pub v4: IpAddr,
    pub v6: IpAddr,
}

/// Addresses of the node in the topology.
pub const NODE_VENET_V4: &str = "10.255.0.1";
pub const NODE_VENET_V6: &str = "fd00:255::1";
pub const WORLD_V4: &str = "198.51.100.2";
pub const WORLD_V6: &str = "2001:db8:ff::2";

/// A node: the namespace vzacct runs in, a temp dir with config and state, and optionally
/// the whole topology (switch, containers, world).
pub struct Node {
    pub variant: Variant,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub cts: Vec<Ct>,
    pub world: Option<Netns>,
    pub sw: Option<Netns>,
    // Declared last: dropped after the namespaces that hang off it.
    pub ns: Netns,
}

impl Node {
    /// A bare node namespace with a config that uses `variant` and a private state dir.
    pub fn new(variant: Variant) -> Node {
        let ns = Netns::new("node");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("vzacct.conf");
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("boot_id"), "boot-1\n").unwrap();
        std::fs::write(
            &config,
            format!(
                "[vzctl]\nconf_dir = {d}/conf\nveinfo = {d}/veinfo\nhook_log = {d}/hook.log\n\
                 [netfilter]\niptables = {}\nip6tables = {}\nbackend = {}\n\
                 [storage]\nstate_dir = {d}/state\ncsv_dir = {d}/csv\ntimezone = UTC\n",
                variant.iptables(false),
                variant.iptables(true),
                variant.backend(),
                d = dir.path().display()
            ),
        )
        .unwrap();
        Node {
            variant,
            dir,
            config,
            cts: Vec::new(),
            world: None,
            sw: None,
            ns,
        }
    }

    /// The node plus its world: `venet0` towards a switch namespace with one namespace per
    /// container (`(ctid, v4, v6)`), and an uplink towards a world namespace. Static IPv6
    /// neighbours and dropped redirects keep the wire free of packets a test did not send.
    pub fn with_topology(variant: Variant, cts: &[(&str, &str, &str)]) -> Node {
        let mut node = Node::new(variant);
        let sw = Netns::new("sw");
        let world = Netns::new("world");
        node.ns.ip(&format!(
            "link add venet0 address 02:00:00:00:00:01 type veth peer name vsw netns {}",
            sw.name
        ));
        sw.ip("link add br0 type bridge");
        sw.ip("link set vsw master br0");
        for dev in ["lo", "br0", "vsw"] {
            sw.ip(&format!("link set {dev} up"));
        }
        let node_ns = &node.ns;
        for dev in ["lo", "venet0"] {
            node_ns.ip(&format!("link set {dev} up"));
        }
        node_ns.ip(&format!("addr add {NODE_VENET_V4}/32 dev venet0"));
        node_ns.ip(&format!("-6 addr add {NODE_VENET_V6}/128 dev venet0 nodad"));
        node_ns.sysctl("net.ipv4.ip_forward", "1");
        node_ns.sysctl("net.ipv6.conf.all.forwarding", "1");
        for scope in ["all", "default", "venet0"] {
            node_ns.sysctl(&format!("net.ipv4.conf.{scope}.send_redirects"), "0");
        }
        // Uplink to the world.
        node_ns.ip(&format!(
            "link add up0 type veth peer name wan0 netns {}",
            world.name
        ));
        node_ns.ip("link set up0 up");
        node_ns.ip("addr add 198.51.100.1/24 dev up0");
        node_ns.ip("-6 addr add 2001:db8:ff::1/64 dev up0 nodad");
        for dev in ["lo", "wan0"] {
            world.ip(&format!("link set {dev} up"));
        }
        world.ip(&format!("addr add {WORLD_V4}/24 dev wan0"));
        world.ip(&format!("-6 addr add {WORLD_V6}/64 dev wan0 nodad"));
        world.ip("route add 10.0.0.0/8 via 198.51.100.1");
        world.ip("-6 route add 2001:db8::/40 via 2001:db8:ff::1");
        // Redirects for CT-to-CT traffic would be sent to a container's IP: drop them before
        // the filter table sees them (raw table, our own namespace).
        for v6 in [false, true] {
            let proto: &[&str] = if v6 {
                &["-p", "ipv6-icmp", "--icmpv6-type", "redirect"]
            } else {
                &["-p", "icmp", "--icmp-type", "redirect"]
            };
            let mut args = vec!["-w", "-t", "raw", "-A", "OUTPUT"];
            args.extend_from_slice(proto);
            args.extend_from_slice(&["-j", "DROP"]);
            node.ns.must(&variant.iptables(v6), &args);
        }
        for (i, (ctid, v4, v6)) in cts.iter().enumerate() {
            let ns = Netns::new(&format!("c{ctid}"));
            let mac = format!("02:00:00:00:01:{:02x}", i + 1);
            sw.ip(&format!(
                "link add p{i} type veth peer name eth0 netns {}",
                ns.name
            ));
            sw.ip(&format!("link set p{i} master br0"));
            sw.ip(&format!("link set p{i} up"));
            ns.ip(&format!("link set eth0 address {mac}"));
            ns.ip("link set lo up");
            ns.ip("link set eth0 up");
            ns.ip(&format!("addr add {v4}/32 dev eth0"));
            ns.ip(&format!("-6 addr add {v6}/128 dev eth0 nodad"));
            ns.ip(&format!("route add {NODE_VENET_V4} dev eth0"));
            ns.ip(&format!("route add default via {NODE_VENET_V4} src {v4}"));
            ns.ip(&format!("-6 route add {NODE_VENET_V6} dev eth0"));
            ns.ip(&format!(
                "-6 route add default via {NODE_VENET_V6} src {v6}"
            ));
            ns.ip(&format!(
                "-6 neigh replace {NODE_VENET_V6} lladdr 02:00:00:00:00:01 dev eth0 nud permanent"
            ));
            ns.ip(&format!(
                "neigh replace {NODE_VENET_V4} lladdr 02:00:00:00:00:01 dev eth0 nud permanent"
            ));
            ns.sysctl("net.ipv4.conf.all.accept_redirects", "0");
            ns.sysctl("net.ipv6.conf.all.accept_redirects", "0");
            node.ns
                .ip(&format!("route add {v4}/32 dev venet0 src {NODE_VENET_V4}"));
            node.ns.ip(&format!("-6 route add {v6}/128 dev venet0"));
            node.ns.ip(&format!(
                "-6 neigh replace {v6} lladdr {mac} dev venet0 nud permanent"
            ));
            node.ns.ip(&format!(
                "neigh replace {v4} lladdr {mac} dev venet0 nud permanent"
            ));
            node.cts.push(Ct {
                ctid: ctid.to_string(),
                ns,
                v4: v4.parse().unwrap(),
                v6: v6.parse().unwrap(),
            });
        }
        node.sw = Some(sw);
        node.world = Some(world);
        node
    }

    /// Give container `ctid` one more address (in its namespace, routed from the node).
    pub fn add_ct_ip(&self, ctid: &str, ip: &str) {
        let i = self
            .cts
            .iter()
            .position(|c| c.ctid == ctid)
            .expect("container");
        let mac = format!("02:00:00:00:01:{:02x}", i + 1);
        let ct = &self.cts[i].ns;
        if ip.contains(':') {
            ct.ip(&format!("-6 addr add {ip}/128 dev eth0 nodad"));
            self.ns.ip(&format!("-6 route add {ip}/128 dev venet0"));
            self.ns.ip(&format!(
                "-6 neigh replace {ip} lladdr {mac} dev venet0 nud permanent"
            ));
        } else {
            ct.ip(&format!("addr add {ip}/32 dev eth0"));
            self.ns
                .ip(&format!("route add {ip}/32 dev venet0 src {NODE_VENET_V4}"));
            self.ns.ip(&format!(
                "neigh replace {ip} lladdr {mac} dev venet0 nud permanent"
            ));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Run the built vzacct inside the node namespace with this node's config.
    pub fn vzacct(&self, args: &[&str]) -> Output {
        self.vzacct_env(args, &[])
    }

    /// Run vzacct with extra environment variables (set by `env`, so that even `PATH` can be
    /// changed for vzacct alone).
    pub fn vzacct_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run vzacct")
    }

    /// The command line that runs vzacct in the node namespace (the boot id file is the
    /// node's, the time zone UTC unless `env` says otherwise).
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name, "env"]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(format!(
            "VZACCT_BOOT_ID_FILE={}",
            self.path("boot_id").display()
        ));
        if !env.iter().any(|(k, _)| *k == "TZ") {
            cmd.arg("TZ=UTC");
        }
        // VZACCT_TEST_BIN: another build (tests/fixtures/ledger/regenerate.sh runs the
        // previous release).
        let bin = std::env::var_os("VZACCT_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_vzacct").into());
        cmd.arg(bin)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("VZACCT_CONFIG");
        cmd
    }

    /// vzacct at a given time (`VZACCT_NOW`); it must succeed.
    pub fn at(&self, now: &str, args: &[&str]) -> String {
        let out = self.vzacct_env(args, &[("VZACCT_NOW", now)]);
        assert!(
            out.status.success(),
            "vzacct {} at {now} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Simulate a reboot: every rule and chain of the node's filter tables gone, a new boot id.
    pub fn reboot(&self, boot_id: &str) {
        self.reboot_tables();
        std::fs::write(self.path("boot_id"), format!("{boot_id}\n")).unwrap();
    }

    /// Empty the node's filter tables (both families) and destroy every ipset, as a reboot
    /// does.
    pub fn reboot_tables(&self) {
        for v6 in [false, true] {
            self.ipt(v6, &["-F"]);
            self.ipt(v6, &["-X"]);
        }
        self.ns.must("ipset", &["destroy"]);
    }

    /// `ipset save` lines of our sets in one family, without counters, sorted.
    pub fn sets(&self, v6: bool) -> Vec<String> {
        let suffix = if v6 { '6' } else { '4' };
        let mut lines: Vec<String> = self
            .ns
            .must("ipset", &["save"])
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|n| n.starts_with("vzacct-") && n.ends_with(suffix))
            })
            .filter(|l| l.starts_with("add "))
            // Not the generation element of each set (see `Node::set_generations`).
            .filter(|l| {
                let ip = l.split_whitespace().nth(2).unwrap_or("");
                ip != "255.255.255.255" && ip != "ff0f::ffff"
            })
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let comment = w
                    .iter()
                    .position(|x| *x == "comment")
                    .map(|i| w[i + 1])
                    .unwrap_or("");
                format!("{} {} {comment}", w[1], w[2])
            })
            .collect();
        lines.sort();
        lines
    }

    /// How many counters (per-IP rules, or set elements with the ipset backend) container
    /// `ctid` has in one family.
    pub fn entries(&self, ctid: &str, v6: bool) -> usize {
        let tag = format!("\"ct:{ctid}\"");
        if self.variant.ipset() {
            self.sets(v6).iter().filter(|l| l.ends_with(&tag)).count()
        } else {
            self.ours(v6).iter().filter(|l| l.contains(&tag)).count()
        }
    }

    /// All counters of one family, whoever they belong to.
    pub fn all_entries(&self, v6: bool) -> usize {
        if self.variant.ipset() {
            self.sets(v6).len()
        } else {
            self.ours(v6).iter().filter(|l| l.contains("\"ct:")).count()
        }
    }

    /// `show --json` parsed.
    pub fn show(&self, now: &str) -> serde_json::Value {
        serde_json::from_str(&self.at(now, &["show", "--json"])).expect("show --json")
    }

    /// vzacct must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vzacct(args);
        assert!(
            out.status.success(),
            "vzacct {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `iptables-save -c -t filter` of the node, without the timestamp comments.
    /// The saved filter table without comments, and without vzacct's generation chain
    /// (which every run rewrites: see [`Node::generation`]).
    pub fn save(&self, v6: bool) -> String {
        self.save_all(v6)
            .lines()
            .filter(|l| !l.contains("VZACCT-GENERATION"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The saved filter table without comments.
    pub fn save_all(&self, v6: bool) -> String {
        let text = self.ns.must(
            &format!("{}-save", self.variant.iptables(v6)),
            &["-c", "-t", "filter"],
        );
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The generation vzacct last wrote into the family's table: its generation chain's
    /// exact lines checked on the way.
    pub fn generation(&self, v6: bool) -> u64 {
        let save = self.save_all(v6);
        let lines: Vec<&str> = save
            .lines()
            .filter(|l| l.contains("VZACCT-GENERATION"))
            .collect();
        // Each run appends its generation; a batch that deletes anyway, or the 16th, flushes
        // the older ones.
        assert!((2..=17).contains(&lines.len()), "{save}");
        assert_eq!(lines[0], ":VZACCT-GENERATION - [0:0]");
        let gens: Vec<u64> = lines[1..]
            .iter()
            .map(|l| {
                l.strip_prefix("[0:0] -A VZACCT-GENERATION -m comment --comment \"generation:")
                    .and_then(|r| r.strip_suffix('"'))
                    .and_then(|g| g.parse().ok())
                    .unwrap_or_else(|| panic!("{l}"))
            })
            .collect();
        assert!(gens.windows(2).all(|w| w[0] < w[1]), "{save}");
        gens[gens.len() - 1]
    }

    /// Only the lines of the saved filter table that mention vzacct's chains.
    pub fn ours(&self, v6: bool) -> Vec<String> {
        self.save(v6)
            .lines()
            .filter(|l| l.contains("VZACCT"))
            .map(str::to_string)
            .collect()
    }

    /// Run the variant's iptables in the node namespace.
    pub fn ipt(&self, v6: bool, args: &[&str]) {
        let mut full = vec!["-w"];
        full.extend_from_slice(args);
        self.ns.must(&self.variant.iptables(v6), &full);
    }

    /// Counters `[packets, bytes]` of the rule printed as `-A <rule>` in the saved table.
    pub fn counters(&self, v6: bool, rule: &str) -> (u64, u64) {
        let save = self.save(v6);
        let line = save
            .lines()
            .find(|l| l.ends_with(&format!("-A {rule}")))
            .unwrap_or_else(|| panic!("rule -A {rule} not found in:\n{save}"));
        let inner = &line[1..line.find(']').unwrap()];
        let (p, b) = inner.split_once(':').unwrap();
        (p.parse().unwrap(), b.parse().unwrap())
    }

    pub fn ct(&self, ctid: &str) -> &Ct {
        self.cts.iter().find(|c| c.ctid == ctid).expect("container")
    }

    pub fn world(&self) -> &Netns {
        self.world.as_ref().expect("topology")
    }
}

/// Send `count` UDP datagrams of `payload` bytes from `src` (in `from`) to `dst` (in `to`),
/// and check each one arrives, so the kernel counted them before the test reads counters.
pub fn send_udp(from: &Netns, src: IpAddr, to: &Netns, dst: IpAddr, payload: usize, count: usize) {
    static PORT: AtomicUsize = AtomicUsize::new(0);
    let port = (20000 + PORT.fetch_add(1, Ordering::SeqCst) % 40000) as u16;
    let dst_addr = SocketAddr::new(dst, port);
    let rx = to.enter(move || UdpSocket::bind(dst_addr).expect("bind receiver"));
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let tx = from.enter(move || UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind sender"));
    let data = vec![0x5a_u8; payload];
    let mut buf = vec![0_u8; payload + 1];
    for i in 0..count {
        tx.send_to(&data, dst_addr).expect("send");
        // A stopped and resumed process may see EINTR from a socket with a timeout.
        let (n, from_addr) = loop {
            match rx.recv_from(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        }
        .unwrap_or_else(|e| panic!("datagram {i} {src} -> {dst} did not arrive: {e}"));
        assert_eq!((n, from_addr.ip()), (payload, src));
    }
}

/// Write a file, creating parent directories.
pub fn write(path: &Path, text: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The eight figures of `show --json` and the CSV, in CSV column order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct F(pub [u64; 8]);

/// The figures' names, in CSV column order.
pub const FIGURES: [&str; 8] = [
    "in_bytes",
    "out_bytes",
    "in_packets",
    "out_packets",
    "local_in_bytes",
    "local_out_bytes",
    "local_in_packets",
    "local_out_packets",
];

impl F {
    /// From a JSON object holding the eight figures.
    pub fn of(v: &serde_json::Value) -> F {
        F(FIGURES.map(|k| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("{k} missing or not a u64 in {v}"))
        }))
    }
    pub fn inb(b: u64, p: u64) -> F {
        F([b, 0, p, 0, 0, 0, 0, 0])
    }
    pub fn outb(b: u64, p: u64) -> F {
        F([0, b, 0, p, 0, 0, 0, 0])
    }
    /// Saturating, as the ledger adds.
    pub fn add(self, o: F) -> F {
        let mut r = self;
        for i in 0..8 {
            r.0[i] = r.0[i].saturating_add(o.0[i]);
        }
        r
    }
    pub fn sum(list: &[F]) -> F {
        list.iter().fold(F::default(), |a, b| a.add(*b))
    }
    /// Every figure at least that of `o`.
    pub fn ge(&self, o: &F) -> bool {
        self.0.iter().zip(o.0).all(|(a, b)| *a >= b)
    }
}

/// The container `ctid` in a `show --json` document.
pub fn ct_of<'a>(show: &'a serde_json::Value, ctid: &str) -> &'a serde_json::Value {
    show["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ctid"] == ctid)
        .unwrap_or_else(|| panic!("container {ctid} not in {show}"))
}

impl Netns {
    /// Run a program inside the namespace with `input` on its stdin; it must succeed.
    pub fn must_with_input(&self, prog: &str, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, prog])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{prog} {} failed: {}\n{input}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A checker program: unpacked by tests/deps.sh into target/tools, or on PATH.
pub fn tool(name: &str) -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/usr/bin")
        .join(name);
    if local.exists() {
        return local;
    }
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} not found: run `bash tests/deps.sh` as root"
    );
    PathBuf::from(String::from_utf8_lossy(&found.stdout).trim())
}

/// A container's total bytes in, from a `show --json` document (0 when it has no record).
pub fn in_bytes(doc: &serde_json::Value, ctid: &str) -> u64 {
    doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ctid"] == ctid)
        .map(|c| c["total"]["in_bytes"].as_u64().unwrap())
        .unwrap_or(0)
}

/// The persisted ledger in pieces, to see what a command changed: `node` (boot id, backend,
/// last dump), `ct:<ctid>` (one container's record as JSON) and `ip:<ip>` (the containers
/// holding that IP), read without writing anything (empty when there is no ledger).
pub fn ledger_files(state: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    if !state.join(vzacct::ledger::db::FILE).exists() {
        return out;
    }
    let (ledger, loaded) = vzacct::ledger::db::load_view(state).expect("ledger reads");
    out.insert(
        "node".to_string(),
        serde_json::to_vec(&serde_json::json!({
            "boot_id": ledger.boot_id,
            "backend": loaded.backend,
            "last_dump": ledger.last_dump,
        }))
        .unwrap(),
    );
    for (id, c) in &ledger.containers {
        out.insert(format!("ct:{id}"), serde_json::to_vec(c).unwrap());
    }
    // As the views open it: read-only, and immutable when no write-ahead log is left.
    let wal = state.join(format!("{}-wal", vzacct::ledger::db::FILE));
    let immutable = std::fs::metadata(wal).map_or(true, |m| m.len() == 0);
    let db = rusqlite::Connection::open_with_flags(
        format!(
            "file:{}?mode=ro{}",
            state.join(vzacct::ledger::db::FILE).display(),
            if immutable { "&immutable=1" } else { "" }
        ),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let mut st = db
        .prepare("SELECT ip, group_concat(ctid, ' ') FROM (SELECT * FROM holders ORDER BY ip, ctid) GROUP BY ip")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for r in rows {
        let (ip, cts) = r.unwrap();
        out.insert(format!("ip:{ip}"), cts.into_bytes());
    }
    out
}

/// The persisted ledger as one document, in the form of the format 1 file: `boot_id`,
/// `last_dump`, `backend` and every container under `"containers"`.
pub fn ledger_json(state: &Path) -> serde_json::Value {
    let (ledger, loaded) = vzacct::ledger::db::load_view(state).expect("ledger reads");
    let mut doc = serde_json::to_value(&ledger).unwrap();
    doc["backend"] = serde_json::json!(loaded.backend);
    doc
}

/// The piece of [`ledger_files`] holding a container's record.
pub fn ct_bucket_file(ctid: &str) -> String {
    format!("ct:{ctid}")
}

/// The piece of [`ledger_files`] holding an IP's holders.
pub fn ip_bucket_file(ip: &str) -> String {
    format!("ip:{ip}")
}

/// Send UDP datagrams from `src` in namespace `ns` to `dst` until `stop` is set; returns
/// how many were sent.
pub fn blast(
    ns: &str,
    src: IpAddr,
    dst: IpAddr,
    payload: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind(std::net::SocketAddr::new(src, 0)).unwrap();
        let to = std::net::SocketAddr::new(dst, 9);
        let data = vec![0x42u8; payload];
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            sock.send_to(&data, to).unwrap();
            n += 1;
            if n % 64 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        n
    })
}

/// The byte counter of the mangle FORWARD rule that ends with `spec`.
pub fn mangle_bytes(node: &Node, v: Variant, spec: &str) -> u64 {
    let save = node.ns.must(
        &format!("{}-save", v.iptables(false)),
        &["-c", "-t", "mangle"],
    );
    let line = save
        .lines()
        .find(|l| l.ends_with(spec))
        .unwrap_or_else(|| panic!("{spec} not in {save}"));
    line[1..line.find(']').unwrap()]
        .split_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap()
}

/// Steady UDP from the world to the container address `ip` until [`Steady::stop`], counted
/// also by a rule of the node's mangle table, which vzacct never touches: the reference
/// that [`mangle_bytes`] reads (`-A FORWARD -d IP/32`).
pub struct Steady {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: std::thread::JoinHandle<u64>,
}

impl Steady {
    pub fn start(node: &Node, v: Variant, ip: &str, payload: usize) -> Steady {
        let dst = format!("{ip}/32");
        node.ns.must(
            &v.iptables(false),
            &["-w", "-t", "mangle", "-A", "FORWARD", "-d", &dst],
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = blast(
            &node.world().name,
            WORLD_V4.parse().unwrap(),
            ip.parse().unwrap(),
            payload,
            stop.clone(),
        );
        Steady { stop, sender }
    }

    /// Stop sending and let the last datagrams land; how many were sent.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let sent = self.sender.join().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        sent
    }
}
