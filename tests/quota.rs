//! Quotas and thresholds with real packets (issue 14 part 2): a threshold's action runs
//! exactly once per container, threshold and period through SIGKILLs of the dump at random
//! points, a dump killed while the action runs, repeated dumps, a `reset` and a reboot (a
//! new boot id); a failing action is run again at every dump until it succeeds, and `check`
//! shows the failure meanwhile; a quota counts only its period's traffic of its direction;
//! the Prometheus gauges.

mod common;

use common::*;
use serde_json::Value;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const CTS: &[(&str, &str, &str)] = &[
    ("101", "10.0.0.1", "2001:db8:1::1"),
    ("102", "10.0.0.2", "2001:db8:1::2"),
];

/// The action program: notes each start in `tried` and, unless `fail` exists, its
/// environment in `ran` after `sleep` seconds.
const ACTION: &str = r#"#!/bin/sh
echo "$CTID $THRESHOLD" >> "$(dirname "$0")/tried"
if [ -e "$(dirname "$0")/fail" ]; then echo "told to fail" >&2; exit 3; fi
sleep "$(cat "$(dirname "$0")/sleep" 2>/dev/null || echo 0)"
echo "$CTID $THRESHOLD $PERIOD_START $PERIOD_END $DIRECTION $USED_BYTES $QUOTA_BYTES $PERCENT" >> "$(dirname "$0")/ran"
"#;

/// The node with thresholds 50 and 100, the action program, a hook log and a textfile.
fn node(v: Variant) -> Node {
    let node = Node::with_topology(v, CTS);
    let d = node.dir.path().display().to_string();
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        format!(
            "{cfg}[billing]\nthresholds = 100 50\non_threshold = {d}/action/run\n\
             on_threshold_timeout = 10\n[export]\nprometheus_textfile = {d}/vzacct.prom\n"
        ),
    )
    .unwrap();
    write(&node.path("action/run"), ACTION);
    must(
        "chmod",
        &["755", &node.path("action/run").to_string_lossy()],
    );
    node
}

fn to_ct(node: &Node, ctid: &str, payload: usize, n: usize) -> u64 {
    let c = node.ct(ctid);
    let src: IpAddr = WORLD_V4.parse().unwrap();
    send_udp(node.world(), src, &c.ns, c.v4, payload, n);
    n as u64 * udp_ip_len(c.v4, payload)
}

fn from_ct(node: &Node, ctid: &str, payload: usize, n: usize) -> u64 {
    let c = node.ct(ctid);
    let dst: IpAddr = WORLD_V4.parse().unwrap();
    send_udp(&c.ns, c.v4, node.world(), dst, payload, n);
    n as u64 * udp_ip_len(c.v4, payload)
}

