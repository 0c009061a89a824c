//! The ledger: the truth about what each container carried. Kernel counters are ephemeral;
//! every byte a rule counted is folded in here exactly once (harvest), days are closed into
//! CSV rows, and totals survive reboots, firewall restarts and IP changes. Pure: no I/O.
//!
//! The record below is the format 1 single file (`<state_dir>/ledger.json`), still read
//! when a node is converted; format 2 kept the same container records in bucket files; both
//! are converted into the database of [`crate::db`], which stores the same fields as rows.
//! ```text
//! {
//!   "format": 1,
//!   "boot_id": "<kernel boot id when the counters below were seen>",
//!   "last_dump": {"at": "<RFC 3339>", "duration_ms": n},
//!   "containers": {
//!     "<ctid>": {
//!       "ips": ["10.0.0.1", ...],            accounted now (empty: history only)
//!       "total_since": "<RFC 3339>",         start of the current billing period (reset)
//!       "total": {<figures>},                since total_since
//!       "by_ip": {"10.0.0.1": {<figures>}},  the same, per address
//!       "today": {"date": "YYYY-MM-DD", <figures>},   the open day
//!       "month": {"month": "YYYY-MM", <figures>},     closed days of the latest month
//!       "last_closed": "YYYY-MM-DD",                  the last day written to the CSV
//!       "seen": {"<kind> <ip> <iface>": {"packets": n, "bytes": n}}
//!     }                                      last-seen kernel counters, per rule
//!   }
//! }
//! ```
//! `<figures>` are the eight counters of [`Figures`]. `seen` is only meaningful within the boot
//! named by `boot_id`: a new boot means every kernel counter restarted from zero.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::ctid::Ctid;
use crate::ruleset::{Accounted, Counted, Counters, Kind, Rule};

pub const FORMAT: u32 = 1;

/// What a container sent and received. `local_*` is the part exchanged with the node itself
/// over the venet interface, and is included in `in_*` / `out_*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub local_in_bytes: u64,
    pub local_out_bytes: u64,
    pub local_in_packets: u64,
    pub local_out_packets: u64,
}

impl Figures {
    /// Credit one rule's counter delta.
    pub fn credit(&mut self, kind: Kind, d: Counters) {
        let (bytes, packets) = match kind {
            Kind::ForwardIn | Kind::LocalIn => (&mut self.in_bytes, &mut self.in_packets),
            Kind::ForwardOut | Kind::LocalOut => (&mut self.out_bytes, &mut self.out_packets),
        };
        *bytes = bytes.saturating_add(d.bytes);
        *packets = packets.saturating_add(d.packets);
        let local = match kind {
            Kind::LocalIn => Some((&mut self.local_in_bytes, &mut self.local_in_packets)),
            Kind::LocalOut => Some((&mut self.local_out_bytes, &mut self.local_out_packets)),
            _ => None,
        };
        if let Some((bytes, packets)) = local {
            *bytes = bytes.saturating_add(d.bytes);
            *packets = packets.saturating_add(d.packets);
        }
    }

    pub fn add(&mut self, o: &Figures) {
        for (a, b) in self.fields_mut().into_iter().zip(o.fields()) {
            *a = a.saturating_add(b);
        }
    }

    /// The eight figures in CSV column order.
    pub fn fields(&self) -> [u64; 8] {
        [
            self.in_bytes,
            self.out_bytes,
            self.in_packets,
            self.out_packets,
            self.local_in_bytes,
            self.local_out_bytes,
            self.local_in_packets,
            self.local_out_packets,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; 8] {
        [
            &mut self.in_bytes,
            &mut self.out_bytes,
            &mut self.in_packets,
            &mut self.out_packets,
            &mut self.local_in_bytes,
            &mut self.local_out_bytes,
            &mut self.local_in_packets,
            &mut self.local_out_packets,
        ]
    }

    pub fn is_zero(&self) -> bool {
        self.fields().iter().all(|f| *f == 0)
    }
}

/// The open day of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Day {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The closed days of a container's latest month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Month {
    /// `YYYY-MM`
    pub month: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// One container's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    #[serde(default)]
    pub ips: BTreeSet<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_since: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub total: Figures,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_ip: BTreeMap<IpAddr, Figures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub today: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<Month>,
    /// The last day closed into the CSV: no day on or before it is opened again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_closed: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seen: BTreeMap<CompactString, Counters>,
    /// IPs no longer accounted whose set elements a hook left in the kernel for the next
    /// full run to harvest and remove (their `seen` entries are live).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub parked: BTreeSet<IpAddr>,
}

