//! Real packets through the node topology: each kind of traffic lands in the rule that
//! DESIGN.md says, with exactly the IP-level bytes sent, for IPv4 and IPv6 and both
//! iptables back-ends.

mod common;

use common::*;
use std::net::IpAddr;

const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];

fn directions_and_exact_bytes(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.ok(&["add", "101", "10.0.0.1", "2001:db8:1::1"]);
    node.ok(&["add", "102", "10.0.0.2", "2001:db8:1::2"]);
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
        let ct_a = &node.ct("101").ns;
        let ct_b = &node.ct("102").ns;
        send_udp(node.world(), world, ct_a, a, 100, 3); // world -> CT
        send_udp(ct_a, a, node.world(), world, 200, 2); // CT -> world
        send_udp(&node.ns, venet, ct_a, a, 50, 4); // node -> CT
        send_udp(ct_a, a, &node.ns, venet, 70, 5); // CT -> node
        send_udp(ct_a, a, ct_b, b, 30, 6); // CT -> CT
        let len = |payload| udp_ip_len(a, payload);
        let host = if v6 { 128 } else { 32 };
        let c = |rule: &str| node.counters(v6, rule);
        assert_eq!(
            c(&format!(
                "VZACCT-FORWARD -d {a}/{host} -m comment --comment \"ct:101\""
            )),
            (3, 3 * len(100)),
            "world -> 101 ({v:?}, v6={v6})"
        );
        assert_eq!(
            c(&format!(
                "VZACCT-FORWARD -s {a}/{host} -m comment --comment \"ct:101\""
            )),
            (8, 2 * len(200) + 6 * len(30)),
            "101 -> world and 101 -> 102"
        );
        assert_eq!(
            c(&format!(
                "VZACCT-OUTPUT -d {a}/{host} -o venet0 -m comment --comment \"ct:101\""
            )),
            (4, 4 * len(50)),
            "node -> 101"
        );
        assert_eq!(
            c(&format!(
                "VZACCT-INPUT -s {a}/{host} -i venet0 -m comment --comment \"ct:101\""
            )),
            (5, 5 * len(70)),
            "101 -> node"
        );
        assert_eq!(
            c(&format!(
                "VZACCT-FORWARD -d {b}/{host} -m comment --comment \"ct:102\""
            )),
            (6, 6 * len(30)),
            "101 -> 102 is in for 102"
        );
        for rule in [
            format!("VZACCT-FORWARD -s {b}/{host} -m comment --comment \"ct:102\""),
            format!("VZACCT-OUTPUT -d {b}/{host} -o venet0 -m comment --comment \"ct:102\""),
            format!("VZACCT-INPUT -s {b}/{host} -i venet0 -m comment --comment \"ct:102\""),
        ] {
            assert_eq!(c(&rule), (0, 0), "{rule}");
        }
    }
}

/// Counters of rules that a change does not concern keep their values, exactly.
fn untouched_counters_survive_changes_to_other_containers(v: Variant) {
    let node = Node::with_topology(v, CTS);
    node.ok(&["add", "101", "10.0.0.1"]);
    let a = node.ct("101").v4;
    let world: IpAddr = WORLD_V4.parse().unwrap();
    send_udp(node.world(), world, &node.ct("101").ns, a, 500, 7);
    let rule = "VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"";
    let expected = (7, 7 * udp_ip_len(a, 500));
    assert_eq!(node.counters(false, rule), expected);
    node.ok(&["add", "102", "10.0.0.2", "2001:db8:1::2"]);
    assert_eq!(node.counters(false, rule), expected);
    node.ok(&["remove", "102"]);
    assert_eq!(node.counters(false, rule), expected);
    node.ok(&["sync"]);
    assert_eq!(node.counters(false, rule), expected);
}

per_rules_variant!(
    directions_and_exact_bytes,
    untouched_counters_survive_changes_to_other_containers
);
