//! Clocks and counters that misbehave, with real packets in the node topology: the clock
//! stepped back (an hour, a day, across rows already written), both DST changeover nights of
//! Europe/Berlin, counters zeroed (`iptables -Z`), rules deleted and recreated by someone
//! else, and counters set near 2^64 by someone else. Every packet must land in exactly one
//! day that exists, the CSV must hold each date once in increasing order, and the CSV rows
//! plus the open day must add up to exactly what the ledger credited.

mod common;

use common::*;
use serde_json::Value;
use std::net::IpAddr;

const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];
const CSV_HEADER: &str = "date,ctid,in_bytes,out_bytes,in_packets,out_packets,local_in_bytes,local_out_bytes,local_in_packets,local_out_packets,free_in_bytes,free_out_bytes,free_in_packets,free_out_packets";
const BERLIN: &str = "Europe/Berlin";
/// Run vzacct at `now` (RFC 3339), with `timezone = tz` in its config (UTC when None); it
/// must succeed. The caller's TZ is set to a zone 14 hours ahead of UTC every time: the
/// days must follow the config, never the TZ of whoever runs the command.
fn run(node: &Node, tz: Option<&str>, now: &str, args: &[&str]) -> String {
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    let zone = format!("timezone = {}\n", tz.unwrap_or("UTC"));
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.starts_with("timezone = "))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("[storage]\n", &format!("[storage]\n{zone}"));
    std::fs::write(&node.config, cfg).unwrap();
    let env = vec![("VZACCT_NOW", now), ("TZ", "Pacific/Kiritimati")];
    let out = node.vzacct_env(args, &env);
    assert!(
        out.status.success(),
        "vzacct {} at {now} (TZ {tz:?}) failed ({}):\n{}",
        args.join(" "),
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

fn show(node: &Node, tz: Option<&str>, now: &str) -> Value {
    serde_json::from_str(&run(node, tz, now, &["show", "--json"])).expect("show --json")
}

fn ct<'a>(show: &'a Value, ctid: &str) -> &'a Value {
    ct_of(show, ctid)
}

/// world -> CT datagrams (forwarded, "in" for the container).
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

/// CT -> world datagrams (forwarded, "out" for the container).
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

/// The persisted ledger.
fn ledger(node: &Node) -> Value {
    ledger_json(&node.path("state"))
}

/// The container's open day in the persisted ledger: (date, figures).
fn open_day(node: &Node, ctid: &str) -> (String, F) {
    let l = ledger(node);
    let d = &l["containers"][ctid]["today"];
    assert!(d.is_object(), "container {ctid} has no open day: {l}");
    (d["date"].as_str().unwrap().to_string(), F::of(d))
}

/// The container's total in the persisted ledger.
fn total(node: &Node, ctid: &str) -> F {
    F::of(&ledger(node)["containers"][ctid]["total"])
}

/// The container's CSV rows, checked for form: the header, fourteen fields, the ctid, figures
/// that are non-negative integers, dates strictly increasing (so each date at most once).
fn rows(node: &Node, ctid: &str) -> Vec<(String, F)> {
    let text = std::fs::read_to_string(node.path(&format!("csv/{ctid}.csv"))).unwrap_or_default();
    if text.is_empty() {
        return Vec::new();
    }
    assert!(text.ends_with('\n'), "torn CSV: {text:?}");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER), "{text}");
    let mut out: Vec<(String, F)> = Vec::new();
    for l in lines {
        let fields: Vec<&str> = l.split(',').collect();
        assert_eq!(fields.len(), 14, "row {l:?}");
        assert_eq!(fields[1], ctid, "row {l:?}");
        let mut f = F::default();
        for i in 0..8 {
            f.0[i] = fields[i + 2]
                .parse()
                .unwrap_or_else(|_| panic!("figure {:?} of row {l:?} is no u64", fields[i + 2]));
        }
        let date = fields[0].to_string();
        if let Some((last, _)) = out.last() {
            assert!(
                date > *last,
                "dates not strictly increasing ({last} then {date}):\n{text}"
            );
        }
        out.push((date, f));
    }
    out
}

fn want_rows(list: &[(&str, F)]) -> Vec<(String, F)> {
    list.iter().map(|(d, f)| (d.to_string(), *f)).collect()
}

/// The books balance: CSV rows + the open day = the total = `sent`, and the open day is
/// `open` on `open_date`.
fn books(node: &Node, ctid: &str, sent: F, open_date: &str, open: F) {
    let r = rows(node, ctid);
    let (date, today) = open_day(node, ctid);
    assert_eq!(
        (date.as_str(), today),
        (open_date, open),
        "open day of {ctid}"
    );
    if let Some((last, _)) = r.last() {
        assert!(
            date > *last,
            "open day {date} is not after the last CSV row {last}"
        );
    }
    let in_csv = F::sum(&r.iter().map(|(_, f)| *f).collect::<Vec<_>>());
    assert_eq!(
        in_csv.add(today),
        sent,
        "CSV rows + open day of {ctid}: {r:?}"
    );
    assert_eq!(total(node, ctid), sent, "total of {ctid}");
}

/// Feed `text` to the variant's `iptables-restore --noflush --counters` in the node.
fn restore_in_node(node: &Node, v6: bool, text: &str) {
    let restore = format!("{}-restore", node.variant.iptables(v6));
    node.ns
        .must_with_input(&restore, &["-w", "--noflush", "--counters"], text);
}

