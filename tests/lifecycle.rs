//! vzctl's whole container life cycle driven through the installed hook executables, with
//! exactly the environment and order vzctl uses (`../shared/reference/vzctl.md`), real
//! packets, and exact bytes per container at the end; hooks under failure; install and
//! uninstall into a fake root; check; the init script and unit; the Prometheus textfile.

mod common;

use common::site::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

fn life_cycle_through_the_installed_hooks(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.add_ct_ip("101", "10.0.0.3");
    node.add_ct_ip("101", "10.0.0.4");
    let site = Site::new(&node);
    site.save_config("101", "10.0.0.1 2001:db8:1::1");
    site.save_config("102", "10.0.0.2");
    site.install();

    // vzctl start 101; vzctl start 102.
    site.start("101", "10.0.0.1 2001:db8:1::1");
    site.start("102", "10.0.0.2");
    assert_eq!(
        accounted(&node),
        [
            (
                "101".to_string(),
                vec!["10.0.0.1".to_string(), "2001:db8:1::1".to_string()]
            ),
            ("102".to_string(), vec!["10.0.0.2".to_string()]),
        ]
    );
    let mut want101 = plus(
        send(&node, "101", "10.0.0.1", 100, 3),
        send(&node, "101", "2001:db8:1::1", 100, 2),
    );
    let want102 = send(&node, "102", "10.0.0.2", 100, 1);

    // vzctl set 101 --ipadd 10.0.0.3 --save: vps-net_add runs BEFORE the config is rewritten.
    site.net_ok("vps-net_add", "101", "running", "10.0.0.3");
    site.save_config("101", "10.0.0.1 2001:db8:1::1 10.0.0.3");
    want101 = plus(want101, send(&node, "101", "10.0.0.3", 200, 4));

    // vzctl set 101 --ipdel 10.0.0.1 --save
    site.net_ok("vps-net_del", "101", "running", "10.0.0.1");
    site.save_config("101", "2001:db8:1::1 10.0.0.3");
    send(&node, "101", "10.0.0.1", 50, 5); // not accounted any more
    want101 = plus(want101, send(&node, "101", "10.0.0.3", 300, 1));

    // vzctl set 102 --ipdel all --save: the kernel's list, no masks.
    site.net_ok("vps-net_del", "102", "running", "10.0.0.2");
    site.save_config("102", "");
    send(&node, "102", "10.0.0.2", 100, 2); // not accounted

    // vzctl stop 101
    site.stop("101", "2001:db8:1::1 10.0.0.3");
    send(&node, "101", "10.0.0.3", 100, 2); // stopped: not accounted
    assert_eq!(accounted(&node), Vec::<(String, Vec<String>)>::new());

    // vzctl start 101 again, then suspend (vps-net_del, running, config IPs) and resume.
    site.start("101", "2001:db8:1::1 10.0.0.3");
    want101 = plus(want101, send(&node, "101", "10.0.0.3", 150, 1));
    site.net_ok("vps-net_del", "101", "running", "2001:db8:1::1 10.0.0.3");
    send(&node, "101", "10.0.0.3", 150, 3); // suspended: not accounted
    site.net_ok("vps-net_add", "101", "running", "2001:db8:1::1 10.0.0.3");
    want101 = plus(want101, send(&node, "101", "2001:db8:1::1", 80, 2));

    // vzctl set 101 --ipadd 10.0.0.4: the original vps-net_add fails, vzctl rolls back.
    write(&node.path("fail-vps-net_add"), "");
    let out = site.net("vps-net_add", "101", "running", "10.0.0.4");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the original's exit code is kept"
    );
    std::fs::remove_file(node.path("fail-vps-net_add")).unwrap();
    send(&node, "101", "10.0.0.4", 100, 2); // never accounted

    // 102 gets an address again and then halts from inside: only the umount scripts run.
    site.net_ok("vps-net_add", "102", "running", "10.0.0.2");
    site.action("vps.umount", "102");
    send(&node, "102", "10.0.0.2", 100, 2); // halted: not accounted

    assert_eq!(
        accounted(&node),
        [(
            "101".to_string(),
            vec!["10.0.0.3".to_string(), "2001:db8:1::1".to_string()]
        )]
    );
    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), want101);
    assert_eq!(total_in(&node, "102"), want102);

    // Every original ran, with vzctl's arguments and environment.
    let log = std::fs::read_to_string(node.path("vzctl.log")).unwrap();
    assert_eq!(
        log.matches("operator vps.mount VEID=101").count(),
        2,
        "{log}"
    );
    assert!(
        log.contains("vps-net_add VEID=101 VE_STATE=starting IP_ADDR=10.0.0.1 2001:db8:1::1"),
        "{log}"
    );
    assert!(
        log.contains("vps-net_del VEID=102 VE_STATE=running IP_ADDR=10.0.0.2"),
        "{log}"
    );
    let hook_log = std::fs::read_to_string(node.path("hook.log")).unwrap();
    assert_eq!(hook_log.lines().count(), 15, "{hook_log}");
    assert!(hook_log.lines().all(|l| l.contains(" ok: ")), "{hook_log}");
    assert!(!hook_log.contains("10.0.0.4"), "{hook_log}");
}

