//! The ipset backend against the real ipset and iptables (legacy and nf_tables): the exact
//! sets and fixed rules, directions with real packets, foreign damage healed, counters
//! zeroed or elements recreated by someone else, `auto` choosing ipset, and switching
//! backends on a live node without losing or doubling a counted byte.

mod common;

use common::*;
use serde_json::Value;
use std::net::IpAddr;

const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];

fn set_counters(node: &Node, set: &str, ip: &str) -> (u64, u64) {
    let save = node.ns.must("ipset", &["save", set]);
    let line = save
        .lines()
        .find(|l| l.starts_with(&format!("add {set} {ip} ")))
        .unwrap_or_else(|| panic!("{ip} not in {set}:\n{save}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| {
        w[w.iter().position(|x| *x == k).unwrap() + 1]
            .parse()
            .unwrap()
    };
    (get("packets"), get("bytes"))
}

fn total_in(node: &Node, ctid: &str) -> u64 {
    in_bytes(
        &serde_json::from_str(&node.ok(&["show", "--json"])).unwrap(),
        ctid,
    )
}

fn to_ct(node: &Node, ctid: &str, payload: usize, n: usize) -> u64 {
    let ct = node.ct(ctid);
    let src: IpAddr = WORLD_V4.parse().unwrap();
    send_udp(node.world(), src, &ct.ns, ct.v4, payload, n);
    n as u64 * udp_ip_len(ct.v4, payload)
}

fn set_backend(node: &Node, backend: &str) {
    let text = std::fs::read_to_string(&node.config).unwrap();
    let mut out = String::new();
    for l in text.lines() {
        if l.starts_with("backend = ") {
            out.push_str(&format!("backend = {backend}\n"));
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    std::fs::write(&node.config, out).unwrap();
}

/// The four fixed rules per family and one element per IP in each set, exactly; every
/// command run again changes nothing.
fn exact_sets_and_rules(v: Variant) {
    let node = Node::new(v);
    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    node.ok(&["add", "102", "10.0.0.2"]);
    assert_eq!(
        node.ours(false),
        [
            ":VZACCT-FORWARD - [0:0]",
            ":VZACCT-INPUT - [0:0]",
            ":VZACCT-OUTPUT - [0:0]",
            "[0:0] -A INPUT -j VZACCT-INPUT",
            "[0:0] -A FORWARD -j VZACCT-FORWARD",
            "[0:0] -A OUTPUT -j VZACCT-OUTPUT",
            "[0:0] -A VZACCT-FORWARD -o venet0 -m set --match-set vzacct-fi4 dst",
            "[0:0] -A VZACCT-FORWARD -i venet0 -m set --match-set vzacct-fo4 src",
            "[0:0] -A VZACCT-INPUT -i venet0 -m set --match-set vzacct-lo4 src",
            "[0:0] -A VZACCT-OUTPUT -o venet0 -m set --match-set vzacct-li4 dst",
        ]
    );
    let mut want4 = Vec::new();
    for set in ["fi4", "fo4", "li4", "lo4"] {
        want4.push(format!("vzacct-{set} 10.0.0.1 \"ct:101\""));
        want4.push(format!("vzacct-{set} 10.0.0.2 \"ct:102\""));
    }
    want4.sort();
    assert_eq!(node.sets(false), want4);
    let want6: Vec<String> = ["fi6", "fo6", "li6", "lo6"]
        .iter()
        .map(|s| format!("vzacct-{s} 2001:db8:1::1 \"ct:101\""))
        .collect();
    assert_eq!(node.sets(true), want6);
    // Every run writes the next generation into each set (one element, checked here) and
    // changes nothing else.
    let sets_at = |g: u64| -> String {
        let save = node.ns.must("ipset", &["save"]);
        let stamp = format!("comment \"generation:{g}\"");
        let stamps = save.lines().filter(|l| l.ends_with(&stamp)).count();
        assert_eq!(stamps, 8, "{save}");
        save.replace(&stamp, "comment \"generation:N\"")
    };
    // The first add ran over the node (no full run had written the ledger), the second over
    // its container alone, as a hook does (no generation written).
    let snapshot = (node.save(false), node.save(true), sets_at(1));
    let again = node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    assert!(
        again.starts_with("container 101: already accounted\n"),
        "{again}"
    );
    assert!(!again.contains("ipset:"), "no set change reported: {again}");
    node.ok(&["sync"]);
    node.ok(&["sync"]);
    assert_eq!((node.save(false), node.save(true), sets_at(3)), snapshot);
    let status: Value = serde_json::from_str(&node.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["backend"], "ipset");
    assert_eq!(status["sets_missing"], 0);
    node.ok(&["remove", "102"]);
    assert_eq!(node.entries("102", false), 0);
    assert_eq!(node.entries("101", false), 4);
}

/// Real packets land in the set of the right direction, with exact bytes.
fn directions_with_sets(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    node.ok(&["add", "102", "10.0.0.2", "2001:db8:1::2"]);
    for v6 in [false, true] {
        let (a, b, venet, world, f): (IpAddr, IpAddr, IpAddr, IpAddr, &str) = if v6 {
            (
                node.ct("101").v6,
                node.ct("102").v6,
                NODE_VENET_V6.parse().unwrap(),
                WORLD_V6.parse().unwrap(),
                "6",
            )
        } else {
            (
                node.ct("101").v4,
                node.ct("102").v4,
                NODE_VENET_V4.parse().unwrap(),
                WORLD_V4.parse().unwrap(),
                "4",
            )
        };
        let (ca, cb) = (&node.ct("101").ns, &node.ct("102").ns);
        send_udp(node.world(), world, ca, a, 100, 3);
        send_udp(ca, a, node.world(), world, 200, 2);
        send_udp(&node.ns, venet, ca, a, 50, 4);
        send_udp(ca, a, &node.ns, venet, 70, 5);
        send_udp(ca, a, cb, b, 30, 6);
        let l = |p| udp_ip_len(a, p);
        let (sa, sb) = (a.to_string(), b.to_string());
        assert_eq!(
            set_counters(&node, &format!("vzacct-fi{f}"), &sa),
            (3, 3 * l(100))
        );
        assert_eq!(
            set_counters(&node, &format!("vzacct-fo{f}"), &sa),
            (8, 2 * l(200) + 6 * l(30))
        );
        assert_eq!(
            set_counters(&node, &format!("vzacct-li{f}"), &sa),
            (4, 4 * l(50))
        );
        assert_eq!(
            set_counters(&node, &format!("vzacct-lo{f}"), &sa),
            (5, 5 * l(70))
        );
        assert_eq!(
            set_counters(&node, &format!("vzacct-fi{f}"), &sb),
            (6, 6 * l(30))
        );
        for s in ["fo", "li", "lo"] {
            assert_eq!(set_counters(&node, &format!("vzacct-{s}{f}"), &sb), (0, 0));
        }
    }
}

/// Someone flushes a set, deletes an element, adds a stray one, flushes our chain, or
/// destroys everything: status tells, sync heals, the counts since the last harvest of what
/// was destroyed are lost and nothing else.
fn foreign_damage_heals(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.ok(&["add", "101", "10.0.0.1"]);
    node.ok(&["add", "102", "10.0.0.2"]);
    let healthy = (node.ours(false), node.sets(false));
    let mut counted = to_ct(&node, "101", 300, 2);
    node.ok(&["dump"]);
    node.ns.must("ipset", &["flush", "vzacct-fi4"]);
    node.ns.must("ipset", &["del", "vzacct-lo4", "10.0.0.2"]);
    node.ns.must(
        "ipset",
        &["add", "vzacct-fo4", "10.0.0.77", "comment", "ct:177"],
    );
    node.ipt(false, &["-F", "VZACCT-OUTPUT"]);
    let status: Value = serde_json::from_str(&node.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["stray_set_elements"], 1, "{status}");
    assert_eq!(status["containers"][0]["in_place"], false, "{status}");
    assert_eq!(
        status["netfilter"][0]["chains_and_jumps_in_place"], true,
        "{status}"
    );
    let out = node.ok(&["sync"]);
    assert!(
        out.contains("ipset: 3 element(s) added, 1 removed"),
        "{out}"
    );
    let strip = |l: Vec<String>| -> Vec<String> {
        l.into_iter()
            .map(|x| x.split_once("] ").map(|(_, r)| r.to_string()).unwrap_or(x))
            .collect()
    };
    assert_eq!(
        (strip(node.ours(false)), node.sets(false)),
        (strip(healthy.0.clone()), healthy.1.clone())
    );
    counted += to_ct(&node, "101", 200, 1);
    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), counted);
    // Everything destroyed, sets included.
    node.reboot_tables();
    node.ok(&["sync"]);
    assert_eq!(node.sets(false), healthy.1);
    counted += to_ct(&node, "101", 100, 3);
    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), counted);
}

