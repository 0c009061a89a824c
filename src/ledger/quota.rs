//! Quotas and their thresholds as pure data: a quantity of bytes as an operator writes it
//! (`500GiB`, `1TB`), the direction a quota counts, and which thresholds a period's figure
//! has crossed that were not acted on yet. Acting on them (the hook log, the action
//! program, the record that it ran) is the caller's.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Which traffic a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    In,
    Out,
    Total,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Total => "total",
        }
    }

    /// The bytes of this direction, of traffic `in_bytes` and `out_bytes`.
    pub fn of(self, in_bytes: u64, out_bytes: u64) -> u64 {
        match self {
            Direction::In => in_bytes,
            Direction::Out => out_bytes,
            Direction::Total => in_bytes.saturating_add(out_bytes),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Direction, String> {
        match s {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            "total" => Ok(Direction::Total),
            _ => Err(format!(
                "quota direction {}: expected in, out or total",
                crate::ctid::escape_for_message(s)
            )),
        }
    }
}

/// The bytes of a period's figures that count against a quota: (in, out), without the
/// traffic of free networks (`free_*` of [`Figures`](crate::ledger::Figures), with the
/// `[classes]` config). Quotas, the Prometheus period gauges and the thresholds all take
/// their bytes from this function.
pub fn billable(f: &crate::ledger::Figures) -> (u64, u64) {
    (f.billable_in_bytes(), f.billable_out_bytes())
}

/// The units a quantity may carry: SI (powers of 1000) and IEC (powers of 1024).
const UNITS: [(&str, u64); 11] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("PiB", 1 << 50),
];

/// Parse a number of bytes as an operator writes it: digits, at most three decimals, and a
/// unit (`B`, `KB`..`PB` in powers of 1000, `KiB`..`PiB` in powers of 1024; units are case
/// sensitive, since `Kb` would be bits). `500GiB`, `1TB`, `1.5TiB`, `1048576`. The result is
/// rounded down to a whole byte; zero and more than 2^63 bytes are refused.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "quantity {}: {why} (write e.g. 500GiB or 1TB)",
            crate::ctid::escape_for_message(text)
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim_start_matches(' ');
    let scale = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .ok_or_else(|| bad("unknown unit"))?
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || frac.contains('.') || number.ends_with('.') {
        return Err(bad("not a number"));
    }
    if frac.len() > 3 {
        return Err(bad("at most three decimals are allowed"));
    }
    let digits = format!("{whole}{frac:0<3}");
    let thousandths: u128 = digits.parse().map_err(|_| bad("not a number"))?;
    let bytes = thousandths * u128::from(scale) / 1000;
    if bytes == 0 {
        return Err(bad("a quota must be at least one byte"));
    }
    u64::try_from(bytes)
        .ok()
        .filter(|b| *b <= i64::MAX as u64)
        .ok_or_else(|| bad("too large"))
}

/// A quantity of bytes written back the way an operator would, so that
/// `parse_bytes(format_bytes(b)) == b`: in the unit, IEC or SI, it is a whole multiple of
/// with the fewest digits (IEC on a tie): `500GiB`, `1TB` (not `976562500KiB`), `20KB`.
pub fn format_bytes(bytes: u64) -> String {
    UNITS
        .iter()
        .filter(|(_, s)| bytes.is_multiple_of(*s))
        .map(|(u, s)| (bytes / s, *u))
        .min_by_key(|(n, u)| (n.to_string().len(), !u.ends_with("iB")))
        .map_or(format!("{bytes}B"), |(n, u)| format!("{n}{u}"))
}

