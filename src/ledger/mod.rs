//! The ledger: the truth about what each container carried. Kernel counters are ephemeral;
//! every byte a rule counted is folded in here exactly once (harvest), days are closed into
//! CSV rows, and totals survive reboots, firewall restarts and IP changes. Pure: no I/O.
//!
//! The record below is the format 1 single file (`<state_dir>/ledger.json`), still read
//! when a node is converted; format 2 kept the same container records in bucket files; both
//! are converted into the database of [`db`], which stores the same fields as rows.
//! ```text
//! {
//!   "format": 1,
//!   "boot_id": "<kernel boot id when the counters below were seen>",
//!   "last_dump": {"at": "<RFC 3339>", "duration_ms": n},
//!   "containers": {
//!     "<ctid>": {
//!       "ips": ["10.0.0.1", ...],            accounted now (empty: history only)
//!       "total_since": "<RFC 3339>",         start of the totals (the last reset)
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
//! `<figures>` are the counters of [`Figures`]. `seen` is only meaningful within the boot
//! named by `boot_id`: a new boot means every kernel counter restarted from zero.
//!
//! The ledger on disk lives in the children, the only ones here that do I/O: [`store`] (the
//! state dir and its lock), [`db`] (the SQLite database), [`legacy`] (the files of earlier
//! releases, read once to convert them).

pub mod billing;
pub mod db;
pub mod legacy;
pub mod period;
pub mod quota;
pub mod store;
pub mod thresholds;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::ctid::Ctid;
use crate::model::{Accounted, Counted, CounterId, Counters, Coverage, Kind};

pub const FORMAT: u32 = 1;

/// What a container sent and received. `local_*` is the part exchanged with the node itself
/// over the venet interface, and `free_*` the part exchanged with free networks
/// (`[classes]`); both are included in `in_*` / `out_*`, so billable = in - free_in.
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
    #[serde(default)]
    pub free_in_bytes: u64,
    #[serde(default)]
    pub free_out_bytes: u64,
    #[serde(default)]
    pub free_in_packets: u64,
    #[serde(default)]
    pub free_out_packets: u64,
}

/// How many figures there are (CSV columns after date and CTID, ledger columns).
pub const FIGURES: usize = 12;

