//! Counters that survive everything, with real packets in the node topology: exact bytes in
//! `show` and the CSV, flushes, recreated rules, reboots, IP moves, day boundaries, SIGKILL at
//! any instant, a corrupt ledger, and reset.

mod common;

use common::*;
use serde_json::Value;
use std::net::IpAddr;

const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];
const DAY1: &str = "2026-11-29T10:00:00Z";
const CSV_HEADER: &str = "date,ctid,in_bytes,out_bytes,in_packets,out_packets,local_in_bytes,local_out_bytes,local_in_packets,local_out_packets,free_in_bytes,free_out_bytes,free_in_packets,free_out_packets";

fn ct<'a>(show: &'a Value, ctid: &str) -> &'a Value {
    ct_of(show, ctid)
}

fn total(node: &Node, now: &str, ctid: &str) -> F {
    F::of(&ct(&node.show(now), ctid)["total"])
}

/// world -> CT datagrams: returns the figures they add (in).
fn to_ct(node: &Node, ctid: &str, v6: bool, payload: usize, n: usize) -> F {
    let c = node.ct(ctid);
    let (dst, src): (IpAddr, IpAddr) = if v6 {
        (c.v6, WORLD_V6.parse().unwrap())
    } else {
        (c.v4, WORLD_V4.parse().unwrap())
    };
    send_udp(node.world(), src, &c.ns, dst, payload, n);
    F::inb(n as u64 * udp_ip_len(dst, payload), n as u64)
}

fn csv(node: &Node, ctid: &str) -> String {
    std::fs::read_to_string(node.path(&format!("csv/{ctid}.csv"))).unwrap_or_default()
}