/// An element's counters zeroed, or the element deleted and re-added, by someone else:
/// no negative delta, no spike; exactly what the ledger could see is counted.
fn element_zeroed_or_recreated(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.ok(&["add", "101", "10.0.0.1"]);
    let mut counted = to_ct(&node, "101", 500, 4);
    node.ok(&["dump"]);
    // Zeroed (ipset re-adds an existing element's counters with -exist).
    to_ct(&node, "101", 100, 1); // counted since the last dump, then zeroed: lost
    node.ns.must(
        "ipset",
        &[
            "-exist",
            "add",
            "vzacct-fi4",
            "10.0.0.1",
            "packets",
            "0",
            "bytes",
            "0",
            "comment",
            "ct:101",
        ],
    );
    assert_eq!(set_counters(&node, "vzacct-fi4", "10.0.0.1"), (0, 0));
    counted += to_ct(&node, "101", 50, 2);
    let out = node.ok(&["dump"]);
    assert!(
        out.contains("1 counter(s) had restarted from zero"),
        "{out}"
    );
    assert_eq!(total_in(&node, "101"), counted);
    // Deleted and re-added.
    node.ns.must("ipset", &["del", "vzacct-fi4", "10.0.0.1"]);
    node.ns.must(
        "ipset",
        &["add", "vzacct-fi4", "10.0.0.1", "comment", "ct:101"],
    );
    counted += to_ct(&node, "101", 60, 1);
    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), counted);
    // Impossible counters written by someone else are not credited.
    node.ns.must(
        "ipset",
        &[
            "-exist",
            "add",
            "vzacct-fi4",
            "10.0.0.1",
            "packets",
            "1",
            "bytes",
            "18446744073709551000",
            "comment",
            "ct:101",
        ],
    );
    let out = node.ok(&["dump"]);
    assert!(out.contains("impossible counters"), "{out}");
    assert_eq!(total_in(&node, "101"), counted);
    counted += to_ct(&node, "101", 70, 1);
    node.ok(&["dump"]);
    assert_eq!(total_in(&node, "101"), counted);
}

