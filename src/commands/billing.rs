//! Billing cycles and history: `vzacct set CTID --cycle-day N`, `vzacct history`, and the
//! period figures `show` prints. Figures of a span are the closed days of the ledger
//! (`days`), the days a view's live harvest closed in memory, and the open day.

use super::*;
use crate::ledger::billing::{self, Changed};
use crate::ledger::period::{Schedule, Span};
use crate::ledger::thresholds::{self, Quota};
use crate::ledger::{Container, period, quota};
use std::collections::HashMap;

/// The JSON structure's version, in every document vzacct prints; changed only when the
/// structure changes.
pub const JSON_VERSION: u32 = 2;

/// A span with its figures, as JSON: `{"start": "YYYY-MM-DD", "end": ..., <figures>}`.
#[derive(Serialize)]
pub(crate) struct PeriodDoc {
    pub start: NaiveDate,
    /// Not included.
    pub end: NaiveDate,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A container's quota as JSON, with what its current period used of it:
/// `{"bytes": N, "direction": "total", "used_bytes": N, "percent": 86.35}`.
#[derive(Serialize)]
pub(crate) struct QuotaDoc {
    /// Bytes per billing period.
    pub bytes: u64,
    /// `in`, `out` or `total`.
    pub direction: &'static str,
    /// The billable bytes of that direction in the container's current period.
    pub used_bytes: u64,
    /// `used_bytes` in percent of `bytes`, rounded down to two decimals.
    pub percent: f64,
}

impl QuotaDoc {
    /// `q` against `current`, the figures of the period holding today.
    pub fn of(q: Quota, current: &Figures) -> QuotaDoc {
        let (inb, outb) = quota::billable(current);
        let used = q.direction.of(inb, outb);
        QuotaDoc {
            bytes: q.bytes,
            direction: q.direction.name(),
            used_bytes: used,
            percent: quota::percent_two_decimals(used, q.bytes),
        }
    }

    /// As the tables print it, the use in the quota's kind of unit: `1.23 GiB of 500GiB
    /// total (0.24%)`, `931.32 GB of 1TB total (93.13%)`, `1000 B of 1536B in (65.10%)`.
    pub fn text(&self) -> String {
        let quota = quota::format_bytes(self.bytes);
        let used = if quota.ends_with("iB") {
            super::view::human(self.used_bytes)
        } else if ["KB", "MB", "GB", "TB", "PB"]
            .iter()
            .any(|u| quota.ends_with(u))
        {
            super::view::human_si(self.used_bytes)
        } else {
            format!("{} B", self.used_bytes)
        };
        format!(
            "{used} of {quota} {} ({:.2}%)",
            self.direction, self.percent
        )
    }
}

/// What the periods of a view are computed from: the cycle days, the ledger as read
/// (under the shared lock) and the days its live harvest closed.
pub(crate) struct Periods<'a> {
    loaded: &'a Loaded,
    node_day: u8,
    cycle_days: HashMap<Ctid, Vec<(NaiveDate, u8)>>,
    closed_now: HashMap<&'a Ctid, Vec<&'a Row>>,
}

impl<'a> Periods<'a> {
    pub fn new(ctx: &Ctx, loaded: &'a Loaded, closed_now: &'a [Row]) -> Result<Self, Error> {
        let mut by_ct: HashMap<&Ctid, Vec<&Row>> = HashMap::new();
        for r in closed_now {
            by_ct.entry(&r.ctid).or_default().push(r);
        }
        Ok(Periods {
            loaded,
            node_day: ctx.config.cycle_day,
            cycle_days: billing::cycle_days(loaded)?,
            closed_now: by_ct,
        })
    }

    pub fn schedule(&self, ctid: &Ctid) -> Schedule {
        Schedule::new(
            self.node_day,
            self.cycle_days.get(ctid).cloned().unwrap_or_default(),
        )
    }

    /// The figures of `span` for a container.
    pub fn figures(&self, ctid: &Ctid, c: &Container, span: Span) -> Result<Figures, Error> {
        let mut f = billing::sum_closed(self.loaded, ctid, span)?;
        for r in self.closed_now.get(ctid).into_iter().flatten() {
            if span.contains(r.date) {
                f.add(&r.figures);
            }
        }
        if let Some(d) = c.today.as_ref().filter(|d| span.contains(d.date)) {
            f.add(&d.figures);
        }
        Ok(f)
    }

