//! OpenVZ 7 (libvzctl vz7): the container life cycle driven through the installed
//! `vz-net_add`/`vz-net_del` wrappers in libvzctl's order, with real packets and exact bytes
//! per container; install, check and uninstall on an OpenVZ 7 root.
//!
//! libvzctl's order (`OpenVZ/libvzctl` branch vz7-u22):
//! - start (`vzctl_env_start`, lib/env.c): `vzctl2_env_mount` runs the mount action scripts,
//!   then `vzctl2_apply_param` -> `apply_venet_param` -> `add_ip` (lib/net.c): the kernel add,
//!   then `vz-net_add` with `VE_STATE=starting` and every config IP;
//! - `set --ipadd` on a running container: `add_ip`, `VE_STATE=running`, only the IPs it does
//!   not have yet; when `vz-net_add` (or the configuration inside the container after it)
//!   fails, `add_ip` runs `vz-net_del` for the same IPs and deletes them from the kernel;
//! - `set --ipdel`: `del_ip` runs `vz-net_del` (only for IPs the container has) BEFORE the
//!   kernel delete;
//! - stop (`vzctl_env_stop`): no `vz-net_del`; `do_env_post_stop` -> `vzctl2_env_umount` runs
//!   the umount action scripts, then `vz-stop` removes the routes;
//! - a halt from inside: vzeventd unmounts, the umount action scripts run.

mod common;

use common::site::*;
use common::*;

fn life_cycle_through_the_openvz7_wrappers(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.add_ct_ip("101", "10.0.0.3");
    node.add_ct_ip("101", "10.0.0.4");
    node.add_ct_ip("101", "10.0.0.5");
    let site = Site::openvz7(&node);
    site.save_config("101", "10.0.0.1 2001:db8:1::1");
    site.save_config("102", "10.0.0.2");
    let out = site.install();
    assert!(
        out.contains(&format!(
            "wrapped     {} (vzctl's original now runs from {}.vzacct-orig)",
            site.scripts.join("vz-net_add").display(),
            site.scripts.join("vz-net_add").display()
        )),
        "{out}"
    );
    assert!(out.contains("vz-net_del (vzctl's original"), "{out}");

    // vzctl start 101; vzctl start 102.
    site.start("101", "10.0.0.1 2001:db8:1::1");
    site.start("102", "10.0.0.2");
    assert_eq!(
        accounted(&node),
        acc(&[
            ("101", &["10.0.0.1", "2001:db8:1::1"]),
            ("102", &["10.0.0.2"])
        ])
    );
    let mut want101 = plus(
        send(&node, "101", "10.0.0.1", 100, 3),
        send(&node, "101", "2001:db8:1::1", 100, 2),
    );
    let mut want102 = send(&node, "102", "10.0.0.2", 100, 1);

    // vzctl set 101 --ipadd 10.0.0.3 --save: vz-net_add, running, the new IP only.
    site.net_ok("vz-net_add", "101", "running", "10.0.0.3");
    site.save_config("101", "10.0.0.1 2001:db8:1::1 10.0.0.3");
    want101 = plus(want101, send(&node, "101", "10.0.0.3", 200, 4));

    // vzctl set 101 --ipdel 10.0.0.1 --save: vz-net_del runs before the kernel delete.
    site.net_ok("vz-net_del", "101", "running", "10.0.0.1");
    site.save_config("101", "2001:db8:1::1 10.0.0.3");
    send(&node, "101", "10.0.0.1", 50, 5); // not accounted any more
    want101 = plus(want101, send(&node, "101", "10.0.0.3", 300, 1));

    // vzctl set 101 --ipadd 10.0.0.4: the original vz-net_add fails; add_ip rolls back by
    // running vz-net_del for the same IPs, then deleting them from the kernel.
    write(&node.path("fail-vz-net_add"), "");
    let out = site.net("vz-net_add", "101", "running", "10.0.0.4");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the original's exit code is kept"
    );
    std::fs::remove_file(node.path("fail-vz-net_add")).unwrap();
    site.net_ok("vz-net_del", "101", "running", "10.0.0.4");
    send(&node, "101", "10.0.0.4", 100, 2); // never accounted

    // vzctl set 101 --ipadd 10.0.0.5: vz-net_add succeeds, the configuration inside the
    // container fails, and add_ip rolls back with vz-net_del: counted while it was there.
    site.net_ok("vz-net_add", "101", "running", "10.0.0.5");
    want101 = plus(want101, send(&node, "101", "10.0.0.5", 120, 3));
    site.net_ok("vz-net_del", "101", "running", "10.0.0.5");
    send(&node, "101", "10.0.0.5", 120, 2); // rolled back: not accounted

    // vzctl stop 101: no vz-net_del; the umount scripts carry the stop.
    want101 = plus(want101, send(&node, "101", "2001:db8:1::1", 80, 2));
    site.stop("101", "2001:db8:1::1 10.0.0.3");
    send(&node, "101", "10.0.0.3", 100, 2); // stopped: not accounted
    send(&node, "101", "2001:db8:1::1", 100, 2);
    assert_eq!(accounted(&node), acc(&[("102", &["10.0.0.2"])]));

    // 102 halts from inside: vzeventd unmounts it, only the umount scripts run.
    want102 = plus(want102, send(&node, "102", "10.0.0.2", 700, 2));
    site.action("vps.umount", "102");
    send(&node, "102", "10.0.0.2", 100, 2); // halted: not accounted

    assert_eq!(accounted(&node), acc(&[]));
    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), want101);
    assert_eq!(total_in(&node, "102"), want102);

    // Every original ran with libvzctl's environment, and the original's state file holds
    // exactly what is left: the IPs 101 had when it stopped (vz-stop clears it).
    let log = site.vzctl_log();
    assert_eq!(
        log.lines()
            .filter(|l| !l.starts_with("operator"))
            .collect::<Vec<_>>(),
        [
            "vz-net_add VEID=101 VE_STATE=starting IP_ADDR=10.0.0.1 2001:db8:1::1 ",
            "vz-net_add VEID=102 VE_STATE=starting IP_ADDR=10.0.0.2 ",
            "vz-net_add VEID=101 VE_STATE=running IP_ADDR=10.0.0.3 ",
            "vz-net_del VEID=101 VE_STATE=running IP_ADDR=10.0.0.1 ",
            "vz-net_add VEID=101 VE_STATE=running IP_ADDR=10.0.0.4 ",
            "vz-net_del VEID=101 VE_STATE=running IP_ADDR=10.0.0.4 ",
            "vz-net_add VEID=101 VE_STATE=running IP_ADDR=10.0.0.5 ",
            "vz-net_del VEID=101 VE_STATE=running IP_ADDR=10.0.0.5 ",
        ]
    );
    assert_eq!(site.veip("101"), ["2001:db8:1::1", "10.0.0.3"]);
    // One line per hook run: 2 mounts, 4 adds that reached vzacct, 3 dels, 2 umounts.
    let hook_log = site.hook_log();
    assert_eq!(hook_log.len(), 11, "{hook_log:#?}");
    assert!(
        hook_log.iter().all(|l| l.contains(" ok: ")),
        "{hook_log:#?}"
    );
    assert!(
        !hook_log.iter().any(|l| l.contains("accounting 10.0.0.4")),
        "{hook_log:#?}"
    );
}