/// A hook never fails vzctl: iptables missing, a read-only state dir, a lock held by a hung
/// process. It exits 0 within its bounded wait and logs why; the next dump repairs.
fn hooks_under_failure(v: Variant) {
    let node = Node::with_topology(v, CTS);
    let site = Site::new(&node);
    site.save_config("101", "10.0.0.1");
    site.install();
    let cfg_path = site.root.join("etc/vz/vzacct.conf");
    let good = std::fs::read_to_string(&cfg_path).unwrap();

    // iptables missing.
    std::fs::write(
        &cfg_path,
        good.replace(
            &format!("iptables = {}", v.iptables(false)),
            "iptables = /nonexistent/iptables",
        ),
    )
    .unwrap();
    let out = site.net("vps-net_add", "101", "starting", "10.0.0.1");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("/nonexistent/iptables-save"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&cfg_path, &good).unwrap();

    // A read-only state dir (a read-only bind mount in a private mount namespace).
    let state = node.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let hook = site.root.join(SCRIPTS).join("vps-net_add");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {s} {s} && mount -o remount,bind,ro {s} && exec ip netns exec {ns} env -i HOME=/ TERM=linux PATH={VZCTL_PATH} VEID=101 VE_STATE=running IP_ADDR=10.0.0.1 {h}",
            s = state.display(),
            ns = node.ns.name,
            h = hook.display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );

    // The lock held by a hung process: the hook gives up after hook_lock_timeout.
    std::fs::write(
        &cfg_path,
        good.replace("[vzctl]\n", "[vzctl]\nhook_lock_timeout = 2\n"),
    )
    .unwrap();
    // --no-fork: flock becomes the sleeping process, so killing our child frees the lock.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(state.join("lock"))
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let out = site.net("vps-net_add", "101", "running", "10.0.0.1");
    let waited = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        waited.as_secs_f64() >= 2.0 && waited.as_secs_f64() < 10.0,
        "{waited:?}"
    );
    assert!(
        stderr(&out).contains("still holds the lock"),
        "{}",
        stderr(&out)
    );

    let log = std::fs::read_to_string(node.path("hook.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains(" net-add ct=101 error: ") && lines[0].contains("iptables"),
        "{log}"
    );
    assert!(
        lines[1].contains(" net-add ct=101 error: ") && lines[1].contains("Read-only"),
        "{log}"
    );
    assert!(
        lines[2].contains(" net-add ct=101 error: ") && lines[2].contains("lock"),
        "{log}"
    );

    // Strict mode passes the failure on.
    std::fs::write(
        &cfg_path,
        good.replace("[vzctl]\n", "[vzctl]\nstrict = yes\n")
            .replace(
                &format!("iptables = {}", v.iptables(false)),
                "iptables = /nonexistent/iptables",
            ),
    )
    .unwrap();
    let out = site.net("vps-net_add", "101", "running", "10.0.0.1");
    assert_eq!(out.status.code(), Some(1), "strict: {}", stderr(&out));
    std::fs::write(&cfg_path, &good).unwrap();

    // Nothing got accounted along the way; the admin (or the periodic dump with veinfo)
    // repairs it.
    write(&node.path("veinfo"), "0 0 1\n101 0 5 10.0.0.1\n");
    node.ok(&["dump"]);
    assert_eq!(node.entries("101", false), 4);
    let got = send(&node, "101", "10.0.0.1", 100, 2);
    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), got);
}