impl Container {
    pub fn accounted(&self) -> bool {
        !self.ips.is_empty()
    }

    /// The IPs this container accounts now or still has a kernel counter for (a `seen`
    /// entry, harvested and removed at the next full run).
    pub fn held_ips(&self) -> BTreeSet<IpAddr> {
        let mut ips = self.ips.clone();
        ips.extend(self.parked.iter().copied());
        ips.extend(self.seen.keys().filter_map(|k| seen_key_ip(k)));
        ips
    }

    /// Closed days of `month` (`YYYY-MM`) plus the open day if it lies in that month.
    pub fn month_so_far(&self, month: &str) -> Figures {
        let mut f = Figures::default();
        if let Some(m) = self.month.as_ref().filter(|m| m.month == month) {
            f.add(&m.figures);
        }
        if let Some(d) = self.today.as_ref().filter(|d| month_of(d.date) == month) {
            f.add(&d.figures);
        }
        f
    }

    /// The open day, opened at `today` if there is none, but never on or before a day
    /// already closed into the CSV (a clock set back must not reopen a written day).
    pub fn open_day(&mut self, today: NaiveDate) -> &mut Day {
        let after_closed = self.last_closed.and_then(|d| d.succ_opt());
        let date = after_closed.map_or(today, |d| d.max(today));
        self.today.get_or_insert_with(|| Day {
            date,
            figures: Figures::default(),
        })
    }

    fn close_into_month(&mut self, date: NaiveDate, figures: &Figures) {
        self.last_closed = Some(self.last_closed.map_or(date, |d| d.max(date)));
        let ym = month_of(date);
        match &mut self.month {
            Some(m) if m.month == ym => m.figures.add(figures),
            _ => {
                self.month = Some(Month {
                    month: ym,
                    figures: *figures,
                })
            }
        }
    }
}

pub fn month_of(date: NaiveDate) -> String {
    format!("{:04}-{:02}", date.year(), date.month())
}

/// A closed day of one container: one CSV row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub date: NaiveDate,
    pub ctid: Ctid,
    pub figures: Figures,
}

/// Everything vzacct persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// When the last successful dump ran, and how long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_dump: Option<LastDump>,
    pub containers: BTreeMap<Ctid, Container>,
}

/// The last successful dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastDump {
    pub at: DateTime<FixedOffset>,
    pub duration_ms: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            format: FORMAT,
            boot_id: None,
            last_dump: None,
            containers: BTreeMap::new(),
        }
    }
}

/// A ledger file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// serde's message, with control characters escaped (it may quote a field name).
    #[error("not a valid ledger: {0}")]
    Json(String),
    #[error("format {0}, this vzacct understands format {FORMAT}")]
    Version(u32),
}

/// What one harvest folded in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Harvest {
    /// The sum of all deltas credited.
    pub counted: Figures,
    /// Rules whose counter restarted (lower than last seen).
    pub restarted: usize,
    /// Whether this harvest was the first of a new boot.
    pub new_boot: bool,
    /// Rules whose counters could not be traffic (more bytes than 65,535 per packet), taken
    /// as a new starting point without crediting anything.
    pub implausible: usize,
}

/// At most this many rows of zeros are written for days without any dump.
pub const MAX_GAP_DAYS: u64 = 366;

/// The largest IP packet (IPv4 total length, IPv6 payload length without jumbograms).
pub const MAX_IP_PACKET: u64 = 65_535;

/// How to treat counters found on rules at the first harvest of a new boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewBoot {
    /// They counted since the rule was made in this boot: credit them (dump, add, ...).
    Count,
    /// They may have been restored from a saved ruleset with old counters before any
    /// container ran (boot restore): take them as the baseline, credit nothing.
    Baseline,
}