const FWD_IN_101: &str = "VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"";
const FWD_IN_101_ARGS: [&str; 7] = [
    "VZACCT-FORWARD",
    "-d",
    "10.0.0.1/32",
    "-m",
    "comment",
    "--comment",
    "ct:101",
];

// ---------------------------------------------------------------------------------------
// 1. The clock stepped back
// ---------------------------------------------------------------------------------------

/// NTP steps the clock back an hour across midnight (00:30 -> 23:30 of the day already
/// written) and back an hour within a day: no second row for the written day, the traffic
/// harvested under the wrong clock goes to the open day, every byte is in exactly one place.
fn clock_back_an_hour(v: Variant) {
    let node = Node::with_topology(v, CTS);
    run(
        &node,
        None,
        "2026-11-29T22:00:00Z",
        &["add", "101", "10.0.0.1", "2001:db8:1::1"],
    );
    let a = to_ct(&node, "101", false, 100, 2).add(from_ct(&node, "101", true, 150, 1));
    run(&node, None, "2026-11-29T23:50:00Z", &["dump"]);
    books(&node, "101", a, "2026-11-29", a);

    let b = to_ct(&node, "101", false, 200, 3);
    let out = run(&node, None, "2026-11-30T00:30:00Z", &["dump"]);
    assert!(out.contains("1 daily CSV row(s) written"), "{out}");
    assert_eq!(rows(&node, "101"), want_rows(&[("2026-11-29", a)]));
    books(&node, "101", a.add(b), "2026-11-30", b);

    // Back an hour: 23:30 on the 29th, whose row is already written.
    let c = to_ct(&node, "101", true, 60, 2).add(from_ct(&node, "101", false, 70, 1));
    let out = run(&node, None, "2026-11-29T23:30:00Z", &["dump"]);
    assert!(!out.contains("row(s) written"), "{out}");
    assert_eq!(rows(&node, "101"), want_rows(&[("2026-11-29", a)]));
    books(&node, "101", F::sum(&[a, b, c]), "2026-11-30", b.add(c));
    // A second dump under the wrong clock changes nothing.
    run(&node, None, "2026-11-29T23:35:00Z", &["dump"]);
    books(&node, "101", F::sum(&[a, b, c]), "2026-11-30", b.add(c));

    // The clock is right again.
    let d = to_ct(&node, "101", false, 33, 4);
    run(&node, None, "2026-11-30T00:40:00Z", &["dump"]);
    assert_eq!(rows(&node, "101"), want_rows(&[("2026-11-29", a)]));
    books(
        &node,
        "101",
        F::sum(&[a, b, c, d]),
        "2026-11-30",
        F::sum(&[b, c, d]),
    );

    // Back an hour within a day: 12:00 then 11:00.
    let e = to_ct(&node, "101", false, 500, 1);
    run(&node, None, "2026-11-30T12:00:00Z", &["dump"]);
    let f = from_ct(&node, "101", true, 40, 3);
    run(&node, None, "2026-11-30T11:00:00Z", &["dump"]);
    let day30 = F::sum(&[b, c, d, e, f]);
    books(&node, "101", F::sum(&[a, day30]), "2026-11-30", day30);

    // The next midnight writes the 30th exactly once, with everything harvested on it.
    let g = to_ct(&node, "101", false, 10, 1);
    let out = run(&node, None, "2026-12-01T00:05:00Z", &["dump"]);
    assert!(out.contains("1 daily CSV row(s) written"), "{out}");
    assert_eq!(
        rows(&node, "101"),
        want_rows(&[("2026-11-29", a), ("2026-11-30", day30)])
    );
    books(&node, "101", F::sum(&[a, day30, g]), "2026-12-01", g);
    let s = show(&node, None, "2026-12-01T00:06:00Z");
    assert_eq!(F::of(&ct(&s, "101")["today"]), g);
    assert_eq!(F::of(&ct(&s, "101")["month"]), g);
    assert_eq!(F::of(&ct(&s, "101")["total"]), F::sum(&[a, day30, g]));
}

/// The clock stepped back a whole day, then two, across rows already written: no row is
/// written again, nothing is negative, the traffic stays in the open day until the clock is
/// right and that day closes.
fn clock_back_a_day(v: Variant) {
    let node = Node::with_topology(v, CTS);
    run(
        &node,
        None,
        "2026-11-29T12:00:00Z",
        &["add", "101", "10.0.0.1"],
    );
    let a = to_ct(&node, "101", false, 100, 1);
    run(&node, None, "2026-11-29T12:00:00Z", &["dump"]);
    let b = to_ct(&node, "101", false, 200, 2);
    run(&node, None, "2026-11-30T00:10:00Z", &["dump"]);
    let c = to_ct(&node, "101", false, 300, 3);
    run(&node, None, "2026-12-01T00:10:00Z", &["dump"]);
    let written = want_rows(&[("2026-11-29", a), ("2026-11-30", b)]);
    assert_eq!(rows(&node, "101"), written);
    books(&node, "101", F::sum(&[a, b, c]), "2026-12-01", c);

    // Back a day (the 30th is written), then two days (the 29th is written).
    let d = to_ct(&node, "101", false, 40, 2);
    let out = run(&node, None, "2026-11-30T00:20:00Z", &["dump"]);
    assert!(!out.contains("row(s) written"), "{out}");
    let mut last = total(&node, "101");
    let e = from_ct(&node, "101", false, 50, 1);
    run(&node, None, "2026-11-29T12:00:00Z", &["dump"]);
    assert!(total(&node, "101").ge(&last), "total decreased");
    last = total(&node, "101");
    assert_eq!(rows(&node, "101"), written);
    let dec1 = F::sum(&[c, d, e]);
    books(&node, "101", F::sum(&[a, b, dec1]), "2026-12-01", dec1);

    // Right again.
    let f = to_ct(&node, "101", false, 60, 1);
    run(&node, None, "2026-12-01T00:30:00Z", &["dump"]);
    assert!(total(&node, "101").ge(&last), "total decreased");
    let dec1 = dec1.add(f);
    books(&node, "101", F::sum(&[a, b, dec1]), "2026-12-01", dec1);
    let g = to_ct(&node, "101", false, 70, 1);
    let out = run(&node, None, "2026-12-02T00:10:00Z", &["dump"]);
    assert!(out.contains("1 daily CSV row(s) written"), "{out}");
    assert_eq!(
        rows(&node, "101"),
        want_rows(&[("2026-11-29", a), ("2026-11-30", b), ("2026-12-01", dec1)])
    );
    books(&node, "101", F::sum(&[a, b, dec1, g]), "2026-12-02", g);
    let s = show(&node, None, "2026-12-02T00:11:00Z");
    assert_eq!(F::of(&ct(&s, "101")["month"]), dec1.add(g));
}

