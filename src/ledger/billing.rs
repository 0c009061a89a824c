//! The ledger's billing data: each container's own cycle days (table `cycle_days`, schema
//! version 3) and the figures of any span of days (table `days`, the closed days). The period
//! math itself is pure, in [`crate::ledger::period`]; the open day is the caller's, from the
//! ledger as read (live in a view).

use std::collections::HashMap;

use chrono::NaiveDate;
use rusqlite::{OptionalExtension, params};

use crate::ctid::Ctid;
use crate::ledger::Figures;
use crate::ledger::db::{Loaded, StateError, db_error, figures_at};
use crate::ledger::period::{Schedule, Span};

const FIGS: &str = "in_bytes, out_bytes, in_packets, out_packets, local_in_bytes, \
                    local_out_bytes, local_in_packets, local_out_packets, free_in_bytes, \
                    free_out_bytes, free_in_packets, free_out_packets";

/// Every container's changes of its cycle day, `(in force from, day)` in date order.
/// A database of an earlier schema (read as it is by a view) has none.
pub fn cycle_days(loaded: &Loaded) -> Result<HashMap<Ctid, Vec<(NaiveDate, u8)>>, StateError> {
    let mut out: HashMap<Ctid, Vec<(NaiveDate, u8)>> = HashMap::new();
    let Ok(conn) = loaded.conn() else {
        return Ok(out);
    };
    let err = |e| db_error(Some(conn), loaded.path(), e);
    let Ok(mut st) = conn.prepare(
        "SELECT ctid, cycle_day_from, cycle_day FROM cycle_days ORDER BY ctid, cycle_day_from",
    ) else {
        return Ok(out);
    };
    let mut rows = st.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let ctid: String = r.get(0).map_err(err)?;
        let from: String = r.get(1).map_err(err)?;
        let day: u8 = r.get(2).map_err(err)?;
        let (Ok(ctid), Ok(from)) = (ctid.parse::<Ctid>(), from.parse::<NaiveDate>()) else {
            return Err(db_error(
                Some(conn),
                loaded.path(),
                rusqlite::Error::InvalidColumnType(
                    1,
                    "cycle_days".into(),
                    rusqlite::types::Type::Text,
                ),
            ));
        };
        out.entry(ctid).or_default().push((from, day));
    }
    Ok(out)
}

/// What [`set_cycle_day`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// The day is in force already and no other is pending.
    Unchanged,
    /// A pending change was dropped: the day in force stays.
    Cancelled,
    /// The day comes into force at this boundary (the end of the current period).
    From(NaiveDate),
}