/// `backend = auto` picks ipset on this machine.
fn auto_picks_ipset(v: Variant) {
    let node = Node::new(v);
    set_backend(&node, "auto");
    node.ok(&["add", "101", "10.0.0.1"]);
    let status: Value = serde_json::from_str(&node.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["backend"], "ipset");
    assert_eq!(node.sets(false).len(), 4);
}

/// Switching backends on a live node (config change, then `vzacct sync`) moves every
/// container over, in both directions, without losing or doubling a counted byte.
fn switch_backends_live(v: Variant) {
    let node = Node::with_topology(v, CTS);
    set_backend(&node, "iptables");
    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    node.ok(&["add", "102", "10.0.0.2"]);
    let mut c101 = to_ct(&node, "101", 400, 3);
    let mut c102 = to_ct(&node, "102", 300, 2);
    node.ok(&["dump"]);
    c101 += to_ct(&node, "101", 200, 2); // not yet harvested when the backend changes
    set_backend(&node, "ipset");
    let out = node.ok(&["sync"]);
    assert!(out.contains("ipset: 12 element(s) added"), "{out}");
    assert!(out.contains("IPv4: 4 rule(s) added, 8 removed"), "{out}");
    assert_eq!(
        node.ours(false)
            .iter()
            .filter(|l| l.contains("ct:"))
            .count(),
        0,
        "per-IP rules gone"
    );
    assert_eq!(node.sets(false).len(), 8);
    c101 += to_ct(&node, "101", 100, 4);
    c102 += to_ct(&node, "102", 100, 1);
    node.ok(&["dump"]);
    assert_eq!(
        (total_in(&node, "101"), total_in(&node, "102")),
        (c101, c102)
    );
    // And back.
    c102 += to_ct(&node, "102", 250, 2); // in the sets, not yet harvested
    set_backend(&node, "iptables");
    node.ok(&["sync"]);
    assert!(
        node.sets(false).is_empty() && node.sets(true).is_empty(),
        "sets destroyed"
    );
    let saved = node.ns.must("ipset", &["save"]);
    assert!(!saved.contains("vzacct-"), "{saved}");
    assert_eq!(node.entries("101", false), 4);
    c101 += to_ct(&node, "101", 90, 2);
    node.ok(&["dump"]);
    assert_eq!(
        (total_in(&node, "101"), total_in(&node, "102")),
        (c101, c102)
    );
}

