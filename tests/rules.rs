//! The ruleset engine against the real iptables (legacy and nf_tables), each test in its own
//! network namespace: exact rules, idempotence, foreign rules untouched, healing, veinfo.

mod common;

use common::*;
use std::net::IpAddr;

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

const RULES_101_102_V4: &str = "\
:VZACCT-FORWARD - [0:0]
:VZACCT-INPUT - [0:0]
:VZACCT-OUTPUT - [0:0]
[0:0] -A INPUT -j VZACCT-INPUT
[0:0] -A FORWARD -j VZACCT-FORWARD
[0:0] -A OUTPUT -j VZACCT-OUTPUT
[0:0] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"
[0:0] -A VZACCT-FORWARD -s 10.0.0.1/32 -m comment --comment \"ct:101\"
[0:0] -A VZACCT-FORWARD -d 10.0.0.2/32 -m comment --comment \"ct:102\"
[0:0] -A VZACCT-FORWARD -s 10.0.0.2/32 -m comment --comment \"ct:102\"
[0:0] -A VZACCT-INPUT -s 10.0.0.1/32 -i venet0 -m comment --comment \"ct:101\"
[0:0] -A VZACCT-INPUT -s 10.0.0.2/32 -i venet0 -m comment --comment \"ct:102\"
[0:0] -A VZACCT-OUTPUT -d 10.0.0.1/32 -o venet0 -m comment --comment \"ct:101\"
[0:0] -A VZACCT-OUTPUT -d 10.0.0.2/32 -o venet0 -m comment --comment \"ct:102\"";

const RULES_101_V6: &str = "\
:VZACCT-FORWARD - [0:0]
:VZACCT-INPUT - [0:0]
:VZACCT-OUTPUT - [0:0]
[0:0] -A INPUT -j VZACCT-INPUT
[0:0] -A FORWARD -j VZACCT-FORWARD
[0:0] -A OUTPUT -j VZACCT-OUTPUT
[0:0] -A VZACCT-FORWARD -d 2001:db8:1::1/128 -m comment --comment \"ct:101\"
[0:0] -A VZACCT-FORWARD -s 2001:db8:1::1/128 -m comment --comment \"ct:101\"
[0:0] -A VZACCT-INPUT -s 2001:db8:1::1/128 -i venet0 -m comment --comment \"ct:101\"
[0:0] -A VZACCT-OUTPUT -d 2001:db8:1::1/128 -o venet0 -m comment --comment \"ct:101\"";