/// The thresholds (percent of `quota`) that `used` has reached, in ascending order, leaving
/// out those already acted on in this period (`done`).
pub fn crossed(used: u64, quota: u64, thresholds: &[u32], done: &BTreeSet<u32>) -> Vec<u32> {
    let mut out: Vec<u32> = thresholds
        .iter()
        .copied()
        .filter(|t| !done.contains(t))
        .filter(|t| u128::from(used) * 100 >= u128::from(*t) * u128::from(quota))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `used` as a whole percentage of `quota`, rounded down.
pub fn percent(used: u64, quota: u64) -> u64 {
    if quota == 0 {
        return 0;
    }
    u64::try_from(u128::from(used) * 100 / u128::from(quota)).unwrap_or(u64::MAX)
}

/// `used` as a percentage of `quota` rounded down to two decimals, for the views:
/// `86.35` (past 100 when the quota is exceeded).
pub fn percent_two_decimals(used: u64, quota: u64) -> f64 {
    if quota == 0 {
        return 0.0;
    }
    let hundredths = u128::from(used) * 10_000 / u128::from(quota);
    // Exact below 2^53 hundredths (90 quadrillion percent).
    hundredths as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_crossed_once_each() {
        let t = [80, 90, 100];
        let quota = 1000;
        let none = BTreeSet::new();
        assert_eq!(crossed(799, quota, &t, &none), Vec::<u32>::new());
        assert_eq!(crossed(800, quota, &t, &none), [80]);
        assert_eq!(crossed(1000, quota, &t, &none), [80, 90, 100]);
        let done: BTreeSet<u32> = [80, 90].into();
        assert_eq!(crossed(2000, quota, &t, &done), [100]);
        assert_eq!(crossed(u64::MAX, u64::MAX, &t, &none), [80, 90, 100]);
        assert_eq!(percent(899, 1000), 89);
        assert_eq!(percent(5, 0), 0);
        assert_eq!(percent_two_decimals(8635, 10_000), 86.35);
        assert_eq!(percent_two_decimals(3084, 10_000), 30.84);
        assert_eq!(percent_two_decimals(2, 3), 66.66);
        assert_eq!(percent_two_decimals(25_000, 10_000), 250.0);
        assert_eq!(percent_two_decimals(0, 10_000), 0.0);
        assert_eq!(percent_two_decimals(5, 0), 0.0);
        assert_eq!(percent_two_decimals(u64::MAX, u64::MAX), 100.0);
    }

    #[test]
    fn quantities_as_operators_write_them() {
        assert_eq!(parse_bytes("500GiB"), Ok(500 << 30));
        assert_eq!(parse_bytes("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_bytes("1.5TiB"), Ok(3 << 39));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("2 GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("0.001KB"), Ok(1));
        for bad in [
            "",
            "GiB",
            "1.2.3GB",
            "1.GB",
            ".5GB",
            "1.2345GB",
            "5gb",
            "5Kb",
            "-1GB",
            "0",
            "0.0001KB",
            "9999999PiB",
            "5 GiB x",
        ] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.starts_with("quantity "), "{bad}: {e}");
        }
        assert!(parse_bytes("5\u{1b}GB").unwrap_err().contains("\\u{1b}"));
        assert_eq!(
            parse_bytes("1.2345GiB").unwrap_err(),
            "quantity \"1.2345GiB\": at most three decimals are allowed (write e.g. \
             500GiB or 1TB)"
        );
        for b in [1, 1000, 1 << 20, 500 << 30, 3 << 39, 1_000_000_000_000] {
            assert_eq!(parse_bytes(&format_bytes(b)), Ok(b), "{b}");
        }
        assert_eq!(format_bytes(500 << 30), "500GiB");
        assert_eq!(format_bytes(1_000_000_000_000), "1TB");
        assert_eq!(format_bytes(20_000), "20KB");
        assert_eq!(format_bytes(1536), "1536B");
        assert_eq!(format_bytes(1 << 40), "1TiB");
        // A tie in digits: IEC.
        assert_eq!(format_bytes(1_024_000), "1000KiB");
        assert_eq!(format_bytes(1_000_000_001), "1000000001B");
    }

    #[test]
    fn directions() {
        assert_eq!("total".parse(), Ok(Direction::Total));
        assert_eq!(Direction::Total.of(u64::MAX, 1), u64::MAX);
        assert_eq!(Direction::In.of(3, 4), 3);
        assert_eq!(Direction::Out.of(3, 4), 4);
        assert!("IN".parse::<Direction>().is_err());
    }
}