/// install/uninstall in a fake root that already has an operator's vps.mount and vzctl's
/// scripts: both run after install; a vzctl upgrade breaks a wrapper, check says so,
/// install repairs it; uninstall leaves every file byte-identical to before.
fn install_upgrade_uninstall(v: Variant) {
    let node = Node::new(v);
    let site = Site::new(&node);
    let before = tree(&site.root);
    let out = site.install();
    assert!(out.contains("chained     "), "{out}");
    assert!(out.contains("wrapped     "), "{out}");
    let installed = tree(&site.root);
    assert_eq!(
        site.install().matches("unchanged").count(),
        7,
        "second install is a no-op"
    );
    assert_eq!(tree(&site.root), installed);
    // Both the operator's script and ours run.
    site.save_config("101", "10.0.0.1");
    site.start("101", "10.0.0.1");
    assert!(
        std::fs::read_to_string(node.path("vzctl.log"))
            .unwrap()
            .contains("operator vps.mount VEID=101")
    );
    assert_eq!(
        accounted(&node),
        [("101".to_string(), vec!["10.0.0.1".to_string()])]
    );

    // A vzctl upgrade replaces vps-net_add with its new version.
    let add = site.root.join(SCRIPTS).join("vps-net_add");
    write_exec(&add, "#!/bin/sh\n# vzctl 4.10\nexit 0\n");
    let out = site.vzacct_root("check");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("overwritten by a vzctl upgrade"),
        "{}",
        stdout(&out)
    );
    let out = site.install();
    assert!(out.contains("re-wrapped"), "{out}");
    let orig = site.root.join(SCRIPTS).join("vps-net_add.vzacct-orig");
    assert_eq!(
        std::fs::read_to_string(&orig).unwrap(),
        "#!/bin/sh\n# vzctl 4.10\nexit 0\n"
    );
    let out = site.vzacct_root("check");
    assert!(!stdout(&out).contains("overwritten"), "{}", stdout(&out));

    // The wrapped original lost: install says so (not "unchanged"), and check gives the
    // remedy.
    std::fs::remove_file(&orig).unwrap();
    let out = site.vzacct_root("install");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!(
            "PROBLEM     {} is vzacct's wrapper but the original {} is missing, so every \
             container start fails; reinstall vzctl, then run install again",
            add.display(),
            orig.display()
        )),
        "{}",
        stdout(&out)
    );
    let out = site.vzacct_root("check");
    assert!(
        stdout(&out).contains(&format!(
            "the wrapped original {} is missing, so every container start fails (reinstall \
             vzctl, then run `vzacct install`)",
            orig.display()
        )),
        "{}",
        stdout(&out)
    );
    write_exec(&orig, "#!/bin/sh\n# vzctl 4.10\nexit 0\n");

    // An init script in the way that is not ours is never clobbered.
    let out = site.vzacct_root("uninstall");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut expected = before.clone();
    // The upgraded vps-net_add is the original now.
    for (p, c) in expected.iter_mut() {
        if p.starts_with("usr/libexec/vzctl/scripts/vps-net_add ") {
            *c = "#!/bin/sh\n# vzctl 4.10\nexit 0\n".to_string();
        }
    }
    // 101.conf was written by the test (as vzctl would), not by install.
    let after: Vec<(String, String)> = tree(&site.root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("etc/vz/conf/101.conf"))
        .collect();
    assert_eq!(after, expected);
    write_exec(
        &site.root.join("etc/init.d/vzacct"),
        "#!/bin/sh\n# someone else's\n",
    );
    let out = site.vzacct_root("install");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!(
            "PROBLEM     {} exists and was not written by vzacct; not overwritten",
            site.root.join("etc/init.d/vzacct").display()
        )) && stdout(&out).contains("wrapped     "),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("install left 1 problem(s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(site.root.join("etc/init.d/vzacct")).unwrap(),
        "#!/bin/sh\n# someone else's\n"
    );
    // Uninstalled with the original lost: the wrapper goes, and it says vzctl's script is
    // gone with it.
    std::fs::remove_file(&orig).unwrap();
    let out = site.vzacct_root("uninstall");
    assert!(
        stdout(&out).contains(&format!(
            "PROBLEM     vzctl's {} is gone: its original {} was missing (reinstall vzctl)",
            add.display(),
            orig.display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(!add.exists());
}

/// Every regular file and symlink under `root` with its content (or link target) and mode.
fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            use std::os::unix::fs::PermissionsExt;
            let rel = format!(
                "{} {:o}",
                p.strip_prefix(root).unwrap().display(),
                meta.permissions().mode()
            );
            if meta.is_dir() {
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.push((rel, format!("-> {}", target.display())));
            } else {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    out
}

/// `check` is all well after install, a dump and every running container accounted; it
/// names what is wrong otherwise.
fn check_reports_every_integration_point(v: Variant) {
    let node = Node::with_topology(v, CTS);
    let site = Site::new(&node);
    site.install();
    write(&node.path("veinfo"), "0 0 1\n101 0 5 10.0.0.1\n");
    let out = site.vzacct_root("check");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL running containers     1 running IP(s) not accounted: 101/10.0.0.1"),
        "{text}"
    );
    assert!(text.contains("FAIL last dump"), "{text}");
    // A SysV node (no /run/systemd/system in the root) whose init script is not enabled:
    // nothing restores the rules before vz starts the containers.
    assert!(
        text.contains("FAIL boot order             the init script is not enabled in any runlevel"),
        "{text}"
    );
    // Enabled after vz (S97 > S96): still wrong.
    for level in ['2', '3', '4', '5'] {
        let dir = site.root.join(format!("etc/rc.d/rc{level}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("../init.d/vz", dir.join("S96vz")).unwrap();
        std::os::unix::fs::symlink("../init.d/vzacct", dir.join("S97vzacct")).unwrap();
    }
    let text = stdout(&site.vzacct_root("check"));
    assert!(
        text.contains("FAIL boot order             the init script starts after vz (rc2.d: S97vzacct after S96vz"),
        "{text}"
    );
    // As chkconfig enables it: S95, before vz's S96.
    for level in ['2', '3', '4', '5'] {
        let dir = site.root.join(format!("etc/rc.d/rc{level}.d"));
        std::fs::rename(dir.join("S97vzacct"), dir.join("S95vzacct")).unwrap();
    }
    node.ok(&["dump"]);
    let out = site.vzacct_root("check");
    assert!(
        stdout(&out).contains(
            "ok   boot order             SysV: the init script starts before vz in runlevel(s) 2345"
        ),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = node.ns.run(
        env!("CARGO_BIN_EXE_vzacct"),
        &["check", "--json", "--root", site.root.to_str().unwrap()],
    );
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["ok"], true);
    assert!(doc["items"].as_array().unwrap().len() >= 14, "{doc}");
    node.ipt(false, &["-F", "VZACCT-FORWARD"]);
    let out = site.vzacct_root("check");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("2 rule(s) missing"),
        "{}",
        stdout(&out)
    );
}

/// Every dump writes the node_exporter textfile atomically, with the exact figures, and
/// promtool accepts it.
fn prometheus_textfile_from_dump(v: Variant) {
    let node = Node::with_topology(v, CTS);
    let prom = node.path("metrics/vzacct.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let text = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        format!("{text}[export]\nprometheus_textfile = {}\n", prom.display()),
    )
    .unwrap();
    node.ok(&["add", "101", "10.0.0.1"]);
    let (bytes, packets) = send(&node, "101", "10.0.0.1", 500, 3);
    node.ok(&["dump"]);
    let body = std::fs::read_to_string(&prom).unwrap();
    assert!(
        body.contains(&format!(
            "vzacct_bytes_total{{ctid=\"101\",direction=\"in\"}} {bytes}\n"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "vzacct_packets_total{{ctid=\"101\",direction=\"in\"}} {packets}\n"
        )),
        "{body}"
    );
    assert!(body.contains("vzacct_containers 1\n"), "{body}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let promtool = tool("promtool");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "promtool: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// DESIGN invariant 8: only net_add, where vzctl really assigns an IP, may move an IP from
/// one container to another. `mount` runs before vzctl has checked anything, so it accounts
/// nothing; `umount` stops accounting only what the container itself holds.
fn only_net_add_moves_an_ip(v: Variant, flavour: Flavour) {
    let node = Node::with_topology(v, CTS);
    let site = Site::with(&node, flavour);
    site.save_config("101", "10.0.0.1 10.0.0.2");
    site.save_config("102", "10.0.0.2");
    site.install();
    site.start("102", "10.0.0.2");
    let mut want102 = send(&node, "102", "10.0.0.2", 100, 2);

    // `vzctl mount 101` (stopped; its config lists 102's running IP): no IP is assigned.
    site.action("vps.mount", "101");
    assert_eq!(accounted(&node), acc(&[("102", &["10.0.0.2"])]));
    want102 = plus(want102, send(&node, "102", "10.0.0.2", 200, 3));
    site.action("vps.umount", "101");
    assert_eq!(accounted(&node), acc(&[("102", &["10.0.0.2"])]));
    want102 = plus(want102, send(&node, "102", "10.0.0.2", 300, 1));

    // `vzctl start 101` fails after the mount: the kernel refuses 10.0.0.2 (EADDRINUSE), so
    // no net_add runs; the container is killed and unmounted (vzctl 4 vps_start_custom;
    // libvzctl vzctl_env_start -> add_ip fails before vz-net_add -> vzctl2_env_stop).
    site.action("vps.mount", "101");
    site.action("vps.umount", "101");
    assert_eq!(accounted(&node), acc(&[("102", &["10.0.0.2"])]));
    want102 = plus(want102, send(&node, "102", "10.0.0.2", 400, 2));

    // A normal start of 101 with its own IP: nothing at mount, everything at net_add.
    site.save_config("101", "10.0.0.1");
    site.action("vps.mount", "101");
    assert_eq!(accounted(&node), acc(&[("102", &["10.0.0.2"])]));
    site.net_ok(site.add, "101", "starting", "10.0.0.1");
    assert_eq!(
        accounted(&node),
        acc(&[("101", &["10.0.0.1"]), ("102", &["10.0.0.2"])])
    );
    let mut want101 = send(&node, "101", "10.0.0.1", 100, 3);

    // 101 halts from inside (no net_del). Before vzeventd's umount runs, 102 gets 10.0.0.1
    // (`set --ipadd`): that net_add moves it. 101's late umount leaves it with 102.
    want101 = plus(want101, send(&node, "101", "10.0.0.1", 50, 1));
    site.net_ok(site.add, "102", "running", "10.0.0.1");
    want102 = plus(want102, send(&node, "101", "10.0.0.1", 500, 2));
    site.action("vps.umount", "101");
    assert_eq!(accounted(&node), acc(&[("102", &["10.0.0.1", "10.0.0.2"])]));
    want102 = plus(want102, send(&node, "101", "10.0.0.1", 600, 1));

    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), want101);
    assert_eq!(total_in(&node, "102"), want102);
    let log = site.hook_log();
    assert!(
        log.iter()
            .filter(|l| l.contains(" mount ct=101 ok: "))
            .all(|l| l.ends_with("; accounted when vzctl assigns them (net_add)")),
        "{log:#?}"
    );
}

fn only_net_add_moves_an_ip_vzctl4(v: Variant) {
    only_net_add_moves_an_ip(v, Flavour::Vzctl4);
}

fn only_net_add_moves_an_ip_openvz7(v: Variant) {
    only_net_add_moves_an_ip(v, Flavour::OpenVz7);
}

/// `strict = yes`: when the original net_add succeeded and vzacct fails, nothing of the
/// original's work stays. vzctl 4 undoes only its kernel add (vps_add_ip), so the wrapper
/// runs the original vps-net_del for the same IPs itself; libvzctl's add_ip runs vz-net_del
/// on any failure, so its wrapper leaves that to libvzctl and the original runs once.
fn strict_leaves_nothing_half_applied(v: Variant, flavour: Flavour) {
    let node = Node::with_topology(v, CTS);
    let site = Site::with(&node, flavour);
    site.save_config("101", "10.0.0.1");
    site.install();
    let cfg = site.root.join("etc/vz/vzacct.conf");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace("[vzctl]\n", "[vzctl]\nstrict = yes\n")
            .replace(
                &format!("iptables = {}", v.iptables(false)),
                "iptables = /nonexistent/iptables",
            ),
    )
    .unwrap();
    let out = site.net(site.add, "101", "starting", "10.0.0.1");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (add, del) = (site.add, site.del);
    match flavour {
        Flavour::Vzctl4 => {
            assert_eq!(site.veip("101"), Vec::<String>::new());
            assert_eq!(
                site.vzctl_log(),
                format!(
                    "{add} VEID=101 VE_STATE=starting IP_ADDR=10.0.0.1 \n\
                     {del} VEID=101 VE_STATE=starting IP_ADDR=10.0.0.1 \n"
                )
            );
        }
        Flavour::OpenVz7 => {
            assert_eq!(site.veip("101"), ["10.0.0.1"]);
            // add_ip's rollback: vz-net_del through the wrapper (vzacct fails again; its
            // exit code is ignored by libvzctl, the original's is returned).
            let out = site.net(del, "101", "starting", "10.0.0.1");
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert_eq!(site.veip("101"), Vec::<String>::new());
            assert_eq!(
                site.vzctl_log(),
                format!(
                    "{add} VEID=101 VE_STATE=starting IP_ADDR=10.0.0.1 \n\
                     {del} VEID=101 VE_STATE=starting IP_ADDR=10.0.0.1 \n"
                )
            );
        }
    }
    // Back to a working config: nothing was accounted, and the start goes through.
    std::fs::write(&cfg, &good).unwrap();
    assert_eq!(accounted(&node), acc(&[]));
    site.start("101", "10.0.0.1");
    let want = send(&node, "101", "10.0.0.1", 100, 2);
    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), want);
}