    /// A container's days in `span` that have figures, in date order, and whether the last
    /// is the open day.
    pub fn days(
        &self,
        ctid: &Ctid,
        c: &Container,
        span: Span,
    ) -> Result<Vec<(NaiveDate, Figures, bool)>, Error> {
        let mut days: BTreeMap<NaiveDate, (Figures, bool)> =
            billing::closed_days(self.loaded, ctid, span)?
                .into_iter()
                .map(|(d, f)| (d, (f, false)))
                .collect();
        for r in self.closed_now.get(ctid).into_iter().flatten() {
            if span.contains(r.date) {
                days.entry(r.date).or_default().0.add(&r.figures);
            }
        }
        if let Some(d) = c.today.as_ref().filter(|d| span.contains(d.date)) {
            let e = days.entry(d.date).or_default();
            e.0.add(&d.figures);
            e.1 = true;
        }
        Ok(days
            .into_iter()
            .map(|(d, (f, open))| (d, f, open))
            .collect())
    }
}

/// `vzacct set CTID [--cycle-day N] [--quota Q|none] [--quota-direction D]`: the container's
/// own cycle day, from the end of its current period on, and its quota. Only the ledger is
/// written; the kernel is not read.
pub fn set(
    ctx: &mut Ctx,
    ctid: &Ctid,
    cycle_day: Option<u8>,
    quota: Option<super::quota::QuotaArg>,
    direction: Option<crate::ledger::quota::Direction>,
) -> Result<(), Error> {
    let locked = store::lock(&ctx.config.state_dir, ctx.lock_wait)?;
    ctx.refresh_now();
    let (ledger, loaded) = locked.load_scope(&Scope::Containers(vec![ctid.clone()]))?;
    let today = ctx.today();
    let changed = match cycle_day {
        Some(day) => Some((
            day,
            billing::set_cycle_day(&loaded, ctid, day, ctx.config.cycle_day, today)?,
        )),
        None => None,
    };
    // (A mistyped CTID shows: what is set for a container never accounted is kept, for
    // when it is.)
    let known = if ledger.containers.contains_key(ctid) {
        ""
    } else {
        " (it is not accounted yet)"
    };
    let quota_said = super::quota::set_quota(
        &loaded,
        ctid,
        &format!("container {ctid}{known}"),
        quota,
        direction,
    )?;
    drop(loaded);
    drop(locked);
    if let Some((cycle_day, changed)) = changed {
        ctx.say(match changed {
            Changed::Unchanged => {
                format!("container {ctid}{known}: its periods already start on day {cycle_day}")
            }
            Changed::Cancelled => format!(
                "container {ctid}{known}: the pending change of its cycle day is cancelled; its \
                 periods go on starting on day {cycle_day}"
            ),
            Changed::From(from) => format!(
                "container {ctid}{known}: periods start on day {cycle_day} from {from} on (the end of \
                 its current period; periods begun before stay as they are)"
            ),
        })?;
    }
    if !quota_said.is_empty() {
        ctx.say(quota_said)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct HistoryRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    month: Option<String>,
    #[serde(flatten)]
    figures: Figures,
    /// A billing period starts on this day.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    period_start: bool,
    /// The open day (still counting), or the month holding it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    open: bool,
    /// The period's figure reached the container's quota on this day (days only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    quota_reached: bool,
}

#[derive(Serialize)]
struct HistoryDoc {
    jsonversion: u32,
    ctid: Ctid,
    timezone: String,
    /// The container's cycle day today.
    cycle_day: u8,
    live: bool,
    /// The container's quota and its use in the current period; `null` without one.
    quota: Option<QuotaDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    days: Option<Vec<HistoryRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    months: Option<Vec<HistoryRow>>,
}

/// What a history row is marked with.
enum Mark {
    /// A billing period starts on this day: the span of that period.
    PeriodStart(Span),
    /// The container's period figure reaches its quota on this day.
    QuotaReached(Quota, NaiveDate),
}

/// How `history` groups the days.
#[derive(Debug, Clone, Copy)]
pub enum Per {
    Days(u32),
    Months(u32),
}

/// `vzacct history CTID [--days N | --months N] [--json]`: one row per day or month with
/// a bar scaled to the largest, the period boundaries and (per day) the day the quota was
/// reached marked. Read-only, live like `show`.
pub fn history(ctx: &mut Ctx, ctid: &Ctid, per: Per, json: bool) -> Result<(), Error> {
    let shared = store::lock_shared(&ctx.config.state_dir, ctx.lock_wait)?;
    let view = super::view::live(ctx, &shared)?;
    let Some(c) = view.ledger.containers.get(ctid) else {
        return Err(Error::Invalid(format!(
            "container {ctid} has no record in the ledger"
        )));
    };
    let today = ctx.today();
    let periods = Periods::new(ctx, &view.loaded, &view.closed)?;
    let schedule = periods.schedule(ctid);
    let end = today.succ_opt().unwrap_or(today);
    let start = match per {
        Per::Days(n) => today - chrono::Days::new(u64::from(n.max(1)) - 1),
        Per::Months(n) => {
            let first = chrono::Datelike::with_day(&today, 1).unwrap_or(today);
            first - chrono::Months::new(n.max(1) - 1)
        }
    };
    let span = Span { start, end };
    let days = periods.days(ctid, c, span)?;
    let quota = thresholds::quotas(&view.loaded)?.remove(ctid);
    // What each period met had before the first of its days shown (for the quota line).
    let mut before: HashMap<NaiveDate, u64> = HashMap::new();
    if let (Some(q), Per::Days(_), Some((first, _, _))) = (quota, per, days.first()) {
        let p = schedule.period(*first);
        if p.start < *first {
            let head = periods.figures(
                ctid,
                c,
                Span {
                    start: p.start,
                    end: *first,
                },
            )?;
            let (i, o) = quota::billable(&head);
            before.insert(p.start, q.direction.of(i, o));
        }
    }
    let current = schedule.period(today);
    let quota_doc = match quota {
        Some(q) => Some(QuotaDoc::of(q, &periods.figures(ctid, c, current)?)),
        None => None,
    };
    drop(shared);
    let starts = schedule.starts_within(span);
    let mut rows = Vec::new();
    let mut marks: Vec<(usize, Mark)> = Vec::new();
    match per {
        Per::Days(_) => {
            let mut next = starts.iter().peekable();
            for (date, figures, open) in days {
                let mut period_start = false;
                while let Some(s) = next.next_if(|s| **s <= date) {
                    marks.push((rows.len(), Mark::PeriodStart(schedule.period(*s))));
                    period_start |= *s == date;
                }
                rows.push(HistoryRow {
                    date: Some(date),
                    month: None,
                    figures,
                    period_start,
                    open,
                    quota_reached: false,
                });
            }
        }
        Per::Months(_) => {
            for (date, figures, open) in days {
                let m = month_of(date);
                match rows.last_mut() {
                    Some(r @ HistoryRow { .. }) if r.month.as_deref() == Some(m.as_str()) => {
                        r.figures.add(&figures);
                        r.open |= open;
                    }
                    _ => rows.push(HistoryRow {
                        date: None,
                        month: Some(m),
                        figures,
                        period_start: false,
                        open,
                        quota_reached: false,
                    }),
                }
            }
        }
    }
    // The day each period's figure reaches the quota: a line above that day's row.
    let mut reached = Vec::new();
    if let (Some(q), Per::Days(_)) = (quota, per) {
        let mut current: Option<(Span, u64)> = None;
        for (i, r) in rows.iter().enumerate() {
            let Some(date) = r.date else { continue };
            let p = schedule.period(date);
            let used = match current {
                Some((span, used)) if span == p => used,
                _ => before.get(&p.start).copied().unwrap_or(0),
            };
            let (inb, outb) = quota::billable(&r.figures);
            let now = used.saturating_add(q.direction.of(inb, outb));
            if used < q.bytes && now >= q.bytes {
                marks.push((i, Mark::QuotaReached(q, date)));
                reached.push(i);
            }
            current = Some((p, now));
        }
        marks.sort_by_key(|m| m.0);
    }
    for i in reached {
        rows[i].quota_reached = true;
    }
    let cycle_day = schedule.day_on(today).0;
    if json {
        let (days, months) = match per {
            Per::Days(_) => (Some(rows), None),
            Per::Months(_) => (None, Some(rows)),
        };
        let doc = HistoryDoc {
            jsonversion: JSON_VERSION,
            ctid: ctid.clone(),
            timezone: ctx.tz.name().to_string(),
            cycle_day,
            live: view.not_live_because.is_none(),
            quota: quota_doc,
            days,
            months,
        };
        if let Some(why) = &view.not_live_because {
            ctx.warn(why);
        }
        let text = serde_json::to_string(&doc).map_err(|e| Error::Output(e.into()))?;
        return ctx.say(text);
    }
    let unit = match per {
        Per::Days(_) => "day",
        Per::Months(_) => "month",
    };
    ctx.say(format!(
        "container {ctid}: traffic per {unit} ({}; periods start on day {cycle_day}{})",
        ctx.tz.name(),
        match schedule.pending_after(today).next() {
            Some((from, d)) => format!(", on day {d} from {from} on"),
            None => String::new(),
        }
    ))?;
    if let Some(q) = &quota_doc {
        ctx.say(format!(
            "quota: {} used in the current period {} .. {} (end not included)",
            q.text(),
            current.start,
            current.end
        ))?;
    }
    if rows.is_empty() {
        return ctx.say("no traffic recorded in this span");
    }
    let largest = rows
        .iter()
        .map(|r| r.figures.in_bytes.saturating_add(r.figures.out_bytes))
        .max()
        .unwrap_or(0);
    ctx.say(format!(
        "{:<11} {:>11} {:>11} {:>11}  {}",
        unit, "in", "out", "total", "(bar: # in, + out)"
    ))?;
    let mut marks = marks.into_iter().peekable();
    for (i, r) in rows.iter().enumerate() {
        while let Some((_, m)) = marks.next_if(|(at, _)| *at == i) {
            match m {
                Mark::PeriodStart(p) => ctx.say(format!(
                    "----------- period {} .. {} (end not included) -----------",
                    p.start, p.end
                ))?,
                Mark::QuotaReached(q, date) => ctx.say(format!(
                    "----------- quota {} ({}) reached on {date} -----------",
                    quota::format_bytes(q.bytes),
                    q.direction
                ))?,
            }
        }
        let f = &r.figures;
        let total = f.in_bytes.saturating_add(f.out_bytes);
        let label = match (&r.date, &r.month) {
            (Some(d), _) => d.to_string(),
            (None, Some(m)) => m.clone(),
            _ => String::new(),
        };
        ctx.say(format!(
            "{:<11} {:>11} {:>11} {:>11}  {}{}",
            format!("{label}{}", if r.open { "*" } else { "" }),
            super::view::human(f.in_bytes),
            super::view::human(f.out_bytes),
            super::view::human(total),
            bar(f.in_bytes, f.out_bytes, largest, 30),
            ""
        ))?;
    }
    ctx.say("* still counting")?;
    if let Some(note) = super::view::uncounted_note(&view.uncounted, &[ctid]) {
        ctx.say(note)?;
    }
    if let Some(why) = &view.not_live_because {
        ctx.say(format!("note: {why}"))?;
    }
    Ok(())
}

/// A bar of `width` characters for the largest total: `#` for in, `+` for out.
fn bar(inb: u64, outb: u64, largest: u64, width: usize) -> String {
    if largest == 0 {
        return String::new();
    }
    let scale = |v: u64| ((v as f64 / largest as f64) * width as f64).round() as usize;
    let total = scale(inb.saturating_add(outb)).min(width);
    let i = scale(inb).min(total);
    format!("{}{}", "#".repeat(i), "+".repeat(total - i))
}

/// The container's cycle day checked as `set` takes it.
pub fn parse_cycle_day(v: &str) -> Result<u8, String> {
    crate::config::cycle_day(v)
        .filter(|d| period::DAYS.contains(d))
        .ok_or_else(|| {
            format!("{v:?} is not a cycle day: expected a day of the month from 1 to 28")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_use_is_given_in_the_quotas_kind_of_unit() {
        let doc = |bytes, used| QuotaDoc {
            bytes,
            direction: "total",
            used_bytes: used,
            percent: quota::percent_two_decimals(used, bytes),
        };
        assert_eq!(
            doc(500 << 30, 1_320_702_444).text(),
            "1.23 GiB of 500GiB total (0.24%)"
        );
        assert_eq!(
            doc(1_000_000_000_000, 931_320_000_000).text(),
            "931.32 GB of 1TB total (93.13%)"
        );
        assert_eq!(doc(1536, 1000).text(), "1000 B of 1536B total (65.10%)");
    }

    #[test]
    fn bars_scale_to_the_largest() {
        assert_eq!(bar(0, 0, 0, 10), "");
        assert_eq!(bar(50, 50, 100, 10), "#####+++++");
        assert_eq!(bar(25, 0, 100, 10), "###");
        assert_eq!(bar(0, 10, 100, 10), "+");
        assert_eq!(bar(u64::MAX, u64::MAX, u64::MAX, 10), "##########");
    }

    #[test]
    fn cycle_day_arguments() {
        assert_eq!(parse_cycle_day("15"), Ok(15));
        assert!(parse_cycle_day("29").is_err());
        assert!(parse_cycle_day("0").is_err());
        assert!(parse_cycle_day("x").is_err());
    }
}
