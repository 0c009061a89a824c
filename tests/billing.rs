//! Billing cycles with real packets in the node topology (issue 14): a node cycle day of 15
//! across its boundary (traffic before and after local midnight of the 15th lands in the
//! right period), a container's own cycle day (`vzacct set`) taking effect at its next
//! boundary without changing a period begun, previous-period figures equal to the sum of the
//! CSV rows of that span, `show --period` and `history`, all with `"jsonversion": 2`.

mod common;

use common::*;
use serde_json::Value;
use std::net::IpAddr;

const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];

/// The node with `timezone` and `[billing] cycle_day` in its config.
fn node(v: Variant, zone: &str, cycle_day: u8) -> Node {
    let node = Node::with_topology(v, CTS);
    let cfg = std::fs::read_to_string(&node.config)
        .unwrap()
        .replace("timezone = UTC\n", &format!("timezone = {zone}\n"));
    std::fs::write(
        &node.config,
        format!("{cfg}[billing]\ncycle_day = {cycle_day}\n"),
    )
    .unwrap();
    node
}

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

fn from_ct(node: &Node, ctid: &str, v6: bool, payload: usize, n: usize) -> F {
    let c = node.ct(ctid);
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (c.v6, WORLD_V6.parse().unwrap())
    } else {
        (c.v4, WORLD_V4.parse().unwrap())
    };
    send_udp(&c.ns, src, node.world(), dst, payload, n);
    F::outb(n as u64 * udp_ip_len(src, payload), n as u64)
}

fn json(node: &Node, now: &str, args: &[&str]) -> Value {
    let text = node.at(now, args);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["jsonversion"], 2, "{v}");
    v
}

/// A period of `show --json`: (start, end, figures).
fn period(v: &Value) -> (String, String, F) {
    (
        v["start"].as_str().expect("start").to_string(),
        v["end"].as_str().expect("end").to_string(),
        F::of(v),
    )
}

fn p(start: &str, end: &str, f: F) -> (String, String, F) {
    (start.to_string(), end.to_string(), f)
}

/// The container's CSV rows (date, figures).
fn csv_rows(node: &Node, ctid: &str) -> Vec<(String, F)> {
    let text = std::fs::read_to_string(node.path(&format!("csv/{ctid}.csv"))).unwrap_or_default();
    text.lines()
        .skip(1)
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            assert_eq!(fields.len(), 14, "{l}");
            let mut f = F::default();
            for i in 0..8 {
                f.0[i] = fields[i + 2].parse().unwrap();
            }
            (fields[0].to_string(), f)
        })
        .collect()
}

/// The sum of the CSV rows dated in `[start, end)`.
fn csv_sum(node: &Node, ctid: &str, start: &str, end: &str) -> F {
    let rows: Vec<F> = csv_rows(node, ctid)
        .into_iter()
        .filter(|(d, _)| d.as_str() >= start && d.as_str() < end)
        .map(|(_, f)| f)
        .collect();
    F::sum(&rows)
}