/// Every kind of traffic, both families: `show --json` and the CSV row equal the exact
/// IP-level bytes and packets sent.
fn exact_bytes_in_show_and_csv(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.at(DAY1, &["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    node.at(DAY1, &["add", "102", "10.0.0.2", "2001:db8:1::2"]);
    let mut want = F::default();
    let mut want102 = F::default();
    for v6 in [false, true] {
        let (a, b) = if v6 {
            (node.ct("101").v6, node.ct("102").v6)
        } else {
            (node.ct("101").v4, node.ct("102").v4)
        };
        let (venet, world): (IpAddr, IpAddr) = if v6 {
            (NODE_VENET_V6.parse().unwrap(), WORLD_V6.parse().unwrap())
        } else {
            (NODE_VENET_V4.parse().unwrap(), WORLD_V4.parse().unwrap())
        };
        let (ca, cb) = (&node.ct("101").ns, &node.ct("102").ns);
        send_udp(node.world(), world, ca, a, 100, 3);
        send_udp(ca, a, node.world(), world, 200, 2);
        send_udp(&node.ns, venet, ca, a, 50, 4);
        send_udp(ca, a, &node.ns, venet, 70, 5);
        send_udp(ca, a, cb, b, 30, 6);
        let l = |p| udp_ip_len(a, p);
        want = want.add(F([
            3 * l(100) + 4 * l(50),
            2 * l(200) + 5 * l(70) + 6 * l(30),
            3 + 4,
            2 + 5 + 6,
            4 * l(50),
            5 * l(70),
            4,
            5,
        ]));
        want102 = want102.add(F::inb(6 * l(30), 6));
    }
    let out = node.at(DAY1, &["dump"]);
    assert!(out.starts_with("harvested "), "{out}");
    let show = node.show(DAY1);
    for key in ["total", "today", "month"] {
        assert_eq!(F::of(&ct(&show, "101")[key]), want, "101 {key}");
        assert_eq!(F::of(&ct(&show, "102")[key]), want102, "102 {key}");
    }
    assert_eq!(
        ct(&show, "101")["ips"],
        serde_json::json!(["10.0.0.1", "2001:db8:1::1"])
    );
    assert!(csv(&node, "101").is_empty(), "no day closed yet");
    // The first dump after midnight closes the day.
    let out = node.at("2026-11-30T00:05:00Z", &["dump"]);
    assert!(out.contains("2 daily CSV row(s) written"), "{out}");
    let w = want.0;
    assert_eq!(
        csv(&node, "101"),
        format!(
            "{CSV_HEADER}\n2026-11-29,101,{},{},{},{},{},{},{},{},0,0,0,0\n",
            w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]
        )
    );
    assert_eq!(
        csv(&node, "102"),
        format!(
            "{CSV_HEADER}\n2026-11-29,102,{},0,{},0,0,0,0,0,0,0,0,0\n",
            want102.0[0], want102.0[2]
        )
    );
    let show = node.show("2026-11-30T00:06:00Z");
    assert_eq!(F::of(&ct(&show, "101")["today"]), F::default());
    assert_eq!(F::of(&ct(&show, "101")["month"]), want);
    assert_eq!(F::of(&ct(&show, "101")["total"]), want);
    // Human units in the table.
    let table = node.at("2026-11-30T00:06:00Z", &["show", "101"]);
    assert!(table.lines().nth(1).unwrap().starts_with("101 "), "{table}");
    assert!(table.contains(" B "), "{table}");
}

/// Someone flushes our chains, or everything, or deletes and recreates a rule, between
/// dumps: totals are exactly what the rules counted while they existed, and never doubled.
fn flushes_and_recreated_rules(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    let mut counted = to_ct(&node, "101", false, 400, 3);
    node.at(DAY1, &["dump"]);
    // Our chains flushed: the traffic sent while they are empty is not counted by anyone.
    for chain in ["VZACCT-FORWARD", "VZACCT-INPUT", "VZACCT-OUTPUT"] {
        node.ipt(false, &["-F", chain]);
    }
    to_ct(&node, "101", false, 400, 2);
    node.at(DAY1, &["dump"]);
    counted = counted.add(to_ct(&node, "101", false, 300, 4));
    node.at(DAY1, &["dump"]);
    assert_eq!(total(&node, DAY1, "101"), counted);
    // Everything flushed (`iptables -F`, jumps included). What per-IP rules had counted
    // since the last dump is destroyed with them; set elements keep theirs.
    let before_flush = to_ct(&node, "101", false, 100, 1);
    if v.ipset() {
        counted = counted.add(before_flush);
    }
    node.ipt(false, &["-F"]);
    node.at(DAY1, &["dump"]);
    counted = counted.add(to_ct(&node, "101", false, 200, 2));
    node.at(DAY1, &["dump"]);
    assert_eq!(total(&node, DAY1, "101"), counted);
    // The rule deleted and recreated by someone else: counted afresh from zero.
    counted = counted.add(to_ct(&node, "101", false, 500, 5));
    let rule = [
        "VZACCT-FORWARD",
        "-d",
        "10.0.0.1/32",
        "-m",
        "comment",
        "--comment",
        "ct:101",
    ];
    node.at(DAY1, &["dump"]);
    if v.ipset() {
        node.ns.must("ipset", &["del", "vzacct-fi4", "10.0.0.1"]);
        node.ns.must(
            "ipset",
            &["add", "vzacct-fi4", "10.0.0.1", "comment", "ct:101"],
        );
    } else {
        let mut del = vec!["-D"];
        del.extend_from_slice(&rule);
        node.ipt(false, &del);
        let mut add = vec!["-A"];
        add.extend_from_slice(&rule);
        node.ipt(false, &add);
    }
    counted = counted.add(to_ct(&node, "101", false, 60, 2));
    node.at(DAY1, &["dump"]);
    assert_eq!(total(&node, DAY1, "101"), counted);
    assert_eq!(node.entries("101", false), 4, "no duplicates");
}

/// A simulated reboot: tables emptied, a new boot id, a firewall service restoring a saved
/// copy of our rules with their old counters, `restore` (twice), more traffic.
fn survives_a_reboot(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.at(DAY1, &["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    let mut counted = to_ct(&node, "101", false, 700, 3).add(to_ct(&node, "101", true, 300, 2));
    node.at(DAY1, &["dump"]);
    // Shortly before the reboot, more traffic, saved by the shutdown dump.
    counted = counted.add(to_ct(&node, "101", false, 100, 1));
    node.at(DAY1, &["dump"]);
    let saved4 = node.save(false);
    let saved6 = node.save(true);
    let saved_sets = node.ns.must("ipset", &["save"]);
    let state = |n: &Node| {
        let strip = |l: Vec<String>| -> Vec<String> {
            l.into_iter()
                .map(|x| x.split_once("] ").map(|(_, r)| r.to_string()).unwrap_or(x))
                .collect()
        };
        (
            strip(n.ours(false)),
            strip(n.ours(true)),
            n.sets(false),
            n.sets(true),
        )
    };
    let before = state(&node);
    node.reboot("boot-2");
    // The distribution's firewall restores its saved copy (sets with their counters, then
    // the rules) at boot.
    if v.ipset() {
        node.ns.must_with_input("ipset", &["restore"], &saved_sets);
    }
    let restore_saved = |v6: bool, text: &str| {
        let restore = format!("{}-restore", v.iptables(v6));
        node.ns.must_with_input(&restore, &["-c"], text);
    };
    restore_saved(false, &saved4);
    restore_saved(true, &saved6);
    let out = node.at(DAY1, &["restore"]);
    assert!(out.contains("1 accounted container(s) restored"), "{out}");
    let out = node.at(DAY1, &["restore"]);
    assert!(out.contains("IPv4: rules already in place"), "{out}");
    // Same rules and sets as before the reboot, none duplicated (counters aside).
    assert_eq!(state(&node), before);
    assert_eq!(
        total(&node, DAY1, "101"),
        counted,
        "restored counters were not counted again"
    );
    counted = counted
        .add(to_ct(&node, "101", false, 250, 4))
        .add(to_ct(&node, "101", true, 90, 3));
    node.at(DAY1, &["dump"]);
    assert_eq!(total(&node, DAY1, "101"), counted);

    // A reboot without a firewall service: empty tables, restore, traffic.
    node.reboot("boot-3");
    node.at(DAY1, &["restore"]);
    assert_eq!(state(&node), before);
    counted = counted.add(to_ct(&node, "101", false, 10, 1));
    node.at(DAY1, &["dump"]);
    assert_eq!(total(&node, DAY1, "101"), counted);
    // A dump after a reboot with no restore at all: the rules are recreated, nothing lost
    // that was dumped, no spike.
    node.reboot("boot-4");
    node.at(DAY1, &["dump"]);
    counted = counted.add(to_ct(&node, "101", false, 20, 2));
    node.at(DAY1, &["dump"]);
    assert_eq!(total(&node, DAY1, "101"), counted);
}

/// An IP moved from 101 to 102 between dumps: each is charged exactly its share.
fn ip_moved_between_containers(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    let share101 = to_ct(&node, "101", false, 111, 3);
    node.at(DAY1, &["dump"]);
    let more101 = to_ct(&node, "101", false, 222, 1); // not yet dumped when the IP moves
    node.at(DAY1, &["add", "102", "10.0.0.1"]);
    let share102 = to_ct(&node, "101", false, 333, 2); // same address, now 102's
    node.at(DAY1, &["dump"]);
    let show = node.show(DAY1);
    assert_eq!(F::of(&ct(&show, "101")["total"]), share101.add(more101));
    assert_eq!(F::of(&ct(&show, "102")["total"]), share102);
    assert_eq!(ct(&show, "101")["ips"], serde_json::json!([]));
    assert_eq!(ct(&show, "102")["ips"], serde_json::json!(["10.0.0.1"]));
}

/// Each packet lands in the day of the dump that harvested it; a node off for three days
/// writes the missing rows once.
fn day_boundaries(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.at("2026-11-29T23:40:00Z", &["add", "101", "10.0.0.1"]);
    let d1 = to_ct(&node, "101", false, 100, 2);
    node.at("2026-11-29T23:55:00Z", &["dump"]);
    let d2 = to_ct(&node, "101", false, 200, 3);
    node.at("2026-11-30T00:00:00Z", &["dump"]);
    // Off from Nov 30 to Dec 4 (three days without a dump: Dec 1, 2, 3).
    let d4 = to_ct(&node, "101", false, 50, 1);
    node.at("2026-12-04T00:10:00Z", &["dump"]);
    node.at("2026-12-04T00:15:00Z", &["dump"]);
    let row = |d: &str, f: F| {
        let f = f.0;
        format!(
            "{d},101,{},{},{},{},{},{},{},{},0,0,0,0\n",
            f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]
        )
    };
    let z = F::default();
    assert_eq!(
        csv(&node, "101"),
        format!(
            "{CSV_HEADER}\n{}{}{}{}{}",
            row("2026-11-29", d1),
            row("2026-11-30", d2),
            row("2026-12-01", z),
            row("2026-12-02", z),
            row("2026-12-03", z)
        )
    );
    let show = node.show("2026-12-04T00:20:00Z");
    assert_eq!(F::of(&ct(&show, "101")["today"]), d4);
    assert_eq!(F::of(&ct(&show, "101")["month"]), d4);
    assert_eq!(F::of(&ct(&show, "101")["total"]), d1.add(d2).add(d4));
}

/// `dump` killed with SIGKILL at random instants while traffic flows and days close: the
/// ledger always loads, totals never decrease and never exceed what was sent, no CSV row
/// is duplicated or torn, and a final clean dump is exact.
fn sigkill_at_random_points(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    let mut sent = F::default();
    let mut last_total = F::default();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let runs = 60;
    let mut killed = 0;
    for i in 0..runs {
        sent = sent.add(to_ct(&node, "101", false, 64 + i * 7, 1));
        // Every fifth run is on a new day, so CSV rows are being written when killed.
        let day = 1 + i / 5;
        let now = format!("2026-12-{day:02}T12:00:00Z");
        let mut child = node
            .command(&["dump"], &[("VZACCT_NOW", &now)])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(rand(12_000)));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill(); // SIGKILL, by the PID we started
        let _ = child.wait();
        let t = total(&node, &now, "101");
        assert!(
            t.0[0] >= last_total.0[0],
            "total decreased: {t:?} < {last_total:?}"
        );
        assert!(
            t.0[0] <= sent.0[0],
            "total {t:?} exceeds what was sent {sent:?}"
        );
        last_total = t;
        let text = csv(&node, "101");
        let mut dates: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert!(
            text.is_empty() || text.ends_with('\n') || !text.contains('\n'),
            "torn: {text:?}"
        );
        for l in text.lines().skip(1) {
            assert_eq!(l.split(',').count(), 14, "torn row {l:?}");
        }
        let n = dates.len();
        dates.dedup();
        assert_eq!(dates.len(), n, "duplicate CSV row: {text}");
    }
    eprintln!("{killed} of {runs} dumps were killed mid-run");
    assert!(
        killed >= runs / 4,
        "only {killed} of {runs} dumps were killed mid-run"
    );
    node.at("2026-12-31T12:00:00Z", &["dump"]);
    let show = node.show("2026-12-31T12:00:00Z");
    assert_eq!(F::of(&ct(&show, "101")["total"]), sent);
    // The CSV rows plus the open day hold every byte exactly once.
    let text = csv(&node, "101");
    let in_csv: u64 = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    let today = F::of(&ct(&show, "101")["today"]).0[0];
    assert_eq!(in_csv + today, sent.0[0], "{text}");
}

/// A corrupt or truncated ledger: a clear error naming it, the file kept as it was.
fn corrupt_ledger_is_kept(v: Variant) {
    let node = Node::new(v);
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    let path = node.path("state/ledger.sqlite");
    let good = std::fs::read(&path).unwrap();
    for bad in [&good[..good.len() / 2], b"\x00\x01garbage", b""] {
        std::fs::write(&path, bad).unwrap();
        for cmd in [
            &["dump"][..],
            &["add", "102", "10.0.0.2"],
            &["show"],
            &["restore"],
        ] {
            let out = node.vzacct_env(cmd, &[("VZACCT_NOW", DAY1)]);
            assert_eq!(out.status.code(), Some(1), "{cmd:?}");
            let err = stderr(&out);
            assert!(
                err.contains(&path.display().to_string()) && err.contains("corrupt"),
                "{err}"
            );
            assert!(err.contains("move it aside"), "{err}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bad,
                "ledger overwritten by {cmd:?}"
            );
        }
    }
}

/// `reset` zeroes one container's totals; its history, the CSV, other containers and every
/// kernel counter stay as they were.
fn reset_one_container(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    node.at(DAY1, &["add", "102", "10.0.0.2"]);
    let a = to_ct(&node, "101", false, 300, 2);
    let b = to_ct(&node, "102", false, 300, 1);
    node.at(DAY1, &["dump"]);
    node.at("2026-11-30T00:01:00Z", &["dump"]);
    let a2 = to_ct(&node, "101", false, 100, 1);
    let (csv_before, save_before) = (csv(&node, "101"), node.save(false));
    let out = node.at("2026-11-30T08:00:00Z", &["reset", "101"]);
    assert!(out.contains("container 101: totals reset"), "{out}");
    assert_eq!(node.save(false), save_before, "kernel counters touched");
    assert_eq!(csv(&node, "101"), csv_before);
    let show = node.show("2026-11-30T08:00:00Z");
    assert_eq!(F::of(&ct(&show, "101")["total"]), F::default());
    assert_eq!(F::of(&ct(&show, "101")["month"]), a.add(a2));
    assert_eq!(F::of(&ct(&show, "102")["total"]), b);
    assert_eq!(ct(&show, "101")["total_since"], "2026-11-30T08:00:00Z");
    let a3 = to_ct(&node, "101", false, 40, 1);
    node.at("2026-11-30T09:00:00Z", &["dump"]);
    assert_eq!(total(&node, "2026-11-30T09:00:00Z", "101"), a3);
    let out = node.vzacct(&["reset", "999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("container 999 has no record"));
}

per_variant!(
    exact_bytes_in_show_and_csv,
    flushes_and_recreated_rules,
    survives_a_reboot,
    ip_moved_between_containers,
    day_boundaries,
    sigkill_at_random_points,
    corrupt_ledger_is_kept,
    reset_one_container,
);
