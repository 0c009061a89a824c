//! Billing periods as pure date math: which span of calendar days (in the node's zone) a
//! container's period covers, given the node's cycle day and the container's own changes of
//! it, each in force from a boundary on, so that a change never rewrites a closed period.
//!
//! A period starts at local midnight of its start date and ends at local midnight of its end
//! date, which is exclusive (`[start, end)`); the days are the ledger's calendar days, so the
//! instant of a boundary is wherever the zone's date changes (see [`crate::clock`]).

use chrono::{Datelike, Days, Months, NaiveDate};

/// The first and last cycle day a period may start on: every month has them.
pub const DAYS: std::ops::RangeInclusive<u8> = 1..=28;

/// A span of calendar days, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl Span {
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.start <= date && date < self.end
    }

    /// The number of days in the span.
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days()
    }

    /// The calendar month `year-month`.
    pub fn month(year: i32, month: u32) -> Option<Span> {
        let start = NaiveDate::from_ymd_opt(year, month, 1)?;
        Some(Span {
            start,
            end: start.checked_add_months(Months::new(1))?,
        })
    }
}

/// A container's cycle days over time: the node's day, replaced from each change's date on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    default_day: u8,
    /// (in force from, cycle day), sorted by date.
    changes: Vec<(NaiveDate, u8)>,
}

/// `day` of the month of `date` (`day` in [`DAYS`], which every month has).
fn on_day(date: NaiveDate, day: u8) -> NaiveDate {
    date.with_day(u32::from(day)).unwrap_or(date)
}

impl Schedule {
    /// The node's `cycle_day` with a container's changes (in any order; a later entry for
    /// the same date wins).
    pub fn new(default_day: u8, changes: impl IntoIterator<Item = (NaiveDate, u8)>) -> Schedule {
        let mut changes: Vec<(NaiveDate, u8)> = changes.into_iter().collect();
        changes.sort_by_key(|c| c.0);
        changes.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = later.1;
            }
            same
        });
        Schedule {
            default_day,
            changes,
        }
    }

    /// The cycle day in force on `date`, and the date it came into force (`None`: the
    /// node's day, always).
    pub fn day_on(&self, date: NaiveDate) -> (u8, Option<NaiveDate>) {
        match self.changes.iter().rev().find(|c| c.0 <= date) {
            Some((from, day)) => (*day, Some(*from)),
            None => (self.default_day, None),
        }
    }

    /// The changes that come into force after `date` (pending ones).
    pub fn pending_after(&self, date: NaiveDate) -> impl Iterator<Item = &(NaiveDate, u8)> {
        self.changes.iter().filter(move |c| c.0 > date)
    }

    /// The period that holds `date`.
    pub fn period(&self, date: NaiveDate) -> Span {
        let (day, from) = self.day_on(date);
        let this_month = on_day(date, day);
        let mut start = if this_month <= date {
            this_month
        } else {
            on_day(date - Months::new(1), day)
        };
        if let Some(from) = from {
            start = start.max(from);
        }
        let mut end = if this_month > date {
            this_month
        } else {
            on_day(date + Months::new(1), day)
        };
        if let Some((next, _)) = self.changes.iter().find(|c| c.0 > date) {
            end = end.min(*next);
        }
        Span { start, end }
    }

    /// The period before the one that holds `date`.
    pub fn previous(&self, date: NaiveDate) -> Span {
        let start = self.period(date).start;
        self.period(start - Days::new(1))
    }

    /// Where the periods that meet `span` start, in order (for marking them in a history).
    pub fn starts_within(&self, span: Span) -> Vec<NaiveDate> {
        let mut out = Vec::new();
        let mut p = self.period(span.start);
        while p.start < span.end {
            if span.contains(p.start) {
                out.push(p.start);
            }
            p = self.period(p.end);
        }
        out
    }
}

/// Which span `show --period` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Each container's period that holds today.
    Current,
    /// Each container's period before it.
    Previous,
    /// A calendar month, the same for every container.
    Month(Span),
    /// `FROM..TO`, `TO` not included.
    Range(Span),
}

impl std::str::FromStr for Wanted {
    type Err = String;

    fn from_str(s: &str) -> Result<Wanted, String> {
        let date = |t: &str| {
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .filter(|_| t.len() == 10)
        };
        let bad = || {
            format!(
                "{} is not a period: expected current, previous, YYYY-MM or \
                 YYYY-MM-DD..YYYY-MM-DD (the end not included)",
                crate::ctid::escape_for_message(s)
            )
        };
        match s {
            "current" => return Ok(Wanted::Current),
            "previous" => return Ok(Wanted::Previous),
            _ => {}
        }
        if let Some((from, to)) = s.split_once("..") {
            let (start, end) = (date(from).ok_or_else(bad)?, date(to).ok_or_else(bad)?);
            if start >= end {
                return Err(format!(
                    "period {s}: the end ({end}, not included) must come after the start ({start})"
                ));
            }
            return Ok(Wanted::Range(Span { start, end }));
        }
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let (y, m) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        Span::month(y, m).map(Wanted::Month).ok_or_else(bad)
    }
}