/// install on an OpenVZ 7 root wraps libvzctl's scripts (and an override in script.d,
/// which libvzctl's `get_script_path` runs instead); check names the flavour and the dirs;
/// uninstall puts every file back byte for byte.
#[test]
fn install_check_uninstall_on_openvz7() {
    let node = Node::new(Variant::Legacy);
    let site = Site::openvz7(&node);
    let over = site.root.join("usr/libexec/libvzctl/script.d");
    write_exec(
        &over.join("vz-net_add"),
        "#!/bin/sh\n# operator's override\nexit 0\n",
    );
    write_exec(&over.join("vz-net_del"), "#!/bin/sh\nexit 0\n");
    let before = tree(&site.root);
    let out = site.install();
    for dir in [&site.scripts, &over] {
        for name in ["vz-net_add", "vz-net_del"] {
            assert!(
                out.contains(&format!("wrapped     {}", dir.join(name).display())),
                "{out}"
            );
        }
    }
    let check = stdout(&site.vzacct_root("check"));
    assert!(
        check.contains(&format!(
            "ok   vzctl flavour          OpenVZ 7 (libvzctl): {}; OpenVZ 7 (libvzctl): {}",
            site.scripts.display(),
            over.display()
        )),
        "{check}"
    );
    assert_eq!(check.matches("ok   network wrapper").count(), 4, "{check}");
    let out = site.vzacct_root("uninstall");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&site.root), before);
}

/// vzctl 3.x on x86_64 RPM nodes keeps its scripts in /usr/lib64/vzctl/scripts.
#[test]
fn vzctl3_lib64_scripts_are_wrapped() {
    let node = Node::new(Variant::Legacy);
    let site = Site::new(&node);
    std::fs::remove_dir_all(site.root.join("usr/libexec")).unwrap();
    let dir = site.root.join("usr/lib64/vzctl/scripts");
    write_exec(&dir.join("vps-net_add"), "#!/bin/sh\nexit 0\n");
    write_exec(&dir.join("vps-net_del"), "#!/bin/sh\nexit 0\n");
    let out = site.install();
    assert!(
        out.contains(&format!(
            "wrapped     {}",
            dir.join("vps-net_add").display()
        )),
        "{out}"
    );
    let check = stdout(&site.vzacct_root("check"));
    assert!(
        check.contains(&format!(
            "ok   vzctl flavour          vzctl 4: {}\n",
            dir.display()
        )),
        "{check}"
    );
}

/// Every regular file under `root` with its content and mode.
fn tree(root: &std::path::Path) -> Vec<(String, String)> {
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
            } else if !meta.file_type().is_symlink() {
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

per_variant!(life_cycle_through_the_openvz7_wrappers);
