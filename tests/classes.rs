//! Free networks (`[classes]`): traffic with them, and between containers when
//! `container_to_container = free`, is counted apart in `free_*` and still in `in_*`/`out_*`;
//! quotas count the rest. Changing the classes loses and doubles nothing. Real iptables
//! (legacy and nft, per-IP rules and ipset), real packets, exact bytes.

mod common;

use common::*;
use std::net::IpAddr;

const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];
const DAY1: &str = "2026-11-29T10:00:00Z";
/// The world's networks (its addresses are 198.51.100.2 and 2001:db8:ff::2).
const WORLD_NETS: &str = "198.51.100.0/24 2001:db8:ff::/48";

/// (in, out, free_in, free_out) bytes of a container's total.
fn figures(node: &Node, ctid: &str) -> [u64; 4] {
    let show = node.show(DAY1);
    let t = &ct_of(&show, ctid)["total"];
    ["in_bytes", "out_bytes", "free_in_bytes", "free_out_bytes"].map(|k| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {t}"))
    })
}

fn set_classes(node: &Node, classes: &str) {
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    let base = cfg.split("[classes]").next().unwrap().to_string();
    write(&node.config, format!("{base}[classes]\n{classes}"));
}

fn addrs(node: &Node, ctid: &str, v6: bool) -> IpAddr {
    if v6 {
        node.ct(ctid).v6
    } else {
        node.ct(ctid).v4
    }
}

