//! Container IDs, validated once at the edge so that nothing unchecked ever reaches a file
//! path, an iptables rule, a CSV field or a log line.

use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;

/// Largest numeric CTID vzctl 4.x accepts.
pub const MAX_NUMERIC_CTID: u64 = 2_147_483_644;

/// A container ID: a decimal number 1..=2147483644 (vzctl 4.x) or an OpenVZ 7 UUID
/// (`8-4-4-4-12` hex digits). The inner string is guaranteed to be one of those shapes.
/// Kept inline (no heap allocation) up to 24 bytes, as every numeric CTID is: a node of
/// 10,000 containers holds one copy per set element while it harvests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ctid(CompactString);

/// Why a CTID was refused. The offending text is shown escaped, so control characters or
/// an overlong value can never corrupt the terminal or a log line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid container ID {shown}: {reason}")]
pub struct CtidError {
    shown: String,
    reason: &'static str,
}

impl CtidError {
    fn new(raw: &str, reason: &'static str) -> Self {
        CtidError {
            shown: escape_for_message(raw),
            reason,
        }
    }
}

/// Quote and escape untrusted text for an error message, cutting it at 64 characters.
pub fn escape_for_message(raw: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in raw.chars().enumerate() {
        if i == 64 {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

impl Ctid {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Sort key that orders numeric CTIDs numerically and puts UUIDs after them.
    pub fn sort_key(&self) -> (u64, &str) {
        (self.0.parse().unwrap_or(u64::MAX), self.0.as_str())
    }
}

impl FromStr for Ctid {
    type Err = CtidError;

    fn from_str(raw: &str) -> Result<Self, CtidError> {
        if raw.is_empty() {
            return Err(CtidError::new(raw, "it is empty"));
        }
        if raw.len() > 37 {
            return Err(CtidError::new(raw, "it is longer than 37 characters"));
        }
        if raw.bytes().all(|b| b.is_ascii_digit()) {
            if raw.starts_with('0') {
                return Err(CtidError::new(
                    raw,
                    "0 is the host and numeric IDs have no leading zeros",
                ));
            }
            let n: u64 = raw
                .parse()
                .map_err(|_| CtidError::new(raw, "not a number"))?;
            if n > MAX_NUMERIC_CTID {
                return Err(CtidError::new(raw, "numeric IDs go up to 2147483644"));
            }
            return Ok(Ctid(CompactString::from(raw)));
        }
        if is_uuid(raw) {
            return Ok(Ctid(CompactString::from(raw.to_ascii_lowercase())));
        }
        Err(CtidError::new(
            raw,
            "expected a number 1..2147483644 or an OpenVZ 7 UUID",
        ))
    }
}

fn is_uuid(raw: &str) -> bool {
    let groups: Vec<&str> = raw.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == lens.len()
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl fmt::Display for Ctid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Ctid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Ctid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Ctid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a container ID")
            }
            fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<Ctid, E> {
                raw.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_numeric_and_uuid() {
        assert_eq!("101".parse::<Ctid>().unwrap().as_str(), "101");
        assert_eq!("2147483644".parse::<Ctid>().unwrap().as_str(), "2147483644");
        let u = "A1B2C3D4-0000-1111-2222-333344445555"
            .parse::<Ctid>()
            .unwrap();
        assert_eq!(u.as_str(), "a1b2c3d4-0000-1111-2222-333344445555");
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "0",
            "00101",
            "2147483645",
            "99999999999999999999",
            "../etc",
            "101/../x",
            "10 1",
            "101\n",
            "1\u{1b}[31m",
            "abc",
            "a1b2c3d4-0000-1111-2222-33334444555",
            &"1".repeat(40),
        ] {
            assert!(bad.parse::<Ctid>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_escapes_control_characters() {
        let e = "1\n2\u{1b}".parse::<Ctid>().unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
        assert!(e.contains(r#""1\n2\u{1b}""#), "{e}");
    }
}