impl Figures {
    /// Credit one rule's counter delta.
    pub fn credit(&mut self, kind: Kind, d: Counters) {
        let (bytes, packets) = match kind {
            Kind::ForwardIn | Kind::LocalIn => (&mut self.in_bytes, &mut self.in_packets),
            Kind::ForwardOut | Kind::LocalOut => (&mut self.out_bytes, &mut self.out_packets),
            Kind::FreeForwardIn | Kind::FreeLocalIn => {
                (&mut self.free_in_bytes, &mut self.free_in_packets)
            }
            Kind::FreeForwardOut | Kind::FreeLocalOut => {
                (&mut self.free_out_bytes, &mut self.free_out_packets)
            }
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

    /// The figures in CSV column order.
    pub fn fields(&self) -> [u64; FIGURES] {
        [
            self.in_bytes,
            self.out_bytes,
            self.in_packets,
            self.out_packets,
            self.local_in_bytes,
            self.local_out_bytes,
            self.local_in_packets,
            self.local_out_packets,
            self.free_in_bytes,
            self.free_out_bytes,
            self.free_in_packets,
            self.free_out_packets,
        ]
    }

    /// [`Figures::fields`], read back.
    pub fn from_fields(v: [u64; FIGURES]) -> Figures {
        let mut f = Figures::default();
        for (a, b) in f.fields_mut().into_iter().zip(v) {
            *a = b;
        }
        f
    }

    fn fields_mut(&mut self) -> [&mut u64; FIGURES] {
        [
            &mut self.in_bytes,
            &mut self.out_bytes,
            &mut self.in_packets,
            &mut self.out_packets,
            &mut self.local_in_bytes,
            &mut self.local_out_bytes,
            &mut self.local_in_packets,
            &mut self.local_out_packets,
            &mut self.free_in_bytes,
            &mut self.free_out_bytes,
            &mut self.free_in_packets,
            &mut self.free_out_packets,
        ]
    }

    /// Billable bytes in: what did not come from a free network.
    pub fn billable_in_bytes(&self) -> u64 {
        self.in_bytes.saturating_sub(self.free_in_bytes)
    }

    /// Billable bytes out.
    pub fn billable_out_bytes(&self) -> u64 {
        self.out_bytes.saturating_sub(self.free_out_bytes)
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
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "legacy::seen"
    )]
    pub seen: BTreeMap<CounterId, Counters>,
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
        ips.extend(self.seen.keys().map(|k| k.ip));
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
    /// The generation last written into each table (`rules4`, `rules6`) and set of ours
    /// (see `backend::untrusted`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generations: BTreeMap<String, crate::model::Generation>,
    /// When the last successful dump ran, and how long its read and harvest took (up to the
    /// write that records it; the Prometheus textfile has the whole dump).
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
            generations: BTreeMap::new(),
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
    /// Counters with no last-seen value that vzacct did not create: taken as a starting
    /// point, nothing credited.
    pub unknown: usize,
    /// Rules whose counters could not be traffic (more bytes than 512 KiB per packet), taken
    /// as a new starting point without crediting anything.
    pub implausible: usize,
    /// One line per table or set found restored from a saved copy.
    pub notes: Vec<String>,
}

/// At most this many rows of zeros are written for days without any dump.
pub const MAX_GAP_DAYS: u64 = 366;

/// The most bytes netfilter can count for one packet: a GSO/GRO super-packet passes the
/// hooks as one, up to the kernel's GSO_MAX_SIZE of 512 KiB with BIG TCP (IPv4 and IPv6;
/// 64 KiB without it). A delta claiming more per packet is not traffic.
pub const MAX_COUNTED_PACKET: u64 = 512 * 1024;

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

