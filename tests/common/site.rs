//! A node as vzctl sees it, for driving the installed scripts: a fake root holding the
//! network scripts of one vzctl flavour (vzctl 4's `vps-net_add`/`vps-net_del` or OpenVZ 7's
//! `vz-net_add`/`vz-net_del`) and an operator's own `vps.mount`, with vzacct installed into
//! it. Scripts run exactly as vzctl runs them (`../shared/reference/vzctl.md`): only vzctl's
//! environment, stdin from /dev/null, inside the node's network namespace.

use super::*;
use serde_json::Value;
use std::process::Stdio;

pub const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];
/// vzctl's PATH for its scripts (vzctl 4 script.c; libvzctl `DEF_PATH`, lib/vztypes.h).
pub const VZCTL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// vzctl 4's script dir (RPM, vzctl >= 4.0).
pub const SCRIPTS: &str = "usr/libexec/vzctl/scripts";
/// libvzctl's script dir on OpenVZ 7.
pub const VZ7_SCRIPTS: &str = "usr/libexec/libvzctl/scripts";

/// Which vzctl runs the scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Vzctl4,
    OpenVz7,
}

/// A fake root holding vzctl's scripts and the operator's vps.mount, with vzacct installed.
pub struct Site<'a> {
    pub node: &'a Node,
    pub root: PathBuf,
    pub flavour: Flavour,
    /// The dir of the network scripts, inside `root`.
    pub scripts: PathBuf,
    /// The add and the del script's names.
    pub add: &'static str,
    pub del: &'static str,
}