/// `add` writes exactly the expected rules in both families; every command run again
/// leaves the whole table byte-identical.
fn exact_rules_and_idempotent(v: Variant) {
    let node = Node::new(v);
    write(
        &node.path("conf/102.conf"),
        "# vzctl config\nIP_ADDRESS=\"10.0.0.2\"\nHOSTNAME=\"ct102\"\n",
    );
    let out = node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    assert_eq!(
        out,
        "container 101: now accounting 10.0.0.1, 2001:db8:1::1\n\
         IPv4: 4 rule(s) added, 0 removed (one batch of 10 operation(s))\n\
         IPv6: 4 rule(s) added, 0 removed (one batch of 10 operation(s))\n"
    );
    node.ok(&["add", "102"]);
    assert_eq!(node.ours(false), lines(RULES_101_102_V4));
    assert_eq!(node.ours(true), lines(RULES_101_V6));
    let (v4, v6) = (node.save(false), node.save(true));
    let again = node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    assert_eq!(
        again,
        "container 101: already accounted\nIPv4: rules already in place\nIPv6: rules already in place\n"
    );
    node.ok(&["add", "102"]);
    node.ok(&["sync"]);
    node.ok(&["sync"]);
    let out = node.vzacct(&["remove", "103"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vzacct: error: container 103 is not accounted (no record in the ledger, or no IP); nothing to remove\n"
    );
    assert_eq!(node.save(false), v4);
    assert_eq!(node.save(true), v6);
}

/// Rules, chains and counters that are not vzacct's come through every command untouched,
/// and keep their order; our jump sits at the top.
fn foreign_rules_untouched(v: Variant) {
    let node = Node::with_topology(
        v,
        &[
            ("101", "10.0.0.1", "2001:db8:1::1"),
            ("102", "10.0.0.2", "2001:db8:1::2"),
        ],
    );
    for v6 in [false, true] {
        let (bad, dst) = if v6 {
            ("2001:db8:dead::9", "2001:db8:1::2/128")
        } else {
            ("192.0.2.9", "10.0.0.2/32")
        };
        node.ipt(v6, &["-N", "FOREIGN"]);
        node.ipt(
            v6,
            &[
                "-A",
                "FOREIGN",
                "-d",
                dst,
                "-m",
                "comment",
                "--comment",
                "provider rule",
            ],
        );
        node.ipt(v6, &["-A", "FORWARD", "-s", bad, "-j", "DROP"]);
        node.ipt(v6, &["-A", "FORWARD", "-j", "FOREIGN"]);
        node.ipt(
            v6,
            &["-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT"],
        );
    }
    let world4: IpAddr = WORLD_V4.parse().unwrap();
    let world6: IpAddr = WORLD_V6.parse().unwrap();
    let b = node.ct("102");
    send_udp(node.world(), world4, &b.ns, b.v4, 300, 4);
    send_udp(node.world(), world6, &b.ns, b.v6, 300, 2);
    let foreign = |v6: bool| -> Vec<String> {
        node.save(v6)
            .lines()
            .filter(|l| !l.contains("VZACCT"))
            .map(str::to_string)
            .collect()
    };
    let before = (foreign(false), foreign(true));
    assert!(
        before.0.contains(
            &"[4:1312] -A FOREIGN -d 10.0.0.2/32 -m comment --comment \"provider rule\""
                .to_string()
        ),
        "{:?}",
        before.0
    );
    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    node.ok(&["add", "102", "10.0.0.2", "2001:db8:1::2"]);
    node.ok(&["remove", "102"]);
    node.ok(&["sync"]);
    // Foreign rules and chains byte-identical, counters included. Built-in policy counters
    // may only have grown (the kernel itself sends IPv6 control traffic now and then):
    // legacy iptables zeroes them on every change unless vzacct gives them back.
    for (v6, before) in [(false, &before.0), (true, &before.1)] {
        let after = foreign(v6);
        assert_eq!(after.len(), before.len());
        for (a, b) in after.iter().zip(before) {
            if b.starts_with(":INPUT") || b.starts_with(":FORWARD") || b.starts_with(":OUTPUT") {
                let count = |l: &str| -> u64 {
                    l.rsplit('[')
                        .next()
                        .unwrap()
                        .split(':')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                assert!(
                    count(a) >= count(b) && !(count(b) > 0 && count(a) == 0),
                    "{a} vs {b}"
                );
            } else {
                assert_eq!(a, b);
            }
        }
    }
    for v6 in [false, true] {
        let save = node.save(v6);
        let forward: Vec<&str> = save.lines().filter(|l| l.contains("-A FORWARD")).collect();
        assert_eq!(forward[0], "[0:0] -A FORWARD -j VZACCT-FORWARD", "{save}");
        assert_eq!(forward.len(), 3, "{save}");
    }
}

/// Someone else flushes our chain, deletes a jump, duplicates a rule, adds a stray and
/// puts a rule above our jump: `status` tells, one `sync` restores exactly, a second
/// `sync` finds nothing to do.
fn sync_heals_foreign_damage(v: Variant) {
    let node = Node::new(v);
    write(&node.path("conf/101.conf"), "IP_ADDRESS=\"10.0.0.1\"\n");
    write(&node.path("conf/102.conf"), "IP_ADDRESS=\"10.0.0.2\"\n");
    node.ok(&["add", "101"]);
    node.ok(&["add", "102"]);
    let healthy = node.save(false);
    node.ipt(false, &["-F", "VZACCT-OUTPUT"]);
    node.ipt(false, &["-D", "FORWARD", "-j", "VZACCT-FORWARD"]);
    node.ipt(
        false,
        &[
            "-A",
            "VZACCT-INPUT",
            "-s",
            "10.0.0.1/32",
            "-i",
            "venet0",
            "-m",
            "comment",
            "--comment",
            "ct:101",
        ],
    );
    node.ipt(false, &["-A", "VZACCT-INPUT", "-p", "tcp", "-j", "ACCEPT"]);
    node.ipt(
        false,
        &["-I", "INPUT", "1", "-s", "192.0.2.1/32", "-j", "DROP"],
    );
    let status = node.ok(&["status"]);
    // Its OUTPUT rule flushed, and its two FORWARD rules no packet reaches: one of four.
    assert!(status.contains("101                                    10.0.0.1                                 1/4 MISSING"), "{status}");
    assert!(
        status.contains("ipv4: chains and jumps NEED SYNC, 2 stray rule(s)"),
        "{status}"
    );
    let out = node.ok(&["sync"]);
    assert!(out.contains("IPv4: 2 rule(s) added, 2 removed"), "{out}");
    // The same rules as before the damage (the surviving duplicate may sit elsewhere).
    let sorted = |text: &str| {
        let mut l: Vec<String> = text
            .lines()
            .filter(|l| !l.contains("192.0.2.1"))
            .map(str::to_string)
            .collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&node.save(false)), sorted(&healthy));
    assert!(
        node.save(false)
            .contains("[0:0] -A INPUT -j VZACCT-INPUT\n[0:0] -A INPUT -s 192.0.2.1/32 -j DROP\n")
    );
    assert_eq!(
        node.ok(&["sync"]),
        "IPv4: rules already in place\nIPv6: rules already in place\n"
    );
    let status = node.ok(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(doc["containers"][0]["ctid"], "101");
    assert_eq!(doc["containers"][0]["in_place"], true);
    assert_eq!(doc["containers"][0]["ips"][0]["rules_present"], 4);
    assert_eq!(doc["netfilter"][0]["stray_rules"], 0);
}

/// `sync` accounts exactly the running containers of veinfo and their live IPs.
fn sync_follows_veinfo(v: Variant) {
    let node = Node::new(v);
    write(
        &node.path("veinfo"),
        "       0     0   120\n     101     0    15      10.0.0.1 2001:db8:1::1\n     102     0     9      10.0.0.2\n",
    );
    let out = node.ok(&["sync"]);
    assert!(
        out.contains("2 running container(s); 2 newly accounted, 0 no longer, 0 with changed IPs"),
        "{out}"
    );
    assert_eq!(node.ours(false), lines(RULES_101_102_V4));
    assert_eq!(node.ours(true), lines(RULES_101_V6));
    write(
        &node.path("veinfo"),
        "0 0 1\n101 0 15 10.0.0.1 10.0.0.3\n104 0 3 10.0.0.4\n",
    );
    let out = node.ok(&["sync"]);
    assert!(
        out.contains("2 running container(s); 1 newly accounted, 1 no longer, 1 with changed IPs"),
        "{out}"
    );
    let mut cts: Vec<String> = node
        .ours(false)
        .iter()
        .filter(|l| l.contains("-A VZACCT-FORWARD -d"))
        .cloned()
        .collect();
    cts.sort();
    assert_eq!(
        cts,
        [
            "[0:0] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"",
            "[0:0] -A VZACCT-FORWARD -d 10.0.0.3/32 -m comment --comment \"ct:101\"",
            "[0:0] -A VZACCT-FORWARD -d 10.0.0.4/32 -m comment --comment \"ct:104\"",
        ]
    );
    assert_eq!(node.ours(false).len(), 6 + 12);
    assert_eq!(
        node.ours(true).len(),
        6,
        "IPv6 rules of 101 are gone: {:?}",
        node.ours(true)
    );
    // An IP that veinfo now lists for another container moves to it, either way round
    // (the containers are walked in CTID order).
    for (veinfo, holder) in [
        (
            "0 0 1
101 0 15 10.0.0.1
104 0 3 10.0.0.4 10.0.0.3
",
            "104",
        ),
        (
            "0 0 1
101 0 15 10.0.0.1 10.0.0.3
104 0 3 10.0.0.4
",
            "101",
        ),
    ] {
        write(&node.path("veinfo"), veinfo);
        let out = node.ok(&["sync"]);
        assert!(
            out.contains(
                "2 running container(s); 0 newly accounted, 0 no longer, 2 with changed IPs"
            ),
            "{out}"
        );
        let rule = format!("-A VZACCT-FORWARD -d 10.0.0.3/32 -m comment --comment \"ct:{holder}\"");
        let ours = node.ours(false);
        assert_eq!(
            ours.iter().filter(|l| l.ends_with(&rule)).count(),
            1,
            "{ours:?}"
        );
        // Its four rules (forwarded in and out, node-local in and out), all the holder's.
        let of_ip: Vec<&String> = ours.iter().filter(|l| l.contains("10.0.0.3/32")).collect();
        assert_eq!(of_ip.len(), 4, "{ours:?}");
        assert!(
            of_ip
                .iter()
                .all(|l| l.contains(&format!("\"ct:{holder}\""))),
            "{ours:?}"
        );
    }
}

/// `remove` of some IPs, then of the rest; an IP added to another container moves.
fn remove_and_move(v: Variant) {
    let node = Node::new(v);
    node.ok(&["add", "101", "10.0.0.1", "10.0.0.3"]);
    let out = node.vzacct(&["add", "102", "10.0.0.3"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("10.0.0.3 moves from container 101 to container 102"));
    let fwd: Vec<String> = node
        .ours(false)
        .into_iter()
        .filter(|l| l.contains("VZACCT-FORWARD -d"))
        .collect();
    assert_eq!(
        fwd,
        [
            "[0:0] -A VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"",
            "[0:0] -A VZACCT-FORWARD -d 10.0.0.3/32 -m comment --comment \"ct:102\"",
        ]
    );
    assert_eq!(
        node.ok(&["remove", "101", "10.0.0.1"]).lines().next(),
        Some("container 101: stopped accounting 10.0.0.1 (its counts so far are kept)")
    );
    node.ok(&["remove", "102"]);
    assert_eq!(node.ours(false).len(), 6, "only chains and jumps remain");
    let status: serde_json::Value = serde_json::from_str(&node.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["containers"], serde_json::json!([]));
}

per_rules_variant!(
    exact_rules_and_idempotent,
    foreign_rules_untouched,
    sync_heals_foreign_damage,
    sync_follows_veinfo,
    remove_and_move
);