/// The clock stepped back an hour across midnight while the container restarted (vzctl
/// restart: `remove` by the umount hook, `add` by the mount hook), after the day it stopped
/// on was already closed into the CSV: the traffic of the restarted container must still
/// reach the CSV exactly once.
fn clock_back_across_a_container_restart(v: Variant) {
    let node = Node::with_topology(v, CTS);
    run(
        &node,
        None,
        "2026-11-30T12:00:00Z",
        &["add", "101", "10.0.0.1"],
    );
    let a = to_ct(&node, "101", false, 100, 2);
    run(&node, None, "2026-11-30T12:00:00Z", &["dump"]);
    // Stopped on the 30th; the first dump of the 1st closes the 30th.
    run(&node, None, "2026-11-30T23:58:00Z", &["remove", "101"]);
    run(&node, None, "2026-12-01T00:10:00Z", &["dump"]);
    assert_eq!(rows(&node, "101"), want_rows(&[("2026-11-30", a)]));
    // NTP steps back an hour; the container starts again, carries traffic.
    run(
        &node,
        None,
        "2026-11-30T23:15:00Z",
        &["add", "101", "10.0.0.1"],
    );
    let t = to_ct(&node, "101", false, 300, 3);
    run(&node, None, "2026-11-30T23:20:00Z", &["dump"]);
    // The clock is right again.
    let c = to_ct(&node, "101", false, 50, 1);
    run(&node, None, "2026-12-01T00:20:00Z", &["dump"]);
    let r = rows(&node, "101");
    let (date, today) = open_day(&node, "101");
    let in_csv = F::sum(&r.iter().map(|(_, f)| *f).collect::<Vec<_>>());
    assert_eq!(total(&node, "101"), F::sum(&[a, t, c]));
    assert_eq!(
        in_csv.add(today),
        F::sum(&[a, t, c]),
        "traffic harvested after the restart under the stepped-back clock is missing from \
         the CSV: rows {r:?}, open day {date} {today:?}"
    );
}

