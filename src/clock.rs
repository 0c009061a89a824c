//! The node's calendar: the time zone whose midnight closes a day into the CSV, and in
//! which every date and time vzacct writes is given. It comes from the config (`timezone`)
//! or the system (`/etc/localtime`), never from the `TZ` of whoever runs the command, so
//! cron and an admin's shell close the same days.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, TimeZone as _, Utc};

/// The system's zoneinfo directory (where `timezone = Europe/Berlin` is looked up).
pub const ZONEINFO: &str = "/usr/share/zoneinfo";
/// The system's own zone.
pub const LOCALTIME: &str = "/etc/localtime";

/// A time zone that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("cannot read time zone file {path} (set timezone under [storage], e.g. UTC)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("time zone file {path} is not a zoneinfo (TZif) file: {message}")]
    Parse { path: PathBuf, message: String },
}

/// A loaded time zone with the name it is known by.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: Arc<tz::TimeZone>,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: Arc::new(tz::TimeZone::utc()),
        }
    }

    /// The zone named in the config (an IANA name under `zoneinfo`, or `UTC`), or the
    /// system's (`localtime`; UTC when the node has none).
    pub fn load(name: Option<&str>, zoneinfo: &Path, localtime: &Path) -> Result<Zone, ClockError> {
        let (path, name) = match name {
            Some("UTC") => return Ok(Zone::utc()),
            Some(n) => (zoneinfo.join(n), n.to_string()),
            None => {
                if std::fs::symlink_metadata(localtime).is_err() {
                    return Ok(Zone::utc());
                }
                // The name is what the link points to below a zoneinfo directory, if it does.
                let name = std::fs::read_link(localtime)
                    .ok()
                    .and_then(|t| {
                        let t = t.to_string_lossy().into_owned();
                        t.split_once("zoneinfo/").map(|(_, n)| n.to_string())
                    })
                    .unwrap_or_else(|| localtime.display().to_string());
                (localtime.to_path_buf(), name)
            }
        };
        let bytes = std::fs::read(&path).map_err(|source| ClockError::Read {
            path: path.clone(),
            source,
        })?;
        let tz = tz::TimeZone::from_tz_data(&bytes).map_err(|e| ClockError::Parse {
            path,
            message: e.to_string(),
        })?;
        Ok(Zone {
            name,
            tz: Arc::new(tz),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone's offset from UTC at `instant`.
    pub fn offset_at(&self, instant: DateTime<Utc>) -> FixedOffset {
        let secs = self
            .tz
            .find_local_time_type(instant.timestamp())
            .map(|t| t.ut_offset())
            .unwrap_or(0);
        FixedOffset::east_opt(secs).unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"))
    }

    /// `instant` in this zone, to the whole second.
    pub fn at(&self, instant: DateTime<Utc>) -> DateTime<FixedOffset> {
        let whole = Utc
            .timestamp_opt(instant.timestamp(), 0)
            .single()
            .unwrap_or(instant);
        whole.with_timezone(&self.offset_at(whole))
    }

    /// The calendar day of `instant` in this zone.
    pub fn date(&self, instant: DateTime<Utc>) -> NaiveDate {
        self.at(instant).date_naive()
    }

    /// The first instant of `date` in this zone: its local midnight, or, where the clocks
    /// skip midnight (a DST change at 00:00), the instant the date begins. A billing period
    /// starts here.
    pub fn start_of(&self, date: NaiveDate) -> DateTime<Utc> {
        let midnight = date.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
        // Every zone is within 15 hours of UTC: the date has not begun at `lo`, has at `hi`.
        let (mut lo, mut hi) = (midnight - 15 * 3600, midnight + 15 * 3600);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let t = Utc.timestamp_opt(mid, 0).single().unwrap_or_default();
            if self.date(t) >= date {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Utc.timestamp_opt(hi, 0).single().unwrap_or_default()
    }
}

/// The one format of every date and time vzacct writes: RFC 3339, whole seconds, with the
/// zone's offset (`2026-12-01T00:05:00+01:00`).
pub fn format(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_named_zone_closes_days_at_its_own_midnight() {
        let z = Zone::load(
            Some("Europe/Berlin"),
            Path::new(ZONEINFO),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(z.name(), "Europe/Berlin");
        // 23:30 UTC on 30 Nov is 00:30 on 1 Dec in Berlin (CET, +01:00)...
        let t = utc("2026-11-30T23:30:00.123456Z");
        assert_eq!(z.date(t), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        assert_eq!(format(&z.at(t)), "2026-12-01T00:30:00+01:00");
        // ...and in summer the offset is +02:00.
        assert_eq!(
            format(&z.at(utc("2026-07-01T22:00:00Z"))),
            "2026-07-02T00:00:00+02:00"
        );
        let u = Zone::load(
            Some("UTC"),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(u.date(t), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
        assert_eq!(format(&u.at(t)), "2026-11-30T23:30:00Z");
    }

    #[test]
    fn the_start_of_a_day() {
        let z = |n| Zone::load(Some(n), Path::new(ZONEINFO), Path::new("/nonexistent")).unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let berlin = z("Europe/Berlin");
        assert_eq!(
            berlin.start_of(d("2027-03-28")),
            utc("2027-03-27T23:00:00Z")
        );
        assert_eq!(
            berlin.start_of(d("2027-03-29")),
            utc("2027-03-28T22:00:00Z")
        );
        // Sao Paulo skipped midnight on 4 November 2018: the day began at 01:00 (-02:00).
        let sp = z("America/Sao_Paulo");
        assert_eq!(sp.start_of(d("2018-11-04")), utc("2018-11-04T03:00:00Z"));
        assert_eq!(
            format(&sp.at(sp.start_of(d("2018-11-04")))),
            "2018-11-04T01:00:00-02:00"
        );
        assert_eq!(
            Zone::utc().start_of(d("2027-01-01")),
            utc("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn the_system_zone_and_its_failures() {
        // No /etc/localtime at all: UTC.
        let z = Zone::load(
            None,
            Path::new(ZONEINFO),
            Path::new("/nonexistent/localtime"),
        )
        .unwrap();
        assert_eq!(z.name(), "UTC");
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("localtime");
        std::os::unix::fs::symlink(Path::new(ZONEINFO).join("Asia/Tokyo"), &link).unwrap();
        let z = Zone::load(None, Path::new(ZONEINFO), &link).unwrap();
        assert_eq!(z.name(), "Asia/Tokyo");
        assert_eq!(
            format(&z.at(utc("2026-11-30T15:00:00Z"))),
            "2026-12-01T00:00:00+09:00"
        );
        let e = Zone::load(Some("Nowhere/Atlantis"), Path::new(ZONEINFO), &link).unwrap_err();
        assert!(e.to_string().contains("Nowhere/Atlantis"), "{e}");
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a zone").unwrap();
        let e = Zone::load(None, Path::new(ZONEINFO), &garbage).unwrap_err();
        assert!(e.to_string().contains("not a zoneinfo"), "{e}");
    }
}