impl Wanted {
    /// The span for a container with `schedule`, today being `today`.
    pub fn span(&self, schedule: &Schedule, today: NaiveDate) -> Span {
        match self {
            Wanted::Current => schedule.period(today),
            Wanted::Previous => schedule.previous(today),
            Wanted::Month(s) | Wanted::Range(s) => *s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn span(a: &str, b: &str) -> Span {
        Span {
            start: d(a),
            end: d(b),
        }
    }

    #[test]
    fn the_calendar_month_by_default() {
        let s = Schedule::new(1, []);
        assert_eq!(s.period(d("2027-02-14")), span("2027-02-01", "2027-03-01"));
        assert_eq!(s.period(d("2027-02-01")), span("2027-02-01", "2027-03-01"));
        assert_eq!(s.period(d("2027-01-31")), span("2027-01-01", "2027-02-01"));
        assert_eq!(
            s.previous(d("2027-01-05")),
            span("2026-12-01", "2027-01-01")
        );
        assert_eq!(s.period(d("2027-01-31")).days(), 31);
        assert_eq!(s.period(d("2028-02-29")).days(), 29);
    }

    #[test]
    fn a_cycle_day_across_month_ends() {
        let s = Schedule::new(15, []);
        assert_eq!(s.period(d("2027-03-14")), span("2027-02-15", "2027-03-15"));
        assert_eq!(s.period(d("2027-03-15")), span("2027-03-15", "2027-04-15"));
        assert_eq!(
            s.previous(d("2027-03-15")),
            span("2027-02-15", "2027-03-15")
        );
        assert_eq!(s.period(d("2026-12-31")), span("2026-12-15", "2027-01-15"));
        let s = Schedule::new(28, []);
        // February: 28 days from 28 January, 28 days from 28 February in a common year.
        assert_eq!(s.period(d("2027-02-27")), span("2027-01-28", "2027-02-28"));
        assert_eq!(s.period(d("2027-02-27")).days(), 31);
        assert_eq!(s.period(d("2027-03-01")), span("2027-02-28", "2027-03-28"));
        assert_eq!(s.period(d("2027-03-01")).days(), 28);
        assert_eq!(s.period(d("2028-03-01")).days(), 29);
        assert_eq!(
            s.previous(d("2027-03-28")),
            span("2027-02-28", "2027-03-28")
        );
    }

    #[test]
    fn a_change_takes_effect_at_its_date_and_keeps_the_periods_before() {
        // Day 1 until 2027-01-01, day 15 from then on: a short period, then the 15th.
        let s = Schedule::new(1, [(d("2027-01-01"), 15)]);
        assert_eq!(s.period(d("2026-12-20")), span("2026-12-01", "2027-01-01"));
        assert_eq!(s.period(d("2027-01-03")), span("2027-01-01", "2027-01-15"));
        assert_eq!(s.period(d("2027-01-15")), span("2027-01-15", "2027-02-15"));
        assert_eq!(
            s.previous(d("2027-01-20")),
            span("2027-01-01", "2027-01-15")
        );
        assert_eq!(
            s.previous(d("2027-01-03")),
            span("2026-12-01", "2027-01-01")
        );
        // Back to day 1 from a boundary of day 15: the old periods stay.
        let s = Schedule::new(1, [(d("2027-01-01"), 15), (d("2027-03-15"), 1)]);
        assert_eq!(s.period(d("2027-03-14")), span("2027-02-15", "2027-03-15"));
        assert_eq!(s.period(d("2027-03-20")), span("2027-03-15", "2027-04-01"));
        assert_eq!(s.period(d("2027-04-02")), span("2027-04-01", "2027-05-01"));
        assert_eq!(s.day_on(d("2027-02-01")), (15, Some(d("2027-01-01"))));
        assert_eq!(s.pending_after(d("2027-02-01")).count(), 1);
        assert_eq!(
            s.starts_within(span("2026-12-10", "2027-04-10")),
            vec![
                d("2027-01-01"),
                d("2027-01-15"),
                d("2027-02-15"),
                d("2027-03-15"),
                d("2027-04-01")
            ]
        );
    }

    #[test]
    fn periods_tile_the_calendar() {
        let s = Schedule::new(
            28,
            [
                (d("2026-12-28"), 3),
                (d("2027-02-03"), 28),
                (d("2027-06-28"), 1),
            ],
        );
        let mut p = s.period(d("2026-01-01"));
        while p.start < d("2028-01-01") {
            assert!(p.start < p.end, "{p:?}");
            assert!((1..=31).contains(&p.days()), "{p:?}");
            for day in p.start.iter_days().take_while(|x| *x < p.end) {
                assert_eq!(s.period(day), p, "{day}");
            }
            let next = s.period(p.end);
            assert_eq!(next.start, p.end);
            assert_eq!(s.previous(p.end), p);
            p = next;
        }
    }

    #[test]
    fn period_arguments() {
        assert_eq!("current".parse(), Ok(Wanted::Current));
        assert_eq!("previous".parse(), Ok(Wanted::Previous));
        assert_eq!(
            "2027-02".parse(),
            Ok(Wanted::Month(span("2027-02-01", "2027-03-01")))
        );
        assert_eq!(
            "2026-12-15..2027-01-15".parse(),
            Ok(Wanted::Range(span("2026-12-15", "2027-01-15")))
        );
        for bad in [
            "",
            "now",
            "2027-13",
            "2027-2",
            "27-02",
            "2027-01-15..2027-01-15",
            "2027-01-15..",
            "..2027-01-15",
            "2027-1-5..2027-02-01",
            "2027-02-30..2027-03-01",
        ] {
            assert!(bad.parse::<Wanted>().is_err(), "{bad}");
        }
        let s = Schedule::new(15, []);
        let today = d("2027-03-20");
        assert_eq!(
            Wanted::Previous.span(&s, today),
            span("2027-02-15", "2027-03-15")
        );
        assert_eq!(
            Wanted::Current.span(&s, today),
            span("2027-03-15", "2027-04-15")
        );
    }
}
