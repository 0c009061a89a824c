//! The installed init script, hook shims and systemd unit: POSIX sh (sh -n, dash -n,
//! checkbashisms), a unit that systemd-analyze accepts, and an init script whose start and
//! stop really restore the rules and dump the counters.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Install into a fresh fake root (with vzctl's scripts present) and return the root.
fn installed(node: &Node) -> PathBuf {
    let root = node.path("root");
    for (dir, name) in [
        ("usr/lib/vzctl/scripts", "vps-net_add"),
        ("usr/lib/vzctl/scripts", "vps-net_del"),
        ("usr/libexec/libvzctl/scripts", "vz-net_add"),
        ("usr/libexec/libvzctl/scripts", "vz-net_del"),
    ] {
        let p = root.join(dir).join(name);
        write(&p, "#!/bin/sh\nexit 0\n");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(
        &root.join("etc/vz/vzacct.conf"),
        std::fs::read(&node.config).unwrap(),
    );
    let out = node.ns.run(
        env!("CARGO_BIN_EXE_vzacct"),
        &["install", "--root", root.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    root
}

fn shell_scripts(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![
        root.join("etc/init.d/vzacct"),
        root.join("etc/vz/conf/vps.mount"),
        root.join("etc/vz/conf/vps.umount"),
        root.join("usr/lib/vzctl/scripts/vps-net_add"),
        root.join("usr/lib/vzctl/scripts/vps-net_del"),
        root.join("usr/libexec/libvzctl/scripts/vz-net_add"),
        root.join("usr/libexec/libvzctl/scripts/vz-net_del"),
    ];
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for t in [
        "init/vzacct",
        "hooks/vps.mount",
        "hooks/vps.umount",
        "hooks/vps-net_add",
        "hooks/vps-net_del",
        "hooks/vz-net_add",
        "hooks/vz-net_del",
    ] {
        v.push(repo.join(t));
    }
    v
}

#[test]
fn scripts_are_posix_sh() {
    let node = Node::new(Variant::Nft);
    let root = installed(&node);
    let checkbashisms = tool("checkbashisms");
    for script in shell_scripts(&root) {
        for (prog, args) in [("sh", vec!["-n"]), ("dash", vec!["-n"])] {
            let out = Command::new(prog)
                .args(&args)
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{prog} -n {}: {}",
                script.display(),
                stderr(&out)
            );
        }
        let out = Command::new("perl")
            .arg(&checkbashisms)
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "checkbashisms {}: {}",
            script.display(),
            stderr(&out)
        );
    }
    // The checker can fail: a bashism is reported.
    let bad = node.path("bad.sh");
    write(&bad, "#!/bin/sh\nif [[ -n $x ]]; then echo $RANDOM; fi\n");
    let out = Command::new("perl")
        .arg(&checkbashisms)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "checkbashisms accepted a bashism");
}

#[test]
fn systemd_unit_verifies() {
    let node = Node::new(Variant::Nft);
    let root = installed(&node);
    let unit = root.join("etc/systemd/system/vzacct.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Before=vz.service\n"));
    assert!(text.contains("Type=oneshot\n") && text.contains("RemainAfterExit=yes\n"));
    let config = root.join("etc/vz/vzacct.conf").canonicalize().unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_vzacct"))
        .canonicalize()
        .unwrap();
    let fallback = format!(
        " --fallback-log '{}'",
        root.join("var/log/vzacct/hook.log").display()
    );
    for (key, event) in [("ExecStart", "restore"), ("ExecStop", "dump")] {
        let want = format!(
            "{key}='{}' --config '{}' hook {event}{fallback}\n",
            exe.display(),
            config.display()
        );
        assert!(text.contains(&want), "{want} not in:\n{text}");
    }
    // tests/deps.sh installs systemd-analyze (Debian's systemd package): missing is a
    // failure, not a skip.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): run `bash tests/deps.sh` to install it")
        });
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        stderr(&out)
    );
    // The verifier can fail: a unit with a broken key is reported.
    let bad = node.path("bad.service");
    write(&bad, text.replace("Type=oneshot", "Type=oneshotx"));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.stderr.is_empty(),
        "systemd-analyze accepted Type=oneshotx"
    );
}

#[test]
fn lsb_header_orders_around_vz() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("init/vzacct")).unwrap();
    for line in [
        "# Provides:          vzacct",
        "# X-Start-Before:    vz",
        "# X-Stop-After:      vz",
        "# chkconfig: 2345 95 89",
    ] {
        assert!(text.contains(line), "missing {line:?}");
    }
}

/// `/etc/init.d/vzacct start` restores the rules, `stop` dumps the counters.
fn init_script_start_and_stop(v: Variant) {
    let node = Node::with_topology(v, &[("101", "10.0.0.1", "2001:db8:1::1")]);
    let root = installed(&node);
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    write(&node.path("boot_id"), boot);
    node.ok(&["add", "101", "10.0.0.1"]);
    node.reboot_tables();
    let script = root.join("etc/init.d/vzacct");
    let run = |arg: &str| {
        let out = node.ns.run(script.to_str().unwrap(), &[arg]);
        assert!(out.status.success(), "init {arg}: {}", stderr(&out));
        stdout(&out)
    };
    assert!(run("start").contains("1 accounted container(s) restored"));
    assert_eq!(node.entries("101", false), 4);
    let src: std::net::IpAddr = WORLD_V4.parse().unwrap();
    send_udp(
        node.world(),
        src,
        &node.ct("101").ns,
        node.ct("101").v4,
        100,
        3,
    );
    assert!(run("stop").contains("harvested 384 bytes in"));
    let out = node.ns.run(script.to_str().unwrap(), &["bogus"]);
    assert_eq!(out.status.code(), Some(3));
}

per_variant!(init_script_start_and_stop);
