//! Hostile and broken input: every case ends in a clear error naming the culprit, never a
//! panic, never a shell, and never a change to another container's rules.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

/// A node with container 200 already accounted, so every test can check it stays intact.
fn node_with_bystander(v: Variant) -> (Node, String) {
    let node = Node::new(v);
    node.ok(&["add", "200", "10.0.2.0", "2001:db8:2::"]);
    let snapshot = node.save(false) + &node.save(true);
    (node, snapshot)
}

fn assert_failed_cleanly(out: &Output, culprits: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    for c in culprits {
        assert!(err.contains(c), "stderr does not name {c:?}:\n{err}");
    }
}

fn unchanged(node: &Node, snapshot: &str) {
    assert_eq!(node.save(false) + &node.save(true), snapshot);
}

fn shell_metacharacters_in_ip_address(v: Variant) {
    let (node, snapshot) = node_with_bystander(v);
    let marker = node.path("pwned");
    let m = marker.display();
    for (i, value) in [
        format!("1.2.3.4;touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("1.2.3.4|touch {m}&&reboot"),
    ]
    .iter()
    .enumerate()
    {
        let ctid = format!("{}", 101 + i);
        let conf = node.path(&format!("conf/{ctid}.conf"));
        write(&conf, format!("IP_ADDRESS=\"{value}\"\n"));
        let out = node.vzacct(&["add", &ctid]);
        let first_token = value.split_whitespace().next().unwrap();
        assert_failed_cleanly(
            &out,
            &[
                &conf.display().to_string(),
                &format!("{first_token:?}"),
                "no usable IP address",
            ],
        );
        assert!(!marker.exists(), "a shell ran {value:?}");
        unchanged(&node, &snapshot);
    }
    // As in vzctl 4.x, the tokens before a hostile one are accounted; the hostile one ends
    // the line, and it and the rest of the line are reported.
    let conf = node.path("conf/110.conf");
    write(
        &conf,
        format!("IP_ADDRESS=\"10.0.0.7 $(touch {m}) 10.0.0.8,10.0.0.9\"\n"),
    );
    let out = node.vzacct(&["add", "110"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for reported in ["\"$(touch\"", "\"10.0.0.8,10.0.0.9\""] {
        assert!(stderr(&out).contains(reported), "{}", stderr(&out));
    }
    assert_eq!(
        stdout(&out).lines().next(),
        Some("container 110: now accounting 10.0.0.7")
    );
    assert!(!marker.exists());
}

fn hostile_ip_arguments(v: Variant) {
    let (node, snapshot) = node_with_bystander(v);
    for (arg, says) in [
        ("1.2.3.4;reboot", "invalid IP address \"1.2.3.4;reboot\""),
        ("$(reboot)", "invalid IP address \"$(reboot)\""),
        ("0.0.0.0", "cannot belong to a container"),
        ("224.0.0.1", "cannot belong to a container"),
        ("10.0.0.1/99", "invalid IP address \"10.0.0.1/99\""),
    ] {
        let out = node.vzacct(&["add", "101", arg]);
        assert_failed_cleanly(&out, &["container 101", says]);
    }
    unchanged(&node, &snapshot);
    assert!(
        ledger_json(&node.path("state"))["containers"]
            .get("101")
            .is_none()
    );
}

fn hostile_ctids(v: Variant) {
    let (node, snapshot) = node_with_bystander(v);
    for ctid in [
        "../etc",
        "0",
        "",
        "101\n",
        "1\u{1b}[2J",
        &"9".repeat(60),
        "-1",
    ] {
        let out = node.vzacct(&["add", "--", ctid, "10.0.0.1"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{ctid:?}: {err}");
        assert!(err.contains("invalid container ID"), "{ctid:?}: {err}");
        assert!(
            !err.contains('\u{1b}'),
            "raw control character echoed: {err:?}"
        );
    }
    unchanged(&node, &snapshot);
}

fn ten_megabytes_of_random_bytes(v: Variant) {
    let (node, snapshot) = node_with_bystander(v);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let conf = node.path("conf/101.conf");
    write(&conf, &bytes);
    let out = node.vzacct(&["add", "101"]);
    assert_failed_cleanly(&out, &[&conf.display().to_string(), "no usable IP address"]);
    unchanged(&node, &snapshot);
}

fn config_that_is_a_directory_or_missing(v: Variant) {
    let (node, snapshot) = node_with_bystander(v);
    let conf = node.path("conf/101.conf");
    std::fs::create_dir_all(&conf).unwrap();
    let out = node.vzacct(&["add", "101"]);
    assert_failed_cleanly(&out, &[&conf.display().to_string(), "is a directory"]);
    let out = node.vzacct(&["add", "102"]);
    assert_failed_cleanly(&out, &["conf/102.conf", "does not exist"]);
    // As vzctl's mount script: exit 0, the cause on one line of the log, and a hint that fits.
    let out = node.vzacct_env(&["hook", "mount"], &[("VEID", "102")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conf = node.path("conf/102.conf");
    let cause = format!(
        "CT config {} does not exist; caused by: No such file or directory (os error 2)",
        conf.display()
    );
    assert!(
        stderr(&out).contains(&format!("vzctl goes on, fix what it names): {cause}")),
        "{}",
        stderr(&out)
    );
    let log = std::fs::read_to_string(node.path("hook.log")).unwrap();
    let line = log.lines().last().unwrap();
    assert!(
        line.ends_with(&format!(" mount ct=102 error: {cause}")),
        "{line}"
    );
    unchanged(&node, &snapshot);
}

/// As root every file is readable, so this runs vzacct as `nobody` (setpriv).
fn config_that_is_unreadable(v: Variant) {
    // Root reads every file; without the two capabilities that let it, it cannot read a
    // file of mode 0000 (it stays uid 0, so vzacct's root check passes).
    let node = Node::new(v);
    let conf = node.path("conf/101.conf");
    write(&conf, "IP_ADDRESS=\"10.0.0.1\"\n");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = node.ns.run(
        "setpriv",
        &[
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
            env!("CARGO_BIN_EXE_vzacct"),
            "--config",
            node.config.to_str().unwrap(),
            "add",
            "101",
        ],
    );
    assert_failed_cleanly(&out, &["not allowed to read", &conf.display().to_string()]);
}

/// Not root: one clear sentence, not a stack of errors.
fn not_root(v: Variant) {
    let node = Node::new(v);
    std::fs::set_permissions(node.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&node.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        &["status"][..],
        &["add", "101", "10.0.0.1"],
        &["dump"],
        &["check"],
    ] {
        let mut full = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_vzacct"),
            "--config",
            node.config.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        let out = node.ns.run("setpriv", &full);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            "vzacct: error: vzacct must run as root: it reads and changes the kernel's firewall \
             rules and keeps its ledger in a root-only directory\n"
        );
    }
}

fn iptables_missing_from_path(v: Variant) {
    let (node, snapshot) = node_with_bystander(v);
    let ledger = ledger_files(&node.path("state"));
    let out = node.vzacct_env(&["add", "101", "10.0.0.1"], &[("PATH", "/nonexistent")]);
    let save = format!("{}-save", v.iptables(false));
    assert_failed_cleanly(&out, &[&save, "not found"]);
    assert_eq!(ledger_files(&node.path("state")), ledger, "ledger changed");
    unchanged(&node, &snapshot);
}

fn bad_vzacct_config_runs_nothing(v: Variant) {
    let node = Node::new(v);
    let text = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        text.replace("[netfilter]\n", "[netfilter]\nipv7 = yes\n"),
    )
    .unwrap();
    let out = node.vzacct(&["add", "101", "10.0.0.1"]);
    assert_failed_cleanly(&out, &["ipv7", &node.config.display().to_string()]);
    assert!(!node.save(false).contains("VZACCT"));
    assert!(
        !node.path("state").exists(),
        "state dir created despite a bad config"
    );
}

/// vzacct runs iptables' own tools and nothing else: no shell, whatever the input.
fn no_shell_is_ever_spawned(v: Variant) {
    let (node, _) = node_with_bystander(v);
    let m = node.path("pwned");
    write(
        &node.path("conf/101.conf"),
        format!(
            "IP_ADDRESS=\"10.0.0.1 $(touch {0}) `touch {0}` ;touch {0}\"\n",
            m.display()
        ),
    );
    write(
        &node.path("veinfo"),
        "0 0 1\n101 0 1 10.0.0.1\n200 0 1 10.0.2.0\n",
    );
    let log = node.path("strace.log");
    for args in [
        &["add", "101"][..],
        &["sync"],
        &["status"],
        &["remove", "101"],
    ] {
        let mut full = vec![
            "-f",
            "-qq",
            "-e",
            "trace=execve",
            "-o",
            log.to_str().unwrap(),
            env!("CARGO_BIN_EXE_vzacct"),
            "--config",
            node.config.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        let out = node.ns.run("strace", &full);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let trace = std::fs::read_to_string(&log).unwrap();
        let programs: Vec<&str> = trace
            .lines()
            .filter_map(|l| l.split("execve(\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(|p| p.rsplit('/').next().unwrap())
            .collect();
        assert!(programs.len() >= 3, "{trace}");
        let allowed = [
            "vzacct".to_string(),
            format!("{}-save", v.iptables(false)),
            format!("{}-restore", v.iptables(false)),
            format!("{}-save", v.iptables(true)),
            format!("{}-restore", v.iptables(true)),
            "ipset".to_string(),
        ];
        for p in &programs {
            assert!(allowed.iter().any(|a| a == p), "{args:?} ran {p}:\n{trace}");
        }
    }
    assert!(!m.exists());
}

per_rules_variant!(
    shell_metacharacters_in_ip_address,
    hostile_ip_arguments,
    hostile_ctids,
    ten_megabytes_of_random_bytes,
    config_that_is_a_directory_or_missing,
    config_that_is_unreadable,
    not_root,
    iptables_missing_from_path,
    bad_vzacct_config_runs_nothing,
    no_shell_is_ever_spawned,
);