fn lines(node: &Node, name: &str) -> Vec<String> {
    std::fs::read_to_string(node.path(&format!("action/{name}")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The action's runs for one container and threshold.
fn ran(node: &Node, ctid: &str, threshold: u32) -> Vec<String> {
    lines(node, "ran")
        .into_iter()
        .filter(|l| l.starts_with(&format!("{ctid} {threshold} ")))
        .collect()
}

fn hook_log(node: &Node) -> String {
    std::fs::read_to_string(node.path("hook.log")).unwrap_or_default()
}

/// The `thresholds` item of `check --json`.
fn check_thresholds(node: &Node, now: &str) -> (bool, String) {
    check_item(node, now, "thresholds")
}

/// One item of `check --json`: (ok, detail).
fn check_item(node: &Node, now: &str, name: &str) -> (bool, String) {
    let out = node.vzacct_env(
        &[
            "check",
            "--json",
            "--root",
            &node.dir.path().to_string_lossy(),
        ],
        &[("VZACCT_NOW", now)],
    );
    let v: Value = serde_json::from_str(&stdout(&out)).expect("check --json");
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} item"))
        .clone();
    (
        item["ok"].as_bool().unwrap(),
        item["detail"].as_str().unwrap().to_string(),
    )
}

/// A `quota` object of `show --json` or `history --json`: (bytes, direction, used_bytes,
/// percent), `None` for `null`.
fn quota_of(v: &Value) -> Option<(u64, String, u64, f64)> {
    if v.is_null() {
        return None;
    }
    let o = v.as_object().unwrap_or_else(|| panic!("quota: {v}"));
    assert_eq!(o.len(), 4, "{v}");
    Some((
        v["bytes"].as_u64().unwrap(),
        v["direction"].as_str().unwrap().to_string(),
        v["used_bytes"].as_u64().unwrap(),
        v["percent"].as_f64().unwrap(),
    ))
}

/// `used` in percent of `quota`, rounded down to two decimals.
fn pct(used: u64, quota: u64) -> f64 {
    (used * 10_000 / quota) as f64 / 100.0
}

fn q(bytes: u64, direction: &str, used: u64) -> Option<(u64, String, u64, f64)> {
    Some((bytes, direction.to_string(), used, pct(used, bytes)))
}

/// The ledger's `thresholds` rows: "ctid period_start threshold state".
fn threshold_rows(node: &Node) -> Vec<String> {
    let db = rusqlite::Connection::open_with_flags(
        node.path("state/ledger.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = db
        .prepare(
            "SELECT ctid || ' ' || period_start || ' ' || threshold || ' ' || state
             FROM thresholds ORDER BY ctid, period_start, threshold",
        )
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A small random number generator (the seed is printed, to replay a failure).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("VZACCT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("VZACCT_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Start a dump at `now` and SIGKILL it after `after`; whether it was still running.
fn killed_dump(node: &Node, now: &str, after: Duration) -> bool {
    let mut child = node
        .command(&["dump"], &[("VZACCT_NOW", now)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let running = child.try_wait().unwrap().is_none();
    // `ip netns exec` and `env` exec vzacct: this is its pid, and ours.
    let _ = child.kill();
    child.wait().unwrap();
    running
}

/// Dump until no action of the period is pending (a wrapper a killed dump left may still
/// run for a moment), at most `secs` seconds.
fn settle(node: &Node, now: &str, secs: u64) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = node.at(now, &["dump"]);
        if !out.contains("still runs") || Instant::now() > until {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Threshold 50 of container 101 (quota 20000 bytes total): crossed once and acted on once,
/// through a dump killed while the action runs (the next dump leaves the running wrapper
/// alone, the one after records it done), SIGKILLs at random points, repeated dumps and a
/// reset. Threshold 100 with a failing action: run again at every dump, shown by `check`,
/// through a reboot, until it succeeds; then never again. A new period starts over.
fn exactly_once_through_kills_failures_and_a_reboot(v: Variant) {
    let node = node(v);
    let now = "2027-02-10T12:00:00Z";
    node.at(now, &["add", "101", "10.0.0.1"]);
    node.at(now, &["add", "102", "10.0.0.2"]);
    let out = node.at(now, &["set", "101", "--quota", "20000B"]);
    assert!(out.contains("quota 20KB (20000 bytes) of total"), "{out}");
    let mut used = to_ct(&node, "101", 900, 5) + from_ct(&node, "101", 900, 4);
    assert!(used < 10_000);
    node.at(now, &["dump"]);
    assert!(lines(&node, "tried").is_empty());
    // Past 50%: the action sleeps 2 s; the dump is killed while it runs.
    used += to_ct(&node, "101", 1000, 2);
    assert!((10_000..20_000).contains(&used), "{used}");
    std::fs::write(node.path("action/sleep"), "2").unwrap();
    let mut child = node
        .command(&["dump"], &[("VZACCT_NOW", now)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while lines(&node, "tried").is_empty() {
        assert!(Instant::now() < until, "the action never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = node.at(now, &["dump"]);
    assert!(
        out.contains("threshold 50% still runs (attempt 1)"),
        "{out}"
    );
    assert_eq!(lines(&node, "tried").len(), 1);
    std::thread::sleep(Duration::from_millis(2500));
    let out = node.at(now, &["dump"]);
    assert!(out.contains("threshold 50% has run (attempt 1)"), "{out}");
    std::fs::write(node.path("action/sleep"), "0").unwrap();
    let runs = ran(&node, "101", 50);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0],
        format!(
            "101 50 2027-02-01 2027-03-01 total {used} 20000 {}",
            used * 100 / 20000
        )
    );
    let log = hook_log(&node);
    assert_eq!(
        log.matches("threshold ct=101 50% of quota").count(),
        1,
        "{log}"
    );
    assert!(log.contains(&format!("used {used} bytes")), "{log}");
    // Repeated dumps, random kills, a reset: nothing more.
    let mut rng = Rng::new();
    let mut period_used = used;
    for _ in 0..8 {
        period_used += to_ct(&node, "101", 100, 1);
        killed_dump(&node, now, Duration::from_millis(rng.below(400)));
    }
    node.at(now, &["reset", "101"]);
    settle(&node, now, 20);
    node.at(now, &["dump"]);
    assert_eq!(ran(&node, "101", 50).len(), 1);
    assert_eq!(lines(&node, "tried").len(), 1);
    assert!(check_thresholds(&node, now).0);
    // history marks no day yet (50% is not the quota); it says how much of it is used.
    let h = node.at(now, &["history", "101", "--days", "15"]);
    assert!(!h.contains("reached"), "{h}");
    assert!(
        h.contains(&format!(
            "quota: {:.2} KB of 20KB total ({:.2}%) used in the current period 2027-02-01 .. \
             2027-03-01",
            period_used as f64 / 1000.0,
            pct(period_used, 20_000)
        )),
        "{period_used}: {h}"
    );

    // Past 100% with a failing action: retried at every dump, through random kills and a
    // reboot, shown by check; then it succeeds, once.
    std::fs::write(node.path("action/fail"), "").unwrap();
    to_ct(&node, "101", 1200, 10);
    let out = node.vzacct_env(&["dump"], &[("VZACCT_NOW", now)]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("threshold 100% (attempt 1) failed")
            && stderr(&out).contains("told to fail"),
        "{}",
        stderr(&out)
    );
    let (ok, detail) = check_thresholds(&node, now);
    assert!(
        !ok && detail.contains("threshold 100%") && detail.contains("told to fail"),
        "{detail}"
    );
    for _ in 0..6 {
        killed_dump(&node, now, Duration::from_millis(rng.below(300)));
    }
    settle(&node, now, 20);
    let tried = lines(&node, "tried").len();
    assert!(tried >= 2, "{tried}");
    assert!(ran(&node, "101", 100).is_empty());
    node.reboot("boot-2");
    node.at(now, &["restore"]);
    node.at(now, &["dump"]);
    assert!(lines(&node, "tried").len() > tried);
    // Now it succeeds, slowly: most kills land while the dump waits for it.
    std::fs::remove_file(node.path("action/fail")).unwrap();
    std::fs::write(node.path("action/sleep"), "0.3").unwrap();
    let mut during = 0;
    for _ in 0..6 {
        let before = lines(&node, "tried").len();
        killed_dump(&node, now, Duration::from_millis(rng.below(600)));
        during += usize::from(lines(&node, "tried").len() > before);
    }
    eprintln!("{during} of 6 dumps were killed after the action started");
    settle(&node, now, 20);
    node.at(now, &["dump"]);
    assert_eq!(ran(&node, "101", 100).len(), 1, "{:?}", lines(&node, "ran"));
    assert_eq!(ran(&node, "101", 50).len(), 1);
    node.reboot("boot-3");
    node.at(now, &["restore"]);
    node.at(now, &["dump"]);
    node.at(now, &["reset", "101"]);
    node.at(now, &["dump"]);
    assert_eq!(lines(&node, "ran").len(), 2, "{:?}", lines(&node, "ran"));
    let (ok, detail) = check_thresholds(&node, now);
    assert!(ok, "{detail}");
    assert!(detail.contains("2 threshold action(s) done"), "{detail}");
    // history marks the day the period's figure reached the quota.
    let h = node.at(now, &["history", "101", "--days", "15"]);
    assert!(
        h.contains("quota 20KB (total) reached on 2027-02-10"),
        "{h}"
    );
    // Container 102 has no quota: nothing, whatever it sends.
    assert!(!lines(&node, "tried").iter().any(|l| l.starts_with("102 ")));

    // A new period starts over: March's traffic alone counts.
    let next = "2027-03-02T12:00:00Z";
    node.at(next, &["dump"]);
    assert_eq!(lines(&node, "ran").len(), 2);
    let march = to_ct(&node, "101", 1200, 9);
    assert!((10_000..20_000).contains(&march));
    node.at(next, &["dump"]);
    let runs = ran(&node, "101", 50);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[1],
        format!(
            "101 50 2027-03-01 2027-04-01 total {march} 20000 {}",
            march * 100 / 20000
        )
    );
}

/// A quota counts only its direction of its period's traffic (the figure `show` gives as
/// the period); `--quota none` takes it away; the Prometheus gauges give the period's bytes
/// and the quota; `show` and `history` give the quota and its use in the current period
/// (table and JSON); with `history_days = 62`, the threshold records of a period go with its
/// last day.
fn directions_periods_and_gauges(v: Variant) {
    let node = node(v);
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        cfg.replace("[billing]\n", "[billing]\nhistory_days = 62\n"),
    )
    .unwrap();
    let jan = "2027-01-20T12:00:00Z";
    node.at(jan, &["add", "101", "10.0.0.1"]);
    node.at(jan, &["add", "102", "10.0.0.2"]);
    let out = node.at(
        jan,
        &["set", "101", "--quota", "10KB", "--quota-direction", "in"],
    );
    assert!(out.contains("of in traffic"), "{out}");
    node.at(jan, &["set", "102", "--quota", "1.5KiB"]);
    // January: 101 sends far more than its quota (out does not count), receives little.
    from_ct(&node, "101", 1400, 20);
    let jan_in = to_ct(&node, "101", 1000, 2);
    node.at(jan, &["dump"]);
    assert!(lines(&node, "tried").is_empty());
    // 102's quota of 1536 bytes total, out traffic counts.
    from_ct(&node, "102", 800, 1);
    node.at(jan, &["dump"]);
    assert!(ran(&node, "102", 50).len() == 1 && ran(&node, "102", 100).is_empty());
    // February: January's traffic no longer counts.
    let feb = "2027-02-01T00:10:00Z";
    let feb_in = to_ct(&node, "101", 1000, 3);
    node.at(feb, &["dump"]);
    assert!(ran(&node, "101", 50).is_empty(), "{jan_in}");
    let show: Value = serde_json::from_str(&node.at(feb, &["show", "--json", "101"])).unwrap();
    assert_eq!(ct_of(&show, "101")["period"]["in_bytes"], feb_in);
    // The quota and its use in the current period: in show's JSON and table, also with
    // --period (January's figures, February's use).
    assert_eq!(feb_in, 3084);
    let show: Value = serde_json::from_str(&node.at(feb, &["show", "--json"])).unwrap();
    assert_eq!(show["jsonversion"], 2);
    assert_eq!(
        quota_of(&ct_of(&show, "101")["quota"]),
        q(10_000, "in", 3084)
    );
    assert_eq!(pct(3084, 10_000), 30.84);
    assert_eq!(quota_of(&ct_of(&show, "102")["quota"]), q(1536, "total", 0));
    let show: Value =
        serde_json::from_str(&node.at(feb, &["show", "--json", "--period", "previous"])).unwrap();
    let one = ct_of(&show, "101");
    assert_eq!(one["period"]["in_bytes"], jan_in);
    assert_eq!(quota_of(&one["quota"]), q(10_000, "in", 3084));
    let table = node.at(feb, &["show"]);
    let line = |ctid: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{ctid} ")))
            .unwrap_or_else(|| panic!("{ctid}: {table}"))
            .to_string()
    };
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .ends_with("  QUOTA (USED IN THIS PERIOD)"),
        "{table}"
    );
    assert!(
        line("101").ends_with("  3.08 KB of 10KB in (30.84%)"),
        "{table}"
    );
    assert!(
        line("102").ends_with("  0 B of 1536B total (0.00%)"),
        "{table}"
    );
    let prom = std::fs::read_to_string(node.path("vzacct.prom")).unwrap();
    for want in [
        format!("vzacct_period_bytes{{ctid=\"101\",direction=\"in\"}} {feb_in}\n"),
        "vzacct_period_bytes{ctid=\"101\",direction=\"out\"} 0\n".to_string(),
        "vzacct_quota_bytes{ctid=\"101\",direction=\"in\"} 10000\n".to_string(),
        "vzacct_quota_bytes{ctid=\"102\",direction=\"total\"} 1536\n".to_string(),
        "# TYPE vzacct_period_bytes gauge\n".to_string(),
    ] {
        assert!(prom.contains(&want), "{want}\n{prom}");
    }
    let more = to_ct(&node, "101", 1000, 3);
    node.at(feb, &["dump"]);
    let runs = ran(&node, "101", 50);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        runs[0].starts_with(&format!(
            "101 50 2027-02-01 2027-03-01 in {} 10000 ",
            feb_in + more
        )),
        "{runs:?}"
    );
    // Reached on the 5th: history over the 4th and 5th alone counts the days before them.
    let feb5 = "2027-02-05T12:00:00Z";
    to_ct(&node, "101", 1000, 4);
    node.at(feb5, &["dump"]);
    assert_eq!(ran(&node, "101", 100).len(), 1);
    let h = node.at(feb5, &["history", "101", "--days", "2"]);
    assert!(h.contains("quota 10KB (in) reached on 2027-02-05"), "{h}");
    // 3084 + 3084 + 4112 bytes in: 102.8%.
    let used = feb_in + more + 4 * 1028;
    assert_eq!(used, 10_280);
    assert_eq!(
        h.lines().nth(1),
        Some(
            "quota: 10.28 KB of 10KB in (102.80%) used in the current period 2027-02-01 .. \
             2027-03-01 (end not included)"
        ),
        "{h}"
    );
    let hj: Value =
        serde_json::from_str(&node.at(feb5, &["history", "101", "--days", "2", "--json"])).unwrap();
    assert_eq!(hj["jsonversion"], 2);
    assert_eq!(quota_of(&hj["quota"]), q(10_000, "in", 10_280));
    let days: Vec<(String, u64, bool)> = hj["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(d.get("quota_reached").is_none_or(|r| r == true), "{d}");
            (
                d["date"].as_str().unwrap().to_string(),
                d["in_bytes"].as_u64().unwrap(),
                d.get("quota_reached").is_some(),
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            ("2027-02-04".to_string(), 0, false),
            ("2027-02-05".to_string(), 4112, true)
        ]
    );
    // Per month: the quota, no day marked.
    let hm: Value =
        serde_json::from_str(&node.at(feb5, &["history", "101", "--months", "2", "--json"]))
            .unwrap();
    assert_eq!(quota_of(&hm["quota"]), q(10_000, "in", 10_280));
    let months = hm["months"].as_array().unwrap();
    assert_eq!(months.len(), 2, "{hm}");
    assert!(
        months.iter().all(|m| m.get("quota_reached").is_none()),
        "{hm}"
    );
    // Taken away: no more actions, no quota gauge.
    let out = node.at(feb5, &["set", "101", "--quota", "none"]);
    assert!(out.contains("quota taken away"), "{out}");
    to_ct(&node, "101", 1400, 8);
    node.at(feb5, &["dump"]);
    assert_eq!(lines(&node, "ran").len(), 3, "{:?}", lines(&node, "ran"));
    let prom = std::fs::read_to_string(node.path("vzacct.prom")).unwrap();
    assert!(!prom.contains("vzacct_quota_bytes{ctid=\"101\""), "{prom}");
    let show: Value = serde_json::from_str(&node.at(feb5, &["show", "--json"])).unwrap();
    assert!(ct_of(&show, "101")["quota"].is_null(), "{show}");
    assert!(
        node.at(feb5, &["show"])
            .lines()
            .any(|l| l.starts_with("101 ") && l.ends_with("  -"))
    );
    let hj: Value = serde_json::from_str(&node.at(feb5, &["history", "101", "--json"])).unwrap();
    assert!(hj["quota"].is_null(), "{hj}");
    assert!(!node.at(feb5, &["history", "101"]).contains("quota"));
    // Bad quotas are refused before anything runs.
    for bad in [
        &["--quota", "5gb"][..],
        &["--quota-direction", "up"],
        &["--quota-direction", "in"],
    ] {
        let mut args = vec!["set", "101"];
        args.extend_from_slice(bad);
        let o = node.vzacct(&args);
        assert!(!o.status.success(), "{bad:?}");
    }
    // A CTID the ledger does not know is said to be one.
    assert_eq!(
        node.at(feb5, &["set", "999", "--quota", "1GiB"]),
        "container 999 (it is not accounted yet): quota 1GiB (1073741824 bytes) of total \
         traffic per billing period\n"
    );
    node.at(feb5, &["set", "999", "--quota", "none"]);
    // With nothing to set, the error names every setting there is.
    let o = node.vzacct(&["set", "101"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .contains("<--cycle-day <N>|--quota <BYTES|none>|--quota-direction <in|out|total>>"),
        "{}",
        stderr(&o)
    );

    // history_days = 62: a period's threshold records go with its last day, whatever the
    // container's quota now, when a dump closes the day after it.
    let oldest_day = || {
        rusqlite::Connection::open_with_flags(
            node.path("state/ledger.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
        .query_row("SELECT min(date) FROM days", [], |r| r.get::<_, String>(0))
        .unwrap()
    };
    let all = [
        "101 2027-02-01 50 done",
        "101 2027-02-01 100 done",
        "102 2027-01-01 50 done",
    ];
    assert_eq!(threshold_rows(&node), all);
    // Closes up to 2027-04-03: days from 2027-01-31 on stay, January's last among them.
    node.at("2027-04-04T12:00:00Z", &["dump"]);
    assert_eq!(oldest_day(), "2027-01-31");
    assert_eq!(threshold_rows(&node), all);
    // Closes 2027-04-04: January's last day goes, and its record.
    node.at("2027-04-05T12:00:00Z", &["dump"]);
    assert_eq!(oldest_day(), "2027-02-01");
    assert_eq!(threshold_rows(&node), &all[..2]);
    node.at("2027-05-02T12:00:00Z", &["dump"]);
    assert_eq!(oldest_day(), "2027-02-28");
    assert_eq!(threshold_rows(&node), &all[..2]);
    node.at("2027-05-03T12:00:00Z", &["dump"]);
    assert_eq!(oldest_day(), "2027-03-01");
    assert_eq!(threshold_rows(&node), Vec::<String>::new());
    assert_eq!(lines(&node, "ran").len(), 3, "{:?}", lines(&node, "ran"));
}

per_variant!(
    exactly_once_through_kills_failures_and_a_reboot,
    directions_periods_and_gauges
);

/// Run a shipped example program in `ns` with exactly `env` (as vzacct runs it, plus the
/// test overrides).
/// A textfile that cannot be written fails the dump, but the threshold actions still run,
/// and `check` names the path at fault.
#[test]
fn a_textfile_that_cannot_be_written_stops_no_action() {
    let node = node(Variant::Nft);
    let d = node.dir.path().display().to_string();
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    let prom = format!("{d}/missing/vzacct.prom");
    write(
        &node.config,
        cfg.replace(
            &format!("prometheus_textfile = {d}/vzacct.prom\n"),
            &format!("prometheus_textfile = {prom}\n"),
        ),
    );
    let now = "2027-02-10T12:00:00Z";
    node.at(now, &["add", "102", "10.0.0.2"]);
    node.at(now, &["set", "102", "--quota", "1.5KiB"]);
    from_ct(&node, "102", 800, 1);
    let out = node.vzacct_env(&["dump"], &[("VZACCT_NOW", now)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "cannot write Prometheus textfile {prom}; any earlier one is left as it was"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(ran(&node, "102", 50).len(), 1, "{}", stderr(&out));
    let storage = |node: &Node| check_item(node, now, "storage");
    assert_eq!(
        storage(&node),
        (
            false,
            format!(
                "prometheus_textfile = {prom} under [export]: its directory does not exist, so \
                 every dump fails to write it"
            )
        )
    );
    std::fs::create_dir(node.path("missing")).unwrap();
    assert_eq!(
        storage(&node),
        (
            true,
            format!(
                "daily CSV in {}; Prometheus textfile {prom}",
                node.path("csv").display()
            )
        )
    );
}

fn example(ns: &Netns, name: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/conf-templates/").to_string() + name;
    let mut full: Vec<String> = vec!["-i".into(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()];
    full.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    full.push(script);
    full.extend(args.iter().map(|a| a.to_string()));
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    ns.run("env", &full)
}

fn threshold_env<'a>(ctid: &'a str, threshold: &'a str, end: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CTID", ctid),
        ("PERIOD_START", "2027-02-01"),
        ("PERIOD_END", end),
        ("DIRECTION", "total"),
        ("USED_BYTES", "1100"),
        ("QUOTA_BYTES", "1000"),
        ("PERCENT", "110"),
        ("THRESHOLD", threshold),
    ]
}

/// The shipped examples: the tc one limits the container's venet addresses both ways at
/// 100% and not before, and a sweep after its period takes the limits away again, leaving
/// other filters alone; the mail one mails what crossed; both refuse inputs of a bad shape.
#[test]
fn the_example_action_programs() {
    let ns = Netns::new("tc");
    ns.ip("link add venet0 type veth peer name vpeer");
    ns.ip("link set venet0 up");
    let dir = tempfile::tempdir().unwrap();
    let veinfo = dir.path().join("veinfo");
    std::fs::write(
        &veinfo,
        "       101     2    10     10.0.0.1 2001:db8:1::1\n       102     2     5     10.0.0.2\n",
    )
    .unwrap();
    let state = dir.path().join("tc");
    let (veinfo, state) = (veinfo.to_string_lossy(), state.to_string_lossy());
    let filters =
        |parent: &str| ns.must("tc", &["filter", "show", "dev", "venet0", "parent", parent]);
    let with = |env: Vec<(&'static str, &str)>| {
        let mut env: Vec<(&'static str, String)> =
            env.into_iter().map(|(k, v)| (k, v.to_string())).collect();
        env.push(("VZACCT_TC_VEINFO", veinfo.to_string()));
        env.push(("VZACCT_TC_STATE", state.to_string()));
        // This test kernel has no act_police: what a container receives is limited only.
        env.push(("VZACCT_TC_FROM_CT", "no".to_string()));
        env
    };
    let run = |args: &[&str], env: Vec<(&'static str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        example(&ns, "vzacct-threshold-tc", args, &env)
    };
    // 90%: nothing.
    let o = run(&[], with(threshold_env("101", "90", "2099-03-01")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!filters("1:").contains("flowid"));
    // 100%: what both addresses receive, in the container's class.
    let o = run(&[], with(threshold_env("101", "100", "2099-03-01")));
    assert!(o.status.success(), "{}", stderr(&o));
    let egress = filters("1:");
    assert_eq!(egress.matches("flowid 1:10").count(), 2, "{egress}");
    assert!(egress.contains("0a000001/ffffffff at 16"), "{egress}");
    let classes = ns.must("tc", &["class", "show", "dev", "venet0"]);
    assert!(
        classes.contains("class htb 1:10 root") && classes.contains("rate 1Mbit"),
        "{classes}"
    );
    // Run again (a retry): the same filters, not twice as many.
    let o = run(&[], with(threshold_env("101", "100", "2099-03-01")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(filters("1:").matches("flowid 1:10").count(), 2);
    // An operator's own filter at another preference stays.
    ns.must(
        "tc",
        &[
            "filter",
            "add",
            "dev",
            "venet0",
            "parent",
            "1:",
            "protocol",
            "ip",
            "pref",
            "7",
            "u32",
            "match",
            "ip",
            "dst",
            "10.9.9.9/32",
            "flowid",
            "1:2",
        ],
    );
    // 102's period has ended already: its throttle goes at once; a sweep takes 101's away
    // once its period is over.
    let o = run(&[], with(threshold_env("102", "100", "2000-01-01")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(filters("1:").matches("flowid 1:10").count(), 2);
    assert!(!filters("1:").contains("flowid 1:11"));
    std::fs::write(
        format!("{state}/101"),
        "2000-01-01 16 10.0.0.1 2001:db8:1::1\n",
    )
    .unwrap();
    let o = run(&["sweep"], with(Vec::new()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!filters("1:").contains("flowid 1:1"), "{}", filters("1:"));
    assert!(
        !ns.must("tc", &["class", "show", "dev", "venet0"])
            .contains("1:10")
    );
    assert!(filters("1:").contains("0a090909"));
    // Inputs of a bad shape are refused before anything is touched.
    for (k, bad) in [
        ("CTID", "101; reboot"),
        ("CTID", "1\n2"),
        ("THRESHOLD", "1e3"),
        ("PERIOD_END", "soon"),
    ] {
        let mut env = threshold_env("101", "100", "2099-03-01");
        for e in env.iter_mut().filter(|e| e.0 == k) {
            e.1 = bad;
        }
        let o = run(&[], with(env));
        assert_eq!(o.status.code(), Some(2), "{k}={bad:?}: {}", stderr(&o));
    }
    assert!(!filters("1:").contains("flowid 1:1"));

    // The mail: through a fake sendmail that keeps what it is given.
    let sendmail = dir.path().join("sendmail");
    let mail = dir.path().join("mail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\necho \"$*\" > {m}.args\ncat > {m}\n",
            m = mail.display()
        ),
    )
    .unwrap();
    must("chmod", &["755", &sendmail.to_string_lossy()]);
    let mut env = threshold_env("101", "100", "2027-03-01");
    let sm = sendmail.to_string_lossy().to_string();
    env.push(("VZACCT_MAIL_SENDMAIL", &sm));
    let o = example(&ns, "vzacct-threshold-mail", &[], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&mail).unwrap();
    assert!(text.starts_with("To: root\nSubject: [vzacct] "), "{text}");
    assert!(
        text.contains("container 101 at 110% of its quota\n\n"),
        "{text}"
    );
    assert!(text.contains("Used:           1100 bytes (110%)"), "{text}");
    assert!(text.contains("2027-02-01 to 2027-03-01"), "{text}");
    assert_eq!(
        std::fs::read_to_string(format!("{}.args", mail.display())).unwrap(),
        "-t -oi\n"
    );
    std::fs::remove_file(&mail).unwrap();
    for (k, bad) in [
        ("CTID", "101\nBcc: x@example.com"),
        ("USED_BYTES", "1 2"),
        ("DIRECTION", "up"),
    ] {
        let mut env = threshold_env("101", "100", "2027-03-01");
        for e in env.iter_mut().filter(|e| e.0 == k) {
            e.1 = bad;
        }
        env.push(("VZACCT_MAIL_SENDMAIL", &sm));
        let o = example(&ns, "vzacct-threshold-mail", &[], &env);
        assert_eq!(o.status.code(), Some(2), "{k}={bad:?}");
        assert!(!mail.exists());
    }
}