/// The IP a `seen` key is about (rule keys and set-element keys alike hold it as a word).
fn seen_key_ip(key: &str) -> Option<IpAddr> {
    key.split(' ').find_map(|w| w.parse().ok())
}

/// The identity of a rule within its container's `seen` map.
pub fn seen_key(rule: &Rule) -> CompactString {
    let kind = match rule.kind {
        Kind::ForwardIn => "forward_in",
        Kind::ForwardOut => "forward_out",
        Kind::LocalIn => "local_in",
        Kind::LocalOut => "local_out",
    };
    let key = compact_str::format_compact!("{kind} {} {}", rule.ip, rule.iface);
    CompactString::from(key.trim_end())
}

impl Ledger {
    pub fn from_json(bytes: &[u8]) -> Result<Ledger, FormatError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let json = |e: serde_json::Error| {
            let m: String = e
                .to_string()
                .chars()
                .flat_map(char::escape_debug)
                .take(300)
                .collect();
            FormatError::Json(m)
        };
        let probe: Probe = serde_json::from_slice(bytes).map_err(json)?;
        if probe.format != FORMAT {
            return Err(FormatError::Version(probe.format));
        }
        serde_json::from_slice(bytes).map_err(json)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain maps of strings and integers cannot fail.
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The accounted containers and IPs, as planning wants them.
    pub fn accounted(&self) -> Accounted {
        self.containers
            .iter()
            .filter(|(_, c)| c.accounted())
            .map(|(id, c)| (id.clone(), c.ips.clone()))
            .collect()
    }

    /// About how many kernel counters of ours exist: one per kind for every IP a container
    /// accounts or still holds.
    pub fn expected_elements(&self) -> usize {
        4 * self.containers.values().map(|c| c.ips.len()).sum::<usize>()
    }

    /// Which container currently owns `ip`, if any.
    pub fn owner(&self, ip: &IpAddr) -> Option<&Ctid> {
        self.containers
            .iter()
            .find(|(_, c)| c.ips.contains(ip))
            .map(|(id, _)| id)
    }

    /// Start accounting `ip` for `ctid` (taking it from any other container). Returns the
    /// previous owner if the IP moved, and whether anything changed.
    pub fn assign(
        &mut self,
        ctid: &Ctid,
        ip: IpAddr,
        now: DateTime<FixedOffset>,
        today: NaiveDate,
    ) -> (Option<Ctid>, bool) {
        let previous = self.owner(&ip).filter(|o| *o != ctid).cloned();
        let added = self.assign_from(ctid, ip, previous.as_ref(), now, today);
        (previous, added)
    }

    /// [`Ledger::assign`] when the caller already knows the IP's current owner (`previous`,
    /// another container or none): no search through every container.
    pub fn assign_from(
        &mut self,
        ctid: &Ctid,
        ip: IpAddr,
        previous: Option<&Ctid>,
        now: DateTime<FixedOffset>,
        today: NaiveDate,
    ) -> bool {
        if let Some(prev) = previous.filter(|p| *p != ctid)
            && let Some(c) = self.containers.get_mut(prev)
        {
            c.ips.remove(&ip);
        }
        let c = self.containers.entry(ctid.clone()).or_default();
        c.total_since.get_or_insert(now);
        c.open_day(today);
        c.parked.remove(&ip);
        c.ips.insert(ip)
    }

    /// Stop accounting `ip` for `ctid`; its history stays.
    pub fn unassign(&mut self, ctid: &Ctid, ip: &IpAddr) -> bool {
        self.containers
            .get_mut(ctid)
            .is_some_and(|c| c.ips.remove(ip))
    }