/// Give `ctid` its own cycle day from the end of its current period on (periods begun are
/// never changed); a change still pending is replaced. The caller holds the exclusive lock
/// and saves nothing else: this is one transaction of its own.
pub fn set_cycle_day(
    loaded: &Loaded,
    ctid: &Ctid,
    day: u8,
    node_day: u8,
    today: NaiveDate,
) -> Result<Changed, StateError> {
    let conn = loaded.conn()?;
    let err = |e| db_error(Some(conn), loaded.path(), e);
    let mine = cycle_days(loaded)?.remove(ctid).unwrap_or_default();
    let kept: Vec<(NaiveDate, u8)> = mine.iter().copied().filter(|c| c.0 <= today).collect();
    let had_pending = kept.len() != mine.len();
    let now = Schedule::new(node_day, kept);
    let changed = if now.day_on(today).0 == day {
        if had_pending {
            Changed::Cancelled
        } else {
            Changed::Unchanged
        }
    } else {
        Changed::From(now.period(today).end)
    };
    if changed == Changed::Unchanged {
        return Ok(changed);
    }
    let tx = conn.unchecked_transaction().map_err(err)?;
    tx.execute(
        "DELETE FROM cycle_days WHERE ctid = ?1 AND cycle_day_from > ?2",
        params![ctid.as_str(), today.to_string()],
    )
    .map_err(err)?;
    if let Changed::From(from) = changed {
        tx.execute(
            "INSERT OR REPLACE INTO cycle_days (ctid, cycle_day_from, cycle_day) VALUES (?1, ?2, ?3)",
            params![ctid.as_str(), from.to_string(), day],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    Ok(changed)
}

/// The sum of `ctid`'s closed days in `span` (the open day is not among them).
pub fn sum_closed(loaded: &Loaded, ctid: &Ctid, span: Span) -> Result<Figures, StateError> {
    // No database yet (a view of a node without a ledger): no closed day.
    let Ok(conn) = loaded.conn() else {
        return Ok(Figures::default());
    };
    // Made once: `show` asks this twice for each container (its current and previous
    // period), 20,000 times on a large node.
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let sums = FIGS
            .split(", ")
            .map(|f| format!("coalesce(sum({f}), 0)"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("SELECT {sums} FROM days WHERE ctid = ?1 AND date >= ?2 AND date < ?3")
    });
    conn.prepare_cached(sql)
        .and_then(|mut st| {
            st.query_row(
                params![ctid.as_str(), span.start.to_string(), span.end.to_string()],
                |r| figures_at(r, 0),
            )
            .optional()
        })
        .map(Option::unwrap_or_default)
        .map_err(|e| db_error(Some(conn), loaded.path(), e))
}

/// `ctid`'s closed days in `span`, in date order (days without a row are not there).
pub fn closed_days(
    loaded: &Loaded,
    ctid: &Ctid,
    span: Span,
) -> Result<Vec<(NaiveDate, Figures)>, StateError> {
    // No database yet (a view of a node without a ledger): no closed day.
    let Ok(conn) = loaded.conn() else {
        return Ok(Vec::new());
    };
    let err = |e| db_error(Some(conn), loaded.path(), e);
    let sql = format!(
        "SELECT date, {FIGS} FROM days WHERE ctid = ?1 AND date >= ?2 AND date < ?3 ORDER BY date"
    );
    let mut st = conn.prepare_cached(&sql).map_err(err)?;
    let mut rows = st
        .query(params![
            ctid.as_str(),
            span.start.to_string(),
            span.end.to_string()
        ])
        .map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        let date: String = r.get(0).map_err(err)?;
        let Ok(date) = date.parse::<NaiveDate>() else {
            return Err(err(rusqlite::Error::InvalidColumnType(
                0,
                "date".into(),
                rusqlite::types::Type::Text,
            )));
        };
        out.push((date, figures_at(r, 1).map_err(err)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::db::{self, Scope};

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// A version 2 database (before `cycle_days`) is read as it is by a view and upgraded in
    /// place by a command that may write; cycle days are kept with the date they apply from.
    #[test]
    fn schema_2_is_upgraded_and_cycle_days_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        db::load(dir.path(), &Scope::All).unwrap();
        let path = dir.path().join(db::FILE);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE cycle_days; DROP TABLE quotas; DROP TABLE thresholds; \
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(conn);
        let (_, view) = db::load_view(dir.path()).unwrap();
        assert!(cycle_days(&view).unwrap().is_empty());
        drop(view);
        let (_, loaded) = db::load(dir.path(), &Scope::All).unwrap();
        let v: i32 = loaded
            .conn()
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, db::VERSION);
        let ct: Ctid = "101".parse().unwrap();
        let today = d("2027-02-20");
        assert_eq!(
            set_cycle_day(&loaded, &ct, 15, 1, today).unwrap(),
            Changed::From(d("2027-03-01"))
        );
        assert_eq!(
            set_cycle_day(&loaded, &ct, 10, 1, today).unwrap(),
            Changed::From(d("2027-03-01"))
        );
        assert_eq!(
            cycle_days(&loaded).unwrap()[&ct],
            vec![(d("2027-03-01"), 10)]
        );
        assert_eq!(
            set_cycle_day(&loaded, &ct, 1, 1, today).unwrap(),
            Changed::Cancelled
        );
        assert!(cycle_days(&loaded).unwrap().is_empty());
        assert_eq!(
            set_cycle_day(&loaded, &ct, 1, 1, today).unwrap(),
            Changed::Unchanged
        );
        // In force from 1 March: a change on 5 March applies from the 10th on.
        set_cycle_day(&loaded, &ct, 10, 1, today).unwrap();
        assert_eq!(
            set_cycle_day(&loaded, &ct, 20, 1, d("2027-03-05")).unwrap(),
            Changed::From(d("2027-03-10"))
        );
        assert_eq!(
            cycle_days(&loaded).unwrap()[&ct],
            vec![(d("2027-03-01"), 10), (d("2027-03-10"), 20)]
        );
        assert_eq!(
            sum_closed(&loaded, &ct, Span::month(2027, 3).unwrap()).unwrap(),
            Figures::default()
        );
    }
}