/// Every direction and both families: traffic with the world's network is free once it
/// is named, traffic with the node and between containers is not, until the node's
/// address and `container_to_container = free` make it so. Every figure exact.
fn free_networks_are_counted_apart(v: Variant) {
    let node = Node::with_topology(v, CTS);
    set_classes(&node, &format!("free = {WORLD_NETS}\n"));
    node.at(DAY1, &["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    node.at(DAY1, &["add", "102", "10.0.0.2", "2001:db8:1::2"]);
    let mut want = [[0u64; 4]; 2];
    let round = |node: &Node, node_free: bool, c2c_free: bool, want: &mut [[u64; 4]; 2]| {
        for v6 in [false, true] {
            let (a, b) = (addrs(node, "101", v6), addrs(node, "102", v6));
            let (venet, world): (IpAddr, IpAddr) = if v6 {
                (NODE_VENET_V6.parse().unwrap(), WORLD_V6.parse().unwrap())
            } else {
                (NODE_VENET_V4.parse().unwrap(), WORLD_V4.parse().unwrap())
            };
            let ct_a = &node.ct("101").ns;
            let ct_b = &node.ct("102").ns;
            let len = |p| udp_ip_len(a, p);
            send_udp(node.world(), world, ct_a, a, 100, 3); // world -> 101: free
            send_udp(ct_a, a, node.world(), world, 200, 2); // 101 -> world: free
            send_udp(&node.ns, venet, ct_a, a, 50, 4); // node -> 101
            send_udp(ct_a, a, &node.ns, venet, 70, 5); // 101 -> node
            send_udp(ct_a, a, ct_b, b, 30, 6); // 101 -> 102
            // world -> 102: free (with the ipset backend, 102's free elements were added by
            // its own container's run, without reading the sets).
            send_udp(node.world(), world, ct_b, b, 40, 2);
            let (w, local, c2c) = (3 * len(100), 4 * len(50), 6 * len(30));
            let (wo, local_out) = (2 * len(200), 5 * len(70));
            want[0][0] += w + local;
            want[0][1] += wo + local_out + c2c;
            want[0][2] += w + if node_free { local } else { 0 };
            want[0][3] +=
                wo + if node_free { local_out } else { 0 } + if c2c_free { c2c } else { 0 };
            want[1][0] += c2c + 2 * len(40);
            want[1][2] += 2 * len(40) + if c2c_free { c2c } else { 0 };
        }
        node.at(DAY1, &["dump"]);
    };
    round(&node, false, false, &mut want);
    assert_eq!(figures(&node, "101"), want[0], "{v:?}: world free");
    assert_eq!(figures(&node, "102"), want[1], "{v:?}: world free");
    set_classes(
        &node,
        &format!(
            "free = {WORLD_NETS} {NODE_VENET_V4} {NODE_VENET_V6}\ncontainer_to_container = free\n"
        ),
    );
    node.at(DAY1, &["dump"]);
    round(&node, true, true, &mut want);
    assert_eq!(figures(&node, "101"), want[0], "{v:?}: all free");
    assert_eq!(figures(&node, "102"), want[1], "{v:?}: all free");
    // The free networks' set holds the networks and, for container_to_container, every
    // accounted address; beside those hosts the world's /24 is split into 256 of them (one
    // prefix length, one hash per lookup), the IPv6 /48 is not (2^80 hosts).
    let sets = node.ns.must("ipset", &["save"]);
    let free4 = sets
        .lines()
        .filter(|l| l.starts_with("add vzacct-free4 "))
        .count();
    assert_eq!(free4, 256 + 3, "{sets}");
    for net in [
        "198.51.100.2",
        "198.51.100.255",
        "10.0.0.1",
        "10.0.0.2",
        NODE_VENET_V4,
        "2001:db8:ff::/48",
        "2001:db8:1::1",
    ] {
        assert!(
            sets.lines()
                .any(|l| l.starts_with("add vzacct-free") && l.ends_with(&format!(" {net}"))),
            "{net} not in {sets}"
        );
    }
    // The CSV has the free columns at the end, and `show` a line for them.
    let table = node.at(DAY1, &["show", "101"]);
    let row = table
        .lines()
        .skip_while(|l| !l.contains("PERIOD FREE IN"))
        .nth(1)
        .unwrap_or_else(|| panic!("no free table in {table}"));
    let human = |b: u64| format!("{:.2} KiB", b as f64 / 1024.0);
    assert!(
        row.starts_with("101 ") && row.contains(&human(want[0][2])),
        "{row} in {table}"
    );
    // The day closes into the CSV, the free figures in the four columns at the end.
    node.at("2026-11-30T00:10:00Z", &["dump"]);
    let csv = std::fs::read_to_string(node.path("csv/101.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].ends_with(",free_in_bytes,free_out_bytes,free_in_packets,free_out_packets"),
        "{csv}"
    );
    let row: Vec<u64> = lines[1]
        .split(',')
        .skip(2)
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(lines[1].split(',').next(), Some("2026-11-29"), "{csv}");
    assert_eq!([row[0], row[1], row[8], row[9]], want[0], "{csv}");
}

/// The classes changed while a free network sends without a pause: networks added and
/// removed, `container_to_container` on and off, the classes removed and named again.
/// Nothing is lost or doubled: `in_bytes` equals a reference counter in another table
/// throughout, and so does `free_in_bytes` while the network is named.
fn a_change_of_classes_loses_nothing(v: Variant) {
    let node = Node::with_topology(v, CTS);
    set_classes(&node, "free = 198.51.100.0/24\n");
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    let steady = Steady::start(&node, v, "10.0.0.1", 200);
    let mut said = Vec::new();
    for classes in [
        "free = 198.51.100.0/24 203.0.113.0/24\n",
        "free = 198.51.100.0/24\ncontainer_to_container = free\n",
        "free = 198.51.100.0/23\n",
        "free = 198.51.100.0/24\n",
    ] {
        std::thread::sleep(std::time::Duration::from_millis(150));
        set_classes(&node, classes);
        said.push(node.at(DAY1, &["dump"]));
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    let sent = steady.stop();
    node.at(DAY1, &["dump"]);
    let reference = mangle_bytes(&node, v, "-A FORWARD -d 10.0.0.1/32");
    assert!(sent > 100, "only {sent} datagrams sent");
    let [inb, _, free_in, _] = figures(&node, "101");
    // The last three changes each leave a prefix length unused: the set is swapped in whole.
    for out in &said[1..] {
        assert!(
            out.contains("vzacct-free4 rebuilt with") && out.contains("swapped in"),
            "{out}"
        );
    }
    assert!(!said[0].contains("rebuilt"), "{}", said[0]);
    assert_eq!(inb, reference, "{sent} datagrams; the dumps said {said:#?}");
    assert_eq!(
        free_in, reference,
        "{sent} datagrams; the dumps said {said:#?}"
    );
    // No classes: the free counters and the free set go, in_bytes stays exact.
    set_classes(&node, "");
    node.at(DAY1, &["sync"]);
    let sets = node.ns.must("ipset", &["list", "-n"]);
    assert!(
        !sets.lines().any(|l| l.starts_with("vzacct-f")
            && !l.starts_with("vzacct-fi")
            && !l.starts_with("vzacct-fo")),
        "{sets}"
    );
    let save = node.ns.must(&format!("{}-save", v.iptables(false)), &[]);
    assert!(!save.contains("vzacct-free"), "{save}");
    let c = node.ct("101");
    send_udp(node.world(), WORLD_V4.parse().unwrap(), &c.ns, c.v4, 300, 4);
    node.at(DAY1, &["dump"]);
    // (101 answers with ICMP port unreachable now and then: out figures, not checked.)
    let reference = mangle_bytes(&node, v, "-A FORWARD -d 10.0.0.1/32");
    let f = figures(&node, "101");
    assert_eq!([f[0], f[2]], [reference, free_in]);
    // Named again: counted apart again from then on.
    set_classes(&node, "free = 198.51.100.0/24\n");
    node.at(DAY1, &["sync"]);
    send_udp(node.world(), WORLD_V4.parse().unwrap(), &c.ns, c.v4, 300, 4);
    node.at(DAY1, &["dump"]);
    let again = 4 * udp_ip_len(c.v4, 300);
    let f = figures(&node, "101");
    assert_eq!([f[0], f[2]], [reference + again, free_in + again]);
}

/// A quota counts billable traffic only: free traffic never crosses a threshold.
fn quotas_count_billable_traffic_only(v: Variant) {
    let node = Node::with_topology(v, CTS);
    set_classes(&node, &format!("free = {WORLD_NETS}\n"));
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    node.at(
        DAY1,
        &["set", "101", "--quota", "10000B", "--quota-direction", "in"],
    );
    let c = node.ct("101");
    let world: IpAddr = WORLD_V4.parse().unwrap();
    send_udp(node.world(), world, &c.ns, c.v4, 1000, 20); // 20,560 bytes, all free
    let out = node.at(DAY1, &["dump"]);
    assert!(!out.contains("threshold"), "{out}");
    let show = node.show(DAY1);
    let q = &ct_of(&show, "101")["total"];
    assert_eq!(q["free_in_bytes"], q["in_bytes"]);
    send_udp(
        &node.ns,
        NODE_VENET_V4.parse().unwrap(),
        &c.ns,
        c.v4,
        1000,
        9,
    ); // 9,252 billable
    let out = node.at(DAY1, &["dump"]);
    assert!(out.contains("threshold 80"), "{out}");
    assert!(!out.contains("threshold 100"), "{out}");
}

/// Free networks named on a node without the ipset program (per-IP rules): counting goes
/// on exactly, nothing is counted as free, and `check` says why.
#[test]
fn without_ipset_nothing_is_free_and_check_says_so() {
    let node = Node::with_topology(Variant::Legacy, CTS);
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    write(
        &node.config,
        cfg.replace("[netfilter]\n", "[netfilter]\nipset = /nonexistent/ipset\n"),
    );
    set_classes(&node, &format!("free = {WORLD_NETS}\n"));
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    let c = node.ct("101");
    send_udp(node.world(), WORLD_V4.parse().unwrap(), &c.ns, c.v4, 100, 3);
    node.at(DAY1, &["dump"]);
    assert_eq!(figures(&node, "101"), [3 * udp_ip_len(c.v4, 100), 0, 0, 0]);
    let save = node.ns.must("iptables-legacy-save", &[]);
    assert!(!save.contains("vzacct-free"), "{save}");
    let check = stdout(&node.vzacct_env(&["check"], &[("VZACCT_NOW", DAY1)]));
    let line = check
        .lines()
        .find(|l| l.contains("free networks"))
        .unwrap_or_else(|| panic!("{check}"));
    assert_eq!(
        line,
        "FAIL free networks          [classes] names free traffic, but `/nonexistent/ipset save` \
         does not work: nothing is counted as free (the free networks are an ipset hash:net \
         set, with either backend; install ipset)"
    );
}

/// Bad `[classes]` lines are refused with the word at fault, before anything runs.
#[test]
fn bad_classes_are_named() {
    let node = Node::new(Variant::Legacy);
    for (line, word) in [
        ("free = 10.0.0.1/8\n", "10.0.0.1/8"),
        ("free = 10.0.0.0/33\n", "10.0.0.0/33"),
        ("free = 0.0.0.0/0\n", "0.0.0.0/0"),
        (
            "free = 10.0.0.0/8,192.168.0.0/16\n",
            "10.0.0.0/8,192.168.0.0/16",
        ),
        ("container_to_container = yes\n", "yes"),
    ] {
        set_classes(&node, line);
        let out = node.vzacct(&["dump"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{line}");
        assert!(
            err.contains(word) && err.contains("[classes]"),
            "{line}: {err}"
        );
    }
}

/// Five free networks, so the ipset backend's four covers must join two of them
/// (198.51.100.0/31 and .4/30 into 198.51.100.0/29), and the world's address (198.51.100.2)
/// lies inside that cover but in no free network: its traffic walks the cover's rule, fails
/// the free-network lookup and stays billable, exactly, while a free network named next to
/// it (.2/31) makes it free. The chains are exactly as designed: each counting rule jumps to
/// its free twin's chain, one rule per cover.
fn a_cover_is_not_a_free_network(v: Variant) {
    let node = Node::with_topology(v, CTS);
    let others = "203.0.113.0/24 192.0.2.0/24 100.64.0.0/10";
    set_classes(
        &node,
        &format!("free = 198.51.100.0/31 198.51.100.4/30 {others}\n"),
    );
    node.at(DAY1, &["add", "101", "10.0.0.1"]);
    let c = node.ct("101");
    let world: IpAddr = WORLD_V4.parse().unwrap();
    send_udp(node.world(), world, &c.ns, c.v4, 500, 7);
    send_udp(&c.ns, c.v4, node.world(), world, 400, 3);
    node.at(DAY1, &["dump"]);
    let (i, o) = (7 * udp_ip_len(c.v4, 500), 3 * udp_ip_len(c.v4, 400));
    assert_eq!(figures(&node, "101"), [i, o, 0, 0], "{v:?}: billable");
    if v.ipset() {
        let save = node.save(false);
        let ours = |chain: &str| -> Vec<String> {
            let head = format!("-A {chain} ");
            (save.lines())
                .filter_map(|l| l.split_once("] ").map(|(_, r)| r))
                .filter_map(|r| r.strip_prefix(&head))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            ours("VZACCT-FORWARD"),
            [
                "-o venet0 -m set --match-set vzacct-fi4 dst -j VZACCT-FFI",
                "-i venet0 -m set --match-set vzacct-fo4 src -j VZACCT-FFO",
            ],
            "{save}"
        );
        let lookup = "-m set --match-set vzacct-free4 src -m set --match-set vzacct-ffi4 dst";
        assert_eq!(
            ours("VZACCT-FFI"),
            [
                "100.64.0.0/10",
                "192.0.2.0/24",
                "198.51.100.0/29",
                "203.0.113.0/24"
            ]
            .map(|n| format!("-s {n} {lookup}")),
            "{save}"
        );
    }
    // The world's own /31 named too: now its traffic is free, from the next sync on.
    set_classes(
        &node,
        &format!("free = 198.51.100.0/31 198.51.100.2/31 198.51.100.4/30 {others}\n"),
    );
    node.at(DAY1, &["sync"]);
    send_udp(node.world(), world, &c.ns, c.v4, 500, 7);
    node.at(DAY1, &["dump"]);
    assert_eq!(figures(&node, "101"), [2 * i, o, i, 0], "{v:?}: free");
    // Purged: every chain of ours goes, the free chains with the others.
    // (--root: the files of an install are looked for in the test's directory only.)
    let root = node.path("root");
    std::fs::create_dir_all(&root).unwrap();
    // Uninstalled without --purge, it says what stays: the free networks' sets and chains
    // too.
    let out = node.at(DAY1, &["uninstall", "--root", root.to_str().unwrap()]);
    let sets = if v.ipset() {
        "18 set(s) (vzacct-ffi4, vzacct-ffi6, vzacct-ffo4, vzacct-ffo6, vzacct-fi4, \
         vzacct-fi6, vzacct-fli4, vzacct-fli6, vzacct-flo4, vzacct-flo6, vzacct-fo4, vzacct-fo6, \
         vzacct-free4, vzacct-free6, vzacct-li4, vzacct-li6, vzacct-lo4, vzacct-lo6)"
    } else {
        "2 set(s) (vzacct-free4, vzacct-free6)"
    };
    let (chains, rules) = if v.ipset() { (18, 24) } else { (14, 8) };
    assert!(
        out.contains(&format!(
            "still in the kernel, and counting: {chains} of vzacct's chain(s) and jump(s), \
             {rules} rule(s) and {sets}; `vzacct uninstall --purge` harvests"
        )),
        "{out}"
    );
    let out = node.at(
        DAY1,
        &["uninstall", "--purge", "--root", root.to_str().unwrap()],
    );
    assert!(
        out.contains("ipset: destroyed ") && out.contains("vzacct-free4, vzacct-free6"),
        "{out}"
    );
    let chains = if v.ipset() { 4 + 4 } else { 4 };
    assert!(
        out.contains(&format!("IPv4: removed 3 jump(s) and {chains} chain(s)")),
        "{out}"
    );
    assert!(
        !node.save_all(false).contains("VZACCT"),
        "{}",
        node.save_all(false)
    );
}

per_variant!(
    a_cover_is_not_a_free_network,
    free_networks_are_counted_apart,
    a_change_of_classes_loses_nothing,
    quotas_count_billable_traffic_only,
);