    /// Fold the kernel's counters into the ledger. Deltas are taken against the last-seen
    /// value of each rule; a counter lower than last seen, a rule not seen before, or a new
    /// boot means counting restarted from zero, so the counter itself is the delta. Of
    /// duplicate copies of a rule only the last is followed (each copy counts the same
    /// packets, and the last is the one planning keeps). Closes finished days first, so the
    /// traffic counts for `today`, and returns the closed days' rows.
    pub fn harvest<'a>(
        &mut self,
        kernel: impl IntoIterator<Item = &'a Counted>,
        boot_id: &str,
        today: NaiveDate,
        new_boot_policy: NewBoot,
    ) -> (Harvest, Vec<Row>) {
        let mut report = Harvest::default();
        let new_boot = self.boot_id.as_deref() != Some(boot_id);
        report.new_boot = new_boot && self.boot_id.is_some();
        if new_boot {
            for c in self.containers.values_mut() {
                c.seen.clear();
            }
            self.boot_id = Some(boot_id.to_string());
        }
        let rows = self.close_days(today);
        // Every rule (or set element) by container and key; of duplicate copies the last
        // (the sort is stable) is the one followed.
        let mut all: Vec<&Counted> = kernel.into_iter().collect();
        all.sort_by(|a, b| (&a.ctid, a.key.as_str()).cmp(&(&b.ctid, b.key.as_str())));
        let credit_all = !(new_boot && new_boot_policy == NewBoot::Baseline);
        // A container none of whose rules is in the kernel any more keeps no baselines.
        for (ctid, c) in &mut self.containers {
            if all.binary_search_by(|k| k.ctid.cmp(ctid)).is_err() {
                c.seen.clear();
            }
        }
        for group in all.chunk_by(|a, b| a.ctid == b.ctid) {
            let c = self.containers.entry(group[0].ctid.clone()).or_default();
            let mut seen = BTreeMap::new();
            for copies in group.chunk_by(|a, b| a.key == b.key) {
                let rule = copies[copies.len() - 1];
                let (key, now) = (rule.key.as_str(), rule.counters);
                let delta = match c.seen.get(key) {
                    Some(b) if now.packets >= b.packets && now.bytes >= b.bytes => Counters {
                        packets: now.packets - b.packets,
                        bytes: now.bytes - b.bytes,
                    },
                    Some(_) => {
                        report.restarted += 1;
                        now
                    }
                    None => now,
                };
                // No IP packet is longer than 65,535 bytes: a delta claiming more is not
                // traffic (counters written by someone else, e.g. a restored saved ruleset);
                // counting starts from the value found, nothing is credited.
                let plausible = delta.bytes <= delta.packets.saturating_mul(MAX_IP_PACKET);
                if !plausible {
                    report.implausible += 1;
                }
                if credit_all && plausible && (delta.packets > 0 || delta.bytes > 0) {
                    c.total.credit(rule.kind, delta);
                    c.by_ip.entry(rule.ip).or_default().credit(rule.kind, delta);
                    c.open_day(today).figures.credit(rule.kind, delta);
                    report.counted.credit(rule.kind, delta);
                }
                seen.insert(rule.key.clone(), now);
            }
            c.seen = seen;
        }
        (report, rows)
    }

    /// Close every open day before `today` into rows, with rows of zeros for the days in
    /// between while the container stayed accounted. A clock that went back leaves the open
    /// day open: its traffic keeps going to a day that exists.
    pub fn close_days(&mut self, today: NaiveDate) -> Vec<Row> {
        let mut rows = Vec::new();
        for (ctid, c) in &mut self.containers {
            let Some(day) = c.today.clone() else {
                if c.accounted() {
                    c.open_day(today);
                }
                continue;
            };
            if day.date >= today {
                continue;
            }
            rows.push(Row {
                date: day.date,
                ctid: ctid.clone(),
                figures: day.figures,
            });
            c.close_into_month(day.date, &day.figures);
            if c.accounted() {
                // Zero rows for the days the node was off, but for a year at most: an open
                // day older than that (a clock that was far off) must not flood the CSV.
                let oldest = today - chrono::Days::new(MAX_GAP_DAYS);
                let mut d = day.date.succ_opt().map(|d| d.max(oldest));
                while let Some(date) = d.filter(|d| *d < today) {
                    rows.push(Row {
                        date,
                        ctid: ctid.clone(),
                        figures: Figures::default(),
                    });
                    c.close_into_month(date, &Figures::default());
                    d = date.succ_opt();
                }
                c.today = None;
                c.open_day(today);
            } else {
                c.today = None;
            }
        }
        rows
    }

    /// Start a new billing period for `ctid`: totals since reset go to zero; days, months,
    /// CSV rows and every other container stay as they are.
    pub fn reset(&mut self, ctid: &Ctid, now: DateTime<FixedOffset>) -> bool {
        match self.containers.get_mut(ctid) {
            Some(c) => {
                c.total = Figures::default();
                c.by_ip.clear();
                c.total_since = Some(now);
                true
            }
            None => false,
        }
    }

    /// After a full harvest: parked elements are harvested (and the plan removes them).
    /// Give every container without one a start of its totals: `now`, when it was first
    /// seen (a counter of a container the ledger did not know, say).
    pub fn stamp_since(&mut self, now: DateTime<FixedOffset>) {
        for c in self.containers.values_mut() {
            c.total_since.get_or_insert(now);
        }
    }

    pub fn unpark_all(&mut self) {
        for c in self.containers.values_mut() {
            c.parked.clear();
        }
    }

    /// After the kernel was made to match the ledger: the counters of IPs a container no
    /// longer accounts are gone, so their last-seen values are dropped (a later event may
    /// then start such an IP from zero without reading the kernel). Returns whether any was.
    pub fn forget_removed(&mut self) -> bool {
        let mut any = false;
        for c in self.containers.values_mut() {
            let before = c.seen.len();
            let ips = &c.ips;
            c.seen
                .retain(|k, _| seen_key_ip(k).is_some_and(|ip| ips.contains(&ip)));
            any |= c.seen.len() != before;
        }
        any
    }

    /// Forget containers that carry nothing any more: not accounted, no open day, no totals
    /// and no rule in the kernel.
    pub fn prune(&mut self) {
        self.containers.retain(|_, c| {
            c.accounted()
                || c.today.is_some()
                || !c.total.is_zero()
                || !c.seen.is_empty()
                || !c.parked.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{Current, parse_save};

    const FI: &str = "VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:101\"";
    const FO: &str = "VZACCT-FORWARD -s 10.0.0.1/32 -m comment --comment \"ct:101\"";
    const LI: &str = "VZACCT-OUTPUT -d 10.0.0.1/32 -o venet0 -m comment --comment \"ct:101\"";
    const LO: &str = "VZACCT-INPUT -s 10.0.0.1/32 -i venet0 -m comment --comment \"ct:101\"";

    fn kernel(rules: &[(&str, u64, u64)]) -> Current {
        let mut text = String::from("*filter\n");
        for (rule, p, b) in rules {
            text.push_str(&format!("[{p}:{b}] -A {rule}\n"));
        }
        text.push_str("COMMIT\n");
        parse_save(&text).unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-29T12:00:00+00:00").unwrap()
    }

    fn ledger_101() -> Ledger {
        let mut l = Ledger::default();
        l.assign(
            &"101".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            now(),
            day("2026-11-29"),
        );
        l
    }

    fn total(l: &Ledger, ct: &str) -> Figures {
        l.containers[&ct.parse::<Ctid>().unwrap()].total
    }

    fn harvest(l: &mut Ledger, k: &Current, boot: &str, d: &str) -> (Harvest, Vec<Row>) {
        l.harvest(&k.counted(), boot, day(d), NewBoot::Count)
    }

    #[test]
    fn parked_and_removed_counters() {
        let mut l = ledger_101();
        let ct: Ctid = "101".parse().unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        harvest(&mut l, &kernel(&[(FI, 3, 300)]), "b1", "2026-11-29");
        // A hook parks the IP: still held (its counters live on).
        l.unassign(&ct, &ip);
        l.containers.get_mut(&ct).unwrap().parked.insert(ip);
        assert!(l.containers[&ct].held_ips().contains(&ip));
        // A full run harvests and unparks; until its removal is confirmed the last-seen
        // value keeps the IP held; then it is forgotten.
        l.unpark_all();
        assert!(l.containers[&ct].held_ips().contains(&ip));
        assert!(l.forget_removed());
        assert!(l.containers[&ct].held_ips().is_empty());
        assert!(!l.forget_removed());
        // Accounted IPs keep theirs.
        l.assign(&ct, ip, now(), day("2026-11-29"));
        harvest(&mut l, &kernel(&[(FI, 5, 500)]), "b1", "2026-11-29");
        assert!(!l.forget_removed());
        assert_eq!(l.containers[&ct].seen.len(), 1);
    }

    #[test]
    fn deltas_directions_and_local_part() {
        let mut l = ledger_101();
        let k = kernel(&[(FI, 3, 300), (FO, 2, 200), (LI, 1, 50), (LO, 4, 70)]);
        harvest(&mut l, &k, "b1", "2026-11-29");
        let want = Figures {
            in_bytes: 350,
            out_bytes: 270,
            in_packets: 4,
            out_packets: 6,
            local_in_bytes: 50,
            local_out_bytes: 70,
            local_in_packets: 1,
            local_out_packets: 4,
        };
        assert_eq!(total(&l, "101"), want);
        // Unchanged counters add nothing; grown ones add the difference.
        harvest(&mut l, &k, "b1", "2026-11-29");
        assert_eq!(total(&l, "101"), want);
        let k2 = kernel(&[(FI, 5, 1300), (FO, 2, 200), (LI, 1, 50), (LO, 4, 70)]);
        let (h, _) = harvest(&mut l, &k2, "b1", "2026-11-29");
        assert_eq!(h.counted.in_bytes, 1000);
        assert_eq!(total(&l, "101").in_bytes, 1350);
        let by_ip = &l.containers[&"101".parse::<Ctid>().unwrap()].by_ip;
        assert_eq!(by_ip[&"10.0.0.1".parse::<IpAddr>().unwrap()].in_bytes, 1350);
    }

    #[test]
    fn a_counter_that_went_down_restarted_from_zero() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 10, 1000)]), "b1", "2026-11-29");
        let (h, _) = harvest(&mut l, &kernel(&[(FI, 2, 40)]), "b1", "2026-11-29");
        assert_eq!(h.restarted, 1);
        assert_eq!(total(&l, "101").in_bytes, 1040);
        assert_eq!(total(&l, "101").in_packets, 12);
    }

    #[test]
    fn a_rule_that_vanished_and_came_back_starts_from_zero() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 10, 1000)]), "b1", "2026-11-29");
        harvest(&mut l, &kernel(&[]), "b1", "2026-11-29");
        harvest(&mut l, &kernel(&[(FI, 1, 1500)]), "b1", "2026-11-29");
        assert_eq!(total(&l, "101").in_bytes, 2500);
    }

    #[test]
    fn counters_near_two_to_the_64_never_spike() {
        let mut l = ledger_101();
        let (p, big) = (1_u64 << 49, u64::MAX - 10);
        harvest(&mut l, &kernel(&[(FI, p, big)]), "b1", "2026-11-29");
        harvest(
            &mut l,
            &kernel(&[(FI, p + 2, u64::MAX)]),
            "b1",
            "2026-11-29",
        );
        assert_eq!(total(&l, "101").in_bytes, u64::MAX);
        assert_eq!(total(&l, "101").in_packets, p + 2);
        // A wrap shows as a lower counter: the new value is added, saturating, no spike.
        harvest(&mut l, &kernel(&[(FI, 3, 5)]), "b1", "2026-11-29");
        assert_eq!(total(&l, "101").in_bytes, u64::MAX);
    }

    #[test]
    fn impossible_counters_are_a_starting_point_not_traffic() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "2026-11-29");
        // Someone replaced our rule with one carrying a counter near 2^64 for one packet.
        let (h, _) = harvest(
            &mut l,
            &kernel(&[(FI, 1, u64::MAX - 615)]),
            "b1",
            "2026-11-29",
        );
        assert_eq!(h.implausible, 1);
        assert_eq!(total(&l, "101").in_bytes, 100);
        // From there on, real traffic counts.
        harvest(
            &mut l,
            &kernel(&[(FI, 3, u64::MAX - 415)]),
            "b1",
            "2026-11-29",
        );
        assert_eq!(total(&l, "101").in_bytes, 300);
        // A rule first seen with impossible counters is not credited either.
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 0, 5000)]), "b1", "2026-11-29");
        assert_eq!(total(&l, "101").in_bytes, 0);
    }

    #[test]
    fn a_new_boot_restarts_every_counter() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 10, 1000)]), "b1", "2026-11-29");
        // After a reboot the rule counts 1200 from zero: all of it is new traffic.
        let (h, _) = harvest(&mut l, &kernel(&[(FI, 12, 1200)]), "b2", "2026-11-29");
        assert!(h.new_boot);
        assert_eq!(total(&l, "101").in_bytes, 2200);
    }

    #[test]
    fn boot_restore_takes_found_counters_as_baseline() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 10, 1000)]), "b1", "2026-11-29");
        // A firewall service restored our rule with old counters before any container ran.
        let k = kernel(&[(FI, 10, 1000)]);
        l.harvest(&k.counted(), "b2", day("2026-11-29"), NewBoot::Baseline);
        assert_eq!(total(&l, "101").in_bytes, 1000);
        harvest(&mut l, &kernel(&[(FI, 11, 1100)]), "b2", "2026-11-29");
        assert_eq!(total(&l, "101").in_bytes, 1100);
    }

    #[test]
    fn of_duplicates_only_the_last_copy_is_followed() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 10, 1000)]), "b1", "2026-11-29");
        // Someone appended a copy: it counts the same packets as the original.
        harvest(
            &mut l,
            &kernel(&[(FI, 13, 1300), (FI, 3, 300)]),
            "b1",
            "2026-11-29",
        );
        // The new last copy (300) is lower than last seen (1000): counted as restarted.
        assert_eq!(total(&l, "101").in_bytes, 1300);
        let after_dup = total(&l, "101").in_bytes;
        // Planning deleted the first copy; the survivor goes on counting.
        harvest(&mut l, &kernel(&[(FI, 5, 500)]), "b1", "2026-11-29");
        assert_eq!(total(&l, "101").in_bytes, after_dup + 200);
    }

    #[test]
    fn an_ip_moved_between_containers_is_charged_to_each_for_its_share() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "2026-11-29");
        let (prev, _) = l.assign(
            &"102".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            now(),
            day("2026-11-29"),
        );
        assert_eq!(prev.unwrap().as_str(), "101");
        // The old rule's last counts still go to 101, the new rule's to 102.
        let fi102 = "VZACCT-FORWARD -d 10.0.0.1/32 -m comment --comment \"ct:102\"";
        harvest(
            &mut l,
            &kernel(&[(FI, 2, 150), (fi102, 1, 7)]),
            "b1",
            "2026-11-29",
        );
        assert_eq!(total(&l, "101").in_bytes, 150);
        assert_eq!(total(&l, "102").in_bytes, 7);
    }

    #[test]
    fn days_close_into_rows_with_zero_rows_for_days_off() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "2026-11-29");
        // The node was off for three days; the traffic found now counts for today.
        let (_, rows) = harvest(&mut l, &kernel(&[(FI, 2, 160)]), "b1", "2026-12-03");
        let got: Vec<(String, u64)> = rows
            .iter()
            .map(|r| (r.date.to_string(), r.figures.in_bytes))
            .collect();
        assert_eq!(
            got,
            [
                ("2026-11-29".to_string(), 100),
                ("2026-11-30".to_string(), 0),
                ("2026-12-01".to_string(), 0),
                ("2026-12-02".to_string(), 0),
            ]
        );
        let c = &l.containers[&"101".parse::<Ctid>().unwrap()];
        assert_eq!(c.today.as_ref().unwrap().date, day("2026-12-03"));
        assert_eq!(c.today.as_ref().unwrap().figures.in_bytes, 60);
        assert_eq!(c.month_so_far("2026-12").in_bytes, 60);
        assert_eq!(c.month.as_ref().unwrap().month, "2026-12");
        // Closing again yields nothing.
        assert!(l.close_days(day("2026-12-03")).is_empty());
    }

    #[test]
    fn a_far_off_clock_writes_a_year_of_zero_rows_at_most() {
        let mut l = Ledger::default();
        l.assign(
            &"101".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            now(),
            day("1970-01-01"),
        );
        harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "1970-01-01");
        let (_, rows) = harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "2026-11-29");
        assert_eq!(rows.len(), 1 + 366);
        assert_eq!(rows[0].date, day("1970-01-01"));
        assert_eq!(rows[1].date, day("2025-11-28"));
        assert_eq!(rows[366].date, day("2026-11-28"));
    }

    #[test]
    fn a_clock_that_went_back_keeps_the_open_day() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "2026-11-29");
        let (_, rows) = harvest(&mut l, &kernel(&[(FI, 2, 130)]), "b1", "2026-11-28");
        assert!(rows.is_empty());
        let c = &l.containers[&"101".parse::<Ctid>().unwrap()];
        assert_eq!(c.today.as_ref().unwrap().date, day("2026-11-29"));
        assert_eq!(c.today.as_ref().unwrap().figures.in_bytes, 130);
    }

    #[test]
    fn a_restart_after_the_clock_went_back_never_reopens_a_closed_day() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "2026-11-30");
        l.unassign(&"101".parse().unwrap(), &"10.0.0.1".parse().unwrap());
        let (_, rows) = harvest(&mut l, &kernel(&[]), "b1", "2026-12-01");
        assert_eq!(rows.len(), 1);
        // The clock steps back to Nov 30 and the container starts again.
        l.assign(
            &"101".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            now(),
            day("2026-11-30"),
        );
        harvest(&mut l, &kernel(&[(FI, 3, 300)]), "b1", "2026-11-30");
        let c = &l.containers[&"101".parse::<Ctid>().unwrap()];
        assert_eq!(c.today.as_ref().unwrap().date, day("2026-12-01"));
        assert_eq!(c.today.as_ref().unwrap().figures.in_bytes, 300);
        let (_, rows) = harvest(&mut l, &kernel(&[(FI, 3, 300)]), "b1", "2026-12-02");
        assert_eq!(rows[0].date, day("2026-12-01"));
        assert_eq!(rows[0].figures.in_bytes, 300);
        let c = &l.containers[&"101".parse::<Ctid>().unwrap()];
        assert_eq!(c.month.as_ref().unwrap().month, "2026-12");
    }

    #[test]
    fn a_container_no_longer_accounted_gets_its_last_row_then_none() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "2026-11-29");
        l.unassign(&"101".parse().unwrap(), &"10.0.0.1".parse().unwrap());
        let (_, rows) = harvest(&mut l, &kernel(&[]), "b1", "2026-12-02");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].figures.in_bytes, 100);
        assert!(l.close_days(day("2026-12-05")).is_empty());
        assert_eq!(total(&l, "101").in_bytes, 100, "history is kept");
    }

    #[test]
    fn reset_touches_only_that_containers_totals() {
        let mut l = ledger_101();
        l.assign(
            &"102".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            now(),
            day("2026-11-29"),
        );
        let fi102 = "VZACCT-FORWARD -d 10.0.0.2/32 -m comment --comment \"ct:102\"";
        harvest(
            &mut l,
            &kernel(&[(FI, 1, 100), (fi102, 1, 9)]),
            "b1",
            "2026-11-29",
        );
        let before_102 = l.containers[&"102".parse::<Ctid>().unwrap()].clone();
        assert!(l.reset(&"101".parse().unwrap(), now()));
        let c = &l.containers[&"101".parse::<Ctid>().unwrap()];
        assert!(c.total.is_zero() && c.by_ip.is_empty());
        assert_eq!(
            c.today.as_ref().unwrap().figures.in_bytes,
            100,
            "today is history"
        );
        assert_eq!(l.containers[&"102".parse::<Ctid>().unwrap()], before_102);
        harvest(
            &mut l,
            &kernel(&[(FI, 2, 150), (fi102, 1, 9)]),
            "b1",
            "2026-11-29",
        );
        assert_eq!(total(&l, "101").in_bytes, 50);
    }

    #[test]
    fn json_round_trip() {
        let mut l = ledger_101();
        harvest(
            &mut l,
            &kernel(&[(FI, 1, 100), (LO, 2, 20)]),
            "b1",
            "2026-11-29",
        );
        let back = Ledger::from_json(&l.to_json()).unwrap();
        assert_eq!(back, l);
    }
}