/// The same with the clock stepped back a whole day, across a month: the container stopped
/// on Dec 1 (its row and December's month figure written), NTP steps back to Nov 30, the
/// container starts and carries traffic. Whatever day that traffic is given, December's
/// closed traffic must stay in December's month figure, `show`'s month must equal the
/// month's CSV rows plus the open day, and the books must balance.
fn clock_back_a_day_across_a_restart_and_a_month(v: Variant) {
    let node = Node::with_topology(v, CTS);
    run(
        &node,
        None,
        "2026-11-30T12:00:00Z",
        &["add", "101", "10.0.0.1"],
    );
    let a = to_ct(&node, "101", false, 100, 1);
    run(&node, None, "2026-11-30T12:00:00Z", &["dump"]);
    let b = to_ct(&node, "101", false, 200, 2);
    run(&node, None, "2026-12-01T12:00:00Z", &["dump"]);
    run(&node, None, "2026-12-01T23:58:00Z", &["remove", "101"]);
    run(&node, None, "2026-12-02T00:10:00Z", &["dump"]);
    assert_eq!(
        rows(&node, "101"),
        want_rows(&[("2026-11-30", a), ("2026-12-01", b)])
    );
    let s = show(&node, None, "2026-12-02T00:10:00Z");
    assert_eq!(F::of(&ct(&s, "101")["month"]), b);
    // NTP steps back a day; the container starts again and carries traffic.
    run(
        &node,
        None,
        "2026-11-30T23:30:00Z",
        &["add", "101", "10.0.0.1"],
    );
    let t = to_ct(&node, "101", false, 300, 3);
    run(&node, None, "2026-11-30T23:40:00Z", &["dump"]);
    // Right again.
    let c = to_ct(&node, "101", false, 50, 1);
    run(&node, None, "2026-12-02T00:30:00Z", &["dump"]);
    let r = rows(&node, "101");
    let (date, today) = open_day(&node, "101");
    assert_eq!(date, "2026-12-02");
    assert_eq!(total(&node, "101"), F::sum(&[a, b, t, c]));
    let s = show(&node, None, "2026-12-02T00:30:00Z");
    let month = F::of(&ct(&s, "101")["month"]);
    let dec_rows = F::sum(
        &r.iter()
            .filter(|(d, _)| d.starts_with("2026-12-"))
            .map(|(_, f)| *f)
            .collect::<Vec<_>>(),
    );
    assert!(
        month.ge(&b.add(c)),
        "December's month figure {month:?} lost Dec 1's closed traffic {b:?} (+ today {c:?})"
    );
    assert_eq!(
        month,
        dec_rows.add(today),
        "show's month is not December's CSV rows + the open day: rows {r:?}"
    );
    let in_csv = F::sum(&r.iter().map(|(_, f)| *f).collect::<Vec<_>>());
    assert_eq!(
        in_csv.add(today),
        F::sum(&[a, b, t, c]),
        "CSV rows + open day: rows {r:?}, open day {date} {today:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Daylight saving time (Europe/Berlin)
// ---------------------------------------------------------------------------------------

/// One dump in Berlin time at `now` (the traffic was sent just before): `show` and the open
/// day must be on `local_date`.
fn dst_step(node: &Node, now: &str, local_date: &str) {
    run(node, Some(BERLIN), now, &["dump"]);
    let s = show(node, Some(BERLIN), now);
    assert_eq!(s["date"], local_date, "local date of {now} in Berlin");
    assert_eq!(open_day(node, "101").0, local_date, "open day after {now}");
}

/// CEST begins on 2026-03-29 at 01:00 UTC (02:00 CET -> 03:00 CEST): every packet lands in
/// the Berlin date of the dump that harvested it, one row per local date, totals exact.
fn dst_spring_forward(v: Variant) {
    let node = Node::with_topology(v, CTS);
    let tz = Some(BERLIN);
    run(
        &node,
        tz,
        "2026-03-28T11:00:00Z",
        &["add", "101", "10.0.0.1", "2001:db8:1::1"],
    );
    // 23:30 CET on the 28th.
    let a = to_ct(&node, "101", false, 101, 1);
    dst_step(&node, "2026-03-28T22:30:00Z", "2026-03-28");
    // 00:10 CET on the 29th (still the 28th in UTC): closes the 28th.
    let b = to_ct(&node, "101", false, 102, 2);
    dst_step(&node, "2026-03-28T23:10:00Z", "2026-03-29");
    assert_eq!(rows(&node, "101"), want_rows(&[("2026-03-28", a)]));
    // 01:50 CET, then 03:10 CEST (02:00-03:00 does not exist), then 23:50 CEST.
    let c = from_ct(&node, "101", true, 103, 1);
    dst_step(&node, "2026-03-29T00:50:00Z", "2026-03-29");
    let d = to_ct(&node, "101", true, 104, 2);
    dst_step(&node, "2026-03-29T01:10:00Z", "2026-03-29");
    let e = to_ct(&node, "101", false, 105, 1);
    dst_step(&node, "2026-03-29T21:50:00Z", "2026-03-29");
    let day29 = F::sum(&[b, c, d, e]);
    books(&node, "101", a.add(day29), "2026-03-29", day29);
    // 00:10 CEST on the 30th (still the 29th in UTC): closes the 29th, a 23-hour day.
    let f = from_ct(&node, "101", false, 106, 2);
    dst_step(&node, "2026-03-29T22:10:00Z", "2026-03-30");
    // 23:59:59 CEST on the 30th, then local midnight given with its own offset.
    let g = to_ct(&node, "101", false, 107, 1);
    dst_step(&node, "2026-03-30T21:59:59Z", "2026-03-30");
    let h = to_ct(&node, "101", true, 108, 1);
    dst_step(&node, "2026-03-31T00:00:00+02:00", "2026-03-31");
    assert_eq!(
        rows(&node, "101"),
        want_rows(&[
            ("2026-03-28", a),
            ("2026-03-29", day29),
            ("2026-03-30", f.add(g)),
        ])
    );
    books(&node, "101", F::sum(&[a, day29, f, g, h]), "2026-03-31", h);
    let s = show(&node, tz, "2026-03-31T00:00:00+02:00");
    assert_eq!(F::of(&ct(&s, "101")["today"]), h);
    assert_eq!(F::of(&ct(&s, "101")["month"]), F::sum(&[a, day29, f, g, h]));
}

/// CEST ends on 2026-10-25 at 01:00 UTC (03:00 CEST -> 02:00 CET, 02:00-03:00 happens
/// twice): the 25th is a 25-hour day with one row; every packet in its Berlin date.
fn dst_fall_back(v: Variant) {
    let node = Node::with_topology(v, CTS);
    let tz = Some(BERLIN);
    run(
        &node,
        tz,
        "2026-10-24T10:00:00Z",
        &["add", "101", "10.0.0.1", "2001:db8:1::1"],
    );
    // 23:50 CEST on the 24th.
    let a = to_ct(&node, "101", false, 201, 1);
    dst_step(&node, "2026-10-24T21:50:00Z", "2026-10-24");
    // 00:10 CEST on the 25th (still the 24th in UTC): closes the 24th.
    let b = to_ct(&node, "101", true, 202, 2);
    dst_step(&node, "2026-10-24T22:10:00Z", "2026-10-25");
    assert_eq!(rows(&node, "101"), want_rows(&[("2026-10-24", a)]));
    // 02:30 CEST, 02:59 CEST, then 02:01 CET and 02:30 CET (the hour again), 23:50 CET.
    let c = to_ct(&node, "101", false, 203, 1);
    dst_step(&node, "2026-10-25T00:30:00Z", "2026-10-25");
    let d = from_ct(&node, "101", false, 204, 1);
    dst_step(&node, "2026-10-25T00:59:00Z", "2026-10-25");
    let e = to_ct(&node, "101", false, 205, 2);
    dst_step(&node, "2026-10-25T01:01:00Z", "2026-10-25");
    let f = from_ct(&node, "101", true, 206, 1);
    dst_step(&node, "2026-10-25T01:30:00Z", "2026-10-25");
    let g = to_ct(&node, "101", false, 207, 1);
    dst_step(&node, "2026-10-25T22:50:00Z", "2026-10-25");
    let day25 = F::sum(&[b, c, d, e, f, g]);
    books(&node, "101", a.add(day25), "2026-10-25", day25);
    // 00:10 CET on the 26th (still the 25th in UTC): closes the 25th.
    let h = to_ct(&node, "101", false, 208, 1);
    dst_step(&node, "2026-10-25T23:10:00Z", "2026-10-26");
    // 23:59:59 CET on the 26th, then local midnight (23:00 UTC).
    let i = to_ct(&node, "101", true, 209, 1);
    dst_step(&node, "2026-10-26T22:59:59Z", "2026-10-26");
    let j = from_ct(&node, "101", false, 210, 1);
    dst_step(&node, "2026-10-26T23:00:00Z", "2026-10-27");
    assert_eq!(
        rows(&node, "101"),
        want_rows(&[
            ("2026-10-24", a),
            ("2026-10-25", day25),
            ("2026-10-26", h.add(i)),
        ])
    );
    books(&node, "101", F::sum(&[a, day25, h, i, j]), "2026-10-27", j);
    let s = show(&node, tz, "2026-10-26T23:00:00Z");
    assert_eq!(F::of(&ct(&s, "101")["today"]), j);
    assert_eq!(F::of(&ct(&s, "101")["month"]), F::sum(&[a, day25, h, i, j]));
}

// ---------------------------------------------------------------------------------------
// 3. Counter edges with real iptables
// ---------------------------------------------------------------------------------------

/// Someone runs `iptables -Z VZACCT-FORWARD`, later `iptables -Z` (and the ip6tables
/// equivalents) between dumps. What was harvested before the zeroing stays, what the rules
/// counted between the last dump and the zeroing is lost (the kernel discarded it), what
/// they count after it is credited: no negative delta, no spike. The traffic after each
/// zeroing is smaller than what each rule had shown, so the zeroing is visible.
fn zeroed_counters(v: Variant) {
    let node = Node::with_topology(v, CTS);
    const NOW: &str = "2026-11-29T10:00:00Z";
    run(
        &node,
        None,
        NOW,
        &["add", "101", "10.0.0.1", "2001:db8:1::1"],
    );
    let a = F::sum(&[
        to_ct(&node, "101", false, 300, 4),
        to_ct(&node, "101", true, 300, 4),
        from_ct(&node, "101", false, 300, 4),
    ]);
    run(&node, None, NOW, &["dump"]);
    books(&node, "101", a, "2026-11-29", a);
    // Counted, never harvested, zeroed.
    to_ct(&node, "101", false, 200, 1);
    to_ct(&node, "101", true, 200, 1);
    for v6 in [false, true] {
        node.ipt(v6, &["-Z", "VZACCT-FORWARD"]);
    }
    assert_eq!(node.counters(false, FWD_IN_101), (0, 0));
    let b = F::sum(&[
        to_ct(&node, "101", false, 100, 2),
        to_ct(&node, "101", true, 100, 1),
        from_ct(&node, "101", false, 100, 1),
    ]);
    let out = run(&node, None, NOW, &["dump"]);
    assert!(
        out.contains("3 counter(s) had restarted from zero"),
        "{out}"
    );
    books(&node, "101", a.add(b), "2026-11-29", a.add(b));

    // More traffic, harvested; then more, lost to `iptables -Z` of every chain.
    let c = F::sum(&[
        to_ct(&node, "101", false, 400, 3),
        to_ct(&node, "101", true, 400, 3),
        from_ct(&node, "101", true, 400, 3),
    ]);
    run(&node, None, NOW, &["dump"]);
    let before = total(&node, "101");
    assert_eq!(before, F::sum(&[a, b, c]));
    to_ct(&node, "101", false, 1000, 1);
    from_ct(&node, "101", true, 1000, 1);
    for v6 in [false, true] {
        node.ipt(v6, &["-Z"]);
    }
    let d = F::sum(&[
        to_ct(&node, "101", false, 10, 1),
        from_ct(&node, "101", true, 10, 1),
    ]);
    let out = run(&node, None, NOW, &["dump"]);
    assert!(out.contains("counter(s) had restarted from zero"), "{out}");
    assert!(total(&node, "101").ge(&before), "total decreased");
    books(
        &node,
        "101",
        F::sum(&[a, b, c, d]),
        "2026-11-29",
        F::sum(&[a, b, c, d]),
    );
    // And on from there: plain deltas again.
    let e = to_ct(&node, "101", false, 20, 5);
    run(&node, None, NOW, &["dump"]);
    books(
        &node,
        "101",
        F::sum(&[a, b, c, d, e]),
        "2026-11-29",
        F::sum(&[a, b, c, d, e]),
    );
}

/// `iptables -Z` between dumps followed by MORE traffic than the rule had shown at the last
/// dump: the counter is higher than last seen, so the zeroing cannot be told from growth.
/// Documented limitation, asserted exactly: the delta is taken against the old value, so
/// besides the traffic between the last dump and the zeroing, the ledger also misses as
/// many bytes/packets as the counter showed at the last dump. Never negative, never a spike.
fn zeroed_then_outgrown(v: Variant) {
    let node = Node::with_topology(v, CTS);
    const NOW: &str = "2026-11-29T10:00:00Z";
    run(&node, None, NOW, &["add", "101", "10.0.0.1"]);
    let a = to_ct(&node, "101", false, 100, 1);
    run(&node, None, NOW, &["dump"]);
    let seen = node.counters(false, FWD_IN_101);
    assert_eq!(seen, (1, a.0[0]));
    node.ipt(false, &["-Z", "VZACCT-FORWARD"]);
    let b = to_ct(&node, "101", false, 1000, 5);
    let out = run(&node, None, NOW, &["dump"]);
    assert!(!out.contains("restarted"), "{out}");
    // Ideal: a + b. What counters alone allow: a + (b - a) = b.
    let got = total(&node, "101");
    assert_eq!(got, b, "the ledger credits b - a after the zeroing");
    assert_eq!(
        F::sum(&[a, b]).0[0] - got.0[0],
        a.0[0],
        "undercounted by the counter's value at the last dump"
    );
    books(&node, "101", b, "2026-11-29", b);
}

/// Our rule deleted and recreated by someone else between two dumps (no harvest saw it
/// missing): the new rule counts from zero. With less traffic after than the old rule had
/// shown, the restart is visible and counted exactly; traffic while the rule was missing
/// and traffic counted by the old rule since the last dump are lost. With more traffic
/// after than the old rule had shown, it cannot be told from growth (limitation, asserted
/// exactly: the old value is subtracted). Never a spike, never a duplicate rule.
fn recreated_rule(v: Variant) {
    let node = Node::with_topology(v, CTS);
    const NOW: &str = "2026-11-29T10:00:00Z";
    run(&node, None, NOW, &["add", "101", "10.0.0.1"]);
    let a = to_ct(&node, "101", false, 500, 5);
    run(&node, None, NOW, &["dump"]);
    let recreate = |missing_traffic: bool| {
        to_ct(&node, "101", false, 77, 1); // counted by the old rule, never harvested
        let mut del = vec!["-D"];
        del.extend_from_slice(&FWD_IN_101_ARGS);
        node.ipt(false, &del);
        if missing_traffic {
            to_ct(&node, "101", false, 88, 1); // no rule counts it
        }
        let mut add = vec!["-A"];
        add.extend_from_slice(&FWD_IN_101_ARGS);
        node.ipt(false, &add);
        assert_eq!(node.counters(false, FWD_IN_101), (0, 0));
    };
    recreate(true);
    let b = to_ct(&node, "101", false, 60, 2);
    let out = run(&node, None, NOW, &["dump"]);
    assert!(
        out.contains("1 counter(s) had restarted from zero"),
        "{out}"
    );
    books(&node, "101", a.add(b), "2026-11-29", a.add(b));
    let fwd_in = node
        .ours(false)
        .iter()
        .filter(|l| l.contains("-A VZACCT-FORWARD -d 10.0.0.1/32"))
        .count();
    assert_eq!(fwd_in, 1, "no duplicate rules");

    // Again, but the new rule then counts more than the old one had shown (b).
    recreate(false);
    let c = to_ct(&node, "101", false, 1200, 3);
    let out = run(&node, None, NOW, &["dump"]);
    assert!(!out.contains("restarted"), "{out}");
    // Ideal: a + b + c. Counters alone allow: a + b + (c - b) = a + c.
    assert_eq!(total(&node, "101"), a.add(c));
    books(&node, "101", a.add(c), "2026-11-29", a.add(c));
}

/// Someone replaces our rule by one whose counters are near 2^64
/// (`iptables-restore --noflush --counters`). The ledger's documented rules: a counter lower
/// than last seen restarted from zero and its whole value is the delta; a delta of more
/// than 65,535 bytes per packet cannot be traffic and is taken as a new starting point,
/// crediting nothing. So `[1:18446744073709551000]` credits nothing (no 2^64 spike), and the
/// real traffic after it counts exactly. The kernel's own counter wrapping past 2^64 shows as
/// a lower counter: its whole (small) value is credited. Foreign counters that are plausible
/// (`[2^49:18446744073709551000]`, 32,768 bytes a packet) cannot be told from traffic and are
/// credited: the sums then pass 2^64 and saturate at u64::MAX, never wrap, never decrease.
fn foreign_counters_near_two_to_the_64(v: Variant) {
    let node = Node::with_topology(v, CTS);
    const NOW: &str = "2026-11-29T10:00:00Z";
    const BIG: u64 = 18_446_744_073_709_551_000;
    const P: u64 = 1 << 49;
    run(&node, None, NOW, &["add", "101", "10.0.0.1"]);
    let x = to_ct(&node, "101", false, 100, 3); // 3 x 128 bytes
    assert_eq!(x, F::inb(384, 3));
    run(&node, None, NOW, &["dump"]);
    books(&node, "101", x, "2026-11-29", x);
    let replace = |p: u64, b: u64| {
        restore_in_node(
            &node,
            false,
            &format!("*filter\n-D {FWD_IN_101}\n[{p}:{b}] -A {FWD_IN_101}\nCOMMIT\n"),
        );
        assert_eq!(node.counters(false, FWD_IN_101), (p, b));
    };

    // Impossible counters: one packet of 2^64 - 616 bytes. Not credited, no spike.
    replace(1, BIG);
    let out = run(&node, None, NOW, &["dump"]);
    assert!(
        out.starts_with("harvested 0 bytes in / 0 bytes out (0 / 0 packets); 1 counter(s) had restarted from zero; 1 rule(s) had impossible counters"),
        "{out}"
    );
    books(&node, "101", x, "2026-11-29", x);
    assert_eq!(
        node.counters(false, FWD_IN_101),
        (1, BIG),
        "rule kept as is"
    );

    // Real traffic on top of them counts exactly (delta from the foreign starting point).
    let y = to_ct(&node, "101", false, 100, 2);
    assert_eq!(node.counters(false, FWD_IN_101), (3, BIG + 256));
    let out = run(&node, None, NOW, &["dump"]);
    assert!(out.starts_with("harvested 256 bytes in"), "{out}");
    books(&node, "101", x.add(y), "2026-11-29", x.add(y));

    // 384 more bytes: the kernel counter itself wraps past 2^64 (BIG + 640 - 2^64 = 24).
    // Lower than last seen, so taken as restarted from zero: the rule's whole value (6
    // packets, 24 bytes) is credited, where 3 packets of 384 bytes were sent.
    let z = to_ct(&node, "101", false, 100, 3);
    assert_eq!(node.counters(false, FWD_IN_101), (6, 24));
    let out = run(&node, None, NOW, &["dump"]);
    assert!(
        out.starts_with("harvested 24 bytes in / 0 bytes out (6 / 0 packets); 1 counter(s) had restarted from zero"),
        "{out}"
    );
    let after_wrap = F::sum(&[x, y, F::inb(24, 6)]);
    assert_eq!(after_wrap, F::inb(664, 11));
    assert_ne!(after_wrap, F::sum(&[x, y, z]));
    books(&node, "101", after_wrap, "2026-11-29", after_wrap);

    // Plausible foreign counters near 2^64: credited as traffic (nothing tells them apart);
    // the ledger's sums pass 2^64 and saturate.
    replace(P, BIG);
    let out = run(&node, None, NOW, &["dump"]);
    assert!(
        out.starts_with(&format!("harvested {} bytes in", BIG - 24)),
        "{out}"
    );
    assert!(!out.contains("impossible"), "{out}");
    let sat = F::inb(u64::MAX, 11 + P - 6);
    assert_eq!(after_wrap.add(F::inb(BIG - 24, P - 6)), sat);
    books(&node, "101", sat, "2026-11-29", sat);
    // More traffic: still saturated, packets still exact, never a decrease.
    let w = to_ct(&node, "101", false, 100, 1);
    run(&node, None, NOW, &["dump"]);
    let sat = sat.add(w);
    assert_eq!(sat, F::inb(u64::MAX, P + 6));
    books(&node, "101", sat, "2026-11-29", sat);
    let s = show(&node, None, NOW);
    let c = ct(&s, "101");
    for key in ["total", "today", "month"] {
        assert_eq!(F::of(&c[key]), sat, "{key}");
    }
    assert_eq!(F::of(&c["by_ip"][0]), sat, "by_ip");

    // The day closes with the saturated figures; the next day starts from its own traffic,
    // the month saturates too.
    let n = to_ct(&node, "101", false, 100, 1);
    run(&node, None, "2026-11-30T00:05:00Z", &["dump"]);
    assert_eq!(rows(&node, "101"), want_rows(&[("2026-11-29", sat)]));
    let (date, today) = open_day(&node, "101");
    assert_eq!((date.as_str(), today), ("2026-11-30", n));
    assert_eq!(total(&node, "101"), F::inb(u64::MAX, P + 7));
    let s = show(&node, None, "2026-11-30T00:05:00Z");
    assert_eq!(F::of(&ct(&s, "101")["month"]), F::inb(u64::MAX, P + 7));
}

// ---------------------------------------------------------------------------------------
// Billing periods across DST and month ends
// ---------------------------------------------------------------------------------------

/// `[billing] cycle_day = day` in the node's config.
fn cycle_day(node: &Node, day: u8) {
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, format!("{cfg}[billing]\ncycle_day = {day}\n")).unwrap();
}

/// The current and previous period of `ctid` in `show --json` at `now`: (start, end, figures).
fn periods(node: &Node, tz: &str, now: &str, ctid: &str) -> [(String, String, F); 2] {
    let s = show(node, Some(tz), now);
    assert_eq!(s["jsonversion"], 2);
    let c = ct(&s, ctid);
    ["period", "previous_period"].map(|k| {
        (
            c[k]["start"].as_str().unwrap().to_string(),
            c[k]["end"].as_str().unwrap().to_string(),
            F::of(&c[k]),
        )
    })
}

fn span(start: &str, end: &str, f: F) -> (String, String, F) {
    (start.to_string(), end.to_string(), f)
}

/// Cycle day 28 in Europe/Berlin: 28 January to 28 February (31 days), 28 February to 28
/// March (28 days), and the boundary of 28 March 2027 at local midnight (23:00 UTC, CET)
/// with the change to CEST an hour later; the next boundary at midnight CEST (22:00 UTC).
/// A dump a second before a boundary bills the previous period, a second after the next.
fn cycle_day_28_across_february_and_dst(v: Variant) {
    let node = Node::with_topology(v, CTS);
    cycle_day(&node, 28);
    let z = Some(BERLIN);
    run(
        &node,
        z,
        "2027-01-10T12:00:00Z",
        &["add", "101", "10.0.0.1"],
    );
    let a = to_ct(&node, "101", false, 100, 2);
    run(&node, z, "2027-02-27T22:59:59Z", &["dump"]);
    let b = from_ct(&node, "101", false, 200, 3);
    run(&node, z, "2027-02-27T23:00:01Z", &["dump"]);
    let [cur, prev] = periods(&node, BERLIN, "2027-03-27T22:59:59Z", "101");
    assert_eq!(cur, span("2027-02-28", "2027-03-28", b));
    assert_eq!(prev, span("2027-01-28", "2027-02-28", a));
    let c = to_ct(&node, "101", false, 300, 1);
    run(&node, z, "2027-03-27T23:00:00Z", &["dump"]);
    let [cur, prev] = periods(&node, BERLIN, "2027-03-28T12:00:00Z", "101");
    assert_eq!(cur, span("2027-03-28", "2027-04-28", c));
    assert_eq!(prev, span("2027-02-28", "2027-03-28", b));
    // Midnight CEST: 22:00 UTC.
    let d = from_ct(&node, "101", false, 400, 1);
    run(&node, z, "2027-04-27T21:59:59Z", &["dump"]);
    let [cur, _] = periods(&node, BERLIN, "2027-04-27T21:59:59Z", "101");
    assert_eq!(cur, span("2027-03-28", "2027-04-28", c.add(d)));
    let [cur, prev] = periods(&node, BERLIN, "2027-04-27T22:00:00Z", "101");
    assert_eq!(cur, span("2027-04-28", "2027-05-28", F::default()));
    assert_eq!(prev, span("2027-03-28", "2027-04-28", c.add(d)));
    // Once a dump closed the day, the CSV rows of the previous period add up to it.
    run(&node, z, "2027-04-27T22:00:30Z", &["dump"]);
    let in_csv: Vec<F> = rows(&node, "101")
        .into_iter()
        .filter(|(d, _)| d.as_str() >= "2027-03-28" && d.as_str() < "2027-04-28")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(F::sum(&in_csv), c.add(d));
}

/// Cycle day 1 in America/New_York across the end of DST (1 November 2026, 02:00 EDT ->
/// 01:00 EST): October (31 days) ends at midnight EDT (04:00 UTC), November at midnight EST
/// (05:00 UTC); March 2027 begins at midnight EST and ends at midnight EDT.
fn cycle_day_1_across_the_end_of_dst(v: Variant) {
    const NY: &str = "America/New_York";
    let node = Node::with_topology(v, CTS);
    cycle_day(&node, 1);
    let z = Some(NY);
    run(
        &node,
        z,
        "2026-10-15T12:00:00Z",
        &["add", "101", "10.0.0.1"],
    );
    let a = to_ct(&node, "101", false, 100, 1);
    run(&node, z, "2026-11-01T03:59:59Z", &["dump"]);
    let b = to_ct(&node, "101", false, 200, 1);
    run(&node, z, "2026-11-01T04:00:00Z", &["dump"]);
    let [cur, prev] = periods(&node, NY, "2026-11-01T12:00:00Z", "101");
    assert_eq!(cur, span("2026-11-01", "2026-12-01", b));
    assert_eq!(prev, span("2026-10-01", "2026-11-01", a));
    let c = to_ct(&node, "101", false, 300, 1);
    run(&node, z, "2026-12-01T04:59:59Z", &["dump"]);
    let [cur, _] = periods(&node, NY, "2026-12-01T04:59:59Z", "101");
    assert_eq!(cur, span("2026-11-01", "2026-12-01", b.add(c)));
    let [cur, prev] = periods(&node, NY, "2026-12-01T05:00:00Z", "101");
    assert_eq!(cur, span("2026-12-01", "2027-01-01", F::default()));
    assert_eq!(prev.2, b.add(c));
    let d = to_ct(&node, "101", false, 400, 1);
    run(&node, z, "2027-03-01T05:00:00Z", &["dump"]);
    let e = to_ct(&node, "101", false, 500, 1);
    run(&node, z, "2027-04-01T03:59:59Z", &["dump"]);
    let [cur, _] = periods(&node, NY, "2027-04-01T03:59:59Z", "101");
    assert_eq!(cur, span("2027-03-01", "2027-04-01", d.add(e)));
    let [cur, prev] = periods(&node, NY, "2027-04-01T04:00:00Z", "101");
    assert_eq!(cur.0, "2027-04-01");
    assert_eq!(prev, span("2027-03-01", "2027-04-01", d.add(e)));
}

per_variant!(
    clock_back_an_hour,
    clock_back_a_day,
    clock_back_across_a_container_restart,
    clock_back_a_day_across_a_restart_and_a_month,
    dst_spring_forward,
    dst_fall_back,
    cycle_day_28_across_february_and_dst,
    cycle_day_1_across_the_end_of_dst,
);

/// The counter edges act on per-IP rules; tests/ipset.rs has their set-element twins.
mod rules {
    use super::*;
    per_rules_variant!(
        zeroed_counters,
        zeroed_then_outgrown,
        recreated_rule,
        foreign_counters_near_two_to_the_64,
    );
}
