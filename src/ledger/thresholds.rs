//! The ledger's quota data (schema version 4): each container's quota (table `quotas`) and
//! the record of every threshold action (table `thresholds`), keyed by container, period
//! start and threshold so that an action is taken once per period whatever runs in between
//! (`reset` does not change the period; a new period has a new key). Which thresholds are
//! crossed is pure, in [`crate::ledger::quota`]; running the action is
//! [`crate::commands::quota`]'s.

use std::collections::HashMap;

use chrono::NaiveDate;
use rusqlite::params;

use crate::ctid::Ctid;
use crate::ledger::db::{Loaded, StateError, db_error};
use crate::ledger::period::Span;
use crate::ledger::quota::Direction;

/// A container's quota: bytes per billing period, of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub bytes: u64,
    pub direction: Direction,
}

/// Where a threshold's action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Recorded before the action program was started: it may be running, have run, or
    /// never have started (the dump was killed). The next dump finds out which.
    Running,
    /// The last attempt failed; the next dump tries again.
    Failed,
    /// The action succeeded (or there was none to run): never again in this period.
    Done,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Failed => "failed",
            State::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<State> {
        match s {
            "running" => Some(State::Running),
            "failed" => Some(State::Failed),
            "done" => Some(State::Done),
            _ => None,
        }
    }
}

/// One threshold of one container's period, and its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub ctid: Ctid,
    pub period: Span,
    /// Percent of the quota.
    pub threshold: u32,
    pub direction: Direction,
    /// The period's figure when the threshold was found crossed (first attempt).
    pub used: u64,
    pub quota: u64,
    pub state: State,
    /// How many times the action was started (0: none yet).
    pub attempts: u32,
    /// When the crossing was found, and when the last attempt was made (RFC 3339).
    pub first_at: String,
    pub last_at: String,
    pub last_error: Option<String>,
}

fn bad_column(i: usize, name: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(i, name.into(), rusqlite::types::Type::Text)
}

/// Every container's quota. A database of an earlier schema (read as it is by a view) has
/// none.
pub fn quotas(loaded: &Loaded) -> Result<HashMap<Ctid, Quota>, StateError> {
    let mut out = HashMap::new();
    let Ok(conn) = loaded.conn() else {
        return Ok(out);
    };
    let err = |e| db_error(Some(conn), loaded.path(), e);
    let Ok(mut st) = conn.prepare("SELECT ctid, quota_bytes, direction FROM quotas") else {
        return Ok(out);
    };
    let mut rows = st.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let ctid: String = r.get(0).map_err(err)?;
        let bytes: i64 = r.get(1).map_err(err)?;
        let direction: String = r.get(2).map_err(err)?;
        let (Ok(ctid), Ok(direction), Ok(bytes)) = (
            ctid.parse::<Ctid>(),
            direction.parse::<Direction>(),
            u64::try_from(bytes),
        ) else {
            return Err(err(bad_column(0, "quotas")));
        };
        out.insert(ctid, Quota { bytes, direction });
    }
    Ok(out)
}

/// Give `ctid` a quota (`None`: take it away); the quota it had before. The caller holds the
/// exclusive lock; one transaction of its own.
pub fn set_quota(
    loaded: &Loaded,
    ctid: &Ctid,
    quota: Option<Quota>,
) -> Result<Option<Quota>, StateError> {
    let conn = loaded.conn()?;
    let err = |e| db_error(Some(conn), loaded.path(), e);
    let before = quotas(loaded)?.remove(ctid);
    let tx = conn.unchecked_transaction().map_err(err)?;
    match quota {
        None => tx.execute("DELETE FROM quotas WHERE ctid = ?1", params![ctid.as_str()]),
        Some(q) => tx.execute(
            "INSERT OR REPLACE INTO quotas (ctid, quota_bytes, direction) VALUES (?1, ?2, ?3)",
            params![
                ctid.as_str(),
                i64::try_from(q.bytes).unwrap_or(i64::MAX),
                q.direction.name()
            ],
        ),
    }
    .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(before)
}

const COLS: &str = "ctid, period_start, period_end, threshold, direction, used_bytes, \
                    quota_bytes, state, attempts, first_at, last_at, last_error";

fn attempt_of(r: &rusqlite::Row) -> rusqlite::Result<Attempt> {
    let text = |i: usize| r.get::<_, String>(i);
    let date = |i: usize| {
        text(i)?
            .parse::<NaiveDate>()
            .map_err(|_| bad_column(i, "date"))
    };
    Ok(Attempt {
        ctid: text(0)?.parse().map_err(|_| bad_column(0, "ctid"))?,
        period: Span {
            start: date(1)?,
            end: date(2)?,
        },
        threshold: r.get(3)?,
        direction: text(4)?.parse().map_err(|_| bad_column(4, "direction"))?,
        used: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        quota: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
        state: State::parse(&text(7)?).ok_or_else(|| bad_column(7, "state"))?,
        attempts: r.get(8)?,
        first_at: text(9)?,
        last_at: text(10)?,
        last_error: r.get(11)?,
    })
}

