//! The binaries that `packaging/build.sh` ships, as old nodes run them: `target/dist/vzacct`
//! needs no glibc symbol above 2.17 (OpenVZ 7, CentOS 7), `target/dist/vzacct-static` no
//! shared library at all (OpenVZ 6), and both account exactly on the system call tables of
//! the 2.6.32 (OpenVZ 6) and 3.10 (OpenVZ 7) kernels: `tests/oldkernel/launcher.c`, compiled
//! here, makes every later system call fail with ENOSYS for vzacct and every program it runs.

mod common;
mod dist;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;

/// `objdump -p`'s NEEDED entries, in order.
fn needed(bin: &Path) -> Vec<String> {
    dist::run("objdump", &["-p", bin.to_str().unwrap()])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// A glibc symbol version ("2.3.4") as numbers, for ordering.
fn version(v: &str) -> Vec<u32> {
    v.split('.').map(|n| n.parse().unwrap()).collect()
}

#[test]
fn glibc_floor_is_2_17() {
    let Some(bin) = dist::artifact("vzacct") else {
        return;
    };
    let symbols = dist::run("objdump", &["-T", bin.to_str().unwrap()]);
    let mut versions: Vec<&str> = symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .collect();
    versions.sort_by_key(|v| version(v));
    versions.dedup();
    // Which versions appear depends on which libc functions the code calls; what must hold
    // is the floor: glibc's x86_64 base version is there, nothing newer than 2.17.
    assert!(
        versions.first() == Some(&"2.2.5") && versions.contains(&"2.17"),
        "GLIBC_ symbol versions of {}: {versions:?}",
        bin.display()
    );
    assert!(
        versions.iter().all(|v| version(v) <= version("2.17")),
        "{versions:?}"
    );
    assert_eq!(
        needed(&bin),
        [
            // The bundled SQLite uses the math library (part of glibc).
            "libm.so.6",
            "libc.so.6",
            "ld-linux-x86-64.so.2",
            "libpthread.so.0",
            "libdl.so.2"
        ]
    );
}

#[test]
fn static_binary_has_no_dynamic_dependency() {
    let Some(bin) = dist::artifact("vzacct-static") else {
        return;
    };
    let path = bin.to_str().unwrap();
    assert_eq!(needed(&bin), Vec::<String>::new());
    let headers = dist::run("objdump", &["-p", path]);
    assert!(
        !headers.contains("INTERP"),
        "{path} asks for a dynamic loader:\n{headers}"
    );
    assert!(
        dist::run("objdump", &["-T", path]).contains("no symbols"),
        "{path} has dynamic symbols"
    );
}

/// The launcher, compiled once per test run.
fn launcher() -> &'static Path {
    static LAUNCHER: OnceLock<PathBuf> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oldkernel/launcher.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oldkernel-launcher");
        dist::run(
            "cc",
            &[
                "-O2",
                "-Wall",
                "-Werror",
                "-o",
                out.to_str().unwrap(),
                src.to_str().unwrap(),
            ],
        );
        out
    })
}