fn strict_leaves_nothing_half_applied_vzctl4(v: Variant) {
    strict_leaves_nothing_half_applied(v, Flavour::Vzctl4);
}

fn strict_leaves_nothing_half_applied_openvz7(v: Variant) {
    strict_leaves_nothing_half_applied(v, Flavour::OpenVz7);
}

/// Proxmox VE (pmxcfs on /etc/pve): install refuses and changes nothing; check says why.
#[test]
fn install_refuses_proxmox() {
    let node = Node::new(Variant::Legacy);
    let site = Site::new(&node);
    write(
        &site.root.join("proc/mounts"),
        "/dev/sda1 / ext4 rw 0 0\n/dev/fuse /etc/pve fuse rw,nosuid,nodev,relatime,user_id=0,group_id=0,default_permissions,allow_other 0 0\n",
    );
    let before = tree(&site.root);
    let out = site.vzacct_root("install");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let mounts = site.root.join("proc/mounts");
    assert!(
        stderr(&out).contains(&format!(
            "this is a Proxmox VE node ({} lists a fuse file system on /etc/pve (Proxmox's pmxcfs)); vzacct does not install here: Proxmox's vzctl runs proxmox.umount instead of vps.umount",
            mounts.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("every container start would fail. Nothing was changed."),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&site.root), before);
    let out = site.vzacct_root("check");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL vzctl flavour          Proxmox VE: "),
        "{}",
        stdout(&out)
    );
}