/// The threshold records of periods that end after `date`, and every one not done yet
/// (whatever its period), in order of container, period and threshold. None in a database
/// of an earlier schema.
pub fn records(loaded: &Loaded, date: NaiveDate) -> Result<Vec<Attempt>, StateError> {
    let Ok(conn) = loaded.conn() else {
        return Ok(Vec::new());
    };
    let err = |e| db_error(Some(conn), loaded.path(), e);
    let Ok(mut st) = conn.prepare(&format!(
        "SELECT {COLS} FROM thresholds WHERE period_end > ?1 OR state != 'done'
         ORDER BY ctid, period_start, threshold"
    )) else {
        return Ok(Vec::new());
    };
    let rows = st
        .query_map(params![date.to_string()], attempt_of)
        .map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

/// Write `attempts` (each replacing its record) in one committed transaction. Records of
/// old periods go with their days, when a dump closes a day ([`Loaded::save`]).
pub fn record(loaded: &Loaded, attempts: &[Attempt]) -> Result<(), StateError> {
    let conn = loaded.conn()?;
    let err = |e| db_error(Some(conn), loaded.path(), e);
    let tx = conn.unchecked_transaction().map_err(err)?;
    {
        let mut st = tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO thresholds ({COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))
            .map_err(err)?;
        for a in attempts {
            st.execute(params![
                a.ctid.as_str(),
                a.period.start.to_string(),
                a.period.end.to_string(),
                a.threshold,
                a.direction.name(),
                i64::try_from(a.used).unwrap_or(i64::MAX),
                i64::try_from(a.quota).unwrap_or(i64::MAX),
                a.state.name(),
                a.attempts,
                a.first_at,
                a.last_at,
                a.last_error,
            ])
            .map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::db::{self, Scope};

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// A version 3 database (before quotas) is read as it is by a view (no quotas, no
    /// records) and upgraded in place by a command that may write; records round-trip.
    #[test]
    fn schema_3_is_upgraded_and_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        db::load(dir.path(), &Scope::All).unwrap();
        let path = dir.path().join(db::FILE);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE quotas; DROP TABLE thresholds; PRAGMA user_version = 3;")
            .unwrap();
        drop(conn);
        let (_, view) = db::load_view(dir.path()).unwrap();
        assert!(quotas(&view).unwrap().is_empty());
        assert!(records(&view, d("2000-01-01")).unwrap().is_empty());
        drop(view);
        let (_, loaded) = db::load(dir.path(), &Scope::All).unwrap();
        let ct: Ctid = "101".parse().unwrap();
        let q = Quota {
            bytes: 500 << 30,
            direction: Direction::Total,
        };
        assert_eq!(set_quota(&loaded, &ct, Some(q)).unwrap(), None);
        assert_eq!(quotas(&loaded).unwrap()[&ct], q);
        let a = Attempt {
            ctid: ct.clone(),
            period: Span::month(2027, 2).unwrap(),
            threshold: 80,
            direction: Direction::Total,
            used: 430 << 30,
            quota: 500 << 30,
            state: State::Running,
            attempts: 1,
            first_at: "2027-02-20T10:00:00Z".into(),
            last_at: "2027-02-20T10:00:00Z".into(),
            last_error: None,
        };
        record(&loaded, std::slice::from_ref(&a)).unwrap();
        assert_eq!(records(&loaded, d("2027-02-20")).unwrap(), vec![a.clone()]);
        let done = Attempt {
            state: State::Done,
            ..a.clone()
        };
        record(&loaded, std::slice::from_ref(&done)).unwrap();
        assert_eq!(records(&loaded, d("2027-02-20")).unwrap(), vec![done]);
        // Ended and done: not among a later day's records; a failing one of an old period is.
        assert!(records(&loaded, d("2027-03-01")).unwrap().is_empty());
        let failed = Attempt {
            threshold: 90,
            state: State::Failed,
            last_error: Some("boom".into()),
            ..a
        };
        record(&loaded, std::slice::from_ref(&failed)).unwrap();
        assert_eq!(records(&loaded, d("2027-04-01")).unwrap(), vec![failed]);
        assert_eq!(set_quota(&loaded, &ct, None).unwrap(), Some(q));
        assert!(quotas(&loaded).unwrap().is_empty());
    }
}