    /// The ledger in format 1 (`ledger.json`), as the earlier release wrote it.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain maps of strings and integers cannot fail.
        let mut v = legacy::without_free(serde_json::to_vec(self).unwrap_or_default());
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
    /// value of each rule; a counter lower than last seen, or a rule not seen before, means
    /// counting restarted from zero, so the counter itself is the delta. At the first
    /// harvest of a new boot (or of a ledger that never saw one) every counter found is
    /// taken as a baseline and nothing is credited: a firewall service may have restored a
    /// saved copy with old counters before any vzacct command ran. Of duplicate copies of a
    /// rule only the last is followed (each copy counts the same packets, and the last is the
    /// one planning keeps). Only what `coverage` says was read is forgotten or replaced: a
    /// family switched off, or sets that were not read, keep their last-seen values. Closes
    /// finished days first, so the traffic counts for `today`, and returns the closed days'
    /// rows.
    pub fn harvest<'a>(
        &mut self,
        kernel: impl IntoIterator<Item = &'a Counted>,
        coverage: &Coverage,
        boot_id: &str,
        today: NaiveDate,
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
        self.sort_by_container(&mut all);
        // A set element whose comment still names an earlier owner (the batch that gave it
        // to the new one was not applied) is charged to the container holding its baseline.
        // Only elements without a baseline of their own are looked up (none, normally), so
        // the index of every container's set baselines is built only when one is. Each
        // container is looked up once, for its run of counters.
        let mut orphans: Vec<&Counted> = Vec::new();
        for group in all.chunk_by(|a, b| a.ctid == b.ctid) {
            let seen = self.containers.get(&group[0].ctid).map(|c| &c.seen);
            orphans.extend(
                group
                    .iter()
                    .copied()
                    .filter(|c| c.key.is_set() && !seen.is_some_and(|s| s.contains_key(&c.key))),
            );
        }
        let mut reattributed: Vec<Counted> = Vec::new();
        if !orphans.is_empty() {
            let holder: std::collections::HashMap<&CounterId, &Ctid> = self
                .containers
                .iter()
                .flat_map(|(id, c)| c.seen.keys().filter(|k| k.is_set()).map(move |k| (k, id)))
                .collect();
            reattributed = orphans
                .iter()
                .filter_map(|c| {
                    let owner = *holder.get(&c.key)?;
                    (owner != &c.ctid).then(|| Counted {
                        ctid: owner.clone(),
                        ..(*c).clone()
                    })
                })
                .collect();
        }
        if !reattributed.is_empty() {
            let moved: std::collections::HashSet<&CounterId> =
                reattributed.iter().map(|c| &c.key).collect();
            all.retain(|c| !moved.contains(&c.key));
            all.extend(reattributed.iter());
            self.sort_by_container(&mut all);
        }
        let credit_all = !new_boot;
        // A container none of whose read counters is in the kernel any more keeps no
        // baselines for what was read. Both sides are in CTID order: one merge.
        let mut kernel_ids = all.chunk_by(|a, b| a.ctid == b.ctid).map(|g| &g[0].ctid);
        let mut next_id = kernel_ids.next();
        for (ctid, c) in &mut self.containers {
            while next_id.is_some_and(|k| k < ctid) {
                next_id = kernel_ids.next();
            }
            if next_id != Some(ctid) {
                c.seen.retain(|k, _| !coverage.covers(k));
            }
        }
        for group in all.chunk_by(|a, b| a.ctid == b.ctid) {
            let c = match self.containers.get_mut(&group[0].ctid) {
                Some(c) => c,
                None => self.containers.entry(group[0].ctid.clone()).or_default(),
            };
            // The read values replace the last-seen ones in place; of what was covered by
            // the read, only what it found stays.
            let mut found = 0;
            for copies in group.chunk_by(|a, b| a.key == b.key) {
                let rule = copies[copies.len() - 1];
                let (key, now) = (&rule.key, rule.counters);
                found += 1;
                let last = c.seen.get_mut(key);
                let delta = match &last {
                    Some(b) if now.packets >= b.packets && now.bytes >= b.bytes => Counters {
                        packets: now.packets - b.packets,
                        bytes: now.bytes - b.bytes,
                    },
                    Some(_) => {
                        report.restarted += 1;
                        now
                    }
                    // Not created by vzacct since the last read (that would have a zero
                    // baseline): its past is unknown, so what it holds is a starting point.
                    None => {
                        report.unknown += 1;
                        Counters::default()
                    }
                };
                match last {
                    Some(b) => *b = now,
                    None => {
                        c.seen.insert(rule.key.clone(), now);
                    }
                }
                // No packet netfilter counts is longer than 512 KiB: a delta claiming more is not
                // traffic (counters written by someone else, e.g. a restored saved ruleset);
                // counting starts from the value found, nothing is credited.
                let plausible = delta.bytes <= delta.packets.saturating_mul(MAX_COUNTED_PACKET);
                if !plausible {
                    report.implausible += 1;
                }
                if credit_all && plausible && (delta.packets > 0 || delta.bytes > 0) {
                    c.total.credit(rule.kind(), delta);
                    c.by_ip
                        .entry(rule.ip())
                        .or_default()
                        .credit(rule.kind(), delta);
                    c.open_day(today).figures.credit(rule.kind(), delta);
                    report.counted.credit(rule.kind(), delta);
                }
            }
            // Last-seen values the read covered but did not find are forgotten (nothing to
            // look for when every one left is one just found).
            if c.seen.len() > found {
                let keys: BTreeSet<&CounterId> = group.iter().map(|r| &r.key).collect();
                c.seen
                    .retain(|k, _| keys.contains(k) || !coverage.covers(k));
            }
        }
        (report, rows)
    }

    /// Sort counters by container and key, stably (of duplicate copies the last stays
    /// last). A container the ledger knows is compared by its place in the ledger's order,
    /// not by its text: a large node sorts 80,000 counters, and comparing CTIDs as strings
    /// was most of the harvest's time. The order is the same: containers the ledger knows
    /// by CTID, then the others by CTID.
    fn sort_by_container(&self, all: &mut Vec<&Counted>) {
        let rank: std::collections::HashMap<&Ctid, u32> =
            (self.containers.keys()).zip(0u32..).collect();
        let mut ranked: Vec<(u32, &Counted)> = all
            .iter()
            .map(|c| (rank.get(&c.ctid).copied().unwrap_or(u32::MAX), *c))
            .collect();
        ranked.sort_by(|(ra, a), (rb, b)| {
            ra.cmp(rb)
                .then_with(|| match *ra {
                    u32::MAX => a.ctid.cmp(&b.ctid),
                    _ => std::cmp::Ordering::Equal,
                })
                .then_with(|| a.key.cmp(&b.key))
        });
        all.clear();
        all.extend(ranked.into_iter().map(|(_, c)| c));
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

    /// Credit the final counters of set elements that no longer count (their set was frozen
    /// or is about to be destroyed): what each counted since its last-seen value, to the
    /// container holding that value. The last-seen values stay: an element that carries over
    /// into a swapped-in set starts there from them. Returns what was credited.
    pub fn credit_frozen(&mut self, frozen: &[Counted], today: NaiveDate) -> Figures {
        let mut credited = Figures::default();
        for e in frozen {
            self.credit_frozen_one(e, today, &mut credited);
        }
        credited
    }

    /// [`Ledger::credit_frozen`] of one counter, as it is read: what it credits is added to
    /// `credited`.
    pub fn credit_frozen_one(&mut self, e: &Counted, today: NaiveDate, credited: &mut Figures) {
        let key = &e.key;
        let holder = if self
            .containers
            .get(&e.ctid)
            .is_some_and(|c| c.seen.contains_key(key))
        {
            Some(e.ctid.clone())
        } else {
            self.containers
                .iter()
                .find(|(_, c)| c.seen.contains_key(key))
                .map(|(id, _)| id.clone())
        };
        // An element with no last-seen value was taken as a starting point at the read.
        let Some(id) = holder else { return };
        let Some(c) = self.containers.get_mut(&id) else {
            return;
        };
        let base = c.seen[key];
        let (now, delta) = (
            e.counters,
            Counters {
                packets: e.counters.packets.saturating_sub(base.packets),
                bytes: e.counters.bytes.saturating_sub(base.bytes),
            },
        );
        let plausible = delta.bytes <= delta.packets.saturating_mul(MAX_COUNTED_PACKET);
        if now.packets < base.packets || now.bytes < base.bytes || !plausible {
            return;
        }
        if delta.packets > 0 || delta.bytes > 0 {
            c.total.credit(e.kind(), delta);
            c.by_ip.entry(e.ip()).or_default().credit(e.kind(), delta);
            c.open_day(today).figures.credit(e.kind(), delta);
            credited.credit(e.kind(), delta);
        }
    }

    /// A counter about to be created from zero for `ctid`: zero is its last-seen value
    /// (unless it has one already: then it counts as restarted).
    pub fn baseline_zero(&mut self, ctid: &Ctid, key: CounterId) {
        self.containers
            .entry(ctid.clone())
            .or_default()
            .seen
            .entry(key)
            .or_default();
    }

    /// A set element given to another container in place (the plan only changes its
    /// comment, its counters go on): its last-seen value moves with it, so what it counts
    /// from the read on is charged to `to`.
    pub fn transfer_seen(&mut self, key: &CounterId, from: &Ctid, to: &Ctid) {
        let Some(v) = self
            .containers
            .get_mut(from)
            .and_then(|c| c.seen.remove(key))
        else {
            return;
        };
        self.containers
            .entry(to.clone())
            .or_default()
            .seen
            .insert(key.clone(), v);
    }

    /// Forget the last-seen values of `keys` (a counter of unknown past): each whose value
    /// is given only where the counter now reads below it. Returns how many were.
    pub fn forget_seen(
        &mut self,
        keys: &std::collections::HashMap<CounterId, Option<Counters>>,
    ) -> usize {
        let mut forgot = 0;
        if keys.is_empty() {
            return forgot;
        }
        for c in self.containers.values_mut() {
            let before = c.seen.len();
            c.seen.retain(|k, seen| match keys.get(k) {
                None => true,
                Some(None) => false,
                Some(Some(now)) => now.packets >= seen.packets && now.bytes >= seen.bytes,
            });
            forgot += before - c.seen.len();
        }
        forgot
    }

    pub fn unpark_all(&mut self) {
        for c in self.containers.values_mut() {
            c.parked.clear();
        }
    }

    /// After the kernel was made to match the ledger: the counters of IPs a container no
    /// longer accounts are gone, so their last-seen values are dropped (a later event may
    /// then start such an IP from zero without reading the kernel). Returns whether any was.
    /// `survives(key, accounted)`: whether the kernel still holds that counter after the
    /// plan was applied, for an IP the container accounts or not (counters the read did not
    /// cover are never planned away, and say so).
    pub fn forget_removed(&mut self, survives: impl Fn(&CounterId, bool) -> bool) -> bool {
        let mut any = false;
        for c in self.containers.values_mut() {
            let before = c.seen.len();
            let ips = &c.ips;
            c.seen.retain(|k, _| survives(k, ips.contains(&k.ip)));
            any |= c.seen.len() != before;
        }
        any
    }

    /// Forget containers that carry nothing any more: not accounted, no open day, no totals,
    /// no rule in the kernel, and no day ever closed into the CSV (its record keeps the
    /// month so far, and keeps a clock set back from reopening a written day, also after a
    /// `reset` zeroed its totals).
    pub fn prune(&mut self) {
        self.containers.retain(|_, c| {
            c.accounted()
                || c.last_closed.is_some()
                || c.month.is_some()
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

    /// Counters sort by container as CTIDs sort ("101" before "20"), the ledger's first,
    /// then those it does not know; by key within one; duplicate copies keep their order.
    #[test]
    fn counters_sort_by_container_then_key_stably() {
        let mut ledger = Ledger::default();
        for id in ["20", "101"] {
            ledger
                .containers
                .insert(id.parse().unwrap(), Container::default());
        }
        let c = |id: &str, kind: Kind, ip: &str, packets: u64| Counted {
            ctid: id.parse().unwrap(),
            key: CounterId::set(kind, ip.parse().unwrap()),
            counters: Counters { packets, bytes: 0 },
        };
        let input = [
            c("999", Kind::ForwardIn, "10.0.0.9", 1),
            c("20", Kind::ForwardOut, "10.0.0.2", 2),
            c("5", Kind::ForwardIn, "10.0.0.5", 3),
            c("20", Kind::ForwardIn, "10.0.0.2", 4),
            c("101", Kind::ForwardIn, "10.0.0.1", 5),
            c("20", Kind::ForwardIn, "10.0.0.2", 6),
        ];
        let mut all: Vec<&Counted> = input.iter().collect();
        ledger.sort_by_container(&mut all);
        let got: Vec<(&str, u64)> = all
            .iter()
            .map(|c| (c.ctid.as_str(), c.counters.packets))
            .collect();
        assert_eq!(
            got,
            [
                ("101", 5),
                ("20", 4),
                ("20", 6),
                ("20", 2),
                ("5", 3),
                ("999", 1)
            ]
        );
    }
    use crate::backend::iptables::{Current, parse_save};
    use crate::model::{Chain, Family};

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

    /// Container 101 accounting 10.0.0.1, in boot b1.
    fn ledger_101() -> Ledger {
        let mut l = Ledger {
            boot_id: Some("b1".into()),
            ..Ledger::default()
        };
        l.assign(
            &"101".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            now(),
            day("2026-11-29"),
        );
        created(&mut l, "101", "10.0.0.1");
        l
    }

    /// vzacct created the four rules of `ip` for `ct`: zero baselines.
    fn created(l: &mut Ledger, ct: &str, ip: &str) {
        for kind in Kind::BASE {
            let iface = if kind.chain() == Chain::Forward {
                ""
            } else {
                "venet0"
            };
            let id = CounterId::rule(kind, ip.parse().unwrap(), iface);
            l.baseline_zero(&ct.parse().unwrap(), id);
        }
    }

    fn total(l: &Ledger, ct: &str) -> Figures {
        l.containers[&ct.parse::<Ctid>().unwrap()].total
    }

    fn harvest(l: &mut Ledger, k: &Current, boot: &str, d: &str) -> (Harvest, Vec<Row>) {
        l.harvest(&k.counted(), &Coverage::all(), boot, day(d))
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
        assert!(l.forget_removed(|_, accounted| accounted));
        assert!(l.containers[&ct].held_ips().is_empty());
        assert!(!l.forget_removed(|_, accounted| accounted));
        // Accounted IPs keep theirs.
        l.assign(&ct, ip, now(), day("2026-11-29"));
        harvest(&mut l, &kernel(&[(FI, 5, 500)]), "b1", "2026-11-29");
        assert!(!l.forget_removed(|_, accounted| accounted));
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
            ..Figures::default()
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
        // The dump recreates it from zero...
        created(&mut l, "101", "10.0.0.1");
        harvest(&mut l, &kernel(&[(FI, 1, 1500)]), "b1", "2026-11-29");
        assert_eq!(total(&l, "101").in_bytes, 2500);
        // ...while one that someone else put back has an unknown past: a starting point.
        harvest(&mut l, &kernel(&[]), "b1", "2026-11-29");
        let (h, _) = harvest(&mut l, &kernel(&[(FI, 9, 9000)]), "b1", "2026-11-29");
        assert_eq!((h.unknown, total(&l, "101").in_bytes), (1, 2500));
        harvest(&mut l, &kernel(&[(FI, 10, 9100)]), "b1", "2026-11-29");
        assert_eq!(total(&l, "101").in_bytes, 2600);
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
    fn the_first_harvest_of_a_boot_credits_nothing_it_finds() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 10, 1000)]), "b1", "2026-11-29");
        // After a reboot, whatever the first command finds (a dump or a hook before
        // `restore`, say) may be a restored copy: a baseline, nothing credited...
        let (h, _) = harvest(&mut l, &kernel(&[(FI, 12, 1200)]), "b2", "2026-11-29");
        assert!(h.new_boot);
        assert_eq!(h.counted, Figures::default());
        assert_eq!(total(&l, "101").in_bytes, 1000);
        // ...and from then on it counts.
        harvest(&mut l, &kernel(&[(FI, 13, 1300)]), "b2", "2026-11-29");
        assert_eq!(total(&l, "101").in_bytes, 1100);
        // A ledger that never saw a boot takes what it finds as a baseline too.
        let mut fresh = ledger_101();
        fresh.boot_id = None;
        harvest(&mut fresh, &kernel(&[(FI, 10, 1000)]), "b1", "2026-11-29");
        assert_eq!(total(&fresh, "101").in_bytes, 0);
    }

    /// IPv6 off and on again (or the sets not read): the counters not read keep their
    /// last-seen values, so nothing they counted before is credited a second time.
    #[test]
    fn counters_not_read_keep_their_last_seen_values() {
        const FI6: &str = "VZACCT-FORWARD -d 2001:db8::1/128 -m comment --comment \"ct:101\"";
        let mut l = ledger_101();
        l.assign(
            &"101".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            now(),
            day("2026-11-29"),
        );
        created(&mut l, "101", "2001:db8::1");
        let v4_only = Coverage {
            families: vec![Family::V4],
            sets: true,
        };
        harvest(
            &mut l,
            &kernel(&[(FI, 1, 100), (FI6, 2, 200)]),
            "b1",
            "2026-11-29",
        );
        assert_eq!(total(&l, "101").in_bytes, 300);
        // ipv6 = no: only IPv4 is read, while the IPv6 rule keeps counting.
        let k = kernel(&[(FI, 1, 100)]);
        l.harvest(&k.counted(), &v4_only, "b1", day("2026-11-29"));
        l.forget_removed(|k, accounted| !v4_only.covers(k) || accounted);
        let k = kernel(&[(FI, 1, 100)]);
        l.harvest(&k.counted(), &v4_only, "b1", day("2026-11-29"));
        assert_eq!(total(&l, "101").in_bytes, 300);
        // ipv6 = yes again: only what it counted meanwhile (50) is new.
        harvest(
            &mut l,
            &kernel(&[(FI, 1, 100), (FI6, 3, 250)]),
            "b1",
            "2026-11-29",
        );
        assert_eq!(total(&l, "101").in_bytes, 350);
        // Set elements, when the sets were not read, alike.
        let id = |text: &str| text.parse::<CounterId>().unwrap();
        let key = id("set vzacct-fi4 10.0.0.1");
        let no_sets = Coverage {
            families: vec![Family::V4, Family::V6],
            sets: false,
        };
        assert!(!no_sets.covers(&key) && no_sets.covers(&id("forward_in 10.0.0.1")));
        assert!(Coverage::all().covers(&key) && !v4_only.covers(&id("forward_in 2001:db8::1")));
        // `ipset save` lists the sets of both families.
        assert!(v4_only.covers(&id("set vzacct-fi6 2001:db8::1")));
    }

    /// A packet that went through netfilter as a GSO/GRO super-packet (BIG TCP) counts as
    /// one, up to 512 KiB: real traffic, credited.
    #[test]
    fn big_tcp_super_packets_are_traffic() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 0, 0)]), "b1", "2026-11-29");
        let (h, _) = harvest(&mut l, &kernel(&[(FI, 2, 2 * 300_000)]), "b1", "2026-11-29");
        assert_eq!((h.implausible, total(&l, "101").in_bytes), (0, 600_000));
        let (h, _) = harvest(
            &mut l,
            &kernel(&[(FI, 3, 600_000 + 600_000)]),
            "b1",
            "2026-11-29",
        );
        assert_eq!((h.implausible, total(&l, "101").in_bytes), (1, 600_000));
    }

    /// `reset` of a stopped container keeps its record: its month so far and the last day
    /// written to the CSV (a clock set back must not reopen it).
    #[test]
    fn reset_keeps_the_calendar() {
        let mut l = ledger_101();
        let ct: Ctid = "101".parse().unwrap();
        harvest(&mut l, &kernel(&[(FI, 1, 100)]), "b1", "2026-11-29");
        l.unassign(&ct, &"10.0.0.1".parse().unwrap());
        // The next day: the rule is gone, the 29th is closed into the CSV.
        let (_, rows) = harvest(&mut l, &kernel(&[]), "b1", "2026-11-30");
        assert_eq!(rows.len(), 1);
        l.containers.get_mut(&ct).unwrap().today = None;
        assert!(l.reset(&ct, now()));
        l.prune();
        let c = &l.containers[&ct];
        assert_eq!(c.last_closed, Some(day("2026-11-29")));
        assert_eq!(c.month_so_far("2026-11").in_bytes, 100);
        assert_eq!(c.total.in_bytes, 0);
    }

    #[test]
    fn boot_restore_takes_found_counters_as_baseline() {
        let mut l = ledger_101();
        harvest(&mut l, &kernel(&[(FI, 10, 1000)]), "b1", "2026-11-29");
        // A firewall service restored our rule with old counters before any container ran.
        let k = kernel(&[(FI, 10, 1000)]);
        l.harvest(&k.counted(), &Coverage::all(), "b2", day("2026-11-29"));
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
        created(&mut l, "102", "10.0.0.1");
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
        created(&mut l, "101", "10.0.0.1");
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