/// Python's exit under the launcher: a system call the kernel lacks must fail with ENOSYS
/// (errno 38), one it has must work.
fn probe(kernel: &str, code: &str) -> String {
    let out = Command::new(launcher())
        .args([kernel, "python3", "-c", code])
        .output()
        .expect("run python3 under the launcher");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn launcher_denies_exactly_the_later_system_calls() {
    // prlimit64 (302) came with 2.6.36, getrandom (318) with 3.17, clone3 (435) with 5.3.
    let prlimit = "import resource\ntry:\n resource.prlimit(0, resource.RLIMIT_NOFILE); print('ok')\nexcept OSError as e: print(e.errno)";
    let getrandom =
        "import os\ntry:\n os.getrandom(1); print('ok')\nexcept OSError as e: print(e.errno)";
    let clone3 = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.syscall(435, None, 0), ctypes.get_errno())";
    assert_eq!(probe("2.6.32", prlimit), "38\n");
    assert_eq!(probe("3.10", prlimit), "ok\n");
    assert_eq!(probe("2.6.32", getrandom), "38\n");
    assert_eq!(probe("3.10", getrandom), "38\n");
    assert_eq!(probe("3.10", clone3), "-1 38\n");
    let unknown = Command::new(launcher())
        .args(["4.0", "true"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

const NOW: &str = "2026-12-02T12:00:00+00:00";

/// Run `bin` under the launcher in the node namespace with the node's config.
fn old(node: &Node, kernel: &str, bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.ns.name, "env"])
        .arg(format!(
            "VZACCT_BOOT_ID_FILE={}",
            node.path("boot_id").display()
        ))
        .arg("TZ=UTC")
        .arg(format!("VZACCT_NOW={NOW}"));
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    if kernel == "2.6.32" {
        // uname says 2.6 too (UNAME26 personality, inherited across exec), for a C library
        // that would check the kernel's version at start.
        cmd.args(["setarch", "x86_64", "--uname-2.6"]);
    }
    cmd.arg(launcher())
        .arg(kernel)
        .arg(bin)
        .arg("--config")
        .arg(&node.config)
        .args(args)
        .env_remove("VZACCT_CONFIG");
    cmd.output().expect("run vzacct under the launcher")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "{what} wrote to stderr"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// add, a vzctl net_add hook, real packets, dump and show, all under the old kernel's table.
fn accounts_exactly(kernel: &str, binary: &str, v: Variant) {
    let Some(bin) = dist::artifact(binary) else {
        return;
    };
    let node = Node::with_topology(
        v,
        &[
            ("101", "10.0.0.1", "2001:db8:1::1"),
            ("102", "10.0.0.2", "2001:db8:1::2"),
        ],
    );
    // (The hook log is in the node's temp dir, not the host's /var/log: Node::new.)
    let log = node.path("hook.log");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let what = format!("{binary} {} on {kernel}", args.join(" "));
        ok(old(&node, kernel, &bin, args, env), &what)
    };

    let sets = if v.ipset() {
        "ipset: 8 element(s) added, 0 removed, 8 set(s) created, 0 destroyed\n"
    } else {
        ""
    };
    assert_eq!(
        run(&["add", "101", "10.0.0.1", "2001:db8:1::1"], &[]),
        format!(
            "container 101: now accounting 10.0.0.1, 2001:db8:1::1\n{sets}\
             IPv4: 4 rule(s) added, 0 removed (one batch of 10 operation(s))\n\
             IPv6: 4 rule(s) added, 0 removed (one batch of 10 operation(s))\n"
        )
    );
    // With ipset the quick hook touches only this container's bucket and elements.
    let quick = if v.ipset() {
        ""
    } else {
        " [full run: backend = iptables]"
    };
    assert_eq!(
        run(
            &["hook", "net-add"],
            &[
                ("VEID", "102"),
                ("VE_STATE", "starting"),
                ("IP_ADDR", "10.0.0.2 2001:db8:1::2")
            ]
        ),
        format!(
            "vzacct hook net-add: VE_STATE=starting accounting 10.0.0.2 2001:db8:1::2 (new: 10.0.0.2 2001:db8:1::2){quick}\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "{NOW} net-add ct=102 ok: VE_STATE=starting accounting 10.0.0.2 2001:db8:1::2 (new: 10.0.0.2 2001:db8:1::2){quick}\n"
        )
    );
    let world = node.world();
    let (w4, w6) = (WORLD_V4.parse().unwrap(), WORLD_V6.parse().unwrap());
    let (c1, c2) = (node.ct("101"), node.ct("102"));
    send_udp(world, w4, &c1.ns, c1.v4, 100, 3);
    send_udp(&c1.ns, c1.v6, world, w6, 200, 2);
    send_udp(world, w6, &c2.ns, c2.v6, 50, 4);
    send_udp(&c2.ns, c2.v4, world, w4, 70, 5);
    let (bytes_in, bytes_out) = (
        3 * (100 + 28) + 4 * (50 + 48),
        2 * (200 + 48) + 5 * (70 + 28),
    );
    assert_eq!(
        run(&["dump"], &[]),
        format!(
            "harvested {bytes_in} bytes in / {bytes_out} bytes out (7 / 7 packets)\n\
             IPv4: rules already in place\nIPv6: rules already in place\n"
        )
    );
    let show: serde_json::Value =
        serde_json::from_str(&run(&["show", "--json"], &[])).expect("show --json");
    let total = |ct: &str| F::of(&ct_of(&show, ct)["total"]);
    assert_eq!(
        total("101"),
        F::inb(3 * (100 + 28), 3).add(F::outb(2 * (200 + 48), 2)),
        "101 on {kernel} by {binary}"
    );
    assert_eq!(
        total("102"),
        F::inb(4 * (50 + 48), 4).add(F::outb(5 * (70 + 28), 5)),
        "102 on {kernel} by {binary}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&run(&["status", "--json"], &[])).expect("status --json");
    let ip = |ip: &str| serde_json::json!({"ip": ip, "rules_expected": 4, "rules_present": 4});
    let ct = |ctid: &str, v4: &str, v6: &str| serde_json::json!({"ctid": ctid, "in_place": true, "ips": [ip(v4), ip(v6)]});
    let family = |f: &str| serde_json::json!({"chains_and_jumps_in_place": true, "family": f, "stray_rules": 0});
    assert_eq!(
        status,
        serde_json::json!({
            "backend": v.backend(),
            "containers": [
                ct("101", "10.0.0.1", "2001:db8:1::1"),
                ct("102", "10.0.0.2", "2001:db8:1::2"),
            ],
            "jsonversion": 2,
            "rules_known": true,
            "netfilter": [family("ipv4"), family("ipv6")],
            "set_elements_waiting_for_dump": 0,
            "sets_missing": 0,
            "stray_set_elements": 0,
        })
    );
}

macro_rules! old_kernel_tests {
    ($($name:ident: $kernel:literal, $binary:literal, $variant:ident;)*) => {
        $( #[test] fn $name() { accounts_exactly($kernel, $binary, Variant::$variant) } )*
    };
}

old_kernel_tests! {
    static_on_2_6_32_ipset: "2.6.32", "vzacct-static", LegacyIpset;
    static_on_2_6_32_rules: "2.6.32", "vzacct-static", Legacy;
    static_on_3_10_ipset: "3.10", "vzacct-static", LegacyIpset;
    glibc_2_17_on_3_10_ipset: "3.10", "vzacct", LegacyIpset;
    glibc_2_17_on_3_10_rules: "3.10", "vzacct", Legacy;
    glibc_2_17_on_2_6_32_ipset: "2.6.32", "vzacct", LegacyIpset;
}