/// vzctl's stop runs net_del for each IP, then umount: the umount of a container that holds
/// nothing any more has nothing to stop, and reads no kernel (so it is quick, and a broken
/// iptables does not touch it). One that still holds an address does read it.
fn a_stop_reads_the_kernel_once(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.ok(&["add", "101", "10.0.0.1"]);
    node.ok(&["add", "102", "10.0.0.2"]);
    let (mut sent, _) = send(&node, "101", "10.0.0.1", 300, 2);
    node.ok(&["dump"]);
    sent += send(&node, "101", "10.0.0.1", 200, 1).0;
    let net_del = &[
        ("VEID", "101"),
        ("VE_STATE", "stopping"),
        ("IP_ADDR", "10.0.0.1"),
    ];
    let hook = |args: &[&str], env: &[(&str, &str)]| {
        let out = node.vzacct_env(args, env);
        assert!(out.status.success(), "{args:?} {env:?}: {}", stderr(&out));
    };
    hook(&["hook", "net-del"], net_del);
    let good = std::fs::read_to_string(&node.config).unwrap();
    let broken = good.replace(
        &format!("iptables = {}", v.iptables(false)),
        "iptables = /nonexistent/iptables",
    );
    std::fs::write(&node.config, broken).unwrap();
    for ct in ["101", "999", "102"] {
        hook(&["hook", "umount"], &[("VEID", ct)]);
    }
    let log = std::fs::read_to_string(node.path("hook.log")).unwrap();
    let umounts: Vec<&str> = log.lines().filter(|l| l.contains(" umount ")).collect();
    assert_eq!(umounts.len(), 3, "{log}");
    assert!(
        umounts[0].ends_with("umount ct=101 ok: stopped accounting none"),
        "{log}"
    );
    assert!(
        umounts[1].ends_with("umount ct=999 ok: stopped accounting none"),
        "{log}"
    );
    assert!(
        umounts[2].contains("umount ct=102 error: ")
            && umounts[2].contains("/nonexistent/iptables-save"),
        "{log}"
    );
    std::fs::write(&node.config, good).unwrap();
    node.ok(&["dump"]);
    let doc = show(&node);
    assert_eq!(in_bytes(&doc, "101"), sent);
    let accounted = accounted(&node);
    assert_eq!(
        accounted,
        [("102".to_string(), vec!["10.0.0.2".to_string()])]
    );
}

per_variant!(
    a_stop_reads_the_kernel_once,
    only_net_add_moves_an_ip_vzctl4,
    only_net_add_moves_an_ip_openvz7,
    strict_leaves_nothing_half_applied_vzctl4,
    strict_leaves_nothing_half_applied_openvz7,
    life_cycle_through_the_installed_hooks,
    hooks_under_failure,
    install_upgrade_uninstall,
    check_reports_every_integration_point,
    prometheus_textfile_from_dump,
);