impl<'a> Site<'a> {
    /// A vzctl 4 node.
    pub fn new(node: &'a Node) -> Site<'a> {
        Site::with(node, Flavour::Vzctl4)
    }

    /// An OpenVZ 7 node.
    pub fn openvz7(node: &'a Node) -> Site<'a> {
        Site::with(node, Flavour::OpenVz7)
    }

    /// vzctl's original network scripts (they log their call, keep the IPs they were given
    /// in a state file as the stock ones do, and can be made to fail), an operator's own
    /// vps.mount, the containers' configs, and a vzacct config.
    pub fn with(node: &'a Node, flavour: Flavour) -> Site<'a> {
        let root = node.path("root");
        let d = node.dir.path().display().to_string();
        let (dir, add, del) = match flavour {
            Flavour::Vzctl4 => (SCRIPTS, "vps-net_add", "vps-net_del"),
            Flavour::OpenVz7 => (VZ7_SCRIPTS, "vz-net_add", "vz-net_del"),
        };
        let scripts = root.join(dir);
        let keep = format!("for ip in $IP_ADDR; do echo \"$ip\" >> {d}/veip-$VEID; done\n");
        let drop = format!(
            "for ip in $IP_ADDR; do grep -Fvx \"$ip\" {d}/veip-$VEID > {d}/veip.tmp; mv {d}/veip.tmp {d}/veip-$VEID; done\n"
        );
        for (name, state) in [(add, keep), (del, drop)] {
            write_exec(
                &scripts.join(name),
                &format!(
                    "#!/bin/sh\necho \"{name} VEID=$VEID VE_STATE=$VE_STATE IP_ADDR=$IP_ADDR $*\" >> {d}/vzctl.log\n\
                     [ -e {d}/fail-{name} ] && exit 1\n{state}exit 0\n"
                ),
            );
        }
        write_exec(
            &root.join("etc/vz/conf/vps.mount"),
            &format!("#!/bin/sh\necho \"operator vps.mount VEID=$VEID\" >> {d}/vzctl.log\n"),
        );
        let config = format!(
            "[vzctl]\nconf_dir = {r}/etc/vz/conf\nveinfo = {d}/veinfo\nhook_log = {d}/hook.log\n\
             [netfilter]\niptables = {}\nip6tables = {}\nbackend = {}\n\
             [storage]\nstate_dir = {d}/state\ncsv_dir = {d}/csv\ntimezone = UTC\n",
            node.variant.iptables(false),
            node.variant.iptables(true),
            node.variant.backend(),
            r = root.display(),
        );
        write(&root.join("etc/vz/vzacct.conf"), &config);
        write(&node.config, &config);
        // Hooks run with vzctl's bare environment, so they read the kernel's real boot id;
        // the test's own vzacct calls must see the same one.
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        write(&node.path("boot_id"), boot);
        Site {
            node,
            root,
            flavour,
            scripts,
            add,
            del,
        }
    }

    pub fn install(&self) -> String {
        let out = self.vzacct_root("install");
        assert!(
            out.status.success(),
            "install: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    pub fn vzacct_root(&self, cmd: &str) -> Output {
        self.node.ns.run(
            env!("CARGO_BIN_EXE_vzacct"),
            &[cmd, "--root", self.root.to_str().unwrap()],
        )
    }

    pub fn conf(&self, ctid: &str) -> PathBuf {
        self.root.join(format!("etc/vz/conf/{ctid}.conf"))
    }

    /// Run one of the installed scripts as vzctl does: only vzctl's environment, stdin
    /// from /dev/null, in the node's network namespace.
    pub fn script(&self, path: &Path, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.node.ns.name,
            "env",
            "-i",
            "HOME=/",
            "TERM=linux",
        ])
        .arg(format!("PATH={VZCTL_PATH}"));
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(path)
            .stdin(Stdio::null())
            .output()
            .expect("run script")
    }

    pub fn ok(&self, path: &Path, env: &[(&str, &str)]) {
        let out = self.script(path, env);
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    }

    /// An action script (`vps.mount`, `vps.umount`) with `VEID` and `VE_CONFFILE`, as
    /// vzctl 4's and libvzctl's `run_action_scripts` give them.
    pub fn action(&self, name: &str, ctid: &str) {
        let conf = self.conf(ctid).display().to_string();
        self.ok(
            &self.root.join("etc/vz/conf").join(name),
            &[("VEID", ctid), ("VE_CONFFILE", &conf)],
        );
    }

    /// A network script by name, with `VEID`, `VE_STATE` and `IP_ADDR`.
    pub fn net(&self, name: &str, ctid: &str, state: &str, ips: &str) -> Output {
        self.script(
            &self.scripts.join(name),
            &[("VEID", ctid), ("VE_STATE", state), ("IP_ADDR", ips)],
        )
    }

    pub fn net_ok(&self, name: &str, ctid: &str, state: &str, ips: &str) {
        let out = self.net(name, ctid, state, ips);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }

    /// vzctl saves a config by writing `<file>.tmp` and renaming it over the file.
    pub fn save_config(&self, ctid: &str, ips: &str) {
        let path = self.conf(ctid);
        let tmp = path.with_extension("conf.tmp");
        write(
            &tmp,
            format!("ONBOOT=\"yes\"\nIP_ADDRESS=\"{ips}\"\nHOSTNAME=\"ct{ctid}\"\n"),
        );
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// `vzctl start`: the mount scripts, then the add script with the config's IPs
    /// (`VE_STATE=starting`). Both flavours run them in this order (vzctl 4
    /// `vps_start_custom`; libvzctl `vzctl_env_start` -> `vzctl2_env_mount`, then
    /// `vzctl2_apply_param` -> `add_ip`).
    pub fn start(&self, ctid: &str, ips: &str) {
        self.action("vps.mount", ctid);
        self.net_ok(self.add, ctid, "starting", ips);
    }

    /// `vzctl stop`. vzctl 4: vps-net_del with the kernel's IPs, then the umount scripts
    /// (`env_stop`, `vps_stop`). OpenVZ 7: no vz-net_del at all; the umount scripts run
    /// (`vzctl_env_stop` -> `do_env_post_stop` -> `vzctl2_env_umount`), and vz-stop removes
    /// the routes after them.
    pub fn stop(&self, ctid: &str, kernel_ips: &str) {
        if self.flavour == Flavour::Vzctl4 {
            self.net_ok(self.del, ctid, "stopping", kernel_ips);
        }
        self.action("vps.umount", ctid);
    }

    /// The IPs the original network scripts keep for a container (their state file).
    pub fn veip(&self, ctid: &str) -> Vec<String> {
        std::fs::read_to_string(self.node.path(&format!("veip-{ctid}")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What vzctl's original scripts logged.
    pub fn vzctl_log(&self) -> String {
        std::fs::read_to_string(self.node.path("vzctl.log")).unwrap_or_default()
    }

    /// The hook log's lines.
    pub fn hook_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.node.path("hook.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

pub fn write_exec(path: &Path, text: &str) {
    write(path, text);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn show(node: &Node) -> Value {
    serde_json::from_str(&node.ok(&["show", "--json"])).unwrap()
}

/// (in_bytes, in_packets) of a container's total; (0, 0) when it has no record.
pub fn total_in(node: &Node, ctid: &str) -> (u64, u64) {
    let doc = show(node);
    let c = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ctid"] == ctid)
        .unwrap_or_else(|| panic!("{ctid} not in {doc}"));
    (
        c["total"]["in_bytes"].as_u64().unwrap(),
        c["total"]["in_packets"].as_u64().unwrap(),
    )
}

/// world -> `ip` datagrams (the address must be on container `ctid`); returns (bytes, packets).
pub fn send(node: &Node, ctid: &str, ip: &str, payload: usize, n: usize) -> (u64, u64) {
    let dst: IpAddr = ip.parse().unwrap();
    let src: IpAddr = if dst.is_ipv6() { WORLD_V6 } else { WORLD_V4 }
        .parse()
        .unwrap();
    send_udp(node.world(), src, &node.ct(ctid).ns, dst, payload, n);
    (n as u64 * udp_ip_len(dst, payload), n as u64)
}

pub fn plus(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0 + b.0, a.1 + b.1)
}

/// The accounted containers and their IPs, from `status --json`.
pub fn accounted(node: &Node) -> Vec<(String, Vec<String>)> {
    let doc: Value = serde_json::from_str(&node.ok(&["status", "--json"])).unwrap();
    doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ips = c["ips"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["ip"].as_str().unwrap().to_string())
                .collect();
            (c["ctid"].as_str().unwrap().to_string(), ips)
        })
        .collect()
}

/// `accounted` in a literal form: `[("101", &["10.0.0.1"])]`.
pub fn acc(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(c, ips)| (c.to_string(), ips.iter().map(|i| i.to_string()).collect()))
        .collect()
}