/// Cycle day 15 in Europe/Berlin: traffic harvested before local midnight of the 15th is
/// the previous period's, after it the new one's; container 102 gets day 1 of its own on
/// the 15th, in force from its next boundary (15 March): a short period to 1 April, then
/// calendar months; a period already begun is never changed. Previous-period figures equal
/// the CSV rows of that span.
fn cycle_day_15_and_an_override(v: Variant) {
    let node = node(v, "Europe/Berlin", 15);
    node.at(
        "2027-02-14T10:00:00+01:00",
        &["add", "101", "10.0.0.1", "2001:db8:1::1"],
    );
    node.at("2027-02-14T10:00:00+01:00", &["add", "102", "10.0.0.2"]);
    let a = to_ct(&node, "101", false, 100, 3).add(from_ct(&node, "101", true, 200, 2));
    let a2 = from_ct(&node, "102", false, 300, 1);
    node.at("2027-02-14T23:59:00+01:00", &["dump"]);
    let b = to_ct(&node, "101", true, 400, 2).add(from_ct(&node, "101", false, 50, 5));
    node.at("2027-02-15T00:01:00+01:00", &["dump"]);

    let s = json(&node, "2027-02-15T12:00:00+01:00", &["show", "--json"]);
    let c = ct_of(&s, "101");
    assert_eq!(c["cycle_day"], 15);
    assert_eq!(
        period(&c["period"]),
        p("2027-02-15", "2027-03-15", b),
        "{s}"
    );
    assert_eq!(
        period(&c["previous_period"]),
        p("2027-01-15", "2027-02-15", a)
    );
    assert_eq!(
        period(&ct_of(&s, "102")["previous_period"]),
        p("2027-01-15", "2027-02-15", a2)
    );

    // 102: day 1 from the end of its current period on.
    let out = node.at(
        "2027-02-15T12:00:00+01:00",
        &["set", "102", "--cycle-day", "1"],
    );
    assert!(out.contains("from 2027-03-15"), "{out}");
    let s = json(
        &node,
        "2027-02-20T12:00:00+01:00",
        &["show", "--json", "102"],
    );
    assert_eq!(ct_of(&s, "102")["cycle_day"], 15);
    assert_eq!(period(&ct_of(&s, "102")["period"]).0, "2027-02-15");

    let c1 = to_ct(&node, "101", false, 500, 2);
    let c2 = to_ct(&node, "102", false, 600, 2);
    node.at("2027-03-14T23:58:00+01:00", &["dump"]);
    let d1 = from_ct(&node, "101", false, 700, 1);
    let d2 = from_ct(&node, "102", false, 800, 1);
    node.at("2027-03-15T00:02:00+01:00", &["dump"]);
    let e2 = to_ct(&node, "102", false, 900, 1);
    node.at("2027-03-31T23:59:00+02:00", &["dump"]);
    let f2 = to_ct(&node, "102", false, 1000, 1);
    node.at("2027-04-01T00:01:00+02:00", &["dump"]);

    let s = json(&node, "2027-04-02T12:00:00+02:00", &["show", "--json"]);
    let one = ct_of(&s, "101");
    assert_eq!(period(&one["period"]), p("2027-03-15", "2027-04-15", d1));
    assert_eq!(
        period(&one["previous_period"]),
        p("2027-02-15", "2027-03-15", b.add(c1))
    );
    let two = ct_of(&s, "102");
    assert_eq!(two["cycle_day"], 1);
    assert_eq!(period(&two["period"]), p("2027-04-01", "2027-05-01", f2));
    assert_eq!(
        period(&two["previous_period"]),
        p("2027-03-15", "2027-04-01", d2.add(e2))
    );
    // The previous periods are the CSV rows of their spans, to the byte.
    assert_eq!(
        F::of(&one["previous_period"]),
        csv_sum(&node, "101", "2027-02-15", "2027-03-15")
    );
    assert_eq!(
        F::of(&two["previous_period"]),
        csv_sum(&node, "102", "2027-03-15", "2027-04-01")
    );

    // Any span: a period begun before the change keeps its bounds; calendar months; ranges.
    let s = json(
        &node,
        "2027-04-02T12:00:00+02:00",
        &["show", "--json", "--period", "previous", "102"],
    );
    assert_eq!(period(&ct_of(&s, "102")["period"]).0, "2027-03-15");
    let s = json(
        &node,
        "2027-04-02T12:00:00+02:00",
        &["show", "--json", "--period", "2027-02"],
    );
    for ctid in ["101", "102"] {
        assert_eq!(
            period(&ct_of(&s, ctid)["period"]),
            p(
                "2027-02-01",
                "2027-03-01",
                csv_sum(&node, ctid, "2027-02-01", "2027-03-01")
            )
        );
    }
    assert_eq!(F::of(&ct_of(&s, "101")["period"]), a.add(b));
    let s = json(
        &node,
        "2027-04-02T12:00:00+02:00",
        &["show", "--json", "--period", "2027-02-14..2027-04-03"],
    );
    assert_eq!(
        F::of(&ct_of(&s, "102")["period"]),
        F::sum(&[a2, c2, d2, e2, f2])
    );
    let table = node.at(
        "2027-04-02T12:00:00+02:00",
        &["show", "--period", "previous"],
    );
    assert!(
        table.contains("2027-03-15") && table.contains("2027-02-15"),
        "{table}"
    );

    // history: one row per day with figures, the period starts marked.
    let h = json(
        &node,
        "2027-04-02T12:00:00+02:00",
        &["history", "102", "--days", "60", "--json"],
    );
    assert_eq!(h["ctid"], "102");
    let days = h["days"].as_array().unwrap();
    let starts: Vec<&str> = days
        .iter()
        .filter(|d| d["period_start"] == true)
        .map(|d| d["date"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["2027-02-15", "2027-03-15", "2027-04-01"], "{h}");
    let sum = F::sum(&days.iter().map(F::of).collect::<Vec<_>>());
    assert_eq!(sum, F::sum(&[a2, c2, d2, e2, f2]));
    assert_eq!(days.last().unwrap()["open"], true);
    let h = json(
        &node,
        "2027-04-02T12:00:00+02:00",
        &["history", "101", "--months", "3", "--json"],
    );
    let months: Vec<(String, F)> = h["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["month"].as_str().unwrap().to_string(), F::of(m)))
        .collect();
    assert_eq!(
        months,
        vec![
            ("2027-02".to_string(), a.add(b)),
            ("2027-03".to_string(), c1.add(d1)),
            ("2027-04".to_string(), F::default()),
        ]
    );
    let table = node.at("2027-04-02T12:00:00+02:00", &["history", "102"]);
    assert!(
        table.contains("period 2027-03-15 .. 2027-04-01") && table.contains('#'),
        "{table}"
    );
}

/// Setting the day in force cancels a pending change; bad days are refused before anything
/// runs; a view reads the ledger of schema 2 as it is and a writing command upgrades it.
fn set_cancel_and_refuse(v: Variant) {
    let node = node(v, "UTC", 1);
    node.at("2027-01-10T00:00:00Z", &["add", "101", "10.0.0.1"]);
    let out = node.at("2027-01-10T00:00:00Z", &["set", "101", "--cycle-day", "1"]);
    assert!(out.contains("already"), "{out}");
    node.at("2027-01-10T00:00:00Z", &["set", "101", "--cycle-day", "20"]);
    let out = node.at("2027-01-11T00:00:00Z", &["set", "101", "--cycle-day", "1"]);
    assert!(out.contains("cancelled"), "{out}");
    let s = json(&node, "2027-02-25T00:00:00Z", &["show", "--json"]);
    assert_eq!(period(&ct_of(&s, "101")["period"]).0, "2027-02-01");
    for bad in ["0", "29", "x"] {
        let o = node.vzacct(&["set", "101", "--cycle-day", bad]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("cycle"), "{}", stderr(&o));
    }
    for bad in ["2027-13", "2027-02-10..2027-02-10", "soon"] {
        let o = node.vzacct(&["show", "--period", bad]);
        assert!(!o.status.success(), "{bad}");
    }
}

per_variant!(cycle_day_15_and_an_override, set_cancel_and_refuse);