/// The node's ledger files that differ between two snapshots (changed, added or removed).
fn changed_files(
    a: &std::collections::BTreeMap<String, Vec<u8>>,
    b: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let mut names: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Hooks on a node already on the ipset backend: `mount` changes nothing; `net-add` writes only its
/// container's bucket and index entries and run one `ipset restore` (no `ipset save`);
/// `umount` of an address vzctl no longer routes to venet runs no ipset at all and leaves
/// the elements to the next dump, which harvests them exactly. An address still routed to
/// venet (halted from inside), an IP another container holds: the full run, at once.
fn quick_hooks(v: Variant) {
    let node = Node::with_topology(v, CTS);
    // Every ipset run is logged by a wrapper.
    let calls = node.path("ipset-calls");
    let wrapper = node.path("ipset-wrapper");
    write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\n[ -e {} ] && [ \"$1\" = restore ] && exit 1\nexec ipset \"$@\"\n",
            calls.display(),
            node.path("ipset-fails").display()
        ),
    );
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let text = std::fs::read_to_string(&node.config).unwrap();
    let text = text.replace(
        "[netfilter]\n",
        &format!("[netfilter]\nipset = {}\n", wrapper.display()),
    );
    std::fs::write(&node.config, text).unwrap();
    write(&node.path("conf/101.conf"), "IP_ADDRESS=\"10.0.0.1\"\n");
    node.ok(&["add", "102", "10.0.0.2"]);
    let state = node.path("state");
    let ipset_calls = || {
        let t = std::fs::read_to_string(&calls).unwrap_or_default();
        std::fs::remove_file(&calls).ok();
        t
    };
    ipset_calls();
    let hook = |event: &str, env: &[(&str, &str)]| {
        let out = node.vzacct_env(&["hook", event], env);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let conf = node.path("conf/101.conf").display().to_string();
    let mount: &[(&str, &str)] = &[("VEID", "101"), ("VE_CONFFILE", &conf)];
    let start: &[(&str, &str)] = &[
        ("VEID", "101"),
        ("VE_STATE", "starting"),
        ("IP_ADDR", "10.0.0.1"),
    ];
    let mounted =
        "vzacct hook mount: config lists 10.0.0.1; accounted when vzctl assigns them (net_add)\n";
    let started = "vzacct hook net-add: VE_STATE=starting accounting 10.0.0.1 (new: 10.0.0.1)\n";

    // vzctl start 101: mount (reads the config, changes nothing), then vps-net_add.
    let before = ledger_files(&state);
    assert_eq!(hook("mount", mount), mounted);
    assert_eq!(ipset_calls(), "");
    assert_eq!(ledger_files(&state), before);
    assert_eq!(hook("net-add", start), started);
    assert_eq!(ipset_calls(), "restore -exist\n");
    assert_eq!(
        changed_files(&before, &ledger_files(&state)),
        [ct_bucket_file("101"), ip_bucket_file("10.0.0.1")]
    );
    assert_eq!(node.entries("101", false), 4);
    let mut c101 = to_ct(&node, "101", 300, 3);
    let mut c102 = to_ct(&node, "102", 200, 2);

    // vzctl stop 101: vps-net_del removes the route, then umount.
    node.ns.ip("route del 10.0.0.1/32 dev venet0");
    let before = ledger_files(&state);
    let out = hook("umount", &[("VEID", "101")]);
    assert_eq!(
        out,
        "vzacct hook umount: stopped accounting 10.0.0.1 (counters kept in the sets until the next dump harvests them)\n"
    );
    assert_eq!(ipset_calls(), "");
    assert_eq!(
        changed_files(&before, &ledger_files(&state)),
        [ct_bucket_file("101")]
    );
    assert_eq!(node.entries("101", false), 4, "left for the dump");
    node.ok(&["dump"]);
    assert_eq!(node.entries("101", false), 0, "harvested and removed");
    assert_eq!(
        (total_in(&node, "101"), total_in(&node, "102")),
        (c101, c102)
    );

    // Started again, then halted from inside: the route stays, so the full run harvests
    // and removes the elements at once.
    node.ns.ip(&format!(
        "route add 10.0.0.1/32 dev venet0 src {NODE_VENET_V4}"
    ));
    ipset_calls();
    // The dump removed 101's elements and then forgot their last-seen values: the new ones
    // start from zero, and more traffic than the old ones had counted is all credited.
    assert_eq!(hook("mount", mount), mounted);
    assert_eq!(hook("net-add", start), started);
    assert_eq!(ipset_calls(), "restore -exist\n");
    c101 += to_ct(&node, "101", 700, 4);
    let out = hook("umount", &[("VEID", "101")]);
    assert_eq!(
        out,
        "vzacct hook umount: stopped accounting 10.0.0.1 [full run: 10.0.0.1 is still routed to venet0]\n"
    );
    assert_eq!(node.entries("101", false), 0, "removed at once");
    to_ct(&node, "101", 500, 1); // halted: not counted

    // That removal is confirmed, so 102 can take 10.0.0.1 at once.
    ipset_calls();
    let net = |event: &str, ctid: &str| {
        hook(
            event,
            &[
                ("VEID", ctid),
                ("VE_STATE", "running"),
                ("IP_ADDR", "10.0.0.1"),
            ],
        )
    };
    assert_eq!(
        net("net-add", "102"),
        "vzacct hook net-add: VE_STATE=running accounting 10.0.0.1 (new: 10.0.0.1)\n"
    );
    assert_eq!(ipset_calls(), "restore -exist\n");
    c102 += to_ct(&node, "101", 64, 2); // 101's namespace still answers for 10.0.0.1
    node.ok(&["dump"]);
    assert_eq!(
        (total_in(&node, "101"), total_in(&node, "102")),
        (c101, c102)
    );

    // `set 102 --ipdel 10.0.0.1` (route removed): its elements are parked for the dump.
    // 101 takes the IP before that dump: it is held by 102, so the full run harvests 102's
    // elements first and then moves them.
    c102 += to_ct(&node, "101", 333, 3);
    node.ns.ip("route del 10.0.0.1/32 dev venet0");
    assert_eq!(
        net("net-del", "102"),
        "vzacct hook net-del: VE_STATE=running stopped accounting 10.0.0.1 (counters kept in the sets until the next dump harvests them)\n"
    );
    node.ns.ip(&format!(
        "route add 10.0.0.1/32 dev venet0 src {NODE_VENET_V4}"
    ));
    assert_eq!(
        net("net-add", "101"),
        "vzacct hook net-add: VE_STATE=running accounting 10.0.0.1 (new: 10.0.0.1) [full run: 10.0.0.1 is held by container 102]\n"
    );
    c101 += to_ct(&node, "101", 1400, 2);
    node.ok(&["dump"]);
    assert_eq!(
        (total_in(&node, "101"), total_in(&node, "102")),
        (c101, c102)
    );

    // A full run whose kernel change fails (ipset restore refuses, as if killed) keeps the
    // last-seen values of the elements it was removing, which still count: the next hook
    // for such an IP goes through the full run, which reads them.
    write(&node.path("ipset-fails"), "");
    assert_eq!(net("net-del", "101"), ""); // still routed: the full run, which fails
    std::fs::remove_file(node.path("ipset-fails")).unwrap();
    assert_eq!(node.entries("101", false), 4, "the removal failed");
    c101 += to_ct(&node, "101", 900, 2); // still counted by 101's elements
    assert_eq!(
        net("net-add", "101"),
        "vzacct hook net-add: VE_STATE=running accounting 10.0.0.1 (new: 10.0.0.1) [full run: 10.0.0.1: the removal of its earlier counters is not confirmed]\n"
    );
    c101 += to_ct(&node, "101", 900, 2);
    node.ok(&["dump"]);
    assert_eq!(
        (total_in(&node, "101"), total_in(&node, "102")),
        (c101, c102)
    );
}

mod ipset_backend {
    use super::*;
    #[test]
    fn legacy_quick_hooks() {
        quick_hooks(Variant::LegacyIpset)
    }
    #[test]
    fn nft_quick_hooks() {
        quick_hooks(Variant::NftIpset)
    }
    #[test]
    fn legacy_exact_sets_and_rules() {
        exact_sets_and_rules(Variant::LegacyIpset)
    }
    #[test]
    fn nft_exact_sets_and_rules() {
        exact_sets_and_rules(Variant::NftIpset)
    }
    #[test]
    fn legacy_directions_with_sets() {
        directions_with_sets(Variant::LegacyIpset)
    }
    #[test]
    fn nft_directions_with_sets() {
        directions_with_sets(Variant::NftIpset)
    }
    #[test]
    fn legacy_foreign_damage_heals() {
        foreign_damage_heals(Variant::LegacyIpset)
    }
    #[test]
    fn nft_foreign_damage_heals() {
        foreign_damage_heals(Variant::NftIpset)
    }
    #[test]
    fn legacy_element_zeroed_or_recreated() {
        element_zeroed_or_recreated(Variant::LegacyIpset)
    }
    #[test]
    fn nft_element_zeroed_or_recreated() {
        element_zeroed_or_recreated(Variant::NftIpset)
    }
    #[test]
    fn legacy_auto_picks_ipset() {
        auto_picks_ipset(Variant::Legacy)
    }
    #[test]
    fn nft_auto_picks_ipset() {
        auto_picks_ipset(Variant::Nft)
    }
    #[test]
    fn legacy_switch_backends_live() {
        switch_backends_live(Variant::Legacy)
    }
    #[test]
    fn nft_switch_backends_live() {
        switch_backends_live(Variant::Nft)
    }
}
