//! The container-config dialects end to end: `vzacct add CTID` reads `IP_ADDRESS` and the
//! global `vz.conf` by the rules `[vzctl] dialect` names (unit tests of every rule are in
//! `src/vzctl/ctconf.rs`).

mod common;

use common::*;

/// A node whose vzacct config pins `dialect`; `vz.conf` lives beside its `conf` dir.
fn node_with(v: Variant, dialect: &str) -> Node {
    let node = Node::new(v);
    let text = std::fs::read_to_string(&node.config).unwrap();
    let pinned = text.replacen("[vzctl]\n", &format!("[vzctl]\ndialect = {dialect}\n"), 1);
    assert_ne!(text, pinned);
    write(&node.config, pinned);
    node
}

fn masked_ipv4_and_vz_conf(v: Variant) {
    let conf = "IP_ADDRESS=\"10.0.0.5/255.255.255.0 2001:db8::5\"\n";
    // OpenVZ 7 saves masked IPv4 this way, and drops IPv6 with IPV6="no" in vz.conf.
    let node = node_with(v, "libvzctl");
    write(&node.path("conf/101.conf"), conf);
    write(
        &node.path("vz.conf"),
        "IPV6=\"no\"\nIP_ADDRESS=\"10.0.0.50\"\n",
    );
    let out = node.vzacct(&["add", "101"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().next(),
        Some("container 101: now accounting 10.0.0.5")
    );
    assert!(
        stderr(&out).contains("IPv6 address(es) 2001:db8::5 not accounted"),
        "{}",
        stderr(&out)
    );
    // A config without IP_ADDRESS gets vz.conf's.
    write(&node.path("conf/102.conf"), "HOSTNAME=\"ct102\"\n");
    let out = node.vzacct(&["add", "102"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().next(),
        Some("container 102: now accounting 10.0.0.50")
    );

    // vzctl 4.x refuses the dotted mask, and with it the rest of the line.
    let node = node_with(v, "vzctl4");
    write(&node.path("conf/101.conf"), conf);
    let out = node.vzacct(&["add", "101"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("\"10.0.0.5/255.255.255.0\" is invalid"),
        "{err}"
    );
    assert!(err.contains("no usable IP address"), "{err}");
}

per_rules_variant!(masked_ipv4_and_vz_conf);
